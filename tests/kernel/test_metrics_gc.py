"""gc's metrics for real: a plugin-made node in a fresh namespace, gc run as the deploy
files run it, its metrics file read back with prometheus_client's parser."""

from __future__ import annotations

from typing import Dict, Tuple

import pmctl
import pytest
import realplugin as rp
from prometheus_client.parser import text_string_to_metric_families
from test_gc import Node_, _ports, _udp_flow


def samples_of(path) -> Dict[Tuple[str, frozenset], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(path.read_text())
        for sample in family.samples
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


def test_gc_counts_the_warnings_it_said(host_ns, tmp_path):
    """A cache entry gc cannot read is one warning; its container, named by the file,
    stays live (SPEC §3) and the run works. Run by a timer, nobody reads that stderr:
    the metrics file counts it (0 on a clean run)."""
    if not rp.mode_available("nft")[0]:
        pytest.skip(rp.mode_available("nft")[1])
    cache = tmp_path / "cni"
    (cache / "results").mkdir(parents=True)
    node = Node_(host_ns, "nft", cache)
    node.add("gcnet", "live1", ["10.88.0.11/16"], _ports("8080/tcp"))
    node.add("gcnet", "kept1", ["10.88.0.12/16"], _ports("9090/tcp"), cache=False)
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
