"""nf_tables messages that gc's removal (nfnl_batch.py) and add's write (nfnl_add.py)
both send: where a rule or chain is, one chain's rules dumped, a chain or a table asked
for, and whether the kernel checks a batch's generation at all (the batch itself is
nfgen.batch).

The kernel ABI: linux/netfilter/nfnetlink.h, nf_tables.h.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from enum import Enum
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from portmapctl.host import netlink as nl
from portmapctl.iptables.access import nfgen

NFPROTO = {4: 2, 6: 10}  # NFPROTO_IPV4, NFPROTO_IPV6
GETTABLE, GETCHAIN, NEWCHAIN, DELCHAIN, NEWRULE, GETRULE, DELRULE = 1, 4, 3, 5, 6, 7, 8
NLM_F_EXCL, NLM_F_CREATE, NLM_F_APPEND = 0x200, 0x400, 0x800
RULE_TABLE, RULE_CHAIN, RULE_HANDLE, RULE_EXPRESSIONS, RULE_USERDATA = 1, 2, 3, 4, 7
CHAIN_NAME = 3  # (NFTA_CHAIN_TABLE is 1, as NFTA_RULE_TABLE)
TABLE_NAME, TABLE_USE, TABLE_HANDLE = 1, 3, 4
_LIST_ELEM, _EXPR_NAME, _EXPR_DATA = 1, 1, 2
_IMMEDIATE_DATA, _DATA_VERDICT, _VERDICT_CODE, _VERDICT_CHAIN = 2, 2, 1, 2
_NFT_JUMPS = (-3, -4)  # NFT_JUMP, NFT_GOTO
_BE32_SIGNED = struct.Struct("!i")
_SO_SNDBUFFORCE, _SO_RCVBUFFORCE = 32, 33
_BE32, _BE64 = struct.Struct("!I"), struct.Struct("!Q")


class Outcome(str, Enum):
    """What came of one of our batches (gc's removal, add's write)."""

    APPLIED = "applied"
    CHANGED = "changed"  # gc: the ruleset moved since the read, nothing changed
    REFUSED = "refused"  # add: the node is not as the plan assumes, read it and plan
    UNAVAILABLE = "unavailable"  # not this way, nothing changed: iptables-restore can
    UNKNOWN = "unknown"  # gc: sent, no answer could be read: it may have gone in, whole


class Changed(Exception):
    """The ruleset moved while we dumped it."""


class DumpedRule(NamedTuple):
    """One rule of a dump, where its message sits: parsed only as far as it is used
    (10,000 rules at 5,000 containers)."""

    buf: bytes
    start: int
    end: int

    def attributes(self) -> Dict[int, Tuple[int, int]]:
        return nl.attrs(self.buf, self.start + nl.HEADER.size + nl.NFGENMSG.size, self.end)

    def handle(self) -> int:
        span = self.attributes().get(RULE_HANDLE)
        if span is None:
            raise OSError(errno.EBADMSG, "a rule without its handle")
        return _BE64.unpack_from(self.buf, span[0])[0]

    def target(self) -> Optional[str]:
        """The chain it jumps or goes to, when it does."""
        return jump_target(self.buf, self.start, self.end)

    def expressions(self) -> Optional[Tuple[int, int]]:
        """Where its NFTA_RULE_EXPRESSIONS payload is."""
        return self.attributes().get(RULE_EXPRESSIONS)

    def body(self) -> bytes:
        """Its expressions and userdata attributes, as dumped."""
        found = self.attributes()
        expressions = found.get(RULE_EXPRESSIONS)
        if expressions is None:
            raise OSError(errno.EBADMSG, "a rule without expressions")
        body = whole(self.buf, expressions)
        userdata = found.get(RULE_USERDATA)
        return body + whole(self.buf, userdata) if userdata is not None else body


def where(table: str, chain: str, chain_attribute: int = RULE_CHAIN) -> bytes:
    """The table and chain attributes a rule message (or, with CHAIN_NAME, a chain
    message: the table attribute is 1 in both) names its place with."""
    return nl.nla(RULE_TABLE, table.encode() + b"\0") + nl.nla(
        chain_attribute, chain.encode() + b"\0"
    )


def dump_request(family: int, table: str, chain: str, seq: int) -> bytes:
    """NFT_MSG_GETRULE as a dump of one chain: the kernel sends that chain's rules only."""
    return nfgen.message(
        nfgen.nftables(GETRULE), nl.NLM_F_REQUEST | nl.NLM_F_DUMP, NFPROTO[family], seq,
        where(table, chain),
    )  # fmt: skip


