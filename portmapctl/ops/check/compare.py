"""Wanted chains against the live table: the shared chains and their jumps, and one
container's CNI-DN- chain and entry rules (exactly, or as the plugin's CHECK)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Collection, Dict, FrozenSet, List, Optional, Sequence, Tuple

from portmapctl.core.mapping import MappingConfig
from portmapctl.core.status import ProblemKind
from portmapctl.core.text import rules_missing
from portmapctl.iptables.chains import MASQ, SETMARK, TOPLEVEL_DNAT, Chain
from portmapctl.iptables.ruleset import Args, NatTable, option_value, rule_target
from portmapctl.iptables.shapes import entry_ports
from portmapctl.iptables.shown import shown_rule
from portmapctl.ops.check.hints import Fixes, _config_ports, _ports_text, _rules_text
from portmapctl.ops.check.problem import Problem, saved_lines, saved_rules


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


def check_shared(
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
                saved_lines(
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
                    f"rule missing: {shown_rule('-A', chain.name, rule)}",
                    fix,
                    why,
                    saved_rules(chain.name, [rule]),
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
                        saved_rules(entry_chain, [rule]),
                    )
                )
    return problems


@dataclass(frozen=True)
class EntryIndex:
    """CNI-HOSTPORT-DNAT's rules, indexed once per table. A node check looks up every
    container's entry rules there; scanning the chain (2 rules per container) for each
    container made it quadratic: 20 s at 5,000 containers (benchmarks/bench.py)."""

    present: FrozenSet[Args]
    by_target: Dict[Optional[str], List[Args]]


def entry_index(live: NatTable) -> EntryIndex:
    by_target: Dict[Optional[str], List[Args]] = {}
    rules = live.rules(TOPLEVEL_DNAT)
    for rule in rules:
        by_target.setdefault(rule_target(rule), []).append(rule)
    return EntryIndex(frozenset(rules), by_target)


def _port_key(rule: Args) -> Tuple[Optional[str], Optional[str]]:
    return option_value(rule, "-p"), option_value(rule, "--dport")


def _in_order(live: Sequence[Args], wanted: Sequence[Args], any_order: bool) -> bool:
    """Whether the chain's rules (the wanted ones, none missing or extra) are in the
    wanted order. With `any_order`, only the order among the rules of one protocol and
    host port counts: a packet meets no other's (their --dport differs), so the order
    of the mappings is the runtime's (podman gives its UDP ones first) and the plugin's
    CHECK does not look at it; a rule repeated still counts."""
    if not any_order:
        return list(live) == list(wanted)
    if len(live) != len(wanted):
        return False

    def by_port(rules: Sequence[Args]) -> Dict[Tuple[Optional[str], Optional[str]], List[Args]]:
        grouped: Dict[Tuple[Optional[str], Optional[str]], List[Args]] = {}
        for rule in rules:
            grouped.setdefault(_port_key(rule), []).append(rule)
        return grouped

    return by_port(live) == by_port(wanted)


def in_live_order(chain: Chain, live: NatTable) -> Chain:
    """`chain` with its rules in the live chain's order when that holds them in an
    order `_in_order` takes (any order of the mappings): what the one-mapping repair
    makes then rewrites nothing the check found right."""
    have = live.rules(chain.name) if live.has_chain(chain.name) else None
    if not have or list(have) == list(chain.rules):
        return chain
    if set(have) != set(chain.rules) or not _in_order(have, chain.rules, True):
        return chain
    return replace(chain, rules=tuple(have))


def check_container(
    config: MappingConfig,
    wanted: Chain,
    live: NatTable,
    fix: str,
    *,
    exact: bool,
    elsewhere: Optional[str] = None,
    elsewhere_fix: Optional[str] = None,
    entries: Optional[EntryIndex] = None,
    held_there: str = "it",
    said: str = "its cached config",
    any_order: bool = False,
) -> List[Problem]:
    """One container's CNI-DN- chain and its entry rules against the live table.

    `exact` also reports rules that should not be there and a wrong order (what
    --repair rewrites); without it, exactly the plugin's CHECK: every wanted rule
    present. `said`: whose config it is (the node check's cached one, or the mapping
    given). `elsewhere` names the other iptables flavour when the chain exists there, and
    `elsewhere_fix` is the fix of the chain missing here then; `held_there` what of
    the plugin's the other flavour holds ("it", the chain; or CNI-HOSTPORT-DNAT).
    `entries` is `entry_index(live)`, made once by a caller that checks many.
    `any_order`: the config's mappings may come in another order than the chain's
    (`_in_order`).
    """
    family = live.family
    name = wanted.name
    who = (config.network, config.container_id)

    def problem(kind: str, detail: str, why: str, rules: Tuple[str, ...]) -> Problem:
        return Problem(kind, family, name, *who, detail, fix, why, rules)

    if not live.has_chain(name):
        ports = _config_ports(config, family)
        other = 6 if family == 4 else 4
        detail = (
            f"chain missing for {ports}"
            if ports
            # The plugin still makes the chain and its entry rule here, empty.
            else f"chain missing (empty as the plugin makes it: every host IP is IPv{other})"
        )
        if elsewhere:
            detail += (
                f" ({held_there} is in the {elsewhere} tables: is the plugin using"
                f" iptables-{elsewhere}?)"
            )
            # Repair leaves it (a copy here would be a split brain): not its command.
            fix = elsewhere_fix or fix
        return [
            problem(
                ProblemKind.MISSING_CHAIN,
                detail,
                "the container's host ports are not forwarded",
                saved_rules(name, wanted.rules) + saved_rules(TOPLEVEL_DNAT, wanted.entry_rules),
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
                f"{rules_missing(len(missing), len(wanted.rules))}: {_rules_text(name, missing)}",
                "some of its host ports are not forwarded"
                if dnat_gone
                else "hairpin and localhost connections to its host ports fail (no masquerade mark)",
                saved_rules(name, missing),
            )
        )
    if exact:
        extra = [r for r in live_rules if r not in wanted.rules]
        if extra:
            problems.append(
                problem(
                    ProblemKind.EXTRA_RULES,
                    f"{len(extra)} {'rule' if len(extra) == 1 else 'rules'} {said}"
                    f" does not make: {_rules_text(name, extra)}",
                    "the chain does not match the container's config (an old address or port?):"
                    " traffic may go to the wrong place",
                    saved_rules(name, extra),
                )
            )
        elif not missing and not _in_order(live_rules, wanted.rules, any_order):
            problems.append(
                problem(
                    ProblemKind.RULES_ORDER,
                    "the right rules in the wrong order (or repeated)",
                    "iptables stops at the DNAT rule: a mark rule after it never runs",
                    saved_rules(name, wanted.rules),
                )
            )
    index = entries if entries is not None else entry_index(live)
    missing_entries = [r for r in wanted.entry_rules if r not in index.present]
    if missing_entries:
        ports = ", ".join(_entry_ports_text(r, wanted.rules) for r in missing_entries)
        problems.append(
            problem(
                ProblemKind.MISSING_ENTRY,
                f"no entry rule in {TOPLEVEL_DNAT} for {ports}"
                f" ({len(missing_entries)} of {len(wanted.entry_rules)} missing)",
                "nothing sends those host ports to the chain: they are not forwarded",
                saved_rules(TOPLEVEL_DNAT, missing_entries),
            )
        )
    if exact:
        extra_entries = [r for r in index.by_target.get(name, ()) if r not in wanted.entry_rules]
        if extra_entries:
            problems.append(
                problem(
                    ProblemKind.EXTRA_ENTRY,
                    f"{TOPLEVEL_DNAT} has entry rules {said} does not make:"
                    f" {_rules_text(TOPLEVEL_DNAT, extra_entries)}",
                    "host ports the container no longer maps are still sent to it",
                    saved_rules(TOPLEVEL_DNAT, extra_entries),
                )
            )
    return problems


def _entry_ports_text(rule: Args, chain_rules: Sequence[Args]) -> str:
    """`tcp/8080, tcp/9090`, a run as a range (`tcp/21000-21014`); a port-less entry
    rule (v0.6) sends its chain every port the chain DNATs: `tcp/8080, tcp/9090 (a
    port-less entry rule, as v0.6 wrote it)`."""
    protocol, ports = option_value(rule, "-p"), option_value(rule, "--dports")
    if protocol and ports:
        numbers = ports.split(",")
        if all(n.isdigit() for n in numbers):
            # A podman range's rule (15 ports each): `tcp/21000-21014`.
            return _ports_text([(protocol, int(n)) for n in numbers])
        return f"{protocol}/{ports}"
    claimed = ", ".join(f"{p}/{n}" for p, n in entry_ports(rule, chain_rules))
    return f"{claimed or 'every port'} (a port-less entry rule, as v0.6 wrote it)"
