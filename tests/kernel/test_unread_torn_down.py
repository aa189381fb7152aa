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


# For the check of net1's mapping alone: its own interface torn down, net2's entry
# unreadable, with no other live interface sharing the chain or with one (net2 live,
# net3 unreadable); and net1 live beside a torn-down net3.
ONE_LAYOUTS: Dict[str, Dict[str, str]] = {
    **LAYOUTS,
    "net1-torn-net2-live-net3-unread": {"net1": "torn", "net2": "live", "net3": "unread"},
}
_MADE = "--repair makes their rules, that interface's stay unknown"
_KEPT = "nothing is written or removed for it"


def _net1_given(tmp_path: Path) -> List[str]:
    """net1's mapping as its delegate ADD's stdin gives it (--cni-config, --ifname)."""
    ifname, ip, host, to = ATTACHMENTS[0]
    conf = rp.plugin_conf(NETWORK, [ip], [rp.port_mapping(host, to)])
    conf["prevResult"]["interfaces"][0]["name"] = ifname
    stdin = tmp_path / f"{ifname}.json"
    stdin.write_text(json.dumps(conf))
    return ["--container", CID, "--cni-config", str(stdin), "--ifname", ifname]


def _says(done, unread: str, made: bool) -> None:
    """The warning of the unread entry (one) and the chain's rows (their why, the JSON
    `fixed` ones too) say that the repair makes the entries read's rules where `made`
    (it changed the chain), else that nothing is written or removed for it."""
    lines = [line for line in done.stderr.splitlines() if f"{NETWORK}-{CID}-{unread}" in line]
    assert len(lines) == 1, done.stderr
    assert (_MADE in lines[0], _KEPT in lines[0]) == (made, not made), lines[0]
    doc = json.loads(done.stdout)
    rows = [p for key in ("problems", "fixed") for p in doc[key] if p["chain"] == CHAIN]
    for p in rows:
        assert (_MADE in p["why"], _KEPT in p["why"]) == (made, not made), p


@pytest.mark.parametrize("flush", sorted(FLUSHES))
@pytest.mark.parametrize("layout", sorted(ONE_LAYOUTS))
def test_the_one_mapping_check_says_what_its_repair_does_where_an_interface_is_torn_down(
    host_ns: str, tmp_path: Path, emptied_ns: str, iptables_mode: rp.Mode, layout: str, flush: str
) -> None:
    """`check --cni-config net1.json --ifname net1` (and its --repair) after a flush:
    with net1's own interface being torn down and no live entry read sharing the chain,
    the repair leaves it as it is (torn_down.one_mapping_held), but the check's warning
    and rows (unread_entries.written_families, blind to torn-down interfaces) said
    "--repair makes their rules", its rows "would leave it" beside it, and so did the
    repair's own report after writing nothing; the node's check said "nothing is
    written or removed for it". Now each says what the repair does, as the node's check
    does: "--repair makes their rules" where it changes the chain (a live entry read
    shares it), else "nothing is written or removed for it"; offered only there."""
    mode = iptables_mode
    cache = tmp_path / "multus"
    states = ONE_LAYOUTS[layout]
    unread = next(ifname for ifname, state in states.items() if state == "unread")
    _attached(host_ns, cache, states, emptied_ns, mode)
    for args in FLUSHES[flush]:
        rp.iptables(host_ns, ["-t", "nat", *args], mode=mode)
    before = _chain(host_ns, mode)
    given = _net1_given(tmp_path)

    node = _pm(host_ns, cache, mode, "check")
    check = _pm(host_ns, cache, mode, "check", *given)
    assert check.returncode == 1, check.stdout + check.stderr
    rows = _chain_rows(check)
    assert rows, check.stdout
    offered = any(p["fix"] and "--repair" in p["fix"] for p in rows)

    repair = _pm(host_ns, cache, mode, "check", *given, "--repair")
    assert repair.returncode == 1, repair.stdout + repair.stderr
    made = _chain(host_ns, mode)
    # A live interface read shares the chain: its rules are made (net1's not where it
    # is torn down); none (net1 torn down, net2 unread): the chain is left as it is.
    changed = made != before
    assert changed == any(s == "live" for s in states.values()), (before, made)
    assert offered == changed, rows
    for done in (node, check, repair):
        _says(done, unread, changed)

    for args in (("check", *given), ("check", *given, "--repair")):
        again = _pm(host_ns, cache, mode, *args)
        assert again.returncode == 1, again.stdout + again.stderr
        assert _chain(host_ns, mode) == made, f"{args} wrote again"
        assert not any(p["fix"] for p in _chain_rows(again)), again.stdout
        _says(again, unread, changed)
