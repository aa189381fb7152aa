"""`check --repair` never moves a host port between mappings (ops/check/port_moves.py),
through the memory backend: no root. The kernel's side is
tests/kernel/test_field_repair.py, the real nftables plugin's
tests/interop/test_nft_commands.py."""

from __future__ import annotations

import ipaddress
import os
import time
from pathlib import Path
from typing import List, Optional, Sequence

import pytest
import realplugin

from portmapctl.core.mapping import MappingConfig, PortMapping
from portmapctl.iptables.access.memory import MemoryBackend, empty_table
from portmapctl.iptables.chains import chain_name, dnat_chain_name, wanted_chains
from portmapctl.iptables.planner import plan_setup
from portmapctl.iptables.ruleset import NatTable, SavedChain
from portmapctl.iptables.shapes import first_taker
from portmapctl.ops.check import port_moves
from portmapctl.ops.check.repair import repair
from portmapctl.ops.node import Node, NodeOptions


def _id(letter: str) -> str:
    return letter * 12 + "0" * 52


def _config(
    letter: str, n: int, host_ip: Optional[str] = None, network: str = "mynet"
) -> MappingConfig:
    return MappingConfig(
        network,
        _id(letter),
        (ipaddress.ip_interface(f"10.88.0.{n}/16"),),
        (PortMapping(8080, 80, "tcp", host_ip),),
    )


def _node(tmp_path: Path, configs: Sequence[MappingConfig], cached: Sequence[MappingConfig]):
    """The plugin's ADDs of `configs` in order (memory backend); `cached` in the CNI
    cache, in ADD order (their files' times)."""
    start = time.time() - 100
    for i, c in enumerate(cached):
        pm = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp",
               "hostIP": c.ports[0].host_ip or ""}]  # fmt: skip
        ip = str(c.addresses[0])
        conf = realplugin.plugin_conf(c.network, [ip], pm)
        path = realplugin.write_cni_cache(
            tmp_path, c.network, c.container_id, "eth0", conf, pm, [ip]
        )
        os.utime(path, (start + i, start + i))
    memory = MemoryBackend({4: empty_table(4)})
    for c in configs:
        memory.apply(plan_setup(wanted_chains(c, 4), memory.read(4)))
    options = NodeOptions(cache_dirs=(str(tmp_path),), backend="iptables", families=(4,))
    return memory, Node(options, memory)


def _lose_dnat(memory: MemoryBackend, *chains: str) -> None:
    live = memory.read(4)
    memory.tables[4] = NatTable(
        4,
        {
            name: SavedChain(
                name, c.policy, tuple(r for r in c.rules if not (name in chains and "DNAT" in r))
            )
            for name, c in live.chains.items()
        },
    )


@pytest.mark.parametrize("form", ["node", "mapping"])
def test_a_host_ip_mapping_ahead_does_not_hide_a_port_move(tmp_path, form):
    """X maps 10.0.0.1:8080, then A 8080, then B 8080; A lost its DNAT rule, so B has
    tcp/8080 to every address but 10.0.0.1. Asked only "who takes it first", X hid
    that A's repair takes the rest from B (helper-120's finding): every destination is
    asked now."""
    x, a, b = _config("x", 4, "10.0.0.1"), _config("a", 5), _config("b", 6)
    memory, node = _node(tmp_path, [x, a, b], [x, a, b])
    _lose_dnat(memory, dnat_chain_name(a))
    dn_b = dnat_chain_name(b)
    assert first_taker(memory.read(4), "tcp", 8080, -1, "10.0.0.2") == dn_b
    done = repair(node, flush_udp=False) if form == "node" else repair(node, a, flush_udp=False)
    assert first_taker(memory.read(4), "tcp", 8080, -1, "10.0.0.2") == dn_b
    assert [u[3] for u in done.unrepaired] == [dnat_chain_name(a)]


def test_every_chain_ahead_of_the_holder_is_left_out_in_one_plan(tmp_path, monkeypatch):
    """Five containers ahead of B on tcp/8080 all lost their DNAT rule: each would take
    the port from B. All are found in one pass (helper-120: one re-plan of the whole
    node per container, 16.8 s for 100 at 5,000 containers)."""
    ahead = [_config(letter, 10 + i) for i, letter in enumerate("acdef")]
    b = _config("b", 6)
    memory, node = _node(tmp_path, [*ahead, b], [*ahead, b])
    _lose_dnat(memory, *(dnat_chain_name(c) for c in ahead))
    calls: List[int] = []
    real = port_moves.ports_taken
    monkeypatch.setattr(port_moves, "ports_taken", lambda *a: calls.append(1) or real(*a))
    done = repair(node, flush_udp=False)
    assert sorted(u[3] for u in done.unrepaired) == sorted(dnat_chain_name(c) for c in ahead)
    assert len(calls) == 2  # the plan, then the plan without them
    assert first_taker(memory.read(4), "tcp", 8080, -1) == dnat_chain_name(b)


