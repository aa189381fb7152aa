"""One rule of another nftables table's nat chain, read for what it does to the
packets the plugin's entry takes (nftables/foreign.py walks the chains with it): its
protocol, the destination ports it covers and its verdict, or None where a condition
on it cannot be judged for every such packet (then it takes nothing). `partial` reads
such a rule as if those conditions held (what it may take); `element` one element of
a verdict map (kube-proxy's NodePorts).
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Tuple

from portmapctl.iptables.foreign import Ranges, intersect

# What decides a new connection's NAT at this hook (or ends the packet): a `dnat`, a
# `redirect`, a `drop`. An `accept` only leaves its table: the kernel then calls the
# next nat chain at the hook point (nf_nat_inet_fn), the plugin's included.
TAKES = frozenset({"dnat", "redirect", "drop"})
LEAVES = "accept"
PROTOCOLS = frozenset({"tcp", "udp", "sctp"})


class ReadRule(NamedTuple):
    proto: Optional[str]
    ports: Ranges
    verdict: str  # dnat, redirect, accept, jump, goto, return, vmap, "" (none)
    target: Optional[str]  # a chain; for vmap the map: `@name` or its inline elements
    elements: Any = None


_NFPROTO_NAMES = {"ipv4": 4, "ipv6": 6}
_NAT_FAMILIES = {"ip": 4, "ip6": 6}


def conditions(
    exprs: Iterable[Any],
    family: int = 4,
    sets: Optional[Dict[str, Any]] = None,
    dest: Optional[str] = None,
) -> Optional[ReadRule]:
    """The rule's protocol, ports and verdict, or None when a condition is not benign.
    `sets`: the table's named port sets (`@name` -> an anonymous set of its elements).
    `dest`: the host IP the packets are for (None: any of the node's not loopback)."""
    proto: Optional[str] = None
    ports: Ranges = None
    for expr in exprs:
        if not isinstance(expr, dict) or len(expr) != 1:
            return None
        ((kind, value),) = expr.items()
        if kind == "counter":
            continue
        if kind in TAKES or kind in ("return", LEAVES):
            nat_family = value.get("family") if isinstance(value, dict) else None
            if _NAT_FAMILIES.get(str(nat_family), family) != family:
                # `dnat ip to` in an inet table leaves IPv6 packets alone.
                return ReadRule(proto, ports, "", None)
            mapped = _mapped(value)
            if mapped is not None:
                # A packet whose port the map has no value for goes on untouched.
                return _mapped_rule(proto, ports, kind, mapped, sets)
            return ReadRule(proto, ports, kind, None)
        if kind in ("jump", "goto"):
            target = value.get("target") if isinstance(value, dict) else None
            return ReadRule(proto, ports, kind, str(target) if target else None)
        if kind == "vmap":
            return _vmap_rule(proto, ports, value)
        if kind == "match" and _nfproto_match(value) is not None:
            if _nfproto_match(value) != family:
                return ReadRule(proto, (), "", None)  # the other family's rule
            continue
        holds = _daddr_holds(value, family, dest, sets) if kind == "match" else None
        if holds is not None:
            # (kube-proxy's NodePorts: `ip daddr != 127.0.0.0/8`; netavark's mapping on
            # one host IP: `ip daddr 192.168.5.5`.)
            if not holds:
                return ReadRule(proto, (), "", None)  # matches none of the walk's packets
            continue
        if kind != "match" or not isinstance(value, dict) or value.get("op") not in ("==", "in"):
            return None
        left, right = value.get("left"), value.get("right")
        if not isinstance(left, dict):
            return None
        payload, meta, fib = left.get("payload"), left.get("meta"), left.get("fib")
        if isinstance(payload, dict) and payload.get("field") == "dport":
            protocol = payload.get("protocol")
            if protocol in PROTOCOLS:
                if proto is not None and proto != protocol:
                    return ReadRule(proto, (), "", None)  # matches no packet
                proto = str(protocol)
            elif protocol != "th":
                return None
            if isinstance(right, str) and sets is not None:
                right = sets.get(right, right)
            found = _ranges(right)
            if found is None:
                return None
            ports = intersect(ports, found)
        elif isinstance(meta, dict) and meta.get("key") == "l4proto" and right in PROTOCOLS:
            if proto is not None and proto != right:
                return ReadRule(proto, (), "", None)
            proto = str(right)
        elif (
            isinstance(fib, dict)
            and fib.get("result") == "type"
            and fib.get("flags") == ["daddr"]
            and right == "local"
        ):
            continue  # the plugin's entry matches only local destinations too
        else:
            return None
    return ReadRule(proto, ports, "", None)


_VERDICTS = TAKES | {LEAVES, "return", "jump", "goto", "vmap", "counter"}


def partial(
    exprs: Iterable[Any], family: int, sets: Optional[Dict[str, Any]], dest: Optional[str] = None
) -> Optional[ReadRule]:
    """A rule `conditions` cannot judge, read as if the conditions it cannot judge
    held (its protocol, ports and verdict as far as they can be read)."""
    kept = [
        expr
        for expr in exprs
        if isinstance(expr, dict)
        and (set(expr) & _VERDICTS or conditions([expr], family, sets, dest) is not None)
    ]
    return conditions(kept, family, sets, dest)


def _mapped(value: Any) -> Optional[Dict[str, Any]]:
    """The map of `dnat to tcp dport map { 9000 : 10.0.0.9 }` (its address or port),
    or None when the rule's target is plain."""
    for part in value.values() if isinstance(value, dict) else ():
        if isinstance(part, dict) and isinstance(part.get("map"), dict):
            return part["map"]
    return None


def _mapped_rule(
    proto: Optional[str],
    ports: Ranges,
    kind: str,
    mapped: Dict[str, Any],
    sets: Optional[Dict[str, Any]],
) -> Optional[ReadRule]:
    """A dnat/redirect through a map keyed by the destination port takes the ports
    the map has values for; keyed by anything else, it cannot be judged (None)."""
    left = mapped.get("key")
    payload = left.get("payload") if isinstance(left, dict) else None
    data = mapped.get("data")
    if not isinstance(payload, dict) or payload.get("field") != "dport":
        return None
    protocol = payload.get("protocol")
    if protocol not in PROTOCOLS and protocol != "th":
        return None
    if isinstance(data, str):
        data = (sets or {}).get(data)
    elif isinstance(data, dict) and isinstance(data.get("set"), list):
        data = {"set": [e[0] if isinstance(e, list) and e else e for e in data["set"]]}
    found = _ranges(data)
    if found is None:
        return None
    if protocol in PROTOCOLS:
        if proto is not None and proto != protocol:
            return ReadRule(proto, (), "", None)
        proto = str(protocol)
    return ReadRule(proto, intersect(ports, found), kind, None)


SINGLE = "{ports}"  # ReadRule.target of a vmap keyed by the port alone (inline elements)
_PORT_KEY = [{"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]


def _vmap_rule(proto: Optional[str], ports: Ranges, value: Any) -> Optional[ReadRule]:
    """`meta l4proto . th dport vmap @map` or `vmap { tcp . 8080 : goto x, ... }`, and
    `tcp dport vmap { 8080 : accept }` (inline: its elements are ports alone); any
    other key (addresses: kube-proxy's ClusterIPs) is not judged."""
    if not isinstance(value, dict):
        return None
    key, data = value.get("key"), value.get("data")
    single = key.get("payload") if isinstance(key, dict) else None
    if isinstance(single, dict) and single.get("field") == "dport":
        protocol = single.get("protocol")
        if protocol in PROTOCOLS:
            if proto is not None and proto != protocol:
                return ReadRule(proto, (), "", None)
            proto = str(protocol)
        elif protocol != "th":
            return None
        if isinstance(data, dict) and isinstance(data.get("set"), list):
            return ReadRule(proto, ports, "vmap", SINGLE, data["set"])
        return None
    if key != {"concat": _PORT_KEY}:
        return None
    if isinstance(data, str) and data.startswith("@"):
        return ReadRule(proto, ports, "vmap", data)
    if isinstance(data, dict) and isinstance(data.get("set"), list):
        return ReadRule(proto, ports, "vmap", None, data["set"])
    return None


def vmap_element(
    element: Any, single: Optional[str] = None
) -> Tuple[Optional[Tuple[Optional[str], int]], Tuple[str, Optional[str]]]:
    """A vmap element `[{"concat": ["tcp", 30080]}, {"goto": {"target": "x"}}]` ->
    ((protocol, port), (verdict, chain)); (None, ...) when it is no such pair. A port
    alone (`tcp dport vmap`) gets `single`, the rule's protocol (None: any)."""
    nothing: Tuple[Optional[Tuple[Optional[str], int]], Tuple[str, Optional[str]]] = (
        None,
        ("", None),
    )
    if not isinstance(element, list) or len(element) != 2:
        return nothing
    key, verdict = element
    if single is not None and isinstance(key, int) and not isinstance(key, bool):
        key = {"concat": [single, key]}
    pair = key.get("concat") if isinstance(key, dict) else None
    if not isinstance(pair, list) or len(pair) != 2 or not isinstance(verdict, dict):
        return nothing
    proto, port = pair
    if proto not in (*PROTOCOLS, single) or not isinstance(port, int) or isinstance(port, bool):
        return nothing
    if len(verdict) != 1:
        return nothing
    ((kind, detail),) = verdict.items()
    target = detail.get("target") if isinstance(detail, dict) else None
    any_proto = proto == "*"  # `th dport vmap`: every protocol
    return (None if any_proto else str(proto), port), (str(kind), str(target) if target else None)


def _nfproto_match(value: Any) -> Optional[int]:
    """`meta nfproto ipv4` (firewalld's forward ports in its inet table): 4 or 6."""
    if not isinstance(value, dict) or value.get("op") != "==":
        return None
    if value.get("left") != {"meta": {"key": "nfproto"}}:
        return None
    return _NFPROTO_NAMES.get(str(value.get("right")))


def _daddr_holds(
    value: Any, family: int, dest: Optional[str], sets: Optional[Dict[str, Any]] = None
) -> Optional[bool]:
    """Whether a match of `ip daddr` (`ip6 daddr`) with an address, a prefix or a named
    set of them (`sets`) holds for the walk's packets, those of `family` for host IP
    `dest` (None: any address of the node that is not loopback): True for all of them,
    False for none, None when it is no such match or holds for only some (an anonymous
    set, a range, a map: not judged)."""
    if not isinstance(value, dict) or value.get("op") not in ("==", "in", "!="):
        return None
    left, right = value.get("left"), value.get("right")
    payload = left.get("payload") if isinstance(left, dict) else None
    if not isinstance(payload, dict) or payload.get("field") != "daddr":
        return None
    version = _NAT_FAMILIES.get(str(payload.get("protocol")))
    if version is None:
        return None
    if version != family:
        return False  # (an inet table: the other family's packets never match it)
    if isinstance(right, str) and right.startswith("@"):
        # kube-proxy's NodePorts on its primary addresses alone (nodePortAddresses
        # "primary", its nftables mode's default): `ip daddr @nodeport-ips`, judged by
        # the set's elements as listed now, as a port set is.
        inside = _in_address_set((sets or {}).get(right), dest)
    else:
        inside = _destined(right, dest)
    if inside is None:
        return None
    return inside if value["op"] != "!=" else not inside


def _destined(right: Any, dest: Optional[str]) -> Optional[bool]:
    """core/mapping.destined of an address or a prefix as nft's JSON gives it."""
    from portmapctl.core.mapping import destined

    prefix = right.get("prefix") if isinstance(right, dict) else None
    spelled = f"{prefix.get('addr')}/{prefix.get('len')}" if isinstance(prefix, dict) else right
    return destined(spelled, dest) if isinstance(spelled, str) else None


def _in_address_set(named: Any, dest: Optional[str]) -> Optional[bool]:
    """Whether the walk's packets (for `dest`) are for an element of a named address
    set (`{"set": [elements]}`): all of them, none, or only some (None; also for an
    element that is no address or prefix, a range: not judged)."""
    elements = named.get("set") if isinstance(named, dict) else None
    if not isinstance(elements, list):
        return None
    found: List[Optional[bool]] = []
    for element in elements:
        if isinstance(element, dict) and isinstance(element.get("elem"), dict):
            element = element["elem"].get("val")  # (an element with a timeout, a counter)
        found.append(_destined(element, dest))
    if True in found:
        return True
    return False if found and all(holds is False for holds in found) else None


def _ranges(right: Any) -> Optional[Tuple[Tuple[int, int], ...]]:
    """A port match's right side: a port, a range, or an anonymous set of them."""
    if isinstance(right, bool):
        return None
    if isinstance(right, int):
        return ((right, right),)
    if isinstance(right, dict) and "range" in right:
        low, high = right["range"]
        return ((int(low), int(high)),) if isinstance(low, int) and isinstance(high, int) else None
    if isinstance(right, dict) and isinstance(right.get("elem"), dict):
        return _ranges(right["elem"].get("val"))  # an element with a counter, timeout...
    if isinstance(right, dict) and isinstance(right.get("set"), list):
        found: List[Tuple[int, int]] = []
        for element in right["set"]:
            part = _ranges(element)
            if part is None:
                return None
            found.extend(part)
        return tuple(found)
    return None  # a map, a set of another table, ...: not judged
