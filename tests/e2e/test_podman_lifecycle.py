"""A podman container's life, step by step, with gc run as the cron job runs it.

After each step podman takes (stop, start, restart, kill -s KILL, container cleanup,
a firewall flush and `podman network reload`), `gc --yes --min-age 0` runs, and what
`list` shows must be what `podman port` says of the containers whose network podman
has not torn down: a running container's mapping is never removed, a stopped one's
never comes back, and its host port still reaches it. On the plugin's iptables
backend (Debian's plugin) and on its nftables backend (upstream v1.9.1 in podman's
plugin folder).
"""

from __future__ import annotations

import json

import pytest
import upstream
from podmanlab import NODE_IP, PAGE, Node
from test_podman_e2e import WEB, listed_ports, listing, podman_ports

pytestmark = pytest.mark.netns


Ports = set[tuple[str, str, str, int, int]]


def attached(node: Node, published: dict[str, Ports]) -> Ports:
    """What `podman port` said of the containers whose network podman has set up:
    running, or killed without the clean-up that tears it down (its namespace is still
    there; `podman port` says nothing of a container that is not running)."""
    ports: Ports = set()
    for cid, theirs in published.items():
        info = json.loads(node.podman("inspect", cid).stdout)[0]
        if info["NetworkSettings"].get("SandboxKey"):
            ports |= theirs
    return ports


def cron_gc_keeps_what_podman_has(node: Node, published: dict[str, Ports], step: str) -> None:
    done = node.portmapctl("gc", "--yes", "--min-age", "0")
    assert done.returncode == 0, f"{step}: {done.stdout}{done.stderr}"
    assert listed_ports(listing(node)) == attached(node, published), step
    done = node.portmapctl("check")
    assert done.returncode == 0, f"{step}: {done.stdout}{done.stderr}"


def walk_the_lifecycle(node: Node) -> dict[str, Ports]:
    web = node.start("web", ["pma"], ["8080:80", "5353:53/udp"], WEB)
    both = node.start("both", ["pma", "pmb"], [f"{NODE_IP}:8081:80"], WEB)
    published = {c.id: podman_ports(node, c) for c in (web, both)}
    cron_gc_keeps_what_podman_has(node, published, "run")

    node.podman("stop", "-t", "0", "web")
    cron_gc_keeps_what_podman_has(node, published, "stop")
    assert node.http_get(NODE_IP, 8081) == PAGE

    node.podman("start", "web")
    cron_gc_keeps_what_podman_has(node, published, "start")
    assert node.http_get(NODE_IP, 8080) == PAGE

    node.podman("restart", "-t", "0", "both")
    cron_gc_keeps_what_podman_has(node, published, "restart")
    assert node.http_get(NODE_IP, 8081) == PAGE

    # conmon's exit command (`podman container cleanup`) tears the network down (the
    # CNI DEL), as on a real node, once the container is dead: the mapping goes.
    node.podman("kill", "-s", "KILL", "web")
    node.wait_torn_down(web)
    cron_gc_keeps_what_podman_has(node, published, "kill -s KILL")
    assert node.cache_entries(web) == []
    node.podman("container", "cleanup", "web")
    cron_gc_keeps_what_podman_has(node, published, "container cleanup")
    node.podman("start", "web")
    cron_gc_keeps_what_podman_has(node, published, "start after kill")
    assert node.http_get(NODE_IP, 8080) == PAGE
    return published


def test_lifecycle_on_the_iptables_backend(node: Node) -> None:
    node.network("pma", "10.89.100.0/24")
    node.network("pmb", "10.89.101.0/24")
    published = walk_the_lifecycle(node)

    node.ns("iptables", "-w", "-t", "nat", "-F")
    node.ns("iptables", "-w", "-t", "nat", "-X")
    node.podman("network", "reload", "--all")
    cron_gc_keeps_what_podman_has(node, published, "network reload")
    assert node.http_get(NODE_IP, 8080) == PAGE
    assert node.http_get(NODE_IP, 8081) == PAGE


def test_lifecycle_on_the_nftables_backend(node: Node) -> None:
    ok, why = upstream.available()
    if not ok:
        pytest.skip(why)
    node.use_portmap(upstream.binary("v1.9.1"))
    for name, subnet in (("pma", "10.89.102.0/24"), ("pmb", "10.89.103.0/24")):
        node.network(name, subnet)
        node.use_backend(name, "nftables")
    walk_the_lifecycle(node)
    assert "cni_hostport" in node.ns("nft", "list", "tables").stdout
    assert node.ns("iptables-save", "-t", "nat").stdout.count("CNI-DN-") == 0
