"""Prometheus metrics of a command's run, for the node_exporter textfile collector.

A command (`list`, `check`, `gc`) fills a `MetricsReport`: plain, bounded values
(counts by backend, family, status, kind; never a container ID or chain name as a
label, so a fleet's series count does not grow with its containers). `write()` turns
the report into Prometheus text with prometheus_client's own registry, and writes it
atomically: a temporary file in the same directory, then rename(2), so the collector
never reads half a file (and ignores the temporary one: its name does not end in
`.prom`). Not with prometheus_client's write_to_textfile: it (0.26, whose code we read) renames
without fsync, so a node crash could leave the new name on an empty file (ext4, XFS
may put the rename on disk before the data), which node_exporter reads as no metrics
of the command until its next run; ours fsyncs the file before the rename and the
directory after it (host/files.replace_durably).

prometheus_client is imported only to render or write a report (about 30 ms), and
this module only when `--metrics-file` is given: a run without it imports neither.

Every sample carries a `command` label: the node_exporter merges all `*.prom` files
of its directory, and two commands reporting the same node-wide gauge (list and
check both count mappings) without it would be duplicate series, which fails the
whole textfile scrape. One file per command (`portmapctl-gc.prom`,
`portmapctl-check.prom`): a command rewrites its whole file.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import threading
import time
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
)

from portmapctl import __version__
from portmapctl.core.backend import Backend
from portmapctl.core.status import ChainKind, ProblemKind, Status

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

PREFIX = "portmapctl"


class Command(str, Enum):
    """The commands that write metrics (the `command` label)."""

    LIST = "list"
    CHECK = "check"
    GC = "gc"


# The vocabularies every count is filled with, zeros included: an alert on
# `portmapctl_mappings{status="shadowed"} > 0` must see 0 on a healthy node, not an
# absent series (absent also means "not measured").
STATUSES = tuple(status.value for status in Status)
PROBLEM_KINDS = tuple(kind.value for kind in ProblemKind)
# The statuses a chain of each type can have (a legacy CNI-SN- chain maps no port, so
# it is never ok, shadowed, incomplete or dead): zeros only where a count can grow.
# `contested` is a mapping's word (the other backend maps its port: core/contest.py),
# given after the chains are judged: a chain never has it (its zero series was
# always 0; review helper-132).
_DNAT_STATUSES = (
    Status.OK,
    Status.STALE,
    Status.SHADOWED,
    Status.ORPHAN,
    Status.INCOMPLETE,
    Status.DEAD,
    Status.ZOMBIE,
)
_LEGACY_SNAT_STATUSES = (Status.LEGACY, Status.STALE, Status.ORPHAN, Status.ZOMBIE)
CHAIN_STATUSES = {
    ChainKind.DNAT.value: tuple(s.value for s in _DNAT_STATUSES),
    ChainKind.LEGACY_SNAT.value: tuple(s.value for s in _LEGACY_SNAT_STATUSES),
}
# A mapping of the plugin's nftables backend is one rule of its shared chains: it can
# be ok, stale, shadowed, zombie (nftables/inventory.py) or contested (core/contest.py), never orphan, incomplete,
# legacy or dead, which describe iptables' per-container chains. It has no chains of
# its own either: `chains` stays an iptables count.
_NFT_STATUSES = (Status.OK, Status.STALE, Status.SHADOWED, Status.ZOMBIE, Status.CONTESTED)
MAPPING_STATUSES = {
    Backend.IPTABLES: STATUSES,
    Backend.NFTABLES: tuple(s.value for s in _NFT_STATUSES),
}


# --- the report: plain values ---------------------------------------------------------


@dataclass(frozen=True)
class MappingCount:
    """Port mappings (DNAT rules of per-container chains) with one status.

    A mapping with two statuses (stale and shadowed) counts under each."""

    backend: str
    family: int
    status: str
    count: int


@dataclass(frozen=True)
class ChainCount:
    """Per-container chains (CNI-DN-, legacy CNI-SN-) of one type with one status."""

    backend: str
    family: int
    chain_type: str
    status: str
    count: int


@dataclass(frozen=True)
class ProblemCount:
    kind: str
    count: int


@dataclass(frozen=True)
class GcCount:
    """One family's outcome of a gc run."""

    family: int
    removed: int  # per-container chains removed by this run (0 in a dry run)
    # Not live, still on the node: waiting for --min-age (what a dry run would
    # remove, for the library's callers: the CLI writes no file for a dry run).
    pending: int


