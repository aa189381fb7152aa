"""check's summary line points at the fixes above it only where they were printed:
not under -q (the line alone) nor in -o json's `summary` (nothing above it)."""

from __future__ import annotations

import json

from test_output_contract import EXAMPLE, pmctl

from portmapctl import render
from portmapctl.core.status import ProblemKind
from portmapctl.ops.check import CheckResult, Problem

KINDS = "3 problems: 1 missing-entry, 1 shadowed, 1 stale"


def test_the_table_output_points_at_the_fixes_it_printed():
    done = pmctl("check", *EXAMPLE)
    assert done.returncode == 1
    assert done.stdout.splitlines()[-1] == KINDS + " (fixes above)"
    assert "fix: portmapctl gc" in done.stdout  # what it points at is there


def test_quiet_and_json_point_at_nothing():
    quiet = pmctl("check", *EXAMPLE, "-q")
    assert quiet.returncode == 1 and quiet.stdout == KINDS + "\n"
    for extra in ([], ["-q"]):
        done = pmctl("check", *EXAMPLE, "-o", "json", *extra)
        assert done.returncode == 1
        assert json.loads(done.stdout)["summary"] == KINDS


def test_one_command_for_all_is_said_everywhere():
    problem = Problem(ProblemKind.STALE, 4, "CNI-DN-0123456789abcdef01234", "podman",
                      "0123456789abcdef", "no CNI cache entry", "portmapctl gc", "ports stay taken")  # fmt: skip
    result = CheckResult((problem,), (4,), "node", True, 1, 1)
    for above in (True, False):
        assert render.check_summary(result, fixes_above=above) == "1 stale -> portmapctl gc"
    assert render.check_json(result)["summary"] == "1 stale -> portmapctl gc"
