"""The dump behind add's shadow warning, started as the process starts, on big nodes.

Which rules of CNI-HOSTPORT-DNAT may claim one of the new container's host ports is one
nf_tables dump of that chain (iptables/access/nfnl.py): two rules per container, about
30 ms of the kernel's time and 10 ms of Python at 5,000 containers, more than the rest
of add's growth with the table. While Python imports add (one core busy for some 40 ms)
the machine's other core is idle: for an `add` run as the program, entry.py asks how
many chains the nat table holds (one round trip) and, from FORK_FROM_CHAINS on, forks
a child that dumps there while the parent imports. A child, not a thread: the parsing
of 10,000 rules would otherwise hold the GIL the imports need. On smaller nodes the
fork costs more than it saves, and add dumps in a thread under its lock as before.

Nothing here is trusted: the command line is read leniently (before add checks it),
and add keeps the dump only when it matches what add then checked and did
(ops/add_ahead.py): the same network namespace, every host port of the mapping among
those dumped for, and the chain exactly as add's own nf_tables batch found it -- the
generations asked around the dump are the one the batch was applied at, or that and
the one it made (nfnl.Dumped.taken_at). Otherwise (the ruleset moved in between, add
wrote another way, the line was not what it seemed) add dumps again under its lock,
as it did before. The child only reads; a command line that turns out wrong wastes it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from typing import TYPE_CHECKING, ContextManager, Dict, FrozenSet, List, Optional, Set, Tuple

if TYPE_CHECKING:
    from portmapctl.iptables.access.nfnl import Dumped

# The child is forked for a nat table of this many chains (about one per container) or
# more. Measured (docs/performance.md, add): at 5,000 containers it takes 20 ms off an
# add of 125 ms; at 1,000 the fork and its copied pages cost more than the dump they
# move off the GIL (+3 ms), at 100 about 5 ms. Below, add dumps in a thread as before.
FORK_FROM_CHAINS = 2000
# How long add waits for the child's answer: then it does without, as on a small node.
WAIT_SECONDS = 15.0


class EarlyClaims:
    """The dump, running in a child process of its own: forked before add imports
    anything much, so that neither the kernel's work nor the parsing of its answer
    competes with add's own Python for the GIL (as a thread would). Reading its answer
    is bounded (WAIT_SECONDS: add holds its lock meanwhile); close() ends a child
    nobody read."""

    def __init__(self, args: List[str], smallest: int = 0) -> None:
        """Fork the child for the add command line `args`, if its nat table holds at
        least `smallest` chains (the child is spared on a small node)."""
        self.ports: FrozenSet[int] = frozenset()
        self.netns: Optional[str] = None
        self._box: Optional[Dict[int, Dumped]] = None
        self._reading = threading.Lock()  # the one reader of the pipe
        self._state = threading.Lock()  # _pid and _pipe, read or changed
        self._pid = 0
        self._pipe = -1
        read = _read_line(args)
        if read is None:
            return
        self.ports, self.netns, families = read
        if smallest and _chains(self.netns, families[0]) < smallest:
            return
        reading, writing = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: dump, answer, and leave without any of the parent's exit
            code = 1
            try:
                os.close(reading)
                _detach_stdio()
                _answer(writing, self.netns, families, self.ports)
                code = 0
            finally:
                os._exit(code)
        os.close(writing)
        self._pid, self._pipe = pid, reading

    def dumped(self, netns: Optional[str], ports: FrozenSet[int]) -> Dict[int, Dumped]:
        """Each family's dump, once it is over, if it was taken in `netns` for at least
        `ports` (else none)."""
        with self._reading:
            if self._box is None:
                self._box = self._collect() if self._pipe >= 0 else {}
                self._release()
        if netns != self.netns or not ports <= self.ports:
            return {}
        return self._box

    def close(self) -> None:
        """End the child (killed if still at work): entry.py's, from the main thread,
        whether or not add read it. A reader at work meanwhile then meets the pipe's
        end at once, and closes and waits itself; else it is done here."""
        with self._state:
            if self._pid:  # (not waited for yet: the number is still our child's)
                try:
                    os.kill(self._pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self._reading.acquire(blocking=False):
            try:
                self._release()
            finally:
                self._reading.release()

    def _release(self) -> None:
        """The pipe closed and the child waited for, once (under `_reading`)."""
        with self._state:
            pid, pipe = self._pid, self._pipe
            self._pid, self._pipe = 0, -1
        if pipe >= 0:
            os.close(pipe)
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)  # (over, usually: then nothing happens)
            except ProcessLookupError:
                pass
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass

    def _collect(self) -> Dict[int, Dumped]:
        import marshal

        from portmapctl.iptables.access.nfnl import Dumped, KeptRule

        try:
            answer = marshal.loads(self._read_all())
            return {
                family: Dumped([KeptRule(i, t) for i, t in kept], started, ended)
                for family, (kept, started, ended) in answer.items()
            }
        except (EOFError, ValueError, TypeError):
            return {}  # the child failed or did not finish in time: add dumps again

    def _read_all(self) -> bytes:
        """The pipe to its end, or what came before WAIT_SECONDS passed."""
        import select

        deadline = time.monotonic() + WAIT_SECONDS
        chunks = []
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([self._pipe], [], [], left)[0]:
                break
            chunk = os.read(self._pipe, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def _detach_stdio() -> None:
    """The child's standard streams on /dev/null: one who reads add's output to its
    end (a runtime, `$(portmapctl add ...)`) must not wait for the child too."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)


