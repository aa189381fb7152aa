"""`flush-udp`: delete the UDP conntrack entries behind mapped host ports (SPEC §3).

UDP has no connection end, so conntrack keeps a flow on the destination it picked at
the flow's first packet for as long as the client keeps sending: after a container
moves, its clients keep going to the old address (a blackhole), and a flow that began
before the DNAT rule existed never reaches the container at all (the seed commit's
message). Deleting the entry makes the next datagram go through the rules again.

Which entries: those whose original destination port is a mapped UDP host port (or a
port given), per family. With stale_only, only those that misroute: their replies come
from an address and port that are not the current container's (an old DNAT
destination, the same address on an old container port too, or the host itself for a
flow never DNATed); a DNATed entry under a port nobody maps any
more misroutes too. Only flows to the node's own addresses are looked at: the
plugin's DNAT matches nothing else, so a forwarded flow (a container's DNS query to
a server outside) is never touched. The current mappings come from the inventory (`inventory.build`).

Also used by `add` (the plugin's flush of the ports it maps: `flush_ports`), by `gc`
(`plan`, over one listing of the ports it unmapped and of those another chain still
maps: ops/gc/udp.py flush_udp_after) and by `list --conntrack` (`count_flows`).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import (
    Any,
    Callable,
    Collection,
    Dict,
    FrozenSet,
    Iterable,
    List,
    Optional,
    Sequence,
    Set,
    Tuple,
)
from typing import Mapping as ReadOnly

from portmapctl.cni import cache as cni_cache
from portmapctl.core.contest import backend_of
from portmapctl.core.pause import gc_paused
from portmapctl.core.status import FlushReason
from portmapctl.errors import Interrupted
from portmapctl.host import conntrack
from portmapctl.host.addresses import LocalAddresses, local_addresses
from portmapctl.host.conntrack import ConntrackEntry
from portmapctl.iptables import inventory
from portmapctl.iptables.inventory import Mapping
from portmapctl.ops.node import Node

Key = Tuple[int, int]  # (family, host port)
# (family, destination address as plan compares it, host port): where a flow went.
Destination = Tuple[int, Optional[bytes], int]
Progress = Callable[[int, int], None]  # (entries handled, all entries)


class Taken(Set[Destination]):
    """The destinations another tool's rule takes first (taken_first, Judging.taken),
    and `by_source`: destinations only a rule for some sources (`-s SPEC`) may take,
    with those SPECs: a flow from another source is not that rule's (review h210)."""

    def __init__(self, items: Iterable[Destination] = ()) -> None:
        super().__init__(items)
        self.by_source: Dict[Destination, Set[str]] = {}
        self._networks: Dict[Destination, List[Any]] = {}  # by_source's, parsed once

    def __bool__(self) -> bool:
        return bool(len(self) or self.by_source)

    def merge(self, other: Collection[Destination]) -> Taken:
        self.update(other)
        for key, specs in getattr(other, "by_source", {}).items():
            self.by_source.setdefault(key, set()).update(specs)
        return self

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


@dataclass(frozen=True)
class Doomed:
    """An entry chosen for deletion, and why."""

    entry: ConntrackEntry
    reason: FlushReason
    # Where traffic to this port should go now (the current container addresses),
    # for the stale reasons; empty otherwise.
    wanted: Tuple[str, ...] = ()


@dataclass(frozen=True)
class FlushResult:
    dry_run: bool
    stale_only: bool
    ports: Tuple[Key, ...]  # the (family, host port) pairs looked at, sorted
    doomed: Tuple[Doomed, ...]  # what was (dry run: would be) deleted
    deleted: int  # how many the kernel deleted (dry run: how many would be)
    kept: int  # entries under those ports that were left alone
    warnings: Tuple[str, ...] = ()  # cache entries that could not be read
    # Of `doomed`, those gone before this run's delete reached them (idle, or another
    # flush): not reported as deleted by it.
    gone: FrozenSet[ConntrackEntry] = frozenset()

    @property
    def shown(self) -> Tuple[Doomed, ...]:
        """What the run deleted (a dry run: would delete), as the table and JSON list it."""
        if not self.gone:
            return self.doomed
        return tuple(d for d in self.doomed if d.entry not in self.gone)


