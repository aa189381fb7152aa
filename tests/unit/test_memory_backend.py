"""The writable memory backend, and the commands that write, run against it without root.

Its semantics are pinned to real iptables by tests/kernel/test_memory_conformance.py;
here it lets gc, check --repair and add be tested as library calls on a laptop.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import List, Tuple

import pytest
from fixtures_lib import configs, table
from memory_cases import scenarios

from portmapctl.cni.cache import read_cache
from portmapctl.errors import ApplyFailed
from portmapctl.iptables import inventory
from portmapctl.iptables.access.memory import MemoryBackend
from portmapctl.iptables.chains import chain_name, dnat_chain_name
from portmapctl.iptables.ruleset import NatTable, SavedChain, parse_save, rule_target
from portmapctl.ops import check as check_lib
from portmapctl.ops import gc as gc_lib
from portmapctl.ops.add import add
from portmapctl.ops.node import Node, NodeOptions

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CACHE = str(ROOT / "examples" / "cni-cache")


def example_node(cache_dir: str = EXAMPLE_CACHE) -> Node:
    tables = {f: parse_save((ROOT / "examples" / f"node.v{f}.save").read_text(), f) for f in (4, 6)}
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
        sys.modules["portmapctl.ops.check.repair"],
        "after_setup_many",
        lambda changed, flush, **_: side_effects.extend(c.container_id for c, _ in changed) or [],
    )
    node = example_node()
    healthy_first = check_lib.repair(node, flush_udp=False)
    assert healthy_first.repaired  # the example node misses an entry rule
    flushed = {
        f: parse_save(
            "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n"
            ":OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n",
            f,
        )
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
    monkeypatch.setattr("portmapctl.ops.add.after_setup", lambda *args, **kwargs: [])
    for config in configs("three-containers"):
        node = Node(NodeOptions(cache_dirs=(str(tmp_path),)), MemoryBackend())
        first = add(node, config)
        assert first.changed
        second = add(node, config)
        assert not second.changed
        for family in config.families:
            assert node.read((family,))[family].has_chain(dnat_chain_name(config))


def test_add_of_a_fixture_matches_the_plugin_s_own_table(monkeypatch, tmp_path):
    monkeypatch.setattr("portmapctl.ops.add.after_setup", lambda *args, **kwargs: [])
    node = Node(NodeOptions(cache_dirs=(str(tmp_path),)), MemoryBackend())
    for config in configs("basic"):
        add(node, config)
    written = node.read()[4]
    plugin = table("basic", 4)
    for name, chain in plugin.chains.items():
        assert written.rules(name) == chain.rules, name


class CountingBackend(MemoryBackend):
    """Counts the reads, as the kernel backends' saves."""

    def __init__(self, tables) -> None:
        super().__init__(tables)
        self.reads: List[int] = []

    def read(self, family: int):
        self.reads.append(family)
        return super().read(family)


def _counted_node(monkeypatch) -> Tuple[Node, CountingBackend, List[str]]:
    from portmapctl.cni import cache as cni_cache

    node = example_node()
    backend = CountingBackend(node.backend.tables)
    node.backend = backend
    cache_files_read: List[str] = []
    real = cni_cache.read_attachment

    def counted(path, *, configs=None):
        cache_files_read.append(path)
        return real(path, configs=configs)

    monkeypatch.setattr(cni_cache, "read_attachment", counted)
    return node, backend, cache_files_read


def test_interactive_gc_reads_once_plans_asks_then_applies_that_plan(tmp_path, monkeypatch):
    """What `gc` on a terminal does: plan (one read of each table, one of the cache),
    show the preview, then apply that very plan: nothing is read again."""
    node, backend, cache_files_read = _counted_node(monkeypatch)
    options = gc_lib.GcOptions(min_age=0, flush_udp=False, state_dir=str(tmp_path))
    planned = gc_lib.plan_gc(node, gc_lib.Sources(), options)
    assert sorted(backend.reads) == [4, 6]
    files = len(cache_files_read)
    assert files and len(set(cache_files_read)) == files  # each cache file read once
    preview = gc_lib.apply_gc(node, replace(planned, options=replace(options, dry_run=True)))
    assert preview.removed and not backend.applied
    confirmed = frozenset((c.family, c.chain) for c in preview.removed)
    calls: List[Tuple[int, int]] = []
    done = gc_lib.apply_gc(
        node,
        replace(planned, options=replace(options, only=confirmed)),
        progress=lambda removed, total: calls.append((removed, total)),
    )
    assert done.removed == preview.removed
    # The total up front, then one call per family, counting up to all of it (the bar).
    total = len(done.removed)
    assert calls[0] == (0, total) and len(calls) == 1 + len(planned.families)
    assert calls[-1] == (total, total)
    assert sorted(backend.reads) == [4, 6] and len(cache_files_read) == files  # no re-read
    assert [txn.render() for txn in backend.applied] == [
        p.transaction.render() for p in planned.families if p.transaction
    ]


