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

from dataclasses import dataclass
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
from portmapctl.core.mapping import endpoint
from portmapctl.core.pause import gc_paused
from portmapctl.core.status import FlushReason, Status
from portmapctl.errors import Interrupted
from portmapctl.host import conntrack
from portmapctl.host.addresses import LocalAddresses, local_addresses
from portmapctl.host.conntrack import ConntrackEntry, packed
from portmapctl.iptables import inventory
from portmapctl.iptables.inventory import Mapping
from portmapctl.ops.flow_owners import Destination, Judging, Key, Taken, covers, node_judging
from portmapctl.ops.node import Node

Progress = Callable[[int, int], None]  # (entries handled, all entries)


@dataclass(frozen=True)
class Doomed:
    """An entry chosen for deletion, and why."""

    entry: ConntrackEntry
    reason: FlushReason
    # Where traffic to this port should go now (the current container addresses),
    # for the stale reasons; empty otherwise.
    wanted: Tuple[str, ...] = ()
    # UNMAPPED: the host IPs the port is mapped on, none of them the entry's
    # destination; empty where nothing maps the port (its WHY said that of both).
    mapped_on: Tuple[str, ...] = ()
    # Of `wanted`, those only stale chains send the port to (list: `stale`, a leaked
    # chain: no cache entry names its container): a container that is gone.
    stale: Tuple[str, ...] = ()


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
    # Of `kept` (--stale-only), those a stale chain DNATed to its own container's
    # address (a leaked chain: no cache entry names its container): they follow the
    # rule, but reach no live container; gc, removing the chain, ends them.
    kept_stale: int = 0
    # Of `kept` (--stale-only), those to a destination another tool's rule may take
    # before the plugin's (Judging.taken, _taken_first): that tool's flows to route,
    # whatever their DNAT; none of them counted in kept_stale.
    kept_taken: int = 0

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


def ours(addresses: Iterable[Tuple[int, str]]) -> Set[Tuple[int, Optional[bytes]]]:
    """plan()'s `ours`: these (family, container address) pairs, compared as plan
    compares a flow's DNAT destination."""
    return {(family, packed(family, address)) for family, address in addresses}


def _index(mappings: Iterable[Mapping]) -> Dict[Key, List[Mapping]]:
    by_key: Dict[Key, List[Mapping]] = {}
    for m in udp_mappings(mappings):
        by_key.setdefault((m.family, m.host_port), []).append(m)
    return by_key


def judge(
    entry: ConntrackEntry, mapped: Sequence[Mapping]
) -> Tuple[Optional[FlushReason], Tuple[str, ...]]:
    """(reason, wanted addresses) when the entry misroutes, (None, wanted) when it
    reaches the right place; `mapped` are the UDP mappings of its family and port."""
    covering = [m for m in mapped if covers(m, entry)]
    # First-match-wins: a shadowed mapping's container gets no traffic (what shadows
    # it takes every address it is for).
    winners = [m for m in covering if not m.shadowed_by]
    # Nor does a chain that nothing enters (an orphan: a zombie's, once a repair gave
    # the port's entry rule back to the live container alone). Where an entered one
    # has the port, a flow to the orphan's container misroutes.
    entered = [m for m in winners if Status.ORPHAN not in m.status]
    winners = entered or winners
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
    wanted = {(packed(m.family, m.container_ip), m.container_port) for m in winners}
    replier = packed(entry.family, entry.reply_src)
    addresses = {address for address, _ in wanted}
    straight = not entry.dnat and replier in {packed(m.family, m.container_ip) for m in covering}
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
        if packed(m.family, m.container_ip) not in ported:
            shown.add(m.container_ip)
        else:
            shown.add(endpoint(m.container_ip, m.container_port))
    return tuple(sorted(shown))


def _stale_wanted(
    mapped: Sequence[Mapping], entry: ConntrackEntry, wanted: Sequence[str]
) -> Tuple[str, ...]:
    """Of `wanted` (judge's, as _shown writes them), those that only stale mappings
    covering the entry send it to (Doomed.stale)."""
    if not wanted:
        return ()
    covering = [m for m in mapped if covers(m, entry)]
    forms = [(m, (m.container_ip, endpoint(m.container_ip, m.container_port))) for m in covering]
    return tuple(w for w in wanted if _all_stale([m for m, shown in forms if w in shown]))


