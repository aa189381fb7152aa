"""`check --repair` never hands a host port from the mapping that gets its traffic now
to another one.

A repair rewrites a container's chain when its rules differ from what its cached config
wants, and re-inserts a lost entry rule of a version that prepended them (v0.7). Either
can make that chain, entered earlier in `CNI-HOSTPORT-DNAT`, take a port that a later
chain gets today: two cached containers on one host port, or a chain an old plugin
wrote dead (host IP 0.0.0.0 as `-d 0.0.0.0/32`) that lost every rule showing so, which
the current shape would bring back to life. Which of two containers should have a port
is not a repair's to decide, and the one that has it is working: such a chain is left
as it is and said (`Unrepaired`), with who has the port.

A chain whose plan only creates it, and entry rules appended, cannot take a port from
an earlier rule: nothing is checked then (a repair of 5,000 missing containers does no
work here).

The plugin's nftables backend is first-match-wins over `hostip_hostports`, then
`hostports`: a container's lost rule that its repair puts back among its own rules
(nftables/planner._placed, the plugin's order) or into `hostip_hostports` can come
before another container's rule for the same port. `nft_ports_taken` is the same rule
for it; rules only appended to `hostports` take nothing from anyone.

Both backends are judged per destination (`_taken_from`): a rule on a host IP takes
only packets to that address, one without takes every address no earlier rule names.

A container on several networks (podman allows one port on each) is not shadowing
itself (SPEC §3): putting back net1's lost rule ahead of its own net2 chain gives the
port back to the same container, as the plugin wrote it (its re-ADD does the same).
Only a holder that is another container, or nobody's, stops a repair. Who a chain is
comes from its entry rule's comment, believed only where the chain is the name the
plugin makes of that network and ID (`_container_of`): a comment alone could say
anyone, and a chain of nobody known is another's. And only where the CNI cache names
that chain (`cached`): a stale chain of the same ID (its network's entry gone, its DEL
never run) DNATs to an address the runtime may have given another container since, who
gets the port's traffic through it now. The nftables rules carry the bare container ID,
no network: there a rule is the container's own only where it DNATs to an address the
CNI cache gives that ID (`own`); one of that ID to another address is a stale rule
(`_Stale`), a holder where it stays ahead of where the repair puts the rule back. Where
the same repair deletes it as the container's extra rule (an old address of its own,
the node repair's to clean up), it is a holder only if the cache gives its address to
another container: that one gets the port's traffic through it now.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence, Set
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, NamedTuple, Optional, Tuple
from typing import Mapping as ReadOnly

from portmapctl.core.ids import short_form
from portmapctl.core.mapping import MappingConfig
from portmapctl.core.text import name_text
from portmapctl.errors import ApplyFailed
from portmapctl.iptables.access.memory import MemoryBackend
from portmapctl.iptables.chains import (
    DNAT_ENTRY_CHAINS,
    DNAT_PREFIX,
    TOPLEVEL_DNAT,
    dnat_chain_name,
)
from portmapctl.iptables.plugin_rules import rule_owner
from portmapctl.iptables.ruleset import NatTable, rule_target
from portmapctl.iptables.shapes import Role, classify_rule, entry_ports
from portmapctl.iptables.transaction import OpKind, Transaction

if TYPE_CHECKING:
    from portmapctl.nftables.ruleset import Ruleset
    from portmapctl.nftables.transaction import Transaction as NftTransaction

_ADDRESS_CHARACTERS = frozenset("0123456789abcdefABCDEF.:")

# Ops that change an existing chain's rules in place (planner._rewrite), or put an entry
# rule ahead of others.
_IN_PLACE = frozenset({OpKind.FLUSH, OpKind.DELETE, OpKind.DELETE_NUMBER})


@dataclass(frozen=True)
class PortTaken:
    """`chain`, as a plan would leave it, takes `protocol/port` of IPv`family` from
    `holder` (`holder_chain` the chain of the rule that has it now; `holder_foreign`:
    that rule is someone else's, no container's). `entered`: packets reach that chain
    now; not when the nat table lost its jumps to CNI-HOSTPORT-DNAT (which the same
    repair puts back: the holder gets the port's traffic then)."""

    family: int
    chain: str
    protocol: str
    port: int
    host_ip: Optional[str]
    holder: str
    holder_chain: str
    holder_foreign: bool
    entered: bool = True
    # nftables: the holder is a rule of container `holder`'s for an address no CNI
    # cache entry of it has (a network whose DEL never ran): (that address, its handle).
    holder_stale: Optional[Tuple[str, int]] = None

    def why(self, holder_name: str, cached: Optional[Collection[str]] = None) -> str:
        """Why the repair leaves the chain; `cached`: the chains (iptables) or container
        IDs (nftables) the CNI cache names, when known: a container's holder not among
        them is stale, gc's to remove (someone else's rule is not)."""
        on = f"{self.host_ip}:" if self.host_ip else ""
        has = (
            "gets that port's traffic now"
            if self.entered
            else f"has that port in {TOPLEVEL_DNAT} (and its traffic once the repair puts"
            " back the jumps to it)"
        )
        why = (
            f"its chain would take {self.protocol}/{on}{self.port} from {holder_name}, which"
            f" {has}; a repair never moves a port between mappings"
        )
        if self.holder_stale is not None:
            address, handle = self.holder_stale
            family = "ip6" if self.family == 6 else "ip"
            return why + (
                f" (no CNI cache entry read of {name_text(short_form(self.holder))} has {address}: a network"
                " whose DEL never ran, its address maybe another container's now, or an"
                " entry in a cache directory not given (--cni-cache-dir); once that rule"
                f" is no container's, `nft delete rule {family} cni_hostport"
                f" {self.holder_chain} handle {handle}`, then repair)"
            )
        if cached is not None and not self.holder_foreign and self.holder not in cached:
            return (
                why + " (that one has no CNI cache entry: `portmapctl gc` removes it, then repair)"
            )
        return why + " (decide which container keeps it, then re-create or gc the other)"


class _Stale(NamedTuple):
    """An nftables rule of a cached container ID for an address no cache entry of that
    ID has (a network whose DEL never ran, or whose entry is not read here)."""

    container: str
    address: str
    handle: int
    anothers: bool  # the cache gives the address to another container


# A port's takers, in the order the kernel tries them: (who, host IP or None for every
# address, the chain the rule is in, partial, foreign, container), by (protocol, port)
# or, for nftables, by (family, protocol, port). A partial taker (a rule with conditions of its own, or on
# addresses no one host IP names: someone else's) has some of the port's packets: it is
# a holder, but packets it does not take go on to the next rule.
class _Taker(NamedTuple):
    who: str  # the chain (iptables) or container ID (nftables), or someone's rule's label
    host_ip: Optional[str]
    chain: str
    partial: bool
    foreign: bool  # someone else's rule, no container's
    container: Optional[str]  # the container ID it is for, where sure (None: unknown)
    stale: Optional[_Stale] = None  # nftables: `who` is then the rule's handle


_Takers = Dict[tuple, List[_Taker]]


def _matches(theirs: Optional[str], address: Optional[str]) -> bool:
    """Whether a rule on host IP `theirs` takes packets to `address` (None: an address
    no rule names)."""
    return theirs is None or theirs == address


def _holders(takers: _Takers, key: tuple, address: Optional[str]) -> List[_Taker]:
    """Every rule that takes some of `key`'s packets to `address`: up to the first that
    takes them all."""
    found = []
    for taker in takers.get(key, ()):
        if _matches(taker.host_ip, address):
            found.append(taker)
            if not taker.partial:
                break
    return found


def _ahead_of(takers: _Takers, key: tuple, address: Optional[str], who: str, other: str) -> bool:
    """Whether `who` takes `key` for `address` before `other` does."""
    for taker in takers.get(key, ()):
        if _matches(taker.host_ip, address):
            if taker.who == other:
                return False
            if taker.who == who:
                return True
    return False


def _taken_from(
    now: _Takers, then: _Takers, key: tuple, host_ip: Optional[str], who: str
) -> Optional[_Taker]:
    """The rule that has some of `key` now and loses it to `who`'s rule on `host_ip`
    after, while still wanting it; None when nobody does. Every destination the rule
    takes is asked: its host IP, or (no host IP) each address some rule names and every
    other. Not only when `who` comes first after: several rewritten ahead of the one
    that has the port are all found in one pass (no re-plan for each). A holder of the
    same container as `who` (its chain on another network) loses nothing to it."""
    mine = next((t.container for t in then.get(key, ()) if t.who == who), None)
    if host_ip is not None:
        addresses: List[Optional[str]] = [host_ip]
    else:
        named = {t.host_ip for t in (*now.get(key, ()), *then.get(key, ())) if t.host_ip}
        addresses = [*sorted(named), None]
    for address in addresses:
        for holder in _holders(now, key, address):
            if holder.who == who or (mine is not None and holder.container == mine):
                continue
            if any(t.who == holder.who and _matches(t.host_ip, address) for t in then[key]):
                if _ahead_of(then, key, address, who, holder.who):
                    return holder
            elif (
                holder.stale is not None
                and holder.stale.anothers
                and any(t.who == who for t in _holders(then, key, address))
            ):
                # Deleted by the plan as the container's extra rule: the traffic it sent
                # to another container's address goes to `who` after.
                return holder
    return None


# --- iptables ---------------------------------------------------------------------------


def _suspects(txn: Transaction, live: NatTable) -> Set[str]:
    """The CNI-DN- chains the transaction could make take a port from an earlier rule:
    existing ones rewritten in place, and those an entry rule is inserted ahead for."""
    found = set()
    for op in txn.ops:
        if op.kind in _IN_PLACE and op.chain.startswith(DNAT_PREFIX) and live.has_chain(op.chain):
            found.add(op.chain)
        elif op.kind is OpKind.INSERT:
            target = rule_target(op.args)
            if target is not None and target.startswith(DNAT_PREFIX):
                found.add(target)
    return found


def _dnat_ports(rules: Iterable) -> List[Tuple[Tuple[str, int], Optional[str]]]:
    """((protocol, port), host IP) of a CNI-DN- chain's DNAT rules that can match."""
    return [
        ((read.protocol, read.host_port), read.host_ip)
        for read in map(classify_rule, rules)
        if read is not None and read.role is Role.DNAT and not read.dead
    ]


def _container_of(entry: Sequence[str], chain: str, cached: Collection[str]) -> Optional[str]:
    """The container ID the entry rule's comment names, where `chain` is the plugin's
    name for that network and ID (SHA-512 of both) and the CNI cache names it (`cached`:
    its address is that container's now): else None, nobody known."""
    if chain not in cached:
        return None
    return rule_owner(entry).container_id


def _takers(table: NatTable, keys: Set[Tuple[str, int]], cached: Collection[str] = ()) -> _Takers:
    """For each (protocol, port) of `keys`: the CNI-DN- chains whose DNAT rule for it an
    entry rule of CNI-HOSTPORT-DNAT reaches, in order (shapes.first_taker's walk, once
    for every port: a repair rewriting 1,000 chains asks about 2,000 ports)."""
    found: _Takers = {}
    dnats: Dict[str, List[Tuple[Tuple[str, int], Optional[str]]]] = {}
    for index, entry in enumerate(table.rules(TOPLEVEL_DNAT)):
        chain = rule_target(entry)
        if chain == "DNAT":
            # Someone's DNAT in the plugin's chain: a holder of its ports (whatever
            # else it matches), never a chain gc or a repair changes.
            label = f"the rule {index + 1} of {TOPLEVEL_DNAT}"
            for key in set(entry_ports(entry, ())) & keys:
                taker = _Taker(label, None, TOPLEVEL_DNAT, True, True, None)
                found.setdefault(key, []).append(taker)
            continue
        if chain is None or not chain.startswith(DNAT_PREFIX):
            continue
        rules = table.rules(chain)
        ports = set(entry_ports(entry, rules)) & keys
        if not ports:
            continue
        if chain not in dnats:
            dnats[chain] = _dnat_ports(rules)
        container = _container_of(entry, chain, cached)
        for key, host_ip in dnats[chain]:
            if key in ports:
                taker = _Taker(chain, host_ip, chain, False, False, container)
                found.setdefault(key, []).append(taker)
    return found


def ports_taken(
    live: NatTable, txn: Transaction, cached: Collection[str] = ()
) -> Dict[str, PortTaken]:
    """By chain: a port each chain would take, applied, from another chain that gets it
    in `live` and still wants it after. `cached`: the chains the CNI cache names, the
    only ones whose container a holder of the same container can be (_container_of)."""
    suspects = _suspects(txn, live)
    if not suspects:
        return {}
    memory = MemoryBackend({live.family: live})
    try:
        memory.apply(txn)
    except ApplyFailed:
        return {}  # iptables will refuse it too, and the caller re-plans from a fresh read
    after = memory.tables[live.family]
    wanted = {chain: _dnat_ports(after.rules(chain)) for chain in sorted(suspects)}
    keys = {key for ports in wanted.values() for key, _ in ports}
    now, then = _takers(live, keys, cached), _takers(after, keys, cached)
    # Packets reach CNI-HOSTPORT-DNAT only through its jumps (a firewall script that
    # flushed PREROUTING and OUTPUT took them): the words say whether they do now.
    entered = any(
        rule_target(rule) == TOPLEVEL_DNAT
        for chain in DNAT_ENTRY_CHAINS
        for rule in live.rules(chain)
    )
    found: Dict[str, PortTaken] = {}
    for chain, ports in wanted.items():
        for key, host_ip in ports:
            holder = _taken_from(now, then, key, host_ip, chain)
            if holder is not None:
                found[chain] = PortTaken(
                    live.family,
                    chain,
                    *key,
                    host_ip,
                    holder.who,
                    holder.chain,
                    holder.foreign,
                    entered,
                )
                break
    return found


def plan_taking_nothing(
    live: NatTable,
    configs: Sequence[MappingConfig],
    plan: Callable[[Sequence[MappingConfig]], Transaction],
    cached: Collection[str] = (),
) -> Tuple[Transaction, Dict[str, PortTaken]]:
    """`plan(configs)`, made again without the configs of every chain that would take a
    port from another (`ports_taken`, `cached` as there), until none would. Returns the
    plan and, by chain, what was left out."""
    left_out: Dict[str, PortTaken] = {}
    these: List[MappingConfig] = list(configs)
    while True:
        txn = plan(these)
        taken = ports_taken(live, txn, cached)
        kept = [c for c in these if dnat_chain_name(c) not in taken]
        if len(kept) == len(these):
            return txn, left_out  # (none, or no chain of the plan's configs)
        left_out.update({name: t for name, t in taken.items() if name not in left_out})
        these = kept


def holder_name(live: NatTable, chain: str) -> str:
    """Who `chain` is, by its entry rule's comment (`mynet/8c1d2e3f4a5b (CNI-DN-...)`),
    or the chain alone when no entry rule says."""
    for args in live.rules(TOPLEVEL_DNAT):
        if rule_target(args) == chain:
            # (Another tool's rule may name anyone: the first that names its chain.)
            who = rule_owner(args)
            if who.network is not None and who.container_id is not None:
                return (
                    f"{name_text(who.network)}/{name_text(short_form(who.container_id))} ({chain})"
                )
    return chain


# --- the plugin's nftables backend ------------------------------------------------------


def nft_holder_name(took: PortTaken) -> str:
    """`8c1d2e3f4a5b (hostports)`; for a rule that is nobody's `the rule handle 7 of
    hostports`; for a stale rule `8c1d2e3f4a5b's rule for 10.89.0.5 (hostports)`."""
    if took.holder_foreign:
        return f"the rule {took.holder} of {name_text(took.holder_chain)}"
    if took.holder_stale is not None:
        return (
            f"{name_text(short_form(took.holder))}'s rule for {took.holder_stale[0]}"
            f" ({name_text(took.holder_chain)})"
        )
    return f"{name_text(short_form(took.holder))} ({name_text(took.holder_chain)})"


def _nft_takers(ruleset: Ruleset, own: ReadOnly[str, Collection[str]]) -> _Takers:
    """Every host port's takers in both families, by (family, protocol, port). `own`:
    by container ID, the addresses the CNI cache gives it: a rule of one of those IDs
    for another address is stale (`_Taker.stale`), its own no more."""
    from portmapctl.nftables.inventory import host_port_rules

    given: Dict[str, Set[str]] = {}  # the container IDs the cache gives each address
    for cid, addresses in own.items():
        for address in addresses:
            given.setdefault(address, set()).add(cid)
    found: _Takers = {}
    for family, table in ruleset.tables.items():
        for rule in host_port_rules(table):
            # A host IP that is no one address (a prefix, a set, a range: someone
            # else's) may match any: partial, as a rule with conditions of its own.
            one = rule.host_ip is None or _one_address(rule.host_ip)
            host_ip = rule.host_ip if one else None
            partial = not (rule.claims and one)
            foreign = rule.foreign is not None
            # (Every rule of the plugin's carries the bare container ID: `who`.)
            container = None if foreign else rule.who
            address = rule.rule.body.action.addr or ""
            if container in own and address not in own[container]:
                handle = rule.rule.handle
                stale = _Stale(container, address, handle, bool(given.get(address)))
                taker = _Taker(f"handle {handle}", host_ip, rule.rule.chain, partial, False,
                               None, stale)  # fmt: skip
            else:
                taker = _Taker(rule.who, host_ip, rule.rule.chain, partial, foreign, container)
            for port in rule.ports:
                found.setdefault((family, rule.protocol, port), []).append(taker)
    return found


def _one_address(text: str) -> bool:
    """Whether nft prints one address here (not a prefix, a set, a range, a named set)."""
    return bool(text) and set(text) <= _ADDRESS_CHARACTERS


def nft_ports_taken(
    live: Ruleset, txn: NftTransaction, own: ReadOnly[str, Collection[str]]
) -> Dict[Tuple[str, int], PortTaken]:
    """By container ID and family: a port the container's rules, as `txn` leaves them,
    take from another that gets it in `live` (a container, or a rule that is nobody's:
    `handle N`) and still has its rule after, or from a stale rule of any ID in `own`
    (by container ID, the addresses the CNI cache gives it: the IDs not in it are
    judged by their comment alone). `chain` is the nft chain of the rule that would
    take it."""
    from portmapctl.nftables import inventory
    from portmapctl.nftables.access import NftApplyFailed
    from portmapctl.nftables.access.memory import MemoryNft
    from portmapctl.nftables.transaction import OpKind as NftOpKind

    last = inventory.EVALUATION_ORDER[-1]
    suspects = {
        op.body.comment
        for op in txn.ops
        if op.kind is NftOpKind.ADD_RULE
        and op.body is not None
        and op.body.comment
        and op.chain in inventory.EVALUATION_ORDER  # (a masquerade rule takes no port)
        and (op.position is not None or op.before or op.chain != last)
    }
    if not suspects:
        return {}
    memory = MemoryNft(live)
    try:
        memory.apply(txn)
    except NftApplyFailed:
        return {}  # nft will refuse it too, and the caller re-plans from a fresh read
    now, then = _nft_takers(live, own), _nft_takers(memory.read(tuple(live.tables)), own)
    found: Dict[Tuple[str, int], PortTaken] = {}
    for key, takers in then.items():
        family, protocol, port = key
        for mine in takers:
            who = mine.who
            if who not in suspects or (who, family) in found:
                continue
            holder = _taken_from(now, then, key, mine.host_ip, who)
            if holder is not None:
                stale = holder.stale
                found[(who, family)] = PortTaken(
                    family, mine.chain, protocol, port, mine.host_ip,
                    holder.who if stale is None else stale.container, holder.chain,
                    holder.foreign,
                    holder_stale=None if stale is None else (stale.address, stale.handle),
                )  # fmt: skip
    return found
