"""Netfilter netlink framing, shared by what talks to the kernel over NETLINK_NETFILTER:
conntrack (host/conntrack.py) and nf_tables (iptables/access/nfgen.py, nfnl.py,
nfnl_batch.py). Only the header layouts and the attribute encoding live here; each
user keeps its own message types. Standard library only (struct): importing it costs
nothing a table read would notice.

The kernel ABI: linux/netlink.h, linux/netfilter/nfnetlink.h.
"""

from __future__ import annotations

import struct
from typing import Dict, Tuple

NETLINK_NETFILTER = 12
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
# Set on a dump's messages when the ruleset changed while it ran: it may miss or repeat.
NLM_F_DUMP_INTR = 0x10
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF

HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, port id
NFGENMSG = struct.Struct("=BBH")  # family, version, resource id
ATTR = struct.Struct("=HH")  # nlattr: length, type
ERRNO = struct.Struct("=i")  # what NLMSG_ERROR carries first: 0 or a negative errno


def nla(kind: int, payload: bytes) -> bytes:
    """One attribute: header, payload, padding to 4 bytes."""
    size = ATTR.size + len(payload)
    return ATTR.pack(size, kind) + payload + bytes(-size % 4)


def nest(kind: int, *attributes: bytes) -> bytes:
    """A nested attribute holding these."""
    return nla(kind | NLA_F_NESTED, b"".join(attributes))


def attrs(buf: bytes, start: int, end: int) -> Dict[int, Tuple[int, int]]:
    """The attributes between start and end: type -> (start, end) of its payload."""
    found = {}
    while start + ATTR.size <= end:
        size, kind = ATTR.unpack_from(buf, start)
        if size < ATTR.size:
            break
        found[kind & NLA_TYPE_MASK] = (start + ATTR.size, start + size)
        start += (size + 3) & ~3
    return found
