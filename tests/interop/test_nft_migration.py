"""A node in the middle of a migration: containers made by Debian's 1.1.1 and the
upstream plugins, in iptables and in nftables, in one namespace, their cache entries
each saying the config they were added with (most without a `backend` key).

Each test plays such a node in a fresh namespace and runs `portmapctl` as a process
with `--netns`; the real plugins judge the result (CHECK).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterator

import pmctl
import pytest
import realplugin as rp
import upstream

pytestmark = pytest.mark.netns

V191 = "v1.9.1"
_pm = rp.port_mapping


@pytest.fixture(autouse=True)
def _upstream_binaries() -> None:
    rp.require(upstream.available())


@pytest.fixture
def node() -> Iterator[str]:
    name = rp.create_netns("pmt-migr")
    try:
        yield name
    finally:
        rp.delete_netns(name)


def _pmctl(ns: str, cache: Path, *args: str):
    return pmctl.run([*args, "--netns", ns, "--cni-cache-dir", str(cache)])


def _cached(cache: Path, cid: str, conf: Dict[str, Any]) -> Dict[str, Any]:
    ports = conf["runtimeConfig"]["portMappings"]
    ips = [ip["address"] for ip in conf["prevResult"]["ips"]]
    rp.write_cni_cache(cache, "podman", cid, "eth0", conf, ports, ips)
    return conf


def _keyless_iptables_node(ns: str, cache: Path) -> Dict[str, Dict[str, Any]]:
    """Before the switch: deb1 by Debian's 1.1.1 and up1 by v1.9.1 without a `backend`
    key (both in iptables); after it: nft1 by v1.9.1 with `"backend": "nftables"`."""
    deb = rp.plugin_conf("podman", ["10.88.0.11/16"], [_pm(8001, 80), _pm(5001, 53, "udp")])
    rp.run_plugin("ADD", ns, "deb1", deb, check=True)
    up = upstream.nft_conf("podman", ["10.88.0.12/16"], [_pm(8002, 80)], backend=None)
    upstream.run(V191, "ADD", ns, "up1", up, check=True)
    nft = upstream.nft_conf("podman", ["10.88.0.21/16"], [_pm(8011, 80)])
    upstream.run(V191, "ADD", ns, "nft1", nft, check=True)
    return {cid: _cached(cache, cid, conf) for cid, conf in (("deb1", deb), ("up1", up),
                                                             ("nft1", nft))}  # fmt: skip


def _plugin_tables(ns: str) -> str:
    """The plugin's IPv4 table (these containers have no IPv6 address)."""
    return upstream.nft(ns, "list", "table", "ip", "cni_hostport").stdout


def test_backend_nftables_never_expects_or_writes_nft_rules_for_keyless_iptables_containers(
    node: str, tmp_path: Path
) -> None:
    """--backend nftables narrows what is looked at. A cached config without a `backend`
    key is the plugin's iptables wherever iptables works (its rules are there), so it is
    expected in nftables only when its rules are there. 0.1 took --backend for the key:
    check said deb1 and up1 had their nftables rules missing, and --repair wrote them
    (their ports then mapped twice; the plugin's DEL, in iptables, leaves them behind)."""
    confs = _keyless_iptables_node(node, tmp_path)
    before = _plugin_tables(node)
    done = _pmctl(node, tmp_path, "check", "--backend", "nftables", "-o", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["problems"] == []
    repaired = _pmctl(node, tmp_path, "check", "--backend", "nftables", "--repair", "-o", "json")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert json.loads(repaired.stdout)["repaired"] is False
    assert _plugin_tables(node) == before
    # Its own copy still counts: nft1's lost rule is missing, and put back alone.
    upstream.nft(node, "flush", "chain", "ip", "cni_hostport", "hostports")
    broken = _pmctl(node, tmp_path, "check", "--backend", "nftables", "-o", "json")
    assert broken.returncode == 1
    problems = json.loads(broken.stdout)["problems"]
    assert {(p["kind"], p["container_id"]) for p in problems} == {("nft-missing-rules", "nft1")}
    fixed = _pmctl(node, tmp_path, "check", "--backend", "nftables", "--repair")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert _plugin_tables(node) == before
    healthy = _pmctl(node, tmp_path, "check", "-o", "json")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    upstream.run(V191, "CHECK", node, "up1", confs["up1"], check=True)
    upstream.run(V191, "CHECK", node, "nft1", confs["nft1"], check=True)
    for result in rp.run_check(node, "deb1", confs["deb1"]):
        assert result.returncode == 0, result.stdout + result.stderr
