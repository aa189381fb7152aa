"""What tests/kernel/test_flush_udp.py and tests/unit/test_flush_udp_pure.py share."""

from __future__ import annotations

import secrets
import subprocess
import tempfile
from typing import Iterator, Optional

import pytest
import realplugin as rp
from hypothesis import strategies as st

from portmapctl.cli import main
from portmapctl.host.conntrack import ConntrackEntry
from portmapctl.host.netns import entered
from portmapctl.iptables.inventory import Mapping

HOST_IP, CTR_IP = "10.99.0.1", "10.99.0.2"


def udp(
    src: str = "192.0.2.7",
    dst: str = "10.0.0.1",
    sport: int = 40000,
    dport: int = 5353,
    reply_src: Optional[str] = None,
    reply_sport: Optional[int] = None,
    family: int = 4,
) -> ConntrackEntry:
    """An entry as the kernel shows it; DNATed when reply_src is given."""
    return ConntrackEntry(
        family, "udp", src, dst, sport, dport,
        reply_src or dst, src, reply_sport or dport, sport,
    )  # fmt: skip


def mapping(
    container_ip: str = "10.88.0.5",
    host_port: int = 5353,
    host_ip: Optional[str] = None,
    container_id: str = "abc123",
    family: int = 4,
    protocol: str = "udp",
    shadowed_by: Optional[str] = None,
    container_port: int = 53,
) -> Mapping:
    return Mapping(
        "mynet", container_id, family, protocol, host_ip, host_port, container_ip,
        container_port, True, "CNI-DN-x", ("ok",), shadowed_by,
    )  # fmt: skip


addresses = st.sampled_from(["10.0.0.1", "10.88.0.5", "10.88.0.9", "127.0.0.1"])


some_ports = st.sampled_from([5353, 6000, 8053])


entries = st.builds(udp, dst=addresses, dport=some_ports, sport=st.integers(1, 65535),
                    reply_src=st.none() | addresses,
                    reply_sport=st.none() | st.sampled_from([53, 54]))  # fmt: skip


mappings = st.builds(mapping, container_ip=addresses, host_port=some_ports,
                     host_ip=st.none() | st.just("127.0.0.1"))  # fmt: skip


def ns_run(ns: str, *args: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *args], check=True, capture_output=True, text=True
    ).stdout


def ct_args(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    reply_src: Optional[str] = None,
    reply_sport: Optional[int] = None,
    proto: str = "udp",
    reply_dst: Optional[str] = None,
) -> list[str]:
    """`conntrack -I` arguments for one entry; DNATed when reply_src is given, and
    masqueraded (SNATed) when reply_dst is given and is not `src`."""
    args = ["-I", "-p", proto, "-s", src, "-d", dst]
    args += ["--sport", str(sport), "--dport", str(dport), "-t", "120"]
    if reply_src is not None:
        args += ["--reply-src", reply_src, "--reply-dst", reply_dst or src]
        args += ["--reply-port-src", str(reply_sport), "--reply-port-dst", str(sport)]
    if proto == "tcp":
        args += ["--state", "ESTABLISHED"]
    return args


def masquerade_flows(
    container: str, host_ip: str, dport: int, cport: int, gateway: str, outside: str, sport: int
) -> list[list[str]]:
    """`conntrack -I` arguments for four UDP flows to host_ip:dport that reach
    container:cport, from source ports sport.. sport+3: a hairpin one and a localhost
    one not masqueraded (their replies bypass the node), a hairpin one masqueraded to
    `gateway`, and an outside client's (which wants no masquerade)."""
    flows = [  # (source, destination, the reply's destination)
        (container, host_ip, container),
        ("127.0.0.1", "127.0.0.1", "127.0.0.1"),
        (container, host_ip, gateway),
        (outside, host_ip, outside),
    ]
    return [
        ct_args(source, destination, sport + n, dport, container, cport, reply_dst=reply_to)
        for n, (source, destination, reply_to) in enumerate(flows)
    ]


def ct_load(ns: str, entries: list[list[str]]) -> None:
    """Many entries with one conntrack process (`-R`: one command per line)."""
    with tempfile.NamedTemporaryFile("w", suffix=".conntrack") as commands:
        commands.write("".join(" ".join(args) + "\n" for args in entries))
        commands.flush()
        ns_run(ns, "conntrack", "-R", commands.name)


def ct_sports(ns: str, proto: Optional[str] = None) -> set[int]:
    """The original source ports of every entry (each test entry has its own), as the
    conntrack tool lists them, both families, all protocols (or `proto`'s alone: a
    node whose bridge sent its own ICMPv6 has entries with no port)."""
    found = set()
    only = ["-p", proto] if proto is not None else []
    for family in ("ipv4", "ipv6"):
        for line in ns_run(ns, "conntrack", "-L", "-f", family, *only).splitlines():
            words = dict(w.split("=", 1) for w in reversed(line.split()) if "=" in w)
            found.add(int(words["sport"]))  # reversed: the first sport= (original) wins
    return found


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """portmapctl in this process (no interpreter start-up): (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else int(done.code is not None)
    out, err = capsys.readouterr()
    return code, out, err


ENTRIES = {
    40001: ("192.0.2.1", "10.0.0.1", 5353, "10.88.0.5", 53),  # current container
    40002: ("192.0.2.2", "10.0.0.1", 5353, "10.88.0.9", 53),  # old container address
    40003: ("192.0.2.3", "10.0.0.1", 5353, None, None),  # began before the rule
    40004: ("192.0.2.4", "10.0.0.1", 8053, "10.88.0.9", 53),  # port no longer mapped
    40005: ("192.0.2.5", "10.0.0.1", 9999, None, None),  # unmapped, the host's own
    40011: ("2001:db8::1", "fd00::1", 5353, "fd00::5", 53),  # IPv6, current
    40012: ("2001:db8::2", "fd00::1", 5353, "fd00::9", 53),  # IPv6, old address
    40013: ("2001:db8::3", "fd00::1", 8053, None, None),  # IPv6, unmapped
    40021: ("127.0.0.1", "127.0.0.1", 6000, "10.88.0.6", 60),  # def456 via localhost
    40022: ("192.0.2.6", "10.0.0.1", 6000, None, None),  # not def456's host IP
}


TCP_SPORT = 40031  # a TCP entry to 5353: never a UDP flush's business


ALL = set(ENTRIES) | {TCP_SPORT}


@pytest.fixture
def container(host_ns: str) -> Iterator[str]:
    """A container namespace on a veth pair to the host namespace."""
    ctr = rp.create_netns("pmt-ctr")
    veth = f"pmt{secrets.token_hex(4)}"
    try:
        subprocess.run(["ip", "link", "add", f"{veth}h", "netns", host_ns, "type", "veth",
                        "peer", "name", f"{veth}c", "netns", ctr], check=True)  # fmt: skip
        for ns, dev, address in ((host_ns, f"{veth}h", HOST_IP), (ctr, f"{veth}c", CTR_IP)):
            subprocess.run(["ip", "-n", ns, "addr", "add", f"{address}/24", "dev", dev], check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", dev, "up"], check=True)
        # Hairpin: the container's datagram to the host port comes back out the veth.
        ns_run(host_ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        yield ctr
    finally:
        rp.delete_netns(ctr)


def route_localnet(ns: str, device: str) -> str:
    with entered(ns), open(f"/proc/sys/net/ipv4/conf/{device}/route_localnet") as knob:
        return knob.read().strip()