def dump_chain(sock: socket.socket, family: int, table: str, chain: str) -> List[DumpedRule]:
    """Every rule of one chain, in order (Changed: a commit tore the dump; OSError
    ENOENT: no such chain)."""
    sock.send(dump_request(family, table, chain, 2))
    rules: List[DumpedRule] = []
    torn = False
    header = nl.HEADER.size
    while True:
        buf = sock.recv(1 << 16)
        offset = 0
        while offset + header <= len(buf):
            length, kind, flags, _seq, _port = nl.HEADER.unpack_from(buf, offset)
            if length < header:
                raise OSError(errno.EBADMSG, "a netlink message shorter than its header")
            end = offset + length
            torn = torn or bool(flags & nl.NLM_F_DUMP_INTR)
            if kind == nl.NLMSG_DONE:
                if torn:
                    raise Changed()
                return rules
            if kind == nl.NLMSG_ERROR:
                (code,) = nl.ERRNO.unpack_from(buf, offset + header)
                raise OSError(-code or errno.EIO, f"cannot list chain {chain}")
            if kind == nfgen.nftables(NEWRULE):
                rules.append(DumpedRule(buf, offset, end))
            offset = (end + 3) & ~3


def chain_exists(sock: socket.socket, family: int, table: str, chain: str) -> bool:
    """NFT_MSG_GETCHAIN of one chain: its message comes back, or ENOENT."""
    return chain_attributes(sock, family, table, chain) is not None


def chain_attributes(
    sock: socket.socket, family: int, table: str, chain: str
) -> Optional[Dict[int, bytes]]:
    """NFT_MSG_GETCHAIN of one chain: its attributes (type -> payload), None on ENOENT."""
    sock.send(
        nfgen.message(
            nfgen.nftables(GETCHAIN),
            nl.NLM_F_REQUEST,
            NFPROTO[family],
            3,
            where(table, chain, CHAIN_NAME),
        )
    )
    buf = sock.recv(1 << 16)
    length, kind, _flags, _seq, _port = nl.HEADER.unpack_from(buf, 0)
    if kind == nl.NLMSG_ERROR:
        (code,) = nl.ERRNO.unpack_from(buf, nl.HEADER.size)
        if code == -errno.ENOENT:
            return None
        raise OSError(-code or errno.EIO, f"cannot ask for chain {chain}")
    found = nl.attrs(buf, nl.HEADER.size + nl.NFGENMSG.size, min(length, len(buf)))
    return {kind: buf[start:stop] for kind, (start, stop) in found.items()}


def tables_present(families: Sequence[int], table: str) -> Tuple[int, ...]:
    """The families in which `table` exists in this network namespace (one GETTABLE
    each, about 0.1 ms): a command that only may need it (add's warning of a port the
    plugin's nftables backend maps too) runs no `nft` where there is none. Empty when
    it cannot tell (no netfilter netlink): nothing to read then either."""
    try:
        with nfgen.open_socket() as sock:
            return tuple(f for f in families if table_chains(sock, f, table) > 0)
    except OSError:
        return ()


def table_present(family: int, table: str) -> bool:
    """Whether `table` exists in `family` here; True where that cannot be asked (no
    netfilter netlink): then the caller reads, as before."""
    try:
        with nfgen.open_socket() as sock:
            return table_chains(sock, family, table) > 0
    except OSError:
        return True


def chains_hold_rules(families: Sequence[int], table: str, chains: Sequence[str]) -> bool:
    """Whether one of `chains` of `table` holds a rule in `families` (a dump of each,
    no nft needed); True where that cannot be told (no netfilter netlink, a dump
    torn by a commit). A chain or table that is not there holds none."""
    try:
        with nfgen.open_socket() as sock:
            for family in families:
                for chain in chains:
                    try:
                        if dump_chain(sock, family, table, chain):
                            return True
                    except OSError as err:
                        if err.errno != errno.ENOENT:
                            raise
    except (OSError, Changed):
        return True
    return False


def table_chains(sock: socket.socket, family: int, table: str) -> int:
    """How many chains `table` holds (NFTA_TABLE_USE of NFT_MSG_GETTABLE): about the
    number of containers of a plugin's nat table, one round trip. 0: no such table."""
    found = _table_attribute(sock, family, table, TABLE_USE, 4)
    return 0 if found is None else _BE32.unpack(found)[0]


def table_handle(sock: socket.socket, family: int, table: str) -> Optional[int]:
    """`table`'s handle (NFTA_TABLE_HANDLE), None when there is no such table. A
    network namespace gives a table's handle once: a table made again (a firewall
    reload) has another."""
    found = _table_attribute(sock, family, table, TABLE_HANDLE, 8)
    return None if found is None else _BE64.unpack(found)[0]


def _table_attribute(
    sock: socket.socket, family: int, table: str, attribute: int, size: int
) -> Optional[bytes]:
    """One attribute of NFT_MSG_GETTABLE's answer (`size` bytes); None: no such table."""
    sock.send(
        nfgen.message(
            nfgen.nftables(GETTABLE),
            nl.NLM_F_REQUEST,
            NFPROTO[family],
            3,
            nl.nla(TABLE_NAME, table.encode() + b"\0"),
        )
    )
    buf = sock.recv(1 << 16)
    length, kind, _flags, _seq, _port = nl.HEADER.unpack_from(buf, 0)
    if kind == nl.NLMSG_ERROR:
        (code,) = nl.ERRNO.unpack_from(buf, nl.HEADER.size)
        if code == -errno.ENOENT:
            return None
        raise OSError(-code or errno.EIO, f"cannot ask for table {table}")
    found = nl.attrs(buf, nl.HEADER.size + nl.NFGENMSG.size, length).get(attribute)
    if found is None or found[1] - found[0] != size:
        raise OSError(errno.EBADMSG, f"a table without its attribute {attribute}")
    return buf[found[0] : found[1]]


