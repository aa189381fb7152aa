"""Read the plugin's nftables tables (+ the CNI cache) -> mapping rows and problems.

Rows are the same as the iptables side's (network, container, family, protocol, host
address, container address, SNAT, chain, statuses) with `backend` "nftables". The
plugin writes no network name into nftables (a rule's comment is the bare container
ID): the network comes from the cache entry of that container ID, picked by the
container address when the ID is on several networks.

Statuses, as SPEC §3:
  stale     no cache entry names the container ID (said only with a cache)
  zombie    the cache entry is there but its network namespace is gone
  shadowed  an earlier rule in evaluation order (hostip_hostports before hostports,
            as both v1.9's hostports_all and v1.6/v1.7's base chains jump) takes the
            same protocol and host port, on an overlapping host IP, to another
            container (or a rule that is not the plugin's does: `shadowed_by` is then
            `handle N`): nftables is first-match-wins as iptables is

A DNAT rule in hostports/hostip_hostports that is not the plugin's (no comment, or one
that is no container ID: nftables/node.py is_plugin_rule, the test gc removes by) is
no row, as a foreign rule in CNI-HOSTPORT-DNAT is none on the iptables side: it names
no container, so it can be neither stale nor anyone's to remove. It still takes its
port first; `NftInventory.foreign` lists it for check's note.

Health problems of the structure (a flushed or deleted table, say) and, given the
cached configs of nft-backed containers, of their rules are `Problem`s, found by
problems.py: build() gathers them beside the rows unless asked for rows only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Dict,
    Iterable,
    Iterator,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Set,
    Tuple,
)

from portmapctl.core.backend import Backend
from portmapctl.core.mapping import Mapping, MappingConfig, takes_all_of
from portmapctl.core.status import ChainKind, Status
from portmapctl.nftables.node import is_plugin_rule
from portmapctl.nftables.ruleset import (
    COUNTER,
    FAMILY_NAMES,
    HOSTIP_HOSTPORTS,
    HOSTPORTS,
    HOSTPORTS_ALL,
    MASQUERADING,
    PREROUTING,
    ActionKind,
    Rule,
    Ruleset,
    Table,
)
from portmapctl.nftables.wanted import FIB_LOCAL

if TYPE_CHECKING:
    from portmapctl.nftables.problems import Problem

BACKEND = Backend.NFTABLES
# Evaluation order of the container chains: hostports_all (v1.9) and the base chains
# of v1.6/v1.7 both jump to hostip_hostports first.
EVALUATION_ORDER = (HOSTIP_HOSTPORTS, HOSTPORTS)


@dataclass(frozen=True)
class Owner:
    """A cached attachment as far as the nftables side needs it."""

    network: str
    container_id: str
    mapping: Optional[MappingConfig] = None
    zombie: bool = False


@dataclass(frozen=True)
class NftMapping(Mapping):
    """A Mapping of the nftables backend: `chain` is the nft chain of the rule and
    `shadowed_by` the container ID that takes its port first."""

    handle: int = 0
    backend: Backend = BACKEND
    chain_type: ChainKind = ChainKind.NFT_RULE


@dataclass(frozen=True)
class Foreign:
    """A DNAT rule in a host-port chain that is not the plugin's (an admin's)."""

    family: int
    chain: str
    handle: int
    text: str  # as `nft list` prints it

    @property
    def label(self) -> str:
        """How a row shadowed by it names it (`shadowed_by`): it has no container."""
        return f"handle {self.handle}"


@dataclass(frozen=True)
class NftInventory:
    mappings: Tuple[NftMapping, ...]
    problems: Tuple[Problem, ...]
    cache_present: bool
    foreign: Tuple[Foreign, ...] = ()

    def container_ids(self) -> Set[str]:
        return {m.container_id for m in self.mappings if m.container_id}


# --- rows -------------------------------------------------------------------------------


# A port set or range wider than this is no list of rows (a rule written by hand).
MAX_EXPANDED_PORTS = 256


def dport_values(right: str) -> Optional[Tuple[int, ...]]:
    """The host ports a `dport ==` match names: `8080`, `{ 7000, 7001 }`, `7000-7010`
    (small ranges; anything else: None, such as a named set)."""
    items = right[1:-1].split(",") if right.startswith("{") and right.endswith("}") else [right]
    ports: List[int] = []
    for item in (i.strip() for i in items):
        low, dash, high = item.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            return None
        ports += range(int(low), int(high if dash else low) + 1)
    if not ports or len(ports) > MAX_EXPANDED_PORTS or not all(0 < p < 65536 for p in ports):
        return None
    return tuple(dict.fromkeys(ports))


def _dnat_fields(
    rule: Rule,
) -> Optional[Tuple[str, Tuple[int, ...], Optional[str], Tuple[str, ...]]]:
    """(protocol, host ports, host IP, the other matches' text) of a host-port rule,
    else None (no `tcp|udp|sctp dport` it can read). A counter is no such match: it
    holds no packet back."""
    body = rule.body
    daddr = f"{FAMILY_NAMES[rule.family]} daddr"
    proto, ports = None, None
    others = []
    for match in body.matches:
        left = match.left.split() if "dport" in match.left else ()
        if len(left) == 2 and left[1] == "dport" and match.op == "==" and ports is None:
            ports = dport_values(match.right)
            proto = left[0]
        elif not (match.left == daddr and match.op == "==") and match != COUNTER:
            others.append(match.text())
    if proto is None or not ports:
        return None
    return proto, ports, body.value(daddr), tuple(others)


class HostPortRule(NamedTuple):
    """A DNAT rule of a host-port chain, read, in the order nftables tries them
    (host_port_rules): the plugin's, or someone else's (`foreign`). (A tuple: one is
    made per rule that `list` reads.)"""

    rule: Rule
    protocol: str
    ports: Tuple[int, ...]
    host_ip: Optional[str]
    conditions: Tuple[str, ...]  # its matches beyond protocol, port and host address
    foreign: Optional[Foreign]  # not the plugin's: nobody's row

    @property
    def who(self) -> str:
        """Who takes its ports: the container ID, or the foreign rule's label."""
        return self.foreign.label if self.foreign is not None else self.rule.comment or ""

    @property
    def claims(self) -> bool:
        """Whether it takes its ports before any later rule: a rule with conditions of
        its own takes only some of a port's packets (it may lose them, it takes them
        from nobody for sure)."""
        return not self.conditions


def host_port_rules(table: Table) -> Iterator[HostPortRule]:
    """Every DNAT rule of the host-port chains, in the order nftables tries them
    (EVALUATION_ORDER, each chain's rules in order)."""
    for chain in EVALUATION_ORDER:
        for rule in table.rules_of(chain):
            fields = _dnat_fields(rule)
            action = rule.body.action
            if fields is None or action.kind is not ActionKind.DNAT or action.addr is None:
                continue
            proto, ports, host_ip, conditions = fields
            foreign = None
            if not is_plugin_rule(rule):
                foreign = Foreign(table.family, chain, rule.handle, rule.body.text(table.family))
            yield HostPortRule(rule, proto, ports, host_ip, conditions, foreign)


def _entry_conditions(table: Table) -> Tuple[str, ...]:
    """The node's conditions (conditionsV4/V6) on the prerouting rule that sends local
    traffic to the host-port rules: every mapping of the table takes only the packets
    they match. None when some such rule has none."""
    found: Tuple[str, ...] = ()
    for rule in table.rules_of(PREROUTING):
        action = rule.body.action
        if action.kind is not ActionKind.JUMP or action.target not in (
            HOSTPORTS_ALL,
            HOSTIP_HOSTPORTS,
            HOSTPORTS,
        ):
            continue
        conditions = tuple(m.text() for m in rule.body.matches if m != FIB_LOCAL)
        if not conditions:
            return ()
        found = found or conditions
    return found


def _masqueraded(table: Table) -> Set[Tuple[Optional[str], str]]:
    """(container ID, container IP) pairs with the hairpin masquerade rule."""
    found = set()
    ip = FAMILY_NAMES[table.family]
    for rule in table.rules_of(MASQUERADING):
        body = rule.body
        if body.action.kind is not ActionKind.MASQUERADE:
            continue
        saddr, daddr = body.value(f"{ip} saddr"), body.value(f"{ip} daddr")
        if daddr is not None and saddr == daddr:
            found.add((body.comment, daddr))
    return found


def _ip_text(owner: Owner, family: int) -> Optional[str]:
    address = owner.mapping.address(family) if owner.mapping else None
    return address.ip.compressed if address is not None else None


def _in_nftables(owner: Owner) -> bool:
    return owner.mapping is not None and owner.mapping.backend == Backend.NFTABLES


class _Owners:
    """Cached attachments by container ID; the container's address as text worked out
    once per container and family, not once per rule (a third of building the rows of
    1,000 containers)."""

    def __init__(self, owners: Iterable[Owner]) -> None:
        self.by_id: Dict[str, List[Owner]] = {}
        for owner in owners:
            self.by_id.setdefault(owner.container_id, []).append(owner)
        self._ips: Dict[Tuple[str, int], List[Optional[str]]] = {}

    def owner(self, container_id: Optional[str], family: int, ip: str) -> Optional[Owner]:
        """The attachment of `container_id` with address `ip`, else its first one; of
        several (a container on several networks, one address on each, the same
        address on some), one whose cached config puts it in nftables first: the rule
        is its network's, and a row named another network (an iptables one, review
        helper-135) sent an operator to the wrong network's config."""
        key = container_id or ""
        candidates = self.by_id.get(key)
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]  # (the usual case)
        ips = self._ips.get((key, family))
        if ips is None:
            ips = self._ips[(key, family)] = [_ip_text(o, family) for o in candidates]
        at_ip = [owner for owner, text in zip(candidates, ips) if text == ip] or candidates
        return next((o for o in at_ip if _in_nftables(o)), at_ip[0])


