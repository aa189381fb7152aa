"""flow_owners.Taken as a value: the destinations another tool's rule takes first, and
`by_source`, those only a rule for some sources (`-s SPEC`) takes, with the SPECs.

It is a set of the wholly taken destinations. set's copy and operators build a plain
set (or a Taken) without by_source: a copy judged a some-sources destination as taken
for no flow at all, and `|` lost the other side's SPECs. What keeps its meaning per
flow (a copy, a union) keeps by_source; what has no answer as SPECs (an intersection,
a difference, an order) is refused rather than answered for the wholly taken alone.
"""

from __future__ import annotations

import copy
import operator
import socket

import pytest

from portmapctl.host.conntrack import ConntrackEntry
from portmapctl.ops.flow_owners import Taken

WHOLE = (4, socket.inet_aton("10.0.0.1"), 5353)
SOME = (4, socket.inet_aton("10.0.0.2"), 5353)


def flow(src: str, dst: str = "10.0.0.2") -> ConntrackEntry:
    return ConntrackEntry(4, "udp", src, dst, 40000, 5353, dst, src, 5353, 40000)


def taken(whole=(WHOLE,), some=None) -> Taken:
    found = Taken(whole)
    for key, specs in (some if some is not None else {SOME: {"192.0.2.0/24"}}).items():
        found.by_source[key] = set(specs)
    return found


def judged(value: Taken) -> tuple:
    """What the value says of a flow from inside the SPEC, and from outside it."""
    return (
        value.holds(SOME, flow("192.0.2.7")),
        value.holds(SOME, flow("203.0.113.7")),
        value.holds(WHOLE, flow("203.0.113.7", "10.0.0.1")),
    )


def test_a_copy_judges_as_the_original_and_is_its_own():
    original = taken()
    for copied in (original.copy(), copy.copy(original), copy.deepcopy(original), Taken(original)):
        assert type(copied) is Taken
        assert judged(copied) == judged(original) == (True, False, True)
        assert copied == original and bool(copied)
        copied.by_source[SOME].add("203.0.113.0/24")
        assert not original.holds(SOME, flow("203.0.113.7"))
    # A some-sources destination alone is still something taken.
    assert Taken(taken(whole=())).copy()


def test_a_union_keeps_both_sides_specs_and_what_either_takes_whole():
    left = taken(some={SOME: {"192.0.2.0/24"}})
    right = taken(whole=(), some={SOME: {"198.51.100.0/24"}})
    for union in (left | right, left.union(right), right | left, Taken(left).merge(right)):
        assert type(union) is Taken
        assert union.by_source == {SOME: {"192.0.2.0/24", "198.51.100.0/24"}}
        assert union.holds(SOME, flow("198.51.100.7")) and union.holds(SOME, flow("192.0.2.7"))
        assert not union.holds(SOME, flow("203.0.113.7"))
    # A plain set on either side: its destinations are wholly taken.
    assert ({SOME} | left).holds(SOME, flow("203.0.113.7"))
    assert (left | {SOME}).by_source == {} and SOME in (left | {SOME})
    grown = taken()
    grown |= {SOME}
    assert grown.holds(SOME, flow("203.0.113.7")) and grown.by_source == {}
    grown = taken()
    grown.update(right, {(4, None, 1)})
    assert grown.by_source == {SOME: {"192.0.2.0/24", "198.51.100.0/24"}}
    assert (4, None, 1) in grown
    # The operands are left as they were.
    assert left.by_source == {SOME: {"192.0.2.0/24"}}
    assert right.by_source == {SOME: {"198.51.100.0/24"}}


def test_equality_counts_the_destinations_some_sources_rule_takes():
    assert taken() != {WHOLE} and {WHOLE} != taken()
    assert taken(some={}) == {WHOLE}
    assert taken() == taken() and taken() != taken(some={SOME: {"198.51.100.0/24"}})
    assert Taken() != taken(whole=())


@pytest.mark.parametrize(
    "refused",
    [
        operator.and_,
        operator.sub,
        operator.xor,
        operator.iand,
        operator.isub,
        operator.ixor,
        operator.le,
        operator.lt,
        operator.ge,
        operator.gt,
        Taken.intersection,
        Taken.difference,
        Taken.symmetric_difference,
        Taken.intersection_update,
        Taken.difference_update,
        Taken.symmetric_difference_update,
        Taken.issubset,
        Taken.issuperset,
        Taken.isdisjoint,
    ],
)
def test_what_has_no_answer_as_specs_is_refused(refused):
    """An intersection or difference of `-s` SPEC lists is no SPEC list (all but a
    /24 is not one), and an order between them neither: refused, not answered for the
    wholly taken destinations alone (which judged the some-sources rule's flows as
    nobody's). A plain set on the left is refused too."""
    with pytest.raises(TypeError, match="by_source"):
        refused(taken(), {WHOLE, SOME})
    if refused.__name__ in {"and_", "sub", "xor", "le", "lt", "ge", "gt"}:
        with pytest.raises(TypeError, match="by_source"):
            refused({WHOLE, SOME}, taken())


def test_clear_forgets_the_some_sources_destinations_too():
    cleared = taken()
    cleared.clear()
    assert not cleared and cleared == set()
    assert not cleared.holds(SOME, flow("192.0.2.7"))
