"""An `nft -f` transaction over the plugin's tables, both families in one.

Built up step by step (as in knftables), printed as `nft -f` text (that is what
`--dry-run` shows) and applied in one go: nft applies a whole batch or nothing, so a
`delete rule ... handle N` of a rule that went away meanwhile fails all of it, and the
caller re-reads and re-plans, never forces.

Only the plugin's own vocabulary is written: add table/chain, flush chain, add rule (or
insert it, at a handle's position), delete rule by handle; and the guard of add's and
check --repair's (planner._guard_plugin_add): a jump of the entry replaced by itself at
its handle, which fails the transaction when that handle is gone. Text from a cache or
a dump
reaches the output only as a validated value (a container ID, an address, a port) or,
for the plugin's nft-syntax conditions, after `check_condition` refused anything that could end a
command or leave a brace unpaired.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from typing import FrozenSet, Iterable, List, Optional, Set, Tuple

from portmapctl.errors import BadInput
from portmapctl.nftables.ruleset import (
    FAMILY_NAMES,
    TABLE,
    TABLE_COMMENT,
    BaseHook,
    RuleBody,
    Ruleset,
)


class OpKind(str, Enum):
    ADD_TABLE = "add table"
    ADD_CHAIN = "add chain"
    FLUSH_CHAIN = "flush chain"
    ADD_RULE = "add rule"
    DELETE_RULE = "delete rule"
    REPLACE_RULE = "replace rule"


@dataclass(frozen=True)
class Op:
    kind: OpKind
    family: int
    chain: Optional[str] = None
    base: Optional[BaseHook] = None  # ADD_CHAIN of a base chain
    body: Optional[RuleBody] = None  # ADD_RULE, REPLACE_RULE; DELETE_RULE: the rule, when known
    handle: Optional[int] = None  # DELETE_RULE, REPLACE_RULE
    # ADD_RULE at a place: before (`insert rule ... position H`) or after (`add rule
    # ... position H`) the rule with handle H; None appends, or with `before` puts it
    # first in the chain (`insert rule`).
    position: Optional[int] = None
    before: bool = False
    # ADD_TABLE/ADD_CHAIN as `create`: the transaction fails when it exists by then.
    create: bool = False

    def line(self) -> str:
        where = f"{FAMILY_NAMES[self.family]} {TABLE}"
        verb = "create" if self.create else "add"
        if self.kind is OpKind.ADD_TABLE:
            return f'{verb} table {where} {{ comment "{TABLE_COMMENT}" ; }}'
        if self.kind is OpKind.ADD_CHAIN:
            if self.base is None:
                return f"{verb} chain {where} {self.chain}"
            spec = f"type {self.base.type} hook {self.base.hook} priority {self.base.priority}"
            return f"{verb} chain {where} {self.chain} {{ {spec} ; }}"
        if self.kind is OpKind.FLUSH_CHAIN:
            return f"flush chain {where} {self.chain}"
        if self.kind is OpKind.ADD_RULE:
            assert self.body is not None
            verb, at = ("insert" if self.before else "add"), ""
            if self.position is not None:
                at = f" position {self.position}"
            return f"{verb} rule {where} {self.chain}{at} {self.body.text(self.family)}"
        if self.kind is OpKind.REPLACE_RULE:
            assert self.body is not None
            return (
                f"replace rule {where} {self.chain} handle {self.handle}"
                f" {self.body.text(self.family)}"
            )
        return f"delete rule {where} {self.chain} handle {self.handle}"


# Comments the plugin writes are container IDs: CNI allows [A-Za-z0-9][A-Za-z0-9_.-]*.
_COMMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
# Characters that end an nft command (newline, ;), start a comment (#), or quote: a
# condition must stay inside its one rule.
_UNSAFE = re.compile(r'[\n\r;#"\\\x00]')


def check_condition(text: str) -> str:
    """An nft-syntax condition from a config, refused when it could escape its rule.

    A string in double quotes is one token to nft's scanner, whatever it holds (`;`
    and `#` in it end nothing: checked against nft 1.0.6), so any is allowed that
    holds no quote, backslash, white space or NUL: an interface name (`iifname
    "eth0"`, nft's wildcard `"veth*"`, Linux allows `+` or `#` in one), a helper, a
    cgroup path. Braces only in pairs: an anonymous set (`ip saddr { 10.0.0.0/8,
    192.168.0.0/16 }`, which the plugin writes as given) opens and closes within the
    rule; a brace left open or closing what the condition did not open is refused.
    """
    unquoted = re.sub(r'"[^"\\\s\x00]*"', "", text)
    if _UNSAFE.search(unquoted) or not text.strip() or not _paired(unquoted):
        raise BadInput(f"refusing nftables condition {text!r}: not a plain nft match")
    return text


def refused_condition(conditions: Iterable[str]) -> Optional[str]:
    """Why one of `conditions` cannot be written (check_condition's words), else None."""
    for condition in conditions:
        try:
            check_condition(condition)
        except BadInput as err:
            return str(err)
    return None


def _paired(text: str) -> bool:
    """Whether every `{` of `text` is closed by a later `}` and no `}` closes more."""
    depth = 0
    for char in text:
        if char in "{}":
            depth += 1 if char == "{" else -1
            if depth < 0:
                return False
    return depth == 0


def _check_body(body: RuleBody) -> None:
    if body.comment is not None and not _COMMENT.match(body.comment):
        raise BadInput(f"refusing rule comment {body.comment!r}: not a container ID")
    for match in body.matches:
        if match.raw is not None:
            check_condition(match.raw)


@dataclass
class Transaction:
    ops: List[Op] = field(default_factory=list)
    # (family, chain) written again with the rules it held, each once (the repair's
    # dedupe): nothing of it was missing, so no mapping was dark (nft_repair_txn.nft_changed).
    as_read: Set[Tuple[int, str]] = field(default_factory=set, compare=False)
    # The families whose table, as read when this was planned, took flows the node
    # routes to other hosts (layout.took_routed): only there are such flows, DNATed to
    # where a rewritten entry or a deleted rule sent them, let go afterwards.
    took_routed: FrozenSet[int] = field(default=frozenset(), compare=False)

    def add_table(self, family: int, create: bool = False) -> None:
        """`create`: fail the transaction if the table exists by then (else a no-op)."""
        self.ops.append(Op(OpKind.ADD_TABLE, family, create=create))

    def add_chain(
        self, family: int, chain: str, base: Optional[BaseHook] = None, create: bool = False
    ) -> None:
        """`create`: fail the transaction if the chain exists by then (else a no-op)."""
        self.ops.append(Op(OpKind.ADD_CHAIN, family, chain, base=base, create=create))

    def flush_chain(self, family: int, chain: str) -> None:
        self.ops.append(Op(OpKind.FLUSH_CHAIN, family, chain))

    def add_rule(
        self,
        family: int,
        chain: str,
        body: RuleBody,
        position: Optional[int] = None,
        before: bool = False,
    ) -> None:
        """Append (`before`: put it first), or with `position` put it before/after the
        rule of that handle."""
        _check_body(body)
        op = Op(OpKind.ADD_RULE, family, chain, body=body, position=position, before=before)
        self.ops.append(op)

    def delete_rule(
        self, family: int, chain: str, handle: int, body: Optional[RuleBody] = None
    ) -> None:
        """By handle only; `body` says whose rule it was (never written out)."""
        self.ops.append(Op(OpKind.DELETE_RULE, family, chain, body=body, handle=int(handle)))

    def replace_rule(self, family: int, chain: str, handle: int, body: RuleBody) -> None:
        """The rule at `handle` made `body`, keeping its place and handle; the whole
        transaction fails (ENOENT) when no rule has that handle by then."""
        _check_body(body)
        self.ops.append(Op(OpKind.REPLACE_RULE, family, chain, body=body, handle=int(handle)))

    def holds_in(self, live: Ruleset) -> bool:
        """Whether every rule this deletes by handle (with its body known) is, in `live`,
        at that handle of that chain. Within one table a handle is never given twice,
        but a table made again (a firewall reload: list, flush, load) hands its rules
        handles anew: another container's rule may have the handle read before."""
        for op in self.ops:
            if op.kind is not OpKind.DELETE_RULE or op.body is None:
                continue
            table = live.tables.get(op.family)
            rules = table.rules_of(op.chain or "") if table is not None else ()
            if not any(r.handle == op.handle and r.body == op.body for r in rules):
                return False
        return True

    def __bool__(self) -> bool:
        return bool(self.ops)

    def families(self) -> Tuple[int, ...]:
        return tuple(sorted({op.family for op in self.ops}))

    def written(self, family: int) -> Set[str]:
        """The chains of `family` this adds rules (or chains) to: what the kernel judges
        (problems.refuses_the_plugins_rules); a deletion it takes anywhere."""
        adding = (OpKind.ADD_RULE, OpKind.ADD_CHAIN, OpKind.REPLACE_RULE)
        return {
            op.chain for op in self.ops if op.family == family and op.kind in adding and op.chain
        }

    def render(self) -> str:
        """The text for `nft -f -` (empty when there is nothing to do)."""
        if not self.ops:
            return ""
        return "".join(op.line() + "\n" for op in self.ops)
