"""(The tests of this subject that need root are in tests/kernel/test_flush_udp.py.)

`portmapctl flush-udp`, `list --conntrack` and the conntrack step of `add`.

Pure selection logic on inventories of real-plugin fixtures first; then real conntrack
tables in throwaway namespaces, with mappings made by the real plugin (or by
`portmapctl add`), entries made by `conntrack -I`, and one blackhole made and ended
with real UDP traffic through the DNAT rules.
"""

from __future__ import annotations

import dataclasses
import io
import socket

import fixtures_lib
import pytest
import realplugin as rp
from flush_udp_helpers import (  # noqa: F401
    ALL,
    ENTRIES,
    TCP_SPORT,
    addresses,
    cli,
    container,
    ct_args,
    ct_load,
    ct_sports,
    entries,
    mapping,
    mappings,
    ns_run,
    route_localnet,
    some_ports,
    udp,
)
from hypothesis import given
from hypothesis import strategies as st

from portmapctl import render
from portmapctl.core.status import FlushReason
from portmapctl.host.conntrack import ConntrackEntry
from portmapctl.iptables import inventory
from portmapctl.iptables.inventory import Mapping
from portmapctl.ops import flow_owners
from portmapctl.ops.flush_udp import (
    Doomed,
    FlushResult,
    ours,
    plan,
    select_ports,
)


@pytest.fixture(autouse=True)
def _node_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    """The node's own addresses, as flow_owners reads them (a flow from one walks
    OUTPUT): the fixtures' node addresses, not this machine's."""
    import ipaddress

    from portmapctl.host.addresses import from_networks

    node = from_networks([ipaddress.ip_network(a) for a in ("10.0.0.1/32", "10.0.0.2/32")])
    monkeypatch.setattr(flow_owners, "local_addresses", lambda families=(4, 6): node)


def fixture_mappings(name: str) -> list[Mapping]:
    tables = {family: fixtures_lib.table(name, family) for family in (4, 6)}
    return list(inventory.build(tables).mappings)


# --- which ports ------------------------------------------------------------------------


def test_select_ports_takes_mapped_udp_ports_per_family() -> None:
    mappings = fixture_mappings("conditions")  # abc123: 8080/tcp, 5353/udp, v4 and v6
    assert select_ports(mappings, (4, 6)) == {(4, 5353), (6, 5353)}
    assert select_ports(mappings, (6,)) == {(6, 5353)}
    # Three containers, one with a UDP mapping; --container is an ID prefix.
    three = fixture_mappings("three-containers")
    assert select_ports(three, (4, 6)) == {(4, 5353)}
    assert select_ports(three, (4, 6), container="ctr") == {(4, 5353)}
    assert select_ports(three, (4, 6), container="ctr1") == set()


def test_select_ports_given_ports_need_not_be_mapped() -> None:
    mappings = fixture_mappings("conditions")
    assert select_ports(mappings, (4, 6), ports=[53, 5353]) == {
        (4, 53), (6, 53), (4, 5353), (6, 5353)
    }  # fmt: skip
    # With a container too: only its ports among those given.
    assert select_ports(mappings, (4,), ports=[53, 5353], container="abc") == {(4, 5353)}
    assert select_ports([], (4,), ports=[53], container="abc") == set()


# --- which entries go -------------------------------------------------------------------------

CURRENT = udp(sport=1, reply_src="10.88.0.5", reply_sport=53)
OLD = udp(sport=2, reply_src="10.88.0.9", reply_sport=53)
NEVER = udp(sport=3)
DIRECT = udp(sport=4, dst="10.88.0.5")  # sent to the container's own address
ELSEWHERE = udp(sport=5, dport=8053, reply_src="10.88.0.9", reply_sport=53)


def test_plain_flush_takes_every_entry_under_the_ports() -> None:
    mappings = [mapping()]
    entries = [CURRENT, OLD, NEVER, DIRECT, ELSEWHERE]
    assert plan(entries, {(4, 5353)}, mappings) == [
        Doomed(e, FlushReason.MAPPED) for e in (CURRENT, OLD, NEVER, DIRECT)
    ]
    assert plan(entries, {(4, 8053)}, mappings) == [Doomed(ELSEWHERE, FlushReason.GIVEN)]
    assert plan(entries, {(6, 5353)}, mappings) == []


def test_stale_only_takes_what_misroutes() -> None:
    mappings = [mapping()]
    doomed = plan([CURRENT, OLD, NEVER, DIRECT], {(4, 5353)}, mappings, stale_only=True)
    assert doomed == [
        Doomed(OLD, FlushReason.OLD_DESTINATION, ("10.88.0.5",)),
        Doomed(NEVER, FlushReason.NOT_DNATED, ("10.88.0.5",)),
    ]
    # Under a port nobody maps, only what is DNATed misroutes (to a gone container).
    plain = udp(sport=6, dport=8053)
    assert plan([ELSEWHERE, plain], {(4, 8053)}, mappings, stale_only=True) == [
        Doomed(ELSEWHERE, FlushReason.UNMAPPED)
    ]


def test_stale_only_compares_addresses_not_spelling() -> None:
    v6 = udp("2001:db8::7", "fd00::1", 1, 5353, "fd00:0::0005", 53, family=6)
    assert plan([v6], {(6, 5353)}, [mapping("fd00::5", family=6)], stale_only=True) == []
    assert plan([v6], {(6, 5353)}, [mapping("10.88.0.5")], stale_only=True) == [
        Doomed(v6, FlushReason.UNMAPPED)  # the v4 mapping does not cover a v6 entry
    ]


def test_stale_only_honours_host_ip_and_shadowing() -> None:
    on_lo = mapping("10.88.0.6", host_port=6000, host_ip="127.0.0.1", container_id="def456",
                    container_port=60)  # fmt: skip
    to_lo = udp(sport=1, dst="127.0.0.1", dport=6000, reply_src="10.88.0.6", reply_sport=60)
    to_host = udp(sport=2, dport=6000)  # another address: the rule does not take it
    old_to_host = udp(sport=3, dport=6000, reply_src="10.88.0.6", reply_sport=60)
    doomed = plan([to_lo, to_host, old_to_host], {(4, 6000)}, [on_lo], stale_only=True)
    # (Where the port is mapped: WHY names it, not "nothing maps this port".)
    assert doomed == [Doomed(old_to_host, FlushReason.UNMAPPED, mapped_on=("127.0.0.1",))]

    # Two containers on one port: the earlier entry rule wins, the other gets nothing.
    winner = mapping("10.88.0.5")
    loser = mapping("10.88.0.7", container_id="def456", shadowed_by="CNI-DN-x")
    to_loser = udp(sport=4, reply_src="10.88.0.7", reply_sport=53)
    assert plan([CURRENT, to_loser], {(4, 5353)}, [loser, winner], stale_only=True) == [
        Doomed(to_loser, FlushReason.OLD_DESTINATION, ("10.88.0.5",))
    ]


