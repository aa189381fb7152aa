"""`check --repair` of an nft-backed node while the real upstream plugin restarts a
container (its DEL, then its ADD: the same ID, a new address, a new cache entry)
between the repair's read of the cache and its read of the tables. The repair must
leave the plugin's fresh rules, never write the old address's back: it reads the cache
entry of every container its plan changes again, after the tables
(ops/check/nft_repair._CacheAgain), as the iptables repair does (ops/check/cache_now.CacheNow,
tests/kernel/test_repair_race.py)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import pmctl
import pytest
import realplugin as rp
import upstream

from portmapctl.host import netns
from portmapctl.ops.check.repair import repair
from portmapctl.ops.node import Node, NodeOptions
from portmapctl.ops.node_access import iptables_access, nft_access

pytestmark = pytest.mark.netns

V162 = "v1.6.2"
V191 = "v1.9.1"


@pytest.fixture(autouse=True)
def _upstream_binaries() -> None:
    rp.require(upstream.available())


@pytest.fixture
def node() -> Iterator[str]:
    name = rp.create_netns("pmt-nftrace")
    try:
        yield name
    finally:
        rp.delete_netns(name)


class RacingNft:
    """The real nftables access; `race` (the real plugin) runs once, just before the
    first read of the tables. Everything else is the access's own."""

    def __init__(self, access, race: Callable[[], None]) -> None:
        self.access = access
        self.race: Optional[Callable[[], None]] = race

    def __getattr__(self, name: str):
        return getattr(self.access, name)

    def read(self, *args, **kwargs):
        if self.race is not None:
            self.race, race = None, self.race
            race()
        return self.access.read(*args, **kwargs)


def _add(ns: str, cache: Path, cid: str, ip: str, port: int, version: str = V191) -> dict:
    ports = [rp.port_mapping(port, 80)]
    conf = upstream.nft_conf("podman", [ip], ports)
    upstream.run(version, "ADD", ns, cid, conf, check=True)
    rp.write_cni_cache(cache, "podman", cid, "eth0", conf, ports, [ip])
    return conf


@pytest.mark.parametrize("gone", [False, True], ids=["restarted", "deleted"])
def test_a_container_restarted_during_a_repair_keeps_the_plugins_rules(
    node: str, tmp_path: Path, gone: bool
) -> None:
    # The repair has work (live1's DNAT rule lost). Between its read of the cache and
    # its read of the tables, the plugin restarts "back" (10.88.0.12 -> 10.88.0.22),
    # or deletes it for good (libcni drops its cache entry after the DEL).
    live1 = _add(node, tmp_path, "live1", "10.88.0.11/16", 8080)
    old = _add(node, tmp_path, "back", "10.88.0.12/16", 8081)
    handle = next(
        obj["rule"]["handle"]
        for obj in json.loads(upstream.ruleset_json(node))["nftables"]
        if "rule" in obj and obj["rule"]["chain"] == "hostports"
        and obj["rule"].get("comment") == "live1"
    )  # fmt: skip
    upstream.nft(node, "delete", "rule", "ip", "cni_hostport", "hostports", "handle", str(handle))
    new: dict = {}

    def restarted() -> None:
        upstream.run(V191, "DEL", node, "back", old, check=True)
        (tmp_path / "results" / "podman-back-eth0").unlink()
        if not gone:
            new.update(_add(node, tmp_path, "back", "10.88.0.22/16", 8081))

    options = NodeOptions(families=(4,), netns=node, cache_dirs=(str(tmp_path),))
    with netns.entered(node):
        racing = Node(options, iptables_access(options), RacingNft(nft_access(options), restarted))
        result = repair(racing, flush_udp=False)
    ruleset = upstream.ruleset_text(node)
    assert "10.88.0.12" not in ruleset  # the old address's rules were not written back
    assert "10.88.0.11:80" in ruleset  # live1's lost rule was repaired
    upstream.run(V191, "CHECK", node, "live1", live1, check=True)
    if gone:
        assert "back" not in ruleset
    else:
        assert "tcp dport 8081 dnat to 10.88.0.22:80" in ruleset
        upstream.run(V191, "CHECK", node, "back", new, check=True)
    # The check after the repair judges the container as the cache holds it now.
    assert [p for p in result.problems if p.container_id == "back"] == []
    assert result.repaired


