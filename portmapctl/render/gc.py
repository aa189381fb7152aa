"""`gc`: the table of what was (or would be) removed and what waits, the summary line."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, List, Optional, Sequence, Tuple

from portmapctl.core.backend import Backend
from portmapctl.core.status import GcHold
from portmapctl.core.text import port_runs
from portmapctl.render.cuts import cut_end
from portmapctl.render.table import Cuttable, count, grid, owner_order, short_id, without_columns

if TYPE_CHECKING:
    from portmapctl.ops.gc import GcChain, GcResult
    from portmapctl.ops.gc.result import Refused
    from portmapctl.render.table import Grid


def _ports_cell(c: GcChain) -> str:
    # `20000-20299/tcp`: a podman range, one mapping per port, was cut at 80 columns to
    # its first three ports, the rest (its UDP ports too) out of sight.
    return ",".join(f"{ports}/{proto}" for proto, ports in port_runs(c.host_ports)) or "-"


def duration_text(seconds: float) -> str:
    """`45s`, `1m40s`, `2h05m`: what --min-age accepts back."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


# A held chain's STATUS: why it waits, where a time would be false (GcHold). The
# warning gc prints beside it says what that namespace means.
HELD_TEXT = {
    GcHold.ADDRESS_IN_NEW_NAMESPACE: "held: a new namespace has its address",
    GcHold.NEW_NAMESPACE_UNSEEN: "held: a new namespace gc cannot look into",
    GcHold.FOREIGN_ENTRY_UNWRITABLE: "held: a foreign rule entering it has control characters",
}


def removable_text(c: GcChain, min_age: float, now: Optional[float] = None) -> str:
    """`removable in 1m40s, at 02:19:02` (local time): when a later run removes it."""
    import time

    left = max(min_age - c.seen_seconds, 0.0)
    start = time.time() if now is None else now
    when = time.localtime(start + left)
    # A time of day alone names the wrong day once the wait ends on another one.
    same_day = time.localtime(start)[:3] == when[:3]
    at = time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M:%S", when)
    return f"removable in {duration_text(left + 0.999)}, at {at}"


# What gives way on a narrow terminal: a long network name, then a long list of ports
# (the container's ID, the age and when it goes stay whole).
GC_CUTS = {
    "NETWORK": Cuttable(len("NETWORK"), cut_end),
    "HOST PORTS": Cuttable(len("HOST PORTS"), cut_end),
}
# Below that, left out in this order while the status does not fit whole: the network
# (liveness goes by container ID, SPEC §3 gc), then the ports (-o wide shows all).
# The status is never cut: what still does not fit of it goes on below.
GC_DROPS = ("NETWORK", "HOST PORTS")


def _by_container(c: GcChain) -> Tuple[bool, str, bool, str, int, str]:
    """A table's order, as list's (render.list.sort_key): by network and container,
    unnamed ones last (the plan's is the tables', which an operator cannot scan), then
    family."""
    return (*owner_order(c.network, c.container_id), c.family, c.chain)


def table_order(chains: Iterable[GcChain]) -> List[GcChain]:
    """`chains` as gc's table and JSON list them (_by_container)."""
    return sorted(chains, key=_by_container)


def refused_order(refused: Iterable[Refused]) -> List[Refused]:
    """The chains iptables refused, in table_order."""
    return sorted(refused, key=lambda r: _by_container(r.chain))


