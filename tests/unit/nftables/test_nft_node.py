"""Backend choice, converge's re-planning and gc's dead containers, on the memory fake."""

from __future__ import annotations

from dataclasses import replace

import nftcases
import pytest

from portmapctl.errors import ApplyFailed
from portmapctl.nftables import node, planner
from portmapctl.nftables.access import NftApplyFailed, nft
from portmapctl.nftables.access.memory import MemoryNft
from portmapctl.nftables.node import Backend
from portmapctl.nftables.transaction import Transaction


def test_choose_as_the_plugin() -> None:
    assert node.choose("nftables", "a", set(), {"a"}) is Backend.NFTABLES
    assert node.choose("iptables", "a", {"a"}, set()) is Backend.IPTABLES
    assert node.choose(None, "a", {"a"}, set()) is Backend.NFTABLES
    assert node.choose(None, "a", {"a"}, {"a"}) is Backend.IPTABLES
    assert node.choose(None, "a", set(), set()) is Backend.IPTABLES
    assert node.choose("bogus", "a", {"a"}, set()) is Backend.NFTABLES
    # A node without iptables: the plugin takes nftables for a config without the key;
    # where the rules are, or the key, still decides first.
    assert node.choose(None, "a", set(), set(), Backend.NFTABLES) is Backend.NFTABLES
    assert node.choose(None, "a", set(), {"a"}, Backend.NFTABLES) is Backend.IPTABLES
    assert node.choose("iptables", "a", set(), set(), Backend.NFTABLES) is Backend.IPTABLES


def test_owners() -> None:
    assert node.owners_in(nftcases.live("v191-several")) == {
        "aaaa1111", "bbbb2222", "cccc3333", "dddd4444", "eeee5555", "ffff6666",
    }  # fmt: skip


class RacingNft(MemoryNft):
    """The plugin's DEL of `victim` lands between our read and our apply, `times` times."""

    def __init__(self, initial, victim: str, times: int = 1) -> None:
        super().__init__(initial)
        self.victim = victim
        self.times = times

    def apply(self, txn: Transaction) -> None:
        if self.times > 0 and txn.ops and txn.ops[0].kind.value == "delete rule":
            self.times -= 1
            super().apply(planner.teardown(self.read(), {self.victim}))
        super().apply(txn)


def test_converge_replans_after_a_race() -> None:
    fake = RacingNft(nftcases.live("v191-several"), victim="aaaa1111")
    done = node.converge(fake, lambda live: planner.teardown(live, {"aaaa1111", "bbbb2222"}))
    assert done.attempts == 2
    assert "aaaa1111" not in done.text  # already gone by the plugin's DEL
    assert node.owners_in(fake.read()) == {"cccc3333", "dddd4444", "eeee5555", "ffff6666"}


def test_converge_gives_up_cleanly() -> None:
    fake = RacingNft(nftcases.live("v191-several"), victim="x", times=99)

    def plan(live):
        # Always a stale handle: as if the table changed every time.
        txn = Transaction()
        txn.delete_rule(4, "hostports", 9999)
        return txn

    before = fake.read()
    with pytest.raises(ApplyFailed, match=r"kept changing .*\(3 tries"):
        node.converge(fake, plan)
    assert fake.read() == before


class GenerationNft(RacingNft):
    """As the real nft where gc's deletions go as one batch at the ruleset generation
    read (RealNft.read_settled, apply's `read_at`): every write moves the generation,
    and a batch at a generation that moved is refused whole, as the kernel refuses it."""

    def __init__(self, initial, victim: str, times: int = 1) -> None:
        super().__init__(initial, victim, times)
        self.generation = 1
        self.writes: list = []  # (generation read at or None, the op count)

    def read_settled(self, families=(4, 6)):
        return replace(self.read(families), generation=self.generation)

    def apply(self, txn: Transaction, read_at=None) -> None:
        self.writes.append((read_at, len(txn.ops)))
        if self.times > 0:
            # Another commit after our read: the plugin's DEL (or a firewall reload).
            self.times -= 1
            MemoryNft.apply(self, planner.teardown(self.read(), {self.victim}))
            self.generation += 1
        if read_at is not None and read_at != self.generation:
            raise NftApplyFailed("refused", nft.CHANGED)
        MemoryNft.apply(self, txn)
        self.generation += 1


