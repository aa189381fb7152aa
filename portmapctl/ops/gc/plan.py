"""A whole gc run planned from one read of the node: every table, then the cache,
liveness from the sources, and per family a FamilyPlan (family.py), with the
nftables side beside it (nft.py). Also re-planning a family whose table changed
(converge_family), since a run that asks nobody applies one family while it plans
the others (plan_gc's apply_early). Apart from apply.py, which applies the plan a
prompt showed, and from family.py, whose plan of a table is pure.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import (
    TYPE_CHECKING,
    Any,
    Dict,
    FrozenSet,
    Iterable,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

from portmapctl.cni import cache as cni_cache
from portmapctl.cni.cache import Attachment, present_dirs, results_dir
from portmapctl.core.pause import gc_paused
from portmapctl.errors import (
    ApplyFailed,
    BadInput,
    HostProblem,
    Interrupted,
    PortmapctlError,
    ToolTimedOut,
)
from portmapctl.host.netns import NamespaceView, addresses_of, fresh_uncached
from portmapctl.host.paths import RUN_DIR
from portmapctl.iptables import plugin_rules
from portmapctl.iptables.ruleset import NatTable
from portmapctl.iptables.transaction import Transaction
from portmapctl.ops.gc import state as gc_state
from portmapctl.ops.gc.family import FamilyPlan, plan_family, settled
from portmapctl.ops.gc.liveness import (
    Liveness,
    Sources,
    ZombieHold,
    empty_cache_refusal,
    held_ids,
    liveness,
    require_namespaces,
    require_source,
    says_nothing,
    zombie_hold,
)
from portmapctl.ops.gc.result import GcChain, Refused
from portmapctl.ops.gc.state import ChainKey
from portmapctl.ops.node import APPLY_TRIES, Node, side_by_side

if TYPE_CHECKING:
    from portmapctl.nftables.ruleset import Ruleset
    from portmapctl.ops.gc.nft import NftPlan

DEFAULT_MIN_AGE = 120.0


@dataclass(frozen=True)
class GcOptions:
    min_age: float = DEFAULT_MIN_AGE
    dry_run: bool = False
    flush_udp: bool = True
    only: Optional[FrozenSet[Tuple[int, str]]] = None  # what a prompt confirmed
    state_dir: str = RUN_DIR


def read_cache_while_planning(
    node: Node, dirs: Sequence[str], warnings: List[str], judge_namespaces: bool = True
) -> List[Attachment]:
    """The cache (cni.cache reads a half-written file again); `dirs` were present at
    the start: one gone since would make its containers look stale. Namespaces are
    judged only for --netns-liveness (judge_namespaces)."""
    return _checked_cache(node.read_cache(judge_namespaces), dirs, warnings)


def _reread_cache(node: Node, planning: Planning) -> Optional[List[Attachment]]:
    """The cache read again for a re-plan (read_cache_while_planning), None where the
    run has none (liveness from other sources)."""
    if not planning.cache_dirs:
        return None
    return read_cache_while_planning(
        node, planning.cache_dirs, planning.warnings, planning.sources.netns_liveness
    )


def _holds_containers(tables: Dict[int, NatTable], nft_rules: Any) -> bool:
    """Whether what was read holds any container's chain or nftables rule."""
    from portmapctl.nftables.node import is_plugin_rule
    from portmapctl.nftables.ruleset import CONTAINER_CHAINS

    return any(plugin_rules.per_container_chains(t) for t in tables.values()) or any(
        is_plugin_rule(rule)
        for table in (nft_rules.tables.values() if nft_rules else ())
        for chain in CONTAINER_CHAINS
        for rule in table.rules_of(chain)
    )


def _checked_cache(
    found: Optional[List[Attachment]], dirs: Sequence[str], warnings: List[str]
) -> List[Attachment]:
    missing = [d for d in dirs if d not in present_dirs(dirs)]
    if found is None or missing:
        gone = ", ".join(results_dir(d) for d in (missing or dirs))
        raise HostProblem(
            f"the CNI cache {gone} disappeared while gc ran: nothing removed from this family"
        )
    for warning in cni_cache.warnings(found, dirs):
        if warning not in warnings:
            warnings.append(warning)
    return found


class Adding(NamedTuple):
    """Young namespaces in no cache entry (see _adding): those holding an address a
    chain may DNAT to, those addresses, and those that could not be looked into."""

    namespaces: List[str]
    addresses: FrozenSet[str]
    unknown: List[str]


