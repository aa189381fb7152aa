"""`check`: every way a node's portmap state is wrong; `--repair` of what is missing.

Node check (no mapping given): for every attachment in the CNI cache that carries
port mappings, the chains the plugin would have made (`model.wanted_chains`) are
compared with the live table; the shared top-level chains and jumps those mappings
need must be there; and everything `list` can mark (shadowed, orphan, incomplete,
stale, legacy) is reported, plus duplicate entry rules and portmap chains present in
both the legacy and the nf_tables tables (split brain).

Mapping check (a `MappingConfig` given): what the plugin's CHECK verifies -- the
per-container chain, its rules and its entry rules, in each family the container has
an address in -- except that a missing chain is a failure (the seed's bug, SPEC §2).

Repair plans with `planner.plan_setup` from the same wanted chains the check compares
against and applies through `Node.converge`: it only creates what is missing (a
cached container's own chain is rewritten when its rules differ, as the plugin's ADD
would), never deletes another container's chain, and leaves stale state to `gc`.

`diagnose` and `diagnose_mapping` are pure (tables and cache in, problems out); the
`check_*`/`repair` functions add the reading and writing.
"""

from __future__ import annotations

import os
import shlex
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Collection, Dict, FrozenSet, List, Optional, Sequence, Tuple
from typing import Mapping as ReadOnly

from portmapctl.cni.cache import Attachment
from portmapctl.core.mapping import MappingConfig
from portmapctl.errors import BadInput, HostProblem
from portmapctl.iptables import inventory
from portmapctl.iptables.chains import (
    DNAT_PREFIX,
    MASQ,
    SETMARK,
    SNAT_PREFIX,
    TOPLEVEL_DNAT,
    Chain,
    dnat_chain,
    dnat_chain_name,
    toplevel_dnat_chain,
    wanted_chains,
)
from portmapctl.iptables.planner import plan_setup
from portmapctl.iptables.ruleset import (
    Args,
    NatTable,
    command_line,
    format_rule,
    option_value,
    rule_target,
)
from portmapctl.iptables.transaction import Transaction
from portmapctl.ops.add import after_setup
from portmapctl.ops.node import DEFAULT_CACHE_DIR, Node

# Problem kinds: stable words (JSON consumers match on them).
MISSING_CHAIN = "missing-chain"  # a cached container's CNI-DN- chain is not there
MISSING_RULES = "missing-rules"  # ... it is there but lacks some of its rules
EXTRA_RULES = "extra-rules"  # ... it holds rules its cached config does not make
RULES_ORDER = "rules-order"  # ... the right rules, in the wrong order (or repeated)
MISSING_ENTRY = "missing-entry"  # CNI-HOSTPORT-DNAT lacks an entry rule to the chain
EXTRA_ENTRY = "extra-entry"  # CNI-HOSTPORT-DNAT sends ports the container does not map
MISSING_TOPLEVEL = "missing-toplevel"  # CNI-HOSTPORT-DNAT/SETMARK/MASQ is gone
MISSING_TOPLEVEL_RULE = "missing-toplevel-rule"  # SETMARK's or MASQ's rule is gone
MISSING_JUMP = "missing-jump"  # PREROUTING/OUTPUT/POSTROUTING no longer jump in
SHADOWED = "shadowed"
ORPHAN = "orphan"
INCOMPLETE = "incomplete"
STALE = "stale"
LEGACY = "legacy"
DUPLICATE_ENTRY = "duplicate-entry"
SPLIT_BRAIN = "split-brain"

