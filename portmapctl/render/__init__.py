"""Library results -> tables and JSON documents (SPEC §3 "Output contract", "JSON output").

JSON keys are part of the interface: add new ones, never rename. Schema 2 speaks one
vocabulary (docs/json.md, docs/schema/*.json): `chain`, `chain_type`, `backend`,
`network`, `container_id`, `family`, `protocol`, `host_ip`, `host_port`,
`container_ip`, `container_port`; `kind` is only a problem's kind; `fix` is a command
or null. Addresses are plain strings without brackets or prefix; absent values are null.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple
from typing import Mapping as MappingT

from portmapctl.core.status import Status
from portmapctl.iptables.inventory import ChainInfo, Mapping

if TYPE_CHECKING:
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


SCHEMA = 2
BACKEND = "iptables"  # rows and chains of the plugin's iptables backend


def backend_of_chain(chain: Optional[str]) -> Optional[str]:
    """Problems and gc rows name an nft rule's chain `nft:...` (ops/check/nft.py, ops/gc.py)."""
    if chain is None:
        return None
    return "nftables" if chain == "nft" or chain.startswith("nft:") else BACKEND
SHORT_ID = 12  # as podman and docker show container IDs


def short_id(container_id: Optional[str], full: bool = False) -> str:
    if not container_id:
        return "-"
    return container_id if full else container_id[:SHORT_ID]


def document(cache: Optional[MappingT[str, Any]], **body: Any) -> Dict[str, Any]:
    """A schema 2 document: `schema` and `cache` first, then the command's keys."""
    return {"schema": SCHEMA, "cache": dict(cache) if cache is not None else None, **body}


def sort_key(m: Mapping) -> Tuple[Any, ...]:
    """SPEC §3 list: network, container, family, protocol, host port (a container's
    rows stand together; unnamed ones last)."""
    return (
        m.network is None,
        m.network or "",
        m.container_id is None,
        m.container_id or "",
        m.family,
        m.protocol,
        m.host_port,
        m.host_ip or "",
        m.chain,
    )


def chain_sort_key(c: ChainInfo) -> Tuple[Any, ...]:
    return (
        c.network is None,
        c.network or "",
        c.container_id is None,
        c.container_id or "",
        c.family,
        c.name,
    )


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
        "backend": BACKEND,
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
        "backend": BACKEND,
        "chain": c.name,
        "chain_type": c.kind,
        "family": c.family,
        "network": c.network,
        "container_id": c.container_id,
        "status": list(c.status),
    }


def list_json(
    mappings: Iterable[Mapping],
    chains: Iterable[ChainInfo],
    conntrack: Optional[MappingT[Mapping, int]] = None,
    cache: Optional[MappingT[str, Any]] = None,
    total: Optional[int] = None,
) -> Dict[str, Any]:
    rows = [mapping_json(m, conntrack) for m in mappings]
    return document(
        cache,
        mappings=rows,
        chains=[chain_json(c) for c in chains],
        # How many mappings there are before the filters (equal to len(mappings) without).
        total_mappings=len(rows) if total is None else total,
    )


def list_summary(
    mappings: List[Mapping], chains: List[ChainInfo], total: Optional[int] = None
) -> str:
    """`7 mappings of 4 containers: 5 ok, 1 stale, 1 shadowed` (statuses counted per row;
    chains without a DNAT rule, such as legacy SN- chains, counted apart); with filters
    that leave fewer, `2 of 7 mappings match: ...`."""
    with_rows = {(m.chain, m.family) for m in mappings}
    bare = [c for c in chains if (c.name, c.family) not in with_rows]
    containers = {m.container_id or m.chain for m in mappings} | {
        c.container_id or c.name for c in bare
    }
    words: Dict[str, int] = {}
    for status in [m.status for m in mappings] + [c.status for c in bare]:
        for word in status:
            words[str(word)] = words.get(str(word), 0) + 1
    if total is not None and total != len(mappings):
        head = f"{len(mappings)} of {count(total, 'mapping')} match"
    else:
        head = f"{count(len(mappings), 'mapping')} of {count(len(containers), 'container')}"
    if bare:
        head += f", {count(len(bare), 'chain')} without a mapping"
    order = [str(s) for s in STATUS_STYLE]
    ranked = sorted(words.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99)
    return head + (": " + ", ".join(f"{n} {w}" for w, n in ranked) if ranked else "")


