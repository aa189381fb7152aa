"""The real `nft`: `nft -j list table ...` to read, `nft -f -` to write.

One `nft -j list table FAMILY cni_hostport` per family, the families listed
concurrently (one process each: `nft -f` of several `list` commands mis-reports a
missing table in nft 1.0.6, and `list ruleset` would also dump iptables-nft's own
tables, which on a kube-proxy node are most of the bytes). One `nft -f -` for any
change of both families; gc's deletions go as one nf_tables batch at the generation
their read was listed at instead, where it can be had (read_settled, batch.py).

A listing writes into memory files, not pipes: nft prints its JSON as it serialises
it, and into a pipe nobody reads yet (64 KiB) it stopped until we read, so most of
its work waited for ours (40-60 ms of `list` of 1,000 containers). Into a file it
runs to its end alone. `EarlyListing`: the listing `portmapctl list` starts before
its command line is parsed (nftables/early.py), taken by the read it was started for.

The plugin's backend needs nft 1.0.1 or later (knftables checks the same); older or
missing nft is an environment problem (exit 3) raised only when nft state is needed.
A read takes the version from the `metainfo` of the listing itself; `nft --version`
runs only when no listing carries one, and before the first write.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import TYPE_CHECKING, Callable, Iterable, List, NamedTuple, Optional, Tuple

from portmapctl.errors import (
    MAY_HAVE_GONE_IN,
    BadInput,
    HostProblem,
    ToolTimedOut,
    killed,
    signal_name,
)
from portmapctl.host.paths import find_tool
from portmapctl.nftables import FAMILY_NAMES, TABLE
from portmapctl.nftables.access import NftApplyFailed, NftUnusable

if TYPE_CHECKING:
    from portmapctl.nftables.ruleset import Ruleset
    from portmapctl.nftables.transaction import Transaction

MIN_VERSION = (1, 0, 1)
# NftApplyFailed.reason of a batch the kernel refused because the ruleset moved since
# the read it was planned from (nftables.node.RETRY_REASONS: read again, plan again).
CHANGED = "the ruleset changed since it was read"
# Listings tried for one at a settled generation (read_settled) before giving up.
_SETTLED_READS = 3
TIMEOUT_SECONDS = 120
# A listing read for a warning alone (--backend iptables counting the mappings it does
# not look at, flavour_guard.unread_backend): a hung nft delayed every list, check and
# gc of an idle node by TIMEOUT_SECONDS for a line it then did not print. 10 s is many
# times what `nft -j list table` of 10,000 rules takes on a busy node.
EVIDENCE_TIMEOUT_SECONDS = 10
# Patterns as text: `re` compiles them when first used (a version check, an error),
# not on every start (compiling them was 5 ms of each `list`).
_VERSION = r"nftables v(\d+)\.(\d+)(?:\.(\d+))?"
_ERRNO = r"Error: (?:Could not process rule: )?([^\n]*)"
# `{"nftables": [{"metainfo": {"version": "1.0.6", ...`: what `nft -j` prints first.
_LISTED_VERSION = '{"nftables": [{"metainfo": {"version": "'


def parse_version(text: str) -> Optional[Tuple[int, int, int]]:
    """`nftables v1.0.6 (Lester Gooch #5)` -> (1, 0, 6)."""
    match = re.search(_VERSION, text)
    if not match:
        return None
    return int(match[1]), int(match[2]), int(match[3] or 0)


def _listed_version(out: str) -> Optional[Tuple[int, int, int]]:
    """The version in the metainfo a `nft -j list` document starts with, else None."""
    if not out.startswith(_LISTED_VERSION):
        return None
    end = out.find('"', len(_LISTED_VERSION), len(_LISTED_VERSION) + 32)
    parts = out[len(_LISTED_VERSION) : end].split(".") if end > 0 else []
    if not 2 <= len(parts) <= 3 or not all(p.isdigit() and p.isascii() for p in parts):
        return None
    major, minor, patch = (int(p) for p in (*parts, "0")[:3])
    return major, minor, patch


def _too_old(version: Tuple[int, int, int]) -> str:
    found = ".".join(map(str, version))
    return f"nft {found} is too old for the plugin's nftables backend: needs 1.0.1 or later"


def first_error(stderr: str) -> str:
    """The errno text of nft's first error ("No such file or directory"), else its line."""
    match = re.search(_ERRNO, stderr)
    if match:
        # "No such file or directory; did you mean table ... in family ip?": the errno part.
        return match[1].split(";", 1)[0].strip()
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[0] if lines else "failed"


