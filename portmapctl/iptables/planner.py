"""(wanted chains, live table) -> the smallest Transaction that makes them agree.

Both sides are in saved normal form (see `ruleset`), so comparing is comparing tuples.
The semantics follow the plugin's ADD, minus its needless churn:

- a shared chain (CNI-HOSTPORT-*) is created when missing; its missing rules and
  entry rules are added (appended, or inserted first for MASQ), never flushed, each
  chain they go to behind a count guard (`_count_guard`: a rule the plugin added
  meanwhile fails the try, rather than going in twice);
- a per-container chain is left alone when its rules are exactly the wanted ones,
  otherwise rewritten whole (the plugin tears it down and sets it up again): the
  rules read deleted by text behind an emptiness guard (`_rewrite`), never flushed;
- entry rules that jump to a per-container chain but are no longer wanted are
  deleted; wanted ones that are missing are appended;
- with `dedupe` (check --repair, never add): a rule of the plugin's that stands twice
  or more in one chain (`duplicates`) is left once, where its first copy stood,
  behind the same count guard (`_dedupe`).

`plan_teardown` is the reverse, for `gc`: per-container chains out, with every rule
that jumps to them, in an order iptables-nft accepts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, FrozenSet, Iterable, List, Mapping, Optional, Tuple

from portmapctl.iptables.chains import (
    DNAT_PREFIX,
    OLD_TOPLEVEL_SNAT,
    SHARED_CHAINS,
    TOPLEVEL_DNAT,
    Chain,
    is_plugin_chain,
    is_portmap_chain,
)
from portmapctl.iptables.ruleset import (
    BUILTIN_NAT_CHAINS,
    CONTROL_CHARS,
    Args,
    NatTable,
    SavedChain,
    rule_target,
)
from portmapctl.iptables.transaction import Op, OpKind, Removal, Transaction

if TYPE_CHECKING:
    from portmapctl.core.mapping import MappingConfig
    from portmapctl.core.validate import Spelling

# From this many rules deleted out of one chain, by position (behind a guard) rather
# than by text. Measured (iptables-nft-restore, a chain of 10,000 rules): 1 rule
# 164 ms by text / 160 ms by number, 4: 255 / 191 ms, 16: 374 / 193 ms, 256: 3.9 s /
# 0.28 s. Below it, gc of one container stays the minimal exact transaction.
BY_NUMBER_FROM = 4
# Made and removed inside the one transaction (never seen outside it); in the
# CNI-HOSTPORT- namespace, the only one SPEC §5 lets portmapctl write.
GUARD_CHAIN = "CNI-HOSTPORT-PMCTL-GUARD"


def plan_setup(wanted: Iterable[Chain], live: NatTable, dedupe: bool = False) -> Transaction:
    wanted = list(wanted)
    txn = Transaction(live.family)
    entries = _EntryIndex(live)
    guarded: Dict[str, None] = {}  # chains whose appends are behind a count guard
    if dedupe:
        _dedupe(txn, live, wanted, guarded)
    rewritten = [_plan_chain(chain, live, entries, txn, guarded) for chain in wanted]
    if any(rewritten) or guarded:
        # One guard for every rewritten chain (`_rewrite`) and every counted one
        # (`_count_guard`): made first, removed last.
        txn.ops.insert(0, Op(OpKind.NEW_CHAIN, GUARD_CHAIN))
        txn.delete_chain(GUARD_CHAIN)
    return txn


def plan_blind(wanted: Iterable[Chain], family: int) -> Transaction:
    """What plan_setup plans when every shared chain is complete and every
    per-container chain is absent (a new container on a working node), planned without
    reading the table; the transaction itself checks that this is so.

    - a shared chain's rules and its entry rules: `-C` each (iptables-restore refuses
      the whole transaction when one is missing, or the chain is);
    - a per-container chain: `-N` (refused when it exists), its rules, and its entry
      rules appended (or inserted first): none can be there, as nothing can jump to a
      chain that does not exist.
    When it is refused, nothing changed and the caller plans from the table read
    whole (plan_setup), as before. The checks run inside the one transaction, so they
    hold at the moment it commits: a plugin ADD/DEL between planning and applying is
    seen, never overwritten. A table of 5,000 containers costs this one restore, not a
    save and a parse of 45,000 rules.
    """
    txn = Transaction(family)
    for chain in wanted:
        if chain.shared:
            for rule in chain.rules:
                txn.check(chain.name, rule)
            for entry_chain in chain.entry_chains:
                for rule in chain.entry_rules:
                    txn.check(entry_chain, rule)
            continue
        txn.new_chain(chain.name)
        for rule in chain.rules:
            txn.append(chain.name, rule)
        for entry_chain in chain.entry_chains:
            if chain.prepend_entry:
                for rule in reversed(chain.entry_rules):
                    txn.insert_first(entry_chain, rule)
            else:
                for rule in chain.entry_rules:
                    txn.append(entry_chain, rule)
    return txn


class _EntryIndex:
    """The rules of the chains that hold entry rules (`CNI-HOSTPORT-DNAT`, ...), as sets
    and by target, made once per chain: scanned per wanted chain, planning the chains of
    5,000 healthy containers took 6.2 s (0.23 s at 1,000), now linear."""

    def __init__(self, live: NatTable) -> None:
        self.live = live
        self._present: Dict[str, FrozenSet[Args]] = {}
        self._by_target: Dict[str, Dict[Optional[str], List[Args]]] = {}

    def present(self, chain: str) -> FrozenSet[Args]:
        found = self._present.get(chain)
        if found is None:
            found = self._present[chain] = frozenset(self.live.rules(chain))
        return found

    def jumping_to(self, chain: str, target: str) -> List[Args]:
        """The rules of `chain` whose target is `target`, in the chain's order."""
        index = self._by_target.get(chain)
        if index is None:
            index = self._by_target[chain] = {}
            for rule in self.live.rules(chain):
                index.setdefault(rule_target(rule), []).append(rule)
        return index.get(target, [])


