"""python-iptables (libiptc), no iptables processes: `--iptables iptc`, legacy only.

libiptc reads and writes the legacy (x_tables) tables and nothing else. On a host
whose `iptables` is nf_tables it would find an empty nat table and "repair" into the
wrong tables, so `open_backend` refuses it there and `auto` never picks it.

Reading does in process what `iptables-legacy-save -t nat` does: walk libiptc's
entries, print the generic part (-s -d -i -o -p -f) the way iptables-save's
print_rule4/print_rule6 do, and let every match and target print its options with
its own xtables `save()` -- the very code iptables-save runs. The text is then read by
`ruleset.parse_save` like any dump, so rules come out in exactly the saved normal
form, foreign ones included (tests compare it byte for byte with iptables-legacy-save).

Writing builds each rule of a transaction (saved form) into a libiptc entry with
python-iptables' Rule/Match/Target, runs all of the transaction's ops on one table
handle with autocommit off, and commits once: libiptc replaces the whole table in one
setsockopt, so it is all or nothing: on any failure the handle is dropped uncommitted
(and a failed `-D` is how a table that changed under us shows, as with
iptables-restore). Like iptables-legacy-restore -w, it holds the xtables lock from
reading the table to the commit, so it serialises with the plugin's iptables runs.

Each read and each transaction is one libiptc session in a fork of this process (no
exec, a few ms; see `_in_child` for why). This module is the backend and the fork;
`read` prints a table, `write` applies a transaction, `lib` loads python-iptables and
opens the table, `text` is the pure part (no ctypes: unit-tested without root).

python-iptables (1.2.0, with libxtables 1.8.9) quirks this module works around:
- libxtables registers a family-specific target (DNAT, MASQUERADE, SNAT, REDIRECT)
  for the first address family that loads its library, so in one process DNAT works
  for IPv4 or for IPv6, never both; python-iptables' attempt to register it again
  can end the process with exit(1) ("target ... already registered"). And
  `iptc.Table("nat")` is a process-wide singleton whose libiptc handle (and socket)
  belongs to the namespace it was opened in. So every session (one family: one read,
  or one transaction) runs in a fork of this process, which itself never loads an
  extension or opens a table: each starts clean, in the current (`--netns`)
  namespace, and a crash in C ends the child, not the command, with nothing
  committed.
- Its Rule objects cost about 100 us a rule (every attribute set calls dir()), most
  of the "40 times slower than iptables-legacy-save" in FACTS: reading unpacks the
  raw entries and calls the extensions' save() directly, with C's stdout pointed at
  a memfd once per read (python-iptables makes a pipe per match).
- `get_all_parameters()` re-parses save() output with shlex, which keeps the
  backslash of iptables' `\\'`; `Rule.final_check()` makes the same round trip
  before a write, so a comment with a `'` would be written with a backslash.
  Matches and targets get their extension's own final check instead.
- `Rule6` interface masks are 0x01 bytes, not 0xff (the kernel would compare one bit
  of each character, and a `-D` would not find ip6tables' rule); `Rule6.src` keeps
  the host bits; `Rule6.protocol = "!tcp"` clears IP6T_F_PROTO, which ip6tables
  always sets. Addresses, interfaces and that flag are written here directly.
- `Target(rule, name)` for a name outside its hard-coded list opens every table
  (creating the legacy filter, mangle, raw and security tables): jumps to chains
  are built as standard targets directly.
- libiptc messages come as bytes (`b'Bad rule ...'`) in its exceptions.
- `import iptc` takes 0.25-0.4 s (0.15 s of it is setuptools' distutils shim, for
  one get_python_lib(); it also runs `ldconfig -N -v` and `modprobe ip_tables`): it
  happens only when this backend is opened.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Any, Callable, Dict, Iterator, Optional

from portmapctl.core.backend import IptablesAccess
from portmapctl.errors import ApplyFailed, BadInput, HostProblem, PortmapctlError, killed
from portmapctl.host.lock import flock_within
from portmapctl.iptables.access import NEW_NAT_TABLE, legacy_probe_place, legacy_read_skipped
from portmapctl.iptables.access.iptc.lib import Lib, clean, load
from portmapctl.iptables.access.iptc.read import Reader
from portmapctl.iptables.access.iptc.write import Writer
from portmapctl.iptables.access.restore import lock_wait_seconds
from portmapctl.iptables.ruleset import NatTable, parse_save
from portmapctl.iptables.transaction import Transaction

XT_LOCK_NAME = "/run/xtables.lock"  # iptables' own lock (XTABLES_LOCKFILE overrides it)


class IptcBackend:
    """The backend; every libiptc session runs in a forked child (see `_in_child`)."""

    name = IptablesAccess.IPTC
    writable = True

    def __init__(self, lock_wait: Optional[float] = None) -> None:
        self._lib = load()
        # The wait iptables-legacy-restore -w is given (PORTMAPCTL_XTABLES_WAIT, or 10 s):
        # the lock is the same, and so is the operator's setting for it.
        self.lock_wait = lock_wait_seconds() if lock_wait is None else lock_wait

    def read(self, family: int) -> NatTable:
        if legacy_read_skipped(family):
            # libiptc would create the table it opens: a read changes nothing.
            return parse_save(NEW_NAT_TABLE, family, source="python-iptables")
        return parse_save(self.save_text(family), family, source="python-iptables")

    def save_text(self, family: int) -> str:
        """The nat table as `iptables-legacy-save -t nat` prints it, minus `#` lines."""
        text = _in_child(self._lib, lambda: Reader(self._lib, family).save_text(), HostProblem)
        assert isinstance(text, str)
        return text

    def refusal(self, txn: Transaction) -> Optional[str]:
        """What python-iptables refuses of `txn`, built on a table handle that is never
        committed (Writer.refusal), None when it takes it: bad input told from a table
        that changed, as RestoreBackend.refusal tells it with iptables-restore --test
        (ops/conditions.py). A child that dies says nothing of the text: the write will."""
        if not txn:
            return None
        # (The child's handle opens the table, which creates it where it was not.)
        with legacy_probe_place(txn) as placed:
            if not placed:
                return None
            try:
                said = _in_child(
                    self._lib, lambda: Writer(self._lib, txn.family).refusal(txn), ApplyFailed
                )
            except ApplyFailed:
                return None
        return said

    def apply(self, txn: Transaction) -> None:
        if not txn.ops:
            return
        # Held by this process while the child reads, changes and commits the table.
        with xtables_lock(self.lock_wait):
            _in_child(self._lib, lambda: Writer(self._lib, txn.family).apply(txn), ApplyFailed)


def _in_child(lib: Lib, work: Callable[[], Optional[str]], failure: type) -> Optional[str]:
    """Run one libiptc session in a forked child and hand back its result or error.

    Why a child: libxtables 1.8.9 registers a target extension for one address
    family per process (the first that loads it: DNAT/MASQUERADE work for IPv4 or
    IPv6, never both), and python-iptables keeps table handles, loaded extensions and
    their flags in process-wide caches. A fresh fork per session (a few ms) starts
    from the clean state this process keeps (it never opens a table itself), in the
    network namespace this process is in now. A C-level exit() in libxtables
    (python-iptables can trigger "already registered") ends the child, not the
    command; a child that dies before its commit has changed nothing.

    Errors come back as the PortmapctlError the child raised, anything else as
    `failure` (HostProblem for a read, ApplyFailed for a transaction).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    lib.libc.fflush(None)  # or the child would print C's pending output again
    errors = os.memfd_create("portmapctl-iptc-stderr", os.MFD_CLOEXEC)
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        status = 1
        try:
            os.close(reader)
            os.dup2(errors, 2)  # C libraries' complaints, for the parent's message
            try:
                reply: Dict[str, Any] = {"result": work()}
            except PortmapctlError as err:
                reply = {"error": type(err).__name__, "message": str(err)}
            except BaseException as err:  # noqa: BLE001 - reported to the parent
                reply = {"error": "", "message": f"{type(err).__name__}: {clean(err)}"}
            data = json.dumps(reply).encode()
            view = memoryview(data)
            while view:
                view = view[os.write(writer, view) :]
            status = 0
        finally:
            os._exit(status)
    os.close(writer)
    chunks = []
    try:
        while True:
            chunk = os.read(reader, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(reader)
        _, status = os.waitpid(pid, 0)
    stderr = os.pread(errors, 4096, 0).decode(errors="replace")
    os.close(errors)
    if not chunks or os.waitstatus_to_exitcode(status) != 0:
        said = next((line.strip() for line in stderr.splitlines() if line.strip()), "")
        if failure is ApplyFailed and os.WIFSIGNALED(status):
            # Killed (the OOM killer, a signal to the whole cgroup): maybe after its
            # commit, which libiptc makes whole or not at all; the caller reads again.
            raise killed("python-iptables", os.WTERMSIG(status))
        raise failure(
            "python-iptables died (exit status"
            f" {os.waitstatus_to_exitcode(status)}{': ' + said if said else ''}):"
            " nothing was committed; use --iptables legacy"
        )
    reply = json.loads(b"".join(chunks))
    if "error" in reply:
        known = {"HostProblem": HostProblem, "BadInput": BadInput, "ApplyFailed": ApplyFailed}
        raise known.get(reply["error"], failure)(reply["message"])
    return reply["result"]


@contextlib.contextmanager
def xtables_lock(wait: float) -> Iterator[None]:
    """Hold iptables' xtables lock, as iptables-legacy-restore -w does, for `wait` s at most."""
    path = os.environ.get("XTABLES_LOCKFILE") or XT_LOCK_NAME
    try:
        fd = os.open(path, os.O_CREAT | os.O_RDONLY | os.O_CLOEXEC, 0o600)
    except OSError as err:
        raise HostProblem(f"cannot open the xtables lock {path}: {err.strerror}") from None
    try:
        if not flock_within(fd, wait):
            raise ApplyFailed(
                f"another program held the xtables lock ({path}) for {wait:g} s: nothing changed",
                busy=True,
            )
        yield
    finally:
        os.close(fd)
