"""`portmapctl flush-udp`: delete the UDP conntrack entries behind mapped host ports."""

from __future__ import annotations

from typing import List, Optional

import typer

from portmapctl.cli._common import (
    Annotated,
    Common,
    common_options,
    complete_container,
)

EXAMPLES = """
Examples:

\b
  portmapctl flush-udp --stale-only --dry-run

\b
  portmapctl flush-udp --port 5353 --port 8053

\b
  portmapctl flush-udp --container 3f2a -o json
"""


@common_options
def flush_udp_command(
    common: Common,
    port: Annotated[
        Optional[List[str]],
        typer.Option(
            "--port",
            metavar="N",
            help="Only this host port (repeat for more); it need not be mapped any more.",
        ),
    ] = None,
    container: Annotated[
        Optional[str],
        typer.Option(
            "--container",
            metavar="ID",
            help="Only this container's UDP host ports (ID prefix).",
            autocompletion=complete_container,
        ),
    ] = None,
    stale_only: Annotated[
        bool,
        typer.Option(
            "--stale-only",
            help="Only entries that misroute: DNATed to an address that is not the"
            " container's now, or never DNATed.",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the entries, delete nothing.")
    ] = False,
) -> None:
    """Delete UDP conntrack entries to mapped host ports, so that their flows go
    through the current DNAT rules again (ends the UDP blackhole after a container
    moves)."""
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
    if out.json:
        out.print_json(render.flush_json(result, common.cache().json()))
        return
    if result.doomed and (dry_run or common.verbose):
        out.show(render.flush_table(result))
        out.blank()
    out.summary(render.flush_summary(result, container))