@dataclass(frozen=True)
class CacheDir:
    """A CNI cache directory the command used: is its results/ there, how many
    entries (attachments) it holds."""

    path: str
    present: bool
    entries: int


@dataclass(frozen=True)
class Findings:
    """What a command found. None: not measured by this command (no series at all)."""

    mappings: Optional[Tuple[MappingCount, ...]] = None
    chains: Optional[Tuple[ChainCount, ...]] = None
    problems: Optional[Tuple[ProblemCount, ...]] = None
    gc: Optional[Tuple[GcCount, ...]] = None
    conntrack_deleted: Optional[int] = None


@dataclass(frozen=True)
class MetricsReport:
    """One run of one command, as the metrics file says it."""

    command: Command
    started: float  # Unix time the run started
    duration_seconds: float
    # The command did its work: exit 0, or check's exit 1 (problems found is a
    # result). An error (exit 1 of gc/add, 2, 3) is not.
    success: bool
    findings: Findings = field(default_factory=Findings)
    cache_dirs: Tuple[CacheDir, ...] = ()
    version: str = __version__
    warnings: int = 0  # the warnings the run said on stderr, failed or not


# --- building a report from what the commands return ------------------------------------
# Duck-typed on the library's result values, so this module needs none of them to load.


def _word(value: Any) -> str:
    """A vocabulary word, whether a str Enum member or a plain string."""
    return str(getattr(value, "value", value))


def _backend(item: Any) -> str:
    return _word(getattr(item, "backend", None) or Backend.IPTABLES)


def node_findings(
    mappings: Iterable[Any],
    chains: Iterable[Any],
    families: Sequence[int],
    backends: Sequence[str] = (Backend.IPTABLES,),
    families_of: Optional[Dict[str, Sequence[int]]] = None,
) -> Findings:
    """Counts of an inventory's mappings (of either backend: a row's `backend`, else
    iptables) and chains, zero-filled for every backend and family that was read
    (`families_of`: a backend's own families, where they differ)."""
    mapping_counts: Dict[Tuple[str, int, str], int] = {}
    chain_counts: Dict[Tuple[str, int, str, str], int] = {}
    for backend in backends:
        for family in (families_of or {}).get(backend, families):
            for status in MAPPING_STATUSES.get(backend, STATUSES):
                mapping_counts[(backend, family, status)] = 0
            if backend != Backend.IPTABLES:
                continue
            for chain_type, statuses in CHAIN_STATUSES.items():
                for status in statuses:
                    chain_counts[(backend, family, chain_type, status)] = 0
    for mapping in mappings:
        for status in mapping.status:
            key = (_backend(mapping), mapping.family, _word(status))
            mapping_counts[key] = mapping_counts.get(key, 0) + 1
    for chain in chains:
        chain_type = _word(getattr(chain, "chain_type", None) or chain.kind)
        for status in chain.status:
            ckey = (_backend(chain), chain.family, chain_type, _word(status))
            chain_counts[ckey] = chain_counts.get(ckey, 0) + 1
    return Findings(
        mappings=tuple(MappingCount(*key, count) for key, count in sorted(mapping_counts.items())),
        chains=tuple(ChainCount(*key, count) for key, count in sorted(chain_counts.items())),
    )


def problem_findings(problems: Iterable[Any]) -> Tuple[ProblemCount, ...]:
    counts = dict.fromkeys(PROBLEM_KINDS, 0)
    for problem in problems:
        kind = _word(problem.kind)
        counts[kind] = counts.get(kind, 0) + 1
    return tuple(ProblemCount(kind, count) for kind, count in sorted(counts.items()))


def gc_findings(result: Any, families: Sequence[int]) -> Findings:
    """A gc result: removed and pending per family (a dry run removes nothing: what it
    would remove counts as pending), and the conntrack entries it deleted."""
    removed = dict.fromkeys(families, 0)
    pending = dict.fromkeys(families, 0)
    for chain in result.removed:
        if result.dry_run:
            pending[chain.family] = pending.get(chain.family, 0) + 1
        else:
            removed[chain.family] = removed.get(chain.family, 0) + 1
    for chain in result.pending:
        pending[chain.family] = pending.get(chain.family, 0) + 1
    return Findings(
        gc=tuple(
            GcCount(family, removed.get(family, 0), pending.get(family, 0))
            for family in sorted(set(removed) | set(pending))
        ),
        conntrack_deleted=result.conntrack_deleted,
    )


