"""Terminal manners (issue 6): colour only on a terminal, NO_COLOR, -q, JSON alone on
stdout, rich markup never read into messages, and the progress-bar helper.

A real pseudo-terminal stands in for the operator's terminal; the commands run on the
example node's dumps (examples/), which needs no root.
"""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest
from pmctl import drain as _drain
from pmctl import (
    read_terminal,
    run_on_terminal,  # noqa: F401  (the unit tests' import of it)
)

from portmapctl.cli.output import Output, OutputChoice

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = [
    "--snapshot",
    str(ROOT / "examples/node.v4.save"),
    "--snapshot6",
    str(ROOT / "examples/node.v6.save"),
    "--cni-cache-dir",
    str(ROOT / "examples/cni-cache"),
]
SGR_COLOUR = ("\x1b[3", "\x1b[9", "\x1b[38;")  # foreground colour escapes


def summary_on_terminal(monkeypatch, line: str, columns: int = 80) -> List[str]:
    """Output().summary(line) as a terminal of `columns` shows it, a string a line."""
    master, slave = pty.openpty()
    monkeypatch.setenv("COLUMNS", str(columns))
    with os.fdopen(slave, "w", buffering=1) as terminal:
        monkeypatch.setattr("sys.stdout", terminal)
        Output().summary(line)
    shown = _drain(master).decode().replace("\r", "").splitlines()
    os.close(master)
    return shown


def test_list_is_coloured_on_a_terminal_only_and_honours_no_color():
    code, coloured, _ = run_on_terminal(["list", *EXAMPLE])
    assert code == 0 and any(c in coloured for c in SGR_COLOUR), coloured
    assert "shadowed" in coloured
    for env, extra in (({"NO_COLOR": "1"}, []), ({}, ["--no-color"])):
        code, plain, _ = run_on_terminal(["list", *EXAMPLE, *extra], env)
        assert code == 0 and "\x1b[" not in plain and "shadowed" in plain, (env, extra)
    # NO_COLOR counts only when it is not empty (no-color.org).
    code, empty, _ = run_on_terminal(["list", *EXAMPLE], {"NO_COLOR": ""})
    assert any(c in empty for c in SGR_COLOUR)
    piped = subprocess.run(
        [sys.executable, "-m", "portmapctl", "list", *EXAMPLE],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "NO_COLOR"},
        timeout=60,
        check=True,
    )
    assert "\x1b[" not in piped.stdout and "shadowed" in piped.stdout


def test_an_empty_force_color_leaves_a_terminal_coloured():
    """FORCE_COLOR set to nothing counts as not set (force-color.org), as NO_COLOR does:
    rich took any FORCE_COLOR for its own say on whether stdout is a terminal, and an
    empty one for "not a terminal", so the table lost its colour there."""
    code, out, _ = run_on_terminal(["list", *EXAMPLE], {"FORCE_COLOR": ""})
    assert code == 0 and any(c in out for c in SGR_COLOUR), out
    code, out, _ = run_on_terminal(["list", *EXAMPLE], {"FORCE_COLOR": "", "NO_COLOR": "1"})
    assert code == 0 and "\x1b[" not in out and "shadowed" in out


def test_tty_compatible_0_keeps_a_terminal_plain():
    """TTY_COMPATIBLE=0 says the terminal takes no escape sequences (rich's variable):
    the table was plain there until the Console was told it is a terminal whatever the
    variable says (127d124), which printed it coloured."""
    code, out, _ = run_on_terminal(["list", *EXAMPLE], {"TTY_COMPATIBLE": "0"})
    assert code == 0 and "\x1b[" not in out and "shadowed" in out, out
    # FORCE_COLOR asks for colour whatever the terminal, as off one.
    env = {"TTY_COMPATIBLE": "0", "FORCE_COLOR": "1"}
    code, out, _ = run_on_terminal(["list", *EXAMPLE], env)
    assert code == 0 and any(c in out for c in SGR_COLOUR), out


def test_json_on_a_terminal_is_one_plain_document(tmp_path):
    code, out, err = run_on_terminal(["list", *EXAMPLE, "-o", "json"])
    assert code == 0 and "\x1b[" not in out
    document = json.loads(out)
    assert {m["container_id"] for m in document["mappings"]} >= {"3f2a9c1e5b7d4a60web"}
    empty = tmp_path / "empty.save"
    empty.write_text("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n")
    nocache = str(tmp_path / "no-cache")
    code, out, err = run_on_terminal(
        ["list", "--snapshot", str(empty), "--cni-cache-dir", nocache, "-o", "json"]
    )
    assert code == 0 and json.loads(out) == {
        "schema": 2,
        "cache": {"dirs": [nocache], "present": False, "entries": 0},
        "mappings": [],
        "chains": [],
        "total_mappings": 0,
    }
    assert err.startswith("portmapctl: warning: no CNI cache at") and err.count("\n") == 1


