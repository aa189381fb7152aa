"""The `protocol` of a port mapping the plugin's ADD refuses: without one, with every
plugin and backend; in another case than tcp/udp/sctp, with the nftables backend
(v1.6.2, v1.7.1 and v1.9.1 write it as given into `nft -f`; iptables lower-cases it).
`add --cni-config` refuses exactly those, as the plugin would for the backend the
config selects; a cache entry holding one (a hand edit, a foreign runtime: no
successful ADD makes one) is reported once and given no rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import pmctl
import pytest
import realplugin as rp
import upstream

pytestmark = pytest.mark.netns

# (plugin, backend key): Debian's 1.1.1 has no nftables backend.
PLUGINS = [("debian", None)] + [
    (version, backend)
    for version in ("v1.6.2", "v1.7.1", "v1.9.1")
    for backend in (None, "nftables")
]
ENTRIES: Dict[str, Dict[str, Any]] = {
    "absent": {"hostPort": 8080, "containerPort": 80},
    "null": {"hostPort": 8080, "containerPort": 80, "protocol": None},
    "empty": {"hostPort": 8080, "containerPort": 80, "protocol": ""},
    "TCP": {"hostPort": 8080, "containerPort": 80, "protocol": "TCP"},
    "Udp": {"hostPort": 8080, "containerPort": 80, "protocol": "Udp"},
    "tcp": {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
}


@pytest.fixture(autouse=True)
def _upstream_binaries() -> None:
    rp.require(upstream.available())


@pytest.fixture
def twins() -> Iterator[tuple[str, str]]:
    names = (rp.create_netns("pmt-proto-p"), rp.create_netns("pmt-proto-m"))
    try:
        yield names
    finally:
        for name in names:
            rp.delete_netns(name)


def _conf(entry: Dict[str, Any], backend: Optional[str]) -> Dict[str, Any]:
    return upstream.nft_conf("podman", ["10.88.0.5/16"], [entry], backend=backend)


def _plugin_add(plugin: str, ns: str, conf: Dict[str, Any]) -> bool:
    if plugin == "debian":
        return rp.run_plugin("ADD", ns, "c1", conf).returncode == 0
    return upstream.run(plugin, "ADD", ns, "c1", conf).returncode == 0


def _written(ns: str) -> str:
    """What either backend holds of the plugin's (nothing, on a fresh namespace)."""
    tables = upstream.nft(ns, "list", "tables").stdout
    return "".join(line for line in rp.nat_rules(rp.save(ns, 4)) if "CNI-" in line) + (
        tables if "cni_hostport" in tables else ""
    )


@pytest.mark.parametrize("case", sorted(ENTRIES))
@pytest.mark.parametrize(("plugin", "backend"), PLUGINS)
def test_add_cni_config_refuses_what_the_plugins_add_refuses(
    twins: tuple[str, str], tmp_path: Path, plugin: str, backend: Optional[str], case: str
) -> None:
    plugin_ns, ours_ns = twins
    conf = _conf(ENTRIES[case], backend)
    accepted = _plugin_add(plugin, plugin_ns, conf)
    refused = case in ("absent", "null", "empty") or (backend == "nftables" and case != "tcp")
    assert accepted is not refused, (plugin, backend, case)
    path = tmp_path / "conf.json"
    path.write_text(json.dumps(conf))
    done = pmctl.run(["add", "--container", "c1", "--cni-config", str(path), "--netns", ours_ns])
    if refused:
        pmctl.assert_error(done, 2, str(path), "8080")
        assert _written(ours_ns) == ""
    else:
        assert done.returncode == 0, done.stderr
        assert _written(ours_ns) != ""