def grid(
    headers: List[str],
    rows: List[List[str]],
    status: List[Iterable[str]],
    header: bool = True,
    status_header: str = "STATUS",
) -> Text:
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
    plain, spans = _grid_text(headers, widths, rows, status, _same, header, status_header)
    if strip_control_codes(plain) != plain:
        # Text.append drops control codes from each piece: offsets must be counted
        # after that (rare: a name from a dump with a control character in it).
        plain, spans = _grid_text(
            headers, widths, rows, status, strip_control_codes, header, status_header
        )
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
    header_shown: bool = True,
    status_header: str = "STATUS",
) -> Tuple[str, List[Span]]:
    """The grid's text and style spans, as Text.append piece by piece would make them.

    Put together here and handed to Text once: Text.append per piece took 0.1 s for
    10,000 rows.
    """
    from rich.text import Span

    header = clean("  ".join(h.ljust(w) for h, w in zip(headers, widths)) + f"  {status_header}")
    header = header.rstrip() + "\n"
    pieces = [header] if header_shown else []
    spans = [Span(0, len(header), "bold")] if header_shown else []
    offset = len(header) if header_shown else 0
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
    wide: bool = True,
    full_ids: bool = False,
    header: bool = True,
) -> Text:
    """The list table; without `wide` the CHAIN column is left out (80 columns)."""
    headers = ["NETWORK", "CONTAINER", "FAM", "PROTO", "HOST", "CONTAINER ADDR", "SNAT", "CHAIN"]
    if conntrack is not None:
        headers.append("CONNTRACK")
    table = _list_grid(headers, mappings, chains, conntrack, full_ids)
    if not wide:
        column = headers.index("CHAIN")
        del headers[column]
        for row in table[0]:
            del row[column]
    return grid(headers, table[0], table[1], header=header)


