"""The real-plugin harness itself, against the kernel (and its pure helpers without)."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import stat
import sys
from pathlib import Path
from types import ModuleType

import pytest
import realplugin as rp

NETWORK = "mynet"
CONTAINER = "abc123"
IPS = ["10.88.0.5/16"]
PORTS = [
    {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
    {"hostPort": 5353, "containerPort": 53, "protocol": "udp"},
]
CHAIN = "CNI-DN-70a29d9dc18bc4d652ea5"

# reference/FACTS.md: iptables-save -t nat after ADD of the example above, both flavours.
FACTS_SAVE = r"""
:CNI-DN-70a29d9dc18bc4d652ea5 - [0:0]
:CNI-HOSTPORT-DNAT - [0:0]
:CNI-HOSTPORT-MASQ - [0:0]
:CNI-HOSTPORT-SETMARK - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ
-A CNI-DN-70a29d9dc18bc4d652ea5 -s 10.88.0.0/16 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-70a29d9dc18bc4d652ea5 -s 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-70a29d9dc18bc4d652ea5 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.88.0.5:80
-A CNI-DN-70a29d9dc18bc4d652ea5 -s 10.88.0.0/16 -p udp -m udp --dport 5353 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-70a29d9dc18bc4d652ea5 -s 127.0.0.1/32 -p udp -m udp --dport 5353 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-70a29d9dc18bc4d652ea5 -p udp -m udp --dport 5353 -j DNAT --to-destination 10.88.0.5:53
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"mynet\" id: \"abc123\"" -m multiport --dports 8080 -j CNI-DN-70a29d9dc18bc4d652ea5
-A CNI-HOSTPORT-DNAT -p udp -m comment --comment "dnat name: \"mynet\" id: \"abc123\"" -m multiport --dports 5353 -j CNI-DN-70a29d9dc18bc4d652ea5
-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE
-A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000
""".strip().splitlines()  # noqa: E501

FIXTURES = Path(__file__).parents[1] / "fixtures"


def _add(host_ns: str, mode: rp.Mode, conf: dict | None = None) -> dict:
    conf = conf or rp.plugin_conf(NETWORK, IPS, PORTS)
    proc = rp.run_plugin("ADD", host_ns, CONTAINER, conf, mode=mode)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return conf


def _assert_all_ok(procs: list) -> None:
    assert procs
    for proc in procs:
        assert proc.returncode == 0, proc.stdout + proc.stderr


def _load_capture() -> ModuleType:
    # Loaded by path: tests/fixtures is data, not a package.
    name = "fixtures_capture"
    spec = importlib.util.spec_from_file_location(name, FIXTURES / "capture.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


CAPTURE = _load_capture()


# --- against the kernel -------------------------------------------------------------------


def test_add_writes_exactly_the_facts_rules(host_ns: str, iptables_mode: rp.Mode) -> None:
    _add(host_ns, iptables_mode)

    saved = rp.save(host_ns, 4, iptables_mode)
    assert rp.nat_rules(saved) == FACTS_SAVE
    assert "*nat\n" in saved and "COMMIT\n" in saved
    # An IPv4-only container leaves nothing in the IPv6 nat table.
    assert rp.nat_rules(rp.save(host_ns, 6, iptables_mode)) == []


def test_check_passes_after_add(host_ns: str, iptables_mode: rp.Mode) -> None:
    conf = _add(host_ns, iptables_mode)

    proc = rp.run_plugin("CHECK", host_ns, CONTAINER, conf, mode=iptables_mode, family=4)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_all_ok(rp.run_check(host_ns, CONTAINER, conf, mode=iptables_mode))


def test_check_fails_when_a_dnat_rule_is_gone(host_ns: str, iptables_mode: rp.Mode) -> None:
    conf = _add(host_ns, iptables_mode)
    rp.iptables(
        host_ns,
        ["-t", "nat", "-D", CHAIN, "-p", "udp", "-m", "udp", "--dport", "5353",
         "-j", "DNAT", "--to-destination", "10.88.0.5:53"],
        mode=iptables_mode,
    )  # fmt: skip

    proc = rp.run_plugin("CHECK", host_ns, CONTAINER, conf, mode=iptables_mode, family=4)
    assert proc.returncode != 0
    assert "not found" in json.loads(proc.stdout)["msg"]


def test_del_removes_chain_and_entry_rules(host_ns: str, iptables_mode: rp.Mode) -> None:
    conf = _add(host_ns, iptables_mode)

    proc = rp.run_plugin("DEL", host_ns, CONTAINER, conf, mode=iptables_mode)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    rules = rp.nat_rules(rp.save(host_ns, 4, iptables_mode))
    assert not [line for line in rules if CHAIN in line or "dnat name:" in line]
    # The shared top-level chains stay, as the plugin never removes them.
    assert rules == [line for line in FACTS_SAVE if CHAIN not in line]
    # A second DEL is harmless.
    proc = rp.run_plugin("DEL", host_ns, CONTAINER, conf, mode=iptables_mode)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dual_stack_check_per_family(host_ns: str) -> None:
    ports = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
    conf = rp.plugin_conf(NETWORK, ["10.88.0.5/16", "fd00::5/64"], ports)
    _add(host_ns, "nft", conf)

    v6 = rp.nat_rules(rp.save(host_ns, 6))
    assert f"-A {CHAIN} -p tcp -m tcp --dport 8080 -j DNAT --to-destination [fd00::5]:80" in v6
    _assert_all_ok(rp.run_check(host_ns, CONTAINER, conf))
    assert len(rp.run_check(host_ns, CONTAINER, conf)) == 2


def test_modes_do_not_see_each_other(host_ns: str) -> None:
    _add(host_ns, "legacy")
    assert rp.nat_rules(rp.save(host_ns, 4, "legacy")) == FACTS_SAVE
    assert rp.nat_rules(rp.save(host_ns, 4, "nft")) == []


def test_a_save_with_counters_reads_as_the_save_without(
    host_ns: str, iptables_mode: rp.Mode
) -> None:
    """`iptables-save -c` (how support bundles often take the dump) puts each rule's
    counters first; a --snapshot of it is the same node."""
    from portmapctl.iptables.ruleset import parse_save

    _add(host_ns, iptables_mode)
    # Traffic is not needed: a rule's counters are printed whatever they hold.
    tool = rp.tool_path("iptables-save", iptables_mode)
    counted = rp._run(
        [rp._ip(), "netns", "exec", host_ns, tool, "-c", "-t", "nat"], check=True
    ).stdout
    assert "\n[0:0] -A CNI-HOSTPORT-DNAT " in counted
    plain = rp.save(host_ns, 4, iptables_mode)
    assert parse_save(counted, 4, strict=True) == parse_save(plain, 4, strict=True)
    assert parse_save(counted, 4).chains[CHAIN].rules  # (the plugin's rules, read)


@pytest.mark.parametrize("name", sorted(CAPTURE.CASES))
def test_fixture_matches_the_plugin_today(host_ns: str, name: str) -> None:
    case = CAPTURE.CASES[name]
    stored = CAPTURE.load(name)

    v4, v6 = CAPTURE.run_case(case, host_ns)

    # If this fails after a plugin/iptables upgrade: python tests/fixtures/capture.py NAME
    assert rp.strip_save_comments(v4) == rp.strip_save_comments(stored["v4"])
    assert rp.strip_save_comments(v6) == rp.strip_save_comments(stored["v6"])
    assert json.loads(json.dumps(CAPTURE.describe(case))) == stored["conf"]


# --- without the kernel -------------------------------------------------------------------


def test_plugin_conf_is_the_facts_shape() -> None:
    conf = rp.plugin_conf(NETWORK, IPS, PORTS[:1])
    assert conf == {
        "cniVersion": "0.4.0",
        "name": "mynet",
        "type": "portmap",
        "runtimeConfig": {
            "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
        },
        "prevResult": {
            "cniVersion": "0.4.0",
            "interfaces": [{"name": "eth0", "sandbox": rp.SANDBOX}],
            "ips": [{"version": "4", "address": "10.88.0.5/16", "interface": 0}],
        },
    }
    options = rp.plugin_conf(
        NETWORK, ["fd00::5/64"], [], snat=False, mark_masq_bit=5,
        external_setmark_chain="X", conditions_v4=["-s", "1.2.3.4"],
        conditions_v6=["!", "-s", "fd00::1"], cni_version="1.0.0",
    )  # fmt: skip
    assert options["snat"] is False
    assert options["markMasqBit"] == 5
    assert options["externalSetMarkChain"] == "X"
    assert options["conditionsV4"] == ["-s", "1.2.3.4"]
    assert options["conditionsV6"] == ["!", "-s", "fd00::1"]
    # CNI 1.0 results carry no "version" in ips.
    assert options["prevResult"]["ips"] == [{"address": "fd00::5/64", "interface": 0}]


def test_bin_dir_points_at_one_flavour() -> None:
    for mode in ("nft", "legacy"):
        folder = Path(rp.bin_dir(mode))
        assert os.readlink(folder / "iptables") == f"/usr/sbin/iptables-{mode}"
        assert os.readlink(folder / "ip6tables-save") == f"/usr/sbin/ip6tables-{mode}-save"
        assert rp.bin_dir(mode) == str(folder)  # cached

    only4 = Path(rp.bin_dir("nft", 4))
    assert os.readlink(only4 / "iptables-restore") == "/usr/sbin/iptables-nft-restore"
    assert Path(os.readlink(only4 / "ip6tables")).name == "false"
    only6 = Path(rp.bin_dir("legacy", 6))
    assert os.readlink(only6 / "ip6tables") == "/usr/sbin/ip6tables-legacy"
    assert Path(os.readlink(only6 / "iptables-save")).name == "false"


def test_strip_save_comments() -> None:
    text = "# Generated by iptables-save v1.8.9\n*nat\n-A X -j Y\nCOMMIT\n# Completed on now\n"
    assert rp.strip_save_comments(text) == "*nat\n-A X -j Y\nCOMMIT\n"


def test_cni_cache_round_trips(tmp_path: Path) -> None:
    conf = rp.plugin_conf(
        NETWORK, ["10.88.0.5/16", "fd00::5/64"], PORTS, snat=False, mark_masq_bit=5,
        conditions_v4=["-s", "1.2.3.4"],
    )  # fmt: skip
    ports = [*PORTS, {"hostPort": 9000, "containerPort": 90, "protocol": "tcp",
                      "hostIP": "127.0.0.1"}]  # fmt: skip

    path = rp.write_cni_cache(
        tmp_path, NETWORK, CONTAINER, "eth0", conf, ports, ["10.88.0.5/16", "fd00::5/64"]
    )

    assert path == tmp_path / "results" / "mynet-abc123-eth0"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    cached = json.loads(path.read_text())
    assert list(cached) == [
        "kind", "containerId", "config", "ifName", "networkName", "netns",
        "capabilityArgs", "result",
    ]  # fmt: skip
    assert cached["kind"] == "cniCacheV1"
    assert cached["containerId"] == CONTAINER
    assert cached["ifName"] == "eth0"
    assert cached["networkName"] == NETWORK
    assert cached["capabilityArgs"] == {"portMappings": ports}
    assert [ip["address"] for ip in cached["result"]["ips"]] == ["10.88.0.5/16", "fd00::5/64"]

    conflist = json.loads(base64.b64decode(cached["config"]))
    assert conflist["name"] == NETWORK
    assert conflist["cniVersion"] == "0.4.0"
    bridge, portmap = conflist["plugins"]
    assert bridge["type"] == "bridge"
    assert portmap == {
        "type": "portmap",
        "capabilities": {"portMappings": True},
        "snat": False,
        "markMasqBit": 5,
        "conditionsV4": ["-s", "1.2.3.4"],
    }


def test_fixture_set_is_complete() -> None:
    names = {p.name[: -len(".conf.json")] for p in FIXTURES.glob("*.conf.json")}
    assert names == set(CAPTURE.CASES)
    for name in names:
        stored = CAPTURE.load(name)
        for family in ("v4", "v6"):
            text = stored[family]
            assert text.startswith("# Generated by ip"), (name, family)
            assert "\n*nat\n" in text and "\nCOMMIT\n" in text, (name, family)
