"""Which rules of one iptables-nft chain may send one of some destination ports on,
read over nf_tables netlink: what `add`'s shadow warning needs of CNI-HOSTPORT-DNAT,
without `iptables -S` printing (and portmapctl parsing) two rules per container.

One NFT_MSG_GETRULE dump of the chain (the kernel sends only that chain's rules) is
scanned as bytes. A rule is left out only when it is certainly the plugin's shape of
a port match that names none of the ports: one `-m multiport --dports P[,P...]` (the
xt match, revision 1, destination ports, not negated, no ranges) in which no P is one
of them. Every other rule -- a v0.6 entry rule without ports (it claims every port of
its chain), `--dport`, `--sports`, ranges, a negation, two multiport matches, anything
unknown -- is kept, with its jump target when it has one. So an empty answer means no
rule there can claim one of the ports, and a caller with rules to judge reads them as
iptables prints them (ops/add_others.py). At 5,000 containers (10,000 rules) the dump is
about a sixth of `iptables -S CNI-HOSTPORT-DNAT`'s cost and needs no parsing of text.

Whether a commit tore a dump is told by the ruleset generation asked right before and
right after it (the kernel answers both on the same socket, around the whole dump), the
first once no commit is under way (nfgen.settled_at): equal, nothing committed
meanwhile. A dump that shows a rule twice (by its handle) is torn whatever the
generations say (see _dump). `add` starts its dump as early as it can
(ops/add_early.py) and keeps it when the only commit during it was its own.

The kernel ABI: linux/netfilter/nf_tables.h, nfnetlink.h; xt_multiport.h for the
match's data (struct xt_multiport_v1, in host byte order as iptables wrote it).
tests/kernel/test_nfnl.py holds this to `iptables -S` on tables of every plugin shape.
"""

from __future__ import annotations

import errno
import socket
import struct
from typing import (
    Callable,
    Collection,
    Dict,
    FrozenSet,
    List,
    NamedTuple,
    Optional,
    Set,
    Tuple,
)

from portmapctl.host import netlink as nl
from portmapctl.iptables.access import nfgen, nfmsg

_RECV_SIZE = 1 << 16
_UNSETTLED = -1  # a dump's start when no generation can be vouched for (none is < 1)
_TORN = -2  # a dump's end when it showed a rule twice: torn, whatever the generations say
# The attribute header of NFTA_RULE_HANDLE (12 bytes: the header and a be64), the first
# such bytes after a rule message's table and chain names.
_HANDLE = struct.pack("=HH", 12, nfmsg.RULE_HANDLE)
_TRIES = 3

# The expression of `-m multiport --dports ...` as iptables-nft 1.8 writes it: a
# "match" expression whose data is the match's name, revision 1 and its 48-byte
# xt_multiport_v1 (flags, count, ports[15], pflags[15], invert), flags being
# XT_MULTIPORT_DESTINATION. The attribute headers are part of the pattern, so the
# bytes can only be found where an expression starts (a comment holds no NUL).
_MULTIPORT_DPORTS = (
    b"\x0a\x00\x01\x00match\x00\x00\x00"  # NFTA_EXPR_NAME "match"
    b"\x50\x00\x02\x00"  # NFTA_EXPR_DATA, 80 bytes
    b"\x0e\x00\x01\x00multiport\x00\x00\x00"  # NFTA_MATCH_NAME
    b"\x08\x00\x02\x00\x00\x00\x00\x01"  # NFTA_MATCH_REV 1
    b"\x34\x00\x03\x00"  # NFTA_MATCH_INFO, 48 bytes
    b"\x01"  # flags: XT_MULTIPORT_DESTINATION
)
_MULTIPORT = b"\x0e\x00\x01\x00multiport\x00"  # any multiport match, by its name
# The rest of xt_multiport_v1 after the pattern: count, ports[15], then pflags[15]
# and invert, all zero for single ports, not negated.
_COUNT_AT = len(_MULTIPORT_DPORTS)
_MAX_PORTS = 15
_PFLAGS_AT = 1 + 2 * _MAX_PORTS  # from the count
_NO_RANGES = bytes(_MAX_PORTS + 1)
_PORTS = [struct.Struct(f"={count}H") for count in range(_MAX_PORTS + 1)]
_HEAD = struct.Struct("=IH")  # nlmsghdr: length, type
_RULE_MESSAGE = nfgen.nftables(nfmsg.NEWRULE)


class KeptRule(NamedTuple):
    """A rule that may send one of the ports on: its place in the chain (0-based) and
    its jump or goto target (None: it has none that could be read)."""

    index: int
    target: Optional[str]


# The generations one commit of ours was applied at and made (nfnl_add.Result.commit),
# once it is over; None when we made none that way.
OwnCommit = Callable[[], Optional[Tuple[int, int]]]


class Dumped(NamedTuple):
    """rules_for_ports' answer from one dump, and the ruleset generations asked right
    before and right after it (equal: nothing committed while it ran)."""

    kept: List[KeptRule]
    started: int
    ended: int

    def taken_at(self, generation: int, own_commit: Optional[Tuple[int, int]]) -> bool:
        """Whether this is the chain as it was at `generation`, give or take what our
        own commit appended: nothing else committed from the dump's start to its end.
        `own_commit`: the generation our commit was applied at and the one the kernel
        said right after it (nfnl_add.Result.commit), or None."""
        window = {generation}
        if own_commit is not None and own_commit == (generation, nfgen.following(generation)):
            window.add(own_commit[1])  # (when the kernel said more, another came after)
        # Generations only move on, one per commit: both ends in the window, and not
        # the other way round, means no commit but ours.
        return {self.started, self.ended} <= window and not (
            self.started != generation and self.ended == generation
        )