def _list_grid(
    headers: List[str],
    mappings: List[Mapping],
    chains: List[ChainInfo],
    conntrack: Optional[MappingT[Mapping, int]],
    full_ids: bool,
) -> Tuple[List[List[str]], List[Iterable[str]]]:
    rows: List[List[str]] = []
    statuses: List[Iterable[str]] = []
    for m in mappings:
        row = [
            m.network or "-",
            short_id(m.container_id, full_ids),
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
            short_id(c.container_id, full_ids),
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
    return rows, statuses


def _chain_cell(m: Mapping) -> str:
    """iptables: the CNI-DN- chain; nftables: `nft:` + the chain of the rule."""
    if getattr(m, "backend", None) == "nftables":
        return f"nft:{m.chain}"
    return m.chain


def add_json(
    result: AddResult,
    cache: Optional[MappingT[str, Any]] = None,
    warnings: Iterable[str] = (),
) -> Dict[str, Any]:
    return document(
        cache,
        backend=getattr(result, "backend", BACKEND),
        dry_run=result.dry_run,
        changed=result.changed,
        chains=list(result.chains),
        transaction={str(f): text for f, text in sorted(result.transactions.items())},
        warnings=[*warnings, *result.warnings],
    )


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


_COMMAND = re.compile(r"(?:^|: )((?:portmapctl|ip6?tables(?:-\w+)?) [^`]*?)(?: \(([^()]*)\))?$")


def split_fix(fix: str) -> Tuple[Optional[str], str]:
    """A problem's fix as (the command, prose around it): `fix` in JSON is a command or
    null, prose goes with the why (SPEC §3 JSON)."""
    match = _COMMAND.search(fix or "")
    if match is None:
        return None, fix or ""
    before = fix[: match.start()].strip()
    prose = "; ".join(part for part in (before, match.group(2) or "") if part)
    return match.group(1), prose


def _problem_backend(p: Problem) -> Optional[str]:
    """nftables for the nft problems, none for a container in both, else iptables."""
    if str(p.kind) == "both-backends":
        return None
    if str(p.kind).startswith("nft-"):
        return "nftables"
    return backend_of_chain(p.chain) or BACKEND


def problem_json(p: Problem) -> Dict[str, Any]:
    command, prose = split_fix(p.fix)
    why = "; ".join(part for part in (p.why, prose) if part)
    return {
        "kind": str(p.kind),
        "backend": _problem_backend(p),
        "family": p.family,
        "chain": p.chain,
        "network": p.network,
        "container_id": p.container_id,
        "detail": p.detail,
        "why": why,
        "fix": command,
    }


def check_json(result: CheckResult, cache: Optional[MappingT[str, Any]] = None) -> Dict[str, Any]:
    """SPEC §3: healthy, repaired, problems; plus what a repair fixed."""
    doc = document(
        cache,
        healthy=result.healthy,
        repaired=result.repaired,
        problems=[problem_json(p) for p in result.problems],
        fixed=[problem_json(p) for p in result.fixed],
        summary=check_summary(result),
    )
    if result.unrepaired:  # only after a repair that had to leave containers out
        doc["unrepaired"] = [
            {"family": f, "network": n, "container_id": c, "chain": chain, "why": why}
            for f, n, c, chain, why in result.unrepaired
        ]
    return doc


_FULL_ID = re.compile(r"\b([0-9a-f]{12})[0-9a-f]{52}\b")


def _shorten_ids(text: str, ids: Iterable[str]) -> str:
    """Full container IDs in a problem's text as the 12 characters tables show."""
    text = _FULL_ID.sub(r"\1", text)
    for full in ids:
        if len(full) > SHORT_ID and full in text:
            text = text.replace(full, full[:SHORT_ID])
    return text


def _cut(text: str, room: int) -> str:
    return text if len(text) <= room else text[: max(room - 1, 0)] + "…"


def _wrap(text: str, width: Optional[int], indent: str) -> List[str]:
    """`text` as lines of at most `width` (None: one line), continuation indented; words
    are never cut (a fix command stays whole on its own line)."""
    if width is None:
        return [text]
    import textwrap

    return textwrap.wrap(
        text,
        width=width,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    ) or [""]


def check_text(
    result: CheckResult,
    width: Optional[int] = None,
    wide: bool = False,
    full_ids: bool = False,
    header: bool = True,
) -> Text:
    """SPEC §3 check: one row per problem (KIND, FAM, CONTAINER, PROBLEM; wide adds
    NETWORK and CHAIN), then once per kind why it matters and the fix, whole; then the
    summary line. `width` is the terminal's (None: piped, nothing is cut): rows are cut
    to it with `…` unless `full_ids` (--no-trunc), so no row wraps."""
    from rich.text import Text

    problems = list(result.problems)
    ids = {p.container_id for p in problems if p.container_id}
    headers = ["KIND", "FAM", "CONTAINER"] + (["NETWORK", "CHAIN"] if wide else []) + ["PROBLEM"]
    rows = []
    for p in problems:
        detail = p.detail if full_ids else _shorten_ids(p.detail, ids)
        row = [str(p.kind), f"v{p.family}" if p.family else "-", short_id(p.container_id, full_ids)]
        if wide:
            row += [p.network or "-", p.chain or "-"]
        rows.append(row + [detail])
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers[:-1])]
    lead = sum(widths) + 2 * len(widths)
    cut = width is not None and not full_ids and not wide
    out = Text()
    if header:
        out.append(
            ("  ".join(h.ljust(w) for h, w in zip(headers, widths)) + "  " + headers[-1]).rstrip()
            + "\n",
            style="bold",
        )
    for row in rows:
        problem = _cut(row[-1], width - lead) if cut and width is not None else row[-1]
        out.append(row[0].ljust(widths[0]), style="red")
        line = "  " + "  ".join(c.ljust(w) for c, w in zip(row[1:-1], widths[1:])) + "  " + problem
        out.append(line.rstrip() + "\n")
    # Each kind's why and fix once, in the order the kinds first occur.
    explained: Dict[str, List[Tuple[str, Optional[str]]]] = {}
    for p in problems:
        command, prose = split_fix(p.fix)
        why = "; ".join(part for part in (p.why, prose) if part)
        entry = (why, command)
        if entry not in explained.setdefault(str(p.kind), []):
            explained[str(p.kind)].append(entry)
    if explained:
        out.append("\n")
    for kind, entries in explained.items():
        for why, command in entries:
            out.append(kind, style="bold")
            wrapped = _wrap(f"{kind}: {why}", width, "  ")
            out.append(wrapped[0][len(kind) :] + "\n")
            for line in wrapped[1:]:
                out.append(line + "\n")
            if command:
                out.append("  fix: ", style="bold")
                out.append(command + "\n")
    out.rstrip()
    return out


