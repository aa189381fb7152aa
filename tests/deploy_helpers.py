"""What tests/kernel/test_deploy.py, tests/kernel/test_metrics_gc.py and
tests/unit/test_deploy_pure.py share."""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


MANIFEST = DEPLOY / "kubernetes" / "portmapctl-gc.yaml"


SERVICE = DEPLOY / "systemd" / "portmapctl-gc.service"


RULES = DEPLOY / "prometheus" / "portmapctl.rules.yaml"


def gc_argv(line: str) -> List[str]:
    """The arguments after `portmapctl` in a shell line or ExecStart=."""
    words = shlex.split(line)
    for i, word in enumerate(words):
        if os.path.basename(word) == "portmapctl":
            return words[i + 1 :]
    raise AssertionError(f"no portmapctl command in {line!r}")


def read_unit(path: Path) -> configparser.ConfigParser:
    # systemd units are ini-like; keys are case-sensitive and may repeat (last one wins
    # for the keys used here).
    unit = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(path.read_text())
    return unit


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        # CI installs Debian's prometheus package (it ships promtool): there, a missing
        # promtool is a failure, not a skip.
        if os.environ.get("PORTMAPCTL_REQUIRE_NETNS") == "1":
            pytest.fail("promtool is not installed (Debian package prometheus)", pytrace=False)
        pytest.skip("promtool is not installed (Debian package prometheus)")
    return found


def promtool_test_rules(tmp_path: Path, series: List[dict], cases: List[dict]) -> None:
    """Run promtool's rule tests (`cases`) on `series`, scraped every minute."""
    # Annotations are templates promtool check rules has checked; compare the labels.
    stripped = {"groups": yaml.safe_load(RULES.read_text())["groups"]}
    for group in stripped["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(stripped))
    test = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": cases}],
    }
    run_promtool_test(tmp_path, test)


def run_promtool_test(tmp_path: Path, test: dict) -> None:
    """`promtool test rules` of the test file `test` (its rule files in `tmp_path`)."""
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test))
    done = subprocess.run(
        [promtool(), "test", "rules", "test.yaml"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def series_name(name: str, labels: Dict[str, str]) -> str:
    """A sample as promtool's input_series names it: `name{label="value",...}`."""
    shown = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{shown}}}"
