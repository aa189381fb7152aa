"""`check --repair` while the plugin restarts a container (its DEL, then its ADD: the
same network and ID, so the same chain and entry rule, a new address and a new cache
entry) between the repair's reads and its write. The repair must leave the plugin's
fresh rules, never write the old address's back (iptables/planner._rewrite: the rules
read deleted by text behind a guard; ops/check/cache_now.CacheNow: the cache entry read
again for every chain a plan changes). Real plugin, real iptables, both flavours."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import time
from typing import Callable, List, Optional

import pytest
import realplugin as rp
from flush_udp_helpers import ct_args, ct_sports, ns_run, route_localnet
from gc_helpers import Node_, node  # noqa: F401
from json_schemas import validated
from pmctl import run as pm_run
from test_repair_batch import _pod_interface

from portmapctl.core.mapping import MappingConfig, PortMapping
from portmapctl.errors import ApplyFailed
from portmapctl.host import netns
from portmapctl.iptables.access.restore import RestoreBackend
from portmapctl.iptables.chains import chain_name
from portmapctl.iptables.transaction import OpKind
from portmapctl.ops.add import add
from portmapctl.ops.check.repair import repair
from portmapctl.ops.node import Node, NodeOptions

pytestmark = pytest.mark.netns


class Racing:
    """A real backend; `race` (the real plugin) runs once, just before the first read
    (`before_read`) or the first apply. Everything else is the backend's own."""

    def __init__(self, backend, race: Callable[[], None], before_read: bool) -> None:
        self.backend = backend
        self.race: Optional[Callable[[], None]] = race
        self.before_read = before_read
        self.refused = 0  # planned transactions (no -C) iptables refused

    cheap_chain_reads = False  # add: no write ahead in threads, past this wrapper

    def __getattr__(self, name: str):
        return getattr(self.backend, name)

    def _run_race(self) -> None:
        if self.race is not None:
            self.race, race = None, self.race
            race()

    def read(self, family: int):
        if self.before_read:
            self._run_race()
        return self.backend.read(family)

    def apply(self, txn) -> None:
        if any(op.kind is OpKind.CHECK for op in txn.ops):
            self.backend.apply(txn)  # add's blind try (planner.plan_blind): not raced
            return
        self._run_race()
        try:
            self.backend.apply(txn)
        except ApplyFailed:
            self.refused += 1
            raise


def _ports(port: int) -> List[dict]:
    return [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]


RACES = pytest.mark.parametrize("before_read", [False, True], ids=["before-apply", "before-read"])


@RACES
def test_a_container_restarted_during_a_repair_keeps_the_plugins_rules(
    node: Node_,  # noqa: F811
    before_read: bool,
):
    _repair_while_restarted(node, RestoreBackend(node.mode), before_read)


@RACES
def test_the_same_through_python_iptables(host_ns, tmp_path, before_read: bool):
    pytest.importorskip("iptc", reason="python-iptables is not installed")
    if not rp.mode_available("legacy")[0]:
        pytest.skip(rp.mode_available("legacy")[1])
    from portmapctl.iptables.access.iptc import IptcBackend

    (tmp_path / "cni" / "results").mkdir(parents=True)
    _repair_while_restarted(Node_(host_ns, "legacy", tmp_path / "cni"), IptcBackend(), before_read)


