"""cni/result_types.refusal on the shapes the real plugins were run on
(tests/interop/test_prev_result_types.py holds the oracle: upstream v1.9.1 and
Debian's 1.1.1): refused exactly where v1.9.1's ADD fails."""

from __future__ import annotations

import pytest

from portmapctl.cni.result_types import refusal


def _result(**changes: object) -> dict:
    result = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": "/x"}],
        "ips": [{"address": "10.88.0.5/16", "interface": 0, "gateway": "10.88.0.1"}],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {"nameservers": ["10.0.0.1"]},
    }
    result.update(changes)
    return result


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({}, None),
        ({"interfaces": None, "dns": None, "routes": [None]}, None),
        ({"ips": [{"address": "10.88.0.5/16", "interface": 0.0}]}, None),
        ({"ips": [{"address": "10.88.0.5/16", "interface": 7}]}, None),
        ({"ips": [{"address": "10.88.0.5/16", "gateway": ""}]}, None),
        ({"IPS": [{"ADDRESS": "10.88.0.5/16"}], "Foo": {}}, None),
        ({"interfaces": "x"}, ".interfaces: not a list"),
        ({"ips": [None]}, ".ips[0]: null (the plugin fails on it)"),
        ({"ips": [{"address": None}]},
         ".ips[0].address: invalid container address None: not IP/PREFIX"),
        ({"ips": [{"address": "10.88.0.5/16", "interface": "0"}]},
         ".ips[0].interface: not an integer"),
        ({"ips": [{"address": "10.88.0.5/16", "interface": True}]},
         ".ips[0].interface: not an integer"),
        ({"ips": [{"address": "10.88.0.5/16", "gateway": "nope"}]},
         ".ips[0].gateway: not an IP"),
        ({"interfaces": [None]}, ".ips[0].interface: names interfaces[0], which is null"),
        ({"routes": [{"dst": "nope"}]},
         ".routes[0].dst: invalid route destination 'nope': not IP/PREFIX"),
        ({"routes": [{"dst": "0.0.0.0/0", "mtu": "1500"}]}, ".routes[0].mtu: not an integer"),
        ({"dns": {"nameservers": [1]}}, ".dns.nameservers[0]: not a string"),
        ({"interfaces": [{"name": "eth0", "mtu": "1500"}]}, ".interfaces[0].mtu: not an integer"),
        # Go's ParseCIDR takes no netmask, and Go's int holds no 1e20 (helper h175).
        ({"ips": [{"address": "10.88.0.5/255.255.0.0"}]},
         ".ips[0].address: invalid container address '10.88.0.5/255.255.0.0': not IP/PREFIX"),
        ({"routes": [{"dst": "0.0.0.0/0.0.0.0"}]},
         ".routes[0].dst: invalid route destination '0.0.0.0/0.0.0.0': not IP/PREFIX"),
        ({"ips": [{"address": "10.88.0.5/016"}]}, None),
        ({"ips": [{"address": "10.88.0.5/16", "interface": 1e20}]},
         ".ips[0].interface: out of range of an integer"),
        ({"ips": [{"address": "10.88.0.5/16", "interface": 2**63 - 1}]},
         ".ips[0].interface: out of range of an integer"),
        ({"ips": [{"address": "10.88.0.5/16", "interface": 2**62}]}, None),
    ],
)  # fmt: skip
def test_refused_where_the_plugin_fails(changes: dict, why: object) -> None:
    assert refusal(_result(**changes), "1.0.0") == why


def test_the_040_type_has_a_version_string_and_no_interface_mtu() -> None:
    ip = {"address": "10.88.0.5/16", "version": 4}
    assert refusal(_result(ips=[ip]), "0.4.0") == ".ips[0].version: not a string"
    assert refusal(_result(ips=[ip]), "1.0.0") is None
    iface = [{"name": "eth0", "sandbox": "/x", "mtu": "1500"}]
    assert refusal(_result(interfaces=iface), "0.4.0") is None
