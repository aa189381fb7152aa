"""Other nftables tables' nat prerouting hooks (nftables/foreign.py) and how a row is
judged against them (core/contest.hooked), on real `nft -j list table` and `nft -a
list table` output (tests/fixtures/nft_foreign: a hand-written `table ip nat` at
dstnat - 10, an `inet fw` at dstnat, and firewalld's default nat chains at dstnat + 10,
as nft 1.0.6 lists them)."""

from __future__ import annotations

import errno
from dataclasses import replace
from pathlib import Path
from typing import List

import nftcases
import pytest

from portmapctl.core.contest import hook_marked, hooked
from portmapctl.core.status import Status
from portmapctl.host import netlink as nl
from portmapctl.nftables import foreign
from portmapctl.nftables import hooks as nft_hooks
from portmapctl.nftables import inventory as nft_inventory

FIXTURES = Path(__file__).parents[2] / "fixtures" / "nft_foreign"
WANTED = frozenset(
    {
        ("tcp", 8080),
        ("tcp", 7150),
        ("tcp", 9090),
        ("udp", 5353),
        ("udp", 53),
        ("tcp", 8081),
        ("tcp", 22),
    }  # fmt: skip
)
FIB_DNAT = "fib daddr type local tcp dport 8080 dnat to 10.0.0.9:80"


def _table(name: str):
    return (FIXTURES / f"{name}.json").read_text(), (FIXTURES / f"{name}.txt").read_text()


def test_plain_port_matches_with_dnat_redirect_take_their_ports() -> None:
    """fib daddr type local (the plugin's own entry condition), a set with a range, a
    counter, a jump into a chain: taken, named as `nft list` prints the rule; `ip saddr
    10.0.0.0/8 ... dport 9090` takes only some packets: nothing; `udp dport 5353
    accept` nothing at all (tests/interop/test_foreign_verdicts_traffic.py)."""
    listing, text = _table("ip-nat")
    assert foreign.takers(listing, text, "prerouting", WANTED) == {
        ("tcp", 8080): FIB_DNAT,
        ("tcp", 7150): "tcp dport { 7000, 7100-7200 } counter packets 0 bytes 0 redirect to :3128",
        ("udp", 53): 'udp dport 53 dnat to 10.0.0.1 comment "dns"',
    }


def test_accept_leaves_its_table_and_drop_takes_the_port() -> None:
    """An accept (a rule, a vmap element) ends only its own table: the kernel calls the
    plugin's nat chain next, and no later rule of the table (udp/5353's dnat, 8082's)
    sees the packet; a drop ends the packet. An accept for some packets (9090, from
    10.0.0.0/8) lets those through: the redirect after it takes the rest, maybe."""
    listing, text = _table("ip-verdicts")
    wanted = frozenset({("udp", 5353), ("tcp", 8081), ("tcp", 8082), ("tcp", 8083),
                        ("tcp", 9090)})  # fmt: skip
    assert foreign._walked(listing, text, "prerouting", wanted, "verdicts", 4, None) == (
        {
            ("tcp", 8081): "tcp dport 8081 drop",
            ("tcp", 8083): "tcp dport vmap { 8082 : accept, 8083 : drop } (8083 : drop)",
        },
        {("tcp", 9090): "tcp dport 9090 redirect to :3128"},
    )


def test_a_base_chains_policy_drop_takes_what_falls_off_it() -> None:
    """`policy drop` on another table's nat chain (nft allows it; iptables' nat does
    not): what no rule takes or accepts meets it and is dropped (the kernel's
    nf_nat_inet_fn returns NF_DROP), 8081 too, which no rule names; what an accept lets
    out (22) reaches the plugin's chain; 9090's accept from 10.0.0.0/8 only: maybe."""
    listing, text = _table("ip-policy-drop")
    wanted = frozenset({("tcp", 22), ("tcp", 8080), ("tcp", 8081), ("tcp", 9090)})
    assert foreign._walked(listing, text, "pre", wanted, "fw", 4, None) == (
        {("tcp", 8080): "tcp dport 8080 dnat to 10.0.0.9:80", ("tcp", 8081): "pre: policy drop"},
        {("tcp", 9090): "pre: policy drop"},
    )


def test_firewalld_default_nat_chains_take_nothing() -> None:
    """firewalld's nat_PREROUTING (iifname goto, empty zone chains): nothing, whatever
    the port; and its hook runs at dstnat + 10, after the plugin's."""
    listing, text = _table("inet-firewalld")
    assert foreign.takers(listing, text, "nat_PREROUTING", WANTED) == {}


def _run(args: List[str]) -> str:
    name = f"{args[-2]}-{args[-1]}"
    listing, text = _table(name)
    return listing if args[0] == "-j" else text


