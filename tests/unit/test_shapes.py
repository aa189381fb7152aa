"""The catalogue of the plugin's iptables shapes (iptables/shapes.py) on field fixtures.

No root: every table here is a fixture file of tests/fixtures/field (README there).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from portmapctl.core.mapping import MappingConfig, PortMapping
from portmapctl.iptables import shapes
from portmapctl.iptables.chains import chain_name
from portmapctl.iptables.ruleset import NatTable, parse_save
from portmapctl.iptables.shapes import EntryShape, Role, Shape

FIELD = Path(__file__).resolve().parents[1] / "fixtures" / "field"
ID_A = "3f6e3b0a4b7c2d1e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e"
ID_B = "8c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d"
DN_A = chain_name("mynet", ID_A)
DN_B = chain_name("mynet", ID_B)


def field(name: str) -> NatTable:
    return parse_save((FIELD / f"{name}.v4.save").read_text(), 4, name)


def config(
    cid: str, ip: str, *ports: PortMapping, network: str = "mynet", **options
) -> MappingConfig:
    return MappingConfig(network, cid, (ipaddress.ip_interface(ip),), tuple(ports), **options)


def test_every_field_fixture_names_its_source():
    files = sorted(FIELD.glob("*.save"))
    assert len(files) >= 11
    readme = (FIELD / "README.md").read_text()
    for path in files:
        head = path.read_text().splitlines()[0]
        assert head.startswith(("# REAL: https://", "# DERIVED: ")), path.name
        assert path.name in readme


# --- per-container chains -------------------------------------------------------------


def test_posted_dead_chain_is_hairpin_host_and_dead():
    # plugins#643: -d 0.0.0.0/32 on every rule, hairpin on -s 10.4.0.2/32.
    table = field("plugins-643-dead")
    shape, rules = shapes.classify_chain(table.rules("CNI-DN-e7055ba87834d413d9694"))
    assert shape is Shape.HAIRPIN_HOST
    assert [r.role for r in rules] == [Role.HAIRPIN_HOST, Role.LOCALHOST, Role.DNAT]
    assert all(r.dead for r in rules)
    assert rules[2].container_ip == "10.4.0.2" and rules[2].container_port == 22


def test_posted_working_chain_of_v07_to_v085_is_not_dead():
    table = field("plugins-643-hairpin32")
    shape, rules = shapes.classify_chain(table.rules("CNI-DN-e7055ba87834d413d9694"))
    assert shape is Shape.HAIRPIN_HOST
    assert not any(r.dead for r in rules)


def test_posted_current_chain():
    table = field("flannel-1702-current")
    shape, rules = shapes.classify_chain(table.rules("CNI-DN-bf882a7c6b6d62bc1131a"))
    assert shape is Shape.CURRENT
    assert [r.role for r in rules[:3]] == [Role.HAIRPIN_SUBNET, Role.LOCALHOST, Role.DNAT]


def test_masq_all_chain():
    shape, rules = shapes.classify_chain(field("v1.2-masqall").rules(DN_A))
    assert shape is Shape.MASQ_ALL
    assert [r.role for r in rules] == [Role.HAIRPIN_ALL, Role.DNAT]


def test_v06_chain_has_no_marks_and_no_telling_shape():
    shape, rules = shapes.classify_chain(field("v0.6-portless-entries").rules(DN_B))
    assert shape is None
    assert [(r.role, r.host_port) for r in rules] == [(Role.DNAT, 8080), (Role.DNAT, 9090)]


def test_a_slash_32_mark_on_another_address_is_no_known_shape():
    rules = (
        ("-s", "10.9.9.9/32", "-p", "tcp", "-m", "tcp", "--dport", "80", "-j", "KUBE-MARK-MASQ"),
        ("-p", "tcp", "-m", "tcp", "--dport", "80", "-j", "DNAT", "--to-destination", "10.4.0.2:8"),
    )
    shape, read = shapes.classify_chain(rules)
    assert shape is None and read[0].role is Role.MARK


def test_dead_destinations():
    assert shapes.is_dead_destination("0.0.0.0/32")
    assert shapes.is_dead_destination("::/128")
    assert not shapes.is_dead_destination("0.0.0.0/0")
    assert not shapes.is_dead_destination("192.0.2.1/32")
    assert not shapes.is_dead_destination(None)


# --- entry rules ----------------------------------------------------------------------


def test_v06_portless_entry_claims_every_port_its_chain_dnats():
    table = field("v0.6-portless-entries")
    entries = table.rules("CNI-HOSTPORT-DNAT")
    assert [shapes.classify_entry(e) for e in entries] == [EntryShape.PORTLESS] * 2
    # Prepended: the second container (B) comes first.
    assert entries[0][-1] == DN_B
    assert shapes.entry_ports(entries[0], table.rules(DN_B)) == (("tcp", 8080), ("tcp", 9090))
    assert shapes.entry_ports(entries[1], table.rules(DN_A)) == (("tcp", 8080),)


def test_multiport_entry_names_its_ports():
    table = field("flannel-1702-current")
    (entry,) = table.rules("CNI-HOSTPORT-DNAT")
    assert shapes.classify_entry(entry) is EntryShape.MULTIPORT
    assert shapes.entry_ports(entry, ()) == (("tcp", 80), ("tcp", 443))


def test_entry_to_another_chain_is_not_classified():
    assert shapes.classify_entry(("-j", "KUBE-SERVICES")) is None


def test_first_taker_skips_a_dead_chain():
    # The dead chain's entry is first: iptables returns from it, B takes tcp/2202.
    table = field("v0.8.5-dead-before-working")
    assert table.rules("CNI-HOSTPORT-DNAT")[0][-1] == DN_A
    assert shapes.first_taker(table, "tcp", 2202, -1) == DN_B
    assert shapes.first_taker(table, "tcp", 2202, 1) is None


def test_first_taker_with_portless_entries():
    table = field("v0.6-portless-entries")
    assert shapes.first_taker(table, "tcp", 8080, -1) == DN_B
    assert shapes.first_taker(table, "tcp", 8080, 0) == DN_A
    assert shapes.first_taker(table, "tcp", 9090, 0) is None


# --- legacy SN chains -----------------------------------------------------------------


def test_sn_pairs_with_dn_by_hash_and_masquerades_its_port():
    table = field("v0.6-portless-entries")
    sn = chain_name("mynet", ID_B, "SN-")
    assert shapes.paired_dnat_chain(sn) == DN_B
    assert shapes.paired_snat_chain(DN_B) == sn
    assert shapes.legacy_masquerades(table.rules(sn)) == {
        ("tcp", "10.88.0.6", 80),
        ("tcp", "10.88.0.6", 90),
    }


# --- shapes a cached config may be found in ------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "cfg", "shape"),
    [
        (
            "v0.7-prepend-hairpin",
            config(ID_A, "10.88.0.5/16", PortMapping(8080, 80), PortMapping(5353, 53, "udp")),
            Shape.HAIRPIN_HOST,
        ),
        ("v0.7-prepend-hairpin", config(ID_B, "10.88.0.6/16", PortMapping(9090, 90)),
         Shape.HAIRPIN_HOST),
        ("v0.6-portless-entries", config(ID_A, "10.88.0.5/16", PortMapping(8080, 80)),
         Shape.V0_6),
        ("v1.2-masqall", config(ID_A, "10.88.0.5/16", PortMapping(8080, 80), masq_all=True),
         Shape.MASQ_ALL),
    ],
)  # fmt: skip
def test_old_shapes_are_found_exactly(fixture, cfg, shape):
    table = field(fixture)
    found = shapes.as_found(cfg, 4, table)
    assert found is not None and found[0] is shape
    # Its entry rules are the live ones too.
    live_entries = {r for r in table.rules("CNI-HOSTPORT-DNAT") if r[-1] == found[1].name}
    assert set(found[1].entry_rules) == live_entries


def test_masq_all_config_accepts_a_plugin_that_ignored_the_key():
    # Debian's 1.1.1 ignores masqAll: the cached config says it, the chain is current.
    cfg = config(ID_A, "10.88.0.5/16", PortMapping(8080, 80), masq_all=True)
    plain = config(ID_A, "10.88.0.5/16", PortMapping(8080, 80))
    shapes_found = dict(shapes.accepted_chains(cfg, 4))
    assert shapes_found[Shape.CURRENT].rules == shapes.accepted_chains(plain, 4)[0][1].rules


def test_the_dead_shape_is_found_as_its_version_wrote_it():
    # Host IP 0.0.0.0 as v0.7-v0.8.5 wrote it: found exactly, so --repair leaves it
    # (it would otherwise bring the mapping back and take tcp/2202 from 8c1d2e3f4a5b).
    cfg = config(ID_A, "10.88.0.5/16", PortMapping(2202, 22, host_ip="0.0.0.0"))
    table = field("v0.8.5-dead-before-working")
    found = shapes.as_found(cfg, 4, table)
    assert found is not None and found[0] is Shape.HAIRPIN_HOST
    assert found[1].rules == table.rules(found[1].name)
    accepted = shapes.accepted_chains(cfg, 4)
    assert [s for s, _ in accepted] == [
        Shape.CURRENT,
        Shape.CURRENT,
        Shape.HAIRPIN_HOST,
        Shape.V0_6,
    ]
    # The current shape, first, writes no -d; every older one writes -d 0.0.0.0/32.
    assert not any("0.0.0.0/32" in rule for rule in accepted[0][1].rules)
    assert all(all("0.0.0.0/32" in rule for rule in chain.rules) for _, chain in accepted[1:])


def test_the_dead_shape_in_ipv6_is_dash_d_unspecified_128():
    cfg = config(ID_A, "fd00::5/64", PortMapping(2202, 22, host_ip="::"))
    (current, *older) = shapes.accepted_chains(cfg, 6)
    assert not any("::/128" in rule for rule in current[1].rules)
    assert older and all(
        rule[rule.index("-d") + 1] == "::/128" for _, chain in older for rule in chain.rules
    )


def test_a_changed_port_matches_no_shape():
    cfg = config(ID_B, "10.88.0.6/16", PortMapping(9091, 90))
    assert shapes.as_found(cfg, 4, field("v0.7-prepend-hairpin")) is None


# --- shared chains --------------------------------------------------------------------


def test_mark_bit_and_setmark_use():
    assert shapes.mark_bit_in(field("v0.7-prepend-hairpin")) == 13
    assert shapes.uses_setmark(field("v0.7-prepend-hairpin"))
    assert shapes.mark_bit_in(field("v0.6-portless-entries")) is None
    assert not shapes.uses_setmark(field("v0.6-portless-entries"))


# --- posted dumps of nerdctl, cilium (v0.6), flannel (v0.7 - v0.8.5), podman ---------

# lima-nerdctl-hostip: network "bridge"; container IDs as posted, and their chains.
NERDCTL_8082 = "default-3d263c6a1c710edc1362764464c073ca834ec9adc0766411772f2b7a3dd1de0f"
NERDCTL_HOSTIP = "default-c93e2a3a2264f98647f0d33dc80d88de81c0710bf30ea822e2ed19213f9c53b5"
NERDCTL_EMPTY = "default-393bd750d06186633a02b44487765ce038b7df434bfb16027ca1903bf5f3dc31"
NERDCTL = {
    NERDCTL_8082: "CNI-DN-04579c7bb67f4c3f6cca0",
    NERDCTL_HOSTIP: "CNI-DN-2e2f8d5b91929ef9fc152",
    NERDCTL_EMPTY: "CNI-DN-2d72aeb202429907277c5",
}
CILIUM_A = "883b02f84c3cdd3e5e8432fecab3306a6a180c32aa0a6c78a0378d532cbe9d13"
CILIUM_B = "00f324f7e68994294c2a2edde64e823d93d7338ba6e9646f252ea412d8ae1163"
HWCHIU_ID = "c55a611c4b8e8a4bef86ac05a3328258a858165b3bf4a3982997f9662bd82916"


def test_posted_chain_names_are_the_plugins_hash():
    # Namespaced nerdctl IDs ("default-...") hash like any other ID.
    for cid, chain in NERDCTL.items():
        assert chain_name("bridge", cid) == chain
    assert chain_name("cilium-portmap", CILIUM_A) == "CNI-DN-c20774ee0bf22c7e19507"
    assert chain_name("cilium-portmap", CILIUM_A, "SN-") == "CNI-SN-c20774ee0bf22c7e19507"
    assert chain_name("cilium-portmap", CILIUM_B) == "CNI-DN-9b37bc50e0ab952351885"
    assert chain_name("cbr0", HWCHIU_ID) == "CNI-DN-eb9116f984fef9374c9e2"


def test_posted_nerdctl_host_ip_chain_and_empty_chain():
    table = field("lima-nerdctl-hostip")
    working, hostip, empty = (NERDCTL[c] for c in (NERDCTL_8082, NERDCTL_HOSTIP, NERDCTL_EMPTY))
    shape, rules = shapes.classify_chain(table.rules(hostip))
    assert shape is Shape.CURRENT
    assert [(r.role, r.host_ip) for r in rules] == [
        (Role.HAIRPIN_SUBNET, "127.0.0.1"),
        (Role.LOCALHOST, "127.0.0.1"),
        (Role.DNAT, "127.0.0.1"),
    ]
    assert table.rules(empty) == ()
    # The empty chain's entry is first for tcp/8082 but takes nothing: the next does.
    entries = table.rules("CNI-HOSTPORT-DNAT")
    assert [e[-1] for e in entries] == [hostip, empty, working]
    assert shapes.entry_ports(entries[1], ()) == (("tcp", 8082),)
    assert shapes.first_taker(table, "tcp", 8082, -1) == working
    assert shapes.first_taker(table, "tcp", 8081, -1) == hostip


@pytest.mark.parametrize(
    ("cid", "ip", "port", "network"),
    [
        (NERDCTL_8082, "10.4.0.10/24", PortMapping(8082, 80), "bridge"),
        (NERDCTL_HOSTIP, "10.4.0.7/24", PortMapping(8081, 80, host_ip="127.0.0.1"), "bridge"),
    ],
)
def test_posted_nerdctl_chains_are_the_current_plugins_exactly(cid, ip, port, network):
    found = shapes.as_found(config(cid, ip, port, network=network), 4, field("lima-nerdctl-hostip"))
    assert found is not None and found[0] is Shape.CURRENT


def test_posted_v06_portless_entries_claim_their_chains_udp_port():
    table = field("cilium-6499-v0.6")
    entries = table.rules("CNI-HOSTPORT-DNAT")
    assert [shapes.classify_entry(e) for e in entries] == [EntryShape.PORTLESS] * 2
    claimed = [shapes.entry_ports(e, table.rules(e[-1])) for e in entries]
    assert claimed == [(("udp", 41529),), (("udp", 43407),)]
    shape, rules = shapes.classify_chain(table.rules("CNI-DN-c20774ee0bf22c7e19507"))
    assert shape is None and [r.role for r in rules] == [Role.DNAT]
    assert (rules[0].container_ip, rules[0].container_port) == ("10.56.4.152", 7788)
    sn = "CNI-SN-c20774ee0bf22c7e19507"
    assert shapes.paired_dnat_chain(sn) == "CNI-DN-c20774ee0bf22c7e19507"
    assert not shapes.uses_setmark(table) and shapes.mark_bit_in(table) is None


def test_posted_udp_hairpin_on_the_pod_address_is_the_v07_shape():
    table = field("hwchiu-flannel-udp-hairpin32")
    shape, rules = shapes.classify_chain(table.rules("CNI-DN-eb9116f984fef9374c9e2"))
    assert shape is Shape.HAIRPIN_HOST
    assert [(r.role, r.protocol, r.dead) for r in rules] == [
        (Role.HAIRPIN_HOST, "udp", False),
        (Role.LOCALHOST, "udp", False),
        (Role.DNAT, "udp", False),
    ]
    cfg = config(HWCHIU_ID, "10.244.0.6/24", PortMapping(20001, 20001, "udp"), network="cbr0")
    found = shapes.as_found(cfg, 4, table)
    assert found is not None and found[0] is Shape.HAIRPIN_HOST


def test_posted_podman_chains_beside_docker_and_libvirt():
    table = field("x-monitor-podman-docker-libvirt")
    for chain in ("CNI-DN-fcb138bbe0a69715574a4", "CNI-DN-01a0df798eef277db5129"):
        assert shapes.classify_chain(table.rules(chain))[0] is Shape.CURRENT
    assert shapes.mark_bit_in(table) == 13 and shapes.uses_setmark(table)
    # The DOCKER jump before CNI-HOSTPORT-DNAT in PREROUTING takes no port.
    assert shapes.first_taker(table, "tcp", 9070, -1) == "CNI-DN-fcb138bbe0a69715574a4"
