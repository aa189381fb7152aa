"""Host ports another tool's nat rules take before the plugin's entry rule.

The plugin appends `-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT`;
Docker (`-j DOCKER`, then `-A DOCKER ! -i docker0 ... --dport 8080 -j DNAT`) and
kube-proxy (`-j KUBE-SERVICES` ... `-j KUBE-NODEPORTS`, then `--dport 30080 -j
KUBE-EXT-...`) usually sit ahead of it. A packet such a rule DNATs, REDIRECTs or
ACCEPTs never reaches the plugin's chain: the container's mapping gets nothing.

`takers` walks PREROUTING in order up to the jump to CNI-HOSTPORT-DNAT, descending
into jumps and gotos to non-plugin chains (each chain once per path); a jump there for
some ports alone (an operator's `-p tcp --dport 9443 -j CNI-HOSTPORT-DNAT` at the top)
ends the walk for those ports only. Only external
traffic is judged: a rule reached only from OUTPUT takes locally made connections,
while the hostPort still serves the network, so it is not reported. A mapping bound
to a loopback host IP (127.0.0.1, ::1) serves no network: its connections come
through OUTPUT alone, so OUTPUT is walked for it instead (`hook_of`), the same way
(Docker's OUTPUT jump carries `! -d 127.0.0.0/8`: not followed).

No false alarms: a rule counts only when every condition on it, and on the jumps that
led to it, holds for every packet the plugin's entry takes (`_read`: comments,
`-m tcp/udp/multiport`, `-p`, `--dport(s)` covering the port, `-m addrtype
--dst-type LOCAL`, a negated `! -i`, and `-d` as below). A rule with any other
condition (-s, -i, marks, conntrack, statistic, ...) takes only some packets: it
shadows nothing, and a jump with one is not followed (kube-proxy's per-service jumps
carry `-d CLUSTER-IP`, so the walk stays in a handful of small chains). A mapping on
one host IP is walked with its packets' destination known (`dest`): `-d ADDR[/LEN]`,
or `! -d`, holds for all of them or none (Docker's `-A DOCKER -d 192.168.1.5/32 ! -i
docker0 -p tcp --dport 8080 -j DNAT` takes a mapping on 192.168.1.5:8080 whole, and
nothing of one on another address). A mapping on every address is walked for every
address of the node that is not loopback: `! -d 127.0.0.0/8` holds for all of its
packets, any other `-d` only for some. How deep it looks: a benign jump
covering the port into kube-proxy's per-service chains (KUBE-EXT-, KUBE-SVC-,
KUBE-SVL-, KUBE-FW-, KUBE-XLB-) counts as taking it without looking inside (they DNAT
to an endpoint, or mark the packet for dropping: either way the container gets none
of it); any other chain is walked, and a rule in it takes the port if it would on
its own. A goto ends its chain for the packets it sends (they never come back to
the rules after it; a goto with conditions, `-p udp -g X`, leaves the other packets to
the rules after it): from another tool's chain they return to its caller, which goes
on; from PREROUTING (OUTPUT) itself there is no caller, and what the chain it went to
does not take meets the built-in chain's policy, ACCEPT: the plugin's jump further
down never sees it, as after an ACCEPT.

For a mapping of the plugin's nftables backend (`past_entry`) the question is another:
it has no iptables entry at all, and iptables' nat PREROUTING hooks at the priority
of cni_hostport's prerouting chain (dstnat, -100), its OUTPUT at that of cni_hostport's
output chain (-100: walked for a loopback host IP, as above). A rule anywhere in PREROUTING's walk
takes the port for iptables' hook: the jump to CNI-HOSTPORT-DNAT is passed by (that
chain holds no rule for the port unless an iptables mapping contests it, which
core/contest.py reports already), and none is needed. Which hook runs first no dump
shows: the nftables mapping is contested by that rule, not shadowed. An ACCEPT (or a
RETURN from PREROUTING itself, or the end of a chain PREROUTING went to with -g) takes
nothing from it: it ends iptables' nat table without a NAT binding, and the kernel then
calls the next nat hook at that hook point (nf_nat_inet_fn), the plugin's (an interop
test sends the packets).

The other iptables flavour's nat table (legacy beside iptables-nft) is such a table
for a row of either backend: it hooks at -100 too, and its own jump to
CNI-HOSTPORT-DNAT (a split brain, check's other problem) is passed by the same way
(`same_priority_takers`, ops/owners.py).

Another tool's rules are kept unsplit by the save parser (ruleset.parse_save); here
a rule is split only when a text test says it may matter: it names one of the wanted
ports, or none at all and has a target.
"""

