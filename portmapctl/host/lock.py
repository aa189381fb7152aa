"""The lock that serialises portmapctl runs that change a node: /run/portmapctl/lock.

flock(2) on a file we create ourselves: 0600 in a 0700 directory owned by root,
never following a symlink planted at the path, nor opening anything but a regular file;
a run directory that is not ours (a file or a symlink where it should be, another
user's) or that others can write to, or a lock path that is not our regular file (a
FIFO, a socket, a device, a directory, another user's file), is refused too: exit 3,
one line, before the command reads or changes anything. `PORTMAPCTL_RUN_DIR` moves
the directory (see paths.py).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import sys
import time
from typing import Callable, Iterator, Optional

from portmapctl.core.text import message_text
from portmapctl.errors import HostProblem
from portmapctl.host.paths import RUN_DIR

LOCK_WAIT_SECONDS = 60.0
SAY_WAITING_AFTER = 1.0  # seconds of waiting before saying who holds the lock


def safe_run_dir(path: str) -> None:
    """Create `path` 0700 if needed; refuse one not ours or writable by others."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        info = os.lstat(path)
    except FileExistsError:
        info = None  # (a file, or a symlink to one, where the directory should be)
    except OSError as err:
        raise HostProblem(f"cannot create {path}: {err.strerror}") from None
    _refuse_found(path, info)


def _refuse_found(path: str, info: Optional[os.stat_result]) -> None:
    """safe_run_dir's refusal of what is at `path` (`info`: its lstat; None: no
    directory can be made there)."""
    if info is None or not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise HostProblem(f"{path} is not a directory owned by us: refusing to use it")
    # Writable by others, anyone could plant the lock file (and hold it for ever).
    if info.st_mode & 0o022:
        raise HostProblem(
            f"{path} is writable by other users: refusing to use it (chmod 700 {path})"
        )


def refuse_unusable(run_dir: str = RUN_DIR) -> None:
    """What `held` would refuse of `run_dir` and its lock file, in its words
    (HostProblem, exit 3), found without creating, opening or locking anything: for a
    dry run (add --dry-run), which changes nothing, yet says what its run would do. A
    plan printed with exit 0 where the run then refuses ("... is not a directory owned
    by us", a non-root user with CAP_NET_ADMIN and root's /run/portmapctl) told a
    preflight script that the add would go through; so did one on a read-only file
    system, where held's open of the lock fails. The lock being held is no refusal
    (the run waits for it)."""
    try:
        info: Optional[os.stat_result] = os.lstat(run_dir)
    except FileNotFoundError:
        _refuse_uncreatable(run_dir)
        return
    except OSError as err:
        # (A file above it: ENOTDIR, as os.makedirs would meet it.)
        raise HostProblem(f"cannot create {run_dir}: {err.strerror}") from None
    if info is not None and stat.S_ISLNK(info.st_mode):
        # safe_run_dir's makedirs leaves a symlink to a directory, then refuses it by
        # its lstat; one to nothing it cannot make a directory of: refused alike.
        info = None
    _refuse_found(run_dir, info)
    path = os.path.join(run_dir, "lock")
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        # held creates it: in a directory we may write in (not one closed to us, nor on
        # a read-only file system: "cannot open lock file ...: Read-only file system").
        _refuse_unopenable(path, run_dir, os.W_OK | os.X_OK)
        return
    except OSError as err:
        raise open_refused(path, err, "lock file") from None
    if stat.S_ISLNK(found.st_mode):
        raise HostProblem(f"{path} is a symlink: refusing to follow it")
    if not stat.S_ISREG(found.st_mode) or found.st_uid != os.geteuid():
        raise not_ours(path)
    _refuse_unopenable(path, path, os.R_OK | os.W_OK)  # (held opens it O_RDWR)


def _denied(path: str, mode: int) -> Optional[int]:
    """The errno an open or creation needing `mode` (os.access's) of `path` would meet:
    EROFS on a read-only file system, EACCES where the modes deny it to us; None when
    it may go."""
    if os.access(path, mode):
        return None
    return errno.EROFS if os.statvfs(path).f_flag & os.ST_RDONLY else errno.EACCES


def _refuse_unopenable(path: str, needing: str, mode: int) -> None:
    """held's refusal of the lock file `path` where its open would fail on `needing`
    (the run directory to create it in, or the file to open for writing)."""
    code = _denied(needing, mode)
    if code is not None:
        raise open_refused(path, OSError(code, os.strerror(code)), "lock file")


def _refuse_uncreatable(run_dir: str) -> None:
    """safe_run_dir's refusal where it would have to make `run_dir` (and the missing
    directories above it) and could not: the nearest one there must be a directory we
    may write in."""
    above = os.path.dirname(os.path.abspath(run_dir))
    while not os.path.lexists(above):
        above = os.path.dirname(above)
    code = errno.ENOTDIR if not os.path.isdir(above) else _denied(above, os.W_OK | os.X_OK)
    if code is not None:
        raise HostProblem(f"cannot create {run_dir}: {os.strerror(code)}")


def not_ours(path: str) -> HostProblem:
    """The refusal of what is at `path` in the run directory but is not our regular
    file: portmapctl's own files there (the lock, gc's state) are never used then."""
    return HostProblem(f"{path} is not a regular file owned by us: refusing to use it")


