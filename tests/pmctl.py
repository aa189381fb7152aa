"""Running the portmapctl command line as a user would: a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Optional, Sequence

import pytest


def run(
    args: Sequence[str],
    *,
    stdin: Optional[str] = None,
    env: Optional[dict] = None,
    unprivileged: bool = False,
) -> subprocess.CompletedProcess:
    """`portmapctl ARGS` through `python -m portmapctl`, stdin closed unless given.

    `unprivileged` runs it without CAP_NET_ADMIN and CAP_SYS_ADMIN (still uid 0, so
    the interpreter under /root stays readable): what iptables sees as "not root".
    """
    argv = [sys.executable, "-m", "portmapctl", *args]
    if unprivileged:
        drop = "-net_admin,-sys_admin,-net_raw"
        argv = ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}", *argv]
    full_env = dict(os.environ, NO_COLOR="1", COLUMNS="250", **(env or {}))
    return subprocess.run(
        argv,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
        check=False,
    )


def ok(args: Sequence[str], **kwargs) -> str:
    done = run(args, **kwargs)
    assert done.returncode == 0, f"portmapctl {' '.join(args)} failed:\n{done.stderr}"
    return done.stdout


def assert_error(done: subprocess.CompletedProcess, code: int, *words: str) -> None:
    """One clear line on stderr, the SPEC §4 exit code, no traceback, no stdout."""
    __tracebackhide__ = True
    if done.returncode != code:
        pytest.fail(f"exit {done.returncode}, wanted {code}; stderr: {done.stderr!r}")
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("portmapctl: error: "), lines[0]
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert done.stdout == ""