from __future__ import annotations

import bisect
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Collection,
    Dict,
    FrozenSet,
    Iterable,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

from portmapctl.core.backend import Backend
from portmapctl.core.mapping import destined, loopback
from portmapctl.core.patterns import lazy
from portmapctl.iptables.chains import TOPLEVEL_DNAT
from portmapctl.iptables.lexer import split_words
from portmapctl.iptables.ruleset import BUILTIN_NAT_CHAINS, Args, NatTable
from portmapctl.iptables.shown import shown_line, shown_rule

if TYPE_CHECKING:
    from portmapctl.iptables.shapes import ProtoPort

# Reads a chain's rules (lexed, or a one-token placeholder: the saved line), None when
# there is no such chain (then the target is an extension such as MARK).
ChainReader = Callable[[str], Optional[Sequence[Args]]]

_TAKES = frozenset({"DNAT", "REDIRECT", "ACCEPT", "NETMAP"})
_KUBE_SERVICE = ("KUBE-EXT-", "KUBE-SVC-", "KUBE-SVL-", "KUBE-FW-", "KUBE-XLB-")
_MATCHES = frozenset({"comment", "tcp", "udp", "sctp", "multiport", "addrtype"})
_PORTS = lazy(r" --dports? ([0-9:,]+)")
_ADDRESSED = ("-s ", "-d ", "-i ", "-o ", "! -s ", "! -d ", "! -o ")
_DEPTH = 16  # chains on one path: far beyond any real node's nesting

Ranges = Optional[Tuple[Tuple[int, int], ...]]  # None: every port
Address = Union[IPv4Address, IPv6Address]


class _Rule(NamedTuple):
    """A rule's conditions, when all are benign. (NamedTuples, not dataclasses, here:
    add imports this module on every run, and a dataclass costs a millisecond.)"""

    proto: Optional[str]
    ports: Ranges
    target: Optional[str]
    goto: bool


def hook_of(host_ip: Optional[str]) -> str:
    """The nat chain whose rules come before the plugin's entry for a mapping on
    `host_ip`: OUTPUT for a loopback address (only the node's own connections reach
    it), else PREROUTING (the network's traffic, what a host port is for)."""
    return "OUTPUT" if loopback(host_ip) else "PREROUTING"


def hooked_takers(
    read: ChainReader,
    wanted: Mapping[Optional[str], Collection[ProtoPort]],
    entry_appended: bool = False,
) -> Dict[ProtoPort, str]:
    """`takers` of each destination's ports (`wanted`: by core/mapping.destination),
    merged: add's warning."""
    found: Dict[ProtoPort, str] = {}
    for dest, ports in wanted.items():
        found.update(takers(read, ports, entry_appended, dest=dest))
    return found


