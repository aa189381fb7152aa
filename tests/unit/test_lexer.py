"""The rule lexer: a line into words as iptables-restore reads it (iptables/lexer.py).

The kernel half (tests/kernel/test_lexer_reference.py) pins it to iptables-restore
itself; these pin it to real lines and to iptables-save's quoting.
"""

from __future__ import annotations

from typing import List

import pytest
from fixtures_lib import NAMES, save_text
from hypothesis import given, settings
from hypothesis import strategies as st

from portmapctl.iptables.lexer import _split_carefully, _split_saved_form, split_words
from portmapctl.iptables.ruleset import quote


def saved_spelling(word: str) -> str:
    """A value as iptables-save prints it (xtables_save_string, iptables 1.8): bare
    when it is only letters, digits, `_` and `-`, else in double quotes with `"`, `\\`
    and `'` escaped by a backslash."""
    safe = set("_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    if word and set(word) <= safe:
        return word
    escaped = "".join("\\" + c if c in "\"\\'" else c for c in word)
    return f'"{escaped}"'


@pytest.mark.parametrize(
    "line, words",
    [
        # The plugin's entry rule: escaped quotes inside a quoted comment.
        (
            '-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \\"cni0\\" id:'
            ' \\"abc123\\"" -m multiport --dports 8080 -j CNI-DN-70a29d9dc18bc4d652ea5',
            ["-A", "CNI-HOSTPORT-DNAT", "-p", "tcp", "-m", "comment", "--comment",
             'dnat name: "cni0" id: "abc123"', "-m", "multiport", "--dports", "8080",
             "-j", "CNI-DN-70a29d9dc18bc4d652ea5"],
        ),
        # kube-proxy: a comment with spaces and a semicolon, and a negated source.
        (
            '-A KUBE-SVC-X ! -s 10.244.0.0/16 -d 10.96.0.1/32 -p tcp -m comment --comment'
            ' "default/kubernetes:https cluster IP" -m tcp --dport 443 -j KUBE-MARK-MASQ',
            ["-A", "KUBE-SVC-X", "!", "-s", "10.244.0.0/16", "-d", "10.96.0.1/32", "-p",
             "tcp", "-m", "comment", "--comment", "default/kubernetes:https cluster IP",
             "-m", "tcp", "--dport", "443", "-j", "KUBE-MARK-MASQ"],
        ),
        ("-A POSTROUTING ! -o lo -j MASQUERADE", ["-A", "POSTROUTING", "!", "-o", "lo",
                                                  "-j", "MASQUERADE"]),
        # iptables-save escapes ' too; a backslash escapes itself.
        ('-A X -m comment --comment "it\\\'s a \\\\ backslash" -j RETURN',
         ["-A", "X", "-m", "comment", "--comment", "it's a \\ backslash", "-j", "RETURN"]),
        ('-A X -m comment --comment "" -j RETURN',
         ["-A", "X", "-m", "comment", "--comment", "", "-j", "RETURN"]),
        ('-A X -m comment --comment "a" "b"', ["-A", "X", "-m", "comment", "--comment", "a",
                                               "b"]),
        ('"-A" X', ["-A", "X"]),
        # Outside quotes a backslash is an ordinary character.
        ("-A X -i eth\\0 -j RETURN", ["-A", "X", "-i", "eth\\0", "-j", "RETURN"]),
        # Spaces, tabs and newlines part words; nothing else does (a name may hold \x1c
        # or U+2003, which str.split() would cut at), and runs of them count once.
        ("-A X -i a\x1cb\u2003c\r -j RETURN", ["-A", "X", "-i", "a\x1cb\u2003c\r", "-j",
                                              "RETURN"]),
        ("  -A\tX \t -j  RETURN \n", ["-A", "X", "-j", "RETURN"]),
        # A quote opens anywhere and its close ends the word.
        ('-A X --comment pre"fix sp"', ["-A", "X", "--comment", "prefix sp"]),
        ('-A X --comment "x y"-j RETURN', ["-A", "X", "--comment", "x y", "-j", "RETURN"]),
        ('-A X "a""b"', ["-A", "X", "a", "b"]),
        ('-A X "a\tb"', ["-A", "X", "a\tb"]),
        ("", []),
    ],
)  # fmt: skip
def test_real_and_odd_lines(line: str, words: List[str]) -> None:
    assert split_words(line) == words
    assert _split_carefully(line) == words


@pytest.mark.parametrize("line", ['-A X "open', '-A X "a\\"', '-A X "a" "b', '"'])
def test_an_unclosed_quote_is_refused(line: str) -> None:
    """iptables-save cuts a comment holding a newline across two lines; the first ends
    inside its quote (iptables-restore would take the rest as a word)."""
    with pytest.raises(ValueError, match="unterminated quote"):
        split_words(line)


WORD = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\x00"))


@given(st.lists(WORD, min_size=1, max_size=6))
def test_the_saved_spelling_of_any_words_reads_back_as_them(words: List[str]) -> None:
    line = " ".join(saved_spelling(w) for w in words)
    assert split_words(line) == words


@given(st.lists(WORD.filter(lambda w: w.isprintable()), min_size=1, max_size=6))
def test_what_we_write_reads_back(words: List[str]) -> None:
    """ruleset.quote, the restore text's quoting, is read back as the words."""
    assert split_words(" ".join(quote(w) for w in words)) == words


# Quotes, backslashes, separators and characters str.split() would cut at: where the
# fast paths could part from the careful loop.
LINE_CHARS = st.sampled_from(['"', "\\", " ", " ", "\t", "a", "b", "-", "\x1c", "\x85",
                              "\u2003", "\r", "é"])  # fmt: skip


@settings(max_examples=500)
@given(st.text(LINE_CHARS, max_size=16))
def test_the_fast_paths_agree_with_the_careful_loop(line: str) -> None:
    try:
        careful = _split_carefully(line)
    except ValueError:
        if "\t" not in line:
            assert _split_saved_form(line) is None  # never a fast path
        with pytest.raises(ValueError):
            split_words(line)
        return
    assert split_words(line) == careful
    if '"' in line and "\t" not in line:  # the saved-form path's precondition
        fast = _split_saved_form(line)
        assert fast is None or fast == careful


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("family", [4, 6])
def test_every_saved_line_takes_a_fast_path(name: str, family: int) -> None:
    """iptables-save's own lines never fall back to the careful loop."""
    for line in save_text(name, family).splitlines():
        if line.startswith("-A ") and '"' in line:
            assert _split_saved_form(line) == _split_carefully(line), line
        elif line.startswith("-A "):
            assert line.split(" ") == _split_carefully(line), line


@settings(max_examples=1000)
@given(st.text(st.sampled_from(["\\", '"', "a", " ", "\n"]), max_size=12))
def test_unescaping_by_replace_is_the_regular_expressions(word: str) -> None:
    from portmapctl.iptables.lexer import _ESCAPE, _ESCAPED, _unescaped

    assert _unescaped(word) == _ESCAPE.sub(_ESCAPED, word)
