"""Statuses and rows of `list`, on real plugin output (tests/fixtures, examples/)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures_lib import NAMES, configs, table

from portmapctl.cni.cache import read_cache
from portmapctl.iptables import inventory, plugin_rules
from portmapctl.iptables.chains import chain_name, dnat_chain_name
from portmapctl.iptables.ruleset import parse_save

EXAMPLES = Path(__file__).parents[2] / "examples"


def _inventory(name, attachments=None):
    return inventory.build({4: table(name, 4), 6: table(name, 6)}, attachments)


@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("shadowed", "legacy-sn")])
def test_plugin_made_state_lists_every_port_as_ok(name):
    """One row per DNAT rule, exactly the ports, addresses and chain of the input."""
    found = _inventory(name)
    expected = set()
    for config in configs(name):
        for family in config.families:
            address = config.address(family)
            for port in config.ports:
                if port.applies_to(family):
                    expected.add(
                        (
                            config.network,
                            config.container_id,
                            family,
                            port.protocol,
                            port.host_ip_for_rule(),
                            port.host_port,
                            address.ip.compressed,
                            port.container_port,
                            config.snat,
                            dnat_chain_name(config),
                        )
                    )
    rows = {
        (
            m.network,
            m.container_id,
            m.family,
            m.protocol,
            m.host_ip,
            m.host_port,
            m.container_ip,
            m.container_port,
            m.snat,
            m.chain,
        )
        for m in found.mappings
    }
    if name == "long-comment":
        # The kernel cut the comment: the ID cannot be read back, the network can.
        assert {r[1] for r in rows} == {None}
        rows = {r[:1] + (configs(name)[0].container_id,) + r[2:] for r in rows}
    assert rows == expected
    assert all(m.status == ("ok",) for m in found.mappings)
    assert all(c.status == ("ok",) for c in found.chains)


def test_second_container_on_the_same_port_is_shadowed_by_the_first():
    found = _inventory("shadowed")
    first, second = (dnat_chain_name(c) for c in configs("shadowed"))
    by_chain = {m.chain: m for m in found.mappings}
    assert by_chain[first].status == ("ok",)
    assert by_chain[second].status == ("shadowed",)
    assert by_chain[second].shadowed_by == first


def test_only_an_earlier_mapping_for_all_of_its_addresses_shadows():
    """The first container's 8080 for 127.0.0.2 alone takes that address from the
    second's 8080 on every address and leaves it all the others: the second gets
    traffic, it is not shadowed (it was, and check said to re-create one of them; the
    real traffic went to it). The other way round (every address first, then one), and
    the same address twice, the later one gets nothing."""
    text = (Path(__file__).parents[1] / "fixtures" / "shadowed.v4.save").read_text()
    first, second = (dnat_chain_name(c) for c in configs("shadowed"))

    def bound(chain: str, host_ip: str, body: str) -> str:
        return body.replace(
            f"-A {chain} -p tcp -m tcp --dport 8080 -j DNAT",
            f"-A {chain} -d {host_ip}/32 -p tcp -m tcp --dport 8080 -j DNAT",
        )

    def statuses(body: str) -> dict:
        found = inventory.build({4: parse_save(body, 4)})
        return {m.chain: (m.status, m.shadowed_by) for m in found.mappings}

    assert statuses(bound(first, "127.0.0.2", text)) == {
        first: (("ok",), None), second: (("ok",), None),
    }  # fmt: skip
    assert statuses(bound(second, "127.0.0.2", text)) == {
        first: (("ok",), None), second: (("shadowed",), first),
    }  # fmt: skip
    both = bound(second, "127.0.0.2", bound(first, "127.0.0.2", text))
    assert statuses(both)[second] == (("shadowed",), first)
    assert statuses(bound(second, "127.0.0.3", bound(first, "127.0.0.2", text))) == {
        first: (("ok",), None), second: (("ok",), None),
    }  # fmt: skip


def test_an_entry_rule_with_conditions_shadows_nothing_and_its_rows_say_them():
    """conditionsV4 on the first container's network: its entry rule takes only the
    packets from outside 192.168.0.0/16, the rest go on to the second container (0.1
    called the second shadowed, and the first row claimed every packet to *:8080)."""
    text = (Path(__file__).parents[1] / "fixtures" / "shadowed.v4.save").read_text()
    first, second = (dnat_chain_name(c) for c in configs("shadowed"))
    entry = next(
        line for line in text.splitlines() if line.startswith("-A CNI-HOSTPORT-DNAT -p tcp")
    )
    assert entry.endswith(f"-j {first}")
    guarded = text.replace(
        entry, entry.replace("-A CNI-HOSTPORT-DNAT ", "-A CNI-HOSTPORT-DNAT ! -s 192.168.0.0/16 ")
    )
    found = inventory.build({4: parse_save(guarded, 4)})
    by_chain = {m.chain: m for m in found.mappings}
    assert (by_chain[first].status, by_chain[first].conditions) == (
        ("ok",),
        ("!", "-s", "192.168.0.0/16"),
    )
    assert (by_chain[second].status, by_chain[second].conditions) == (("ok",), ())
    assert by_chain[second].shadowed_by is None
    # Conditions of the later rule change nothing: the first still takes every packet.
    entry2 = next(line for line in text.splitlines() if line.endswith(f"-j {second}"))
    late = text.replace(
        entry2, entry2.replace("-A CNI-HOSTPORT-DNAT ", "-A CNI-HOSTPORT-DNAT -s 10.0.0.0/8 ")
    )
    by_chain = {m.chain: m for m in inventory.build({4: parse_save(late, 4)}).mappings}
    assert by_chain[second].status == ("shadowed",) and by_chain[second].shadowed_by == first
    assert by_chain[second].conditions == ("-s", "10.0.0.0/8")


def test_entry_conditions_are_what_the_plugin_did_not_write():
    assert plugin_rules.entry_conditions(
        ["-p", "tcp", "-m", "comment", "--comment", "dnat x", "-m", "multiport",
         "--dports", "8080", "-m", "tcp", "--tcp-flags", "FIN,SYN,RST,ACK", "SYN",
         "-j", "CNI-DN-x"]
    ) == ("-m", "tcp", "--tcp-flags", "FIN,SYN,RST,ACK", "SYN")  # fmt: skip
    assert plugin_rules.entry_conditions(
        ["!", "-p", "udp", "-m", "comment", "--comment", "x", "-j", "CNI-DN-x"]
    ) == ("!", "-p", "udp")
    plain = ["-p", "udp", "-m", "comment", "--comment", "x", "-m", "multiport"]
    assert plugin_rules.entry_conditions([*plain, "--dports", "53", "-j", "CNI-DN-x"]) == ()


def test_legacy_snat_chains_are_listed_as_legacy():
    found = _inventory("legacy-sn")
    legacy = [c for c in found.chains if c.kind == "legacy-snat"]
    assert [c.name for c in legacy] == [chain_name("mynet", "abc123", "SN-")]
    assert legacy[0].status == ("legacy",)
    assert (legacy[0].network, legacy[0].container_id) == ("mynet", "abc123")


def test_host_ip_of_the_other_family_is_not_incomplete():
    """The plugin's entry rules name every port; that alone is no fault."""
    found = _inventory("hostip-v6")
    assert all("incomplete" not in c.status for c in found.chains)


