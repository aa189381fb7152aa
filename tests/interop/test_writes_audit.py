"""What `portmapctl add` writes against what the installed plugin's ADD writes, live:
the plugin in one fresh namespace, portmapctl (same stdin config) in another, saves
compared byte for byte, then the plugin's CHECK and DEL on portmapctl's result."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Iterator

import pmctl
import pytest
import realplugin as rp
import upstream
from pmctl import ok
from realplugin import require

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


def _first_rule_handle(ns: str, family: str, container_id: str) -> str:
    """Handle of the first `hostports` rule commented `container_id`."""
    out = upstream.nft(ns, "-a", "list", "chain", family, "cni_hostport", "hostports").stdout
    for line in out.splitlines():
        if f'comment "{container_id}"' in line:
            return line.rsplit("# handle ", 1)[1]
    raise AssertionError(f"no rule of {container_id} in {family} hostports")


NFT_NODES = {
    # One container, one host port to two container ports: first match wins.
    "two-targets": [
        ("aaaa1111", [rp.port_mapping(8080, 80), rp.port_mapping(8080, 81)]),
    ],
    # A's lost 8080 goes back before its 9090, ahead of B's rules.
    "two-containers": [
        ("aaaa1111", [rp.port_mapping(8080, 80), rp.port_mapping(9090, 90, "udp")]),
        ("bbbb2222", [rp.port_mapping(7070, 70)]),
    ],
    # A's 8080 before B's 8080 (B added later, shadowed); A's rule lost: B has the
    # port's traffic now, and the repair leaves A out rather than take it from B
    # (ops/check/port_moves.py).
    "shadowing": [
        ("aaaa1111", [rp.port_mapping(8080, 80), rp.port_mapping(9090, 90, "udp")]),
        ("bbbb2222", [rp.port_mapping(8080, 88)]),
    ],
}


@pytest.mark.parametrize("node", list(NFT_NODES))
def test_nft_repair_puts_a_lost_rule_back_in_the_plugins_order(
    host_ns: str, twin_ns: str, tmp_path: Path, node: str
) -> None:
    """v1.9.1 (`"backend": "nftables"`) in both namespaces; in one, the first
    `hostports` rule of aaaa1111 is deleted and `check --repair` re-creates it. nftables
    is first-match-wins: appended (as before), 8080 went to port 81, or behind another
    container's rules. Where another container has that port's traffic now, the repair
    leaves the rule out (before: it took the port from bbbb2222)."""
    require(upstream.available())
    for n, (cid, ports) in enumerate(NFT_NODES[node]):
        ip = f"10.88.0.{5 + n}/16"
        conf = upstream.nft_conf(f"net{n}", [ip, f"fd00::{5 + n}/64"], ports)
        for ns in (host_ns, twin_ns):
            upstream.run("v1.9.1", "ADD", ns, cid, conf, check=True)
        rp.write_cni_cache(tmp_path, f"net{n}", cid, "eth0", conf, ports, [ip, f"fd00::{5 + n}/64"])
    for family in ("ip", "ip6"):
        handle = _first_rule_handle(twin_ns, family, "aaaa1111")
        upstream.nft(
            twin_ns, "delete", "rule", family, "cni_hostport", "hostports", "handle", handle
        )
    lost = upstream.ruleset_text(twin_ns)
    done = pmctl.run(["check", "--repair", "--netns", twin_ns, "--cni-cache-dir",
                      str(tmp_path), "--no-flush-udp"])  # fmt: skip
    if node == "shadowing":
        assert done.returncode == 1
        for family in (4, 6):
            assert (
                f"could not repair IPv{family} net0/aaaa1111 (hostports): its chain would take"
                " tcp/8080 from bbbb2222 (hostports)"
            ) in done.stderr
        assert upstream.ruleset_text(twin_ns) == lost
        return
    assert done.returncode == 0, done.stdout + done.stderr
    assert "repaired: IPv4 nft-missing-rules" in done.stdout + done.stderr, done.stderr
    assert upstream.ruleset_text(twin_ns) == upstream.ruleset_text(host_ns)


def test_repeated_iptables_conditions_all_apply(
    host_ns: str, twin_ns: str, iptables_mode: rp.Mode
) -> None:
    """`--conditions-v4 "-s 192.168.0.0/16" --conditions-v4 "! -i eth0"` is the config's
    `conditionsV4: ["-s", "192.168.0.0/16", "!", "-i", "eth0"]`; the last alone was
    kept, and the entry rules matched every source."""
    ports = [rp.port_mapping(8080, 80)]
    words = ["-s", "192.168.0.0/16", "!", "-i", "eth0"]
    conf = rp.plugin_conf(NETWORK, ["10.88.0.5/16"], ports, conditions_v4=words)
    rp.run_plugin("ADD", host_ns, CONTAINER, conf, mode=iptables_mode, check=True)
    ok(["add", "--netns", twin_ns, "--iptables", iptables_mode, "--container", CONTAINER,
        "--network", NETWORK, "--ip", "10.88.0.5/16", "-p", "8080:80", "--no-flush-udp",
        "--conditions-v4", "-s 192.168.0.0/16", "--conditions-v4", "! -i eth0"])  # fmt: skip
    assert _saves(twin_ns, iptables_mode) == _saves(host_ns, iptables_mode)


def test_repeated_nft_conditions_all_apply(host_ns: str, twin_ns: str) -> None:
    """The same with `--backend nftables` and nft conditions (parsed by the fast path),
    against v1.9.1 with `conditionsV4: ["ip saddr != 192.168.0.0/16", "iifname \\"eth0\\""]`."""
    require(upstream.available())
    conditions = ["ip saddr != 192.168.0.0/16", 'iifname "eth0"']
    ports = [rp.port_mapping(8080, 80)]
    conf = upstream.nft_conf(NETWORK, ["10.88.0.5/16"], ports, conditions_v4=conditions)
    upstream.run("v1.9.1", "ADD", host_ns, CONTAINER, conf, check=True)
    ok(["add", "--netns", twin_ns, "--backend", "nftables", "--container", CONTAINER,
        "--network", NETWORK, "--ip", "10.88.0.5/16", "-p", "8080:80", "--no-flush-udp",
        "--conditions-v4", conditions[0], "--conditions-v4", conditions[1]])  # fmt: skip
    assert upstream.ruleset_text(twin_ns) == upstream.ruleset_text(host_ns)


def test_check_calls_the_plugins_duplicate_host_ports_healthy(host_ns: str, tmp_path: Path) -> None:
    """The plugin's own state for 8080->80 and 8080->81 has the mark rules once: check
    said `rules-order` (it expected them twice) and --repair would rewrite the chain."""
    ports = [rp.port_mapping(8080, 80), rp.port_mapping(8080, 81)]
    conf = rp.plugin_conf(NETWORK, DUAL, ports)
    rp.run_plugin("ADD", host_ns, CONTAINER, conf, mode="nft", check=True)
    rp.write_cni_cache(tmp_path, NETWORK, CONTAINER, "eth0", conf, ports, DUAL)
    done = pmctl.run(["check", "--netns", host_ns, "--iptables", "nft", "--cni-cache-dir",
                      str(tmp_path)])  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("healthy"), done.stdout


@pytest.mark.parametrize(
    "ips", [["::ffff:10.88.0.5/112"], ["::ffff:10.88.0.5/64", "fd00::5/64"]], ids=["/112", "dual"]
)
def test_ipv4_mapped_container_address_is_ipv4(
    host_ns: str, twin_ns: str, iptables_mode: rp.Mode, tmp_path: Path, ips: list
) -> None:
    """prevResult's ::ffff:10.88.0.5 is the container's IPv4 address to the plugin (Go's
    To4; /64 gives `-s 0.0.0.0/0`, no -s): IPv4 rules to 10.88.0.5. portmapctl wrote
    ip6tables rules to [::ffff:a58:5] instead, and the node check called the plugin's
    own chain missing in IPv6 (its --repair wrote those rules)."""
    ports = [rp.port_mapping(8080, 80), rp.port_mapping(5353, 53, "udp")]
    conf = rp.plugin_conf(NETWORK, ips, ports)
    rp.run_plugin("ADD", host_ns, CONTAINER, conf, mode=iptables_mode, check=True)
    _add(twin_ns, iptables_mode, conf)
    assert _saves(twin_ns, iptables_mode) == _saves(host_ns, iptables_mode)
    if len(ips) == 1:  # (Debian's CHECK fails any dual-stack container: run_check)
        done = rp.run_plugin("CHECK", twin_ns, CONTAINER, conf, mode=iptables_mode, family=4)
        assert done.returncode == 0, done.stdout + done.stderr
    rp.write_cni_cache(tmp_path, NETWORK, CONTAINER, "eth0", conf, ports, ips)
    done = pmctl.run(["check", "--netns", host_ns, "--iptables", iptables_mode,
                      "--cni-cache-dir", str(tmp_path)])  # fmt: skip
    assert done.returncode == 0 and done.stdout.startswith("healthy"), done.stdout


def test_ipv4_mapped_container_address_in_nftables(host_ns: str, twin_ns: str) -> None:
    """The same for v1.9.1's nftables backend: `dnat ip to 10.88.0.5:80` in table ip."""
    require(upstream.available())
    ips = ["::ffff:10.88.0.5/112", "fd00::5/64"]
    conf = upstream.nft_conf(NETWORK, ips, [rp.port_mapping(8080, 80)])
    upstream.run("v1.9.1", "ADD", host_ns, CONTAINER, conf, check=True)
    _add(twin_ns, "nft", conf)
    assert upstream.ruleset_text(twin_ns) == upstream.ruleset_text(host_ns)
    upstream.run("v1.9.1", "CHECK", twin_ns, CONTAINER, conf, check=True)