def test_list_conntrack_says_which_flows_misroute(monkeypatch) -> None:
    """list --conntrack's FLOWS said "3, ok" of a mapping two of whose flows went to a
    gone pod or bypassed it (helper-146). Each mapping's misrouted entries are judged
    as --stale-only judges them; one entry under two rows (a shadowed one and its
    winner) is one flow in the summary; a forwarded flow counts for nothing. The
    winner's live flow (DNATed to its container) is not under the shadowed row."""
    import ipaddress

    from portmapctl.host.addresses import from_networks
    from portmapctl.ops import flush_udp
    from portmapctl.ops.flush_udp import Flows

    winner = mapping("10.88.0.5")
    loser = mapping("10.88.0.7", container_id="def456", shadowed_by="CNI-DN-x")
    tcp = mapping("10.88.0.5", protocol="tcp")
    forwarded = udp(sport=9, dst="198.51.100.1")
    dumped = [CURRENT, OLD, NEVER, forwarded]
    monkeypatch.setattr(flush_udp.conntrack, "list_udp", lambda families, ports: dumped)
    node = from_networks([ipaddress.ip_network("10.0.0.1/32")])
    monkeypatch.setattr(flush_udp, "local_addresses", lambda families: node)
    counted = flush_udp.count_flows([winner, loser, tcp])
    flows = counted.rows
    assert flows == {
        winner: Flows(3, frozenset({OLD, NEVER})),
        loser: Flows(2, frozenset({OLD, NEVER})),
    }
    rows = [loser, winner, tcp]
    summary = "3 mappings of 2 containers: 3 ok"
    assert counted.misrouted(rows) == 2
    assert render.list_summary(rows, [], None, counted.misrouted(rows)) == (
        f"{summary}; 2 UDP flows misrouted -> portmapctl flush-udp --stale-only"
    )
    assert render.list_summary(rows, []) == summary  # without --conntrack
    # The rows' own (list --port 5353 shows no other port's); one flow, said so.
    assert render.list_summary([winner], [], 3, 1) == (
        "1 of 3 mappings match: 1 ok; 1 UDP flow misrouted -> portmapctl flush-udp --stale-only"
    )
    doc = render.list_json(rows, [], flows, misrouted=counted.misrouted(rows))
    assert [(m["protocol"], m.get("conntrack_entries"), m.get("conntrack_misrouted"))
            for m in doc["mappings"]] == [("udp", 2, 2), ("udp", 3, 2), ("tcp", None, None)]  # fmt: skip
    assert doc["conntrack_misrouted"] == 2
    assert "conntrack_misrouted" not in render.list_json(rows, [])  # without --conntrack
    # Judged by every mapping of the node (--backend iptables reads the nftables ones
    # only to judge): a flow another row's container takes is not misrouted, nor behind
    # the row listed (it went to that container).
    other = mapping("10.88.0.9", container_id="ffe999")
    judging = flow_owners.Judging([winner, other], {})
    assert flush_udp.count_flows([winner], judging).rows[winner] == Flows(2, frozenset({NEVER}))


def test_a_flow_counts_under_the_rows_that_dnated_it(monkeypatch) -> None:
    """A container on two networks maps 6001/udp on both (net1's rule first). A flow
    DNATed to one network's address is behind that row alone (it counted on both:
    one flow read as two), one DNATed to the same address on another container port
    behind that address's row, and one never DNATed or DNATed to a gone container's
    address behind both (the summary counts it once)."""
    import ipaddress

    from portmapctl.host.addresses import from_networks
    from portmapctl.ops import flush_udp
    from portmapctl.ops.flush_udp import Flows

    net1 = dataclasses.replace(mapping("10.88.0.5", 6001, container_port=6001), network="net1")
    net2 = dataclasses.replace(mapping("10.89.0.5", 6001, container_port=6001), network="net2")
    to1 = udp(sport=1, dport=6001, reply_src="10.88.0.5", reply_sport=6001)
    to2 = udp(sport=2, dport=6001, reply_src="10.89.0.5", reply_sport=6001)
    old_port = udp(sport=3, dport=6001, reply_src="10.89.0.5", reply_sport=53)
    never = udp(sport=4, dport=6001)
    gone = udp(sport=5, dport=6001, reply_src="10.88.0.9", reply_sport=6001)
    dumped = [to1, to2, old_port, never, gone]
    monkeypatch.setattr(flush_udp.conntrack, "list_udp", lambda families, ports: dumped)
    node = from_networks([ipaddress.ip_network("10.0.0.1/32")])
    monkeypatch.setattr(flush_udp, "local_addresses", lambda families: node)
    counted = flush_udp.count_flows([net1, net2])
    assert counted.rows == {
        net1: Flows(3, frozenset({never, gone})),
        net2: Flows(4, frozenset({old_port, never, gone})),
    }
    assert counted.misrouted([net1, net2]) == 3
    assert flush_udp.behind([net1, net2], to1) == [net1]


def test_list_counts_the_flows_to_an_address_no_row_is_for(monkeypatch) -> None:
    """A mapping now on 10.0.0.2 alone; a flow to 10.0.0.1 on its port still DNATed to
    its container (mapped on every address before): under no row, and flush-udp
    --stale-only deletes it (nothing maps the port there now), so the summary counts
    it, except for a fix narrowed to one --container (that looks at the container's
    own addresses). Another tool's flow there (DNATed to no container of the plugin's)
    is neither (review helper-149)."""
    import ipaddress

    from portmapctl.host.addresses import from_networks
    from portmapctl.ops import flush_udp

    bound = mapping("10.88.0.5", host_ip="10.0.0.2")
    there = udp(sport=40100, dst="10.0.0.1", reply_src="10.88.0.5", reply_sport=53)
    theirs = udp(sport=40101, dst="10.0.0.1", reply_src="10.244.1.7", reply_sport=53)
    monkeypatch.setattr(flush_udp.conntrack, "list_udp", lambda f, p: [there, theirs])
    node = from_networks([ipaddress.ip_network("10.0.0.0/24")])
    monkeypatch.setattr(flush_udp, "local_addresses", lambda families: node)
    counted = flush_udp.count_flows([bound])
    assert counted.rows[bound].entries == 0
    assert counted.misrouted([bound]) == 1
    assert counted.misrouted([bound], elsewhere=False) == 0
    doomed = flush_udp.plan([there, theirs], {(4, 5353)}, [bound], stale_only=True, local=node,
                            ours=flush_udp.ours([(4, "10.88.0.5")]))  # fmt: skip
    assert [d.entry for d in doomed] == [there]


def test_list_spells_its_flush_fix_with_its_own_options_and_filters() -> None:
    """The fix list prints runs where list looked (`list --netns X` printed a flush-udp
    for the host's namespace) and is narrowed as flush-udp can be: one --container (it
    takes one), every --port; list's other filters it cannot say."""
    from portmapctl.cli.list_run import Filters, flush_fix
    from portmapctl.ops.node import NodeOptions

    here = NodeOptions()
    assert flush_fix(here, Filters()) == "portmapctl flush-udp --stale-only"
    there = NodeOptions(netns="/run/netns/a b", families=(6,), cache_dirs=("/x",))
    narrowed = Filters(containers=("3f2a",), ports=(5353, 53), networks=("podman",))
    assert flush_fix(there, narrowed) == (
        "portmapctl flush-udp --stale-only --container 3f2a --port 5353 --port 53"
        " --netns '/run/netns/a b' --family 6 --cni-cache-dir /x"
    )
    assert flush_fix(here, Filters(containers=("3f2a", "c9d8"))) == (
        "portmapctl flush-udp --stale-only"
    )