@pytest.mark.parametrize("form", ["node", "mapping"])
def test_a_containers_own_chain_on_another_network_is_no_holder(tmp_path, form):
    """A on net1 then on net2, both tcp/8080 (podman allows it); net1's DNAT rule lost,
    so A's net2 chain has the port. A container is not shadowing itself (SPEC §3): the
    repair puts net1's rule back (before: "would take tcp/8080 from net2/aaaa...")."""
    a1, a2 = _config("a", 5, network="net1"), _config("a", 5, network="net2")
    memory, node = _node(tmp_path, [a1, a2], [a1, a2])
    healthy = memory.read(4)
    _lose_dnat(memory, dnat_chain_name(a1))
    assert first_taker(memory.read(4), "tcp", 8080, -1) == dnat_chain_name(a2)
    done = repair(node, flush_udp=False) if form == "node" else repair(node, a1, flush_udp=False)
    assert not done.unrepaired
    assert memory.read(4) == healthy


def test_a_comment_naming_the_container_on_anothers_chain_is_not_believed(tmp_path):
    """B's chain (net2) with an entry comment that says A: its name is not the plugin's
    for A on net2, so it is someone else's, and A's repair would take the port from it:
    A is left as it is (B's comment is put right: B keeps the port)."""
    a1, b2 = _config("a", 5, network="net1"), _config("b", 6, network="net2")
    memory, node = _node(tmp_path, [a1, b2], [a1, b2])
    said = f'dnat name: "net2" id: "{_id("b")}"'
    forged = said.replace(_id("b"), _id("a"))
    live = memory.read(4)
    memory.tables[4] = NatTable(
        4,
        {
            n: SavedChain(
                n, c.policy, tuple(tuple(a.replace(said, forged) for a in r) for r in c.rules)
            )
            for n, c in live.chains.items()
        },
    )
    _lose_dnat(memory, dnat_chain_name(a1))
    before = memory.read(4)
    assert f'id: "{_id("a")}"' in str(before.rules("CNI-HOSTPORT-DNAT")[-1])
    (left,) = repair(node, flush_udp=False).unrepaired
    assert left[3] == dnat_chain_name(a1)
    # The forged comment names nobody: B's chain is said by its name alone.
    assert f"would take tcp/8080 from {dnat_chain_name(b2)}, which" in left[4]
    after = memory.read(4)
    assert after.rules(dnat_chain_name(a1)) == before.rules(dnat_chain_name(a1))
    assert first_taker(after, "tcp", 8080, -1) == dnat_chain_name(b2)


def test_a_stale_holder_is_named_with_gc(tmp_path):
    """The chain that has the port is no cached container's (stale): the line says gc
    removes it, then the repair makes the cached one (helper-120)."""
    s, a = _config("5", 7), _config("a", 5)
    memory, node = _node(tmp_path, [a, s], [a])
    _lose_dnat(memory, dnat_chain_name(a))
    assert first_taker(memory.read(4), "tcp", 8080, -1) == chain_name("mynet", _id("5"))
    (left,) = repair(node, flush_udp=False).unrepaired
    assert "no CNI cache entry: `portmapctl gc` removes it, then repair" in left[4]


def test_someone_elses_dnat_in_the_plugins_chain_is_a_holder(tmp_path):
    """An admin's DNAT for tcp/8080 appended to CNI-HOSTPORT-DNAT has the port once A
    lost its DNAT rule; A's rewrite would take it back (helper-121's F2): A is left,
    and the line names the rule (no gc advice: gc never removes it)."""
    a = _config("a", 5)
    memory, node = _node(tmp_path, [a], [a])
    admin = ("-p", "tcp", "-m", "tcp", "--dport", "8080", "-j", "DNAT",
             "--to-destination", "10.0.0.9:80")  # fmt: skip
    live = memory.read(4)
    memory.tables[4] = NatTable(
        4,
        {
            n: SavedChain(n, c.policy, c.rules + ((admin,) if n == "CNI-HOSTPORT-DNAT" else ()))
            for n, c in live.chains.items()
        },
    )
    _lose_dnat(memory, dnat_chain_name(a))
    before = memory.read(4)
    (left,) = repair(node, flush_udp=False).unrepaired
    assert left[3] == dnat_chain_name(a)
    assert "take tcp/8080 from the rule 2 of CNI-HOSTPORT-DNAT" in left[4]
    assert "decide which container keeps it" in left[4]
    assert memory.read(4) == before


