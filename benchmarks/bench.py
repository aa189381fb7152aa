"""SPEC §6, side by side with the real plugin: every figure, in one run, on one machine.

Run it on the interpreter users run portmapctl on: the README installs it in a venv of
Debian's python3 (an optimised build), and so does this, once:

    sudo python3 -m venv /opt/pmt-bench
    sudo /opt/pmt-bench/bin/pip install ".[bench]"
    sudo /opt/pmt-bench/bin/python benchmarks/bench.py   # re-install after changing the tree

(A development interpreter built without optimisation, such as a default pyenv build, makes
every Python-bound figure 20-30% slower and its bare start-up 4x: 35-40 ms for `python -c
pass` against 8-10 ms. The interpreter measured is written into the results and the page.)

    sudo python benchmarks/bench.py            # the full run (N = 10, 100, 1,000, 5,000)
    sudo python benchmarks/bench.py --quick    # N = 10, 100, 1,000, fewer runs and samples
    sudo python benchmarks/bench.py --profile 5000   # cProfile of list/add/check/gc at N
    sudo python -P benchmarks/bench.py --list-only --baseline ../main --instructions
                                               # list vs iptables-save only, before/after

Writes benchmarks/out/results.json (git-ignored) and regenerates docs/performance.md and
docs/performance.png from it (benchmarks/report.py, which can also be run on its own).

For each N it builds a throwaway network namespace ("the node") holding N containers of
network `bench`, each with one TCP and one UDP host port; every tenth has a host IP on
its TCP port and every tenth is dual-stack (IPv4 + IPv6). The tables are filled by
`iptables-restore` of the rules that model.wanted_chains + planner.plan_setup plan and
Transaction.render writes (one restore per 500 containers: nf_tables takes 6 s for one
restore of 5,000 containers, 1.5 s in chunks). At the smallest N a second namespace is
filled through the real plugin's ADD, one container after another, and the two
`iptables-save` outputs must be identical. The CNI cache (libcni's results/ files) is
written for every container, so `list` and `check` see a healthy node.

Measured, each against its baseline in the same namespace, in the same run:
- `list` (and `list -o json`) vs a bare `iptables-save -t nat`;
- `add` of one more container vs the plugin's ADD of one more container (alternating);
- `check` of the healthy node vs the plugin's CHECK of each container (sampled above
  100 containers and extrapolated: the table does not change between CHECKs);
- `gc` of N stale containers vs the plugin's DEL of each: up to 100 containers every DEL
  is run; above, a sample, each DEL run on a table shrunk (by bulk removal) to the size
  it would have at that point of a run of N DELs, and the sum extrapolated;
- `flush-udp` of 10,000 UDP conntrack entries vs the `conntrack` tool (at N = 1,000);
- start-up: `portmapctl --version` and `--help` vs `python -c pass`.
Every portmapctl figure is the wall clock of the whole process as a user runs it: the
installed console script next to this interpreter (not a pyenv shim), run inside the
namespace (this process enters it; children inherit it), stdout read through a pipe.
Medians of several runs, with min and max.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(BENCH))

import conntrack_bench  # noqa: E402
import realplugin as rp  # noqa: E402

from portmapctl import __version__  # noqa: E402
from portmapctl.cni import config as cni_config  # noqa: E402
from portmapctl.core.mapping import MappingConfig  # noqa: E402
from portmapctl.host.netns import entered  # noqa: E402
from portmapctl.iptables.access.restore import RestoreBackend  # noqa: E402
from portmapctl.iptables.chains import DNAT_PREFIX, chain_name, wanted_chains  # noqa: E402
from portmapctl.iptables.planner import plan_setup, plan_teardown  # noqa: E402
from portmapctl.iptables.ruleset import BUILTIN_NAT_CHAINS, NatTable, SavedChain  # noqa: E402
from portmapctl.iptables.transaction import Transaction  # noqa: E402

NETWORK = "bench"
OUT = BENCH / "out"
FILL_CHUNK = 500  # containers per iptables-restore when filling
FLUSH_ENTRIES = 10000
FLUSH_PORTS = 4
FLUSH_AT = 1000  # the N whose namespace flush-udp runs in (else the largest N below)

Stats = Dict[str, Any]


class Plan:
    """How much to measure: the full run, or --quick."""

    def __init__(self, quick: bool, sizes: Optional[List[int]] = None) -> None:
        self.quick = quick
        self.sizes = sizes or ([10, 100, 1000] if quick else [10, 100, 1000, 5000])
        self.runs = 3 if quick else 5  # portmapctl and bare-tool runs per figure
        self.startup_runs = 10 if quick else 20
        # One new container each, ours and the plugin's. 9: at 5 one slow run in a few
        # moved the median of a ~60 ms add by 20 ms.
        self.add_runs = 3 if quick else 9
        self.every_up_to = 10 if quick else 100  # plugin DEL/CHECK of every container up to this N
        self.sample = 5 if quick else 20  # plugin DEL/CHECK sample above it
        self.sample_big = 5 if quick else 10  # ... at N >= 5,000
        self.gc_runs_big = 2 if quick else 3  # gc runs at N >= 5,000 (each needs a new table)
        self.plugin_fill = [10] if quick else [10, 100]  # N filled through the plugin too

    def samples(self, n: int) -> int:
        return self.sample_big if n >= 5000 else self.sample

    def gc_runs(self, n: int) -> int:
        return self.gc_runs_big if n >= 5000 else self.runs


# --- the workload -----------------------------------------------------------------------


def container(i: int, plain: bool = False) -> Dict[str, Any]:
    """Container i: one TCP and one UDP host port; every tenth (i % 10 == 3) has a host
    IP on its TCP port, every tenth (i % 10 == 5) is dual-stack. `plain`: IPv4 only, no
    host IP (the containers `add` adds)."""
    ips = [f"10.88.{i // 250}.{i % 250 + 2}/16"]
    tcp: Dict[str, Any] = {"hostPort": 10000 + i, "containerPort": 80, "protocol": "tcp"}
    if not plain and i % 10 == 5:
        ips.append(f"fd00:88::{i + 2:x}/64")
    if not plain and i % 10 == 3:
        tcp["hostIP"] = "192.0.2.1"
    udp = {"hostPort": 40000 + i, "containerPort": 53, "protocol": "udp"}
    return {"id": f"bench{i:06d}", "ips": ips, "ports": [tcp, udp]}


def plugin_conf(c: Dict[str, Any]) -> Dict[str, Any]:
    return rp.plugin_conf(NETWORK, c["ips"], c["ports"])


def mapping(c: Dict[str, Any]) -> MappingConfig:
    return cni_config.plugin_config(plugin_conf(c), c["id"], "benchmark workload")


def fill_transactions(containers: Sequence[Dict[str, Any]], first: bool) -> List[Transaction]:
    """The plugin's rules for these containers, planned against an empty table.

    The first container of each family brings the shared chains (when `first`: the
    table has none yet); the others only their own chain and entry rules.
    """
    txns = []
    for family in (4, 6):
        empty = NatTable(family, {n: SavedChain(n, "ACCEPT") for n in BUILTIN_NAT_CHAINS})
        txn = Transaction(family)
        shared_done = not first
        for c in containers:
            wanted = wanted_chains(mapping(c), family)
            if not wanted:
                continue
            if shared_done:
                wanted = [chain for chain in wanted if not chain.shared]
            shared_done = True
            txn.ops.extend(plan_setup(wanted, empty).ops)
        if txn:
            txns.append(txn)
    return txns


def fill(mode: str, containers: Sequence[Dict[str, Any]]) -> float:
    """Fill the current namespace's tables; returns the seconds it took."""
    backend = RestoreBackend(mode)
    started = time.perf_counter()
    # The first chunk goes alone: it creates the shared chains the others use.
    for start in range(0, len(containers), FILL_CHUNK):
        for txn in fill_transactions(containers[start : start + FILL_CHUNK], first=start == 0):
            backend.apply(txn)
    return time.perf_counter() - started


