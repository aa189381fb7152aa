"""libcni's cache: which containers are live on this node, with their port mappings.

After a successful ADD of a whole network list, libcni writes
`<cache-dir>/results/<network>-<containerID>-<ifname>` (kind "cniCacheV1") and
removes it on DEL. Each file names the network and container, and holds the network
configuration (base64), the capability args (`portMappings`) and the ADD result
(the container's addresses). From that we rebuild the `MappingConfig` the plugin
was given.

A node can have several cache directories: Multus runs each delegate network through
libcni with a cache of its own (`/var/lib/cni/multus/results`), while the runtime's
cache holds only the outer `multus-cni-network` entry. They are read together.

libcni writes a file in place (no rename): a read can catch it half-written, so a
file that cannot be read or is not yet one whole JSON document is read again a few
times. One that parses is complete: what is wrong in it then stays wrong, and it is
not read again. A file that cannot be understood is skipped with a warning, and its
container stays live by the file's name (SPEC §5: one bad record never stops the
node's work).
"""

from __future__ import annotations

import base64
import binascii
import errno
import json
import os
import stat
import time
from dataclasses import dataclass, replace
from typing import Any, Dict, FrozenSet, Iterable, List, Optional, Sequence, Set, Tuple, Union

from portmapctl.cni import config as cni_config
from portmapctl.cni.entries import CachedKey, entry_paths
from portmapctl.cni.leases import HostRange, host_local_data_dir, host_local_ranges
from portmapctl.core import validate
from portmapctl.core.backend import Backend
from portmapctl.core.mapping import MappingConfig
from portmapctl.core.text import name_text
from portmapctl.errors import BadInput, HostProblem
from portmapctl.host import files
from portmapctl.host.netns import NamespaceView, NetnsState
from portmapctl.iptables.chains import buildable, chain_name

MAX_CACHE_FILE_BYTES = 16 * 1024 * 1024
# A half-written file is complete a moment later: read those again, all at once.
READ_TRIES = 4
RETRY_SECONDS = 0.1
# Splitting NETWORK-CONTAINERID-IFNAME at every pair of dashes: bounded for odd names.
# 24 left a real one unread (a network and an ID of 13 dash-parts each: its container
# stale, silently); 64 dashes are 2,016 readings, 4 ms, for a file already broken.
MAX_NAME_DASHES = 64


@dataclass(frozen=True)
class Attachment:
    """One cached attachment. `mapping` is None when it has no portmap to speak of.

    `problem` is set for a file that could not be understood: then network and
    container ID are one reading of its file name (there is one such Attachment per
    reading, since names may hold dashes), so that its container stays live.
    """

    network: str
    container_id: str
    ifname: str
    path: str
    mapping: Optional[MappingConfig]
    netns: Optional[str] = None
    netns_state: NetnsState = NetnsState.UNKNOWN
    problem: Optional[str] = None
    leases: Optional[str] = None  # host-local's lease directory of its network (cni/leases)
    # host-local's data directory where its config's main plugin uses host-local, ports
    # or none: another network's leases may overlap a mapping's (cni/leases.py).
    data_dir: Optional[str] = None
    # The ranges host-local hands addresses out of there (its config's; (): it names
    # none; None: they cannot be read).
    ranges: Optional[Tuple[HostRange, ...]] = ()
    # libcni before v0.8 cached the ADD result alone: a whole entry, read as libcni still
    # reads it, that names no config. Its `problem` says so (its mappings are not known,
    # as an unreadable entry's are not), but it is nothing to warn of at every run.
    result_only: bool = False

    @property
    def dnat_chain(self) -> str:
        return chain_name(self.network, self.container_id, "DN-")

    @property
    def snat_chain(self) -> str:
        return chain_name(self.network, self.container_id, "SN-")

    @property
    def zombie(self) -> bool:
        """Cached, but its network namespace is gone: the runtime forgot it."""
        return self.netns_state == NetnsState.GONE


def added_at(attachment: Attachment) -> Tuple[int, str]:
    """When libcni wrote the entry (its file's modification time; then its path): the
    order of the plugin's ADDs, which decides the order of the rules they appended."""
    try:
        return os.stat(attachment.path).st_mtime_ns, attachment.path
    except OSError:
        return 0, attachment.path


