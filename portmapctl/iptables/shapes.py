"""The portmap plugin's iptables shapes, version by version: the one catalogue.

Nodes in the field carry chains written by every plugin version since portmap first
shipped (v0.6.0, 2017). Each version's text is described here once, with the version
range and the source it was read from, as pure functions over rules in saved form
(tuples of tokens exactly as `iptables-save` prints them, `ruleset.py`). `list`,
`check` and `gc` read old nodes through these functions; `add` writes only the current
shape (`chains.py`); an older shape that works is left alone, and `--repair` puts back
what a chain lost in the shape its plugin wrote, where the chain shows which (as_written).

Sources: containernetworking/plugins, `git show vX:plugins/meta/portmap/portmap.go` and
`chain.go` (fillDnatRules / dnatRules / snatRules and chain.setup), and for masqAll the
real upstream v1.9.1 binary (reference/upstream/FACTS.md). Fixtures showing each shape:
tests/fixtures/field/ (README.md there says which are posted dumps, which derived).

The shapes (IPv4 text; IPv6 alike with ::1-less rules and /128):

  v0.6.x        entry `-m comment --comment "dnat name: ..." [conditions] -j CNI-DN-x`,
                no port match, prepended to CNI-HOSTPORT-DNAT; the DN chain holds only
                `-p P --dport N [-d HOSTIP] -j DNAT` rules; SNAT for localhost is a
                separate `CNI-SN-x` chain (same hash) entered from CNI-HOSTPORT-SNAT:
                `-s 127.0.0.1/32 -d PODIP/32 -p P --dport CONTAINERPORT -j MASQUERADE`.
                No SETMARK/MASQ chains.
  v0.7.0-v0.8.5 multiport entry rules (as today); hairpin mark on `-s PODIP/32` (the
                bare container address); v0.7.0-v0.7.4 prepend their entries and
                rules, v0.7.5 on append (plugins f8fcb352; the text is the same).
  v0.8.6 on     hairpin mark on `-s POD-SUBNET` (the current shape; Debian's 1.1.1).
  < v0.8.7      a hostIP of 0.0.0.0 (or ::) is written as `-d 0.0.0.0/32` (`-d ::/128`),
                which matches no packet (plugins#643, fixed by plugins#487): dead.
  v1.2.0 on     `masqAll: true`: hairpin mark without `-s` (0.0.0.0/0 is not printed)
                and no localhost mark rule.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from enum import Enum
from typing import Dict, FrozenSet, List, NamedTuple, Optional, Sequence, Set, Tuple

from portmapctl.core.mapping import MappingConfig
from portmapctl.iptables.chains import (
    DNAT_PREFIX,
    SETMARK,
    SNAT_PREFIX,
    TOPLEVEL_DNAT,
    Chain,
    dnat_chain,
    dnat_chain_name,
)
from portmapctl.iptables.normal_form import normalize
from portmapctl.iptables.ruleset import Args, NatTable, options, rule_target

ProtoPort = Tuple[str, int]

# Unspecified addresses as iptables-save prints a `-d` of them: a /32 (/128) that no
# packet carries as its destination.
_DEAD_DESTINATIONS = frozenset({"0.0.0.0/32", "::/128"})
_LOCALHOST = "127.0.0.1/32"


class Shape(str, Enum):
    """A per-container chain's shape, named by the plugin versions that write it."""

    V0_6 = "v0.6"  # DNAT rules only, port-less entry rules (+ a CNI-SN- chain)
    HAIRPIN_HOST = "v0.7-v0.8.5"  # hairpin mark on -s PODIP/32
    CURRENT = "v0.8.6+"  # hairpin mark on -s POD-SUBNET (what add/--repair write)
    MASQ_ALL = "v1.2+ masqAll"  # hairpin mark without -s, no localhost rule


class EntryShape(str, Enum):
    """How a CNI-HOSTPORT-DNAT rule that jumps to a CNI-DN- chain says which ports."""

    MULTIPORT = "multiport"  # v0.7.0 on: -p P -m multiport --dports LIST
    PORTLESS = "portless"  # v0.6.x: no port match, every packet enters the chain


