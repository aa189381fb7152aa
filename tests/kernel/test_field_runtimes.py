"""Runtime cache layouts against the real plugin and real iptables, in throwaway
namespaces, through the command line as an operator or a cron job runs it.

Multus attaches one network to a pod more than once when its selection annotation
names it twice (`macvlan-conf, macvlan-conf`: interfaces net1 and net2, SR-IOV pods
asking for two VFs of one resource), each with port mappings of its own. libcni
caches one entry per interface (NETWORK-CONTAINERID-net1, -net2), but the plugin's
chain is named after the network and the container alone: both ADDs write into the
one CNI-DN- chain, each appending the rules it lacks, and into CNI-HOSTPORT-DNAT an
entry rule each (chain.go setup, insertUnique).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from ipaddress import ip_interface
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
import realplugin as rp
from pmctl import run

from portmapctl.core.mapping import MappingConfig, PortMapping
from portmapctl.host import netns
from portmapctl.iptables.access.restore import RestoreBackend
from portmapctl.iptables.chains import chain_name
from portmapctl.ops.add import add
from portmapctl.ops.check.unread_entries import ChainInDoubt
from portmapctl.ops.node import Node, NodeOptions

NETWORK = "macvlan-conf"
CID = "5f0c" * 16
# (ifname, address, port mappings): what Multus hands each delegate ADD.
ATTACHMENTS: Tuple[Tuple[str, str, List[dict]], ...] = (
    ("net1", "10.77.0.5/16", [rp.port_mapping(8080, 80)]),
    ("net2", "10.77.0.6/16", [rp.port_mapping(9090, 90)]),
)


# Each interface's IPv6 address beside its IPv4 one, for a dual-stack pod.
IPV6 = {"net1": "fd77::5/64", "net2": "fd77::6/64"}


def _conf(ifname: str, ip: str, ports: List[dict], dual: bool = False) -> dict:
    conf = rp.plugin_conf(NETWORK, [ip, IPV6[ifname]] if dual else [ip], ports)
    conf["prevResult"]["interfaces"][0]["name"] = ifname  # the delegate's interface
    return conf


def _attach_twice(
    host_ns: str, tmp_path: Path, mode: rp.Mode, dual: bool = False
) -> Tuple[Path, Dict[str, dict]]:
    """The pod attached to one network twice, added as Multus adds it (net1, then
    net2) by the real plugin in iptables `mode`, its entries cached with the
    modification times of that order. `dual`: each interface has an IPv6 address too."""
    if not rp.mode_available(mode)[0]:
        pytest.skip(rp.mode_available(mode)[1])
    cache = tmp_path / "multus"
    confs = {}
    stamp = time.time() - 60
    for ifname, ip, ports in ATTACHMENTS:
        conf = confs[ifname] = _conf(ifname, ip, ports, dual)
        ips = [ip, IPV6[ifname]] if dual else [ip]
        rp.run_plugin("ADD", host_ns, CID, conf, mode=mode, ifname=ifname, check=True)
        path = rp.write_cni_cache(cache, NETWORK, CID, ifname, conf, ports, ips)
        stamp += 1
        os.utime(path, (stamp, stamp))
    return cache, confs


@pytest.fixture
def twice(host_ns: str, tmp_path: Path) -> Tuple[str, Path, Dict[str, dict]]:
    """_attach_twice on iptables-nft."""
    return (host_ns, *_attach_twice(host_ns, tmp_path, "nft"))


@pytest.fixture(params=["nft", "legacy"])
def twice_in(request, host_ns: str, tmp_path: Path) -> Tuple[str, Path, Dict[str, dict], rp.Mode]:
    """_attach_twice in each iptables flavour: (namespace, cache, configs, flavour)."""
    return (host_ns, *_attach_twice(host_ns, tmp_path, request.param), request.param)


def _pm(host_ns: str, cache: Path, *args: str, mode: rp.Mode = "nft"):
    return run([*args, "--netns", host_ns, "--iptables", mode, "--cni-cache-dir", str(cache),
                "-o", "json"])  # fmt: skip


def _rules(host_ns: str, mode: rp.Mode = "nft") -> List[str]:
    return rp.nat_rules(rp.save(host_ns, 4, mode))


def _given(confs: Dict[str, dict], tmp_path: Path, ifname: str) -> Tuple[str, ...]:
    """`ifname`'s mapping as its delegate ADD's stdin gives it (--cni-config, --ifname)."""
    stdin = tmp_path / f"{ifname}.json"
    stdin.write_text(json.dumps(confs[ifname]))
    return ("--container", CID, "--cni-config", str(stdin), "--ifname", ifname)


def _net2_given(confs: Dict[str, dict], tmp_path: Path) -> Tuple[str, ...]:
    return _given(confs, tmp_path, "net2")


def _add_net2(host_ns: str, cache: Path, confs: Dict[str, dict], tmp_path: Path) -> None:
    done = run(["add", *_net2_given(confs, tmp_path), "--netns", host_ns, "--iptables", "nft",
                "--cni-cache-dir", str(cache)])  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def _plugin_checks(host_ns: str, confs: Dict[str, dict], mode: rp.Mode = "nft") -> None:
    for ifname, conf in confs.items():
        for done in rp.run_check(host_ns, CID, conf, mode=mode, ifname=ifname):
            assert done.returncode == 0, f"{ifname}: {done.stdout} {done.stderr}"


def _delete_dnat(host_ns: str, ifname: str, mode: rp.Mode = "nft") -> None:
    """Delete `ifname`'s DNAT rule from the shared chain, as by hand."""
    ip, host, to = ("10.77.0.5", "8080", "80") if ifname == "net1" else ("10.77.0.6", "9090", "90")
    rp.iptables(host_ns, ["-t", "nat", "-D", chain_name(NETWORK, CID), "-p", "tcp", "-m", "tcp",
                          "--dport", host, "-j", "DNAT", "--to-destination", f"{ip}:{to}"],
                mode=mode)  # fmt: skip


def _net2_unread(host_ns: str, cache: Path, mode: rp.Mode, lost: Optional[str]):
    """net2's entry cut short (and `lost`'s DNAT rule deleted): the rules as the two ADDs
    left them, the function that puts the entry back, and the rules now."""
    added = _rules(host_ns, mode)
    restore = rp.cut_short(cache / "results", NETWORK, CID, "net2")
    if lost:
        _delete_dnat(host_ns, lost, mode)
    return added, restore, _rules(host_ns, mode)


def _stopped_for_the_unread_entry(done, unread: str) -> None:
    """Exit 3 (the node's state stops it, as a backend in doubt does) and one line on
    stderr naming the entry that cannot be read and what to do."""
    assert done.returncode == 3, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"{NETWORK}-{CID}-{unread} cannot be read" in lines[0], lines[0]
    assert "nothing changed (fix or remove the entry" in lines[0], lines[0]


