"""Properties over generated port-mapping configurations (hypothesis).

Pure, many examples: the rules the model generates are in normal form (normalizing
again changes nothing), and a dump holding them parses back to exactly them:
parser(normal form of X) == X.

Against the kernel, few examples (one namespace per test, reset to the original
table before each example): `add` then reading the kernel gives back exactly the
generated rules (the kernel prints our normal form); `add` then `list` round-trips
the configuration; `add` twice changes nothing the second time; `add` then
`gc --all` restores the original ruleset byte for byte (the original holds the
shared CNI-HOSTPORT-* chains and foreign rules: gc never removes shared chains).
"""

from __future__ import annotations

import ipaddress
import subprocess
from typing import Dict

import pytest
import realplugin as rp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portmapctl.core.mapping import DEFAULT_MARK_BIT, MappingConfig, PortMapping
from portmapctl.iptables import inventory
from portmapctl.iptables.chains import dnat_chain_name, wanted_chains
from portmapctl.iptables.normal_form import normalize
from portmapctl.iptables.ruleset import format_rule, parse_save
from portmapctl.ops.add import add
from portmapctl.ops.gc import GcOptions, Sources, gc
from portmapctl.ops.node import NodeOptions, opened

# --- strategies --------------------------------------------------------------------------

cni_names = st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,20}", fullmatch=True)


@st.composite
def port_mappings(draw, families=(4, 6)):
    count = draw(st.integers(1, 5))
    protocols = draw(st.lists(st.sampled_from(["tcp", "udp", "sctp"]), min_size=count,
                              max_size=count))  # fmt: skip
    host_ports = draw(st.lists(st.integers(1, 65535), min_size=count, max_size=count,
                               unique=True))  # fmt: skip
    host_ips = ["", "0.0.0.0", "127.0.0.1", "192.0.2.1"] + (["::", "::1", "2001:db8::1"]
                                                             if 6 in families else [])  # fmt: skip
    return tuple(
        PortMapping(
            host_port=port,
            container_port=draw(st.integers(1, 65535)),
            protocol=proto,
            host_ip=draw(st.sampled_from(host_ips)),
        )
        for port, proto in zip(host_ports, protocols)
    )


@st.composite
def configs(draw, mark_bits=st.integers(0, 31)):
    v4 = ipaddress.ip_interface(f"10.{draw(st.integers(0, 255))}.{draw(st.integers(0, 255))}."
                                f"{draw(st.integers(1, 254))}/{draw(st.integers(8, 30))}")  # fmt: skip
    addresses = [v4]
    if draw(st.booleans()):
        addresses.append(
            ipaddress.ip_interface(
                f"fd00::{draw(st.integers(1, 0xFFFF)):x}/{draw(st.integers(48, 127))}"
            )
        )
    return MappingConfig(
        network=draw(cni_names),
        container_id=draw(cni_names),
        addresses=tuple(addresses),
        ports=draw(port_mappings(families=tuple(a.version for a in addresses))),
        snat=draw(st.booleans()),
        mark_bit=draw(mark_bits),
        masq_all=draw(st.booleans()),
    )


# --- pure ------------------------------------------------------------------------------


@settings(max_examples=200)
@given(configs())
def test_generated_rules_are_in_normal_form_and_parse_back(config):
    for family in config.families:
        chains = wanted_chains(config, family)
        lines = ["*nat", ":PREROUTING ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
                 ":POSTROUTING ACCEPT [0:0]"]  # fmt: skip
        lines += [f":{chain.name} - [0:0]" for chain in chains]
        expected: Dict[str, list] = {}
        for chain in chains:
            for rule in chain.rules:
                assert normalize(rule, family) == rule
                lines.append(format_rule("-A", chain.name, rule))
                expected.setdefault(chain.name, []).append(rule)
            for entry_chain in chain.entry_chains:
                for rule in chain.entry_rules:
                    assert normalize(rule, family) == rule
                    lines.append(format_rule("-A", entry_chain, rule))
                    expected.setdefault(entry_chain, []).append(rule)
        parsed = parse_save("\n".join([*lines, "COMMIT", ""]), family)
        for name, rules in expected.items():
            assert list(parsed.rules(name)) == rules


# --- against the kernel ------------------------------------------------------------------


def _save(ns: str, family: int, mode: str) -> str:
    return rp.strip_save_comments(rp.save(ns, family, mode))


def _restore(ns: str, family: int, mode: str, text: str) -> None:
    """Replace the nat table wholesale with `text` (a reset between examples)."""
    tool = rp.tool_path("ip6tables-restore" if family == 6 else "iptables-restore", mode)
    subprocess.run(["ip", "netns", "exec", ns, tool, "-T", "nat"], input=text, text=True,
                   check=True, capture_output=True)  # fmt: skip


