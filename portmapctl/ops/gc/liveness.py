"""Where gc learns which containers are live (SPEC §3 gc): the CNI cache, CNI GC
`cni.dev/valid-attachments` documents and `--keep`, combined into one `Liveness`.
Pure but for reading a document file; plan.py plans with it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import (
    TYPE_CHECKING,
    Dict,
    FrozenSet,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

from portmapctl.cni import config as cni_config
from portmapctl.cni.cache import Attachment, cache_present, judge_namespaces, results_dir
from portmapctl.core import validate
from portmapctl.errors import BadInput, HostProblem
from portmapctl.host import files
from portmapctl.host.netns import NetnsState
from portmapctl.iptables.chain_facts import ChainFacts
from portmapctl.iptables.chains import chain_name
from portmapctl.iptables.inventory import ChainInfo
from portmapctl.iptables.plugin_rules import EntryRule, cut_id, entry_owner, names_its_chain
from portmapctl.iptables.shapes import paired_snat_chain

if TYPE_CHECKING:
    from portmapctl.host.netns import NamespaceView
    from portmapctl.iptables.ruleset import NatTable

VALID_ATTACHMENTS_KEY = "cni.dev/valid-attachments"
# gc plans from ChainFacts; a ChainInfo (list, check) answers the same questions.
AnyChain = Union[ChainFacts, ChainInfo]


@dataclass(frozen=True)
class ValidAttachments:
    """A `cni.dev/valid-attachments` document: its network (None for a bare list)."""

    network: Optional[str]
    container_ids: FrozenSet[str]
    source: str


def parse_valid_attachments(text: str, source: str) -> ValidAttachments:
    """A bare list `[{"containerID", "ifname"}, ...]`, or an object holding the key
    (a network config as CNI GC passes it; its `name`, when present, is the network)."""
    document = cni_config.load_json(text, source)
    network = None
    if isinstance(document, dict):
        if VALID_ATTACHMENTS_KEY not in document:
            raise BadInput(f"{source}: no {VALID_ATTACHMENTS_KEY!r} key in the document")
        if document.get("name") is not None:
            network = validate.cni_name(document["name"], f"network name in {source}")
        document = document[VALID_ATTACHMENTS_KEY]
    if not isinstance(document, list):
        raise BadInput(
            f"{source}: {VALID_ATTACHMENTS_KEY} must be a list of"
            ' {"containerID": ..., "ifname": ...} objects'
        )
    ids = set()
    for entry in document:
        if not isinstance(entry, dict) or "containerID" not in entry:
            raise BadInput(f"{source}: every valid attachment needs a containerID")
        ifname = entry.get("ifname")
        if ifname is not None and not isinstance(ifname, str):
            raise BadInput(f"{source}: ifname must be a string")
        ids.add(validate.cni_name(entry["containerID"], f"container ID in {source}"))
    return ValidAttachments(network, frozenset(ids), source)


def read_valid_attachments(path: str) -> ValidAttachments:
    """The document in `path` (`-`: standard input). An empty path is bad input: taken
    for no option (`--valid-attachments "$DOC"`, DOC unset), gc went on without the
    document, and the containers it lists were not live."""
    if not path:
        raise BadInput("--valid-attachments is empty: give a file (or - for stdin)")
    source = "<stdin>" if path == "-" else path
    return parse_valid_attachments(files.read_text(path, "--valid-attachments"), source)


@dataclass(frozen=True)
class Sources:
    """What says which containers are live, besides the node's CNI cache."""

    documents: Tuple[ValidAttachments, ...] = ()
    keep: Tuple[str, ...] = ()
    remove_all: bool = False
    # --netns-liveness: a cache entry whose network namespace is gone (a zombie) does
    # not make its container live.
    netns_liveness: bool = False
    # Container IDs that the names of a runtime's cache below a directory read, not
    # read itself (cni/entries.unread_caches: cri-dockerd's), keep live. No source of
    # their own (a refusal names that cache instead): a doubt, and a chain in doubt stays.
    held: FrozenSet[str] = frozenset()


