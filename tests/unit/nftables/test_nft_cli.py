"""The commands on an nft-backed node, offline (--nft-snapshot): no root needed."""

from __future__ import annotations

import json
from pathlib import Path

from pmctl import assert_error, run

ROOT = Path(__file__).parents[3]
SNAP = str(ROOT / "examples" / "nft" / "ruleset.json")
CACHE = str(ROOT / "examples" / "nft" / "cni-cache")
# What iptables-save -t nat prints where no chain was made (an empty file is refused).
EMPTY_NAT = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
EMPTY_NAT += ":POSTROUTING ACCEPT [0:0]\nCOMMIT\n"


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
        # v1.7.1's host-IP rule in hostip_hostports after the upgrade: v1.9.1's CHECK
        # counts hostports alone.
        ("nft-missing-rules", "5e1c0a7d2b9f4c38legacy"),
    }


def test_nft_backed_containers_are_not_expected_in_iptables(tmp_path: Path) -> None:
    """--backend iptables does not look at nftables, and still never wants iptables
    chains for containers configured `"backend": "nftables"`."""
    empty = tmp_path / "nat.save"
    empty.write_text(EMPTY_NAT)
    done = run(["check", "--backend", "iptables", "--snapshot", str(empty),
                "--cni-cache-dir", CACHE, "-o", "json"])  # fmt: skip
    assert done.returncode == 0, done.stdout
    assert json.loads(done.stdout)["problems"] == []


def test_repair_refused_offline() -> None:
    done = run(["check", "--repair", "--nft-snapshot", SNAP, "--cni-cache-dir", CACHE])
    assert_error(done, 2, "--snapshot")


def test_check_of_one_mapping_reports_its_containers_rules_it_does_not_make(
    tmp_path: Path,
) -> None:
    """a91c6e2f0d3b maps 8081 and 127.0.0.1:9443; checked as a mapping of 8081 alone
    with no cache entry of it, its 9443 rule is `nft-unclaimed-rules`: a port the
    config given has not, which the rule (marked with the bare container ID) may be the
    container's on another network for, so --repair leaves it (it was `extra-rules`,
    deleted); with both ports it is healthy, and so it is with its cache entry, whose
    9443 is a live mapping of its own (it was `nft-unclaimed-rules`)."""
    empty = tmp_path / "cache"
    (empty / "results").mkdir(parents=True)
    given = ["--network", "podman", "--container", "a91c6e2f0d3b4f77api", "--ip",
             "10.88.0.6/16", "--no-snat", "-p", "8081:80", "-o", "json"]  # fmt: skip
    cached = ["check", "--nft-snapshot", SNAP, "--cni-cache-dir", CACHE, "--backend",
              "nftables", *given]  # fmt: skip
    done = run(cached)
    assert done.returncode == 0, done.stdout + done.stderr
    base = ["check", "--nft-snapshot", SNAP, "--cni-cache-dir", str(empty), "--backend",
            "nftables", *given]  # fmt: skip
    done = run(base)
    assert done.returncode == 1, done.stdout + done.stderr
    [problem] = json.loads(done.stdout)["problems"]
    assert (problem["kind"], problem["family"], problem["chain"]) == (
        "nft-unclaimed-rules", 4, "hostports"
    )  # fmt: skip
    assert problem["rule"] == (
        'ip daddr 127.0.0.1 tcp dport 9443 dnat to 10.88.0.6:443 comment "a91c6e2f0d3b4f77api"'
    )
    assert problem["detail"].startswith("1 rule for ports or addresses its config has not")
    assert problem["fix"] is None  # (words: --repair leaves it)
    healthy = run([*base, "-p", "127.0.0.1:9443:443"])
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr


def _rules_of(container_id: str) -> int:
    """The rules the example's real plugins wrote for a container (its ID as comment)."""
    document = json.loads(Path(SNAP).read_text())
    rules = [item["rule"] for item in document["nftables"] if "rule" in item]
    return sum(1 for rule in rules if rule.get("comment") == container_id)


def test_nft_missing_rules_says_how_many_of_how_many_as_iptables_does() -> None:
    """One vocabulary: iptables' check says `6 of 6 rules missing`, nftables' said `1
    rule(s) missing`. Both the node's check and the check of one mapping now say `N of M
    rules missing` (M: the rules the plugin's ADD writes for the container and family:
    the example's v1.7.1 container has all of its 3, its DNAT rule where v1.9.1's CHECK
    does not count it), in the table and in JSON's detail."""
    legacy = "5e1c0a7d2b9f4c38legacy"
    said = f"1 of {_rules_of(legacy)} rules missing: ip daddr 127.0.0.1 tcp dport 9200"
    node = ["check", "--nft-snapshot", SNAP, "--cni-cache-dir", CACHE]
    one = [*node, "--backend", "nftables", "--network", "podman", "--container", legacy,
           "--ip", "10.88.0.9/16", "-p", "127.0.0.1:9200:92"]  # fmt: skip
    for args in (node, one):
        problems = json.loads(run([*args, "-o", "json"]).stdout)["problems"]
        [problem] = [p for p in problems if p["kind"] == "nft-missing-rules"]
        assert problem["detail"].startswith(said), problem
        [row] = [line for line in run(args).stdout.splitlines() if "nft-missing-rules  v4" in line]
        assert said.replace(legacy, legacy[:12]) in row, row


def test_a_count_of_missing_rules_is_plural_as_its_whole_is() -> None:
    from portmapctl.core.text import rules_missing

    assert rules_missing(1, 1) == "1 of 1 rule missing"
    assert rules_missing(1, 3) == "1 of 3 rules missing"
