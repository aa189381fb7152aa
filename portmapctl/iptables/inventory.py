"""Read a node: nat tables (+ the CNI cache) -> port mappings, chains and statuses.

This is what `list` shows and what `check` and `gc` build on. It is pure: it takes
tables already read by a backend and the cache already read by `cni_cache`.

Statuses, as SPEC §3 defines them:
  stale       the container has no entry in the CNI cache (said only with a cache)
  shadowed    an earlier entry rule in CNI-HOSTPORT-DNAT sends the same protocol and
              host port (overlapping host IP) to another container's chain; or
              (beyond SPEC §3) another tool's rule takes it before PREROUTING's jump to
              CNI-HOSTPORT-DNAT (OUTPUT's for a loopback host IP; iptables/foreign.py):
              shadowed_by is then that rule
              as iptables-save prints it (`-A DOCKER ...`)
  orphan      a per-container chain that no rule enters
  incomplete  an entry rule of the plugin's (not another tool's) names a port for which
              the chain has no DNAT rule
  legacy      a CNI-SN- chain from plugin versions before 2018
  dead        a DNAT rule that can never match (`-d 0.0.0.0/32`, plugins before v0.8.7)
  zombie      cached, but the network namespace the cache entry names is gone

Older plugin versions' shapes are read through `iptables/shapes.py` (the catalogue):
a v0.6 entry rule without a port match claims every port its chain DNATs, a dead rule
takes no port from anyone, and a v0.6 CNI-SN- chain belongs to the container of the
CNI-DN- chain with the same hash (and gives its mappings SNAT).

A container on several networks has a chain per network, all claiming its host ports:
only the first gets traffic, and that is no fault (it does not shadow itself).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union
from typing import Mapping as ReadOnly

from portmapctl.cni.cache import Attachment
from portmapctl.core.mapping import Mapping, destination, takes_all_of
from portmapctl.core.status import ChainKind, Status
from portmapctl.iptables import foreign, shapes
from portmapctl.iptables.chains import DNAT_PREFIX, SNAT_PREFIX, TOPLEVEL_DNAT, is_plugin_chain
from portmapctl.iptables.plugin_rules import (
    DnatRule,
    EntryRule,
    chain_owner,
    dnat_rules,
    entry_rules,
    is_dead_host_ip,
    owner,
    per_container_chains,
    port_match,
    written_by_plugin,
)
from portmapctl.iptables.ruleset import Args, NatTable
from portmapctl.iptables.shapes import ProtoPort


@dataclass(frozen=True)
class ChainInfo:
    """One per-container chain (CNI-DN- or legacy CNI-SN-) in one family."""

    name: str
    family: int
    kind: ChainKind
    network: Optional[str]
    container_id: Optional[str]
    status: Tuple[str, ...]
    entries: Tuple[EntryRule, ...]
    rules: Tuple[Args, ...]
    missing_ports: Tuple[ProtoPort, ...] = ()
    # Ports an entry rule sends here that the chain has no rule for, with neither the
    # cache nor the other family's table to say whether they have the other family's
    # host IP (then no fault) or are missing: not called incomplete (undecided_note).
    undecided_ports: Tuple[ProtoPort, ...] = ()

    @property
    def host_ports(self) -> Tuple[ProtoPort, ...]:
        """Host ports this chain maps in its family: those its own rules name. Not its
        entry rules' ports: the plugin's name every port of the container in both
        families, also one whose host IP is of the other family (no rule here: its
        packets fall through the chain). Crediting them said a stale IPv4 chain "maps"
        `[fd00::1]:9191`, and gc flushed IPv4 9191's flows for its removal. An entered
        port a rule is missing for is `missing_ports` (check says it apart). None for a
        legacy CNI-SN- chain: its MASQUERADE rules' --dport is the container port (as
        chain_facts.ChainFacts says)."""
        if self.kind is ChainKind.LEGACY_SNAT:
            return ()
        found: Dict[ProtoPort, None] = {}
        for rule in self.rules:
            parsed = port_match(rule)
            if parsed:
                found[(parsed.protocol, parsed.host_port)] = None
        return tuple(found)


@dataclass(frozen=True)
class Inventory:
    """What build() found: the mappings, the chains behind them, and the tables read."""

    mappings: Tuple[Mapping, ...]
    chains: Tuple[ChainInfo, ...]
    cache_present: bool
    tables: Dict[int, NatTable] = field(default_factory=dict, compare=False)


# --- building the inventory ---------------------------------------------------------


def build(
    tables: ReadOnly[int, NatTable],
    attachments: Optional[Sequence[Attachment]] = None,
) -> Inventory:
    """The inventory of a node from its tables and (if there is one) its CNI cache."""
    # A container cached on any network is not stale on another (SPEC §3: Multus caches
    # a pod's outer network and its delegate, which names the chain, apart).
    cached_ids = {a.container_id for a in attachments or ()}
    by_chain: Dict[str, Attachment] = {}
    # Where several entries name one chain (two interfaces; the readings of an
    # unreadable file's name), a readable, not-zombie one speaks for it.
    ranked = (
        sorted(attachments or (), key=_rank, reverse=True)
        if len({_rank(a) for a in attachments or ()}) > 1
        else attachments or ()  # all alike (the usual case): the order the sort keeps
    )
    for attachment in ranked:
        dnat_chain = attachment.dnat_chain
        by_chain[dnat_chain] = attachment
        # The same hash (network + ID) under the other prefix: one SHA-512, not two.
        by_chain[shapes.paired_snat_chain(dnat_chain)] = attachment
    all_mappings: List[Mapping] = []
    all_chains: List[ChainInfo] = []
    for family in sorted(tables):
        other = tables.get(10 - family)
        mappings, chains = _family(
            tables[family], other, attachments is not None, by_chain, cached_ids
        )
        all_mappings += mappings
        all_chains += chains
    return Inventory(tuple(all_mappings), tuple(all_chains), attachments is not None, dict(tables))


def _rank(attachment: Attachment) -> Tuple[bool, bool]:
    return (attachment.problem is None, not attachment.zombie)


def _family(
    table: NatTable,
    other: Optional[NatTable],
    cache_present: bool,
    by_chain: ReadOnly[str, Attachment],
    cached_ids: Set[str],
) -> Tuple[List[Mapping], List[ChainInfo]]:
    names = per_container_chains(table)
    entries = entry_rules(table, set(names))
    port_rules = {
        name: dnat_rules(table.rules(name)) for name in names if name.startswith(DNAT_PREFIX)
    }
    # v0.6's CNI-SN- chains: localhost SNAT of the CNI-DN- chain with the same hash.
    legacy_snat = {
        shapes.paired_dnat_chain(name): shapes.legacy_masquerades(table.rules(name))
        for name in names
        if name.startswith(SNAT_PREFIX)
    }
    identities = {name: owner(by_chain.get(name), entries[name]) for name in names}
    owners = {name: identity.container_id for name, identity in identities.items()}
    shadowing = _shadowing(table, entries, port_rules, owners)
    # Another tool's rule ahead of the plugin's entry takes a port before any chain:
    # ahead of PREROUTING's, or for a loopback host IP (the node's own connections
    # alone), OUTPUT's.
    # By destination: a rule's `-d` holds for all of a host IP's connections or none.
    wanted: Dict[Optional[str], Set[ProtoPort]] = {}
    for rules in port_rules.values():
        for proto, port, host_ip, *_ in rules:
            wanted.setdefault(destination(host_ip), set()).add((proto, port))
    reader = foreign.table_reader(table)
    taken = {dest: foreign.takers(reader, ports, dest=dest) for dest, ports in wanted.items()}

    mappings: List[Mapping] = []
    chains: List[ChainInfo] = []
    for name in names:
        attachment = by_chain.get(name)
        network, container_id = identities[name]
        if network is None:
            network, container_id = chain_owner(name, entries, by_chain)
        status: List[str] = []
        if cache_present and attachment is None and container_id not in cached_ids:
            status.append(Status.STALE)
        if attachment is not None and attachment.zombie:
            status.append(Status.ZOMBIE)
        if not entries[name]:
            status.append(Status.ORPHAN)
        if name.startswith(SNAT_PREFIX):
            status.append(Status.LEGACY)
            chains.append(
                ChainInfo(
                    name,
                    table.family,
                    ChainKind.LEGACY_SNAT,
                    network,
                    container_id,
                    tuple(status),
                    tuple(entries[name]),
                    table.rules(name),
                )
            )
            continue
        missing, undecided = _missing_ports(
            name,
            entries[name],
            port_rules[name],
            table.rules(name),
            other,
            attachment,
            table.family,
        )
        if missing:
            status.append(Status.INCOMPLETE)
        chain_rows = []
        masqueraded = legacy_snat.get(name, frozenset())
        for proto, port, host_ip, container_ip, container_port, snat in port_rules[name]:
            row_status = list(status)
            snat = snat or (proto, container_ip, container_port) in masqueraded
            winner = shadowing.get((name, proto, port, host_ip))
            ahead = taken.get(destination(host_ip), {})
            if (proto, port) in ahead and _entered(entries[name], proto, port):
                winner = ahead[(proto, port)]
            if host_ip is not None and is_dead_host_ip(host_ip):
                row_status.append(Status.DEAD)
            elif winner:
                row_status.append(Status.SHADOWED)
            chain_rows.append(
                Mapping(
                    network,
                    container_id,
                    table.family,
                    proto,
                    host_ip,
                    port,
                    container_ip,
                    container_port,
                    snat,
                    name,
                    tuple(row_status) or (Status.OK,),
                    winner,
                    _conditions_of(entries[name], proto, port),
                )
            )
        if any(row.shadowed_by for row in chain_rows):
            status.append(Status.SHADOWED)
        if any(Status.DEAD in row.status for row in chain_rows):
            status.append(Status.DEAD)
        mappings += chain_rows
        chains.append(
            ChainInfo(
                name,
                table.family,
                ChainKind.DNAT,
                network,
                container_id,
                tuple(status) or (Status.OK,),
                tuple(entries[name]),
                table.rules(name),
                tuple(missing),
                tuple(undecided),
            )
        )
    return mappings, chains


def _entered(entries: Iterable[EntryRule], proto: str, port: int) -> bool:
    """Whether an entry rule in CNI-HOSTPORT-DNAT sends proto/port to the chain (what a
    foreign rule ahead of the plugin's entry can take from it)."""
    return any(e.chain == TOPLEVEL_DNAT and (proto, port) in e.ports for e in entries)


def _conditions_of(entries: Iterable[EntryRule], proto: str, port: int) -> Tuple[str, ...]:
    """The conditions under which the entry rules send proto/port to their chain:
    none when one of them sends it unconditionally."""
    conditions: Tuple[str, ...] = ()
    for entry in entries:
        if entry.chain == TOPLEVEL_DNAT and (proto, port) in entry.ports:
            if not entry.conditions:
                return ()
            conditions = conditions or entry.conditions
    return conditions


def _shadowing(
    table: NatTable,
    entries: ReadOnly[str, List[EntryRule]],
    port_rules: ReadOnly[str, List[DnatRule]],
    owners: Optional[ReadOnly[str, Optional[str]]] = None,
) -> Dict[Tuple[str, str, int, Optional[str]], str]:
    """(chain, proto, port, host IP) -> the chain that wins that port first, for the
    chains an entry rule in CNI-HOSTPORT-DNAT sends that port to.

    `owners` gives each chain's container ID (when known): an earlier chain of the
    same container (it is on another network too) takes nothing from it.
    """
    owners = owners or {}
    claims: Dict[ProtoPort, List[str]] = {}  # in CNI-HOSTPORT-DNAT order
    # The entry rules are already parsed (`entries`): their CNI-HOSTPORT-DNAT ones, in
    # the chain's order.
    toplevel = sorted(
        (entry.index, target, entry.ports, bool(entry.conditions))
        for target in port_rules
        for entry in entries.get(target, ())
        if entry.chain == TOPLEVEL_DNAT
    )
    # A rule with conditions takes only some of its ports' packets: it may lose them,
    # it takes them from nobody for sure (as an nftables rule with conditions).
    takes_all: Set[Tuple[str, ProtoPort]] = set()
    for _index, target, ports, has_conditions in toplevel:
        for proto_port in ports:
            claims.setdefault(proto_port, []).append(target)
            if not has_conditions:
                takes_all.add((target, proto_port))
    hosts: Dict[Tuple[str, str, int], List[Optional[str]]] = {}
    for chain, rules in port_rules.items():
        for proto, port, host_ip, *_ in rules:
            if not is_dead_host_ip(host_ip):  # a dead rule takes no port from anyone
                hosts.setdefault((chain, proto, port), []).append(host_ip)
    shadowed: Dict[Tuple[str, str, int, Optional[str]], str] = {}
    for chain, rules in port_rules.items():
        for proto, port, host_ip, *_ in rules:
            if is_dead_host_ip(host_ip):
                continue  # listed dead: it gets nothing whoever comes first
            mine = owners.get(chain)
            if chain not in claims.get((proto, port), ()):
                # Nothing sends the port here (an orphan, an entry rule gone): no
                # earlier rule takes from it what it never gets. Its own rows say so
                # (orphan, missing-entry); a repair appends the entry, and the row is
                # judged then.
                continue
            for earlier in claims.get((proto, port), ()):
                if earlier == chain:
                    break
                if mine is not None and owners.get(earlier) == mine:
                    continue
                if (earlier, (proto, port)) not in takes_all:
                    continue
                if any(
                    takes_all_of(other, host_ip) for other in hosts.get((earlier, proto, port), ())
                ):
                    shadowed[(chain, proto, port, host_ip)] = earlier
                    break
    return shadowed


def _missing_ports(
    name: str,
    entries: Sequence[EntryRule],
    port_rules: Sequence[DnatRule],
    rules: Sequence[Args],
    other: Optional[NatTable],
    attachment: Optional[Attachment],
    family: int,
) -> Tuple[List[ProtoPort], List[ProtoPort]]:
    """Ports the plugin's entry rules send here that the chain does not DNAT, and
    those it cannot tell (below).

    The plugin's entry rules name every port of the container, but a port whose host
    IP is of the other family (`0.0.0.0` and `::` too) has no rules in this family: that
    is not a fault. What tells is the cache entry, else the other family's table (its
    rule for the port on an address of its own family, or on none while this family
    has no rule of the port left: an unspecified host IP's shape). With neither (--family 4
    and no cache, an IPv4 dump alone) a port is missing only where the chain still has
    a rule for it (a SETMARK rule left without its DNAT); one the chain has no rule
    for cannot be told from another family's host IP (it called a healthy container's
    `[::1]:9001` incomplete, exit 1, that the check of both families found sound).
    Those are returned second, undecided: the chain is not called incomplete, and
    list and check say so (undecided_note; it was called ok without a word, also a
    chain an IPv4 dump shows entered and empty).
    """
    have = {(proto, port) for proto, port, *_ in port_rules}
    # The plugin's own entry rules alone say which ports the chain must DNAT: another
    # tool's rule sending it another port is no missing rule (check: extra-entry). Its
    # comment is hashed only for a rule with a port the chain has no rule for.
    unmatched = [
        pp
        for entry in entries
        if not have.issuperset(entry.ports) and written_by_plugin(entry)
        for pp in entry.ports
        if pp not in have
    ]
    if not unmatched:
        return [], []  # the usual case: no need to look at the other family
    undecided: List[ProtoPort] = []
    found = (port_match(args) for args in rules)
    traces = {(m.protocol, m.host_port) for m in found if m is not None}
    if other is None and (attachment is None or attachment.mapping is None):
        undecided = list(dict.fromkeys(pp for pp in unmatched if pp not in traces))
        unmatched = [pp for pp in unmatched if pp in traces]
    other_family = set()
    cached = attachment is not None and attachment.mapping is not None
    if cached:
        other_family = {
            (p.protocol, p.host_port) for p in attachment.mapping.ports if not p.applies_to(family)
        }
    if other is not None:
        for proto, port, host_ip, *_ in dnat_rules(other.rules(name)):
            if host_ip and ipaddress.ip_address(host_ip).version != family:
                other_family.add((proto, port))
            elif not host_ip and not cached and (proto, port) not in traces:
                # Host IP `0.0.0.0` (`::`): the plugin writes no `-d` and maps that
                # family alone, so this one has no rule for the port at all (it called
                # a healthy dual-stack container incomplete in both families). A port
                # without a host IP has its rules in both: one with a rule of it left
                # here lost the others, and stays missing; the cache, where there is
                # one, says which it is.
                other_family.add((proto, port))
    missing: Dict[ProtoPort, None] = {}
    for proto_port in unmatched:
        if proto_port not in other_family:
            missing[proto_port] = None
    return list(missing), undecided


def undecided_note(chains: Iterable[ChainInfo]) -> Optional[str]:
    """The warning for chains with undecided ports (ChainInfo.undecided_ports), or None:
    what one family without the CNI cache cannot tell, said rather than called ok."""
    found = [c for c in chains if c.undecided_ports]
    if not found:
        return None
    first = found[0]
    ports = ", ".join(f"{proto}/{port}" for proto, port in first.undecided_ports[:4])
    ports += ", ..." if len(first.undecided_ports) > 4 else ""
    more = f" (and {len(found) - 1} more chains like it)" if len(found) > 1 else ""
    family, other = (f"IPv{first.family}", f"IPv{10 - first.family}")
    it, port = (
        ("them", "those ports have") if len(first.undecided_ports) > 1 else ("it", "that port has")
    )
    return (
        f"{first.name} ({family}) is entered for {ports} but has no rule for {it}{more}:"
        f" it is incomplete unless {port} an {other} host IP, which only the {other}"
        " table or the container's CNI cache entry can tell, and neither is at hand"
    )


def owned_by(
    container_id: Optional[str], chain: str, prefixes: Union[str, Tuple[str, ...]]
) -> bool:
    """Whether `--container PREFIX` (any of `prefixes`) selects a row: its container ID
    starts with it; or, for a row of no known container, which shows its chain under
    CONTAINER (render.table.owner_cell), that chain's name does (SPEC §3: every value
    printed is accepted as input; a terminal cuts the name to its start). A start that
    ends before the hash (`C`, `CNI-DN-`) names no chain, it begins every one: taken as
    one, `flush-udp --container CNI-DN-` deleted the flows of every such row's ports."""
    if container_id:
        return container_id.startswith(prefixes)
    if not is_plugin_chain(chain):
        return False
    if isinstance(prefixes, str):
        prefixes = (prefixes,)
    return any(len(p) > len(DNAT_PREFIX) and chain.startswith(p) for p in prefixes)


def select(
    mappings: Iterable[Mapping],
    *,
    container: Optional[str] = None,
    network: Optional[str] = None,
    port: Optional[int] = None,
    protocol: Optional[str] = None,
) -> List[Mapping]:
    """`list`'s filters: container ID prefix (owned_by), network, host port, protocol."""
    return [
        m
        for m in mappings
        if (container is None or owned_by(m.container_id, m.chain, container))
        and (network is None or m.network == network)
        and (port is None or m.host_port == port)
        and (protocol is None or m.protocol == protocol)
    ]