# --- what to look at -----------------------------------------------------------------


def udp_mappings(mappings: Iterable[Mapping]) -> List[Mapping]:
    return [m for m in mappings if m.protocol == "udp"]


def select_ports(
    mappings: Sequence[Mapping],
    families: Collection[int],
    *,
    ports: Optional[Collection[int]] = None,
    container: Optional[str] = None,
) -> FrozenSet[Key]:
    """The (family, host port) pairs to flush: every mapped UDP host port, those of
    the containers whose ID starts with `container`, and/or the `ports` given.

    Given ports need not be mapped (a port whose container is gone may still have
    entries that DNAT to it); with a container too, only the container's ports
    among them."""
    mapped = {
        (m.family, m.host_port)
        for m in inventory.select(mappings, container=container, protocol="udp")
        if m.family in families
    }
    if ports is None:
        return frozenset(mapped)
    given = {(family, port) for family in families for port in ports}
    if container is None:
        return frozenset(given)
    return frozenset(mapped & given)


# --- which entries go ------------------------------------------------------------------


def _ip(family: int, text: str) -> Optional[bytes]:
    """An address in a form that compares right whatever its spelling (`fd00::5`,
    `fd00:0::5`): inet_pton, a twentieth of ipaddress's cost (10,000 entries). None
    for what is no address (a foreign rule's DNAT range): it matches nothing."""
    try:
        return socket.inet_pton(socket.AF_INET if family == 4 else socket.AF_INET6, text)
    except (OSError, TypeError):
        return None


def ours(addresses: Iterable[Tuple[int, str]]) -> Set[Tuple[int, Optional[bytes]]]:
    """plan()'s `ours`: these (family, container address) pairs, compared as plan
    compares a flow's DNAT destination."""
    return {(family, _ip(family, address)) for family, address in addresses}


def _index(mappings: Iterable[Mapping]) -> Dict[Key, List[Mapping]]:
    by_key: Dict[Key, List[Mapping]] = {}
    for m in udp_mappings(mappings):
        by_key.setdefault((m.family, m.host_port), []).append(m)
    return by_key


def _covers(m: Mapping, entry: ConntrackEntry) -> bool:
    """Whether mapping m's DNAT rule takes entry's destination: same family and host
    port (the caller's index), and its host IP when the mapping has one."""
    if m.host_ip is None:
        return True
    address = _ip(m.family, m.host_ip)
    return address is not None and address == _ip(entry.family, entry.dst)


def judge(
    entry: ConntrackEntry, mapped: Sequence[Mapping]
) -> Tuple[Optional[FlushReason], Tuple[str, ...]]:
    """(reason, wanted addresses) when the entry misroutes, (None, wanted) when it
    reaches the right place; `mapped` are the UDP mappings of its family and port."""
    covering = [m for m in mapped if _covers(m, entry)]
    # First-match-wins: a shadowed mapping's container gets no traffic (what shadows
    # it takes every address it is for).
    winners = [m for m in covering if not m.shadowed_by]
    bound = {
        (backend_of(m), m.container_id)
        for m in winners
        if m.host_ip is not None and not m.conditions
    }
    if bound:
        # One for this very address, taking every packet, is ahead of another
        # container's for every address without conditions in its backend (behind it,
        # it would be shadowed): those get none of this address's flows. Between the
        # backends the kernel's hook order decides (contested): both stay winners, as
        # do a container's own two networks (which is first is not known).
        here = {backend for backend, _ in bound}
        winners = [
            m
            for m in winners
            if m.host_ip is not None
            or m.conditions
            or backend_of(m) not in here
            or (backend_of(m), m.container_id) in bound
        ]
    if not winners:
        if covering:
            # Another tool's rule (or the other backend's) takes this destination's
            # flows first: where they belong is its business, and a flow it DNATed is
            # live. Kept: when in doubt, keep.
            return None, ()
        # Nothing maps this destination: its traffic belongs to the host itself.
        return (FlushReason.UNMAPPED if entry.dnat else None), ()
    # The DNAT destination is an address and a port: a container given the same
    # address with another container port does not take a flow DNATed to the old one.
    wanted = {(_ip(m.family, m.container_ip), m.container_port) for m in winners}
    replier = _ip(entry.family, entry.reply_src)
    addresses = {address for address, _ in wanted}
    straight = not entry.dnat and replier in {_ip(m.family, m.container_ip) for m in covering}
    if (replier, entry.reply_sport) in wanted or straight:
        # The second: a flow sent straight to a container's address (no DNAT needed).
        return None, _shown(winners, ())
    if entry.dnat:
        return FlushReason.OLD_DESTINATION, _shown(
            winners, (replier,) if replier in addresses else ()
        )
    # Never DNATed: it bypasses a mapping that takes every packet to its port, but a
    # mapping with conditions (conditionsV4/V6) leaves the rest to the host itself.
    if all(m.conditions for m in winners):
        return None, _shown(winners, ())
    return FlushReason.NOT_DNATED, _shown(winners, ())


