"""Rules as people read them: in a problem, a hint, a warning, never fed back to
iptables (ruleset.format_rule and quote write what iptables-restore reads).

A control character read from a dump (an escape in another tool's rule's comment,
which iptables and the kernel take) is written out (`\\x1b`, core/text.char_text)
rather than refused as quote() refuses it for a restore: one such rule stopped list
and check of the whole node (exit 2), and printed raw it would reach a terminal.
"""

from __future__ import annotations

from typing import Optional, Sequence

from portmapctl.core.backend import Flavour
from portmapctl.core.text import char_text, shell_word
from portmapctl.errors import BadInput
from portmapctl.iptables.ruleset import CONTROL_CHARS, format_rule, quote


def shown_rule(command: str, chain: str, args: Sequence[str]) -> str:
    """format_rule's line (`-A CHAIN args...`), its control characters written out."""
    try:
        return format_rule(command, chain, args)
    except BadInput:
        return " ".join([command, shown_line(chain), *(_shown_word(t) for t in args)])


def shown_line(text: str) -> str:
    """`text` (a rule's line as read) with each control character written out."""
    if not CONTROL_CHARS.search(text):
        return text
    return CONTROL_CHARS.sub(lambda found: char_text(found.group()), text)


def _shown_word(token: str) -> str:
    if not CONTROL_CHARS.search(token):
        return quote(token)
    return '"' + shown_line(token).replace('"', '\\"') + '"'  # (quote() doubles the \)


def command_line(
    family: int, flavour: Optional[str], command: str, chain: str, args: Sequence[str]
) -> str:
    """A command a person can paste into a shell, e.g. `iptables-nft -t nat -D CHAIN ...`.

    For hints such as check's fixes only; nothing here ever runs it.
    """
    tool = "ip6tables" if family == 6 else "iptables"
    if flavour in tuple(Flavour):
        tool += f"-{flavour}"
    return " ".join(shell_word(word) for word in (tool, "-t", "nat", command, chain, *args))
