"""gc when the tool that applies its transaction dies without saying (killed, or
stopped at its time limit: ApplyFailed.maybe_applied). The transaction went in whole
or not at all; the next read tells which. Gone in, its chains are what gc removed:
reported, and their UDP flows flushed. Before, the re-plan on the table it had
changed found nothing to do, gc said it removed nothing, and no later run knew the
ports whose flows still went to the dead containers. Through the memory fakes, no root
(the same through the real restore, killed for real: tests/kernel/test_gc.py)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Dict, List, Optional

import nftcases
import pytest

from portmapctl.errors import ApplyFailed
from portmapctl.iptables.access.memory import MemoryBackend
from portmapctl.iptables.ruleset import NatTable, parse_save
from portmapctl.iptables.transaction import Transaction
from portmapctl.nftables.access import NftApplyFailed
from portmapctl.nftables.access.memory import MemoryNft
from portmapctl.ops import gc as gc_lib
from portmapctl.ops.node import Node, NodeOptions

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CACHE = str(ROOT / "examples" / "cni-cache")
KILLED = "iptables-restore was killed by SIGKILL (a transaction is applied whole or not at all)"


class Dying(MemoryBackend):
    """The memory backend; try N of `script` does what it says: "in" applies the
    transaction and then dies without saying, "out" dies before it, "refused" is an
    ordinary refusal (the table changed meanwhile), "ok" applies."""

    def __init__(self, tables: Dict[int, NatTable], script: List[str]) -> None:
        super().__init__(tables)
        self.script = script

    def apply(self, txn: Transaction) -> None:
        step = self.script.pop(0) if self.script else "ok"
        if step == "refused":
            raise ApplyFailed("iptables-restore refused the transaction, nothing changed: x")
        if step in ("in", "ok"):
            super().apply(txn)
        if step in ("in", "out"):
            raise ApplyFailed(KILLED, maybe_applied=True)


def example_tables() -> Dict[int, NatTable]:
    return {f: parse_save((ROOT / "examples" / f"node.v{f}.save").read_text(), f) for f in (4, 6)}


@pytest.fixture
def flushed(monkeypatch) -> List[List[str]]:
    """The chains whose UDP flows gc flushed, per call (no conntrack touched)."""
    calls: List[List[str]] = []

    def record(node, plans, nft_done):
        chains = [c.chain for p in plans for c in p.removed]
        chains += [c.chain + "@nft" for c in (nft_done.removed if nft_done else ())]
        calls.append(chains)
        return 0, ()

    monkeypatch.setattr(sys.modules["portmapctl.ops.gc.apply"], "flush_removed", record)
    return calls


def stale_chains(tables: Dict[int, NatTable], tmp_path: Path) -> Dict[int, set]:
    """What a gc that nothing disturbs removes from these tables, per family."""
    node = Node(NodeOptions(cache_dirs=(EXAMPLE_CACHE,)), MemoryBackend(dict(tables)))
    options = gc_lib.GcOptions(min_age=0, flush_udp=False, state_dir=str(tmp_path / "plain"))
    found: Dict[int, set] = {}
    for chain in gc_lib.gc(node, gc_lib.Sources(), options).removed:
        found.setdefault(chain.family, set()).add(chain.chain)
    assert found, "the example node has stale chains"
    return found


def run_gc(backend: MemoryBackend, tmp_path: Path):
    node = Node(NodeOptions(cache_dirs=(EXAMPLE_CACHE,), backend="iptables"), backend)
    options = gc_lib.GcOptions(min_age=0, state_dir=str(tmp_path / "run"))
    return gc_lib.gc(node, gc_lib.Sources(), options)


def removed_by_family(result) -> Dict[int, set]:
    found: Dict[int, set] = {}
    for chain in result.removed:
        found.setdefault(chain.family, set()).add(chain.chain)
    return found


@pytest.mark.parametrize(
    "script", [["in"], ["refused", "in"], ["refused", "refused", "in"]],
    ids=["first-try", "second-try", "last-try"],
)  # fmt: skip
def test_a_try_that_went_in_unsaid_is_reported_and_its_flows_flushed(tmp_path, flushed, script):
    tables = example_tables()
    expected = stale_chains(tables, tmp_path)
    # Each family's transaction meets the script (the smaller family goes first).
    backend = Dying(tables, script * len(expected))
    result = run_gc(backend, tmp_path)
    assert removed_by_family(result) == expected
    for family, chains in expected.items():
        assert not any(backend.read(family).has_chain(c) for c in chains)
    assert sorted(c for call in flushed for c in call) == sorted(
        c for chains in expected.values() for c in chains
    )
    went = [w for w in result.warnings if "it went in" in w]
    assert len(went) == len(expected) and all(KILLED in w for w in went)
    # The sightings of what went are forgotten, as for any removal.
    from portmapctl.ops.gc import state as gc_state

    seen, _ = gc_state.load(str(tmp_path / "run"), gc_state.namespace_key(None))
    assert not {k.chain for k in seen} & {c for chains in expected.values() for c in chains}


def test_a_try_that_died_before_going_in_is_planned_again(tmp_path, flushed):
    tables = example_tables()
    expected = stale_chains(tables, tmp_path)
    backend = Dying(tables, ["out"] * len(expected))
    result = run_gc(backend, tmp_path)
    assert removed_by_family(result) == expected
    assert not [w for w in result.warnings if "it went in" in w]
    assert sorted(c for call in flushed for c in call) == sorted(
        c for chains in expected.values() for c in chains
    )


def test_three_tries_that_died_before_going_in_fail_and_change_nothing(tmp_path, flushed):
    tables = example_tables()
    backend = Dying(dict(tables), ["out"] * 3)
    with pytest.raises(ApplyFailed, match="may have been applied"):
        run_gc(backend, tmp_path)
    assert {f: backend.read(f) for f in (4, 6)} == tables
    assert flushed == [[]]  # (the flush of what went: nothing)


# --- the nftables side -------------------------------------------------------------------


class DyingNft(MemoryNft):
    """nft stopped at its time limit: after (`went_in`) or before its commit."""

    def __init__(self, initial, went_in: bool) -> None:
        super().__init__(initial)
        self.went_in: Optional[bool] = went_in

    def apply(self, txn) -> None:
        if self.went_in is None:
            return super().apply(txn)
        went_in, self.went_in = self.went_in, None
        if went_in:
            super().apply(txn)
        raise NftApplyFailed(
            "nft -f did not finish within 120 s and was stopped", maybe_applied=True
        )


LIVE = ("bbbb2222", "cccc3333", "dddd4444", "ffff6666")  # v191-several's, but two


def run_nft_gc(fake: MemoryNft, tmp_path: Path):
    empty = "*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n"
    tables = {f: parse_save(empty, f) for f in (4, 6)}
    node = Node(NodeOptions(cache_dirs=("/nonexistent",)), MemoryBackend(tables), fake)
    options = gc_lib.GcOptions(min_age=0, state_dir=str(tmp_path / "run"))
    return gc_lib.gc(node, gc_lib.Sources(keep=LIVE), options)


def test_an_nft_transaction_that_went_in_unsaid_is_reported_and_its_flows_flushed(
    tmp_path, flushed
):
    from portmapctl.nftables.node import owners_in

    fake = DyingNft(nftcases.live("v191-several"), went_in=True)
    result = run_nft_gc(fake, tmp_path)
    assert owners_in(fake.read()) == set(LIVE)
    gone = {(c.family, c.container_id) for c in result.removed}
    assert {cid for _, cid in gone} == {"aaaa1111", "eeee5555"}
    assert len(flushed) == 1 and len(flushed[0]) == len(gone)
    assert any("none of the rules it deletes is left" in w for w in result.warnings)


def test_an_nft_transaction_stopped_before_its_commit_fails_and_changes_nothing(tmp_path, flushed):
    fake = DyingNft(nftcases.live("v191-several"), went_in=False)
    before = fake.read()
    with pytest.raises(ApplyFailed, match="did not finish within 120 s"):
        run_nft_gc(fake, tmp_path)
    assert fake.read() == before
    assert flushed == [[]]


class HungNft(MemoryNft):
    """`nft -f` stopped at its time limit as RealNft.apply stops it (ToolTimedOut, exit
    3, no retry), after its commit (or, `committed=False`, before it)."""

    def __init__(self, ruleset, committed: bool = True) -> None:
        super().__init__(ruleset)
        self.committed = committed

    def apply(self, txn) -> None:
        from portmapctl.errors import ToolTimedOut

        if self.committed:
            super().apply(txn)
        if not txn:
            return
        raise ToolTimedOut("nft -f did not finish within 120 s and was stopped; its"
                           " transaction may have gone in", maybe_applied=True)  # fmt: skip


@pytest.mark.parametrize("committed", [False, True], ids=["before-its-commit", "after-it"])
def test_an_nft_write_that_timed_out_still_records_and_flushes_the_iptables_removals(
    tmp_path, flushed, committed
):
    """A node with stale iptables chains and nftables rules: the iptables families'
    removals went in, then `nft -f` hung and was stopped (ToolTimedOut). That error left
    gc from apply_nft, past the state save and the UDP flush: the removed chains' flows
    kept the dead DNAT (the next gc found nothing to remove, so nothing flushed them)
    and their old sightings stayed on file. Now it ends the run as a timed-out iptables
    family does: exit 3 with its line, after what went in is flushed and recorded (the
    nftables rules' sightings forgotten: their write may have gone in). A write that
    went in before it hung (`after-it`: its rules gone by the read after it) is
    reported and flushed too (apply_nft's NftHungWentIn)."""
    from portmapctl.errors import ToolTimedOut
    from portmapctl.ops.gc import state as gc_state

    tables = example_tables()
    expected = stale_chains(tables, tmp_path)
    fake = HungNft(nftcases.live("v191-several"), committed)
    node = Node(NodeOptions(cache_dirs=(EXAMPLE_CACHE,)), MemoryBackend(dict(tables)), fake)
    options = gc_lib.GcOptions(min_age=3600, state_dir=str(tmp_path / "run"))
    gc_lib.gc(node, gc_lib.Sources(keep=LIVE), options)  # sighted, nothing removed
    seen, _ = gc_state.load(str(tmp_path / "run"), gc_state.namespace_key(None))
    assert {c for chains in expected.values() for c in chains} <= {k.chain for k in seen}
    with pytest.raises(ToolTimedOut, match="nft -f did not finish"):
        gc_lib.gc(node, gc_lib.Sources(keep=LIVE), dataclasses.replace(options, min_age=0))
    assert not any(node.backend.read(f).has_chain(c) for f, cs in expected.items() for c in cs)
    iptables = [c for call in flushed for c in call if not c.endswith("@nft")]
    assert sorted(iptables) == sorted(c for chains in expected.values() for c in chains)
    # (The nftables rules' flows only once their write went in.)
    assert bool([c for call in flushed for c in call if c.endswith("@nft")]) == committed
    seen, _ = gc_state.load(str(tmp_path / "run"), gc_state.namespace_key(None))
    assert not {k.nft for k in seen}  # (the rules' write may have gone in)
    assert not {k.chain for k in seen} & {c for chains in expected.values() for c in chains}


# --- what speaks for the nftables rules (no tool dies here) ------------------------------


def test_a_network_scoped_document_alone_removes_no_nftables_rule(tmp_path, flushed):
    """The plugin's nftables rules name no network: a valid-attachments document of one
    network (a network config holding the key) cannot say a rule is not live, so with
    only such documents gc removes none (and counts them kept); a bare list of the same
    IDs speaks for them by ID (docs/commands/gc.md)."""
    from portmapctl.nftables.node import owners_in
    from portmapctl.ops.gc.liveness import ValidAttachments

    live_ids = frozenset(LIVE)
    everyone = owners_in(nftcases.live("v191-several"))

    def run(sources, state):
        fake = MemoryNft(nftcases.live("v191-several"))
        empty = "*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n"
        tables = {f: parse_save(empty, f) for f in (4, 6)}
        node = Node(NodeOptions(cache_dirs=("/nonexistent",)), MemoryBackend(tables), fake)
        options = gc_lib.GcOptions(min_age=0, state_dir=str(tmp_path / state))
        return gc_lib.gc(node, sources, options), fake

    # Every container (per family) kept, as a --keep of them all keeps them.
    every_pair = run(gc_lib.Sources(keep=tuple(everyone)), "all")[0].kept
    # (A --keep beside a scoped document widens its scope no more than for iptables.)
    cases = (("podman", (), set()), ("podman", ("x",), set()), (None, (), {"aaaa1111", "eeee5555"}))
    for network, keep, gone in cases:
        document = ValidAttachments(network, live_ids, "doc.json")
        result, fake = run(gc_lib.Sources(documents=(document,), keep=keep), f"{network}{keep}")
        assert {c.container_id for c in result.removed} == gone
        assert owners_in(fake.read()) == everyone - gone
        if network is not None:
            # Kept, and counted so: `0 kept` said none was (docs/commands/gc.md).
            assert result.kept == every_pair > 0, (keep, result.kept)


# --- SIGKILL between a removal and the state save ----------------------------------------


def test_each_transaction_goes_in_with_no_sighting_of_what_it_removes_on_file(
    tmp_path, flushed, monkeypatch
):
    """gc saved its state only after every removal: a SIGKILL in between (the OOM
    killer) left the removed chains' old sightings on file, and the same container
    started again under its ID, seen by the next gc during its ADD, had its chain pass
    --min-age at once (tests/kernel/test_sigterm.py kills gc for real). Now whenever a
    transaction goes in (each iptables family, the nftables one), the file already
    holds none of the sightings of what it removes; the sightings are dropped before
    the first removal in few writes, not one per chain."""
    from portmapctl.host import files
    from portmapctl.ops.gc import state as gc_state

    run_dir = str(tmp_path / "run")
    namespace = gc_state.namespace_key(None)
    on_file_at_apply: List[set] = []

    def sightings() -> set:
        return set(gc_state.load(run_dir, namespace)[0])

    class Watching(MemoryBackend):
        def apply(self, txn: Transaction) -> None:
            on_file_at_apply.append(sightings())
            super().apply(txn)

    class WatchingNft(MemoryNft):
        def apply(self, txn) -> None:
            on_file_at_apply.append(sightings())
            super().apply(txn)

    tables = example_tables()
    fake = WatchingNft(nftcases.live("v191-several"))
    node = Node(NodeOptions(cache_dirs=(EXAMPLE_CACHE,)), Watching(dict(tables)), fake)
    options = gc_lib.GcOptions(min_age=3600, state_dir=run_dir)
    gc_lib.gc(node, gc_lib.Sources(keep=LIVE), options)  # sighted, nothing removed
    sighted = sightings()
    assert on_file_at_apply == [] and sighted

    writes: List[str] = []
    real_write = files.write_atomically
    monkeypatch.setattr(
        files, "write_atomically", lambda *a, **k: (writes.append(a[0]), real_write(*a, **k))[1]
    )
    monkeypatch.setattr(gc_state, "write_atomically", files.write_atomically)
    result = gc_lib.gc(node, gc_lib.Sources(keep=LIVE), dataclasses.replace(options, min_age=0))
    removed = {c.key for c in result.removed}
    families = {k.family for k in removed if not k.nft}
    assert families and any(k.nft for k in removed) and removed <= sighted
    assert len(on_file_at_apply) == len(families) + 1  # (and the nftables transaction)
    for on_file in on_file_at_apply:
        assert not on_file & removed
    assert 0 < len(writes) <= 3  # (the family ahead's, the others', the run's save)


def test_a_removal_refused_whole_keeps_its_sightings_so_the_next_run_fails_too(
    tmp_path, flushed, monkeypatch
):
    """The sightings of what a transaction removes leave the file before it goes in (a
    SIGKILL after it must not leave them); but a transaction iptables refused (nothing
    changed) removed nothing, and those sightings were never written back: every chain
    of the family waited --min-age afresh, so a node whose iptables refuses gc's removal
    (or one stale chain it cannot delete, tests/kernel/test_legacy_nodes.py) failed
    (exit 1) only one run in each --min-age: the runs between said exit 0, "pending",
    and a cron job's alarm flapped. Nothing went in: the sightings stay as they were."""
    from portmapctl.ops.gc import state as gc_state

    class Refusing(MemoryBackend):
        def apply(self, txn: Transaction) -> None:
            raise ApplyFailed("iptables-restore refused the transaction, nothing changed: x")

    run_dir = str(tmp_path / "run")
    namespace = gc_state.namespace_key(None)
    node = Node(NodeOptions(cache_dirs=(EXAMPLE_CACHE,)), Refusing(example_tables()))
    options = gc_lib.GcOptions(min_age=600, flush_udp=False, state_dir=run_dir)
    gc_lib.gc(node, gc_lib.Sources(), options)  # sighted, nothing removed yet
    sighted = gc_state.load(run_dir, namespace)[0]
    assert sighted
    later = gc_state.clock() + 3600
    monkeypatch.setattr(gc_state, "clock", lambda: later)
    for _ in range(2):  # each run past --min-age is refused, and says so
        with pytest.raises(ApplyFailed, match="refused"):
            gc_lib.gc(node, gc_lib.Sources(), options)
        assert gc_state.load(run_dir, namespace)[0] == sighted


def test_the_nftables_sightings_stay_when_an_iptables_refusal_stops_the_run(
    tmp_path, flushed, monkeypatch
):
    """An iptables family refused whole ends the run before the nftables rules are
    tried: nothing of them went, yet their sightings (those gc had forgotten before the
    first removal, and the pending ones) were left out of the save, so every dead
    container's rules waited --min-age afresh after each such run."""
    from portmapctl.ops.gc import state as gc_state

    class Refusing(MemoryBackend):
        def apply(self, txn: Transaction) -> None:
            raise ApplyFailed("iptables-restore refused the transaction, nothing changed: x")

    run_dir = str(tmp_path / "run")
    namespace = gc_state.namespace_key(None)
    fake = MemoryNft(nftcases.live("v191-several"))
    node = Node(NodeOptions(cache_dirs=(EXAMPLE_CACHE,)), Refusing(example_tables()), fake)
    options = gc_lib.GcOptions(min_age=600, flush_udp=False, state_dir=run_dir)
    gc_lib.gc(node, gc_lib.Sources(keep=LIVE), options)  # sighted, nothing removed yet
    sighted = gc_state.load(run_dir, namespace)[0]
    assert {k for k in sighted if k.nft}
    later = gc_state.clock() + 3600
    monkeypatch.setattr(gc_state, "clock", lambda: later)
    for _ in range(2):
        with pytest.raises(ApplyFailed, match="refused"):
            gc_lib.gc(node, gc_lib.Sources(keep=LIVE), options)
        assert gc_state.load(run_dir, namespace)[0] == sighted


def test_the_nftables_sightings_stay_when_its_read_hangs_before_any_write(
    tmp_path, flushed, monkeypatch
):
    """`nft list` stopped at its time limit as apply_nft reads before its write
    (ToolTimedOut without maybe_applied: no `nft -f` ran, nothing of it went in). The
    run fails with it (exit 3), but its nftables sightings were left out of the save,
    as a refused write's were before e3606f4: every dead container's rules waited
    --min-age afresh, and such a node failed one run in each --min-age, exit 0 between.
    An iptables family whose tool hung that way keeps its sightings; so do they now."""
    from portmapctl.errors import ToolTimedOut
    from portmapctl.ops.gc import nft as gc_nft
    from portmapctl.ops.gc import state as gc_state

    class HangingRead(MemoryNft):
        hang = False

        def read(self, families=(4, 6)):
            if self.hang:
                raise ToolTimedOut("nft did not answer within 120 s and was stopped")
            return super().read(families)

    applying = gc_nft.apply_nft

    def hang_then_apply(*args, **kwargs):
        fake.hang = True  # (the plan is made: the read before the write hangs)
        return applying(*args, **kwargs)

    run_dir = str(tmp_path / "run")
    namespace = gc_state.namespace_key(None)
    empty = "*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n"
    tables = {f: parse_save(empty, f) for f in (4, 6)}
    fake = HangingRead(nftcases.live("v191-several"))
    node = Node(NodeOptions(cache_dirs=("/nonexistent",)), MemoryBackend(tables), fake)
    options = gc_lib.GcOptions(min_age=600, flush_udp=False, state_dir=run_dir)
    gc_lib.gc(node, gc_lib.Sources(keep=LIVE), options)  # sighted, nothing removed yet
    sighted = gc_state.load(run_dir, namespace)[0]
    assert {k for k in sighted if k.nft}
    before = fake.read()
    later = gc_state.clock() + 3600
    monkeypatch.setattr(gc_state, "clock", lambda: later)
    monkeypatch.setattr(gc_nft, "apply_nft", hang_then_apply)
    with pytest.raises(ToolTimedOut, match="did not answer"):
        gc_lib.gc(node, gc_lib.Sources(keep=LIVE), options)
    fake.hang = False
    assert fake.read() == before
    assert gc_state.load(run_dir, namespace)[0] == sighted


def test_a_hung_write_that_went_in_says_so_and_not_run_again_to_see(monkeypatch):
    """A write stopped at its time limit says "its transaction may have gone in (whole,
    never half): run again to see"; gc then reads again, and when it went in its line
    (HungWentIn, NftHungWentIn) said both: "... may have gone in ...: run again to see;
    read again, none of the 2 chains it removes is left: it went in", advice to run
    again for what the line then settles (the run after finds nothing to remove). The
    errors as the real iptables-restore and nft timeouts make them."""
    import subprocess
    import types

    from portmapctl.errors import ToolTimedOut
    from portmapctl.iptables.access import restore
    from portmapctl.nftables.access import nft as nft_access
    from portmapctl.ops.gc import nft as gc_nft
    from portmapctl.ops.gc.converge import HungWentIn

    def hung(*args, **kwargs):
        raise subprocess.TimeoutExpired("nft", 120)

    monkeypatch.setattr(nft_access.RealNft, "_ready", lambda self: None)
    monkeypatch.setattr(nft_access.RealNft, "binary", lambda self: "nft")
    monkeypatch.setattr(nft_access.subprocess, "run", hung)
    with pytest.raises(ToolTimedOut) as nft_hung:
        nft_access.RealNft().apply(_OneOp())
    plan = types.SimpleNamespace(removed=("a", "b"))
    for line in (
        str(HungWentIn(restore._timed_out("iptables-legacy-restore", writing=True), plan)),
        str(gc_nft.NftHungWentIn(nft_hung.value, plan)),
    ):
        assert line.count("went in") == 1 and line.endswith("it went in"), line
        assert "run again to see" not in line and "may have gone in" not in line, line
        assert "did not finish within" in line and "was stopped" in line, line


class _OneOp:
    """A transaction that is not empty, rendered as one line (RealNft.apply writes it)."""

    def __bool__(self) -> bool:
        return True

    def render(self) -> str:
        return "delete rule ip cni_hostport hostports handle 7\n"


@pytest.mark.parametrize(
    "said",
    [
        "/usr/sbin/iptables-legacy-restore refused the transaction, nothing changed:"
        " iptables-restore: line 5 failed",
        "/usr/sbin/iptables-legacy-restore gave up waiting 1 s for the xtables lock (another"
        " program holds it), nothing changed: Can't lock /run/xtables.lock: Resource"
        " temporarily unavailable",
        "another program held the xtables lock (/run/xtables.lock) for 5 s: nothing changed",
    ],
    ids=["refused", "busy-lock", "iptc-busy-lock"],
)
def test_a_removal_given_up_on_says_nothing_changed_once(said):
    """A write refused at every try ended in "gave up after 3 tries, nothing changed:
    /usr/sbin/iptables-legacy-restore refused the transaction, nothing changed: ...",
    the words twice in one line: gc's line for a chain iptables refused tried alone
    (cli/gc._refused) and for a halving a busy lock stopped (Settled.stopped) carry it.
    The tools' own words, as restore.py and iptc say them."""

    class Refusing(MemoryBackend):
        def apply(self, txn: Transaction) -> None:
            raise ApplyFailed(said, busy="lock" in said)

    def plan(table: NatTable) -> Transaction:
        txn = Transaction(4)
        txn.new_chain("CNI-DN-x")
        return txn

    node = Node(NodeOptions(), Refusing(example_tables()))
    with pytest.raises(ApplyFailed) as given_up:
        node.converge(4, plan)
    line = str(given_up.value)
    assert line.startswith("gave up after 3 tries, nothing changed: "), line
    assert line.count("nothing changed") == 1, line
    assert said.split(",")[0].split(":")[0] in line, line  # (the tool's words kept)


def test_a_hung_write_that_did_not_go_in_says_so_and_not_that_it_may_have(tmp_path, flushed):
    """A write stopped at its time limit before its commit: gc reads again (HungWentIn's
    read), finds what it removes all still there, and so knows it did not go in; its
    line still said "its transaction may have gone in (whole, never half): run again to
    see" (and, in a halving, beside "not removed: <the same chains>"). Now it says what
    the read found. iptables (restore's timeout error) and nftables (RealNft.apply's)."""
    from portmapctl.errors import ToolTimedOut
    from portmapctl.iptables.access import restore

    class HungBefore(MemoryBackend):
        def apply(self, txn: Transaction) -> None:
            raise restore._timed_out("iptables-legacy-restore", writing=True)

    class HungNftBefore(MemoryNft):
        def apply(self, txn) -> None:
            if txn:
                raise ToolTimedOut("nft -f did not finish within 120 s and was stopped; its"
                                   " transaction may have gone in (whole, never half): run"
                                   " again to see", maybe_applied=True,
                                   stopped="nft -f did not finish within 120 s and was stopped")  # fmt: skip
            super().apply(txn)

    lines = []
    with pytest.raises(ToolTimedOut) as hung:
        run_nft_gc(HungNftBefore(nftcases.live("v191-several")), tmp_path)
    lines.append(str(hung.value))
    for line in lines:
        assert "did not finish within" in line and "it did not go in" in line, line
        assert "may have gone in" not in line and "went in" not in line, line
    # The example node's stale iptables chains have their entry rules last: the same
    # as the plugin's ADD of them again after a commit would leave, so the read cannot
    # say it did not go in (test_a_hung_write_whose_chain_is_there_again_...).
    with pytest.raises(ToolTimedOut) as hung:
        run_gc(HungBefore(example_tables()), tmp_path)
    line = str(hung.value)
    assert "did not finish within" in line and "made again meanwhile" in line, line
    assert "it did not go in" not in line and "run again to see" not in line, line


def test_a_halving_stopped_names_each_chain_it_left_once():
    """A halving whose read after its groups hung (tests/kernel/test_legacy_nodes.py's
    after-the-groups) left gone1, refused tried alone: its line named it twice, "not
    removed: CNI-DN-e48e... (container gone1); iptables refused CNI-DN-e48e...
    (container gone1) tried alone". Each chain left is named once: the untried as not
    removed, a refused one with its refusal."""
    import types

    from portmapctl.errors import ToolTimedOut
    from portmapctl.ops.gc.converge import Settled
    from portmapctl.ops.gc.result import GcChain, Refused

    refused = GcChain("CNI-DN-e48e31feea1c58a50531a", 4, "dnat", "mynet", "gone1", (), 0.0)
    untried = GcChain("CNI-DN-ce1fc0344378fc3dcfb34", 4, "dnat", "mynet", "gone3", (), 0.0)
    plan = types.SimpleNamespace(removed=("a", "b"))
    stop = ToolTimedOut("iptables-legacy-save did not answer within 3 s and was stopped")
    for left in ((), (untried,)):
        line = str(Settled(plan, [Refused(refused, "line 5 failed")], stop, left).stopped())
        assert line.count(refused.chain) == 1, line
        assert f"iptables refused {refused.chain} (container gone1) tried alone" in line, line
        assert ("not removed" in line) == bool(left) and line.count(untried.chain) == len(left)
        assert "2 removed" in line, line


def test_a_halving_stopped_with_thousands_left_counts_them_and_names_a_few():
    """A halving stopped at its first group (a hung restore) leaves every chain of the
    family untried: with 5,002 stale chains (a real node, legacy, tests/kernel's
    halving wrapper hanging the first group) its one error line named each, 535,407
    bytes. The line counts them and names the first few, then how many more."""
    import types

    from portmapctl.errors import ToolTimedOut
    from portmapctl.ops.gc.converge import Settled
    from portmapctl.ops.gc.result import GcChain

    def chain(i: int) -> GcChain:
        return GcChain(f"CNI-DN-{i:021x}", 4, "dnat", "mynet", f"{i:08x}" + "b" * 56, (), 0.0)

    stop = ToolTimedOut("iptables-legacy-restore did not finish within 3 s and was stopped")
    plan = types.SimpleNamespace(removed=())
    for count in (1, 3, 4, 5000):
        left = tuple(chain(i) for i in range(count))
        line = str(Settled(plan, [], stop, left).stopped())
        named = [c.chain for c in left if c.chain in line]
        if count <= 3:
            assert named == [c.chain for c in left], line
            assert "more" not in line, line
        else:
            assert named == [c.chain for c in left[:3]], line
            assert f"not removed: {count} chains, " in line, line
            assert f" and {count - 3} more" in line, line
            assert len(line) < 600, len(line)


def test_the_line_of_many_refused_chains_counts_them_and_names_a_few():
    """gc's error line for chains iptables refused, each tried alone, named every one
    (5 on a real node, legacy, 16 stale chains of which a wrapper refused 5: "iptables
    refused the removal of 5 chains: CNI-DN-03eb… (IPv4, container c15 on mynet), ...
    (5 named)"); the table above and JSON `refused` list them all. The line names
    three, then how many more."""
    from portmapctl.cli.gc import _refused
    from portmapctl.ops.gc.result import GcChain, GcResult, Refused

    def refused(i: int) -> Refused:
        chain = GcChain(f"CNI-DN-{i:021x}", 4, "dnat", "mynet", f"c{i:02d}", (), 0.0)
        return Refused(chain, "iptables-restore: line 2 failed")

    for count in (1, 3, 5, 500):
        result = GcResult(False, (), (), 0, 0, refused=tuple(refused(i) for i in range(count)))
        with pytest.raises(ApplyFailed) as raised:
            _refused(result)
        line = str(raised.value)
        named = [r.chain.chain for r in result.refused if r.chain.chain in line]
        assert named == [r.chain.chain for r in result.refused[:3]], line
        assert (f" and {count - 3} more" in line) == (count > 3), line
        assert line.endswith(": iptables-restore: line 2 failed") and len(line) < 500, line


def test_a_family_failing_after_another_counts_one_chain_as_one():
    """The family applied ahead or before a failing one is counted in the failure's
    line: with one chain it said "(IPv6 was applied ahead of it: 1 chains removed)"
    (tests/kernel/test_legacy_nodes.py's dual-stack halving, its stderr printed)."""
    import types

    from portmapctl.errors import ToolTimedOut
    from portmapctl.ops.gc.apply import _family_failure

    def plan(family: int, removed: int):
        return types.SimpleNamespace(family=family, removed=("x",) * removed)

    err = ToolTimedOut("iptables-legacy-save did not answer within 3 s and was stopped")
    for planned_order, failing in (((6, 4), 4), ((4, 6), 4)):  # (earlier, ahead)
        planned = types.SimpleNamespace(families=[plan(f, 0) for f in planned_order])
        other = 10 - failing
        for count, said in ((1, "1 chain removed"), (2, "2 chains removed")):
            line = str(_family_failure(failing, err, [plan(other, count)], planned))
            assert f"{said})" in line, line


def test_a_hung_write_of_one_chain_that_went_in_reads_as_one():
    """HungWentIn's line for a write removing one chain said "read again, none of the 1
    chain it removes is left: it went in" (tests/kernel/test_legacy_nodes.py's halving,
    hung after its commit)."""
    import types

    from portmapctl.iptables.access import restore
    from portmapctl.ops.gc.converge import HungWentIn

    hung = restore._timed_out("iptables-legacy-restore", writing=True)
    one = str(HungWentIn(hung, types.SimpleNamespace(removed=("a",))))
    assert "none of the 1" not in one and "the chain it removes is gone: it went in" in one, one
    two = str(HungWentIn(hung, types.SimpleNamespace(removed=("a", "b"))))
    assert "none of the 2 chains it removes is left: it went in" in two, two


# gone1 (stale) and other1 (kept), as Debian's plugin leaves them (legacy iptables-save).
_GONE1 = "CNI-DN-7ee34ac8ac11d5eac97a5"
_GONE1_CHAIN = f"""\
-A {_GONE1} -s 10.88.0.0/16 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK
-A {_GONE1} -s 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK
-A {_GONE1} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.88.0.5:80
"""
_GONE1_ENTRY = (
    '-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \\"net1\\" id: \\"gone1\\""'
    f" -m multiport --dports 8080 -j {_GONE1}\n"
)
_OTHER1_ENTRY = (
    '-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \\"net1\\" id: \\"other1\\""'
    " -m multiport --dports 8081 -j CNI-DN-ef782da6b6332bdc3882c\n"
)


def _two_containers(entries: str) -> NatTable:
    """The nat table with gone1 and other1, their entry rules as `entries` orders them."""
    return parse_save(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
        ":CNI-DN-7ee34ac8ac11d5eac97a5 - [0:0]\n:CNI-DN-ef782da6b6332bdc3882c - [0:0]\n"
        ":CNI-HOSTPORT-DNAT - [0:0]\n:CNI-HOSTPORT-SETMARK - [0:0]\n"
        "-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT\n"
        '-A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark"'
        " -j MARK --set-xmark 0x2000/0x2000\n"
        + _GONE1_CHAIN
        + "-A CNI-DN-ef782da6b6332bdc3882c -p tcp -m tcp --dport 8081"
        " -j DNAT --to-destination 10.88.0.6:80\n" + entries + "COMMIT\n",
        4,
    )


@pytest.mark.parametrize(
    "case, said",
    [
        # Committed, then hung; meanwhile the plugin added gone1 again under its ID (the
        # same chain, its entry rule appended): gc's read finds it, made again.
        ("went-in-then-added-again", "may have gone in"),
        # Hung before its commit, gone1's entry rule still ahead of other1's, as read:
        # a chain made again would have its entry appended behind it.
        ("hung-before-in-place", "it did not go in"),
        # Hung before its commit, gone1's entry rule the last, as read: the same as an
        # ADD of gone1 again after the commit would leave (nothing tells which).
        ("hung-before-last", "may have gone in"),
    ],
)
def test_a_hung_write_whose_chain_is_there_again_never_says_it_did_not_go_in(
    tmp_path, flushed, case, said
):
    """h239: gc's iptables-legacy-restore committed, then hung (stopped at its time
    limit), and meanwhile the plugin added the same container again (its chain has the
    same name, from network and ID). gc read again, found the chain and said "read
    again, what it removes is still there: it did not go in": false, it had gone in.
    Now "did not go in" is said only where the read proves it (the chain as read, its
    entry rule still ahead of a rule that followed it), else that it may have."""
    from portmapctl.errors import ToolTimedOut
    from portmapctl.iptables.access import restore

    entries = (
        _OTHER1_ENTRY + _GONE1_ENTRY if case == "hung-before-last" else _GONE1_ENTRY + _OTHER1_ENTRY
    )

    class Hung(MemoryBackend):
        def apply(self, txn: Transaction) -> None:
            if case == "went-in-then-added-again":
                super().apply(txn)
                assert not self.tables[4].has_chain(_GONE1)
                self.tables[4] = _two_containers(_OTHER1_ENTRY + _GONE1_ENTRY)  # the ADD
            raise restore._timed_out("iptables-legacy-restore", writing=True)

    backend = Hung({4: _two_containers(entries)})
    node = Node(
        NodeOptions(cache_dirs=(str(tmp_path / "none"),), backend="iptables", families=(4,)),
        backend,
    )
    options = gc_lib.GcOptions(min_age=0, state_dir=str(tmp_path / "run"))
    with pytest.raises(ToolTimedOut) as hung:
        gc_lib.gc(node, gc_lib.Sources(keep=("other1",)), options)
    line = str(hung.value)
    assert "did not finish within" in line and said in line, line
    assert ("it did not go in" in line) == (said == "it did not go in"), line
    assert "run again to see" not in line, line
