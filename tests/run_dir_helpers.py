"""What the tests of an unusable run directory share: a run directory portmapctl
refuses (unusable_run_dir: tests/unit/test_dry_run_lock.py, tests/kernel/test_privilege.py),
something planted where the lock or gc's state file should be (tests/kernel/test_privilege.py,
tests/kernel/test_field_faults.py, tests/unit/test_gc_pure.py), and a run directory
with no room left (test_field_faults, test_gc), and whether anything opened a path
(the kernel's inotify: tests/unit/test_run_dir_opens.py, test_leases.py)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import subprocess
from pathlib import Path
from typing import Callable, Iterator

from portmapctl.errors import HostProblem


def plant(path: Path, kind: str) -> None:
    """Put at `path` what `kind` names: a `fifo`, a `socket` (bound, then closed: the
    socket file stays), a `directory`, a `symlink` (to a file beside its directory,
    `elsewhere`, that holds "precious"), or `someone-elses` file (nobody's, 0600:
    needs root)."""
    if kind == "fifo":
        os.mkfifo(path, 0o600)
    elif kind == "socket":
        with socket.socket(socket.AF_UNIX) as listening:
            listening.bind(str(path))
    elif kind == "directory":
        path.mkdir()
    elif kind == "symlink":
        target = path.parent.parent / "elsewhere"
        target.write_text("precious")
        path.symlink_to(target)
    elif kind == "someone-elses":
        path.write_text("{}")
        path.chmod(0o600)
        os.chown(path, 65534, 65534)
    else:
        raise ValueError(f"nothing to plant called {kind!r}")


@contextlib.contextmanager
def full_run_dir(run_dir: Path) -> Iterator[Path]:
    """`run_dir` (made here) as a tiny tmpfs, filled up: files can be created (the
    lock), nothing written (needs root). Unmounted on the way out."""
    run_dir.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(run_dir)],
                   check=True)  # fmt: skip
    try:
        fill(run_dir)
        yield run_dir
    finally:
        subprocess.run(["umount", "-l", str(run_dir)], check=False)


def fill(run_dir: Path) -> None:
    """Fill the file system of `run_dir` (a file `filler` in it takes what is left)."""
    fd = os.open(run_dir / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass  # full
    finally:
        os.close(fd)


IN_OPEN = 0x20
_LIBC = ctypes.CDLL(None, use_errno=True)


def opened_while(path: Path, action: Callable[[], object]) -> bool:
    """Whether anything opened `path` while `action` ran (its HostProblem let through)."""
    watch = _LIBC.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    assert watch >= 0, os.strerror(ctypes.get_errno())
    try:
        assert _LIBC.inotify_add_watch(watch, str(path).encode(), IN_OPEN) >= 0
        try:
            action()
        except HostProblem:
            pass
        try:
            return bool(os.read(watch, 4096))
        except BlockingIOError:
            return False
    finally:
        os.close(watch)


def unusable_run_dir(parent: Path, kind: str) -> Path:
    """`parent`/run as `kind` makes it one that lock.held refuses: a `file` there, one
    `below-a-file`, a `symlink` to our directory, `someone-elses` (nobody's: needs
    root), `open-to-all` (1777), or ours with a `lock-symlink`, `lock-directory` or
    `lock-fifo` at its lock; ours but `closed` to writing (0500, no lock yet) or with
    a `lock-read-only` (0400): refused where the modes bind us (no CAP_DAC_OVERRIDE).
    The path the run is given is returned."""
    run_dir = parent / "run"
    if kind in ("file", "below-a-file"):
        run_dir.write_text("")
        return run_dir / "run" if kind == "below-a-file" else run_dir
    if kind == "symlink":
        (parent / "real").mkdir(mode=0o700)
        run_dir.symlink_to(parent / "real")
        return run_dir
    run_dir.mkdir(mode=0o700)
    if kind == "someone-elses":
        os.chown(run_dir, 65534, 65534)  # (as root's /run/portmapctl to nobody)
    elif kind == "open-to-all":
        run_dir.chmod(0o1777)
    elif kind == "lock-symlink":
        (run_dir / "lock").symlink_to(parent / "elsewhere")
    elif kind == "lock-directory":
        (run_dir / "lock").mkdir()
    elif kind == "lock-fifo":
        os.mkfifo(run_dir / "lock", 0o600)
    elif kind == "lock-read-only":
        (run_dir / "lock").write_text("")
        (run_dir / "lock").chmod(0o400)
    elif kind == "closed":
        run_dir.chmod(0o500)
    return run_dir
