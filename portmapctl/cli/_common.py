"""What every command shares: the common options, output, and the exit codes.

The common options are declared once here (COMMON_PARAMETERS) and added to every
command by `common_options`, after the command's own, so `portmapctl list -o json`
works as people type it (SPEC §3).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
from enum import Enum
from typing import (
    TYPE_CHECKING,
    Annotated,  # noqa: F401 - re-exported: the command modules' option declarations
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    NamedTuple,
    Optional,
    Protocol,
    Sequence,
    Tuple,
)

from portmapctl.core.backend import Backend, IptablesAccess
from portmapctl.core.text import cell_text, message_text
from portmapctl.host.paths import (
    CNI_CACHE_DIR,
    default_cni_bin_dirs,
    default_cni_cache_dirs,
    same_dirs,
    stated_cni_bin_dirs,
)

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from portmapctl.nftables.access.nft import EarlyListing
    from portmapctl.ops.metrics import Recorder
    from portmapctl.ops.node import NodeOptions


class BackendChoice(str, Enum):
    """Which of the plugin's backends (its config key `backend`)."""

    auto = "auto"
    iptables = "iptables"
    nftables = "nftables"


class FamilyChoice(str, Enum):
    v4 = "4"
    v6 = "6"
    all = "all"
    # What the tables print (FAM column) is accepted too (SPEC §3 output contract).
    v4_word = "v4"
    v6_word = "v6"


class OutputChoice(str, Enum):
    table = "table"
    wide = "wide"
    json = "json"


class ProtoChoice(str, Enum):
    tcp = "tcp"
    udp = "udp"
    sctp = "sctp"


# --- shell completion of values (typer `autocompletion=`) -----------------------------
# They run on every TAB press: cheap sources only (the CNI cache, /run/netns), never
# iptables (root, slow), and never an error: anything odd gives no suggestions.


def complete_netns(incomplete: str) -> List[str]:
    """Names of the namespaces `ip netns` knows (a path is completed by the shell)."""
    from portmapctl.host.netns import NETNS_RUN_DIR

    try:
        return sorted(n for n in os.listdir(NETNS_RUN_DIR) if n.startswith(incomplete))
    except OSError:
        return []


# The names of the common options, in COMMON_PARAMETERS' order (cli/_options.py, where
# typer declares them: imported only when typer parses a command line).
COMMON_NAMES = (
    "backend",
    "iptables",
    "family",
    "netns",
    "cni_cache_dir",
    "output",
    "no_headers",
    "no_trunc",
    "no_color",
    "quiet",
    "verbose",
)
_TYPER_DECLARED = (
    "PANEL",
    "COMMON_PARAMETERS",
    "NftSnapshotOpt",
    "MetricsFileOpt",
    "CniBinDirOpt",
    "common_options",
    "complete_container",
    "complete_network",
)


