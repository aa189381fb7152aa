"""`check --repair`: plans with `planner.plan_setup` from the same wanted chains the
diagnosis compares against and applies through `Node.converge`. It only creates what is
missing (a cached container's own chain is rewritten when its rules differ, as the
plugin's ADD would), never deletes another container's chain, and leaves stale state
to `gc`. The node is read once: the check after the repair is of the tables as the
applied transactions left them, in memory (`ReadOnce`)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from portmapctl.core.mapping import MappingConfig
from portmapctl.core.status import ProblemKind
from portmapctl.core.validate import CONFIG_KEYS, OPTIONS, Spelling
from portmapctl.errors import ApplyFailed, BadInput, Interrupted, PortmapctlError
from portmapctl.iptables import shapes
from portmapctl.iptables.chains import MASQ, SETMARK, Chain, chain_name, dnat_chain_name
from portmapctl.iptables.planner import missing_setmark_chain, plan_setup, unwritable_entry
from portmapctl.iptables.ruleset import (
    NatTable,
)
from portmapctl.iptables.transaction import Transaction
from portmapctl.ops.check.cache_now import CacheNow, changed_mappings
from portmapctl.ops.check.compare import held_elsewhere, in_live_order
from portmapctl.ops.check.expected import (
    cached_configs,
    sharing_chain,
    wanted_on_node,
    wanted_sharing,
)
from portmapctl.ops.check.followed import followed, nft_mapping
from portmapctl.ops.check.followed_entries import Followed, follow_the_plugin, in_doubt_left
from portmapctl.ops.check.hints import REPAIR_COMMAND
from portmapctl.ops.check.port_moves import holder_name, plan_taking_nothing, ports_taken
from portmapctl.ops.check.problem import CheckResult, Unrepaired
from portmapctl.ops.check.read_once import ReadOnce
from portmapctl.ops.check.run import (
    SAME_WITH_REPAIR,
    _check_node,
    check_followed,
    entries_of,
    mapping_result,
    read_tables,
    with_owner_problems,
)
from portmapctl.ops.check.torn_down import one_mapping_held, torn_beside, torn_own
from portmapctl.ops.check.unread_entries import (
    held_chains,
    stop_where_held,
    unread_left,
    unread_pairs,
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
from portmapctl.ops.side_effects import after_setup, after_setup_many

if TYPE_CHECKING:
    from portmapctl.cni.cache import Attachment
    from portmapctl.nftables.transaction import Transaction as NftTransaction
    from portmapctl.ops.check.problem import Problem

# --- repair ---------------------------------------------------------------------------


class _RenderedOnce(Transaction):
    """A planned transaction whose restore text is made once: iptables-restore and the
    report both need it (0.3 s each at 5,000 containers). Never changed once planned."""

    def render(self) -> str:
        text = self.__dict__.get("_text")
        if text is None:
            text = self.__dict__["_text"] = super().render()
        return text


def _setup(wanted: Sequence[Chain], live: NatTable, dedupe: bool = True) -> Transaction:
    """`dedupe`: the node's duplicated entry rules lose their extra copies too (check
    of the node reports them; a check of one mapping does not, and touches nothing
    else)."""
    txn = plan_setup(wanted, live, dedupe=dedupe)
    return _RenderedOnce(txn.family, txn.ops)


def _plan(
    configs: Optional[Sequence[MappingConfig]],
    single: Optional[MappingConfig],
    cache: Optional[CacheNow] = None,
    sharing: Sequence[MappingConfig] = (),
    unread: frozenset[str] = frozenset(),
    held: Optional[Callable[[Sequence[Chain], NatTable], List[Chain]]] = None,
) -> Callable[[NatTable], Transaction]:
    """The planner for one family: what the check compares against, made to exist.
    `cache`: the cached configs of containers whose chain the plan would change are
    read again first (`CacheNow`); `single` (given on the command line) never is, and
    `sharing` (expected.sharing_chain) is what else its chain holds. `unread`: the chains of
    unread_entries.unread_pairs, written only where `live` holds nothing the entries
    read do not make (held_chains: judged on each read a try is planned from).
    `held`: `single`'s chains as written where other interfaces sharing its chain are
    being torn down (torn_down.one_mapping_held)."""

    def setup(live: NatTable, these: Sequence[MappingConfig]) -> Transaction:
        shared, per_container = wanted_on_node(these, live.family, live)
        if cache is not None:
            # A torn-down interface's rules kept only as far as the chain holds them.
            per_container = cache.held(
                live, these, per_container, lambda cs: wanted_on_node(cs, live.family, live)[1]
            )
        if unread:
            # Its rules the entries read do not make may be that interface's live
            # mapping: the chain is left as it is (its shared chains are made).
            held = held_chains(live, [chain for _, chain in per_container], unread)
            per_container = [(c, chain) for c, chain in per_container if chain.name not in held]
        if these is None and bit_unknown(live):
            # No cache, and no rule left that says the mark bit: written, it would be a
            # guess (the default, 13), masquerading what other software marks so.
            shared = [c for c in shared if c.name not in (SETMARK, MASQ)]
        return _setup([*shared, *(chain for _, chain in per_container)], live)

    def plan(live: NatTable) -> Transaction:
        if single is not None:
            # The -p given in another order than the runtime's: the chain stays as it is.
            wanted = wanted_sharing(single, sharing or (single,), live.family, live)
            if held is not None:
                wanted = held(wanted, live)
            return _setup([in_live_order(chain, live) for chain in wanted], live, dedupe=False)
        if cache is None or configs is None:
            return setup(live, configs)  # type: ignore[arg-type]
        return cache.plan(live, configs, setup)

    return plan


def bit_unknown(live: NatTable) -> bool:
    """Whether the table's chains mark through CNI-HOSTPORT-SETMARK and no SETMARK or
    MASQ rule is left to tell the mark bit (with no cache, nothing else tells it)."""
    return shapes.uses_setmark(live) and shapes.mark_bit_in(live) is None


_BIT_UNKNOWN = (
    "IPv{family}: CNI-HOSTPORT-SETMARK's and CNI-HOSTPORT-MASQ's rules are gone and no CNI"
    " cache says the masquerade mark bit (markMasqBit): not written (a guess would masquerade"
    " what other software marks); give --cni-cache-dir"
)


def _in_row_order(unrepaired: Sequence[Unrepaired]) -> List[Unrepaired]:
    """As check's problem rows and "repaired:" lines (render.check.problem_sort_key):
    by network, container and family, so one container's lines stand together (the
    repair finds them family by family)."""
    return sorted(unrepaired, key=lambda u: (u.network, u.container_id, u.family))


def _missing_reference(config: MappingConfig, live: NatTable) -> Optional[str]:
    """Why a cached `config` cannot be set up in this table as it is, found before
    trying (planner.missing_setmark_chain)."""
    return missing_setmark_chain(
        config, live, CONFIG_KEYS, "restore it, then repair again"
    ) or unwritable_entry(dnat_chain_name(config), live, "repair again")


@dataclass(frozen=True)
class _Elsewhere:
    """What of one family a repair leaves because the other iptables flavour holds it."""

    whole_family: bool  # CNI-HOSTPORT-DNAT is there, not here: nothing is written here
    chains: frozenset  # per-container chains there and not here
    unrepaired: Tuple[Unrepaired, ...]


def _in_other_flavour(
    live: NatTable,
    other: NatTable,
    configs: Optional[Sequence[MappingConfig]],
    flavours: Tuple[str, str],
) -> _Elsewhere:
    """A chain missing here that the other flavour's tables hold is not made here: the
    kernel applies both, so a copy would be a split brain (SPEC §2), and it is evidence
    that the plugin runs the other iptables (its PATH, a bundled one; or this command's
    --iptables): its rules there work, a copy here would outlive the plugin's DEL. When
    the family's state is there (compare.held_elsewhere), nothing of it is made."""
    used, other_name = flavours
    family = live.family
    mine = [dnat_chain_name(c) for c in configs or () if family in c.families]
    whole = held_elsewhere(live, other, mine)
    chains = set()
    unrepaired = []
    for config in configs or ():
        name = dnat_chain_name(config)
        if family not in config.families or live.has_chain(name):
            continue
        if whole or other.has_chain(name):
            why = split_why(used, other_name, whole_family=not other.has_chain(name))
            chains.add(name)
            unrepaired.append(Unrepaired(family, config.network, config.container_id, name, why))
    return _Elsewhere(whole, frozenset(chains), tuple(unrepaired))