# What stat(2) says of a path no directory can be at, whatever the node: a symlink loop,
# a name longer than the system takes. Bad input (exit 2), as a file given as the cache
# is; EACCES, EIO and the like are the environment's (exit 3).
_NEVER_A_DIRECTORY = frozenset({errno.ELOOP, errno.ENAMETOOLONG})


def results_dir(cache_dir: str) -> str:
    return os.path.join(cache_dir, "results")


def cache_exists(cache_dir: str) -> bool:
    """Whether `results/` is there; a cache that cannot be looked at is exit 3, never
    "no cache" (os.path.isdir says False for both, and gc would then trust --keep
    alone, or list call the node empty)."""
    folder = results_dir(cache_dir)
    try:
        if stat.S_ISDIR(os.stat(folder).st_mode):
            return True
    except FileNotFoundError:
        return False
    except NotADirectoryError:
        folder = cache_dir  # (a file given as the cache: no "no cache" for a typo)
    except OSError as err:
        if err.errno in _NEVER_A_DIRECTORY:
            # The path's own fault, as a file's: no run as root, no node state reads it.
            raise BadInput(
                f"the CNI cache {folder} cannot be a directory: {err.strerror}"
                " (give the cache directory's own path)"
            ) from None
        raise HostProblem(f"cannot read the CNI cache {folder}: {err.strerror}") from None
    raise BadInput(f"the CNI cache {folder} is not a directory")


CacheDirs = Union[str, Sequence[str]]


def _dirs(cache_dirs: CacheDirs) -> Tuple[str, ...]:
    return (cache_dirs,) if isinstance(cache_dirs, str) else tuple(cache_dirs)


def present_dirs(cache_dirs: CacheDirs) -> Tuple[str, ...]:
    """The cache directories that have a results/ folder."""
    return tuple(d for d in _dirs(cache_dirs) if cache_exists(d))


def cache_present(cache_dirs: CacheDirs) -> bool:
    return bool(present_dirs(cache_dirs))


def read_cache(
    cache_dirs: CacheDirs, namespaces: Optional[NamespaceView] = None
) -> Optional[List[Attachment]]:
    """Every attachment in the caches; None when there is no cache at all.

    `namespaces` judges whether each entry's network namespace is still there (None:
    not judged, as for a --snapshot from another node).
    """
    paths = cache_paths(cache_dirs)
    if paths is None:
        return None
    return read_entries(paths, namespaces)


def cache_paths(cache_dirs: CacheDirs) -> Optional[List[str]]:
    """The cache files (None when there is no cache at all), in the order read_cache
    reads them."""
    folders = [results_dir(d) for d in present_dirs(cache_dirs)]
    if not folders:
        return None
    paths = []
    for folder in folders:
        try:
            # scandir: the file type comes with the name (one stat less per entry).
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=_entry_name)
            # Listed is not searchable: without x every entry fails as if gone (each
            # container then stale, gc's to take). Looking up "." needs that right.
            os.stat(os.path.join(folder, "."))
        except FileNotFoundError:
            continue  # removed meanwhile: as if it had not been there
        except OSError as err:
            # A cache that cannot be read is no empty cache: gc would take every chain
            # for stale. The environment's problem (exit 3), not the input's.
            raise HostProblem(f"cannot read the CNI cache {folder}: {err.strerror}") from None
        for entry in entries:
            if entry.name.startswith("."):
                continue  # libcni writes through temporary files
            # Anything else is an entry, also what is no file (a directory, a dangling
            # symlink): read, it is reported, and its name keeps its container live.
            paths.append(entry.path)
    return paths


class _ResultOnly(BadInput):
    """A cache file of libcni before v0.8: the ADD result alone (json.Marshal of the
    result: no `kind`, no config, no capability args). libcni's getCachedResult reads
    a file that is not cniCacheV1 that way to this day; nodes of that era keep them
    for as long as their containers run."""

    def __init__(self, result: dict) -> None:
        super().__init__("libcni before v0.8 cached the ADD result alone: no config to compare")
        self.result = result


class _Unfinished(BadInput):
    """A cache file that could not be read as one whole JSON document: perhaps being
    written (libcni truncates, then writes), so worth reading again."""


def _entry_name(entry: os.DirEntry) -> str:
    return entry.name


