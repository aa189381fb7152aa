"""`portmapctl flush-udp`: delete the UDP conntrack entries behind mapped host ports."""

from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator, List, Optional

import typer

from portmapctl import inputs, render
from portmapctl.cli._common import (
    DEFAULT_BACKEND,
    DEFAULT_FAMILY,
    DEFAULT_OUTPUT,
    Annotated,
    BackendOpt,
    CacheDirOpt,
    FamilyOpt,
    NetnsOpt,
    NoColorOpt,
    Output,
    OutputOpt,
    QuietOpt,
    VerboseOpt,
    node_options,
)
from portmapctl.node import DEFAULT_CACHE_DIR, opened

EXAMPLES = """
Examples:

  portmapctl flush-udp --stale-only --dry-run

  portmapctl flush-udp --port 5353 --port 8053

  portmapctl flush-udp --container 3f2a -o json
"""

# Below this many entries a deletion is over before a progress bar could be read.
PROGRESS_FROM = 2000


@contextlib.contextmanager
def _progress(out: Output) -> Iterator[Optional[Callable[[int, int], None]]]:
    """A progress bar on stderr for long deletions, only on a terminal and not -q."""
    if out.quiet or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    with contextlib.ExitStack() as stack:
        bar: List[Progress] = []

        def advance(done: int, total: int) -> None:
            if total < PROGRESS_FROM:
                return
            if not bar:
                console = Console(file=sys.stderr, no_color=out.no_color)
                bar.append(stack.enter_context(Progress(console=console, transient=True)))
                bar[0].add_task("deleting UDP conntrack entries", total=total)
            bar[0].update(bar[0].task_ids[0], completed=done)

        yield advance


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
            "--container", metavar="ID", help="Only this container's UDP host ports (ID prefix)."
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
    family: FamilyOpt = DEFAULT_FAMILY,
    netns: NetnsOpt = None,
    cni_cache_dir: CacheDirOpt = DEFAULT_CACHE_DIR,
    output: OutputOpt = DEFAULT_OUTPUT,
    no_color: NoColorOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Delete UDP conntrack entries to mapped host ports, so that their flows go
    through the current DNAT rules again (ends the UDP blackhole after a container
    moves)."""
    out = Output(output, no_color, quiet, verbose)
    ports = None if port is None else sorted({inputs.port(p, "--port") for p in port})
    if container is not None:
        inputs.cni_name(container, "container ID")
    # Imported here: `portmapctl --help` need not load the conntrack codec.
    from portmapctl.flush_udp import flush

    options = node_options(backend, family, netns, cni_cache_dir)
    with opened(options, write=not dry_run) as node, _progress(out) as progress:
        result = flush(
            node,
            ports=ports,
            container=container,
            stale_only=stale_only,
            dry_run=dry_run,
            progress=progress,
        )
    if out.json:
        out.print_json(render.flush_json(result))
        return
    if result.doomed and (dry_run or verbose):
        out.show(render.flush_table(result))
    if quiet and not result.deleted:
        return
    sys.stdout.write(render.flush_summary(result, container) + "\n")
