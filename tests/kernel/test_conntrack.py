"""portmapctl.host.conntrack: the stale selection and the netlink codec without a kernel,
then list/delete on real conntrack tables in throwaway network namespaces."""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Callable

import pytest
from conntrack_helpers import (  # noqa: F401
    REQUIRE_NETNS,
    make_netns,
    netns,
    run,
    udp,
    unavailable,
)

from portmapctl.host import conntrack
from portmapctl.host.conntrack import delete, list_udp
from portmapctl.host.netns import entered

ROOT = Path(__file__).resolve().parents[2]


# --- the DNAT helper and the stale selection ------------------------------------------


# --- argument checks that need no kernel ---------------------------------------------


# --- the codec, checked against pyroute2's own -----------------------------------------


# --- the socket conversation, with a fake netlink socket ---------------------------------


# --- real conntrack tables in throwaway network namespaces --------------------------------


def insert(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    reply_src: str | None = None,
    reply_sport: int | None = None,
    zone: int = 0,
    proto: str = "udp",
) -> None:
    args = ["conntrack", "-I", "-p", proto, "-s", src, "-d", dst]
    args += ["--sport", str(sport), "--dport", str(dport), "-t", "100"]
    if reply_src is not None:
        args += ["--reply-src", reply_src, "--reply-dst", src]
        args += ["--reply-port-src", str(reply_sport), "--reply-port-dst", str(sport)]
    if zone:
        args += ["-w", str(zone)]
    if proto == "tcp":
        args += ["--state", "ESTABLISHED"]
    run(*args)


def remaining(family: int = 4, proto: str = "udp") -> set[tuple[str, str, int, int]]:
    """(src, dst, sport, dport) of the original tuples `conntrack -L` shows."""
    out = run("conntrack", "-L", "-p", proto, "-f", "ipv4" if family == 4 else "ipv6")
    tuples = set()
    for line in out.splitlines():
        fields: dict[str, str] = {}
        for word in line.split():
            key, _, value = word.partition("=")
            fields.setdefault(key, value)
        tuples.add((fields["src"], fields["dst"], int(fields["sport"]), int(fields["dport"])))
    return tuples


def fill_mixed_table() -> None:
    insert("192.0.2.7", "10.0.0.1", 40001, 5353)
    insert("192.0.2.7", "10.0.0.1", 40002, 5353, reply_src="10.88.0.5", reply_sport=53)
    insert("192.0.2.7", "10.0.0.1", 40003, 8053)
    insert("192.0.2.7", "10.0.0.1", 40004, 5353, proto="tcp")
    insert("2001:db8::7", "fd00::1", 40005, 5353)
    insert("2001:db8::7", "fd00::1", 40006, 5353, reply_src="fd00::88:5", reply_sport=53)


@pytest.mark.netns
def test_list_reads_both_families_and_filters_ports(netns: str) -> None:
    fill_mixed_table()
    everything = list_udp()
    assert {(e.family, e.sport) for e in everything} == {
        (4, 40001), (4, 40002), (4, 40003), (6, 40005), (6, 40006)
    }  # fmt: skip
    dnated = next(e for e in everything if e.sport == 40002)
    assert dnated == udp(sport=40002, reply_src="10.88.0.5", reply_sport=53)
    assert dnated.dnat and dnated.ct_id is not None
    assert not next(e for e in everything if e.sport == 40001).dnat
    v6 = next(e for e in everything if e.sport == 40006)
    assert v6 == udp("2001:db8::7", "fd00::1", 40006, 5353, "fd00::88:5", 53, family=6)

    in_5353 = {(e.family, e.sport) for e in list_udp(dports=[5353])}
    assert in_5353 == {(4, 40001), (4, 40002), (6, 40005), (6, 40006)}
    assert {e.sport for e in list_udp(families=[6], dports=[5353])} == {40005, 40006}
    # More ports than the kernel filters one by one: one dump per family instead.
    many = range(5000, 5001 + conntrack._PORT_DUMPS * 50)
    assert {(e.family, e.sport) for e in list_udp(dports=many)} == in_5353
    assert list_udp(dports=[9]) == []


@pytest.mark.netns
def test_delete_removes_exactly_the_given_entries(netns: str) -> None:
    fill_mixed_table()
    assert delete(list_udp(dports=[5353])) == 4
    assert remaining(4) == {("192.0.2.7", "10.0.0.1", 40003, 8053)}
    assert remaining(4, "tcp") == {("192.0.2.7", "10.0.0.1", 40004, 5353)}
    assert remaining(6) == set()


@pytest.mark.netns
def test_delete_of_some_entries_keeps_the_others(netns: str) -> None:
    insert("192.0.2.7", "10.0.0.1", 40001, 5353, reply_src="10.88.0.5", reply_sport=53)
    insert("192.0.2.7", "10.0.0.1", 40002, 5353, reply_src="10.88.0.9", reply_sport=53)
    insert("192.0.2.7", "10.0.0.1", 40003, 5353)
    insert("2001:db8::7", "fd00::1", 40004, 5353, reply_src="fd00::88:5", reply_sport=53)
    going = [e for e in list_udp(dports=[5353]) if e.sport != 40001]
    assert {e.sport for e in going} == {40002, 40003, 40004}
    assert delete(going) == 3
    assert remaining(4) == {("192.0.2.7", "10.0.0.1", 40001, 5353)}
    assert remaining(6) == set()