def _shown(winners: Sequence[Mapping], ported: Collection[Optional[bytes]]) -> Tuple[str, ...]:
    """Where the port goes now, as the WHY column says it: the container addresses,
    with the port for those in `ported` (the entry went to that address, another port)."""
    shown = set()
    for m in winners:
        if _ip(m.family, m.container_ip) not in ported:
            shown.add(m.container_ip)
        elif m.family == 6:
            shown.add(f"[{m.container_ip}]:{m.container_port}")
        else:
            shown.add(f"{m.container_ip}:{m.container_port}")
    return tuple(sorted(shown))


def plan(
    entries: Iterable[ConntrackEntry],
    ports: Collection[Key],
    mappings: Sequence[Mapping],
    *,
    stale_only: bool = False,
    local: Optional[LocalAddresses] = None,
    ours: Optional[Collection[Tuple[int, Optional[bytes]]]] = None,
    taken: Collection[Destination] = (),
) -> List[Doomed]:
    """The entries under `ports` to delete: all of them, or with stale_only those
    that misroute given the current `mappings` (all of the node's, not only the
    selected ones: another container may take the same port on another host IP).

    With `local` (the node's own addresses), only entries to one of them: a flow to
    an address elsewhere (a container's DNS query to an outside server, forwarded
    and masqueraded) never met a mapping's DNAT, so it is neither stale nor ours.

    With `ours` (the (family, address) of the node's mapped containers), a flow DNATed
    to none of them, to an address of a port that is mapped on other host IPs only, is
    kept: another tool's rule DNATed it (kube-proxy's NodePort, Docker on another
    address), not a mapping (flush-udp deleted those live flows as "nothing maps this
    port now"; gc passes the containers of the chains it left and removed).

    `taken` (taken_first): the destinations another tool's rule takes before the
    plugin's entry; their flows are that tool's, kept by stale_only, unless DNATed to
    one of `ours` (then judged as any: a removed container's flow goes)."""
    by_key = _index(mappings)
    doomed = []
    for entry in entries:
        key = (entry.family, entry.dport)
        if key not in ports:
            continue
        if local is not None and (entry.family, entry.dst) not in local:
            continue
        if not stale_only:
            doomed.append(Doomed(entry, FlushReason.MAPPED if key in by_key else FlushReason.GIVEN))
            continue
        verdict = misroutes(entry, by_key, ours, taken)
        if verdict is not None:
            doomed.append(Doomed(entry, *verdict))
    return doomed


