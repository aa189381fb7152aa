"""check of one nft-backed mapping given on the command line (check --network
--container -p ...), beside the node check (ops/check/nft.py).

One mapping is judged against the config given, not the cache's: as upstream v1.9.1's
CHECK would want it but exactly (its rules and the structure that reaches them,
check_mapping), and shadowed as the node check says it (mapping_shadowed). The
container's rules for its other cached networks and addresses are its own, never
extra (other_networks, own_addresses: --repair of one port deletes no live mapping),
which one mapping's repair (ops/check/nft_repair_one.py) counts the same way.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

from portmapctl.cni.cache import Attachment
from portmapctl.core.mapping import MappingConfig
from portmapctl.core.status import ProblemKind, Status
from portmapctl.core.text import rules_missing
from portmapctl.ops.check.nft import (
    NFT_WHY,
    as_problem,
    expected_configs,
    rules_by_handle,
    shadow_problem,
)
from portmapctl.ops.check.problem import Problem
from portmapctl.ops.node import Node

if TYPE_CHECKING:
    from portmapctl.nftables.inventory import NftInventory, NftMapping
    from portmapctl.nftables.ruleset import Ruleset
    from portmapctl.nftables.wanted import WantedFamily


def check_mapping(
    node: Node, config: MappingConfig, families: Tuple[int, ...], live: Optional[Ruleset] = None
) -> List[Problem]:
    """One nft-backed mapping, as upstream v1.9.1's CHECK (which only counts rules)
    would want it, but exactly: its rules, and the structure that reaches them; and,
    beyond that CHECK, the container's own rules its config does not make
    (`extra-rules`, as the node check: first-match-wins sends the port elsewhere).
    `live`: the plugin's tables in `families`, as read already (else read here)."""
    from portmapctl.nftables.planner import missing_rules
    from portmapctl.nftables.problems import extra_rules, structure_problems
    from portmapctl.nftables.wanted import wanted

    if live is None:
        live = node.read_nft(families)
    if node.nft_unusable is not None:
        raise node.nft_unusable
    if node.nft_absent is not None:
        raise node.nft_absent  # (its rules are nowhere, and --repair cannot write them)
    from portmapctl.ops.check.run import SAME_WITH_REPAIR as fix

    structure = structure_problems(live, {f: config.snat for f in families})
    problems = [as_problem(p, fix) for p in structure]
    others = other_networks(node, config, families, node.read_cache())
    for family in families:
        want = wanted(config, family)
        if want is None:
            continue
        table = live.table(family)
        wants = [want, *(w for w in others if w.family == family)]
        own = {config.container_id: config.network}
        extra = extra_rules(table, family, wants, own, "its config", own_addresses(config))
        problems += [as_problem(p, fix) for p in extra]
        missing = missing_rules(live, want)
        if missing:
            texts = "; ".join(body.text(family) for _chain, body in missing)
            kind = ProblemKind.NFT_MISSING_RULES.value
            problems.append(
                Problem(
                    kind,
                    family,
                    f"nft:{missing[0][0]}",
                    config.network,
                    config.container_id,
                    f"{rules_missing(len(missing), want.rule_count)}: {texts}",
                    fix,
                    NFT_WHY[kind],
                    tuple(body.text(family) for _chain, body in missing),
                )  # fmt: skip
            )
    return problems


def mapping_shadowed(
    node: Node, config: MappingConfig, families: Tuple[int, ...], live: Ruleset
) -> List[Problem]:
    """The `shadowed` problems of one nft-backed mapping's ports that an earlier rule
    in the plugin's chains takes (another container's, another tool's), as the node
    check reports them: the plugin's CHECK counts the mapping's rules and passes, but
    it gets no traffic there. The CNI cache (is the winner stale? the network) is
    read only for a mapping that is shadowed."""
    from portmapctl.nftables import inventory as nft_inventory
    from portmapctl.ops.check.hints import fixes_for
    from portmapctl.ops.nft import owners

    ports = {(p.protocol, p.host_port) for p in config.ports}

    def shadowed(found: NftInventory) -> List[NftMapping]:
        return [
            m
            for m in found.mappings
            if m.container_id == config.container_id
            and m.family in families
            and (m.protocol, m.host_port) in ports
            and Status.SHADOWED in m.status
        ]

    if not shadowed(nft_inventory.build(live, problems=False)):
        return []
    attachments = node.read_cache()
    found = nft_inventory.build(live, owners(attachments), problems=False)
    foreign = {(f.family, f.label): f for f in found.foreign}
    rules = rules_by_handle(live)
    fixes = fixes_for(node, bool(attachments))
    return [
        replace(
            shadow_problem(m, found, foreign, rules, fixes), network=m.network or config.network
        )
        for m in shadowed(found)
    ]


def other_networks(
    node: Node,
    config: MappingConfig,
    families: Tuple[int, ...],
    attachments: Optional[Sequence[Attachment]],
) -> List[WantedFamily]:
    """What the plugin wrote for the container's other nft-backed cache entries: their
    rules carry the same comment (the container ID alone), so they are the container's
    own, never extra, as the node check counts them. Those of other networks, and its
    entry on this network with the addresses given: its other ports are live mappings
    (a check of one port of a container had --repair delete the others; SPEC §3: it
    never deletes a live mapping), as expected.sharing_chain keeps them on iptables."""
    from portmapctl.nftables.wanted import wanted

    cid, network = config.container_id, config.network
    # This network's entry with other addresses: `config` is a new incarnation of the
    # interface (its entry read before its re-ADD), whose old rules are not wanted.
    here = [a.mapping for a in attachments or ()
            if (a.container_id, a.network) == (cid, network) and a.mapping is not None
            and not a.zombie and a.mapping != config
            and all(a.mapping.address(f) == config.address(f) for f in (4, 6))]  # fmt: skip
    found = [w for c in here for f in families if (w := wanted(c, f)) is not None]
    if not any(a.container_id == cid and a.network != network for a in attachments or ()):
        return found  # the common case: the cache is not split by backend for nothing
    return found + [w for c in expected_configs(node, attachments or [])
                    if c.container_id == cid and c.network != network
                    for f in families if (w := wanted(c, f)) is not None]  # fmt: skip


def own_addresses(config: MappingConfig) -> Tuple[str, ...]:
    """The container addresses of the mapping given: of its container's rules, only
    those for them are its config's to judge. The plugin's comment is the container ID
    alone, so a rule for another address may be the same container's on a network the
    cache does not hold (another cache dir, a lost entry): liveness in doubt, kept."""
    found = (config.address(family) for family in (4, 6))
    return tuple(a.ip.compressed for a in found if a is not None)