def test_lists_flush_fix_spells_a_port_only_for_the_families_it_is_mapped_in() -> None:
    """flush-udp --port N looks at N in every family of the run, and judges one N is
    not mapped in as a port given: its DNATed flows go, another tool's live ones too,
    which list never counted (review h210). Without --container, a --port is spelled
    with the families list's UDP rows map it in, or not at all when they differ."""
    from portmapctl.cli.list_run import Filters, flush_fix
    from portmapctl.ops.node import NodeOptions

    here = NodeOptions()
    fix = "portmapctl flush-udp --stale-only"
    both = {(4, 5353), (6, 5353), (4, 6000)}
    assert flush_fix(here, Filters(ports=(5353,)), both) == f"{fix} --port 5353"
    assert flush_fix(here, Filters(ports=(6000,)), both) == f"{fix} --port 6000 --family 4"
    assert flush_fix(here, Filters(ports=(5353, 6000)), both) == fix
    # A port no UDP row is for (a TCP one): not spelled.
    assert flush_fix(here, Filters(ports=(80, 6000)), both) == f"{fix} --port 6000 --family 4"
    # One --container: flush-udp takes that container's mapped ports alone.
    one = Filters(containers=("def4",), ports=(6000,))
    assert flush_fix(here, one, both) == f"{fix} --container def4 --port 6000"


def test_stale_only_keeps_another_tools_flows_to_an_address_a_port_is_not_mapped_on() -> None:
    """def456 maps 127.0.0.1:6000 only; kube-proxy (a NodePort) DNATs 10.0.0.1:6000 to
    its own pod. flush-udp --stale-only deleted those live flows as "DNATed, but nothing
    maps this port now" (the port is mapped, on another address). A flow DNATed to a
    mapped container's address (its old mapping on every address) still goes; gc, which
    passes no `ours`, judges as before."""
    on_lo = mapping("10.88.0.6", host_port=6000, host_ip="127.0.0.1", container_id="def456",
                    container_port=60)  # fmt: skip
    nodeport = udp(sport=1, dport=6000, reply_src="10.244.1.7", reply_sport=60)
    old_to_host = udp(sport=3, dport=6000, reply_src="10.88.0.6", reply_sport=60)
    ours = {(4, socket.inet_pton(socket.AF_INET, "10.88.0.6"))}
    doomed = plan([nodeport, old_to_host], {(4, 6000)}, [on_lo], stale_only=True, ours=ours)
    assert doomed == [Doomed(old_to_host, FlushReason.UNMAPPED, mapped_on=("127.0.0.1",))]
    assert plan([nodeport], {(4, 6000)}, [on_lo], stale_only=True) == [
        Doomed(nodeport, FlushReason.UNMAPPED, mapped_on=("127.0.0.1",))
    ]
    # A port nothing maps (`--port N --stale-only`, the documented clean-up): as before.
    assert plan([nodeport], {(4, 6000)}, [], stale_only=True, ours=ours) == [
        Doomed(nodeport, FlushReason.UNMAPPED)
    ]


FOREIGN = "-A PREROUTING -p udp -m udp --dport 5353 -j DNAT --to-destination 10.88.0.99:53"


def test_stale_only_keeps_the_flows_of_a_port_another_tools_rule_takes_first() -> None:
    """A DNAT of another tool ahead of the plugin's jump takes the port (the mapping is
    `shadowed` by it): its flows are that rule's business. They were judged against
    the shadowed mapping and deleted as "old destination: the port now goes to
    10.88.0.5", a live flow to 10.88.0.99 among them, at every run."""
    beaten = mapping(shadowed_by=FOREIGN)
    foreigns = udp(sport=5, reply_src="10.88.0.99", reply_sport=53)
    assert plan([CURRENT, OLD, NEVER, foreigns], {(4, 5353)}, [beaten], stale_only=True) == []
    # The other backend's rule (as `nft list` prints it) is no mapping of this run's
    # either; the plugin's nftables row that wins, when given, is judged as any winner.
    by_nft = mapping(shadowed_by="tcp dport 5353 dnat ip to 10.88.0.7:53")
    assert plan([CURRENT, OLD], {(4, 5353)}, [by_nft], stale_only=True) == []


def test_stale_only_gives_each_address_to_the_mapping_that_takes_it() -> None:
    """A maps 5353 on 10.0.0.1 and B on 10.0.0.2, ahead of M's 5353 on every address
    (none is shadowed: each gets traffic): A takes the flows to 10.0.0.1, B to
    10.0.0.2, M the rest. A flow to 10.0.0.2 DNATed to M's container misroutes (it
    was kept: M was taken for a winner there too, beside B)."""

    def row(ip: str, chain: str, host_ip=None) -> Mapping:
        return dataclasses.replace(mapping(ip, host_ip=host_ip, container_id=chain), chain=chain)

    a, b, m = row("10.88.0.1", "CNI-DN-a", "10.0.0.1"), row("10.88.0.2", "CNI-DN-b", "10.0.0.2"), \
        row("10.88.0.3", "CNI-DN-m")  # fmt: skip
    to_a = udp(sport=1, dst="10.0.0.1", reply_src="10.88.0.1", reply_sport=53)
    m_at_a = udp(sport=2, dst="10.0.0.1", reply_src="10.88.0.3", reply_sport=53)
    m_at_b = udp(sport=3, dst="10.0.0.2", reply_src="10.88.0.3", reply_sport=53)
    b_at_b = udp(sport=4, dst="10.0.0.2", reply_src="10.88.0.2", reply_sport=53)
    to_m = udp(sport=5, dst="10.0.0.9", reply_src="10.88.0.3", reply_sport=53)
    a_elsewhere = udp(sport=6, dst="10.0.0.9", reply_src="10.88.0.1", reply_sport=53)
    flows = [to_a, m_at_a, m_at_b, b_at_b, to_m, a_elsewhere]
    assert plan(flows, {(4, 5353)}, [m, a, b], stale_only=True) == [
        Doomed(m_at_a, FlushReason.OLD_DESTINATION, ("10.88.0.1",)),
        Doomed(m_at_b, FlushReason.OLD_DESTINATION, ("10.88.0.2",)),
        Doomed(a_elsewhere, FlushReason.OLD_DESTINATION, ("10.88.0.3",)),
    ]
    # With conditions on A, M takes the rest of 10.0.0.1's packets: a flow to M there
    # is no misrouted one.
    guarded = dataclasses.replace(a, conditions=("!", "-s", "192.168.0.0/16"))
    assert plan([m_at_a], {(4, 5353)}, [m, guarded, b], stale_only=True) == []


def test_stale_only_keeps_the_flows_of_either_backend_that_contest_an_address() -> None:
    """An nftables rule for 10.0.0.1 and an iptables mapping for every address, both
    on udp/5000: between the backends the kernel's hook order decides (both rows are
    contested), so neither is known to be first. A flow to 10.0.0.1 DNATed to the
    iptables container (which the kernel did pick when its table came later) was
    deleted as "old destination: the port now goes to" the nftables one."""
    from portmapctl.nftables.inventory import NftMapping

    nft = NftMapping("podman", "nnn", 4, "udp", "10.0.0.1", 5000, "10.88.0.5", 53, True,
                     "hostports", ("contested",), None, ())  # fmt: skip
    ipt = dataclasses.replace(mapping("10.88.0.6", host_port=5000, container_id="iii"),
                              chain="CNI-DN-i")  # fmt: skip
    to_ipt = udp(sport=1, dst="10.0.0.1", dport=5000, reply_src="10.88.0.6", reply_sport=53)
    to_nft = udp(sport=2, dst="10.0.0.1", dport=5000, reply_src="10.88.0.5", reply_sport=53)
    assert plan([to_ipt, to_nft], {(4, 5000)}, [nft, ipt], stale_only=True) == []


