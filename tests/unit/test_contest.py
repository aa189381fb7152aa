"""core/contest.py: which rows of the two plugin backends contest one host port, on
the real plugins' state (Debian 1.1.1's iptables fixtures, v1.9.1's nftables ones)."""

from __future__ import annotations

from dataclasses import replace
from typing import List, Set, Tuple

import fixtures_lib
import nftcases

from portmapctl.core.contest import backend_of, contests, marked
from portmapctl.core.mapping import Mapping
from portmapctl.core.status import Status
from portmapctl.iptables import inventory
from portmapctl.nftables import inventory as nft_inventory


def _ipt(case: str) -> List[Mapping]:
    tables = {f: fixtures_lib.table(case, f) for f in (4, 6)}
    return list(inventory.build(tables).mappings)


def _nft(case: str) -> List[Mapping]:
    return list(nft_inventory.build(nftcases.live(case), problems=False).mappings)


Key = Tuple[str, str, int, str, int]


def _keys(rows) -> Set[Key]:
    return {
        (getattr(m, "backend", "iptables"), m.container_id, m.family, m.protocol, m.host_port)
        for m in rows
    }


def test_the_same_port_in_both_backends_contests_both_rows() -> None:
    """basic's abc123 maps tcp/8080 in iptables, v191-shadowed's ctr-a in nftables:
    both contested, each naming the other; ctr-b, shadowed within nftables, is not
    (ctr-a, its backend's winner, is the one contested); udp/5353 has no rival."""
    ipt, nft = _ipt("basic"), _nft("v191-shadowed")
    found = contests([*ipt, *nft])
    assert _keys(found) == {
        ("iptables", "abc123", 4, "tcp", 8080),
        ("nftables", "ctr-a", 4, "tcp", 8080),
    }
    for row, others in found.items():
        assert [o.container_id for o in others] == [
            "ctr-a" if row.container_id == "abc123" else "abc123"
        ]
    rows = marked([*ipt, *nft])
    assert {m.container_id: m.status for m in rows if m.protocol == "tcp"} == {
        "abc123": (Status.CONTESTED,),
        "ctr-a": (Status.CONTESTED,),
        "ctr-b": ("shadowed",),
    }
    assert [m.status for m in rows if m.protocol == "udp"] == [(Status.OK,)]


def test_host_ips_must_overlap() -> None:
    """hostip's 127.0.0.1:8080 meets v191-several's *:8080, its *:9090 bbbb2222's
    127.0.0.1:9090; its own families only (aaaa1111's IPv6 8080 has no rival). With
    the node's conditions on nftables' entry (as v191-several was added), every nft row
    is conditional: nothing is contested."""
    # (That table's prerouting jump has the node's conditionsV4: taken off here, the
    # rows as a node without them has them.)
    several = [replace(m, conditions=()) for m in _nft("v191-several")]
    assert not contests([*_ipt("hostip"), *_nft("v191-several")])
    found = contests([*_ipt("hostip"), *several])
    assert _keys(found) == {
        ("iptables", "abc123", 4, "tcp", 8080),
        ("iptables", "abc123", 4, "tcp", 9090),
        ("nftables", "aaaa1111", 4, "tcp", 8080),
        ("nftables", "bbbb2222", 4, "tcp", 9090),
    }
    # 127.0.0.1 and 127.0.0.2 do not overlap (a row without a host IP overlaps any).
    other_ip = [replace(m, host_ip="127.0.0.2") for m in several if m.host_port == 8080]
    assert not contests([*_ipt("hostip"), *other_ip])


def test_a_container_in_both_backends_does_not_contest_itself() -> None:
    """ctr-a and ctr-b in both backends (both-backends): nothing is contested; the
    same rows under other IDs are."""
    assert not contests([*_ipt("shadowed"), *_nft("v191-shadowed")])
    renamed = [replace(m, container_id=f"{m.container_id}-nft") for m in _nft("v191-shadowed")]
    assert _keys(contests([*_ipt("shadowed"), *renamed])) == {
        ("iptables", "ctr-a", 4, "tcp", 8080),
        ("nftables", "ctr-a-nft", 4, "tcp", 8080),
    }


