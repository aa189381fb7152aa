"""The commands on nft-backed nodes made by the real upstream plugin (and Debian's 1.1.1).

Each test plays a node in a fresh namespace and runs `portmapctl` as a process with
`--netns`, as an operator would; the upstream binaries judge the result (CHECK, DEL).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pmctl
import pytest
import realplugin as rp
import upstream
from flush_udp_helpers import ct_args, ct_load, ct_sports, masquerade_flows
from prometheus_client.parser import text_string_to_metric_families

from portmapctl.iptables.chains import chain_name

pytestmark = pytest.mark.netns

V191 = "v1.9.1"


@pytest.fixture(autouse=True)
def _upstream_binaries() -> None:
    rp.require(upstream.available())


def _namespace(prefix: str) -> Iterator[str]:
    name = rp.create_netns(prefix)
    try:
        yield name
    finally:
        rp.delete_netns(name)


@pytest.fixture
def node() -> Iterator[str]:
    yield from _namespace("pmt-nftcmd")


_pm = rp.port_mapping


WEB = ("web1", ["10.88.0.5/16", "fd00:88::5/64"], [_pm(8080, 80), _pm(5353, 53, "udp")])
API = ("api1", ["10.88.0.6/16"], [_pm(9090, 90, host_ip="127.0.0.1")])
OLD = ("old1", ["10.88.0.7/16", "fd00:88::7/64"], [_pm(7000, 70), _pm(7001, 71, "udp")])


def _plugin_add(ns: str, cache: Path, ctr, cached: bool = True, version: str = V191, **opts):
    cid, ips, ports = ctr
    conf = upstream.nft_conf("podman", ips, ports, **opts)
    upstream.run(version, "ADD", ns, cid, conf, check=True)
    if cached:
        rp.write_cni_cache(cache, "podman", cid, "eth0", conf, ports, ips)
    return conf


def _pmctl(ns: str, cache: Path, *args: str):
    return pmctl.run([*args, "--netns", ns, "--cni-cache-dir", str(cache)])


def _rows(ns: str, cache: Path) -> set:
    done = _pmctl(ns, cache, "list", "-o", "json")
    assert done.returncode == 0, done.stderr
    return {
        (m["container_id"], m["family"], m["protocol"], m["host_ip"], m["host_port"],
         m["container_ip"], m["container_port"], m["snat"], tuple(m["status"]), m.get("backend"))
        for m in json.loads(done.stdout)["mappings"]
    }  # fmt: skip


def _container_rules(ns: str) -> list:
    found = []
    for obj in json.loads(upstream.ruleset_json(ns))["nftables"]:
        rule = obj.get("rule")
        if rule and rule.get("table") == "cni_hostport" and rule.get("comment"):
            found.append((rule["family"], rule["chain"], rule["comment"]))
    return found


def test_list_reads_plugin_state(node: str, tmp_path: Path) -> None:
    _plugin_add(node, tmp_path, WEB)
    _plugin_add(node, tmp_path, API, snat=False)
    _plugin_add(node, tmp_path, OLD, cached=False)
    assert _rows(node, tmp_path) == {
        ("web1", 4, "tcp", None, 8080, "10.88.0.5", 80, True, ("ok",), "nftables"),
        ("web1", 4, "udp", None, 5353, "10.88.0.5", 53, True, ("ok",), "nftables"),
        ("web1", 6, "tcp", None, 8080, "fd00:88::5", 80, True, ("ok",), "nftables"),
        ("web1", 6, "udp", None, 5353, "fd00:88::5", 53, True, ("ok",), "nftables"),
        ("api1", 4, "tcp", "127.0.0.1", 9090, "10.88.0.6", 90, False, ("ok",), "nftables"),
        ("old1", 4, "tcp", None, 7000, "10.88.0.7", 70, True, ("stale",), "nftables"),
        ("old1", 4, "udp", None, 7001, "10.88.0.7", 71, True, ("stale",), "nftables"),
        ("old1", 6, "tcp", None, 7000, "fd00:88::7", 70, True, ("stale",), "nftables"),
        ("old1", 6, "udp", None, 7001, "fd00:88::7", 71, True, ("stale",), "nftables"),
    }


def test_check_repair_after_flush(node: str, tmp_path: Path) -> None:
    confs = [
        _plugin_add(node, tmp_path, WEB),
        _plugin_add(node, tmp_path, API, conditions_v4=["ip saddr 192.168.0.0/16"]),
    ]
    healthy = _pmctl(node, tmp_path, "check")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    before = upstream.ruleset_text(node)
    upstream.nft(node, "flush", "table", "ip", "cni_hostport")
    broken = _pmctl(node, tmp_path, "check", "-o", "json")
    assert broken.returncode == 1
    kinds = {p["kind"] for p in json.loads(broken.stdout)["problems"]}
    assert kinds == {"nft-missing-entry", "nft-missing-rules"}
    assert upstream.run(V191, "CHECK", node, "web1", confs[0]).returncode != 0
    repaired = _pmctl(node, tmp_path, "check", "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert upstream.ruleset_text(node) == before
    for (cid, _ips, _ports), conf in zip((WEB, API), confs):
        upstream.run(V191, "CHECK", node, cid, conf, check=True)
    # Nothing was written to iptables for these nft-backed containers.
    assert "CNI-" not in rp.save(node, 4) + rp.save(node, 6)


def test_gc_removes_exactly_the_dead(node: str, tmp_path: Path) -> None:
    _plugin_add(node, tmp_path, WEB)
    _plugin_add(node, tmp_path, API)
    _plugin_add(node, tmp_path, OLD, cached=False)
    before = _container_rules(node)
    dry = _pmctl(node, tmp_path, "gc", "--dry-run", "--min-age", "0", "-o", "json")
    assert dry.returncode == 0, dry.stderr
    assert {
        (c["chain"], c["container_id"], c["family"]) for c in json.loads(dry.stdout)["removed"]
    } == {("hostports", "old1", 4), ("hostports", "old1", 6)}
    assert _container_rules(node) == before
    done = _pmctl(node, tmp_path, "gc", "--yes", "--min-age", "0")
    assert done.returncode == 0, done.stderr
    assert _container_rules(node) == [r for r in before if r[2] != "old1"]
    # Its rules in two families, no chain of its own: it said "removed 2 chains".
    assert done.stdout.splitlines()[-1].startswith(
        "gc: removed the nftables rules of 1 container, 0 pending,"
    ), done.stdout
    again = _pmctl(node, tmp_path, "gc", "--yes", "--min-age", "0", "-o", "json")
    assert json.loads(again.stdout)["removed"] == []


def test_add_passes_upstream_check_and_goes_on_del(node: str, tmp_path: Path) -> None:
    args = ["add", "--backend", "nftables", "--network", "podman", "--container", "mine1",
            "--ip", "10.88.0.9/16", "--ip", "fd00:88::9/64", "-p", "8088:80", "-p",
            "127.0.0.1:5300:53/udp", "--conditions-v4", "ip saddr 192.168.0.0/16"]  # fmt: skip
    dry = _pmctl(node, tmp_path, *args, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    # (The table made with `create`: refused when a plugin ADD made it meanwhile.)
    assert dry.stdout.startswith("# nftables: nft -f -\ncreate table ip cni_hostport")
    assert _container_rules(node) == []
    first = _pmctl(node, tmp_path, *args)
    assert first.returncode == 0, first.stderr
    second = _pmctl(node, tmp_path, *args, "-o", "json")
    assert json.loads(second.stdout)["changed"] is False
    conf = upstream.nft_conf(
        "podman", ["10.88.0.9/16", "fd00:88::9/64"],
        [_pm(8088, 80), _pm(5300, 53, "udp", "127.0.0.1")],
        conditions_v4=["ip saddr 192.168.0.0/16"],
    )  # fmt: skip
    upstream.run(V191, "CHECK", node, "mine1", conf, check=True)
    reference = rp.create_netns("pmt-nftcmd")
    try:
        upstream.run(V191, "ADD", reference, "mine1", conf, check=True)
        assert upstream.ruleset_text(node) == upstream.ruleset_text(reference)
    finally:
        rp.delete_netns(reference)
    upstream.run(V191, "DEL", node, "mine1", conf, check=True)
    assert _container_rules(node) == []
    assert "CNI-" not in rp.save(node, 4) + rp.save(node, 6)


def test_add_again_with_other_ports_leaves_only_this_mappings_rules_of_its_address(
    node: str, tmp_path: Path
) -> None:
    """add of a container its earlier ADD (v1.7.1's here, a host-IP rule in
    hostip_hostports) mapped with other ports makes its rules for that address this
    mapping's, as add does to its iptables chain (the state the plugin's DEL then ADD
    leave, which check expects of the new cache entry). The old ports stayed forwarded
    beside the new ones, and check called them nft-unclaimed-rules, which --repair
    leaves, at every run. The container's rules for another address (its other network:
    nft rules name no network) stay; v1.9.1's CHECK passes and its DEL removes all."""
    ips = ["10.88.0.31/16", "fd00:88::31/64"]
    old = upstream.nft_conf(
        "podman", ips, [_pm(9090, 90, host_ip="127.0.0.1"), _pm(9092, 92, "udp")]
    )
    upstream.run("v1.7.1", "ADD", node, "again1", old, check=True)
    other_ports = [_pm(6060, 60)]
    other = upstream.nft_conf("othernet", ["10.90.0.31/16"], other_ports)
    upstream.run(V191, "ADD", node, "again1", other, check=True)
    rp.write_cni_cache(
        tmp_path, "othernet", "again1", "eth1", other, other_ports, ["10.90.0.31/16"]
    )
    new_ports = [_pm(9095, 95), _pm(9096, 96, host_ip="127.0.0.1")]
    new = upstream.nft_conf("podman", ips, new_ports)
    rp.write_cni_cache(tmp_path, "podman", "again1", "eth0", new, new_ports, ips)
    done = _pmctl(node, tmp_path, "add", "--backend", "nftables", "--network", "podman",
                  "--container", "again1", "--ip", ips[0], "--ip", ips[1],
                  "-p", "9095:95", "-p", "127.0.0.1:9096:96")  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = {(r[0], r[3], r[4], r[5]) for r in _rows(node, tmp_path)}
    assert rows == {
        ("again1", None, 9095, "10.88.0.31"), ("again1", "127.0.0.1", 9096, "10.88.0.31"),
        ("again1", None, 9095, "fd00:88::31"), ("again1", None, 6060, "10.90.0.31"),
    }  # fmt: skip
    checked = _pmctl(node, tmp_path, "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    again = _pmctl(node, tmp_path, "add", "--backend", "nftables", "--network", "podman",
                   "--container", "again1", "--ip", ips[0], "--ip", ips[1],
                   "-p", "9095:95", "-p", "127.0.0.1:9096:96", "-o", "json")  # fmt: skip
    assert json.loads(again.stdout)["changed"] is False
    upstream.run(V191, "CHECK", node, "again1", new, check=True)
    upstream.run(V191, "CHECK", node, "again1", other, check=True)
    upstream.run(V191, "DEL", node, "again1", new, check=True)
    assert _container_rules(node) == []


def test_gc_json_names_every_chain_a_dead_containers_rules_are_in(
    node: str, tmp_path: Path
) -> None:
    """A v1.7.1 container's rules are in hostip_hostports (its host-IP mapping),
    hostports and masquerading; gc's row of it named one chain (`chain`:
    hostip_hostports), as if that were all it removed. `chains` lists each chain its
    rules were in, in the order nftables meets them; an iptables row's is its chain."""
    conf = upstream.nft_conf("podman", ["10.88.0.41/16", "fd00:88::41/64"],
                             [_pm(9090, 90, host_ip="127.0.0.1"), _pm(9091, 91)])  # fmt: skip
    upstream.run("v1.7.1", "ADD", node, "gone17", conf, check=True)
    rp.run_plugin("ADD", node, "goneipt", rp.plugin_conf("ipt", ["10.89.0.41/16"], [_pm(7070, 70)]),
                  check=True)  # fmt: skip
    _plugin_add(node, tmp_path, API)  # (something live: the cache is a source)
    done = _pmctl(node, tmp_path, "gc", "--yes", "--min-age", "0", "-o", "json")
    assert done.returncode == 0, done.stderr
    removed = {(c["container_id"], c["family"]): c for c in json.loads(done.stdout)["removed"]}
    assert removed[("gone17", 4)]["chain"] == "hostip_hostports"  # (as before)
    assert removed[("gone17", 4)].get("chains") == ["hostip_hostports", "hostports", "masquerading"]
    assert removed[("gone17", 6)].get("chains") == ["hostports", "masquerading"]
    ipt = removed[("goneipt", 4)]
    assert ipt.get("chains") == [ipt["chain"]]
    assert ("ip", "hostports", "gone17") not in _container_rules(node)


def test_add_follows_the_cni_config_backend(node: str, tmp_path: Path) -> None:
    conf = upstream.nft_conf("podman", ["10.88.0.10/16"], [_pm(8090, 80)])
    path = tmp_path / "conf.json"
    path.write_text(json.dumps(conf))
    done = _pmctl(node, tmp_path, "add", "--container", "viaconf", "--cni-config", str(path))
    assert done.returncode == 0, done.stderr
    assert _container_rules(node) == [
        ("ip", "hostports", "viaconf"), ("ip", "masquerading", "viaconf"),
        ("ip", "masquerading", "viaconf"),
    ]  # fmt: skip
    upstream.run(V191, "CHECK", node, "viaconf", conf, check=True)
    clash = _pmctl(node, tmp_path, "add", "--backend", "iptables", "--container", "viaconf",
                   "--cni-config", str(path))  # fmt: skip
    pmctl.assert_error(clash, 2, "contradicts")


def test_a_copy_in_the_backend_the_cached_config_does_not_use_is_both_backends(
    node: str, tmp_path: Path
) -> None:
    """web1 is cached with "backend": "nftables" (v1.9.1 added it there), and Debian's
    plugin, given a config without the key, wrote an iptables copy of it (add refuses
    to: test_add_backend_holder.py): check reports both-backends, and list tells the
    copies apart."""
    _plugin_add(node, tmp_path, WEB)
    copy = rp.plugin_conf("podman", ["10.88.0.5/16"], [_pm(8080, 80)])
    rp.run_plugin("ADD", node, "web1", copy, check=True)
    both = json.loads(_pmctl(node, tmp_path, "check", "-o", "json").stdout)["problems"]
    assert "both-backends" in {p["kind"] for p in both}
    # list's table says which copy is which: without a BACKEND column the two were one
    # row twice (CHAIN, which tells them apart, is -o wide's).
    listed = _pmctl(node, tmp_path, "list", "--port", "8080", "--family", "4").stdout.splitlines()
    assert listed[0].split()[-2:] == ["BACKEND", "STATUS"], listed
    assert sorted(line.split()[-2] for line in listed[1:3]) == ["iptables", "nftables"], listed
    alone = _pmctl(node, tmp_path, "list", "--backend", "nftables").stdout.splitlines()
    assert "BACKEND" not in alone[0] and "CHAIN" not in alone[0], alone  # (one backend)


def _run_named(ns: str, why: str) -> None:
    """Run the commands a `why` names (each in backquotes), in the namespace."""
    for command in re.findall(r"`([^`]*)`", why):
        if command == "portmap":
            continue  # (the plugin's version, named as how to find it)
        subprocess.run(["ip", "netns", "exec", ns, *shlex.split(command)], check=True)


@pytest.mark.parametrize("plugin", ["v1.9.1", "debian"])
def test_both_backends_under_a_cached_nftables_key_never_names_only_the_copy_its_plugin_reads(
    node: str, tmp_path: Path, plugin: str
) -> None:
    """web1 cached with "backend": "nftables", its rules in both backends: v1.9.1 added
    it (nftables) and Debian's 1.1.1 wrote an iptables copy, or Debian's 1.1.1 added it
    (it ignores the key: iptables) and v1.9.1 wrote an nftables copy. The two states
    are the same, rule for rule. check named the iptables copy for removal in both: on
    the 1.1.1 node that deletes the rules its plugin reads (its DEL then leaves the
    nftables copy for ever). Now `why` names each copy under the plugin version that
    does not use it; the removal named for the container's plugin leaves its own rules,
    which its CHECK passes and its DEL removes whole."""
    conf = upstream.nft_conf("podman", ["10.88.0.5/16"], [_pm(8080, 80)])
    debian = lambda cmd: rp.run_plugin(cmd, node, "web1", conf, check=True)  # noqa: E731
    v191 = lambda cmd: upstream.run(V191, cmd, node, "web1", conf, check=True)  # noqa: E731
    own, copier = (v191, debian) if plugin == "v1.9.1" else (debian, v191)
    own("ADD")
    copier("ADD")
    rp.write_cni_cache(tmp_path, "podman", "web1", "eth0", conf, [_pm(8080, 80)],
                       ["10.88.0.5/16"])  # fmt: skip
    done = _pmctl(node, tmp_path, "check", "-o", "json")
    assert done.returncode == 1, done.stdout + done.stderr
    (problem,) = json.loads(done.stdout)["problems"]
    assert problem["kind"] == "both-backends" and problem["fix"] is None, problem
    why = problem["why"]
    newer, _, older = why.partition("With a plugin before v1.6")
    assert older, why  # (each copy under its own plugin version)
    assert "iptables-nft -t nat -X" in newer and "nft delete" not in newer, why
    assert "nft delete rule" in older and "iptables" not in older.replace("in iptables", ""), why
    _run_named(node, newer if plugin == "v1.9.1" else older)
    healthy = _pmctl(node, tmp_path, "check", "-o", "json")
    if plugin == "v1.9.1":
        assert healthy.returncode == 0, healthy.stdout + healthy.stderr
        v191("CHECK")
    else:
        for result in rp.run_check(node, "web1", conf):
            assert result.returncode == 0, result.stdout + result.stderr
    own("DEL")
    assert "web1" not in rp.save(node, 4)
    assert "web1" not in upstream.nft(node, "list", "ruleset").stdout


def test_mixed_node(node: str, tmp_path: Path) -> None:
    """Debian's 1.1.1 in iptables and v1.9.1 in nftables on one node: one list, check, gc."""
    ipt_conf = rp.plugin_conf("podman", ["10.88.0.20/16"], [_pm(8100, 80)])
    rp.run_plugin("ADD", node, "ipt1", ipt_conf, check=True)
    rp.write_cni_cache(tmp_path, "podman", "ipt1", "eth0", ipt_conf, [_pm(8100, 80)],
                       ["10.88.0.20/16"])  # fmt: skip
    rp.run_plugin(
        "ADD",
        node,
        "iptdead",
        rp.plugin_conf("podman", ["10.88.0.21/16"], [_pm(8101, 80)]),
        check=True,
    )
    _plugin_add(node, tmp_path, WEB)
    _plugin_add(node, tmp_path, OLD, cached=False)
    rows = _rows(node, tmp_path)
    assert {(r[0], r[9]) for r in rows} == {
        ("ipt1", "iptables"), ("iptdead", "iptables"), ("web1", "nftables"), ("old1", "nftables"),
    }  # fmt: skip
    check = _pmctl(node, tmp_path, "check", "-o", "json")
    kinds = {(p["kind"], p["container_id"]) for p in json.loads(check.stdout)["problems"]}
    assert ("stale", "old1") in kinds
    assert not any(k[0].startswith("missing") or k[0].startswith("nft-") for k in kinds), kinds
    done = _pmctl(node, tmp_path, "gc", "--yes", "--min-age", "0", "-o", "json")
    assert done.returncode == 0, done.stderr
    removed = {c["container_id"] for c in json.loads(done.stdout)["removed"]}
    assert removed == {"old1", "iptdead"}
    after = _pmctl(node, tmp_path, "check")
    assert after.returncode == 0, after.stdout + after.stderr


