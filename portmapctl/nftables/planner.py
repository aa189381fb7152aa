"""Live tables x wanted rules -> the smallest `nft -f` transaction.

setup: add only what is missing, creating the table and chains the way the plugin's
ADD does (v1.9.1 shape; under `check --repair`, in a table of v1.6/v1.7's layout as
that ADD did: its two-jump entry, host-IP rules in `hostip_hostports`, no
`hostports_all`). Which layout a table is in, where a container's lost host-IP rules
go, and whether v1.9 has run on the node is nftables/layout.py's judgement (`layout`,
`own_layouts`, `upgraded`, `misplaced`, `downgraded`); this module plans from it. A
rule counts as present when an equal rule (same matches, action and comment, compared
as values) is in the chain the plugin would look in; host-IP rules that v1.6/v1.7 put
in `hostip_hostports` count too, but not once v1.9 has run on the node: its CHECK
counts `hostports` alone, and check --repair moves them there (`misplaced`), as add
does its own container's (add is v1.9's ADD: the node is upgraded after it). What it
makes of the node's shared entry (prerouting, output, hostports_all) is the caller's
`Entries`: `check --repair` keeps any working shape (an older version's, another ADD's
conditions; not a v1.6/v1.7 entry written over v1.9's, `downgraded`), `add` writes it
as the v1.9.1 ADD does every time (its own conditions, the v1.9 jumps), changing
nothing when it is already exactly that.

teardown: delete by handle every rule whose comment is one of the given container IDs
in the chains the plugin's DEL searches (hostports, hostip_hostports, masquerading).
Tables and base chains stay, as after the plugin's last DEL.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import replace
from enum import Enum
from typing import Collection, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from portmapctl.nftables.layout import (
    Layout,
    downgraded,
    entry_ok,
    host_ips_in_hostip,
    hostports_all_ok,
    keeps_hostip,
    layout,
    live_entry,
    misplaced,
    moves_to_hostip,
    took_routed,
    upgraded,
    uses_hostports_all,
)
from portmapctl.nftables.ruleset import (
    CONTAINER_CHAINS,
    HOSTIP_HOSTPORTS,
    HOSTPORTS,
    HOSTPORTS_ALL,
    MASQUERADING,
    OUTPUT,
    PREROUTING,
    ActionKind,
    Rule,
    RuleBody,
    Ruleset,
    Table,
    chain_bodies,
)
from portmapctl.nftables.transaction import Op, OpKind, Transaction
from portmapctl.nftables.wanted import (
    BASE_CHAINS,
    HOSTPORTS_ALL_RULES,
    REGULAR_CHAINS,
    WantedFamily,
    old_entry_rules,
)

# The chains whose jumps lead to the container rules, and where those jumps go.
ENTRY_CHAINS = (PREROUTING, OUTPUT, HOSTPORTS_ALL)
_ENTERED = (HOSTPORTS_ALL, HOSTIP_HOSTPORTS, HOSTPORTS)


def extra_copies(table: Optional[Table]) -> List[Rule]:
    """The later copies of a jump into the container rules that stands more than once
    in one entry chain (the same body, first copy kept). The plugin's ADD flushes the
    chains it writes, so only a hand or a repair racing the plugin makes them; every
    packet walks each copy."""
    extra: List[Rule] = []
    for chain in ENTRY_CHAINS:
        seen: Set[RuleBody] = set()
        for rule in () if table is None else table.rules_of(chain):
            action = rule.body.action
            if action.kind is not ActionKind.JUMP or action.target not in _ENTERED:
                continue
            if rule.body in seen:
                extra.append(rule)
            seen.add(rule.body)
    return extra


def missing_rules(live: Ruleset, wanted: WantedFamily) -> List[Tuple[str, RuleBody]]:
    """(chain, rule) of `wanted` that the table lacks, in the plugin's order."""
    return [(chain, body) for _index, chain, body in missing_where(live, wanted.family, [wanted])]


