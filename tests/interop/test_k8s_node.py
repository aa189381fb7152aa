"""A Kubernetes node as containerd leaves it: the real plugin run by libcni through
containerd's go-cni, whose cache entries carry what go-cni marshals."""

from __future__ import annotations

from pathlib import Path

import pmctl
import realplugin as rp

NETWORK = "k8s-pod-network"
POD = "a1" * 32  # a sandbox ID as containerd makes them: 64 hex digits
IPS = ["10.244.1.2/24", "fd00:10:244:1::2/64"]
# go-cni's PortMapping has no JSON tags: libcni injects (and caches) the Go field names,
# and the plugin, reading with encoding/json, matches them case-insensitively.
CONTAINERD_PORTS = [
    {"HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""},
    {"HostPort": 5353, "ContainerPort": 53, "Protocol": "udp", "HostIP": ""},
]


def _node_args(host_ns: str, cache: Path) -> list[str]:
    return ["--netns", host_ns, "--cni-cache-dir", str(cache)]


def test_containerd_port_mappings_are_read_and_checked(host_ns: str, tmp_path: Path) -> None:
    conf = rp.plugin_conf(NETWORK, IPS, CONTAINERD_PORTS)
    added = rp.run_plugin("ADD", host_ns, POD, conf)
    assert added.returncode == 0, added.stdout + added.stderr
    assert "--dport 8080" in rp.save(host_ns, 4) and "--dport 5353" in rp.save(host_ns, 6)
    rp.write_cni_cache(tmp_path, NETWORK, POD, "eth0", conf, CONTAINERD_PORTS, IPS)
    args = _node_args(host_ns, tmp_path)

    healthy = pmctl.run(["check", *args])
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert healthy.stderr == ""  # 0.1: "skipped a CNI cache entry that cannot be read"
    assert "all 2 chains" in healthy.stdout

    # The chains go (a script flushed them); the pod is still cached: check must see it.
    deleted = rp.run_plugin("DEL", host_ns, POD, conf)
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    missing = pmctl.run(["check", *args])
    assert missing.returncode == 1, missing.stdout + missing.stderr
    assert POD[:12] in missing.stdout
    repaired = pmctl.run(["check", "--repair", *args])
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    # What the repair wrote is what the plugin's CHECK expects, in both families.
    checked = rp.run_check(host_ns, POD, conf)
    assert [proc.returncode for proc in checked] == [0, 0], [proc.stderr for proc in checked]
