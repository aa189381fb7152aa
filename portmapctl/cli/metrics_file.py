"""--metrics-file around a command's run (docs/monitoring.md): metrics_recording
records the run into the file, or leaves the file alone, with one warning, for the
runs that must not replace what the node's own runs wrote (Unrecorded: one mapping, a
dry run, a snapshot, part of the node, a gc told no).

Apart from cli/_common.py (the options every command shares) because it decides
whose file a run may write, not what the options mean; ops/metrics.py builds and
writes the report (imported only when a file is named).
"""

from __future__ import annotations

import contextlib
from enum import Enum
from typing import TYPE_CHECKING, Iterator, List, Optional, Tuple

if TYPE_CHECKING:
    from portmapctl.cli._common import Common
    from portmapctl.cli.output import Output
    from portmapctl.ops.metrics import Recorder


METRICS_COMMAND = "{command}"  # in a metrics file's path: the command's name


class Unrecorded(Enum):
    """Runs that leave the command's metrics file as the node's own runs wrote it (the
    timer's or the DaemonSet's: the alerts read it), each with what the warning says
    the file holds instead.

    ONE_MAPPING: a check of one mapping judges it against the options given
    (`extra-rules` for the ports not given), and its bad input is no failed check of
    the node; written, it replaced the timer's file with problems the node does not
    have. DRY_RUN: gc's file says whether gc removes what it should
    (PortmapctlGcFailing); a dry run removes nothing, so its success said nothing of
    that, and an operator's `gc --dry-run` (the runbook's) restarted the alert's hour
    on a gc that failed every run. SNAPSHOT: a list or check of a dump with the
    node-wide PORTMAPCTL_METRICS_FILE (node_unrecorded). NARROWED: a list or check of
    part of the node (--family 4|6, --backend iptables|nftables): check's problems gauge
    has no family or backend, so the part not looked at was written as zeros in place
    of the last whole-node check's counts (PortmapctlProblems and the stale alerts
    cleared, their `for:` restarted, until the timer's next run); list's file lost the
    series of the part not read (their stale and shadowed mappings)."""

    ONE_MAPPING = (
        "the whole node's {command}, not one mapping's ({command} without the mapping's"
        " options writes it)"
    )
    DRY_RUN = (
        "what {command} did, and a dry run does nothing ({command} without --dry-run writes it)"
    )
    NARROWED = (
        "the whole node's {command}, not part of it ({command} without --family and"
        " --backend writes it)"
    )
    SNAPSHOT = (
        "this node's {command} (PORTMAPCTL_METRICS_FILE), and a snapshot may be another"
        " node's (an explicit --metrics-file writes the snapshot's)"
    )
    # Known once the question is answered (Recorder.leave_alone): gc on a terminal told
    # "no" (or given no answer) removes nothing, as a dry run, and wrote
    # `last_run_success 1` all the same.
    DECLINED = "what {command} did, and a run told no does nothing (a run that removes writes it)"

    def holds(self, command: str) -> str:
        """What the file holds instead, as the warning says it."""
        return self.value.format(command=command)


def node_unrecorded(common: Common, *dumps: Optional[str]) -> Optional[Unrecorded]:
    """Why a list or check of the node (not of one mapping) leaves its metrics file
    alone, if it does (`dumps`: --snapshot, --snapshot6, --nft-snapshot as given).

    SNAPSHOT: a dump read with the file PORTMAPCTL_METRICS_FILE names. The variable is
    set node-wide for the node's own runs (monitoring.md), and a dump is a support
    bundle's, maybe another node's: written, its counts raised or reset this node's
    alerts. An explicit --metrics-file is the operator's own choice (a bundle's metrics
    to look at, the docs' examples): it is written, --family or --backend too.
    NARROWED: the node's own tables, part of them (--family, --backend): the file
    holds the whole node's figures, and a narrowed run replaced them with its part's
    (check's problems gauge, with no family or backend label, as zeros for the rest;
    list's series of the family or backend not read gone)."""
    if any(d is not None for d in dumps):
        return Unrecorded.SNAPSHOT if common.metrics_from_environment else None
    return Unrecorded.NARROWED if common.narrowed else None


@contextlib.contextmanager
def metrics_recording(
    path: Optional[str],
    command: str,
    cache_dirs: List[str],
    out: Output,
    ok_exit_codes: Tuple[int, ...] = (0,),
    unrecorded: Optional[Unrecorded] = None,
) -> Iterator[Optional[Recorder]]:
    """Record the block's run into the metrics file `path`, if one was asked for.

    Yields None without one: nothing is imported (prometheus_client is only loaded
    to write), so a run without --metrics-file starts and works as before.
    `{command}` in `path` is the command's name: one PORTMAPCTL_METRICS_FILE set for
    the node gives each command a file of its own (one file for all, each run
    replaced the others' metrics: an operator's `list` erased the timer's gc).
    `unrecorded` (a check of one mapping, a gc dry run, a snapshot read into the
    node's file): the file is left alone, one warning after a run that did its work;
    so too where the block tells its recorder so (Recorder.leave_alone: gc told "no").

    The PORTMAPCTL_ variables are checked here, as the block starts (the commands that
    record enter it before anything else; `_options._common` and `add_fast.pop_common`
    leave it to this): one refused is that run's failure, in its file too.
    """
    from portmapctl.host import settings

    if not path:  # PORTMAPCTL_METRICS_FILE= (empty) is no file
        settings.check()
        yield None
        return
    path = path.replace(METRICS_COMMAND, command)
    from portmapctl.ops import metrics

    if unrecorded is not None:
        settings.check()
        # Said once the run is over: an error's line stays the one line of its run.
        yield None
        _say_unrecorded(out, path, unrecorded.holds(command))
        return

    tally = out.tally
    with metrics.recording(
        path,
        metrics.Command(command),
        cache_dirs,
        out.warn,
        ok_exit_codes,
        warned=(lambda: tally.said) if tally is not None else None,
    ) as recorder:
        # A unit's Environment= with a value a variable does not take refuses every run
        # (exit 2): written nowhere, the file kept the last good run's success and
        # counts, and PortmapctlGcFailing never fired.
        settings.check()
        yield recorder
    if recorder.left_alone is not None:  # (a run that ended well: an error says its line)
        _say_unrecorded(out, path, recorder.left_alone)


def _say_unrecorded(out: Output, path: str, holds: str) -> None:
    """The one warning of a run that leaves its metrics file alone (Unrecorded)."""
    from portmapctl.ops import metrics

    out.warn(f"no metrics file written: {metrics.shown_path(path)} holds {holds}")
