"""What a repair says it did, for the node's (repair.py), one mapping's (repair_one.py)
and one nft-backed mapping's (nft_repair_one.py): the check after it with what it fixed
and what it could not (`_repaired`; `left_named`: a problem of a container it could not
make names its `could not repair` line as the fix, not --repair again), and, on SIGTERM
or Ctrl-C once a transaction went in, the line saying so (`say_repaired`,
`say_repair_done`): "terminated" alone reads as "nothing was written"."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Dict, List, Sequence, Tuple

from portmapctl.core.mapping import MappingConfig
from portmapctl.errors import Interrupted
from portmapctl.ops.check.cache_now import changed_mappings
from portmapctl.ops.check.hints import REPAIR_COMMAND
from portmapctl.ops.check.problem import CheckResult, Unrepaired
from portmapctl.ops.check.read_once import ReadOnce
from portmapctl.ops.check.run import SAME_WITH_REPAIR

if TYPE_CHECKING:
    from portmapctl.ops.check.problem import Problem


def _in_row_order(unrepaired: Sequence[Unrepaired]) -> List[Unrepaired]:
    """As check's problem rows and "repaired:" lines (render.check.problem_sort_key):
    by network, container and family, so one container's lines stand together (the
    repair finds them family by family)."""
    return sorted(unrepaired, key=lambda u: (u.network, u.container_id, u.family))


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


LEFT = "--repair left it as it is: its `could not repair` line says why"


def names_repair(fix: str) -> bool:
    """Whether a problem's fix is --repair (the node's command, or one mapping's)."""
    return REPAIR_COMMAND in fix or fix == SAME_WITH_REPAIR


def left_named(
    problems: Sequence[Problem], unrepaired: Sequence[Unrepaired]
) -> Tuple[Problem, ...]:
    """`problems` after a repair, those of a container it could not make (in that
    family) naming their `could not repair` line as their fix, not --repair again."""
    left = {(u.family, u.network, u.container_id) for u in unrepaired}
    return tuple(
        replace(p, fix=LEFT)
        if (p.family, p.network, p.container_id) in left and names_repair(p.fix)
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