class NamespaceMemo:
    """A view's answer per namespace path, asked once per read: entries that name the
    same namespace (a pod's containers, its several interfaces) cost one stat."""

    def __init__(self, view: NamespaceView, cached: FrozenSet[str]) -> None:
        self._view = view
        self._cached = cached  # every namespace the read's entries name
        self._states: Dict[Optional[str], NetnsState] = {}

    def state(self, path: Optional[str], entry: str) -> NetnsState:
        found = self._states.get(path)
        if found is None:
            found = self._states[path] = self._view.state(path, cached=self._cached)
        if self._view.dated_by_the_entry(path, found):
            return self._view.state(path, entry, self._cached)
        return found


def read_entries(
    paths: Iterable[str],
    namespaces: Optional[NamespaceView] = None,
    tries: int = READ_TRIES,
    wait: Optional[float] = None,
) -> List[Attachment]:
    """The attachments of these cache files, a file read again while it is not yet a
    whole JSON document (a file that is, but holds something wrong, is reported at once)."""
    wait = RETRY_SECONDS if wait is None else wait
    found: List[Attachment] = []
    pending = list(paths)
    failed: List[Tuple[str, BadInput]] = []
    configs = ConfigMemo()
    for attempt in range(tries):
        failed = []
        for path in pending:
            try:
                found.append(read_attachment(path, configs=configs))
            except BadInput as err:
                if _gone(path):
                    continue  # removed by a DEL between listing and reading: not live
                if isinstance(err, _Unfinished):
                    failed.append((path, err))
                elif isinstance(err, _ResultOnly):
                    found += result_only(path, str(err), err.result)
                else:
                    found += unreadable(path, str(err))
        if not failed:
            break
        pending = [path for path, _ in failed]
        if attempt < tries - 1:
            time.sleep(wait)
    for path, err in failed:
        found += unreadable(path, str(err))
    if namespaces is None:
        return found
    # Judged once all are read: whether a directory shows the runtime's namespaces
    # depends on what every entry names.
    return judge_namespaces(found, namespaces)


def judge_namespaces(found: Sequence[Attachment], view: NamespaceView) -> List[Attachment]:
    """`found` with each entry's netns_state as `view` judges it (the same namespace
    asked once)."""
    judge = NamespaceMemo(view, frozenset(a.netns for a in found if a.netns))
    return [replace(a, netns_state=judge.state(a.netns, a.path)) for a in found]


def _gone(path: str) -> bool:
    """Whether the file is no longer there; not when that cannot be told (EACCES):
    lexists says False for both, and a doubt must keep its container live."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False
    return False


def unreadable(path: str, problem: str) -> List[Attachment]:
    """Stand-ins for a file that cannot be understood: every reading of its name."""
    return [
        Attachment(network, container_id, ifname, path, None, problem=problem)
        for network, container_id, ifname in name_readings(os.path.basename(path))
    ]


def result_only(path: str, problem: str, result: dict) -> List[Attachment]:
    """A result-only entry (_ResultOnly) for every reading of its file name (libcni
    named them NETWORK-CONTAINERID-IFNAME already), with the namespace its result's
    interface names: live by name, a zombie once that namespace is gone."""
    return [
        Attachment(
            network,
            container_id,
            ifname,
            path,
            None,
            _netns(None, result, ifname),
            problem=problem,
            result_only=True,
        )
        for network, container_id, ifname in name_readings(os.path.basename(path))
    ]


def result_only_note(attachments: Optional[Sequence[Attachment]]) -> Optional[str]:
    """check's remark on the result-only entries (not a warning: nothing is wrong)."""
    paths = {a.path for a in attachments or () if a.result_only}
    if not paths:
        return None
    if len(paths) == 1:
        return (
            "1 CNI cache entry from libcni before v0.8 holds the ADD result alone (no"
            " config): its container's mappings are not compared"
        )
    return (
        f"{len(paths)} CNI cache entries from libcni before v0.8 hold the ADD result"
        " alone (no config): their containers' mappings are not compared"
    )


