"""Host ports another nftables table's nat prerouting (or output) hook takes.

A hand-written nft firewall (`table ip nat { chain prerouting { type nat hook
prerouting priority dstnat; ... tcp dport 8080 dnat to 10.0.0.9:80 } }`) runs beside
the plugin's tables. Hooks run by priority: one lower (earlier) than the plugin's
prerouting chain (cni_hostport's, or iptables' nat PREROUTING: -100, dstnat) takes
the port first, so the mapping is `shadowed` by that rule; at the same priority the
order the kernel registered the hooks decides, which no dump shows: `contested`; a
later one never sees the packet the plugin DNATed (nat runs once per connection).
A mapping on a loopback host IP (127.0.0.1, ::1) serves no network: only the node's
own connections reach it, through the nat output hook, so it is judged against other
tables' output hooks (the plugin's output chain: -100 too), and no prerouting rule
takes anything from it (iptables/foreign.py's hook_of, the same choice).

A mapping on one host IP is walked with its packets' destination known (`dest`): a
rule's `ip daddr` match (an address or a prefix, `==` or `!=`) holds for all of them
or for none (netavark's `ip daddr 192.168.5.5 tcp dport 8080 dnat ...` is another host
IP's mapping, or this one's). A mapping on every address is walked for every address
of the node that is not loopback: `ip daddr != 127.0.0.0/8` holds for all its packets,
a loopback destination for none, and any other address for only some: not judged.

Which tables have such a hook is asked over netlink first (nftables/hooks.py: one
NFT_MSG_GETCHAIN dump, about a millisecond): `nft` runs only for a table that has one,
so the usual node (the plugin's tables, iptables-nft's `nat`) pays nothing more. firewalld's
`inet firewalld` hooks at dstnat + 10: later, read and never counted.

No false alarms, as iptables/foreign.py: a rule counts only when every condition on
it and on the jumps that led to it holds for every packet the plugin's entry takes
(`_conditions`: a protocol, a destination port set or range covering the port,
`fib daddr type local`, `ip daddr` as above, counters, comments; a named port
set, `tcp dport @ports`, by the elements it holds now, intervals too; a `dnat to tcp
dport map @m` takes only the ports its map has a value for); a rule with
anything else (addresses, interfaces, marks, other `!=`, maps, ...) takes only some
packets, or cannot be judged: it takes nothing, and a jump with one is not followed. A `meta l4proto . th dport vmap` is judged element by element (kube-proxy's
NodePorts, `_vmap`). A rule takes its ports when it
DNATs, REDIRECTs or DROPs. An `accept` takes nothing: it ends only its own table's
chains for the packet, no NAT bound, and the kernel calls the next nat chain at that
hook (nf_nat_inet_fn), the plugin's too; no later rule of its table sees the packet
(the port is left alone, as after a dnat a later hook never sees it); `return` sends its packets back (no later rule of that chain sees
them); jumps and gotos are walked, each chain once per path. A goto ends its chain
only for the packets it sends (`meta l4proto udp goto x`: tcp goes on to the next
rule); the end of the chain it went to returns to the caller's caller. What falls off
the base chain (or returns from it) meets its policy: `policy drop` takes it.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from typing import (
    Any,
    Callable,
    Dict,
    FrozenSet,
    Iterable,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Set,
    Tuple,
)

from portmapctl.iptables.foreign import PortsLeft, Ranges, intersect
from portmapctl.nftables.hooks import IPTABLES_PRIORITY, Hook, live_hooks

# The families (4, 6) of the packets a table's hooks see, by the table's family.
_SEES = {"inet": (4, 6), "ip": (4,), "ip6": (6,)}
_DEPTH = 16
# What decides a new connection's NAT at this hook (or ends the packet): a `dnat`, a
# `redirect`, a `drop`. An `accept` only leaves its table: the kernel then calls the
# next nat chain at the hook point (nf_nat_inet_fn), the plugin's included.
_TAKES = frozenset({"dnat", "redirect", "drop"})
_LEAVES = "accept"
_PROTOCOLS = frozenset({"tcp", "udp", "sctp"})

ProtoPort = Tuple[str, int]
# (family 4/6, protocol, host port) -> (the hook's priority, the rule as `nft list`
# prints it)
Taken = Dict[Tuple[int, str, int], Tuple[int, str]]


class HookTakers(NamedTuple):
    """What other tables' hooks take of the ports asked: (family, protocol, port) ->
    (the hook's priority, the rule)."""

    taken: Taken  # whole, by the earliest hook
    # Only some packets of, maybe (a condition not judged), and no rule at or before
    # that hook takes them whole: the earliest such hook's rule.
    unsure: Taken


def read_takers(
    hooks: Iterable[Hook],
    wanted: Dict[int, FrozenSet[ProtoPort]],
    run: Callable[[List[str]], str],
    where: str = "prerouting",
    dest: Optional[str] = None,
) -> HookTakers:
    """What the hooks' tables take of `wanted` (by family), each table listed with `run`
    (nft's arguments -> its stdout) twice: as JSON (the rules) and as text (how `nft
    list` prints them). The earliest hook wins a port. `where`: the hooks judged
    (output: the node's own connections to a loopback host IP, the packets walked).
    `dest`: the host IP the packets are for (None: every address of the node that is
    not loopback, a mapping on every address)."""
    by_table: Dict[Tuple[str, str], List[Hook]] = {}
    for hook in hooks:
        if hook.hook == where and any(wanted.get(f) for f in _SEES[hook.family]):
            by_table.setdefault((hook.family, hook.table), []).append(hook)
    taken: Taken = {}
    unsure: Taken = {}
    for (family, table), table_hooks in by_table.items():
        listing = run(["-j", "list", "table", family, table])
        text = run(["-a", "list", "table", family, table])
        for hook in sorted(table_hooks, key=lambda h: h.priority):
            for seen in _SEES[family]:
                found, maybe = _walked(
                    listing,
                    text,
                    hook.chain,
                    wanted.get(seen, frozenset()),
                    table,
                    seen,
                    dest,
                )
                for (proto, port), rule in found.items():
                    key = (seen, proto, port)
                    if key not in taken or hook.priority < taken[key][0]:
                        taken[key] = (hook.priority, rule)
                for (proto, port), rule in maybe.items():
                    key = (seen, proto, port)
                    if key not in unsure or hook.priority < unsure[key][0]:
                        unsure[key] = (hook.priority, rule)
    unsure = {k: v for k, v in unsure.items() if k not in taken or taken[k][0] > v[0]}
    return HookTakers(taken, unsure)


def takers(
    listing: str,
    text: str,
    chain: str,
    wanted: FrozenSet[ProtoPort],
    table: str = "",
    family: int = 4,
    dest: Optional[str] = None,
) -> Dict[ProtoPort, str]:
    """(protocol, host port) -> the rule of the table (`nft -j list table` output, and
    `nft -a list table` for the words) that takes it, walking from base chain `chain`.
    `dest`: the host IP the packets walked are for (None: any non-loopback one)."""
    return _walked(listing, text, chain, wanted, table, family, dest)[0]


def _walked(
    listing: str,
    text: str,
    chain: str,
    wanted: FrozenSet[ProtoPort],
    table: str,
    family: int,
    dest: Optional[str],
) -> Tuple[Dict[ProtoPort, str], Dict[ProtoPort, str]]:
    """`takers`, and the ports no rule takes whole but one may take some packets of (a
    condition not judged: `ip saddr 10.0.0.0/8 tcp dport 8080 dnat ...`)."""
    if not wanted:
        return {}, {}
    import json

    chains: Dict[str, List[Dict[str, Any]]] = {}
    maps: Dict[str, Any] = {}
    sets: Dict[str, Any] = {}
    policy = None
    for obj in json.loads(listing).get("nftables", ()):
        rule = obj.get("rule") if isinstance(obj, dict) else None
        if isinstance(rule, dict):
            chains.setdefault(str(rule.get("chain")), []).append(rule)
        base = obj.get("chain") if isinstance(obj, dict) else None
        if isinstance(base, dict) and base.get("name") == chain:
            policy = base.get("policy")
        named = obj.get("map") if isinstance(obj, dict) else None
        if isinstance(named, dict) and named.get("map") == "verdict":
            maps[f"@{named.get('name')}"] = named.get("elem", [])
        elif isinstance(named, dict) and named.get("type") == "inet_service":
            # `dnat to tcp dport map @m`: the ports it has a value for.
            keys = [e[0] if isinstance(e, list) and e else e for e in named.get("elem", [])]
            sets[f"@{named.get('name')}"] = {"set": keys}
        port_set = obj.get("set") if isinstance(obj, dict) else None
        if isinstance(port_set, dict) and port_set.get("type") == "inet_service":
            # `tcp dport @ports`: judged by the set's elements as listed now.
            sets[f"@{port_set.get('name')}"] = {"set": port_set.get("elem", [])}
    walk = _Walk(chains, _printed(text), set(wanted), maps, sets)
    walk.family = family
    walk.dest = dest
    walk.kube = table == _KUBE_TABLE
    walk.chain(chain, None, None, None, frozenset())
    if policy == "drop":
        # What no rule took or accepted falls off the base chain (or returns from it)
        # to its policy: NF_DROP ends the packet in nf_nat_inet_fn, the plugin's chain
        # never sees it (an interop test sends the packets).
        walk._take(None, None, f"{chain}: policy drop", frozenset())
    return walk.taken, {k: v for k, v in walk.unsure.items() if k not in walk.taken}


def _printed(text: str) -> Dict[int, str]:
    """handle -> the rule as `nft list` prints it (the `# handle N` that -a adds cut)."""
    found = {}
    for line in text.splitlines():
        words, _, handle = line.strip().rpartition(" # handle ")
        if words and handle.isdigit() and not words.endswith("{"):
            found[int(handle)] = words
    return found


class _Rule(NamedTuple):
    proto: Optional[str]
    ports: Ranges
    verdict: str  # dnat, redirect, accept, jump, goto, return, vmap, "" (none)
    target: Optional[str]  # a chain; for vmap the map: `@name` or its inline elements
    elements: Any = None


# kube-proxy's nftables mode: a NodePort's `meta l4proto . th dport vmap
# @service-nodeports` sends it to `external-...` (or `service-...`), which DNATs to an
# endpoint or drops it: either way the container gets none of it (as KUBE-EXT- in
# iptables/foreign.py), so such a verdict takes the port without looking inside.
_KUBE_TABLE, _KUBE_SERVICE = "kube-proxy", ("external-", "service-")


class _Walk(PortsLeft):
    def __init__(
        self,
        chains: Dict[str, List[Dict[str, Any]]],
        printed: Dict[int, str],
        left: set,
        maps: Optional[Dict[str, Any]] = None,
        sets: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__(left)
        self.chains = chains
        self.printed = printed
        self.maps = maps or {}
        self.sets = sets or {}
        self.unsure: Dict[ProtoPort, str] = {}  # ports a rule may take some packets of
        # The jump not judged that the walk went through (`iifname "wan" jump x`):
        # what the chains below it take, they take only maybe.
        self.doubt: Optional[str] = None
        self.kube = False  # kube-proxy's table: its service chains are not walked
        self.family = 4  # the packets walked (an inet table sees both)
        self.dest: Optional[str] = None  # ... and their host IP (None: any not loopback)
        # Ports some packets of which an accept under a condition not judged let out
        # of the table (`ip saddr 10.0.0.0/8 tcp dport 9090 accept`): on to the
        # plugin's chain. A later rule takes the others only: maybe, never whole.
        self.escaped: Set[ProtoPort] = set()

    def chain(
        self,
        name: str,
        proto: Optional[str],
        ports: Ranges,
        named: Optional[str],
        path: FrozenSet[str],
        returned: FrozenSet[ProtoPort] = frozenset(),
    ) -> bool:
        """True: the walk is over (nothing is left to find)."""
        path = path | {name}
        for obj in self.chains.get(name, ()):
            if not self.left:
                return True
            rule = _conditions(obj.get("expr", ()), self.family, self.sets, self.dest)
            if rule is None:
                self._maybe(obj, proto, ports, path, returned)
                continue
            if proto and rule.proto and rule.proto != proto:
                continue
            rule_proto = rule.proto or proto
            rule_ports = intersect(ports, rule.ports)
            if rule_ports == ():
                continue
            text = self.printed.get(obj.get("handle", -1), f"handle {obj.get('handle')}")
            reported = named or (text if rule.ports is not None else None)
            if rule.verdict in _TAKES:
                self._take(rule_proto, rule_ports, reported or text, returned)
            elif rule.verdict == _LEAVES:
                self._leave(rule_proto, rule_ports, returned)
            elif rule.verdict == "return":
                if rule.proto is None and rule.ports is None:
                    return False
                returned = returned | self._covered(rule_proto, rule_ports)
            elif rule.verdict in ("jump", "goto") and rule.target:
                if rule.target in path or len(path) >= _DEPTH:
                    continue
                if self.chain(rule.target, rule_proto, rule_ports, reported, path, returned):
                    return True
                if rule.verdict == "goto":
                    # The packets it sends never come back to this chain (its end
                    # returns to the caller's caller); the others go on here.
                    if rule.proto is None and rule.ports is None:
                        return False
                    returned = returned | self._covered(rule_proto, rule_ports)
            elif rule.verdict == "vmap":
                returned = returned | self._vmap(rule, rule_proto, rule_ports, text, path, returned)
        return False

    def _maybe(
        self,
        obj: Dict[str, Any],
        proto: Optional[str],
        ports: Ranges,
        path: FrozenSet[str],
        returned: FrozenSet[ProtoPort],
    ) -> None:
        """A rule that cannot be judged: the ports it would take if its other conditions
        held are ports nobody can say get all their packets (`unsure`); the chain a
        jump or goto of it reaches is walked in doubt (what it takes, it takes maybe)."""
        rule = _partial(obj.get("expr", ()), self.family, self.sets, self.dest)
        if rule is None or (proto and rule.proto not in (None, proto)):
            return
        rule_ports = intersect(ports, rule.ports)
        if rule_ports == ():
            return
        text = self.printed.get(obj.get("handle", -1), f"handle {obj.get('handle')}")
        if rule.verdict in _TAKES:
            self._doubted(rule.proto or proto, rule_ports, text, returned)
        elif rule.verdict == _LEAVES:
            self.escaped |= self._covered(rule.proto or proto, rule_ports) - returned
        elif rule.verdict in ("jump", "goto") and rule.target and rule.target not in path:
            if len(path) < _DEPTH:
                outer, self.doubt = self.doubt, self.doubt or text
                try:
                    self.chain(rule.target, rule.proto or proto, rule_ports, None, path, returned)
                finally:
                    self.doubt = outer

    def _take(
        self, proto: Optional[str], ports: Ranges, text: str, returned: FrozenSet[ProtoPort]
    ) -> None:
        if self.doubt is None:
            super()._take(proto, ports, text, returned | self.escaped)
            self._doubted(proto, ports, text, returned)  # (the escaped ones, left)
        else:
            self._doubted(proto, ports, f"{self.doubt}, then {text}", returned)

    def _leave(self, proto: Optional[str], ports: Ranges, returned: FrozenSet[ProtoPort]) -> None:
        if self.doubt is None:
            super()._leave(proto, ports, returned)
        else:  # (below a jump not judged: only some packets leave)
            self.escaped |= self._covered(proto, ports) - returned

    def _doubted(
        self, proto: Optional[str], ports: Ranges, text: str, returned: FrozenSet[ProtoPort]
    ) -> None:
        for proto_port in sorted(self._covered(proto, ports) - returned):
            self.unsure.setdefault(proto_port, text)

    def _vmap(
        self,
        rule: _Rule,
        proto: Optional[str],
        ports: Ranges,
        text: str,
        path: FrozenSet[str],
        returned: FrozenSet[ProtoPort],
    ) -> FrozenSet[ProtoPort]:
        """`meta l4proto . th dport vmap` (a named map or inline elements): each element
        is a protocol and a port with its verdict. A packet no element matches goes on
        to the next rule, so the walk goes on after this one; the ports of `goto` and
        `return` elements never come back to it (returned)."""
        alone = rule.target == _SINGLE
        elements = rule.elements if alone or not rule.target else self.maps.get(rule.target, ())
        gone: FrozenSet[ProtoPort] = frozenset()
        for element in elements or ():
            key, verdict = _element(element, rule.proto or "*" if alone else None)
            if key is None or (proto and key[0] not in (None, proto)):
                continue
            port_ranges = intersect(ports, ((key[1], key[1]),))
            if port_ranges == ():
                continue
            kind, target = verdict
            key_proto = key[0] or proto
            if kind in _TAKES or (
                kind in ("jump", "goto") and target and target.startswith(_KUBE_SERVICE)
                and self.kube
            ):  # fmt: skip
                named = str(key[1]) if alone else f"{key[0]} . {key[1]}"
                element_text = f"{named} : {kind}" + (f" {target}" if target else "")
                self._take(key_proto, port_ranges, f"{text} ({element_text})", returned)
            elif kind == _LEAVES:
                self._leave(key_proto, port_ranges, returned)
            elif kind in ("jump", "goto") and target and target not in path:
                if len(path) < _DEPTH:
                    self.chain(target, key_proto, port_ranges, text, path, returned)
            if kind in ("goto", "return"):
                gone = gone | self._covered(key_proto, port_ranges)
        return gone


_NFPROTO_NAMES = {"ipv4": 4, "ipv6": 6}
_NAT_FAMILIES = {"ip": 4, "ip6": 6}


def _conditions(
    exprs: Iterable[Any],
    family: int = 4,
    sets: Optional[Dict[str, Any]] = None,
    dest: Optional[str] = None,
) -> Optional[_Rule]:
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
        if kind in _TAKES or kind in ("return", _LEAVES):
            nat_family = value.get("family") if isinstance(value, dict) else None
            if _NAT_FAMILIES.get(str(nat_family), family) != family:
                # `dnat ip to` in an inet table leaves IPv6 packets alone.
                return _Rule(proto, ports, "", None)
            mapped = _mapped(value)
            if mapped is not None:
                # A packet whose port the map has no value for goes on untouched.
                return _mapped_rule(proto, ports, kind, mapped, sets)
            return _Rule(proto, ports, kind, None)
        if kind in ("jump", "goto"):
            target = value.get("target") if isinstance(value, dict) else None
            return _Rule(proto, ports, kind, str(target) if target else None)
        if kind == "vmap":
            return _vmap_rule(proto, ports, value)
        if kind == "match" and _nfproto_match(value) is not None:
            if _nfproto_match(value) != family:
                return _Rule(proto, (), "", None)  # the other family's rule
            continue
        holds = _daddr_holds(value, family, dest) if kind == "match" else None
        if holds is not None:
            # (kube-proxy's NodePorts: `ip daddr != 127.0.0.0/8`; netavark's mapping on
            # one host IP: `ip daddr 192.168.5.5`.)
            if not holds:
                return _Rule(proto, (), "", None)  # matches none of the walk's packets
            continue
        if kind != "match" or not isinstance(value, dict) or value.get("op") not in ("==", "in"):
            return None
        left, right = value.get("left"), value.get("right")
        if not isinstance(left, dict):
            return None
        payload, meta, fib = left.get("payload"), left.get("meta"), left.get("fib")
        if isinstance(payload, dict) and payload.get("field") == "dport":
            protocol = payload.get("protocol")
            if protocol in _PROTOCOLS:
                if proto is not None and proto != protocol:
                    return _Rule(proto, (), "", None)  # matches no packet
                proto = str(protocol)
            elif protocol != "th":
                return None
            if isinstance(right, str) and sets is not None:
                right = sets.get(right, right)
            found = _ranges(right)
            if found is None:
                return None
            ports = intersect(ports, found)
        elif isinstance(meta, dict) and meta.get("key") == "l4proto" and right in _PROTOCOLS:
            if proto is not None and proto != right:
                return _Rule(proto, (), "", None)
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
    return _Rule(proto, ports, "", None)


_VERDICTS = _TAKES | {_LEAVES, "return", "jump", "goto", "vmap", "counter"}


def _partial(
    exprs: Iterable[Any], family: int, sets: Optional[Dict[str, Any]], dest: Optional[str] = None
) -> Optional[_Rule]:
    """A rule `_conditions` cannot judge, read as if the conditions it cannot judge
    held (its protocol, ports and verdict as far as they can be read)."""
    kept = [
        expr
        for expr in exprs
        if isinstance(expr, dict)
        and (set(expr) & _VERDICTS or _conditions([expr], family, sets, dest) is not None)
    ]
    return _conditions(kept, family, sets, dest)


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
) -> Optional[_Rule]:
    """A dnat/redirect through a map keyed by the destination port takes the ports
    the map has values for; keyed by anything else, it cannot be judged (None)."""
    left = mapped.get("key")
    payload = left.get("payload") if isinstance(left, dict) else None
    data = mapped.get("data")
    if not isinstance(payload, dict) or payload.get("field") != "dport":
        return None
    protocol = payload.get("protocol")
    if protocol not in _PROTOCOLS and protocol != "th":
        return None
    if isinstance(data, str):
        data = (sets or {}).get(data)
    elif isinstance(data, dict) and isinstance(data.get("set"), list):
        data = {"set": [e[0] if isinstance(e, list) and e else e for e in data["set"]]}
    found = _ranges(data)
    if found is None:
        return None
    if protocol in _PROTOCOLS:
        if proto is not None and proto != protocol:
            return _Rule(proto, (), "", None)
        proto = str(protocol)
    return _Rule(proto, intersect(ports, found), kind, None)


_SINGLE = "{ports}"  # _Rule.target of a vmap keyed by the port alone (inline elements)
_PORT_KEY = [{"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]


def _vmap_rule(proto: Optional[str], ports: Ranges, value: Any) -> Optional[_Rule]:
    """`meta l4proto . th dport vmap @map` or `vmap { tcp . 8080 : goto x, ... }`, and
    `tcp dport vmap { 8080 : accept }` (inline: its elements are ports alone); any
    other key (addresses: kube-proxy's ClusterIPs) is not judged."""
    if not isinstance(value, dict):
        return None
    key, data = value.get("key"), value.get("data")
    single = key.get("payload") if isinstance(key, dict) else None
    if isinstance(single, dict) and single.get("field") == "dport":
        protocol = single.get("protocol")
        if protocol in _PROTOCOLS:
            if proto is not None and proto != protocol:
                return _Rule(proto, (), "", None)
            proto = str(protocol)
        elif protocol != "th":
            return None
        if isinstance(data, dict) and isinstance(data.get("set"), list):
            return _Rule(proto, ports, "vmap", _SINGLE, data["set"])
        return None
    if key != {"concat": _PORT_KEY}:
        return None
    if isinstance(data, str) and data.startswith("@"):
        return _Rule(proto, ports, "vmap", data)
    if isinstance(data, dict) and isinstance(data.get("set"), list):
        return _Rule(proto, ports, "vmap", None, data["set"])
    return None


def _element(
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
    if proto not in (*_PROTOCOLS, single) or not isinstance(port, int) or isinstance(port, bool):
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


def _daddr_holds(value: Any, family: int, dest: Optional[str]) -> Optional[bool]:
    """Whether a match of `ip daddr` (`ip6 daddr`) with an address or a prefix holds
    for the walk's packets, those of `family` for host IP `dest` (None: any address of
    the node that is not loopback): True for all of them, False for none, None when
    it is no such match or holds for only some (a set, a range, a map: not judged)."""
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
    prefix = right.get("prefix") if isinstance(right, dict) else None
    spelled = f"{prefix.get('addr')}/{prefix.get('len')}" if isinstance(prefix, dict) else right
    if not isinstance(spelled, str):
        return None
    from portmapctl.core.mapping import destined

    inside = destined(spelled, dest)
    if inside is None:
        return None
    return inside if value["op"] != "!=" else not inside


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


def run_nft(binary: str) -> Callable[[List[str]], str]:
    """`nft ARGS` -> its stdout (OSError when it fails)."""

    def run(args: List[str]) -> str:
        done = subprocess.run(
            [binary, *args], capture_output=True, text=True, timeout=30, check=False
        )
        if done.returncode != 0:
            raise OSError(f"nft {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    return run


@dataclass(frozen=True)
class Hooked:
    """What other tables' nat hooks do to the rows node_hooked was given."""

    # row -> (shadowed or contested, the rule that takes its port: core/contest.hooked)
    taken: Dict[Any, Tuple[str, str]] = field(default_factory=dict)
    # row -> a rule at or before its hook that may take some of its packets (a
    # condition not judged): said, never called ok or shadowed
    unsure: Dict[Any, str] = field(default_factory=dict)
    # why some rows' hooks could not be read (none of them is then judged)
    unread: Tuple[str, ...] = ()


def node_hooked(
    node: Any,
    rows: Sequence[Any],
    nft_live: Optional[Any],
    hooks: Optional[List[Hook]] = None,
) -> Hooked:
    """The rows (either backend) whose port another nftables table's nat hook takes:
    shadowed (an earlier hook) or contested (the same priority), with the rule
    (core/contest.hooked). A row's hook is the one its connections pass: output for a
    loopback host IP (the node's own connections alone reach it), else prerouting.
    `hooks`: live_hooks(node), asked here when not given; nft runs only for a table
    that has a hook some row passes, once per table, so the usual node pays one
    netlink dump. What cannot be read is said in Hooked.unread."""
    if not rows:
        return Hooked()
    try:
        hooks = live_hooks(node) if hooks is None else hooks
    except OSError as err:
        return Hooked(unread=(f"the nftables chains cannot be listed ({err})",))
    if not hooks:
        return Hooked()
    import subprocess

    from portmapctl.core.contest import hooked
    from portmapctl.core.mapping import destination
    from portmapctl.errors import PortmapctlError
    from portmapctl.iptables.foreign import hook_of
    from portmapctl.nftables.access.nft import find_nft

    def where(row: Any) -> str:
        return hook_of(row.host_ip).lower()

    own = {
        (family, chain.base.hook): chain.base.priority
        for family, table in (nft_live.tables.items() if nft_live is not None else ())
        for chain in table.chains.values()
        if chain.base is not None and chain.base.type == "nat"
    }

    def priority(row: Any) -> int:
        if getattr(row, "backend", "iptables") == "iptables":
            return IPTABLES_PRIORITY
        # -100 when not read: every upstream version writes both chains there.
        return own.get((row.family, where(row)), IPTABLES_PRIORITY)

    # Rows are walked by hook and by host IP (a rule's `ip daddr` is judged for it).
    by_hook: Dict[Tuple[str, Optional[str]], List[Any]] = {}
    for row in rows:
        by_hook.setdefault((where(row), destination(row.host_ip)), []).append(row)
    found: Dict[Any, Tuple[str, str]] = {}
    unsure: Dict[Any, str] = {}
    unread: List[str] = []
    listed: Dict[Tuple[str, ...], str] = {}
    for (hook, dest), hook_rows in by_hook.items():
        wanted: Dict[int, Set[ProtoPort]] = {}
        for row in hook_rows:
            wanted.setdefault(row.family, set()).add((row.protocol, row.host_port))
        try:
            binary = getattr(node.nft, "binary", find_nft)()
            taken, maybe = read_takers(
                hooks,
                {f: frozenset(p) for f, p in wanted.items()},
                _listed_once(run_nft(binary), listed),
                hook,
                dest,
            )
        except (OSError, ValueError, subprocess.SubprocessError, PortmapctlError) as err:
            said = f"the tables of the nat {hook} hooks cannot be read ({err})"
            if said not in unread:
                unread.append(said)
            continue
        found.update(hooked(hook_rows, taken, priority))
        for row in hook_rows:
            hit = maybe.get((row.family, row.protocol, row.host_port))
            if hit is not None and row not in found and hit[0] <= priority(row):
                unsure[row] = hit[1]
    return Hooked(found, unsure, tuple(unread))


def _listed_once(
    run: Callable[[List[str]], str], listed: Dict[Tuple[str, ...], str]
) -> Callable[[List[str]], str]:
    """`run`, each listing asked once (a table with both hooks is read for both)."""

    def once(args: List[str]) -> str:
        key = tuple(args)
        if key not in listed:
            listed[key] = run(args)
        return listed[key]

    return once
