"""`check`: every way a node's portmap state is wrong; `--repair` of what is missing.

- `diagnose.py`: pure diagnosis (tables + cache -> problems), from
  `problem.py` (Problem, CheckResult), `expected.py` (the chains the cache wants),
  `compare.py` (wanted chains against the live table) and `node_problems.py` (what
  is wrong whatever a config wants: list's marks, zombies, duplicates, split brain);
- `hints.py`: why a problem matters and the command that fixes it;
- `run.py`: check a node or one mapping (reads, then diagnoses);
- `repair.py`: create what is missing, then check again.
"""

from portmapctl.ops.check.diagnose import diagnose, diagnose_mapping
from portmapctl.ops.check.expected import cached_configs, wanted_on_node
from portmapctl.ops.check.hints import Fixes, fixes_for
from portmapctl.ops.check.node_problems import split_brain
from portmapctl.ops.check.problem import CheckResult, Problem
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
