"""`add` of a new container on iptables-nft as one nf_tables batch, which the kernel
refuses whole when the ruleset changed after what it was planned on was read.

Why not iptables-restore here (with gc's removal, the departure from the letter of
SPEC §5 that docs/architecture.md explains): any `-C` in a restore makes iptables-nft
fetch the rules of every chain the restore names, CNI-HOSTPORT-DNAT's among them (the
chain add appends to: two rules per container), so the restore of one container grew
from 3 ms at 100 containers to 90 ms at 5,000. Reading the few chains add checks over
netlink and sending the change with the generation they were read at is what the
moonshot of SPEC §6 asks: read only what it touches, and let a stale plan fail whole.

What it does, for a container whose chain does not exist yet (planner.plan_blind's
assumption, checked here rather than inside a restore):

1. The rules are encoded first (nfnl_rules.py); a shape it does not know is UNAVAILABLE
   and nothing was read.
2. At one generation G (asked, then settled: no commit under way, nfgen.settled_at):
   the container's chain is asked for (it must not exist), and every chain holding a
   shared rule the plan relies on (PREROUTING, OUTPUT and POSTROUTING's jumps,
   CNI-HOSTPORT-SETMARK's and -MASQ's rules) is dumped; each such rule must be there,
   byte for byte as this iptables writes it (counters aside), and the generation still
   G afterwards. When a rule is not there, or the chain exists, the outcome is
   REFUSED: nothing was sent, and add reads the table whole and plans as before.
3. One batch, carrying G: the chain, its rules, its entry rules appended to
   CNI-HOSTPORT-DNAT, for every family at once. The kernel applies all of it or none:
   ERESTART when anything committed since G (read again, up to three times), ENOENT
   when a chain jumped to or appended to is missing (REFUSED), nothing else expected.

Right before the batch goes: `pinned()` says whether this iptables is one whose bytes
tests/kernel/test_nfnl_add.py pins (nfnl_rules.VERIFIED_IPTABLES; PinnedCheck: `iptables
--version`, run meanwhile or remembered for that binary), and an empty batch at a wrong generation
checks that the kernel refuses one, as gc's batch does (a kernel that ignored the
generation would apply a stale plan). Either not so: UNAVAILABLE, nothing sent.
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import socket
import subprocess
from typing import (
    TYPE_CHECKING,
    Callable,
    Dict,
    FrozenSet,
    Iterator,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Set,
    Tuple,
)

from portmapctl.host import netlink as nl
from portmapctl.host.paths import find_tool
from portmapctl.iptables.access import nfgen, nfmsg, nfnl_rules
from portmapctl.iptables.access.nfmsg import NFPROTO, Changed, Outcome

if TYPE_CHECKING:
    from portmapctl.iptables.chains import Chain

_TRIES = 3
# -N (refused if the chain exists), and -A.
_NEW_CHAIN = nl.NLM_F_REQUEST | nfmsg.NLM_F_CREATE | nfmsg.NLM_F_EXCL
_APPENDED = nl.NLM_F_REQUEST | nfmsg.NLM_F_CREATE | nfmsg.NLM_F_APPEND
_TABLE = "nat"


class Result(NamedTuple):
    """What came of it, and why (for -v). (NamedTuples, not dataclasses, here: every
    add imports this module, and making a dataclass costs 0.3-0.4 ms.)"""

    outcome: Outcome
    why: str = ""
    # APPLIED: the generation the batch was applied at, and the one the kernel said
    # right after it (one more when no other commit came between).
    commit: Optional[Tuple[int, int]] = None


class _Plan(NamedTuple):
    """What one family's batch holds and relies on."""

    family: int
    new_chains: Tuple[str, ...]
    rules: Tuple[Tuple[str, bytes], ...]  # (chain, NEWRULE body), in order
    # The shared rules it relies on: chain -> their expressions as this iptables writes.
    relies_on: Dict[str, FrozenSet[bytes]]