_PORTMAP_SHARED = (TOPLEVEL_DNAT, SETMARK, MASQ, "CNI-HOSTPORT-SNAT")
_SHOWN = 3  # how many rules or chains a detail names before "and N more"


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

    @property
    def healthy(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class Fixes:
    """How fix commands are spelled on this node: with the options check was run with."""

    suffix: str = ""
    flavour: Optional[str] = None  # which iptables a hand-typed fix names
    cache_present: bool = True

    @property
    def repair(self) -> str:
        return f"portmapctl check --repair{self.suffix}"

    @property
    def gc(self) -> str:
        if self.cache_present:
            return f"portmapctl gc{self.suffix}"
        # gc refuses to guess which containers are live without a source of liveness.
        return f"portmapctl gc --valid-attachments FILE{self.suffix}"

    def iptables(self, family: int, command: str, chain: str, args: Args) -> str:
        return command_line(family, self.flavour, command, chain, args)


def fixes_for(node: Node, cache_present: bool = True) -> Fixes:
    options = node.options
    suffix = ""
    if options.netns:
        suffix += f" --netns {shlex.quote(options.netns)}"
    if options.backend != "auto":
        suffix += f" --backend {options.backend}"
    if options.iptables != "auto":
        suffix += f" --iptables {options.iptables}"
    if tuple(options.families) != (4, 6):
        suffix += " --family " + ("all" if len(options.families) != 1 else str(options.families[0]))
    if options.cache_dir != DEFAULT_CACHE_DIR:
        suffix += f" --cni-cache-dir {shlex.quote(options.cache_dir)}"
    return Fixes(suffix, _flavour(node), cache_present)


def _flavour(node: Node) -> Optional[str]:
    """nft or legacy: the iptables the backend works on (None for a snapshot)."""
    if node.options.snapshots:
        return None
    return {"nft": "nft", "legacy": "legacy", "iptc": "legacy"}.get(node.backend.name)


# --- describing things ------------------------------------------------------------


def _who(network: Optional[str], container_id: Optional[str]) -> str:
    if network is None and container_id is None:
        return "an unknown container"
    return f"{network or '?'}/{container_id or '?'}"


def _ports_text(ports: Sequence[Tuple[str, int]]) -> str:
    return ", ".join(f"{proto}/{port}" for proto, port in ports) or "no ports"


def _config_ports(config: MappingConfig, family: int) -> str:
    address = config.address(family)
    ip = "?" if address is None else address.ip.compressed
    ip = f"[{ip}]" if family == 6 else ip
    return ", ".join(
        f"{p.protocol}/{p.host_port}->{ip}:{p.container_port}"
        for p in config.ports
        if p.applies_to(family)
    )


def _rules_text(chain: str, rules: Sequence[Args], command: str = "-A") -> str:
    shown = "; ".join(format_rule(command, chain, r) for r in rules[:_SHOWN])
    more = len(rules) - _SHOWN
    return shown + (f"; and {more} more" if more > 0 else "")


def _names_text(names: Sequence[str]) -> str:
    more = len(names) - _SHOWN
    return ", ".join(names[:_SHOWN]) + (f" and {more} more" if more > 0 else "")


# --- what should be there -----------------------------------------------------------


def cached_configs(attachments: Optional[Sequence[Attachment]]) -> List[MappingConfig]:
    """The mapping of every cached attachment that has one, one per chain name.

    Two attachments of one container on one network (two interfaces) would share a
    chain; the plugin would make them overwrite each other, we keep the first.
    """
    found: Dict[str, MappingConfig] = {}
    for attachment in attachments or ():
        if attachment.mapping is not None:
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
    whether SETMARK/MASQ are wanted). Without one (`configs` None) only what the live
    table implies without knowing any config: per-container chains need
    CNI-HOSTPORT-DNAT and its jumps.
    """
    if configs is None:
        live_chains = any(name.startswith(DNAT_PREFIX) for name in live.chains)
        return ([toplevel_dnat_chain(family)] if live_chains else []), []
    shared: List[Chain] = []
    per_container: List[Tuple[MappingConfig, Chain]] = []
    for config in configs:
        for chain in wanted_chains(config, family):
            if chain.shared:
                shared.append(chain)
            else:
                per_container.append((config, chain))
    return _merge(shared), per_container


# --- comparing ------------------------------------------------------------------------


def _check_shared(chain: Chain, live: NatTable, fixes: Fixes) -> List[Problem]:
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
        return [
            Problem(
                MISSING_TOPLEVEL,
                family,
                chain.name,
                None,
                None,
                f"chain {chain.name}{jumps} {'are' if jumps else 'is'} gone"
                " (flushed by firewalld or a script?)",
                fix,
                why,
            )
        ]
    problems = []
    live_rules = live.rules(chain.name)
    for rule in chain.rules:
        if rule not in live_rules:
            problems.append(
                Problem(
                    MISSING_TOPLEVEL_RULE,
                    family,
                    chain.name,
                    None,
                    None,
                    f"rule missing: {format_rule('-A', chain.name, rule)}",
                    fix,
                    why,
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
                        MISSING_JUMP,
                        family,
                        entry_chain,
                        None,
                        None,
                        f"{entry_chain} does not jump to {chain.name}",
                        fix,
                        jump_why.get(entry_chain, why),
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
    entries: Optional[_EntryIndex] = None,
) -> List[Problem]:
    """One container's CNI-DN- chain and its entry rules against the live table.

    `exact` (node check) also reports rules that should not be there and a wrong
    order; without it, exactly the plugin's CHECK: every wanted rule present.
    `elsewhere` names the other iptables flavour when the chain exists there.
    `entries` is `_entry_index(live)`, made once by a caller that checks many.
    """
    family = live.family
    name = wanted.name
    who = (config.network, config.container_id)

    def problem(kind: str, detail: str, why: str) -> Problem:
        return Problem(kind, family, name, *who, detail, fix, why)

    ports = _config_ports(config, family)
    if not live.has_chain(name):
        detail = f"chain missing for {ports}"
        if elsewhere:
            detail += (
                f" (it is in the {elsewhere} tables: is the plugin using iptables-{elsewhere}?)"
            )
        return [problem(MISSING_CHAIN, detail, "the container's host ports are not forwarded")]
    problems = []
    live_rules = live.rules(name)
    missing = [r for r in wanted.rules if r not in live_rules]
    if missing:
        dnat_gone = any(rule_target(r) == "DNAT" for r in missing)
        problems.append(
            problem(
                MISSING_RULES,
                f"{len(missing)} of {len(wanted.rules)} rules missing: {_rules_text(name, missing)}",
                "some of its host ports are not forwarded"
                if dnat_gone
                else "hairpin and localhost connections to its host ports fail (no masquerade mark)",
            )
        )
    if exact:
        extra = [r for r in live_rules if r not in wanted.rules]
        if extra:
            problems.append(
                problem(
                    EXTRA_RULES,
                    f"{len(extra)} rules its cached config does not make: {_rules_text(name, extra)}",
                    "the chain does not match the container's config (an old address or port?):"
                    " traffic may go to the wrong place",
                )
            )
        elif not missing and live_rules != wanted.rules:
            problems.append(
                problem(
                    RULES_ORDER,
                    "the right rules in the wrong order (or repeated)",
                    "iptables stops at the DNAT rule: a mark rule after it never runs",
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
                MISSING_ENTRY,
                f"no entry rule in {TOPLEVEL_DNAT} for {ports}"
                f" ({len(missing_entries)} of {len(wanted.entry_rules)} missing)",
                "nothing sends those host ports to the chain: they are not forwarded",
            )
        )
    if exact:
        extra_entries = [r for r in index.by_target.get(name, ()) if r not in wanted.entry_rules]
        if extra_entries:
            problems.append(
                problem(
                    EXTRA_ENTRY,
                    f"{TOPLEVEL_DNAT} has entry rules its cached config does not make:"
                    f" {_rules_text(TOPLEVEL_DNAT, extra_entries)}",
                    "host ports the container no longer maps are still sent to it",
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
        ports = _ports_text(c.host_ports)
        if c.kind == "legacy-snat":
            live = c.name in live_chains
            problems.append(
                Problem(
                    LEGACY,
                    c.family,
                    c.name,
                    *who,
                    f"pre-2018 SNAT chain of {_who(*who)}"
                    + (" (stale)" if STALE in c.status else ""),
                    "harmless while the container runs; `portmapctl gc` removes it once it is gone"
                    if live
                    else fixes.gc,
                    "nothing creates or uses these chains any more; they only take up the table",
                )
            )
            continue
        if c.name in derived.get(c.family, ()):
            pass
        elif STALE in c.status:
            also = " and nothing enters it" if ORPHAN in c.status else ""
            problems.append(
                Problem(
                    STALE,
                    c.family,
                    c.name,
                    *who,
                    f"no CNI cache entry for {_who(*who)}{also}; it maps {ports}",
                    fixes.gc,
                    "the container is gone but its host ports stay taken: a new container on"
                    " them gets no traffic",
                )
            )
            continue
        else:
            if ORPHAN in c.status:
                problems.append(
                    Problem(
                        ORPHAN,
                        c.family,
                        c.name,
                        *who,
                        f"no rule enters this chain ({ports})",
                        fixes.gc,
                        "it forwards nothing and nothing will ever remove it but gc",
                    )
                )
            if INCOMPLETE in c.status:
                problems.append(
                    Problem(
                        INCOMPLETE,
                        c.family,
                        c.name,
                        *who,
                        f"entry rules send {_ports_text(c.missing_ports)} here but no rule"
                        " DNATs them",
                        "re-create the mapping (`portmapctl add ...`), or `portmapctl gc` it if"
                        " the container is gone",
                        "connections to those host ports reach the node itself, not the container",
                    )
                )
        rows = shadowed.get((c.name, c.family))
        if rows:
            problems.append(_shadow_problem(c, rows, by_chain, fixes))
    return problems


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
    winner_stale = False
    for name, ports in winners.items():
        winner = by_chain.get((name, loser.family))
        who = _who(winner.network, winner.container_id) if winner else "?"
        winner_stale = winner_stale or (winner is not None and STALE in winner.status)
        parts.append(f"{', '.join(ports)} taken first by {name} ({who}), which wins")
    fix = (
        f"{fixes.gc} (the winner is stale)"
        if winner_stale
        else "two containers claim one host port: re-create one of them with another host port"
    )
    return Problem(
        SHADOWED,
        loser.family,
        loser.name,
        loser.network,
        loser.container_id,
        "; ".join(parts),
        fix,
        "iptables uses the first matching rule in CNI-HOSTPORT-DNAT: this container gets no"
        " traffic on those ports",
    )


def _duplicates(live: NatTable, fixes: Fixes) -> List[Problem]:
    """Identical rules jumping to a portmap chain, more than once in one chain."""
    problems = []
    for saved in live.chains.values():
        counts = Counter(r for r in saved.rules if _is_portmap_chain(rule_target(r) or ""))
        for rule, count in counts.items():
            if count < 2:
                continue
            network, container_id = inventory.parse_comment(rule)
            problems.append(
                Problem(
                    DUPLICATE_ENTRY,
                    live.family,
                    saved.name,
                    network,
                    container_id,
                    f"{count} copies of {format_rule('-A', saved.name, rule)}",
                    f"delete one copy: {fixes.iptables(live.family, '-D', saved.name, rule)}",
                    "a sign that a script or another tool re-adds the plugin's rules; every"
                    " packet walks each copy",
                )
            )
    return problems


def _is_portmap_chain(name: str) -> bool:
    return name in _PORTMAP_SHARED or name.startswith((DNAT_PREFIX, SNAT_PREFIX))


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
                SPLIT_BRAIN,
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


# --- the checks -----------------------------------------------------------------------


def diagnose(
    tables: ReadOnly[int, NatTable],
    attachments: Optional[Sequence[Attachment]],
    fixes: Fixes = Fixes(),
    *,
    other_tables: Optional[ReadOnly[int, NatTable]] = None,
    flavours: Optional[Tuple[str, str]] = None,
    nft_backed: Collection[str] = (),
) -> Tuple[List[Problem], int]:
    """Every problem of a node (pure). Returns (problems, mappings compared).

    `attachments` is the CNI cache (None: there is none). `other_tables` are the same
    families read from the other iptables flavour; `flavours` is (used, other).
    Containers in `nft_backed` (IDs) keep their rules in nftables: nothing of them is
    expected in iptables.
    """
    configs = cached_configs(attachments) if attachments is not None else None
    if configs is not None and nft_backed:
        configs = [c for c in configs if c.container_id not in nft_backed]
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
        for chain in shared:
            problems += _check_shared(chain, live, fixes)
        derived[family] = set()
        index = _entry_index(live)
        for config, chain in per_container:
            compared += 1
            derived[family].add(chain.name)
            elsewhere = other_flavour if other is not None and other.has_chain(chain.name) else None
            problems += _check_container(
                config, chain, live, fixes.repair, exact=True, elsewhere=elsewhere, entries=index
            )
    found = inventory.build(tables, attachments)
    live_names = {dnat_chain_name(c) for c in configs or ()}
    live_names |= {a.snat_chain for a in attachments or ()}
    problems += _inventory_problems(found, derived, live_names, fixes)
    for family in sorted(tables):
        problems += _duplicates(tables[family], fixes)
    return problems, compared


def diagnose_mapping(
    tables: ReadOnly[int, NatTable], config: MappingConfig, fix: str
) -> Tuple[List[Problem], int]:
    """What the plugin's CHECK verifies for one mapping, a missing chain included."""
    problems: List[Problem] = []
    compared = 0
    for family in config.families:
        if family not in tables:
            continue
        wanted = dnat_chain(config, family)
        if wanted is None:
            continue
        compared += 1
        problems += _check_container(config, wanted, tables[family], fix, exact=False)
    return problems, compared