def cache_dir(path: str) -> CacheDir:
    """What libcni's cache in `path` holds: the entries of results/ as libcni names
    them (its temporary files start with a dot)."""
    folder = os.path.join(path, "results")
    try:
        with os.scandir(folder) as listing:
            entries = sum(1 for e in listing if not e.name.startswith(".") and e.is_file())
    except OSError:  # absent, or unreadable: the commands say which, on stderr
        return CacheDir(path, False, 0)
    return CacheDir(path, True, entries)


# --- rendering and writing ---------------------------------------------------------------


def _family(family: int) -> str:
    return str(family)


def _label_path(path: str) -> str:
    """A path as a label value: the file is UTF-8, a path's bytes need not be (Python
    holds those as surrogates, which no UTF-8 writer takes: the file was never written
    again, each run one warning). Such bytes are shown as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _families(report: MetricsReport) -> Iterator[Any]:
    """The report as prometheus_client metric families (HELP, TYPE, samples)."""
    from prometheus_client.core import GaugeMetricFamily

    command = report.command.value
    found = report.findings

    def gauge(name: str, documentation: str, labels: Sequence[str] = ()) -> Any:
        return GaugeMetricFamily(f"{PREFIX}_{name}", documentation, labels=["command", *labels])

    info = gauge("build_info", "portmapctl's version (always 1).", ["version"])
    info.add_metric([command, report.version], 1)
    yield info

    timestamp = gauge(
        "last_run_timestamp_seconds", "When the command's last run started (Unix time)."
    )
    timestamp.add_metric([command], report.started)
    yield timestamp
    duration = gauge("last_run_duration_seconds", "How long the command's last run took.")
    duration.add_metric([command], report.duration_seconds)
    yield duration
    success = gauge(
        "last_run_success",
        "1 when the command's last run did its work (check: also with problems found),"
        " 0 when it failed (see its stderr).",
    )
    success.add_metric([command], 1 if report.success else 0)
    yield success
    warnings = gauge(
        "last_run_warnings",
        "Warnings the command's last run said on stderr (0: none): a run that worked may"
        " still have left something undone (see its stderr or journal).",
    )
    warnings.add_metric([command], report.warnings)
    yield warnings

    if report.cache_dirs:
        present = gauge(
            "cni_cache_present",
            "1 when the CNI cache directory's results/ exists (0: no liveness from it).",
            ["dir"],
        )
        entries = gauge(
            "cni_cache_entries", "Attachments in the CNI cache directory's results/.", ["dir"]
        )
        for cache in report.cache_dirs:
            where = _label_path(cache.path)
            present.add_metric([command, where], 1 if cache.present else 0)
            entries.add_metric([command, where], cache.entries)
        yield present
        yield entries

    if found.mappings is not None:
        mappings = gauge(
            "mappings",
            "Port mappings (DNAT rules: of per-container chains for backend iptables, of"
            " the plugin's cni_hostport tables for nftables) by status; a mapping with"
            " several statuses counts under each.",
            ["backend", "family", "status"],
        )
        for m in found.mappings:
            mappings.add_metric([command, m.backend, _family(m.family), m.status], m.count)
        yield mappings
    if found.chains is not None:
        chains = gauge(
            "chains",
            "Per-container chains seen (CNI-DN-, legacy CNI-SN-) by status; a chain with"
            " several statuses counts under each.",
            ["backend", "family", "chain_type", "status"],
        )
        for c in found.chains:
            chains.add_metric(
                [command, c.backend, _family(c.family), c.chain_type, c.status], c.count
            )
        yield chains
    if found.problems is not None:
        problems = gauge("problems", "Problems check found, by kind.", ["kind"])
        for p in found.problems:
            problems.add_metric([command, p.kind], p.count)
        yield problems
    if found.gc is not None:
        removed = gauge(
            "gc_chains_removed", "Per-container chains the last gc run removed.", ["family"]
        )
        pending = gauge(
            "gc_chains_pending",
            "Per-container chains not live but still on the node after the last gc run"
            " (seen for less than --min-age).",
            ["family"],
        )
        for g in found.gc:
            removed.add_metric([command, _family(g.family)], g.removed)
            pending.add_metric([command, _family(g.family)], g.pending)
        yield removed
        yield pending
    if found.conntrack_deleted is not None:
        deleted = gauge(
            "conntrack_entries_deleted",
            "UDP conntrack entries the last run deleted (for host ports it unmapped).",
        )
        deleted.add_metric([command], found.conntrack_deleted)
        yield deleted


class _ReportCollector:
    """A prometheus_client collector that yields one report's metric families."""

    def __init__(self, report: MetricsReport) -> None:
        self._report = report

    def collect(self) -> Iterator[Any]:
        return _families(self._report)


