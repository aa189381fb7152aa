"""The nftables backend, side by side with the real upstream plugin (issue 14, "Measured").

    sudo python benchmarks/nft_bench.py              # N = 100 and 1,000
    sudo python benchmarks/nft_bench.py --sizes 100  # one size
    sudo python benchmarks/nft_bench.py --list-only --runs 7 --baseline ../main

For each N a throwaway namespace ("the node") gets N nft-backed containers of network
`bench` (one IPv4 address, one tcp and one udp host port each, SNAT on), written by
one `nft -f` transaction that nftables.planner.setup plans; at N = 10 a second
namespace is filled by upstream v1.9.1's ADD, one container after another, and the two
rulesets must be equal as values (rule for rule, handles aside). The CNI cache holds
every container (for `list`), or one unrelated entry (for `gc`, so all N are stale).

Measured, in the same run, medians of 5 (min-max):
- `portmapctl list --backend nftables` and `portmapctl list` (auto: iptables too) vs a
  bare `nft -j list table ip cni_hostport` (target: within 3x), interleaved round by
  round, wall clock and CPU time (user + system of the process and its children);
  `--baseline DIR` adds another checkout's two lists to the same rounds (before/after);
  `--instructions` also counts each command's instructions with valgrind (callgrind):
  a figure the machine's load does not move;
- `portmapctl gc` of N stale containers vs upstream v1.9.1's DEL of each (target:
  >= 100x). Up to 100 containers every DEL runs; above, 3 samples of 20 DELs at table
  sizes N, N/2 and N/10 (the table is shrunk by bulk removal between samples) and the
  total is integrated over the sizes (trapezoid);
- upstream v1.9.1's ADD and DEL per container, `"backend": "iptables"` against
  `"nftables"`, N = 100 (each call as a runtime makes it: `ip netns exec` + the plugin).
Every portmapctl figure is the wall clock of a whole `python -m portmapctl` process
with this checkout first on PYTHONPATH, run through `ip netns exec` like the baselines.
Writes benchmarks/out/nft.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import realplugin as rp  # noqa: E402
import upstream  # noqa: E402

from portmapctl.core.mapping import MappingConfig, PortMapping  # noqa: E402
from portmapctl.host.netns import entered  # noqa: E402
from portmapctl.nftables import planner, ruleset  # noqa: E402
from portmapctl.nftables.access.nft import RealNft  # noqa: E402
from portmapctl.nftables.wanted import wanted  # noqa: E402

NETWORK = "bench"
RUNS = 5
OUT = ROOT / "benchmarks" / "out"


def container(i: int) -> dict:
    ip = ipaddress.ip_address("10.88.0.0") + 2 + i
    return {
        "id": f"bench{i:06d}",
        "ip": f"{ip}/16",
        "ports": [
            {"hostPort": 10000 + i, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 30000 + i, "containerPort": 53, "protocol": "udp"},
        ],
    }


def config(c: dict) -> MappingConfig:
    return MappingConfig(
        NETWORK,
        c["id"],
        (ipaddress.ip_interface(c["ip"]),),
        tuple(PortMapping(p["hostPort"], p["containerPort"], p["protocol"]) for p in c["ports"]),
        backend="nftables",
    )


def conf(c: dict, backend: str = "nftables") -> dict:
    return upstream.nft_conf(NETWORK, [c["ip"]], c["ports"], backend=backend)


def build(ns: str, containers: Sequence[dict]) -> float:
    started = time.perf_counter()
    with entered(ns):
        nft = RealNft()
        want = [w for c in containers if (w := wanted(config(c), 4)) is not None]
        nft.apply(planner.setup(nft.read(), want))
    return time.perf_counter() - started


def bodies(ns: str) -> dict:
    with entered(ns):
        live = RealNft().read()
    return {
        (f, name): [r.body for r in t.rules_of(name)]
        for f, t in live.tables.items()
        for name in t.chains
    }


def timed(argv: Sequence[str], env: Dict[str, str] | None = None) -> float:
    return timed_cpu(argv, env)[0]


def timed_cpu(argv: Sequence[str], env: Dict[str, str] | None = None) -> Tuple[float, float]:
    """(wall clock, CPU seconds of the process and its children: user + system). On a
    shared machine the CPU time moves less with the load than the wall clock."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(list(argv), capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {done.stderr}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return elapsed, cpu


