"""The chain model: what the portmap plugin puts in the nat table, as values.

A `Chain` is one chain the plugin manages plus the rules that enter it from other
chains, like the plugin's own `chain` struct. The generators below produce the
chains for a `MappingConfig`, in the plugin's order and, through
`normal_form.normalize`, in the exact form `iptables-save` prints. Everything here is
pure: no process, no kernel.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

if TYPE_CHECKING:
    from portmapctl.core.mapping import MappingConfig, PortMapping
    from portmapctl.iptables.ruleset import Args

# The rule generators import normal_form (normalize) when they first run: the chain names
# alone (add's fast path, every command's --help through cli/add_run.py) need neither
# it nor ipaddress.

try:
    # CPython's own SHA-512: hashlib would load OpenSSL first, 2-3 ms of every run.
    from _sha512 import sha512
except ImportError:  # another interpreter
    from hashlib import sha512

TOPLEVEL_DNAT = "CNI-HOSTPORT-DNAT"
DNAT_ENTRY_CHAINS = ("PREROUTING", "OUTPUT")  # the built-in chains that jump to it
SETMARK = "CNI-HOSTPORT-SETMARK"
MASQ = "CNI-HOSTPORT-MASQ"
OLD_TOPLEVEL_SNAT = "CNI-HOSTPORT-SNAT"
SHARED_CHAINS = (TOPLEVEL_DNAT, SETMARK, MASQ, OLD_TOPLEVEL_SNAT)
DNAT_PREFIX = "CNI-DN-"
SNAT_PREFIX = "CNI-SN-"
# The plugin's names exactly: prefix + 21 hex digits (28 characters). Anything else
# that merely starts like them (an admin's CNI-DN-admin-redirects) is not ours.
_PLUGIN_CHAIN = re.compile(r"CNI-(?:DN|SN)-[0-9a-f]{21}\Z")
MAX_PORTS_PER_MULTIPORT = 15


def is_plugin_chain(name: str) -> bool:
    """Whether `name` is a per-container chain name as the plugin makes them."""
    return _PLUGIN_CHAIN.match(name) is not None


def chain_name(network: str, container_id: str, prefix: str = "DN-") -> str:
    """The plugin's name: CNI- + prefix + hex SHA-512(network + id), 28 characters.
    Of their bytes, as Go hashes them: one that is not UTF-8 (read from a rule's
    comment as a lone surrogate) as itself."""
    digest = sha512((network + container_id).encode("utf-8", "surrogateescape")).hexdigest()
    return ("CNI-" + prefix + digest)[:28]


def dnat_comment(network: str, container_id: str) -> str:
    return trim_comment(f'dnat name: "{network}" id: "{container_id}"')


def trim_comment(comment: str) -> str:
    """iptables limits comments to 256 bytes; the plugin cuts longer ones like this."""
    if len(comment.encode()) <= 255:
        return comment
    return comment.encode()[:253].decode(errors="ignore") + "..."


def dnat_chain_name(config: MappingConfig) -> str:
    """The CNI-DN- chain the plugin makes for this container on this network."""
    return chain_name(config.network, config.container_id, "DN-")


def setmark_target(config: MappingConfig) -> str:
    """Where hairpin and localhost traffic is sent to be marked for masquerade."""
    return config.external_setmark_chain or SETMARK


@dataclass(frozen=True)
class Chain:
    """A chain the plugin manages, with the rules that jump to it.

    `rules` and `entry_rules` are in saved normal form. Each entry rule is complete,
    ending in `-j <name>`, and goes into every chain of `entry_chains`.
    `prepend_entry` means the entry rules go first in their chain (MASQ's does:
    bridge and ptp plugins' masquerade rules would otherwise win).
    """

    name: str
    rules: Tuple[Args, ...] = ()
    entry_chains: Tuple[str, ...] = ()
    entry_rules: Tuple[Args, ...] = ()
    prepend_entry: bool = False
    table: str = "nat"

    @property
    def shared(self) -> bool:
        """Shared by all containers: we add what is missing, never flush or delete."""
        return self.name in SHARED_CHAINS


def _mark(bit: int) -> str:
    value = 1 << bit
    return f"{value:#x}/{value:#x}"


# The shared chains depend on (mark bit, family) only. `check` generates every cached
# container's chains, shared ones included: cached, they are made once per node, not
# once per container (a third of check's normalize() calls). Chain values are frozen.
@functools.cache
def toplevel_dnat_chain(family: int) -> Chain:
    from portmapctl.iptables.normal_form import normalize

    return Chain(
        TOPLEVEL_DNAT,
        entry_chains=DNAT_ENTRY_CHAINS,
        entry_rules=(
            normalize(["-m", "addrtype", "--dst-type", "LOCAL", "-j", TOPLEVEL_DNAT], family),
        ),
    )


@functools.cache
def setmark_chain(mark_bit: int, family: int) -> Chain:
    from portmapctl.iptables.normal_form import normalize

    rule = ["-m", "comment", "--comment", "CNI portfwd masquerade mark"]
    return Chain(
        SETMARK, rules=(normalize([*rule, "-j", "MARK", "--set-xmark", _mark(mark_bit)], family),)
    )


@functools.cache
def masq_chain(mark_bit: int, family: int) -> Chain:
    from portmapctl.iptables.normal_form import normalize

    entry = ["-m", "comment", "--comment", "CNI portfwd requiring masquerade", "-j", MASQ]
    return Chain(
        MASQ,
        rules=(normalize(["-m", "mark", "--mark", _mark(mark_bit), "-j", "MASQUERADE"], family),),
        entry_chains=("POSTROUTING",),
        entry_rules=(normalize(entry, family),),
        prepend_entry=True,
    )


def _port_groups(ports: Tuple[PortMapping, ...]) -> List[Tuple[str, str]]:
    """(protocol, "p1,p2,...") per multiport rule: protocols sorted, 15 ports each.

    Every mapping counts here whatever its host IP's family, as in the plugin. The
    plugin groups by the protocol as the config spells it, in byte order ("TCP" and
    "tcp" get an entry rule each, "TCP" first), and iptables lower-cases the word.
    """
    by_proto: Dict[str, Tuple[str, List[str]]] = {}
    for port in ports:
        spelled = port.protocol_spelling or port.protocol
        by_proto.setdefault(spelled, (port.protocol, []))[1].append(str(port.host_port))
    groups = []
    for spelled in sorted(by_proto):
        proto, numbers = by_proto[spelled]
        for start in range(0, len(numbers), MAX_PORTS_PER_MULTIPORT):
            groups.append((proto, ",".join(numbers[start : start + MAX_PORTS_PER_MULTIPORT])))
    return groups


# Cached: `check --repair` asks for every cached container's chains six times (two
# checks and a plan, per family): 1.9 of its 6.2 s for 1,000 containers. A config is a
# frozen value (hashable), and so is the Chain made from it.
@functools.lru_cache(maxsize=32768)
def dnat_chain(config: MappingConfig, family: int) -> Optional[Chain]:
    """The per-container CNI-DN- chain for one family, or None without an address."""
    from portmapctl.iptables.normal_form import (
        address_lists,
        normal_entry_rule,
        normal_port_rule,
        normalize,
    )

    address = config.address(family)
    if address is None:
        return None
    name = dnat_chain_name(config)
    comment = dnat_comment(config.network, config.container_id)
    conditions = config.conditions_v6 if family == 6 else config.conditions_v4
    if conditions:
        # A -s/-d list in the conditions is a rule per address, as iptables makes them.
        entry_rules = tuple(
            normalize(words, family)
            for proto, ports in _port_groups(config.ports)
            for words in address_lists(
                [
                    "-m",
                    "comment",
                    "--comment",
                    comment,
                    "-m",
                    "multiport",
                    "-p",
                    proto,
                    "--destination-ports",
                    ports,
                    *conditions,
                    "-j",
                    name,
                ]
            )
        )
    else:  # the same rules without conditions, built in saved form directly
        entry_rules = tuple(
            normal_entry_rule(comment, proto, ports, name, family)
            for proto, ports in _port_groups(config.ports)
        )
    hairpin_source = (
        ("::/0" if family == 6 else "0.0.0.0/0") if config.masq_all else str(address.network)
    )
    container_ip = address.ip.compressed
    destination = f"[{container_ip}]" if family == 6 else container_ip
    rules: List[Args] = []
    mark = (setmark_target(config),)
    for port in config.ports:
        if not port.applies_to(family):
            continue
        # The plugin's `-p P --dport N [-d HOSTIP] [-s SOURCE] -j ...`, in saved form.
        proto, host_port, host_ip = port.protocol, str(port.host_port), port.host_ip_for_rule()
        host_ip = host_ip or None
        if config.snat:
            rules.append(normal_port_rule(proto, host_port, host_ip, hairpin_source, mark, family))
            if family == 4 and not config.masq_all:
                rules.append(normal_port_rule(proto, host_port, host_ip, "127.0.0.1", mark, family))
        dnat = ("DNAT", "--to-destination", f"{destination}:{port.container_port}")
        rules.append(normal_port_rule(proto, host_port, host_ip, None, dnat, family))
    # The plugin adds each rule only if `iptables -C` does not find it (insertUnique):
    # two mappings of one host port (8080->80, 8080->81) share their mark rules, which
    # it writes once. dict.fromkeys keeps the first of each, in order.
    return Chain(
        name,
        rules=tuple(dict.fromkeys(rules)),
        entry_chains=(TOPLEVEL_DNAT,),
        entry_rules=tuple(dict.fromkeys(entry_rules)),
    )


def wanted_chains(config: MappingConfig, family: int) -> List[Chain]:
    """All chains the plugin's ADD sets up for this family, in the plugin's order."""
    dnat = dnat_chain(config, family)
    if dnat is None:
        return []
    chains: List[Chain] = []
    if config.snat and config.external_setmark_chain is None:
        chains += [setmark_chain(config.mark_bit, family), masq_chain(config.mark_bit, family)]
    chains += [toplevel_dnat_chain(family), dnat]
    return chains


def is_portmap_chain(name: str) -> bool:
    """A chain of the plugin's: shared (CNI-HOSTPORT-*) or a container's (CNI-DN-/CNI-SN-)."""
    return name in SHARED_CHAINS or name.startswith((DNAT_PREFIX, SNAT_PREFIX))


def unusable_setmark_chain(name: Optional[str]) -> str:
    """Why chain `name` cannot be the externalSetMarkChain the per-container chain's
    mark rules jump to ("" if it can): iptables refuses a jump to a built-in chain (the
    plugin's ADD fails on it), and a portmap chain is no mark chain: one DNATs or
    masquerades what it is sent (a jump back into CNI-HOSTPORT-DNAT loops, refused too;
    another container's CNI-DN- chain would DNAT this one's packets to it)."""
    from portmapctl.iptables.ruleset import BUILTIN_NAT_CHAINS

    if name is None or name == SETMARK:
        return ""
    if name in BUILTIN_NAT_CHAINS:
        return "a built-in chain: iptables refuses a jump to it (give the chain that marks for masquerade, e.g. KUBE-MARK-MASQ)"
    if is_portmap_chain(name):
        return "a portmap chain, not a chain that marks for masquerade (e.g. KUBE-MARK-MASQ)"
    return ""


def buildable(config: MappingConfig, source: Optional[str] = None) -> MappingConfig:
    """`config` if every family it has can be turned into rules, else BadInput.

    The conditions are free-form iptables arguments: one that names an address of the
    other family, or an option of no match, only shows when the rules are made. For
    options given by hand that must be before anything is written (not found by the
    second family after the first was applied). For a cache file (`source`), so that
    its entry is reported as one that cannot be read, and the rest of the node still
    handled, instead of stopping `check` when it makes every container's rules.
    """
    from portmapctl.core.backend import Backend
    from portmapctl.core.validate import iptables_style
    from portmapctl.errors import BadInput

    if config.backend == Backend.NFTABLES:
        return config  # (nft conditions are nft's to judge: ops/add_nft.py)
    unusable = unusable_setmark_chain(config.external_setmark_chain)
    if unusable:
        where = (
            f"{source}: externalSetMarkChain" if source is not None else "--external-setmark-chain"
        )
        raise BadInput(f"{where} {config.external_setmark_chain}: {unusable}")
    # As the plugin: conditions whose first word is no option are nftables syntax, and
    # without "backend": "nftables" the plugin writes iptables rules, so it refuses them.
    nft_style = [
        f"conditionsV{family}"
        for family, words in ((4, config.conditions_v4), (6, config.conditions_v6))
        if words and not iptables_style(words)
    ]
    if nft_style:
        where = f"{source}: " if source is not None else ""
        raise BadInput(
            f"{where}iptables backend was requested but configuration contains"
            f" nftables-specific options [{' '.join(nft_style)}]"
        )
    for family in config.families:
        try:
            wanted_chains(config, family)
        except BadInput as err:
            if source is not None:
                raise BadInput(f"{source}: conditionsV{family}: {err}") from None
            raise BadInput(
                f"invalid mapping for IPv{family}: {err} (see --conditions-v{family})"
            ) from None
    return config
