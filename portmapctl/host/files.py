"""The one reader of user-named files (`-` is standard input)."""

from __future__ import annotations

from portmapctl.errors import BadInput


def read_text(path: str, what: str, max_bytes: int = 16 * 2**20) -> str:
    """A file's text (`-`: standard input), refused when unreadable, huge or binary."""
    import sys

    source = "<stdin>" if path == "-" else path
    try:
        if path == "-":
            data = sys.stdin.buffer.read(max_bytes + 1)
        else:
            with open(path, "rb") as handle:
                data = handle.read(max_bytes + 1)
    except OSError as err:
        raise BadInput(f"cannot read {what} {source}: {err.strerror}") from None
    if len(data) > max_bytes:
        raise BadInput(f"{what} {source} is larger than {max_bytes // 2**20} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"{what} {source}: not text (binary data?)") from None
