"""lock.refuse_unusable: what lock.held would refuse of a run directory, found without
creating or opening anything (add --dry-run says what its add would say: h243)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from run_dir_helpers import unusable_run_dir

from portmapctl.errors import HostProblem
from portmapctl.host import lock


def _held_says(run_dir: Path) -> str:
    with pytest.raises(HostProblem) as refused:
        with lock.held(str(run_dir), wait=1):
            pytest.fail("the lock was taken")
    return str(refused.value)


def test_a_usable_or_creatable_run_directory_passes_and_nothing_is_made(tmp_path: Path) -> None:
    missing = tmp_path / "a" / "run"
    lock.refuse_unusable(str(missing))
    assert not (tmp_path / "a").exists()
    ours = tmp_path / "run"
    ours.mkdir(mode=0o700)
    lock.refuse_unusable(str(ours))
    (ours / "lock").write_text("")
    (ours / "lock").chmod(0o600)
    lock.refuse_unusable(str(ours))


@pytest.mark.parametrize("unusable", ["file", "open-to-all", "symlink", "below-a-file",
                                      "lock-symlink", "lock-directory", "lock-fifo"])  # fmt: skip
def test_what_held_refuses_is_refused_in_its_words(tmp_path: Path, unusable: str) -> None:
    run_dir = unusable_run_dir(tmp_path, unusable)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(HostProblem, match=re.escape(_held_says(run_dir))):
        lock.refuse_unusable(str(run_dir))
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_a_run_directory_that_cannot_be_made_is_refused_in_helds_words(tmp_path: Path) -> None:
    """/run/portmapctl not there yet and /run not ours to write (a non-root user)."""
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o500)
    if os.access(closed, os.W_OK):
        pytest.skip("writable all the same (CAP_DAC_OVERRIDE)")
    run_dir = closed / "portmapctl"
    with pytest.raises(HostProblem, match=re.escape(_held_says(run_dir))):
        lock.refuse_unusable(str(run_dir))
    assert not run_dir.exists()


@pytest.mark.parametrize("unusable", ["closed", "lock-read-only"])
def test_a_run_directory_whose_lock_cannot_be_opened_is_refused_in_helds_words(
    tmp_path: Path, unusable: str
) -> None:
    """Ours, not writable by us (0500; a lock file 0400): held's open of the lock
    said "cannot open lock file ...: Permission denied", exit 3, while the dry run
    passed (the same for a read-only file system: tests/kernel/test_privilege.py)."""
    run_dir = unusable_run_dir(tmp_path, unusable)
    if os.access(run_dir if unusable == "closed" else run_dir / "lock", os.W_OK):
        pytest.skip("writable all the same (CAP_DAC_OVERRIDE)")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    said = _held_says(run_dir)
    assert "cannot open lock file" in said
    with pytest.raises(HostProblem, match=re.escape(said)):
        lock.refuse_unusable(str(run_dir))
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
