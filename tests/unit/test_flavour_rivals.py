"""The plugin's own chains in the other iptables flavour that map add's host ports to
another container (a split-brain node): ops/flavour_guard.plugin_rows reads them from
that flavour's nat table, as a saved table or as `iptables -S` listings, and
core/contest.flavour_rivals pairs them with add's rows. On the real plugin's state
(Debian 1.1.1's `shadowed` fixture: ctr-a and, shadowed by it, ctr-b on tcp/8080)."""

from __future__ import annotations

from dataclasses import replace
from typing import List, Optional

import fixtures_lib

from portmapctl.core.contest import flavour_rivals
from portmapctl.core.mapping import Mapping
from portmapctl.core.status import ProblemKind, Status
from portmapctl.errors import HostProblem
from portmapctl.iptables.foreign import listing_reader, table_reader
from portmapctl.ops.check.crossed import flavour_rival_problems
from portmapctl.ops.flavour_guard import plugin_rows
from portmapctl.ops.owners import Owners, node_rows, plugin_rivals


def _listing(chain: str) -> Optional[str]:
    """`iptables -t nat -S CHAIN` of the fixture, as iptables prints it."""
    lines = fixtures_lib.save_text("shadowed", 4).splitlines()
    if f":{chain} - [0:0]" not in lines:
        return None
    return "\n".join([f"-N {chain}", *(line for line in lines if line.startswith(f"-A {chain} "))])


def _theirs(ports=(8080,)) -> List[Mapping]:
    return plugin_rows(table_reader(fixtures_lib.table("shadowed", 4)), 4, ports)


def _mine(container_id: str = "new1", port: int = 8080, host_ip=None) -> Mapping:
    return Mapping("mynet", container_id, 4, "tcp", host_ip, port, "10.88.0.9", 80, True,
                   "CNI-DN-0", (Status.OK,), None, ())  # fmt: skip


def test_the_other_flavours_winner_on_the_port_is_the_rival() -> None:
    """A new container on tcp/8080 meets ctr-a, which takes the port in that table;
    ctr-b, shadowed by ctr-a there, takes nothing and is no rival."""
    found = flavour_rivals([_mine()], _theirs())
    assert [(o.network, o.container_id, o.host_port) for o in found[_mine()]] == [
        ("mynet", "ctr-a", 8080)
    ]


def test_a_listing_reader_finds_the_same_rows_as_the_saved_table() -> None:
    """iptables-nft as the other flavour is listed chain by chain (one-token lines)."""
    listed = plugin_rows(listing_reader(_listing), 4, (8080,))
    assert listed == _theirs()
    assert {r.container_id for r in listed} == {"ctr-a", "ctr-b"}


def test_other_ports_protocols_addresses_and_the_container_itself_are_no_rivals() -> None:
    assert _theirs(ports=(8081,)) == []  # no entry rule names the port: no chain read
    theirs = _theirs()
    assert not flavour_rivals([_mine(port=8081)], theirs)
    assert not flavour_rivals([replace(_mine(), protocol="udp")], theirs)
    assert not flavour_rivals([replace(_mine(), family=6)], theirs)
    # The container's own copy there (its split brain: check's) DNATs to it alike.
    assert not flavour_rivals([_mine("ctr-a")], [r for r in theirs if r.container_id == "ctr-a"])
    # A host IP overlaps a row on every address.
    assert flavour_rivals([_mine(host_ip="192.0.2.1")], theirs)
    on_one = [replace(r, host_ip="192.0.2.2") for r in theirs]
    assert not flavour_rivals([_mine(host_ip="192.0.2.1")], on_one)


def test_rows_that_take_nothing_contest_nothing() -> None:
    theirs = _theirs()
    for status in (Status.DEAD, Status.ORPHAN, Status.SHADOWED):
        assert not flavour_rivals([_mine()], [replace(r, status=(status,)) for r in theirs])
    assert not flavour_rivals([_mine()], [replace(r, conditions=("-i eth0",)) for r in theirs])
    assert not flavour_rivals([replace(_mine(), conditions=("-i eth0",))], theirs)


def test_list_and_check_mark_the_rows_the_other_flavours_plugin_chain_contests() -> None:
    """list's rows (ops/owners.node_rows) and check's problems (crossed.py) on a node
    whose other flavour holds the fixture: the row on 8080 is contested, naming ctr-a;
    the one on 8081 stays ok; a row shadowed by another nftables table's hook contests
    nothing."""
    mine = [_mine(), _mine("new2", 8081)]
    other = ({4: "legacy"}, {4: table_reader(fixtures_lib.table("shadowed", 4))})
    owners = Owners(rivals=plugin_rivals(other, mine, {}), rival_flavours={4: "legacy"})
    rows = node_rows(mine, (), owners)
    assert [(r.host_port, r.status) for r in rows] == [
        (8080, (Status.CONTESTED,)),
        (8081, (Status.OK,)),
    ]
    problems = flavour_rival_problems(None, None, owners)
    assert [(p.kind, p.container_id, p.chain) for p in problems] == [
        (ProblemKind.CONTESTED.value, "new1", "CNI-DN-0")
    ]
    assert problems[0].detail.startswith(
        "tcp/8080 is also mapped in iptables-legacy to mynet/ctr-a"
    )
    hooked = {mine[0]: (Status.SHADOWED, "a rule")}
    assert plugin_rivals(other, mine, hooked) == {}


def test_a_failure_to_read_the_other_flavour_contests_nothing() -> None:
    """A reader that fails (iptables-nft -S that errs) is a -v detail, never list's or
    check's failure: no rivals."""

    def failing(chain: str) -> Optional[str]:
        raise HostProblem("iptables-nft -S failed")

    assert plugin_rivals(({4: "nft"}, {4: listing_reader(failing)}), [_mine()], {}) == {}
    assert plugin_rivals(None, [_mine()], {}) == {}
