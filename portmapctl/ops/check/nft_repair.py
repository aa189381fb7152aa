"""check --repair over the plugin's nftables backend, for the node: its nft-backed
cached containers made as the plugin's ADD makes them (nft_repair), in one `nft -f`
transaction (nftables/planner.py), never in iptables. It decides which cached entries
the plan makes (_CacheAgain: one the plugin ran for meanwhile, or being torn down, is
left alone), which it leaves as they are and names (refused conditions, a backend in
doubt: _not_written), and whether the node's prerouting/output entry is written
(nft_refused.newest_refused: not with conditions nft cannot be made to run as a
match; the check judges those alike).
ReadOnceNft is the node's nftables read once for repair.py's check before, split and
plan. What it compares against is ops/check/nft.py's. One mapping's repair is
nft_repair_one.py, what both judge their transaction by nft_repair_txn.py, the UDP
flush after it nft_repair_flush.py."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from types import MappingProxyType
from typing import (
    TYPE_CHECKING,
    Collection,
    Dict,
    Iterable,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Set,
    Tuple,
)
from typing import Mapping as ReadOnly

from portmapctl.cni.cache import Attachment
from portmapctl.core.backend import Backend
from portmapctl.core.mapping import MappingConfig
from portmapctl.ops.check.nft import expected_in_add_order
from portmapctl.ops.check.nft_refused import entry_works, held_notes, newest_refused, refusals
from portmapctl.ops.check.nft_repair_txn import _judged, cached_addresses, nft_changed
from portmapctl.ops.check.port_moves import PortTaken, nft_holder_name, nft_ports_taken
from portmapctl.ops.check.problem import Unrepaired
from portmapctl.ops.check.torn_down import TornDownLook
from portmapctl.ops.node import Node

if TYPE_CHECKING:
    from portmapctl.nftables.access import NftAccess
    from portmapctl.nftables.ruleset import Ruleset
    from portmapctl.nftables.transaction import Transaction as NftTransaction


# How far a file's modification time (the kernel's coarse clock) may lag time.time_ns().
_CLOCK_SLACK_NS = 50_000_000


class _CacheAgain:
    """The nft-backed cache entries a repair plans from, as the cache holds them after
    the tables were read, for every container whose rules a plan changes.

    The cache is read before the tables; a plugin restart of a container in between
    (DEL, then ADD: the same ID, so the same comment, a new address and cache entry)
    leaves rules that differ from the entry read first, and a DEL alone leaves none.
    Planned from that entry, the repair deleted the plugin's fresh rules and wrote the
    old address's back, or re-made a deleted container's. So the entries of the
    containers a plan changes are read again (after the tables) and the plan made
    again without every container whose entry is gone, a zombie, no longer nft-backed
    or changed: the plugin ran for it meanwhile, maybe after the tables were read
    (planned from its new entry, the repair would add the rules the plugin's ADD is
    adding: each twice). An entry written again since the repair began is changed
    too, whatever it holds (the same address again: a static IP). Every try reads
    them again (converge_nft reads the tables first). The check after judges them by
    the entry read again (`now`)."""

    def __init__(self, node: Node, expected: Sequence[Attachment]) -> None:
        self.node = node
        self.expected = list(expected)
        # Before any read of the tables a plan is made from. A file's modification
        # time comes from the kernel's coarse clock, up to a tick behind this one.
        self.since = time.time_ns() - _CLOCK_SLACK_NS
        self.now: Dict[str, Optional[Attachment]] = {}  # by path, as read again
        self.left_alone: Set[str] = set()  # paths whose entry is not as first read
        self.look = TornDownLook()
        self.torn_down: Dict[str, Attachment] = {}  # by path: left alone (TornDownLook)

    def configs(self) -> List[MappingConfig]:
        """What the plan makes: the entries as first read, but none of a container the
        plugin ran for meanwhile (its ADD and DEL touch all its networks' rules: they
        share the container ID as comment), and none of an entry being torn down."""
        alone = {
            a.container_id
            for a in self.expected
            if a.path in self.left_alone and a.path not in self.torn_down
        }
        return [
            a.mapping  # type: ignore[misc]
            for a in self.expected
            if a.container_id not in alone and a.path not in self.torn_down
        ]

    def kept(self) -> List[MappingConfig]:
        """The entries being torn down: the rules of theirs still there stay as they
        are when their container's other networks are repaired (liveness in doubt);
        what they lack is not made."""
        return [a.mapping for a in self.torn_down.values() if a.mapping is not None]

    def read_again(self, ids: Iterable[str]) -> bool:
        """Read the entries of the containers `ids` again; whether any differs."""
        from portmapctl.cni.cache import read_entries

        ids = set(ids)
        paths = [a.path for a in self.expected if a.container_id in ids]
        if not paths:
            return False
        found = {a.path: a for a in read_entries(paths, self.node.namespace_view())}
        before = self.configs()
        for a in self.expected:
            if a.path not in paths:
                continue
            now = found.get(a.path)
            kept = (
                now is not None
                and now.mapping is not None
                and not now.zombie
                and now.container_id == a.container_id
                and now.mapping.backend != Backend.IPTABLES
            )
            self.now[a.path] = now if kept else None
            if not kept or now.mapping != a.mapping or self._written_since(a.path):  # type: ignore[union-attr]
                self.left_alone.add(a.path)
                # Judged torn down by an earlier read: the plugin ran for it since (its
                # ADD again, say), so its container is left whole, as any other.
                self.torn_down.pop(a.path, None)
        # Still cached, its namespace there without its address: being torn down. Left
        # alone, its entry kept for the check after (which still expects its rules).
        held = [now for p in paths if (now := self.now.get(p)) is not None]
        for now in self.look.torn_down([a for a in held if a.path not in self.left_alone]):
            self.left_alone.add(now.path)
            self.torn_down[now.path] = now
        return self.configs() != before

    def _written_since(self, path: str) -> bool:
        """Whether libcni wrote the entry after the repair began (it writes it after the
        plugin's ADD is done): then that ADD may have come after the tables' read."""
        try:
            return os.stat(path).st_mtime_ns >= self.since
        except OSError:
            return True  # (gone again: the plugin is running for it)

    def refreshed(self, attachments: Sequence[Attachment]) -> List[Attachment]:
        """`attachments` with each entry read again as it was read (gone: left out)."""
        found = [self.now.get(a.path, a) if a.path in self.now else a for a in attachments]
        return [a for a in found if a is not None]


class NftRepaired(NamedTuple):
    """What nft_repair did: its `nft -f` text, the (config, families) it (re)made,
    for the ADD's side effects, the cache entries as the plan last read them, and the
    containers left as they are (`moved`: those because their repair would take a port
    another has, port_moves; in `left` too)."""

    text: str
    changed: List[Tuple[MappingConfig, List[int]]]
    attachments: Optional[List[Attachment]]
    left: Tuple[Unrepaired, ...] = ()
    warnings: Tuple[str, ...] = ()  # (a try whose nft died, found gone in: errors.found_in)
    moved: Tuple[Unrepaired, ...] = ()


def nft_repair(
    node: Node,
    attachments: Optional[Sequence[Attachment]],
    dry_run: bool,
    planned: Optional[List[Tuple[NftTransaction, List[MappingConfig]]]] = None,
    dedupe: bool = False,
    in_doubt: ReadOnly[str, str] = MappingProxyType({}),
) -> NftRepaired:
    """One `nft -f` transaction adding what nft-backed cached containers lack, and
    leaving each jump of an entry chain once (planner.repair's dedupe; `dedupe`: check
    found copies, so it runs with no nft-backed container cached too).
    `planned`: gets each transaction planned, with its configs, as it is tried (what
    a SIGTERM during the write may have put in: nft_changed says what it changed).
    `in_doubt`: by path, the entries whose plugin may keep them in iptables, and why
    (followed_entries.follow_the_plugin): left as they are, as a refused one is, and
    named."""
    if node.nft is None or attachments is None:
        return NftRepaired("", [], None if attachments is None else list(attachments))
    from portmapctl.nftables import planner
    from portmapctl.nftables.layout import lone_families
    from portmapctl.nftables.problems import refuses_the_plugins_rules
    from portmapctl.nftables.ruleset import HOSTPORTS
    from portmapctl.nftables.wanted import wanted

    families = node.options.families
    expected = expected_in_add_order(node, attachments)
    # One entry whose conditions nft could be made to run as more than a match stops
    # nothing else: it is left as it is (its rules kept), named where it lacks any.
    refused = refusals(expected)
    # The entry (prerouting/output) is the node's, with the newest ADD's conditions:
    # where those are refused, it is left as it is. Another container's conditions
    # (none, say) would open every host port wider than that ADD asked.
    held = newest_refused(expected, refused, families)
    # Which families a container has alone, over every cached one (written or not):
    # there the other family's table cannot tell a deleted one's layout (layout.layout).
    lone = lone_families(a.mapping.families for a in expected)  # type: ignore[union-attr]
    refused.update((a.path, in_doubt[a.path]) for a in expected if a.path in in_doubt)
    unwritten = [a for a in expected if a.path in refused]
    expected = [a for a in expected if a.path not in refused]
    cache = _CacheAgain(node, expected)
    if not cache.expected and not dedupe:
        live = node.read_nft()
        left = _not_written(live, unwritten, refused, families)
        # (Its line too where nothing else is written: the check's rows of that entry
        # name it as why --repair leaves them.)
        return NftRepaired("", [], list(attachments), left, held_notes(live, held, refused))
    if planned is None:
        planned = []

    def plan_from(
        configs: List[MappingConfig], live: Ruleset, left: Collection[Tuple[str, int]] = ()
    ) -> NftTransaction:
        def plan_in(usable: List[int]) -> NftTransaction:
            want = [w for c in _without(configs, left) for f in usable
                    if (w := wanted(c, f)) is not None]  # fmt: skip
            # Exactly as compared: their own unwanted rules go too (never anyone
            # else's), but not those of their networks being torn down.
            kept = [*cache.kept(), *(a.mapping for a in unwritten)]
            also = [w for c in kept for f in usable if (w := wanted(c, f)) is not None]  # type: ignore[arg-type]
            ids = {c.container_id for c in configs}
            return planner.repair(
                live, want, ids, usable, also, dedupe=True, held=held, left=left, lone=lone
            )

        # A family whose table refuses what the plan writes there (a chain of another
        # kind: the fix is by hand, nft-wrong-base-chain) is left as it is: written, it
        # failed the one `nft -f` of both families whole, so the other was not repaired
        # either. Only what the plan writes: what it deletes, or writes where such a
        # chain judges nothing, goes in there as before.
        txn = plan_in(list(families))
        usable = [
            f for f in families if not refuses_the_plugins_rules(live.table(f), txn.written(f))
        ]
        return txn if len(usable) == len(families) else plan_in(usable)

    # By container ID and family: a container is left out of that family alone (its
    # networks at once), its rules there as they are. The plugin keeps each family in a
    # table of its own (ip, ip6 cni_hostport), so its other family is repaired, as the
    # iptables backend repairs the chain of the family that takes nothing.
    taken: Dict[Tuple[str, int], Tuple[MappingConfig, PortTaken]] = {}
    short: Set[Tuple[str, int]] = set()  # (path, family): a torn-down entry's rules lacking
    # A rule of a cached container's ID is its own (no holder) only for an address its
    # cache entries give it: one for another address is stale (port_moves).
    own = cached_addresses(attachments)

    def _extra_left(
        live: Ruleset, txn: NftTransaction, cid: str, family: int, configs: List[MappingConfig]
    ) -> bool:
        """Whether `txn` leaves a rule of container `cid` in `family` that none of its
        cached configs (planned, kept or unwritten) makes: the check after's
        `extra-rules`."""
        mine = [c for c in (*configs, *cache.kept(), *(a.mapping for a in unwritten))
                if c is not None and c.container_id == cid]  # fmt: skip
        want = [w for c in mine if (w := wanted(c, family)) is not None]
        gone = {op.handle for op in txn.ops if op.family == family and op.handle is not None}
        extra = planner.unwanted(live.table(family), want, [cid])
        return any(rule.handle not in gone for rule in extra)

    def plan(live: Ruleset) -> NftTransaction:
        configs = cache.configs()
        txn = plan_from(configs, live)
        changing = {op.body.comment for op in txn.ops if op.body is not None and op.body.comment}
        if _shared_written(txn):
            # The table, its chains, entry and jumps (no comment) are made for every
            # container planned: each is read again, so none being torn down gets them
            # (one alone on the node had them made, its host ports sent to an address
            # being given back, where none of its own rules was lost).
            changing.update(c.container_id for c in configs)
        if cache.read_again(changing):
            configs = cache.configs()
            txn = plan_from(configs, live)
        taken.clear()  # (planned again from a fresh read)
        while found := nft_ports_taken(live, txn, own):
            new = [
                (key, config, took)
                for key, took in found.items()
                if key not in taken
                and (config := next((c for c in configs if c.container_id == key[0]), None))
            ]
            if not new:
                break  # (nothing of the plan's left to leave out)
            for key, config, took in new:
                taken[key] = (config, took)  # type: ignore[assignment]
            txn = plan_from(configs, live, set(taken))
        # A network being torn down is named only where it lacks rules, or where the
        # plan leaves a rule of its container its cached configs do not make (an old
        # address's: the plugin's ADD again without a DEL): kept, it is reported
        # extra after, and `check --repair` would leave it again, unsaid. When its
        # container's other networks are what the plan makes, its own may all be
        # there, and their repair deletes what none of them makes.
        short.clear()
        # So is one whose family lacks what of the table only the torn-down want
        # (nft_table_rows.nft_wanted): the check names those rows as left for it.
        shared = _shared_left(live, [a.mapping for a in cache.torn_down.values()], configs)  # type: ignore[misc]
        short.update((path, f) for path, a in cache.torn_down.items() for f in families
                     if (w := wanted(a.mapping, f)) is not None  # type: ignore[arg-type]
                     and (planner.missing_rules(live, w) or f in shared
                          or _extra_left(live, txn, a.container_id, f, configs)))  # fmt: skip
        planned.append((txn, _without(configs, set(taken))))
        return txn

    notes: List[str] = []
    went_in = _judged(planned, lambda entry: entry[0], notes)
    text = node.converge_nft(plan, dry_run=dry_run, went_in=went_in)
    now = cache.refreshed(attachments)
    if unwritten:
        after = node.read_nft()
        left_unwritten = _not_written(after, unwritten, refused, families)
        notes += held_notes(after, held, refused)
    cached = {a.container_id for a in attachments}
    moved = tuple(
        Unrepaired(t.family, c.network, c.container_id, t.chain, t.why(nft_holder_name(t), cached))
        for c, t in (taken[k] for k in sorted(taken))
    )
    left = moved + tuple(
        u
        for a in sorted(cache.torn_down.values(), key=lambda a: (a.network, a.container_id))
        for f in families
        if (a.path, f) in short and (u := cache.look.not_made(a, f, HOSTPORTS)) is not None
    )
    if unwritten:
        left += left_unwritten
    if not text or not planned:
        return NftRepaired(text, [], now, left, tuple(notes), moved)
    return NftRepaired(text, nft_changed(*planned[-1]), now, left, tuple(notes), moved)


def nft_ports_left(
    node: Node, attachments: Sequence[Attachment], in_doubt: ReadOnly[str, str]
) -> Tuple[Unrepaired, ...]:
    """The containers (by family) nft_repair would leave as they are because their
    repair would take a port another has, in its words: its own plan, not applied
    (dry run). For the node's check, which offered that repair to them on every run."""
    return nft_repair(node, attachments, dry_run=True, in_doubt=in_doubt).moved


def _shared_written(txn: NftTransaction) -> bool:
    """Whether `txn` makes any of the table itself (no container's comment), beyond the
    entry chains it writes again as read (dedupe)."""
    from portmapctl.nftables.transaction import OpKind

    return any(
        op.kind in (OpKind.ADD_TABLE, OpKind.ADD_CHAIN)
        or (op.kind is OpKind.ADD_RULE and not (op.body is not None and op.body.comment)
            and (op.family, op.chain) not in txn.as_read)
        for op in txn.ops
    )  # fmt: skip


def _shared_left(
    live: Ruleset, torn: Sequence[MappingConfig], planned: Sequence[MappingConfig]
) -> Set[int]:
    """The families where `live` lacks some of the table itself (structure_problems)
    that the torn-down entries (`torn`) want and none `planned` does: made for none."""
    from portmapctl.nftables.problems import structure_problems
    from portmapctl.ops.check.nft import as_problem
    from portmapctl.ops.check.nft_table_rows import nft_structure, nft_wanted

    needed: Dict[int, bool] = {}
    for c in torn:
        for family in c.families:
            needed[family] = needed.get(family, False) or c.snat
    rows = [as_problem(p, "") for p in structure_problems(live, needed)]
    return {
        p.family
        for p in rows
        if p.family is not None and nft_structure(p) and not nft_wanted(p, planned)
    }


def _without(
    configs: Sequence[MappingConfig], left: Collection[Tuple[str, int]]
) -> List[MappingConfig]:
    """`configs` less the families `left` (by container ID and family) leaves as they
    are: what a plan makes of each (none of a container left in every family)."""
    if not left:
        return list(configs)
    made = []
    for c in configs:
        kept = tuple(a for a in c.addresses if (c.container_id, a.version) not in left)
        if kept:
            made.append(c if len(kept) == len(c.addresses) else replace(c, addresses=kept))
    return made


def _not_written(
    live: Ruleset, unwritten: Sequence[Attachment], why: Dict[str, str], families: Sequence[int]
) -> Tuple[Unrepaired, ...]:
    """The `could not repair` lines of the entries nft_repair writes nothing for (`why`:
    by path), where their family lacks a rule of theirs or the entry that reaches them."""
    from portmapctl.nftables import planner
    from portmapctl.nftables.ruleset import HOSTPORTS
    from portmapctl.nftables.wanted import wanted

    found = []
    for a in unwritten:
        for family in a.mapping.families:  # type: ignore[union-attr]
            if family not in families:
                continue
            want = wanted(a.mapping, family)  # type: ignore[arg-type]
            if want is not None and (
                planner.missing_rules(live, want) or not entry_works(live, family)
            ):
                found.append(Unrepaired(family, a.network, a.container_id, HOSTPORTS, why[a.path]))
    return tuple(found)


class ReadOnceNft:
    """The node's nftables, read once for the check before, the split and the plan; a
    write makes the next read a real one (the check after an nft repair reads the
    tables nft made)."""

    def __init__(self, access: NftAccess, live: Ruleset) -> None:
        self.access = access
        self.name = access.name
        self.writable = access.writable
        self.live: Optional[Ruleset] = live

    def read(self, families: Iterable[int] = (4, 6)) -> Ruleset:
        wanted = set(families)
        if self.live is None:
            return self.access.read(wanted)
        tables = {f: t for f, t in self.live.tables.items() if f in wanted}
        return replace(self.live, tables=tables)

    def apply(self, txn: NftTransaction) -> None:
        self.live = None
        self.access.apply(txn)
