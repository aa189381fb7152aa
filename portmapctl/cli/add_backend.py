"""Which backend `portmapctl add` writes in: the one the container's plugin keeps it
in. Given none, add follows the container (its cached config's `backend` key, else
where its rules are); given one (--backend, a --cni-config's key) that its plugin does
not use for it, add refuses: a copy would map the container in both backends, and the
plugin's DEL cleans one alone. Asked before add's write starts (cli/add_run.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Tuple

from portmapctl.cni.entries import CachedKey
from portmapctl.core.backend import Backend
from portmapctl.errors import BadInput, HostProblem
from portmapctl.iptables.chains import dnat_chain_name

if TYPE_CHECKING:
    from portmapctl.cli._common import Common
    from portmapctl.cli.output import Output
    from portmapctl.core.mapping import MappingConfig


@dataclass(frozen=True)
class Followed:
    """followed's answer."""

    config: MappingConfig  # with the backend it goes to (None: as given, the default)
    # The plugin's nftables tables as read for it (None: not read), which the contested
    # warning then reads instead of listing them again.
    nft_live: Any = None
    # The warnings said of the cache entries read for it (another container's that
    # cannot be read): add's JSON `warnings` holds them too.
    warned: Tuple[str, ...] = ()


def followed(
    common: Common,
    config: MappingConfig,
    out: Output,
    keyed: bool = False,
    ifname: Optional[str] = None,
) -> Followed:
    """A mapping without a `backend` key (under --backend auto) goes where the plugin
    keeps its container: the backend its cached config names (cni/cache.py
    configured_key), else nftables when its rules are in the plugin's tables alone
    (ops/nft.py kept_in_nftables), with a note; else as given. Where its own cache
    entry cannot be read, where its rules are decide, or nothing is written
    (_unread_followed). Asked before the write starts; the rules only where a
    `cni_hostport` table exists (one netlink question elsewhere).
    `keyed`: the backend `config` holds is its --cni-config's own key
    (mapping_and_key), else --backend's. `ifname`: the interface it is given for."""
    if not net_admin():
        return Followed(config)
    key = _cached_key(common, config, ifname)
    for warning in key.skipped:
        out.warn(warning)
    shared_unread = key.unread is not None or bool(key.others_unread)
    if config.backend is not None:
        if shared_unread and config.backend == Backend.IPTABLES:
            # Every family first, before anything is written (the write ahead included):
            # ops/add.py finds the chain family by family, and a family without it (its
            # table flushed) went in before another's stopped the add.
            _stop_where_shared(common, config, ifname)
        return Followed(config, _refuse_a_copy(common, config, key.backend, keyed), key.skipped)
    if common.plugin_backend is not None:
        return Followed(config, None, key.skipped)
    if key.unread is not None:
        followed_to = _unread_followed(common, config, out, key.unread, ifname)
        return Followed(followed_to, None, key.skipped)
    if shared_unread:
        # Its own entry read, another interface's not: its key decides, but the chain
        # they share is judged for every family first, as above.
        _stop_where_shared(common, config, ifname)
    config, live = _followed(common, config, out, key.backend)
    return Followed(config, live, key.skipped)


def _followed(
    common: Common, config: MappingConfig, out: Output, cached: Optional[Backend]
) -> Tuple[MappingConfig, Any]:
    """followed of a mapping without a backend whose cached config's key is `cached`
    (None: no entry, or no key)."""
    from dataclasses import replace

    # The container's cached config first: the plugin's ADD was given it, and its DEL
    # looks in that backend alone, whatever rules are left (after a flush, none).
    if cached == Backend.IPTABLES:
        return replace(config, backend=cached), None
    if cached == Backend.NFTABLES:
        from portmapctl.ops.nft_words import FollowedBy, configured_there, key_followed_to_iptables

        where = _key_ignored(common, config)
        if where is not None:
            said = configured_there(config)
            out.message(key_followed_to_iptables(config, where, said, FollowedBy.ADD))
            return replace(config, backend=Backend.IPTABLES), None
        return _goes_to_nftables(config, out, configured_there(config)), None
    from portmapctl.errors import PortmapctlError
    from portmapctl.host.netns import entered

    try:
        live = _plugin_tables(common, config, strict=True)
    except PortmapctlError as err:
        # (Imported only here: the usual iptables node never loads nft's access.)
        from portmapctl.nftables.access import NftUnusable

        if isinstance(err, NftUnusable):
            from portmapctl.ops.nft_words import cannot_tell

            raise HostProblem(cannot_tell(config, err)) from None
        return config, None  # (add meets it again, and says so in its usual order)
    if live is None:
        return config, None
    try:
        with entered(common.netns):
            if not _kept_in_nftables(common, config, live):
                return config, live
    except PortmapctlError:
        return config, None
    from portmapctl.ops.nft_words import kept_there

    return _goes_to_nftables(config, out, kept_there(config)), None


