"""Whose a UDP flow is: the rules that may take its destination before the plugin's.

A conntrack entry says where a flow went, not which rule sent it there. A flow to a
mapped host port is the plugin's to judge (ops/flush_udp.py: misrouted or not) only
when no other tool's rule takes its very destination first: another tool's rule ahead
of the plugin's entry in the node's iptables nat table (`-d NODE_IP ... -j DNAT`, or a
rule for some sources, interfaces or marks: maybe), anywhere in the other iptables
flavour's PREROUTING, and in another nftables table's nat hook at or before the
plugin's priority. A flow the node itself began (from one of its addresses) is judged
by the output hook it passed. `Judging` gathers those readers for a node
(`node_judging`), `Taken` is its answer. flush-udp --stale-only, gc's flush, `add`'s
flush and `list --conntrack` all ask it, so they delete and count alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Collection, Dict, FrozenSet, Iterable, List, Optional, Set, Tuple
from typing import Mapping as ReadOnly

from portmapctl.cni.leases import LeasedNetwork, leased_networks
from portmapctl.core.contest import backend_of
from portmapctl.core.mapping import MappingConfig
from portmapctl.host.addresses import LocalAddresses, local_addresses
from portmapctl.host.conntrack import ConntrackEntry, packed
from portmapctl.host.ipvs import Ipvs, read_ipvs
from portmapctl.iptables import inventory
from portmapctl.iptables.inventory import Mapping
from portmapctl.ops.node import Node

Key = Tuple[int, int]  # (family, host port)
# (family, destination address as flush_udp.plan compares it, host port): where a flow went.
Destination = Tuple[int, Optional[bytes], int]


def covers(m: Mapping, entry: ConntrackEntry) -> bool:
    """Whether mapping m's DNAT rule takes entry's destination: same family and host
    port (the caller's index), and its host IP when the mapping has one."""
    if m.host_ip is None:
        return True
    address = packed(m.family, m.host_ip)
    return address is not None and address == packed(entry.family, entry.dst)


def sent_there(config: Optional[MappingConfig], entry: ConntrackEntry) -> bool:
    """Whether the plugin, given `config` (a cached container's; None: no ports), sends
    entry's flow where it went: a UDP mapping of its host port, on its destination or on
    every address, to the container's address (the first of the family, as the plugin
    takes) and the port it was DNATed to."""
    if config is None:
        return False
    address = config.address(entry.family)
    replier = packed(entry.family, entry.reply_src)
    if address is None or packed(entry.family, str(address.ip)) != replier:
        return False
    for port in config.ports:
        if port.protocol != "udp" or not port.applies_to(entry.family):
            continue
        if (port.host_port, port.container_port) != (entry.dport, entry.reply_sport):
            continue
        host = port.host_ip_for_rule()  # (None: every address)
        if host is None or packed(entry.family, host) == packed(entry.family, entry.dst):
            return True
    return False


class Taken(Set[Destination]):
    """The destinations another tool's rule takes first (taken_first, Judging.taken),
    and `by_source`: destinations only a rule for some sources (`-s SPEC`) may take,
    with those SPECs: a flow from another source is not that rule's (review h210).
    `holds` judges a flow by both.

    As a set it holds the wholly taken alone (`set(taken)`, `in`, `len`). What keeps
    its meaning per flow keeps by_source: a copy (`copy()`, copy.copy, `Taken(other)`)
    and a union (`|`, `union`, `|=`, `update`, `merge`: the SPECs of a destination
    merged, one taken wholly on either side stays wholly taken). An intersection, a
    difference or an order has no answer as SPECs (every source but a /24 is no SPEC
    list) and is refused (TypeError): set's own built a plain set of the wholly
    taken, which judged a some-sources rule as taking no flow at all."""

    def __init__(self, items: Iterable[Destination] = ()) -> None:
        super().__init__()
        self.by_source: Dict[Destination, Set[str]] = {}
        self._networks: Dict[Destination, List[Any]] = {}  # by_source's, parsed once
        # Where the rules that take a destination DNAT its flows, where their text
        # says so exactly: (packed address, port; None: the host port kept). `sends`.
        self.sent_to: Dict[Destination, Set[Target]] = {}
        self.update(items)

    def __bool__(self) -> bool:
        return bool(len(self) or self.by_source)

    def __repr__(self) -> str:
        return f"Taken({set(self)!r}, by_source={self.by_source!r})"

    def copy(self) -> Taken:
        return Taken(self)

    __copy__ = copy

    def update(self, *others: Iterable[Destination]) -> None:
        for other in others:
            super().update(other)
            for key, specs in getattr(other, "by_source", {}).items():
                self.by_source.setdefault(key, set()).update(specs)
                self._networks.pop(key, None)  # (parsed again with the new SPECs)
            for key, targets in getattr(other, "sent_to", {}).items():
                self.sent_to.setdefault(key, set()).update(targets)
        self.whole_wins()

    def merge(self, other: Collection[Destination]) -> Taken:
        self.update(other)
        return self

    def union(self, *others: Iterable[Destination]) -> Taken:
        found = self.copy()
        found.update(*others)
        return found

    def __or__(self, other: Any) -> Any:
        if not isinstance(other, (set, frozenset)):
            return NotImplemented
        return self.union(other)

    __ror__ = __or__

    def __ior__(self, other: Any) -> Any:
        if not isinstance(other, (set, frozenset)):
            return NotImplemented
        self.update(other)
        return self

    def whole_wins(self) -> None:
        """A destination taken wholly needs no SPECs: any flow there is taken."""
        for key in [key for key in self.by_source if key in self]:
            del self.by_source[key]
            self._networks.pop(key, None)

    def clear(self) -> None:
        super().clear()
        self.by_source.clear()
        self._networks.clear()
        self.sent_to.clear()

    def _some(self) -> Dict[Destination, FrozenSet[str]]:
        return {k: frozenset(v) for k, v in self.by_source.items() if v and k not in self}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (set, frozenset)):
            return NotImplemented
        theirs = other._some() if isinstance(other, Taken) else {}
        return super().__eq__(other) and self._some() == theirs

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = None  # type: ignore[assignment]

    def _refused(self, *_args: Any) -> Any:
        raise TypeError(
            "an intersection, difference or order of Taken has no answer as by_source's"
            " -s SPECs: judge each flow with holds()"
        )

    __and__ = __rand__ = __iand__ = _refused
    __sub__ = __rsub__ = __isub__ = _refused
    __xor__ = __rxor__ = __ixor__ = _refused
    __le__ = __lt__ = __ge__ = __gt__ = _refused
    intersection = difference = symmetric_difference = _refused
    intersection_update = difference_update = symmetric_difference_update = _refused
    issubset = issuperset = isdisjoint = _refused

    def holds(self, destination: Destination, entry: ConntrackEntry) -> bool:
        if destination in self:
            return True
        specs = self.by_source.get(destination)
        if not specs:
            return False
        import ipaddress

        networks = self._networks.get(destination)
        if networks is None:
            try:
                networks = [ipaddress.ip_network(s, strict=False) for s in specs]
            except ValueError:
                return True  # (cannot tell: kept)
            self._networks[destination] = networks
        try:
            source = ipaddress.ip_address(entry.src)
        except ValueError:
            return True
        return any(source in network for network in networks)

    def sends(self, destination: Destination, entry: ConntrackEntry) -> bool:
        """Whether a rule that takes `destination` DNATs it to where `entry` went: the
        flow is that rule's own, live, even when it went to an address of one of the
        plugin's containers (on a port none of its mappings sends the host port to)."""
        targets = self.sent_to.get(destination)
        if not targets:
            return False
        replier = packed(entry.family, entry.reply_src)
        kept = (replier, None) in targets and entry.reply_sport == entry.dport
        return kept or (replier, entry.reply_sport) in targets


