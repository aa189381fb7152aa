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
(foreign_rule.py `conditions`: a protocol, a destination port set or range covering the port,
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
    Union,
)

from portmapctl.core.backend import Backend
from portmapctl.iptables.foreign import PortsLeft, Ranges, intersect
from portmapctl.nftables.foreign_rule import (
    LEAVES,
    SINGLE,
    TAKES,
    ReadRule,
    conditions,
    partial,
    vmap_element,
)
from portmapctl.nftables.hooks import IPTABLES_PRIORITY, Hook, live_hooks

# The families (4, 6) of the packets a table's hooks see, by the table's family.
_SEES = {"inet": (4, 6), "ip": (4,), "ip6": (6,)}
_DEPTH = 16

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
    # The table of each `taken` rule (`ip kube-proxy`): a fix must send the operator to
    # the tool that owns it, kube-proxy's NodePorts are no hand-written firewall.
    tables: Dict[Tuple[int, str, int], str]


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
    tables: Dict[Tuple[int, str, int], str] = {}
    for (family, table), table_hooks in by_table.items():
        listing = run(["-j", "list", "table", family, table])
        text = _text_of(run, family, table)
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
                        tables[key] = f"{family} {table}"
                for (proto, port), rule in maybe.items():
                    key = (seen, proto, port)
                    if key not in unsure or hook.priority < unsure[key][0]:
                        unsure[key] = (hook.priority, rule)
    unsure = {k: v for k, v in unsure.items() if k not in taken or taken[k][0] > v[0]}
    return HookTakers(taken, unsure, tables)


def _text_of(run: Callable[[List[str]], str], family: str, table: str) -> Callable[[], str]:
    """The table as `nft -a list` prints it, listed when first asked: only a rule the
    walk reports needs its words, and listing a big table (kube-proxy's) costs as
    much as its JSON."""
    return lambda: run(["-a", "list", "table", family, table])