class Role(str, Enum):
    """What one rule of a CNI-DN- chain does."""

    DNAT = "dnat"
    HAIRPIN_SUBNET = "hairpin-subnet"  # v0.8.6 on
    HAIRPIN_HOST = "hairpin-host"  # v0.7.0 - v0.8.5
    HAIRPIN_ALL = "hairpin-all"  # masqAll, v1.2.0 on
    LOCALHOST = "localhost"  # -s 127.0.0.1/32, every version with SETMARK (v0.7 on)
    MARK = "mark"  # a mark rule of no known source shape


@dataclasses.dataclass(frozen=True)
class PortRule:
    """One per-port rule of a CNI-DN- chain, read."""

    role: Role
    protocol: str
    host_port: int
    host_ip: Optional[str]  # the -d address without prefix, None without -d
    dead: bool  # -d 0.0.0.0/32 or ::/128 (before v0.8.7): the rule never matches
    source: Optional[str]  # the -s value as printed
    container_ip: Optional[str] = None  # DNAT rules only
    container_port: Optional[int] = None


def is_dead_destination(value: Optional[str]) -> bool:
    """`-d 0.0.0.0/32` / `-d ::/128`: plugins before v0.8.7 wrote a hostIP of 0.0.0.0
    (or ::) as a destination match (plugins#643), and no packet is sent to it."""
    return value in _DEAD_DESTINATIONS


class Destination(NamedTuple):
    """A DNAT target's --to-destination."""

    address: str
    port: int


def split_destination(value: str) -> Optional[Destination]:
    """`10.88.0.5:80` or `[fd00::5]:80` -> (address, port); None without a port. An
    IPv6 address has its port only in brackets: `fd00:88::5` (a DNAT to the address
    alone, as ip6tables-save prints it) is no `fd00:88:` port 5."""
    if value.startswith("["):
        address, _, port = value[1:].partition("]:")
    elif value.count(":") > 1:
        return None
    else:
        address, _, port = value.rpartition(":")
    if not address or not port.isdigit():
        return None
    return Destination(address, int(port))


def classify_rule(args: Sequence[str]) -> Optional[PortRule]:
    """Read one rule of a CNI-DN- chain; None for a rule without `-p P --dport N`.

    A mark rule's role needs the container address (a /32 hairpin is the container's
    own address, v0.7-v0.8.5); `classify_chain` fills that in. Here a host-length
    source other than 127.0.0.1 is taken as HAIRPIN_HOST, any shorter one as
    HAIRPIN_SUBNET.
    """
    opts = options(args)
    proto = opts.get("-p")
    port = opts.get("--dport")
    if not proto or not port or not port.isdigit():
        return None
    destination = opts.get("-d")
    dead = is_dead_destination(destination)
    host_ip = destination.split("/", 1)[0] if destination else None
    source = opts.get("-s")
    target = rule_target(args)
    if target == "DNAT":
        to = split_destination(opts.get("--to-destination") or "")
        if to is None:
            return None
        return PortRule(Role.DNAT, proto, int(port), host_ip, dead, source, to.address, to.port)
    if target is None:
        return None
    if source is None:
        role = Role.HAIRPIN_ALL
    elif source == _LOCALHOST:
        role = Role.LOCALHOST
    elif source.endswith(("/32", "/128")):
        role = Role.HAIRPIN_HOST
    else:
        role = Role.HAIRPIN_SUBNET
    return PortRule(role, proto, int(port), host_ip, dead, source)


def classify_chain(rules: Sequence[Args]) -> Tuple[Optional[Shape], Tuple[PortRule, ...]]:
    """The shape of a CNI-DN- chain's rules and each per-port rule, read.

    The shape is told by the hairpin mark rules (all alike in one chain): on the
    container's address (/32, /128) v0.7-v0.8.5, on its subnet v0.8.6 on, with no
    source masqAll. Without mark rules (v0.6, or `snat: false` in any version) the
    rules alone cannot tell: None. A /32 source that is not the address the chain
    DNATs to is a mark of no known shape (Role.MARK).
    """
    read = [r for r in (classify_rule(args) for args in rules) if r is not None]
    # A port's DNAT targets: several where a container's interfaces on one network
    # share the chain (Multus: each ADD appends its rules), each marking its own address.
    targets: Dict[ProtoPort, Set[Optional[str]]] = {}
    for r in read:
        if r.role is Role.DNAT:
            targets.setdefault((r.protocol, r.host_port), set()).add(r.container_ip)
    fixed: List[PortRule] = []
    for rule in read:
        if rule.role is Role.HAIRPIN_HOST:
            own = targets.get((rule.protocol, rule.host_port), set())
            if (rule.source or "").split("/", 1)[0] not in own:
                rule = dataclasses.replace(rule, role=Role.MARK)
        fixed.append(rule)
    roles = {r.role for r in fixed}
    shape: Optional[Shape] = None
    if Role.HAIRPIN_HOST in roles:
        shape = Shape.HAIRPIN_HOST
    elif Role.HAIRPIN_ALL in roles:
        shape = Shape.MASQ_ALL
    elif Role.HAIRPIN_SUBNET in roles:
        shape = Shape.CURRENT
    return shape, tuple(fixed)