def _adding(
    view: Optional[NamespaceView],
    attachments: Optional[Sequence[Attachment]],
    min_age: float,
) -> Adding:
    """Namespaces that look like an ADD in progress (see netns.fresh_uncached).

    A container started again with the ID (and ports, and address) of a chain pending
    as stale gets that very chain back from the plugin, unchanged: nothing in the
    table tells, and its cache entry comes only at the end of the ADD. Its new
    namespace does tell: it is young, in no cache entry, and already holds the
    address the chain DNATs to (the plugins before portmap put it there).

    One that cannot be entered (no CAP_SYS_ADMIN: the shipped DaemonSet and systemd
    units run gc so) may hold any address: `unknown`. Taken for holding none, it let
    the chain of the container being added go.
    """
    if view is None or min_age <= 0:
        return Adding([], frozenset(), [])
    cached = [a.netns for a in attachments or () if a.netns]
    fresh = fresh_uncached(view, cached, min_age)
    if not fresh:
        return Adding([], frozenset(), [])
    found: Dict[str, Set[str]] = {}
    unknown: List[str] = []
    for path, addresses in addresses_of({path: True for path in fresh}).items():
        if addresses is None:
            unknown.append(path)
            continue
        addresses = addresses - {"127.0.0.1", "::1"}
        if addresses:
            found[path] = addresses
    return Adding(
        sorted(found),
        frozenset(a for addresses in found.values() for a in addresses),
        sorted(unknown),
    )


