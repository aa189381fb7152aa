"""UDP conntrack on real nodes (issue 12, items 7 and 8), in throwaway namespaces with
the real plugin and real conntrack tables.

- flush-udp (plain or --stale-only) touches only flows to the node's own addresses:
  a container's DNS query to a server outside, forwarded and masqueraded, never met
  a mapping's DNAT (SPEC §3 flush-udp).
- gc, removing a stale chain whose UDP port another container maps now, deletes the
  flows that chain had DNATed to its dead container (SPEC §3 gc), and nothing else.
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Optional

import pytest
import realplugin as rp
from flush_udp_helpers import container  # noqa: F401
from pmctl import run

NODE_IP = "10.0.0.1"  # one of the node's own addresses (on lo)
OUTSIDE = "8.8.8.8"  # a server elsewhere


def _ns(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, *args], check=True, capture_output=True,
                          text=True).stdout  # fmt: skip


def _flow(ns: str, sport: int, src: str, dst: str, dport: int,
          reply_src: Optional[str] = None, reply_sport: Optional[int] = None,
          reply_dst: Optional[str] = None) -> None:  # fmt: skip
    """One UDP conntrack entry: DNATed when reply_src differs from dst, masqueraded
    when reply_dst differs from src."""
    _ns(ns, "conntrack", "-I", "-p", "udp", "-s", src, "-d", dst, "--sport", str(sport),
        "--dport", str(dport), "--reply-src", reply_src or dst, "--reply-dst", reply_dst or src,
        "--reply-port-src", str(reply_sport or dport), "--reply-port-dst", str(sport),
        "-t", "120")  # fmt: skip


def _sports(ns: str) -> set:
    found = set()
    for line in _ns(ns, "conntrack", "-L", "-p", "udp").splitlines():
        words = dict(w.split("=", 1) for w in reversed(line.split()) if "=" in w)
        found.add(int(words["sport"]))  # reversed: the original direction's sport wins
    return found


def _cache(cache: Path, network: str, cid: str, conf: dict) -> None:
    ips = [ip["address"] for ip in conf["prevResult"]["ips"]]
    rp.write_cni_cache(cache, network, cid, "eth0", conf, conf["runtimeConfig"]["portMappings"],
                       ips)  # fmt: skip


DNS = [{"hostPort": 53, "containerPort": 53, "protocol": "udp"}]


@pytest.fixture
def dns_node(host_ns, tmp_path):
    """A container mapping host port 53/udp, and three flows under port 53."""
    conf = rp.plugin_conf("mynet", ["10.88.0.5/16"], DNS)
    rp.run_plugin("ADD", host_ns, "dns1", conf, check=True)
    cache = tmp_path / "cni"
    _cache(cache, "mynet", "dns1", conf)
    _ns(host_ns, "ip", "addr", "add", f"{NODE_IP}/32", "dev", "lo")
    # Another container's own DNS query to a server outside, masqueraded to NODE_IP:
    # its replies come from the server, so it looks "never DNATed" -- it is forwarded.
    _flow(host_ns, 41001, "10.88.0.7", OUTSIDE, 53, reply_dst=NODE_IP)
    # A client of the node whose flow began before the mapping: the blackhole.
    _flow(host_ns, 41002, "192.0.2.2", NODE_IP, 53)
    # A client reaching the container through the mapping: fine.
    _flow(host_ns, 41003, "192.0.2.3", NODE_IP, 53, "10.88.0.5", 53)
    assert _sports(host_ns) == {41001, 41002, 41003}
    return host_ns, cache


def test_stale_only_never_deletes_forwarded_flows(dns_node):
    ns, cache = dns_node
    common = ["flush-udp", "--netns", ns, "--cni-cache-dir", str(cache), "--stale-only"]
    preview = json.loads(run([*common, "--dry-run", "-o", "json"]).stdout)
    assert [(d["sport"], d["host_ip"]) for d in preview["deleted"]] == [(41002, NODE_IP)]
    done = run(common)
    assert done.returncode == 0, done.stderr
    # Kept: the flow that reaches the container; the forwarded one is not counted.
    assert done.stdout.startswith("deleted 1 UDP conntrack entry to host port 53 (v4); kept 1 ")
    assert _sports(ns) == {41001, 41003}


def test_plain_flush_never_deletes_forwarded_flows_either(dns_node):
    ns, cache = dns_node
    done = run(["flush-udp", "--netns", ns, "--cni-cache-dir", str(cache)])
    assert done.returncode == 0, done.stderr
    assert _sports(ns) == {41001}


def test_list_conntrack_counts_no_forwarded_flow(dns_node):
    """FLOWS counts what flush-udp looks at: the two flows to the node's own address,
    not the forwarded query that only shares the port (it said 3)."""
    ns, cache = dns_node
    done = run(["list", "--netns", ns, "--cni-cache-dir", str(cache), "--conntrack", "-o", "json"])
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["mappings"]
    assert [(r["host_port"], r["conntrack_entries"]) for r in rows] == [(53, 2)]


UDP = [{"hostPort": 6000, "containerPort": 60, "protocol": "udp"}]


def _old_and_new(host_ns: str, tmp_path: Path, new_ports: list) -> Path:
    """The node's address on lo; "old" leaked (no cache entry) mapping 6000/udp;
    "new" (cached) mapping `new_ports`. Returns the cache directory."""
    cache = tmp_path / "cni"
    (cache / "results").mkdir(parents=True)
    _ns(host_ns, "ip", "addr", "add", f"{NODE_IP}/32", "dev", "lo")
    rp.run_plugin("ADD", host_ns, "old", rp.plugin_conf("mynet", ["10.88.0.13/16"], UDP),
                  check=True)  # fmt: skip
    new = rp.plugin_conf("mynet", ["10.88.0.20/16"], new_ports)
    rp.run_plugin("ADD", host_ns, "new", new, check=True)
    _cache(cache, "mynet", "new", new)
    return cache


def _gc_removing_old(host_ns: str, cache: Path) -> dict:
    done = run(["gc", "--netns", host_ns, "--cni-cache-dir", str(cache), "--yes", "--min-age",
                "0", "-o", "json"])  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert [r["container_id"] for r in result["removed"]] == ["old"]
    return result


def _misrouted(host_ns: str, cache: Path) -> int:
    """list --conntrack's count of misrouted UDP flows."""
    listed = run(["list", "--netns", host_ns, "--cni-cache-dir", str(cache), "--conntrack",
                  "-o", "json"])  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)["conntrack_misrouted"]