def test_the_earliest_hook_wins_a_port_and_inet_sees_both_families() -> None:
    hooks = [
        nft_hooks.Hook("inet", "fw", "pre", -100),
        nft_hooks.Hook("ip", "nat", "prerouting", -110),
        nft_hooks.Hook("inet", "firewalld", "nat_PREROUTING", -90),
    ]
    taken = foreign.read_takers(hooks, {4: WANTED, 6: WANTED}, _run).taken
    assert taken[(4, "tcp", 8080)] == (-110, FIB_DNAT)
    assert taken[(4, "tcp", 8081)] == (-100, "tcp dport 8081 dnat ip to 10.0.0.9:80")
    assert (6, "tcp", 8080) not in taken  # table ip nat sees IPv4 only
    assert (6, "tcp", 8081) not in taken  # `dnat ip to`: IPv4 packets only
    assert (4, "tcp", 22) not in taken


def test_a_row_is_shadowed_before_its_own_hook_contested_at_it_and_left_after() -> None:
    """v191-shadowed's ctr-a (tcp/8080, ok) against a hook at -110, -100, -90; ctr-b,
    shadowed within nftables already, takes nothing and is judged by nothing."""
    rows = list(nft_inventory.build(nftcases.live("v191-shadowed"), problems=False).mappings)
    ctr_a = next(r for r in rows if r.container_id == "ctr-a")
    for priority, expected in ((-110, Status.SHADOWED), (-100, Status.CONTESTED), (-90, None)):
        found = hooked(rows, {(4, "tcp", 8080): (priority, FIB_DNAT)}, lambda _row: -100)
        assert found == ({ctr_a: (expected, FIB_DNAT)} if expected else {}), priority
    marked = hook_marked(rows, {ctr_a: (Status.SHADOWED, FIB_DNAT)})
    assert [(r.container_id, r.status, r.shadowed_by) for r in marked] == [
        ("ctr-a", (Status.SHADOWED,), FIB_DNAT),
        *((r.container_id, r.status, r.shadowed_by) for r in rows if r is not ctr_a),
    ]
    conditional = replace(ctr_a, conditions=('iifname != "lo"',))
    assert hooked([conditional], {(4, "tcp", 8080): (-110, FIB_DNAT)}, lambda _row: -100) == {}


def test_kube_proxy_nftables_nodeports_take_their_ports() -> None:
    """kube-proxy's nftables mode: nat-prerouting -> services -> `fib daddr type local
    ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports`: a
    NodePort's element (goto external-...) takes its port without looking inside; the
    ClusterIP vmap (keyed by address) takes nothing, nor a port with no element."""
    listing, text = _table("ip-kube-proxy")
    rule = (
        "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap"
        " @service-nodeports"
    )
    wanted = frozenset({("tcp", 30080), ("udp", 30053), ("tcp", 80), ("tcp", 30081)})
    assert foreign.takers(listing, text, "nat-prerouting", wanted, "kube-proxy") == {
        ("tcp", 30080): f"{rule} (tcp . 30080 : goto external-4GDCUZ2U-ns/svc/tcp/http)",
        ("udp", 30053): f"{rule} (udp . 30053 : goto external-ABCDEFGH-ns/dns/udp/dns)",
    }
    # Another table's chain of that name is walked: its rules mark, and take nothing.
    assert foreign.takers(listing, text, "nat-prerouting", wanted, "not-kube-proxy") == {}


def test_a_tables_words_are_listed_only_when_a_rule_is_reported() -> None:
    """`nft -a list table` (the rules' words) costs as much as the JSON listing on a
    big table (kube-proxy's of 5,000 services: 1.2 s each, docs/performance.md); it
    was run for every table walked. Now only when a rule that takes (or may take) an
    asked port is reported: a NodePort's element taking another port asks nothing."""
    asked: List[List[str]] = []

    def run(args: List[str]) -> str:
        asked.append(args)
        return _run(args)

    hooks = [nft_hooks.Hook("ip", "kube-proxy", "nat-prerouting", -100)]
    assert foreign.read_takers(hooks, {4: frozenset({("tcp", 8080)})}, run).taken == {}
    assert [a[0] for a in asked] == ["-j"]
    found = foreign.read_takers(hooks, {4: frozenset({("udp", 30053)})}, run).taken
    assert found[(4, "udp", 30053)][1].endswith(
        "(udp . 30053 : goto external-ABCDEFGH-ns/dns/udp/dns)"
    )
    assert [a[0] for a in asked] == ["-j", "-j", "-a"]


def test_an_inet_tables_family_specific_dnat_takes_that_family_only() -> None:
    """`dnat ip to` in an inet table leaves IPv6 packets alone (the kernel's inet nat
    acts only on its own family), as does a rule under `meta nfproto ipv4`."""
    listing, text = _table("inet-fw")
    rule = "tcp dport 8081 dnat ip to 10.0.0.9:80"
    assert foreign.takers(listing, text, "pre", WANTED, "fw", 4) == {("tcp", 8081): rule}
    assert foreign.takers(listing, text, "pre", WANTED, "fw", 6) == {}
    nfproto = listing.replace(
        '"expr": [',
        '"expr": [{"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv4"}}, ',
    )
    assert foreign.takers(nfproto, text, "pre", WANTED, "fw", 4) == {("tcp", 8081): rule}
    assert foreign.takers(nfproto, text, "pre", WANTED, "fw", 6) == {}


