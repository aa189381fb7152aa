"""Every offline command's output is what it was (issue 13: the restructure changed no
behaviour). The files are written by tests/golden/capture.py; an intended output change
regenerates them, and the diff is reviewed like code."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "golden"))
from capture import run  # noqa: E402
from cases import GOLDEN, cases  # noqa: E402

CASES = cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_output_matches_golden(name):
    args = CASES[name]
    expected = (GOLDEN / f"{name}.txt").read_text()
    assert " ".join(args) + "\n" + run(args) == expected