def remove(mode: str, containers: Sequence[Dict[str, Any]]) -> None:
    """Remove these containers' chains from the current namespace in one go per family."""
    backend = RestoreBackend(mode)
    names = [chain_name(NETWORK, c["id"]) for c in containers]
    for family in (4, 6):
        txn = plan_teardown(backend.read(family), names)
        backend.apply(txn)


def dnat_chains(mode: str) -> int:
    backend = RestoreBackend(mode)
    return sum(1 for f in (4, 6) for name in backend.read(f).chains if name.startswith(DNAT_PREFIX))


def write_cache(directory: str, containers: Sequence[Dict[str, Any]]) -> None:
    """libcni's results/ file for each container, as after a successful ADD: its
    namespace (one for all) holds its addresses, put there in one `ip -batch`
    (`check --repair` makes no chain for a container whose namespace lacks them)."""
    os.makedirs(os.path.join(directory, "results"), exist_ok=True)
    netns = rp.container_netns()
    rp.hold_many_addresses(netns, [ip for c in containers for ip in c["ips"]])
    for c in containers:
        rp.write_cni_cache(
            directory, NETWORK, c["id"], "eth0", plugin_conf(c), c["ports"], c["ips"], netns
        )


def spread(n: int, k: int) -> List[int]:
    """k indices spread evenly over range(n), walking through every residue mod 10, so
    that a sample holds its share of host-IP and dual-stack containers."""
    if k >= n:
        return list(range(n))
    step = n / k
    return sorted({min(n - 1, int(j * step) + j % 10) for j in range(k)})


