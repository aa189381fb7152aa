"""Which plugin version's layout a node's `cni_hostport` tables are in.

The plugin's nftables backend has written two layouts (upstream/FACTS.md):

- v1.6/v1.7: no `hostports_all`; prerouting and output jump to `hostip_hostports` and
  to `hostports` (prerouting without `fib daddr type local`, so it DNATs traffic the
  node routes to other hosts too); host-IP mappings go to `hostip_hostports`, and
  v1.7.1's CHECK counts them there.
- v1.9: prerouting and output hold one rule, `[conditions] fib daddr type local jump
  hostports_all`, and `hostports_all` jumps to `hostip_hostports`, then `hostports`;
  every mapping goes to `hostports`, and v1.9.1's CHECK counts that chain alone.

A node can hold both: an upgrade leaves v1.7.1's host-IP rules in `hostip_hostports`
(still reached, but failing v1.9.1's CHECK), and an older ADD run after v1.9's (two
runtimes, a downgrade) writes its entry over v1.9's. Which layout a table is in
(`layout`), whether v1.9 has run on the node (`upgraded`), where each container's own
plugin put its host-IP rules (`own_layouts`), and what is out of place for the version
that judges the node (`downgraded`, `misplaced`, `took_routed`) decide where check
--repair and add put a rule and what check reports: a rule in the chain the node's
CHECK does not count fails it, though it forwards. Pure: no I/O; the planner
(nftables/planner.py) plans from these judgements.
"""

from __future__ import annotations

from enum import Enum
from typing import Collection, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from portmapctl.nftables.ruleset import (
    HOSTIP_HOSTPORTS,
    HOSTPORTS,
    HOSTPORTS_ALL,
    OUTPUT,
    PREROUTING,
    Action,
    ActionKind,
    Rule,
    RuleBody,
    Ruleset,
    Table,
    chain_bodies,
)
from portmapctl.nftables.wanted import FIB_LOCAL, HOSTPORTS_ALL_RULES, WantedFamily


def entry_ok(table: Optional[Table], chain: str) -> bool:
    """Does base chain `chain` send local traffic to the container rules?"""
    return _entry_layout(table, chain) is not None


class Layout(str, Enum):
    """The shape of a table's entry, by the plugin versions that write it."""

    # v1.9: a rule ending `fib daddr type local jump hostports_all` (conditions before
    # it are the node's, last writer wins, so any are fine).
    V19 = "v1.9"
    # v1.6/v1.7: jumps to both hostip_hostports and hostports, no hostports_all; host-IP
    # rules in hostip_hostports.
    V16 = "v1.6"


def _entry_layout(table: Optional[Table], chain: str) -> Optional[Layout]:
    """The layout of base chain `chain`'s working entry, or None when it has none."""
    targets = set()
    for body in chain_bodies(table, chain):
        if body.action.kind is not ActionKind.JUMP:
            continue
        if body.action.target == HOSTPORTS_ALL and body.matches[-1:] == (FIB_LOCAL,):
            return Layout.V19
        targets.add(body.action.target)
    return Layout.V16 if {HOSTIP_HOSTPORTS, HOSTPORTS} <= targets else None


def layout(live: Ruleset, family: int, lone: Collection[int] = ()) -> Layout:
    """The layout the plugin keeps in `family`'s table, told from the node: the
    hostports_all chain, which every v1.9 ADD creates and no v1.6/v1.7 ADD does (a
    v1.6/v1.7 entry beside it is an older plugin's ADD run after v1.9's: `downgraded`);
    else a working entry (prerouting's first); with none left, a host-IP rule in
    hostports, where only v1.9 puts one. A family without its table follows the other
    family's (one ADD wrote both), unless `family` is in `lone` (lone_families): a
    container of this family alone was added by a plugin the other table never met
    (v1.9.1 after an upgrade, say). What tells nothing (no table at all, or only such a
    v1.6/v1.7 one) gets the current plugin's layout (v1.9): its entry DNATs only what
    is addressed to the node, where v1.6/v1.7's takes routed traffic too."""
    table = live.table(family)
    if table is None:
        table = live.table(6 if family == 4 else 4)
        if table is not None and family in lone and HOSTPORTS_ALL not in table.chains:
            return Layout.V19
    if table is None or HOSTPORTS_ALL in table.chains:
        return Layout.V19
    for chain in (PREROUTING, OUTPUT):
        found = _entry_layout(table, chain)
        if found is not None:
            return found
    if any(map(_host_ip_rule, chain_bodies(table, HOSTPORTS))):
        return Layout.V19
    return Layout.V16


def downgraded(table: Optional[Table], chain: str = PREROUTING) -> bool:
    """Whether base chain `chain` holds v1.6/v1.7's entry in a table v1.9 made (its
    hostports_all chain): a v1.6/v1.7 ADD ran after v1.9's (two runtimes, a downgrade)
    and flushed and rewrote prerouting and output. In prerouting that entry has no
    `fib daddr type local`: packets routed through the node to any other host on a
    mapped port are DNATed to the container as well (v1.9.0 made it local only), the
    v1.9 containers' mappings included."""
    return (
        table is not None
        and HOSTPORTS_ALL in table.chains
        and _entry_layout(table, chain) is Layout.V16
    )


