"""The one-mapping check's `contested` problems between the plugin's two backends: a
port of the mapping that the plugin's other backend maps too for another container
(iptables' CNI-HOSTPORT-DNAT and nftables' cni_hostport hook nat at one priority, and
the kernel's hook order decides which gets the traffic), or, for an nftables mapping,
that another tool's iptables nat rule takes (core/contest.py). The plugin's CHECK looks
at its own backend alone and passes; the whole-node check reports them
(crossed.contested_problems), and so does this, with the same words.

Cheap where the answer is known to be nothing: the other backend's tables are asked
about over netlink (or /proc for legacy iptables) before any process reads them, and
the CNI cache (which names the rival's network and says whether it is stale) is read
only once a rival is found."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Collection, Dict, List, Optional, Sequence, Set, Tuple

from portmapctl.core.mapping import Mapping, MappingConfig
from portmapctl.errors import PortmapctlError
from portmapctl.iptables.chains import dnat_chain_name
from portmapctl.iptables.ruleset import NatTable
from portmapctl.ops.check.problem import Problem
from portmapctl.ops.node import Node

if TYPE_CHECKING:
    from portmapctl.cni.cache import Attachment
    from portmapctl.nftables.ruleset import Ruleset
    from portmapctl.ops.check.hints import Fixes

PortKey = Tuple[int, str, int]  # family, protocol, host port


def _ports(config: MappingConfig, families: Collection[int]) -> Set[PortKey]:
    return {
        (family, p.protocol, p.host_port)
        for family in families
        if config.address(family) is not None
        for p in config.ports
        if p.applies_to(family)
    }


def _on(rows: Sequence[Mapping], ports: Set[PortKey]) -> List[Mapping]:
    return [r for r in rows if (r.family, r.protocol, r.host_port) in ports]


def _debug(message: str, *args: object) -> None:
    from portmapctl.ops.add_ahead import debug

    debug(message, *args)


def iptables_mapping_rivals(
    node: Node, config: MappingConfig, tables: Dict[int, NatTable]
) -> List[Problem]:
    """The `contested` problems of an iptables mapping (`tables`: its families as read,
    or as a repair left them) whose ports the plugin's nftables tables map for another
    container."""
    ports = _ports(config, tables)
    live = _plugin_nft(node, tuple(sorted(tables))) if ports else None
    if live is None or not live.tables:
        return []
    # Rows without the cache first: a node mid-migration maps other ports there.
    if not any(r.container_id != config.container_id for r in _on(_nft_rows(live), ports)):
        return []
    name = dnat_chain_name(config)
    return _contested(
        node,
        config,
        _Sides(tables, live, ports),
        mine=lambda p: p.chain == name,
        keep_iptables=lambda r: r.chain == name,
        keep_nft=lambda r: True,
    )


def nft_mapping_rivals(
    node: Node, config: MappingConfig, families: Tuple[int, ...], live: Ruleset
) -> List[Problem]:
    """The `contested` problems of an nftables mapping (`live`: the plugin's tables as
    read) whose ports the plugin's iptables chain of another container maps too, or
    another tool's iptables nat rule takes. iptables is read for that under --backend
    nftables too: it names the mapping's backend, and the rival is in the other."""
    cid = config.container_id
    ports = _ports(config, families)
    mine_now = [r for r in _on(_nft_rows(live), ports) if r.container_id == cid]
    if not mine_now:
        return []  # none of its rules in place: it maps nothing to take
    tables = node.read_iptables_evidence(families)
    if not tables:
        return []
    from portmapctl.iptables import foreign, inventory

    rows = _on(inventory.build(tables).mappings, ports)
    if not rows and not foreign.nft_takers(tables, mine_now):
        return []
    return _contested(
        node,
        config,
        _Sides(tables, live, ports),
        mine=lambda p: p.container_id == cid and p.in_nftables,
        keep_iptables=lambda r: True,
        keep_nft=lambda r: r.container_id == cid,
    )


@dataclass(frozen=True)
class _Sides:
    """Both backends as read, and the mapping's ports."""

    tables: Dict[int, NatTable]
    live: Ruleset
    ports: Set[PortKey]