def _repair_family(
    node: Node,
    family: int,
    configs: Sequence[MappingConfig],
    notes: List[str],
    cache: Optional[CacheNow] = None,
    unread: frozenset[str] = frozenset(),
) -> Tuple[List[Transaction], List[Unrepaired]]:
    """Repair one family container by container where needed (SPEC §5: one bad record
    stops nothing). First everything in one transaction, as always; when iptables
    refuses it, the shared chains alone, then the containers halved until each one it
    refuses stands alone (`settle`): that one is named, all the others are repaired,
    in about 2·log2(N) transactions for one refused container among N (one each, as
    before, took a restore and a plan of the whole table per container: minutes at
    5,000). `notes`: gets the warning for a try whose restore died and went in.
    `unread`: as _plan's."""
    skipped: Dict[str, Unrepaired] = {}
    moved: Dict[str, Unrepaired] = {}  # left as they are: they would take a port (port_moves)
    cached = {dnat_chain_name(c) for c in configs}

    def taking_nothing(live: NatTable, these: Sequence[MappingConfig]) -> Transaction:
        for name in {dnat_chain_name(c) for c in these}:
            moved.pop(name, None)  # planned again from a fresh read
        txn, taken = plan_taking_nothing(
            live, these, lambda cs: _plan(cs, None, cache, unread=unread)(live), cached
        )
        for name, took in taken.items():
            first = next(c for c in these if dnat_chain_name(c) == name)
            why = took.why(holder_name(live, took.holder), cached)
            moved[name] = Unrepaired(family, first.network, first.container_id, name, why)
        return txn

    def usable(live: NatTable, these: Sequence[MappingConfig] = configs) -> List[MappingConfig]:
        kept = []
        for config in these:
            why = _missing_reference(config, live)
            if why is None:
                kept.append(config)
                skipped.pop(dnat_chain_name(config), None)
            elif family in config.families:
                name = dnat_chain_name(config)
                skipped[name] = Unrepaired(family, config.network, config.container_id, name, why)
        return kept

    def plan_all(live: NatTable) -> Transaction:
        return taking_nothing(live, usable(live))

    busy: List[str] = []  # why the xtables lock stopped the halving, once it did
    try:
        txn = node.converge_judged(family, plan_all, notes)
        return ([txn] if txn else []), [*skipped.values(), *moved.values()]
    except ApplyFailed as err:
        if err.busy:
            # Each try waited the lock's whole wait: the shared chains' and the first
            # half's tries would wait as long again before the halving stopped (two
            # rounds of waits, 60 s at the default 10 s); every container is named now.
            busy.append(f"the xtables lock was busy: {err}")
    applied: List[Transaction] = []

    def plan_shared(live: NatTable) -> Transaction:
        shared, _ = wanted_on_node(usable(live), family, live)
        return _setup(shared, live)

    if not busy:
        txn = _converge_shared(node, family, plan_shared, notes)  # (failing, fails the family)
        if txn:
            applied.append(txn)
    failed: List[Unrepaired] = []
    # By chain: all the configs that want one chain go together (a container's
    # interfaces on one network share it; planned apart, the others' rules would go).
    by_chain: Dict[str, List[MappingConfig]] = {}
    for config in configs:
        name = dnat_chain_name(config)
        if family in config.families and name not in skipped:
            by_chain.setdefault(name, []).append(config)

    def unrepaired(config: MappingConfig, why: str) -> None:
        chain = dnat_chain_name(config)
        failed.append(Unrepaired(family, config.network, config.container_id, chain, why))

    def settle(groups: Sequence[List[MappingConfig]], refused: bool = False) -> bool:
        """`groups` in one transaction, or (`refused`: known to hold a group iptables
        refuses) at once each half of them, and so on down: a group refused alone is
        named. Whether they all went in. A half refused together with its other half
        that went in holds the refused group: it is split without a try of its own.
        Once the xtables lock was busy (ApplyFailed.busy), nothing more is tried."""
        if busy:
            for group in groups:
                unrepaired(group[0], busy[0])
            return False
        if refused and len(groups) > 1:
            half = len(groups) // 2
            went = settle(groups[:half])
            return settle(groups[half:], refused=went) and went

        def plan_these(live: NatTable) -> Transaction:
            # (A setmark chain gone since the whole was planned: said as that plan
            # says it, and the group left out whole.)
            kept = {id(c) for c in usable(live, [c for g in groups for c in g])}
            return taking_nothing(
                live, [c for g in groups if all(id(c) in kept for c in g) for c in g]
            )

        try:
            txn = node.converge_judged(family, plan_these, notes)
        except ApplyFailed as err:
            if err.busy:
                # Another program holds the xtables lock: each try waited for it; the
                # others are not tried (each would wait as long), and said so.
                busy.append(f"the xtables lock was busy: {err}")
                return settle(groups)
            if len(groups) > 1:
                return settle(groups, refused=True)
            unrepaired(groups[0][0], f"iptables refused it: {err}")
            return False
        if txn:
            applied.append(txn)
        return True

    if by_chain:
        settle(list(by_chain.values()), refused=True)  # (all together were, just now)
    return applied, [*skipped.values(), *moved.values(), *failed]