def _plan_chain(
    chain: Chain,
    live: NatTable,
    entries: _EntryIndex,
    txn: Transaction,
    guarded: Dict[str, None],
) -> bool:
    """Plan one chain; True when it is rewritten (then it needs the guard chain; so do
    the chains put in `guarded`)."""
    rewritten = False
    exists = live.has_chain(chain.name)
    live_rules = live.rules(chain.name)
    if not exists:
        txn.new_chain(chain.name)
        for rule in chain.rules:
            txn.append(chain.name, rule)
    elif chain.shared:
        missing_rules = [rule for rule in chain.rules if rule not in live_rules]
        if missing_rules:
            _count_guard(txn, live, chain.name, guarded)
        for rule in missing_rules:
            txn.append(chain.name, rule)
    elif live_rules != chain.rules:
        _rewrite(txn, live, chain)
        rewritten = True

    for entry_chain in chain.entry_chains:
        present = entries.present(entry_chain)
        if not chain.shared:
            for rule in entries.jumping_to(entry_chain, chain.name):
                if rule not in chain.entry_rules:
                    txn.delete(entry_chain, rule)
        missing = [rule for rule in chain.entry_rules if rule not in present]
        if missing and chain.shared:
            _count_guard(txn, live, entry_chain, guarded)
        if chain.prepend_entry:
            # Inserting each at position 1 in reverse keeps the wanted order.
            for rule in reversed(missing):
                txn.insert_first(entry_chain, rule)
        else:
            for rule in missing:
                txn.append(entry_chain, rule)
    return rewritten


def _count_guard(txn: Transaction, live: NatTable, name: str, guarded: Dict[str, None]) -> None:
    """Make the transaction fail unless chain `name` (existing, shared) still holds as
    many rules as were read, before a shared rule missing from it is added: a jump
    to GUARD_CHAIN appended, then rule count + 1 deleted, which is that jump only
    when nothing was added or removed (else the -X of GUARD_CHAIN, last, fails).
    A shared rule's -A (PREROUTING's jump, SETMARK's and MASQ's rules) fails on
    nothing: a plugin ADD that put it back between our read and our write got it
    twice, and check called the copies a problem --repair never removes (review
    helper-131). With the guard that try is refused whole and re-planned from a new
    read, where the rule is there. Once per chain, ahead of its first addition."""
    if name in guarded:
        return
    guarded[name] = None
    txn.append(name, ("-j", GUARD_CHAIN))
    txn.delete_number(name, len(live.rules(name)) + 1)


@dataclass(frozen=True)
class Duplicate:
    """A rule standing more than once in `chain`: its copies' 0-based positions."""

    chain: str
    rule: Args
    at: Tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.at)

    @property
    def first(self) -> int:
        return self.at[0]


def unwritable_duplicate(dup: Duplicate) -> bool:
    """Whether `dup`'s text holds control characters (an escape sequence in a comment,
    never the plugin's own writing), so that no restore can delete its copies by text:
    _dedupe leaves it, check gives the way by hand alone."""
    return any(CONTROL_CHARS.search(a) for a in dup.rule)