def _stale_would_delete(host_ns: str, cache: Path) -> list:
    """What flush-udp --stale-only --dry-run would delete."""
    stale = run(["flush-udp", "--netns", host_ns, "--cni-cache-dir", str(cache), "--stale-only",
                 "--dry-run", "-o", "json"])  # fmt: skip
    assert stale.returncode == 0, stale.stderr
    return json.loads(stale.stdout)["deleted"]


def test_gc_flushes_the_flows_a_removed_chain_misrouted_on_a_port_still_mapped(host_ns, tmp_path):
    # "old" leaked (no cache entry) and its chain, entered first, still takes 6000/udp;
    # "new" maps the same port now.
    cache = _old_and_new(host_ns, tmp_path, UDP)
    _flow(host_ns, 42001, "192.0.2.1", NODE_IP, 6000, "10.88.0.13", 60)  # to the dead one
    _flow(host_ns, 42002, "192.0.2.2", NODE_IP, 6000, "10.88.0.20", 60)  # to "new": fine
    _flow(host_ns, 42003, "192.0.2.3", NODE_IP, 6000)  # never DNATed: the blackhole
    _flow(host_ns, 42004, "10.88.0.20", OUTSIDE, 6000, reply_dst=NODE_IP)  # forwarded
    result = _gc_removing_old(host_ns, cache)
    assert result["conntrack_deleted"] == 2
    assert _sports(host_ns) == {42002, 42004}