def _other_flavour(
    node: Node, families: Sequence[int]
) -> Tuple[Optional[Tuple[str, str]], Dict[int, NatTable], List[str]]:
    """The same families read from the iptables flavour the backend does not use."""
    used = _flavour(node)
    if used is None:
        return None, {}, []  # a snapshot: there is no other flavour to look at
    from portmapctl.iptables.access.restore import RestoreBackend

    other = "legacy" if used == "nft" else "nft"
    backend = RestoreBackend(other)
    tables: Dict[int, NatTable] = {}
    for family in families:
        try:
            # Reading legacy tables that do not exist would create them: ask first.
            if backend.has_nat_table(family):
                tables[family] = backend.read(family)
        except HostProblem as err:
            # A host without the other flavour cannot have a split brain in it.
            return None, {}, [f"not looking for split brain: {err}"]
    return (used, other), tables, []


def check_node(node: Node) -> CheckResult:
    """Check the whole node against its CNI cache (see the module doc)."""
    return _check_node(node, node.read_cache())  # a malformed file: BadInput, named


def _check_node(node: Node, attachments: Optional[List[Attachment]]) -> CheckResult:
    tables = node.read()
    flavours, other_tables, notes = _other_flavour(node, tuple(tables))
    fixes = fixes_for(node, attachments is not None)
    nft_problems, nft_ids, nft_compared, nft_notes = _nft_problems(node, tables, attachments, fixes)
    notes += nft_notes
    problems, compared = diagnose(
        tables,
        attachments,
        fixes,
        other_tables=other_tables,
        flavours=flavours,
        nft_backed=nft_ids,
    )
    problems += nft_problems
    compared += nft_compared
    if attachments is None:
        notes.append(
            f"no CNI cache in {node.options.cache_dir}/results: cached mappings and stale"
            " chains were not checked (give --cni-cache-dir)"
        )
    chains = sum(len(inventory.per_container_chains(t)) for t in tables.values())
    return CheckResult(
        tuple(problems),
        tuple(sorted(tables)),
        "node",
        attachments is not None,
        compared,
        chains,
        notes=tuple(notes),
    )


