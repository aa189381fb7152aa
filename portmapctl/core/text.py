"""Text that holds bytes that are not UTF-8, written as readable text.

Python holds such a byte of a command-line argument, a path or an iptables comment as
a lone surrogate (surrogateescape: byte 0xe9 is U+DCE9). Written out as it is, it is
no Unicode text: JSON escaped it as `\\udce9`, and so did error lines (repr() of a
value, or stderr's backslashreplace). Everywhere a person or a parser reads it (JSON,
error and warning lines, tables) it is `\\xNN` instead, as the metrics write a path's
such bytes; any other lone surrogate is `\\uNNNN`.
"""

from __future__ import annotations

import re

from portmapctl.core.patterns import lazy

_SURROGATE = lazy("[\ud800-\udfff]")
# C0 but the line break and tab, DEL, C1: what a terminal acts on.
_CONTROL = lazy("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# What a table's cell may not hold as it is: a control character (a line break and a
# tab too: they would move the columns) or a lone surrogate.
_NOT_IN_A_CELL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# What repr() makes of such a byte inside a quoted value ('\udce9'): a backslash the
# value held is doubled there, so an escape is one preceded by an even run of them.
_REPR_BYTE = lazy(r"(?<!\\)((?:\\\\)*)\\udc([89a-f][0-9a-f])")


def surrogate_text(char: str) -> str:
    """One lone surrogate as text: `\\xNN` for a byte surrogateescape held, else `\\uNNNN`."""
    point = ord(char)
    if 0xDC80 <= point <= 0xDCFF:  # surrogateescape's stand-in for byte point - 0xDC00
        return f"\\x{point - 0xDC00:02x}"
    return f"\\u{point:04x}"


def bytes_as_text(text: str) -> str:
    """`text` with every lone surrogate written as surrogate_text says."""
    return _SURROGATE.sub(lambda found: surrogate_text(found.group()), text)


def char_text(char: str) -> str:
    """A character that is not printable, as text: a lone surrogate as surrogate_text
    says, anything else as repr() writes it (`\\n`, `\\x1b`)."""
    if "\ud800" <= char <= "\udfff":
        return surrogate_text(char)
    return repr(char)[1:-1]


def message_text(text: str) -> str:
    """A line for stderr: lone surrogates as bytes_as_text writes them, and so the
    ones a message quoted with repr() (click's usage errors, our `{value!r}`); a
    control character other than a line break as char_text writes it (a foreign rule's
    comment quoted in a note must not colour or move the operator's terminal)."""
    text = _CONTROL.sub(lambda found: char_text(found.group()), bytes_as_text(text))
    if "\\udc" not in text:
        return text
    return _REPR_BYTE.sub(r"\1\\x\2", text)


def cell_text(text: str) -> str:
    """`text` for a table on stdout (a cell, a line under check's table): each control
    character, a line break and a tab included, and each lone surrogate as char_text
    writes it (`\\x1b`, `\\xe9`): a foreign rule's comment in a cell must not colour or
    move the operator's terminal, nor its bytes reach it raw. `text` itself when it
    holds none (the usual case: one scan)."""
    if _NOT_IN_A_CELL.search(text) is None:
        return text
    return _NOT_IN_A_CELL.sub(lambda found: char_text(found.group()), text)


def shell_word(word: str) -> str:
    """`word` as a shell reads it back to the same bytes, for a command printed for a
    person to paste (a fix, a hint): shlex.quote's, or, where it holds a byte that is not
    UTF-8 (a lone surrogate) or a control character, bash's and zsh's $'...' with each
    such byte written `\\xNN`. shlex.quote left them raw, and the line that printed them
    then wrote them as the text `\\xf6`: quoted '...', that text is what the shell gave
    the command (`--cni-cache-dir '/srv/n\\xf6de'`, a directory that is not there)."""
    import shlex

    if _NOT_IN_A_CELL.search(word) is None:
        return shlex.quote(word)
    spelled = []
    for char in word:
        if char == "\\":
            spelled.append("\\\\")
        elif char == "'":
            # (Not \': check's table wraps a command at spaces outside '...', and reads
            # a backslash inside them as itself, as POSIX quotes do.)
            spelled.append("\\x27")
        elif 0xDC80 <= ord(char) <= 0xDCFF:  # surrogateescape's stand-in for a byte
            spelled.append(f"\\x{ord(char) - 0xDC00:02x}")
        elif _NOT_IN_A_CELL.match(char):
            raw = char.encode("utf-8", "surrogatepass")  # (a C1 character: two bytes)
            spelled.append("".join(f"\\x{byte:02x}" for byte in raw))
        else:
            spelled.append(char)
    return "$'" + "".join(spelled) + "'"
