"""iptables-save / iptables-restore --noflush, nf_tables or legacy flavour.

One `iptables-save -t nat` per family to read, at most one `iptables-restore` per
family to write, whatever the number of containers.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import time
from dataclasses import replace
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from portmapctl.core.backend import Flavour, IptablesAccess
from portmapctl.errors import (
    MAY_HAVE_GONE_IN,
    ApplyFailed,
    BadInput,
    HostProblem,
    ToolTimedOut,
    killed,
    signal_name,
)
from portmapctl.host import settings
from portmapctl.host.paths import find_tool
from portmapctl.iptables.access import (
    NEW_NAT_TABLE,
    legacy_nat_present,
    legacy_probe_place,
    legacy_read_skipped,
)
from portmapctl.iptables.lexer import split_words
from portmapctl.iptables.ruleset import Args, NatTable, parse_save, unreadable_note
from portmapctl.iptables.transaction import Transaction

WAIT_ENV = settings.XTABLES_WAIT.name


def lock_wait_seconds() -> int:
    """Seconds iptables-restore waits for the xtables lock before giving up (legacy
    iptables takes it; nf_tables needs none): the `-w` value."""
    return settings.XTABLES_WAIT.value()


class RestoreBackend:
    writable = True

    def __init__(self, flavour: str) -> None:
        self.flavour = Flavour(flavour)  # (ValueError for anything else)
        self.name = IptablesAccess(self.flavour)  # (the --iptables word that opens it)
        # Listing one chain is cheap under nf_tables (that chain is fetched); legacy
        # iptables gets the whole table and waits for the xtables lock for it.
        self.cheap_chain_reads = self.flavour is Flavour.NFT
        # Generation before -> after each of our own nf_tables batches that was the only
        # commit in between (see _removed_by_handle).
        self._committed: Dict[int, int] = {}
        self._plain: Dict[str, bool] = {}  # _plain_is_mine's answers
        # Every tool started, for stop_tools: a save a thread waits on (beside the
        # cache read) is not reaped by that thread when SIGTERM ends the run.
        self._tools: List[subprocess.Popen] = []

    def checks(self, family: int) -> bool:
        """Whether iptables-restore's `-C` (a check that fails the transaction) can be
        trusted in `family`: add's plan without a read (planner.plan_blind) stands on
        it. ip6tables-legacy's -C ignores the MARK target's data and compares some
        matches' data wrongly (reference/upstream/FACTS.md), so a `-C` of the default
        mark bit's SETMARK rule passed on another bit's and the write went in without
        it; that family is planned from a read."""
        return not (self.flavour is Flavour.LEGACY and family == 6)

    def _binary(self, family: int, tool: str) -> str:
        command = "ip6tables" if family == 6 else "iptables"
        name = f"{command}-{self.flavour}" + (f"-{tool}" if tool else "")
        path = find_tool(name)
        if path is None and self._plain_is_mine(command):
            # iptables before 1.8 (CentOS 7, Ubuntu 18.04) names its legacy tools
            # plainly: iptables-save, no iptables-legacy-save.
            path = find_tool(command + (f"-{tool}" if tool else ""))
        if path is None:
            if family == 6:
                # Alpine and minimal images ship ip6tables apart; the plugin itself needs
                # it only for containers with an IPv6 address.
                raise HostProblem(
                    f"{name} not found: install ip6tables ({self.flavour}),"
                    " or give --family 4 to look at IPv4 only"
                )
            raise HostProblem(f"{name} not found: install the iptables package ({self.flavour})")
        return path

    def restore_tool(self, family: int) -> str:
        """The name of the restore command apply runs for `family` (plain before 1.8)."""
        try:
            return os.path.basename(self._binary(family, "restore"))
        except HostProblem:
            command = "ip6tables" if family == 6 else "iptables"
            return f"{command}-{self.flavour}-restore"

    def installed(self, family: int) -> bool:
        """Whether this flavour's save tool is here (for a family)."""
        try:
            self._binary(family, "save")
        except HostProblem:
            return False
        return True

    def _plain_is_mine(self, command: str) -> bool:
        """Whether the plain `iptables` (`ip6tables`) is of this backend's flavour
        (asked once per command)."""
        known = self._plain.get(command)
        if known is None:
            from portmapctl.iptables.access import tool_flavour

            path = find_tool(command)
            known = self._plain[command] = path is not None and tool_flavour(path) == self.flavour
        return known

    def _run(self, argv: List[str], stdin: str = "") -> subprocess.CompletedProcess:
        """Run one tool; one that does not finish in time is ToolTimedOut (exit 3),
        which ends the command: a write's may have gone in, whole."""
        reading = not stdin
        try:
            process = self._start(argv, stdin=not reading)
        except OSError as err:
            raise HostProblem(f"cannot run {argv[0]}: {err.strerror}") from None
        with _reaped([process]):
            try:
                out, err_text = process.communicate(_encode(stdin), timeout=tool_timeout())
            except subprocess.TimeoutExpired:
                # A write too ends the command (ToolTimedOut is no ApplyFailed): retried,
                # each try waited as long (add waited the timeout 4 times, --repair 6).
                raise _timed_out(argv[0], writing=not reading and "--test" not in argv) from None
        return subprocess.CompletedProcess(
            argv, process.returncode, _decode(out), _decode(err_text)
        )

    def _start(self, argv: List[str], stdin: bool) -> subprocess.Popen:
        process = _start(argv, stdin)
        self._tools = [tool for tool in self._tools if tool.poll() is None] + [process]
        return process

    def stop_tools(self) -> None:
        """Kill whatever tool is still running (the run ends: none outlives us)."""
        for process in self._tools:
            if process.poll() is None:
                process.kill()
                process.wait()
        self._tools = []

    def has_nat_table(self, family: int) -> bool:
        """Whether there can be anything to read, asked without creating anything.

        `iptables-legacy-save` creates empty legacy tables where there were none (and
        iptables-nft then warns about them forever), so the legacy flavour asks the
        kernel's list of x_tables instead. Reading nf_tables creates nothing, but costs
        a process: the nft flavour asks the kernel whether its `nat` table is there
        (one netlink round trip; a legacy node's look at the other flavour runs no
        iptables-nft where it has no table)."""
        if self.flavour is Flavour.NFT:
            from portmapctl.iptables.access.nfmsg import table_present

            return table_present(family, "nat")
        return legacy_nat_present(family)

    def _skipped(self, family: int) -> bool:
        """Whether a read of `family` is answered as empty, nothing run (see
        legacy_read_skipped)."""
        return self.flavour is Flavour.LEGACY and legacy_read_skipped(family)

    def _empty(self, family: int) -> NatTable:
        """The table of a family whose legacy nat table does not exist: read as the save
        would print it once created (its built-in chains, empty), without running the
        save that would create it (a read changes nothing)."""
        return _parse(NEW_NAT_TABLE, family, self._binary(family, "save"))

    def read(self, family: int) -> NatTable:
        argv = [self._binary(family, "save"), "-t", "nat"]
        if self._skipped(family):
            return self._empty(family)
        before = self._generation()
        done = self._run(argv)
        read_at = self._read_at(before)
        if done.returncode != 0:
            raise _read_failed(argv[0], done.returncode, done.stderr)
        table = _parse(done.stdout, family, argv[0])
        return table if read_at is None else replace(table, generation=read_at)

    def read_chain(self, family: int, chain: str) -> Optional[Tuple[Args, ...]]:
        """One chain's rules (`iptables -t nat -S CHAIN`), None when it does not exist
        or cannot be listed. Under nf_tables this fetches that chain only: 2 ms for
        PREROUTING whatever the table's size, where a save of 5,000 containers takes
        0.3 s."""
        text = self.list_chain(family, chain)
        if text is None:
            return None
        rules = []
        for line in text.split("\n"):
            if line.startswith(f"-A {chain} "):
                try:
                    rules.append(tuple(split_words(line)[2:]))
                except ValueError:
                    return None
        return tuple(rules)

    def list_binary(self, family: int) -> str:
        """The iptables list_chain runs for `family` (HostProblem: none)."""
        return self._binary(family, "")

    def list_chain(self, family: int, chain: str) -> Optional[str]:
        """`iptables -t nat -S CHAIN` as printed (None when it fails): for a caller that
        parses only the lines it needs (add's shadow warning, in a chain of 10,000)."""
        done = self._list(family, chain)
        return done.stdout if done is not None and done.returncode == 0 else None

    def lists_chain(self, family: int, chain: str) -> Optional[bool]:
        """Whether `iptables -t nat -S CHAIN` lists the chain: False where iptables says
        there is none (exit 1), None where the listing cannot tell (any other exit:
        legacy's waits for the xtables lock, and another iptables holding it past -w
        fails it, exit 4, where a save takes no lock). For a caller that must not take
        "cannot tell" for "not there" (ops/chain_place.py)."""
        done = self._list(family, chain)
        if done is None:
            return False  # (no table, no chain)
        return {0: True, 1: False}.get(done.returncode)

    def _list(self, family: int, chain: str) -> Optional[subprocess.CompletedProcess]:
        argv = [self.list_binary(family), "-w", str(lock_wait_seconds()), "-t", "nat"]
        if self._skipped(family):
            return None  # (no table, no chain: and listing it would create the table)
        return self._run([*argv, "-S", chain])

    def read_families(self, families: Sequence[int]) -> Dict[int, NatTable]:
        """Both families at once: the two saves run side by side."""
        return self.start_read(families)()

    def start_read(self, families: Sequence[int]) -> Callable[[], Dict[int, NatTable]]:
        """read_families in two steps: the saves start now, and the function returned
        waits for them and parses (a caller does other work meanwhile: `list` starts
        nft and reads the CNI cache while iptables-save runs). Call it, once: it reaps
        the processes whatever happens."""
        argvs = {f: [self._binary(f, "save"), "-t", "nat"] for f in families}
        absent = {f: self._empty(f) for f in families if self._skipped(f)}
        argvs = {f: argv for f, argv in argvs.items() if f not in absent}
        before = self._generation()
        running: Dict[int, subprocess.Popen] = {}
        try:
            for f, argv in argvs.items():
                running[f] = self._start(argv, stdin=False)
        except OSError as err:
            with _reaped(running.values()):
                raise HostProblem(f"cannot run iptables-save: {err.strerror}") from None
        return functools.partial(self._finish_read, argvs, running, before, absent)

    def _finish_read(
        self,
        argvs: Dict[int, List[str]],
        running: Dict[int, subprocess.Popen],
        before: Optional[int] = None,
        absent: Optional[Dict[int, NatTable]] = None,
    ) -> Dict[int, NatTable]:
        outputs: Dict[int, tuple] = {}
        # Every save still running is killed on the way out, whatever happens: a
        # hung one, an error in the other, Ctrl-C.
        with _reaped(running.values()):
            deadline = time.monotonic() + tool_timeout()
            for f, process in running.items():
                try:
                    outputs[f] = process.communicate(timeout=max(deadline - time.monotonic(), 0))
                except subprocess.TimeoutExpired:
                    raise _timed_out(argvs[f][0]) from None
        read_at = self._read_at(before)  # asked before the parse: a shorter window
        tables = {}
        for family, (stdout, stderr) in outputs.items():
            if running[family].returncode != 0:
                raise _read_failed(argvs[family][0], running[family].returncode, _decode(stderr))
            table = _parse(_decode(stdout), family, argvs[family][0])
            tables[family] = table if read_at is None else replace(table, generation=read_at)
        tables.update(absent or {})
        return dict(sorted(tables.items()))  # (IPv4 first, as asked)

    def generation_now(self) -> Optional[int]:
        """nf_tables' ruleset generation once no commit is under way (iptables-nft;
        None otherwise): whether a table read at some generation is still the kernel's
        (check --repair keeps its copy across a refused restore, ops/check/repair.py)."""
        return self._generation()

    def _generation(self, settled: bool = True) -> Optional[int]:
        """nf_tables' ruleset generation now (nft flavour; None otherwise, or when it
        cannot be read); `settled`: once no commit is under way (nfgen.generation)."""
        if self.flavour is not Flavour.NFT:
            return None
        from portmapctl.iptables.access import nfgen

        return nfgen.generation(settled)

    def _read_at(self, before: Optional[int]) -> Optional[int]:
        """The generation a save that began at `before` and has just ended read its
        table at, when nothing committed meanwhile (the generation has not moved);
        None when that cannot be told. (Not settled: a commit still under way now
        is not in the save, and moves the number before it shows.)"""
        if before is None or self._generation(settled=False) != before:
            return None
        return before

    def apply(self, txn: Transaction) -> None:
        if not txn:
            return
        if self._removed_by_handle(txn):
            return  # (its text not even made: 15,000 lines for gc of 5,000 chains)
        text = txn.render()
        argv = [self._binary(txn.family, "restore"), "--noflush", "-w", str(lock_wait_seconds())]
        done = self._run(argv, text)
        if done.returncode < 0:
            # Killed: the kernel takes a whole transaction in one commit, so it went in
            # whole or not at all; the caller's re-read tells which.
            raise killed(argv[0], -done.returncode)
        if done.returncode != 0:
            message = _first_line(done.stderr) or f"exit code {done.returncode}"
            if "ermission denied" in message or "you must be root" in message:
                raise _host_problem(argv[0], done.stderr)
            _refuse_unopenable_lock(argv[0], done.stderr)
            if _lock_busy(done.stderr):
                raise ApplyFailed(
                    f"{argv[0]} gave up waiting {argv[-1]} s for the xtables lock (another"
                    f" program holds it), nothing changed: {message}",
                    busy=True,
                )
            raise ApplyFailed(f"{argv[0]} refused the transaction, nothing changed: {message}")

    def refusal(self, txn: Transaction) -> Optional[str]:
        """What iptables-restore says of `txn` parsed in test mode (`--test`: nothing is
        committed), None when it takes it. A way to tell bad input from a table that
        changed: the text alone is judged (ops/conditions.py)."""
        if not txn:
            return None
        argv = [self._binary(txn.family, "restore"), "--noflush", "--test"]
        argv += ["-w", str(lock_wait_seconds())]
        if self.flavour is Flavour.LEGACY:
            with legacy_probe_place(txn) as placed:
                if not placed:
                    return None  # (not without creating the table, or not here: the write will)
                done = self._run(argv, txn.render())
        else:
            done = self._run(argv, txn.render())  # (nf_tables' --test creates nothing)
        if done.returncode <= 0:
            return None  # (taken; or killed: it cannot tell, the write will)
        _refuse_unopenable_lock(argv[0], done.stderr)
        if _lock_busy(done.stderr):
            # --test waits for the xtables lock too: a busy lock says nothing of the
            # text (it was bad input, exit 2); the write waits again and says so.
            return None
        return _first_line(done.stderr) or f"exit code {done.returncode}"

    def _removed_by_handle(self, txn: Transaction) -> bool:
        """Apply a teardown as one nf_tables batch guarded by the generation its table
        was read at (iptables/access/nfnl_batch.py says why): True when it went in;
        False when it did not (refused because the ruleset moved, or not possible):
        the restore text then applies it, or refuses it when our chains moved.
        ApplyFailed(maybe_applied) when it was sent and no answer came back."""
        removal = txn.removal
        if self.flavour is not Flavour.NFT or removal is None:
            return False
        import logging

        from portmapctl.iptables.access import nfgen

        if removal.generation is None or not nfgen.batches_on():
            # As the batch's own lines below: `-v` says which way ran (it said nothing).
            why = (
                "PORTMAPCTL_NFT_BATCH=0"
                if not nfgen.batches_on()
                else "the ruleset generation of its read is not known"
            )
            logging.getLogger("portmapctl.iptables").debug(
                "IPv%s: not as one nf_tables batch (%s): iptables-restore", txn.family, why
            )
            return False

        from portmapctl.iptables.access import nfnl_batch

        # Our own earlier batch moved the generation from the one both families were
        # read at: this family's table is still as read (the batch did not touch it).
        read_at = removal.generation
        while read_at in self._committed:
            read_at = self._committed[read_at]
        result = nfnl_batch.apply_removal(txn.family, removal, read_at)
        log = logging.getLogger("portmapctl.iptables")
        if result.outcome is nfnl_batch.Outcome.UNKNOWN:
            raise ApplyFailed(
                f"the nf_tables batch was sent but {result.why} (it went in whole or not at all)",
                maybe_applied=True,
            )
        if result.outcome is not nfnl_batch.Outcome.APPLIED:
            # Refused whole (the ruleset moved: on a busy node, often elsewhere than
            # in our chains) or not possible: the restore text, whose own guards refuse
            # it when our chains moved, as before the batch.
            log.debug(
                "IPv%s: not as one nf_tables batch (%s): iptables-restore", txn.family, result.why
            )
            return False
        log.debug("IPv%s: applied as one nf_tables batch: %s", txn.family, result.why)
        following = nfgen.following(read_at)
        if result.generation == following:
            self._committed[read_at] = following  # ours was the only commit since
        return True


