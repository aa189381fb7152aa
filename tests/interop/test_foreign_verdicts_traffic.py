"""Another tool's nat rule that ACCEPTs, RETURNs or drops a mapped port, judged against
real connections: a client namespace connects to the node's address, the container
namespace answers with a tag, and list must say what the kernel did.

For a new connection the kernel calls the nat chains of a hook point one after
another (nf_nat_inet_fn) until one binds a NAT: an `accept` (iptables' ACCEPT, or a
RETURN from PREROUTING itself) ends only its own table, and the next nat chain, the
plugin's, still DNATs the connection; a `drop` in a nat chain ends the packet.
0.1 had it the other way round: an accept `shadowed` (check exit 1 on a healthy
node), a drop `ok` (a mapping that gets nothing passed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pmctl
import pytest
import realplugin as rp
import upstream

pytestmark = pytest.mark.netns

NODE_IP, CLIENT_IP, CTR_IP = "192.168.77.5", "192.168.77.2", "10.88.0.5"
CID = "verdict0a"
TAG = "from-the-container"

_SERVE = f"""
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80))
s.listen(16)
print("up", flush=True)
while True:
    c, _ = s.accept()
    c.sendall(b"{TAG}")
    c.close()
"""

_CONNECT = """
import socket, sys
s = socket.socket()
s.settimeout(1.5)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print(s.recv(100).decode())
except OSError:
    print("")