def test_quiet_prints_the_summary_line_only(tmp_path):
    empty = tmp_path / "empty.save"
    empty.write_text("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n")
    cache = ["--cni-cache-dir", str(ROOT / "examples/cni-cache")]
    code, out, err = run_on_terminal(["list", "--snapshot", str(empty), *cache])
    assert code == 0 and out.strip() == "no portmap chains found" and err == ""
    code, out, err = run_on_terminal(["list", "--snapshot", str(empty), *cache, "-q"])
    assert code == 0 and out.strip() == "no portmap chains found" and err == ""


def test_messages_are_text_not_markup(capsys):
    Output().message("[bold]not bold[/bold] :thumbs_up: [::1]:8080")
    assert capsys.readouterr().err == "[bold]not bold[/bold] :thumbs_up: [::1]:8080\n"


def test_a_long_message_stays_one_line_piped(capsys):
    """A remark is one line, as a warning is: check --repair's "repaired:" line of a
    container on a podman network with a long name (podman takes up to 185 characters:
    libcni's cache file name is the limit) came out of a cron job broken in two, at the
    250 columns a piped console is given, its first half ending in a space."""
    network = ("n-x.y_z" * 27)[:180]
    line = f"repaired: IPv4 missing-chain CNI-DN-e9a5813e818507a76007f ({network}/732246e355e4)"
    assert len(line) > 250
    Output().message(line)
    assert capsys.readouterr().err == line + "\n"


@pytest.fixture
def terminal_stderr(monkeypatch):
    """A function that puts sys.stderr on a pseudo-terminal; gives the master side.

    Called from the test body: pytest's output capture re-installs its own sys.stderr
    after fixtures have run.
    """
    master, slave = pty.openpty()
    stream = io.TextIOWrapper(os.fdopen(slave, "wb", buffering=0), write_through=True)
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)

    def attach() -> int:
        monkeypatch.setattr(sys, "stderr", stream)
        assert sys.stderr.isatty()
        return master

    yield attach
    monkeypatch.undo()
    stream.close()
    os.close(master)


def test_a_message_wrapped_on_an_80_column_terminal_ends_no_line_in_a_space(
    terminal_stderr, monkeypatch
):
    """check --repair's "repaired:" line of a container on a long network name, on an
    80-column terminal: rich wrapped it at the space before the parenthesis and left
    that space at the end of the first line (`... CNI-DN-dd4cac0efe17048d9116c `), seen
    on a real node with `script` at 80 columns. Every word is still there, in order."""
    monkeypatch.setenv("COLUMNS", "80")
    network = "a-rather-long-network-name-for-the-wrap-test"
    line = f"repaired: IPv4 missing-entry CNI-DN-dd4cac0efe17048d9116c ({network}/c4eeeeeeeeee)"
    master = terminal_stderr()
    Output().message(line)
    shown = _drain(master).decode().replace("\r", "").split("\n")
    assert shown[-1] == "" and len(shown) > 2, shown
    assert all(len(row) <= 80 and row == row.rstrip() for row in shown), shown
    assert " ".join(row.strip() for row in shown[:-1]) == line


