"""gc of the plugin's nftables backend (v1.6 on): which containers' rules go, one
transaction deleting them by handle (one nf_tables batch at the generation of the
read it was checked against, access/batch.py; else `nft -f`), their sightings for
--min-age. The iptables side and the run as a whole are in family.py, plan.py and
apply.py, which call `plan_nft` and `apply_nft`."""

from __future__ import annotations

from types import MappingProxyType
from typing import (
    TYPE_CHECKING,
    Callable,
    Dict,
    FrozenSet,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Set,
    Tuple,
)

from portmapctl.cni.cache import Attachment
from portmapctl.core.backend import Backend
from portmapctl.core.status import ChainKind
from portmapctl.errors import ApplyFailed, PortmapctlError, ToolTimedOut
from portmapctl.ops.gc import state as gc_state
from portmapctl.ops.gc.liveness import (
    Sources,
    ZombieHold,
    empty_cache_refusal,
    says_nothing,
    zombie_hold,
)
from portmapctl.ops.gc.planning import GcOptions, read_cache_while_planning
from portmapctl.ops.gc.result import GcChain, row_order
from portmapctl.ops.gc.state import NFT_PREFIX, ChainKey
from portmapctl.ops.node import Node

if TYPE_CHECKING:
    from portmapctl.nftables.ruleset import Rule, Ruleset
    from portmapctl.nftables.transaction import Transaction as NftTransaction
    from portmapctl.ops.flush_udp import RoutedTarget


# Its rules carry the bare container ID and no network: liveness is by ID (the cache's
# IDs on any network, bare valid-attachments lists, --keep), and a network-scoped
# valid-attachments document alone speaks for no nftables rule. One GcChain per
# (family, container): kind "nft-rule", chain the nft chain of its DNAT rules (what list
# and check name), keyed for --min-age and a prompt by container ID (GcChain.key).


def nft_key(family: int, container_id: str) -> ChainKey:
    return ChainKey(family, f"{NFT_PREFIX}{container_id}")


def _nft_live_ids(sources: Sources, attachments: Optional[Sequence[Attachment]]) -> Set[str]:
    # --netns-liveness: a cache entry whose namespace is gone (a zombie) is not live.
    ids = {
        a.container_id
        for a in attachments or ()
        if not (getattr(sources, "netns_liveness", False) and a.zombie)
    }
    for document in sources.documents:
        ids.update(document.container_ids)
    ids.update(sources.held)
    return ids


class NftPlan(NamedTuple):
    """The nftables side of a gc run, planned from one read of the tables."""

    removed: List[GcChain]
    pending: List[GcChain]
    seen: Dict[ChainKey, gc_state.Seen]  # every container not live now
    freed: Dict[int, Set[int]]  # UDP host ports per family no rule maps any more
    kept: int  # live (family, container) pairs
    transaction: NftTransaction
    # UDP host ports per family of removed rules that another nftables rule still maps
    # (a flow the removed rule DNATed keeps its dead destination), and every UDP host
    # port the rules left map: gc judges the flows of a port the other backend still
    # maps, or this one, as flush-udp --stale-only does (udp.py).
    remapped: Dict[int, Set[int]] = {}
    mapped: Dict[int, Set[int]] = {}
    # The DNAT addresses of the removed rules per family: a flow DNATed there is the
    # removal's to flush, one DNATed elsewhere on a port left mapped is another tool's.
    removed_ips: Dict[int, Set[str]] = {}
    # Where the removed rules sent their UDP host ports and no rule left does (family,
    # host port, address, port): v1.6/v1.7's entry (no `fib daddr type local`) DNATed
    # flows the node routes elsewhere there too, which keep the dead destination.
    routed: FrozenSet[RoutedTarget] = frozenset()
    # The handle of each family's table it was planned from: a write whose tool hung is
    # judged "not gone in" only by a rule left as planned in that very table.
    tables: Mapping[int, int] = MappingProxyType({})


def speaks_for_nft(sources: Sources, use_cache: bool) -> bool:
    """False for network-scoped valid-attachments documents alone: nftables rules
    name no network. A --keep beside them does not widen their scope (as it does not
    for the iptables chains, liveness.liveness): it names the containers it keeps, not
    which others are dead; with it, every container the document did not name, of any
    network, lost its nftables rules."""
    return not (
        sources.documents
        and all(d.network is not None for d in sources.documents)
        and not (use_cache or sources.remove_all)
    )