def takers(
    read: ChainReader,
    wanted: Collection[ProtoPort],
    entry_appended: bool = False,
    past_entry: bool = False,
    dest: Optional[str] = None,
    doubt: bool = False,
    output: bool = False,
    sources: Optional[Dict[ProtoPort, FrozenSet[str]]] = None,
) -> Dict[ProtoPort, str]:
    """(protocol, host port) -> the foreign rule, as iptables-save prints it, that takes
    it first. Nothing when PREROUTING has no jump to CNI-HOSTPORT-DNAT (then no mapping
    gets external traffic at all; that is another problem), unless `entry_appended`:
    add, whose write appends that jump where it is missing (the first container on a
    Docker node), judges all of PREROUTING then. `dest`: the one host IP the ports are
    mapped on (core/mapping.destination; None: every address); for a loopback one the
    walk is OUTPUT's, of the node's own connections (`hook_of`). `doubt`: a rule that
    would take a port but for a condition not judged (`-s`, `-i`, a mark: it takes some
    packets) takes it too, maybe: whose a flow is (flow_owners.taken_first), it may be
    that tool's, kept as nftables/foreign.py's `maybe` are. `output`: the packets are the
    node's own (a flow from one of its addresses): OUTPUT is walked, whatever `dest`.
    `sources`: filled, with doubt, for the ports only rules whose one condition not
    judged is `-s SPEC` may take: those SPECs (a flow from elsewhere is not theirs)."""
    if not wanted:
        return {}
    hook = "OUTPUT" if output else hook_of(dest)
    first = read(hook)
    if not first:
        return {}
    if not (entry_appended or past_entry) and not any(_jumps_to_entry(r) for r in first):
        return {}
    walk = _Walk(read, set(wanted), sorted({port for _, port in wanted}), past_entry)
    walk.doubt = doubt
    if dest is not None:
        walk.dest = ip_address(dest)
        walk.dest_text = f"{walk.dest}/{walk.dest.max_prefixlen}"  # as iptables prints it
    walk.known(hook, first)  # read once: a listing may cost a whole table
    walk.chain(hook, None, None, None, frozenset())
    if not doubt:
        return walk.taken
    if sources is not None:
        for proto_port, specs in walk.maybe_from.items():
            if proto_port not in walk.taken and specs is not None:
                sources[proto_port] = frozenset(specs)
    return {**walk.maybe, **walk.taken}


def nft_takers(
    tables: Mapping[int, NatTable], rows: Iterable[Any]
) -> Dict[Tuple[int, str, int, Optional[str]], str]:
    """(family, protocol, host port, destination: core/contest.hook_port_key) of the
    nftables rows (core Mappings of backend "nftables") -> the iptables rule that takes
    that port at the same hook priority (`past_entry`): in OUTPUT for a loopback host
    IP (cni_hostport's output chain and iptables' nat OUTPUT both hook at -100), else
    PREROUTING (`hook_of`). Nothing without an iptables table of the family."""
    return same_priority_takers(
        {family: table_reader(table) for family, table in tables.items()},
        (row for row in rows if getattr(row, "backend", None) == Backend.NFTABLES),
    )


def same_priority_takers(
    readers: Mapping[int, ChainReader], rows: Iterable[Any]
) -> Dict[Tuple[int, str, int, Optional[str]], str]:
    """hook_port_key of each row -> the rule of a nat table (`readers`, by family) that
    hooks at the row's own priority and takes its port, walked as past_entry (the
    table's own jump to CNI-HOSTPORT-DNAT passed by): an nftables row against
    iptables', or a row of either backend against the other iptables flavour's table
    (legacy's and iptables-nft's nat chains both hook at -100; ops/owners.py)."""
    from portmapctl.core.contest import hook_port_key

    wanted: Dict[Tuple[int, Optional[str]], Set[ProtoPort]] = {}
    for row in rows:
        if row.family in readers:
            family, proto, port, dest = hook_port_key(row)
            wanted.setdefault((family, dest), set()).add((proto, port))
    return {
        (family, proto, port, dest): rule
        for (family, dest), ports in wanted.items()
        for (proto, port), rule in takers(
            readers[family], ports, past_entry=True, dest=dest
        ).items()
    }


def listing_reader(list_chain: Callable[[str], Optional[str]]) -> ChainReader:
    """`iptables -S CHAIN` output (None: no such chain) as a ChainReader: each rule kept
    whole, as a one-token placeholder, split by the walk only when it may matter."""

    listed: Dict[str, Optional[Sequence[Args]]] = {}  # each chain listed once

    def read(chain: str) -> Optional[Sequence[Args]]:
        if chain not in listed:
            text = list_chain(chain)
            prefix = f"-A {chain} "
            # (None: no such chain, an extension target: MARK, LOG, ...)
            listed[chain] = (
                None
                if text is None
                else tuple((line,) for line in text.split("\n") if line.startswith(prefix))
            )
        return listed[chain]

    return read


