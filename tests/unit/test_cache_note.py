"""The one line every command says when the CNI cache cannot tell what is live
(SPEC §3 output contract), with several --cni-cache-dir directories."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from portmapctl.cli._common import CacheInfo

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ["--snapshot", "examples/node.v4.save", "--snapshot6", "examples/node.v6.save"]


def test_of_several_directories_a_missing_one_is_not_called_empty(tmp_path: Path) -> None:
    empty, missing = tmp_path / "empty", tmp_path / "nocache"
    (empty / "results").mkdir(parents=True)
    note = CacheInfo((str(empty), str(missing)), True, 0).note()
    assert note == (
        f"the CNI cache at {empty}/results is empty (no {missing}/results):"
        " no container is known to be live"
    )
    assert CacheInfo((str(empty),), True, 0).note() == (
        f"the CNI cache at {empty}/results is empty: no container is known to be live"
    )
    assert (
        CacheInfo((str(missing),), False, 0)
        .note()
        .startswith(f"no CNI cache at {missing}/results: ")
    )


GIVEN_HINT = "({dirs} {which} given: check that the container runtime writes its CNI cache there)"
ONE, SEVERAL = "is the cache directory", "are the cache directories"


@pytest.mark.parametrize("command", ["list", "check"])
def test_a_missing_cache_given_by_option_is_not_told_to_give_the_option(
    tmp_path: Path, command: str
) -> None:
    """`--cni-cache-dir D` with no D/results said "(give --cni-cache-dir)": the option
    the operator just gave. It names the directory given and what to check of it."""
    missing = tmp_path / "nocache"
    done = subprocess.run(
        [sys.executable, "-m", "portmapctl", command, *EXAMPLE, "--cni-cache-dir", str(missing)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, NO_COLOR="1"),
        timeout=60,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    assert done.stderr == (
        f"portmapctl: warning: no CNI cache at {missing}/results: stale mappings cannot be"
        f" told from live ones {GIVEN_HINT.format(dirs=missing, which=ONE)}\n"
    )


def test_the_missing_cache_hint_says_give_the_option_only_when_it_was_not(
    tmp_path: Path,
) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    assert (
        CacheInfo((str(one),), False, 0)
        .note()
        .endswith(": stale mappings cannot be told from live ones (give --cni-cache-dir)")
    )
    assert (
        CacheInfo((str(one), str(two)), False, 0, given=True)
        .note()
        .endswith(" ones " + GIVEN_HINT.format(dirs=f"{one}, {two}", which=SEVERAL))
    )
    # `--cni-cache-dir D/results`: the line already says what to give instead.
    (one / "results" / "results").mkdir(parents=True)
    assert CacheInfo((str(one / "results"),), False, 0, given=True).note() == (
        f"no CNI cache at {one}/results/results (results/ is below the cache directory:"
        f" give {one}): stale mappings cannot be told from live ones"
    )