def took_routed(live: Ruleset, family: int) -> bool:
    """Whether `family`'s table as read sends packets the node routes to other hosts,
    on a mapped port, to containers too: v1.6/v1.7's entry in prerouting (no `fib daddr
    type local`), or, prerouting's lost, in output (a downgraded table's too), or a
    v1.6/v1.7 table that lost both (the flows it DNATed keep their conntrack entries). Only there has a flow the node routes ever been the
    plugin's to let go (ops/flush_udp.routed_flows); under v1.9's entry such a flow
    DNATed to a container is another tool's (kube-proxy's to a pod), never touched."""
    table = live.table(family)
    if table is None:
        return False
    for chain in (PREROUTING, OUTPUT):
        # prerouting's entry lost (a firewall script's flush): output's tells what
        # prerouting held, as every ADD writes both. Not the table's layout first: a
        # downgraded table (hostports_all, v1.6/v1.7's entry) reads as v1.9's there,
        # and the flows its v1.6/v1.7 entry DNATed stayed pinned to the container.
        found = _entry_layout(table, chain)
        if found is not None:
            return found is Layout.V16
    return layout(live, family) is Layout.V16


def live_entry(table: Table) -> Optional[RuleBody]:
    """v1.9's entry with the conditions of the v1.6/v1.7 entry in prerouting (the node's:
    the last ADD's), for rewriting a downgraded one."""
    for body in chain_bodies(table, PREROUTING):
        if body.action.kind is ActionKind.JUMP and body.action.target == HOSTIP_HOSTPORTS:
            return RuleBody(
                (*body.matches, FIB_LOCAL), Action(ActionKind.JUMP, target=HOSTPORTS_ALL)
            )
    return None


def upgraded(live: Ruleset, lone: Collection[int] = ()) -> bool:
    """Whether v1.9 judges the node: a table has hostports_all, which only a v1.9 ADD
    makes. v1.9.1's CHECK counts a container's DNAT rules in hostports alone, in both
    families: a host-IP rule v1.6/v1.7 left in hostip_hostports still forwards
    (hostports_all, and v1.6/v1.7's entry, jump there first) but fails it, so it counts
    as missing and check --repair moves it (`misplaced`), but for a container of one
    family alone in a table no v1.9 ADD wrote (`keeps_hostip`). A node without
    hostports_all keeps v1.6/v1.7's layout, where that rule is right.

    Also where v1.6/v1.7's entry stands over v1.9's (`downgraded`: two runtimes, a
    downgrade): check --repair writes v1.9's entry there, after which nothing on the
    node tells the two apart; judged as its own plugin put it, a v1.7 container's
    host-IP rule was right before that repair and missing after it.

    `lone` (lone_families): a family without its table beside the other's v1.6/v1.7
    one, which check --repair makes as v1.9 does (`layout`), hostports_all with it, is
    judged upgraded already: judged as it was, the repair put host-IP rules back in
    hostip_hostports and left those there, which the check after it (the same run's)
    reported, for a second repair to move."""
    if any(HOSTPORTS_ALL in table.chains for table in live.tables.values()):
        return True
    return any(
        live.table(family) is None and live.table(6 if family == 4 else 4) is not None
        for family in lone
    )


def misplaced(
    live: Ruleset,
    family: int,
    wanted: Sequence[WantedFamily],
    ids: Collection[str],
    upgrading: bool = False,
    lone: Collection[int] = (),
) -> List[Rule]:
    """On an upgraded node, the rules of containers `ids` in hostip_hostports that
    their `wanted` puts in hostports: v1.9.1's CHECK does not count them there, so
    check --repair (and add, for its own container) deletes them in the transaction
    that adds them to hostports. `upgrading`: the caller is v1.9's ADD (add, whose
    Entries.REWRITE writes hostports_all), so the node is upgraded once it is done.
    `lone`: as for `layout`. A container of this family alone keeps them where no v1.9
    ADD wrote this family's table (`keeps_hostip`)."""
    table = live.table(family)
    if table is None or not (upgrading or upgraded(live, lone)):
        return []
    kept = not upgrading and keeps_hostip(live, family)
    belong: Dict[str, Set[RuleBody]] = {}
    for want in wanted:
        if want.family == family and want.container_id in ids and not (kept and want.alone):
            belong.setdefault(want.container_id, set()).update(want.hostports)
    return [
        rule
        for rule in table.rules_of(HOSTIP_HOSTPORTS)
        if rule.comment is not None and rule.body in belong.get(rule.comment, ())
    ]


