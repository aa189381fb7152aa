"""UDP conntrack entries behind mapped host ports (SPEC §3 flush-udp).

The messages are packed and parsed here with struct and go over a plain netlink
socket (NETLINK_NETFILTER), set up as pyroute2's NFCTSocket sets up its own: pyroute2's
codec costs about 100 µs per message to encode and 50-100 µs to decode, its high-level
Conntrack API spends about 10 s on dumping and deleting 10,000 entries one request at
a time, against a budget of 2 s (SPEC §6; see benchmarks/conntrack_bench.py), and
importing it just to open the socket cost `add` and `gc` 0.15 s (benchmarks/bench.py).
tests/kernel/test_conntrack.py checks the codec against pyroute2's. Deletes go out as batches
of messages per sendto.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import socket
import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Iterable, Iterator

from portmapctl.errors import BadInput, HostProblem
from portmapctl.host.netlink import ERRNO as _ERRNO
from portmapctl.host.netlink import HEADER as _NLMSGHDR
from portmapctl.host.netlink import NETLINK_NETFILTER as _NETLINK_NETFILTER
from portmapctl.host.netlink import NFGENMSG as _NFGENMSG
from portmapctl.host.netlink import NLM_F_ACK as _NLM_F_ACK
from portmapctl.host.netlink import NLM_F_DUMP as _NLM_F_DUMP
from portmapctl.host.netlink import NLM_F_REQUEST as _NLM_F_REQUEST
from portmapctl.host.netlink import NLMSG_DONE as _NLMSG_DONE
from portmapctl.host.netlink import NLMSG_ERROR as _NLMSG_ERROR
from portmapctl.host.netlink import attrs as _attrs
from portmapctl.host.netlink import nest as _nest
from portmapctl.host.netlink import nla as _nla

# Kernel ABI: linux/netfilter/nfnetlink_conntrack.h (the framing: host/netlink.py).
_NFNL_SUBSYS_CTNETLINK = 1
_IPCTNL_MSG_CT_GET = 1
_IPCTNL_MSG_CT_DELETE = 2
_CTA_TUPLE_ORIG = 1
_CTA_TUPLE_REPLY = 2
_CTA_ID = 12
_CTA_ZONE = 18
_CTA_FILTER = 25
_CTA_TUPLE_IP = 1
_CTA_TUPLE_PROTO = 2
_CTA_TUPLE_ZONE = 3
_CTA_PROTO_NUM = 1
_CTA_PROTO_SRC_PORT = 2
_CTA_PROTO_DST_PORT = 3
_CTA_FILTER_ORIG_FLAGS = 1
_FILTER_PROTO_NUM = 1 << 3
_FILTER_PROTO_DST_PORT = 1 << 5
# CTA_IP_V4_SRC/DST and CTA_IP_V6_SRC/DST
_IP_ATTRS = {socket.AF_INET: (1, 2), socket.AF_INET6: (3, 4)}
_AF = {4: socket.AF_INET, 6: socket.AF_INET6}

_BE16 = struct.Struct("!H")
_BE32 = struct.Struct("!I")

# Each acknowledgement takes about 1 KiB of the receive buffer (1 MiB asked, which the
# kernel doubles, as pyroute2 sets it up); a batch must fit, or the kernel drops acks
# and the count is lost.
_SOCKET_BUFFER = 1 << 20
_BATCH = 256
# Up to this many ports, the kernel filters the dump by port (one table walk per
# port); past it, one walk per family filtered by protocol, and Python picks the ports.
_PORT_DUMPS = 8
_RECV_SIZE = 1 << 16


def packed(family: int, text: str) -> bytes | None:
    """An address in a form that compares right whatever its spelling (`fd00::5`,
    `fd00:0::5`): inet_pton, a twentieth of ipaddress's cost (10,000 conntrack entries).
    None for what is no address (a foreign rule's DNAT range): it matches nothing."""
    try:
        return socket.inet_pton(socket.AF_INET if family == 4 else socket.AF_INET6, text)
    except (OSError, TypeError):
        return None


@dataclass(frozen=True)
class ConntrackEntry:
    """One conntrack entry: the original tuple, as the client sent it, and the reply
    tuple, which holds the DNAT destination (reply_src) when the entry was DNATed."""

    family: int  # 4 or 6
    protocol: str
    src: str
    dst: str
    sport: int
    dport: int
    reply_src: str
    reply_dst: str
    reply_sport: int
    reply_dport: int
    zone: int = 0
    # The kernel's id for this entry: a delete carrying it spares a newer entry that
    # has taken the same tuple since the dump, when the kernel gave that one another id.
    # Not always: the id is a hash of the entry's memory slot and tuple, and a new
    # entry often reuses the freed slot (measured on 6.18: the same id 9 times in 10;
    # that flow's next datagram makes it again, through the rules).
    ct_id: int | None = field(default=None, compare=False)

    @property
    def dnat(self) -> bool:
        """Whether the entry was DNATed (its replies come from elsewhere)."""
        return self.reply_src != self.dst or self.reply_sport != self.dport


def list_udp(
    families: Collection[int] = (4, 6), dports: Collection[int] | None = None
) -> list[ConntrackEntry]:
    """The UDP entries of the current network namespace, optionally only those whose
    original destination port is in dports."""
    afs = dict.fromkeys(_address_family(family) for family in families)
    ports = None if dports is None else {_port(port) for port in dports}
    if ports is not None and not ports:
        return []
    per_port: list[int | None] = (
        sorted(ports) if ports is not None and len(ports) <= _PORT_DUMPS else [None]
    )
    entries: list[ConntrackEntry] = []
    with _session("list") as sock:
        for af in afs:
            for port in per_port:
                # Each dump's own port filtered again here: a kernel before 5.8 ignores
                # the filter and answers every dump with every UDP entry (an entry
                # would come once per port dumped).
                entries.extend(_dump(sock, af, port, ports if port is None else (port,)))
    return entries


def delete(
    entries: Iterable[ConntrackEntry],
    progress: Callable[[int, int], None] | None = None,
    gone: list[ConntrackEntry] | None = None,
) -> int:
    """Delete these entries (by original tuple and zone, and kernel id when known);
    returns how many were deleted. Entries already gone are not counted; with `gone`
    given, they are appended to it (a report lists what this run deleted).

    progress, if given, is called with (entries handled, all entries) after each batch.
    """
    entries = list(entries)
    messages = [_delete_message(entry, seq) for seq, entry in enumerate(entries, 1)]
    if not messages:
        return 0
    deleted = 0
    with _session("delete") as sock:
        for i in range(0, len(messages), _BATCH):
            done, missing = _transact(sock, messages[i : i + _BATCH])
            deleted += done
            if gone is not None:
                gone.extend(entries[seq - 1] for seq in missing)
            if progress is not None:
                progress(min(i + _BATCH, len(messages)), len(messages))
    return deleted


# --- validation -------------------------------------------------------------------


def _address_family(family: int) -> int:
    try:
        return _AF[family]
    except (KeyError, TypeError):
        raise BadInput(f"invalid address family {family!r}: use 4 or 6") from None


def _port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise BadInput(f"invalid port {port!r}: use a number from 1 to 65535")
    return port


# --- netlink ----------------------------------------------------------------------


def _socket() -> socket.socket:
    """A conntrack netlink socket in the current network namespace (the thread's),
    with pyroute2's buffer sizes, bound to a port id the kernel picks."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER)
        sock.bind((0, 0))
    except OSError:
        sock.close()
        raise
    return sock


@contextlib.contextmanager
def _session(doing: str) -> Iterator[Any]:
    """A conntrack socket (`_socket`); OS and netlink errors become one HostProblem
    line."""
    try:
        sock = _socket()
        try:
            yield sock
        finally:
            sock.close()
    except OSError as err:
        raise _host_problem(doing, err.errno) from None


def _host_problem(doing: str, code: int | None) -> HostProblem:
    reason = os.strerror(code) if code else "unknown error"
    if code in (errno.EPERM, errno.EACCES):
        hint = "run as root (needs CAP_NET_ADMIN in the network namespace)"
    elif code in (errno.EPROTONOSUPPORT, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOENT):
        hint = "this kernel offers no conntrack netlink: modprobe nf_conntrack_netlink"
    else:
        hint = "check the kernel's conntrack support (nf_conntrack_netlink)"
    return HostProblem(f"cannot {doing} conntrack entries: {reason}; {hint}")


def _dump(
    sock: Any, af: int, dport: int | None, ports: Collection[int] | None
) -> list[ConntrackEntry]:
    """One whole dump, collected before anything else is sent on the socket. The
    kernel filters by protocol and dport; Python by protocol and ports, as kernels
    before 5.8 ignore the filter."""
    proto = [_nla(_CTA_PROTO_NUM, bytes([socket.IPPROTO_UDP]))]
    flags = _FILTER_PROTO_NUM
    if dport is not None:
        proto.append(_nla(_CTA_PROTO_DST_PORT, _BE16.pack(dport)))
        flags |= _FILTER_PROTO_DST_PORT
    request = _message(
        _IPCTNL_MSG_CT_GET,
        _NLM_F_REQUEST | _NLM_F_DUMP,
        af,
        1,
        _nest(_CTA_TUPLE_ORIG, _nest(_CTA_TUPLE_PROTO, *proto)),
        _nest(_CTA_FILTER, _nla(_CTA_FILTER_ORIG_FLAGS, struct.pack("=I", flags))),
    )
    sock.sendto(request, (0, 0))
    entries = []
    for kind, buf, start, end in _replies(sock):
        if kind == _NLMSG_ERROR:
            _raise_if_error(buf, start)
        if kind in (_NLMSG_DONE, _NLMSG_ERROR):
            break
        try:
            entry = _parse_entry(buf, start, end, ports)
        except (KeyError, IndexError, ValueError, struct.error):
            # Not as ctnetlink writes an entry (an attribute missing or cut short):
            # skipped, so kept; one odd message stops nothing.
            continue
        if entry is not None:
            entries.append(entry)
    return entries


def _transact(sock: Any, messages: list[bytes]) -> tuple[int, list[int]]:
    """Send messages that each ask for an ack; return how many succeeded, and the
    sequence numbers of those whose entry was gone (ENOENT)."""
    sock.sendto(b"".join(messages), (0, 0))
    acks = (reply for reply in _replies(sock) if reply[0] == _NLMSG_ERROR)
    done = 0
    missing = []
    for _kind, buf, start, _end in itertools.islice(acks, len(messages)):
        (code,) = _ERRNO.unpack_from(buf, start + _NLMSGHDR.size)
        if code == 0:
            done += 1
        elif code == -errno.ENOENT:
            missing.append(_NLMSGHDR.unpack_from(buf, start)[3])
        else:
            raise OSError(-code, os.strerror(-code))
    return done, missing


def _replies(sock: Any) -> Iterator[tuple[int, bytes, int, int]]:
    """(type, buffer, start, end) of each netlink message received, forever."""
    while True:
        buf = sock.recv(_RECV_SIZE)
        offset = 0
        while offset + _NLMSGHDR.size <= len(buf):
            length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(buf, offset)
            if length < _NLMSGHDR.size:
                break
            yield kind, buf, offset, offset + length
            offset += (length + 3) & ~3


def _raise_if_error(buf: bytes, start: int) -> None:
    (code,) = _ERRNO.unpack_from(buf, start + _NLMSGHDR.size)
    if code:
        raise OSError(-code, os.strerror(-code))


def _message(msg_type: int, flags: int, af: int, seq: int, *attrs: bytes) -> bytes:
    body = _NFGENMSG.pack(af, 0, 0) + b"".join(attrs)
    kind = (_NFNL_SUBSYS_CTNETLINK << 8) | msg_type
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags, seq, 0) + body


def _tuple(kind: int, af: int, src: str, dst: str, sport: int, dport: int) -> bytes:
    src_attr, dst_attr = _IP_ATTRS[af]
    return _nest(
        kind,
        _nest(
            _CTA_TUPLE_IP,
            _nla(src_attr, socket.inet_pton(af, src)),
            _nla(dst_attr, socket.inet_pton(af, dst)),
        ),
        _nest(
            _CTA_TUPLE_PROTO,
            _nla(_CTA_PROTO_NUM, bytes([socket.IPPROTO_UDP])),
            _nla(_CTA_PROTO_SRC_PORT, _BE16.pack(sport)),
            _nla(_CTA_PROTO_DST_PORT, _BE16.pack(dport)),
        ),
    )


def _delete_message(entry: ConntrackEntry, seq: int) -> bytes:
    af = _address_family(entry.family)
    try:
        attrs = [_tuple(_CTA_TUPLE_ORIG, af, entry.src, entry.dst, entry.sport, entry.dport)]
    except (OSError, struct.error):
        raise BadInput(f"not an IPv{entry.family} UDP entry: {entry}") from None
    if entry.ct_id is not None:
        attrs.append(_nla(_CTA_ID, _BE32.pack(entry.ct_id)))
    if entry.zone:
        attrs.append(_nla(_CTA_ZONE, _BE16.pack(entry.zone)))
    return _message(_IPCTNL_MSG_CT_DELETE, _NLM_F_REQUEST | _NLM_F_ACK, af, seq, *attrs)


def _parse_tuple(buf: bytes, span: tuple[int, int], af: int) -> tuple[str, str, int, int] | None:
    """(src, dst, sport, dport) of a UDP tuple; None for another protocol."""
    parts = _attrs(buf, *span)
    proto = _attrs(buf, *parts[_CTA_TUPLE_PROTO])
    if buf[proto[_CTA_PROTO_NUM][0]] != socket.IPPROTO_UDP:
        return None
    ip = _attrs(buf, *parts[_CTA_TUPLE_IP])
    src_attr, dst_attr = _IP_ATTRS[af]
    (src_start, src_end), (dst_start, dst_end) = ip[src_attr], ip[dst_attr]
    return (
        socket.inet_ntop(af, buf[src_start:src_end]),
        socket.inet_ntop(af, buf[dst_start:dst_end]),
        _BE16.unpack_from(buf, proto[_CTA_PROTO_SRC_PORT][0])[0],
        _BE16.unpack_from(buf, proto[_CTA_PROTO_DST_PORT][0])[0],
    )


def _parse_entry(
    buf: bytes, start: int, end: int, ports: Collection[int] | None
) -> ConntrackEntry | None:
    """The entry in one dump message, if it is UDP to one of the ports."""
    af = buf[start + _NLMSGHDR.size]
    if af not in _IP_ATTRS:
        return None
    attrs = _attrs(buf, start + _NLMSGHDR.size + _NFGENMSG.size, end)
    orig = _parse_tuple(buf, attrs[_CTA_TUPLE_ORIG], af)
    if orig is None or (ports is not None and orig[3] not in ports):
        return None
    reply = _parse_tuple(buf, attrs[_CTA_TUPLE_REPLY], af)
    if reply is None:
        return None
    # A zone of both directions comes as CTA_ZONE; a zone of the original direction
    # only (`ct original zone set`, `conntrack --orig-zone`) as CTA_TUPLE_ZONE in the
    # original tuple, and the kernel finds the entry by its tuple only with that zone.
    zone = attrs.get(_CTA_ZONE) or _attrs(buf, *attrs[_CTA_TUPLE_ORIG]).get(_CTA_TUPLE_ZONE)
    ct_id = attrs.get(_CTA_ID)
    return ConntrackEntry(
        4 if af == socket.AF_INET else 6,
        "udp",
        *orig,
        *reply,
        zone=_BE16.unpack_from(buf, zone[0])[0] if zone else 0,
        ct_id=_BE32.unpack_from(buf, ct_id[0])[0] if ct_id else None,
    )