def test_ipv4_mapped_host_ip_is_an_ipv4_rule(host_ns: str, twin_ns: str) -> None:
    """hostIP `::ffff:127.0.0.1` is IPv4 to the plugin (Go's To4): `-d 127.0.0.1` in
    iptables, nothing in ip6tables. portmapctl wrote `-d ::ffff:127.0.0.1/128` IPv6
    rules instead, which the plugin's CHECK refused."""
    ports = [rp.port_mapping(8080, 80, host_ip="::ffff:127.0.0.1")]
    conf = rp.plugin_conf(NETWORK, DUAL, ports)
    rp.run_plugin("ADD", host_ns, CONTAINER, conf, mode="nft", check=True)
    _add(twin_ns, "nft", conf)
    assert _saves(twin_ns, "nft") == _saves(host_ns, "nft")
    for done in rp.run_check(twin_ns, CONTAINER, conf, mode="nft"):
        assert done.returncode == 0, done.stdout + done.stderr


def test_a_lost_empty_chain_is_named_and_repaired_as_the_plugin_made_it(
    host_ns: str, iptables_mode: rp.Mode, tmp_path: Path
) -> None:
    """A dual-stack container published on 0.0.0.0 only: the plugin's IPv6 chain is
    empty, its entry rule names the port. With IPv6's nat table flushed, check said
    `chain missing for ` (nothing after it); --repair makes the plugin's state again."""
    ports = [rp.port_mapping(8086, 80, host_ip="0.0.0.0")]
    conf = rp.plugin_conf(NETWORK, DUAL, ports)
    rp.run_plugin("ADD", host_ns, CONTAINER, conf, mode=iptables_mode, check=True)
    rp.write_cni_cache(tmp_path, NETWORK, CONTAINER, "eth0", conf, ports, DUAL)
    plugins = _saves(host_ns, iptables_mode)
    for flag in ("-F", "-X"):
        rp.iptables(host_ns, ["-t", "nat", flag], family=6, mode=iptables_mode)
    args = ["check", "--netns", host_ns, "--iptables", iptables_mode, "--cni-cache-dir",
            str(tmp_path), "--no-flush-udp"]  # fmt: skip
    done = pmctl.run([*args, "-o", "json"])
    assert done.returncode == 1, done.stderr
    (lost,) = [p for p in json.loads(done.stdout)["problems"] if p["kind"] == "missing-chain"]
    assert (lost["family"], lost["container_id"]) == (6, CONTAINER)
    assert lost["detail"] == "chain missing (empty as the plugin makes it: every host IP is IPv4)"
    ok([*args, "--repair"])
    assert _saves(host_ns, iptables_mode) == plugins


