"""One container on two networks that map the same host port (podman allows it: each
network's ADD gives the container a chain, net1's entry rule first), against the real
plugins: Debian's on both iptables flavours, v1.9.1 under `"backend": "nftables"`.

SPEC §3: a container on several networks is not shadowing itself. A repair that puts
back net1's lost rule gives the port back to the container's net1 address from its own
net2 address: that is the plugin's own state (its re-ADD, which `podman network
reload` runs, does the same), not a port moved to another container, which a repair
still never does (ops/check/port_moves.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import pmctl
import pytest
import realplugin as rp
import upstream
from realplugin import require

from portmapctl.iptables.chains import chain_name

CTR = "ctr1"
OTHER = "ctr2"
PORTS = [rp.port_mapping(6001, 6001, "udp")]
NETS = {"net1": ("10.88.0.5/16", "eth0"), "net2": ("10.89.0.5/16", "eth1")}
DN1 = "CNI-DN-85373d34c6846b6c53ee2"  # chain_name("net1", "ctr1")
DNAT1 = ["-p", "udp", "-m", "udp", "--dport", "6001", "-j", "DNAT",
         "--to-destination", "10.88.0.5:6001"]  # fmt: skip
ENTRY1 = ["-p", "udp", "-m", "comment", "--comment", 'dnat name: "net1" id: "ctr1"',
          "-m", "multiport", "--dports", "6001", "-j", DN1]  # fmt: skip


def _conf(network: str, ip: str, ifname: str, nft: bool) -> Dict[str, Any]:
    conf = (upstream.nft_conf if nft else rp.plugin_conf)(network, [ip], PORTS)
    # The plugin takes the addresses of CNI_IFNAME's interface only: net2's is eth1.
    conf["prevResult"]["interfaces"][0]["name"] = ifname
    return conf


def _plugin(command: str, ns: str, cid: str, network: str, mode: str, cache=None):
    """The plugin's `command` for `cid` on `network` (Debian's in iptables flavour
    `mode`, or v1.9.1 when `mode` is "nftables"); with `cache`, libcni's entry too."""
    ip, ifname = NETS[network] if cid == CTR else ("10.90.0.6/16", "eth0")
    nft = mode == "nftables"
    conf = _conf(network, ip, ifname, nft)
    if nft:
        done = upstream.run("v1.9.1", command, ns, cid, conf, ifname=ifname)
    else:
        family = 4 if command == "CHECK" else None
        done = rp.run_plugin(command, ns, cid, conf, mode=mode, family=family, ifname=ifname)
    if cache is not None:
        rp.write_cni_cache(cache, network, cid, ifname, conf, PORTS, [ip])
        rp.hold_addresses(rp.container_netns(), [ip])
    return done


def _node(ns: str, mode: str, cache: Path, order=(("net1", CTR), ("net2", CTR))) -> None:
    if mode == "nftables":
        require(upstream.available())
    require(rp.plugin_available())
    for network, cid in order:
        done = _plugin("ADD", ns, cid, network, mode, cache)
        assert done.returncode == 0, done.stdout + done.stderr


def _state(ns: str, mode: str) -> List[str]:
    if mode == "nftables":
        return upstream.ruleset_text(ns).splitlines()
    return rp.nat_rules(rp.save(ns, 4, mode))


def _args(ns: str, mode: str, cache: Path) -> List[str]:
    chosen = ["--backend", "nftables"] if mode == "nftables" else ["--iptables", mode]
    return ["--netns", ns, *chosen, "--cni-cache-dir", str(cache), "--no-flush-udp"]


def _one_mapping(network: str) -> List[str]:
    ip, ifname = NETS[network]
    return ["--network", network, "--container", CTR, "--ip", ip, "-p", "6001:6001/udp",
            "--ifname", ifname]  # fmt: skip


