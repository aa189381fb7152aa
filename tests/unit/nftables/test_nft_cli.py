"""The commands on an nft-backed node, offline (--nft-snapshot): no root needed."""

from __future__ import annotations

import json
from pathlib import Path

from pmctl import assert_error, run

ROOT = Path(__file__).parents[3]
SNAP = str(ROOT / "examples" / "nft" / "ruleset.json")
CACHE = str(ROOT / "examples" / "nft" / "cni-cache")


def test_list_json_rows() -> None:
    done = run(["list", "--nft-snapshot", SNAP, "--cni-cache-dir", CACHE, "-o", "json"])
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["mappings"]
    assert {r["backend"] for r in rows} == {"nftables"}
    assert {r["chain_type"] for r in rows} == {"nft-rule"}
    stale = [r for r in rows if "stale" in r["status"]]
    assert [(r["container_id"], r["network"]) for r in stale] == [("b7e0f2c94d1a4e85oldjob", None)]
    shadowed = [r for r in rows if "shadowed" in r["status"]]
    assert [r["shadowed_by"] for r in shadowed] == ["3f2a9c1e5b7d4a60web"]


def test_list_filters_apply_to_nft_rows() -> None:
    base = ["list", "--nft-snapshot", SNAP, "--cni-cache-dir", CACHE, "-o", "json"]
    done = run([*base, "--container", "a91c", "--port", "9443"])
    rows = json.loads(done.stdout)["mappings"]
    assert [(r["host_ip"], r["host_port"], r["snat"]) for r in rows] == [("127.0.0.1", 9443, False)]


def test_check_offline_reports_nft_problems() -> None:
    done = run(["check", "--nft-snapshot", SNAP, "--cni-cache-dir", CACHE, "-o", "json"])
    assert done.returncode == 1
    problems = json.loads(done.stdout)["problems"]
    assert {(p["kind"], p["container_id"]) for p in problems} == {
        ("stale", "b7e0f2c94d1a4e85oldjob"),
        ("shadowed", "8c41d07a2e9f4b13web2"),
    }


def test_nft_backed_containers_are_not_expected_in_iptables() -> None:
    """--backend iptables does not look at nftables, and still never wants iptables
    chains for containers configured `"backend": "nftables"`."""
    done = run(["check", "--backend", "iptables", "--snapshot", "/dev/null",
                "--cni-cache-dir", CACHE, "-o", "json"])  # fmt: skip
    assert done.returncode == 0, done.stdout
    assert json.loads(done.stdout)["problems"] == []


def test_repair_refused_offline() -> None:
    done = run(["check", "--repair", "--nft-snapshot", SNAP, "--cni-cache-dir", CACHE])
    assert_error(done, 2, "--snapshot")