def held_ids(cache_dirs: Sequence[str]) -> FrozenSet[str]:
    """Sources.held: every reading of every entry's name (as an unreadable entry's), in
    the runtime caches below that hold their containers (RuntimeCache.holds:
    cri-dockerd's, not Multus's)."""
    from portmapctl.cni.cache import name_readings
    from portmapctl.cni.entries import unread_caches

    return frozenset(
        cid
        for unread in unread_caches(cache_dirs)
        if unread.holds
        for name in unread.names
        for _network, cid, _ifname in name_readings(name)
    )


def _unread_hint(cache_dirs: Sequence[str]) -> str:
    """For a refusal: the runtime caches below `cache_dirs` that would have said."""
    from portmapctl.cni.entries import unread_caches
    from portmapctl.core.text import shell_word

    return "".join(
        f" ({os.path.join(u.cache_dir, 'results')} holds {len(u.names)}, {u.runtime}"
        f" cache: give --cni-cache-dir {shell_word(u.cache_dir)})"
        for u in unread_caches(cache_dirs)
    )


def _other_source(sources: Sources) -> bool:
    """A source besides the cache. A valid-attachments document that lists no
    attachment is none, as an empty cache is none (SPEC §3): a script whose query
    failed writes `[]` as readily as a runtime with nothing running does, and the
    plan from it would remove every chain; `--all` says that on purpose."""
    return bool(
        any(d.container_ids for d in sources.documents) or sources.keep or sources.remove_all
    )


def require_source(sources: Sources, cache_dirs: Sequence[str]) -> None:
    """Refuse (exit 2) when nothing says what is live and --all was not given."""
    if _other_source(sources) or cache_present(cache_dirs):
        return
    where = " or ".join(results_dir(d) for d in cache_dirs)
    documents = ", ".join(d.source for d in sources.documents)
    given = f"{documents} lists no attachment" if documents else "no --valid-attachments"
    raise BadInput(
        f"nothing says which containers are live (no CNI cache at {where}"
        f"{_unread_hint(cache_dirs)}, {given}, no --keep): give one, or --all to remove"
        " every per-container chain"
    )


def says_nothing(sources: Sources, attachments: Optional[Sequence[Attachment]]) -> bool:
    """SPEC §3 gc: an existing but empty cache (a wrong --cni-cache-dir, a wiped disk)
    is no source of liveness; with no other source, nothing says what is live. The
    same rule for every backend: a plan from it would remove everything."""
    return attachments == [] and not _other_source(sources)


def empty_cache_refusal(cache_dirs: Sequence[str], found: str, everything: str) -> BadInput:
    """The one line for `says_nothing` on a node that holds `found` (exit 2)."""
    where = " and ".join(results_dir(d) for d in cache_dirs)
    return BadInput(
        f"the CNI cache at {where} is empty{_unread_hint(cache_dirs)} but there are {found}:"
        " nothing says which containers are live (give --valid-attachments or --keep,"
        f" or --all to remove {everything})"
    )


def require_namespaces(attachments: Sequence[Attachment]) -> None:
    """--netns-liveness needs to see the namespaces the cache names (exit 3 if not):
    where it cannot, every entry would look like a zombie."""
    unseen = sorted({a.netns for a in attachments if a.netns_state == NetnsState.UNSEEN})
    if unseen:
        directory = os.path.dirname(unseen[0] or "") or "?"
        raise HostProblem(
            f"--netns-liveness: the network namespaces the CNI cache names are not visible"
            f" here ({directory}: not the host's, or holding none of them): mount the host's"
            f" {directory} (and run in the host's PID namespace for /proc paths), or drop"
            " --netns-liveness"
        )