@pytest.fixture
def original(host_ns, iptables_mode):
    """The node before each example: the shared chains (a plugin ADD then DEL leaves
    them, with the default mark bit) and foreign rules, no per-container chain."""
    conf = rp.plugin_conf("seed", ["10.99.0.2/16", "fd99::2/64"],
                          [{"hostPort": 1, "containerPort": 1, "protocol": "tcp"}])  # fmt: skip
    rp.run_plugin("ADD", host_ns, "seed", conf, mode=iptables_mode, check=True)
    rp.run_plugin("DEL", host_ns, "seed", conf, mode=iptables_mode, check=True)
    for family in (4, 6):
        rp.iptables(host_ns, ["-t", "nat", "-A", "POSTROUTING", "-p", "udp", "-j", "RETURN"],
                    family=family, mode=iptables_mode)  # fmt: skip
    saved = {f: _save(host_ns, f, iptables_mode) for f in (4, 6)}
    assert "CNI-HOSTPORT-MASQ" in saved[4] and "CNI-DN-" not in saved[4]
    return host_ns, iptables_mode, saved


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(config=configs(mark_bits=st.just(DEFAULT_MARK_BIT)))
def test_add_list_idempotence_and_gc_all_against_the_kernel(original, tmp_path, config):
    ns, mode, saved = original
    for family in (4, 6):
        _restore(ns, family, mode, saved[family])
    options = NodeOptions(iptables=mode, netns=ns, cache_dirs=(str(tmp_path / "no-cache"),))
    with opened(options, write=True) as node:
        first = add(node, config, flush_udp=False)
        assert first.changed
        tables = node.read()
        # The kernel prints exactly the rules we generated (our normal form is its form).
        for family in config.families:
            for chain in wanted_chains(config, family):
                live = tables[family].rules(chain.name)
                if chain.shared:
                    assert set(chain.rules) <= set(live)
                else:
                    assert live == chain.rules
                for entry_chain in chain.entry_chains:
                    assert set(chain.entry_rules) <= set(tables[family].rules(entry_chain))
        # list round-trips the configuration.
        rows = [m for m in inventory.build(tables).mappings if m.chain == dnat_chain_name(config)]
        listed = sorted(
            (m.family, m.protocol, m.host_ip or "", m.host_port, m.container_ip,
             m.container_port, m.snat)
            for m in rows
        )  # fmt: skip
        expected = sorted(
            (family, p.protocol, p.host_ip_for_rule() or "", p.host_port,
             config.address(family).ip.compressed, p.container_port, config.snat)
            for family in config.families
            for p in config.ports
            if p.applies_to(family)
        )  # fmt: skip
        assert listed == expected
        assert all(m.network == config.network and m.container_id == config.container_id
                   for m in rows if m.container_id is not None)  # fmt: skip
        # A second add changes nothing.
        again = add(node, config, flush_udp=False)
        assert not again.changed and again.transactions == {}
        assert node.read() == tables
        # gc --all takes the node back to where it was, byte for byte.
        gc(node, Sources(remove_all=True),
           GcOptions(min_age=0, flush_udp=False, state_dir=str(tmp_path / "run")))  # fmt: skip
    for family in (4, 6):
        assert _save(ns, family, mode) == saved[family]


def test_masq_all_mappings_list_as_snat():
    """Found by the property above: with masqAll the hairpin rule has no -s (0.0.0.0/0
    is not printed), and list took such a mapping for one without SNAT."""
    config = MappingConfig(
        "mynet",
        "abc123",
        (ipaddress.ip_interface("10.88.0.5/16"),),
        (PortMapping(8080, 80),),
        masq_all=True,
    )
    [dnat] = [c for c in wanted_chains(config, 4) if not c.shared]
    lines = ["*nat", ":CNI-HOSTPORT-DNAT - [0:0]", f":{dnat.name} - [0:0]"]
    lines += [format_rule("-A", dnat.name, rule) for rule in dnat.rules]
    lines += [format_rule("-A", "CNI-HOSTPORT-DNAT", rule) for rule in dnat.entry_rules]
    table = parse_save("\n".join([*lines, "COMMIT", ""]), 4)
    assert all("-s" not in rule for rule in dnat.rules)
    [row] = inventory.build({4: table}).mappings
    assert row.snat is True
    no_snat = MappingConfig(config.network, config.container_id, config.addresses,
                            config.ports, snat=False)  # fmt: skip
    [plain] = [c for c in wanted_chains(no_snat, 4) if not c.shared]
    lines = ["*nat", f":{plain.name} - [0:0]"]
    lines += [format_rule("-A", plain.name, rule) for rule in plain.rules]
    [row] = inventory.build({4: parse_save("\n".join([*lines, "COMMIT", ""]), 4)}).mappings
    assert row.snat is False


# --- scope: what a plan may touch ----------------------------------------------------------