def plan_freed(
    entries: Iterable[ConntrackEntry],
    ports: Collection[Key],
    removed: Collection[Tuple[int, Optional[bytes]]],
    *,
    local: Optional[LocalAddresses] = None,
) -> List[Doomed]:
    """gc's flush of host ports no mapping of the plugin's is left on: the flows a
    removed mapping DNATed (to one of `removed`, as ours() gives them), which would keep
    its dead destination. Another tool's flows there (Docker publishing the same port)
    and the host's own, never DNATed, are none of the removal's: gc deleted them all."""
    return [
        d
        for d in plan(entries, ports, (), stale_only=True, local=local)
        if (d.entry.family, _ip(d.entry.family, d.entry.reply_src)) in removed
    ]


def misroutes(
    entry: ConntrackEntry,
    by_key: ReadOnly[Key, Sequence[Mapping]],
    ours: Optional[Collection[Tuple[int, Optional[bytes]]]] = None,
    taken: Collection[Destination] = (),
) -> Optional[Tuple[FlushReason, Tuple[str, ...]]]:
    """(reason, wanted) when the entry misroutes (flush-udp --stale-only deletes it), else
    None; `by_key`: the UDP mappings by (family, host port). plan()'s judgement, and
    list's count of it (one verdict: the count is what the fix deletes)."""
    replier = (entry.family, _ip(entry.family, entry.reply_src))
    destination = (entry.family, _ip(entry.family, entry.dst), entry.dport)
    if (
        taken
        and (taken.holds(destination, entry) if isinstance(taken, Taken) else destination in taken)
        and (ours is None or replier not in ours)
    ):
        # Another tool's rule takes this destination before any mapping: a flow to no
        # container of the plugin's is that tool's (or, never DNATed, in doubt).
        return None
    key = (entry.family, entry.dport)
    reason, wanted = judge(entry, by_key.get(key, ()))
    if (
        reason is FlushReason.UNMAPPED
        and ours is not None
        and key in by_key
        and replier not in ours
    ):
        return None
    return None if reason is None else (reason, wanted)


def taken_first(
    readers: ReadOnly[int, Any], entries: Iterable[ConntrackEntry], past_entry: bool = False
) -> Set[Destination]:
    """The (family, destination, host port) of these entries that another tool's
    iptables rule takes before the plugin's entry (iptables/foreign.py `takers`,
    `readers` its ChainReaders by family), judged for that very destination. A row's
    status judges a mapping on every address by all of them (a rule with `-d NODE_IP`
    takes only some: no row is shadowed); a flow goes to one, and one that rule takes
    is its tool's, whatever its DNAT (gc and --stale-only deleted them as an old
    destination of the mapping: review helper-149). `past_entry`: the readers are the
    other iptables flavour's, whose nat chains hook at the plugin's priority: all of
    PREROUTING is walked (ops/owners.py)."""
    wanted = _destinations(entries, readers)
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
        for proto_port in taking:
            key = (family, _ip(family, dst), proto_port[1])
            if proto_port in sources:
                found.by_source.setdefault(key, set()).update(sources[proto_port])
            else:
                found.add(key)
    # One flow's destination walked twice (the node's own and the network's): what
    # either walk takes for any source stands.
    for key in found & set(found.by_source):
        del found.by_source[key]
    return found


def hooks_take(node: Node, entries: Iterable[ConntrackEntry]) -> Set[Destination]:
    """taken_first by other nftables tables' nat hooks, at or before the plugin's
    (nftables/foreign.py flows_taken): a rule with `ip daddr NODE_IP` takes one address's
    flows (netavark's), which no row's status says (list: `unsure`); flush-udp
    --stale-only and gc deleted that tool's flows as the mapping's old destination.
    One netlink dump, and nft only for a table that has such a hook."""
    wanted = _destinations(entries, (4, 6))
    if not wanted:
        return set()
    from portmapctl.nftables.foreign import flows_taken

    return {(family, _ip(family, dst), port) for family, dst, port in flows_taken(node, wanted)}