def test_a_keep_beside_a_network_scoped_document_removes_no_nftables_rule(
    node: str, tmp_path: Path
) -> None:
    """A valid-attachments document of one network (a network config holding the key,
    as CNI GC passes it) speaks for that network alone, and the plugin's nftables rules
    name no network: with only such documents gc removes none. A `--keep` beside it
    widened that: gc removed every nftables container the document and --keep did not
    name, of any network, while it kept the iptables chains of the other networks (a
    --keep does not widen a document's scope there). Now --keep speaks for the
    containers it names, on both backends, and for no other; the nftables rules are
    still read to tell that it names one."""
    ipt = ("ipt1", ["10.90.0.20/16"], [_pm(8100, 80)])
    rp.run_plugin("ADD", node, ipt[0], rp.plugin_conf("other", *ipt[1:]), check=True)
    _plugin_add(node, tmp_path, WEB, cached=False)  # (network "podman")
    _plugin_add(node, tmp_path, OLD, cached=False)
    doc = tmp_path / "valid-attachments.json"
    doc.write_text(json.dumps({"cniVersion": "1.1.0", "name": "mynet", "type": "portmap",
                               "cni.dev/valid-attachments": [
                                   {"containerID": "mine1", "ifname": "eth0"}]}))  # fmt: skip
    before = _container_rules(node)
    for keep in ((), ("--keep", "web1")):
        args = ["gc", "--yes", "--min-age", "0", "--valid-attachments", str(doc), *keep]
        done = _pmctl(node, tmp_path / "none", *args, "-o", "json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["removed"] == [], keep
        assert _container_rules(node) == before, keep
        # Kept, and counted so (ipt1's chain; web1 and old1 in each family): the
        # nftables containers were left out of it, `1 kept`.
        assert json.loads(done.stdout)["kept"] == 1 + 2 * 2, keep
        assert "matches no container" not in done.stderr  # (web1's rules are read)
        assert f":{chain_name('other', 'ipt1')} - " in rp.save(node)


def _ct(ns: str, *args: str) -> str:
    import subprocess

    return subprocess.run(
        ["ip", "netns", "exec", ns, "conntrack", *args], check=True, capture_output=True, text=True
    ).stdout


def test_flush_udp_and_list_conntrack_cover_nft_ports(node: str, tmp_path: Path) -> None:
    _plugin_add(node, tmp_path, WEB)  # 5353/udp to 10.88.0.5:53
    # The flows go to one of the node's own addresses: only those can be misrouted by a
    # mapping (a forwarded flow meets none), so only those are flushed.
    import subprocess

    subprocess.run(["ip", "-n", node, "addr", "add", "192.0.2.1/32", "dev", "lo"], check=True)
    # A flow DNATed to the container, and one never DNATed (the seed's blackhole).
    _ct(node, "-I", "-p", "udp", "-s", "192.0.2.9", "-d", "192.0.2.1", "--sport", "40001",
        "--dport", "5353", "-t", "120", "--reply-src", "10.88.0.5", "--reply-dst", "192.0.2.9",
        "--reply-port-src", "53", "--reply-port-dst", "40001")  # fmt: skip
    _ct(node, "-I", "-p", "udp", "-s", "192.0.2.9", "-d", "192.0.2.1", "--sport", "40002",
        "--dport", "5353", "-t", "120")  # fmt: skip
    listed = _pmctl(node, tmp_path, "list", "--conntrack", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    counts = {
        (m["family"], m["host_port"]): m.get("conntrack_entries")
        for m in json.loads(listed.stdout)["mappings"]
        if m["protocol"] == "udp"
    }
    assert counts == {(4, 5353): 2, (6, 5353): 0}
    misrouted = {
        (m["family"], m["protocol"]): m.get("conntrack_misrouted")
        for m in json.loads(listed.stdout)["mappings"]
    }
    # The never-DNATed one; tcp rows have no count.
    assert misrouted == {(4, "udp"): 1, (6, "udp"): 0, (4, "tcp"): None, (6, "tcp"): None}
    stale = _pmctl(node, tmp_path, "flush-udp", "--stale-only", "-o", "json")
    assert stale.returncode == 0, stale.stderr
    assert [d["sport"] for d in json.loads(stale.stdout)["deleted"]] == [40002]
    everything = _pmctl(node, tmp_path, "flush-udp", "-o", "json")
    assert [d["sport"] for d in json.loads(everything.stdout)["deleted"]] == [40001]


def test_repair_of_the_masquerade_flushes_the_flows_that_lack_it(node: str, tmp_path: Path) -> None:
    """v1.9.1's masquerade rules of a container gone, its DNAT rules there: a hairpin or
    localhost flow begun meanwhile reaches the container unmasqueraded (its replies
    bypass the node). The repair puts the rules back and deletes those flows; a flow
    from outside (no masquerade wanted) and a masqueraded hairpin one are live and
    stay."""
    import subprocess

    _plugin_add(node, tmp_path, WEB)  # 5353/udp to 10.88.0.5:53, SNAT on
    _delete_rules(node, "web1", ("masquerading",))
    subprocess.run(["ip", "-n", node, "addr", "add", "192.0.2.1/32", "dev", "lo"], check=True)
    ct_load(
        node, masquerade_flows("10.88.0.5", "192.0.2.1", 5353, 53, "10.88.0.1", "192.0.2.9", 40040)
    )
    repaired = _pmctl(node, tmp_path, "check", "--repair", "-o", "json")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert json.loads(repaired.stdout)["repaired"] is True
    assert ct_sports(node) == {40042, 40043}


@pytest.mark.parametrize("one", [False, True], ids=["node", "one-mapping"])
def test_repair_keeps_the_flows_of_the_nftables_container_that_takes_the_port_first(
    node: str, tmp_path: Path, one: bool
) -> None:
    """v1.9.1's shadb, added after wina with the same 5353/udp, lost its DNAT rule:
    wina's rule is ahead and keeps taking the port. Repairing shadb (the whole node, or
    its one mapping given on the command line) must not delete wina's live flows, which
    reach neither shadb nor its port: the one-mapping repair judged them against shadb's
    mapping alone and deleted them (the node-wide one judges them against the node, as
    flush-udp --stale-only does). The never-DNATed and old-destination flows go."""
    import subprocess

    udp = [_pm(5353, 53, "udp")]
    _plugin_add(node, tmp_path, ("wina", ["10.88.0.31/16"], udp))
    conf = _plugin_add(node, tmp_path, ("shadb", ["10.88.0.32/16"], udp))
    _delete_rules(node, "shadb", ("hostports",))
    subprocess.run(["ip", "-n", node, "addr", "add", "192.0.2.2/32", "dev", "lo"], check=True)
    ct_load(
        node,
        [
            ct_args("192.0.2.1", "192.0.2.2", 40040, 5353, "10.88.0.31", 53),  # wina's, live
            ct_args("192.0.2.1", "192.0.2.2", 40042, 5353),  # never DNATed: the blackhole
            ct_args("192.0.2.1", "192.0.2.2", 40043, 5353, "10.88.0.99", 53),  # a gone one's
        ],
    )
    args = ["check", "--repair", "-o", "json", "--netns", node, "--cni-cache-dir", str(tmp_path)]
    if one:
        args += ["--backend", "nftables", "--container", "shadb", "--cni-config", "-"]
    done = pmctl.run(args, stdin=json.dumps(conf) if one else None)
    assert done.returncode == 1, done.stdout + done.stderr  # (shadb is shadowed: a problem)
    assert json.loads(done.stdout)["repaired"] is True
    assert ct_sports(node) == {40040}


def test_list_conntrack_judges_by_both_backends_under_backend_iptables(
    node: str, tmp_path: Path
) -> None:
    """A mixed node: v1.9.1's nftables rules and Debian's iptables plugin both map
    5353/udp. Under --backend iptables only the iptables row is listed, but a flow the
    nftables rule DNATed to its container is live (flush-udp --stale-only keeps it), so
    it is not counted as misrouted on that row; the never-DNATed one is. Nor is it
    behind that row at all: it went to the nftables container (FLOWS said 2 of ipt5's
    row, which has one flow, while --backend auto said 1)."""
    import subprocess

    _plugin_add(node, tmp_path, WEB)  # nftables: 5353/udp to 10.88.0.5:53
    ipt = rp.plugin_conf("podman", ["10.88.0.8/16"], [_pm(5353, 53, "udp")])
    rp.run_plugin("ADD", node, "ipt5", ipt, check=True)
    subprocess.run(["ip", "-n", node, "addr", "add", "192.0.2.1/32", "dev", "lo"], check=True)
    for sport, reply in (("40001", ["--reply-src", "10.88.0.5", "--reply-port-src", "53"]),
                         ("40002", [])):  # fmt: skip
        _ct(node, "-I", "-p", "udp", "-s", "192.0.2.9", "-d", "192.0.2.1", "--sport", sport,
            "--dport", "5353", "-t", "120", *reply,
            *(["--reply-dst", "192.0.2.9", "--reply-port-dst", sport] if reply else []))  # fmt: skip
    listed = _pmctl(node, tmp_path, "list", "--backend", "iptables", "--conntrack", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    rows = [m for m in json.loads(listed.stdout)["mappings"] if m["family"] == 4]
    assert [
        (m["container_id"], m["conntrack_entries"], m["conntrack_misrouted"]) for m in rows
    ] == [("ipt5", 1, 1)]
    stale = _pmctl(node, tmp_path, "flush-udp", "--backend", "iptables", "--stale-only",
                   "--dry-run", "-o", "json")  # fmt: skip
    assert [d["sport"] for d in json.loads(stale.stdout)["deleted"]] == [40002]


def test_list_conntrack_judges_by_both_backends_under_backend_nftables(
    node: str, tmp_path: Path
) -> None:
    """The mirror of the test above: v1.9.1's nftables rule and Debian's iptables
    plugin both map 5353/udp; a flow the iptables chain DNATed to its container is live.
    Under --backend nftables list counted it misrouted on the nftables row, and
    flush-udp --stale-only would delete it: only nftables judged (review helper-149).
    Nor is it behind the nftables row: it went to the iptables container (FLOWS said 1
    under --backend nftables, 0 under auto)."""
    import subprocess

    _plugin_add(node, tmp_path, WEB)  # nftables: 5353/udp to 10.88.0.5:53
    ipt = rp.plugin_conf("podman", ["10.88.0.8/16"], [_pm(5353, 53, "udp")])
    rp.run_plugin("ADD", node, "ipt5", ipt, check=True)
    rp.write_cni_cache(tmp_path, "podman", "ipt5", "eth0", ipt, [_pm(5353, 53, "udp")],
                       ["10.88.0.8/16"])  # fmt: skip
    subprocess.run(["ip", "-n", node, "addr", "add", "192.0.2.1/32", "dev", "lo"], check=True)
    _ct(node, "-I", "-p", "udp", "-s", "192.0.2.9", "-d", "192.0.2.1", "--sport", "40001",
        "--dport", "5353", "-t", "120", "--reply-src", "10.88.0.8", "--reply-port-src", "53",
        "--reply-dst", "192.0.2.9", "--reply-port-dst", "40001")  # fmt: skip
    for backend in ("auto", "nftables"):
        listed = _pmctl(node, tmp_path, "list", "--backend", backend, "--conntrack", "-o", "json")
        assert listed.returncode == 0, listed.stderr
        doc = json.loads(listed.stdout)
        rows = [m for m in doc["mappings"] if m["family"] == 4 and m["protocol"] == "udp"]
        assert {(m["container_id"], m["conntrack_entries"], m["conntrack_misrouted"])
                for m in rows} == (
            {("web1", 0, 0), ("ipt5", 1, 0)} if backend == "auto" else {("web1", 0, 0)}
        )  # fmt: skip
        assert doc["conntrack_misrouted"] == 0
    stale = _pmctl(node, tmp_path, "flush-udp", "--backend", "nftables", "--stale-only",
                   "--dry-run", "-o", "json")  # fmt: skip
    assert stale.returncode == 0, stale.stderr
    assert json.loads(stale.stdout)["count"] == 0


@pytest.mark.parametrize("how", ["unreadable", "not-yet-cached", "other-cache-dir"])
def test_repair_leaves_the_rules_of_the_containers_other_network(
    node: str, tmp_path: Path, how: str
) -> None:
    """One container on two nft networks (neta 8080, netb 9090; v1.9.1). The rules carry
    the bare container ID, so where netb's cache entry is not read (it cannot be read,
    libcni has not written it yet, or it is in a cache directory not given), netb's rules
    looked like neta's `extra-rules`, and `check --repair` deleted them by handle: a live
    mapping gone, which v1.9.1's CHECK (counting rules by ID) never misses. They are
    reported with what to do, and left; a wrong rule for neta's own port still goes."""
    cid = "xxxx0001"
    neta = ("neta", ["10.88.0.5/16"], [_pm(8080, 80)])
    netb = ("netb", ["10.89.0.5/16"], [_pm(9090, 90)])
    conf_a = upstream.nft_conf(neta[0], neta[1], neta[2])
    conf_b = upstream.nft_conf(netb[0], netb[1], netb[2])
    conf_b["prevResult"]["interfaces"][0]["name"] = "eth1"  # (its second interface)
    upstream.run(V191, "ADD", node, cid, conf_a, check=True)
    upstream.run(V191, "ADD", node, cid, conf_b, ifname="eth1", check=True)
    cache, elsewhere = tmp_path / "cni", tmp_path / "multus"
    rp.write_cni_cache(cache, "neta", cid, "eth0", conf_a, neta[2], neta[1])
    if how == "unreadable":
        entry = rp.write_cni_cache(cache, "netb", cid, "eth1", conf_b, netb[2], netb[1])
        entry.write_text(entry.read_text()[:50])
    elif how == "other-cache-dir":
        rp.write_cni_cache(elsewhere, "netb", cid, "eth1", conf_b, netb[2], netb[1])
    # A wrong rule of neta's own port (an old address), before the right one: it goes.
    upstream.nft(node, "insert", "rule", "ip", "cni_hostport", "hostports", "tcp", "dport",
                 "8080", "dnat", "to", "10.88.0.99:80", "comment", f'"{cid}"')  # fmt: skip
    before = [r for r in _container_rules(node) if r[2] == cid]
    args = ["--netns", node, "--cni-cache-dir", str(cache), "-o", "json"]
    found = pmctl.run(["check", *args])
    problems = json.loads(found.stdout)["problems"]
    [wrong] = [p for p in problems if p["kind"] == "extra-rules"]
    [theirs] = [p for p in problems if p["kind"] == "nft-unclaimed-rules"]
    assert "10.88.0.99" in wrong["detail"] and "9090" not in wrong["detail"]
    assert "--repair" in wrong["fix"] and theirs["fix"] is None  # (words, in `why`)
    assert "another network" in theirs["why"] and "--cni-cache-dir" in theirs["why"]
    assert "9090" in theirs["detail"]
    fixed = pmctl.run(["check", "--repair", *args])
    assert fixed.returncode == 1, fixed.stdout + fixed.stderr  # (netb's stay reported)
    doc = json.loads(fixed.stdout)
    assert [p["kind"] for p in doc["fixed"]] == ["extra-rules"]
    assert [p["kind"] for p in doc["problems"]] == ["nft-unclaimed-rules"]
    after = [r for r in _container_rules(node) if r[2] == cid]
    assert len(after) == len(before) - 1  # the wrong rule alone went
    assert "10.88.0.99" not in upstream.ruleset_text(node)
    upstream.run(V191, "CHECK", node, cid, conf_b, ifname="eth1", check=True)
    assert "dport 9090" in upstream.ruleset_text(node)
    if how == "other-cache-dir":
        both = pmctl.run(["check", "--netns", node, "--cni-cache-dir", str(cache),
                          "--cni-cache-dir", str(elsewhere), "-o", "json"])  # fmt: skip
        assert both.returncode == 0, both.stdout


# (neta's addresses, neta's ports, netb's addresses, netb's ports): each maps host port 8080.
_SAME_PORT_ELSEWHERE = {
    "same-port": (["10.88.0.5/16"], [_pm(8080, 80)], ["10.89.0.5/16"], [_pm(8080, 80)]),
    # neta's for one host IP, netb's for every other: netb's gone, no other host
    # address forwards 8080 at all.
    "other-host-ip": (
        ["10.88.0.5/16"], [_pm(8080, 80, host_ip="127.0.0.1")], ["10.89.0.5/16"], [_pm(8080, 80)]
    ),
    "ipv6": (["10.88.0.5/16", "fd00:88::5/64"], [_pm(8080, 80)], ["fd00:89::5/64"], [_pm(8080, 80)]),
    "udp": (["10.88.0.5/16"], [_pm(8080, 80)], ["10.89.0.5/16"], [_pm(8080, 80, "udp")]),
}  # fmt: skip


@pytest.mark.parametrize("how", list(_SAME_PORT_ELSEWHERE))
def test_repair_leaves_the_other_networks_rule_for_the_same_host_port(
    node: str, tmp_path: Path, how: str
) -> None:
    """One container on two nft networks (v1.9.1), each mapping host port 8080 (the
    plugin refuses none of it: the same port and protocol, another host IP, the other
    family, another protocol), netb's cache entry not read (libcni has not written it
    yet). A rule of the container was neta's `extra-rules` when it had the protocol and
    host port of one of neta's mappings (not its host IP, not where it sends), so
    `check --repair` deleted netb's DNAT rule by handle and, no rule of the container
    sending there any more, netb's address's masquerade rules with it ("repaired",
    exit 0): netb's live mapping gone, which v1.9.1's CHECK of netb, counting the
    container's rules by ID (neta's carry it too), never notices. netb's rules send
    outside neta's subnet, to no address neta's cache entry gave the container: they are
    reported (nft-unclaimed-rules) and left."""
    cid = "xxxx0002"
    ips_a, ports_a, ips_b, ports_b = _SAME_PORT_ELSEWHERE[how]
    conf_a = upstream.nft_conf("neta", ips_a, ports_a)
    conf_b = upstream.nft_conf("netb", ips_b, ports_b)
    conf_b["prevResult"]["interfaces"][0]["name"] = "eth1"  # (its second interface)
    # netb first: its rule is ahead of neta's, so it takes its traffic today.
    upstream.run(V191, "ADD", node, cid, conf_b, ifname="eth1", check=True)
    upstream.run(V191, "ADD", node, cid, conf_a, check=True)
    rp.write_cni_cache(tmp_path, "neta", cid, "eth0", conf_a, ports_a, ips_a)
    address_b = ips_b[0].split("/")[0]
    before = upstream.ruleset_text(node)
    assert "masquerade" in before and address_b in before

    found = _pmctl(node, tmp_path, "check", "-o", "json")
    assert found.returncode == 1, found.stdout + found.stderr
    problems = json.loads(found.stdout)["problems"]
    assert [p["kind"] for p in problems] == ["nft-unclaimed-rules"], problems
    [theirs] = problems
    assert theirs["fix"] is None
    lines = theirs["rule"].split("\n")  # its DNAT, its hairpin (and localhost) masquerade
    assert len(lines) == (2 if ":" in address_b else 3) and all(address_b in r for r in lines)
    fixed = _pmctl(node, tmp_path, "check", "--repair", "-o", "json")
    assert fixed.returncode == 1, fixed.stdout + fixed.stderr  # (netb's stay reported)
    assert json.loads(fixed.stdout)["fixed"] == []
    assert upstream.ruleset_text(node) == before
    upstream.run(V191, "CHECK", node, cid, conf_b, ifname="eth1", check=True)
    upstream.run(V191, "CHECK", node, cid, conf_a, check=True)


def _old1_flow(ns: str) -> None:
    """A UDP flow to the node's 192.0.2.1:7001 DNATed to old1 (10.88.0.7:71)."""
    import subprocess

    subprocess.run(["ip", "-n", ns, "addr", "add", "192.0.2.1/32", "dev", "lo"], check=True)
    _ct(ns, "-I", "-p", "udp", "-s", "192.0.2.9", "-d", "192.0.2.1", "--sport", "40001",
        "--dport", "7001", "--reply-src", "10.88.0.7", "--reply-dst", "192.0.2.9",
        "--reply-port-src", "71", "--reply-port-dst", "40001", "-t", "120")  # fmt: skip


def test_add_whose_nft_was_killed_after_its_commit_is_judged_by_the_next_read(
    node: str, tmp_path: Path
) -> None:
    """add's `nft -f` killed just after its commit: add said "killed by SIGKILL" and
    exited 1, its UDP flush never ran, though the rules were in. The read after it
    finds nothing left to write: the try went in, and add goes on as having written
    it (the flush of the port included, as the plugin's ADD flushes)."""
    import subprocess

    subprocess.run(["ip", "-n", node, "addr", "add", "192.0.2.1/32", "dev", "lo"], check=True)
    # A flow to the port before the mapping existed: never DNATed (the seed's blackhole).
    _ct(node, "-I", "-p", "udp", "-s", "192.0.2.9", "-d", "192.0.2.1", "--sport", "40002",
        "--dport", "5353", "-t", "120")  # fmt: skip
    env, killed = upstream.nft_killed_once_after_it_ran(tmp_path)
    args = ["add", "--backend", "nftables", "--network", "podman", "--container", "web1",
            "--ip", "10.88.0.5/16", "--ip", "fd00:88::5/64", "-p", "8080:80", "-p",
            "5353:53/udp", "--netns", node, "--cni-cache-dir", str(tmp_path), "-o", "json"]  # fmt: skip
    done = pmctl.run(args, env=env)
    assert done.returncode == 0, done.stderr
    assert killed.exists()  # (the wrapper was the nft that wrote)
    result = json.loads(done.stdout)
    assert result["changed"] is True
    assert [w for w in result["warnings"] if "SIGKILL" in w and "everything it writes" in w]
    assert "dport=5353" not in _ct(node, "-L", "-p", "udp")
    conf = upstream.nft_conf("podman", WEB[1], WEB[2])
    upstream.run(V191, "CHECK", node, "web1", conf, check=True)
    again = pmctl.run(args)
    assert json.loads(again.stdout)["changed"] is False


def _nft_runs_logged(tmp_path: Path) -> tuple:
    """PATH with an `nft` in front of the real one that writes each run's arguments, one
    line a run, to the file returned, then hands over to the real one."""
    wrap, runs = tmp_path / "logwrap", tmp_path / "nft-runs"
    wrap.mkdir(parents=True)
    real = next(p for p in ("/usr/sbin/nft", "/sbin/nft") if os.path.exists(p))
    (wrap / "nft").write_text(f'#!/bin/sh\necho "$@" >> {runs}\nexec {real} "$@"\n')
    (wrap / "nft").chmod(0o755)
    return {"PATH": f"{wrap}:{os.environ['PATH']}"}, runs


@pytest.mark.parametrize("how", ["new", "dry-run", "again"])
def test_add_reads_the_plugins_tables_once_and_warns_from_that_read(
    node: str, tmp_path: Path, how: str
) -> None:
    """An nftables add listed the plugin's tables twice, for its warnings and again for
    its transaction (converge's read): ~160 ms of ~520 ms at 1,000 containers. One
    listing of each family's table now; the warnings are judged from the read the
    transaction was planned from, the tables before the write: a port web1 already
    maps "will be shadowed" (a read after the write says "is"), and a mapping added
    again keeps its own rule's place, "is shadowed"."""
    _plugin_add(node, tmp_path, WEB)
    args = ["add", "--backend", "nftables", "--network", "podman", "--container", "mine1",
            "--ip", "10.88.0.9/16", "--ip", "fd00:88::9/64", "-p", "8080:80",
            "--netns", node, "--cni-cache-dir", str(tmp_path)]  # fmt: skip
    if how == "dry-run":
        args.append("--dry-run")
    if how == "again":
        assert pmctl.run(args).returncode == 0
    env, runs = _nft_runs_logged(tmp_path)
    done = pmctl.run(args, env=env)
    assert done.returncode == 0, done.stderr
    listed = [line for line in runs.read_text().splitlines() if " list " in f" {line} "]
    assert sorted(listed) == ["-j list table ip cni_hostport", "-j list table ip6 cni_hostport"]
    verb = "is" if how == "again" else "will be"
    for family in (4, 6):
        assert (
            f"IPv{family} tcp/8080 is mapped first to web1 (nftables hostports): this"
            f" mapping {verb} shadowed" in done.stderr
        ), done.stderr
    written = [line for line in runs.read_text().splitlines() if line.startswith("-f")]
    assert written == ([] if how != "new" else ["-f -"])


def _add_of_mine1_logged(node: str, tmp_path: Path, saves: bool = False) -> List[str]:
    """web1 and api1 added by v1.9.1 under `"backend": "nftables"` and cached, mine1
    cached so and not added yet, and `add` of mine1 without --backend (its key
    followed): each run of nft (its arguments) and, with `saves` (an iptables nat
    table made first, as kube-proxy's or docker's is there), of iptables-nft-save and
    ip6tables-nft-save (their names first), one line a run. The add exits 0 and
    v1.9.1's CHECK of mine1 passes."""
    for ctr in (WEB, API):
        _plugin_add(node, tmp_path, ctr)
    ips, ports = ["10.88.0.9/16", "fd00:88::9/64"], [_pm(8081, 80)]
    conf = upstream.nft_conf("podman", ips, ports)
    rp.write_cni_cache(tmp_path, "podman", "mine1", "eth0", conf, ports, ips)
    env, runs = _nft_runs_logged(tmp_path)
    if saves:
        rp.iptables(node, ["-t", "nat", "-N", "KUBE-SERVICES"])
        wrap = Path(env["PATH"].split(":", 1)[0])
        for tool in ("iptables-nft-save", "ip6tables-nft-save"):
            (wrap / tool).write_text(
                f'#!/bin/sh\necho "{tool} $@" >> {runs}\nexec /usr/sbin/{tool} "$@"\n'
            )
            (wrap / tool).chmod(0o755)
    done = pmctl.run(
        ["add", "--network", "podman", "--container", "mine1", "--ip", ips[0], "--ip", ips[1],
         "-p", "8081:80", "--netns", node, "--cni-cache-dir", str(tmp_path)], env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    upstream.run(V191, "CHECK", node, "mine1", conf, check=True)
    lines = runs.read_text().splitlines()
    assert [line for line in lines if line.startswith("-f")] == ["-f -"], lines
    return lines


def test_add_of_a_container_cached_with_the_key_lists_the_plugins_tables_once_to_judge_it(
    node: str, tmp_path: Path
) -> None:
    """The common path of a v1.9.1 node: web1 and api1 added by the plugin under
    `"backend": "nftables"` and cached, mine1 cached so and not added yet; `add` of mine1
    without --backend follows its key. Since 7dc171c it asks the node's check whether
    mine1 is in doubt (no rule of it in nftables yet), and that read each family's table
    twice: node.read_nft_evidence for its rules, then read_tables(with_nft=True) again
    for follow_the_plugin (4 listings a family, 2 before 7dc171c); 016f670 made it 3:
    add's look at its container's tables, the node's judgement, the transaction's read.
    The judgement now takes add's look for its read where the container's families are
    the node's (the same tables): 2, as before 7dc171c; exit 0, written, and v1.9.1's
    CHECK of mine1 passes."""
    lines = _add_of_mine1_logged(node, tmp_path)
    for family in ("ip", "ip6"):
        assert lines.count(f"-j list table {family} cni_hostport") == 2, lines


def test_add_of_a_new_container_cached_with_the_key_beside_the_plugins_table_saves_no_iptables(
    node: str, tmp_path: Path
) -> None:
    """As above, on a node with an iptables nat table (kube-proxy's, docker's): whether
    mine1 is in doubt (7dc171c: no rule of it in nftables) ran iptables-save of both
    families to find the chains of the node's other containers cached so, though each
    has its rules in nftables (then none is kept in iptables, whatever iptables holds:
    followed_entries._others_honour_the_key) and mine1's families have the plugin's
    table: 2 saves a family, where the add's own follow-up (after its write) runs 1."""
    lines = _add_of_mine1_logged(node, tmp_path, saves=True)
    for tool in ("iptables-nft-save", "ip6tables-nft-save"):
        assert sum(line.startswith(f"{tool} ") for line in lines) == 1, lines


@pytest.mark.parametrize("one", [False, True], ids=["node", "one-mapping"])
def test_repair_whose_nft_was_killed_after_its_commit_reports_the_repair(
    node: str, tmp_path: Path, one: bool
) -> None:
    """check --repair's `nft -f` killed just after its commit: it exited 1 ("killed by
    SIGKILL") though the rules were back, and the repaired mappings' UDP flows were not
    flushed. Judged by the read after it: reported repaired, with a warning."""
    conf = _plugin_add(node, tmp_path, WEB)
    upstream.nft(node, "flush", "chain", "ip", "cni_hostport", "hostports")
    args = ["check", "--repair", "-o", "json", "--netns", node, "--cni-cache-dir", str(tmp_path)]
    if one:
        path = tmp_path / "web1.json"
        path.write_text(json.dumps(conf))
        args += ["--container", "web1", "--cni-config", str(path)]
    env, killed = upstream.nft_killed_once_after_it_ran(tmp_path / "w")
    done = pmctl.run(args, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert killed.exists()
    result = json.loads(done.stdout)
    assert result["repaired"] is True and result["problems"] == []
    assert [(p["kind"], p["family"]) for p in result["fixed"]] == [("nft-missing-rules", 4)]
    assert "nft -f was killed by SIGKILL" in done.stderr
    assert "read again, everything it writes is there" in done.stderr
    upstream.run(V191, "CHECK", node, "web1", conf, check=True)


def test_gc_whose_nft_was_killed_after_its_commit_reports_and_flushes(
    node: str, tmp_path: Path
) -> None:
    """`nft -f` killed just after its commit: gc cannot tell from nft whether it went
    in, and before took the death for a refusal (exit 2, "check the nftables
    conditions"), the rules gone unreported and the flows to the dead container left.
    Handles are never reused: the read after tells that it went in."""

    _plugin_add(node, tmp_path / "cni", WEB)
    _plugin_add(node, tmp_path / "cni", OLD, cached=False)  # 7001/udp
    _old1_flow(node)
    _ct(node, "-I", "-p", "udp", "-s", "192.0.2.9", "-d", "192.0.2.1", "--sport", "40002",
        "--dport", "5353", "-t", "120")  # fmt: skip
    env, killed = upstream.nft_killed_once_after_it_ran(tmp_path)
    # (PORTMAPCTL_NFT_BATCH=0: gc's deletions through `nft -f`, the write where no
    # nf_tables batch can be sent; with one, nft only lists.)
    done = pmctl.run(["gc", "--netns", node, "--cni-cache-dir", str(tmp_path / "cni"), "--yes",
                      "--min-age", "0", "-o", "json"], env={**env, "PORTMAPCTL_NFT_BATCH": "0"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert killed.exists()  # (the wrapper was the nft that wrote)
    result = json.loads(done.stdout)
    assert sorted((c["container_id"], c["family"]) for c in result["removed"]) == [
        ("old1", 4), ("old1", 6),
    ]  # fmt: skip
    assert [w for w in result["warnings"] if "SIGKILL" in w and "none of the rules" in w]
    assert result["conntrack_deleted"] == 1
    assert {r[2] for r in _container_rules(node)} == {"web1"}
    assert "dport=5353" in _ct(node, "-L", "-p", "udp")
    assert "dport=7001" not in _ct(node, "-L", "-p", "udp")


def _nft_refusing_every_write(tmp_path: Path, reason: str) -> dict:
    """PATH with an `nft` in front of the real one that refuses every `nft -f` (the
    kernel's answer `reason`, nothing applied) and passes every read through."""
    wrap = tmp_path / "refusing"
    wrap.mkdir(parents=True)
    real = next(p for p in ("/usr/sbin/nft", "/sbin/nft") if os.path.exists(p))
    (wrap / "nft").write_text(
        f'#!/bin/bash\nif [ "$1" = -f ]; then\n  cat >/dev/null\n'
        f'  echo "Error: Could not process rule: {reason}" >&2\n  exit 1\nfi\n'
        f'exec {real} "$@"\n'
    )
    (wrap / "nft").chmod(0o755)
    return {"PATH": f"{wrap}:{os.environ['PATH']}"}


@pytest.mark.parametrize(
    "reason", ["No buffer space available", "No such file or directory"], ids=["refused", "racing"]
)
def test_a_removal_nft_refuses_is_named_by_every_run_past_min_age(
    node: str, tmp_path: Path, reason: str
) -> None:
    """gc forgets the sightings of what it is about to remove before `nft -f` goes in,
    and never wrote back those of rules nft then refused (nothing changed), nor the
    other dead containers' it had not come to: they waited --min-age afresh, so every
    other run said exit 0 with the rules "pending" and a cron job's alarm flapped (the
    iptables side's e2f655b). Refused whole ("racing": the table changed under every
    try), they stay on file: each run past --min-age fails (exit 1)."""
    _plugin_add(node, tmp_path / "cni", WEB)
    _plugin_add(node, tmp_path / "cni", OLD, cached=False)
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    # (PORTMAPCTL_NFT_BATCH=0: gc's deletions through `nft -f`, the write where no
    # nf_tables batch can be sent; with one, nft only lists.)
    env = {"PORTMAPCTL_RUN_DIR": str(run_dir), **_nft_refusing_every_write(tmp_path, reason),
           "PORTMAPCTL_NFT_BATCH": "0"}  # fmt: skip
    args = ["gc", "--yes", "--netns", node, "--cni-cache-dir", str(tmp_path / "cni"),
            "--min-age", "2", "-o", "json"]  # fmt: skip
    first = pmctl.run(args, env=env)  # (sighted)
    assert first.returncode == 0, first.stderr
    assert {c["container_id"] for c in json.loads(first.stdout)["pending"]} == {"old1"}
    sighted = json.loads((run_dir / "gc-state.json").read_text())["namespaces"]
    time.sleep(2.2)
    for _ in range(2):
        done = pmctl.run(args, env=env)
        assert done.returncode == 1, (done.stdout, done.stderr)
        assert "nftables: " in done.stderr, done.stderr
        on_file = json.loads((run_dir / "gc-state.json").read_text())["namespaces"]
        assert {k: v["chains"] for k, v in on_file.items()} == {
            k: v["chains"] for k, v in sighted.items()
        }
    assert {r[2] for r in _container_rules(node)} == {"web1", "old1"}


def test_gc_whose_nft_hung_after_its_commit_reports_and_flushes(node: str, tmp_path: Path) -> None:
    """`nft -f` stopped at its time limit after its commit (a stuck exit, a kernel slow
    to answer): gc ended with exit 3, "its transaction may have gone in ... run again to
    see", and neither reported nor flushed what it removed; run again, it found nothing
    to remove (exit 0), so the UDP flow DNATed to the removed container kept its dead
    destination. iptables' hung restore is judged by the read after it (HungWentIn);
    nft's, whose rules go by handle (never reused), now is too: still exit 3, the line
    saying it went in, the flow flushed. The real nft, wrapped to sleep once it wrote;
    only the time limit is made short (TIMEOUT_SECONDS, 120 s, has no variable)."""
    import subprocess
    import sys

    _plugin_add(node, tmp_path / "cni", WEB)
    _plugin_add(node, tmp_path / "cni", OLD, cached=False)  # 7001/udp
    _old1_flow(node)
    wrap = tmp_path / "wrap"
    wrap.mkdir()
    real = next(p for p in ("/usr/sbin/nft", "/sbin/nft") if os.path.exists(p))
    (wrap / "nft").write_text(
        f'#!/bin/bash\n{real} "$@" || exit $?\nif [ "$1" = -f ]; then exec sleep 60; fi\n'
    )
    (wrap / "nft").chmod(0o755)
    short = (
        "import sys; from portmapctl.nftables.access import nft; nft.TIMEOUT_SECONDS = 3\n"
        "from portmapctl.entry import main; sys.argv[0] = 'portmapctl'; main()"
    )
    argv = ["gc", "--netns", node, "--cni-cache-dir", str(tmp_path / "cni"), "--yes",
            "--min-age", "0"]  # fmt: skip
    run_dir = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run")}
    # (PORTMAPCTL_NFT_BATCH=0: gc's deletions through `nft -f`, the write where no
    # nf_tables batch can be sent; with one, nft only lists.)
    env = {**os.environ, **run_dir, "PATH": f"{wrap}:{os.environ['PATH']}",
           "PORTMAPCTL_NFT_BATCH": "0"}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", short, *argv], env=env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=120)  # fmt: skip
    pmctl.assert_error(done, 3, "nft -f did not finish within 3 s", "it went in", after_work=True)
    assert "run again to see" not in done.stderr  # (the read after it settled it)
    assert {r[2] for r in _container_rules(node)} == {"web1"}
    assert "dport=7001" not in _ct(node, "-L", "-p", "udp")
    again = pmctl.run(argv, env=run_dir)
    assert again.returncode == 0, again.stderr


def test_gc_whose_nft_hung_while_its_container_came_back_says_it_may_have_gone_in(
    node: str, tmp_path: Path
) -> None:
    """`nft -f` went in and hung (stopped at its time limit), and old1, whose rules it
    deleted, was started again under its ID with the same ports before gc's read that
    judges it (the plugin's ADD: the same rules, at new handles). That read finds rules
    with the bodies of those it deletes, so it cannot tell a write that did not go in
    from one that went in before the ADD; gc does the safe thing (old1's sightings
    forgotten, no flow flushed), yet its line said "read again, what it removes is still
    there: it did not go in", which was false here. Now it says the read cannot tell.
    The real nft and plugin, wrapped: nft sleeps once its write went in and old1's ADD
    ran; the time limit is made short as in the test above."""
    import subprocess
    import sys

    cache = tmp_path / "cni"
    _plugin_add(node, cache, WEB)
    conf = _plugin_add(node, cache, OLD, cached=False)
    (tmp_path / "old1.json").write_text(json.dumps(conf))
    wrap = tmp_path / "wrap"
    wrap.mkdir()
    real = next(p for p in ("/usr/sbin/nft", "/sbin/nft") if os.path.exists(p))
    add = (f"env -i PATH={rp.SYSTEM_PATH} CNI_COMMAND=ADD CNI_CONTAINERID=old1"
           f" CNI_NETNS={rp.container_netns()} CNI_IFNAME=eth0 CNI_PATH={rp.CNI_PATH}"
           f" {upstream.binary(V191)} < {tmp_path / 'old1.json'} > {tmp_path / 'add.out'}")  # fmt: skip
    (wrap / "nft").write_text(
        f'#!/bin/bash\n{real} "$@" || exit $?\nif [ "$1" = -f ]; then {add} || exit 97;'
        " exec sleep 60; fi\n"
    )
    (wrap / "nft").chmod(0o755)
    short = (
        "import sys; from portmapctl.nftables.access import nft; nft.TIMEOUT_SECONDS = 3\n"
        "from portmapctl.entry import main; sys.argv[0] = 'portmapctl'; main()"
    )
    argv = ["gc", "--netns", node, "--cni-cache-dir", str(cache), "--yes", "--min-age", "0"]
    run_dir = tmp_path / "run"
    # (PORTMAPCTL_NFT_BATCH=0: gc's deletions through `nft -f`, the write that can hang.)
    env = {**os.environ, "PORTMAPCTL_RUN_DIR": str(run_dir), "PATH": f"{wrap}:{os.environ['PATH']}",
           "PORTMAPCTL_NFT_BATCH": "0"}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", short, *argv], env=env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=120)  # fmt: skip
    pmctl.assert_error(done, 3, "nft -f did not finish within 3 s", "may have gone in")
    assert "did not go in" not in done.stderr and "it went in" not in done.stderr, done.stderr
    assert {r[2] for r in _container_rules(node)} == {"web1", "old1"}  # (old1's, made again)
    state = run_dir / "gc-state.json"
    assert not state.exists() or "old1" not in state.read_text()  # (its sightings forgotten)


@pytest.mark.parametrize("version", ["v1.7.1", V191])
def test_a_rule_for_one_host_ip_first_leaves_the_other_addresses(
    node: str, tmp_path: Path, version: str
) -> None:
    """v1.7.1 puts a host-IP mapping in hostip_hostports (entered first), v1.9.1 in
    hostports in ADD order: either way nlo's 127.0.0.1:9090 takes that one address
    from nwild's 9090 on every address, and a connection to another of the node's
    addresses reaches nwild: nwild is not shadowed (it was, and check exited 1)."""
    rp.routed_node(node)
    _plugin_add(node, tmp_path, ("nlo", ["10.88.0.5/16"], [_pm(9090, 90, host_ip="127.0.0.1")]),
                version=version)  # fmt: skip
    _plugin_add(node, tmp_path, ("nwild", ["10.88.0.6/16"], [_pm(9090, 90)]), version=version)
    assert rp.dnat_destination(node, "10.0.0.1", 9090) == "10.88.0.6"
    rows = {(r[0], r[8]) for r in _rows(node, tmp_path)}
    assert rows == {("nlo", ("ok",)), ("nwild", ("ok",))}
    done = _pmctl(node, tmp_path, "check", "-o", "json")
    assert done.returncode == 0 and json.loads(done.stdout)["problems"] == [], done.stdout


def test_check_one_mapping_and_repair_it(node: str, tmp_path: Path) -> None:
    """`check` with mapping options on an nft-backed mapping: as the plugin's CHECK,
    exactly; `--repair` makes it as the plugin's ADD would."""
    conf = _plugin_add(node, tmp_path, WEB)
    path = tmp_path / "web1.json"
    path.write_text(json.dumps(conf))
    args = ["check", "--container", "web1", "--cni-config", str(path)]
    assert _pmctl(node, tmp_path, *args).returncode == 0
    upstream.nft(node, "flush", "chain", "ip", "cni_hostport", "hostports")
    broken = _pmctl(node, tmp_path, *args, "-o", "json")
    assert broken.returncode == 1
    assert [p["kind"] for p in json.loads(broken.stdout)["problems"]] == ["nft-missing-rules"]
    fixed = _pmctl(node, tmp_path, *args, "--repair")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    upstream.run(V191, "CHECK", node, "web1", conf, check=True)
    assert "CNI-" not in rp.save(node, 4) + rp.save(node, 6)


def test_one_port_of_a_cached_nft_container_is_repaired_beside_its_others(
    node: str, tmp_path: Path
) -> None:
    """The check of one port of a cached container that maps more: its other ports
    are live mappings, not `extra-rules`, and --repair never deletes them (SPEC §3;
    before, it deleted them by handle). v1.9.1's CHECK with that one port passes."""
    conf = _plugin_add(node, tmp_path, WEB)
    cid, ips, ports = WEB
    one = upstream.nft_conf("podman", ips, ports[:1])
    upstream.run(V191, "CHECK", node, cid, one, check=True)
    path = tmp_path / "one.json"
    path.write_text(json.dumps(one))
    args = ["check", "--container", cid, "--cni-config", str(path), "-o", "json"]
    before = _rules_of(node, cid)
    done = _pmctl(node, tmp_path, *args)
    assert done.returncode == 0 and json.loads(done.stdout)["problems"] == [], done.stdout
    done = _pmctl(node, tmp_path, *args, "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _rules_of(node, cid) == before
    # Its own DNAT rules lost: put back, the UDP port's left as they are.
    for rule in before:
        if "8080" in json.dumps(rule["expr"]) and rule["chain"] == "hostports":
            upstream.nft(node, "delete", "rule", rule["family"], "cni_hostport", rule["chain"],
                         "handle", str(rule["handle"]))  # fmt: skip
    done = _pmctl(node, tmp_path, *args, "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    after = _rules_of(node, cid)
    assert sorted(json.dumps(r["expr"]) for r in after) == sorted(
        json.dumps(r["expr"]) for r in before
    )
    upstream.run(V191, "CHECK", node, cid, conf, check=True)
    assert _pmctl(node, tmp_path, "check").returncode == 0


def test_gc_min_age_waits_and_counts_the_live(node: str, tmp_path: Path) -> None:
    """A dead nft-backed container is pending until seen unchanged for --min-age."""
    _plugin_add(node, tmp_path, WEB)
    _plugin_add(node, tmp_path, OLD, cached=False)
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    env = {"PORTMAPCTL_RUN_DIR": str(run_dir)}
    args = ["gc", "--yes", "--netns", node, "--cni-cache-dir", str(tmp_path), "-o", "json"]
    first = pmctl.run([*args, "--min-age", "1h"], env=env)
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc["removed"] == [] and doc["kept"] == 2  # web1 in both families
    assert {(c["chain"], c["container_id"], c["family"]) for c in doc["pending"]} == {
        ("hostports", "old1", 4), ("hostports", "old1", 6),
    }  # fmt: skip
    assert ("ip", "hostports", "old1") in _container_rules(node)
    later = pmctl.run([*args, "--min-age", "0"], env=env)
    assert {c["container_id"] for c in json.loads(later.stdout)["removed"]} == {"old1"}
    assert all(r[2] == "web1" for r in _container_rules(node))


# --- leftovers: a container's DNAT rules deleted by handle with `nft`, its masquerade
# rules left; check reports them, gc or repair fixes it, upstream CHECK judges. ---


def _rules_of(ns: str, container_id: str) -> List[dict]:
    return [
        obj["rule"]
        for obj in json.loads(upstream.ruleset_json(ns))["nftables"]
        if "rule" in obj
        and obj["rule"]["table"] == "cni_hostport"
        and obj["rule"].get("comment") == container_id
    ]


def _delete_dnat_rules(ns: str, container_id: str) -> None:
    for rule in _rules_of(ns, container_id):
        if rule["chain"] in ("hostports", "hostip_hostports"):
            upstream.nft(ns, "delete", "rule", rule["family"], "cni_hostport", rule["chain"],
                         "handle", str(rule["handle"]))  # fmt: skip
    left = {(r["family"], r["chain"]) for r in _rules_of(ns, container_id)}
    assert left == {("ip", "masquerading"), ("ip6", "masquerading")}


def _problems(ns: str, cache: Path) -> set:
    done = _pmctl(ns, cache, "check", "-o", "json")
    assert done.returncode == 1, done.stdout + done.stderr
    return {
        (p["kind"], p["family"], p["container_id"]) for p in json.loads(done.stdout)["problems"]
    }


def test_leftovers_of_a_gone_container_are_stale_and_gc_removes_them(
    node: str, tmp_path: Path
) -> None:
    _plugin_add(node, tmp_path, WEB, cached=False)
    api = _plugin_add(node, tmp_path, API)
    _delete_dnat_rules(node, "web1")
    assert _problems(node, tmp_path) == {("stale", 4, "web1"), ("stale", 6, "web1")}
    gc = _pmctl(node, tmp_path, "gc", "--yes", "--min-age", "0")
    assert gc.returncode == 0, gc.stdout + gc.stderr
    assert _rules_of(node, "web1") == []
    healthy = _pmctl(node, tmp_path, "check")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    upstream.run(V191, "CHECK", node, "api1", api, check=True)


def test_leftovers_without_a_cache_are_incomplete(node: str, tmp_path: Path) -> None:
    _plugin_add(node, tmp_path, WEB, cached=False)
    _delete_dnat_rules(node, "web1")
    # tmp_path has no results/ folder: no cache at all.
    assert _problems(node, tmp_path) == {("incomplete", 4, "web1"), ("incomplete", 6, "web1")}


def test_leftovers_of_a_cached_container_are_repaired(node: str, tmp_path: Path) -> None:
    web = _plugin_add(node, tmp_path, WEB)
    _delete_dnat_rules(node, "web1")
    assert upstream.run(V191, "CHECK", node, "web1", web).returncode != 0
    assert _problems(node, tmp_path) == {
        ("nft-missing-rules", 4, "web1"),
        ("nft-missing-rules", 6, "web1"),
    }
    repaired = _pmctl(node, tmp_path, "check", "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    upstream.run(V191, "CHECK", node, "web1", web, check=True)


def test_metrics_count_the_plugins_nft_rows(node: str, tmp_path: Path) -> None:
    _plugin_add(node, tmp_path, WEB)
    _plugin_add(node, tmp_path, API, cached=False)
    metrics = tmp_path / "list.prom"
    done = _pmctl(node, tmp_path, "list", "--metrics-file", str(metrics))
    assert done.returncode == 0, done.stderr
    counts = {}
    for family in text_string_to_metric_families(metrics.read_text()):
        for s in family.samples:
            if s.name == "portmapctl_mappings" and s.labels["backend"] == "nftables":
                counts[(s.labels["family"], s.labels["status"])] = int(s.value)
    # web1: 2 ports in each family, cached; api1: 1 IPv4 port, not cached.
    assert {k: v for k, v in counts.items() if v} == {("4", "ok"): 2, ("4", "stale"): 1,
                                                      ("6", "ok"): 2}  # fmt: skip
    assert counts[("6", "stale")] == 0  # zero-filled: the family was read


# --- add into an existing table: as the plugin's ADD of the same container on the same
# node. Every plugin ADD flushes prerouting and output and writes them again with its own
# conditions (v1.9 refills hostports_all too), so the newest ADD decides the node's entry.
# Twin namespaces start from the same plugin-made table; the plugin's ADD goes into one,
# portmapctl add into the other, and `nft list ruleset` (no handles) must be the same. ---


@pytest.fixture
def twin() -> Iterator[str]:
    """The reference node: where the plugin's own ADD goes."""
    yield from _namespace("pmt-nfttwin")


COND_V4 = ["ip saddr 192.168.0.0/16"]
COND_V6 = ["ip6 saddr != fd00:99::/64"]
COND_ENTRY = "ip saddr 192.168.0.0/16 fib daddr type local jump hostports_all"


def _conf(network: str, ctr, **opts) -> dict:
    _cid, ips, ports = ctr
    return upstream.nft_conf(network, ips, ports, **opts)


def _on_both(nodes, cache: Path, version: str, network: str, ctr, **opts) -> dict:
    """The plugin's ADD of `ctr` in every one of `nodes` (the same starting table), cached."""
    conf = _conf(network, ctr, **opts)
    for ns in nodes:
        upstream.run(version, "ADD", ns, ctr[0], conf, check=True)
    rp.write_cni_cache(cache, network, ctr[0], "eth0", conf, ctr[2], ctr[1])
    return conf


def _spec(pm: dict) -> str:
    host_ip = pm.get("hostIP")
    host = "" if host_ip is None else (f"[{host_ip}]:" if ":" in host_ip else f"{host_ip}:")
    return f"{host}{pm['hostPort']}:{pm['containerPort']}/{pm['protocol']}"


def _add_args(network: str, ctr, conditions_v4=(), conditions_v6=()) -> List[str]:
    cid, ips, ports = ctr
    args = ["add", "--backend", "nftables", "--network", network, "--container", cid]
    for ip in ips:
        args += ["--ip", ip]
    for pm in ports:
        args += ["-p", _spec(pm)]
    for condition in conditions_v4:
        args += ["--conditions-v4", condition]
    for condition in conditions_v6:
        args += ["--conditions-v6", condition]
    return args


def _ours_then_the_plugins(
    node: str, twin: str, cache: Path, network: str, ctr, *, moves: bool = False, **opts
) -> dict:
    """portmapctl add of `ctr` in `node`, the v1.9.1 ADD of it in `twin`: the same ruleset.

    Then the second add changes nothing, and `check --repair` finds nothing to do
    (`moves`: but to move v1.7.1's host-IP rules left in hostip_hostports to hostports,
    where the node's v1.9.1 CHECK now counts them).
    """
    conf = _conf(network, ctr, **opts)
    args = _add_args(network, ctr, opts.get("conditions_v4", ()), opts.get("conditions_v6", ()))
    done = _pmctl(node, cache, *args)
    assert done.returncode == 0, done.stderr
    upstream.run(V191, "ADD", twin, ctr[0], conf, check=True)
    ours = upstream.ruleset_text(node)
    assert ours == upstream.ruleset_text(twin)
    again = _pmctl(node, cache, *args, "-o", "json")
    assert json.loads(again.stdout)["changed"] is False, again.stdout
    assert upstream.ruleset_text(node) == ours
    rp.write_cni_cache(cache, network, ctr[0], "eth0", conf, ctr[2], ctr[1])
    repaired = _pmctl(node, cache, "check", "--repair", "-o", "json")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert json.loads(repaired.stdout)["repaired"] is moves, repaired.stdout
    assert (upstream.ruleset_text(node) == ours) is not moves
    upstream.run(V191, "CHECK", node, ctr[0], conf, check=True)
    return conf


def test_add_writes_the_conditions_of_the_newest_add(node: str, twin: str, tmp_path: Path) -> None:
    """old1 without conditions, then new1 with: both base chains get new1's conditions."""
    _on_both((node, twin), tmp_path, V191, "podman", OLD)
    new = ("new1", ["10.88.0.17/16"], [_pm(9091, 91)])
    _ours_then_the_plugins(node, twin, tmp_path, "condnet", new, conditions_v4=COND_V4)
    assert upstream.ruleset_text(node).count(COND_ENTRY) == 2  # prerouting and output


def test_add_drops_the_conditions_when_the_newest_add_has_none(
    node: str, twin: str, tmp_path: Path
) -> None:
    """old1 with conditions in both families, then new1 (IPv4 only) without: IPv4's
    conditions go, IPv6's stay (the ADD touches only the families of its container)."""
    _on_both((node, twin), tmp_path, V191, "condnet", OLD, conditions_v4=COND_V4,
             conditions_v6=COND_V6)  # fmt: skip
    new = ("new1", ["10.88.0.17/16"], [_pm(9091, 91)])
    _ours_then_the_plugins(node, twin, tmp_path, "podman", new)
    text = upstream.ruleset_text(node)
    assert COND_ENTRY not in text
    assert text.count("ip6 saddr != fd00:99::/64 fib daddr type local jump hostports_all") == 2


def test_add_into_a_v171_table_upgrades_it_as_v191_does(
    node: str, twin: str, tmp_path: Path
) -> None:
    """v1.7.1's entry (jumps to hostip_hostports and hostports, no hostports_all) becomes
    v1.9.1's, in both families; old1's host-IP rule stays in hostip_hostports, reached,
    as v1.9.1's ADD leaves it. v1.9.1's CHECK of old1 then fails (it counts hostports
    alone): check --repair moves those rules to hostports, and that CHECK passes."""
    old = (
        "old1",
        ["10.88.0.6/16", "fd00:88::6/64"],
        [_pm(9090, 90, host_ip="127.0.0.1"), _pm(9092, 92, "udp", "::1"), _pm(9093, 93)],
    )
    _on_both((node, twin), tmp_path, "v1.7.1", "podman", old)
    new = ("new1", ["10.88.0.7/16", "fd00:88::7/64"], [_pm(9091, 91), _pm(5300, 53, "udp")])
    before = upstream.ruleset_text(node)
    dry = _pmctl(node, tmp_path, *_add_args("podman", new), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    for line in (
        "add chain ip cni_hostport hostports_all",
        "flush chain ip cni_hostport prerouting",
        "add rule ip cni_hostport prerouting fib daddr type local jump hostports_all",
        "flush chain ip6 cni_hostport output",
        "add rule ip6 cni_hostport output fib daddr type local jump hostports_all",
    ):
        assert line in dry.stdout.splitlines(), dry.stdout
    assert upstream.ruleset_text(node) == before
    conf = _ours_then_the_plugins(node, twin, tmp_path, "podman", new, moves=True)
    # (The twin, as the plugin's ADD left it: v1.9.1's CHECK of old1 fails there.)
    assert upstream.run(V191, "CHECK", twin, "old1", _conf("podman", old)).returncode != 0
    assert "jump hostip_hostports\n\t\tjump hostports\n" in upstream.ruleset_text(node)
    upstream.run(V191, "CHECK", node, "old1", _conf("podman", old), check=True)
    for cid, c in (("old1", _conf("podman", old)), ("new1", conf)):
        upstream.run(V191, "DEL", node, cid, c, check=True)
    assert _container_rules(node) == []


# --- an existing but empty cache is no source of liveness (SPEC §3 gc), for the
# nftables rules as for the iptables chains. ---


def test_gc_refuses_an_empty_cache_while_nft_rules_exist(node: str, tmp_path: Path) -> None:
    _plugin_add(node, tmp_path, WEB, cached=False)
    (tmp_path / "results").mkdir()
    before = _container_rules(node)
    for backend in ("auto", "nftables"):
        for args in (["--dry-run"], ["--yes", "--min-age", "0"]):
            done = _pmctl(node, tmp_path, "gc", "--backend", backend, *args)
            pmctl.assert_error(done, 2, "is empty but there are portmap")
    assert _container_rules(node) == before
    kept = _pmctl(node, tmp_path, "gc", "--yes", "--min-age", "0", "--keep", "web1", "-o", "json")
    assert kept.returncode == 0, kept.stderr
    assert json.loads(kept.stdout)["removed"] == [] and _container_rules(node) == before
    everything = _pmctl(node, tmp_path, "gc", "--yes", "--min-age", "0", "--all")
    assert everything.returncode == 0, everything.stderr
    assert _container_rules(node) == []


def test_gc_refuses_an_empty_cache_on_a_mixed_node_whatever_the_backend(
    node: str, tmp_path: Path
) -> None:
    ipt = upstream.nft_conf("podman", ["10.88.0.20/16"], [_pm(8100, 80)], backend="iptables")
    upstream.run(V191, "ADD", node, "ipt1", ipt, check=True)
    _plugin_add(node, tmp_path, WEB, cached=False)
    (tmp_path / "results").mkdir()
    nft_before, ipt_before = _container_rules(node), rp.save(node, 4)
    for backend in ("auto", "nftables", "iptables"):
        done = _pmctl(node, tmp_path, "gc", "--backend", backend, "--yes", "--min-age", "0")
        pmctl.assert_error(done, 2, "is empty but there are portmap")
    assert _container_rules(node) == nft_before
    assert rp.strip_save_comments(rp.save(node, 4)) == rp.strip_save_comments(ipt_before)


# --- zombies (SPEC §3 check): a cache entry whose network namespace is gone is
# reported, and its nftables rules are never re-created by --repair. ---

ZOMB = ("zomb1", ["10.88.0.30/16", "fd00:88::30/64"], [_pm(7100, 70), _pm(7101, 71, "udp")])
OK1 = ("ok1", ["10.88.0.31/16"], [_pm(7200, 80)])


def _zombie_node(ns: str, cache: Path) -> dict:
    """zomb1 added by v1.9.1, its cache entry naming a namespace that does not exist;
    ok1 a normal cached container. Returns ok1's config."""
    cid, ips, ports = ZOMB
    conf = upstream.nft_conf("podman", ips, ports)
    upstream.run(V191, "ADD", ns, cid, conf, check=True)
    rp.write_cni_cache(cache, "podman", cid, "eth0", conf, ports, ips,
                       netns="/run/netns/does-not-exist")  # fmt: skip
    return _plugin_add(ns, cache, OK1)


def _delete_rules(ns: str, container_id: str, chains: tuple) -> None:
    for rule in _rules_of(ns, container_id):
        if rule["chain"] in chains:
            upstream.nft(ns, "delete", "rule", rule["family"], "cni_hostport", rule["chain"],
                         "handle", str(rule["handle"]))  # fmt: skip


@pytest.mark.parametrize("backend", ["auto", "nftables"])
@pytest.mark.parametrize(
    "damage",
    ["all-rules-by-handle", "dnat-rules-by-handle", "flushed-chains"],
)
def test_repair_never_recreates_a_zombies_nft_rules(
    node: str, tmp_path: Path, damage: str, backend: str
) -> None:
    ok1 = _zombie_node(node, tmp_path)
    listed = _rows(node, tmp_path)
    assert {r[8] for r in listed if r[0] == "zomb1"} == {("zombie",)}
    if damage == "flushed-chains":
        for family in ("ip", "ip6"):
            for chain in ("hostports", "masquerading"):
                upstream.nft(node, "flush", "chain", family, "cni_hostport", chain)
    elif damage == "dnat-rules-by-handle":
        # The masquerade-only (incomplete) case: its DNAT rules gone, the rest left.
        _delete_rules(node, "zomb1", ("hostports", "hostip_hostports"))
    else:
        _delete_rules(node, "zomb1", ("hostports", "hostip_hostports", "masquerading"))
    zombie_left = _rules_of(node, "zomb1")
    repaired = _pmctl(node, tmp_path, "check", "--backend", backend, "--repair", "-o", "json")
    assert repaired.returncode == 1, repaired.stdout + repaired.stderr
    doc = json.loads(repaired.stdout)
    assert ("zombie", "zomb1") in {(p["kind"], p["container_id"]) for p in doc["problems"]}
    assert _rules_of(node, "zomb1") == zombie_left, "re-created a zombie's rules"
    upstream.run(V191, "CHECK", node, "ok1", ok1, check=True)
    again = _pmctl(node, tmp_path, "check", "--backend", backend, "--repair", "-o", "json")
    assert json.loads(again.stdout)["repaired"] is False
    assert _rules_of(node, "zomb1") == zombie_left


def test_check_backend_judges_only_that_backends_zombies(node: str, tmp_path: Path) -> None:
    _zombie_node(node, tmp_path)
    cid, ips, ports = IPT
    ipt = upstream.nft_conf("podman", ips, ports, backend="iptables")
    upstream.run(V191, "ADD", node, cid, ipt, check=True)
    rp.write_cni_cache(tmp_path, "podman", cid, "eth0", ipt, ports, ips,
                       netns="/run/netns/does-not-exist-either")  # fmt: skip
    zombies = {}
    for backend in ("auto", "nftables", "iptables"):
        done = _pmctl(node, tmp_path, "check", "--backend", backend, "-o", "json")
        assert done.returncode == 1, (backend, done.stdout + done.stderr)
        problems = json.loads(done.stdout)["problems"]
        assert {p["kind"] for p in problems} == {"zombie"}, (backend, problems)
        zombies[backend] = {p["container_id"] for p in problems}
    assert zombies == {"auto": {"zomb1", "ipt1"}, "nftables": {"zomb1"}, "iptables": {"ipt1"}}


# --- SPEC §3 check: a cached container's rules must be there EXACTLY: a rule of its
# own that its config does not make (an old address, one written by hand) is
# `extra-rules`, and --repair deletes it; nobody else's rule is touched. ---


def test_a_cached_containers_wrong_rule_is_extra_and_repair_removes_it(
    node: str, tmp_path: Path
) -> None:
    web1 = ("web1", ["10.88.0.5/16"], [_pm(8080, 80), _pm(5353, 53, "udp")])
    web = _plugin_add(node, tmp_path, web1)
    api = _plugin_add(node, tmp_path, API)
    _plugin_add(node, tmp_path, OLD, cached=False)
    # Someone's own rules in the plugin's chains: no comment, and another ID's.
    upstream.nft(node, "add", "rule", "ip", "cni_hostport", "hostports", "tcp", "dport", "6000",
                 "dnat", "to", "10.88.0.50:60")  # fmt: skip
    [tcp] = [r for r in _rules_of(node, "web1") if r["chain"] == "hostports"
             and r["expr"][0]["match"]["left"]["payload"]["protocol"] == "tcp"]  # fmt: skip
    upstream.nft(node, "delete", "rule", "ip", "cni_hostport", "hostports", "handle",
                 str(tcp["handle"]))  # fmt: skip
    upstream.nft(node, "insert", "rule", "ip", "cni_hostport", "hostports", "tcp", "dport",
                 "8080", "dnat", "to", "10.88.0.99:80", "comment", '"web1"')  # fmt: skip
    upstream.nft(node, "add", "rule", "ip", "cni_hostport", "masquerading", "ip", "saddr",
                 "10.88.0.77", "ip", "daddr", "10.88.0.77", "masquerade", "comment", '"web1"')  # fmt: skip
    others = [r for r in json.loads(upstream.ruleset_json(node))["nftables"]
              if "rule" in r and r["rule"].get("comment") != "web1"]  # fmt: skip

    broken = _pmctl(node, tmp_path, "check", "-o", "json")
    assert broken.returncode == 1, broken.stdout + broken.stderr
    problems = json.loads(broken.stdout)["problems"]
    web_kinds = {(p["kind"], p["family"]) for p in problems if p["container_id"] == "web1"}
    assert web_kinds == {("extra-rules", 4), ("nft-missing-rules", 4), ("nft-unclaimed-rules", 4)}
    [extra] = [p for p in problems if p["kind"] == "extra-rules"]
    assert extra["rule"] == 'tcp dport 8080 dnat to 10.88.0.99:80 comment "web1"'
    assert extra["fix"].startswith("portmapctl check --repair")
    # A masquerade of an address web1's config has not: maybe its other network's (the
    # rules carry the bare ID), so reported with words and left (it was deleted).
    [unclaimed] = [p for p in problems if p["kind"] == "nft-unclaimed-rules"]
    assert unclaimed["rule"] == 'ip saddr 10.88.0.77 ip daddr 10.88.0.77 masquerade comment "web1"'
    assert unclaimed["fix"] is None
    assert not any(p["container_id"] == "api1" for p in problems)

    repaired = _pmctl(node, tmp_path, "check", "--repair", "-o", "json")
    assert repaired.returncode == 1, repaired.stdout + repaired.stderr  # the stale ones stay
    doc = json.loads(repaired.stdout)
    assert {(p["kind"], p["container_id"]) for p in doc["fixed"]} == {
        ("extra-rules", "web1"), ("nft-missing-rules", "web1"),
    }  # fmt: skip
    after = _pmctl(node, tmp_path, "check", "-o", "json")
    # The uncommented rule is nobody's (gc keeps it): no problem, a note.
    assert {(p["kind"], p["container_id"]) for p in json.loads(after.stdout)["problems"]} == {
        ("stale", "old1"), ("nft-unclaimed-rules", "web1"),
    }  # fmt: skip
    assert "is not the plugin's" in after.stderr
    dnat = [r["expr"][-1]["dnat"] for r in _rules_of(node, "web1") if r["chain"] == "hostports"]
    assert sorted((d["addr"], d["port"]) for d in dnat) == [("10.88.0.5", 53), ("10.88.0.5", 80)]
    masq = {r["expr"][0]["match"]["right"] for r in _rules_of(node, "web1")
            if r["chain"] == "masquerading"}  # fmt: skip
    assert masq == {"10.88.0.5", "127.0.0.1", "10.88.0.77"}
    # Every other rule, the uncached container's and the comment-less one included,
    # exactly as it was (same handles).
    assert [r for r in json.loads(upstream.ruleset_json(node))["nftables"]
            if "rule" in r and r["rule"].get("comment") != "web1"] == others  # fmt: skip
    for cid, conf in (("web1", web), ("api1", api)):
        upstream.run(V191, "CHECK", node, cid, conf, check=True)


@pytest.mark.parametrize("old_address_kept", [False, True], ids=["alone", "kept-by-a-port"])
def test_repair_of_an_old_address_takes_its_masquerade_rules_along(
    node: str, tmp_path: Path, old_address_kept: bool
) -> None:
    """A container the plugin ADDed again on a new address without a DEL keeps the old
    address's DNAT rule (ahead of the new one: it takes the port) and its two
    masquerade rules (hairpin, localhost). --repair deleted the DNAT rule as extra but
    left the masquerade rules, which then were nft-unclaimed-rules at every check
    (exit 1), though nothing of the container sends traffic to that address any more.
    They go in the same transaction, as extra-rules. A rule of its own that still
    DNATs to that address (a port its config has not: maybe its other network's) keeps
    them: they serve that rule."""
    ports = [_pm(8080, 80)]
    old = upstream.nft_conf("podman", ["10.88.0.5/16"], ports)
    new = upstream.nft_conf("podman", ["10.88.0.6/16"], ports)
    upstream.run(V191, "ADD", node, "moved1", old, check=True)
    upstream.run(V191, "ADD", node, "moved1", new, check=True)
    rp.write_cni_cache(tmp_path, "podman", "moved1", "eth0", new, ports, ["10.88.0.6/16"])
    if old_address_kept:
        upstream.nft(node, "add", "rule", "ip", "cni_hostport", "hostports", "tcp", "dport",
                     "7777", "dnat", "to", "10.88.0.5:77", "comment", '"moved1"')  # fmt: skip

    found = _pmctl(node, tmp_path, "check", "-o", "json")
    assert found.returncode == 1, found.stdout + found.stderr
    kinds = {p["kind"]: p for p in json.loads(found.stdout)["problems"]}
    old_masq = [
        'ip saddr 10.88.0.5 ip daddr 10.88.0.5 masquerade comment "moved1"',
        'ip saddr 127.0.0.1 ip daddr 10.88.0.5 masquerade comment "moved1"',
    ]
    old_dnat = 'tcp dport 8080 dnat to 10.88.0.5:80 comment "moved1"'
    if old_address_kept:
        assert kinds["extra-rules"]["rule"] == old_dnat
        assert set(kinds["nft-unclaimed-rules"]["rule"].split("\n")) == {
            'tcp dport 7777 dnat to 10.88.0.5:77 comment "moved1"', *old_masq,
        }  # fmt: skip
    else:
        assert set(kinds) == {"extra-rules"}, kinds
        assert kinds["extra-rules"]["rule"].split("\n") == [old_dnat, *old_masq]

    repaired = _pmctl(node, tmp_path, "check", "--repair", "-o", "json")
    doc = json.loads(repaired.stdout)
    assert [p["kind"] for p in doc["fixed"]] == ["extra-rules"]
    text = upstream.ruleset_text(node)
    assert "dnat to 10.88.0.5:80" not in text
    assert ("daddr 10.88.0.5 masquerade" in text) is old_address_kept
    if old_address_kept:
        assert repaired.returncode == 1, repaired.stdout + repaired.stderr
        assert [p["kind"] for p in doc["problems"]] == ["nft-unclaimed-rules"]
    else:
        assert repaired.returncode == 0, repaired.stdout + repaired.stderr
        assert doc["problems"] == []
    masq = {r["expr"][1]["match"]["right"] for r in _rules_of(node, "moved1")
            if r["chain"] == "masquerading"}  # fmt: skip
    assert "10.88.0.6" in masq  # the new address's stay
    upstream.run(V191, "CHECK", node, "moved1", new, check=True)
    upstream.run(V191, "DEL", node, "moved1", new, check=True)
    assert _container_rules(node) == []


# --- --backend narrows what check looks at: with --backend nftables nothing is expected
# of iptables (it is not read), with --backend iptables nothing of nftables. ---

IPT = ("ipt1", ["10.88.0.40/16"], [_pm(8140, 80)])


def _mixed_v191_node(ns: str, cache: Path) -> dict:
    """web1 on v1.9.1's nftables backend and ipt1 on its iptables backend, both cached."""
    cid, ips, ports = IPT
    ipt = upstream.nft_conf("podman", ips, ports, backend="iptables")
    upstream.run(V191, "ADD", ns, cid, ipt, check=True)
    rp.write_cni_cache(cache, "podman", cid, "eth0", ipt, ports, ips)
    return {"web1": _plugin_add(ns, cache, WEB), "ipt1": ipt}


def _plugin_tables(ns: str) -> str:
    """The plugin's nftables tables (not iptables-nft's `ip nat`)."""
    return "".join(
        upstream.nft(ns, "list", "table", f, "cni_hostport").stdout for f in ("ip", "ip6")
    )


def test_check_backend_looks_only_at_that_backend(node: str, tmp_path: Path) -> None:
    _mixed_v191_node(node, tmp_path)
    for backend in ("auto", "nftables", "iptables"):
        done = _pmctl(node, tmp_path, "check", "--backend", backend, "-o", "json")
        assert done.returncode == 0, (backend, done.stdout + done.stderr)
        assert json.loads(done.stdout)["problems"] == []
    # Each backend's damage is seen only by a check that looks at that backend.
    upstream.nft(node, "flush", "chain", "ip", "cni_hostport", "hostports")
    rp.iptables(node, ["-t", "nat", "-F", "CNI-HOSTPORT-DNAT"])
    seen = {}
    for backend in ("nftables", "iptables"):
        done = _pmctl(node, tmp_path, "check", "--backend", backend, "-o", "json")
        assert done.returncode == 1, (backend, done.stdout + done.stderr)
        seen[backend] = {
            (p["kind"], p["container_id"]) for p in json.loads(done.stdout)["problems"]
        }
    assert seen["nftables"] == {("nft-missing-rules", "web1")}
    assert seen["iptables"] == {("missing-entry", "ipt1")}


def test_check_backend_repair_repairs_only_that_backend(node: str, tmp_path: Path) -> None:
    confs = _mixed_v191_node(node, tmp_path)
    upstream.nft(node, "flush", "chain", "ip", "cni_hostport", "hostports")
    rp.iptables(node, ["-t", "nat", "-F", "CNI-HOSTPORT-DNAT"])
    ipt_broken = rp.save(node, 4)
    done = _pmctl(node, tmp_path, "check", "--backend", "nftables", "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    upstream.run(V191, "CHECK", node, "web1", confs["web1"], check=True)
    assert rp.strip_save_comments(rp.save(node, 4)) == rp.strip_save_comments(ipt_broken)
    assert upstream.run(V191, "CHECK", node, "ipt1", confs["ipt1"]).returncode != 0
    nft_after = _plugin_tables(node)
    upstream.nft(node, "flush", "chain", "ip", "cni_hostport", "hostports")
    nft_broken = _plugin_tables(node)
    done = _pmctl(node, tmp_path, "check", "--backend", "iptables", "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    upstream.run(V191, "CHECK", node, "ipt1", confs["ipt1"], check=True)
    assert _plugin_tables(node) == nft_broken != nft_after
    healthy = _pmctl(node, tmp_path, "check", "--repair")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    for cid in ("web1", "ipt1"):
        upstream.run(V191, "CHECK", node, cid, confs[cid], check=True)


def test_gc_backend_nftables_netns_liveness_removes_the_zombies_rules(
    node: str, tmp_path: Path
) -> None:
    """--backend nftables reads nftables from the kernel: the cache's namespaces are
    judged there too (before, never: --netns-liveness removed nothing). The rules name
    no network, the zombie's cache entry does: gc's row says it (it said `-`)."""
    ok1 = _zombie_node(node, tmp_path)
    done = _pmctl(node, tmp_path, "gc", "--backend", "nftables", "--yes", "--min-age", "0",
                  "--netns-liveness", "-o", "json")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    removed = json.loads(done.stdout)["removed"]
    assert {(c["container_id"], c["network"]) for c in removed} == {("zomb1", "podman")}
    assert _rules_of(node, "zomb1") == []
    upstream.run(V191, "CHECK", node, "ok1", ok1, check=True)


def test_a_plain_gc_between_netns_liveness_runs_keeps_an_nft_zombies_clock(
    node: str, tmp_path: Path
) -> None:
    """As for an iptables chain: a plain gc (the zombie counts as live) between two
    --netns-liveness runs does not start the zombie's --min-age clock again."""
    ok1 = _zombie_node(node, tmp_path)

    def gc(*args: str) -> dict:
        done = _pmctl(node, tmp_path, "gc", "--yes", "--min-age", "3s", *args, "-o", "json")
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)

    assert {c["container_id"] for c in gc("--netns-liveness")["pending"]} == {"zomb1"}
    time.sleep(1.5)
    assert gc()["removed"] == []
    time.sleep(1.7)
    assert {c["container_id"] for c in gc("--netns-liveness")["removed"]} == {"zomb1"}
    assert _rules_of(node, "zomb1") == []
    upstream.run(V191, "CHECK", node, "ok1", ok1, check=True)


def test_a_nft_zombie_with_no_rule_left_is_not_sent_to_gc_again(node: str, tmp_path: Path) -> None:
    """Once gc --netns-liveness removed an nftables-backed zombie's rules, its cache
    entry stays (the runtime's): check still names the zombie, but its fix is no longer
    that gc, which removes nothing more (check stayed at exit 1 with it, forever), as
    for an iptables-backed zombie with no chain left."""
    _zombie_node(node, tmp_path)
    before = json.loads(_pmctl(node, tmp_path, "check", "-o", "json").stdout)["problems"]
    [zombie] = [p for p in before if p["kind"] == "zombie"]
    assert zombie["container_id"] == "zomb1" and zombie["fix"].endswith("--netns-liveness")
    done = _pmctl(node, tmp_path, "gc", "--yes", "--min-age", "0", "--netns-liveness")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _rules_of(node, "zomb1") == []
    checked = _pmctl(node, tmp_path, "check", "-o", "json")
    assert checked.returncode == 1, checked.stderr
    [zombie] = [p for p in json.loads(checked.stdout)["problems"] if p["kind"] == "zombie"]
    assert zombie["fix"] is None, zombie
    assert "nothing of it is left for gc to remove" in zombie["why"]
    assert "zomb1" in zombie["why"]  # the cache file to delete
    again = _pmctl(
        node, tmp_path, "gc", "--yes", "--min-age", "0", "--netns-liveness", "-o", "json"
    )
    assert json.loads(again.stdout)["removed"] == []  # (what the old fix led to)


@pytest.mark.parametrize("dnat_left", [True, False])
def test_a_nft_zombies_row_gives_its_rules_as_a_stale_row_does(
    node: str, tmp_path: Path, dnat_left: bool
) -> None:
    """check -o json gave an nftables zombie's row `rule` null and `chain` null (-o wide:
    RULE `-`, CHAIN `nft`) while its detail said its rules are still in nftables; the
    same container's stale row (its cache entry gone) gives its rule and chain, and an
    iptables zombie's row gives its chain's (1927122). Now the zombie's row gives what
    the stale rows give, every family's in one row; `check --repair` (which reads
    nftables in the check itself) too. With its DNAT rules deleted, its masquerade
    rules, as the stale row then gives them."""
    _zombie_node(node, tmp_path)
    if not dnat_left:
        _delete_rules(node, "zomb1", ("hostports", "hostip_hostports"))

    def zombie_row(*args: str) -> dict:
        done = _pmctl(node, tmp_path, "check", *args, "-o", "json")
        assert done.returncode == 1, done.stdout + done.stderr
        doc = json.loads(done.stdout)
        [row] = [p for p in doc["problems"] if p["kind"] == "zombie"]
        return row

    zombie, repaired = zombie_row(), zombie_row("--repair")
    wide = _pmctl(node, tmp_path, "check", "-o", "wide").stdout
    (tmp_path / "results" / "podman-zomb1-eth0").unlink()
    done = _pmctl(node, tmp_path, "check", "-o", "json")
    stale = sorted(
        (p["family"], p["chain"], p["rule"])
        for p in json.loads(done.stdout)["problems"]
        if p["kind"] == "stale" and p["container_id"] == "zomb1"
    )
    assert [family for family, _chain, _rule in stale] == [4, 6], stale
    [chain] = {chain for _family, chain, _rule in stale}
    assert chain == ("hostports" if dnat_left else "masquerading")
    rules = "\n".join(rule for _family, _chain, rule in stale)
    assert "zomb1" in rules
    for row in (zombie, repaired):
        assert (row["backend"], row["family"]) == ("nftables", None), row
        assert (row["chain"], row["rule"]) == (chain, rules), row
    [line] = [line for line in wide.splitlines() if line.startswith("zombie ")]
    assert f" nft:{chain} " in line, wide
    assert line.endswith("; ".join(rules.splitlines())), wide  # (wide: one line, `; `)


ZOMB4 = ("zomb4", ["10.88.0.50/16"], [_pm(7300, 70)])


@pytest.mark.parametrize("ctr", [ZOMB4, ZOMB], ids=["ipv4-only", "dual-stack"])
def test_a_nft_zombies_row_gives_its_family_where_its_rules_are_in_one(
    node: str, tmp_path: Path, ctr
) -> None:
    """check -o json gave an nftables zombie's row `family` null (-o wide FAM `-`) though
    its rules, which the row gives, were all in IPv4; an iptables zombie's row gives the
    family its chain is in, and the same container's stale rows theirs. Now the family
    its rules are in, where that is one; null where they are in both (one row)."""
    cid, ips, ports = ctr
    conf = upstream.nft_conf("podman", ips, ports)
    upstream.run(V191, "ADD", node, cid, conf, check=True)
    rp.write_cni_cache(tmp_path, "podman", cid, "eth0", conf, ports, ips,
                       netns="/run/netns/does-not-exist")  # fmt: skip
    families = sorted({r["family"] for r in _rules_of(node, cid)})
    assert families == (["ip"] if ctr is ZOMB4 else ["ip", "ip6"]), families
    want = 4 if ctr is ZOMB4 else None
    for args in ((), ("--repair",)):
        done = _pmctl(node, tmp_path, "check", *args, "-o", "json")
        assert done.returncode == 1, done.stdout + done.stderr
        [row] = json.loads(done.stdout)["problems"]
        assert (row["kind"], row["backend"], row["chain"]) == ("zombie", "nftables", "hostports")
        assert row["family"] == want, (args, row)
    wide = _pmctl(node, tmp_path, "check", "-o", "wide").stdout
    [line] = [line for line in wide.splitlines() if line.startswith("zombie ")]
    assert line.split()[1] == ("v4" if want else "-"), wide


def test_a_nft_zombie_kept_live_by_an_unreadable_entry_says_that_entry_keeps_it(
    node: str, tmp_path: Path
) -> None:
    """A v1.9.1 zombie (its namespace gone) beside a cache entry of the same container on
    the same network that cannot be read (cut short): gc keeps its rules (that entry
    keeps the container live by its file name, docs/commands/gc.md), and check's row of
    it named no fix, rightly, but said why as "the container is live on podman (a cache
    entry whose namespace is there)": no entry of it is there whose namespace anything
    read. It says the entry that cannot be read keeps it live."""
    cid, ips, ports = ZOMB4
    conf = upstream.nft_conf("podman", ips, ports)
    upstream.run(V191, "ADD", node, cid, conf, check=True)
    rp.write_cni_cache(tmp_path, "podman", cid, "eth0", conf, ports, ips,
                       netns="/run/netns/does-not-exist")  # fmt: skip
    cut = rp.write_cni_cache(tmp_path, "podman", cid, "net2", conf, ports, ips)
    cut.write_text(cut.read_text()[:40])
    for args in ((), ("--repair",)):
        done = _pmctl(node, tmp_path, "check", *args, "-o", "json")
        assert done.returncode == 1, done.stdout + done.stderr
        [row] = json.loads(done.stdout)["problems"]
        assert (row["kind"], row["container_id"], row["fix"]) == ("zombie", cid, None), row
        assert "whose namespace is there" not in row["why"], row
        assert "cannot be read" in row["why"] and "gc keeps its rules" in row["why"], row
    gc = _pmctl(node, tmp_path, "gc", "--netns-liveness", "--min-age", "0", "--yes", "-o", "json")
    assert gc.returncode == 0, gc.stdout + gc.stderr
    assert json.loads(gc.stdout)["removed"] == [] and _rules_of(node, cid), gc.stdout


@pytest.mark.parametrize("conditioned_first", [True, False])
def test_repair_of_one_mapping_keeps_the_newest_adds_conditions(
    node: str, tmp_path: Path, conditioned_first: bool
) -> None:
    """prerouting lost its rule; `check --repair` of ONE mapping writes it with the
    conditions of the newest cached ADD, as the node-wide repair does: not with the
    repaired container's own, which would restrict every other container's ports to its
    sources (or drop the sources the newest ADD restricted them to), and which check
    then calls healthy."""
    cond = ("cond1", ["10.90.0.5/16"], [_pm(6000, 60)])
    plain = ("plain1", ["10.88.0.5/16"], [_pm(8080, 80)])
    order = [("condnet", cond, COND_V4), ("podman", plain, None)]
    if not conditioned_first:
        order.reverse()
    confs = {}
    for when, (network, ctr, conditions) in enumerate(order):
        confs[ctr[0]] = _on_both((node,), tmp_path, V191, network, ctr, conditions_v4=conditions)
        entry = tmp_path / "results" / f"{network}-{ctr[0]}-eth0"
        os.utime(entry, ns=(10**18 + when, 10**18 + when))  # ADD order, unambiguous
    before = upstream.ruleset_text(node)
    assert (COND_ENTRY in before) is not conditioned_first
    upstream.nft(node, "flush", "chain", "ip", "cni_hostport", "prerouting")
    older = order[0][1][0]  # the container whose conditions are not the node's
    done = pmctl.run(
        ["check", "--repair", "--backend", "nftables", "--container", older, "--cni-config",
         "-", "--netns", node, "--cni-cache-dir", str(tmp_path), "--no-flush-udp"],
        stdin=json.dumps(confs[older]),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert upstream.ruleset_text(node) == before


def test_masquerade_alone_in_one_family_is_the_plugins_shape_not_a_leftover(
    node: str, tmp_path: Path
) -> None:
    """A dual-stack container whose only host IP is ::1: v1.9.1 writes IPv4 masquerade
    rules and no IPv4 DNAT rule (its ADD masquerades every address of the container).
    Without a CNI cache, check called them `incomplete` (exit 1: "host ports are not
    forwarded", a gc to run once the container is gone) for a healthy container."""
    ctr = ("v6host1", ["10.88.0.5/16", "fd00:88::5/64"], [_pm(8181, 80, host_ip="::1")])
    upstream.run(V191, "ADD", node, ctr[0], _conf("podman", ctr), check=True)
    assert "ip saddr 127.0.0.1 ip daddr 10.88.0.5 masquerade" in upstream.ruleset_text(node)
    done = _pmctl(node, tmp_path / "nonexistent", "check", "-o", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["problems"] == []
    # Its IPv6 DNAT rules gone too (a DEL cut short): the IPv4 ones are left behind again.
    handle = json.loads(upstream.nft(node, "-j", "list", "chain", "ip6", "cni_hostport",
                                     "hostports").stdout)["nftables"][-1]["rule"]["handle"]  # fmt: skip
    upstream.nft(node, "delete", "rule", "ip6", "cni_hostport", "hostports", "handle", str(handle))
    done = _pmctl(node, tmp_path / "nonexistent", "check", "-o", "json")
    assert {(p["kind"], p["family"]) for p in json.loads(done.stdout)["problems"]} == {
        ("incomplete", 4),
        ("incomplete", 6),
    }


# --- check of ONE nft-backed mapping: the container's own rules its config does not
# make are `extra-rules`, as in the node check, and its --repair deletes them by handle. ---

C1 = ("c1", ["10.88.0.5/16", "fd00:88::5/64"],
      [_pm(8080, 80), _pm(5353, 53, "udp"), _pm(9090, 90, host_ip="127.0.0.1")])  # fmt: skip
WRONG = ("tcp", "dport", "8080", "dnat", "to", "10.88.0.5:81", "comment", '"c1"')


def _one(ns: str, cache: Path, conf_path: Path, *args: str):
    """`check --cni-config` of c1 (the runtime gives the container ID beside the config)."""
    return _pmctl(ns, cache, "check", "--container", "c1", "--cni-config", str(conf_path),
                  "--no-flush-udp", "-o", "json", *args)  # fmt: skip


def test_one_mapping_check_reports_a_wrong_rule_of_its_container_and_repair_deletes_it(
    node: str, tmp_path: Path
) -> None:
    """The plugin's own rules, even twice over (a re-ADD duplicates every rule), are no
    problem; a rule of the container its config does not make, put first, is
    `extra-rules` (port 8080 goes to :81): the old check called it healthy, and --repair
    (the planner's setup) left it. --repair deletes it alone, by handle: another
    container's wrong rule, an admin's rule and another table stay."""
    conf = _plugin_add(node, tmp_path, C1)
    upstream.run(V191, "ADD", node, "c1", conf, check=True)  # a re-ADD: every rule twice
    _plugin_add(node, tmp_path, API)
    path = tmp_path / "c1.json"
    path.write_text(json.dumps(conf))
    healthy = _one(node, tmp_path, path)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert json.loads(healthy.stdout)["problems"] == []

    upstream.nft(node, "insert", "rule", "ip", "cni_hostport", "hostports", *WRONG)
    # Not c1's to repair: api1's own wrong rule, an admin's rule, another table.
    upstream.nft(node, "add", "rule", "ip", "cni_hostport", "hostports", "tcp", "dport", "9191",
                 "dnat", "to", "10.88.0.6:91", "comment", '"api1"')  # fmt: skip
    upstream.nft(node, "add", "rule", "ip", "cni_hostport", "hostports", "tcp", "dport", "6000",
                 "dnat", "to", "10.88.0.50:60")  # fmt: skip
    upstream.nft(node, "add", "table", "ip", "other")
    upstream.nft(node, "add", "chain", "ip", "other", "c", "{ type nat hook prerouting priority"
                 " 100; }")  # fmt: skip
    upstream.nft(node, "add", "rule", "ip", "other", "c", *WRONG)
    broken = _one(node, tmp_path, path)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    [extra] = json.loads(broken.stdout)["problems"]
    assert (extra["kind"], extra["family"], extra["container_id"]) == ("extra-rules", 4, "c1")
    assert extra["rule"] == 'tcp dport 8080 dnat to 10.88.0.5:81 comment "c1"'
    assert extra["detail"].startswith("1 rule its config does not make (handle ")
    # The mapping options say the same.
    options = ["check", "--backend", "nftables", "--network", "podman", "--container", "c1",
               "--ip", "10.88.0.5/16", "--ip", "fd00:88::5/64", "-p", "8080:80",
               "-p", "5353:53/udp", "-p", "127.0.0.1:9090:90", "-o", "json"]  # fmt: skip
    by_options = _pmctl(node, tmp_path, *options)
    assert by_options.returncode == 1, by_options.stdout + by_options.stderr
    [same] = json.loads(by_options.stdout)["problems"]
    assert {**same, "fix": None} == {**extra, "fix": None}  # (the fix repeats the command)
    # So does the node check.
    node_wide = json.loads(_pmctl(node, tmp_path, "check", "-o", "json").stdout)["problems"]
    assert [p["rule"] for p in node_wide if p["container_id"] == "c1"] == [extra["rule"]]

    others = [r for r in json.loads(upstream.ruleset_json(node))["nftables"]
              if "rule" in r and r["rule"].get("comment") != "c1"]  # fmt: skip
    ours = sorted(json.dumps(r) for r in _rules_of(node, "c1") if r["expr"][-1].get("dnat")
                  != {"addr": "10.88.0.5", "port": 81})  # fmt: skip
    repaired = _one(node, tmp_path, path, "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    doc = json.loads(repaired.stdout)
    assert [p["kind"] for p in doc["fixed"]] == ["extra-rules"]
    # Only that rule deleted: the others by handle as they were, the duplicates too.
    assert sorted(json.dumps(r) for r in _rules_of(node, "c1")) == ours
    assert [r for r in json.loads(upstream.ruleset_json(node))["nftables"]
            if "rule" in r and r["rule"].get("comment") != "c1"] == others  # fmt: skip
    upstream.run(V191, "CHECK", node, "c1", conf, check=True)


def _wrong_rule_alone_repaired(node: str, tmp_path: Path, path: Path) -> None:
    """c1's WRONG rule put first: the one problem of the check of c1's mapping at
    `path`, and what its --repair deletes."""
    upstream.nft(node, "insert", "rule", "ip", "cni_hostport", "hostports", *WRONG)
    broken = _one(node, tmp_path, path)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert [p["rule"] for p in json.loads(broken.stdout)["problems"]] == [
        'tcp dport 8080 dnat to 10.88.0.5:81 comment "c1"'
    ]
    repaired = _one(node, tmp_path, path, "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "10.88.0.5:81" not in upstream.ruleset_text(node)


def test_one_mapping_check_counts_the_containers_other_network_as_its_own(
    node: str, tmp_path: Path
) -> None:
    """One container on two nft-backed networks: the plugin's comment is the container
    ID alone, so each network's rules carry it. Checking one network's mapping, the
    other's rules are the container's own (the node check counts them so), not extra;
    --repair deletes only the rule neither config makes."""
    first = _on_both((node,), tmp_path, V191, "podman", ("c1", ["10.88.0.5/16"], [_pm(8080, 80)]))
    second = _on_both((node,), tmp_path, V191, "other", ("c1", ["10.89.0.5/16"], [_pm(8181, 80)]))
    path = tmp_path / "c1.json"
    path.write_text(json.dumps(first))
    healthy = _one(node, tmp_path, path)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    _wrong_rule_alone_repaired(node, tmp_path, path)
    for conf in (first, second):
        upstream.run(V191, "CHECK", node, "c1", conf, check=True)
    assert _pmctl(node, tmp_path, "check").returncode == 0


def test_one_mapping_repair_keeps_the_containers_rules_on_a_network_not_cached(
    node: str, tmp_path: Path
) -> None:
    """The container's other network has no cache entry here (another cache dir, a lost
    file): its rules carry the same comment (the container ID alone), but they are for
    another address, so they may be live. The check of one mapping judged them by its
    config alone: extra-rules, and --repair deleted them (port 8181 no longer
    forwarded). Only the rules for the config's own addresses are its to judge."""
    first = _on_both((node,), tmp_path, V191, "podman", ("c1", ["10.88.0.5/16"], [_pm(8080, 80)]))
    second = _conf("other", ("c1", ["10.89.0.5/16"], [_pm(8181, 80)]))
    upstream.run(V191, "ADD", node, "c1", second, check=True)  # not cached
    path = tmp_path / "c1.json"
    path.write_text(json.dumps(first))
    _wrong_rule_alone_repaired(node, tmp_path, path)
    text = upstream.ruleset_text(node)
    assert 'tcp dport 8181 dnat to 10.89.0.5:80 comment "c1"' in text
    assert 'ip saddr 10.89.0.5 ip daddr 10.89.0.5 masquerade comment "c1"' in text


@pytest.mark.parametrize("version", ["v1.6.2", "v1.7.1"])
def test_a_missing_host_ip_rule_of_a_v17_table_is_named_by_its_chain(
    node: str, tmp_path: Path, version: str
) -> None:
    """v1.6/v1.7 keep host-IP rules in hostip_hostports, and check --repair puts a lost
    one back there: check, its JSON and the repair's line name that chain, not
    hostports (where only v1.9 puts them)."""
    conf = _plugin_add(node, tmp_path, API, version=version)
    (rule,) = [r for r in _rules_of(node, "api1") if r["chain"] == "hostip_hostports"]
    upstream.nft(node, "delete", "rule", "ip", "cni_hostport", "hostip_hostports",
                 "handle", str(rule["handle"]))  # fmt: skip
    path = tmp_path / "api1.json"
    path.write_text(json.dumps(conf))
    for args in (["check"], ["check", "--container", "api1", "--cni-config", str(path)]):
        done = _pmctl(node, tmp_path, *args, "-o", "json")
        assert done.returncode == 1, done.stdout + done.stderr
        problems = json.loads(done.stdout)["problems"]
        assert [(p["kind"], p["chain"]) for p in problems] == [
            ("nft-missing-rules", "hostip_hostports")
        ], args
    repaired = _pmctl(node, tmp_path, "check", "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "nft-missing-rules nft:hostip_hostports (podman/api1)" in repaired.stderr
    assert [r["chain"] for r in _rules_of(node, "api1") if "hostports" in r["chain"]] == [
        "hostip_hostports"
    ]
    upstream.run(version, "CHECK", node, "api1", conf, check=True)


def test_a_base_chain_of_another_priority_or_policy_is_reported(node: str, tmp_path: Path) -> None:
    """A base chain re-created with another priority makes the plugin's ADD of every new
    container fail; a policy drop drops what no rule takes. check says so, and its fix
    (delete the chain, then --repair) gives the plugin its chain back."""
    web = _plugin_add(node, tmp_path, WEB)
    chains = (("ip6", "prerouting"), ("ip", "masquerading"))
    before = [upstream.nft(node, "list", "chain", f, "cni_hostport", c).stdout for f, c in chains]
    entry = before[0]
    jump = next(line.strip() for line in entry.splitlines() if "jump" in line)
    upstream.nft(node, "delete", "chain", "ip6", "cni_hostport", "prerouting")
    upstream.nft(node, "add", "chain", "ip6", "cni_hostport", "prerouting",
                 "{ type nat hook prerouting priority 50 ; }")  # fmt: skip
    upstream.nft(node, "add", "rule", "ip6", "cni_hostport", "prerouting", *jump.split())
    upstream.nft(node, "add", "chain", "ip", "cni_hostport", "masquerading",
                 "{ type nat hook postrouting priority 100 ; policy drop ; }")  # fmt: skip
    new = upstream.nft_conf("podman", ["10.88.0.9/16", "fd00:88::9/64"], [_pm(6060, 60)])
    refused = upstream.run(V191, "ADD", node, "new1", new)
    assert refused.returncode != 0 and "Operation not supported" in refused.stdout + refused.stderr
    upstream.run(V191, "DEL", node, "new1", new, check=True)  # its IPv4 rules went in

    broken = _pmctl(node, tmp_path, "check", "-o", "json")
    assert broken.returncode == 1, broken.stdout + broken.stderr
    found = {(p["kind"], p["family"], p["chain"], p["fix"])
             for p in json.loads(broken.stdout)["problems"]}  # fmt: skip
    assert found == {
        ("nft-wrong-base-chain", 6, "prerouting", None),
        ("nft-wrong-base-chain", 4, "masquerading", None),
    }
    text = _pmctl(node, tmp_path, "check")
    assert "priority 50; policy accept; the plugin's: type nat hook prerouting" in text.stdout
    assert "nft delete chain ip6 cni_hostport prerouting" in text.stdout
    # --repair alone leaves a chain someone changed.
    assert _pmctl(node, tmp_path, "check", "--repair").returncode == 1

    upstream.nft(node, "delete", "chain", "ip6", "cni_hostport", "prerouting")
    upstream.nft(node, "delete", "chain", "ip", "cni_hostport", "masquerading")
    repaired = _pmctl(node, tmp_path, "check", "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    # As the plugin made them (listed at the table's end now: new handles).
    assert [upstream.nft(node, "list", "chain", f, "cni_hostport", c).stdout
            for f, c in chains] == before  # fmt: skip
    upstream.run(V191, "CHECK", node, "web1", web, check=True)
    upstream.run(V191, "ADD", node, "new1", new, check=True)


@pytest.mark.parametrize("chain", ["hostports", "hostports_all"])
def test_a_host_port_chain_made_a_base_chain_is_reported_with_its_fix(
    node: str, tmp_path: Path, chain: str
) -> None:
    """A table `ip cni_hostport` another tool made (or one re-created by hand) whose
    hostports (or hostports_all) is a base chain: the kernel refuses a jump to a base
    chain and a dnat outside a nat chain, so the plugin's ADD fails ("Operation not
    supported") and so did check --repair, every run, with that one line. check named
    only the chains missing beside it, and their fix, --repair: it never said which
    chain was wrong. Now it is nft-wrong-base-chain (the plugin's: a regular chain),
    whose fix by hand (delete it, then --repair) gives the plugin its table back."""
    upstream.nft(node, "-f", "-", stdin=(
        "table ip cni_hostport {\n"
        f"  chain {chain} {{ type filter hook input priority 0; policy accept;"
        ' tcp dport 22 accept comment "sshd"; }\n'
        "}\n"
    ))  # fmt: skip
    conf = upstream.nft_conf("podman", ["10.88.0.5/16"], [_pm(8080, 80)])
    rp.write_cni_cache(tmp_path, "podman", "web1", "eth0", conf, [_pm(8080, 80)], ["10.88.0.5/16"])
    refused = upstream.run(V191, "ADD", node, "web1", conf)
    assert refused.returncode != 0 and "Operation not supported" in refused.stdout
    broken = _pmctl(node, tmp_path, "check", "-o", "json")
    assert broken.returncode == 1, broken.stdout + broken.stderr
    found = {(p["kind"], p["family"], p["chain"], p["fix"])
             for p in json.loads(broken.stdout)["problems"]}  # fmt: skip
    assert ("nft-wrong-base-chain", 4, chain, None) in found, found
    text = _pmctl(node, tmp_path, "check")
    assert f"chain {chain} of ip cni_hostport is type filter hook input priority 0;" in text.stdout
    assert "the plugin's: a regular chain (no hook)" in text.stdout
    assert f"nft delete chain ip cni_hostport {chain}" in text.stdout

    upstream.nft(node, "delete", "chain", "ip", "cni_hostport", chain)
    repaired = _pmctl(node, tmp_path, "check", "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    upstream.run(V191, "CHECK", node, "web1", conf, check=True)


@pytest.mark.parametrize(
    "chain", ["hostports { type filter hook input priority 0;", "masquerading { type filter"
              " hook postrouting priority 100;", "masquerading { type nat hook prerouting"
              " priority 100;", "prerouting { type nat hook postrouting priority -100;"],
    ids=["hostports-base", "masquerading-filter", "masquerading-nat-prerouting",
         "prerouting-nat-postrouting"],
)  # fmt: skip
@pytest.mark.parametrize("one", [False, True], ids=["node", "one-mapping"])
def test_a_family_whose_chain_refuses_the_plugins_rules_stops_no_repair_of_the_other(
    node: str, tmp_path: Path, chain: str, one: bool
) -> None:
    """One family's table with a chain of the plugin's the kernel refuses its rules in
    (hostports a base chain: no jump to it; masquerading a filter chain: no masquerade
    there): check --repair's one `nft -f` for both families was refused whole, so the
    dual-stack container's IPv6 rules, which nothing stopped, were not re-created
    either, and the run said only "nft -f refused the transaction: Operation not
    supported". That family is now left as it is (its nft-wrong-base-chain and the
    rules it lacks reported, with the fix by hand, exit 1) and the other repaired."""
    upstream.nft(node, "-f", "-", stdin=(
        f"table ip cni_hostport {{\n  chain {chain} policy accept; }}\n}}\n"
    ))  # fmt: skip
    cid, ips, ports = WEB
    conf = upstream.nft_conf("podman", ips, ports)
    rp.write_cni_cache(tmp_path, "podman", cid, "eth0", conf, ports, ips)
    args = ["check", "--repair", "-o", "json"]
    if one:
        path = tmp_path / "web1.json"
        path.write_text(json.dumps(conf))
        args += ["--container", cid, "--cni-config", str(path)]
    done = _pmctl(node, tmp_path, *args)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "refused the transaction" not in done.stderr, done.stderr
    doc = json.loads(done.stdout)
    left = {(p["kind"], p["family"]) for p in doc["problems"]}
    assert ("nft-wrong-base-chain", 4) in left and not {f for _k, f in left} - {4}, left
    assert {(r[0], r[1]) for r in _container_rules(node)} == {
        ("ip6", "hostports"), ("ip6", "masquerading"),
    }  # fmt: skip


@pytest.mark.parametrize("one", [False, True], ids=["node", "one-mapping"])
def test_a_chain_refusing_only_masquerades_stops_no_repair_of_a_container_without_snat(
    node: str, tmp_path: Path, one: bool
) -> None:
    """masquerading a filter chain refuses a masquerade, nothing else: upstream v1.9.1's
    ADD of a container with SNAT off goes in there (it writes no masquerade). check
    --repair left that whole family out since b53e3db, so the IPv4 dnat rule it lacked
    was never made again, run after run (only nft-wrong-base-chain, which it does not
    need, was to blame). Now only a family whose write the chain refuses is left."""
    upstream.nft(node, "-f", "-", stdin=(
        "table ip cni_hostport {\n  chain masquerading { type filter hook postrouting"
        " priority 100; policy accept; }\n}\n"
    ))  # fmt: skip
    conf = _plugin_add(node, tmp_path, WEB, snat=False)
    listed = upstream.nft(node, "-a", "list", "chain", "ip", "cni_hostport", "hostports").stdout
    handle = next(
        line.rsplit("# handle ", 1)[1] for line in listed.splitlines() if "dport 8080" in line
    )
    upstream.nft(node, "delete", "rule", "ip", "cni_hostport", "hostports", "handle", handle)
    args = ["check", "--repair", "-o", "json"]
    if one:
        path = tmp_path / "web1.json"
        path.write_text(json.dumps(conf))
        args += ["--container", WEB[0], "--cni-config", str(path)]
    done = _pmctl(node, tmp_path, *args)
    assert done.returncode == 1, done.stdout + done.stderr  # (the chain: by hand)
    left = {(p["kind"], p["family"]) for p in json.loads(done.stdout)["problems"]}
    assert left == {("nft-wrong-base-chain", 4)}, left
    upstream.run(V191, "CHECK", node, WEB[0], conf, check=True)


def test_a_container_added_again_without_ports_keeps_rules_check_reports(
    node: str, tmp_path: Path
) -> None:
    """Upstream v1.9.1's nftables ADD with `portMappings: []` for a container that has
    rules from an earlier ADD with ports returns at once (so does its DEL), and libcni
    caches the new config: before, check said healthy while the rules still forwarded
    both ports (dual stack). Now unexpected-mapping per family (fix null); gc keeps the
    rules, --repair leaves them as they are, and the nft commands its text gives delete
    them; the live neighbour passes the plugin's CHECK throughout."""
    web = _plugin_add(node, tmp_path, WEB)
    cid, ips, _ports = OLD
    _plugin_add(node, tmp_path, OLD)
    empty = upstream.nft_conf("podman", ips, [])
    upstream.run(V191, "ADD", node, cid, empty, check=True)
    rp.write_cni_cache(tmp_path, "podman", cid, "eth0", empty, [], ips)
    before = upstream.ruleset_text(node)
    assert {c for _f, _ch, c in _container_rules(node)} == {"web1", "old1"}

    done = _pmctl(node, tmp_path, "check", "-o", "json")
    assert done.returncode == 1, done.stdout + done.stderr
    problems = json.loads(done.stdout)["problems"]
    assert sorted((p["kind"], p["family"], p["container_id"]) for p in problems) == [
        ("unexpected-mapping", 4, "old1"),
        ("unexpected-mapping", 6, "old1"),
    ]
    assert all(p["fix"] is None and p["backend"] == "nftables" for p in problems)
    assert "tcp/7000, udp/7001" in problems[0]["detail"]
    gc = _pmctl(node, tmp_path, "gc", "--yes", "--min-age", "0", "-o", "json")
    assert gc.returncode == 0 and json.loads(gc.stdout)["removed"] == [], gc.stderr
    repaired = _pmctl(node, tmp_path, "check", "--repair", "-o", "json")
    assert repaired.returncode == 1, repaired.stdout + repaired.stderr
    assert json.loads(repaired.stdout)["fixed"] == []
    assert upstream.ruleset_text(node) == before

    for problem in problems:
        for command in problem["why"].split("`")[1::2]:  # the commands, in backquotes
            words = command.split()
            assert words[:3] == ["nft", "delete", "rule"], command
            upstream.nft(node, *words[1:])
    assert {c for _f, _ch, c in _container_rules(node)} == {"web1"}
    healthy = _pmctl(node, tmp_path, "check")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    upstream.run(V191, "CHECK", node, "web1", web, check=True)


# --- one mapping's check: a port an earlier rule takes (first-match-wins) -------------
# check of one nftables mapping (the plugin's CHECK stand-in) against the whole-node
# check of the same state, written by upstream v1.9.1's nftables backend.

SHADOW_PORTS = [rp.port_mapping(8080, 80)]
SHADOW_IPS = {"ctrA": ["10.88.0.5/16", "fd00::5/64"], "ctrB": ["10.88.0.6/16", "fd00::6/64"]}


def _check_json(node: str, cache: Path, *args: str):
    done = pmctl.run(["check", "--netns", node, "--cni-cache-dir", str(cache), "-o", "json",
                      *args])  # fmt: skip
    return done, json.loads(done.stdout)["problems"]


def _ctr_mapping(cid: str) -> List[str]:
    options = ["--network", "mynet", "--container", cid, "-p", "8080:80"]
    return options + [arg for ip in SHADOW_IPS[cid] for arg in ("--ip", ip)]


def _add_two_on_8080(node: str, cache: Path) -> Dict[str, Any]:
    confs = {}
    for cid, ips in SHADOW_IPS.items():
        conf = upstream.nft_conf("mynet", ips, SHADOW_PORTS)
        upstream.run(V191, "ADD", node, cid, conf, check=True)
        rp.write_cni_cache(cache, "mynet", cid, "eth0", conf, SHADOW_PORTS, ips)
        confs[cid] = conf
    return confs


def test_one_nft_mapping_check_reports_its_port_shadowed_by_an_earlier_container(
    node: str, tmp_path: Path
) -> None:
    """v1.9.1's ADD of ctrA, then ctrB, both on tcp/8080 in nftables: ctrA's rule is
    first in `hostports`, so ctrB gets no traffic. The whole-node check said so
    (shadowed) while the check of ctrB's one mapping said healthy, exit 0 (as the
    plugin's CHECK, which counts ctrB's rules). Now both report it, word for word,
    IPv4 and IPv6, exit 1; --repair cannot cure it and writes nothing; ctrA's own
    mapping stays healthy."""
    confs = _add_two_on_8080(node, tmp_path)
    done, whole = _check_json(node, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert [(p["kind"], p["container_id"], p["family"]) for p in whole] == [
        ("shadowed", "ctrB", 4),
        ("shadowed", "ctrB", 6),
    ], whole
    stdin = tmp_path / "ctrB.json"
    stdin.write_text(json.dumps(confs["ctrB"]))
    for args in (
        _ctr_mapping("ctrB"),
        [*_ctr_mapping("ctrB"), "--backend", "nftables"],
        ["--container", "ctrB", "--cni-config", str(stdin)],
    ):
        done, problems = _check_json(node, tmp_path, *args)
        assert problems == whole, (args, problems)
        assert done.returncode == 1, done.stdout + done.stderr
    before = upstream.ruleset_text(node)
    done, problems = _check_json(node, tmp_path, *_ctr_mapping("ctrB"), "--repair")
    assert done.returncode == 1, done.stdout + done.stderr
    assert problems == whole
    assert upstream.ruleset_text(node) == before
    done, problems = _check_json(node, tmp_path, *_ctr_mapping("ctrA"))
    assert done.returncode == 0 and problems == [], done.stdout + done.stderr


def test_one_nft_mapping_check_names_gc_for_a_stale_winner(node: str, tmp_path: Path) -> None:
    """The winner's container is gone (no cache entry): the one-mapping check's fix is
    the node check's, gc."""
    _add_two_on_8080(node, tmp_path)
    (tmp_path / "results" / "mynet-ctrA-eth0").unlink()
    _done, whole = _check_json(node, tmp_path)
    mine = [p for p in whole if p["container_id"] == "ctrB"]
    assert [p["fix"] for p in mine] == [
        f"portmapctl gc --netns {node} --cni-cache-dir {tmp_path}"
    ] * 2
    done, problems = _check_json(node, tmp_path, *_ctr_mapping("ctrB"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert problems == mine, problems


def test_one_nft_mapping_check_reports_a_rule_not_the_plugins_taking_its_port_first(
    node: str, tmp_path: Path
) -> None:
    """An admin's rule inserted before ctrA's in `hostports` takes tcp/8080 (IPv4): the
    one-mapping check of ctrA says what the node check says (shadowed by `handle N`, no
    command as the fix), exit 1, where it said healthy."""
    conf = upstream.nft_conf("mynet", SHADOW_IPS["ctrA"], SHADOW_PORTS)
    upstream.run(V191, "ADD", node, "ctrA", conf, check=True)
    rp.write_cni_cache(tmp_path, "mynet", "ctrA", "eth0", conf, SHADOW_PORTS, SHADOW_IPS["ctrA"])
    upstream.nft(node, "insert", "rule", "ip", "cni_hostport", "hostports",
                 "tcp", "dport", "8080", "dnat", "to", "10.0.0.1:22")  # fmt: skip
    _done, whole = _check_json(node, tmp_path)
    assert [(p["kind"], p["family"], p["fix"]) for p in whole] == [("shadowed", 4, None)], whole
    done, problems = _check_json(node, tmp_path, *_ctr_mapping("ctrA"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert problems == whole, problems


def _delete_port_rule(ns: str, container_id: str, port: int) -> None:
    """Delete the container's IPv4 `hostports` rule for `port` (one, by handle)."""
    (lost,) = [
        r for r in _rules_of(ns, container_id)
        if r["chain"] == "hostports" and str(port) in json.dumps(r["expr"])
    ]  # fmt: skip
    upstream.nft(ns, "delete", "rule", "ip", "cni_hostport", "hostports",
                 "handle", str(lost["handle"]))  # fmt: skip


@pytest.mark.parametrize("form", ["node", "mapping"])
def test_repair_never_moves_a_port_from_the_container_that_has_it(
    node: str, tmp_path: Path, form: str
) -> None:
    """v1.9.1 ADDs A (tcp/8080, tcp/9090), then B (tcp/8080): A's 8080 rule comes first
    and takes the port. With that rule lost, B has tcp/8080's traffic; --repair would
    put A's rule back where the plugin wrote it, before B's, and take the port from B
    (before: it did). Now A is left as it is, stderr and `unrepaired` say who has the
    port, and B keeps it."""
    a = ("ctr-a", ["10.88.0.21/16"], [_pm(8080, 80), _pm(9090, 90)])
    b = ("ctr-b", ["10.88.0.22/16"], [_pm(8080, 8080)])
    conf_a = _plugin_add(node, tmp_path, a)
    _plugin_add(node, tmp_path, b)
    _delete_port_rule(node, "ctr-a", 8080)
    before = upstream.ruleset_json(node)
    assert ("ctr-b", 4, "tcp", None, 8080, "10.88.0.22", 8080, True, ("ok",), "nftables") in _rows(
        node, tmp_path
    )
    given: List[str] = []
    if form == "mapping":
        path = tmp_path / "ctr-a.json"
        path.write_text(json.dumps(conf_a))
        given = ["--container", "ctr-a", "--cni-config", str(path)]
    done = _pmctl(node, tmp_path, "check", "--repair", *given, "-o", "json")
    assert done.returncode == 1, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert not doc["repaired"]
    assert all(p["fix"] is None for p in doc["problems"] if p["container_id"] == "ctr-a")
    (left,) = doc["unrepaired"]
    assert left["container_id"] == "ctr-a"
    assert "would take tcp/8080 from ctr-b (hostports)" in left["why"]
    assert "could not repair IPv4 podman/ctr-a (hostports)" in done.stderr
    assert upstream.ruleset_json(node) == before
    assert ("ctr-b", 4, "tcp", None, 8080, "10.88.0.22", 8080, True, ("ok",), "nftables") in _rows(
        node, tmp_path
    )


def test_repair_finds_a_port_move_behind_a_host_ip_rule(node: str, tmp_path: Path) -> None:
    """v1.9.1 ADDs ctr-x (10.0.0.1:8080), ctr-a (8080, 9090), ctr-b (8080); ctr-a's 8080
    rule lost: ctr-b has tcp/8080 to every address but 10.0.0.1, though `list` calls it
    shadowed (by ctr-x, for that address). Judged by "who shadows whom" the repair put
    ctr-a's rule back ahead of ctr-b's and took the rest of the port (helper-120's
    finding); every destination is asked now."""
    _plugin_add(node, tmp_path, ("ctr-x", ["10.88.0.20/16"], [_pm(8080, 80, host_ip="10.0.0.1")]))
    _plugin_add(node, tmp_path, ("ctr-a", ["10.88.0.21/16"], [_pm(8080, 80), _pm(9090, 90)]))
    _plugin_add(node, tmp_path, ("ctr-b", ["10.88.0.22/16"], [_pm(8080, 8080)]))
    _delete_port_rule(node, "ctr-a", 8080)
    before = upstream.ruleset_json(node)
    done = _pmctl(node, tmp_path, "check", "--repair", "-o", "json")
    doc = json.loads(done.stdout)
    assert [u["container_id"] for u in doc["unrepaired"]] == ["ctr-a"], done.stderr
    assert "would take tcp/8080 from ctr-b (hostports)" in doc["unrepaired"][0]["why"]
    assert upstream.ruleset_json(node) == before


@pytest.mark.parametrize("form", ["node", "mapping"])
def test_repair_leaves_only_the_family_whose_rule_would_take_a_port(
    node: str, tmp_path: Path, form: str
) -> None:
    """v1.7.1 ADDs A (dual-stack: 192.0.2.10:8080, [2001:db8::10]:8081, 0.0.0.0:8082/udp,
    [::]:8083), then B (8080:81); A's DNAT rules are lost in both families. Put back,
    A's IPv4 host-IP rule goes into hostip_hostports, ahead of B's hostports rule, and
    would take tcp/192.0.2.10:8080 from B: IPv4 is left. The repair left A whole, its
    IPv6 rules too (which take nothing from anyone, in their own ip6 table), and its
    one `could not repair` line named IPv4 alone (the check of that one mapping left it
    whole too). Now IPv6 is repaired, as the iptables backend repairs the other family's
    chain of a container it leaves in one."""
    a = ("aaaa1111", ["10.88.0.10/16", "fd00:88::10/64"],
         [_pm(8080, 80, host_ip="192.0.2.10"), _pm(8081, 81, host_ip="2001:db8::10"),
          _pm(8082, 82, "udp", "0.0.0.0"), _pm(8083, 83, host_ip="::")])  # fmt: skip
    b = ("bbbb2222", ["10.88.0.11/16", "fd00:88::11/64"], [_pm(8080, 81)])
    conf_a = _plugin_add(node, tmp_path, a, version="v1.7.1")
    given: List[str] = []
    if form == "mapping":
        path = tmp_path / "aaaa1111.json"
        path.write_text(json.dumps(conf_a))
        given = ["--container", "aaaa1111", "--cni-config", str(path)]
    conf_b = _plugin_add(node, tmp_path, b, version="v1.7.1")
    made = upstream.nft(node, "list", "table", "ip6", "cni_hostport").stdout
    made4 = upstream.nft(node, "list", "table", "ip", "cni_hostport").stdout
    _delete_dnat_rules(node, "aaaa1111")
    ipv4 = upstream.nft(node, "-j", "list", "table", "ip", "cni_hostport").stdout
    done = _pmctl(node, tmp_path, "check", "--repair", *given, "-o", "json")
    assert done.returncode == 1, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert doc["repaired"], done.stderr
    assert [(u["family"], u["container_id"]) for u in doc["unrepaired"]] == [(4, "aaaa1111")]
    assert "would take tcp/192.0.2.10:8080 from bbbb2222 (hostports)" in doc["unrepaired"][0]["why"]
    assert {(p["kind"], p["family"], p["container_id"]) for p in doc["problems"]} == {
        ("nft-missing-rules", 4, "aaaa1111")
    }
    assert "could not repair IPv4 podman/aaaa1111 (hostip_hostports)" in done.stderr
    # The row --repair left names its line, not --repair again (table and JSON).
    (left,) = doc["problems"]
    assert left["why"].endswith("--repair left it as it is: its `could not repair` line says why")
    table = _pmctl(node, tmp_path, "check", "--repair", *given)
    assert "with --repair" not in table.stdout, table.stdout
    # IPv6 has every rule the plugin's ADD made (A's appended after B's: it had none
    # left); IPv4 is as it was left, not a rule of it touched.
    ipv6 = upstream.nft(node, "list", "table", "ip6", "cni_hostport").stdout
    assert sorted(ipv6.splitlines()) == sorted(made.splitlines())
    assert upstream.nft(node, "-j", "list", "table", "ip", "cni_hostport").stdout == ipv4
    # B gone, A's IPv4 rules take nothing from anyone: put back as its ADD made them.
    # (v1.7.1's CHECK fails on a dual-stack container as its ADD leaves it: FACTS.md.)
    upstream.run("v1.7.1", "DEL", node, "bbbb2222", conf_b, check=True)
    (tmp_path / "results" / "podman-bbbb2222-eth0").unlink()
    again = _pmctl(node, tmp_path, "check", "--repair", *given)
    assert again.returncode == 0, again.stdout + again.stderr
    ipv4 = upstream.nft(node, "list", "table", "ip", "cni_hostport").stdout
    assert sorted(ipv4.splitlines()) == sorted(
        line for line in made4.splitlines() if "bbbb2222" not in line
    )


@pytest.mark.parametrize(
    "admin",
    [
        ["tcp", "dport", "8080"],
        ["iifname", '"lo"', "tcp", "dport", "8080"],
        ["ip", "saddr", "127.0.0.0/8", "tcp", "dport", "8080"],
        ["ip", "daddr", "10.0.0.0/8", "tcp", "dport", "8080"],
        ["ip", "daddr", "{ 10.0.0.1, 10.0.0.2 }", "tcp", "dport", "8080"],
        ["ip", "daddr", "10.0.0.1-10.0.0.5", "tcp", "dport", "8080"],
    ],
    ids=["plain", "iifname", "saddr", "prefix", "set", "range"],
)
def test_repair_takes_no_port_from_someone_elses_rule(
    node: str, tmp_path: Path, admin: List[str]
) -> None:
    """v1.9.1 ADDs ctr-a (10.0.0.1:8080, 9090); an admin's DNAT for tcp/8080 is appended
    to hostports; ctr-a's 8080 rule lost: the admin's rule has (some of) the port now,
    and putting ctr-a's back ahead of it would take that. Only the plain rule was seen
    as a holder (helper-121's F1): one with conditions of its own, or on a prefix, set
    or range of addresses, holds some of the port too."""
    _plugin_add(node, tmp_path, ("ctr-a", ["10.88.0.21/16"],
                                 [_pm(8080, 80, host_ip="10.0.0.1"), _pm(9090, 90)]))  # fmt: skip
    upstream.nft(node, "add", "rule", "ip", "cni_hostport", "hostports", *admin,
                 "dnat", "to", "10.0.0.9:80")  # fmt: skip
    _delete_port_rule(node, "ctr-a", 8080)
    before = upstream.ruleset_json(node)
    done = _pmctl(node, tmp_path, "check", "--repair", "-o", "json")
    doc = json.loads(done.stdout)
    assert [u["container_id"] for u in doc.get("unrepaired", [])] == ["ctr-a"], done.stderr
    assert "from the rule handle" in doc["unrepaired"][0]["why"]
    assert "decide which container keeps it" in doc["unrepaired"][0]["why"]
    assert upstream.ruleset_json(node) == before


@pytest.mark.parametrize("looked_at", ["iptables", "nftables"])
def test_list_narrowed_to_the_backend_the_plugin_does_not_use_says_where_the_mappings_are(
    node: str, tmp_path: Path, looked_at: str
) -> None:
    """`list --backend iptables` on a node whose plugin (v1.9.1) keeps its mappings in
    the cni_hostport tables alone (and `--backend nftables` on a Debian 1.1.1 node) said
    "no portmap chains found", exit 0 and nothing on stderr: an operator who typed the
    wrong backend was told the node has no mappings at all. It still lists nothing
    there, but never says there is nothing: the summary names the backend read, and
    stderr how many mappings the other holds and the option that shows them."""
    if looked_at == "iptables":
        _plugin_add(node, tmp_path, WEB)
        held_in, count = "nftables", 4
    else:
        ipt_conf = rp.plugin_conf("podman", ["10.88.0.20/16"], [_pm(8100, 80), _pm(8101, 81)])
        rp.run_plugin("ADD", node, "ipt1", ipt_conf, check=True)
        held_in, count = "iptables", 2
    for quiet in ((), ("-q",)):
        done = _pmctl(node, tmp_path, "list", "--backend", looked_at, *quiet)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == [f"no portmap chains found in {looked_at}"]
        assert (
            f"portmapctl: warning: --backend {looked_at}: the plugin's {held_in} holds {count}"
            f" mappings on this node, not read here: run with --backend auto to list them"
        ) in done.stderr.splitlines(), done.stderr
    # JSON: nothing but the document on stdout, the warning on stderr.
    done = _pmctl(node, tmp_path, "list", "--backend", looked_at, "-o", "json")
    assert done.returncode == 0 and json.loads(done.stdout)["mappings"] == []
    assert f"the plugin's {held_in} holds {count} mappings" in done.stderr
    # Where the backend read holds them, or neither does, nothing of the kind is said.
    done = _pmctl(node, tmp_path, "list", "--backend", held_in, "-q")
    assert "not read here" not in done.stderr and "found" not in done.stdout


@pytest.mark.parametrize("looked_at", ["iptables", "nftables"])
def test_check_narrowed_to_the_backend_the_plugin_does_not_use_does_not_say_there_is_nothing(
    node: str, tmp_path: Path, looked_at: str
) -> None:
    """`check --backend nftables` on a Debian 1.1.1 node with three cached containers
    (and `--backend iptables` on a v1.9.1 nftables node) summed up "healthy: no cached
    port mappings and no portmap chains (IPv4 and IPv6)", on stdout and as the JSON
    summary, while the cache held them and the other backend their rules: only a warning
    said so. As list's "no portmap chains found in <backend>", the summary names the
    backend it read."""
    held_in = _held_in_the_other_backend(node, tmp_path, looked_at)
    text = _pmctl(node, tmp_path, "check", "--backend", looked_at)
    doc = _pmctl(node, tmp_path, "check", "--backend", looked_at, "-o", "json")
    assert text.returncode == doc.returncode == 0, text.stderr + doc.stderr
    summary = json.loads(doc.stdout)["summary"]
    assert text.stdout.splitlines() == [summary]
    assert summary.startswith("healthy: ") and f"in {looked_at}" in summary, summary
    assert "no cached port mappings and" not in summary, summary
    assert f"the plugin's {held_in} holds" in text.stderr
    # Where the backend read holds them, the summary is the usual one.
    done = _pmctl(node, tmp_path, "check", "--backend", held_in)
    assert done.returncode == 0 and done.stdout.startswith("healthy: all "), done.stdout


def _held_in_the_other_backend(node: str, tmp_path: Path, looked_at: str) -> str:
    """The plugin's cached mappings in the backend other than `looked_at` (v1.9.1's
    nftables, or Debian 1.1.1's iptables: three containers); that backend's name."""
    if looked_at == "iptables":
        _plugin_add(node, tmp_path, WEB)
        return "nftables"
    for i in range(3):
        ips, ports = [f"10.88.0.{20 + i}/16"], [_pm(8100 + i, 80)]
        ipt_conf = rp.plugin_conf("podman", ips, ports)
        rp.run_plugin("ADD", node, f"ipt{i}", ipt_conf, check=True)
        rp.write_cni_cache(tmp_path, "podman", f"ipt{i}", "eth0", ipt_conf, ports, ips)
    return "iptables"


@pytest.mark.parametrize("looked_at", ["iptables", "nftables"])
def test_check_repair_narrowed_to_the_backend_the_plugin_does_not_use_does_not_say_there_is_nothing(
    node: str, tmp_path: Path, looked_at: str
) -> None:
    """`check --backend nftables --repair` on a Debian 1.1.1 node with three cached
    containers still summed up "healthy: no cached port mappings and no portmap chains
    (IPv4 and IPv6)" (text and JSON) where check without --repair names the backend it
    read: the check after the repair lost it. It says what check says, and writes
    nothing."""
    _held_in_the_other_backend(node, tmp_path, looked_at)

    def state() -> tuple:
        saved = tuple(rp.strip_save_comments(rp.save(node, f)) for f in (4, 6))
        return (*saved, upstream.ruleset_json(node))

    before = state()
    plain = _pmctl(node, tmp_path, "check", "--backend", looked_at)
    text = _pmctl(node, tmp_path, "check", "--backend", looked_at, "--repair")
    doc = _pmctl(node, tmp_path, "check", "--backend", looked_at, "--repair", "-o", "json")
    assert plain.returncode == text.returncode == doc.returncode == 0, text.stderr + doc.stderr
    assert f"in {looked_at}" in plain.stdout, plain.stdout
    assert text.stdout == plain.stdout
    assert json.loads(doc.stdout)["summary"] == plain.stdout.strip()
    assert state() == before


@pytest.mark.parametrize("looked_at", ["iptables", "nftables"])
def test_check_narrowed_to_the_other_backend_without_a_cache_does_not_say_there_is_nothing(
    node: str, tmp_path: Path, looked_at: str
) -> None:
    """Without a CNI cache, `check --backend nftables` on a Debian 1.1.1 node with three
    containers' chains in iptables summed up "healthy: 0 portmap chains look sound (IPv4
    and IPv6); no CNI cache to compare them with" (--repair the same, and --backend
    iptables on a v1.9.1 nftables node): the node holds them, in the backend not read.
    The summary names the backend read, as with a cache."""
    held_in = _held_in_the_other_backend(node, tmp_path, looked_at)
    empty = tmp_path / "no-cache"
    empty.mkdir()
    for repair in ([], ["--repair"]):
        text = _pmctl(node, empty, "check", "--backend", looked_at, *repair)
        doc = _pmctl(node, empty, "check", "--backend", looked_at, *repair, "-o", "json")
        assert text.returncode == doc.returncode == 0, text.stderr + doc.stderr
        summary = json.loads(doc.stdout)["summary"]
        assert text.stdout.splitlines() == [summary]
        assert summary == f"healthy: no port mappings in {looked_at} (IPv4 and IPv6)", summary
        assert f"the plugin's {held_in} holds" in text.stderr
    # Where the backend read holds them, the usual no-cache line.
    done = _pmctl(node, empty, "check", "--backend", held_in)
    assert done.returncode == 0 and "no CNI cache to compare" in done.stdout, done.stdout


def test_gc_shows_a_containers_host_ports_in_one_order_on_either_backend(
    node: str, twin: str, tmp_path: Path
) -> None:
    """One stale container, its ports mapped by the v1.6.2 plugin in nftables (host-IP
    rules in hostip_hostports, the others in hostports) and by Debian's 1.1.1 in
    iptables (one chain, mapping order): gc's HOST PORTS column read
    `9000/tcp,7000/udp,8000/tcp,8080/tcp` on the first and `9000/tcp,8080/tcp,7000/udp,
    8000/tcp` on the second (the JSON `host_ports` alike), so a script or an operator
    comparing two nodes saw a difference where there is none. Both are now in list's
    row order: protocol, then port."""
    ports = [_pm(9000, 90), _pm(8080, 80, host_ip="127.0.0.1"), _pm(7000, 70, "udp"), _pm(8000, 80)]
    upstream.run(
        "v1.6.2", "ADD", node, "old1", upstream.nft_conf("podman", ["10.88.0.7/16"], ports),
        check=True,
    )  # fmt: skip
    rp.run_plugin(
        "ADD", twin, "old1", rp.plugin_conf("podman", ["10.88.0.7/16"], ports), check=True
    )
    (tmp_path / "results").mkdir()
    args = ("gc", "--dry-run", "--all", "--min-age", "0", "--family", "4")
    wanted = "8000/tcp,8080/tcp,9000/tcp,7000/udp"
    for ns in (node, twin):
        table = _pmctl(ns, tmp_path, *args)
        assert table.returncode == 0, table.stderr
        rows = [line for line in table.stdout.splitlines() if " old1 " in line]
        assert len(rows) == 1 and f"  {wanted}  " in rows[0], (ns, table.stdout)
        doc = json.loads(_pmctl(ns, tmp_path, *args, "-o", "json").stdout)
        assert [f"{p['host_port']}/{p['protocol']}" for p in doc["removed"][0]["host_ports"]] == (
            wanted.split(",")
        ), ns


def test_gc_orders_its_rows_as_list_does_unnamed_networks_last(node: str, tmp_path: Path) -> None:
    """gc's table says it is in list's order (network, container), but it sorted a row
    of no known network ("-", a stale nftables container: its rules name none) before
    the named ones, where list puts it last: the same node's two tables read in two
    orders. Seen at 80 columns on a node with a stale Debian 1.1.1 chain and a stale
    v1.9.1 nftables container."""
    rp.run_plugin("ADD", node, "ab1", rp.plugin_conf("podman", ["10.88.0.5/16"], [_pm(20000, 80)]),
                  check=True)  # fmt: skip
    _plugin_add(node, tmp_path, ("0cd1", ["10.88.0.6/16"], [_pm(30000, 80)]), cached=False)
    (tmp_path / "results").mkdir(exist_ok=True)
    listed = _pmctl(node, tmp_path, "list", "--family", "4", "--no-headers")
    gc = _pmctl(node, tmp_path, "gc", "--dry-run", "--all", "--min-age", "1h", "--family", "4",
                "--no-headers")  # fmt: skip
    assert gc.returncode == 0, gc.stderr

    def containers(text: str, column: int) -> List[str]:
        return [line.split()[column] for line in text.splitlines() if line.strip()][:-1]

    assert containers(listed.stdout, 1) == ["ab1", "0cd1"], listed.stdout
    assert containers(gc.stdout, 2) == ["ab1", "0cd1"], gc.stdout


@pytest.mark.parametrize("looked_at", ["iptables", "nftables"])
def test_check_and_gc_narrowed_to_the_backend_the_plugin_does_not_use_say_where_the_mappings_are(
    node: str, tmp_path: Path, looked_at: str
) -> None:
    """As list (above): `check --backend iptables` on a node whose only container is a
    stale one in the plugin's nftables tables said "healthy: no cached port mappings and
    no portmap chains", exit 0, and `gc --backend iptables` "nothing to remove now",
    with nothing on stderr: a cron job left on the old backend after a migration passes
    every night while the stale rules keep their ports. Both still judge only the
    backend asked (exit 0, nothing changed) and warn where the mappings are; gc's JSON
    `warnings` holds the line too."""
    if looked_at == "iptables":
        _plugin_add(node, tmp_path, OLD, cached=False)
        held_in, count = "nftables", 4
    else:
        ipt_conf = rp.plugin_conf("podman", ["10.88.0.20/16"], [_pm(8100, 80), _pm(8101, 81)])
        rp.run_plugin("ADD", node, "ipt1", ipt_conf, check=True)
        held_in, count = "iptables", 2
    (tmp_path / "results").mkdir(exist_ok=True)
    said = (
        f"portmapctl: warning: --backend {looked_at}: the plugin's {held_in} holds {count}"
        f" mappings on this node, not read here: run with --backend auto"
    )
    check = _pmctl(node, tmp_path, "check", "--backend", looked_at, "-q")
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"{said} to check them" in check.stderr.splitlines(), check.stderr
    gc = _pmctl(node, tmp_path, "gc", "--backend", looked_at, "--all", "--dry-run", "-o", "json")
    assert gc.returncode == 0, gc.stderr
    assert f"{said} for gc to judge them" in gc.stderr.splitlines(), gc.stderr
    doc = json.loads(gc.stdout)
    assert doc["removed"] == [] and doc["pending"] == []
    assert f"{said} for gc to judge them"[len("portmapctl: warning: ") :] in doc["warnings"]
    # The backend the plugin uses: nothing of the kind.
    for args in (("check",), ("gc", "--all", "--dry-run")):
        done = _pmctl(node, tmp_path, *args, "--backend", held_in)
        assert "not read here" not in done.stderr, done.stderr


def test_narrowed_to_iptables_where_nft_cannot_list_runs_as_before(
    node: str, tmp_path: Path
) -> None:
    """--backend iptables on a node whose nft cannot list (a kernel without nf_tables:
    "Operation not supported"; the operator narrowed to iptables for that): list, check
    and gc whose iptables held no container stopped with "error: nft -j list table ip
    cni_hostport failed", exit 3, where they had said "nothing" with exit 0, because
    the other backend was now read to count its mappings for a warning. A cron `gc
    --backend iptables --yes` failed every run on an idle node. That count is evidence
    only: unreadable, it warns of nothing and the run goes on."""
    wrap = tmp_path / "wrap"
    wrap.mkdir()
    real = next(p for p in ("/usr/sbin/nft", "/sbin/nft") if os.path.exists(p))
    (wrap / "nft").write_text(
        f'#!/bin/sh\n[ "$1" = --version ] && exec {real} "$@"\n'
        'echo "Error: Could not process rule: Operation not supported" >&2\nexit 1\n'
    )
    (wrap / "nft").chmod(0o755)
    env = {"PATH": f"{wrap}:{os.environ['PATH']}"}
    (tmp_path / "results").mkdir()
    for args in (("list",), ("check",), ("gc", "--yes", "--min-age", "0")):
        done = pmctl.run(
            [*args, "--backend", "iptables", "--netns", node, "--cni-cache-dir", str(tmp_path)],
            env=env,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "error" not in done.stderr and "not read here" not in done.stderr, done.stderr


def test_narrowed_to_iptables_where_nft_hangs_waits_little_for_the_warning(
    node: str, tmp_path: Path
) -> None:
    """--backend iptables on a node whose nft hangs (nf_tables stuck: the operator
    narrowed to iptables for that) and whose iptables holds no container: list, check
    and gc each waited 120 s (nft's time limit for a read gc or a repair acts on) for
    a listing that only counts nftables' mappings for a warning, then went on as if
    there were none. A cron job ran two minutes a time. That read now waits 10 s
    (nft.EVIDENCE_TIMEOUT_SECONDS), said with -v; the run goes on as before."""
    from concurrent.futures import ThreadPoolExecutor

    wrap = tmp_path / "wrap"
    wrap.mkdir()
    real = next(p for p in ("/usr/sbin/nft", "/sbin/nft") if os.path.exists(p))
    (wrap / "nft").write_text(
        f'#!/bin/sh\n[ "$1" = --version ] && exec {real} "$@"\nexec sleep 150\n'
    )
    (wrap / "nft").chmod(0o755)
    env = {"PATH": f"{wrap}:{os.environ['PATH']}"}
    (tmp_path / "results").mkdir()

    def run(args) -> tuple:
        started = time.monotonic()
        done = pmctl.run(
            [*args, "--backend", "iptables", "--netns", node, "--cni-cache-dir", str(tmp_path),
             "-v"], env=env,
        )  # fmt: skip
        return done, time.monotonic() - started

    commands = (("list",), ("check",), ("gc", "--yes", "--min-age", "0"))
    with ThreadPoolExecutor(len(commands)) as pool:
        results = list(pool.map(run, commands))
    for done, took in results:
        assert done.returncode == 0, done.stdout + done.stderr
        assert "not read here" not in done.stderr, done.stderr
        assert "nft did not answer within 10 s" in done.stderr, done.stderr
        assert took < 30, (took, done.stderr)


@pytest.mark.parametrize("nft_fails", ["cannot-list", "hangs"])
def test_gc_narrowed_to_iptables_whose_nft_fails_still_reports_and_flushes_its_removal(
    node: str, tmp_path: Path, nft_fails: str
) -> None:
    """gc --backend iptables --yes on a node whose nft cannot list (a kernel without
    nf_tables) or hangs: after the stale chain of a UDP port went, the flush read
    nftables to learn which of the freed ports a live nftables container still maps,
    and that read's failure ended gc ("error: nft -j list table ip cni_hostport
    failed", exit 3; or after 120 s) with the removal unreported and its flows left to
    the dead container, every run alike (the next found nothing to remove). An
    unreadable nftables holds no live mapping to keep (the plugin cannot have written
    there either): gc reports its removal and flushes, with a warning."""

    wrap = tmp_path / "wrap"
    wrap.mkdir()
    real = next(p for p in ("/usr/sbin/nft", "/sbin/nft") if os.path.exists(p))
    failing = (
        'echo "Error: Could not process rule: Operation not supported" >&2\nexit 1\n'
        if nft_fails == "cannot-list"
        else "exec sleep 150\n"
    )
    (wrap / "nft").write_text(f'#!/bin/sh\n[ "$1" = --version ] && exec {real} "$@"\n{failing}')
    (wrap / "nft").chmod(0o755)
    conf = rp.plugin_conf("podman", ["10.88.0.7/16"], [_pm(7001, 71, "udp")])
    rp.run_plugin("ADD", node, "gone1", conf, check=True)
    (tmp_path / "cni" / "results").mkdir(parents=True)
    _old1_flow(node)
    started = time.monotonic()
    done = pmctl.run(["gc", "--backend", "iptables", "--yes", "--all", "--min-age", "0",
                      "--netns", node, "--cni-cache-dir", str(tmp_path / "cni"), "-o", "json"],
                     env={"PATH": f"{wrap}:{os.environ['PATH']}"})  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert time.monotonic() - started < 60
    doc = json.loads(done.stdout)
    assert [c["container_id"] for c in doc["removed"]] == ["gone1"]
    assert doc["conntrack_deleted"] == 1, doc
    assert "dport=7001" not in _ct(node, "-L", "-p", "udp")


def test_an_nft_table_gc_cannot_read_after_its_iptables_removal_went_in_says_what_went_in(
    node: str, tmp_path: Path
) -> None:
    """A mixed node: gone1's stale iptables chain (UDP 7001, a flow DNATed to it),
    old2's stale nftables rules, web1 live. Between gc's read and its write the table
    turns into one the parser refuses ("not `nft -j list` output") in a chain of the
    plugin's. The iptables side had gone in, and the nftables side's read ahead of its
    write ended gc with a bare "error: nft -j list table ip cni_hostport: not `nft -j
    list` output (...)", exit 2 ("bad input, nothing changed"): gone1's chain gone
    unreported, its flow kept, no sighting saved. An nft table that cannot be read is
    the environment's, as an iptables-save that cannot be read is (exit 3): the run
    ends as any whose nftables side failed after its iptables side went in, the
    document of what went in shown, the flow flushed. (It was another tool's chain
    named `a b`, added through nft's JSON: such a chain is now left out and said,
    test_a_chain_of_another_tools_that_cannot_be_read_stops_nothing. Nothing the real
    nft lists of the plugin's chains is refused, so a wrapped nft, once a wrapped
    iptables-legacy-restore's commit went in, lists web1's comment as a number.)"""
    cache = tmp_path / "cni"
    conf = rp.plugin_conf("podman", ["10.88.0.7/16"], [_pm(7001, 71, "udp")])
    rp.run_plugin("ADD", node, "gone1", conf, mode="legacy", check=True)
    _plugin_add(node, cache, WEB)
    _plugin_add(node, cache, ("old2", ["10.88.0.8/16"], [_pm(7002, 72)]), cached=False)
    _old1_flow(node)
    went_in = tmp_path / "went-in"
    wrap = tmp_path / "wrap"
    wrap.mkdir()
    (wrap / "iptables-legacy-restore").write_text(
        f'#!/bin/bash\n/usr/sbin/iptables-legacy-restore "$@" || exit $?\ntouch {went_in}\n'
    )
    (wrap / "nft").write_text(
        f'#!/bin/bash\nif [ -e {went_in} ] && [ "$1 $2" = "-j list" ]; then\n'
        '  /usr/sbin/nft "$@" | sed \'s/"comment": "web1"/"comment": 5/\'\n'
        "  exit ${PIPESTATUS[0]}\nfi\n"
        'exec /usr/sbin/nft "$@"\n'
    )
    for tool in ("iptables-legacy-restore", "nft"):
        (wrap / tool).chmod(0o755)
    env = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run"), "PATH": f"{wrap}:{os.environ['PATH']}"}
    argv = ["gc", "--netns", node, "--iptables", "legacy", "--cni-cache-dir", str(cache),
            "--yes", "--min-age", "0", "-o", "json"]  # fmt: skip
    done = pmctl.run(argv, env=env)
    pmctl.assert_error(done, 3, "not `nft -j list` output", "iptables, applied before it: 1 chain removed",
                       after_work=True)  # fmt: skip
    doc = json.loads(done.stdout)
    assert [c["container_id"] for c in doc["removed"]] == ["gone1"], doc
    assert doc["conntrack_deleted"] == 1, doc
    assert "dport=7001" not in _ct(node, "-L", "-p", "udp")
    assert "old2" in {r[2] for r in _container_rules(node)}  # (its nft write never ran)
    assert (tmp_path / "run" / "gc-state.json").exists()


def _old1_then_five_live(node: str, cache: Path) -> List[str]:
    """old1 (not cached), then live2..live6 (cached), one TCP port each, no SNAT: a
    reload hands old1's DNAT handle to live5's. The live containers' IDs."""
    _plugin_add(node, cache, ("old1", ["10.88.0.7/16"], [_pm(7000, 70)]), cached=False,
                snat=False)  # fmt: skip
    live = [f"live{i}" for i in range(2, 7)]
    for i, cid in enumerate(live, start=2):
        _plugin_add(node, cache, (cid, [f"10.88.0.{10 + i}/16"], [_pm(7000 + i, 70)]), snat=False)
    return live


def test_a_firewall_reload_between_gcs_read_and_its_write_keeps_every_live_rule(
    node: str, tmp_path: Path
) -> None:
    """A firewall reload (`nft list ruleset`, `nft flush ruleset`, `nft -f` of what was
    listed) makes the plugin's tables again, and the kernel hands their rules handles
    anew: old1's DNAT, handle 10 when gc read it, was 10 no more, and handle 10 was
    now live5's. gc's removal, planned from its first read and deleted by handle,
    deleted live5's rule, kept old1's, and said "removed the nftables rules of 1
    container" (exit 0). The reload here comes just before gc's read ahead of its
    write (a wrapped nft, on its third run); that read now re-plans a removal whose
    rules it does not find as planned."""
    cache = tmp_path / "cni"
    live = _old1_then_five_live(node, cache)
    wrap = tmp_path / "wrap"
    wrap.mkdir()
    real = next(p for p in ("/usr/sbin/nft", "/sbin/nft") if os.path.exists(p))
    (wrap / "nft").write_text(
        "#!/bin/bash\n"
        f"exec 9>>{wrap}/lock; flock 9\n"
        f'echo "$*" >> {wrap}/calls; n=$(wc -l < {wrap}/calls)\n'
        f"if [ $n = 3 ]; then {real} list ruleset > {wrap}/saved && {real} flush ruleset"
        f" && {real} -f {wrap}/saved || exit 99; fi\n"
        "flock -u 9\n"
        f'exec {real} "$@"\n'
    )
    (wrap / "nft").chmod(0o755)
    env = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run"), "PATH": f"{wrap}:{os.environ['PATH']}"}
    argv = ["gc", "--netns", node, "--cni-cache-dir", str(cache), "--yes", "--min-age", "0"]
    done = pmctl.run(argv, env=env)
    calls = (wrap / "calls").read_text().splitlines()
    assert calls[2].startswith("-j list"), calls  # reloaded, then read
    assert done.returncode == 0, done.stderr
    assert sorted(r[2] for r in _container_rules(node)) == live, done.stdout


# Loaded by gc's interpreter (PYTHONPATH): the moment after gc's last check of its plan
# against its last read (Transaction.holds_in, which converge_nft asks just before the
# write), `action`, once (the file named by `marker_env` made then). No wrapped nft can
# reach that moment: the write need not be an `nft -f`.
_ONCE_AFTER_CHECK = """
import json, os, pathlib, subprocess


def _once_after_check(marker_env, action):
    marker = os.environ.get(marker_env)
    if not marker:
        return
    from portmapctl.nftables import transaction as _transaction

    holds_in = _transaction.Transaction.holds_in

    def _then_act(self, live):
        held = holds_in(self, live)
        if held and not os.path.exists(marker):
            open(marker, "w").close()
            action()
        return held

    _transaction.Transaction.holds_in = _then_act
"""

# A firewall reload then.
_RELOAD_AFTER_CHECK = (
    _ONCE_AFTER_CHECK
    + """

def _reload():
    saved = subprocess.run(
        ["nft", "list", "ruleset"], capture_output=True, text=True, check=True
    ).stdout
    subprocess.run(["nft", "-f", "-"], input="flush ruleset\\n" + saved, text=True, check=True)


_once_after_check("PMT_RELOAD_AFTER_CHECK", _reload)
"""
)


def test_a_firewall_reload_after_gcs_last_read_keeps_every_live_rule(
    node: str, tmp_path: Path
) -> None:
    """A firewall reload (`nft list ruleset`, `nft flush ruleset`, `nft -f` of it) in
    the window between gc's last read, checked against its plan (holds_in), and its
    write: the reload made the tables again and handed their rules handles anew, and
    `delete rule ip cni_hostport hostports handle 10` deleted live5's DNAT; old1's
    stayed, gc said it removed old1 (exit 0). The deletions now go as one nf_tables
    batch carrying the generation the last read was settled at: the kernel refuses it
    (the reload committed since), and gc reads again and plans again, as after a
    refused `nft -f`."""
    cache = tmp_path / "cni"
    live = _old1_then_five_live(node, cache)
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(_RELOAD_AFTER_CHECK)
    marker = tmp_path / "reloaded"
    python_path = os.pathsep.join(p for p in (str(shim), os.environ.get("PYTHONPATH")) if p)
    env = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run"), "PYTHONPATH": python_path,
           "PMT_RELOAD_AFTER_CHECK": str(marker)}  # fmt: skip
    argv = ["gc", "--netns", node, "--cni-cache-dir", str(cache), "--yes", "--min-age", "0"]
    done = pmctl.run([*argv, "-o", "json"], env=env)
    assert marker.exists(), done.stderr  # the reload came in the window
    assert done.returncode == 0, done.stderr
    assert [c["container_id"] for c in json.loads(done.stdout)["removed"]] == ["old1"]
    left = sorted(r[2] for r in _container_rules(node))
    assert left == live, (left, done.stderr)


# Loaded by gc's interpreter too: after each of gc's `nft -j list`, a commit in another
# table (a busy node: kube-proxy, a firewall), so that no listing is at one generation.
_COMMIT_AFTER_EACH_LISTING = """
import os, subprocess

if os.environ.get("PMT_COMMIT_AFTER_LISTING"):
    from portmapctl.nftables.access import nft as _nft

    _read = _nft.RealNft.read

    def _then_commit(self, *args, **kwargs):
        listed = _read(self, *args, **kwargs)
        subprocess.run(["nft", "add", "rule", "inet", "other", "c", "counter"], check=True)
        return listed

    _nft.RealNft.read = _then_commit
"""


def test_a_firewall_reload_after_gcs_last_read_on_a_busy_node_keeps_every_live_rule(
    node: str, tmp_path: Path
) -> None:
    """The reload of the test above, on a node where another table commits while each
    of gc's listings runs (measured: at 70 commits a second and more, no listing of
    three was at one generation): the read was left unstamped and the deletions went
    as `nft -f` by handle alone; live5's DNAT deleted, old1's kept, exit 0 (2 runs in
    4 at 100 commits a second). Stamped instead at a settled generation after the
    listing where the plugin's tables are still the makings listed (their handles: a
    table made again has a new one, and a table never gives a rule handle twice), the
    reload refuses the batch and gc plans again."""
    cache = tmp_path / "cni"
    live = _old1_then_five_live(node, cache)
    upstream.nft(node, "add", "table", "inet", "other")
    upstream.nft(node, "add", "chain", "inet", "other", "c")
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(_RELOAD_AFTER_CHECK + _COMMIT_AFTER_EACH_LISTING)
    marker = tmp_path / "reloaded"
    python_path = os.pathsep.join(p for p in (str(shim), os.environ.get("PYTHONPATH")) if p)
    env = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run"), "PYTHONPATH": python_path,
           "PMT_RELOAD_AFTER_CHECK": str(marker), "PMT_COMMIT_AFTER_LISTING": "1"}  # fmt: skip
    argv = ["gc", "--netns", node, "--cni-cache-dir", str(cache), "--yes", "--min-age", "0"]
    done = pmctl.run([*argv, "-v", "-o", "json"], env=env)
    assert marker.exists(), done.stderr  # the reload came in the window
    assert done.returncode == 0, done.stderr
    assert [c["container_id"] for c in json.loads(done.stdout)["removed"]] == ["old1"]
    left = sorted(r[2] for r in _container_rules(node))
    assert left == live, (left, done.stderr)
    assert "deleted as one nf_tables batch" in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("batch", "said"),
    [
        ("1", "deleted as one nf_tables batch at generation "),
        ("0", "not as one nf_tables batch (PORTMAPCTL_NFT_BATCH=0): nft -f"),
    ],
)
def test_gc_verbose_says_which_way_its_nftables_deletions_went(
    node: str, tmp_path: Path, batch: str, said: str
) -> None:
    """`gc -v` said "deleted as one nf_tables batch at generation N" when its
    deletions went as the batch, and nothing at all when they went as `nft -f`
    (PORTMAPCTL_NFT_BATCH=0, no nf_tables netlink, a ruleset that kept moving while
    nft listed it): an operator could not tell which way ran. Both ways say so now."""
    cache = tmp_path / "cni"
    _plugin_add(node, cache, WEB)
    _plugin_add(node, cache, OLD, cached=False)
    env = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run"), "PORTMAPCTL_NFT_BATCH": batch}
    argv = ["gc", "--netns", node, "--cni-cache-dir", str(cache), "--yes", "--min-age", "0"]
    done = pmctl.run([*argv, "-v", "-o", "json"], env=env)
    assert done.returncode == 0, done.stderr
    assert [c["container_id"] for c in json.loads(done.stdout)["removed"]] == ["old1", "old1"]
    assert sorted({r[2] for r in _container_rules(node)}) == ["web1"]
    lines = [line for line in done.stderr.splitlines() if "nf_tables batch" in line]
    assert len(lines) == 1 and said in lines[0], done.stderr


# The plugin's DEL of a stale container then (its conf in PMT_DEL_CONF): the write is
# refused. PMT_DEL_CACHE: the runtime's cache emptied too (the re-plan's cache read
# finds no entry); PMT_DEL_THEN_NFT: then `nft -j -f` of that file.
_DEL_AND_EMPTY_AFTER_CHECK = (
    _ONCE_AFTER_CHECK
    + """

def _del_and_empty():
    conf = json.loads(pathlib.Path(os.environ["PMT_DEL_CONF"]).read_text())
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": "DEL",
           "CNI_CONTAINERID": conf.pop("id"), "CNI_NETNS": os.environ["PMT_DEL_NETNS"],
           "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni"}
    subprocess.run([os.environ["PMT_DEL_PLUGIN"]], input=json.dumps(conf), env=env,
                   text=True, capture_output=True, check=True)
    if os.environ.get("PMT_DEL_CACHE"):
        for entry in pathlib.Path(os.environ["PMT_DEL_CACHE"], "results").iterdir():
            entry.unlink()
    if os.environ.get("PMT_DEL_THEN_NFT"):
        subprocess.run(["nft", "-j", "-f", os.environ["PMT_DEL_THEN_NFT"]], check=True)


_once_after_check("PMT_DEL_AFTER_CHECK", _del_and_empty)
"""
)


def _old2_deleted_after_check(node: str, tmp_path: Path, env: Dict[str, str]) -> Dict[str, str]:
    """web1 (cached in tmp_path/cni), old1 and old2 (stale) by v1.9.1; `env` for a gc
    whose write has old2's DEL by the plugin run just before it
    (_DEL_AND_EMPTY_AFTER_CHECK; tmp_path/deleted made then)."""
    cache = tmp_path / "cni"
    _plugin_add(node, cache, WEB)
    _plugin_add(node, cache, OLD, cached=False)
    old2 = ("old2", ["10.88.0.8/16"], [_pm(7002, 72)])
    conf = _plugin_add(node, cache, old2, cached=False)
    (tmp_path / "old2.json").write_text(json.dumps({**conf, "id": "old2"}))
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(_DEL_AND_EMPTY_AFTER_CHECK)
    python_path = os.pathsep.join(p for p in (str(shim), os.environ.get("PYTHONPATH")) if p)
    return {**env, "PYTHONPATH": python_path, "PMT_DEL_AFTER_CHECK": str(tmp_path / "deleted"),
            "PMT_DEL_CONF": str(tmp_path / "old2.json"),
            "PMT_DEL_PLUGIN": str(upstream.binary(V191)), "PMT_DEL_NETNS": rp.container_netns()}  # fmt: skip


@pytest.mark.parametrize("batch", ["1", "0"])
def test_another_tools_chain_first_read_by_gcs_tries_is_said(
    node: str, tmp_path: Path, batch: str
) -> None:
    """Another tool's chain `a b` (unreadable: skipped, left alone) made in cni_hostport
    while gc's write was refused (old2's DEL by the plugin after gc's last check): the
    re-plan's read skipped it without a word, where a chain there at gc's first read
    is said once (a warning, also in `-o json`'s warnings); the next run said it.
    Said by the run that met it now, once, and old1 removed as ever."""
    (tmp_path / "odd.json").write_text(json.dumps(_ODD_CHAIN))
    env = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run"), "PORTMAPCTL_NFT_BATCH": batch,
           "PMT_DEL_THEN_NFT": str(tmp_path / "odd.json")}  # fmt: skip
    shimmed = _old2_deleted_after_check(node, tmp_path, env)
    done = pmctl.run(["gc", "--netns", node, "--cni-cache-dir", str(tmp_path / "cni"), "--yes",
                      "--min-age", "0", "-o", "json"], env=shimmed)  # fmt: skip
    assert (tmp_path / "deleted").exists(), done.stderr
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert sorted(c["container_id"] for c in doc["removed"]) == ["old1", "old1"], doc
    assert sorted({r[2] for r in _container_rules(node)}) == ["web1"]
    said = "ip cni_hostport: chain 'a b' is not the plugin's and cannot be read"
    assert done.stderr.count(said) == 1, done.stderr
    assert len([w for w in doc["warnings"] if said in w]) == 1, doc["warnings"]


@pytest.mark.parametrize("batch", ["1", "0"])
def test_a_cache_emptied_while_gcs_nftables_removal_is_refused_keeps_the_sightings(
    node: str, tmp_path: Path, batch: str
) -> None:
    """old1 and old2 stale (v1.9.1), web1 live; gc run twice with --min-age 2 (the
    stale ones pending, then past it). In the second, old2's DEL by the plugin came
    between gc's last read and its write (refused: the batch for its generation, `nft
    -f` for old2's handles), and the runtime's cache was emptied meanwhile: the re-plan
    refused the empty cache (exit 2, nothing changed), but the BadInput was raised
    before the sightings were saved, and those of the rules it was about to remove had
    left the state file already: old1 waited --min-age afresh. Saved as they were now."""
    cache = tmp_path / "cni"
    argv = ["gc", "--netns", node, "--cni-cache-dir", str(cache), "--yes", "--min-age", "2",
            "-o", "json"]  # fmt: skip
    env = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run"), "PORTMAPCTL_NFT_BATCH": batch}
    shimmed = _old2_deleted_after_check(node, tmp_path, {**env, "PMT_DEL_CACHE": str(cache)})
    first = pmctl.run(argv, env=env)
    assert first.returncode == 0, first.stderr
    assert len(json.loads(first.stdout)["pending"]) == 3
    state = tmp_path / "run" / "gc-state.json"
    sighted = {ns: p["chains"] for ns, p in json.loads(state.read_text())["namespaces"].items()}
    assert len(next(iter(sighted.values()))) == 3, sighted
    time.sleep(2.5)  # (past --min-age)
    done = pmctl.run(argv, env=shimmed)
    assert (tmp_path / "deleted").exists(), done.stderr
    pmctl.assert_error(done, 2, "is empty")
    assert sorted({r[2] for r in _container_rules(node)}) == ["old1", "web1"]
    after = {ns: p["chains"] for ns, p in json.loads(state.read_text())["namespaces"].items()}
    assert after == sighted


@pytest.mark.parametrize("when", ["after", "before"])
def test_a_killed_nft_is_judged_by_its_rules_bodies_across_a_firewall_reload(
    node: str, tmp_path: Path, when: str
) -> None:
    """gc's `nft -f` killed (no answer), a firewall reload (`nft list ruleset`, `nft
    flush ruleset`, `nft -f` of it) before the read that judges it: the reload hands
    the rules handles anew, and the judgment was by handle alone. "after": nft went in
    (old1's UDP DNAT gone, handle 10 when planned), then the reload gave handle 10 to a
    live rule; gc said the write "may have gone in" (exit 1), reported nothing and left
    old1's flow DNATed to it, and the next gc found nothing to remove. "before": the
    reload, then nft killed before it ran; old1's rules, handles up in the 20s after
    the plugin's churn, were made again below them; gc said "read again, none of the
    rules it deletes is left" and "removed" old1 (exit 0), its rules still there. The
    planned deletions carry their rules' bodies: judged by those now."""

    cache = tmp_path / "cni"
    old = ("old1", ["10.88.0.7/16"], [_pm(7001, 71, "udp")])
    live = [f"live{i}" for i in range(2, 7)]
    if when == "after":
        _plugin_add(node, cache, old, cached=False, snat=False)
    for i, cid in enumerate(live, start=2):
        _plugin_add(node, cache, (cid, [f"10.88.0.{10 + i}/16"], [_pm(7001 + i, 70)]), snat=False)
    if when == "before":
        churn = ("churn", ["10.88.0.9/16"], [_pm(7100, 70), _pm(7101, 70)])
        for _ in range(4):
            conf = _plugin_add(node, cache, churn, cached=False, snat=False)
            upstream.run(V191, "DEL", node, "churn", conf, check=True)
        _plugin_add(node, cache, old, cached=False, snat=False)
    _old1_flow(node)
    wrap = tmp_path / "wrap"
    wrap.mkdir()
    real = next(p for p in ("/usr/sbin/nft", "/sbin/nft") if os.path.exists(p))
    write = f'{real} "$@"' if when == "after" else "cat > /dev/null"
    reload = f"{real} list ruleset > {wrap}/saved && {real} flush ruleset && {real} -f {wrap}/saved"
    (wrap / "nft").write_text(
        f'#!/bin/bash\nif [ "$1" = -f ] && [ ! -e {wrap}/killed ]; then\n'
        f"  touch {wrap}/killed; {write}; {reload}; kill -KILL $$\nfi\n"
        f'exec {real} "$@"\n'
    )
    (wrap / "nft").chmod(0o755)
    # (PORTMAPCTL_NFT_BATCH=0: gc's deletions through `nft -f`, the write where no
    # nf_tables batch can be sent; with one, nft only lists.)
    env = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run"), "PATH": f"{wrap}:{os.environ['PATH']}",
           "PORTMAPCTL_NFT_BATCH": "0"}  # fmt: skip
    argv = ["gc", "--netns", node, "--cni-cache-dir", str(cache), "--yes", "--min-age", "0"]
    done = pmctl.run([*argv, "-o", "json"], env=env)
    assert (wrap / "killed").exists()
    rules = sorted(r[2] for r in _container_rules(node))
    if when == "after":
        assert done.returncode == 0, done.stderr
        assert [c["container_id"] for c in json.loads(done.stdout)["removed"]] == ["old1"]
        assert rules == live
        assert "dport=7001" not in _ct(node, "-L", "-p", "udp")
    else:
        pmctl.assert_error(done, 1, "killed by SIGKILL")
        assert rules == sorted([*live, "old1"]), done.stdout
        again = pmctl.run(argv, env={"PORTMAPCTL_RUN_DIR": str(tmp_path / "run")})
        assert again.returncode == 0, again.stderr
        assert sorted(r[2] for r in _container_rules(node)) == live


# Another tool's chain in cni_hostport, added through nft's JSON: a name nft's own
# syntax cannot write (nor `nft list chain` name), with a rule in it.
_ODD_CHAIN = {"nftables": [
    {"add": {"chain": {"family": "ip", "table": "cni_hostport", "name": "a b"}}},
    {"add": {"rule": {"family": "ip", "table": "cni_hostport", "chain": "a b", "expr": [
        {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                   "right": 9999}},
        {"accept": None}]}}},
]}  # fmt: skip


def _odd_chain(ns: str) -> List[dict]:
    """The rules of chain `a b` in ip cni_hostport, as `nft -j` lists them."""
    return [
        obj["rule"]
        for obj in json.loads(upstream.ruleset_json(ns))["nftables"]
        if "rule" in obj and obj["rule"]["chain"] == "a b"
    ]


def test_a_chain_of_another_tools_that_cannot_be_read_stops_nothing(
    node: str, tmp_path: Path
) -> None:
    """web1 live, old1 stale (upstream v1.9.1), and another tool's chain `a b` with a
    rule in cni_hostport: `list`, `check` and `gc` all exited 2, "nft -j list table ip
    cni_hostport: not `nft -j list` output (item 8: bad chain: ValueError("chain name
    'a b'"))", while the plugin's own ADD, CHECK and DEL go on working on that table.
    SPEC §5: one bad record stops nothing. The chain is said once (a warning) and left
    alone; the plugin's rules are listed, checked, gc'ed and repaired as ever."""
    web = _plugin_add(node, tmp_path, WEB)
    _plugin_add(node, tmp_path, OLD, cached=False)
    upstream.nft(node, "-j", "-f", "-", stdin=json.dumps(_ODD_CHAIN))
    odd = _odd_chain(node)
    assert len(odd) == 1
    warning = (
        "portmapctl: warning: ip cni_hostport: chain 'a b' is not the plugin's and cannot be read"
    )
    listed = _pmctl(node, tmp_path, "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert listed.stderr.count(warning) == 1, listed.stderr
    rows = {(m["container_id"], m["family"], m["host_port"], tuple(m["status"]))
            for m in json.loads(listed.stdout)["mappings"]}  # fmt: skip
    assert ("web1", 4, 8080, ("ok",)) in rows and ("old1", 4, 7000, ("stale",)) in rows
    checked = _pmctl(node, tmp_path, "check", "-o", "json")
    assert checked.returncode == 1, checked.stderr
    assert checked.stderr.count(warning) == 1, checked.stderr
    problems = json.loads(checked.stdout)["problems"]
    assert {(p["kind"], p["container_id"]) for p in problems} == {("stale", "old1")}
    # flush-udp reads the tables too (said nothing of the chain where nft worked).
    flushed = _pmctl(node, tmp_path, "flush-udp", "--dry-run")
    assert flushed.returncode == 0, flushed.stderr
    assert flushed.stderr.count(warning) == 1, flushed.stderr
    # The plugin's next ADD and DEL on that table work (knftables lists by JSON too).
    api = _plugin_add(node, tmp_path, API)
    upstream.run(V191, "CHECK", node, "api1", api, check=True)
    gc = _pmctl(node, tmp_path, "gc", "--yes", "--min-age", "0", "-o", "json")
    assert gc.returncode == 0, gc.stderr
    assert gc.stderr.count(warning) == 1, gc.stderr
    assert {c["container_id"] for c in json.loads(gc.stdout)["removed"]} == {"old1"}
    assert {r[2] for r in _container_rules(node)} == {"web1", "api1"}
    assert _odd_chain(node) == odd
    upstream.nft(node, "flush", "chain", "ip", "cni_hostport", "hostports")
    repaired = _pmctl(node, tmp_path, "check", "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert repaired.stderr.count(warning) == 1, repaired.stderr
    upstream.run(V191, "CHECK", node, "web1", web, check=True)
    assert _odd_chain(node) == odd
    upstream.run(V191, "DEL", node, "api1", api, check=True)
    assert _odd_chain(node) == odd


def test_a_live_table_whose_plugin_chain_cannot_be_read_is_exit_3_and_changes_nothing(
    node: str, tmp_path: Path
) -> None:
    """web1 live, old1 stale (upstream v1.9.1); nft (wrapped) lists web1's comment in
    hostports as a number, which the parser cannot take in one of the plugin's own
    chains. `list`, `check` and `gc` said "not `nft -j list` output (...)" with exit 2,
    "bad input": the kernel's table as nft printed it is no input of the user's, and
    the iptables side's read says exit 3 for its like (an iptables-save whose output
    cannot be read). Now exit 3, one line, nothing removed; the same listing given as
    --nft-snapshot (a file of the user's) is still bad input, exit 2."""
    _plugin_add(node, tmp_path, WEB)
    _plugin_add(node, tmp_path, OLD, cached=False)
    before = upstream.ruleset_text(node)
    wrap = tmp_path / "wrap"
    wrap.mkdir()
    (wrap / "nft").write_text(
        '#!/bin/bash\nif [ "$1 $2" = "-j list" ]; then\n'
        '  /usr/sbin/nft "$@" | sed \'s/"comment": "web1"/"comment": 5/\'\n'
        "  exit ${PIPESTATUS[0]}\nfi\n"
        'exec /usr/sbin/nft "$@"\n'
    )
    (wrap / "nft").chmod(0o755)
    env = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run"), "PATH": f"{wrap}:{os.environ['PATH']}"}
    common = ["--netns", node, "--cni-cache-dir", str(tmp_path)]
    said = "nft -j list table ip cni_hostport: not `nft -j list` output (item "
    for command in (["list"], ["check"], ["check", "--repair"], ["gc", "--yes", "--min-age", "0"]):
        done = pmctl.run([*command, *common], env=env)
        pmctl.assert_error(
            done,
            3,
            said,
            "bad rule: comment is not a string",
            f"cannot be read through {wrap / 'nft'}",
        )
    assert upstream.ruleset_text(node) == before
    listing = tmp_path / "listing.json"
    listing.write_text(
        upstream.nft(node, "-j", "list", "ruleset").stdout.replace(
            '"comment": "web1"', '"comment": 5'
        )
    )
    done = pmctl.run(["list", "--nft-snapshot", str(listing)], env=env)
    pmctl.assert_error(
        done, 2, "not `nft -j list` output (item ", "bad rule: comment is not a string"
    )


@pytest.mark.parametrize("version", ["v1.7.1", V191])
def test_an_ipv6_host_ip_port_is_nobodys_in_ipv4_for_gc_and_repair(
    node: str, tmp_path: Path, version: str
) -> None:
    """A host IP of the other family skips the mapping in that family (upstream FACTS):
    a dual-stack container's `[fd00::1]:9191:91/udp` has a rule in IPv6 alone
    (`hostports` for v1.9.1, `hostip_hostports` for v1.7.1). So its IPv4 side neither
    maps 9191 (list's rows, gc's row and JSON host_ports) nor frees or takes its flows:
    gc removing stale gone1 and check --repair re-creating web1 flush the port in IPv6
    alone; live1's live IPv4 flows on the same ports, and the IPv4 ones nothing of
    theirs ever took, stay (the iptables side credited a stale chain with its entry
    rules' ports and so deleted them: 62427f6, 086b161)."""
    subprocess.run(["ip", "-n", node, "addr", "add", "10.0.0.1/32", "dev", "lo"], check=True)
    subprocess.run(["ip", "-n", node, "addr", "add", "fd00::1/128", "dev", "lo", "nodad"],
                   check=True)  # fmt: skip
    live1 = ("live1", ["10.88.0.7/16"], [_pm(9191, 91, "udp"), _pm(9292, 92, "udp")])
    gone1 = ("gone1", ["10.88.0.5/16", "fd00::5/64"],
             [_pm(8080, 80), _pm(9191, 91, "udp", host_ip="fd00::1")])  # fmt: skip
    web1 = ("web1", ["10.88.0.6/16", "fd00::6/64"],
            [_pm(8081, 81), _pm(9292, 92, "udp", host_ip="fd00::1")])  # fmt: skip
    _plugin_add(node, tmp_path, live1, version=version)
    _plugin_add(node, tmp_path, gone1, cached=False, version=version)
    _plugin_add(node, tmp_path, web1, version=version)
    _delete_rules(node, "web1", ("hostports", "hostip_hostports"))
    ct_load(node, [
        ct_args("192.0.2.1", "10.0.0.1", 42001, 9191, "10.88.0.7", 91),  # live1's
        ct_args("192.0.2.2", "10.0.0.1", 42002, 9191),  # never DNATed: nobody's here
        ct_args("192.0.2.3", "10.0.0.1", 42003, 9191, "10.88.0.9", 91),  # an old address
        ct_args("2001:db8::4", "fd00::1", 42004, 9191, "fd00::5", 91),  # gone1's: goes
        ct_args("192.0.2.5", "10.0.0.1", 42005, 9292, "10.88.0.7", 92),  # live1's
        ct_args("192.0.2.6", "10.0.0.1", 42006, 9292),  # never DNATed: nobody's here
        ct_args("2001:db8::7", "fd00::1", 42007, 9292),  # before web1's rule: goes
    ])  # fmt: skip
    gone_rows = {(r[1], r[2], r[3], r[4]) for r in _rows(node, tmp_path) if r[0] == "gone1"}
    assert gone_rows == {(4, "tcp", None, 8080), (6, "tcp", None, 8080),
                         (6, "udp", "fd00::1", 9191)}  # fmt: skip
    done = _pmctl(node, tmp_path, "gc", "--yes", "--min-age", "0", "-o", "json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    ports = {r["family"]: [(p["protocol"], p["host_port"]) for p in r["host_ports"]]
             for r in result["removed"] if r["container_id"] == "gone1"}  # fmt: skip
    assert ports == {4: [("tcp", 8080)], 6: [("tcp", 8080), ("udp", 9191)]}
    assert result["conntrack_deleted"] == 1
    assert ct_sports(node) == {42001, 42002, 42003, 42005, 42006, 42007}
    repaired = _pmctl(node, tmp_path, "check", "--repair", "-o", "json")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert ct_sports(node) == {42001, 42002, 42003, 42005, 42006}
    if version == V191:  # (v1.7.1's CHECK fails for any host-IP mapping: FACTS)
        for cid, ips, ports_of in (live1, web1):
            conf = upstream.nft_conf("podman", ips, ports_of)
            upstream.run(V191, "CHECK", node, cid, conf, check=True)


def test_a_network_scoped_run_keeps_the_sightings_of_what_it_does_not_judge(
    node: str, tmp_path: Path
) -> None:
    """A document of one network judges that network's iptables chains alone (and no
    nftables rule): the others are kept unjudged. Their --min-age sightings went with
    them from the state file, so the next run that speaks for them saw them anew: a
    runtime's CNI GC of one network between two cron runs (each within --min-age of
    the next) kept another network's dead chain, and every dead nftables container's
    rules, for ever. Unjudged, a sighting stays as it was, as a family's does that a
    run does not look at."""
    ipt = ("ipt1", ["10.90.0.20/16"], [_pm(8100, 80)])
    rp.run_plugin("ADD", node, ipt[0], rp.plugin_conf("other", *ipt[1:]), check=True)
    _plugin_add(node, tmp_path, OLD, cached=False)  # (network "podman")
    everyone = tmp_path / "everyone.json"  # a bare list: it speaks for every network
    everyone.write_text(json.dumps([{"containerID": "mine1", "ifname": "eth0"}]))
    mynet = tmp_path / "mynet.json"
    mynet.write_text(json.dumps({"cniVersion": "1.1.0", "name": "mynet", "type": "portmap",
                                 "cni.dev/valid-attachments": [
                                     {"containerID": "mine1", "ifname": "eth0"}]}))  # fmt: skip
    env = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run")}

    def gc(doc: Path, min_age: str) -> dict:
        args = ["gc", "--yes", "--min-age", min_age, "--valid-attachments", str(doc), "-o", "json"]
        done = pmctl.run([*args, "--netns", node, "--cni-cache-dir", str(tmp_path / "none")],
                         env=env)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    first = gc(everyone, "1h")
    assert {c["container_id"] for c in first["pending"]} == {"ipt1", "old1"}, first
    time.sleep(3)
    scoped = gc(mynet, "1h")
    assert scoped["removed"] == [] and scoped["pending"] == [], scoped
    # 3 s after the first sighting: past a --min-age of 2 s, had it stayed on file.
    last = gc(everyone, "2s")
    assert last["pending"] == [], last
    assert {c["container_id"] for c in last["removed"]} == {"ipt1", "old1"}, last
    assert _container_rules(node) == [] and "ipt1" not in rp.save(node)
