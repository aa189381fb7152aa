"""gc's deletions from the plugin's nftables tables as one nf_tables batch, which the
kernel applies only at the ruleset generation the tables were read at.

`nft -f` of `delete rule ... handle N` names a rule by its handle, and a handle names
that rule only within one making of the table: a firewall reload (list the ruleset,
`nft flush ruleset`, `nft -f` it back) makes the tables again and hands out handles
anew, so handle N may then be a live container's rule. gc checks its plan against its
last read just before writing (Transaction.holds_in), but nft -f cannot say "only if
nothing committed since", and a reload in the milliseconds between deleted the live
rule. This batch carries the generation the last read was settled at
(NFNL_BATCH_GENID, as gc's removal on iptables-nft does: iptables/access/nfnl_batch.py):
the kernel refuses it whole (ERESTART) when anything committed since, and the caller
reads again and plans again, as after a refused `nft -f`. Never forced: nothing here
retries a refused batch some other way.

Only DELETE_RULE transactions (gc's): one NFT_MSG_DELRULE per rule, both families in
the one batch. Anything this module cannot vouch for (no netlink, a kernel that does
not check the generation, any refusal but ERESTART) is UNAVAILABLE, nothing changed:
the caller writes `nft -f` as before.

The kernel ABI: linux/netfilter/nfnetlink.h, nf_tables.h.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import List

from portmapctl.host import netlink as nl
from portmapctl.iptables.access import nfgen, nfmsg
from portmapctl.iptables.access.nfmsg import NFPROTO, Outcome
from portmapctl.nftables.ruleset import TABLE
from portmapctl.nftables.transaction import OpKind, Transaction

_BEGIN_SEQ = 9


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    why: str = ""  # why not, when not APPLIED


def deletes_only(txn: Transaction) -> bool:
    """Whether every op of `txn` deletes one rule by handle (what gc plans)."""
    return bool(txn.ops) and all(
        op.kind is OpKind.DELETE_RULE and op.handle is not None and op.chain for op in txn.ops
    )


def delete_rules(txn: Transaction, read_at: int) -> Result:
    """Delete the rules `txn` deletes (deletes_only), in one batch the kernel applies
    only if the ruleset is still at generation `read_at`."""
    try:
        with nfgen.open_socket() as sock:
            messages: List[bytes] = []
            seq = _BEGIN_SEQ + 1
            for op in txn.ops:
                assert op.chain is not None and op.handle is not None
                attributes = nfmsg.where(TABLE, op.chain) + nl.nla(
                    nfmsg.RULE_HANDLE, op.handle.to_bytes(8, "big")
                )
                messages.append(
                    nfgen.message(
                        nfgen.nftables(nfmsg.DELRULE),
                        nl.NLM_F_REQUEST,
                        NFPROTO[op.family],
                        seq,
                        attributes,
                    )
                )
                seq += 1
            sent = nfmsg.sent_at(
                sock, nfgen.batch(messages, read_at, _BEGIN_SEQ, seq), read_at, seq + 1
            )
    except OSError as err:
        return Result(Outcome.UNAVAILABLE, f"nf_tables netlink: {err.strerror or err}")
    if sent.outcome is not Outcome.REFUSED:
        return Result(sent.outcome, sent.why)
    errors = sent.errors
    if any(s == _BEGIN_SEQ and code == -errno.ERESTART for s, code in errors):
        return Result(Outcome.CHANGED, "the ruleset changed since it was read")
    if any(code == -errno.ENOBUFS for _s, code in errors):
        # Its errors were dropped, a refusal for the generation perhaps among them:
        # read again, never the `nft -f` that could meet a reload's handles.
        return Result(Outcome.CHANGED, "nf_tables refused the batch (its answers were lost)")
    number, code = errors[0]
    return Result(
        Outcome.UNAVAILABLE,
        f"nf_tables refused the batch (message {number - _BEGIN_SEQ}): {nfmsg.strerror(-code)}",
    )