# --- entry rules ----------------------------------------------------------------------


def classify_entry(args: Sequence[str]) -> Optional[EntryShape]:
    """The shape of a CNI-HOSTPORT-DNAT rule that jumps to a CNI-DN- chain (None for a
    rule that jumps elsewhere)."""
    target = rule_target(args)
    if target is None or not target.startswith(DNAT_PREFIX):
        return None
    opts = options(args)
    if "--dports" in opts or "--dport" in opts or "--ports" in opts:
        return EntryShape.MULTIPORT
    return EntryShape.PORTLESS


def _listed_ports(proto: Optional[str], ports: Optional[str]) -> Tuple[ProtoPort, ...]:
    if not proto or not ports:
        return ()
    found: List[ProtoPort] = []
    for part in ports.split(","):
        low, _, high = part.partition(":")
        if low.isdigit() and (not high or high.isdigit()):
            found += [(proto, p) for p in range(int(low), int(high or low) + 1)]
    return tuple(found)


def entry_ports(args: Sequence[str], chain_rules: Sequence[Args]) -> Tuple[ProtoPort, ...]:
    """The ports an entry rule sends to its chain.

    A multiport rule (v0.7 on) names them. A port-less one (v0.6) sends every packet
    that reaches it, so it claims every port its chain DNATs: the first port-less
    entry to DNAT tcp/8080 takes tcp/8080 from every entry after it.
    """
    shape = classify_entry(args)
    opts = options(args)
    if shape is EntryShape.PORTLESS:
        found = {}
        for rule in chain_rules:
            read = classify_rule(rule)
            if read is not None and read.role is Role.DNAT:
                found[(read.protocol, read.host_port)] = None
        return tuple(found)
    return _listed_ports(opts.get("-p"), opts.get("--dports") or opts.get("--dport"))


def first_taker(
    table: NatTable, proto: str, port: int, after: int, host_ip: Optional[str] = None
) -> Optional[str]:
    """The CNI-DN- chain that takes proto/port among CNI-HOSTPORT-DNAT's rules after
    index `after` (None: nothing does, the packet goes on to the node itself).

    What iptables does with a packet whose entry rule matched but whose chain has no
    matching rule: the chain returns, and the next rule of CNI-HOSTPORT-DNAT is tried.
    A chain takes the port only with a DNAT rule for it that can match (not dead, a
    host IP that overlaps `host_ip`).
    """
    for rule in table.rules(TOPLEVEL_DNAT)[after + 1 :]:
        target = rule_target(rule)
        if target is None or not target.startswith(DNAT_PREFIX):
            continue
        chain_rules = table.rules(target)
        if (proto, port) not in entry_ports(rule, chain_rules):
            continue
        for args in chain_rules:
            read = classify_rule(args)
            if (
                read is not None
                and read.role is Role.DNAT
                and (read.protocol, read.host_port) == (proto, port)
                and not read.dead
                and (read.host_ip is None or host_ip is None or read.host_ip == host_ip)
            ):
                return target
    return None


# --- legacy CNI-SN- chains (v0.6) -------------------------------------------------------


def paired_dnat_chain(snat_chain: str) -> str:
    """CNI-SN-<hash> -> CNI-DN-<hash>: v0.6 named both chains of one container (network
    + container ID) with the same hash, so the pair is one container's."""
    return DNAT_PREFIX + snat_chain[len(SNAT_PREFIX) :]


def paired_snat_chain(dnat_chain_name: str) -> str:
    return SNAT_PREFIX + dnat_chain_name[len(DNAT_PREFIX) :]