def table_reader(table: NatTable) -> ChainReader:
    """A saved table as a ChainReader."""
    return lambda name: table.chains[name].rules if name in table.chains else None


def _jumps_to_entry(args: Args) -> bool:
    if len(args) == 1:
        return args[0].endswith(f" -j {TOPLEVEL_DNAT}")
    return len(args) >= 2 and args[-2] in ("-j", "-g") and args[-1] == TOPLEVEL_DNAT


class PortsLeft:
    """The ports a walk has not seen taken yet, and those taken (with the rule that
    takes each): what iptables' walk here and nftables/foreign.py's share."""

    def __init__(self, left: Set[ProtoPort]) -> None:
        self.left = left
        self.taken: Dict[ProtoPort, str] = {}

    def _covered(self, proto: Optional[str], ports: Ranges) -> FrozenSet[ProtoPort]:
        """The ports not yet taken that packets of `proto`/`ports` may be for."""
        return frozenset(
            proto_port
            for proto_port in self.left
            if (proto is None or proto == proto_port[0]) and within(proto_port[1], ports)
        )

    def _take(
        self, proto: Optional[str], ports: Ranges, text: str, returned: FrozenSet[ProtoPort]
    ) -> None:
        for proto_port in sorted(self._covered(proto, ports) - returned):
            self.taken[proto_port] = text
            self.left.discard(proto_port)

    def _leave(self, proto: Optional[str], ports: Ranges, returned: FrozenSet[ProtoPort]) -> None:
        """The ports whose packets leave the walked table without a NAT binding (an
        accept): no later rule of it sees them, and nothing here takes them."""
        self.left.difference_update(self._covered(proto, ports) - returned)