def check_mapping(node: Node, config: MappingConfig) -> CheckResult:
    """Check one mapping as the plugin's CHECK does (a missing chain is a failure)."""
    families = tuple(f for f in config.families if f in node.families)
    if not families:
        raise BadInput(
            f"the mapping has no address in the families checked"
            f" (IPv{'/IPv'.join(map(str, node.families)) or '-'})"
        )
    tables = node.read(families)
    fix = "run the same command with --repair"
    problems, compared = diagnose_mapping(tables, config, fix)
    return CheckResult(
        tuple(problems),
        families,
        "mapping",
        mappings_checked=compared,
        chain=dnat_chain_name(config),
    )


# --- the plugin's nftables backend --------------------------------------------------

_NFT_WHY = {
    "nft-missing-table": "without the table no nft-backed host port is forwarded",
    "nft-missing-chain": "the plugin's rules have nowhere to live, or are never reached",
    "nft-missing-entry": "prerouting/output no longer send traffic to the host-port rules",
    "nft-missing-jumps": "hostports_all no longer reaches the host-port rules",
    "nft-missing-rules": "a cached container's host ports are not forwarded",
    "both-backends": "the plugin's DEL cleans one backend only: the other's rules leak",
}


def _iptables_owners(
    tables: ReadOnly[int, NatTable], attachments: Optional[Sequence[Attachment]]
) -> set:
    """Cached containers whose CNI-DN- chain is in iptables."""
    return {
        a.container_id
        for a in attachments or ()
        if any(t.has_chain(a.dnat_chain) for t in tables.values())
    }