# --- running things -----------------------------------------------------------------------


class BenchError(RuntimeError):
    pass


def portmapctl_argv() -> List[str]:
    """The console script installed next to this interpreter, as users run it."""
    script = Path(sys.executable).parent / "portmapctl"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "portmapctl"]  # not installed: close enough


def timed(argv: Sequence[str], stdin: Optional[bytes] = None, env=None, ok=(0,)) -> float:
    """Seconds the process took, its output read through a pipe."""
    started = time.perf_counter()
    done = subprocess.run(list(argv), input=stdin, capture_output=True, env=env, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode not in ok:
        output = (done.stdout + done.stderr).decode(errors="replace").strip()
        raise BenchError(f"{' '.join(argv)}: exit {done.returncode}: {output[-2000:]}")
    return elapsed


def stats(samples: Sequence[float]) -> Stats:
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "runs": [round(s, 6) for s in samples],
    }


def repeat(action: Callable[[], float], runs: int) -> Stats:
    return stats([action() for _ in range(runs)])


def alternate(actions: Dict[str, Callable[[], float]], runs: int) -> Dict[str, Stats]:
    """Run each action `runs` times, taking turns, so load drift hits all alike."""
    samples: Dict[str, List[float]] = {name: [] for name in actions}
    for _ in range(runs):
        for name, action in actions.items():
            samples[name].append(action())
    return {name: stats(values) for name, values in samples.items()}


class Runner:
    """Commands inside the namespace this process has entered."""

    def __init__(self, mode: str, cache_dir: str) -> None:
        self.mode = mode
        self.cache_dir = cache_dir
        # `auto` picks nf_tables on this host; only the legacy flavour needs saying.
        self.backend = [] if mode == rp_host_flavour() else ["--iptables", mode]
        self.env = user_env()

    def portmapctl(self, *args: str, ok=(0,), cache_dir: Optional[str] = None) -> float:
        argv = [*portmapctl_argv(), *args, *self.backend]
        argv += ["--cni-cache-dir", cache_dir or self.cache_dir]
        return timed(argv, env=self.env, ok=ok)

    def save(self, family: int = 4) -> float:
        tool = "ip6tables-save" if family == 6 else "iptables-save"
        return timed([rp.tool_path(tool, self.mode), "-t", "nat"])

    def plugin(self, command: str, c: Dict[str, Any], family: Optional[int] = None) -> float:
        """The real plugin, run directly (no `ip netns exec`: we are in the namespace)."""
        conf = plugin_conf(c)
        if family is not None:
            conf = rp.narrow_conf(conf, family)
        env = {
            "PATH": f"{rp.bin_dir(self.mode, family)}:{rp.SYSTEM_PATH}",
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": c["id"],
            "CNI_NETNS": CONTAINER_NETNS,
            "CNI_IFNAME": "eth0",
            "CNI_PATH": rp.CNI_PATH,
        }
        return timed([rp.PLUGIN], stdin=json.dumps(conf).encode(), env=env)

    def plugin_check(self, c: Dict[str, Any]) -> float:
        """CHECK once per family the container has, each seeing only that family's
        iptables (Debian's 1.1.1 CHECK fails otherwise: FACTS)."""
        families = sorted({rp.family_of(ip) for ip in c["ips"]})
        return sum(self.plugin("CHECK", c, family) for family in families)


