"""The rows of the plugin's nftables table itself where the only cached container that
wants it is one whose backend is in doubt (nothing is written for it), beside rules of
a container the cache does not know (stale: gc's). followed_entries.left_alone keeps
--repair on such a row where some other container's problem in nftables needs the
table; it counted the stale rows, so a stale container kept the fix: `check -o json`
gave nft-missing-entry `fix` "portmapctl check --repair", `check --repair` wrote
nothing (the repair plans no table for a container in doubt, nor for one not cached),
and the next check offered it again: a loop (real Debian 1.1.1 and upstream v1.9.1).
Beside a live cached container kept in nftables (healthy: no row of its own), the
repair makes the table for it, so the row offers it; one being torn down (its
namespace without its address) gets nothing made, so the row offers none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import realplugin as rp
import upstream
from test_nft_migration import _both_rulesets, _debian_gone, _pm, _pmctl, node  # noqa: F401

pytestmark = pytest.mark.netns


@pytest.mark.parametrize("stale", [False, True], ids=["alone", "beside-stale"])
def test_a_table_row_only_a_container_in_doubt_wants_offers_no_repair(
    node: str, tmp_path: Path, stale: bool
) -> None:
    # deb1: nothing of it left, in doubt since deb2 (its key ignored too) is in iptables.
    rp.require(upstream.available())
    _debian_gone(node, tmp_path, "deb1", "10.88.0.31/16", 8031, lose=True)
    _debian_gone(node, tmp_path, "deb2", "10.88.0.32/16", 8032, lose=False)
    conf = upstream.nft_conf("podman", ["10.88.0.8/16"], [_pm(8080, 80)])
    upstream.run("v1.9.1", "ADD", node, "stale", conf, check=True)
    if not stale:  # its rules gone again (the plugin's DEL), the table kept
        upstream.run("v1.9.1", "DEL", node, "stale", conf, check=True)
    upstream.nft(node, "flush", "chain", "ip", "cni_hostport", "prerouting")

    def table_rows(done) -> list:
        assert done.returncode == 1, done.stdout + done.stderr
        assert "podman/deb1" in done.stderr and "cannot be told" in done.stderr, done.stderr
        rows = json.loads(done.stdout)["problems"]
        assert ("stale" in {p["container_id"] for p in rows}) == stale, rows
        return [p for p in rows if p["container_id"] is None]

    rows = table_rows(_pmctl(node, tmp_path, "check", "-o", "json"))
    assert [p["kind"] for p in rows] == ["nft-missing-entry"], rows
    assert rows[0]["fix"] is None, rows  # the repair makes it for nobody here
    before = _both_rulesets(node)
    done = _pmctl(node, tmp_path, "check", "--repair", "-o", "json")
    assert _both_rulesets(node) == before  # (nothing written: the doubt is kept)
    assert not any(p["fix"] for p in table_rows(done)), done.stdout
    assert not any(p["fix"] for p in table_rows(_pmctl(node, tmp_path, "check", "-o", "json")))


@pytest.mark.parametrize("keyed", [True, False], ids=["keyed", "keyless"])
@pytest.mark.parametrize("held", [True, False], ids=["live", "torn-down"])
def test_a_table_row_a_cached_container_beside_one_in_doubt_wants(
    node: str, tmp_path: Path, held: bool, keyed: bool
) -> None:
    """deb1 in doubt (as above), beside `ctr`: ADDed by v1.9.1, cached, whole in the
    table (no row of its own); `prerouting` flushed. Its check gave the table's row no
    fix (only the problems in nftables of containers not in doubt counted as needing
    the table), while `check --repair` made the entry for `ctr`: what it makes was not
    offered. Where `ctr` is being torn down (its namespace without its address), the
    repair makes nothing, and nothing is offered. `keyless`: `ctr` cached without the
    `backend` key, its rules in nftables alone (as v1.9.1's ADD where iptables does not
    work leaves it): followed there by its rules (ops/nft.py split), the repair makes
    the entry for it all the same, and only the keyed ones counted as wanting it."""
    rp.require(upstream.available())
    _debian_gone(node, tmp_path, "deb1", "10.88.0.31/16", 8031, lose=True)
    _debian_gone(node, tmp_path, "deb2", "10.88.0.32/16", 8032, lose=False)
    netns = rp.create_netns("pmt-doubt-ctr")
    try:
        ports, ips = [_pm(8080, 80)], ["10.88.0.8/16"]
        conf = upstream.nft_conf("podman", ips, ports)
        upstream.run("v1.9.1", "ADD", node, "ctr", conf, check=True)
        if not keyed:
            conf = {k: v for k, v in conf.items() if k != "backend"}
        rp.write_cni_cache(tmp_path, "podman", "ctr", "eth0", conf, ports, ips,
                           netns=f"/run/netns/{netns}")  # fmt: skip
        if held:
            rp.hold_addresses(f"/run/netns/{netns}", ips)
        upstream.nft(node, "flush", "chain", "ip", "cni_hostport", "prerouting")

        def table_rows(done) -> list:
            assert done.returncode == 1, done.stdout + done.stderr  # (deb1's rows)
            assert "podman/deb1" in done.stderr and "cannot be told" in done.stderr
            rows = json.loads(done.stdout)["problems"]
            assert "ctr" not in {p["container_id"] for p in rows}, rows
            return [p for p in rows if p["container_id"] is None]

        rows = table_rows(_pmctl(node, tmp_path, "check", "-o", "json"))
        assert [p["kind"] for p in rows] == ["nft-missing-entry"], rows
        assert (rows[0]["fix"] or "").startswith("portmapctl check --repair") == held, rows
        before = _both_rulesets(node)
        entry = "fib daddr type local jump hostports_all"
        assert before[1].count(entry) == 1, before  # (output's alone)
        repaired = table_rows(_pmctl(node, tmp_path, "check", "--repair", "-o", "json"))
        after = _both_rulesets(node)
        assert after[0] == before[0]  # (nothing in iptables: deb1, deb2 in doubt)
        if held:  # made for ctr, as offered
            assert after[1].count(entry) == 2, after
            assert repaired == [], repaired
        else:  # nothing made, none offered
            assert after == before
            assert not any(p["fix"] for p in repaired), repaired
        rows = table_rows(_pmctl(node, tmp_path, "check", "-o", "json"))
        assert [p["kind"] for p in rows] == ([] if held else ["nft-missing-entry"]), rows
        assert not any(p["fix"] for p in rows), rows
        if not held:  # (and says why: the address given back)
            assert "would leave it as it is: its address 10.88.0.8" in rows[0]["why"], rows
    finally:
        rp.delete_netns(netns)
