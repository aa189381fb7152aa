"""What is planted in the run directory where portmapctl's own files go (the lock,
gc's state, the tool memo) is refused without being opened: opening a device can act
(a watchdog arms on open), and the lock opened whatever was there (O_RDWR) before it
looked. The kernel says whether it was opened: inotify's IN_OPEN on the path."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
from run_dir_helpers import opened_while, plant

from portmapctl.errors import HostProblem
from portmapctl.host import lock, tool_memo
from portmapctl.ops.gc import state as gc_state


def _take_lock(run_dir: Path) -> None:
    with lock.held(str(run_dir), wait=1):
        pytest.fail("the lock was taken")


def _gc_load(run_dir: Path) -> None:
    gc_state.load(str(run_dir), "ns")


def _memo_read(run_dir: Path) -> None:
    assert tool_memo.read_document(str(run_dir), "memo.json", 1, 4096) == {}


OWN_FILES = {
    "lock": ("lock", _take_lock),
    "gc-state": (gc_state.STATE_FILE, _gc_load),
    "memo": ("memo.json", _memo_read),
}


def _planted(path: Path, kind: str) -> None:
    if kind == "device":
        try:
            os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers
        except PermissionError:
            pytest.skip("mknod of a device needs CAP_MKNOD (the unit tier runs without)")
    else:
        plant(path, kind)


@pytest.mark.parametrize("kind", ["fifo", "device"])
@pytest.mark.parametrize("own", sorted(OWN_FILES))
def test_what_is_planted_at_our_files_is_refused_unopened(tmp_path, own: str, kind: str):
    name, use = OWN_FILES[own]
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    path = run_dir / name
    _planted(path, kind)
    assert not opened_while(path, lambda: use(run_dir))
    if own != "memo":  # (the memo is as none, silently)
        refused = f"{path} is not a regular file owned by us: refusing to use it"
        with pytest.raises(HostProblem, match=re.escape(refused)):
            use(run_dir)
    assert stat.S_IFMT(path.lstat().st_mode) != stat.S_IFREG  # (left as it was)


def test_our_own_file_is_still_opened_and_used(tmp_path):
    """The watch sees an open: the test above can fail."""
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    (run_dir / "lock").write_text("")
    (run_dir / "lock").chmod(0o600)

    def take() -> None:
        with lock.held(str(run_dir), wait=1):
            pass

    assert opened_while(run_dir / "lock", take)


def test_a_run_directory_gone_before_the_lock_is_opened_is_one_line(tmp_path, monkeypatch):
    """The run directory removed between safe_run_dir and the lock's open (a tmpfiles
    clean-up): the open that creates the lock says ENOENT, which used to be refused as
    every failed open ("cannot open lock file"); open_own let FileNotFoundError out of
    held(), an internal error."""
    run_dir = tmp_path / "run"
    monkeypatch.setattr(lock, "safe_run_dir", lambda path: None)  # (made, then gone)
    path = run_dir / "lock"
    refused = f"cannot open lock file {path}: {os.strerror(2)}"
    with pytest.raises(HostProblem, match=re.escape(refused)):
        _take_lock(run_dir)
