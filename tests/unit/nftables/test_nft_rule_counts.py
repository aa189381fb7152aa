"""nftables problems count rules as words do: `1 rule`, `2 rules` (they said `N
rule(s)`, where iptables and nftables say `N of M rules missing` since
core/text.rules_missing). Real `nft -j` output: the example node's ruleset
(examples/nft), upstream v1.9.1's after its DNAT rules were deleted
(tests/fixtures/nft/v191-masq-only), and a chain nft's own syntax cannot name
(tests/fixtures/nft_edited/foreign-chain)."""

from __future__ import annotations

import json
from pathlib import Path

import nftcases
from pmctl import run

from portmapctl.nftables import ruleset as rs

ROOT = Path(__file__).resolve().parents[3]
SNAP = str(ROOT / "examples" / "nft" / "ruleset.json")
CACHE = str(ROOT / "examples" / "nft" / "cni-cache")
MASQ_ONLY = str(ROOT / "tests" / "fixtures" / "nft" / "v191-masq-only.nft.json")


def test_rules_a_config_has_not_are_counted_one_rule_and_two_rules(tmp_path):
    """a91c6e2f0d3b4f77api has two rules (8081, 127.0.0.1:9443): checked with a config
    that has one of them, the other is `1 rule`; with neither, `2 rules`."""
    empty = tmp_path / "cache"
    (empty / "results").mkdir(parents=True)
    base = ["check", "--nft-snapshot", SNAP, "--cni-cache-dir", str(empty), "--backend",
            "nftables", "--network", "podman", "--container", "a91c6e2f0d3b4f77api", "--ip",
            "10.88.0.6/16", "--no-snat", "-o", "json"]  # fmt: skip
    for ports, said in ((["-p", "8081:80"], "1 rule for "), (["-p", "9999:80"], "2 rules for ")):
        done = run([*base, *ports])
        details = [p["detail"] for p in json.loads(done.stdout)["problems"]
                   if p["kind"] == "nft-unclaimed-rules"]  # fmt: skip
        assert [d[: len(said)] for d in details] == [said], (ports, details)
        assert "rule(s)" not in done.stdout


def test_masquerade_rules_left_are_counted_one_rule_and_two_rules():
    done = run(["check", "--nft-snapshot", MASQ_ONLY, "--cni-cache-dir", "/nonexistent",
                "-o", "json"])  # fmt: skip
    details = sorted(p["detail"] for p in json.loads(done.stdout)["problems"])
    assert [d.split(" (handle")[0] for d in details] == [
        "1 masquerade rule for fd00:88::5",
        "2 masquerade rules for 10.88.0.5",
    ], details


def test_an_unread_chains_rules_are_counted_one_rule_and_two_rules():
    folder = nftcases.HERE.parent / "nft_edited"
    live = rs.parse((folder / "foreign-chain.nft.json").read_text(), "foreign-chain.nft.json")
    (unread,) = live.unread
    assert "; 1 rule): left alone" in unread.warning()
    two = rs.UnreadChain(unread.family, unread.chain, unread.why, 2)
    assert "; 2 rules): left alone" in two.warning()