def _destinations(
    entries: Iterable[ConntrackEntry], families: Collection[int]
) -> Dict[Tuple[int, str, bool], Set[Tuple[str, int]]]:
    """The entries' host ports by (family, destination, the node's own: from one of its
    addresses, through nat OUTPUT, not PREROUTING), of these families. A flow a local
    process began passed the OUTPUT hook: a rule there (and only there) took it, or
    not (review h210: it was walked in PREROUTING, an OUTPUT rule's flows deleted)."""
    wanted: Dict[Tuple[int, str, bool], Set[Tuple[str, int]]] = {}
    local: Optional[LocalAddresses] = None
    for entry in entries:
        if entry.family in families:
            if local is None:
                local = local_addresses(sorted({4, 6} & set(families)))
            own = (entry.family, entry.src) in local
            wanted.setdefault((entry.family, entry.dst, own), set()).add(("udp", entry.dport))
    return wanted


def _order(entry: ConntrackEntry) -> tuple:
    family, dst, src = entry.family, entry.dst, entry.src
    return (family, entry.dport, _ip(family, dst) or b"", _ip(family, src) or b"", entry.sport)


# --- doing it ----------------------------------------------------------------------------


def flush(
    node: Node,
    *,
    ports: Optional[Collection[int]] = None,
    container: Optional[str] = None,
    stale_only: bool = False,
    dry_run: bool = False,
    progress: Optional[Progress] = None,
) -> FlushResult:
    """`portmapctl flush-udp` on the node's namespace and families.

    The nat tables are read (one save per family) only when the mappings matter:
    all mapped ports, a container's ports, or stale_only; `ports` alone need not.
    """
    families = node.families
    mappings: List[Mapping] = []
    warnings: Tuple[str, ...] = ()
    judging: Optional[Judging] = None
    if ports is None or container is not None or stale_only:
        # The cache is read while the saves run (as for list): nothing is changed here.
        # The rows are acyclic and kept to the end: no cyclic collections (as list).
        with gc_paused():
            tables, attachments = node.read_with_cache()
            warnings = tuple(cni_cache.warnings(attachments))
            judging = node_judging(node, tables, attachments)
            mappings = udp_mappings(judging.mappings)
        if node.nft_unusable is not None:
            from portmapctl.ops.check.nft import configured_nft

            if configured_nft(attachments):
                # The ports a cached container maps in nftables cannot be told: its live
                # flows would be judged by the rest, called misrouted (exit 3, as gc).
                raise node.nft_unusable
    keys = select_ports(_worked_on(node, mappings), families, ports=ports, container=container)
    if not keys:
        return FlushResult(dry_run, stale_only, (), (), 0, 0, warnings)
    entries = conntrack.list_udp(
        sorted({family for family, _ in keys}), sorted({port for _, port in keys})
    )
    local = local_addresses(sorted({family for family, _ in keys}))
    # Only flows to the node's own addresses are looked at, and counted as kept: a
    # forwarded flow that only shares the port is none of a mapping's business.
    looked_at = [e for e in entries if (e.family, e.dport) in keys and (e.family, e.dst) in local]
    if container is not None:
        # The container's own flows: to an address its mapping of the port is for. A
        # mapping bound to one host IP shares the port with another container's on
        # another address, whose live flows were flushed too (review helper-135).
        own = _index(inventory.select(mappings, container=container, protocol="udp"))
        looked_at = [
            e for e in looked_at if any(_covers(m, e) for m in own.get((e.family, e.dport), ()))
        ]
    mine = ours((m.family, m.container_ip) for m in mappings)
    taken = judging.taken(looked_at) if stale_only and judging is not None else set()
    doomed = sorted(
        plan(looked_at, keys, mappings, stale_only=stale_only, local=local, ours=mine, taken=taken),
        key=lambda d: _order(d.entry),
    )
    gone: List[ConntrackEntry] = []
    if dry_run:
        deleted = len(doomed)
    else:
        deleted = _delete(doomed, progress, gone)
    return FlushResult(
        dry_run,
        stale_only,
        tuple(sorted(keys)),
        tuple(doomed),
        deleted,
        len(looked_at) - len(doomed),
        warnings,
        frozenset(gone),
    )


