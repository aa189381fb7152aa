"""The rows of the plugin's nftables table itself beside a live container without a
`backend` key that its plugin keeps in iptables (Debian's 1.1.1; its chain there),
where the table holds only the rules of a container the repair writes nothing for: one
the cache does not know (stale), a zombie, or one being torn down (upstream v1.9.1,
keyed `"backend": "nftables"`). The repair plans nftables from the entries the node's
split places there (ops/nft.split: a keyless one only by evidence in nftables), so it
makes none of those rows; the check counted the keyless iptables container as wanting
the table (nft_table_rows.unwanted_left, torn_down.toplevel_fixes) and offered them:
`check --repair` wrote nothing and the next check offered them again, a loop. Found by
tests/unit/test_repair_property.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import realplugin as rp
import upstream
from test_nft_migration import _both_rulesets, _cached, _pm, _pmctl, node  # noqa: F401

pytestmark = pytest.mark.netns


@pytest.mark.parametrize("gone", ["stale", "zombie", "torn-down"])
def test_a_table_row_a_keyless_iptables_container_does_not_want_offers_no_repair(
    node: str, tmp_path: Path, gone: str
) -> None:
    rp.require(upstream.available())
    deb = rp.plugin_conf("podman", ["10.88.0.11/16"], [_pm(8001, 80)])
    rp.run_plugin("ADD", node, "deb1", deb, check=True)
    _cached(tmp_path, "deb1", deb)  # (its namespace holds its address: live)
    ports, ips = [_pm(8080, 80)], ["10.88.0.8/16"]
    conf = upstream.nft_conf("podman", ips, ports)
    upstream.run("v1.9.1", "ADD", node, "ctr", conf, check=True)
    netns = rp.create_netns("pmt-h333-torn") if gone == "torn-down" else None
    try:
        if gone == "zombie":
            rp.write_cni_cache(tmp_path, "podman", "ctr", "eth0", conf, ports, ips,
                               netns="/run/netns/pmt-h333-no-such-ns")  # fmt: skip
        elif netns is not None:  # its namespace there, its address not: a DEL under way
            rp.write_cni_cache(tmp_path, "podman", "ctr", "eth0", conf, ports, ips,
                               netns=f"/run/netns/{netns}")  # fmt: skip
        upstream.nft(node, "flush", "chain", "ip", "cni_hostport", "prerouting")

        def table_rows(done) -> list:
            rows = json.loads(done.stdout)["problems"]
            return [p for p in rows if p["container_id"] is None]

        rows = table_rows(_pmctl(node, tmp_path, "check", "-o", "json"))
        assert [p["kind"] for p in rows] == ["nft-missing-entry"], rows
        assert rows[0]["fix"] is None, rows  # the repair makes it for nobody here
        assert "--repair would leave it as it is" in rows[0]["why"], rows
        before = _both_rulesets(node)
        done = _pmctl(node, tmp_path, "check", "--repair", "-o", "json")
        assert _both_rulesets(node) == before, done.stdout + done.stderr
        assert not any(p["fix"] for p in table_rows(done)), done.stdout
        again = table_rows(_pmctl(node, tmp_path, "check", "-o", "json"))
        assert [p["kind"] for p in again] == ["nft-missing-entry"], again
        assert not any(p["fix"] for p in again), again
    finally:
        if netns is not None:
            rp.delete_netns(netns)