def test_stale_only_takes_a_flow_to_the_same_address_on_an_old_port() -> None:
    """The container at 10.88.0.5 maps 5353 to its port 54 now; a flow DNATed to
    10.88.0.5:53 (its old port, or an old container's with the same address) misroutes.
    It was kept: only the reply's address was compared."""
    moved = mapping(container_port=54)
    to_54 = udp(sport=7, reply_src="10.88.0.5", reply_sport=54)
    assert plan([CURRENT, to_54, DIRECT], {(4, 5353)}, [moved], stale_only=True) == [
        Doomed(CURRENT, FlushReason.OLD_DESTINATION, ("10.88.0.5:54",))
    ]
    v6 = udp("2001:db8::7", "fd00::1", 1, 5353, "fd00::5", 53, family=6)
    assert plan([v6], {(6, 5353)}, [mapping("fd00::5", family=6, container_port=54)],
                stale_only=True) == [Doomed(v6, FlushReason.OLD_DESTINATION, ("[fd00::5]:54",))]  # fmt: skip


def test_why_says_where_the_port_goes_is_a_stale_chains_gone_container() -> None:
    """An old destination's WHY said "the port now goes to 10.88.0.6" where a stale
    chain (a leaked one: no cache entry names its container) sends the port: it now
    says so, also of an address on another port, and beside a live container's where
    the two backends contest the port. Reasons unchanged."""
    from portmapctl.nftables.inventory import NftMapping
    from portmapctl.render.flush_udp import flush_why

    live = NftMapping("podman", "nnn", 4, "udp", "10.0.0.1", 5353, "10.88.0.5", 53, True,
                      "hostports", ("contested",), None, ())  # fmt: skip
    stale = dataclasses.replace(mapping("10.88.0.6", container_id="sss"), status=("stale",))
    old = udp(sport=1, dst="10.0.0.1", reply_src="10.88.0.9", reply_sport=53)
    by = "by a stale chain (its container is not in the CNI cache: portmapctl gc removes the chain)"
    ported = udp(sport=2, dst="10.0.0.2", reply_src="10.88.0.6", reply_sport=54)
    never = udp(sport=3, dst="10.0.0.2")
    doomed = plan([old, ported, never], {(4, 5353)}, [live, stale], stale_only=True)
    assert [(d.reason, d.wanted, d.stale) for d in doomed] == [
        (FlushReason.OLD_DESTINATION, ("10.88.0.5", "10.88.0.6"), ("10.88.0.6",)),
        (FlushReason.OLD_DESTINATION, ("10.88.0.6:53",), ("10.88.0.6:53",)),
        (FlushReason.NOT_DNATED, ("10.88.0.6",), ("10.88.0.6",)),
    ]
    assert [flush_why(d) for d in doomed] == [
        f"old DNAT destination: the port now goes to 10.88.0.5, and to 10.88.0.6 {by}",
        f"old DNAT destination: the port now goes to 10.88.0.6:53 {by}",
        f"never DNATed: bypasses the mapping to 10.88.0.6 {by}",
    ]
    cached = dataclasses.replace(stale, status=("ok",))
    doomed = plan([old], {(4, 5353)}, [live, cached], stale_only=True)
    assert [flush_why(d) for d in doomed] == [
        "old DNAT destination: the port now goes to 10.88.0.5, 10.88.0.6"
    ]


def test_stale_only_keeps_what_conditions_leave_to_the_host() -> None:
    """A mapping with conditionsV4 DNATs only the packets they match: a flow it left
    alone is the host's own, not one that began before the rule (0.1 deleted it)."""
    guarded = dataclasses.replace(mapping(), conditions=("!", "-s", "192.168.0.0/16"))
    assert plan([CURRENT, OLD, NEVER], {(4, 5353)}, [guarded], stale_only=True) == [
        Doomed(OLD, FlushReason.OLD_DESTINATION, ("10.88.0.5",))
    ]
    # Another container after it takes the rest of the port: never DNATed misroutes.
    rest = mapping("10.88.0.7", container_id="def456")
    assert plan([NEVER], {(4, 5353)}, [guarded, rest], stale_only=True) == [
        Doomed(NEVER, FlushReason.NOT_DNATED, ("10.88.0.5", "10.88.0.7"))
    ]


def test_stale_only_survives_a_foreign_dnat_range() -> None:
    odd = mapping("10.88.0.5-10.88.0.9")  # not the plugin's, but a dump may hold it
    assert plan([CURRENT], {(4, 5353)}, [odd], stale_only=True) == [
        Doomed(CURRENT, FlushReason.OLD_DESTINATION, ("10.88.0.5-10.88.0.9",))
    ]


@given(st.lists(entries), st.lists(mappings), st.sets(st.tuples(st.just(4), some_ports)))
def test_plan_properties(
    items: list[ConntrackEntry], current: list[Mapping], ports: set[tuple[int, int]]
) -> None:
    plain = plan(items, ports, current)
    stale = plan(items, ports, current, stale_only=True)
    in_scope = [e for e in items if (e.family, e.dport) in ports]
    assert [d.entry for d in plain] == in_scope
    assert {d.reason for d in plain} <= {FlushReason.MAPPED, FlushReason.GIVEN}
    assert [d.entry for d in stale] == [e for e in in_scope if e in {d.entry for d in stale}]
    for d in stale:
        covering = [
            m for m in current
            if m.host_port == d.entry.dport and m.host_ip in (None, d.entry.dst)
        ]  # fmt: skip
        # Never deleted: an entry whose replies come from a covering mapping's container
        # and port (unless another container's mapping for that very address, taking
        # every packet, has it first), or one sent straight to a container's address.
        replier = (d.entry.reply_src, d.entry.reply_sport)
        first = {
            m.container_id for m in covering
            if m.host_ip is not None and not m.conditions and not m.shadowed_by
        }  # fmt: skip
        assert replier not in {
            (m.container_ip, m.container_port) for m in covering
            if m.host_ip is not None or not first - {m.container_id}
        }  # fmt: skip
        assert d.entry.dnat or d.entry.dst not in {m.container_ip for m in covering}
        assert covering or d.entry.dnat
    # Deleting the stale ones leaves nothing stale.
    survivors = [e for e in items if e not in {d.entry for d in stale}]
    assert plan(survivors, ports, current, stale_only=True) == []


# --- rendering --------------------------------------------------------------------------------


