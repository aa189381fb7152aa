"""`check --repair` reads the node once: the check after it is of the tables as the
applied transactions left them, in memory (ops/check/read_once.py `ReadOnce`), and a
transaction iptables refuses (the plugin changed the table meanwhile) is re-planned
from a fresh read. Through the memory backend, no root (the kernel side is
tests/kernel/test_check.py and test_field_repair.py)."""

from __future__ import annotations

import importlib
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional

import pytest

from portmapctl.cni.cache import read_cache
from portmapctl.errors import ApplyFailed
from portmapctl.iptables.access.memory import MemoryBackend
from portmapctl.iptables.chains import TOPLEVEL_DNAT, chain_name, dnat_chain_name, wanted_chains
from portmapctl.iptables.planner import plan_setup
from portmapctl.iptables.ruleset import NatTable, parse_save, rule_target
from portmapctl.iptables.transaction import Transaction
from portmapctl.nftables.access.memory import MemoryNft
from portmapctl.nftables.ruleset import Ruleset
from portmapctl.ops import check as check_lib
from portmapctl.ops.node import Node, NodeOptions

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CACHE = str(ROOT / "examples" / "cni-cache")
EMPTY_NAT = (
    "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
    ":POSTROUTING ACCEPT [0:0]\nCOMMIT\n"
)


class Recording:
    """The memory backend, counting reads and applies; `before_apply` runs before
    each apply (the plugin changing the table between our read and our write)."""

    name = "memory"
    writable = True

    def __init__(self, tables: Dict[int, NatTable]) -> None:
        self.memory = MemoryBackend(tables)
        self.reads: List[int] = []
        self.applies: List[int] = []
        self.refused = 0
        self.before_apply: Optional[Callable[[Transaction], None]] = None

    def read(self, family: int) -> NatTable:
        self.reads.append(family)
        return self.memory.read(family)

    def apply(self, txn: Transaction) -> None:
        if self.before_apply is not None:
            self.before_apply(txn)
        self.applies.append(txn.family)
        try:
            self.memory.apply(txn)
        except ApplyFailed:
            self.refused += 1
            raise


@pytest.fixture(autouse=True)
def no_side_effects(monkeypatch):
    """No route_localnet or conntrack on the machine running the tests: record who."""
    made: List[str] = []
    # The node's repair and one mapping's (the package's `repair` is the function: the
    # modules by import_module).
    for module in ("repair", "repair_one"):
        monkeypatch.setattr(
            importlib.import_module(f"portmapctl.ops.check.{module}"), "after_setup_many",
            lambda changed, flush, **_: made.extend(c.container_id for c, _ in changed) or [],
        )  # fmt: skip
    return made


def example_tables() -> Dict[int, NatTable]:
    return {f: parse_save((ROOT / "examples" / f"node.v{f}.save").read_text(), f) for f in (4, 6)}


def flushed_tables() -> Dict[int, NatTable]:
    return {f: parse_save(EMPTY_NAT, f) for f in (4, 6)}


def node_on(backend: Recording) -> Node:
    # --backend iptables: the tests are about iptables reads (no nft on a laptop).
    return Node(NodeOptions(cache_dirs=(EXAMPLE_CACHE,), backend="iptables"), backend)


def cached_configs():
    return [a.mapping for a in read_cache(EXAMPLE_CACHE) if a.mapping is not None]


@pytest.mark.parametrize("tables", [flushed_tables, example_tables], ids=["flushed", "example"])
def test_repair_reads_each_family_once_and_checks_the_planned_tables(tables, no_side_effects):
    backend = Recording(tables())
    result = check_lib.repair(node_on(backend), flush_udp=False)
    assert result.repaired and result.fixed
    assert sorted(backend.reads) == [4, 6]  # the check before; nothing read after applying
    # What the check after saw in memory is what a fresh check of the node finds.
    fresh = check_lib.check_node(node_on(Recording(backend.memory.tables)))
    assert result.problems == fresh.problems
    assert result.mappings_checked == fresh.mappings_checked
    assert result.chains_seen == fresh.chains_seen
    assert {p.kind for p in result.problems}.isdisjoint({"missing-chain", "missing-toplevel"})
    assert no_side_effects