def test_gc_keeps_another_tools_flows_on_a_port_a_live_container_maps_on_one_address(
    host_ns, tmp_path
):
    """ "old" leaked, mapping 6000/udp on every address; "new" maps 127.0.0.1:6000 only;
    another tool DNATs NODE_IP:6000 to a pod of its own. gc removing "old" deleted that
    tool's live flow as "nothing maps this port now" (helper-146): it judged without
    knowing whose addresses the flows went to. Now "old"'s flow to that address goes,
    the other tool's stays."""
    cache = _old_and_new(host_ns, tmp_path, [{**UDP[0], "hostIP": "127.0.0.1"}])
    _ns(host_ns, "iptables", "-t", "nat", "-I", "PREROUTING", "1", "-d", NODE_IP, "-p", "udp",
        "--dport", "6000", "-j", "DNAT", "--to-destination", "10.244.1.7:60")  # fmt: skip
    _flow(host_ns, 42001, "192.0.2.1", NODE_IP, 6000, "10.88.0.13", 60)  # to the dead one
    _flow(host_ns, 42005, "192.0.2.5", NODE_IP, 6000, "10.244.1.7", 60)  # the other tool's
    _flow(host_ns, 42006, "192.0.2.6", "127.0.0.1", 6000, "10.88.0.20", 60)  # to "new"
    result = _gc_removing_old(host_ns, cache)
    assert result["conntrack_deleted"] == 1
    assert _sports(host_ns) == {42005, 42006}


def test_gc_and_stale_only_keep_another_tools_flows_it_takes_first_on_a_port_mapped_everywhere(
    host_ns, tmp_path
):
    """62e874e's case with "new" mapping 6000/udp on every address: another tool's rule
    ahead of CNI-HOSTPORT-DNAT (PREROUTING 1) DNATs NODE_IP:6000 to its pod, so that
    address's flows are its own (no row is shadowed: it takes some addresses only). gc
    removing "old" deleted that tool's live flow as an old destination of "new", and so
    did flush-udp --stale-only (review helper-149). Now only the flow to the removed
    container goes; --stale-only keeps the other tool's, before gc and after."""
    cache = _old_and_new(host_ns, tmp_path, UDP)
    _ns(host_ns, "iptables", "-t", "nat", "-I", "PREROUTING", "1", "-d", NODE_IP, "-p", "udp",
        "--dport", "6000", "-j", "DNAT", "--to-destination", "10.244.1.7:60")  # fmt: skip
    _flow(host_ns, 42001, "192.0.2.1", NODE_IP, 6000, "10.88.0.13", 60)  # to the dead one
    _flow(host_ns, 42005, "192.0.2.5", NODE_IP, 6000, "10.244.1.7", 60)  # the other tool's
    # (Before gc, "old"'s chain still takes 6000 after that rule: its flow is routed.)
    assert _stale_would_delete(host_ns, cache) == []
    result = _gc_removing_old(host_ns, cache)
    assert _sports(host_ns) == {42005}
    assert result["conntrack_deleted"] == 1
    again = run(["flush-udp", "--netns", host_ns, "--cni-cache-dir", str(cache), "--stale-only",
                 "-o", "json"])  # fmt: skip
    assert json.loads(again.stdout)["count"] == 0
    assert _sports(host_ns) == {42005}


@pytest.mark.parametrize(
    "condition",
    [["-s", "192.0.2.0/24"], ["-i", "lo"], ["-m", "mark", "!", "--mark", "0x4000/0x4000"]],
    ids=["source", "interface", "mark"],
)
def test_gc_and_stale_only_keep_the_flows_a_conditional_rule_takes_first(
    host_ns, tmp_path, condition
):
    """The case above with the other tool's rule taking only some packets of 6000/udp:
    those of some sources (a port forward for one network), of one interface, or
    unmarked. Its live flows are that tool's, as an nftables rule's with a condition not
    judged are (kept, list warns), but an iptables rule with any condition but `! -i`
    and `-d` was passed by: list counted its flow misrouted, flush-udp --stale-only and
    gc removing "old" deleted it as an old destination of "new" (review h210)."""
    cache = _old_and_new(host_ns, tmp_path, UDP)
    _ns(host_ns, "iptables", "-t", "nat", "-I", "PREROUTING", "1", *condition, "-p", "udp",
        "--dport", "6000", "-j", "DNAT", "--to-destination", "10.244.1.7:60")  # fmt: skip
    _flow(host_ns, 42001, "198.51.100.1", NODE_IP, 6000, "10.88.0.13", 60)  # to the dead one
    _flow(host_ns, 42005, "192.0.2.5", NODE_IP, 6000, "10.244.1.7", 60)  # the other tool's
    assert _misrouted(host_ns, cache) == 0
    assert _stale_would_delete(host_ns, cache) == []
    result = _gc_removing_old(host_ns, cache)
    assert _sports(host_ns) == {42005}
    assert result["conntrack_deleted"] == 1