def duplicates(live: NatTable) -> List[Duplicate]:
    """The rules of the plugin's that stand more than once in one chain (check's
    duplicate-entry; `_dedupe` deletes the extra copies): a jump to a portmap chain in
    a built-in or portmap chain (two writers that found PREROUTING's jump missing after
    a flush both append it: the plugin's ADDs race so), and a shared chain's own rules
    (the same race doubles CNI-HOSTPORT-MASQ's MASQUERADE). A chain of someone else's
    is theirs, even where it jumps to ours. In chain order, each rule by its first copy."""
    found = []
    for saved in live.chains.values():
        if len(set(saved.rules)) == len(saved.rules):
            continue  # no rule twice (the usual case: a set, in C)
        if saved.name not in BUILTIN_NAT_CHAINS and not is_portmap_chain(saved.name):
            continue
        at: Dict[Args, List[int]] = {}
        for index, rule in enumerate(saved.rules):
            at.setdefault(rule, []).append(index)
        for rule, positions in at.items():
            if len(positions) < 2:
                continue
            if saved.name in SHARED_CHAINS or is_portmap_chain(rule_target(rule) or ""):
                found.append(Duplicate(saved.name, rule, tuple(positions)))
    return found


def _dedupe(
    txn: Transaction, live: NatTable, wanted: List[Chain], guarded: Dict[str, None]
) -> None:
    """Leave one copy, the first, of each rule `duplicates` finds, where it stood: per
    chain the count guard (a plugin ADD or DEL in between fails the try, which is planned
    again), every copy deleted by text (a copy gone meanwhile fails it too), then the
    rule inserted at its first copy's position. Deleting the first copy alone would move
    the rule behind what stood between the copies: another container's entry rule for
    the same port (it would take the port over) or another tool's rule (review
    helper-141). No copy is left out, none deleted by number: a rule of someone else's
    is never deleted. Never touched here: the rules the planner itself replaces, a
    wanted per-container chain's (rewritten whole when they differ) and the entry rules
    to it that are not wanted (all their copies go)."""
    own = {c.name: c for c in wanted if not c.shared}
    removed: Dict[str, List[int]] = {}  # by chain: positions read whose copy went
    for dup in duplicates(live):
        target = rule_target(dup.rule) or ""
        if dup.chain in own or (target in own and dup.rule not in own[target].entry_rules):
            continue
        if unwritable_duplicate(dup):
            # Its copies would go by their text, which quote() refuses: the whole repair
            # stopped (exit 2). Left, with check's by-hand fix (node_problems.duplicates).
            continue
        _count_guard(txn, live, dup.chain, guarded)
        for _ in range(dup.count):
            txn.delete(dup.chain, dup.rule)
        gone = removed.setdefault(dup.chain, [])
        txn.insert_at(dup.chain, dup.first + 1 - sum(i < dup.first for i in gone), dup.rule)
        gone += dup.at[1:]


def _rewrite(txn: Transaction, live: NatTable, chain: Chain) -> None:
    """A per-container chain's rules replaced, failing the transaction unless the chain
    still holds exactly the rules read. A flush would take whatever is there by then:
    a container started again between the read and the write (the plugin's DEL and
    ADD: the same chain and entry rule, its new address's rules) would get the old
    address's rules back, and the re-plan would never see it. So the rules read are
    deleted by text (a -D fails when one is gone), then the guard of `_delete_rules`
    with a count of 0: a jump to GUARD_CHAIN appended and rule 1 deleted, which is
    that jump only when the chain is empty; plan_setup makes the guard chain first and
    removes it last, a -X that fails while any jump to it is left. Then the wanted
    rules. (One guard for all: a -X per chain cost the repair's in-memory apply a scan
    of the table each, 2 s at 1,000 rewritten chains.)"""
    _empty_chain(txn, live, chain.name)
    txn.append(chain.name, ("-j", GUARD_CHAIN))
    txn.delete_number(chain.name, 1)
    for rule in chain.rules:
        txn.append(chain.name, rule)