def missing_where(
    live: Ruleset, family: int, wanted: Sequence[WantedFamily], lone: Collection[int] = ()
) -> List[Tuple[int, str, RuleBody]]:
    """missing_by_container, each rule named by the chain setup (check --repair) writes
    it to: a host-IP rule goes to hostip_hostports for a container of v1.6/v1.7 (its
    other host-IP rules there, or none left in a table of that layout), so check says
    that chain, not v1.9's. `lone`: as for `layout`."""
    counts = not upgraded(live, lone)
    missing = missing_by_container(live.table(family), wanted, counts, keeps_hostip(live, family))
    old = host_ips_in_hostip(live, family, wanted, missing, lone)
    return [
        (
            index,
            HOSTIP_HOSTPORTS if old.get(index) and moves_to_hostip(chain, body) else chain,
            body,
        )
        for index, chain, body in missing
    ]


def missing_by_container(
    table: Optional[Table],
    wanted: Sequence[WantedFamily],
    hostip_counts: bool = True,
    alone_kept: bool = False,
) -> List[Tuple[int, str, RuleBody]]:
    """(index into `wanted`, chain, rule) of every wanted rule the table lacks.
    `hostip_counts`: a DNAT rule in hostip_hostports counts (v1.6/v1.7 put host-IP
    rules there); not on an upgraded node (`upgraded`), whose v1.9.1 CHECK counts
    hostports alone. `alone_kept`: it counts for a container of this family alone all
    the same (`keeps_hostip`).

    The table is counted once (a multiset of rule bodies), whatever the number of
    containers: checking 1,000 containers one by one against it was quadratic.
    """
    hostip = chain_bodies(table, HOSTIP_HOSTPORTS) if hostip_counts or alone_kept else []
    have_dnat = Counter(chain_bodies(table, HOSTPORTS))
    have_hostip = Counter(hostip)
    have_masq = Counter(chain_bodies(table, MASQUERADING))
    found: List[Tuple[int, str, RuleBody]] = []
    for index, want in enumerate(wanted):
        counted = hostip_counts or (alone_kept and want.alone)
        for chain, bodies, haves in (
            (HOSTPORTS, want.hostports, (have_dnat, have_hostip) if counted else (have_dnat,)),
            (MASQUERADING, want.masquerading, (have_masq,)),
        ):
            for body in bodies:
                have = next((h for h in haves if h[body] > 0), None)
                if have is not None:
                    have[body] -= 1
                else:
                    found.append((index, chain, body))
    return found


def unwanted(
    table: Optional[Table],
    wanted: Sequence[WantedFamily],
    ids: Collection[str],
    addresses: Optional[Collection[str]] = None,
) -> List[Rule]:
    """The rules of the containers `ids` (by their comment) that none of their wanted
    rules in this family is: an old address or port, a rule written by hand. nftables
    is first-match-wins, so such a DNAT rule before the right one takes the traffic
    elsewhere; the node check reports them (`extra-rules`) and --repair deletes them.

    `ids` are every container compared, with or without an address in this family
    (none: all its rules here are unwanted). Only the plugin's own kinds of rule count
    (nftables/node.py `is_plugin_rule`), as for gc: anything else in these chains is
    nobody's to remove. A wanted rule repeated is not unwanted (as on the iptables side).
    `addresses`: only rules for these container addresses (`container_address`), when
    the caller knows one attachment alone; see ops/check/nft_one.check_mapping. Only a rule
    for one of their wanted mappings (the same host port, the same masqueraded
    address) is unwanted: the others are unaccounted (`not_wanted`).
    """

    return not_wanted(table, wanted, ids, addresses)[0]


