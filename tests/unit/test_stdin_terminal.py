"""`-` for a file reads standard input; at a terminal it says so on stderr first,
rather than wait without a word (a review found `--snapshot -` typed at a prompt
hung silently); from a pipe it says nothing."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _read_until(fd: int, word: bytes, seconds: float = 20.0) -> bytes:
    seen = b""
    end = time.monotonic() + seconds
    while word not in seen and time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                seen += os.read(fd, 4096)
            except OSError:
                break
    return seen


def test_a_terminal_on_stdin_is_told_what_is_read():
    main, side = pty.openpty()
    try:
        done = subprocess.Popen(
            [sys.executable, "-m", "portmapctl", "list", "--snapshot", "-"],
            stdin=side, stdout=subprocess.PIPE, stderr=side, env=ENV,
        )  # fmt: skip
        seen = _read_until(main, b"Ctrl-D")
        assert b"reading snapshot from standard input (end with Ctrl-D)" in seen
        os.write(main, b"\x04")  # the terminal's end of input
        assert done.wait(timeout=30) == 2  # an empty snapshot: bad input
    finally:
        os.close(main)
        os.close(side)


def test_a_pipe_on_stdin_is_read_without_a_word():
    done = subprocess.run(
        [sys.executable, "-m", "portmapctl", "list", "--snapshot", "-"],
        input="", capture_output=True, text=True, env=ENV, timeout=60,
    )  # fmt: skip
    assert "standard input" not in done.stderr