class Applied(NamedTuple):
    """How a family applied ahead went: the plan that went in, or why none did."""

    plan: Optional[FamilyPlan]
    failure: Optional[Union[ApplyFailed, ToolTimedOut]]


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
    # Sightings left the file before a removal (Planning.forget); None: a dry run.
    forgetting: Optional[gc_state.Forgetting] = None
    last_read: Mapping[int, NatTable] = field(default_factory=dict)  # (Planning's)

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
    from portmapctl.ops.gc import nft as gc_nft  # it builds on this module's values

    require_source(sources, node.options.cache_dirs)
    cache_dirs = present_dirs(node.options.cache_dirs)
    use_cache = bool(cache_dirs)
    if sources.netns_liveness and not use_cache:
        raise BadInput("--netns-liveness judges CNI cache entries: there is no CNI cache here")
    view = node.namespace_view()
    namespace = gc_state.namespace_key(node.options.netns)
    warnings: List[str] = []
    families = node.families
    with_nft = node.nft is not None and gc_nft.speaks_for_nft(sources, use_cache)
    nft_families = families if node.nft is not None else ()

    def read() -> Tuple[Dict[int, NatTable], Optional[Ruleset]]:
        if not with_nft:
            return node.read(families), None
        # nft lists (and its modules load) while iptables-save runs, not after it.
        return side_by_side(lambda: node.read(families), node.read_nft_to_change)

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
    # After the tables too: a pod whose ADD finished in between is held (cli says why).
    sources = replace(sources, held=sources.held | held_ids(node.options.cache_dirs))
    # The sightings once the tables are read (a run that may not read them is told
    # that first), before anything is planned or applied: a state file gc refuses
    # (state.py) stops it with nothing changed.
    seen, state_warnings = gc_state.load(options.state_dir, namespace)
    warnings[:0] = state_warnings
    # Sightings of families not looked at this run stay as they are.
    remembered = {
        key: value
        for key, value in seen.items()
        if key.family not in (nft_families if key.nft else families)
    }
    from portmapctl.ops.flavour_guard import chains_elsewhere, unread_backend

    warnings += chains_elsewhere(node.backend, tables, bool(nft_rules and nft_rules.tables))
    if node.options.backend is not None and not _holds_containers(tables, nft_rules):
        unread = unread_backend(node)
        if unread is not None:
            warnings.append(unread.warning("for gc to judge them"))
    if node.nft_unusable is not None:
        # No usable nft under --backend auto: the plugin cannot use nftables here either
        # (it runs nft), so its removal is skipped and iptables' goes on, as check does;
        # unless a cached config says nftables (check: exit 3 too). Sightings stay.
        from portmapctl.ops.check.nft import configured_nft

        configured = configured_nft(attachments)
        if configured:
            raise node.nft_unusable.needed_by(configured)
        warnings += node.nft_unread()
        nft_rules = None
        remembered.update({key: value for key, value in seen.items() if key.nft})
    live = liveness(sources, attachments)  # the same for every family
    unmatched: List[str] = []
    if sources.keep:
        from portmapctl.nftables.node import owners_in
        from portmapctl.ops.gc.liveness import unmatched_keeps

        nft_owners = owners_in(nft_rules) if nft_rules is not None else ()
        unmatched = unmatched_keeps(sources.keep, tables, nft_owners, attachments)
    zombies = zombie_hold(sources, attachments, view)

    nft = None
    if nft_rules is not None:
        # Before any family is planned (and one applied ahead): a refusal (an empty
        # cache) comes before anything is changed.
        nft = gc_nft.plan_nft(
            nft_rules, attachments, sources, options, seen, families, cache_dirs, zombies
        )
    forgetting = (
        None if options.dry_run else gc_state.Forgetting(options.state_dir, namespace, set(seen))
    )
    planning = Planning(sources, options, seen, view, cache_dirs, warnings, forgetting)

    def plan(family: int) -> FamilyPlan:
        return _plan_table(tables[family], attachments, planning, True, live, zombies)

    planned: Dict[int, FamilyPlan] = {}
    applied: Dict[int, Applied] = {}
    if apply_early and len(families) > 1:
        ahead = min(families, key=lambda f: len(tables[f].chains))
        planned[ahead] = plan(ahead)
        if planned[ahead].transaction:
            # Its re-plans (a try refused) warn into a list of their own, merged after.
            ahead_warnings: List[str] = []
            went: List[FamilyPlan] = []

            def apply_ahead() -> Applied:
                try:
                    done = converge_family(
                        node, planned[ahead], replace(planning, warnings=ahead_warnings)
                    )
                except (ApplyFailed, ToolTimedOut) as err:  # (apply_gc raises it)
                    if isinstance(err, HungWentIn):
                        went.append(err.plan)  # (in, by the read after it)
                    return Applied(None, err)
                went.append(done)
                return Applied(done, None)

            try:
                applied[ahead], rest = side_by_side(
                    apply_ahead, lambda: {f: plan(f) for f in families if f != ahead}
                )
            except BaseException as stop:
                if went:
                    # apply_gc's state save is never reached: on file stay the
                    # sightings of the chains just removed, and the same container
                    # started again under its ID would have its chain pass --min-age
                    # at once (as apply_gc's way out, state.forget_all).
                    gc_state.forget_all(options.state_dir)
                if not isinstance(stop, Interrupted):
                    raise
                # SIGTERM or Ctrl-C while the others were planned: what went in ahead
                # has its UDP flows flushed on the way out, as apply_gc does.
                if went and options.flush_udp:
                    from portmapctl.ops.gc.udp import flush_removed

                    flush_removed(node, went, None)
                say_removed(stop, went)
                raise
            planned.update(rest)
            warnings += [w for w in dict.fromkeys(ahead_warnings) if w not in warnings]
    for family in families:
        if family not in planned:
            planned[family] = plan(family)
    plans = tuple(planned[f] for f in families)
    if unmatched and (options.dry_run or _at_stake(plans, nft)):
        # Said where a person looks (a dry run), or where the run removes or waits to
        # remove a chain, which a wrong --keep (a name) may be meant to keep: not on
        # every cron run whose kept container is simply not running now.
        warnings += unmatched
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
        forgetting,
        planning.last_read,
    )


def _at_stake(plans: Sequence[FamilyPlan], nft: Optional[NftPlan]) -> bool:
    """Whether a chain (or a container's nftables rules) is removed or pending."""
    if nft is not None and (nft.removed or nft.pending):
        return True
    return any(p.removed or p.pending for p in plans)


@dataclass(frozen=True)
class Planning:
    """What planning a family takes besides its table, the same for every try."""

    sources: Sources
    options: GcOptions
    seen: Mapping[ChainKey, gc_state.Seen]  # the state file as read
    view: Optional[NamespaceView]
    cache_dirs: Sequence[str]
    warnings: List[str]  # where warnings go (appended to)
    forgetting: Optional[gc_state.Forgetting] = None  # None: a dry run
    # Per family, the table its last try was planned from (converge_family): a refusal
    # on a table still so is no stale plan's (settle_family).
    last_read: Dict[int, NatTable] = field(default_factory=dict)

    def forget(self, removed: Iterable[GcChain]) -> None:
        """Before a transaction removing `removed` goes in: their sightings leave the
        state file (state.forget; the run's own save comes after the removal, and a
        SIGKILL in between left them there). One write for all the chains given; none
        for those already forgotten or never on file."""
        if self.forgetting is not None:
            self.forgetting({chain.key for chain in removed})


