"""Podman on a dual-stack CNI network: IPv6 end to end, beside IPv4.

The other e2e modules publish on IPv4 networks alone. Here a dual-stack podman network
(the plugin makes a chain per family) carries published ports of every host-IP kind
podman hands the plugin: none (both families), an IPv6 host address (IPv6 only), `[::]`
(IPv6 only, no `-d`) and an IPv4 host address (IPv4 only; its port still in the IPv6
entry rule's --dports, with no rule for it in the IPv6 chain). Traffic goes to the
node's own IPv6 address (on lo: TEST-NET's IPv6 twin), not to ::1, which the kernel
never lets leave lo for a container.
"""

from __future__ import annotations

import json
import sys

import pytest
from podmanlab import NODE_IP, PAGE, Container, Node
from test_podman_e2e import WEB, chains_of, listing, statuses_of

pytestmark = pytest.mark.netns

NODE_IP6 = "2001:db8::10"
UDP_PORT = 5353
CLIENT_PORT = 40653


def dual_stack(node: Node, name: str, subnet4: str, subnet6: str) -> None:
    node.podman(
        "network", "create", "--disable-dns", "--subnet", subnet4, "--subnet", subnet6, name
    )


def send_udp6(node: Node, port: int, sport: int) -> None:
    """A UDP datagram from the node's IPv6 address to its own `port` (a fixed source
    port, as a client that stays)."""
    code = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n"
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind((sys.argv[1], int(sys.argv[3])))\n"
        "s.sendto(b'ping', (sys.argv[1], int(sys.argv[2])))\n"
    )
    node.ns(sys.executable, "-c", code, NODE_IP6, str(port), str(sport))


def v6_rows(listed: dict, container: Container) -> set[tuple[str, str | None, int, str, int]]:
    return {
        (m["protocol"], m["host_ip"], m["host_port"], m["container_ip"], m["container_port"])
        for m in listed["mappings"]
        if m["container_id"] == container.id and m["family"] == 6
    }


def ipv6_of(node: Node, container: Container, network: str) -> str:
    info = json.loads(node.podman("inspect", container.id).stdout)[0]
    return info["NetworkSettings"]["Networks"][network]["GlobalIPv6Address"]


def test_dual_stack_podman_ipv6_mappings_gc_and_repair(node: Node) -> None:
    node.ns("ip", "addr", "add", f"{NODE_IP6}/128", "dev", "lo")
    dual_stack(node, "pm6", "10.89.140.0/24", "fd00:89:140::/64")
    web = node.start(
        "web",
        ["pm6"],
        ["8080:80", f"{UDP_PORT}:53/udp", f"[{NODE_IP6}]:8081:80", "[::]:8082:80",
         f"{NODE_IP}:8083:80"],
        WEB,
    )  # fmt: skip
    gone = node.start("gone", ["pm6"], ["8090:80", "5354:53/udp"], WEB)
    web6 = ipv6_of(node, web, "pm6")

    # Each mapping in the family its host IP is of; all of them healthy.
    listed = listing(node)
    assert v6_rows(listed, web) == {
        ("tcp", None, 8080, web6, 80),
        ("udp", None, UDP_PORT, web6, 53),
        ("tcp", NODE_IP6, 8081, web6, 80),
        ("tcp", None, 8082, web6, 80),
    }
    assert {(m["host_port"], m["family"]) for m in listed["mappings"] if m["container_id"] == web.id} == {
        (8080, 4), (UDP_PORT, 4), (8083, 4), (8080, 6), (UDP_PORT, 6), (8081, 6), (8082, 6),
    }  # fmt: skip
    assert {s for m in listed["mappings"] for s in m["status"]} == {"ok"}
    done = node.portmapctl("check")
    assert done.returncode == 0, done.stdout + done.stderr
    for port in (8080, 8081, 8082):
        assert node.http_get(NODE_IP6, port) == PAGE, port
    assert node.http_get(NODE_IP, 8083) == PAGE

    # A crash: the zombie's chains go in both families with gc --netns-liveness, and
    # its IPv6 UDP flows with them; the live container's stay.
    gone6 = ipv6_of(node, gone, "pm6")
    node.kill_and_forget(gone)
    send_udp6(node, 5354, CLIENT_PORT)
    assert any(f["reply_src"] == gone6 for f in node.udp_flows(5354))
    listed = listing(node)
    assert {c["family"] for c in chains_of(listed, gone)} == {4, 6}
    assert statuses_of(listed, gone) == {"zombie"}
    done = node.portmapctl("gc", "--yes", "--min-age", "0", "--netns-liveness")
    assert done.returncode == 0, done.stdout + done.stderr
    listed = listing(node)
    assert chains_of(listed, gone) == []
    assert statuses_of(listed, web) == {"ok"}
    assert [f for f in node.udp_flows(5354) if f["reply_src"] == gone6] == []

    # A firewall flush of IPv6 alone: check names it, --repair makes it again.
    node.ns("ip6tables", "-w", "-t", "nat", "-F")
    node.ns("ip6tables", "-w", "-t", "nat", "-X")
    done = node.portmapctl("check", "-o", "json")
    assert done.returncode == 1, done.stdout + done.stderr
    assert {p["family"] for p in json.loads(done.stdout)["problems"] if p["kind"] != "zombie"} == {
        6
    }
    done = node.portmapctl("check", "--repair")
    assert done.returncode == 1, done.stdout + done.stderr  # the zombie's entry remains
    assert v6_rows(listing(node), web) == v6_rows(listed, web)
    for port in (8080, 8081, 8082):
        assert node.http_get(NODE_IP6, port) == PAGE, port
