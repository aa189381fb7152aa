"""The words of an iptables rule line, split exactly as iptables-restore splits them.

The one place that turns rule text (iptables-save output, `iptables -S`, a dump
file) into words. iptables-restore's reader (add_param_to_argv in iptables'
xshared.c) knows three separators, space, tab and newline, and one quote, `"`:

- outside quotes a run of separators ends a word; a backslash is an ordinary
  character and `!` is a word like any other;
- a `"` opens a quote wherever it is (`a"b c"` is the one word `ab c`); inside, a
  backslash takes the next character as it is (`\\"`, `\\\\`, `\\'`) and the closing
  `"` ends the word there and then (`"a b"c` is two words; `""` is an empty word).

Where iptables-restore keeps the rest of a line with an unclosed quote as a word,
`split_words` refuses it: iptables-save prints a comment holding a newline across
two lines, and the first of them ends inside its quote.

iptables-save's own lines have a narrower form: words between single spaces, each
either bare or wholly quoted (xtables_save_string quotes every value that is not
letters, digits, `_` and `-`, and escapes `"`, `\\` and `'`). Lines of that form take
one of two fast paths (no quote at all; quoted words between single spaces); any
other line, the careful loop (tests/unit/test_lexer.py holds them to it).
"""

from __future__ import annotations

import operator
import re
from typing import List, Optional

from portmapctl.core.patterns import lazy

# A quoted word, its text captured (inside, a backslash escapes any one character).
_QUOTED = lazy(r'"([^"\\]*(?:\\.[^"\\]*)*)"', re.DOTALL)
_ESCAPE = lazy(r"\\(.)", re.DOTALL)
# The escaped character, as _ESCAPE.sub's replacement: a C callable, 4 times faster
# than the template r"\1" (which Python 3.11 expands in Python, match by match).
_ESCAPED = operator.itemgetter(1)
_SEPARATORS = " \t\n"


def split_words(line: str) -> List[str]:
    """The words of one rule line, as iptables-restore reads them.

    Raises ValueError("unterminated quote") for a line whose last quote is not closed.
    """
    if '"' not in line and "\t" not in line and "\n" not in line:
        # Most lines: split at single spaces (str.split() would also cut at \r, \x1c
        # or U+2003, which an interface or chain name may hold).
        words = line.split(" ")
        if all(words):  # no doubled spaces, none at the ends
            return words
    elif "\t" not in line and "\n" not in line:
        words_or_none = _split_saved_form(line)
        if words_or_none is not None:
            return words_or_none
    return _split_carefully(line)


def _split_saved_form(line: str) -> Optional[List[str]]:
    """The words of a line in iptables-save's form (each quoted word alone between
    single spaces, none doubled), or None for any other line without a tab or a
    newline (split_words sends those to the careful loop first). One split of the line:
    at its quotes when it has no backslash (kube-proxy's comments), else with the
    regular expression (the plugin's comments escape their quotes)."""
    escaped = "\\" in line
    if escaped:
        parts = _QUOTED.split(line)  # outside, quoted, outside, ..., outside
    else:
        parts = line.split('"')  # the same, when nothing is escaped
        if not len(parts) & 1:
            return None  # an odd number of quotes: the last does not close
    last = len(parts) - 1
    words: List[str] = []
    for k in range(0, last + 1, 2):
        free = parts[k]
        if escaped and '"' in free:
            return None  # a quote that does not close
        # The bare words around quoted ones, without the single spaces that part them.
        if k == 0:
            if free and free[-1] != " ":
                return None  # glued to the quoted word that follows
            bare = free[:-1]
        elif k == last:
            if free and free[0] != " ":
                return None  # glued to the quoted word before
            bare = free[1:]
        elif free == " ":
            bare = ""  # two quoted words, one space between
        elif len(free) > 2 and free[0] == " " and free[-1] == " ":
            bare = free[1:-1]
        else:
            return None
        if bare:
            split = bare.split(" ")
            if not all(split):
                return None  # doubled spaces, or spaces at the ends of the line
            words += split
        if k < last:
            word = parts[k + 1]
            words.append(_unescaped(word) if escaped and "\\" in word else word)
    return words


def _unescaped(word: str) -> str:
    """A quoted word's text: each backslash takes the next character as it is. When
    every backslash escapes a quote (the plugin's comments), str.replace does it."""
    if word.count("\\") == word.count('\\"'):
        return word.replace('\\"', '"')
    return _ESCAPE.sub(_ESCAPED, word)


def _split_carefully(line: str) -> List[str]:
    """iptables-restore's loop, character by character (any line)."""
    words: List[str] = []
    current: List[str] = []
    quoted = escaped = False
    for char in line:
        if quoted:
            if escaped:
                current.append(char)
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                # The closing quote ends the word, even an empty one ("").
                words.append("".join(current))
                current, quoted = [], False
            else:
                current.append(char)
        elif char == '"':
            quoted = True
        elif char in _SEPARATORS:
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(char)
    if quoted:
        raise ValueError("unterminated quote")
    if current:
        words.append("".join(current))
    return words
