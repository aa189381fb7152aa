"""Who else has the host ports `add` maps, for the warnings add prints: another tool's
nat rule that takes a port first (foreign_takers), another container's chain that
shadows it (shadow_views, neighbours: CNI-HOSTPORT-DNAT listed, not the whole table
saved, where add wrote without reading it), and the other backend's rows for the
contested-port warning (as_rows: the rows `list` will show for the mapping;
other_backend_rows). Reads only, once the write is planned or done: nothing here
decides what add writes. A module of its own so that add.py holds the write; the UDP
flush after a write (ops/side_effects.py) takes as_rows from here without loading add."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from portmapctl.core.backend import Backend
from portmapctl.core.mapping import Mapping, MappingConfig
from portmapctl.core.status import Status
from portmapctl.errors import PortmapctlError
from portmapctl.iptables import foreign
from portmapctl.iptables.chains import DNAT_PREFIX, TOPLEVEL_DNAT, dnat_chain_name, is_plugin_chain
from portmapctl.iptables.lexer import split_words
from portmapctl.iptables.ruleset import Args, NatTable, SavedChain, rule_target
from portmapctl.ops.add_ahead import chain_lister, debug, foreign_wanted
from portmapctl.ops.node import Node

if TYPE_CHECKING:
    from portmapctl.iptables.access.nfnl import Claims
    from portmapctl.iptables.shapes import ProtoPort


def foreign_takers(
    node: Node,
    config: MappingConfig,
    family: int,
    table: Optional[NatTable],
    listed: Optional[Dict[int, Dict[ProtoPort, str]]] = None,
) -> Dict[ProtoPort, str]:
    """The mapping's ports another tool's rule takes first: from the table converge
    read, else from what Ahead listed meanwhile (`listed`), else from PREROUTING and the
    few chains its benign jumps reach, listed now one by one (`iptables -S CHAIN`: on
    iptables-nft that chain only, whatever the table's size; their lines split only
    when they may matter). Nothing when it cannot tell."""
    wanted = foreign_wanted(config, family)
    if not wanted:
        return {}
    list_chain = getattr(node.backend, "list_chain", None)
    if table is not None or list_chain is None:
        try:
            table = table if table is not None else node.backend.read(family)
        except (PortmapctlError, OSError) as err:
            debug("reading the table for the foreign-rule warning failed: %s", err)
            return {}
        return foreign.hooked_takers(foreign.table_reader(table), wanted, entry_appended=True)
    if listed is not None and family in listed:
        return listed[family]
    reader = foreign.listing_reader(chain_lister(list_chain, family))
    return foreign.hooked_takers(reader, wanted, entry_appended=True)


def shadow_views(
    node: Node, config: MappingConfig, families: Sequence[int], claims: Claims
) -> Dict[int, Optional[NatTable]]:
    """What the shadow warning needs of each family, for a mapping whose chain is new:
    when nfnl found no rule of CNI-HOSTPORT-DNAT that may claim one of its host ports
    (`claims`, by family), an empty CNI-HOSTPORT-DNAT, without listing it; else (or
    when the family could not be dumped) `neighbours`, listed as iptables prints it.
    None for a family: it could not be listed."""
    own = dnat_chain_name(config)
    found: Dict[int, Optional[NatTable]] = {}
    for family in families:
        kept = claims.get(family)
        if kept is not None and not any(
            # A rule that jumps elsewhere than to a per-container chain (or to this
            # container's, when the dump came after its restore) claims nothing here.
            rule.target is None or (rule.target != own and rule.target.startswith(DNAT_PREFIX))
            for rule in kept
        ):
            empty = SavedChain(TOPLEVEL_DNAT, "-", ())
            found[family] = NatTable(family, {TOPLEVEL_DNAT: empty})
            continue
        try:
            found[family] = neighbours(node, family, config)
        except (PortmapctlError, OSError) as err:
            debug("listing CNI-HOSTPORT-DNAT for the shadow warning failed: %s", err)
    return found


def neighbours(node: Node, family: int, config: MappingConfig) -> Optional[NatTable]:
    """What the shadow warning needs of a family, without saving the table: the rules of
    CNI-HOSTPORT-DNAT that may claim one of the mapping's host ports (those naming one
    of its port numbers, and port-less v0.6 ones), in their order, and the per-container
    chains they jump to (one `iptables -S` each: usually none). A backend that cannot
    list one chain gives its whole table. None: the chain could not be listed."""
    list_chain = getattr(node.backend, "list_chain", None)
    if list_chain is None:
        return node.backend.read(family)
    text = list_chain(family, TOPLEVEL_DNAT)
    if text is None:
        return None
    numbers = {str(p.host_port) for p in config.ports if p.applies_to(family)}
    prefix = f"-A {TOPLEVEL_DNAT} "
    kept: List[Args] = []
    for line in text.split("\n"):
        # A text test first: 10,000 lines, a few of which are split.
        if line.startswith(prefix) and (
            "--dport" not in line or any(number in line for number in numbers)
        ):
            try:
                kept.append(tuple(split_words(line)[2:]))
            except ValueError:
                continue  # unreadable: it cannot be judged either way
    chains = {TOPLEVEL_DNAT: SavedChain(TOPLEVEL_DNAT, "-", tuple(kept))}
    targets = {rule_target(args) for args in kept}
    for target in sorted(t for t in targets if t and is_plugin_chain(t)):
        if target.startswith(DNAT_PREFIX):
            rules = node.backend.read_chain(family, target)  # type: ignore[attr-defined]
            if rules is not None:
                chains[target] = SavedChain(target, "-", rules)
    return NatTable(family, chains)


def as_rows(config: MappingConfig, families: Sequence[int]) -> List[Mapping]:
    """The rows `list` will show for `config` once added, in its backend: what the
    warning of a host port contested by the other backend compares (core/contest.py)."""
    from portmapctl.nftables.inventory import NftMapping
    from portmapctl.nftables.ruleset import HOSTIP_HOSTPORTS, HOSTPORTS

    nft = config.backend == Backend.NFTABLES
    rows: List[Mapping] = []
    for family in families:
        address = config.address(family)
        if address is None:
            continue
        conditions = config.conditions_v4 if family == 4 else config.conditions_v6
        for p in config.ports:
            if not p.applies_to(family):
                continue
            host_ip = p.host_ip_for_rule()
            fields = (
                config.network,
                config.container_id,
                family,
                p.protocol,
                host_ip,
                p.host_port,
                address.ip.compressed,
                p.container_port,
                config.snat,
            )
            if nft:
                chain = HOSTIP_HOSTPORTS if host_ip else HOSTPORTS
                rows.append(NftMapping(*fields, chain, (Status.OK.value,), None, conditions))
            else:
                rows.append(
                    Mapping(*fields, dnat_chain_name(config), (Status.OK.value,), None, conditions)
                )
    return rows


def other_backend_rows(
    node: Node, config: MappingConfig, families: Sequence[int], nft_live: Any = None
) -> Tuple[List[Mapping], Dict[Tuple[int, str, int], str]]:
    """The rows of the backend `config` is not written to, read only where that backend
    has something on the node: iptables' (for an nftables mapping), else nftables' when
    its cni_hostport table exists (a netlink question first: no nft runs on the usual
    iptables node). For an nftables mapping also the ports of it another tool's
    iptables nat rule takes at the same hook priority (foreign.nft_takers). `nft_live`:
    the plugin's nftables tables, read already (then not listed again)."""
    if config.backend == Backend.NFTABLES:
        from portmapctl.iptables import foreign, inventory

        tables = _iptables_tables(node, families)
        rows = list(inventory.build(tables).mappings)
        return rows, foreign.nft_takers(tables, as_rows(config, families))
    if nft_live is None:
        from portmapctl.iptables.access.nfmsg import tables_present
        from portmapctl.nftables import TABLE

        present = tables_present(families, TABLE)
        if not present:
            return [], {}
        from portmapctl.nftables.access import NftUnusable
        from portmapctl.nftables.access.nft import RealNft

        try:
            nft_live = RealNft().read(present)
        except (NftUnusable, PortmapctlError) as err:
            debug("reading nftables for the contested warning failed: %s", err)
            return [], {}
    from portmapctl.nftables import inventory as nft_inventory

    return list(nft_inventory.build(nft_live, problems=False).mappings), {}


def _iptables_tables(node: Node, families: Sequence[int]) -> Dict[int, NatTable]:
    """iptables' tables for the warning, also under --backend nftables (which narrows
    what is written, and gives the node no iptables to read): where the node has a nat
    table (asked first: a legacy read would create one), none where it cannot tell:
    under auto too, where the node's own read fails (a nat table iptables-nft-save
    cannot show ended an nftables add in exit 3 that --backend nftables made)."""
    if node.options.reads_iptables:
        try:
            return node.read(tuple(families))
        except PortmapctlError as err:
            debug("reading iptables for the contested warning failed: %s", err)
            return {}
    if node.options.offline:
        return {}
    from portmapctl.iptables.access import open_backend

    try:
        backend = open_backend(node.options.iptables, families=families)
        has_table = getattr(backend, "has_nat_table", lambda _family: True)
        return {f: backend.read(f) for f in families if has_table(f)}
    except (PortmapctlError, OSError) as err:
        debug("reading iptables for the contested warning failed: %s", err)
        return {}