def test_json_has_the_spec_keys_and_table_says_why() -> None:
    v6 = udp("2001:db8::7", "fd00::1", 7, 5353, "fd00::9", 53, family=6)
    result = FlushResult(
        True, True, ((4, 5353), (6, 5353)),
        (Doomed(OLD, FlushReason.OLD_DESTINATION, ("10.88.0.5",)), Doomed(v6, FlushReason.OLD_DESTINATION, ("fd00::5",))),
        2, 1,
    )  # fmt: skip
    doc = render.flush_json(result)
    assert doc["dry_run"] is True and doc["count"] == 2
    assert doc["deleted"][1] == {
        "family": 6, "protocol": "udp", "src": "2001:db8::7", "sport": 7,
        "host_ip": "fd00::1", "host_port": 5353,
        "reply_src": "fd00::9", "reply_sport": 53, "reason": "old-destination",
    }  # fmt: skip
    lines = render.flush_table(result).plain.splitlines()
    assert lines[0].split() == ["FAM", "SOURCE", "DESTINATION", "PORTS", "REPLY", "FROM", "WHY"]
    assert lines[2].split()[:5] == ["v6", "2001:db8::7", "fd00::1", "7->5353", "[fd00::9]:53"]
    assert lines[2].endswith("old DNAT destination: the port now goes to fd00::5")
    assert render.flush_summary(result) == (
        "would delete 2 UDP conntrack entries to host port 5353 (v4/v6);"
        " kept 1 that reach their container or the host"
    )
    gone = dataclasses.replace(result, dry_run=False, stale_only=False, deleted=1)
    assert render.flush_summary(gone).endswith("; 1 had gone already")
    nothing = FlushResult(False, False, (), (), 0, 0)
    assert "nothing to flush" in render.flush_summary(nothing, "zzz")
    # --container with --port: the port asked for is named, not "no mapped UDP host
    # ports" of a container that maps some (helper-171's review).
    assert render.flush_summary(nothing, "live1", [9090]) == (
        "a container live1* maps no UDP host port 9090: nothing to flush"
    )
    assert render.flush_summary(nothing, "live1", [9090, 9091]).startswith(
        "a container live1* maps none of the UDP host ports 9090, 9091:"
    )


def test_the_summary_names_no_port_of_an_entry_gone_before_the_delete() -> None:
    """An entry gone before the delete reached it is kept out of JSON 'deleted' and the
    -v table, and out of the summary's ports: it said an entry was deleted 'to host
    ports 5353 (v4), 6000 (v4)' when the only one to 6000 had gone already (review
    helper-149)."""
    kept = udp(sport=40001, dport=5353)
    went = udp(sport=40002, dport=6000)
    result = FlushResult(
        False, False, ((4, 5353), (4, 6000)),
        (Doomed(kept, FlushReason.MAPPED), Doomed(went, FlushReason.MAPPED)),
        1, 0, (), frozenset({went}),
    )  # fmt: skip
    assert [d.entry.sport for d in result.shown] == [40001]
    assert render.flush_summary(result) == (
        "deleted 1 UDP conntrack entry to host port 5353 (v4); 1 had gone already"
    )


def test_the_summary_names_the_ports_of_the_entries_it_deletes() -> None:
    """The ports after "to" are those of the entries deleted: it named every port looked
    at ("deleted 1 ... to host ports 5353 (v4/v6), 6000 (v4)", "to 12 host ports"); where
    nothing goes, it says none went to the ports looked at."""
    looked = ((4, 5353), (4, 6000), (6, 5353))
    one = FlushResult(False, False, looked, (Doomed(OLD, FlushReason.MAPPED),), 1, 0)
    assert render.flush_summary(one) == "deleted 1 UDP conntrack entry to host port 5353 (v4)"
    many = tuple((f, p) for p in range(7000, 7012) for f in (4, 6))
    assert render.flush_summary(dataclasses.replace(one, ports=many)) == (
        "deleted 1 UDP conntrack entry to host port 5353 (v4)"
    )
    # --stale-only kept what it found there: "none to" the ports, then "kept 2", said
    # there were none and two at once.
    none = FlushResult(True, True, looked, (), 0, 2)
    assert render.flush_summary(none) == (
        "would delete 0 UDP conntrack entries: none misrouted to host ports 5353 (v4/v6),"
        " 6000 (v4); kept 2 that reach their container or the host"
    )
    assert render.flush_summary(dataclasses.replace(none, ports=many)) == (
        "would delete 0 UDP conntrack entries: none misrouted to host ports 7000-7011"
        " (v4/v6); kept 2 that reach their container or the host"
    )
    # More than 8 runs of ports (none consecutive): their count.
    scattered = tuple((f, p) for p in range(7000, 7024, 2) for f in (4, 6))
    assert render.flush_summary(dataclasses.replace(none, ports=scattered)) == (
        "would delete 0 UDP conntrack entries: none misrouted to 12 host ports;"
        " kept 2 that reach their container or the host"
    )
    # A run breaks where the families change.
    mixed = ((4, 7000), (6, 7000), (4, 7001), (6, 7001), (4, 7002), (4, 7003), (4, 7005))
    assert render.flush_summary(dataclasses.replace(none, ports=mixed, kept=0)) == (
        "would delete 0 UDP conntrack entries: none misrouted to host ports 7000-7001"
        " (v4/v6), 7002-7003 (v4), 7005 (v4)"
    )
    # Without --stale-only, nothing was found there.
    assert render.flush_summary(dataclasses.replace(none, stale_only=False, kept=0)) == (
        "would delete 0 UDP conntrack entries: none to host ports 5353 (v4/v6), 6000 (v4)"
    )


def test_dry_run_table_and_summary_fit_an_80_column_terminal(monkeypatch) -> None:
    """The audit's run: rows of 108-113 columns and a summary of 109 on a terminal of
    80. WHY is never cut: the addresses are cut in their middle (ports whole), REPLY
    FROM and DESTINATION left out, and what still does not fit of WHY goes on below
    it; the summary word-wrapped; piped, both stay whole, one line each."""
    from test_terminal import summary_on_terminal

    from portmapctl.cli.output import Output

    v6 = udp("2001:db8:4444:5555:6666:7777:8888:9999", "fd00:1111:2222:3333::1", 40012, 5353,
             "fd00:88:0:1:2:3:4:9", 53, family=6)  # fmt: skip
    result = FlushResult(
        True, True, ((4, 5353), (6, 5353)),
        (Doomed(OLD, FlushReason.OLD_DESTINATION, ("10.88.0.5",)), Doomed(NEVER, FlushReason.NOT_DNATED, ("10.88.0.5",)),
         Doomed(v6, FlushReason.OLD_DESTINATION, ("fd00:88:0:1:2:3:4:5",))),
        3, 1,
    )  # fmt: skip
    table = render.flush_table(result, width=80).plain.split("\n")
    assert all(len(line) <= 80 for line in table), table
    assert table[0].split() == ["FAM", "SOURCE", "PORTS", "WHY"]
    assert table[1].split()[:3] == ["v4", "192.0.2.7", "2->5353"]
    text = " ".join(" ".join(table).split())
    for d in result.doomed:
        assert render.flush_udp.flush_why(d) in text, table
    (v6_row,) = [line for line in table if line.startswith("v6")]
    _fam, source, ports, _why = v6_row.split(maxsplit=3)
    assert source.startswith("2001:") and source.endswith("9999") and "…" in source
    assert ports == "40012->5353" and "…" not in text.replace(source, "")
    whole = render.flush_table(result).plain
    assert "2001:db8:4444:5555:6666:7777:8888:9999" in whole and "…" not in whole
    summary = render.flush_summary(result)
    assert len(summary) > 80
    # The summary line as the command writes it: on a terminal of 80 columns, then piped.
    shown = summary_on_terminal(monkeypatch, summary)
    assert len(shown) == 2 and all(len(line) <= 80 for line in shown)
    assert " ".join(shown) == summary
    piped = io.StringIO()
    monkeypatch.setattr("sys.stdout", piped)
    Output().summary(summary)
    assert piped.getvalue() == summary + "\n"


