"""`check --repair` of one nft-backed mapping given on the command line
(repair_nft_mapping, which repair_one._repair_mapping hands a mapping its plugin keeps
in nftables): its rules made as the plugin's ADD would and its container's rules its
config does not make deleted (repair_mapping), in one `nft -f` transaction, nothing
else of the node touched. It decides for this one container what the node's repair
(nft_repair.py) decides for each: the node's entry gets the newest cached ADD's
conditions (left as it is where those are refused), no host port is taken from
another container (port_moves), nothing is made in a family where its own interface
is being torn down (torn_down.nft_torn_own). What it compares against is
ops/check/nft_one.py's. A module of its own: the node's check and repair never load
it."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from portmapctl.core.mapping import MappingConfig
from portmapctl.errors import Interrupted, PortmapctlError
from portmapctl.ops.check.nft import expected_in_add_order
from portmapctl.ops.check.nft_one import other_networks, own_addresses
from portmapctl.ops.check.nft_repair_flush import flush_routed_after
from portmapctl.ops.check.nft_repair_txn import _judged, cached_addresses, nft_changed
from portmapctl.ops.check.port_moves import PortTaken, nft_holder_name, nft_ports_taken
from portmapctl.ops.check.problem import CheckResult, Unrepaired
from portmapctl.ops.node import Node
from portmapctl.ops.side_effects import after_setup

if TYPE_CHECKING:
    from portmapctl.cni.cache import Attachment
    from portmapctl.nftables.ruleset import Ruleset
    from portmapctl.nftables.transaction import Transaction as NftTransaction


def repair_mapping(
    node: Node,
    config: MappingConfig,
    families: Tuple[int, ...],
    planned: Optional[List[NftTransaction]] = None,
    left: Optional[Dict[int, PortTaken]] = None,
    notes: Optional[List[str]] = None,
    dry_run: bool = False,
) -> Tuple[str, List[int]]:
    """Make one nft-backed mapping as the plugin's ADD would, and delete the rules of
    its container that its config does not make (what check_mapping calls extra): the
    transaction's text and the families written. `planned`: gets each transaction as
    it is tried (what a SIGTERM during the write may have put in). Nothing is written in
    a family where that would take a port another container has (port_moves): `left`
    gets why, by family.
    `notes`: gets the warning for a try whose nft died and that went in (found_in), and
    the line of each family whose entry it left as it is (nft_refused.held_notes).
    `dry_run`: planned, not applied (ports_left)."""
    from portmapctl.nftables import planner
    from portmapctl.nftables.layout import lone_families
    from portmapctl.nftables.problems import refuses_the_plugins_rules
    from portmapctl.nftables.transaction import Transaction as NftTransaction
    from portmapctl.nftables.wanted import wanted
    from portmapctl.ops.check.nft_refused import held_notes, newest_adds, newest_refused, refusals

    want = [w for f in families if (w := wanted(config, f)) is not None]
    attachments = node.read_cache()
    others = other_networks(node, config, families, attachments)
    # prerouting/output are the node's, not this container's: where one must be written
    # again, it gets the conditions of the newest cached ADD of its family, as the
    # node-wide repair writes it (this container's would apply to every container).
    held: Dict[int, Attachment] = {}
    refused: Dict[str, str] = {}
    # (As nft_repair's: over every cached container, this one too.)
    lone = lone_families([config.families])
    if attachments:
        cached = expected_in_add_order(node, attachments)
        lone = lone_families([config.families, *(a.mapping.families for a in cached)])  # type: ignore[union-attr]
        entries = {f: w.entry for f, a in newest_adds(cached, families).items()
                   if (w := wanted(a.mapping, f)) is not None}  # type: ignore[arg-type]  # fmt: skip
        # Where the newest ADD's conditions cannot be written, the entry is left as it
        # is, as nft_repair leaves it (another's would open every port wider).
        refused = refusals(cached)
        held = newest_refused(cached, refused, families)
        want = [replace(w, entry=entries.get(w.family, w.entry)) for w in want]
    # Exactly as checked: the container's own unwanted rules go too, by handle
    # (never anyone else's), as the node-wide repair does.
    ids, written = {config.container_id}, [w.family for w in want]
    mine = own_addresses(config)
    # Its rules are its own (no holder: port_moves) for the addresses given and those of
    # its cache entries; one for another address is stale, maybe another's now.
    own = cached_addresses([a for a in attachments or () if a.container_id == config.container_id])
    own[config.container_id] = (*own.get(config.container_id, ()), *mine)
    tried: List[NftTransaction] = planned if planned is not None else []

    def plan(live: Ruleset) -> NftTransaction:
        # A family whose table refuses what the plan writes there is left, as
        # nft_repair leaves it: written, it failed the one `nft -f` of both families
        # whole.
        written[:] = [w.family for w in want]
        txn = planner.repair(live, want, ids, written, others, mine, held=held, lone=lone)
        usable = [
            w
            for w in want
            if not refuses_the_plugins_rules(live.table(w.family), txn.written(w.family))
        ]
        if len(usable) < len(want):
            written[:] = [w.family for w in usable]
            txn = planner.repair(live, usable, ids, written, others, mine, held=held, lone=lone)
        took = {
            f: t
            for (cid, f), t in nft_ports_taken(live, txn, own).items()
            if cid == config.container_id
        }
        if left is not None:
            left.clear()  # (planned again from a fresh read)
            left.update(took)
        if took:
            # The family whose repair would take a port is left as it is; the other is
            # repaired (a table of its own: nothing of it takes or gives that port).
            usable = [w for w in usable if w.family not in took]
            written[:] = [w.family for w in usable]
            txn = NftTransaction()
            if usable:
                txn = planner.repair(live, usable, ids, written, others, mine, held=held, lone=lone)
        tried.append(txn)
        return txn

    said = [] if notes is None else notes
    went_in = _judged(tried, lambda txn: txn, said)
    text = node.converge_nft(plan, dry_run=dry_run, went_in=went_in)
    if held and notes is not None:
        # The entry it left, said as nft_repair says it: the check's rows of that entry
        # name it as why --repair leaves them, and the repair said nothing of it.
        said += held_notes(node.read_nft(), held, refused)
    return text, (list(written) if text else [])


def left_why(took: PortTaken) -> str:
    """Why repair_mapping leaves a family whose repair would take `took`'s port."""
    return took.why(nft_holder_name(took))