class _Walk(PortsLeft):
    """One walk's state: the ports not yet taken, those taken, chains read so far."""

    def __init__(
        self, read: ChainReader, left: Set[ProtoPort], numbers: List[int], past_entry: bool
    ) -> None:
        super().__init__(left)
        self.read = read
        self.past_entry = past_entry
        self.numbers = numbers  # sorted port numbers of `left`, for the text test
        self.dest: Optional[Address] = None  # the packets' host IP (None: any not loopback)
        self.dest_text = ""  # ... as `-d` prints it ("192.168.1.5/32")
        self._chains: Dict[str, Optional[Sequence[Args]]] = {}
        # With `doubt`: what a rule with a condition not judged would take (`takers`).
        self.doubt = False
        self.maybe: Dict[ProtoPort, str] = {}
        # ... and the sources (`-s`) those rules are for, None: any source.
        self.maybe_from: Dict[ProtoPort, Optional[Set[str]]] = {}

    def known(self, name: str, rules: Optional[Sequence[Args]]) -> None:
        """`name`'s rules, read already."""
        self._chains[name] = rules

    def rules(self, name: str) -> Optional[Sequence[Args]]:
        if name not in self._chains:
            self._chains[name] = self.read(name)
        return self._chains[name]

    def chain(
        self,
        name: str,
        proto: Optional[str],
        ports: Ranges,
        named: Optional[str],
        path: FrozenSet[str],
        returned: FrozenSet[ProtoPort] = frozenset(),
    ) -> bool:
        """Walks `name` for packets of `proto`/`ports` (the path's matches); `named` is
        the rule to report (the first on the path to match a port); `returned`: ports a
        RETURN on the path sent back already (no later rule of its chain sees them).
        True: the walk is over (the plugin's entry was reached, or nothing is left)."""
        path = path | {name}
        for args in self.rules(name) or ():
            if not self.left:
                return True
            if _jumps_to_entry(args):
                if self.past_entry:
                    continue  # an nftables port: back from CNI-HOSTPORT-DNAT untouched
                if self._entered(args, proto, ports, returned):
                    return True
                continue
            text = args[0] if len(args) == 1 else shown_rule("-A", name, args)
            if not self._may_matter(text):
                continue
            # (A rule of another tool's chain is its raw line: what is reported of it
            # has its control characters written out, never sent to a terminal.)
            text = shown_line(text)
            rule = _read(args, self.dest)
            if rule is None:
                if self.doubt:
                    self._doubtful(name, args, text, proto, ports, named, path, returned)
                continue  # a condition that not every packet meets (or unreadable)
            rule_proto = rule.proto or proto
            if proto and rule.proto and rule.proto != proto:
                continue
            rule_ports = intersect(ports, rule.ports)
            if rule_ports == ():
                continue
            reported = named or (text if rule.ports is not None else None)
            target = rule.target
            if target == "ACCEPT" or (target == "RETURN" and name in BUILTIN_NAT_CHAINS):
                self._end_table(rule_proto, rule_ports, reported or text, returned)
            elif target in _TAKES:
                self._take(rule_proto, rule_ports, reported or text, returned)
            elif target == "RETURN":
                if rule.proto is None and rule.ports is None:
                    return False  # every packet here goes back
                # Some go back (a proxy's `--dport 22 -j RETURN` before its REDIRECT):
                # the rest of this chain never sees them.
                returned = returned | self._covered(rule_proto, rule_ports)
            elif target and target.startswith(_KUBE_SERVICE) and rule.ports is not None:
                self._take(rule_proto, rule_ports, reported or text, returned)
            elif (
                target
                and target not in path
                and len(path) < _DEPTH
                and not target.startswith("CNI-")
            ):
                if self.rules(target) is None:
                    continue  # an extension (MARK, LOG, ...): the packet goes on
                if self.chain(target, rule_proto, rule_ports, reported, path, returned):
                    return True
                if rule.goto and name in BUILTIN_NAT_CHAINS:
                    # No caller to return to: what its chain did not take meets the
                    # built-in chain's policy, ACCEPT, as if accepted here.
                    self._end_table(rule_proto, rule_ports, reported or text, returned)
                elif rule.goto:
                    # What it sends never comes back to this chain (its end returns
                    # to the caller's caller); the other packets go on here.
                    if rule.proto is None and rule.ports is None:
                        return False
                    returned = returned | self._covered(rule_proto, rule_ports)
        return False

    def _entered(
        self, args: Args, proto: Optional[str], ports: Ranges, returned: FrozenSet[ProtoPort]
    ) -> bool:
        """A jump to CNI-HOSTPORT-DNAT: the ports it sends there are the plugin's (no
        later rule sees their packets). True when no port is left: the plugin's own
        jump takes every one. A jump for some ports alone (an operator's `-I PREROUTING
        1 -p tcp --dport 9443 -j CNI-HOSTPORT-DNAT`, to beat Docker on that port) leaves
        the other ports' packets to the rules after it, which may take them (the walk
        ended at any such jump: a Docker DNAT after it shadowed nothing). A condition
        not judged (`-s`, `-i`) sends some packets of its ports there: those ports
        are not called shadowed by a later rule (no false alarm)."""
        rule = _read(args, self.dest) or _read_lenient(args, self.dest)
        if rule is None:
            return True  # unreadable: as if it took every port
        if proto and rule.proto and rule.proto != proto:
            return False
        rule_ports = intersect(ports, rule.ports)
        if rule_ports == ():
            return False
        self._leave(rule.proto or proto, rule_ports, returned)
        return not self.left

    def _doubtful(
        self,
        name: str,
        args: Args,
        text: str,
        proto: Optional[str],
        ports: Ranges,
        named: Optional[str],
        path: FrozenSet[str],
        returned: FrozenSet[ProtoPort],
    ) -> None:
        """A rule with a condition not judged, walked as if it held: what it (or the
        chain it jumps to) takes goes to `maybe`; the walk goes on as if it did not
        hold (the ports stay left: later rules see the other packets)."""
        rule = _read_lenient(args, self.dest)
        if rule is None or not rule.target:
            return
        source = _only_source(args, self.dest)
        if proto and rule.proto and rule.proto != proto:
            return
        rule_proto = rule.proto or proto
        rule_ports = intersect(ports, rule.ports)
        if rule_ports == ():
            return
        reported = named or text
        left, taken = set(self.left), dict(self.taken)
        target = rule.target
        if target == "ACCEPT" or (target == "RETURN" and name in BUILTIN_NAT_CHAINS):
            self._end_table(rule_proto, rule_ports, reported, returned)
        elif target in _TAKES or target.startswith(_KUBE_SERVICE):
            self._take(rule_proto, rule_ports, reported, returned)
        elif (
            target not in path
            and len(path) < _DEPTH
            and not target.startswith("CNI-")
            and self.rules(target) is not None
        ):
            over = self.chain(target, rule_proto, rule_ports, reported, path, returned)
            if rule.goto and not over and name in BUILTIN_NAT_CHAINS:
                # As chain(): what its chain did not take meets the built-in chain's
                # policy, ACCEPT (the plugin's jump further down never sees it).
                self._end_table(rule_proto, rule_ports, reported, returned)
        for key, rule_text in self.taken.items():
            if key not in taken:
                self.maybe.setdefault(key, rule_text)
                if key not in self.maybe_from:
                    self.maybe_from[key] = None if source is None else {source}
                elif self.maybe_from[key] is not None:
                    if source is None:
                        self.maybe_from[key] = None
                    else:
                        self.maybe_from[key].add(source)  # type: ignore[union-attr]
        self.left, self.taken = left, taken

    def _end_table(
        self, proto: Optional[str], ports: Ranges, text: str, returned: FrozenSet[ProtoPort]
    ) -> None:
        """Packets that leave the nat table here unNATed: the plugin's jump further down
        never sees them (taken); for an nftables mapping (`past_entry`) the kernel then
        calls the next nat hook, the plugin's chain, which DNATs them (left)."""
        if self.past_entry:
            self._leave(proto, ports, returned)
        else:
            self._take(proto, ports, text, returned)

    def _may_matter(self, text: str) -> bool:
        """The text test: a rule naming ports matters only when one is wanted; a rule
        with no target (a counter) never."""
        # iptables-save (and -S) print -s, -d, -i, -o first, right after the chain:
        # kube-proxy's ClusterIP rules (`-d 10.96.0.1/32 ... --dport 80`), thousands
        # of them, are passed by here, unsplit, even when port 80 is mapped, unless the
        # walk is for one destination (`-d` is judged then: all or nothing).
        start = text.find(" ", 3) + 1  # (after the chain's name)
        judged = False  # a `-d` judged for the walk's one destination
        if text.startswith(_ADDRESSED, start):
            if self.dest is not None and text.startswith(("-d ", "! -d "), start):
                judged = True
            elif not (self.doubt or text.startswith(("! -d 127.", "! -d ::1/"), start)):
                return False
        found = _PORTS.search(text)
        if found is None:
            matters = " -j " in text or " -g " in text
        else:
            matters = _covers_any(_ranges(found.group(1)), self.numbers)
        # A rule for another address than the walk's (a ClusterIP's, 10.96.0.1:80, on a
        # node whose mapping is on 192.168.1.5:80) is passed unsplit too.
        return matters and not (judged and self._for_another_address(text, start))

    def _for_another_address(self, text: str, start: int) -> bool:
        """Whether the rule's `-d` (`! -d`) right at `start` holds for none of the
        walk's packets (those for `dest`): what `_read` would find, without the split."""
        negated = text.startswith("!", start)
        word = start + (6 if negated else 3)
        end = text.find(" ", word)
        spec = text[word : end if end >= 0 else None]
        if spec == self.dest_text:
            holds: Optional[bool] = True
        elif self.dest_text.endswith("/32") and spec.endswith("/32"):
            holds = False  # (iptables prints an IPv4 address one way: no parse needed)
        else:
            holds = destined(spec, self.dest)
        return holds is not None and holds == negated