def name_readings(name: str) -> List[Tuple[str, str, str]]:
    """(network, container ID, ifname) for every way `name` splits at two dashes
    into three valid CNI names (libcni: `NETWORK-CONTAINERID-IFNAME`)."""
    parts = name.split("-")
    if not 3 <= len(parts) <= MAX_NAME_DASHES + 1:
        return []
    readings = []
    for i in range(1, len(parts) - 1):
        for j in range(i + 1, len(parts)):
            network, cid, ifname = "-".join(parts[:i]), "-".join(parts[i:j]), "-".join(parts[j:])
            if all(_is_name(v) for v in (network, cid)) and ifname:
                readings.append((network, cid, ifname))
    return readings


def _is_name(value: str) -> bool:
    try:
        validate.cni_name(value, "name")
    except BadInput:
        return False
    return True


def warnings(attachments: Optional[Sequence[Attachment]], cache_dirs: CacheDirs = ()) -> List[str]:
    """One line per cache file that could not be understood, and one per file in
    `cache_dirs` whose name is none libcni writes (unnamed_entries)."""
    seen = {}
    for attachment in attachments or ():
        if attachment.problem is not None and not attachment.result_only:
            seen.setdefault(attachment.path, attachment.problem)
    lines = [skipped_line(problem) for problem in seen.values()]
    if attachments is None:
        return lines  # (no cache: nothing listed)
    known = {a.path for a in attachments}
    return lines + [
        f"skipped CNI cache file {name_text(path)}: its name is not libcni's"
        " NETWORK-CONTAINERID-IFNAME, so it keeps no container live"
        for path in unnamed_entries(cache_dirs, known)
    ]


def skipped_line(problem: str) -> str:
    """The warning of one cache file that could not be understood (`problem`: why)."""
    return (
        f"skipped a CNI cache entry that cannot be read ({problem}); its container"
        " is kept as live by the file name"
    )


def unnamed_entries(cache_dirs: CacheDirs, known: Set[str]) -> List[str]:
    """The files of the caches' results/ that no reading of their names makes an
    attachment of (name_readings: none). read_entries has no stand-in for such a
    file, so nothing else says it was skipped: one bad record is reported, never
    dropped without a word. `known`: the paths read into attachments (their names
    have readings; only the others are split here)."""
    found = []
    for folder in map(results_dir, _dirs(cache_dirs)):
        try:
            names = os.listdir(folder)
        except OSError:
            continue  # (read_cache said what was wrong with the folder)
        # Names against names, the set difference in C: every list, check and gc pays
        # this, and a path joined and looked up per file was 0.8 ms at 1,000 entries.
        prefix = os.path.join(folder, "")
        read = {path[len(prefix) :] for path in known if path.startswith(prefix)}
        for name in sorted(set(names).difference(read)):
            if name.startswith(".") or name_readings(name):
                continue
            found.append(prefix + name)
    return found


def pair_entries(
    cache_dirs: CacheDirs,
    network: str,
    container_id: str,
    namespaces: Optional[NamespaceView] = None,
) -> List[Attachment]:
    """The entries of `container_id` on `network` (read_entries of entry_paths), those
    that cannot be read included: each reading of its file name that is of this pair."""
    paths = entry_paths(cache_dirs, network, container_id)
    if not paths:
        return []
    found = read_entries(paths, namespaces)
    return [a for a in found if (a.network, a.container_id) == (network, container_id)]


def configured_backend(cache_dirs: CacheDirs, network: str, container_id: str) -> Optional[Backend]:
    """The `backend` key (iptables or nftables) of the portmap config libcni cached
    for this container on this network, when its entries name one and agree; else None
    (no entry, no key, entries that disagree or cannot be read: the caller decides as
    it would without the cache). For a mapping given on the command line without the
    key: the plugin's ADD for this container was given the cached config, and its DEL
    looks in that backend alone. Only the files libcni names for the two
    (`NETWORK-CONTAINERID-IFNAME`) are read; nothing here fails the command. Where an
    entry of its own cannot be read, configured_key says so."""
    return configured_key(cache_dirs, network, container_id).backend


def configured_key(
    cache_dirs: CacheDirs, network: str, container_id: str, ifname: Optional[str] = None
) -> CachedKey:
    """configured_backend, with the entries that may be the container's own and cannot
    be read (CachedKey.unread) and those of others read for it (CachedKey.skipped).
    `ifname`: the interface the mapping is given for (key_in)."""
    paths = entry_paths(cache_dirs, network, container_id)
    return key_in(paths, network, container_id, ifname)