"""

# Another tool's own nft table, hooked before the plugin's (dstnat - 10).
HANDMADE = """table ip handmade {
  chain pre {
    type nat hook prerouting priority dstnat - 10; policy accept;
    tcp dport 8080 accept
    tcp dport 8081 drop
    tcp dport vmap { 8082 : accept, 8083 : drop }
  }
}
"""


def _ip(*args: str) -> None:
    subprocess.run([rp._ip(), *args], check=True, capture_output=True)


@pytest.fixture
def node() -> Iterator[Tuple[str, str]]:
    """(the node's namespace, the client's); the container's namespace serves TAG on
    port 80 at CTR_IP, routed through the node."""
    names = [rp.create_netns(f"pmt-vrd{n}") for n in range(3)]
    node_ns, client, ctr = names
    server = None
    try:
        _ip("-n", node_ns, "link", "add", "eth0", "type", "veth", "peer", "name", "c0",
            "netns", client)  # fmt: skip
        _ip("-n", node_ns, "link", "add", "cni0", "type", "veth", "peer", "name", "eth0",
            "netns", ctr)  # fmt: skip
        for ns, dev, addr in ((node_ns, "eth0", f"{NODE_IP}/24"),
                              (node_ns, "cni0", "10.88.0.1/16"),
                              (client, "c0", f"{CLIENT_IP}/24"),
                              (ctr, "eth0", f"{CTR_IP}/16")):  # fmt: skip
            _ip("-n", ns, "addr", "add", addr, "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
        _ip("-n", ctr, "route", "add", "default", "via", "10.88.0.1")
        _ip("netns", "exec", node_ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        server = subprocess.Popen(
            [rp._ip(), "netns", "exec", ctr, sys.executable, "-c", _SERVE],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None and server.stdout.readline().strip() == "up"
        yield node_ns, client
    finally:
        if server is not None:
            server.kill()
            server.wait()
        for name in names:
            rp.delete_netns(name)


def _reached(client: str, port: int) -> bool:
    """Whether a connection from the client to the node's port lands in the container."""
    done = subprocess.run(
        [rp._ip(), "netns", "exec", client, sys.executable, "-c", _CONNECT, NODE_IP, str(port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.stdout.strip() == TAG


def _statuses(args: List[str]) -> Dict[int, List[str]]:
    rows = json.loads(pmctl.ok(["list", *args, "-o", "json"]))["mappings"]
    return {r["host_port"]: r["status"] for r in rows}


def _ports(*numbers: int) -> List[dict]:
    return [rp.port_mapping(port, 80) for port in numbers]


def test_another_tables_accept_leaves_the_port_and_its_drop_takes_it(
    node: Tuple[str, str], tmp_path: Path
) -> None:
    """An iptables mapping (Debian's plugin) behind HANDMADE: accept (a rule or a vmap
    element) lets the plugin's DNAT happen, drop loses the connection."""
    rp.require(rp.plugin_available())
    node_ns, client = node
    ports = _ports(8080, 8081, 8082, 8083, 8084)
    conf = rp.plugin_conf("podman", [f"{CTR_IP}/16"], ports)
    rp.run_plugin("ADD", node_ns, CID, conf, check=True)
    rp.write_cni_cache(tmp_path, "podman", CID, "eth0", conf, ports, [f"{CTR_IP}/16"])
    upstream.nft(node_ns, "-f", "-", stdin=HANDMADE)
    args = ["--netns", node_ns, "--cni-cache-dir", str(tmp_path), "--family", "4"]

    reached = {port: _reached(client, port) for port in (8080, 8081, 8082, 8083, 8084)}
    assert reached == {8080: True, 8081: False, 8082: True, 8083: False, 8084: True}
    assert _statuses(args) == {port: ["ok"] if reached[port] else ["shadowed"] for port in reached}
    done = pmctl.run(["check", *args, "-o", "json"])
    assert done.returncode == 1, done.stdout + done.stderr
    assert sorted(p["detail"].split(" ")[0] for p in json.loads(done.stdout)["problems"]) == [
        "tcp/8081",
        "tcp/8083",
    ]


# A firewall's nat chain that lets through only what it accepts.
POLICY_DROP = """table ip handmade {
  chain pre {
    type nat hook prerouting priority dstnat - 10; policy drop;
    tcp dport 8080 accept
  }
}
"""


def test_another_tables_policy_drop_takes_what_it_does_not_accept(
    node: Tuple[str, str], tmp_path: Path
) -> None:
    """`policy drop` on another table's nat chain: what no rule of it accepts is
    dropped (8081, 8084: no rule names them), the accepted port reaches the plugin's
    DNAT. 0.1 (and the walk that judged only rules): every port `ok`, check healthy."""
    rp.require(rp.plugin_available())
    node_ns, client = node
    ports = _ports(8080, 8081, 8084)
    conf = rp.plugin_conf("podman", [f"{CTR_IP}/16"], ports)
    rp.run_plugin("ADD", node_ns, CID, conf, check=True)
    rp.write_cni_cache(tmp_path, "podman", CID, "eth0", conf, ports, [f"{CTR_IP}/16"])
    upstream.nft(node_ns, "-f", "-", stdin=POLICY_DROP)
    args = ["--netns", node_ns, "--cni-cache-dir", str(tmp_path), "--family", "4"]

    reached = {port: _reached(client, port) for port in (8080, 8081, 8084)}
    assert reached == {8080: True, 8081: False, 8084: False}
    assert _statuses(args) == {port: ["ok"] if reached[port] else ["shadowed"] for port in reached}
    done = pmctl.run(["check", *args, "-o", "json"])
    assert done.returncode == 1, done.stdout + done.stderr
    details = sorted(p["detail"] for p in json.loads(done.stdout)["problems"])
    assert [d.split(" ")[0] for d in details] == ["tcp/8081", "tcp/8084"]
    assert all(d.endswith("pre: policy drop") for d in details), details


@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_an_iptables_accept_or_return_leaves_an_nftables_mapping_alone(
    node: Tuple[str, str], tmp_path: Path, mode: rp.Mode
) -> None:
    """An nftables mapping (upstream v1.9.1) and iptables' nat PREROUTING, at one
    priority: ACCEPT and PREROUTING's RETURN end iptables' table only, whichever hook
    the kernel registered first (the rules are written before and after the plugin's
    table); a DNAT there contests the port, as before."""
    rp.require(upstream.available())
    rp.require(rp.mode_available(mode))
    node_ns, client = node
    first = [["-p", "tcp", "--dport", "8080", "-j", "ACCEPT"],
             ["-p", "tcp", "--dport", "8081", "-j", "RETURN"]]  # fmt: skip
    for rule in first:  # iptables' nat table hooked before the plugin's
        rp.iptables(node_ns, ["-t", "nat", "-A", "PREROUTING", *rule], mode=mode)
    ports = _ports(8080, 8081, 8082, 8083, 8084)
    conf = upstream.nft_conf("podman", [f"{CTR_IP}/16"], ports)
    upstream.run("v1.9.1", "ADD", node_ns, CID, conf, check=True)
    rp.write_cni_cache(tmp_path, "podman", CID, "eth0", conf, ports, [f"{CTR_IP}/16"])
    for rule in (["-p", "tcp", "--dport", "8082", "-j", "ACCEPT"],
                 ["-p", "tcp", "--dport", "8083", "-j", "DNAT", "--to-destination",
                  "192.0.2.9:80"]):  # fmt: skip
        rp.iptables(node_ns, ["-t", "nat", "-I", "PREROUTING", *rule], mode=mode)
    args = ["--netns", node_ns, "--cni-cache-dir", str(tmp_path), "--family", "4"]
    args += ["--iptables", mode]

    reached = {port: _reached(client, port) for port in (8080, 8081, 8082, 8084)}
    assert reached == {8080: True, 8081: True, 8082: True, 8084: True}
    assert _statuses(args) == {
        8080: ["ok"],
        8081: ["ok"],
        8082: ["ok"],
        8083: ["contested"],
        8084: ["ok"],
    }


@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_a_goto_from_prerouting_takes_what_its_chain_leaves(
    node: Tuple[str, str], tmp_path: Path, mode: rp.Mode
) -> None:
    """`-A PREROUTING ... -g X`: what X does not take (X empty, or its RETURN) has no
    caller to go back to and meets PREROUTING's policy, ACCEPT, never the plugin's jump
    below: the mapping gets nothing (0.1: `ok`). From a chain PREROUTING jumped to
    (-j OUTER, whose -g INNER returns), the packet comes back to PREROUTING: `ok`."""
    rp.require(rp.plugin_available())
    rp.require(rp.mode_available(mode))
    node_ns, client = node
    ports = _ports(8085, 8086, 8087, 8088)
    conf = rp.plugin_conf("podman", [f"{CTR_IP}/16"], ports)
    rp.run_plugin("ADD", node_ns, CID, conf, mode=mode, check=True)
    rp.write_cni_cache(tmp_path, "podman", CID, "eth0", conf, ports, [f"{CTR_IP}/16"])
    for rule in (["-N", "EMPTY"], ["-N", "RET"], ["-N", "OUTER"],
                 ["-A", "RET", "-p", "tcp", "--dport", "8086", "-j", "RETURN"],
                 ["-A", "OUTER", "-p", "tcp", "--dport", "8088", "-g", "EMPTY"],
                 ["-I", "PREROUTING", "-p", "tcp", "--dport", "8085", "-g", "EMPTY"],
                 ["-I", "PREROUTING", "-p", "tcp", "--dport", "8086", "-g", "RET"],
                 ["-I", "PREROUTING", "-p", "tcp", "--dport", "8088", "-j", "OUTER"]):  # fmt: skip
        rp.iptables(node_ns, ["-t", "nat", *rule], mode=mode)
    args = ["--netns", node_ns, "--cni-cache-dir", str(tmp_path), "--family", "4"]
    args += ["--iptables", mode]

    reached = {port: _reached(client, port) for port in (8085, 8086, 8087, 8088)}
    assert reached == {8085: False, 8086: False, 8087: True, 8088: True}
    assert _statuses(args) == {port: ["ok"] if reached[port] else ["shadowed"] for port in reached}


def _docker(node_ns: str, mode: rp.Mode) -> None:
    """Docker's nat rules (a DNAT of 8080 to a gone address, an ACCEPT of 8082), in the
    iptables flavour `mode`."""
    for rule in (["-N", "DOCKER"],
                 ["-A", "PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "DOCKER"],
                 ["-A", "DOCKER", "-i", "docker0", "-j", "RETURN"],
                 ["-A", "DOCKER", "!", "-i", "docker0", "-p", "tcp", "--dport", "8080",
                  "-j", "DNAT", "--to-destination", "172.17.0.2:80"],
                 ["-A", "DOCKER", "-p", "tcp", "--dport", "8082", "-j", "ACCEPT"]):  # fmt: skip
        rp.iptables(node_ns, ["-t", "nat", *rule], mode=mode)


@pytest.mark.parametrize("first", ["plugin", "docker"])
@pytest.mark.parametrize(("mode", "other"), [("nft", "legacy"), ("legacy", "nft")])
def test_another_tools_rule_in_the_other_iptables_flavour_contests_the_port(
    node: Tuple[str, str], tmp_path: Path, mode: rp.Mode, other: rp.Mode, first: str
) -> None:
    """The plugin on iptables-`mode`, Docker on iptables-`other` (dockerd bundling its
    own iptables): both nat tables hook PREROUTING at -100, and the kernel runs the one
    it registered LAST first (measured here: the table written second gets 8080). No
    dump shows that order: 8080 is `contested` in both orders, never ok (0.1: ok,
    check healthy) nor shadowed; Docker's ACCEPT (8082) leaves only its own table."""
    rp.require(rp.plugin_available())
    rp.require(rp.mode_available(mode))
    rp.require(rp.mode_available(other))
    node_ns, client = node
    ports = _ports(8080, 8081, 8082)
    conf = rp.plugin_conf("podman", [f"{CTR_IP}/16"], ports)
    if first == "docker":
        _docker(node_ns, other)
    rp.run_plugin("ADD", node_ns, CID, conf, mode=mode, check=True)
    if first == "plugin":
        _docker(node_ns, other)
    rp.write_cni_cache(tmp_path, "podman", CID, "eth0", conf, ports, [f"{CTR_IP}/16"])
    args = ["--netns", node_ns, "--cni-cache-dir", str(tmp_path), "--family", "4"]
    args += ["--iptables", mode]

    reached = {port: _reached(client, port) for port in (8080, 8081, 8082)}
    assert reached == {8080: first == "docker", 8081: True, 8082: True}
    assert _statuses(args) == {8080: ["contested"], 8081: ["ok"], 8082: ["ok"]}
    done = pmctl.run(["check", *args, "-o", "json"])
    assert done.returncode == 1, done.stdout + done.stderr
    problems = json.loads(done.stdout)["problems"]
    assert [(p["kind"], p["detail"].split(" ")[0]) for p in problems] == [("contested", "tcp/8080")]
    assert f"iptables-{other}: -A DOCKER ! -i docker0" in problems[0]["detail"]
    # add warns of it too: another container (dry run, then written) on 8080 and 9090.
    add = ["add", "--netns", node_ns, "--iptables", mode, "--family", "4", "--network",
           "podman", "--container", "second1", "--ip", "10.88.0.6/16",
           "-p", "8080:80", "-p", "9090:80"]  # fmt: skip
    warning = f"IPv4 tcp/8080 is taken by a rule in the iptables-{other} nat table too"
    for run in ([*add, "--dry-run"], add):
        done = pmctl.run(run)
        assert done.returncode == 0, done.stderr
        assert warning in done.stderr and "9090" not in done.stderr, done.stderr
