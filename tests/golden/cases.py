"""The command lines whose output is kept as golden files (issue 13: behaviour unchanged).

Each case runs offline (snapshots, `--dry-run`), so it needs no root. `capture.py`
writes the files; `tests/unit/test_golden.py` compares. Regenerate on purpose only,
when an output change is intended, and review the diff.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "out"
FIXTURES = ROOT / "tests" / "fixtures"
EXAMPLE = ["--snapshot", "examples/node.v4.save", "--snapshot6", "examples/node.v6.save"]
CACHE = ["--cni-cache-dir", "examples/cni-cache"]
NO_CACHE = ["--cni-cache-dir", "tests/golden/no-such-dir"]


def cases() -> Dict[str, List[str]]:
    out: Dict[str, List[str]] = {}
    for fmt in ("table", "json"):
        out[f"list-example-{fmt}"] = ["list", *EXAMPLE, *CACHE, "-o", fmt]
        out[f"list-example-nocache-{fmt}"] = ["list", *EXAMPLE, *NO_CACHE, "-o", fmt]
        out[f"check-example-{fmt}"] = ["check", *EXAMPLE, *CACHE, "-o", fmt]
        # (an orphan of no known container: its chain named as list names it)
        out[f"check-example-nocache-{fmt}"] = ["check", *EXAMPLE, *NO_CACHE, "-o", fmt]
    for v4 in sorted(FIXTURES.glob("*.v4.save")):
        name = v4.name[: -len(".v4.save")]
        v6 = v4.with_name(f"{name}.v6.save")
        rel4, rel6 = (str(p.relative_to(ROOT)) for p in (v4, v6))
        snapshots = ["--snapshot", rel4, "--snapshot6", rel6, *NO_CACHE]
        for fmt in ("table", "json"):
            out[f"list-{name}-{fmt}"] = ["list", *snapshots, "-o", fmt]
        out[f"check-{name}-json"] = ["check", *snapshots, "-o", "json"]
    return out
