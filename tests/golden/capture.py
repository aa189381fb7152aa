"""Write the golden outputs: `python tests/golden/capture.py` (see cases.py)."""

from __future__ import annotations

import os
import subprocess
import sys

from cases import GOLDEN, ROOT, cases


def run(args: list) -> str:
    env = dict(os.environ, NO_COLOR="1", COLUMNS="200", PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "portmapctl", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return f"exit {done.returncode}\n--- stdout\n{done.stdout}--- stderr\n{done.stderr}"


if __name__ == "__main__":
    GOLDEN.mkdir(exist_ok=True)
    for name, args in cases().items():
        (GOLDEN / f"{name}.txt").write_text(" ".join(args) + "\n" + run(args))
