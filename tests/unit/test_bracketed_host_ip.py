"""A config's `hostIP` in brackets, as the real plugins read it.

Brackets are `-p` syntax (Docker strips them from any address, IPv4 too:
go-connections nat.ParsePortSpec; so `-p [127.0.0.1]:80:80` is 127.0.0.1 here, as
there). In the plugin's JSON there are none: Go's net.ParseIP("[127.0.0.1]") is nil,
so the plugin takes the entry for an IPv6 one (To4() == nil). Measured with Debian's
1.1.1 and upstream v1.9.1 (nftables backend): for a container with no IPv6 address the
entry is skipped and the ADD succeeds (libcni caches it); with one, iptables backend
fails on `-d [x]` ("host/network `[::1]' not found") and the nftables backend on an
IPv4 inside (`ip6 daddr [127.0.0.1]`: syntax error), while it takes `[::1]`.

portmapctl read them as the address inside: a v4-only container's cached
`[127.0.0.1]` entry was expected as a 127.0.0.1 mapping the plugin never made (a
missing DNAT rule every check, and --repair made it), and add wrote such configs
where the plugin's ADD fails.
"""

from __future__ import annotations

import pytest

from portmapctl.cni.config import plugin_config
from portmapctl.core.backend import Backend
from portmapctl.errors import BadInput

V4 = ["10.88.0.5/16"]
DUAL = ["10.88.0.5/16", "fd00::5/64"]


def _conf(addresses, host_ip, backend=None):
    conf = {
        "cniVersion": "1.0.0",
        "name": "n",
        "type": "portmap",
        "capabilities": {"portMappings": True},
        "runtimeConfig": {
            "portMappings": [
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": host_ip},
                {"hostPort": 9090, "containerPort": 90, "protocol": "tcp"},
            ]
        },
        "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": a} for a in addresses]},
    }
    if backend:
        conf["backend"] = backend
    return conf


@pytest.mark.parametrize("backend", [None, "iptables", "nftables"])
@pytest.mark.parametrize("host_ip", ["[127.0.0.1]", "[::1]", "[::ffff:127.0.0.1]"])
@pytest.mark.parametrize("cached", [False, True])
def test_a_container_without_ipv6_skips_a_bracketed_host_ip(backend, host_ip, cached):
    config = plugin_config(_conf(V4, host_ip, backend), "c1", "conf", cached=cached)
    # An IPv6 entry, as the plugin has it: no rule of it in IPv4, though its port stays
    # in the IPv4 entry rule's multiport, as every entry's does (as for `::1`).
    assert [(m.host_port, m.host_ip) for m in config.ports if m.applies_to(4)] == [(9090, "")]
    assert [m.host_port for m in config.ports if m.applies_to(6)] == [8080, 9090]


@pytest.mark.parametrize("backend", [None, "iptables"])
@pytest.mark.parametrize("host_ip", ["[127.0.0.1]", "[::1]"])
def test_the_iptables_backend_fails_on_a_bracketed_host_ip_for_ipv6(backend, host_ip):
    with pytest.raises(BadInput, match=r"hostIP .*brackets.*ADD fails"):
        plugin_config(_conf(DUAL, host_ip, backend), "c1", "conf")


def test_the_nftables_backend_takes_a_bracketed_ipv6_and_fails_on_an_ipv4():
    config = plugin_config(_conf(DUAL, "[::1]", "nftables"), "c1", "conf")
    assert [(m.host_port, m.host_ip) for m in config.ports] == [(8080, "::1"), (9090, "")]
    with pytest.raises(BadInput, match=r"hostIP .*brackets.*ADD fails"):
        plugin_config(_conf(DUAL, "[127.0.0.1]", "nftables"), "c1", "conf")
    # (add --backend nftables: a config without the key, written there.)
    config = plugin_config(_conf(DUAL, "[::1]"), "c1", "conf", writes_to_backend=Backend.NFTABLES)
    assert config.ports[0].host_ip == "::1"
