"""How a table cell is cut to a terminal's width (render/table.py's Cuttable.cut and
Cuttable.readable): a name from its end, an `address:port` in the middle of its
address with the port whole, and an IPv6 address in whole groups, never below what it
reads in (`2001:db8:…:7334`). Pure string work; the table decides how much room a
column gets.
"""

from __future__ import annotations

import sys
from typing import Dict, Iterator, List

# What a cut leaves in place of what it took: `…`, or `...` on a stdout whose
# encoding has no `…` (PYTHONIOENCODING=ascii, a latin-1 locale), where it was
# written `?` (entry._errors_for), which reads as a character of the name or address.
# Every cut below counts the mark's own length, so a table stays aligned either way.
ELLIPSIS = "\u2026"
ASCII_ELLIPSIS = "..."
_MARKS: Dict[str, str] = {}  # (by encoding: asked of every cut cell)


def mark() -> str:
    """The cut mark stdout can write: ELLIPSIS, else ASCII_ELLIPSIS."""
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    found = _MARKS.get(encoding)
    if found is None:
        try:
            ELLIPSIS.encode(encoding)
            found = ELLIPSIS
        except (UnicodeEncodeError, LookupError):
            found = ASCII_ELLIPSIS
        _MARKS[encoding] = found
    return found


def cut_end(text: str, room: int) -> str:
    """`text` in `room` characters: its start, then `…` (a name: its start tells it
    apart, as a container ID's does)."""
    if len(text) <= room:
        return text
    cut = mark()
    return text[: max(room - len(cut), 0)] + cut


# What a cell keeps of a mapping's conditions at the least: the word that says it has
# some. Without it the row reads as a mapping that takes every packet to its port; a
# `…` alone after the port reads as a cut port (`10.88.0.1:65002…`).
def conditions_mark() -> str:
    return " if" + mark()


def cut_address(text: str, room: int) -> str:
    """An `address:port` (IPv6 in brackets) in `room` characters: the port whole, the
    address cut by cut_ip; the end cut when not even that fits. A mapping's conditions
    after it (`10.88.0.1:65002 if ! -s 192.168.0.0/16`) are cut first, from their end,
    down to conditions_mark() (`10.88.0.1:65002 if…`); then the address beside the mark,
    to what it reads in (address_floor counts the mark), then below that (only in a
    column narrower than every cell's floor: table._fitted's last try); the mark goes
    only when the port would not stay whole beside it; the port goes last."""
    if len(text) <= room:
        return text
    where, narrowed, condition = text.partition(" if ")
    if narrowed:
        left = room - len(where) - len(narrowed)
        if left >= 1:
            return where + narrowed + cut_end(condition, left)
        port = where.rpartition(":")[2]
        marked = cut_address(where, room - len(conditions_mark()))
        if port and marked.endswith(":" + port):
            return marked + conditions_mark()
        return cut_address(where, room)
    address, colon, port = text.rpartition(":")
    bracketed = address.startswith("[") and address.endswith("]")
    inner = address[1:-1] if bracketed else address
    kept = room - len(colon + port) - (2 if bracketed else 0)
    if not colon or kept < 3:
        return cut_end(text, room)
    inner = cut_ip(inner, kept)
    return ("[" + inner + "]" if bracketed else inner) + colon + port


def address_floor(text: str) -> int:
    """The fewest characters cut_address can cut an `address:port` cell to and leave
    it readable (ip_floor for the address; the port whole; a mapping's conditions after
    it down to conditions_mark(), which says there are some)."""
    where, narrowed, _condition = text.partition(" if ")
    marked = len(conditions_mark()) if narrowed else 0
    address, colon, _port = where.rpartition(":")
    if not colon:
        return len(where) + marked
    inner = address[1:-1] if address.startswith("[") and address.endswith("]") else address
    return len(where) - len(inner) + ip_floor(inner) + marked