def ports_left(node: Node, config: MappingConfig, families: Tuple[int, ...]) -> Dict[int, str]:
    """By family, why repair_mapping of `config` would leave it as it is because its
    repair would take a port another has: its own plan, not applied (dry run). For the
    one-mapping check, which offered that repair on every run."""
    left: Dict[int, PortTaken] = {}
    repair_mapping(node, config, families, left=left, dry_run=True)
    return {f: left_why(t) for f, t in left.items()}


def repair_nft_mapping(
    node: Node,
    config: MappingConfig,
    before: CheckResult,
    flush_udp: bool,
    ifname: Optional[str] = None,
) -> CheckResult:
    """`check --repair` of one mapping given on the command line (for `ifname`) whose
    container `followed` put in the nftables backend: repair_mapping, then its side
    effects (on the way out of a SIGTERM too) and the check after. A family where its
    own interface is being torn down (torn_down.nft_torn_own) is left as it is, named."""
    from portmapctl.core.validate import nft_refusals
    from portmapctl.nftables.ruleset import HOSTPORTS
    from portmapctl.nftables.transaction import check_condition
    from portmapctl.ops.check.run import check_followed, entries_of
    from portmapctl.ops.check.torn_down import nft_torn_own

    nft_refusals(config)
    for condition in (*config.conditions_v4, *config.conditions_v6):
        check_condition(condition)
    tried: List[NftTransaction] = []
    left: Dict[int, PortTaken] = {}  # by family
    notes: List[str] = []
    # (Looked into only where something would be written: a healthy mapping costs nothing.)
    dying = nft_torn_own(config, entries_of(node, config), ifname) if before.problems else {}
    dead = [
        Unrepaired(f, config.network, config.container_id, HOSTPORTS, why)
        for f, why in sorted(dying.items())
        if any(p.family == f for p in before.problems)
    ]
    families = tuple(f for f in before.families if f not in dying)
    try:
        text, families = repair_mapping(node, config, families, tried, left, notes)
    except Interrupted as stop:
        # SIGTERM or Ctrl-C once `nft -f` went in (or was under way): what it made gets
        # the plugin's side effects on the way out, as the whole-node repair does.
        from portmapctl.ops.check.repair_report import say_repaired

        made = nft_changed(tried[-1], [config]) if tried else []
        say_repaired(stop, bool(tried), made)
        for c, fams in made:
            after_setup(c, fams, flush_udp, local_only=True)
        if flush_udp and tried:
            with contextlib.suppress(PortmapctlError):  # (the run ends as terminated)
                flush_routed_after(node, tried[-1])
        raise
    try:
        # (`node`: what would go and does not reach this container is judged against the
        # node's every mapping, as the node-wide repair judges it: a shadowed
        # container's repair deleted the live flows of the one that takes the port.)
        warnings = notes + (
            after_setup(config, families, flush_udp, local_only=True, node=node) if families else []
        )
        if flush_udp and text and tried:
            warnings += flush_routed_after(node, tried[-1])
        unrepaired = dead + [
            Unrepaired(t.family, config.network, config.container_id, t.chain, left_why(t))
            for _, t in sorted(left.items())
        ]
        warnings += [u.text for u in unrepaired]
        after = check_followed(node, config, ifname=ifname)
    except Interrupted as stop:
        # `nft -f` went in: its side effects, or the check after, under way.
        from portmapctl.ops.check.repair_report import say_repaired

        say_repaired(stop, bool(tried), nft_changed(tried[-1], [config]) if tried else [])
        raise
    from portmapctl.ops.check.repair_report import left_named

    remaining = {p.key for p in after.problems}
    return CheckResult(
        left_named(after.problems, unrepaired),
        after.families,
        after.scope,
        mappings_checked=after.mappings_checked,
        chain=after.chain,
        repaired=bool(text),
        fixed=tuple(p for p in before.problems if p.key not in remaining),
        transactions={"nft": text} if text else {},
        warnings=tuple(warnings),
        unrepaired=tuple((u.family, u.network, u.container_id, u.chain, u.why) for u in unrepaired),
    )
