"""Whether a namespace path holds a network namespace in any mount namespace of the node.

A path that shows nothing from here may still hold a live namespace in another mount
namespace (a runtime that keeps its namespaces on a mount of its own, a kind node's).
Every mount namespace a process is in is seen through that process's /proc/PID/root,
so from the host's PID namespace, as root, all of them can be looked at: a path that
holds nothing in any of them names a namespace that is gone (deleted this boot, as
`ip netns del` and podman do). Anything that cannot be looked at says "cannot tell".
"""

from __future__ import annotations

import os
import stat
from typing import Collection, Dict, Iterator, List, Optional, Tuple

PROC = "/proc"
PROC_USER_INIT_INO = 0xEFFFFFFD  # the initial user namespace's fixed inode number
CAP_SYS_PTRACE = 19
# As the kernel's path walk: a symlink loop (or a very long chain) is given up on.
MAX_LINKS = 40

# Per path: True (a namespace there in some mount namespace), False (nothing there in
# any), None (cannot tell).
Sightings = Dict[str, Optional[bool]]


class _Unknown(Exception):
    """Something could not be looked at: nothing is judged."""


def sightings(paths: Collection[str], nsfs: Optional[int]) -> Sightings:
    """What every other mount namespace shows at each of `paths` (absolute, normalised).
    `nsfs`: the device every namespace file is on (None: cannot tell anything)."""
    if nsfs is None or not paths:
        return {p: None for p in paths}
    found: Sightings = {p: False for p in paths}
    try:
        for root in _other_roots():
            for path in paths:
                if found[path] is False:
                    found[path] = _holds_namespace(root, path, nsfs)
            if False not in found.values():
                break  # each one seen, or not to be judged: no need to look further
    except _Unknown:
        return {p: None for p in paths}
    return found


def _other_roots() -> Iterator[int]:
    """The root directory, open, of each mount namespace other than ours that a process
    is in, one at a time (a node's thousand containers would be a thousand descriptors
    at once). A process gone meanwhile is passed by (its mount namespace, if another
    process is still in it, is met through that one); one that cannot be looked at:
    _Unknown."""
    if not _sees_every_process():
        raise _Unknown
    try:
        ours = _ns_id("self")
        our_first = _first_mount("self")
        pids = [name for name in os.listdir(PROC) if name.isdigit()]
    except OSError:
        raise _Unknown from None
    seen = {ours}
    for pid in pids:
        try:
            try:
                before = _ns_id(pid)
            except PermissionError:
                # A process we may not look into (a sandbox's PID 1): its mount
                # namespace is ours if it holds our first mount (a mount is in one
                # namespace, its ID unique); if not, nothing can be told.
                if _first_mount(pid) == our_first:
                    continue
                raise _Unknown from None
            if before in seen:
                continue
            fd = os.open(f"{PROC}/{pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, ProcessLookupError):
            continue  # gone meanwhile
        except OSError:
            raise _Unknown from None
        try:
            try:
                same = _ns_id(pid) == before
            except (FileNotFoundError, ProcessLookupError):
                continue  # gone meanwhile: its namespace is met through another, or gone
            except OSError:
                raise _Unknown from None
            if not same:  # the PID went and came back meanwhile
                raise _Unknown
            seen.add(before)
            yield fd
        finally:
            os.close(fd)


def _sees_every_process() -> bool:
    """Whether /proc lists every process to us, each one's root ours to look into:
    CAP_SYS_PTRACE in the initial user namespace (without it, /proc mounted with
    hidepid leaves out the very processes whose mounts would show a namespace)."""
    try:
        if os.stat(f"{PROC}/self/ns/user").st_ino != PROC_USER_INIT_INO:
            return False
        with open(f"{PROC}/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_SYS_PTRACE & 1)
    except (OSError, ValueError, IndexError):
        return False
    return False


def _ns_id(pid: str) -> Tuple[int, int]:
    info = os.stat(f"{PROC}/{pid}/ns/mnt")
    return info.st_dev, info.st_ino


def _first_mount(pid: str) -> str:
    """The ID of the first mount /proc/PID/mountinfo lists (readable where ns/mnt is
    not)."""
    with open(f"{PROC}/{pid}/mountinfo") as mounts:
        return mounts.readline().split(" ", 1)[0]


def _holds_namespace(root: int, path: str, nsfs: int) -> Optional[bool]:
    """Whether `path`, resolved inside the root directory `root` (its symlinks too:
    an absolute one, /var/run -> /run, means that root's /run, not ours), is a network
    namespace there: True, False (nothing there), None (something else: the empty
    mount point of a namespace mounted elsewhere, or cannot be looked at)."""
    try:
        where = _resolve(root, path)
        if where is None:
            return False
        info = os.stat(where, dir_fd=root, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return None
    return True if info.st_dev == nsfs else None


def _resolve(root: int, path: str) -> Optional[str]:
    """`path` as a path relative to `root` without symlinks; None when a part of it is
    missing. OSError for what cannot be looked at."""
    todo = [p for p in path.split("/") if p not in ("", ".")]
    todo.reverse()
    done: List[str] = []
    links = 0
    while todo:
        part = todo.pop()
        if part == "..":
            if done:
                done.pop()
            continue
        here = "/".join([*done, part])
        try:
            info = os.stat(here, dir_fd=root, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat.S_ISLNK(info.st_mode):
            links += 1
            if links > MAX_LINKS:
                raise OSError(40, "too many levels of symbolic links")
            target = os.readlink(here, dir_fd=root)
            if target.startswith("/"):
                done = []
            todo.extend(reversed([p for p in target.split("/") if p not in ("", ".")]))
            continue
        done.append(part)
    return "/".join(done) or "."
