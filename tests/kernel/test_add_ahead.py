"""`add` with its work started ahead (ops/add_ahead.py: the restore, `ip route get` and
the nfnl dump in threads, under the lock, while the rest of add is imported), against
the kernel: the plugin's two side effects still follow the restore, and a node where
the plan cannot go in blind still ends as the plugin's.

- route_localnet is set on the interface towards the container (looked up ahead);
- the UDP conntrack entries to the new host port made before the rules went in are
  flushed, the others kept; with an empty conntrack table the dump is spared and
  nothing goes wrong; --no-flush-udp keeps them;
- with --netns, the threads work in that namespace, not the caller's;
- with every option shape of the fixtures, the blind plan's checks find the plugin's
  shared rules (add goes in blind) and the table is the plugin's own.
"""

from __future__ import annotations

import json

import pytest
import realplugin as rp
from fixtures_lib import NAMES, added_first, conf
from flush_udp_helpers import ct_args, ct_sports, ns_run, route_localnet
from pmctl import run

from portmapctl.cni import config as cni_config
from portmapctl.host.netns import entered
from portmapctl.iptables.access import open_backend
from portmapctl.iptables.chains import wanted_chains
from portmapctl.ops.add_ahead import write_blind

pytestmark = pytest.mark.netns

NET = "aheadnet"


def _node(ns: str) -> None:
    """A pod interface holding the subnet, and one container the plugin added (so
    the shared chains exist and add goes in blind)."""
    ns_run(ns, "ip", "link", "add", "cni0", "type", "veth", "peer", "name", "cni0p")
    ns_run(ns, "ip", "addr", "add", "10.88.0.1/16", "dev", "cni0")
    for device in ("cni0", "cni0p"):
        ns_run(ns, "ip", "link", "set", device, "up")
    ports = [{"hostPort": 8000, "containerPort": 80, "protocol": "tcp"}]
    done = rp.run_plugin("ADD", ns, "first", rp.plugin_conf(NET, ["10.88.0.2/16"], ports))
    assert done.returncode == 0, done.stdout + done.stderr
    ns_run(ns, "sysctl", "-qw", "net.ipv4.conf.cni0.route_localnet=0")


def _add(ns: str, cid: str, ip: str, udp: int, *extra: str):
    args = ["add", "--netns", ns, "--iptables", "nft", "--network", NET, "--container", cid]
    args += ["--ip", ip, "-p", f"{udp}:53/udp", "-o", "json", *extra]
    done = run(args)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def _said(doc) -> list:
    """add's JSON warnings but the note of the tests' CNI cache, which is not there
    (conftest: PORTMAPCTL_CNI_CACHE_DIR), which -o json holds too since 87e9ab4."""
    return [w for w in doc.get("warnings") or () if not w.startswith("no CNI cache at ")]


def test_route_localnet_and_the_udp_flush_follow_the_restore(host_ns):
    rp.require(rp.mode_available("nft"))
    _node(host_ns)
    # Flows that began before the mapping: one to its port, one to another port.
    ns_run(host_ns, "conntrack", *ct_args("192.0.2.1", "192.0.2.2", 41001, 5300))
    ns_run(host_ns, "conntrack", *ct_args("192.0.2.1", "192.0.2.2", 41002, 5399))
    doc = _add(host_ns, "second", "10.88.0.3/16", 5300)
    assert doc["changed"] is True and not _said(doc), doc
    assert "-C PREROUTING" not in json.dumps(doc)  # the checks are not shown as changes
    assert route_localnet(host_ns, "cni0") == "1"
    assert ct_sports(host_ns) == {41002}
    # Nothing in the table: the flush has nothing to do, and says nothing.
    ns_run(host_ns, "conntrack", "-F")
    doc = _add(host_ns, "third", "10.88.0.4/16", 5301)
    assert doc["changed"] is True and not _said(doc), doc
    # --no-flush-udp: the flow stays.
    ns_run(host_ns, "conntrack", *ct_args("192.0.2.1", "192.0.2.2", 41003, 5302))
    doc = _add(host_ns, "fourth", "10.88.0.5/16", 5302, "--no-flush-udp")
    assert doc["changed"] is True
    assert ct_sports(host_ns) == {41003}


def test_the_work_ahead_happens_in_the_namespace_given(host_ns):
    """The caller stays in its own namespace; the restore, the route lookup and the
    dump all look at --netns (a chain in the caller's table would mislead each)."""
    rp.require(rp.mode_available("nft"))
    _node(host_ns)
    doc = _add(host_ns, "second", "10.88.0.3/16", 5300)
    assert doc["changed"] is True
    saved = rp.save(host_ns, 4, "nft")
    assert "CNI-DN-" in saved and "dport 5300" in saved
    assert route_localnet(host_ns, "cni0") == "1"
    # A second container on the same port is told it is shadowed: the dump looked here.
    done = run(
        ["add", "--netns", host_ns, "--iptables", "nft", "--network", NET, "--container"]
        + ["other", "--ip", "10.88.0.9/16", "-p", "5300:53/udp"]
    )
    assert done.returncode == 0, done.stderr
    assert "will be shadowed" in done.stderr


@pytest.mark.parametrize("name", [n for n in NAMES if conf(n).get("mode", "nft") == "nft"])
def test_every_option_shape_goes_in_blind_and_as_the_plugin_would(name, host_ns):
    """On a node the plugin set up with a fixture's options (conditions, masqAll, an
    external mark chain, a mark bit, host IPs...), the next container's checks (-C in
    the restore) find every shared rule: add goes in blind, and the table is the one
    the plugin's own ADD of that container makes."""
    rp.require(rp.mode_available("nft"))
    other = rp.create_netns("pmt-ahead")
    try:
        _first, second = added_first(name, (host_ns, other))
        config = cni_config.plugin_config(second, "second", name)
        with entered(host_ns):
            backend = open_backend("nft")
            written = write_blind(backend, {f: wanted_chains(config, f) for f in config.families})
        assert written and all(txn is not None for txn in written.values()), written
        done = rp.run_plugin("ADD", other, "second", second)
        assert done.returncode == 0, done.stdout + done.stderr
        for family in (4, 6):
            assert rp.nat_rules(rp.save(host_ns, family)) == rp.nat_rules(rp.save(other, family))
    finally:
        rp.delete_netns(other)
