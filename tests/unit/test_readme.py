"""The README's example that needs no root shows what the command prints today."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from pmctl import ok

ROOT = Path(__file__).parents[2]


def test_readme_list_example_is_real_output(monkeypatch):
    text = (ROOT / "README.md").read_text()
    match = re.search(r"\$ (portmapctl list --snapshot [^\n]+)\n(.*?)```", text, re.S)
    assert match, "the README lost its `portmapctl list --snapshot` example"
    monkeypatch.chdir(ROOT)
    args = shlex.split(match[1])[1:]
    assert ok(args) == match[2]


def test_readme_setup_command_reads_the_shipped_example():
    text = (ROOT / "README.md").read_text()
    setup = re.search(r"pip install \. && (portmapctl [^\n]+)", text)
    assert setup and setup[1].startswith("portmapctl list --snapshot examples/")
