"""`portmapctl gc`: remove the chains of containers that are not live."""

from __future__ import annotations

import contextlib
import sys
from dataclasses import replace
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Collection,
    FrozenSet,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
)

import typer

from portmapctl.cli._common import (
    Annotated,
    CacheInfo,
    Common,
    MetricsFileOpt,
    common_options,
    complete_container,
)
from portmapctl.cli.metrics_file import Unrecorded, metrics_recording
from portmapctl.cli.output import Output
from portmapctl.core.text import name_text

if TYPE_CHECKING:
    from portmapctl.errors import PortmapctlError
    from portmapctl.ops.gc import GcChain, GcResult

EXAMPLES = """
Examples:

\b
  portmapctl gc --dry-run

\b
  portmapctl gc --yes -q

\b
  portmapctl gc --yes --valid-attachments request.json --keep 3f2a9c1e

\b
  portmapctl gc --yes --all --min-age 0
"""


@common_options
def gc_command(
    common: Common,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be removed; change nothing.")
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask (needed when not on a terminal).")
    ] = False,
    valid_attachments: Annotated[
        Optional[str],
        typer.Option(
            "--valid-attachments",
            metavar="FILE|-",
            help="A CNI GC cni.dev/valid-attachments document (a list, or a network"
            " config holding the key); '-' reads stdin.",
        ),
    ] = None,
    keep: Annotated[
        Optional[List[str]],
        typer.Option(
            "--keep",
            metavar="ID",
            help="Container ID (or ID prefix) that is live (repeat).",
            autocompletion=complete_container,
        ),
    ] = None,
    remove_all: Annotated[
        bool,
        typer.Option(
            "--all", help="With no other source of liveness: every per-container chain goes."
        ),
    ] = False,
    min_age: Annotated[
        str,
        typer.Option(
            "--min-age",
            metavar="DURATION",
            help="Remove a chain only once seen not live, unchanged, this long"
            " (30s, 5m, 1h30m, 0).",
        ),
    ] = "2m",
    no_flush_udp: Annotated[
        bool,
        typer.Option("--no-flush-udp", help="Keep the UDP conntrack entries of unmapped ports."),
    ] = False,
    metrics_file: MetricsFileOpt = None,
    netns_liveness: Annotated[
        bool,
        typer.Option(
            "--netns-liveness",
            help="A cache entry whose network namespace is gone (zombie) does not keep its"
            " container live. Refused where the namespaces are not visible.",
        ),
    ] = False,
) -> None:
    """Remove the portmap chains of containers that are not live (CNI cache,
    --valid-attachments, --keep), once seen so for --min-age."""
    from portmapctl import render
    from portmapctl.core import validate
    from portmapctl.errors import BadInput
    from portmapctl.iptables.access import restore_tools
    from portmapctl.ops.gc import (
        GcOptions,
        Sources,
        apply_gc,
        plan_gc,
        read_valid_attachments,
        require_source,
    )
    from portmapctl.ops.node import locked, opened

    out = common.out()
    applied: List[GcResult] = []  # the run's removal, once apply_gc has returned it
    with (
        _saying_removed(applied),
        # A dry run leaves gc's file to the runs that remove (Unrecorded.DRY_RUN).
        metrics_recording(
            metrics_file,
            "gc",
            common.cache_dirs,
            out,
            unrecorded=Unrecorded.DRY_RUN if dry_run else None,
        ) as recorder,
    ):
        options = GcOptions(
            min_age=validate.duration(min_age), dry_run=dry_run, flush_udp=not no_flush_udp
        )
        sources = Sources(
            documents=(
                (read_valid_attachments(valid_attachments),)
                if valid_attachments is not None
                else ()
            ),
            keep=tuple(_kept_id(k) for k in keep or ()),
            remove_all=remove_all,
            netns_liveness=netns_liveness,
        )
        node_opts = common.node_options()
        require_source(sources, node_opts.cache_dirs)
        ask = not dry_run and not yes
        # Asking needs the person to see the question (stderr) and answer it (stdin):
        # `gc 2>log` on a terminal would otherwise wait for an answer to nothing shown.
        if ask and not (sys.stdin.isatty() and sys.stderr.isatty()):
            raise BadInput("not on a terminal: give --yes to remove chains (or --dry-run to look)")
        if ask and valid_attachments == "-":
            raise BadInput("--valid-attachments - reads stdin, so gc cannot ask there: add --yes")
        cache = common.cache()
        given = ["--valid-attachments"] * bool(valid_attachments) + ["--keep"] * bool(keep)
        told_by = " and ".join(given)
        # The cache note is said after gc has run: a refusal (no source of liveness) is
        # its one error line.
        # Asking: read and plan once, without the lock (no other run waits on a
        # person), ask, then take the lock, read and plan again, limited to what was
        # confirmed, and apply that.
        shown: FrozenSet[str] = frozenset()  # warnings said before the question
        noted: List[str] = []  # the cache's warnings, said on stderr: JSON's too
        with opened(node_opts, write=not dry_run, lock_now=not ask) as node:
            with out.busy("reading the ruleset"):
                # Not asking: the smaller family goes in while the other is planned.
                planned = plan_gc(node, sources, options, apply_early=not ask)
            if ask:
                # The preview is a dry run that records its sightings like any run (so
                # --min-age counts from here), shown on stderr: stdout is for the result.
                preview = apply_gc(node, replace(planned, options=replace(options, dry_run=True)))
                noted = out.cache_note(cache, told_by)
                if not preview.changes:
                    if recorder is not None:
                        recorder.note_gc(preview, node_opts.families)
                    _show(out, preview, options.min_age, cache, asked_dry_run=False, noted=noted)
                    _not_recorded(preview)
                    return
                # Its warnings before the question (a --keep that keeps nothing, chains
                # in the other flavour): they may change the answer. Not said again.
                shown = frozenset(preview.warnings)
                for warning in preview.warnings:
                    out.warn(warning)
                out.show(
                    render.gc_table(
                        preview, options.min_age, preview=True, wide=out.wide,
                        full_ids=out.no_trunc, width=out.width(sys.stderr),
                    ),
                    stderr=True,
                )  # fmt: skip
                removal = render.removal_text(preview.removed, preview.shared_removed)
                answer = _answer(f"Remove {removal}?")
                if not answer:
                    if recorder is not None:
                        # It removed nothing, as a dry run: its success would say gc
                        # works where the timer's fails every run (PortmapctlGcFailing).
                        recorder.leave_alone(Unrecorded.DECLINED.holds("gc"))
                    # The result, on stdout as any run's (SPEC §3: the JSON document,
                    # -q's summary line): it printed nothing there, `gc -o json > out`
                    # left an empty file. The preview's table is on the terminal above.
                    declined = replace(
                        preview, dry_run=False, removed=(), shared_removed=(),
                        transactions={}, declined=preview.removed,
                        declined_shared=preview.shared_removed,
                    )  # fmt: skip
                    _show(
                        out, declined, options.min_age, cache, asked_dry_run=False,
                        said=shown, noted=noted, answered=answer is not None,
                    )  # fmt: skip
                    # A "no" ends the run here: what the preview could not record is
                    # its one error line, as in a dry run (a "yes" says it after the
                    # removal, when the real run's save fails too).
                    _not_recorded(preview)
                    return
                confirmed = frozenset(c.key for c in preview.removed)
                options = replace(options, only=confirmed)
                with locked(node), out.progress("removing chains") as progress:
                    # Not the plan shown: a container may have become live while the
                    # question was read (one started again with its ID and address gets
                    # its chain back from the plugin unchanged, then its cache entry),
                    # and that plan, its table unchanged, would still go in whole.
                    planned = plan_gc(node, sources, options)
                    result, failed = _applied(apply_gc, node, planned, progress)
                    applied.append(result)
            else:
                doing = "looking for chains to remove" if dry_run else "removing chains"
                with out.progress(doing) as progress:
                    # A dry run takes the lock only to record its sightings, once it
                    # has looked: the bar goes first, the lock's waiting line alone.
                    ended = progress.end if progress is not None else None
                    result, failed = _applied(apply_gc, node, planned, progress, before_lock=ended)
                    applied.append(result)
            tools = restore_tools(node.backend) if common.verbose and dry_run else {}
        if recorder is not None and failed is None:  # (a failed run's file says it failed)
            recorder.note_gc(result, node_opts.families)
        if not ask:
            noted = out.cache_note(cache, told_by)
        _show(out, result, options.min_age, cache, asked_dry_run=dry_run, said=shown, noted=noted)
        if failed is not None:
            raise failed  # its one line, after what went in before it failed
        if common.verbose and dry_run:
            sys.stderr.write(render.transactions_text(result.transactions, tools))
        _not_recorded(result)
        _refused(result)