def rules_for_ports(
    family: int,
    chain: str,
    ports: Collection[int],
    table: str = "nat",
    before_retry: Optional[Callable[[], object]] = None,
    own_commit: Optional[OwnCommit] = None,
) -> Optional[List[KeptRule]]:
    """The rules of `chain` (iptables-nft, current network namespace) that may send a
    packet to one of `ports` on, in their order; [] when none can. None when the chain
    cannot be read this way (no nf_tables, not allowed) or the ruleset kept changing
    during the dump. A dump that a commit tore is taken again, after `before_retry()`
    (add waits there for its own write to be over) -- unless that commit was the only
    one while the dump ran and `own_commit` says it was ours (add's batch, which only
    appends to the chain: the dump then holds every rule that was there before it, in
    their places, and perhaps some of ours after them)."""
    for attempt in range(_TRIES):
        if attempt and before_retry is not None:
            before_retry()
        dumped = dump_for_ports(family, chain, ports, table)
        if dumped is None:
            return None
        if dumped.started == dumped.ended:
            return dumped.kept
        ours = own_commit() if own_commit is not None else None
        if ours is not None and dumped.taken_at(ours[0], ours):
            return dumped.kept  # torn by our own commit alone
    return None


def dump_for_ports(
    family: int, chain: str, ports: Collection[int], table: str = "nat"
) -> Optional[Dumped]:
    """One dump for rules_for_ports, between two reads of the generation; None when the
    chain cannot be read this way."""
    wanted = frozenset(ports)
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, nl.NETLINK_NETFILTER)
    except OSError:
        return None
    try:
        sock.bind((0, 0))
        started = nfgen.ask(sock, 1)
        if not nfgen.settled_at(sock, started, 2):
            started = _UNSETTLED  # a commit was under way: the dump may predate it
        kept, doubled = _dump(sock, family, table, chain, wanted)
        ended = nfgen.ask(sock, 5)
        return Dumped(kept, started, _TORN if doubled else ended)
    except OSError:
        return None
    finally:
        sock.close()


def _dump(
    sock: socket.socket, family: int, table: str, chain: str, wanted: FrozenSet[int]
) -> Tuple[List[KeptRule], bool]:
    """One dump, and whether it showed a rule twice (by its handle). Whether a commit
    tore it the generations around it say; a rule shown twice says so too, whatever
    they say: tests/kernel/test_nfnl.py's churn met such dumps with equal generations
    (the kernel resumes a dump by position, so a shift between two parts repeats a
    rule), and a repeated rule is the one sign that needs no generation."""
    sock.sendto(nfmsg.dump_request(family, table, chain, 1), (0, 0))
    kept: List[KeptRule] = []
    index = 0
    handles: Set[bytes] = set()
    handle_at = 0
    doubled = False
    header = nl.HEADER.size
    # Where the multiport match sits in a rule: the same in every rule of one shape,
    # so it is looked for there first.
    guess = 0
    while True:
        buf = sock.recv(_RECV_SIZE)
        offset = 0
        size = len(buf)
        # One pass over the rules, the fewest calls per rule (10,000 at 5,000
        # containers): the rule's bytes are scanned once, by `count`.
        while offset + header <= size:
            length, kind = _HEAD.unpack_from(buf, offset)
            end = offset + length
            if kind != _RULE_MESSAGE:
                if length < header:
                    raise OSError(errno.EBADMSG, "a netlink message shorter than its header")
                if kind == nl.NLMSG_DONE:
                    return kept, doubled
                if kind == nl.NLMSG_ERROR:
                    (code,) = nl.ERRNO.unpack_from(buf, offset + header)
                    raise OSError(-code or errno.EIO, "netlink error")
            else:
                # (Where the handle sits is the same in every rule of one chain, but
                # for the padding that aligns it: looked for there first.)
                at = offset + handle_at
                if not buf.startswith(_HANDLE, at):
                    at = buf.find(_HANDLE, offset + header + nl.NFGENMSG.size, end)
                    if at < 0:
                        raise OSError(errno.EBADMSG, "a rule without its handle")
                    handle_at = at - offset
                handle = buf[at + 4 : at + 12]
                if handle in handles:
                    doubled = True
                handles.add(handle)
            at = offset + guess
            if not buf.startswith(_MULTIPORT_DPORTS, at):
                at = buf.find(_MULTIPORT_DPORTS, offset, end)
                guess = at - offset
            # Passed by: one multiport match, --dports, 1 to 15 single ports (no
            # ranges: pflags all zero), not negated, none of them wanted.
            if at < 0 or buf.count(_MULTIPORT, offset, end) != 1:
                kept.append(KeptRule(index, nfmsg.jump_target(buf, offset, end)))
            else:
                info = at + _COUNT_AT
                count = buf[info]
                if (
                    not 0 < count <= _MAX_PORTS
                    or not buf.startswith(_NO_RANGES, info + _PFLAGS_AT)
                    or not wanted.isdisjoint(_PORTS[count].unpack_from(buf, info + 1))
                ):
                    kept.append(KeptRule(index, nfmsg.jump_target(buf, offset, end)))
            index += 1
            offset = (end + 3) & ~3


Claims = Dict[int, Optional[List[KeptRule]]]