def first_claim(
    claims: Iterable[Tuple[Optional[str], Optional[str]]],
    host_ip: Optional[str],
    but: Optional[str],
) -> Optional[str]:
    """Of a port's (host IP, who) claims in order, who takes it first from a rule on
    `host_ip` (None: every address), other than `but`."""
    for other_ip, who in claims:
        if who != but and takes_all_of(other_ip, host_ip):
            return who
    return None


def build(
    ruleset: Ruleset,
    owners: Optional[Sequence[Owner]] = None,
    *,
    nft_backed: Iterable[Owner] = (),
    problems: bool = True,
) -> NftInventory:
    """Rows for every host-port rule, and the problems of the structure.

    `owners` is every cached attachment (None: no cache); `nft_backed` those whose
    rules belong in nftables, checked against what the plugin's ADD would write.
    """
    by_id = _Owners(owners or ())
    rows: List[NftMapping] = []
    found_problems: List[Problem] = []
    foreign: List[Foreign] = []
    for family in sorted(ruleset.tables):
        table = ruleset.tables[family]
        masq = _masqueraded(table)
        node_conditions = _entry_conditions(table)
        claims: Dict[Tuple[str, int], List[Tuple[Optional[str], Optional[str]]]] = {}
        for found in host_port_rules(table):
            proto, host_ip, rule = found.protocol, found.host_ip, found.rule
            if found.foreign is not None:
                # Nobody's: no row, but it takes the port before any later rule.
                foreign.append(found.foreign)
            else:
                action = rule.body.action
                cid = rule.comment
                owner = by_id.owner(cid, family, action.addr)  # type: ignore[arg-type]
                base: List[str] = []
                if owners is not None and owner is None:
                    base.append(Status.STALE.value)
                if owner is not None and owner.zombie:
                    base.append(Status.ZOMBIE.value)
                for port in found.ports:  # a port set: one row per port, as the plugin's
                    status = list(base)
                    winner = first_claim(claims.get((proto, port), ()), host_ip, but=cid)
                    if winner is not None:
                        status.append(Status.SHADOWED.value)
                    rows.append(
                        NftMapping(
                            owner.network if owner else None,
                            cid,
                            family,
                            proto,
                            host_ip,
                            port,
                            action.addr,  # type: ignore[arg-type]
                            action.port if action.port is not None else port,
                            (cid, action.addr) in masq,
                            rule.chain,
                            tuple(status) or (Status.OK.value,),
                            winner,
                            node_conditions + found.conditions,
                            handle=rule.handle,
                        )
                    )
            if found.claims:
                for port in found.ports:
                    claims.setdefault((proto, port), []).append((host_ip, found.who))
    if problems:  # `list` shows rows only: no need to compare with the cached configs
        from portmapctl.nftables.problems import rule_problems, structure_problems_for

        found_problems += structure_problems_for(ruleset, list(nft_backed))
        found_problems += rule_problems(ruleset, list(nft_backed))
    rows.sort(
        key=lambda m: (m.network or "", m.container_id or "", m.family, m.protocol, m.host_port)
    )
    return NftInventory(tuple(rows), tuple(found_problems), owners is not None, tuple(foreign))


