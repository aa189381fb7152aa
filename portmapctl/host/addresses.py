"""The node's own addresses, as the kernel routes them (the `local` routing table).

The plugin's DNAT is entered only for `-m addrtype --dst-type LOCAL`, so a UDP flow
whose destination is not one of the node's addresses (a container's own DNS query to
a server outside, forwarded and masqueraded) never went through a mapping and cannot
be misrouted by one: flush-udp and gc must leave it alone (SPEC §3 flush-udp).

"Local" is what the kernel's addrtype match uses: a route of type RTN_LOCAL in the
`local` table (255), which covers every address on every interface and whole loopback
prefixes (127.0.0.0/8), or in `main` (254). The match (no interface given, as the
plugin writes it) looks in those: IPv4 in `local`, which holds `main` too while no
custom `ip rule` exists; IPv6 by a route lookup, `local` then `main`. Measured with
an addrtype rule's counters: a local route in table 100 (policy routing, a VRF's)
makes no address the plugin's DNAT is entered for, and a flow to it was never mapped;
one in `main` does (IPv4 only while no custom rule exists: counted all the same).
Read with one RTM_GETROUTE dump per family over NETLINK_ROUTE, in the namespace the
calling thread is in; struct, no pyroute2 (its import alone costs 0.15 s).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from dataclasses import dataclass
from typing import FrozenSet, Iterable, Iterator, Optional, Tuple, Union

from portmapctl.errors import HostProblem

# linux/netlink.h, linux/rtnetlink.h
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300
_RTM_NEWROUTE = 24
_RTM_GETROUTE = 26
_RTM_NEWADDR = 20
_RTM_GETADDR = 22
_IFA_ADDRESS, _IFA_LOCAL = 1, 2
_RTN_LOCAL = 2
_OWN_TABLES = (254, 255)  # main, local
_RTA_DST = 1
_AF = {4: socket.AF_INET, 6: socket.AF_INET6}
_HOST_BITS = {4: 32, 6: 128}

_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, seq, port id
_RTMSG = struct.Struct(
    "=BBBBBBBBI"
)  # family, dst_len, src_len, tos, table, proto, scope, type, flags
_NLA = struct.Struct("=HH")  # length, type
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, interface
_ERRNO = struct.Struct("=i")

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
# Loopback is the node's own whatever the routing table says (lo down, a dump race).
_ALWAYS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@dataclass(frozen=True)
class LocalAddresses:
    """Single addresses (packed, for a set lookup per entry) and wider prefixes."""

    hosts: FrozenSet[Tuple[int, bytes]]
    prefixes: Tuple[Network, ...]

    def __contains__(self, item: Tuple[int, str]) -> bool:
        family, text = item
        try:
            packed = socket.inet_pton(_AF[family], text)
        except (OSError, KeyError, TypeError):
            return False
        if (family, packed) in self.hosts:
            return True
        address = ipaddress.ip_address(packed)
        return any(address in prefix for prefix in self.prefixes)


def from_networks(networks: Iterable[Network]) -> LocalAddresses:
    hosts = set()
    prefixes = []
    for network in networks:
        family = network.version
        if network.prefixlen == _HOST_BITS[family]:
            hosts.add((family, network.network_address.packed))
        else:
            prefixes.append(network)
    return LocalAddresses(frozenset(hosts), tuple(prefixes))


def local_addresses(families: Iterable[int] = (4, 6)) -> LocalAddresses:
    """The node's own addresses in the current network namespace."""
    networks = list(_ALWAYS)
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    except OSError as err:
        raise HostProblem(f"cannot read the node's addresses (netlink): {err.strerror}") from None
    with sock:
        for family in sorted(set(families)):
            networks.extend(_dump_local_routes(sock, family))
    return from_networks(networks)


def _dump_local_routes(sock: socket.socket, family: int) -> Iterator[Network]:
    body = _RTMSG.pack(_AF[family], 0, 0, 0, 0, 0, 0, 0, 0)
    try:
        for buf, start, end in _dump(sock, _RTM_GETROUTE, _RTM_NEWROUTE, body, family):
            found = _local_route(buf, start, end, family)
            if found is not None:
                yield found
    except _Refused as err:
        raise HostProblem(f"cannot read the node's addresses (netlink): {err.strerror}") from None


class _Refused(OSError):
    """The kernel's NLMSG_ERROR answer to a dump."""