def _plan_table(
    table: NatTable,
    attachments: Optional[List[Attachment]],
    planning: Planning,
    by_number: bool,
    live: Optional[Liveness] = None,
    zombies: Optional[ZombieHold] = None,
) -> FamilyPlan:
    """plan_family with what the sources say; `attachments` read after `table`
    (`live`, `zombies`: what they say, when the caller has merged them already)."""
    sources, options, warnings = planning.sources, planning.options, planning.warnings
    if says_nothing(sources, attachments) and plugin_rules.per_container_chains(table):
        raise empty_cache_refusal(
            planning.cache_dirs, "portmap chains", "every per-container chain"
        )
    if attachments is not None and sources.netns_liveness:
        require_namespaces(attachments)
    adding = _adding(planning.view, attachments, options.min_age)
    found = plan_family(
        table,
        live if live is not None else liveness(sources, attachments),
        planning.seen,
        gc_state.clock(),
        options.min_age,
        options.only,
        hold=adding.addresses,
        by_number=by_number,
        zombies=zombies or zombie_hold(sources, attachments, planning.view),
        hold_all=bool(adding.unknown),
    )
    if (adding.addresses or adding.unknown) and any(
        c.seen_seconds >= options.min_age for c in found.pending
    ):
        for warning in _adding_warnings(adding):
            if warning not in warnings:
                warnings.append(warning)
    return found


def _adding_warnings(adding: Adding) -> List[str]:
    """Why ripe chains stay pending this run (_adding)."""

    def named(paths: List[str]) -> str:
        return ", ".join(paths[:3]) + (", ..." if len(paths) > 3 else "")

    warnings = []
    if adding.addresses:
        warnings.append(
            f"a network namespace younger than --min-age and in no CNI cache entry"
            f" ({named(adding.namespaces)}) holds an"
            " address a stale chain DNATs to: its container is being added, so that"
            " chain is not removed this run"
        )
    if adding.unknown:
        warnings.append(
            f"a network namespace younger than --min-age and in no CNI cache entry"
            f" ({named(adding.unknown)}) could not be looked into (entering one needs"
            " CAP_SYS_ADMIN): a container may be being added there with the address of"
            " a stale chain, so no stale chain is removed this run"
        )
    return warnings


def converge_family(node: Node, first: FamilyPlan, planning: Planning) -> FamilyPlan:
    """Apply one family's plan; re-read and re-plan while its table changed meanwhile
    (Node.converge). Returns the plan applied; ApplyFailed after the last try.

    A try whose tool died without saying (killed: ApplyFailed.maybe_applied) is judged
    by the next read: when none of the chains it removes is left, it went in (a
    transaction goes in whole), and it is the plan returned, so that its chains are
    reported and their UDP flows flushed. Planned again on that table instead, they
    would be in no plan: gc would say it removed nothing, and no later run would know
    their ports. One that timed out (errors.ToolTimedOut) still ends gc, not tried
    again, but is judged by a read too: gone in, it is raised as HungWentIn with its
    plan (it said "run again to see", and the run after found nothing to remove: the
    removed chains' UDP flows kept their dead DNAT)."""
    # The first re-plan is the second try; the last try deletes by text: slower
    # on a big chain, but a plugin call elsewhere in CNI-HOSTPORT-DNAT does not
    # make it fail (the guards do, and on a busy node they may every time).
    tries = itertools.count(2)
    unsure: List[Tuple[FamilyPlan, ApplyFailed]] = []
    tried = [first]  # (the last: the plan of the try a timed-out tool was writing)

    def replan(table: NatTable) -> FamilyPlan:
        if unsure:
            went = _went_in(unsure.pop(), table, planning.warnings)
            if went is not None:
                return went
        attachments = _reread_cache(node, planning)
        by_number = next(tries) < APPLY_TRIES
        planning.last_read[table.family] = table
        replanned = _plan_table(table, attachments, planning, by_number)
        planning.forget(replanned.removed)  # (node.converge applies it next)
        tried.append(replanned)
        return replanned

    def tell(plan: FamilyPlan, error: ApplyFailed) -> None:
        unsure.append((plan, error))

    planning.forget(first.removed)
    try:
        return node.converge(
            first.family, replan, planning.options.dry_run, planned=first, unsure=tell
        )
    except ApplyFailed as err:
        if not (err.maybe_applied and unsure):
            raise
        try:
            table = node.backend.read(first.family)
        except PortmapctlError:
            raise err from None  # (unread: the tool's own error says what is known)
        went = _went_in(unsure.pop(), table, planning.warnings)
        if went is None:
            raise
        return went
    except ToolTimedOut as err:
        if not err.maybe_applied:
            raise
        try:
            table = node.backend.read(first.family)
        except PortmapctlError:
            raise err from None
        went = _went_in((tried[-1], err), table, [])  # (HungWentIn's line says it)
        if went is None:
            raise
        raise HungWentIn(err, went) from None


