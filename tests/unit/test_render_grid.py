"""render.table.Grid: list's and gc's table without rich until something draws it."""

from __future__ import annotations

import sys

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.control import strip_control_codes as rich_strip

from portmapctl import render
from portmapctl.render.table import strip_control_codes


def test_the_control_codes_stripped_are_richs():
    every = "".join(chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF)
    assert strip_control_codes(every) == rich_strip(every)


PARTS = ["a", "é", " ", "\x07", "\r", "\t", "[b]", "-"]
NAMES = st.lists(st.sampled_from(PARTS), max_size=5).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(NAMES, NAMES, st.lists(st.sampled_from(["ok", "stale", " "]))),
                max_size=6), st.booleans())  # fmt: skip
def test_plain_is_the_drawn_texts_plain(rows, header):
    grid = render.grid(["A", "B"], [[a, b] for a, b, _ in rows], [w for *_, w in rows], header)
    text = grid.__rich__()
    assert grid.plain == text.plain
    assert grid.spans == text.spans


def test_piped_output_needs_no_rich():
    """The plain text of a table is there without rich.text being imported."""
    import subprocess

    code = (
        "import sys; from portmapctl import render;"
        " g = render.grid(['A'], [['x']], [['ok']]); print(g.plain);"
        " print('rich.text' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.splitlines() == ["A  STATUS", "x  ok", "False"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(NAMES, NAMES, st.lists(st.sampled_from(["ok", "stale", "a b"]))),
                max_size=6), st.booleans(), st.integers(1, 30))  # fmt: skip
def test_a_status_wrapped_to_a_width_is_whole_and_drawn_alike(rows, header, width):
    """A terminal's width never cuts a status (it goes on below); the plain text and
    the spans are still the drawn Text's."""
    statuses = [w for *_, w in rows]
    grid = render.grid(["A", "B"], [[a, b] for a, b, _ in rows], statuses, header, width=width)
    text = grid.__rich__()
    assert grid.plain == text.plain
    assert grid.spans == text.spans
    assert "…" not in grid.plain
    squeezed = "".join(strip_control_codes(grid.plain).split())
    for words in statuses:
        assert "".join(",".join(words).split()) in squeezed