def _repair_while_restarted(node: Node_, backend, before_read: bool) -> None:  # noqa: F811
    # "back"'s chain holds a rule its config does not make: the repair rewrites it. The
    # plugin restarts the container (10.88.0.12 -> 10.88.0.22) after the repair read
    # the cache: before the repair reads the table, or after it planned.
    node.add("racenet", "live1", ["10.88.0.11/16"], _ports(8080))
    node.add("racenet", "back", ["10.88.0.12/16"], _ports(8081))
    chain = chain_name("racenet", "back", "DN-")
    node.ipt(4, "-A", chain, "-p", "udp", "--dport", "9", "-j", "RETURN")

    def restarted() -> None:
        done = rp.run_plugin("DEL", node.ns, "back", node.confs["back"], mode=node.mode)
        assert done.returncode == 0, done.stderr
        node.add("racenet", "back", ["10.88.0.22/16"], _ports(8081))

    options = NodeOptions(
        iptables=node.mode, families=(4,), netns=node.ns, cache_dirs=(str(node.cache),)
    )
    racing = Node(options, Racing(backend, restarted, before_read))  # type: ignore[arg-type]
    with netns.entered(node.ns):
        result = repair(racing, flush_udp=False)
    saved = rp.strip_save_comments(rp.save(node.ns, 4, node.mode))
    assert "10.88.0.12" not in saved  # the old address's rules were not written back
    node.check("back")  # the plugin's own rules for the new address, whole
    node.check("live1")
    # The check after the repair judges the container as the cache holds it now.
    assert [p for p in result.problems if p.container_id == "back"] == []


def test_add_over_a_restarted_container_is_replanned_then_applied(node: Node_):  # noqa: F811
    # `add` of an existing container's mapping: the operator's config is what add
    # makes, but from a read after the plugin's write, never over it from the read
    # before: the first transaction is refused, the re-plan applies.
    node.add("racenet", "back", ["10.88.0.12/16"], _ports(8081))
    old_conf = node.confs["back"]
    chain = chain_name("racenet", "back", "DN-")
    node.ipt(4, "-A", chain, "-p", "udp", "--dport", "9", "-j", "RETURN")

    def restarted() -> None:
        done = rp.run_plugin("DEL", node.ns, "back", old_conf, mode=node.mode)
        assert done.returncode == 0, done.stderr
        node.add("racenet", "back", ["10.88.0.22/16"], _ports(8081))

    refused = _add_raced(node, "back", "10.88.0.12/16", 8081, restarted)
    assert refused == 1  # the plan made before the plugin's write was not forced
    for done in rp.run_check(node.ns, "back", old_conf, mode=node.mode):
        assert done.returncode == 0, done.stderr  # the operator's config, whole
    assert "10.88.0.22" not in rp.strip_save_comments(rp.save(node.ns, 4, node.mode))


def _add_raced(
    node: Node_,
    cid: str,
    ip: str,
    port: int,
    race: Callable[[], None],  # noqa: F811
) -> int:
    """`add` of racenet/`cid` (`ip`, tcp/`port` -> 80) with `race` (the real plugin)
    run just before its first apply; how many of its transactions iptables refused."""
    given = MappingConfig("racenet", cid, (ipaddress.ip_interface(ip),), (PortMapping(port, 80),))
    options = NodeOptions(
        iptables=node.mode, families=(4,), netns=node.ns, cache_dirs=(str(node.cache),)
    )
    backend = Racing(RestoreBackend(node.mode), race, before_read=False)
    with netns.entered(node.ns):
        add(Node(options, backend), given, flush_udp=False)  # type: ignore[arg-type]
    return backend.refused


def test_a_container_deleted_before_the_table_was_read_is_not_made_again(
    node: Node_,  # noqa: F811
):
    """The plugin's DEL of a container (its rules, then libcni's cache entry) after the
    repair read the cache and before it read the table: its chain is not in the table
    read, and it was made again from the entry read first (QA, race stress; the check
    after said healthy). The entries of the chains a plan makes are now looked for
    after the table is read: a container whose entries are gone is left alone."""
    node.add("racenet", "live1", ["10.88.0.11/16"], _ports(8080))
    node.add("racenet", "back", ["10.88.0.12/16"], _ports(8081))

    def deleted() -> None:
        done = rp.run_plugin("DEL", node.ns, "back", node.confs["back"], mode=node.mode)
        assert done.returncode == 0, done.stderr
        (node.cache / "results" / "racenet-back-eth0").unlink()

    options = NodeOptions(
        iptables=node.mode, families=(4,), netns=node.ns, cache_dirs=(str(node.cache),)
    )
    racing = Node(options, Racing(RestoreBackend(node.mode), deleted, True))  # type: ignore[arg-type]
    with netns.entered(node.ns):
        result = repair(racing, flush_udp=False)
    saved = rp.strip_save_comments(rp.save(node.ns, 4, node.mode))
    assert "10.88.0.12" not in saved and chain_name("racenet", "back", "DN-") not in saved
    node.check("live1")
    assert [p for p in result.problems if p.container_id == "back"] == []


