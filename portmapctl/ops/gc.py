"""`gc`: remove the chains of containers that are not live, safely enough for cron.

What is live comes from any mix of sources (SPEC §3; read and merged in
ops/gc_liveness.py):
- libcni's cache: an attachment (network + container ID) is live, so are its
  CNI-DN-/CNI-SN- chain names;
- a CNI GC `cni.dev/valid-attachments` document: a network config holding the key
  (its `name` gives the network, so the chain names are known exactly) or a bare list
  (container IDs only: matched against the IDs the entry rules' comments name);
- `--keep ID`: an ID, or a prefix of the IDs the comments name.
A chain is matched by its name wherever possible, since a comment cut at 255 bytes
loses the end of a long ID: every (network seen, live ID) pair gives the names its
chains would have.

A network-config document speaks for its own network only: when it is the only kind of
source, chains of other networks (or of no network the comments name) are kept. The
cache, a bare list, `--keep` alone and `--all` speak for every network.

A chain that is not live is removed only once it has been seen not live and unchanged
for `min_age` (gc_state keeps the first sightings): an ADD in progress has its chain
in place before libcni writes the cache entry. `plan_gc` reads the node once (every
table, then the cache) and plans; `apply_gc` applies that plan, per family one
transaction (planner.plan_teardown) through Node.converge, which re-reads and re-plans
a family whose table the plugin changed meanwhile (an interactive run asks in between). Afterwards, the UDP conntrack entries of host
ports no longer mapped go (the plugin's DEL leaves them; their flows would keep a
dead DNAT until idle).
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field, replace
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

from portmapctl.cni import cache as cni_cache
from portmapctl.cni.cache import Attachment, present_dirs, results_dir
from portmapctl.core.pause import gc_paused
from portmapctl.errors import ApplyFailed, BadInput, HostProblem
from portmapctl.host.netns import NamespaceView, fresh_uncached, local_addresses
from portmapctl.host.paths import RUN_DIR
from portmapctl.iptables import inventory
from portmapctl.iptables.chains import OLD_TOPLEVEL_SNAT, is_plugin_chain
from portmapctl.iptables.inventory import ChainFacts
from portmapctl.iptables.planner import plan_teardown
from portmapctl.iptables.ruleset import NatTable
from portmapctl.iptables.shapes import ProtoPort
from portmapctl.iptables.transaction import OpKind, Transaction
from portmapctl.ops import gc_state
from portmapctl.ops.gc_liveness import (  # noqa: F401 - re-exported: gc's public names
    VALID_ATTACHMENTS_KEY,
    AnyChain,
    Liveness,
    Sources,
    ValidAttachments,
    empty_cache_refusal,
    liveness,
    parse_valid_attachments,
    read_valid_attachments,
    require_namespaces,
    require_source,
    says_nothing,
)
from portmapctl.ops.gc_state import ChainKey
from portmapctl.ops.node import APPLY_TRIES, Node, locked, side_by_side

if TYPE_CHECKING:
    from portmapctl.nftables.ruleset import Ruleset
    from portmapctl.ops.gc_nft import NftPlan

DEFAULT_MIN_AGE = 120.0


# --- planning -----------------------------------------------------------------------


# One container's rules in one family of the nftables backend (ops/gc_nft.py), as
# list and check call them (nftables/inventory.py CHAIN_TYPE).
NFT_KIND = "nft-rule"


@dataclass(frozen=True)
class GcChain:
    """A per-container chain gc removes (or would), or waits on (pending); for the
    nftables backend one container's rules in one family (`chain`: the nft chain of
    its DNAT rules, as list and check name it, never the container ID)."""

    chain: str
    family: int
    kind: str  # "dnat" | "legacy-snat" | NFT_KIND
    network: Optional[str]
    container_id: Optional[str]
    host_ports: Tuple[ProtoPort, ...]
    seen_seconds: float

    @property
    def backend(self) -> str:
        """The plugin backend it is in: its kind says (JSON `backend`)."""
        return "nftables" if self.kind == NFT_KIND else "iptables"

    @property
    def key(self) -> ChainKey:
        """What sightings and a prompt's confirmation are keyed by: an nftables
        container's rules have no chain of their own (gc_state.ChainKey)."""
        if self.kind == NFT_KIND:
            return ChainKey(self.family, f"{gc_state.NFT_PREFIX}{self.container_id}")
        return ChainKey(self.family, self.chain)