def test_list_stale_only_and_gc_keep_the_flows_a_rule_after_the_jump_takes_past_conditions(
    host_ns, tmp_path
):
    """ "old" (leaked) and "new" map 6000/udp for 192.168.0.0/16 alone (conditionsV4 on
    their entry rules); another tool's rule appended after the plugin's jump (Docker's,
    its jump added after the plugin's) DNATs the other sources' packets, which leave
    CNI-HOSTPORT-DNAT untaken, to a pod of its own. The walk stopped at the jump for
    every destination an iptables mapping covers, conditions or not: list counted that
    tool's live flow misrouted, flush-udp --stale-only deleted it, and so did gc
    removing "old". The flow gc's removal left to a dead container still goes."""
    cache = tmp_path / "cni"
    (cache / "results").mkdir(parents=True)
    _ns(host_ns, "ip", "addr", "add", f"{NODE_IP}/32", "dev", "lo")
    some = ["-s", "192.168.0.0/16"]
    rp.run_plugin("ADD", host_ns, "old", rp.plugin_conf("mynet", ["10.88.0.13/16"], UDP,
                  conditions_v4=some), check=True)  # fmt: skip
    new = rp.plugin_conf("mynet", ["10.88.0.20/16"], UDP, conditions_v4=some)
    rp.run_plugin("ADD", host_ns, "new", new, check=True)
    _cache(cache, "mynet", "new", new)
    _ns(host_ns, "iptables", "-t", "nat", "-A", "PREROUTING", "-p", "udp", "--dport", "6000",
        "-j", "DNAT", "--to-destination", "10.244.1.7:60")  # fmt: skip
    _flow(host_ns, 42001, "192.168.1.1", NODE_IP, 6000, "10.88.0.13", 60)  # to "old"
    _flow(host_ns, 42005, "198.51.100.5", NODE_IP, 6000, "10.244.1.7", 60)  # the other tool's
    assert _misrouted(host_ns, cache) == 0
    assert _stale_would_delete(host_ns, cache) == []
    result = _gc_removing_old(host_ns, cache)
    assert _sports(host_ns) == {42005}
    assert result["conntrack_deleted"] == 1


@pytest.mark.parametrize("owner", ["iptables", "nft-table"])
def test_gc_and_stale_only_keep_the_node_own_flows_an_output_rule_takes_first(
    host_ns, tmp_path, owner
):
    """Another tool DNATs the node's own connections to NODE_IP:6000 (nat OUTPUT, or
    another nftables table's output hook) to a pod of its own; "new" maps 6000/udp on
    every address. A flow from the node itself passed OUTPUT, where that rule takes it
    first, but its destination was walked in PREROUTING (hook_of: OUTPUT only for a
    loopback one), where no rule takes it: list counted it misrouted, flush-udp
    --stale-only and gc removing "old" deleted that tool's live flow (review h210).
    The node's own flow to the dead container, and an outside one, still go."""
    cache = _old_and_new(host_ns, tmp_path, UDP)
    if owner == "iptables":
        _ns(host_ns, "iptables", "-t", "nat", "-I", "OUTPUT", "1", "-d", NODE_IP, "-p", "udp",
            "--dport", "6000", "-j", "DNAT", "--to-destination", "10.244.1.7:60")  # fmt: skip
    else:
        script = ("table ip otherfw {\n chain out {\n  type nat hook output priority -150;"
                  f" policy accept;\n  ip daddr {NODE_IP} udp dport 6000 dnat to 10.244.1.7:60"
                  "\n }\n}\n")  # fmt: skip
        subprocess.run(["ip", "netns", "exec", host_ns, "nft", "-f", "-"], input=script,
                       text=True, check=True)  # fmt: skip
    _flow(host_ns, 42001, "192.0.2.1", NODE_IP, 6000, "10.88.0.13", 60)  # to the dead one
    _flow(host_ns, 42003, NODE_IP, NODE_IP, 6000, "10.88.0.13", 60)  # the node's, dead one's
    _flow(host_ns, 42005, NODE_IP, NODE_IP, 6000, "10.244.1.7", 60)  # the other tool's
    assert _misrouted(host_ns, cache) == 0  # ("old" takes it still)
    result = _gc_removing_old(host_ns, cache)
    assert _sports(host_ns) == {42005}
    assert result["conntrack_deleted"] == 2


