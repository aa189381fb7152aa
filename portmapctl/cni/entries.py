"""The cache entries libcni names for one container on one network, found with `os`
alone: `add` asks for every mapping given without a backend, and importing
cni/cache.py (which reads them) costs ~5 ms, paid only where there is one to read."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, List, NamedTuple, Optional, Sequence, Tuple, Union

from portmapctl.core.patterns import lazy
from portmapctl.host.paths import RUNTIME_CACHES, dir_identity

if TYPE_CHECKING:
    from portmapctl.core.backend import Backend

# What runtimes name containers with: hex (podman, containerd, CRI-O) or a UUID (Nomad).
# A short form is at least this long (`docker ps` habits: 8 and more; list prints 12):
# a shorter hex ID begins a cached one too often to be refused for it.
MIN_SHORT = 8
_RUNTIME_ID = lazy(r"[0-9a-fA-F-]+")
# The kernel's interface names are shorter than this (CNI_IFNAME ends an entry's name).
IFNAMSIZ = 16


def entry_paths(
    cache_dirs: Union[str, Sequence[str]], network: str, container_id: str
) -> List[str]:
    """The `results/NETWORK-CONTAINERID-*` files of each cache directory (the prefix also
    matches network "a", container "b-c" for "a-b"/"c": the reader tells them apart)."""
    prefix = f"{network}-{container_id}-"
    found = []
    for cache_dir in (cache_dirs,) if isinstance(cache_dirs, str) else cache_dirs:
        folder = os.path.join(cache_dir, "results")
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        found += [os.path.join(folder, name) for name in names if name.startswith(prefix)]
    return found


@dataclass(frozen=True)
class CachedKey:
    """What a container's own cache entries on a network say of its backend
    (cni/cache.py configured_key; here, so that a container with no entry costs add no
    import of cni/cache.py)."""

    backend: Optional[Backend] = None  # configured_backend's answer
    # Why an entry that may be its own cannot be read: the key it holds is not known,
    # so neither is the backend its plugin keeps it in (the caller judges by the node).
    unread: Optional[str] = None
    # The warnings (as list says them) of entries read for it that cannot be read and
    # name another container (its ID begins with this one's and a dash).
    skipped: Tuple[str, ...] = ()
    # The paths of its entries of other interfaces on the network that cannot be read,
    # where the entry of the interface asked about reads (cni/cache.py key_in): not its
    # own key, but the chain they share may hold their rules (unread_entries).
    others_unread: Tuple[str, ...] = ()


def longer_id(
    cache_dirs: Union[str, Sequence[str]], network: str, container_id: str
) -> Optional[str]:
    """The cached ID on `network` that `container_id` is a short form of (a proper
    prefix of an ID longer than the tables print whole: core/ids.SHORT_ID), when the
    cache has no entry for `container_id` itself; else None. A chain is named after
    the whole ID: the short one names another. Only a runtime's kind of ID (hex, a
    UUID's dashes), MIN_SHORT characters or more, is taken for a short form: `web`
    beside a cached `webserver-01` is a container of its own, and so is `cafe` (a
    hand-named hex ID that a cached one begins with, 1 in 65,536 per entry). A start
    that ends at a dash of the cached ID is one only in a UUID (Nomad's short
    allocation ID, its first group): `web01` beside `web01-blue` is its own."""
    if len(container_id) < MIN_SHORT or not _RUNTIME_ID.fullmatch(container_id):
        return None
    own, start = f"{network}-{container_id}-", f"{network}-{container_id}"
    found = None
    for cache_dir in (cache_dirs,) if isinstance(cache_dirs, str) else cache_dirs:
        try:
            names = os.listdir(os.path.join(cache_dir, "results"))
        except OSError:
            continue
        for name in names:
            # Its own entry (one listing answers both questions), unless what follows
            # is longer than an interface name can be: the rest of a UUID, `nomad-`
            # `0b4e5e4f-` then `7a3c-...-eth0`.
            if name.startswith(own) and len(name) - len(own) < IFNAMSIZ:
                return None
            # A '-' after the prefix ends the ID there (or goes on in an ID with a
            # dash, which is not the short form of anything list prints), except in
            # a UUID: Nomad's short allocation ID is its first group
            # (`nomad alloc status 0b4e5e4f`), and a dash follows it in the name.
            at_dash = name[len(start) :][:1] == "-"
            if found is None and name.startswith(start):
                from portmapctl.core.ids import SHORT_ID, UUID  # (rarely: a near miss)

                whole = _container_id(os.path.join(cache_dir, "results", name), network)
                # (Another network's entry starts so too, `podman-default-kube-network-`
                # beside `--network podman --container de`: its ID does not.)
                if (
                    whole is not None
                    and len(whole) > SHORT_ID
                    and whole.startswith(container_id)
                    and (not at_dash or UUID.fullmatch(whole) is not None)
                ):
                    found = whole
    return found


def _container_id(path: str, network: str) -> Optional[str]:
    """The entry's `containerId`, None when it is another network's entry; from its
    name where it cannot be read, if that is a runtime's kind of ID (an ifname with a
    '-' then shows in the ID: the message only has to point at it)."""
    import json

    try:
        with open(path, "rb") as file:
            body = json.load(file)
        found, named = body.get("containerId"), body.get("networkName")
        if isinstance(named, str) and named != network:
            return None
        if isinstance(found, str) and found:
            return found
    except (OSError, ValueError, AttributeError):
        pass
    guessed = os.path.basename(path)[len(network) + 1 :].rpartition("-")[0]
    return guessed if _RUNTIME_ID.fullmatch(guessed) else None


class UnreadCache(NamedTuple):
    """A runtime's libcni cache below a directory read, not read itself (RUNTIME_CACHES):
    the cache directory to give for it, whose it is, and its entries' file names."""

    cache_dir: str
    runtime: str
    names: Tuple[str, ...]
    unread: str  # what list, check and gc make of its containers (host/paths.RuntimeCache)
    holds: bool  # gc keeps a container by an entry's name here (RuntimeCache.holds)

    def warning(self, read: Sequence[str]) -> str:
        """The one line every command says of it. `read`: the directories read."""
        from portmapctl.core.text import shell_word  # (add's path finds none)

        # Quoted as the cache note's command spells them (ops/node.py): pasted, a
        # directory with a space in it must stay one option's value.
        given = " ".join(f"--cni-cache-dir {shell_word(d)}" for d in (*read, self.cache_dir))
        count = len(self.names)
        return (
            f"{os.path.join(self.cache_dir, 'results')} holds {count} CNI cache"
            f" {'entry' if count == 1 else 'entries'} not read here ({self.runtime} cache):"
            f" {self.unread}; give {given}"
        )


