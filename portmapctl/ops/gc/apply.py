"""Applying a gc plan: per family one transaction through Node.converge (a family
applied ahead by plan_gc reported in its place), then the nftables side, the
sightings saved for --min-age, and the UDP conntrack flush after (udp.py); the
GcResult, or the one error line of a family that failed. Apart from plan.py: an
interactive gc plans, asks, then plans again (limited to what was shown) and applies
that.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Set, Union

from portmapctl.core.pause import gc_paused
from portmapctl.core.text import name_text
from portmapctl.errors import ApplyFailed, BadInput, HostProblem, Interrupted, ToolTimedOut
from portmapctl.ops.gc import state as gc_state
from portmapctl.ops.gc.converge import (
    HungWentIn,
    Settled,
    converge_family,
    refused_outright,
    settle_family,
)
from portmapctl.ops.gc.family import FamilyPlan
from portmapctl.ops.gc.liveness import Sources
from portmapctl.ops.gc.plan import GcPlan, plan_gc, say_removed
from portmapctl.ops.gc.planning import GcOptions, Planning
from portmapctl.ops.gc.result import GcChain, GcResult, Refused
from portmapctl.ops.gc.state import ChainKey
from portmapctl.ops.gc.udp import flush_removed
from portmapctl.ops.node import Node, locked

if TYPE_CHECKING:
    from portmapctl.ops.gc.nft import NftPlan


# (A timed-out tool, a failed read: HostProblem, exit 3, not tried again.)
Failure = Union[ApplyFailed, HostProblem]


def _family_failure(
    family: int, err: Failure, plans: Sequence[FamilyPlan], planned: GcPlan
) -> Failure:
    """The one error line of a family that failed, with what the others removed."""
    order = [p.family for p in planned.families]
    earlier = set(order[: order.index(family)])
    before = sum(len(p.removed) for p in plans if p.family in earlier)
    # Later in the order, yet applied: ahead of the others (plan_gc's apply_early). (The
    # family itself may be among plans: part of it went in before it failed, which its
    # error says: Settled.stopped.)
    ahead = [p for p in plans if p.family not in earlier and p.family != family]
    line = (
        f"IPv{family}: {err}"
        + (f" (earlier families: {_chains(before)} removed)" if before else "")
        + "".join(
            f" (IPv{p.family} was applied ahead of it: {_chains(len(p.removed))} removed)"
            for p in ahead
            if p.removed
        )
    )
    if isinstance(err, ToolTimedOut):
        return ToolTimedOut(line, maybe_applied=err.maybe_applied)
    if isinstance(err, HostProblem):
        # (exit 3: a halving's read that failed; was exit 1)
        return HostProblem(line, maybe_applied=err.maybe_applied)
    return ApplyFailed(line)


def _removed_before(plans: Sequence[FamilyPlan], planned: GcPlan) -> bool:
    """Whether some of the run went in already: a family before this one, or one
    applied ahead of the others (plan_gc's apply_early)."""
    ahead = (a.plan for a in planned.applied.values() if a.plan is not None)
    return any(p.removed for p in plans) or any(p.removed for p in ahead)


def _after_iptables(err: Failure, plans: Sequence[FamilyPlan]) -> Failure:
    """The nftables side's error line, with what the iptables families removed before
    it (gone, flushed and recorded): it said nothing of them, as if nothing went."""
    removed = sum(len(p.removed) for p in plans)
    if not removed:
        return err
    return _reworded(err, f"{err} (iptables, applied before it: {_chains(removed)} removed)")


def _unrecorded(err: Failure, state_error: Optional[str]) -> Failure:
    """A failed run's line, with the state file it could not write: said nowhere else
    (the CLI raises the failure, not _not_recorded's line), while the file was removed
    (every stale chain waits --min-age again) and the document shown above it reads as
    a run whose sightings were saved."""
    if state_error is None:
        return err
    line = f"{err} (and could not record the chains still pending: {state_error})"
    if isinstance(err, HostProblem):
        return _reworded(err, line)
    # A refusal (exit 1) with it ends as any run whose save failed ends: exit 3, the
    # environment (the CLI says _not_recorded's line before _refused's).
    return HostProblem(line, maybe_applied=err.maybe_applied)


def _reworded(err: Failure, line: str) -> Failure:
    """`err` saying `line`: its class (the exit code) and maybe_applied kept."""
    if isinstance(err, ToolTimedOut):
        return ToolTimedOut(line, maybe_applied=err.maybe_applied)
    if isinstance(err, HostProblem):
        return HostProblem(line, maybe_applied=err.maybe_applied)
    return ApplyFailed(line, maybe_applied=err.maybe_applied)


def _chains(count: int) -> str:
    return f"{count} chain{'' if count == 1 else 's'}"  # ("1 chains removed" before)


# Called after each transaction with (chains removed so far, chains planned in all).
Progress = Callable[[int, int], None]


def apply_gc(
    node: Node,
    planned: GcPlan,
    progress: Optional[Progress] = None,
    before_lock: Optional[Callable[[], None]] = None,
) -> GcResult:
    """Apply the plan (unless a dry run) family by family, record the sightings, and
    flush the UDP conntrack entries of the ports unmapped. A family whose table
    changed since it was read is read again (the cache after it) and re-planned.
    `progress(done, total)` (a progress bar): called before the first transaction and
    after each family's. `before_lock`: called when a dry run, its plan made, is about
    to take the lock to record its sightings (it may wait there, and say so on
    stderr): the caller ends its progress bar, so the waiting line shows alone."""
    with gc_paused(freeze=True):
        return _apply_gc(node, planned, progress, before_lock)


def _apply_gc(
    node: Node,
    planned: GcPlan,
    progress: Optional[Progress],
    before_lock: Optional[Callable[[], None]] = None,
) -> GcResult:
    went: List[FamilyPlan] = []
    nft_went: List[NftPlan] = []
    saved: List[bool] = []  # [True] once the state file says what this run did
    try:
        return _apply_gc_to(node, planned, progress, went, nft_went, saved, before_lock)
    except Interrupted as stop:
        # SIGTERM or Ctrl-C once some removal went in: its UDP flows are flushed on the
        # way out (again, if the flush was under way), or they keep the dead DNAT and
        # no later gc knows their ports (it finds nothing to remove).
        if planned.options.flush_udp and (went or nft_went):
            flush_removed(node, went, nft_went[0] if nft_went else None)
        if (went or nft_went) and not saved:
            # The state save is not reached (or was cut short): on file stay the
            # sightings of the chains just removed, and the same container started
            # again under its ID would have its chain pass --min-age at once.
            gc_state.forget_all(planned.options.state_dir)
        say_removed(stop, [*went, *nft_went])
        raise


def _apply_gc_to(
    node: Node,
    planned: GcPlan,
    progress: Optional[Progress],
    went: List[FamilyPlan],
    nft_went: List[NftPlan],
    saved: List[bool],
    before_lock: Optional[Callable[[], None]] = None,
) -> GcResult:
    """_apply_gc's work; `went` and `nft_went` get each removal as it goes in, `saved`
    True once the state file is saved."""
    from portmapctl.ops.flavour_guard import flavours_of
    from portmapctl.ops.gc import nft as gc_nft  # loaded only when a run applies, as in plan.py

    total = planned.removing
    if progress is not None:
        progress(0, total)

    options, sources = planned.options, planned.sources
    warnings = list(planned.warnings)
    remembered: Dict[ChainKey, gc_state.Seen] = dict(planned.remembered)
    plans: List[FamilyPlan] = []
    transactions: Dict[int, str] = {}
    failure: Optional[Failure] = None
    failed_family = 0
    refused: List[Refused] = []
    # A halving's cache read refused as bad input before anything of the run went in;
    # or a re-plan's of the family applied ahead (then no other family is tried).
    bad_input: Optional[BadInput] = next(
        (a.bad_input for a in planned.applied.values() if a.bad_input is not None), None
    )
    bad_ahead = bad_input is not None
    forgetting = None if options.dry_run else planned.forgetting
    # Sightings forgotten before a removal that did not remove their chains (refused,
    # nothing changed): written back by the save, or every refused run made the
    # family's chains wait --min-age afresh and only one run in each said it failed.
    unremoved: Set[ChainKey] = set()
    planning = Planning(
        sources, options, planned.seen, planned.view, planned.cache_dirs, warnings, forgetting,
        dict(planned.last_read), flavours_of(node.backend, node.families) or {},
    )  # fmt: skip
    # Every removal's sightings leave the state file before the first goes in, in one
    # write (Planning.forget; a family's re-plan forgets what it adds, if anything).
    if not bad_ahead:
        planning.forget(
            [
                *(
                    c
                    for p in planned.families
                    if p.family not in planned.applied
                    for c in p.removed
                ),
                *(planned.nft.removed if planned.nft is not None else ()),
            ]
        )
    for first in planned.families:
        family = first.family
        ahead = planned.applied.get(family)
        done: Optional[FamilyPlan] = None
        error: Optional[Failure] = None
        if ahead is not None:
            done, error = ahead.plan, ahead.failure
        elif bad_ahead:
            # Not tried: the cache the family applied ahead met is empty now. Its
            # sightings stay (written back below, as a family's that did not go in).
            error = HostProblem(str(bad_input))
        elif failure is not None:
            # After a family failed, the later ones are not tried. Their sightings left
            # the file before the first removal (Planning.forget): written back, as a
            # refused family's below, or each of their chains waited --min-age afresh.
            remembered.update(first.seen)
            if forgetting is not None:
                unremoved.update(first.seen)
            continue
        else:
            if not options.dry_run:
                went.append(first)  # until it returns: in already, maybe (SIGTERM now)
            try:
                done = converge_family(node, first, planning)
            except (ApplyFailed, HostProblem) as err:
                # A timed-out tool, or a read that failed before a re-plan (iptables-
                # save's own error), as a failure: no later family is tried, and what
                # the others removed is still recorded and flushed (a failed read went
                # past here, the family applied ahead unsaid, its flows kept).
                error = err
            except BadInput as bad:
                # A re-plan's cache read refused (emptied, or its results/ made a file,
                # after a try refused): no try of this family went in (a killed one is
                # judged by the read before it). Escaped bare, it said "nothing
                # changed" (exit 2) after a family applied ahead went in, unreported,
                # and the sightings forgotten before the first try were lost. As the
                # halving's below: the bad input after the save, or a failure after work.
                if not _removed_before(plans, planned):
                    bad_input = bad
                error = HostProblem(str(bad))
            if not options.dry_run:
                went.pop()
        if isinstance(error, HungWentIn):
            # Its tool hung, yet the read after it found its removal in: the family's
            # error ends the run (exit 3), and what went in is recorded and flushed,
            # or no later run knew its ports (it found nothing to remove).
            done = error.plan
            if failure is None:
                failure, failed_family = error, family
        if done is None and not options.dry_run and first.removed and refused_outright(error):
            # Refused whole (not for a stale plan: the tries re-read and re-planned):
            # the chains at fault are found and named, the others removed.
            went.append(first)  # (its chains go in group by group: SIGTERM now)
            try:
                halved = settle_family(node, first, planning, str(error))
            except BadInput as bad:
                # Met before any group went in: with nothing removed anywhere, the bad
                # input it is (exit 2, nothing changed); else a failure after work.
                # Raised after the save below: the sightings forgotten before the first
                # try are written back (raised here, they were lost: --min-age afresh).
                if not _removed_before(plans, planned):
                    bad_input = bad
                # (None of this family went in: every chain of it left untried.)
                halved = Settled(None, [], HostProblem(str(bad)), first.removed)
            went.pop()
            done, refused_here = halved.plan, halved.refused
            if done is not None:
                refused += refused_here
                # (done.seen: chains the table still holds after the groups went in.)
                unremoved.update(done.seen)
                if halved.stop is not None and failure is None:
                    # A busy lock or a hung tool stopped the halving: what went in is
                    # reported below (recorded, flushed), the family fails with that
                    # error (no later family is tried), not as refused by iptables.
                    failure, failed_family = halved.stopped(), family
            elif halved.stop is not None:
                error = halved.stopped()
            elif refused_here:
                # The one chain it removes: named in the family's line.
                error = ApplyFailed(
                    f"{error} (iptables refuses the removal of {refused_here[0].chain.chain},"
                    f" container {name_text(refused_here[0].chain.container_id or '-')}, tried alone)"
                )
        if done is None:
            if failure is None:
                failure, failed_family = error, family
            if not (error is not None and error.maybe_applied):
                remembered.update(first.seen)  # nothing went: remember all of it
                if forgetting is not None:  # (a real run: under the lock since its read)
                    unremoved.update(first.seen)
            # Else its write may have gone in (a tool killed or timed out after its
            # commit): the family's sightings are forgotten, as a removal forgets them.
            # Kept, the old sighting of a removed chain let the same container's chain,
            # made again under its ID, pass --min-age at once during its next ADD.
            continue
        plans.append(done)
        if not options.dry_run:
            went.append(done)
        if progress is not None:
            progress(sum(len(p.removed) for p in plans), total)
        if done.transaction and options.dry_run:
            transactions[family] = done.transaction.render()  # shown with -v
        remembered.update(done.seen)
        if forgetting is not None:
            # The chains the last try left for a later run (family._by_text): the tries
            # before it forgot their sightings (they were to go), and none removed them.
            # Not written back, their --min-age started over at every such run.
            unremoved.update(done.left)
            for chain in (c for c in done.pending if c.key in done.left):
                # Past --min-age, yet a pending row ("removable in 1s") with nothing
                # said, and on a node that stays busy every run leaves it so.
                warnings.append(
                    f"IPv{family}: {chain.chain} (container {name_text(chain.container_id or '-')}) is"
                    " left for a later run, though past --min-age: a rule entering it has"
                    " control characters in its comment (another tool's), so it goes by"
                    " number, behind a guard the plugin's calls on this busy node failed"
                    " at every try"
                )
        if not options.dry_run:
            for chain in done.removed:
                remembered.pop(ChainKey(family, chain.chain), None)
    if failure is not None:
        failure = _family_failure(failed_family, failure, plans, planned)
    nft_removed: List[GcChain] = []
    nft_pending: List[GcChain] = []
    nft_kept = planned.nft_unjudged
    nft_done: Optional[NftPlan] = None
    # The nftables plan when none of it went in (refused whole, or not tried after a
    # family failed): its sightings stay as they were, as a refused family's above.
    nft_unapplied: Optional[NftPlan] = planned.nft if failure is not None else None
    if failure is None and planned.nft is not None:
        if not options.dry_run:
            nft_went.append(planned.nft)  # as a family's plan above
        try:
            text, nft_done = gc_nft.apply_nft(
                node, planned.nft, sources, options, planned.seen, planned.cache_dirs, warnings,
                planning.forget,
            )  # fmt: skip
        except ApplyFailed as err:
            failure = ApplyFailed(f"nftables: {err}")
            nft_went.clear()
            if not err.maybe_applied:
                nft_unapplied = planned.nft  # refused whole: nothing went
        except BadInput as err:
            # Refused before any of it went in: the cache read again to re-plan (a
            # table its read cannot parse is a HostProblem, below), nft refusing the
            # text. Once the iptables side removed chains that is no "bad input,
            # nothing changed" (exit 2, a bare line): it ended the run with their
            # removal unreported, their UDP flows kept, no sighting saved. It ends as
            # a failed nftables side does. With nothing removed anywhere it is the bad
            # input (exit 2), raised after the save below: raised here, the sightings
            # of the rules it was to remove, forgotten before its first try, were lost
            # (each waited --min-age afresh), as the iptables families' were.
            if any(p.removed for p in plans):
                failure = HostProblem(f"nftables: {err}")
            else:
                bad_input = err
            nft_went.clear()
            nft_unapplied = planned.nft
        except gc_nft.NftHungWentIn as err:
            # Hung, yet its rules are gone by the read after it: the run still fails
            # with it (exit 3), and what went in is reported, recorded and flushed, or
            # no later run knew its ports (it found nothing to remove).
            failure, text, nft_done = err, "", err.plan
        except HostProblem as err:
            # `nft -f` stopped at its time limit (no retry: exit 3, its line), or a read
            # before a re-plan that failed (`nft -j list`'s own error), as a failed
            # iptables family above: what the iptables families removed is still
            # recorded and flushed below (it left past both: the removed chains' flows
            # kept the dead DNAT, their old sightings stayed on file), and the rules'
            # sightings are forgotten when the write may have gone in.
            failure = (
                err
                if isinstance(err, ToolTimedOut)
                else HostProblem(f"nftables: {err}", maybe_applied=err.maybe_applied)
            )
            nft_went.clear()
            if not err.maybe_applied:
                # Hung before any write (its read): nothing went, as a refusal above.
                # Dropped, every dead container's rules waited --min-age afresh.
                nft_unapplied = planned.nft
        # Another tool's chain in the plugin's tables that cannot be read and first
        # showed in a read of the tries (converge_nft): said as the plan's read's are
        # (plan.py), where it was passed over without a word.
        warnings += [w for w in node.nft_unread() if w not in warnings]
        if failure is not None:
            failure = _after_iptables(failure, plans)
        if nft_done is not None:
            nft_removed, nft_pending = nft_done.removed, nft_done.pending
            if not options.dry_run:
                nft_went[:] = [nft_done]
            if progress is not None:
                progress(sum(len(p.removed) for p in plans) + len(nft_removed), total)
            nft_kept = nft_done.kept
            remembered.update(nft_done.seen)
            if not options.dry_run:
                for chain in nft_removed:
                    remembered.pop(chain.key, None)
            if text and options.dry_run:
                transactions["nft"] = text  # type: ignore[index]
    if nft_unapplied is not None:
        remembered.update(nft_unapplied.seen)
        if forgetting is not None:  # (forgotten before the first removal: written back)
            unremoved.update(nft_unapplied.seen)
    # Every run records its sightings, a dry run (and gc's interactive preview) too:
    # otherwise --min-age would never start counting for someone who looks first.
    # A dry run read without the lock (it writes no rules; the preview waits on a
    # person) and takes it now: a lock it cannot take (a run directory or lock path
    # that is refused, another run holding it too long) ends it as it ends any run,
    # exit 3 before anything is shown (it was a warning, which the real run it
    # previews fails on). Either way a gc may have saved since the plan was read (a
    # real run's plan, too, when gc read it before asking): only this run's changes
    # go in.
    state_error: Optional[str] = None
    if options.dry_run and before_lock is not None:
        # The bar said "looking for chains to remove": kept on while the lock is
        # waited for, it spun on under the waiting line for work that was done.
        before_lock()
    with locked(node) if options.dry_run else contextlib.nullcontext():
        try:
            since = {k: v for k, v in planned.seen.items() if k not in unremoved}
            gc_state.save(options.state_dir, planned.namespace, remembered, since)
            saved.append(True)
        except HostProblem as err:
            # /run full or read-only: the chains are gone already (a dry run's plan
            # is made). What was done is still reported and the conntrack flush still
            # runs; the caller ends with this as the one error line (exit 3). The
            # save removed the file it could not replace (state.forget_all): later
            # runs wait --min-age again, never less.
            state_error = str(err)
    if state_error is None and forgetting is not None and forgetting.errors:
        # A sighting's forgetting before a removal could not rewrite the file (it was
        # removed instead), and the save found nothing more to write: the same line.
        state_error = forgetting.errors[0]
    deleted, flush_warnings = 0, ()
    if not options.dry_run and options.flush_udp:
        # Also when a later family failed: what went in the others went for good.
        deleted, flush_warnings = flush_removed(node, plans, nft_done)
    result = GcResult(
        options.dry_run,
        tuple(c for p in plans for c in p.removed) + tuple(nft_removed),
        tuple(c for p in plans for c in p.pending) + tuple(nft_pending),
        sum(p.kept for p in plans) + nft_kept,
        deleted,
        tuple((p.family, name) for p in plans for name in p.shared_removed),
        transactions,
        tuple(warnings) + flush_warnings,
        state_error,
        tuple(refused),
    )
    if bad_input is not None and state_error is None and not result.removed:
        raise bad_input  # (nothing went in: the sightings are as they were)
    if failure is not None:
        failure = _unrecorded(failure, state_error)
        if result.removed or result.shared_removed:
            failure.done = result  # (gone for good: the CLI shows it before the line)
        raise failure
    return result


def gc(
    node: Node,
    sources: Sources,
    options: GcOptions = GcOptions(),
    progress: Optional[Progress] = None,
) -> GcResult:
    """Plan and (unless a dry run) apply the removal, family by family (the smaller
    table's applied while the others are planned: plan_gc's apply_early)."""
    return apply_gc(node, plan_gc(node, sources, options, apply_early=True), progress)
