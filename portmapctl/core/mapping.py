"""What a container asks of the portmap plugin, independent of the rule backend.

`MappingConfig` is the plugin's parsed stdin for one container (its port mappings,
addresses and options); `PortMapping` one entry of `runtimeConfig.portMappings`. Both
backends (iptables, nftables) generate their rules from these values. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Optional, Tuple, Union

from portmapctl.core.backend import Backend

Interface = Union[ipaddress.IPv4Interface, ipaddress.IPv6Interface]

DEFAULT_MARK_BIT = 13


def endpoint(address: str, port: int) -> str:
    """An address and port as people write them: `10.88.0.5:80`, `[fd00::5]:80`."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def loopback(host_ip: Optional[str]) -> bool:
    """A mapping on this host IP serves the node's own connections alone (127.0.0.1,
    ::1): they pass the nat output hook, never prerouting, so what another tool's rule
    takes of them is judged there (iptables/foreign.py, nftables/foreign.py)."""
    return bool(host_ip) and ipaddress.ip_address(str(host_ip)).is_loopback


def destination(host_ip: Optional[str]) -> Optional[str]:
    """The one address a mapping's connections are for, None for a mapping on every
    address (no host IP, 0.0.0.0, ::): another tool's rule for one destination (`-d`,
    `ip daddr`) is judged for it (iptables/foreign.py, nftables/foreign.py)."""
    if not host_ip or ipaddress.ip_address(str(host_ip)).is_unspecified:
        return None
    return str(host_ip)


def takes_all_of(earlier: Optional[str], host_ip: Optional[str]) -> bool:
    """Whether a rule for host IP `earlier` (None: every address), evaluated first,
    takes every connection a rule for `host_ip` would get: the earlier is for every
    address, or for that one. One bound to 127.0.0.1 leaves every other address to a
    later rule for all of them: that one still gets traffic, it is not shadowed."""
    return earlier is None or earlier == host_ip


def destined(where: str, dest: Any) -> Optional[bool]:
    """Whether the connections of a mapping on `dest` (`destination`: one address, or
    None for every address of the node that is not loopback) are for an address in
    `where` (an address or a prefix, as a rule's `-d` or `ip daddr` names it): all of
    them (True), none (False), or only some (None; also for what is not an address)."""
    try:
        network = ipaddress.ip_network(where, strict=False)
    except ValueError:
        return None
    if dest is not None:
        return ipaddress.ip_address(dest) in network
    if network.is_loopback:
        return False  # no connection of a mapping on every address is for loopback
    return None


@dataclass(frozen=True)
class PortMapping:
    """One entry of the plugin's `runtimeConfig.portMappings`."""

    host_port: int
    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""
    # The config's spelling of the protocol where it is not `protocol` ("TCP"): the
    # plugin groups its iptables entry rules by the word as written, and its nftables
    # backend fails on it.
    protocol_spelling: str = ""

    def applies_to(self, family: int) -> bool:
        """A host IP of the other family skips this port's rules in this family."""
        return not self.host_ip or ipaddress.ip_address(self.host_ip).version == family

    def host_ip_for_rule(self) -> Optional[str]:
        """The `-d` value: none for no host IP or an unspecified one (0.0.0.0, ::)."""
        if not self.host_ip or ipaddress.ip_address(self.host_ip).is_unspecified:
            return None
        return self.host_ip


@dataclass(frozen=True)
class MappingConfig:
    """Everything the plugin's ADD needs for one container (its parsed stdin)."""

    network: str
    container_id: str
    addresses: Tuple[Interface, ...]
    ports: Tuple[PortMapping, ...]
    snat: bool = True
    mark_bit: int = DEFAULT_MARK_BIT
    external_setmark_chain: Optional[str] = None
    conditions_v4: Tuple[str, ...] = ()
    conditions_v6: Tuple[str, ...] = ()
    masq_all: bool = False
    # The plugin's backend (v1.6 on), or None (not configured:
    # the plugin picks iptables when it works).
    backend: Optional[Backend] = None

    def address(self, family: int) -> Optional[Interface]:
        """The plugin uses the first address of each family."""
        for address in self.addresses:
            if address.version == family:
                return address
        return None

    @property
    def families(self) -> Tuple[int, ...]:
        return tuple(f for f in (4, 6) if self.address(f) is not None)


@dataclass(frozen=True)
class Mapping:
    """One host port taken to a container, as a node has it (iptables: a DNAT rule of a
    per-container chain; nftables: a rule of hostports, see nftables.inventory)."""

    network: Optional[str]
    container_id: Optional[str]
    family: int
    protocol: str
    host_ip: Optional[str]
    host_port: int
    container_ip: str
    container_port: int
    snat: bool
    chain: str
    status: Tuple[str, ...]
    shadowed_by: Optional[str] = None  # what takes this port first
    # The matches beyond protocol, host port and host address that traffic must meet to
    # get here (the network's conditionsV4/V6 on its entry rules or nftables jump, an
    # nftables rule's own `iifname`): the columns cannot say them, so the row carries
    # them as the backend prints them rather than claim every packet to the port (JSON
    # `conditions`).
    conditions: Tuple[str, ...] = ()