@dataclass(frozen=True)
class Liveness:
    """Everything the sources say, merged."""

    chains: FrozenSet[str] = frozenset()  # exact chain names of live attachments
    ids: FrozenSet[str] = frozenset()  # container IDs live on any network
    keep: Tuple[str, ...] = ()  # --keep: IDs or ID prefixes
    networks: FrozenSet[str] = frozenset()  # networks the sources name
    scope: Optional[FrozenSet[str]] = None  # None: the sources speak for every network
    # (network, container ID) pairs whose chain names `chains` holds already.
    named: FrozenSet[Tuple[str, str]] = frozenset()
    # Chain name -> (network, container ID) of a cache entry that makes nothing live
    # (a zombie's, with --netns-liveness): whose a chain is that no comment names (an
    # orphan), for gc's rows, as list names it.
    owners: Mapping[str, Tuple[str, str]] = field(default_factory=dict)

    def owner(self, chain: AnyChain) -> Tuple[Optional[str], Optional[str]]:
        """(network, container ID) of `chain`: its entry comments', else a zombie
        cache entry's of that chain name."""
        if chain.network is not None or chain.container_id is not None:
            return chain.network, chain.container_id
        return self.owners.get(chain.name, (None, None))

    def derived_chains(self, chains: Sequence[AnyChain]) -> FrozenSet[str]:
        """Chain names that (network seen, live ID) pairs give: match by name first.
        A pair named already (a cache entry's own network) is not hashed again: on a
        node of one network that is every pair (10,000 SHA-512s at 5,000 live)."""
        networks = set(self.networks)
        for chain in chains:
            networks.update(e.network for e in chain.entries if e.network)
        ids = self.ids | {k for k in self.keep if _is_cni_name(k)}
        found: Set[str] = set()
        for network in networks:
            for cid in ids:
                if (network, cid) not in self.named:
                    dnat = chain_name(network, cid)
                    found.update((dnat, paired_snat_chain(dnat)))
        return frozenset(found)

    def is_live(self, chain: AnyChain, derived: FrozenSet[str]) -> bool:
        """Whether the sources keep `chain`: by its name (theirs, or `derived`), else by
        the container its own entry comments name (those naming the network and ID the
        chain's name hashes, as check's owner): another tool's rule entering it may name
        a live container, and check calls the chain stale all the same."""
        if chain.name in self.chains or chain.name in derived:
            return True
        ids = {e.container_id for e in chain.entries if names_its_chain(e)}
        if chain.container_id:
            # Also a chain nothing enters: a v0.6 CNI-SN- chain is its CNI-DN- twin's
            # (inventory pairs them by hash, iptables/shapes.py).
            ids.add(chain.container_id)
        if ids & self.ids:
            return True
        if any(cid.startswith(prefix) for cid in ids for prefix in self.keep):
            return True
        return any(_keeps_cut(prefix, chain.entries) for prefix in self.keep)

    def in_scope(self, chain: AnyChain) -> bool:
        """Whether the sources speak for `chain`'s network: the networks its entry
        comments name that may be the plugin's (entry_owner: naming the chain, or cut by
        the kernel), all in scope. Another tool's rule naming another network does not
        take the chain out of scope, nor does one naming a scoped network bring in a
        chain of no known network (kept)."""
        if self.scope is None:
            return True
        networks = {entry_owner(e).network for e in chain.entries} - {None}
        return bool(networks) and networks <= self.scope


def _keeps_cut(prefix: str, entries: Iterable[EntryRule]) -> bool:
    """Whether --keep `prefix` may name the container of an entry comment the kernel
    cut (a long ID: cut_id shows its start): one that part starts with does; a longer
    one agreeing with it may (in doubt: kept)."""
    for entry in entries:
        shown = cut_id(entry)
        if shown is not None and (shown.startswith(prefix) or prefix.startswith(shown)):
            return True
    return False


def _is_cni_name(value: str) -> bool:
    try:
        validate.cni_name(value, "container ID")
    except BadInput:
        return False
    return True


def unmatched_keeps(
    keep: Sequence[str],
    tables: Mapping[int, NatTable],
    nft_owners: Iterable[str],
    attachments: Optional[Sequence[Attachment]],
) -> List[str]:
    """The warnings for the --keep values that keep nothing on this node: no container
    of a per-container chain's entry rules, of the plugin's nftables rules
    (`nft_owners`) or of the cache has an ID starting with one, and no chain is named
    for it on a network seen. A runtime's container name where its ID belongs (`--keep
    web`) is the usual cause: the container meant to be kept lost its chains, and
    neither the dry run nor the question before a removal said so."""
    from portmapctl.iptables.plugin_rules import entry_rules, per_container_chains

    ids = set(nft_owners) | {a.container_id for a in attachments or ()}
    networks = {a.network for a in attachments or ()}
    chains: Set[str] = set()
    read: List[EntryRule] = []
    for table in tables.values():
        named = per_container_chains(table)
        chains.update(named)
        for entries in entry_rules(table, set(named)).values():
            ids.update(e.container_id for e in entries if e.container_id)
            networks.update(e.network for e in entries if e.network)
            read += entries
    return [
        f"--keep {prefix} matches no container on this node: it keeps nothing (a"
        " container not running now has no chain to keep; --keep takes a container's ID"
        " or its prefix, as `portmapctl list` shows it, not a name)"
        for prefix in keep
        if not any(cid.startswith(prefix) for cid in ids)
        and not any(chain_name(network, prefix) in chains for network in networks)
        and not _keeps_cut(prefix, read)
    ]


