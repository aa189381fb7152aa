"""`portmapctl flush-udp`: delete the UDP conntrack entries behind mapped host ports."""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from portmapctl.cli._common import (
    DEFAULT_BACKEND,
    DEFAULT_CACHE_DIRS,
    DEFAULT_FAMILY,
    DEFAULT_IPTABLES,
    DEFAULT_OUTPUT,
    Annotated,
    BackendOpt,
    CacheDirOpt,
    FamilyOpt,
    IptablesOpt,
    NetnsOpt,
    NoColorOpt,
    Output,
    OutputOpt,
    QuietOpt,
    VerboseOpt,
    complete_container,
    node_options,
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


def flush_udp_command(
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
    backend: BackendOpt = DEFAULT_BACKEND,
    iptables: IptablesOpt = DEFAULT_IPTABLES,
    family: FamilyOpt = DEFAULT_FAMILY,
    netns: NetnsOpt = None,
    cni_cache_dir: CacheDirOpt = DEFAULT_CACHE_DIRS,
    output: OutputOpt = DEFAULT_OUTPUT,
    no_color: NoColorOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Delete UDP conntrack entries to mapped host ports, so that their flows go
    through the current DNAT rules again (ends the UDP blackhole after a container
    moves)."""
    from portmapctl import render
    from portmapctl.core import validate
    from portmapctl.ops.flush_udp import flush
    from portmapctl.ops.node import opened

    out = Output(output, no_color, quiet, verbose)
    ports = None if port is None else sorted({validate.port(p, "--port") for p in port})
    if container is not None:
        validate.cni_name(container, "container ID")
    options = node_options(iptables, family, netns, cni_cache_dir, backend=backend)
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
        out.print_json(render.flush_json(result))
        return
    if result.doomed and (dry_run or verbose):
        out.show(render.flush_table(result))
    if quiet and not result.deleted:
        return
    sys.stdout.write(render.flush_summary(result, container) + "\n")
