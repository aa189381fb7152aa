"""`add` of a mapping whose plugin keeps it in nftables (`_add_nft`): the v1.9.1 ADD,
both families in one `nft -f` transaction, the entry rewritten to this container's
conditions and its superseded or misplaced rules deleted; then the plugin's side
effects and, where the rewritten entry took routed flows (v1.6/v1.7's), their UDP
flush (check/nft_repair_flush.py), on the way out of a SIGTERM too. Which try went in
(`_went_in`) and the tables its warnings judge (`_planned_from`) come from the tries
converge_nft made. A module of its own: an iptables add never loads it (ops.add
imports it only for an nftables mapping; it imports AddResult from there)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Set, Tuple

from portmapctl.core.backend import Backend
from portmapctl.core.mapping import MappingConfig
from portmapctl.errors import Interrupted, PortmapctlError, found_in
from portmapctl.ops.add import AddResult
from portmapctl.ops.node import Node
from portmapctl.ops.side_effects import after_setup

if TYPE_CHECKING:
    from portmapctl.nftables.ruleset import Ruleset


def _add_nft(
    node: Node, config: MappingConfig, *, dry_run: bool, flush_udp: bool, owed: Set[int]
) -> AddResult:
    """The v1.9.1 ADD in nftables: both families in one `nft -f` transaction (`owed`:
    as add's)."""
    from portmapctl.core.validate import nft_refusals
    from portmapctl.nftables import planner
    from portmapctl.nftables.layout import misplaced
    from portmapctl.nftables.ruleset import HOSTPORTS, MASQUERADING
    from portmapctl.nftables.transaction import check_condition
    from portmapctl.nftables.wanted import wanted

    nft_refusals(config)
    for condition in (*config.conditions_v4, *config.conditions_v6):
        check_condition(condition)
    families = [f for f in config.families if f in node.families]
    want = [w for f in families if (w := wanted(config, f)) is not None]
    if not dry_run:
        owed.update(families)
    # As the ADD itself: the entry rewritten to this container's conditions and the v1.9
    # shape (planner.Entries says why), not kept as check --repair keeps it. Its rules
    # for these addresses that this mapping has not (an earlier add with other ports)
    # go, as its iptables chain is rewritten (planner.superseded).
    addresses = {f: a.ip.compressed for f in families if (a := config.address(f)) is not None}

    tried: List[Tuple[Any, Any]] = []  # each try's (transaction, the read it was planned from)

    def plan(live: Any) -> Any:
        txn = planner.setup(live, want, planner.Entries.REWRITE)
        for w in want:
            for rule in planner.superseded(live, w, addresses[w.family]):
                txn.delete_rule(w.family, rule.chain, rule.handle, rule.body)
            # Moved, not copied: v1.6/v1.7's host-IP rules of this container in
            # hostip_hostports, which setup wrote again to hostports (v1.9.1's DEL
            # removes both, but a copy left there is one no CHECK counts).
            for rule in misplaced(live, w.family, want, {w.container_id}, upgrading=True):
                txn.delete_rule(w.family, rule.chain, rule.handle, rule.body)
        tried.append((txn, live))
        return txn

    warnings: List[str] = []
    try:
        text = node.converge_nft(
            plan,
            dry_run=dry_run,
            went_in=lambda err: warnings.append(found_in("nftables", err)),
        )
        if not dry_run and families:
            warnings += after_setup(  # as above
                config, families, flush_udp, misrouted_only=not text, node=node
            )
            went = _went_in(tried)
            if text and flush_udp and went is not None:
                # The entry rewritten (a v1.6/v1.7 table upgraded, as v1.9.1's ADD does)
                # lets go of the routed flows v1.6/v1.7's entry, without `fib daddr type
                # local`, DNATed to a container: as check --repair's (flush_routed_after).
                # By the transaction that went in: after a try killed past its commit,
                # the last plan is the empty one of the read after it.
                from portmapctl.ops.check.nft_repair_flush import flush_routed_after

                warnings += flush_routed_after(node, went[0])
            owed.clear()
    except Interrupted:
        # SIGTERM or Ctrl-C once the write went in, or while it ran (it may have gone
        # in, whole): the routed flows the old entry took are let go on the way out as
        # above (the CLI's way out flushes only what misroutes to the node's own
        # addresses), or nothing lets them go: the next add finds nothing to write,
        # check finds the entry healthy. Only where the transaction rewrote the entry
        # of a table that took routed flows; its warnings are not said.
        went = _went_in(tried)
        if not dry_run and flush_udp and went is not None:
            from portmapctl.ops.check.nft_repair_flush import flush_routed_after

            with contextlib.suppress(PortmapctlError, OSError):
                flush_routed_after(node, went[0])
        raise
    transactions = {"nft": text} if text else {}
    # The nft chains its rules are in (JSON `chain` is a chain's name in every
    # document, never the container ID): hostports, and masquerading with SNAT.
    chains = (HOSTPORTS, MASQUERADING) if any(w.masquerading for w in want) else (HOSTPORTS,)
    return AddResult(
        dry_run,
        bool(text),
        chains,
        transactions,
        tuple(warnings),  # type: ignore[arg-type]
        backend=Backend.NFTABLES,
        nft_seen=_planned_from(text, tried),
    )


def _went_in(tried: Sequence[Tuple[Any, Any]]) -> Optional[Tuple[Any, Any]]:
    """The last try that planned something, with its read: the transaction that went in
    when converge returned one (a try killed after its commit is followed by a read
    that plans nothing, taken after the write), or on the way out of a signal the one
    that went in or was under way. None: no try planned anything."""
    return next((try_ for try_ in reversed(tried) if try_[0]), None)


def _planned_from(text: str, tried: Sequence[Tuple[Any, Any]]) -> Optional[Ruleset]:
    """The read the transaction that went in (`text`) was planned from; with nothing
    written, the last read. None where nothing was read (no nft to read with)."""
    went = _went_in(tried) if text else None
    if went is not None:
        return went[1]
    return tried[-1][1] if tried else None