def owner_pairs(
    live_rules: Ruleset, families: Sequence[int], kept: Callable[[str], bool] = lambda _: True
) -> Set[Tuple[int, str]]:
    """(family, container ID) of every container with rules here (in `families`) that
    `kept` says is kept: what gc's `kept` counts of the nftables rules."""
    from portmapctl.nftables.ruleset import CONTAINER_CHAINS

    return {
        (family, rule.comment)
        for family, table in live_rules.tables.items()
        if family in families
        for chain in CONTAINER_CHAINS
        for rule in table.rules_of(chain)
        if rule.comment and kept(rule.comment)
    }


def plan_nft(
    live_rules: Ruleset,
    attachments: Optional[Sequence[Attachment]],
    sources: Sources,
    options: GcOptions,
    seen: Mapping[ChainKey, gc_state.Seen],
    families: Sequence[int],
    cache_dirs: Sequence[str] = (),
    zombies: Optional[ZombieHold] = None,
) -> NftPlan:
    """What gc does to the nftables tables. Pure: the caller reads and applies.
    `cache_dirs`: where `attachments` were read (named when they are none);
    `zombies`: a container kept only because they count as live keeps its sightings
    as they were (liveness.ZombieHold)."""
    from portmapctl.nftables.layout import took_routed
    from portmapctl.nftables.node import dead_containers, is_plugin_rule, rules_mark, same_rules
    from portmapctl.nftables.ruleset import CONTAINER_CHAINS
    from portmapctl.nftables.transaction import Transaction as NftTransaction
    from portmapctl.ops.flush_udp import dnat_targets

    if says_nothing(sources, attachments) and any(
        is_plugin_rule(rule)
        for family, table in live_rules.tables.items()
        if family in families
        for chain in CONTAINER_CHAINS
        for rule in table.rules_of(chain)
    ):
        # As for the iptables chains (planning.py plan_table), whatever --backend says.
        raise empty_cache_refusal(
            cache_dirs, "portmap rules in nftables (cni_hostport)", "every container's rules"
        )
    ids = _nft_live_ids(sources, attachments)
    # The rules name no network; a zombie's cache entry of the nftables backend does
    # (one network: that one).
    networks: Dict[str, Set[str]] = {}
    for a in attachments or ():
        if a.mapping is not None and a.mapping.backend == Backend.NFTABLES:
            networks.setdefault(a.container_id, set()).add(a.network)

    def is_live(cid: str) -> bool:
        return cid in ids or any(cid.startswith(k) for k in sources.keep)

    now = gc_state.clock()
    removed: List[GcChain] = []
    pending: List[GcChain] = []
    new_seen: Dict[ChainKey, gc_state.Seen] = {}
    txn = NftTransaction()
    gone_udp: Dict[int, Set[int]] = {}
    removed_ips: Dict[int, Set[str]] = {}
    for dead in dead_containers(live_rules, is_live):
        for family in dead.families:
            if family not in families:
                continue
            rules = tuple(r for r in dead.rules if r.family == family)
            ports = tuple((p, n) for f, p, n in dead.host_ports if f == family)
            key = nft_key(family, dead.container_id)
            table = live_rules.tables[family]
            mark = rules_mark(table, rules)
            before = seen.get(key)
            carried = before and same_rules(before.fingerprint, mark)
            first = before.first_seen if before and carried else now
            new_seen[key] = gc_state.Seen(mark.text(), first)
            cached = networks.get(dead.container_id, set())
            item = GcChain(
                _chain_of(rules),
                family,
                ChainKind.NFT_RULE,
                next(iter(cached)) if len(cached) == 1 else None,
                dead.container_id,
                row_order(ports),
                round(max(now - first, 0.0), 1),
                _chains_of(rules),
            )
            allowed = options.only is None or (family, key.chain) in options.only
            if now - first >= options.min_age and allowed:
                removed.append(item)
                for rule in rules:
                    # The body goes with the handle: Transaction.holds_in tells a plan
                    # whose handles a firewall reload has handed to other rules.
                    txn.delete_rule(family, rule.chain, rule.handle, rule.body)
                    if rule.body.action.addr is not None:
                        removed_ips.setdefault(family, set()).add(rule.body.action.addr)
                gone_udp.setdefault(family, set()).update(n for p, n in ports if p == "udp")
            else:
                pending.append(item)
    # (family, container ID) of every container here that its sources keep.
    kept_pairs = owner_pairs(live_rules, families, is_live)
    if zombies is not None:
        new_seen.update(_held_by_zombies(kept_pairs, seen, zombies))
    # UDP ports another rule still maps are not freed.
    still = nft_udp_ports(live_rules, {(op.family, op.handle or 0) for op in txn.ops})
    freed = {f: ports - still.get(f, set()) for f, ports in gone_udp.items()}
    remapped = {f: ports & still.get(f, set()) for f, ports in gone_udp.items()}
    kept = len(kept_pairs)
    gone = {(op.family, op.handle or 0) for op in txn.ops}
    routed: Set[RoutedTarget] = set()
    for family, table in live_rules.tables.items():
        if not took_routed(live_rules, family):
            continue  # (v1.9's entry DNATs no routed flow: one DNATed so is another's)
        rules = [r for chain in CONTAINER_CHAINS for r in table.rules_of(chain)]
        routed |= dnat_targets(family, [r.body for r in rules if (family, r.handle) in gone])
        routed -= dnat_targets(family, [r.body for r in rules if (family, r.handle) not in gone])
    return NftPlan(
        removed,
        pending,
        new_seen,
        {f: p for f, p in freed.items() if p},
        kept,
        txn,
        {f: p for f, p in remapped.items() if p},
        still,
        removed_ips,
        frozenset(routed),
        {family: table.handle for family, table in live_rules.tables.items()},
    )


