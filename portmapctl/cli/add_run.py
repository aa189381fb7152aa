"""What `portmapctl add` does once its options are parsed: by typer (cli/add.py) or by
the fast path (cli/add_fast.py). No typer here: the fast path never imports it."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, List, Optional, Set, Tuple

from portmapctl.cli.add_config import (
    ForwardsNothing,
    mapping_from_options,
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
from portmapctl.errors import BadInput, HostProblem, Interrupted
from portmapctl.iptables.chains import dnat_chain_name

if TYPE_CHECKING:
    from portmapctl.cli._common import Common, MappingOptions, Output
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
        config = mapping_from_options(mapping, backend=common.plugin_backend)
    except ForwardsNothing as idle:
        _report_nothing(common, out, str(idle), dry_run)
        return
    refuse_short_id(common.cache_dirs, config)
    from portmapctl.cli._common import families
    from portmapctl.core import validate

    # Checked before the lock and the write start (ops/add_ahead.py).
    validate.chosen_families(config, families(common.family), "add")
    config, nft_live = _followed(common, config, out)
    started: List[Ahead] = []
    owed = _Owed()  # ops.add.add's: families written, their flush not yet run
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
    _report(common, out, added, result, clashes, dry_run)


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


def _followed(common: Common, config: MappingConfig, out: Output) -> Tuple[MappingConfig, Any]:
    """A mapping without a `backend` key (under --backend auto) goes where the plugin
    keeps its container: the backend its cached config names (cni/cache.py
    configured_backend), else nftables when its rules are in the plugin's tables alone
    (ops/nft.py kept_in_nftables), with a note; else as given. Asked before the write
    starts; the rules only where a `cni_hostport` table exists (one netlink question
    elsewhere).
    Also the plugin's nftables tables as read for it (None: not read), which the
    contested warning then reads instead of listing them again."""
    if config.backend is not None:
        return config, _refuse_a_copy(common, config)
    if common.plugin_backend is not None or not _net_admin():
        return config, None
    from dataclasses import replace

    # The container's cached config first: the plugin's ADD was given it, and its DEL
    # looks in that backend alone, whatever rules are left (after a flush, none).
    cached = _cached_backend(common, config)
    if cached == Backend.IPTABLES:
        return replace(config, backend=cached), None
    if cached == Backend.NFTABLES:
        from portmapctl.ops.nft import configured_there

        if _key_ignored(common, config):
            out.message(
                f"{configured_there(config)}, but its chain {dnat_chain_name(config)} is in"
                " iptables and it has no rule in nftables: the plugin that added it ignores"
                " the key (plugins before v1.6 do), so it goes to iptables, where its DEL looks"
            )
            return replace(config, backend=Backend.IPTABLES), None
        return _goes_to_nftables(config, out, configured_there(config)), None
    from portmapctl.errors import PortmapctlError
    from portmapctl.host.netns import entered
    from portmapctl.iptables.access.nfmsg import tables_present
    from portmapctl.nftables import TABLE

    try:
        with entered(common.netns):
            # Every family of its addresses, --family or not (as _plugin_tables): its
            # IPv4 rules in nftables keep its IPv6 ones there too.
            present = tables_present(list(config.families), TABLE)
            if not present:
                return config, None
            # (Imported only here: the usual iptables node never loads nft's access.)
            from portmapctl.nftables.access import NftUnusable
            from portmapctl.nftables.access.nft import RealNft

            try:
                live = RealNft().read(present)
            except NftUnusable as err:
                from portmapctl.ops.nft import cannot_tell

                raise _CannotTell(cannot_tell(config, err)) from None
            if not _kept_in_nftables(common, config, live):
                return config, live
    except _CannotTell:
        raise
    except PortmapctlError:
        return config, None  # (add meets it again, and says so in its usual order)
    from portmapctl.ops.nft import kept_there

    return _goes_to_nftables(config, out, kept_there(config)), None


def _refuse_a_copy(common: Common, config: MappingConfig) -> Any:
    """Nothing written, in a dry run as for real, where add was told a backend
    (--backend, a --cni-config's key) and the container's plugin keeps it in the
    other one: a copy would map it in both backends, and the plugin's DEL cleans one
    alone. Refused as check --repair refuses such a copy (ops/check/followed.py: exit
    2, the backend given is what stops it). Where the plugin keeps it: its cached
    config's `backend` key (its DEL is given that config), except a "nftables" its
    plugin ignored (a plugin before v1.6: its chain in iptables, no rule in nftables,
    as ops/nft.py key_ignored judges); without the key, where its rules are
    (nftables/node.py choose): its chain in iptables (its network's, by name), or
    rules in the plugin's nftables tables DNATing to its address and no such chain
    (in both: iptables, the plugin's choice where iptables works).
    Returns the plugin's nftables tables as read for an iptables add (None: not read),
    which its contested warning then reads instead of listing them again."""
    if not _net_admin():
        return None
    # (ops/nft.py imported only where it is used: it pulls in nftables' modules, ~20 ms
    # on every iptables add of a node with no plugin nftables table.)
    cached = _cached_backend(common, config)
    if cached == Backend.IPTABLES and config.backend == Backend.NFTABLES:
        from portmapctl.ops.nft import configured_there

        raise _kept_elsewhere(common, config, configured_there(config, cached))
    chain = dnat_chain_name(config)
    if cached == Backend.NFTABLES == config.backend and _key_ignored(common, config):
        ignored = (
            f"{config.network}/{config.container_id}: its chain {chain} is in iptables, no"
            ' rule of it in nftables: its plugin ignores its cached "backend": "nftables"'
            " (plugins before v1.6 do)"
        )
        raise _kept_elsewhere(common, config, ignored)
    if cached == config.backend:
        return None
    if config.backend == Backend.NFTABLES:
        where = _chain_in_iptables(common, config, chain)
        if where is not None:
            who = f"{config.network}/{config.container_id}"
            raise _kept_elsewhere(common, config, f"{who}: its chain {chain} is in {where}")
        return None
    live = _plugin_tables(common, config)
    if live is None and cached is None:
        return None  # (the usual iptables add: nothing of it in nftables)
    from portmapctl.ops.nft import configured_there, has_rules_for, kept_there

    in_nft = live is not None and has_rules_for(config, live)
    if cached == Backend.NFTABLES:
        if in_nft or _chain_in_iptables(common, config, chain) is None:
            raise _kept_elsewhere(common, config, configured_there(config, cached))
    elif in_nft and _chain_in_iptables(common, config, chain) is None:
        raise _kept_elsewhere(common, config, kept_there(config))
    return live


def _cached_backend(common: Common, config: MappingConfig) -> Optional[Backend]:
    """The `backend` key of the container's cached config on this network (None: no
    entry, or no key); cni/cache.py's imports only for a container that has an entry."""
    from portmapctl.cni.entries import entry_paths

    paths = entry_paths(common.cache_dirs, config.network, config.container_id)
    if not paths:
        return None
    from portmapctl.cni.cache import backend_in

    return backend_in(paths, config.network, config.container_id)


def _key_ignored(common: Common, config: MappingConfig) -> bool:
    """Whether the plugin that added the container ignored its cached `"backend":
    "nftables"` (plugins before v1.6 take it for an unknown key, Debian's 1.1.1 among
    them): its chain is in iptables and no rule of it in the plugin's nftables tables
    DNATs to its address, as check judges it (ops/nft.py key_ignored). Its CHECK and
    DEL look in iptables: a copy in nftables would outlive it. Where nft cannot read
    the tables, add stops (nft's own error, exit 3), as it would writing there."""
    from portmapctl.ops.nft import has_rules_for

    if _chain_in_iptables(common, config, dnat_chain_name(config)) is None:
        return False  # (the usual nftables container: one `iptables -S CHAIN`)
    live = _plugin_tables(common, config, strict=True)
    return live is None or not has_rules_for(config, live)


def _plugin_tables(common: Common, config: MappingConfig, strict: bool = False) -> Any:
    """The plugin's nftables tables of the container's families, read where they exist
    (one netlink question each first); None where there are none, or nft cannot read
    them (`strict`: that error instead): the backend was given, as cannot_tell bids
    where that cannot be told."""
    from portmapctl.errors import PortmapctlError
    from portmapctl.host.netns import entered
    from portmapctl.iptables.access.nfmsg import tables_present
    from portmapctl.nftables import TABLE

    # Every family of its addresses, --family or not: the plugin keeps a container in
    # one backend, so its IPv4 rules there hold its IPv6 ones there too (a copy of one
    # family alone is still a copy).
    try:
        with entered(common.netns):
            present = tables_present(list(config.families), TABLE)
            if not present:
                return None
            from portmapctl.nftables.access.nft import RealNft

            return RealNft().read(present)
    except PortmapctlError:
        if strict:
            raise
        return None  # (NftUnusable among them)


def _kept_elsewhere(common: Common, config: MappingConfig, elsewhere: str) -> BadInput:
    """_refuse_a_copy's line, in check --repair's words for the same (`elsewhere`:
    where the plugin keeps the container), and what to give instead: without a
    backend, add follows the container (_followed)."""
    if common.plugin_backend is not None:
        told, instead = f"--backend {config.backend.value}", "add it without --backend"
    else:  # (the --cni-config's own key)
        told = f'its config\'s "backend": "{config.backend.value}"'
        instead = 'give its config no "backend" key: add follows it'
    return BadInput(
        f"{elsewhere}, so the plugin keeps it there: add under {told} would write a copy"
        " that its plugin never reads nor deletes (the container mapped in both backends);"
        f" nothing changed ({instead})"
    )


def _chain_in_iptables(common: Common, config: MappingConfig, chain: str) -> Optional[str]:
    """Where the container's chain is: the iptables nat table add would read (one
    `iptables -S CHAIN` per family where it can: a save of the whole table elsewhere),
    else the other flavour's (the plugin ran with it: the `iptables` alternative
    switched since; looked for only where that flavour has a nat table, asked without
    creating one, ops/flavour_guard.py). None where it is in neither, or iptables
    cannot be read: there the plugin cannot use it either."""
    from portmapctl.cli._common import families
    from portmapctl.errors import PortmapctlError
    from portmapctl.host.netns import entered
    from portmapctl.iptables.access import open_backend
    from portmapctl.iptables.access.restore import RestoreBackend
    from portmapctl.ops.flavour_guard import flavours_of, other_flavour

    # Both families, those add writes first: the chain's name is its container's on its
    # network in either, and its plugin keeps it in one backend whatever the family
    # (`add --family 6` of a container whose chain is IPv4's wrote an nftables copy).
    wanted = [f for f in config.families if f in families(common.family)]
    wanted += [f for f in (4, 6) if f not in wanted]
    try:
        with entered(common.netns):
            backend = open_backend(common.iptables, families=wanted)
            has_table = getattr(backend, "has_nat_table", lambda _family: True)
            list_chain = getattr(backend, "list_chain", None)
            for family in wanted:
                if not has_table(family):
                    continue
                if list_chain is not None:
                    if list_chain(family, chain) is not None:
                        return "iptables"
                elif backend.read(family).has_chain(chain):
                    return "iptables"
            for family, used in (flavours_of(backend, wanted) or {}).items():
                other = RestoreBackend(other_flavour(used))
                if not other.has_nat_table(family) or not other.installed(family):
                    continue
                if other.list_chain(family, chain) is not None:
                    return f"the iptables-{other_flavour(used)} tables"
    except PortmapctlError:
        return None
    return None


def _goes_to_nftables(config: MappingConfig, out: Output, why: str) -> MappingConfig:
    """`config` bound for nftables, where `why` says the plugin keeps its container,
    with the note that says so; one line and nothing written when nftables refuses it
    (the user asked for no backend)."""
    from dataclasses import replace

    from portmapctl.core.validate import nft_refusals

    try:
        nft_refusals(config)
    except BadInput as err:
        # (No "give --backend iptables": a copy there is refused, _refuse_a_copy.)
        raise BadInput(f"{why}, so it goes to nftables, which refuses it: {err}") from None
    out.message(f"{why}, so the plugin keeps it there: it goes to nftables")
    return replace(config, backend=Backend.NFTABLES)


class _CannotTell(HostProblem):
    """The plugin's nftables tables are here and nft cannot read them (exit 3)."""


def _kept_in_nftables(common: Common, config: MappingConfig, live: Any) -> bool:
    from portmapctl.iptables.access import open_backend
    from portmapctl.ops.nft import kept_in_nftables

    name = dnat_chain_name(config)

    def in_iptables() -> bool:
        # Its chain in either family: the plugin keeps it in one backend for both.
        wanted = list(config.families)
        backend = open_backend(common.iptables, families=wanted)
        has_table = getattr(backend, "has_nat_table", lambda _family: True)
        return any(backend.read(f).has_chain(name) for f in wanted if has_table(f))

    return kept_in_nftables(config, live, in_iptables)


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
    `nft_live`: the plugin's nftables tables as _followed read them (None: not read).
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
            # (The tables as before: a re-added mapping keeps its rules' place.)
            live = node.read_nft()
            clashes = nft_shadow_warnings(config, live)
            clashes += contest_warnings(node, config)
            clashes += other_flavour_warnings(node, config)
            clashes += hook_warnings(node, config, live)
            result = add(node, config, dry_run=dry_run, flush_udp=not no_flush_udp, owed=owed)
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
) -> None:
    from portmapctl import render

    for warning in clashes:
        out.warn(warning)
    for warning in result.warnings:
        out.warn(warning)
    _cache_note(common, out)
    if out.json:
        out.print_json(render.add_json(result, common.cache().json(), clashes))
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


def _cache_note(common: Common, out: Output) -> None:
    """SPEC §3's note of a missing or empty cache (add follows a container's cached
    backend and refuses its short ID by it): a glance at results/, not a count."""
    from portmapctl.cli._common import cache_glance

    out.cache_note(cache_glance(common.cache_dirs, given=bool(common.cni_cache_dir)))


def _report_nothing(common: Common, out: Output, why: str, dry_run: bool) -> None:
    """add of a config the plugin's ADD returns from at once: nothing written, exit 0."""
    from portmapctl import render
    from portmapctl.ops.add import AddResult

    _cache_note(common, out)
    if out.json:
        result = AddResult(dry_run=dry_run, changed=False, chains=(), transactions={})
        out.print_json(render.add_json(result, common.cache().json()))
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

    if config.backend == Backend.NFTABLES or not _net_admin():
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


def _net_admin() -> bool:
    """CAP_NET_ADMIN in the effective set (False when unsure: then nothing starts
    ahead, and add's own check speaks)."""
    from portmapctl.host.privilege import CAP_NET_ADMIN, effective

    return effective(CAP_NET_ADMIN) is True
