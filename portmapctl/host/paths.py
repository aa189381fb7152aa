"""Where things live on a node (kept apart so the CLI can name them cheaply).

`PORTMAPCTL_RUN_DIR` moves the run directory (lock, gc state) elsewhere: for tests,
and for hosts where several independent portmapctl setups must not share one lock.
"""

import os
from typing import NamedTuple, Optional, Sequence, Tuple

# libcni's cache: the runtime's own, and the one Multus gives libcni for the delegate
# networks (its `cniDir`, this by default). Both are read by default where they exist
# (SPEC §3): on a Multus node the network that names a pod's portmap chain is cached
# only in the second.
CNI_CACHE_DIR = "/var/lib/cni"
MULTUS_CACHE_DIR = "/var/lib/cni/multus"


class RuntimeCache(NamedTuple):
    """A libcni cache a runtime keeps below the cache directory portmapctl reads, and
    that is not read unless given: its containers' chains look stale without it."""

    below: str  # its directory, relative to a cache directory read
    runtime: str  # whose it is, as a warning names it
    # What list, check and gc make of its containers while it is not read.
    unread: str
    # Whether gc keeps a container by an entry's name there (ops/gc/liveness.held_ids):
    # cri-dockerd's pods have no other entry. Multus's have their outer entry in the
    # runtime's cache, which gc reads: by it, with --netns-liveness too, as gc judged
    # them before this cache was looked at (held, a zombie pod's chain stayed).
    holds: bool


# cri-dockerd's --cni-cache-dir default, /var/lib/cni/cache (as kubelet's dockershim's
# before it, Kubernetes 1.16-1.23; k3s --docker runs cri-dockerd with
# that default): docs/troubleshooting.md, "Every pod looks stale on a cri-dockerd or k3s
# --docker node", says where each runtime keeps it. And Multus's, where it is not among
# the directories given (read by default where it exists): its pods are live by the
# outer multus-cni-network entry, whose config holds no portmap, so the chains its
# delegates' entries name were checked against nothing (a flushed node "healthy").
# Looked at (read-only) below every directory read.
RUNTIME_CACHES = (
    RuntimeCache(
        "cache",
        "cri-dockerd's, k3s --docker's or dockershim's",
        "list and check call their containers stale, gc keeps their chains by the entries' names",
        holds=True,
    ),
    RuntimeCache(
        "multus",
        "Multus's delegate-network",
        "check expects none of their chains (a missing one is not reported), gc judges"
        " their pods by the runtime's entries",
        holds=False,
    ),
)
# host-local's own default for a config without `dataDir` (cni/leases.py);
# PORTMAPCTL_HOST_LOCAL_DIR (host/settings.py) moves it: portmapctl in a container that
# mounts the host's elsewhere, and tests, which never read the machine's /var/lib/cni.
HOST_LOCAL_DATA_DIR = "/var/lib/cni/networks"
# Where runtimes look for the CNI plugins by default, read (never run) for what their
# `portmap` does with the key "backend": "nftables" (host/cni_bins.py): containerd's
# and CRI-O's bin_dir and the upstream release's, /opt/cni/bin; podman's
# cni_plugin_dirs (containers.conf: /usr/local/libexec/cni, /usr/libexec/cni,
# /usr/local/lib/cni, /usr/lib/cni, /opt/cni/bin; Debian's package, /usr/lib/cni);
# k3s's, /var/lib/rancher/k3s/data/cni since 1.31 (links into the release's bin), and
# data/current/bin before it. --cni-bin-dir replaces them.
CNI_BIN_DIRS = (
    "/opt/cni/bin",
    "/usr/libexec/cni",
    "/usr/lib/cni",
    "/usr/local/libexec/cni",
    "/usr/local/lib/cni",
    "/var/lib/rancher/k3s/data/cni",
    "/var/lib/rancher/k3s/data/current/bin",
)
PORTMAP = "portmap"  # the plugin's file name in a CNI bin directory
# (The default is what the man page names, whatever this process was given.)
DEFAULT_RUN_DIR = "/run/portmapctl"
# (As host/settings.RUN_DIR reads it, which refuses one that is not absolute.)
RUN_DIR = os.environ.get("PORTMAPCTL_RUN_DIR", "").strip() or DEFAULT_RUN_DIR

