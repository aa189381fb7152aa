"""The README's nftables example (no root) prints what the command prints today."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from pmctl import ok

ROOT = Path(__file__).parents[3]


def test_readme_nft_list_example_is_real_output(monkeypatch):
    text = (ROOT / "README.md").read_text()
    match = re.search(r"\$ (portmapctl list --nft-snapshot [^\n]+)\n(.*?)```", text, re.S)
    assert match, "the README lost its `portmapctl list --nft-snapshot` example"
    monkeypatch.chdir(ROOT)
    assert ok(shlex.split(match[1])[1:]) == match[2]


def test_docs_nft_check_example_is_real_output(monkeypatch):
    text = (ROOT / "docs" / "commands" / "check.md").read_text()
    match = re.search(r"\$ (portmapctl check --nft-snapshot [^\n]+)\n(.*?)```", text, re.S)
    assert match, "docs/commands/check.md lost its `check --nft-snapshot` example"
    monkeypatch.chdir(ROOT)
    from pmctl import run

    done = run(shlex.split(match[1])[1:])
    assert done.returncode == 1
    strip = lambda text: [line.rstrip() for line in text.splitlines()]  # noqa: E731
    assert strip(done.stdout) == strip(match[2])