def liveness(sources: Sources, attachments: Optional[Sequence[Attachment]]) -> Liveness:
    """Merge the sources. A cache entry makes its container live by ID on every network
    (SPEC §3: a Multus pod's delegate chain is kept by its outer entry too), except a
    zombie's with --netns-liveness."""
    chains: Set[str] = set()
    ids: Set[str] = set()
    networks: Set[str] = set()
    scoped: Set[str] = set()
    named: Set[Tuple[str, str]] = set()
    owners: Dict[str, Tuple[str, str]] = {}
    for attachment in attachments or ():
        networks.add(attachment.network)
        if sources.netns_liveness and attachment.zombie:
            if attachment.problem is None:
                dnat = attachment.dnat_chain
                for name in (dnat, paired_snat_chain(dnat)):
                    owners[name] = (attachment.network, attachment.container_id)
            continue
        if (attachment.network, attachment.container_id) not in named:
            named.add((attachment.network, attachment.container_id))
            # The CNI-SN- name is the CNI-DN- one's hash: one SHA-512, not two.
            dnat = attachment.dnat_chain
            chains.update((dnat, paired_snat_chain(dnat)))
        ids.add(attachment.container_id)
    ids.update(sources.held)
    for document in sources.documents:
        if document.network is None:
            ids.update(document.container_ids)
            continue
        networks.add(document.network)
        scoped.add(document.network)
        for cid in document.container_ids:
            named.add((document.network, cid))
            dnat = chain_name(document.network, cid)
            chains.update((dnat, paired_snat_chain(dnat)))
    everywhere = (
        attachments is not None
        or sources.remove_all
        or any(d.network is None for d in sources.documents)
        or not sources.documents  # --keep alone: SPEC says it is a source of its own
    )
    return Liveness(
        frozenset(chains),
        frozenset(ids),
        tuple(sources.keep),
        frozenset(networks),
        None if everywhere else frozenset(scoped),
        frozenset(named),
        owners,
    )


class ZombieHold:
    """Which of the chains a run without --netns-liveness keeps it keeps only because
    a zombie's cache entry (its network namespace gone) names them.

    Such a run counts a zombie as live, and a chain it keeps loses its --min-age
    sighting. But a `gc --netns-liveness` run started that sighting: with a cron's
    plain `gc` between two of them, the clock started again every time and the zombie
    never became removable (the fix `check` prints stayed "pending"). A plain run
    keeps such a sighting as it was; it starts none. The namespaces are judged only
    when asked, which is only for a kept chain that has a sighting: a stat or two per
    cache entry, once."""

    def __init__(
        self, sources: Sources, attachments: Sequence[Attachment], view: NamespaceView
    ) -> None:
        self._sources = replace(sources, netns_liveness=True)
        self._attachments = attachments
        self._view = view
        self._judged: Optional[List[Attachment]] = None
        self._strict: Optional[Liveness] = None

    def judged(self) -> List[Attachment]:
        """The cache entries with their namespaces judged."""
        if self._judged is None:
            self._judged = judge_namespaces(self._attachments, self._view)
        return self._judged

    def strict(self) -> Liveness:
        """What the sources say with zombies not live (as --netns-liveness has it)."""
        if self._strict is None:
            self._strict = liveness(self._sources, self.judged())
        return self._strict

    @property
    def sources(self) -> Sources:
        return self._sources


def zombie_hold(
    sources: Sources,
    attachments: Optional[Sequence[Attachment]],
    view: Optional[NamespaceView],
) -> Optional[ZombieHold]:
    """A ZombieHold for a run that counts zombies as live and can judge namespaces
    (a live node's cache); None otherwise."""
    if sources.netns_liveness or not attachments or view is None:
        return None
    return ZombieHold(sources, attachments, view)
