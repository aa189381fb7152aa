"""What tests/kernel/test_injection.py and tests/unit/test_injection_pure.py share."""

from __future__ import annotations

from typing import List

from portmapctl.iptables.lexer import split_words

HOSTILE_COMMENTS = [
    'evil" -j ACCEPT',
    'x" -j ACCEPT\\" -A INPUT -j DROP',
    "-A INPUT -j ACCEPT",
    "COMMIT",
    "' ; $(reboot) `id` | & > *",
    "\\",
    '\\"',
    "ünï 容器 \u2028 \u202e",
    '"',
    "",
]


def _lines(text: str) -> List[List[str]]:
    """The restore text's command lines, split as iptables-restore splits them."""
    lines = text.split("\n")
    assert lines[0] == "*nat" and lines[-2:] == ["COMMIT", ""], text
    return [split_words(line) for line in lines[1:-2]]
