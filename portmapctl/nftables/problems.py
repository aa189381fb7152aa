"""What the plugin's nftables tables lack, judged as its ADD would write them: check's
problems of the nftables backend.

Of the shared structure (structure_problems, structure_problems_for: a table, base
chain, entry rule or hostports_all jump missing, a base chain not as the ADD makes it,
an entry rule twice), and, given the cached configs of the nft-backed containers, of
their own rules (rule_problems and extra_rules: rules missing, rules the config does
not make). inventory.build gathers them beside its rows; `list` asks for rows only and
never imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Collection, Dict, Iterable, List, Optional, Sequence, Tuple
from typing import Mapping as ReadOnly

from portmapctl.core.backend import Backend
from portmapctl.core.status import ProblemKind
from portmapctl.core.text import count, rules_missing
from portmapctl.nftables.ruleset import (
    FAMILY_NAMES,
    HOSTIP_HOSTPORTS,
    HOSTPORTS,
    HOSTPORTS_ALL,
    MASQUERADING,
    OUTPUT,
    PREROUTING,
    TABLE,
    ActionKind,
    BaseHook,
    Rule,
    RuleBody,
    Ruleset,
    Table,
)
from portmapctl.nftables.wanted import BASE_CHAINS, REGULAR_CHAINS, WantedFamily

if TYPE_CHECKING:
    from portmapctl.nftables.inventory import Owner


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    family: int
    chain: Optional[str]
    network: Optional[str]
    container_id: Optional[str]
    detail: str
    backend: Backend = Backend.NFTABLES
    rules: Tuple[str, ...] = ()  # the rules at issue, as `nft list` prints them
    handles: Tuple[int, ...] = ()  # duplicate-entry: the extra copies (a fix by hand)


def _families_needed(nft_backed: Sequence[Owner]) -> Dict[int, bool]:
    """family -> whether some container there has SNAT on."""
    needed: Dict[int, bool] = {}
    for owner in nft_backed:
        if owner.mapping is None or owner.zombie:
            continue
        for family in owner.mapping.families:
            needed[family] = needed.get(family, False) or owner.mapping.snat
    return needed


def structure_problems(ruleset: Ruleset, families: Dict[int, bool]) -> List[Problem]:
    """What the plugin's shared structure lacks in `families` (family -> SNAT needed)."""
    # Here, not at the top: `list` builds rows only and needs neither module.
    from portmapctl.nftables.layout import downgraded, entry_ok, hostports_all_ok
    from portmapctl.nftables.planner import extra_copies

    problems: List[Problem] = []
    for family in sorted(families):
        table = ruleset.table(family)
        where = f"{FAMILY_NAMES[family]} {TABLE}"
        if table is None:
            problems.append(
                Problem(
                    ProblemKind.NFT_MISSING_TABLE,
                    family,
                    None,
                    None,
                    None,
                    f"table {where} is missing",
                )
            )
            continue
        wanted_chains = [HOSTPORTS, HOSTIP_HOSTPORTS, PREROUTING, OUTPUT]
        if families[family]:
            wanted_chains.append(MASQUERADING)
        for chain in wanted_chains:
            if chain not in table.chains:
                problems.append(
                    Problem(
                        ProblemKind.NFT_MISSING_CHAIN,
                        family,
                        chain,
                        None,
                        None,
                        f"chain {chain} of {where} is missing",
                    )
                )
        problems += _wrong_base_chains(table)
        for chain in (PREROUTING, OUTPUT):
            if chain in table.chains and not entry_ok(table, chain):
                problems.append(
                    Problem(
                        ProblemKind.NFT_MISSING_ENTRY,
                        family,
                        chain,
                        None,
                        None,
                        f"{chain} of {where} does not jump to the host-port rules",
                    )
                )
        if downgraded(table):
            problems.append(
                Problem(
                    ProblemKind.NFT_ENTRY_NOT_LOCAL,
                    family,
                    PREROUTING,
                    None,
                    None,
                    f"{PREROUTING} of {where} is v1.6/v1.7's entry (no fib daddr type local),"
                    f" written over v1.9's ({HOSTPORTS_ALL} is here): it DNATs a mapped port"
                    " of any destination, not only of this node's addresses",
                )
            )
        problems += _duplicates(table, extra_copies(table), where)
        jumps_to_all = any(
            r.body.action.kind is ActionKind.JUMP and r.body.action.target == HOSTPORTS_ALL
            for c in (PREROUTING, OUTPUT)
            for r in table.rules_of(c)
        )
        if jumps_to_all and not hostports_all_ok(table, copies_ok=True):
            problems.append(
                Problem(
                    ProblemKind.NFT_MISSING_JUMPS,
                    family,
                    HOSTPORTS_ALL,
                    None,
                    None,
                    f"{HOSTPORTS_ALL} of {where} lacks its jumps to "
                    f"{HOSTIP_HOSTPORTS} and {HOSTPORTS}",
                )
            )
    return problems