def not_wanted(
    table: Optional[Table],
    wanted: Sequence[WantedFamily],
    ids: Collection[str],
    addresses: Optional[Collection[str]] = None,
) -> Tuple[List[Rule], List[Rule]]:
    """The rules of the containers `ids` that none of their wanted rules is, as
    (unwanted, unaccounted), in one pass over the table. Unaccounted: not for one of
    their wanted mappings (`_claimed`) either: a host port (with its host IP and
    protocol) none of their cached configs has, a DNAT to an address outside the subnet
    of theirs on that network, a masquerade of an address they have not. The rules
    carry the bare container ID, so such a rule may be the same container's on another
    network whose cache entry is not read here (it cannot be read, it is in a cache
    directory not given, or it is not written yet: libcni writes it once the ADD is
    done), mapping the same host port there (the plugin refuses no such pair) or
    another. --repair deleted them, and so another network's live mapping, which the
    plugin's CHECK (counting rules by ID) never missed: reported, never deleted (SPEC
    §3: repair never deletes a live mapping).

    A masquerade rule of theirs for an address only their unwanted DNAT rules send to
    (an old address: the plugin's ADD again on a new one, without a DEL) is unwanted
    with them: it is that mapping's own, and no rule of theirs left after a repair
    sends anything there. --repair deleted the DNAT rule and left these two, reported
    as unclaimed at every check after."""
    claimed: List[Rule] = []
    unclaimed: List[Rule] = []
    for rule in _not_wanted(table, wanted, ids, addresses):
        (claimed if _claimed(rule, wanted) else unclaimed).append(rule)
    orphaned = _served_only_by(table, claimed, ids) if table is not None else set()
    if orphaned:
        claimed += [r for r in unclaimed if _masquerade_of(r) in orphaned]
        unclaimed = [r for r in unclaimed if _masquerade_of(r) not in orphaned]
    return claimed, unclaimed


def _masquerade_of(rule: Rule) -> Optional[Tuple[str, str]]:
    """(container ID, address) a masquerade rule of the plugin's is for."""
    if rule.chain != MASQUERADING:
        return None
    address = container_address(rule)
    return None if address is None else (rule.comment or "", address)


def _served_only_by(
    table: Table, doomed: Sequence[Rule], ids: Collection[str]
) -> Set[Tuple[str, str]]:
    """(container ID, address) that `doomed`'s DNAT rules send to and no other DNAT
    rule of that ID in the table does (wanted or not, read or filtered out: every one
    counts, so a rule of its other network keeps the address's masquerade)."""
    from portmapctl.nftables.node import is_plugin_rule

    going = {id(rule) for rule in doomed}
    sent = {(r.comment or "", container_address(r)) for r in doomed if r.chain != MASQUERADING}
    if not sent:
        return set()
    for chain in CONTAINER_CHAINS:
        if chain == MASQUERADING:
            continue
        for rule in table.rules_of(chain):
            if rule.comment in ids and id(rule) not in going and is_plugin_rule(rule):
                sent.discard((rule.comment or "", container_address(rule)))
    return {(cid, address) for cid, address in sent if address is not None}


def _not_wanted(
    table: Optional[Table],
    wanted: Sequence[WantedFamily],
    ids: Collection[str],
    addresses: Optional[Collection[str]],
) -> List[Rule]:
    from portmapctl.nftables.node import is_plugin_rule  # (node imports this module's users)

    if table is None or not ids:
        return []
    dnat = {body for want in wanted for body in want.hostports}
    masq = {body for want in wanted for body in want.masquerading}
    found = []
    for chain in CONTAINER_CHAINS:
        bodies = masq if chain == MASQUERADING else dnat
        for rule in table.rules_of(chain):
            if rule.comment in ids and rule.body not in bodies and is_plugin_rule(rule):
                if addresses is None or container_address(rule) in addresses:
                    found.append(rule)
    return found


