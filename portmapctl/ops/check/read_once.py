"""The node's iptables as `check --repair` sees it (`ReadOnce`): each family read once,
every applied transaction followed in memory, and a refusal on a table that has not
changed known to be final. repair.py plans and applies through it."""

from __future__ import annotations

from dataclasses import replace
from typing import Dict, List, Optional, Sequence, Set

from portmapctl.errors import ApplyFailed
from portmapctl.iptables.access import Backend
from portmapctl.iptables.access.memory import MemoryBackend
from portmapctl.iptables.access.nfgen import following
from portmapctl.iptables.ruleset import NatTable
from portmapctl.iptables.transaction import Transaction


class ReadOnce:
    """The node's iptables as a repair sees it: each family read once, and every
    transaction applied since then applied to that table in memory too (with
    `iptables-restore --noflush` semantics, iptables/access/memory.py), so that the next
    plan and the check after the repair read nothing: what iptables accepted whole is
    what the table now holds.

    A refused transaction forgets its family when the table changed under us (the
    plugin ran): the next plan reads it afresh (SPEC §5: re-planned, never forced).
    When it had not changed, the refusal is final (ApplyFailed.final: Node.converge's
    next tries would plan the same on the same table): on iptables-nft when nf_tables'
    ruleset generation is still the one the copy was read at or followed to (a refused
    restore commits nothing), elsewhere when a fresh read equals the copy (a change
    made and undone in between is not seen: the next repair meets it). On iptables-nft
    the copy is then kept, and checked against the generation again before it is next
    used; elsewhere the fresh read is the next plan's. Not for a busy xtables lock nor
    a tool that died (maybe applied): those are tried again.
    So a container iptables refuses costs one restore, not three, and on iptables-nft
    no save of the whole table (0.15 s at 5,000 containers) for each try of the halving
    that finds it (repair.py's halving). What iptables also depends on outside the table
    (an ipset a firewall reload is restoring that very moment) is met at the next
    repair."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.name = backend.name
        self.writable = backend.writable
        # Where the alternatives differ, each family's flavour (flavour_guard.flavours_of).
        self.flavours = getattr(backend, "flavours", None)
        self.tables: Dict[int, NatTable] = {}
        self.reads = 0  # reads of the real node (for tests)
        # Every transaction handed to iptables and not refused: in, or maybe (killed).
        self.attempted: List[Transaction] = []
        self._kept: Set[int] = set()  # families whose copy a final refusal kept

    def read(self, family: int) -> NatTable:
        if family in self._kept:
            self._kept.discard(family)
            kept = self.tables.get(family)
            if kept is not None and not self._still_at(kept.generation):
                del self.tables[family]  # something committed since: read it again
        if family not in self.tables:
            self._read(family)
        return self.tables[family]

    def _read(self, family: int) -> NatTable:
        self.tables[family] = table = self.backend.read(family)
        self.reads += 1
        return table

    def read_families(self, families: Sequence[int]) -> Dict[int, NatTable]:
        missing = [f for f in families if f not in self.tables]
        read_together = getattr(self.backend, "read_families", None)
        if read_together is not None and len(missing) > 1:
            self.tables.update(read_together(missing))  # the saves side by side
            self.reads += len(missing)
        return {f: self.read(f) for f in families}

    def apply(self, txn: Transaction) -> None:
        known = self.tables.get(txn.family)
        self.attempted.append(txn)
        try:
            self.backend.apply(txn)
        except ApplyFailed as err:
            if not err.maybe_applied:
                self.attempted.pop()
            self._kept.discard(txn.family)
            if err.maybe_applied or err.busy or known is None:
                self.tables.pop(txn.family, None)
                raise
            if known.generation is not None:
                if not self._still_at(known.generation):
                    self.tables.pop(txn.family, None)
                    raise
                self._kept.add(txn.family)  # (checked again before it is next used)
            elif self._read(txn.family) != known:
                raise  # changed under us: the read just made is the next plan's
            raise ApplyFailed(str(err), final=True) from None
        before = self.read(txn.family)
        planned = MemoryBackend({txn.family: before})
        try:
            planned.apply(txn)
        except ApplyFailed:
            # iptables took what the memory backend would not: believe iptables, and
            # read the table again when it is next needed.
            self.tables.pop(txn.family, None)
            return
        after = planned.tables[txn.family]
        if before.generation is not None:
            # The copy, followed, is the kernel's table at the generation our commit
            # made, if ours was the only one since (a transaction that changed nothing
            # commits nothing); else its generation is not known.
            ours = before.generation if after == before else following(before.generation)
            after = replace(after, generation=ours if self._still_at(ours) else None)
        self.tables[txn.family] = after

    def _still_at(self, generation: Optional[int]) -> bool:
        """Whether nf_tables' ruleset is at `generation` now, no commit under way."""
        ask = getattr(self.backend, "generation_now", None)
        return generation is not None and ask is not None and ask() == generation