def _duplicates(table: Table, extra: Sequence[Rule], where: str) -> List[Problem]:
    """One duplicate-entry problem per rule standing more than once in an entry chain."""
    by_rule: Dict[Tuple[str, RuleBody], List[int]] = {}
    for rule in extra:
        by_rule.setdefault((rule.chain, rule.body), []).append(rule.handle)
    problems = []
    for (chain, body), handles in by_rule.items():
        text = body.text(table.family)
        problems.append(
            Problem(
                ProblemKind.DUPLICATE_ENTRY,
                table.family,
                chain,
                None,
                None,
                f"{len(handles) + 1} copies of `{text}` in {chain} of {where}",
                rules=(text,),
                handles=tuple(handles),
            )
        )
    return problems


def _base_chain_text(base: Optional[BaseHook], policy: Optional[str]) -> str:
    if base is None:
        return "a regular chain (no hook)"
    return f"type {base.type} hook {base.hook} priority {base.priority}; policy {policy}"


def _wrong_base_chains(table: Table) -> List[Problem]:
    """The plugin's base chains that are there but not as its ADD makes them. Another
    type, hook or priority makes every later ADD fail (its `add chain` with the plugin's
    hook: Operation not supported); a policy drop drops what no rule of the table takes.
    A regular chain of the plugin's made a base chain (another tool's table of the
    same name) takes no jump and no dnat: the kernel refuses both, so every ADD and
    every --repair failed on it ("Operation not supported") with no word of which chain.
    Neither is a problem of a container, and repair does not rewrite a chain someone
    changed: the fix says how to let it re-create the chain."""
    problems: List[Problem] = []
    where = f"{FAMILY_NAMES[table.family]} {TABLE}"
    wanted: Dict[str, Optional[BaseHook]] = {**BASE_CHAINS, **dict.fromkeys(REGULAR_CHAINS)}
    for name, want in wanted.items():
        chain = table.chains.get(name)
        if chain is None or (chain.base == want and (want is None or chain.policy == "accept")):
            continue
        found = _base_chain_text(chain.base, chain.policy)
        wanted = _base_chain_text(want, "accept")
        problems.append(
            Problem(
                ProblemKind.NFT_WRONG_BASE_CHAIN,
                table.family,
                name,
                None,
                None,
                f"chain {name} of {where} is {found}; the plugin's: {wanted}",
            )
        )
    return problems


# The hooks at which a nat base chain of the plugin's takes its rules: the kernel lets
# a dnat (what prerouting and output reach through hostports_all) in at prerouting or
# output alone, and a masquerade at postrouting alone. At another hook the chain
# refuses them as a filter chain does ("Operation not supported").
_HOOKS_TAKING_RULES = {
    PREROUTING: ("prerouting", "output"),
    OUTPUT: ("prerouting", "output"),
    MASQUERADING: ("postrouting",),
}
# The chains a rule written to one of them is judged along: a dnat's (prerouting and
# output jump to it through hostports_all), and a masquerade's. A chain of the wrong
# kind on one side refuses nothing written to the other: with masquerading a filter
# chain, the plugin's ADD of a container without SNAT goes in, and so does its repair.
_SIDES = ((PREROUTING, OUTPUT, HOSTPORTS_ALL, HOSTIP_HOSTPORTS, HOSTPORTS), (MASQUERADING,))


def refuses_the_plugins_rules(table: Optional[Table], written: Collection[str]) -> bool:
    """Whether the kernel refuses what is `written` (chains rules are added to) in
    `table`: a chain of the plugin's on their side (_SIDES) is of a kind that takes none
    of them: a regular chain made a base chain (no jump may reach it), or a base chain
    of a type other than nat, or of nat at a hook where no dnat (prerouting, output) or
    masquerade (masquerading) may be (none in it, nor in what it jumps to). Every `nft
    -f` writing there fails ("Operation not supported"): --repair leaves the family to
    the fix by hand (_wrong_base_chains)."""
    if table is None:
        return False
    for side in _SIDES:
        if not set(side) & set(written):
            continue
        for name in side:
            chain = table.chains.get(name)
            if chain is None or chain.base is None:
                continue
            hooks = _HOOKS_TAKING_RULES.get(name)
            if hooks is None or chain.base.type != "nat" or chain.base.hook not in hooks:
                return True
    return False


