"""How iptables spells a match's options when it prints a rule back (iptables-save).

The plugin's `conditionsV4`/`conditionsV6` are free-form: `-m addrtype --dst-type
local`, `-m conntrack --ctstate ESTABLISHED,NEW`, `-m mark --mark 1` are all accepted,
and the kernel keeps only their meaning, so iptables-save prints `--dst-type LOCAL`,
`--ctstate NEW,ESTABLISHED`, `--mark 0x1`. The plugin's CHECK (`iptables -C`) compares
meanings and says healthy; a comparison of text would call such a rule missing, and
a repair would re-create it behind later containers (issue 12 item 13).

So the conditions are rewritten into the printed form before they are compared or
written, for the matches conditions use. Learned from iptables 1.8.9, nft and legacy
alike (tests/unit/test_spelling.py, tests/kernel/test_field_check.py with the real
plugin). A match not known here is compared as written: for it, a spelling iptables
rewrites still shows as a problem, as before.

The values any rule may hold are here too: an address with its mask, a protocol, the
tcp match's flags (normal_address, normal_protocol, tcp_flags), as iptables reads and
prints them (tests/kernel/test_normal_form_reference.py).
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from portmapctl.core.patterns import lazy
from portmapctl.errors import BadInput


class Option(NamedTuple):
    """One option of a rule as written: `! --ctstate NEW`, `-s 10.0.0.0/8`."""

    negated: bool
    name: str  # with its dashes
    values: Tuple[str, ...]


# The bit order iptables prints flag lists in (libxt_conntrack.c, libxt_addrtype.c).
_CTSTATES = ("INVALID", "NEW", "RELATED", "ESTABLISHED", "UNTRACKED", "SNAT", "DNAT")
_CTSTATUS = ("NONE", "EXPECTED", "SEEN_REPLY", "ASSURED", "CONFIRMED")
_ADDRTYPES = ("UNSPEC", "UNICAST", "LOCAL", "BROADCAST", "ANYCAST", "MULTICAST", "BLACKHOLE",
              "UNREACHABLE", "PROHIBIT", "THROW", "NAT", "XRESOLVE")  # fmt: skip

# The order options are printed in, per match; options not listed keep their place
# after the listed ones.
_ORDER: Dict[str, Tuple[str, ...]] = {
    "addrtype": ("--src-type", "--dst-type", "--limit-iface-in", "--limit-iface-out"),
    # The protocol matches print their options in a fixed order (libxt_tcp.c,
    # libxt_udp.c, libxt_sctp.c), whatever order they were given in.
    "tcp": ("--sport", "--dport", "--tcp-option", "--tcp-flags"),
    "udp": ("--sport", "--dport"),
    "sctp": ("--sport", "--dport", "--chunk-types"),
    "conntrack": (
        "--ctstate",
        "--ctproto",
        "--ctorigsrc",
        "--ctorigdst",
        "--ctreplsrc",
        "--ctrepldst",
        "--ctorigsrcport",
        "--ctorigdstport",
        "--ctreplsrcport",
        "--ctrepldstport",
        "--ctstatus",
        "--ctexpire",
        "--ctdir",
    ),  # fmt: skip
}


def _flag_list(order: Tuple[str, ...]) -> Callable[[str], str]:
    def spell(value: str) -> str:
        words = {w.strip().upper() for w in value.split(",") if w.strip()}
        if not words <= set(order):
            return value  # not ours to judge: iptables would have refused it anyway
        return ",".join(w for w in order if w in words)

    return spell


def _mark(value: str) -> str:
    """`1` -> `0x1`, `10/0xff` -> `0xa/0xff`, `1/0xffffffff` -> `0x1`."""
    mark, _, mask = value.partition("/")
    try:
        number = int(mark, 0)
        full = int(mask, 0) if mask else 0xFFFFFFFF
    except ValueError:
        return value
    if not (0 <= number <= 0xFFFFFFFF and 0 <= full <= 0xFFFFFFFF):
        return value
    return f"{number:#x}" if full == 0xFFFFFFFF else f"{number:#x}/{full:#x}"


_VALUES: Dict[str, Dict[str, Callable[[str], str]]] = {
    "addrtype": {"--src-type": _flag_list(_ADDRTYPES), "--dst-type": _flag_list(_ADDRTYPES)},
    "conntrack": {
        "--ctstate": _flag_list(_CTSTATES),
        "--ctstatus": _flag_list(_CTSTATUS),
        "--ctdir": str.upper,
    },
    "state": {"--state": _flag_list(_CTSTATES)},
    "mark": {"--mark": _mark},
    "connmark": {"--mark": _mark},
    "pkttype": {"--pkt-type": str.lower},
}


# The limit match (libxt_limit.c): a rate is kept as a period in 1/10,000 s, and
# printed back in the largest unit that gives a whole number per unit (120/min is
# saved as 2/sec); without --limit it is 3/hour, and a burst of 5 is not printed.
_LIMIT_SCALE = 10_000
_LIMIT_UNITS = (("second", 1), ("minute", 60), ("hour", 3600), ("day", 86400))
_LIMIT_PRINTED = (("day", 86400), ("hour", 3600), ("min", 60), ("sec", 1))
_LIMIT_DEFAULT = ("--limit", "3/hour")
_LIMIT_BURST = "5"


def _limit_period(rate: str) -> Optional[int]:
    """`N[/UNIT]` as libxt_limit reads it (UNIT any beginning of second, minute, hour
    or day, any case); None when iptables would refuse it."""
    number, slash, unit = rate.partition("/")
    multiple = 1
    if slash:
        unit = unit.lower()
        found = [m for name, m in _LIMIT_UNITS if unit and name.startswith(unit)]
        if not found or not unit.isascii():
            return None
        multiple = found[0]
    digits = number[: len(number) - len(number.lstrip("0123456789"))] if number else ""
    if not digits or int(digits) == 0:
        return None  # (atoi: leading digits; none, or 0, is refused)
    return _LIMIT_SCALE * multiple // int(digits) or None


def _limit_rate(period: int) -> str:
    """print_rate of libxt_limit.c."""
    units = [(name, _LIMIT_SCALE * m) for name, m in _LIMIT_PRINTED]
    chosen = 0
    for i in range(1, len(units)):
        scale = units[i][1]
        if period > scale or scale // period < scale % period:
            break
        chosen = i
    name, scale = units[chosen]
    return f"{scale // period}/{name}"


def _limit(parsed: List[Option]) -> Optional[List[Option]]:
    """The limit match's options as iptables-save prints them; None when they are not
    plain (then they are left as they are)."""
    rate, burst = _LIMIT_DEFAULT[1], _LIMIT_BURST
    for option in parsed:
        if option.negated or len(option.values) != 1:
            return None
        if option.name == "--limit":
            rate = option.values[0]
        elif option.name == "--limit-burst":
            burst = option.values[0]
        else:
            return None
    period = _limit_period(rate)
    if period is None or not burst.isdigit():
        return None
    found = [Option(False, "--limit", (_limit_rate(period),))]
    if int(burst) != int(_LIMIT_BURST):
        found.append(Option(False, "--limit-burst", (str(int(burst)),)))
    return found


def _split(options: Sequence[str]) -> List[Option]:
    parsed: List[Option] = []
    negate = False
    for token in options:
        if token == "!":
            negate = True
        elif token.startswith("--"):
            parsed.append(Option(negate, token, ()))
            negate = False
        elif parsed:
            last = parsed[-1]
            parsed[-1] = last._replace(values=(*last.values, token))
        else:
            return []  # not options as normalize() leaves them: leave them alone
    return parsed


def canonical(match: str, options: Sequence[str]) -> List[str]:
    """The options of `-m match` as iptables-save prints them."""
    if match == "limit":
        limited = _limit(_split(options))
        if limited is None:
            return list(options)
        return [word for option in limited for word in (option.name, *option.values)]
    values = _VALUES.get(match)
    order = _ORDER.get(match)
    if values is None and order is None:
        return list(options)
    parsed = _split(options)
    if not parsed:
        return list(options)
    if values:
        parsed = [
            o._replace(values=tuple(values[o.name](v) for v in o.values)) if o.name in values else o
            for o in parsed
        ]
    if order:
        rank = {name: i for i, name in enumerate(order)}
        parsed = sorted(parsed, key=lambda o: rank.get(o.name, len(order)))
    out: List[str] = []
    for option in parsed:
        out.extend((["!"] if option.negated else []) + [option.name, *option.values])
    return out


# --- values every rule may hold: addresses, protocols, and the tcp match's flags ---------
# (normalize() in normal_form.py puts -s/-d, -p, --syn and --tcp-flags through these.)

# `--syn` of the tcp match, as iptables stores and prints it.
SYN = ("--tcp-flags", "FIN,SYN,RST,ACK", "SYN")
# TCP flags as the tcp match names them, in the order it prints them.
_TCP_FLAGS = (
    ("FIN", 0x01), ("SYN", 0x02), ("RST", 0x04), ("PSH", 0x08), ("ACK", 0x10), ("URG", 0x20),
)  # fmt: skip


def tcp_flags(value: str) -> str:
    """A --tcp-flags list as the tcp match prints it: its flags in the match's order,
    ALL as every flag, NONE (or none at all) as NONE."""
    bits = 0
    for word in value.split(","):
        word = word.upper() if word.isascii() else "?"  # (iptables folds ASCII only)
        if not word:
            continue  # (iptables splits with strtok: empty items are skipped)
        if word == "ALL":
            bits |= 0x3F
        elif word != "NONE":
            flag = next((b for n, b in _TCP_FLAGS if n == word), None)
            if flag is None:
                raise BadInput(f"unknown TCP flag {word!r} in rule")
            bits |= flag
    return ",".join(n for n, b in _TCP_FLAGS if bits & b) or "NONE"


# The protocol names libxtables knows without /etc/protocols (xtables_chain_protos),
# in its order: iptables-save prints a number by the name /etc/protocols gives it
# (getprotobynumber), else by the first name here for it, else as the number.
XTABLES_PROTOCOLS = (
    ("tcp", 6), ("sctp", 132), ("udp", 17), ("udplite", 136), ("icmp", 1),
    ("ipv6-icmp", 58), ("icmpv6", 58), ("esp", 50), ("ah", 51),
    ("mobility-header", 135), ("ipv6-mh", 135), ("mh", 135), ("all", 0),
)  # fmt: skip
_ETC_PROTOCOLS = "/etc/protocols"
_C_NUMBER = lazy(r"0x([0-9a-f]+)|0([0-7]*)|[1-9][0-9]*", re.ASCII)


@functools.lru_cache(maxsize=256)
def normal_protocol(value: str) -> Optional[str]:
    """-p's value as iptables-save prints it; None for `all` (and 0), which it leaves
    out. Read as iptables reads it: lower-cased, then a number (0x hex and 0 octal
    too, up to 255), `all`, a name or alias in /etc/protocols, or one of libxtables'
    own names; `-p 6` is saved as `-p tcp`, `-p 58` and `-p icmpv6` as `-p ipv6-icmp`
    (tests/kernel/test_normal_form_reference.py holds this to iptables)."""
    name = value.lower() if value.isascii() else ""  # (iptables folds ASCII only)
    if name in ("tcp", "udp", "sctp"):
        return name  # (the plugin's: each prints as itself)
    number = protocol_number(name)
    if number is None:
        raise BadInput(f"unknown protocol {value!r} in rule")
    if number == 0:
        return None
    named = _etc_protocols()[1].get(number)
    if named is not None:
        return named
    return next((known for known, n in XTABLES_PROTOCOLS if n == number), str(number))


def protocol_number(name: str) -> Optional[int]:
    """A lower-case `-p` value as iptables reads it: a number, `all`, a name or alias
    in /etc/protocols, or one of libxtables' names; None when iptables refuses it (a
    name of a number over 255 among them: iptables-nft would cut it to 8 bits)."""
    number = _c_number(name)
    if number is not None or name.isdigit():
        return number if number is not None and number <= 255 else None
    if name == "all":
        return 0
    found = _etc_protocols()[0].get(name)
    if found is None:
        found = next((n for known, n in XTABLES_PROTOCOLS if known == name), None)
    return found if found is not None and found <= 255 else None


def _c_number(text: str) -> Optional[int]:
    """`text` read as strtoul reads it with base 0 ("0x11" and "021" are 17), whole;
    None when it is not such a number."""
    spelled = _C_NUMBER.fullmatch(text.lower())
    if spelled is None:
        return None
    hexadecimal, octal = spelled.group(1), spelled.group(2)
    return int(hexadecimal, 16) if hexadecimal else int(octal, 8) if octal else int(text)


@functools.lru_cache(maxsize=1)
def _etc_protocols() -> Tuple[Dict[str, int], Dict[int, str]]:
    """/etc/protocols as getprotobyname and getprotobynumber read it: every name and
    alias to its number, every number to the first name given it. Empty when the
    file cannot be read (iptables then knows only its own names)."""
    by_name: Dict[str, int] = {}
    by_number: Dict[int, str] = {}
    try:
        with open(_ETC_PROTOCOLS, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                words = line.partition("#")[0].split()
                if len(words) < 2 or not words[1].isdigit():
                    continue
                number = int(words[1])
                by_number.setdefault(number, words[0])
                for alias in (words[0], *words[2:]):
                    by_name.setdefault(alias, number)
    except OSError:
        pass
    return by_name, by_number


@functools.lru_cache(maxsize=4096)
def normal_address(value: str, family: int) -> str:
    """`ADDRESS[/MASK]` of -s/-d as iptables-save prints it: the address masked, then
    `/N` for a mask of N leading ones (given as a length or as an address), else the
    mask in address form -- iptables takes any mask, and 10.0.0.0/0.0.255.255 is not
    10.0.0.0/16 (ipaddress would read that mask as a host mask)."""
    # Cached: a node's rules repeat few addresses (127.0.0.1, the pod subnets), and
    # ipaddress took a third of normalize() when `check` generates every container's.
    text, slash, mask_text = value.partition("/")
    address = _rule_address(text, value, family)
    width = address.max_prefixlen
    every = (1 << width) - 1
    if not slash:
        mask = every
    elif _c_number(mask_text) is not None or mask_text.isdigit():
        length = _c_number(mask_text)  # (as strtoul reads it: /010 is /8)
        if length is None or length > width:
            raise BadInput(f"invalid address {value!r} in rule")
        mask = every ^ (every >> length)
    else:
        mask = int(_rule_address(mask_text, value, family))
    ones = bin(mask).count("1")
    masked = type(address)(int(address) & mask)
    if mask == every ^ (every >> ones):
        return f"{_printed(masked)}/{ones}"
    return f"{_printed(masked)}/{_printed(type(address)(mask))}"


_AF = {4: socket.AF_INET, 6: socket.AF_INET6}
_WIDTH = {4: 32, 6: 128}
_inet_pton = socket.inet_pton


def _numeric(text: str, family: int) -> bool:
    """Whether `text` is one address of `family` as inet_pton reads it (what
    iptables-save prints, through inet_ntop, and the NAT targets take)."""
    try:
        _inet_pton(_AF[family], text)
    except (OSError, ValueError):  # (ValueError: an embedded NUL)
        return False
    return True


def is_rule_address(value: str, family: int) -> bool:
    """Whether `value` of a rule's -s/-d is `ADDRESS[/MASK]` of `family` as iptables
    reads it (normal_address takes it): a snapshot's -d `zz::zz::1/128`, or an IPv4
    address in an ip6tables dump, is not, and list, check and add look into every -d
    of the plugin's chains. What iptables-save prints passes inet_pton alone (uncached:
    a kube-proxy node's dump has tens of thousands of them, each once); anything else
    is asked of normal_address."""
    address, slash, mask = value.partition("/")
    if _numeric(address, family) and (
        not slash or mask.isascii() and mask.isdigit() and int(mask) <= _WIDTH[family]
    ):
        return True
    try:
        normal_address(value, family)
    except BadInput:
        return False
    return True


def nat_misread(value: str, family: int) -> Optional[str]:
    """The first address of a DNAT/SNAT target's `--to-destination`/`--to-source`
    (`ADDR[-ADDR][:PORTS]`, `[ADDR[-ADDR]]:PORTS` or a bare IPv6 `ADDR[-ADDR]`) that
    is not one of `family`, as iptables' NAT targets read them (libxt_NAT's parse_to:
    inet_pton), or None. A value of ports alone (`:8080`) has none to be wrong."""
    if value.startswith("["):
        end = value.find("]")
        addresses = value[1:end] if end >= 0 else value
    else:
        colon = value.find(":")
        if colon >= 0 and ":" in value[colon + 1 :]:
            colon = -1  # an IPv6 address without brackets: no port
        addresses = value if colon < 0 else value[:colon]
    if not addresses:
        return None
    for part in addresses.split("-", 1) if "-" in addresses else (addresses,):
        if not _numeric(part, family):
            return part
    return None


def _rule_address(
    text: str, value: str, family: int
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise BadInput(f"invalid address {value!r} in rule") from None
    if "%" in text:  # (a zone: ipaddress takes one, iptables does not)
        raise BadInput(f"invalid address {value!r} in rule")
    if address.version != family:
        raise BadInput(f"address {value!r} is not IPv{family}")
    return address


def _printed(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """As iptables prints it (inet_ntop): an IPv6 address whose first 96 bits are
    ::ffff:0:0/96 or zero (but ::/112) ends in dotted IPv4, where ipaddress writes
    hex."""
    if address.version == 6:
        value = int(address)
        high, low = value >> 32, value & 0xFFFFFFFF
        if high == 0xFFFF or high == 0 and value >> 16:
            prefix = "::ffff:" if high else "::"
            return prefix + str(ipaddress.IPv4Address(low))
    return address.compressed
