"""The iptables planner both repairs share (the node's, repair.py; one mapping's,
repair_one.py): `_plan` turns the chains the check compares against
(expected.wanted_on_node, expected.wanted_sharing) into the transaction that makes
them exist, and `_planned_node` is the node whose reads are made once (ReadOnce) that
both plan from. A module of its own so that neither repair imports the other's."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Collection, Dict, List, Mapping, Optional, Sequence, Tuple

from portmapctl.core.mapping import MappingConfig
from portmapctl.core.validate import CONFIG_KEYS, Spelling
from portmapctl.iptables import shapes
from portmapctl.iptables.chains import MASQ, SETMARK, Chain, dnat_chain_name
from portmapctl.iptables.planner import missing_setmark_chain, plan_setup, unwritable_entry
from portmapctl.iptables.ruleset import NatTable
from portmapctl.iptables.transaction import Transaction
from portmapctl.ops.check.cache_now import CacheNow
from portmapctl.ops.check.compare import in_live_order
from portmapctl.ops.check.expected import wanted_on_node, wanted_sharing
from portmapctl.ops.check.hints import REPAIR_COMMAND, WOULD_LEAVE
from portmapctl.ops.check.port_moves import holder_name, plan_taking_nothing
from portmapctl.ops.check.problem import Problem
from portmapctl.ops.check.read_once import ReadOnce
from portmapctl.ops.check.unread_entries import in_chain_order, unheld
from portmapctl.ops.node import Node


class _RenderedOnce(Transaction):
    """A planned transaction whose restore text is made once: iptables-restore and the
    report both need it (0.3 s each at 5,000 containers). Never changed once planned."""

    def render(self) -> str:
        text = self.__dict__.get("_text")
        if text is None:
            text = self.__dict__["_text"] = super().render()
        return text


def _setup(wanted: Sequence[Chain], live: NatTable, dedupe: bool = True) -> Transaction:
    """`dedupe`: the node's duplicated entry rules lose their extra copies too (check
    of the node reports them; a check of one mapping does not, and touches nothing
    else)."""
    txn = plan_setup(wanted, live, dedupe=dedupe)
    return _RenderedOnce(txn.family, txn.ops)


def _plan(
    configs: Optional[Sequence[MappingConfig]],
    single: Optional[MappingConfig],
    cache: Optional[CacheNow] = None,
    sharing: Sequence[MappingConfig] = (),
    unread: frozenset[str] = frozenset(),
    held: Optional[Callable[[Sequence[Chain], NatTable], List[Chain]]] = None,
    as_found: bool = False,
) -> Callable[[NatTable], Transaction]:
    """The planner for one family: what the check compares against, made to exist.
    `cache`: the cached configs of containers whose chain the plan would change are
    read again first (`CacheNow`); `single` (given on the command line) never is, and
    `sharing` (expected.sharing_chain) is what else its chain holds. `unread`: the chains of
    unread_entries.unread_pairs, written only where `live` holds nothing the entries
    read do not make (held_chains: judged on each read a try is planned from).
    `held`: `single`'s chains as written where other interfaces sharing its chain are
    being torn down (torn_down.one_mapping_held). `as_found`: `sharing` taken in the
    order their rules stand in the live chain (unread_entries.in_chain_order), where
    `single`'s own entry cannot be read and its place among them is not known else."""

    def setup(live: NatTable, these: Sequence[MappingConfig]) -> Transaction:
        shared, per_container = wanted_on_node(these, live.family, live)
        if cache is not None:
            # A torn-down interface's rules kept only as far as the chain holds them.
            per_container = cache.held(
                live, these, per_container, lambda cs: wanted_on_node(cs, live.family, live)[1]
            )
        if unread:
            # Its rules the entries read do not make may be that interface's live
            # mapping: the chain is left as it is (its shared chains are made). (The node's
            # check offers --repair where this writes: unread_entries.node_written.)
            per_container = unheld(live, per_container, unread)
        if these is None and bit_unknown(live):
            # No cache, and no rule left that says the mark bit: written, it would be a
            # guess (the default, 13), masquerading what other software marks so.
            shared = [c for c in shared if c.name not in (SETMARK, MASQ)]
        return _setup([*shared, *(chain for _, chain in per_container)], live)

    def plan(live: NatTable) -> Transaction:
        if single is not None:
            # The -p given in another order than the runtime's: the chain stays as it is.
            these = sharing or (single,)
            if as_found:
                these = in_chain_order(these, live)
            wanted = wanted_sharing(single, these, live.family, live)
            if held is not None:
                wanted = held(wanted, live)
            return _setup([in_live_order(chain, live) for chain in wanted], live, dedupe=False)
        if cache is None or configs is None:
            return setup(live, configs)  # type: ignore[arg-type]
        return cache.plan(live, configs, setup)

    return plan


