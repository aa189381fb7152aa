"""Running the portmapctl command line as a user would: a real process."""

from __future__ import annotations

import os
import pty
import select
import shlex
import shutil
import subprocess
import sys
from typing import Dict, Optional, Sequence, Tuple

import pytest


def run(
    args: Sequence[str],
    *,
    stdin: Optional[str] = None,
    env: Optional[dict] = None,
    unprivileged: bool = False,
    hide: Sequence[str] = (),
    own_mounts: bool = False,
    without_sys_admin_in: Optional[str] = None,
    without_caps: Sequence[str] = (),
) -> subprocess.CompletedProcess:
    """`portmapctl ARGS` through `python -m portmapctl`, stdin closed unless given.

    `unprivileged` runs it without CAP_NET_ADMIN and CAP_SYS_ADMIN (still uid 0, so
    the interpreter under /root stays readable): what iptables sees as "not root".
    `hide`: commands (paths) that are not there for this run: /dev/null is mounted over
    each in a mount namespace of its own (a PATH without them is not enough: the tools
    are also looked for in the sbin directories, as under cron).
    `own_mounts` runs it in a mount namespace of its own (a copy of the host's that
    still receives its mounts): what a container sees, as far as the host's mount
    namespace is asked.
    `without_sys_admin_in` runs it in that network namespace (by name) without
    CAP_SYS_ADMIN (without_sys_admin).
    `without_caps`: capabilities it runs without, still root with the rest
    (`dac_override`, `dac_read_search`: root then meets file modes as any owner does).
    """
    argv = [sys.executable, "-m", "portmapctl", *args]
    if hide:
        # (Tools by their paths: the run's own PATH may leave them out.)
        tool = {name: shutil.which(name) or name for name in ("unshare", "mount", "sh")}
        hidden = " ".join(shlex.quote(path) for path in hide)
        mount = shlex.quote(tool["mount"])
        script = f'for f in {hidden}; do {mount} --bind /dev/null "$f" || exit 97; done; exec "$@"'
        argv = [tool["unshare"], "-m", "--propagation", "private", tool["sh"], "-c", script,
                "sh", *argv]  # fmt: skip
    if own_mounts and not hide:  # (hide makes one already)
        argv = [shutil.which("unshare") or "unshare", "-m", "--propagation", "slave", *argv]
    if without_sys_admin_in is not None:
        argv = [*without_sys_admin(without_sys_admin_in), *argv]
    if unprivileged or without_caps:
        names = ("net_admin", "sys_admin", "net_raw") if unprivileged else ()
        drop = ",".join(f"-{name}" for name in (*names, *without_caps))
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


def without_sys_admin(netns: str) -> list:
    """The argv that runs a command in the network namespace `netns` (by name) as the
    shipped DaemonSet and systemd units run portmapctl: root with CAP_NET_ADMIN, without
    CAP_SYS_ADMIN, so no container's namespace can be entered."""
    return ["ip", "netns", "exec", netns,
            "setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin"]  # fmt: skip


def ok(args: Sequence[str], **kwargs) -> str:
    done = run(args, **kwargs)
    assert done.returncode == 0, f"portmapctl {' '.join(args)} failed:\n{done.stderr}"
    return done.stdout


def assert_error(
    done: subprocess.CompletedProcess, code: int, *words: str, after_work: bool = False
) -> None:
    """One clear line on stderr, the SPEC §4 exit code, no traceback, no stdout.

    `after_work`: a run that failed once part of its work had gone in (gc: a family
    after another) shows that part as any run's result, on stdout, with its warnings on
    stderr ahead of the one error line, which is the last."""
    __tracebackhide__ = True
    if done.returncode != code:
        pytest.fail(f"exit {done.returncode}, wanted {code}; stderr: {done.stderr!r}")
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr
    if after_work:
        assert done.stdout.strip(), "nothing shown of the work that went in"
        assert all(line.startswith("portmapctl: warning: ") for line in lines[:-1]), lines
    else:
        assert len(lines) == 1, done.stderr
        assert done.stdout == ""
    assert lines[-1].startswith("portmapctl: error: "), lines[-1]
    for word in words:
        assert word in lines[-1], (word, lines[-1])


def without_cache_note(stderr: str) -> str:
    """stderr without the line every command says when the CNI cache is missing or
    empty (SPEC §3): for tests about another line, run where no cache is named."""
    return "".join(
        line
        for line in stderr.splitlines(keepends=True)
        if not (
            line.startswith("portmapctl: warning: no CNI cache at ")
            or (line.startswith("portmapctl: warning: the CNI cache at ") and "is empty" in line)
        )
    )


def assert_metrics_left_alone(done, without, path, holds: str) -> None:
    """`done` (a run given a metrics file its kind of run does not write) said, beside
    what the same run `without` one said, the one warning that names the file and
    what it `holds`."""
    added = [line for line in done.stderr.splitlines() if line not in without.stderr]
    assert added == [f"portmapctl: warning: no metrics file written: {path} holds {holds}"], (
        done.stderr
    )


def drain(fd: int, timeout: float = 0.5) -> bytes:
    data = b""
    while select.select([fd], [], [], timeout)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        data += chunk
    return data


def run_on_terminal(args, env: Optional[Dict[str, str]] = None) -> Tuple[int, str, str]:
    """portmapctl ARGS with stdout on a pseudo-terminal; (exit code, stdout, stderr)."""
    master, slave = pty.openpty()
    full_env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "200", **(env or {})}
    full_env.pop("NO_COLOR", None) if "NO_COLOR" not in (env or {}) else None
    proc = subprocess.Popen(
        [sys.executable, "-m", "portmapctl", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.PIPE,
        env=full_env,
    )
    out = read_terminal(proc, master, slave)
    err = proc.stderr.read().decode() if proc.stderr else ""
    return proc.wait(), out.decode(errors="replace"), err


def read_terminal(proc: subprocess.Popen, master: int, slave: int) -> bytes:
    """What `proc` writes to the pseudo-terminal (master, slave) until it ends; both
    ends closed."""
    os.close(slave)
    out = b""
    while proc.poll() is None:
        out += drain(master, 0.1)
    out += drain(master, 0.1)
    os.close(master)
    return out