def key_in(
    paths: Sequence[str], network: str, container_id: str, ifname: Optional[str] = None
) -> CachedKey:
    """configured_key of the entries `paths` (cni/entries.py entry_paths), each read as
    every command reads the cache (read_entries: a half-written file read again).
    `ifname`: the interface the mapping is given for. Where its entry reads, an entry
    of another interface of the pair that cannot be read is not its own: the key its
    plugin was given for this interface is the one read (each delegate ADD is given
    its own config), as the node's repair judges each entry read (a Multus pod on one
    network twice, net2's entry cut short: net1's backend was "cannot be told" after a
    flush, where the node's repair made its chain). Those entries are named apart
    (CachedKey.others_unread): the shared chain may hold their rules."""
    if not paths:
        return CachedKey()
    found: Set[Optional[Backend]] = set()
    unread: Dict[str, str] = {}
    read_here = False  # the entry of `ifname` read
    for attachment in read_entries(paths):
        if attachment.result_only:
            continue  # (libcni before v0.8: no config, so no key; as before, not a doubt)
        if attachment.problem is not None:
            unread.setdefault(attachment.path, attachment.problem)
        elif (attachment.network, attachment.container_id) == (network, container_id):
            mapping = attachment.mapping
            found.add(mapping.backend if mapping is not None else None)
            read_here = read_here or (ifname is not None and attachment.ifname == ifname)
    own = [p for p in unread if _maybe_of(p, network, container_id)]
    others = tuple(skipped_line(problem) for p, problem in unread.items() if p not in own)
    siblings: Tuple[str, ...] = ()
    if read_here:
        # (Not one that a reading of its name makes this interface's own entry.)
        mine = (network, container_id, ifname)
        siblings = tuple(p for p in own if mine not in name_readings(os.path.basename(p)))
        own = [p for p in own if p not in siblings]
    backend = found.pop() if len(found) == 1 and not own else None
    return CachedKey(backend, unread[own[0]] if own else None, others, siblings)


def _maybe_of(path: str, network: str, container_id: str) -> bool:
    """Whether an entry that cannot be read may be this container's on this network: a
    reading of its name says so, and its body, as far as it reads, names no other
    container that a reading of its name is (`mynet-web-2-eth0` naming web-2 is web-2's
    entry; with nothing readable in it, it may be web's of an interface `2-eth0`)."""
    readings = {(n, c) for n, c, _ in name_readings(os.path.basename(path))}
    if (network, container_id) not in readings:
        return False
    named = _named_in_body(path)
    return named is None or named == (network, container_id) or named not in readings


def _named_in_body(path: str) -> Optional[Tuple[str, str]]:
    """The network and container ID an entry's body names (libcni writes both), where
    it is one JSON object that names them; else None."""
    try:
        text = files.read_text(path, "CNI cache file", MAX_CACHE_FILE_BYTES, regular_only=True)
        body = json.loads(text)
    except (BadInput, ValueError, RecursionError):
        return None
    if not isinstance(body, dict):
        return None
    network, container_id = body.get("networkName"), body.get("containerId")
    if isinstance(network, str) and isinstance(container_id, str):
        return network, container_id
    return None


def cached_names(cache_dirs: CacheDirs, limit: int = 4096) -> List[Tuple[str, str]]:
    """(network, container ID) of each cached attachment, for shell completion.

    Unlike `read_cache` this never fails: a TAB press must not print an error, so
    anything unreadable or odd is skipped. Only the two names are parsed (no config
    decoding), and at most `limit` files are read, so it stays fast on a big node.
    """
    paths = []
    for cache_dir in _dirs(cache_dirs):
        folder = results_dir(cache_dir)
        try:
            paths += [os.path.join(folder, e) for e in sorted(os.listdir(folder))]
        except OSError:
            continue
    found = set()
    for path in paths[:limit]:
        entry = os.path.basename(path)
        # isfile: a FIFO planted in the folder would block the shell forever.
        if entry.startswith(".") or not os.path.isfile(path):
            continue
        try:
            with open(path, "rb") as handle:
                cached = json.loads(handle.read(MAX_CACHE_FILE_BYTES))
            names = (cached.get("networkName"), cached.get("containerId"))
            for name in names:
                validate.cni_name(name, "name")
        except (OSError, ValueError, AttributeError, RecursionError, BadInput):
            continue
        found.add(names)
    return sorted(found)


