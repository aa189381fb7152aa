"""iptables/access/nfnl_batch.py without a kernel: what it reads from a real dump of
CNI-HOSTPORT-DNAT (tests/fixtures/nfnl, captured from iptables-nft), when it rebuilds
a chain, the protocol it re-adds rules with, and the removal plan_teardown records
(the same change as its restore text, on every plugin fixture)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import List

import pytest
from fixtures_lib import NAMES, save_text

from portmapctl.iptables.access import nfmsg, nfnl_batch
from portmapctl.iptables.access.memory import MemoryBackend
from portmapctl.iptables.chains import TOPLEVEL_DNAT, is_plugin_chain
from portmapctl.iptables.planner import plan_teardown
from portmapctl.iptables.ruleset import NatTable, SavedChain, parse_save, rule_target

HERE = Path(__file__).resolve().parents[1] / "fixtures/nfnl"


def _dumped() -> List[nfmsg.DumpedRule]:
    buf = (HERE / "dnat.v4.bin").read_bytes()
    rules, at = [], 0
    while at < len(buf):
        (length,) = struct.unpack_from("=I", buf, at)
        rules.append(nfmsg.DumpedRule(buf, at, at + length))
        at += (length + 3) & ~3
    return rules


def _read() -> NatTable:
    return parse_save((HERE / "dnat.v4.save").read_text(), 4)


def test_the_dump_reads_as_the_chain_iptables_saved():
    rules, read = _dumped(), _read().rules(TOPLEVEL_DNAT)
    assert len(rules) == len(read) == 5
    assert len({r.handle() for r in rules}) == 5
    # The rate-limited foreign rule cannot be appended again; the plugin's rules can.
    assert [nfnl_batch._plain(r) for r in rules] == [False, True, True, True, True]
    assert [r.target() for r in rules] == [None, *(rule_target(a) for a in read[1:])]
    for rule in rules[1:]:
        body = rule.body()
        assert b"multiport" in body and b"comment" in body and len(body) % 4 == 0


def test_a_dump_that_is_not_the_chain_read_is_refused():
    rules, read = _dumped(), _read().rules(TOPLEVEL_DNAT)
    web = rule_target(read[1])
    gone = frozenset({web})
    assert nfnl_batch._disagreement(read, rules, [1, 2], gone) == ""
    assert "rules listed" in nfnl_batch._disagreement(read[:-1], rules, [1, 2], gone)
    # Shifted by one: the rule at a planned position does not jump where it was read to.
    shifted = (read[1], read[0], *read[2:])
    assert "does not jump" in nfnl_batch._disagreement(shifted, rules, [0, 2], gone)
    # A rule entering a chain that goes, left out of the plan.
    assert "planned to go" in nfnl_batch._disagreement(read, rules, [1], gone)


def test_rebuilding_is_for_many_rules_out_of_a_shared_chain():
    interleaved = list(range(1, 10_000, 2))  # 5,000 of 10,000, spread through it
    assert nfnl_batch.worth_rebuilding(TOPLEVEL_DNAT, interleaved, 5_000)
    assert nfnl_batch.worth_rebuilding(TOPLEVEL_DNAT, [0], 0)  # emptied: a flush
    assert not nfnl_batch.worth_rebuilding(TOPLEVEL_DNAT, [5_000], 9_999)  # one rule
    assert not nfnl_batch.worth_rebuilding(TOPLEVEL_DNAT, list(range(10)), 1_000)
    assert not nfnl_batch.worth_rebuilding("POSTROUTING", interleaved, 5_000)  # not ours


def _without(table: NatTable, removal: nfnl_batch.Removal) -> NatTable:
    """The table with what `removal` says taken out: what the batch does."""
    chains = {}
    for name, chain in table.chains.items():
        if name in removal.chains:
            continue
        going = set(removal.rules.get(name, ()))
        rules = tuple(r for i, r in enumerate(chain.rules) if i not in going)
        chains[name] = SavedChain(name, chain.policy, rules)
    return NatTable(table.family, chains)


@pytest.mark.parametrize("by_number", [True, False])
@pytest.mark.parametrize("name", NAMES)
def test_the_removal_recorded_is_the_change_the_restore_text_makes(name, by_number):
    for family in (4, 6):
        table = parse_save(save_text(name, family), family)
        chains = [c for c in table.chains if is_plugin_chain(c)]
        for removed in [chains[:1], chains[::2], chains] if chains else []:
            txn = plan_teardown(table, removed, by_number=by_number)
            assert txn.removal is not None
            for chain, positions in txn.removal.rules.items():
                assert txn.removal.read[chain] == table.rules(chain)
                assert list(positions) == sorted(set(positions))
            backend = MemoryBackend({family: table})
            backend.apply(txn)
            assert backend.read(family) == _without(table, txn.removal), (name, removed)