def test_converge_at_generation_reads_and_plans_again_when_the_batch_is_refused() -> None:
    """gc's deletions refused because the ruleset moved after the read they were
    checked against: read and planned again, applied at the new read's generation,
    never written without one (as `nft -f`, which a reload's handles would meet)."""
    fake = GenerationNft(nftcases.live("v191-several"), victim="aaaa1111")
    reads: list = []

    def plan(live):
        reads.append(live.generation)
        return planner.teardown(live, {"aaaa1111", "bbbb2222"})

    done = node.converge(fake, plan, at_generation=True)
    assert reads == [1, 2] and done.attempts == 2
    assert [at for at, _ops in fake.writes] == [1, 2]
    assert node.owners_in(fake.read()) == {"cccc3333", "dddd4444", "eeee5555", "ffff6666"}


class MovingNft(GenerationNft):
    """A node whose ruleset commits again (another table's) while each read after
    the first lists: read_settled then cannot stamp it (RealNft: the generation moved
    through its three listings) and returns it unstamped."""

    def __init__(self, initial) -> None:
        super().__init__(initial, victim="x", times=0)
        self.settled_reads = 0

    def read_settled(self, families=(4, 6)):
        self.settled_reads += 1
        if self.settled_reads == 1:
            return super().read_settled(families)
        self.generation += 1  # (committed while it listed)
        return self.read(families)

    def apply(self, txn: Transaction, read_at=None) -> None:
        if read_at is not None:
            self.generation += 1  # a commit after the read: the batch is refused
        super().apply(txn, read_at)


def test_a_batch_refused_for_its_generation_is_never_followed_by_nft_f() -> None:
    """gc's batch refused because the ruleset moved since its read (a firewall reload
    perhaps), then reads the generation could not be stamped on (it kept moving):
    `nft -f` of those reads deleted by handle alone, the write the refusal kept out
    (100 commits/s in another table: two batches refused, then `nft -f`). Read again
    instead, and when no read can be stamped, nothing written: "kept changing"."""
    fake = MovingNft(nftcases.live("v191-several"))
    before = fake.read()
    with pytest.raises(ApplyFailed, match="kept changing") as failed:
        node.converge(fake, lambda live: planner.teardown(live, {"aaaa1111"}), at_generation=True)
    assert not failed.value.maybe_applied
    assert [at for at, _ops in fake.writes] == [1]  # the refused batch alone
    assert fake.read() == before


def test_converge_without_at_generation_writes_as_before() -> None:
    """add's and repair's writes: no generation asked for, `nft -f` as before."""
    fake = GenerationNft(nftcases.live("v191-several"), victim="x", times=0)
    node.converge(fake, lambda live: planner.teardown(live, {"aaaa1111"}))
    assert [at for at, _ops in fake.writes] == [None]


def test_converge_nothing_to_do() -> None:
    fake = MemoryNft(nftcases.live("v191-basic"))
    assert node.converge(fake, lambda live: Transaction()) == node.Converged("", 1)


def test_dead_containers() -> None:
    live = nftcases.live("v191-several")
    dead = node.dead_containers(live, lambda cid: cid not in {"aaaa1111", "eeee5555"})
    assert [d.container_id for d in dead] == ["aaaa1111", "eeee5555"]
    assert dead[0].host_ports == (
        (4, "tcp", 8080),
        (4, "udp", 5353),
        (6, "tcp", 8080),
        (6, "udp", 5353),
    )
    assert dead[0].families == (4, 6)
    assert len(dead[0].rules) == 7
    assert node.udp_ports(dead) == {4: [5353, 6000], 6: [5353]}


def _mark(live, cid: str, family: int = 4) -> str:
    rules = [r for d in node.dead_containers(live, lambda c: c != cid) for r in d.rules]
    return node.rules_mark(live.tables[family], [r for r in rules if r.family == family]).text()