# `-p` as iptables-save may print it (a number) -> the name a mapping's protocol has.
_PROTOCOLS: Dict[str, Optional[str]] = {"6": "tcp", "17": "udp", "132": "sctp", "all": None}


def _words(args: Args) -> Optional[Args]:
    """A rule's arguments: as given, or split from its saved line (`-A CHAIN ...`,
    one string); None when that line does not split (an unclosed quote)."""
    if len(args) != 1:
        return args
    try:
        return tuple(split_words(args[0])[2:])
    except ValueError:
        return None


def _read(args: Args, dest: Optional[Address] = None) -> Optional[_Rule]:
    """The rule's protocol, ports and target, or None when a condition is not benign.
    `dest`: the packets' one host IP (None: any address of the node not loopback)."""
    words = _words(args)
    if words is None:
        return None
    args = words
    proto: Optional[str] = None
    ports: Ranges = None
    i, n = 0, len(args)
    while i < n:
        word = args[i]
        value = args[i + 1] if i + 1 < n else ""
        if word in ("-j", "-g"):
            return _Rule(proto, ports, value or None, word == "-g")
        if word == "!" and value == "-i":
            i += 3  # `! -i IF`: the plugin's entry takes traffic from every interface
            continue
        if word == "-d" or (word == "!" and value == "-d"):
            # `-d SPEC` (`! -d SPEC`): for all of the walk's packets or for none.
            negated = word == "!"
            spec = (args[i + 2] if i + 2 < n else "") if negated else value
            holds = destined(spec, dest)
            if holds is None:
                return None  # for some of them only
            if holds == negated:
                return _Rule(proto, (), None, False)  # matches none of the packets
            i += 3 if negated else 2
            continue
        if word == "!":
            return None  # any other negated condition: some packets only
        if word == "-p":
            proto = _PROTOCOLS.get(value, value)
        elif word == "-m":
            if value not in _MATCHES:
                return None
        elif word in ("--dport", "--dports"):
            ports = _ranges(value)
        elif word == "--dst-type":
            if value != "LOCAL":
                return None
        elif word != "--comment":
            return None
        i += 2
    return _Rule(proto, ports, None, False)