class HungWentIn(ToolTimedOut):
    """A family's try whose tool hung (stopped at its time limit: exit 3, gc ends) and
    that went in, by the read after it: `plan`, as applied, is still reported in the
    line, its chains' UDP flows flushed and their sightings forgotten (apply_gc)."""

    def __init__(self, err: ToolTimedOut, plan: FamilyPlan) -> None:
        count = len(plan.removed)
        super().__init__(
            f"{err}; read again, none of the {count} chain{'s' if count != 1 else ''} it"
            " removes is left: it went in",
            maybe_applied=True,
        )
        self.plan = plan


def refused_outright(error: Optional[Union[ApplyFailed, ToolTimedOut]]) -> bool:
    """Whether a family's failure is iptables refusing its removal (after the tries
    that re-read and re-plan): not a busy lock, not a tool that died or hung (its
    transaction may have gone in)."""
    return (
        isinstance(error, ApplyFailed) and not error.busy and not error.maybe_applied
    )  # fmt: skip


class Settled(NamedTuple):
    """How settle_family went: the plan as applied (None: none of it went in), the
    chains iptables refused tried alone, and, when a try failed otherwise (a busy
    xtables lock, a tool that hung or died: `stop`), the chains left untried."""

    plan: Optional[FamilyPlan]
    refused: List[Refused]
    stop: Optional[Union[ApplyFailed, ToolTimedOut]] = None
    untried: Tuple[GcChain, ...] = ()

    def stopped(self) -> Union[ApplyFailed, ToolTimedOut]:
        """The family's error for a halving `stop` ended: its own kind (a hung tool
        exit 3, as anywhere in gc; a busy lock exit 1), and what it left. Not "refused
        by iptables": the chains it left were never tried alone."""
        assert self.stop is not None
        left = [*self.untried, *(r.chain for r in self.refused)]
        line = (
            f"{self.stop} (trying the chains of a removal iptables refused whole in"
            f" smaller groups: {len(self.plan.removed) if self.plan else 0} removed"
            + (f", not removed: {', '.join(_named(c) for c in left)}" if left else "")
            + "".join(f"; iptables refused {_named(r.chain)} tried alone" for r in self.refused)
            + ")"
        )
        if isinstance(self.stop, ToolTimedOut):
            return ToolTimedOut(line, maybe_applied=self.stop.maybe_applied)
        return ApplyFailed(line, maybe_applied=self.stop.maybe_applied, busy=self.stop.busy)


def _named(chain: GcChain) -> str:
    return f"{chain.chain} (container {chain.container_id or '-'})"


