"""The cached configs a repair plans from, as the cache holds them after the table was
read (`CacheNow`: entries gone or of containers being torn down left out, those of
torn-down interfaces sharing a live one's chain kept only as far as it holds them), and
which mappings a planned transaction (re)makes (`changed_mappings`). ops/check/repair.py
plans with them; the nftables repair's counterpart is ops/check/nft_repair._CacheAgain.
Who is being torn down, and what check says of them: ops/check/torn_down.py."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import (
    TYPE_CHECKING,
    Callable,
    Collection,
    Dict,
    FrozenSet,
    Iterable,
    List,
    Optional,
    Sequence,
    Set,
    Tuple,
)

from portmapctl.core.backend import Backend
from portmapctl.core.mapping import MappingConfig
from portmapctl.iptables.chains import (
    DNAT_ENTRY_CHAINS,
    MASQ,
    SETMARK,
    TOPLEVEL_DNAT,
    Chain,
    dnat_chain_name,
)
from portmapctl.iptables.ruleset import NatTable, rule_target
from portmapctl.iptables.transaction import Op, OpKind, Transaction
from portmapctl.ops.check.expected import cached_groups
from portmapctl.ops.check.problem import Unrepaired
from portmapctl.ops.check.torn_down import TornDownLook, held_only
from portmapctl.ops.node import Node

if TYPE_CHECKING:
    from portmapctl.cni.cache import Attachment


class CacheNow:
    """The cached configs a repair plans from, as the cache holds them after the table
    was read, for every container whose existing chain (or entry rules) a plan changes.

    The cache is read before the tables; a plugin DEL and ADD of one container in
    between or after (a restart: the same network and ID, so the same chain and entry
    rule, a new address, a new cache entry) leaves a chain that differs from the
    config read first. Planned from that config, a repair would rewrite the plugin's
    fresh rules with the old address's. So once a plan is made, the cache entry of each
    container whose chain the table holds and the plan writes is read again (after the
    table: at least as new), and the plan made again from what it says: a container
    gone, a zombie or now nftables-backed is left alone, one changed is planned as it
    is now. A refused try (the chain changed after the read) reads both again:
    `Node.converge` calls the plan with a fresh table. A chain the table lacks is made
    from the config read first (its -N fails if the plugin made it meanwhile), unless
    every cache entry of it is gone by then (`_gone`: the plugin's DEL), or each one left
    is of a container being torn down (`_torn_down`: its address is on no interface of
    its network namespace any more). Remembers what it read (`now`, by chain), for what
    the repair reports after, and what it left out as torn down (`torn_down`)."""

    def __init__(
        self, node: Node, attachments: Sequence[Attachment], key_ignored: Collection[str] = ()
    ) -> None:
        self.node = node
        # The entries whose nftables key their plugin ignores (by path:
        # followed_entries.follow_the_plugin): read again, they are still iptables'.
        self.key_ignored = frozenset(key_ignored)
        self.paths: Dict[str, List[str]] = {}  # by chain: one entry per interface
        self.first: Dict[str, List[Attachment]] = {}  # ... as read first
        for attachment in attachments:
            if attachment.mapping is not None:
                name = dnat_chain_name(attachment.mapping)
                self.paths.setdefault(name, []).append(attachment.path)
                self.first.setdefault(name, []).append(attachment)
        self.now: Dict[str, List[Attachment]] = {}  # by chain, as read again (gone: [])
        self.by_path: Dict[str, Optional[Attachment]] = {}  # each entry read again
        self.reads = 0  # cache entries read again (for tests)
        # By chain: the entries left out because their container is being torn down
        # (_torn_down; [] once looked at), and by family the chains a plan then did
        # not make (for the report).
        self.torn_down: Dict[str, List[Attachment]] = {}
        self.unmade: Dict[int, Set[str]] = {}
        # By (chain, family): the paths of its torn-down entries planned with it there
        # (_torn_down: a chain there a live interface shares), judged in each family
        # apart: one name for both families, not one state (the IPv4 chain there, the
        # IPv6 one to be made).
        self.kept: Dict[Tuple[str, int], FrozenSet[str]] = {}
        # By family: the chains there whose kept torn-down entries' rules a plan did not
        # all make (held_only): named as those left out are.
        self.short: Dict[int, Set[str]] = {}
        self.look = TornDownLook()

    def current(self, configs: Iterable[MappingConfig], family: int) -> List[MappingConfig]:
        """`configs` as last read: the configs of a chain whose entries were read again
        replaced by theirs (none where they are gone), but its torn-down entries (by
        path) that `family`'s plan does not keep (`kept`)."""
        found = []
        replaced = set()
        for config in configs:
            name = dnat_chain_name(config)
            if name not in self.now:
                found.append(config)
            elif name not in replaced:
                replaced.add(name)
                out = self._left_out_of(name, family)
                found += [a.mapping for a in self.now[name] if a.path not in out]  # type: ignore[misc]
        return found

    def _left_out_of(self, name: str, family: int) -> Set[str]:
        """The paths of `name`'s torn-down entries `family`'s plan leaves out."""
        kept = self.kept.get((name, family), frozenset())
        return {a.path for a in self.torn_down.get(name, ()) if a.path not in kept}

    def plan(
        self,
        live: NatTable,
        configs: Sequence[MappingConfig],
        setup: Callable[[NatTable, Sequence[MappingConfig]], Transaction],
    ) -> Transaction:
        these = self.current(configs, live.family)
        txn = setup(live, these)
        changed = changed_mappings(txn, these)
        changing = [c for c in changed if live.has_chain(dnat_chain_name(c))]
        made = [c for c in changed if not live.has_chain(dnat_chain_name(c))]
        if changing:
            self._read_again(changing)
        self._gone(made)
        # Judged: the chains whose own rules the plan writes (made, or there and
        # rewritten); and where it writes the shared chains or their jumps, every
        # container of the family, which all want them: made for torn-down ones alone
        # (PREROUTING's jump put back, their chains and entry rules intact), they sent
        # the host ports to the addresses being given back, where check said the repair
        # leaves them (torn_down.toplevel_fixes).
        own = written_chains(txn)
        if writes_shared(txn):
            self._torn_down([c for c in these if live.family in c.families], live)
        else:
            self._torn_down([c for c in changed if dnat_chain_name(c) in own], live)
        self._left_out_here(live, configs, setup)
        again = self.current(configs, live.family)
        # (Planned again where a torn-down entry is kept with its chain: `held` trims
        # it only once it is judged, after the first plan.)
        held = any(paths for (_, family), paths in self.kept.items() if family == live.family)
        return txn if again == these and not held else setup(live, again)

    def _left_out_here(
        self,
        live: NatTable,
        configs: Sequence[MappingConfig],
        setup: Callable[[NatTable, Sequence[MappingConfig]], Transaction],
    ) -> None:
        """The chains judged torn down (in this family's plan or an earlier one's: one
        name for both families) whose rules a plan with their entries would write in
        this family: those are what it left out here (`unmade`). A chain of theirs
        there that is as its entries make it is not named."""
        family = live.family
        torn = {name for name in self.torn_down if self._left_out_of(name, family)}
        here = {name for c in configs
                if family in c.families and (name := dnat_chain_name(c)) in torn}  # fmt: skip
        if not here:
            return
        out = {path for name in here for path in self._left_out_of(name, family)}
        whole = [*self.current(configs, family),
                 *(a.mapping for name in sorted(here) for a in self.torn_down[name]
                   if a.path in out)]  # fmt: skip
        full = setup(live, whole)  # type: ignore[arg-type]
        written = written_chains(full)
        if writes_shared(full) and not writes_shared(setup(live, self.current(configs, family))):
            # The shared chains or jumps the plan leaves were theirs alone: named, as
            # the check's row says (torn_down.toplevel_fixes).
            written |= here
        self.unmade.setdefault(live.family, set()).update(here & written)

    def _gone(self, configs: Sequence[MappingConfig]) -> None:
        """The chains to be made some of whose cache entries are gone since the cache
        was read: the plugin's DEL of their container (libcni removes the entry after
        it) before the table was read, which would otherwise be made again; of one
        interface of a pod on the network twice (the DEL deletes the whole chain), made
        from the other interfaces' entries alone. Only asked whether the files are there
        (a repair of 5,000 missing containers: 15 ms), not read: a container added
        again meanwhile has its chain by then, and the -N fails."""
        for name in {dnat_chain_name(c) for c in configs} - set(self.now):
            gone = [path for path in self.paths.get(name, ()) if not os.path.exists(path)]
            if gone:
                self.by_path.update(dict.fromkeys(gone))
                self.now[name] = [a for a in self.first[name] if a.path not in gone]

    def _torn_down(self, configs: Sequence[MappingConfig], live: NatTable) -> None:
        """The chains the plan writes (made, or there and rewritten) whose cache entries
        are of a container being torn down (TornDownLook): those entries are left out of
        the plan, as gone ones are, but the check after still expects their chain (the
        repair names it: left_out). A chain there is left as it is only where every
        entry of it is torn down (liveness in doubt: what it holds stays, what it lacks
        is not made, as on the nftables backend); one shared with a live interface (a
        pod on the network twice) is rewritten from all of them, as before. Which
        entries go whole is judged once; what a plan does with them, in each family
        (`kept`): the chain there in one may be made in the other."""
        written = {dnat_chain_name(c) for c in configs}
        held = {
            name: [a for a in self.now.get(name, self.first.get(name, [])) if not a.zombie]
            for name in written - set(self.torn_down)
        }
        gone = set(map(id, self.look.torn_down([a for each in held.values() for a in each])))
        for name, attachments in held.items():
            torn = [a for a in attachments if id(a) in gone]
            self.torn_down[name] = torn
            if torn:
                # All of them: `current` leaves the torn-down ones out by path, as each
                # family's plan decides below.
                self.now[name] = attachments
        for name in written:
            torn = self.torn_down.get(name)
            if not torn or (name, live.family) in self.kept:
                continue
            # Which family's chain is there is judged in that family: the IPv4 chain
            # rewritten from all its entries must not have the IPv6 one made with the
            # torn-down interface's rules too.
            everyone = [a for a in self.now.get(name, ()) if not a.zombie]
            shared = live.has_chain(name) and len(torn) < len(everyone)
            # Planned with the live ones, but of theirs only what the chain holds is
            # kept, what it lacks is not made (held_only: per rule, per entry rule; a
            # chain `iptables -t nat -F` emptied gets none of theirs, as one made after
            # `-F -X` does not).
            self.kept[(name, live.family)] = frozenset(a.path for a in torn if shared)

    def left_out(self, family: int) -> List[Unrepaired]:
        """What a plan of `family` left out as torn down (_torn_down), or kept only as
        far as its chain holds it (held), and why."""
        short = self.short.get(family, set())
        return [
            u
            for name in sorted(self.unmade.get(family, set()) | short)
            for a in self.torn_down[name]
            if (a.path in self._left_out_of(name, family) or name in short)
            and (u := self.look.not_made(a, family, name)) is not None
        ]

    def held(
        self,
        live: NatTable,
        these: Sequence[MappingConfig],
        per_container: Sequence[Tuple[MappingConfig, Chain]],
        wanted: Callable[[Sequence[MappingConfig]], Sequence[Tuple[MappingConfig, Chain]]],
    ) -> List[Tuple[MappingConfig, Chain]]:
        """`per_container` (the chains wanted from `these`) with each chain there that a
        live interface shares with kept torn-down entries (`kept`) made held_only: the
        live interfaces' rules (`wanted` of `these` without the torn-down ones) and of
        the others only what the chain holds. Decided per entry, as the nftables repair
        keeps a torn-down container's rules (nft_repair._CacheAgain.kept): rewritten
        from all entries, the chain got the torn-down interface's lost DNAT or entry
        rule anew, a host port sent to an address being given back. A chain where
        anything of theirs is not made names them (left_out)."""
        torn = {
            a.mapping
            for (name, family), paths in self.kept.items()
            if family == live.family and paths
            for a in self.torn_down.get(name, ())
            if a.path in paths
        }
        torn &= set(these)
        if not torn:
            return list(per_container)
        names = {dnat_chain_name(c) for c in torn}  # type: ignore[arg-type]
        bare = {chain.name: chain for _, chain in wanted([c for c in these if c not in torn])}
        found = []
        for config, chain in per_container:
            if chain.name in names:
                kept = held_only(chain, bare.get(chain.name), live)
                if kept != chain:
                    self.short.setdefault(live.family, set()).add(chain.name)
                chain = kept
            found.append((config, chain))
        return found

    def _read_again(self, configs: Sequence[MappingConfig]) -> None:
        from portmapctl.cni.cache import read_entries

        names = {dnat_chain_name(c) for c in configs}
        paths = {path: name for name in names for path in self.paths.get(name, ())}
        self.reads += len(paths)
        found = read_entries(list(paths), self.node.namespace_view())
        by_path = {a.path: a for a in found if a.mapping is not None and not a.zombie}
        for path, name in paths.items():
            attachment = by_path.get(path)
            if (
                attachment is not None
                and path in self.key_ignored
                and attachment.mapping.backend == Backend.NFTABLES
            ):
                mapping = replace(attachment.mapping, backend=Backend.IPTABLES)
                attachment = replace(attachment, mapping=mapping)
            same_chain = attachment is not None and dnat_chain_name(attachment.mapping) == name
            nft_now = attachment is not None and attachment.mapping.backend == Backend.NFTABLES
            self.by_path[path] = attachment if same_chain and not nft_now else None
        groups = cached_groups(a for p in paths if (a := self.by_path[p]) is not None)
        for name in names:
            self.now[name] = groups.get(name, [])

    def refreshed(self, attachments: Sequence[Attachment]) -> List[Attachment]:
        """`attachments` with each entry read again as it was read (gone: left out)."""
        found = []
        for attachment in attachments:
            if attachment.path in self.by_path:
                attachment = self.by_path[attachment.path]  # type: ignore[assignment]
            if attachment is not None:
                found.append(attachment)
        return found


def changed_mappings(txn: Transaction, configs: Sequence[MappingConfig]) -> List[MappingConfig]:
    """The mappings a repair (re)made: their chain or entry rules were written, or the
    jumps into CNI-HOSTPORT-DNAT were (then every mapping of the family was dark)."""
    touched = written_chains(txn)
    whole_family = False
    for op in _written_ops(txn):
        target = rule_target(op.args) if op.args else None
        if (op.kind is OpKind.NEW_CHAIN and op.chain == TOPLEVEL_DNAT) or (
            op.chain in DNAT_ENTRY_CHAINS and target == TOPLEVEL_DNAT
        ):
            whole_family = True
    return [
        c
        for c in configs
        if txn.family in c.families and (whole_family or dnat_chain_name(c) in touched)
    ]


# The plugin's shared chains: every container of a family wants them, none in particular.
_SHARED = frozenset({SETMARK, MASQ, TOPLEVEL_DNAT})


def writes_shared(txn: Transaction) -> bool:
    """Whether `txn` makes one of the plugin's shared chains, writes a rule of
    CNI-HOSTPORT-SETMARK's or -MASQ's, or a jump to one of them (PREROUTING's, OUTPUT's,
    POSTROUTING's): not a container's own entry rule, nor the repair's count guards."""
    for op in _written_ops(txn):
        if op.kind is OpKind.NEW_CHAIN and op.chain in _SHARED:
            return True
        if op.kind in (OpKind.APPEND, OpKind.INSERT) and (
            op.chain in (SETMARK, MASQ) or rule_target(op.args) in _SHARED
        ):
            return True
    return False


def _written_ops(txn: Transaction) -> List[Op]:
    """`txn`'s operations but a rule deleted and put back in it (planner._dedupe: one
    copy of a duplicated rule left where it stood): that one was there throughout."""
    deleted = {(op.chain, op.args) for op in txn.ops if op.kind is OpKind.DELETE}
    put_back = {(op.chain, op.args) for op in txn.ops if op.kind is OpKind.INSERT} & deleted
    return [op for op in txn.ops if (op.chain, op.args) not in put_back]


def written_chains(txn: Transaction) -> Set[Optional[str]]:
    """The chains `txn` writes, or writes a rule jumping to (a container's chain or its
    entry rule)."""
    touched: Set[Optional[str]] = set()
    for op in _written_ops(txn):
        touched.update({op.chain, rule_target(op.args) if op.args else None})
    return touched