# Where a distribution puts iptables, nft (and, on RHEL, ip). Not on cron's PATH
# (Debian's cron runs jobs with /usr/bin:/bin), nor on many users': looked in after PATH.
SBIN_DIRS = "/usr/sbin:/sbin"


def default_cni_cache_dirs() -> Tuple[str, ...]:
    """The cache directories read without --cni-cache-dir: /var/lib/cni, and Multus's
    where it exists (a node without Multus is told of no cache it does not have: not in
    JSON, the no-cache warning, nor the metrics' `dir` labels)."""
    if os.path.isdir(MULTUS_CACHE_DIR):
        return (CNI_CACHE_DIR, MULTUS_CACHE_DIR)
    return (CNI_CACHE_DIR,)


# PORTMAPCTL_CNI_BIN_DIR: --cni-bin-dir's variable (directories separated by spaces,
# click's rule for a repeatable option), read here too for the callers that build their
# options without the command line; tests point it at a directory with no plugin.
CNI_BIN_DIR_ENV = "PORTMAPCTL_CNI_BIN_DIR"


def guessed_cni_bin_dirs() -> Tuple[str, ...]:
    """The default CNI bin directories: CNI_BIN_DIRS, unless tests' seam
    PORTMAPCTL_CNI_BIN_DEFAULTS moves them (host/settings.py declares it). Still the
    defaults: a guess of where the runtime's plugins are, whose binaries only add doubt
    (ops/check/binary_verdicts.py), unlike --cni-bin-dir's statement."""
    from portmapctl.host import settings  # (it imports this module)

    return settings.CNI_BIN_DEFAULTS.value()


def stated_cni_bin_dirs() -> Tuple[str, ...]:
    """PORTMAPCTL_CNI_BIN_DIR's directories: an operator's statement, as --cni-bin-dir
    is (none: unset or empty, the defaults then, as every variable's empty value is:
    host/settings.py; an empty one never decides a write, defaults only add doubt)."""
    return tuple(os.environ.get(CNI_BIN_DIR_ENV, "").split())


def default_cni_bin_dirs() -> Tuple[str, ...]:
    """The CNI bin directories looked in without --cni-bin-dir: its variable's, else
    the defaults (guessed_cni_bin_dirs)."""
    return stated_cni_bin_dirs() or guessed_cni_bin_dirs()


def same_dirs(dirs: Sequence[str]) -> Tuple[str, ...]:
    """`dirs` with each directory once, under the spelling given first: `D`, `D/`, a
    symlink to D, a path through one and a bind mount of D are the same directory, whose
    entries were read (counted, warned of, a metrics series each) once per spelling. An
    empty one stays, for the caller to refuse."""
    seen = set()
    found = []
    for folder in dirs:
        key = dir_identity(folder) if folder else folder
        if key not in seen:
            seen.add(key)
            found.append(folder)
    return tuple(found)


def dir_identity(folder: str) -> object:
    """What tells `folder` from another directory: its device and inode, one stat(2).
    Not its real path: /proc/PID/root/var/lib/cni, a runtime's own cache in a mount
    namespace of its own (rootlesskit's), has the real path /var/lib/cni (the link
    reads "/"), the host's, another directory; and realpath asks for the working
    directory of a relative path, which fails once that was deleted. One that cannot be
    looked at (missing, a loop) by its spelling, normalised: its reader says why."""
    try:
        found = os.stat(folder)
    except (OSError, ValueError):
        return os.path.normpath(folder)
    return (found.st_dev, found.st_ino)


def find_tool(name: str) -> Optional[str]:
    """The path of the command `name`: on PATH, else in the sbin directories."""
    return _which(name, os.environ.get("PATH")) or _which(name, SBIN_DIRS)


def _which(name: str, path: Optional[str]) -> Optional[str]:
    """shutil.which(name, path=path) for a name without a directory, as it does it
    (an empty PATH entry is the current directory). Not shutil itself: its import loads
    bz2, lzma and zlib, 1.6 ms of every `add` for this loop."""
    if path is None:
        path = os.confstr("CS_PATH") if "CS_PATH" in os.confstr_names else os.defpath
    if os.path.dirname(name):
        folders = [""]
    elif not path:
        return None
    else:
        folders = list(dict.fromkeys(path.split(os.pathsep)))
    for folder in folders:
        found = os.path.join(folder, name)
        if os.path.exists(found) and os.access(found, os.F_OK | os.X_OK):
            if not os.path.isdir(found):
                return found
    return None