def _unread_followed(
    common: Common, config: MappingConfig, out: Output, unread: str, ifname: Optional[str]
) -> MappingConfig:
    """followed of a mapping without a backend whose own cache entry cannot be read
    (`unread`: why): its key, which its plugin was given, is not known, so where its
    rules are decides (ops/nft.py unread_key_verdict), with a note; where they do not,
    nothing is written (HostProblem, exit 3, the dry run too), as when the plugin's
    tables cannot be read (the same line: nft's error)."""
    from dataclasses import replace

    from portmapctl.errors import PortmapctlError
    from portmapctl.ops.nft import unread_key_verdict
    from portmapctl.ops.nft_words import chain_there, kept_there

    # Stopped before the note below (else two lines).
    where = _stop_where_shared(common, config, ifname)
    try:
        live = _plugin_tables(common, config, strict=True)
    except PortmapctlError as err:
        raise HostProblem(
            f"{config.network}/{config.container_id}: its CNI cache entry cannot"
            f" be read ({unread}); {err}"
        ) from None
    if unread_key_verdict(config, unread, where, live) == Backend.NFTABLES:
        return _goes_to_nftables(config, out, f"{kept_there(config)} (its cache entry unread)")
    out.message(
        f"{chain_there(config, where or 'iptables')} and it has no rule in nftables, so the"
        " plugin keeps it there whatever its cache entry, which cannot be read, says: it"
        " goes to iptables"
    )
    return replace(config, backend=Backend.IPTABLES)


def _stop_where_shared(
    common: Common, config: MappingConfig, ifname: Optional[str] = None
) -> Optional[str]:
    """Where the container's chain is in iptables, in any family (_chain_in_iptables),
    when another entry of its container on the network reads beside its unread one;
    else ChainInDoubt (exit 3, nothing written): the one unread may be that interface's,
    whose live rules the chain holds (a Multus pod on one network twice). Judged as the
    node's repair and ops/add.py judge it (unread_entries.stop_where_held): a chain
    holding nothing the write does not make (a flush emptied it) loses nothing. Asked
    for every family at once, before any is written (ops/add.py stops a write into the
    chain too, family by family). `ifname`: the interface `config` is given for."""
    name = dnat_chain_name(config)
    where = _chain_in_iptables(common, config, name)
    if where is not None:
        from portmapctl.cni.cache import pair_entries
        from portmapctl.ops.check.unread_entries import stop_where_unread, unread_pairs

        entries = pair_entries(common.cache_dirs, config.network, config.container_id)
        if (config.network, config.container_id) not in unread_pairs(entries):
            return where
        from portmapctl.ops.chain_place import ChainPlace

        # (Found in the flavour add reads: the other's tables are not read here.)
        used = where == ChainPlace().words
        tables = _tables_holding(common, config, name) if used else None
        if tables is None:
            stop_where_unread(config, entries)  # (unread, or the other flavour's: in doubt)
            return where
        from portmapctl.ops.check.unread_entries import own_unread_only

        if own_unread_only(config, entries, ifname):
            return where  # (its own alone: ops/add.py keeps what the chain holds)
        from portmapctl.ops.check.expected import sharing_chain
        from portmapctl.ops.check.unread_entries import stop_where_held

        sharing = sharing_chain(config, entries, ifname)
        for live in tables:
            stop_where_held(config, entries, sharing, live)
    return where


def _tables_holding(common: Common, config: MappingConfig, name: str) -> Optional[list]:
    """The nat tables of the flavour add reads that hold chain `name`, in either family
    (as _chain_in_iptables asks); None where one cannot be read."""
    from portmapctl.errors import PortmapctlError
    from portmapctl.host.netns import entered
    from portmapctl.iptables.access import open_backend

    wanted = [f for f in (4, 6) if f in config.families] + [
        f for f in (4, 6) if f not in config.families
    ]
    try:
        with entered(common.netns):
            backend = open_backend(common.iptables, families=wanted)
            has_table = getattr(backend, "has_nat_table", lambda _family: True)
            read = [backend.read(f) for f in wanted if has_table(f)]  # type: ignore[attr-defined]
    except PortmapctlError:
        return None
    return [live for live in read if live.has_chain(name)]