@pytest.mark.parametrize("owner", ["nft-table", "iptables-legacy"])
def test_gc_and_stale_only_keep_the_flows_another_table_takes_first_on_one_address(
    host_ns, tmp_path, owner
):
    """The case above with the other tool's rule where the plugin's iptables-nft table
    is not: another nftables table's earlier nat hook (`ip daddr NODE_IP udp dport 6000
    dnat`, netavark's shape), or the other iptables flavour's PREROUTING (legacy's nat
    hooks at the plugin's priority). Neither shadows the row (it takes one address),
    and gc and --stale-only judged by iptables-nft's rules alone deleted that tool's
    flow as an old destination of "new"."""
    cache = _old_and_new(host_ns, tmp_path, UDP)
    if owner == "nft-table":
        script = ("table ip otherfw {\n chain pre {\n  type nat hook prerouting priority -150;"
                  f" policy accept;\n  ip daddr {NODE_IP} udp dport 6000 dnat to 10.244.1.7:60"
                  "\n }\n}\n")  # fmt: skip
        subprocess.run(["ip", "netns", "exec", host_ns, "nft", "-f", "-"], input=script,
                       text=True, check=True)  # fmt: skip
    else:
        _ns(host_ns, "iptables-legacy", "-t", "nat", "-I", "PREROUTING", "1", "-d", NODE_IP,
            "-p", "udp", "--dport", "6000", "-j", "DNAT", "--to-destination", "10.244.1.7:60")  # fmt: skip
    _flow(host_ns, 42001, "192.0.2.1", NODE_IP, 6000, "10.88.0.13", 60)  # to the dead one
    _flow(host_ns, 42005, "192.0.2.5", NODE_IP, 6000, "10.244.1.7", 60)  # the other tool's
    assert _misrouted(host_ns, cache) == 0
    result = _gc_removing_old(host_ns, cache)
    assert _sports(host_ns) == {42005}
    assert result["conntrack_deleted"] == 1
    _flow(host_ns, 42002, "192.0.2.2", "10.0.0.2", 6000, "10.88.0.13", 60)  # elsewhere
    _ns(host_ns, "ip", "addr", "add", "10.0.0.2/32", "dev", "lo")
    again = run(["flush-udp", "--netns", host_ns, "--cni-cache-dir", str(cache), "--stale-only",
                 "-o", "json"])  # fmt: skip
    # The removed container's flow on an address nobody else takes still goes.
    assert [d["src"] for d in json.loads(again.stdout)["deleted"]] == ["192.0.2.2"]
    assert _sports(host_ns) == {42005}


