"""`check`'s diagnosis, pure: tables and cache in, problems out.

For every attachment in the CNI cache that carries port mappings, the chains the
plugin would have made (`chains.wanted_chains`) are compared with the live table; the
shared top-level chains and jumps those mappings need must be there; and everything
`list` can mark (shadowed, orphan, incomplete, stale, legacy) is reported, plus
duplicate entry rules and portmap chains present in both the legacy and the nf_tables
tables (split brain). `diagnose_mapping` is what the plugin's CHECK verifies for one
mapping, except that a missing chain is a failure (the seed's bug, SPEC §2).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Collection, Dict, FrozenSet, List, Optional, Sequence, Tuple
from typing import Mapping as ReadOnly

from portmapctl.cni.cache import Attachment
from portmapctl.core.mapping import DEFAULT_MARK_BIT, MappingConfig
from portmapctl.core.status import ProblemKind
from portmapctl.errors import BadInput
from portmapctl.iptables import inventory, shapes
from portmapctl.iptables.chains import (
    DNAT_PREFIX,
    MASQ,
    SETMARK,
    SHARED_CHAINS,
    SNAT_PREFIX,
    TOPLEVEL_DNAT,
    Chain,
    dnat_chain,
    dnat_chain_name,
    masq_chain,
    setmark_chain,
    toplevel_dnat_chain,
    wanted_chains,
)
from portmapctl.iptables.ruleset import (
    Args,
    NatTable,
    format_rule,
    option_value,
    rule_target,
)
from portmapctl.ops.check.hints import (
    Fixes,
    _config_ports,
    _names_text,
    _ports_text,
    _rules_text,
    _who,
)
from portmapctl.ops.flavour_guard import other_flavour

if TYPE_CHECKING:
    from portmapctl.nftables.inventory import NftInventory


@dataclass(frozen=True)
class Problem:
    """One thing wrong on the node: what, where, why it matters, and what fixes it."""

    kind: str
    family: Optional[int]
    chain: Optional[str]
    network: Optional[str]
    container_id: Optional[str]
    detail: str
    fix: str
    why: str = ""
    # The rules at issue as iptables-save prints them (`-A CHAIN ...`; nft: the rule
    # text): the offending ones, or the wanted ones that are missing (check -o wide).
    rules: Tuple[str, ...] = ()

    @property
    def key(self) -> Tuple[str, Optional[int], Optional[str], Optional[str], Optional[str]]:
        """Identity across two checks (details carry counts that change)."""
        return (self.kind, self.family, self.chain, self.network, self.container_id)


@dataclass(frozen=True)
class CheckResult:
    """What a check (or a repair and the check after it) found."""

    problems: Tuple[Problem, ...]
    families: Tuple[int, ...]
    # "node": the whole node from the CNI cache; "mapping": one given mapping.
    scope: str = "node"
    cache_present: bool = False
    mappings_checked: int = 0  # (container, family) pairs compared with the table
    chains_seen: int = 0  # per-container chains on the node (node scope)
    chain: Optional[str] = None  # the mapping's chain (mapping scope)
    repaired: bool = False
    fixed: Tuple[Problem, ...] = ()
    transactions: Dict[int, str] = field(default_factory=dict)
    notes: Tuple[str, ...] = ()
    warnings: Tuple[str, ...] = ()
    # The node as check read it (node scope): what --metrics-file counts.
    found: Optional[inventory.Inventory] = field(default=None, compare=False, repr=False)
    # The nftables rows as check read them (None: nftables not looked at).
    nft_found: Optional[NftInventory] = field(default=None, compare=False, repr=False)
    # What a repair could not make: (family, network, container ID, chain, why).
    unrepaired: Tuple[Tuple[int, str, str, str, str], ...] = ()

    # Of mappings_checked, those kept in nftables (a container's rules, not a chain).
    nft_checked: int = 0

    @property
    def healthy(self) -> bool:
        return not self.problems


# --- what should be there -----------------------------------------------------------


def cached_configs(attachments: Optional[Sequence[Attachment]]) -> List[MappingConfig]:
    """The mapping of every cached attachment that has one, one per chain name.

    Two attachments of one container on one network (two interfaces) would share a
    chain; the plugin would make them overwrite each other, we keep the first.
    A zombie's mapping is not expected (and so never repaired): its container is gone.
    """
    found: Dict[str, MappingConfig] = {}
    for attachment in attachments or ():
        if attachment.mapping is not None and not attachment.zombie:
            found.setdefault(dnat_chain_name(attachment.mapping), attachment.mapping)
    return list(found.values())


def _merge(chains: Sequence[Chain]) -> List[Chain]:
    """Shared chains wanted by several containers, as one chain each.

    The plugin appends a shared chain's rules only when missing, so containers with
    different mark bits leave one SETMARK rule each: their union is what is wanted.
    """
    merged: Dict[str, Chain] = {}
    for chain in chains:
        have = merged.get(chain.name)
        if have is None:
            merged[chain.name] = chain
            continue
        if chain == have:
            continue  # the usual case: every container wants the same shared chain
        merged[chain.name] = Chain(
            chain.name,
            rules=tuple(dict.fromkeys(have.rules + chain.rules)),
            entry_chains=tuple(dict.fromkeys(have.entry_chains + chain.entry_chains)),
            entry_rules=tuple(dict.fromkeys(have.entry_rules + chain.entry_rules)),
            prepend_entry=have.prepend_entry,
            table=have.table,
        )
    return list(merged.values())


def wanted_on_node(
    configs: Optional[Sequence[MappingConfig]], family: int, live: NatTable
) -> Tuple[List[Chain], List[Tuple[MappingConfig, Chain]]]:
    """(shared chains, (config, CNI-DN- chain) per container) wanted in one family.

    With a cache, from the cached configs (SNAT and externalSetMarkChain decide
    whether SETMARK/MASQ are wanted). A container's chain found exactly in the shape
    an older plugin version made for its config (iptables/shapes.py) is wanted as it
    is: healthy, never rewritten; a v0.6-shaped one needs no SETMARK/MASQ. Without a
    cache (`configs` None) what the live table implies without knowing any config:
    per-container chains need CNI-HOSTPORT-DNAT and its jumps, and chains that mark
    through CNI-HOSTPORT-SETMARK need its MARK rule and the MASQ chain.
    """
    if configs is None:
        if not any(name.startswith(DNAT_PREFIX) for name in live.chains):
            return [], []
        found = [toplevel_dnat_chain(family)]
        if shapes.uses_setmark(live):
            bit = shapes.mark_bit_in(live)
            bit = DEFAULT_MARK_BIT if bit is None else bit
            found += [setmark_chain(bit, family), masq_chain(bit, family)]
        return found, []
    shared: List[Chain] = []
    per_container: List[Tuple[MappingConfig, Chain]] = []
    for config in configs:
        old = shapes.as_found(config, family, live)
        for chain in wanted_chains(config, family):
            if chain.shared:
                # v0.6 made no SETMARK/MASQ, but entered CNI-HOSTPORT-DNAT from
                # PREROUTING and OUTPUT as every version since: those jumps are wanted.
                if old is None or old[0] is not shapes.Shape.V0_6 or chain.name == TOPLEVEL_DNAT:
                    shared.append(chain)
            else:
                per_container.append((config, old[1] if old else chain))
    return _merge(shared), per_container


# --- comparing ------------------------------------------------------------------------


def held_elsewhere(live: NatTable, other: Optional[NatTable], chains: Collection[str]) -> bool:
    """Whether the family's portmap state is in the other iptables flavour's table:
    CNI-HOSTPORT-DNAT and the chain of a cached container (`chains`: their names) there,
    no CNI-HOSTPORT-DNAT here (the plugin runs that other iptables?). Shared chains
    alone there are what a DEL leaves behind, stale chains what it failed to remove:
    no sign of where the plugin writes now."""
    return (
        other is not None
        and other.has_chain(TOPLEVEL_DNAT)
        and not live.has_chain(TOPLEVEL_DNAT)
        and any(other.has_chain(name) for name in chains)
    )


def _check_shared(
    chain: Chain, live: NatTable, fixes: Fixes, elsewhere: Optional[str] = None
) -> List[Problem]:
    """`elsewhere` names the other iptables flavour when the chain exists there."""
    family = live.family
    fix = fixes.repair
    why = {
        TOPLEVEL_DNAT: "no host port on this node is forwarded to its container",
        SETMARK: "hairpin and localhost connections to mapped ports are not marked for"
        " masquerade, so they fail",
        MASQ: "marked connections are not masqueraded: hairpin and localhost connections"
        " to mapped ports fail",
    }.get(chain.name, "the plugin's shared structure is incomplete")
    if not live.has_chain(chain.name):
        jumps = ""
        if chain.entry_chains:
            plural = "s" if len(chain.entry_chains) > 1 else ""
            jumps = f" and the {'/'.join(chain.entry_chains)} jump{plural} to it"
        detail = f"chain {chain.name}{jumps} {'are' if jumps else 'is'} gone" + (
            f" (it is in the {elsewhere} tables: is the plugin using iptables-{elsewhere}?)"
            if elsewhere
            else " (flushed by firewalld or a script?)"
        )
        return [
            Problem(
                ProblemKind.MISSING_TOPLEVEL,
                family,
                chain.name,
                None,
                None,
                detail,
                fixes.only_in(elsewhere) if elsewhere else fix,
                why,
                _saved_all(
                    [(entry, rule) for entry in chain.entry_chains for rule in chain.entry_rules]
                    + [(chain.name, rule) for rule in chain.rules]
                ),
            )
        ]
    problems = []
    live_rules = live.rules(chain.name)
    for rule in chain.rules:
        if rule not in live_rules:
            problems.append(
                Problem(
                    ProblemKind.MISSING_TOPLEVEL_RULE,
                    family,
                    chain.name,
                    None,
                    None,
                    f"rule missing: {format_rule('-A', chain.name, rule)}",
                    fix,
                    why,
                    _saved(chain.name, [rule]),
                )
            )
    jump_why = {
        "PREROUTING": "connections from other hosts to mapped host ports are not forwarded",
        "OUTPUT": "connections from the node itself to mapped host ports are not forwarded",
        "POSTROUTING": why,
    }
    for entry_chain in chain.entry_chains:
        present = live.rules(entry_chain)
        for rule in chain.entry_rules:
            if rule not in present:
                problems.append(
                    Problem(
                        ProblemKind.MISSING_JUMP,
                        family,
                        entry_chain,
                        None,
                        None,
                        f"{entry_chain} does not jump to {chain.name}",
                        fix,
                        jump_why.get(entry_chain, why),
                        _saved(entry_chain, [rule]),
                    )
                )
    return problems


@dataclass(frozen=True)
class _EntryIndex:
    """CNI-HOSTPORT-DNAT's rules, indexed once per table. A node check looks up every
    container's entry rules there; scanning the chain (2 rules per container) for each
    container made it quadratic: 20 s at 5,000 containers (benchmarks/bench.py)."""

    present: FrozenSet[Args]
    by_target: Dict[Optional[str], List[Args]]


def _entry_index(live: NatTable) -> _EntryIndex:
    by_target: Dict[Optional[str], List[Args]] = {}
    rules = live.rules(TOPLEVEL_DNAT)
    for rule in rules:
        by_target.setdefault(rule_target(rule), []).append(rule)
    return _EntryIndex(frozenset(rules), by_target)


def _check_container(
    config: MappingConfig,
    wanted: Chain,
    live: NatTable,
    fix: str,
    *,
    exact: bool,
    elsewhere: Optional[str] = None,
    elsewhere_fix: Optional[str] = None,
    entries: Optional[_EntryIndex] = None,
) -> List[Problem]:
    """One container's CNI-DN- chain and its entry rules against the live table.

    `exact` (node check) also reports rules that should not be there and a wrong
    order; without it, exactly the plugin's CHECK: every wanted rule present.
    `elsewhere` names the other iptables flavour when the chain exists there, and
    `elsewhere_fix` is the fix of the chain missing here then.
    `entries` is `_entry_index(live)`, made once by a caller that checks many.
    """
    family = live.family
    name = wanted.name
    who = (config.network, config.container_id)

    def problem(kind: str, detail: str, why: str, rules: Tuple[str, ...]) -> Problem:
        return Problem(kind, family, name, *who, detail, fix, why, rules)

    if not live.has_chain(name):
        detail = f"chain missing for {_config_ports(config, family)}"
        if elsewhere:
            detail += (
                f" (it is in the {elsewhere} tables: is the plugin using iptables-{elsewhere}?)"
            )
            # Repair leaves it (a copy here would be a split brain): not its command.
            fix = elsewhere_fix or fix
        return [
            problem(
                ProblemKind.MISSING_CHAIN,
                detail,
                "the container's host ports are not forwarded",
                _saved(name, wanted.rules) + _saved(TOPLEVEL_DNAT, wanted.entry_rules),
            )
        ]
    problems = []
    live_rules = live.rules(name)
    missing = [r for r in wanted.rules if r not in live_rules]
    if missing:
        dnat_gone = any(rule_target(r) == "DNAT" for r in missing)
        problems.append(
            problem(
                ProblemKind.MISSING_RULES,
                f"{len(missing)} of {len(wanted.rules)} rules missing: {_rules_text(name, missing)}",
                "some of its host ports are not forwarded"
                if dnat_gone
                else "hairpin and localhost connections to its host ports fail (no masquerade mark)",
                _saved(name, missing),
            )
        )
    if exact:
        extra = [r for r in live_rules if r not in wanted.rules]
        if extra:
            problems.append(
                problem(
                    ProblemKind.EXTRA_RULES,
                    f"{len(extra)} rules its cached config does not make: {_rules_text(name, extra)}",
                    "the chain does not match the container's config (an old address or port?):"
                    " traffic may go to the wrong place",
                    _saved(name, extra),
                )
            )
        elif not missing and live_rules != wanted.rules:
            problems.append(
                problem(
                    ProblemKind.RULES_ORDER,
                    "the right rules in the wrong order (or repeated)",
                    "iptables stops at the DNAT rule: a mark rule after it never runs",
                    _saved(name, wanted.rules),
                )
            )
    index = entries if entries is not None else _entry_index(live)
    missing_entries = [r for r in wanted.entry_rules if r not in index.present]
    if missing_entries:
        ports = ", ".join(
            f"{option_value(r, '-p')}/{option_value(r, '--dports')}" for r in missing_entries
        )
        problems.append(
            problem(
                ProblemKind.MISSING_ENTRY,
                f"no entry rule in {TOPLEVEL_DNAT} for {ports}"
                f" ({len(missing_entries)} of {len(wanted.entry_rules)} missing)",
                "nothing sends those host ports to the chain: they are not forwarded",
                _saved(TOPLEVEL_DNAT, missing_entries),
            )
        )
    if exact:
        extra_entries = [r for r in index.by_target.get(name, ()) if r not in wanted.entry_rules]
        if extra_entries:
            problems.append(
                problem(
                    ProblemKind.EXTRA_ENTRY,
                    f"{TOPLEVEL_DNAT} has entry rules its cached config does not make:"
                    f" {_rules_text(TOPLEVEL_DNAT, extra_entries)}",
                    "host ports the container no longer maps are still sent to it",
                    _saved(TOPLEVEL_DNAT, extra_entries),
                )
            )
    return problems


def _inventory_problems(
    found: inventory.Inventory,
    derived: ReadOnly[int, set],
    live_chains: set,
    fixes: Fixes,
) -> List[Problem]:
    """What `list` marks, for chains the cached-config comparison does not cover.

    `derived[family]` are the chains compared with a cached config: for them only
    shadowing is added here (the comparison already says what is missing).
    """
    problems: List[Problem] = []
    by_chain = {(c.name, c.family): c for c in found.chains}
    shadowed: Dict[Tuple[str, int], List[inventory.Mapping]] = {}
    for m in found.mappings:
        if m.shadowed_by:
            shadowed.setdefault((m.chain, m.family), []).append(m)

    for c in found.chains:
        who = (c.network, c.container_id)
        if c.kind == "legacy-snat":
            live = c.name in live_chains
            problems.append(
                Problem(
                    ProblemKind.LEGACY,
                    c.family,
                    c.name,
                    *who,
                    f"pre-2018 SNAT chain of {_who(*who)}"
                    + (" (stale)" if ProblemKind.STALE in c.status else ""),
                    "harmless while the container runs; `portmapctl gc` removes it once it is gone"
                    if live
                    else fixes.gc,
                    "nothing creates or uses these chains any more; they only take up the table",
                    _entries_or_rules(c),
                )
            )
            continue
        if c.name in derived.get(c.family, ()):
            pass
        elif ProblemKind.STALE in c.status:
            # One row: gc removes the chain, whatever else is wrong with it (said here).
            also = " and nothing enters it" if ProblemKind.ORPHAN in c.status else ""
            maps = _ports_text([p for p in c.host_ports if p not in c.missing_ports])
            if ProblemKind.INCOMPLETE in c.status:
                maps += (
                    f"; entry rules send {_ports_text(c.missing_ports)} here but no rule DNATs them"
                )
            problems.append(
                Problem(
                    ProblemKind.STALE,
                    c.family,
                    c.name,
                    *who,
                    f"no CNI cache entry for {_who(*who)}{also}; it maps {maps}",
                    fixes.gc,
                    "the container is gone but its host ports stay taken: a new container on"
                    " them gets no traffic",
                    _entries_or_rules(c),
                )
            )
            continue
        else:
            if ProblemKind.ORPHAN in c.status:
                problems.append(
                    Problem(
                        ProblemKind.ORPHAN,
                        c.family,
                        c.name,
                        *who,
                        f"no rule enters this chain ({_ports_text(c.host_ports)})",
                        fixes.gc,
                        "it forwards nothing and nothing will ever remove it but gc",
                        _saved(c.name, c.rules),
                    )
                )
            if ProblemKind.INCOMPLETE in c.status:
                problems.append(
                    Problem(
                        ProblemKind.INCOMPLETE,
                        c.family,
                        c.name,
                        *who,
                        f"entry rules send {_ports_text(c.missing_ports)} here but no rule"
                        f" DNATs them; {_falls_through(found, c, c.missing_ports)}",
                        "re-create the mapping (`portmapctl add ...`), or `portmapctl gc` it if"
                        " the container is gone",
                        _FALLS_THROUGH_WHY,
                        _entries_for(c, c.missing_ports),
                    )
                )
        if ProblemKind.DEAD in c.status:
            problems.append(_dead_problem(found, c, fixes))
        rows = shadowed.get((c.name, c.family))
        if rows:
            problems.append(_shadow_problem(c, rows, by_chain, fixes))
    return problems


_FALLS_THROUGH_WHY = (
    "iptables returns from a chain with no matching rule and goes on down"
    f" {TOPLEVEL_DNAT}: a later entry rule's chain takes those ports, or if none does the"
    " connection reaches the node itself; the container gets none of it"
)


def _falls_through(
    found: inventory.Inventory,
    chain: inventory.ChainInfo,
    ports: Sequence[Tuple[str, int]],
    host_ip: Optional[str] = None,
) -> str:
    """Where those ports' connections go instead (for a problem's detail): the chain
    has no matching rule, so it returns and CNI-HOSTPORT-DNAT goes on."""
    table = found.tables.get(chain.family)
    after = min((e.index for e in chain.entries if e.chain == TOPLEVEL_DNAT), default=None)
    taken: Dict[str, List[str]] = {}
    alone: List[str] = []
    for proto, port in ports:
        taker = None
        if table is not None and after is not None:
            taker = shapes.first_taker(table, proto, port, after, host_ip)
        if taker is None:
            alone.append(f"{proto}/{port}")
        else:
            taken.setdefault(taker, []).append(f"{proto}/{port}")
    parts = []
    for taker, words in taken.items():
        other = next(
            (o for o in found.chains if o.name == taker and o.family == chain.family), None
        )
        who = _who(other.network, other.container_id) if other else "?"
        parts.append(f"{taker} ({who}) takes {', '.join(words)} instead")
    if alone:
        parts.append(f"no later chain takes {', '.join(alone)}: the node itself gets them")
    return "; ".join(parts)


def _dead_problem(found: inventory.Inventory, c: inventory.ChainInfo, fixes: Fixes) -> Problem:
    dead = [m for m in found.mappings if m.chain == c.name and m.family == c.family]
    dead = [m for m in dead if ProblemKind.DEAD in m.status]
    ports = [(m.protocol, m.host_port) for m in dead]
    where = dead[0].host_ip if dead else "0.0.0.0"
    prefix = 128 if ":" in (where or "") else 32
    return Problem(
        ProblemKind.DEAD,
        c.family,
        c.name,
        c.network,
        c.container_id,
        f"{_ports_text(ports)} only for destination {where}/{prefix} (host IP {where} as"
        f" plugins before v0.8.7 wrote it), which no packet has; {_falls_through(found, c, ports)}",
        "re-create the container under a current plugin (it writes no -d for 0.0.0.0),"
        f" or {fixes.gc} once it is gone",
        "a rule that never matches: the mapping forwards nothing and takes no port from"
        f" anyone; iptables returns from the chain and goes on down {TOPLEVEL_DNAT}",
        _saved(
            c.name,
            [r for r in c.rules if shapes.is_dead_destination(option_value(r, "-d") or "")],
        ),
    )


_FOREIGN_FIX = (
    "the node's other NAT owner (kube-proxy NodePort, Docker -p, a hand-written rule)"
    " holds this port: free it there or re-create the container on another host port"
)
_FOREIGN_WHY = (
    "iptables uses the first rule that ends NAT for a packet: a rule ahead of PREROUTING's"
    " jump to CNI-HOSTPORT-DNAT takes those ports, and this container gets no traffic on"
    " them"
)


def _shadow_problem(
    loser: inventory.ChainInfo,
    rows: Sequence[inventory.Mapping],
    by_chain: ReadOnly[Tuple[str, int], inventory.ChainInfo],
    fixes: Fixes,
) -> Problem:
    winners: Dict[str, List[str]] = {}
    for m in rows:
        winners.setdefault(m.shadowed_by or "?", []).append(f"{m.protocol}/{m.host_port}")
    parts = []
    winner_stale = winner_zombie = foreign = False
    for name, ports in winners.items():
        if name.startswith("-A "):
            # Another tool's rule ahead of the plugin's entry (iptables/foreign.py).
            foreign = True
            parts.append(
                f"{', '.join(ports)} taken first by a rule outside the plugin's chains: {name}"
            )
            continue
        winner = by_chain.get((name, loser.family))
        who = _who(winner.network, winner.container_id) if winner else "?"
        winner_stale = winner_stale or (winner is not None and ProblemKind.STALE in winner.status)
        # A zombie's container is gone too (Nomad: a new allocation on the static port
        # of one whose pause container vanished), but only gc --netns-liveness removes it.
        winner_zombie = winner_zombie or (
            winner is not None and ProblemKind.ZOMBIE in winner.status
        )
        parts.append(f"{', '.join(ports)} taken first by {name} ({who}), which wins")
    if foreign:
        # No command of ours may touch another tool's rule: prose (JSON fix null).
        fix = _FOREIGN_FIX
    elif winner_stale:
        fix = f"{fixes.gc} (the winner is stale)"
    elif winner_zombie:
        fix = f"{fixes.gc} --netns-liveness (the winner is a zombie)"
    else:
        fix = "two containers claim one host port: re-create one of them with another host port"
    return Problem(
        ProblemKind.SHADOWED,
        loser.family,
        loser.name,
        loser.network,
        loser.container_id,
        "; ".join(parts),
        fix,
        _FOREIGN_WHY
        if foreign
        else "iptables uses the first matching rule in CNI-HOSTPORT-DNAT: this container gets"
        " no traffic on those ports",
        _entries_for(loser, [(m.protocol, m.host_port) for m in rows]),
    )


def _zombies(
    attachments: Sequence[Attachment],
    tables: ReadOnly[int, NatTable],
    fixes: Fixes,
    nft_backed: Collection[str] = (),
    nft_owners: Optional[Collection[str]] = None,
) -> List[Problem]:
    """Cache entries whose network namespace is gone, that have or would have chains.

    gc --netns-liveness removes a zombie's chains (or, for the `nft_backed` IDs, its
    nftables rules: those of `nft_owners`, the IDs with rules left; None when not
    known), never its cache entry: once a zombie has nothing left there, gc has
    nothing more to do, and the fix is the runtime's (or a person's)."""
    problems: List[Problem] = []
    seen = set()
    for a in attachments:
        if not a.zombie or a.dnat_chain in seen:
            continue
        present = [f for f in sorted(tables) if tables[f].has_chain(a.dnat_chain)]
        if a.mapping is None and not present:
            continue  # no port mappings: nothing of portmap's to say about it
        seen.add(a.dnat_chain)
        where = f"; its chain is still in IPv{'/IPv'.join(map(str, present))}" if present else ""
        owned = nft_owners is not None and a.container_id in nft_owners
        in_nft = owned or a.container_id in nft_backed
        if owned:
            where += "; its rules are still in nftables"
        problems.append(
            Problem(
                ProblemKind.ZOMBIE,
                present[0] if len(present) == 1 else None,
                # An nftables container's: no chain of its own (JSON backend nftables).
                a.dnat_chain if present or not in_nft else "nft",
                a.network,
                a.container_id,
                f"cached, but its network namespace {a.netns} is gone{where}; not repaired",
                f"{fixes.gc} --netns-liveness"
                if present or owned or (a.container_id in nft_backed and nft_owners is None)
                else f"nothing of it is left for gc to remove: delete its cache entry {a.path}"
                " once the runtime is done with the container",
                "the runtime forgot the container without a CNI DEL: its cache entry keeps"
                " its host ports taken",
            )
        )
    return problems


def _duplicates(live: NatTable, fixes: Fixes) -> List[Problem]:
    """Identical rules jumping to a portmap chain, more than once in one chain."""
    problems = []
    for saved in live.chains.values():
        if len(set(saved.rules)) == len(saved.rules):
            continue  # no rule twice in this chain (the usual case: a set, in C)
        counts = Counter(r for r in saved.rules if _is_portmap_chain(rule_target(r) or ""))
        for rule, count in counts.items():
            if count < 2:
                continue
            network, container_id = inventory.parse_comment(rule)
            problems.append(
                Problem(
                    ProblemKind.DUPLICATE_ENTRY,
                    live.family,
                    saved.name,
                    network,
                    container_id,
                    f"{count} copies of {format_rule('-A', saved.name, rule)}",
                    f"delete one copy: {fixes.iptables(live.family, '-D', saved.name, rule)}",
                    "a sign that a script or another tool re-adds the plugin's rules; every"
                    " packet walks each copy",
                    _saved(saved.name, [rule]),
                )
            )
    return problems


def _is_portmap_chain(name: str) -> bool:
    return name in SHARED_CHAINS or name.startswith((DNAT_PREFIX, SNAT_PREFIX))


def split_brain(
    tables: ReadOnly[int, NatTable],
    other_tables: ReadOnly[int, NatTable],
    used: str,
    other: str,
) -> List[Problem]:
    """Portmap chains present in both flavours' tables (empty tables do not count)."""
    problems = []
    for family in sorted(tables):
        other_table = other_tables.get(family)
        if other_table is None:
            continue
        both = [
            n for n in tables[family].chains if _is_portmap_chain(n) and other_table.has_chain(n)
        ]
        if not both:
            continue
        tool = "ip6tables" if family == 6 else "iptables"
        problems.append(
            Problem(
                ProblemKind.SPLIT_BRAIN,
                family,
                None,
                None,
                None,
                f"{len(both)} portmap chains are in both the {used} and the {other} tables:"
                f" {_names_text(both)}",
                f"find which iptables the plugin runs (`{tool} --version`), then remove the"
                f" portmap chains from the other one ({tool}-{other}-save -t nat shows them)",
                "the kernel applies both copies but each iptables shows only its own: mappings"
                " work on one node and not on another, and gc or the plugin cleans only one",
            )
        )
    return problems


