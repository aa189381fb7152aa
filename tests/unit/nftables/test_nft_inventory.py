"""Mapping rows and problems from the real plugins' nftables state."""

from __future__ import annotations

import nftcases

from portmapctl.core.status import ProblemKind
from portmapctl.nftables import inventory as inv
from portmapctl.nftables.access.memory import MemoryNft
from portmapctl.nftables.inventory import Owner


def _owners(case: str) -> list[Owner]:
    return [Owner(c.network, c.container_id, c) for c in nftcases.live_configs(case)]


def _rows(case: str, owners=None, nft_backed=()):
    return inv.build(nftcases.live(case), owners, nft_backed=nft_backed)


def test_rows_of_several_containers() -> None:
    owners = _owners("v191-several")
    found = _rows("v191-several", owners, owners)
    assert not found.problems
    assert len(found.mappings) == 30
    assert all(m.status == ("ok",) and m.backend == "nftables" for m in found.mappings)
    by_key = {(m.container_id, m.family, m.host_port): m for m in found.mappings}
    b = by_key[("bbbb2222", 4, 9090)]
    assert (b.network, b.host_ip, b.container_ip, b.container_port, b.snat, b.chain) == (
        "podman", "127.0.0.1", "10.88.0.6", 90, True, "hostports",
    )  # fmt: skip
    assert by_key[("eeee5555", 4, 6000)].snat is False
    assert by_key[("eeee5555", 4, 6000)].network == "nosnat"
    assert by_key[("dddd4444", 6, 7001)].host_ip == "::1"
    assert by_key[("ffff6666", 6, 6100)].snat is True


def test_stale_without_cache_entry_and_unknown_without_cache() -> None:
    owners = [o for o in _owners("v191-several") if o.container_id != "cccc3333"]
    found = _rows("v191-several", owners)
    stale = {m.container_id for m in found.mappings if "stale" in m.status}
    assert stale == {"cccc3333"}
    assert all(m.network is None for m in found.mappings if m.container_id == "cccc3333")
    nocache = _rows("v191-several")
    assert not nocache.cache_present
    assert all(m.status == ("ok",) for m in nocache.mappings)


def test_zombie() -> None:
    owners = [
        Owner(o.network, o.container_id, o.mapping, zombie=o.container_id == "ctr-a")
        for o in _owners("v191-shadowed")
    ]
    found = _rows("v191-shadowed", owners)
    assert [m.status for m in found.mappings if m.container_id == "ctr-a"] == [("zombie",)]


def test_a_container_on_several_networks_is_named_by_its_nftables_one() -> None:
    """ctr-a cached on two more networks ahead of its nftables one, with the same
    address (iptables-backed: no `backend` key): its nftables rows were named by the
    first entry (an iptables network), which sent an operator to the wrong network's
    config (review helper-135). The entry whose config says nftables names them."""
    from dataclasses import replace

    from portmapctl.core.backend import Backend

    owners = [
        Owner(o.network, o.container_id, replace(o.mapping, backend=Backend.NFTABLES))
        for o in _owners("v191-shadowed")
        if o.mapping is not None
    ]
    (mine,) = [o for o in owners if o.container_id == "ctr-a"]
    assert mine.mapping is not None
    others = [
        Owner(net, "ctr-a", replace(mine.mapping, network=net, backend=None))
        for net in ("bridge-one", "bridge-two")
    ]
    found = _rows("v191-shadowed", [*others, *owners])
    assert {m.network for m in found.mappings if m.container_id == "ctr-a"} == {mine.network}


def test_shadowed_in_rule_order_v19() -> None:
    found = _rows("v191-shadowed")
    status = {m.container_id: (m.status, m.shadowed_by) for m in found.mappings}
    assert status == {"ctr-a": (("ok",), None), "ctr-b": (("shadowed",), "ctr-a")}


def test_a_hostip_rule_first_leaves_the_other_addresses_v17() -> None:
    """v1.7.1 put ctr-b's 127.0.0.1:8080 in hostip_hostports, which is entered first:
    it takes 127.0.0.1 from ctr-a's 8080 on every address, and leaves it every other
    one. ctr-a gets traffic: not shadowed (it was, and told to re-create one of them)."""
    found = _rows("v171-shadowed")
    status = {m.container_id: (m.status, m.shadowed_by, m.chain) for m in found.mappings}
    assert status == {
        "ctr-a": (("ok",), None, "hostports"),
        "ctr-b": (("ok",), None, "hostip_hostports"),
    }


def test_flushed_table_problems() -> None:
    owners = _owners("v191-basic")
    fake = MemoryNft(nftcases.live("v191-basic"))
    fake.flush_table(4)
    found = inv.build(fake.read(), owners, nft_backed=owners)
    kinds = [(p.kind, p.family, p.chain) for p in found.problems]
    assert kinds == [
        (ProblemKind.NFT_MISSING_ENTRY, 4, "prerouting"),
        (ProblemKind.NFT_MISSING_ENTRY, 4, "output"),
        (ProblemKind.NFT_MISSING_RULES, 4, "hostports"),
    ]
    assert found.problems[-1].detail.startswith("4 of 4 rules missing: ")
    assert found.problems[-1].container_id == "aaaa1111"


