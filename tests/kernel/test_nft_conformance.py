"""The memory fake pinned to the real nft: same transactions, same ruleset or same failure.

Every step runs through `nft -f -` in a fresh network namespace and through
`MemoryNft`; after each, both must have failed with the same errno text or both
succeeded, and both rulesets must be equal as values, chain and rule handles included
(table handles are netns-wide counters the fake does not model).
"""

from __future__ import annotations

from typing import Callable, Iterator, List, Optional

import nftcases
import pytest
import realplugin

from portmapctl.host import netns
from portmapctl.nftables import planner, ruleset
from portmapctl.nftables.access import NftApplyFailed
from portmapctl.nftables.access.memory import MemoryNft
from portmapctl.nftables.access.nft import RealNft
from portmapctl.nftables.ruleset import Action, ActionKind, BaseHook, Match, RuleBody
from portmapctl.nftables.transaction import Transaction
from portmapctl.nftables.wanted import wanted

pytestmark = pytest.mark.netns


class Pair:
    """The real nft in a namespace and the fake, driven together."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.real = RealNft()
        self.fake = MemoryNft()

    def read_real(self) -> ruleset.Ruleset:
        with netns.entered(self.ns):
            return self.real.read()

    def apply(self, txn: Transaction) -> Optional[str]:
        """Apply to both; the failure reason (the same for both) or None."""
        outcomes: List[Optional[str]] = []
        for apply in (self._apply_real, self.fake.apply):
            try:
                apply(txn)
                outcomes.append(None)
            except NftApplyFailed as err:
                outcomes.append(err.reason)
        assert outcomes[0] == outcomes[1], (
            f"real: {outcomes[0]!r}, fake: {outcomes[1]!r}\n{txn.render()}"
        )
        self.assert_same()
        return outcomes[0]

    def _apply_real(self, txn: Transaction) -> None:
        with netns.entered(self.ns):
            self.real.apply(txn)

    def by_hand(self, command: str, fake: Callable[[], None]) -> None:
        """An nft command a person runs (flush table ...), and its fake equivalent."""
        import upstream

        upstream.nft(self.ns, *command.split())
        fake()
        self.assert_same()

    def assert_same(self) -> None:
        assert _normal(self.read_real()) == _normal(self.fake.read())


def _normal(live: ruleset.Ruleset) -> dict:
    return {
        family: {
            name: (chain.handle, chain.base, [(r.handle, r.body) for r in table.rules_of(name)])
            for name, chain in table.chains.items()
        }
        for family, table in live.tables.items()
    }


@pytest.fixture
def pair() -> Iterator[Pair]:
    name = realplugin.create_netns("pmt-nftconf")
    try:
        yield Pair(name)
    finally:
        realplugin.delete_netns(name)


def _wanted(case: str):
    return [
        w
        for cfg in nftcases.live_configs(case)
        for f in (4, 6)
        if (w := wanted(cfg, f)) is not None
    ]


def _dnat(port: int, cid: str = "c1") -> RuleBody:
    return RuleBody(
        (Match("tcp dport", "==", str(port)),),
        Action(ActionKind.DNAT, addr="10.0.0.1", port=80),
        cid,
    )


def test_setup_teardown_repair_cycle(pair: Pair) -> None:
    want = _wanted("v191-several")
    assert pair.apply(planner.setup(pair.fake.read(), want)) is None
    assert not planner.setup(pair.read_real(), want)  # idempotent on the real thing
    assert pair.apply(planner.teardown(pair.fake.read(), {"aaaa1111", "cccc3333"})) is None
    pair.by_hand("flush table ip cni_hostport", lambda: pair.fake.flush_table(4))
    assert pair.apply(planner.setup(pair.fake.read(), want)) is None
    pair.by_hand("delete table ip6 cni_hostport", lambda: pair.fake.delete_table(6))
    assert pair.apply(planner.setup(pair.fake.read(), want)) is None
    assert not planner.setup(pair.read_real(), want)


def test_stale_delete_fails_whole_and_handles_are_spent(pair: Pair) -> None:
    assert pair.apply(planner.setup(pair.fake.read(), _wanted("v191-basic"))) is None
    txn = Transaction()
    txn.add_rule(4, "hostports", _dnat(1))
    txn.delete_rule(4, "hostports", 999)
    txn.add_rule(4, "hostports", _dnat(2))
    assert pair.apply(txn) == "No such file or directory"
    follow = Transaction()
    follow.add_rule(4, "hostports", _dnat(3))
    assert pair.apply(follow) is None  # same handle in both: failed batches spend handles


def test_deleting_the_same_handle_twice(pair: Pair) -> None:
    assert pair.apply(planner.setup(pair.fake.read(), _wanted("v191-basic"))) is None
    handle = pair.fake.read().tables[4].rules_of("hostports")[0].handle
    txn = Transaction()
    txn.delete_rule(4, "hostports", handle)
    txn.delete_rule(4, "hostports", handle)
    assert pair.apply(txn) == "No such file or directory"
    wrong_chain = Transaction()
    wrong_chain.delete_rule(4, "masquerading", handle)
    assert pair.apply(wrong_chain) == "No such file or directory"


def test_replacing_a_rule_keeps_its_handle_and_a_gone_handle_fails_whole(pair: Pair) -> None:
    """add's guard (planner._guard_plugin_add): `replace rule ... handle H` keeps the rule's
    place and handle; once H is gone (a plugin ADD flushed the chain), ENOENT."""
    assert pair.apply(planner.setup(pair.fake.read(), _wanted("v191-basic"))) is None
    rules = pair.fake.read().tables[4].rules_of("hostports")
    txn = Transaction()
    txn.replace_rule(4, "hostports", rules[0].handle, _dnat(9))
    assert pair.apply(txn) is None
    assert pair.fake.read().tables[4].rules_of("hostports")[0].handle == rules[0].handle
    gone = Transaction()
    gone.add_rule(4, "hostports", _dnat(1))
    gone.replace_rule(4, "hostports", 999, _dnat(9))
    assert pair.apply(gone) == "No such file or directory"


@pytest.mark.parametrize(
    "build, reason",
    [
        (lambda t: t.add_rule(4, "nochain", _dnat(1)), "No such file or directory"),
        (lambda t: t.flush_chain(4, "nochain"), "No such file or directory"),
        (lambda t: t.add_chain(6, "x"), "No such file or directory"),
        (lambda t: t.add_chain(4, "hostports", BaseHook("nat", "prerouting", -100)), "File exists"),
        (
            lambda t: t.add_chain(4, "prerouting", BaseHook("nat", "prerouting", -90)),
            "Operation not supported",
        ),
        (
            lambda t: t.add_rule(
                4, "hostports", RuleBody((), Action(ActionKind.JUMP, target="nope"))
            ),
            "No such file or directory",
        ),
        (lambda t: t.add_chain(4, "prerouting"), None),  # existing base chain, no spec: no-op
        (lambda t: t.add_chain(4, "prerouting", BaseHook("nat", "prerouting", -100)), None),
        (lambda t: t.add_table(4), None),
        # check --repair's create: refused where it exists; made where it does not.
        (lambda t: t.add_table(4, create=True), "File exists"),
        (lambda t: t.add_chain(4, "hostports", create=True), "File exists"),
        (
            lambda t: t.add_chain(4, "prerouting", BaseHook("nat", "prerouting", -100), True),
            "File exists",
        ),
        (lambda t: t.add_chain(4, "newchain", create=True), None),
        (lambda t: t.add_table(6, create=True), None),
    ],
)
def test_failures_and_no_ops(pair: Pair, build, reason) -> None:
    base = Transaction()
    base.add_table(4)
    base.add_chain(4, "hostports")
    base.add_chain(4, "prerouting", BaseHook("nat", "prerouting", -100))
    base.add_rule(4, "hostports", _dnat(1))
    assert pair.apply(base) is None
    txn = Transaction()
    txn.add_rule(4, "hostports", _dnat(5))
    build(txn)
    txn.add_rule(4, "hostports", _dnat(6))
    assert pair.apply(txn) == reason
    after = Transaction()
    after.add_rule(4, "hostports", _dnat(7))
    assert pair.apply(after) is None
