"""What `portmapctl add` does once its options are parsed: by typer (cli/add.py) or by
the fast path (cli/add_fast.py). No typer here: the fast path never imports it."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, List, Optional, Set, Tuple

from portmapctl.cli.add_backend import followed, net_admin
from portmapctl.cli.add_config import (
    ForwardsNothing,
    mapping_and_key,
    refuse_short_id,
    spelling_of,
)
from portmapctl.cli.add_warnings import (
    contest_warnings,
    foreign_warnings,
    hook_warnings,
    nft_shadow_warnings,
    other_flavour_warnings,
    shadow_warnings,
)
from portmapctl.core.backend import Backend, Flavour, IptablesAccess
from portmapctl.errors import Interrupted
from portmapctl.iptables.chains import dnat_chain_name

if TYPE_CHECKING:
    from portmapctl.cli._common import Common, MappingOptions
    from portmapctl.cli.output import Output
    from portmapctl.core.mapping import MappingConfig
    from portmapctl.core.validate import Spelling
    from portmapctl.ops.add import AddResult
    from portmapctl.ops.add_ahead import Ahead
    from portmapctl.ops.add_early import EarlyClaims


def run(
    common: Common,
    mapping: MappingOptions,
    *,
    no_flush_udp: bool,
    dry_run: bool,
    early_claims: Optional[EarlyClaims] = None,
) -> None:
    out = common.out()
    try:
        config, keyed = mapping_and_key(mapping, backend=common.plugin_backend)
    except ForwardsNothing as idle:
        _report_nothing(common, out, str(idle), dry_run)
        return
    refuse_short_id(common.cache_dirs, config)
    from portmapctl.cli._common import families
    from portmapctl.core import validate

    # Checked before the lock and the write start (ops/add_ahead.py).
    validate.chosen_families(config, families(common.family), "add")
    found = followed(common, config, out, keyed, mapping.ifname)
    config, nft_live = found.config, found.nft_live
    started: List[Ahead] = []
    owed = _Owed()  # ops.add.add's: families written, their flush not yet run
    if dry_run:
        from portmapctl.host import lock

        # Where the add would take the lock: what it would refuse there (a run
        # directory not ours), its dry run refuses in its words, exit 3, rather than
        # print a plan that cannot go in (SPEC §4; §3: a dry run changes nothing, so
        # it is looked at, not made nor locked).
        lock.refuse_unusable()
    with contextlib.ExitStack() as held:
        try:
            # add's work starts now, under the lock, before the rest of add is imported
            # (ops/add_ahead.py); the imports and the node's opening overlap it.
            ahead = (
                None
                if dry_run
                else _ahead(common, config, held, spelling_of(mapping), early_claims, started)
            )
            listed = None if dry_run or ahead is not None else _early_foreign(common, config)
            added, result, clashes = _add(
                common,
                config,
                ahead,
                no_flush_udp=no_flush_udp,
                dry_run=dry_run,
                foreign_listed=listed,
                nft_live=nft_live,
                ifname=mapping.ifname,
                spelling=spelling_of(mapping),
                owed=owed,
            )
        except Interrupted as stop:
            ahead_started = started[0] if started else None
            if not dry_run and _written_or_under_way(owed.held, ahead_started):
                # "terminated" alone reads as "nothing was written".
                stop.after = (
                    f"the write of {config.network}/{config.container_id} may have gone in"
                    " (the same add again finishes what is missing)"
                )
            if not dry_run and not no_flush_udp:
                _flush_on_the_way_out(common, config, owed, ahead_started)
            raise
    _report(common, out, added, result, clashes, dry_run, found.warned)


def _flush_on_the_way_out(
    common: Common, config: MappingConfig, owed: Set[int], ahead: Optional[Ahead]
) -> None:
    """SIGTERM or Ctrl-C once add's write went in (or while it ran: it may have gone
    in, whole), before its UDP flush: the flows of its ports that do not reach the
    container (begun before its rules, or DNATed elsewhere) are flushed on the way
    out, as gc and check --repair do; else they keep going there until idle (the next
    add, finding nothing to write, flushes them too). The write ahead (its thread)
    counts when it went in, even before add itself had its answer (the lock is held
    until it is over anyway), also when add's own flush had run (only what misroutes
    goes: twice is as once). A flow through the new rules is right and stays. Its
    warnings are not said: the run ends with its one line."""
    families = _written_or_under_way(owed, ahead)
    if not families:
        return
    from portmapctl.host.netns import entered
    from portmapctl.ops.side_effects import flush_misrouted

    with entered(common.netns):
        flush_misrouted(config, sorted(families))


class _Owed(set[int]):
    """ops.add.add's `owed` (families written or under way whose UDP flush has not run;
    it empties it once the flush ran) that remembers every family it held (`held`):
    a signal after the flush, while add looks around for its warnings, still finds a
    write that went in ("terminated" alone read as nothing written)."""

    def __init__(self) -> None:
        super().__init__()
        self.held: Set[int] = set()

    def add(self, family: int) -> None:
        super().add(family)
        self.held.add(family)

    def update(self, *families: Iterable[int]) -> None:
        for each in families:
            for family in each:
                self.add(family)


def _written_or_under_way(owed: Set[int], ahead: Optional[Ahead]) -> Set[int]:
    """The families add's write went in for, or was under way in when a signal came
    (it may have gone in, whole): `owed` (ops.add.add's, or all it held), and the
    write ahead's."""
    families = set(owed)
    if ahead is not None:
        families.update(family for family, txn in ahead.written().items() if txn)
    return families


def _add(
    common: Common,
    config: MappingConfig,
    ahead: Optional[Ahead],
    *,
    no_flush_udp: bool,
    dry_run: bool,
    foreign_listed: Optional[Callable[[], Any]] = None,
    nft_live: Any = None,
    ifname: Optional[str] = None,
    spelling: Spelling,
    owed: Optional[Set[int]] = None,
) -> Tuple[MappingConfig, AddResult, List[str]]:
    """Writes `config` where its plugin would; returns it with the backend it went to.
    `nft_live`: the plugin's nftables tables as add_backend.followed read them (None: not read).
    `owed`: ops.add.add's."""
    from dataclasses import replace

    from portmapctl.host import paths
    from portmapctl.ops.add import add
    from portmapctl.ops.node import opened

    options = common.node_options()
    keyless_here = config.backend is None and options.backend is None
    if config.backend != Backend.NFTABLES and not (
        keyless_here and paths.find_tool("iptables") is None
    ):
        # Written to iptables: nft is not opened (importing its modules alone is ~15 ms).
        options = replace(options, backend=Backend.IPTABLES)
    # With `ahead`, the lock is held already.
    with opened(options, write=not dry_run, lock_now=ahead is None) as node:
        if keyless_here and node.options.keyless == Backend.NFTABLES:
            # No iptables on this node: the plugin, given no `backend` key, takes its
            # nftables backend (as list, check and gc read it), so add writes there.
            config = replace(config, backend=Backend.NFTABLES)
        if config.backend == Backend.NFTABLES:
            result = add(node, config, dry_run=dry_run, flush_udp=not no_flush_udp, owed=owed)
            # The tables as before the write (a re-added mapping keeps its rules' place):
            # the read its transaction was planned from, right before the write (the
            # window a concurrent plugin ADD or DEL has stays that narrow); not a second
            # listing of the whole table (~160 ms at 1,000 containers).
            live = result.nft_seen if result.nft_seen is not None else node.read_nft()
            clashes = nft_shadow_warnings(config, live)
            clashes += contest_warnings(node, config)
            clashes += other_flavour_warnings(node, config)
            clashes += hook_warnings(node, config, live)
        else:
            # What add read (or listed meanwhile): not a second read of the whole table.
            result = add(
                node,
                config,
                dry_run=dry_run,
                flush_udp=not no_flush_udp,
                look_around=True,
                ahead=ahead,
                foreign_listed=foreign_listed,
                ifname=ifname,
                spelling=spelling,
                owed=owed,
            )
            clashes = shadow_warnings(config, result.seen)
            clashes += contest_warnings(node, config, nft_live)
            clashes += hook_warnings(node, config)
            clashes += foreign_warnings(result)
            clashes += other_flavour_warnings(node, config)
        if dry_run and result.transactions:
            from portmapctl.iptables.access import restore_tools

            result = replace(result, tools=restore_tools(node.backend))
    return config, result, clashes


def _report(
    common: Common,
    out: Output,
    config: MappingConfig,
    result: AddResult,
    clashes: List[str],
    dry_run: bool,
    warned: Iterable[str] = (),
) -> None:
    """`warned`: the warnings said already (add_backend.followed's), the JSON's first."""
    from portmapctl import render

    for warning in clashes:
        out.warn(warning)
    for warning in result.warnings:
        out.warn(warning)
    noted = _cache_note(common, out)
    if out.json:
        # Every warning said on stderr, in its order (docs/json.md).
        said = [*warned, *clashes]
        out.print_json(render.add_json(result, common.cache().json(), said, noted))
        return
    # An nftables mapping has no chain of its own: its rules carry the container ID.
    chain = "nftables rules" if config.backend == Backend.NFTABLES else dnat_chain_name(config)
    who = f"{config.network}/{render.short_id(config.container_id, out.no_trunc)}"
    are = "are" if config.backend == Backend.NFTABLES else "is"
    # A chain add found (read, not written blind) and writes to this config's ports: a
    # dry run says what the same add for real would print.
    had = config.backend != Backend.NFTABLES and any(
        table.has_chain(chain) for table in result.seen.values()
    )
    if dry_run:
        if result.transactions:
            out.show_text(render.transactions_text(result.transactions, result.tools))
            out.summary(f"would {'rewrite' if had else 'add'} {chain} ({who}) (dry run)")
        else:
            out.summary(f"unchanged: {chain} ({who}) {are} already in place (dry run)")
        return
    if result.changed:
        out.summary(f"{'rewrote' if had else 'added'} {chain} ({who})")
    else:
        out.summary(f"unchanged: {chain} ({who}) {are} already in place")


def _cache_note(common: Common, out: Output) -> List[str]:
    """SPEC §3's note of a missing or empty cache (add follows a container's cached
    backend and refuses its short ID by it): a glance at results/, not a count. Returns
    the warnings said (and those of a runtime's cache below: the JSON's too)."""
    from portmapctl.cli._common import cache_glance

    return out.cache_note(cache_glance(common.cache_dirs, given=bool(common.cni_cache_dir)))


def _report_nothing(common: Common, out: Output, why: str, dry_run: bool) -> None:
    """add of a config the plugin's ADD returns from at once: nothing written, exit 0."""
    from portmapctl import render
    from portmapctl.ops.add import AddResult

    noted = _cache_note(common, out)
    if out.json:
        result = AddResult(dry_run=dry_run, changed=False, chains=(), transactions={})
        out.print_json(render.add_json(result, common.cache().json(), after=noted))
        return
    out.summary(f"nothing to add: {why}; the plugin adds no rule for it")


def _ahead(
    common: Common,
    config: MappingConfig,
    held: contextlib.ExitStack,
    spelling: Spelling,
    early_claims: Optional[EarlyClaims] = None,
    started: Optional[List[Ahead]] = None,
) -> Optional[Ahead]:
    """add_ahead.Ahead for this mapping, started under the portmapctl lock (entered on
    `held`), when it is written to iptables-nft with CAP_NET_ADMIN; None otherwise (add
    opens, checks and locks in its usual order, and says what is wrong). `started`
    gets it as soon as it runs (a signal on the way back still finds it)."""

    from portmapctl.cli._common import families
    from portmapctl.errors import PortmapctlError

    started = [] if started is None else started
    if any(not folder for folder in common.cache_dirs):
        return None  # node_options refuses it: before the lock, as always
    if _flavour_ahead(common, config) != Flavour.NFT:
        return None
    from portmapctl.host import lock
    from portmapctl.host.netns import entered
    from portmapctl.iptables.access.restore import RestoreBackend
    from portmapctl.ops.add_ahead import Ahead
    from portmapctl.ops.conditions import refuse_what_iptables_refuses
    from portmapctl.ops.flavour_guard import refuse_a_copy

    held.enter_context(lock.held(say_waiting=not common.quiet))
    wanted = [f for f in config.families if f in families(common.family)]
    here = RestoreBackend(Flavour.NFT)
    with entered(common.netns):
        # Before anything is written: no copy of a chain the legacy tables hold.
        refuse_a_copy(
            Flavour.NFT,
            config,
            wanted,
            lambda f: here.list_chain(f, dnat_chain_name(config)) is not None,
        )
        # Nor any family when iptables refuses the other's conditions.
        refuse_what_iptables_refuses(here, config, wanted, spelling)
    # A signal while the threads start (Thread.start waits for each) is taken once the
    # write is known: else it ends the run with the write going in unseen, neither
    # waited for under the lock nor flushed after (run's way out).
    with _signals_deferred():
        try:
            ahead = Ahead.start(common.netns, config, wanted, early=early_claims)
        except PortmapctlError:
            return None  # add meets it again, and says so
        # Whatever happens meanwhile, the lock goes only once the write is over.
        held.callback(ahead.written)
        started.append(ahead)
    return ahead


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM noted, not acted on, for the block's few milliseconds, then
    raised again as they came (the CLI's handler makes them Interrupted or
    Terminated). Outside the main thread (an embedding program) nothing is changed."""
    import signal

    taken: List[int] = []
    try:
        previous = {
            number: signal.signal(number, lambda signum, _frame: taken.append(signum))
            for number in (signal.SIGINT, signal.SIGTERM)
        }
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if taken:
            signal.raise_signal(taken[0])


def _early_foreign(common: Common, config: MappingConfig) -> Optional[Callable[[], Any]]:
    """add_ahead.early_foreign_takers for a mapping written to legacy iptables with
    CAP_NET_ADMIN (iptables-nft has Ahead; anything else lists them after the write)."""

    from portmapctl.cli._common import families

    if _flavour_ahead(common, config) != Flavour.LEGACY:
        return None
    from portmapctl.ops.add_ahead import early_foreign_takers

    wanted = [f for f in config.families if f in families(common.family)]
    return early_foreign_takers(common.netns, config, wanted, Flavour.LEGACY)


def _flavour_ahead(common: Common, config: MappingConfig) -> Optional[Flavour]:
    """The iptables flavour (nft, legacy) `config` will be written to, when add's work
    may start before the rest of add is imported; None when it may not: the nftables
    backend, no CAP_NET_ADMIN (add says so first, having touched nothing), python-iptables
    (--iptables iptc: add's own backend), a flavour or --netns that add will refuse (and
    say why, in its usual order)."""
    import os

    from portmapctl.errors import PortmapctlError, ToolTimedOut

    if config.backend == Backend.NFTABLES or not net_admin():
        return None
    if common.iptables is IptablesAccess.IPTC:
        return None
    flavour = common.iptables.flavour
    if flavour is None:  # auto
        from portmapctl.cli._common import families
        from portmapctl.iptables.access import host_flavour

        try:
            # Over the families the node is opened with, as open_backend: where their
            # tools' flavours differ, add works per family (no write ahead).
            flavour = host_flavour(families(common.family))
        except ToolTimedOut:
            raise  # add would ask again, and wait as long
        except PortmapctlError:
            return None
    if common.netns is not None:
        from portmapctl.host.netns import resolve

        try:
            if not os.path.exists(resolve(common.netns)):
                return None
        except PortmapctlError:
            return None
    return flavour
