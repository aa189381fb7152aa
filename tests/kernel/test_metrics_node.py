"""list's and check's metrics for real, with the node-wide PORTMAPCTL_METRICS_FILE that
docs/monitoring.md sets up: a plugin-made node in a fresh namespace, the files read
back with prometheus_client's parser (the offline cases: tests/unit/test_metrics.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple

import pmctl
import pytest
import upstream
from gc_helpers import Node_
from test_gc import _ports, nft_node  # noqa: F401 - the fixture
from test_metrics_gc import node_textfiles, samples_of

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# A support bundle's dumps (another node's: the example node's stale and shadowed
# mappings, its missing entry rule), read on this one.
BUNDLES = {
    "iptables": [
        "--snapshot", str(EXAMPLES / "node.v4.save"),
        "--snapshot6", str(EXAMPLES / "node.v6.save"),
        "--cni-cache-dir", str(EXAMPLES / "cni-cache"),
    ],
    "nftables": [
        "--nft-snapshot", str(EXAMPLES / "nft" / "ruleset.json"),
        "--cni-cache-dir", str(EXAMPLES / "nft" / "cni-cache"),
    ],
}  # fmt: skip


def _counted(samples: Dict[Tuple[str, frozenset], float], name: str) -> Dict[str, float]:
    """{status or kind: count} of the non-zero samples of portmapctl_NAME."""
    found: Dict[str, float] = {}
    for (sample, labels), value in samples.items():
        if sample == f"portmapctl_{name}" and value:
            label = dict(labels)
            word = label.get("status") or label["kind"]
            found[word] = found.get(word, 0) + value
    return found


@pytest.mark.parametrize("bundle", list(BUNDLES), ids=list(BUNDLES))
def test_reading_a_bundle_leaves_the_nodes_metrics_as_its_own_runs_wrote_them(
    nft_node: Node_, tmp_path, bundle
):
    """The node's list and check write a file each ({command} in the variable); a
    support engineer's list or check of a bundle's dump on the node, with the same
    variable, wrote the dump's counts there (stale 1, shadowed 1, missing-entry 1 on a
    healthy node: PortmapctlStaleChains, PortmapctlShadowedMapping and
    PortmapctlProblems' series; a healthy dump's zeros would reset them). Now the files
    stay as the node's runs wrote them, with one warning; an explicit --metrics-file
    writes the dump's metrics where it says."""
    node = nft_node
    node.add("podman", "live1", ["10.88.0.11/16", "fd00::11/64"], _ports("8080/tcp"))
    textfiles, env = node_textfiles(tmp_path)
    on_node = ["--netns", node.ns, "--iptables", "nft", "--cni-cache-dir", str(node.cache)]
    files = {command: textfiles / f"portmapctl-{command}.prom" for command in ("list", "check")}

    # The node's own runs: list's fast path (plain, -o json, a filter) and check.
    for args in (["list", "-q"], ["list", "-o", "json"], ["list", "--port", "8080"], ["check"]):
        done = pmctl.run([*args, *on_node], env=env)
        assert (done.returncode, done.stderr) == (0, ""), done.stderr
        samples = samples_of(files[args[0]])
        assert _counted(samples, "mappings") == {"ok": 2}, samples
        assert _counted(samples, "problems") == {}
    written = {command: path.read_bytes() for command, path in files.items()}

    for command in ("list", "check"):
        without = pmctl.run([command, *BUNDLES[bundle]], env={**env, "PORTMAPCTL_METRICS_FILE": ""})
        assert without.returncode in (0, 1), without.stderr
        done = pmctl.run([command, *BUNDLES[bundle]], env=env)
        assert (done.returncode, done.stdout) == (without.returncode, without.stdout)
        assert {c: path.read_bytes() for c, path in files.items()} == written
        pmctl.assert_metrics_left_alone(
            done,
            without,
            files[command],
            f"this node's {command} (PORTMAPCTL_METRICS_FILE), and a snapshot may be"
            " another node's (an explicit --metrics-file writes the snapshot's)",
        )

        # Asked for by name, the bundle's metrics are written there (not the node's).
        given = tmp_path / f"bundle-{command}.prom"
        done = pmctl.run([command, *BUNDLES[bundle], "--metrics-file", str(given)], env=env)
        assert (done.returncode, done.stderr) == (without.returncode, without.stderr)
        assert _counted(samples_of(given), "mappings")["stale"] == 1
        assert {c: path.read_bytes() for c, path in files.items()} == written
    assert sorted(p.name for p in textfiles.iterdir()) == sorted(p.name for p in files.values())


@pytest.mark.parametrize("command, gauge", [("check", "problems"), ("list", "mappings")])
def test_a_narrowed_run_leaves_the_whole_nodes_metrics_as_they_were(
    nft_node: Node_, tmp_path, command, gauge
):
    """`check --family 4` or `check --backend iptables` looks at part of the node, but
    wrote the problems gauge as if it were the whole node: the IPv6 stale chain and the
    nftables backend's stale mapping it did not look at became zeros in place of the
    last node-wide check's counts, so an operator's narrowed check by hand (with the
    node-wide PORTMAPCTL_METRICS_FILE, or the unit's --metrics-file) cleared
    PortmapctlProblems' and the stale alerts' series until the timer's next run, and
    restarted their `for:`. Now it leaves the file as the whole node's check wrote it,
    with one warning. So does `list`, whose file a narrowed run replaced with the part
    it read: the series of the family or backend not read (their stale mappings) were
    gone from it."""
    if not upstream.available()[0]:
        pytest.skip(upstream.available()[1])
    node = nft_node
    node.add("podman", "live1", ["10.88.0.11/16", "fd00::11/64"], _ports("8080/tcp"))
    # Problems only where the narrowed runs do not look: a gone container's IPv6
    # chain (iptables), and a gone container of the plugin's nftables backend.
    node.add("podman", "gone6", ["fd00::12/64"], _ports("8081/tcp"), cache=False)
    conf = upstream.nft_conf("nftnet", ["fd00::13/64"], _ports("8082/tcp"))
    upstream.run("v1.9.1", "ADD", node.ns, "gone7", conf, check=True)
    textfiles, env = node_textfiles(tmp_path)
    path = textfiles / f"portmapctl-{command}.prom"
    on_node = ["--netns", node.ns, "--iptables", "nft", "--cni-cache-dir", str(node.cache)]

    whole = pmctl.run([command, *on_node], env=env)
    assert whole.returncode == (1 if command == "check" else 0), whole.stdout + whole.stderr
    assert _counted(samples_of(path), gauge)["stale"] == 2, path.read_text()
    written = path.read_bytes()

    for narrowed in (["--family", "4"], ["--backend", "iptables"], ["--backend", "nftables"]):
        without = pmctl.run(
            [command, *narrowed, *on_node], env={**env, "PORTMAPCTL_METRICS_FILE": ""}
        )
        assert without.returncode in (0, 1), without.stderr
        for given in ([], ["--metrics-file", str(path)]):  # the variable's, the unit's
            done = pmctl.run([command, *narrowed, *on_node, *given], env=env)
            assert (done.returncode, done.stdout) == (without.returncode, without.stdout)
            assert path.read_bytes() == written, (narrowed, path.read_text())
            pmctl.assert_metrics_left_alone(
                done,
                without,
                path,
                f"the whole node's {command}, not part of it ({command} without --family"
                " and --backend writes it)",
            )
    assert [p.name for p in textfiles.iterdir()] == [path.name]