def _attempted(
    planned: ReadOnce, configs: Sequence[MappingConfig]
) -> List[Tuple[MappingConfig, List[int]]]:
    """The mappings the transactions handed to iptables (re)made, with their families."""
    made: Dict[MappingConfig, List[int]] = {}
    for txn in planned.attempted:
        for c in changed_mappings(txn, configs):
            families = made.setdefault(c, [])
            if txn.family not in families:
                families.append(txn.family)
    return list(made.items())


def say_repaired(
    stop: Interrupted, attempted: bool, made: Sequence[Tuple[MappingConfig, Sequence[int]]]
) -> None:
    """Put on a Ctrl-C or SIGTERM (Interrupted.after) that a repair had been handed
    over (`attempted`), and for how many containers (`made`): "terminated" alone reads
    as "nothing was written"."""
    if not attempted:
        return
    stop.after = _went_in(len({(c.network, c.container_id) for c, _ in made}))


def say_repair_done(stop: Interrupted, result: CheckResult) -> None:
    """say_repaired for a Ctrl-C or SIGTERM once repair() returned `result` (while the
    command reports it: the "repaired:" lines, the table, the metrics file), unless
    the line says something already: "terminated" alone read as "nothing was
    written"."""
    if stop.after or not result.repaired:
        return
    stop.after = _went_in(
        len({(p.network, p.container_id) for p in result.fixed if p.container_id})
    )