def _refuse_a_copy(
    common: Common, config: MappingConfig, cached: Optional[Backend], keyed: bool = False
) -> Any:
    """Nothing written, in a dry run as for real, where add was told a backend
    (--backend, a --cni-config's key) and the container's plugin keeps it in the
    other one: a copy would map it in both backends, and the plugin's DEL cleans one
    alone. Refused as check --repair refuses such a copy (ops/check/followed.py: exit
    2, the backend given is what stops it). Where the plugin keeps it: its cached
    config's `backend` key (its DEL is given that config), except a "nftables" its
    plugin ignored (a plugin before v1.6: its chain in iptables, no rule in nftables,
    as ops/nft.py key_verdict judges; where that cannot be told, add stops, exit 3:
    _ignored_in); without the key, where its rules are
    (nftables/node.py choose): its chain in iptables (its network's, by name), or
    rules in the plugin's nftables tables DNATing to its address and no such chain
    (in both: iptables, the plugin's choice where iptables works). A --cni-config's
    own key "nftables" (`keyed`) is what the runtime gives the plugin: every plugin
    from v1.6 on keeps the container in nftables by it, whatever else iptables holds
    (a leaked copy of an older plugin's ADD), so it is refused only where its plugin
    ignored it, as check --repair judges the same config (ops/check/followed.py
    _kept_elsewhere).
    Returns the plugin's nftables tables as read for an iptables add (None: not read),
    which its contested warning then reads instead of listing them again."""
    # (ops/nft.py imported only where it is used: it pulls in nftables' modules, ~20 ms
    # on every iptables add of a node with no plugin nftables table.)
    if cached == Backend.IPTABLES and config.backend == Backend.NFTABLES:
        from portmapctl.ops.nft_words import configured_there

        raise _kept_elsewhere(common, config, configured_there(config, cached))
    chain = dnat_chain_name(config)
    where = _key_ignored(common, config) if cached == Backend.NFTABLES == config.backend else None
    if where is not None:
        from portmapctl.ops.nft_words import ignored_there

        raise _kept_elsewhere(common, config, ignored_there(config, where))
    if cached == config.backend:
        return None
    if config.backend == Backend.NFTABLES:
        where = _chain_in_iptables(common, config, chain)
        if where is not None and keyed:
            # (Said as it is: "its chain is in iptables, so the plugin keeps it there"
            # sent the operator of a v1.6+ node to iptables, its key dropped.)
            from portmapctl.ops.nft_words import configured_there

            if _no_rule_in_nftables(common, config, where, configured_there(config, cached=False)):
                from portmapctl.ops.nft_words import ignored_there

                raise _kept_elsewhere(common, config, ignored_there(config, where, "its config's"))
            return None
        if where is not None:
            from portmapctl.ops.nft_words import chain_there

            raise _kept_elsewhere(common, config, chain_there(config, where))
        return None
    if cached == Backend.NFTABLES:
        from portmapctl.ops.nft_words import configured_there

        # Kept in iptables only where its plugin ignored the key (its chain there, no
        # rule in nftables, and that absence tells); where that cannot be told, stopped.
        # The tables read strictly, as _key_ignored reads them: a table nft could not
        # read was taken for none, "the key ignored", and the iptables add went in.
        where = _chain_in_iptables(common, config, chain)
        if where is None:
            _nothing_left_in_doubt(common, config)
        live = None if where is None else _plugin_tables(common, config, strict=True)
        if where is None or not _ignored_in(config, live, where, configured_there(config)):
            raise _kept_elsewhere(common, config, configured_there(config, cached))
        return live
    live = _plugin_tables(common, config)
    if live is None and cached is None:
        return None  # (the usual iptables add: nothing of it in nftables)
    from portmapctl.ops.nft import has_rules_for
    from portmapctl.ops.nft_words import kept_there

    in_nft = live is not None and has_rules_for(config, live)
    if in_nft and _chain_in_iptables(common, config, chain) is None:
        raise _kept_elsewhere(common, config, kept_there(config))
    return live


def _cached_key(common: Common, config: MappingConfig, ifname: Optional[str]) -> CachedKey:
    """What the container's cache entries on this network say of its `backend` key
    (cni/cache.py CachedKey); cni/cache.py's imports only for a container that has an
    entry."""
    from portmapctl.cni.entries import entry_paths

    paths = entry_paths(common.cache_dirs, config.network, config.container_id)
    if not paths:
        return _NO_ENTRY
    from portmapctl.cni.cache import key_in

    return key_in(paths, config.network, config.container_id, ifname)


_NO_ENTRY = CachedKey()