# The plugin's options as Go's encoding/json fills PortMapConf: a key matches its field
# in any case, and of two spellings the later one wins.
SPELT_OTHERWISE = {
    "SNAT": {"SNAT": False},
    # (In this order both ways agree: the stdin's later spelling, and the one sorted
    # last, by which the cache is read:
    # test_a_cached_option_in_two_spellings_is_read_as_libcni_handed_it_to_the_plugin.)
    "SNAT-then-snat": {"SNAT": True, "snat": False},
    "MarkMasqBit": {"MarkMasqBit": 5},
    "ConditionsV4": {"ConditionsV4": ["-s", "192.168.0.0/16"]},
}


@pytest.mark.parametrize("options", list(SPELT_OTHERWISE.values()), ids=list(SPELT_OTHERWISE))
def test_options_spelt_in_another_case_are_the_plugins(
    host_ns: str, twin_ns: str, iptables_mode: rp.Mode, tmp_path: Path, options: dict
) -> None:
    """`"SNAT": false` is `snat: false` to the plugin (Go matches JSON keys to its fields
    without regard to case). portmapctl read only the exact spelling: add wrote the mark
    rules the plugin leaves out, and check called the plugin's own chain short of them
    (--repair would have added them)."""
    ports = [rp.port_mapping(8080, 80), rp.port_mapping(5353, 53, "udp")]
    conf = {**rp.plugin_conf(NETWORK, DUAL, ports), **options}
    rp.run_plugin("ADD", host_ns, CONTAINER, conf, mode=iptables_mode, check=True)
    _add(twin_ns, iptables_mode, conf)
    assert _saves(twin_ns, iptables_mode) == _saves(host_ns, iptables_mode)
    rp.write_cni_cache(tmp_path, NETWORK, CONTAINER, "eth0", conf, ports, DUAL)
    done = pmctl.run(["check", "--netns", host_ns, "--iptables", iptables_mode,
                      "--cni-cache-dir", str(tmp_path)])  # fmt: skip
    assert done.returncode == 0 and done.stdout.startswith("healthy"), done.stdout