def test_gc_flushes_only_the_removed_containers_flows_of_a_port_it_freed(host_ns, tmp_path):
    """ "old" leaked mapping 6000/udp and nothing of the plugin's maps the port after gc
    (it is freed), but Docker publishes it too (`-j DOCKER` ahead of the plugin's jump,
    `! -i docker0 -p udp --dport 6000 -j DNAT`), and the host has flows of its own there
    (never DNATed). gc deleted every flow of the port: Docker's live ones and the
    host's too. Only the flow to the removed container goes now."""
    cache = tmp_path / "cni"
    (cache / "results").mkdir(parents=True)
    _ns(host_ns, "ip", "addr", "add", f"{NODE_IP}/32", "dev", "lo")
    rp.run_plugin("ADD", host_ns, "old", rp.plugin_conf("mynet", ["10.88.0.13/16"], UDP),
                  check=True)  # fmt: skip
    live = rp.plugin_conf("mynet", ["10.88.0.20/16"], [{"hostPort": 7000, "containerPort": 70,
                                                        "protocol": "udp"}])  # fmt: skip
    rp.run_plugin("ADD", host_ns, "live", live, check=True)
    _cache(cache, "mynet", "live", live)
    _ns(host_ns, "iptables", "-t", "nat", "-N", "DOCKER")
    _ns(host_ns, "iptables", "-t", "nat", "-I", "PREROUTING", "1", "-m", "addrtype",
        "--dst-type", "LOCAL", "-j", "DOCKER")  # fmt: skip
    _ns(host_ns, "iptables", "-t", "nat", "-A", "DOCKER", "!", "-i", "docker0", "-p", "udp",
        "--dport", "6000", "-j", "DNAT", "--to-destination", "172.17.0.2:60")  # fmt: skip
    _flow(host_ns, 42001, "192.0.2.1", NODE_IP, 6000, "10.88.0.13", 60)  # to the dead one
    _flow(host_ns, 42005, "192.0.2.5", NODE_IP, 6000, "172.17.0.2", 60)  # Docker's
    _flow(host_ns, 42006, "192.0.2.6", NODE_IP, 6000)  # the host's own, never DNATed
    done = run(["gc", "--netns", host_ns, "--cni-cache-dir", str(cache), "--yes", "--min-age",
                "0", "-o", "json"])  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert [r["container_id"] for r in result["removed"]] == ["old"]
    assert result["conntrack_deleted"] == 1
    assert _sports(host_ns) == {42005, 42006}


def test_gc_no_flush_udp_leaves_them(host_ns, tmp_path):
    cache = tmp_path / "cni"
    (cache / "results").mkdir(parents=True)
    _ns(host_ns, "ip", "addr", "add", f"{NODE_IP}/32", "dev", "lo")
    rp.run_plugin("ADD", host_ns, "old", rp.plugin_conf("mynet", ["10.88.0.13/16"], UDP),
                  check=True)  # fmt: skip
    new = rp.plugin_conf("mynet", ["10.88.0.20/16"], UDP)
    rp.run_plugin("ADD", host_ns, "new", new, check=True)
    _cache(cache, "mynet", "new", new)
    _flow(host_ns, 42001, "192.0.2.1", NODE_IP, 6000, "10.88.0.13", 60)
    done = run(["gc", "--netns", host_ns, "--cni-cache-dir", str(cache), "--yes", "--min-age",
                "0", "--no-flush-udp", "-o", "json"])  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["conntrack_deleted"] == 0
    assert _sports(host_ns) == {42001}


def test_gc_flushes_the_flows_a_removed_chain_sent_to_the_same_address_on_another_port(
    host_ns, container, tmp_path
):
    """Real traffic. The leaked chain of "old" (entered first) DNATs 6000/udp to
    CTR_IP:53; "new", given the same address, maps the port to CTR_IP:54 now. After gc
    removes "old", its flow still went to :53 -- the same address, so --stale-only's
    judgement kept it (address only), and the client's datagrams never reached :54
    while it kept sending."""
    from flush_udp_helpers import CTR_IP, HOST_IP

    from portmapctl.host.netns import entered

    cache = tmp_path / "cni"
    (cache / "results").mkdir(parents=True)
    old = rp.plugin_conf("mynet", [f"{CTR_IP}/24"], [{"hostPort": 6000, "containerPort": 53,
                                                       "protocol": "udp"}])  # fmt: skip
    rp.run_plugin("ADD", host_ns, "old", old, check=True)
    with entered(container):
        servers = {port: socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for port in (53, 54)}
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with servers[53], servers[54], client:
        for port, server in servers.items():
            server.bind((CTR_IP, port))
            server.settimeout(0.3)
        client.bind((CTR_IP, 0))

        def reaches() -> set:
            client.sendto(b"ping", (HOST_IP, 6000))
            got = set()
            for port, server in servers.items():
                try:
                    got |= {port} if server.recvfrom(100)[0] == b"ping" else set()
                except TimeoutError:
                    pass
            return got

        assert reaches() == {53}
        new = rp.plugin_conf("mynet", [f"{CTR_IP}/24"], [{"hostPort": 6000, "containerPort": 54,
                                                           "protocol": "udp"}])  # fmt: skip
        rp.run_plugin("ADD", host_ns, "new", new, check=True)  # flushes; old's chain wins
        _cache(cache, "mynet", "new", new)
        assert reaches() == {53}
        done = run(["gc", "--netns", host_ns, "--cni-cache-dir", str(cache), "--yes",
                    "--min-age", "0", "-o", "json"])  # fmt: skip
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert [r["container_id"] for r in result["removed"]] == ["old"]
        assert result["conntrack_deleted"] == 1
        assert reaches() == {54}


