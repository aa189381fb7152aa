"""host-local's leases: whether the address a cache entry names is still reserved for
its container, read from the IPAM plugin's own files, no privilege needed.

host-local (the IPAM of podman's CNI networks, of bridge and ptp configs, of flannel's
bridge: k3s's default network) reserves an address by creating
`DATADIR/NETWORK/ADDRESS` holding `ID\\r\\nIFNAME` (before v0.7 the ID alone), and
removes it on DEL. A network list's DEL runs the main plugin's DEL, which deletes the
container's interface and has host-local give the address back (bridge after the
interface went, ptp before), before libcni removes the cache entry. So an entry whose
lease is gone belongs to a container being torn down (or whose DEL failed there), and
one whose lease names another container is stale: its address is someone else's.
check --repair makes no rules for either (ops/check/torn_down.TornDownLook).

Only what the files say plainly counts: a data directory that is not there or cannot
be read, a lease that cannot be read or is empty (being written) says nothing. Only a
cached config that names host-local is judged, or flannel's, which makes its bridge's
host-local section from its own `ipam` (host-local where it names none). The data
directory is the one the config names, else PORTMAPCTL_HOST_LOCAL_DIR's, else
host-local's default: it does not follow --cni-cache-dir (a cache copied from another
node is judged by this node's leases where its config names none: give
PORTMAPCTL_HOST_LOCAL_DIR).

An address of the plugin's networks is given back (flush-udp --stale-only's removed
container) only where no lease directory of the node has a lease for it: the mapped
networks' own, and every other under the data directories in use (host-local's default,
each one a cached config names), whose networks' subnets may overlap (one with no
portmap, a Multus delegate's); one that cannot be listed keeps every address.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from typing import Any, Dict, FrozenSet, Iterable, Iterator, List, Optional, Tuple, Union
from typing import Mapping as ReadOnly

from portmapctl.cni.config import as_handed, go_field
from portmapctl.core.mapping import MappingConfig
from portmapctl.host import settings

HOST_LOCAL = "host-local"
FLANNEL = "flannel"
# What a lease file can hold at most: a container ID and an interface name.
_MAX_LEASE_BYTES = 4096


class LeaseState(str, Enum):
    HELD = "held"  # reserved for this container
    GIVEN_BACK = "given back"  # no lease for the address: host-local's DEL ran
    TAKEN = "taken"  # reserved for another container
    UNKNOWN = "unknown"  # nothing to tell by

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Lease:
    """What host-local's lease file at `path` says of one address."""

    state: LeaseState
    path: str
    holder: Optional[str] = None  # the container ID of a TAKEN lease


def _host_local_ipam(conf: Any) -> Optional[dict]:
    """The `ipam` section host-local gets from the cached network config `conf` (a
    conflist, or one plugin's config): the first plugin's with an `ipam` section, when
    it names host-local. flannel's config counts: it hands its delegate a host-local
    section made from its own `ipam`."""
    plugins = conf.get("plugins") if isinstance(conf, dict) else None
    for plugin in plugins if isinstance(plugins, list) else [conf]:
        plugin = as_handed(plugin)  # (as libcni handed it on: keys sorted)
        ipam = go_field(plugin, "ipam")
        if go_field(plugin, "type") == FLANNEL:
            # flannel gives its delegate (bridge) its own `ipam`, of type host-local
            # where it names none (getDelegateIPAM: hasKey, the exact spelling); its
            # own `dataDir` is for its scratch configs, not leases.
            ipam = dict(ipam) if isinstance(ipam, dict) else {}
            ipam.setdefault("type", HOST_LOCAL)
        if not isinstance(ipam, dict) or not go_field(ipam, "type"):
            continue
        return ipam if go_field(ipam, "type") == HOST_LOCAL else None
    return None


