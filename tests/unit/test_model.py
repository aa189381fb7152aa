"""The chain model against the real plugin's output (tests/fixtures) and FACTS."""

from __future__ import annotations

import ipaddress

import pytest
from fixtures_lib import NAMES, configs, table

from portmapctl.core import validate
from portmapctl.core.mapping import MappingConfig, PortMapping
from portmapctl.errors import BadInput
from portmapctl.iptables import chains as model
from portmapctl.iptables.chains import chain_name, wanted_chains
from portmapctl.iptables.planner import plan_setup
from portmapctl.iptables.ruleset import rule_target


@pytest.mark.parametrize(
    "network, container_id, dn, sn",
    [
        ("mynet", "abc123", "CNI-DN-70a29d9dc18bc4d652ea5", "CNI-SN-70a29d9dc18bc4d652ea5"),
        ("kindnet", "abc123", "CNI-DN-de4fb276d1d847c16446f", "CNI-SN-de4fb276d1d847c16446f"),
        ("mynet", "ctr1", "CNI-DN-5145007e2a8415ce07579", "CNI-SN-5145007e2a8415ce07579"),
        ("kindnet", "ctr1", "CNI-DN-db93af16099dbf5cac3c6", "CNI-SN-db93af16099dbf5cac3c6"),
    ],
)
def test_chain_names_match_facts_vectors(network, container_id, dn, sn):
    assert chain_name(network, container_id, "DN-") == dn
    assert chain_name(network, container_id, "SN-") == sn


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("family", [4, 6])
def test_generated_chains_equal_what_the_plugin_wrote(name, family):
    """Every chain we generate is, rule for rule, the one iptables-save shows."""
    live = table(name, family)
    for config in configs(name):
        for chain in wanted_chains(config, family):
            assert live.has_chain(chain.name), chain.name
            if chain.shared:
                for rule in chain.rules:
                    assert rule in live.rules(chain.name)
            else:
                assert live.rules(chain.name) == chain.rules
            for entry_chain in chain.entry_chains:
                jumps = [r for r in live.rules(entry_chain) if rule_target(r) == chain.name]
                if chain.shared:
                    assert set(chain.entry_rules) <= set(jumps)
                else:
                    assert tuple(jumps) == chain.entry_rules


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("family", [4, 6])
def test_plan_against_plugin_state_is_empty(name, family):
    """`add` of what the plugin already added changes nothing (idempotence)."""
    live = table(name, family)
    for config in configs(name):
        assert plan_setup(wanted_chains(config, family), live).render() == ""


def _config(**changes) -> MappingConfig:
    base = dict(
        network="mynet",
        container_id="abc123",
        addresses=(ipaddress.ip_interface("10.88.0.5/16"),),
        ports=(PortMapping(8080, 80),),
    )
    base.update(changes)
    return MappingConfig(**base)


def test_no_address_of_a_family_means_no_chains():
    assert wanted_chains(_config(), 6) == []


def test_snat_off_has_no_mark_rules_and_no_masq_chains():
    chains = wanted_chains(_config(snat=False), 4)
    assert [c.name for c in chains] == [model.TOPLEVEL_DNAT, chain_name("mynet", "abc123")]
    assert all("-s" not in rule for rule in chains[-1].rules)


def test_external_setmark_chain_replaces_setmark_and_skips_masq():
    chains = wanted_chains(_config(external_setmark_chain="MY-MARK"), 4)
    assert model.SETMARK not in [c.name for c in chains]
    assert model.MASQ not in [c.name for c in chains]
    assert [rule_target(r) for r in chains[-1].rules] == ["MY-MARK", "MY-MARK", "DNAT"]


def test_masq_all_marks_every_source_and_drops_the_localhost_rule():
    dnat = model.dnat_chain(_config(masq_all=True), 4)
    assert dnat.rules[0] == ("-p", "tcp", "-m", "tcp", "--dport", "8080", "-j", model.SETMARK)
    assert len(dnat.rules) == 2


def test_sixteen_ports_split_into_two_multiport_rules():
    ports = tuple(PortMapping(9000 + i, 80) for i in range(16))
    dnat = model.dnat_chain(_config(ports=ports), 4)
    assert [r[r.index("--dports") + 1].count(",") + 1 for r in dnat.entry_rules] == [15, 1]


