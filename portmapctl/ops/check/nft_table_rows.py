"""The rows of the plugin's nftables table itself (its table, base chains, entry rules
and jumps: no container's), which containers want them, and what such a row says where
the repair would not make it.

The repair makes the table for the nft-backed containers it plans from (planner.setup;
nft_repair: the cached entries it reads, not torn down). structure_problems_for checks
a family whose table holds host-port rules even where no cache entry read of a live
container wants it (its rules all stale: of containers the cache does not know; or of
zombies, or of entries that cannot be read): offered there, `check --repair` wrote
nothing and the next check offered it again. unwanted_left names why the repair leaves
such a row instead (prose: JSON `fix` null); the stale rules are gc's. The rows only
containers being torn down want are torn_down.toplevel_fixes'."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, List, Optional, Sequence

from portmapctl.core.mapping import MappingConfig
from portmapctl.core.status import ProblemKind
from portmapctl.ops.check.hints import REPAIR_COMMAND, WOULD_LEAVE
from portmapctl.ops.check.problem import Problem

if TYPE_CHECKING:
    from portmapctl.cni.cache import Attachment

# The rows of the plugin's nftables table itself (nftables/problems.structure_problems)
# that a repair makes for the nft-backed containers it plans from (planner.setup).
_NFT_STRUCTURE = frozenset(
    {
        ProblemKind.NFT_MISSING_TABLE,
        ProblemKind.NFT_MISSING_CHAIN,
        ProblemKind.NFT_MISSING_ENTRY,
        ProblemKind.NFT_MISSING_JUMPS,
    }
)


def nft_structure(problem: Problem) -> bool:
    """A problem of the plugin's nftables table itself, no container's."""
    return problem.container_id is None and problem.kind in _NFT_STRUCTURE


def nft_table_row(problem: Problem) -> bool:
    """A row of the plugin's nftables table itself whose fix is the repair's making of
    it for the nft-backed containers it plans from: nft_structure's, and a base chain
    not as the plugin makes it (nft-wrong-base-chain: deleted by hand, the repair
    re-creates it)."""
    return nft_structure(problem) or (
        problem.container_id is None and problem.kind == ProblemKind.NFT_WRONG_BASE_CHAIN
    )


def left_fix(problem: Problem, left: str) -> str:
    """The fix of a row of the table (nft_table_row) or of the shared iptables chains
    the repair leaves, `left` saying so. A wrong base chain is still deleted by hand,
    but the repair would not make it again (its row said to run it then, and it made
    nothing): the plugin's next ADD of any container makes the table's chains as its
    own."""
    if problem.kind != ProblemKind.NFT_WRONG_BASE_CHAIN or problem.family is None:
        return left
    from portmapctl.ops.check.nft import wrong_base_by_hand

    by_hand = wrong_base_by_hand(problem.family, problem.chain or "")
    return f"{by_hand}: the plugin's next ADD re-creates it as its own; {left}"


def nft_wanted(problem: Problem, configs: Sequence[MappingConfig]) -> bool:
    """Whether one of `configs` (nft-backed) wants what the structure row `problem`
    lacks, as structure_problems_for wants it: its family's table, chains, entry and
    jumps for any container of that family; the masquerading chain for one with SNAT."""
    from portmapctl.nftables.ruleset import MASQUERADING

    masq = problem.chain in (MASQUERADING, f"nft:{MASQUERADING}")
    return any(problem.family in c.families and (c.snat or not masq) for c in configs)


UNMASQUERADED = 'no live container whose cache entry is read has SNAT (`"snat": false`)'
UNWANTED = (
    "no live container whose cache entry is read wants it{where} (the table holds only"
    " rules of containers the cache does not know, of zombies, or of entries that cannot"
    " be read: their rows say what to do)"
)


def unwanted_left(
    problems: List[Problem],
    attachments: Optional[Sequence[Attachment]],
    placed: Sequence[Attachment],
) -> List[Problem]:
    """`problems`, each structure row offered --repair that no cached nft-backed
    container wants (nft_wanted) naming why the repair leaves it. `placed`: the entries
    the node's split puts in nftables (ops/nft.split), which the repair plans nftables
    from: a keyless entry only where the evidence (its rules there) says so. One the
    split puts in iptables counted as wanting too, and beside a table of stale rules
    alone the row was offered, the repair made nothing, the next check offered it
    again. Torn-down entries count: their rows are judged by torn_down.toplevel_fixes,
    which looks into their namespaces. One whose conditions the repair refuses
    (nft_refused) does not: it writes nothing for it."""
    from portmapctl.ops.check.nft_refused import written_and_refused

    live = [a for a in placed if a.mapping is not None and not a.zombie]
    configs, refused = written_and_refused(live)
    where = "" if attachments is not None else " (there is no CNI cache here)"
    return [
        replace(p, fix=left_fix(p, WOULD_LEAVE.format(why=_why(p, configs, refused, where))))
        if REPAIR_COMMAND in p.fix and nft_table_row(p) and not nft_wanted(p, configs)
        else p
        for p in problems
    ]


def _why(
    problem: Problem,
    configs: Sequence[MappingConfig],
    refused: Sequence[Attachment],
    where: str,
) -> str:
    """Why no container wants `problem`'s piece. The masquerading chain is wanted by a
    container with SNAT alone: beside a live one without it (which wants the rest of the
    table) the table is not unwanted, its masquerading chain is. Those of `refused`
    that want it are named, each with its refusal."""
    wanting = [a for a in refused if nft_wanted(problem, [a.mapping])]  # type: ignore[list-item]
    if wanting:
        from portmapctl.ops.check.nft_refused import refused_text

        return refused_text(wanting)
    if nft_wanted(replace(problem, chain=None), configs):
        return UNMASQUERADED
    return UNWANTED.format(where=where)
