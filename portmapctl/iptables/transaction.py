"""A restore transaction for one family's nat table.

Built up step by step (like knftables' Transaction), printed as
`iptables-restore --noflush` text for `--dry-run`, and applied in one go by a
backend. iptables-restore applies the whole text or nothing, so a transaction is
atomic: a `-D` of a rule that is no longer there fails all of it.

Chains are created with `-N`, never declared with `:CHAIN`: under --noflush a
declaration silently flushes a chain that exists, so a shared chain the plugin
created after we read the table would lose its rules. `-N` of an existing chain
fails the whole transaction instead, and the caller re-reads and re-plans.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import List, Mapping, Optional, Sequence, Tuple

from portmapctl.iptables.ruleset import Args, format_rule


class OpKind(str, Enum):
    """What one restore command does; the value is how `--dry-run -o json` names it."""

    NEW_CHAIN = "new-chain"
    APPEND = "append"
    INSERT = "insert"  # at `position` (1: the top of the chain)
    DELETE = "delete"  # by the rule's text
    DELETE_NUMBER = "delete-number"  # by its position, 1 first (args: that number)
    CHECK = "check"  # -C: changes nothing, fails the transaction when the rule is not there
    FLUSH = "flush"
    DELETE_CHAIN = "delete-chain"

    __hash__ = str.__hash__


# The iptables-restore command of each kind (insert adds its position).
_COMMAND = {
    OpKind.NEW_CHAIN: "-N",
    OpKind.APPEND: "-A",
    OpKind.INSERT: "-I",
    OpKind.DELETE: "-D",
    OpKind.DELETE_NUMBER: "-D",
    OpKind.CHECK: "-C",
    OpKind.FLUSH: "-F",
    OpKind.DELETE_CHAIN: "-X",
}


@dataclass(frozen=True)
class Op:
    """One restore command (delete-number: args is the rule's position, 1 first;
    insert: the rule goes in at `position`)."""

    kind: OpKind
    chain: str
    args: Args = ()
    position: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", OpKind(self.kind))  # a word is taken too

    def line(self) -> str:
        args = (str(self.position), *self.args) if self.kind is OpKind.INSERT else self.args
        return format_rule(_COMMAND[self.kind], self.chain, args)


@dataclass(frozen=True)
class Removal:
    """What a teardown transaction takes away, for a backend that removes it by identity
    rather than by replaying the text (iptables/access/nfnl_batch.py: nf_tables, by
    rule handle, refused whole when the ruleset moved since `generation`).

    `chains` go whole, with their rules; `rules[chain]` are the positions (0-based) of
    the rules deleted from a chain that stays, in `read[chain]`, that chain as read.
    """

    chains: Tuple[str, ...]
    rules: Mapping[str, Tuple[int, ...]]
    read: Mapping[str, Tuple[Args, ...]]
    generation: Optional[int]


@dataclass
class Transaction:
    """One family's iptables-restore input, in order. `removal`: the same change as
    what goes (plan_teardown sets it), for a backend that can apply it that way."""

    family: int
    ops: List[Op] = field(default_factory=list)
    removal: Optional[Removal] = field(default=None, compare=False, repr=False)

    def new_chain(self, chain: str) -> None:
        """Create `chain`; the transaction fails if it exists by then."""
        self.ops.append(Op(OpKind.NEW_CHAIN, chain))

    def append(self, chain: str, args: Sequence[str]) -> None:
        self.ops.append(Op(OpKind.APPEND, chain, tuple(args)))

    def insert_first(self, chain: str, args: Sequence[str]) -> None:
        self.ops.append(Op(OpKind.INSERT, chain, tuple(args)))

    def insert_at(self, chain: str, position: int, args: Sequence[str]) -> None:
        """Insert the rule at `position` (1 is the first), whatever is there by then:
        the caller guards (planner._dedupe)."""
        self.ops.append(Op(OpKind.INSERT, chain, tuple(args), position))

    def delete(self, chain: str, args: Sequence[str]) -> None:
        self.ops.append(Op(OpKind.DELETE, chain, tuple(args)))

    def delete_number(self, chain: str, position: int) -> None:
        """Delete the rule at `position` (1 is the first), whatever it is by then: the
        caller guards (see planner.plan_teardown)."""
        self.ops.append(Op(OpKind.DELETE_NUMBER, chain, (str(position),)))

    def check(self, chain: str, args: Sequence[str]) -> None:
        """Require this rule to be in `chain` when the transaction is applied."""
        self.ops.append(Op(OpKind.CHECK, chain, tuple(args)))

    def without_checks(self) -> Transaction:
        """The same changes, without the -C lines (what it did, to show)."""
        return Transaction(self.family, [op for op in self.ops if op.kind is not OpKind.CHECK])

    def flush(self, chain: str) -> None:
        self.ops.append(Op(OpKind.FLUSH, chain))

    def delete_chain(self, chain: str) -> None:
        self.ops.append(Op(OpKind.DELETE_CHAIN, chain))

    def __bool__(self) -> bool:
        return bool(self.ops)

    def render(self) -> str:
        """The text for `iptables-restore --noflush` (empty when there is nothing to do)."""
        if not self.ops:
            return ""
        return "\n".join(["*nat", *(op.line() for op in self.ops), "COMMIT", ""])