def _configured_nft(attachments: Optional[Sequence[Attachment]]) -> set:
    """IDs of cached containers whose config says `"backend": "nftables"`."""
    return {
        a.container_id
        for a in attachments or ()
        if a.mapping is not None and a.mapping.backend == "nftables"
    }


def _nft_problems(
    node: Node,
    tables: ReadOnly[int, NatTable],
    attachments: Optional[Sequence[Attachment]],
    fixes: Fixes,
) -> Tuple[List[Problem], set, int, List[str]]:
    """(problems, IDs of nft-backed containers, mappings compared, notes)."""
    if node.nft is None:
        # nftables not looked at (--backend iptables, iptables dumps only): containers
        # configured for it are still not expected in iptables.
        return [], _configured_nft(attachments), 0, []
    from portmapctl.ops import nft

    _live, parts, found = nft.build(node, attachments, _iptables_owners(tables, attachments))
    nft_ids = {a.container_id for a in parts.nftables}
    if node.nft_unusable is not None:
        if parts.nftables:
            raise node.nft_unusable  # nft state is needed and cannot be read
        return [], nft_ids, 0, []
    problems: List[Problem] = []
    for p in found.problems:
        if node.options.families and p.family not in node.options.families:
            continue
        fix = fixes.repair
        problems.append(
            Problem(
                p.kind.value,
                p.family,
                f"nft:{p.chain or ''}".rstrip(":") or "nft",
                p.network,
                p.container_id,
                p.detail,
                fix,
                _NFT_WHY.get(p.kind.value, ""),
            )
        )
    seen_stale = set()
    for m in found.mappings:
        if "stale" in m.status and (m.container_id, m.family) not in seen_stale:
            seen_stale.add((m.container_id, m.family))
            problems.append(
                Problem(
                    STALE,
                    m.family,
                    f"nft:{m.chain}",
                    None,
                    m.container_id,
                    "nftables rules of a container the CNI cache does not know",
                    fixes.gc,
                    "its host ports stay taken by a container that is gone",
                )
            )
        if "shadowed" in m.status:
            winner_stale = any(
                w.container_id == m.shadowed_by and "stale" in w.status
                for w in found.mappings
                if w.family == m.family
            )
            shadow_fix = (
                f"{fixes.gc} (the winner is stale)"
                if winner_stale
                else "two containers claim one host port: re-create one of them with another"
                " host port"
            )
            problems.append(
                Problem(
                    SHADOWED,
                    m.family,
                    f"nft:{m.chain}",
                    m.network,
                    m.container_id,
                    f"{m.protocol}/{m.host_port} goes to {m.shadowed_by} first",
                    shadow_fix,
                    "nftables is first-match-wins: this mapping gets no traffic",
                )
            )
    for cid in parts.both:
        problems.append(
            Problem(
                "both-backends",
                None,
                None,
                None,
                cid,
                "rules in both iptables and nftables",
                fixes.gc,
                _NFT_WHY["both-backends"],
            )
        )
    compared = sum(len(a.mapping.families) for a in parts.nftables if a.mapping is not None)
    return problems, nft_ids, compared, []