def test_a_flushed_node_is_repaired_whole_and_reported_healthy_from_memory():
    backend = Recording(flushed_tables())
    result = check_lib.repair(node_on(backend), flush_udp=False)
    for config in cached_configs():
        for family in config.families:
            assert backend.memory.tables[family].has_chain(dnat_chain_name(config))
    # The example cache has a zombie (never repaired, still reported) and nothing else.
    fresh = check_lib.check_node(node_on(Recording(backend.memory.tables)))
    assert [p.kind for p in result.problems] == [p.kind for p in fresh.problems]
    assert len(result.fixed) > len(result.problems)


def test_a_refused_restore_is_re_planned_from_a_fresh_read():
    """The plugin's ADD of one cached container lands between our read and our write:
    our `-N` of its chain is refused (nothing changes), the family is read again and
    the plan made without it goes in; the check after stays in memory."""
    backend = Recording(flushed_tables())
    config = next(c for c in cached_configs() if 4 in c.families)

    def plugin_adds_first(txn: Transaction) -> None:
        if txn.family == 4 and backend.before_apply is not None:
            backend.before_apply = None  # the plugin runs once
            live = backend.memory.read(4)
            backend.memory.apply(plan_setup(wanted_chains(config, 4), live))

    backend.before_apply = plugin_adds_first
    result = check_lib.repair(node_on(backend), flush_udp=False)
    assert backend.refused == 1
    assert sorted(backend.reads) == [4, 4, 6]  # once each, and IPv4 again after the refusal
    assert backend.applies.count(4) == 2
    fresh = check_lib.check_node(node_on(Recording(backend.memory.tables)))
    assert result.problems == fresh.problems
    # The plugin's chain is kept and its entry rules are not made twice.
    name = dnat_chain_name(config)
    entries = [r for r in backend.memory.tables[4].rules(TOPLEVEL_DNAT) if rule_target(r) == name]
    assert entries and len(entries) == len(set(entries))


def test_repair_of_one_mapping_reads_its_families_once():
    backend = Recording(flushed_tables())
    config = next(c for c in cached_configs() if 4 in c.families)
    result = check_lib.repair(node_on(backend), config, flush_udp=False)
    assert result.repaired and not result.problems and result.fixed
    assert sorted(backend.reads) == sorted(config.families)
    again = check_lib.check_mapping(node_on(Recording(backend.memory.tables)), config)
    assert again.problems == () and again.mappings_checked == result.mappings_checked


def test_a_second_repair_changes_nothing():
    backend = Recording(flushed_tables())
    check_lib.repair(node_on(backend), flush_udp=False)
    applied = len(backend.applies)
    second = check_lib.repair(node_on(backend), flush_udp=False)
    assert not second.repaired and not second.fixed
    assert len(backend.applies) == applied