def _claimed(rule: Rule, wanted: Sequence[WantedFamily]) -> bool:
    """Whether a rule of a container none of its wanted rules is, is still for one of
    its wanted mappings, so the network being compared's own (--repair deletes it).
    A masquerade: of the address a wanted masquerade rule is for. A DNAT: with the
    exact matches of a wanted DNAT rule (host IP, protocol, host port), sending into
    that network's subnet (an address the container had there: ADD again on another
    one without a DEL). Its other network's rule for the same host port (another host
    IP or protocol, or the same, the plugin refuses neither) sends to its address
    there, outside this subnet as a rule tells: not claimed. Where the two networks'
    subnets overlap, an old address and the other network's cannot be told apart from
    the rules: claimed, as before (see docs/guarantees.md)."""
    cid = rule.comment or ""
    if rule.chain == MASQUERADING:
        mine = _addresses_of(rule.body)
        return any(
            mine == _addresses_of(body)
            for want in wanted
            if want.container_id == cid
            for body in want.masquerading
        )
    sent = container_address(rule)
    if sent is None:
        return False
    try:
        address = ipaddress.ip_address(sent)
    except ValueError:
        return False
    return any(
        rule.body.matches == body.matches and address in want.subnet
        for want in wanted
        if want.container_id == cid
        for body in want.hostports
    )


def _addresses_of(body: RuleBody) -> Tuple[Tuple[str, str], ...]:
    return tuple((m.left, m.right) for m in body.matches if m.left.endswith(" daddr"))


def container_address(rule: Rule) -> Optional[str]:
    """The container address a plugin rule is for: its DNAT's, its masquerade's daddr."""
    if rule.body.action.kind is ActionKind.DNAT:
        return rule.body.action.addr
    return rule.body.value(f"{'ip6' if rule.family == 6 else 'ip'} daddr")


def repair(
    live: Ruleset,
    wanted: Sequence[WantedFamily],
    ids: Collection[str],
    families: Iterable[int],
    also: Sequence[WantedFamily] = (),
    addresses: Optional[Collection[str]] = None,
    dedupe: bool = False,
    held: Collection[int] = (),
    left: Collection[Tuple[str, int]] = (),
    lone: Collection[int] = (),
) -> Transaction:
    """`check --repair`: the containers `ids` exactly as `wanted`: their unwanted rules
    deleted by handle, then what is missing added (setup), in one transaction. `also`:
    more of their rules that are not unwanted, left as they are (the same container's
    on another network, when one mapping is repaired); `addresses`: as for `unwanted`;
    `dedupe` (a repair of the node): an entry chain holding extra copies
    (`extra_copies`) written again with each rule once, in its order. `held`: the
    families whose entry (prerouting/output) is left as it is, whatever it is. `left`:
    (container ID, family) whose rules in that family stay as they are (none of
    `wanted`: its repair there would take a port), though it is repaired in another.
    `lone`: as for `layout` (lone_families of every cached container)."""
    txn = Transaction()
    made = setup(live, wanted, held=held, lone=lone)
    flushed = {(op.family, op.chain) for op in made.ops if op.kind is OpKind.FLUSH_CHAIN}
    for family in sorted(set(families)):
        want = [w for w in (*wanted, *also) if w.family == family]
        mine = [cid for cid in ids if (cid, family) not in left]
        for rule in unwanted(live.table(family), want, mine, addresses):
            txn.delete_rule(family, rule.chain, rule.handle, rule.body)
        # Moved, not copied: setup adds each to hostports (it counts as missing there).
        for rule in misplaced(live, family, wanted, mine, lone=lone):
            if addresses is None or container_address(rule) in addresses:
                txn.delete_rule(family, rule.chain, rule.handle, rule.body)
        if dedupe:
            # The chain written again as read, each rule once, as the plugin's ADD
            # rewrites these chains: not by handle, which a table deleted and made
            # again (a firewall reload) between the read and the write hands out anew,
            # so that the last entry could go (review helper-141). A chain setup
            # flushes is written there anyway.
            table = live.table(family)
            for chain in dict.fromkeys(rule.chain for rule in extra_copies(table)):
                if (family, chain) in flushed:
                    continue
                txn.flush_chain(family, chain)
                for body in dict.fromkeys(chain_bodies(table, chain)):
                    txn.add_rule(family, chain, body)
                txn.as_read.add((family, chain))
    txn.ops += made.ops
    txn.took_routed = made.took_routed
    # A plugin ADD of a container whose lost rules this appends, committed since the
    # read, appended them too: the try is refused whole and planned again.
    for family in txn.families():
        _guard_plugin_add(txn, live.table(family), family)
    return txn


