"""Podman with networks on both of the plugin's backends (a node mid-migration to
`"backend": "nftables"`, upstream v1.9.1 in podman's plugin folder), where a container
crashed on one backend and a new one took its host port on the other.

iptables' nat table and the plugin's cni_hostport table hook at one priority, so the
port is `contested` on both sides; with one side a zombie, gc --netns-liveness ends it.
"""

from __future__ import annotations

import json

import pytest
import upstream
from podmanlab import NODE_IP, PAGE, Node
from test_podman_e2e import WEB, listing

pytestmark = pytest.mark.netns


def test_a_zombie_contesting_a_new_containers_port_points_at_gc(node: Node) -> None:
    """The zombie's own contested row said "both are live" and gave no command
    (re-create one on another host port, or finish the migration), and so check's
    summary named no command, where gc --netns-liveness fixes every row."""
    ok, why = upstream.available()
    if not ok:
        pytest.skip(why)
    node.use_portmap(upstream.binary("v1.9.1"))
    node.network("pmi", "10.89.110.0/24")  # the plugin's default backend: iptables
    node.network("pmn", "10.89.111.0/24")
    node.use_backend("pmn", "nftables")
    old = node.start("old", ["pmi"], ["7777:80"], WEB)
    node.kill_and_forget(old)  # a crash: its cache entry and chain stay
    new = node.start("new", ["pmn"], ["7777:80"], WEB)

    done = node.portmapctl("check", "-o", "json")
    assert done.returncode == 1, done.stdout + done.stderr
    problems = json.loads(done.stdout)["problems"]
    contested = {p["container_id"]: p for p in problems if p["kind"] == "contested"}
    assert set(contested) == {old.id, new.id}, problems
    gc = f"portmapctl gc --netns {node.netns} --cni-cache-dir {node.cache_dir} --netns-liveness"
    assert {cid: p["fix"] for cid, p in contested.items()} == {old.id: gc, new.id: gc}
    assert contested[old.id]["why"].endswith("this side is a zombie")
    assert contested[new.id]["why"].endswith("the other side is a zombie")
    assert all("both are live" not in p["why"] for p in contested.values())
    table = node.portmapctl("check")
    assert table.stdout.splitlines()[-1] == f"1 zombie, 2 contested -> {gc}", table.stdout

    done = node.portmapctl("gc", "--yes", "--min-age", "0", "--netns-liveness")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = listing(node)["mappings"]
    assert {(m["container_id"], m["backend"]) for m in rows} == {(new.id, "nftables")}
    assert {s for m in rows for s in m["status"]} == {"ok"}
    assert node.http_get(NODE_IP, 7777) == PAGE
