"""The plugin's iptables rules as iptables-nft 1.8.9 puts them into nf_tables: a rule in
saved form (Args) -> the NFTA_RULE_EXPRESSIONS attribute iptables-nft sends for it,
byte for byte as the kernel then dumps it (counters at zero). What `add` sends as one
nf_tables batch (nfnl_add.py), and what it compares the shared rules it finds with.

Only the shapes the plugin writes are known here, conditions made of them included
(`--conditions-v4 "-d 10.0.0.0/8"`); anything else (sctp, ranges, a negation, an
interface, an external mark chain, an unknown match or target, a value iptables-save
would print otherwise) gives None, and the caller writes with iptables-restore as
before.
The shapes, in the order iptables-nft builds a rule (nft_ipv4_add / nft_ipv6_add):

    -p P          meta l4proto, cmp (one byte)
    -s/-d A/L     payload of the address's leading bytes; a bitwise mask when L is not
                  a whole number of bytes (/16: two bytes; /20: four, masked)
    -m tcp|udp --dport N                 payload of the transport header, cmp
    -m comment --comment T               xt match comment rev 0 (xt_comment_info)
    -m multiport --dports A,B            xt match multiport rev 1 (xt_multiport_v1)
    -m addrtype --dst-type LOCAL         xt match addrtype rev 1
    -m mark --mark V/M                   meta mark, bitwise, cmp
    a counter, then the verdict:
    -j CNI-...    immediate jump
    -j DNAT --to-destination A:P         xt target DNAT rev 2 (nf_nat_range2)
    -j MARK --set-xmark V/M              xt target MARK rev 2
    -j MASQUERADE                        xt target MASQUERADE rev 0

Another iptables version may write other bytes for the same rule (older ones did not
shorten prefixes, newer ones may translate more matches): nfnl_add only uses this with
a version in VERIFIED_IPTABLES, the one tests/kernel/test_nfnl_add.py holds these bytes
to (every shape written by iptables-nft-restore and by this module, dumped and
compared; iptables-save and the plugin's CHECK on the result).

The kernel ABI: linux/netfilter/nf_tables.h; the xt structures: linux/netfilter/
xt_comment.h, xt_multiport.h, xt_addrtype.h, xt_mark.h, nf_nat.h (host byte order
where the kernel header says so, as iptables fills them in).
"""

from __future__ import annotations

import ipaddress
import re
import struct
from typing import Iterator, List, Optional, Tuple

from portmapctl.host.netlink import ATTR, NLA_F_NESTED, nla
from portmapctl.iptables.ruleset import Args

VERIFIED_IPTABLES = frozenset({"1.8.9"})

# Attribute numbers (nf_tables.h).
_RULE_EXPRESSIONS, _RULE_COMPAT = 4, 5
_COMPAT_PROTO, _COMPAT_FLAGS = 1, 2
_COMPAT_INVERT = 1 << 1  # NFT_RULE_COMPAT_F_INV
_LIST_ELEM, _EXPR_NAME, _EXPR_DATA = 1, 1, 2
_DATA_VALUE, _DATA_VERDICT = 1, 2
_VERDICT_CODE, _VERDICT_CHAIN = 1, 2
_NFT_JUMP = -3
_REG_VERDICT, _REG_1 = 0, 1
_PAYLOAD_NETWORK, _PAYLOAD_TRANSPORT = 1, 2
_META_MARK, _META_L4PROTO = 3, 16
_CMP_EQ = 0

_BE32, _BE32S, _BE64 = struct.Struct("!I"), struct.Struct("!i"), struct.Struct("!Q")
_PROTOCOLS = {"all": 0, "icmp": 1, "tcp": 6, "udp": 17, "dccp": 33, "sctp": 132}
_PROTOCOLS.update({"icmpv6": 58, "ipv6-icmp": 58})
_PORT_PROTOCOLS = ("tcp", "udp")  # natively matched by iptables-nft 1.8.9
# Where -s and -d are in the network header (iphdr / ipv6hdr).
_ADDRESS_AT = {4: (12, 16), 6: (8, 24)}
_COMMENT_SIZE = 256  # xt_comment_info
_MULTIPORT_MAX = 15
_ADDRTYPE_LOCAL = 1 << 2  # XT_ADDRTYPE_LOCAL (1 << RTN_LOCAL)
_NAT_MAP_IPS, _NAT_PROTO_SPECIFIED = 1, 2
_JUMP_PREFIX = "CNI-"  # a -j that is a chain, never an extension's target
_NUMBER = re.compile(r"0x[0-9a-fA-F]{1,8}|[1-9][0-9]{0,9}|0")


