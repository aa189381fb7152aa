"""Library results -> rich tables and JSON documents (SPEC §3 "JSON output").

JSON keys are part of the interface: add new ones, never rename. Addresses are
plain strings without brackets or prefix; absent values are null.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional
from typing import Mapping as MappingT

from portmapctl.add import AddResult
from portmapctl.inventory import ChainInfo, Mapping

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text

STATUS_STYLE = {
    "ok": "green",
    "stale": "yellow",
    "shadowed": "red",
    "orphan": "yellow",
    "incomplete": "red",
    "legacy": "magenta",
}


def short_id(container_id: Optional[str]) -> str:
    if not container_id:
        return "-"
    return container_id[:12]


def host_address(m: Mapping) -> str:
    if m.host_ip is None:
        return f"*:{m.host_port}"
    return f"[{m.host_ip}]:{m.host_port}" if ":" in m.host_ip else f"{m.host_ip}:{m.host_port}"


def container_address(m: Mapping) -> str:
    ip = f"[{m.container_ip}]" if ":" in m.container_ip else m.container_ip
    return f"{ip}:{m.container_port}"


def status_text(status: Iterable[str]) -> Text:
    from rich.text import Text

    text = Text()
    for i, word in enumerate(status):
        if i:
            text.append(",")
        text.append(word, style=STATUS_STYLE.get(word, ""))
    return text


def _cells(values: Iterable[str]) -> List[Text]:
    """Plain cells: addresses like [fd00::5]:80 must not be read as rich markup."""
    from rich.text import Text

    return [Text(v) for v in values]


def mapping_json(m: Mapping, conntrack: Optional[MappingT[Mapping, int]] = None) -> Dict[str, Any]:
    doc: Dict[str, Any] = {
        "network": m.network,
        "container_id": m.container_id,
        "family": m.family,
        "protocol": m.protocol,
        "host_ip": m.host_ip,
        "host_port": m.host_port,
        "container_ip": m.container_ip,
        "container_port": m.container_port,
        "snat": m.snat,
        "chain": m.chain,
        "status": list(m.status),
    }
    if m.shadowed_by:
        doc["shadowed_by"] = m.shadowed_by
    if conntrack is not None and m.protocol == "udp":
        doc["conntrack_entries"] = conntrack.get(m, 0)
    return doc


def chain_json(c: ChainInfo) -> Dict[str, Any]:
    return {
        "name": c.name,
        "family": c.family,
        "kind": c.kind,
        "network": c.network,
        "container_id": c.container_id,
        "status": list(c.status),
    }


def list_json(
    mappings: Iterable[Mapping],
    chains: Iterable[ChainInfo],
    conntrack: Optional[MappingT[Mapping, int]] = None,
) -> Dict[str, Any]:
    return {
        "mappings": [mapping_json(m, conntrack) for m in mappings],
        "chains": [chain_json(c) for c in chains],
    }


def list_table(
    mappings: List[Mapping],
    chains: List[ChainInfo],
    conntrack: Optional[MappingT[Mapping, int]] = None,
) -> Table:
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    columns = ["NETWORK", "CONTAINER", "FAM", "PROTO", "HOST", "CONTAINER ADDR", "SNAT", "CHAIN"]
    if conntrack is not None:
        columns.append("CONNTRACK")
    columns.append("STATUS")
    for column in columns:
        table.add_column(column, no_wrap=True)
    for m in mappings:
        row = [
            m.network or "-",
            short_id(m.container_id),
            f"v{m.family}",
            m.protocol,
            host_address(m),
            container_address(m),
            "yes" if m.snat else "no",
            m.chain,
        ]
        if conntrack is not None:
            row.append(str(conntrack.get(m, 0)) if m.protocol == "udp" else "-")
        table.add_row(*_cells(row), status_text(m.status))
    # Chains with no DNAT rule (legacy SN- chains, emptied chains) still get a line.
    with_rows = {(m.chain, m.family) for m in mappings}
    for c in chains:
        if (c.name, c.family) in with_rows:
            continue
        row = [
            c.network or "-",
            short_id(c.container_id),
            f"v{c.family}",
            "-",
            "-",
            "-",
            "-",
            c.name,
        ]
        if conntrack is not None:
            row.append("-")
        table.add_row(*_cells(row), status_text(c.status))
    return table


def add_json(result: AddResult) -> Dict[str, Any]:
    return {
        "dry_run": result.dry_run,
        "changed": result.changed,
        "chains": list(result.chains),
        "transaction": {str(f): text for f, text in sorted(result.transactions.items())},
    }