def _delete(
    doomed: Sequence[Doomed],
    progress: Optional[Callable[[int, int], None]],
    gone: List[ConntrackEntry],
) -> int:
    """conntrack.delete of the doomed entries. Stopped (Ctrl-C, SIGTERM) part-way, the
    line says how far it got (Interrupted.after): "aborted" alone read as "nothing was
    deleted" when thousands were (helper-146)."""
    handled = [0]

    def counted(done: int, total: int) -> None:
        handled[0] = done
        if progress is not None:
            progress(done, total)

    try:
        return conntrack.delete([d.entry for d in doomed], counted, gone)
    except Interrupted as stop:
        stop.after = (
            f"{handled[0]} of {len(doomed)} UDP conntrack entries had been deleted, and"
            " the next batch may have been (the same command deletes what is left)"
        )
        raise


def _worked_on(node: Node, mappings: List[Mapping]) -> List[Mapping]:
    """The mappings of the backends the command works on: under --backend iptables or
    nftables the other backend's rows are read only to judge flows (node_mappings),
    their ports are not this run's to flush."""
    if node.options.backend == "auto" or not mappings:
        return mappings
    return [m for m in mappings if backend_of(m) == node.options.backend]


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

    def taken(self, entries: Iterable[ConntrackEntry]) -> Taken:
        """The destinations of these entries that another tool's rule takes first."""
        entries = list(entries)
        found = Taken()
        udp = [m for m in self.mappings if m.protocol == "udp"]
        if self.tables and entries:
            from portmapctl.core.backend import Backend
            from portmapctl.iptables.foreign import table_reader

            readers = {f: table_reader(t) for f, t in self.tables.items()}
            # Only a port an iptables chain maps is taken at the plugin's jump: the rules
            # after it never see those packets. A port only the nftables backend maps (or
            # nothing: --port N) is another's wherever in PREROUTING its rule stands:
            # iptables' nat hooks at cni_hostport's priority, and CNI-HOSTPORT-DNAT has
            # nothing for it (as the other flavour's table, `past_entry`).
            chained = {(m.family, m.host_port) for m in udp if backend_of(m) == Backend.IPTABLES}
            found.merge(
                taken_first(readers, [e for e in entries if (e.family, e.dport) in chained])
            )
            past = [e for e in entries if (e.family, e.dport) not in chained]
            found.merge(taken_first(readers, past, past_entry=True))
        if self.other and entries:
            found.merge(taken_first(self.other, entries, past_entry=True))
        if self.node is not None and entries:
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
            if rest:
                # A flow the node itself began (from one of its addresses) passed the
                # output hook, which may take it whatever the rows' statuses say.
                local = local_addresses(sorted({e.family for e in rest}))
                asked += [e for e in rest if (e.family, e.src) in local]
            found.merge(hooks_take(self.node, asked))
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

    other = other_flavour_readers(node.backend.name, tuple(tables))
    readers = other[1] if other is not None else {}
    if not found.mappings and not nft_rows:
        # (Ports given, none mapped: every hook is asked of their flows.)
        return Judging([], tables, readers, node, None)
    from portmapctl.ops.owners import node_rows, read_owners

    owners = read_owners(node, tables, found.mappings, nft_rows, live, other)
    rows = node_rows(found.mappings, nft_rows, owners)
    return Judging(rows, tables, readers, node, owners.hook_ports())


def flush_ports(
    families: Collection[int],
    ports: Collection[int],
    *,
    keep: Optional[Sequence[Mapping]] = None,
    ours: Optional[Collection[Tuple[int, Optional[bytes]]]] = None,
    judging: Optional[Judging] = None,
) -> int:
    """Delete the UDP entries to these host ports in these families, in the current
    namespace; returns how many went. This is the plugin's flush after ADD (`add`),
    and what `gc` does for the host ports it unmapped.

    With `keep` (the node's current mappings), only what misroutes goes, as with
    --stale-only, and only flows to the node's own addresses; `ours` as for plan();
    `judging` (its tables) tells the destinations another tool's rule takes first.
    """
    if not families or not ports:
        return 0
    keys = {(family, port) for family in families for port in ports}
    entries = conntrack.list_udp(sorted(set(families)), sorted(set(ports)))
    local = local_addresses(families) if keep is not None else None
    taken = judging.taken(entries) if judging is not None and keep is not None else set()
    doomed = plan(
        entries, keys, keep or (), stale_only=keep is not None, local=local, ours=ours, taken=taken
    )
    return conntrack.delete([d.entry for d in doomed])