CONTAINER_NETNS = ""  # set in main(): CNI_NETNS for the plugin (it never enters it)


def user_env() -> Dict[str, str]:
    """The environment portmapctl runs in: this one, minus what a user would not have
    (a backend override; PYTHONDONTWRITEBYTECODE, set on this machine, which would make
    every run compile portmapctl from source, 20-50 ms that an installed copy never pays)."""
    drop = ("PORTMAPCTL_BACKEND", "PORTMAPCTL_IPTABLES", "PYTHONDONTWRITEBYTECODE")
    return {k: v for k, v in os.environ.items() if k not in drop}


def compile_bytecode() -> None:
    """What `pip install` does: the package's modules compiled once, ahead of the runs."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(ROOT / "portmapctl")],
        check=True, env=user_env(),
    )  # fmt: skip


def rp_host_flavour() -> str:
    from portmapctl.iptables.access import host_flavour

    return host_flavour()


class Node:
    """A throwaway namespace filled with N containers (and its CNI cache)."""

    def __init__(self, mode: str, containers: Sequence[Dict[str, Any]], cache: bool = True):
        self.mode = mode
        self.name = rp.create_netns("pmt-bench")
        self.cache_dir = tempfile.mkdtemp(prefix="pmt-bench-cache-")
        try:
            with entered(self.name):
                self.fill_seconds = fill(mode, containers)
            if cache:
                write_cache(self.cache_dir, containers)
            else:
                os.mkdir(os.path.join(self.cache_dir, "results"))  # a cache, and it is empty
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        rp.delete_netns(self.name)
        shutil.rmtree(self.cache_dir, ignore_errors=True)

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def log(text: str) -> None:
    print(text, flush=True)


def load() -> List[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --- the measurements -----------------------------------------------------------------------


def plugin_fill_check(mode: str, containers: Sequence[Dict[str, Any]], node: Node) -> Dict:
    """Fill a second namespace through the real plugin's ADD, one container after the
    other; its saves must equal the bulk-filled node's."""
    name = rp.create_netns("pmt-bench-plugin")
    try:
        with entered(name):
            runner = Runner(mode, node.cache_dir)
            per_add = [runner.plugin("ADD", c) for c in containers]
        identical = all(
            rp.strip_save_comments(rp.save(name, f, mode))
            == rp.strip_save_comments(rp.save(node.name, f, mode))
            for f in (4, 6)
        )
    finally:
        rp.delete_netns(name)
    if not identical:
        raise BenchError("the bulk-filled tables differ from what the plugin's ADD makes")
    return {"plugin_seconds": sum(per_add), "plugin_per_add": stats(per_add), "identical": True}


def table_size(mode: str) -> Dict[str, int]:
    sizes = {}
    for family in (4, 6):
        tool = rp.tool_path("ip6tables-save" if family == 6 else "iptables-save", mode)
        text = subprocess.run([tool, "-t", "nat"], capture_output=True, text=True).stdout
        sizes[str(family)] = sum(1 for line in text.splitlines() if line.startswith("-A "))
    return sizes


def measure_reads(runner: Runner, plan: Plan) -> Dict[str, Stats]:
    return alternate(
        {
            "save": runner.save,
            "save6": lambda: runner.save(6),
            "list": lambda: runner.portmapctl("list"),
            "list_json": lambda: runner.portmapctl("list", "-o", "json"),
        },
        plan.runs,
    )