def gc_table(
    result: GcResult,
    min_age: Optional[float] = None,
    preview: bool = False,
    wide: bool = False,
    full_ids: bool = False,
    header: bool = True,
    width: Optional[int] = None,
) -> Grid:
    """One row per chain removed (in a dry run or the preview: to be removed) and per
    pending one, with when a later run can remove it; TYPE and CHAIN only when `wide`
    (the table fits 80 columns without them). `width` (a terminal's; None: piped) is
    met by cutting NETWORK and HOST PORTS (GC_CUTS), then leaving out GC_DROPS, the
    status never cut, unless `wide` or `full_ids`.

    A plain grid, not a rich Table: gc of 1,000 containers lists 1,000 rows.
    """
    headers = ["FAM", "TYPE", "NETWORK", "CONTAINER", "HOST PORTS", "CHAIN", "SEEN"]
    rows: List[List[str]] = []
    statuses: List[Iterable[str]] = []
    verb = "to remove" if preview else "would remove" if result.dry_run else "removed"

    def row(c: GcChain) -> List[str]:
        # A chain of no known container (an orphan no entry rule names) is known by its
        # name: "-" there, with HOST PORTS left out on a narrow terminal, said nothing.
        who = short_id(c.container_id, full_ids) if c.container_id else c.chain
        return [f"v{c.family}", c.kind, c.network or "-", who] + [
            _ports_cell(c),
            # As list's and check's tables: an nft chain is `nft:<chain>`.
            f"nft:{c.chain}" if c.backend == Backend.NFTABLES else c.chain,
            duration_text(c.seen_seconds),
        ]

    for c in table_order(result.removed):
        rows.append(row(c))
        statuses.append([verb])
    for family, name in result.shared_removed:
        rows.append([f"v{family}", "shared", "-", "-", "-", name, "-"])
        statuses.append([verb])
    for refused in refused_order(result.refused):
        rows.append(row(refused.chain))
        statuses.append(["refused by iptables"])
    for c in table_order(result.pending):
        rows.append(row(c))
        if c.held is not None:
            statuses.append([HELD_TEXT[c.held]])
        else:
            statuses.append([removable_text(c, min_age) if min_age is not None else "pending"])
    if not wide:
        without_columns(headers, rows, ("CHAIN", "TYPE"))
    whole = full_ids or wide
    return grid(
        headers,
        rows,
        statuses,
        header,
        width=None if whole else width,
        cuts=GC_CUTS,
        drops=GC_DROPS,
    )


def removal_text(removed: Sequence[GcChain], shared: Sequence[Tuple[int, str]] = ()) -> str:
    """What `removed` (and the shared chains) are, in words that are true of each:
    `2 chains of 2 containers, 1 chain of no known container and the nftables rules of
    1 container`. An nftables item is one container's rules in one family, no chain;
    a chain no rule names (an orphan, an unpaired CNI-SN-) belongs to no known one."""
    chains = [c for c in removed if c.backend == Backend.IPTABLES]
    # By ID, as list counts them: a container's nftables rules name no network.
    named = {c.container_id for c in chains if c.container_id}
    owned = sum(1 for c in chains if c.container_id)
    nft = {c.container_id for c in removed if c.backend == Backend.NFTABLES}
    pieces = []
    if owned:
        pieces.append(f"{count(owned, 'chain')} of {count(len(named), 'container')}")
    if len(chains) > owned:
        pieces.append(f"{count(len(chains) - owned, 'chain')} of no known container")
    if nft:
        pieces.append(f"the nftables rules of {count(len(nft), 'container')}")
    pieces.extend(f"{name} (v{fam})" for fam, name in shared)
    if not pieces:
        return count(0, "chain")
    return " and ".join([", ".join(pieces[:-1]), pieces[-1]] if len(pieces) > 1 else pieces)


def gc_summary(
    result: GcResult, asked_dry_run: Optional[bool] = None, answered: bool = True
) -> str:
    """One line for a cron log; "(dry run)" only when --dry-run was asked. A run whose
    question was declined (`answered`: "n", not end of input) says nothing was removed."""
    dry_run = result.dry_run if asked_dry_run is None else asked_dry_run
    verb = "would remove" if result.dry_run else "removed"
    parts = [f"{verb} {removal_text(result.removed, result.shared_removed)}"]
    if not result.changes:
        parts = ["nothing to remove now"]
    if result.declined is not None:
        # What was offered, as the question said it: a -q line in a log says how much.
        why = "not confirmed" if answered else "offered, no answer"
        offered = removal_text(result.declined, result.declined_shared)
        parts = [f"nothing removed ({offered} {why})"]
    if result.refused:
        parts.append(f"{len(result.refused)} refused")
    parts.append(f"{len(result.pending)} pending")
    parts.append(f"{result.kept} kept")
    if not result.dry_run and result.changes:
        deleted = result.conntrack_deleted
        parts.append(f"{deleted} UDP conntrack entr{'y' if deleted == 1 else 'ies'} deleted")
    return "gc" + (" (dry run)" if dry_run else "") + ": " + ", ".join(parts)