def _counter_element() -> bytes:
    return nla(_LIST_ELEM, nla(_EXPR_NAME, b"counter\0") + nla(_EXPR_DATA, _ZERO_COUNTS))


_ZERO_COUNTS = nla(1, _BE64.pack(0)) + nla(2, _BE64.pack(0))  # NFTA_COUNTER_BYTES, _PACKETS
_ZERO_COUNTER = _counter_element()
_COUNTER_HEAD = _ZERO_COUNTER[: len(_ZERO_COUNTER) - len(_ZERO_COUNTS)]


class _Unknown(Exception):
    """Not a shape this module writes."""


def compat(args: Args) -> Optional[bytes]:
    """NFTA_RULE_COMPAT, as iptables-nft sends it with every rule: the protocol its xt
    matches are checked against, from `-p` (None: a protocol this module does not know)."""
    proto, invert = 0, False
    for i, word in enumerate(args):
        if i > 0 and args[i - 1] == "--comment":
            continue  # a comment's text, whatever it says
        if word in ("-p", "--protocol") and i + 1 < len(args):
            name = args[i + 1].lower()
            number = int(name) if name.isascii() and name.isdigit() else _PROTOCOLS.get(name)
            if number is None or number > 255:
                return None
            proto, invert = number, i > 0 and args[i - 1] == "!"
    flags = _COMPAT_INVERT if invert else 0
    return nla(
        _RULE_COMPAT | NLA_F_NESTED,
        nla(_COMPAT_PROTO, _BE32.pack(proto)) + nla(_COMPAT_FLAGS, _BE32.pack(flags)),
    )


def comparable(buf: bytes, span: Tuple[int, int]) -> bytes:
    """A dumped rule's NFTA_RULE_EXPRESSIONS (the payload at `span`), its counters
    zeroed: what `expressions` gives for the same rule. (A counter dumped in another
    form is left as it is: then it compares unequal, and the caller does without.)"""
    start, end = span
    out = [buf[start - ATTR.size : start]]
    at = start
    while at + ATTR.size <= end:
        size, _kind = ATTR.unpack_from(buf, at)
        if size < ATTR.size:
            break
        whole = buf[at : at + ((size + 3) & ~3)]
        out.append(_ZERO_COUNTER if _is_counter(whole) else whole)
        at += (size + 3) & ~3
    return b"".join(out)


def _is_counter(element: bytes) -> bool:
    """An element holding a counter in the form `expressions` writes: its two 64-bit
    counts under the same attribute headers, whatever their values."""
    if len(element) != len(_ZERO_COUNTER) or not element.startswith(_COUNTER_HEAD):
        return False
    counts = element[len(_COUNTER_HEAD) :]
    return all(counts[at : at + ATTR.size] == _ZERO_COUNTS[at : at + ATTR.size] for at in (0, 12))


def expressions(args: Args, family: int) -> Optional[bytes]:
    """NFTA_RULE_EXPRESSIONS for the rule `args` (saved form, as iptables-save prints it
    after `-A CHAIN`) of `family`'s nat table; None when it is not a known shape."""
    try:
        return nla(_RULE_EXPRESSIONS, b"".join(_build(list(args), family)))
    except (_Unknown, ValueError, struct.error, OverflowError):
        return None


def _build(words: List[str], family: int) -> Iterator[bytes]:
    take = _Words(words)
    source = take.option("-s")
    destination = take.option("-d")
    proto = take.option("-p")
    if proto is not None:
        if proto not in _PROTOCOLS or proto == "all":
            raise _Unknown(proto)
        yield from _l4proto(_PROTOCOLS[proto])
    network_source, network_destination = _ADDRESS_AT[family]
    if source is not None:
        yield from _address(source, family, network_source)
    if destination is not None:
        yield from _address(destination, family, network_destination)
    while take.peek() == "-m":
        take.next()
        match = take.next()
        if match in _PORT_PROTOCOLS:
            if proto != match:
                raise _Unknown("a port match of another protocol")
            yield from _dport(_port(take.expect("--dport")))
        elif match == "comment":
            yield _match("comment", 0, _comment(take.expect("--comment")))
        elif match == "multiport":
            if proto not in _PORT_PROTOCOLS:
                raise _Unknown("multiport without tcp or udp")
            yield _match("multiport", 1, _multiport(take.expect("--dports")))
        elif match == "addrtype":
            if take.expect("--dst-type") != "LOCAL":
                raise _Unknown("an address type other than LOCAL")
            yield _match("addrtype", 1, struct.pack("=HHI", 0, _ADDRTYPE_LOCAL, 0))
        elif match == "mark":
            value, mask = _value_mask(take.expect("--mark"))
            yield from _meta_mark(value, mask)
        else:
            raise _Unknown(match)
    yield _ZERO_COUNTER
    take.expect_word("-j")
    target = take.next()
    if target == "DNAT":
        yield _target("DNAT", 2, _dnat(take.expect("--to-destination"), family))
    elif target == "MARK":
        value, mask = _value_mask(take.expect("--set-xmark"))
        yield _target("MARK", 2, struct.pack("=II", value, mask))
    elif target == "MASQUERADE":
        # nf_nat_ipv4_multi_range_compat with one empty range / nf_nat_range.
        yield _target(
            "MASQUERADE", 0, struct.pack("=I", 1) + bytes(20) if family == 4 else bytes(40)
        )
    elif target.startswith(_JUMP_PREFIX) and target.isascii() and len(target) <= 28:
        yield _jump(target)
    else:
        raise _Unknown(target)
    if not take.done():
        raise _Unknown("words after the target")