def bit_unknown(live: NatTable) -> bool:
    """Whether the table's chains mark through CNI-HOSTPORT-SETMARK and no SETMARK or
    MASQ rule is left to tell the mark bit (with no cache, nothing else tells it)."""
    return shapes.uses_setmark(live) and shapes.mark_bit_in(live) is None


def _planned_node(node: Node) -> Tuple[Node, ReadOnce]:
    """The node with reads that are made once (see ReadOnce)."""
    planned = ReadOnce(node.backend)
    return replace(node, backend=planned), planned


def refused_setup(
    config: MappingConfig, live: NatTable, spelling: Spelling = CONFIG_KEYS
) -> Optional[str]:
    """Why `config`'s chain cannot be set up in this table as it is, whatever is
    retried (found before trying: its externalSetMarkChain missing, planner.
    missing_setmark_chain; an entry rule iptables-restore cannot be given back,
    planner.unwritable_entry), in both repairs' words (`spelling`: how its options
    were given); None where nothing stops it."""
    return missing_setmark_chain(
        config, live, spelling, "restore it, then repair again"
    ) or unwritable_entry(dnat_chain_name(config), live, "repair again")


def ports_left(
    live: NatTable,
    these: Sequence[MappingConfig],
    plan: Callable[[Sequence[MappingConfig]], Transaction],
    cached: Collection[str],
) -> Tuple[Transaction, Dict[str, str]]:
    """`plan(these)` less the chains that would take a port from another mapping
    (port_moves.plan_taking_nothing, `cached` as there), and by chain why each of those
    is left, in the node repair's words."""
    txn, taken = plan_taking_nothing(live, these, plan, cached)
    return txn, {
        name: took.why(holder_name(live, took.holder), cached) for name, took in taken.items()
    }


def refused_left(
    problems: Sequence[Problem],
    configs: Sequence[MappingConfig],
    tables: Mapping[int, NatTable],
    unread: frozenset[str] = frozenset(),
) -> Tuple[Problem, ...]:
    """The node check's `problems` whose fix is its --repair, those of a cached chain
    that repair leaves in that family saying why instead, in its words, as one
    mapping's check does (repair_one.repair_left): where it refuses the chain before it
    tries (refused_setup, as its `usable` asks it of `configs`: of every config that
    wants the chain), or its plan of the rest would take a port from another mapping
    (ports_left, planned as its `taking_nothing` plans: `unread` as _plan's).
    Offered, `check --repair` wrote nothing and said `could not repair`, every run."""
    offered = {
        (p.family, p.chain)
        for p in problems
        if p.family in tables and not p.in_nftables and REPAIR_COMMAND in p.fix
    }
    why: Dict[Tuple[int, str], Optional[str]] = {}
    usable: Dict[int, List[MappingConfig]] = {}  # by family: the offered chains' configs kept
    for config in configs if offered else ():
        name = dnat_chain_name(config)
        for family in config.families:
            if (family, name) not in offered:
                continue
            refused = refused_setup(config, tables[family])
            if refused is None:
                # (One config of the chain the repair takes makes it: then not refused.)
                why[(family, name)] = None
                usable.setdefault(family, []).append(config)
            else:
                why.setdefault((family, name), refused)
    # Only the offered chains are planned: the others' plans are no-ops, or not the
    # repair's (in doubt, unread, torn down), and a plan of 5,000 chains costs.
    cached = {dnat_chain_name(c) for c in configs}
    for family, these in usable.items():

        def plan(cs: Sequence[MappingConfig], live: NatTable = tables[family]) -> Transaction:
            return _plan(cs, None, unread=unread)(live)  # (no CacheNow: nothing read again)

        _, moved = ports_left(tables[family], these, plan, cached)
        why.update({(family, name): left for name, left in moved.items()})
    return tuple(
        replace(p, fix=WOULD_LEAVE.format(why=left))
        if (left := why.get((p.family or 0, p.chain or ""))) is not None and REPAIR_COMMAND in p.fix
        else p
        for p in problems
    )
