"""Library results -> tables and JSON documents (SPEC §3 "Output contract", "JSON output").

One module per job: `table` (the one grid builder and column fitting), `json` (the
schema 2 documents of every command), and one per command for its table, text and
summary line (`list`, `check`, `gc`, `flush_udp`, `add`). The names are gathered here,
so commands write `render.check_text(...)`. Nothing here imports rich at import time:
only drawing a table does.
"""

from portmapctl.render.add import transactions_text
from portmapctl.render.check import (
    check_fixed_lines,
    check_healthy_line,
    check_summary,
    check_text,
    split_fix,
)
from portmapctl.render.flush_udp import (
    FLUSH_STYLE,
    FLUSH_WHY,
    flush_summary,
    flush_table,
    flush_why,
)
from portmapctl.render.gc import duration_text, gc_summary, gc_table, removable_text
from portmapctl.render.json import (
    BACKEND,
    SCHEMA,
    add_json,
    backend_of_chain,
    chain_json,
    check_json,
    document,
    flush_json,
    gc_chain_json,
    gc_json,
    list_json,
    mapping_json,
    problem_json,
)
from portmapctl.render.list import (
    chain_sort_key,
    container_address,
    host_address,
    list_summary,
    list_table,
    sort_key,
)
from portmapctl.render.table import (
    SHORT_ID,
    STATUS_STYLE,
    Piece,
    count,
    grid,
    short_id,
    status_text,
    table,
)

__all__ = [
    "BACKEND",
    "FLUSH_STYLE",
    "FLUSH_WHY",
    "SCHEMA",
    "SHORT_ID",
    "STATUS_STYLE",
    "Piece",
    "add_json",
    "backend_of_chain",
    "chain_json",
    "chain_sort_key",
    "check_fixed_lines",
    "check_healthy_line",
    "check_json",
    "check_summary",
    "check_text",
    "container_address",
    "count",
    "document",
    "duration_text",
    "flush_json",
    "flush_summary",
    "flush_table",
    "flush_why",
    "gc_chain_json",
    "gc_json",
    "gc_summary",
    "gc_table",
    "grid",
    "host_address",
    "list_json",
    "list_summary",
    "list_table",
    "mapping_json",
    "problem_json",
    "removable_text",
    "short_id",
    "sort_key",
    "split_fix",
    "status_text",
    "table",
    "transactions_text",
]
