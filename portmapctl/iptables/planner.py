"""(wanted chains, live table) -> the smallest Transaction that makes them agree.

Both sides are in saved normal form (see `ruleset`), so comparing is comparing tuples.
The semantics follow the plugin's ADD, minus its needless churn:

- a shared chain (CNI-HOSTPORT-*) is created when missing; its missing rules and
  entry rules are added (appended, or inserted first for MASQ), never flushed;
- a per-container chain is left alone when its rules are exactly the wanted ones,
  otherwise rewritten whole (the plugin tears it down and sets it up again);
- entry rules that jump to a per-container chain but are no longer wanted are
  deleted; wanted ones that are missing are appended.

`plan_teardown` is the reverse, for `gc`: per-container chains out, with every rule
that jumps to them, in an order iptables-nft accepts.
"""

from __future__ import annotations

from typing import Iterable

from portmapctl.iptables.chains import (
    DNAT_PREFIX,
    OLD_TOPLEVEL_SNAT,
    Chain,
    is_plugin_chain,
)
from portmapctl.iptables.ruleset import NatTable, rule_target
from portmapctl.iptables.transaction import Transaction


def plan_setup(wanted: Iterable[Chain], live: NatTable) -> Transaction:
    txn = Transaction(live.family)
    for chain in wanted:
        _plan_chain(chain, live, txn)
    return txn


def _plan_chain(chain: Chain, live: NatTable, txn: Transaction) -> None:
    exists = live.has_chain(chain.name)
    live_rules = live.rules(chain.name)
    if not exists:
        txn.new_chain(chain.name)
        for rule in chain.rules:
            txn.append(chain.name, rule)
    elif chain.shared:
        for rule in chain.rules:
            if rule not in live_rules:
                txn.append(chain.name, rule)
    elif live_rules != chain.rules:
        txn.flush(chain.name)
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


def plan_teardown(live: NatTable, chains: Iterable[str]) -> Transaction:
    """Remove these per-container chains (CNI-DN-/CNI-SN-) and every rule entering them.

    Also removes the legacy CNI-HOSTPORT-SNAT (and the rules jumping to it) when
    nothing but entries of removed chains is left in it. Every other rule stays.

    Rules are deleted by their text, not their position: if the table changed since
    `live` was read, a delete no longer matches (or a -X finds the chain still
    entered) and iptables-restore refuses the whole transaction, never a wrong rule.
    The order matters:
    - the CNI-DN- chains are flushed first: iptables-nft-restore takes 1.9 s for the
      transaction that removes 5,000 containers this way, 3.1 s when the flushes come
      after the deletes (0.18 s and 0.22 s for 1,000; benchmarks/bench.py, gc);
    - entry rules chain by chain, in the order they stand (deleting 2,000 in order
      takes 0.3 s, in random order 2.5 s: each -D searches from the top);
    - every chain is flushed before any is deleted, and deleted only once nothing
      jumps to it (iptables-nft refuses a -X of a chain still referenced);
    - CNI-HOSTPORT-SNAT is flushed, then the CNI-SN- chains go, then the jumps to
      CNI-HOSTPORT-SNAT, then the chain itself: the one order found that
      iptables-nft accepts (other orders fail with CHAIN_DEL ... busy).
    """
    remove = [name for name in dict.fromkeys(chains) if live.has_chain(name)]
    for name in remove:
        if not is_plugin_chain(name):
            raise ValueError(f"plan_teardown removes per-container chains only, not {name}")
    targets = set(remove)
    snat_rules = live.rules(OLD_TOPLEVEL_SNAT)
    drop_snat = live.has_chain(OLD_TOPLEVEL_SNAT) and all(
        rule_target(rule) in targets for rule in snat_rules
    )
    txn = Transaction(live.family)
    for name in remove:
        if name.startswith(DNAT_PREFIX):
            txn.flush(name)
    for chain in live.chains.values():
        if chain.name in targets or (drop_snat and chain.name == OLD_TOPLEVEL_SNAT):
            continue  # emptied whole below
        for rule in chain.rules:
            if rule_target(rule) in targets:
                txn.delete(chain.name, rule)
    if drop_snat:
        txn.flush(OLD_TOPLEVEL_SNAT)
    for name in remove:
        if not name.startswith(DNAT_PREFIX):  # CNI-SN-: in the order FACTS found
            txn.flush(name)
    for name in remove:
        txn.delete_chain(name)
    if drop_snat:
        for chain in live.chains.values():
            if chain.name in targets or chain.name == OLD_TOPLEVEL_SNAT:
                continue
            for rule in chain.rules:
                if rule_target(rule) == OLD_TOPLEVEL_SNAT:
                    txn.delete(chain.name, rule)
        txn.delete_chain(OLD_TOPLEVEL_SNAT)
    return txn
