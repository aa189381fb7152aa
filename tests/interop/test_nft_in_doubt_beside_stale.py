"""The rows of the plugin's nftables table itself where the only cached container that
wants it is one whose backend is in doubt (nothing is written for it), beside rules of
a container the cache does not know (stale: gc's). followed_entries.left_alone keeps
--repair on such a row where some other container's problem in nftables needs the
table; it counted the stale rows, so a stale container kept the fix: `check -o json`
gave nft-missing-entry `fix` "portmapctl check --repair", `check --repair` wrote
nothing (the repair plans no table for a container in doubt, nor for one not cached),
and the next check offered it again: a loop (real Debian 1.1.1 and upstream v1.9.1)."""

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
