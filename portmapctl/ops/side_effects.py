"""What the plugin does after it writes a container's rules, done for add and for check
--repair: route_localnet on the interface towards the container (IPv4, SNAT on: the
localhost hairpin) and a flush of the UDP conntrack entries of its mapped host ports
(flows begun before the rules, or DNATed to an old destination, would keep going there
until idle). Failures are warnings, as in the plugin.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import (
    TYPE_CHECKING,
    Any,
    Collection,
    Dict,
    FrozenSet,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from portmapctl.core.mapping import MappingConfig
from portmapctl.core.status import FlushReason
from portmapctl.host.routes import route_interfaces

if TYPE_CHECKING:
    from portmapctl.ops.node import Node


def after_setup(
    config: MappingConfig,
    families: Sequence[int],
    flush_udp: bool,
    interfaces: Optional[Dict[str, str]] = None,
    *,
    local_only: bool = False,
    misrouted_only: bool = False,
    node: Optional[Node] = None,
) -> List[str]:
    """The plugin's two side effects; failures are warnings, as in the plugin.
    `interfaces`: route_interfaces of the container's address, looked up already.
    `local_only`: flush only flows to the node's own addresses (flush_keys).
    `misrouted_only`: flush only the flows that misroute (flush_misrouted, judged
    against `node`'s mappings: an add that wrote nothing)."""
    if not misrouted_only:
        return after_setup_many(
            [(config, families)], flush_udp, interfaces, local_only=local_only, node=node
        )
    warnings = after_setup_many([(config, families)], False, interfaces)
    return warnings + (flush_misrouted(config, families, node) if flush_udp else [])


# The flows of a mapped port that do not reach its container (flush-udp's reasons).
_MISROUTED = (FlushReason.NOT_DNATED, FlushReason.OLD_DESTINATION)


def flush_misrouted(
    config: MappingConfig, families: Sequence[int], node: Optional[Node] = None
) -> List[str]:
    """Delete the UDP conntrack entries of the mapping's host ports (in `families`)
    that misroute: never DNATed (begun before its rules, or while they were missing)
    or DNATed elsewhere (an old container's address or port), as flush-udp
    --stale-only judges them, against this mapping and, for what would go, against
    every mapping of `node` too; only flows to the node's own addresses (a forwarded
    flow never met the mapping). Those DNATed to this container stay (live, a reply
    may be on its way), and so do those DNATed to where the port goes when another
    container or another tool's rule takes it first (this one is shadowed). What an
    add that wrote nothing flushes, and an add stopped once its write went in
    (cli/add_run.py: no node, this mapping alone). Warnings, as after_setup's."""
    if not any(p.protocol == "udp" for p in config.ports) or no_conntrack_entries():
        return []  # (the usual re-run: nothing imported, nothing dumped)
    from portmapctl.ops.add_others import as_rows

    mine = [row for row in as_rows(config, families) if row.protocol == "udp"]
    keys = {(row.family, row.host_port) for row in mine}
    if not keys:
        return []
    try:
        from portmapctl.host import conntrack
        from portmapctl.host.addresses import local_addresses
        from portmapctl.ops.flush_udp import plan  # (only with entries to judge)

        wanted = sorted({family for family, _ in keys})
        entries = conntrack.list_udp(wanted, sorted({port for _, port in keys}))
        if not entries:
            return []
        local = local_addresses(wanted)

        def misrouted(found: Sequence[Any], judged: Sequence[Any], **judging: Any) -> List[Any]:
            doomed = plan(found, keys, judged, stale_only=True, local=local, **judging)
            # (UNMAPPED: DNATed, to an address nothing maps the port on: not this add's.)
            return [d.entry for d in doomed if d.reason in _MISROUTED]

        # What reaches this container stays; of the rest, what reaches the port's
        # winner too (another container, when this one is shadowed), or another tool's
        # rule ahead of the plugin's: the node's mappings and tables are read only when
        # something would go (a whole table at 5,000).
        going = misrouted(entries, mine)
        if going and node is not None:
            going = misrouted_on_node(node, going, keys, local)
        conntrack.delete(going)
    except Exception as err:  # noqa: BLE001 - as after_setup_many's flush
        return [not_flushed(keys, err)]
    return []


def misrouted_on_node(
    node: Node, entries: Sequence[Any], keys: Collection[Key], local: Any
) -> List[Any]:
    """Of these entries (to `keys`, flows to the node's own addresses `local`), those
    that misroute as flush-udp --stale-only judges them against every mapping of
    `node` and the rules that take a destination first (never DNATed, or DNATed
    elsewhere: `_MISROUTED`); those reaching the container or tool that takes their
    destination stay. The node's tables are read here, only when something would go."""
    from portmapctl.ops.flow_owners import node_judging
    from portmapctl.ops.flush_udp import ours, plan, udp_mappings

    found = node_judging(node, node.read(), None)
    judged = udp_mappings(found.mappings)
    mapped = ours((m.family, m.container_ip) for m in judged)
    doomed = plan(
        entries,
        keys,
        judged,
        stale_only=True,
        local=local,
        ours=mapped,
        taken=found.taken(entries, local),
    )
    return [d.entry for d in doomed if d.reason in _MISROUTED]


def not_flushed(keys: Collection[Tuple[int, int]], err: Exception) -> str:
    ports = sorted({port for _, port in keys})
    shown = ", ".join(str(p) for p in ports[:10]) + (", ..." if len(ports) > 10 else "")
    return f"could not flush UDP conntrack entries for ports [{shown}]: {err}"


def after_setup_many(
    done: Sequence[Tuple[MappingConfig, Sequence[int]]],
    flush_udp: bool,
    interfaces: Optional[Dict[str, str]] = None,
    *,
    local_only: bool = False,
    node: Optional[Node] = None,
) -> List[str]:
    """after_setup for many containers at once (`check --repair`): every route lookup
    on one rtnetlink socket, route_localnet written once per interface, and one conntrack
    dump and delete for every UDP port. 5,000 containers one by one took a process and
    a netlink dump each (60-88 s of repair); this is one of each. `node` (with
    local_only): the repaired node, whose mappings and other tools' rules judge what
    would go (flush_keys)."""
    warnings: List[str] = []
    addresses = []
    for config, families in done:
        address = config.address(4)
        if config.snat and 4 in families and address is not None:
            addresses.append(str(address.ip))
    if addresses and interfaces is None:
        try:
            interfaces = route_interfaces(addresses)
        except OSError as err:
            interfaces = {}
            warnings.append(
                f"could not set route_localnet: cannot ask the kernel's routes: {err.strerror or err}"
            )
    if addresses and interfaces is not None:
        for interface in sorted(set(interfaces.values())):
            try:
                _route_localnet(interface)
            except OSError as err:
                towards = ", ".join(a for a, i in interfaces.items() if i == interface)
                warnings.append(f"could not set route_localnet towards {towards}: {err}")
    keys: Union[Collection[Key], Dict[Key, Reach]]
    if local_only:  # no plugin ADD: only what the re-created rules take
        keys = taken_by(done)
    else:
        # The plugin's ADD flushes every UDP port in each family of the container, also
        # one bound to a host IP of the other family: it has no rule there, so that
        # flush moves no flow onto this container and deleted only others' (the live
        # flows another container's `*:PORT` had DNATed). Only the families it maps.
        keys = {
            (family, p.host_port)
            for config, families in done
            for family in families
            for p in config.ports
            if p.protocol == "udp" and p.applies_to(family)
        }
    if flush_udp and keys:
        try:
            flush_keys(keys, local_only=local_only, node=node if local_only else None)
        except Exception as err:  # noqa: BLE001 - the plugin only logs this too
            warnings.append(not_flushed(keys, err))
    return warnings


Key = Tuple[int, int]  # (family, host port)


@dataclass(frozen=True)
class Masquerade:
    """Whose flows to a container the plugin's rules masquerade (SNAT on): hairpin ones
    from its network (iptables marks the whole subnet, nftables the container's own
    address: the subnet errs towards flushing), IPv4 ones from 127.0.0.1, and with
    masqAll every one."""

    network: Union[IPv4Network, IPv6Network]
    every_source: bool = False

    def wants(self, source: str) -> bool:
        if self.every_source:
            return True
        try:
            address = ip_address(source)
        except ValueError:
            return True  # (no address: judged as wanting it, so the flow goes)
        return address in self.network or address == _LOCALHOST


_LOCALHOST = ip_address("127.0.0.1")


@dataclass(frozen=True)
class Reach:
    """What the re-created rules of one (family, UDP host port) take, and where they
    send it (check --repair's flush: taken_by)."""

    host_ips: Optional[FrozenSet[str]]  # the addresses they take; None: every one
    # (container address, container port) -> whose flows there are masqueraded (None:
    # nobody's, SNAT off)
    targets: Mapping[Tuple[str, int], Optional[Masquerade]]


def taken_by(done: Sequence[Tuple[MappingConfig, Sequence[int]]]) -> Dict[Key, Reach]:
    """The UDP destinations the rules of these configs take, per (family, host port):
    a port bound to a host IP takes that address alone, and nothing in the other
    family (the plugin writes no rule there); and the container addresses and ports
    they DNAT to. check --repair flushed every flow to the port in every family of the
    container: another container's live flows on another host IP of the port (their
    replies then went out un-NATed), the host's own, and the live flows of the very
    mapping it re-created (a missing tcp entry rule cost the udp port its flows)."""
    host_ips: Dict[Key, Optional[FrozenSet[str]]] = {}
    targets: Dict[Key, Dict[Tuple[str, int], Optional[Masquerade]]] = {}
    for config, families in done:
        for family in families:
            address = config.address(family)
            masquerade = None
            if config.snat and address is not None:
                masquerade = Masquerade(address.network, config.masq_all)
            for p in config.ports:
                if address is None or p.protocol != "udp" or not p.applies_to(family):
                    continue
                key, host_ip = (family, p.host_port), p.host_ip_for_rule()
                ips = host_ips.get(key, frozenset())
                host_ips[key] = None if host_ip is None or ips is None else ips | {host_ip}
                sent = targets.setdefault(key, {})
                target = (str(address.ip), p.container_port)
                # (two configs sending the port to one place: the masquerading one wins)
                sent[target] = sent.get(target) or masquerade
    return {key: Reach(ips, targets[key]) for key, ips in host_ips.items()}


def flush_keys(
    keys: Union[Collection[Key], Dict[Key, Reach]],
    *,
    local_only: bool = False,
    node: Optional[Node] = None,
) -> int:
    """Delete the UDP conntrack entries to these (family, host port) pairs: one dump and
    one delete for all of them, whatever their number. (Not through ops.flush_udp:
    that imports the inventory, which add does not need.)

    The plugin's ADD deletes every entry under the port; with `local_only` (check
    --repair, which is no plugin ADD) only flows to the node's own addresses go: a
    forwarded flow (a container's DNS query outside, a client of a container's own
    address) never met a mapping (SPEC §3 flush-udp). Where `keys` say what the rules
    reach (taken_by), only the flows to the addresses they take go, and of those not
    the ones DNATed where they send them (live: the next datagram goes there anyway).
    With `node` (the repaired node, local_only), the rest is judged against its every
    mapping and the rules that take a destination first (misrouted_on_node): a flow of
    the container that takes the port first (the repaired one is shadowed) or of
    another tool's rule ahead of the plugin's is live, and was deleted."""
    if no_conntrack_entries():
        return 0
    from portmapctl.host import conntrack  # imported only when there is work

    entries = conntrack.list_udp(
        sorted({family for family, _ in keys}), sorted({port for _, port in keys})
    )
    mine = [e for e in entries if (e.family, e.dport) in keys]
    local = local_addresses_of(keys) if local_only or isinstance(keys, dict) else None
    if local_only:
        mine = [e for e in mine if (e.family, e.dst) in local]
    if isinstance(keys, dict):
        # Compared packed (any spelling of an address), each address packed once.
        from portmapctl.core.mapping import loopback

        packed = conntrack.packed
        taken = {
            key: None if r.host_ips is None else {packed(key[0], ip) for ip in r.host_ips}
            for key, r in keys.items()
        }
        sent = {
            key: {(packed(key[0], a), n): m for (a, n), m in r.targets.items()}
            for key, r in keys.items()
        }

        def own_source(e: Any) -> bool:
            return (e.family, e.src) in local and not loopback(e.src)

        def goes(e: Any) -> bool:
            key = (e.family, e.dport)
            to, reached = taken[key], (packed(e.family, e.reply_src), e.reply_sport)
            if to is not None and packed(e.family, e.dst) not in to:
                return False
            if reached not in sent[key]:
                return True
            # It reaches its container: live, unless it began while the masquerade was
            # missing and lacks one it needs (a hairpin or localhost flow whose replies
            # bypass the node): kept, it stays broken for as long as it is busy. One
            # the node sent from its own address (not loopback) needs none: the replies
            # come back to the node, and a masquerade from its bridge address changes
            # nothing (the entry looks the same, masqueraded or not).
            masquerade = sent[key][reached]
            unmasqueraded = packed(e.family, e.reply_dst) == packed(e.family, e.src)
            if masquerade is None or not unmasqueraded or not masquerade.wants(e.src):
                return False
            return not own_source(e)

        mine = [e for e in mine if goes(e)]
        if node is not None and local_only:
            # Those reaching the repaired container go for the masquerade they lack;
            # the others only if they misroute on the node as it now is.
            elsewhere = [
                e
                for e in mine
                if (packed(e.family, e.reply_src), e.reply_sport) not in sent[(e.family, e.dport)]
            ]
            if elsewhere:
                kept = set(elsewhere) - set(misrouted_on_node(node, elsewhere, keys, local))
                mine = [e for e in mine if e not in kept]
    return conntrack.delete(mine)


def local_addresses_of(keys: Collection[Key]) -> Any:
    """The node's own addresses in the families of `keys`."""
    from portmapctl.host.addresses import local_addresses

    return local_addresses(sorted({family for family, _ in keys}))


def no_conntrack_entries() -> bool:
    """Whether this namespace's conntrack table is empty (nf_conntrack_count is 0): then
    there is nothing to flush, and the dump is spared. A dump walks the kernel's whole
    conntrack hash, every namespace's buckets, whatever this one holds: 4-5 ms each
    here with no entry at all. Entries made after this read came after the restore,
    through the new rules: they are the ones a flush must keep."""
    try:
        with open("/proc/sys/net/netfilter/nf_conntrack_count") as count:
            return count.read().strip() == "0"
    except (OSError, ValueError):
        return False  # cannot tell (no conntrack module?): the dump says what it finds


def _route_localnet(interface: str) -> None:
    """Let 127/8 cross a routing boundary towards the container (localhost hairpin)."""
    if "/" in interface or interface in (".", ".."):
        return
    with open(f"/proc/sys/net/ipv4/conf/{interface}/route_localnet", "w") as knob:
        knob.write("1")