def instructions(argv: Sequence[str], env: Dict[str, str] | None = None) -> int:
    """Instructions the command and all its children run, counted by valgrind's
    callgrind (user space): unlike a clock, the same on a loaded machine as on an idle
    one. The command runs 20-50x slower under it."""
    out = Path(tempfile.mkdtemp(prefix="pmt-nftbench-cg-"))
    try:
        # `ip netns exec NS CMD`: callgrind goes inside, around CMD and its children.
        split = 4 if list(argv[:2]) == ["ip", "netns"] else 0
        wrapped = [*argv[:split], "valgrind", "--tool=callgrind", "--trace-children=yes",
                   f"--callgrind-out-file={out}/cg.%p", *argv[split:]]  # fmt: skip
        subprocess.run(wrapped, capture_output=True, env=env, check=True)
        total = 0
        for dump in out.glob("cg.*"):
            for line in dump.read_text(errors="replace").splitlines():
                if line.startswith("summary:"):
                    total += int(line.split()[1])
        return total
    finally:
        shutil.rmtree(out, ignore_errors=True)


def stats(samples: List[float]) -> dict:
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "runs": len(samples),
    }


def repeat(fn: Callable[[], float], runs: int = RUNS) -> dict:
    return stats([fn() for _ in range(runs)])


def pmctl_env(root: Path = ROOT) -> Dict[str, str]:
    # As a user runs it: bytecode cached (bench.py drops the variable too).
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PORTMAPCTL_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    env["PYTHONPATH"] = str(root)
    env["NO_COLOR"] = "1"
    return env


def pmctl(ns: str, *args: str) -> List[str]:
    # -P: `-m` would put the working directory first on sys.path, ahead of PYTHONPATH,
    # and a --baseline run started in this checkout would import this checkout.
    return ["ip", "netns", "exec", ns, sys.executable, "-P", "-m", "portmapctl", *args]


def check_equal_to_plugin() -> None:
    containers = [container(i) for i in range(10)]
    ours, theirs = rp.create_netns("pmt-nftbench"), rp.create_netns("pmt-nftbench")
    try:
        build(ours, containers)
        for c in containers:
            upstream.run("v1.9.1", "ADD", theirs, c["id"], conf(c), check=True)
        if bodies(ours) != bodies(theirs):
            raise SystemExit("our ruleset differs from the plugin's at N = 10")
    finally:
        rp.delete_netns(ours)
        rp.delete_netns(theirs)
    print("N = 10: one setup transaction == 10 upstream v1.9.1 ADDs (rule for rule)")


def bench_list(
    count: int, runs: int = RUNS, baseline: Path | None = None, count_instructions: bool = False
) -> dict:
    """bare nft, `list --backend nftables`, `list` (auto), and the same two of a
    `baseline` checkout, interleaved round by round so that the machine's load falls on
    all of them alike."""
    containers = [container(i) for i in range(count)]
    ns = rp.create_netns("pmt-nftbench")
    cache = Path(tempfile.mkdtemp(prefix="pmt-nftbench-cache-"))
    try:
        made = build(ns, containers)
        for c in containers:
            rp.write_cni_cache(cache, NETWORK, c["id"], "eth0", conf(c), c["ports"], [c["ip"]])
        args = ["list", "--cni-cache-dir", str(cache)]
        commands = {
            "bare_nft": (["ip", "netns", "exec", ns, "nft", "-j", "list", "table", "ip",
                          "cni_hostport"], None),
            "list_nftables": (pmctl(ns, *args, "--backend", "nftables"), pmctl_env()),
            "list_auto": (pmctl(ns, *args), pmctl_env()),
        }  # fmt: skip
        if baseline is not None:
            commands["baseline_list_nftables"] = (
                pmctl(ns, *args, "--backend", "nftables"), pmctl_env(baseline))  # fmt: skip
            commands["baseline_list_auto"] = (pmctl(ns, *args), pmctl_env(baseline))
        for argv, env in commands.values():
            timed(argv, env)  # warm: page cache, bytecode
        walls: Dict[str, List[float]] = {name: [] for name in commands}
        cpus: Dict[str, List[float]] = {name: [] for name in commands}
        for _ in range(runs):
            for name, (argv, env) in commands.items():
                wall, cpu = timed_cpu(argv, env)
                walls[name].append(wall)
                cpus[name].append(cpu)
        counted = {}
        if count_instructions:
            counted = {name: instructions(argv, env) for name, (argv, env) in commands.items()}
        rows = subprocess.run(pmctl(ns, *args, "-o", "json"), capture_output=True, text=True,
                              env=pmctl_env(), check=True).stdout  # fmt: skip
        mappings = len(json.loads(rows)["mappings"])
        if mappings != 2 * count:
            raise SystemExit(f"list showed {mappings} mappings, wanted {2 * count}")
    finally:
        rp.delete_netns(ns)
        shutil.rmtree(cache, ignore_errors=True)
    found: dict = {"built_seconds": made}
    for name in commands:
        found[name] = {**stats(walls[name]), "cpu": stats(cpus[name])}
        if name in counted:
            found[name]["instructions"] = counted[name]
    return found


