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


def config(cid: str, ip: str, *ports: PortMapping, **options) -> MappingConfig:
    return MappingConfig("mynet", cid, (ipaddress.ip_interface(ip),), tuple(ports), **options)


def test_every_field_fixture_names_its_source():
    files = sorted(FIELD.glob("*.save"))
    assert len(files) >= 7
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


def test_the_dead_shape_is_never_accepted():
    cfg = config(ID_A, "10.88.0.5/16", PortMapping(2202, 22, host_ip="0.0.0.0"))
    assert shapes.as_found(cfg, 4, field("v0.8.5-dead-before-working")) is None
    assert [s for s, _ in shapes.accepted_chains(cfg, 4)] == [Shape.CURRENT]


def test_a_changed_port_matches_no_shape():
    cfg = config(ID_B, "10.88.0.6/16", PortMapping(9091, 90))
    assert shapes.as_found(cfg, 4, field("v0.7-prepend-hairpin")) is None


# --- shared chains --------------------------------------------------------------------


def test_mark_bit_and_setmark_use():
    assert shapes.mark_bit_in(field("v0.7-prepend-hairpin")) == 13
    assert shapes.uses_setmark(field("v0.7-prepend-hairpin"))
    assert shapes.mark_bit_in(field("v0.6-portless-entries")) is None
    assert not shapes.uses_setmark(field("v0.6-portless-entries"))
