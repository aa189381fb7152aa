"""The `console` examples of the docs: each `$ command` line with the output shown under
it, as a reader copies them. Shared by the unit tier (examples that read only files)
and the kernel tier (examples run on the demo node that docs/demo_node.py builds)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import List, NamedTuple, Tuple


class Example(NamedTuple):
    line: int  # where the `$ ` line is, 1-based
    words: List[str]  # the whole command, `sudo` dropped, continuation lines joined
    shown: List[str]  # the output lines shown under it

    @property
    def argv(self) -> List[str]:
        """The arguments after `portmapctl` (empty for another command)."""
        return self.words[1:] if self.words[:1] == ["portmapctl"] else []


def _dedented(line: str, indent: int) -> str:
    """`line` of a block whose fence is indented by `indent` (Markdown nests a block
    under a list item so): that much leading space taken off, no more."""
    return line[min(indent, len(line) - len(line.lstrip(" "))) :]


def console_examples(page: Path) -> List[Example]:
    """Every `$ ` line of the page's ```console blocks, those indented under a list item
    (troubleshooting.md's steps) read as the others, their indentation taken off."""
    lines = page.read_text().splitlines()
    found: List[Example] = []
    in_console = False
    indent = 0  # the open block's fence's
    number = 0
    while number < len(lines):
        line = lines[number]
        number += 1
        if line.lstrip(" ").startswith("```"):
            in_console = line.strip() == "```console"
            indent = len(line) - len(line.lstrip(" "))
            continue
        if not in_console:
            continue
        line = _dedented(line, indent)
        if line.startswith("$ "):
            start, command = number, line[2:]
            while command.endswith("\\") and number < len(lines):
                command = command[:-1] + " " + lines[number].strip()
                number += 1
            words = shlex.split(command, comments=True)
            found.append(Example(start, words[1:] if words[:1] == ["sudo"] else words, []))
        elif found:
            found[-1].shown.append(line)
    return found


def shell_blocks(page: Path) -> List[Tuple[int, str]]:
    """The page's ```sh blocks, as (the fence's line, 1-based; the script): what a
    reader runs between two examples (troubleshooting.md's removal of the shared chains
    from the legacy tables, between `check --repair` and the healthy `check`)."""
    lines = page.read_text().splitlines()
    found: List[Tuple[int, str]] = []
    script: List[str] = []
    start = indent = 0
    for number, line in enumerate(lines, 1):
        fence = line.lstrip(" ").startswith("```")
        if start and fence:
            found.append((start, "\n".join(script) + "\n"))
            start = 0
        elif start:
            script.append(_dedented(line, indent))
        elif fence and line.strip() == "```sh":
            start, indent, script = number, len(line) - len(line.lstrip(" ")), []
    return found