def check_summary(result: CheckResult) -> str:
    """The check's one summary line: healthy; or the count per kind, with the command
    when one command fixes them all (`1094 stale -> portmapctl gc`)."""
    if result.healthy:
        return check_healthy_line(result)
    counts: Dict[str, int] = {}
    commands: Dict[Optional[str], None] = {}
    for p in result.problems:
        counts[str(p.kind)] = counts.get(str(p.kind), 0) + 1
        commands[split_fix(p.fix)[0]] = None
    kinds = ", ".join(f"{number} {kind}" for kind, number in counts.items())
    if len(commands) == 1 and None not in commands:
        return f"{kinds} -> {next(iter(commands))}"
    total = len(result.problems)
    return f"{count(total, 'problem')}: {kinds} (fixes above)"


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
        # One chain per cached container and family: that is what was compared.
        f"healthy: all {count(result.mappings_checked, 'chain')} of the cached containers"
        f" are in place ({where}),"
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


# --- gc ---------------------------------------------------------------------------


def _host_ports_json(c: GcChain) -> List[Dict[str, Any]]:
    return [{"protocol": proto, "host_port": port} for proto, port in c.host_ports]


def gc_chain_json(
    c: GcChain, pending: bool = False, min_age: Optional[float] = None
) -> Dict[str, Any]:
    doc: Dict[str, Any] = {
        "backend": backend_of_chain(c.chain),
        "chain": c.chain,
        "chain_type": c.kind,
        "family": c.family,
        "network": c.network,
        "container_id": c.container_id,
        "host_ports": _host_ports_json(c),
    }
    if pending:
        doc["seen_seconds"] = c.seen_seconds
        doc["removable_in_seconds"] = (
            max(min_age - c.seen_seconds, 0.0) if min_age is not None else None
        )
    return doc


def gc_json(
    result: GcResult,
    min_age: Optional[float] = None,
    cache: Optional[MappingT[str, Any]] = None,
) -> Dict[str, Any]:
    return document(
        cache,
        dry_run=result.dry_run,
        min_age_seconds=min_age,
        removed=[gc_chain_json(c) for c in result.removed],
        pending=[gc_chain_json(c, pending=True, min_age=min_age) for c in result.pending],
        kept=result.kept,
        conntrack_deleted=result.conntrack_deleted,
        # Shared chains removed once empty (the legacy CNI-HOSTPORT-SNAT).
        shared_removed=[
            {"backend": BACKEND, "chain": name, "family": fam}
            for fam, name in result.shared_removed
        ],
        warnings=list(result.warnings),
    )


def _ports_cell(c: GcChain) -> str:
    return ",".join(f"{port}/{proto}" for proto, port in c.host_ports) or "-"