def tool_timeout() -> float:
    """Seconds an iptables tool may take before it is killed (hung)."""
    return settings.IPTABLES_TIMEOUT.value()


def _start(argv: List[str], stdin: bool) -> subprocess.Popen:
    # Same process group as ours: Ctrl-C on the terminal reaches the tool too.
    return subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@contextlib.contextmanager
def _reaped(processes: Iterable[subprocess.Popen]) -> Iterator[None]:
    """Kill and wait for whatever of `processes` is still running when the body ends
    (a timeout, an error in the other family's save, Ctrl-C): none outlives us."""
    try:
        yield
    finally:
        for process in list(processes):
            if process.poll() is None:
                process.kill()
                process.wait()
            for stream in (process.stdout, process.stderr, process.stdin):
                if stream is not None:
                    stream.close()


def _encode(text: str) -> Optional[bytes]:
    # surrogateescape: the bytes of a rule read in are written back as they were.
    return text.encode("utf-8", "surrogateescape") if text else None


def _decode(data: Optional[bytes]) -> str:
    # A foreign rule's comment need not be UTF-8 (SPEC §5): its bytes are kept, not
    # refused; nothing of ours is ever non-UTF-8 (names are checked).
    return (data or b"").decode("utf-8", "surrogateescape")


def _parse(text: str, family: int, binary: str) -> NatTable:
    note = unreadable_note(text)
    if note is not None:
        # iptables-nft cannot show a table holding rules only nft understands: that
        # is no empty table, and gc or check must not act as if it were.
        raise HostProblem(
            f"{binary} cannot read the nat table ({note}): inspect it with"
            " 'nft list table ip nat' and remove the native nft rules from it"
        )
    try:
        return parse_save(text, family, source=binary, skip_foreign=True)
    except BadInput as err:
        # The kernel's table as the tool printed it: no input of the user's (exit 2),
        # an iptables that does not work here (SPEC §5: a table that cannot be read).
        raise HostProblem(f"{err} (the nat table cannot be read through {binary})") from None