def plan(
    entries: Iterable[ConntrackEntry],
    ports: Collection[Key],
    mappings: Sequence[Mapping],
    *,
    stale_only: bool = False,
    local: Optional[LocalAddresses] = None,
    ours: Optional[Collection[Tuple[int, Optional[bytes]]]] = None,
    taken: Collection[Destination] = (),
    misdirected: Collection[ConntrackEntry] = (),
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
    one of `ours` (then judged as any: a removed container's flow goes).

    `misdirected` (Judging.misdirected): flows DNATed to none of `ours`, but to an
    address host-local now leases to a container that does not serve them; where no
    other tool's rule takes them they are judged as flows to one of `ours`."""
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
        verdict = misroutes(entry, by_key, ours, taken, misdirected)
        if verdict is not None:
            reason, wanted = verdict
            elsewhere = _mapped_on(by_key.get(key, ())) if reason is FlushReason.UNMAPPED else ()
            stale = _stale_wanted(by_key.get(key, ()), entry, wanted)
            doomed.append(Doomed(entry, reason, wanted, elsewhere, stale))
    return doomed


def _mapped_on(mapped: Sequence[Mapping]) -> Tuple[str, ...]:
    """The host IPs `mapped` (an UNMAPPED entry's port's mappings: judge found none
    for its destination) are bound to; empty where nothing maps the port."""
    return tuple(sorted({m.host_ip for m in mapped if m.host_ip is not None}))


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
        if (d.entry.family, packed(d.entry.family, d.entry.reply_src)) in removed
    ]


# (family, host port, DNAT address, DNAT port): where one of the plugin's nftables
# rules sends a UDP host port (routed_flows).
RoutedTarget = Tuple[int, int, str, int]


def dnat_targets(family: int, bodies: Iterable[Any]) -> Set[RoutedTarget]:
    """The RoutedTargets of `family`'s nftables rule `bodies` (nftables.ruleset.RuleBody)
    that DNAT a UDP host port to an address and port."""
    import ipaddress

    from portmapctl.nftables.inventory import dport_values
    from portmapctl.nftables.ruleset import ActionKind

    found: Set[RoutedTarget] = set()
    for body in bodies:
        action, ports = body.action, body.value("udp dport")
        if action.kind is not ActionKind.DNAT or not action.addr or not action.port:
            continue
        address = ipaddress.ip_address(action.addr).compressed
        found.update(
            (family, port, address, action.port) for port in dport_values(ports or "") or ()
        )
    return found


def routed_flows(
    entries: Iterable[ConntrackEntry], targets: Collection[RoutedTarget], local: LocalAddresses
) -> List[ConntrackEntry]:
    """The entries of flows the node routes to another host (to none of its own
    addresses) that were DNATed to exactly one of `targets` on its host port. Only an
    nftables entry without `fib daddr type local` (v1.6/v1.7's, which sends every
    packet of a mapped port there, whatever its destination) takes such a flow to a
    container: the flows to own addresses are judged by plan(), these by this alone."""
    import ipaddress

    def taken(e: ConntrackEntry) -> bool:
        to = (e.family, e.dport, ipaddress.ip_address(e.reply_src).compressed, e.reply_sport)
        return e.dnat and (e.family, e.dst) not in local and to in targets

    return [e for e in entries if taken(e)]


def delete_routed(targets: Collection[RoutedTarget]) -> int:
    """Delete the conntrack entries of the flows the node routes to another host that
    were DNATed to one of `targets` (routed_flows): the number deleted. Whatever
    conntrack raises is the caller's to report."""
    families = sorted({family for family, _port, _addr, _to in targets})
    ports = sorted({port for _family, port, _addr, _to in targets})
    entries = conntrack.list_udp(families, ports)
    return conntrack.delete(routed_flows(entries, targets, local_addresses(families)))


def misroutes(
    entry: ConntrackEntry,
    by_key: ReadOnly[Key, Sequence[Mapping]],
    ours: Optional[Collection[Tuple[int, Optional[bytes]]]] = None,
    taken: Collection[Destination] = (),
    misdirected: Collection[ConntrackEntry] = (),
) -> Optional[Tuple[FlushReason, Tuple[str, ...]]]:
    """(reason, wanted) when the entry misroutes (flush-udp --stale-only deletes it), else
    None; `by_key`: the UDP mappings by (family, host port). plan()'s judgement, and
    list's count of it (one verdict: the count is what the fix deletes)."""
    replier = (entry.family, packed(entry.family, entry.reply_src))
    if _taken_first(entry, ours, taken):
        return None
    key = (entry.family, entry.dport)
    reason, wanted = judge(entry, by_key.get(key, ()))
    if (
        reason is FlushReason.UNMAPPED
        and ours is not None
        and key in by_key
        and replier not in ours
        and entry not in misdirected
    ):
        return None
    return None if reason is None else (reason, wanted)


def _taken_first(
    entry: ConntrackEntry,
    ours: Optional[Collection[Tuple[int, Optional[bytes]]]],
    taken: Collection[Destination],
) -> bool:
    """Whether another tool's rule takes the entry's destination before any mapping
    (misroutes keeps it whatever it went to; FlushResult.kept_taken): a flow to no
    container of the plugin's is that tool's (or, never DNATed, in doubt), and so is
    one DNATed to exactly where that rule sends it, a container of the plugin's on
    another port included (its next datagram goes there too)."""
    if not taken:
        return False
    destination = (entry.family, packed(entry.family, entry.dst), entry.dport)
    if not (taken.holds(destination, entry) if isinstance(taken, Taken) else destination in taken):
        return False
    replier = (entry.family, packed(entry.family, entry.reply_src))
    return (
        ours is None
        or replier not in ours
        or (isinstance(taken, Taken) and taken.sends(destination, entry))
    )


def _order(entry: ConntrackEntry) -> tuple:
    family, dst, src = entry.family, entry.dst, entry.src
    return (
        family,
        entry.dport,
        packed(family, dst) or b"",
        packed(family, src) or b"",
        entry.sport,
    )


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
            warnings = tuple(cni_cache.warnings(attachments, node.options.cache_dirs))
            judging = node_judging(node, tables, attachments)
            mappings = udp_mappings(judging.mappings)
        if node.nft_unusable is not None:
            from portmapctl.ops.check.nft import configured_nft

            configured = configured_nft(attachments)
            if configured:
                # The ports a cached container maps in nftables cannot be told: its live
                # flows would be judged by the rest, called misrouted (exit 3, as gc).
                raise node.nft_unusable.needed_by(configured)
        # (Also another tool's chain in the plugin's tables that was skipped unread.)
        warnings += tuple(node.nft_unread())
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
            e for e in looked_at if any(covers(m, e) for m in own.get((e.family, e.dport), ()))
        ]
    mine = ours((m.family, m.container_ip) for m in mappings)
    astray: Set[ConntrackEntry] = set()
    taken: Collection[Destination] = set()
    if stale_only and judging is not None:
        # A removed container's address is the plugin's too: its flows misroute; so do
        # its flows to its address given to a container that does not serve them.
        mine |= judging.vacated(looked_at, mine, local)
        astray = judging.misdirected(looked_at, mine, local)
        taken = judging.taken(looked_at, local)
    found = plan(
        looked_at,
        keys,
        mappings,
        stale_only=stale_only,
        local=local,
        ours=mine,
        taken=taken,
        misdirected=astray,
    )
    doomed = sorted(found, key=lambda d: _order(d.entry))
    going = {d.entry for d in doomed}
    kept = [e for e in looked_at if e not in going]
    # (Counted apart in the summary: "their container or the host" is neither's.)
    others = {e for e in kept if _taken_first(e, mine, taken)}
    kept_stale = _by_stale_chains((e for e in kept if e not in others), mappings)
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
        kept_stale if stale_only else 0,
        len(others),
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
    if node.options.backend is None or not mappings:
        return mappings
    return [m for m in mappings if backend_of(m) == node.options.backend]


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
    taken = judging.taken(entries, local) if judging is not None and keep is not None else set()
    doomed = plan(
        entries, keys, keep or (), stale_only=keep is not None, local=local, ours=ours, taken=taken
    )
    return conntrack.delete([d.entry for d in doomed])