@pytest.mark.parametrize("form", ["node", "mapping"])
def test_repair_puts_back_the_lost_dnat_rule_of_a_container_on_two_networks(
    host_ns: str, iptables_mode: rp.Mode, tmp_path: Path, form: str
) -> None:
    """Debian's ADDs of ctr1 on net1 then net2, both udp/6001; net1's DNAT rule
    deleted by hand, so net2's chain gets the port (the plugin's CHECK of net1 fails).
    Before, `check --repair` refused: "its chain would take udp/6001 from net2/ctr1
    ...; a repair never moves a port between mappings", exit 1. Now it puts the rule
    back: the table is what the plugin wrote, its CHECK passes for both networks, and
    its re-ADD of net1 changes nothing."""
    _node(host_ns, iptables_mode, tmp_path)
    healthy = _state(host_ns, iptables_mode)
    rp.iptables(host_ns, ["-t", "nat", "-D", DN1, *DNAT1], mode=iptables_mode)
    assert _plugin("CHECK", host_ns, CTR, "net1", iptables_mode).returncode != 0
    args = _args(host_ns, iptables_mode, tmp_path)
    given = _one_mapping("net1") if form == "mapping" else []

    done = pmctl.run(["check", "--repair", *args, *given, "-o", "json"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["repaired"] and "could not repair" not in done.stderr
    assert _state(host_ns, iptables_mode) == healthy
    for network in NETS:
        checked = _plugin("CHECK", host_ns, CTR, network, iptables_mode)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    assert _plugin("ADD", host_ns, CTR, "net1", iptables_mode).returncode == 0
    assert _state(host_ns, iptables_mode) == healthy
    assert pmctl.run(["check", *args[:-1]]).returncode == 0


def test_repair_still_never_takes_the_port_from_another_container(
    host_ns: str, iptables_mode: rp.Mode, tmp_path: Path
) -> None:
    """ctr1 on net1, then ctr2 on net3, then ctr1 on net2, all udp/6001; net1's DNAT
    rule lost, so ctr2 gets the port: putting it back would take it from ctr2, another
    container. Left as it is and said (ctr1's own net2 chain behind changes nothing)."""
    order = (("net1", CTR), ("net3", OTHER), ("net2", CTR))
    _node(host_ns, iptables_mode, tmp_path, order)
    rp.iptables(host_ns, ["-t", "nat", "-D", DN1, *DNAT1], mode=iptables_mode)
    damaged = _state(host_ns, iptables_mode)
    done = pmctl.run(["check", "--repair", *_args(host_ns, iptables_mode, tmp_path)])
    assert done.returncode == 1, done.stdout + done.stderr
    assert "could not repair IPv4 net1/ctr1" in done.stderr
    assert "would take udp/6001 from net3/ctr2" in done.stderr
    assert _state(host_ns, iptables_mode) == damaged


def test_a_lost_entry_rule_comes_back_where_the_plugins_re_add_puts_it(
    host_ns: str, iptables_mode: rp.Mode, tmp_path: Path
) -> None:
    """net1's entry rule deleted instead: the repair appends it (behind net2's, which
    keeps the port), as the plugin's re-ADD does; its CHECK passes, and its re-ADD
    changes nothing."""
    _node(host_ns, iptables_mode, tmp_path)
    rp.iptables(host_ns, ["-t", "nat", "-D", "CNI-HOSTPORT-DNAT", *ENTRY1], mode=iptables_mode)
    done = pmctl.run(["check", "--repair", *_args(host_ns, iptables_mode, tmp_path)])
    assert done.returncode == 0, done.stdout + done.stderr
    repaired = _state(host_ns, iptables_mode)
    entries = [line for line in repaired if line.startswith("-A CNI-HOSTPORT-DNAT")]
    assert ["net2" in entries[0], "net1" in entries[1]] == [True, True]
    assert _plugin("CHECK", host_ns, CTR, "net1", iptables_mode).returncode == 0
    assert _plugin("ADD", host_ns, CTR, "net1", iptables_mode).returncode == 0
    assert _state(host_ns, iptables_mode) == repaired


def test_nftables_repair_puts_back_a_two_network_containers_lost_rule(
    host_ns: str, tmp_path: Path
) -> None:
    """v1.9.1 under "backend": "nftables": both rules in `hostports` carry the bare
    container ID; net1's deleted. The repair appends it again, as the plugin's re-ADD
    of net1 does (and v1.9.1's CHECK passes before and after)."""
    _node(host_ns, "nftables", tmp_path)
    lost = next(
        r for r in json.loads(upstream.ruleset_json(host_ns))["nftables"]
        if "rule" in r and r["rule"]["chain"] == "hostports"
        and "10.88.0.5" in json.dumps(r["rule"]["expr"])
    )["rule"]  # fmt: skip
    upstream.nft(host_ns, "delete", "rule", "ip", "cni_hostport", "hostports",
                 "handle", str(lost["handle"]))  # fmt: skip
    args = _args(host_ns, "nftables", tmp_path)
    done = pmctl.run(["check", "--repair", *args])
    assert done.returncode == 0, done.stdout + done.stderr
    text = upstream.ruleset_text(host_ns)
    rules = [line.strip() for line in text.splitlines() if "dnat to" in line]
    assert rules == [
        'udp dport 6001 dnat to 10.89.0.5:6001 comment "ctr1"',
        'udp dport 6001 dnat to 10.88.0.5:6001 comment "ctr1"',
    ]
    for network in NETS:
        assert _plugin("CHECK", host_ns, CTR, network, "nftables").returncode == 0


@pytest.mark.parametrize("mode", ["nft", "legacy", "nftables"])
def test_add_of_a_two_network_container_changes_nothing(
    host_ns: str, tmp_path: Path, mode: str
) -> None:
    """`add` of what the plugin made, per network, on the healthy node: changed false,
    the table as it was (idempotent, SPEC §3)."""
    if mode != "nftables":
        require(rp.mode_available(mode))
    _node(host_ns, mode, tmp_path)
    healthy = _state(host_ns, mode)
    for network in NETS:
        done = pmctl.run(["add", *_args(host_ns, mode, tmp_path), *_one_mapping(network),
                          "-o", "json"])  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["changed"] is False
    assert _state(host_ns, mode) == healthy


@pytest.mark.parametrize("form", ["node", "mapping"])
def test_a_stale_chain_of_the_same_container_id_whose_address_went_to_another_is_a_holder(
    host_ns: str, iptables_mode: rp.Mode, tmp_path: Path, form: str
) -> None:
    """ctr1 on net1 (cached), ctr1 on net2 (its cache entry gone, its DEL never ran:
    a stale chain DNATing to 10.89.0.5), then ctr2 on net2 given that address again,
    mapping udp/6001 too (cached); net1's DNAT rule lost. The port's traffic goes
    through ctr1's stale net2 chain to 10.89.0.5: to ctr2. Putting net1's rule back
    takes it from ctr2, another container; the stale chain's name says ctr1, but the
    cache does not say that chain is ctr1's now. Left as it is, as before the
    same-container exemption: "gc removes it, then repair"."""
    _node(host_ns, iptables_mode, tmp_path, (("net1", CTR),))
    assert _plugin("ADD", host_ns, CTR, "net2", iptables_mode).returncode == 0  # not cached
    ip, ifname = NETS["net2"]
    conf = _conf("net2", ip, ifname, False)
    done = rp.run_plugin("ADD", host_ns, OTHER, conf, mode=iptables_mode, ifname=ifname)
    assert done.returncode == 0, done.stdout + done.stderr
    rp.write_cni_cache(tmp_path, "net2", OTHER, ifname, conf, PORTS, [ip])
    rp.iptables(host_ns, ["-t", "nat", "-D", DN1, *DNAT1], mode=iptables_mode)
    damaged = _state(host_ns, iptables_mode)
    given = _one_mapping("net1") if form == "mapping" else []
    done = pmctl.run(["check", "--repair", *_args(host_ns, iptables_mode, tmp_path), *given])
    assert done.returncode == 1, done.stdout + done.stderr
    assert "could not repair IPv4 net1/ctr1" in done.stderr, done.stderr
    assert "would take udp/6001 from net2/ctr1" in done.stderr, done.stderr
    assert _state(host_ns, iptables_mode) == damaged


@pytest.mark.parametrize("form", ["mapping", "cni-config"])
def test_one_mapping_check_of_a_stale_container_offers_no_repair_that_would_take_a_port(
    host_ns: str, iptables_mode: rp.Mode, tmp_path: Path, form: str
) -> None:
    """Debian's ADDs of ctr1 on net1, then net2 (udp/6001 on each), neither cached (gone
    without its DEL: stale); net1's chain flushed, so net2's chain gets the port. The
    check of net1's mapping offered --repair (missing-rules) on every run, and `check
    --repair` refused it ("its chain would take udp/6001 from net2/ctr1 ...; a repair
    never moves a port between mappings"), writing nothing: a cron job's loop. net2's
    chain is stale (no cache entry names it: its address may be another container's
    now), so it keeps the port, and the check says what the repair will say."""
    require(rp.plugin_available())
    for network in NETS:
        done = _plugin("ADD", host_ns, CTR, network, iptables_mode)
        assert done.returncode == 0, done.stdout + done.stderr
    rp.iptables(host_ns, ["-t", "nat", "-F", DN1], mode=iptables_mode)
    damaged = _state(host_ns, iptables_mode)
    if form == "mapping":
        given = _one_mapping("net1")
    else:
        path = tmp_path / "net1.json"
        path.write_text(json.dumps(_conf("net1", *NETS["net1"], nft=False)))
        given = ["--container", CTR, "--cni-config", str(path), "--ifname", "eth0"]
    args = [*_args(host_ns, iptables_mode, tmp_path / "cache"), *given, "-o", "json"]
    held = "would take udp/6001 from net2/ctr1"
    for command in (["check"], ["check", "--repair"], ["check"]):
        done = pmctl.run([*command, *args])
        assert done.returncode == 1, done.stdout + done.stderr
        rows = json.loads(done.stdout)["problems"]
        assert [(p["kind"], p["fix"]) for p in rows] == [("missing-rules", None)], rows
        if command == ["check"]:
            # (before: its fix the command run again with --repair)
            assert f"--repair would leave it as it is: its chain {held}" in rows[0]["why"]
        else:
            assert f"could not repair IPv4 net1/ctr1 ({DN1}): its chain {held}" in done.stderr
            assert "could not repair" in rows[0]["why"], rows
        assert _state(host_ns, iptables_mode) == damaged


def _nft_add(ns: str, cid: str, network: str, ip: str, ifname: str, ports, cache=None) -> None:
    """v1.9.1's ADD (`"backend": "nftables"`) of `cid` on `network` with `ports`; with
    `cache`, libcni's entry too."""
    conf = upstream.nft_conf(network, [ip], ports)
    conf["prevResult"]["interfaces"][0]["name"] = ifname
    done = upstream.run("v1.9.1", "ADD", ns, cid, conf, ifname=ifname)
    assert done.returncode == 0, done.stdout + done.stderr
    if cache is not None:
        rp.write_cni_cache(cache, network, cid, ifname, conf, ports, [ip])
        rp.hold_addresses(rp.container_netns(), [ip])


def _nft_stale_node(ns: str, cache: Path, net1_ports: List[int]) -> List[str]:
    """ctr1 on net1 (10.88.0.5, `net1_ports`, udp, cached), ctr1 on net2 (10.89.0.5, the
    same ports, no cache entry: its DEL never ran), then ctr2 on net2 given 10.89.0.5
    again (udp/6001, cached); net1's 6001 rule deleted by handle. Returns hostports's
    DNAT rules as they are then."""
    require(upstream.available())
    mine = [rp.port_mapping(p, p, "udp") for p in net1_ports]
    _nft_add(ns, CTR, "net1", *NETS["net1"], mine, cache)
    _nft_add(ns, CTR, "net2", *NETS["net2"], mine)
    _nft_add(ns, OTHER, "net2", NETS["net2"][0], "eth0", PORTS, cache)
    lost = next(
        r for r in json.loads(upstream.ruleset_json(ns))["nftables"]
        if "rule" in r and r["rule"]["family"] == "ip" and r["rule"]["chain"] == "hostports"
        and "10.88.0.5" in json.dumps(r["rule"]["expr"])
        and '"right": 6001' in json.dumps(r["rule"]["expr"])
    )["rule"]  # fmt: skip
    upstream.nft(ns, "delete", "rule", "ip", "cni_hostport", "hostports",
                 "handle", str(lost["handle"]))  # fmt: skip
    return _nft_dnat_rules(ns)


def _nft_dnat_rules(ns: str) -> List[str]:
    return [line.strip() for line in upstream.ruleset_text(ns).splitlines() if "dnat to" in line]


@pytest.mark.parametrize("form", ["node", "mapping"])
def test_nftables_a_stale_rule_of_the_same_container_id_is_a_holder(
    host_ns: str, tmp_path: Path, form: str
) -> None:
    """The nftables analogue of the iptables case above (v1.9.1, whose rules carry the
    bare container ID, no network): ctr1 maps udp/6001 and 6002 on net1 (cached) and on
    net2 (stale), ctr2 udp/6001 at ctr1's old net2 address; net1's 6001 rule lost.
    udp/6001 goes through ctr1's stale rule to 10.89.0.5: to ctr2. Before, both forms
    put net1's rule back before its 6002 rule (the plugin's order), ahead of the stale
    rule and ctr2's: udp/6001 went to ctr1 (the node form deleted the stale rules too;
    the one-mapping form said "healthy", exit 0). v1.9.1's re-ADD of net1 appends
    instead, behind them, and moves nothing. Now the family is left as it is, said."""
    damaged = _nft_stale_node(host_ns, tmp_path, [6001, 6002])
    assert damaged[1] == 'udp dport 6001 dnat to 10.89.0.5:6001 comment "ctr1"', damaged
    given = ["--network", "net1", "--container", CTR, "--ip", NETS["net1"][0],
             "-p", "6001:6001/udp", "-p", "6002:6002/udp", "--ifname", "eth0"]  # fmt: skip
    args = _args(host_ns, "nftables", tmp_path)
    done = pmctl.run(["check", "--repair", *args, *(given if form == "mapping" else [])])
    assert done.returncode == 1, done.stdout + done.stderr
    assert "could not repair IPv4 net1/ctr1 (hostports)" in done.stderr, done.stderr
    assert "would take udp/6001 from ctr1's rule for 10.89.0.5 (hostports)" in done.stderr
    assert "no CNI cache entry read of ctr1 has 10.89.0.5" in done.stderr
    assert _nft_dnat_rules(host_ns) == damaged


@pytest.mark.parametrize("form", ["node", "mapping"])
def test_nftables_a_lost_rule_is_appended_behind_a_stale_one_as_the_plugins_re_add_does(
    host_ns: str, tmp_path: Path, form: str
) -> None:
    """The same node with net1 mapping udp/6001 alone: the repair appends net1's rule
    (passed before too), where v1.9.1's re-ADD of net1 puts it: behind ctr1's stale rule
    and ctr2's, so udp/6001 still goes to 10.89.0.5 (ctr2), nothing taken. Neither form
    deletes ctr1's stale DNAT rule: it sends into no subnet of ctr1's cached entries
    (net2's entry of ctr1 is gone), so it could be the live rule of a network whose
    entry is not read (61f167a): kept, reported unclaimed. v1.9.1's CHECK of net1
    passes after."""
    damaged = _nft_stale_node(host_ns, tmp_path, [6001])
    args = _args(host_ns, "nftables", tmp_path)
    done = pmctl.run(["check", "--repair", *args,
                      *(_one_mapping("net1") if form == "mapping" else [])])  # fmt: skip
    assert "could not repair IPv4 net1/ctr1" not in done.stderr, done.stderr
    after = _nft_dnat_rules(host_ns)
    assert after[-1] == 'udp dport 6001 dnat to 10.88.0.5:6001 comment "ctr1"', after
    assert "10.89.0.5:6001" in after[0], after
    assert after[:-1] == damaged
    assert _plugin("CHECK", host_ns, CTR, "net1", "nftables").returncode == 0


def test_a_network_whose_chain_tells_the_key_ignored_is_offered_what_its_repair_makes(
    host_ns: str, iptables_mode: rp.Mode, tmp_path: Path
) -> None:
    """Debian's 1.1.1 ADDs of ctr1 on net1 and net2 under `"backend": "nftables"`, a key
    it ignores (its chains in iptables), cached so; then `iptables -t nat -F` and
    net1's chain deleted: nothing of net1's entry is left (its backend in doubt), while
    net2's chain, empty, is still there (followed to iptables). The check gave net2's
    rows no fix ("which backend its plugin keeps it in cannot be told ... nothing is
    written or removed for it": the doubt was judged by container ID), while `check
    --repair` made them (its `fixed` rows): what it makes was not offered. Each network's
    entry is judged apart: net2's rows name --repair, net1's none, and the repair makes
    net2's alone."""
    require(rp.plugin_available())
    for network, (ip, ifname) in NETS.items():
        conf = {**_conf(network, ip, ifname, nft=False), "backend": "nftables"}
        done = rp.run_plugin("ADD", host_ns, CTR, conf, mode=iptables_mode, ifname=ifname)
        assert done.returncode == 0, done.stdout + done.stderr
        rp.write_cni_cache(tmp_path, network, CTR, ifname, conf, PORTS, [ip])
        rp.hold_addresses(rp.container_netns(), [ip])
    rp.iptables(host_ns, ["-t", "nat", "-F"], mode=iptables_mode)
    rp.iptables(host_ns, ["-t", "nat", "-X", DN1], mode=iptables_mode)
    args = ["--netns", host_ns, "--iptables", iptables_mode, "--cni-cache-dir", str(tmp_path)]

    def offered(done) -> List[tuple]:
        assert done.returncode == 1, done.stdout + done.stderr
        rows = json.loads(done.stdout)["problems"]
        return sorted((p["kind"], p["network"]) for p in rows if p["fix"] and p["network"])

    checked = pmctl.run(["check", *args, "-o", "json"])
    assert "net1/ctr1" in checked.stderr and "cannot be told" in checked.stderr, checked.stderr
    assert offered(checked) == [("missing-entry", "net2"), ("missing-rules", "net2")]
    done = pmctl.run(["check", "--repair", "--no-flush-udp", *args, "-o", "json"])
    fixed = json.loads(done.stdout)["fixed"]
    assert sorted((p["kind"], p["network"]) for p in fixed if p["network"]) == offered(checked)
    assert offered(done) == []
    saved = rp.save(host_ns, 4, iptables_mode)
    assert DN1 not in saved and chain_name("net2", CTR) in saved
