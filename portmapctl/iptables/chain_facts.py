"""gc's lean read of the per-container chains: whose each is, what it maps and where
it sends traffic, without the statuses `inventory.build` judges (shadowing, missing
ports: a pass over every chain and the other family that gc asks none of).
Pure, built on `plugin_rules` as `inventory` is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Optional, Set, Tuple

from portmapctl.core.status import ChainKind
from portmapctl.iptables import shapes
from portmapctl.iptables.chains import DNAT_PREFIX
from portmapctl.iptables.plugin_rules import (
    EntryRule,
    chain_owner,
    entry_rules,
    per_container_chains,
)
from portmapctl.iptables.ruleset import Args, NatTable, option_value, rule_target
from portmapctl.iptables.shapes import ProtoPort


@dataclass(frozen=True)
class ChainFacts:
    """What `gc` needs of one per-container chain; its owner as `inventory.build`
    gives it without a cache."""

    name: str
    family: int
    kind: ChainKind
    network: Optional[str]
    container_id: Optional[str]
    entries: Tuple[EntryRule, ...]
    rules: Tuple[Args, ...]
    # Host ports it maps, as ChainInfo.host_ports (its rules', not its entry rules': those
    # name the other family's host IPs' ports too); none for a legacy CNI-SN- chain (its
    # --dport is the container port).
    host_ports: Tuple[ProtoPort, ...]
    container_ips: FrozenSet[str]  # where its DNAT rules send traffic


def chain_facts(table: NatTable) -> List[ChainFacts]:
    """Every per-container chain of the table, in `build`'s order, each rule looked
    into once (gc at 5,000 stale of 10,000: `build` and host_ports parsed every port
    rule twice and judged shadowing nobody asked for)."""
    names = per_container_chains(table)
    entries = entry_rules(table, set(names))
    found: List[ChainFacts] = []
    for name in names:
        chain_entries = entries[name]
        network, container_id = chain_owner(name, entries, {})
        rules = table.rules(name)
        if not name.startswith(DNAT_PREFIX):
            found.append(
                ChainFacts(
                    name,
                    table.family,
                    ChainKind.LEGACY_SNAT,
                    network,
                    container_id,
                    tuple(chain_entries),
                    rules,
                    (),
                    frozenset(),
                )  # fmt: skip
            )
            continue
        ports: Dict[ProtoPort, None] = {}
        addresses: Set[str] = set()
        for args in rules:
            # What plugin_rules.port_match reads, asked of the rule directly (tuple.index, in C):
            # a dict per rule was most of this loop.
            proto, port = option_value(args, "-p"), option_value(args, "--dport")
            if not proto or not port or not port.isdigit():
                continue
            ports[(proto, int(port))] = None
            if rule_target(args) == "DNAT":
                to = option_value(args, "--to-destination")
                destination = shapes.split_destination(to or "")
                if destination:
                    addresses.add(destination[0])
        found.append(
            ChainFacts(
                name,
                table.family,
                ChainKind.DNAT,
                network,
                container_id,
                tuple(chain_entries),
                rules,
                tuple(ports),
                frozenset(addresses),
            )  # fmt: skip
        )
    return found
