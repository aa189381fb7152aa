"""docs/guarantees.md names, for each guarantee of SPEC §5, the tests that prove it:
every test it names exists. And one guarantee that is a property of the source:
nothing runs through a shell."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "guarantees.md"


def test_every_named_test_exists():
    text = DOC.read_text()
    # Any depth (tests/unit/nftables/...: 19 of the names were not looked at), and a
    # parametrized test's id after its name.
    named = re.findall(r"`(tests/(?:\w+/)+test_\w+\.py)::(\w+)(?:\[[^\]`]*\])?`", text)
    assert len(named) >= 20
    for path, name in named:
        source = (ROOT / path).read_text()
        assert re.search(rf"^def {name}\(", source, re.M), f"{path}::{name} does not exist"
    for heading in ("Idempotent", "Atomic", "Concurrent-safe", "Bad input", "Scope"):
        assert f"## {heading}" in text


def test_nothing_runs_through_a_shell():
    for path in (ROOT / "portmapctl").rglob("*.py"):
        source = path.read_text()
        for forbidden in ("shell=True", "os.system(", "os.popen(", "commands.getoutput"):
            assert forbidden not in source, f"{path.relative_to(ROOT)}: {forbidden}"