# --- real conntrack tables ------------------------------------------------------------------


# Entries by source port. abc123 maps 5353/udp to 10.88.0.5:53 and [fd00::5]:53,
# def456 maps 127.0.0.1:6000/udp to 10.88.0.6:60.


@pytest.fixture
def node(host_ns: str) -> str:
    """Two containers mapped by the real plugin, and the entries above."""
    mappings = [{"hostPort": 5353, "containerPort": 53, "protocol": "udp"}]
    conf = rp.plugin_conf("mynet", ["10.88.0.5/16", "fd00::5/64"], mappings)
    rp.run_plugin("ADD", host_ns, "abc123", conf, check=True)
    local = [{"hostPort": 6000, "containerPort": 60, "protocol": "udp", "hostIP": "127.0.0.1"}]
    rp.run_plugin("ADD", host_ns, "def456", rp.plugin_conf("mynet", ["10.88.0.6/16"], local),
                  check=True)  # fmt: skip
    lines = [
        ct_args(src, dst, sport, dport, reply_src, reply_sport)
        for sport, (src, dst, dport, reply_src, reply_sport) in ENTRIES.items()
    ]
    ct_load(host_ns, [*lines, ct_args("192.0.2.9", "10.0.0.1", TCP_SPORT, 5353, proto="tcp")])
    assert ct_sports(host_ns) == ALL
    return host_ns


# --- real traffic: the blackhole of the seed commit, and its end ------------------------------

HOST_IP, CTR_IP = "10.99.0.1", "10.99.0.2"


# --- add: the conntrack step and route_localnet ---------------------------------------------


# --- bad input and a bad environment ----------------------------------------------------------


def test_help_shows_the_options_and_examples(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "flush-udp", "--help")
    assert code == 0
    for words in ("--port N", "--container ID", "--stale-only", "--dry-run", "Examples:"):
        assert words in out
    code, out, _ = cli(capsys, "--help")
    assert code == 0 and "flush-udp" in out


def test_a_delete_stopped_part_way_says_how_far_it_got(monkeypatch):
    """Ctrl-C or SIGTERM during the delete: the line says how many were deleted
    (Interrupted.after); "aborted" alone read as "nothing was deleted"."""
    from portmapctl.errors import Interrupted
    from portmapctl.ops import flush_udp

    doomed = [Doomed(e, FlushReason.MAPPED) for e in (CURRENT, OLD, NEVER)]

    def stopped(entries, progress, gone):
        progress(2, len(entries))
        raise Interrupted()

    monkeypatch.setattr(flush_udp.conntrack, "delete", stopped)
    seen = []
    with pytest.raises(Interrupted) as stop:
        flush_udp._delete(doomed, lambda done, total: seen.append((done, total)), [])
    assert seen == [(2, 3)]
    assert stop.value.after.startswith("2 of 3 UDP conntrack entries had been deleted")


def test_a_destination_another_tools_rule_takes_first_keeps_its_flows() -> None:
    """Another tool's `-d NODE_IP` DNAT ahead of the plugin's entry takes that address's
    flows of a port mapped on every address (no row is shadowed: it takes only some). A
    flow there DNATed to its pod is its own: --stale-only and gc deleted it as an old
    destination (review helper-149). One DNATed to a container of the plugin's (gc: a
    removed one, in `ours`) is judged as before; another address's flows too."""
    from portmapctl.iptables.foreign import table_reader
    from portmapctl.iptables.ruleset import parse_save
    from portmapctl.ops import flush_udp

    table = parse_save(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:CNI-HOSTPORT-DNAT - [0:0]\n"
        "-A PREROUTING -d 10.0.0.1/32 -p udp -m udp --dport 5353 -j DNAT"
        " --to-destination 10.244.1.7:53\n"
        "-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT\nCOMMIT\n",
        4,
    )
    theirs = udp(sport=1, dst="10.0.0.1", reply_src="10.244.1.7", reply_sport=53)
    dead = udp(sport=2, dst="10.0.0.1", reply_src="10.88.0.13", reply_sport=53)
    elsewhere = udp(sport=3, dst="10.0.0.2", reply_src="10.244.1.7", reply_sport=53)
    entries = [theirs, dead, elsewhere]
    taken = flow_owners.taken_first({4: table_reader(table)}, entries)
    assert taken == {(4, socket.inet_aton("10.0.0.1"), 5353)}
    live = [mapping("10.88.0.5")]
    ours = flush_udp.ours([(4, "10.88.0.5"), (4, "10.88.0.13")])
    doomed = flush_udp.plan(entries, {(4, 5353)}, live, stale_only=True, ours=ours, taken=taken)
    assert [d.entry for d in doomed] == [dead, elsewhere]
    # Without the rule read, the other tool's flow went too.
    before = flush_udp.plan(entries, {(4, 5353)}, live, stale_only=True, ours=ours)
    assert [d.entry for d in before] == entries


@pytest.mark.parametrize(
    ("condition", "kept"),
    [("-s 192.0.2.0/24", {1}), ("-i eth1", {1, 2}), ("-m mark --mark 0x1", {1, 2})],
)
def test_a_rule_for_some_packets_ahead_keeps_the_flows_it_may_take(
    condition: str, kept: set
) -> None:
    """Another tool's DNAT ahead of the plugin's entry with a condition the walk does not
    judge (a source range, an interface, a mark) takes some packets of the port: its
    flows (DNATed to its pod) are its own, as an nftables rule's `maybe` are. The walk
    passed such a rule by, and --stale-only, gc and add deleted them as old
    destinations (review h210). A source range is judged per flow: a flow from another
    source is the plugin's (its old destination goes); an interface or a mark cannot be
    told from the entry, and the flows are kept."""
    from portmapctl.iptables.foreign import table_reader
    from portmapctl.iptables.ruleset import parse_save
    from portmapctl.ops import flush_udp

    table = parse_save(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:CNI-HOSTPORT-DNAT - [0:0]\n"
        f"-A PREROUTING {condition} -p udp -m udp --dport 5353 -j DNAT"
        " --to-destination 10.244.1.7:53\n"
        "-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT\nCOMMIT\n",
        4,
    )
    theirs = udp(src="192.0.2.7", sport=1, dst="10.0.0.1", reply_src="10.244.1.7", reply_sport=53)
    gone = udp(src="198.51.100.7", sport=2, dst="10.0.0.1", reply_src="10.88.0.13",
               reply_sport=53)  # fmt: skip
    entries = [theirs, gone]
    taken = flow_owners.taken_first({4: table_reader(table)}, entries)
    live = [mapping("10.88.0.5")]
    ours = flush_udp.ours([(4, "10.88.0.5")])
    doomed = flush_udp.plan(entries, {(4, 5353)}, live, stale_only=True, ours=ours, taken=taken)
    assert {e.sport for e in entries} - {d.entry.sport for d in doomed} == kept
    # The rows' walk (no doubt) still says nothing takes the port: no row is shadowed.
    from portmapctl.iptables.foreign import takers

    assert takers(table_reader(table), {("udp", 5353)}) == {}