# Where a rule DNATs: (packed address, port; None: the port is kept).
Target = Tuple[Optional[bytes], Optional[int]]


def dnat_target(family: int, rule: str) -> Optional[Target]:
    """The one address (and port) a foreign rule's text, as iptables-save prints it,
    DNATs to; None for another target, a range, or what cannot be read."""
    import shlex

    from portmapctl.iptables.ruleset import option_value, rule_target
    from portmapctl.iptables.shapes import split_destination

    try:
        args = shlex.split(rule)
    except ValueError:
        return None
    to = option_value(args, "--to-destination") if rule_target(args) == "DNAT" else None
    if not to or "-" in to:
        return None
    found = split_destination(to)
    if found is not None:
        address = packed(family, found.address)
        return None if address is None else (address, found.port)
    address = packed(family, to.strip("[]"))
    return None if address is None else (address, None)


def taken_first(
    readers: ReadOnly[int, Any],
    entries: Iterable[ConntrackEntry],
    past_entry: bool = False,
    local: Optional[LocalAddresses] = None,
) -> Taken:
    """The (family, destination, host port) of these entries that another tool's
    iptables rule takes before the plugin's entry (iptables/foreign.py `takers`,
    `readers` its ChainReaders by family), judged for that very destination. A row's
    status judges a mapping on every address by all of them (a rule with `-d NODE_IP`
    takes only some: no row is shadowed); a flow goes to one, and one that rule takes
    is its tool's, whatever its DNAT (gc and --stale-only deleted them as an old
    destination of the mapping: review helper-149). `past_entry`: the readers are the
    other iptables flavour's, whose nat chains hook at the plugin's priority: all of
    PREROUTING is walked (ops/owners.py). `local`: the node's addresses (None: read
    here), which say whose flows the node itself began (_destinations)."""
    wanted = _destinations(entries, readers, local)
    found = Taken()
    if not wanted:
        return found
    from portmapctl.iptables.foreign import takers

    for (family, dst, output), ports in wanted.items():
        sources: Dict[Tuple[str, int], FrozenSet[str]] = {}
        taking = takers(
            readers[family],
            ports,
            past_entry=past_entry,
            dest=dst,
            doubt=True,
            output=output,
            sources=sources,
        )
        for proto_port, rule in taking.items():
            key = (family, packed(family, dst), proto_port[1])
            target = dnat_target(family, rule)
            if target is not None:
                found.sent_to.setdefault(key, set()).add(target)
            if proto_port in sources:
                found.by_source.setdefault(key, set()).update(sources[proto_port])
            else:
                found.add(key)
    # One flow's destination walked twice (the node's own and the network's): what
    # either walk takes for any source stands.
    found.whole_wins()
    return found