def plan_teardown(
    live: NatTable,
    chains: Iterable[str],
    by_number: bool = True,
    entering: Optional[Mapping[str, Iterable[int]]] = None,
) -> Transaction:
    """Remove these per-container chains (CNI-DN-/CNI-SN-) and every rule entering them.
    The transaction also records the change as what goes (`Transaction.removal`).

    Also removes the legacy CNI-HOSTPORT-SNAT (and the rules jumping to it) when
    nothing but entries of removed chains is left in it. Every other rule stays.

    by_number=False (gc's last try, when the guard kept failing on a busy node: any
    plugin call into the chain fails it) deletes every rule by its text.

    `entering`: the positions (0-based, by chain) of every rule in `live` that jumps
    to one of `chains`, when the caller has them (gc's inventory found them): the
    table's rules are then not scanned again (90,000 at 10,000 containers).

    A chain losing few rules (under BY_NUMBER_FROM) has them deleted by their text: if
    the table changed since `live` was read, a delete no longer matches (or a -X finds
    the chain still entered) and iptables-restore refuses the whole transaction, never
    a wrong rule. A chain losing more has them deleted by position (see
    `_delete_rules`): each -D by text searches the chain from the top, comparing rule
    after rule, so 5,000 of them in a chain of 10,000 took 53 s (quadratic), by position
    1.2 s. The order matters:
    - the CNI-DN- chains are emptied first (their rules deleted by text, not flushed:
      `_empty_chain`; flushes first took iptables-nft-restore 1.9 s for the
      transaction that removes 5,000 containers, 3.1 s when they came after the
      deletes; benchmarks/bench.py, gc);
    - entry rules chain by chain, in the order they stand (deleting 2,000 in order
      takes 0.3 s, in random order 2.5 s: each -D searches from the top);
    - every chain is emptied before any is deleted, and deleted only once nothing
      jumps to it (iptables-nft refuses a -X of a chain still referenced);
    - CNI-HOSTPORT-SNAT is flushed, then the CNI-SN- chains are emptied, then the jumps to
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
    deleted: Dict[str, List[int]] = {}  # by chain that stays: positions of rules going
    for name in remove:
        if name.startswith(DNAT_PREFIX):
            _empty_chain(txn, live, name)
    for chain in live.chains.values():
        if chain.name in targets or (drop_snat and chain.name == OLD_TOPLEVEL_SNAT):
            continue  # emptied whole below
        if entering is not None:
            if chain.name not in entering:
                continue  # most of the table (15,000 chains at 10,000 containers)
            positions = sorted(entering[chain.name])
        else:
            positions = [i for i, r in enumerate(chain.rules) if rule_target(r) in targets]
        _delete_rules(txn, chain, positions, by_number)
        if positions:
            deleted[chain.name] = positions
    if drop_snat:
        txn.flush(OLD_TOPLEVEL_SNAT)
    for name in remove:
        if not name.startswith(DNAT_PREFIX):  # CNI-SN-: in the order FACTS found
            _empty_chain(txn, live, name)
    for name in remove:
        txn.delete_chain(name)
    if drop_snat:
        for chain in live.chains.values():
            if chain.name in targets or chain.name == OLD_TOPLEVEL_SNAT:
                continue
            going = [i for i, r in enumerate(chain.rules) if rule_target(r) == OLD_TOPLEVEL_SNAT]
            _delete_rules(txn, chain, going, by_number)
            if going:
                deleted[chain.name] = sorted({*deleted.get(chain.name, ()), *going})
        txn.delete_chain(OLD_TOPLEVEL_SNAT)
    if txn:
        txn.removal = Removal(
            tuple(remove) + ((OLD_TOPLEVEL_SNAT,) if drop_snat else ()),
            {name: tuple(positions) for name, positions in deleted.items()},
            {name: live.rules(name) for name in deleted},
            live.generation,
        )
    return txn


def _empty_chain(txn: Transaction, live: NatTable, name: str) -> None:
    """Empty a chain by deleting the rules read, each by its text, not by a flush: a
    -D fails the transaction when a rule read is gone, and what follows (gc's -X of
    the chain, a rewrite's guard) when the chain holds anything else by then. A
    container started again between the read and the write (an interactive gc waits
    for its answer meanwhile) has the same chain and entry rule, but other rules in
    it: it is live, and its rules must stay.

    A chain holding a rule whose text restore cannot be given (another tool's, with
    control characters in its comment: quote() refuses it) has its rules deleted by
    number instead, last first, as _delete_rules does such a rule: refusing it stopped
    every gc of the node, dry runs included (exit 2). No guard of its own is needed:
    what follows fails the transaction when the chain does not hold exactly the count
    read (a -D of a number past its end; gc's -X, the rewrite's guard of 0, when
    anything is left). Only the text check is lost, for such a chain alone."""
    rules = live.rules(name)
    if any(CONTROL_CHARS.search(a) for rule in rules for a in rule):
        for i in range(len(rules), 0, -1):
            txn.delete_number(name, i)
        return
    for rule in rules:
        txn.delete(name, rule)


def _delete_rules(
    txn: Transaction, chain: SavedChain, positions: List[int], by_number: bool = True
) -> None:
    """Delete these rules (0-based positions in `chain` as read) from the chain.

    Few: by text, each an exact match. Many: by number, last first (so the numbers
    ahead stay right), behind a guard that makes the transaction fail unless the chain
    holds exactly the rules counted when it was read:
      -N GUARD; -A CHAIN -j GUARD; -D CHAIN <count + 1>; -X GUARD
    The jump lands at count + 1 only when the chain has `count` rules; with fewer the
    -D has nothing to delete, with more it deletes another rule and the -X finds GUARD
    still entered: either way iptables-restore refuses everything and gc re-plans.
    So a plugin ADD (it appends) or DEL (it deletes) between our read and our write
    fails the try; numbers are never applied to a chain that moved. What the count
    cannot see, an ADD and a DEL that cancel out in the same window, is caught by the
    -X of every chain removed here, in every case but one: see docs/performance.md.
    Rebuilding the chain instead (-F, the kept rules appended again) was measured
    against this for every share removed (docs/performance.md, gc): it wins from about
    80% of the chain removed and loses below about 65% (one append costs
    iptables-nft-restore 2-3 deletes by number). It is not done: a flush loses a rule
    the plugin appended meanwhile, and the count guard alone misses an ADD and a DEL
    that cancel out; the check that the last rule is still the one read (delete it by
    number, then -X its chain, which fails while the rule read still enters it) is
    refused by nf_tables (CHAIN_DEL busy) whenever a -F of the chain follows in the
    same transaction. (On iptables-nft the transaction's `removal` goes instead, as one
    nf_tables batch the kernel refuses when anything changed since the read: that one
    can rebuild safely, iptables/access/nfnl_batch.py. This text is what legacy
    iptables, python-iptables and the fallback apply.)
    """
    # A rule whose text restore cannot be given (a comment another tool wrote with
    # control characters: quote() refuses it, as a newline would inject a line) goes by
    # number too, also on the last try that otherwise goes by text: refusing it stopped
    # every gc of the node, a dry run included (exit 2).
    writable = not any(CONTROL_CHARS.search(a) for i in positions for a in chain.rules[i])
    if writable and (not by_number or len(positions) < BY_NUMBER_FROM):
        for i in positions:
            txn.delete(chain.name, chain.rules[i])
        return
    txn.new_chain(GUARD_CHAIN)
    txn.append(chain.name, ("-j", GUARD_CHAIN))
    txn.delete_number(chain.name, len(chain.rules) + 1)
    txn.delete_chain(GUARD_CHAIN)
    for i in reversed(positions):
        txn.delete_number(chain.name, i + 1)


def unwritable_entry(name: str, live: NatTable, then: str) -> Optional[str]:
    """Why per-container chain `name` cannot be set up in `live` by a restore: a rule
    in CNI-HOSTPORT-DNAT jumps to it whose text holds control characters (another
    tool's, in its comment: the plugin writes none, so it is never one to keep). Setting
    the chain up deletes such a rule by its text, which quote() refuses: the whole
    repair stopped with exit 2 (bad input, which nobody gave), every other container
    unrepaired too. Said as a `could not repair` line instead, naming the rule's number
    (numbers shift with every plugin call: gc alone deletes by number, behind a guard).
    None when there is none. `then`: what to do after ("repair again")."""
    # Indexed once per table read: a repair asks once per cached container (5,000).
    number = live.derived("unwritable-entries", _unwritable_entries).get(name)
    if number is None:
        return None
    return (
        f"rule {number} of {TOPLEVEL_DNAT} in the IPv{live.family} nat table jumps to it"
        " with control characters in its text (another tool's rule: the plugin writes"
        f" none), which portmapctl does not write back: delete that rule, then {then}"
    )


def _unwritable_entries(live: NatTable) -> Dict[str, int]:
    """The chains CNI-HOSTPORT-DNAT's rules with control characters jump to -> the
    number of the first such rule."""
    found: Dict[str, int] = {}
    for i, rule in enumerate(live.rules(TOPLEVEL_DNAT)):
        if CONTROL_CHARS.search(" ".join(rule)):
            found.setdefault(rule_target(rule) or "", i + 1)
    return found


def missing_setmark_chain(
    config: MappingConfig, live: NatTable, spelling: Spelling, then: str
) -> Optional[str]:
    """Why `config` cannot be set up in `live`, whatever is retried: the chain its
    rules jump to to mark, its externalSetMarkChain, is not there, and only the admin
    (kube-proxy, a firewall) makes it. None when nothing is missing. `then`: what to do
    ("restore it, then repair again")."""
    chain = config.external_setmark_chain
    if chain is None or live.has_chain(chain):
        return None
    return (
        f"its {spelling.external_setmark_chain} {chain} does not exist in the"
        f" IPv{live.family} nat table (the plugin does not create it: {then})"
    )