# ConfigMemo's: the portmap entry, host-local's data directory and its ranges.
Decoded = Tuple[Optional[dict], Optional[str], Optional[Tuple[HostRange, ...]]]


class ConfigMemo:
    """The portmap entries of the cached configs already decoded, by their base64 text.

    The containers of one network carry the same conflist bytes: decoding them (base64,
    then JSON) once per read rather than once per file took 14% off reading 1,000
    files. Only what decoded cleanly is kept, so a file whose config is bad fails with
    its own name, and one file's content never stands in for another's: an entry is
    used only for the very same text. The entries are shared: never changed.
    """

    def __init__(self) -> None:
        self._decoded: Dict[str, Decoded] = {}

    def portmap_conf(self, value: Any, source: str) -> Decoded:
        """The portmap entry of the config, and host-local's data directory and ranges
        where the config's main plugin uses host-local (cni/leases.py)."""
        if isinstance(value, str) and value in self._decoded:
            return self._decoded[value]
        decoded = _decode_config(value, source)
        conf = _portmap_conf(decoded, source)
        data_dir = host_local_data_dir(decoded)
        ranges = host_local_ranges(decoded) if data_dir and conf is not None else ()
        found = (conf, data_dir, ranges)
        if isinstance(value, str):
            self._decoded[value] = found
        return found


def read_attachment(path: str, *, configs: Optional[ConfigMemo] = None) -> Attachment:
    """The attachment of one cache file, its namespace not judged (read_entries does).
    `configs`: the configs decoded so far in this read (read_entries passes one for
    all its files)."""
    # (The path as a name from the node: its backslashes doubled, so a warning's
    # `\\xe9` is the byte 0xe9 of the file's name, never the name's own text.)
    source = f"CNI cache file {name_text(path)}"
    try:
        text = files.read_text(path, "CNI cache file", MAX_CACHE_FILE_BYTES, regular_only=True)
    except BadInput as err:
        if os.path.lexists(path) and not os.path.isfile(path):
            raise  # no file at all (a directory, a dangling link): nothing to wait for
        raise _Unfinished(str(err)) from None
    try:
        document = cni_config.load_json(text, source)
    except BadInput as err:
        raise _Unfinished(str(err)) from None
    cached = cni_config.ensure_mapping(document, source)
    kind = cached.get("kind")
    if kind is None and isinstance(cached.get("cniVersion"), str):
        raise _ResultOnly(cached)
    if kind != "cniCacheV1":
        raise BadInput(f"{source}: unknown kind {kind!r} (expected cniCacheV1)")
    container_id = _named(cached.get("containerId", ""), "container ID", source)
    ifname = cached.get("ifName") or ""
    if not isinstance(ifname, str):
        raise BadInput(f"{source}: ifName must be a string")
    conf, data_dir, ranges = (configs or ConfigMemo()).portmap_conf(cached.get("config"), source)
    network = cached.get("networkName") or (conf or {}).get("name") or ""
    network = _named(network, "network name", source)
    _check_file_name(path, network, container_id, ifname, source)
    capability = cached.get("capabilityArgs") or {}
    if not isinstance(capability, dict):
        raise BadInput(f"{source}: capabilityArgs must be an object")
    result = cached.get("result")
    mapping = None
    raw_ports = _ports_given(conf, capability, source) if conf is not None else None
    addresses = cni_config.result_addresses(result, ifname or None, source) if raw_ports else []
    if addresses:
        plugin_conf = dict(conf or {}, name=network, prevResult=result)
        mapping = cni_config.plugin_config(
            plugin_conf,
            container_id,
            source,
            ifname=ifname or None,
            port_mappings_override=raw_ports,
            addresses=addresses,  # parsed once: a third of reading a 1,000-entry cache
            cached=True,
        )
        if mapping.backend == Backend.NFTABLES:
            # The plugin refuses such a config on every call: it never had rules of it,
            # so nothing is expected of it, nor repaired (the entry cannot be read).
            validate.nft_refusals(mapping, source)
        elif mapping.conditions_v4 or mapping.conditions_v6:
            # Free-form: what no rule can be made of is this entry's problem alone.
            buildable(mapping, source)
    # else: no ports, or no address (an L2 network with empty IPAM): the plugin
    # forwards nothing, and neither does anything else expect it to.
    netns = _netns(cached.get("netns"), result, ifname)
    leases = os.path.join(data_dir, network) if data_dir and mapping is not None else None
    return Attachment(
        network, container_id, ifname, path, mapping, netns,
        leases=leases, ranges=ranges, data_dir=data_dir,
    )  # fmt: skip


