"""`check --repair` of the node: plans with `planner.plan_setup` from the same wanted
chains the diagnosis compares against and applies through `Node.converge`. It only
creates what is missing (a cached container's own chain is rewritten when its rules
differ, as the plugin's ADD would), never deletes another container's chain, and
leaves stale state to `gc`. The node is read once: the check after the repair is of
the tables as the applied transactions left them, in memory (`ReadOnce`).

What it decides: which cached containers each family gets (none whose rules nftables
holds or may hold, none the other iptables flavour holds; a chain one of whose entries
cannot be read only where it holds nothing else), and, when iptables refuses the
whole, which containers it refuses (`_repair_family`: the others are made). `repair()` is also the entry of one mapping's repair, which it hands to
repair_one.py; the planner both use is repair_plan.py, what they report
repair_report.py."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from portmapctl.core.mapping import MappingConfig
from portmapctl.core.status import ProblemKind
from portmapctl.core.validate import OPTIONS, Spelling
from portmapctl.errors import ApplyFailed, BadInput, Interrupted, PortmapctlError
from portmapctl.iptables.chains import chain_name, dnat_chain_name
from portmapctl.iptables.ruleset import NatTable
from portmapctl.iptables.transaction import Transaction
from portmapctl.ops.check.cache_now import CacheNow, changed_mappings
from portmapctl.ops.check.compare import held_elsewhere
from portmapctl.ops.check.expected import cached_configs, wanted_on_node
from portmapctl.ops.check.followed_entries import Followed, follow_the_plugin, in_doubt_left
from portmapctl.ops.check.problem import CheckResult, Unrepaired
from portmapctl.ops.check.read_once import ReadOnce
from portmapctl.ops.check.repair_plan import (
    _plan,
    _planned_node,
    _setup,
    bit_unknown,
    ports_left,
    refused_setup,
)
from portmapctl.ops.check.repair_report import (
    LEFT,
    _attempted,
    _in_row_order,
    _repaired,
    say_repaired,
)
from portmapctl.ops.check.run import _check_node, read_tables
from portmapctl.ops.check.unread_entries import node_writes, unread_left, unread_pairs
from portmapctl.ops.flavour_guard import split_why
from portmapctl.ops.node import Node
from portmapctl.ops.side_effects import after_setup, after_setup_many

if TYPE_CHECKING:
    from portmapctl.cni.cache import Attachment
    from portmapctl.nftables.transaction import Transaction as NftTransaction


_BIT_UNKNOWN = (
    "IPv{family}: CNI-HOSTPORT-SETMARK's and CNI-HOSTPORT-MASQ's rules are gone and no CNI"
    " cache says the masquerade mark bit (markMasqBit): not written (a guess would masquerade"
    " what other software marks); give --cni-cache-dir"
)


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
        txn, left = ports_left(
            live, these, lambda cs: _plan(cs, None, cache, unread=unread)(live), cached
        )
        for name, why in left.items():
            first = next(c for c in these if dnat_chain_name(c) == name)
            moved[name] = Unrepaired(family, first.network, first.container_id, name, why)
        return txn

    def usable(live: NatTable, these: Sequence[MappingConfig] = configs) -> List[MappingConfig]:
        kept = []
        for config in these:
            why = refused_setup(config, live)
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
        from portmapctl.ops.check.repair_one import _repair_mapping

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
    # As the node's check says it (its `fixed` rows): where this repair writes the
    # chain of an entry that cannot be read, it says so (node_writes).
    looks = node.namespace_view() is not None  # (a snapshot's namespaces are another node's)
    before = unread_left(before, attachments, read.tables, node_writes(before, attachments, looks))
    from portmapctl.cni.cache import added_at
    from portmapctl.ops.check import nft as check_nft
    from portmapctl.ops.check import nft_repair, nft_repair_flush

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
            text, nft_changed, attachments, nft_left, nft_notes, _ = nft_repair.nft_repair(
                node,
                attachments,
                dry_run=False,
                planned=nft_tried,
                dedupe=nft_copies,
                in_doubt=in_doubt_why(in_doubt, followed),
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
            warnings += nft_repair_flush.flush_routed_after(node, nft_tried[-1][0])
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
                nft_repair_flush.flush_routed_after(node, nft_tried[-1][0])
        raise
    try:
        now = {family: planned.read(family) for family in read.tables}
        if cache is not None and attachments is not None:
            attachments = cache.refreshed(attachments)  # what the plans were made from
        after = in_doubt_left(
            _check_node(node, attachments, replace(read, tables=now)), followed, now
        )
        # Where it made such a chain, it says so, as the check before it and the next
        # check do (it said "nothing is written or removed for it" of what it wrote).
        after = unread_left(after, attachments, now, node_writes(after, attachments, looks))
        if unrepaired and node.namespace_view() is not None:
            # The shared chains' rows that only the containers it left want: left too.
            from portmapctl.ops.check.torn_down import toplevel_fixes

            kept = toplevel_fixes(
                after.problems,
                followed.written(attachments or ()),
                now,
                left=LEFT,
                nft_placed=after.nft_placed,
            )
            after = replace(after, problems=tuple(kept))
        ignored_notes = _key_ignored_notes(key_ignored, followed.where)
        after = replace(after, notes=(*ignored_notes, *after.notes))
    except Interrupted as stop:
        # The repair and its side effects are done; the check after it is not.
        say_repaired(
            stop, bool(planned.attempted or nft_tried), _handed_over(planned, configs, nft_tried)
        )
        raise
    return _repaired(before, after, transactions, warnings, unrepaired)


def in_doubt_why(in_doubt: Sequence[Attachment], judged: Followed) -> Dict[str, str]:
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
    from portmapctl.ops.check import nft_repair_txn

    made = _attempted(planned, configs or [])
    if nft_tried:
        made += nft_repair_txn.nft_changed(*nft_tried[-1])
    return made