def _respelt(path: Path, respell: dict) -> None:
    """The cache entry at `path` with its portmap entry's keys renamed (`respell`)."""
    document = json.loads(path.read_text())
    conflist = json.loads(base64.b64decode(document["config"]))
    portmap = conflist["plugins"][-1]
    conflist["plugins"][-1] = {respell.get(key, key): value for key, value in portmap.items()}
    document["config"] = base64.b64encode(json.dumps(conflist).encode()).decode()
    path.write_text(json.dumps(document))


@pytest.mark.parametrize(
    "respell", [{"type": "Type"}, {"type": "TYPE", "capabilities": "Capabilities"}]
)
def test_a_cached_portmap_entry_whose_type_is_spelt_otherwise_is_the_plugins(
    host_ns: str, iptables_mode: rp.Mode, tmp_path: Path, respell: dict
) -> None:
    """libcni reads a plugin's `type` and `capabilities` into types.NetConf, in any case:
    `"Type": "portmap"` runs the plugin, which maps the ports. portmapctl took the entry
    for no portmap: after a flush, check called the node healthy, repaired nothing."""
    ports = [rp.port_mapping(8080, 80), rp.port_mapping(5353, 53, "udp")]
    conf = rp.plugin_conf(NETWORK, DUAL, ports)
    rp.run_plugin("ADD", host_ns, CONTAINER, conf, mode=iptables_mode, check=True)
    plugins = _saves(host_ns, iptables_mode)
    _respelt(rp.write_cni_cache(tmp_path, NETWORK, CONTAINER, "eth0", conf, ports, DUAL), respell)
    for family in (4, 6):
        for flag in ("-F", "-X"):
            rp.iptables(host_ns, ["-t", "nat", flag], family=family, mode=iptables_mode)
    args = ["check", "--netns", host_ns, "--iptables", iptables_mode, "--cni-cache-dir",
            str(tmp_path), "--no-flush-udp"]  # fmt: skip
    done = pmctl.run([*args, "-o", "json"])
    assert done.returncode == 1, done.stdout + done.stderr
    lost = {(p["kind"], p["family"]) for p in json.loads(done.stdout)["problems"]}
    assert {("missing-chain", 4), ("missing-chain", 6)} <= lost, lost
    ok([*args, "--repair"])
    assert _saves(host_ns, iptables_mode) == plugins