def test_one_family_alone_does_not_call_the_other_familys_host_ip_incomplete():
    """--family 4 with no cache (or an IPv4 dump alone): the entry rule names the port
    of an IPv6 host IP, and nothing in IPv4 tells that it is one. It was called
    incomplete (check: exit 1) where the check of both families found it sound; a
    port the chain still has a rule for (below) is still missing its DNAT."""
    text = (Path(__file__).parents[1] / "fixtures" / "hostip-v6.v4.save").read_text()
    found = inventory.build({4: parse_save(text, 4)})
    assert found.chains and all("incomplete" not in c.status for c in found.chains)
    # Undecided, not healthy: list and check say what one family cannot tell.
    (undecided,) = [c for c in found.chains if c.undecided_ports]
    note = inventory.undecided_note(found.chains)
    assert note is not None and note.startswith(f"{undecided.name} (IPv4) is entered for")
    both = (Path(__file__).parents[1] / "fixtures" / "hostip-v6.v6.save").read_text()
    told = inventory.build({4: parse_save(text, 4), 6: parse_save(both, 6)})
    assert inventory.undecided_note(told.chains) is None  # (the IPv6 table tells)
    assert all("incomplete" not in c.status for c in told.chains)


def test_a_port_without_its_dnat_rule_is_incomplete():
    text = (Path(__file__).parents[1] / "fixtures" / "basic.v4.save").read_text()
    broken = "\n".join(line for line in text.splitlines() if "--dport 5353 -j DNAT" not in line)
    found = inventory.build({4: parse_save(broken, 4)})
    (chain,) = found.chains
    assert chain.status == ("incomplete",)
    assert chain.missing_ports == (("udp", 5353),)


def test_example_node_has_every_status_the_readme_shows():
    tables = {
        4: parse_save((EXAMPLES / "node.v4.save").read_text(), 4),
        6: parse_save((EXAMPLES / "node.v6.save").read_text(), 6),
    }
    found = inventory.build(tables, read_cache(str(EXAMPLES / "cni-cache")))
    by_port = {(m.family, m.host_port, m.container_ip): m.status for m in found.mappings}
    assert by_port[(4, 8080, "10.88.0.5")] == ("ok",)
    assert by_port[(4, 8080, "10.88.0.6")] == ("shadowed",)
    assert by_port[(4, 9000, "10.88.0.7")] == ("stale",)
    assert by_port[(4, 9100, "10.88.0.8")] == ("orphan",)
    assert by_port[(6, 5353, "fd00:88::5")] == ("ok",)


def test_stale_is_said_only_when_there_is_a_cache():
    found = _inventory("three-containers", attachments=[])
    assert all(m.status == ("stale",) for m in found.mappings)
    found = _inventory("three-containers", attachments=None)
    assert all(m.status == ("ok",) for m in found.mappings)


def test_filters_select_by_container_prefix_network_port_and_protocol():
    rows = _inventory("three-containers").mappings
    assert {m.container_id for m in inventory.select(rows, container="ctr")} == {
        "ctr1",
        "ctr2",
        "ctr3",
    }
    assert {m.container_id for m in inventory.select(rows, container="ctr2")} == {"ctr2"}
    assert inventory.select(rows, network="other") == []
    assert all(m.protocol == "udp" for m in inventory.select(rows, protocol="udp"))
    ports = {m.host_port for m in rows}
    some = sorted(ports)[0]
    assert {m.host_port for m in inventory.select(rows, port=some)} == {some}
