"""The rule lexer against iptables-restore itself (the unit half: tests/unit/test_lexer.py).

Each case is a restore line with odd quoting, whose comment iptables-restore's own
reader decides. After the restore, iptables-save and `iptables -S` print the rule
back: lexing their line must give the words our lexer read from the odd line, and
the comment iptables stored.
"""

from __future__ import annotations

from typing import List

import pytest
import realplugin as rp

from portmapctl.iptables.lexer import split_words

CHAIN = "PMT-LEX"

# (restore line, the comment iptables-restore makes of it)
ODD_LINES = [
    ('-A PMT-LEX -m comment --comment "with \\"quotes\\" and a \\\\ backslash" -j RETURN',
     'with "quotes" and a \\ backslash'),
    ('-A PMT-LEX -m comment --comment "it\\\'s" -j RETURN', "it's"),
    ('-A PMT-LEX -m comment --comment pre"fix and space" -j RETURN', "prefix and space"),
    # A closing quote ends the word: -j follows without a space.
    ('-A PMT-LEX -m comment --comment "glued to"-j RETURN', "glued to"),
    # Outside quotes a backslash is an ordinary character.
    ("-A PMT-LEX -m comment --comment back\\slash -j RETURN", "back\\slash"),
    # Only space, tab and newline part words: not \x1c, \v or U+2003 (nor \r, which
    # the text-mode pipes here would turn into a newline: tests/unit/test_lexer.py).
    ("-A PMT-LEX -m comment --comment a\x1cb\u2003c\vd -j RETURN", "a\x1cb\u2003c\vd"),
    ("-A\tPMT-LEX   -m comment\t--comment \"a\ttab\" -j RETURN", "a\ttab"),
    ("-A PMT-LEX ! -s 10.1.0.0/16 -m comment --comment \"x y\" -j RETURN", "x y"),
]  # fmt: skip


def _rule_lines(text: str) -> List[str]:
    return [line for line in text.split("\n") if line.startswith(f"-A {CHAIN} ")]


@pytest.mark.parametrize("line, comment", ODD_LINES)
def test_iptables_restore_reads_odd_quoting_as_we_do(host_ns, iptables_mode, line, comment):
    words = split_words(line)
    assert words[words.index("--comment") + 1] == comment
    restore = rp.tool_path("iptables-restore", iptables_mode)
    rp._run(
        [rp._ip(), "netns", "exec", host_ns, restore, "--noflush"],
        input=f"*nat\n:{CHAIN} - [0:0]\n{line}\nCOMMIT\n",
        check=True,
    )
    saved = _rule_lines(rp.save(host_ns, mode=iptables_mode))
    listed = _rule_lines(
        rp.iptables(host_ns, ["-t", "nat", "-S", CHAIN], mode=iptables_mode).stdout
    )
    assert len(saved) == 1 and listed == saved
    # iptables prints the rule in its own order and spelling (-s moved to the front,
    # the comment quoted its way): the same words as the odd line, once normalized.
    printed = split_words(saved[0])
    assert printed[printed.index("--comment") + 1] == comment
    assert sorted(printed) == sorted(words)