def _other_table(ns: str, script: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=script, text=True,
                   check=True)  # fmt: skip


def test_gc_stale_only_and_list_keep_a_loopback_flow_another_tables_output_hook_takes(
    host_ns, tmp_path
):
    """Review h211 of 268fc7e: "new" maps 6000/udp on every address, so the node's own
    connections to 127.0.0.1:6000 reach it through the nat output hook; another
    nftables table's earlier output hook DNATs 127.0.0.1:6000 to its own pod. The
    row's walk (prerouting, every address not loopback) never looks at that hook, so
    Judging.hook_ports left the port out and the per-destination walk (which walks
    output for a loopback destination, as 1131c29 made it) was skipped: gc, flush-udp
    --stale-only and list deleted (counted) that tool's live flow as an old
    destination. Only the flow to the removed container goes."""
    cache = _old_and_new(host_ns, tmp_path, UDP)
    _other_table(host_ns, "table ip otherfw {\n chain out {\n  type nat hook output priority"
                 " -150; policy accept;\n  ip daddr 127.0.0.1 udp dport 6000 dnat to"
                 " 10.244.1.7:60\n }\n}\n")  # fmt: skip
    _flow(host_ns, 42001, "192.0.2.1", NODE_IP, 6000, "10.88.0.13", 60)  # to the dead one
    _flow(host_ns, 42006, "127.0.0.1", "127.0.0.1", 6000, "10.244.1.7", 60)  # the other tool's
    assert _misrouted(host_ns, cache) == 0
    assert _stale_would_delete(host_ns, cache) == []
    result = _gc_removing_old(host_ns, cache)
    assert _sports(host_ns) == {42006}
    assert result["conntrack_deleted"] == 1
    again = run(["flush-udp", "--netns", host_ns, "--cni-cache-dir", str(cache), "--stale-only",
                 "-o", "json"])  # fmt: skip
    assert json.loads(again.stdout)["count"] == 0
    assert _sports(host_ns) == {42006}


def test_stale_only_of_a_port_given_keeps_what_another_tables_hook_takes_whatever_else_is_mapped(
    host_ns, tmp_path
):
    """Review h211 of 268fc7e: `flush-udp --stale-only --port 7000`, a port the plugin
    does not map, where another nftables table DNATs 7000/udp to its own pod: with no
    mapping on the node every hook is asked of the port's flows (node_judging's
    hook_ports None) and that tool's flow is kept; with a mapping of another port,
    hook_ports held only the rows' ports and the same flow went as "DNATed, but nothing
    maps this port now"."""
    cache = tmp_path / "cni"
    (cache / "results").mkdir(parents=True)
    _ns(host_ns, "ip", "addr", "add", f"{NODE_IP}/32", "dev", "lo")
    _other_table(host_ns, "table ip otherfw {\n chain pre {\n  type nat hook prerouting"
                 " priority -150; policy accept;\n  udp dport 7000 dnat to 10.244.1.7:70\n"
                 " }\n}\n")  # fmt: skip
    _flow(host_ns, 42010, "192.0.2.1", NODE_IP, 7000, "10.244.1.7", 70)

    def stale() -> list:
        done = run(["flush-udp", "--netns", host_ns, "--cni-cache-dir", str(cache),
                    "--stale-only", "--port", "7000", "--dry-run", "-o", "json"])  # fmt: skip
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)["deleted"]

    assert stale() == []
    new = rp.plugin_conf("mynet", ["10.88.0.20/16"], UDP)
    rp.run_plugin("ADD", host_ns, "new", new, check=True)
    _cache(cache, "mynet", "new", new)
    assert stale() == []
    assert _sports(host_ns) == {42010}