@pytest.mark.parametrize(
    "options",
    [{"MasqAll": True}, {"Backend": "nftables"}, {"backend": "nftables", "Snat": False}],
    ids=["MasqAll", "Backend", "nft-Snat"],
)
def test_upstream_options_spelt_in_another_case_are_the_plugins(
    host_ns: str, twin_ns: str, tmp_path: Path, options: dict
) -> None:
    """The same for v1.9.1's own keys: `MasqAll`, and `Backend` (nftables chosen: add
    wrote iptables chains, and check looked for the container there)."""
    require(upstream.available())
    ports = [rp.port_mapping(8080, 80)]
    conf = {**rp.plugin_conf(NETWORK, DUAL, ports), **options}
    upstream.run("v1.9.1", "ADD", host_ns, CONTAINER, conf, check=True)
    _add(twin_ns, "nft", conf)
    assert _saves(twin_ns, "nft") == _saves(host_ns, "nft")
    assert upstream.ruleset_text(twin_ns) == upstream.ruleset_text(host_ns)
    rp.write_cni_cache(tmp_path, NETWORK, CONTAINER, "eth0", conf, ports, DUAL)
    done = pmctl.run(["check", "--netns", host_ns, "--iptables", "nft",
                      "--cni-cache-dir", str(tmp_path)])  # fmt: skip
    assert done.returncode == 0 and done.stdout.startswith("healthy"), done.stdout


def test_nft_conditions_with_an_anonymous_set_are_written_as_the_plugin_writes_them(
    host_ns: str, twin_ns: str, tmp_path: Path
) -> None:
    """`conditionsV4: ["ip saddr { 10.0.0.0/8, 192.168.0.0/16 }"]` (several sources in
    the plugin's one entry rule): v1.9.1 writes it. add refused it as "not a plain nft
    match", and check --repair of a node whose last ADD had it refused the whole node
    (exit 2, nothing re-made) once the tables were flushed."""
    require(upstream.available())
    plain = upstream.nft_conf("net1", ["10.89.0.5/16"], [rp.port_mapping(8081, 81)])
    sets = upstream.nft_conf(
        NETWORK, ["10.88.0.5/16"], [rp.port_mapping(8080, 80)],
        conditions_v4=["ip saddr { 192.168.0.0/16, 10.0.0.0/8 }"],
    )  # fmt: skip
    for cid, conf in (("c1", plain), (CONTAINER, sets)):
        upstream.run("v1.9.1", "ADD", host_ns, cid, conf, check=True)
        _add_as(twin_ns, cid, conf)
        ips = [ip["address"] for ip in conf["prevResult"]["ips"]]
        ports = conf["runtimeConfig"]["portMappings"]
        rp.write_cni_cache(tmp_path, conf["name"], cid, "eth0", conf, ports, ips)
    theirs = upstream.ruleset_text(host_ns)
    assert upstream.ruleset_text(twin_ns) == theirs
    upstream.run("v1.9.1", "CHECK", twin_ns, CONTAINER, sets, check=True)
    upstream.nft(twin_ns, "flush", "table", "ip", "cni_hostport")
    ok(["check", "--repair", "--netns", twin_ns, "--cni-cache-dir", str(tmp_path),
        "--no-flush-udp"])  # fmt: skip
    assert upstream.ruleset_text(twin_ns) == theirs


def _add_as(ns: str, container_id: str, conf: dict) -> None:
    args = ["add", "--netns", ns, "--container", container_id, "--cni-config", "-"]
    ok([*args, "--no-flush-udp"], stdin=json.dumps(conf))


def test_nft_conditions_with_an_interface_wildcard_are_written_as_the_plugin_writes_them(
    host_ns: str, twin_ns: str
) -> None:
    """`iifname != "veth*"` (nft's wildcard, quoted): add refused it as "not a plain nft
    match" while check --repair wrote it."""
    require(upstream.available())
    conf = upstream.nft_conf(
        NETWORK, ["10.88.0.5/16", "fd00::5/64"], [rp.port_mapping(8080, 80)],
        conditions_v4=['iifname != "veth*"'], conditions_v6=['iifname { "eth*", "ens3" }'],
    )  # fmt: skip
    upstream.run("v1.9.1", "ADD", host_ns, CONTAINER, conf, check=True)
    _add_as(twin_ns, CONTAINER, conf)
    assert upstream.ruleset_text(twin_ns) == upstream.ruleset_text(host_ns)


