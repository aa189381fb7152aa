"""gc's metrics for real: a plugin-made node in a fresh namespace, gc run as the deploy
files run it, its metrics file read back with prometheus_client's parser."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Tuple

import pmctl
import pytest
import realplugin as rp
from deploy_helpers import promtool_test_rules, series_name
from prometheus_client.parser import text_string_to_metric_families
from test_gc import Node_, _on_terminal, _ports, _udp_flow


def samples_of(path) -> Dict[Tuple[str, frozenset], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(path.read_text())
        for sample in family.samples
    }


def node_textfiles(tmp_path) -> Tuple[Path, Dict[str, str]]:
    """A textfile directory and the environment that sets the node-wide
    PORTMAPCTL_METRICS_FILE into it as docs/monitoring.md does (a file per command)."""
    textfiles = tmp_path / "textfiles"
    textfiles.mkdir()
    return textfiles, {
        "PORTMAPCTL_RUN_DIR": str(tmp_path / "run"),
        "PORTMAPCTL_METRICS_FILE": str(textfiles / "portmapctl-{command}.prom"),
    }


def key(name: str, **labels: str) -> Tuple[str, frozenset]:
    return (f"portmapctl_{name}", frozenset(labels.items()))


def test_gc_metrics_of_removed_pending_and_conntrack(host_ns, tmp_path):
    if not rp.mode_available("nft")[0]:
        pytest.skip(rp.mode_available("nft")[1])
    cache = tmp_path / "cni"
    (cache / "results").mkdir(parents=True)
    node = Node_(host_ns, "nft", cache)
    node.add("gcnet", "live1", ["10.88.0.11/16", "fd00::11/64"], _ports("8080/tcp"))
    node.add("gcnet", "gone1", ["10.88.0.12/16"], _ports("9090/tcp", "6000/udp"), cache=False)
    for sport in (40001, 40002):
        _udp_flow(node, sport, 6000, "10.88.0.12")  # to gone1's UDP port: deleted with its chain
    env = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run")}
    path = tmp_path / "portmapctl-gc.prom"
    argv = ["gc", "--netns", host_ns, "--iptables", "nft", "--cni-cache-dir", str(cache)]
    argv += ["--yes", "-q", "--metrics-file", str(path)]

    done = pmctl.run([*argv, "--min-age", "0"], env=env)
    assert done.returncode == 0, done.stderr
    samples = samples_of(path)
    c = {"command": "gc"}
    assert samples[key("last_run_success", **c)] == 1
    assert samples[key("gc_chains_removed", family="4", **c)] == 1
    assert samples[key("gc_chains_removed", family="6", **c)] == 0
    assert samples[key("gc_chains_pending", family="4", **c)] == 0
    assert samples[key("conntrack_entries_deleted", **c)] == 2
    assert samples[key("cni_cache_entries", dir=str(cache), **c)] == 1

    # Another container goes: seen for the first time, it waits for --min-age.
    node.add("gcnet", "gone2", ["10.88.0.13/16", "fd00::13/64"], _ports("9091/tcp"), cache=False)
    done = pmctl.run(argv, env=env)
    assert done.returncode == 0, done.stderr
    samples = samples_of(path)
    for family in ("4", "6"):
        assert samples[key("gc_chains_removed", family=family, **c)] == 0
        assert samples[key("gc_chains_pending", family=family, **c)] == 1
    assert samples[key("conntrack_entries_deleted", **c)] == 0

    # gc fails (its liveness source is gone: exit 2): success 0, no counts.
    done = pmctl.run([*argv[:6], str(tmp_path / "nothing"), *argv[7:]], env=env)
    assert done.returncode == 2, done.stderr
    samples = samples_of(path)
    assert samples[key("last_run_success", **c)] == 0
    assert not [name for name, _ in samples if name.startswith("portmapctl_gc_")]
    assert samples[key("cni_cache_present", dir=str(tmp_path / "nothing"), **c)] == 0


def _live_and_uncached(host_ns: str, tmp_path, uncached: str):
    """A node the real plugin made (nf_tables): live1 in the CNI cache (returned), and
    `uncached` (9090/tcp), whose entry is not there."""
    if not rp.mode_available("nft")[0]:
        pytest.skip(rp.mode_available("nft")[1])
    cache = tmp_path / "cni"
    (cache / "results").mkdir(parents=True)
    node = Node_(host_ns, "nft", cache)
    node.add("gcnet", "live1", ["10.88.0.11/16"], _ports("8080/tcp"))
    node.add("gcnet", uncached, ["10.88.0.12/16"], _ports("9090/tcp"), cache=False)
    return cache


def test_gc_counts_the_warnings_it_said(host_ns, tmp_path):
    """A cache entry gc cannot read is one warning; its container, named by the file,
    stays live (SPEC §3) and the run works. Run by a timer, nobody reads that stderr:
    the metrics file counts it (0 on a clean run)."""
    cache = _live_and_uncached(host_ns, tmp_path, "kept1")
    env = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run")}
    path = tmp_path / "portmapctl-gc.prom"
    argv = ["gc", "--netns", host_ns, "--iptables", "nft", "--cni-cache-dir", str(cache)]
    argv += ["--yes", "-q", "--min-age", "0", "--metrics-file", str(path)]
    (cache / "results" / "gcnet-kept1-eth0").write_text("{not json")

    done = pmctl.run(argv, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("portmapctl: warning:") == 1, done.stderr
    samples = samples_of(path)
    c = {"command": "gc"}
    assert samples[key("last_run_success", **c)] == 1
    assert samples[key("last_run_warnings", **c)] == 1
    assert samples[key("gc_chains_removed", family="4", **c)] == 0

    (cache / "results" / "gcnet-kept1-eth0").unlink()
    done = pmctl.run(argv, env=env)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    samples = samples_of(path)
    assert samples[key("last_run_warnings", **c)] == 0
    assert samples[key("gc_chains_removed", family="4", **c)] == 1


def _alert_series(files_by_minute, node: Dict[str, str]) -> list:
    """promtool input series: at each minute, the samples of the file the textfile
    directory held then (a series a file lacks is missing there: `_`)."""
    values: Dict[str, list] = {}
    for minute, text in enumerate(files_by_minute):
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                name = series_name(sample.name, {**sample.labels, **node})
                values.setdefault(name, ["_"] * len(files_by_minute))[minute] = f"{sample.value:g}"
    return [{"series": name, "values": " ".join(v)} for name, v in values.items()]


def _timers_gc_failed(host_ns: str, tmp_path) -> Tuple[list, dict, Path, str]:
    """A node with a stale chain (gone1) whose timer's gc failed: gc's argv, the
    environment with the node-wide PORTMAPCTL_METRICS_FILE, the gc file and what the
    failed run left in it (`last_run_success 0`)."""
    cache = _live_and_uncached(host_ns, tmp_path, "gone1")
    textfiles, env = node_textfiles(tmp_path)
    path = textfiles / "portmapctl-gc.prom"
    argv = ["gc", "--netns", host_ns, "--iptables", "nft", "--cni-cache-dir", str(cache)]

    # The timer's gc fails: its unit's Environment= has a value gc does not take.
    done = pmctl.run([*argv, "--yes", "-q"], env={**env, "PORTMAPCTL_IPTABLES_TIMEOUT": "2m"})
    assert done.returncode == 2, done.stderr
    assert samples_of(path)[key("last_run_success", command="gc")] == 0
    return argv, env, path, path.read_text()


def test_a_dry_run_leaves_the_timers_gc_metrics_as_they_are(host_ns, tmp_path):
    """The gc file says how the timer's gc went: PortmapctlGcFailing fires when it has
    failed for an hour. A dry run removes nothing; run by hand (the runbook's
    `gc --dry-run`, with the node-wide PORTMAPCTL_METRICS_FILE monitoring.md sets
    up) it wrote `last_run_success 1`, and the alert on a gc that fails every run
    started its hour again. It leaves the file as the timer's run wrote it, and says so
    in one warning."""
    argv, env, path, failed = _timers_gc_failed(host_ns, tmp_path)
    textfiles = path.parent

    without = pmctl.run(
        [*argv, "--dry-run", "-q", "--min-age", "0"],
        env={"PORTMAPCTL_RUN_DIR": env["PORTMAPCTL_RUN_DIR"]},
    )
    done = pmctl.run([*argv, "--dry-run", "-q", "--min-age", "0"], env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == without.stdout and "would remove 1 chain" in done.stdout
    assert path.read_text() == failed
    holds = "what gc did, and a dry run does nothing (gc without --dry-run writes it)"
    pmctl.assert_metrics_left_alone(done, without, path, holds)
    assert sorted(p.name for p in textfiles.iterdir()) == ["portmapctl-gc.prom"]

    # The alert, on what the directory held each minute: the timer's failed gc every 5
    # minutes for 70, the dry run by hand at minute 40.
    def at(minute: int) -> str:
        stamp = f'portmapctl_last_run_timestamp_seconds{{command="gc"}} {minute // 5 * 300}'
        held = path.read_text() if 40 <= minute < 45 else failed
        return re.sub(r"portmapctl_last_run_timestamp_seconds\{command=\"gc\"\} \S+", stamp, held)

    node_labels = {"instance": "node1", "job": "node"}
    series = _alert_series([at(m) for m in range(71)], node_labels)
    fired = {"severity": "warning", "command": "gc", **node_labels}
    cases = [
        {"eval_time": "59m", "alertname": "PortmapctlGcFailing", "exp_alerts": []},
        {"eval_time": "61m", "alertname": "PortmapctlGcFailing",
         "exp_alerts": [{"exp_labels": fired}]},
    ]  # fmt: skip
    promtool_test_rules(tmp_path, series, cases)


def test_a_gc_told_no_leaves_the_timers_gc_metrics_as_they_are(host_ns, tmp_path):
    """gc on a terminal asks first; told "no" (or given no answer) it removes nothing,
    as a dry run, and it wrote `last_run_success 1` over the timer's failed run all the
    same: an operator's look at what gc would remove restarted PortmapctlGcFailing's
    hour. It leaves the file alone and says so in one warning; told "yes" it writes
    it, as any run that removes."""
    argv, env, path, failed = _timers_gc_failed(host_ns, tmp_path)

    holds = "what gc did, and a run told no does nothing (a run that removes writes it)"
    for answer in (b"n", b"\x04"):
        code, shown, stdout = _on_terminal([*argv, "--min-age", "0"], answer, env=env)
        assert code == 0 and "nothing removed (1 chain of 1 container" in stdout, shown
        assert path.read_text() == failed
        said = [line for line in shown.splitlines() if "no metrics file written" in line]
        assert said == [f"portmapctl: warning: no metrics file written: {path} holds {holds}"]

    code, shown, stdout = _on_terminal([*argv, "--min-age", "0"], b"y", env=env)
    assert code == 0 and "removed 1 chain" in stdout, shown
    assert "no metrics file written" not in shown
    samples = samples_of(path)
    assert samples[key("last_run_success", command="gc")] == 1
    assert samples[key("gc_chains_removed", family="4", command="gc")] == 1
