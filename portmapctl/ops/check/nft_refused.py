"""The cached nft-backed containers whose conditions check --repair refuses to write
(nftables/transaction.refused_condition: nft could be made to run one as more than a
match, a `;` or `#` outside quotes), and the node's entry (prerouting/output) it
leaves as it is where the newest cached ADD of a family is one of them. One judgement
for the repair (nft_repair, nft_repair_one: nothing written for them) and the check
(refused_left: their rows, and those of a held entry, name no fix and say why in the
repair's words; nft_table_rows and followed_entries count them as wanting nothing of
the table): the check offers exactly what the repair does, or a cron job looped on a
fix that wrote nothing."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Sequence, Tuple

from portmapctl.core.status import ProblemKind
from portmapctl.core.text import name_text
from portmapctl.ops.check.hints import REPAIR_COMMAND, WOULD_LEAVE
from portmapctl.ops.check.problem import Problem

if TYPE_CHECKING:
    from portmapctl.cni.cache import Attachment
    from portmapctl.core.mapping import MappingConfig
    from portmapctl.nftables.ruleset import Ruleset

# The rows of prerouting/output's entry: the repair writes it (again) with the newest
# cached ADD's conditions (planner.setup), or not at all where those are refused.
_ENTRY_KINDS = frozenset({ProblemKind.NFT_MISSING_ENTRY, ProblemKind.NFT_ENTRY_NOT_LOCAL})


def refusal(config: MappingConfig) -> Optional[str]:
    """Why the repair writes nothing for `config` (one of its conditions, of either
    family, refused), else None."""
    from portmapctl.nftables.transaction import refused_condition

    return refused_condition((*config.conditions_v4, *config.conditions_v6))


def refusals(attachments: Sequence[Attachment]) -> Dict[str, str]:
    """By path, why the repair writes nothing for each of `attachments` it refuses."""
    return {
        a.path: why
        for a in attachments
        if a.mapping is not None and (why := refusal(a.mapping)) is not None
    }


def written_and_refused(
    attachments: Sequence[Attachment],
) -> Tuple[List[MappingConfig], List[Attachment]]:
    """`attachments` (each with its mapping) parted as the repair parts them, by path
    (refusals): the configs of those it writes, and those it refuses."""
    refused = refusals(attachments)
    return (
        [a.mapping for a in attachments if a.path not in refused],  # type: ignore[misc]
        [a for a in attachments if a.path in refused],
    )


def newest_adds(
    in_add_order: Sequence[Attachment], families: Sequence[int]
) -> Dict[int, Attachment]:
    """By family, the newest cached ADD of it (the last of `in_add_order` with an address
    there), whose conditions the node's entry (prerouting/output) takes."""
    newest = {}
    for family in families:
        of_family = [a for a in in_add_order if family in a.mapping.families]  # type: ignore[union-attr]
        if of_family:
            newest[family] = of_family[-1]
    return newest


def newest_refused(
    in_add_order: Sequence[Attachment], refused: Dict[str, str], families: Sequence[int]
) -> Dict[int, Attachment]:
    """By family, the newest cached ADD where its conditions are refused."""
    return {f: a for f, a in newest_adds(in_add_order, families).items() if a.path in refused}


def entry_held(newest: Attachment, why: str) -> str:
    """Why a family's prerouting and output are left as they are (after their names)."""
    return (
        "take the conditions of the newest cached ADD,"
        f" {name_text(newest.network)}/{name_text(newest.container_id)},"
        f" which cannot be written ({why}); another container's would open every host"
        " port wider than that ADD asked"
    )


def held_notes(
    live: Ruleset, held: Mapping[int, Attachment], refused: Mapping[str, str]
) -> Tuple[str, ...]:
    """The lines of the families whose entry a repair (nft_repair, nft_repair_one) left
    as it is (`held`: newest_refused), said where that entry is no working one in
    `live` (else nothing to say): the check's rows of it name this as why."""
    return tuple(
        f"IPv{family} prerouting and output were left as they are:"
        f" they {entry_held(newest, refused[newest.path])}"
        for family, newest in held.items()
        if not entry_works(live, family)
    )