def _nft_config(cid: str, n: int, ports: Sequence[int]) -> MappingConfig:
    from portmapctl.core.backend import Backend

    return MappingConfig(
        "podman",
        cid,
        (ipaddress.ip_interface(f"10.88.0.{n}/16"),),
        tuple(PortMapping(p, 80, "tcp") for p in ports),
        backend=Backend.NFTABLES,
    )


def test_nft_a_lost_rule_put_back_ahead_of_the_holder_is_found():
    """nftables, in memory (the real plugin's case is in tests/interop): ctr-a (8080,
    9090) then ctr-b (8080); ctr-a's 8080 rule lost. The repair's plan puts it back
    before ctr-a's 9090, ahead of ctr-b's: nft_ports_taken names ctr-b, by family."""
    from portmapctl.nftables import planner
    from portmapctl.nftables.access.memory import MemoryNft
    from portmapctl.nftables.ruleset import EMPTY
    from portmapctl.nftables.transaction import Transaction as NftTransaction
    from portmapctl.nftables.wanted import wanted

    a, b = _nft_config("ctr-a", 21, (8080, 9090)), _nft_config("ctr-b", 22, (8080,))
    memory = MemoryNft()
    for c in (a, b):
        live = memory.read((4,)) if memory.read((4,)).tables else EMPTY
        memory.apply(planner.repair(live, [wanted(c, 4)], {c.container_id}, (4,)))
    live = memory.read((4,))
    (lost,) = [
        r for r in live.tables[4].rules_of("hostports")
        if r.comment == "ctr-a" and "8080" in r.body.text(4)
    ]  # fmt: skip
    drop = NftTransaction()
    drop.delete_rule(4, "hostports", lost.handle)
    memory.apply(drop)
    live = memory.read((4,))
    txn = planner.repair(live, [wanted(a, 4)], {"ctr-a"}, (4,))
    assert txn  # (the plan puts the rule back)
    own = {"ctr-a": ("10.88.0.21",), "ctr-b": ("10.88.0.22",)}
    (took,) = port_moves.nft_ports_taken(live, txn, own).items()
    assert took[0] == ("ctr-a", 4)
    assert (took[1].holder, took[1].protocol, took[1].port) == ("ctr-b", "tcp", 8080)
    assert port_moves.nft_holder_name(took[1]) == "ctr-b (hostports)"


def test_a_holder_cut_off_by_lost_jumps_is_not_said_to_get_traffic(tmp_path):
    """A firewall script flushed PREROUTING and OUTPUT (the jumps to CNI-HOSTPORT-DNAT
    went) and A lost its DNAT rule: B's rule has tcp/8080 in CNI-HOSTPORT-DNAT, but no
    packet reaches it now. A is still left as it is (the repair puts the jumps back,
    and B's traffic with them), and the line no longer says B gets the port's traffic
    now (helper-121's F3)."""
    a, b = _config("a", 5), _config("b", 6)
    memory, node = _node(tmp_path, [a, b], [a, b])
    _lose_dnat(memory, dnat_chain_name(a))
    live = memory.read(4)
    memory.tables[4] = NatTable(
        4,
        {
            n: SavedChain(n, c.policy, () if n in ("PREROUTING", "OUTPUT") else c.rules)
            for n, c in live.chains.items()
        },
    )
    (left,) = repair(node, flush_udp=False).unrepaired
    assert left[3] == dnat_chain_name(a)
    assert "gets that port's traffic now" not in left[4]
    assert "has that port in CNI-HOSTPORT-DNAT (and its traffic once the repair puts" in left[4]
    after = memory.read(4)
    assert any("CNI-HOSTPORT-DNAT" in r for r in after.rules("PREROUTING"))  # put back
    assert first_taker(after, "tcp", 8080, -1) == dnat_chain_name(b)