def _same(before: str, live, cid: str, family: int = 4) -> bool:
    rules = [r for d in node.dead_containers(live, lambda c: c != cid) for r in d.rules]
    mine = [r for r in rules if r.family == family]
    return node.same_rules(before, node.rules_mark(live.tables[family], mine))


def _reloaded(live, jumps_last: bool = False):
    """`live` as `nft -f` of its listing makes it again: a new table handle, chains then
    rules numbered afresh from 1, in listing order or (as nft 1.0.6 did once) the
    table's jumps after every container's rule."""
    tables = {}
    for family, table in live.tables.items():
        chains = {n: replace(c, handle=i) for i, (n, c) in enumerate(table.chains.items(), 1)}
        listed = [r for name in table.chains for r in table.rules_of(name)]
        if jumps_last:
            listed.sort(key=lambda rule: rule.comment is None)
        numbered = {id(r): h for h, r in enumerate(listed, len(chains) + 1)}
        rules = {
            name: tuple(replace(r, handle=numbered[id(r)]) for r in table.rules_of(name))
            for name in table.chains
        }
        tables[family] = replace(table, handle=table.handle + 100, chains=chains, rules=rules)
    return replace(live, tables=tables)


def test_a_mark_holds_for_the_very_rules_alone() -> None:
    """The clock carries only while the rules are the ones seen, in the table seen: the
    same content written again, by an ADD or by a reload, starts it over (a delay)."""
    live = nftcases.live("v191-several")
    before = _mark(live, "eeee5555")
    assert _same(before, live, "eeee5555")
    # A reload of the listing (in either order nft took it): a table made afresh.
    assert not _same(before, _reloaded(live), "eeee5555")
    assert not _same(before, _reloaded(live, jumps_last=True), "eeee5555")
    # Written again by its DEL and ADD, the same content: a new sighting.
    fake = MemoryNft(live)
    fake.apply(planner.teardown(fake.read(), {"eeee5555"}))
    configs = [c for c in nftcases.live_configs("v191-several") if c.container_id == "eeee5555"]
    from portmapctl.nftables.wanted import wanted

    fake.apply(planner.setup(fake.read(), [wanted(configs[0], 4)]))
    again = fake.read()
    assert _mark(again, "eeee5555").split(":")[0] == before.split(":")[0]
    assert not _same(before, again, "eeee5555")
    # The same rule handles in a table made again (after `nft flush ruleset`, the
    # plugin's ADDs in the same order): the table's handle tells them apart.
    table = live.tables[4]
    made_again = replace(live, tables={**live.tables, 4: replace(table, handle=table.handle + 3)})
    assert not _same(before, made_again, "eeee5555")
    # 0.x's handle digest on file: the clock starts again once.
    assert not _same("432570afc29f49c9", live, "eeee5555")


def test_gc_never_takes_rules_the_plugin_did_not_write() -> None:
    """Foreign rules in the plugin's chains (no comment, a comment that is no container
    ID, another action) stay, whatever the liveness says."""
    from portmapctl.nftables.ruleset import Action, ActionKind, Match, RuleBody

    fake = MemoryNft(nftcases.live("v191-basic"))
    txn = Transaction()
    accept = Action(ActionKind.NONE)
    dport = (Match("tcp dport", "==", "22"),)
    txn.add_rule(4, "hostports", RuleBody(dport, Action(ActionKind.DNAT, addr="10.0.0.9", port=22)))
    txn.add_rule(4, "hostports", RuleBody(dport, accept, "admin-rule"))
    txn.add_rule(4, "masquerading", RuleBody((), Action(ActionKind.DNAT, addr="10.0.0.9"), "x1"))
    fake.apply(txn)
    dead = node.dead_containers(fake.read(), lambda cid: False)
    assert [d.container_id for d in dead] == ["aaaa1111"]
    fake.apply(planner.teardown(fake.read(), {"aaaa1111"}))  # the plugin's own DEL shape
    assert node.dead_containers(fake.read(), lambda cid: False) == []