def host_local_data_dir(conf: Any) -> Optional[str]:
    """Where host-local keeps its leases (one directory per network below it) when the
    cached network config `conf` has its main plugin use host-local (_host_local_ipam).
    None for any other IPAM, and for a data directory that is no absolute path."""
    ipam = _host_local_ipam(conf)
    if ipam is None:
        return None
    data_dir = go_field(ipam, "dataDir")
    if not isinstance(data_dir, str) or not data_dir:
        return settings.HOST_LOCAL_DIR.value()
    return data_dir if os.path.isabs(data_dir) else None


Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
Subnet = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


@dataclass(frozen=True)
class HostRange:
    """One range host-local hands addresses out of, as its Range.Canonicalize fills it
    in: `first` to `last` (rangeStart, default the subnet's .1; rangeEnd, default its
    last address, an IPv4 subnet's broadcast address not), `gateway` (default .1; it
    may lie outside the subnet) never handed out."""

    subnet: Subnet
    first: Address
    last: Address
    gateway: Address

    @classmethod
    def of(
        cls, subnet: Subnet, start: Any = None, end: Any = None, gateway: Any = None
    ) -> HostRange:
        """ValueError for what host-local would not take either."""
        if any(a is not None and not isinstance(a, str) for a in (start, end, gateway)):
            raise ValueError("an address of a range that is no string")
        found = [ipaddress.ip_address(a) if a else None for a in (start, end, gateway)]
        # Range.Canonicalize refuses a rangeStart/rangeEnd outside the subnet, not a
        # gateway there (it takes it as given; the subnet's .1 is then handed out).
        if any(a is not None and a not in subnet for a in found[:2]):
            raise ValueError("a range's start or end outside its subnet")
        after = subnet.network_address + 1
        final = subnet.broadcast_address - (1 if subnet.version == 4 else 0)
        return cls(subnet, found[0] or after, found[1] or final, found[2] or after)

    def hands_out(self, address: Address) -> bool:
        return (
            address in self.subnet
            and self.first <= address <= self.last
            and address != self.gateway
        )


def host_local_ranges(conf: Any) -> Optional[Tuple[HostRange, ...]]:
    """The ranges host-local hands addresses out of under the cached network config
    `conf` (its `ranges` and the older top-level `subnet`, `rangeStart`, `rangeEnd`,
    `gateway`), every range set's; () where the config names none (flannel's come from
    its subnet.env at ADD: the attachments' subnets stand for them); None where they
    cannot be read (nothing told of its addresses)."""
    ipam = _host_local_ipam(conf)
    if ipam is None:
        return ()
    sets = go_field(ipam, "ranges") or []
    if go_field(ipam, "subnet"):
        sets = [[ipam], *sets] if isinstance(sets, list) else sets  # (host-local: first)
    found = []
    try:
        for ranges in sets:
            for r in ranges:
                subnet = ipaddress.ip_network(go_field(r, "subnet"), strict=False)
                fields = (go_field(r, key) for key in ("rangeStart", "rangeEnd", "gateway"))
                found.append(HostRange.of(subnet, *fields))
    except (TypeError, ValueError, AttributeError):
        return None
    return tuple(found)


def lease_of(directory: str, address: str, container_id: str) -> Lease:
    """What host-local's `directory` says of `address` (as Go prints it, which is
    Python's compressed form) for `container_id`."""
    path = os.path.join(directory, address)
    if not os.path.isdir(directory):
        return Lease(LeaseState.UNKNOWN, path)
    try:
        # Looked at before it is opened: a device there could act on open.
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return Lease(LeaseState.UNKNOWN, path)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return Lease(LeaseState.GIVEN_BACK, path)
    except OSError:
        return Lease(LeaseState.UNKNOWN, path)
    try:
        if not _regular(fd):
            return Lease(LeaseState.UNKNOWN, path)
        data = os.read(fd, _MAX_LEASE_BYTES + 1)
    except OSError:
        return Lease(LeaseState.UNKNOWN, path)
    finally:
        os.close(fd)
    text = data.decode("utf-8", "replace")
    holder = text.splitlines()[0].strip() if text.strip() else ""
    if not holder or len(data) > _MAX_LEASE_BYTES:
        return Lease(LeaseState.UNKNOWN, path)  # (being written, or not a lease)
    if holder == container_id.strip():
        return Lease(LeaseState.HELD, path)
    return Lease(LeaseState.TAKEN, path, holder)


