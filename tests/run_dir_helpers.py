"""What the tests of an unusable run directory share: something planted where the
lock or gc's state file should be (tests/kernel/test_privilege.py,
tests/kernel/test_field_faults.py, tests/unit/test_gc_pure.py)."""

from __future__ import annotations

import os
import socket
from pathlib import Path


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