def _work(out: Output, total: int, after: float, pause: float = 0.0) -> None:
    with out.progress("deleting things", after=after) as progress:
        assert progress is not None
        for done in range(0, total + 1, max(1, total // 4)):
            progress(done, total)
            time.sleep(pause)


def test_progress_bar_on_a_terminal_only_for_long_work(terminal_stderr, monkeypatch):
    terminal = terminal_stderr()
    _work(Output(), total=100, after=0.5)
    assert _drain(terminal, 0.2) == b"", "short work: no bar"
    _work(Output(), total=100, after=0.0, pause=0.1)
    shown = _drain(terminal).decode()
    assert "deleting things" in shown and "100/100" in shown
    assert any(c in shown for c in SGR_COLOUR)
    assert shown.rstrip().endswith("\x1b[2K"), "the bar is erased when done"
    monkeypatch.setenv("NO_COLOR", "1")
    _work(Output(), total=100, after=0.0, pause=0.1)
    plain = _drain(terminal).decode()
    assert "deleting things" in plain and not any(c in plain for c in SGR_COLOUR)


def test_progress_starts_as_a_spinner_and_turns_into_counts(terminal_stderr, monkeypatch):
    """No count yet (reading): a spinner without N/M; the first count: a bar with it.
    The delay comes from PORTMAPCTL_PROGRESS_AFTER when not given."""
    monkeypatch.setenv("PORTMAPCTL_PROGRESS_AFTER", "0")
    terminal = terminal_stderr()
    with Output().progress("removing chains") as progress:
        assert progress is not None
        time.sleep(0.3)
        spinning = _drain(terminal, 0.1).decode()
        progress(0, 1100)
        time.sleep(0.3)
        progress(600, 1100)
        time.sleep(0.3)
    counted = _drain(terminal).decode()
    assert "removing chains" in spinning and "/" not in spinning
    assert "0/1100" in counted and "600/1100" in counted


def test_a_progress_ended_before_its_block_shows_nothing_more(terminal_stderr):
    """`end()`: the work is over, the block not yet (gc --dry-run then waits for the
    lock). The bar is erased at once and nothing of it is drawn after, neither by
    rich's refresh nor by a start timer that fires later; what is written then
    stands alone."""
    terminal = terminal_stderr()
    with Output().progress("looking for chains to remove", after=0.0) as progress:
        assert progress is not None
        progress(1, 1)
        time.sleep(0.3)
        progress.end()
        shown = _drain(terminal, 0.1).decode()
        sys.stderr.write("portmapctl: waiting for the portmapctl lock\n")
        sys.stderr.flush()
        time.sleep(0.4)
        after = _drain(terminal, 0.1).decode()
    assert "looking for chains to remove" in shown and shown.rstrip().endswith("\x1b[2K")
    assert after.replace("\r", "") == "portmapctl: waiting for the portmapctl lock\n", after
    with Output().progress("looking for chains to remove", after=0.2) as progress:
        assert progress is not None
        progress.end()
        time.sleep(0.4)  # (the start timer fires meanwhile)
    assert _drain(terminal, 0.2) == b""


@pytest.mark.parametrize(
    "out",
    [Output(quiet=True), Output(mode=OutputChoice.json)],
    ids=["quiet", "json"],
)
def test_no_progress_bar_when_quiet_or_json(terminal_stderr, out):
    terminal = terminal_stderr()
    with out.progress("deleting things", after=0.0) as progress:
        assert progress is None
    assert _drain(terminal, 0.2) == b""


def test_no_progress_bar_off_a_terminal(capsys):
    with Output().progress("deleting things", after=0.0) as progress:
        assert progress is None
    assert capsys.readouterr().err == ""


LINE_DURING_BAR = """
import sys, time
from portmapctl.cli.output import Output
with Output().progress("looking for chains to remove", after=0.0):
    time.sleep(0.3)
    Output().warn(sys.argv[1])
    time.sleep(0.3)
"""


def test_a_line_written_while_the_bar_shows_stays_one_line():
    """A warning (or the lock's "waiting for ... held by PID N" line) written while the
    bar is on screen passes through rich's stderr redirect: it must not be word-wrapped
    at the terminal's width, as warnings are one line on a terminal too
    (docs/commands/README.md: a command a warning names pastes whole)."""
    long_line = "see them with `portmapctl list " + "--cni-cache-dir /x " * 5 + "--iptables legacy`"
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "80"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", LINE_DURING_BAR, long_line],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=slave,
        env=env,
        cwd=ROOT,
    )
    shown = read_terminal(proc, master, slave)
    lines = shown.decode(errors="replace").replace("\r", "\n").splitlines()
    assert any(line.endswith(f"portmapctl: warning: {long_line}") for line in lines), lines


@pytest.mark.parametrize("command", [["list"], ["check"]])
def test_a_terminal_whose_columns_say_0_gets_the_whole_table(command):
    """COLUMNS=0 (what `export COLUMNS=$(tput cols)` gives where the terminal reports no
    size, as `kubectl exec -t` can before its first resize): the table was fitted to
    the terminal's own width (or 80), but rich, handed no width, took COLUMNS' 0 and
    printed nothing of a coloured table: `list` showed its summary line alone and
    `check` said "(fixes above)" under nothing."""
    import re

    def shown(columns: str) -> str:
        _, out, _ = run_on_terminal([*command, *EXAMPLE], {"COLUMNS": columns})
        assert any(c in out for c in SGR_COLOUR), out
        return re.sub(r"\x1b\[[0-9;]*m", "", out)

    wanted = shown("80")
    assert "shadowed" in wanted
    for columns in ("0", "00"):
        assert shown(columns) == wanted, columns