def hooks_take(
    node: Node, entries: Iterable[ConntrackEntry], local: Optional[LocalAddresses] = None
) -> Set[Destination]:
    """taken_first by other nftables tables' nat hooks, at or before the plugin's
    (nftables/foreign.py flows_taken): a rule with `ip daddr NODE_IP` takes one address's
    flows (netavark's), which no row's status says (list: `unsure`); flush-udp
    --stale-only and gc deleted that tool's flows as the mapping's old destination.
    One netlink dump, and nft only for a table that has such a hook."""
    wanted = _destinations(entries, (4, 6), local)
    if not wanted:
        return set()
    from portmapctl.nftables.foreign import flows_taken

    return {(family, packed(family, dst), port) for family, dst, port in flows_taken(node, wanted)}


def _destinations(
    entries: Iterable[ConntrackEntry],
    families: Collection[int],
    local: Optional[LocalAddresses] = None,
) -> Dict[Tuple[int, str, bool], Set[Tuple[str, int]]]:
    """The entries' host ports by (family, destination, the node's own: from one of its
    addresses, through nat OUTPUT, not PREROUTING), of these families. A flow a local
    process began passed the OUTPUT hook: a rule there (and only there) took it, or
    not (review h210: it was walked in PREROUTING, an OUTPUT rule's flows deleted).
    `local`: the node's addresses, read here when not given and an entry needs them."""
    wanted: Dict[Tuple[int, str, bool], Set[Tuple[str, int]]] = {}
    for entry in entries:
        if entry.family in families:
            if local is None:
                local = local_addresses(sorted({4, 6} & set(families)))
            own = (entry.family, entry.src) in local
            wanted.setdefault((entry.family, entry.dst, own), set()).add(("udp", entry.dport))
    return wanted


def chain_taken(
    readers: ReadOnly[int, Any],
    mappings: Iterable[Mapping],
    entries: Iterable[ConntrackEntry],
    local: Optional[LocalAddresses] = None,
) -> Taken:
    """taken_first of the plugin's own iptables flavour (`readers`); `mappings`: the
    node's rows, of either backend. Only a destination an iptables chain takes whole is
    taken at the plugin's jump: the rules after it never see those packets. A flow to an
    address no iptables mapping covers (the port mapped there in nftables alone, or on
    another host IP, or not at all: --port N) leaves CNI-HOSTPORT-DNAT untaken and is
    another's wherever in PREROUTING its rule stands: iptables' nat hooks at
    cni_hostport's priority (as the other flavour's table, `past_entry`). So do the
    packets a mapping with conditions (conditionsV4/V6 on its entry rule) leaves: both
    walks for its destinations (a rule after the jump DNATing the other sources' packets
    was not seen, its live flows counted misrouted and deleted)."""
    from portmapctl.core.backend import Backend
    from portmapctl.core.contest import takes_port

    chained: Dict[Key, List[Mapping]] = {}
    for m in mappings:
        if m.protocol == "udp" and backend_of(m) == Backend.IPTABLES:
            chained.setdefault((m.family, m.host_port), []).append(m)
    at_jump: List[ConntrackEntry] = []
    past: List[ConntrackEntry] = []
    for e in entries:
        covering = [m for m in chained.get((e.family, e.dport), ()) if covers(m, e)]
        if any(takes_port(m) for m in covering):
            at_jump.append(e)
            continue
        if covering:
            at_jump.append(e)  # (those its conditions take: rules ahead of the jump)
        past.append(e)
    found = taken_first(readers, at_jump, local=local)
    return found.merge(taken_first(readers, past, past_entry=True, local=local))