def registry(report: MetricsReport) -> CollectorRegistry:
    """A fresh registry holding the report (never the process-wide default one)."""
    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry(auto_describe=True)
    reg.register(_ReportCollector(report))  # type: ignore[arg-type]
    return reg


def render(report: MetricsReport) -> str:
    """The report in the Prometheus text format (what `write` puts in the file)."""
    from prometheus_client import generate_latest

    return generate_latest(registry(report)).decode()


def write(report: MetricsReport, path: str) -> Optional[str]:
    """Write the report to `path` atomically. Returns None, or what went wrong as one
    line (the caller warns: metrics never change a command's outcome)."""
    shown = shown_path(path)
    if path == "-":  # stdout holds the command's result: not a place for metrics
        return "could not write the metrics file -: give a file path (stdout is for results)"
    refusal = _not_replaceable(path)
    if refusal is not None:
        return f"could not write the metrics file {shown}: {refusal}"
    try:
        data = render(report).encode()
    except ImportError:  # a distribution's package without it: the command goes on
        return f"could not write the metrics file {shown}: prometheus_client is not installed"
    # node_exporter runs as a user of its own: the file must be readable by it even
    # under a strict umask (the systemd units' 0077). It holds counts, no secrets.
    umask = os.umask(0o077)
    os.umask(umask & ~0o044)
    try:
        # Temporary file next to `path` (same file system: rename is atomic), removed
        # when anything ends the write (SIGTERM's Terminated too); one a killed run
        # left (SIGKILL) goes now. Its name is prometheus_client's: path.PID.THREAD.
        from portmapctl.host.files import remove_stale

        remove_stale(path, _TEMPORARY)
        _write_durably(path, data)
    except FileExistsError:  # (from files.create_new: planted again once unlinked)
        return (
            f"could not write the metrics file {shown}: its temporary file"
            f" {shown_path(_temporary(path))} keeps reappearing"
        )
    except (OSError, ValueError) as err:  # ValueError: a NUL byte in the path
        reason = getattr(err, "strerror", None) or str(err)
        return f"could not write the metrics file {shown}: {reason}"
    except BaseException:  # (between the open and replace_durably's own cleanup)
        with contextlib.suppress(OSError):
            os.unlink(_temporary(path))
        raise
    finally:
        os.umask(umask)
    return None


def _temporary(path: str) -> str:
    return f"{path}.{os.getpid()}.{threading.current_thread().ident}"


def _write_durably(path: str, data: bytes) -> None:
    """prometheus_client's write_to_textfile, on disk (files.replace_durably: the
    module docstring says why), and into a file of its own (files.create_new: its
    O_TRUNC wrote through a hard link planted at the temporary name, and hung on a
    FIFO there; root writes this file, in a directory others may write to)."""
    from portmapctl.host.files import create_new, replace_durably

    temporary = _temporary(path)
    replace_durably(create_new(temporary, 0o666), temporary, path, data)


_TEMPORARY = re.compile(r"\.[0-9]+\.[0-9]+")