# --- the rules a problem is about ------------------------------------------------------


def _saved_line(chain: str, rule: Args) -> str:
    try:
        return format_rule("-A", chain, rule)
    except BadInput:  # a control character read from a dump: shown escaped, never run
        return " ".join(["-A", chain, *(t.encode("unicode_escape").decode() for t in rule)])


def _saved(chain: str, rules: Sequence[Args]) -> Tuple[str, ...]:
    """Rules of `chain` as iptables-save prints them."""
    return tuple(_saved_line(chain, rule) for rule in rules)


def _saved_all(rules: Sequence[Tuple[str, Args]]) -> Tuple[str, ...]:
    return tuple(_saved_line(chain, rule) for chain, rule in rules)


def _entries_or_rules(c: inventory.ChainInfo) -> Tuple[str, ...]:
    """The rules that jump to a chain (they take its host ports), else its own rules."""
    if c.entries:
        return _saved_all([(e.chain, e.args) for e in c.entries])
    return _saved(c.name, c.rules)


def _entries_for(c: inventory.ChainInfo, ports: Sequence[Tuple[str, int]]) -> Tuple[str, ...]:
    """The entry rules of a chain that name one of `ports`."""
    wanted = set(ports)
    return _saved_all([(e.chain, e.args) for e in c.entries if wanted & set(e.ports)])


