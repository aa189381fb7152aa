"""What `add` warns of once its rules are planned or written: host ports another
mapping takes first (shadowed) or at the same priority (contested) -- in the same
table, in the plugin's other backend, in the other iptables flavour, or by another
tool's rule or nftables hook. Each is said, never fatal: the mapping is written as the
plugin would write it. cli/add_run.py calls these; they read what ops/add.py found
(AddResult.seen, .taken) and ask the node only for what that did not read."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional

from portmapctl.core.ids import short_form
from portmapctl.core.text import name_text
from portmapctl.iptables.chains import dnat_chain_name

if TYPE_CHECKING:
    from portmapctl.core.mapping import MappingConfig
    from portmapctl.iptables.ruleset import NatTable
    from portmapctl.ops.add import AddResult


def hook_warnings(node: Any, config: MappingConfig, live: Any = None) -> List[str]:
    """Host ports another nftables table's nat prerouting hook (output, for a loopback
    host IP) takes (a hand-written nft firewall): before the plugin's hook (shadowed), or at its priority (contested);
    nftables/foreign.py. One netlink question on the usual node. `live`: the plugin's
    nftables tables as read (its prerouting chain's priority), for an nftables add."""
    from portmapctl.nftables.hooks import live_hooks

    try:
        hooks = live_hooks(node)
    except OSError as err:
        hooks = []
        unread = [f"the nftables chains cannot be listed ({err})"]
    else:
        unread = []
    if not hooks and not unread:
        return []
    from portmapctl.core.status import Status
    from portmapctl.nftables.foreign import node_hooked
    from portmapctl.ops.add_others import as_rows

    mine = as_rows(config, [f for f in config.families if f in node.families])
    hooked = node_hooked(node, mine, live, hooks) if hooks else None
    unread += hooked.unread if hooked is not None else ()
    return [
        f"cannot tell whether another nftables table's nat hook takes these ports: {why}"
        for why in unread
    ] + [
        f"IPv{row.family} {row.protocol}/{row.host_port} is taken"
        + (
            f" first by another nftables table's nat hook ({rule}): this mapping is"
            " shadowed (it gets no traffic there)"
            if word == Status.SHADOWED
            else f" by another nftables table's nat hook at the plugin's priority too ({rule}):"
            " this mapping is contested (the kernel's hook order decides which of them gets"
            " the traffic)"
        )
        for row, (word, rule) in (hooked.taken if hooked is not None else {}).items()
    ]


def other_flavour_warnings(node: Any, config: MappingConfig) -> List[str]:
    """Host ports the other iptables flavour's nat table takes too (that table hooks at
    the plugin's priority, so this mapping is contested): by another tool's rule there
    (Docker on iptables-legacy beside the plugin on iptables-nft, or the reverse;
    ops/owners.py judges list's and check's rows the same way), or by the plugin's own
    chain of another container there (a split-brain node: the plugin ran the other
    iptables once, or still does). Nothing is run where that flavour has no nat table
    (flavour_guard.other_flavour_readers), and nothing said where it cannot be read:
    the warning never fails an add that went in."""
    from portmapctl.errors import PortmapctlError

    try:
        return _other_flavour_warnings(node, config)
    except (PortmapctlError, OSError) as err:
        from portmapctl.ops.add_ahead import debug

        debug("reading the other iptables flavour for the contested warning failed: %s", err)
        return []


def _other_flavour_warnings(node: Any, config: MappingConfig) -> List[str]:
    from portmapctl.ops.flavour_guard import other_flavour_readers

    families = [f for f in config.families if f in node.families]
    other = other_flavour_readers(node.backend, families)
    if other is None:
        return []
    from portmapctl.core.contest import crossed, flavour_rivals
    from portmapctl.iptables.foreign import same_priority_takers
    from portmapctl.ops.add_others import as_rows
    from portmapctl.ops.flavour_guard import plugin_rows

    flavours, readers = other
    mine = as_rows(config, families)
    warnings = [
        f"IPv{row.family} {row.protocol}/{row.host_port} is taken by a rule in the"
        f" iptables-{flavours[row.family]} nat table too ({rule}): this mapping is contested (the"
        " kernel's hook order decides which of them gets the traffic)"
        for row, rule in crossed(mine, same_priority_takers(readers, mine)).items()
    ]
    theirs = [
        row
        for family, read in readers.items()
        for row in plugin_rows(read, family, {m.host_port for m in mine if m.family == family})
    ]
    warnings += [
        f"IPv{row.family} {row.protocol}/{row.host_port} is mapped in the"
        f" iptables-{flavours[row.family]}"
        f" tables too, to {_owner(rivals[0])}: this mapping is contested (the kernel's hook"
        " order decides which of them gets the traffic); `portmapctl check` reports the"
        " split brain"
        for row, rivals in flavour_rivals(mine, theirs).items()
    ]
    return warnings


def contest_warnings(node: Any, config: MappingConfig, nft_live: Any = None) -> List[str]:
    """Host ports the other plugin backend maps too (same family and protocol,
    overlapping host address, another container): which mapping gets the traffic is
    the kernel's hook order, so this one is contested (core/contest.py decides, as for
    list and check). `nft_live`: the plugin's nftables tables, read already."""
    from portmapctl.ops.add_others import as_rows, other_backend_rows

    wanted = [f for f in config.families if f in node.families]
    others, taken = other_backend_rows(node, config, wanted, nft_live)
    if not others and not taken:
        return []  # the usual node: one backend (nothing more imported)
    from portmapctl.core.contest import backend_of, contests, foreign_contested

    mine = as_rows(config, wanted)
    found = contests([*mine, *others])
    warnings = [
        f"IPv{row.family} {row.protocol}/{row.host_port} is taken by an iptables rule"
        f" outside the plugin's chains too ({rule}): this mapping is contested (the"
        " kernel's hook order decides which of them gets the traffic)"
        for row, rule in foreign_contested(mine, taken).items()
    ]
    for row in mine:
        if row not in found:
            continue
        other = found[row][0]
        # (nftables names no network: add reads no cache to find it.)
        who = (
            _owner(other)
            if other.network
            else f"{name_text(short_form(other.container_id or '?'))} ({other.chain})"
        )
        warnings.append(
            f"IPv{row.family} {row.protocol}/{row.host_port} is mapped in"
            f" {backend_of(other)} too, to {who}: this mapping is contested"
            " (the kernel's hook order decides which of them gets the traffic)"
        )
    return warnings


def foreign_warnings(result: AddResult) -> List[str]:
    """Host ports of the mapping another tool's nat rule takes before PREROUTING's jump
    to CNI-HOSTPORT-DNAT (add's AddResult.taken; iptables/foreign.py)."""
    verb = "will be" if result.changed or result.dry_run else "is"
    return [
        f"IPv{family} {proto}/{port} is taken first by a rule outside the plugin's chains"
        f" ({rule}): this mapping {verb} shadowed (it gets no traffic there)"
        for family, taken in sorted(result.taken.items())
        for (proto, port), rule in sorted(taken.items())
    ]


def shadow_warnings(config: MappingConfig, tables: Dict[int, NatTable]) -> List[str]:
    """Host ports another container maps too (same family and protocol, overlapping host
    address). iptables takes the first entry rule and the plugin appends, so a new
    mapping is shadowed by the one that wins there now; a mapping re-added keeps its
    place, and shadows (or is shadowed by) what the table says."""
    from portmapctl.iptables.chains import is_plugin_chain

    if not any(is_plugin_chain(name) for table in tables.values() for name in table.chains):
        return []  # no other mapping to meet (the inventory's import is not free)
    from portmapctl.core.mapping import takes_all_of
    from portmapctl.core.status import Status
    from portmapctl.iptables import inventory

    own = dnat_chain_name(config)
    found = inventory.build({f: _as_added(config, t) for f, t in tables.items()})
    warnings = []
    for port in config.ports:
        for family in config.families:
            if family not in tables or not port.applies_to(family):
                continue
            key = (family, port.protocol, port.host_port, port.host_ip_for_rule())
            # A chain no entry rule jumps to (orphan) gets no traffic: it neither shadows
            # nor is shadowed, and one of this container's is appended to like a new one.
            same = [
                m for m in found.mappings if _same_port(m, *key) and Status.ORPHAN not in m.status
            ]
            mine = [m for m in same if m.chain == own]
            # Its own chain of another network takes nothing from it (as list says).
            others = [m for m in same if m.chain != own and m.container_id != config.container_id]
            where = f"IPv{family} {port.protocol}/{port.host_port}"
            if not mine:
                # New: appended after all of them; the one that wins now keeps winning.
                # One with conditions (conditionsV4/V6) takes only some packets: the
                # rest go on, so it shadows nothing (as list and check say).
                # One for a single host IP leaves a mapping for every address the rest.
                takers = [m for m in others if not m.conditions and takes_all_of(m.host_ip, key[3])]
                winners = [m for m in takers if Status.SHADOWED not in m.status] or takers
                if winners:
                    warnings.append(
                        f"{where} is mapped first to {_owner(winners[0])}: this mapping"
                        " will be shadowed (it gets no traffic there)"
                    )
                continue
            for m in others:
                if any(x.shadowed_by == m.chain for x in mine):
                    warnings.append(
                        f"{where} is mapped first to {_owner(m)}: this mapping is"
                        " shadowed (it gets no traffic there)"
                    )
                elif m.shadowed_by == own:
                    warnings.append(
                        f"{where} is mapped to {_owner(m)} too: this mapping comes first"
                        " and shadows it"
                    )
    return warnings


def _as_added(config: MappingConfig, table: NatTable) -> NatTable:
    """`table` with this container's existing chain holding what add writes there (its
    entry rules keep their place): a chain a plugin before v0.8.7 wrote dead (`-d
    0.0.0.0/32`) takes its ports once add rewrites it, from whoever has them now."""
    from dataclasses import replace

    from portmapctl.iptables.chains import dnat_chain

    wanted = dnat_chain(config, table.family)
    found = table.chains.get(wanted.name) if wanted else None
    if wanted is None or found is None or found.rules == wanted.rules:
        return table
    chains = {**table.chains, wanted.name: replace(found, rules=wanted.rules)}
    return replace(table, chains=chains)


def nft_shadow_warnings(config: MappingConfig, live: Any) -> List[str]:
    """Host ports another container's nftables rule maps too (same family and
    protocol, overlapping host address), as shadow_warnings says them for iptables:
    nftables is first-match-wins too, and the plugin's ADD appends, so a new mapping
    is shadowed by the rule that wins there now; one re-added keeps its rule's place."""
    if not live.tables:
        return []  # no plugin table: no other mapping to meet
    from portmapctl.core.mapping import takes_all_of
    from portmapctl.core.status import Status
    from portmapctl.nftables import inventory as nft_inventory

    found = nft_inventory.build(live, problems=False)
    warnings = []
    for port in config.ports:
        for family in config.families:
            if family not in live.tables or not port.applies_to(family):
                continue
            key = (family, port.protocol, port.host_port, port.host_ip_for_rule())
            same = [m for m in found.mappings if _same_port(m, *key)]
            mine = [m for m in same if m.container_id == config.container_id]
            others = [m for m in same if m.container_id != config.container_id]
            if not mine:
                # Appended after every rule there: only one for all of its addresses (or
                # for the same one) takes the port from it.
                others = [m for m in others if takes_all_of(m.host_ip, key[3])]
            winners = [m for m in others if Status.SHADOWED not in m.status] or others
            if not winners or any(Status.SHADOWED not in m.status for m in mine):
                continue  # nobody else, or its own rule is there and wins
            warnings.append(
                f"IPv{family} {port.protocol}/{port.host_port} is mapped first to"
                f" {name_text(short_form(winners[0].container_id or '?'))} (nftables {winners[0].chain}):"
                f" this mapping {'is' if mine else 'will be'} shadowed (it gets no traffic there)"
            )
    return warnings


def _same_port(m: Any, family: int, protocol: str, host_port: int, host_ip: Optional[str]) -> bool:
    return (
        m.family == family
        and m.protocol == protocol
        and m.host_port == host_port
        and (host_ip is None or m.host_ip is None or m.host_ip == host_ip)
    )


def _owner(m: Any) -> str:
    return (
        f"{name_text(m.network or '?')}/{name_text(short_form(m.container_id or '?'))} ({m.chain})"
    )
