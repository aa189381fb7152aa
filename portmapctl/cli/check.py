"""`portmapctl check`: find what is wrong with the node's portmap state; `--repair` it."""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, Iterator, List, Optional

import typer

from portmapctl.cli._common import (
    Annotated,
    CniBinDirOpt,
    Common,
    MappingOptions,
    MetricsFileOpt,
    NftSnapshotOpt,
    common_options,
    snapshot_files,
)
from portmapctl.cli.add import mapping_and_key, mapping_options, refuse_short_id
from portmapctl.cli.add_config import ForwardsNothing, spelling_of
from portmapctl.cli.metrics_file import Unrecorded, metrics_recording, node_unrecorded

if TYPE_CHECKING:
    from portmapctl.cli.output import Output
    from portmapctl.ops.check import CheckResult

EXAMPLES = """
Examples:

\b
  portmapctl check

\b
  portmapctl check --repair

\b
  portmapctl check -o json --cni-cache-dir /var/lib/cni

\b
  portmapctl check --network mynet --container abc123 --ip 10.88.0.5/16 \\
      -p 8080:80

\b
  portmapctl check --container abc123 --cni-config portmap.json --repair

Exit codes: 0 healthy (or repaired), 1 problems remain, 2 bad input (a malformed file
given, --cni-config or --snapshot; a malformed CNI cache entry is a warning), 3
environment.
"""


@common_options
@mapping_options
def check_command(
    common: Common,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Re-create what is missing (never deletes a live mapping), then check again.",
        ),
    ] = False,
    mapping: MappingOptions = MappingOptions(),
    no_flush_udp: Annotated[
        bool,
        typer.Option(
            "--no-flush-udp",
            help="With --repair: keep the UDP conntrack entries of re-created mappings.",
        ),
    ] = False,
    snapshot: Annotated[
        Optional[str],
        typer.Option(
            metavar="FILE",
            help="Check `iptables-save -t nat` output ('-' for stdin), not the kernel.",
        ),
    ] = None,
    snapshot6: Annotated[
        Optional[str], typer.Option(metavar="FILE", help="Check `ip6tables-save -t nat` output.")
    ] = None,
    nft_snapshot: NftSnapshotOpt = None,
    metrics_file: MetricsFileOpt = None,
    cni_bin_dir: CniBinDirOpt = None,
) -> int:
    """Check the node (or one mapping) for missing, stale, shadowed and broken chains:
    one row per problem, then why each kind matters and the command that fixes it."""
    # The library is imported here, not at the top: `--help` and other commands stay fast.
    from portmapctl import render
    from portmapctl.core.pause import gc_paused
    from portmapctl.errors import BadInput
    from portmapctl.iptables.access import restore_tools
    from portmapctl.ops import check as check_lib
    from portmapctl.ops.node import opened

    out = common.out()
    common = common.with_bin_dirs(cni_bin_dir)
    # Exit 1 (problems found) is a run that did its work. Only a check of the whole
    # node writes the file (one mapping's problems are not the node's, nor one
    # family's or backend's: the problems gauge has neither label, so the rest read as
    # zeros), and the node's file only a check of the node (not of a dump:
    # node_unrecorded; a dump's, asked for by name, holds what was read of it).
    unrecorded = (
        Unrecorded.ONE_MAPPING
        if mapping.given
        else node_unrecorded(common, snapshot, snapshot6, nft_snapshot)
    )
    metrics = metrics_recording(metrics_file, "check", common.cache_dirs, out, (0, 1), unrecorded)
    repaired: List[CheckResult] = []  # what repair returned, once it has
    with _saying_repaired(repaired), gc_paused(), metrics as recorder:
        mapping_given = mapping.given
        config = None
        forced = False  # the mapping's backend is --backend's (no config key names it)
        if mapping_given:
            try:
                config, keyed = mapping_and_key(mapping, backend=common.plugin_backend)
                forced = common.plugin_backend is not None and not keyed
            except ForwardsNothing as idle:
                # The plugin's CHECK passes at once: nothing is expected, nothing to repair.
                return _nothing_expected(common, out, str(idle))
            refuse_short_id(common.cache_dirs, config)
        snapshots, nft_snapshot = snapshot_files(snapshot, snapshot6, nft_snapshot)
        if repair and (snapshots or nft_snapshot):
            raise BadInput("--repair changes the node: it cannot be used with --snapshot")
        options = common.node_options(snapshots, nft_snapshot)
        with opened(options, write=repair) as node, out.busy("checking"):
            if repair:
                result = check_lib.repair(
                    node,
                    config,
                    flush_udp=not no_flush_udp,
                    ifname=mapping.ifname,
                    spelling=spelling_of(mapping),
                    forced=forced,
                )
                repaired.append(result)
            elif config is not None:
                result = _with_repair_command(
                    check_lib.check_mapping(
                        node, config, mapping.ifname, forced=forced, spelling=spelling_of(mapping)
                    )
                )
            else:
                result = check_lib.check_node(node)
            tools = restore_tools(node.backend) if common.verbose and result.transactions else {}
            if recorder is not None:
                recorder.note_problems(result.problems)
                if result.found is not None:  # the whole node was looked at
                    from portmapctl.ops.nft import backends_read

                    read = backends_read(node, result.families)
                    recorder.note_node(result.rows, result.found.chains, result.families, read)
        for warning in result.warnings:
            out.warn(warning)
        cache = common.cache()
        for note in result.notes:
            if note.startswith("no CNI cache in"):
                continue  # said once below, as by every command
            out.message(note)
        out.cache_note(cache)
        if out.json:
            out.print_json(render.check_json(result, cache.json()))
        else:
            for line in render.check_fixed_lines(result):
                out.message(line)
            if common.verbose:
                sys.stderr.write(render.transactions_text(result.transactions, tools))
            if result.problems:
                out.show(
                    render.check_text(
                        result,
                        width=out.width(),
                        wide=out.wide,
                        full_ids=out.no_trunc,
                        header=not out.no_headers,
                    )
                )
                out.blank()
            # Under -q the table, the whys and the fixes are not printed.
            shown = any(p.fix for p in result.problems) and not out.quiet
            out.summary(render.check_summary(result, fixes_above=shown))
        return 0 if result.healthy else 1


