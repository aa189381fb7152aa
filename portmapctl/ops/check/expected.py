"""What should be there: the chains the plugin would have made for the cached
configs, in one family (older plugins' shapes as found are wanted as they are)."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from portmapctl.cni.cache import Attachment
from portmapctl.core.mapping import DEFAULT_MARK_BIT, MappingConfig
from portmapctl.iptables import shapes
from portmapctl.iptables.chains import (
    DNAT_PREFIX,
    TOPLEVEL_DNAT,
    Chain,
    dnat_chain_name,
    masq_chain,
    setmark_chain,
    toplevel_dnat_chain,
    wanted_chains,
)
from portmapctl.iptables.ruleset import NatTable


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
