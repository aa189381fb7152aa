"""The UDP conntrack entries gc's removal leaves pointing nowhere (the plugin's DEL
leaves them; their flows would keep a dead DNAT until idle): which host ports'
flows go, judged against what either plugin backend still maps, and their flush.
Apart from apply.py: it runs after the rules are gone, and fails only as a warning.
"""

from __future__ import annotations

from dataclasses import replace
from typing import (
    TYPE_CHECKING,
    Collection,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
)

from portmapctl.iptables.transaction import Transaction
from portmapctl.ops.gc.family import FamilyPlan
from portmapctl.ops.node import Node

if TYPE_CHECKING:
    from portmapctl.ops.flow_owners import Judging
    from portmapctl.ops.flush_udp import RoutedTarget
    from portmapctl.ops.gc.nft import NftPlan


def unread_nft_udp(node: Node, plans: Sequence[FamilyPlan]) -> Dict[int, Set[int]]:
    """The UDP host ports the plugin's nftables rules map where gc did not look at
    nftables (--backend iptables): read only when the removal touched a UDP port, so
    that a port freed in iptables but mapped by a live nftables container keeps that
    container's flows."""
    if not any(p.freed_udp_ports or p.remapped_udp_ports for p in plans):
        return {}
    from portmapctl.errors import PortmapctlError

    # Evidence only, read after the removal went in: an nft that cannot list (a kernel
    # without nf_tables, often why --backend iptables was given) or hangs ended gc with
    # exit 3 there, the removal unreported and its flows left to the dead container.
    # Without it the freed ports are judged as nftables mapped none: their flush takes
    # only the flows DNATed to a removed chain's address (flush_udp.plan_freed).
    try:
        live = node.read_nft_evidence(quick=True)
    except PortmapctlError as err:
        from portmapctl.ops.add_ahead import debug

        debug("reading nftables to judge the freed UDP ports failed: %s", err)
        return {}
    if not live.tables:
        return {}
    from portmapctl.ops.gc.nft import nft_udp_ports

    return nft_udp_ports(live, set())


def udp_work(
    plans: Sequence[FamilyPlan],
    nft_mapped: Mapping[int, Set[int]],
    nft_done: Optional[NftPlan],
) -> Tuple[List[FamilyPlan], Dict[int, Set[int]]]:
    """The UDP host ports the removal touched, split by how their flows are judged:
    the plans flush_udp_after takes (ports nothing maps any more in either backend:
    the removed rules' flows; ports only iptables chains still map: the misrouting ones, judged by
    the iptables mappings left), and per family the ports whose flows must be judged
    against both backends' mappings left (another backend still maps them, or, in
    nftables, another container's rule). A port freed in one backend but mapped in the
    other is no freed port: its live container's flows stay."""
    ipt_mapped = {p.family: p.mapped_udp_ports for p in plans}
    shared: Dict[int, Set[int]] = {}
    work: List[FamilyPlan] = []
    for p in plans:
        other = nft_mapped.get(p.family, set())
        crossing = {n for n in (*p.freed_udp_ports, *p.remapped_udp_ports) if n in other}
        if crossing:
            shared.setdefault(p.family, set()).update(crossing)
        freed = tuple(n for n in p.freed_udp_ports if n not in other)
        remapped = tuple(n for n in p.remapped_udp_ports if n not in other)
        if freed or remapped:
            work.append(replace(p, freed_udp_ports=freed, remapped_udp_ports=remapped))
    if nft_done is not None:
        families = sorted({*nft_done.freed, *nft_done.remapped})
        for family in families:
            gone = nft_done.freed.get(family, set()) | nft_done.remapped.get(family, set())
            mapped = nft_mapped.get(family, set()) | ipt_mapped.get(family, frozenset())
            if gone & mapped:
                shared.setdefault(family, set()).update(gone & mapped)
            freed = tuple(sorted(gone - mapped))
            if freed:
                # No rule of either backend maps them: the removed rules' flows go.
                ips = frozenset(nft_done.removed_ips.get(family, ()))
                txn = Transaction(family)
                work.append(FamilyPlan(family, (), (), 0, (), freed, {}, txn, removed_ips=ips))
    return work, shared