def measure_check(runner: Runner, plan: Plan, containers: Sequence[Dict[str, Any]]) -> Dict:
    ours = repeat(lambda: runner.portmapctl("check", "-q"), plan.runs)
    n = len(containers)
    chosen = spread(n, n if n <= plan.every_up_to else plan.samples(n))
    per = [runner.plugin_check(containers[i]) for i in chosen]
    return {
        "check": ours,
        "plugin_check": {
            "per_container": stats(per),
            "measured": len(chosen),
            "of": n,
            "total": statistics.fmean(per) * n,
            "extrapolated": len(chosen) < n,
        },
    }


def measure_add(runner: Runner, plan: Plan, n: int) -> Dict[str, Stats]:
    """One more container each run, into the table of N (ours and the plugin's take turns)."""
    fresh = iter(container(i, plain=True) for i in range(n, n + 2 * plan.add_runs))

    def ours() -> float:
        c = next(fresh)
        ip = c["ips"][0]
        tcp, udp = (p["hostPort"] for p in c["ports"])
        return runner.portmapctl(
            "add", "-q", "--network", NETWORK, "--container", c["id"], "--ip", ip,
            "-p", f"{tcp}:80", "-p", f"{udp}:53/udp",
        )  # fmt: skip

    def plugin() -> float:
        return runner.plugin("ADD", next(fresh))

    found = alternate({"add": ours, "plugin_add": plugin}, plan.add_runs)
    return found


def measure_flush(runner: Runner, plan: Plan) -> Dict[str, Any]:
    """10,000 UDP entries on 4 mapped host ports: `flush-udp` (which finds every mapped
    UDP port of the node itself) vs `conntrack -D` for each of the 4 ports."""
    ports = [40000 + i for i in range(FLUSH_PORTS)]  # containers 0-3's UDP host ports

    def ours() -> float:
        conntrack_bench.create(FLUSH_ENTRIES, ports)
        seconds = runner.portmapctl("flush-udp", "-q")
        if conntrack_bench.count_udp():
            raise BenchError("flush-udp left entries behind")
        return seconds

    def tool() -> float:
        conntrack_bench.create(FLUSH_ENTRIES, ports)
        seconds = conntrack_bench.conntrack_tool(ports)
        if conntrack_bench.count_udp():
            raise BenchError("conntrack -D left entries behind")
        return seconds

    found: Dict[str, Any] = alternate({"flush_udp": ours, "conntrack_tool": tool}, plan.runs)
    found["entries"] = FLUSH_ENTRIES
    found["ports"] = FLUSH_PORTS
    return found


def measure_gc(mode: str, plan: Plan, containers: Sequence[Dict[str, Any]]) -> Stats:
    """`gc` of every container: all stale (the CNI cache exists and is empty)."""
    samples = []
    for _ in range(plan.gc_runs(len(containers))):
        with Node(mode, containers, cache=False) as node, entered(node.name):
            runner = Runner(mode, node.cache_dir)
            # An empty cache is no liveness (SPEC §3 gc): --all says every chain goes.
            samples.append(runner.portmapctl("gc", "--yes", "--all", "--min-age", "0", "-q"))
            if dnat_chains(mode):
                raise BenchError("gc left chains behind")
    return stats(samples)


def measure_plugin_del(mode: str, plan: Plan, containers: Sequence[Dict[str, Any]]) -> Dict:
    """The plugin's DEL of each container, in a row. Above `every_up_to`, a sample: DEL
    number j of k runs on a table shrunk to the size it has at that point of the row
    (N - j*N/k containers; the others removed in bulk), and counts for N/k DELs."""
    n = len(containers)
    with Node(mode, containers, cache=False) as node, entered(node.name):
        runner = Runner(mode, node.cache_dir)
        if n <= plan.every_up_to:
            per = [runner.plugin("DEL", c) for c in containers]
            total, measured = sum(per), n
        else:
            k = plan.samples(n)
            chosen = spread(n, k)
            picked = set(chosen)
            others = [c for i, c in enumerate(containers) if i not in picked]
            per, gone = [], 0
            for j, index in enumerate(chosen):
                target = n - round(j * n / k)  # containers in the table for this DEL
                excess = (n - gone) - target
                if excess > 0:
                    remove(mode, others[:excess])
                    others, gone = others[excess:], gone + excess
                per.append(runner.plugin("DEL", containers[index]))
                gone += 1
            total, measured = sum(per) * n / k, k
        if n <= plan.every_up_to and dnat_chains(mode):
            raise BenchError("the plugin's DEL left chains behind")
    return {
        "per_container": stats(per),
        "measured": measured,
        "of": n,
        "total": total,
        "extrapolated": measured < n,
    }


