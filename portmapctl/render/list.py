"""`list`: the mapping table, its order and its summary line (SPEC §3 list)."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Tuple
from typing import Mapping as MappingT

from portmapctl.core.backend import Backend
from portmapctl.core.mapping import endpoint
from portmapctl.render.cuts import address_floor, cut_address, cut_end
from portmapctl.render.table import (
    STATUS_STYLE,
    Across,
    Cuttable,
    chain_starts,
    count,
    grid,
    owner_cell,
    owner_order,
    unknown_chains,
    without_columns,
)

if TYPE_CHECKING:
    from portmapctl.iptables.inventory import ChainInfo, Mapping
    from portmapctl.ops.flush_udp import Flows
    from portmapctl.render.table import Grid


def sort_key(m: Mapping) -> Tuple[Any, ...]:
    """SPEC §3 list: network, container, family, protocol, host port (a container's
    rows stand together; unnamed ones last)."""
    return (
        *owner_order(m.network, m.container_id),
        m.family,
        m.protocol,
        m.host_port,
        m.host_ip or "",
        m.chain,
    )


def chain_sort_key(c: ChainInfo) -> Tuple[Any, ...]:
    return (
        *owner_order(c.network, c.container_id),
        c.family,
        c.name,
    )


def host_address(m: Mapping) -> str:
    if m.host_ip is None:
        address = f"*:{m.host_port}"
    else:
        address = endpoint(m.host_ip, m.host_port)
    # Conditions (conditionsV4/V6, an nftables rule's own) narrow who reaches the
    # port: never `*` alone.
    return f"{address} if {' '.join(m.conditions)}" if m.conditions else address


def container_address(m: Mapping) -> str:
    ip = f"[{m.container_ip}]" if ":" in m.container_ip else m.container_ip
    return f"{ip}:{m.container_port}"


FLUSH_STALE = "portmapctl flush-udp --stale-only"  # what deletes the misrouted flows


def list_summary(
    mappings: List[Mapping],
    chains: List[ChainInfo],
    total: Optional[int] = None,
    misrouted: int = 0,
    fix: str = FLUSH_STALE,
) -> str:
    """`7 mappings of 4 containers: 5 ok, 1 stale, 1 shadowed` (the mappings' statuses,
    counted per row); chains without a DNAT rule (legacy SN- chains, a chain whose
    entry names no port of its own) follow with theirs, apart, so that the mappings'
    counts add up to them (`; 2 chains without a mapping: 2 legacy`); with filters
    that leave fewer, `2 of 7 mappings match: ...`. With --conntrack, the flows that
    misroute (`misrouted`: ops/flush_udp.py Counted.misrouted) and their fix follow
    (`; 2 UDP flows misrouted -> portmapctl flush-udp --stale-only`; `fix` spelled
    with the run's options and filters, list_run.flush_fix)."""
    with_rows = {(m.chain, m.family) for m in mappings}
    bare = [c for c in chains if (c.name, c.family) not in with_rows]
    containers = {m.container_id or m.chain for m in mappings}
    if total is not None and total != len(mappings):
        head = f"{len(mappings)} of {count(total, 'mapping')} match"
    elif mappings or not bare:
        head = f"{count(len(mappings), 'mapping')} of {count(len(containers), 'container')}"
    else:  # (`0 mappings of 0 containers; 1 chain ...` would count nothing twice)
        head = count(0, "mapping")
    line = head + _statuses_counted([m.status for m in mappings])
    if bare:
        line += f"; {count(len(bare), 'chain')} without a mapping"
        line += _statuses_counted([c.status for c in bare])
    if misrouted:
        flow = "UDP flow" if misrouted == 1 else "UDP flows"
        line += f"; {misrouted} {flow} misrouted -> {fix}"
    return line


def _statuses_counted(statuses: Sequence[Sequence[str]]) -> str:
    """`: 5 ok, 1 stale, 1 shadowed`: each status word's rows, in STATUS_STYLE's order
    (a row of two statuses is counted under each); "" for no rows."""
    counted: Dict[str, int] = {}
    for status in statuses:
        for word in status:
            # A Status and its plain word are one key (equal, same hash): str() once per
            # word below, not twice per row (Enum.__str__ is a Python call).
            counted[word] = counted.get(word, 0) + 1
    words = {str(word): n for word, n in counted.items()}
    order = [str(s) for s in STATUS_STYLE]
    ranked = sorted(words.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99)
    return ": " + ", ".join(f"{n} {w}" for w, n in ranked) if ranked else ""


# What a terminal's width may cut (SPEC §3: the table fits it): the network name from
# its end, an address in its middle with the port whole, no further than it reads
# (address_floor: `[2001:db8:…:7334]:8080`); not the short container ID, the words
# (FAM, PROTO, SNAT), counts or the statuses, which are what a row says.
LIST_CUTS = {
    "NETWORK": Cuttable(len("NETWORK"), cut_end),
    "HOST": Cuttable(12, cut_address, address_floor),
    "CONTAINER ADDR": Cuttable(len("CONTAINER ADDR"), cut_address, address_floor),
}
# What is left out while the statuses still do not fit whole beside the readable
# cuts (on a narrow terminal; at 80 columns beside a long IPv6 address), in this
# order: where the traffic goes, then the SNAT flag, then the network (the ID,
# family, protocol and host address say which mapping a row is; -o wide shows all).
# Only with all of them out does HOST go below what it reads in (table._fitted).
LIST_DROPS = ("CONTAINER ADDR", "SNAT", "NETWORK")
# Where the row of a chain with no mapping names its chain when the table has no
# CHAIN column: across the cells a mapping's row fills and it has none of (35
# characters at the least, a chain's name is 28; on a narrow terminal that left some
# of them out, its start, `…`).
BARE_CHAIN_CELLS = ("PROTO", "HOST", "CONTAINER ADDR", "SNAT")


def list_table(
    mappings: List[Mapping],
    chains: List[ChainInfo],
    conntrack: Optional[MappingT[Mapping, Flows]] = None,
    wide: bool = True,
    full_ids: bool = False,
    header: bool = True,
    width: Optional[int] = None,
    unknown: Optional[Iterable[str]] = None,
) -> Grid:
    """The list table; without `wide` the CHAIN column is left out (80 columns), or
    shown as BACKEND when the rows are of both backends. A chain of no known
    container is named under CONTAINER by a start that tells it from the others of
    `unknown` (the node's chains of no known container, filtered or not: list_run;
    None: the table's), so that --container takes it for that chain alone.
    `width` is the terminal's (None: piped, nothing is cut): rows are fitted to it
    (LIST_CUTS, then LIST_DROPS; the statuses are never cut, wrapped under their
    column when even that is not enough) unless `full_ids` (--no-trunc) or `wide`
    (all of everything)."""
    headers = ["NETWORK", "CONTAINER", "FAM", "PROTO", "HOST", "CONTAINER ADDR", "SNAT", "CHAIN"]
    if conntrack is not None:
        headers.append("FLOWS")  # UDP conntrack entries (a short word: 80 columns)
    # A container with rules in both backends (the plugin's DEL cleans one): without
    # the backend its two copies are two identical rows.
    by_backend = not wide and _both_backends(mappings)
    if unknown is None:
        unknown = unknown_chains(mappings, chains)
    starts = chain_starts(unknown)
    rows, statuses, bare = _list_rows(
        mappings, chains, conntrack, full_ids, by_backend, wide, starts
    )
    if by_backend:
        headers[headers.index("CHAIN")] = "BACKEND"
    elif not wide:
        without_columns(headers, rows, ("CHAIN",))
    whole = full_ids or wide
    return grid(
        headers,
        rows,
        statuses,
        header,
        width=None if whole else width,
        cuts=LIST_CUTS,
        drops=LIST_DROPS,
        across=None if wide else Across(BARE_CHAIN_CELLS, bare),
    )


def _list_rows(
    mappings: List[Mapping],
    chains: List[ChainInfo],
    conntrack: Optional[MappingT[Mapping, Flows]],
    full_ids: bool,
    by_backend: bool = False,
    wide: bool = True,
    starts: Optional[MappingT[str, str]] = None,
) -> Tuple[List[List[str]], List[Iterable[str]], Dict[int, str]]:
    """The cells of every row, their statuses, and the name of the chain of each row
    of a chain without a mapping (by row number) whose CONTAINER cell does not name
    it; the last column is the CHAIN, or with `by_backend` the BACKEND (a chain
    without a mapping is an iptables chain). Where CHAIN is not shown (not `wide`), a
    chain of no known container is named under CONTAINER, as in check's and gc's
    tables (render.table.owner_cell), by its short form (`starts`: chain_starts, as
    a container by its short ID; `full_ids`: whole)."""
    rows: List[List[str]] = []
    statuses: List[Iterable[str]] = []
    bare: Dict[int, str] = {}
    # Chains with no DNAT rule (legacy SN- chains, emptied chains) still get a line,
    # among their container's rows (SPEC §3: a container's rows stand together), after
    # its mappings of that family: merged into `mappings`, which come sorted (sort_key).
    with_rows = {(m.chain, m.family) for m in mappings}
    waiting = deque(
        sorted((c for c in chains if (c.name, c.family) not in with_rows), key=chain_sort_key)
    )

    def add_bare(c: ChainInfo) -> None:
        who = owner_cell(c.container_id, c.name, full_ids, chain_shown=wide, starts=starts)
        if who != c.name:
            bare[len(rows)] = c.name
        row = [c.network or "-", who, f"v{c.family}", "-", "-", "-", "-"]
        row.append(Backend.IPTABLES.value if by_backend else c.name)
        if conntrack is not None:
            row.append("-")
        rows.append(row)
        statuses.append(c.status)

    for m in mappings:
        while waiting and _row_place(waiting[0]) < _row_place(m):
            add_bare(waiting.popleft())
        row = [
            m.network or "-",
            owner_cell(m.container_id, m.chain, full_ids, chain_shown=wide, starts=starts),
            f"v{m.family}",
            m.protocol,
            host_address(m),
            container_address(m),
            "yes" if m.snat else "no",
            _backend_of(m).value if by_backend else _chain_cell(m),
        ]
        if conntrack is not None:
            flows = conntrack.get(m)
            row.append(str(flows.entries if flows else 0) if m.protocol == "udp" else "-")
        rows.append(row)
        statuses.append(m.status)
    for c in waiting:
        add_bare(c)
    return rows, statuses, bare


def _row_place(row: Any) -> Tuple[Any, ...]:
    """Where a row of the table goes, by what mappings and chains share: network,
    container, family (a chain without a mapping after that family's mappings)."""
    return (*owner_order(row.network, row.container_id), row.family)


def _backend_of(m: Mapping) -> Backend:
    return Backend.NFTABLES if getattr(m, "backend", None) == Backend.NFTABLES else Backend.IPTABLES


def _both_backends(mappings: Iterable[Mapping]) -> bool:
    return len({_backend_of(m) for m in mappings}) == 2


def _chain_cell(m: Mapping) -> str:
    """iptables: the CNI-DN- chain; nftables: `nft:` + the chain of the rule."""
    if _backend_of(m) is Backend.NFTABLES:
        return f"nft:{m.chain}"
    return m.chain
