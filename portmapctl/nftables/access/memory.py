"""A writable fake of nft for the plugin's tables, with nft's semantics.

- A transaction is atomic: the first failing command fails all of it and the tables
  stay as they were.
- Handles come from one counter per table, shared by chains and rules, and are never
  reused; the kernel does not give back the handles of a failed transaction either
  (it goes on through the batch after an error, numbering rules, then drops it all).
  A batch naming a table that does not exist (nor is added before) is refused by nft
  before the kernel sees it: no handles spent.
- `add table`/`add chain` of something that exists changes nothing; `add chain` with
  a hook on a regular chain fails "File exists", with another priority on a base chain
  "Operation not supported".
- `add rule`, `flush chain`, `delete rule` on a missing table or chain fail "No such
  file or directory"; so does `delete rule ... handle N` when N is not in that chain,
  and a `jump` to a chain that does not exist.

tests/kernel/test_nft_conformance.py runs the same transactions through this and the
real nft and asserts the same ruleset, or the same failure.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional

from portmapctl.nftables.access import NftApplyFailed
from portmapctl.nftables.ruleset import (
    ActionKind,
    BaseHook,
    Chain,
    Rule,
    Ruleset,
    Table,
)
from portmapctl.nftables.transaction import Op, OpKind, Transaction

ENOENT = "No such file or directory"
EEXIST = "File exists"
EOPNOTSUPP = "Operation not supported"


@dataclass
class _Chain:
    name: str
    handle: int
    base: Optional[BaseHook]
    rules: List[Rule] = field(default_factory=list)
    policy: Optional[str] = None  # a base chain's; nft's default for one is accept


@dataclass
class _Table:
    family: int
    handle: int
    next_handle: int = 1
    chains: Dict[str, _Chain] = field(default_factory=dict)

    def allocate(self) -> int:
        handle = self.next_handle
        self.next_handle += 1
        return handle


class _Failed(Exception):
    def __init__(self, op: Op, reason: str) -> None:
        super().__init__(reason)
        self.op = op
        self.reason = reason


class MemoryNft:
    name = "memory"
    writable = True

    def __init__(self, initial: Optional[Ruleset] = None) -> None:
        self._tables: Dict[int, _Table] = {}
        self._next_table_handle = 1
        self.applied: List[str] = []  # the text of every transaction that went in
        if initial is not None:
            self._load(initial)

    def _load(self, ruleset: Ruleset) -> None:
        for family, table in ruleset.tables.items():
            handles = [c.handle for c in table.chains.values()]
            handles += [r.handle for rules in table.rules.values() for r in rules]
            state = _Table(family, table.handle, max(handles, default=0) + 1)
            for name, chain in table.chains.items():
                state.chains[name] = _Chain(
                    name, chain.handle, chain.base, list(table.rules_of(name)), chain.policy
                )
            self._tables[family] = state
            self._next_table_handle = max(self._next_table_handle, table.handle + 1)

    # --- reading ------------------------------------------------------------------------

    def read(self, families: Iterable[int] = (4, 6)) -> Ruleset:
        tables = {}
        for family in sorted(set(families)):
            state = self._tables.get(family)
            if state is None:
                continue
            chains = {
                n: Chain(family, n, c.handle, c.base, c.policy) for n, c in state.chains.items()
            }
            rules = {n: tuple(c.rules) for n, c in state.chains.items() if c.rules}
            tables[family] = Table(family, state.handle, chains, rules)
        return Ruleset(tables)

    # --- writing ------------------------------------------------------------------------

    def apply(self, txn: Transaction) -> None:
        if not txn:
            return
        # nft itself refuses a batch naming a table that neither exists nor is added
        # earlier in the batch, before the kernel sees any of it: no handle is spent.
        known = set(self._tables)
        for op in txn.ops:
            if op.kind is OpKind.ADD_TABLE:
                known.add(op.family)
            elif op.family not in known:
                raise NftApplyFailed(
                    f"nft -f refused the transaction: {ENOENT} ({op.line()})", ENOENT
                )
        work = copy.deepcopy(self._tables)
        next_table = self._next_table_handle
        failure: Optional[_Failed] = None
        for op in txn.ops:
            try:
                next_table = self._do(work, op, next_table)
            except _Failed as failed:
                # The kernel goes on through the batch (to report every error) and keeps
                # the handles it allocated on the way; then nothing is committed.
                failure = failure or failed
        if failure is not None:
            for family, state in work.items():
                if family in self._tables:
                    self._tables[family].next_handle = state.next_handle
            self._next_table_handle = next_table
            raise NftApplyFailed(
                f"nft -f refused the transaction: {failure.reason} ({failure.op.line()})",
                failure.reason,
            )
        self._tables = work
        self._next_table_handle = next_table
        self.applied.append(txn.render())

    def _do(self, tables: Dict[int, _Table], op: Op, next_table: int) -> int:
        table = tables.get(op.family)
        if op.kind is OpKind.ADD_TABLE:
            if table is None:
                tables[op.family] = _Table(op.family, next_table)
                next_table += 1
            elif op.create:
                raise _Failed(op, EEXIST)
            return next_table
        if table is None:
            raise _Failed(op, ENOENT)
        assert op.chain is not None
        chain = table.chains.get(op.chain)
        if op.kind is OpKind.ADD_CHAIN:
            if chain is not None and op.create:
                raise _Failed(op, EEXIST)
            if chain is None:
                policy = None if op.base is None else "accept"
                table.chains[op.chain] = _Chain(op.chain, table.allocate(), op.base, [], policy)
            elif op.base is not None and chain.base is None:
                raise _Failed(op, EEXIST)
            elif op.base is not None and op.base != chain.base:
                raise _Failed(op, EOPNOTSUPP)
            return next_table
        if chain is None:
            raise _Failed(op, ENOENT)
        if op.kind is OpKind.FLUSH_CHAIN:
            chain.rules.clear()
        elif op.kind is OpKind.ADD_RULE:
            assert op.body is not None
            action = op.body.action
            handle = table.allocate()  # the kernel numbers the rule before it checks a jump
            if action.kind is ActionKind.JUMP and action.target not in table.chains:
                raise _Failed(op, ENOENT)
            rule = Rule(op.family, op.chain, handle, op.body)
            if op.position is None and op.before:
                chain.rules.insert(0, rule)  # (`insert rule`: first in the chain)
            elif op.position is None:
                chain.rules.append(rule)
            else:
                at = [i for i, r in enumerate(chain.rules) if r.handle == op.position]
                if not at:
                    raise _Failed(op, ENOENT)
                chain.rules.insert(at[0] if op.before else at[0] + 1, rule)
        elif op.kind is OpKind.REPLACE_RULE:
            assert op.body is not None
            at = [i for i, r in enumerate(chain.rules) if r.handle == op.handle]
            if not at:
                raise _Failed(op, ENOENT)
            chain.rules[at[0]] = Rule(op.family, op.chain, chain.rules[at[0]].handle, op.body)
        elif op.kind is OpKind.DELETE_RULE:
            kept = [r for r in chain.rules if r.handle != op.handle]
            if len(kept) == len(chain.rules):
                raise _Failed(op, ENOENT)
            chain.rules[:] = kept
        return next_table

    # --- what tests and benchmarks do by hand -------------------------------------------

    def flush_table(self, family: int) -> None:
        """`nft flush table FAMILY cni_hostport`: every chain emptied, chains stay."""
        state = self._tables.get(family)
        if state is None:
            raise NftApplyFailed(f"no table in family {family}", ENOENT)
        for chain in state.chains.values():
            chain.rules.clear()

    def delete_table(self, family: int) -> None:
        """`nft delete table FAMILY cni_hostport`."""
        if self._tables.pop(family, None) is None:
            raise NftApplyFailed(f"no table in family {family}", ENOENT)
