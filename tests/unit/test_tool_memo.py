"""host/tool_memo.py: what a tool's binary said about itself, kept for as long as it is
the same file, and add's `iptables --version` gate (nfnl_add.PinnedCheck) asking the
binary only when the memo does not know it. No root: a stand-in `iptables` script
that records each run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from portmapctl.host import paths, tool_memo
from portmapctl.iptables.access import nfnl_add

Q = "iptables --version"


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch) -> Path:
    folder = tmp_path / "run"
    monkeypatch.setattr(paths, "RUN_DIR", str(folder))
    return folder


def _tool(tmp_path: Path, says: str) -> Path:
    """An `iptables` that appends a line to runs.log each time it runs."""
    script = tmp_path / "bin" / "iptables"
    script.parent.mkdir(exist_ok=True)
    script.write_text(f"#!/bin/sh\necho run >> {tmp_path / 'runs.log'}\necho '{says}'\n")
    script.chmod(0o755)
    return script


def _runs(tmp_path: Path) -> int:
    log = tmp_path / "runs.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_the_answer_is_remembered_for_that_file_and_only_for_it(tmp_path, run_dir):
    tool = _tool(tmp_path, "iptables v1.8.9 (nf_tables)")
    key = tool_memo.identity(str(tool))
    assert key is not None and tool_memo.recall(Q, key) is None
    tool_memo.remember(Q, key, "iptables v1.8.9 (nf_tables)")
    assert tool_memo.recall(Q, key) == "iptables v1.8.9 (nf_tables)"
    assert (run_dir / tool_memo.NAME).stat().st_mode & 0o777 == 0o600
    # A link to it is the same file; a new file under the name (an upgrade) is not.
    link = tmp_path / "link"
    link.symlink_to(tool)
    assert tool_memo.identity(str(link)) == key
    replacement = tmp_path / "new"
    replacement.write_text(tool.read_text())
    replacement.chmod(0o755)
    os.replace(replacement, tool)
    assert tool_memo.identity(str(tool)) != key
    assert tool_memo.recall(Q, tool_memo.identity(str(tool))) is None
    assert tool_memo.identity(str(tmp_path / "missing")) is None
    assert tool_memo.identity(str(tmp_path)) is None  # (a directory)


@pytest.mark.parametrize(
    "content, mode",
    [
        (b"{not json", 0o600),
        (json.dumps({"version": 99, "answers": {}}).encode(), 0o600),
        (json.dumps(["a list"]).encode(), 0o600),
        (json.dumps({"version": 1, "answers": {Q: "flat"}}).encode(), 0o600),
        (None, 0o600),  # the answer's own shape, written below, but group-writable...
        (None, 0o620),
        (None, 0o602),
    ],
)
def test_a_memo_it_cannot_trust_is_as_none(tmp_path, run_dir, content, mode):
    key = tool_memo.identity(str(_tool(tmp_path, "x")))
    assert key is not None
    run_dir.mkdir(mode=0o700)
    memo = run_dir / tool_memo.NAME
    if content is None:
        content = json.dumps({"version": 1, "answers": {Q: {"key": key, "answer": "x"}}}).encode()
    memo.write_bytes(content)
    memo.chmod(mode)
    expected = "x" if mode == 0o600 and b'"key"' in content else None
    assert tool_memo.recall(Q, key) == expected
    tool_memo.remember(Q, key, "y")  # and it is written over, readable again
    assert tool_memo.recall(Q, key) == "y"


def test_a_memo_behind_a_symlink_is_not_followed(tmp_path, run_dir):
    key = tool_memo.identity(str(_tool(tmp_path, "x")))
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps({"version": 1, "answers": {Q: {"key": key, "answer": "x"}}}))
    run_dir.mkdir(mode=0o700)
    (run_dir / tool_memo.NAME).symlink_to(elsewhere)
    assert tool_memo.recall(Q, key) is None
    tool_memo.remember(Q, key, "y")  # the link is replaced, the file it named untouched
    assert not (run_dir / tool_memo.NAME).is_symlink()
    assert "x" in elsewhere.read_text() and tool_memo.recall(Q, key) == "y"


def test_a_run_dir_it_cannot_write_loses_only_the_memo(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setattr(paths, "RUN_DIR", str(blocker / "run"))  # (under a file)
    key = tool_memo.identity(str(_tool(tmp_path, "x")))
    tool_memo.remember(Q, key, "x")  # no error
    assert tool_memo.recall(Q, key) is None


def test_add_asks_iptables_its_version_once_per_binary(tmp_path, run_dir, monkeypatch):
    tool = _tool(tmp_path, "iptables v1.8.9 (nf_tables)")
    monkeypatch.setenv("PATH", f"{tool.parent}:{os.environ['PATH']}")
    for _ in range(3):
        check = nfnl_add.PinnedCheck()
        assert check.answer() is True
        check.close()
    assert _runs(tmp_path) == 1
    # Another build under the same name: asked again, and its answer believed.
    tool.unlink()
    _tool(tmp_path, "iptables v1.8.10 (nf_tables)")
    check = nfnl_add.PinnedCheck()
    assert check.answer() is False
    assert _runs(tmp_path) == 2
    assert nfnl_add.PinnedCheck().answer() is False and _runs(tmp_path) == 2


def test_a_failing_or_silent_iptables_is_asked_again_next_time(tmp_path, run_dir, monkeypatch):
    script = tmp_path / "bin" / "iptables"
    script.parent.mkdir()
    script.write_text(f"#!/bin/sh\necho run >> {tmp_path / 'runs.log'}\nexit 1\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}:{os.environ['PATH']}")
    for runs in (1, 2):
        check = nfnl_add.PinnedCheck()
        assert check.answer() is False
        assert _runs(tmp_path) == runs
    assert not (run_dir / tool_memo.NAME).exists()


def test_an_unasked_check_stops_its_process(tmp_path, run_dir, monkeypatch):
    script = tmp_path / "bin" / "iptables"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\nsleep 30\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}:{os.environ['PATH']}")
    check = nfnl_add.PinnedCheck()
    check.close()
    assert check._asked is not None and check._asked.returncode is not None
