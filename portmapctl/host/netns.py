"""Enter a network namespace for the duration of a command.

Python < 3.12 has no os.setns, so libc's setns(2) is called through ctypes; that
costs nothing at start-up, unlike importing pyroute2. Child processes (iptables-save,
iptables-restore) inherit the namespace, and /proc/sys/net opened while inside is the
namespace's own.
"""

from __future__ import annotations

import contextlib
import functools
import os
import struct
import time
from enum import Enum
from typing import (
    Any,
    Callable,
    Collection,
    Dict,
    FrozenSet,
    Iterable,
    Iterator,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Set,
    Tuple,
)

from portmapctl.errors import BadInput, HostProblem
from portmapctl.host import mountns

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"


def resolve(name_or_path: str) -> str:
    """`foo` means /run/netns/foo; anything with a slash is a path already."""
    if "/" in name_or_path:
        return name_or_path
    if not name_or_path:
        # Bad input (SPEC §4: exit 2), as an empty --snapshot is: `--netns "$NS"` with
        # NS unset is a mistake in the command line, not a namespace missing here.
        raise BadInput("--netns is empty: give a namespace name (/run/netns/NAME) or a path")
    if name_or_path in (".", ".."):
        raise HostProblem(f"network namespace {name_or_path!r} not found")
    return os.path.join(NETNS_RUN_DIR, name_or_path)


@functools.lru_cache(maxsize=1)
def _libc() -> Any:
    """ctypes' handle of libc (Python < 3.12), made once: 10 us a setns otherwise."""
    import ctypes  # only with --netns: 2-10 ms that every other run need not pay

    return ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):  # Python 3.12+
        os.setns(fd, CLONE_NEWNET)
        return
    if _libc().setns(fd, CLONE_NEWNET) != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def entered(name_or_path: Optional[str]) -> Iterator[None]:
    """Run the body inside the namespace, then return to the original one."""
    if name_or_path is None:
        yield
        return
    path = resolve(name_or_path)  # "" is refused (bad input): `--netns "$UNSET"` is not the host
    try:
        # O_NONBLOCK: a FIFO at that path would otherwise wait forever for a writer;
        # opened without blocking, setns refuses it like any other non-namespace.
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise HostProblem(
            f"network namespace {name_or_path!r} not found ({path} does not exist)"
        ) from None
    except PermissionError:
        # As root, what refuses is the process's own confinement (no CAP_SYS_PTRACE for
        # another process's /proc/PID/ns/net, a seccomp or LSM profile): "run as root"
        # would send an operator in circles.
        advice = "permission denied" if os.geteuid() == 0 else "run as root"
        raise HostProblem(f"cannot open network namespace {path}: {advice}") from None
    except OSError as err:
        raise HostProblem(f"cannot open network namespace {path}: {err.strerror}") from None
    original = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            _setns(target)
        except OSError as err:
            raise HostProblem(
                f"cannot enter network namespace {path}: {err.strerror}"
                " (needs root / CAP_SYS_ADMIN, and a network namespace file)"
            ) from None
        try:
            yield
        finally:
            _setns(original)
    finally:
        os.close(target)
        os.close(original)


@contextlib.contextmanager
def scratch() -> Iterator[bool]:
    """Run the body in a new, empty network namespace of the calling thread's own (the
    processes it starts inherit it), then return to the one it left: what is made there
    goes with it. For a probe that would create what it opens where the user works (a
    legacy nat table: ops/conditions.py). Yields False, staying where it is, when none
    can be made (no CAP_SYS_ADMIN, a seccomp profile): the caller then does without."""
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            _unshare(CLONE_NEWNET)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            _setns(original)
    finally:
        os.close(original)


def _unshare(flags: int) -> None:
    if hasattr(os, "unshare"):  # Python 3.12+
        os.unshare(flags)
        return
    if _libc().unshare(flags) != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


# --- is a cached container's namespace still there? -----------------------------------

# The initial PID namespace has this fixed inode number (PROC_PID_INIT_INO): only there
# do /proc/PID paths name the host's processes.
PROC_PID_INIT_INO = 0xEFFFFFFC
PROC_MNT_INIT_INO = 0xEFFFFFF8  # the initial mount namespace's, where the kernel fixes it