def legacy_masquerades(rules: Sequence[Args]) -> FrozenSet[Tuple[str, str, int]]:
    """(protocol, container IP, container port) a v0.6 CNI-SN- chain masquerades.

    v0.6's snatRules: `-p P -s 127.0.0.1 -d PODIP --dport CONTAINERPORT -j MASQUERADE`,
    the localhost SNAT of the DN chain's mapping to that container port.
    """
    found = set()
    for args in rules:
        if rule_target(args) != "MASQUERADE":
            continue
        opts = options(args)
        proto, port, dest = opts.get("-p"), opts.get("--dport"), opts.get("-d")
        if proto and port and port.isdigit() and dest:
            found.add((proto, dest.split("/", 1)[0], int(port)))
    return frozenset(found)


# --- the shapes a cached config may be found in ----------------------------------------


def _unspecified_host_ports(config: MappingConfig, family: int) -> FrozenSet[ProtoPort]:
    """The ports with host IP 0.0.0.0 (::): versions before v0.8.7 wrote `-d` of it."""
    return frozenset(
        (p.protocol, p.host_port)
        for p in config.ports
        if p.applies_to(family) and p.host_ip and ipaddress.ip_address(p.host_ip).is_unspecified
    )


def _as_written_before_v0_8_7(chain: Chain, dead: FrozenSet[ProtoPort], family: int) -> Chain:
    """`chain` with `-d 0.0.0.0/32` (`-d ::/128`) on the rules of `dead` ports, where
    iptables-save prints it (after -s, before -p): how those versions wrote host IP
    0.0.0.0. Such a chain never matches (status dead); found exactly, it is its
    version's shape, and --repair writing the current one would bring the mapping back
    and take its port from whichever container gets it now."""
    unspecified = "::/128" if family == 6 else "0.0.0.0/32"
    rules = []
    for args in chain.rules:
        read = classify_rule(args)
        if read is not None and read.host_ip is None and (read.protocol, read.host_port) in dead:
            at = args.index("-p")
            args = (*args[:at], "-d", unspecified, *args[at:])
        rules.append(args)
    return dataclasses.replace(chain, rules=tuple(rules))


def accepted_chains(config: MappingConfig, family: int) -> List[Tuple[Shape, Chain]]:
    """Every shape in which a plugin version would have made this container's CNI-DN-
    chain, the current one first. Each is healthy when found exactly (SPEC §2)."""
    current = dnat_chain(config, family)
    if current is None:
        return []
    found = [(Shape.MASQ_ALL if config.masq_all else Shape.CURRENT, current)]
    if config.masq_all:
        # Plugins before v1.2.0 (Debian's 1.1.1 among them) ignore the key.
        found.append((Shape.CURRENT, _plain(config, family) or current))
    dead = _unspecified_host_ports(config, family)
    return found + (_dead_chains(config, family, dead) if dead else _older_chains(config, family))


def _plain(config: MappingConfig, family: int) -> Optional[Chain]:
    """The chain as versions before v1.2.0 made it: without `masqAll`."""
    return dnat_chain(dataclasses.replace(config, masq_all=False), family)


def _older_chains(config: MappingConfig, family: int) -> List[Tuple[Shape, Chain]]:
    """The chain as versions before v0.8.6 made it (v0.7-v0.8.5, v0.6)."""
    plain = _plain(config, family)
    if plain is None:
        return []
    older: List[Tuple[Shape, Chain]] = []
    address = config.address(family)
    if config.snat and address is not None:
        own = f"{address.ip.compressed}/{address.max_prefixlen}"
        hairpin = str(address.network)
        rules = tuple(
            tuple(own if (i > 0 and args[i - 1] == "-s" and tok == hairpin) else tok
                  for i, tok in enumerate(args))
            for args in plain.rules
        )  # fmt: skip
        older.append((Shape.HAIRPIN_HOST, dataclasses.replace(plain, rules=rules)))
    conditions = config.conditions_v6 if family == 6 else config.conditions_v4
    comment = next(
        (args[i + 1] for args in plain.entry_rules for i, t in enumerate(args) if t == "--comment"),
        None,
    )
    if comment is not None:
        entry = normalize(
            ["-m", "comment", "--comment", comment, *conditions, "-j", plain.name], family
        )
        dnat_only = tuple(r for r in plain.rules if rule_target(r) == "DNAT")
        older.append(
            (Shape.V0_6, dataclasses.replace(plain, rules=dnat_only, entry_rules=(entry,)))
        )
    return older