def ipvs_taken(ipvs: Ipvs, mappings: Iterable[Mapping], entries: Iterable[ConntrackEntry]) -> Taken:
    """The destinations of these entries IPVS may take (host/ipvs.py: kube-proxy's
    service addresses on kube-ipvs0, its UDP virtual services). Its entries look
    DNATed, but no nat rule made them: judged as the plugin's, its live flow to a pod
    of the plugin's network was deleted as `unmapped` (266ec86a: the pod maps no such
    port). IPVS sends at LOCAL_IN, after nat PREROUTING: a destination a mapping's rule
    takes whole (either backend's, no conditions) is that mapping's, not IPVS's. A
    virtual service's real servers are where it sends (Taken.sends)."""
    found = Taken()
    if not ipvs:
        return found
    from portmapctl.core.contest import takes_port

    whole: Dict[Key, List[Mapping]] = {}
    for m in mappings:
        if m.protocol == "udp" and takes_port(m):
            whole.setdefault((m.family, m.host_port), []).append(m)
    for e in entries:
        address = packed(e.family, e.dst)
        if address is None or not ipvs.takes(e.family, address, e.dport):
            continue
        if any(covers(m, e) for m in whole.get((e.family, e.dport), ())):
            continue
        key = (e.family, address, e.dport)
        found.add(key)
        servers = ipvs.services.get(key, frozenset())
        found.sent_to.setdefault(key, set()).update(servers)
    return found


@dataclass(frozen=True)
class Judging:
    """What flows are judged by (node_judging): the node's every mapping, and the rules
    that may take a flow's destination before the plugin's: another tool's in its
    iptables nat tables, in the other iptables flavour's, and in another nftables
    table's nat hook (asked of `node`; None: not asked, a snapshot or a test's)."""

    mappings: List[Mapping]
    tables: ReadOnly[int, Any]
    other: ReadOnly[int, Any] = field(default_factory=dict)  # flavour_guard's readers
    node: Optional[Node] = None
    # The (family, host port) whose flows another nftables table's hook may take
    # (Owners.hook_ports: the rows' walk, which costs a listing of each such table, says
    # which; None: every port). Only their flows are walked again, per destination.
    hook_ports: Optional[FrozenSet[Key]] = frozenset()
    # The plugin's networks whose addresses host-local leases (cni/leases.py): where a
    # flow DNATed to an address no container holds any more is told (vacated).
    networks: Tuple[LeasedNetwork, ...] = ()

    def vacated(
        self,
        entries: Iterable[ConntrackEntry],
        ours: Collection[Tuple[int, Optional[bytes]]],
        local: LocalAddresses,
    ) -> Set[Tuple[int, Optional[bytes]]]:
        """Of the addresses these entries were DNATed to, none of `ours` (the mapped
        containers', as flush_udp.ours gives them) nor the node's own, those of the
        plugin's networks whose lease host-local gave back: no container has them (a
        removed one's: the plugin's DEL flushes no flow). A flow there is the plugin's
        old one, not another tool's live flow to the port on an address no mapping is
        for (which is kept: its destination may be a pod of kube-proxy's)."""
        found: Set[Tuple[int, Optional[bytes]]] = set()
        if not self.networks:
            return found
        from portmapctl.cni.leases import given_back

        asked: Set[Tuple[int, Optional[bytes]]] = set()
        for e in entries:
            replier = (e.family, packed(e.family, e.reply_src))
            if not e.dnat or replier in ours or replier in asked:
                continue
            asked.add(replier)
            if (e.family, e.reply_src) not in local and given_back(self.networks, e.reply_src):
                found.add(replier)
        return found

    def misdirected(
        self,
        entries: Iterable[ConntrackEntry],
        ours: Collection[Tuple[int, Optional[bytes]]],
        local: LocalAddresses,
    ) -> Set[ConntrackEntry]:
        """Of these entries DNATed to none of `ours` nor the node's own addresses, those
        to an address of the plugin's networks that host-local leases to a container
        whose cached config sends no such flow there: the address was given to it after
        the container the flow went to was removed (host-local hands addresses out in
        order), and the flow now reaches one that does not serve it. A holder with no
        cache entry (being added) or one that cannot be read tells nothing: kept. As
        vacated, but per flow, and not for a destination another tool's rule takes
        (misroutes: that tool may DNAT there itself)."""
        found: Set[ConntrackEntry] = set()
        if not self.networks:
            return found
        from portmapctl.cni.leases import holders

        held: Dict[Tuple[int, Optional[bytes]], Tuple[Any, ...]] = {}
        for e in entries:
            replier = (e.family, packed(e.family, e.reply_src))
            if not e.dnat or replier in ours or (e.family, e.reply_src) in local:
                continue
            if replier not in held:
                held[replier] = holders(self.networks, e.reply_src)
            asked = held[replier]
            if asked and all(a is not None and not any(sent_there(c, e) for c in a) for a in asked):
                found.add(e)
        return found

    def taken(
        self, entries: Iterable[ConntrackEntry], local: Optional[LocalAddresses] = None
    ) -> Taken:
        """The destinations of these entries that another tool's rule takes first.
        `local`: the node's addresses of the entries' families, as the caller read
        them (None: read here, once for every walk)."""
        entries = list(entries)
        found = Taken()
        if not entries or not (self.tables or self.other or self.node is not None):
            return found
        if local is None:
            local = local_addresses(sorted({e.family for e in entries}))
        udp = [m for m in self.mappings if m.protocol == "udp"]
        if self.tables:
            from portmapctl.iptables.foreign import table_reader

            readers = {f: table_reader(t) for f, t in self.tables.items()}
            found.merge(chain_taken(readers, udp, entries, local))
        if self.other:
            found.merge(taken_first(self.other, entries, past_entry=True, local=local))
        if self.node is not None:
            ports = self.hook_ports
            mapped = {(m.family, m.host_port) for m in udp}
            from portmapctl.core.mapping import loopback

            # (Parsed once per destination: a node has few, 10,000 entries share them.)
            looped = {dst for dst in {e.dst for e in entries} if loopback(dst)}
            # The rows' walk judged a row's own hook and destination only: a flow to a
            # loopback address passes the output hook, which a row on every address was
            # not walked for, and a port no row maps (--port N) was not walked at all.
            asked: List[ConntrackEntry] = []
            rest: List[ConntrackEntry] = []
            for e in entries:
                walked = (
                    ports is None
                    or (e.family, e.dport) in ports
                    or (e.family, e.dport) not in mapped
                    or e.dst in looped
                )
                (asked if walked else rest).append(e)
            # A flow the node itself began (from one of its addresses) passed the
            # output hook, which may take it whatever the rows' statuses say.
            asked += [e for e in rest if (e.family, e.src) in local]
            found.merge(hooks_take(self.node, asked, local))
            ipvs = read_ipvs({e.family for e in entries})
            found.merge(ipvs_taken(ipvs, udp, entries))
        return found


