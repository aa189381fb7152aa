"""The one reader of user-named files (`-` is standard input), and the one writer of
portmapctl's own files in its run directory (write_atomically)."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import time
from typing import Iterator, Pattern

from portmapctl.errors import BadInput, HostProblem


@contextlib.contextmanager
def open_regular(path: str) -> Iterator[int]:
    """A regular file's descriptor, open for reading; OSError for anything else.

    O_NONBLOCK: opening a FIFO or a terminal planted where a file was expected (or a
    symlink to one) must not wait forever for a writer, least of all while gc holds
    the lock; the fstat after the open checks the thing actually opened, so swapping
    the name between a check and the open changes nothing.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(0, "not a regular file")
        yield fd
    finally:
        os.close(fd)


def read_chunks(fd: int, max_bytes: int) -> Iterator[bytes]:
    """The first `max_bytes` bytes of `fd`, a MiB at a time (a big file is searched
    without holding it whole: host/cni_bins.py)."""
    left = max_bytes
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return
        yield chunk
        left -= len(chunk)


def read_regular(path: str, max_bytes: int) -> bytes:
    """A regular file's first `max_bytes + 1` bytes; OSError for anything else
    (open_regular)."""
    with open_regular(path) as fd:
        return b"".join(read_chunks(fd, max_bytes + 1))


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
            if sys.stdin.isatty() and sys.stderr.isatty():
                # A person at a terminal: say what it waits for (SPEC §3: prompts on
                # stderr), rather than hang without a word.
                sys.stderr.write(
                    f"portmapctl: reading {what} from standard input (end with Ctrl-D)\n"
                )
            data = sys.stdin.buffer.read(max_bytes + 1)
        elif regular_only:
            data = read_regular(path, max_bytes)
        else:
            with open(path, "rb") as handle:
                data = handle.read(max_bytes + 1)
    except OSError as err:
        raise BadInput(f"cannot read {what} {source}: {err.strerror}") from None
    if len(data) > max_bytes:
        raise BadInput(f"{what} {source} is larger than {max_bytes // 2**20} MiB")
    if not regular_only:
        data = _past_byte_order_mark(data, what, source)
    if any_bytes and b"\x00" not in data:  # NUL: binary, never text in any encoding
        return data.decode("utf-8", "surrogateescape")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"{what} {source}: not text (binary data?)") from None


_UTF8_BOM = b"\xef\xbb\xbf"
# UTF-16's marks, each with where the NUL of its first (ASCII: `#`, `*`, `{`) character is.
_UTF16_BOMS = ((b"\xff\xfe", 3), (b"\xfe\xff", 2))


def _past_byte_order_mark(data: bytes, what: str, source: str) -> bytes:
    """A file the user names, without the UTF-8 byte-order mark that Windows editors
    (Notepad, `Out-File -Encoding utf8`) put first: it says how the text is encoded,
    nothing more, and a support bundle saved there was refused as "not iptables-save
    output". UTF-16 (Windows PowerShell's `>`) is said to be UTF-16, not "binary".
    (Not for the node's own files, cache entries: libcni reads no mark either.)"""
    if data.startswith(_UTF8_BOM):
        return data[len(_UTF8_BOM) :]
    if any(data.startswith(mark) and data[nul : nul + 1] == b"\0" for mark, nul in _UTF16_BOMS):
        raise BadInput(
            f"{what} {source} is UTF-16 text (as Windows PowerShell's `>` writes):"
            " convert it to UTF-8 (`iconv -f UTF-16 -t UTF-8`), or save it with `> FILE` on Linux"
        )
    return data


# A writer running now is never that slow: its temporary file is older than this only
# when the writer was killed.
STALE_SECONDS = 60.0


def remove_stale(path: str, suffix: Pattern[str]) -> None:
    """Remove the temporary files a killed writer left beside `path` (its name, then
    `suffix`): only those names, only regular files, only older than a minute (a
    writer running now is never that slow), so they neither pile up nor get in the way.
    Best effort: what cannot be looked at or removed stays."""
    folder, name = os.path.split(path)
    try:
        entries = os.listdir(folder or ".")
    except OSError:
        return
    now = time.time()
    for entry in entries:
        if not entry.startswith(name) or not suffix.fullmatch(entry[len(name) :]):
            continue
        found = os.path.join(folder, entry)
        try:
            info = os.lstat(found)
            if stat.S_ISREG(info.st_mode) and now - info.st_mtime > STALE_SECONDS:
                os.unlink(found)
        except OSError:
            continue


