"""`check --repair` of one mapping given on the command line (with its mapping
options): its chain and entry rules made where missing, family by family, and nothing
else of the node touched (not the node's duplicated entry rules, not another
container's chain). It decides for this one container what the node's repair
(repair.py) decides for each: no copy of a chain only the other iptables flavour
holds, nothing made of a torn-down interface sharing its chain, nothing written where
an entry sharing its chain cannot be read and the chain holds more than the entries
read make, no host port taken from another container. A mapping its plugin keeps in
nftables goes to nft_repair_one.repair_nft_mapping. repair.repair imports it only when a
mapping is given: the node's check and repair never load it."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple
from typing import Mapping as ReadOnly

from portmapctl.cni.cache import Attachment
from portmapctl.core.mapping import MappingConfig
from portmapctl.core.validate import OPTIONS, Spelling
from portmapctl.errors import Interrupted
from portmapctl.iptables.chains import Chain, dnat_chain_name
from portmapctl.iptables.ruleset import NatTable
from portmapctl.iptables.transaction import Transaction
from portmapctl.ops.check.cache_now import changed_mappings
from portmapctl.ops.check.expected import sharing_chain
from portmapctl.ops.check.followed import followed, nft_mapping
from portmapctl.ops.check.hints import WOULD_LEAVE
from portmapctl.ops.check.port_moves import holder_name, ports_taken
from portmapctl.ops.check.problem import CheckResult, Problem, Unrepaired
from portmapctl.ops.check.repair_plan import _plan, _planned_node, refused_setup
from portmapctl.ops.check.repair_report import _attempted, _in_row_order, _repaired, say_repaired
from portmapctl.ops.check.run import (
    SAME_WITH_REPAIR,
    check_followed,
    entries_of,
    mapping_result,
    with_owner_problems,
)
from portmapctl.ops.check.torn_down import (
    CHAIN_KINDS,
    TornDownLook,
    one_mapping_held,
    torn_beside,
    torn_own,
)
from portmapctl.ops.check.unread_entries import (
    own_unread_only,
    stop_where_held,
    unread_left,
    written_families,
)
from portmapctl.ops.conditions import refuse_what_iptables_refuses
from portmapctl.ops.flavour_guard import (
    by_flavour,
    families_only_in_other_flavour,
    flavours_of,
    other_flavour,
    split_why,
)
from portmapctl.ops.node import Node
from portmapctl.ops.side_effects import after_setup_many


def _repair_mapping(
    node: Node,
    config: MappingConfig,
    flush_udp: bool,
    ifname: Optional[str],
    spelling: Spelling = OPTIONS,
    forced: bool = False,
) -> CheckResult:
    """`check --repair` of one mapping given on the command line (for `ifname`)."""
    config, followed_notes = followed(node, config, writing=True, forced=forced, ifname=ifname)
    if nft_mapping(node, config):
        from portmapctl.ops.check.nft_repair_one import repair_nft_mapping

        before = check_followed(node, config, ifname=ifname)
        done = repair_nft_mapping(node, config, before, flush_udp, ifname)
        return replace(done, notes=followed_notes + done.notes)
    refuse_what_iptables_refuses(node.backend, config, node.families, spelling)
    node, planned = _planned_node(node)
    before = check_followed(node, config, ifname=ifname, spelling=spelling)
    transactions: Dict = {}
    families: List[int] = []  # where its chain or entry rules were (re)made
    unrepaired: List[Unrepaired] = []
    used_by = flavours_of(planned, before.families)
    name = dnat_chain_name(config)
    # As the whole-node repair: no copy of a chain only the other flavour holds (each
    # family's own other flavour, where the alternatives differ).
    for used, in_it in by_flavour(used_by or {}).items():
        other = other_flavour(used)
        for family in families_only_in_other_flavour(
            used, config, in_it, lambda f: planned.read(f).has_chain(name)
        ):
            why = split_why(used, other)
            unrepaired.append(Unrepaired(family, config.network, config.container_id, name, why))
    left = {u.family for u in unrepaired}
    # Made from the entries read where another of its container on the network cannot
    # be read, the chain dropped that interface's live rules: in doubt, nothing written,
    # unless it holds nothing they do not make (a flush): stopped before any family is
    # written, and judged again on each read a try is planned from.
    entries = entries_of(node, config)
    sharing = sharing_chain(config, entries, ifname)
    one = _one_plan(config, entries, sharing, ifname)
    torn, look, dying, short, setup = one.torn, one.look, one.dying, one.short, one.setup

    def held_stops(live: NatTable) -> None:
        stop_where_held(config, entries, sharing, live)

    for family in before.families:
        if family not in left:
            held_stops(planned.read(family))
    missing: Dict[int, Unrepaired] = {}
    notes: List[str] = []  # (a try whose restore died, found gone in: errors.found_in)
    own_chains = _own_chains(node, config)

    def plan(live: NatTable) -> Transaction:
        # A refusal no retry can cure is said, not tried (as the whole-node repair).
        name = dnat_chain_name(config)
        why = refused_setup(config, live, spelling)
        if why is None:
            held_stops(live)
            missing.pop(live.family, None)
            txn = setup(live)
            why = _port_move(live, txn, config, own_chains)
            if why is None:
                return txn
        missing[live.family] = Unrepaired(
            live.family, config.network, config.container_id, name, why
        )
        return Transaction(live.family)

    try:
        for family in before.families:
            if family in left:
                continue
            txn = node.converge_judged(family, plan, notes)
            if txn:
                transactions[family] = txn.render()
                families += [family] if changed_mappings(txn, [config]) else []
    except Interrupted as stop:
        # As the whole-node repair: what a transaction handed to iptables (re)made gets
        # route_localnet and its UDP flows flushed on the way out; the next check finds
        # the mapping healthy and would leave the flows pinned to the un-NATed path.
        made = _attempted(planned, [config])
        say_repaired(stop, bool(planned.attempted), made)
        after_setup_many(made, flush_udp, local_only=True)
        raise
    try:
        warnings = notes + (
            after_setup_many([(config, families)], flush_udp, local_only=True, node=node)
            if families
            else []
        )
        # (Named where its chain had a problem: one left healthy is no news.)
        lacking = {p.family for p in before.problems if p.kind in CHAIN_KINDS}
        unrepaired += [
            u
            for family in short
            if family in lacking
            for a in (*dying, *torn)
            if (u := look.not_made(a, family, name))
        ]
        unrepaired = _in_row_order([*unrepaired, *missing.values()])
        warnings += [u.text for u in unrepaired]
        tables = {family: planned.read(family) for family in before.families}
        # What other owners take of its ports no repair of ours cures: said after as before.
        after = with_owner_problems(
            node, config, tables, mapping_result(config, tables, sharing=sharing)
        )
        # As check_followed says it: where the chain is written all the same (nothing
        # the entries read do not make is there), so, not "nothing is written" of it;
        # where its own interface is torn down and it left the chain (dying), not so.
        written = written_families(config, entries, sharing, tables, ifname, looks=True)
        after = unread_left(after, entries, tables, written)
        after = replace(after, notes=followed_notes + after.notes)
    except Interrupted as stop:
        # Its transactions are in: their side effects, or the check after, under way.
        say_repaired(stop, bool(planned.attempted), _attempted(planned, [config]))
        raise
    return _repaired(before, after, transactions, warnings, unrepaired)


@dataclass(frozen=True)
class _OnePlan:
    """How the repair of one mapping plans its chain: `setup` (repair_plan._plan) of
    `config` beside what shares its chain; `torn` (torn_beside, with its `look`) and
    `dying` (torn_own): the entries whose rules only as far as the chain holds them are
    kept; `short`: the families where something of theirs was not made (as it plans)."""

    setup: Callable[[NatTable], Transaction]
    torn: List[Attachment]
    look: TornDownLook
    dying: List[Attachment]
    short: List[int]


def _one_plan(
    config: MappingConfig,
    entries: Sequence[Attachment],
    sharing: Sequence[MappingConfig],
    ifname: Optional[str],
) -> _OnePlan:
    """The planner of `check --repair` of one mapping (`entries`: run.entries_of,
    `sharing`: expected.sharing_chain of them), for the repair and for its check's
    port_moves_left alike."""
    # Its other interfaces' entries being torn down (a pod on the network twice): of
    # theirs only what the chain holds is kept, what it lacks is not made (as the
    # node's repair: CacheNow.held), and they are named.
    torn, look = torn_beside(config, entries, ifname)
    # So its own, where its interface is being torn down itself (its address and
    # interface gone from the namespace its entry names): nothing of its own made, as
    # the node's repair makes nothing of it; its chain left whole where no live
    # interface shares it.
    dying = torn_own(config, entries, ifname, look)
    short: List[int] = []

    def held(wanted: Sequence[Chain], live: NatTable) -> List[Chain]:
        kept = one_mapping_held(config, sharing, torn, wanted, live, own=dying)
        if kept != list(wanted) and live.family not in short:
            short.append(live.family)
        return kept

    # Its own entry alone not read: sharing_chain put its mapping last, and the chain
    # rewritten so would move the rules of its earlier ADD behind the others'.
    setup = _plan(
        None,
        config,
        sharing=sharing,
        held=held if torn or dying else None,
        as_found=own_unread_only(config, entries, ifname),
    )
    return _OnePlan(setup, torn, look, dying, short)


def _own_chains(node: Node, config: MappingConfig) -> Callable[[], Tuple[str, ...]]:
    """The chains the CNI cache names for `config`'s container, on any network: only
    those are its own (port_moves); read once, and only when asked (where a port would
    be taken)."""
    own: List[Tuple[str, ...]] = []

    def chains() -> Tuple[str, ...]:
        if not own:
            found = node.read_cache(judge_namespaces=False) or ()
            own.append(tuple(a.dnat_chain for a in found if a.container_id == config.container_id))
        return own[0]

    return chains


def _port_move(
    live: NatTable,
    txn: Transaction,
    config: MappingConfig,
    own_chains: Callable[[], Collection[str]],
) -> Optional[str]:
    """Why `txn` (the repair of `config`) is not applied to `live`: its chain would take
    a port from another mapping (port_moves); None where it takes none."""
    name = dnat_chain_name(config)
    took = ports_taken(live, txn).get(name)
    if took is not None:  # unless its holder is its own chain on another network
        took = ports_taken(live, txn, own_chains()).get(name)
    return None if took is None else took.why(holder_name(live, took.holder))


def repair_left(
    node: Node,
    config: MappingConfig,
    entries: Sequence[Attachment],
    sharing: Sequence[MappingConfig],
    ifname: Optional[str],
    tables: ReadOnly[int, NatTable],
    problems: Sequence[Problem],
    spelling: Spelling = OPTIONS,
) -> Tuple[Problem, ...]:
    """`problems` of one mapping (run.check_followed) whose fix is its --repair, those
    of a family where that repair leaves the chain naming why instead, in the repair's
    words (`spelling`: how the mapping was given): where the chain cannot be set up
    there (refused_setup: its externalSetMarkChain missing, an entry rule that cannot
    be written back), or would take a port from another mapping (_port_move: a stale
    chain of the same container on another network holding it, port_moves). Offered,
    a cron job ran a repair that wrote nothing, every time."""
    families = sorted({p.family for p in problems if p.fix == SAME_WITH_REPAIR})
    one = _one_plan(config, entries, sharing, ifname)
    own_chains = _own_chains(node, config)
    why: Dict[int, str] = {}
    for family in families:
        live = tables.get(family)
        if live is None:
            continue
        left = refused_setup(config, live, spelling) or _port_move(
            live, one.setup(live), config, own_chains
        )
        if left is not None:
            why[family] = left
    return tuple(
        replace(p, fix=WOULD_LEAVE.format(why=why[p.family]))
        if p.fix == SAME_WITH_REPAIR and p.family in why
        else p
        for p in problems
    )