def find_nft() -> str:
    """The `nft` to run: on PATH, else in the sbin directories (not on a user's PATH)."""
    path = find_tool("nft")
    if path is None:
        raise NftUnusable(
            "nft not found: install nftables (1.0.1 or later) to work with the "
            "plugin's nftables backend"
        )
    return path


def _listing_argv(binary: str, family: int) -> List[str]:
    return [binary, "-j", "list", "table", FAMILY_NAMES[family], TABLE]


class Running(NamedTuple):
    """A started `nft -j list table`, writing into two memory files."""

    family: int
    process: subprocess.Popen
    out: int  # file descriptors
    err: int


def _memory_file(name: str) -> int:
    try:
        return os.memfd_create(name, os.MFD_CLOEXEC)
    except (AttributeError, OSError):  # no memfd (old kernel, other libc): a temp file
        import tempfile

        return os.dup(tempfile.TemporaryFile().fileno())


def _close(fds: Iterable[int]) -> None:
    for fd in fds:
        os.close(fd)


def start_listings(binary: str, families: Iterable[int]) -> List[Running]:
    """`nft -j list table FAMILY cni_hostport` for each family, all running at once."""
    started: List[Running] = []
    try:
        for family in families:
            files: List[int] = []
            try:
                files += [_memory_file("nft-out")]
                files += [_memory_file("nft-err")]
                out, err = files
                # stdin: inherited, as subprocess.run would.
                process = subprocess.Popen(_listing_argv(binary, family), stdout=out, stderr=err)
            except BaseException:
                _close(files)
                raise
            started.append(Running(family, process, out, err))
    except OSError as err:
        stop(started)
        raise HostProblem(f"cannot run {binary}: {err.strerror}") from None
    except BaseException:
        stop(started)
        raise
    return started


def stop(started: Iterable[Running]) -> None:
    """Kill listings nobody will read, and free their files."""
    for running in started:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait()
        _close((running.out, running.err))


