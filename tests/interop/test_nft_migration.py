"""A node in the middle of a migration: containers made by Debian's 1.1.1 and the
upstream plugins, in iptables and in nftables, in one namespace, their cache entries
each saying the config they were added with (most without a `backend` key).

Each test plays such a node in a fresh namespace and runs `portmapctl` as a process
with `--netns`; the real plugins judge the result (CHECK).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence, Tuple

import pmctl
import pytest
import realplugin as rp
import upstream
from sigterm_helpers import killed_while_writing

from portmapctl.iptables.chains import chain_name

pytestmark = pytest.mark.netns

V191 = "v1.9.1"
_pm = rp.port_mapping


@pytest.fixture(autouse=True)
def _upstream_binaries() -> None:
    rp.require(upstream.available())


@pytest.fixture
def node() -> Iterator[str]:
    name = rp.create_netns("pmt-migr")
    try:
        yield name
    finally:
        rp.delete_netns(name)


def _pmctl(ns: str, cache: Path, *args: str):
    return pmctl.run([*args, "--netns", ns, "--cni-cache-dir", str(cache)])


def _cached(cache: Path, cid: str, conf: Dict[str, Any]) -> Dict[str, Any]:
    ports = conf["runtimeConfig"]["portMappings"]
    ips = [ip["address"] for ip in conf["prevResult"]["ips"]]
    rp.write_cni_cache(cache, "podman", cid, "eth0", conf, ports, ips)
    return conf


def _keyless_iptables_node(ns: str, cache: Path) -> Dict[str, Dict[str, Any]]:
    """Before the switch: deb1 by Debian's 1.1.1 and up1 by v1.9.1 without a `backend`
    key (both in iptables); after it: nft1 by v1.9.1 with `"backend": "nftables"`."""
    deb = rp.plugin_conf("podman", ["10.88.0.11/16"], [_pm(8001, 80), _pm(5001, 53, "udp")])
    rp.run_plugin("ADD", ns, "deb1", deb, check=True)
    up = upstream.nft_conf("podman", ["10.88.0.12/16"], [_pm(8002, 80)], backend=None)
    upstream.run(V191, "ADD", ns, "up1", up, check=True)
    nft = upstream.nft_conf("podman", ["10.88.0.21/16"], [_pm(8011, 80)])
    upstream.run(V191, "ADD", ns, "nft1", nft, check=True)
    return {cid: _cached(cache, cid, conf) for cid, conf in (("deb1", deb), ("up1", up),
                                                             ("nft1", nft))}  # fmt: skip


def _plugin_tables(ns: str) -> str:
    """The plugin's IPv4 table (these containers have no IPv6 address)."""
    return upstream.nft(ns, "list", "table", "ip", "cni_hostport").stdout