@dataclass(frozen=True)
class Flows:
    """`list --conntrack` for one UDP mapping: how many entries are under it, and those
    of them that misroute (an old DNAT destination, never DNATed: what flush-udp
    --stale-only deletes). A set, not a count: one entry under two mappings (a shadowed
    one and its winner) is one flow to flush."""

    entries: int = 0
    misrouted: FrozenSet[ConntrackEntry] = frozenset()


@dataclass(frozen=True)
class Counted:
    """`list --conntrack`'s flows: per UDP row, and per (family, host port) of the rows
    the misrouted entries to an address none of them is for (DNATed there when the
    port was mapped on it: flush-udp --stale-only deletes them as "nothing maps this
    port now", so list's summary counts them: review helper-149)."""

    rows: Dict[Mapping, Flows]
    elsewhere: Dict[Key, FrozenSet[ConntrackEntry]]

    def misrouted(self, shown: Iterable[Mapping], elsewhere: bool = True) -> int:
        """How many flows the summary's fix deletes for the rows `shown`: theirs (one
        entry under two rows is one flow), and with `elsewhere` those to another
        address on their ports (not when the fix is narrowed to one --container:
        flush-udp then looks at the container's own addresses alone)."""
        astray: Set[ConntrackEntry] = set()
        for m in shown:
            flows = self.rows.get(m)
            if flows is not None:
                astray |= flows.misrouted
                if elsewhere:
                    astray |= self.elsewhere.get((m.family, m.host_port), frozenset())
        return len(astray)


def count_flows(mappings: Iterable[Mapping], judging: Optional[Judging] = None) -> Counted:
    """`list --conntrack`: the UDP entries per UDP mapping (family, host port, and host
    IP when the mapping has one). An entry counts for every mapping that covers it,
    shadowed ones too: it is under their port. Only flows to the node's own addresses
    count, the ones flush-udp looks at: a forwarded flow to the same port elsewhere (a
    container's DNS query) never met the mapping. A count alone said "3 flows, ok" of a
    mapping two of whose flows went to a gone pod (helper-146): the misrouted ones are
    judged as flush-udp --stale-only judges them (`misroutes`), by `judging` (default:
    `mappings` alone; the node's every mapping when those are one backend's)."""
    udp = udp_mappings(mappings)
    counts: Dict[Mapping, int] = dict.fromkeys(udp, 0)
    misrouted: Dict[Mapping, Set[ConntrackEntry]] = {}
    elsewhere: Dict[Key, Set[ConntrackEntry]] = {}
    if udp:
        by_key = _index(udp)
        every = by_key if judging is None else _index(judging.mappings)
        mine = ours((m.family, m.container_ip) for found in every.values() for m in found)
        families: Set[int] = {m.family for m in udp}
        local = local_addresses(sorted(families))
        entries = [
            e
            for e in conntrack.list_udp(sorted(families), sorted({m.host_port for m in udp}))
            if (e.family, e.dst) in local and (e.family, e.dport) in by_key
        ]
        taken = judging.taken(entries) if judging is not None and entries else set()
        for entry in entries:
            key = (entry.family, entry.dport)
            covering = [m for m in by_key[key] if _covers(m, entry)]
            astray = misroutes(entry, every, mine, taken) is not None
            if not covering:
                if astray:
                    elsewhere.setdefault(key, set()).add(entry)
                continue
            for m in covering:
                counts[m] += 1
                if astray:
                    misrouted.setdefault(m, set()).add(entry)
    return Counted(
        {m: Flows(n, frozenset(misrouted.get(m, ()))) for m, n in counts.items()},
        {key: frozenset(found) for key, found in elsewhere.items()},
    )
