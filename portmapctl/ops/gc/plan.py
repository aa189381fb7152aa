"""A whole gc run planned from one read of the node: every table, then the cache,
liveness from the sources, and per family a FamilyPlan (family.py, by way of
planning.py), with the nftables side beside it (nft.py). A run that asks nobody
applies one family (converge.py) while it plans the others (plan_gc's apply_early).
Apart from apply.py, which applies the plan a prompt showed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import (
    TYPE_CHECKING,
    Any,
    Dict,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from portmapctl.cni.cache import Attachment, present_dirs
from portmapctl.core.pause import gc_paused
from portmapctl.errors import ApplyFailed, BadInput, HostProblem, Interrupted
from portmapctl.host.netns import NamespaceView
from portmapctl.iptables import plugin_rules
from portmapctl.iptables.ruleset import NatTable
from portmapctl.ops.gc import state as gc_state
from portmapctl.ops.gc.converge import HungWentIn, converge_family
from portmapctl.ops.gc.family import FamilyPlan
from portmapctl.ops.gc.liveness import Sources, held_ids, liveness, require_source, zombie_hold
from portmapctl.ops.gc.planning import GcOptions, Planning, checked_cache, plan_table
from portmapctl.ops.gc.state import ChainKey
from portmapctl.ops.node import Node, side_by_side

if TYPE_CHECKING:
    from portmapctl.nftables.ruleset import Ruleset
    from portmapctl.ops.gc.nft import NftPlan


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


class Applied(NamedTuple):
    """How a family applied ahead went: the plan that went in, or why none did."""

    plan: Optional[FamilyPlan]
    failure: Optional[Union[ApplyFailed, HostProblem]]  # (a timeout, a failed read: exit 3)
    # A re-plan's cache read refused as bad input (emptied after a try refused): none of
    # it went in, and apply_gc raises it after writing the sightings back (exit 2).
    bad_input: Optional[BadInput] = None


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
    # (family, container) pairs of nftables rules kept unjudged (`nft` None: the sources
    # speak for none of them), counted in the result's `kept`.
    nft_unjudged: int = 0

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
    speaks_nft = gc_nft.speaks_for_nft(sources, use_cache)
    # Read also where the sources speak for none of its rules: its containers are kept
    # and counted so (as another network's iptables chains are), and a --keep may name
    # one (taken for no container on the node, it was warned of).
    with_nft = node.nft is not None
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
        attachments = checked_cache(found, cache_dirs, warnings)
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
    from portmapctl.ops.flavour_guard import chains_elsewhere, flavours_of, unread_backend

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
        nft_rules = None
        remembered.update({key: value for key, value in seen.items() if key.nft})
    # (Also the chains of the plugin's tables that are not its own and could not be
    # read: left alone, the rest removed as ever.)
    warnings += node.nft_unread()
    live = liveness(sources, attachments)  # the same for every family
    unmatched: List[str] = []
    if sources.keep:
        from portmapctl.nftables.node import owners_in
        from portmapctl.ops.gc.liveness import unmatched_keeps

        nft_owners = owners_in(nft_rules) if nft_rules is not None else ()
        unmatched = unmatched_keeps(sources.keep, tables, nft_owners, attachments)
    zombies = zombie_hold(sources, attachments, view)

    if not speaks_nft:
        # Documents of one network judge no nftables rule: their sightings stay as
        # they were, as an unjudged iptables chain's do (plan_family); dropped, the
        # next run that judged them began their --min-age anew. A container --keep
        # names is live: its sighting goes, as wherever a run sees one live.
        kept_ids = tuple(sources.keep)
        remembered.update(
            {
                key: value
                for key, value in seen.items()
                if key.nft
                and not (kept_ids and key.chain[len(gc_state.NFT_PREFIX) :].startswith(kept_ids))
            }
        )
    # Kept unjudged (documents of one network alone): every container with rules here.
    nft_unjudged = (
        len(gc_nft.owner_pairs(nft_rules, families))
        if nft_rules is not None and not speaks_nft
        else 0
    )
    nft = None
    if nft_rules is not None and speaks_nft:
        # Before any family is planned (and one applied ahead): a refusal (an empty
        # cache) comes before anything is changed.
        nft = gc_nft.plan_nft(
            nft_rules, attachments, sources, options, seen, families, cache_dirs, zombies
        )
    forgetting = (
        None if options.dry_run else gc_state.Forgetting(options.state_dir, namespace, set(seen))
    )
    planning = Planning(
        sources, options, seen, view, cache_dirs, warnings, forgetting,
        flavours=flavours_of(node.backend, families) or {},
    )  # fmt: skip

    def plan(family: int) -> FamilyPlan:
        return plan_table(tables[family], attachments, planning, True, live, zombies)

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
                except (ApplyFailed, HostProblem) as err:  # (apply_gc raises it)
                    # (HostProblem: a read before a re-plan that failed, not only one
                    # that hung; it escaped as the bare line, the other families untried.)
                    if isinstance(err, HungWentIn):
                        went.append(err.plan)  # (in, by the read after it)
                    return Applied(None, err)
                except BadInput as bad:
                    # Escaped bare, past apply_gc's save: the sightings its first try
                    # forgot were lost (each chain waited --min-age afresh).
                    return Applied(None, HostProblem(str(bad)), bad)
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
        nft_unjudged,
    )


def _at_stake(plans: Sequence[FamilyPlan], nft: Optional[NftPlan]) -> bool:
    """Whether a chain (or a container's nftables rules) is removed or pending."""
    if nft is not None and (nft.removed or nft.pending):
        return True
    return any(p.removed or p.pending for p in plans)


def say_removed(stop: Interrupted, went: Sequence[Any]) -> None:
    """Put on a Ctrl-C or SIGTERM (Interrupted.after) what of gc's removal had gone in
    by then, or was going in (`went`: the family and nftables plans handed over)."""
    removed = sum(len(plan.removed) for plan in went)
    if removed:
        stop.after = (
            f"the removal of {removed} chain{'s' if removed != 1 else ''} had gone in, or was"
            " going in (`portmapctl gc --dry-run` shows what is left)"
        )