class _Words:
    """The rule's words, read front to back."""

    def __init__(self, words: List[str]) -> None:
        self._words = words
        self._at = 0

    def peek(self) -> Optional[str]:
        return self._words[self._at] if self._at < len(self._words) else None

    def next(self) -> str:
        word = self.peek()
        if word is None:
            raise _Unknown("the rule ends early")
        if word == "!":
            raise _Unknown("a negation")
        self._at += 1
        return word

    def option(self, name: str) -> Optional[str]:
        if self.peek() != name:
            return None
        self._at += 1
        return self.next()

    def expect(self, name: str) -> str:
        value = self.option(name)
        if value is None:
            raise _Unknown(f"{name} expected")
        return value

    def expect_word(self, word: str) -> None:
        if self.next() != word:
            raise _Unknown(f"{word} expected")

    def done(self) -> bool:
        return self._at == len(self._words)


# --- expressions ------------------------------------------------------------------------


def _expression(name: str, data: bytes) -> bytes:
    return nla(_LIST_ELEM, nla(_EXPR_NAME, name.encode() + b"\0") + nla(_EXPR_DATA, data))


def _u32(kind: int, value: int) -> bytes:
    return nla(kind, _BE32.pack(value))


def _value(kind: int, data: bytes) -> bytes:
    return nla(kind, nla(_DATA_VALUE, data))


def _cmp(data: bytes) -> bytes:
    # NFTA_CMP_SREG, NFTA_CMP_OP, NFTA_CMP_DATA
    return _expression("cmp", _u32(1, _REG_1) + _u32(2, _CMP_EQ) + _value(3, data))


def _meta(key: int) -> bytes:
    # NFTA_META_KEY, NFTA_META_DREG (the kernel dumps the key first)
    return _expression("meta", _u32(2, key) + _u32(1, _REG_1))


def _payload(base: int, offset: int, length: int) -> bytes:
    # NFTA_PAYLOAD_DREG, _BASE, _OFFSET, _LEN
    return _expression(
        "payload", _u32(1, _REG_1) + _u32(2, base) + _u32(3, offset) + _u32(4, length)
    )


def _bitwise(mask: bytes) -> bytes:
    # NFTA_BITWISE_SREG, _DREG, _LEN, _OP (NFT_BITWISE_BOOL), _MASK, _XOR
    return _expression(
        "bitwise",
        _u32(1, _REG_1)
        + _u32(2, _REG_1)
        + _u32(3, len(mask))
        + _u32(6, 0)
        + _value(4, mask)
        + _value(5, bytes(len(mask))),
    )


def _l4proto(number: int) -> Iterator[bytes]:
    yield _meta(_META_L4PROTO)
    yield _cmp(bytes([number]))


def _address(text: str, family: int, offset: int) -> Iterator[bytes]:
    """add_addr of iptables-nft: the leading bytes the mask covers whole are compared;
    a mask that ends inside a byte compares the whole address, masked."""
    if "%" in text:
        raise _Unknown("an address with a zone, which iptables refuses")
    mask = text.partition("/")[2]
    if mask and not mask.isdigit():
        # A mask that is not N leading ones (saved form prints it as an address): not
        # a shape whose bytes are pinned, and ipaddress would read it as a host mask.
        raise _Unknown("a mask that is not a prefix")
    network = ipaddress.ip_network(text, strict=True)
    if network.version != family or network.prefixlen == 0:
        raise _Unknown("an address of another family, or /0")
    address = network.network_address.packed
    mask = network.netmask.packed
    whole = network.prefixlen // 8
    if network.prefixlen % 8 == 0:
        yield _payload(_PAYLOAD_NETWORK, offset, whole)
        yield _cmp(address[:whole])
    else:
        yield _payload(_PAYLOAD_NETWORK, offset, len(address))
        yield _bitwise(mask)
        yield _cmp(address)