class Entries(str, Enum):
    """What setup makes of a family's prerouting, output and hostports_all.

    Every plugin ADD (v1.6.2, v1.7.1 and v1.9.1 alike: forwardPorts in
    portmap_nftables.go) flushes prerouting and output and writes them again with its
    own container's conditions; v1.9 flushes and refills hostports_all too. So a node's
    entry is whatever the last ADD wrote, and each command reads that its own way:
    """

    # check --repair: the entry is the node's, not one container's. Any working shape
    # stays (v1.6/v1.7 jumps, the conditions another network's ADD left); only a
    # missing or broken one is written, with the last cached container's conditions,
    # and a v1.6/v1.7 one in a table v1.9 made (`downgraded`), with its own.
    KEEP = "keep"
    # add: we are that ADD, run now. prerouting and output become exactly
    # `[this container's conditions] fib daddr type local jump hostports_all` and
    # hostports_all exactly its two jumps, as v1.9.1 leaves them (a v1.7 table is
    # upgraded, the previous conditions replaced). Where they are that already, nothing
    # is written: a second identical add changes nothing.
    REWRITE = "rewrite"


def setup(
    live: Ruleset,
    wanted: Iterable[WantedFamily],
    entries: Entries = Entries.KEEP,
    held: Collection[int] = (),
    lone: Collection[int] = (),
) -> Transaction:
    """What to add so that every container of `wanted` is as the plugin's ADD leaves it.
    `lone`: as for `layout`."""
    by_family: Dict[int, List[WantedFamily]] = {}
    for want in wanted:
        by_family.setdefault(want.family, []).append(want)
    txn = Transaction()
    for family in sorted(by_family):
        # A v1.6/v1.7 table stays one under check --repair, its entry lost or not: what
        # is missing goes where that plugin's ADD puts it (its two-jump entry, host-IP
        # rules in hostip_hostports, no hostports_all), so its CHECK, which counts
        # host-IP rules there, passes again and nothing of v1.9's is written on a node
        # that does not run it.
        old = entries is Entries.KEEP and layout(live, family, lone) is Layout.V16
        _setup_family(txn, live, family, by_family[family], entries, old, family in held, lone)
        if entries is Entries.REWRITE:
            _guard_plugin_add(txn, live.table(family), family)
    txn.took_routed = frozenset(f for f in live.tables if took_routed(live, f))
    return txn


def _entries_to_write(
    table: Optional[Table], entry: RuleBody, entries: Entries, old: bool
) -> Tuple[List[str], bool]:
    """The base chains setup (flushes and) writes the entry into, and whether it refills
    hostports_all."""
    if entries is Entries.REWRITE:
        rewrite = [c for c in (PREROUTING, OUTPUT) if tuple(chain_bodies(table, c)) != (entry,)]
        return rewrite, not hostports_all_ok(table)
    rewrite = [c for c in (PREROUTING, OUTPUT) if not entry_ok(table, c)]
    if old:
        return rewrite, False
    # A v1.6/v1.7 entry written over v1.9's is not kept: it takes forwarded traffic.
    rewrite += [c for c in (PREROUTING, OUTPUT) if c not in rewrite and downgraded(table, c)]
    # hostports_all matters where a base chain jumps to it, or will once we rewrite one.
    refill = not hostports_all_ok(table, copies_ok=True) and bool(
        rewrite or uses_hostports_all(table)
    )
    return rewrite, refill


