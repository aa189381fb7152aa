"""Which other tables hook nat prerouting or output on a live node: one netlink
NFT_MSG_GETCHAIN dump of every family (about a millisecond), so that `nft` runs only
for a table that has such a hook (nftables/foreign.py reads what its rules take). The
plugin's own tables and iptables-nft's nat chains are left out: the first are the
plugin's, the second are read as iptables (iptables/foreign.py).
"""

from __future__ import annotations

import errno
import socket
import struct
from typing import Any, List, NamedTuple, Optional, Tuple

from portmapctl.host import netlink as nl

# NFPROTO_* -> the table family's name.
_FAMILY_NAMES = {1: "inet", 2: "ip", 10: "ip6"}
_GETCHAIN, _NEWCHAIN = 4, 3
_CHAIN_TABLE, _CHAIN_NAME, _CHAIN_HOOK, _CHAIN_TYPE = 1, 3, 4, 7
_HOOK_NUM, _HOOK_PRIORITY = 1, 2
# NF_INET_PRE_ROUTING, NF_INET_LOCAL_OUT: the network's packets, the node's own.
_HOOKS = {0: "prerouting", 3: "output"}
_BE32 = struct.Struct("!i")
_NAT_TYPE = nl.ATTR.pack(8, _CHAIN_TYPE) + b"nat\0"

# Where the plugin's own nat hooks are: its nftables table, and iptables' nat table as
# iptables-nft writes it (read as iptables by iptables/foreign.py).
PLUGIN_TABLES = frozenset({("ip", "cni_hostport"), ("ip6", "cni_hostport")})
IPTABLES_NAT = frozenset(
    (family, "nat", chain) for family in ("ip", "ip6") for chain in ("PREROUTING", "OUTPUT")
)
# NF_IP_PRI_NAT_DST: iptables' nat PREROUTING and OUTPUT, legacy or nft; every
# upstream nftables backend writes cni_hostport's prerouting (dstnat) and output there.
IPTABLES_PRIORITY = -100


class Hook(NamedTuple):
    """A base chain of type nat at hook prerouting or output, in another tool's table."""

    family: str  # ip, ip6, inet
    table: str
    chain: str
    priority: int
    hook: str = "prerouting"  # or output: where the node's own connections pass


def nat_hooks(sock: socket.socket) -> List[Hook]:
    """Every nat prerouting and output base chain of the namespace but the plugin's own
    and iptables-nft's (one GETCHAIN dump of every family)."""
    from portmapctl.iptables.access import nfgen
    from portmapctl.iptables.access.nfmsg import Changed

    sock.send(nfgen.message(nfgen.nftables(_GETCHAIN), nl.NLM_F_REQUEST | nl.NLM_F_DUMP, 0, 5, b""))
    found: List[Hook] = []
    header = nl.HEADER.size
    torn = False
    while True:
        buf = sock.recv(1 << 20)
        # Only a nat base chain carries NFTA_CHAIN_TYPE "nat": one byte search (in C)
        # per part finds where they may be, past the thousands of others (iptables-nft's
        # per-container chains), whose headers alone are read (1,000 containers: 2,000
        # chains, 2 ms of looking inside each message before).
        candidate = buf.find(_NAT_TYPE)
        offset = 0
        while offset + header <= len(buf):
            length, kind, flags = _LENGTH_KIND_FLAGS.unpack_from(buf, offset)
            if length < header:
                raise OSError("a netlink message shorter than its header")
            end = offset + length
            torn = torn or bool(flags & nl.NLM_F_DUMP_INTR)
            if kind == nl.NLMSG_DONE:
                if torn:
                    raise Changed()  # (a chain may be missing from it)
                return found
            if kind == nl.NLMSG_ERROR:
                (code,) = nl.ERRNO.unpack_from(buf, offset + header)
                raise OSError(-code, "cannot list the nftables chains")
            if 0 <= candidate < end:  # (a false one, in padding, is merely looked at)
                if kind == nfgen.nftables(_NEWCHAIN):
                    hook = _hook(buf, offset, end)
                    if hook is not None:
                        found.append(hook)
                candidate = buf.find(_NAT_TYPE, end)
            offset = (end + 3) & ~3


_LENGTH_KIND_FLAGS = struct.Struct("=IHH")  # the start of nlmsghdr


def _hook(buf: bytes, offset: int, end: int) -> Optional[Hook]:
    family = buf[offset + nl.HEADER.size]
    name = _FAMILY_NAMES.get(family)
    attrs = nl.attrs(buf, offset + nl.HEADER.size + nl.NFGENMSG.size, end)
    if name is None or _CHAIN_HOOK not in attrs or _CHAIN_TYPE not in attrs:
        return None
    if _string(buf, attrs[_CHAIN_TYPE]) != "nat":
        return None
    start, stop = attrs[_CHAIN_HOOK]
    hook = nl.attrs(buf, start, stop)
    if _HOOK_NUM not in hook or _HOOK_PRIORITY not in hook:
        return None
    where = _HOOKS.get(_BE32.unpack_from(buf, hook[_HOOK_NUM][0])[0])
    if where is None:
        return None
    table, chain = _string(buf, attrs[_CHAIN_TABLE]), _string(buf, attrs[_CHAIN_NAME])
    priority = _BE32.unpack_from(buf, hook[_HOOK_PRIORITY][0])[0]
    if (name, table) in PLUGIN_TABLES:
        return None
    # iptables-nft makes its nat PREROUTING and OUTPUT at -100, always: a `table ip nat`
    # chain PREROUTING written with nft at another priority is a firewall's
    # (iptables-nft-save shows none of its rules: "contains incompatible base-chains").
    if (name, table, chain) in IPTABLES_NAT and priority == IPTABLES_PRIORITY:
        return None
    return Hook(name, table, chain, priority, where)


def _string(buf: bytes, span: Tuple[int, int]) -> str:
    return buf[span[0] : span[1]].rstrip(b"\0").decode(errors="replace")


# A dump the ruleset changed under is asked again, this many times in all.
_HOOK_DUMPS = 3
# A kernel without nf_tables (or netfilter netlink): no other table can hook anything.
_NO_NFTABLES = frozenset({errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT, errno.EOPNOTSUPP})


def live_hooks(node: Any) -> List[Hook]:
    """The nat prerouting and output hooks of other tables on a live node (one netlink
    dump; empty offline, or on a test's memory node). OSError when they cannot be
    listed: then nobody can tell what they take."""
    if node.namespace_view() is None:
        return []
    from portmapctl.iptables.access import nfgen
    from portmapctl.iptables.access.nfmsg import Changed

    for _ in range(_HOOK_DUMPS):
        try:
            with nfgen.open_socket() as sock:
                return nat_hooks(sock)
        except Changed:
            continue
        except OSError as err:
            if err.errno in _NO_NFTABLES:
                return []
            raise
    raise OSError("the nftables chains kept changing while they were listed")