def test_a_cache_entry_the_plugin_would_have_refused_gets_no_rules(
    twins: tuple[str, str], tmp_path: Path
) -> None:
    """A cached mapping without a protocol, and one of "TCP" in a config that says
    nftables: no ADD of the plugin writes rules for them. check says so once per entry
    (as of any entry that cannot be read; the containers stay live), expects nothing of
    them and --repair writes nothing for them; list runs on."""
    ns = twins[1]
    for cid, ip, entry, backend in (("noproto", "10.88.0.6", ENTRIES["absent"], None),
                                    ("upper", "10.88.0.7", ENTRIES["TCP"], "nftables")):  # fmt: skip
        conf = upstream.nft_conf("podman", [f"{ip}/16"], [entry], backend=backend)
        rp.write_cni_cache(tmp_path, "podman", cid, "eth0", conf, [entry], [f"{ip}/16"])
    for args in (["check"], ["check", "--repair"], ["list"]):
        done = pmctl.run([*args, "-o", "json", "--netns", ns, "--cni-cache-dir", str(tmp_path)])
        assert done.returncode == 0, (args, done.stdout + done.stderr)
        if args[0] == "check":
            doc = json.loads(done.stdout)
            assert doc["problems"] == [] and doc.get("repaired") in (None, False), doc
        lines = done.stderr.splitlines()
        [noproto] = [line for line in lines if "podman-noproto-eth0" in line]
        [upper] = [line for line in lines if "podman-upper-eth0" in line]
        assert "no protocol" in noproto and "'TCP'" in upper, lines
    assert _written(ns) == ""