def _contested(
    node: Node,
    config: MappingConfig,
    sides: _Sides,
    *,
    mine: Callable[[Problem], bool],
    keep_iptables: Callable[[Mapping], bool],
    keep_nft: Callable[[Mapping], bool],
) -> List[Problem]:
    """As the whole-node check: both backends' rows on the ports (those `keep_*`
    keeps), built with the CNI cache (a rival's network; stale or a zombie, its fix is
    gc), their other owners (a row another nftables table's earlier hook takes
    contests nothing; another tool's iptables rule on an nftables row's port), then
    crossed.contested_problems, of which the mapping's own (`mine`) are kept."""
    from portmapctl.iptables import inventory
    from portmapctl.nftables.inventory import NftInventory
    from portmapctl.ops.check.crossed import contested_problems
    from portmapctl.ops.owners import read_owners

    attachments = node.read_cache()
    found = inventory.build(sides.tables, attachments)
    rows = [r for r in _on(found.mappings, sides.ports) if keep_iptables(r)]
    nft_rows = [r for r in _on(_nft_rows(sides.live, attachments), sides.ports) if keep_nft(r)]
    owners = read_owners(node, sides.tables, rows, nft_rows, sides.live)
    problems = contested_problems(
        replace(found, mappings=tuple(rows)),
        NftInventory(tuple(nft_rows), (), attachments is not None),  # type: ignore[arg-type]
        sides.live,
        _fixes(node, bool(attachments)),
        owners,
    )
    # (An nftables row names no network without the cache: the mapping's is known.)
    return [replace(p, network=p.network or config.network) for p in problems if mine(p)]


def _nft_rows(live: Ruleset, attachments: Optional[Sequence[Attachment]] = None) -> List[Mapping]:
    """The plugin's nftables rows, as the node check builds them (its cache entries
    name their networks and say which are stale)."""
    from portmapctl.nftables import inventory as nft_inventory
    from portmapctl.ops.nft import owners

    return list(nft_inventory.build(live, owners(attachments), problems=False).mappings)


def _fixes(node: Node, cache_present: bool) -> Fixes:
    """The whole-node check's fixes (gc of a stale rival; `cache_present`: a cache with
    entries, as the node check gives it), spelt without --backend: the rival is in the
    backend a --backend given for this mapping does not name."""
    from portmapctl.ops.check.hints import fixes_for

    if node.options.backend is None:
        return fixes_for(node, cache_present)
    return fixes_for(replace(node, options=replace(node.options, backend=None)), cache_present)


def _plugin_nft(node: Node, families: Tuple[int, ...]) -> Optional[Ruleset]:
    """The plugin's nftables tables in `families`, where there may be any: a snapshot
    (--nft-snapshot) as read; on the kernel only the families where netlink finds a
    cni_hostport table (no `nft` runs on the usual iptables node), also under --backend
    iptables; None offline without one, beside iptables in memory (a test's node), or
    where nft cannot read them (a -v detail: the check of the mapping goes on)."""
    from portmapctl.nftables.access.nft import RealNft

    if node.nft is not None and not isinstance(node.nft, RealNft):
        return node.read_nft(families)
    if node.options.offline or not _on_the_kernel(node):
        return None
    from portmapctl.iptables.access.nfmsg import tables_present
    from portmapctl.nftables import TABLE

    present = tables_present(families, TABLE)
    if not present:
        return None
    from portmapctl.nftables.access import NftUnusable

    try:
        return (node.nft or RealNft()).read(present)
    except (NftUnusable, PortmapctlError) as err:
        _debug("reading nftables for the contested check failed: %s", err)
        return None


def _on_the_kernel(node: Node) -> bool:
    """Whether the node's iptables is the kernel's (not a test's tables in memory, whose
    nftables is not this host's)."""
    from portmapctl.iptables.access import BACKEND_NAMES
    from portmapctl.iptables.access.unread import Unread

    return node.backend.name in (*BACKEND_NAMES, Unread.name)