def _regular(fd: int) -> bool:
    return stat.S_ISREG(os.fstat(fd).st_mode)


# What a cached container asks of the plugin on one network: its attachments' configs
# (None: one with no ports); None where an entry of its could not be read (not known).
Asks = Optional[Tuple[Optional[MappingConfig], ...]]


@dataclass(frozen=True)
class LeasedNetwork:
    """A range of one of the plugin's networks on the node, whose addresses host-local
    hands out, and the directory of its leases (a cached attachment's `leases`); or
    (`subnet` None) another lease directory of the node, whose ranges are not read: a
    lease there holds its address, whatever the plugin's networks say of it."""

    subnet: Optional[Subnet]
    leases: str
    # The network's cached containers by ID (a lease names its holder so): what each
    # asks of the plugin, which says where the plugin sends flows to its address.
    tenants: ReadOnly[str, Asks] = field(default_factory=dict, compare=False)
    # Which addresses of the subnet host-local hands out (None: the subnet's, by
    # host-local's defaults); one outside it has no lease for no container's leaving.
    handed: Optional[HostRange] = None
    # False where the network's ranges cannot be read (`subnet` is then an attachment's):
    # any address of it may be handed out, so it tells nothing of one (in doubt).
    known: bool = True

    def hands_out(self, address: Address) -> bool:
        handed = self.handed or HostRange.of(self.subnet)
        return handed.hands_out(address)

    @cached_property
    def listed(self) -> Optional[FrozenSet[str]]:
        """The names in the lease directory, listed once, when first asked (a node's
        flows ask of many addresses: one listing, not a look-up each); None where it
        cannot be listed. One gone since holds none."""
        try:
            return frozenset(os.listdir(self.leases))
        except (FileNotFoundError, NotADirectoryError):
            return frozenset()
        except OSError:
            return None


def leased_networks(attachments: Optional[Iterable[Any]]) -> Tuple[LeasedNetwork, ...]:
    """The ranges of the cached attachments' networks (cni/cache.Attachment) that have
    a lease directory: a mapping's, on a network of host-local's. Each once, with the
    cached containers of its network (DATADIR/NETWORK: the directory names the
    network). Ranges the config names (Attachment.ranges), else the subnets of the
    attachments' addresses; those of a network whose ranges cannot be read too, not
    `known`: an address there is in doubt, whatever another network says of it. Then
    every other lease directory under the data directories in use (_other_leases)."""
    attachments = tuple(attachments or ())
    found: dict = {}
    for attachment in attachments:
        if attachment.leases and attachment.mapping is not None and not attachment.problem:
            for handed in attachment.ranges or ():
                found.setdefault((handed.subnet, attachment.leases, handed, True), None)
            known = attachment.ranges is not None
            for address in () if attachment.ranges else attachment.mapping.addresses:
                found.setdefault((address.network, attachment.leases, None, known), None)
    if not found:
        return ()
    asks: Dict[Tuple[str, str], Optional[List[Optional[MappingConfig]]]] = {}
    for attachment in attachments:
        key = (attachment.network, attachment.container_id)
        if attachment.problem:
            asks[key] = None  # (one reading of an unreadable entry's name: not known)
        elif asks.get(key, []) is not None:
            asks.setdefault(key, []).append(attachment.mapping)
    by_network: Dict[str, Dict[str, Asks]] = {}
    for (network, container_id), configs in asks.items():
        held = tuple(configs) if configs is not None else None
        by_network.setdefault(network, {})[container_id] = held
    read = frozenset(os.path.normpath(leases) for _, leases, _, _ in found)
    for leases, known in _other_leases(attachments, read):
        found.setdefault((None, leases, None, known), None)
    return tuple(
        LeasedNetwork(subnet, leases, by_network.get(os.path.basename(leases), {}), handed, known)
        for subnet, leases, handed, known in found
    )


