"""check of one mapping (--network/--container/--ip/-p, the plugin's CHECK stand-in)
given its mappings in another order than the runtime gave the plugin: podman's order
is a Go map's, so a script cannot know it. The real plugin's CHECK looks at no order
in the container's chain (it finds each rule), only at its entry rules' text."""

from __future__ import annotations

import json

import realplugin as rp
from pmctl import run

ADDED = [
    rp.port_mapping(8080, 80),
    rp.port_mapping(5353, 53, "udp"),
    rp.port_mapping(8081, 80, host_ip="127.0.0.1"),
]
ADDRESS = "10.88.0.5/16"


def _flags(mappings):
    flags = []
    for m in mappings:
        host_ip = f"{m['hostIP']}:" if m.get("hostIP") else ""
        flags += ["-p", f"{host_ip}{m['hostPort']}:{m['containerPort']}/{m['protocol']}"]
    return flags


def test_mappings_in_another_order_are_healthy_as_for_the_plugins_check(host_ns, tmp_path):
    """UDP first where the plugin was given it second: the plugin's CHECK passes, and
    check said `rules-order`, exit 1 (its --repair rewrote the chain in the -p order).
    Now healthy and --repair changes nothing. Its TCP ports swapped change the entry
    rule's --dports text: the plugin's CHECK fails, and so does check."""
    conf = rp.plugin_conf("mynet", [ADDRESS], ADDED)
    rp.run_plugin("ADD", host_ns, "ctrA", conf, check=True)
    base = ["check", "--netns", host_ns, "--cni-cache-dir", str(tmp_path), "--family", "4"]
    one = [*base, "--network", "mynet", "--container", "ctrA", "--ip", ADDRESS, "-o", "json"]
    before = rp.save(host_ns, 4)

    udp_first = [ADDED[1], ADDED[0], ADDED[2]]
    theirs = rp.run_check(host_ns, "ctrA", rp.plugin_conf("mynet", [ADDRESS], udp_first))
    assert [r.returncode for r in theirs] == [0], [r.stdout for r in theirs]
    done = run([*one, *_flags(udp_first)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["problems"] == []
    done = run([*one, *_flags(udp_first), "--repair"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["repaired"] is False
    assert rp.nat_rules(rp.save(host_ns, 4)) == rp.nat_rules(before)

    tcp_swapped = [ADDED[2], ADDED[1], ADDED[0]]
    theirs = rp.run_check(host_ns, "ctrA", rp.plugin_conf("mynet", [ADDRESS], tcp_swapped))
    assert [r.returncode for r in theirs] != [0]
    done = run([*one, *_flags(tcp_swapped)])
    assert done.returncode == 1, done.stdout + done.stderr
    assert {p["kind"] for p in json.loads(done.stdout)["problems"]} == {
        "missing-entry",
        "extra-entry",
    }


def test_one_port_of_a_cached_container_is_checked_and_repaired_beside_its_others(
    host_ns, tmp_path
):
    """The check of one port of a container whose cache entry maps more: its other
    ports are live mappings, not `extra-rules`/`extra-entry` (as the plugin's CHECK
    with that one port passes), and --repair never deletes them (SPEC §3). Before,
    that --repair (the fix `check -q` printed) deleted every other port."""
    cached = ADDED[:2]  # 8080/tcp, 5353/udp: one entry rule each
    conf = rp.plugin_conf("mynet", [ADDRESS], cached)
    rp.run_plugin("ADD", host_ns, "ctrA", conf, check=True)
    rp.write_cni_cache(tmp_path, "mynet", "ctrA", "eth0", conf, cached, [ADDRESS])
    base = ["check", "--netns", host_ns, "--cni-cache-dir", str(tmp_path), "--family", "4"]
    one = [*base, "--network", "mynet", "--container", "ctrA", "--ip", ADDRESS,
           *_flags(ADDED[:1]), "-o", "json"]  # fmt: skip
    before = rp.save(host_ns, 4)
    theirs = rp.run_check(host_ns, "ctrA", rp.plugin_conf("mynet", [ADDRESS], ADDED[:1]))
    assert [r.returncode for r in theirs] == [0], [r.stdout for r in theirs]
    done = run(one)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["problems"] == []
    done = run([*one, "--repair"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert rp.nat_rules(rp.save(host_ns, 4)) == rp.nat_rules(before)

    # Its own DNAT rule lost: put back in its place, the other ports left as they are.
    dnat = next(r for r in rp.nat_rules(before) if "--to-destination 10.88.0.5:80" in r
                and "--dport 8080" in r)  # fmt: skip
    rp.iptables(host_ns, ["-t", "nat", *dnat.replace("-A ", "-D ", 1).split()])
    done = run([*one, "--repair"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert rp.nat_rules(rp.save(host_ns, 4)) == rp.nat_rules(before)
    assert [r.returncode for r in rp.run_check(host_ns, "ctrA", conf)] == [0]
    node = run([*base, "-o", "json"])
    assert node.returncode == 0 and json.loads(node.stdout)["problems"] == [], node.stdout
