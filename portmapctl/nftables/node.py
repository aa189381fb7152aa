"""Library calls the commands build on, for the plugin's nftables backend.

- which backend holds a container, chosen as the plugin chooses;
- who owns rules (container IDs from the comments);
- `converge`: read, plan, apply one `nft -f` transaction; when the tables changed
  underneath (the plugin ran: a handle is gone, a chain appeared), re-read and re-plan
  a few times, never force;
- what gc would remove: per dead container ID, its rules and host ports; the mark of
  its rules in one family (`--min-age` forgets a container whose rules changed, were
  written again, or whose table was made afresh: a firewall reload too).
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
# gc's batch of deletions, refused by the kernel: the ruleset moved since the read it
# was planned from (nftables/access/batch.py; access/nft.py's CHANGED).
BATCH_REFUSED = "the ruleset changed since it was read"
# What a table changed under us looks like: a handle or chain gone, a chain made
# meanwhile, the kernel busy with another transaction.
RETRY_REASONS = frozenset(
    {
        "No such file or directory",
        "File exists",
        "Device or resource busy",
        "Interrupted system call",
        BATCH_REFUSED,
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
    at_generation: bool = False,
) -> Converged:
    """Apply `plan(live)` atomically, re-planning when the tables changed meanwhile.

    A try whose nft died without saying (killed: NftApplyFailed.maybe_applied) is
    raised, unless `judge_unsure`: then the next read judges it. A transaction goes in
    whole or not at all, so when the plan made from that read is empty the try went
    in, and it is returned as applied (Converged.unsure); otherwise the new plan is
    tried. (gc judges its own tries: ops/gc/nft.py apply_nft.)

    `at_generation` (gc): each read is stamped with the ruleset generation it was
    listed at where the access can (RealNft.read_settled), and a transaction of
    deletions planned from it is applied only at that generation, refused whole (then
    read and planned again) when anything committed since.
    """
    wanted = tuple(families)
    read_settled = getattr(access, "read_settled", None) if at_generation else None
    last: Optional[NftApplyFailed] = None
    killed: Optional[Tuple[Transaction, NftApplyFailed]] = None
    # A batch refused because the ruleset moved since its read (a firewall reload, it
    # may be): from then on only a read stamped with its generation is written. One
    # not (it kept moving while nft listed) went as `nft -f`, which deletes by handle
    # alone: the write the refusal had just kept out.
    refused_at_generation = False
    for attempt in range(1, attempts + 1):
        live = read_settled(wanted) if read_settled is not None else access.read(wanted)
        txn = plan(live)
        if not txn:
            if killed is not None:
                return Converged(killed[0].render(), attempt, unsure=killed[1])
            return Converged("", attempt)
        killed = None
        if refused_at_generation and live.generation is None:
            continue  # (`last` is the refusal: "kept changing" when no try is left)
        try:
            if live.generation is not None and read_settled is not None:
                access.apply(txn, live.generation)  # type: ignore[call-arg]
            else:
                if read_settled is not None:
                    # As the batch's own lines (access/nft.py): `-v` says which way ran.
                    import logging

                    why = live.unstamped or "its ruleset generation is not known"
                    logging.getLogger("portmapctl.nftables").debug(
                        "nftables: not as one nf_tables batch (%s): nft -f", why
                    )
                access.apply(txn)
        except NftApplyFailed as err:
            if err.maybe_applied:
                if not judge_unsure:
                    raise
                killed, last = (txn, err), err
                continue
            if err.reason in RETRY_REASONS:
                last = err
                refused_at_generation = refused_at_generation or err.reason == BATCH_REFUSED
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
    the rules' handles. The clock carries only while all three are the same.

    The rules' handles alone (gc's mark before) came back the same after `nft flush
    ruleset`: the plugin's ADDs, in the same order, make the table again under the
    same handles, and a stale container started again under its ID (its rules written
    again, its cache entry not yet: gc may look during that ADD) lost its rules at
    once. The table's handle is never given out again in a namespace. Content alone
    could not tell those rules from the old ones either.

    A firewall reload of the saved ruleset (`nft -f`: flush ruleset, then the listing)
    makes the table afresh too, and so starts every clock over: a delay, and on a node
    reloading more often than --min-age the stale rules stay. Telling such a reload from
    the plugin's ADDs was tried, by how nft numbers the handles of a table made from a
    listing: it depends on the order nft and the plugin write in (both changed it
    between versions), and a guess wrong one way removes a restarted container's rules
    during its ADD. Kept out: when in doubt, the rules stay."""

    content: str  # the rules as `nft list` shows them, in listing order
    table: int  # the table's handle: one made afresh gets a new one
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


def same_rules(before: str, mark: RulesMark) -> bool:
    """Whether the container's rules now (their `mark`) are the ones a sighting marked
    `before` (RulesMark.text()): anything else starts the clock over."""
    return RulesMark.parse(before) == mark


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
