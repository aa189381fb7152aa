"""What should be there: the chains the plugin would have made for the cached
configs, in one family (older plugins' shapes as found are wanted as they are)."""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from portmapctl.cni.cache import Attachment, added_at
from portmapctl.core.backend import Backend
from portmapctl.core.mapping import DEFAULT_MARK_BIT, MappingConfig
from portmapctl.iptables import shapes
from portmapctl.iptables.chains import (
    DNAT_PREFIX,
    TOPLEVEL_DNAT,
    Chain,
    dnat_chain,
    dnat_chain_name,
    masq_chain,
    setmark_chain,
    toplevel_dnat_chain,
    wanted_chains,
)
from portmapctl.iptables.ruleset import Args, NatTable


def cached_configs(attachments: Optional[Sequence[Attachment]]) -> List[MappingConfig]:
    """The mapping of every cached attachment that has one, those sharing a chain
    together, in ADD order (cached_groups).
    A zombie's mapping is not expected (and so never repaired): its container is gone.
    """
    return [
        a.mapping  # type: ignore[misc]
        for group in cached_groups(
            a for a in attachments or () if a.mapping is not None and not a.zombie
        ).values()
        for a in group
    ]


def cached_groups(attachments: Iterable[Attachment]) -> Dict[str, List[Attachment]]:
    """The attachments with a mapping, by the name of their chain, in ADD order.

    Attachments of one container on one network through several interfaces (Multus
    naming a network twice: net1, net2) share one chain, which the plugin's ADD of
    each fills with the rules it lacks (wanted_on_node joins them), in the order of
    those ADDs (cache.added_at): the rules' order on the node. One interface cached
    twice (in two cache directories) counts once, as first read.
    """
    groups: Dict[str, Dict[str, Attachment]] = {}
    for attachment in attachments:
        if attachment.mapping is not None:
            group = groups.setdefault(dnat_chain_name(attachment.mapping), {})
            group.setdefault(attachment.ifname, attachment)
    found = {}
    for name, group in groups.items():
        members = list(group.values())
        if len(members) > 1:  # (the file times only where they decide something)
            members.sort(key=added_at)
        found[name] = members
    return found


def sharing_chain(
    config: MappingConfig, attachments: Iterable[Attachment], ifname: Optional[str] = None
) -> Tuple[MappingConfig, ...]:
    """`config` (one mapping given, for interface `ifname`) and the cached mappings of
    its container's other interfaces on its network, whose ADDs appended their rules to
    the same chain, in ADD order: `config` in place of the entry of `ifname` (none
    cached: of the entry with its addresses), else last (the newest ADD). One entry of
    another interface counts too: a second interface whose entry is not written yet
    (libcni writes it after the whole ADD), or not cached, shares that one's chain.

    An entry of `ifname` with the addresses given stays, `config` after it (as an ADD
    of it would append the rules it lacks): its other ports are live mappings, not
    extra (a check of one port of a container had --repair delete the others; SPEC §3:
    it never deletes a live mapping). With other addresses, `config` is a new
    incarnation of the interface (its entry read before its re-ADD) and stands in."""
    iptables = (
        a
        for a in attachments
        if a.mapping is not None and not a.zombie and a.mapping.backend != Backend.NFTABLES
    )
    group = cached_groups(iptables).get(dnat_chain_name(config), [])
    mine = [a for a in group if a.ifname == ifname] or [
        a
        for a in group
        if (a.mapping.address(4), a.mapping.address(6))  # type: ignore[union-attr]
        == (config.address(4), config.address(6))
    ]
    addresses = (config.address(4), config.address(6))
    found: List[MappingConfig] = []
    for a in group:
        if a not in mine:
            found.append(a.mapping)  # type: ignore[arg-type]
        elif (a.mapping.address(4), a.mapping.address(6)) == addresses:  # type: ignore[union-attr]
            found += [a.mapping, config]  # type: ignore[list-item]
        else:
            found.append(config)
    return tuple(dict.fromkeys([*found, config]))


def joined_dnat_chain(configs: Sequence[MappingConfig], family: int) -> Optional[Chain]:
    """The CNI-DN- chain the ADDs of `configs` (sharing_chain) leave in one family."""
    chains = [chain for chain in (dnat_chain(c, family) for c in configs) if chain is not None]
    return functools.reduce(_joined, chains) if chains else None


def wanted_sharing(
    config: MappingConfig,
    sharing: Sequence[MappingConfig],
    family: int,
    live: Optional[NatTable] = None,
) -> List[Chain]:
    """wanted_chains of `config`, its CNI-DN- chain holding the rules of `sharing` too;
    with `live`, that chain as mapping_dnat_chain judges it, and no SETMARK/MASQ for
    a chain found in v0.6's shape (as wanted_on_node)."""
    chains = wanted_chains(config, family)
    if live is None:
        joined = joined_dnat_chain(sharing, family)
    else:
        joined = mapping_dnat_chain(config, sharing, live)
        if all(_found_v0_6(each, live) for each in sharing or (config,)):
            chains = [c for c in chains if not c.shared or c.name == TOPLEVEL_DNAT]
    if not chains or joined is None:
        return chains
    return [*chains[:-1], joined]


def _found_v0_6(config: MappingConfig, live: NatTable) -> bool:
    found = shapes.as_written(config, live.family, live)
    return found is not None and found[0] is shapes.Shape.V0_6