def structure_problems_for(ruleset: Ruleset, nft_backed: Sequence[Owner]) -> List[Problem]:
    """structure_problems in the families the nft-backed containers need (SNAT:
    the masquerading chain too), and in any whose table holds host-port rules."""
    families = _families_needed(nft_backed)
    # A table present with rules is checked even without a cache saying so.
    for family, table in ruleset.tables.items():
        if family not in families and any(table.rules_of(c) for c in (HOSTPORTS, HOSTIP_HOSTPORTS)):
            families[family] = bool(table.rules_of(MASQUERADING))
    return structure_problems(ruleset, families)


def extra_rules(
    table: Optional[Table],
    family: int,
    wants: Sequence[WantedFamily],
    networks: ReadOnly[str, str],
    said: str = "its cached config",
    addresses: Optional[Iterable[str]] = None,
) -> List[Problem]:
    """One `extra-rules` per container of `networks` (ID -> network) holding rules in
    this family that none of `wants` is (planner.unwanted: what --repair deletes), and
    one `nft-unclaimed-rules` per container holding such rules for a host port or an
    address none of `wants` has (unaccounted, planner.not_wanted: --repair leaves them).
    `said`: whose config it is (the node check's cached one, or the mapping given);
    `addresses`: only rules for these container addresses (planner.unwanted)."""
    from portmapctl.nftables.planner import not_wanted

    only = None if addresses is None else set(addresses)
    unwanted, unaccounted = not_wanted(table, wants, networks.keys(), only)
    problems = []
    for selected, kind, what in (
        (unwanted, ProblemKind.EXTRA_RULES, f"{said} does not make"),
        (unaccounted, ProblemKind.NFT_UNCLAIMED_RULES, f"for ports or addresses {said} has not"),
    ):
        found: Dict[str, List[Rule]] = {}
        for rule in selected:
            found.setdefault(rule.comment or "", []).append(rule)
        for cid in sorted(found):
            rules = found[cid]
            texts = tuple(r.body.text(family) for r in rules)
            handles = ", ".join(str(r.handle) for r in rules)
            problems.append(
                Problem(
                    kind,
                    family,
                    rules[0].chain,
                    networks[cid],
                    cid,
                    f"{count(len(rules), 'rule')} {what} (handle {handles}): {'; '.join(texts)}",
                    rules=texts,
                )
            )
    return problems


def rule_problems(ruleset: Ruleset, nft_backed: Sequence[Owner]) -> List[Problem]:
    """Each compared container's rules against what the plugin's ADD writes, exactly
    (SPEC §3 check): what is missing, and what of its own is there that it would not
    have written (planner.unwanted: what --repair deletes)."""
    from portmapctl.nftables.layout import lone_families, upgraded
    from portmapctl.nftables.planner import missing_where
    from portmapctl.nftables.wanted import wanted

    compared = [o for o in nft_backed if o.mapping is not None and not o.zombie]
    lone = lone_families(o.mapping.families for o in compared if o.mapping is not None)
    networks: Dict[str, str] = {}
    for owner in compared:
        networks.setdefault(owner.container_id, owner.network)
    problems = []
    for family in (4, 6):
        owners: List[Owner] = []
        wants = []
        for owner in compared:
            want = wanted(owner.mapping, family) if owner.mapping is not None else None
            if want is not None:
                owners.append(owner)
                wants.append(want)
        problems += extra_rules(ruleset.table(family), family, wants, networks)
        if not wants:
            continue
        missing: Dict[int, List] = {}
        for index, chain, body in missing_where(ruleset, family, wants, lone):
            missing.setdefault(index, []).append((chain, body))
        # On an upgraded node a v1.6/v1.7 host-IP rule in hostip_hostports forwards but
        # fails v1.9.1's CHECK (layout.upgraded): said, as it is not lost.
        table = ruleset.table(family)
        stranded = (
            set()
            if table is None or not upgraded(ruleset, lone)
            else {r.body for r in table.rules_of(HOSTIP_HOSTPORTS)}
        )
        for index in sorted(missing):
            owner, found = owners[index], missing[index]
            texts = "; ".join(body.text(family) for _chain, body in found)
            moved = sum(1 for chain, body in found if chain == HOSTPORTS and body in stranded)
            if moved:
                texts += (
                    f" ({moved} of them in {HOSTIP_HOSTPORTS}, where v1.6/v1.7 put them:"
                    f" forwarded, but the node's v1.9 CHECK counts {HOSTPORTS} alone)"
                )
            problems.append(
                Problem(
                    ProblemKind.NFT_MISSING_RULES,
                    family,
                    found[0][0],
                    owner.network,
                    owner.container_id,
                    f"{rules_missing(len(found), wants[index].rule_count)}: {texts}",
                    rules=tuple(body.text(family) for _chain, body in found),
                )
            )
    return problems
