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
from typing import List, Sequence, Tuple

from portmapctl.iptables.ruleset import Args, format_rule


@dataclass(frozen=True)
class Op:
    """One restore command: new-chain, append, insert, delete (by the rule's text),
    delete-number (by its position, 1 first: args is that one number), flush,
    delete-chain, check (`-C`: changes nothing, fails the transaction when the rule
    is not there)."""

    kind: str
    chain: str
    args: Args = ()

    def line(self) -> str:
        if self.kind == "insert":
            return format_rule("-I", self.chain, ("1", *self.args))
        command = {
            "new-chain": "-N",
            "append": "-A",
            "delete": "-D",
            "delete-number": "-D",
            "check": "-C",
            "flush": "-F",
            "delete-chain": "-X",
        }[self.kind]
        return format_rule(command, self.chain, self.args)


@dataclass
class Transaction:
    family: int
    ops: List[Op] = field(default_factory=list)

    def new_chain(self, chain: str) -> None:
        """Create `chain`; the transaction fails if it exists by then."""
        self.ops.append(Op("new-chain", chain))

    def append(self, chain: str, args: Sequence[str]) -> None:
        self.ops.append(Op("append", chain, tuple(args)))

    def insert_first(self, chain: str, args: Sequence[str]) -> None:
        self.ops.append(Op("insert", chain, tuple(args)))

    def delete(self, chain: str, args: Sequence[str]) -> None:
        self.ops.append(Op("delete", chain, tuple(args)))

    def delete_number(self, chain: str, position: int) -> None:
        """Delete the rule at `position` (1 is the first), whatever it is by then: the
        caller guards (see planner.plan_teardown)."""
        self.ops.append(Op("delete-number", chain, (str(position),)))

    def check(self, chain: str, args: Sequence[str]) -> None:
        """Require this rule to be in `chain` when the transaction is applied."""
        self.ops.append(Op("check", chain, tuple(args)))

    def without_checks(self) -> Transaction:
        """The same changes, without the -C lines (what it did, to show)."""
        return Transaction(self.family, [op for op in self.ops if op.kind != "check"])

    def flush(self, chain: str) -> None:
        self.ops.append(Op("flush", chain))

    def delete_chain(self, chain: str) -> None:
        self.ops.append(Op("delete-chain", chain))

    def __bool__(self) -> bool:
        return bool(self.ops)

    def chains_touched(self) -> Tuple[str, ...]:
        return tuple(dict.fromkeys(op.chain for op in self.ops))

    def render(self) -> str:
        """The text for `iptables-restore --noflush` (empty when there is nothing to do)."""
        if not self.ops:
            return ""
        return "\n".join(["*nat", *(op.line() for op in self.ops), "COMMIT", ""])