@dataclass(frozen=True)
class Flows:
    """`list --conntrack` for one UDP mapping: how many entries are under it, and those
    of them that misroute (an old DNAT destination, never DNATed: what flush-udp
    --stale-only deletes). A set, not a count: one entry under two mappings (never
    DNATed, under a shadowed one and its winner) is one flow to flush."""

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


def behind(covering: Sequence[Mapping], entry: ConntrackEntry) -> List[Mapping]:
    """Of the mappings that cover an entry's destination, those it is behind (list
    --conntrack counts it under each): the ones that DNAT to where it went (their
    container's address and port; else its address: an old container port), when one
    does. A flow DNATed to another row's container is not behind this one (a container
    on two networks mapping one port: the node's flow DNATed to the first network's
    address was counted on both rows, one flow read as two). One never DNATed (begun
    before the rules: what --stale-only deletes), or DNATed to an address none of them
    sends to (a gone container's), is behind each of them: it bypasses them all."""
    if not entry.dnat:
        return list(covering)
    replier = packed(entry.family, entry.reply_src)
    exact = [
        m
        for m in covering
        if packed(m.family, m.container_ip) == replier and m.container_port == entry.reply_sport
    ]
    same = exact or [m for m in covering if packed(m.family, m.container_ip) == replier]
    return same or list(covering)