def measure_startup(plan: Plan) -> Dict[str, Stats]:
    script = portmapctl_argv()
    env = user_env()
    return alternate(
        {
            "version": lambda: timed([*script, "--version"], env=env),
            "help": lambda: timed([*script, "--help"], env=env),
            "list_help": lambda: timed([*script, "list", "--help"], env=env),
            "python": lambda: timed([sys.executable, "-c", "pass"], env=env),
        },
        plan.startup_runs,
    )


def measure_size(mode: str, plan: Plan, n: int, flush_here: bool) -> Dict[str, Any]:
    containers = [container(i) for i in range(n)]
    result: Dict[str, Any] = {"load_before": load()}
    with Node(mode, containers) as node:
        result["fill"] = {"bulk_seconds": node.fill_seconds}
        if n in plan.plugin_fill:
            log(f"  N={n}: filling a second namespace through the plugin's ADD")
            result["fill"].update(plugin_fill_check(mode, containers, node))
        with entered(node.name):
            runner = Runner(mode, node.cache_dir)
            result["rules"] = table_size(mode)
            log(f"  N={n}: list vs iptables-save")
            result.update(measure_reads(runner, plan))
            log(f"  N={n}: check vs the plugin's CHECK")
            result.update(measure_check(runner, plan, containers))
            # add before flush-udp: the kernel goes on freeing flush-udp's 10,000
            # conntrack entries after each run, on the cores add would run on.
            log(f"  N={n}: add vs the plugin's ADD")
            result.update(measure_add(runner, plan, n))
            if flush_here:
                log(f"  N={n}: flush-udp vs conntrack -D ({FLUSH_ENTRIES} entries)")
                result["flush"] = measure_flush(runner, plan)
    log(f"  N={n}: gc vs the plugin's DEL")
    result["gc"] = measure_gc(mode, plan, containers)
    result["plugin_del"] = measure_plugin_del(mode, plan, containers)
    result["load_after"] = load()
    return result


# --- the machine ----------------------------------------------------------------------------