def _dead_chains(
    config: MappingConfig, family: int, dead: FrozenSet[ProtoPort]
) -> List[Tuple[Shape, Chain]]:
    """The chain as v0.8.6, v0.7-v0.8.5 and v0.6 made it for host IP 0.0.0.0 (the
    ports `dead`): dead (_as_written_before_v0_8_7)."""
    plain = _plain(config, family)
    if plain is None:
        return []
    return [
        (shape, _as_written_before_v0_8_7(chain, dead, family))
        for shape, chain in [(Shape.CURRENT, plain), *_older_chains(config, family)]
    ]


def as_found(config: MappingConfig, family: int, live: NatTable) -> Optional[Tuple[Shape, Chain]]:
    """The accepted shape the live chain is in (its rules exactly), else None."""
    current = dnat_chain(config, family)
    if current is None or not live.has_chain(current.name):
        # Every shape has the one chain name: a missing chain is in none (and building
        # the older shapes of 5,000 missing chains was a third of a repair's diagnosis).
        return None
    if live.rules(current.name) == current.rules:
        return (Shape.MASQ_ALL if config.masq_all else Shape.CURRENT), current  # the usual case
    for shape, chain in accepted_chains(config, family):
        if live.rules(chain.name) == chain.rules:
            return shape, chain
    return None


def as_written(config: MappingConfig, family: int, live: NatTable) -> Optional[Tuple[Shape, Chain]]:
    """as_found; else the shape the plugin that wrote the live chain wants, however
    much of the chain is left, where the chain shows which plugin that was:

    - a rule of a host-IP-0.0.0.0 port written `-d 0.0.0.0/32` (before v0.8.7), or,
      for a config with such a port, a shape older than v0.8.6 (_written_before_v0_8_6):
      that version's dead shape closest to what is left (_dead_shape_left). Its lost
      rules come back dead; the current shape would bring the mapping to life and take
      its port from whichever container gets it now.
    - hairpin marks on the container's own address (/32, /128) where that is not its
      whole subnet: the v0.7 - v0.8.5 shape (_older). Its lost rules come back
      as that version wrote them; its marks are not `extra`. So for v0.6's shape (no
      mark rules), where its port-less entry rule or CNI-SN- twin shows it.
    - for a `masqAll` config, mark rules on the subnet: the shape of a plugin that
      ignores the key (before v1.2: Debian's 1.1.1). That plugin wants it so: its
      lost rules are missing, its mark rules not `extra`, and a repair gives back its
      chain (its CHECK passes again), not upstream's masqAll shape.
    """
    found = as_found(config, family, live)
    if found is not None:
        return found
    current = dnat_chain(config, family)
    if current is None or not live.has_chain(current.name):
        return None  # (a missing chain is in no shape)
    dead = _unspecified_host_ports(config, family)
    rules = live.rules(current.name)
    if dead and _written_dead_there(config, family, live, dead):
        return _dead_shape_left(config, family, live, dead)
    shown = classify_chain(rules)[0]
    if shown is Shape.HAIRPIN_HOST:
        return _older(config, family, Shape.HAIRPIN_HOST)
    if shown is None and _v0_6_there(current.name, live):
        return _older(config, family, Shape.V0_6)
    if not config.masq_all or shown is not Shape.CURRENT:
        return None
    plain = _plain(config, family)
    return None if plain is None else (Shape.CURRENT, plain)


def _older(config: MappingConfig, family: int, shape: Shape) -> Optional[Tuple[Shape, Chain]]:
    """The chain in an older version's `shape` (v0.7 - v0.8.5, v0.6), for a live chain
    that shows that version wrote it: it wants its lost rules back so (its own rules
    are not `extra`; a repair does not rewrite them in the current shape). None for
    the v0.7 - v0.8.5 shape where the pod address is its whole subnet (a /32): then
    the current plugin marks that very /32, and the current shape is the one."""
    address = config.address(family)
    if shape is Shape.HAIRPIN_HOST and (
        address is None or address.network.prefixlen == address.max_prefixlen
    ):
        return None
    return next(((s, c) for s, c in _older_chains(config, family) if s is shape), None)


def _v0_6_there(name: str, live: NatTable) -> bool:
    """Whether v0.6 wrote the chain `name`: its paired CNI-SN- chain, or a port-less
    entry rule to it (_written_before_v0_8_6 without the mark rules' word)."""
    return live.has_chain(paired_snat_chain(name)) or name in _portless_targets(live)


