"""(wanted chains, live table) -> the smallest Transaction that makes them agree.

Both sides are in saved normal form (see `ruleset`), so comparing is comparing tuples.
The semantics follow the plugin's ADD, minus its needless churn:

- a shared chain (CNI-HOSTPORT-*) is created when missing; its missing rules and
  entry rules are added (appended, or inserted first for MASQ), never flushed;
- a per-container chain is left alone when its rules are exactly the wanted ones,
  otherwise rewritten whole (the plugin tears it down and sets it up again);
- entry rules that jump to a per-container chain but are no longer wanted are
  deleted; wanted ones that are missing are appended.
"""

from __future__ import annotations

from typing import Iterable

from portmapctl.model import Chain
from portmapctl.ruleset import NatTable, rule_target
from portmapctl.transaction import Transaction


def plan_setup(wanted: Iterable[Chain], live: NatTable) -> Transaction:
    txn = Transaction(live.family)
    for chain in wanted:
        _plan_chain(chain, live, txn)
    return txn


def _plan_chain(chain: Chain, live: NatTable, txn: Transaction) -> None:
    exists = live.has_chain(chain.name)
    live_rules = live.rules(chain.name)
    if not exists:
        txn.declare(chain.name)
        for rule in chain.rules:
            txn.append(chain.name, rule)
    elif chain.shared:
        for rule in chain.rules:
            if rule not in live_rules:
                txn.append(chain.name, rule)
    elif live_rules != chain.rules:
        txn.declare(chain.name)  # flushes it
        for rule in chain.rules:
            txn.append(chain.name, rule)

    for entry_chain in chain.entry_chains:
        present = live.rules(entry_chain)
        if not chain.shared:
            for rule in present:
                if rule_target(rule) == chain.name and rule not in chain.entry_rules:
                    txn.delete(entry_chain, rule)
        missing = [rule for rule in chain.entry_rules if rule not in present]
        if chain.prepend_entry:
            # Inserting each at position 1 in reverse keeps the wanted order.
            for rule in reversed(missing):
                txn.insert_first(entry_chain, rule)
        else:
            for rule in missing:
                txn.append(entry_chain, rule)