def test_a_goto_for_some_sources_ahead_keeps_the_flows_its_chain_leaves_to_the_host() -> None:
    """`-s SPEC -g CHAIN` in PREROUTING ahead of the plugin's entry: what CHAIN does not
    take of those sources' packets meets PREROUTING's policy, ACCEPT, and never reaches
    the plugin's jump (as the walk takes a goto without conditions). Walked as if its
    condition held, the goto came back from CHAIN as a jump does: a flow of those
    sources the host serves, never DNATed, was counted a blackhole and deleted by
    --stale-only. Another source's never-DNATed flow still goes."""
    from portmapctl.iptables.foreign import table_reader
    from portmapctl.iptables.ruleset import parse_save

    table = parse_save(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:CNI-HOSTPORT-DNAT - [0:0]\n:FWD - [0:0]\n"
        "-A PREROUTING -s 192.0.2.0/24 -g FWD\n"
        "-A FWD -p tcp -j DNAT --to-destination 10.244.1.7\n"
        "-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT\nCOMMIT\n",
        4,
    )
    hosts = udp(src="192.0.2.7", sport=1)  # never DNATed: the host's own service
    blackhole = udp(src="198.51.100.7", sport=2)
    entries = [hosts, blackhole]
    taken = flow_owners.taken_first({4: table_reader(table)}, entries)
    doomed = plan(entries, {(4, 5353)}, [mapping()], stale_only=True,
                  ours=ours([(4, "10.88.0.5")]), taken=taken)  # fmt: skip
    assert [d.entry for d in doomed] == [blackhole]


def test_another_nft_tables_hook_keeps_its_flows_and_doubt_keeps_them_too(monkeypatch) -> None:
    """Judging.taken asks other nftables tables' nat hooks per flow destination
    (nftables/foreign.py flows_taken): only hooks at or before the plugin's priority
    count (a later one never sees what the plugin DNATed), and where the hooks or a
    table cannot be read the flows there are kept, not judged as old destinations."""
    from types import SimpleNamespace

    from portmapctl.nftables import foreign
    from portmapctl.nftables.hooks import Hook
    from portmapctl.ops.flow_owners import Judging

    theirs = udp(sport=5, reply_src="10.77.0.7", reply_sport=53)
    node = SimpleNamespace(nft=SimpleNamespace(binary=lambda: "/nonexistent/nft"))
    # (Owners.hook_ports: the rows' walk found a hook that may take some of 5353.)
    judging = Judging([mapping()], {}, {}, node, frozenset({(4, 5353)}))

    def stale(entries: list) -> list:
        taken = judging.taken(entries)
        return plan(entries, {(4, 5353)}, [mapping()], stale_only=True,
                    ours=ours([(4, "10.88.0.5")]), taken=taken)  # fmt: skip

    later = [Hook("inet", "firewalld", "nat_PREROUTING", -90)]
    monkeypatch.setattr(foreign, "live_hooks", lambda _node: later)
    assert [d.entry for d in stale([CURRENT, theirs])] == [theirs]
    # An earlier hook whose table nft cannot list: its destination's flows are kept,
    # but a flow DNATed to the plugin's own container is still judged.
    earlier = [Hook("ip", "otherfw", "pre", -150)]
    monkeypatch.setattr(foreign, "live_hooks", lambda _node: earlier)
    assert judging.taken([theirs]) == {(4, socket.inet_aton("10.0.0.1"), 5353)}
    assert stale([CURRENT, theirs]) == []

    def unlistable(_node: object) -> list:
        raise OSError("the nftables chains kept changing while they were listed")

    monkeypatch.setattr(foreign, "live_hooks", unlistable)
    assert stale([CURRENT, theirs]) == []
    # Only the ports the rows' walk named are asked again: no other port pays for it.
    judging = dataclasses.replace(judging, hook_ports=frozenset({(4, 6000)}))
    assert [d.entry for d in stale([CURRENT, theirs])] == [theirs]
    judging = dataclasses.replace(judging, hook_ports=None)  # the rows' walk failed
    assert stale([CURRENT, theirs]) == []
    # No hook at all (the usual node): nothing is run, nothing kept by it.
    monkeypatch.setattr(foreign, "live_hooks", lambda _node: [])
    assert [d.entry for d in stale([CURRENT, theirs])] == [theirs]


def test_gc_reads_other_tables_only_for_flows_of_a_port_left_mapped(monkeypatch) -> None:
    """Review h211 of 268fc7e: gc's flush of a removal that freed 6000/udp and left
    7000/udp mapped judged by other tables (gc/udp.py elsewhere: the other iptables
    flavour's table, other nftables tables' hooks, a listing of kube-proxy's table)
    whenever any flow was there, a freed port's flow too; only the flows of a port
    left mapped are judged by them (and only to the node's own addresses)."""
    import ipaddress

    from portmapctl.host import addresses, conntrack
    from portmapctl.iptables.transaction import Transaction
    from portmapctl.ops.gc import udp as gc_udp
    from portmapctl.ops.gc.family import FamilyPlan

    asked: list = []

    def elsewhere(_node: object, _plan: object) -> object:
        class Judged:
            def taken(self, entries: list, local: object = None) -> set:
                asked.append(list(entries))
                return set()

        return Judged()

    flows = [udp(sport=1, dport=6000, reply_src="10.88.0.9", reply_sport=60)]
    monkeypatch.setattr(gc_udp, "elsewhere", elsewhere)
    monkeypatch.setattr(conntrack, "list_udp", lambda families, ports: list(flows))
    monkeypatch.setattr(conntrack, "delete", lambda entries: len(entries))
    here = addresses.from_networks([ipaddress.ip_network("10.0.0.1/32")])
    monkeypatch.setattr(addresses, "local_addresses", lambda families: here)
    plan = FamilyPlan(4, (), (), 0, (), (6000,), {}, Transaction(4), (7000,),
                      (mapping(host_port=7000),), frozenset({7000}),
                      frozenset({"10.88.0.9"}))  # fmt: skip
    assert gc_udp.flush_udp_after([plan], object()) == (1, ())
    assert asked == []
    flows.append(udp(sport=2, dport=7000, reply_src="10.77.0.7", reply_sport=70))
    flows.append(udp(sport=3, dst="10.9.9.9", dport=7000, reply_src="10.77.0.7"))
    gc_udp.flush_udp_after([plan], object())
    assert [[e.sport for e in entries] for entries in asked] == [[2]]


def test_a_taken_merged_after_it_was_asked_judges_the_new_sources_too() -> None:
    """Taken.holds parses a destination's `-s` SPECs once; a merge of more SPECs for it
    afterwards (another table's walk) counts: the parsed ones were kept, and a flow
    from the merged source judged the plugin's (deleted as an old destination)."""
    destination = (4, socket.inet_aton("10.0.0.1"), 5353)
    first = flow_owners.Taken()
    first.by_source[destination] = {"192.0.2.0/24"}
    later = flow_owners.Taken()
    later.by_source[destination] = {"198.51.100.0/24"}
    there = udp(src="198.51.100.7", dst="10.0.0.1")
    assert not first.holds(destination, there)
    assert first.merge(later).holds(destination, there)
    assert first.holds(destination, udp(src="192.0.2.9", dst="10.0.0.1"))
    assert not first.holds(destination, udp(src="203.0.113.1", dst="10.0.0.1"))