@pytest.mark.parametrize("again", ["10.88.0.22", "10.88.0.12"], ids=["new-ip", "same-ip"])
def test_a_container_added_again_after_the_tables_were_read_is_left_alone(
    node: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, again: str
) -> None:
    # The plugin's DEL of "back" comes before the repair reads the tables (its rules
    # gone), its ADD again with a new address and cache entry after that read, before
    # the repair reads the entry again. Planned from the new entry, the repair added
    # the rules the plugin had just added: every rule of "back" twice. With the same
    # address (a static IP: `podman run --ip`) the new entry reads as the old one
    # did: only the file's modification time tells that it was written meanwhile.
    from portmapctl.cni import cache as cni_cache

    live1 = _add(node, tmp_path, "live1", "10.88.0.11/16", 8080)
    old = _add(node, tmp_path, "back", "10.88.0.12/16", 8081)
    new: dict = {}
    read_entries = cni_cache.read_entries
    raced: list = []  # the ADD came between the read of the tables and the entry's

    def added_again(*args, **kwargs):
        if not new:
            raced.append(True)
            new.update(_add(node, tmp_path, "back", f"{again}/16", 8081))
        return read_entries(*args, **kwargs)

    def deleted() -> None:
        upstream.run(V191, "DEL", node, "back", old, check=True)
        (tmp_path / "results" / "podman-back-eth0").unlink()
        monkeypatch.setattr(cni_cache, "read_entries", added_again)

    options = NodeOptions(families=(4,), netns=node, cache_dirs=(str(tmp_path),))
    with netns.entered(node):
        racing = Node(options, iptables_access(options), RacingNft(nft_access(options), deleted))
        repair(racing, flush_udp=False)
    if not new:  # the repair never read the entry again: the plugin's ADD comes now
        new.update(_add(node, tmp_path, "back", f"{again}/16", 8081))
    ruleset = upstream.ruleset_text(node)
    if again != "10.88.0.12":
        assert "10.88.0.12" not in ruleset
    assert ruleset.count(f"dnat to {again}:80") == 1
    assert ruleset.count(f"ip saddr 127.0.0.1 ip daddr {again} masquerade") == 1
    upstream.run(V191, "CHECK", node, "back", new, check=True)
    upstream.run(V191, "CHECK", node, "live1", live1, check=True)
    assert raced


class ApplyRacingNft(RacingNft):
    """The same, `race` run once just before the first transaction is applied."""

    def read(self, *args, **kwargs):
        return self.access.read(*args, **kwargs)

    def apply(self, *args, **kwargs):
        if self.race is not None:
            self.race, race = None, self.race
            race()
        return self.access.apply(*args, **kwargs)


def _live1_then_table_deleted(node: str, tmp_path: Path) -> dict:
    """live1 added and cached, then `nft delete table ip cni_hostport`; its conf."""
    live1 = _add(node, tmp_path, "live1", "10.88.0.11/16", 8080)
    # An entry written as the repair begins is one it leaves alone (_CacheAgain).
    old = time.time() - 60
    os.utime(tmp_path / "results" / "podman-live1-eth0", (old, old))
    upstream.nft(node, "delete", "table", "ip", "cni_hostport")
    return live1


def _repair_racing(node: str, tmp_path: Path, cid: str, conf: dict, version: str = V191):
    """check --repair of the node, the plugin's ADD of `cid` landing just before its
    first write; the repair's result."""

    def added() -> None:
        upstream.run(version, "ADD", node, cid, conf, check=True)

    options = NodeOptions(families=(4,), netns=node, cache_dirs=(str(tmp_path),))
    with netns.entered(node):
        racing = ApplyRacingNft(nft_access(options), added)
        result = repair(Node(options, iptables_access(options), racing), flush_udp=False)
    assert racing.race is None  # (it ran)
    return result


def test_a_table_the_plugin_makes_again_during_a_repair_gets_one_entry(
    node: str, tmp_path: Path
) -> None:
    """`nft delete table ip cni_hostport`, then a repair whose write comes after a plugin
    ADD (of a new container, not cached yet) made the table again: the repair added its
    `fib daddr type local jump hostports_all` to the plugin's in prerouting and output
    (helper-137's soak: 2-6 of 60 rounds). It flushes the base chains it writes the
    entry into, as the plugin's ADD does, found there or not."""
    live1 = _live1_then_table_deleted(node, tmp_path)
    ports = [rp.port_mapping(8090, 80)]
    newcomer = upstream.nft_conf("podman", ["10.88.0.30/16"], ports)
    result = _repair_racing(node, tmp_path, "newcomer", newcomer)
    assert result.repaired
    ruleset = upstream.ruleset_text(node)
    assert ruleset.count("fib daddr type local jump hostports_all") == 2, ruleset  # (two chains)
    for cid, conf in (("live1", live1), ("newcomer", newcomer)):
        upstream.run(V191, "CHECK", node, cid, conf, check=True)