# --- leftovers --------------------------------------------------------------------------


@dataclass(frozen=True)
class Leftover:
    """A container's masquerade rules for an address none of its DNAT rules (in that
    family) sends traffic to: left when its DNAT rules went (deleted by hand, a DEL
    cut short). The plugin's DEL or gc removes them with the container; nothing else.
    Not when the container has DNAT rules in the other family: the plugin's ADD writes
    masquerade rules for each address of the container, DNAT rules only for mappings
    of that family (a dual-stack container whose host IPs are all IPv6 gets IPv4
    masquerade rules alone), and its DEL removes both families at once."""

    family: int
    container_id: str
    address: str
    rules: Tuple[Rule, ...]

    @property
    def handles(self) -> Tuple[int, ...]:
        return tuple(r.handle for r in self.rules)


def leftovers(ruleset: Ruleset) -> List[Leftover]:
    """Every Leftover, by family, container ID and address."""
    found: List[Leftover] = []
    dnat_to = {
        family: {
            (rule.comment, rule.body.action.addr)
            for chain in EVALUATION_ORDER
            for rule in table.rules_of(chain)
            if rule.body.action.kind is ActionKind.DNAT
        }
        for family, table in ruleset.tables.items()
    }
    for family in sorted(ruleset.tables):
        table = ruleset.tables[family]
        ip = FAMILY_NAMES[family]
        elsewhere = {cid for f, pairs in dnat_to.items() if f != family for cid, _addr in pairs}
        left: Dict[Tuple[str, str], List[Rule]] = {}
        for rule in table.rules_of(MASQUERADING):
            address = rule.body.value(f"{ip} daddr")
            if not is_plugin_rule(rule) or address is None or rule.comment in elsewhere:
                continue
            if (rule.comment, address) not in dnat_to[family]:
                left.setdefault((rule.comment or "", address), []).append(rule)
        found += [
            Leftover(family, cid, addr, tuple(rules)) for (cid, addr), rules in sorted(left.items())
        ]
    return found
