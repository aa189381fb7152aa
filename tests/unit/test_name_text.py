"""core/text.py's escape of a name read from the node: the text a table or a stderr
line writes reads back to that one name (bash's $'...' reading: `\\xNN` a byte that
is not UTF-8 or an ASCII control, `\\uNNNN`/`\\UNNNNNNNN` a character, `\\\\` a
backslash), in any stream encoding, and holds only what the stream writes as it is."""

from __future__ import annotations

import re
from typing import Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portmapctl.core.text import cell_text, char_text, message_text, name_text

_ESCAPE = re.compile(r"\\(?:x([0-9a-f]{2})|u([0-9a-f]{4})|U([0-9a-f]{8})|([ntr\\]))")
_NAMED = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def _read_back(text: str) -> str:
    """The name a text of name_text's names: the reader a person or a script applies
    (independent of the writer: a byte `\\xNN` past 0x7f is surrogateescape's
    U+DCNN, as Python holds a path's byte)."""

    def one(found: re.Match[str]) -> str:
        byte, bmp, wide, named = found.groups()
        if named:
            return _NAMED[named]
        if byte:
            point = int(byte, 16)
            return chr(point if point < 0x80 else 0xDC00 + point)
        return chr(int(bmp or wide, 16))

    rest = _ESCAPE.sub("", text)
    assert "\\" not in rest, f"a backslash that starts no escape: {text!r}"
    return _ESCAPE.sub(one, text)


# Names as the node gives them: any character, a lone surrogate (a byte that is not
# UTF-8) included, and the text of escapes themselves.
_NAMES = st.text(
    st.one_of(
        st.characters(),
        st.sampled_from(["\\", "x", "u", "e", "9", "\x85", "\udc85", "\u00a0", "\u200d", "\x1b"]),
        st.integers(0xDC80, 0xDCFF).map(chr),
    )
)


@pytest.mark.parametrize("codec", [None, "ascii", "latin-1"])
@given(name=_NAMES)
def test_a_tables_name_cell_reads_back_to_the_name(codec: Optional[str], name: str):
    shown = cell_text(name_text(name), codec)
    assert _read_back(shown) == name
    assert shown.isprintable()
    if codec is not None:
        shown.encode(codec)  # what the stream writes as it is: no `?`, no error


@given(name=_NAMES)
def test_a_name_in_a_stderr_line_reads_back_to_the_name(name: str):
    line = message_text(f"skipped CNI cache file {name_text(name)}: ...", "ascii")
    assert _read_back(line[len("skipped CNI cache file ") : -len(": ...")]) == name


def test_names_that_looked_alike_are_written_apart():
    # A C1 control, the byte 0x85, the text `\x85`; é, the byte 0xe9, the text `\xe9`.
    names = ["\x85", "\udc85", "\\x85", "caf\u00e9", "caf\udce9", "caf\\xe9", "cafe"]
    shown = [cell_text(name_text(n), "ascii") for n in names]
    assert shown == ["\\u0085", "\\x85", "\\\\x85", "caf\\u00e9", "caf\\xe9", "caf\\\\xe9", "cafe"]
    assert char_text("\U0001f600") == "\\U0001f600" and char_text("\x1b") == "\\x1b"


def test_a_printable_name_is_itself_where_the_stream_writes_it():
    assert cell_text(name_text("café-\U0001f600"), None) == "café-\U0001f600"
    assert cell_text(name_text("café"), "latin-1") == "café"
    assert message_text("café\nnext\tcol", None) == "café\nnext\tcol"
