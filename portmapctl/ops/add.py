"""`add`: create a container's port mappings exactly as the plugin's ADD would.

One transaction per family, planned against the live table, so a second run changes
nothing. Afterwards, as the plugin does: route_localnet on the interface towards the
container (IPv4, SNAT on) and a flush of the mapped UDP ports' conntrack entries
(ops/side_effects.py); also for a family that went in when a later one failed
(_after_part), as the plugin's ADD does them for IPv4 before it tries IPv6.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from portmapctl.core.backend import Backend
from portmapctl.core.mapping import MappingConfig
from portmapctl.core.validate import OPTIONS, Spelling
from portmapctl.errors import ApplyFailed, HostProblem, PortmapctlError, ToolTimedOut
from portmapctl.iptables.chains import Chain, dnat_chain_name, wanted_chains
from portmapctl.iptables.planner import (
    missing_setmark_chain,
    plan_blind,
    plan_setup,
    unwritable_entry,
)
from portmapctl.iptables.ruleset import NatTable
from portmapctl.iptables.transaction import Transaction
from portmapctl.ops.add_ahead import Ahead, apply_blind
from portmapctl.ops.add_others import foreign_takers, shadow_views
from portmapctl.ops.conditions import refuse_what_iptables_refuses
from portmapctl.ops.flavour_guard import by_flavour, flavours_of, refuse_a_copy
from portmapctl.ops.node import Node
from portmapctl.ops.side_effects import after_setup

if TYPE_CHECKING:
    from portmapctl.cni.cache import Attachment
    from portmapctl.iptables.shapes import ProtoPort
    from portmapctl.nftables.ruleset import Ruleset


@dataclass(frozen=True)
class AddResult:
    """What add did (or, with dry_run, would do), for the report."""

    dry_run: bool
    changed: bool
    chains: Tuple[str, ...]
    transactions: Dict[int, str]
    warnings: Tuple[str, ...] = field(default=())
    # Each family's table as add found it, before writing, for the shadow warning: the
    # table converge read, or (when add wrote without reading) CNI-HOSTPORT-DNAT and the
    # chains its rules for the mapping's host ports jump to (`neighbours`).
    seen: Dict[int, NatTable] = field(default_factory=dict)
    backend: Backend = Backend.IPTABLES  # the plugin's backend written (JSON `backend`)
    # Per family, the mapping's (protocol, host port)s another tool's nat rule takes
    # before PREROUTING's jump to CNI-HOSTPORT-DNAT -> that rule (iptables/foreign.py).
    taken: Dict[int, Dict[ProtoPort, str]] = field(default_factory=dict)
    # Per family, the restore command the transaction goes to (access.restore_tools).
    tools: Dict[int, str] = field(default_factory=dict)
    # An nftables add's: the plugin's tables as read for the transaction that went in
    # (or, nothing to write, the last read), before it was written: what its warnings
    # judge, so that add lists the tables once (cli/add_run.py).
    nft_seen: Optional[Ruleset] = None


def _sharing(
    node: Node, config: MappingConfig, ifname: Optional[str], said: List[str]
) -> Callable[[NatTable, List[Chain]], List[Chain]]:
    """`chains` (wanted_chains of the config) as set up in `live`. Where `live` holds the
    container's chain already, its other cached interfaces on the network (a Multus
    pod attached to it twice: net1, net2; `ifname` is this config's) appended their
    rules to it, as the plugin's ADD of this one appends to theirs: kept (check's
    wanted: expected.sharing_chain, expected.wanted_sharing). A new chain holds this config's
    rules alone, as the plugin's ADD makes it (its early blind write included). The
    cache is asked once, and only then: not on the path of a new container. Of those
    interfaces being torn down (their address and interface gone from the pod's
    namespace: torn_down.torn_beside), only what the chain holds is kept, what it lacks
    is not made (the plugin's ADD of this one never writes theirs; made, it sent a host
    port to an address being given back), and `said` gets why, once a family."""
    found: List[Tuple[List[Attachment], Tuple[MappingConfig, ...]]] = []

    def wanted(live: NatTable, chains: List[Chain]) -> List[Chain]:
        if not live.has_chain(dnat_chain_name(config)):
            return chains
        from portmapctl.ops.check.expected import sharing_chain, wanted_sharing

        if not found:
            from portmapctl.ops.check.run import entries_of

            entries = entries_of(node, config)
            found.append((entries, sharing_chain(config, entries, ifname)))
        entries, sharing = found[0]
        # One of those entries unread beside another: where the chain holds rules the
        # entries read do not make, they may be that interface's live mapping, which
        # the write would drop where the plugin's ADD appends to them; in doubt, add
        # stops (exit 3) and writes nothing. A chain a flush emptied holds none: made,
        # as the node's repair makes it (unread_entries.stop_where_held).
        # The one unread being this interface's own (its --ifname), the others read:
        # nothing of another interface's is unknown, so add goes ahead as the plugin's
        # ADD does, keeping what the chain holds (kept_as_added).
        from portmapctl.ops.check.unread_entries import (
            kept_as_added,
            own_unread_only,
            stop_where_held,
        )

        own_only = own_unread_only(config, entries, ifname)
        if not own_only:
            stop_where_held(config, entries, sharing, live)

        def done(chains: List[Chain]) -> List[Chain]:
            return kept_as_added(chains, dnat_chain_name(config), live) if own_only else chains

        if len(sharing) < 2:
            return done(chains)
        joined = wanted_sharing(config, sharing, live.family)
        from portmapctl.ops.check.torn_down import one_mapping_held, torn_beside

        torn, look = torn_beside(config, entries, ifname)
        kept = one_mapping_held(config, sharing, torn, joined, live, as_found=False)
        if kept != joined:
            from portmapctl.core.text import name_text

            for a in torn:
                why = look.why.get((a.path, live.family))
                text = (
                    f"IPv{live.family} {name_text(config.network)}/"
                    f"{name_text(config.container_id)} ({dnat_chain_name(config)}): what"
                    f" the chain lacks of its interface {name_text(a.ifname or '-')}'s"
                    f" rules is not made: {why}"
                )
                if why is not None and text not in said:
                    said.append(text)
        return done(kept)

    return wanted


def add(
    node: Node,
    config: MappingConfig,
    *,
    dry_run: bool = False,
    flush_udp: bool = True,
    look_around: bool = False,
    ahead: Optional[Ahead] = None,
    foreign_listed: Optional[Callable[[], Optional[Dict[int, Dict[ProtoPort, str]]]]] = None,
    ifname: Optional[str] = None,
    spelling: Spelling = OPTIONS,
    owed: Optional[Set[int]] = None,
) -> AddResult:
    """`look_around`: also fill AddResult.seen (what the shadow warning reads).
    `ahead`: add_ahead.Ahead for this config, started by the caller (the CLI starts it
    before it imports this module); else add starts it where it helps (iptables-nft).
    `foreign_listed`: the foreign-rule walk over listed chains, started by the CLI
    where there is no `ahead` (legacy: add_ahead.early_foreign_takers).
    `ifname`: the interface it is for (its container's others on the network share its
    chain: _sharing). `spelling`: how the config's options were given (an error names
    them so). `owed`: filled with the families whose write went in, or is under way
    (it may have gone in, whole), and emptied once their UDP flush has run: what the
    way out of a SIGTERM or Ctrl-C still flushes (cli/add_run.py; an add that wrote
    nothing would not flush it: it flushes only what misroutes)."""
    owed = set() if owed is None else owed
    if config.backend == Backend.NFTABLES:
        # (Imported here: an iptables add never needs it, and add_nft imports AddResult
        # from this module.)
        from portmapctl.ops.add_nft import _add_nft

        return _add_nft(node, config, dry_run=dry_run, flush_udp=flush_udp, owed=owed)
    transactions: Dict[int, str] = {}
    chains: List[str] = []
    families = [f for f in config.families if f in node.families]
    # Every family's chains first: one that cannot be built (a condition of the wrong
    # family, say) is bad input before any family is written, not after the first.
    wanted_by_family = {family: wanted_chains(config, family) for family in families}
    said: List[str] = []  # (_sharing's: a torn-down interface's rules not made)
    sharing = _sharing(node, config, ifname, said)
    seen: Dict[int, NatTable] = {}
    blind: List[int] = []
    used_by = flavours_of(node.backend, families)
    if ahead is None and used_by is not None:
        # (With `ahead`, the CLI asked before it started the write.) Each family against
        # its own other flavour, where the alternatives differ.
        for used, in_it in by_flavour(used_by).items():
            refuse_a_copy(
                used,
                config,
                in_it,
                lambda f: node.backend.read(f).has_chain(dnat_chain_name(config)),
            )
    if ahead is None:
        # Refused whatever the table holds: bad input before any family is written, not
        # a table that changed (with `ahead`, the CLI asked before it started the write).
        refuse_what_iptables_refuses(node.backend, config, families, spelling)
    # A new container on iptables-nft: written without reading the table, the restore
    # in a thread (add_ahead), started by the CLI before it imported this module.
    if dry_run or not getattr(node.backend, "cheap_chain_reads", False):
        ahead = None  # a dry run reads the table; legacy: each read gets it whole
    elif ahead is None:
        ahead = Ahead.start(None, config, families, look=look_around)
    written = ahead.written() if ahead is not None else {}
    owed.update(family for family, txn in written.items() if txn)
    # A write without a read whose restore died without saying, by family (it may have
    # gone in, whole): the read after it judges it (Node.converge_judged).
    killed: Dict[int, Tuple[Transaction, ApplyFailed]] = ahead.killed() if ahead is not None else {}
    hung = ahead.hung() if ahead is not None else {}  # (its restore timed out: add ends)

    def unsure(tried: Transaction, err: ApplyFailed) -> None:
        killed[tried.family] = (tried, err)

    notes: List[str] = []
    # Each try's transaction and the read it was planned from: a try killed after its
    # commit is followed by a read, taken after the write, that plans nothing.
    planned: List[Tuple[Transaction, NatTable]] = []
    # The families through (written, or found in place), for a failure after them.
    through: List[int] = []
    try:
        for family in families:
            wanted = wanted_by_family[family]
            chains += [c.name for c in wanted if c.name not in chains]

            def plan(live: NatTable, w: List[Chain] = wanted, f: int = family) -> Transaction:
                seen[f] = live  # the last try's read: the table this transaction was made for
                why = missing_setmark_chain(
                    config, live, spelling, "create it, then add again"
                ) or unwritable_entry(dnat_chain_name(config), live, "add again")
                if why is not None:
                    # No retry cures it (iptables refuses the jump each time): said at once,
                    # from the table this read anyway (the write without a read was refused).
                    raise HostProblem(
                        f"cannot add {config.network}/{config.container_id}: {why}"
                        + _applied(families, transactions, written, dry_run)
                    )
                txn = plan_setup(sharing(live, w), live)
                planned.append((txn, live))
                return txn

            try:
                if family in hung:
                    raise hung[family]
                if dry_run:
                    txn = None
                elif family in written or ahead is not None:
                    txn = written.get(family)
                else:
                    owed.add(family)  # (in already, maybe, when a signal ends it)
                    txn = apply_blind(node.backend, plan_blind(wanted, family), unsure)
                if txn is None:
                    if not dry_run:
                        owed.add(family)
                    txn = node.converge_judged(family, plan, notes, dry_run, killed.get(family))
                    if txn:
                        _judged_from(txn, family, planned, seen, blind)
                else:
                    blind.append(family)
            except (ApplyFailed, ToolTimedOut) as err:
                raise type(err)(
                    f"IPv{family}: {err}" + _applied(families, transactions, written, dry_run),
                    maybe_applied=err.maybe_applied,
                ) from None
            except HostProblem as err:
                # (Imported here: not on add's usual path.)
                from portmapctl.ops.check.unread_entries import ChainInDoubt

                # The CLI asks every family before the write (cli/add_backend.py); here it
                # is found family by family (a library caller, a chain made meanwhile): a
                # family written before it is said, not "nothing changed".
                done = _applied(families, transactions, written, dry_run)
                if not isinstance(err, ChainInDoubt) or not done:
                    raise
                raise ChainInDoubt(err.pair, err.path, done) from None
            if txn:
                transactions[family] = txn.render()
            through.append(family)
    except PortmapctlError:
        # A family failed after another went in (IPv6 after IPv4, most often): what went
        # in gets its side effects, as the plugin's ADD gives IPv4 its own before it
        # tries IPv6 (_after_part). A dry run applied nothing.
        if not dry_run:
            got = [f for f in families if f in through or written.get(f)]
            wrote = any(f in transactions or written.get(f) for f in got)
            interfaces = ahead.interfaces() if ahead is not None else None
            _after_part(config, got, flush_udp, interfaces, wrote, node)
            owed.difference_update(got)
        raise
    warnings: List[str] = [*notes, *said]
    if not dry_run and families:
        interfaces = ahead.interfaces() if ahead is not None else None
        # The flush moves the port's flows onto the new rules; with nothing written
        # (a second add) there is no move, and deleting the live flows would drop
        # replies already on their way (add is idempotent, SPEC §3): only the flows
        # that do not reach this container go (an add stopped before its flush left
        # them so: flush_misrouted).
        warnings += after_setup(
            config, families, flush_udp, interfaces, misrouted_only=not transactions, node=node
        )
        owed.clear()
    taken: Dict[int, Dict[ProtoPort, str]] = {}
    if look_around:
        for family in families:
            if ahead is not None:
                listed = ahead.taken()
            else:
                listed = foreign_listed() if foreign_listed is not None else None
            found = foreign_takers(node, config, family, seen.get(family), listed)
            if found:
                taken[family] = found
    if look_around and blind:
        own = dnat_chain_name(config)
        claims = ahead.claims() if ahead is not None else {}
        for family, view in shadow_views(node, config, blind, claims).items():
            if view is not None:
                # Listed after the -N went in (or during it): the chain's own entry
                # rules were not there before.
                seen[family] = view.without({own})
    return AddResult(
        dry_run,
        bool(transactions),
        tuple(chains),
        transactions,
        tuple(warnings),
        seen,
        taken=taken,
    )


def _after_part(
    config: MappingConfig,
    got: Sequence[int],
    flush_udp: bool,
    interfaces: Optional[Dict[str, str]],
    wrote: bool,
    node: Node,
) -> None:
    """The side effects owed to the families that went in (`got`) before another
    failed, as the plugin's ADD does them: route_localnet towards the container's IPv4
    address (SNAT on) and the UDP flush of the ports in those families, both before it
    tries IPv6 (main.go cmdAdd, every version), so that a failing IPv6 leaves the IPv4
    mapping working; the failing family, which did not go in (or may have: its restore
    hung or died), is not flushed (nothing moved its flows). Only the flows that
    misroute where nothing was written (as after an add that wrote nothing). Their
    warnings are not said: the run ends with its one error line, as before (the same
    add again finishes what is missing, and says them)."""
    if not got:
        return
    # (Whatever goes wrong here, the failure that ended the write is the line said.)
    with contextlib.suppress(PortmapctlError, OSError):
        after_setup(config, got, flush_udp, interfaces, misrouted_only=not wrote, node=node)


def _judged_from(
    txn: Transaction,
    family: int,
    planned: Sequence[Tuple[Transaction, NatTable]],
    seen: Dict[int, NatTable],
    blind: List[int],
) -> None:
    """Where the transaction converge_judged returned was a try killed after its commit,
    the family is reported from the table before it, as the same add unkilled: `seen`
    the read it was planned from, or (a write without a read) a blind one. Not the read
    that judged it, taken after the write, with the container's chain in it: a chain
    add made was said "rewrote", and a port another container maps first "is shadowed"
    where it "will be"."""
    read = next((live for tried, live in reversed(planned) if tried is txn), None)
    if read is not None:
        seen[family] = read
    elif family not in blind:
        seen.pop(family, None)  # (shadow_views lists it again, as for a blind write)
        blind.append(family)


def _applied(
    families: Sequence[int], transactions: Dict[int, str], written: Dict[int, Any], dry_run: bool
) -> str:
    """Each family is its own transaction: which went in before a failing one. None in
    a dry run: its `transactions` are what it would write (it said "IPv4 was applied"
    of a plan)."""
    if dry_run:
        return ""
    done = [f"IPv{f}" for f in families if f in transactions or written.get(f)]
    return f" ({', '.join(done)} was applied)" if done else ""
