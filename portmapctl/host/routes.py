"""The interface the kernel routes a container's address through (what `ip route get`
answers): add's route_localnet is set on that interface.

Asked over rtnetlink in this process (RTM_GETROUTE, one request per address, sent in
batches on one socket), in the network namespace of the calling thread. It was one
`ip -batch` process per add: a fork and exec that cost add about 2 ms of its 85 at
1,000 containers, measured in turns (docs/performance.md), and `ip` itself on PATH.
5,000 addresses (a big repair) take 25 ms here, `ip -batch` took 28-60 ms.

The kernel ABI: linux/rtnetlink.h (struct rtmsg, RTA_DST, RTA_OIF).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any, Dict, Optional, Sequence, Tuple

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
    asked = []
    for address in addresses:
        try:
            asked.append((address, ipaddress.ip_address(address)))
        except ValueError:
            continue
    indexes: Dict[str, int] = {}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_ROUTE) as sock:
        sock.settimeout(_TIMEOUT)
        sock.bind((0, 0))
        # Requests go _BATCH to a send, their answers read before the next ones: a
        # repair of 5,000 containers asks 5,000 routes (one by one: 100 ms; `ip -batch`
        # took 30-60). A batch's answers fit the socket's default receive buffer.
        for first in range(0, len(asked), _BATCH):
            indexes.update(_ask(sock, asked[first : first + _BATCH], first))
    names: Dict[int, Optional[str]] = {}
    found: Dict[str, str] = {}
    for address, index in indexes.items():
        if index not in names:
            try:
                names[index] = socket.if_indextoname(index)
            except OSError:
                names[index] = None  # (the interface went meanwhile: no route to it now)
        name = names[index]
        if name is not None:
            found[address] = name
    return found


_BATCH = 256


def _ask(sock: socket.socket, batch: Sequence[Tuple[str, Any]], first: int) -> Dict[str, int]:
    """RTA_OIF of the route the kernel would take to each address of `batch` (left out:
    no route), asked in one send; sequence numbers from `first` + 1."""
    messages = []
    for k, (_, ip) in enumerate(batch):
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        body = _RTMSG.pack(family, ip.max_prefixlen, 0, 0, 0, 0, 0, 0, 0)
        body += nl.nla(_RTA_DST, ip.packed)
        seq = first + k + 1
        messages.append(
            nl.HEADER.pack(nl.HEADER.size + len(body), _RTM_GETROUTE, nl.NLM_F_REQUEST, seq, 0)
        )
        messages.append(body)
    sock.send(b"".join(messages))
    found: Dict[str, int] = {}
    left = len(batch)
    while left:
        buf = sock.recv(1 << 16)
        offset = 0
        while offset + nl.HEADER.size <= len(buf):
            length, kind, _flags, seq, _port = nl.HEADER.unpack_from(buf, offset)
            if length < nl.HEADER.size:
                raise OSError("a netlink message shorter than its header")
            end = offset + length
            k = seq - first - 1
            if 0 <= k < len(batch) and kind in (nl.NLMSG_ERROR, _RTM_NEWROUTE):
                left -= 1
                # (NLMSG_ERROR: -ENETUNREACH, -EHOSTUNREACH...: no route. No RTA_OIF:
                # a blackhole or unreachable route, no device.)
                if kind == _RTM_NEWROUTE:
                    attributes = nl.attrs(buf, offset + nl.HEADER.size + _RTMSG.size, end)
                    if _RTA_OIF in attributes:
                        found[batch[k][0]] = _U32.unpack_from(buf, attributes[_RTA_OIF][0])[0]
            offset = (end + 3) & ~3
    return found