class NetnsState(str, Enum):
    """What became of the network namespace a CNI cache entry names."""

    PRESENT = "present"
    GONE = "gone"  # not in its visible directory, or died with the boot: a zombie entry
    UNSEEN = "unseen"  # its directory is not visible here (portmapctl in a container)
    UNKNOWN = "unknown"  # the entry names no namespace, or it could not be looked at

    def __str__(self) -> str:
        return self.value


def sees_the_hosts_mounts() -> bool:
    """Whether this process is in the host's (the initial) mount namespace. A
    container, a DaemonSet's even with hostPID, has one of its own.

    Recent kernels give the initial mount namespace a fixed inode number
    (PROC_MNT_INIT_INO); older ones a number of the dynamic range (from 0xF0000000), so
    there it is told by being PID 1's, in the initial PID namespace. Looking at PID 1's
    needs root (and some sandboxes refuse even that): what cannot be looked at says no,
    the safe side (nothing more is judged gone than before)."""
    try:
        if os.stat("/proc/self/ns/pid").st_ino != PROC_PID_INIT_INO:
            return False
        ours = os.stat("/proc/self/ns/mnt")
        if ours.st_ino == PROC_MNT_INIT_INO:
            return True
        init = os.stat("/proc/1/ns/mnt")
    except OSError:
        return False
    return (ours.st_dev, ours.st_ino) == (init.st_dev, init.st_ino)


def boot_time(btime: Optional[float] = None) -> Optional[float]:
    """When this boot began, as the wall clock counted then; None if not known.
    `btime`: /proc/stat's (None: read there).

    /proc/stat's btime (whole seconds, so before the boot) is the wall clock now less
    the time since boot: a clock stepped forward since (a VM resumed or restored from a
    snapshot, NTP after a boot without RTC or with fake-hwclock) moves it later, past
    files written early this boot. /dev's birth (devtmpfs, made by the kernel as it
    boots) keeps the clock of then; a step back moves btime earlier instead. The
    earlier of the two is before every file of this boot, unless the clock went back
    and then forward again."""
    return _earlier(_btime() if btime is None else btime, _birth_time("/dev"))