def shown_path(path: str) -> str:
    """The path as a warning line names it: a newline or escape sequence in it must
    not start a line of its own."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in path)


def _not_replaceable(path: str) -> Optional[str]:
    """Why what is at `path` must not be replaced, or None (nothing there, a regular
    file, or it cannot be looked at: the write then says why). rename(2) replaces
    whatever the name holds: `--metrics-file /dev/null` (meant to turn metrics off) or
    `/dev/stdout` (to see them) run as root put a regular file in place of the node's
    device or symlink. A symlink is not followed either: the file is written where the
    name is, or nowhere."""
    try:
        info = os.lstat(path)
    except (OSError, ValueError):  # ValueError: a NUL byte in the path
        return None
    if stat.S_ISREG(info.st_mode):
        return None
    if stat.S_ISLNK(info.st_mode):
        what = "a symlink"
    elif stat.S_ISDIR(info.st_mode):
        what = "a directory"
    else:
        what = "a device, FIFO or socket"
    return f"it is {what}, not a regular file: left as it is (give a .prom file's path)"


# --- timing a run ------------------------------------------------------------------------


class Recorder:
    """Collects one run's findings while the command works; see `recording`."""

    def __init__(
        self,
        command: Command,
        cache_dirs: Sequence[str],
        warned: Optional[Callable[[], int]] = None,
    ) -> None:
        self.command = command
        self.cache_dirs = tuple(cache_dirs)
        self.findings = Findings()
        self.started = time.time()
        self._clock = time.monotonic()
        self._warned = warned  # how many warnings the run has said so far
        # What the file holds instead, where the run turned out to be one that leaves
        # it alone (leave_alone): nothing is written then, however the run ends.
        self.left_alone: Optional[str] = None

    def leave_alone(self, holds: str) -> None:
        """This run writes no file: it did not do what the file says of the command
        (gc told "no" removes nothing); `holds`, what the file holds instead (the
        caller's warning says it)."""
        self.left_alone = holds

    def note(self, findings: Findings) -> None:
        """Add what the command found (fields left None keep what was noted before)."""
        given = {k: v for k, v in vars(findings).items() if v is not None}
        self.findings = replace(self.findings, **given)

    def note_node(
        self, mappings: Iterable[Any], chains: Iterable[Any], families: Sequence[int],
        read: Optional[Dict[str, Sequence[int]]] = None,
    ) -> None:  # fmt: skip
        """An inventory of the whole node (never a filtered view of it). `read`: the
        backends that were read, each with its families (None: iptables only)."""
        backends = tuple(read) if read is not None else (Backend.IPTABLES,)
        self.note(node_findings(mappings, chains, families, backends, read))

    def note_problems(self, problems: Iterable[Any]) -> None:
        self.note(Findings(problems=problem_findings(problems)))

    def note_gc(self, result: Any, families: Sequence[int]) -> None:
        self.note(gc_findings(result, families))

    def report(self, success: bool) -> MetricsReport:
        duration = max(time.monotonic() - self._clock, 0.0)
        return MetricsReport(
            self.command,
            self.started,
            round(duration, 6),
            success,
            # A failed run's counts would be half of the node: report none.
            self.findings if success else Findings(),
            tuple(cache_dir(path) for path in self.cache_dirs),
            warnings=self._warned() if self._warned is not None else 0,
        )


@contextlib.contextmanager
def recording(
    path: str,
    command: Command,
    cache_dirs: Sequence[str],
    warn: Callable[[str], None],
    ok_exit_codes: Tuple[int, ...] = (0,),
    warned: Optional[Callable[[], int]] = None,
) -> Iterator[Recorder]:
    """Time the block and write its report to `path` when it ends, however it ends.

    `warn(line)` gets the one line of a write that failed; `warned()`, how many
    warnings the run has said (its last_run_warnings). An exception from the block
    (an error of the command) is reported as a failed run and then goes on; so does
    an exit (typer.Exit / SystemExit) whose code is not in `ok_exit_codes`. Ctrl-C
    writes nothing: the run neither finished nor failed. Nor does a run its recorder
    was told to leave the file alone (Recorder.leave_alone).
    """
    from portmapctl.errors import Interrupted

    recorder = Recorder(command, cache_dirs, warned)
    try:
        yield recorder
    except (KeyboardInterrupt, Interrupted):  # (the CLI's Ctrl-C is the second)
        raise
    except BaseException as err:  # noqa: B036 - reported, then re-raised as it was
        if recorder.left_alone is None:
            _finish(recorder, path, warn, _is_exit(err) and _exit_code(err) in ok_exit_codes)
        raise
    if recorder.left_alone is None:
        _finish(recorder, path, warn, True)


def _finish(recorder: Recorder, path: str, warn: Callable[[str], None], success: bool) -> None:
    problem = write(recorder.report(success), path)
    if problem is not None:
        warn(problem)


def _is_exit(err: BaseException) -> bool:
    # typer may vendor click: match click's Exit by name, as cli.main does.
    return isinstance(err, SystemExit) or type(err).__name__ == "Exit"


def _exit_code(err: BaseException) -> int:
    code = getattr(err, "exit_code", getattr(err, "code", 0))
    return code if isinstance(code, int) else 1


def metric_names(report: MetricsReport) -> List[str]:
    """The names of the metric families the report gives (for tests and docs)."""
    return [family.name for family in _families(report)]