def _first_line(argv: List[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError:
        return "?"
    return ((done.stdout or done.stderr).strip().splitlines() or ["?"])[0]


def interpreter() -> str:
    """Which python runs portmapctl here, in words for the page: its build matters (see
    the module's docstring)."""
    where = "Debian's python3" if sys.base_prefix == "/usr" else f"python at {sys.base_prefix}"
    venv = " in a venv" if sys.prefix != sys.base_prefix else ""
    return f"{where} {platform.python_version()}{venv}"


def machine() -> Dict[str, Any]:
    cpu = "?"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as info:
        memory_kib = int(info.readline().split()[1])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / 2**20, 1),
        "kernel": platform.release(),
        "os": _first_line(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "iptables": _first_line(["iptables", "--version"]),
        "plugin": "containernetworking-plugins "
        + _first_line(["dpkg-query", "-W", "-f", "${Version}", "containernetworking-plugins"]),
        "conntrack": _first_line(["conntrack", "--version"]),
        "python": platform.python_version(),
        "interpreter": interpreter(),
        "portmapctl": __version__,
        "portmapctl_argv": portmapctl_argv(),
    }


# --- list only: this checkout against a baseline checkout, in the same rounds ------------


def checkout_env(root: Path) -> Dict[str, str]:
    """user_env() importing portmapctl from the checkout `root` (run with python -P)."""
    return {**user_env(), "PYTHONPATH": str(root)}


def list_argv(node: Node, *args: str) -> List[str]:
    # -P: `-m` puts the working directory ahead of PYTHONPATH otherwise.
    extra = [] if node.mode == rp_host_flavour() else ["--iptables", node.mode]
    return [sys.executable, "-P", "-m", "portmapctl", "list", *args, *extra,
            "--cni-cache-dir", node.cache_dir]  # fmt: skip


def list_only(mode: str, n: int, runs: int, baseline: Optional[Path], count: bool) -> Dict:
    """`list` of N containers vs a bare `iptables-save -t nat` (and the baseline
    checkout's `list`), interleaved round by round; with `count`, instructions too."""
    from nft_bench import instructions

    containers = [container(i) for i in range(n)]
    with Node(mode, containers) as node, entered(node.name):
        commands = {
            "save": ([rp.tool_path("iptables-save", mode), "-t", "nat"], None),
            "list": (list_argv(node), checkout_env(ROOT)),
        }
        if baseline is not None:
            commands["baseline_list"] = (list_argv(node), checkout_env(baseline))
        for argv, env in commands.values():
            timed(argv, env=env)  # warm: page cache, bytecode
        samples = alternate(
            {name: partial(timed, argv, env=env) for name, (argv, env) in commands.items()},
            runs,
        )
        if count:
            for name, (argv, env) in commands.items():
                samples[name]["instructions"] = instructions(argv, env)
    return samples


def print_list_only(n: int, found: Dict[str, Stats]) -> None:
    save = found["save"]
    log(f"N = {n}: load average {load()}")
    for name, figures in found.items():
        line = (f"  {name:14} median {figures['median']:.3f} s (min {figures['min']:.3f}, "
                f"max {figures['max']:.3f}) = {figures['median'] / save['median']:.2f}x save")  # fmt: skip
        if "instructions" in figures:
            line += (f"; {figures['instructions'] / 1e6:,.0f} M instructions "
                     f"= {figures['instructions'] / save['instructions']:.2f}x save")  # fmt: skip
        log(line)


# --- profiling (SPEC §6 issue: find where the time goes) ---------------------------------------


def profile(mode: str, n: int) -> None:
    """cProfile of list/add/check/gc at N, and -X importtime of start-up, into OUT."""
    import pstats

    OUT.mkdir(parents=True, exist_ok=True)
    containers = [container(i) for i in range(n)]
    env = user_env()
    extra = [] if mode == rp_host_flavour() else ["--iptables", mode]
    c = container(n, plain=True)
    commands = {
        "list": ["list"],
        "check": ["check", "-q"],
        "add": [
            "add",
            "-q",
            "--network",
            NETWORK,
            "--container",
            c["id"],
            "--ip",
            c["ips"][0],
            "-p",
            f"{10000 + n}:80",
            "-p",
            f"{40000 + n}:53/udp",
        ],  # fmt: skip
    }
    with Node(mode, containers) as node, entered(node.name):
        for name, args in commands.items():
            _profile_one(name, [*args, *extra, "--cni-cache-dir", node.cache_dir], env, pstats)
    with Node(mode, containers, cache=False) as node, entered(node.name):
        args = ["gc", "--yes", "--all", "--min-age", "0", "-q", *extra, "--cni-cache-dir",
                node.cache_dir]  # fmt: skip
        _profile_one("gc", args, env, pstats)
    for name, args in {"version": ["--version"], "help": ["--help"]}.items():
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "portmapctl", *args],
            capture_output=True, text=True, env=env, check=True,
        )  # fmt: skip
        lines = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
        heaviest = sorted(lines[1:], key=lambda line: -int(line.split("|")[1]))[:30]
        path = OUT / f"importtime-{name}.txt"
        path.write_text("\n".join([lines[0], *heaviest]) + "\n")
        log(f"  {path.relative_to(ROOT)}")


# `python -m cProfile` writes its file at interpreter exit, which `add` skips (it ends
# with os._exit once its output is flushed: portmapctl/entry.py): this also writes it then.
_PROFILED = """
import cProfile, os, runpy, sys
path = sys.argv.pop(1)
profile = cProfile.Profile()
exit_now = os._exit
def _exit(code):
    profile.disable()
    profile.dump_stats(path)
    exit_now(code)
os._exit = _exit
sys.argv[0] = "portmapctl"
profile.enable()
try:
    runpy.run_module("portmapctl", run_name="__main__", alter_sys=True)
finally:
    profile.disable()
    profile.dump_stats(path)
"""


