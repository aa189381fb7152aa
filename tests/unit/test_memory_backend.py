"""The writable memory backend, and the commands that write, run against it without root.

Its semantics are pinned to real iptables by tests/kernel/test_memory_conformance.py;
here it lets gc, check --repair and add be tested as library calls on a laptop.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fixtures_lib import configs, table
from memory_cases import scenarios

from portmapctl.cni.cache import read_cache
from portmapctl.errors import ApplyFailed
from portmapctl.iptables import inventory
from portmapctl.iptables.access.memory import MemoryBackend
from portmapctl.iptables.chains import dnat_chain_name
from portmapctl.iptables.ruleset import parse_save
from portmapctl.ops import check as check_lib
from portmapctl.ops import gc as gc_lib
from portmapctl.ops.add import add
from portmapctl.ops.node import Node, NodeOptions

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CACHE = str(ROOT / "examples" / "cni-cache")


def example_node(cache_dir: str = EXAMPLE_CACHE) -> Node:
    tables = {
        f: parse_save((ROOT / "examples" / f"node.v{f}.save").read_text(), f) for f in (4, 6)
    }
    return Node(NodeOptions(cache_dirs=(cache_dir,)), MemoryBackend(tables))


@pytest.mark.parametrize("name", sorted(n for n in scenarios() if n.startswith("refused")))
def test_a_refused_transaction_changes_nothing(name):
    backend = MemoryBackend()
    refused = 0
    for step in scenarios()[name]:
        for family in (4, 6):
            txn = step(backend.read(family))
            if not txn:
                continue
            before = backend.read(family)
            try:
                backend.apply(txn)
            except ApplyFailed:
                refused += 1
                assert backend.read(family) == before
    assert refused


def test_gc_removes_the_stale_chain_and_keeps_the_rest(tmp_path):
    node = example_node()
    before = inventory.build(node.read(), read_cache(EXAMPLE_CACHE))
    stale = {c.name for c in before.chains if "stale" in c.status}
    assert stale, "the example node has a stale chain"
    options = gc_lib.GcOptions(min_age=0, flush_udp=False, state_dir=str(tmp_path))
    result = gc_lib.gc(node, gc_lib.Sources(), options)
    assert {c.chain for c in result.removed} == stale
    after = inventory.build(node.read(), read_cache(EXAMPLE_CACHE))
    assert {c.name for c in after.chains} == {c.name for c in before.chains} - stale
    # Run again: nothing left to do (idempotent).
    again = gc_lib.gc(node, gc_lib.Sources(), options)
    assert not again.removed and not again.transactions


def test_gc_waits_out_min_age(tmp_path):
    node = example_node()
    options = gc_lib.GcOptions(min_age=3600, flush_udp=False, state_dir=str(tmp_path))
    result = gc_lib.gc(node, gc_lib.Sources(), options)
    assert not result.removed and result.pending
    assert not node.backend.applied


def test_repair_recreates_what_a_flush_removed(monkeypatch):
    side_effects = []
    # The package's `repair` is the function; the module is in sys.modules.
    monkeypatch.setattr(
        sys.modules["portmapctl.ops.check.repair"], "after_setup",
        lambda config, families, flush: side_effects.append(config.container_id) or [],
    )
    node = example_node()
    healthy_first = check_lib.repair(node, flush_udp=False)
    assert healthy_first.repaired  # the example node misses an entry rule
    flushed = {
        f: parse_save("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n"
                      ":OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n", f)
        for f in (4, 6)
    }
    node = Node(node.options, MemoryBackend(flushed))
    result = check_lib.repair(node, flush_udp=False)
    assert result.repaired
    kinds = {p.kind for p in result.problems}
    assert "missing-chain" not in kinds and "missing-toplevel" not in kinds
    cached = [a.mapping for a in read_cache(EXAMPLE_CACHE) if a.mapping is not None]
    tables = node.read()
    for config in cached:
        assert any(tables[f].has_chain(dnat_chain_name(config)) for f in config.families)
    assert set(side_effects) >= {c.container_id for c in cached}


def test_add_writes_the_plugin_s_table_and_twice_changes_nothing(monkeypatch, tmp_path):
    monkeypatch.setattr("portmapctl.ops.add.after_setup", lambda *args: [])
    for config in configs("three-containers"):
        node = Node(NodeOptions(cache_dirs=(str(tmp_path),)), MemoryBackend())
        first = add(node, config)
        assert first.changed
        second = add(node, config)
        assert not second.changed
        for family in config.families:
            assert node.read((family,))[family].has_chain(dnat_chain_name(config))


def test_add_of_a_fixture_matches_the_plugin_s_own_table(monkeypatch, tmp_path):
    monkeypatch.setattr("portmapctl.ops.add.after_setup", lambda *args: [])
    node = Node(NodeOptions(cache_dirs=(str(tmp_path),)), MemoryBackend())
    for config in configs("basic"):
        add(node, config)
    written = node.read()[4]
    plugin = table("basic", 4)
    for name, chain in plugin.chains.items():
        assert written.rules(name) == chain.rules, name