def jump_target(buf: bytes, start: int, end: int) -> Optional[str]:
    """The chain the rule jumps or goes to: its last expression, `immediate` with a
    jump or goto verdict. None when it has none or cannot be read."""
    rule = nl.attrs(buf, start + nl.HEADER.size + nl.NFGENMSG.size, end)
    span = rule.get(RULE_EXPRESSIONS)
    if span is None:
        return None
    last = None
    at, stop = span
    while at + 4 <= stop:
        size, kind = struct.unpack_from("=HH", buf, at)
        if size < 4:
            return None
        if kind & 0x3FFF == _LIST_ELEM:
            last = (at + 4, at + size)
        at += (size + 3) & ~3
    if last is None:
        return None
    expression = nl.attrs(buf, *last)
    name, data = expression.get(_EXPR_NAME), expression.get(_EXPR_DATA)
    if name is None or data is None or buf[name[0] : name[1]].rstrip(b"\x00") != b"immediate":
        return None
    verdict_data = nl.attrs(buf, *data).get(_IMMEDIATE_DATA)
    if verdict_data is None:
        return None
    verdict_span = nl.attrs(buf, *verdict_data).get(_DATA_VERDICT)
    if verdict_span is None:
        return None
    verdict = nl.attrs(buf, *verdict_span)
    code, chain = verdict.get(_VERDICT_CODE), verdict.get(_VERDICT_CHAIN)
    if code is None or chain is None or code[1] - code[0] != 4:
        return None
    if _BE32_SIGNED.unpack_from(buf, code[0])[0] not in _NFT_JUMPS:
        return None
    try:
        return buf[chain[0] : chain[1]].rstrip(b"\x00").decode("ascii")
    except UnicodeDecodeError:
        return None


def whole(buf: bytes, span: Tuple[int, int]) -> bytes:
    """An attribute with its header, padded, from the span of its payload."""
    attribute = buf[span[0] - nl.ATTR.size : span[1]]
    return attribute + bytes(-len(attribute) % 4)


def kernel_checks_generation(sock: socket.socket, read_at: int) -> bool:
    """Whether the kernel refuses a batch for a generation that is not the current one
    (NFNL_BATCH_GENID; a kernel that ignored it would apply a stale plan). Asked
    with an empty batch, which changes nothing either way."""
    wrong = (read_at + 0x7FFFFFFF) & 0xFFFFFFFF or 1
    sock.send(nfgen.batch([], wrong, 4, 5))
    _now, errors = nfgen.replies_until(sock, 6)
    return any(seq == 4 and code == -errno.ERESTART for seq, code in errors)


class Sent(NamedTuple):
    """What came of sending one batch at a generation (sent_at)."""

    outcome: Outcome  # APPLIED: answered (REFUSED: with errors); UNAVAILABLE, UNKNOWN
    errors: List[Tuple[int, int]]  # (seq, negative errno) the kernel answered with
    generation: int  # the generation asked for right after it (when answered)
    why: str = ""


def sent_at(sock: socket.socket, batch: bytes, read_at: int, answer_seq: int) -> Sent:
    """Send `batch` (nfgen.batch at generation `read_at`), only to a kernel that checks
    a batch's generation (UNAVAILABLE, nothing sent: one that does not), and read its
    answer: the generation is then asked under `answer_seq`. UNKNOWN: sent, and no
    answer could be read (it went in whole or not at all)."""
    if not kernel_checks_generation(sock, read_at):
        return Sent(Outcome.UNAVAILABLE, [], 0, "this kernel does not check a batch's generation")
    room_for(sock, len(batch))
    sock.send(batch)
    try:
        after, errors = nfgen.replies_until(sock, answer_seq)
    except OSError as err:
        return Sent(Outcome.UNKNOWN, [], 0, f"no answer from nf_tables: {err.strerror or err}")
    return Sent(Outcome.REFUSED if errors else Outcome.APPLIED, errors, after)


def room_for(sock: socket.socket, size: int) -> None:
    """A send buffer the whole batch fits in: the kernel takes a batch in one message."""
    wanted = size + (1 << 16)
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_SNDBUFFORCE, wanted)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, wanted)
    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) < wanted:
        raise OSError(errno.EMSGSIZE, f"a batch of {size} bytes does not fit the send buffer")
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, 1 << 22)
    except OSError:
        pass  # errors only come back on failure; ENOBUFS then still says "failed"


def strerror(code: int) -> str:
    return os.strerror(code) if code > 0 else f"error {code}"