def open_refused(path: str, err: OSError, what: str) -> HostProblem:
    """The one line for `err`, opening our file `path` (`what` it is) in the run
    directory: a symlink, or something else planted there (a directory, a socket: the
    open said EISDIR, ENXIO), refused as such, and a run directory that is no
    directory (a file there: ENOTDIR) as safe_run_dir refuses it; else what the open
    said."""
    if err.errno == errno.ELOOP:
        return HostProblem(f"{path} is a symlink: refusing to follow it")
    if err.errno == errno.ENOTDIR:
        folder = os.path.dirname(path)
        return HostProblem(f"{folder} is not a directory owned by us: refusing to use it")
    try:
        planted = not stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        planted = False
    if planted:
        return not_ours(path)
    from portmapctl.host.files import remedy_of

    # (A read-only /run, or one out of room or inodes: the same remedy as a write's.)
    return HostProblem(f"cannot open {what} {path}: {err.strerror}{remedy_of(err)}")


def open_own(path: str, flags: int, what: str) -> int:
    """Our file `path` in the run directory (`what` it is), opened with `flags`, and
    nothing else there ever opened: a device planted at the path can act on open (a
    watchdog arms), a FIFO or terminal can block or become ours. So what is there is
    looked at first (lstat) and anything but a regular file refused unopened; the open
    then (O_NOFOLLOW, O_NONBLOCK, O_NOCTTY: one swapped in meanwhile, which only root
    can in our 0700 directory, neither followed nor waited on nor made our terminal)
    must be a regular file of ours. FileNotFoundError when nothing is there and
    `flags` do not create it; HostProblem for everything else."""
    try:
        found = stat.S_IFMT(os.lstat(path).st_mode)
    except FileNotFoundError:
        found = stat.S_IFREG  # (absent: the open creates it, or says so)
    except OSError as err:
        raise open_refused(path, err, what) from None
    if found == stat.S_IFLNK:
        raise HostProblem(f"{path} is a symlink: refusing to follow it")
    if found != stat.S_IFREG:
        raise not_ours(path)
    safe = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | safe, 0o600)
    except FileNotFoundError as err:
        if flags & os.O_CREAT:  # (its directory went meanwhile)
            raise open_refused(path, err, what) from None
        raise
    except OSError as err:
        raise open_refused(path, err, what) from None
    try:
        info = os.fstat(fd)
    except OSError as err:
        os.close(fd)
        raise HostProblem(f"cannot open {what} {path}: {err.strerror}") from None
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
        os.close(fd)
        raise not_ours(path)
    return fd


def flock_within(
    fd: int,
    wait: float,
    poll: float = 0.05,
    on_wait: Optional[Callable[[], None]] = None,
    say_after: float = SAY_WAITING_AFTER,
) -> bool:
    """Take an exclusive flock on `fd`, trying for `wait` seconds; False if we could not.
    `on_wait` is called once, after `say_after` seconds of waiting.

    Tried again after 1 ms, then twice as long each time up to `poll`: most holders
    are an add (tens of ms), and a fixed 50 ms step made a waiting add sleep 25 ms on
    average after the lock was free (a script adding containers in parallel paid that
    for each one in the queue); a long holder (gc of thousands) costs a few wake-ups."""
    start = time.monotonic()
    deadline = start + wait
    said = on_wait is None
    pause = min(FIRST_RETRY, poll)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            now = time.monotonic()
            if now >= deadline:
                return False
            if not said and now - start >= say_after:
                said = True
                on_wait()  # type: ignore[misc]
            time.sleep(min(pause, max(deadline - now, 0.0)))
            pause = min(pause * 2, poll)


FIRST_RETRY = 0.001  # seconds


PROC_LOCKS = "/proc/locks"


def holder(fd: int, proc_locks: str = PROC_LOCKS) -> Optional[int]:
    """The PID that holds the flock on `fd`'s file, as the kernel says (None if it
    cannot tell). Not the PID a portmapctl holder writes into the file: that outlives
    its run, so while `flock(1)` or an older portmapctl holds the lock it names the
    last run, gone or its number reused, and from a pod's PID namespace it is another
    process on the node. /proc/locks gives the holder in our PID namespace (0 for one
    outside it)."""
    try:
        info = os.fstat(fd)
        with open(proc_locks, encoding="ascii", errors="replace") as handle:
            table = handle.read()
    except OSError:
        return None
    where = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    for line in table.splitlines():
        # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:2261102 0 EOF"; "1: -> FLOCK ..." waits.
        words = line.split()
        if len(words) >= 6 and words[1] == "FLOCK" and words[5] == where:
            return int(words[4]) if words[4].isdigit() and words[4] != "0" else None
    return None


def _say_waiting(path: str, pid: Optional[int]) -> None:
    """The line an operator sees while another run holds the lock (on stderr)."""
    who = f"PID {pid}" if pid is not None else "another process"
    # A run directory's byte that is not UTF-8 as `\xNN`, as error lines write it.
    line = message_text(f"waiting for the portmapctl lock held by {who} ({path})")
    sys.stderr.write(f"portmapctl: {line}\n")
    sys.stderr.flush()


@contextlib.contextmanager
def held(
    run_dir: str = RUN_DIR, wait: float = LOCK_WAIT_SECONDS, say_waiting: bool = True
) -> Iterator[None]:
    """The portmapctl lock, waited for up to `wait` seconds (HostProblem after). After
    SAY_WAITING_AFTER seconds of waiting, a line on stderr names who holds it, unless
    not `say_waiting` (-q: a cron job mails whatever stderr gets)."""
    safe_run_dir(run_dir)
    path = os.path.join(run_dir, "lock")
    fd = open_own(path, os.O_RDWR | os.O_CREAT, "lock file")
    try:
        announce = (lambda: _say_waiting(path, holder(fd))) if say_waiting else None
        if not flock_within(fd, wait, on_wait=announce):
            pid = holder(fd)
            who = f" (PID {pid})" if pid is not None else ""
            raise HostProblem(
                f"another portmapctl{who} holds {path} for over {wait:g} s: try again later"
            )
        # Who holds it, for those who wait (flock itself does not say).
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # only the waiting message loses its PID
        yield
    finally:
        os.close(fd)
