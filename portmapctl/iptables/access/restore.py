"""iptables-save / iptables-restore --noflush, nf_tables or legacy flavour.

One `iptables-save -t nat` per family to read, at most one `iptables-restore` per
family to write, whatever the number of containers.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from typing import Dict, List, Optional, Sequence, Tuple

from portmapctl.errors import ApplyFailed, HostProblem
from portmapctl.iptables.ruleset import Args, NatTable, parse_save, split_line
from portmapctl.iptables.transaction import Transaction

# Seconds iptables-restore waits for the xtables lock before giving up (legacy
# iptables takes it; nf_tables needs none). PORTMAPCTL_XTABLES_WAIT overrides it.
LOCK_WAIT_SECONDS = 10
WAIT_ENV = "PORTMAPCTL_XTABLES_WAIT"


def lock_wait_seconds() -> int:
    """The `-w` value: the environment's, when it is a whole number of seconds >= 1."""
    value = os.environ.get(WAIT_ENV, "")
    return (
        int(value) if value.isascii() and value.isdigit() and int(value) >= 1 else LOCK_WAIT_SECONDS
    )


class RestoreBackend:
    writable = True
    # iptables-restore takes `-C` (a check that fails the transaction): add's plan
    # without a read (planner.plan_blind) needs it.
    checks = True

    def __init__(self, flavour: str) -> None:
        if flavour not in ("nft", "legacy"):
            raise ValueError(flavour)
        self.flavour = flavour
        self.name = flavour
        # Listing one chain is cheap under nf_tables (that chain is fetched); legacy
        # iptables gets the whole table and waits for the xtables lock for it.
        self.cheap_chain_reads = flavour == "nft"

    def _binary(self, family: int, tool: str) -> str:
        name = f"{'ip6tables' if family == 6 else 'iptables'}-{self.flavour}"
        name += f"-{tool}" if tool else ""
        path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
        if path is None:
            raise HostProblem(f"{name} not found: install the iptables package ({self.flavour})")
        return path

    def _run(self, argv: List[str], stdin: str = "") -> subprocess.CompletedProcess:
        try:
            return subprocess.run(
                argv, input=stdin, capture_output=True, text=True, check=False, timeout=120
            )
        except OSError as err:
            raise HostProblem(f"cannot run {argv[0]}: {err.strerror}") from None
        except subprocess.TimeoutExpired:
            raise ApplyFailed(
                f"{argv[0]} did not finish within 120 s and was stopped", maybe_applied=True
            ) from None

    def has_nat_table(self, family: int) -> bool:
        """Whether there can be anything to read, asked without creating anything.

        `iptables-legacy-save` creates empty legacy tables where there were none (and
        iptables-nft then warns about them forever), so the legacy flavour asks the
        kernel's list of x_tables instead. Reading nf_tables creates nothing.
        """
        if self.flavour == "nft":
            return True
        name = "ip6_tables_names" if family == 6 else "ip_tables_names"
        # thread-self: the namespace this thread entered, not the process's first one.
        for folder in ("/proc/thread-self/net", "/proc/net"):
            try:
                with open(f"{folder}/{name}") as names:
                    return "nat" in names.read().split()
            except FileNotFoundError:
                continue
            except OSError:
                return True  # cannot tell: reading is the safe answer
        return False  # no x_tables at all: the legacy module is not even loaded

    def read(self, family: int) -> NatTable:
        argv = [self._binary(family, "save"), "-t", "nat"]
        done = self._run(argv)
        if done.returncode != 0:
            raise _host_problem(argv[0], done.stderr)
        return parse_save(done.stdout, family, source=argv[0], skip_foreign=True)

    def read_chain(self, family: int, chain: str) -> Optional[Tuple[Args, ...]]:
        """One chain's rules (`iptables -t nat -S CHAIN`), None when it does not exist
        or cannot be listed. Under nf_tables this fetches that chain only: 2 ms for
        PREROUTING whatever the table's size, where a save of 5,000 containers takes
        0.3 s."""
        argv = [self._binary(family, ""), "-w", str(lock_wait_seconds()), "-t", "nat"]
        done = self._run([*argv, "-S", chain])
        if done.returncode != 0:
            return None
        rules = []
        for line in done.stdout.split("\n"):
            if line.startswith(f"-A {chain} "):
                try:
                    rules.append(tuple(split_line(line)[2:]))
                except ValueError:
                    return None
        return tuple(rules)

    def read_families(self, families: Sequence[int]) -> Dict[int, NatTable]:
        """Both families at once: the two saves run side by side."""
        argvs = {f: [self._binary(f, "save"), "-t", "nat"] for f in families}
        try:
            running = {
                f: subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for f, argv in argvs.items()
            }
        except OSError as err:
            raise HostProblem(f"cannot run iptables-save: {err.strerror}") from None
        outputs = {f: process.communicate(timeout=120) for f, process in running.items()}
        tables = {}
        for family, (stdout, stderr) in outputs.items():
            if running[family].returncode != 0:
                raise _host_problem(argvs[family][0], stderr)
            tables[family] = parse_save(stdout, family, source=argvs[family][0], skip_foreign=True)
        return tables

    def apply(self, txn: Transaction) -> None:
        text = txn.render()
        if not text:
            return
        argv = [self._binary(txn.family, "restore"), "--noflush", "-w", str(lock_wait_seconds())]
        done = self._run(argv, text)
        if done.returncode < 0:
            # Killed: the kernel takes a whole transaction in one commit, so it went in
            # whole or not at all; the caller's re-read tells which.
            raise ApplyFailed(
                f"{argv[0]} was killed by {_signal_name(-done.returncode)}"
                " (a transaction is applied whole or not at all)",
                maybe_applied=True,
            )
        if done.returncode != 0:
            message = _first_line(done.stderr) or f"exit code {done.returncode}"
            if "ermission denied" in message or "you must be root" in message:
                raise _host_problem(argv[0], done.stderr)
            if "xtables.lock" in message or "holding the xtables lock" in message:
                raise ApplyFailed(
                    f"{argv[0]} gave up waiting {argv[-1]} s for the xtables lock (another"
                    f" program holds it), nothing changed: {message}"
                )
            raise ApplyFailed(f"{argv[0]} refused the transaction, nothing changed: {message}")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else ""


def _host_problem(binary: str, stderr: str) -> HostProblem:
    message = _first_line(stderr)
    if "ermission denied" in message or "must be root" in message:
        # Legacy iptables also opens a raw socket: CAP_NET_ADMIN alone is not enough.
        return HostProblem(
            f"{binary}: permission denied: run as root"
            " (CAP_NET_ADMIN, and CAP_NET_RAW for legacy iptables)"
        )
    if "does not exist" in message or "can't initialize" in message or "Protocol not" in message:
        return HostProblem(f"{binary}: the nat table is not usable here: {message}")
    return HostProblem(f"{binary} failed: {message or 'no error message'}")