def _applied(
    apply: Callable[..., GcResult], *args: Any, **kwargs: Any
) -> Tuple[GcResult, Optional[PortmapctlError]]:
    """apply_gc's result; or, where it failed after chains went in (a family after
    another, the nftables side after iptables, a halving stopped part-way), what went in
    and the failure, raised once that is shown: else `-o json` printed no document and
    the table none of the chains it had removed, flushed and recorded."""
    from portmapctl.errors import PortmapctlError
    from portmapctl.ops.gc import GcResult

    try:
        return apply(*args, **kwargs), None
    except PortmapctlError as err:
        if not isinstance(err.done, GcResult):
            raise
        return err.done, err


@contextlib.contextmanager
def _saying_removed(applied: List[GcResult]) -> Iterator[None]:
    """A Ctrl-C or SIGTERM once apply_gc returned (while the removal is reported: a
    table of thousands of rows, the metrics file) says that the removal went in, as
    one during it does (plan.say_removed). It said "aborted" alone, nothing on stdout
    yet: read as "nothing was removed", and the next gc found nothing to remove. (Its
    UDP flush and state save are done by then.) A dry run's removed nothing."""
    from portmapctl.errors import Interrupted

    try:
        yield
    except Interrupted as stop:
        if not stop.after:
            from portmapctl.ops.gc.plan import say_removed

            say_removed(stop, [result for result in applied if not result.dry_run])
        raise