def _ports_given(conf: dict, capability: dict, source: str) -> Any:
    """The port mappings libcni handed the plugin: `runtimeConfig` is replaced by the
    capability args of the capabilities the plugin's config enables (`portMappings:
    true`); without any, the config's own `runtimeConfig` goes as it is. A portmap
    entry without the capability gets none of the runtime's ports."""
    # (Keys as Go reads them into the plugin's structs: in any case, cni_config.go_field.)
    enabled = cni_config.go_field(conf, "capabilities") or {}
    if not isinstance(enabled, dict):
        raise BadInput(f"{source}: the portmap plugin's capabilities must be an object")
    injected = {k: capability[k] for k, on in enabled.items() if on is True and k in capability}
    runtime = injected if injected else cni_config.go_field(conf, "runtimeConfig") or {}
    if not isinstance(runtime, dict):
        raise BadInput(f"{source}: runtimeConfig must be an object")
    return cni_config.go_field(runtime, "portMappings")


def _netns(netns: Any, result: Any, ifname: str) -> Optional[str]:
    """The container's namespace path: the entry's `netns` (libcni >= 1.0), else the
    `sandbox` of its interface in the ADD result."""
    if isinstance(netns, str) and netns:
        return netns
    interfaces = result.get("interfaces") if isinstance(result, dict) else None
    for iface in interfaces if isinstance(interfaces, list) else ():
        if not isinstance(iface, dict):
            continue
        sandbox = iface.get("sandbox")
        if isinstance(sandbox, str) and sandbox and (not ifname or iface.get("name") == ifname):
            return sandbox
    return None


def _check_file_name(path: str, network: str, container_id: str, ifname: str, source: str) -> None:
    """libcni names a file NETWORK-CONTAINERID-IFNAME and a runtime's DEL finds it by
    that name: a body naming another attachment is no trustworthy entry (gc would take
    the named container's chains for stale, a repair write chains for the body's)."""
    prefix = f"{network}-{container_id}-"
    name = os.path.basename(path)
    matches = name == prefix + ifname if ifname else name.startswith(prefix)
    if not matches:
        raise BadInput(
            f"{source}: names network {network!r}, container {container_id!r}"
            f"{f', interface {ifname!r}' if ifname else ''}, not what its file name says"
        )


def _named(value: Any, what: str, source: str) -> str:
    """A CNI name from the file; the error names the file, so it can be found."""
    try:
        return validate.cni_name(value, what)
    except BadInput as err:
        raise BadInput(f"{source}: {err}") from None


def _decode_config(value: Any, source: str) -> Any:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadInput(f"{source}: config must be a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput(f"{source}: config is not valid base64") from None
    try:
        return cni_config.load_json(raw.decode("utf-8"), f"{source} (config)")
    except UnicodeDecodeError:
        raise BadInput(f"{source}: config is not UTF-8 text") from None


def _portmap_conf(conf: Any, source: str) -> Optional[dict]:
    """The portmap plugin's entry of a conflist (or the config itself), with its name."""
    if conf is None:
        return None
    if not isinstance(conf, dict):
        raise BadInput(f"{source}: the cached config must be a JSON object")
    # A conflist's own keys ("plugins", "name") libcni reads from a map, exactly; a
    # plugin's "type" into a struct (types.NetConf), in any case: `"Type": "portmap"`
    # runs portmap.
    plugins = conf.get("plugins")
    if plugins is None:
        handed = cni_config.as_handed(conf)
        return handed if cni_config.go_field(handed, "type") == "portmap" else None
    if not isinstance(plugins, list):
        raise BadInput(f"{source}: the cached config's plugins must be a list")
    for plugin in plugins:
        handed = cni_config.as_handed(plugin)
        if isinstance(handed, dict) and cni_config.go_field(handed, "type") == "portmap":
            return dict(handed, name=conf.get("name", plugin.get("name")))
    return None
