"""`check`'s diagnosis, pure: tables and cache in, problems out.

For every attachment in the CNI cache that carries port mappings, the chains the
plugin would have made (expected.py) are compared with the live table (compare.py);
then what is wrong on the node whatever any config wants (node_problems.py: what
`list` marks, zombies, duplicate entry rules, split brain). `diagnose_mapping` is what
the plugin's CHECK verifies for one mapping, except that a missing chain is a failure
(the seed's bug, SPEC §2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Collection, Dict, List, Optional, Sequence, Set, Tuple
from typing import Mapping as ReadOnly

from portmapctl.cni.cache import Attachment
from portmapctl.core.mapping import MappingConfig
from portmapctl.iptables import inventory
from portmapctl.iptables.chains import TOPLEVEL_DNAT, dnat_chain_name
from portmapctl.iptables.ruleset import NatTable
from portmapctl.ops.check.compare import (
    check_container,
    check_shared,
    entry_index,
    held_elsewhere,
)
from portmapctl.ops.check.expected import cached_configs, mapping_dnat_chain, wanted_on_node
from portmapctl.ops.check.hints import Fixes
from portmapctl.ops.check.node_problems import (
    duplicates,
    inventory_problems,
    split_brain,
    zombies,
)
from portmapctl.ops.check.problem import Problem
from portmapctl.ops.check.unexpected import unexpected_chains
from portmapctl.ops.flavour_guard import other_flavour

if TYPE_CHECKING:
    from portmapctl.ops.check.nft import Held


def diagnose(
    tables: ReadOnly[int, NatTable],
    attachments: Optional[Sequence[Attachment]],
    fixes: Fixes = Fixes(),
    *,
    other_tables: Optional[ReadOnly[int, NatTable]] = None,
    flavours: Optional[ReadOnly[int, Tuple[str, str]]] = None,
    found: Optional[inventory.Inventory] = None,
    not_expected: Collection[str] = (),
    judged: Optional[Collection[str]] = None,
    nft_owners: Optional[Collection[str]] = None,
    nft_entries: Collection[Tuple[str, str]] = (),
    nft_held: ReadOnly[str, ReadOnly[int, Held]] = {},  # noqa: B006 - read only
) -> Tuple[List[Problem], int]:
    """Every problem of a node (pure). Returns (problems, mappings compared).

    `attachments` is the CNI cache (None: there is none). `other_tables` are the same
    families read from the other iptables flavour; `flavours` is, per family, (used,
    other) (each family's own where the alternatives differ).
    `found` is the inventory of `tables` and `attachments`, when the caller has it.
    Of the containers in `not_expected` (IDs) nothing is expected in iptables: their
    rules are in nftables, or iptables is not looked at (--backend nftables); nor of
    the cache entries `nft_entries` ((network, ID): nft-backed ones; a container on
    two networks may have one entry per backend).
    `judged` (None: every one) are the containers whose cache entries are judged
    (zombies): those of the backends looked at (a zombie's fix, gc with the same
    --backend, would not reach another backend's rules). `nft_owners`: the IDs with
    rules left in the plugin's nftables tables (None: not known); `nft_held`: the
    zombies' rules there, as their stale rows would give them (nft.held_rules).
    """
    configs = iptables_configs(attachments, not_expected, nft_entries)
    problems: List[Problem] = []
    if other_tables and flavours:
        problems += split_brain(tables, other_tables, flavours)
    derived: Dict[int, set] = {}
    compared = 0
    for family in sorted(tables):
        live = tables[family]
        other = (other_tables or {}).get(family)
        other_flavour = flavours[family][1] if flavours and family in flavours else None
        shared, per_container = wanted_on_node(configs, family, live)
        cached_here = [chain.name for _, chain in per_container]
        there = other_flavour if held_elsewhere(live, other, cached_here) else None
        for chain in shared:
            problems += check_shared(
                chain,
                live,
                fixes,
                elsewhere=there if other is not None and other.has_chain(chain.name) else None,
            )
        derived[family] = set()
        index = entry_index(live)
        for config, chain in per_container:
            compared += 1
            derived[family].add(chain.name)
            held = other is not None and other.has_chain(chain.name)
            # With the family's state there, repair makes no chain here, held there or
            # not (repair._in_other_flavour): its fix is not --repair either.
            elsewhere = other_flavour if held or there else None
            problems += check_container(
                config,
                chain,
                live,
                fixes.repair,
                exact=True,
                elsewhere=elsewhere,
                elsewhere_fix=fixes.only_in(elsewhere) if elsewhere else None,
                entries=index,
                held_there="it" if held else TOPLEVEL_DNAT,
            )
    if found is None:
        found = inventory.build(tables, attachments)
    live_names = {dnat_chain_name(c) for c in configs or ()}
    live_names |= {a.snat_chain for a in attachments or ()}
    live_ids = {a.container_id for a in attachments or () if not a.zombie}
    zombie_ids = {a.container_id for a in attachments or ()} - live_ids
    problems += inventory_problems(found, derived, live_names, fixes, live_ids, zombie_ids)
    problems += unexpected_chains(found, attachments or (), derived, fixes, not_expected)
    entries = [a for a in attachments or () if judged is None or a.container_id in judged]
    nft_backed = {*not_expected, *(cid for _network, cid in nft_entries)}
    live_on: Dict[str, Set[str]] = {}
    read_on: Set[Tuple[str, str]] = set()  # (ID, network) of the entries read
    for a in attachments or ():
        if not a.zombie:
            live_on.setdefault(a.container_id, set()).add(a.network)
            if a.problem is None or a.result_only:
                read_on.add((a.container_id, a.network))
    # Where only an entry that cannot be read keeps it live (no namespace of it known).
    unread_on = {
        cid: {n for n in networks if (cid, n) not in read_on} for cid, networks in live_on.items()
    }
    problems += zombies(
        entries, tables, fixes, nft_backed, nft_owners, live_on, found, nft_held, unread_on
    )
    for family in sorted(tables):
        problems += duplicates(tables[family], fixes)
    return problems, compared


def iptables_configs(
    attachments: Optional[Sequence[Attachment]],
    not_expected: Collection[str] = (),
    nft_entries: Collection[Tuple[str, str]] = (),
) -> Optional[List[MappingConfig]]:
    """The cached configs whose chains diagnose expects in iptables (None: no cache):
    those of `not_expected` and `nft_entries` left out (as diagnose's)."""
    configs = cached_configs(attachments) if attachments is not None else None
    if configs is not None and (not_expected or nft_entries):
        configs = [
            c
            for c in configs
            if c.container_id not in not_expected and (c.network, c.container_id) not in nft_entries
        ]
    return configs


def diagnose_mapping(
    tables: ReadOnly[int, NatTable],
    config: MappingConfig,
    fix: str,
    elsewhere: ReadOnly[int, str] = {},  # noqa: B006 - read only
    sharing: Sequence[MappingConfig] = (),
) -> Tuple[List[Problem], int]:
    """What the plugin's CHECK verifies for one mapping, a missing chain included, and
    what --repair of it rewrites: rules of its chain, and entry rules to it, that the
    config given does not make, or in another order where it matters, among the rules
    of one protocol and host port (as the nftables backend's check of one mapping
    reports its container's rules the config does not make).
    `elsewhere`: the other iptables flavour, by family, where it alone holds the chain.
    `sharing` (expected.sharing_chain): the configs whose rules the chain holds, the
    container's other cached interfaces on the network with `config` (none: it alone)."""
    problems: List[Problem] = []
    compared = 0
    for family in config.families:
        if family not in tables:
            continue
        wanted = mapping_dnat_chain(config, sharing, tables[family])
        if wanted is None or config.address(family) is None:
            continue
        compared += 1
        other = elsewhere.get(family)
        problems += check_container(
            config,
            wanted,
            tables[family],
            fix,
            exact=True,
            said="its config",
            # The order of the -p given is the caller's, not the runtime's.
            any_order=True,
            elsewhere=other,
            elsewhere_fix=Fixes(flavour=other_flavour(other)).only_in(other) if other else None,
        )
    return problems, compared