def test_a_cached_container_the_plugin_adds_again_during_a_repair_is_not_doubled(
    node: str, tmp_path: Path
) -> None:
    """`nft delete table ip cni_hostport`, then the plugin's ADD of the cached container
    itself lands between the repair's read (no table) and its write: the repair added
    the container's rules beside the plugin's, each twice, and check called that healthy
    (helper-141). The table and chains the read found missing are made with `create`:
    the try is refused whole and planned again from a read that has them."""
    live1 = _live1_then_table_deleted(node, tmp_path)
    result = _repair_racing(node, tmp_path, "live1", live1)
    assert not result.problems  # (and nothing left to do: the plugin's ADD did it)
    ruleset = upstream.ruleset_text(node)
    assert ruleset.count("dnat to 10.88.0.11:80") == 1, ruleset
    assert ruleset.count("ip saddr 127.0.0.1 ip daddr 10.88.0.11 masquerade") == 1, ruleset
    assert ruleset.count("fib daddr type local jump hostports_all") == 2, ruleset
    upstream.run(V191, "CHECK", node, "live1", live1, check=True)


# What else is on the node when live1's rules are lost (its table there).
_FLUSH = ["flush", "chain", "ip", "cni_hostport"]
LOST_RULES = {
    "alone": [],
    "other-container": [],
    # The entry of prerouting lost too: the repair writes it again (a flush).
    "prerouting-flushed": [[*_FLUSH, "prerouting"]],
    # Both entries lost: hostports_all's jumps, which v1.9's ADD flushes too, are left.
    "entry-flushed": [[*_FLUSH, "prerouting"], [*_FLUSH, "output"]],
    # A copy of the entry: the repair writes prerouting again as read (dedupe's flush).
    "entry-twice": [
        "add rule ip cni_hostport prerouting fib daddr type local jump hostports_all".split()
    ],
    # A v1.6 table, its two-jump entry kept (and the racing ADD v1.6.2's).
    "v1.6-table": [],
}


@pytest.mark.parametrize("before", list(LOST_RULES))
def test_lost_rules_the_plugin_adds_again_during_a_repair_are_not_doubled(
    node: str, tmp_path: Path, before: str
) -> None:
    """The table there, cached live1's rules gone (the plugin's DEL ran, its entry still
    cached), and the plugin's ADD of live1 lands between the repair's read and its write:
    the ADD appends live1's rules without looking, and the repair, planned from the read
    without them, appended them again (each twice; check calls that healthy). The repair's
    transaction fails whole when a plugin ADD committed since its read
    (planner._guard_plugin_add); planned again, nothing is left to write."""
    version = V162 if before == "v1.6-table" else V191
    other = _add(node, tmp_path, "other", "10.88.0.10/16", 9090, version)
    if before != "other-container":
        upstream.run(version, "DEL", node, "other", other, check=True)
        (tmp_path / "results" / "podman-other-eth0").unlink()
    live1 = _add(node, tmp_path, "live1", "10.88.0.11/16", 8080, version)
    old = time.time() - 60  # (not written as the repair began: _CacheAgain)
    os.utime(tmp_path / "results" / "podman-live1-eth0", (old, old))
    upstream.run(version, "DEL", node, "live1", live1, check=True)
    for command in LOST_RULES[before]:
        upstream.nft(node, *command)
    result = _repair_racing(node, tmp_path, "live1", live1, version)
    ruleset = upstream.ruleset_text(node)
    for rule in (
        "tcp dport 8080 dnat to 10.88.0.11:80",
        "ip saddr 10.88.0.11 ip daddr 10.88.0.11 masquerade",
        "ip saddr 127.0.0.1 ip daddr 10.88.0.11 masquerade",
    ):
        assert ruleset.count(rule) == 1, ruleset
    # One entry in prerouting and output each (v1.6's: two jumps, hostip_hostports first).
    entry = {V191: "fib daddr type local jump hostports_all", V162: "jump hostip_hostports"}
    assert ruleset.count(entry[version]) == 2, ruleset
    assert not result.problems, result.problems
    upstream.run(version, "CHECK", node, "live1", live1, check=True)
    if before == "other-container":
        upstream.run(version, "CHECK", node, "other", other, check=True)