def test_the_plugins_del_of_one_interface_before_the_table_was_read_is_not_made_again(
    host_ns: str, tmp_path
) -> None:
    """A pod attached to one network twice (net1, net2: one chain, both ADDs appended
    to it). The plugin's DEL of net1 (it deletes the whole chain, net2's rules too;
    then libcni drops net1's entry) after the repair read the cache and before it read
    the table: the chain was made again from both entries read first, net1's DNAT to
    its gone address back. net2's entry is still there, so the chain is made, as the
    plugin's ADD of net2 alone makes it (its CHECK passes), without net1's rules."""
    rp.require(rp.mode_available("nft"))
    cache = tmp_path / "multus"
    cid, confs = "5f0d" * 16, {}
    stamp = time.time() - 60
    for ifname, ip, port in (("net1", "10.77.0.5/16", 8080), ("net2", "10.77.0.6/16", 9090)):
        conf = confs[ifname] = rp.plugin_conf("racenet", [ip], _ports(port))
        conf["prevResult"]["interfaces"][0]["name"] = ifname  # the delegate's interface
        rp.run_plugin("ADD", host_ns, cid, conf, mode="nft", ifname=ifname, check=True)
        path = rp.write_cni_cache(cache, "racenet", cid, ifname, conf, _ports(port), [ip])
        stamp += 1
        os.utime(path, (stamp, stamp))

    def deleted() -> None:
        rp.run_plugin("DEL", host_ns, cid, confs["net1"], mode="nft", ifname="net1", check=True)
        (cache / "results" / f"racenet-{cid}-net1").unlink()

    options = NodeOptions(iptables="nft", families=(4,), netns=host_ns, cache_dirs=(str(cache),))
    racing = Node(options, Racing(RestoreBackend("nft"), deleted, True))  # type: ignore[arg-type]
    with netns.entered(host_ns):
        repair(racing, flush_udp=False)
    saved = rp.strip_save_comments(rp.save(host_ns, 4, "nft"))
    assert "10.77.0.5" not in saved and "dport 8080" not in saved, saved
    assert "--dport 9090 -j DNAT --to-destination 10.77.0.6:80" in saved, saved
    for done in rp.run_check(host_ns, cid, confs["net2"], mode="nft", ifname="net2"):
        assert done.returncode == 0, done.stdout + done.stderr


