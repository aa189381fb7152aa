"""Library results -> rich tables and JSON documents (SPEC §3 "JSON output").

JSON keys are part of the interface: add new ones, never rename. Addresses are
plain strings without brackets or prefix; absent values are null.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple
from typing import Mapping as MappingT

from portmapctl.core.status import Status
from portmapctl.iptables.inventory import ChainInfo, Mapping

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Span, Text

    from portmapctl.ops.add import AddResult
    from portmapctl.ops.check import CheckResult, Problem
    from portmapctl.ops.flush_udp import Doomed, FlushResult
    from portmapctl.ops.gc import GcChain, GcResult

STATUS_STYLE = {
    Status.OK: "green",
    Status.STALE: "yellow",
    Status.SHADOWED: "red",
    Status.ORPHAN: "yellow",
    Status.INCOMPLETE: "red",
    Status.LEGACY: "magenta",
    Status.DEAD: "red",
    Status.ZOMBIE: "yellow",
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
    backend = getattr(m, "backend", None)
    if backend is not None:
        # nftables rows (iptables ones get the key with JSON schema 2).
        doc["backend"] = backend
        doc["chain_type"] = getattr(m, "chain_type", None)
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


def grid(headers: List[str], rows: List[List[str]], status: List[Iterable[str]]) -> Text:
    """Columns padded to width, the last one (statuses) coloured.

    A rich Table measures every cell and takes about 1 s for 2,000 rows; this is a
    single Text and takes a few milliseconds (SPEC §6: `list` of 1,000 containers).
    """
    from rich.control import strip_control_codes
    from rich.text import Text

    if all(len(row) == len(headers) for row in rows):
        columns = list(zip(*rows)) or [()] * len(headers)
        widths = [max([len(h), *map(len, column)]) for h, column in zip(headers, columns)]
    else:
        widths = [len(h) for h in headers]
        for row in rows:
            widths = [max(w, len(cell)) for w, cell in zip(widths, row)]
    status = [list(words) for words in status]  # iterables may be read twice below
    plain, spans = _grid_text(headers, widths, rows, status, _same)
    if strip_control_codes(plain) != plain:
        # Text.append drops control codes from each piece: offsets must be counted
        # after that (rare: a name from a dump with a control character in it).
        plain, spans = _grid_text(headers, widths, rows, status, strip_control_codes)
    out = Text(plain, spans=spans)
    out.rstrip()
    return out


def _same(text: str) -> str:
    return text


def _grid_text(
    headers: List[str],
    widths: List[int],
    rows: List[List[str]],
    status: List[List[str]],
    clean: Callable[[str], str],
) -> Tuple[str, List[Span]]:
    """The grid's text and style spans, as Text.append piece by piece would make them.

    Put together here and handed to Text once: Text.append per piece took 0.1 s for
    10,000 rows.
    """
    from rich.text import Span

    header = clean("  ".join(h.ljust(w) for h, w in zip(headers, widths)) + "  STATUS\n")
    pieces = [header]
    spans = [Span(0, len(header), "bold")]
    offset = len(header)
    for row, words in zip(rows, status):
        line = clean("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  ")
        pieces.append(line)
        offset += len(line)
        for i, word in enumerate(words):
            if i:
                pieces.append(",")
                offset += 1
            style = STATUS_STYLE.get(word, "")
            word_text = clean(word)
            if style and word:
                spans.append(Span(offset, offset + len(word_text), style))
            pieces.append(word_text)
            offset += len(word_text)
        pieces.append("\n")
        offset += 1
    return "".join(pieces), spans


def list_table(
    mappings: List[Mapping],
    chains: List[ChainInfo],
    conntrack: Optional[MappingT[Mapping, int]] = None,
) -> Text:
    headers = ["NETWORK", "CONTAINER", "FAM", "PROTO", "HOST", "CONTAINER ADDR", "SNAT", "CHAIN"]
    if conntrack is not None:
        headers.append("CONNTRACK")
    rows: List[List[str]] = []
    statuses: List[Iterable[str]] = []
    for m in mappings:
        row = [
            m.network or "-",
            short_id(m.container_id),
            f"v{m.family}",
            m.protocol,
            host_address(m),
            container_address(m),
            "yes" if m.snat else "no",
            _chain_cell(m),
        ]
        if conntrack is not None:
            row.append(str(conntrack.get(m, 0)) if m.protocol == "udp" else "-")
        rows.append(row)
        statuses.append(m.status)
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
        rows.append(row)
        statuses.append(c.status)
    return grid(headers, rows, statuses)


def _chain_cell(m: Mapping) -> str:
    """iptables: the CNI-DN- chain; nftables: `nft:` + the chain of the rule."""
    if getattr(m, "backend", None) == "nftables":
        return f"nft:{m.chain}"
    return m.chain


def add_json(result: AddResult) -> Dict[str, Any]:
    return {
        "dry_run": result.dry_run,
        "changed": result.changed,
        "chains": list(result.chains),
        "transaction": {str(f): text for f, text in sorted(result.transactions.items())},
    }


def transactions_text(transactions: MappingT[Any, str]) -> str:
    """Restore texts per family, each under a `# IPv4: iptables-restore --noflush` line;
    the nftables transaction (key "nft", both families) under `# nftables: nft -f -`."""

    def header(key: Any) -> str:
        if key == "nft":
            return "# nftables: nft -f -"
        return f"# IPv{key}: {'ip6tables' if key == 6 else 'iptables'}-restore --noflush"

    return "".join(
        f"{header(key)}\n{text}"
        for key, text in sorted(transactions.items(), key=lambda kv: (kv[0] == "nft", str(kv[0])))
    )


# --- check ---------------------------------------------------------------------------


def problem_json(p: Problem) -> Dict[str, Any]:
    return {
        "kind": p.kind,
        "family": p.family,
        "chain": p.chain,
        "network": p.network,
        "container_id": p.container_id,
        "detail": p.detail,
        "fix": p.fix,
        "why": p.why,
    }


def check_json(result: CheckResult) -> Dict[str, Any]:
    """SPEC §3: healthy, repaired, problems; plus what a repair fixed."""
    document: Dict[str, Any] = {
        "healthy": result.healthy,
        "repaired": result.repaired,
        "problems": [problem_json(p) for p in result.problems],
        "fixed": [problem_json(p) for p in result.fixed],
    }
    if result.unrepaired:  # only after a repair that had to leave containers out
        document["unrepaired"] = [
            {"family": f, "network": n, "container_id": c, "chain": chain, "why": why}
            for f, n, c, chain, why in result.unrepaired
        ]
    return document


def _families_text(families: Iterable[int]) -> str:
    return " and ".join(f"IPv{f}" for f in families) or "no family"


def check_healthy_line(result: CheckResult) -> str:
    """The one reassuring line of a healthy check."""
    where = _families_text(result.families)
    if result.scope == "mapping":
        return f"healthy: {result.chain} and its entry rules are in place ({where})"
    if not result.cache_present:
        return (
            f"healthy: {result.chains_seen} portmap chains look sound ({where});"
            " no CNI cache to compare them with"
        )
    if not result.mappings_checked and not result.chains_seen:
        return f"healthy: no cached port mappings and no portmap chains ({where})"
    return (
        f"healthy: all {result.mappings_checked} cached port mappings are in place ({where}),"
        " with their top-level chains and jumps; nothing stale, orphaned or shadowed"
    )


def check_fixed_lines(result: CheckResult) -> List[str]:
    """What a repair did, one line per problem it fixed."""
    return [
        f"repaired: IPv{p.family} {p.kind} {p.chain or ''}"
        + (
            f" ({p.network or '?'}/{short_id(p.container_id)})"
            if p.network or p.container_id
            else ""
        )
        for p in result.fixed
    ]


def check_table(problems: Iterable[Problem]) -> Table:
    """One row per problem: what, where, why it matters, what fixes it."""
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("KIND", no_wrap=True, style="red")
    table.add_column("FAM", no_wrap=True)
    table.add_column("CHAIN", no_wrap=True)
    table.add_column("CONTAINER", no_wrap=True)
    table.add_column("PROBLEM", ratio=3)
    table.add_column("WHY IT MATTERS", ratio=2)
    table.add_column("FIX", ratio=2)
    for p in problems:
        who = "-"
        if p.network or p.container_id:
            who = f"{p.network or '?'}/{short_id(p.container_id)}"
        family = f"v{p.family}" if p.family else "-"
        table.add_row(*_cells([p.kind, family, p.chain or "-", who, p.detail, p.why, p.fix]))
    return table


# --- gc ---------------------------------------------------------------------------


def gc_chain_json(c: GcChain, pending: bool = False) -> Dict[str, Any]:
    doc: Dict[str, Any] = {
        "chain": c.chain,
        "family": c.family,
        "kind": c.kind,
        "network": c.network,
        "container_id": c.container_id,
        "host_ports": [{"protocol": proto, "port": port} for proto, port in c.host_ports],
    }
    if pending:
        doc["seen_seconds"] = c.seen_seconds
    return doc


def gc_json(result: GcResult) -> Dict[str, Any]:
    return {
        "dry_run": result.dry_run,
        "removed": [gc_chain_json(c) for c in result.removed],
        "pending": [gc_chain_json(c, pending=True) for c in result.pending],
        "kept": result.kept,
        "conntrack_deleted": result.conntrack_deleted,
        # Added key: shared chains removed once empty (the legacy CNI-HOSTPORT-SNAT).
        "shared_removed": [{"chain": name, "family": fam} for fam, name in result.shared_removed],
    }


def _ports_cell(c: GcChain) -> str:
    return ",".join(f"{port}/{proto}" for proto, port in c.host_ports) or "-"


def _age(seconds: float) -> str:
    whole = int(seconds)
    if whole < 120:
        return f"{whole}s"
    if whole < 7200:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def gc_table(result: GcResult, min_age: Optional[float] = None) -> Text:
    """One row per chain removed (or, in a dry run, to be removed) and per pending one.

    A plain grid, not a rich Table: gc of 1,000 containers lists 1,000 rows.
    """
    headers = ["FAM", "KIND", "NETWORK", "CONTAINER", "HOST PORTS", "CHAIN", "SEEN"]
    rows: List[List[str]] = []
    statuses: List[Iterable[str]] = []
    verb = "would remove" if result.dry_run else "removed"
    for c in result.removed:
        rows.append(
            [f"v{c.family}", c.kind, c.network or "-", short_id(c.container_id)]
            + [_ports_cell(c), c.chain, _age(c.seen_seconds)]
        )
        statuses.append([verb])
    for family, name in result.shared_removed:
        rows.append([f"v{family}", "shared", "-", "-", "-", name, "-"])
        statuses.append([verb])
    waiting = "pending"
    of = f" of {_age(min_age)}" if min_age is not None else ""
    for c in result.pending:
        rows.append(
            [f"v{c.family}", c.kind, c.network or "-", short_id(c.container_id)]
            + [_ports_cell(c), c.chain, _age(c.seen_seconds) + of]
        )
        statuses.append([waiting])
    return grid(headers, rows, statuses)


def count(number: int, word: str) -> str:
    """`1 chain`, `2 chains`."""
    return f"{number} {word}" + ("" if number == 1 else "s")


def gc_summary(result: GcResult) -> str:
    """One line for a cron log."""
    containers = {(c.network, c.container_id) for c in result.removed if c.container_id}
    verb = "would remove" if result.dry_run else "removed"
    parts = [
        f"{verb} {count(len(result.removed), 'chain')} of {count(len(containers), 'container')}"
    ]
    if result.shared_removed:
        parts[0] += " and " + ", ".join(f"{name} (v{fam})" for fam, name in result.shared_removed)
    parts.append(f"{len(result.pending)} pending")
    parts.append(f"{result.kept} kept")
    if not result.dry_run:
        deleted = result.conntrack_deleted
        parts.append(f"{deleted} UDP conntrack entr{'y' if deleted == 1 else 'ies'} deleted")
    return "gc" + (" (dry run)" if result.dry_run else "") + ": " + ", ".join(parts)


# --- flush-udp -------------------------------------------------------------------------

FLUSH_WHY = {
    "mapped": "mapped host port",
    "given": "port given",
    "old-destination": "old DNAT destination: the port now goes to {wanted}",
    "not-dnated": "never DNATed: bypasses the mapping to {wanted}",
    "unmapped": "DNATed, but nothing maps this port now",
}
FLUSH_STYLE = {"old-destination": "red", "not-dnated": "red", "unmapped": "yellow"}


def flush_why(d: Doomed) -> str:
    return FLUSH_WHY.get(d.reason, d.reason).format(wanted=", ".join(d.wanted) or "-")


def flush_json(result: FlushResult) -> Dict[str, Any]:
    """SPEC §3: dry_run, deleted (in a dry run: what would be), count; plus why."""
    return {
        "dry_run": result.dry_run,
        "deleted": [
            {
                "family": d.entry.family,
                "src": d.entry.src,
                "dst": d.entry.dst,
                "sport": d.entry.sport,
                "dport": d.entry.dport,
                "reply_src": d.entry.reply_src,
                "reply_sport": d.entry.reply_sport,
                "reason": d.reason,
            }
            for d in result.doomed
        ],
        "count": result.deleted,
    }


def _endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def flush_table(result: FlushResult) -> Text:
    """One line per entry: family, source, destination, ports, where the replies come
    from (the DNAT destination), why it goes. Plain padded columns, as `grid`: a rich
    Table would take seconds for 10,000 entries."""
    from rich.text import Text

    headers = ["FAM", "SOURCE", "DESTINATION", "PORTS", "REPLY FROM"]
    rows = [
        [
            f"v{d.entry.family}",
            d.entry.src,
            d.entry.dst,
            f"{d.entry.sport}->{d.entry.dport}",
            _endpoint(d.entry.reply_src, d.entry.reply_sport),
        ]
        for d in result.doomed
    ]
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row)]
    out = Text()
    out.append("  ".join(h.ljust(w) for h, w in zip(headers, widths)) + "  WHY\n", style="bold")
    for row, d in zip(rows, result.doomed):
        out.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  ")
        out.append(flush_why(d), style=FLUSH_STYLE.get(d.reason, ""))
        out.append("\n")
    out.rstrip()
    return out


def _flush_ports_text(result: FlushResult) -> str:
    families: Dict[int, List[str]] = {}
    for family, port in result.ports:
        families.setdefault(port, []).append(f"v{family}")
    if len(families) > 8:
        return f"{len(families)} host ports"
    shown = ", ".join(f"{port} ({'/'.join(fams)})" for port, fams in sorted(families.items()))
    return ("host port " if len(families) == 1 else "host ports ") + shown


def flush_summary(result: FlushResult, container: Optional[str] = None) -> str:
    """The one line that says what happened (or would)."""
    if not result.ports:
        whose = f" of a container {container}*" if container else ""
        return f"no mapped UDP host ports{whose}: nothing to flush"
    count = result.deleted
    noun = "entry" if count == 1 else "entries"
    verb = "would delete" if result.dry_run else "deleted"
    line = f"{verb} {count} UDP conntrack {noun} to {_flush_ports_text(result)}"
    if result.stale_only and result.kept:
        line += f"; kept {result.kept} that reach their container or the host"
    gone = len(result.doomed) - result.deleted
    if not result.dry_run and gone > 0:
        line += f"; {gone} had gone already"
    return line