def _went_in(containers: int) -> str:
    """What the line of a signal says once a repair of `containers` went in (0: of
    no container named, e.g. only the top-level chains)."""
    which = f" of {containers} container{'s' if containers != 1 else ''}" if containers else ""
    return f"the repair{which} had gone in, or was going in (`portmapctl check` shows what is left)"


def _converge_shared(
    node: Node, family: int, plan: Callable[[NatTable], Transaction], notes: List[str]
) -> Transaction:
    """converge_judged of a transaction that adds shared rules, where nothing else is
    tried when it fails (the shared chains of a halving repair, a repair with no
    cache): a refusal taken as final (a read equal to the first, ReadOnce) is tried
    once more. Its count guards (planner._count_guard) also refuse it when another
    tool's rule in PREROUTING or POSTROUTING came and went between the read and the
    write, which an equal read does not show: the repair failed (review helper-134)."""
    try:
        return node.converge_judged(family, plan, notes)
    except ApplyFailed as err:
        if not err.final:
            raise
    return node.converge_judged(family, plan, notes)


def _planned_node(node: Node) -> Tuple[Node, ReadOnce]:
    """The node with reads that are made once (see ReadOnce)."""
    planned = ReadOnce(node.backend)
    return replace(node, backend=planned), planned


def repair(
    node: Node,
    config: Optional[MappingConfig] = None,
    *,
    flush_udp: bool = True,
    ifname: Optional[str] = None,
    spelling: Spelling = OPTIONS,
    forced: bool = False,
) -> CheckResult:
    """Create what is missing (cached mappings, or `config`, and the top-level
    structure), then check again. Returns the check after, with what was fixed and
    what could not be (by container, with the reason). `spelling`: how `config`'s
    options were given (its reasons name them so); `forced`: its backend is
    --backend's, not its config's (run.followed).

    The node is read once; the check after is of the tables as the applied
    transactions left them, in memory (ReadOnce): a family is read again only when
    iptables refused a transaction (then it is re-planned from a fresh read)."""
    if node.options.offline or (node.options.uses_iptables and not node.backend.writable):
        raise BadInput("--repair changes the node: it cannot work on a --snapshot")
    if config is not None:
        return _repair_mapping(node, config, flush_udp, ifname, spelling, forced)
    node, planned = _planned_node(node)
    attachments = node.read_cache()
    read = read_tables(node)
    live_nft = None
    if node.nft is not None:
        live_nft = node.read_nft()
        if node.nft_unusable is None:
            from portmapctl.ops.check.nft_repair import ReadOnceNft

            node.nft = ReadOnceNft(node.nft, live_nft)
    # Judged, and repaired, where their plugin keeps them
    # (followed_entries.follow_the_plugin). (Not `read` with nft_live: the check after
    # must read what the repair made.)
    followed = follow_the_plugin(node, attachments, replace(read, nft_live=live_nft))
    attachments, key_ignored, in_doubt = followed.attachments, followed.ignored, followed.in_doubt
    before = in_doubt_left(_check_node(node, attachments, read), followed, read.tables)
    before = unread_left(before, attachments, read.tables)
    from portmapctl.cni.cache import added_at
    from portmapctl.ops.check import nft as check_nft
    from portmapctl.ops.check import nft_repair

    # In ADD order (the cache files' modification times), as nft_repair: the entry
    # rules are appended in this order, and of two containers on one host port the
    # first keeps it, as it did before (a flush); file-name order would hand it over.
    configs = cached_configs(sorted(attachments, key=added_at)) if attachments is not None else None

    nft_ids: set = set()
    unread: frozenset[str] = (
        frozenset()
    )  # (unread_entries: their chains, written where nothing is held)
    if attachments is not None:
        if node.nft is None:
            # nftables not looked at: its containers (by key or evidence) still get
            # nothing in iptables, and nothing is written in nftables.
            excluded = {
                (a.network, a.container_id)
                for a in check_nft.nft_backed_unread(node, read.tables, attachments)
            }
        else:
            from portmapctl.ops import nft

            nft_tables = node.read_nft()
            ipt_chains = check_nft.iptables_owners(read.tables, attachments)
            parts = nft.split(attachments, nft_tables, ipt_chains, node.options.keyless)
            # By cache entry: a container on two networks may have one per backend.
            excluded = {(a.network, a.container_id) for a in parts.nftables}
            nft_ids = {a.container_id for a in parts.nftables}
        # Nor anything for those whose rules may be in tables nft cannot read
        # (followed_entries._unplaced): an iptables copy beside them would map them twice.
        excluded |= {(a.network, a.container_id) for a in followed.unplaced}
        # A chain one of whose entries cannot be read (unread_entries) is written only
        # where it holds nothing the entries read do not make (_plan): anything else
        # may be that interface's live mapping.
        unread = frozenset(chain_name(*p) for p in set(unread_pairs(attachments)) - excluded)
        if configs is not None:
            configs = [c for c in configs if (c.network, c.container_id) not in excluded]
    transactions: Dict = {}
    changed: Dict[MappingConfig, Tuple[MappingConfig, List[int]]] = {}
    unrepaired: List[Unrepaired] = []
    cache = None
    if attachments is not None:
        cache = CacheNow(node, attachments, key_ignored=[a.path for a in key_ignored])
    # --backend nftables: iptables is neither looked at nor written (nothing is expected
    # there, and the check before found nothing).
    nft_tried: List[Tuple[NftTransaction, List[MappingConfig]]] = []
    notes: List[str] = []  # (a try whose tool died, found gone in: errors.found_in)
    torn_down: List[Unrepaired] = []  # (cache.left_out: see below)
    try:
        for family in node.families if node.options.reads_iptables else ():
            other = read.other_tables.get(family)
            if other is not None and read.flavours is not None:
                pair = read.flavours[family]
                elsewhere = _in_other_flavour(read.tables[family], other, configs, pair)
                unrepaired += elsewhere.unrepaired
                if elsewhere.whole_family:
                    continue
                configs_here = [
                    c for c in configs or () if dnat_chain_name(c) not in elsewhere.chains
                ]
            else:
                configs_here = list(configs or ())
            if configs_here:
                txns, family_unrepaired = _repair_family(
                    node, family, configs_here, notes, cache, unread
                )
                unrepaired += family_unrepaired
                if cache is not None:
                    left = cache.left_out(family)  # (being torn down: not made)
                    torn_down += left
                    unrepaired += left
            else:
                txn = _converge_shared(
                    node, family, _plan(None if configs is None else configs_here, None), notes
                )
                if configs is None and bit_unknown(read.tables[family]):
                    notes.append(_BIT_UNKNOWN.format(family=family))
                txns = [txn] if txn else []
            if not txns:
                continue
            transactions[family] = "".join(t.render() for t in txns)
            # A container left out as torn down is in no config of cache.current, but its
            # chain is made from its other interfaces' entries (a pod on the network
            # twice): those get their side effects.
            left_out = {
                u.chain
                for u in unrepaired
                if u.family == family and not any(u is t for t in torn_down)
            }
            for txn in txns:
                for c in changed_mappings(
                    txn, cache.current(configs or [], family) if cache else configs or []
                ):
                    if dnat_chain_name(c) in left_out:
                        continue  # nothing of it was made: no route_localnet, no flush
                    # By config: each interface sharing the chain has its own address.
                    fams = changed.setdefault(c, (c, []))[1]
                    if family not in fams:
                        fams.append(family)
        nft_changed: List[Tuple[MappingConfig, List[int]]] = []
        nft_notes: Tuple[str, ...] = ()
        nft_copies = any(
            p.kind == ProblemKind.DUPLICATE_ENTRY and p.in_nftables for p in before.problems
        )
        if nft_ids or nft_copies:
            text, nft_changed, attachments, nft_left, nft_notes = nft_repair.nft_repair(
                node,
                attachments,
                dry_run=False,
                planned=nft_tried,
                dedupe=nft_copies,
                in_doubt=_in_doubt_why(in_doubt, followed),
            )
            unrepaired += nft_left
            if text:
                transactions["nft"] = text  # both families, one `nft -f` transaction
        unrepaired = _in_row_order(unrepaired)
        warnings: List[str] = [
            *notes,
            *nft_notes,
            *(u.text for u in unrepaired),
        ]
        for c, fams in nft_changed:
            warnings += after_setup(c, fams, flush_udp, local_only=True, node=node)
        if flush_udp and transactions.get("nft") and nft_tried:
            warnings += nft_repair.flush_routed_after(node, nft_tried[-1][0])
        # As the plugin's ADD: route_localnet, and no UDP flow left pinned to the
        # un-NATed path it took while the mapping was missing.
        warnings += after_setup_many(list(changed.values()), flush_udp, local_only=True, node=node)
    except Interrupted as stop:
        # SIGTERM or Ctrl-C once a transaction went in (or was under way): what it made
        # still gets the plugin's side effects on the way out; the next check finds it
        # healthy and would leave its UDP flows pinned to the un-NATed path for good.
        made = _handed_over(planned, configs, nft_tried)
        say_repaired(stop, bool(planned.attempted or nft_tried), made)
        after_setup_many(made, flush_udp, local_only=True)
        if flush_udp and nft_tried:
            with contextlib.suppress(PortmapctlError):  # (the run ends as terminated)
                nft_repair.flush_routed_after(node, nft_tried[-1][0])
        raise
    try:
        now = {family: planned.read(family) for family in read.tables}
        if cache is not None and attachments is not None:
            attachments = cache.refreshed(attachments)  # what the plans were made from
        after = _check_node(node, attachments, replace(read, tables=now))
        after = unread_left(in_doubt_left(after, followed, now), attachments, now)
        ignored_notes = _key_ignored_notes(key_ignored, followed.where)
        after = replace(after, notes=(*ignored_notes, *after.notes))
    except Interrupted as stop:
        # The repair and its side effects are done; the check after it is not.
        say_repaired(
            stop, bool(planned.attempted or nft_tried), _handed_over(planned, configs, nft_tried)
        )
        raise
    return _repaired(before, after, transactions, warnings, unrepaired)


