"""`add`: create a container's port mappings exactly as the plugin's ADD would.

One transaction per family, planned against the live table, so a second run changes
nothing. Afterwards, as the plugin does: route_localnet on the interface towards the
container (IPv4, SNAT on) and a flush of the mapped UDP ports' conntrack entries.
"""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from portmapctl.core.mapping import MappingConfig
from portmapctl.errors import ApplyFailed
from portmapctl.iptables.chains import wanted_chains
from portmapctl.iptables.planner import plan_setup
from portmapctl.ops.node import Node

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AddResult:
    dry_run: bool
    changed: bool
    chains: Tuple[str, ...]
    transactions: Dict[int, str]
    warnings: Tuple[str, ...] = field(default=())


def add(
    node: Node, config: MappingConfig, *, dry_run: bool = False, flush_udp: bool = True
) -> AddResult:
    if config.backend == "nftables":
        return _add_nft(node, config, dry_run=dry_run, flush_udp=flush_udp)
    transactions: Dict[int, str] = {}
    chains: List[str] = []
    families = [f for f in config.families if f in node.families]
    # Every family's chains first: one that cannot be built (a condition of the wrong
    # family, say) is bad input before any family is written, not after the first.
    wanted_by_family = {family: wanted_chains(config, family) for family in families}
    for family in families:
        wanted = wanted_by_family[family]
        chains += [c.name for c in wanted if c.name not in chains]
        try:
            txn = node.converge(family, lambda live, w=wanted: plan_setup(w, live), dry_run)
        except ApplyFailed as err:
            # Each family is its own transaction: say which went in and which did not.
            done = [f"IPv{f}" for f in transactions]
            raise ApplyFailed(
                f"IPv{family}: {err}" + (f" ({', '.join(done)} was applied)" if done else ""),
                maybe_applied=err.maybe_applied,
            ) from None
        if txn:
            transactions[family] = txn.render()
    warnings: List[str] = []
    if not dry_run and families:
        warnings += after_setup(config, families, flush_udp)
    return AddResult(dry_run, bool(transactions), tuple(chains), transactions, tuple(warnings))


def nft_refusals(config: MappingConfig) -> None:
    """What the plugin refuses for its nftables backend, refused the same way."""
    from portmapctl.errors import BadInput

    iptables_only = []
    if config.external_setmark_chain is not None:
        iptables_only.append("externalSetMarkChain")
    for name, conditions in (
        ("conditionsV4", config.conditions_v4),
        ("conditionsV6", config.conditions_v6),
    ):
        if conditions and conditions[0][:1] in ("-", "!"):
            iptables_only.append(name)
    if iptables_only:
        raise BadInput(
            "nftables backend was requested but configuration contains iptables-specific"
            f" options [{' '.join(iptables_only)}]"
        )


def _add_nft(node: Node, config: MappingConfig, *, dry_run: bool, flush_udp: bool) -> AddResult:
    """The v1.9.1 ADD in nftables: both families in one `nft -f` transaction."""
    from portmapctl.nftables import planner
    from portmapctl.nftables.transaction import check_condition
    from portmapctl.nftables.wanted import wanted

    nft_refusals(config)
    for condition in (*config.conditions_v4, *config.conditions_v6):
        check_condition(condition)
    families = [f for f in config.families if f in node.families]
    want = [w for f in families if (w := wanted(config, f)) is not None]
    text = node.converge_nft(lambda live: planner.setup(live, want), dry_run=dry_run)
    warnings: List[str] = []
    if not dry_run and families:
        warnings += after_setup(config, families, flush_udp)
    transactions = {"nft": text} if text else {}
    return AddResult(
        dry_run,
        bool(text),
        (f"nft:{config.container_id}",),
        transactions,
        tuple(warnings),  # type: ignore[arg-type]
    )


def after_setup(config: MappingConfig, families: List[int], flush_udp: bool) -> List[str]:
    """The plugin's two side effects; failures are warnings, as in the plugin."""
    warnings = []
    address = config.address(4)
    if config.snat and 4 in families and address is not None:
        try:
            enable_route_localnet(str(address.ip))
        except OSError as err:
            warnings.append(f"could not set route_localnet towards {address.ip}: {err}")
    udp_ports = sorted({p.host_port for p in config.ports if p.protocol == "udp"})
    if flush_udp and udp_ports:
        try:
            from portmapctl.ops.flush_udp import flush_ports

            flush_ports(families, udp_ports)
        except Exception as err:  # noqa: BLE001 - the plugin only logs this too
            warnings.append(f"could not flush UDP conntrack entries for ports {udp_ports}: {err}")
    return warnings


def route_interface(address: str) -> Optional[str]:
    """The interface the kernel routes `address` through (`ip route get`)."""
    done = subprocess.run(
        ["ip", "-o", "route", "get", address], capture_output=True, text=True, check=False
    )
    words = done.stdout.split()
    if done.returncode != 0 or "dev" not in words:
        return None
    return words[words.index("dev") + 1]


def enable_route_localnet(address: str) -> None:
    """Let 127/8 cross a routing boundary towards the container (localhost hairpin)."""
    interface = route_interface(address)
    if interface is None or "/" in interface or interface in (".", ".."):
        return
    with open(f"/proc/sys/net/ipv4/conf/{interface}/route_localnet", "w") as knob:
        knob.write("1")