@dataclass(frozen=True)
class FamilyPlan:
    family: int
    removed: Tuple[GcChain, ...]
    pending: Tuple[GcChain, ...]
    kept: int
    shared_removed: Tuple[str, ...]  # CNI-HOSTPORT-SNAT, once empty
    freed_udp_ports: Tuple[int, ...]  # UDP host ports mapped before, not after
    seen: Mapping[ChainKey, gc_state.Seen]  # every chain not live now, for the state file
    transaction: Transaction
    # UDP host ports of removed chains that another chain still maps, and the UDP
    # mappings left: a flow the removed chain DNATed keeps its dead destination.
    remapped_udp_ports: Tuple[int, ...] = ()
    remaining_udp: Tuple[inventory.Mapping, ...] = ()
    # Every UDP host port the chains left map (the nftables side's removal needs it).
    mapped_udp_ports: FrozenSet[int] = frozenset()


def fingerprint(chain: AnyChain) -> str:
    """The chain's rules and the rules entering it (not their positions: another
    chain's entry rules going away must not restart the clock). Hashed as one text,
    the same bytes 0.2 hashed line by line (so its state file's sightings still hold)."""
    lines = ["R\0" + "\0".join(rule) + "\n" for rule in chain.rules]
    for entry_chain, args in sorted((e.chain, e.args) for e in chain.entries):
        lines.append("E\0" + entry_chain + "\0" + "\0".join(args) + "\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()[:32]


def _gc_chain(chain: ChainFacts, ports: Tuple[ProtoPort, ...], seen_seconds: float) -> GcChain:
    return GcChain(
        chain.name,
        chain.family,
        chain.kind,
        chain.network,
        chain.container_id,
        ports,
        round(max(seen_seconds, 0.0), 1),
    )


def plan_family(
    table: NatTable,
    live: Liveness,
    seen: Mapping[ChainKey, gc_state.Seen],
    now: float,
    min_age: float,
    only: Optional[FrozenSet[Tuple[int, str]]] = None,
    hold: FrozenSet[str] = frozenset(),
    by_number: bool = True,
) -> FamilyPlan:
    """What gc does to one family's table. Pure: the caller reads and applies.

    `seen` is the state file's memory; `only` (confirmed at a prompt) limits what
    may go now; a chain that DNATs to an address in `hold` (a container with that
    address is being added) stays pending, its clock running.
    """
    family = table.family
    chains = inventory.chain_facts(table)
    ports = {chain.name: chain.host_ports for chain in chains}
    derived = live.derived_chains(chains)
    removable: List[ChainFacts] = []
    pending: List[GcChain] = []
    new_seen: Dict[ChainKey, gc_state.Seen] = {}
    kept = 0
    for chain in chains:
        if not is_plugin_chain(chain.name):
            continue  # not the plugin's name: never ours to remove (inventory skips them)
        if live.is_live(chain, derived) or not live.in_scope(chain):
            kept += 1
            continue
        key = ChainKey(family, chain.name)
        mark = fingerprint(chain)
        before = seen.get(key)
        first = before.first_seen if before is not None and before.fingerprint == mark else now
        new_seen[key] = gc_state.Seen(mark, first)
        allowed = only is None or (family, chain.name) in only
        held = bool(hold and chain.container_ips & hold)
        if now - first >= min_age and allowed and not held:
            removable.append(chain)
        else:
            pending.append(_gc_chain(chain, ports[chain.name], now - first))
    entering: Dict[str, List[int]] = {}
    for chain in removable:
        for entry in chain.entries:
            entering.setdefault(entry.chain, []).append(entry.index)
    txn = plan_teardown(table, [c.name for c in removable], by_number, entering)
    gone = {c.name for c in removable}
    still_mapped = _udp_ports(ports, set(ports) - gone)
    freed = _udp_ports(ports, gone) - still_mapped
    remapped = _udp_ports(ports, gone) & still_mapped
    remaining: Tuple[inventory.Mapping, ...] = ()
    if remapped:
        # Only then are the mappings left needed (flush-udp --stale-only's judgement):
        # the whole inventory, statuses and all.
        remaining = tuple(
            m
            for m in inventory.build({family: table}).mappings
            if m.protocol == "udp" and m.chain not in gone
        )
    shared = tuple(
        op.chain
        for op in txn.ops
        if op.kind is OpKind.DELETE_CHAIN and op.chain == OLD_TOPLEVEL_SNAT
    )
    return FamilyPlan(
        family,
        tuple(
            _gc_chain(c, ports[c.name], now - new_seen[ChainKey(family, c.name)].first_seen)
            for c in removable
        ),
        tuple(pending),
        kept,
        shared,
        tuple(sorted(freed)),
        new_seen,
        txn,
        tuple(sorted(remapped)),
        remaining,
        frozenset(still_mapped),
    )


def _udp_ports(ports: Mapping[str, Tuple[ProtoPort, ...]], names: Set[str]) -> Set[int]:
    return {port for name in names for proto, port in ports[name] if proto == "udp"}


# --- running it ---------------------------------------------------------------------


@dataclass(frozen=True)
class GcOptions:
    min_age: float = DEFAULT_MIN_AGE
    dry_run: bool = False
    flush_udp: bool = True
    only: Optional[FrozenSet[Tuple[int, str]]] = None  # what a prompt confirmed
    state_dir: str = RUN_DIR


@dataclass(frozen=True)
class GcResult:
    dry_run: bool
    removed: Tuple[GcChain, ...]
    pending: Tuple[GcChain, ...]
    kept: int
    conntrack_deleted: int
    shared_removed: Tuple[Tuple[int, str], ...] = ()  # (family, CNI-HOSTPORT-SNAT)
    transactions: Dict[int, str] = field(default_factory=dict)
    warnings: Tuple[str, ...] = ()
    state_error: Optional[str] = None  # the state file could not be written

    @property
    def changes(self) -> bool:
        return bool(self.removed or self.shared_removed)


def read_cache_while_planning(
    node: Node, dirs: Sequence[str], warnings: List[str], judge_namespaces: bool = True
) -> List[Attachment]:
    """The cache (cni.cache reads a half-written file again); `dirs` were present at
    the start: one gone since would make its containers look stale. Namespaces are
    judged only for --netns-liveness (judge_namespaces)."""
    return _checked_cache(node.read_cache(judge_namespaces), dirs, warnings)


def _checked_cache(
    found: Optional[List[Attachment]], dirs: Sequence[str], warnings: List[str]
) -> List[Attachment]:
    missing = [d for d in dirs if d not in present_dirs(dirs)]
    if found is None or missing:
        gone = ", ".join(results_dir(d) for d in (missing or dirs))
        raise HostProblem(
            f"the CNI cache {gone} disappeared while gc ran: nothing removed from this family"
        )
    for warning in cni_cache.warnings(found):
        if warning not in warnings:
            warnings.append(warning)
    return found


def _adding(
    view: Optional[NamespaceView],
    attachments: Optional[Sequence[Attachment]],
    min_age: float,
) -> Tuple[List[str], FrozenSet[str]]:
    """Namespaces that look like an ADD in progress (see netns.fresh_uncached).

    A container started again with the ID (and ports, and address) of a chain pending
    as stale gets that very chain back from the plugin, unchanged: nothing in the
    table tells, and its cache entry comes only at the end of the ADD. Its new
    namespace does tell: it is young, in no cache entry, and already holds the
    address the chain DNATs to (the plugins before portmap put it there). Returns
    (those namespaces, their addresses).
    """
    if view is None or min_age <= 0:
        return [], frozenset()
    cached = [a.netns for a in attachments or () if a.netns]
    found: Dict[str, Set[str]] = {}
    for path in fresh_uncached(view, cached, min_age):
        addresses = local_addresses(path) - {"127.0.0.1", "::1"}
        if addresses:
            found[path] = addresses
    return sorted(found), frozenset(a for addresses in found.values() for a in addresses)


class Applied(NamedTuple):
    """How a family applied ahead went: the plan that went in, or why none did."""

    plan: Optional[FamilyPlan]
    failure: Optional[ApplyFailed]


@dataclass(frozen=True)
class GcPlan:
    """A whole run planned from one read of the node (every table, then the cache):
    what a prompt shows, and what `apply_gc` then applies as it is, re-reading and
    re-planning only a family whose table changed meanwhile."""

    sources: Sources
    options: GcOptions
    families: Tuple[FamilyPlan, ...]
    nft: Optional[NftPlan]  # None: nftables not looked at
    seen: Mapping[ChainKey, gc_state.Seen]  # the state file as read
    remembered: Mapping[ChainKey, gc_state.Seen]  # sightings of what is not looked at
    namespace: str
    cache_dirs: Tuple[str, ...]
    view: Optional[NamespaceView]
    warnings: Tuple[str, ...]
    # Families applied while the others were planned (plan_gc's apply_early).
    applied: Mapping[int, Applied] = field(default_factory=dict)

    @property
    def removing(self) -> int:
        """How many chains (and nftables containers per family) it removes."""
        nft = len(self.nft.removed) if self.nft is not None else 0
        return sum(len(p.removed) for p in self.families) + nft


def plan_gc(
    node: Node, sources: Sources, options: GcOptions = GcOptions(), apply_early: bool = False
) -> GcPlan:
    """Read the node once and plan every family; nothing is changed unless
    apply_early.

    apply_early (a run that asks nobody, not a dry run): the family with the smaller
    table is planned first and applied (Node.converge, as apply_gc would) while the
    others are planned: its restore (0.1 s for IPv6 at 5,000 stale of 10,000) then
    costs no time of its own. Each family is still one transaction of its own,
    planned from the tables read first and the cache read after them; apply_gc
    reports it in its place. A failure there is apply_gc's to report, after the
    other families went in as they would have (so the node ends as with the
    families applied in order); only when one of those fails has the family ahead
    gone in where in order it would not have been tried (the message says so).
    """
    with gc_paused(freeze=True):
        return _plan_gc(node, sources, options, apply_early and not options.dry_run)


def _plan_gc(node: Node, sources: Sources, options: GcOptions, apply_early: bool) -> GcPlan:
    from portmapctl.ops import gc_nft  # it builds on this module's values

    require_source(sources, node.options.cache_dirs)
    cache_dirs = present_dirs(node.options.cache_dirs)
    use_cache = bool(cache_dirs)
    if sources.netns_liveness and not use_cache:
        raise BadInput("--netns-liveness judges CNI cache entries: there is no CNI cache here")
    view = node.namespace_view()
    namespace = gc_state.namespace_key(node.options.netns)
    seen, state_warnings = gc_state.load(options.state_dir, namespace)
    warnings = list(state_warnings)
    families = node.families
    with_nft = node.nft is not None and gc_nft.speaks_for_nft(sources, use_cache)
    nft_families = families if node.nft is not None else ()
    # Sightings of families not looked at this run stay as they are.
    remembered = {
        key: value
        for key, value in seen.items()
        if key.family not in (nft_families if key.nft else families)
    }

    def read() -> Tuple[Dict[int, NatTable], Optional[Ruleset]]:
        if not with_nft:
            return node.read(families), None
        # nft lists (and its modules load) while iptables-save runs, not after it.
        return side_by_side(
            lambda: node.read(families), lambda: node.read_nft_to_change(options.dry_run)
        )

    # Every table first, the cache after them: a container whose ADD finished in
    # between counts as live (the other order could miss it).
    attachments: Optional[List[Attachment]] = None
    if use_cache:
        # A cache entry's namespace matters only to --netns-liveness: not looked up
        # otherwise (a stat or two per entry).
        (tables, nft_rules), found = node.read_then_cache(read, sources.netns_liveness)
        attachments = _checked_cache(found, cache_dirs, warnings)
    else:
        tables, nft_rules = read()
    live = liveness(sources, attachments)  # the same for every family

    nft = None
    if nft_rules is not None:
        # Before any family is planned (and one applied ahead): a refusal (an empty
        # cache) comes before anything is changed.
        nft = gc_nft.plan_nft(nft_rules, attachments, sources, options, seen, families, cache_dirs)
    planning = _Planning(sources, options, seen, view, cache_dirs, warnings)

    def plan(family: int) -> FamilyPlan:
        return _plan_table(tables[family], attachments, planning, True, live)

    planned: Dict[int, FamilyPlan] = {}
    applied: Dict[int, Applied] = {}
    if apply_early and len(families) > 1:
        ahead = min(families, key=lambda f: len(tables[f].chains))
        planned[ahead] = plan(ahead)
        if planned[ahead].transaction:
            # Its re-plans (a try refused) warn into a list of their own, merged after.
            ahead_warnings: List[str] = []

            def apply_ahead() -> Applied:
                try:
                    done = _converge_family(
                        node, planned[ahead], replace(planning, warnings=ahead_warnings)
                    )
                except ApplyFailed as err:
                    return Applied(None, err)
                return Applied(done, None)

            applied[ahead], rest = side_by_side(
                apply_ahead, lambda: {f: plan(f) for f in families if f != ahead}
            )
            planned.update(rest)
            warnings += [w for w in dict.fromkeys(ahead_warnings) if w not in warnings]
    for family in families:
        if family not in planned:
            planned[family] = plan(family)
    plans = tuple(planned[f] for f in families)
    return GcPlan(
        sources,
        options,
        plans,
        nft,
        seen,
        remembered,
        namespace,
        cache_dirs,
        view,
        tuple(warnings),
        applied,
    )


@dataclass(frozen=True)
class _Planning:
    """What planning a family takes besides its table, the same for every try."""

    sources: Sources
    options: GcOptions
    seen: Mapping[ChainKey, gc_state.Seen]  # the state file as read
    view: Optional[NamespaceView]
    cache_dirs: Sequence[str]
    warnings: List[str]  # where warnings go (appended to)


def _plan_table(
    table: NatTable,
    attachments: Optional[List[Attachment]],
    planning: _Planning,
    by_number: bool,
    live: Optional[Liveness] = None,
) -> FamilyPlan:
    """plan_family with what the sources say; `attachments` read after `table`
    (`live`: what they say, when the caller has merged them already)."""
    sources, options, warnings = planning.sources, planning.options, planning.warnings
    if says_nothing(sources, attachments) and inventory.per_container_chains(table):
        raise empty_cache_refusal(
            planning.cache_dirs, "portmap chains", "every per-container chain"
        )
    if attachments is not None and sources.netns_liveness:
        require_namespaces(attachments)
    adding, addresses = _adding(planning.view, attachments, options.min_age)
    found = plan_family(
        table,
        live if live is not None else liveness(sources, attachments),
        planning.seen,
        gc_state.clock(),
        options.min_age,
        options.only,
        hold=addresses,
        by_number=by_number,
    )
    if addresses and any(c.seen_seconds >= options.min_age for c in found.pending):
        warning = (
            f"a network namespace younger than --min-age and in no CNI cache entry"
            f" ({', '.join(adding[:3])}{', ...' if len(adding) > 3 else ''}) holds an"
            " address a stale chain DNATs to: its container is being added, so that"
            " chain is not removed this run"
        )
        if warning not in warnings:
            warnings.append(warning)
    return found


def _converge_family(node: Node, first: FamilyPlan, planning: _Planning) -> FamilyPlan:
    """Apply one family's plan; re-read and re-plan while its table changed meanwhile
    (Node.converge). Returns the plan applied; ApplyFailed after the last try."""
    # The first re-plan is the second try; the last try deletes by text: slower
    # on a big chain, but a plugin call elsewhere in CNI-HOSTPORT-DNAT does not
    # make it fail (the guards do, and on a busy node they may every time).
    tries = itertools.count(2)

    def replan(table: NatTable) -> FamilyPlan:
        attachments = (
            read_cache_while_planning(
                node, planning.cache_dirs, planning.warnings, planning.sources.netns_liveness
            )
            if planning.cache_dirs
            else None
        )
        by_number = next(tries) < APPLY_TRIES
        return _plan_table(table, attachments, planning, by_number)

    return node.converge(first.family, replan, planning.options.dry_run, planned=first)


def _family_failure(
    family: int, err: ApplyFailed, plans: Sequence[FamilyPlan], planned: GcPlan
) -> ApplyFailed:
    """The one error line of a family that failed, with what the others removed."""
    order = [p.family for p in planned.families]
    earlier = set(order[: order.index(family)])
    before = sum(len(p.removed) for p in plans if p.family in earlier)
    # Later in the order, yet applied: ahead of the others (plan_gc's apply_early).
    ahead = [p for p in plans if p.family not in earlier]
    return ApplyFailed(
        f"IPv{family}: {err}"
        + (f" (earlier families: {before} chains removed)" if before else "")
        + "".join(
            f" (IPv{p.family} was applied ahead of it: {len(p.removed)} chains removed)"
            for p in ahead
            if p.removed
        )
    )


# Called after each transaction with (chains removed so far, chains planned in all).
Progress = Callable[[int, int], None]


def apply_gc(node: Node, planned: GcPlan, progress: Optional[Progress] = None) -> GcResult:
    """Apply the plan (unless a dry run) family by family, record the sightings, and
    flush the UDP conntrack entries of the ports unmapped. A family whose table
    changed since it was read is read again (the cache after it) and re-planned.
    `progress(done, total)` (a progress bar): called before the first transaction and
    after each family's."""
    with gc_paused(freeze=True):
        return _apply_gc(node, planned, progress)


def _apply_gc(node: Node, planned: GcPlan, progress: Optional[Progress]) -> GcResult:
    from portmapctl.ops import gc_nft

    total = planned.removing
    if progress is not None:
        progress(0, total)

    options, sources = planned.options, planned.sources
    warnings = list(planned.warnings)
    remembered: Dict[ChainKey, gc_state.Seen] = dict(planned.remembered)
    plans: List[FamilyPlan] = []
    transactions: Dict[int, str] = {}
    failure: Optional[ApplyFailed] = None
    failed_family = 0
    planning = _Planning(sources, options, planned.seen, planned.view, planned.cache_dirs, warnings)
    for first in planned.families:
        family = first.family
        ahead = planned.applied.get(family)
        done: Optional[FamilyPlan] = None
        error: Optional[ApplyFailed] = None
        if ahead is not None:
            done, error = ahead.plan, ahead.failure
        elif failure is not None:
            continue  # after a family failed, the later ones are not tried
        else:
            try:
                done = _converge_family(node, first, planning)
            except ApplyFailed as err:
                error = err
        if done is None:
            if failure is None:
                failure, failed_family = error, family
            remembered.update(first.seen)  # nothing went: remember all of it
            continue
        plans.append(done)
        if progress is not None:
            progress(sum(len(p.removed) for p in plans), total)
        if done.transaction and options.dry_run:
            transactions[family] = done.transaction.render()  # shown with -v
        remembered.update(done.seen)
        if not options.dry_run:
            for chain in done.removed:
                remembered.pop(ChainKey(family, chain.chain), None)
    if failure is not None:
        failure = _family_failure(failed_family, failure, plans, planned)
    nft_removed: List[GcChain] = []
    nft_pending: List[GcChain] = []
    nft_kept = 0
    nft_done: Optional[NftPlan] = None
    if failure is None and planned.nft is not None:
        try:
            text, nft_done = gc_nft.apply_nft(
                node, planned.nft, sources, options, planned.seen, planned.cache_dirs, warnings
            )
        except ApplyFailed as err:
            failure = ApplyFailed(f"nftables: {err}")
        else:
            nft_removed, nft_pending = nft_done.removed, nft_done.pending
            if progress is not None:
                progress(sum(len(p.removed) for p in plans) + len(nft_removed), total)
            nft_kept = nft_done.kept
            remembered.update(nft_done.seen)
            if not options.dry_run:
                for chain in nft_removed:
                    remembered.pop(chain.key, None)
            if text and options.dry_run:
                transactions["nft"] = text  # type: ignore[index]
    # Every run records its sightings, a dry run (and gc's interactive preview) too:
    # otherwise --min-age would never start counting for someone who looks first.
    state_error: Optional[str] = None
    try:
        if options.dry_run:
            # Read without the lock (a dry run writes no rules; the preview waits on
            # a person): a gc may have saved since, so only this run's changes go in.
            with locked(node):
                gc_state.save(options.state_dir, planned.namespace, remembered, planned.seen)
        else:
            # Under the lock, but the plan may be older than the lock (gc read it
            # before asking): only this run's changes go in, as for the preview.
            gc_state.save(options.state_dir, planned.namespace, remembered, planned.seen)
    except HostProblem as err:
        if options.dry_run:
            warnings.append(f"sightings not recorded: {err}")
        else:
            # /run full or read-only: the chains are gone already.
            # What was done is still reported and the conntrack flush still runs; the
            # caller ends with this as the one error line (exit 3). Not remembering the
            # sightings only makes later runs wait --min-age again: nothing unsafe.
            state_error = str(err)
    nft_mapped = nft_done.mapped if nft_done is not None else _unread_nft_udp(node, plans)
    work, shared_ports = _udp_work(plans, nft_mapped, nft_done)
    deleted, flush_warnings = 0, ()
    if not options.dry_run and options.flush_udp and (work or shared_ports):
        # Also when a later family failed: what went in the others went for good.
        deleted, flush_warnings = flush_udp_after(work)
        if shared_ports:
            more, more_warnings = _flush_shared(node, shared_ports)
            deleted += more
            flush_warnings += more_warnings
    if failure is not None:
        raise failure
    return GcResult(
        options.dry_run,
        tuple(c for p in plans for c in p.removed) + tuple(nft_removed),
        tuple(c for p in plans for c in p.pending) + tuple(nft_pending),
        sum(p.kept for p in plans) + nft_kept,
        deleted,
        tuple((p.family, name) for p in plans for name in p.shared_removed),
        transactions,
        tuple(warnings) + flush_warnings,
        state_error,
    )


def gc(
    node: Node,
    sources: Sources,
    options: GcOptions = GcOptions(),
    progress: Optional[Progress] = None,
) -> GcResult:
    """Plan and (unless a dry run) apply the removal, family by family (the smaller
    table's applied while the others are planned: plan_gc's apply_early)."""
    return apply_gc(node, plan_gc(node, sources, options, apply_early=True), progress)


def _unread_nft_udp(node: Node, plans: Sequence[FamilyPlan]) -> Dict[int, Set[int]]:
    """The UDP host ports the plugin's nftables rules map where gc did not look at
    nftables (--backend iptables): read only when the removal touched a UDP port, so
    that a port freed in iptables but mapped by a live nftables container keeps that
    container's flows."""
    if not any(p.freed_udp_ports or p.remapped_udp_ports for p in plans):
        return {}
    live = node.read_nft_evidence()
    if not live.tables:
        return {}
    from portmapctl.ops.gc_nft import nft_udp_ports

    return nft_udp_ports(live, set())


def _udp_work(
    plans: Sequence[FamilyPlan],
    nft_mapped: Mapping[int, Set[int]],
    nft_done: Optional[NftPlan],
) -> Tuple[List[FamilyPlan], Dict[int, Set[int]]]:
    """The UDP host ports the removal touched, split by how their flows are judged:
    the plans flush_udp_after takes (ports nothing maps any more in either backend:
    every flow; ports only iptables chains still map: the misrouting ones, judged by
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
                # No rule of either backend maps them: every flow goes (no chain needed).
                work.append(FamilyPlan(family, (), (), 0, (), freed, {}, Transaction(family)))
    return work, shared


def _flush_shared(node: Node, ports: Dict[int, Set[int]]) -> Tuple[int, Tuple[str, ...]]:
    """The misrouting flows (flush-udp --stale-only) of ports the removal left mapped
    by a container of either backend, judged by both backends' mappings as they are
    now (read again: a rare case, a port shared across backends or in nftables)."""
    from portmapctl.ops import flush_udp as flushing

    try:
        mappings = flushing.node_mappings(node, node.read(), None)
        deleted = sum(
            flushing.flush_ports((family,), sorted(found), keep=mappings)
            for family, found in sorted(ports.items())
        )
    except Exception as err:  # noqa: BLE001 - reported, never fatal after the removal
        shown = ", ".join(f"{p}/v{f}" for f, found in sorted(ports.items()) for p in sorted(found))
        return 0, (f"could not flush the misrouting UDP conntrack entries of {shown}: {err}",)
    return deleted, ()


def flush_udp_after(plans: Sequence[FamilyPlan]) -> Tuple[int, Tuple[str, ...]]:
    """Delete the UDP conntrack entries the removal left pointing nowhere, per family:
    every flow to a host port no chain maps any more, and the misrouting ones (as
    `flush-udp --stale-only`) of a removed chain's port that another chain still maps
    (the removed chain, entered first, had taken the flow to its dead container).
    Only flows to the node's own addresses: a forwarded flow met no mapping.

    The chains are gone by now, so a failure here is a warning (as in the plugin's
    ADD), not a failed gc: the entries expire when their flows go idle.
    """
    from portmapctl.host import conntrack  # imported only when there is work
    from portmapctl.host.addresses import local_addresses
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
            doomed = flushing.plan(entries, freed, (), local=local)
            doomed += flushing.plan(
                entries, remapped, plan.remaining_udp, stale_only=True, local=local
            )
            deleted += conntrack.delete([d.entry for d in doomed])
        except Exception as err:  # noqa: BLE001 - reported, never fatal after the removal
            shown = ",".join(str(p) for p in family_ports[:10])
            more = "..." if len(family_ports) > 10 else ""
            warnings.append(
                f"could not flush IPv{family} UDP conntrack entries for ports {shown}{more}: {err}"
            )
    return deleted, tuple(warnings)