def __getattr__(name: str) -> Any:
    """The typer declarations, from cli/_options.py, for the modules that import them
    from here (every command module): typer is imported then, not before."""
    if name in _TYPER_DECLARED:
        from portmapctl.cli import _options

        return getattr(_options, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def families(value: FamilyChoice) -> Tuple[int, ...]:
    if value == FamilyChoice.all:
        return (4, 6)
    return (int(value.value.lstrip("v")),)


class CacheInfo(NamedTuple):
    """Which CNI cache a command used: said on stderr and in every JSON document."""

    dirs: Tuple[str, ...]
    present: bool
    entries: int
    # Whether --cni-cache-dir named `dirs` (else they are the defaults): a missing
    # cache's hint tells to give the option only when it was not given.
    given: bool = False

    def json(self) -> Dict[str, Any]:
        return {"dirs": list(self.dirs), "present": self.present, "entries": self.entries}

    def note(self, told_by: str = "") -> Optional[str]:
        """The one line to say when the cache cannot tell what is live (else None).
        `told_by`: what else says it (gc's --valid-attachments, --keep): then that is
        what the line says, not that stale cannot be told from live."""
        where = ", ".join(os.path.join(d, "results") for d in self.dirs)
        if not self.present:
            # `--cni-cache-dir /var/lib/cni/results`: the folder libcni keeps below it.
            below = [d for d in self.dirs if os.path.basename(os.path.normpath(d)) == "results"]
            hint = " (give --cni-cache-dir)"
            if self.given:
                # Given (--cni-cache-dir or its variable), and wrong: whether the runtime
                # writes there is what to check.
                which = (
                    "is the cache directory" if len(self.dirs) == 1 else "are the cache directories"
                )
                hint = (
                    f" ({', '.join(self.dirs)} {which} given:"
                    " check that the container runtime writes its CNI cache there)"
                )
            if below and os.path.isdir(below[0]):
                parent = os.path.dirname(os.path.normpath(below[0])) or "."
                where += f" (results/ is below the cache directory: give {parent})"
                hint = ""  # (that says what to give)
            if told_by:
                return f"no CNI cache at {where}: the live containers are those {told_by} names"
            return f"no CNI cache at {where}: stale mappings cannot be told from live ones{hint}"
        if not self.entries:
            # Of several directories, one missing is named as such, not called empty.
            results = [os.path.join(d, "results") for d in self.dirs]
            here = [r for r in results if os.path.isdir(r)]
            missing = [r for r in results if r not in here]
            also = f" (no {', '.join(missing)})" if here and missing else ""
            where = ", ".join(here) or where
            return f"the CNI cache at {where} is empty{also}: no container is known to be live"
        return None


def cache_glance(dirs: Sequence[str], given: bool = False) -> CacheInfo:
    """Whether there is a cache with an entry in it, without counting them all (`entries`
    is 0 or 1): what the note needs, at no cost per entry (add, at 5,000 of them).
    `given`: as CacheInfo's."""
    present = False
    for folder in dirs:
        try:
            with os.scandir(os.path.join(folder, "results")) as names:
                present = True
                if any(not n.name.startswith(".") for n in names):
                    return CacheInfo(tuple(dirs), True, 1, given)
        except OSError:
            continue
    return CacheInfo(tuple(dirs), present, 0, given)


def cache_info(dirs: Sequence[str], given: bool = False) -> CacheInfo:
    """Counted by listing results/ (cheap): the entries libcni wrote, not temporary files.
    `given`: as CacheInfo's."""
    present = False
    entries = 0
    for folder in dirs:
        results = os.path.join(folder, "results")
        try:
            names = os.listdir(results)
        except OSError:
            continue
        present = True
        entries += sum(1 for n in names if not n.startswith("."))
    return CacheInfo(tuple(dirs), present, entries, given)


class MappingOptions(NamedTuple):
    """The options that describe one mapping (add, and check of one mapping), as given:
    cli/add_config.mapping_from_options validates them into a MappingConfig."""

    network: Optional[str] = None
    container: Optional[str] = None
    ip: Optional[List[str]] = None
    publish: Optional[List[str]] = None
    no_snat: bool = False
    masq_all: bool = False
    mark_bit: Optional[int] = None
    external_setmark_chain: Optional[str] = None
    conditions_v4: Optional[List[str]] = None  # each a string of words; repeats add up
    conditions_v6: Optional[List[str]] = None
    cni_config: Optional[str] = None
    ifname: str = "eth0"

    @property
    def given(self) -> bool:
        """Whether any was given (check then checks that mapping, not the node). An
        empty value is given (`--container "$CID"`, CID unset: refused as bad input),
        never taken for no option: that checked and repaired the whole node instead."""
        named = (self.network, self.container, self.cni_config, self.external_setmark_chain)
        return (
            any(v is not None for v in named)
            or any((self.ip, self.publish, self.no_snat, self.masq_all))
            or any(v is not None for v in (self.conditions_v4, self.conditions_v6))
            or self.mark_bit is not None
            or self.ifname != "eth0"
        )


MAPPING_NAMES = MappingOptions._fields


class Common(NamedTuple):
    """The common options of one run, parsed."""

    backend: BackendChoice = BackendChoice.auto
    iptables: IptablesAccess = IptablesAccess.AUTO
    family: FamilyChoice = FamilyChoice.all
    netns: Optional[str] = None
    cni_cache_dir: Optional[Tuple[str, ...]] = None
    output: OutputChoice = OutputChoice.table
    no_headers: bool = False
    no_trunc: bool = False
    no_color: bool = False
    quiet: bool = False
    verbose: bool = False
    # The nft listing entry.py started for this run (nftables/early.py), not an option.
    early_nft: Optional[EarlyListing] = None
    # --metrics-file's value came from PORTMAPCTL_METRICS_FILE, not the command line
    # (click's ParameterSource.ENVIRONMENT): the node's own file (node_unrecorded).
    metrics_from_environment: bool = False
    # --cni-bin-dir (check's and add's own option, not a common one: with_bin_dirs).
    cni_bin_dir: Optional[Tuple[str, ...]] = None

    @property
    def plugin_backend(self) -> Optional[Backend]:
        """--backend as the core's word: the one place a choice becomes a Backend
        (None: auto, the plugin's own choice)."""
        if self.backend is BackendChoice.auto:
            return None
        return Backend(self.backend.value)

    @property
    def narrowed(self) -> bool:
        """--family or --backend looks at part of the node only."""
        return self.family is not FamilyChoice.all or self.backend is not BackendChoice.auto

    @property
    def cache_dirs(self) -> Tuple[str, ...]:
        """--cni-cache-dir as given (repeatable; a directory given twice, in any
        spelling, once: host/paths.same_dirs), or the default directories."""
        if self.cni_cache_dir:
            return same_dirs(self.cni_cache_dir)
        return default_cni_cache_dirs()

    def out(self) -> Output:
        return Output(
            self.output,
            self.no_color,
            self.quiet,
            self.verbose,
            self.no_headers,
            self.no_trunc,
            WarningTally(),
        )

    def with_bin_dirs(self, given: Optional[Sequence[str]]) -> Common:
        """With --cni-bin-dir's directories (repeatable; given, they replace the
        defaults, host/paths.CNI_BIN_DIRS), as check and add take it."""
        from portmapctl.errors import BadInput

        if not given:
            return self
        if any(not d for d in given):
            raise BadInput("--cni-bin-dir is empty: give a directory (where `portmap` is)")
        return self._replace(cni_bin_dir=same_dirs(given))

    @property
    def bin_dirs(self) -> Tuple[str, ...]:
        """--cni-bin-dir as given, or the default directories."""
        return self.cni_bin_dir or default_cni_bin_dirs()

    def cache(self) -> CacheInfo:
        return cache_info(self.cache_dirs, given=bool(self.cni_cache_dir))

    def node_options(
        self, snapshots: Optional[Dict[int, str]] = None, nft_snapshot: Optional[str] = None
    ) -> NodeOptions:
        from portmapctl.errors import BadInput
        from portmapctl.ops.node import NodeOptions

        dirs = self.cache_dirs
        if any(not d for d in dirs):
            raise BadInput(f"--cni-cache-dir is empty: give a directory (default {CNI_CACHE_DIR})")
        if (snapshots or nft_snapshot) and self.netns is not None:
            # Silently reading the file would pass for a look at that namespace.
            raise BadInput(
                "--netns reads a namespace's tables and a snapshot is read from a file:"
                " give one or the other"
            )
        wanted = families(self.family)
        if snapshots and not nft_snapshot and not any(f in snapshots for f in wanted):
            # (It read nothing and said "no portmap chains found".)
            missing, other = ("--snapshot6", "IPv6") if 4 in snapshots else ("--snapshot", "IPv4")
            raise BadInput(
                f"--family {self.family.value}: no {other} dump to read (give {missing} FILE)"
            )
        if snapshots and not nft_snapshot and self.backend is BackendChoice.nftables:
            # (As a family with no dump: it read nothing, "no portmap chains found".)
            raise BadInput(
                "--backend nftables: no nftables dump to read (give --nft-snapshot FILE,"
                " `nft -j list ruleset` output)"
            )
        if snapshots and nft_snapshot and "-" in (*snapshots.values(), nft_snapshot):
            raise BadInput(
                "only one of --snapshot/--snapshot6/--nft-snapshot can read standard input"
            )
        return NodeOptions(
            iptables=self.iptables,
            families=wanted,
            netns=self.netns,
            cache_dirs=dirs,
            bin_dirs=self.bin_dirs,
            # (Its variable too where a command without the option reads it.)
            bin_dirs_stated=bool(self.cni_bin_dir or stated_cni_bin_dirs()),
            snapshots=snapshots or {},
            backend=self.plugin_backend,
            nft_snapshot=nft_snapshot,
            early_nft=self.early_nft,
            quiet=self.quiet,
        )


def snapshot_files(
    snapshot: Optional[str], snapshot6: Optional[str], nft_snapshot: Optional[str]
) -> Tuple[Dict[int, str], Optional[str]]:
    """The dumps given (--snapshot, --snapshot6 by family; --nft-snapshot). An empty
    path is bad input: taken for no option (`--snapshot "$DUMP"`, DUMP unset), it had
    the command read the node it runs on instead of the file, and say "healthy"."""
    from portmapctl.errors import BadInput

    given = (("--snapshot", snapshot), ("--snapshot6", snapshot6), ("--nft-snapshot", nft_snapshot))
    for option, path in given:
        if path == "":
            raise BadInput(f"{option} is empty: give a file (a dump to read, or - for stdin)")
    return {f: path for f, path in ((4, snapshot), (6, snapshot6)) if path}, nft_snapshot


def progress_after() -> float:
    """Seconds of work before progress shows (SPEC §3: progress for work over ~1 s;
    0 shows it at once: tests, demos)."""
    from portmapctl.host import settings

    return settings.PROGRESS_AFTER.value()


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


class ProgressCallback(Protocol):
    """What Output.progress yields: called with (done, total) as the work goes;
    `end()` when the work is over before the block is (see _Display.end)."""

    def __call__(self, done: int, total: int) -> None: ...

    def end(self) -> None: ...


class _Display:
    """The progress shown on stderr: a spinner while the amount of work is unknown, a
    bar with `N/M` once a count comes in. Started by a timer (short work shows
    nothing), refreshed by rich's own thread, erased when done. Called with
    `(done, total)`; `end()` erases it before its block ends (ProgressCallback)."""

    def __init__(self, console: Callable[[], Console], description: str) -> None:
        self._console = console
        self._description = description
        self._guard = threading.Lock()
        self._counts: Optional[Tuple[int, int]] = None
        self._shown: Optional[Any] = None  # the rich Progress on screen
        self._counted = False  # it shows counts (else: a spinner)
        self._over = False

    def update(self, done: int, total: int) -> None:
        with self._guard:
            self._counts = (done, total)
            if self._shown is None:
                return
            if not self._counted:  # the first count: from a spinner to a bar
                self._shown.stop()
                self._show()
            else:
                self._shown.update(self._shown.task_ids[0], completed=done, total=total)

    def start(self) -> None:
        with self._guard:
            if not self._over and self._shown is None:
                self._show()

    def stop(self) -> None:
        with self._guard:
            self._over = True
            if self._shown is not None:
                self._shown.stop()

    __call__ = update

    def end(self) -> None:
        """The work it shows is over, its block not yet: erased now, and its timer
        shows nothing after (gc --dry-run, which then waits for the lock: the
        waiting line alone, no bar spinning for work that is done)."""
        self.stop()

    def _show(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self._counted = self._counts is not None
        columns: List[Any] = [SpinnerColumn(), TextColumn("{task.description}")]
        if self._counted:  # 20 wide: the whole line fits 80 columns
            columns += [BarColumn(bar_width=20), MofNCompleteColumn()]
        columns.append(TimeElapsedColumn())
        console = self._console()
        # A line written to stderr while the bar shows (a warning, the lock's "waiting
        # for ... held by PID N") goes through rich's redirect and this console's
        # print: soft_wrap keeps it one line, as warn() writes it (its wrap is the
        # terminal's; a command it names pastes whole).
        console.soft_wrap = True
        shown = Progress(*columns, console=console, transient=True)
        done, total = self._counts if self._counts is not None else (0, None)
        shown.add_task(self._description, total=total, completed=done)
        shown.start()
        self._shown = shown


class WarningTally:
    """How many warnings one run has said: the metrics file's
    portmapctl_last_run_warnings. A timer's or cron job's stderr is read by nobody,
    and a warning there (a conntrack flush that failed, an unreadable cache entry) is
    otherwise a run that worked."""

    __slots__ = ("said",)

    def __init__(self) -> None:
        self.said = 0


class Output(NamedTuple):
    """Where results and messages go (SPEC §3 output contract): the result (table and
    summary line, or JSON; with -q the summary line alone) on stdout; warnings,
    remarks, progress and prompts on stderr."""

    mode: OutputChoice = OutputChoice.table
    no_color: bool = False
    quiet: bool = False
    verbose: bool = False
    no_headers: bool = False
    no_trunc: bool = False
    tally: Optional[WarningTally] = None  # the run's warnings, counted (Common.out)

    @property
    def json(self) -> bool:
        return self.mode == OutputChoice.json

    @property
    def wide(self) -> bool:
        return self.mode == OutputChoice.wide

    def plain(self, stream: Any) -> bool:
        """No colour: --no-color, a non-empty NO_COLOR (no-color.org), or not a terminal
        (TTY_COMPATIBLE=0 says it is none; a non-empty FORCE_COLOR asks for colour
        anyway)."""
        if self.no_color or os.environ.get("NO_COLOR", "") != "":
            return True
        if _force_color():
            return False
        return not _terminal(stream)

    def width(self, stream: Any = None) -> Optional[int]:
        """The terminal's width (COLUMNS wins, as for every tool), None off a terminal:
        piped tables keep whole lines."""
        stream = sys.stdout if stream is None else stream
        if not _isatty(stream):
            return None
        import shutil

        return max(shutil.get_terminal_size().columns, 40)

    def _console(self, stderr: bool = False) -> Console:
        from rich.console import Console

        stream = sys.stderr if stderr else sys.stdout
        plain = self.plain(stream)
        # Off a terminal, tables get room instead of being squeezed to 80 columns. On
        # one, the width the tables were fitted to: rich's own reading takes COLUMNS=0
        # as it is, and prints nothing at all at that width.
        width = self.width(stream) if _isatty(stream) else 250
        return Console(
            file=stream,
            no_color=plain,
            highlight=False,
            # Messages carry names and paths from the node: "[...]" or ":x:" in them is
            # text, not rich markup or an emoji code.
            markup=False,
            emoji=False,
            width=width,
            # Whether it is a terminal is ours to say: rich reads FORCE_COLOR (and
            # TTY_COMPATIBLE) for it too, an empty FORCE_COLOR as "not a terminal".
            force_terminal=True if not plain and _force_color() else _terminal(stream),
            color_system=None if plain else "auto",
        )

    def show(self, renderable: RenderableType, stderr: bool = False) -> None:
        """A table: on stdout it is the result (not with -q); on stderr a preview."""
        if self.quiet and not stderr:
            return
        stream = sys.stderr if stderr else sys.stdout
        if hasattr(renderable, "plain") and self.plain(stream):
            # Plain text off a terminal: no need for rich's line layout (fast for big
            # lists), nor for a Console (importing rich.console takes 13 ms).
            stream.write(renderable.plain + "\n")
            return
        console = self._console(stderr=stderr)
        # soft_wrap: long lines stay whole, as scripts and `less -S` expect.
        console.print(renderable, soft_wrap=True)

    def show_text(self, text: str) -> None:
        """Plain text that is part of the result (a transaction): stdout, not with -q."""
        if not self.quiet:
            sys.stdout.write(text)

    def blank(self) -> None:
        """The empty line between a table and its summary line (not with -q)."""
        if not self.quiet:
            sys.stdout.write("\n")

    def cache_note(self, cache: CacheInfo, told_by: str = "") -> List[str]:
        """Say once, on stderr, when no cache or an empty one was found (SPEC §3: every
        command): a wrong --cni-cache-dir must not turn stale into ok silently, nor
        make gc with --keep remove what the cache would have kept, nor add and check
        of one mapping miss the backend its cached config names. `told_by`: as for
        CacheInfo.note. Returns the warnings said (gc's JSON `warnings` holds every
        warning it said)."""
        said = [] if (note := cache.note(told_by)) is None else [note]
        # A runtime's cache below the one read (cri-dockerd's /var/lib/cni/cache): its
        # live pods were called stale, and gc removed their chains, without a word.
        from portmapctl.cni.entries import unread_caches

        said += [unread.warning(cache.dirs) for unread in unread_caches(cache.dirs)]
        for warning in said:
            self.warn(warning)
        return said

    def summary(self, line: str) -> None:
        """The result's one summary line: on stdout, -q included (it is all -q prints).
        On a terminal it is word-wrapped at the width (nothing wraps there, SPEC §3);
        piped it stays one line, as the scripts that read it expect. A command it ends
        in (`check`'s `... -> portmapctl gc ...`) goes on lines of its own, each but the
        last ending in ` \\`, as a fix is printed: a copy of them is still the command
        (cut at a space, its first line ran without the rest). A foreign rule's comment
        that command quotes is written out as the tables write it (cell_text); JSON's
        `summary` is left as it was."""
        line = cell_text(line)
        width = self.width()
        if width is not None and len(line) > width:
            from portmapctl.render.table import wrap

            head, arrow, command = line.partition(" -> ")
            if arrow and command.startswith("portmapctl "):
                from portmapctl.render.check import command_lines

                first, *rest = command_lines(command, width, 2)  # (rest indented)
                lines = [*wrap(head + " ->", width, ""), "  " + first, *rest]
            else:
                lines = wrap(line, width, "")
            line = "\n".join(lines)
        sys.stdout.write(line + "\n")

    def print_json(self, document: Any) -> None:
        text = json.dumps(document, indent=2)
        if "\\ud" in text:  # a surrogate, escaped (a cheap test; unicode_only looks closer)
            from portmapctl.render.json import unicode_only

            text = json.dumps(unicode_only(document), indent=2)
        sys.stdout.write(text + "\n")

    def message(self, text: str) -> None:
        """A remark for people, on stderr; silent with -q."""
        if not self.quiet:
            # A byte that is not UTF-8 as `\xNN`, as warn() and error lines write it.
            # Piped, one line, as warn() writes it: rich broke a remark longer than its
            # 250 columns in two (a log's grep missed it). On a terminal it is still
            # word-wrapped at the width, as the tables are fitted to it.
            if not _isatty(sys.stderr):
                self._console(stderr=True).print(message_text(text), soft_wrap=True)
                return
            # rich leaves the space it broke a line at on that line's end (`...9116c `
            # before a long network name went to the next line): printed without it.
            console = self._console(stderr=True)
            with console.capture() as wrapped:
                console.print(message_text(text))
            sys.stderr.write("".join(row.rstrip(" ") + "\n" for row in wrapped.get().splitlines()))

    def warn(self, text: str) -> None:
        # A path's byte that is not UTF-8 as `\xNN`, as error lines and JSON write it.
        # One line, on a terminal too (its own wrap is the terminal's): a warning that
        # names a command (`portmapctl list --iptables legacy`) must paste whole, and a
        # log's grep finds it whole.
        # A line break too (message_text keeps it, for messages of several lines): a
        # --cni-cache-dir holding one made a warning two lines, the second unprefixed.
        line = message_text(text).replace("\n", "\\n")
        sys.stderr.write(f"portmapctl: warning: {line}\n")
        if self.tally is not None:
            self.tally.said += 1

    @contextlib.contextmanager
    def progress(
        self, description: str, after: Optional[float] = None
    ) -> Iterator[Optional[ProgressCallback]]:
        """Progress on stderr for work that may be long, with a `(done, total)` callback.

        Yields None -- nothing shown, nothing for the library to call -- unless stderr
        is a terminal and neither -q nor JSON output was asked for. Shows only once the
        work has run `after` seconds (default progress_after()):
        a spinner, or a bar with `N/M` once the callback gave a count. Erased when
        done, so it never ends up in a log or a pipe, and stdout is never touched.

            with out.progress("deleting UDP conntrack entries") as progress:
                result = flush(node, ..., progress=progress)
        """
        if self.quiet or self.json or not _isatty(sys.stderr):
            yield None
            return
        display = _Display(lambda: self._console(stderr=True), description)
        timer = threading.Timer(progress_after() if after is None else after, display.start)
        timer.daemon = True
        timer.start()
        try:
            yield display
        finally:
            timer.cancel()
            display.stop()

    @contextlib.contextmanager
    def busy(self, description: str, after: Optional[float] = None) -> Iterator[None]:
        """A spinner on stderr while work of unknown length runs (see progress)."""
        with self.progress(description, after):
            yield


def _force_color() -> bool:
    return os.environ.get("FORCE_COLOR", "") not in ("", "0")


def _terminal(stream: Any) -> bool:
    """Whether `stream` is a terminal that takes escape sequences: a tty, unless
    TTY_COMPATIBLE=0 says otherwise (rich's variable, which it no longer reads itself
    once told whether the stream is a terminal: Output._console)."""
    return _isatty(stream) and os.environ.get("TTY_COMPATIBLE", "") != "0"


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced or closed streams (tests, pipes)
        return False