def flush_shared(
    node: Node, ports: Dict[int, Set[int]], removed_ips: Mapping[int, Set[str]]
) -> Tuple[int, Tuple[str, ...]]:
    """The misrouting flows (flush-udp --stale-only) of ports the removal left mapped
    by a container of either backend, judged by both backends' mappings as they are
    now (read again: a rare case, a port shared across backends or in nftables).
    A flow DNATed to none of the containers left or removed (`removed_ips`, per
    family) is another tool's: kept, as in flush_udp_after."""
    from portmapctl.ops import flow_owners
    from portmapctl.ops import flush_udp as flushing

    try:
        judging = flow_owners.node_judging(node, node.read(), None)
        mappings = judging.mappings
        ours = flushing.ours(
            [(m.family, m.container_ip) for m in flushing.udp_mappings(mappings)]
            + [(family, ip) for family, ips in removed_ips.items() for ip in ips]
        )
        deleted = sum(
            flushing.flush_ports(
                (family,), sorted(found), keep=mappings, ours=ours, judging=judging
            )
            for family, found in sorted(ports.items())
        )
    except Exception as err:  # noqa: BLE001 - reported, never fatal after the removal
        shown = ", ".join(f"{p}/v{f}" for f, found in sorted(ports.items()) for p in sorted(found))
        return 0, (f"could not flush the misrouting UDP conntrack entries of {shown}: {err}",)
    return deleted, ()


def flush_removed(
    node: Node, plans: Sequence[FamilyPlan], nft_done: Optional[NftPlan]
) -> Tuple[int, Tuple[str, ...]]:
    """The UDP flows of the ports these removals (gone in already) touched, flushed:
    (entries deleted, warnings)."""
    nft_mapped = nft_done.mapped if nft_done is not None else unread_nft_udp(node, plans)
    work, shared_ports = udp_work(plans, nft_mapped, nft_done)
    deleted, warnings = 0, ()
    if work:
        deleted, warnings = flush_udp_after(work, node)
    if shared_ports:
        removed_ips: Dict[int, Set[str]] = {}
        for p in plans:
            removed_ips.setdefault(p.family, set()).update(p.removed_ips)
        if nft_done is not None:
            for family, ips in nft_done.removed_ips.items():
                removed_ips.setdefault(family, set()).update(ips)
        more, more_warnings = flush_shared(node, shared_ports, removed_ips)
        deleted += more
        warnings += more_warnings
    if nft_done is not None and nft_done.routed:
        more, more_warnings = flush_routed_removed(nft_done.routed)
        deleted += more
        warnings += more_warnings
    return deleted, warnings


def flush_routed_removed(targets: Collection[RoutedTarget]) -> Tuple[int, Tuple[str, ...]]:
    """The flows the node routes to another host that the removed nftables rules had
    DNATed (flush_udp.routed_flows: v1.6/v1.7's entry has no `fib daddr type local`):
    their container is gone, and a stream that keeps sending would stay pinned to its
    address. The other flushes here look only at flows to the node's own addresses."""
    from portmapctl.ops.flush_udp import delete_routed

    try:
        return delete_routed(targets), ()
    except Exception as err:  # noqa: BLE001 - reported, never fatal after the removal
        ports = sorted({port for _family, port, _addr, _to in targets})
        listed = ", ".join(str(p) for p in ports[:10]) + ("..." if len(ports) > 10 else "")
        return 0, (f"could not flush the routed UDP conntrack entries of ports {listed}: {err}",)


