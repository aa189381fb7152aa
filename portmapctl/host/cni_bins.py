"""The node's `portmap` plugin binaries, read (never run) to tell whether they honour
the config key `"backend": "nftables"` (core/plugin_binary.py says how, and what it
costs). Read only where a cache entry's backend cannot be told from the rules on the
node (ops/check/followed_entries.py).

The binaries are the host's files: under --netns too (a network namespace has no
files of its own). A dump (--snapshot, --nft-snapshot) may be another node's: none is
read for it (the caller's choice)."""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from portmapctl.core.plugin_binary import KeySupport, key_support_of
from portmapctl.host.files import open_regular, read_chunks
from portmapctl.host.paths import PORTMAP

# A portmap binary is 2.5-5 MB (Debian's 1.1.1, upstream's v1.6.2 to v1.9.1); a
# multi-call binary of every plugin (k3s's `cni`, which `portmap` links to) some 60 MB.
# Above this, nothing is told of the file (not read: a bigger one is no plugin); below
# it, read a MiB at a time, never held whole (the DaemonSet's limit is 256 MiB).
MAX_BYTES = 128 << 20


@dataclass(frozen=True)
class PortmapBinary:
    """One `portmap` found: what it does with the key (None: cannot be told, `error`
    saying why)."""

    path: str
    support: Optional[KeySupport]
    error: Optional[str] = None


@dataclass(frozen=True)
class PortmapBinaries:
    """The `portmap` binaries of the directories looked in (each file once); `stated`:
    those directories were given (--cni-bin-dir), not the defaults."""

    dirs: Tuple[str, ...]
    found: Tuple[PortmapBinary, ...]
    stated: bool = True

    @property
    def verdict(self) -> Optional[KeySupport]:
        """What every binary found does with the key, where they all tell and agree;
        None where none is found, one cannot be told, or they disagree (two runtimes,
        each with its own plugin: which one added a container is not known)."""
        said = {b.support for b in self.found}
        if len(said) != 1:
            return None
        (only,) = said
        return only

    def words(self) -> str:
        """The binaries, as a reason names them: `/opt/cni/bin/portmap`, and so on."""
        return ", ".join(b.path for b in self.found)


def portmap_binaries(dirs: Sequence[str], stated: bool = True) -> PortmapBinaries:
    """The file `portmap` of each of `dirs` that has one (a symlink followed; the same
    file through two directories, once), each read with MAX_BYTES at most, and one that
    cannot be looked at (but for "no such file"), which tells nothing; `stated`: as
    PortmapBinaries says."""
    found = []
    seen = set()
    for folder in dirs:
        path = os.path.join(folder, PORTMAP)
        try:
            identity = os.stat(path)
        except ValueError:
            continue  # (a NUL in the name: no such file)
        except OSError as err:
            if err.errno in (errno.ENOENT, errno.ENOTDIR):
                continue  # (no such file, or no directory: nothing there)
            # A symlink loop, a directory this process may not search: a binary may be
            # there, unread; skipped, the other directories' decided alone.
            found.append(PortmapBinary(path, None, err.strerror or str(err)))
            continue
        key = (identity.st_dev, identity.st_ino)
        if key in seen:
            continue
        seen.add(key)
        if not stat.S_ISREG(identity.st_mode):
            # (Never opened: opening a device has effects of its own, /dev/watchdog
            # arms the node's watchdog. open_regular's fstat still checks what it opens.)
            found.append(PortmapBinary(path, None, "not a regular file"))
            continue
        found.append(_read(path))
    return PortmapBinaries(tuple(dirs), tuple(found), stated)


def _read(path: str) -> PortmapBinary:
    """A chunk at a time (never held whole), and a file over MAX_BYTES not at all."""
    try:
        with open_regular(path) as fd:
            if os.fstat(fd).st_size > MAX_BYTES:
                return PortmapBinary(path, None, f"larger than {MAX_BYTES >> 20} MiB")
            support = key_support_of(read_chunks(fd, MAX_BYTES))
    except OSError as err:
        return PortmapBinary(path, None, err.strerror or str(err))
    return PortmapBinary(path, support, None if support is not None else "not a Go portmap plugin")