@contextlib.contextmanager
def _saying_repaired(repaired: List[CheckResult]) -> Iterator[None]:
    """A Ctrl-C or SIGTERM once the repair returned (while it is reported: thousands
    of "repaired:" lines, the table, the metrics file) says the repair went in, as one
    during it does: "aborted" alone, half the "repaired:" lines shown, read as
    "nothing more was repaired"."""
    from portmapctl.errors import Interrupted

    try:
        yield
    except Interrupted as stop:
        from portmapctl.ops.check.repair_report import say_repair_done

        for result in repaired:
            say_repair_done(stop, result)
        raise


def _nothing_expected(common: Common, out: Output, why: str) -> int:
    from portmapctl import render
    from portmapctl.ops.check.problem import CheckResult

    result = CheckResult(problems=(), families=(), scope="mapping", notes=(why,))
    cache = common.cache()
    out.cache_note(cache)
    if out.json:
        out.print_json(render.check_json(result, cache.json()))
    else:
        out.summary(render.check_summary(result))
    return 0


def _with_repair_command(result: CheckResult) -> CheckResult:
    """The check of one mapping, its fixes spelled as the command to run: this one, with
    --repair (what to output is left out: the repair's own output is its business)."""
    from dataclasses import replace

    from portmapctl.core.text import shell_word
    from portmapctl.ops.check.run import SAME_WITH_REPAIR

    if sys.argv[1:2] != ["check"]:
        return result  # (called in-process, not as the program: no command line to give)
    # Left out with their values: what to output, and the dumps read (--repair
    # refuses them: it changes the node, so the fix, as a node check's, is for the
    # node itself).
    valued = ("--output", "--snapshot", "--snapshot6", "--nft-snapshot")
    attached = ("-o", *(f"{option}=" for option in valued))  # -ojson, --snapshot=FILE
    words, skip = [], False
    for word in sys.argv[1:]:
        if skip:
            skip = False
        elif word in ("-o", *valued):
            skip = True
        elif not word.startswith(attached) and word not in ("-q", "--quiet"):
            words.append(word)
    command = " ".join(shell_word(word) for word in ["portmapctl", *words, "--repair"])
    problems = tuple(
        replace(p, fix=command) if p.fix == SAME_WITH_REPAIR else p for p in result.problems
    )
    return replace(result, problems=problems)
