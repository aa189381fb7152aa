"""What `portmapctl flush-udp` does once its options are parsed: by typer
(cli/flush_udp.py) or by the fast path (cli/list_fast.py). No typer here."""

from __future__ import annotations

from typing import List, Optional

from portmapctl.cli._common import Common


def run(
    common: Common,
    *,
    port: Optional[List[str]] = None,
    container: Optional[str] = None,
    stale_only: bool = False,
    dry_run: bool = False,
) -> None:
    """`flush-udp` with its options as typer hands them."""
    from portmapctl import render
    from portmapctl.core import validate
    from portmapctl.ops.flush_udp import flush
    from portmapctl.ops.node import opened

    out = common.out()
    ports = None if port is None else sorted({validate.port(p, "--port") for p in port})
    if container is not None:
        validate.cni_name(container, "container ID")
    options = common.node_options()
    with (
        opened(options, write=not dry_run) as node,
        out.progress("deleting UDP conntrack entries") as progress,
    ):
        result = flush(
            node,
            ports=ports,
            container=container,
            stale_only=stale_only,
            dry_run=dry_run,
            progress=progress,
        )
    for warning in result.warnings:
        out.warn(warning)
    cache = common.cache()
    out.cache_note(cache)  # (SPEC §3: every command says so)
    if out.json:
        out.print_json(render.flush_json(result, cache.json()))
        return
    if result.shown and (dry_run or common.verbose):
        # Cut to the terminal's width unless everything was asked for whole.
        whole = out.no_trunc or out.wide
        width = None if whole else out.width()
        out.show(render.flush_table(result, width=width, header=not out.no_headers))
        out.blank()
    out.summary(render.flush_summary(result, container, ports or ()))