def write_atomically(path: str, data: bytes) -> None:
    """Write a new file (0600) beside `path` and rename it over `path`; HostProblem
    when it cannot be written.

    O_EXCL|O_NOFOLLOW: the new file is ours, not something planted at that name;
    rename(2) replaces a symlink at `path` rather than writing through it. Readers
    see the old file or the new one, never half of one, after a crash too
    (replace_durably). The temporary file goes on any way out, SIGTERM's (cli raises
    it as Terminated) included; one an earlier run left when it could not clean up
    (SIGKILL, a crash) goes on the next save.
    """
    remove_stale(path, _TEMPORARY)
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        fd = create_new(temporary, 0o600)
    except FileExistsError:
        raise HostProblem(f"cannot write {temporary}: it keeps reappearing") from None
    except OSError as err:
        raise cannot_write(temporary, err) from None
    try:
        replace_durably(fd, temporary, path, data)
    except OSError as err:
        raise cannot_write(path, err) from None


def create_new(temporary: str, mode: int) -> int:
    """`temporary` (a writer's temporary file, its name predictable: PATH.PID...)
    created anew and opened for writing: the one way both our writers open theirs.

    O_EXCL|O_NOFOLLOW: never something already at that name, which in a directory
    others can write to (node_exporter's textfile directory is often group-writable)
    may be planted: O_TRUNC wrote through a hard link there into the linked file, and
    waited forever on a FIFO for a reader. What is there (a dead run's file with our
    PID, or a planted one) is unlinked, which follows nothing, and the name created
    once more; FileExistsError when it is back by then (someone keeps planting it).
    Gone before the unlink (another run's remove_stale took a dead run's file, or
    whoever planted it took it back): the name is free, as wanted. Other OSErrors as
    open(2) or unlink(2) gave them (a directory there: EISDIR)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(temporary, flags, mode)
    except FileExistsError:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
    return os.open(temporary, flags, mode)


def replace_durably(fd: int, temporary: str, path: str, data: bytes) -> None:
    """Fill `fd`, the new file `temporary` just created beside `path`, with `data` and
    rename it over `path`, on disk: the file is fsynced before the rename, so a crash
    leaves the old file or the whole new one, never the new name on an empty file
    (ext4 and XFS may put the rename on disk before the data), and the directory
    after it, so the rename itself is kept. Closes `fd`; the temporary file goes on
    any way out (SIGTERM's Terminated too), and the error goes on as it was."""
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:  # noqa: B036 - the file goes, the error goes on as it was
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    _sync_directory(os.path.dirname(path) or ".")


def _sync_directory(folder: str) -> None:
    """fsync a directory, best effort: the file is in place once renamed, and some
    file systems refuse fsync of a directory (EINVAL): a write that worked is not
    called failed for it."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# What the person can do about a failed write of our files, by errno; none where the
# error says it (a permission, an I/O error: no one remedy fits).
_REMEDIES = {
    errno.ENOSPC: "free space in the run directory",
    errno.EDQUOT: "free space in the run directory (its quota is used up)",
    errno.EROFS: "the run directory is on a read-only file system; PORTMAPCTL_RUN_DIR moves it",
}


def cannot_write(path: str, err: OSError) -> HostProblem:
    """The one line for a failed write of our file `path`, with the remedy for its
    cause where there is one."""
    return HostProblem(f"cannot write {path}: {err.strerror}{remedy_of(err)}")


def remedy_of(err: OSError) -> str:
    """` (what to do)` for a failed write or creation of our files in the run
    directory, where one remedy fits its cause; "" elsewhere."""
    remedy = _REMEDIES.get(err.errno or 0)
    return f" ({remedy})" if remedy else ""


# The temporary files of write_atomically: the file's name, a PID, ".tmp".
_TEMPORARY = re.compile(r"\.[0-9]+\.tmp")
