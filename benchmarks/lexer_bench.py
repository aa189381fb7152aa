"""parse_save before and after a change to the rule lexer, side by side in one run.

    sudo python benchmarks/lexer_bench.py --before /work/main/portmapctl/iptables/ruleset.py

Two real iptables-save dumps, made once in a throwaway network namespace (kept in
benchmarks/out/, git-ignored): 1,000 containers as benchmarks/bench.py fills them,
and kube-proxy's 50,000 rules as benchmarks/shapes_bench.py writes them (comments in
quotes). Each is parsed with skip_foreign (the backends' reads: `list`) and without
(a --snapshot), by the `--before` copy of ruleset.py and by this checkout's, in
alternation; the best of several timeit repeats is reported with the load average.
Times are this process's CPU time (time.process_time): on a shared machine a wall
clock mostly measures how often the process was waiting for a core.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import subprocess
import sys
import time
import timeit
from pathlib import Path
from typing import Callable, Dict, List

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
OUT = BENCH / "out"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(BENCH))

from portmapctl.iptables import ruleset  # noqa: E402


def _dump(name: str, restore_text: Callable[[], str]) -> str:
    """iptables-save's nat table after restoring this text into a fresh namespace."""
    path = OUT / f"lexer-{name}.save"
    if not path.exists():
        OUT.mkdir(exist_ok=True)
        text = restore_text()
        done = subprocess.run(
            ["unshare", "--net", "sh", "-c",
             "iptables-nft-restore --noflush && iptables-nft-save -t nat"],
            input=text, capture_output=True, text=True, check=True,
        )  # fmt: skip
        path.write_text(done.stdout)
    return path.read_text()


def containers_text(n: int) -> str:
    import bench

    txns = bench.fill_transactions([bench.container(i) for i in range(n)], first=True)
    return "".join(t.render() for t in txns if t.family == 4)


def kube_text(rules: int) -> str:
    import shapes_bench

    return shapes_bench.kube_rules(rules)


def _load(path: str):
    spec = importlib.util.spec_from_file_location("ruleset_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _plain(table) -> Dict[str, tuple]:
    """A table as plain values (the two modules' NatTable classes never compare equal)."""
    return {name: (chain.policy, chain.rules) for name, chain in table.chains.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", required=True, help="the ruleset.py to compare with")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    before = _load(args.before)
    dumps = {
        "1,000 containers": _dump("containers-1000", lambda: containers_text(1000)),
        "kube-proxy 50,000": _dump("kube-50000", lambda: kube_text(50000)),
    }
    print(f"load average before: {os.getloadavg()}")
    for name, text in dumps.items():
        rules = sum(1 for line in text.splitlines() if line.startswith("-A "))
        for skip in (True, False):
            runs: Dict[str, List[float]] = {"before": [], "after": []}
            parsers = {"before": before.parse_save, "after": ruleset.parse_save}
            assert _plain(before.parse_save(text, 4, skip_foreign=skip)) == _plain(
                ruleset.parse_save(text, 4, skip_foreign=skip)
            ), "the two parsers disagree"
            for _ in range(args.repeat):  # alternated: load changes hit both alike
                for which, parse in parsers.items():
                    runs[which].append(
                        min(
                            timeit.repeat(
                                functools.partial(parse, text, 4, skip_foreign=skip),
                                timer=time.process_time,
                                number=1,
                                repeat=3,
                            )
                        )
                    )
            b, a = min(runs["before"]), min(runs["after"])
            print(
                f"{name} ({rules} rules), skip_foreign={skip}: before {b * 1000:.1f} ms,"
                f" after {a * 1000:.1f} ms ({(a / b - 1) * 100:+.1f}%)"
                f"  [medians {sorted(runs['before'])[len(runs['before']) // 2] * 1000:.1f}"
                f" / {sorted(runs['after'])[len(runs['after']) // 2] * 1000:.1f} ms]"
            )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
