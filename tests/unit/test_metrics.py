"""ops/metrics.py: the Prometheus metrics of a run, read back with prometheus_client's
own parser (what Prometheus and the node_exporter read), for the example node in
examples/ whose problems are known (README tour): one healthy dual-stack container,
one shadowed, one stale, one orphaned.

No root: the node comes from its iptables-save dumps (gc for real, in a namespace:
tests/kernel/test_metrics_gc.py).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, FrozenSet, Iterator, Tuple

import pmctl
import pytest
from prometheus_client.parser import text_string_to_metric_families

from portmapctl.cni import cache as cni_cache
from portmapctl.core.status import ChainKind, ProblemKind, Status
from portmapctl.host import files
from portmapctl.iptables import inventory
from portmapctl.iptables.access.snapshot import SnapshotBackend
from portmapctl.ops import check, metrics

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CACHE = str(EXAMPLES / "cni-cache")
SNAPSHOTS = {4: str(EXAMPLES / "node.v4.save"), 6: str(EXAMPLES / "node.v6.save")}
# Every container ID and chain of the example node: none may be a label value.
IDENTITIES = ("3f2a9c1e5b7d", "8c41d07a2e9f", "b7e0f2c94d1a", "d19e3b7f60c2", "CNI-DN-2")

Sample = Tuple[str, FrozenSet[Tuple[str, str]]]


def parse(text: str) -> Tuple[Dict[str, object], Dict[Sample, float]]:
    """{name: family} and {(name, labels): value}, as Prometheus reads the file."""
    families = {}
    samples: Dict[Sample, float] = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = family
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = sample.value
    return families, samples


def key(name: str, **labels: str) -> Sample:
    return (f"portmapctl_{name}", frozenset(labels.items()))


def example_findings(command: metrics.Command) -> metrics.Findings:
    backend = SnapshotBackend(SNAPSHOTS)
    tables = {f: backend.read(f) for f in (4, 6)}
    cache = cni_cache.read_cache(CACHE)
    found = inventory.build(tables, cache)
    findings = metrics.node_findings(found.mappings, found.chains, (4, 6))
    if command == metrics.Command.CHECK:
        problems, _ = check.diagnose(tables, cache)
        findings = metrics.Findings(
            findings.mappings, findings.chains, metrics.problem_findings(problems)
        )
    return findings


def report(command=metrics.Command.CHECK, **changes) -> metrics.MetricsReport:
    values = dict(
        command=command,
        started=1764560000.25,
        duration_seconds=0.125,
        success=True,
        findings=example_findings(command),
        cache_dirs=(metrics.cache_dir(CACHE),),
    )
    values.update(changes)
    return metrics.MetricsReport(**values)


# What the example node is (README tour): non-zero counts; every other sample is 0.
EXAMPLE_MAPPINGS = {("4", "ok"): 2, ("4", "shadowed"): 1, ("4", "stale"): 1, ("4", "orphan"): 1}
EXAMPLE_MAPPINGS[("6", "ok")] = 2
EXAMPLE_CHAINS = {("4", "ok"): 1, ("4", "shadowed"): 1, ("4", "stale"): 1, ("4", "orphan"): 1}
EXAMPLE_CHAINS[("6", "ok")] = 1
EXAMPLE_PROBLEMS = {"missing-entry": 1, "shadowed": 1, "stale": 1}


def test_every_metric_of_the_example_node(tmp_path):
    path = tmp_path / "portmapctl-check.prom"
    assert metrics.write(report(), str(path)) is None
    families, samples = parse(path.read_text())
    c = {"command": "check"}
    expected: Dict[Sample, float] = {
        key("build_info", version=metrics.__version__, **c): 1,
        key("last_run_timestamp_seconds", **c): 1764560000.25,
        key("last_run_duration_seconds", **c): 0.125,
        key("last_run_success", **c): 1,
        key("last_run_warnings", **c): 0,
        key("cni_cache_present", dir=CACHE, **c): 1,
        key("cni_cache_entries", dir=CACHE, **c): 3,
    }
    for family in ("4", "6"):
        for status in metrics.STATUSES:
            count = EXAMPLE_MAPPINGS.get((family, status), 0)
            expected[key("mappings", backend="iptables", family=family, status=status, **c)] = count
        for chain_type, statuses in metrics.CHAIN_STATUSES.items():
            for status in statuses:
                count = EXAMPLE_CHAINS.get((family, status), 0) if chain_type == "dnat" else 0
                labels = dict(backend="iptables", family=family, chain_type=chain_type, **c)
                expected[key("chains", status=status, **labels)] = count
    for kind in metrics.PROBLEM_KINDS:
        expected[key("problems", kind=kind, **c)] = EXAMPLE_PROBLEMS.get(kind, 0)
    assert samples == expected
    assert set(families) == {name for name, _ in expected}
    assert not any(family.name.startswith("portmapctl_gc") for family in families.values())


def test_names_types_and_help_follow_the_prometheus_conventions():
    text = metrics.render(report(findings=_all_findings()))
    families, _ = parse(text)
    assert len(families) == 13
    for name, family in families.items():
        assert re.fullmatch(r"portmapctl_[a-z]+(_[a-z]+)*", name), name
        assert family.type == "gauge", "a run's values: gauges, never counters"
        assert not name.endswith("_total"), "_total is for counters"
        assert len(family.documentation) > 20, f"{name} needs HELP text"
        assert f"# HELP {name} " in text
        for sample in family.samples:
            assert "command" in sample.labels
            if "time" in name or "duration" in name:
                assert name.endswith("_seconds"), "base unit in the name"


def test_no_container_id_or_chain_is_a_label_value():
    text = metrics.render(report())
    for identity in IDENTITIES:
        assert identity not in text
    _, samples = parse(text)
    values = {value for _, labels in samples for _, value in labels}
    assert not [v for v in values if re.search(r"CNI-(DN|SN)-[0-9a-f]|[0-9a-f]{12}", v)]
    bounded = {"command", "backend", "family", "status", "chain_type", "kind", "version", "dir"}
    assert {label for _, labels in samples for label, _ in labels} <= bounded


def _gc_result(dry_run: bool) -> SimpleNamespace:
    chain = SimpleNamespace
    return SimpleNamespace(
        dry_run=dry_run,
        removed=(chain(family=4), chain(family=4), chain(family=6)),
        pending=(chain(family=6),),
        conntrack_deleted=0 if dry_run else 7,
    )


def _all_findings() -> metrics.Findings:
    node = example_findings(metrics.Command.CHECK)
    gc = metrics.gc_findings(_gc_result(False), (4, 6))
    return metrics.Findings(node.mappings, node.chains, node.problems, gc.gc, 7)


@pytest.mark.parametrize("dry_run", [False, True])
def test_gc_removed_pending_and_conntrack(dry_run):
    found = metrics.gc_findings(_gc_result(dry_run), (4, 6))
    text = metrics.render(report(metrics.Command.GC, findings=found))
    families, samples = parse(text)
    c = {"command": "gc"}
    if dry_run:  # nothing removed; what would go is still there
        assert samples[key("gc_chains_removed", family="4", **c)] == 0
        assert samples[key("gc_chains_pending", family="4", **c)] == 2
        assert samples[key("gc_chains_pending", family="6", **c)] == 2
        assert samples[key("conntrack_entries_deleted", **c)] == 0
    else:
        assert samples[key("gc_chains_removed", family="4", **c)] == 2
        assert samples[key("gc_chains_removed", family="6", **c)] == 1
        assert samples[key("gc_chains_pending", family="4", **c)] == 0
        assert samples[key("gc_chains_pending", family="6", **c)] == 1
        assert samples[key("conntrack_entries_deleted", **c)] == 7
    assert "portmapctl_mappings" not in families, "gc does not measure mappings"


FIELD = Path(__file__).resolve().parents[1] / "fixtures" / "field"


@pytest.mark.parametrize(
    "snapshots",
    [
        SNAPSHOTS,
        # A chain an old plugin wrote dead (-d 0.0.0.0/32) before a working one, and
        # v0.6's legacy CNI-SN- chains: every status a chain of the field has.
        {4: str(FIELD / "v0.8.5-dead-before-working.v4.save")},
        {4: str(FIELD / "v0.6-portless-entries.v4.save")},
    ],
    ids=["example", "dead", "v0.6"],
)
def test_the_vocabularies_are_checks_and_lists(snapshots):
    """The zero-filled words are core/status.py's; every status a chain of each type
    is found with is zero-filled for that type (`dead` was not: an alert on
    `portmapctl_chains{status="dead"}` saw no series on a node without one)."""
    assert set(metrics.STATUSES) == {s.value for s in Status}
    assert set(metrics.PROBLEM_KINDS) == {k.value for k in ProblemKind}
    assert set(metrics.CHAIN_STATUSES) == {ChainKind.DNAT.value, ChainKind.LEGACY_SNAT.value}
    tables = {f: SnapshotBackend(snapshots).read(f) for f in snapshots}
    found = inventory.build(tables, cni_cache.read_cache(CACHE))
    statuses = {str(s) for chain in found.chains for s in chain.status}
    assert len(found.chains) >= 2 and statuses - {"ok"}, "the fixture tells nothing"
    for chain in found.chains:
        assert set(map(str, chain.status)) <= set(metrics.CHAIN_STATUSES[chain.kind])


def test_cache_dirs_absent_and_counted(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "net-abc-eth0").write_text("{}")
    (tmp_path / "results" / ".tmp-123").write_text("")  # libcni's temporary file
    assert metrics.cache_dir(str(tmp_path)) == metrics.CacheDir(str(tmp_path), True, 1)
    gone = str(tmp_path / "nothing")
    assert metrics.cache_dir(gone) == metrics.CacheDir(gone, False, 0)


def test_a_cache_dir_whose_name_is_not_utf8_still_gets_its_file_written(tmp_path):
    """`--cni-cache-dir` of bytes that are not UTF-8 (Python holds them as surrogates):
    the file could not be encoded, so it was never written again, one warning a run,
    the alerts on its age the only sign. The label shows such a byte as \\xff."""
    folder = os.fsdecode(os.fsencode(str(tmp_path)) + b"/cache\xff")
    os.makedirs(os.path.join(folder, "results"))
    path = tmp_path / "portmapctl-check.prom"
    assert metrics.write(report(cache_dirs=(metrics.cache_dir(folder),)), str(path)) is None
    samples = samples_of(path)
    assert samples[key("cni_cache_present", command="check", dir=f"{tmp_path}/cache\\xff")] == 1


# --- writing: atomic, never fatal --------------------------------------------------------


def test_an_unwritable_path_is_one_line_and_leaves_nothing(tmp_path):
    missing_dir = tmp_path / "no-such-dir" / "portmapctl.prom"
    problem = metrics.write(report(), str(missing_dir))
    assert problem and "\n" not in problem and str(missing_dir) in problem
    a_directory = tmp_path / "taken"
    (a_directory / "inside").mkdir(parents=True)
    problem = metrics.write(report(), str(a_directory))
    assert problem and "\n" not in problem
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"], "no temporary file left"
    with_nul = metrics.write(report(), str(tmp_path / "a\0b.prom"))
    assert with_nul and "\n" not in with_nul
    assert metrics.write(report(), "-").startswith("could not write the metrics file -: ")
    newline = metrics.write(report(), str(tmp_path / "no-dir\nx" / "a.prom"))
    assert newline and "\n" not in newline and "no-dir\\nx" in newline


def test_a_failed_write_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "portmapctl-gc.prom"
    assert metrics.write(report(started=1.0), str(path)) is None
    before = path.read_text()

    def full_disk(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    problem = metrics.write(report(started=2.0), str(path))
    assert problem == f"could not write the metrics file {path}: No space left on device"
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "temporary file removed"


@pytest.mark.parametrize("kind", ["fifo", "symlink", "symlink-to-file"])
def test_a_path_that_is_not_a_regular_file_is_never_replaced(tmp_path, kind):
    """`--metrics-file /dev/null` (to turn metrics off) or `/dev/stdout` (to see them:
    `-` is refused) as root replaced the node's device or symlink with a regular file:
    rename(2) replaces whatever is at the path. Anything there but a regular file (a
    device, FIFO, socket, symlink) is left as it is, with the one warning line."""
    path = tmp_path / "portmapctl-gc.prom"
    target = tmp_path / "elsewhere"
    if kind == "fifo":  # as /dev/null would be, without root's mknod
        os.mkfifo(path)
    elif kind == "symlink":  # as /dev/stdout -> /proc/self/fd/1
        path.symlink_to("/proc/self/fd/1")
    else:
        target.write_text("someone else's\n")
        path.symlink_to(target)
    before = os.lstat(path)
    problem = metrics.write(report(), str(path))
    assert problem is not None and "\n" not in problem and str(path) in problem
    assert "not a regular file" in problem
    after = os.lstat(path)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode), "left as it was"
    if kind == "symlink-to-file":
        assert target.read_text() == "someone else's\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [path.name] + ([target.name] if kind == "symlink-to-file" else [])
    ), "no temporary file left"


def test_a_regular_file_at_the_path_is_replaced_whole(tmp_path):
    path = tmp_path / "portmapctl-gc.prom"
    path.write_text("old\n")
    assert metrics.write(report(), str(path)) is None
    assert path.read_text() == metrics.render(report())


def test_the_file_is_readable_by_the_collector_under_a_strict_umask(tmp_path):
    path = tmp_path / "portmapctl-gc.prom"
    old = os.umask(0o077)
    try:
        assert metrics.write(report(), str(path)) is None
        after = os.umask(0o077)
    finally:
        os.umask(old)
    assert after == 0o077, "the caller's umask is restored"
    assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044
    assert stat.S_IMODE(path.stat().st_mode) & 0o022 == 0


# Something planted at the name of a writer's temporary file: the metrics file's
# (`PATH.PID.TID`, beside the .prom file in node_exporter's textfile directory, often
# group-writable) and write_atomically's (`PATH.PID.tmp`, in the run directory). Both
# names are predictable. The metrics writer opened its name with O_TRUNC, without
# O_EXCL (as prometheus_client's write_to_textfile does): root wrote through a hard
# link planted there into the linked file and renamed that inode, owned by whoever
# planted it, into place; hung forever on a FIFO (an open for writing waits for a
# reader), the cron job and the lock it held with it; and gave up on a symlink, no
# metrics. Now both writers create their file with O_EXCL|O_NOFOLLOW, the one way
# (files.create_new): what was planted is unlinked (unlink follows nothing), never
# written through, and the file is written all the same: a cron job wants its
# metrics, and a warning would not stop the planting.


def _write_metrics(path: Path) -> None:
    assert metrics.write(report(), str(path)) is None


def _write_state(path: Path) -> None:
    files.write_atomically(str(path), b'{"state": 1}\n')


WRITERS = {
    "metrics": (_write_metrics, lambda p: Path(f"{p}.{os.getpid()}.{threading.get_ident()}")),
    "write_atomically": (_write_state, lambda p: Path(f"{p}.{os.getpid()}.tmp")),
}


@pytest.fixture
def no_hang() -> Iterator[None]:
    """A FIFO opened for writing waits for a reader: the test fails, not hangs."""

    def expired(*_args: object) -> None:
        raise TimeoutError("the writer hung on what was planted at its temporary name")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(10)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("writer", sorted(WRITERS))
@pytest.mark.parametrize("planted", ["symlink", "hardlink", "fifo"])
def test_what_is_planted_at_the_temporary_name_is_never_written_through(
    tmp_path: Path, no_hang: None, writer: str, planted: str
) -> None:
    write, temporary_of = WRITERS[writer]
    folder = tmp_path / "textfile"
    folder.mkdir()
    path = folder / "portmapctl-check.prom"
    target = tmp_path / "elsewhere"
    target.write_text("someone else's\n")
    temporary = temporary_of(path)
    if planted == "symlink":
        temporary.symlink_to(target)
    elif planted == "hardlink":
        os.link(target, temporary)
    else:
        os.mkfifo(temporary)
    write(path)
    assert target.read_text() == "someone else's\n", "the target is left as it was"
    assert os.lstat(path).st_ino != os.lstat(target).st_ino, "not the planted inode"
    assert path.is_file() and not path.is_symlink()
    if writer == "metrics":
        assert path.read_text() == metrics.render(report())
    assert sorted(p.name for p in folder.iterdir()) == [path.name], "no temporary file left"


def test_a_temporary_name_planted_again_at_once_is_one_warning(tmp_path, monkeypatch):
    """Someone planting the name again as soon as it is unlinked (a loop racing the
    writer): the metrics are not written that run, one line says why, the command's
    outcome is its own (metrics never change it); nothing is written through."""
    path = tmp_path / "portmapctl-check.prom"
    target = tmp_path / "elsewhere"
    target.write_text("someone else's\n")
    temporary = Path(f"{path}.{os.getpid()}.{threading.get_ident()}")
    temporary.symlink_to(target)
    real_unlink = os.unlink

    def planted_again(name, *args, **kwargs):
        real_unlink(name, *args, **kwargs)
        if name == str(temporary):
            temporary.symlink_to(target)

    monkeypatch.setattr(files.os, "unlink", planted_again)
    problem = metrics.write(report(), str(path))
    assert problem == (
        f"could not write the metrics file {path}: its temporary file {temporary} keeps reappearing"
    )
    assert target.read_text() == "someone else's\n" and not path.exists()


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_a_temporary_name_gone_before_it_is_unlinked_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: str
) -> None:
    """What was at the temporary name (a dead run's file with our PID: PIDs come round)
    gone between the open that found it and create_new's unlink of it: another run's
    remove_stale took it (older than a minute, any run's), or whoever planted it. The
    name is free, as wanted: the file is written. unlink's ENOENT failed the write
    (metrics: `No such file or directory`; write_atomically: its "cannot write")."""
    write, temporary_of = WRITERS[writer]
    path = tmp_path / "portmapctl-check.prom"
    temporary = temporary_of(path)
    temporary.write_text("a dead run's\n")
    real_unlink = os.unlink

    def taken_first(name, *args, **kwargs):
        if name == str(temporary) and temporary.exists():
            real_unlink(name)  # (the other one's unlink, just before ours)
        real_unlink(name, *args, **kwargs)

    monkeypatch.setattr(files.os, "unlink", taken_first)
    write(path)
    assert path.is_file() and not temporary.exists()


# --- recording a run ----------------------------------------------------------------------


class Exit(Exception):
    """Shaped like click's Exit (typer.Exit)."""

    def __init__(self, code: int) -> None:
        self.exit_code = code


def _recorded(tmp_path, body, ok=(0,)) -> Tuple[Dict[Sample, float], list]:
    path = tmp_path / "run.prom"
    warnings: list = []
    try:
        with metrics.recording(str(path), metrics.Command.CHECK, [CACHE], warnings.append, ok) as r:
            body(r)
    except (Exit, RuntimeError):
        pass
    if not path.exists():
        return {}, warnings
    return parse(path.read_text())[1], warnings


def test_recording_a_run_that_worked(tmp_path):
    samples, warnings = _recorded(
        tmp_path, lambda r: r.note(example_findings(metrics.Command.CHECK))
    )
    assert warnings == []
    assert samples[key("last_run_success", command="check")] == 1
    assert samples[key("problems", command="check", kind="shadowed")] == 1
    assert samples[key("cni_cache_entries", command="check", dir=CACHE)] == 3


def test_recording_check_exit_1_is_a_run_that_worked(tmp_path):
    def problems_found(r):
        r.note(example_findings(metrics.Command.CHECK))
        raise Exit(1)

    samples, _ = _recorded(tmp_path, problems_found, ok=(0, 1))
    assert samples[key("last_run_success", command="check")] == 1
    assert samples[key("problems", command="check", kind="stale")] == 1


@pytest.mark.parametrize("error", [RuntimeError("iptables-restore failed"), Exit(3)])
def test_recording_a_failed_run_says_so_and_no_half_counts(tmp_path, error):
    def fails(r):
        r.note(example_findings(metrics.Command.CHECK))
        raise error

    samples, _ = _recorded(tmp_path, fails, ok=(0, 1))
    assert samples[key("last_run_success", command="check")] == 0
    assert key("last_run_timestamp_seconds", command="check") in samples
    assert not [name for name, _ in samples if name == "portmapctl_problems"]


def test_recording_ctrl_c_writes_nothing(tmp_path):
    def interrupted(_r):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _recorded(tmp_path, interrupted)
    assert list(tmp_path.iterdir()) == []


def test_recording_an_unwritable_file_warns_once(tmp_path):
    warnings: list = []
    with metrics.recording(
        str(tmp_path / "nope" / "x.prom"), metrics.Command.LIST, [], warnings.append
    ):
        pass
    assert len(warnings) == 1 and "could not write the metrics file" in warnings[0]


# --- the command line: --metrics-file on list, check and gc --------------------------------

SNAPSHOT_ARGS = [
    "--snapshot",
    SNAPSHOTS[4],
    "--snapshot6",
    SNAPSHOTS[6],
    "--cni-cache-dir",
    CACHE,
]


def run_cli(args, env=None):
    return pmctl.run(args, env=env)


def samples_of(path: Path) -> Dict[Sample, float]:
    return parse(path.read_text())[1]


def test_list_writes_the_example_nodes_metrics(tmp_path):
    path = tmp_path / "portmapctl-list.prom"
    without = run_cli(["list", *SNAPSHOT_ARGS])
    done = run_cli(["list", *SNAPSHOT_ARGS, "--metrics-file", str(path)])
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout == without.stdout, "the metrics change nothing of the output"
    families, samples = parse(path.read_text())
    c = {"command": "list"}
    assert samples[key("last_run_success", **c)] == 1
    assert 0 < samples[key("last_run_duration_seconds", **c)] < 60
    assert abs(samples[key("last_run_timestamp_seconds", **c)] - path.stat().st_mtime) < 60
    assert samples[key("cni_cache_entries", dir=CACHE, **c)] == 3
    for family in ("4", "6"):
        for status in metrics.STATUSES:
            labels = dict(backend="iptables", family=family, status=status, **c)
            assert samples[key("mappings", **labels)] == EXAMPLE_MAPPINGS.get((family, status), 0)
        for status in metrics.CHAIN_STATUSES["dnat"]:
            labels = dict(backend="iptables", family=family, chain_type="dnat", status=status)
            assert samples[key("chains", **labels, **c)] == EXAMPLE_CHAINS.get((family, status), 0)
    assert samples[key("last_run_warnings", **c)] == 0
    # list does not diagnose, nor collect garbage: those series are absent, not zero.
    assert "portmapctl_problems" not in families
    assert not [name for name in families if name.startswith("portmapctl_gc_")]


@pytest.mark.parametrize("command", ["list", "check"])
def test_the_warnings_a_run_says_are_counted(tmp_path, command):
    """A cache entry that cannot be read is one warning, and the run goes on and works
    (SPEC §3): on a timer nobody reads its stderr, so the file counts what it said."""
    cache = tmp_path / "cache"
    shutil.copytree(CACHE, cache)
    (cache / "results" / "podman-0123456789abcdef-eth0").write_text("{not json")
    path = tmp_path / f"portmapctl-{command}.prom"
    args = [command, *SNAPSHOT_ARGS[:4], "--cni-cache-dir", str(cache), "--metrics-file", str(path)]
    done = run_cli(args)
    said = [line for line in done.stderr.splitlines() if line.startswith("portmapctl: warning:")]
    assert len(said) == 1 and "podman-0123456789abcdef-eth0" in said[0], done.stderr
    samples = samples_of(path)
    assert samples[key("last_run_success", command=command)] == 1
    assert samples[key("last_run_warnings", command=command)] == 1


def test_one_path_gives_each_command_a_file_of_its_own(tmp_path):
    """{command} in the path: list and check write a file each (with one fixed path,
    a list replaced check's metrics, and gc's). Given here on the command line: from
    PORTMAPCTL_METRICS_FILE a snapshot's run writes none (the node's own runs, with the
    variable: tests/kernel/test_metrics_node.py)."""
    given = ["--metrics-file", str(tmp_path / "portmapctl-{command}.prom")]
    assert run_cli(["list", *SNAPSHOT_ARGS, *given]).returncode == 0
    assert run_cli(["check", *SNAPSHOT_ARGS, *given]).returncode == 1
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["portmapctl-check.prom", "portmapctl-list.prom"]
    for command in ("check", "list"):
        samples = samples_of(tmp_path / f"portmapctl-{command}.prom")
        assert samples[key("last_run_success", command=command)] == 1


def test_list_metrics_are_the_whole_node_whatever_the_filters(tmp_path):
    path = tmp_path / "portmapctl-list.prom"
    done = run_cli(["list", *SNAPSHOT_ARGS, "--port", "9000", "--metrics-file", str(path)])
    assert done.returncode == 0
    labels = dict(backend="iptables", family="4", status="ok", command="list")
    assert samples_of(path)[key("mappings", **labels)] == 2


def test_check_reports_its_problems(tmp_path):
    path = tmp_path / "portmapctl-check.prom"
    done = run_cli(["check", *SNAPSHOT_ARGS, "--metrics-file", str(path)])
    assert done.returncode == 1, "problems found: exit 1, as without metrics"
    assert done.stderr == ""
    samples = samples_of(path)
    c = {"command": "check"}
    assert samples[key("last_run_success", **c)] == 1, "finding problems is check's work"
    for kind in metrics.PROBLEM_KINDS:
        assert samples[key("problems", kind=kind, **c)] == EXAMPLE_PROBLEMS.get(kind, 0)
    labels = dict(backend="iptables", family="4", status="shadowed", **c)
    assert samples[key("mappings", **labels)] == 1


ONE_MAPPING = ["--container", "3f2a9c1e5b7d4a60web", "--network", "podman"]


@pytest.mark.parametrize(
    "mapping",
    [
        # Only 8080 of the container's 8080 and 5353: "extra-rules", "extra-entry".
        [*ONE_MAPPING, "--ip", "10.88.0.5/16", "-p", "8080:80"],
        [*ONE_MAPPING, "--ip", "10.88.0.5/16"],  # bad input (no -p): exit 2
    ],
)
def test_a_check_of_one_mapping_leaves_the_nodes_check_metrics_alone(tmp_path, mapping):
    """check of one mapping judges that mapping against what was given, not the node:
    its problems (the ports not given, `extra-rules`) are no problem of the node, its
    bad input no failed check. Written into the node's file (PORTMAPCTL_METRICS_FILE
    set for the node, as monitoring.md sets it up) they replaced the timer's counts:
    `portmapctl_problems{kind="extra-rules"} 1` (PortmapctlProblems' kind) on a node
    without it, the node's missing-entry, shadowed and stale gone, or
    `last_run_success 0`. The file stays as the node-wide check wrote it; one warning
    after a run that worked, none beside an error's one line."""
    path = tmp_path / "portmapctl-check.prom"
    env = {"PORTMAPCTL_METRICS_FILE": str(tmp_path / "portmapctl-{command}.prom")}
    # The node-wide check's file (a dump's, given by name: from the variable a
    # snapshot's check writes none).
    assert run_cli(["check", *SNAPSHOT_ARGS, "--metrics-file", str(path)]).returncode == 1
    node_wide = path.read_bytes()
    without = run_cli(["check", *SNAPSHOT_ARGS, *mapping])
    done = run_cli(["check", *SNAPSHOT_ARGS, *mapping], env=env)
    assert (done.returncode, done.stdout) == (without.returncode, without.stdout)
    assert path.read_bytes() == node_wide
    if without.returncode == 2:  # its error line alone, as ever
        assert done.stderr == without.stderr
        pmctl.assert_error(done, 2, "-p")
    else:
        pmctl.assert_metrics_left_alone(
            done,
            without,
            path,
            "the whole node's check, not one mapping's (check without the mapping's"
            " options writes it)",
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["portmapctl-check.prom"]


NFT_EXAMPLE = ["--nft-snapshot", str(EXAMPLES / "nft" / "ruleset.json")]
# A support bundle's dumps, read on some node: each snapshot option alone, and both.
DUMPS = {
    "snapshot": ["--snapshot", SNAPSHOTS[4], "--cni-cache-dir", CACHE],
    "snapshot6": ["--snapshot6", SNAPSHOTS[6], "--cni-cache-dir", CACHE],
    "nft-snapshot": [*NFT_EXAMPLE, "--cni-cache-dir", str(EXAMPLES / "nft" / "cni-cache")],
    "all": [*SNAPSHOT_ARGS, *NFT_EXAMPLE],
}
SNAPSHOT_HOLDS = (
    "this node's {command} (PORTMAPCTL_METRICS_FILE), and a snapshot may be another"
    " node's (an explicit --metrics-file writes the snapshot's)"
)
THE_NODES = b'portmapctl_last_run_success{command="X"} 1.0\n'  # what the timer wrote


@pytest.mark.parametrize("dump", list(DUMPS.values()), ids=list(DUMPS))
@pytest.mark.parametrize(
    "args",
    [["list"], ["list", "--proto", "tcp"], ["check"]],
    ids=["list", "list-by-typer", "check"],  # list's fast path (cli/list_fast.py), typer's
)
def test_a_snapshot_run_leaves_the_nodes_metrics_file_alone(tmp_path, args, dump):
    """A run that reads a dump (--snapshot, --snapshot6, --nft-snapshot: a support
    bundle's, maybe another node's) wrote the node's file that PORTMAPCTL_METRICS_FILE
    names (set node-wide, as monitoring.md sets it up) with the dump's counts: a
    support engineer reading a bundle on a node raised its alerts (the bundle's stale
    and shadowed) or reset them (a healthy bundle's zeros). From the variable the file
    is left as the node's runs wrote it, with one warning; given on the command line
    (--metrics-file) the snapshot's metrics are written, as asked."""
    command = args[0]
    path = tmp_path / f"portmapctl-{command}.prom"
    path.write_bytes(THE_NODES)
    env = {"PORTMAPCTL_METRICS_FILE": str(tmp_path / "portmapctl-{command}.prom")}
    without = run_cli([*args, *dump], env={"PORTMAPCTL_METRICS_FILE": ""})
    done = run_cli([*args, *dump], env=env)
    assert without.returncode in (0, 1), without.stderr
    assert (done.returncode, done.stdout) == (without.returncode, without.stdout)
    assert path.read_bytes() == THE_NODES
    pmctl.assert_metrics_left_alone(done, without, path, SNAPSHOT_HOLDS.format(command=command))
    given = tmp_path / "bundle.prom"
    done = run_cli([*args, *dump, "--metrics-file", str(given)], env=env)
    assert (done.returncode, done.stderr) == (without.returncode, without.stderr)
    assert samples_of(given)[key("last_run_success", command=command)] == 1
    assert path.read_bytes() == THE_NODES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle.prom", path.name]


@pytest.mark.parametrize("command", ["list", "check"])
def test_a_snapshot_that_cannot_be_read_is_no_failed_run_of_the_node(tmp_path, command):
    """A bundle's dump missing or malformed is the snapshot run's bad input: with the
    node-wide variable it wrote `last_run_success 0` into the node's file
    (PortmapctlCheckFailing averages check's). Its error line alone, the file kept."""
    path = tmp_path / f"portmapctl-{command}.prom"
    path.write_bytes(THE_NODES)
    env = {"PORTMAPCTL_METRICS_FILE": str(tmp_path / "portmapctl-{command}.prom")}
    done = run_cli([command, "--snapshot", str(tmp_path / "missing.save")], env=env)
    pmctl.assert_error(done, 2, "missing.save")
    assert path.read_bytes() == THE_NODES


def test_an_empty_environment_variable_asks_for_no_file(tmp_path):
    done = pmctl.run(["list", *SNAPSHOT_ARGS], env={"PORTMAPCTL_METRICS_FILE": ""})
    assert done.returncode == 0 and done.stderr == ""


@pytest.mark.parametrize("command,code", [("list", 0), ("check", 1)])
def test_an_unwritable_metrics_file_is_one_warning_and_changes_nothing(tmp_path, command, code):
    without = run_cli([command, *SNAPSHOT_ARGS])
    path = tmp_path / "no-such-dir" / "portmapctl.prom"
    done = run_cli([command, *SNAPSHOT_ARGS, "--metrics-file", str(path)])
    assert done.returncode == without.returncode == code
    assert done.stdout == without.stdout
    assert done.stderr.splitlines() == [
        f"portmapctl: warning: could not write the metrics file {path}: No such file or directory"
    ]
    assert list(tmp_path.iterdir()) == []


def test_a_failed_run_writes_success_0_and_keeps_its_error(tmp_path):
    path = tmp_path / "portmapctl-list.prom"
    done = run_cli(
        ["list", "--snapshot", str(tmp_path / "missing.save"), "--metrics-file", str(path)]
    )
    pmctl.assert_error(done, 2, "missing.save")  # one error line, no warning
    samples = samples_of(path)
    assert samples[key("last_run_success", command="list")] == 0
    assert not [name for name, _ in samples if name == "portmapctl_mappings"]


@pytest.mark.parametrize(
    "args",
    [
        ["list", *SNAPSHOT_ARGS],  # the fast path (cli/list_fast.py)
        ["list", *SNAPSHOT_ARGS, "--proto", "tcp"],  # typer's
        ["check", *SNAPSHOT_ARGS],
        ["gc", "--yes", "--cni-cache-dir", CACHE],
    ],
)
def test_a_run_refused_for_its_environment_is_a_failed_run_in_its_file(tmp_path, args):
    """A PORTMAPCTL_ variable set to a value it does not take (`..._TIMEOUT=2m` in a
    unit's Environment=) refuses every run, exit 2, before the command starts: nothing
    was written, so the file kept the last good run's `last_run_success 1` and counts,
    PortmapctlGcFailing (whose runbook lists exit 2) never fired, and only the file's
    age told, as if the timer did not run. It is a failed run like any bad input."""
    path = tmp_path / "portmapctl-{command}.prom"
    env = {"PORTMAPCTL_METRICS_FILE": str(path)}
    if "--snapshot" in args:
        # A snapshot's run writes the file only when given by name (from the variable,
        # the node's file, it writes none: test_a_snapshot_run_leaves_the_nodes_...).
        args = [*args, "--metrics-file", str(path)]
    written = tmp_path / f"portmapctl-{args[0]}.prom"
    bad = {**env, "PORTMAPCTL_IPTABLES_TIMEOUT": "2m"}
    done = run_cli(args, env=bad)
    pmctl.assert_error(done, 2, "PORTMAPCTL_IPTABLES_TIMEOUT")
    samples = samples_of(written)
    c = {"command": args[0]}
    assert samples[key("last_run_success", **c)] == 0
    assert samples[key("last_run_warnings", **c)] == 0
    assert not [n for n, _ in samples if n.startswith(("portmapctl_mappings", "portmapctl_gc_"))]


def test_without_a_metrics_file_prometheus_client_is_never_imported():
    code = (
        "import sys\n"
        "from portmapctl.cli import main\n"
        "try:\n"
        f"    main(['list', *{SNAPSHOT_ARGS!r}])\n"
        "except SystemExit:\n"
        "    pass\n"
        "loaded = [m for m in sys.modules if m.startswith(('prometheus_client', 'portmapctl.ops.metrics'))]\n"
        "sys.stderr.write(repr(loaded))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stderr == "[]", done.stderr


# One syscall strace shows: `PID name(args) = result` (-f: every line starts with the PID).
_SYSCALL = re.compile(r"^\d+\s+(\w+)\((.*)\)\s+=\s+(-?\d+)")


def test_the_file_is_on_disk_before_it_replaces_the_last_one(tmp_path):
    """prometheus_client's write_to_textfile (0.26) writes the temporary file and
    renames it without fsync: after a node crash the rename could be on disk and the
    data not, an empty .prom file, which node_exporter reads as no metrics of the
    command (PortmapctlMetricsMissing or every alert's series gone) until its next run.
    The real command, under strace: the temporary file is fsynced before the rename,
    and the directory after it (the rename is the directory's change)."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("no strace")
    path = tmp_path / "portmapctl-list.prom"
    log = tmp_path / "strace.log"
    argv = [strace, "-f", "-qq", "-o", str(log), "-e",
            "trace=open,openat,fsync,fdatasync,rename,renameat,renameat2",
            sys.executable, "-m", "portmapctl", "list", *SNAPSHOT_ARGS,
            "--metrics-file", str(path)]  # fmt: skip
    done = subprocess.run(
        argv, capture_output=True, text=True, env=dict(os.environ, NO_COLOR="1"), timeout=120
    )
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert samples_of(path)[key("last_run_success", command="list")] == 1
    calls = [m.groups() for m in map(_SYSCALL.match, log.read_text().splitlines()) if m]
    names = [name for name, _, _ in calls]
    (renamed,) = [
        i for i, (name, args, _) in enumerate(calls)
        if name.startswith("rename") and f'"{path}"' in args
    ]  # fmt: skip
    temporary = re.search(r'"([^"]+)"', calls[renamed][1]).group(1)
    assert temporary.startswith(f"{path}.") and temporary != str(path)
    (created,) = [i for i, (name, args, _) in enumerate(calls) if f'"{temporary}"' in args
                  and name.startswith("open")]  # fmt: skip
    fd = calls[created][2]
    synced = [i for i, (name, args, _) in enumerate(calls) if name in ("fsync", "fdatasync")
              and args == fd]  # fmt: skip
    assert any(created < i < renamed for i in synced), names[created : renamed + 1]
    (folder,) = [
        i for i, (name, args, _) in enumerate(calls)
        if i > renamed and name.startswith("open") and f'"{tmp_path}"' in args
        and "O_DIRECTORY" in args
    ]  # fmt: skip
    assert calls[folder + 1][:2] == ("fsync", calls[folder][2]), names[renamed:]
