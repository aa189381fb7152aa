"""How `check` tells the operator what a problem means and which command fixes it:
fix commands are spelled with the options check itself was run with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from portmapctl.core.backend import Flavour
from portmapctl.core.mapping import MappingConfig, endpoint
from portmapctl.core.text import name_text, port_runs
from portmapctl.iptables.ruleset import Args
from portmapctl.iptables.shown import command_line, shown_rule
from portmapctl.ops.node import Node

REPAIR_COMMAND = "portmapctl check --repair"
# The fix of a row the repair would not change (JSON `fix` null: it is prose), with why.
WOULD_LEAVE = "--repair would leave it as it is: {why}"
_SHOWN = 3  # how many rules or chains a detail names before "and N more"


@dataclass(frozen=True)
class Fixes:
    """How fix commands are spelled on this node: with the options check was run with."""

    suffix: str = ""
    flavour: Optional[str] = None  # which iptables a hand-typed fix names
    cache_present: bool = True

    @property
    def repair(self) -> str:
        return f"{REPAIR_COMMAND}{self.suffix}"

    @property
    def gc(self) -> str:
        if self.cache_present:
            return f"portmapctl gc{self.suffix}"
        # gc refuses to guess which containers are live without a source of liveness:
        # no command runs as it stands, so this is prose (JSON `fix` is then null).
        return (
            f"`portmapctl gc --valid-attachments FILE{self.suffix}` (with no CNI cache"
            " entry here, gc must be told which containers are live: a CNI GC document,"
            " or --keep ID)"
        )

    def iptables(self, family: int, command: str, chain: str, args: Args) -> str:
        return command_line(family, self.flavour, command, chain, args)

    def only_in(self, other: str) -> str:
        """The fix of a chain missing here that the other flavour's tables hold: prose,
        as repair leaves it (the plugin may well run that other iptables)."""
        from portmapctl.ops.flavour_guard import other_flavour

        # The family's own flavour is the other of `other`: not `self.flavour`, which a
        # backend of one flavour per family (the alternatives apart) has none of.
        used = other_flavour(other)
        return (
            f"--repair leaves it, as a copy in the {used} tables would make a split"
            f" brain. If the plugin runs iptables-{other}, run portmapctl with --iptables"
            f" {other}; if it runs iptables-{used}, first remove the portmap chains"
            f" from the {other} tables"
        )


def fixes_for(node: Node, cache_present: bool = True) -> Fixes:
    return Fixes(node.options.arguments, _flavour(node), cache_present)


def _flavour(node: Node) -> Optional[Flavour]:
    """nft or legacy: the iptables the backend works on (None for a snapshot)."""
    from portmapctl.ops.flavour_guard import flavour_of

    if node.options.snapshots:
        return None
    return flavour_of(node.backend.name)


# --- describing things ------------------------------------------------------------


def _who(network: Optional[str], container_id: Optional[str]) -> str:
    if network is None and container_id is None:
        return "an unknown container"
    # A name read from the node, as its table cell writes it (core/text.name_text).
    return f"{name_text(network or '?')}/{name_text(container_id or '?')}"


def _ports_text(ports: Sequence[Tuple[str, int]]) -> str:
    """`tcp/8080, udp/5353`; consecutive ports as a range, `tcp/9000-9010`."""
    return ", ".join(f"{proto}/{ports}" for proto, ports in port_runs(ports)) or "no ports"


def _config_ports(config: MappingConfig, family: int) -> str:
    address = config.address(family)
    ip = "?" if address is None else address.ip.compressed
    # A port's host IP before its number, as list's HOST column shows it: two
    # mappings of one port on other host IPs read apart.
    return ", ".join(
        f"{p.protocol}/{endpoint(p.host_ip, p.host_port) if p.host_ip else p.host_port}"
        f"->{endpoint(ip, p.container_port)}"
        for p in config.ports
        if p.applies_to(family)
    )


def _rules_text(chain: str, rules: Sequence[Args], command: str = "-A") -> str:
    shown = "; ".join(shown_rule(command, chain, r) for r in rules[:_SHOWN])
    more = len(rules) - _SHOWN
    return shown + (f"; and {more} more" if more > 0 else "")


def _names_text(names: Sequence[str]) -> str:
    more = len(names) - _SHOWN
    return ", ".join(names[:_SHOWN]) + (f" and {more} more" if more > 0 else "")
