"""(The tests of this subject that need root are in tests/kernel/test_fast_paths.py.)

The shortcuts taken for speed (SPEC §6, benchmarks/bench.py) answer exactly as the
plain ways they replace.

- ruleset: `options()` for option_value (the lexer's fast paths: test_lexer.py);
- render.grid: text and style spans put together at once, as Text.append makes them;
- cli: a command's app built alone parses, helps and fails like the whole app;
- Node.read_with_cache: the saves run from a thread, in the namespace entered, and
  the tables' problem is reported first, as read() then read_cache() would.
"""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from typing import Iterable, List

import pytest
import typer
from hypothesis import given
from hypothesis import strategies as st

from portmapctl import render
from portmapctl.cli import COMMANDS, _click_command, app
from portmapctl.cni import cache as cni_cache
from portmapctl.errors import BadInput, HostProblem
from portmapctl.iptables.ruleset import NatTable, option_value, options
from portmapctl.ops.node import Node, NodeOptions

# --- ruleset --------------------------------------------------------------------------

TOKENS = st.sampled_from(["-p", "-d", "--dport", "-s", "tcp", "80", "-j", "X", "!"])


@given(st.lists(TOKENS, max_size=9), st.lists(TOKENS, min_size=1, max_size=3))
def test_options_answers_as_option_value(args, names):
    found = options(args)
    for name in names:
        assert found.get(name) == option_value(args, name)
    assert option_value(tuple(args), *names) == option_value(list(args), *names)
    # Several names: the value after whichever comes first.
    positions = [i for i, token in enumerate(args[:-1]) if token in names]
    assert option_value(args, *names) == (args[positions[0] + 1] if positions else None)


# --- render.grid --------------------------------------------------------------------------


def grid_by_appending(headers: List[str], rows: List[List[str]], status: List[Iterable[str]]):
    """The grid as it was built before: one Text.append per piece, of the cells as
    the tables write them out (core/text.cell_text: a bell is `\\x07`, not dropped)."""
    from rich.text import Text

    from portmapctl.core.text import cell_text

    rows = [[cell_text(cell) for cell in row] for row in rows]
    status = [[cell_text(word) for word in words] for words in status]
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row)]
    out = Text()
    out.append("  ".join(h.ljust(w) for h, w in zip(headers, widths)) + "  STATUS\n", style="bold")
    for row, words in zip(rows, status):
        out.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  ")
        out.append_text(render.status_text(words))
        out.append("\n")
    out.rstrip()
    return out


CELL = st.lists(st.sampled_from(["a", "bb", "[x]", "é", " ", "\x07", "\r", ":"]), max_size=4).map(
    "".join
)
WORDS = st.lists(
    st.sampled_from([*render.STATUS_STYLE, "removed", "", "\x07", "st\rale"]), max_size=3
)


@given(
    st.integers(1, 4).flatmap(
        lambda width: st.tuples(
            st.lists(CELL.filter(bool), min_size=width, max_size=width),
            st.lists(
                st.tuples(st.lists(CELL, min_size=width - 1, max_size=width + 1), WORDS),
                max_size=5,
            ),
        )
    )
)
def test_grid_is_what_appending_piece_by_piece_makes(case):
    headers, rows_and_words = case
    rows = [row for row, _ in rows_and_words]
    status = [words for _, words in rows_and_words]
    fast = render.grid(headers, rows, status)
    slow = grid_by_appending(headers, rows, status)
    assert (fast.plain, fast.spans) == (slow.plain, slow.spans)


# --- the command line -----------------------------------------------------------------------


def _outcome(command, args: List[str]):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            command.main(args=list(args), prog_name="portmapctl", standalone_mode=False)
            result = "ok"
        except typer.Exit as done:
            result = f"exit {done.exit_code}"
        except Exception as failed:  # noqa: BLE001 - click errors, compared by their text
            formatted = getattr(failed, "format_message", None)
            message = formatted() if formatted is not None else str(failed)
            path = getattr(getattr(failed, "ctx", None), "command_path", None)
            result = f"{type(failed).__name__}: {message} ({path})"
    return result, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    "args",
    [
        ["list", "--help"],
        ["add", "--help"],
        ["check", "--help"],
        ["gc", "--help"],
        ["flush-udp", "--help"],
        ["list", "--no-such-option"],
        ["list", "--proto", "icmp"],
        ["add", "-p"],
        ["gc", "--min-age"],
    ],
)
def test_a_command_alone_parses_like_the_whole_app(args):
    whole = typer.main.get_command(app)
    alone = _click_command(args)
    assert list(alone.commands) == [args[0]]  # what makes it fast
    assert _outcome(alone, args) == _outcome(whole, args)


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["no-such-command"], []])
def test_anything_else_gets_the_whole_app(args):
    assert set(_click_command(args).commands) == {name for name, _, _ in COMMANDS}


# --- Node.read_with_cache -------------------------------------------------------------------


class BrokenBackend:
    name = "broken"
    writable = False

    def read(self, family):
        raise HostProblem("iptables-save failed: no nat table here")


class EmptyBackend:
    name = "empty"
    writable = False

    def read(self, family):
        return NatTable(family)


def test_the_tables_problem_comes_first(tmp_path, monkeypatch):
    def broken_cache(*args, **kwargs):
        raise BadInput("the cache cannot be read")

    monkeypatch.setattr(cni_cache, "read_cache", broken_cache)
    node = Node(NodeOptions(cache_dirs=(str(tmp_path),)), BrokenBackend())
    with pytest.raises(HostProblem, match="no nat table"):
        node.read_with_cache()
    with pytest.raises(BadInput):  # alone, the cache's problem is reported
        Node(NodeOptions(cache_dirs=(str(tmp_path),)), EmptyBackend()).read_with_cache()