class CountingNft(MemoryNft):
    """The nftables fake, counting reads."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def read(self, families: Iterable[int] = (4, 6)) -> Ruleset:
        self.reads += 1
        return super().read(families)


def test_nftables_is_read_once_when_nothing_is_written_there():
    """With nftables looked at (--backend auto) and no nft-backed container, the check
    before, the backend split and the check after share one read of nftables."""
    backend, nft = Recording(flushed_tables()), CountingNft()
    node = Node(NodeOptions(cache_dirs=(EXAMPLE_CACHE,)), backend, nft)
    result = check_lib.repair(node, flush_udp=False)
    assert result.repaired and "nft" not in result.transactions
    assert nft.reads == 1
    assert sorted(backend.reads) == [4, 6]


def test_a_container_restarted_before_the_write_is_planned_as_the_cache_holds_it_now(tmp_path):
    """The plugin restarts a container whose chain the repair rewrites (DEL and ADD: the
    same chain, a new address, a new cache entry) between the repair's plan and its
    write: the rewrite is refused (the rules read are gone), and the re-plan reads the
    cache entry again: the plugin's rules stay, the old address is not written back,
    and the check after judges the container as it is now (the kernel side:
    tests/kernel/test_repair_race.py)."""
    import json
    import shutil

    cache = tmp_path / "cni-cache"
    shutil.copytree(EXAMPLE_CACHE, cache)
    entry = cache / "results" / "podman-3f2a9c1e5b7d4a60web-eth0"
    options = NodeOptions(cache_dirs=(str(cache),), backend="iptables")
    backend = Recording(flushed_tables())
    check_lib.repair(Node(options, backend), flush_udp=False)
    (old,) = [a.mapping for a in read_cache(str(cache)) if a.path == str(entry)]
    name = dnat_chain_name(old)
    backend.memory.apply(_appended(name, ("-p", "udp", "--dport", "9", "-j", "RETURN")))

    def restarted(txn: Transaction) -> None:
        if txn.family == 4 and backend.before_apply is not None:
            backend.before_apply = None
            document = json.loads(entry.read_text())
            document["result"]["ips"][0]["address"] = "10.88.0.55/16"
            entry.write_text(json.dumps(document))
            (new,) = [a.mapping for a in read_cache(str(cache)) if a.path == str(entry)]
            backend.memory.apply(plan_setup(wanted_chains(new, 4), backend.memory.read(4)))

    backend.before_apply = restarted
    backend.reads.clear()
    result = check_lib.repair(Node(options, backend), flush_udp=False)
    assert backend.refused == 1
    rules = [" ".join(r) for r in backend.memory.tables[4].rules(name)]
    assert any("10.88.0.55" in r for r in rules)
    assert not any("10.88.0.5:" in r or "10.88.0.5/" in r for r in rules)
    assert [p for p in result.problems if p.chain == name] == []


def _appended(chain: str, rule: tuple) -> Transaction:
    txn = Transaction(4)
    txn.append(chain, rule)
    return txn


class RefusingIpset(Recording):
    """iptables refusing a transaction that names the ipset `pmt-gone` (deleted: its
    `-m set` cannot be made), the whole transaction with it, as iptables-restore does
    (the kernel side: tests/kernel/test_field_check.py)."""

    def apply(self, txn: Transaction) -> None:
        if "--match-set pmt-gone" in txn.render():
            self.applies.append(txn.family)
            self.refused += 1
            raise ApplyFailed("iptables-restore: line 3 failed")
        super().apply(txn)


def _cached_with_refused(tmp_path: Path, count: int, bad: Iterable[str]) -> NodeOptions:
    """`count` cached containers on mynet (ctr000...), those in `bad` with conditions
    naming the ipset pmt-gone; a node of IPv4 only, read through the memory backend."""
    import realplugin as rp

    cache = tmp_path / "cni"
    for i in range(count):
        cid = f"ctr{i:03d}"
        ports = [{"hostPort": 8000 + i, "containerPort": 80, "protocol": "tcp"}]
        conf = rp.plugin_conf("mynet", [f"10.88.0.{i + 2}/16"], ports)
        if cid in bad:
            conf["conditionsV4"] = ["-m", "set", "--match-set", "pmt-gone", "dst"]
        rp.write_cni_cache(cache, "mynet", cid, "eth0", conf, ports, [f"10.88.0.{i + 2}/16"])
    return NodeOptions(cache_dirs=(str(cache),), backend="iptables", families=(4,))


def _all_but(backend: Recording, count: int, bad: Iterable[str]) -> None:
    table = backend.memory.tables[4]
    for i in range(count):
        cid = f"ctr{i:03d}"
        assert table.has_chain(chain_name("mynet", cid)) == (cid not in bad), cid


def test_refused_containers_are_found_by_halves_and_the_others_repaired(tmp_path):
    """A flushed node of 64 cached containers, two of them with conditions naming an
    ipset that is gone: iptables refuses every transaction holding either. The repair
    names those two and makes the other 62 in a number of transactions that grows
    with log2(64), not one per container (each a restore and a plan of the whole table:
    minutes on a node of 5,000). A refusal on a table a fresh read shows unchanged is
    not tried again (ApplyFailed.final)."""
    import math

    bad = {"ctr017", "ctr050"}
    backend = RefusingIpset(flushed_tables())
    result = check_lib.repair(
        Node(_cached_with_refused(tmp_path, 64, bad), backend), flush_udp=False
    )
    # (family, network, container, chain, why)
    assert sorted(u[2] for u in result.unrepaired) == sorted(bad)
    assert all("iptables refused it" in u[4] for u in result.unrepaired)
    _all_but(backend, 64, bad)
    # The whole, the shared chains, then per level of halving and refused container
    # at most one refused half and one applied (one that went in with a refused
    # other half is not tried whole). Before: 72 (one per container, three tries each
    # refused one).
    levels = math.ceil(math.log2(64))
    assert len(backend.applies) <= 2 + 2 * len(bad) * levels, len(backend.applies)


def test_every_container_refused_costs_no_more_than_one_try_each(tmp_path):
    """Conditions are the network's: an ipset gone refuses every container on it. The
    halving then tries each set once (at most 2N), where the one-by-one fallback
    tried each container three times (3N), each a plan of the whole table."""
    bad = {f"ctr{i:03d}" for i in range(16)}
    backend = RefusingIpset(flushed_tables())
    result = check_lib.repair(
        Node(_cached_with_refused(tmp_path, 16, bad), backend), flush_udp=False
    )
    assert sorted(u[2] for u in result.unrepaired) == sorted(bad)
    assert len(backend.applies) <= 2 * 16, len(backend.applies)


class LockTaken(RefusingIpset):
    """RefusingIpset whose xtables lock another program takes after `free` applies:
    every later apply waits for it and gives up (ApplyFailed.busy), as
    iptables-legacy-restore -w and python-iptables do."""

    def __init__(self, tables: Dict[int, NatTable], free: int) -> None:
        super().__init__(tables)
        self.free = free

    def apply(self, txn: Transaction) -> None:
        if len(self.applies) >= self.free:
            self.applies.append(txn.family)
            raise ApplyFailed("another program held the xtables lock for 10 s", busy=True)
        super().apply(txn)


def test_a_busy_xtables_lock_stops_the_halving_and_names_the_rest(tmp_path):
    """The lock taken by another program once the halving began: the set being tried
    waits its three tries, and nothing more is tried (each try of each half would
    wait as long: days at 5,000 containers); every container not made is named with
    the lock, none as refused by iptables."""
    bad = {"ctr002"}
    backend = LockTaken(flushed_tables(), free=2)  # the whole (refused), the shared
    result = check_lib.repair(
        Node(_cached_with_refused(tmp_path, 16, bad), backend), flush_udp=False
    )
    assert len(backend.applies) == 2 + 3, backend.applies
    assert sorted(u[2] for u in result.unrepaired) == [f"ctr{i:03d}" for i in range(16)]
    assert all(u[4].startswith("the xtables lock was busy: ") for u in result.unrepaired)


def test_a_setmark_chain_gone_during_the_halving_is_named(tmp_path):
    """A container whose externalSetMarkChain an admin's firewall reload deletes while
    the halving runs (after the whole was planned): its group is left out of the
    halves and named with the reason, as the whole repair names one missing from the
    start, never dropped unsaid."""
    import realplugin as rp

    options = _cached_with_refused(tmp_path, 6, {"ctr001"})
    ports = [{"hostPort": 9000, "containerPort": 80, "protocol": "tcp"}]
    conf = rp.plugin_conf("mynet", ["10.88.1.2/16"], ports, external_setmark_chain="ADMIN-MARK")
    rp.write_cni_cache(options.cache_dirs[0], "mynet", "ctrmark", "eth0", conf, ports,
                       ["10.88.1.2/16"])  # fmt: skip
    backend = RefusingIpset(flushed_tables())
    made = Transaction(4)
    made.new_chain("ADMIN-MARK")
    backend.memory.apply(made)

    def reload_deletes_it(txn: Transaction) -> None:
        if len(backend.applies) == 1:  # (after the whole: as the shared chains go in)
            gone = Transaction(4)
            gone.delete_chain("ADMIN-MARK")
            backend.memory.apply(gone)

    backend.before_apply = reload_deletes_it
    result = check_lib.repair(Node(options, backend), flush_udp=False)
    why = {u[2]: u[4] for u in result.unrepaired}
    assert set(why) == {"ctr001", "ctrmark"}, why
    assert "iptables refused it" in why["ctr001"]
    assert "ADMIN-MARK does not exist" in why["ctrmark"], why["ctrmark"]
    _all_but(backend, 6, {"ctr001"})


class Generations(RefusingIpset):
    """RefusingIpset with nf_tables' ruleset generation: read tables carry it, an
    accepted transaction that changes the table moves it by one, a refused one not.
    `plugin()` commits another party's change (`plugin_txn`, planned on the table then:
    by default a chain of nobody's) when `plugin_at` says: "refusal" just before
    iptables refuses ours, "next-use" just after the generation was asked (and found
    unmoved) about a refusal: before the copy kept is used again. Every refused text
    is in `refused_texts`."""

    def __init__(
        self,
        tables: Dict[int, NatTable],
        plugin_at: Optional[str] = None,
        plugin_txn: Optional[Callable[[NatTable], Transaction]] = None,
    ) -> None:
        super().__init__(tables)
        self.generation = 7
        self.plugin_at = plugin_at
        self.plugin_txn = plugin_txn
        self.asked_since_refusal: Optional[int] = None
        self.refused_texts: List[str] = []

    def plugin(self) -> None:
        self.plugin_at = None
        if self.plugin_txn is not None:
            txn = self.plugin_txn(self.memory.read(4))
        else:
            txn = Transaction(4)
            txn.new_chain("CNI-DN-plugins0000000000000")
        self.memory.apply(txn)
        self.generation += 1

    def read(self, family: int) -> NatTable:
        return replace(super().read(family), generation=self.generation)

    def generation_now(self) -> int:
        now = self.generation
        if self.asked_since_refusal is not None:
            self.asked_since_refusal += 1
            if self.asked_since_refusal == 1 and self.plugin_at == "next-use":
                self.plugin()  # just after the answer that finds the refusal final
        return now

    def apply(self, txn: Transaction) -> None:
        refused = "--match-set pmt-gone" in txn.render()
        if refused and self.plugin_at == "refusal":
            self.plugin()
        before = self.memory.tables[txn.family]
        try:
            super().apply(txn)
        except ApplyFailed:
            self.refused_texts.append(txn.render())
            self.asked_since_refusal = 0
            raise
        if self.memory.tables[txn.family] != before:
            self.generation += 1


def test_a_refusal_on_an_unmoved_generation_keeps_the_copy_and_is_not_tried_again(tmp_path):
    """iptables-nft: nothing committed since the copy was read or followed, so a
    refused restore leaves it the kernel's table: no save for the next plan, and the
    same transaction is never handed to iptables-restore twice."""
    bad = {"ctr005", "ctr021"}
    backend = Generations(flushed_tables())
    sent: List[str] = []
    backend.before_apply = lambda txn: sent.append(txn.render())
    result = check_lib.repair(
        Node(_cached_with_refused(tmp_path, 32, bad), backend), flush_udp=False
    )
    assert sorted(u[2] for u in result.unrepaired) == sorted(bad)
    _all_but(backend, 32, bad)
    assert backend.reads == [4]  # the check's read; every plan after it from the copy
    assert len(sent) == len(set(sent))


@pytest.mark.parametrize("plugin_at", ["refusal", "next-use"])
def test_a_commit_by_someone_else_makes_the_repair_read_again(tmp_path, plugin_at):
    """The plugin's ADD of a cached container commits just before iptables refuses
    ours (the generation moved: not final, the copy forgotten, the family read again
    and planned anew), or after a refusal was found final, before the kept copy is used
    again (checked against the generation then: read again). Either way no plan is
    made from the copy it made stale: nothing iptables refuses but the ipset's, the
    plugin's chain is kept, and the repair goes on."""
    bad = {"ctr003"}
    options = _cached_with_refused(tmp_path, 8, bad)
    (first,) = [a.mapping for a in read_cache(options.cache_dirs[0]) if "ctr000" in a.path]

    def plugins_add(live: NatTable) -> Transaction:
        return plan_setup(wanted_chains(first, 4), live)

    backend = Generations(flushed_tables(), plugin_at=plugin_at, plugin_txn=plugins_add)
    result = check_lib.repair(Node(options, backend), flush_udp=False)
    assert backend.plugin_at is None  # it ran
    assert all("pmt-gone" in text for text in backend.refused_texts), backend.refused_texts
    assert backend.reads == [4, 4]  # once after it
    assert [u[2] for u in result.unrepaired] == ["ctr003"]
    _all_but(backend, 8, bad)


