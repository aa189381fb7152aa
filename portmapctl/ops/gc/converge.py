"""Applying one family's gc plan: Node.converge's tries, re-read and re-planned while
the table changes (converge_family); a try whose tool died or hung, judged by the read
after it (HungWentIn); and a removal iptables refused whole, halved until the chain at
fault stands alone (settle_family). apply.py applies a run's families with it, plan.py
the family it applies ahead.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

from portmapctl.core.text import name_text
from portmapctl.errors import (
    MAY_HAVE_GONE_IN,
    ApplyFailed,
    BadInput,
    HostProblem,
    PortmapctlError,
    ToolTimedOut,
)
from portmapctl.iptables.ruleset import NatTable, rule_target
from portmapctl.iptables.transaction import Transaction
from portmapctl.ops.gc.family import FamilyPlan, as_judged, settled
from portmapctl.ops.gc.planning import Planning, plan_table, reread_cache
from portmapctl.ops.gc.result import NAMED_AT_MOST, GcChain, Refused, some_of
from portmapctl.ops.gc.state import ChainKey
from portmapctl.ops.node import APPLY_TRIES, Node


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
        attachments = reread_cache(node, planning)
        by_number = next(tries) < APPLY_TRIES
        planning.last_read[table.family] = table
        replanned = plan_table(table, attachments, planning, by_number)
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
            raise _unjudged(err, unsure) from None
        try:
            table = node.backend.read(first.family)
        except PortmapctlError:
            raise err from None
        went = _went_in((tried[-1], err), table, [])  # (HungWentIn's line says it)
        if went is None:
            if not tried[-1].removed:
                raise
            if left_in_place(tried[-1], table):
                # A chain it removes is left where it was: the transaction (all or
                # nothing) did not go in, which its "may have gone in ...: run again
                # to see" left open.
                raise err.not_gone_in() from None
            # Left, but as the plugin's ADD of the same container after the write would
            # leave it: it said "did not go in", false where it had gone in.
            raise err.there_again_or_not_gone() from None
        raise HungWentIn(err, went) from None
    except HostProblem as err:
        # A read (or the cache's, to re-plan) that failed after a try whose tool died
        # without saying: that try is not judged, so it may have gone in. Raised bare,
        # apply_gc took the family for one where nothing went and wrote its chains' old
        # sightings back: the same container's chain, made again under its ID, was past
        # --min-age at its first sighting.
        raise _unjudged(err, unsure) from None


def _unjudged(err: HostProblem, unsure: Sequence[Tuple[FamilyPlan, ApplyFailed]]) -> HostProblem:
    """`err`, which stopped the judging of a try whose tool died (`unsure`): saying so,
    and that its write may have gone in (its sightings forgotten, as a removal's)."""
    if not unsure:
        return err
    line = f"{err} (after {unsure[-1][1]}: {MAY_HAVE_GONE_IN})"
    if isinstance(err, ToolTimedOut):
        return ToolTimedOut(line, maybe_applied=True)
    return HostProblem(line, maybe_applied=True)


class HungWentIn(ToolTimedOut):
    """A family's try whose tool hung (stopped at its time limit: exit 3, gc ends) and
    that went in, by the read after it: `plan`, as applied, is still reported in the
    line, its chains' UDP flows flushed and their sightings forgotten (apply_gc)."""

    def __init__(self, err: ToolTimedOut, plan: FamilyPlan) -> None:
        count = len(plan.removed)
        found = (
            "the chain it removes is gone"  # ("none of the 1 chain ... is left" before)
            if count == 1
            else f"none of the {count} chains it removes is left"
        )
        super().__init__(
            # (err.stopped: not its "may have gone in ...: run again to see", which
            # the read settles; the run after would find nothing to remove)
            f"{err.stopped}; read again, {found}: it went in",
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
    stop: Optional[Union[ApplyFailed, HostProblem]] = None
    untried: Tuple[GcChain, ...] = ()

    def stopped(self) -> Union[ApplyFailed, HostProblem]:
        """The family's error for a halving `stop` ended: its own kind (a hung tool or
        a failed read exit 3, as anywhere in gc; a busy lock exit 1), and what it left.
        Not "refused by iptables": the chains it left were never tried alone."""
        assert self.stop is not None
        # Each chain left named once: a refused one by its refusal (it was named twice,
        # "not removed: X; iptables refused X tried alone"), the others as not removed.
        left = self.untried
        line = (
            f"{self.stop} (trying the chains of a removal iptables refused whole in"
            f" smaller groups: {len(self.plan.removed) if self.plan else 0} removed"
            + (f", not removed: {_left_text(left)}" if left else "")
            + "".join(f"; iptables refused {_named(r.chain)} tried alone" for r in self.refused)
            + ")"
        )
        if isinstance(self.stop, ToolTimedOut):
            return ToolTimedOut(line, maybe_applied=self.stop.maybe_applied)
        if isinstance(self.stop, HostProblem):
            return HostProblem(line, maybe_applied=self.stop.maybe_applied)
        return ApplyFailed(line, maybe_applied=self.stop.maybe_applied, busy=self.stop.busy)


def _named(chain: GcChain) -> str:
    return f"{chain.chain} (container {name_text(chain.container_id or '-')})"


def _left_text(left: Sequence[GcChain]) -> str:
    """`CNI-DN-… (container …), …` for a few; for more, their count first (a group
    stopped at the first try leaves every chain of the family)."""
    count = f"{len(left)} chains, " if len(left) > NAMED_AT_MOST else ""
    return count + some_of([_named(c) for c in left])


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

    Once a try fails otherwise (a busy lock, a tool that died or hung, iptables-save's
    read before a group or after them all too: `stop`) nothing more is tried: the
    chains not removed are `untried`, not refused (iptables never refused them alone;
    the family's error is that failure's, Settled.stopped). A try whose tool hung or
    died may have gone in: judged by the read after it (_went_in; converge_family's
    HungWentIn), it is in the plan as applied, so its chains are reported and their
    UDP flows flushed. No plan when none of it went in (the family fails as before,
    with `stop` if there was one): a table the plugin kept changing, both halves
    refused (more than one chain's fault, or the tool's: one refusing everything is not
    tried chain by chain), or the one chain it removes refused."""
    family = first.family
    went: List[FamilyPlan] = []
    refused: List[Refused] = []
    stop: List[Union[ApplyFailed, HostProblem]] = []
    untried: List[GcChain] = []
    # A group whose try may have gone in, not judged (its tool killed or hung, the read
    # after it failed): its chains' sightings are not written back (as a removal's).
    unjudged: List[GcChain] = []

    # The table as last read, less what went in since: the table after the groups when
    # the read after them hangs (what went in is still reported, recorded and flushed).
    known: List[NatTable] = []

    def read() -> NatTable:
        known[:] = [node.backend.read(family)]
        return known[0]

    def gone(plan: FamilyPlan) -> FamilyPlan:
        went.append(plan)
        known[:] = [known[0].without({chain.chain for chain in plan.removed})]
        return plan

    def plan_of(keys: Sequence[ChainKey]) -> Tuple[FamilyPlan, Planning]:
        only = frozenset(tuple(key) for key in keys)
        limited = replace(planning, options=replace(planning.options, only=only))
        table = read()
        attachments = reread_cache(node, planning)
        return plan_table(table, attachments, limited, True), limited

    def attempt(groups: Sequence[GcChain]) -> Optional[str]:
        """The group in one transaction: None once it went in, else why not."""
        if stop:
            return str(stop[0])
        try:
            # Its read too: an iptables-save that hung there (exit 3) escaped with the
            # groups before it gone in unreported, their UDP flows never flushed.
            plan, limited = plan_of([chain.key for chain in groups])
            gone(converge_family(node, plan, limited))
        except BadInput as bad:
            # The cache read for the group refused as bad input (emptied meanwhile, its
            # results/ made a file): no "nothing changed" (exit 2) once a group went in
            # (it escaped bare, those unreported). A failed read, as below. Before any
            # did, it is the bad input it is: apply_gc judges the run (another family
            # may have gone in).
            if not went:
                raise
            stop.append(HostProblem(str(bad)))
            return str(bad)
        except (ApplyFailed, HostProblem) as err:
            # (HostProblem: a read that failed, iptables-save's own error, not only one
            # that hung; it escaped with the groups before it gone in unreported.)
            if not refused_outright(err):
                stop.append(err)  # (nothing more is tried)
                if isinstance(err, HungWentIn):
                    gone(err.plan)  # (judged by the read after it: it went in)
                    return None
                if err.maybe_applied:
                    unjudged.extend(groups)
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
    try:
        table = read()
    except HostProblem as err:  # (hung or failed before any group: nothing went in)
        return Settled(None, [], err, first.removed)
    if table != planning.last_read.get(family):
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
    try:
        after = read()
    except HostProblem as err:
        # Hung (or failed) after the groups: the table they left, as known (a plugin call meanwhile
        # aside), and the family fails with that error, what went in reported.
        stop.append(err)
        after = known[0]
    nothing = replace(planning, options=replace(planning.options, only=frozenset()))
    try:
        rest = plan_table(after, reread_cache(node, planning), nothing, True)
    except PortmapctlError as err:
        # The cache gone, unreadable or emptied by now (it was read before each group):
        # escaped bare, it ended gc with one line (exit 3), the groups gone in
        # unreported, their UDP flows never flushed, no sighting saved. The family
        # fails with it (exit 3, the environment: the run changed the node already),
        # what went in reported, and what is left as the first plan judged it.
        stop.append(err if isinstance(err, HostProblem) else HostProblem(str(err)))
        rest = as_judged(first, after)
    # The chains left untried are left out of `pending` too: the family's error names them.
    apart = {r.chain.key for r in refused} | {chain.key for chain in untried}
    done = settled(went, rest, after, apart)
    if unjudged:
        # The table as last known still has them when the read after the groups failed
        # too: their old sightings, written back, let the same container's chain, made
        # again under its ID, pass --min-age at its first sighting.
        maybe_gone = {chain.key for chain in unjudged}
        done = replace(done, seen={k: v for k, v in done.seen.items() if k not in maybe_gone})
    return Settled(done, refused, stop[0] if stop else None, tuple(untried))


def left_in_place(plan: FamilyPlan, after: NatTable) -> bool:
    """Whether `after`, read after a write of `plan` that hung, shows a chain the plan
    removes never removed: its rules as read before, and a rule entering it still
    ahead of a rule that followed it then and that the plan keeps. An iptables chain
    has no handle: the plugin's ADD of the same container after the write makes the
    same chain again (its name comes from network and ID), but appends its entry
    rules, behind every rule already there. Where nothing tells (its entry rules last,
    a chain nothing enters, the read before not known) it may have gone in. (A v0.7
    plugin prepends its entry rules: one made again by it is not told apart.)"""
    before = plan.read_from
    if before is None:
        return False
    gone = {chain.chain for chain in plan.removed}
    for name in gone:
        if not after.has_chain(name) or after.rules(name) != before.rules(name):
            continue
        for entry_chain, chain in before.chains.items():
            rules = chain.rules
            now = after.rules(entry_chain)
            for index, rule in enumerate(rules):
                if rule_target(rule) != name or rule not in now:
                    continue
                kept = {r for r in rules[index + 1 :] if rule_target(r) not in gone}
                if kept & set(now[now.index(rule) + 1 :]):
                    return True
    return False


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