def _in_doubt_why(in_doubt: Sequence[Attachment], judged: Followed) -> Dict[str, str]:
    """By path, why nft_repair writes nothing for the entries whose backend is in doubt
    (followed_entries.follow_the_plugin): the plugin that added them may keep them in
    iptables (`judged.gone`: those of which nothing is left, ops/nft.py nothing_left;
    `judged.iptables_unread`: iptables could not be read to look), and where the
    runtime's plugins would settle it, the directories looked in and `--cni-bin-dir
    DIR` (`judged.settle`): the line an operator reading only the repair's output
    sees."""

    def seen(a: Attachment) -> str:
        if a.path in judged.gone:
            return "nothing of it is left"
        if judged.iptables_unread is not None:
            return "iptables, where its chain would be, cannot be read"
        return "its chain is in iptables"

    def settle(a: Attachment) -> str:
        return f"; {judged.settle[a.path]}" if a.path in judged.settle else ""

    return {
        a.path: f'its cached config says "backend": "nftables", {seen(a)}:'
        f" whether its plugin ignores the key cannot be told here{settle(a)}"
        for a in in_doubt
    }


def _key_ignored_notes(ignored: Sequence[Attachment], where: Mapping[str, str]) -> Tuple[str, ...]:
    if not ignored:
        return ()
    from portmapctl.ops.nft_words import key_ignored_note

    return (key_ignored_note(ignored, where),)


