"""The one reader of user-named files (`-` is standard input)."""

from __future__ import annotations

import os
import stat

from portmapctl.errors import BadInput


def _read_regular(path: str, max_bytes: int) -> bytes:
    """A regular file's first `max_bytes + 1` bytes; OSError for anything else.

    O_NONBLOCK: opening a FIFO or a terminal planted where a file was expected (or a
    symlink to one) must not wait forever for a writer, least of all while gc holds
    the lock; the fstat after the open checks the thing actually opened, so swapping
    the name between a check and the open changes nothing.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(0, "not a regular file")
        chunks = []
        left = max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(
    path: str,
    what: str,
    max_bytes: int = 16 * 2**20,
    *,
    regular_only: bool = False,
    any_bytes: bool = False,
) -> str:
    """A file's text (`-`: standard input), refused when unreadable, huge or binary.

    `regular_only`: for files found on the node (cache entries) rather than named by
    the user, who may rightly pass a pipe (`--valid-attachments <(...)`).
    `any_bytes`: text that is not all UTF-8 is kept (surrogateescape), for dumps that
    carry foreign rules' comments as the kernel holds them, any bytes.
    """
    import sys

    source = "<stdin>" if path == "-" else path
    try:
        if path == "-":
            data = sys.stdin.buffer.read(max_bytes + 1)
        elif regular_only:
            data = _read_regular(path, max_bytes)
        else:
            with open(path, "rb") as handle:
                data = handle.read(max_bytes + 1)
    except OSError as err:
        raise BadInput(f"cannot read {what} {source}: {err.strerror}") from None
    if len(data) > max_bytes:
        raise BadInput(f"{what} {source} is larger than {max_bytes // 2**20} MiB")
    if any_bytes and b"\x00" not in data:  # NUL: binary, never text in any encoding
        return data.decode("utf-8", "surrogateescape")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"{what} {source}: not text (binary data?)") from None
