"""The interface the kernel routes a container's address through (what `ip route get`
answers): add's route_localnet is set on that interface.

Asked over rtnetlink in this process (RTM_GETROUTE, one request per address on one
socket), in the network namespace of the calling thread. It was one `ip -batch`
process per add: a fork and exec that cost add about 2 ms of its 85 at 1,000
containers, measured in turns (docs/performance.md), and `ip` itself on PATH.

The kernel ABI: linux/rtnetlink.h (struct rtmsg, RTA_DST, RTA_OIF).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Dict, Optional, Sequence

from portmapctl.host import netlink as nl

_NETLINK_ROUTE = 0
_RTM_NEWROUTE, _RTM_GETROUTE = 24, 26
_RTA_DST, _RTA_OIF = 1, 4
# struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
_RTMSG = struct.Struct("=BBBBBBBBI")
_U32 = struct.Struct("=I")
# An answer that never comes is a kernel bug; the lookup is not worth a hung add.
_TIMEOUT = 10.0


def route_interfaces(addresses: Sequence[str]) -> Dict[str, str]:
    """The interface the kernel routes each address through, by address; an address
    without a route (ENETUNREACH, say) is left out, as are ones that are not IP
    addresses. OSError when rtnetlink cannot be asked at all."""
    found: Dict[str, str] = {}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_ROUTE) as sock:
        sock.settimeout(_TIMEOUT)
        sock.bind((0, 0))
        for seq, address in enumerate(addresses, start=1):
            index = _output_interface(sock, address, seq)
            if index is None:
                continue
            try:
                found[address] = socket.if_indextoname(index)
            except OSError:
                continue  # (the interface went meanwhile: no route to it now)
    return found


def _output_interface(sock: socket.socket, address: str, seq: int) -> Optional[int]:
    """RTA_OIF of the route the kernel would take to `address` (None: no route)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    body = _RTMSG.pack(family, ip.max_prefixlen, 0, 0, 0, 0, 0, 0, 0)
    body += nl.nla(_RTA_DST, ip.packed)
    sock.send(
        nl.HEADER.pack(nl.HEADER.size + len(body), _RTM_GETROUTE, nl.NLM_F_REQUEST, seq, 0) + body
    )
    while True:
        buf = sock.recv(1 << 16)
        offset = 0
        while offset + nl.HEADER.size <= len(buf):
            length, kind, _flags, got_seq, _port = nl.HEADER.unpack_from(buf, offset)
            if length < nl.HEADER.size:
                raise OSError("a netlink message shorter than its header")
            end = offset + length
            if got_seq == seq:
                if kind == nl.NLMSG_ERROR:
                    return None  # (-ENETUNREACH, -EHOSTUNREACH...: no route)
                if kind == _RTM_NEWROUTE:
                    found = nl.attrs(buf, offset + nl.HEADER.size + _RTMSG.size, end)
                    if _RTA_OIF not in found:
                        return None  # (a blackhole or unreachable route: no device)
                    return int(_U32.unpack_from(buf, found[_RTA_OIF][0])[0])
            offset = (end + 3) & ~3