def _bulk_remove(ns: str, ids: Sequence[str]) -> None:
    with entered(ns):
        nft = RealNft()
        nft.apply(planner.teardown(nft.read(), ids))


def _time_dels(ns: str, containers: Sequence[dict]) -> List[float]:
    samples = []
    for c in containers:
        started = time.perf_counter()
        upstream.run("v1.9.1", "DEL", ns, c["id"], conf(c), check=True)
        samples.append(time.perf_counter() - started)
    return samples


def bench_gc(count: int) -> dict:
    containers = [container(i) for i in range(count)]
    cache = Path(tempfile.mkdtemp(prefix="pmt-nftbench-cache-"))
    other = {
        "id": "someoneelse",
        "ip": "10.99.0.2/16",
        "ports": [{"hostPort": 1, "containerPort": 1}],
    }
    rp.write_cni_cache(cache, NETWORK, other["id"], "eth0", conf(other), other["ports"],
                       [other["ip"]])  # fmt: skip
    ns = rp.create_netns("pmt-nftbench")
    try:
        build(ns, containers)
        argv = pmctl(ns, "gc", "--yes", "--min-age", "0", "-q", "--backend", "nftables",
                     "--cni-cache-dir", str(cache))  # fmt: skip
        gc_seconds = timed(argv, pmctl_env())
        with entered(ns):
            left = RealNft().read()
        if any(t.rules_of(c) for t in left.tables.values() for c in ruleset.CONTAINER_CHAINS):
            raise SystemExit("gc left rules behind")
    finally:
        rp.delete_netns(ns)
    ns = rp.create_netns("pmt-nftbench")
    try:
        build(ns, containers)
        if count <= 100:
            samples = _time_dels(ns, containers)
            total = sum(samples)
            how = f"all {count} DELs"
        else:
            points = []
            for size in (count, count // 2, count // 10):
                # Shrink the table to `size` containers, then time 20 DELs there.
                with entered(ns):
                    live = RealNft().read()
                have = sorted({r.comment for t in live.tables.values()
                               for r in t.rules_of("hostports") if r.comment})  # fmt: skip
                if len(have) > size:
                    _bulk_remove(ns, have[: len(have) - size])
                    have = have[len(have) - size :]
                chosen = [c for c in containers if c["id"] in set(have[:20])]
                mean = statistics.mean(_time_dels(ns, chosen))
                points.append((size, mean))
            # Trapezoid over table sizes count..0 (cost at size 0 ~ that at N/10).
            points.append((0, points[-1][1]))
            total = sum(
                (a_size - b_size) * (a_mean + b_mean) / 2
                for (a_size, a_mean), (b_size, b_mean) in zip(points, points[1:])
            )
            how = "3 samples of 20 DELs at N, N/2, N/10, integrated"
    finally:
        rp.delete_netns(ns)
        shutil.rmtree(cache, ignore_errors=True)
    return {"gc_seconds": gc_seconds, "plugin_del_total": total, "plugin_del_how": how,
            "speedup": total / gc_seconds}  # fmt: skip


def bench_plugin_add_del(count: int = 100) -> dict:
    containers = [container(i) for i in range(count)]
    found = {}
    for backend in ("iptables", "nftables"):
        ns = rp.create_netns("pmt-nftbench")
        try:
            adds, dels = [], []
            for c in containers:
                started = time.perf_counter()
                upstream.run("v1.9.1", "ADD", ns, c["id"], conf(c, backend), check=True)
                adds.append(time.perf_counter() - started)
            for c in containers:
                started = time.perf_counter()
                upstream.run("v1.9.1", "DEL", ns, c["id"], conf(c, backend), check=True)
                dels.append(time.perf_counter() - started)
        finally:
            rp.delete_netns(ns)
        found[backend] = {"add": stats(adds), "del": stats(dels),
                          "add_total": sum(adds), "del_total": sum(dels)}  # fmt: skip
    return found


def ms(value: float) -> str:
    return f"{value * 1000:.0f} ms"


def report(results: dict) -> str:
    counted = any("instructions" in r["bare_nft"] for r in results["list"].values())
    lines = ["| N | command | wall median (min-max) | ratio | CPU median | CPU ratio |"
             + (" instructions | ratio |" if counted else ""),
             "| ---: | --- | ---: | ---: | ---: | ---: |"
             + (" ---: | ---: |" if counted else "")]  # fmt: skip
    names = {
        "bare_nft": "bare `nft -j list table ip cni_hostport`",
        "list_nftables": "`list --backend nftables`",
        "list_auto": "`list` (auto: iptables-save too)",
        "baseline_list_nftables": "baseline `list --backend nftables`",
        "baseline_list_auto": "baseline `list` (auto)",
    }
    for n, r in sorted(results["list"].items(), key=lambda kv: int(kv[0])):
        bare = r["bare_nft"]
        for key, label in names.items():
            if key not in r:
                continue
            m = r[key]
            line = (
                f"| {int(n):,} | {label} | {ms(m['median'])} ({ms(m['min'])}-{ms(m['max'])}) "
                f"| {m['median'] / bare['median']:.1f}x | {ms(m['cpu']['median'])} "
                f"| {m['cpu']['median'] / bare['cpu']['median']:.1f}x |"
            )
            if counted:
                line += (f" {m['instructions'] / 1e6:,.0f} M "
                         f"| {m['instructions'] / bare['instructions']:.2f}x |")  # fmt: skip
            lines.append(line)
    if not results["gc"]:
        return "\n".join(lines) + "\n"
    lines += ["", "| N | `gc` of N stale | upstream v1.9.1 DEL of each | speed-up | how |",
              "| ---: | ---: | ---: | ---: | --- |"]  # fmt: skip
    for n, r in sorted(results["gc"].items(), key=lambda kv: int(kv[0])):
        lines.append(
            f"| {int(n):,} | {r['gc_seconds']:.2f} s | {r['plugin_del_total']:.1f} s "
            f"| {r['speedup']:.0f}x | {r['plugin_del_how']} |"
        )
    if results.get("plugin"):
        lines += ["", "| upstream v1.9.1, N = 100 | ADD median | ADD total | DEL median |"
                  " DEL total |", "| --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
        for backend, r in results["plugin"].items():
            lines.append(
                f'| `"backend": "{backend}"` | {ms(r["add"]["median"])} '
                f"| {r['add_total']:.2f} s | {ms(r['del']['median'])} | {r['del_total']:.2f} s |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--no-plugin-add-del", action="store_true")
    parser.add_argument("--list-only", action="store_true", help="only the list figures")
    parser.add_argument("--runs", type=int, default=RUNS, help="rounds of the list figures")
    parser.add_argument("--baseline", type=Path, metavar="DIR",
                        help="another checkout whose list runs in the same rounds")  # fmt: skip
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count each list command's instructions (valgrind)",
    )
    args = parser.parse_args(argv)
    for probe in (rp.netns_available, upstream.available):
        ok, reason = probe()
        if not ok:
            print(f"nft_bench.py: {reason}", file=sys.stderr)
            return 3
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "portmapctl")],
                   check=True)  # fmt: skip
    if args.baseline is not None:
        subprocess.run([sys.executable, "-m", "compileall", "-q",
                        str(args.baseline / "portmapctl")], check=True)  # fmt: skip
    if not args.list_only:
        check_equal_to_plugin()
    results: dict = {"list": {}, "gc": {}, "load": os.getloadavg()}
    for n in args.sizes:
        results["list"][n] = bench_list(n, args.runs, args.baseline, args.instructions)
        print(f"N = {n}: list {results['list'][n]['list_nftables']['median']:.3f} s, "
              f"bare nft {results['list'][n]['bare_nft']['median']:.3f} s")  # fmt: skip
        if args.list_only:
            continue
        results["gc"][n] = bench_gc(n)
        print(f"N = {n}: gc {results['gc'][n]['gc_seconds']:.2f} s, "
              f"plugin DELs {results['gc'][n]['plugin_del_total']:.1f} s")  # fmt: skip
    if not args.no_plugin_add_del and not args.list_only:
        results["plugin"] = bench_plugin_add_del()
    results["load_after"] = os.getloadavg()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "nft.json").write_text(json.dumps(results, indent=2) + "\n")
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
