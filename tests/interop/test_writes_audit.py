"""What `portmapctl add` writes against what the installed plugin's ADD writes, live:
the plugin in one fresh namespace, portmapctl (same stdin config) in another, saves
compared byte for byte, then the plugin's CHECK and DEL on portmapctl's result."""

from __future__ import annotations

import json
from typing import Iterator

import pytest
import realplugin as rp
from pmctl import ok

NETWORK = "wnet"
CONTAINER = "c0ffee1234"
DUAL = ["10.88.0.5/16", "fd00::5/64"]


@pytest.fixture
def twin_ns(host_ns: str) -> Iterator[str]:
    """A second fresh namespace, for portmapctl beside the plugin's `host_ns`."""
    name = rp.create_netns("pmt-twin")
    try:
        yield name
    finally:
        rp.delete_netns(name)


def _saves(ns: str, mode: rp.Mode) -> dict[int, str]:
    return {f: rp.strip_save_comments(rp.save(ns, f, mode)) for f in (4, 6)}


def _add(ns: str, mode: rp.Mode, conf: dict) -> None:
    args = ["add", "--netns", ns, "--iptables", mode, "--container", CONTAINER]
    ok([*args, "--cni-config", "-", "--no-flush-udp"], stdin=json.dumps(conf))


@pytest.mark.parametrize(
    "ports",
    [
        # One host port to two container ports, and the same port in udp.
        [rp.port_mapping(8080, 80), rp.port_mapping(8080, 81), rp.port_mapping(8080, 80, "udp")],
        # The same mapping twice; on a host IP.
        [rp.port_mapping(8080, 80), rp.port_mapping(8080, 80)],
        [
            rp.port_mapping(8080, 80, host_ip="127.0.0.1"),
            rp.port_mapping(8080, 81, host_ip="127.0.0.1"),
        ],
    ],
    ids=["two-targets", "twice", "host-ip"],
)
def test_duplicate_host_ports_are_written_once_as_the_plugin_does(
    host_ns: str, twin_ns: str, iptables_mode: rp.Mode, ports: list
) -> None:
    """The plugin adds a rule only if `iptables -C` does not find it: two mappings of one
    host port share their mark rules, written once (portmapctl wrote them twice)."""
    conf = rp.plugin_conf(NETWORK, DUAL, ports)
    rp.run_plugin("ADD", host_ns, CONTAINER, conf, mode=iptables_mode, check=True)
    _add(twin_ns, iptables_mode, conf)
    ours, theirs = _saves(twin_ns, iptables_mode), _saves(host_ns, iptables_mode)
    if iptables_mode == "legacy" and len({p["containerPort"] for p in ports}) > 1:
        # ip6tables-legacy's `-C` finds `DNAT [fd00::5]:81` when `:80` is there (it
        # ignores the target's address), so the plugin skips that rule, which could
        # never match anyway (first DNAT wins). portmapctl writes it: not compared.
        ours.pop(6), theirs.pop(6)
    assert ours == theirs
    for done in rp.run_check(twin_ns, CONTAINER, conf, mode=iptables_mode):
        assert done.returncode == 0, done.stdout + done.stderr
    rp.run_plugin("DEL", twin_ns, CONTAINER, conf, mode=iptables_mode, check=True)
    assert all("CNI-DN-" not in text for text in _saves(twin_ns, iptables_mode).values())
