"""gc's teardown of an iptables-nft table as one nf_tables transaction, which the kernel
refuses whole when the ruleset changed after the table was read.

Why not iptables-restore here (the one place portmapctl departs from the letter of
SPEC §5; its guarantees hold, see docs/architecture.md):

- nf_tables finds a rule to delete by walking its chain from the start, so deleting S
  entry rules spread through `CNI-HOSTPORT-DNAT` costs the kernel about S x chain-length
  steps: 2.7 s for 5,000 in a chain of 10,000, whether iptables-restore or this module
  sends the deletes. Rebuilding the chain (flush it, append the rules kept) is linear:
  0.2 s for the same change (docs/performance.md, gc).
- iptables-restore cannot rebuild safely: a plugin ADD that appends its entry rule
  after our read would be flushed with the rest, and iptables-nft-restore does not fail
  when the ruleset moved under it, it replays its commands on the new ruleset.
- This batch carries the generation the table was read at (NFNL_BATCH_GENID, the
  attribute iptables-nft-restore itself sends): the kernel refuses the whole batch with
  ERESTART when anything committed since (checked first with an empty batch at a wrong
  generation: a kernel that ignored the attribute gets the restore text instead). So a
  rebuild is safe, and a delete by handle exactly as safe as one by text. Refused, the
  caller applies the restore text planned from the same read, whose own checks refuse
  it when our chains moved (then gc reads again and re-plans, as SPEC §5 asks): a node
  where other tables commit all the time still converges.
- The rules appended again are the kernel's own bytes from a dump taken at that
  generation (their expressions and comment; the protocol the xt matches are checked
  against comes from the rule as read): `iptables-save` prints the same text in the
  same order afterwards (tests/kernel/test_nfnl_batch.py holds it to iptables-restore).

A chain losing few rules loses them by handle (the smallest change); one losing many,
whose kept rules are all of shapes known to re-add cleanly, is rebuilt. Anything this
module cannot vouch for -- no netlink, a generation that could not be read, a dump that
disagrees with the table read -- is UNAVAILABLE, and the caller applies the restore
text as before.

The kernel ABI: linux/netfilter/nfnetlink.h, nf_tables.h.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass
from enum import Enum
from typing import Dict, FrozenSet, List, NamedTuple, Optional, Sequence, Tuple

from portmapctl.host import netlink as nl
from portmapctl.iptables.access import nfgen
from portmapctl.iptables.access.nfnl import _target
from portmapctl.iptables.ruleset import Args, rule_target
from portmapctl.iptables.transaction import Removal

_SUBSYS = nfgen.SUBSYS_NFTABLES
_BATCH_BEGIN, _BATCH_END = 0x10, 0x11  # NFNL_MSG_BATCH_BEGIN / _END
_BATCH_GENID = 1  # NFNL_BATCH_GENID
_DELCHAIN, _NEWRULE, _GETRULE, _DELRULE = 5, 6, 7, 8
_NLM_F_CREATE, _NLM_F_APPEND = 0x400, 0x800
_NLM_F_DUMP_INTR = 0x10
_NFPROTO = {4: 2, 6: 10}  # NFPROTO_IPV4, NFPROTO_IPV6
_RULE_TABLE, _RULE_CHAIN, _RULE_HANDLE, _RULE_EXPRESSIONS = 1, 2, 3, 4
_RULE_COMPAT, _RULE_USERDATA = 5, 7
_COMPAT_PROTO, _COMPAT_FLAGS = 1, 2
_COMPAT_INVERT = 1 << 1  # NFT_RULE_COMPAT_F_INV (bit 0 is F_UNUSED, refused)
_CHAIN_NAME = 3  # (NFTA_CHAIN_TABLE is 1, as NFTA_RULE_TABLE)
_EXPR_NAME, _EXPR_DATA, _MATCH_NAME = 1, 2, 1
_SO_SNDBUFFORCE, _SO_RCVBUFFORCE = 32, 33
_BE32, _BE64 = struct.Struct("!I"), struct.Struct("!Q")

# A chain is rebuilt when deleting by handle would walk more rule steps than this many
# per rule appended again (measured: one re-append costs the kernel about as much as a
# thousand steps of its walk over a cold chain; docs/performance.md, gc).
REBUILD_STEPS_PER_RULE = 1000
# Only the shared CNI chains are ever rebuilt: every rule in them is the plugin's or
# sits among the plugin's, and nothing outside refers to their handles.
_REBUILT_PREFIX = "CNI-HOSTPORT-"
# Expressions whose rules are appended again as they were dumped: stateless, and what
# iptables-nft 1.8 writes for the plugin's entry rules (-p, comment, multiport, -j).
_PLAIN_EXPRESSIONS = frozenset(
    {b"meta", b"cmp", b"payload", b"bitwise", b"counter", b"immediate", b"match"}
)
_PLAIN_MATCHES = frozenset({b"comment", b"multiport", b"tcp", b"udp"})
_PROTOCOLS = {"all": 0, "icmp": 1, "tcp": 6, "udp": 17, "dccp": 33, "sctp": 132}
_PROTOCOLS.update({"icmpv6": 58, "ipv6-icmp": 58})


class Outcome(str, Enum):
    APPLIED = "applied"
    CHANGED = "changed"  # the ruleset moved since the read: nothing changed
    UNAVAILABLE = "unavailable"  # not this way, nothing changed: the restore text can
    UNKNOWN = "unknown"  # sent, but no answer could be read: it may have gone in, whole


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    why: str = ""  # what was done (APPLIED), or why not
    # After APPLIED: the generation the kernel reported right after our commit.
    generation: Optional[int] = None


class _Rule(NamedTuple):
    """One rule of a dump, where its message sits: parsed only as far as it is used
    (10,000 rules at 5,000 containers)."""

    buf: bytes
    start: int
    end: int

    def attributes(self) -> Dict[int, Tuple[int, int]]:
        return nl.attrs(self.buf, self.start + nl.HEADER.size + nl.NFGENMSG.size, self.end)

    def handle(self) -> int:
        span = self.attributes().get(_RULE_HANDLE)
        if span is None:
            raise OSError(errno.EBADMSG, "a rule without its handle")
        return _BE64.unpack_from(self.buf, span[0])[0]

    def target(self) -> Optional[str]:
        """The chain it jumps or goes to, when it does."""
        return _target(self.buf, self.start, self.end)

    def body(self) -> bytes:
        """Its expressions and userdata attributes, as dumped."""
        found = self.attributes()
        expressions = found.get(_RULE_EXPRESSIONS)
        if expressions is None:
            raise OSError(errno.EBADMSG, "a rule without expressions")
        body = _whole(self.buf, expressions)
        userdata = found.get(_RULE_USERDATA)
        return body + _whole(self.buf, userdata) if userdata is not None else body

    def plain(self) -> bool:
        """Only _PLAIN_EXPRESSIONS: it can be appended again as it is."""
        expressions = self.attributes().get(_RULE_EXPRESSIONS)
        return expressions is not None and _plain(self.buf, expressions)


class _Changed(Exception):
    """The ruleset moved while we dumped it."""


def apply_removal(family: int, removal: Removal, read_at: int, table: str = "nat") -> Result:
    """Remove what `removal` says from the iptables-nft `table` of `family`, in one
    batch the kernel applies only if the ruleset is still at generation `read_at`."""
    try:
        with nfgen.open_socket() as sock:
            return _apply(sock, family, removal, read_at, table)
    except _Changed:
        return Result(Outcome.CHANGED, "the ruleset changed while it was read")
    except OSError as err:
        return Result(Outcome.UNAVAILABLE, f"nf_tables netlink: {err.strerror or err}")


def _where(table: str, chain: str, chain_attribute: int = _RULE_CHAIN) -> bytes:
    """The table and chain attributes a rule message (or, with NFTA_CHAIN_NAME, a chain
    message: the table attribute is 1 in both) names its place with."""
    return nl.nla(_RULE_TABLE, table.encode() + b"\0") + nl.nla(
        chain_attribute, chain.encode() + b"\0"
    )


def _batch(messages: Sequence[bytes], generation: int, begin_seq: int, end_seq: int) -> bytes:
    """`messages` between NFNL_MSG_BATCH_BEGIN (carrying `generation`: the kernel
    refuses the batch unless the ruleset is at it) and NFNL_MSG_BATCH_END."""
    res_id = socket.htons(_SUBSYS)
    genid = nl.nla(_BATCH_GENID, _BE32.pack(generation))
    return b"".join(
        [
            nfgen.message(_BATCH_BEGIN, nl.NLM_F_REQUEST, socket.AF_UNSPEC, begin_seq, genid, res_id),
            *messages,
            nfgen.message(_BATCH_END, nl.NLM_F_REQUEST, socket.AF_UNSPEC, end_seq, b"", res_id),
        ]
    )


def _dump_chain(sock: socket.socket, family: int, table: str, chain: str) -> List[_Rule]:
    sock.send(
        nfgen.message(
            nfgen.nftables(_GETRULE),
            nl.NLM_F_REQUEST | nl.NLM_F_DUMP,
            _NFPROTO[family],
            2,
            _where(table, chain),
        )
    )
    rules: List[_Rule] = []
    torn = False
    header = nl.HEADER.size
    while True:
        buf = sock.recv(1 << 16)
        offset = 0
        while offset + header <= len(buf):
            length, kind, flags, _seq, _port = nl.HEADER.unpack_from(buf, offset)
            if length < header:
                raise OSError(errno.EBADMSG, "a netlink message shorter than its header")
            end = offset + length
            torn = torn or bool(flags & _NLM_F_DUMP_INTR)
            if kind == nl.NLMSG_DONE:
                if torn:
                    raise _Changed()
                return rules
            if kind == nl.NLMSG_ERROR:
                (code,) = nl.ERRNO.unpack_from(buf, offset + header)
                raise OSError(-code or errno.EIO, f"cannot list chain {chain}")
            if kind == nfgen.nftables(_NEWRULE):
                rules.append(_Rule(buf, offset, end))
            offset = (end + 3) & ~3


def _whole(buf: bytes, span: Tuple[int, int]) -> bytes:
    """An attribute with its header, padded, from the span of its payload."""
    attribute = buf[span[0] - nl.ATTR.size : span[1]]
    return attribute + bytes(-len(attribute) % 4)


def _plain(buf: bytes, span: Tuple[int, int]) -> bool:
    """Whether every expression in this NFTA_RULE_EXPRESSIONS payload is one of
    _PLAIN_EXPRESSIONS (a match: one of _PLAIN_MATCHES). The kernel puts an
    expression's name first, and a match's name first in its data
    (nf_tables_fill_expr_info, nft_match_dump); anything else is not plain."""
    at, stop = span
    head = nl.ATTR.size
    while at + head <= stop:
        size, _kind = nl.ATTR.unpack_from(buf, at)
        if size < 2 * head or at + size > stop:
            return False
        name_size, name_kind = nl.ATTR.unpack_from(buf, at + head)
        if name_kind & nl.NLA_TYPE_MASK != _EXPR_NAME or name_size < head:
            return False
        name_end = at + head + name_size
        if name_end > at + size:
            return False
        word = buf[at + 2 * head : name_end].rstrip(b"\0")
        if word not in _PLAIN_EXPRESSIONS:
            return False
        if word == b"match":
            data = (name_end + 3) & ~3  # NFTA_EXPR_DATA, then NFTA_MATCH_NAME in it
            if data + 2 * head > at + size:
                return False
            match_size, match_kind = nl.ATTR.unpack_from(buf, data + head)
            if match_kind & nl.NLA_TYPE_MASK != _MATCH_NAME or match_size < head:
                return False
            if data + head + match_size > at + size:
                return False
            if buf[data + 2 * head : data + head + match_size].rstrip(b"\0") not in _PLAIN_MATCHES:
                return False
        at += (size + 3) & ~3
    return True


def _compat(args: Args) -> Optional[bytes]:
    """NFTA_RULE_COMPAT for a rule appended again: the protocol its xt matches are
    checked against, from `-p` as read (None: one this module does not know)."""
    proto, invert = 0, False
    for i, word in enumerate(args):
        if i > 0 and args[i - 1] == "--comment":
            continue  # a comment's text, whatever it says
        if word in ("-p", "--protocol") and i + 1 < len(args):
            name = args[i + 1].lower()
            number = int(name) if name.isdigit() else _PROTOCOLS.get(name)
            if number is None or number > 255:
                return None
            proto, invert = number, i > 0 and args[i - 1] == "!"
    flags = _COMPAT_INVERT if invert else 0
    return nl.nla(
        _RULE_COMPAT | nl.NLA_F_NESTED,
        nl.nla(_COMPAT_PROTO, _BE32.pack(proto)) + nl.nla(_COMPAT_FLAGS, _BE32.pack(flags)),
    )


def worth_rebuilding(chain: str, positions: Sequence[int], kept: int) -> bool:
    """Whether flushing `chain` and appending its `kept` rules again costs the kernel
    less than deleting the rules at `positions` (0-based) by handle: each lookup by
    handle walks from the top of the chain to the rule (those deleted earlier in the
    batch are still there until the commit). Only the shared CNI-HOSTPORT- chains."""
    steps = sum(p + 1 for p in positions)
    return chain.startswith(_REBUILT_PREFIX) and steps > REBUILD_STEPS_PER_RULE * kept


def _apply(sock: socket.socket, family: int, removal: Removal, read_at: int, table: str) -> Result:
    gone = frozenset(removal.chains)
    chain_ops: List[bytes] = []
    how: List[str] = []  # what was done to each chain that stays, for -v
    seq = 10
    # Every chain that loses rules, dumped at the generation the table was read at:
    # position i of the dump is then rule i as read (the kernel keeps their order).
    dumps = {chain: _dump_chain(sock, family, table, chain) for chain in removal.rules}
    if dumps and nfgen.ask(sock, 3) != read_at:
        raise _Changed()
    for chain, positions in removal.rules.items():
        read = removal.read.get(chain, ())
        dumped = dumps[chain]
        mismatch = _disagreement(read, dumped, positions, gone)
        if mismatch:
            return Result(Outcome.UNAVAILABLE, f"{chain}: {mismatch}")
        going = frozenset(positions)
        kept = [i for i in range(len(read)) if i not in going]
        compats = [_compat(read[i]) for i in kept]
        rebuild = (
            worth_rebuilding(chain, positions, len(kept))
            and all(c is not None for c in compats)
            and all(dumped[i].plain() for i in kept)
        )
        where = _where(table, chain)
        how.append(
            f"{chain}: {'rebuilt' if rebuild else 'by handle'}, {len(positions)} rules out,"
            f" {len(kept)} kept"
        )
        if rebuild:
            chain_ops.append(
                nfgen.message(
                    nfgen.nftables(_DELRULE), nl.NLM_F_REQUEST, _NFPROTO[family], seq, where
                )
            )
            seq += 1
            for i, compat in zip(kept, compats):
                chain_ops.append(
                    nfgen.message(
                        nfgen.nftables(_NEWRULE),
                        nl.NLM_F_REQUEST | _NLM_F_CREATE | _NLM_F_APPEND,
                        _NFPROTO[family],
                        seq,
                        where + dumped[i].body() + (compat or b""),
                    )
                )
                seq += 1
        else:
            for i in positions:
                chain_ops.append(
                    nfgen.message(
                        nfgen.nftables(_DELRULE),
                        nl.NLM_F_REQUEST,
                        _NFPROTO[family],
                        seq,
                        where + nl.nla(_RULE_HANDLE, _BE64.pack(dumped[i].handle())),
                    )
                )
                seq += 1
    # The chains that go: all flushed first (CNI-HOSTPORT-SNAT's jumps into CNI-SN-
    # chains go with it), then deleted, when nothing enters them any more.
    for kind, attribute in ((_DELRULE, _RULE_CHAIN), (_DELCHAIN, _CHAIN_NAME)):
        for chain in removal.chains:
            where = _where(table, chain, attribute)
            chain_ops.append(
                nfgen.message(nfgen.nftables(kind), nl.NLM_F_REQUEST, _NFPROTO[family], seq, where)
            )
            seq += 1
    if not chain_ops:
        return Result(Outcome.APPLIED, "nothing to remove", read_at)
    begin_seq = 9
    batch = _batch(chain_ops, read_at, begin_seq, seq)
    if not _kernel_checks_generation(sock, read_at):
        return Result(Outcome.UNAVAILABLE, "this kernel does not check a batch's generation")
    _room_for(sock, len(batch))
    sock.send(batch)
    try:
        after, errors = nfgen.replies_until(sock, seq + 1)
    except OSError as err:
        return Result(Outcome.UNKNOWN, f"no answer from nf_tables: {err.strerror or err}")
    if not errors:
        how.append(f"{len(removal.chains)} chains deleted")
        return Result(Outcome.APPLIED, "; ".join(how), after)
    if any(s == begin_seq and code == -errno.ERESTART for s, code in errors):
        return Result(Outcome.CHANGED, "the ruleset changed since it was read")
    seq_, code = errors[0]
    return Result(
        Outcome.UNAVAILABLE,
        f"nf_tables refused the batch (message {seq_ - begin_seq}): {_strerror(-code)}",
    )


def _kernel_checks_generation(sock: socket.socket, read_at: int) -> bool:
    """Whether the kernel refuses a batch for a generation that is not the current one
    (NFNL_BATCH_GENID; a kernel that ignored it would apply a stale rebuild). Asked
    with an empty batch, which changes nothing either way."""
    wrong = (read_at + 0x7FFFFFFF) & 0xFFFFFFFF or 1
    sock.send(_batch([], wrong, 4, 5))
    _now, errors = nfgen.replies_until(sock, 6)
    return any(seq == 4 and code == -errno.ERESTART for seq, code in errors)


def _room_for(sock: socket.socket, size: int) -> None:
    """A send buffer the whole batch fits in: the kernel takes a batch in one message."""
    wanted = size + (1 << 16)
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_SNDBUFFORCE, wanted)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, wanted)
    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) < wanted:
        raise OSError(errno.EMSGSIZE, f"a batch of {size} bytes does not fit the send buffer")
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, 1 << 22)
    except OSError:
        pass  # errors only come back on failure; ENOBUFS then still says "failed"


def _disagreement(
    read: Sequence[Args], dumped: Sequence[_Rule], deleted: Sequence[int], gone: FrozenSet[str]
) -> str:
    """Why the dump cannot be the chain as read ("" when it can): the same number of
    rules, every rule deleted jumping to a chain that goes, as read, and every rule read
    as entering one of them deleted. (A check on this module's reading of the kernel's
    bytes: at the same generation the dump is the chain as read.)"""
    if len(read) != len(dumped):
        return f"{len(dumped)} rules listed, {len(read)} read"
    for i in deleted:
        expected = rule_target(read[i])
        rule = dumped[i]
        # Its verdict names the chain (NFTA_VERDICT_CHAIN: type 2, the name, a NUL);
        # the whole of _target's parse, 5,000 times, costs 0.15 s.
        if (
            expected not in gone
            or rule.buf.find(b"\x02\x00" + expected.encode() + b"\x00", rule.start, rule.end) < 0
        ):
            return f"rule {i + 1} does not jump to {expected}, as it was read to"
    entering = sum(1 for args in read if rule_target(args) in gone)
    if entering != len(deleted):
        return f"{entering} rules enter the chains removed, {len(deleted)} planned to go"
    return ""


def _strerror(code: int) -> str:
    return os.strerror(code) if code > 0 else f"error {code}"