def keeps_hostip(live: Ruleset, family: int) -> bool:
    """Whether `family`'s table is there in v1.6/v1.7's layout (no hostports_all: no v1.9
    ADD wrote it) on a node judged upgraded (`upgraded`): there a container of this
    family alone (WantedFamily.alone) keeps its host-IP rules in hostip_hostports, and
    they count. Its ADD was v1.6/v1.7's (v1.9's would have made hostports_all here), and
    nothing on the node tells whether its plugin is now v1.9.1 (an upgrade whose ADDs
    had the other family alone) or still v1.7.1 (the other table made as v1.9 does by
    check --repair, `layout`'s lone_families, or a second runtime): the rulesets are the
    same. v1.7.1's CHECK counts such a rule in hostip_hostports and passes, moved to
    hostports it fails; v1.9.1's CHECK of it fails either way until moved, as the upgrade
    itself left it. So it stays (keep). Where v1.7.1's CHECK of the container fails
    wherever its rules are (IPv6 with SNAT, IPv4 with SNAT and more than two mappings, a
    0.0.0.0/:: host IP: wanted._v17_check_can_pass, WantedFamily.alone False), and for a
    dual-stack container (it counts both families' host-IP mappings against each
    family's hostip_hostports; FACTS.md), only v1.9.1's can pass: they move."""
    table = live.table(family)
    return table is not None and layout(live, family) is Layout.V16


def lone_families(families_of: Iterable[Collection[int]]) -> Set[int]:
    """The families some cached container has alone (`families_of`: each one's
    families): its ADD wrote that family's table and not the other's, so the other's
    layout says nothing of the plugin that made it (`layout`)."""
    return {f for families in families_of if len(set(families)) == 1 for f in families}


def own_layouts(live: Ruleset, family: int) -> Dict[str, Layout]:
    """Where each container's own plugin put its host-IP rules, told by those of its
    rules still there: hostip_hostports (v1.6/v1.7) or hostports (v1.9); this family's
    table before the other family's (one ADD wrote both). A container with none left
    is absent. One pass over the tables, whatever the number of containers.

    A node's entry is the last ADD's, so on a node where v1.7.1 and v1.9.1 both run
    (two runtimes, a downgrade) the table's layout is not every container's: a v1.9.1
    container's lost host-IP rule repaired into hostip_hostports fails v1.9.1's CHECK
    (it counts hostports), and a v1.7.1 one's put in hostports fails v1.7.1's."""
    found: Dict[str, Layout] = {}
    # Later writes win: the other family first, this one's hostip_hostports last.
    for fam in (6 if family == 4 else 4, family):
        table = live.table(fam)
        if table is None:
            continue
        for chain, shape in ((HOSTPORTS, Layout.V19), (HOSTIP_HOSTPORTS, Layout.V16)):
            for rule in table.rules_of(chain):
                body = rule.body
                if rule.comment and body.action.kind is ActionKind.DNAT and _host_ip_rule(body):
                    found[rule.comment] = shape
    return found


def host_ips_in_hostip(
    live: Ruleset,
    family: int,
    wanted: Sequence[WantedFamily],
    missing: Iterable[Tuple[int, str, RuleBody]],
    lone: Collection[int] = (),
) -> Dict[int, bool]:
    """For each index of `wanted` with a missing host-IP rule: whether those rules go to
    hostip_hostports, as its own plugin put them (own_layouts), else as the table's
    layout says."""
    lacking = {index for index, chain, body in missing if moves_to_hostip(chain, body)}
    if not lacking:
        return {}
    if upgraded(live, lone):
        # v1.9.1 CHECKs an upgraded node's containers (hostports), but those of a
        # family alone in a table no v1.9 ADD wrote keep their host-IP rules there.
        if not keeps_hostip(live, family):
            return {}
        lacking = {i for i in lacking if wanted[i].alone}
    node = layout(live, family, lone)
    own = own_layouts(live, family)
    return {i: own.get(wanted[i].container_id, node) is Layout.V16 for i in lacking}


def hostports_all_ok(table: Optional[Table], copies_ok: bool = False) -> bool:
    """hostports_all is its two jumps, in order; `copies_ok`: later copies of them aside
    (check reports those as duplicate-entry, and its repair writes the chain again)."""
    bodies = chain_bodies(table, HOSTPORTS_ALL)
    return tuple(dict.fromkeys(bodies) if copies_ok else bodies) == HOSTPORTS_ALL_RULES


def uses_hostports_all(table: Optional[Table]) -> bool:
    return any(
        body.action.kind is ActionKind.JUMP and body.action.target == HOSTPORTS_ALL
        for chain in (PREROUTING, OUTPUT)
        for body in chain_bodies(table, chain)
    )


def moves_to_hostip(chain: str, body: RuleBody) -> bool:
    """Whether v1.9's rule `body` of `chain` is one v1.6/v1.7 keep in hostip_hostports."""
    return chain == HOSTPORTS and _host_ip_rule(body)


def _host_ip_rule(body: RuleBody) -> bool:
    """A DNAT rule for one host address (`ip|ip6 daddr H` first)."""
    return bool(body.matches) and body.matches[0].left.endswith(" daddr")