def _answer(
    pipe: int, netns: Optional[str], families: Tuple[int, ...], ports: FrozenSet[int]
) -> None:
    """In the child: each family's dump, as marshal data on `pipe`."""
    import marshal

    from portmapctl.iptables.access.nfnl import dump_for_ports
    from portmapctl.iptables.chains import TOPLEVEL_DNAT

    answer = {}
    with _namespace(netns):
        for family in families:
            found = dump_for_ports(family, TOPLEVEL_DNAT, ports)
            if found is not None:
                kept = [(rule.index, rule.target) for rule in found.kept]
                answer[family] = (kept, found.started, found.ended)
    data = marshal.dumps(answer)
    while data:
        data = data[os.write(pipe, data) :]


def start(args: List[str]) -> Optional[EarlyClaims]:
    """The dump for `portmapctl ARGS` (an add run as the program), started; None where
    it cannot serve, or where forking is unsafe (another thread runs)."""
    from portmapctl.iptables.access import nfgen

    if "--dry-run" in args or threading.active_count() != 1:
        return None
    try:
        if not nfgen.batches_on():  # (a bad value: the command says so, nothing starts)
            return None
        return EarlyClaims(args, FORK_FROM_CHAINS)
    except Exception:  # noqa: BLE001 - only a head start: add does it all itself without
        return None


def _chains(netns: Optional[str], family: int) -> int:
    """How many chains the nat table of `family` holds (one per container, about)."""
    from portmapctl.iptables.access import nfgen, nfmsg

    with _namespace(netns), nfgen.open_socket() as sock:
        return nfmsg.table_chains(sock, family, "nat")


def _namespace(netns: Optional[str]) -> ContextManager[object]:
    if netns is None:
        return contextlib.nullcontext()
    from portmapctl.host.netns import entered  # (its import costs 4 ms: only then)

    return entered(netns)


def _read_line(args: List[str]) -> Optional[Tuple[FrozenSet[int], Optional[str], Tuple[int, ...]]]:
    """(host ports, --netns, families) of an add command line, read leniently; None for
    a line this dump cannot serve (ports from --cni-config, nftables, dry run). The
    families are --family's, and of those only the ones an --ip is given in: a mapping
    has no rules in a family it has no address of (the IPv6 dump is spared for an
    IPv4 container)."""
    from portmapctl.cli.add_options import OPTIONS  # (no imports: the fork comes first)

    values: Dict[str, List[str]] = {}  # by parameter
    words = iter(args[1:])
    for word in words:
        name, equals, attached = word.partition("=")
        parameter, kind = OPTIONS.get(name, (None, "flag"))
        if parameter is not None and kind != "flag":
            value = attached if equals else next(words, None)
            if value is None:
                return None
            values.setdefault(parameter, []).append(value)
    if "cni_config" in values or values.get("backend", ["auto"])[-1] == "nftables":
        return None
    ports = _host_ports(values.get("publish", []))
    if not ports:
        return None
    family = values.get("family", ["all"])[-1].lstrip("v")
    if family not in ("all", "4", "6"):
        return None  # add says what is wrong with it
    families = (4, 6) if family == "all" else (int(family),)
    addresses = values.get("ip", [])
    if addresses:
        # (An IPv6 address has a colon, an IPv4 one none; add checks them.)
        given = {6 if ":" in address else 4 for address in addresses}
        families = tuple(f for f in families if f in given)
        if not families:
            return None  # nothing to write: nothing to dump
    return ports, values.get("netns", [None])[-1], families


def _host_ports(specs: List[str]) -> FrozenSet[int]:
    """The host ports of `-p [HOSTIP:]HOSTPORT[-END]:CONTAINERPORT[-END][/PROTO]` specs;
    empty when one cannot be read this simply (add's own checks say what is wrong)."""
    ports: Set[int] = set()
    for spec in specs:
        words = spec.split("/", 1)[0].rsplit(":", 2)
        ends = words[-2].split("-", 1) if len(words) >= 2 else []
        if not ends or not all(end.isascii() and end.isdigit() and len(end) <= 5 for end in ends):
            return frozenset()
        # (At most 65,536 ports however the ends are spelled; add refuses the bad ones.)
        ports.update(range(int(ends[0]), min(int(ends[-1]), 65535) + 1))
    return frozenset(ports)
