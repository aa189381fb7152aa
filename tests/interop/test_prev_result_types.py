"""prevResult as libcni decodes it before portmap reads an address: a field of the
wrong JSON type, an address or gateway that does not parse, fails the plugin's ADD
(and a null entry of `ips`, or of `interfaces` where an address names it, makes it
panic); `add --cni-config` wrote the rules of such configs, exit 0 (helper-171's
differential run). Each case runs through upstream v1.9.1's ADD, Debian's 1.1.1 and
`portmapctl add`: we refuse (exit 2, nothing written) exactly where v1.9.1 fails, and
write its rules where it maps (Debian's agrees, but on the fields newer than it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, List

import pmctl
import pytest
import realplugin as rp
import upstream

pytestmark = pytest.mark.netns

PORTS = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
MISSING = object()


def _conf(version: str, path: List[Any], value: Any) -> dict:
    ip: dict = {"address": "10.88.0.5/16", "interface": 0, "gateway": "10.88.0.1"}
    if version == "0.4.0":
        ip["version"] = "4"
    prev = {
        "cniVersion": version,
        "interfaces": [{"name": "eth0", "sandbox": "/x", "mac": "02:00:00:00:00:01"}],
        "ips": [ip],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {"nameservers": ["10.0.0.1"]},
    }
    where = prev
    for key in path[:-1]:
        where = where[key]
    if value is MISSING:
        del where[path[-1]]
    else:
        where[path[-1]] = value
    return {"cniVersion": version, "name": "mynet", "type": "portmap",
            "runtimeConfig": PORTS, "prevResult": prev}  # fmt: skip


# case: (path in prevResult, value, whether v1.9.1's ADD fails on it (0.4.0, 1.0.0), Debian's)
CASES = {
    "interfaces a string": (["interfaces"], "x", (True, True), (True, True)),
    "an interface null, named": (["interfaces"], [None], (True, True), (True, True)),
    "interfaces null": (["interfaces"], None, (False, False), (False, False)),
    "ips holding null": (["ips"], [None], (True, True), (True, True)),
    "ips an object": (["ips"], {}, (True, True), (True, True)),
    "interface index a string": (["ips", 0, "interface"], "0", (True, True), (True, True)),
    "interface index 0.0": (["ips", 0, "interface"], 0.0, (False, False), (False, False)),
    "interface index true": (["ips", 0, "interface"], True, (True, True), (True, True)),
    "interface index out of range": (["ips", 0, "interface"], 7, (False, False), (False, False)),
    "address null": (["ips", 0, "address"], None, (True, True), (True, True)),
    "address a number": (["ips", 0, "address"], 5, (True, True), (True, True)),
    "gateway not an IP": (["ips", 0, "gateway"], "nope", (True, True), (True, True)),
    "gateway null": (["ips", 0, "gateway"], None, (False, False), (False, False)),
    "gateway empty": (["ips", 0, "gateway"], "", (False, False), (False, False)),
    "gateway a number": (["ips", 0, "gateway"], 5, (True, True), (True, True)),
    "routes a string": (["routes"], "x", (True, True), (True, True)),
    "routes holding null": (["routes"], [None], (False, False), (False, False)),
    "route dst not a CIDR": (["routes", 0, "dst"], "nope", (True, True), (True, True)),
    "route dst null": (["routes", 0, "dst"], None, (True, True), (True, True)),
    "route gw not an IP": (
        ["routes", 0],
        {"dst": "0.0.0.0/0", "gw": "nope"},
        (True, True),
        (True, True),
    ),
    "route mtu a string": (
        ["routes", 0],
        {"dst": "0.0.0.0/0", "mtu": "1500"},
        (True, True),
        (False, False),
    ),
    "route table a string": (
        ["routes", 0],
        {"dst": "0.0.0.0/0", "table": "1"},
        (True, True),
        (False, False),
    ),
    "dns a string": (["dns"], "x", (True, True), (True, True)),
    "dns null": (["dns"], None, (False, False), (False, False)),
    "nameservers a string": (["dns"], {"nameservers": "x"}, (True, True), (True, True)),
    "nameservers holding a number": (["dns"], {"nameservers": [1]}, (True, True), (True, True)),
    "nameservers holding null": (["dns"], {"nameservers": [None]}, (False, False), (False, False)),
    "domain a number": (["dns"], {"domain": 5}, (True, True), (True, True)),
    "interface mtu a string": (["interfaces", 0, "mtu"], "1500", (False, True), (False, False)),
    "interface name a number": (["interfaces", 0, "name"], 5, (True, True), (True, True)),
    "interface sandbox null": (["interfaces", 0, "sandbox"], None, (False, False), (False, False)),
    "an unknown key": (["foo"], {"x": 1}, (False, False), (False, False)),
    "ip version a number": (["ips", 0, "version"], 4, (True, False), (True, False)),
    # Python's ip_interface takes a netmask and Go's ParseCIDR does not; Go's int holds
    # no 1e20 or 2**64 (add wrote these, exit 0: helper h175).
    "address a netmask": (
        ["ips", 0, "address"],
        "10.88.0.5/255.255.0.0",
        (True, True),
        (True, True),
    ),
    "address prefix 016": (["ips", 0, "address"], "10.88.0.5/016", (False, False), (False, False)),
    "route dst a netmask": (["routes", 0, "dst"], "0.0.0.0/0.0.0.0", (True, True), (True, True)),
    "interface index 1e20": (["ips", 0, "interface"], 1e20, (True, True), (True, True)),
    "interface index 2**64": (["ips", 0, "interface"], 2**64, (True, True), (True, True)),
}


@pytest.fixture(autouse=True)
def _upstream_binaries() -> None:
    rp.require(upstream.available())


@pytest.fixture(scope="module")
def nodes() -> Iterator[tuple[str, str]]:
    names = (rp.create_netns("pmt-prt-p"), rp.create_netns("pmt-prt-m"))
    try:
        yield names
    finally:
        for name in names:
            rp.delete_netns(name)


def _cni_rules(ns: str, cid: str) -> list:
    from portmapctl.iptables.chains import chain_name

    chain = chain_name("mynet", cid, "DN-")
    return [line for line in rp.nat_rules(rp.save(ns, 4)) if chain in line]


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_add_refuses_a_prev_result_libcni_cannot_read(
    nodes: tuple[str, str], tmp_path: Path, case: str, version: str
) -> None:
    plugin_ns, ours_ns = nodes
    path, value, upstream_fails, debian_fails = CASES[case]
    fails = upstream_fails[version == "1.0.0"]
    conf = _conf(version, path, value)
    cid = f"c{sorted(CASES).index(case)}v{version[0]}"
    added = upstream.run("v1.9.1", "ADD", plugin_ns, cid, conf)
    assert (added.returncode != 0) == fails, (case, added.stdout + added.stderr)
    theirs = _cni_rules(plugin_ns, cid)
    debian = rp.run_plugin("ADD", plugin_ns, cid + "d", conf)
    expected = debian_fails[version == "1.0.0"]
    assert (debian.returncode != 0) == expected, (case, debian.stdout + debian.stderr)
    file = tmp_path / "conf.json"
    file.write_text(json.dumps(conf))
    done = pmctl.run(["add", "--container", cid, "--cni-config", str(file), "--netns", ours_ns])
    if fails:
        pmctl.assert_error(done, 2, str(file), "prevResult")
        assert _cni_rules(ours_ns, cid) == []
    else:
        assert done.returncode == 0, done.stderr
        assert _cni_rules(ours_ns, cid) == theirs