@pytest.mark.parametrize("form", ["node", "mapping"])
def test_a_stale_chain_of_the_same_id_is_still_a_holder(tmp_path, form):
    """A on net1 (cached), A on net2 (no cache entry: its DEL never ran), then B on net2
    at A's old address, all tcp/8080; net1's DNAT rule lost. A's stale net2 chain
    sends the port to that address, B's now: the repair would give it to A. Only a
    chain the cache names is A's own: left as it is ("gc removes it, then repair")."""
    a1, a2 = _config("a", 5, network="net1"), _config("a", 5, network="net2")
    b2 = _config("b", 5, network="net2")
    memory, node = _node(tmp_path, [a1, a2, b2], [a1, b2])
    _lose_dnat(memory, dnat_chain_name(a1))
    before = memory.read(4)
    assert first_taker(before, "tcp", 8080, -1) == dnat_chain_name(a2)
    done = repair(node, flush_udp=False) if form == "node" else repair(node, a1, flush_udp=False)
    (left,) = [u for u in done.unrepaired if u[3] == dnat_chain_name(a1)]
    assert f"would take tcp/8080 from net2/{_id('a')[:12]} ({dnat_chain_name(a2)})" in left[4]
    assert memory.read(4).rules(dnat_chain_name(a1)) == before.rules(dnat_chain_name(a1))


def _nft_node(tmp_path: Path, adds: Sequence[MappingConfig], cached: Sequence[MappingConfig]):
    """v1.9.1's ADDs of `adds` in order (setup: appended), in memory; `cached` in the
    CNI cache (nft-backed), in that order. Returns the fake and the node."""
    import upstream

    from portmapctl.iptables.access.memory import MemoryBackend
    from portmapctl.nftables import planner
    from portmapctl.nftables.access.memory import MemoryNft
    from portmapctl.nftables.ruleset import EMPTY
    from portmapctl.nftables.wanted import wanted

    start = time.time() - 100
    for i, c in enumerate(cached):
        pm = [{"hostPort": p.host_port, "containerPort": p.container_port,
               "protocol": p.protocol} for p in c.ports]  # fmt: skip
        ip = str(c.addresses[0])
        conf = upstream.nft_conf(c.network, [ip], pm)
        path = realplugin.write_cni_cache(tmp_path, c.network, c.container_id, "eth0", conf,
                                          pm, [ip])  # fmt: skip
        os.utime(path, (start + i, start + i))
    nft = MemoryNft()
    for c in adds:
        live = nft.read((4,)) if nft.read((4,)).tables else EMPTY
        nft.apply(planner.setup(live, [wanted(c, 4)]))
    options = NodeOptions(cache_dirs=(str(tmp_path),), backend="nftables", families=(4,))
    return nft, Node(options, MemoryBackend({4: empty_table(4)}), nft)


def _nft_two_networks(network: str, cid: str, ip: str, ports: Sequence[int]) -> MappingConfig:
    from portmapctl.core.backend import Backend

    return MappingConfig(
        network,
        cid,
        (ipaddress.ip_interface(ip),),
        tuple(PortMapping(p, p, "udp") for p in ports),
        backend=Backend.NFTABLES,
    )


def _nft_dnats(nft) -> List[str]:
    return [r.body.text(4) for r in nft.read((4,)).tables[4].rules_of("hostports")]


def _nft_lose(nft, text: str) -> None:
    from portmapctl.nftables.transaction import Transaction as NftTransaction

    (lost,) = [r for r in nft.read((4,)).tables[4].rules_of("hostports") if r.body.text(4) == text]
    drop = NftTransaction()
    drop.delete_rule(4, "hostports", lost.handle)
    nft.apply(drop)


@pytest.mark.parametrize("form", ["node", "mapping"])
def test_nft_a_stale_rule_of_the_same_id_is_still_a_holder(tmp_path, form):
    """nftables, the analogue of the iptables case above: ctr1 on net1 (10.88.0.5,
    udp/6001 and 6002, cached), ctr1 on net2 (10.89.0.5, no cache entry: its DEL never
    ran), then ctr2 on net2 given 10.89.0.5 again (udp/6001, cached); net1's 6001 rule
    lost. udp/6001 goes through ctr1's stale rule to 10.89.0.5: to ctr2. The repair put
    net1's rule back before its 6002 rule (the plugin's order), ahead of both: udp/6001
    went to ctr1. The rule's comment is ctr1, but no cache entry of ctr1 has 10.89.0.5:
    it is a holder; the family is left as it is."""
    a1 = _nft_two_networks("net1", "ctr1", "10.88.0.5/16", (6001, 6002))
    a2 = _nft_two_networks("net2", "ctr1", "10.89.0.5/16", (6001, 6002))
    b2 = _nft_two_networks("net2", "ctr2", "10.89.0.5/16", (6001,))
    nft, node = _nft_node(tmp_path, [a1, a2, b2], [a1, b2])
    _nft_lose(nft, 'udp dport 6001 dnat to 10.88.0.5:6001 comment "ctr1"')
    damaged = _nft_dnats(nft)
    assert damaged[1] == 'udp dport 6001 dnat to 10.89.0.5:6001 comment "ctr1"'
    done = repair(node, flush_udp=False) if form == "node" else repair(node, a1, flush_udp=False)
    after = _nft_dnats(nft)
    first = next(r for r in after if r.startswith("udp dport 6001 "))
    assert "10.89.0.5:6001" in first, after  # still ctr2's address
    assert after == damaged
    (left,) = [u for u in done.unrepaired if u[2] == "ctr1"]
    assert "would take udp/6001 from ctr1's rule for 10.89.0.5" in left[4], left[4]
    assert "no CNI cache entry read of ctr1 has" in left[4], left[4]
    assert "gc" not in left[4]  # (gc keeps a live container ID's rules)