def _setup_family(
    txn: Transaction,
    live: Ruleset,
    family: int,
    wanted: Sequence[WantedFamily],
    entries: Entries,
    old_shape: bool,
    hold_entry: bool = False,
    lone: Collection[int] = (),
) -> None:
    table = live.table(family)
    chains = {} if table is None else table.chains
    # check --repair makes what the read found missing with `create`: a plugin ADD that
    # made it meanwhile (after a `delete table`) wrote its container's rules too, which
    # ours would double; the try is refused whole and planned again from a new read.
    # (add is that ADD, run now: `add`, as the plugin writes.)
    fresh = entries is Entries.KEEP
    if table is None:
        txn.add_table(family, create=fresh)
    # Conditions are node-wide and last-writer-wins in the plugin: the last container
    # written decides, as if its ADD had run last; a downgraded entry keeps its own
    # (the last ADD's) when check --repair makes it v1.9's.
    entry = wanted[-1].entry
    if entries is Entries.KEEP and table is not None and downgraded(table):
        entry = live_entry(table) or entry
    rewrite, refill = _entries_to_write(table, entry, entries, old_shape)
    if hold_entry:
        rewrite = []  # (the caller's: the conditions it would need cannot be written)
    for name in REGULAR_CHAINS:
        if name not in chains and not (old_shape and name == HOSTPORTS_ALL):
            txn.add_chain(family, name, create=fresh)
    if refill:
        txn.flush_chain(family, HOSTPORTS_ALL)
        for body in HOSTPORTS_ALL_RULES:
            txn.add_rule(family, HOSTPORTS_ALL, body)
    for name in (PREROUTING, OUTPUT):
        if name not in chains:
            txn.add_chain(family, name, BASE_CHAINS[name], create=fresh)
        if name in rewrite:
            # Flushed also when the read found no such chain, as the plugin's ADD does:
            # an ADD that made it since (after a `delete table`) put its entry there,
            # which ours would have doubled.
            txn.flush_chain(family, name)
            for body in old_entry_rules(name, entry) if old_shape else (entry,):
                txn.add_rule(family, name, body)
    if MASQUERADING not in chains and any(w.snat for w in wanted):
        txn.add_chain(family, MASQUERADING, BASE_CHAINS[MASQUERADING], create=fresh)
    # add is v1.9's ADD: the node is upgraded once it is done (it writes hostports_all),
    # so a host-IP rule of its container in hostip_hostports counts as missing there too.
    upgraded_after = entries is Entries.REWRITE or upgraded(live, lone)
    kept = entries is Entries.KEEP and keeps_hostip(live, family)
    missing = missing_by_container(table, wanted, not upgraded_after, kept)
    # Under check --repair each container's host-IP rules go where its own plugin put
    # them; add is v1.9.1's ADD (hostports).
    hostip = (
        host_ips_in_hostip(live, family, wanted, missing, lone) if entries is Entries.KEEP else {}
    )
    judged = upgraded(live, lone)
    moving = _moving(table, wanted, missing) if entries is Entries.KEEP and judged else []
    # Inserted last first, so that they stand at the head of hostports in their order.
    for _index, body in reversed(moving):
        txn.add_rule(family, HOSTPORTS, body, before=True)
    moved = Counter(moving)
    groups: Dict[Tuple[int, str], List[RuleBody]] = {}
    for index, chain, body in missing:
        if chain == HOSTPORTS and moved[(index, body)] > 0:
            moved[(index, body)] -= 1
            continue
        groups.setdefault((index, chain), []).append(body)
    for (index, chain), bodies in groups.items():
        for body, position, before in _placed(table, chain, wanted[index], bodies):
            if hostip.get(index) and moves_to_hostip(chain, body):
                txn.add_rule(family, HOSTIP_HOSTPORTS, body)
            else:
                txn.add_rule(family, chain, body, position, before)


