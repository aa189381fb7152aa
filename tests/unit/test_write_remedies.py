"""A failed write of our own files (gc's state) says what to do only where one remedy
fits its cause: gc said "(free space in the run directory)" after any failure."""

from __future__ import annotations

import errno
import os

import pytest

from portmapctl.errors import HostProblem
from portmapctl.host import files


def test_a_missing_directory_gets_no_remedy(tmp_path):
    path = tmp_path / "gone" / "gc-state.json"
    with pytest.raises(HostProblem) as raised:
        files.write_atomically(str(path), b"{}")
    assert str(raised.value) == (
        f"cannot write {path}.{os.getpid()}.tmp: {os.strerror(errno.ENOENT)}"
    )


@pytest.mark.parametrize(
    ("code", "remedy"),
    [
        (errno.ENOSPC, " (free space in the run directory)"),
        (errno.EDQUOT, " (free space in the run directory (its quota is used up))"),
        (errno.EROFS, " (the run directory is on a read-only file system;"
                      " PORTMAPCTL_RUN_DIR moves it)"),
        (errno.EIO, ""),
        (errno.EACCES, ""),
    ],
)  # fmt: skip
def test_a_write_that_fails_says_the_remedy_of_its_cause(tmp_path, monkeypatch, code, remedy):
    path = tmp_path / "gc-state.json"
    path.write_bytes(b"old")

    def failing(fd: int, data) -> int:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(files.os, "write", failing)
    with pytest.raises(HostProblem) as raised:
        files.write_atomically(str(path), b"new")
    assert str(raised.value) == f"cannot write {path}: {os.strerror(code)}{remedy}"
    assert path.read_bytes() == b"old"  # (and no temporary file left)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gc-state.json"]