def _held_by_zombies(
    kept_pairs: Set[Tuple[int, str]],
    seen: Mapping[ChainKey, gc_state.Seen],
    zombies: ZombieHold,
) -> Dict[ChainKey, gc_state.Seen]:
    """The sightings of the kept containers (family, ID) that only a zombie's cache
    entry keeps (judged only when a kept container has a sighting)."""
    kept = {nft_key(family, cid) for family, cid in kept_pairs}
    sighted = [key for key in kept if key in seen]
    if not sighted:
        return {}
    strict_ids = _nft_live_ids(zombies.sources, zombies.judged())
    keep = zombies.sources.keep
    return {
        key: seen[key]
        for key in sighted
        if (cid := key.chain[len(NFT_PREFIX) :]) not in strict_ids
        and not any(cid.startswith(k) for k in keep)
    }


def _chain_of(rules: Sequence[Rule]) -> str:
    """The chain a container's rules are named by: that of its first DNAT rule in
    evaluation order (hostip_hostports before hostports, as list's rows); its
    masquerade rules go with it. Only masquerade rules left: `masquerading`."""
    from portmapctl.nftables.inventory import EVALUATION_ORDER

    chains = {rule.chain for rule in rules}
    return next((c for c in EVALUATION_ORDER if c in chains), None) or rules[0].chain


def _chains_of(rules: Sequence[Rule]) -> Tuple[str, ...]:
    """Every chain a container's rules are in: its DNAT rules' in evaluation order, then
    those of its other rules (masquerading)."""
    from portmapctl.nftables.inventory import EVALUATION_ORDER

    chains = {rule.chain for rule in rules}
    return (*(c for c in EVALUATION_ORDER if c in chains), *sorted(chains - set(EVALUATION_ORDER)))