def test_a_pod_on_one_network_twice_is_healthy_and_repair_keeps_both_mappings(twice):
    """check called net2's rules extra-rules and extra-entry ('its cached config does
    not make'), exit 1, and check --repair deleted them: host port 9090 no longer
    forwarded, though both cache entries are there and the plugin's CHECK passes."""
    host_ns, cache, confs = twice
    added = _rules(host_ns)
    chain = chain_name(NETWORK, CID)
    assert any("--to-destination 10.77.0.6:90" in r and chain in r for r in added)

    done = _pm(host_ns, cache, "check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["problems"] == []

    done = _pm(host_ns, cache, "check", "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _rules(host_ns) == added, "check --repair changed the plugin's rules"
    _plugin_checks(host_ns, confs)


def test_repair_after_a_flush_writes_both_attachments_rules_as_the_plugin_did(twice):
    """A firewall reload flushes the nat table: the repair makes the chain the two
    ADDs made (net1's rules, then net2's), not net1's alone."""
    host_ns, cache, confs = twice
    added = _rules(host_ns)
    rp.iptables(host_ns, ["-t", "nat", "-F"], mode="nft")
    rp.iptables(host_ns, ["-t", "nat", "-X"], mode="nft")

    done = _pm(host_ns, cache, "check", "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _rules(host_ns) == added
    _plugin_checks(host_ns, confs)
    assert _pm(host_ns, cache, "check").returncode == 0


@pytest.mark.parametrize("lost", ["net1", "net2"])
def test_repair_of_one_attachments_lost_rule_keeps_the_others(twice, lost):
    """net2's (or net1's) DNAT rule deleted by hand: the repair reads both entries again
    (the chain exists and changes) and puts back the chain the two ADDs made."""
    host_ns, cache, confs = twice
    added = _rules(host_ns)
    _delete_dnat(host_ns, lost)

    done = _pm(host_ns, cache, "check")
    assert done.returncode == 1
    assert [p["kind"] for p in json.loads(done.stdout)["problems"]] == ["missing-rules"]
    done = _pm(host_ns, cache, "check", "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _rules(host_ns) == added
    _plugin_checks(host_ns, confs)


@pytest.mark.parametrize("unread", ["net1", "net2"])
@pytest.mark.parametrize("lost", [None, "read"])
def test_an_unreadable_entry_of_the_other_interface_keeps_the_shared_chain(twice, unread, lost):
    """One interface's entry malformed (a torn write, a disk error): the node check
    wanted the chain from the other entry alone, called the unreadable one's live rules
    extra-rules and extra-entry with `--repair` as the fix, and --repair deleted them
    (exit 0, 'healthy'): its host port no longer forwarded. So too when the read
    interface's own DNAT rule was lost: the repair rewrote the chain from its entry.
    The chain may hold a mapping the check cannot read: reported, no fix, nothing
    written or removed; with the entry readable again the repair makes both."""
    host_ns, cache, confs = twice
    added = _rules(host_ns)
    read = "net2" if unread == "net1" else "net1"
    restore = rp.cut_short(cache / "results", NETWORK, CID, unread)
    if lost:
        _delete_dnat(host_ns, read)
    before = _rules(host_ns)

    chain = chain_name(NETWORK, CID)
    for args in (["check"], ["check", "--repair"]):
        done = _pm(host_ns, cache, *args)
        assert done.returncode == 1, done.stdout + done.stderr
        problems = json.loads(done.stdout)["problems"]
        assert problems and all(p["chain"] == chain for p in problems), done.stdout
        assert all(not p["fix"] and "cannot be read" in p["why"] for p in problems), problems
        assert f"{NETWORK}-{CID}-{unread}" in done.stderr, done.stderr
        assert _rules(host_ns) == before, f"{args} changed the chain"

    restore()
    done = _pm(host_ns, cache, "check", "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _rules(host_ns) == added
    _plugin_checks(host_ns, confs)


_FLUSHES = {"flushed": (["-F"], ["-X"]), "emptied": (["-F"],)}


def _flushed_with_net2_unread(host_ns: str, cache: Path, mode: rp.Mode, flush: str):
    """net2's entry cut short, then the firewall flush `flush` (`-F; -X`: no chain left;
    `-F`: the chain left empty): the rules as the two ADDs left them and the function
    that puts the entry back."""
    added = _rules(host_ns, mode)
    restore = rp.cut_short(cache / "results", NETWORK, CID, "net2")
    for args in _FLUSHES[flush]:
        rp.iptables(host_ns, ["-t", "nat", *args], mode=mode)
    return added, restore


def _net1_alone(added: List[str], rules: List[str]) -> None:
    """`rules` are the two ADDs' without net2's (its --dport 9090 rules and entry rule):
    net1's chain as the plugin's ADD of net1 alone makes it, and the top-level chains."""
    assert rules == [r for r in added if "9090" not in r], rules
    assert any("--to-destination 10.77.0.5:80" in r for r in rules), rules


def _unread_left_after(done, unread: str = "net2") -> None:
    """Exit 1: the chain holds the read entry's rules, the unread one's are not known.
    One row of it, missing-rules, no fix (no --repair that would write or delete), and
    the warning naming the entry."""
    assert done.returncode == 1, done.stdout + done.stderr
    problems = json.loads(done.stdout)["problems"]
    assert [(p["kind"], p["chain"]) for p in problems] == [
        ("missing-rules", chain_name(NETWORK, CID))
    ], problems
    assert not problems[0]["fix"] and "cannot be read" in problems[0]["why"], problems
    assert f"{NETWORK}-{CID}-{unread} cannot be read" in done.stderr, done.stderr


@pytest.mark.parametrize("flush", sorted(_FLUSHES))
def test_after_a_flush_the_repair_makes_the_shared_chain_from_the_readable_entry(twice_in, flush):
    """net2's entry unreadable, then `iptables -t nat -F; -X` (or `-F`, the chain left
    empty): check --repair wrote no chain for the pod (d76e041: in doubt), exit 1,
    missing-chain (or missing-rules) with no fix: net1's port 8080 dark for good, where
    the chain holds nothing net2's to lose. Now the repair makes it from net1's entry
    (and the top-level chains, ba9f1b5), exit 1 with the entry named; the check after
    and a second repair say the same and write nothing; the entry readable again, the
    repair puts net2's rules back."""
    host_ns, cache, confs, mode = twice_in
    added, restore = _flushed_with_net2_unread(host_ns, cache, mode, flush)

    done = _pm(host_ns, cache, "check", "--repair", mode=mode)
    _unread_left_after(done)
    rules = _rules(host_ns, mode)
    _net1_alone(added, rules)
    for args in (["check"], ["check", "--repair"]):
        done = _pm(host_ns, cache, *args, mode=mode)
        _unread_left_after(done)
        assert _rules(host_ns, mode) == rules, f"{args} wrote again"

    restore()
    done = _pm(host_ns, cache, "check", "--repair", mode=mode)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _rules(host_ns, mode) == added
    _plugin_checks(host_ns, confs, mode)


@pytest.mark.parametrize("flush", sorted(_FLUSHES))
def test_after_a_flush_the_one_mapping_repair_makes_the_chain_from_the_readable_entry(
    twice_in, tmp_path, flush
):
    """The same through check --repair of net1's mapping (its delegate's stdin): it
    stopped (exit 3, 7f0f89e) on a chain with nothing net2's in it. Now it makes net1's
    rules, exit 1 with the entry named, and again writes nothing. With no chain left
    anywhere (`-F; -X`) and no --backend, it stopped too (exit 3, 'whether its plugin
    keeps it in iptables or in nftables cannot be told'): net2's unread entry was taken
    for net1's own, whose key is not known, where net1's entry reads and says it (the
    key its plugin was given for net1), as the node's repair judges it."""
    host_ns, cache, confs, mode = twice_in
    added, restore = _flushed_with_net2_unread(host_ns, cache, mode, flush)
    one = ("check", *_given(confs, tmp_path, "net1"))

    done = _pm(host_ns, cache, *one, "--repair", mode=mode)
    _unread_left_after(done)
    rules = _rules(host_ns, mode)
    _net1_alone(added, rules)
    for args in (one, (*one, "--repair")):
        done = _pm(host_ns, cache, *args, mode=mode)
        _unread_left_after(done)
        assert _rules(host_ns, mode) == rules, f"{args} wrote again"


@pytest.mark.parametrize("flush", sorted(_FLUSHES))
def test_after_a_flush_the_one_mapping_check_offers_the_repair_it_makes(twice_in, tmp_path, flush):
    """The state of the test above, before its repair: the check of net1's mapping gave
    its rows (the chain missing or empty, its entry rule gone) no fix, "nothing is
    written or removed for it", exit 1, while its --repair makes net1's rules, the chain
    holding nothing net2's to lose (stop_where_held): net1's port 8080 stayed dark for
    an operator who repairs what check offers. Now each row offers --repair, as the
    same command with --repair does; after it, nothing is offered (no loop)."""
    host_ns, cache, confs, mode = twice_in
    added, _ = _flushed_with_net2_unread(host_ns, cache, mode, flush)
    one = ("check", *_given(confs, tmp_path, "net1"))
    more = f"--netns {host_ns} --iptables {mode} --cni-cache-dir {cache}"

    done = _pm(host_ns, cache, *one, mode=mode)
    assert done.returncode == 1, done.stdout + done.stderr
    rows = [
        p for p in json.loads(done.stdout)["problems"] if p["chain"] == chain_name(NETWORK, CID)
    ]
    assert rows and all(f"--ifname net1 {more} --repair" in (p["fix"] or "") for p in rows), rows
    assert "net2 cannot be read" in done.stderr and "--repair makes their rules" in done.stderr
    done = _pm(host_ns, cache, *one, "--repair", mode=mode)
    _unread_left_after(done)
    _net1_alone(added, _rules(host_ns, mode))
    _unread_left_after(_pm(host_ns, cache, *one, mode=mode))


@pytest.mark.parametrize("flush", sorted(_FLUSHES))
def test_after_a_flush_the_node_check_offers_the_repair_it_makes(twice_in, flush):
    """The state of test_after_a_flush_the_repair_makes_the_shared_chain_from_the_
    readable_entry before its repair: the node's check gave the chain's rows (missing
    or empty, its entry rule gone) no fix, "nothing is written or removed for it",
    while the node's --repair makes net1's chain (held_chains: nothing of net2's there
    to lose): net1's port 8080 stayed dark for an operator who repairs what check
    offers. Now its rows offer --repair, as the top-level rows do, and say the repair
    makes the readable entry's rules; after it, nothing is offered (no loop) and a
    second repair writes nothing."""
    host_ns, cache, confs, mode = twice_in
    added, _ = _flushed_with_net2_unread(host_ns, cache, mode, flush)
    repair = (
        f"portmapctl check --repair --netns {host_ns} --iptables {mode} --cni-cache-dir {cache}"
    )

    done = _pm(host_ns, cache, "check", mode=mode)
    assert done.returncode == 1, done.stdout + done.stderr
    problems = json.loads(done.stdout)["problems"]
    rows = [p for p in problems if p["chain"] == chain_name(NETWORK, CID)]
    assert rows and all(p["fix"] == repair for p in problems), problems
    assert all("--repair makes their rules" in p["why"] for p in rows), rows
    assert "net2 cannot be read" in done.stderr and "--repair makes their rules" in done.stderr
    assert "nothing is written or removed" not in done.stderr, done.stderr

    _unread_left_after(_pm(host_ns, cache, "check", "--repair", mode=mode))
    rules = _rules(host_ns, mode)
    _net1_alone(added, rules)
    for args in (["check"], ["check", "--repair"]):
        _unread_left_after(_pm(host_ns, cache, *args, mode=mode))
        assert _rules(host_ns, mode) == rules, f"{args} wrote again"


_MADE = "--repair makes their rules, that interface's stay unknown"


def _said_made(done, fixed: bool) -> None:
    """_unread_left_after, in the words of a check before a repair that makes the chain
    (unread_entries.MADE_WHY, its warning): the chain holds nothing the entries read do
    not make, the repair makes (made) their rules, the unread interface's stay unknown;
    not "nothing is written or removed for it" where it was just written. `fixed`: the
    rows the repair fixed (JSON `fixed`) say so too."""
    _unread_left_after(done)
    doc = json.loads(done.stdout)
    said = [line for line in done.stderr.splitlines() if f"{NETWORK}-{CID}-net2" in line]
    assert len(said) == 1 and _MADE in said[0], done.stderr
    assert "nothing is written or removed" not in done.stderr, done.stderr
    assert _MADE in doc["problems"][0]["why"], doc["problems"]
    rows = [p for p in doc["fixed"] if p["chain"] == chain_name(NETWORK, CID)]
    assert bool(rows) == fixed, doc["fixed"]
    assert all(_MADE in p["why"] for p in rows), rows


@pytest.mark.parametrize("one", [False, True], ids=["node", "one-mapping"])
@pytest.mark.parametrize("flush", sorted(_FLUSHES))
def test_after_a_flush_the_repair_says_what_it_wrote_for_the_chain(twice_in, tmp_path, flush, one):
    """net2's entry unreadable, then a flush: the node's check --repair made net1's
    rules, and its own warning after said the chain "may hold that interface's live
    mapping: nothing is written or removed for it", its row's why and the JSON `fixed`
    rows of the chain it made the same (the check after the write was told nothing of
    it; the unknown_rules row was in doubt wherever the chain was written). Now the
    repair, the check after it and a second repair say what the check before it says:
    "--repair makes their rules, that interface's stay unknown"; still no fix named
    after it (no loop). So the one-mapping repair of net1's (its delegate's stdin)."""
    host_ns, cache, confs, mode = twice_in
    added, _ = _flushed_with_net2_unread(host_ns, cache, mode, flush)
    args = ("check", *_given(confs, tmp_path, "net1")) if one else ("check",)

    _said_made(_pm(host_ns, cache, *args, "--repair", mode=mode), fixed=True)
    rules = _rules(host_ns, mode)
    _net1_alone(added, rules)
    for again in (args, (*args, "--repair")):
        _said_made(_pm(host_ns, cache, *again, mode=mode), fixed=False)
        assert _rules(host_ns, mode) == rules, f"{again} wrote again"


def test_an_emptied_chain_with_the_unread_entrys_entry_rule_stays_in_doubt(twice_in, tmp_path):
    """The chain alone flushed (`iptables -t nat -F CNI-DN-...`): CNI-HOSTPORT-DNAT still
    sends net2's port 9090 to it, a rule net1's entry does not make: the chain is in
    doubt as before, nothing written by either repair, and the node's check offers no
    fix for it."""
    host_ns, cache, confs, mode = twice_in
    rp.cut_short(cache / "results", NETWORK, CID, "net2")
    rp.iptables(host_ns, ["-t", "nat", "-F", chain_name(NETWORK, CID)], mode=mode)
    before = _rules(host_ns, mode)
    for args in (["check"], ["check", "--repair"]):
        done = _pm(host_ns, cache, *args, mode=mode)
        assert done.returncode == 1, done.stdout + done.stderr
        assert all(not p["fix"] for p in json.loads(done.stdout)["problems"]), done.stdout
        assert "nothing is written or removed for it" in done.stderr, done.stderr
        assert _rules(host_ns, mode) == before, f"the node's {args} wrote into the chain"
    done = _pm(host_ns, cache, "check", *_given(confs, tmp_path, "net1"), "--repair", mode=mode)
    _stopped_for_the_unread_entry(done, "net2")
    assert _rules(host_ns, mode) == before, "the one-mapping repair wrote into the chain"
    done = _add(host_ns, cache, confs, tmp_path, mode)
    _stopped_for_the_unread_entry(done, "net2")
    assert _rules(host_ns, mode) == before, "add wrote into the chain"


@pytest.mark.parametrize("lost", [None, "net1"])
def test_one_mapping_repair_writes_nothing_for_a_chain_with_an_unreadable_entry(
    twice_in, tmp_path, lost
):
    """net2's entry malformed, check --repair of net1's mapping (its delegate's stdin)
    rewrote the shared chain from net1's entry alone, exit 0 ('repaired 3 problems ...
    healthy'): net2's live --dport 9090 rules gone. So too with net1's own DNAT rule
    lost. The chain is in doubt as the node's repair judges it (unread_entries): the
    repair stops (exit 3, one line naming the entry), nothing written; the check of the
    mapping names no fix for it; the entry readable again, the repair makes both."""
    host_ns, cache, confs, mode = twice_in
    added, restore, before = _net2_unread(host_ns, cache, mode, lost)
    one = ("check", *_given(confs, tmp_path, "net1"))

    done = _pm(host_ns, cache, *one, "--repair", mode=mode)
    _stopped_for_the_unread_entry(done, "net2")
    assert _rules(host_ns, mode) == before, "the repair changed the shared chain"

    done = _pm(host_ns, cache, *one, mode=mode)
    assert done.returncode == 1, done.stdout + done.stderr
    problems = json.loads(done.stdout)["problems"]
    assert problems and all(not p["fix"] and "cannot be read" in p["why"] for p in problems)
    assert f"{NETWORK}-{CID}-net2 cannot be read" in done.stderr, done.stderr

    restore()
    done = _pm(host_ns, cache, *one, "--repair", mode=mode)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _rules(host_ns, mode) == added
    _plugin_checks(host_ns, confs, mode)


@pytest.mark.parametrize("command", ["check", "check-repair", "check-one"])
def test_the_unread_entry_is_warned_of_once(twice, tmp_path, command):
    """net2's entry cut short: the node check warned twice of the one file, the cache
    reader's 'skipped a CNI cache entry that cannot be read (... not valid JSON ...);
    its container is kept as live by the file name', then 'its cache entry ... cannot
    be read, so its chain may hold ...'; the one-mapping check said the second alone,
    without why the entry cannot be read. One line says it all, in each."""
    host_ns, cache, confs = twice
    rp.cut_short(cache / "results", NETWORK, CID, "net2")
    args = {"check": ["check"], "check-repair": ["check", "--repair"],
            "check-one": ["check", *_given(confs, tmp_path, "net1")]}[command]  # fmt: skip
    done = _pm(host_ns, cache, *args)
    assert done.returncode == 1, done.stdout + done.stderr
    said = [line for line in done.stderr.splitlines() if f"{NETWORK}-{CID}-net2" in line]
    assert len(said) == 1, done.stderr
    for words in ("cannot be read (not valid JSON", "kept as live by the file name",
                  "may hold that interface's live mapping", "fix or remove the entry"):  # fmt: skip
        assert words in said[0], said[0]


@pytest.mark.parametrize("command", ["check", "check-one-repair", "add"])
def test_the_unread_entrys_name_is_said_unambiguously(twice, tmp_path, command):
    """net2's entry cut short and renamed `...-net\\x1b` (a backslash, then `x1b`: a
    file name's tail is anyone's text): the node check's warning put its path in the
    sentence as it was, which reads as the name `...-net<ESC>` does (the line's pass
    writes ESC `\\x1b`). Names and paths in sentences go through name_text (4b5b210):
    the backslash doubled. The one-mapping repair's and add's lines say it so too."""
    host_ns, cache, confs = twice
    rp.cut_short(cache / "results", NETWORK, CID, "net2")
    results = cache / "results"
    (results / f"{NETWORK}-{CID}-net2").rename(results / f"{NETWORK}-{CID}-net\\x1b")
    if command == "check":
        done = _pm(host_ns, cache, "check")
        assert done.returncode == 1, done.stdout + done.stderr
    else:
        args = ["check", "--repair"] if command == "check-one-repair" else ["add"]
        done = run([*args, *_given(confs, tmp_path, "net1"), "--netns", host_ns, "--iptables",
                    "nft", "--cni-cache-dir", str(cache)])  # fmt: skip
        assert done.returncode == 3, done.stdout + done.stderr
    assert f"-{CID}-net\\\\x1b cannot be read" in done.stderr, done.stderr


@pytest.mark.parametrize("given", ["net1", "net2"])
def test_check_of_one_attachment_leaves_the_other_interfaces_rules(twice, tmp_path, given):
    """check --cni-config of net1's (or net2's) stdin called the other interface's rules
    'its config does not make' (exit 1) and its --repair deleted them; the plugin's
    CHECK of either passes. The other cached interfaces' rules are the chain's too."""
    host_ns, cache, confs = twice
    added = _rules(host_ns)
    stdin = tmp_path / f"{given}.json"
    stdin.write_text(json.dumps(confs[given]))
    one = ("check", "--container", CID, "--cni-config", str(stdin), "--ifname", given)

    done = _pm(host_ns, cache, *one)
    assert done.returncode == 0, done.stdout + done.stderr
    done = _pm(host_ns, cache, *one, "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _rules(host_ns) == added

    # Its own lost DNAT rule comes back where the plugin's ADD put it.
    chain = chain_name(NETWORK, CID)
    ip, port = ("10.77.0.5", "8080:80") if given == "net1" else ("10.77.0.6", "9090:90")
    host, to = port.split(":")
    rp.iptables(host_ns, ["-t", "nat", "-D", chain, "-p", "tcp", "-m", "tcp", "--dport", host,
                          "-j", "DNAT", "--to-destination", f"{ip}:{to}"], mode="nft")  # fmt: skip
    assert _pm(host_ns, cache, *one).returncode == 1
    done = _pm(host_ns, cache, *one, "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _rules(host_ns) == added
    _plugin_checks(host_ns, confs)


def test_a_cni_0_2_0_network_is_checked_and_repaired(host_ns, tmp_path):
    """A conflist of cniVersion 0.2.0: libcni hands portmap, and caches, a result that
    spells its address `ip4` (no `ips`); the plugin converts it and maps the port. The
    cached container was taken for one without an address: after a flush check said
    'healthy: no cached port mappings', exit 0, and --repair made nothing."""
    if not rp.mode_available("nft")[0]:
        pytest.skip(rp.mode_available("nft")[1])
    cid, ports = "0a2b" * 16, [rp.port_mapping(8080, 80)]
    conf = rp.plugin_conf("oldnet", ["10.88.0.5/16"], ports, cni_version="0.2.0")
    conf["prevResult"] = {"cniVersion": "0.2.0", "dns": {},
                          "ip4": {"ip": "10.88.0.5/16", "gateway": "10.88.0.1"}}  # fmt: skip
    rp.run_plugin("ADD", host_ns, cid, conf, mode="nft", check=True)
    path = rp.write_cni_cache(tmp_path, "oldnet", cid, "eth0", conf, ports, ["10.88.0.5/16"])
    entry = json.loads(path.read_text())
    entry["result"] = conf["prevResult"]
    path.write_text(json.dumps(entry))
    added = _rules(host_ns)
    assert any("--to-destination 10.88.0.5:80" in r for r in added)
    assert _pm(host_ns, tmp_path, "check").returncode == 0

    rp.iptables(host_ns, ["-t", "nat", "-F"], mode="nft")
    rp.iptables(host_ns, ["-t", "nat", "-X"], mode="nft")
    done = _pm(host_ns, tmp_path, "check")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "missing-chain" in [p["kind"] for p in json.loads(done.stdout)["problems"]]
    done = _pm(host_ns, tmp_path, "check", "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _rules(host_ns) == added


def test_add_of_one_attachment_keeps_the_other_interfaces_rules(twice, tmp_path):
    """add --cni-config of net2's stdin rewrote the chain to net2's rules alone: net1's
    host port 8080 no longer forwarded (the plugin's ADD of net2 appends to the chain)."""
    host_ns, cache, confs = twice
    added = _rules(host_ns)
    _add_net2(host_ns, cache, confs, tmp_path)
    assert _rules(host_ns) == added
    _plugin_checks(host_ns, confs)


def _add(
    host_ns: str, cache: Path, confs: Dict[str, dict], tmp_path: Path, mode: rp.Mode, *more: str
):
    """add of net1's mapping as its delegate ADD's stdin gives it."""
    return run(["add", *_given(confs, tmp_path, "net1"), "--netns", host_ns, "--iptables", mode,
                "--cni-cache-dir", str(cache), *more])  # fmt: skip


def test_add_of_the_first_interface_keeps_the_seconds_rules_as_the_plugins_add(twice_in, tmp_path):
    """The plugin's ADD of net1 again (its chain there, net2's rules in it) appends only
    what the chain lacks: net2's rules stay. So does add of net1, both entries read."""
    host_ns, cache, confs, mode = twice_in
    added = _rules(host_ns, mode)
    rp.run_plugin("ADD", host_ns, CID, confs["net1"], mode=mode, ifname="net1", check=True)
    plugin = _rules(host_ns, mode)
    assert plugin == added, "the plugin's ADD of net1 changed the shared chain"

    done = _add(host_ns, cache, confs, tmp_path, mode)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _rules(host_ns, mode) == plugin
    _plugin_checks(host_ns, confs, mode)


@pytest.mark.parametrize(("lost", "more"), [(None, ()), ("net1", ()), (None, ("--backend", "iptables")), (None, ("--dry-run",))])  # fmt: skip
def test_add_writes_nothing_into_a_chain_with_an_unreadable_entry(twice_in, tmp_path, lost, more):
    """net2's entry malformed, add of net1's mapping rewrote the shared chain from net1's
    entry and the config given, exit 0 ('rewrote CNI-DN-c1ee...'): net2's live --dport
    9090 rules gone, where the plugin's ADD of net1 keeps them. So too with net1's own
    DNAT rule lost. The chain is in doubt as the node's repair judges it: add stops
    (exit 3, one line naming the entry), nothing written, under --backend iptables and
    in a dry run too; the entry readable again, add keeps net2's rules."""
    host_ns, cache, confs, mode = twice_in
    added, restore, before = _net2_unread(host_ns, cache, mode, lost)

    done = _add(host_ns, cache, confs, tmp_path, mode, *more)
    _stopped_for_the_unread_entry(done, "net2")
    assert _rules(host_ns, mode) == before, "add changed the shared chain"

    restore()
    done = _add(host_ns, cache, confs, tmp_path, mode)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [r for r in _rules(host_ns, mode) if "9090" in r] == [r for r in added if "9090" in r]
    _plugin_checks(host_ns, confs, mode)


@pytest.mark.parametrize("more", [(), ("--backend", "iptables"), ("--dry-run",)])
@pytest.mark.parametrize("flush", sorted(_FLUSHES))
def test_add_into_a_chain_a_flush_emptied_makes_it_as_the_repairs_do(
    twice_in, tmp_path, more, flush
):
    """net2's entry cut short, then `iptables -t nat -F` (the chain left there, empty, no
    entry rule left): the node's repair and the one-mapping repair make net1's rules in
    it (9e8815b, held_chains: nothing of net2's there to lose), but add of net1 stopped
    (exit 3, 'may hold that interface's live mapping: nothing changed'), judging by the
    chain being there alone. Now add judges it as they do and makes the same rules
    (the dry run writes nothing and says so). After `-F; -X` (no chain anywhere) add
    without --backend stopped too (exit 3, its backend 'cannot be told': net2's
    unread entry taken for net1's own)."""
    host_ns, cache, confs, mode = twice_in
    added, _ = _flushed_with_net2_unread(host_ns, cache, mode, flush)
    before = _rules(host_ns, mode)

    done = _add(host_ns, cache, confs, tmp_path, mode, *more)
    assert done.returncode == 0, done.stdout + done.stderr
    if more == ("--dry-run",):
        assert _rules(host_ns, mode) == before, "the dry run wrote"
        assert chain_name(NETWORK, CID) in done.stdout, done.stdout
        return
    made = _rules(host_ns, mode)
    _net1_alone(added, made)
    for args in _FLUSHES[flush]:
        rp.iptables(host_ns, ["-t", "nat", *args], mode=mode)
    done = _pm(host_ns, cache, "check", "--repair", mode=mode)
    _unread_left_after(done)
    assert _rules(host_ns, mode) == made, "add and the node's repair made other rules"


def _dual_ipv4_flushed(host_ns: str, tmp_path: Path, mode: rp.Mode) -> Tuple[Path, Dict[str, dict]]:
    """_attach_twice dual-stack, then the IPv4 nat table flushed and its chains deleted
    (the IPv6 chain left) and net2's entry cut short."""
    cache, confs = _attach_twice(host_ns, tmp_path, mode, dual=True)
    if "9090" not in rp.save(host_ns, 6, mode):
        # Debian's plugin on iptables-legacy leaves net2's IPv6 rules out of the chain
        # net1's ADD made (on iptables-nft it appends them): ip6tables-legacy's `-C`
        # does not compare the port match's or DNAT's data, so they "exist"
        # (test_legacy_ipv6_second_interfaces_rules_...). Put in as the plugin on
        # iptables-nft does, so that the IPv6 chain holds the unread interface's live
        # rules (else nothing of it is there to lose: held_chains).
        chain = chain_name(NETWORK, CID)
        rp.iptables(host_ns, ["-t", "nat", "-A", chain, "-p", "tcp", "-m", "tcp", "--dport",
                              "9090", "-j", "DNAT", "--to-destination", "[fd77::6]:90"],
                    family=6, mode=mode)  # fmt: skip
    rp.iptables(host_ns, ["-t", "nat", "-F"], mode=mode)
    rp.iptables(host_ns, ["-t", "nat", "-X"], mode=mode)
    rp.cut_short(cache / "results", NETWORK, CID, "net2")
    return cache, confs


@pytest.mark.parametrize("mode", ["nft", "legacy"])
@pytest.mark.parametrize("more", [("--backend", "iptables"), ()])
def test_add_writes_no_family_when_another_familys_chain_is_in_doubt(host_ns, tmp_path, mode, more):
    """A dual-stack pod on one network twice, its IPv4 nat table flushed (chain gone),
    its IPv6 chain still there, net2's entry cut short: add of net1 under --backend
    iptables wrote IPv4 (net1's rules alone) and then stopped at IPv6 with exit 3 and
    'nothing changed', which was false (ops/add.py judged the chain family by family,
    where it found it). It decides for every family first: nothing written in either,
    the line true; without --backend too."""
    cache, confs = _dual_ipv4_flushed(host_ns, tmp_path, mode)
    before = {family: rp.nat_rules(rp.save(host_ns, family, mode)) for family in (4, 6)}
    assert chain_name(NETWORK, CID) in "\n".join(before[6]), before[6]

    done = _add(host_ns, cache, confs, tmp_path, mode, *more)
    _stopped_for_the_unread_entry(done, "net2")
    after = {family: rp.nat_rules(rp.save(host_ns, family, mode)) for family in (4, 6)}
    assert after == before, "add wrote a family before it stopped"


@pytest.mark.parametrize("mode", ["nft", "legacy"])
@pytest.mark.parametrize("dry_run", [False, True])
def test_adds_library_stop_says_which_family_went_in(host_ns, tmp_path, mode, dry_run):
    """The same node, add called as a library (no CLI to ask every family first): it
    finds the chain family by family, so IPv4 goes in before IPv6 stops it. Its line
    said 'nothing changed'; it says what was applied. A dry run applies nothing: it
    said "nothing more changed (IPv4 was applied)" of the IPv4 it only planned."""
    cache, _ = _dual_ipv4_flushed(host_ns, tmp_path, mode)
    given = MappingConfig(NETWORK, CID, (ip_interface("10.77.0.5/16"), ip_interface("fd77::5/64")),
                          (PortMapping(8080, 80),))  # fmt: skip
    options = NodeOptions(iptables=mode, families=(4, 6), netns=host_ns, cache_dirs=(str(cache),))
    with netns.entered(host_ns), pytest.raises(ChainInDoubt) as stopped:
        add(Node(options, RestoreBackend(mode)), given, flush_udp=False, ifname="net1",
            dry_run=dry_run)  # fmt: skip
    if dry_run:
        assert chain_name(NETWORK, CID) not in rp.save(host_ns, 4, mode)
        assert "nothing changed (fix" in str(stopped.value), stopped.value
        assert "applied" not in str(stopped.value), stopped.value
        return
    assert chain_name(NETWORK, CID) in rp.save(host_ns, 4, mode)  # (IPv4 went in)
    assert "nothing changed" not in str(stopped.value), stopped.value
    assert "nothing more changed (IPv4 was applied)" in str(stopped.value), stopped.value


@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_add_of_one_attachment_into_no_chain_writes_its_rules_alone(host_ns, tmp_path, mode):
    """After a firewall flush (no chain left), add of net2 writes net2's rules alone, as
    the plugin's ADD of net2 makes the chain: net1's, though cached, are the repair's to
    put back (check --repair), not add's. Before, iptables-legacy's add (which plans
    without reading the table) wrote net1's too, iptables-nft's (written ahead) did not."""
    if not rp.mode_available(mode)[0]:
        pytest.skip(rp.mode_available(mode)[1])
    cache = tmp_path / "multus"
    confs = {ifname: _conf(ifname, ip, ports) for ifname, ip, ports in ATTACHMENTS}
    for ifname, ip, ports in ATTACHMENTS:
        rp.write_cni_cache(cache, NETWORK, CID, ifname, confs[ifname], ports, [ip])
    rp.run_plugin("ADD", host_ns, CID, confs["net2"], mode=mode, ifname="net2", check=True)
    plugin = rp.nat_rules(rp.save(host_ns, 4, mode))
    rp.run_plugin("DEL", host_ns, CID, confs["net2"], mode=mode, ifname="net2", check=True)
    stdin = tmp_path / "net2.json"
    stdin.write_text(json.dumps(confs["net2"]))
    done = run(["add", "--container", CID, "--cni-config", str(stdin), "--ifname", "net2",
                "--netns", host_ns, "--iptables", mode, "--cni-cache-dir", str(cache),
                "--family", "4"])  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert rp.nat_rules(rp.save(host_ns, 4, mode)) == plugin


@pytest.mark.parametrize("command", ["check", "check-repair", "add"])
def test_a_second_interface_not_cached_yet_keeps_the_first_ones_rules(twice, tmp_path, command):
    """net2 given (--cni-config of its stdin, --ifname net2) while the cache holds net1's
    entry alone (libcni writes net2's after the whole ADD; a runtime that keeps no cache
    for it): check called net1's rules 'its config does not make' (exit 1), and --repair
    and add rewrote the chain to net2's rules alone, host port 8080 no longer forwarded,
    where the plugin's ADD of net2 appends to net1's rules and its CHECK passes."""
    host_ns, cache, confs = twice
    added = _rules(host_ns)
    os.unlink(cache / "results" / f"{NETWORK}-{CID}-net2")
    if command == "add":
        _add_net2(host_ns, cache, confs, tmp_path)
    else:
        repair = ["--repair"] if command == "check-repair" else []
        done = _pm(host_ns, cache, "check", *_net2_given(confs, tmp_path), *repair)
        assert done.returncode == 0, done.stdout + done.stderr
    assert _rules(host_ns) == added
    _plugin_checks(host_ns, confs)


def test_the_plugins_del_of_one_interface_is_repaired_for_the_other(twice):
    """The plugin's DEL of net1 deletes the whole chain, net2's rules with it (teardown
    by chain name; its CHECK of net2 fails after), and libcni drops net1's entry: check
    calls net2's chain missing, --repair makes it as the plugin's ADD of net2 alone
    would (its CHECK passes), and gc leaves the container's chain."""
    host_ns, cache, confs = twice
    rp.run_plugin("DEL", host_ns, CID, confs["net1"], mode="nft", ifname="net1", check=True)
    os.unlink(cache / "results" / f"{NETWORK}-{CID}-net1")
    assert not any(chain_name(NETWORK, CID) in r for r in _rules(host_ns))

    done = _pm(host_ns, cache, "check")
    assert done.returncode == 1
    assert [p["kind"] for p in json.loads(done.stdout)["problems"]] == ["missing-chain"]
    assert _pm(host_ns, cache, "check", "--repair").returncode == 0
    repaired = _rules(host_ns)
    _plugin_checks(host_ns, {"net2": confs["net2"]})
    done = _pm(host_ns, cache, "gc", "--yes", "--min-age", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _rules(host_ns) == repaired

    # The same as the plugin's ADD of net2 alone makes on a fresh node.
    rp.iptables(host_ns, ["-t", "nat", "-F"], mode="nft")
    rp.iptables(host_ns, ["-t", "nat", "-X"], mode="nft")
    rp.run_plugin("ADD", host_ns, CID, confs["net2"], mode="nft", ifname="net2", check=True)
    assert _rules(host_ns) == repaired


def _libcni_0_7_entry(cache: Path, network: str, cid: str, ip: str, netns: str) -> Path:
    """What libcni v0.7.x (containerd 1.2, CRI-O 1.14, podman 1.x) cached after an ADD:
    the list's result alone, json.Marshal of types/current.Result (no `kind`, no config,
    no capability args; libcni's getCachedResult still reads it as a legacy result)."""
    result = {
        "cniVersion": "0.4.0",
        "interfaces": [
            {"name": "cni0", "mac": "02:00:00:00:00:01"},
            {"name": "veth0", "mac": "02:00:00:00:00:02"},
            {"name": "eth0", "mac": "02:00:00:00:00:03", "sandbox": netns},
        ],
        "ips": [{"version": "4", "interface": 2, "address": ip, "gateway": "10.88.0.1"}],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {},
    }
    path = cache / "results" / f"{network}-{cid}-eth0"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, separators=(",", ":")))
    return path


def test_a_libcni_0_7_entry_of_the_result_alone_is_live_without_a_warning(host_ns, tmp_path):
    """libcni before v0.8 cached the ADD result alone, and nodes of that era still have
    such entries (libcni reads them to this day). portmapctl took each for a file it
    cannot read: list, check and gc warned at every run ('unknown kind None'), the
    metrics counted a warning every run, and the entry's namespace was never judged, so
    a container its runtime forgot was never a zombie. Now the entry keeps its
    container live by its name, as libcni names it, its namespace judged, nothing
    compared (its config is not in it: check says so, not as a warning), no warning."""
    if not rp.mode_available("nft")[0]:
        pytest.skip(rp.mode_available("nft")[1])
    ctr = f"/run/netns/{rp.create_netns('pmt-ctr')}"  # (its own: deleted below)
    rp.hold_addresses(ctr, ["10.88.0.5/16"])
    for cid, ip, port in (("old1", "10.88.0.5/16", 8080), ("gone1", "10.88.0.6/16", 8081)):
        conf = rp.plugin_conf("mynet", [ip], [rp.port_mapping(port, 80)])
        rp.run_plugin("ADD", host_ns, cid, conf, mode="nft", check=True)
    cache = tmp_path / "cni"
    _libcni_0_7_entry(cache, "mynet", "old1", "10.88.0.5/16", ctr)

    done = _pm(host_ns, cache, "list")
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr, done.stderr
    rows = {r["container_id"]: r["status"] for r in json.loads(done.stdout)["mappings"]}
    assert rows == {"old1": ["ok"], "gone1": ["stale"]}

    done = _pm(host_ns, cache, "check")
    assert "warning" not in done.stderr, done.stderr
    assert "libcni before v0.8" in done.stderr, done.stderr
    kinds = [(p["kind"], p["container_id"]) for p in json.loads(done.stdout)["problems"]]
    assert kinds == [("stale", "gone1")], done.stdout

    done = _pm(host_ns, cache, "gc", "--yes", "--min-age", "0")
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr, done.stderr
    assert [r["container_id"] for r in json.loads(done.stdout)["removed"]] == ["gone1"]
    assert chain_name("mynet", "old1") in rp.save(host_ns, 4, "nft")

    # Its runtime forgot it (the namespace is gone): a zombie, as a cniCacheV1 entry is.
    rp.delete_netns(os.path.basename(ctr))
    done = _pm(host_ns, cache, "list")
    assert done.returncode == 0, done.stderr
    rows = {r["container_id"]: r["status"] for r in json.loads(done.stdout)["mappings"]}
    assert rows == {"old1": ["zombie"]}, done.stdout
    done = _pm(host_ns, cache, "gc", "--yes", "--min-age", "0", "--netns-liveness")
    assert done.returncode == 0, done.stderr
    assert [r["container_id"] for r in json.loads(done.stdout)["removed"]] == ["old1"]


@pytest.mark.parametrize("port", [8080, 8081], ids=["same", "another-port"])
def test_add_of_the_interface_whose_own_entry_cannot_be_read_does_as_the_plugins_add(
    twice_in, tmp_path, port
):
    """net1's OWN entry cut short (net2's read), add of net1's mapping (--ifname net1):
    given another port, add stopped (exit 3, ChainInDoubt) for the chain's 8080 rules
    that no entry read makes, though net2's are known from its entry: they are net1's
    own (its earlier ADD), nothing of another interface's. Given the same, it rewrote
    the chain, net1's rules moved behind net2's. Now as the plugin's ADD of net1: what
    the chain holds stays in place, what it lacks is appended; the plugin's ADD after
    it changes nothing, and its CHECK of each passes."""
    host_ns, cache, confs, mode = twice_in
    added = _rules(host_ns, mode)
    rp.cut_short(cache / "results", NETWORK, CID, "net1")
    confs = {**confs, "net1": _conf("net1", "10.77.0.5/16", [rp.port_mapping(port, 80)])}
    done = _add(host_ns, cache, confs, tmp_path, mode)
    assert done.returncode == 0, done.stdout + done.stderr
    after = _rules(host_ns, mode)
    assert [r for r in after if r in added] == added, after  # all kept, in their order
    new = [r for r in after if r not in added]  # only the new port's, each after them
    assert all(f"--dport {port} " in r or f"--dports {port} " in r for r in new), new
    rp.run_plugin("ADD", host_ns, CID, confs["net1"], mode=mode, ifname="net1", check=True)
    assert _rules(host_ns, mode) == after, "the plugin's ADD of net1 found more to write"
    _plugin_checks(host_ns, confs, mode)
    if port == 8080:
        assert after == added, after


_OWN_UNREAD = {"another-port": (8081, None), "net1-lost": (8080, "net1"),
               "net2-lost": (8080, "net2"), "emptied": (8080, "-F"),
               "flushed": (8080, "-F -X")}  # fmt: skip


@pytest.mark.parametrize("case", sorted(_OWN_UNREAD))
def test_one_mapping_repair_of_the_interface_whose_own_entry_cannot_be_read(
    twice_in, tmp_path, case
):
    """net1's OWN entry cut short (net2's read), `check --repair` of net1's mapping
    (--ifname net1): the chain is judged against the mapping given and net2's entry
    (stop_where_held). Given another port, the chain holds net1's 8080 rules that
    neither makes (its earlier ADD's, its cached state not known): it stops, exit 3, one
    line naming the entry, nothing written. Given the same port, the chain holding
    nothing more (net1's or net2's DNAT rule lost, or the chain emptied by `-F`), it
    writes the chain from the two: the lost rule back, every rule the two ADDs made
    there, exit 1 naming the entry (its rules are not known), and a second repair
    writes nothing. With no chain left (`-F; -X`) it stops before that, exit 3: its own
    entry may say "nftables", and nothing in either backend tells where its plugin
    keeps it; `--backend iptables` given, it makes the chain from the two. docs/
    guarantees.md said it "still stops there" of every case."""
    host_ns, cache, confs, mode = twice_in
    added = _rules(host_ns, mode)
    port, lost = _OWN_UNREAD[case]
    rp.cut_short(cache / "results", NETWORK, CID, "net1")
    if lost and lost.startswith("-"):
        for flag in lost.split():
            rp.iptables(host_ns, ["-t", "nat", flag], mode=mode)
    elif lost:
        _delete_dnat(host_ns, lost, mode)
    before = _rules(host_ns, mode)
    confs = {**confs, "net1": _conf("net1", "10.77.0.5/16", [rp.port_mapping(port, 80)])}
    one = ("check", *_given(confs, tmp_path, "net1"), "--repair")

    done = _pm(host_ns, cache, *one, mode=mode)
    if port != 8080:
        _stopped_for_the_unread_entry(done, "net1")
    elif case == "flushed":
        assert done.returncode == 3, done.stdout + done.stderr
        assert "in iptables or in nftables cannot be told" in done.stderr, done.stderr
    if port != 8080 or case == "flushed":
        assert _rules(host_ns, mode) == before, "the repair wrote"
        if case != "flushed":
            return
        one = (*one, "--backend", "iptables")  # said where: made from the two
        done = _pm(host_ns, cache, *one, mode=mode)
    _unread_left_after(done, "net1")
    rules = _rules(host_ns, mode)
    assert rules != before and sorted(rules) == sorted(added), rules
    _plugin_checks(host_ns, confs, mode)
    _unread_left_after(_pm(host_ns, cache, *one, mode=mode), "net1")
    assert _rules(host_ns, mode) == rules, "a second repair wrote again"


@pytest.mark.parametrize("lost", ["net1", "net2"])
def test_one_mapping_repair_of_the_interface_whose_own_entry_cannot_be_read_keeps_the_adds_order(
    twice_in, tmp_path, lost
):
    """net1's OWN entry cut short (net2's read), `lost`'s DNAT rule deleted, `check
    --repair` of net1's mapping with its same port: it rebuilt the chain with net2's
    rules first and net1's after (net1's mapping put last, as the newest ADD, its own
    entry not read), moving rules that were not broken, where the plugin's ADDs (net1,
    then net2) wrote net1's first. Now the chain is as the two ADDs left it before the
    loss: the rules that survived in their order, the lost one back in its place; a
    second repair writes nothing, and the plugin's CHECK of each interface passes."""
    host_ns, cache, confs, mode = twice_in
    added = _rules(host_ns, mode)
    rp.cut_short(cache / "results", NETWORK, CID, "net1")
    _delete_dnat(host_ns, lost, mode)
    before = _rules(host_ns, mode)
    assert [r for r in added if r in before] == before and len(before) == len(added) - 1
    one = ("check", *_given(confs, tmp_path, "net1"), "--repair")

    _unread_left_after(_pm(host_ns, cache, *one, mode=mode), "net1")
    rules = _rules(host_ns, mode)
    assert rules == added, "\n".join(["the ADDs' order:", *added, "after the repair:", *rules])
    _plugin_checks(host_ns, confs, mode)
    _unread_left_after(_pm(host_ns, cache, *one, mode=mode), "net1")
    assert _rules(host_ns, mode) == rules, "a second repair wrote again"


def _dnat6_of(ns: str, port: int) -> Optional[str]:
    """Where the kernel DNATs a TCP connection from the node to its own [fd00::1]:port
    (the reply source of its conntrack entry), None where nothing DNATs it: the node
    refuses it itself, no entry left."""
    for args in (["link", "add", "d0", "type", "veth", "peer", "name", "d0p"],
                 ["link", "set", "d0", "up"], ["link", "set", "d0p", "up"],
                 ["link", "set", "lo", "up"], ["addr", "replace", "fd77::1/64", "dev", "d0", "nodad"],
                 ["addr", "replace", "fd00::1/128", "dev", "lo"]):  # fmt: skip
        subprocess.run(["ip", "-n", ns, *args], capture_output=True, check=False)
    script = f"exec 3<>/dev/tcp/fd00::1/{port}"
    subprocess.run(["ip", "netns", "exec", ns, "timeout", "1", "bash", "-c", script],
                   capture_output=True, check=False)  # fmt: skip
    listed = subprocess.run(["ip", "netns", "exec", ns, "conntrack", "-L", "-f", "ipv6", "-p",
                             "tcp", "--dport", str(port), "--dst", "fd00::1"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    found = [w.split("=")[1] for w in listed.split() if w.startswith("src=")]
    return found[1] if len(found) > 1 else None


def test_legacy_ipv6_second_interfaces_rules_the_plugin_left_out_are_missing_and_repaired(
    host_ns, tmp_path
):
    """A dual-stack pod on one network twice, Debian's plugin on iptables-legacy: net2's
    ADD leaves net2's IPv6 rules out (its mark and DNAT rules and its entry rule), where
    on iptables-nft it appends them. Not the plugin's design: go-iptables' AppendUnique
    and InsertUnique ask `-C` first, and ip6tables-legacy 1.8.9's `-C` compares the
    rule's header and its matches' and target's names but not their data (FACTS.md:
    it ignores the port match; here the DNAT target's address too), so each of net2's
    IPv6 rules "exists" as net1's. The state is broken for traffic: [host]:9090 over
    IPv6 is not DNATed (the node refuses it itself), 8080 is. So check must say them
    missing, with --repair, though the plugin's CHECK (the same `-C`) passes; the
    repair writes them and the port is forwarded to net2's [fd77::6]:90."""
    cache, confs = _attach_twice(host_ns, tmp_path, "legacy", dual=True)
    v6 = rp.nat_rules(rp.save(host_ns, 6, "legacy"))
    if any("9090" in rule for rule in v6):
        # An ip6tables-legacy whose -C tells the rules apart (not a skip: .ci/run allows
        # none): the plugin wrote net2's IPv6 rules, the port is forwarded, and check
        # finds nothing to say.
        assert _dnat6_of(host_ns, 9090) == "fd77::6"
        assert _pm(host_ns, cache, "check", mode="legacy").returncode == 0
        return
    assert _dnat6_of(host_ns, 8080) == "fd77::5"
    assert _dnat6_of(host_ns, 9090) is None  # not forwarded
    # The plugin's CHECK passes all the same (the same `-C`; IPv6 alone: FACTS.md).
    _plugin_checks(host_ns, {i: rp.narrow_conf(c, 6) for i, c in confs.items()}, "legacy")

    done = _pm(host_ns, cache, "check", mode="legacy")
    rows = [(p["kind"], p["family"], bool(p["fix"])) for p in json.loads(done.stdout)["problems"]]
    assert sorted(rows) == [("missing-entry", 6, True), ("missing-rules", 6, True)], rows
    assert done.returncode == 1

    done = _pm(host_ns, cache, "check", "--repair", mode="legacy")
    assert done.returncode == 0, done.stdout + done.stderr
    assert [r for r in rp.nat_rules(rp.save(host_ns, 6, "legacy")) if r not in v6] == [
        f"-A {chain_name(NETWORK, CID)} -s fd77::/64 -p tcp -m tcp --dport 9090 -j CNI-HOSTPORT-SETMARK",
        f"-A {chain_name(NETWORK, CID)} -p tcp -m tcp --dport 9090 -j DNAT --to-destination [fd77::6]:90",
        f'-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \\"{NETWORK}\\" id: '
        f'\\"{CID}\\"" -m multiport --dports 9090 -j {chain_name(NETWORK, CID)}',
    ]  # fmt: skip
    assert _dnat6_of(host_ns, 9090) == "fd77::6"
    assert _pm(host_ns, cache, "check", mode="legacy").returncode == 0
    # (IPv6 alone: Debian's CHECK looks in both families, FACTS.md)
    _plugin_checks(host_ns, {i: rp.narrow_conf(c, 6) for i, c in confs.items()}, "legacy")