def test_a_followed_copy_is_given_the_generation_only_of_our_own_commit(tmp_path):
    """After an accepted restore the copy is the kernel's table at the next generation
    only if ours was the only commit since (else unknown); a transaction that changed
    nothing commits nothing and the copy keeps its generation."""
    from portmapctl.ops.check.read_once import ReadOnce

    backend = Generations(flushed_tables())
    planned = ReadOnce(backend)  # type: ignore[arg-type]
    assert planned.read(4).generation == 7
    made = Transaction(4)
    made.new_chain("CNI-DN-ours00000000000000000")
    planned.apply(made)
    assert planned.read(4).generation == 8
    flushed = Transaction(4)
    flushed.flush("CNI-DN-ours00000000000000000")  # (empty already: no change)
    planned.apply(flushed)
    assert planned.read(4).generation == 8
    backend.before_apply = lambda txn: backend.plugin()  # someone else commits first
    other = Transaction(4)
    other.new_chain("CNI-DN-ours11111111111111111")
    planned.apply(other)
    assert planned.tables[4].generation is None


def test_a_kept_copy_then_a_busy_lock_reads_the_table_again():
    """A refusal found final keeps the copy; a next try that meets a busy lock drops
    it (nothing is known of the table then): the next read reads the node, and does
    not trip over the kept mark of a copy that is gone."""
    from portmapctl.ops.check.read_once import ReadOnce

    backend = Generations(flushed_tables())
    planned = ReadOnce(backend)  # type: ignore[arg-type]
    planned.read(4)
    refused = Transaction(4)
    refused.append("PREROUTING", ("-m", "set", "--match-set", "pmt-gone", "dst", "-j", "ACCEPT"))
    with pytest.raises(ApplyFailed) as final:
        planned.apply(refused)
    assert final.value.final and planned.reads == 1

    def lock_taken(txn: Transaction) -> None:
        raise ApplyFailed("another program held the xtables lock for 10 s", busy=True)

    backend.before_apply = lock_taken
    other = Transaction(4)
    other.new_chain("CNI-DN-other0000000000000000")
    with pytest.raises(ApplyFailed) as busy:
        planned.apply(other)
    assert busy.value.busy and not busy.value.final
    assert planned.read(4).generation == backend.generation
    assert planned.reads == 2


