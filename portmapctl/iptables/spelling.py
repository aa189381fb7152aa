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
"""

from __future__ import annotations

from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple


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
    "conntrack": ("--ctstate", "--ctproto", "--ctorigsrc", "--ctorigdst", "--ctreplsrc",
                  "--ctrepldst", "--ctorigsrcport", "--ctorigdstport", "--ctreplsrcport",
                  "--ctrepldstport", "--ctstatus", "--ctexpire", "--ctdir"),  # fmt: skip
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
