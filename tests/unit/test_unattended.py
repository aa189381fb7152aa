"""portmapctl run by cron, a supervisor or a script with standard descriptors closed
(`<&-`, `>&-`): one line and the SPEC §4 exit code, never an internal error."""

from __future__ import annotations

import os
import pty
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_closed(args: Sequence[str], closed: Sequence[int]) -> subprocess.CompletedProcess:
    """`portmapctl ARGS` with the descriptors `closed` closed in the child."""

    def close() -> None:
        for fd in closed:
            os.close(fd)

    return subprocess.run(
        [sys.executable, "-P", "-m", "portmapctl", *args],
        stdin=None if 0 in closed else subprocess.DEVNULL,
        stdout=None if 1 in closed else subprocess.PIPE,
        stderr=None if 2 in closed else subprocess.PIPE,
        preexec_fn=close,
        env=dict(os.environ, PYTHONPATH=str(ROOT), NO_COLOR="1"),
        text=True,
        timeout=60,
        check=False,
    )


def test_gc_with_stdin_closed_wants_yes(tmp_path):
    (tmp_path / "results").mkdir()
    done = run_closed(["gc", "--cni-cache-dir", str(tmp_path)], closed=[0])
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        "portmapctl: error: not on a terminal: give --yes to remove chains (or --dry-run to look)\n"
    )


@pytest.mark.parametrize("args", [["--version"], ["list", "--snapshot", "SNAPSHOT"]])
def test_stdout_closed_is_a_finished_run(tmp_path, args):
    snapshot = tmp_path / "nat.save"
    snapshot.write_text("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n")
    args = [str(snapshot) if a == "SNAPSHOT" else a for a in args]
    done = run_closed(args, closed=[1])
    assert done.returncode == 0, done.stderr
    assert "error" not in done.stderr