JUMP = ("-m", "addrtype", "--dst-type", "LOCAL", "-j", TOPLEVEL_DNAT)


def _doubled() -> Dict[int, NatTable]:
    """The example node repaired, then PREROUTING's jump and one container's entry
    rule written twice (two writers that found them missing at once)."""
    backend = Recording(flushed_tables())
    check_lib.repair(node_on(backend), flush_udp=False)
    tables = backend.memory.tables
    live = tables[4]
    entry = next(
        r for r in live.rules(TOPLEVEL_DNAT) if (rule_target(r) or "").startswith("CNI-DN-")
    )
    txn = Transaction(4)
    txn.append("PREROUTING", JUMP)
    txn.append(TOPLEVEL_DNAT, entry)
    backend.memory.apply(txn)
    return backend.memory.tables


def test_duplicated_entry_rules_lose_their_extra_copies():
    backend = Recording(_doubled())
    found = check_lib.check_node(node_on(backend))
    assert sorted(p.chain for p in found.problems if p.kind == "duplicate-entry") == [
        TOPLEVEL_DNAT,
        "PREROUTING",
    ]
    result = check_lib.repair(node_on(backend), flush_udp=False)
    assert not [p for p in result.problems if p.kind == "duplicate-entry"]
    assert sum(p.kind == "duplicate-entry" for p in result.fixed) == 2
    live = backend.memory.tables[4]
    for chain in ("PREROUTING", TOPLEVEL_DNAT):
        assert len(live.rules(chain)) == len(set(live.rules(chain))) > 0
    assert live.rules("PREROUTING").count(JUMP) == 1
    fresh = check_lib.check_node(node_on(Recording(backend.memory.tables)))
    assert result.problems == fresh.problems