def _dport(port: int) -> Iterator[bytes]:
    yield _payload(_PAYLOAD_TRANSPORT, 2, 2)
    yield _cmp(port.to_bytes(2, "big"))


def _meta_mark(value: int, mask: int) -> Iterator[bytes]:
    yield _meta(_META_MARK)
    if mask != 0xFFFFFFFF:
        yield _bitwise(struct.pack("=I", mask))
    yield _cmp(struct.pack("=I", value))


def _match(name: str, revision: int, info: bytes) -> bytes:
    # NFTA_MATCH_NAME, _REV, _INFO
    return _expression("match", nla(1, name.encode() + b"\0") + _u32(2, revision) + nla(3, info))


def _target(name: str, revision: int, info: bytes) -> bytes:
    # NFTA_TARGET_NAME, _REV, _INFO
    return _expression("target", nla(1, name.encode() + b"\0") + _u32(2, revision) + nla(3, info))


def _jump(chain: str) -> bytes:
    verdict = nla(_VERDICT_CODE, _BE32S.pack(_NFT_JUMP)) + nla(
        _VERDICT_CHAIN, chain.encode() + b"\0"
    )
    # NFTA_IMMEDIATE_DREG, NFTA_IMMEDIATE_DATA
    return _expression("immediate", _u32(1, _REG_VERDICT) + nla(2, nla(_DATA_VERDICT, verdict)))


# --- the xt structures -------------------------------------------------------------------


def _comment(text: str) -> bytes:
    data = text.encode()
    if len(data) >= _COMMENT_SIZE or b"\0" in data:
        raise _Unknown("a comment iptables would not take")
    return data + bytes(_COMMENT_SIZE - len(data))


def _port(text: str) -> int:
    """A port as iptables takes it and iptables-save prints it (no leading zero)."""
    if not (text.isascii() and text.isdigit()) or text != str(int(text)):
        raise _Unknown("not one port as iptables-save prints it")
    if not 0 < int(text) <= 0xFFFF:
        raise _Unknown("not a port")
    return int(text)


def _multiport(text: str) -> bytes:
    """xt_multiport_v1: flags (XT_MULTIPORT_DESTINATION), count, ports[15] (host order),
    pflags[15] (no ranges), invert: 48 bytes."""
    ports = [_port(word) for word in text.split(",")]
    if not 0 < len(ports) <= _MULTIPORT_MAX:
        raise _Unknown("1 to 15 ports")
    padded = ports + [0] * (_MULTIPORT_MAX - len(ports))
    info = struct.pack(f"=BB{_MULTIPORT_MAX}H", 1, len(ports), *padded)
    return info + bytes(_MULTIPORT_MAX + 1)  # pflags (no ranges), invert


def _value_mask(text: str) -> Tuple[int, int]:
    """`VALUE[/MASK]` of a mark, each in hex (0x...) or decimal: as iptables reads them,
    but for octal (a leading 0), which Python would not read the same way."""
    value, slash, mask = text.partition("/")
    return _u32_number(value), _u32_number(mask) if slash else 0xFFFFFFFF


def _u32_number(text: str) -> int:
    if not _NUMBER.fullmatch(text):
        raise _Unknown("a number iptables-save would not print")
    number = int(text, 0)
    if number > 0xFFFFFFFF:
        raise _Unknown("more than 32 bits")
    return number


def _dnat(text: str, family: int) -> bytes:
    """nf_nat_range2 for `--to-destination ADDRESS:PORT` ([ADDRESS]:PORT in IPv6): one
    address, one port; 48 bytes with its padding."""
    if family == 6:
        if not text.startswith("[") or "]:" not in text:
            raise _Unknown("an IPv6 destination without its port")
        host, port = text[1:].split("]:", 1)
    else:
        host, _, port = text.rpartition(":")
    if "%" in host:
        raise _Unknown("an address with a zone")
    address = ipaddress.ip_address(host)
    if address.version != family:
        raise _Unknown("an address of another family")
    packed = address.packed + bytes(16 - len(address.packed))
    number = _port(port).to_bytes(2, "big")
    flags = _NAT_MAP_IPS | _NAT_PROTO_SPECIFIED
    info = struct.pack("=I", flags) + packed + packed + number + number + bytes(2)
    return info + bytes(-len(info) % 8)