def unread_caches(cache_dirs: Sequence[str]) -> List[UnreadCache]:
    """The runtime caches below `cache_dirs` that hold an entry (a name libcni's
    NETWORK-CONTAINERID-IFNAME reads) and are not among them
    (a listing of each: a missing one costs a failed open). Told apart by device and
    inode (host/paths.dir_identity): /var/lib/cni a symlink to /data/cni, with
    /data/cni/cache given, is read (by normpath, which follows no symlink, it was warned
    of at every run); /proc/PID/root/D/cache of a runtime in a mount namespace of its
    own is not the host's D/cache (by real path it was, and gc held none of its
    containers)."""
    read: Optional[set] = None
    found = []
    for cache_dir in cache_dirs:
        for known in RUNTIME_CACHES:
            below = os.path.join(cache_dir, known.below)
            try:
                names = os.listdir(os.path.join(below, "results"))
            except OSError:
                continue
            names = [n for n in names if not n.startswith(".")]
            if not names:
                continue
            if read is None:  # (rarely: a cache below that holds a name)
                read = {dir_identity(d) for d in cache_dirs}
            identity = dir_identity(below)
            if identity in read:
                continue
            read.add(identity)  # (said once, under the first spelling)
            # Only the names gc keeps containers by (libcni's NETWORK-CONTAINERID-IFNAME):
            # a README or lost+found there was warned of as entries at every run.
            from portmapctl.cni.cache import name_readings  # (rarely: a cache below)

            entries = tuple(sorted(n for n in names if name_readings(n)))
            if entries:
                found.append(UnreadCache(below, known.runtime, entries, known.unread, known.holds))
    return found