def flush_udp_after(
    plans: Sequence[FamilyPlan], node: Optional[Node] = None
) -> Tuple[int, Tuple[str, ...]]:
    """Delete the UDP conntrack entries the removal left pointing nowhere, per family:
    the removed chains' flows of a host port no chain maps any more (flush_udp
    plan_freed: not another tool's there, nor the host's own), and the misrouting ones (as
    `flush-udp --stale-only`) of a removed chain's port that another chain still maps
    (the removed chain, entered first, had taken the flow to its dead container).
    Only flows to the node's own addresses: a forwarded flow met no mapping.

    The chains are gone by now, so a failure here is a warning (as in the plugin's
    ADD), not a failed gc: the entries expire when their flows go idle. `node`: where
    the rules of the other iptables flavour and of other nftables tables' nat hooks
    are asked which destinations they take first (flow_owners.Judging.taken).
    """
    from portmapctl.host import conntrack  # imported only when there is work
    from portmapctl.host.addresses import local_addresses
    from portmapctl.ops import flow_owners
    from portmapctl.ops import flush_udp as flushing

    deleted = 0
    warnings = []
    for plan in sorted(plans, key=lambda p: p.family):
        family = plan.family
        family_ports = sorted({*plan.freed_udp_ports, *plan.remapped_udp_ports})
        try:
            local = local_addresses((family,))
            entries = conntrack.list_udp((family,), family_ports)
            freed = {(family, port) for port in plan.freed_udp_ports}
            remapped = {(family, port) for port in plan.remapped_udp_ports}
            removed = flushing.ours((family, ip) for ip in plan.removed_ips)
            doomed = flushing.plan_freed(entries, freed, removed, local=local)
            # A flow DNATed to no container of these chains, left or removed, on an
            # address the port is no longer mapped on: another tool's (kept).
            ours = flushing.ours([(m.family, m.container_ip) for m in plan.remaining_udp])
            ours |= removed
            # Another tool's rule ahead of the plugin's entry takes some destinations
            # first (or after it, what a mapping with conditions leaves): their flows
            # are its own, whatever the mappings left.
            taken = flow_owners.Taken()
            if remapped and entries:
                if plan.foreign_rules is not None:
                    taken = flow_owners.chain_taken(
                        {family: plan.foreign_rules}, plan.remaining_udp, entries, local
                    )
                # (The other tables are read only for a flow the judgement is about.)
                asked = [
                    e
                    for e in entries
                    if (e.family, e.dport) in remapped and (family, e.dst) in local
                ]
                if node is not None and asked:
                    taken.merge(elsewhere(node, plan).taken(asked, local))
            doomed += flushing.plan(
                entries,
                remapped,
                plan.remaining_udp,
                stale_only=True,
                local=local,
                ours=ours,
                taken=taken,
            )
            deleted += conntrack.delete([d.entry for d in doomed])
        except Exception as err:  # noqa: BLE001 - reported, never fatal after the removal
            shown = ",".join(str(p) for p in family_ports[:10])
            more = "..." if len(family_ports) > 10 else ""
            warnings.append(
                f"could not flush IPv{family} UDP conntrack entries for ports {shown}{more}: {err}"
            )
    return deleted, tuple(warnings)


def elsewhere(node: Node, plan: FamilyPlan) -> Judging:
    """A Judging of the rules outside the plugin's iptables flavour that may take the
    destination of a flow on one of the plan's remapped ports first: the other
    flavour's nat table, and other nftables tables' nat hooks where they take or may
    take some packets of a mapping left (gc's own flavour is judged by
    FamilyPlan.foreign_rules)."""
    from portmapctl.nftables.foreign import node_hooked
    from portmapctl.ops.flavour_guard import other_flavour_readers
    from portmapctl.ops.flow_owners import Judging
    from portmapctl.ops.owners import Owners

    other = other_flavour_readers(node.backend, (plan.family,))
    hooked = node_hooked(node, plan.remaining_udp, None)
    ports = Owners(hooked=hooked.taken, unsure=hooked.unsure, unread=hooked.unread).hook_ports()
    readers = other[1] if other is not None else {}
    return Judging(list(plan.remaining_udp), {}, readers, node, ports)
