"""A pod on one network through several interfaces (Multus: net1, net2, net3, one cache
entry each, one shared CNI-DN- chain), one entry unreadable (net2's, cut short) and
another interface being torn down (its address and interface gone from the namespace
its entry names), after a firewall flush: the node's plain check must offer --repair on
the chain's rows exactly where the node's --repair then changes the chain, say in its
warning what that repair does, and offer nothing once it ran (real Debian plugin,
iptables-nft and legacy).

The repair writes such a chain from the live entries read (held_chains: nothing of the
unread interface's there to lose; CacheNow.held: of the torn-down one's only what the
chain holds), and nothing at all where every entry read is torn down (CacheNow leaves
them out). The check judged only the first (unread_entries.node_written): with net1
torn down and net2 unread its rows and warning said "--repair makes their rules" of a
chain the repair leaves as it is."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Dict, Iterator, List

import pytest
import realplugin as rp
from pmctl import run

from portmapctl.iptables.chains import chain_name

NETWORK = "macvlan-conf"
CID = "7e1d" * 16
CHAIN = chain_name(NETWORK, CID)
# (ifname, address, host port, container port), in ADD order.
ATTACHMENTS = (
    ("net1", "10.78.0.5/16", 8080, 80),
    ("net2", "10.78.0.6/16", 9090, 90),
    ("net3", "10.78.0.7/16", 7070, 70),
)
# By layout, each interface's state: "live" (its namespace holds its address),
# "unread" (its entry cut short), "torn" (its entry names a namespace without it).
LAYOUTS: Dict[str, Dict[str, str]] = {
    "net1-torn-net2-unread": {"net1": "torn", "net2": "unread"},
    "net2-unread-net3-torn": {"net1": "live", "net2": "unread", "net3": "torn"},
}
FLUSHES = {"flushed": (["-F"], ["-X"]), "emptied": (["-F"],)}


@pytest.fixture
def emptied_ns() -> Iterator[str]:
    """A namespace holding no address: that of the interfaces being torn down."""
    name = rp.create_netns("pmt-utd-ctr")
    try:
        yield f"/run/netns/{name}"
    finally:
        rp.delete_netns(name)


def _attached(host_ns: str, cache: Path, layout: Dict[str, str], torn_ns: str, mode: rp.Mode):
    stamp = time.time() - 60
    for ifname, ip, host, to in ATTACHMENTS:
        if ifname not in layout:
            continue
        ports = [rp.port_mapping(host, to)]
        conf = rp.plugin_conf(NETWORK, [ip], ports)
        conf["prevResult"]["interfaces"][0]["name"] = ifname
        rp.run_plugin("ADD", host_ns, CID, conf, mode=mode, ifname=ifname, check=True)
        netns = torn_ns if layout[ifname] == "torn" else None
        path = rp.write_cni_cache(cache, NETWORK, CID, ifname, conf, ports, [ip], netns=netns)
        stamp += 1
        os.utime(path, (stamp, stamp))
    for ifname, state in layout.items():
        if state == "unread":
            rp.cut_short(cache / "results", NETWORK, CID, ifname)


def _pm(host_ns: str, cache: Path, mode: rp.Mode, *args: str):
    return run([*args, "--netns", host_ns, "--iptables", mode, "--cni-cache-dir", str(cache),
                "-o", "json"])  # fmt: skip


def _chain(host_ns: str, mode: rp.Mode) -> List[str]:
    """The pod's chain and the entry rules to it, as iptables-save gives them."""
    return [r for r in rp.nat_rules(rp.save(host_ns, 4, mode)) if CHAIN in r]


def _chain_rows(done) -> List[dict]:
    return [p for p in json.loads(done.stdout)["problems"] if p["chain"] == CHAIN]


@pytest.mark.parametrize("flush", sorted(FLUSHES))
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_node_check_offers_what_its_repair_does_beside_a_torn_down_interface(
    host_ns: str, tmp_path: Path, emptied_ns: str, iptables_mode: rp.Mode, layout: str, flush: str
) -> None:
    mode = iptables_mode
    cache = tmp_path / "multus"
    states = LAYOUTS[layout]
    _attached(host_ns, cache, states, emptied_ns, mode)
    for args in FLUSHES[flush]:
        rp.iptables(host_ns, ["-t", "nat", *args], mode=mode)
    before = _chain(host_ns, mode)

    check = _pm(host_ns, cache, mode, "check")
    assert check.returncode == 1, check.stdout + check.stderr
    rows = _chain_rows(check)
    assert rows, check.stdout
    offered = [bool(p["fix"]) and "--repair" in p["fix"] for p in rows]
    assert len(set(offered)) == 1, rows  # the chain is written whole or not at all
    said_made = "--repair makes their rules" in check.stderr
    for p in rows:  # a row never says both that the repair makes it and leaves it
        assert not ("--repair makes" in p["why"] and "would leave it" in p["why"]), p

    repair = _pm(host_ns, cache, mode, "check", "--repair")
    assert repair.returncode == 1, repair.stdout + repair.stderr
    made = _chain(host_ns, mode)
    changed = made != before
    # A live entry read beside the unread one (net1 with net3 torn down): the repair
    # makes its rules; every entry read torn down (net1, net2 unread): it leaves it.
    assert changed == any(s == "live" for s in states.values()), (before, made)
    assert offered[0] == changed, (rows, before, made)
    assert said_made == changed, check.stderr
    assert all("10.78.0.7" not in r and "10.78.0.6" not in r for r in made), made

    again = _pm(host_ns, cache, mode, "check", "--repair")
    assert _chain(host_ns, mode) == made, "the second repair wrote again"
    assert not any(p["fix"] for p in _chain_rows(again)), again.stdout
    after = _pm(host_ns, cache, mode, "check")
    assert after.returncode == 1, after.stdout + after.stderr
    assert not any(p["fix"] for p in _chain_rows(after)), after.stdout
    assert _chain(host_ns, mode) == made
