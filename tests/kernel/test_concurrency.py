"""Several portmapctl processes and the real plugin at once, on one node (SPEC §5).

For a bounded time, at the same time: the real plugin ADDs, CHECKs and DELs
containers (writing libcni's cache as libcni does); `gc --yes` runs in a loop;
`check --repair` runs in a loop; `portmapctl add` adds containers of its own.
Afterwards every plugin call has succeeded, no live container was removed, the
node is what the live set says (a final gc takes what was stale, and `check` against
the whole live set is healthy), and no two portmapctl runs interleaved: every
iptables-save/-restore each of them ran (recorded by a wrapper in front of the real
binaries) falls inside that run's own turn on /run/portmapctl/lock (add's nf_tables
batch has no tool to record: tests/kernel/test_nfnl_add.py holds it to the lock).

This builds on tests/kernel/test_gc.py::test_concurrent_plugin_add_del_and_gc_loop (the
plugin against gc alone) and adds the other writers and the interleaving check.

`check --repair` gets a cache of its own (the containers `portmapctl add` made): a
repair trusts the cache, so one racing a plugin DEL of a container whose cache entry
libcni has not removed yet can re-create the chain under the DEL (docs/guarantees.md
says so); the min-age rule that protects plugin runs is gc's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import realplugin as rp
from pmctl import run
from test_gc import Node_, _containers, _ports

from portmapctl.iptables.chains import chain_name

pytestmark = pytest.mark.netns

DURATION = 5.0
TOOLS = ("iptables-nft-save", "ip6tables-nft-save", "iptables-nft-restore", "ip6tables-nft-restore")


def _recording_path(tmp_path: Path) -> Tuple[dict, Path]:
    """PATH with a wrapper in front of each nft save/restore: it logs when it starts and
    ends, and which process (its parent: a portmapctl run) called it."""
    folder = tmp_path / "rec"
    folder.mkdir()
    log = tmp_path / "calls.log"
    for tool in TOOLS:
        script = folder / tool
        script.write_text(
            "#!/bin/bash\n"
            f'echo "start $PPID $(date +%s%N) {tool}" >> {log}\n'
            f'/usr/sbin/{tool} "$@"; rc=$?\n'
            f'echo "end $PPID $(date +%s%N) {tool}" >> {log}\n'
            "exit $rc\n"
        )
        script.chmod(0o755)
    return {"PATH": f"{folder}:{os.environ['PATH']}"}, log


def _turns(log: Path) -> Dict[int, Tuple[int, int, int]]:
    """Per portmapctl process: (first start, last end, restore calls)."""
    turns: Dict[int, List[int]] = {}
    for line in log.read_text().splitlines():
        event, pid, stamp, tool = line.split()
        turn = turns.setdefault(int(pid), [int(stamp), int(stamp), 0])
        turn[0] = min(turn[0], int(stamp))
        turn[1] = max(turn[1], int(stamp))
        if event == "start" and tool.endswith("restore"):
            turn[2] += 1
    return {pid: (a, b, n) for pid, (a, b, n) in turns.items()}


def test_plugin_gc_repair_and_add_at_once(host_ns, tmp_path):
    if not rp.mode_available("nft")[0]:
        pytest.skip(rp.mode_available("nft")[1])
    plugin_cache = tmp_path / "cni"  # libcni's, for the plugin's containers
    own_cache = tmp_path / "cni-own"  # the containers portmapctl add makes
    for cache in (plugin_cache, own_cache):
        (cache / "results").mkdir(parents=True)
    node = Node_(host_ns, "nft", plugin_cache)
    env, log = _recording_path(tmp_path)
    tag = uuid.uuid4().hex[:6]
    stale = [f"stale{i}-{tag}" for i in range(3)]
    for i, cid in enumerate(stale):
        node.add("net", cid, [f"10.88.1.{i + 1}/16"], _ports(f"{7000 + i}/tcp", f"{7100 + i}/udp"),
                 cache=False)  # fmt: skip
    node.add("net", f"keep-{tag}", ["10.88.1.100/16"], _ports("7999/tcp"))  # live throughout
    common = ["--netns", host_ns, "--iptables", "nft"]
    stop = threading.Event()
    runs: Dict[str, List[subprocess.CompletedProcess]] = {"gc": [], "repair": [], "add": []}
    own: List[str] = []
    flushed: List[str] = []

    def gc_loop() -> None:
        while not stop.is_set():
            runs["gc"].append(run(["gc", "--yes", "--min-age", "1s", "-o", "json", *common,
                                   "--cni-cache-dir", str(plugin_cache), "--keep", "pm"],
                                  env=env))  # fmt: skip

    def repair_loop() -> None:
        while not stop.is_set():
            runs["repair"].append(run(["check", "--repair", "-o", "json", *common,
                                       "--cni-cache-dir", str(own_cache)], env=env))  # fmt: skip
            time.sleep(0.05)

    def add_loop() -> None:
        i = 0
        while not stop.is_set():
            cid = f"pm{i}-{tag}"
            ports = [f"{9000 + i}:80/tcp", f"{9500 + i}:53/udp"]
            done = run(["add", "--network", "net", "--container", cid, "--ip",
                        f"10.88.3.{i + 1}/16", *(a for p in ports for a in ("-p", p)), *common],
                       env=env)  # fmt: skip
            runs["add"].append(done)
            if done.returncode == 0:
                # The runtime records a successful ADD; repair keeps it from now on.
                rp.write_cni_cache(own_cache, "net", cid, "eth0",
                                   rp.plugin_conf("net", [f"10.88.3.{i + 1}/16"], []),
                                   [{"hostPort": 9000 + i, "containerPort": 80, "protocol": "tcp"},
                                    {"hostPort": 9500 + i, "containerPort": 53,
                                     "protocol": "udp"}],
                                   [f"10.88.3.{i + 1}/16"])  # fmt: skip
                own.append(cid)
            if i % 2 and len(own) > 1:
                # Something flushes an earlier container's chain (as a firewall reload
                # would): the repair loop has work to do, while everyone else runs.
                victim = chain_name("net", own[-2])
                rp.iptables(host_ns, ["-t", "nat", "-F", victim])
                flushed.append(own[-2])
            i += 1
            time.sleep(0.1)

    failures: List[str] = []
    plugin_calls = 0
    live: Dict[str, Path] = {}
    ever_live = {f"keep-{tag}"}
    threads = [threading.Thread(target=f) for f in (gc_loop, repair_loop, add_loop)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + DURATION
        i = 0
        while time.monotonic() < deadline:
            cid = f"new{i}-{tag}"
            conf = rp.plugin_conf("net", [f"10.88.2.{i + 1}/16"],
                                  _ports(f"{8000 + i}/tcp", f"{8100 + i}/udp"))  # fmt: skip
            done = rp.run_plugin("ADD", host_ns, cid, conf)
            plugin_calls += 1
            if done.returncode:
                failures.append(f"ADD {cid}: {done.stdout}{done.stderr}")
                break
            node.confs[cid] = conf
            live[cid] = node.cache_add("net", cid)
            ever_live.add(cid)
            if len(live) > 3:
                oldest = next(iter(live))
                for check in rp.run_check(host_ns, oldest, node.confs[oldest]):
                    plugin_calls += 1
                    if check.returncode:
                        failures.append(f"CHECK {oldest}: {check.stdout}{check.stderr}")
                done = rp.run_plugin("DEL", host_ns, oldest, node.confs[oldest])
                plugin_calls += 1
                if done.returncode:
                    failures.append(f"DEL {oldest}: {done.stdout}{done.stderr}")
                live.pop(oldest).unlink()
            i += 1
    finally:
        stop.set()
        for thread in threads:
            thread.join()

    assert not failures, failures
    for kind, done_runs in runs.items():
        assert len(done_runs) >= 2, f"{kind} hardly ran"
        for done in done_runs:
            # check exits 1 while the plugin's containers look stale from its cache.
            assert done.returncode in ((0, 1) if kind == "repair" else (0,)), done.stderr
            assert "error" not in done.stderr, done.stderr
    removed = [r["container_id"] for d in runs["gc"] for r in json.loads(d.stdout)["removed"]]
    assert not set(removed) & (ever_live | set(own)), "gc removed a live container"

    # No two portmapctl runs interleaved: their turns (first save to last restore) are
    # disjoint, and every one of them that wrote did so inside its own turn. (An add
    # on iptables-nft writes one nf_tables batch itself, no tool to record: that it
    # does so only under the lock is test_nfnl_add.py's; an add that the batch could
    # not serve runs iptables-restore and is recorded here.)
    turns = sorted(_turns(log).values())
    assert len(runs["gc"]) + len(runs["repair"]) <= len(turns) <= sum(map(len, runs.values()))
    for (_, end, _), (next_start, _, _) in zip(turns, turns[1:]):
        assert end < next_start, "two portmapctl runs used iptables at the same time"
    transactions = sum(n for _, _, n in turns)
    repaired = [d for d in runs["repair"] if json.loads(d.stdout)["repaired"]]
    assert flushed, "nothing was flushed underneath: the repairs had nothing to do"

    # Afterwards the node is what the live set says (once the last flush is repaired).
    last = run(["check", "--repair", "-o", "json", *common, "--cni-cache-dir", str(own_cache)])
    assert last.returncode in (0, 1), last.stderr
    # Every flush was repaired: by the loop, meanwhile, or (the last ones) now.
    assert repaired or json.loads(last.stdout)["repaired"]
    time.sleep(1.1)
    final = run(["gc", "--yes", "--min-age", "1s", "-o", "json", *common,
                 "--cni-cache-dir", str(plugin_cache), "--keep", "pm"])  # fmt: skip
    assert final.returncode == 0, final.stderr
    removed += [r["container_id"] for r in json.loads(final.stdout)["removed"]]
    assert set(stale) <= set(removed)
    assert _containers(node) == set(live) | {f"keep-{tag}"} | set(own)
    merged = tmp_path / "cni-all"
    shutil.copytree(plugin_cache, merged)
    for path in (own_cache / "results").iterdir():
        shutil.copy(path, merged / "results")
    healthy = run(["check", "-o", "json", *common, "--cni-cache-dir", str(merged)])
    assert healthy.returncode == 0, healthy.stdout
    for cid in live:
        node.check(cid)
    print(
        f"concurrent operations: {plugin_calls} plugin calls, {len(runs['gc'])} gc,"
        f" {len(runs['repair'])} check --repair ({len(repaired)} repaired),"
        f" {len(runs['add'])} add, {len(flushed)} chains flushed underneath;"
        f" {transactions} restore transactions, {len(turns)} lock turns"
    )


@pytest.mark.parametrize("quiet", [False, True])
def test_a_quiet_run_waits_for_the_lock_without_a_word(host_ns, tmp_path, quiet):
    """Two cron jobs overlap: the second waits for the lock. Under -q it said so on
    stderr all the same ("waiting for the portmapctl lock held by ..."), a line cron
    mails although nothing is wrong; without -q the line stays (a person waits)."""
    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        ["python3", "-c",
         "import sys, time\nfrom portmapctl.host import lock\n"
         "with lock.held(sys.argv[1]):\n    print('held', flush=True); time.sleep(2)\n",
         str(run_dir)],
        stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    argv = ["check", "--repair", "--netns", host_ns, "--cni-cache-dir", str(tmp_path)]
    done = run([*argv, *(["-q"] if quiet else [])], env={"PORTMAPCTL_RUN_DIR": str(run_dir)})
    holder.wait(timeout=10)
    assert done.returncode == 0, done.stdout + done.stderr
    waited = [
        line for line in done.stderr.splitlines() if "waiting for the portmapctl lock" in line
    ]
    assert len(waited) == (0 if quiet else 1), done.stderr