def apply_nft(
    node: Node,
    planned: NftPlan,
    sources: Sources,
    options: GcOptions,
    seen: Mapping[ChainKey, gc_state.Seen],
    cache_dirs: Sequence[str],
    warnings: List[str],
    forget: Optional[Callable[[Sequence[GcChain]], None]] = None,
) -> Tuple[str, NftPlan]:
    """Apply `planned`; when the tables changed meanwhile, read (and the cache after
    them) and plan again. Returns the transaction's text and the plan applied.
    `forget`: told what a plan removes before it goes in (planning.Planning.forget: the
    caller told it of `planned`'s)."""
    applied = [planned]

    def replan(live_rules: Ruleset) -> NftTransaction:
        attachments = read_cache_while_planning(node, cache_dirs, warnings) if cache_dirs else None
        zombies = zombie_hold(sources, attachments, node.namespace_view())
        applied.append(
            plan_nft(
                live_rules, attachments, sources, options, seen, node.families, cache_dirs, zombies
            )
        )
        if forget is not None:
            forget(applied[-1].removed)
        return applied[-1].transaction

    try:
        # At the generation of the read checked last: a firewall reload after it (a
        # table made again, its handles handed to other rules) refuses the deletions.
        text = node.converge_nft(
            replan, dry_run=options.dry_run, planned=planned.transaction, at_generation=True
        )
    except ApplyFailed as err:
        if not err.maybe_applied:
            raise
        # nft died without saying (killed by a signal): its rules went by handle,
        # and handles are never reused, so a read tells whether it went in (whole).
        # Gone in, it is the plan applied: its rules reported, their UDP flows flushed.
        tried = applied[-1].transaction
        try:
            live = node.read_nft()
        except PortmapctlError:
            raise err from None
        if not _went_in(tried, live):
            raise
        warnings.append(f"nftables: {err}; read again, none of the rules it deletes is left")
        return tried.render(), applied[-1]
    except ToolTimedOut as err:
        # nft stopped at its time limit (not tried again: exit 3), judged by a read too,
        # as iptables' hung restore is (converge.HungWentIn): it said "run again to see",
        # and the run after found nothing to remove, the removed rules' UDP flows kept
        # their dead DNAT.
        if not err.maybe_applied:
            raise
        try:
            live = node.read_nft()
        except PortmapctlError:
            raise err from None
        if not _went_in(applied[-1].transaction, live):
            if not applied[-1].transaction.ops:
                raise
            if _left_as_planned(applied[-1], live):
                # A rule it deletes is left: not gone in (all or nothing), as for iptables.
                raise err.not_gone_in() from None
            # Only rules like them, made again (an ADD of the same ID and ports, a
            # reload): it may have gone in before. Still raised as maybe applied: the
            # sightings forgotten, nothing flushed (apply_gc).
            raise err.made_again() from None
        raise NftHungWentIn(err, applied[-1]) from None
    return text, applied[-1]


class NftHungWentIn(ToolTimedOut):
    """`nft -f` stopped at its time limit (exit 3, gc ends) whose rules are gone, by the
    read after it: `plan`, as applied, is still reported in the line, its UDP flows
    flushed and its sightings forgotten (apply_gc)."""

    def __init__(self, err: ToolTimedOut, plan: NftPlan) -> None:
        super().__init__(
            f"{err.stopped}; read again, none of the rules it deletes is left: it went in",
            maybe_applied=True,
        )
        self.plan = plan


def _left_as_planned(plan: NftPlan, live: Ruleset) -> bool:
    """Whether a rule `plan` deletes is in `live` as planned: at its handle, with its
    body, in the table it was planned from (a table keeps its handle until made
    afresh, and gives none of its rules' handles twice). Then its write, all or
    nothing, did not go in; a rule like it elsewhere may have been made again since."""
    from portmapctl.nftables.transaction import OpKind

    for op in plan.transaction.ops:
        table = live.tables.get(op.family)
        if op.kind is not OpKind.DELETE_RULE or table is None:
            continue
        if op.body is not None and plan.tables.get(op.family) != table.handle:
            continue  # (made afresh since: its handles say nothing of the plan's)
        if any(
            r.handle == op.handle and (op.body is None or r.body == op.body)
            for r in table.rules_of(op.chain or "")
        ):
            return True
    return False


def _went_in(txn: NftTransaction, live: Ruleset) -> bool:
    """True when none of the rules `txn` deletes is in `live`: by its body (gc's plans
    carry it) in its chain at any handle, as a firewall reload (list, flush, load) makes
    the table again and hands its rules handles anew: a deleted handle is then another
    rule's, and a rule not deleted has a handle never read. A rule without its body
    known is judged by its handle alone."""
    from portmapctl.nftables.transaction import OpKind

    deletes = [op for op in txn.ops if op.kind is OpKind.DELETE_RULE]
    bodies = {(op.family, op.chain or "", op.body) for op in deletes if op.body is not None}
    handles = {(op.family, op.handle) for op in deletes if op.body is None}
    return bool(deletes) and not any(
        (family, rule.handle) in handles or (family, chain, rule.body) in bodies
        for family, table in live.tables.items()
        for chain, rules in table.rules.items()
        for rule in rules
    )


def nft_udp_ports(live_rules: Ruleset, gone: Set[Tuple[int, int]]) -> Dict[int, Set[int]]:
    """family -> UDP host ports the rules not in `gone` (family, handle) still map."""
    from portmapctl.nftables.inventory import dport_values
    from portmapctl.nftables.ruleset import CONTAINER_CHAINS

    found: Dict[int, Set[int]] = {}
    for family, table in live_rules.tables.items():
        for chain in CONTAINER_CHAINS:
            for rule in table.rules_of(chain):
                if (family, rule.handle) in gone:
                    continue
                ports = rule.body.value("udp dport")
                if ports is not None:
                    found.setdefault(family, set()).update(dport_values(ports) or ())
    return found