def test_backend_nftables_never_expects_or_writes_nft_rules_for_keyless_iptables_containers(
    node: str, tmp_path: Path
) -> None:
    """--backend nftables narrows what is looked at. A cached config without a `backend`
    key is the plugin's iptables wherever iptables works (its rules are there), so it is
    expected in nftables only when its rules are there. 0.1 took --backend for the key:
    check said deb1 and up1 had their nftables rules missing, and --repair wrote them
    (their ports then mapped twice; the plugin's DEL, in iptables, leaves them behind)."""
    confs = _keyless_iptables_node(node, tmp_path)
    before = _plugin_tables(node)
    done = _pmctl(node, tmp_path, "check", "--backend", "nftables", "-o", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["problems"] == []
    # Healthy, and said to be of nftables' part alone: deb1 and up1 were not checked.
    [note] = [line for line in done.stderr.splitlines() if "--backend nftables" in line]
    assert "2 cached containers are the plugin's iptables'" in note, note
    assert note.endswith("not checked"), note
    repaired = _pmctl(node, tmp_path, "check", "--backend", "nftables", "--repair", "-o", "json")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert json.loads(repaired.stdout)["repaired"] is False
    assert _plugin_tables(node) == before
    # Its own copy still counts: nft1's lost rule is missing, and put back alone.
    upstream.nft(node, "flush", "chain", "ip", "cni_hostport", "hostports")
    broken = _pmctl(node, tmp_path, "check", "--backend", "nftables", "-o", "json")
    assert broken.returncode == 1
    problems = json.loads(broken.stdout)["problems"]
    assert {(p["kind"], p["container_id"]) for p in problems} == {("nft-missing-rules", "nft1")}
    fixed = _pmctl(node, tmp_path, "check", "--backend", "nftables", "--repair")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert _plugin_tables(node) == before
    healthy = _pmctl(node, tmp_path, "check", "-o", "json")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    upstream.run(V191, "CHECK", node, "up1", confs["up1"], check=True)
    upstream.run(V191, "CHECK", node, "nft1", confs["nft1"], check=True)
    for result in rp.run_check(node, "deb1", confs["deb1"]):
        assert result.returncode == 0, result.stdout + result.stderr


def test_add_of_a_keyless_config_where_there_is_no_iptables_writes_what_the_plugin_does(
    node: str, tmp_path: Path
) -> None:
    """A node with nft and no iptables command: the plugin, given no `backend` key,
    takes nftables, and list, check and gc follow it there (--backend auto). add
    stopped instead ("no iptables command found", exit 3); it now writes the plugin's
    nftables rules, which the plugin's CHECK (run the same way) accepts."""
    nft_only = tmp_path / "bin"
    nft_only.mkdir()
    (nft_only / "nft").symlink_to(shutil.which("nft", path=rp.SYSTEM_PATH) or "/usr/sbin/nft")
    iptables = [p for p in ("/usr/sbin/iptables", "/usr/sbin/ip6tables") if os.path.exists(p)]
    hidden = {"env": {"PATH": str(nft_only)}, "hide": iptables}
    conf = upstream.nft_conf("podman", ["10.88.0.5/16"], [_pm(8080, 80)], backend=None)
    conf_file = tmp_path / "conf.json"
    conf_file.write_text(json.dumps(conf))
    args = ["--netns", node, "--cni-cache-dir", str(tmp_path / "cni")]
    done = pmctl.run(["add", "--container", "k1", "--cni-config", str(conf_file), *args, "-o",
                      "json"], **hidden)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["changed"] is True
    assert 'comment "k1"' in upstream.nft(node, "list", "table", "ip", "cni_hostport").stdout
    env = {
        "PATH": str(nft_only),
        "CNI_COMMAND": "CHECK",
        "CNI_CONTAINERID": "k1",
        "CNI_NETNS": rp.container_netns(),
        "CNI_IFNAME": "eth0",
        "CNI_PATH": rp.CNI_PATH,
    }
    checked = subprocess.run(
        [rp._ip(), "netns", "exec", node, str(upstream.binary(V191))],
        input=json.dumps(conf), env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # Nothing in iptables: the plugin's table there was never made.
    assert "CNI-" not in rp.save(node, 4)
    # Where iptables is, the same config still goes to iptables, as the plugin's does.
    done = pmctl.run(["add", "--container", "k2", "--cni-config", str(conf_file), *args])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "CNI-DN-" in rp.save(node, 4)


def test_check_says_when_the_plugin_will_look_for_a_keyless_containers_rules_elsewhere(
    node: str, tmp_path: Path
) -> None:
    """v1.9.1 without a `backend` key, run where iptables did not work, put auto1 in
    nftables. With iptables working, the plugin takes iptables for that config on every
    call: its CHECK fails and its DEL leaves the nftables rules. Those rules are auto1's
    and in place, so check stays healthy, and says so on stderr (it said nothing)."""
    no_iptables = tmp_path / "noipt"
    no_iptables.mkdir()
    for tool in ("iptables", "ip6tables"):
        (no_iptables / tool).symlink_to(shutil.which("false", path=rp.SYSTEM_PATH) or "/bin/false")
    conf = _cached(tmp_path, "auto1", upstream.nft_conf("podman", ["10.88.0.14/16"],
                                                       [_pm(8004, 80)], backend=None))  # fmt: skip

    def plugin(command: str, path: str) -> subprocess.CompletedProcess:
        env = {"PATH": path, "CNI_COMMAND": command, "CNI_CONTAINERID": "auto1",
               "CNI_NETNS": rp.container_netns(), "CNI_IFNAME": "eth0", "CNI_PATH": rp.CNI_PATH}  # fmt: skip
        return subprocess.run([rp._ip(), "netns", "exec", node, str(upstream.binary(V191))],
                              input=json.dumps(conf), env=env, capture_output=True, text=True)  # fmt: skip

    added = plugin("ADD", f"{no_iptables}:{rp.SYSTEM_PATH}")
    assert added.returncode == 0, added.stdout + added.stderr
    done = _pmctl(node, tmp_path, "check", "-o", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["problems"] == []
    [note] = [line for line in done.stderr.splitlines() if "auto1" in line]
    assert "CHECK fails" in note and "DEL leaves these rules" in note, note
    # What the note says, the plugin does.
    assert plugin("CHECK", rp.SYSTEM_PATH).returncode != 0
    assert plugin("DEL", rp.SYSTEM_PATH).returncode == 0
    assert 'comment "auto1"' in upstream.nft(node, "list", "table", "ip", "cni_hostport").stdout
    # A config that says nftables gets no such note.
    _cached(tmp_path, "auto1", {**conf, "backend": "nftables"})
    done = _pmctl(node, tmp_path, "check")
    assert done.returncode == 0 and "auto1" not in done.stderr, done.stderr


def test_repair_in_a_v171_table_passes_v171_check_again(node: str, tmp_path: Path) -> None:
    """A node whose plugin is still v1.7.1: its table has no hostports_all and its
    host-IP rules in hostip_hostports. check --repair of the container after its rules
    were flushed gives back exactly what v1.7.1 wrote, so v1.7.1's CHECK passes again
    (0.1 put the host-IP rule in hostports: the CHECK then failed, `missing hostport
    rules in "hostip_hostports" chain`)."""
    ports = [_pm(8011, 80), _pm(8012, 80, host_ip="127.0.0.1")]
    conf = _cached(tmp_path, "n17", upstream.nft_conf("podman", ["10.88.0.21/16"], ports))
    upstream.run("v1.7.1", "ADD", node, "n17", conf, check=True)
    before = _plugin_tables(node)
    for chain in ("hostports", "hostip_hostports"):
        upstream.nft(node, "flush", "chain", "ip", "cni_hostport", chain)
    assert upstream.run("v1.7.1", "CHECK", node, "n17", conf).returncode != 0
    done = _pmctl(node, tmp_path, "check", "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _plugin_tables(node) == before
    upstream.run("v1.7.1", "CHECK", node, "n17", conf, check=True)


@pytest.mark.parametrize("version", ["v1.6.2", "v1.7.1"])
@pytest.mark.parametrize("lost", ["table flushed", "entry flushed"])
def test_repair_of_a_v16_v17_node_that_lost_its_entry_keeps_that_plugins_layout(
    node: str, tmp_path: Path, version: str, lost: str
) -> None:
    """A v1.6/v1.7 node whose prerouting/output rules were lost (or every rule: `nft
    flush table`, the chains stay) is told by what is left: no hostports_all chain.
    check --repair gives back exactly what its plugin wrote (two jumps, host-IP rules in
    hostip_hostports, conditions kept), so its CHECK passes and its DEL removes all.
    0.1 wrote v1.9's entry and hostports_all there, and after a flushed table the
    host-IP rule in hostports: that plugin's CHECK of the container then failed."""
    ports = [_pm(8011, 80), _pm(8012, 80, host_ip="127.0.0.1")]
    conf = _cached(tmp_path, "n17", upstream.nft_conf("podman", ["10.88.0.21/16"], ports,
                                                     conditions_v4=["ip saddr != 10.99.0.0/16"]))  # fmt: skip
    upstream.run(version, "ADD", node, "n17", conf, check=True)
    before = _plugin_tables(node)
    if lost == "table flushed":
        upstream.nft(node, "flush", "table", "ip", "cni_hostport")
    else:
        for chain in ("prerouting", "output"):
            upstream.nft(node, "flush", "chain", "ip", "cni_hostport", chain)
    done = _pmctl(node, tmp_path, "check", "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _plugin_tables(node) == before
    upstream.run(version, "CHECK", node, "n17", conf, check=True)
    upstream.run(version, "DEL", node, "n17", conf, check=True)
    assert "comment" not in _plugin_tables(node).replace('comment "CNI portmap plugin"', "")


@pytest.mark.parametrize("version", ["v1.6.2", "v1.7.1"])
def test_repair_of_a_v16_v17_nodes_deleted_table_follows_its_other_familys(
    node: str, tmp_path: Path, version: str
) -> None:
    """`nft delete table ip cni_hostport` on a dual-stack v1.6/v1.7 node: the IPv6 table
    left tells the layout, and check --repair re-creates v1.7's IPv4 table byte for byte
    (0.1 made it v1.9's: hostports_all, v1.9's entry, the host-IP rule in hostports)."""
    conf = _cached(tmp_path, "n17", upstream.nft_conf(
        "podman", ["10.88.0.21/16", "fd00:88::21/64"], [_pm(8012, 80, host_ip="127.0.0.1")]))  # fmt: skip
    upstream.run(version, "ADD", node, "n17", conf, check=True)
    before = upstream.ruleset_text(node)
    upstream.nft(node, "delete", "table", "ip", "cni_hostport")
    done = _pmctl(node, tmp_path, "check", "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    # (The table comes back after the IPv6 one, as nft lists tables by creation.)
    again = upstream.ruleset_text(node)
    assert sorted(again.split("table ")) == sorted(before.split("table "))
    # (Its CHECK fails on its own state here: it counts the IPv4 host-IP mapping in the
    # IPv6 hostip_hostports too, FACTS.md. Its DEL is the judge.)
    upstream.run(version, "DEL", node, "n17", conf, check=True)
    assert "comment" not in upstream.ruleset_text(node).replace('comment "CNI portmap plugin"', "")


def test_repair_of_an_upgraded_nodes_deleted_table_is_v191s_where_the_other_cannot_tell(
    node: str, tmp_path: Path
) -> None:
    """v1.7.1 added a dual-stack container, the node was upgraded and v1.9.1 added
    IPv4-only ones (the IPv6 table stays v1.7.1's: no ADD has touched it since), then
    `nft delete table ip cni_hostport`. The IPv6 table cannot tell which plugin wrote
    the IPv4 one last (containers only there were added since): check --repair re-created
    it in v1.9.1's layout (it followed the IPv6 table into v1.7's: v1.9.1's CHECK of every
    container with a host-IP mapping then failed, `missing hostport rules in "hostports"
    chain`, and its prerouting DNATed routed traffic)."""
    old = _cached(tmp_path, "old1", upstream.nft_conf("podman", ["10.88.0.21/16", "fd00:88::21/64"],
                                                      [_pm(8011, 80), _pm(9011, 90, host_ip="127.0.0.1")]))  # fmt: skip
    upstream.run("v1.7.1", "ADD", node, "old1", old, check=True)
    new = _cached(tmp_path, "new1", upstream.nft_conf("podman", ["10.88.0.22/16"],
                                                      [_pm(8021, 80), _pm(9021, 90, host_ip="127.0.0.1")]))  # fmt: skip
    upstream.run(V191, "ADD", node, "new1", new, check=True)
    upstream.run(V191, "CHECK", node, "new1", new, check=True)
    upstream.nft(node, "delete", "table", "ip", "cni_hostport")
    done = _pmctl(node, tmp_path, "check", "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    table = _plugin_tables(node)
    assert "hostports_all" in table and "fib daddr type local jump hostports_all" in table, table
    for cid, conf in (("old1", old), ("new1", new)):
        upstream.run(V191, "CHECK", node, cid, conf, check=True)
    for cid, conf in (("old1", old), ("new1", new)):
        upstream.run(V191, "DEL", node, cid, conf, check=True)
    assert "comment" not in upstream.ruleset_text(node).replace('comment "CNI portmap plugin"', "")


def test_gc_flushes_the_dead_containers_flows_of_a_port_still_mapped_in_either_backend(
    node: str, tmp_path: Path
) -> None:
    """gc deletes the UDP flows the removal left pointing at a dead container, and only
    those, wherever the port is still mapped (SPEC §3, as flush-udp --stale-only).
    0.1 judged each backend alone: a port a dead nftables container shared with a live
    one kept its flows to the dead address (the seed commit's misrouting), and a port
    freed in one backend but mapped in the other lost its live container's flows too."""
    # The flows' destination is the node's own address: only such flows met a mapping.
    subprocess.run([rp._ip(), "-n", node, "addr", "add", "192.0.3.1/32", "dev", "lo"], check=True)
    # Port 5010: dead in nftables, live in iptables. 5020: dead and live in nftables.
    # 5030: dead in iptables, live in nftables. 5040: dead in nftables alone.
    upstream.run(V191, "ADD", node, "dead10", upstream.nft_conf(
        "podman", ["10.88.0.91/16"], [_pm(5010, 53, "udp")]), check=True)  # fmt: skip
    live10 = rp.plugin_conf("podman", ["10.88.0.92/16"], [_pm(5010, 53, "udp")])
    rp.run_plugin("ADD", node, "live10", live10, check=True)
    _cached(tmp_path, "live10", live10)
    for cid, ip, port, cached in (("dead20", "10.88.0.95", 5020, False),
                                  ("live20", "10.88.0.96", 5020, True),
                                  ("live30", "10.88.0.98", 5030, True),
                                  ("dead40", "10.88.0.99", 5040, False)):  # fmt: skip
        conf = upstream.nft_conf("podman", [f"{ip}/16"], [_pm(port, 53, "udp")])
        upstream.run(V191, "ADD", node, cid, conf, check=True)
        if cached:
            _cached(tmp_path, cid, conf)
    dead30 = rp.plugin_conf("podman", ["10.88.0.97/16"], [_pm(5030, 53, "udp")])
    rp.run_plugin("ADD", node, "dead30", dead30, check=True)
    flows = {(5010, "10.88.0.91"), (5010, "10.88.0.92"), (5020, "10.88.0.95"),
             (5020, "10.88.0.96"), (5030, "10.88.0.97"), (5030, "10.88.0.98"),
             (5040, "10.88.0.99")}  # fmt: skip
    for sport, (dport, to) in enumerate(sorted(flows), start=41000):
        subprocess.run([rp._ip(), "netns", "exec", node, "conntrack", "-I", "-p", "udp",
                        "-s", "192.0.3.2", "-d", "192.0.3.1", "--sport", str(sport),
                        "--dport", str(dport), "--reply-src", to, "--reply-port-src", "53",
                        "--reply-dst", "192.0.3.2", "--reply-port-dst", str(sport), "-t", "100"],
                       check=True, capture_output=True)  # fmt: skip
    assert rp.udp_flows(node) == flows
    done = _pmctl(node, tmp_path, "gc", "--yes", "--min-age", "0", "-o", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert {c["container_id"] for c in doc["removed"]} == {"dead10", "dead20", "dead30", "dead40"}
    live = {(5010, "10.88.0.92"), (5020, "10.88.0.96"), (5030, "10.88.0.98")}
    assert rp.udp_flows(node) == live
    assert doc["conntrack_deleted"] == len(flows) - len(live)


@pytest.mark.parametrize(
    ("dead_in", "live_in"),
    [("nftables", "iptables"), ("nftables", "nftables"), ("iptables", "nftables")],
)
def test_gc_keeps_another_tools_flows_on_a_port_left_mapped_on_one_address(
    node: str, tmp_path: Path, dead_in: str, live_in: str
) -> None:
    """dead50 (leaked) mapped 5050/udp on every address; live50 maps 127.0.0.1:5050
    only, one of them in nftables; another tool DNATs 192.0.3.1:5050 to a pod of its
    own. gc removing dead50 judged the port's flows by both backends' mappings but
    without knowing whose addresses they went to: the other tool's live flow went as
    "nothing maps this port now" (62e874e fixed it for iptables alone). Now only the
    flow to dead50's address goes. (Both in iptables: kernel/test_field_udp.py.)"""
    subprocess.run([rp._ip(), "-n", node, "addr", "add", "192.0.3.1/32", "dev", "lo"], check=True)
    for cid, ip, backend, ports in (
        ("dead50", "10.88.0.91", dead_in, [_pm(5050, 53, "udp")]),
        ("live50", "10.88.0.92", live_in, [_pm(5050, 53, "udp", host_ip="127.0.0.1")]),
    ):
        if backend == "iptables":
            conf = rp.plugin_conf("podman", [f"{ip}/16"], ports)
            rp.run_plugin("ADD", node, cid, conf, check=True)
        else:
            conf = upstream.nft_conf("podman", [f"{ip}/16"], ports)
            upstream.run(V191, "ADD", node, cid, conf, check=True)
        if cid == "live50":
            _cached(tmp_path, cid, conf)
    rp.iptables(node, ["-t", "nat", "-I", "PREROUTING", "1", "-d", "192.0.3.1", "-p", "udp",
                       "--dport", "5050", "-j", "DNAT", "--to-destination", "10.244.1.7:53"])  # fmt: skip
    flows = {("192.0.3.1", "10.88.0.91"), ("192.0.3.1", "10.244.1.7"),
             ("127.0.0.1", "10.88.0.92")}  # fmt: skip
    for sport, (dst, to) in enumerate(sorted(flows), start=41000):
        source = "127.0.0.1" if dst == "127.0.0.1" else "192.0.3.2"
        subprocess.run([rp._ip(), "netns", "exec", node, "conntrack", "-I", "-p", "udp",
                        "-s", source, "-d", dst, "--sport", str(sport), "--dport", "5050",
                        "--reply-src", to, "--reply-port-src", "53", "--reply-dst", source,
                        "--reply-port-dst", str(sport), "-t", "100"],
                       check=True, capture_output=True)  # fmt: skip
    assert rp.udp_flows(node) == {(5050, to) for _, to in flows}
    done = _pmctl(node, tmp_path, "gc", "--yes", "--min-age", "0", "-o", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert {c["container_id"] for c in doc["removed"]} == {"dead50"}
    assert rp.udp_flows(node) == {(5050, "10.244.1.7"), (5050, "10.88.0.92")}
    assert doc["conntrack_deleted"] == 1


def test_a_container_on_two_networks_one_per_backend_is_no_copy_to_remove(
    node: str, tmp_path: Path
) -> None:
    """A container on two networks (podman --network oldnet,newnet), newnet switched
    to nftables and oldnet not: one cache entry per backend, rules in both, all live.
    0.1 judged backends by container ID: it reported `both-backends` and told the
    operator to delete oldnet's chain by hand; once that chain was gone, it expected
    oldnet's mapping in nftables (the ID's rules were there) and --repair wrote it there.
    Now each cache entry is judged by its own evidence."""
    old = rp.plugin_conf("oldnet", ["10.88.0.5/16"], [_pm(8600, 80)])
    rp.run_plugin("ADD", node, "multi", old, check=True)
    rp.write_cni_cache(tmp_path, "oldnet", "multi", "eth0", old, [_pm(8600, 80)], ["10.88.0.5/16"])
    new = upstream.nft_conf("newnet", ["10.89.0.5/16"], [_pm(8600, 80)])
    new["prevResult"]["interfaces"][0]["name"] = "eth1"
    upstream.run(V191, "ADD", node, "multi", new, ifname="eth1", check=True)
    rp.write_cni_cache(tmp_path, "newnet", "multi", "eth1", new, [_pm(8600, 80)], ["10.89.0.5/16"])
    healthy = _pmctl(node, tmp_path, "check", "-o", "json")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert json.loads(healthy.stdout)["problems"] == []
    tables = _plugin_tables(node)
    ipt_before = rp.nat_rules(rp.save(node, 4))
    chain = next(line.split()[1] for line in ipt_before if line.startswith("-A CNI-DN-"))
    entry = next(line for line in ipt_before if line.startswith("-A CNI-HOSTPORT-DNAT"))
    rp.iptables(node, ["-t", "nat", "-D", "CNI-HOSTPORT-DNAT", *shlex.split(entry)[2:]])
    rp.iptables(node, ["-t", "nat", "-F", chain])
    rp.iptables(node, ["-t", "nat", "-X", chain])
    broken = _pmctl(node, tmp_path, "check", "-o", "json")
    assert broken.returncode == 1
    problems = json.loads(broken.stdout)["problems"]
    assert {(p["kind"], p["network"], p["chain"]) for p in problems} == {
        ("missing-chain", "oldnet", chain)
    }
    assert "multi" not in broken.stderr  # (no note: oldnet's rules are not in nftables)
    repaired = _pmctl(node, tmp_path, "check", "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert rp.nat_rules(rp.save(node, 4)) == ipt_before
    assert _plugin_tables(node) == tables
    for result in rp.run_check(node, "multi", old):
        assert result.returncode == 0, result.stdout + result.stderr
    upstream.run(V191, "CHECK", node, "multi", new, ifname="eth1", check=True)


def test_add_in_nftables_warns_of_a_port_another_container_maps_first(
    node: str, tmp_path: Path
) -> None:
    """add says when a host port is already taken (its --help); in nftables it never
    did. The plugin appends, and nftables is first-match-wins: the new mapping gets no
    traffic, which the plugin's CHECK (it only counts rules) does not see either."""
    first = upstream.nft_conf("podman", ["10.88.0.21/16"], [_pm(8011, 80)])
    upstream.run(V191, "ADD", node, "nft1", _cached(tmp_path, "nft1", first), check=True)
    args = ["add", "--backend", "nftables", "--network", "podman", "--ip"]
    done = _pmctl(node, tmp_path, *args, "10.88.0.22/16", "--container", "nft2",
                  "-p", "127.0.0.1:8011:80", "-o", "json")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    [warning] = json.loads(done.stdout)["warnings"]
    assert warning.startswith("IPv4 tcp/8011 is mapped first to nft1 (nftables hostports)")
    assert warning in done.stderr
    # Its own rule again (a second add) and another port: nothing to say.
    again = _pmctl(node, tmp_path, *args, "10.88.0.21/16", "--container", "nft1",
                   "-p", "8011:80", "-o", "json")  # fmt: skip
    assert json.loads(again.stdout)["warnings"] == [], again.stderr
    other = _pmctl(node, tmp_path, *args, "10.88.0.23/16", "--container", "nft3",
                   "-p", "8012:80", "-o", "json")  # fmt: skip
    assert json.loads(other.stdout)["warnings"] == [], other.stderr


def test_a_zombies_problem_says_its_rules_are_in_nftables(node: str, tmp_path: Path) -> None:
    """A zombie's problem says where its rules still are: an iptables one names its
    chain's families; an nftables one said nothing of its rules, and its JSON named
    the iptables backend and a CNI-DN- chain that does not exist."""
    ports = [_pm(8004, 80)]
    conf = upstream.nft_conf("podman", ["10.88.0.14/16"], ports)
    upstream.run(V191, "ADD", node, "zomb1", conf, check=True)
    rp.write_cni_cache(tmp_path, "podman", "zomb1", "eth0", conf, ports, ["10.88.0.14/16"],
                       netns="/run/netns/pmt-migr-gone")  # fmt: skip
    # A live container's namespace beside it: /run/netns shows the cache's namespaces.
    live = rp.create_netns("pmt-migr")
    try:
        bare = upstream.nft_conf("podman", ["10.88.0.15/16"], [])
        rp.write_cni_cache(tmp_path, "podman", "live1", "eth0", bare, [], ["10.88.0.15/16"],
                           netns=f"/run/netns/{live}")  # fmt: skip
        done = _pmctl(node, tmp_path, "check", "-o", "json")
    finally:
        rp.delete_netns(live)
    assert done.returncode == 1, done.stdout + done.stderr
    [zombie] = json.loads(done.stdout)["problems"]
    assert zombie["kind"] == "zombie"
    assert "its rules are still in nftables" in zombie["detail"], zombie
    # (The chain its rules are in, as a stale row of it names it: no CNI-DN- chain.)
    assert (zombie["backend"], zombie["chain"]) == ("nftables", "hostports"), zombie
    assert zombie["fix"].endswith("--netns-liveness")


def test_backend_iptables_neither_expects_nor_writes_iptables_rules_for_a_keyless_nft_container(
    node: str, tmp_path: Path
) -> None:
    """nft1 was added by v1.9.1 with `"backend": "nftables"`; its cache entry has no
    `backend` key (Debian's 1.1.1 cache, a hand edit): its rules, in nftables alone, say
    where it is, as a plain check judges it. 0.1's --backend iptables read no nftables
    and called it missing-chain, and --repair wrote it an iptables chain: its port
    mapped twice, in a backend the plugin's DEL never looks at."""
    deb = rp.plugin_conf("podman", ["10.88.0.11/16"], [_pm(8001, 80)])
    rp.run_plugin("ADD", node, "deb1", deb, check=True)
    rp.write_cni_cache(tmp_path, "podman", "deb1", "eth0", deb, [_pm(8001, 80)], ["10.88.0.11/16"])
    nft = upstream.nft_conf("podman", ["10.88.0.21/16"], [_pm(8011, 80)])
    upstream.run(V191, "ADD", node, "nft1", nft, check=True)
    keyless = {k: v for k, v in nft.items() if k != "backend"}
    rp.write_cni_cache(tmp_path, "podman", "nft1", "eth0", keyless, [_pm(8011, 80)],
                       ["10.88.0.21/16"])  # fmt: skip
    plain = _pmctl(node, tmp_path, "check", "-o", "json")
    assert plain.returncode == 0, plain.stdout + plain.stderr
    before = rp.save(node, 4)
    done = _pmctl(node, tmp_path, "check", "--backend", "iptables", "-o", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["problems"] == []
    [note] = [line for line in done.stderr.splitlines() if "--backend iptables" in line]
    assert "1 cached container is the plugin's nftables'" in note and "not checked" in note, note
    repaired = _pmctl(node, tmp_path, "check", "--backend", "iptables", "--repair", "-o", "json")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert json.loads(repaired.stdout)["repaired"] is False
    assert rp.strip_save_comments(rp.save(node, 4)) == rp.strip_save_comments(before)
    # iptables' own containers are still checked and repaired there.
    rp.iptables(node, ["-t", "nat", "-F", "CNI-HOSTPORT-DNAT"])
    broken = _pmctl(node, tmp_path, "check", "--backend", "iptables", "-o", "json")
    assert broken.returncode == 1
    problems = json.loads(broken.stdout)["problems"]
    assert {(p["kind"], p["container_id"]) for p in problems} == {("missing-entry", "deb1")}
    fixed = _pmctl(node, tmp_path, "check", "--backend", "iptables", "--repair")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "nft1" not in "".join(rp.nat_rules(rp.save(node, 4)))
    for result in rp.run_check(node, "deb1", deb):
        assert result.returncode == 0, result.stdout + result.stderr
    upstream.run(V191, "CHECK", node, "nft1", nft, check=True)


def test_gc_backend_iptables_keeps_the_flows_of_a_port_a_live_nft_container_maps(
    node: str, tmp_path: Path
) -> None:
    """dead30 (iptables, not cached) and live30 (nftables, cached) map UDP 5030. gc
    --backend iptables removes dead30's chain: the port is no freed port, live30 still
    maps it (in nftables, which gc does not change but still reads for that), so only
    the flows to dead30 go. 0.1 read no nftables and deleted live30's flows too."""
    subprocess.run([rp._ip(), "-n", node, "addr", "add", "192.0.3.1/32", "dev", "lo"], check=True)
    live = upstream.nft_conf("podman", ["10.88.0.98/16"], [_pm(5030, 53, "udp")])
    upstream.run(V191, "ADD", node, "live30", live, check=True)
    rp.write_cni_cache(tmp_path, "podman", "live30", "eth0", live, [_pm(5030, 53, "udp")],
                       ["10.88.0.98/16"])  # fmt: skip
    dead = rp.plugin_conf("podman", ["10.88.0.97/16"], [_pm(5030, 53, "udp")])
    rp.run_plugin("ADD", node, "dead30", dead, check=True)
    for sport, to in ((41000, "10.88.0.97"), (41001, "10.88.0.98")):
        subprocess.run([rp._ip(), "netns", "exec", node, "conntrack", "-I", "-p", "udp",
                        "-s", "192.0.3.2", "-d", "192.0.3.1", "--sport", str(sport),
                        "--dport", "5030", "--reply-src", to, "--reply-port-src", "53",
                        "--reply-dst", "192.0.3.2", "--reply-port-dst", str(sport), "-t", "100"],
                       check=True, capture_output=True)  # fmt: skip
    assert rp.udp_flows(node) == {(5030, "10.88.0.97"), (5030, "10.88.0.98")}
    done = _pmctl(node, tmp_path, "gc", "--backend", "iptables", "--yes", "--min-age", "0",
                  "-o", "json")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert {c["container_id"] for c in doc["removed"]} == {"dead30"}
    assert rp.udp_flows(node) == {(5030, "10.88.0.98")}
    assert doc["conntrack_deleted"] == 1
    upstream.run(V191, "CHECK", node, "live30", live, check=True)


def test_flush_udp_backend_iptables_leaves_the_ports_only_nftables_maps(
    node: str, tmp_path: Path
) -> None:
    """ipt31 (iptables) maps UDP 5031, nft32 (nftables) UDP 5032. flush-udp --backend
    iptables works on iptables' ports alone, as list does: it deleted nft32's flows too
    (nftables, read under --backend iptables only to judge flows, chose the ports)."""
    subprocess.run([rp._ip(), "-n", node, "addr", "add", "192.0.3.1/32", "dev", "lo"], check=True)
    ipt = rp.plugin_conf("podman", ["10.88.0.31/16"], [_pm(5031, 53, "udp")])
    rp.run_plugin("ADD", node, "ipt31", ipt, check=True)
    _cached(tmp_path, "ipt31", ipt)
    nft = upstream.nft_conf("podman", ["10.88.0.32/16"], [_pm(5032, 53, "udp")])
    upstream.run(V191, "ADD", node, "nft32", nft, check=True)
    _cached(tmp_path, "nft32", nft)
    for sport, port, to in ((41031, 5031, "10.88.0.31"), (41032, 5032, "10.88.0.32")):
        subprocess.run([rp._ip(), "netns", "exec", node, "conntrack", "-I", "-p", "udp",
                        "-s", "192.0.3.2", "-d", "192.0.3.1", "--sport", str(sport),
                        "--dport", str(port), "--reply-src", to, "--reply-port-src", "53",
                        "--reply-dst", "192.0.3.2", "--reply-port-dst", str(sport), "-t", "100"],
                       check=True, capture_output=True)  # fmt: skip
    both = {(5031, "10.88.0.31"), (5032, "10.88.0.32")}
    assert rp.udp_flows(node) == both
    for extra in (["--container", "nft32"], []):
        done = _pmctl(node, tmp_path, "flush-udp", "--backend", "iptables", "-o", "json", *extra)
        assert done.returncode == 0, done.stdout + done.stderr
        assert rp.udp_flows(node) == (both if extra else {(5032, "10.88.0.32")})
    assert json.loads(done.stdout)["count"] == 1


def test_a_mapping_given_without_a_backend_follows_its_containers_rules_into_nftables(
    node: str, tmp_path: Path
) -> None:
    """nft1 was added by v1.9.1 with `"backend": "nftables"`. Its mapping given on the
    command line (no backend key, --backend auto): one-mapping check and its --repair,
    and add, follow its rules there, as list, check and gc follow a cached container
    (its rules are in nftables alone). Before, check said its chain was missing and
    --repair (or add) wrote an iptables copy: the container mapped in both backends,
    the copy where the plugin's DEL never looks. A container with no rules anywhere
    still goes to iptables, the plugin's choice for a config without the key. (nft1's
    cache entry is removed first: its cached key would decide before its rules, as the
    next test shows.)"""
    confs = _keyless_iptables_node(node, tmp_path)
    (tmp_path / "results" / "podman-nft1-eth0").unlink()

    def iptables() -> str:
        return rp.strip_save_comments(rp.save(node, 4, "nft"))

    before = iptables()
    nft1 = ["--network", "podman", "--container", "nft1", "--ip", "10.88.0.21/16", "-p", "8011:80"]
    done = _pmctl(node, tmp_path, "check", *nft1)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "podman/nft1: its rules are in the plugin's nftables tables alone" in done.stderr
    assert done.stdout == "healthy: the nftables rules of nft1 are in place (IPv4)\n"
    for command in (["check", "--repair"], ["add"]):
        done = _pmctl(node, tmp_path, *command, *nft1)
        assert done.returncode == 0, (command, done.stdout + done.stderr)
        assert iptables() == before, command
    assert done.stdout == "unchanged: nftables rules (podman/nft1) are already in place\n"
    # One more port for it: in nftables, beside its others.
    done = _pmctl(node, tmp_path, "add", *nft1, "-p", "8012:80")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tcp dport 8012 dnat" in _plugin_tables(node) and iptables() == before
    upstream.run(V191, "CHECK", node, "nft1", confs["nft1"], check=True)
    new = ["--network", "podman", "--container", "new1", "--ip", "10.88.0.31/16", "-p", "8031:80"]
    done = _pmctl(node, tmp_path, "add", *new)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "dport 8031" in iptables() and "8031" not in _plugin_tables(node)


def test_a_mapping_given_without_a_backend_follows_its_cached_config_when_no_rules_are_left(
    node: str, tmp_path: Path
) -> None:
    """nft1's cached config says `"backend": "nftables"`; its rules were then removed
    (v1.9.1's DEL, the plugin's table left), so no rule of it is left anywhere. Given
    on the command line without a backend key, its mapping follows the cached config,
    as the plugin's CHECK and DEL for it do: check finds it missing in nftables, and
    --repair and add put it back there, where v1.9.1's CHECK finds it. Before, all three
    went by the rules alone, found none, and took iptables: --repair and add wrote an
    iptables copy the plugin's DEL for nft1 never removes. (Where a firewall reload
    dropped the plugin's table as well, nothing on this node tells that its plugin
    honours the key, deb1's and up1's CNI-HOSTPORT-DNAT in iptables: in doubt, as the
    node's check judges it, nothing written; see
    test_one_mapping_of_a_key_ignoring_container_with_nothing_left_is_in_doubt.)
    A container whose cached config says `"backend": "iptables"` is checked in
    iptables, though its rules are in nftables."""
    confs = _keyless_iptables_node(node, tmp_path)

    def iptables() -> str:
        return rp.strip_save_comments(rp.save(node, 4, "nft"))

    before = iptables()
    nft1 = ["--network", "podman", "--container", "nft1", "--ip", "10.88.0.21/16", "-p", "8011:80"]
    note = 'podman/nft1: its cached config says "backend": "nftables", so the plugin keeps it there'
    for command in (["check", "--repair"], ["add"]):
        upstream.run(V191, "DEL", node, "nft1", confs["nft1"], check=True)
        done = _pmctl(node, tmp_path, "check", *nft1)
        assert done.returncode == 1, done.stdout + done.stderr
        assert note in done.stderr and "nft" in done.stdout, done.stdout + done.stderr
        done = _pmctl(node, tmp_path, *command, *nft1)
        assert done.returncode == 0, (command, done.stdout + done.stderr)
        assert note in done.stderr, (command, done.stderr)
        assert iptables() == before, command
        upstream.run(V191, "CHECK", node, "nft1", confs["nft1"], check=True)
    upstream.nft(node, "delete", "table", "ip", "cni_hostport")
    done = _pmctl(node, tmp_path, "check", *nft1, "--repair")
    pmctl.assert_error(done, 3, "podman/nft1: its", "cannot be told", "nothing is written")
    assert (
        iptables() == before and "cni_hostport" not in upstream.nft(node, "list", "tables").stdout
    )
    # Its cached config says iptables: checked there, whatever nftables holds.
    ipt = upstream.nft_conf("podman", ["10.88.0.41/16"], [_pm(8041, 80)], backend="iptables")
    _cached(tmp_path, "ipt1", ipt)
    ipt1 = ["--network", "podman", "--container", "ipt1", "--ip", "10.88.0.41/16", "-p", "8041:80"]
    # (Its rules in nftables: the plugin given the key's other value. add refuses to
    # write them there, test_add_backend_holder.py.)
    in_nft = upstream.nft_conf("podman", ["10.88.0.41/16"], [_pm(8041, 80)])
    upstream.run(V191, "ADD", node, "ipt1", in_nft, check=True)
    done = _pmctl(node, tmp_path, "check", *ipt1)
    assert done.returncode == 1 and done.stderr == "", done.stdout + done.stderr
    assert (
        done.stdout.startswith("KIND")
        and "missing-chain  v4   ipt1       chain missing" in done.stdout
    )


@pytest.mark.parametrize("evidence", ["cached-key", "rules-alone"])
def test_check_under_backend_iptables_of_an_nftables_container_repairs_nothing_there(
    node: str, tmp_path: Path, evidence: str
) -> None:
    """nft1 is kept in nftables (its cached config says so, or its rules are in the
    plugin's tables alone). `check --backend iptables` of its mapping looks in iptables
    as told, finds no chain, and says where the plugin keeps it; its fix named the same
    command with --repair, which wrote an iptables copy the plugin's DEL never removes
    (then both-backends and contested rows). Now no fix names --repair, and --repair
    under --backend iptables refuses, exit 2, nothing written (SPEC §2: never repaired
    into iptables)."""
    ports = [_pm(8011, 80)]
    conf = upstream.nft_conf("podman", ["10.88.0.21/16"], ports)
    upstream.run(V191, "ADD", node, "nft1", conf, check=True)
    keyless = {k: v for k, v in conf.items() if k != "backend"}
    _cached(tmp_path, "nft1", conf if evidence == "cached-key" else keyless)

    def iptables() -> str:
        return rp.strip_save_comments(rp.save(node, 4, "nft"))

    before = iptables()
    nft1 = ["--network", "podman", "--container", "nft1", "--ip", "10.88.0.21/16", "-p", "8011:80",
            "--backend", "iptables"]  # fmt: skip
    done = _pmctl(node, tmp_path, "check", *nft1, "-o", "json")
    assert done.returncode == 1, done.stdout + done.stderr
    problems = json.loads(done.stdout)["problems"]
    assert [(p["kind"], p["fix"]) for p in problems] == [("missing-chain", None)], problems
    assert "so the plugin keeps it there: checked in iptables as --backend says" in done.stderr
    done = _pmctl(node, tmp_path, "check", *nft1, "--repair")
    pmctl.assert_error(done, 2, "so the plugin keeps it there", "nothing changed")
    # The same mapping given as a config without a `backend` key (--cni-config):
    # --backend speaks for it there too.
    keyless_file = tmp_path / "keyless.json"
    keyless_file.write_text(json.dumps(keyless))
    given = ["--container", "nft1", "--cni-config", str(keyless_file), "--backend", "iptables"]
    done = _pmctl(node, tmp_path, "check", *given, "-o", "json")
    assert done.returncode == 1, done.stdout + done.stderr
    assert [p["fix"] for p in json.loads(done.stdout)["problems"]] == [None]
    done = _pmctl(node, tmp_path, "check", *given, "--repair")
    pmctl.assert_error(done, 2, "so the plugin keeps it there", "nothing changed")
    assert iptables() == before
    upstream.run(V191, "CHECK", node, "nft1", conf, check=True)


def test_check_under_backend_nftables_of_an_iptables_container_repairs_nothing_there(
    node: str, tmp_path: Path
) -> None:
    """The other way round: ipt1's chain is in iptables (Debian's plugin, no cache
    entry, no `backend` key anywhere), where the plugin keeps a config without the key.
    `check --backend nftables --repair` of its mapping wrote nftables rules the plugin's
    DEL for it never removes; it refuses now, exit 2, nothing written."""
    conf = rp.plugin_conf("podman", ["10.88.0.41/16"], [_pm(8041, 80)])
    rp.run_plugin("ADD", node, "ipt1", conf, check=True)
    ipt1 = ["--network", "podman", "--container", "ipt1", "--ip", "10.88.0.41/16", "-p", "8041:80",
            "--backend", "nftables"]  # fmt: skip
    done = _pmctl(node, tmp_path, "check", *ipt1, "--repair")
    pmctl.assert_error(done, 2, "its chain CNI-DN-", "is in iptables", "nothing changed")
    assert "cni_hostport" not in upstream.nft(node, "list", "tables").stdout
    assert all(c.returncode == 0 for c in rp.run_check(node, "ipt1", conf)), "the plugin's CHECK"


def test_check_under_backend_nftables_names_the_iptables_flavour_holding_the_chain(
    node: str, tmp_path: Path
) -> None:
    """h239: ipt1's chain is in the iptables-legacy tables (Debian's plugin run with
    iptables-legacy; the node's `iptables` is iptables-nft). `check --backend nftables`
    of its mapping said "its chain CNI-DN-... is in iptables, so the plugin keeps it
    there", where `iptables -t nat -S` shows nothing of it; add of the same mapping
    said "is in the iptables-legacy tables". Now check names the flavour as add does."""
    if rp.mode_available("legacy")[0] is False or shutil.which("iptables-legacy") is None:
        pytest.skip("no iptables-legacy")
    conf = rp.plugin_conf("podman", ["10.88.0.42/16"], [_pm(8042, 80)])
    rp.run_plugin("ADD", node, "ipt1", conf, mode="legacy", check=True)
    ipt1 = ["--network", "podman", "--container", "ipt1", "--ip", "10.88.0.42/16", "-p", "8042:80",
            "--backend", "nftables", "--iptables", "nft"]  # fmt: skip
    said = f"its chain {chain_name('podman', 'ipt1')} is in the iptables-legacy tables"
    done = _pmctl(node, tmp_path, "check", *ipt1)
    assert done.returncode == 1 and said in done.stderr, done.stderr
    done = _pmctl(node, tmp_path, "check", *ipt1, "--repair")
    pmctl.assert_error(done, 2, said, "so the plugin keeps it there", "nothing changed")
    done = _pmctl(node, tmp_path, "add", *ipt1)
    pmctl.assert_error(done, 2, said, "so the plugin keeps it there", "nothing changed")


@pytest.mark.parametrize(
    ("used", "where"), [("legacy", "iptables"), ("nft", "the iptables-legacy tables")]
)
def test_a_busy_xtables_lock_never_hides_a_legacy_chain_from_the_copy_guard(
    node: str, tmp_path: Path, used: str, where: str
) -> None:
    """ipt1's chain is in the legacy tables (Debian's plugin run with iptables-legacy):
    the flavour the node uses (--iptables legacy), or the other one (--iptables nft).
    Another iptables holds the xtables lock past the wait (a private XTABLES_LOCKFILE
    held by `flock`). Asked by `iptables-legacy -t nat -S CHAIN`, which waits for the
    lock and fails (exit 4), the chain was taken for absent: `check --repair --backend
    nftables` wrote ipt1 an nftables copy its plugin never deletes (exit 0), and `add
    --backend nftables` too, where each refuses it with the lock free. A listing that
    cannot tell is answered by the save (iptables-legacy-save takes no lock): refused
    the same, nothing written."""
    if rp.mode_available("legacy")[0] is False or shutil.which("iptables-legacy") is None:
        pytest.skip("no iptables-legacy")
    conf = rp.plugin_conf("podman", ["10.88.0.44/16"], [_pm(8044, 80)])
    rp.run_plugin("ADD", node, "ipt1", conf, mode="legacy", check=True)
    ipt1 = ["--network", "podman", "--container", "ipt1", "--ip", "10.88.0.44/16", "-p", "8044:80",
            "--backend", "nftables", "--iptables", used, "--netns", node,
            "--cni-cache-dir", str(tmp_path)]  # fmt: skip
    said = f"its chain {chain_name('podman', 'ipt1')} is in {where},"
    lock = tmp_path / "xtables.lock"
    lock.touch()
    env = {"XTABLES_LOCKFILE": str(lock), "PORTMAPCTL_XTABLES_WAIT": "1"}
    held = subprocess.Popen(["flock", str(lock), "sleep", "120"])
    try:
        busy = subprocess.run(["ip", "netns", "exec", node, "iptables-legacy", "-w", "1", "-t",
                               "nat", "-S", chain_name("podman", "ipt1")],
                              capture_output=True, text=True, env={**os.environ, **env})  # fmt: skip
        assert busy.returncode == 4, busy.stderr  # (the lock is held: the fault is real)
        for command in (["check", "--repair"], ["add", "--dry-run"], ["add"]):
            done = pmctl.run([*command, *ipt1], env=env)
            pmctl.assert_error(done, 2, said, "so the plugin keeps it there", "nothing changed")
            assert "cni_hostport" not in upstream.nft(node, "list", "tables").stdout, command
    finally:
        held.kill()
        held.wait()
    checked = rp.run_check(node, "ipt1", conf, mode="legacy")
    assert all(c.returncode == 0 for c in checked), "the plugin's CHECK"


def test_the_key_ignored_notes_name_the_iptables_flavour_holding_the_chain(
    node: str, tmp_path: Path
) -> None:
    """h243: Debian's plugin (which ignores `"backend": "nftables"`) run with
    iptables-legacy, the node's `iptables` iptables-nft, ign1 cached with that key.
    check's notes that follow ign1 to iptables (the node's, one mapping's under auto
    and under --backend nftables, --repair's) and add's said its chain "is in iptables",
    where `iptables -t nat -S` shows nothing of it: they name the flavour, as add's
    refusal of a keyless copy does."""
    if rp.mode_available("legacy")[0] is False or shutil.which("iptables-legacy") is None:
        pytest.skip("no iptables-legacy")
    conf = rp.plugin_conf("podman", ["10.88.0.43/16"], [_pm(8043, 80)])
    conf["backend"] = "nftables"
    rp.run_plugin("ADD", node, "ign1", conf, mode="legacy", check=True)
    _cached(tmp_path, "ign1", conf)
    ign1 = ["--network", "podman", "--container", "ign1", "--ip", "10.88.0.43/16", "-p", "8043:80",
            "--iptables", "nft"]  # fmt: skip
    where = "in the iptables-legacy tables"
    runs = {
        "node": ["check", "--iptables", "nft"],
        "node --repair": ["check", "--iptables", "nft", "--repair"],
        "node --backend nftables": ["check", "--iptables", "nft", "--backend", "nftables"],
        "mapping": ["check", *ign1],
        "mapping --backend nftables": ["check", *ign1, "--backend", "nftables"],
        "mapping --backend nftables --repair": [
            "check",
            *ign1,
            "--backend",
            "nftables",
            "--repair",
        ],
        "add --dry-run": ["add", *ign1, "--dry-run"],
        "add --backend nftables": ["add", *ign1, "--backend", "nftables"],
    }
    for what, args in runs.items():
        said = _pmctl(node, tmp_path, *args).stderr
        assert "ignore" in said and where in said, (what, said)
        assert "chain in iptables" not in said and "is in iptables" not in said, (what, said)


def test_an_nftables_node_with_legacy_leftovers_is_not_sent_to_iptables_legacy(
    node: str, tmp_path: Path
) -> None:
    """An nftables-backend node that once ran the plugin on iptables-legacy (its
    CNI-HOSTPORT-DNAT left there, as DEL leaves it), whose last container has gone: its
    cni_hostport tables are the plugin's state, so list says nothing of the other
    flavour, as gc does not (before: list told to run with --iptables legacy, where
    the plugin has nothing)."""
    old = rp.plugin_conf("podman", ["10.88.0.5/16"], [_pm(8080, 80)])
    rp.run_plugin("ADD", node, "old1", old, mode="legacy", check=True)
    rp.run_plugin("DEL", node, "old1", old, mode="legacy", check=True)
    assert ":CNI-HOSTPORT-DNAT" in rp.save(node, 4, "legacy")
    conf = _cached(
        tmp_path, "nft1", upstream.nft_conf("podman", ["10.88.0.21/16"], [_pm(8081, 80)])
    )
    upstream.run(V191, "ADD", node, "nft1", conf, check=True)
    upstream.run(V191, "DEL", node, "nft1", conf, check=True)
    assert "table ip cni_hostport" in upstream.ruleset_text(node)
    for command in (["list"], ["gc", "--dry-run", "--min-age", "0"]):
        done = _pmctl(node, tmp_path, *command)
        assert done.returncode == 0, done.stderr
        assert "iptables-legacy" not in done.stderr, done.stderr


def test_an_nftables_node_with_live_legacy_containers_says_list_and_gc_do_not_read_them(
    node: str, tmp_path: Path
) -> None:
    """An nftables-backend node whose older containers the plugin made on
    iptables-legacy (one live, one dead), iptables-nft in use: list showed the nftables
    row alone and gc removed nothing, not a word of the legacy chains that still
    DNAT their ports (before: the warning was left out wherever the plugin's nftables
    tables are, since 3eaf847). Both now say so; nothing of legacy is changed."""
    old = _cached(tmp_path, "leg1", rp.plugin_conf("podman", ["10.88.0.5/16"], [_pm(8080, 80)]))
    rp.run_plugin("ADD", node, "leg1", old, mode="legacy", check=True)
    dead = rp.plugin_conf("podman", ["10.88.0.7/16"], [_pm(8082, 80)])
    rp.run_plugin("ADD", node, "legdead", dead, mode="legacy", check=True)
    conf = _cached(
        tmp_path, "nft1", upstream.nft_conf("podman", ["10.88.0.21/16"], [_pm(8081, 80)])
    )
    upstream.run(V191, "ADD", node, "nft1", conf, check=True)
    before = rp.nat_rules(rp.save(node, 4, "legacy"))
    for command in (["list"], ["gc", "--yes", "--min-age", "0"]):
        done = _pmctl(node, tmp_path, *command, "--iptables", "nft")
        assert done.returncode == 0, done.stderr
        assert "the iptables-legacy tables also hold 2 container chains" in done.stderr, (
            command,
            done.stderr,
        )
        assert "--iptables legacy" in done.stderr
    assert rp.nat_rules(rp.save(node, 4, "legacy")) == before


def test_the_orphaned_iptables_chain_of_a_container_moved_to_nftables_is_not_sent_to_gc(
    node: str, tmp_path: Path
) -> None:
    """A network switched to `"backend": "nftables"` and reloaded (podman network
    reload re-ADDs every running container with the new conflist): the keyless
    iptables chain of the container stays beside its new nftables rules, and once its
    entry rule is gone (a firewall reload flushing CNI-HOSTPORT-DNAT) nothing enters
    it. check called it an orphan whose fix was `portmapctl gc`, and gc keeps it (the
    container is live): the fix ran and changed nothing. The fix is now prose: the
    chain forwards nothing, gc removes it once the container is gone, and the two
    commands that remove it now (which do, leaving the node healthy)."""
    old = upstream.nft_conf("podman", ["10.88.0.31/16"], [_pm(8031, 80)], backend=None)
    upstream.run(V191, "ADD", node, "moved1", old, check=True)
    new = _cached(
        tmp_path, "moved1", upstream.nft_conf("podman", ["10.88.0.31/16"], [_pm(8031, 80)])
    )
    upstream.run(V191, "ADD", node, "moved1", new, check=True)
    saved = rp.nat_rules(rp.save(node, 4))
    chain = next(line.split()[1] for line in saved if line.startswith("-A CNI-DN-"))
    rp.iptables(node, ["-t", "nat", "-F", "CNI-HOSTPORT-DNAT"])

    found = _pmctl(node, tmp_path, "check", "-o", "json")
    assert found.returncode == 1, found.stdout + found.stderr
    orphan = [p for p in json.loads(found.stdout)["problems"] if p["kind"] == "orphan"]
    assert [(p["chain"], p["container_id"]) for p in orphan] == [(chain, "moved1")]
    assert orphan[0]["fix"] is None, orphan[0]
    assert "gc keeps it" in orphan[0]["why"]
    gc = _pmctl(node, tmp_path, "gc", "--yes", "--min-age", "0")
    assert gc.returncode == 0 and f":{chain} " in rp.save(node, 4), gc.stdout + gc.stderr

    # The commands the prose gives remove it; nothing else is left to do.
    for command in re.findall(r"`([^`]+)`", orphan[0]["why"]):
        argv = shlex.split(command)
        assert argv[0] == "iptables-nft" and argv[-1] == chain, command
        rp.iptables(node, argv[1:])
    healthy = _pmctl(node, tmp_path, "check", "-o", "json")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    upstream.run(V191, "CHECK", node, "moved1", new, check=True)


def _delete_rule(ns: str, cid: str, port: int) -> None:
    """Delete, by handle, the IPv4 DNAT rule of container `cid` for host port `port`."""
    listed = json.loads(upstream.nft(ns, "-j", "list", "table", "ip", "cni_hostport").stdout)
    [rule] = [
        item["rule"]
        for item in listed["nftables"]
        if "rule" in item
        and item["rule"].get("comment") == cid
        and f'"right": {port}}}' in json.dumps(item["rule"]["expr"])
    ]
    upstream.nft(ns, "delete", "rule", "ip", "cni_hostport", rule["chain"], "handle",
                 str(rule["handle"]))  # fmt: skip


def _container_rules(ns: str) -> set:
    """(chain, rule) of every container rule of the IPv4 table: where each rule is, in
    no order (nft keeps a rule appended to hostip_hostports last)."""
    found, chain = set(), None
    for line in _plugin_tables(ns).splitlines():
        words = line.split()
        if words[:1] == ["chain"]:
            chain = words[1]
        elif "comment" in words and words[0] != "comment":
            found.add((chain, line.strip()))
    return found


@pytest.mark.parametrize("one_mapping", [False, True], ids=["node", "one-mapping"])
@pytest.mark.parametrize("last", ["v1.7.1", "v1.9.1"])
def test_a_lost_host_ip_rule_on_a_node_v191_has_run_goes_where_v191s_check_counts_it(
    node: str, tmp_path: Path, last: str, one_mapping: bool
) -> None:
    """Two plugin versions on one node (an upgrade, two runtimes, a downgrade): v1.9.1
    puts host-IP rules in hostports, v1.7.1 in hostip_hostports. Once v1.9.1 has run
    (hostports_all is there) it judges the node: its CHECK counts hostports alone, and
    check --repair writes v1.9.1's entry over a v1.7.1 one, after which nothing tells
    who ran last. A container that lost a host-IP rule gets it back in hostports, and
    a v1.7.1 container's host-IP rules still in hostip_hostports move there too:
    v1.9.1's CHECK of both passes, and the check after is healthy. (The repair put a
    v1.7.1 container's rule back in hostip_hostports, so that v1.9.1's CHECK of it
    failed on an upgraded node, and check called that node healthy.)"""
    first = "v1.9.1" if last == "v1.7.1" else "v1.7.1"
    ports = [_pm(9011, 90, host_ip="127.0.0.1"), _pm(9012, 90, host_ip="127.0.0.1")]
    mine = _cached(tmp_path, "mine", upstream.nft_conf("podman", ["10.88.0.21/16"], ports))
    upstream.run(first, "ADD", node, "mine", mine, check=True)
    later = [_pm(8021, 80), _pm(9021, 90, host_ip="127.0.0.1")]
    other = _cached(tmp_path, "other", upstream.nft_conf("podman", ["10.88.0.22/16"], later))
    upstream.run(last, "ADD", node, "other", other, check=True)
    old_one = "mine" if first == "v1.7.1" else "other"
    before = _container_rules(node)
    assert (
        "hostip_hostports",
        f"ip daddr 127.0.0.1 tcp dport 90{'11' if old_one == 'mine' else '21'} dnat to"
        f' 10.88.0.{"21" if old_one == "mine" else "22"}:90 comment "{old_one}"',
    ) in before, before

    _delete_rule(node, "mine", 9011)
    assert upstream.run(V191, "CHECK", node, "mine", mine).returncode != 0
    found = _pmctl(node, tmp_path, "check", "-o", "json")
    assert found.returncode == 1, found.stdout + found.stderr
    # (With v1.7.1's ADD last the node's entry is reported too: nft-entry-not-local.)
    problems = {(p["kind"], p["chain"], p["container_id"])
                for p in json.loads(found.stdout)["problems"] if p["container_id"]}  # fmt: skip
    assert problems == {("nft-missing-rules", "hostports", cid) for cid in {"mine", old_one}}
    if one_mapping:
        spec = ["-p", "127.0.0.1:9011:90", "-p", "127.0.0.1:9012:90"]
        args = ["--network", "podman", "--container", "mine", "--ip", "10.88.0.21/16", *spec]
        done = _pmctl(node, tmp_path, "check", "--repair", *args)
        if old_one == "other":  # (a mapping checked alone repairs that one alone)
            done = _pmctl(node, tmp_path, "check", "--repair")
    else:
        done = _pmctl(node, tmp_path, "check", "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not [rule for rule in _container_rules(node) if rule[0] == "hostip_hostports"]
    upstream.run(V191, "CHECK", node, "mine", mine, check=True)
    upstream.run(V191, "CHECK", node, "other", other, check=True)
    after = _pmctl(node, tmp_path, "check", "-o", "json")
    assert after.returncode == 0, after.stdout + after.stderr


@pytest.mark.parametrize("one_mapping", [False, True], ids=["node", "one-mapping"])
def test_an_upgraded_nodes_old_host_ip_rule_is_moved_where_v191s_check_counts_it(
    node: str, tmp_path: Path, one_mapping: bool
) -> None:
    """v1.7.1 put a container's host-IP rules in hostip_hostports, the right place on a
    v1.7.1 node (check healthy there). After an upgrade (a v1.9.1 ADD: hostports_all,
    v1.9's entry) v1.9.1 runs the node's CHECK, which counts a container's DNAT rules
    in hostports alone: that container's CHECK fails (FACTS.md), also for its IPv6 `::1`
    rule in the IPv6 table v1.9.1 has not touched. check said healthy; now it reports
    the rules missing from hostports (nft-missing-rules), and --repair moves them there
    (one transaction: added to hostports, deleted from hostip_hostports), after which
    v1.9.1's CHECK passes and its DEL leaves nothing."""
    ports = [_pm(8011, 80), _pm(9011, 90, host_ip="127.0.0.1"), _pm(9012, 90, host_ip="::1")]
    ips = ["10.88.0.21/16", "fd00:88::21/64"]
    old = _cached(tmp_path, "old1", upstream.nft_conf("podman", ips, ports))
    upstream.run("v1.7.1", "ADD", node, "old1", old, check=True)
    v17 = _pmctl(node, tmp_path, "check")
    assert v17.returncode == 0, v17.stdout + v17.stderr  # (right on a v1.7.1 node)
    new = _cached(tmp_path, "new1", upstream.nft_conf("podman", ["10.88.0.22/16"], [_pm(8021, 80)]))
    upstream.run(V191, "ADD", node, "new1", new, check=True)
    assert upstream.run(V191, "CHECK", node, "old1", old).returncode != 0

    found = _pmctl(node, tmp_path, "check", "-o", "json")
    assert found.returncode == 1, found.stdout + found.stderr
    problems = {(p["kind"], p["family"], p["chain"], p["container_id"])
                for p in json.loads(found.stdout)["problems"]}  # fmt: skip
    assert problems == {("nft-missing-rules", f, "hostports", "old1") for f in (4, 6)}, problems
    if one_mapping:
        spec = ["-p", "8011:80", "-p", "127.0.0.1:9011:90", "-p", "[::1]:9012:90"]
        args = [
            "--network",
            "podman",
            "--container",
            "old1",
            *[a for ip in ips for a in ("--ip", ip)],
        ]
        done = _pmctl(node, tmp_path, "check", "--repair", *args, *spec)
    else:
        done = _pmctl(node, tmp_path, "check", "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    text = upstream.ruleset_text(node)
    assert "127.0.0.1 tcp dport 9011" in text and "::1 tcp dport 9012" in text, text
    _moved_where_v191s_check_counts(node, tmp_path, ("ip", "ip6"), {"old1": old, "new1": new})
    for cid, conf in (("old1", old), ("new1", new)):
        upstream.run(V191, "DEL", node, cid, conf, check=True)
    assert "comment" not in upstream.ruleset_text(node).replace('comment "CNI portmap plugin"', "")


@pytest.mark.parametrize("upgraded_by", ["another-v191-add", "this-add"])
def test_add_of_a_v171_container_moves_its_host_ip_rules_where_v191s_check_counts_them(
    node: str, tmp_path: Path, upgraded_by: str
) -> None:
    """v1.7.1 put old1's host-IP rules in hostip_hostports (IPv4 and IPv6). `portmapctl
    add` of old1 with the same mappings is v1.9.1's ADD (the node is upgraded after it,
    if another v1.9.1 ADD has not done so): its host-IP rules go to hostports, where
    v1.9.1's CHECK counts them, and leave hostip_hostports in the same transaction.
    (add wrote the copy to hostports and left the old rule, which v1.9.1's CHECK and
    portmapctl check both passed over; or, where this add itself upgraded the node,
    wrote nothing, so that v1.9.1's CHECK of old1 failed right after it.)"""
    ports = [_pm(8011, 80), _pm(9090, 90, host_ip="127.0.0.1"), _pm(9092, 92, "udp", "::1")]
    ips = ["10.88.0.21/16", "fd00:88::21/64"]
    old = _cached(tmp_path, "old1", upstream.nft_conf("podman", ips, ports))
    upstream.run("v1.7.1", "ADD", node, "old1", old, check=True)
    confs = {"old1": old}
    if upgraded_by == "another-v191-add":
        confs["new1"] = _cached(
            tmp_path, "new1", upstream.nft_conf("podman", ["10.88.0.22/16"], [_pm(8021, 80)])
        )
        upstream.run(V191, "ADD", node, "new1", confs["new1"], check=True)
    spec = ["-p", "8011:80", "-p", "127.0.0.1:9090:90", "-p", "[::1]:9092:92/udp"]
    args = ["--backend", "nftables", "--network", "podman", "--container", "old1"]
    done = _pmctl(node, tmp_path, "add", *args, *[a for ip in ips for a in ("--ip", ip)], *spec)
    assert done.returncode == 0, done.stdout + done.stderr
    for family, rule in (("ip", "ip daddr 127.0.0.1 tcp dport 9090"),
                         ("ip6", "ip6 daddr ::1 udp dport 9092")):  # fmt: skip
        listed = {
            chain: upstream.nft(node, "list", "chain", family, "cni_hostport", chain).stdout
            for chain in ("hostports", "hostip_hostports")
        }
        assert listed["hostports"].count(rule) == 1, listed
        assert "comment" not in listed["hostip_hostports"], listed
    for cid, conf in confs.items():
        upstream.run(V191, "CHECK", node, cid, conf, check=True)
    after = _pmctl(node, tmp_path, "check")
    assert after.returncode == 0, after.stdout + after.stderr
    upstream.run(V191, "DEL", node, "old1", old, check=True)
    assert '"old1"' not in upstream.ruleset_text(node)


@pytest.mark.parametrize("one_mapping", [False, True], ids=["node", "one-mapping"])
def test_a_moved_host_ip_rule_keeps_its_port_ahead_of_a_later_wildcard_rule(
    node: str, tmp_path: Path, one_mapping: bool
) -> None:
    """A v1.7.1 container with host-IP mappings alone (old1: 127.0.0.1:9011), then,
    after the upgrade, v1.9.1's ADD of new1 mapping the same port on every address
    (9011, the plugin refuses no such pair). hostports_all jumps to hostip_hostports
    first: 127.0.0.1:9011 goes to old1, as it did on the v1.7.1 node. --repair moved
    old1's rule to the end of hostports (none of old1's rules there to place it by),
    behind new1's: nftables is first-match-wins, so the repair handed old1's live port
    to new1 (v1.9.1's CHECK of both passing: it counts). The moved rules go first in
    hostports, in hostip_hostports' order: every port goes where it went."""
    ports = [_pm(9011, 90, host_ip="127.0.0.1"), _pm(9012, 90, host_ip="127.0.0.1")]
    old = _cached(tmp_path, "old1", upstream.nft_conf("podman", ["10.88.0.21/16"], ports))
    upstream.run("v1.7.1", "ADD", node, "old1", old, check=True)
    new = _cached(tmp_path, "new1", upstream.nft_conf("podman", ["10.88.0.22/16"], [_pm(9011, 91)]))
    upstream.run(V191, "ADD", node, "new1", new, check=True)
    if one_mapping:
        spec = ["-p", "127.0.0.1:9011:90", "-p", "127.0.0.1:9012:90"]
        args = ["--network", "podman", "--container", "old1", "--ip", "10.88.0.21/16", *spec]
        done = _pmctl(node, tmp_path, "check", "--repair", *args)
    else:
        done = _pmctl(node, tmp_path, "check", "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    listed = upstream.nft(node, "list", "chain", "ip", "cni_hostport", "hostports").stdout
    dnats = [line.strip() for line in listed.splitlines() if "dnat to" in line]
    assert dnats == [
        'ip daddr 127.0.0.1 tcp dport 9011 dnat to 10.88.0.21:90 comment "old1"',
        'ip daddr 127.0.0.1 tcp dport 9012 dnat to 10.88.0.21:90 comment "old1"',
        'tcp dport 9011 dnat to 10.88.0.22:91 comment "new1"',
    ], listed
    for cid, conf in (("old1", old), ("new1", new)):
        upstream.run(V191, "CHECK", node, cid, conf, check=True)


def test_a_v171_nodes_deleted_table_made_v191s_is_repaired_in_one_pass(
    node: str, tmp_path: Path
) -> None:
    """A v1.7.1 node: d1 dual-stack with host-IP mappings (127.0.0.1, ::1), s1 IPv4
    alone; `nft delete table ip cni_hostport`. s1 has IPv4 alone, so the IPv6 table
    cannot tell who wrote the IPv4 one (lone_families) and check --repair makes it as
    v1.9.1 does, with hostports_all: the node is upgraded from then on. The plan still
    judged it as not upgraded: d1's 127.0.0.1 rule went back to hostip_hostports and
    its ::1 rule stayed there, which the check in the same run reported as missing from
    hostports (exit 1 after "repaired"), for a second --repair to move. Now one pass
    leaves what the next check calls healthy, and v1.9.1's CHECK of both passes."""
    ports = [_pm(8051, 80), _pm(9051, 90, host_ip="127.0.0.1"), _pm(9052, 90, host_ip="::1")]
    d1 = _cached(
        tmp_path, "d1", upstream.nft_conf("podman", ["10.88.0.51/16", "fd00:88::51/64"], ports)
    )
    s1 = _cached(tmp_path, "s1", upstream.nft_conf("podman", ["10.88.0.52/16"], [_pm(8052, 80)]))
    for cid, conf in (("d1", d1), ("s1", s1)):
        upstream.run("v1.7.1", "ADD", node, cid, conf, check=True)
    upstream.nft(node, "delete", "table", "ip", "cni_hostport")
    done = _pmctl(node, tmp_path, "check", "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "hostports_all" in upstream.ruleset_text(node)
    for family in ("ip", "ip6"):
        listed = upstream.nft(node, "list", "chain", family, "cni_hostport", "hostip_hostports")
        assert "comment" not in listed.stdout, listed.stdout
    after = _pmctl(node, tmp_path, "check")
    assert after.returncode == 0, after.stdout + after.stderr
    for cid, conf in (("d1", d1), ("s1", s1)):
        upstream.run(V191, "CHECK", node, cid, conf, check=True)


@pytest.mark.parametrize("plugin", ["v1.7.1", V191])
def test_a_deleted_tables_repair_keeps_the_other_tables_single_family_host_ip_rule(
    node: str, tmp_path: Path, plugin: str
) -> None:
    """v1.7.1 added v6only (IPv6 alone, `[::1]:9012`, snat off: a container whose v1.7.1
    CHECK passes, which counts its rule in hostip_hostports), then `plugin` added v4only
    (IPv4 alone), and `nft delete table ip cni_hostport`. Nothing on the node tells a
    v1.7.1 node from one upgraded to v1.9.1 (the rulesets are the same), so the IPv4 table
    comes back as v1.9.1 writes it (v4only has IPv4 alone: lone_families). check
    --repair moved v6only's rule from the IPv6 table's hostip_hostports to hostports too
    (judging the node upgraded): on the v1.7.1 node, which never ran v1.9, v1.7.1's CHECK
    of v6only then failed. The IPv6 table, which no v1.9 ADD wrote, keeps it: each
    plugin's CHECK of each container says what it said before the table was deleted."""
    v6 = upstream.nft_conf("podman", ["fd00:88::61/64"], [_pm(9012, 80, host_ip="::1")], snat=False)
    v4 = upstream.nft_conf("podman", ["10.88.0.62/16"], [_pm(8062, 80)])
    confs = {"v6only": _cached(tmp_path, "v6only", v6), "v4only": _cached(tmp_path, "v4only", v4)}
    upstream.run("v1.7.1", "ADD", node, "v6only", v6, check=True)
    upstream.run(plugin, "ADD", node, "v4only", v4, check=True)
    before = {cid: upstream.run(plugin, "CHECK", node, cid, conf).returncode
              for cid, conf in confs.items()}  # fmt: skip
    assert before == {"v6only": 0 if plugin == "v1.7.1" else 1, "v4only": 0}, before
    upstream.nft(node, "delete", "table", "ip", "cni_hostport")
    done = _pmctl(node, tmp_path, "check", "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "hostports_all" in _plugin_tables(node)
    kept = upstream.nft(node, "list", "chain", "ip6", "cni_hostport", "hostip_hostports").stdout
    assert 'ip6 daddr ::1 tcp dport 9012 dnat to [fd00:88::61]:80 comment "v6only"' in kept, kept
    after = {cid: upstream.run(plugin, "CHECK", node, cid, conf).returncode
             for cid, conf in confs.items()}  # fmt: skip
    assert after == before, (after, upstream.ruleset_text(node))
    again = _pmctl(node, tmp_path, "check")
    assert again.returncode == 0, again.stdout + again.stderr
    for cid, conf in confs.items():
        upstream.run(plugin, "DEL", node, cid, conf, check=True)
    assert "comment" not in upstream.ruleset_text(node).replace('comment "CNI portmap plugin"', "")


@pytest.mark.parametrize(
    "old_ip,new_ip,ports,snat",
    [
        # IPv6 with SNAT: v1.7.1's CHECK wants 2 masquerading rules per mapping there.
        ("fd00:88::63/64", "10.88.0.64/16", [_pm(9013, 80, host_ip="::1")], True),
        # IPv4 with SNAT and 3 mappings: it wants 3, the ADD wrote 2.
        ("10.88.0.63/16", "fd00:88::64/64",
         [_pm(8063, 80), _pm(8064, 81), _pm(9013, 82, host_ip="127.0.0.1")], True),
        # SNAT off, but a mapping on every address given as `::`: it wants a
        # hostip_hostports rule for it, where the ADD wrote it to hostports.
        ("fd00:88::63/64", "10.88.0.64/16",
         [_pm(9013, 80, host_ip="::1"), _pm(8066, 81, host_ip="::")], False),
    ],
)  # fmt: skip
def test_an_upgraded_nodes_single_family_host_ip_rule_moves_where_v171s_check_fails_anyway(
    node: str, tmp_path: Path, old_ip: str, new_ip: str, ports: list, snat: bool
) -> None:
    """keeps_hostip leaves a single-family container's host-IP rule in a v1.6/v1.7
    table's hostip_hostports because v1.7.1's CHECK counts it there and passes. Where
    that CHECK fails whatever is where (SNAT on: it wants a masquerading rule per
    mapping, two per mapping in IPv6; the ADD wrote two per container in IPv4, one in
    IPv6; it wants a hostip_hostports rule for a mapping with any host IP, `::` too),
    keeping it helps no CHECK: on this node, upgraded by v1.9.1's ADD of a
    container of the other family, v1.9.1's CHECK of old1 failed and check said healthy.
    Moved, v1.9.1's CHECK passes; v1.7.1's fails as it did."""
    old = _cached(tmp_path, "old1", upstream.nft_conf("podman", [old_ip], ports, snat=snat))
    upstream.run("v1.7.1", "ADD", node, "old1", old, check=True)
    assert upstream.run("v1.7.1", "CHECK", node, "old1", old).returncode != 0
    new = _cached(tmp_path, "new1", upstream.nft_conf("podman", [new_ip], [_pm(8065, 80)]))
    upstream.run(V191, "ADD", node, "new1", new, check=True)
    assert upstream.run(V191, "CHECK", node, "old1", old).returncode != 0
    found = _pmctl(node, tmp_path, "check", "-o", "json")
    assert found.returncode == 1, found.stdout + found.stderr
    problems = {(p["kind"], p["chain"], p["container_id"])
                for p in json.loads(found.stdout)["problems"]}  # fmt: skip
    assert problems == {("nft-missing-rules", "hostports", "old1")}, problems
    done = _pmctl(node, tmp_path, "check", "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    family = "ip6" if ":" in old_ip else "ip"
    _moved_where_v191s_check_counts(node, tmp_path, (family,), {"old1": old, "new1": new})


def _moved_where_v191s_check_counts(
    node: str, cache: Path, families: Sequence[str], confs: Dict[str, Dict[str, Any]]
) -> None:
    """No container's rule left in `families`' hostip_hostports, v1.9.1's CHECK of each
    of `confs` passes, and check after says healthy."""
    for family in families:
        listed = upstream.nft(node, "list", "chain", family, "cni_hostport", "hostip_hostports")
        assert "comment" not in listed.stdout, listed.stdout
    for cid, conf in confs.items():
        upstream.run(V191, "CHECK", node, cid, conf, check=True)
    after = _pmctl(node, cache, "check")
    assert after.returncode == 0, after.stdout + after.stderr


def _masq_all_cached(cache: Path, cid: str, ips: list, ports: list) -> Dict[str, Any]:
    """A `masqAll` config (key order as libcni passes a conflist's), cached."""
    conf = rp.plugin_conf("mynet", ips, ports)
    conf = {k: conf[k] for k in ("cniVersion", "name", "type")} | {"masqAll": True} | {
        k: v for k, v in conf.items() if k not in ("cniVersion", "name", "type")
    }  # fmt: skip
    rp.write_cni_cache(cache, "mynet", cid, "eth0", conf, ports, ips)
    return conf


def _drop_dnat(ns: str, chain: str, family: int, port: int, to: str) -> None:
    rp.iptables(ns, ["-t", "nat", "-D", chain, "-p", "tcp", "-m", "tcp", "--dport", str(port),
                     "-j", "DNAT", "--to-destination", to], family=family)  # fmt: skip


def _debian_and_upstream_under_masq_all(node: str, cache: Path) -> Tuple[dict, dict, dict]:
    """deb1 by Debian's 1.1.1 (8080, 8090) and up1 by upstream v1.9.1 (8081, 8091), both
    dual-stack and cached with `"masqAll": true`: their configs and the nat rules of
    both families as the plugins left them."""
    ports = [_pm(8080, 80), _pm(8090, 90)]
    deb = _masq_all_cached(cache, "deb1", ["10.88.0.5/16", "fd00:88::5/64"], ports)
    rp.run_plugin("ADD", node, "deb1", deb, check=True)
    up_ports = [_pm(8081, 80), _pm(8091, 90)]
    up = _masq_all_cached(cache, "up1", ["10.88.0.6/16", "fd00:88::6/64"], up_ports)
    upstream.run("v1.9.1", "ADD", node, "up1", up, check=True)
    return deb, up, {family: rp.nat_rules(rp.save(node, family)) for family in (4, 6)}


def test_a_debian_chain_under_a_masq_all_config_is_repaired_in_its_own_shape(
    node: str, tmp_path: Path
) -> None:
    """Debian's 1.1.1 ignores `masqAll`: its chain marks hairpin traffic on the subnet
    (and localhost), and check calls that chain healthy, as its plugin wrote it. Once
    it lost a rule, check called its mark rules `extra-rules` (`4 rules its cached
    config does not make`) and upstream's masqAll mark rules missing, and --repair
    rewrote the whole chain in upstream's shape: 1.1.1's CHECK of it then failed (`rule
    [... -s 10.88.0.5/16 -j CNI-HOSTPORT-SETMARK] ... not found`). Now the lost rule
    alone is missing and put back, beside a container of upstream v1.9.1 under the
    same config whose chain (upstream's masqAll shape) is repaired in that shape."""
    deb, up, before = _debian_and_upstream_under_masq_all(node, tmp_path)
    healthy = _pmctl(node, tmp_path, "check")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr

    deb_chain, up_chain = (chain_name("mynet", cid, "DN-") for cid in ("deb1", "up1"))
    _drop_dnat(node, deb_chain, 4, 8090, "10.88.0.5:90")
    _drop_dnat(node, deb_chain, 6, 8090, "[fd00:88::5]:90")
    _drop_dnat(node, up_chain, 4, 8091, "10.88.0.6:90")
    found = _pmctl(node, tmp_path, "check", "-o", "json")
    assert found.returncode == 1, found.stdout + found.stderr
    problems = json.loads(found.stdout)["problems"]
    assert sorted((p["kind"], p["family"], p["container_id"]) for p in problems) == [
        ("missing-rules", 4, "deb1"),
        ("missing-rules", 4, "up1"),
        ("missing-rules", 6, "deb1"),
    ], problems
    for problem in problems:
        assert problem["detail"].startswith("1 of "), problem
        assert "--dport 8090 -j DNAT" in problem["detail"] or "8091" in problem["detail"]

    done = _pmctl(node, tmp_path, "check", "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    assert {family: rp.nat_rules(rp.save(node, family)) for family in (4, 6)} == before
    for result in rp.run_check(node, "deb1", deb):
        assert result.returncode == 0, result.stdout + result.stderr
    upstream.run("v1.9.1", "CHECK", node, "up1", up, check=True)


def test_one_mapping_checked_with_masq_all_judges_a_debian_chain_in_its_own_shape(
    node: str, tmp_path: Path
) -> None:
    """The same chain checked as one mapping given with --masq-all (scripts' stand-in
    for the plugin's CHECK): complete, it was `missing-rules` and `extra-rules` (exit 1)
    where the node check calls it healthy, and the one-mapping --repair rewrote it in
    upstream's masqAll shape, which 1.1.1's CHECK rejects. Now it is judged as the node
    check judges it: healthy, and with a DNAT rule lost, that rule alone missing and put
    back; upstream v1.9.1's chain under the same flag stays judged in its own shape."""
    deb, up, before = _debian_and_upstream_under_masq_all(node, tmp_path)
    given = {
        "deb1": ["--ip", "10.88.0.5/16", "--ip", "fd00:88::5/64", "-p", "8080:80", "-p", "8090:90"],
        "up1": ["--ip", "10.88.0.6/16", "--ip", "fd00:88::6/64", "-p", "8081:80", "-p", "8091:90"],
    }

    def one(cid: str, *more: str):
        return _pmctl(node, tmp_path, "check", "--network", "mynet", "--container", cid,
                      *given[cid], "--masq-all", *more)  # fmt: skip

    for cid in given:
        healthy = one(cid)
        assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    same = one("deb1", "--repair")
    assert same.returncode == 0 and "repaired" not in same.stderr, same.stdout + same.stderr
    assert {family: rp.nat_rules(rp.save(node, family)) for family in (4, 6)} == before

    _drop_dnat(node, chain_name("mynet", "deb1", "DN-"), 4, 8090, "10.88.0.5:90")
    found = one("deb1", "-o", "json")
    assert found.returncode == 1, found.stdout + found.stderr
    problems = json.loads(found.stdout)["problems"]
    assert [(p["kind"], p["family"]) for p in problems] == [("missing-rules", 4)], problems
    assert problems[0]["detail"].startswith("1 of 6 rules missing"), problems
    done = one("deb1", "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    assert {family: rp.nat_rules(rp.save(node, family)) for family in (4, 6)} == before
    for result in rp.run_check(node, "deb1", deb):
        assert result.returncode == 0, result.stdout + result.stderr
    upstream.run("v1.9.1", "CHECK", node, "up1", up, check=True)


def test_one_mapping_of_a_debian_chain_two_interfaces_share_is_judged_as_the_node_check_does(
    node: str, tmp_path: Path
) -> None:
    """deb1 on mynet through eth0 and net1 (Multus), both ADDed by Debian's 1.1.1 under a
    cached `masqAll` config: one chain holds both interfaces' rules in 1.1.1's shape.
    The node check calls it healthy; the check of eth0's mapping given with
    --masq-all said missing-rules and extra-rules (it judged a shared chain only in
    upstream's masqAll shape), and its --repair rewrote the chain so."""
    ports = [_pm(8080, 80)]
    confs = {}
    for ifname, ip in (("eth0", "10.88.0.5/16"), ("net1", "10.88.0.7/16")):
        conf = rp.plugin_conf("mynet", [ip], ports)
        conf["prevResult"]["interfaces"][0]["name"] = ifname  # (the delegate's interface)
        conf = {k: conf[k] for k in ("cniVersion", "name", "type")} | {"masqAll": True} | {
            k: v for k, v in conf.items() if k not in ("cniVersion", "name", "type")
        }  # fmt: skip
        rp.run_plugin("ADD", node, "deb1", conf, ifname=ifname, check=True)
        rp.write_cni_cache(tmp_path, "mynet", "deb1", ifname, conf, ports, [ip])
        confs[ifname] = conf
    before = rp.nat_rules(rp.save(node, 4))
    assert sum(ln.startswith(f"-A {chain_name('mynet', 'deb1', 'DN-')} ") for ln in before) == 4
    whole = _pmctl(node, tmp_path, "check", "--family", "4")
    assert whole.returncode == 0, whole.stdout + whole.stderr
    given = ["--network", "mynet", "--container", "deb1", "--ip", "10.88.0.5/16",
             "-p", "8080:80", "--masq-all", "--ifname", "eth0", "--family", "4"]  # fmt: skip
    one = _pmctl(node, tmp_path, "check", *given, "-o", "json")
    assert one.returncode == 0, one.stdout + one.stderr
    assert json.loads(one.stdout)["problems"] == []
    done = _pmctl(node, tmp_path, "check", *given, "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    assert rp.nat_rules(rp.save(node, 4)) == before
    for ifname, conf in confs.items():
        for result in rp.run_check(node, "deb1", conf, ifname=ifname):
            assert result.returncode == 0, result.stdout + result.stderr


_SEND = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('', int(sys.argv[3]) if len(sys.argv) > 3 else 0))\n"
    "s.sendto(b'x', (sys.argv[1], int(sys.argv[2])))\n"
)


def _ip(*args: str) -> None:
    subprocess.run([rp._ip(), *args], check=True, capture_output=True)


@pytest.fixture
def routed(node: str) -> Iterator[str]:
    """A client namespace routed through `node` (192.0.2.1) to a remote host
    (198.51.100.2), and a container subnet 10.88.0.0/16 behind node's cni0."""
    client, remote = rp.create_netns("pmt-cli"), rp.create_netns("pmt-rem")
    try:
        _ip("-n", node, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
            "netns", client)  # fmt: skip
        _ip("-n", node, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0",
            "netns", remote)  # fmt: skip
        _ip("-n", node, "link", "add", "cni0", "type", "veth", "peer", "name", "cni0p")
        for ns, dev, addr in ((node, "eth0", "192.0.2.1/24"), (node, "eth1", "198.51.100.1/24"),
                              (node, "cni0", "10.88.0.1/16"), (client, "eth0", "192.0.2.2/24"),
                              (remote, "eth0", "198.51.100.2/24")):  # fmt: skip
            _ip("-n", ns, "addr", "add", addr, "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
        _ip("-n", node, "link", "set", "cni0p", "up")
        _ip("-n", client, "route", "add", "default", "via", "192.0.2.1")
        _ip("-n", remote, "route", "add", "default", "via", "198.51.100.1")
        _ip("netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        yield client
    finally:
        rp.delete_netns(client)
        rp.delete_netns(remote)


def _flows_of(node: str, client: str, *to: Tuple[str, int]) -> set:
    """The UDP flows one datagram from the client to each (address, port) leaves in
    node's conntrack: (port, where it went)."""
    _ip("netns", "exec", node, "conntrack", "-F")
    for address, port in to:
        _ip("netns", "exec", client, sys.executable, "-c", _SEND, address, str(port))
    return rp.udp_flows(node)


def test_an_older_plugins_entry_over_v191s_is_reported_and_made_local_again(
    node: str, routed: str, tmp_path: Path
) -> None:
    """v1.7.1's ADD after v1.9.1's (two runtimes, a downgrade) flushes prerouting and
    writes its own entry, which has no `fib daddr type local`: a datagram the node
    routes to another host (198.51.100.2:5353) was DNATed to the v1.9.1 container that
    maps 5353, and check said healthy and --repair kept it. Now check reports it
    (nft-entry-not-local) and --repair writes v1.9's entry with the same conditions:
    routed traffic passes again, the node's own port mappings of both containers still
    forward, and both plugins' CHECKs pass."""
    new = _cached(tmp_path, "new1", upstream.nft_conf("podman", ["10.88.0.5/16"],
                                                     [_pm(5353, 53, "udp")]))  # fmt: skip
    upstream.run(V191, "ADD", node, "new1", new, check=True)
    old = _cached(tmp_path, "old1", upstream.nft_conf("podman", ["10.88.0.6/16"],
                                                     [_pm(5354, 53, "udp")],
                                                     conditions_v4=["ip saddr != 10.99.0.0/16"]))  # fmt: skip
    upstream.run("v1.7.1", "ADD", node, "old1", old, check=True)
    assert _flows_of(node, routed, ("198.51.100.2", 5353)) == {(5353, "10.88.0.5")}

    found = _pmctl(node, tmp_path, "check", "-o", "json")
    assert found.returncode == 1, found.stdout + found.stderr
    problems = json.loads(found.stdout)["problems"]
    assert [(p["kind"], p["family"], p["chain"]) for p in problems] == [
        ("nft-entry-not-local", 4, "prerouting")
    ], problems
    done = _pmctl(node, tmp_path, "check", "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "repaired: IPv4 nft-entry-not-local nft:prerouting" in done.stderr, done.stderr
    entry = "ip saddr != 10.99.0.0/16 fib daddr type local jump hostports_all"
    for chain in ("prerouting", "output"):
        listed = upstream.nft(node, "list", "chain", "ip", "cni_hostport", chain).stdout
        assert [line.strip() for line in listed.splitlines() if "jump" in line] == [entry]
    assert _flows_of(node, routed, ("198.51.100.2", 5353)) == {(5353, "198.51.100.2")}
    assert _flows_of(node, routed, ("192.0.2.1", 5353), ("192.0.2.1", 5354)) == {
        (5353, "10.88.0.5"),
        (5354, "10.88.0.6"),
    }
    upstream.run(V191, "CHECK", node, "new1", new, check=True)
    upstream.run("v1.7.1", "CHECK", node, "old1", old, check=True)
    healthy = _pmctl(node, tmp_path, "check")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr


def _downgraded_with_routed_streams(node: str, routed: str, cache: Path) -> Tuple[str, ...]:
    """v1.7.1's ADD after v1.9.1's (its entry not local), and two streams the node
    routes to 198.51.100.2: one on the mapped 5353 (DNATed to new1, which maps it: that
    stream is returned), one on 6000, which nothing maps."""
    new = _cached(cache, "new1", upstream.nft_conf("podman", ["10.88.0.5/16"],
                                                  [_pm(5353, 53, "udp")]))  # fmt: skip
    upstream.run(V191, "ADD", node, "new1", new, check=True)
    old = _cached(cache, "old1", upstream.nft_conf("podman", ["10.88.0.6/16"],
                                                  [_pm(5354, 53, "udp")]))  # fmt: skip
    upstream.run("v1.7.1", "ADD", node, "old1", old, check=True)
    stream, other = ("198.51.100.2", "5353", "40000"), ("198.51.100.2", "6000", "40001")
    _ip("netns", "exec", node, "conntrack", "-F")
    for args in (stream, other):
        _ip("netns", "exec", routed, sys.executable, "-c", _SEND, *args)
    assert rp.udp_flows(node) == {(5353, "10.88.0.5"), (6000, "198.51.100.2")}
    return stream


def test_repair_of_an_older_plugins_entry_also_lets_go_of_the_routed_flows_it_took(
    node: str, routed: str, tmp_path: Path
) -> None:
    """A stream the node routes to another host on a mapped UDP port (here from source
    port 40000 to 198.51.100.2:5353), DNATed to the container while v1.7.1's entry was
    there, kept its conntrack entry after --repair made the entry local again: the same
    stream's next datagram still went to the container. --repair now deletes such
    entries (routed, DNATed to a container address and port the rules map the port
    to), and no other routed flow's (one to a port nothing maps stays)."""
    stream = _downgraded_with_routed_streams(node, routed, tmp_path)

    done = _pmctl(node, tmp_path, "check", "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    assert rp.udp_flows(node) == {(6000, "198.51.100.2")}
    _ip("netns", "exec", routed, sys.executable, "-c", _SEND, *stream)
    assert rp.udp_flows(node) == {(5353, "198.51.100.2"), (6000, "198.51.100.2")}


def test_gc_on_a_v171_node_lets_go_of_the_routed_flows_the_removed_rules_took(
    node: str, routed: str, tmp_path: Path
) -> None:
    """v1.6/v1.7's entry has no `fib daddr type local`: on a node only they ran, a
    stream the node routes to another host (198.51.100.2:5353) is DNATed to the
    container that maps 5353. That container went (no DEL, no cache entry) and gc
    removed its rules, but flushed only the flows to the node's own addresses: the
    routed stream kept its conntrack entry and its next datagram still went to the dead
    container's address. gc now deletes a routed flow DNATed to exactly a removed
    rule's destination on its host port; the live container's routed flow, and one to
    a port nothing maps, stay; the live container passes v1.7.1's CHECK and DEL."""
    dead = upstream.nft_conf("podman", ["10.88.0.5/16"], [_pm(5353, 53, "udp")])
    upstream.run("v1.7.1", "ADD", node, "dead1", dead, check=True)
    live = _cached(tmp_path, "live1", upstream.nft_conf("podman", ["10.88.0.6/16"],
                                                       [_pm(6000, 60, "udp")]))  # fmt: skip
    upstream.run("v1.7.1", "ADD", node, "live1", live, check=True)
    stream = ("198.51.100.2", "5353", "40000")
    _ip("netns", "exec", node, "conntrack", "-F")
    for args in (stream, ("198.51.100.2", "6000", "40001"), ("198.51.100.2", "7000", "40002")):
        _ip("netns", "exec", routed, sys.executable, "-c", _SEND, *args)
    assert rp.udp_flows(node) == {(5353, "10.88.0.5"), (6000, "10.88.0.6"),
                                  (7000, "198.51.100.2")}  # fmt: skip

    done = _pmctl(node, tmp_path, "gc", "--yes", "--min-age", "0", "-o", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert {c["container_id"] for c in doc["removed"]} == {"dead1"}
    assert doc["conntrack_deleted"] == 1, doc
    assert rp.udp_flows(node) == {(6000, "10.88.0.6"), (7000, "198.51.100.2")}
    _ip("netns", "exec", routed, sys.executable, "-c", _SEND, *stream)
    assert (5353, "198.51.100.2") in rp.udp_flows(node)
    upstream.run("v1.7.1", "CHECK", node, "live1", live, check=True)
    upstream.run("v1.7.1", "DEL", node, "live1", live, check=True)


def _v171_node_with_a_routed_stream(node: str, routed: str, cache: Path) -> Tuple[Any, ...]:
    """old1 added by v1.7.1 alone (its entry not local) and two flows DNATed to it: a
    stream the node routes to another host (198.51.100.2:5353, returned with old1's
    config) and one to the node's own address (192.0.2.1:5353)."""
    old = _cached(cache, "old1", upstream.nft_conf("podman", ["10.88.0.5/16"],
                                                  [_pm(5353, 53, "udp")]))  # fmt: skip
    upstream.run("v1.7.1", "ADD", node, "old1", old, check=True)
    stream = ("198.51.100.2", "5353", "40000")
    _ip("netns", "exec", node, "conntrack", "-F")
    for args in (stream, ("192.0.2.1", "5353", "40001")):
        _ip("netns", "exec", routed, sys.executable, "-c", _SEND, *args)
    assert rp.udp_flows(node) == {(5353, "10.88.0.5")}
    return old, stream


def _entry_local_and_the_routed_stream_let_go(node: str) -> None:
    """v1.9's entry is in, the routed stream's conntrack entry is gone and the flow to
    the node's own address stays."""
    listed = upstream.nft(node, "list", "chain", "ip", "cni_hostport", "prerouting").stdout
    assert "fib daddr type local jump hostports_all" in listed, listed
    flows = subprocess.run([rp._ip(), "netns", "exec", node, "conntrack", "-L", "-p", "udp"],
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "sport=40001 dport=5353" in flows and "sport=40000" not in flows, flows


def test_add_that_makes_a_v171_entry_local_lets_go_of_the_routed_flows_it_took(
    node: str, routed: str, tmp_path: Path
) -> None:
    """`add` on a node v1.7.1 alone ran writes v1.9.1's entry (as v1.9.1's ADD does),
    with `fib daddr type local`: routed traffic is no longer DNATed. But a stream the
    node routes to another host (to 198.51.100.2:5353), DNATed to old1 while v1.7.1's
    entry was there, kept its conntrack entry and its next datagram still went to
    old1; nothing after would let it go (check finds the entry healthy, flush-udp
    looks only at flows to the node's own addresses). add now deletes such flows, as
    check --repair does when it makes an entry local; old1's flow to the node's own
    address stays, and both containers pass v1.9.1's CHECK."""
    old, stream = _v171_node_with_a_routed_stream(node, routed, tmp_path)

    done = _pmctl(node, tmp_path, "add", "--network", "podman", "--container", "new1",
                  "--ip", "10.88.0.6/16", "-p", "6000:60/udp", "--backend", "nftables")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    _entry_local_and_the_routed_stream_let_go(node)
    _ip("netns", "exec", routed, sys.executable, "-c", _SEND, *stream)
    assert rp.udp_flows(node) == {(5353, "10.88.0.5"), (5353, "198.51.100.2")}
    new = upstream.nft_conf("podman", ["10.88.0.6/16"], [_pm(6000, 60, "udp")])
    for cid, conf in (("old1", old), ("new1", new)):
        upstream.run(V191, "CHECK", node, cid, conf, check=True)


def test_an_add_sigtermed_once_it_made_a_v171_entry_local_still_lets_go_of_the_routed_flows(
    node: str, routed: str, tmp_path: Path
) -> None:
    """The add above, SIGTERMed once its `nft -f` went in, before its UDP flush (a
    runtime's timeout, a pod deleted): the way out flushed the flows that misroute to
    the node's own addresses, not the routed stream v1.7.1's entry had DNATed to old1,
    and nothing after would let it go (the next add finds nothing to write, check
    finds the entry healthy). Now the way out lets go of it too, as the finished add
    and a SIGTERMed check --repair do."""
    _v171_node_with_a_routed_stream(node, routed, tmp_path)

    argv = ["add", "--network", "podman", "--container", "new1", "--ip", "10.88.0.6/16",
            "-p", "6000:60/udp", "--backend", "nftables", "--netns", node,
            "--cni-cache-dir", str(tmp_path)]  # fmt: skip
    env = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run"), "PMT_DURING": "-L"}
    code, _out, err = killed_while_writing(argv, env, "add", tmp_path / "marker")
    assert code == -signal.SIGTERM, err
    _entry_local_and_the_routed_stream_let_go(node)


def test_an_add_whose_nft_was_killed_after_it_made_a_v171_entry_local_lets_go_of_the_routed_flows(
    node: str, routed: str, tmp_path: Path
) -> None:
    """The add above, its `nft -f` SIGKILLed just after its commit (the OOM killer, a
    runtime's cgroup torn down): the read after it plans nothing, so the try went in
    and add goes on as having written it. But the routed flows were let go by the plan
    of that last read (nothing: no entry rewritten), not by the transaction that went
    in: the routed stream v1.7.1's entry had DNATed to old1 stayed pinned to it, and
    nothing after would let it go. Now the transaction that went in says which."""
    _old, stream = _v171_node_with_a_routed_stream(node, routed, tmp_path)

    env, killed = upstream.nft_killed_once_after_it_ran(tmp_path / "w")
    done = pmctl.run(["add", "--network", "podman", "--container", "new1", "--ip",
                      "10.88.0.6/16", "-p", "6000:60/udp", "--backend", "nftables", "--netns",
                      node, "--cni-cache-dir", str(tmp_path), "-o", "json"], env=env)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert killed.exists()  # (the wrapper was the nft that wrote)
    result = json.loads(done.stdout)
    assert result["changed"] is True
    assert [w for w in result["warnings"] if "SIGKILL" in w and "everything it writes" in w]
    _entry_local_and_the_routed_stream_let_go(node)
    _ip("netns", "exec", routed, sys.executable, "-c", _SEND, *stream)
    assert rp.udp_flows(node) == {(5353, "10.88.0.5"), (5353, "198.51.100.2")}


def test_repair_of_a_moved_containers_rule_on_a_v171_node_lets_go_of_its_routed_flows(
    node: str, routed: str, tmp_path: Path
) -> None:
    """On a node v1.7.1 alone ran (its entry without `fib daddr type local`), web1's
    rule still sends 5353 to its old address 10.88.0.5 while its cache entry says
    10.88.0.9. A stream the node routes to another host (to 198.51.100.2:5353) had
    been DNATed to 10.88.0.5 by that rule; check --repair replaced the rule but the
    stream kept its conntrack entry, pinned to the old address (the flows to the
    node's own addresses were flushed, the routed one was not). Now a routed flow
    DNATed to exactly a rule the repair deleted (no rule left sending the port there)
    goes too: its next datagram goes where v1.7.1's entry sends the port now, and
    v1.7.1's CHECK passes."""
    moved = upstream.nft_conf("podman", ["10.88.0.5/16"], [_pm(5353, 53, "udp")])
    upstream.run("v1.7.1", "ADD", node, "web1", moved, check=True)
    conf = _cached(tmp_path, "web1", upstream.nft_conf("podman", ["10.88.0.9/16"],
                                                      [_pm(5353, 53, "udp")]))  # fmt: skip
    stream = ("198.51.100.2", "5353", "40000")
    _ip("netns", "exec", node, "conntrack", "-F")
    _ip("netns", "exec", routed, sys.executable, "-c", _SEND, *stream)
    assert rp.udp_flows(node) == {(5353, "10.88.0.5")}

    done = _pmctl(node, tmp_path, "check", "--repair", "-o", "json")
    assert {(p["kind"], p["container_id"]) for p in json.loads(done.stdout)["fixed"]} >= {
        ("extra-rules", "web1"), ("nft-missing-rules", "web1"),
    }, done.stdout + done.stderr  # fmt: skip
    assert rp.udp_flows(node) == set()
    _ip("netns", "exec", routed, sys.executable, "-c", _SEND, *stream)
    assert rp.udp_flows(node) == {(5353, "10.88.0.9")}
    upstream.run("v1.7.1", "CHECK", node, "web1", conf, check=True)


@pytest.mark.parametrize("form", ["node", "mapping"])
def test_a_repair_sigtermed_once_the_entry_went_in_still_lets_go_of_the_routed_flows(
    node: str, routed: str, tmp_path: Path, form: str
) -> None:
    """The same repair, SIGTERMed once its `nft -f` went in (a DaemonSet pod deleted,
    a systemd timer stopped): the entry was local again, but the routed stream's
    conntrack entry stayed, and the next check, finding the entry healthy, never let it
    go. The way out of a SIGTERM now flushes it as a finished repair does; the flow to
    a port nothing maps stays. For the whole node and for the one mapping given."""
    _downgraded_with_routed_streams(node, routed, tmp_path)
    argv = ["check", "--repair", "-q", "--netns", node, "--cni-cache-dir", str(tmp_path)]
    if form == "mapping":
        argv += ["--network", "podman", "--container", "new1", "--ip", "10.88.0.5/16",
                 "-p", "5353:53/udp", "--backend", "nftables"]  # fmt: skip
    env = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run")}

    code, _out, err = killed_while_writing(argv, env, "nft-write", tmp_path / "marker")
    assert code == -signal.SIGTERM, err
    # The node: both containers (the entry they share was rewritten: every mapping was
    # dark); the one mapping given: it alone.
    which = "2 containers" if form == "node" else "1 container"
    assert pmctl.without_cache_note(err) == (
        f"portmapctl: terminated: the repair of {which} had gone in, or was going in"
        " (`portmapctl check` shows what is left)\n"
    )
    listed = upstream.nft(node, "list", "chain", "ip", "cni_hostport", "prerouting").stdout
    assert "fib daddr type local jump hostports_all" in listed, listed
    assert rp.udp_flows(node) == {(6000, "198.51.100.2")}


@pytest.mark.parametrize("daddr", [["-d", "192.0.3.1"], []], ids=["one-address", "contested"])
def test_another_tools_iptables_rule_keeps_its_flows_on_a_port_the_nftables_backend_maps(
    node: str, tmp_path: Path, daddr: list
) -> None:
    """Review h211 of 1131c29: live60 (nftables backend) maps 5060/udp on every address,
    dead60 (leaked, nftables, added first) too; Docker-like, another tool's rule in the
    node's own iptables nat table (iptables-nft, no plugin chain there at all) DNATs
    192.0.3.1:5060 (or the port on every address: the row is contested) to its pod.
    iptables' nat hooks at cni_hostport's priority, so that rule takes the flows first
    wherever it stands in PREROUTING (`past_entry`, as for the other flavour's table);
    Judging.taken walked the node's own table only up to a jump to CNI-HOSTPORT-DNAT,
    found none, and took nothing: flush-udp --stale-only, list and gc's flush deleted
    (counted) that tool's live flow as an old destination. Only dead60's goes."""
    # /32: on lo a /24 makes the client 192.0.3.2 one of the node's own (OUTPUT's).
    subprocess.run([rp._ip(), "-n", node, "addr", "add", "192.0.3.1/32", "dev", "lo"], check=True)
    for cid, ip in (("dead60", "10.88.0.91"), ("live60", "10.88.0.92")):
        conf = upstream.nft_conf("podman", [f"{ip}/16"], [_pm(5060, 53, "udp")])
        upstream.run(V191, "ADD", node, cid, conf, check=True)
        if cid == "live60":
            _cached(tmp_path, cid, conf)
    rp.iptables(node, ["-t", "nat", "-I", "PREROUTING", "1", *daddr, "-p", "udp", "--dport",
                       "5060", "-j", "DNAT", "--to-destination", "10.244.1.7:53"])  # fmt: skip
    _only_the_dead_ones_flow_goes(node, tmp_path, 5060, "dead60")


def test_an_iptables_rule_after_the_jump_keeps_its_flows_to_an_address_only_nftables_maps(
    node: str, tmp_path: Path
) -> None:
    """5062/udp is mapped in both backends: in iptables on 192.0.3.9 alone (ipt62), in
    nftables on every address (dead62, leaked and added first; live62). Another tool's
    iptables rule after the plugin's jump DNATs 192.0.3.1:5062 to its pod: a packet to
    192.0.3.1 leaves CNI-HOSTPORT-DNAT untaken and meets that rule, at cni_hostport's
    priority. The per-flow walk stopped at the jump for every flow of a port an iptables
    chain maps (whatever its address), so list counted that tool's live flow misrouted,
    flush-udp --stale-only and gc deleted it. Walked past the jump for a destination no
    iptables mapping covers, it is kept; dead62's own flow still goes."""
    for address in ("192.0.3.1/32", "192.0.3.9/32"):
        subprocess.run([rp._ip(), "-n", node, "addr", "add", address, "dev", "lo"], check=True)
    conf = rp.plugin_conf("podman", ["10.88.0.93/16"], [_pm(5062, 53, "udp", host_ip="192.0.3.9")])
    rp.run_plugin("ADD", node, "ipt62", conf, check=True)
    _cached(tmp_path, "ipt62", conf)
    for cid, ip in (("dead62", "10.88.0.91"), ("live62", "10.88.0.92")):
        conf = upstream.nft_conf("podman", [f"{ip}/16"], [_pm(5062, 53, "udp")])
        upstream.run(V191, "ADD", node, cid, conf, check=True)
        if cid == "live62":
            _cached(tmp_path, cid, conf)
    rp.iptables(node, ["-t", "nat", "-A", "PREROUTING", "-d", "192.0.3.1", "-p", "udp", "--dport",
                       "5062", "-j", "DNAT", "--to-destination", "10.244.1.7:53"])  # fmt: skip
    _only_the_dead_ones_flow_goes(node, tmp_path, 5062, "dead62")


def _only_the_dead_ones_flow_goes(node: str, tmp_path: Path, port: int, dead: str) -> None:
    """Two flows from outside to 192.0.3.1:PORT, one DNATed to `dead` (10.88.0.91),
    one to another tool's pod (10.244.1.7), which that tool's rule takes: list counts
    neither misrouted, flush-udp --stale-only deletes neither, gc removes `dead` and
    deletes its flow alone."""
    for sport, to in ((41001, "10.88.0.91"), (41002, "10.244.1.7")):
        subprocess.run([rp._ip(), "netns", "exec", node, "conntrack", "-I", "-p", "udp",
                        "-s", "192.0.3.2", "-d", "192.0.3.1", "--sport", str(sport),
                        "--dport", str(port), "--reply-src", to, "--reply-port-src", "53",
                        "--reply-dst", "192.0.3.2", "--reply-port-dst", str(sport), "-t", "100"],
                       check=True, capture_output=True)  # fmt: skip
    listed = _pmctl(node, tmp_path, "list", "--conntrack", "-o", "json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert json.loads(listed.stdout)["conntrack_misrouted"] == 0
    stale = _pmctl(node, tmp_path, "flush-udp", "--stale-only", "--dry-run", "-o", "json")
    assert stale.returncode == 0, stale.stdout + stale.stderr
    assert json.loads(stale.stdout)["deleted"] == []
    done = _pmctl(node, tmp_path, "gc", "--yes", "--min-age", "0", "-o", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert {c["container_id"] for c in doc["removed"]} == {dead}
    assert rp.udp_flows(node) == {(port, "10.244.1.7")}
    assert doc["conntrack_deleted"] == 1


@pytest.mark.parametrize("command", ["repair", "add"])
def test_on_a_v191_node_another_tools_routed_flow_to_a_container_stays(
    node: str, routed: str, tmp_path: Path, command: str
) -> None:
    """v1.9's entry (`fib daddr type local`) never DNATs a flow the node routes to another
    host: one DNATed to a container's address and port is another tool's (kube-proxy's
    to a pod that also has a hostPort; here an iptables DNAT for 198.51.100.2:5353). But
    check --repair that wrote the entry again (after `nft flush chain ... prerouting`)
    and add that rewrote it (another container's conditions) deleted every routed flow
    DNATed to where the plugin's rules send a UDP port, that one included: only a
    v1.6/v1.7 entry ever took such flows, and only there are they let go now."""
    conf = _cached(tmp_path, "web1", upstream.nft_conf("podman", ["10.88.0.5/16"],
                                                      [_pm(5353, 53, "udp")]))  # fmt: skip
    upstream.run(V191, "ADD", node, "web1", conf, check=True)
    _ip("netns", "exec", node, "iptables", "-t", "nat", "-A", "PREROUTING", "-d",
        "198.51.100.2", "-p", "udp", "--dport", "5353", "-j", "DNAT", "--to-destination",
        "10.88.0.5:53")  # fmt: skip
    stream = ("198.51.100.2", "5353", "40000")
    _ip("netns", "exec", node, "conntrack", "-F")
    _ip("netns", "exec", routed, sys.executable, "-c", _SEND, *stream)
    assert rp.udp_flows(node) == {(5353, "10.88.0.5")}

    if command == "repair":
        upstream.nft(node, "flush", "chain", "ip", "cni_hostport", "prerouting")
        done = _pmctl(node, tmp_path, "check", "--repair")
    else:
        done = _pmctl(node, tmp_path, "add", "--network", "podman", "--container", "new1",
                      "--ip", "10.88.0.6/16", "-p", "6000:60/udp", "--backend", "nftables",
                      "--conditions-v4", "ip saddr != 203.0.113.0/24")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    listed = upstream.nft(node, "list", "chain", "ip", "cni_hostport", "prerouting").stdout
    assert "fib daddr type local jump hostports_all" in listed, listed  # written again
    assert rp.udp_flows(node) == {(5353, "10.88.0.5")}  # the other tool's flow stays


@pytest.mark.parametrize("command", ["repair", "gc"])
def test_a_downgraded_node_that_lost_its_prerouting_entry_still_lets_go_of_its_routed_flows(
    node: str, routed: str, tmp_path: Path, command: str
) -> None:
    """v1.7.1's ADD after v1.9.1's: its entry (no `fib daddr type local`) DNATed a stream
    the node routes to 198.51.100.2:5353 to new1; then prerouting was flushed (a firewall
    script), output still holding v1.7.1's entry. The table has v1.9's hostports_all, so
    took_routed read it as v1.9's and let go of nothing: check --repair wrote v1.9's
    entry and gc removed the dead new1's rules, and the stream stayed DNATed to new1's
    address (a dead one after gc). Output's entry tells which plugin wrote the entry
    last: v1.7.1's took routed flows, and they go as before the prerouting flush."""
    stream = _downgraded_with_routed_streams(node, routed, tmp_path)
    upstream.nft(node, "flush", "chain", "ip", "cni_hostport", "prerouting")
    if command == "repair":
        done = _pmctl(node, tmp_path, "check", "--repair")
    else:
        for entry in (tmp_path / "results").iterdir():
            if "-new1-" in entry.name:
                entry.unlink()  # new1 went without its DEL
        done = _pmctl(node, tmp_path, "gc", "--yes", "--min-age", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert rp.udp_flows(node) == {(6000, "198.51.100.2")}
    _ip("netns", "exec", routed, sys.executable, "-c", _SEND, *stream)
    assert rp.udp_flows(node) == {(5353, "198.51.100.2"), (6000, "198.51.100.2")}


@pytest.mark.parametrize("entry", ["lost", "kept"])
def test_a_leaked_iptables_chain_beside_a_flushed_plugin_table_is_in_doubt_and_left_alone(
    node: str, tmp_path: Path, entry: str
) -> None:
    """v1.9.1 added podman/web1 under `"backend": "nftables"` (cached so); Debian's
    1.1.1 ADD of the same left a CNI-DN- chain in iptables; a firewall's `nft flush
    table ip cni_hostport` took v1.9.1's rules and jumps. "No rule in nftables" was
    taken for "the key ignored": check judged web1 in iptables (missing-entry, where
    its entry rule was lost; healthy, exit 0, where it was kept, though v1.9.1's CHECK
    fails) and --repair wrote the entry rule in iptables, which v1.9.1 never reads.
    A flushed table tells nothing of which plugin added it: check reports web1, with
    no fix and a warning saying why; --repair, gc change nothing of it."""
    conf = _leaked_beside_flushed(node, tmp_path, entry)
    before = _both_backends(node)
    done = _pmctl(node, tmp_path, "check", "-o", "json")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "cannot be told" in done.stderr and "podman/web1" in done.stderr, done.stderr
    assert all(p["fix"] is None for p in json.loads(done.stdout)["problems"]), done.stdout
    repaired = _pmctl(node, tmp_path, "check", "--repair")
    assert repaired.returncode == 1, repaired.stdout + repaired.stderr
    assert "could not repair IPv4 podman/web1" in repaired.stderr, repaired.stderr
    assert "repaired:" not in repaired.stdout + repaired.stderr
    gc = _pmctl(node, tmp_path, "gc", "--yes", "--min-age", "0")
    assert gc.returncode == 0, gc.stdout + gc.stderr
    listed = _pmctl(node, tmp_path, "list")
    assert listed.returncode == 0 and "web1" in listed.stdout, listed.stdout + listed.stderr
    assert _both_backends(node) == before
    assert upstream.run(V191, "CHECK", node, "web1", conf).returncode != 0


@pytest.mark.parametrize("entry", ["lost", "kept"])
def test_one_mapping_beside_a_flushed_plugin_table_is_in_doubt_and_not_repaired(
    node: str, tmp_path: Path, entry: str
) -> None:
    """As the node's check (above) judges it, so one mapping of it: the one-mapping
    check took "no rule in nftables" for the key ignored and checked web1 in iptables
    (missing-entry, where its entry rule was lost; healthy where it was kept), and
    `check --repair` of it wrote the entry rule in iptables ("repaired: IPv4
    missing-entry CNI-DN-... (podman/web1)", exit 0), which v1.9.1 never reads. Its
    check is not healthy, names no fix and warns why; every --repair of it (its
    cached config's key, a --cni-config's, --backend) stops with one line, exit 3."""
    conf = _leaked_beside_flushed(node, tmp_path, entry)
    forms = _web1_given(tmp_path, conf)
    before = _both_backends(node)
    for cache, args in forms[:2]:  # (its key read from its cache entry, from --cni-config)
        _checked_in_doubt(node, cache, "web1", args)
    for cache, args in forms:
        done = _pmctl(node, cache, "check", *args, "--repair")
        pmctl.assert_error(done, 3, "podman/web1: its", "cannot be told", "nothing is written")
        assert _both_backends(node) == before, args
    assert upstream.run(V191, "CHECK", node, "web1", conf).returncode != 0


def _checked_in_doubt(node: str, cache: Path, cid: str, args: Sequence[str]) -> None:
    """The check of podman/`cid`'s mapping (`args`) says it is in doubt, as the node's
    check does: not healthy (exit 1), a warning saying why, no problem naming a fix."""
    done = _pmctl(node, cache, "check", *args, "-o", "json")
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"warning: podman/{cid}:" in done.stderr, done.stderr
    assert "cannot be told" in done.stderr, done.stderr
    problems = json.loads(done.stdout)["problems"]
    assert problems and all(p["fix"] is None for p in problems), done.stdout


@pytest.mark.parametrize("entry", ["lost", "kept"])
def test_add_beside_a_flushed_plugin_table_is_in_doubt_and_writes_nothing(
    node: str, tmp_path: Path, entry: str
) -> None:
    """add of web1 there took "no rule in nftables" for the key ignored: `add --dry-run`
    of the mapping planned its iptables entry rule ("... ignores the key ... so it goes
    to iptables"), exit 0, a rule its v1.9.1 plugin never reads (so did `--backend
    iptables`), and `--backend nftables`, a --cni-config with the key (cached or not)
    were refused as "its plugin ignores ... the key" (exit 2), steering the operator
    to iptables. Every form now stops with the line that says it cannot be told, exit
    3 (the node's state stops it, as add's cannot_tell does), the dry run as the real
    run, nothing written."""
    conf = _leaked_beside_flushed(node, tmp_path, entry)
    forms = _web1_given(tmp_path, conf)
    before = _both_backends(node)
    for cache, args in forms:
        for dry in (["--dry-run"], []):
            done = _pmctl(node, cache, "add", *args, *dry)
            pmctl.assert_error(done, 3, "podman/web1: its", "cannot be told", "nothing is written")
            assert _both_backends(node) == before, (args, dry)
    assert upstream.run(V191, "CHECK", node, "web1", conf).returncode != 0


def _web1_given(cache: Path, conf: Dict[str, Any]) -> List[Tuple[Path, List[str]]]:
    """The ways web1 (_leaked_beside_flushed) is given on the command line, each with
    its --cni-cache-dir: mapping options (its key read from its cache entry); its
    config with the key (--cni-config), cached, then with no cache entry; mapping
    options under --backend iptables, then nftables."""
    given = cache / "conf.json"
    given.write_text(json.dumps(conf))
    mapping = ["--network", "podman", "--container", "web1", "--ip", "10.88.0.5/16",
               "-p", "8080:80"]  # fmt: skip
    keyed = ["--container", "web1", "--cni-config", str(given)]
    return [(cache, mapping), (cache, keyed), (cache / "none", keyed),
            (cache, [*mapping, "--backend", "iptables"]),
            (cache, [*mapping, "--backend", "nftables"])]  # fmt: skip


def _leaked_beside_flushed(node: str, cache: Path, entry: str) -> Dict[str, Any]:
    """v1.9.1's ADD of podman/web1 (10.88.0.5/16, 8080:80) under `"backend":
    "nftables"`, cached so; Debian's 1.1.1 ADD of the same (a CNI-DN- chain in
    iptables), its CNI-HOSTPORT-DNAT entry rule deleted where `entry` is "lost"; then
    a firewall's `nft flush table ip cni_hostport`. Its config."""
    conf = upstream.nft_conf("podman", ["10.88.0.5/16"], [_pm(8080, 80)])
    upstream.run(V191, "ADD", node, "web1", conf, check=True)
    _cached(cache, "web1", conf)
    rp.run_plugin("ADD", node, "web1", conf, check=True)  # Debian's copy
    chain = chain_name("podman", "web1")
    if entry == "lost":
        rule = next(
            line for line in rp.save(node, 4).splitlines()
            if line.startswith("-A CNI-HOSTPORT-DNAT") and chain in line
        )  # fmt: skip
        rp.iptables(node, ["-t", "nat", "-D", *shlex.split(rule)[1:]])
    upstream.nft(node, "flush", "table", "ip", "cni_hostport")
    return conf


def _both_backends(node: str) -> Tuple[str, str]:
    """IPv4's iptables rules (no header, no counters) and the plugin's table."""
    return _no_counters((rp.save(node, 4).split("\n", 1)[1], _plugin_tables(node)))


def _no_counters(state: Tuple[str, str]) -> Tuple[str, str]:
    save, nft = state
    return re.sub(r"\[\d+:\d+\]|# .*", "", save), nft


@pytest.mark.parametrize("version", upstream.VERSIONS)
@pytest.mark.parametrize("dele", [False, True], ids=["kept", "deleted"])
def test_a_table_of_snat_off_adds_still_tells_an_ignored_key(
    node: str, tmp_path: Path, version: str, dele: bool
) -> None:
    """A node upgraded from Debian's 1.1.1: deb1's config says `"backend": "nftables"`,
    which that plugin ignored (its chain in iptables); then the upstream plugin added
    new1 under the same key with `"snat": false`, which makes no `masquerading` chain
    (FACTS). That table is whole as the plugin leaves it, so "no rule of deb1 in
    nftables" still tells the key ignored: deb1 is judged in iptables and the node is
    healthy. A table without masquerading was taken for a flushed one: deb1 "in doubt",
    check exit 1 and --repair refused for a node the plugins' CHECKs pass (also after
    new1's DEL, which leaves the table and its chains)."""
    dual = ["10.88.0.7/16", "fd00::7/64"]
    new = upstream.nft_conf("podman", dual, [_pm(9091, 91)], snat=False)
    upstream.run(version, "ADD", node, "new1", new, check=True)
    if dele:
        upstream.run(version, "DEL", node, "new1", new, check=True)
    else:
        _cached(tmp_path, "new1", new)
    deb = rp.plugin_conf("podman", ["10.88.0.6/16", "fd00::6/64"], [_pm(9090, 90)])
    deb = _cached(tmp_path, "deb1", {**deb, "backend": "nftables"})
    rp.run_plugin("ADD", node, "deb1", deb, check=True)
    assert "masquerading" not in upstream.ruleset_text(node)
    before = _no_counters((rp.save(node, 4) + rp.save(node, 6), upstream.ruleset_text(node)))
    done = _pmctl(node, tmp_path, "check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cannot be told" not in done.stderr, done.stderr
    assert "(podman/deb1): the plugin that added it ignores the key" in done.stderr
    repaired = _pmctl(node, tmp_path, "check", "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    after = _no_counters((rp.save(node, 4) + rp.save(node, 6), upstream.ruleset_text(node)))
    assert after == before
    assert all(c.returncode == 0 for c in rp.run_check(node, "deb1", deb))


def _debian_gone(
    node: str, cache: Path, cid: str, ip: str, port: int, lose: bool, mode: rp.Mode = "nft"
) -> Dict[str, Any]:
    """Debian's 1.1.1 ADD of podman/`cid` under `"backend": "nftables"` (a key it
    ignores: its chain in iptables, `mode` its flavour), cached so; where `lose`, a
    firewall then removed its CNI-DN- chain and its CNI-HOSTPORT-DNAT entry rule (the
    top-level chains stay). Its config."""
    conf = rp.plugin_conf("podman", [ip], [_pm(port, 80)])
    conf = _cached(cache, cid, {**conf, "backend": "nftables"})
    rp.run_plugin("ADD", node, cid, conf, mode=mode, check=True)
    if lose:
        chain = chain_name("podman", cid)
        rule = next(
            line for line in rp.save(node, 4, mode).splitlines()
            if line.startswith("-A CNI-HOSTPORT-DNAT") and chain in line
        )  # fmt: skip
        rp.iptables(node, ["-t", "nat", "-D", *shlex.split(rule)[1:]], mode=mode)
        rp.iptables(node, ["-t", "nat", "-F", chain], mode=mode)
        rp.iptables(node, ["-t", "nat", "-X", chain], mode=mode)
    return conf


def _both_rulesets(node: str) -> Tuple[str, str]:
    """IPv4's iptables rules (no header, no counters) and the whole nft ruleset (the
    plugin's table may be absent)."""
    return _no_counters((rp.save(node, 4).split("\n", 1)[1], upstream.ruleset_text(node)))


@pytest.mark.parametrize("beside", ["alone", "beside-an-ignored-key"])
def test_a_key_ignoring_container_with_nothing_left_is_in_doubt_not_written_to_nftables(
    node: str, tmp_path: Path, beside: str
) -> None:
    """deb1 was added by Debian's 1.1.1 under `"backend": "nftables"`, a key it
    ignores (its chain in iptables), and a firewall removed its CNI-DN- chain and its
    entry rule; alone, or beside deb2, added so and whole (its chain in iptables, none
    in nftables: the node's plugin ignores the key). With nothing of deb1 left, it was
    judged by its key: the node's check reported it `nft-missing-*` with --repair as
    the fix, and `check --repair` wrote it into nftables (exit 0, "healthy"), a backend
    its plugin never uses (its DEL never removes that copy; its next ADD makes a second
    one in iptables). Nothing tells that its plugin honours the key: it is in doubt,
    reported with no fix and a warning, nothing written in either backend."""
    _debian_gone(node, tmp_path, "deb1", "10.88.0.31/16", 8031, lose=True)
    if beside != "alone":
        _debian_gone(node, tmp_path, "deb2", "10.88.0.32/16", 8032, lose=False)
    before = _both_rulesets(node)
    done = _pmctl(node, tmp_path, "check", "-o", "json")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "podman/deb1" in done.stderr and "cannot be told" in done.stderr, done.stderr
    problems = json.loads(done.stdout)["problems"]
    # (deb1's and the plugin's table it alone wants, as judged by its key.)
    assert {p["container_id"] for p in problems} == {"deb1", None}, done.stdout
    assert all(p["fix"] is None for p in problems), done.stdout
    repaired = _pmctl(node, tmp_path, "check", "--repair")
    assert repaired.returncode == 1, repaired.stdout + repaired.stderr
    assert "could not repair IPv4 podman/deb1" in repaired.stderr, repaired.stderr
    assert "repaired:" not in repaired.stdout + repaired.stderr
    assert _both_rulesets(node) == before
    assert "cni_hostport" not in upstream.nft(node, "list", "tables").stdout


def test_a_key_ignoring_container_whose_nat_table_a_firewall_flushed_is_in_doubt(
    node: str, tmp_path: Path
) -> None:
    """As above, but the firewall reloaded iptables' nat table whole (`iptables-restore`
    of its own file; here `iptables -t nat -F` and `-X`), the usual way a node loses
    its chains: CNI-HOSTPORT-DNAT went with deb1's chain. Its absence was taken for "no
    plugin ever wrote iptables here" (a v1.6+ node), and `check --repair` wrote deb1
    into nftables (exit 0), a copy Debian's plugin never deletes. The nat table is
    still here, so that absence tells nothing: in doubt, nothing written."""
    _debian_gone(node, tmp_path, "deb1", "10.88.0.35/16", 8035, lose=False)
    rp.iptables(node, ["-t", "nat", "-F"])
    rp.iptables(node, ["-t", "nat", "-X"])
    assert "CNI-HOSTPORT-DNAT" not in rp.save(node, 4)
    before = _both_rulesets(node)
    done = _pmctl(node, tmp_path, "check", "-o", "json")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "podman/deb1" in done.stderr and "cannot be told" in done.stderr, done.stderr
    problems = json.loads(done.stdout)["problems"]
    assert "deb1" in {p["container_id"] for p in problems}, done.stdout
    assert all(p["fix"] is None for p in problems if p["container_id"] in ("deb1", None))
    repaired = _pmctl(node, tmp_path, "check", "--repair")
    assert repaired.returncode == 1, repaired.stdout + repaired.stderr
    assert "repaired:" not in repaired.stdout + repaired.stderr
    assert _both_rulesets(node) == before
    assert "cni_hostport" not in upstream.nft(node, "list", "tables").stdout


def _nft1_gone_beside_nft2(node: str, cache: Path) -> Dict[str, Dict[str, Any]]:
    """deb0 added by Debian's 1.1.1 without a key (the plugin's CNI-HOSTPORT-* chains
    in iptables), nft1 and nft2 by v1.9.1 under `"backend": "nftables"`, all cached;
    then nft1's rules removed (its plugin's DEL, its cache entry kept). nft1's and
    nft2's configs."""
    deb = rp.plugin_conf("podman", ["10.88.0.30/16"], [_pm(8030, 80)])
    rp.run_plugin("ADD", node, "deb0", _cached(cache, "deb0", deb), check=True)
    confs = {}
    for cid, ip, port in (("nft1", "10.88.0.33/16", 8033), ("nft2", "10.88.0.34/16", 8034)):
        confs[cid] = _cached(cache, cid, upstream.nft_conf("podman", [ip], [_pm(port, 80)]))
        upstream.run(V191, "ADD", node, cid, confs[cid], check=True)
    upstream.run(V191, "DEL", node, "nft1", confs["nft1"], check=True)
    return confs


def test_a_cached_nftables_container_with_nothing_left_beside_the_plugins_table_is_repaired(
    node: str, tmp_path: Path
) -> None:
    """The other side of the test above: nft1 and nft2 added by v1.9.1 under
    `"backend": "nftables"`, beside deb0 (Debian's, no key: the plugin's CNI-HOSTPORT-*
    chains in iptables); nft1's rules removed (its plugin's DEL, its cache entry kept).
    The plugin's table holds nft2's rules: the plugin here honours the key, so nft1 is
    repaired there, as before, and its v1.9.1 CHECK passes; nothing in iptables."""
    confs = _nft1_gone_beside_nft2(node, tmp_path)
    iptables = rp.nat_rules(rp.save(node, 4))
    done = _pmctl(node, tmp_path, "check", "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cannot be told" not in done.stderr, done.stderr
    upstream.run(V191, "CHECK", node, "nft1", confs["nft1"], check=True)
    assert rp.nat_rules(rp.save(node, 4)) == iptables


def _deb1_given(cache: Path, conf: Dict[str, Any]) -> List[Tuple[str, ...]]:
    """The ways deb1 (_debian_gone: 10.88.0.31/16, 8031:80) is given on the command
    line, its cache entry kept: mapping options (its key read from the entry), its
    config with the key (--cni-config), mapping options under --backend nftables, then
    iptables."""
    given = cache / "deb1.json"
    given.write_text(json.dumps(conf))
    mapping = ("--network", "podman", "--container", "deb1", "--ip", "10.88.0.31/16",
               "-p", "8031:80")  # fmt: skip
    return [mapping, ("--container", "deb1", "--cni-config", str(given)),
            (*mapping, "--backend", "nftables"), (*mapping, "--backend", "iptables")]  # fmt: skip


@pytest.mark.parametrize("beside", ["alone", "beside-an-ignored-key"])
def test_one_mapping_of_a_key_ignoring_container_with_nothing_left_is_in_doubt(
    node: str, tmp_path: Path, beside: str
) -> None:
    """As the node's check judges deb1 (above: added by Debian's 1.1.1 under
    `"backend": "nftables"`, a key it ignores; its chain and entry rule removed by a
    firewall), so one mapping of it: `check --repair` of the mapping and `add` of it
    went by its key and wrote it into nftables (exit 0: the cni_hostport table with
    deb1's rules), a copy its plugin's DEL never removes. Its check names no fix and
    warns why; every --repair and add of it (dry or not) stops with one line, exit 3,
    nothing written in either backend."""
    conf = _debian_gone(node, tmp_path, "deb1", "10.88.0.31/16", 8031, lose=True)
    if beside != "alone":
        _debian_gone(node, tmp_path, "deb2", "10.88.0.32/16", 8032, lose=False)
    forms = _deb1_given(tmp_path, conf)
    before = _both_rulesets(node)
    for args in forms[:2]:
        _checked_in_doubt(node, tmp_path, "deb1", args)
    for args in forms:
        done = _pmctl(node, tmp_path, "check", *args, "--repair")
        pmctl.assert_error(done, 3, "podman/deb1: its", "cannot be told", "nothing is written")
        assert _both_rulesets(node) == before, args
        for dry in (("--dry-run",), ()):
            done = _pmctl(node, tmp_path, "add", *args, *dry)
            pmctl.assert_error(done, 3, "podman/deb1: its", "cannot be told", "nothing is written")
            assert _both_rulesets(node) == before, (args, dry)
    assert "cni_hostport" not in upstream.nft(node, "list", "tables").stdout


@pytest.mark.parametrize("command", ["repair", "add"])
def test_one_mapping_with_nothing_left_beside_the_plugins_table_goes_to_nftables(
    node: str, tmp_path: Path, command: str
) -> None:
    """The other side of the test above: nft1 and nft2 added by v1.9.1 under `"backend":
    "nftables"` beside deb0 (Debian's, no key: the plugin's CNI-HOSTPORT-* chains in
    iptables); nft1's rules removed (its plugin's DEL, its cache entry kept). nft2's
    rules in the plugin's table tell the plugin here honours the key: `check --repair`
    of nft1's mapping, or `add` of it, writes it into nftables, where v1.9.1's CHECK
    finds it; nothing in iptables."""
    confs = _nft1_gone_beside_nft2(node, tmp_path)
    iptables = rp.nat_rules(rp.save(node, 4))
    mapping = ("--network", "podman", "--container", "nft1", "--ip", "10.88.0.33/16",
               "-p", "8033:80")  # fmt: skip
    args = ("check", *mapping, "--repair") if command == "repair" else ("add", *mapping)
    done = _pmctl(node, tmp_path, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cannot be told" not in done.stderr, done.stderr
    upstream.run(V191, "CHECK", node, "nft1", confs["nft1"], check=True)
    assert rp.nat_rules(rp.save(node, 4)) == iptables


@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_iptables_unreadable_under_backend_nftables_is_no_sign_of_a_v1_6_plugin(
    node: str, tmp_path: Path, mode: rp.Mode
) -> None:
    """deb1 as above (Debian's 1.1.1 under `"backend": "nftables"`, nothing of it left;
    its flavour's CNI-HOSTPORT-DNAT in iptables), checked under --backend nftables by a
    portmapctl that cannot run iptables (its tools not there, as in a DaemonSet image
    without them). The failed read was taken for "the plugin's CNI-HOSTPORT-DNAT is in
    no iptables", a v1.6+ node: the node's `check --repair`, that of deb1's mapping and
    `add` of it wrote it into nftables (exit 0), a copy its plugin never deletes.
    Unread is "cannot be told": the node's repair leaves it (exit 1, a warning saying
    iptables cannot be read), the one-mapping --repair and add stop (exit 3), nothing
    written."""
    _debian_gone(node, tmp_path, "deb1", "10.88.0.31/16", 8031, lose=True, mode=mode)
    before = _no_counters((rp.save(node, 4, mode), upstream.ruleset_text(node)))
    hide = [os.path.realpath(shutil.which(tool, path=rp.SYSTEM_PATH) or tool)
            for tool in ("iptables-nft", "iptables-legacy")]  # fmt: skip
    # (`--iptables auto`, which asks the tools which flavour `iptables` is: told
    # `--iptables nft`, the kernel is asked over netlink, and answers.)
    told = ["--netns", node, "--cni-cache-dir", str(tmp_path), "--backend", "nftables",
            *(["--iptables", mode] if mode == "legacy" else [])]  # fmt: skip
    mapping = ["--network", "podman", "--container", "deb1", "--ip", "10.88.0.31/16",
               "-p", "8031:80"]  # fmt: skip
    done = pmctl.run(["check", "--repair", *told], hide=hide)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "could not repair IPv4 podman/deb1" in done.stderr, done.stderr
    assert "which cannot be read" in done.stderr, done.stderr
    for args in (["check", "--repair"], ["add", "--dry-run"], ["add"]):
        done = pmctl.run([*args, *mapping, *told], hide=hide)
        pmctl.assert_error(done, 3, "podman/deb1: its", "cannot be read", "nothing is written")
    assert _no_counters((rp.save(node, 4, mode), upstream.ruleset_text(node))) == before
    assert "cni_hostport" not in upstream.nft(node, "list", "tables").stdout


def test_nothing_left_is_judged_by_the_nodes_evidence_not_its_networks(
    node: str, tmp_path: Path
) -> None:
    """Why the node, not the network, is what nothing_left judges by: nft1 (podman) and
    nft2 (k8s) added by one v1.9.1 under `"backend": "nftables"`, beside deb0 (Debian's,
    no key: CNI-HOSTPORT-DNAT in iptables); nft1's rules removed (its DEL, its entry
    kept). Only nft2's rules, of another network, and the table tell that the plugin
    honours the key: the cache names no binary nor runtime, and one runtime's networks
    share its binary. Judged per network, nft1 would be in doubt; it is repaired into
    nftables, where v1.9.1's CHECK finds it. (Two runtimes with different binaries
    sharing the cache directory are what this judgement cannot tell apart:
    docs/guarantees.md.)"""
    deb = rp.plugin_conf("podman", ["10.88.0.30/16"], [_pm(8030, 80)])
    rp.run_plugin("ADD", node, "deb0", _cached(tmp_path, "deb0", deb), check=True)
    nft1 = _cached(
        tmp_path, "nft1", upstream.nft_conf("podman", ["10.88.0.33/16"], [_pm(8033, 80)])
    )
    nft2 = upstream.nft_conf("k8s", ["10.89.0.34/16"], [_pm(8034, 80)])
    rp.write_cni_cache(tmp_path, "k8s", "nft2", "eth0", nft2, [_pm(8034, 80)], ["10.89.0.34/16"])
    for cid, conf in (("nft1", nft1), ("nft2", nft2)):
        upstream.run(V191, "ADD", node, cid, conf, check=True)
    upstream.run(V191, "DEL", node, "nft1", nft1, check=True)
    iptables = rp.nat_rules(rp.save(node, 4))
    done = _pmctl(node, tmp_path, "check", "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cannot be told" not in done.stderr, done.stderr
    upstream.run(V191, "CHECK", node, "nft1", nft1, check=True)
    assert rp.nat_rules(rp.save(node, 4)) == iptables


@pytest.mark.parametrize("stack", ["ipv4", "dual"])
def test_a_new_container_beside_the_plugins_table_and_an_ignored_key_is_in_doubt(
    node: str, tmp_path: Path, stack: str
) -> None:
    """The case an early exit on "the plugin's table of its family is here" must not
    change: nft2 added by v1.9.1 under `"backend": "nftables"` (the cni_hostport table
    with its rules), deb2 added by Debian's 1.1.1 under the same key, which it ignores
    (its chain in iptables, no rule in nftables), both cached; new1 cached so, not added
    yet. The node holds both plugins' work, and the cache names no binary: which one
    adds new1 cannot be told from it, and the two do opposite things with it (shown
    below: Debian's ADD writes its chain in iptables, v1.9.1's its rules in nftables).
    So new1 is in doubt, though the table is here (nothing_left: another container
    cached so is kept in iptables): `add` of it (dry or not) and `check --repair` of its
    mapping stop, exit 3, nothing written in either backend; add by the key wrote a
    copy a downgraded node's plugin never deletes, by iptables one an upgraded node's
    never reads. new1 dual-stack too: its families are the node's, and add judges it
    from its own read of the plugin's tables (entry_in_doubt's `seen`)."""
    nft2 = _cached(
        tmp_path, "nft2", upstream.nft_conf("podman", ["10.88.0.34/16"], [_pm(8034, 80)])
    )
    upstream.run(V191, "ADD", node, "nft2", nft2, check=True)
    _debian_gone(node, tmp_path, "deb2", "10.88.0.32/16", 8032, lose=False)
    ips = ["10.88.0.36/16", *(["fd00:88::36/64"] if stack == "dual" else [])]
    new1 = _cached(tmp_path, "new1", upstream.nft_conf("podman", ips, [_pm(8036, 80)]))
    mapping = ("--network", "podman", "--container", "new1",
               *(arg for ip in ips for arg in ("--ip", ip)), "-p", "8036:80")  # fmt: skip
    before = _both_rulesets(node)
    for args in (("add", *mapping, "--dry-run"), ("add", *mapping),
                 ("check", *mapping, "--repair")):  # fmt: skip
        done = _pmctl(node, tmp_path, *args)
        pmctl.assert_error(done, 3, "podman/new1: its", "cannot be told", "nothing is written")
        assert "podman/deb2" in done.stderr, done.stderr
        assert _both_rulesets(node) == before, args
    # What each plugin the node has seen does with new1's config: both are possible.
    rp.run_plugin("ADD", node, "new1", new1, check=True)
    assert chain_name("podman", "new1") in rp.save(node, 4)
    assert "10.88.0.36" not in _plugin_tables(node)
    rp.run_plugin("DEL", node, "new1", new1, check=True)
    upstream.run(V191, "ADD", node, "new1", new1, check=True)
    assert chain_name("podman", "new1") not in rp.save(node, 4)
    assert "10.88.0.36" in _plugin_tables(node)
