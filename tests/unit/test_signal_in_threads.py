"""Ctrl-C and SIGTERM are the run's end, whatever else failed at the same moment.

A signal sent to the process group (Ctrl-C on a terminal, systemd stopping a timer's
unit) also kills the tools portmapctl runs: the nft or iptables-save a background
thread waits for then fails too, and Python 3.11 wraps a signal that lands in a
descriptor's __set_name__ (a dataclass being made while a module imports) in a
RuntimeError. Neither may turn "aborted" (130) or "terminated" into an error line.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import pytest

from portmapctl.cli import list_fast, main
from portmapctl.errors import HostProblem, Interrupted, Terminated
from portmapctl.ops.node import side_by_side


def _both_fail(signalled: BaseException) -> None:
    """The background's tool dies (its error stored) while the foreground is signalled."""
    died = threading.Event()

    def background() -> None:
        died.set()
        raise HostProblem("nft -j list table ip cni_hostport failed: failed")

    def foreground() -> None:
        died.wait(10)
        raise signalled

    side_by_side(background, foreground)


@pytest.mark.parametrize("signalled", [Interrupted, Terminated, KeyboardInterrupt])
def test_a_signal_in_the_foreground_wins_over_the_backgrounds_failure(signalled):
    """0.2: the background's error was raised "as if it had run first": a gc or list
    stopped by Ctrl-C said "error: nft ... failed: failed" and exit 3, and one stopped
    by systemd counted as failed, not stopped."""
    with pytest.raises(signalled):
        _both_fail(signalled())


def test_an_error_in_the_foreground_still_comes_after_the_backgrounds():
    with pytest.raises(HostProblem, match="nft -j list"):
        _both_fail(HostProblem("the cache"))


class _Descriptor:
    def __init__(self, signalled: BaseException) -> None:
        self.signalled = signalled

    def __set_name__(self, owner: Any, name: str) -> None:
        raise self.signalled


@pytest.fixture(autouse=True)
def _handlers_kept():
    """main's last words ignore a second Ctrl-C or SIGTERM: not for the rest of pytest."""
    kept = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    yield
    for number, handler in kept.items():
        signal.signal(number, handler)


def _made_while_signalled(signalled: BaseException) -> Any:
    def run() -> None:
        type("NodeOptions", (), {"snapshots": _Descriptor(signalled)})

    return lambda args, early_nft=None: run


def test_ctrl_c_while_a_class_is_made_is_aborted(monkeypatch, capsys):
    """0.2 (Python 3.11): "internal error: RuntimeError: Error calling __set_name__ on
    'Field' instance 'snapshots' in 'NodeOptions'" and exit 1."""
    monkeypatch.setattr(list_fast, "runner", _made_while_signalled(Interrupted()))
    with pytest.raises(SystemExit) as done:
        main(["list"])
    assert done.value.code == 130
    assert capsys.readouterr().err == "portmapctl: aborted\n"


def test_sigterm_while_a_class_is_made_ends_by_sigterm(monkeypatch, capsys):
    monkeypatch.setattr(list_fast, "runner", _made_while_signalled(Terminated()))
    killed = []
    monkeypatch.setattr("os.kill", lambda pid, number: killed.append(number))
    with pytest.raises(SystemExit) as done:
        main(["list"])
    assert killed == [signal.SIGTERM] and done.value.code == 128 + signal.SIGTERM
    assert capsys.readouterr().err == "portmapctl: terminated\n"


@pytest.mark.parametrize("where", ["starting", "over"])
def test_sigterm_outside_the_command_still_says_its_one_line(tmp_path, where):
    """SIGTERM while Python starts (before the CLI's handler exists) or once the
    command is over (its output written, the CLI's handler put back): the default
    action ended the run without a word (review helper-131: a repair SIGTERMed in its
    last 30 ms, after its output, 8 times in 40). Now one line there too, then death
    by SIGTERM itself, as inside the command."""
    from sigterm_helpers import killed_while_writing
    from test_terminal import EXAMPLE

    code, out, err = killed_while_writing(["list", *EXAMPLE], {}, where, tmp_path / "marker")
    assert code == -signal.SIGTERM, err
    assert err.endswith("portmapctl: terminated\n") and err.count("\n") <= 2, err
    # Over: the command's whole output came first; starting: none of it.
    assert ("summary" in out or "mappings of" in out) == (where == "over"), out


def test_ctrl_c_once_the_command_is_over_is_one_line_too(tmp_path):
    """Ctrl-C once the command is over (the CLI's handler gone) was a KeyboardInterrupt
    traceback (review helper-134); it is the one line and exit 130 of SPEC §3."""
    from sigterm_helpers import killed_while_writing
    from test_terminal import EXAMPLE

    args = ["list", *EXAMPLE]
    code, out, err = killed_while_writing(args, {}, "over", tmp_path / "marker", signal.SIGINT)
    assert code == 130 and err == "portmapctl: aborted\n", (code, err)
    assert "mappings of" in out


def test_main_from_another_thread_leaves_signals_alone():
    """main() (no argv: the console script's way) run from a thread other than the
    main one raised "signal only works in main thread" before it did anything."""
    import subprocess
    import sys

    program = (
        "import sys, threading; sys.argv = ['portmapctl', '--version'];"
        " from portmapctl import entry;"
        " worker = threading.Thread(target=entry.main); worker.start(); worker.join()"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("portmapctl "), done.stderr
    assert done.stderr == ""