def _key_ignored(common: Common, config: MappingConfig) -> Optional[str]:
    """Where its chain is (_chain_in_iptables' words) when the plugin that added the
    container ignored its cached `"backend": "nftables"` (plugins before v1.6 take it
    for an unknown key, Debian's 1.1.1 among them), else None: its chain is in
    iptables, either flavour, and no rule of it in the plugin's nftables tables
    DNATs to its address, as check judges it (_no_rule_in_nftables). Its CHECK and
    DEL look in iptables: a copy in nftables would outlive it. Where nft cannot read
    the tables, add stops (nft's own error, exit 3), as it would writing there; so it
    does where nothing of it is left and that puts it in doubt (_nothing_left_in_doubt)."""
    where = _chain_in_iptables(common, config, dnat_chain_name(config))
    if where is None:
        _nothing_left_in_doubt(common, config)
        return None  # (the usual nftables container: one `iptables -S CHAIN`, one nft read)
    from portmapctl.ops.nft_words import configured_there

    return where if _no_rule_in_nftables(common, config, where, configured_there(config)) else None


def _nothing_left_in_doubt(common: Common, config: MappingConfig) -> None:
    """Stops (HostProblem, exit 3: the node's state stops it, as _ignored_in does),
    nothing written, where the container's cached config says `"backend": "nftables"`,
    its chain is in no iptables, and the node's check puts it in doubt (check's
    followed_entries.entry_in_doubt: nothing of it left, and nothing on the node tells
    that its plugin honours the key). add went by its key and wrote it into nftables,
    a copy that a plugin before v1.6 (which ignores the key) never deletes."""
    from portmapctl.ops.nft import has_rules_for

    live = _plugin_tables(common, config)
    if live is not None and has_rules_for(config, live):
        return  # (the usual nftables container: no node opened, no cache read)
    from portmapctl.ops.check.followed_entries import entry_in_doubt
    from portmapctl.ops.node import opened

    with opened(common.node_options()) as node:
        doubt = entry_in_doubt(node, config, seen=live)
    if doubt is not None:
        raise HostProblem(doubt)


def _no_rule_in_nftables(common: Common, config: MappingConfig, where: str, said: str) -> bool:
    """_key_ignored's second half, its chain found in iptables (`where`): no rule of
    the container in the plugin's nftables tables DNATs to its address, and that
    absence tells (_ignored_in; `said`: where its key was read)."""
    return _ignored_in(config, _plugin_tables(common, config, strict=True), where, said)


def _ignored_in(config: MappingConfig, live: Any, where: str, said: str) -> bool:
    """ops/nft.py key_ignored_in, as check of one mapping asks it: whether the plugin's
    nftables tables as read (`live`; None: there are none) say that the plugin that
    added the container, its chain in iptables (`where`), ignored its key "nftables";
    where that cannot be told, add stops (HostProblem, exit 3: the node's state stops
    it, as cannot_tell does; `said`: where its key was read)."""
    from portmapctl.ops.nft import key_ignored_in

    return key_ignored_in(config, live, where, lambda: said)


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
    backend, add follows the container (followed)."""
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
    """Where the container's chain is in iptables, in either flavour (ops/chain_place.py,
    check's question too), as add's refusals and notes say it; None where it is in
    neither, or iptables cannot be read: there the plugin cannot use it either."""
    from portmapctl.cli._common import families
    from portmapctl.errors import PortmapctlError
    from portmapctl.host.netns import entered
    from portmapctl.iptables.access import open_backend
    from portmapctl.ops.chain_place import chain_place

    # Both families, those add writes first: the chain's name is its container's on its
    # network in either, and its plugin keeps it in one backend whatever the family
    # (`add --family 6` of a container whose chain is IPv4's wrote an nftables copy).
    wanted = [f for f in config.families if f in families(common.family)]
    wanted += [f for f in (4, 6) if f not in wanted]
    try:
        with entered(common.netns):
            found = chain_place(open_backend(common.iptables, families=wanted), wanted, chain)
    except PortmapctlError:
        return None
    return None if found is None else found.words


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


def _kept_in_nftables(common: Common, config: MappingConfig, live: Any) -> bool:
    """ops/nft.py kept_in_nftables for add (entered in --netns): its chain looked for in
    the flavour add reads, in either family (the plugin keeps it in one backend for
    both), by one question each (ops/chain_place.py in_flavour_used: on iptables-nft the
    kernel, so a nat table iptables-nft-save cannot show is searched too)."""
    from portmapctl.iptables.access import open_backend
    from portmapctl.ops.chain_place import in_flavour_used
    from portmapctl.ops.nft import kept_in_nftables

    def in_iptables() -> bool:
        wanted = list(config.families)
        backend = open_backend(common.iptables, families=wanted)
        return in_flavour_used(backend, wanted, dnat_chain_name(config))

    return kept_in_nftables(config, live, in_iptables)


def net_admin() -> bool:
    """CAP_NET_ADMIN in the effective set (False when unsure: then nothing starts
    ahead, and add's own check speaks)."""
    from portmapctl.host.privilege import CAP_NET_ADMIN, effective

    return effective(CAP_NET_ADMIN) is True