def _read_lenient(args: Args, dest: Optional[Address] = None) -> Optional[_Rule]:
    """_read of a rule as if its conditions not judged held: its protocol, ports, a
    `-d` (for none of the packets: matches none) and target. None: unreadable."""
    words = _words(args)
    if words is None:
        return None
    args = words
    proto: Optional[str] = None
    ports: Ranges = None
    for i, word in enumerate(args):
        value = args[i + 1] if i + 1 < len(args) else ""
        negated = i > 0 and args[i - 1] == "!"
        if word in ("-j", "-g"):
            return _Rule(proto, ports, value or None, word == "-g")
        if word == "-p" and not negated:
            proto = _PROTOCOLS.get(value, value)
        elif word in ("--dport", "--dports") and not negated:
            ports = _ranges(value)
        elif word == "-d" and destined(value, dest) == negated:
            return _Rule(proto, (), None, False)  # matches none of the packets
    return None


def _only_source(args: Args, dest: Optional[Address] = None) -> Optional[str]:
    """The SPEC of a rule whose one condition _read does not judge is `-s SPEC`: its
    packets are those of these sources alone. None: another condition (or none)."""
    words = _words(args)
    if words is None:
        return None
    args = words
    at = [i for i, word in enumerate(args) if word == "-s"]
    if len(at) != 1 or (at[0] > 0 and args[at[0] - 1] == "!") or at[0] + 1 >= len(args):
        return None
    i = at[0]
    if _read(args[:i] + args[i + 2 :], dest) is None:
        return None
    return args[i + 1]


def _ranges(spec: str) -> Tuple[Tuple[int, int], ...]:
    found = []
    for part in spec.split(","):
        low, _, high = part.partition(":")
        try:
            found.append((int(low or 0), int(high or 65535) if _ else int(low)))
        except ValueError:
            continue
    return tuple(found)


def intersect(outer: Ranges, inner: Ranges) -> Ranges:
    if outer is None:
        return inner
    if inner is None:
        return outer
    return tuple(
        (max(a, c), min(b, d)) for a, b in outer for c, d in inner if max(a, c) <= min(b, d)
    )


def within(port: int, ports: Ranges) -> bool:
    return ports is None or any(low <= port <= high for low, high in ports)


def _covers_any(ports: Tuple[Tuple[int, int], ...], numbers: Sequence[int]) -> bool:
    for low, high in ports:
        at = bisect.bisect_left(numbers, low)
        if at < len(numbers) and numbers[at] <= high:
            return True
    return False