def test_lost_rules_the_plugin_adds_again_during_one_mappings_repair_are_not_doubled(
    node: str, tmp_path: Path
) -> None:
    """The same race under `check --cni-config ... --repair` (repair_mapping): its
    transaction, planned from the read without live1's rules, appended them after the
    plugin's ADD had: each twice. Refused whole, planned again, nothing is left to
    write."""
    from portmapctl.cni import config as cni_config
    from portmapctl.ops.check.nft_repair_one import repair_mapping

    live1 = _add(node, tmp_path, "live1", "10.88.0.11/16", 8080)
    upstream.run(V191, "DEL", node, "live1", live1, check=True)
    config = cni_config.plugin_config(live1, "live1", "stdin")
    options = NodeOptions(families=(4,), netns=node, cache_dirs=(str(tmp_path),))
    tried: list = []
    with netns.entered(node):
        racing = ApplyRacingNft(
            nft_access(options), lambda: upstream.run(V191, "ADD", node, "live1", live1, check=True)
        )
        text, _ = repair_mapping(
            Node(options, iptables_access(options), racing), config, (4,), tried
        )
    assert racing.race is None  # (it ran)
    ruleset = upstream.ruleset_text(node)
    assert ruleset.count("tcp dport 8080 dnat to 10.88.0.11:80") == 1, ruleset
    assert ruleset.count("ip saddr 127.0.0.1 ip daddr 10.88.0.11 masquerade") == 1, ruleset
    assert (text, len(tried)) == ("", 2)  # the first try refused, then nothing to write
    upstream.run(V191, "CHECK", node, "live1", live1, check=True)


def _pod_on_two_networks(node: str, cache: Path, pod: str) -> dict:
    """`pod1` added by the plugin on `net-a` (net1, 10.77.0.5, host port 8080) and
    `net-b` (net2, 10.77.0.6, 9090), as a Multus pod in the namespace `pod`, and
    cached a minute ago (not written as the repair began: _CacheAgain); its confs by
    interface."""
    path, old = f"/run/netns/{pod}", time.time() - 60
    confs = {}
    for ifname, network, ip, port in (
        ("net1", "net-a", "10.77.0.5/16", 8080),
        ("net2", "net-b", "10.77.0.6/16", 9090),
    ):
        ports = [rp.port_mapping(port, 80)]
        confs[ifname] = upstream.nft_conf(network, [ip], ports)
        confs[ifname]["prevResult"]["interfaces"][0]["name"] = ifname  # (the plugin's pick)
        upstream.run(V191, "ADD", node, "pod1", confs[ifname], ifname=ifname, check=True)
        entry = rp.write_cni_cache(cache, network, "pod1", ifname, confs[ifname], ports, [ip],
                                   netns=path)  # fmt: skip
        os.utime(entry, (old, old))
    return confs


@pytest.mark.parametrize("lost", ["table", "one-rule"])
def test_a_pods_live_network_beside_one_being_torn_down_is_repaired(
    node: str, tmp_path: Path, lost: str
) -> None:
    """A pod on two networks (Multus: net1 on `net-a`, net2 on `net-b`), net1's DEL under
    way past portmap (its interface and address gone from the pod's namespace, its entry
    still cached). Every rule of the container carries one comment, its ID; the repair
    left the whole container as it was, so net2, live, stayed without its mapping for
    as long as net1's entry stood (for good when a DEL fails there). Now net2's rules are
    made; net1's are neither made (`lost` = "table": named, exit 1) nor, where still
    there (`lost` = "one-rule": only net2's DNAT rule gone), deleted or named."""
    pod = rp.create_netns("pmt-pod")
    try:
        path = f"/run/netns/{pod}"
        confs = _pod_on_two_networks(node, tmp_path, pod)
        rp.hold_addresses(path, ["10.77.0.6/16"])  # net1's interface gone, net2's there
        if lost == "table":
            upstream.nft(node, "delete", "table", "ip", "cni_hostport")
        else:
            handle = next(
                obj["rule"]["handle"]
                for obj in json.loads(upstream.ruleset_json(node))["nftables"]
                if "rule" in obj and obj["rule"]["chain"] == "hostports"
                and "9090" in json.dumps(obj["rule"]["expr"])
            )  # fmt: skip
            upstream.nft(
                node, "delete", "rule", "ip", "cni_hostport", "hostports", "handle", str(handle)
            )
        done = pmctl.run(
            ["check", "--repair", "--netns", node, "--family", "4"]
            + ["--cni-cache-dir", str(tmp_path)]
        )
        ruleset = upstream.ruleset_text(node)
        assert "tcp dport 9090 dnat to 10.77.0.6:80" in ruleset, ruleset
        if lost == "table":
            assert done.returncode == 1, done.stdout + done.stderr
            assert "could not repair IPv4 net-a/pod1" in done.stderr, done.stderr
            assert "its address 10.77.0.5 is on no interface" in done.stderr, done.stderr
            assert "10.77.0.5" not in ruleset, ruleset
        else:
            assert done.returncode == 0, done.stdout + done.stderr
            assert "could not repair" not in done.stderr, done.stderr
            assert "tcp dport 8080 dnat to 10.77.0.5:80" in ruleset, ruleset
        upstream.run(V191, "CHECK", node, "pod1", confs["net2"], ifname="net2", check=True)
    finally:
        rp.delete_netns(pod)


