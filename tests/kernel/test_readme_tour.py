"""The README's tour on the example node loaded into a namespace, run as a reader runs it.

README.md's check, gc and flush-udp examples (and check.md's repair of the same node)
run against `examples/` loaded into a namespace `demo`, beside a namespace `ctr` that
the cached containers name (docs/commands/README.md#trying-the-examples says how).
Neither tests/unit/test_docs.py (files only) nor tests/kernel/test_docs_demo_node.py
(docs/demo_node.py's node) runs them. Here they run with those very names, in a mount
namespace of their own whose /run/netns is a private tmpfs (no other run on this
machine sees `demo` or `ctr`), on an 80-column terminal as the pages say, and must
print what they show (stdout and stderr, lines in any order; gc's SEEN column aside)
and exit as they say.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import pytest
from docexamples import console_examples

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

# Run as root in a private mount namespace: the example node up, each command on a
# pseudo-terminal of 80 columns, its (exit code, output) printed as JSON lines.
_ON_NODE = r"""
import json, os, pty, select, subprocess, sys, fcntl, struct, termios
run = lambda *a: subprocess.run(a, check=True)
os.makedirs("/run/netns", exist_ok=True)
run("mount", "-t", "tmpfs", "portmapctl-readme", "/run/netns")
run("ip", "netns", "add", "demo")
run("ip", "netns", "add", "ctr")
# The cached containers' addresses in the namespace they name, as their ADD left them:
# without, check takes them for containers being torn down (ops/check/cache_now.py).
for address in ("10.88.0.5/16", "10.88.0.6/16", "10.88.0.8/16", "fd00:88::5/64"):
    run("ip", "-n", "ctr", "addr", "add", address, "dev", "lo")
for tool, dump in (("iptables-restore", "v4"), ("ip6tables-restore", "v6")):
    with open(f"examples/node.{dump}.save") as f:
        subprocess.run(["ip", "netns", "exec", "demo", tool], stdin=f, check=True)
for argv in json.loads(sys.argv[1]):
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "portmapctl", *argv],
        stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
    )
    os.close(slave)
    out = b""
    while True:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    print(json.dumps([proc.wait(), out.decode(errors="replace")]), flush=True)
"""

_SEEN = re.compile(r"\b\d+s(?=\s+(removed|removable|would remove)\b)")


def _normal(lines: List[str]) -> List[str]:
    return sorted(_SEEN.sub("Ns", line.rstrip()) for line in lines)


def _on_example_node(argvs: List[List[str]], tmp_path: Path) -> List[Tuple[int, List[str]]]:
    """Each command line on a fresh example node, in turn: (exit code, output lines)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1)")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PORTMAPCTL_") and k not in ("COLUMNS", "LINES", "FORCE_COLOR")
    }
    env.update(
        NO_COLOR="1", TERM="xterm", PYTHONPATH=str(ROOT),
        PORTMAPCTL_RUN_DIR=str(tmp_path / "run"),
        PORTMAPCTL_HOST_LOCAL_DIR=str(tmp_path / "host-local"),
    )  # fmt: skip
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", sys.executable, "-c", _ON_NODE,
         json.dumps(argvs)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(results) == len(argvs), done.stdout
    return [(code, out.replace("\r", "").rstrip("\n").split("\n")) for code, out in results]


@pytest.mark.netns
def test_readme_tour_on_the_example_node_prints_what_the_readme_shows(tmp_path):
    tour = [e for e in console_examples(README) if "--netns" in e.argv and "demo" in e.argv]
    assert [e.argv[0] for e in tour] == ["check", "gc", "gc", "flush-udp"]
    results = _on_example_node([e.argv for e in tour], tmp_path)
    # The tour's words: check finds problems (exit 1), the rest succeed.
    for example, (code, lines), want in zip(tour, results, [1, 0, 0, 0]):
        where = f"README.md:{example.line}: {' '.join(example.words)}"
        assert code == want, f"{where}: exit {code}\n{lines}"
        assert _normal(lines) == _normal(example.shown), where


@pytest.mark.netns
def test_check_md_repair_of_the_example_node_prints_what_the_page_shows(tmp_path):
    """check.md's `check --repair` of "the same node loaded into a namespace", on an
    80-column terminal: it repairs the missing entry rule and exits 1 (the shadowed and
    stale problems remain, as the page says)."""
    page = ROOT / "docs" / "commands" / "check.md"
    [example] = [e for e in console_examples(page) if "--netns" in e.argv and "demo" in e.argv]
    [(code, lines)] = _on_example_node([example.argv], tmp_path)
    where = f"check.md:{example.line}: {' '.join(example.words)}"
    assert code == 1, f"{where}: exit {code}\n{lines}"
    assert _normal(lines) == _normal(example.shown), where