def test_host_ip_of_the_other_family_skips_the_rules_but_not_the_entry():
    config = _config(
        addresses=(ipaddress.ip_interface("fd00::5/64"),),
        ports=(PortMapping(8080, 80, "tcp", "127.0.0.1"),),
    )
    dnat = model.dnat_chain(config, 6)
    assert dnat.rules == ()
    assert "8080" in dnat.entry_rules[0]


def test_long_comments_are_cut_like_the_plugin_and_the_kernel_do():
    assert model.trim_comment("x" * 255) == "x" * 255
    assert model.trim_comment("x" * 300) == "x" * 253 + "..."


def test_container_addresses_read_as_ipaddress_reads_them():
    """validate.interface parses plain IPv4 IP/PREFIX itself (the CNI cache's hot path):
    what it accepts, refuses and returns must be ipaddress's, edge cases included."""
    octets = ["0", "1", "9", "10", "99", "100", "199", "200", "249", "250", "255", "256",
              "00", "01", "010", "300", "2555", "٣", "+1", " 1"]  # fmt: skip
    prefixes = ["0", "8", "9", "16", "24", "29", "30", "32", "33", "08", "016", "", "٨",
                "255.255.0.0", "0.0.255.255", "16 ", "-1"]  # fmt: skip
    values = [f"{o}.{o2}.3.{o}/{p}" for o in octets for o2 in ("0", "255", o) for p in prefixes]
    values += ["1.2.3/8", "1.2.3.4.5/8", "1.2.3.4/8\n", "fd00::5/64", "fe80::1%eth0/64"]
    for value in values:
        try:
            want = ipaddress.ip_interface(value)
        except ValueError:
            want = None
        if want is not None and getattr(want, "scope_id", None):
            want = None  # a zone cannot go in a rule
        try:
            got = validate.interface(value)
        except BadInput:
            got = None
        assert type(got) is type(want) and got == want, value
        if want is not None:
            assert (str(got), got.network, got.netmask) == (str(want), want.network, want.netmask)


@pytest.mark.parametrize(
    ("given", "family", "rule_ip"),
    [("::ffff:127.0.0.1", 4, "127.0.0.1"), ("[::ffff:10.1.2.3]", 4, "10.1.2.3"),
     ("::ffff:0.0.0.0", 4, None), ("::1", 6, "::1")],
)  # fmt: skip
def test_an_ipv4_mapped_host_ip_is_ipv4_as_in_go(given: str, family: int, rule_ip) -> None:
    """Go's net.IP.To4 makes ::ffff:a.b.c.d the IPv4 a.b.c.d: the plugin writes its
    rules in iptables with `-d a.b.c.d` (measured: Debian 1.1.1, v1.6.2, v1.9.1)."""
    port = PortMapping(8080, 80, "tcp", validate.host_ip(given))
    assert port.applies_to(family) and not port.applies_to(10 - family)
    assert port.host_ip_for_rule() == rule_ip


@pytest.mark.parametrize(
    ("given", "plugin_result"),
    [("::ffff:10.88.0.5/112", "10.88.0.5/16"), ("::FFFF:a58:305/104", "10.88.3.5/8"),
     ("::ffff:10.88.2.5/128", "10.88.2.5/32"), ("::ffff:10.88.0.5/64", "10.88.0.5/0")],
)  # fmt: skip
def test_an_ipv4_mapped_container_address_is_ipv4_as_in_go(given: str, plugin_result: str) -> None:
    """The plugin's ADD (Debian 1.1.1, v1.6.2-v1.9.1) takes prevResult's
    ::ffff:a.b.c.d/P as the container's IPv4 address and returns it as plugin_result
    (IPNet.String: the mask's last 32 bits); its rules are IPv4 ones. portmapctl kept
    an IPv6 address: add wrote ip6tables rules to [::ffff:a58:5], check called the
    plugin's IPv4 chain missing in IPv6 and --repair wrote them."""
    assert validate.interface(given) == ipaddress.IPv4Interface(plugin_result)