def _target(m: Mapping) -> Tuple[Optional[bytes], int]:
    """Where mapping m DNATs to: its container's address (packed) and port."""
    return packed(m.family, m.container_ip), m.container_port


def _by_stale_chains(entries: Iterable[ConntrackEntry], mappings: Sequence[Mapping]) -> int:
    """How many of `entries` went exactly where only stale mappings that cover them
    DNAT (FlushResult.kept_stale): a leaked chain's flows, not a container's."""
    by_key = _index(mappings)
    found = 0
    for e in entries:
        went = (packed(e.family, e.reply_src), e.reply_sport)
        there = [m for m in by_key.get((e.family, e.dport), ()) if covers(m, e)]
        there = [m for m in there if _target(m) == went] if e.dnat else []
        found += _all_stale(there)
    return found


def _all_stale(mappings: Sequence[Mapping]) -> bool:
    """Whether there are `mappings` and each is a stale chain's (list: `stale`)."""
    return bool(mappings) and all(Status.STALE in m.status for m in mappings)


def count_flows(mappings: Iterable[Mapping], judging: Optional[Judging] = None) -> Counted:
    """`list --conntrack`: the UDP entries per UDP mapping (family, host port, and host
    IP when the mapping has one). An entry counts for the mappings that cover it and
    that it is `behind`: the one that DNATed it to its container, shadowed or not, told
    among every mapping of `judging` (one of the other backend's, not listed, takes it
    from the rows); one never DNATed (or DNATed to none of them), for every one that
    covers it. Only flows to the node's own addresses
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
        taken = judging.taken(entries, local) if judging is not None and entries else set()
        if judging is not None:
            mine |= judging.vacated(entries, mine, local)  # (as flush-udp judges)
        misdirected = judging.misdirected(entries, mine, local) if judging is not None else set()
        for entry in entries:
            key = (entry.family, entry.dport)
            covering = [m for m in by_key[key] if covers(m, entry)]
            astray = misroutes(entry, every, mine, taken, misdirected) is not None
            if not covering:
                if astray:
                    elsewhere.setdefault(key, set()).add(entry)
                continue
            # Behind which, among every mapping of the node (under --backend iptables a
            # flow the nftables rule DNATed to its container is not behind the
            # iptables row listed: it was counted there), told by where they DNAT.
            judged = covering + [m for m in every.get(key, ()) if covers(m, entry)]
            went = {_target(m) for m in behind(judged, entry)}
            for m in (m for m in covering if _target(m) in went):
                counts[m] += 1
                if astray:
                    misrouted.setdefault(m, set()).add(entry)
    return Counted(
        {m: Flows(n, frozenset(misrouted.get(m, ()))) for m, n in counts.items()},
        {key: frozenset(found) for key, found in elsewhere.items()},
    )
