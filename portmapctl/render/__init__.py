"""Library results -> tables and JSON documents (SPEC §3 "Output contract", "JSON output").

One module per job: `table` (the one grid builder and column fitting), `json` (the
schema 2 documents of every command), and one per command for its table, text and
summary line (`list`, `check`, `gc`, `flush_udp`, `add`). The names are gathered here,
so commands write `render.check_text(...)`. Nothing here imports rich at import time:
only drawing a table does.

Each submodule is imported when one of its names is first used (module __getattr__),
not with the package: `add` needs three of the seven, and importing all of them costs
every run ~10M instructions (SPEC §6).
"""

from importlib import import_module
from typing import Any, Dict, List

# Which submodule each name comes from.
_HOME: Dict[str, str] = {
    "transactions_text": "add",
    "check_fixed_lines": "check",
    "check_healthy_line": "check",
    "check_summary": "check",
    "check_text": "check",
    "problem_sort_key": "check",
    "sorted_problems": "check",
    "split_fix": "check",
    "FLUSH_STYLE": "flush_udp",
    "FLUSH_WHY": "flush_udp",
    "flush_summary": "flush_udp",
    "flush_table": "flush_udp",
    "flush_why": "flush_udp",
    "duration_text": "gc",
    "gc_summary": "gc",
    "gc_table": "gc",
    "removal_text": "gc",
    "removable_text": "gc",
    "BACKEND": "json",
    "SCHEMA": "json",
    "add_json": "json",
    "backend_of_chain": "json",
    "chain_json": "json",
    "check_json": "json",
    "document": "json",
    "flush_json": "json",
    "gc_chain_json": "json",
    "gc_json": "json",
    "list_json": "json",
    "mapping_json": "json",
    "problem_json": "json",
    "FLUSH_STALE": "list",
    "chain_sort_key": "list",
    "container_address": "list",
    "host_address": "list",
    "list_summary": "list",
    "list_table": "list",
    "sort_key": "list",
    "SHORT_ID": "table",
    "STATUS_STYLE": "table",
    "Piece": "table",
    "count": "table",
    "grid": "table",
    "short_id": "table",
    "status_text": "table",
    "table": "table",
    "unknown_chains": "table",
}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # the next use is a plain lookup
    return value


def __dir__() -> List[str]:
    return sorted({*globals(), *_HOME})


__all__ = [
    "BACKEND",
    "FLUSH_STALE",
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
    "problem_sort_key",
    "removable_text",
    "removal_text",
    "short_id",
    "sort_key",
    "sorted_problems",
    "split_fix",
    "status_text",
    "table",
    "transactions_text",
    "unknown_chains",
]