@pytest.mark.parametrize("form", ["node", "mapping"])
def test_nft_a_lost_rule_appended_behind_a_stale_one_moves_nothing(tmp_path, form):
    """The same node with net1 mapping udp/6001 alone: its lost rule comes back appended,
    as v1.9.1's re-ADD of net1 appends it, behind ctr1's stale rule and ctr2's: udp/6001
    still goes to 10.89.0.5 (ctr2), the repair takes nothing."""
    a1 = _nft_two_networks("net1", "ctr1", "10.88.0.5/16", (6001,))
    a2 = _nft_two_networks("net2", "ctr1", "10.89.0.5/16", (6001,))
    b2 = _nft_two_networks("net2", "ctr2", "10.89.0.5/16", (6001,))
    nft, node = _nft_node(tmp_path, [a1, a2, b2], [a1, b2])
    _nft_lose(nft, 'udp dport 6001 dnat to 10.88.0.5:6001 comment "ctr1"')
    done = repair(node, flush_udp=False) if form == "node" else repair(node, a1, flush_udp=False)
    after = _nft_dnats(nft)
    assert after[-1] == 'udp dport 6001 dnat to 10.88.0.5:6001 comment "ctr1"', after
    assert "10.89.0.5:6001" in after[0], after
    assert not [u for u in done.unrepaired if u[2] == "ctr1"]


@pytest.mark.parametrize("form", ["node", "mapping"])
def test_nft_a_containers_own_rule_on_another_network_is_no_holder(tmp_path, form):
    """Both networks of ctr1 cached (udp/6001 and 6002 on each), net1's 6001 rule lost:
    its own net2 rule has the port; the repair puts net1's back before its 6002 rule,
    where the plugin wrote it (SPEC §3: no container shadows itself)."""
    a1 = _nft_two_networks("net1", "ctr1", "10.88.0.5/16", (6001, 6002))
    a2 = _nft_two_networks("net2", "ctr1", "10.89.0.5/16", (6001, 6002))
    nft, node = _nft_node(tmp_path, [a1, a2], [a1, a2])
    healthy = _nft_dnats(nft)
    _nft_lose(nft, 'udp dport 6001 dnat to 10.88.0.5:6001 comment "ctr1"')
    done = repair(node, flush_udp=False) if form == "node" else repair(node, a1, flush_udp=False)
    assert not done.unrepaired
    assert _nft_dnats(nft) == healthy


def test_nft_a_containers_old_address_rule_the_repair_deletes_is_no_holder(tmp_path):
    """ctr1 (udp/6001 and 6002 at 10.88.0.5, cached) with a rule of its own for 6001 to
    10.88.0.99, an address no cache entry gives anyone (an old one), first; its 6001
    rule lost. The node repair deletes the old rule (extra) and puts 6001 back before its
    6002 rule: the port goes from no container the cache knows to ctr1. Repaired (the
    kernel's side: tests/interop/test_nft_commands.py::
    test_a_cached_containers_wrong_rule_is_extra_and_repair_removes_it)."""
    a1 = _nft_two_networks("net1", "ctr1", "10.88.0.5/16", (6001, 6002))
    old = _nft_two_networks("net1", "ctr1", "10.88.0.99/16", (6001,))
    nft, node = _nft_node(tmp_path, [old, a1], [a1])
    _nft_lose(nft, 'udp dport 6001 dnat to 10.88.0.5:6001 comment "ctr1"')
    done = repair(node, flush_udp=False)
    assert not [u for u in done.unrepaired if u[2] == "ctr1"]
    assert _nft_dnats(nft) == [
        'udp dport 6001 dnat to 10.88.0.5:6001 comment "ctr1"',
        'udp dport 6002 dnat to 10.88.0.5:6002 comment "ctr1"',
    ]