def mapping_dnat_chain(
    config: MappingConfig, sharing: Sequence[MappingConfig], live: NatTable
) -> Optional[Chain]:
    """The CNI-DN- chain a mapping given on the command line is checked and repaired
    against, as the node check judges it (wanted_on_node): each of `sharing` (or
    `config` alone) in the shape it is found in (shapes.as_written: an older
    plugin's exact shape, such as v0.7's hairpin mark on the pod IP, v0.6's, or the
    shape of a plugin that ignores `masqAll` such as Debian's 1.1.1, healthy as
    SPEC §2 says; the dead shape of host IP 0.0.0.0 before v0.8.7, reported `dead`
    by run.mapping_result and never rewritten into a working chain that would take
    the port from the container that gets it now), else in the current one; joined
    as the ADDs of a container's interfaces leave it."""
    chains = []
    prepending = True
    for each in sharing or (config,):
        found = shapes.as_written(each, live.family, live)
        chain = found[1] if found is not None else dnat_chain(each, live.family)
        if chain is not None:
            chains.append(chain)
            prepending = prepending and found is not None and found[0] in _PREPENDING
    return _joined_as_found(chains, prepending, live) if chains else None


# The shapes whose plugin may have inserted a chain's missing rules first: v0.6 and
# v0.7.0-v0.7.4 did; v0.7.5-v0.8.5 write HAIRPIN_HOST's text too but append, so the
# prepended order is taken only where the live chain shows it (_joined_as_found).
_PREPENDING = frozenset({shapes.Shape.HAIRPIN_HOST, shapes.Shape.V0_6})


def _joined_as_found(chains: Sequence[Chain], prepending: bool, live: NatTable) -> Chain:
    """The chain the ADDs of a container's interfaces on one network leave (`chains`,
    in ADD order): each appends the rules the chain lacks (v0.7.5 on). Plugins before
    v0.7.5 inserted them first: where every chain is in an older shape that such a
    version wrote (`prepending`) and the live chain is so (or what is left of it is in
    that order only), that is the chain wanted."""
    joined = functools.reduce(_joined, chains)
    have = live.rules(joined.name)
    if prepending and len(chains) > 1 and have != joined.rules:
        first = functools.reduce(_joined_first, chains)
        if have == first.rules or (
            _in_that_order(have, first.rules) and not _in_that_order(have, joined.rules)
        ):
            return first
    return joined


def _in_that_order(rules: Sequence[Args], wanted: Sequence[Args]) -> bool:
    """Whether `rules` are some of `wanted`, in its order."""
    rest = iter(wanted)
    return all(rule in rest for rule in rules)


def _joined_first(have: Chain, chain: Chain) -> Chain:
    """`have` with what a later ADD of v0.6-v0.7.4 puts before its rules: the rules of
    `chain` it lacks, each `-I 1` in reverse (so in their order, at the top)."""
    joined = _joined(have, chain)
    lacking = tuple(r for r in chain.rules if r not in have.rules)
    return replace(joined, rules=lacking + have.rules)


def _joined(have: Chain, chain: Chain) -> Chain:
    """`have` with what a later ADD of `chain` appends: the rules it lacks, in order
    (the plugin adds each rule only if `iptables -C` does not find it)."""
    if chain == have:
        return have
    return Chain(
        have.name,
        rules=tuple(dict.fromkeys(have.rules + chain.rules)),
        entry_chains=tuple(dict.fromkeys(have.entry_chains + chain.entry_chains)),
        entry_rules=tuple(dict.fromkeys(have.entry_rules + chain.entry_rules)),
        prepend_entry=have.prepend_entry,
        table=have.table,
    )


def _merge(chains: Sequence[Chain]) -> List[Chain]:
    """Chains wanted several times (shared chains; a container's chain wanted by each
    of its interfaces on one network), as one chain each.

    The plugin appends a chain's rules only when missing, so containers with
    different mark bits leave one SETMARK rule each: their union is what is wanted.
    """
    merged: Dict[str, Chain] = {}
    for chain in chains:
        have = merged.get(chain.name)
        merged[chain.name] = chain if have is None else _joined(have, chain)
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
    # By chain name: a container's interfaces on one network share its chain, which
    # the first one's config speaks for in messages.
    per_container: Dict[str, Tuple[MappingConfig, List[Chain], bool]] = {}
    for config in configs:
        old = shapes.as_written(config, family, live)
        for chain in wanted_chains(config, family):
            if chain.shared:
                # v0.6 made no SETMARK/MASQ, but entered CNI-HOSTPORT-DNAT from
                # PREROUTING and OUTPUT as every version since: those jumps are wanted.
                if old is None or old[0] is not shapes.Shape.V0_6 or chain.name == TOPLEVEL_DNAT:
                    shared.append(chain)
                continue
            mine = old[1] if old else chain
            prepending = old is not None and old[0] in _PREPENDING
            have = per_container.get(mine.name)
            per_container[mine.name] = (
                (config, [mine], prepending)
                if have is None
                else (have[0], [*have[1], mine], have[2] and prepending)
            )
    return _merge(shared), [
        (config, chains[0] if len(chains) == 1 else _joined_as_found(chains, prepending, live))
        for config, chains, prepending in per_container.values()
    ]