def _check_writing_to(stdout: int, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`portmapctl check ARGS` of an empty node (a snapshot, an empty cache), its stdout
    the descriptor `stdout`."""
    (tmp_path / "cni" / "results").mkdir(parents=True)
    snapshot = tmp_path / "nat.save"
    snapshot.write_text("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n")
    return subprocess.run(
        [sys.executable, "-P", "-m", "portmapctl", "check", "--snapshot", str(snapshot)]
        + ["--cni-cache-dir", str(tmp_path / "cni"), *args],
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(ROOT), NO_COLOR="1"),
        text=True,
        timeout=60,
        check=False,
    )


def test_a_reader_that_left_changes_no_outcome(tmp_path):
    """stdout a pipe nobody reads any more (`| head -1` done, a restarted journald):
    the command still ends with its own exit code and its metrics, and says no error."""
    metrics = tmp_path / "portmapctl-check.prom"
    reader, writer = os.pipe()
    os.close(reader)
    try:
        done = _check_writing_to(writer, tmp_path, "--metrics-file", str(metrics))
    finally:
        os.close(writer)
    assert done.returncode == 0, done.stderr
    assert "error" not in done.stderr and "Exception" not in done.stderr
    assert 'portmapctl_last_run_success{command="check"} 1.0' in metrics.read_text()


def test_ctrl_c_leaves_the_metrics_file_alone(tmp_path):
    """Interrupted, a run neither finished nor failed: its metrics stay the last run's
    (docs/monitoring.md), not a failure that lasts until the next run."""
    fifo = tmp_path / "snapshot"
    os.mkfifo(fifo)  # nobody writes it: list waits there until Ctrl-C
    metrics = tmp_path / "portmapctl-list.prom"
    argv = ["list", "--snapshot", str(fifo), "--metrics-file", str(metrics)]
    running = subprocess.Popen(
        [sys.executable, "-P", "-m", "portmapctl", *argv, "--cni-cache-dir", str(tmp_path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(ROOT), NO_COLOR="1"),
        text=True,
    )
    time.sleep(1.5)  # (typer and the command imported, waiting in open())
    running.send_signal(signal.SIGINT)
    _, stderr = running.communicate(timeout=30)
    assert running.returncode == 130, stderr
    assert stderr.endswith("portmapctl: aborted\n")
    assert not metrics.exists()


def _to_a_full_disk(args: Sequence[str], stderr_full: bool = False) -> subprocess.CompletedProcess:
    """`portmapctl ARGS > /dev/full` (`2> /dev/full` too with `stderr_full`): a log file
    or `> check.json` on a full file system, every write ENOSPC."""
    with open("/dev/full", "w") as full:
        return subprocess.run(
            [sys.executable, "-P", "-m", "portmapctl", *args],
            stdin=subprocess.DEVNULL,
            stdout=full,
            stderr=full if stderr_full else subprocess.PIPE,
            env=dict(os.environ, PYTHONPATH=str(ROOT), NO_COLOR="1"),
            text=True,
            timeout=60,
            check=False,
        )


@pytest.mark.parametrize("output", ["table", "json"])
def test_output_lost_to_a_full_disk_is_exit_3_never_problems_found(tmp_path, output):
    """0.2: `check -o json > check.json` on a full disk said "internal error: OSError"
    and exit 1, which a script reads as "problems found" (docs/exit-codes.md's example
    then alerts with a truncated file), and the metrics said the run failed. Now the run
    goes to its end (metrics: it did its work) and ends 3, one line saying the output is
    incomplete."""
    (tmp_path / "cni" / "results").mkdir(parents=True)
    snapshot = tmp_path / "nat.save"
    snapshot.write_text("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n")
    metrics = tmp_path / "portmapctl-check.prom"
    done = _to_a_full_disk(
        ["check", "--snapshot", str(snapshot), "--cni-cache-dir", str(tmp_path / "cni"),
         "-o", output, "--metrics-file", str(metrics)]
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert done.stderr.splitlines()[-1] == (
        "portmapctl: error: could not write the output (No space left on device): what"
        " stdout got is incomplete; the command itself ran to its end"
    )
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    assert 'portmapctl_last_run_success{command="check"} 1.0' in metrics.read_text()


def test_a_full_disk_keeps_a_failures_own_exit_code(tmp_path):
    """Exit 2 stays 2 (the run failed for its own reason), whether or not its line could
    be written; 0.2 ended a usage error whose stderr was full in exit 1."""
    assert _to_a_full_disk(["check", "--bogus"], stderr_full=True).returncode == 2
    done = _to_a_full_disk(["check", "--snapshot", str(tmp_path / "none.save")])
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr


def _reset_socket() -> socket.socket:
    """A connected TCP socket whose peer has gone with a reset (a `kubectl exec`, `nc`
    or socket unit's client that hung up): its next write is ECONNRESET."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        ours = socket.create_connection(server.getsockname())
        peer, _ = server.accept()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()
    time.sleep(0.1)  # (the reset arrives)
    return ours


def _hung_up_terminal() -> int:
    """The terminal side of a pty whose master is closed (the ssh session or terminal
    window went away): its writes are EIO."""
    master, terminal = pty.openpty()
    os.close(master)
    return terminal


@pytest.mark.parametrize("reader", ["socket reset", "terminal hung up"])
def test_a_reader_that_left_another_way_is_no_lost_output(tmp_path, reader):
    """A reader that went away is a reader that went away, as for EPIPE (`| head -1`):
    a socket's peer that reset the connection (ECONNRESET), a terminal that hung up
    (EIO). The command ends with its own code, no error said; 3 and "what stdout got is
    incomplete" are for output lost on its way to a file (a full disk)."""
    if reader == "socket reset":
        sock = _reset_socket()
        stdout = sock.fileno()
    else:
        sock, stdout = None, _hung_up_terminal()
    try:
        done = _check_writing_to(stdout, tmp_path)
    finally:
        if sock is not None:
            sock.close()
        else:
            os.close(stdout)
    assert done.returncode == 0, done.stderr
    assert "error" not in done.stderr and "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("verbose", [False, True])
def test_an_internal_error_is_exit_3_never_checks_problems_found(verbose: bool) -> None:
    """A bug (here: list's run made to raise) is one line and exit 3 (with -v, the
    traceback before it): it was exit 1, which `check` means as problems found, so a
    check unit that crashed every run (SuccessExitStatus=1) passed as one that found
    problems, and exit-codes.md's script alerted "portmap problems"."""
    script = (
        "import sys\n"
        "import portmapctl.cli.list_fast as fast\n"
        "def broken(*args, **kwargs):\n"
        "    def run():\n"
        "        raise RuntimeError('a bug')\n"
        "    return run\n"
        "fast.runner = broken\n"
        "from portmapctl.entry import main\n"
        f"sys.argv = ['portmapctl', 'list'{', ' + repr('-v') if verbose else ''}]\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-P", "-c", script],
        capture_output=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT), NO_COLOR="1"),
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stderr.endswith(
        "portmapctl: internal error: RuntimeError: a bug (run with -v for details)\n"
    ), done.stderr
    assert ("Traceback" in done.stderr) is verbose