def test_a_change_after_the_prompt_fails_the_plan_and_the_replan_keeps_to_what_was_confirmed(
    tmp_path, monkeypatch
):
    """The plugin ran between the preview and the answer: its DEL took the confirmed
    chain's entry rule (the planned -D no longer matches), and an ADD made a chain that
    looks stale too. The transaction is refused whole, that family is read again, and
    only what was confirmed may go: the new chain stays."""
    node, backend, cache_files_read = _counted_node(monkeypatch)
    options = gc_lib.GcOptions(min_age=0, flush_udp=False, state_dir=str(tmp_path))
    planned = gc_lib.plan_gc(node, gc_lib.Sources(), options)
    [first] = [p for p in planned.families if p.removed]
    family = first.family
    [gone] = first.removed
    confirmed = frozenset({(family, gone.chain)})
    table = backend.tables[family]
    newcomer = chain_name("othernet", "f00dcafe")
    chains = {}
    for name, chain in table.chains.items():
        rules = tuple(r for r in chain.rules if rule_target(r) != gone.chain)
        copies = tuple(
            tuple(newcomer if a == gone.chain else a for a in r)
            for r in chain.rules
            if rule_target(r) == gone.chain
        )
        chains[name] = SavedChain(name, chain.policy, rules + copies)
    chains[newcomer] = SavedChain(newcomer, "-", table.rules(gone.chain))
    backend.tables[family] = NatTable(family, chains)
    reads_before = len(backend.reads)
    done = gc_lib.apply_gc(node, replace(planned, options=replace(options, only=confirmed)))
    assert len(backend.reads) == reads_before + 1  # that family, read again
    assert {c.chain for c in done.removed} == {gone.chain}
    after = backend.tables[family]
    assert not after.has_chain(gone.chain) and after.has_chain(newcomer)
    assert any(rule_target(r) == newcomer for c in after.chains.values() for r in c.rules)
    assert newcomer in {c.chain for c in done.pending}


def _planned_then_forgotten(tmp_path, monkeypatch):
    """A gc plan read while the state file held the example's stale chains, and the
    file after another gc forgot them all (it saw them live, or gone): the node, the
    plan, and a reader of this namespace's sightings."""
    from functools import partial

    from portmapctl.host import lock
    from portmapctl.ops import node as node_module
    from portmapctl.ops.gc import state as gc_state

    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    monkeypatch.setattr(node_module.lock, "held", partial(lock.held, str(run_dir)))
    node = example_node()
    namespace = gc_state.namespace_key(node.options.netns)
    options = gc_lib.GcOptions(min_age=3600, flush_udp=False, state_dir=str(tmp_path))
    looked = gc_lib.gc(node, gc_lib.Sources(), replace(options, dry_run=True))
    first, _ = gc_state.load(str(tmp_path), namespace)
    assert looked.pending and len(first) == len(looked.pending)  # the stale chains, seen
    planned = gc_lib.plan_gc(node, gc_lib.Sources(), options)
    assert planned.seen == first
    gc_state.save(str(tmp_path), namespace, {})  # another gc, meanwhile: it forgot them
    return node, planned, lambda: gc_state.load(str(tmp_path), namespace)[0]


def test_a_preview_does_not_write_back_what_a_gc_in_between_forgot(tmp_path, monkeypatch):
    """gc's preview (and a dry run) reads the sightings without the lock. A gc that
    saves in between may forget a chain (it was live, or gone, when that gc read); the
    preview's save must not bring back its old first sighting: written back, it would
    let --min-age pass at once for a container being added again under that chain."""
    node, planned, sightings = _planned_then_forgotten(tmp_path, monkeypatch)
    options = replace(planned.options, dry_run=True)
    preview = gc_lib.apply_gc(node, replace(planned, options=options))
    assert preview.pending and not preview.warnings
    assert sightings() == {}


