"""A writable in-memory backend with `iptables-restore --noflush` semantics.

For tests that need no root: planners, gc, check and repair run against it as against
the kernel. It is held to the real thing by tests/kernel/test_memory_conformance.py:
the same transactions through it and through iptables (nf_tables and legacy) give the
same table, or fail alike.

The semantics it keeps (each op is checked against the table as the ops before it
left it, and a failure anywhere leaves the table as it was):
- `-N` of a chain that exists fails;
- `-A`/`-I`/`-F` need the chain; a `-j`/`-g` target must be a chain or a target;
- `-D` needs an identical rule (our rules are in saved normal form, as iptables
  compares them after parsing), `-D CHAIN N` a rule at that position, and `-C` an
  identical rule (it changes nothing);
- `-X` needs an empty user chain that no rule references.
"""

from __future__ import annotations

import copy
from typing import Dict, List, Optional

from portmapctl.errors import ApplyFailed
from portmapctl.iptables.ruleset import BUILTIN_NAT_CHAINS, Args, NatTable, SavedChain, rule_target
from portmapctl.iptables.transaction import Op, OpKind, Transaction

# Targets that are not chains: anything upper-case that is not a chain of the table is
# taken for an extension target when it is one of these (the nat table's usual ones).
TARGETS = frozenset(
    {
        "ACCEPT",
        "DROP",
        "RETURN",
        "DNAT",
        "SNAT",
        "MASQUERADE",
        "REDIRECT",
        "MARK",
        "LOG",
        "CONNMARK",
        "NETMAP",
        "CT",
        "TRACE",
        "NOTRACK",
    }
)


class MemoryBackend:
    """Tables kept in memory, per family; `apply` is all or nothing."""

    name = "memory"
    writable = True

    def __init__(self, tables: Optional[Dict[int, NatTable]] = None) -> None:
        self.tables: Dict[int, NatTable] = {
            family: (tables or {}).get(family) or empty_table(family) for family in (4, 6)
        }
        self.applied: List[Transaction] = []  # what went in, for tests to look at

    def read(self, family: int) -> NatTable:
        return copy.deepcopy(self.tables[family])

    def apply(self, txn: Transaction) -> None:
        chains = {name: list(chain.rules) for name, chain in self.tables[txn.family].chains.items()}
        policies = {name: chain.policy for name, chain in self.tables[txn.family].chains.items()}
        for number, op in enumerate(txn.ops, start=1):
            problem = _apply(chains, policies, op)
            if problem:
                raise ApplyFailed(
                    f"IPv{txn.family} transaction refused at line {number + 1}"
                    f" ({op.line()}): {problem}"
                )
        self.tables[txn.family] = NatTable(
            txn.family,
            {
                name: SavedChain(name, policies[name], tuple(rules))
                for name, rules in chains.items()
            },
        )
        self.applied.append(txn)


def empty_table(family: int) -> NatTable:
    return NatTable(family, {name: SavedChain(name, "ACCEPT") for name in BUILTIN_NAT_CHAINS})


def _apply(chains: Dict[str, List[Args]], policies: Dict[str, str], op: Op) -> Optional[str]:
    """Apply one op in place; the reason it is refused, or None."""
    name = op.chain
    if op.kind is OpKind.NEW_CHAIN:
        if name in chains:
            return "Chain already exists"
        chains[name] = []
        policies[name] = "-"
        return None
    if name not in chains:
        return f"Chain '{name}' does not exist"
    if op.kind in (OpKind.APPEND, OpKind.INSERT):
        target = rule_target(op.args)
        if target is not None and target not in chains and target not in TARGETS:
            return f"Couldn't load target `{target}'"
        if op.kind is OpKind.APPEND:
            chains[name].append(op.args)
        elif not 1 <= op.position <= len(chains[name]) + 1:
            return "Index of insertion too big"
        else:
            chains[name].insert(op.position - 1, op.args)
        return None
    if op.kind is OpKind.CHECK:
        return None if op.args in chains[name] else "Bad rule (does a matching rule exist?)"
    if op.kind is OpKind.DELETE_NUMBER:
        position = int(op.args[0])
        if not 1 <= position <= len(chains[name]):
            return "Index of deletion too big"
        del chains[name][position - 1]
        return None
    if op.kind is OpKind.DELETE:
        try:
            chains[name].remove(op.args)
        except ValueError:
            return "Bad rule (does a matching rule exist in that chain?)"
        return None
    if op.kind is OpKind.FLUSH:
        chains[name].clear()
        return None
    if op.kind is OpKind.DELETE_CHAIN:
        if policies[name] != "-":
            return "Operation not permitted (a built-in chain)"
        if chains[name]:
            return "Directory not empty"
        if any(rule_target(rule) == name for rules in chains.values() for rule in rules):
            return "Too many links (the chain is referenced)"
        del chains[name]
        del policies[name]
        return None
    raise AssertionError(f"unknown op kind {op.kind!r}")  # OpKind is closed
