"""`check --repair` of many containers does the plugin's two side effects in batches
(ops/side_effects.after_setup_many): route_localnet on every interface towards a
repaired container, its routes asked on one rtnetlink socket (host/routes.py), and the UDP conntrack entries of every
repaired port from one dump and one delete. The same outcome as one container at a time,
counted here by the processes run and checked against the kernel."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import realplugin as rp
from pmctl import run
from test_check import _plugin_node
from test_flush_udp import ct_insert, ct_sports, ns_run, route_localnet

pytestmark = pytest.mark.netns


def _containers():
    found = []
    for i in range(6):
        subnet = 88 if i % 2 == 0 else 89  # behind cni0 and cni1, alternately
        ports = [
            {"hostPort": 8100 + i, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 5300 + i, "containerPort": 53, "protocol": "udp"},
        ]
        found.append((f"ctr{i}", [f"10.{subnet}.0.{10 + i}/16"], ports))
    return found


def _pod_interface(ns: str, name: str, address: str) -> None:
    """A veth end holding the pod subnet, as a bridge plugin's host side would be (no
    dummy module on every kernel)."""
    ns_run(ns, "ip", "link", "add", name, "type", "veth", "peer", "name", f"{name}p")
    ns_run(ns, "ip", "addr", "add", address, "dev", name)
    for device in (name, f"{name}p"):
        ns_run(ns, "ip", "link", "set", device, "up")


def _ip_wrapper(tmp_path: Path) -> dict:
    """`ip` on PATH logs each run, then runs the real one."""
    folder = tmp_path / "bin"
    folder.mkdir()
    log = tmp_path / "ip.log"
    script = folder / "ip"
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec /usr/sbin/ip "$@"\n')
    script.chmod(0o755)
    return {"PATH": f"{folder}:{os.environ['PATH']}", "log": str(log)}


def test_repair_of_many_sets_route_localnet_and_flushes_udp_in_one_go(host_ns, tmp_path):
    for k, subnet in enumerate((88, 89)):
        _pod_interface(host_ns, f"cni{k}", f"10.{subnet}.0.1/16")
    containers = _containers()
    _plugin_node(host_ns, "nft", tmp_path, containers)
    # The plugin's ADD set route_localnet; a node reboot or an admin resets it.
    for k in (0, 1):
        ns_run(host_ns, "sysctl", "-qw", f"net.ipv4.conf.cni{k}.route_localnet=0")
    # The firewall flush: every mapping of ctr0..ctr3 gone; ctr4, ctr5 keep theirs.
    for i in range(4):
        rp.iptables(host_ns, ["-t", "nat", "-F", f"CNI-DN-{_dn(containers[i][0])}"])
    # Flows to the node that went un-NATed meanwhile, one per UDP port, and one to a
    # port nobody maps (only flows to the node's own addresses are repair's to flush).
    ns_run(host_ns, "ip", "addr", "add", "192.0.2.2/32", "dev", "lo")
    for i, (_, _, ports) in enumerate(containers):
        ct_insert(host_ns, "192.0.2.1", "192.0.2.2", 41000 + i, ports[-1]["hostPort"])
    ct_insert(host_ns, "192.0.2.1", "192.0.2.2", 41999, 6000)
    wrapper = _ip_wrapper(tmp_path)
    done = run(
        ["check", "--repair", "--netns", host_ns, "--iptables", "nft"]
        + ["--cni-cache-dir", str(tmp_path), "-o", "json"],
        env={"PATH": wrapper["PATH"]},
    )
    doc = json.loads(done.stdout)
    assert doc["repaired"] and done.returncode == 0, done.stdout + done.stderr
    assert not doc.get("warnings"), doc
    # The routes are asked over rtnetlink, in the process: no `ip` ran at all.
    assert not Path(wrapper["log"]).exists(), Path(wrapper["log"]).read_text()
    assert route_localnet(host_ns, "cni0") == "1"
    assert route_localnet(host_ns, "cni1") == "1"
    assert route_localnet(host_ns, "lo") == "0"
    # Repaired: ctr0..ctr3 (ports 5300-5303); untouched: ctr4, ctr5, ctrx, port 6000.
    assert ct_sports(host_ns) == {41004, 41005, 41999}


def test_route_lookups_skip_what_has_no_route(host_ns):
    from portmapctl.host.netns import entered
    from portmapctl.host.routes import route_interfaces

    _pod_interface(host_ns, "cni0", "10.88.0.1/16")
    ns_run(host_ns, "ip", "route", "add", "unreachable", "10.99.0.0/16")
    ns_run(host_ns, "ip", "-6", "addr", "add", "fd00:88::1/64", "dev", "cni0", "nodad")
    asked = ["10.88.0.5", "10.200.0.10", "127.0.0.1", "10.88.7.7", "10.99.0.3"]
    asked += ["fd00:88::5", "10.88.0.1", "not-an-address"]
    with entered(host_ns):
        found = route_interfaces(asked)
    # 10.200.0.10: no route in this namespace (no default); 10.99.0.3: an unreachable
    # route. What `ip route get` says of each, the same way (its "dev" word).
    assert found == {
        "10.88.0.5": "cni0",
        "127.0.0.1": "lo",
        "10.88.7.7": "cni0",
        "fd00:88::5": "cni0",
        "10.88.0.1": "lo",
    }
    for address in asked[:-1]:
        said = subprocess.run(
            ["ip", "netns", "exec", host_ns, "ip", "-o", "route", "get", address],
            capture_output=True, text=True, check=False,
        ).stdout.split()  # fmt: skip
        assert found.get(address) == (said[said.index("dev") + 1] if "dev" in said else None)


def test_many_route_lookups_go_in_batches_and_each_answer_finds_its_address(host_ns):
    from portmapctl.host.netns import entered
    from portmapctl.host.routes import route_interfaces

    _pod_interface(host_ns, "cni0", "10.88.0.1/16")
    _pod_interface(host_ns, "cni1", "10.89.0.1/16")
    # 700 addresses (three sends), the two subnets and unroutable ones interleaved.
    asked = [f"10.{(88, 89, 200)[i % 3]}.{i // 250}.{i % 250 + 2}" for i in range(700)]
    with entered(host_ns):
        found = route_interfaces(asked)
    expected = {a: ("cni0" if a.startswith("10.88.") else "cni1") for a in asked}
    assert found == {a: i for a, i in expected.items() if not a.startswith("10.200.")}


def _dn(container_id: str) -> str:
    from portmapctl.iptables.chains import chain_name

    return chain_name("mynet", container_id, "DN-")[len("CNI-DN-") :]