def test_conditions_with_address_lists_make_a_rule_per_address_as_iptables_does(
    host_ns: str, twin_ns: str, iptables_mode: rp.Mode, tmp_path: Path
) -> None:
    """`conditionsV4: ["-s", "10.0.0.0/8,192.168.0.0/16"]`: iptables makes one entry
    rule per address (every source with every destination, sources first), and the
    plugin's ADD leaves them so. add refused the list ("invalid address"), check could
    not read the cache entry (so it called a flushed table healthy) and --repair
    re-made nothing of the container."""
    ports = [rp.port_mapping(8080, 80), rp.port_mapping(5353, 53, "udp")]
    conf = rp.plugin_conf(
        NETWORK, DUAL, ports,
        conditions_v4=["-s", "10.0.0.0/8,192.168.0.0/16", "-d", "192.0.2.1,192.0.2.2"],
        conditions_v6=["--destination", "fd00::1,fd00::2"],
    )  # fmt: skip
    rp.run_plugin("ADD", host_ns, CONTAINER, conf, mode=iptables_mode, check=True)
    theirs = _saves(host_ns, iptables_mode)
    _add(twin_ns, iptables_mode, conf)
    assert _saves(twin_ns, iptables_mode) == theirs
    rp.write_cni_cache(tmp_path, NETWORK, CONTAINER, "eth0", conf, ports, DUAL)
    args = ["check", "--netns", host_ns, "--iptables", iptables_mode, "--cni-cache-dir",
            str(tmp_path), "--no-flush-udp"]  # fmt: skip
    done = pmctl.run(args)
    assert done.returncode == 0 and done.stdout.startswith("healthy"), done.stdout
    assert "cannot be read" not in done.stderr, done.stderr
    for family in (4, 6):
        for flag in ("-F", "-X"):
            rp.iptables(host_ns, ["-t", "nat", flag], family=family, mode=iptables_mode)
    assert pmctl.run(args).returncode == 1
    ok([*args, "--repair"])
    assert _saves(host_ns, iptables_mode) == theirs


def test_a_cached_option_in_two_spellings_is_read_as_libcni_handed_it_to_the_plugin(
    host_ns: str, tmp_path: Path
) -> None:
    """libcni hands each plugin its entry re-marshalled from a Go map (InjectConf), keys
    sorted, while its cache keeps the conflist's bytes as written: of `"snat": false,
    "SNAT": true` the plugin read `snat` last (false); the cache reader took the later
    spelling of the file (true) and called the plugin's own chain short of mark rules."""
    ports = [rp.port_mapping(8080, 80)]
    conf = {**rp.plugin_conf(NETWORK, DUAL, ports), "snat": False, "SNAT": True}
    as_libcni = json.loads(json.dumps(conf, sort_keys=True))
    rp.run_plugin("ADD", host_ns, CONTAINER, as_libcni, mode="nft", check=True)
    assert "CNI-HOSTPORT-SETMARK" not in _saves(host_ns, "nft")[4]
    rp.write_cni_cache(tmp_path, NETWORK, CONTAINER, "eth0", conf, ports, DUAL)
    done = pmctl.run(["check", "--netns", host_ns, "--iptables", "nft",
                      "--cni-cache-dir", str(tmp_path)])  # fmt: skip
    assert done.returncode == 0 and done.stdout.startswith("healthy"), done.stdout


def test_a_cached_whole_number_written_as_a_float_is_the_plugins_int(
    host_ns: str, tmp_path: Path
) -> None:
    """`"markMasqBit": 5.0` in a conflist reaches the plugin as 5: libcni decodes the
    entry into a Go map (a float64) and marshals it again (`5`). The cache keeps the
    file's `5.0`, which the cache reader refused (an unreadable entry: a flushed table
    was called healthy, nothing repaired)."""
    ports = [rp.port_mapping(8080, 80)]
    conf = {**rp.plugin_conf(NETWORK, DUAL, ports), "markMasqBit": 5.0}
    as_libcni = {**conf, "markMasqBit": 5}
    rp.run_plugin("ADD", host_ns, CONTAINER, as_libcni, mode="nft", check=True)
    theirs = _saves(host_ns, "nft")
    rp.write_cni_cache(tmp_path, NETWORK, CONTAINER, "eth0", conf, ports, DUAL)
    args = ["check", "--netns", host_ns, "--iptables", "nft", "--cni-cache-dir",
            str(tmp_path), "--no-flush-udp"]  # fmt: skip
    done = pmctl.run(args)
    assert done.returncode == 0 and "cannot be read" not in done.stderr, done.stderr
    for family in (4, 6):
        rp.iptables(host_ns, ["-t", "nat", "-F"], family=family)
    ok([*args, "--repair"])
    assert _saves(host_ns, "nft") == theirs
