"""IPVS, kube-proxy's IPVS mode: the node's addresses and ports its virtual services take.

kube-proxy (--proxy-mode ipvs) puts every ClusterIP, external and load-balancer IP on
the dummy interface kube-ipvs0 (so they are the node's own: the plugin's `--dst-type
LOCAL` entry is entered for them) and makes an IPVS virtual service of each
address:port, NodePorts on the node's addresses too. IPVS sends a flow to a real
server at the LOCAL_IN hook, after nat PREROUTING, with no nat rule anywhere, and
leaves its conntrack entry as a DNAT would: the original tuple CLIENT -> VIP:PORT
untouched, the reply from REAL_SERVER:PORT (net/netfilter/ipvs/ip_vs_nfct.c,
ip_vs_update_conntrack: nf_conntrack_alter_reply of the reply tuple alone, masq
forwarding). No rule the plugin's flows are judged by shows it: read here.

/proc/net/ip_vs (per namespace, there while the ip_vs module is loaded) lists the
virtual services as ip_vs_ctl.c's ip_vs_info_seq_show prints them:

    UDP  0A60000A:1BBC rr
      -> 0A4D0003:1BBC      Masq    1      0          0
    UDP  [fd00:0000:0000:0000:0000:0000:0000:000a]:0035 rr

(IPv4 as the address's 32 bits in hex, IPv6 in brackets, ports in hex); `FWM` services
(a firewall mark) name no address.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Iterable, Optional, Set, Tuple
from typing import Mapping as ReadOnly

from portmapctl.host.conntrack import packed

KUBE_IPVS = "kube-ipvs0"
# (family, packed address, port)
Service = Tuple[int, bytes, int]
# (packed address, port): a real server
Server = Tuple[bytes, int]
_SERVICES = "/proc/thread-self/net/ip_vs"  # (this thread's namespace: --netns)


@dataclass(frozen=True)
class Ipvs:
    """What IPVS takes: the addresses on kube-ipvs0 (every port of them: kube-proxy's
    service addresses) and the UDP virtual services with their real servers."""

    addresses: FrozenSet[Tuple[int, bytes]] = frozenset()
    services: ReadOnly[Service, FrozenSet[Server]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.addresses or self.services)

    def takes(self, family: int, address: Optional[bytes], port: int) -> bool:
        """Whether a UDP flow to address:port may be IPVS's to send."""
        return address is not None and (
            (family, address) in self.addresses or (family, address, port) in self.services
        )


def udp_services(text: str) -> Dict[Service, FrozenSet[Server]]:
    """/proc/net/ip_vs's UDP virtual services, each with its real servers."""
    found: Dict[Service, Set[Server]] = {}
    current: Optional[Set[Server]] = None
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "->":
            server = _endpoint(words[1])
            if current is not None and server is not None:
                current.add((server[1], server[2]))
            continue
        current = None
        if len(words) >= 2 and words[0] == "UDP":
            service = _endpoint(words[1])
            if service is not None:
                current = found.setdefault(service, set())
    return {service: frozenset(servers) for service, servers in found.items()}


def _endpoint(text: str) -> Optional[Service]:
    """`0A60000A:1BBC` or `[fd00:...:000a]:0035` as (family, packed address, port)."""
    address, _, port = text.rpartition(":")
    try:
        number = int(port, 16)
        if address.startswith("[") and address.endswith("]"):
            return 6, socket.inet_pton(socket.AF_INET6, address[1:-1]), number
        if len(address) == 8:
            return 4, bytes.fromhex(address), number
    except (ValueError, OSError):
        pass
    return None  # (a line of another shape: nothing told)


def read_ipvs(families: Iterable[int]) -> Ipvs:
    """What IPVS takes in the calling thread's namespace, of these families: nothing
    where there is no kube-ipvs0 and no ip_vs module (most nodes)."""
    from portmapctl.host.addresses import interface_addresses

    wanted = sorted(set(families))
    try:
        on = interface_addresses(wanted, KUBE_IPVS)
    except OSError:
        on = frozenset()
    addresses = set()
    for text in on:
        family = 6 if ":" in text else 4
        address = packed(family, text)
        if address is not None:
            addresses.add((family, address))
    try:
        with open(_SERVICES) as listing:
            services = udp_services(listing.read())
    except OSError:
        services = {}  # (no ip_vs module: no virtual service)
    services = {key: servers for key, servers in services.items() if key[0] in wanted}
    return Ipvs(frozenset(addresses), services)
