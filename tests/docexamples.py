"""The `console` examples of the docs: each `$ command` line with the output shown under
it, as a reader copies them. Shared by the unit tier (examples that read only files)
and the kernel tier (examples run on the demo node that docs/demo_node.py builds)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import List, NamedTuple


class Example(NamedTuple):
    line: int  # where the `$ ` line is, 1-based
    words: List[str]  # the whole command, `sudo` dropped, continuation lines joined
    shown: List[str]  # the output lines shown under it

    @property
    def argv(self) -> List[str]:
        """The arguments after `portmapctl` (empty for another command)."""
        return self.words[1:] if self.words[:1] == ["portmapctl"] else []


def console_examples(page: Path) -> List[Example]:
    lines = page.read_text().splitlines()
    found: List[Example] = []
    in_console = False
    number = 0
    while number < len(lines):
        line = lines[number]
        number += 1
        if line.startswith("```"):
            in_console = line.strip() == "```console"
            continue
        if not in_console:
            continue
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
