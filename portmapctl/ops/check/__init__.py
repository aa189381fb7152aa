"""`check`: every way a node's portmap state is wrong; `--repair` of what is missing.

- `diagnose.py`: pure diagnosis (tables + cache -> problems);
- `hints.py`: why a problem matters and the command that fixes it;
- `run.py`: check a node or one mapping (reads, then diagnoses);
- `repair.py`: create what is missing, then check again.
"""

from portmapctl.ops.check.diagnose import (
    CheckResult,
    Problem,
    cached_configs,
    diagnose,
    diagnose_mapping,
    split_brain,
    wanted_on_node,
)
from portmapctl.ops.check.hints import Fixes, fixes_for
from portmapctl.ops.check.repair import repair
from portmapctl.ops.check.run import check_mapping, check_node

__all__ = [
    "CheckResult",
    "Fixes",
    "Problem",
    "cached_configs",
    "check_mapping",
    "check_node",
    "diagnose",
    "diagnose_mapping",
    "fixes_for",
    "repair",
    "split_brain",
    "wanted_on_node",
]