def test_a_flow_to_a_removed_containers_address_given_to_another_is_misdirected(tmp_path):
    """host-local gave a removed container's address to a new one (it hands them out
    in order): the old flows DNATed there reach one that does not serve them. Judged by
    the holder's cached config: one mapping that port on another protocol, or none at
    all, sends no such flow there (misdirected: --stale-only deletes it, `unmapped`);
    one whose config sends it there, or a holder with no cache entry (being added),
    keeps it; and so does a destination another tool's rule takes (that tool may DNAT
    there itself)."""
    import ipaddress

    from portmapctl.cni.leases import LeasedNetwork
    from portmapctl.core.mapping import MappingConfig, PortMapping
    from portmapctl.host.conntrack import packed

    def config(cid: str, address: str, *ports: PortMapping) -> MappingConfig:
        return MappingConfig("podman", cid, (ipaddress.ip_interface(address),), ports)

    net = tmp_path / "podman"
    net.mkdir()
    for address, holder in (("6", "new"), ("7", "bare"), ("8", "served"), ("9", "adding")):
        (net / f"10.88.0.{address}").write_text(f"{holder}\r\neth0")
    tenants = {
        "new": (config("new", "10.88.0.6/16", PortMapping(7100, 7100, "tcp", "10.0.0.1")),),
        "bare": (None,),
        "served": (config("served", "10.88.0.8/16", PortMapping(7100, 7100, "udp", "10.0.0.1")),),
    }
    leased = (LeasedNetwork(ipaddress.ip_network("10.88.0.0/16"), str(net), tenants),)
    on_lo = mapping("10.88.0.5", host_port=7100, host_ip="127.0.0.1", container_port=7100)
    flows = {n: udp(sport=n, dport=7100, reply_src=f"10.88.0.{n}", reply_sport=7100)
             for n in (6, 7, 8, 9)}  # fmt: skip
    judging = flow_owners.Judging([on_lo], {}, networks=leased)
    local = flow_owners.local_addresses()
    astray = judging.misdirected(flows.values(), ours([(4, "10.88.0.5")]), local)
    assert astray == {flows[6], flows[7]}
    # Another port of the holder's own mapping is not where it sends this one.
    other = udp(sport=10, dport=7100, reply_src="10.88.0.8", reply_sport=53)
    assert judging.misdirected([other], set(), local) == {other}
    common = dict(stale_only=True, ours=ours([(4, "10.88.0.5")]), misdirected=astray)
    assert plan(flows.values(), {(4, 7100)}, [on_lo], **common) == [
        Doomed(flows[n], FlushReason.UNMAPPED, mapped_on=("127.0.0.1",)) for n in (6, 7)
    ]
    taken = {(4, packed(4, "10.0.0.1"), 7100)}
    assert plan(flows.values(), {(4, 7100)}, [on_lo], taken=taken, **common) == []


# /proc/net/ip_vs as ip_vs_ctl.c's ip_vs_info_seq_show prints it (IPv4 as hex words,
# IPv6 as %pI6 in brackets, ports in hex): kube-proxy's ClusterIP 10.96.0.10:53/udp to
# two pods, its TCP twin, a NodePort on 192.0.2.10:30053/udp, a firewall-mark service
# and an IPv6 ClusterIP.
IP_VS = """\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port Forward Weight ActiveConn InActConn
UDP  0A60000A:0035 rr
  -> 0A580005:0035      Masq    1      0          0
  -> 0AF40107:0035      Masq    1      0          0
TCP  0A60000A:0035 rr
  -> 0A580009:0035      Masq    1      0          0
UDP  C000020A:7565 rr persistent 10800 FFFFFFFF
  -> 0AF40107:0035      Masq    1      0          0
FWM  00000010 rr
  -> 0A58000B:0035      Masq    1      0          0
UDP  [fd00:0000:0000:0000:0000:0000:0000:000a]:0035 rr
  -> [fd00:0000:0000:0000:0000:0000:0000:0005]:0035      Masq    1      0          0
"""


def test_flows_ipvs_sends_are_another_tools_where_no_mapping_takes_them_first():
    """kube-proxy's IPVS mode DNATs with no nat rule (its service addresses on
    kube-ipvs0, its virtual services in /proc/net/ip_vs): a flow to one is IPVS's, kept
    by --stale-only and counted apart, where no mapping takes its destination whole
    (the plugin's DNAT, in nat PREROUTING, comes before IPVS's LOCAL_IN). One IPVS sent
    to a container of the plugin's is kept where that container is a real server of
    the service, and judged as before where it is not."""
    from portmapctl.host.conntrack import packed
    from portmapctl.host.ipvs import Ipvs, udp_services

    def at(family: int, address: str, port: int) -> tuple:
        return (family, packed(family, address), port)

    services = udp_services(IP_VS)
    assert services == {
        at(4, "10.96.0.10", 53): {(packed(4, "10.88.0.5"), 53), (packed(4, "10.244.1.7"), 53)},
        at(4, "192.0.2.10", 30053): {(packed(4, "10.244.1.7"), 53)},
        at(6, "fd00::a", 53): {(packed(6, "fd00::5"), 53)},
    }
    ipvs = Ipvs(frozenset({(4, packed(4, "10.96.0.11"))}), services)
    on_node = mapping("10.88.0.5", host_port=53, host_ip="192.0.2.10", container_port=53)
    flows = {
        1: udp(sport=1, dst="10.96.0.11", dport=7100, reply_src="10.77.0.3", reply_sport=7100),
        2: udp(sport=2, dst="10.96.0.10", dport=53, reply_src="10.244.1.7", reply_sport=53),
        3: udp(sport=3, dst="10.96.0.10", dport=53, reply_src="10.88.0.5", reply_sport=53),
        4: udp(sport=4, dst="10.96.0.10", dport=53, reply_src="10.88.0.5", reply_sport=54),
        5: udp(sport=5, dst="192.0.2.10", dport=53, reply_src="10.244.1.7", reply_sport=53),
        6: udp(sport=6, dst="10.96.0.12", dport=53, reply_src="10.244.1.7", reply_sport=53),
    }
    taken = flow_owners.ipvs_taken(ipvs, [on_node], flows.values())
    assert set(taken) == {at(4, "10.96.0.11", 7100), at(4, "10.96.0.10", 53)}
    mine = ours([(4, "10.88.0.5")])
    common = dict(stale_only=True, ours=mine, taken=taken)
    doomed = plan(flows.values(), {(4, 53), (4, 7100)}, [on_node], **common)
    # 1-3 IPVS's (3: to a real server of the service, a container of the plugin's);
    # 4 went to that container on a port the service does not send to; 5 is on the
    # mapping's own address; 6 is to no address of IPVS's (nor mapped: another tool's).
    assert [(d.entry.sport, d.reason) for d in doomed] == [
        (4, FlushReason.UNMAPPED), (5, FlushReason.OLD_DESTINATION)
    ]  # fmt: skip
    assert not flow_owners.ipvs_taken(Ipvs(), [on_node], flows.values())
    # A mapping on every address takes 10.96.0.10:53 before IPVS sees it: its flows
    # are judged as the mapping's.
    everywhere = mapping("10.88.0.5", host_port=53, container_port=53)
    assert set(flow_owners.ipvs_taken(ipvs, [everywhere], flows.values())) == {
        at(4, "10.96.0.11", 7100)
    }