# What a cut IPv6 address keeps at the least (ip_floor), in whole groups: its first
# two (a /32, as fd00:1111 or 2001:db8: the site's prefix, which tells the network;
# one alone, `2001` or `fd00`, is that of most addresses), and its last (the host).
NETWORK_GROUPS = 2


def ip_floor(address: str) -> int:
    """The fewest characters `address` reads in: an IPv6 address cut to its first
    NETWORK_GROUPS groups and its last (`2001:db8:…:7334`, 15 of 28), unless
    that is no shorter; an IPv4 address whole (15 characters at most: a cut saves
    three and reads as another address)."""
    # The narrowest cut alone: _ipv6_cuts makes them as they are asked for (making
    # every cut to take the first was most of a 10,000-row list's time at 80 columns:
    # table._readable_cuts asks it of every address cell).
    least = next(_ipv6_cuts(address, NETWORK_GROUPS), address)
    return min(len(least), len(address))


def cut_ip(address: str, room: int) -> str:
    """`address` in `room` characters: whole when it fits; an IPv6 address as the most
    of its first and last groups that fit, each group whole, `…` for those between
    (`2001:db8:85a3:…:370:7334`, `fd00:1111:…:7777`): a partial group (`85a`) reads as
    another one. Narrower than ip_floor (a terminal too narrow for anything else: see
    _fitted), one first group, then its middle by characters (cut_middle)."""
    if len(address) <= room:
        return address
    widest = None
    for shown in _ipv6_cuts(address, NETWORK_GROUPS):
        if len(shown) > room:
            break  # (each cut is longer than the one before: none after fits either)
        widest = shown
    if widest is not None:
        return widest
    # Below ip_floor: the first group and the last alone, with their colons or without.
    for shown in _ipv6_cuts(address, 1):
        for least in (shown, shown.replace(":" + mark() + ":", mark())):
            if len(least) <= room:
                return least
        break
    return cut_middle(address, room)


def _ipv6_cuts(address: str, first: int) -> Iterator[str]:
    """The cuts `head:…:tail` of an IPv6 address (none of an IPv4 one), narrowest first,
    each longer than the one before, made as they are asked for: whole groups, at least
    `first` non-empty ones in head and one in tail, a group more each time, to head
    and tail in turn; neither ends at a `::`, and a group at least is left out. Only
    those shorter than the address."""
    groups = address.split(":")
    total = len(groups)
    if total < 3:
        return
    heads: List[int] = []
    named = 0  # (non-empty groups so far: counted once, not again for each head)
    for n in range(1, total):
        if groups[n - 1]:
            named += 1
            if named >= first:
                heads.append(n)
    tails = [n for n in range(1, total) if groups[total - n]]
    head = tail = 0
    turn = 0
    gap = ":" + mark() + ":"
    while head < len(heads) and tail < len(tails) and heads[head] + tails[tail] < total:
        shown = ":".join(groups[: heads[head]]) + gap + ":".join(groups[total - tails[tail] :])
        if len(shown) >= len(address):
            return  # (and every later one: each is a group longer)
        yield shown
        # The next group: to the head, then the tail, in turn (the side that has none
        # left to give gives way to the other).
        if turn % 2 == 0 and head + 1 < len(heads) and heads[head + 1] + tails[tail] < total:
            head += 1
        elif tail + 1 < len(tails) and heads[head] + tails[tail + 1] < total:
            tail += 1
        elif head + 1 < len(heads) and heads[head + 1] + tails[tail] < total:
            head += 1
        else:
            break
        turn += 1


def cut_middle(text: str, room: int) -> str:
    """`text` in `room` characters: its start, `…`, its end (cut_ip's last resort)."""
    if len(text) <= room:
        return text
    cut = mark()
    if room < len(cut) + 2:
        return cut_end(text, room)
    head = (room - len(cut) + 1) // 2
    return text[:head] + cut + text[len(text) - (room - len(cut) - head) :]