def settle_family(node: Node, first: FamilyPlan, planning: Planning, why: str) -> Settled:
    """`first`'s removal, which iptables refused whole, chain by chain where needed
    (SPEC §5: one bad record never stops the node's work; check --repair's halving,
    ops/check/repair.py): the chains halved until each one refused stands alone, that
    one named (Refused), every other removed. One refused chain among N takes about
    2·log2(N) groups, and each group refused is tried APPLY_TRIES times over
    (converge_family: a refusal is re-read and re-planned), so about
    (APPLY_TRIES + 1)·log2(N) transactions. One stale entry rule whose saved text
    iptables cannot delete (legacy's `-m recent`) failed the family's transaction on
    every try of every run, and no stale chain of the family was removed again. Each
    group is planned from a fresh read, limited to its chains (GcOptions.only), and
    applied as any family is (converge_family).

    Once a try fails otherwise (a busy lock, a tool that died or hung: `stop`) nothing
    more is tried: the chains not removed are `untried`, not refused (iptables never
    refused them alone; the family's error is that failure's, Settled.stopped). A try
    whose tool hung or died may have gone in: judged by the read after it (_went_in;
    converge_family's HungWentIn), it is in the plan as applied, so its chains are reported and their UDP flows
    flushed. No plan when none of it went in (the family fails as before, with `stop`
    if there was one): a table the plugin kept changing, both halves refused (more than
    one chain's fault, or the tool's: one refusing everything is not tried chain by
    chain), or the one chain it removes refused."""
    family = first.family
    went: List[FamilyPlan] = []
    refused: List[Refused] = []
    stop: List[Union[ApplyFailed, ToolTimedOut]] = []
    untried: List[GcChain] = []

    def plan_of(keys: Sequence[ChainKey]) -> Tuple[FamilyPlan, Planning]:
        only = frozenset(tuple(key) for key in keys)
        limited = replace(planning, options=replace(planning.options, only=only))
        table = node.backend.read(family)
        attachments = _reread_cache(node, planning)
        return _plan_table(table, attachments, limited, True), limited

    def attempt(groups: Sequence[GcChain]) -> Optional[str]:
        """The group in one transaction: None once it went in, else why not."""
        if stop:
            return str(stop[0])
        plan, limited = plan_of([chain.key for chain in groups])
        try:
            went.append(converge_family(node, plan, limited))
        except (ApplyFailed, ToolTimedOut) as err:
            if not refused_outright(err):
                stop.append(err)  # (nothing more is tried)
                if isinstance(err, HungWentIn):
                    went.append(err.plan)  # (judged by the read after it: it went in)
                    return None
            return str(err)
        return None

    def settle(groups: Sequence[GcChain], why: str) -> None:
        """`groups`, refused together (`why`), halved until each refused stands alone."""
        if stop:
            untried.extend(groups)
            return
        if len(groups) == 1:
            refused.extend(Refused(chain, why) for chain in groups)
            return
        half = len(groups) // 2
        for part in (groups[:half], groups[half:]):
            failed = attempt(part)
            if failed is not None:
                settle(part, failed)

    # Refused for a stale plan (a busy node: the plugin changed the table before each
    # try) is no chain's fault: only a refusal of a plan made from the table as it
    # still is is halved.
    if node.backend.read(family) != planning.last_read.get(family):
        return Settled(None, [])
    if len(first.removed) == 1:
        return Settled(None, [Refused(first.removed[0], why)])
    half = len(first.removed) // 2
    parts = (first.removed[:half], first.removed[half:])
    failures = [attempt(part) for part in parts]
    if all(failures):
        # Both halves refused: the fault of more than one chain, or the tool's (one
        # that refuses everything would be tried chain by chain): the family fails; or
        # a try failed otherwise, and the family fails with that.
        return Settled(None, [], stop[0] if stop else None, first.removed if stop else ())
    for part, failed in zip(parts, failures):
        if failed is not None:
            settle(part, failed)
    after = node.backend.read(family)
    attachments = _reread_cache(node, planning)
    nothing = replace(planning, options=replace(planning.options, only=frozenset()))
    rest = _plan_table(after, attachments, nothing, True)
    # The chains left untried are left out of `pending` too: the family's error names them.
    apart = {r.chain.key for r in refused} | {chain.key for chain in untried}
    done = settled(went, rest, after, apart)
    return Settled(done, refused, stop[0] if stop else None, tuple(untried))


def _went_in(
    tried: Tuple[FamilyPlan, Union[ApplyFailed, ToolTimedOut]],
    table: NatTable,
    warnings: List[str],
) -> Optional[FamilyPlan]:
    """The plan of a try that may have gone in, as applied, when `table` (read after
    it) has none of the chains it removes; else None."""
    plan, error = tried
    if not plan.removed or any(table.has_chain(chain.chain) for chain in plan.removed):
        return None  # (one left: the transaction, all or nothing, did not go in)
    warnings.append(
        f"IPv{plan.family}: {error}; read again, none of the chains it removes is left: it went in"
    )
    return replace(plan, transaction=Transaction(plan.family))


def say_removed(stop: Interrupted, went: Sequence[Any]) -> None:
    """Put on a Ctrl-C or SIGTERM (Interrupted.after) what of gc's removal had gone in
    by then, or was going in (`went`: the family and nftables plans handed over)."""
    removed = sum(len(plan.removed) for plan in went)
    if removed:
        stop.after = (
            f"the removal of {removed} chain{'s' if removed != 1 else ''} had gone in, or was"
            " going in (`portmapctl gc --dry-run` shows what is left)"
        )
