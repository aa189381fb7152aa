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
            help="Only this container's flows: to its UDP host ports, on the host IPs its mappings are for (ID prefix, or the chain list names for a container it does not know).",
            autocompletion=complete_container,
        ),
    ] = None,
    stale_only: Annotated[
        bool,
        typer.Option(
            "--stale-only",
            help="Only entries that misroute: DNATed to an address and port that are not"
            " the container's now, or never DNATed.",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the entries, delete nothing.")
    ] = False,
) -> None:
    """Delete UDP conntrack entries to mapped host ports, so that their flows go
    through the current DNAT rules again (ends the UDP blackhole after a container
    moves)."""
    from portmapctl.cli import flush_udp_run

    flush_udp_run.run(
        common, port=port, container=container, stale_only=stale_only, dry_run=dry_run
    )