def _guard_plugin_add(txn: Transaction, table: Optional[Table], family: int) -> None:
    """Make `txn` (add's, check --repair's) fail whole when a plugin ADD committed in
    `family` after `table` was read, where `txn` appends a container's rules. The ADD
    appends its container's rules without looking (FACTS: `add rule` only), so rules
    planned from a read without them doubled that container's every rule when the ADD
    was the same container's (add of it; a repair of its lost rules). What every plugin
    ADD does to the family is made the transaction's condition: it makes the table
    (then `create table`, EEXIST), else it flushes prerouting and output and writes them
    again (then a rule read there: deleted by its handle ahead of everything where
    `txn` flushes that chain anyway, else a jump of the entry replaced by itself at its
    handle, which keeps the rule and its handle: ENOENT), else it makes them (`create
    chain`, EEXIST); where both are there without such a rule (flushed by hand), the
    same of hostports_all, which v1.9's ADD flushes and refills. Only a jump whose
    every match is modelled is written back (`_written_as_read`): what nft reads back
    as that very rule, never anything else's. Refused, converge reads and plans again
    (nftables.node.RETRY_REASONS): any plugin ADD meanwhile costs a try, the same
    container's leaves nothing to write. Not guarded: prerouting and output both there
    without such a rule, against a v1.6/v1.7 ADD (or with hostports_all empty too),
    where nothing of that ADD can be asked not to have happened."""
    ops = [op for op in txn.ops if op.family == family]
    if not any(op.kind is OpKind.ADD_RULE and op.chain in CONTAINER_CHAINS for op in ops):
        return
    made = {(op.kind, op.chain): i for i, op in enumerate(txn.ops) if op.family == family}
    if table is None:
        _made_with_create(txn, made.get((OpKind.ADD_TABLE, None)))
        return
    flushed = {op.chain for op in ops if op.kind is OpKind.FLUSH_CHAIN}
    # (hostports_all last: only v1.9's ADD flushes it, v1.6/v1.7's never make it)
    for name in ENTRY_CHAINS:
        if name not in table.chains:
            _made_with_create(txn, made.get((OpKind.ADD_CHAIN, name)))
            return
        rules = table.rules_of(name)
        if rules and name in flushed:  # (before the flush: the rule as read goes by handle)
            txn.ops.insert(0, Op(OpKind.DELETE_RULE, family, name, handle=rules[0].handle))
            return
        jump = next((rule for rule in rules if _written_as_read(rule.body)), None)
        if jump is not None:
            txn.replace_rule(family, name, jump.handle, jump.body)
            return


def _made_with_create(txn: Transaction, where: Optional[int]) -> None:
    if where is not None:
        txn.ops[where] = replace(txn.ops[where], create=True)


def _written_as_read(body: RuleBody) -> bool:
    """Whether `body`, read, is a jump of the plugin's entry (to the container rules)
    that nft reads back as this very rule once written: every match modelled (none
    kept as the JSON of what we do not model, no counter), no comment."""
    action = body.action
    return (
        action.kind is ActionKind.JUMP
        and action.raw is None
        and action.target in _ENTERED
        and body.comment is None
        and all(match.raw is None for match in body.matches)
    )


def _moving(
    table: Optional[Table],
    wanted: Sequence[WantedFamily],
    missing: Sequence[Tuple[int, str, RuleBody]],
) -> List[Tuple[int, RuleBody]]:
    """(index into `wanted`, rule) of the missing hostports rules that are in
    hostip_hostports with their container's comment, in that chain's order: on an
    upgraded node check --repair moves them (`misplaced`). hostports_all (and a
    v1.6/v1.7 entry) jumps to hostip_hostports before hostports, so each took its port
    ahead of every rule of hostports; they go first there, in their order, for every
    port to go where it went. Appended, or placed after the container's own rules
    there, they stood behind a later ADD's rule for the same port (another container's
    `tcp dport 9011`, for old1's `ip daddr 127.0.0.1 tcp dport 9011`), which then took
    it: first-match-wins."""
    if table is None:
        return []
    lacking = Counter((index, body) for index, chain, body in missing if chain == HOSTPORTS)
    by_id: Dict[str, List[int]] = {}
    for index, want in enumerate(wanted):
        by_id.setdefault(want.container_id, []).append(index)
    found: List[Tuple[int, RuleBody]] = []
    for rule in table.rules_of(HOSTIP_HOSTPORTS):
        for index in by_id.get(rule.comment or "", ()):
            if lacking[(index, rule.body)] > 0:
                lacking[(index, rule.body)] -= 1
                found.append((index, rule.body))
                break
    return found