def _timed_out(binary: str, writing: bool = False) -> ToolTimedOut:
    if writing:
        stopped = (
            f"{binary} did not finish within {tool_timeout():g} s and was stopped"
            " (is the xtables lock or the kernel stuck?)"
        )
        return ToolTimedOut(f"{stopped}; {MAY_HAVE_GONE_IN}", maybe_applied=True, stopped=stopped)
    return ToolTimedOut(
        f"{binary} did not answer within {tool_timeout():g} s and was stopped"
        " (is the xtables lock or the kernel stuck?)"
    )


def _lock_busy(stderr: str) -> bool:
    """Whether iptables gave up waiting for the xtables lock. Its first line names the
    lock's file (`Can't lock /run/xtables.lock: ...`), which XTABLES_LOCKFILE moves
    elsewhere (python-iptables' path honours it too): the second line says it whatever
    the file (`Another app is currently holding the xtables lock. ...`)."""
    return any(
        line.startswith("Can't lock ") or "holding the xtables lock" in line
        for line in stderr.splitlines()
    )


def _refuse_unopenable_lock(binary: str, stderr: str) -> None:
    """HostProblem (exit 3) when iptables could not open the xtables lock's file
    (`Fatal: can't open lock file PATH: ...`: /run read-only or absent in a container,
    XTABLES_LOCKFILE in a missing directory). Every write fails so, whatever it holds:
    no refusal of the rules (tried again, halved, or taken for bad conditions), as
    python-iptables' path (iptc.xtables_lock) says it too."""
    for line in stderr.splitlines():
        if "can't open lock file" in line:
            raise HostProblem(f"{binary} cannot open the xtables lock: {line.strip()}")


def _first_line(text: str) -> str:
    """The first line of a tool's stderr, as the one line an error says. Where it is
    only the tool's banner (`iptables-nft-restore v1.8.9 (nf_tables):`, as it starts
    a commit the kernel refused), the reason on the next line goes with it: `line 4:
    RULE_APPEND failed (Invalid argument): rule in chain CNI-HOSTPORT-DNAT`."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        return f"{lines[0]} {lines[1]}"
    return lines[0] if lines else ""


def _read_failed(binary: str, returncode: int, stderr: str) -> HostProblem:
    """The one line for a save that failed: killed by a signal (a crash, the OOM killer
    in a pod's memory limit on a big table) it says nothing itself, and the line said
    "failed: no error message"."""
    if returncode < 0:
        return HostProblem(
            f"{binary} was killed by {signal_name(-returncode)} while it read the nat table"
            " (a crash, or the OOM killer: see the kernel log): nothing was changed; run"
            " again"
        )
    return _host_problem(binary, stderr)


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