def test_a_network_torn_down_then_added_again_during_a_repair_keeps_the_plugins_rules(
    node: str, tmp_path: Path
) -> None:
    """A pod on two networks, net1's DEL past portmap (every rule of the pod gone with
    it, net1's address off the pod's namespace, its entry still cached): the first try
    plans net2's rules, net1 judged torn down. Before that try goes in, another
    container's DEL takes a rule it deletes (the try fails whole) and the runtime adds
    net1 again (`podman network connect`: the same ID, a new address, a new entry).
    The second try must leave the pod whole, as for any container the plugin ran for
    meanwhile: it deleted net1's fresh rules as not wanted, planned from net1's entry
    still judged torn down."""
    pod = rp.create_netns("pmt-pod")
    try:
        path = f"/run/netns/{pod}"
        old = time.time() - 60  # (not written as the repair began: _CacheAgain)
        confs = _pod_on_two_networks(node, tmp_path, pod)
        # "other": an old address's rule on its port, which the repair deletes.
        ports = [rp.port_mapping(7070, 80)]
        before = upstream.nft_conf("podman", ["10.88.0.99/16"], ports)
        upstream.run(V191, "ADD", node, "other", before, check=True)
        other = upstream.nft_conf("podman", ["10.88.0.11/16"], ports)
        upstream.run(V191, "ADD", node, "other", other, check=True)
        entry = rp.write_cni_cache(
            tmp_path, "podman", "other", "eth0", other, ports, ["10.88.0.11/16"]
        )
        os.utime(entry, (old, old))
        # net1's DEL past portmap (which takes every rule of the pod) and bridge.
        upstream.run(V191, "DEL", node, "pod1", confs["net1"], ifname="net1", check=True)
        rp.hold_addresses(path, ["10.77.0.6/16"])
        again: dict = {}

        def raced() -> None:
            upstream.run(V191, "DEL", node, "other", other, check=True)
            (tmp_path / "results" / "podman-other-eth0").unlink()
            (tmp_path / "results" / "net-a-pod1-net1").unlink()
            ports = [rp.port_mapping(8080, 80)]
            again.update(upstream.nft_conf("net-a", ["10.77.0.7/16"], ports))
            again["prevResult"]["interfaces"][0]["name"] = "net1"
            rp.hold_addresses(path, ["10.77.0.7/16"])
            upstream.run(V191, "ADD", node, "pod1", again, ifname="net1", check=True)
            rp.write_cni_cache(tmp_path, "net-a", "pod1", "net1", again, ports,
                               ["10.77.0.7/16"], netns=path)  # fmt: skip

        options = NodeOptions(families=(4,), netns=node, cache_dirs=(str(tmp_path),))
        with netns.entered(node):
            racing = ApplyRacingNft(nft_access(options), raced)
            repair(Node(options, iptables_access(options), racing), flush_udp=False)
        assert racing.race is None  # (it ran)
        ruleset = upstream.ruleset_text(node)
        assert "tcp dport 8080 dnat to 10.77.0.7:80" in ruleset, ruleset
        assert "10.77.0.5" not in ruleset, ruleset
        upstream.run(V191, "CHECK", node, "pod1", again, ifname="net1", check=True)
    finally:
        rp.delete_netns(pod)