def _touches_only_ours(txn, live) -> bool:
    """Every step is in a CNI-HOSTPORT-/CNI-DN-/CNI-SN- chain, or is a rule jumping to
    one; or it is the count guard's delete by number in another chain (planner.
    _count_guard), right after the guard's jump was appended there, of the position
    that jump takes when the chain holds the rules read: what it deletes when the
    transaction commits is that jump (else the transaction fails whole)."""
    from portmapctl.iptables.planner import GUARD_CHAIN
    from portmapctl.iptables.ruleset import rule_target

    previous = None
    for op in txn.ops:
        guarded = (
            op.kind == "delete-number"
            and previous is not None
            and previous.kind == "append"
            and previous.chain == op.chain
            and rule_target(previous.args) == GUARD_CHAIN
            and op.args == (str(len(live.rules(op.chain)) + 1),)
        )
        previous = op
        if guarded or op.chain.startswith(("CNI-HOSTPORT-", "CNI-DN-", "CNI-SN-")):
            continue
        target = rule_target(op.args) or ""
        if op.kind in ("append", "insert", "delete") and target.startswith("CNI-"):
            continue
        return False
    return True


@settings(max_examples=100)
@given(configs(), st.sampled_from(["foreign", "three-containers", "legacy-sn", "basic"]))
def test_setup_and_teardown_touch_only_cni_chains_and_jumps_to_them(config, fixture):
    from fixtures_lib import table

    from portmapctl.iptables.planner import plan_setup, plan_teardown
    from portmapctl.iptables.plugin_rules import per_container_chains

    for family in config.families:
        live = table(fixture, family)
        assert _touches_only_ours(plan_setup(wanted_chains(config, family), live), live)
        assert _touches_only_ours(plan_teardown(live, per_container_chains(live)), live)


# --- every command twice is every command once --------------------------------------------


def test_every_changing_command_run_twice_leaves_what_once_did(host_ns, tmp_path):
    """add, check --repair, gc and flush-udp on a node with work for each: the first
    run changes the node, the second finds nothing to do and leaves it as it was."""
    from pmctl import run

    cache = tmp_path / "cni"
    # The flows below go to one of the node's own addresses (gc and flush-udp never
    # touch forwarded flows).
    subprocess.run(["ip", "-n", host_ns, "addr", "add", "10.0.0.1/32", "dev", "lo"], check=True)
    for cid, ip, port in (("live1", "10.88.0.11/16", 5353), ("stale1", "10.88.0.12/16", 6000)):
        ports = [{"hostPort": port, "containerPort": 53, "protocol": "udp"}]
        conf = rp.plugin_conf("mynet", [ip], ports)
        rp.run_plugin("ADD", host_ns, cid, conf, check=True)
        if cid == "live1":
            rp.write_cni_cache(cache, "mynet", cid, "eth0", conf, ports, [ip])
        subprocess.run(["ip", "netns", "exec", host_ns, "conntrack", "-I", "-p", "udp", "-s",
                        "192.0.2.7", "-d", "10.0.0.1", "--sport", "40000", "--dport", str(port),
                        "--reply-src", ip.split("/")[0], "--reply-dst", "192.0.2.7",
                        "--reply-port-src", "53", "--reply-port-dst", "40000", "-t", "300"],
                       check=True, capture_output=True)  # fmt: skip
    rp.iptables(host_ns, ["-t", "nat", "-F", "CNI-HOSTPORT-MASQ"])  # work for repair

    def state() -> tuple:
        udp = subprocess.run(["ip", "netns", "exec", host_ns, "conntrack", "-L", "-p", "udp"],
                             capture_output=True, text=True).stdout  # fmt: skip
        dports = sorted(w for line in udp.splitlines() for w in line.split()[3:8] if "dport" in w)
        return _save(host_ns, 4, "nft"), _save(host_ns, 6, "nft"), dports

    common = ["--netns", host_ns, "--iptables", "nft", "--cni-cache-dir", str(cache)]
    commands = [
        ["check", "--repair"],  # exit 1: stale1 is not in the cache
        ["add", "--network", "mynet", "--container", "new1", "--ip", "10.88.0.13/16",
         "--ip", "fd00::13/64", "-p", "8080:80"],
        ["gc", "--yes", "--min-age", "0"],  # takes them, and 6000/udp's entry
        ["flush-udp"],  # 5353/udp's entry
    ]  # fmt: skip
    for command in commands:
        before = state()
        first = run([*command, *common])
        assert first.returncode in ((0, 1) if command[0] == "check" else (0,)), first.stderr
        once = state()
        assert once != before, f"{command[0]} had nothing to do: the test proves nothing"
        second = run([*command, *common])
        assert second.returncode == first.returncode, second.stderr
        assert state() == once, command
    assert once[2] == []