class PinnedCheck:
    """Whether the `iptables` add would otherwise run is one whose bytes nfnl_rules
    writes: nf_tables, a version in nfnl_rules.VERIFIED_IPTABLES. Its `--version` line
    comes from host/tool_memo.py when that binary was asked before, else from the
    process started here (read by `answer`, meanwhile add plans and reads)."""

    QUESTION = "iptables --version"

    def __init__(self) -> None:
        from portmapctl.host import tool_memo

        path = find_tool("iptables") or "iptables"
        self._key = tool_memo.identity(path)
        self._said = None if self._key is None else tool_memo.recall(self.QUESTION, self._key)
        self._asked: Optional[subprocess.Popen[str]] = None
        if self._said is None:  # OSError when it cannot run: the caller's to say
            self._asked = subprocess.Popen(
                [path, "--version"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                start_new_session=True,  # (killed with whatever it starts, should it hang)
            )

    def answer(self) -> bool:
        """Pinned or not (False too when iptables does not answer within 10 s)."""
        if self._said is None and self._asked is not None:
            self._said = _version_line(self._asked)
            if self._said is not None and self._key is not None:
                from portmapctl.host import tool_memo

                tool_memo.remember(self.QUESTION, self._key, self._said)
        return pinned_line(self._said)

    def close(self) -> None:
        """Stop the process if its answer was never asked for (the batch never got
        that far)."""
        if self._asked is not None and self._asked.poll() is None:
            self._asked.kill()
            self._asked.wait()


def pinned_line(said: Optional[str]) -> bool:
    """Whether `iptables --version` said a version whose bytes nfnl_rules writes."""
    words = (said or "").split()
    # "iptables v1.8.9 (nf_tables)"
    return (
        len(words) == 3
        and words[1].startswith("v")
        and words[1][1:] in nfnl_rules.VERIFIED_IPTABLES
        and words[2] == "(nf_tables)"
    )


def _version_line(version: subprocess.Popen[str]) -> Optional[str]:
    """What `iptables --version` printed, if it ended well within 10 s."""
    try:
        out, _ = version.communicate(timeout=10)
    except ValueError:  # (not text)
        return None
    except subprocess.TimeoutExpired:
        try:
            os.killpg(version.pid, signal.SIGKILL)
            version.communicate(timeout=1)
        except (OSError, subprocess.TimeoutExpired):
            pass  # (a grandchild holding its output open: not waited for)
        return None
    return out.strip() if version.returncode == 0 and out.strip() else None


def plan(family: int, chains: Sequence[Chain]) -> Optional[_Plan]:
    """The batch of planner.plan_blind(chains, family), encoded; None when a rule is of
    a shape nfnl_rules does not write (or a chain is entered at the top)."""
    new_chains: List[str] = []
    rules: List[Tuple[str, bytes]] = []
    relies_on: Dict[str, Set[bytes]] = {}
    for chain in chains:
        if not chain.shared:
            if chain.prepend_entry:
                return None
            new_chains.append(chain.name)
        for where, args in _placed(chain):
            body = nfnl_rules.expressions(args, family)
            if body is None:
                return None
            if chain.shared:  # there already: checked, not written
                relies_on.setdefault(where, set()).add(body)
                continue
            compat = nfnl_rules.compat(args)
            if compat is None:
                return None
            rules.append((where, body + compat))
    return _Plan(
        family,
        tuple(new_chains),
        tuple(rules),
        {chain: frozenset(bodies) for chain, bodies in relies_on.items()},
    )


def _placed(chain: Chain) -> Iterator[Tuple[str, Tuple[str, ...]]]:
    """(the chain it is in, the rule) for the chain's rules, then its entry rules."""
    for args in chain.rules:
        yield chain.name, args
    for entry in chain.entry_chains:
        for args in chain.entry_rules:
            yield entry, args


def apply_new(plans: Sequence[_Plan], pinned: Callable[[], bool] = lambda: True) -> Result:
    """Write the plans' chains and rules (every family in one batch), checked and
    guarded as the module says. Call in the network namespace to write to. `pinned()`
    (asked once, right before the first send): whether this iptables' bytes are the
    ones nfnl_rules writes (PinnedCheck.answer); if not, nothing is
    sent (UNAVAILABLE)."""
    gate = functools.lru_cache(maxsize=None)(pinned)
    try:
        with nfgen.open_socket() as sock:
            for _attempt in range(_TRIES):
                try:
                    result = _attempt_once(sock, plans, gate)
                except Changed:
                    continue
                if result is not None:
                    return result
    except OSError as err:
        return Result(Outcome.UNAVAILABLE, f"nf_tables netlink: {err.strerror or err}")
    return Result(Outcome.UNAVAILABLE, "the ruleset kept changing while it was read")


def _attempt_once(
    sock: socket.socket, plans: Sequence[_Plan], pinned: Callable[[], bool]
) -> Optional[Result]:
    """One read and one batch: a Result, or None when the batch met a newer
    generation (then everything is read again)."""
    read_at = nfgen.ask(sock, 1)
    if not nfgen.settled_at(sock, read_at, 2):  # (what is read from now on shows read_at)
        raise Changed()
    for one in plans:
        for name in one.new_chains:
            if nfmsg.chain_exists(sock, one.family, _TABLE, name):
                return Result(Outcome.REFUSED, f"IPv{one.family}: chain {name} exists")
        for chain, wanted in one.relies_on.items():
            try:
                dumped = nfmsg.dump_chain(sock, one.family, _TABLE, chain)
            except OSError as err:
                if err.errno == errno.ENOENT:
                    return Result(Outcome.REFUSED, f"IPv{one.family}: no chain {chain}")
                raise
            found = {
                nfnl_rules.comparable(rule.buf, span)
                for rule in dumped
                if (span := rule.expressions()) is not None
            }
            if not wanted <= found:
                return Result(
                    Outcome.REFUSED, f"IPv{one.family}: {chain} lacks a rule of the plugin's"
                )
    if nfgen.ask(sock, 5) != read_at:
        raise Changed()
    # (family, message, flags, attributes), in the order the kernel is to apply them.
    ops: List[Tuple[int, int, int, bytes]] = []
    for one in plans:
        for name in one.new_chains:
            where = nfmsg.where(_TABLE, name, nfmsg.CHAIN_NAME)
            ops.append((one.family, nfmsg.NEWCHAIN, _NEW_CHAIN, where))
        for chain, body in one.rules:
            ops.append((one.family, nfmsg.NEWRULE, _APPENDED, nfmsg.where(_TABLE, chain) + body))
    first = 10
    messages = [
        nfgen.message(nfgen.nftables(kind), flags, NFPROTO[family], first + i, attributes)
        for i, (family, kind, flags, attributes) in enumerate(ops)
    ]
    seq = first + len(messages)
    if not messages:
        return Result(Outcome.APPLIED, "nothing to write")
    if not pinned():
        return Result(Outcome.UNAVAILABLE, "this iptables' bytes are not pinned")
    if not nfmsg.kernel_checks_generation(sock, read_at):
        return Result(Outcome.UNAVAILABLE, "this kernel does not check a batch's generation")
    begin_seq = 9
    sock.send(nfgen.batch(messages, read_at, begin_seq, seq))
    try:
        after, errors = nfgen.replies_until(sock, seq + 1)
    except OSError as err:
        # Sent, the answer lost: it may be in. The caller reads the table and plans,
        # which finds the chain complete (or not) and does what is left.
        return Result(Outcome.REFUSED, f"no answer from nf_tables: {err.strerror or err}")
    if not errors:
        return Result(Outcome.APPLIED, f"{len(messages)} messages in one batch", (read_at, after))
    if any(number == begin_seq and code == -errno.ERESTART for number, code in errors):
        return None
    number, code = errors[0]
    return Result(
        Outcome.REFUSED,
        f"nf_tables refused the batch (message {number - begin_seq}): {nfmsg.strerror(-code)}",
    )
