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
import socket
from dataclasses import dataclass
from typing import FrozenSet, List, Optional, Sequence

from portmapctl.host import netlink as nl
from portmapctl.iptables.access import nfgen, nfmsg, nfnl_rules
from portmapctl.iptables.access.nfmsg import NFPROTO, Changed, DumpedRule, Outcome
from portmapctl.iptables.ruleset import Args, rule_target
from portmapctl.iptables.transaction import Removal

_EXPR_NAME, _MATCH_NAME = 1, 1

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


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    why: str = ""  # what was done (APPLIED), or why not
    # After APPLIED: the generation the kernel reported right after our commit.
    generation: Optional[int] = None


def apply_removal(family: int, removal: Removal, read_at: int, table: str = "nat") -> Result:
    """Remove what `removal` says from the iptables-nft `table` of `family`, in one
    batch the kernel applies only if the ruleset is still at generation `read_at`."""
    try:
        with nfgen.open_socket() as sock:
            return _apply(sock, family, removal, read_at, table)
    except Changed:
        return Result(Outcome.CHANGED, "the ruleset changed while it was read")
    except OSError as err:
        return Result(Outcome.UNAVAILABLE, f"nf_tables netlink: {err.strerror or err}")


def _plain(rule: DumpedRule) -> bool:
    """Whether every expression of the rule is one of _PLAIN_EXPRESSIONS (a match: one
    of _PLAIN_MATCHES): it can be appended again as it is. The kernel puts an
    expression's name first, and a match's name first in its data
    (nf_tables_fill_expr_info, nft_match_dump); anything else is not plain."""
    span = rule.expressions()
    if span is None:
        return False
    buf = rule.buf
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
    dumps = {chain: nfmsg.dump_chain(sock, family, table, chain) for chain in removal.rules}
    if dumps and nfgen.ask(sock, 3) != read_at:
        raise Changed()
    for chain, positions in removal.rules.items():
        read = removal.read.get(chain, ())
        dumped = dumps[chain]
        mismatch = _disagreement(read, dumped, positions, gone)
        if mismatch:
            return Result(Outcome.UNAVAILABLE, f"{chain}: {mismatch}")
        going = frozenset(positions)
        kept = [i for i in range(len(read)) if i not in going]
        compats = [nfnl_rules.compat(read[i]) for i in kept]
        rebuild = (
            worth_rebuilding(chain, positions, len(kept))
            and all(c is not None for c in compats)
            and all(_plain(dumped[i]) for i in kept)
        )
        where = nfmsg.where(table, chain)
        how.append(
            f"{chain}: {'rebuilt' if rebuild else 'by handle'}, {len(positions)} rules out,"
            f" {len(kept)} kept"
        )
        if rebuild:
            chain_ops.append(
                nfgen.message(
                    nfgen.nftables(nfmsg.DELRULE), nl.NLM_F_REQUEST, NFPROTO[family], seq, where
                )
            )
            seq += 1
            for i, compat in zip(kept, compats):
                chain_ops.append(
                    nfgen.message(
                        nfgen.nftables(nfmsg.NEWRULE),
                        nl.NLM_F_REQUEST | nfmsg.NLM_F_CREATE | nfmsg.NLM_F_APPEND,
                        NFPROTO[family],
                        seq,
                        where + dumped[i].body() + (compat or b""),
                    )
                )
                seq += 1
        else:
            for i in positions:
                chain_ops.append(
                    nfgen.message(
                        nfgen.nftables(nfmsg.DELRULE),
                        nl.NLM_F_REQUEST,
                        NFPROTO[family],
                        seq,
                        where + nl.nla(nfmsg.RULE_HANDLE, dumped[i].handle().to_bytes(8, "big")),
                    )
                )
                seq += 1
    # The chains that go: all flushed first (CNI-HOSTPORT-SNAT's jumps into CNI-SN-
    # chains go with it), then deleted, when nothing enters them any more.
    for kind, attribute in ((nfmsg.DELRULE, nfmsg.RULE_CHAIN), (nfmsg.DELCHAIN, nfmsg.CHAIN_NAME)):
        for chain in removal.chains:
            where = nfmsg.where(table, chain, attribute)
            chain_ops.append(
                nfgen.message(nfgen.nftables(kind), nl.NLM_F_REQUEST, NFPROTO[family], seq, where)
            )
            seq += 1
    if not chain_ops:
        return Result(Outcome.APPLIED, "nothing to remove", read_at)
    begin_seq = 9
    batch = nfgen.batch(chain_ops, read_at, begin_seq, seq)
    sent = nfmsg.sent_at(sock, batch, read_at, seq + 1)
    errors = sent.errors
    if sent.outcome is Outcome.APPLIED:
        how.append(f"{len(removal.chains)} chains deleted")
        return Result(Outcome.APPLIED, "; ".join(how), sent.generation)
    if sent.outcome is not Outcome.REFUSED:
        return Result(sent.outcome, sent.why)
    if any(s == begin_seq and code == -errno.ERESTART for s, code in errors):
        return Result(Outcome.CHANGED, "the ruleset changed since it was read")
    seq_, code = errors[0]
    return Result(
        Outcome.UNAVAILABLE,
        f"nf_tables refused the batch (message {seq_ - begin_seq}): {nfmsg.strerror(-code)}",
    )


def _disagreement(
    read: Sequence[Args], dumped: Sequence[DumpedRule], deleted: Sequence[int], gone: FrozenSet[str]
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
