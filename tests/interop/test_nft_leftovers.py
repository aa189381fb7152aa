"""Upstream v1.9.1 made the node; then a container's DNAT rules were deleted by handle
with `nft`, its masquerade rules left. check reports them, gc or repair fixes it, and
the upstream plugin's CHECK judges the result. Also: --metrics-file counts the
plugin-made nftables rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, List

import pmctl
import pytest
import realplugin as rp
import upstream
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.netns

V191 = "v1.9.1"
_pm = rp.port_mapping
WEB = ("web1", ["10.88.0.5/16", "fd00:88::5/64"], [_pm(8080, 80), _pm(5353, 53, "udp")])
API = ("api1", ["10.88.0.6/16"], [_pm(9090, 90, host_ip="127.0.0.1"), _pm(9091, 91)])


@pytest.fixture(autouse=True)
def _upstream_binaries() -> None:
    rp.require(upstream.available())


@pytest.fixture
def node() -> Iterator[str]:
    name = rp.create_netns("pmt-nftleft")
    try:
        yield name
    finally:
        rp.delete_netns(name)


def _plugin_add(ns: str, cache: Path, ctr, cached: bool = True) -> dict:
    cid, ips, ports = ctr
    conf = upstream.nft_conf("podman", ips, ports)
    upstream.run(V191, "ADD", ns, cid, conf, check=True)
    if cached:
        rp.write_cni_cache(cache, "podman", cid, "eth0", conf, ports, ips)
    return conf


def _pmctl(ns: str, cache: Path, *args: str):
    return pmctl.run([*args, "--netns", ns, "--cni-cache-dir", str(cache)])


def _rules_of(ns: str, container_id: str) -> List[dict]:
    return [
        obj["rule"]
        for obj in json.loads(upstream.ruleset_json(ns))["nftables"]
        if "rule" in obj
        and obj["rule"]["table"] == "cni_hostport"
        and obj["rule"].get("comment") == container_id
    ]


def _delete_dnat_rules(ns: str, container_id: str) -> None:
    for rule in _rules_of(ns, container_id):
        if rule["chain"] in ("hostports", "hostip_hostports"):
            upstream.nft(ns, "delete", "rule", rule["family"], "cni_hostport", rule["chain"],
                         "handle", str(rule["handle"]))  # fmt: skip
    left = {(r["family"], r["chain"]) for r in _rules_of(ns, container_id)}
    assert left == {("ip", "masquerading"), ("ip6", "masquerading")}


def _problems(ns: str, cache: Path) -> set:
    done = _pmctl(ns, cache, "check", "-o", "json")
    assert done.returncode == 1, done.stdout + done.stderr
    return {(p["kind"], p["family"], p["container_id"]) for p in json.loads(done.stdout)["problems"]}


def test_leftovers_of_a_gone_container_are_stale_and_gc_removes_them(
    node: str, tmp_path: Path
) -> None:
    _plugin_add(node, tmp_path, WEB, cached=False)
    api = _plugin_add(node, tmp_path, API)
    _delete_dnat_rules(node, "web1")
    assert _problems(node, tmp_path) == {("stale", 4, "web1"), ("stale", 6, "web1")}
    gc = _pmctl(node, tmp_path, "gc", "--yes", "--min-age", "0")
    assert gc.returncode == 0, gc.stdout + gc.stderr
    assert _rules_of(node, "web1") == []
    healthy = _pmctl(node, tmp_path, "check")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    upstream.run(V191, "CHECK", node, "api1", api, check=True)


def test_leftovers_without_a_cache_are_incomplete(node: str, tmp_path: Path) -> None:
    _plugin_add(node, tmp_path, WEB, cached=False)
    _delete_dnat_rules(node, "web1")
    # tmp_path has no results/ folder: no cache at all.
    assert _problems(node, tmp_path) == {("incomplete", 4, "web1"), ("incomplete", 6, "web1")}


def test_leftovers_of_a_cached_container_are_repaired(node: str, tmp_path: Path) -> None:
    web = _plugin_add(node, tmp_path, WEB)
    _delete_dnat_rules(node, "web1")
    assert upstream.run(V191, "CHECK", node, "web1", web).returncode != 0
    assert _problems(node, tmp_path) == {
        ("nft-missing-rules", 4, "web1"),
        ("nft-missing-rules", 6, "web1"),
    }
    repaired = _pmctl(node, tmp_path, "check", "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    upstream.run(V191, "CHECK", node, "web1", web, check=True)


def test_metrics_count_the_plugins_nft_rows(node: str, tmp_path: Path) -> None:
    _plugin_add(node, tmp_path, WEB)
    _plugin_add(node, tmp_path, API, cached=False)
    metrics = tmp_path / "list.prom"
    done = _pmctl(node, tmp_path, "list", "--metrics-file", str(metrics))
    assert done.returncode == 0, done.stderr
    counts = {}
    for family in text_string_to_metric_families(metrics.read_text()):
        for s in family.samples:
            if s.name == "portmapctl_mappings" and s.labels["backend"] == "nftables":
                counts[(s.labels["family"], s.labels["status"])] = int(s.value)
    # web1: 2 ports in each family, cached; api1: 2 IPv4 ports, not cached.
    assert {k: v for k, v in counts.items() if v} == {("4", "ok"): 2, ("4", "stale"): 2,
                                                      ("6", "ok"): 2}  # fmt: skip
    assert counts[("6", "stale")] == 0  # zero-filled: the family was read