def entry_works(live: Ruleset, family: int) -> bool:
    """Whether `family`'s prerouting and output send local traffic to the host ports."""
    from portmapctl.nftables.layout import entry_ok
    from portmapctl.nftables.ruleset import OUTPUT, PREROUTING

    table = live.table(family)
    return all(entry_ok(table, chain) for chain in (PREROUTING, OUTPUT))


def refused_left(
    problems: Sequence[Problem], in_add_order: Sequence[Attachment], families: Sequence[int]
) -> List[Problem]:
    """`problems` (offered --repair) naming why the repair leaves them where it writes
    nothing: a refused container's own rows (its refusal: the repair's `could not
    repair` words), and the entry rows of a family whose newest cached ADD is refused
    (nft_repair holds that entry). `in_add_order`: what the check compares against,
    as the repair plans from it."""
    refused = refusals(in_add_order)
    if not refused:
        return list(problems)
    entry = _entry_whys(in_add_order, refused, families)
    # (By network and container: the repair leaves each cache entry, and the check
    # compares each network's rules apart.)
    own = {(a.network, a.container_id): refused[a.path] for a in in_add_order if a.path in refused}
    left = []
    for p in problems:
        why = None
        if p.container_id is not None:
            why = own.get((p.network or "", p.container_id))
        elif p.kind in _ENTRY_KINDS:
            why = entry.get(p.family)
        if why is not None and REPAIR_COMMAND in p.fix:
            p = replace(p, fix=WOULD_LEAVE.format(why=why))
        left.append(p)
    return left


def mapping_refused_left(
    problems: Sequence[Problem],
    config: MappingConfig,
    in_add_order: Sequence[Attachment],
    families: Sequence[int],
    offered: str,
) -> List[Problem]:
    """`problems` of one mapping given on the command line (nft_one; `offered`: the
    fix that names its --repair) naming why its repair (nft_repair_one) leaves them:
    every one where its own conditions are refused (that repair stops on them,
    nothing written), else the entry rows of a family whose newest cached ADD is
    refused (held there as the node's repair holds it). Its cached entry's conditions
    are not its judge: the repair writes the config given."""
    own = refusal(config)
    entry = {} if own is not None else _entry_whys(in_add_order, refusals(in_add_order), families)
    left = []
    for p in problems:
        why = own if own is not None else entry.get(p.family) if p.kind in _ENTRY_KINDS else None
        if why is not None and p.fix == offered:
            p = replace(p, fix=WOULD_LEAVE.format(why=why))
        left.append(p)
    return left


def _entry_whys(
    in_add_order: Sequence[Attachment], refused: Dict[str, str], families: Sequence[int]
) -> Dict[int, str]:
    """By family, why the repair leaves its prerouting and output as they are."""
    held = newest_refused(in_add_order, refused, families)
    return {
        family: f"prerouting and output {entry_held(newest, refused[newest.path])}"
        for family, newest in held.items()
    }


def refused_text(refused: Sequence[Attachment]) -> str:
    """Why the table's row that only `refused` (entries refusals names) want is left."""
    return f"only containers whose conditions cannot be written want it ({_named(refused)})"


def refused_beside_text(refused: Sequence[Attachment]) -> str:
    """What is said after why the repair leaves a table's row that, besides entries it
    writes nothing for for another reason (being torn down), only `refused` want."""
    return f"the others that want it have conditions that cannot be written ({_named(refused)})"


def _named(refused: Sequence[Attachment]) -> str:
    """Each of `refused` by network and container, with its refusal."""
    return "; ".join(
        f"{name_text(a.network)}/{name_text(a.container_id)}: {refusal(a.mapping)}"  # type: ignore[arg-type]
        for a in refused
    )