def node_mappings(node: Node, tables: Any, attachments: Any) -> List[Mapping]:
    """node_judging's mappings."""
    return node_judging(node, tables, attachments).mappings


def node_judging(node: Node, tables: Any, attachments: Any) -> Judging:
    """Every mapping of the node, as `list` rows them: the plugin's iptables chains and
    nftables rules, whichever backend the command works on (the other still routes
    flows: a flow it takes is no stale one), each with the statuses its port's other
    owners give (ops/owners.py: another nftables table's earlier hook shadows it, the
    other backend contests it); and the iptables tables read. Judged by fewer,
    flush-udp deleted live flows that list called routed (review helper-149)."""
    if not node.options.reads_iptables:
        # --backend nftables: iptables is read only for this.
        tables = node.read_iptables_evidence(node.families)
    found = inventory.build(tables, attachments)
    # Where nftables is not looked at (--backend iptables) its rules still route
    # flows: a flow they take is no stale one (read for that alone).
    live = node.read_nft_evidence()
    nft_rows: List[Mapping] = []
    if live.tables:
        from portmapctl.ops import nft

        owner_ids = {c.container_id for c in found.chains if c.container_id}
        nft_rows = list(nft.build(node, attachments, owner_ids, live=live)[2].mappings)
    from portmapctl.ops.flavour_guard import other_flavour_readers

    other = other_flavour_readers(node.backend, tuple(tables))
    readers = other[1] if other is not None else {}
    networks = leased_networks(attachments)
    if not found.mappings and not nft_rows:
        # (Ports given, none mapped: every hook is asked of their flows.)
        return Judging([], tables, readers, node, None, networks)
    from portmapctl.ops.owners import node_rows, read_owners

    owners = read_owners(node, tables, found.mappings, nft_rows, live, other)
    rows = node_rows(found.mappings, nft_rows, owners)
    return Judging(rows, tables, readers, node, owners.hook_ports(), networks)
