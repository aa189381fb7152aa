"""render/cuts.py's ip_floor and cut_ip give what they gave when they made every cut of
an address first (00d902c to 19d1b6a): _ipv6_cuts now makes its cuts as they are asked
for, and ip_floor takes the first alone (a 10,000-row list of IPv6 host addresses at
80 columns spent most of its time making cuts nobody read). The reference below is
that code as it was, word for word."""

from __future__ import annotations

import ipaddress
from typing import List

from hypothesis import given, settings
from hypothesis import strategies as st

from portmapctl.render.cuts import NETWORK_GROUPS, _ipv6_cuts, cut_ip, cut_middle, ip_floor

# --- the reference: cuts.py's functions as 19d1b6a had them ----------------------------


def _old_ipv6_cuts(address: str, first: int) -> List[str]:
    groups = address.split(":")
    total = len(groups)
    if total < 3:
        return []
    heads = [n for n in range(1, total) if groups[n - 1] and sum(map(bool, groups[:n])) >= first]
    tails = [n for n in range(1, total) if groups[total - n]]
    cuts: List[str] = []
    head = tail = 0
    turn = 0
    while head < len(heads) and tail < len(tails) and heads[head] + tails[tail] < total:
        shown = ":".join(groups[: heads[head]]) + ":…:" + ":".join(groups[total - tails[tail] :])
        if len(shown) < len(address):
            cuts.append(shown)
        if turn % 2 == 0 and head + 1 < len(heads) and heads[head + 1] + tails[tail] < total:
            head += 1
        elif tail + 1 < len(tails) and heads[head] + tails[tail + 1] < total:
            tail += 1
        elif head + 1 < len(heads) and heads[head + 1] + tails[tail] < total:
            head += 1
        else:
            break
        turn += 1
    return cuts


def _old_ip_floor(address: str) -> int:
    least = next(iter(_old_ipv6_cuts(address, NETWORK_GROUPS)), address)
    return min(len(least), len(address))


def _old_cut_ip(address: str, room: int) -> str:
    if len(address) <= room:
        return address
    readable = _old_ipv6_cuts(address, NETWORK_GROUPS)
    fitting = [shown for shown in readable if len(shown) <= room]
    if not fitting:
        least = _old_ipv6_cuts(address, 1)[:1]
        least += [shown.replace(":…:", "…") for shown in least]
        fitting = [shown for shown in least if len(shown) <= room][:1]
    return fitting[-1] if fitting else cut_middle(address, room)


# --- addresses ----------------------------------------------------------------------

# As the kernel's tools print them (compressed; IPv4-mapped ones end in dotted IPv4),
# and as anyone may spell them: every group written out, or leading zeros kept.
V6 = st.ip_addresses(v=6)
SPELLED = st.one_of(
    V6.map(str),
    V6.map(lambda a: a.exploded),
    V6.map(lambda a: ":".join(f"{int(g, 16):x}" for g in a.exploded.split(":"))),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=4).map(lambda a: str(ipaddress.IPv6Address(f"::ffff:{a}"))),
    # Few distinct groups: many `::` and zero runs, where the cuts' rules are subtle.
    st.lists(st.sampled_from(["0", "1", "fd00", "2001", "db8", "ffff", "abcd"]),
             min_size=8, max_size=8).map(lambda g: str(ipaddress.IPv6Address(":".join(g)))),
)  # fmt: skip
# Text that is no address at all goes through them too (a cell is any text).
ANY_TEXT = st.text(alphabet=st.sampled_from("0123456789abcdef:.[]…x"), max_size=50)
ROOMS = st.integers(min_value=0, max_value=50)


@settings(max_examples=3000, deadline=None)
@given(st.one_of(SPELLED, ANY_TEXT), ROOMS)
def test_ip_floor_and_cut_ip_give_what_they_gave(address: str, room: int) -> None:
    assert ip_floor(address) == _old_ip_floor(address)
    assert cut_ip(address, room) == _old_cut_ip(address, room)


@settings(max_examples=2000, deadline=None)
@given(st.one_of(SPELLED, ANY_TEXT), st.sampled_from([1, NETWORK_GROUPS]))
def test_the_cuts_are_the_same_each_longer_than_the_one_before(address: str, first: int) -> None:
    """What cut_ip's early stop rests on: a cut that does not fit has none after it that
    does."""
    cuts = list(_ipv6_cuts(address, first))
    assert cuts == _old_ipv6_cuts(address, first)
    assert all(len(a) < len(b) for a, b in zip(cuts, cuts[1:]))
