"""host/netns.addresses_of: what a repair asks of a cached container's namespace (is its
address still on an interface there?), against real namespaces."""

from __future__ import annotations

import os
import time

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


def test_a_signal_as_a_namespace_is_entered_leaves_the_command_where_it_was(
    host_ns: str, monkeypatch
):
    """The CLI raises Terminated on SIGTERM (Interrupted on Ctrl-C) from its handler,
    which Python runs in the main thread at the first bytecode after the signal. One
    landing as setns(2) into a container's namespace returned, before the read's `try`
    that leaves it again, left the command in the container's namespace: a repair's
    `except Interrupted` then set route_localnet and flushed the UDP conntrack entries
    of the family it had written there, not on the node. Here the signal is sent right
    after the setns into the namespace, as one arriving during that call is taken."""
    import signal

    from portmapctl.errors import Terminated
    from portmapctl.host import netns

    _ip(host_ns, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
    _ip(host_ns, "addr", "add", "10.89.0.5/24", "dev", "eth0")
    real, sent = netns._setns, []

    def setns_then_a_signal(fd: int) -> None:
        real(fd)
        if not sent:
            sent.append(fd)
            os.kill(os.getpid(), signal.SIGTERM)

    def raise_terminated(signum, frame):
        raise Terminated()

    monkeypatch.setattr(netns, "_setns", setns_then_a_signal)
    before = os.stat("/proc/thread-self/ns/net").st_ino
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        with pytest.raises(Terminated):
            addresses_of({f"/run/netns/{host_ns}": False})
            for _ in range(100):  # (a signal taken by the main thread once it is back)
                time.sleep(0.01)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert sent
    assert os.stat("/proc/thread-self/ns/net").st_ino == before  # never left
    assert "10.89.0.5" in addresses_of({f"/run/netns/{host_ns}": False})[f"/run/netns/{host_ns}"]
