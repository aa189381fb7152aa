"""Text that holds bytes that are not UTF-8, written as readable text.

Python holds such a byte of a command-line argument, a path or an iptables comment as
a lone surrogate (surrogateescape: byte 0xe9 is U+DCE9). Written out as it is, it is
no Unicode text: JSON escaped it as `\\udce9`, and so did error lines (repr() of a
value, or stderr's backslashreplace). Everywhere a person or a parser reads it (JSON,
error and warning lines, tables) it is `\\xNN` instead, as the metrics write a path's
such bytes; any other lone surrogate is `\\uNNNN`.

What people read (tables on stdout, lines on stderr) writes any other character it
cannot show as it is, `\\uNNNN` (`\\UNNNNNNNN` past U+FFFF): one that is not
printable (a C1 control, a no-break space, a zero-width joiner; an ASCII control keeps
repr()'s `\\n`, `\\x1b`, which no byte that is not UTF-8 can be) or that the stream's
encoding lacks (`é` under PYTHONIOENCODING=ascii was rich's `?`, and stderr's
`\\xe9`, the text of the byte 0xe9). A name read from the node (a network, a
container ID, a cache file's name) has its backslash doubled too (name_text): so its
text reads back to one name, as bash's $'...' reads it (`\\xNN` a byte, `\\uNNNN` a
character), and `caf\\u00e9`, `caf\\xe9` and `caf\\\\xe9` are three names.
"""

from __future__ import annotations

import re
import sys
from enum import Enum
from typing import Iterable, List, Optional, TextIO, Tuple, Union

from portmapctl.core.patterns import lazy


class _Stream(Enum):
    """Which standard stream's encoding a line is written for, by default."""

    STDOUT = "stdout"
    STDERR = "stderr"


_SURROGATE = lazy("[\ud800-\udfff]")
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
    """A character that cannot be shown as it is, as text: a lone surrogate as
    surrogate_text says; an ASCII one as repr() writes it (`\\n`, `\\x1b`); any other
    `\\uNNNN` or `\\UNNNNNNNN`. (repr() wrote a C1 control U+0085 `\\x85`, the text of
    the byte 0x85 that is not UTF-8.)"""
    point = ord(char)
    if 0xD800 <= point <= 0xDFFF:
        return surrogate_text(char)
    if point < 0x80:
        return repr(char)[1:-1]
    return f"\\u{point:04x}" if point <= 0xFFFF else f"\\U{point:08x}"


def stream_codec(stream: Optional[TextIO]) -> Optional[str]:
    """The codec of `stream`'s encoding, None where it writes every character (UTF-8,
    or a stream that names none)."""
    encoding = getattr(stream, "encoding", None)
    if not encoding:
        return None
    import codecs

    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        return None
    return None if name.startswith("utf") else name


def _stdout_codec() -> Optional[str]:
    return stream_codec(sys.stdout)


def _as_is(text: str, codec: Optional[str]) -> bool:
    """Whether `text` (a whole text: one scan in C, the usual case; or one character)
    is written as it is: printable, and in `codec` (None: any)."""
    if not text.isprintable():
        return False
    if codec is None or text.isascii():
        return True
    try:
        text.encode(codec)
    except UnicodeEncodeError:
        return False
    return True


def _spelled(text: str, codec: Optional[str], keep: str = "", backslash: bool = False) -> str:
    """`text` with each character _as_is says no to as char_text writes it, but
    those in `keep`; with `backslash`, a backslash doubled."""
    if _as_is(text, codec) and not (backslash and "\\" in text):
        return text
    out = []
    for char in text:
        if char == "\\" and backslash:
            out.append("\\\\")
        elif char in keep or _as_is(char, codec):
            out.append(char)
        else:
            out.append(char_text(char))
    return "".join(out)


def name_text(name: str) -> str:
    """A name read from the node (a network, a container ID, a cache file's path), to
    be put in a line for people: its backslashes doubled, each character it cannot
    show as char_text writes it. The line's own pass (message_text, cell_text) then
    writes what its stream's encoding lacks; the text reads back to this one name."""
    return _spelled(name, None, backslash=True)


def message_text(text: str, codec: Union[str, None, _Stream] = _Stream.STDERR) -> str:
    """A line for stderr: lone surrogates as bytes_as_text writes them, and so the
    ones a message quoted with repr() (click's usage errors, our `{value!r}`); any
    other character but a line break and a tab that is not printable, or that the
    stream's encoding (`codec`; by default stderr's) lacks, as char_text writes it (a
    foreign rule's comment quoted in a note must not colour or move the operator's
    terminal; `é` on an ASCII stderr was its `\\xe9`, the text of a byte)."""
    if codec is _Stream.STDERR:
        codec = stream_codec(sys.stderr)
    text = _spelled(bytes_as_text(text), codec, keep="\n\t")
    if "\\udc" not in text:
        return text
    return _REPR_BYTE.sub(r"\1\\x\2", text)


def cell_text(text: str, codec: Union[str, None, _Stream] = _Stream.STDOUT) -> str:
    """`text` for a table on stdout (a cell, a line under check's table): each
    character that is not printable (a control character, a line break and a tab
    included), or that the stream's encoding (`codec`; by default stdout's) lacks,
    and each lone surrogate as char_text writes it (`\\x1b`, `\\xe9`, `\\u00e9`): a
    foreign rule's comment in a cell must not colour or move the operator's terminal,
    nor its bytes reach it raw. `text` itself when it holds none (the usual case: one
    scan)."""
    if codec is _Stream.STDOUT:
        codec = _stdout_codec()
    return _spelled(text, codec)


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


def count(number: int, word: str) -> str:
    """`1 chain`, `2 chains` (render's tables and summaries, problems' details)."""
    return f"{number} {word}" + ("" if number == 1 else "s")


def rules_missing(missing: int, wanted: int) -> str:
    """`2 of 6 rules missing`: check's words for the rules a container lacks of those
    the plugin writes for it, in iptables and nftables alike (one vocabulary)."""
    return f"{missing} of {wanted} rule{'' if wanted == 1 else 's'} missing"


def port_runs(ports: Iterable[Tuple[str, int]]) -> List[Tuple[str, str]]:
    """(protocol, `9000-9010` or `8080`): each run of consecutive (protocol, port)
    pairs as one range, as `podman ps` shows `-p 9000-9010:9000-9010`, which hands the
    plugin a mapping per port (check's rows and gc's HOST PORTS named each)."""
    runs: List[Tuple[str, int, int]] = []
    for proto, port in ports:
        if runs and runs[-1][0] == proto and runs[-1][2] + 1 == port:
            runs[-1] = (proto, runs[-1][1], port)
        else:
            runs.append((proto, port, port))
    return [
        (proto, f"{first}-{last}" if last > first else str(first)) for proto, first, last in runs
    ]