def test_conditional_dead_and_orphan_rows_contest_nothing() -> None:
    """A row with conditions takes only some packets; a dead rule none; an orphan
    chain is entered by no rule. Stale and zombie rows take the port: they contest."""
    nft = _nft("v191-shadowed")
    assert not contests([*_ipt("conditions"), *nft])
    basic = _ipt("basic")
    for status in (Status.DEAD, Status.ORPHAN):
        assert not contests([*(replace(m, status=(status,)) for m in basic), *nft])
    conditional = [replace(m, conditions=('iifname "eth0"',)) for m in nft]
    assert not contests([*basic, *conditional])
    stale = [replace(m, status=("stale",)) for m in nft]
    assert _keys(contests([*basic, *stale])) == {
        ("iptables", "abc123", 4, "tcp", 8080),
        ("nftables", "ctr-a", 4, "tcp", 8080),
        ("nftables", "ctr-b", 4, "tcp", 8080),
    }


def test_one_backend_alone_contests_nothing() -> None:
    """Two containers on one port in one backend are shadowing, never contested."""
    assert not contests(_ipt("shadowed"))
    assert not contests(_nft("v191-shadowed"))
    assert marked(_ipt("basic")) == _ipt("basic")


def test_another_tools_iptables_rule_contests_an_nftables_row() -> None:
    """Docker's DNAT of tcp/8080 (the real iptables-nft save tests/fixtures/
    foreign.v4.save) on v191-shadowed's port: ctr-a, nftables' winner, is contested
    (iptables' PREROUTING hooks at cni_hostport's priority), ctr-b, shadowed within
    nftables, is not; iptables rows are never contested by the rule (it shadows them)."""
    from portmapctl.core.contest import foreign_contested
    from portmapctl.iptables import foreign
    from portmapctl.iptables.ruleset import parse_save

    save = (fixtures_lib.FIXTURES / "foreign.v4.save").read_text()
    docker = (
        "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80"
    )
    table = parse_save(save.replace("COMMIT", f"{docker}\nCOMMIT", 1), 4, skip_foreign=True)
    nft = _nft("v191-shadowed")
    taken = foreign.nft_takers({4: table}, nft)
    assert taken == {(4, "tcp", 8080, None): docker}
    ipt = _ipt("basic")
    assert {
        (m.container_id, rule) for m, rule in foreign_contested([*ipt, *nft], taken).items()
    } == {("ctr-a", docker)}
    rows = marked(nft, taken)
    assert {m.container_id: m.status for m in rows} == {
        "ctr-a": (Status.CONTESTED,),
        "ctr-b": ("shadowed",),
    }


def test_another_tools_rule_in_the_other_iptables_flavour_contests_rows_of_both_backends() -> None:
    """The other flavour's nat table (the real save tests/fixtures/foreign.v4.save, read
    as legacy's beside an iptables-nft node) hooks at the plugin's priority: Docker's
    DNAT of tcp/8080 there contests basic's abc123 (iptables) and v191-shadowed's ctr-a
    (nftables), never ctr-b (shadowed within nftables); its ACCEPT of udp/5353 ends
    only its own table (nothing); the plugin's own chains there (a split brain, check's
    other problem) take nothing."""
    from portmapctl.core.contest import crossed
    from portmapctl.iptables.foreign import same_priority_takers, table_reader
    from portmapctl.iptables.ruleset import parse_save

    save = (fixtures_lib.FIXTURES / "foreign.v4.save").read_text()
    rows = [*_ipt("basic"), *_nft("v191-shadowed")]
    split_brain_only = parse_save(save, 4, skip_foreign=True)
    assert same_priority_takers({4: table_reader(split_brain_only)}, rows) == {}

    docker = (
        "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80"
    )
    accept = "-A DOCKER -p udp -m udp --dport 5353 -j ACCEPT"
    table = parse_save(save.replace("COMMIT", f"{docker}\n{accept}\nCOMMIT", 1), 4, True)
    taken = same_priority_takers({4: table_reader(table)}, rows)
    assert taken == {(4, "tcp", 8080, None): docker}
    assert {
        (backend_of(m), m.container_id, m.family, m.protocol, m.host_port)
        for m in crossed(rows, taken)
    } == {("iptables", "abc123", 4, "tcp", 8080), ("nftables", "ctr-a", 4, "tcp", 8080)}
    # Each backend's rows alone: no row of the other backend contests them.
    statuses = {
        (backend_of(m), m.container_id, m.protocol, m.host_port): m.status
        for part in (_ipt("basic"), _nft("v191-shadowed"))
        for m in marked(part, None, taken)
    }
    assert statuses == {
        ("iptables", "abc123", "tcp", 8080): (Status.CONTESTED,),
        ("iptables", "abc123", "udp", 5353): (Status.OK,),
        ("nftables", "ctr-a", "tcp", 8080): (Status.CONTESTED,),
        ("nftables", "ctr-b", "tcp", 8080): ("shadowed",),
    }