def _added_at(attachment: Attachment) -> Tuple[int, str]:
    try:
        return os.stat(attachment.path).st_mtime_ns, attachment.path
    except OSError:
        return 0, attachment.path


def _nft_repair(
    node: Node, attachments: Optional[Sequence[Attachment]], dry_run: bool
) -> Tuple[str, List[Tuple[MappingConfig, List[int]]]]:
    """One `nft -f` transaction adding what nft-backed cached containers lack; its
    text and the (config, families) it (re)made, for the ADD's side effects."""
    if node.nft is None or attachments is None:
        return "", []
    from portmapctl.nftables import planner
    from portmapctl.nftables.ruleset import OUTPUT, PREROUTING
    from portmapctl.nftables.transaction import OpKind
    from portmapctl.nftables.transaction import Transaction as NftTransaction
    from portmapctl.nftables.wanted import wanted
    from portmapctl.ops import nft

    tables = node.read()
    parts = nft.split(
        attachments, node.read_nft(), _iptables_owners(tables, attachments), node.options.backend
    )
    # In ADD order (the cache files' modification times): the rule order the plugin
    # would have made, and the last ADD's conditions in prerouting/output, as on the node.
    configs = [a.mapping for a in sorted(parts.nftables, key=_added_at) if a.mapping is not None]
    if not configs:
        return "", []
    want = [w for c in configs for f in node.options.families if (w := wanted(c, f)) is not None]
    planned: List[NftTransaction] = []

    def plan(live: object) -> NftTransaction:
        txn = planner.setup(live, want)  # type: ignore[arg-type]
        planned.append(txn)
        return txn

    text = node.converge_nft(plan, dry_run=dry_run)
    if not text or not planned:
        return text, []
    touched: Dict[str, set] = {}
    dark: set = set()  # families whose entry rules were rewritten: every mapping was dark
    for op in planned[-1].ops:
        if op.kind is OpKind.ADD_RULE and op.chain in (PREROUTING, OUTPUT):
            dark.add(op.family)
        elif op.kind is OpKind.ADD_RULE and op.body is not None and op.body.comment:
            touched.setdefault(op.body.comment, set()).add(op.family)
    changed = []
    for c in configs:
        families = sorted({f for f in c.families if f in dark} | touched.get(c.container_id, set()))
        if families:
            changed.append((c, families))
    return text, changed


