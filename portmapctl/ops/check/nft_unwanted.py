"""The rows of the plugin's nftables table itself that no cached container wants.

structure_problems_for checks a family whose table holds host-port rules even where no
cache entry read of a live container wants it (its rules all stale: of containers the
cache does not know; or of zombies, or of entries that cannot be read).
The repair plans the table from the cached nft-backed containers alone (nft_repair;
with no CNI cache it leaves nftables alone), so it makes none of it there: offered,
`check --repair` wrote nothing, and the next check offered it again. Such a row names
why the repair leaves it instead (prose: JSON `fix` null); the stale rules are gc's."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, List, Optional, Sequence

from portmapctl.core.backend import Backend
from portmapctl.ops.check.hints import REPAIR_COMMAND
from portmapctl.ops.check.problem import Problem
from portmapctl.ops.check.torn_down import WOULD_LEAVE, left_fix, nft_table_row, nft_wanted

if TYPE_CHECKING:
    from portmapctl.cni.cache import Attachment
    from portmapctl.core.mapping import MappingConfig

UNMASQUERADED = 'no live container whose cache entry is read has SNAT (`"snat": false`)'
UNWANTED = (
    "no live container whose cache entry is read wants it{where} (the table holds only"
    " rules of containers the cache does not know, of zombies, or of entries that cannot"
    " be read: their rows say what to do)"
)


def unwanted_left(
    problems: List[Problem], attachments: Optional[Sequence[Attachment]]
) -> List[Problem]:
    """`problems`, each structure row offered --repair that no cached nft-backed
    container wants (torn_down.nft_wanted) naming why the repair leaves it. A keyless
    entry (told by evidence) may be planned into nftables: it counts as wanting, so
    in doubt the fix stays offered. Torn-down entries count too: their rows are judged
    by torn_down.toplevel_fixes, which looks into their namespaces."""
    configs = [
        a.mapping
        for a in attachments or ()
        if a.mapping is not None and not a.zombie and a.mapping.backend != Backend.IPTABLES
    ]
    where = "" if attachments is not None else " (there is no CNI cache here)"
    return [
        replace(p, fix=left_fix(p, WOULD_LEAVE.format(why=_why(p, configs, where))))
        if REPAIR_COMMAND in p.fix and nft_table_row(p) and not nft_wanted(p, configs)
        else p
        for p in problems
    ]


def _why(problem: Problem, configs: Sequence[MappingConfig], where: str) -> str:
    """Why no container wants `problem`'s piece. The masquerading chain is wanted by a
    container with SNAT alone: beside a live one without it (which wants the rest of the
    table) the table is not unwanted, its masquerading chain is."""
    if nft_wanted(replace(problem, chain=None), configs):
        return UNMASQUERADED
    return UNWANTED.format(where=where)