def _profile_one(name: str, args: List[str], env: Dict[str, str], pstats: Any) -> None:
    prof = OUT / f"profile-{name}.prof"
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _PROFILED, str(prof), *args],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise BenchError(f"portmapctl {name}: exit {done.returncode}: {done.stderr[-2000:]}")
    text = OUT / f"profile-{name}.txt"
    with open(text, "w") as out:
        out.write(f"portmapctl {' '.join(args)}\nwall clock under cProfile: {elapsed:.3f} s\n\n")
        for order in ("cumulative", "tottime"):
            pstats.Stats(str(prof), stream=out).strip_dirs().sort_stats(order).print_stats(35)
    log(f"  {text.relative_to(ROOT)}  ({elapsed:.2f} s under cProfile)")


# --- main ---------------------------------------------------------------------------------------


def main() -> None:
    global CONTAINER_NETNS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 10, 100, 1000; fewer runs")
    parser.add_argument("--mode", choices=("nft", "legacy"), default="nft", help="iptables flavour")
    parser.add_argument("--sizes", help="comma-separated N (default: 10,100,1000,5000)")
    parser.add_argument("--out", default=str(OUT / "results.json"), help="the JSON to write")
    parser.add_argument("--no-docs", action="store_true", help="do not regenerate docs/")
    parser.add_argument("--profile", type=int, metavar="N", help="only profile the commands at N")
    parser.add_argument("--list-only", action="store_true",
                        help="only list vs iptables-save at --sizes (default 1000)")  # fmt: skip
    parser.add_argument("--baseline", type=Path, metavar="DIR",
                        help="--list-only: another checkout's list in the same rounds")  # fmt: skip
    parser.add_argument("--runs", type=int, default=7, help="--list-only: rounds")
    parser.add_argument("--instructions", action="store_true",
                        help="--list-only: also count instructions (valgrind)")  # fmt: skip
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (network namespaces, iptables, conntrack)")
    for ok, reason in (rp.netns_available(), rp.plugin_available(), rp.mode_available(args.mode)):
        if not ok:
            raise SystemExit(reason)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
    if sizes and not all(1 <= s <= 9000 for s in sizes):
        raise SystemExit("--sizes: each 1 to 9000 (host ports 10000+N and 40000+N)")
    CONTAINER_NETNS = rp.container_netns()
    compile_bytecode()
    if args.list_only:
        if args.baseline is not None:
            subprocess.run([sys.executable, "-m", "compileall", "-q",
                            str(args.baseline / "portmapctl")], check=True, env=user_env())  # fmt: skip
        for n in sizes or [1000]:
            print_list_only(n, list_only(args.mode, n, args.runs, args.baseline,
                                         args.instructions))  # fmt: skip
        return
    if args.profile:
        log(f"profiling at N={args.profile} ({args.mode})")
        profile(args.mode, args.profile)
        return
    plan = Plan(args.quick, sizes)
    started = time.perf_counter()
    doc: Dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "mode": args.mode,
        "quick": plan.quick,
        "machine": machine(),
        "load_start": load(),
        "plan": {k: v for k, v in vars(plan).items()},
        "sizes": plan.sizes,
        "results": {},
    }
    log(f"load average {doc['load_start']}; {args.mode}; N = {plan.sizes}")
    doc["startup"] = measure_startup(plan)
    flush_at = max([n for n in plan.sizes if n <= FLUSH_AT] or plan.sizes[:1])
    for n in plan.sizes:
        doc["results"][str(n)] = measure_size(args.mode, plan, n, flush_here=n == flush_at)
        doc["flush_at"] = flush_at
    doc["load_end"] = load()
    doc["seconds"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    log(f"wrote {out} ({doc['seconds']} s; load average at the end {doc['load_end']})")
    if not args.no_docs:
        import report

        report.write(doc)


if __name__ == "__main__":
    main()
