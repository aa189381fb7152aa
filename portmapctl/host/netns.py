"""Enter a network namespace for the duration of a command.

Python < 3.12 has no os.setns, so libc's setns(2) is called through ctypes; that
costs nothing at start-up, unlike importing pyroute2. Child processes (iptables-save,
iptables-restore) inherit the namespace, and /proc/sys/net opened while inside is the
namespace's own.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from typing import Iterator, Optional

from portmapctl.errors import HostProblem

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"


def resolve(name_or_path: str) -> str:
    """`foo` means /run/netns/foo; anything with a slash is a path already."""
    if "/" in name_or_path:
        return name_or_path
    if name_or_path in ("", ".", ".."):
        raise HostProblem(f"network namespace {name_or_path!r} not found")
    return os.path.join(NETNS_RUN_DIR, name_or_path)


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):  # Python 3.12+
        os.setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def entered(name_or_path: Optional[str]) -> Iterator[None]:
    """Run the body inside the namespace, then return to the original one."""
    if name_or_path is None:
        yield
        return
    path = resolve(name_or_path)  # "" is refused: `--netns "$UNSET"` is not the host
    try:
        # O_NONBLOCK: a FIFO at that path would otherwise wait forever for a writer;
        # opened without blocking, setns refuses it like any other non-namespace.
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise HostProblem(
            f"network namespace {name_or_path!r} not found ({path} does not exist)"
        ) from None
    except PermissionError:
        raise HostProblem(f"cannot open network namespace {path}: run as root") from None
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
