"""What tests/kernel/test_deploy.py and tests/unit/test_deploy_pure.py share."""

from __future__ import annotations

import configparser
import os
import shlex
from pathlib import Path
from typing import List

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


MANIFEST = DEPLOY / "kubernetes" / "portmapctl-gc.yaml"


SERVICE = DEPLOY / "systemd" / "portmapctl-gc.service"


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