def _portless_targets(live: NatTable) -> FrozenSet[Optional[str]]:
    """The chains a port-less entry rule (v0.6's) enters, indexed once per table."""
    return live.derived(
        "portless-entry-targets",
        lambda table: frozenset(
            rule_target(r)
            for r in table.rules(TOPLEVEL_DNAT)
            if classify_entry(r) is EntryShape.PORTLESS
        ),
    )


def _written_dead_there(
    config: MappingConfig, family: int, live: NatTable, dead: FrozenSet[ProtoPort]
) -> bool:
    """Whether the live chain is what a version before v0.8.7 wrote for the 0.0.0.0
    ports `dead`: a rule of one carries the dead `-d`, or the chain is in a shape older
    than v0.8.6; and no rule of one is written live (without `-d`: a chain that says
    both is kept as it works, in the current shape, rather than killed)."""
    name = dnat_chain_name(config)
    rules = live.rules(name)
    ours = [
        r
        for r in (classify_rule(args) for args in rules)
        if r is not None and (r.protocol, r.host_port) in dead
    ]
    if any(r.host_ip is None for r in ours):
        return False
    return any(r.dead for r in ours) or _written_before_v0_8_6(config, family, live)


def _written_before_v0_8_6(config: MappingConfig, family: int, live: NatTable) -> bool:
    """Whether the chain shows a version before v0.8.6 (every one of them wrote host IP
    0.0.0.0 dead) even where its 0.0.0.0 ports' rules are gone: a port-less entry rule
    or the paired CNI-SN- chain (v0.6), or hairpin marks on the container's own
    address (v0.7-v0.8.5) where that is not its whole subnet (a /32 pod address, as
    Calico's, has the current plugin mark that very /32)."""
    name = dnat_chain_name(config)
    if live.has_chain(paired_snat_chain(name)) or name in _portless_targets(live):
        return True
    address = config.address(family)
    if address is None or address.network.prefixlen == address.max_prefixlen:
        return False
    return classify_chain(live.rules(name))[0] is Shape.HAIRPIN_HOST


def _dead_shape_left(
    config: MappingConfig, family: int, live: NatTable, dead: FrozenSet[ProtoPort]
) -> Optional[Tuple[Shape, Chain]]:
    """Of the shapes versions before v0.8.7 wrote for this config (accepted_chains'
    dead ones: v0.8.6, v0.7-v0.8.5, v0.6), the one sharing the most rules with the
    live chain and its entry rules; on a tie the one the chain shows (its mark rules,
    a CNI-SN- twin for v0.6), else the first (v0.8.6's)."""
    candidates = _dead_chains(config, family, dead)
    if not candidates:
        return None
    name = candidates[0][1].name
    rules = set(live.rules(name))
    entries = {r for r in live.rules(TOPLEVEL_DNAT) if rule_target(r) == name}

    shown = classify_chain(live.rules(name))[0]
    if shown is None and live.has_chain(paired_snat_chain(name)):
        shown = Shape.V0_6

    def left(candidate: Tuple[Shape, Chain]) -> Tuple[int, bool]:
        chain = candidate[1]
        kept = len(rules.intersection(chain.rules)) + len(entries.intersection(chain.entry_rules))
        return kept, candidate[0] is shown  # (on a tie, the shape the chain shows)

    return max(candidates, key=left)  # max keeps the first of equals


# --- the shared chains, without a cache ------------------------------------------------


def mark_bit_in(table: NatTable) -> Optional[int]:
    """The masquerade mark bit the live SETMARK or MASQ rule uses, if either has one."""
    for chain, option in ((SETMARK, "--set-xmark"), ("CNI-HOSTPORT-MASQ", "--mark")):
        for args in table.rules(chain):
            value = options(args).get(option, "")
            mark = value.split("/", 1)[0]
            try:
                number = int(mark, 16)
            except ValueError:
                continue
            if number and number & (number - 1) == 0:
                return number.bit_length() - 1
    return None


def uses_setmark(table: NatTable) -> bool:
    """Whether a CNI-DN- chain marks traffic through CNI-HOSTPORT-SETMARK (v0.7 on with
    SNAT): then SETMARK's MARK rule and the MASQ chain are needed."""
    return any(
        name.startswith(DNAT_PREFIX) and any(rule_target(r) == SETMARK for r in chain.rules)
        for name, chain in table.chains.items()
    )