def _placed(
    table: Optional[Table], chain: str, want: WantedFamily, missing: List[RuleBody]
) -> List[Tuple[RuleBody, Optional[int], bool]]:
    """(rule, position handle, before) for a container's missing rules in `chain`, so
    that its rules end up in the plugin's order. nftables is first-match-wins: a
    missing 8080->80 appended after 8080->81 would send the port elsewhere, and one
    appended after another container's rule for the same port would lose it. A rule
    goes before the container's next wanted rule still there; those after its last one
    go right after that one (emitted last first, each `add ... position H` then lands
    before the previous); with none of its rules left, they are appended, as the
    plugin's ADD appends.
    """
    order = want.masquerading if chain == MASQUERADING else want.hostports
    handles: Dict[RuleBody, List[int]] = {}
    if table is not None:
        for rule in table.rules_of(chain):
            if rule.comment == want.container_id:
                handles.setdefault(rule.body, []).append(rule.handle)
    lost = Counter(missing)
    # Each wanted rule in order: the handle it has here, or None when missing (or, for
    # a rule counted present elsewhere, unknown: then it is neither written nor used).
    slots: List[Tuple[RuleBody, Optional[int], bool]] = []
    for body in order:
        if lost[body] > 0:
            lost[body] -= 1
            slots.append((body, None, True))
        else:
            slots.append((body, (handles.get(body) or [None]).pop(0), False))
    placed: List[Tuple[RuleBody, Optional[int], bool]] = []
    tail: List[RuleBody] = []
    last: Optional[int] = None
    for position, (body, handle, absent) in enumerate(slots):
        if handle is not None:
            last = handle
            continue
        if not absent:
            continue
        following = next((h for _b, h, _a in slots[position + 1 :] if h is not None), None)
        if following is not None:
            placed.append((body, following, True))
        else:
            tail.append(body)
    if last is None:
        return placed + [(body, None, False) for body in tail]
    return placed + [(body, last, False) for body in reversed(tail)]


def superseded(live: Ruleset, want: WantedFamily, address: str) -> List[Rule]:
    """The plugin's rules of `want`'s container for its address `address` (DNATs to it,
    its masquerade rules) that `want` has not: an earlier ADD of this interface with
    other ports (or SNAT), which add replaces, as it rewrites the container's iptables
    chain: the state the plugin's DEL and then ADD leave. Its rules for other addresses
    (the container on another network: the rules name no network) are not these."""
    from portmapctl.nftables.node import is_plugin_rule

    table = live.table(want.family)
    if table is None:
        return []
    keep = {*want.hostports, *want.masquerading}
    daddr = f"{'ip6' if want.family == 6 else 'ip'} daddr"
    found = []
    for chain in CONTAINER_CHAINS:
        for rule in table.rules_of(chain):
            body = rule.body
            if rule.comment != want.container_id or body in keep or not is_plugin_rule(rule):
                continue
            if body.action.kind is ActionKind.DNAT:
                ours = body.action.addr == address
            else:  # (is_plugin_rule: a masquerade of `ip saddr A ip daddr B`)
                ours = body.value(daddr) == address
            if ours:
                found.append(rule)
    return found


def teardown(
    live: Ruleset, container_ids: Iterable[str], families: Optional[Iterable[int]] = None
) -> Transaction:
    """Delete, by handle, every container rule whose comment is one of `container_ids`."""
    ids = set(container_ids)
    wanted_families = set(families) if families is not None else None
    txn = Transaction()
    for family in sorted(live.tables):
        if wanted_families is not None and family not in wanted_families:
            continue
        table = live.tables[family]
        for chain in CONTAINER_CHAINS:
            for rule in table.rules_of(chain):
                if rule.comment is not None and rule.comment in ids:
                    txn.delete_rule(family, chain, rule.handle)
    return txn