def test_a_keyless_config_where_there_is_no_iptables_is_refused_as_nftables(
    twins: tuple[str, str], tmp_path: Path
) -> None:
    """No iptables command, nft there: the plugin takes nftables for a config without
    the `backend` key, and fails on "TCP" there; add writes that config to nftables
    too (--backend auto), so it refuses it as the nftables backend's, not as iptables'."""
    import os
    import shutil
    import subprocess

    plugin_ns, ours_ns = twins
    nft_only = tmp_path / "bin"
    nft_only.mkdir()
    (nft_only / "nft").symlink_to(shutil.which("nft", path=rp.SYSTEM_PATH) or "/usr/sbin/nft")
    conf = _conf(ENTRIES["TCP"], None)
    env = {"PATH": str(nft_only), "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1",
           "CNI_NETNS": rp.container_netns(), "CNI_IFNAME": "eth0", "CNI_PATH": rp.CNI_PATH}  # fmt: skip
    added = subprocess.run(
        [rp._ip(), "netns", "exec", plugin_ns, str(upstream.binary("v1.9.1"))],
        input=json.dumps(conf), env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert added.returncode != 0 and _written(plugin_ns) == "", added.stdout + added.stderr
    path = tmp_path / "conf.json"
    path.write_text(json.dumps(conf))
    iptables = [p for p in ("/usr/sbin/iptables", "/usr/sbin/ip6tables") if os.path.exists(p)]
    done = pmctl.run(
        ["add", "--container", "c1", "--cni-config", str(path), "--netns", ours_ns],
        env={"PATH": str(nft_only)},
        hide=iptables,
    )
    pmctl.assert_error(done, 2, str(path), "8080", "nftables")
    assert _written(ours_ns) == ""


# --- spellings the plugin takes: an entry rule per spelling, a mapping nft never sees ---

MIXED = [
    {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
    {"hostPort": 8081, "containerPort": 81, "protocol": "TCP"},
    {"hostPort": 8082, "containerPort": 82, "protocol": "Tcp"},
    {"hostPort": 5353, "containerPort": 53, "protocol": "udp"},
]


def _plugin(plugin: str, command: str, ns: str, conf: Dict[str, Any]):
    if plugin == "debian":
        return rp.run_plugin(command, ns, "c1", conf)
    return upstream.run(plugin, command, ns, "c1", conf)


@pytest.mark.parametrize("plugin", ["debian", "v1.9.1"])
def test_each_spelling_of_a_protocol_gets_its_own_entry_rule_as_the_plugin_writes_it(
    twins: tuple[str, str], tmp_path: Path, plugin: str
) -> None:
    """The plugin groups its entry rules by the protocol as the config spells it
    (byte order: "TCP", "Tcp", "tcp", "udp"), and iptables lower-cases the word. add
    merged the spellings into one rule: the plugin's CHECK failed on add's rules, check
    called the plugin's own rules missing and extra, and --repair replaced them with
    the merged one (found by a differential review against the real plugins)."""
    plugin_ns, ours_ns = twins
    conf = upstream.nft_conf("podman", ["10.88.0.5/16"], MIXED, backend=None)
    assert _plugin(plugin, "ADD", plugin_ns, conf).returncode == 0
    theirs = [
        line for line in rp.nat_rules(rp.save(plugin_ns, 4)) if "CNI-HOSTPORT-DNAT -p" in line
    ]
    assert [line.split("--dports ")[1].split()[0] for line in theirs] == [
        "8081",
        "8082",
        "8080",
        "5353",
    ]
    path = tmp_path / "conf.json"
    path.write_text(json.dumps(conf))
    done = pmctl.run(["add", "--container", "c1", "--cni-config", str(path), "--netns", ours_ns])
    assert done.returncode == 0, done.stderr
    assert rp.nat_rules(rp.save(ours_ns, 4)) == rp.nat_rules(rp.save(plugin_ns, 4))
    if plugin == "debian":  # (it checks every family it can use: rp.run_check says why)
        [checked] = rp.run_check(ours_ns, "c1", conf)
    else:
        checked = upstream.run(plugin, "CHECK", ours_ns, "c1", conf)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The plugin's own rules, with its cache entry: healthy, and --repair leaves them.
    cache = tmp_path / "cache"
    rp.write_cni_cache(cache, "podman", "c1", "eth0", conf, MIXED, ["10.88.0.5/16"])
    before = rp.save(plugin_ns, 4)
    for args in (["check"], ["check", "--repair"]):
        done = pmctl.run([*args, "-o", "json", "--netns", plugin_ns, "--cni-cache-dir", str(cache)])
        assert done.returncode == 0, (args, done.stdout + done.stderr)
        assert json.loads(done.stdout)["problems"] == [], done.stdout
    assert rp.nat_rules(rp.save(plugin_ns, 4)) == rp.nat_rules(before)


def test_an_upper_case_protocol_the_nftables_backend_never_writes_is_taken(
    twins: tuple[str, str], tmp_path: Path
) -> None:
    """v1.9.1's nftables backend skips a mapping whose host IP is of a family the
    container has no address in, before nft sees its protocol: its ADD of "UDP" on
    ::1 for an IPv4-only container succeeds. add refused that config (exit 2), and
    its cache entry could not be read, so check called the container healthy unseen."""
    plugin_ns, ours_ns = twins
    ports = [MIXED[0], {"hostPort": 8081, "containerPort": 81, "protocol": "UDP", "hostIP": "::1"}]
    conf = upstream.nft_conf("podman", ["10.88.0.5/16"], ports, backend="nftables")
    added = upstream.run("v1.9.1", "ADD", plugin_ns, "c1", conf)
    assert added.returncode == 0, added.stdout + added.stderr
    path = tmp_path / "conf.json"
    path.write_text(json.dumps(conf))
    done = pmctl.run(["add", "--container", "c1", "--cni-config", str(path), "--netns", ours_ns])
    assert done.returncode == 0, done.stderr
    assert upstream.ruleset_text(ours_ns) == upstream.ruleset_text(plugin_ns)
    cache = tmp_path / "cache"
    rp.write_cni_cache(cache, "podman", "c1", "eth0", conf, ports, ["10.88.0.5/16"])
    upstream.nft(plugin_ns, "flush", "chain", "ip", "cni_hostport", "hostports")
    checked = pmctl.run(
        ["check", "-o", "json", "--netns", plugin_ns, "--cni-cache-dir", str(cache)]
    )
    assert checked.returncode == 1 and checked.stderr == "", checked.stdout + checked.stderr
    assert [p["kind"] for p in json.loads(checked.stdout)["problems"]] == ["nft-missing-rules"]