def test_a_confirmed_gc_does_not_write_back_what_a_gc_during_the_question_forgot(
    tmp_path, monkeypatch
):
    """gc that asks reads the sightings before the question and applies after it,
    under the lock taken only then. A gc that saves while the person answers may forget
    a chain (live, or gone, at its read); the confirmed run's save must not bring back
    its old first sighting (it would let --min-age pass at once for a container being
    added again under that chain), as the preview's save does not."""
    from portmapctl.ops.node import locked

    node, planned, sightings = _planned_then_forgotten(tmp_path, monkeypatch)
    with locked(node):  # the answer was yes
        done = gc_lib.apply_gc(node, planned)
    assert done.pending and not done.removed and done.state_error is None
    assert sightings() == {}


@pytest.mark.parametrize("planted", ["fifo", "directory", "a file as the run dir"])
def test_a_dry_run_whose_lock_is_refused_ends_as_any_run_does(tmp_path, monkeypatch, planted):
    """A dry run takes the lock only to save its sightings. Refused there (a FIFO or a
    directory at the lock, a file where the run directory should be), it said a
    warning, showed its plan and exited 0, where the real run exits 3 before it reads:
    now the refusal ends it too (HostProblem: one line, exit 3), nothing recorded."""
    import os
    from functools import partial

    from portmapctl.errors import HostProblem
    from portmapctl.host import lock
    from portmapctl.ops import node as node_module

    run_dir = tmp_path / "run"
    if planted == "a file as the run dir":
        run_dir.write_text("")
    else:
        run_dir.mkdir(mode=0o700)
        if planted == "fifo":
            os.mkfifo(run_dir / "lock", 0o600)
        else:
            (run_dir / "lock").mkdir()
    monkeypatch.setattr(node_module.lock, "held", partial(lock.held, str(run_dir), wait=1))
    node = example_node()
    state_dir = tmp_path / "state"
    options = gc_lib.GcOptions(min_age=3600, flush_udp=False, state_dir=str(state_dir))
    refused = "is not a (regular file|directory) owned by us: refusing to use it"
    with pytest.raises(HostProblem, match=refused):
        gc_lib.gc(node, gc_lib.Sources(), replace(options, dry_run=True))
    assert not state_dir.exists() and not node.backend.applied


def test_a_dry_run_that_cannot_write_its_sightings_says_so_as_the_real_run_does(
    tmp_path, monkeypatch
):
    """A full or read-only run directory: the real run reports what it did and ends
    with the one error line (state_error, exit 3); a dry run made it a warning, exit 0.
    Now both carry state_error, the plan complete (cli/gc.py ends with the line)."""
    from functools import partial

    from portmapctl.errors import HostProblem
    from portmapctl.host import lock
    from portmapctl.ops import node as node_module
    from portmapctl.ops.gc import state as gc_state

    run_dir = tmp_path / "run"
    monkeypatch.setattr(node_module.lock, "held", partial(lock.held, str(run_dir), wait=1))

    def full(path: str, data: bytes) -> None:
        raise HostProblem(f"cannot write {path}: No space left on device")

    monkeypatch.setattr(gc_state, "write_atomically", full)
    node = example_node()
    options = gc_lib.GcOptions(min_age=3600, flush_udp=False, state_dir=str(run_dir))
    looked = gc_lib.gc(node, gc_lib.Sources(), replace(options, dry_run=True))
    assert looked.pending and not looked.warnings
    assert looked.state_error is not None and "No space left on device" in looked.state_error


def test_merged_sightings_only_ever_delay_a_removal():
    from portmapctl.ops.gc.state import ChainKey, Seen, merged

    a, b, c, d = (ChainKey(4, f"CNI-DN-{n}") for n in "abcd")
    current = {a: Seen("x", 5.0), c: Seen("z", 9.0)}  # b: forgotten by the other run
    loaded = {a: Seen("x", 5.0), b: Seen("y", 1.0), c: Seen("z", 2.0)}
    ours = {a: Seen("x", 5.0), b: Seen("y", 1.0), c: Seen("z", 3.0), d: Seen("w", 7.0)}
    assert merged(current, loaded, ours) == {
        a: Seen("x", 5.0),  # as it was
        c: Seen("z", 9.0),  # the other run's later sighting wins over ours
        d: Seen("w", 7.0),  # ours, new
    }
    assert merged(current, loaded, {b: Seen("y", 1.0)}) == {}  # this run forgot a and c