def _text(fd: int) -> str:
    """The file's bytes as `subprocess.run(..., text=True)` decodes a pipe's."""
    size = os.fstat(fd).st_size
    chunks = []
    offset = 0
    while offset < size:
        chunk = os.pread(fd, size - offset, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    if sys.flags.utf8_mode:
        encoding = "utf-8"
    else:
        import locale

        encoding = locale.getencoding()
    text = b"".join(chunks).decode(encoding)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _wait(process: subprocess.Popen, timeout: float) -> None:
    """process.wait(timeout), woken by the exit itself: Popen.wait with a timeout polls,
    sleeping up to 50 ms between looks (half the time nft takes for 1,000 containers)."""
    try:
        exited = os.pidfd_open(process.pid)
    except (AttributeError, OSError):  # Linux before 5.3
        process.wait(timeout=timeout)
        return
    try:
        import select

        readable, _, _ = select.select([exited], [], [], timeout)
    finally:
        os.close(exited)
    if not readable:
        raise subprocess.TimeoutExpired(process.args, timeout)
    process.wait()


def finish(running: Running, timeout: float = TIMEOUT_SECONDS) -> subprocess.CompletedProcess:
    """Wait for a listing; its output as a CompletedProcess (text). Frees its files."""
    process = running.process
    try:
        try:
            _wait(process, timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise HostProblem(f"nft did not answer within {timeout:g} s") from None
        out, err = _text(running.out), _text(running.err)
    finally:
        _close((running.out, running.err))
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def _netns_identity() -> Optional[Tuple[int, int]]:
    """The network namespace this thread is in (a listing runs in its starter's)."""
    try:
        found = os.stat("/proc/thread-self/ns/net")
    except OSError:
        return None
    return found.st_dev, found.st_ino


class EarlyListing:
    """Listings started ahead of the read that will want them (entry.py, for `list`),
    with what they were started as. The first read asking for the same binary,
    families and network namespace takes them; `close` stops them if none did."""

    def __init__(self, binary: str, families: Tuple[int, ...], running: List[Running]) -> None:
        self.binary = binary
        self.families = families
        self.netns = _netns_identity()
        self._running: Optional[List[Running]] = running

    @classmethod
    def start(cls, families: Iterable[int]) -> Optional[EarlyListing]:
        """Started, or None when the read must start its own (no nft, no /proc, ...):
        its errors are said by that read, as without this."""
        wanted = tuple(sorted(set(families)))
        try:
            binary = find_nft()
        except NftUnusable:
            return None
        if _netns_identity() is None:
            return None
        try:
            return cls(binary, wanted, start_listings(binary, wanted))
        except HostProblem:
            return None

    def take(self, binary: str, families: Tuple[int, ...]) -> Optional[List[Running]]:
        running, self._running = self._running, None
        if running is None:
            return None
        if (binary, families, _netns_identity()) != (self.binary, self.families, self.netns):
            stop(running)
            return None
        return running

    def close(self) -> None:
        running, self._running = self._running, None
        if running is not None:
            stop(running)


class RealNft:
    name = "nft"
    writable = True

    def __init__(
        self,
        binary: Optional[str] = None,
        early: Optional[EarlyListing] = None,
        read_timeout: float = TIMEOUT_SECONDS,
    ) -> None:
        self._binary = binary
        self._checked = False
        self._early = early
        self._read_timeout = read_timeout  # each listing's (EVIDENCE_TIMEOUT_SECONDS)

    def binary(self) -> str:
        if self._binary is None:
            self._binary = find_nft()
        return self._binary

    def _run(self, argv: List[str], stdin: Optional[str] = None) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(
                argv,
                input=stdin,
                capture_output=True,
                text=True,
                check=False,
                timeout=TIMEOUT_SECONDS,
            )
        except OSError as err:
            raise HostProblem(f"cannot run {argv[0]}: {err.strerror}") from None
        except subprocess.TimeoutExpired:
            # (It was uncaught: "internal error", exit 1.)
            raise ToolTimedOut(
                f"{argv[0]} did not answer within {TIMEOUT_SECONDS:g} s and was stopped"
            ) from None

    def check_version(self) -> Tuple[int, int, int]:
        proc = self._run([self.binary(), "--version"])
        version = parse_version(proc.stdout + proc.stderr)
        if proc.returncode != 0 or version is None:
            raise NftUnusable(f"{self.binary()} --version failed: is it nftables' nft?")
        if version < MIN_VERSION:
            raise NftUnusable(_too_old(version))
        return version

    def _ready(self) -> None:
        if not self._checked:
            self.check_version()
            self._checked = True

    def read(self, families: Iterable[int] = (4, 6)) -> Ruleset:
        wanted = tuple(sorted(set(families)))
        running = self._early.take(self.binary(), wanted) if self._early is not None else None
        if running is None:
            running = start_listings(self.binary(), wanted)
        # Imported while nft lists: the parser's import is not on the way to nft's start.
        try:
            from portmapctl.nftables.ruleset import parse_many

            done: List[Tuple[int, subprocess.CompletedProcess]] = []
            while running:
                done.append((running[0].family, finish(running.pop(0), self._read_timeout)))
        finally:
            stop(running)
        self._check_listed_version([proc.stdout for _f, proc in done if proc.returncode == 0])
        documents = []
        for family, proc in done:
            source = f"nft -j list table {FAMILY_NAMES[family]} {TABLE}"
            if proc.returncode < 0:
                # (A crash, the OOM killer: it says nothing; "failed: failed" said less.)
                raise HostProblem(
                    f"{source} was killed by {signal_name(-proc.returncode)} (a crash, or"
                    " the OOM killer: see the kernel log): nothing was changed; run again"
                )
            if proc.returncode != 0:
                reason = first_error(proc.stderr)
                if reason.startswith("No such file or directory"):
                    continue  # no table in this family: nothing made by the plugin
                if "Operation not permitted" in reason:
                    raise HostProblem(f"{source}: operation not permitted (run as root)")
                raise HostProblem(f"{source} failed: {reason}")
            documents.append((proc.stdout, source))
        try:
            return parse_many(documents)
        except BadInput as err:
            # The kernel's table as nft printed it: no input of the user's (exit 2), but a
            # table that cannot be read (SPEC §5: exit 3), as iptables-save's output that
            # cannot be read is (iptables/access/restore.py). What is refused is in one of
            # the plugin's own chains (ruleset.py skips and says another tool's chain), so
            # nothing is written in its tables.
            raise HostProblem(
                f"{err} (the plugin's table cannot be read through {self.binary()})"
            ) from None

    def read_settled(self, families: Iterable[int] = (4, 6)) -> Ruleset:
        """read(), stamped with the ruleset generation it was listed at
        (Ruleset.generation): settled before the listing (no commit under way) and the
        same after it, so nothing committed meanwhile; listed again when something
        did, unless the plugin's tables are still the makings listed (_same_tables_at).
        Unstamped when the generation cannot be had (no netlink, not allowed,
        PORTMAPCTL_NFT_BATCH=0) or kept moving: the write is then `nft -f`."""
        from dataclasses import replace

        from portmapctl.iptables.access import nfgen

        if not nfgen.batches_on():
            return replace(self.read(families), unstamped="PORTMAPCTL_NFT_BATCH=0")
        for _ in range(_SETTLED_READS):
            before = nfgen.generation(settled=True)
            ruleset = self.read(families)
            if before is None:
                return replace(
                    ruleset,
                    unstamped="no ruleset generation: nf_tables netlink cannot be used here,"
                    " or commits kept it moving",
                )
            # (Not settled: a commit under way now is not in the listing, and moves
            # the number before it shows.)
            if nfgen.generation(settled=False) == before:
                return replace(ruleset, generation=before)
            at = _same_tables_at(ruleset)
            if at is not None:
                return replace(ruleset, generation=at)
        return replace(
            ruleset,
            unstamped=f"the ruleset kept changing while nft listed it ({_SETTLED_READS} listings)",
        )

    def _check_listed_version(self, outputs: List[str]) -> None:
        """The version check, from the `metainfo` that `nft -j` prints first: one
        process less per read (it was a tenth of `list`'s nft time). Without one (no
        table, or not nftables' JSON) `nft --version` answers."""
        if self._checked:
            return
        for out in outputs:
            listed = _listed_version(out)
            if listed is not None:
                if listed < MIN_VERSION:
                    raise NftUnusable(_too_old(listed))
                self._checked = True
                return
        self._ready()

    def apply(self, txn: Transaction, read_at: Optional[int] = None) -> None:
        """`read_at`: the generation the tables `txn` was planned from were listed at
        (read_settled): a transaction of deletions alone then goes as one nf_tables
        batch the kernel applies only at that generation (batch.py says why)."""
        if not txn:
            return
        if read_at is not None and self._deleted_at(txn, read_at):
            return
        self._ready()
        try:
            proc = subprocess.run(
                [self.binary(), "-f", "-"],
                input=txn.render(),
                capture_output=True,
                text=True,
                check=False,
                timeout=TIMEOUT_SECONDS,
            )
        except OSError as err:
            raise HostProblem(f"cannot run {self.binary()}: {err.strerror}") from None
        except subprocess.TimeoutExpired:
            # Not an NftApplyFailed: converge_nft would run it again, each try waiting
            # as long (as iptables-restore's ToolTimedOut); the first ends the command.
            stopped = f"nft -f did not finish within {TIMEOUT_SECONDS:g} s and was stopped"
            raise ToolTimedOut(
                f"{stopped}; {MAY_HAVE_GONE_IN}", maybe_applied=True, stopped=stopped
            ) from None
        if proc.returncode < 0:
            # Not a refusal: maybe it went in (whole); the caller reads again.
            raise NftApplyFailed(str(killed("nft -f", -proc.returncode)), maybe_applied=True)
        if proc.returncode != 0:
            reason = first_error(proc.stderr)
            if "Operation not permitted" in reason:
                raise HostProblem("nft -f: operation not permitted (run as root)")
            raise NftApplyFailed(
                f"nft -f refused the transaction: {reason}",
                reason,
                userspace="Could not process rule" not in proc.stderr,
            )

    def _deleted_at(self, txn: Transaction, read_at: int) -> bool:
        """True when `txn`'s deletions went in as one batch at generation `read_at`;
        False when that way is not possible (nothing changed: `nft -f` then).
        NftApplyFailed when the kernel refused it because the ruleset moved (the
        caller reads again and plans again), or when no answer came back."""
        from portmapctl.nftables.access import batch

        if not batch.deletes_only(txn):
            return False
        import logging

        result = batch.delete_rules(txn, read_at)
        log = logging.getLogger("portmapctl.nftables")
        if result.outcome is batch.Outcome.APPLIED:
            log.debug("nftables: deleted as one nf_tables batch at generation %d", read_at)
            return True
        if result.outcome is batch.Outcome.CHANGED:
            log.debug("nftables: %s at generation %d: read again", result.why, read_at)
            raise NftApplyFailed(f"nf_tables refused the batch: {result.why}", CHANGED)
        if result.outcome is batch.Outcome.UNKNOWN:
            raise NftApplyFailed(
                f"the nf_tables batch was sent but {result.why} (it went in whole or not at all)",
                maybe_applied=True,
            )
        log.debug("nftables: not as one nf_tables batch (%s): nft -f", result.why)
        return False


def _same_tables_at(ruleset: Ruleset) -> Optional[int]:
    """A settled generation after `ruleset` was listed at which each of its tables is
    still the making listed (the same handle: a table made again, by a firewall
    reload, has a new one); None when not (or it cannot be asked, or moved meanwhile).

    On a busy node (another table committing at 70/s and more) no listing of three was
    at one generation, and the deletions went as `nft -f` by handle alone: a reload
    then deleted a live container's rule. Stamped so instead: a table never gives a
    rule's handle twice, so each handle the plan deletes is still the rule listed, or
    gone (the batch is refused whole, ENOENT, and planned again), unless another tool
    replaced that rule in place (`nft replace rule`, which the plugin never does); and
    any commit after this generation refuses the batch."""
    from portmapctl.iptables.access import nfgen, nfmsg

    at = nfgen.generation(settled=True)
    if at is None:
        return None
    try:
        with nfgen.open_socket() as sock:
            handles = {f: nfmsg.table_handle(sock, f, TABLE) for f in ruleset.tables}
    except OSError:
        return None
    if nfgen.generation(settled=False) != at:
        return None
    if any(handles[f] != table.handle for f, table in ruleset.tables.items()):
        return None
    return at


def run_nft(binary: str) -> Callable[[List[str]], str]:
    """`nft ARGS` -> its stdout (OSError when it fails)."""

    def run(args: List[str]) -> str:
        done = subprocess.run(
            [binary, *args], capture_output=True, text=True, timeout=30, check=False
        )
        if done.returncode != 0:
            raise OSError(f"nft {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    return run


def iptables_nat_present(nft: str) -> bool:
    """Whether this namespace has an iptables nat table: legacy (the kernel lists it)
    or nf_tables (iptables-nft's `table ip nat`). True when that cannot be told."""
    for name in ("ip_tables_names", "ip6_tables_names"):
        try:
            with open(f"/proc/thread-self/net/{name}") as listing:
                if "nat" in listing.read().split():
                    return True
        except FileNotFoundError:
            continue  # the module is not loaded: no legacy table at all
        except OSError:
            return True
    try:
        listed = subprocess.run(
            [nft, "list", "tables"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return True
    tables = {tuple(line.split()[1:3]) for line in listed.stdout.splitlines()}
    return listed.returncode != 0 or bool(tables & {("ip", "nat"), ("ip6", "nat")})