# --- the checks -----------------------------------------------------------------------


def diagnose(
    tables: ReadOnly[int, NatTable],
    attachments: Optional[Sequence[Attachment]],
    fixes: Fixes = Fixes(),
    *,
    other_tables: Optional[ReadOnly[int, NatTable]] = None,
    flavours: Optional[Tuple[str, str]] = None,
    found: Optional[inventory.Inventory] = None,
    not_expected: Collection[str] = (),
    judged: Optional[Collection[str]] = None,
    nft_owners: Optional[Collection[str]] = None,
    nft_entries: Collection[Tuple[str, str]] = (),
) -> Tuple[List[Problem], int]:
    """Every problem of a node (pure). Returns (problems, mappings compared).

    `attachments` is the CNI cache (None: there is none). `other_tables` are the same
    families read from the other iptables flavour; `flavours` is (used, other).
    `found` is the inventory of `tables` and `attachments`, when the caller has it.
    Of the containers in `not_expected` (IDs) nothing is expected in iptables: their
    rules are in nftables, or iptables is not looked at (--backend nftables); nor of
    the cache entries `nft_entries` ((network, ID): nft-backed ones; a container on
    two networks may have one entry per backend).
    `judged` (None: every one) are the containers whose cache entries are judged
    (zombies): those of the backends looked at (a zombie's fix, gc with the same
    --backend, would not reach another backend's rules). `nft_owners`: the IDs with
    rules left in the plugin's nftables tables (None: not known).
    """
    configs = cached_configs(attachments) if attachments is not None else None
    if configs is not None and (not_expected or nft_entries):
        configs = [
            c
            for c in configs
            if c.container_id not in not_expected and (c.network, c.container_id) not in nft_entries
        ]
    problems: List[Problem] = []
    other_flavour = flavours[1] if flavours else None
    if other_tables and flavours:
        problems += split_brain(tables, other_tables, *flavours)
    derived: Dict[int, set] = {}
    compared = 0
    for family in sorted(tables):
        live = tables[family]
        other = (other_tables or {}).get(family)
        shared, per_container = wanted_on_node(configs, family, live)
        cached_here = [chain.name for _, chain in per_container]
        there = other_flavour if held_elsewhere(live, other, cached_here) else None
        for chain in shared:
            problems += _check_shared(
                chain,
                live,
                fixes,
                elsewhere=there if other is not None and other.has_chain(chain.name) else None,
            )
        derived[family] = set()
        index = _entry_index(live)
        for config, chain in per_container:
            compared += 1
            derived[family].add(chain.name)
            elsewhere = other_flavour if other is not None and other.has_chain(chain.name) else None
            problems += _check_container(
                config,
                chain,
                live,
                fixes.repair,
                exact=True,
                elsewhere=elsewhere,
                elsewhere_fix=fixes.only_in(elsewhere) if elsewhere else None,
                entries=index,
            )
    if found is None:
        found = inventory.build(tables, attachments)
    live_names = {dnat_chain_name(c) for c in configs or ()}
    live_names |= {a.snat_chain for a in attachments or ()}
    problems += _inventory_problems(found, derived, live_names, fixes)
    entries = [a for a in attachments or () if judged is None or a.container_id in judged]
    nft_backed = {*not_expected, *(cid for _network, cid in nft_entries)}
    problems += _zombies(entries, tables, fixes, nft_backed, nft_owners)
    for family in sorted(tables):
        problems += _duplicates(tables[family], fixes)
    return problems, compared


def diagnose_mapping(
    tables: ReadOnly[int, NatTable],
    config: MappingConfig,
    fix: str,
    elsewhere: ReadOnly[int, str] = {},  # noqa: B006 - read only
) -> Tuple[List[Problem], int]:
    """What the plugin's CHECK verifies for one mapping, a missing chain included.
    `elsewhere`: the other iptables flavour, by family, where it alone holds the chain."""
    problems: List[Problem] = []
    compared = 0
    for family in config.families:
        if family not in tables:
            continue
        wanted = dnat_chain(config, family)
        if wanted is None:
            continue
        compared += 1
        other = elsewhere.get(family)
        problems += _check_container(
            config,
            wanted,
            tables[family],
            fix,
            exact=False,
            elsewhere=other,
            elsewhere_fix=Fixes(flavour=other_flavour(other)).only_in(other) if other else None,
        )
    return problems, compared
