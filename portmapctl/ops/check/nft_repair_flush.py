"""The UDP conntrack flush after an `nft -f` that rewrote prerouting's entry or deleted
rules (flush_routed_after, flush_routed): the routed flows the old entry (v1.6/v1.7's)
DNATed to a container, and those DNATed to where no rule left sends their port, are let
go, as the plugin's ADD lets go of the flows a missing mapping pinned. It runs after
both nftables repairs (nft_repair.py, nft_repair_one.py) and after add's nftables write
(ops/add_nft.py), on the way out of a SIGTERM too. A module of its own: add_nft imports
it, when it has written, without either repair's code."""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Sequence, Set, Tuple

from portmapctl.ops.node import Node

if TYPE_CHECKING:
    from portmapctl.nftables.ruleset import RuleBody
    from portmapctl.nftables.transaction import Transaction as NftTransaction


def entry_families(txn: NftTransaction) -> List[int]:
    """The families whose prerouting entry `txn` (re)writes."""
    from portmapctl.nftables.ruleset import PREROUTING
    from portmapctl.nftables.transaction import OpKind

    return sorted(
        {
            op.family
            for op in txn.ops
            if op.kind is OpKind.ADD_RULE
            and op.chain == PREROUTING
            and (op.family, PREROUTING) not in txn.as_read
        }
    )


def flush_routed_after(node: Node, txn: NftTransaction) -> List[str]:
    """flush_routed in the families whose prerouting entry `txn` (re)wrote: an entry
    made local again lets go of the routed flows the old one DNATed; and of the rules
    `txn` deleted (their bodies known: a repair's, an add's superseded ones), the
    routed flows DNATed to where no rule left sends their port (an old address of a
    moved container). Also on the way out of a SIGTERM or Ctrl-C once `txn` went in (or
    was under way): the next check finds the entry healthy and would leave those flows
    pinned to the container."""
    from portmapctl.nftables.transaction import OpKind
    from portmapctl.ops.flush_udp import dnat_targets

    # Only where the table as read took routed flows (v1.6/v1.7's entry): under v1.9's
    # a routed flow DNATed to a container's address and port is another tool's
    # (kube-proxy's to a pod), never the plugin's, and stays.
    routed = [f for f in entry_families(txn) if f in txn.took_routed]
    # (Only a deleted rule that DNATs a UDP port has flows to let go: the usual repair
    # reads nothing more.)
    deleted = [
        (op.family, op.body)
        for op in txn.ops
        if op.kind is OpKind.DELETE_RULE
        and op.family in txn.took_routed
        and op.body is not None
        and dnat_targets(op.family, (op.body,))
    ]
    return flush_routed(node, routed, deleted) if routed or deleted else []


def flush_routed(
    node: Node, families: Sequence[int], deleted: Sequence[Tuple[int, RuleBody]] = ()
) -> List[str]:
    """After prerouting's entry was written again in `families`: delete the UDP
    conntrack entries of flows the node routes to another host (not to one of its own
    addresses) that were DNATed to a container address and port the plugin's rules map
    that host port to. Only an entry without `fib daddr type local` (v1.6/v1.7's,
    `downgraded`) sent such a flow there; left alone, a stream that keeps sending stays
    pinned to the container after the repair. Also those DNATed to where one of the
    `deleted` rule bodies (family, body) sent its port and no rule left does: that
    destination is no mapping's any more. Failures are warnings, as after_setup's."""
    from portmapctl.nftables.ruleset import HOSTIP_HOSTPORTS, HOSTPORTS
    from portmapctl.ops.flush_udp import RoutedTarget, delete_routed, dnat_targets

    live = node.read_nft()
    targets: Set[RoutedTarget] = set()
    left: Set[RoutedTarget] = set()
    for family, table in live.tables.items():
        rules = (*table.rules_of(HOSTPORTS), *table.rules_of(HOSTIP_HOSTPORTS))
        found = dnat_targets(family, (rule.body for rule in rules))
        left |= found
        if family in families:
            targets |= found
    for family, body in deleted:
        targets |= dnat_targets(family, (body,)) - left
    if not targets:
        return []
    from portmapctl.ops.side_effects import no_conntrack_entries, not_flushed

    keys = {(family, port) for family, port, _addr, _to in targets}
    if no_conntrack_entries():
        return []
    try:
        delete_routed(targets)
    except Exception as err:  # noqa: BLE001 - as after_setup's flush
        return [not_flushed(keys, err)]
    return []