def _handed_over(
    planned: ReadOnce,
    configs: Optional[Sequence[MappingConfig]],
    nft_tried: Sequence[Tuple[NftTransaction, List[MappingConfig]]],
) -> List[Tuple[MappingConfig, List[int]]]:
    """The mappings the node's repair handed to iptables and nft (re)made."""
    from portmapctl.ops.check import nft_repair

    made = _attempted(planned, configs or [])
    if nft_tried:
        made += nft_repair.nft_changed(*nft_tried[-1])
    return made


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
        from portmapctl.ops.check.nft_repair import repair_nft_mapping

        before = check_followed(node, config, ifname=ifname)
        done = repair_nft_mapping(node, config, before, flush_udp, ifname)
        return replace(done, notes=followed_notes + done.notes)
    refuse_what_iptables_refuses(node.backend, config, node.families, spelling)
    node, planned = _planned_node(node)
    before = check_followed(node, config, ifname=ifname)
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
    # Its other interfaces' entries being torn down (a pod on the network twice): of
    # theirs only what the chain holds is kept, what it lacks is not made (as the
    # node's repair: CacheNow.held), and they are named.
    torn, look = torn_beside(config, entries, ifname)
    # So its own, where its interface is being torn down itself (its address and
    # interface gone from the namespace its entry names): nothing of its own made, as
    # the node's repair makes nothing of it; its chain left whole where no live
    # interface shares it.
    dying = torn_own(config, entries, ifname, look)
    short: List[int] = []  # the families where something of theirs was not made

    def held(wanted: Sequence[Chain], live: NatTable) -> List[Chain]:
        kept = one_mapping_held(config, sharing, torn, wanted, live, own=dying)
        if kept != list(wanted) and live.family not in short:
            short.append(live.family)
        return kept

    setup = _plan(None, config, sharing=sharing, held=held if torn or dying else None)

    def held_stops(live: NatTable) -> None:
        stop_where_held(config, entries, sharing, live)

    for family in before.families:
        if family not in left:
            held_stops(planned.read(family))
    missing: Dict[int, Unrepaired] = {}
    notes: List[str] = []  # (a try whose restore died, found gone in: errors.found_in)
    own: List[Tuple[str, ...]] = []

    def own_chains() -> Tuple[str, ...]:
        # The chains the CNI cache names for this container, on any network: only those
        # are its own (port_moves); read once, and only where a port would be taken.
        if not own:
            found = node.read_cache(judge_namespaces=False) or ()
            own.append(tuple(a.dnat_chain for a in found if a.container_id == config.container_id))
        return own[0]

    def plan(live: NatTable) -> Transaction:
        # A refusal no retry can cure is said, not tried (as the whole-node repair).
        name = dnat_chain_name(config)
        why = missing_setmark_chain(
            config, live, spelling, "restore it, then repair again"
        ) or unwritable_entry(name, live, "repair again")
        if why is None:
            held_stops(live)
            missing.pop(live.family, None)
            txn = setup(live)
            took = ports_taken(live, txn).get(name)
            if took is not None:  # unless its holder is its own chain on another network
                took = ports_taken(live, txn, own_chains()).get(name)
            if took is None:
                return txn
            why = took.why(holder_name(live, took.holder))
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
        unrepaired += [
            u for family in short for a in (*dying, *torn) if (u := look.not_made(a, family, name))
        ]
        unrepaired = _in_row_order([*unrepaired, *missing.values()])
        warnings += [u.text for u in unrepaired]
        tables = {family: planned.read(family) for family in before.families}
        # What other owners take of its ports no repair of ours cures: said after as before.
        after = with_owner_problems(
            node, config, tables, mapping_result(config, tables, sharing=sharing)
        )
        after = unread_left(after, entries, tables)  # (as check_followed says it)
        after = replace(after, notes=followed_notes + after.notes)
    except Interrupted as stop:
        # Its transactions are in: their side effects, or the check after, under way.
        say_repaired(stop, bool(planned.attempted), _attempted(planned, [config]))
        raise
    return _repaired(before, after, transactions, warnings, unrepaired)