def test_gc_stale_only_and_list_keep_the_flows_another_tools_rule_dnats_to_a_mapped_containers_other_port(
    host_ns, tmp_path
):
    """Another tool's rule ahead of CNI-HOSTPORT-DNAT takes NODE_IP:6000 to "new"'s own
    address, on another port (53: a hand-made forward of the node's DNS to the pod, a
    Service to the same pod), while "new" maps 6000/udp to :60. Its flows are that
    rule's and live: the next datagram goes to the same place. Found by real traffic
    (helper h190): as that address is a container of the plugin's, the flow was judged
    against "new"'s mapping alone and called an old destination: list counted it
    misrouted, flush-udp --stale-only deleted it, and so did gc removing "old". Only the
    flow to the removed container goes."""
    cache = _old_and_new(host_ns, tmp_path, UDP)
    _ns(host_ns, "iptables", "-t", "nat", "-I", "PREROUTING", "1", "-d", NODE_IP, "-p", "udp",
        "--dport", "6000", "-j", "DNAT", "--to-destination", "10.88.0.20:53")  # fmt: skip
    _flow(host_ns, 42001, "192.0.2.1", NODE_IP, 6000, "10.88.0.13", 60)  # to the dead one
    _flow(host_ns, 42005, "192.0.2.5", NODE_IP, 6000, "10.88.0.20", 53)  # the other rule's
    assert _misrouted(host_ns, cache) == 0
    assert _stale_would_delete(host_ns, cache) == []
    result = _gc_removing_old(host_ns, cache)
    assert _sports(host_ns) == {42005}
    assert result["conntrack_deleted"] == 1
    assert _misrouted(host_ns, cache) == 0
    assert _stale_would_delete(host_ns, cache) == []


def test_gc_flushes_no_port_in_a_family_the_removed_chain_does_not_map_it_in(host_ns, tmp_path):
    """gone1 (dual-stack, stale) maps `[fd00::1]:9191:91/udp`: its IPv4 entry rule names
    9191 (the plugin's multiport has every port), its IPv4 chain has no rule for it.
    live1 (cached) maps `*:9191` over IPv4. gc removing gone1 took IPv4 9191 for a port
    of the removal and deleted its flows as flush-udp --stale-only would (the one never
    DNATed, the one DNATed to an old address): nothing of the removal ever took them.
    gone1's own IPv6 flow still goes."""
    cache = tmp_path / "cni"
    (cache / "results").mkdir(parents=True)
    _ns(host_ns, "ip", "addr", "add", f"{NODE_IP}/32", "dev", "lo")
    _ns(host_ns, "ip", "addr", "add", "fd00::1/128", "dev", "lo", "nodad")
    ports = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
             {"hostPort": 9191, "containerPort": 91, "protocol": "udp", "hostIP": "fd00::1"}]  # fmt: skip
    rp.run_plugin("ADD", host_ns, "gone1", rp.plugin_conf("mynet", ["10.88.0.5/16", "fd00::5/64"],
                                                          ports), check=True)  # fmt: skip
    live = rp.plugin_conf("mynet", ["10.88.0.7/16"], [{"hostPort": 9191, "containerPort": 91,
                                                       "protocol": "udp"}])  # fmt: skip
    rp.run_plugin("ADD", host_ns, "live1", live, check=True)
    _cache(cache, "mynet", "live1", live)
    _flow(host_ns, 42001, "192.0.2.1", NODE_IP, 9191, "10.88.0.7", 91)  # live1's
    _flow(host_ns, 42002, "192.0.2.2", NODE_IP, 9191)  # never DNATed
    _flow(host_ns, 42003, "192.0.2.3", NODE_IP, 9191, "10.88.0.9", 91)  # an old address
    _flow(host_ns, 42004, "2001:db8::4", "fd00::1", 9191, "fd00::5", 91)  # gone1's
    done = run(["gc", "--netns", host_ns, "--cni-cache-dir", str(cache), "--yes", "--min-age",
                "0", "-o", "json"])  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert sorted((r["family"], r["container_id"]) for r in result["removed"]) == [
        (4, "gone1"), (6, "gone1")]  # fmt: skip
    v4 = [r for r in result["removed"] if r["family"] == 4][0]
    assert v4["host_ports"] == [{"protocol": "tcp", "host_port": 8080}]
    assert result["conntrack_deleted"] == 1
    assert _sports(host_ns) == {42001, 42002, 42003}