def _earlier(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return b if a is None else a if b is None else min(a, b)


def _btime() -> Optional[float]:
    try:
        with open("/proc/stat") as handle:
            for line in handle:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


AT_FDCWD = -100
STATX_BTIME = 0x800
_STATX_SIZE = 256  # struct statx; stx_mask at 0, stx_btime (s64 sec, u32 nsec) at 80


def _birth_time(path: str) -> Optional[float]:
    """statx(2)'s birth time of `path` (Python < 3.15 has no os.statx); None where the
    libc, kernel or filesystem gives none."""
    import ctypes  # only when an entry's age is asked: most runs never do

    try:
        statx = ctypes.CDLL(None, use_errno=True).statx
    except (OSError, AttributeError):
        return None
    buf = ctypes.create_string_buffer(_STATX_SIZE)
    if statx(AT_FDCWD, os.fsencode(path), 0, STATX_BTIME, buf) != 0:
        return None
    (mask,) = struct.unpack_from("=I", buf.raw, 0)
    if not mask & STATX_BTIME:
        return None
    seconds, nanoseconds = struct.unpack_from("=qI", buf.raw, 80)
    return seconds + nanoseconds / 1e9


class NamespaceView:
    """Looks up namespace paths from this mount namespace, remembering per directory
    whether it is the host's (one view per command run: namespaces come and go).

    `host_mounts`: whether this is the host's mount namespace; `booted`: /proc/stat's
    btime (None: asked of the kernel, once, when first needed; tests say them), of
    which /dev's birth, where earlier, is taken instead (boot_time); `elsewhere`: what
    the other mount namespaces show at given paths (mountns.sightings; tests say it).
    """

    def __init__(
        self,
        host_mounts: Optional[bool] = None,
        booted: Optional[float] = None,
        elsewhere: Optional[Callable[[Collection[str]], mountns.Sightings]] = None,
    ) -> None:
        self._visible: Dict[str, bool] = {}
        self._holds_cached: Set[str] = set()
        self._looked: Set[Tuple[str, FrozenSet[str]]] = set()
        self._host_mounts = host_mounts
        self._booted = booted
        self._boot: Optional[float] = None
        try:
            self._nsfs: Optional[int] = os.stat("/proc/self/ns/net").st_dev
        except OSError:
            self._nsfs = None
        self._elsewhere = elsewhere or (lambda paths: mountns.sightings(paths, self._nsfs))
        self._sighted: mountns.Sightings = {}

    def is_namespace(self, path: str) -> Optional[bool]:
        """True for a network namespace file, False when nothing is at `path`, None
        when something else is there: that cannot be judged."""
        try:
            info = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError:
            return None
        # Every namespace file shares the nsfs device. A file that does not is what a
        # mount namespace sees of a namespace mounted after it was cut off from the
        # host's mounts (a DaemonSet's hostPath /run/netns without HostToContainer
        # propagation): the runtime's empty mount point, its namespace alive. Runtimes
        # remove the file with the namespace, so a file left is no sign of one gone.
        if self._nsfs is not None and info.st_dev == self._nsfs:
            return True
        return None

    def directory_visible(self, directory: str) -> bool:
        """Whether namespaces kept in `directory` can be seen from here (where to look
        for young uncached ones; `state` asks more of a cache entry's directory).

        /proc/PID paths only in the host's PID namespace. Others: where the directory
        holds at least one network namespace. An empty or missing one is what a
        container without the host's mounted in sees, and, even from the host's own
        mount namespace, what a runtime in a mount namespace of its own keeps its live
        namespaces behind (a kind node's).
        """
        if directory in self._visible:
            return self._visible[directory]
        if directory.startswith("/proc/"):
            try:
                visible = os.stat("/proc/self/ns/pid").st_ino == PROC_PID_INIT_INO
            except OSError:
                visible = False
        else:
            try:
                names = os.listdir(directory)
            except OSError:
                names = []
            visible = any(self.is_namespace(os.path.join(directory, n)) for n in names)
        self._visible[directory] = visible
        return visible

    def _holds_a_cached_namespace(self, directory: str, cached: Iterable[str]) -> bool:
        """Whether `directory` holds a namespace that a cache entry names: that the
        runtime's namespaces are seen here. Any namespace is no such sign: the host's
        own /run/netns holds the host's (`ip netns add`, podman's: a kind node's own,
        with the podman provider) where a runtime in a mount namespace of its own keeps
        its live ones out of sight. Once seen, for the view's life (a later read of a
        few entries tells fewer)."""
        looked = (directory, frozenset(cached))
        if directory not in self._holds_cached and looked not in self._looked:
            self._looked.add(looked)  # each directory once per read, not per entry
            if any(
                os.path.dirname(os.path.normpath(p)) == directory and self.is_namespace(p)
                for p in looked[1]
                if os.path.isabs(p)
            ):
                self._holds_cached.add(directory)
        return directory in self._holds_cached

    def _died_with_the_boot(self, path: str, entry: str) -> bool:
        """Whether the namespace at `path` (in a directory not visible) is one a
        reboot took: nothing is at `path` seen from the host's mount namespace, and the
        entry was written before this boot, when no namespace of now existed (a node
        just rebooted: /run is new, the cache on disk is not, and its dead entries must
        not be repaired back). One written this boot may be a live container's that a
        runtime of another mount namespace keeps out of sight: not judged."""
        if path.startswith("/proc/") or not self._on_the_host():
            return False
        return self._written_before_the_boot(entry) and self.is_namespace(path) is False

    def _written_before_the_boot(self, entry: str) -> bool:
        booted = self._boot_time()
        try:
            written = os.stat(entry).st_mtime
        except OSError:
            return False
        return booted is not None and written < booted

    def _gone_everywhere(self, path: str, cached: Iterable[str]) -> bool:
        """Whether nothing is at `path` (not under /proc), seen from the host's mount
        namespace and from every other mount namespace a process is in: a namespace
        deleted this boot (`ip netns del`, podman's), in a directory that shows no
        other namespace the cache names. A runtime that keeps its live ones out of the
        host's sight (a kind node's) shows them in its own mount namespace. Looked up
        for every such path of the read at once, each once per view."""
        if path.startswith("/proc/") or not self._on_the_host():
            return False
        if path not in self._sighted:
            if self.is_namespace(path) is not False:
                self._sighted[path] = None  # something here: is_namespace's to judge
                return False
            wanted = {path}
            for other in cached:
                other = os.path.normpath(other) if os.path.isabs(other) else ""
                seen_dir = os.path.dirname(other) in self._holds_cached
                if other and not other.startswith("/proc/") and not seen_dir:
                    if other not in self._sighted and self.is_namespace(other) is False:
                        wanted.add(other)
            self._sighted.update(self._elsewhere(sorted(wanted)))
        return self._sighted.get(path) is False

    def dated_by_the_entry(self, path: Optional[str], state: NetnsState) -> bool:
        """Whether when an entry was written may change `state` of `path` (the rest is
        the same for every entry naming it): one not seen (a reboot's), or at a
        /proc/PID that is there (a PID reused since)."""
        proc = state == NetnsState.PRESENT and os.path.normpath(path or "").startswith("/proc/")
        return state == NetnsState.UNSEEN or proc

    def _on_the_host(self) -> bool:
        if self._host_mounts is None:
            self._host_mounts = sees_the_hosts_mounts()
        return self._host_mounts

    def _boot_time(self) -> Optional[float]:
        if self._boot is None:
            self._boot = boot_time(self._booted)
        return self._boot

    def state(
        self, path: Optional[str], entry: Optional[str] = None, cached: Iterable[str] = ()
    ) -> NetnsState:
        """What became of the namespace at `path`, named by the cache file `entry`
        (None: not told, so not judged by when the entry was written). `cached`: the
        namespace paths of the cache entries read with it; a path is gone from a
        directory that holds one of them."""
        if not path or not os.path.isabs(path):
            return NetnsState.UNKNOWN
        path = os.path.normpath(path)
        if path.startswith("/proc/"):
            parts = path.split("/")  # ["", "proc", PID, "ns", "net"] or a task path
            directory = "/proc/"
            if len(parts) < 3 or not parts[2].isdigit():
                return NetnsState.UNKNOWN  # /proc/self/...: whose? not a container's
        else:
            directory = os.path.dirname(path)
        if directory == "/proc/":
            seen = self.directory_visible(directory)
        else:
            seen = self._holds_a_cached_namespace(directory, cached)
        if not seen:
            if entry is not None and self._died_with_the_boot(path, entry):
                return NetnsState.GONE
            if self._gone_everywhere(path, cached):
                return NetnsState.GONE
            return NetnsState.UNSEEN
        found = self.is_namespace(path)
        if found is None:
            return NetnsState.UNKNOWN
        if found and directory == "/proc/" and entry is not None:
            # PIDs start again at each boot: the process at an entry's /proc/PID from
            # before this boot is another one, not its container's.
            return NetnsState.GONE if self._written_before_the_boot(entry) else NetnsState.PRESENT
        return NetnsState.PRESENT if found else NetnsState.GONE


def fresh_uncached(
    view: NamespaceView, cached: Iterable[str], max_age: float, now: Optional[float] = None
) -> List[str]:
    """Network namespaces younger than `max_age` seconds that no cache entry names.

    A runtime makes the container's namespace first, then runs the ADD; libcni writes
    the cache entry only once the whole network list is done. Such a namespace is the
    one sign of an ADD in progress that outlasts it: a chain it (re)uses may look
    stale until the entry is written. Looked for in the directories the cache names
    and /run/netns, where they are visible.
    """
    if max_age <= 0:
        return []
    cached_paths = {_resolved(p) for p in cached if p and os.path.isabs(p)}
    directories = {os.path.dirname(p) for p in cached_paths if not p.startswith("/proc/")}
    directories.add(os.path.realpath(NETNS_RUN_DIR))
    now = time.time() if now is None else now
    found = []
    for directory in sorted(directories):
        if not view.directory_visible(directory):
            continue
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            path = os.path.join(directory, name)
            if path in cached_paths or not view.is_namespace(path):
                continue
            try:
                # A namespace file's times are those of the namespace: its birth.
                born = os.stat(path).st_mtime
            except OSError:
                continue
            if now - born < max_age:
                found.append(path)
    return found


def _resolved(path: str) -> str:
    """realpath, or the path as written when it cannot be resolved (a cache entry's
    /proc/PID/ns/net of a process we may not look into raises PermissionError)."""
    try:
        return os.path.realpath(path)
    except OSError:
        return os.path.normpath(path)


def namespace_addresses(path: str) -> Set[str]:
    """The addresses configured in the network namespace at `path` (empty when it
    cannot be entered): its interfaces' addresses, asked over netlink from inside it
    (host/addresses.interface_addresses). Entered from a thread of its own (see
    addresses_of)."""
    return addresses_of({path: True})[path] or set()


class Inside(NamedTuple):
    """What a network namespace holds: its interfaces' addresses (as text) and the
    names of its interfaces (None: not asked, every address expected was there)."""

    addresses: Set[str]
    interfaces: Optional[Set[str]]


def addresses_of(paths: Mapping[str, bool]) -> Dict[str, Optional[Set[str]]]:
    """look_into's addresses alone."""
    return {path: None if inside is None else inside.addresses
            for path, inside in look_into(paths).items()}  # fmt: skip


def look_into(
    paths: Mapping[str, bool], expected: Optional[Mapping[str, Collection[str]]] = None
) -> Dict[str, Optional[Inside]]:
    """namespace_addresses of each namespace path (True: its IPv6 ones too, 10 us
    more), and its interfaces' names where it lacks an address `expected` of it (else
    None: not asked), but None for one that cannot be entered or read (nothing is
    known of it).
    Each is entered in turn, and left again, from a thread of its own that starts in
    the caller's namespace: 18 us a namespace, about 10 us a call for the thread.

    Not from the caller's thread: Python runs a signal's handler in the main thread
    at the first bytecode after the signal, and the CLI's raise (Ctrl-C: Interrupted,
    SIGTERM: Terminated). One landing as setns(2) into a container's namespace
    returned (or as the setns back began) left the command there, and what runs on
    the way out ran in the container's namespace: a repair's side effects of the
    family it had written (route_localnet, the UDP conntrack flush) went to the
    container, not the node. The main thread never leaves its namespace now; a
    signal during the look ends the call in the caller (the thread is left to end).

    An IPv4 address stays while its interface is down; an IPv6 one goes
    when the interface is set down (keep_addr_on_down is off by default). Both go with
    the interface, which the main plugin's DEL deletes (bridge, ptp, macvlan: first
    thing; calico: after its datastore calls)."""
    if not paths:
        return {}
    import threading

    found: Dict[str, Optional[Inside]] = {}
    failed: List[BaseException] = []

    def look() -> None:
        try:
            _look_into(paths, expected or {}, found)
        except BaseException as err:  # noqa: BLE001 - raised again in the caller
            failed.append(err)

    worker = threading.Thread(target=look, name="netns-addresses", daemon=True)
    worker.start()
    worker.join()
    if failed:
        raise failed[0]
    return found


def _look_into(
    paths: Mapping[str, bool],
    expected: Mapping[str, Collection[str]],
    found: Dict[str, Optional[Inside]],
) -> None:
    """look_into's work, in this thread (its namespace's handle opened once)."""
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        for path, ipv6 in paths.items():
            try:
                target = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
            except OSError:
                found[path] = None
                continue
            try:
                _setns(target)
            except OSError:
                found[path] = None
                os.close(target)
                continue
            try:
                found[path] = _inside_here(ipv6, expected.get(path, ()))
            finally:
                try:
                    _setns(original)  # the next path is looked into from here
                finally:
                    os.close(target)
    finally:
        os.close(original)


def _inside_here(ipv6: bool, expected: Collection[str]) -> Optional[Inside]:
    """The addresses and interfaces of this thread's namespace (see look_into), over
    netlink (not /proc/thread-self/net, which some kernels showed stale after a setns;
    if_nameindex(3) is an RTM_GETLINK dump from a socket made here); None when they
    cannot be asked. The interfaces only when an address `expected` is missing: 20 us
    more a namespace, for what a namespace holding them all (or a caller expecting
    none) does not need."""
    import socket

    from portmapctl.host.addresses import interface_addresses

    try:
        addresses = set(interface_addresses((4, 6) if ipv6 else (4,)))
        if addresses.issuperset(expected):  # (nothing expected: addresses_of's callers)
            return Inside(addresses, None)
        return Inside(addresses, {name for _index, name in socket.if_nameindex()})
    except OSError:
        return None
