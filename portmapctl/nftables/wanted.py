"""What upstream v1.9.1's ADD writes to nftables for one container, as values.

Per family with an address (the plugin uses the first address of each family):

- `hostports`: per port mapping that applies to the family, in `portMappings` order:
  `[ip|ip6 daddr HOSTIP] PROTO dport HOSTPORT dnat to ADDR:PORT comment "ID"`
  (a host IP of 0.0.0.0/:: adds no daddr; one of the other family skips the port);
- `masquerading` with SNAT on: `ip saddr C ip daddr C masquerade comment "ID"`, plus for
  IPv4 `ip saddr 127.0.0.1 ip daddr C masquerade ...`: per container, not per port;
  `masqAll` and `markMasqBit` change nothing here (the backend ignores them);
- the shared structure: chains hostports, hostip_hostports, hostports_all (two jumps),
  base chains prerouting/output (`[conditions] fib daddr type local jump
  hostports_all`, conditions are the container's nft-syntax `conditionsV4/V6`) and,
  with SNAT on, masquerading.

Everything is a `RuleBody`, compared with what `ruleset.py` parses: as values.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Optional, Tuple, Union

from portmapctl.core.mapping import MappingConfig
from portmapctl.nftables.ruleset import (
    HOSTIP_HOSTPORTS,
    HOSTPORTS,
    HOSTPORTS_ALL,
    MASQUERADING,
    OUTPUT,
    PREROUTING,
    Action,
    ActionKind,
    BaseHook,
    Match,
    RuleBody,
    parse_conditions,
)

# The plugin's base chains, with the priorities it asks for (dstnat = -100, srcnat = 100).
BASE_CHAINS = {
    PREROUTING: BaseHook("nat", "prerouting", -100),
    OUTPUT: BaseHook("nat", "output", -100),
    MASQUERADING: BaseHook("nat", "postrouting", 100),
}
# Regular chains, in the order the plugin adds them.
REGULAR_CHAINS = (HOSTPORTS, HOSTIP_HOSTPORTS, HOSTPORTS_ALL)

FIB_LOCAL = Match("fib daddr type", "==", "local")
HOSTPORTS_ALL_RULES = (
    RuleBody((), Action(ActionKind.JUMP, target=HOSTIP_HOSTPORTS)),
    RuleBody((), Action(ActionKind.JUMP, target=HOSTPORTS)),
)


def _ip(family: int) -> str:
    return "ip6" if family == 6 else "ip"


def entry_rule(conditions: Tuple[Match, ...] = ()) -> RuleBody:
    """The one rule of prerouting and of output (v1.9.0 on)."""
    return RuleBody((*conditions, FIB_LOCAL), Action(ActionKind.JUMP, target=HOSTPORTS_ALL))


def old_entry_rules(chain: str, entry: RuleBody) -> Tuple[RuleBody, ...]:
    """What v1.6/v1.7's ADD writes in base chain `chain` with the conditions of `entry`
    (v1.9's rule): prerouting `[cond] jump hostip_hostports`, `[cond] jump hostports`;
    output the same with `fib daddr type local` before its jump to hostports alone."""
    conditions = entry.matches[:-1]
    last = (*conditions, FIB_LOCAL) if chain == OUTPUT else conditions
    return (
        RuleBody(conditions, Action(ActionKind.JUMP, target=HOSTIP_HOSTPORTS)),
        RuleBody(last, Action(ActionKind.JUMP, target=HOSTPORTS)),
    )


@dataclass(frozen=True)
class WantedFamily:
    """One container's rules in one family, as the plugin's ADD writes them."""

    family: int
    container_id: str
    hostports: Tuple[RuleBody, ...]
    masquerading: Tuple[RuleBody, ...]
    entry: RuleBody
    snat: bool
    # The subnet of the container's address on this network (its cached result's
    # prefix): the one evidence, in rules that carry the bare container ID, that a rule
    # sending elsewhere is this network's (an old address) and not another network's.
    subnet: Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
    # The container has this family alone (no address of the other) and v1.7.1's CHECK
    # of it can pass (`_v17_check_can_pass`): where no v1.9 ADD wrote this family's
    # table, its host-IP rules stay in hostip_hostports (layout.keeps_hostip). Where that
    # CHECK fails wherever they are, only v1.9.1's can pass: they move, as a dual-stack
    # container's do.
    alone: bool = False

    @property
    def rule_count(self) -> int:
        """How many rules of the container's own its ADD writes for the family."""
        return len(self.hostports) + len(self.masquerading)


def wanted(config: MappingConfig, family: int) -> Optional[WantedFamily]:
    """What the ADD writes in `family`, or None when the container has no such address."""
    address = config.address(family)
    if address is None:
        return None
    ip = _ip(family)
    container_ip = address.ip.compressed
    cid = config.container_id
    hostports = []
    for port in config.ports:
        if not port.applies_to(family):
            continue
        matches = []
        host_ip = port.host_ip_for_rule()
        if host_ip:
            matches.append(Match(f"{ip} daddr", "==", host_ip_text(host_ip)))
        matches.append(Match(f"{port.protocol} dport", "==", str(port.host_port)))
        action = Action(ActionKind.DNAT, addr=container_ip, port=port.container_port)
        hostports.append(RuleBody(tuple(matches), action, cid))
    masq = []
    if config.snat:
        sources = [container_ip] + (["127.0.0.1"] if family == 4 else [])
        for source in sources:
            matches = (Match(f"{ip} saddr", "==", source), Match(f"{ip} daddr", "==", container_ip))
            masq.append(RuleBody(matches, Action(ActionKind.MASQUERADE), cid))
    conditions = config.conditions_v6 if family == 6 else config.conditions_v4
    return WantedFamily(
        family,
        cid,
        tuple(hostports),
        tuple(masq),
        entry_rule(parse_conditions(conditions)),
        config.snat,
        address.network,
        len(config.families) == 1 and _v17_check_can_pass(config, family),
    )


def _v17_check_can_pass(config: MappingConfig, family: int) -> bool:
    """Whether v1.6.2/v1.7.1's CHECK (checkPorts) of a container of `family` alone can
    pass on what their ADD wrote. It counts the container's rules by comment: a
    masquerading rule per mapping with SNAT on (two per mapping in IPv6), where the ADD
    writes two per container in IPv4 and one in IPv6; a hostip_hostports rule per
    mapping with any host IP, where the ADD writes one there only for a specific host IP
    of the family (0.0.0.0/:: goes to hostports, the other family's is skipped)."""
    ports = config.ports
    if config.snat and len(ports) * (2 if family == 6 else 1) > (1 if family == 6 else 2):
        return False
    return all(p.applies_to(family) and p.host_ip_for_rule() for p in ports if p.host_ip)


def host_ip_text(host_ip: str) -> str:
    return ipaddress.ip_address(host_ip).compressed
