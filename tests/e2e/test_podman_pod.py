"""A podman pod's life, with gc run as the cron job runs it after each step.

The pod's ports are published on its infra container: the plugin's chain carries the
infra container's ID, and the pod's other containers (here the one serving the page,
in the infra container's network namespace) appear nowhere in the nat table. After
each step (pod stop, start, restart, kill with podman's own clean-up, rm -f),
`gc --yes --min-age 0` keeps exactly what `podman port` says of the infra container
while its network is set up, check is healthy, and the port reaches the pod.
"""

from __future__ import annotations

import pytest
from podmanlab import IMAGE, NODE_IP, PAGE, Node
from test_podman_e2e import WEB, listing, podman_ports
from test_podman_lifecycle import cron_gc_keeps_what_podman_has

pytestmark = pytest.mark.netns


def test_a_pods_ports_follow_its_infra_container_through_its_life(node: Node) -> None:
    node.network("pma", "10.89.120.0/24")
    infra = node.pod("p1", ["pma"], ["8080:80", "5353:53/udp"])
    app = node.podman("run", "-d", "--pod", "p1", "--name", "p1web", IMAGE, *WEB)
    app_id = app.stdout.strip().splitlines()[-1]
    published = {infra.id: podman_ports(node, infra)}
    assert {(proto, port) for _, proto, _, port, _ in published[infra.id]} == {
        ("tcp", 8080),
        ("udp", 5353),
    }
    cron_gc_keeps_what_podman_has(node, published, "pod create, run in the pod")
    owners = {m["container_id"] for m in listing(node)["mappings"]}
    assert owners == {infra.id}, "the pod's ports are its infra container's"
    assert node.portmapctl("list", "--container", app_id[:12], "-q").stdout.startswith(
        "0 of 2 mappings match"
    )
    assert node.http_get(NODE_IP, 8080) == PAGE

    node.podman("pod", "stop", "-t", "0", "p1")
    cron_gc_keeps_what_podman_has(node, published, "pod stop")
    assert listing(node)["mappings"] == []

    node.podman("pod", "start", "p1")
    cron_gc_keeps_what_podman_has(node, published, "pod start")
    assert node.http_get(NODE_IP, 8080) == PAGE

    node.podman("pod", "restart", "p1")
    cron_gc_keeps_what_podman_has(node, published, "pod restart")
    assert node.http_get(NODE_IP, 8080) == PAGE

    node.podman("pod", "kill", "p1")
    node.wait_torn_down(infra)
    cron_gc_keeps_what_podman_has(node, published, "pod kill")
    assert node.cache_entries(infra) == []

    node.podman("pod", "start", "p1")
    cron_gc_keeps_what_podman_has(node, published, "pod start after kill")
    assert node.http_get(NODE_IP, 8080) == PAGE

    node.podman("pod", "rm", "-f", "-t", "0", "p1")
    cron_gc_keeps_what_podman_has(node, {}, "pod rm -f")
    assert listing(node)["chains"] == []
    assert node.cache_entries(infra) == []