@pytest.mark.netns
def test_delete_ignores_entries_already_gone_across_batches(netns: str) -> None:
    count = conntrack._BATCH + 40
    for i in range(count):
        insert(f"192.0.2.{i % 250 + 1}", "10.0.0.1", 20000 + i, 5353)
    listed = list_udp(dports=[5353])
    assert len(listed) == count
    gone = listed[::25]
    for entry in gone:
        run("conntrack", "-D", "-p", "udp", "-s", entry.src, "-d", entry.dst,
            "--sport", str(entry.sport), "--dport", str(entry.dport))  # fmt: skip
    assert delete(listed + listed[:3]) == count - len(gone)
    assert remaining(4) == set()
    assert delete(listed) == 0


@pytest.mark.netns
def test_delete_spares_a_newer_entry_and_another_zone(netns: str) -> None:
    insert("192.0.2.7", "10.0.0.1", 40001, 5353)
    insert("192.0.2.7", "10.0.0.1", 40001, 5353, zone=7)
    by_zone = {e.zone: e for e in list_udp(dports=[5353])}
    assert set(by_zone) == {0, 7}
    # Another kernel id stands for an entry that took the tuple after the dump.
    newer = dataclasses.replace(by_zone[0], ct_id=(by_zone[0].ct_id or 0) ^ 1)
    assert delete([newer]) == 0
    assert delete([by_zone[7]]) == 1
    assert [e.zone for e in list_udp(dports=[5353])] == [0]
    assert delete([by_zone[0]]) == 1
    assert list_udp() == []


@pytest.mark.netns
def test_delete_finds_entries_of_a_one_direction_zone(netns: str) -> None:
    """A zone of the original direction only (`ct original zone set`) comes in the
    original tuple, not as CTA_ZONE: read as zone 0, the entry was never found to
    delete (flush-udp counted it deleted in its list, and it stayed)."""
    insert("192.0.2.7", "10.0.0.1", 40001, 5353)
    for sport, zone in ((40002, "--orig-zone"), (40003, "--reply-zone")):
        run("conntrack", "-I", "-p", "udp", "-s", "192.0.2.7", "-d", "10.0.0.1", "--sport",
            str(sport), "--dport", "5353", "-t", "100", zone, "9")  # fmt: skip
    listed = list_udp(dports=[5353])
    # The reply-direction zone does not take part in finding the original tuple.
    assert sorted((e.sport, e.zone) for e in listed) == [(40001, 0), (40002, 9), (40003, 0)]
    assert delete([e for e in listed if e.sport == 40002]) == 1
    assert sorted(e.sport for e in list_udp(dports=[5353])) == [40001, 40003]
    assert delete(list_udp(dports=[5353])) == 2
    assert list_udp() == []


@pytest.mark.netns
def test_real_dnat_traffic(make_netns: Callable[[], str]) -> None:
    """A datagram from a peer to the host's port 5353, DNATed by a PREROUTING rule back
    to the peer's port 53, as the portmap plugin's rules do for a container."""
    if shutil.which("iptables") is None:
        unavailable("needs the iptables command")
    host, peer = make_netns(), make_netns()
    veth = f"pmt{uuid.uuid4().hex[:8]}"
    host_ip, peer_ip = "10.250.0.1", "10.250.0.2"
    run("ip", "link", "add", f"{veth}h", "netns", host, "type", "veth",
        "peer", "name", f"{veth}p", "netns", peer)  # fmt: skip
    for ns, dev, address in ((host, f"{veth}h", host_ip), (peer, f"{veth}p", peer_ip)):
        run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", dev)
        run("ip", "-n", ns, "link", "set", dev, "up")
    run("ip", "netns", "exec", host, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    run("ip", "netns", "exec", host, "iptables", "-t", "nat", "-A", "PREROUTING", "-p", "udp",
        "--dport", "5353", "-j", "DNAT", "--to-destination", f"{peer_ip}:53")  # fmt: skip
    # Hairpin, as the plugin does it: without SNAT the peer would see its own address
    # as the source and drop the datagram.
    run("ip", "netns", "exec", host, "iptables", "-t", "nat", "-A", "POSTROUTING", "-p", "udp",
        "-d", peer_ip, "--dport", "53", "-j", "MASQUERADE")  # fmt: skip

    with entered(peer):
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with server, client:
        server.bind((peer_ip, 53))
        server.settimeout(5)
        client.bind((peer_ip, 0))
        client.sendto(b"portmapctl test", (host_ip, 5353))
        assert server.recvfrom(100)[0] == b"portmapctl test"  # it went through the DNAT
        client_port = client.getsockname()[1]

    with entered(host):
        [entry] = list_udp(dports=[5353])
        assert (entry.src, entry.sport, entry.dst) == (peer_ip, client_port, host_ip)
        assert (entry.reply_src, entry.reply_sport, entry.reply_dst) == (peer_ip, 53, host_ip)
        assert entry.dnat
        assert delete([entry]) == 1
        assert list_udp() == []


@pytest.mark.netns
def test_without_net_admin_is_a_host_problem(netns: str) -> None:
    if shutil.which("setpriv") is None:
        unavailable("needs the setpriv command")
    code = (
        "import sys\n"
        "from portmapctl import errors\nfrom portmapctl.host import conntrack\n"
        "try:\n"
        "    conntrack.list_udp()\n"
        "except errors.HostProblem as err:\n"
        "    sys.exit(f'{err.exit_code}: {err}')\n"
    )
    result = subprocess.run(
        ["setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin",
         sys.executable, "-c", code],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == (
        "3: cannot list conntrack entries: Operation not permitted;"
        " run as root (needs CAP_NET_ADMIN in the network namespace)"
    )
