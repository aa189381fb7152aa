"""Library calls the commands build on, for the plugin's nftables backend.

- which backend holds a container, chosen as the plugin chooses;
- who owns rules (container IDs from the comments);
- `converge`: read, plan, apply one `nft -f` transaction; when the tables changed
  underneath (the plugin ran: a handle is gone, a chain appeared), re-read and re-plan
  a few times, never force;
- what gc would remove: per dead container ID, its rules and host ports; the mark of
  its rules in one family (`--min-age` forgets a container whose rules changed, or
  were written again, but not one whose table a firewall reload made afresh).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Collection, Dict, Iterable, List, Optional, Set, Tuple

from portmapctl.core.backend import Backend
from portmapctl.errors import ApplyFailed, BadInput
from portmapctl.nftables.access import NftAccess, NftApplyFailed
from portmapctl.nftables.ruleset import (
    CONTAINER_CHAINS,
    FAMILY_NAMES,
    MASQUERADING,
    ActionKind,
    Rule,
    Ruleset,
    Table,
)

if TYPE_CHECKING:  # (imported by what plans, not by `list`, which only reads)
    from portmapctl.nftables.transaction import Transaction

ATTEMPTS = 3
# What a table changed under us looks like: a handle or chain gone, a chain made
# meanwhile, the kernel busy with another transaction.
RETRY_REASONS = frozenset(
    {
        "No such file or directory",
        "File exists",
        "Device or resource busy",
        "Interrupted system call",
    }
)


def owners_in(live: Ruleset) -> Set[str]:
    """Container IDs that own a rule in either family."""
    return {
        rule.comment
        for table in live.tables.values()
        for chain in CONTAINER_CHAINS
        for rule in table.rules_of(chain)
        if rule.comment
    }


def choose(
    configured: Optional[str],
    container_id: str,
    nft_owners: Collection[str],
    iptables_owners: Collection[str],
    keyless: Backend = Backend.IPTABLES,
) -> Backend:
    """The plugin's own choice for a container.

    The cached config's `backend` key decides. Without it the plugin takes iptables
    when iptables works; a container whose rules are in nftables only was added while
    it did not, and its DEL would look there too only under the same conditions: we
    follow the rules. Nothing anywhere: `keyless`, what the plugin takes on this node
    for a config without the key (iptables, unless the node has no iptables).
    """
    if configured in tuple(Backend):
        return Backend(configured)
    if container_id in nft_owners and container_id not in iptables_owners:
        return Backend.NFTABLES
    if container_id in iptables_owners and container_id not in nft_owners:
        return Backend.IPTABLES
    return keyless


@dataclass(frozen=True)
class Converged:
    text: str  # the transaction that went in ("" when nothing was needed)
    attempts: int
    # The error of a try whose nft died without saying, found gone in by the next read
    # (its text is `text`); None when nft answered for the transaction applied.
    unsure: Optional[NftApplyFailed] = None


def converge(
    access: NftAccess,
    plan: Callable[[Ruleset], Transaction],
    families: Iterable[int] = (4, 6),
    attempts: int = ATTEMPTS,
    judge_unsure: bool = False,
) -> Converged:
    """Apply `plan(live)` atomically, re-planning when the tables changed meanwhile.

    A try whose nft died without saying (killed: NftApplyFailed.maybe_applied) is
    raised, unless `judge_unsure`: then the next read judges it. A transaction goes in
    whole or not at all, so when the plan made from that read is empty the try went
    in, and it is returned as applied (Converged.unsure); otherwise the new plan is
    tried. (gc judges its own tries: ops/gc/nft.py apply_nft.)
    """
    wanted = tuple(families)
    last: Optional[NftApplyFailed] = None
    killed: Optional[Tuple[Transaction, NftApplyFailed]] = None
    for attempt in range(1, attempts + 1):
        txn = plan(access.read(wanted))
        if not txn:
            if killed is not None:
                return Converged(killed[0].render(), attempt, unsure=killed[1])
            return Converged("", attempt)
        killed = None
        try:
            access.apply(txn)
        except NftApplyFailed as err:
            if err.maybe_applied:
                if not judge_unsure:
                    raise
                killed, last = (txn, err), err
                continue
            if err.reason in RETRY_REASONS:
                last = err
                continue
            if err.userspace:
                # nft refused the text itself: of what we write, only the plugin's
                # nft-syntax conditions are free text, and the comment, the container ID
                # (CNI allows any length; nft a comment of 128 bytes).
                culprit = (
                    ": the rules' comment is the container ID, too long for nftables (the"
                    " plugin's ADD fails on it too)"
                    if "comment too long" in err.reason
                    else " (check the nftables conditions, conditionsV4/V6)"
                )
                raise BadInput(f"nft refused the transaction: {err.reason}{culprit}") from None
            raise
        return Converged(txn.render(), attempt)
    if killed is not None:
        raise ApplyFailed(
            f"gave up after {attempts} tries, the last try may have been applied (whole):"
            f" run again to see: {killed[1]}",
            maybe_applied=True,
        )
    reason = last.reason if last is not None else "unknown"
    raise ApplyFailed(
        f"nftables kept changing while applying ({attempts} tries, last: {reason}); "
        "nothing was changed by the last try: run again"
    )


@dataclass(frozen=True)
class DeadContainer:
    """A container ID with rules in nftables and no claim to be live."""

    container_id: str
    rules: Tuple[Rule, ...]
    host_ports: Tuple[Tuple[int, str, int], ...]  # (family, protocol, port)

    @property
    def families(self) -> Tuple[int, ...]:
        return tuple(sorted({r.family for r in self.rules}))


@dataclass(frozen=True)
class RulesMark:
    """What gc's --min-age sighting of one container's rules in one family holds (the
    state file's fingerprint, `text()`): the rules as written, the table's handle and
    the rules' handles.

    Handles alone (as gc kept them before) were lost to a firewall reload (`nft -f`
    of a saved ruleset makes the table afresh, every handle new), so on a node
    reloading more often than --min-age nothing was ever removed. Content alone could not tell the
    same container's rules written again (its DEL, then an ADD under the same ID:
    podman restart) from the old ones, and gc may look during that ADD, before libcni
    writes the cache entry that makes it live: removed then, a container loses its
    ports (the --min-age rule exists for that moment)."""

    content: str  # the rules as `nft list` shows them, in listing order
    table: int  # the table's handle: one made afresh (a reload) gets a new one
    handles: str  # the rules' handles: a rule written again gets a new one

    def text(self) -> str:
        return f"{self.content}:{self.table}:{self.handles}"

    @classmethod
    def parse(cls, text: str) -> Optional[RulesMark]:
        """The mark `text()` wrote; None for anything else (the handle digest before: the
        clock starts again once, a delay)."""
        parts = text.split(":")
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        return cls(parts[0], int(parts[1]), parts[2])


def rules_mark(table: Table, rules: Collection[Rule]) -> RulesMark:
    """The mark of one container's `rules` in `table` (its family's)."""
    import hashlib  # here: `list` imports this module and never needs it

    def digest(lines: Iterable[str]) -> str:
        text = "\n".join(lines).encode("utf-8", "surrogateescape")
        return hashlib.sha256(text).hexdigest()[:16]

    return RulesMark(
        digest(f"{r.family} {r.chain} {r.body.text(r.family)}" for r in rules),
        table.handle,
        digest(f"{r.family} {r.chain} {r.handle}" for r in rules),
    )


def same_rules(before: str, mark: RulesMark, table: Table, container_id: str) -> bool:
    """Whether the container's rules in `table` now (their `mark`) are the ones a
    sighting marked `before`: the same rules, or the same content written again by a
    reload.

    A reload is told from the container's DEL and ADD by handles: a table's handles
    count up from 1, and the batch that makes a table writes its chains and the
    table's own rules (the uncommented jumps into its chains, which the plugin writes
    only then). A rule written later has a handle above all of them; one below the
    first jump was written with the table. The plugin writes one container per ADD:
    rules of two containers below the first jump come from something that wrote
    several at once with the table (a reload, in whatever order nft takes the saved
    text; `check --repair` writes live containers only). Anything else starts over:
    the same table with the rules written again (an ADD), a table the container's
    own ADD made (a reload keeping only it looks the same), a container written after
    its table was made: a delay, never a removal before --min-age."""
    old = RulesMark.parse(before)
    if old is None or old.content != mark.content:
        return False
    if old == mark:
        return True
    if 0 in (old.table, mark.table) or old.table == mark.table:
        return False  # (the same table, rules written again: an ADD; or unknown)
    jumps = [
        rule.handle
        for rules_of_chain in table.rules.values()
        for rule in rules_of_chain
        if rule.comment is None and rule.body.action.kind is ActionKind.JUMP
    ]
    if not jumps:
        return False
    first_jump = min(jumps)
    writers = {
        rule.comment
        for chain in CONTAINER_CHAINS
        for rule in table.rules_of(chain)
        if rule.comment is not None and rule.handle < first_jump
    }
    return container_id in writers and len(writers) > 1


_CNI_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


def is_plugin_rule(rule: Rule) -> bool:
    """A rule the plugin writes: its comment a container ID (CNI's rules for names), a
    DNAT in a host-port chain or a masquerade in `masquerading`. Anything else someone
    put in these chains is never removed."""
    if rule.comment is None or not _CNI_NAME.match(rule.comment):
        return False
    if rule.chain != MASQUERADING:
        return rule.body.action.kind is ActionKind.DNAT
    # The plugin's: `ip saddr A ip daddr B masquerade`, one address each (an admin's
    # `ip saddr 10.9.9.0/24 masquerade`, its comment a word, was gc's to delete).
    ip = FAMILY_NAMES[rule.family]
    matches = rule.body.matches
    return (
        rule.body.action.kind is ActionKind.MASQUERADE
        and [(m.left, m.op) for m in matches] == [(f"{ip} saddr", "=="), (f"{ip} daddr", "==")]
        and not any("/" in m.right or m.raw is not None for m in matches)
    )


def dead_containers(live: Ruleset, is_live: Callable[[str], bool]) -> List[DeadContainer]:
    """Every rule owner that `is_live` rejects, in ID order. Rules without a comment are
    nobody's: never removed."""
    found: Dict[str, List[Rule]] = {}
    for family in sorted(live.tables):
        table = live.tables[family]
        for chain in CONTAINER_CHAINS:
            for rule in table.rules_of(chain):
                if is_plugin_rule(rule) and not is_live(rule.comment or ""):
                    found.setdefault(rule.comment or "", []).append(rule)
    from portmapctl.nftables.inventory import dport_values

    dead = []
    for cid in sorted(found):
        ports: Dict[Tuple[int, str, int], None] = {}
        for rule in found[cid]:
            if rule.body.action.kind is not ActionKind.DNAT:
                continue
            for match in rule.body.matches:
                left = match.left.split()
                if len(left) == 2 and left[1] == "dport" and match.op == "==":
                    # A port set too: list has a row for each, its UDP flows are flushed.
                    for port in dport_values(match.right) or ():
                        ports[(rule.family, left[0], port)] = None
        dead.append(DeadContainer(cid, tuple(found[cid]), tuple(ports)))
    return dead


def udp_ports(dead: Iterable[DeadContainer]) -> Dict[int, List[int]]:
    """family -> UDP host ports unmapped by removing `dead` (for the conntrack flush)."""
    ports: Dict[int, Set[int]] = {}
    for container in dead:
        for family, proto, port in container.host_ports:
            if proto == "udp":
                ports.setdefault(family, set()).add(port)
    return {family: sorted(found) for family, found in ports.items()}
