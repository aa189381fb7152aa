"""expected.sharing_chain: which cached interfaces' rules the chain of one mapping given
(check/add with --ifname) holds besides its own (a Multus pod on one network twice)."""

from __future__ import annotations

import ipaddress

from portmapctl.cni.cache import Attachment
from portmapctl.core.mapping import MappingConfig, PortMapping
from portmapctl.ops.check.expected import sharing_chain


def _config(address: str, port: int) -> MappingConfig:
    return MappingConfig(
        network="macvlan-conf",
        container_id="abc123",
        addresses=(ipaddress.ip_interface(address),),
        ports=(PortMapping(port, 80),),
    )


def _entry(ifname: str, config: MappingConfig) -> Attachment:
    return Attachment("macvlan-conf", "abc123", ifname, f"/c/results/x-{ifname}", config)


NET1 = _config("10.77.0.5/16", 8080)
NET2 = _config("10.77.0.6/16", 9090)


def test_the_one_other_interface_cached_is_kept_before_the_one_given():
    # (Before: one entry cached stood for the config given, whatever its interface.)
    assert sharing_chain(NET2, [_entry("net1", NET1)], "net2") == (NET1, NET2)


def test_the_interface_given_stands_in_for_its_own_entry():
    moved = _config("10.77.0.9/16", 9090)  # net2's entry read before its re-ADD, say
    entries = [_entry("net1", NET1), _entry("net2", NET2)]
    assert sharing_chain(moved, entries, "net2") == (NET1, moved)
    assert sharing_chain(moved, [_entry("eth0", NET1)], "eth0") == (moved,)


def test_without_the_interface_its_addresses_say_which_entry_it_is():
    entries = [_entry("net1", NET1), _entry("net2", NET2)]
    assert sharing_chain(NET1, entries, "eth0") == (NET1, NET2)
    assert sharing_chain(NET1, entries) == (NET1, NET2)
    assert sharing_chain(NET1, [_entry("net1", NET1)]) == (NET1,)


def test_the_interfaces_own_entry_with_the_addresses_given_stays_beside_it():
    """One port of a container checked alone: its cached entry's other ports are live
    mappings, wanted with it (the config given after them, as a later ADD appends)."""
    both = MappingConfig(
        network="macvlan-conf",
        container_id="abc123",
        addresses=(ipaddress.ip_interface("10.77.0.5/16"),),
        ports=(PortMapping(8080, 80), PortMapping(5353, 53, "udp")),
    )
    assert sharing_chain(NET1, [_entry("eth0", both)], "eth0") == (both, NET1)
    assert sharing_chain(NET1, [_entry("eth0", both)]) == (both, NET1)
    assert sharing_chain(NET1, [_entry("net1", NET1), _entry("net2", NET2)], "net1") == (
        NET1,
        NET2,
    )