def test_a_copy_that_went_between_read_and_write_is_never_the_last_deleted():
    """Between the repair's read and its write one copy of the jump goes and another
    tool's rule comes (PREROUTING's count unchanged): the try's `-C` refuses it whole,
    the re-plan finds one copy and leaves it."""
    backend = Recording(_doubled())

    def swap_once(txn: Transaction) -> None:
        if txn.family == 4 and backend.before_apply is not None:
            backend.before_apply = None
            change = Transaction(4)
            change.delete("PREROUTING", JUMP)
            change.append("PREROUTING", ("-p", "tcp", "-j", "ACCEPT"))
            backend.memory.apply(change)

    backend.before_apply = swap_once
    check_lib.repair(node_on(backend), flush_udp=False)
    assert backend.refused == 1
    assert backend.memory.tables[4].rules("PREROUTING").count(JUMP) == 1


def test_a_mapping_repair_leaves_the_nodes_duplicates():
    backend = Recording(_doubled())
    config = next(c for c in cached_configs() if 4 in c.families)
    check_lib.repair(node_on(backend), config, flush_udp=False)
    assert backend.memory.tables[4].rules("PREROUTING").count(JUMP) == 2


def test_a_shared_chains_own_rule_twice_is_one_and_someone_elses_chain_is_theirs():
    """The plugin's racing ADDs after a flush double CNI-HOSTPORT-MASQ's MASQUERADE too
    (helper-141): reported and left once. A chain of the admin's that jumps to
    CNI-HOSTPORT-DNAT twice is theirs: neither reported nor changed."""
    backend = Recording(_doubled())
    live = backend.memory.tables[4]
    masq = live.rules("CNI-HOSTPORT-MASQ")[0]
    mine = (JUMP, ("-s", "10.1.0.0/16", "-j", "RETURN"), JUMP)
    txn = Transaction(4)
    txn.append("CNI-HOSTPORT-MASQ", masq)
    txn.new_chain("MYPRE")
    for rule in mine:
        txn.append("MYPRE", rule)
    backend.memory.apply(txn)
    found = check_lib.check_node(node_on(backend))
    assert sorted(p.chain for p in found.problems if p.kind == "duplicate-entry") == [
        "CNI-HOSTPORT-DNAT",
        "CNI-HOSTPORT-MASQ",
        "PREROUTING",
    ]
    result = check_lib.repair(node_on(backend), flush_udp=False)
    assert not [p for p in result.problems if p.kind == "duplicate-entry"]
    after = backend.memory.tables[4]
    assert after.rules("CNI-HOSTPORT-MASQ") == live.rules("CNI-HOSTPORT-MASQ")
    assert after.rules("MYPRE") == mine


def test_a_rule_left_once_is_no_mapping_made(no_side_effects):
    """The dedupe deletes every copy of PREROUTING's jump and puts one back: nothing was
    dark, so no mapping gets the plugin's side effects (route_localnet, the UDP flush
    of every mapped port) as if the family's jump had been missing."""
    backend = Recording(_doubled())
    no_side_effects.clear()
    check_lib.repair(node_on(backend), flush_udp=False)
    assert no_side_effects == []