def test_missing_table_and_jumps() -> None:
    owners = _owners("v191-basic")
    fake = MemoryNft(nftcases.live("v191-basic"))
    fake.delete_table(6)
    live = fake.read()
    problems = inv.build(live, owners, nft_backed=owners).problems
    assert (ProblemKind.NFT_MISSING_TABLE, 6) in [(p.kind, p.family) for p in problems]
    # Only the jumps of hostports_all gone (someone flushed that chain).
    from portmapctl.nftables.transaction import Transaction

    txn = Transaction()
    txn.flush_chain(4, "hostports_all")
    fake.apply(txn)
    problems = inv.build(fake.read(), owners, nft_backed=owners).problems
    assert ProblemKind.NFT_MISSING_JUMPS in [p.kind for p in problems]


def test_base_chain_of_another_priority_or_policy() -> None:
    """A base chain someone re-created with another priority (the plugin's next ADD
    fails on it), or gave a policy drop: the real listing with those two changes."""
    import json

    from portmapctl.nftables.ruleset import parse

    doc = json.loads(nftcases.json_text("v191-basic"))
    for obj in doc["nftables"]:
        chain = obj.get("chain", {})
        if (chain.get("family"), chain.get("name")) == ("ip6", "prerouting"):
            chain["prio"] = 50
        if (chain.get("family"), chain.get("name")) == ("ip", "masquerading"):
            chain["policy"] = "drop"
    owners = _owners("v191-basic")
    found = inv.build(parse(json.dumps(doc), "edited"), owners, nft_backed=owners).problems
    assert [(p.kind, p.family, p.chain, p.detail) for p in found] == [
        (ProblemKind.NFT_WRONG_BASE_CHAIN, 4, "masquerading",
         "chain masquerading of ip cni_hostport is type nat hook postrouting priority 100;"
         " policy drop; the plugin's: type nat hook postrouting priority 100; policy accept"),
        (ProblemKind.NFT_WRONG_BASE_CHAIN, 6, "prerouting",
         "chain prerouting of ip6 cni_hostport is type nat hook prerouting priority 50;"
         " policy accept; the plugin's: type nat hook prerouting priority -100; policy accept"),
    ]  # fmt: skip
    # The plugin's own listing is healthy.
    assert not inv.build(nftcases.live("v191-basic"), owners, nft_backed=owners).problems


def test_v17_shape_is_healthy() -> None:
    owners = _owners("v171-hostip")
    assert not inv.build(nftcases.live("v171-hostip"), owners, nft_backed=owners).problems


def test_a_jump_twice_in_an_entry_chain_is_one_duplicate_entry() -> None:
    """A second copy of prerouting's entry and of a hostports_all jump (by hand: the
    plugin's ADD flushes those chains): duplicate-entry each, with the extra copies'
    handles (for a fix by hand), and no nft-missing-jumps for a hostports_all that has
    both its jumps."""
    from portmapctl.nftables import planner
    from portmapctl.nftables.transaction import Transaction

    owners = _owners("v191-basic")
    fake = MemoryNft(nftcases.live("v191-basic"))
    live = fake.read()
    txn = Transaction()
    entry = live.table(4).rules_of("prerouting")[-1].body
    jump = live.table(6).rules_of("hostports_all")[-1].body
    txn.add_rule(4, "prerouting", entry)
    txn.add_rule(4, "prerouting", entry)
    txn.add_rule(6, "hostports_all", jump)
    fake.apply(txn)
    doubled = fake.read()
    problems = inv.build(doubled, owners, nft_backed=owners).problems
    assert [(p.kind, p.family, p.chain) for p in problems] == [
        (ProblemKind.DUPLICATE_ENTRY, 4, "prerouting"),
        (ProblemKind.DUPLICATE_ENTRY, 6, "hostports_all"),
    ]
    copies = planner.extra_copies(doubled.table(4))
    assert problems[0].handles == tuple(r.handle for r in copies) and len(copies) == 2
    assert problems[0].detail.startswith("3 copies of `")
    # The node repair writes those chains again, each rule once, in order (not by
    # handle: a table made again hands handles out anew); nothing else changes.
    ids = {c.container_id for c in nftcases.live_configs("v191-basic")}
    txn = planner.repair(doubled, [], ids, (4, 6), dedupe=True)
    fake.apply(txn)
    # Nothing was dark: no mapping gets the plugin's side effects, no routed flush.
    from portmapctl.ops.check.nft_repair_flush import entry_families
    from portmapctl.ops.check.nft_repair_txn import nft_changed

    assert nft_changed(txn, nftcases.live_configs("v191-basic")) == []
    assert entry_families(txn) == []

    def bodies(ruleset):
        return {
            (f, name): [r.body for r in table.rules_of(name)]
            for f, table in ruleset.tables.items()
            for name in table.chains
        }

    assert bodies(fake.read()) == bodies(live)
    assert not planner.repair(fake.read(), [], ids, (4, 6), dedupe=True)
    # One mapping's repair (no dedupe) leaves them.
    assert not planner.repair(doubled, [], ids, (4, 6))