class _Dump:
    """A netfilter netlink socket whose GETCHAIN dump is one NLMSG_DONE, flagged as
    torn (NLM_F_DUMP_INTR: the ruleset changed while it ran) or not."""

    def __init__(self, torn: bool) -> None:
        flags = 0x10 if torn else 0  # NLM_F_DUMP_INTR
        self.answer = nl.HEADER.pack(20, nl.NLMSG_DONE, flags, 5, 0) + nl.ERRNO.pack(0)

    def __enter__(self) -> _Dump:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def send(self, data: bytes) -> int:
        return len(data)

    def recv(self, size: int) -> bytes:
        return self.answer


class _LiveNode:
    def namespace_view(self) -> object:
        return object()


def test_a_torn_hook_dump_is_asked_again_and_one_that_stays_torn_is_said(monkeypatch) -> None:
    """A chain dump the ruleset changed under may miss the very chain that takes a
    port: it was read as complete (the flag was not looked at). It is asked again; one
    that stays torn is an error (list and check then say they cannot tell), and a kernel
    without nf_tables has no other table to read (no error)."""
    from portmapctl.iptables.access import nfgen

    dumps: List[_Dump] = []

    def opened(*torn: bool):
        dumps[:] = [_Dump(t) for t in torn]
        return lambda: dumps.pop(0)

    monkeypatch.setattr(nfgen, "open_socket", opened(True, True, False))
    assert nft_hooks.live_hooks(_LiveNode()) == [] and dumps == []
    monkeypatch.setattr(nfgen, "open_socket", opened(True, True, True, False))
    with pytest.raises(OSError, match="kept changing"):
        nft_hooks.live_hooks(_LiveNode())
    monkeypatch.setattr(nfgen, "open_socket", opened(True, True, True))
    hooked = foreign.node_hooked(_LiveNode(), [object()], None)
    assert hooked.taken == {} and len(hooked.unread) == 1

    def no_nftables() -> None:
        raise OSError(errno.EPROTONOSUPPORT, "Protocol not supported")

    monkeypatch.setattr(nfgen, "open_socket", no_nftables)
    assert nft_hooks.live_hooks(_LiveNode()) == []


DADDR_PORTS = frozenset(("tcp", p) for p in range(8080, 8086))


def _daddr_walk(family: int, dest):
    listing, text = _table("inet-daddr")
    found, maybe = foreign._walked(listing, text, "pre", DADDR_PORTS, "nv", family, dest)
    return sorted(port for _, port in found), sorted(port for _, port in maybe)


@pytest.mark.parametrize(
    ("family", "dest", "taken", "unsure"),
    [
        # A mapping on every address: a loopback destination is none of its packets,
        # `!= ::1` all of them; other addresses only some.
        (4, None, [], [8080, 8081, 8082, 8085]),
        (6, None, [8084], []),
        # A mapping on one host IP: each `ip daddr` holds for all its packets or none.
        (4, "192.168.5.5", [8080, 8082], [8085]),
        (4, "192.168.6.9", [8081, 8082], [8085]),
        (4, "192.168.7.7", [], [8085]),
        (6, "fd00::5", [8084], []),
        # An output walk's loopback destination.
        (4, "127.0.0.1", [8082, 8083], [8085]),
        (6, "::1", [], []),
    ],
)
def test_ip_daddr_is_judged_for_the_host_ip_walked(family, dest, taken, unsure) -> None:
    """`ip daddr ADDRESS|PREFIX` and `!=` (nft 1.0.6's listing of an inet table) hold
    for all or none of a mapping's packets on one host IP; an `ip daddr` match never
    holds for an IPv6 packet (nor `ip6 daddr` for IPv4); an address set is not judged."""
    assert _daddr_walk(family, dest) == (taken, unsure)


def test_flows_taken_lists_no_rules_words(monkeypatch) -> None:
    """Review h211 of 268fc7e: flows_taken (the per-flow-destination walk) uses only which
    ports are taken, never the rules' words; _walked's str() of every reported rule made
    it list the table a second time as text (`nft -a list table`: as costly as the JSON
    listing on kube-proxy's table) whenever a rule took a flow's port."""
    from types import SimpleNamespace

    from portmapctl.nftables.access import nft as nft_access

    asked: List[List[str]] = []

    def run_nft(_binary: str):
        def run(args: List[str]) -> str:
            asked.append(args)
            return _run(args)

        return run

    hook = nft_hooks.Hook("ip", "nat", "prerouting", -110)
    monkeypatch.setattr(foreign, "live_hooks", lambda _node: [hook])
    monkeypatch.setattr(nft_access, "run_nft", run_nft)
    node = SimpleNamespace(nft=SimpleNamespace(binary=lambda: "/nonexistent/nft"))
    wanted = {(4, "10.0.0.1", False): {("udp", 53)},
              (4, "10.0.0.2", False): {("udp", 53), ("udp", 9)}}  # fmt: skip
    assert foreign.flows_taken(node, wanted) == {(4, "10.0.0.1", 53), (4, "10.0.0.2", 53)}
    assert [a[0] for a in asked] == ["-j"]
