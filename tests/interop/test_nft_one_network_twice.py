"""A Multus pod on one network twice (net1, net2: one cache entry each), on the real
upstream plugin's nftables backend (v1.9.1), through the command line.

Each ADD appends its rules, marked with the bare container ID, to the plugin's shared
chains; `check --repair` of the node must keep both interfaces' rules (SPEC §3: it never
deletes a live mapping), and where one of the two entries cannot be read, write and
remove nothing of that container's rules (its iptables chain likewise:
tests/kernel/test_field_runtimes.py)."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pmctl
import pytest
import realplugin as rp
import upstream

pytestmark = pytest.mark.netns

V191 = "v1.9.1"
NETWORK = "macvlan-conf"
CID = "6a1d" * 16
ATTACHMENTS = (
    ("net1", "10.77.0.5/16", [rp.port_mapping(8080, 80)]),
    ("net2", "10.77.0.6/16", [rp.port_mapping(9090, 90)]),
)


@pytest.fixture(autouse=True)
def _upstream_binaries() -> None:
    rp.require(upstream.available())


@pytest.fixture
def twice(tmp_path: Path) -> Iterator[tuple]:
    """The pod added as Multus adds it (net1, then net2), its entries cached with the
    modification times of that order."""
    node = rp.create_netns("pmt-nfttwice")
    try:
        cache, confs, stamp = tmp_path / "multus", {}, time.time() - 60
        for ifname, ip, ports in ATTACHMENTS:
            conf = confs[ifname] = upstream.nft_conf(NETWORK, [ip], ports)
            conf["prevResult"]["interfaces"][0]["name"] = ifname
            upstream.run(V191, "ADD", node, CID, conf, ifname=ifname, check=True)
            path = rp.write_cni_cache(cache, NETWORK, CID, ifname, conf, ports, [ip])
            stamp += 1
            os.utime(path, (stamp, stamp))
        yield node, cache, confs
    finally:
        rp.delete_netns(node)


def _pm(node: str, cache: Path, *args: str):
    return pmctl.run([*args, "--netns", node, "--cni-cache-dir", str(cache), "-o", "json"])


def _rules(node: str) -> List[str]:
    """The plugin's table as nft lists it (no handles)."""
    return upstream.nft(node, "list", "table", "ip", "cni_hostport").stdout.splitlines()


def _delete_dnat(node: str, ifname: str) -> None:
    """Delete `ifname`'s DNAT rule by its handle, as by hand."""
    to = "10.77.0.5" if ifname == "net1" else "10.77.0.6"
    listed = upstream.nft(node, "-a", "list", "table", "ip", "cni_hostport").stdout
    chain: Optional[str] = None
    for line in listed.splitlines():
        named = re.match(r"\s*chain (\S+) \{", line)
        if named:
            chain = named.group(1)
        elif f"dnat to {to}" in line and chain is not None:
            handle = line.rsplit("# handle ", 1)[1].strip()
            upstream.nft(node, "delete", "rule", "ip", "cni_hostport", chain, "handle", handle)
            return
    raise AssertionError(f"no DNAT rule to {to}:\n{listed}")


def _plugin_checks(node: str, confs: Dict[str, dict]) -> None:
    for ifname, conf in confs.items():
        upstream.run(V191, "CHECK", node, CID, conf, ifname=ifname, check=True)


@pytest.mark.parametrize("lost", ["net1", "net2"])
def test_repair_of_one_attachments_lost_rule_keeps_the_others(twice, lost) -> None:
    node, cache, confs = twice
    added = _rules(node)
    assert _pm(node, cache, "check").returncode == 0
    _delete_dnat(node, lost)
    assert _pm(node, cache, "check").returncode == 1
    done = _pm(node, cache, "check", "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    # (Appended behind the other's, as the plugin's re-ADD appends: not in ADD order.)
    assert sorted(_rules(node)) == sorted(added)
    _plugin_checks(node, confs)


@pytest.mark.parametrize("unread", ["net1", "net2"])
@pytest.mark.parametrize("lost", [None, "read"])
def test_an_unreadable_entry_of_the_other_interface_keeps_its_rules(twice, unread, lost) -> None:
    """One interface's entry malformed: its rules (marked with the bare container ID,
    for ports and addresses the entry read does not have) are nft-unclaimed-rules, no
    fix, and --repair deletes none of them; unlike an iptables chain, which the repair
    rewrites whole, the read interface's lost rule is appended alone (nothing of the
    unread interface touched). Entry restored: the node is as the two ADDs left it."""
    node, cache, confs = twice
    unread_ip, read = ("10.77.0.5", "net2") if unread == "net1" else ("10.77.0.6", "net1")
    added = _rules(node)
    restore = rp.cut_short(cache / "results", NETWORK, CID, unread)
    if lost:
        _delete_dnat(node, read)
    before = _rules(node)

    for args in (["check"], ["check", "--repair"]):
        done = _pm(node, cache, *args)
        problems = json.loads(done.stdout)["problems"]
        assert done.returncode == 1, done.stdout + done.stderr
        after = _rules(node)
        assert all(r in after for r in before), f"{args} deleted a rule:\n{done.stdout}"
        left = [p for p in problems if p["kind"] == "nft-unclaimed-rules"]
        assert [p["container_id"] for p in left] == [CID] and not left[0]["fix"], problems
        assert f"{unread_ip} " in left[0]["detail"] + " ", left[0]["detail"]
    if lost:  # the read interface's lost rule is put back, appended as a re-ADD does
        assert sorted(_rules(node)) == sorted(added)
        upstream.run(V191, "CHECK", node, CID, confs[read], ifname=read, check=True)

    restore()
    done = _pm(node, cache, "check", "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(_rules(node)) == sorted(added)
    _plugin_checks(node, confs)