# --- repair ---------------------------------------------------------------------------


def _plan(
    configs: Optional[Sequence[MappingConfig]], single: Optional[MappingConfig]
) -> Callable[[NatTable], Transaction]:
    """The planner for one family: what the check compares against, made to exist."""

    def plan(live: NatTable) -> Transaction:
        if single is not None:
            return plan_setup(wanted_chains(single, live.family), live)
        shared, per_container = wanted_on_node(configs, live.family, live)
        return plan_setup([*shared, *(chain for _, chain in per_container)], live)

    return plan


def _changed(txn: Transaction, configs: Sequence[MappingConfig]) -> List[MappingConfig]:
    """The mappings a repair (re)made: their chain or entry rules were written, or the
    jumps into CNI-HOSTPORT-DNAT were (then every mapping of the family was dark)."""
    touched = set()
    whole_family = False
    for op in txn.ops:
        target = rule_target(op.args) if op.args else None
        touched.update({op.chain, target})
        if (op.kind == "new-chain" and op.chain == TOPLEVEL_DNAT) or (
            op.chain in ("PREROUTING", "OUTPUT") and target == TOPLEVEL_DNAT
        ):
            whole_family = True
    return [
        c
        for c in configs
        if txn.family in c.families and (whole_family or dnat_chain_name(c) in touched)
    ]


