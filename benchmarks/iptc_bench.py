"""Benchmark: `list` over 1,000 containers, python-iptables (iptc) vs legacy save/restore.

    python benchmarks/iptc_bench.py [--containers 1000] [--runs 7]

Runs as root in a throwaway network namespace, with legacy iptables. The containers
(one TCP and one UDP mapping each, as in FACTS) are made by one iptables-legacy-restore
of a transaction that model.wanted_chains + planner.plan_setup plan and
Transaction.render writes -- the same rules `portmapctl add` and the plugin make.

Prints the median of --runs runs of:
- a bare `iptables-legacy-save -t nat` (the floor);
- one family's read through each backend, in this process (what `list` pays to read);
- `portmapctl list -o json` as a fresh process (start-up and imports count, as for a
  user), with --iptables legacy and --iptables iptc;
- `portmapctl add` of one more container into that table, with each backend;
- reading the same table rule by rule through python-iptables' own Rule objects
  (rule.matches[].get_all_parameters()), the way FACTS measured it;
- `import iptc` on its own.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import realplugin as rp  # noqa: E402

from portmapctl.core.mapping import MappingConfig, PortMapping  # noqa: E402
from portmapctl.host import netns  # noqa: E402
from portmapctl.iptables.access.iptc import IptcBackend  # noqa: E402
from portmapctl.iptables.access.restore import RestoreBackend  # noqa: E402
from portmapctl.iptables.chains import wanted_chains  # noqa: E402
from portmapctl.iptables.planner import plan_setup  # noqa: E402
from portmapctl.iptables.ruleset import BUILTIN_NAT_CHAINS, NatTable, SavedChain  # noqa: E402
from portmapctl.iptables.transaction import Transaction  # noqa: E402


def container(i: int) -> MappingConfig:
    address = ipaddress.ip_interface(f"10.88.{i // 250}.{i % 250 + 2}/16")
    ports = (PortMapping(20000 + i, 80, "tcp"), PortMapping(40000 + i, 53, "udp"))
    return MappingConfig("benchnet", f"bench{i:06d}", (address,), ports)


def setup_transaction(count: int) -> Transaction:
    """All containers' chains in one transaction, planned against an empty table.

    The first container brings the shared chains; the others only their own chain
    and entry rules (planned alone, each would otherwise create the shared ones again).
    """
    empty = NatTable(4, {name: SavedChain(name, "ACCEPT") for name in BUILTIN_NAT_CHAINS})
    txn = Transaction(4)
    for i in range(count):
        wanted = wanted_chains(container(i), 4)
        if i:
            wanted = [chain for chain in wanted if not chain.shared]
        txn.ops.extend(plan_setup(wanted, empty).ops)
    return txn


def median_time(action: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(argv: List[str], env: Dict[str, str]) -> None:
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)


def add_argv(ns: str, backend: str, i: int) -> List[str]:
    config = container(i)
    return [sys.executable, "-m", "portmapctl", "add", "--netns", ns, "--iptables", backend,
            "--network", config.network, "--container", config.container_id,
            "--ip", str(config.addresses[0]), "-p", f"{20000 + i}:80", "-p", f"{40000 + i}:53/udp",
            "--no-flush-udp", "-q"]  # fmt: skip


def rule_by_rule() -> int:
    """python-iptables' own way: Rule objects and get_all_parameters() for every match."""
    import iptc

    table = iptc.Table("nat", autocommit=False)
    table.refresh()
    count = 0
    for chain in table.chains:
        for rule in chain.rules:
            _ = (rule.src, rule.dst, rule.protocol, rule.target.name)
            _ = [match.get_all_parameters() for match in rule.matches]
            _ = rule.target.get_all_parameters()
            count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (network namespaces, iptables)")

    legacy_bin = rp.bin_dir("legacy")  # `iptables` = legacy: what `auto` and iptc need
    env = {**os.environ, "PATH": f"{legacy_bin}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    os.environ["PATH"] = env["PATH"]
    name = rp.create_netns("pmt-bench")
    cache = tempfile.mkdtemp(prefix="pmt-bench-cache-")  # empty: no "stale" marks
    try:
        text = setup_transaction(args.containers).render()
        start = time.perf_counter()
        subprocess.run(
            ["ip", "netns", "exec", name, "iptables-legacy-restore", "--noflush"],
            input=text, text=True, check=True,
        )  # fmt: skip
        print(f"{args.containers} containers: {text.count(chr(10))} restore lines,"
              f" set up in {time.perf_counter() - start:.2f} s")  # fmt: skip

        results: Dict[str, float] = {}
        save = ["ip", "netns", "exec", name, "iptables-legacy-save", "-t", "nat"]
        results["iptables-legacy-save -t nat (bare)"] = median_time(
            lambda: run(save, env), args.runs
        )
        with netns.entered(name):
            legacy, iptc_backend = RestoreBackend("legacy"), IptcBackend()
            assert legacy.read(4) == iptc_backend.read(4), "the backends disagree"
            rules = sum(len(chain.rules) for chain in legacy.read(4).chains.values())
            results["read, legacy save/restore (in process)"] = median_time(
                lambda: legacy.read(4), args.runs
            )
            results["read, iptc (in process)"] = median_time(
                lambda: iptc_backend.read(4), args.runs
            )
        for backend in ("legacy", "iptc"):
            argv = [sys.executable, "-m", "portmapctl", "list", "--netns", name,
                    "--iptables", backend, "--cni-cache-dir", cache, "-o", "json"]  # fmt: skip
            results[f"portmapctl list -o json --iptables {backend}"] = median_time(
                lambda argv=argv: run(argv, env), args.runs
            )
        for offset, backend in enumerate(("legacy", "iptc")):
            # New containers each run (the other backend's too): every add changes the table.
            first = args.containers + offset * args.runs
            added = iter(range(first, first + args.runs))
            results[f"portmapctl add, one more, --iptables {backend}"] = median_time(
                lambda backend=backend, added=added: run(add_argv(name, backend, next(added)), env),
                args.runs,
            )
        code = (
            f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r});"
            "import iptc_bench; iptc_bench.rule_by_rule()"
        )
        inner = [sys.executable, "-c", code]
        results["python-iptables Rule objects, rule by rule"] = median_time(
            lambda: run(["ip", "netns", "exec", name, *inner], env), max(3, args.runs // 2)
        ) - median_time(lambda: run([sys.executable, "-c", "import iptc"], env), 3)
        bare = median_time(lambda: run([sys.executable, "-c", "pass"], env), args.runs)
        results["import iptc (beyond a bare interpreter)"] = (
            median_time(lambda: run([sys.executable, "-c", "import iptc"], env), args.runs) - bare
        )
    finally:
        rp.delete_netns(name)
        os.rmdir(cache)

    floor = results["iptables-legacy-save -t nat (bare)"]
    print(f"{rules} rules in the IPv4 nat table; median of {args.runs} runs:")
    for what, seconds in results.items():
        print(f"  {what:50} {seconds:7.3f} s  ({seconds / floor:5.1f}x bare save)")
    ratio = (
        results["portmapctl list -o json --iptables iptc"]
        / results["portmapctl list -o json --iptables legacy"]
    )
    print(f"  list through iptc / list through legacy save/restore: {ratio:.2f}x")
    ratio = (
        results["portmapctl add, one more, --iptables iptc"]
        / results["portmapctl add, one more, --iptables legacy"]
    )
    print(f"  add through iptc / add through legacy save/restore: {ratio:.2f}x")


if __name__ == "__main__":
    main()
