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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Set, Tuple

from portmapctl.core.mapping import MappingConfig
from portmapctl.errors import ApplyFailed
from portmapctl.iptables.access.memory import MemoryBackend
from portmapctl.iptables.chains import DNAT_PREFIX, TOPLEVEL_DNAT, dnat_chain_name
from portmapctl.iptables.plugin_rules import parse_comment
from portmapctl.iptables.ruleset import NatTable, rule_target
from portmapctl.iptables.shapes import Role, classify_rule, entry_ports
from portmapctl.iptables.transaction import OpKind, Transaction

if TYPE_CHECKING:
    from portmapctl.nftables.ruleset import Ruleset
    from portmapctl.nftables.transaction import Transaction as NftTransaction

# Ops that change an existing chain's rules in place (planner._rewrite), or put an entry
# rule ahead of others.
_IN_PLACE = frozenset({OpKind.FLUSH, OpKind.DELETE, OpKind.DELETE_NUMBER})


@dataclass(frozen=True)
class PortTaken:
    """`chain`, as a plan would leave it, takes `protocol/port` of IPv`family` from
    `holder`."""

    family: int
    chain: str
    protocol: str
    port: int
    host_ip: Optional[str]
    holder: str

    def why(self, holder_name: str) -> str:
        on = f"{self.host_ip}:" if self.host_ip else ""
        return (
            f"its chain would take {self.protocol}/{on}{self.port} from {holder_name}, which"
            " gets that port's traffic now; a repair never moves a port between mappings"
            " (decide which container keeps it, then re-create or gc the other)"
        )


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


# Who may take a port: (chain, host IP or None for any), in the order iptables tries them.
_Takers = Dict[Tuple[str, int], List[Tuple[str, Optional[str]]]]


def _takers(table: NatTable, keys: Set[Tuple[str, int]]) -> _Takers:
    """For each (protocol, port) of `keys`: the CNI-DN- chains whose live DNAT rule for
    it an entry rule of CNI-HOSTPORT-DNAT reaches, in order (shapes.first_taker's walk,
    once for every port: a repair rewriting 1,000 chains asks about 2,000 ports)."""
    found: _Takers = {}
    dnats: Dict[str, List[Tuple[Tuple[str, int], Optional[str]]]] = {}
    for entry in table.rules(TOPLEVEL_DNAT):
        chain = rule_target(entry)
        if chain is None or not chain.startswith(DNAT_PREFIX):
            continue
        rules = table.rules(chain)
        ports = set(entry_ports(entry, rules)) & keys
        if not ports:
            continue
        if chain not in dnats:
            dnats[chain] = [
                ((read.protocol, read.host_port), read.host_ip)
                for read in map(classify_rule, rules)
                if read is not None and read.role is Role.DNAT and not read.dead
            ]
        for key, host_ip in dnats[chain]:
            if key in ports:
                found.setdefault(key, []).append((chain, host_ip))
    return found


def _first(takers: _Takers, key: Tuple[str, int], host_ip: Optional[str]) -> Optional[str]:
    """The chain that takes `key` on `host_ip` (None: any), as shapes.first_taker."""
    for chain, theirs in takers.get(key, ()):
        if theirs is None or host_ip is None or theirs == host_ip:
            return chain
    return None


def _wants(takers: _Takers, chain: str, key: Tuple[str, int], host_ip: Optional[str]) -> bool:
    return any(
        c == chain and (h is None or host_ip is None or h == host_ip)
        for c, h in takers.get(key, ())
    )


def ports_taken(live: NatTable, txn: Transaction) -> Dict[str, PortTaken]:
    """By chain: a port each chain would take, applied, from another chain that gets it
    in `live` and still wants it after."""
    suspects = _suspects(txn, live)
    if not suspects:
        return {}
    memory = MemoryBackend({live.family: live})
    try:
        memory.apply(txn)
    except ApplyFailed:
        return {}  # iptables will refuse it too, and the caller re-plans from a fresh read
    after = memory.tables[live.family]
    wanted: Dict[str, List[Tuple[Tuple[str, int], Optional[str]]]] = {}
    for chain in sorted(suspects):
        reads = map(classify_rule, after.rules(chain))
        wanted[chain] = [
            ((read.protocol, read.host_port), read.host_ip)
            for read in reads
            if read is not None and read.role is Role.DNAT and not read.dead
        ]
    keys = {key for ports in wanted.values() for key, _ in ports}
    now, then = _takers(live, keys), _takers(after, keys)
    found: Dict[str, PortTaken] = {}
    for chain, ports in wanted.items():
        for key, host_ip in ports:
            if _first(then, key, host_ip) != chain:
                continue
            holder = _first(now, key, host_ip)
            if holder is None or holder == chain or not _wants(then, holder, key, host_ip):
                continue
            found[chain] = PortTaken(live.family, chain, *key, host_ip, holder)
            break
    return found


def plan_taking_nothing(
    live: NatTable,
    configs: Sequence[MappingConfig],
    plan: Callable[[Sequence[MappingConfig]], Transaction],
) -> Tuple[Transaction, Dict[str, PortTaken]]:
    """`plan(configs)`, made again without the configs of every chain that would take a
    port from another (`ports_taken`), until none would. Returns the plan and, by chain,
    what was left out."""
    left_out: Dict[str, PortTaken] = {}
    these: List[MappingConfig] = list(configs)
    while True:
        txn = plan(these)
        taken = ports_taken(live, txn)
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
            who = parse_comment(args)
            if who.network is not None and who.container_id is not None:
                return f"{who.network}/{who.container_id[:12]} ({chain})"
    return chain


# --- the plugin's nftables backend ------------------------------------------------------


def nft_ports_taken(live: Ruleset, txn: NftTransaction) -> Dict[Tuple[str, int], PortTaken]:
    """By container ID and family: a port the container's rules, as `txn` leaves them,
    take from another container that gets it in `live` and still has its rule after.
    `chain` is the nft chain of the rule that would take it, `holder` who has the port
    now (`8c1d2e3f4a5b (hostports)`)."""
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
        and (op.position is not None or op.chain != last)
    }
    if not suspects:
        return {}
    memory = MemoryNft(live)
    try:
        memory.apply(txn)
    except NftApplyFailed:
        return {}  # nft will refuse it too, and the caller re-plans from a fresh read
    after = inventory.build(memory.read(tuple(live.tables)), None, problems=False).mappings
    had = {
        (m.family, m.protocol, m.host_port, m.host_ip, m.container_id)
        for m in inventory.build(live, None, problems=False).mappings
        if m.shadowed_by is None
    }
    taking = {(m.container_id, m.family, m.protocol, m.host_port): m.chain for m in after}
    found: Dict[Tuple[str, int], PortTaken] = {}
    for row in after:
        taker = row.shadowed_by
        if taker not in suspects or taker == row.container_id or (taker, row.family) in found:
            continue
        if (row.family, row.protocol, row.host_port, row.host_ip, row.container_id) in had:
            chain = taking.get((taker, row.family, row.protocol, row.host_port), row.chain)
            holder = f"{(row.container_id or '?')[:12]} ({row.chain})"
            found[(taker, row.family)] = PortTaken(
                row.family, chain, row.protocol, row.host_port, row.host_ip, holder
            )
    return found