def test_a_pods_live_interface_beside_one_being_torn_down_gets_the_plugins_side_effects(
    host_ns: str, tmp_path
) -> None:
    """A pod on one network twice (net1, net2: one chain) after a firewall flush, while
    net1's DEL is under way past portmap (its interface gone from the pod's namespace,
    its entry still cached: a delegate's DEL, Multus's hot-unplug). The repair makes
    the chain from net2's entry alone and names net1 (exit 1), as 88f3b5b meant; but
    net1's `could not repair` line named the chain, and the repair skipped the side
    effects of every mapping of a chain so named: net2's, made, got neither the UDP
    flush of the flows that reached the node un-NATed while its mapping was missing
    (pinned there until idle) nor route_localnet."""
    rp.require(rp.mode_available("nft"))
    _pod_interface(host_ns, "cni0", "10.77.0.1/16")
    pod = rp.create_netns("pmt-ctr")
    try:
        path, cache, cid = f"/run/netns/{pod}", tmp_path / "multus", "6e0d" * 16
        for ifname, ip, port in (("net1", "10.77.0.5/16", 8080), ("net2", "10.77.0.6/16", 9090)):
            ports = [{"hostPort": port, "containerPort": 53, "protocol": "udp"}]
            conf = rp.plugin_conf("racenet", [ip], ports)
            conf["prevResult"]["interfaces"][0]["name"] = ifname  # the delegate's interface
            rp.run_plugin("ADD", host_ns, cid, conf, mode="nft", ifname=ifname, check=True)
            rp.write_cni_cache(cache, "racenet", cid, ifname, conf, ports, [ip], netns=path)
        rp.hold_addresses(path, ["10.77.0.6/16"])  # net1's interface (and address) gone
        ns_run(host_ns, "sysctl", "-qw", "net.ipv4.conf.cni0.route_localnet=0")
        for args in (["-F"], ["-X"]):
            rp.iptables(host_ns, ["-t", "nat", *args])
        # A flow to net2's host port that reached the node un-NATed meanwhile.
        ns_run(host_ns, "ip", "addr", "add", "192.0.2.2/32", "dev", "lo")
        ns_run(host_ns, "conntrack", *ct_args("192.0.2.1", "192.0.2.2", 41000, 9090))
        done = pm_run(
            ["check", "--repair", "--netns", host_ns, "--iptables", "nft", "--family", "4"]
            + ["--cni-cache-dir", str(cache)]
        )
        assert done.returncode == 1, done.stdout + done.stderr
        assert "its address 10.77.0.5 is on no interface" in done.stderr, done.stderr
        saved = rp.strip_save_comments(rp.save(host_ns, 4, "nft"))
        assert "--to-destination 10.77.0.6:53" in saved and "10.77.0.5" not in saved, saved
        assert 41000 not in ct_sports(host_ns)  # flushed, as the plugin's ADD does
        assert route_localnet(host_ns, "cni0") == "1"
    finally:
        rp.delete_netns(pod)