def _dump(
    sock: socket.socket, request: int, reply: int, body: bytes, seq: int
) -> Iterator[Tuple[bytes, int, int]]:
    """One NETLINK_ROUTE dump (`request` with `body`, numbered `seq`: one per family on
    a socket): (buffer, start, end) of the body of each `reply` message. _Refused for
    the kernel's refusal."""
    header = _NLMSGHDR.pack(
        _NLMSGHDR.size + len(body), request, _NLM_F_REQUEST | _NLM_F_DUMP, seq, 0
    )
    sock.sendto(header + body, (0, 0))
    while True:
        buf = sock.recv(1 << 16)
        offset = 0
        while offset + _NLMSGHDR.size <= len(buf):
            length, kind, _flags, msg_seq, _pid = _NLMSGHDR.unpack_from(buf, offset)
            if length < _NLMSGHDR.size:
                return
            start, offset = offset + _NLMSGHDR.size, offset + _align(length)
            if msg_seq != seq:
                continue
            if kind == _NLMSG_DONE:
                return
            if kind == _NLMSG_ERROR:
                (code,) = _ERRNO.unpack_from(buf, start)
                if code:
                    raise _Refused(-code, os.strerror(-code))
                continue
            if kind == reply:
                yield buf, start, start - _NLMSGHDR.size + length


def _local_route(buf: bytes, start: int, end: int, family: int) -> Union[Network, None]:
    rtm_family, dst_len, _s, _t, table, _p, _scope, rtm_type, _f = _RTMSG.unpack_from(buf, start)
    if rtm_type != _RTN_LOCAL or rtm_family != _AF[family] or table not in _OWN_TABLES:
        return None
    offset = start + _RTMSG.size
    while offset + _NLA.size <= end:
        length, kind = _NLA.unpack_from(buf, offset)
        if length < _NLA.size:
            break
        if kind & 0x3FFF == _RTA_DST:
            packed = bytes(buf[offset + _NLA.size : offset + length])
            address = ipaddress.ip_address(packed)
            return ipaddress.ip_network(f"{address}/{dst_len}", strict=False)
        offset += _align(length)
    return None


def interface_addresses(families: Iterable[int], interface: Optional[str] = None) -> FrozenSet[str]:
    """The addresses on the interfaces of the calling thread's network namespace (any
    state: an IPv4 address stays while its interface is down, an IPv6 one goes, as
    the kernel keeps them), as text: one RTM_GETADDR dump per family over a netlink
    socket opened here. A socket is of the namespace its thread was in when it was
    made, so this is right after setns(2) on every kernel, where /proc/thread-self/net
    showed the first namespace's files after a setns on some (4.19-5.1 unpatched).
    `interface`: those on the interface of that name alone (none where there is no
    such interface). OSError when the namespace cannot be asked."""
    index = None
    if interface is not None:
        try:
            # (Its socket, as ours, is of the namespace this thread is in.)
            index = socket.if_nametoindex(interface)
        except OSError:
            return frozenset()
    found = set()
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        for family in sorted(set(families)):
            found.update(_dump_addresses(sock, family, index))
    return frozenset(found)


def _dump_addresses(sock: socket.socket, family: int, index: Optional[int]) -> Iterator[str]:
    body = _IFADDRMSG.pack(_AF[family], 0, 0, 0, 0)
    for buf, start, end in _dump(sock, _RTM_GETADDR, _RTM_NEWADDR, body, family):
        # (A dump is of every interface: the kernel filters by index only when asked
        # strictly, which older kernels refuse.)
        if index is not None and _IFADDRMSG.unpack_from(buf, start)[4] != index:
            continue
        found = _address(buf, start, end, family)
        if found is not None:
            yield found


def _address(buf: bytes, start: int, end: int, family: int) -> Union[str, None]:
    """An RTM_NEWADDR's own address: IFA_LOCAL where given (IPv4; IFA_ADDRESS is then
    the peer of a point-to-point link), else IFA_ADDRESS."""
    if _IFADDRMSG.unpack_from(buf, start)[0] != _AF[family]:
        return None
    attrs = {}
    offset = start + _IFADDRMSG.size
    while offset + _NLA.size <= end:
        length, kind = _NLA.unpack_from(buf, offset)
        if length < _NLA.size:
            break
        attrs[kind & 0x3FFF] = bytes(buf[offset + _NLA.size : offset + length])
        offset += _align(length)
    packed = attrs.get(_IFA_LOCAL) or attrs.get(_IFA_ADDRESS)
    if packed is None or len(packed) != _HOST_BITS[family] // 8:
        return None
    return str(ipaddress.ip_address(packed))


def _align(length: int) -> int:
    return (length + 3) & ~3
