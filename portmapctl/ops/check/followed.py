"""Which backend a mapping given on the command line is checked and repaired in
(`check` of one mapping, its `--repair`): the one the plugin keeps its container in,
as its cached config, else its rules, say; or --backend's, said to be elsewhere when
the plugin keeps it elsewhere (`--repair` then writes nothing)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Collection, Dict, Iterable, Mapping, Optional, Sequence, Tuple

from portmapctl.core import validate
from portmapctl.core.backend import Backend
from portmapctl.core.mapping import MappingConfig
from portmapctl.core.text import name_text
from portmapctl.errors import BadInput, HostProblem, PortmapctlError
from portmapctl.iptables.chains import dnat_chain_name
from portmapctl.ops.node import Node

if TYPE_CHECKING:
    from portmapctl.iptables.ruleset import NatTable


def followed(
    node: Node,
    config: MappingConfig,
    writing: bool = False,
    forced: bool = False,
    ifname: Optional[str] = None,
) -> Tuple[MappingConfig, Tuple[str, ...]]:
    """`config` with the backend the plugin keeps its container in, where the command
    line said none and --backend is auto (the one its cached config names, else
    ops/nft.py kept_in_nftables: its rules are in the plugin's nftables tables alone),
    with the note that says so; else as given (_as_given).
    Where the plugin's tables exist and nft cannot read them, `writing` (--repair)
    stops (HostProblem): an iptables copy of a container kept there would map it twice;
    a check says so in a note.
    `forced`: the backend `config` holds is --backend's, given with the mapping options
    (no config key); else a backend it holds is its --cni-config's key. `ifname`:
    the interface it is given for (cni/cache.py key_in: another interface's unread
    entry is not its own)."""
    if config.backend is not None:
        return _as_given(node, config, writing, forced)
    if node.options.backend is not None or node.nft is None:
        return config, ()
    from portmapctl.cni.cache import configured_key

    # The container's cached config first: the plugin's CHECK is given it, and looks in
    # that backend alone, whatever rules are left.
    key = configured_key(node.options.cache_dirs, config.network, config.container_id, ifname)
    if key.unread is not None:
        return _unread_followed(node, config, key.unread)
    cached = key.backend
    if cached == Backend.IPTABLES:
        return replace(config, backend=cached), ()
    if cached == Backend.NFTABLES:
        from portmapctl.ops.nft_words import FollowedBy, configured_there, key_followed_to_iptables

        where = _key_ignored(node, config)
        if where is not None:
            # As the node's check (followed_entries.follow_the_plugin): where its plugin
            # keeps it.
            said = configured_there(config)
            note = key_followed_to_iptables(config, where, said, FollowedBy.CHECK)
            return replace(config, backend=Backend.IPTABLES), (note,)
        return replace(config, backend=cached), (_checked_in_nftables(configured_there(config)),)
    families = validate.chosen_families(config, node.families, "check")
    if not _plugin_tables_may_exist(node, families):
        return config, ()  # the usual iptables node: one netlink question, no nft run
    live = node.read_nft()
    from portmapctl.ops.nft import kept_in_nftables
    from portmapctl.ops.nft_words import cannot_tell, kept_there

    if node.nft_unusable is not None and isinstance(node.nft, _real_nft()):
        if writing:
            raise HostProblem(cannot_tell(config, node.nft_unusable))
        return config, (
            f"the plugin's nftables tables are here but nft cannot read them"
            f" ({node.nft_unusable}): {name_text(config.network)}/"
            f"{name_text(config.container_id)} was checked"
            " in iptables, where the plugin keeps it unless its config says nftables",
        )
    if not live.tables:
        return config, ()

    def in_iptables() -> bool:
        return _in_node_iptables(node, families, dnat_chain_name(config))

    if not kept_in_nftables(config, live, in_iptables, node.options.keyless):
        return config, ()
    return replace(config, backend=Backend.NFTABLES), (_checked_in_nftables(kept_there(config)),)


def _as_given(
    node: Node, config: MappingConfig, writing: bool, forced: bool
) -> Tuple[MappingConfig, Tuple[str, ...]]:
    """`followed` of a mapping whose backend was given: --backend's (`forced`), or its
    --cni-config's key (with --backend or not). A key "nftables" its plugin ignored
    (_key_ignored) is followed to iptables under auto, with a note, as a cached one is.
    Otherwise, where that is not where the plugin keeps the container (_kept_elsewhere:
    its cached config first, whose key its CHECK and DEL are given), a check looks there
    and says so, and `writing` stops (BadInput): a copy there is one its plugin neither
    reads nor deletes. A key was taken at its word before, and --repair wrote that copy."""
    assert config.backend is not None  # (`followed` asks only then)
    keyed = not forced
    asked = keyed and config.backend == Backend.NFTABLES
    ignored = _key_ignored(node, config) if asked else None
    if ignored is not None and node.options.backend is None:
        # Its config (--cni-config) says nftables: as its cached one would, below.
        from portmapctl.ops.nft_words import FollowedBy, configured_there, key_followed_to_iptables

        said = configured_there(config, cached=False)
        note = key_followed_to_iptables(config, ignored, said, FollowedBy.CHECK)
        return replace(config, backend=Backend.IPTABLES), (note,)
    elsewhere = _kept_elsewhere(node, config, config.backend, keyed, ignored, asked)
    if elsewhere is None:
        return config, ()
    if node.options.backend is not None:
        told, as_told = f"--backend {config.backend}", "--backend"  # (the note's words)
    else:
        told = as_told = f'its config\'s "backend": "{config.backend}"'
    if writing:
        if not keyed or ignored is not None:
            instead = "check it without --backend"  # (followed there, as under auto)
        else:
            instead = 'check it with a config without the "backend" key'
            if node.options.backend is not None:
                instead += ", and without --backend"
        raise BadInput(
            f"{elsewhere}, so the plugin keeps it there: --repair under {told} would write"
            f" a copy that its plugin never reads nor deletes; nothing changed ({instead})"
        )
    return config, (
        f"{elsewhere}, so the plugin keeps it there: checked in {config.backend} as"
        f" {as_told} says, where --repair writes nothing for it",
    )


class KeyInDoubt(HostProblem):
    """Whether the plugin that added a container (its config saying `"backend":
    "nftables"`, its chain in iptables, no rule of it in nftables) ignored the key
    cannot be told: the plugin's table is here but not as a plugin leaves it (ops/nft.py
    key_verdict). A --repair stops on it (exit 3: the node's state stops it, as
    cannot_tell does), writing nothing in either backend; a check catches it and
    judges the mapping as the node's check does (run.check_mapping), in `judged_in`
    (None: the backend the plugin takes without a key)."""

    judged_in: Optional[Backend] = Backend.NFTABLES  # (where its key says)


class EntryInDoubt(KeyInDoubt):
    """The container's own cache entry cannot be read, and where its rules are does not
    tell which backend its plugin keeps it in (ops/nft.py unread_key_verdict): as
    KeyInDoubt, a check judging it where the plugin goes without a key."""

    judged_in = None


def _unread_followed(
    node: Node, config: MappingConfig, unread: str
) -> Tuple[MappingConfig, Tuple[str, ...]]:
    """`followed` of a mapping without a backend whose own cache entry cannot be read
    (`unread`: why): where its rules are decides (unread_key_verdict), with a note;
    where they do not, EntryInDoubt (a --repair writes nothing). The tables read
    strictly, as _key_ignored reads them: where nft cannot, its error (exit 3)."""
    from portmapctl.ops.nft import unread_key_verdict
    from portmapctl.ops.nft_words import chain_there, kept_there

    families = validate.chosen_families(config, node.families, "check")
    where = chain_in_iptables(node, families, dnat_chain_name(config))
    live = node.read_nft_evidence(strict=True)
    if unread_key_verdict(config, unread, where, live, EntryInDoubt) == Backend.NFTABLES:
        why = f"{kept_there(config)} (its cache entry unread)"
        return replace(config, backend=Backend.NFTABLES), (_checked_in_nftables(why),)
    note = (
        f"{chain_there(config, where or 'iptables')} and it has no rule in nftables, so the"
        " plugin keeps it there whatever its cache entry, which cannot be read, says:"
        " checked in iptables"
    )
    return replace(config, backend=Backend.IPTABLES), (note,)


def _key_ignored(node: Node, config: MappingConfig) -> Optional[str]:
    """Where the chain is (chain_in_iptables' words) when the plugin that added this
    container (its config saying `"backend": "nftables"`) ignored the key: its chain is
    in iptables, either flavour, no rule of it in nftables, and that absence tells
    (ops/nft.py key_verdict, as the node's check judges a cache entry); None when it
    did not. KeyInDoubt where that cannot be told: "no rule in nftables" in a flushed
    table was taken for the key ignored, and --repair wrote an iptables entry rule a
    v1.9.1 plugin never reads. Its chain in no iptables and no rule of it in nftables
    (nothing of it left): KeyInDoubt where the node's check puts its cache entry in
    doubt (followed_entries.entry_in_doubt), else None (kept by its key).
    Asked under --backend nftables too, where the host's iptables is read for it: a
    --repair there would write a copy its plugin never deletes. A container kept in
    nftables (the usual case) costs one netlink question on an iptables-nft node, no
    process."""
    if node.options.offline:
        return None
    families = validate.chosen_families(config, node.families, "check")
    where = chain_in_iptables(node, families, dnat_chain_name(config))
    if where is None:
        from portmapctl.ops.check.followed_entries import entry_in_doubt

        # Nothing of it left (nor in nftables): in doubt as the node's check judges it,
        # else kept by its key. Judged by the key alone, --repair wrote it into nftables
        # where its plugin ignored the key, a copy that plugin never deletes.
        doubt = entry_in_doubt(node, config)
        if doubt is not None:
            raise KeyInDoubt(doubt)
        return None
    from portmapctl.ops.nft import key_ignored_in

    # Strictly: tables nft could not read were taken for none, "the key ignored", and
    # --repair wrote the iptables rules of a container its v1.9.1 plugin keeps in
    # nftables. Where they are there and unread, nft's error stops it (exit 3), as add.
    live = node.read_nft_evidence(strict=True)
    ignored = key_ignored_in(config, live, where, lambda: _said(node, config), KeyInDoubt)
    return where if ignored else None


def _said(node: Node, config: MappingConfig) -> str:
    """Where KeyInDoubt's line (the node check's warning, ops/nft_words.py in_doubt_text)
    says its key was read: the cached config, or else the config given (--cni-config)."""
    from portmapctl.cni.cache import configured_backend
    from portmapctl.ops.nft_words import configured_there

    cached = configured_backend(node.options.cache_dirs, config.network, config.container_id)
    return configured_there(config, cached=cached == Backend.NFTABLES)


def chain_in_iptables(node: Node, families: Sequence[int], name: str) -> Optional[str]:
    """Where the host's iptables holds chain `name` in one of `families`, in either
    flavour (ops/chain_place.py, add's question too), in the words add says it
    (ChainPlace.words: "iptables", "the iptables-legacy tables"); None where neither
    does. Under --backend nftables the node reads no iptables (Unread): the host's is
    opened for this; none to open, or its read failing: None (nothing says the plugin
    keeps it there). Offline: a snapshot's own tables only."""
    from portmapctl.ops.chain_place import chain_place

    if node.options.reads_iptables:
        # (The node's own read: failing, it fails as any read of it.)
        found = chain_place(
            node.backend, families, name, read=node.read, other_flavour=not node.options.offline
        )
        return None if found is None else found.words
    if node.options.offline:
        return None
    from portmapctl.iptables.access import open_backend

    try:
        backend = open_backend(node.options.iptables, families=families)
        found = chain_place(backend, families, name)
    except PortmapctlError:
        return None  # (no iptables to read here: nothing says it is kept there)
    return None if found is None else found.words


def _in_node_iptables(node: Node, families: Sequence[int], name: str) -> bool:
    """kept_in_nftables' question: chain `name` in the flavour the node reads (not the
    other: a container with rules in nftables and a chain only there is kept in
    nftables, as the node's check splits it)."""
    from portmapctl.ops.chain_place import in_flavour_used

    return in_flavour_used(node.backend, families, name, read=node.read)


def other_flavour_tables_words(other: str) -> str:
    """How a chain in the other iptables flavour's tables is placed, as add says it
    (ChainPlace.words): "is in iptables" sent people to `iptables -t nat -S`, which
    shows nothing of it where `iptables` is the other flavour."""
    from portmapctl.core.backend import Flavour
    from portmapctl.ops.chain_place import ChainPlace

    return ChainPlace(Flavour(other)).words


class IptablesUnread(Exception):
    """chains_in_iptables could not tell: the host's iptables cannot be read (its
    error's words)."""


def chains_in_iptables(
    node: Node, families: Sequence[int], names: Collection[str]
) -> Dict[str, str]:
    """Those of `names` chain_in_iptables finds, each with where (its words), asked of
    each table once: after a firewall flushed the plugin's nftables rules, every cached
    "nftables" container is asked (followed_entries.follow_the_plugin), and one process
    per chain (a save of the flavour used under legacy, `-S CHAIN` of the other) cost
    1,000 processes on a node of 1,000 containers. Under --backend nftables only (the node
    reads no iptables). IptablesUnread where the flavour used cannot be read (no
    iptables to open, its save failing, and on iptables-nft the kernel not answering
    either): read as none, the plugin's chains were "not there", and a container its
    plugin keeps in iptables was judged v1.6+'s and repaired into nftables. None asked
    of a node read from no kernel (a test's tables in memory: namespace_view None): the
    host's iptables is not that node's."""
    if node.options.offline or not names or node.namespace_view() is None:
        return {}
    try:
        tables = node.read_iptables_evidence(tuple(families), strict=True)
        unread: Optional[BaseException] = None
    except (PortmapctlError, OSError) as err:
        tables, unread = {}, err
    found = chains_in_tables(names, tables.values())
    if len(found) == len(names):
        return found
    from portmapctl.iptables.access import Flavour, open_backend
    from portmapctl.ops.flavour_guard import flavours_of, other_flavour, other_flavour_tables

    try:
        backend = open_backend(node.options.iptables, families=families)
    except (PortmapctlError, OSError) as err:
        raise IptablesUnread(str(err)) from None
    if getattr(backend, "flavour", None) is Flavour.NFT:
        from portmapctl.ops.chain_place import chains_in_kernel

        # The kernel asked as chain_in_iptables asks it (no process): a nat table
        # iptables-nft-save cannot show (a native nft rule in it) read as none, and
        # every chain in it was repaired with an nftables copy its plugin never deletes.
        in_kernel = chains_in_kernel(families, set(names) - set(found))
        if in_kernel is not None:
            unread = None  # (the kernel answered for the save)
        found |= dict.fromkeys(in_kernel or (), "iptables")
    if unread is not None:
        raise IptablesUnread(str(unread))
    try:
        others = other_flavour_tables(backend, families)
        used = flavours_of(backend, tuple(others)) or {}
    except (PortmapctlError, OSError):
        return found  # (the other flavour unreadable: the plugin cannot use it either)
    # (Each family's own other flavour: the two alternatives may differ.)
    other_of = {family: other_flavour(used[family]) for family in others}
    return chains_in_tables(names, (), others, other_of, found)


def chains_in_tables(
    names: Collection[str],
    used: Iterable[NatTable],
    others: Optional[Mapping[int, NatTable]] = None,
    other_of: Optional[Mapping[int, str]] = None,
    found: Optional[Mapping[str, str]] = None,
) -> Dict[str, str]:
    """`found` with those of `names` it does not place found in tables already read,
    each with where (chains_in_iptables' words): in the flavour used's (`used`),
    "iptables", else in the other flavour's (`others`, by family; `other_of`: that
    flavour's name), other_flavour_tables_words. The check of the node asks it of
    the tables it read (followed_entries), chains_in_iptables of those it reads."""
    placed = dict(found or {})
    tables = list(used)
    placed.update(
        {n: "iptables" for n in names if n not in placed and any(t.has_chain(n) for t in tables)}
    )
    for family, table in (others or {}).items():
        other = (other_of or {}).get(family)
        words = other_flavour_tables_words(other) if other else "iptables"
        placed.update({n: words for n in names if n not in placed and table.has_chain(n)})
    return placed


def _kept_elsewhere(
    node: Node,
    config: MappingConfig,
    chosen: Backend,
    keyed: bool = False,
    ignored: Optional[str] = None,
    asked: bool = False,
) -> Optional[str]:
    """Why the plugin keeps this container in another backend than `chosen` (as
    `followed` judges under auto: its cached config's key, else, for nftables, its
    rules in the plugin's tables alone); None when nothing says so. `keyed`: `chosen`
    is the key of the config given (--cni-config): with no cache entry, a key
    "nftables" is the plugin's but where it ignored it. `ignored`: _key_ignored's
    answer, where it was `asked` already (else asked here if needed)."""
    from portmapctl.cni.cache import configured_backend
    from portmapctl.ops.nft_words import chain_there, configured_there, ignored_there

    cached = configured_backend(node.options.cache_dirs, config.network, config.container_id)
    if cached is not None:
        where = _ignored(node, config, ignored, asked) if cached == Backend.NFTABLES else None
        if where is not None:
            # Its plugin ignored the key (one before v1.6): it keeps it in iptables.
            if chosen == Backend.IPTABLES:
                return None
            return ignored_there(config, where)
        return None if cached == chosen else configured_there(config, cached)
    families = validate.chosen_families(config, node.families, "check")
    name = dnat_chain_name(config)
    if chosen != Backend.IPTABLES:
        if keyed:
            # Its config says nftables, and a plugin given it writes there (v1.6 on):
            # one keeps it in iptables only where it ignored the key (its chain there,
            # no rule in nftables), whatever else is in iptables.
            where = _ignored(node, config, ignored, asked)
            return None if where is None else ignored_there(config, where, "the")
        # Its chain in iptables: a config without the key is kept there by the plugin
        # (ops/nft.py choose: in both, iptables wins). A nat table is asked for first,
        # without a process: a node on nftables alone runs no iptables for this.
        where = None if node.options.offline else chain_in_iptables(node, families, name)
        if where is not None:
            return chain_there(config, where)
        return None
    from portmapctl.ops.nft import kept_in_nftables
    from portmapctl.ops.nft_words import kept_there

    if node.nft is None:
        from portmapctl.iptables.access import BACKEND_NAMES
        from portmapctl.iptables.access.nfmsg import tables_present

        if node.options.offline or node.backend.name not in BACKEND_NAMES:
            return None  # (no host to ask: a snapshot, or iptables in memory)
        from portmapctl.nftables import TABLE

        if not tables_present(families, TABLE):
            return None  # (the usual iptables node: one netlink question, no nft run)
    elif not _plugin_tables_may_exist(node, families):
        return None  # (likewise: a config's key "iptables" under auto runs no nft)
    live = node.read_nft_evidence()
    if not live.tables:
        return None

    def in_iptables() -> bool:
        return _in_node_iptables(node, families, name)

    if kept_in_nftables(config, live, in_iptables, node.options.keyless):
        return kept_there(config)
    return None


def _ignored(node: Node, config: MappingConfig, known: Optional[str], asked: bool) -> Optional[str]:
    return known if asked else _key_ignored(node, config)


def _checked_in_nftables(why: str) -> str:
    return (
        f"{why}, so the plugin keeps it there: checked in nftables (give --backend iptables"
        " to check iptables)"
    )


def _real_nft() -> type:
    from portmapctl.nftables.access.nft import RealNft

    return RealNft


def _plugin_tables_may_exist(node: Node, families: Sequence[int]) -> bool:
    """False only when netlink says this host's namespace has no `cni_hostport` table
    in `families` (a node in memory, or offline, is not asked)."""
    if not isinstance(node.nft, _real_nft()):
        return True
    from portmapctl.iptables.access.nfmsg import tables_present
    from portmapctl.nftables import TABLE

    return bool(tables_present(families, TABLE))


def nft_mapping(node: Node, config: MappingConfig) -> bool:
    """A mapping given on the command line lives in nftables: its config (or
    --backend) says so."""
    return Backend.NFTABLES in (config.backend, node.options.backend)