_LEFT = "--repair left it as it is: its `could not repair` line says why"


def _names_repair(fix: str) -> bool:
    """Whether a problem's fix is --repair (the node's command, or one mapping's)."""
    return REPAIR_COMMAND in fix or fix == SAME_WITH_REPAIR


def left_named(
    problems: Sequence[Problem], unrepaired: Sequence[Unrepaired]
) -> Tuple[Problem, ...]:
    """`problems` after a repair, those of a container it could not make (in that
    family) naming their `could not repair` line as their fix, not --repair again."""
    left = {(u.family, u.network, u.container_id) for u in unrepaired}
    return tuple(
        replace(p, fix=_LEFT)
        if (p.family, p.network, p.container_id) in left and _names_repair(p.fix)
        else p
        for p in problems
    )


def _repaired(
    before: CheckResult,
    after: CheckResult,
    transactions: Dict,
    warnings: List[str],
    unrepaired: Sequence[Unrepaired],
) -> CheckResult:
    """The check after a repair, with what it fixed and what it could not. A problem of
    a container the repair could not make does not name --repair as its fix again: its
    `could not repair` line says why."""
    remaining = {p.key for p in after.problems}
    fixed = tuple(p for p in before.problems if p.key not in remaining)
    problems = left_named(after.problems, unrepaired)
    # The check after, with the repair's own: what it read (its counts, its looked_at:
    # a field left out here went missing, and the summary said another thing than check).
    return replace(
        after,
        problems=problems,
        repaired=bool(transactions),
        fixed=fixed,
        transactions=transactions,
        warnings=after.warnings + tuple(warnings),
        unrepaired=tuple((u.family, u.network, u.container_id, u.chain, u.why) for u in unrepaired),
    )