def duration_text(seconds: float) -> str:
    """`45s`, `1m40s`, `2h05m`: what --min-age accepts back."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


_age = duration_text


def removable_text(c: GcChain, min_age: float, now: Optional[float] = None) -> str:
    """`removable in 1m40s, at 02:19:02` (local time): when a later run removes it."""
    import time

    left = max(min_age - c.seen_seconds, 0.0)
    at = time.strftime("%H:%M:%S", time.localtime((time.time() if now is None else now) + left))
    return f"removable in {duration_text(left + 0.999)}, at {at}"


def gc_table(
    result: GcResult,
    min_age: Optional[float] = None,
    preview: bool = False,
    wide: bool = False,
    full_ids: bool = False,
    header: bool = True,
) -> Text:
    """One row per chain removed (in a dry run or the preview: to be removed) and per
    pending one, with when a later run can remove it; TYPE and CHAIN only when `wide`
    (the table fits 80 columns without them).

    A plain grid, not a rich Table: gc of 1,000 containers lists 1,000 rows.
    """
    headers = ["FAM", "TYPE", "NETWORK", "CONTAINER", "HOST PORTS", "CHAIN", "SEEN"]
    rows: List[List[str]] = []
    statuses: List[Iterable[str]] = []
    verb = "to remove" if preview else "would remove" if result.dry_run else "removed"

    def row(c: GcChain) -> List[str]:
        return [f"v{c.family}", c.kind, c.network or "-", short_id(c.container_id, full_ids)] + [
            _ports_cell(c),
            c.chain,
            duration_text(c.seen_seconds),
        ]

    for c in result.removed:
        rows.append(row(c))
        statuses.append([verb])
    for family, name in result.shared_removed:
        rows.append([f"v{family}", "shared", "-", "-", "-", name, "-"])
        statuses.append([verb])
    for c in result.pending:
        rows.append(row(c))
        statuses.append([removable_text(c, min_age) if min_age is not None else "pending"])
    if not wide:
        for column in (headers.index("CHAIN"), headers.index("TYPE")):
            del headers[column]
            for cells in rows:
                del cells[column]
    return grid(headers, rows, statuses, header=header)


def count(number: int, word: str) -> str:
    """`1 chain`, `2 chains`."""
    return f"{number} {word}" + ("" if number == 1 else "s")


def gc_summary(result: GcResult, asked_dry_run: Optional[bool] = None) -> str:
    """One line for a cron log; "(dry run)" only when --dry-run was asked."""
    dry_run = result.dry_run if asked_dry_run is None else asked_dry_run
    containers = {(c.network, c.container_id) for c in result.removed if c.container_id}
    verb = "would remove" if result.dry_run else "removed"
    parts = [
        f"{verb} {count(len(result.removed), 'chain')} of {count(len(containers), 'container')}"
    ]
    if not result.changes:
        parts = ["nothing to remove now"]
    if result.shared_removed:
        parts[0] += " and " + ", ".join(f"{name} (v{fam})" for fam, name in result.shared_removed)
    parts.append(f"{len(result.pending)} pending")
    parts.append(f"{result.kept} kept")
    if not result.dry_run and result.changes:
        deleted = result.conntrack_deleted
        parts.append(f"{deleted} UDP conntrack entr{'y' if deleted == 1 else 'ies'} deleted")
    return "gc" + (" (dry run)" if dry_run else "") + ": " + ", ".join(parts)


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


def flush_json(result: FlushResult, cache: Optional[MappingT[str, Any]] = None) -> Dict[str, Any]:
    """SPEC §3: dry_run, deleted (in a dry run: what would be), count; plus why.
    The original destination is the mapped host port: `host_ip`/`host_port`."""
    return document(
        cache,
        dry_run=result.dry_run,
        deleted=[
            {
                "family": d.entry.family,
                "protocol": "udp",
                "src": d.entry.src,
                "sport": d.entry.sport,
                "host_ip": d.entry.dst,
                "host_port": d.entry.dport,
                "reply_src": d.entry.reply_src,
                "reply_sport": d.entry.reply_sport,
                "reason": d.reason,
            }
            for d in result.doomed
        ],
        count=result.deleted,
    )


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