def _other_leases(attachments: Iterable[Any], read: FrozenSet[str]) -> Iterator[Tuple[str, bool]]:
    """The lease directories (DATADIR/NETWORK) other than `read` under every data
    directory in use: host-local's default and each a cached config of host-local's
    names, ports or none (Attachment.data_dir). A network none of whose cached
    containers maps a port (or cached nowhere portmapctl reads: a Multus delegate's)
    may lease the plugin's networks' addresses too, where subnets overlap. One listing
    of each data directory, no lease read here; with `known` False, one that cannot be
    listed: any address may be leased there (in doubt). One not there holds none."""
    data_dirs = {settings.HOST_LOCAL_DIR.value()}
    data_dirs.update(a.data_dir for a in attachments if getattr(a, "data_dir", None))
    for data_dir in sorted({os.path.normpath(d) for d in data_dirs}):
        try:
            with os.scandir(data_dir) as listed:
                found = sorted(e.path for e in listed if e.is_dir() and e.path not in read)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError:
            yield data_dir, False
            continue
        for leases in found:
            yield leases, True


def _leases_at(
    networks: Iterable[LeasedNetwork], address: str
) -> Iterator[Tuple[LeasedNetwork, Lease]]:
    """What host-local says of `address` in each of `networks` that hands it out (one
    whose ranges are not known: nothing, UNKNOWN), and in each other lease directory
    that has a lease for it or cannot be listed."""
    try:
        found = ipaddress.ip_address(address)
    except ValueError:
        return
    for network in networks:
        if network.subnet is None:
            # Its ranges not read: no lease there tells nothing, one is read; one that
            # cannot be listed may hold any address (in doubt).
            listed = network.listed if network.known else None
            if listed is None:
                yield network, Lease(LeaseState.UNKNOWN, network.leases)
            elif found.compressed in listed:
                yield network, lease_of(network.leases, found.compressed, "")
        elif found not in network.subnet:
            continue
        elif not network.known:
            yield network, Lease(LeaseState.UNKNOWN, os.path.join(network.leases, found.compressed))
        elif network.hands_out(found):
            yield network, lease_of(network.leases, found.compressed, "")


def given_back(networks: Iterable[LeasedNetwork], address: str) -> bool:
    """Whether `address` lies in one of `networks` and host-local holds no lease for it
    in any of them that hands it out: no container has it now (a removed one's: its DEL
    gave the lease back). Networks whose subnets overlap each lease it on their own: a
    lease held in one (another network's live container, in any lease directory of the
    node, a network with no mapping's too), a directory that cannot be read, ranges
    not known, an address of no such subnet: False (nothing tells)."""
    states = [lease.state for _, lease in _leases_at(networks, address)]
    return bool(states) and all(state is LeaseState.GIVEN_BACK for state in states)


def holders(networks: Iterable[LeasedNetwork], address: str) -> Tuple[Tuple[Asks, ...], ...]:
    """What the containers host-local leases `address` to ask of the plugin, one Asks
    per network of `networks` that hands it out (its holder's there, None where no
    cache entry of that network names the holder: one being added, say; a lease in
    another lease directory of the node counts so). Empty unless every one of those
    networks leases it to a container: given back, not known (ranges too, a lease
    directory that cannot be listed), an address of no such subnet tell nothing of a
    holder."""
    found = []
    for network, lease in _leases_at(networks, address):
        if lease.state is not LeaseState.TAKEN or lease.holder is None:
            return ()
        found.append(network.tenants.get(lease.holder))
    return tuple(found)