def test_a_container_whose_interface_is_there_without_its_address_is_repaired(
    host_ns: str, tmp_path
) -> None:
    """A live container whose address is not in its namespace: Kata's macvtap mode
    takes it off the veth (eth0, still there) into its VM. The repair took it for one
    being torn down (its address on no interface) and made nothing, exit 1: a live
    mapping left missing after a firewall flush. An interface of the entry's name
    there says the DEL has not removed it: the chain is made."""
    rp.require(rp.mode_available("nft"))
    pod = rp.create_netns("pmt-kata")
    try:
        path, cid = f"/run/netns/{pod}", "6b47a" * 8
        ns_run(pod, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
        ports = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
        conf = rp.plugin_conf("katanet", ["10.77.0.9/16"], ports)
        rp.run_plugin("ADD", host_ns, cid, conf, mode="nft", check=True)
        rp.write_cni_cache(tmp_path, "katanet", cid, "eth0", conf, ports, ["10.77.0.9/16"],
                           netns=path)  # fmt: skip

        def flushed_then_repaired() -> subprocess.CompletedProcess:
            for args in (["-F"], ["-X"]):
                rp.iptables(host_ns, ["-t", "nat", *args])
            return pm_run(["check", "--repair", "--netns", host_ns, "--iptables", "nft",
                           "--family", "4", "--cni-cache-dir", str(tmp_path)])  # fmt: skip

        done = flushed_then_repaired()
        assert done.returncode == 0, done.stdout + done.stderr
        saved = rp.save(host_ns, 4, "nft")
        assert "--to-destination 10.77.0.9:80" in saved, saved
        ns_run(pod, "ip", "link", "del", "eth0")  # its DEL: the interface gone
        done = flushed_then_repaired()
        assert done.returncode == 1, done.stdout + done.stderr
        assert (
            f"its address 10.77.0.9 is on no interface of its network namespace {path},"
            " nor is its interface eth0 there"
        ) in done.stderr, done.stderr
    finally:
        rp.delete_netns(pod)


def test_an_interface_back_without_its_address_after_host_locals_del_is_not_repaired(
    host_ns: str, tmp_path
) -> None:
    """host-device's DEL has its IPAM give the address back first, then moves the
    device out (upstream: into a scratch namespace, renamed there, then to the host).
    Where that fails (the host's name taken meanwhile: "file exists"), the device is
    moved back into the container's namespace under its CNI_IFNAME, without its
    addresses (a namespace change drops them; Debian's 1.1.1, renaming in place, drops
    the IPv6 ones as it sets the link down). The DEL failed, the runtime retries it:
    the interface there says nothing of a live container when host-local's lease is
    gone, and a chain made would send the host ports to an address given back. Where
    the lease is still the container's (Kata's macvtap mode), it is live."""
    rp.require(rp.mode_available("nft"))
    pod, scratch = rp.create_netns("pmt-hdev"), rp.create_netns("pmt-hdtmp")
    try:
        path, cid = f"/run/netns/{pod}", "6b47c" * 8
        ns_run(pod, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
        ns_run(pod, "ip", "addr", "add", "10.77.0.9/16", "dev", "eth0")
        ports = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
        conf = rp.plugin_conf("hdnet", ["10.77.0.9/16"], ports)
        rp.run_plugin("ADD", host_ns, cid, conf, mode="nft", check=True)
        rp.write_cni_cache(tmp_path, "hdnet", cid, "eth0", conf, ports, ["10.77.0.9/16"],
                           netns=path, leases=tmp_path / "ipam")  # fmt: skip
        # The failed DEL: out to the scratch namespace and back, its address lost.
        ns_run(pod, "ip", "link", "set", "eth0", "netns", scratch)
        ns_run(scratch, "ip", "link", "set", "eth0", "netns", pod)
        assert "10.77.0.9" not in ns_run(pod, "ip", "addr", "show", "eth0")

        def flushed_then_repaired() -> subprocess.CompletedProcess:
            for args in (["-F"], ["-X"]):
                rp.iptables(host_ns, ["-t", "nat", *args])
            return pm_run(["check", "--repair", "--netns", host_ns, "--iptables", "nft",
                           "--family", "4", "--cni-cache-dir", str(tmp_path)])  # fmt: skip

        done = flushed_then_repaired()  # its lease still held: live (Kata)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "--to-destination 10.77.0.9:80" in rp.save(host_ns, 4, "nft")
        lease = tmp_path / "ipam" / "hdnet" / "10.77.0.9"
        lease.unlink()  # host-local's DEL, before the device's move failed
        done = flushed_then_repaired()
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"host-local gave its address 10.77.0.9 back ({lease} is gone)" in done.stderr
        assert "10.77.0.9" not in rp.save(host_ns, 4, "nft")
    finally:
        rp.delete_netns(pod)
        rp.delete_netns(scratch)


def test_a_second_interface_there_without_its_address_is_repaired_in_the_other_family(
    host_ns: str, tmp_path
) -> None:
    """The same, on a pod's second network (Multus: net1, IPv6 only) beside a
    dual-stack eth0 whose addresses are there. The IPv4 plan looked into the namespace
    for eth0 alone: every address it expected there, so its interfaces not asked; the
    IPv6 plan then judged net1 by that look, its interfaces taken for none: named
    "could not repair ..., nor is its interface net1 there", exit 1, its mapping left
    missing."""
    rp.require(rp.mode_available("nft"))
    pod = rp.create_netns("pmt-kata")
    try:
        path, cid = f"/run/netns/{pod}", "6b47b" * 8
        ns_run(pod, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
        ns_run(pod, "ip", "link", "add", "net1", "type", "veth", "peer", "name", "net1p")
        ns_run(pod, "ip", "addr", "add", "10.77.0.9/16", "dev", "eth0")
        ns_run(pod, "ip", "addr", "add", "fd77::9/64", "dev", "eth0", "nodad")
        for network, ifname, ips, port in (
            ("dualnet", "eth0", ["10.77.0.9/16", "fd77::9/64"], 8080),
            ("katanet", "net1", ["fd78::9/64"], 9090),
        ):
            ports = [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]
            conf = rp.plugin_conf(network, ips, ports)
            rp.write_cni_cache(tmp_path, network, cid, ifname, conf, ports, ips, netns=path)
        for family in (4, 6):
            rp.iptables(host_ns, ["-t", "nat", "-F"], family=family)
            rp.iptables(host_ns, ["-t", "nat", "-X"], family=family)
        done = pm_run(["check", "--repair", "--netns", host_ns, "--iptables", "nft",
                       "--cni-cache-dir", str(tmp_path)])  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        saved = rp.save(host_ns, 6, "nft")
        assert "--to-destination [fd78::9]:80" in saved, saved
        assert "--to-destination [fd77::9]:80" in saved, saved
    finally:
        rp.delete_netns(pod)


def _no_rule_twice(node: Node_) -> None:  # noqa: F811
    rules = [line for line in rp.save(node.ns, 4, node.mode).splitlines() if line.startswith("-A")]
    twice = {rule for rule in rules if rules.count(rule) > 1}
    assert not twice, twice


def test_a_shared_rule_the_plugin_puts_back_during_a_repair_is_not_made_twice(
    node: Node_,  # noqa: F811
):
    """A firewall flush, then the plugin's ADD of a new container between the repair's
    read and its write: the ADD puts the shared rules back (PREROUTING's, OUTPUT's and
    POSTROUTING's jumps, SETMARK's and MASQ's rules), and the repair's plain -A of each
    went in all the same: every one twice, the repair said "healthy", and check then
    called the copies a problem no --repair removes (review helper-131). Each chain a
    shared rule is added to is now counted in the transaction (planner._count_guard):
    the try is refused, the re-plan finds them there."""
    node.add("racenet", "live1", ["10.88.0.11/16"], _ports(8080))
    node.ipt(4, "-F")  # a firewall reload: every rule of the nat table gone

    def added() -> None:
        node.add("racenet", "new2", ["10.88.0.12/16"], _ports(8081))

    options = NodeOptions(
        iptables=node.mode, families=(4,), netns=node.ns, cache_dirs=(str(node.cache),)
    )
    backend = Racing(RestoreBackend(node.mode), added, before_read=False)
    with netns.entered(node.ns):
        result = repair(Node(options, backend), flush_udp=False)  # type: ignore[arg-type]
    assert backend.refused == 1  # the plan made before the plugin's write was not forced
    _no_rule_twice(node)
    node.check("live1")
    node.check("new2")
    # (new2 is stale to it: its cache entry was written after the repair read the cache.)
    assert [p for p in result.problems if p.container_id != "new2"] == []


def test_a_shared_rule_the_plugin_puts_back_during_an_add_is_not_made_twice(
    node: Node_,  # noqa: F811
):
    """The same for `add` of a container on a flushed node (its write is planned from a
    read there, no write ahead: a shared rule is missing)."""
    node.add("racenet", "live1", ["10.88.0.11/16"], _ports(8080))
    node.ipt(4, "-F")

    def added() -> None:
        node.add("racenet", "new2", ["10.88.0.12/16"], _ports(8081))

    assert _add_raced(node, "mine", "10.88.0.13/16", 8082, added) == 1
    _no_rule_twice(node)
    node.check("new2")


class Blinking(Racing):
    """Another tool's rule in PREROUTING added just before the first apply and
    removed just after it: gone again by the read that follows a refusal."""

    def __init__(self, backend, node: Node_) -> None:  # noqa: F811
        rule = ("PREROUTING", "-s", "10.99.0.1/32", "-j", "RETURN")
        super().__init__(backend, lambda: node.ipt(4, "-A", *rule), before_read=False)
        self.gone = lambda: node.ipt(4, "-D", *rule)

    def apply(self, txn) -> None:
        blinks = self.race is not None
        try:
            super().apply(txn)
        finally:
            if blinks:
                self.gone()


def test_a_shared_chain_changed_and_back_between_read_and_write_is_tried_again(
    node: Node_,  # noqa: F811
):
    """Without a cache (no fallback of shared rules alone), the jumps into
    CNI-HOSTPORT-DNAT lost: another tool's PREROUTING rule came and went between the
    repair's read and its write, so the count guard refused the try, and a fresh read
    equal to the first made the refusal final on legacy iptables (a table unchanged
    would refuse the same plan): the repair failed, the jumps stayed missing (review
    helper-134). A refusal taken as final there is tried once more (repair._converge_shared)."""
    node.add("racenet", "live1", ["10.88.0.11/16"], _ports(8080))
    jump = ("-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT")
    for chain in ("PREROUTING", "OUTPUT"):
        node.ipt(4, "-D", chain, *jump)
    options = NodeOptions(
        iptables=node.mode, families=(4,), netns=node.ns, cache_dirs=(str(node.cache / "none"),)
    )
    backend = Blinking(RestoreBackend(node.mode), node)
    with netns.entered(node.ns):
        result = repair(Node(options, backend), flush_udp=False)  # type: ignore[arg-type]
    assert backend.refused == 1
    assert not [p for p in result.problems if p.kind == "missing-jump"], result.problems
    saved = rp.save(node.ns, 4, node.mode)
    assert saved.count("-j CNI-HOSTPORT-DNAT\n") == 2, saved  # PREROUTING's and OUTPUT's
    node.check("live1")


def test_a_dual_stack_container_being_torn_down_is_said_left_out_in_both_families(
    host_ns: str, tmp_path
) -> None:
    """A cached dual-stack container whose namespace is there without its addresses or
    its interface (its DEL under way), both of its chains flushed: the repair makes
    neither, and says so of each family (a `could not repair` line, `unrepaired`, no
    fix). The IPv4 plan judged the chain torn down (one name for both families), and the
    IPv6 plan then no longer had the container to make: its missing-chain went unsaid,
    still offering `check --repair`, the command that had just left it so."""
    rp.require(rp.mode_available("nft"))
    pod = rp.create_netns("pmt-gone")
    try:
        path, cid = f"/run/netns/{pod}", "6b47d" * 8
        ips = ["10.77.0.11/16", "fd00:77::11/64"]
        ports = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
        conf = rp.plugin_conf("gonenet", ips, ports)
        rp.run_plugin("ADD", host_ns, cid, conf, mode="nft", check=True)
        rp.write_cni_cache(tmp_path, "gonenet", cid, "eth0", conf, ports, ips, netns=path)
        for family in (4, 6):
            for args in (["-F"], ["-X"]):
                rp.iptables(host_ns, ["-t", "nat", *args], family=family)
        done = pm_run(["check", "--repair", "--netns", host_ns, "--iptables", "nft",
                       "--cni-cache-dir", str(tmp_path), "-o", "json"])  # fmt: skip
        assert done.returncode == 1, done.stdout + done.stderr
        doc = validated("check", done.stdout)
        assert sorted(u["family"] for u in doc["unrepaired"]) == [4, 6], doc["unrepaired"]
        for family in (4, 6):
            assert f"could not repair IPv{family} gonenet/{cid}" in done.stderr, done.stderr
        left = [p for p in doc["problems"] if p["container_id"] == cid]
        assert sorted(p["family"] for p in left) == [4, 6], left
        assert all(p["fix"] is None for p in left), left
    finally:
        rp.delete_netns(pod)