def repair(
    node: Node, config: Optional[MappingConfig] = None, *, flush_udp: bool = True
) -> CheckResult:
    """Create what is missing (cached mappings, or `config`, and the top-level
    structure), then check again. Returns the check after, with what was fixed."""
    if node.options.offline or (node.options.uses_iptables and not node.backend.writable):
        raise BadInput("--repair changes the node: it cannot work on a --snapshot")
    attachments: Optional[List[Attachment]] = None
    if config is not None:
        before = check_mapping(node, config)
        configs: Optional[List[MappingConfig]] = [config]
        families = before.families
    else:
        attachments = node.read_cache()
        before = _check_node(node, attachments)
        configs = cached_configs(attachments) if attachments is not None else None
        families = node.families
    plan = _plan(configs, config)
    transactions: Dict[int, str] = {}
    changed: Dict[str, Tuple[MappingConfig, List[int]]] = {}
    nft_ids: set = set()
    if config is None and node.nft is None and attachments is not None:
        nft_ids = _configured_nft(attachments)
        if configs is not None:
            configs = [c for c in configs if c.container_id not in nft_ids]
        plan = _plan(configs, config)
        nft_ids = set()  # nothing to write in nftables without looking at it
    if config is None and node.nft is not None and attachments is not None:
        from portmapctl.ops import nft

        parts = nft.split(
            attachments,
            node.read_nft(),
            _iptables_owners(node.read(), attachments),
            node.options.backend,
        )
        nft_ids = {a.container_id for a in parts.nftables}
        if configs is not None:
            configs = [c for c in configs if c.container_id not in nft_ids]
        plan = _plan(configs, config)
    for family in families:
        txn = node.converge(family, plan)
        if not txn:
            continue
        transactions[family] = txn.render()
        for c in _changed(txn, configs or []):
            changed.setdefault(dnat_chain_name(c), (c, []))[1].append(family)
    nft_changed: List[Tuple[MappingConfig, List[int]]] = []
    if nft_ids:
        text, nft_changed = _nft_repair(node, attachments, dry_run=False)
        if text:
            transactions["nft"] = text  # type: ignore[index]
    warnings: List[str] = []
    for c, fams in nft_changed:
        warnings += after_setup(c, fams, flush_udp)
    # As the plugin's ADD: route_localnet, and no UDP flow left pinned to the
    # un-NATed path it took while the mapping was missing.
    for c, fams in changed.values():
        warnings += after_setup(c, fams, flush_udp)
    after = check_mapping(node, config) if config is not None else _check_node(node, attachments)
    remaining = {p.key for p in after.problems}
    fixed = tuple(p for p in before.problems if p.key not in remaining)
    return CheckResult(
        after.problems,
        after.families,
        after.scope,
        after.cache_present,
        after.mappings_checked,
        after.chains_seen,
        after.chain,
        repaired=bool(transactions),
        fixed=fixed,
        transactions=transactions,
        notes=after.notes,
        warnings=tuple(warnings),
    )