def _not_recorded(result: GcResult) -> None:
    """The one error line (exit 3) of a run that could not save its sightings: what was
    done (or, in a dry run, would be) is on stdout already (and the flush ran); this
    says what is missing, exit 3 as for any other environment problem, a dry run's too
    (it was a warning there, exit 0: the real run it previewed then failed)."""
    if result.state_error is None:
        return
    from portmapctl import render
    from portmapctl.errors import HostProblem

    if result.dry_run:
        raise HostProblem(f"could not record the chains seen for --min-age: {result.state_error}")
    done = render.removal_text(result.removed, result.shared_removed)
    raise HostProblem(
        f"removed {done} (see above), but could not record the chains still pending:"
        f" {result.state_error}"
    )


def _refused(result: GcResult) -> None:
    """The one error line (exit 1: gc could not apply) of a run whose removal iptables
    refused for some chains, each tried alone (ops/gc/converge.settle_family): what was
    removed is on stdout already, flushed and recorded; this names what was not."""
    if not result.refused:
        return
    from portmapctl.errors import ApplyFailed
    from portmapctl.ops.gc.result import some_of

    def named(chain: GcChain) -> str:
        # Names read from the node, as their table cells write them.
        who = (
            f"container {name_text(chain.container_id)}"
            if chain.container_id
            else "no known container"
        )
        on = f" on {name_text(chain.network)}" if chain.network else ""
        return f"{chain.chain} (IPv{chain.family}, {who}{on})"

    first = result.refused[0]
    which = (
        named(first.chain)
        if len(result.refused) == 1
        # (A few named: the table above and JSON `refused` list every one.)
        else f"{len(result.refused)} chains: " + some_of([named(r.chain) for r in result.refused])
    )
    raise ApplyFailed(
        f"iptables refused the removal of {which} (tried alone; every other stale chain"
        f" was removed, see above): {first.why}"
    )


def _answer(question: str) -> Optional[bool]:
    """The person's yes or no; None at end of input (Ctrl-D, stdin closed), which
    counts as the default answer, no. click turns both end of input and
    KeyboardInterrupt into Abort; Ctrl-C reaches us as cli.Interrupted (exit 130), so
    an Abort caused by EOFError is no interruption. All of the prompt goes to stderr."""
    import contextlib

    try:
        # click (typer's copy) writes the prompt's last character, a space, to stdout
        # ("for readline"): a stray byte in the result of `gc > file` or `gc -o json`.
        with contextlib.redirect_stdout(sys.stderr):
            return typer.confirm(question, default=False, err=True)
    except typer.Abort as abort:
        if not isinstance(abort.__context__, EOFError):
            raise
        sys.stderr.write("\n")  # ends the prompt's line: no Enter was pressed
        return None


def _show(
    out: Output,
    result: GcResult,
    min_age: float,
    cache: CacheInfo,
    asked_dry_run: bool,
    said: Collection[str] = (),
    noted: Sequence[str] = (),
    answered: bool = True,
) -> None:
    """The result; `said`: warnings shown already (before the question); `noted`: the
    cache's, said on stderr by Output.cache_note (JSON `warnings` holds them too)."""
    from portmapctl import render

    for warning in result.warnings:
        if warning not in said:
            out.warn(warning)
    if out.json:
        out.print_json(render.gc_json(result, min_age, cache.json(), noted))
        return
    # A declined run's rows were the question's, on the terminal: its line says the rest.
    if result.declined is None and (
        result.removed or result.pending or result.shared_removed or result.refused
    ):
        out.show(
            render.gc_table(
                result,
                min_age,
                wide=out.wide,
                full_ids=out.no_trunc,
                header=not out.no_headers,
                width=out.width(),
            )  # fmt: skip
        )
        out.blank()
    out.summary(render.gc_summary(result, asked_dry_run, answered))


def _kept_id(value: str) -> str:
    """A --keep value: a container ID or its prefix. A chain's name is a valid CNI name
    too, and matched no container: the container it was meant to keep lost its chains."""
    from portmapctl.core import validate
    from portmapctl.errors import BadInput
    from portmapctl.iptables.chains import DNAT_PREFIX, SNAT_PREFIX

    name = validate.cni_name(value, "--keep container ID")
    if name.startswith((DNAT_PREFIX, SNAT_PREFIX)):
        raise BadInput(
            f"--keep {name}: a chain's name; --keep takes the container's ID (or its"
            " prefix), as `portmapctl list` shows it"
        )
    return name