def takers(
    listing: str,
    text: Union[str, Callable[[], str]],
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
    text: Union[str, Callable[[], str]],
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
        if isinstance(port_set, dict) and port_set.get("type") in _JUDGED_SETS:
            # `tcp dport @ports`, `ip daddr @nodeport-ips`: judged by the set's
            # elements as listed now.
            sets[f"@{port_set.get('name')}"] = {"set": port_set.get("elem", [])}
    walk = _Walk(chains, _Printed(text), set(wanted), maps, sets)
    walk.family = family
    walk.dest = dest
    walk.kube = table == _KUBE_TABLE
    walk.chain(chain, None, None, None, frozenset())
    if policy == "drop":
        # What no rule took or accepted falls off the base chain (or returns from it)
        # to its policy: NF_DROP ends the packet in nf_nat_inet_fn, the plugin's chain
        # never sees it (an interop test sends the packets).
        walk._take(None, None, f"{chain}: policy drop", frozenset())
    # (The rules' words, listed only now that a rule is reported.)
    taken = {k: str(v) for k, v in walk.taken.items()}
    return taken, {k: str(v) for k, v in walk.unsure.items() if k not in walk.taken}


# A rule's words: as given, or looked up in the text listing when used (_RuleText).
Words = Union[str, "_RuleText"]


class _Printed:
    """handle -> the rule as `nft list` prints it, each a _RuleText: the text listing
    is asked for only when a reported rule's words are used (str, an f-string)."""

    def __init__(self, text: Union[str, Callable[[], str]]) -> None:
        self._text = text
        self._by_handle: Optional[Dict[int, str]] = None

    def get(self, handle: int, default: str) -> _RuleText:
        return _RuleText(self, handle, default)

    def words(self, handle: int, default: str) -> str:
        if self._by_handle is None:
            text = self._text if isinstance(self._text, str) else self._text()
            self._by_handle = _printed(text)
        return self._by_handle.get(handle, default)


class _RuleText:
    """A rule's words, looked up when first used as a string."""

    __slots__ = ("_printed", "_handle", "_default")

    def __init__(self, printed: _Printed, handle: int, default: str) -> None:
        self._printed, self._handle, self._default = printed, handle, default

    def __str__(self) -> str:
        return self._printed.words(self._handle, self._default)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def _printed(text: str) -> Dict[int, str]:
    """handle -> the rule as `nft list` prints it (the `# handle N` that -a adds cut)."""
    found = {}
    for line in text.splitlines():
        words, _, handle = line.strip().rpartition(" # handle ")
        if words and handle.isdigit() and not words.endswith("{"):
            found[int(handle)] = words
    return found


# kube-proxy's nftables mode: a NodePort's `meta l4proto . th dport vmap
# @service-nodeports` sends it to `external-...` (or `service-...`), which DNATs to an
# endpoint or drops it: either way the container gets none of it (as KUBE-EXT- in
# iptables/foreign.py), so such a verdict takes the port without looking inside.
_KUBE_TABLE, _KUBE_SERVICE = "kube-proxy", ("external-", "service-")
# Named sets a rule's match is judged by: ports, and destination addresses.
_JUDGED_SETS = frozenset({"inet_service", "ipv4_addr", "ipv6_addr"})


class _Walk(PortsLeft):
    def __init__(
        self,
        chains: Dict[str, List[Dict[str, Any]]],
        printed: _Printed,
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
        self.doubt: Optional[Words] = None
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
            rule = conditions(obj.get("expr", ()), self.family, self.sets, self.dest)
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
            if rule.verdict in TAKES:
                self._take(rule_proto, rule_ports, reported or text, returned)
            elif rule.verdict == LEAVES:
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
        rule = partial(obj.get("expr", ()), self.family, self.sets, self.dest)
        if rule is None or (proto and rule.proto not in (None, proto)):
            return
        rule_ports = intersect(ports, rule.ports)
        if rule_ports == ():
            return
        text = self.printed.get(obj.get("handle", -1), f"handle {obj.get('handle')}")
        if rule.verdict in TAKES:
            self._doubted(rule.proto or proto, rule_ports, text, returned)
        elif rule.verdict == LEAVES:
            self.escaped |= self._covered(rule.proto or proto, rule_ports) - returned
        elif rule.verdict in ("jump", "goto") and rule.target and rule.target not in path:
            if len(path) < _DEPTH:
                outer, self.doubt = self.doubt, self.doubt or text
                try:
                    self.chain(rule.target, rule.proto or proto, rule_ports, None, path, returned)
                finally:
                    self.doubt = outer
        elif rule.verdict == "vmap":
            # (kube-proxy's NodePorts on its primary addresses, for a mapping on every
            # address: `ip daddr @nodeport-ips ... vmap @service-nodeports` takes only
            # the connections to those.)
            self._vmap(rule, rule.proto or proto, rule_ports, text, path, returned, maybe=True)

    def _take(
        self, proto: Optional[str], ports: Ranges, text: Words, returned: FrozenSet[ProtoPort]
    ) -> None:
        if self.doubt is None:
            super()._take(proto, ports, text, returned | self.escaped)
            self._doubted(proto, ports, text, returned)  # (the escaped ones, left)
        elif self._covered(proto, ports) - returned:
            self._doubted(proto, ports, f"{self.doubt}, then {text}", returned)

    def _leave(self, proto: Optional[str], ports: Ranges, returned: FrozenSet[ProtoPort]) -> None:
        if self.doubt is None:
            super()._leave(proto, ports, returned)
        else:  # (below a jump not judged: only some packets leave)
            self.escaped |= self._covered(proto, ports) - returned

    def _doubted(
        self, proto: Optional[str], ports: Ranges, text: Words, returned: FrozenSet[ProtoPort]
    ) -> None:
        for proto_port in sorted(self._covered(proto, ports) - returned):
            self.unsure.setdefault(proto_port, text)

    def _vmap(
        self,
        rule: ReadRule,
        proto: Optional[str],
        ports: Ranges,
        text: Words,
        path: FrozenSet[str],
        returned: FrozenSet[ProtoPort],
        maybe: bool = False,
    ) -> FrozenSet[ProtoPort]:
        """`meta l4proto . th dport vmap` (a named map or inline elements): each element
        is a protocol and a port with its verdict. A packet no element matches goes on
        to the next rule, so the walk goes on after this one; the ports of `goto` and
        `return` elements never come back to it (returned). `maybe`: the rule has a
        condition not judged (`_maybe`): what an element takes, it takes maybe."""
        alone = rule.target == SINGLE
        elements = rule.elements if alone or not rule.target else self.maps.get(rule.target, ())
        gone: FrozenSet[ProtoPort] = frozenset()
        for element in elements or ():
            key, verdict = vmap_element(element, rule.proto or "*" if alone else None)
            if key is None or (proto and key[0] not in (None, proto)):
                continue
            port_ranges = intersect(ports, ((key[1], key[1]),))
            if port_ranges == ():
                continue
            kind, target = verdict
            key_proto = key[0] or proto
            if kind in TAKES or (
                kind in ("jump", "goto") and target and target.startswith(_KUBE_SERVICE)
                and self.kube
            ):  # fmt: skip
                if not self._covered(key_proto, port_ranges):
                    continue  # (no port asked: its words are not needed)
                named = str(key[1]) if alone else f"{key[0]} . {key[1]}"
                element_text = f"{named} : {kind}" + (f" {target}" if target else "")
                if maybe and self.doubt is None:
                    self._doubted(key_proto, port_ranges, f"{text} ({element_text})", returned)
                else:
                    self._take(key_proto, port_ranges, f"{text} ({element_text})", returned)
            elif kind == LEAVES:
                if maybe:  # (only some packets leave)
                    self.escaped |= self._covered(key_proto, port_ranges) - returned
                else:
                    self._leave(key_proto, port_ranges, returned)
            elif kind in ("jump", "goto") and target and target not in path:
                if len(path) < _DEPTH:
                    outer = self.doubt
                    if maybe:
                        self.doubt = self.doubt or text
                    try:
                        self.chain(target, key_proto, port_ranges, text, path, returned)
                    finally:
                        self.doubt = outer
            if kind in ("goto", "return"):
                gone = gone | self._covered(key_proto, port_ranges)
        return gone


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
    # row of `taken` -> the table its rule is in (`ip kube-proxy`)
    tables: Dict[Any, str] = field(default_factory=dict)


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

    from portmapctl.core.contest import backend_of, hooked
    from portmapctl.core.mapping import destination
    from portmapctl.errors import PortmapctlError
    from portmapctl.iptables.foreign import hook_of
    from portmapctl.nftables.access.nft import find_nft, run_nft

    def where(row: Any) -> str:
        return hook_of(row.host_ip).lower()

    own = {
        (family, chain.base.hook): chain.base.priority
        for family, table in (nft_live.tables.items() if nft_live is not None else ())
        for chain in table.chains.values()
        if chain.base is not None and chain.base.type == "nat"
    }

    def priority(row: Any) -> int:
        if backend_of(row) == Backend.IPTABLES:
            return IPTABLES_PRIORITY
        # -100 when not read: every upstream version writes both chains there.
        return own.get((row.family, where(row)), IPTABLES_PRIORITY)

    # Rows are walked by hook and by host IP (a rule's `ip daddr` is judged for it).
    by_hook: Dict[Tuple[str, Optional[str]], List[Any]] = {}
    for row in rows:
        by_hook.setdefault((where(row), destination(row.host_ip)), []).append(row)
    found: Dict[Any, Tuple[str, str]] = {}
    unsure: Dict[Any, str] = {}
    tables: Dict[Any, str] = {}
    unread: List[str] = []
    listed: Dict[Tuple[str, ...], str] = {}
    for (hook, dest), hook_rows in by_hook.items():
        wanted: Dict[int, Set[ProtoPort]] = {}
        for row in hook_rows:
            wanted.setdefault(row.family, set()).add((row.protocol, row.host_port))
        try:
            binary = getattr(node.nft, "binary", find_nft)()
            taken, maybe, taken_in = read_takers(
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
        now_found = hooked(hook_rows, taken, priority)
        found.update(now_found)
        tables.update(
            (row, taken_in[(row.family, row.protocol, row.host_port)]) for row in now_found
        )
        for row in hook_rows:
            hit = maybe.get((row.family, row.protocol, row.host_port))
            if hit is not None and row not in found and hit[0] <= priority(row):
                unsure[row] = hit[1]
    return Hooked(found, unsure, tuple(unread), tables)


def flows_taken(
    node: Any,
    wanted: Dict[Tuple[int, str, bool], Set[ProtoPort]],
    latest: int = IPTABLES_PRIORITY,
) -> Set[Tuple[int, str, int]]:
    """The (family, destination, port) of flows to these node addresses (`wanted`: the
    ports by (family, destination, the node's own: its output hook walked)) that another table's nat hook at or before priority
    `latest` (the plugin's) takes, wholly or maybe (a condition not judged): another
    tool's flows, unless the plugin's DNAT sent them. A row's status judges a mapping
    on every address by all of them (netavark's `ip daddr ADDR ... dnat` takes one:
    the row is `unsure`, not shadowed); a flow goes to one address, walked for it
    here. Hooks that cannot be listed, or a table that cannot be read, take every
    destination of their hook: whose the flows are cannot be told, so they stay."""
    if not wanted:
        return set()
    everything = {(f, dst, port) for (f, dst, _), ports in wanted.items() for _, port in ports}
    try:
        hooks = [h for h in live_hooks(node) if h.priority <= latest]
    except OSError:
        return everything
    if not hooks:
        return set()
    import subprocess

    from portmapctl.errors import PortmapctlError
    from portmapctl.iptables.foreign import hook_of
    from portmapctl.nftables.access.nft import find_nft, run_nft

    listed: Dict[Tuple[str, ...], str] = {}
    found: Set[Tuple[int, str, int]] = set()
    for (family, dst, own), ports in wanted.items():
        try:
            binary = getattr(node.nft, "binary", find_nft)()
            taken, maybe, _tables = read_takers(
                hooks,
                {family: frozenset(ports)},
                _wordless(_listed_once(run_nft(binary), listed)),
                "output" if own else hook_of(dst).lower(),
                dst,
            )
        except (OSError, ValueError, subprocess.SubprocessError, PortmapctlError):
            found.update((family, dst, port) for _, port in ports)
            continue
        found.update((family, dst, port) for _, _, port in (*taken, *maybe))
    return found


def _wordless(run: Callable[[List[str]], str]) -> Callable[[List[str]], str]:
    """`run` for a walk whose rules' words nobody reads (flows_taken: which ports are
    taken, not by what): the text listing (`nft -a list table`, as costly as the JSON on
    kube-proxy's table) is not run; each rule is then named by its handle."""
    return lambda args: "" if args[:1] == ["-a"] else run(args)


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
