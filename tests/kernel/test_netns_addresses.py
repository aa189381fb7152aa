"""host/netns.addresses_of: what a repair asks of a cached container's namespace (is its
address still on an interface there?), against real namespaces."""

from __future__ import annotations

import os

import pytest
import realplugin as rp

from portmapctl.host.netns import addresses_of, namespace_addresses

pytestmark = pytest.mark.netns


def _ip(name: str, *args: str) -> None:
    rp._run([rp._ip(), "-n", name, *args], check=True)


def test_the_addresses_of_an_interface_and_none_once_it_is_deleted(host_ns: str, tmp_path):
    ctr = host_ns  # (a fresh namespace: a container's here)
    path = f"/run/netns/{ctr}"
    _ip(ctr, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
    _ip(ctr, "addr", "add", "10.89.0.5/24", "dev", "eth0")
    _ip(ctr, "addr", "add", "fd00:89::5/64", "dev", "eth0", "nodad")
    before = os.stat("/proc/self/ns/net").st_ino
    found = addresses_of({path: True, str(tmp_path / "nothing"): False, str(tmp_path): False})
    assert os.stat("/proc/self/ns/net").st_ino == before  # back where it was
    assert {"10.89.0.5", "fd00:89::5"} <= found[path]  # (interface down: both still there)
    # Nothing known of what cannot be entered: no such file, no namespace file.
    assert found[str(tmp_path / "nothing")] is None and found[str(tmp_path)] is None
    assert "fd00:89::5" not in addresses_of({path: False})[path]  # IPv6 only when asked
    _ip(ctr, "link", "del", "eth0")  # what bridge's DEL does first
    assert addresses_of({path: True})[path] == {"127.0.0.1", "::1"}
    assert namespace_addresses(str(tmp_path / "nothing")) == set()
