"""The docs' examples on the demo node, run as a reader runs them.

docs/commands/README.md says the outputs in the docs are real, captured on the node
that docs/demo_node.py builds (the real plugin in a namespace, its libcni cache where
the commands look by default). tests/unit/test_docs.py runs the examples that read
only files; these need the node. Each scenario is a run of consecutive examples of
one page on a fresh node (broken first as the page says, where it does): each must
print what the page shows (stdout and stderr together, lines in any order, as a
terminal interleaves them; clock times aside) and exit as a following `echo $?` says.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator, List, NamedTuple, Optional

import pytest
import realplugin as rp
from docexamples import Example, console_examples, shell_blocks

ROOT = Path(__file__).resolve().parents[2]
# One demo node at a time on this machine, whichever test run builds it: on a host
# without /var/lib/cni, `up` makes that directory (the cache's mount point) and `down`
# removes it, and removing a directory detaches the mounts on it in every mount
# namespace: another run's node would lose its cache between two examples.
DEMO_LOCK = Path(tempfile.gettempdir()) / "portmapctl-tests-demo-node.lock"


class Scenario(NamedTuple):
    page: str
    first: int  # index of its first example among the page's console examples
    count: int
    broken: Optional[str] = None  # `demo_node.py break ...` before the first example

    def __str__(self) -> str:
        return f"{self.page}[{self.first}:{self.first + self.count}]"


SCENARIOS = [
    Scenario("docs/commands/list.md", 0, 4),
    Scenario("docs/commands/check.md", 0, 2),
    Scenario("docs/commands/check.md", 2, 4, "firewall-reload"),
    Scenario("docs/commands/check.md", 10, 1),
    Scenario("docs/commands/gc.md", 0, 5),
    Scenario("docs/commands/gc.md", 5, 1),
    Scenario("docs/commands/gc.md", 6, 1),
    Scenario("docs/commands/flush-udp.md", 0, 3),
    Scenario("docs/commands/flush-udp.md", 3, 1),
    Scenario("docs/commands/flush-udp.md", 4, 1),
    Scenario("docs/commands/add.md", 0, 1),
    Scenario("docs/commands/add.md", 2, 3),
    Scenario("docs/commands/add.md", 5, 5),
    Scenario("docs/troubleshooting.md", 0, 4),
    Scenario("docs/troubleshooting.md", 4, 3),
    Scenario("docs/troubleshooting.md", 7, 3, "firewall-reload"),
    Scenario("docs/troubleshooting.md", 10, 7, "legacy-plugin"),
]


def _demo_module(tmp_path: Path):
    """docs/demo_node.py, its namespace and state made this test's own."""
    spec = importlib.util.spec_from_file_location("demo_node", ROOT / "docs" / "demo_node.py")
    assert spec and spec.loader
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    demo.NS = f"pmt-demo-{os.getpid()}"
    demo.STATE = tmp_path / "demo"
    demo.CACHE = demo.STATE / "cni"
    demo.RUN = demo.STATE / "run"
    demo.MOUNTPOINT_MARK = demo.STATE / "created-var-lib-cni"
    return demo


@pytest.fixture
def demo(tmp_path) -> Iterator[object]:
    module = _demo_module(tmp_path)
    with DEMO_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        try:
            yield module
        finally:
            module.down()


# What differs from run to run: gc's SEEN column and "removable in 2m00s, at 04:32:08".
_CLOCK = (
    (re.compile(r"\b\d+s(?=\s+(removed|removable|would remove)\b)"), "Ns"),
    # (A time past midnight is printed with its date.)
    (
        re.compile(r"removable in \w+, at (\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d"),
        "removable in T, at HH:MM:SS",
    ),  # fmt: skip
)


def _normal(lines: List[str]) -> List[str]:
    for pattern, replacement in _CLOCK:
        lines = [pattern.sub(replacement, line) for line in lines]
    return sorted(lines)


def _run(demo, example: Example, workdir: Path):
    """The example's command on the node, as the page's reader types it."""
    words = example.words
    if words[:1] == ["portmapctl"]:
        words = [sys.executable, "-m", "portmapctl", *example.argv]
    # What a root shell on the node has: no test-wide cache or run directory.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PORTMAPCTL_") and k not in ("COLUMNS", "FORCE_COLOR")
    }
    env.update(NO_COLOR="1", PYTHONPATH=str(ROOT))
    return subprocess.run(
        demo._on_node(words), cwd=workdir, env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.netns
@pytest.mark.parametrize("scenario", SCENARIOS, ids=str)
def test_demo_node_examples_print_what_the_docs_show(demo, scenario, tmp_path):
    examples = console_examples(ROOT / scenario.page)[scenario.first :][: scenario.count]
    assert len(examples) == scenario.count, f"{scenario}: the page has fewer examples"
    if scenario.broken == "legacy-plugin":
        rp.require(rp.mode_available("legacy"))
    demo.up()
    if scenario.broken:
        demo.break_node(scenario.broken)
    returncode = None
    scripts = shell_blocks(ROOT / scenario.page)
    after = examples[0].line
    for example in examples:
        where = f"{scenario.page}:{example.line}: {' '.join(example.words)}"
        # A ```sh block the page has the reader run before this example (its output
        # is the machine's tools', not shown: judged by the examples after it).
        for _, script in [(n, text) for n, text in scripts if after < n < example.line]:
            subprocess.run(demo._on_node(["sh", "-c", script]), capture_output=True, check=False)
        after = example.line
        if example.words == ["echo", "$?"]:
            assert [str(returncode)] == example.shown, where
            continue
        if example.words[:1] == ["cat"]:
            # The page shows the file it uses: the reader has it.
            (tmp_path / example.words[1]).write_text("\n".join(example.shown) + "\n")
            continue
        if example.words[:1] != ["portmapctl"]:
            continue  # this machine's own tools (`iptables --version`) say their own
        done = _run(demo, example, tmp_path)
        returncode = done.returncode
        printed = (done.stderr + done.stdout).rstrip("\n").split("\n")
        assert _normal(printed) == _normal(example.shown), where


@pytest.mark.netns
def test_add_dry_run_on_a_fresh_node_prints_the_transaction_the_docs_show(host_ns, tmp_path):
    """add.md's example "on a node where the plugin has not run yet" cannot run on the
    demo node (the plugin has run there): it runs on a fresh one, its stdout (the
    transaction; stderr has the warnings of a node without a CNI cache) as shown."""
    [example] = [
        e for e in console_examples(ROOT / "docs/commands/add.md")
        if e.argv[:1] == ["add"] and "--dry-run" in e.argv and "mynet" in e.argv
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR")}
    env.update(NO_COLOR="1", PYTHONPATH=str(ROOT), PORTMAPCTL_CNI_CACHE_DIR=str(tmp_path))
    done = subprocess.run(
        ["ip", "netns", "exec", host_ns, sys.executable, "-m", "portmapctl", *example.argv],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip("\n").split("\n") == example.shown, f"add.md:{example.line}"


@pytest.mark.netns
def test_readme_add_examples_on_a_fresh_node_print_what_the_readme_shows(host_ns, tmp_path):
    """README.md's tour of add (no test ran it: the tour's other commands run on the
    example node, tests/kernel/test_readme_tour.py): its three adds, in turn, on a
    fresh node, print what the README shows (stdout and stderr, lines in any order),
    but for the note of a node without a CNI cache, which a node with a runtime has."""
    adds = [e for e in console_examples(ROOT / "README.md") if e.argv[:1] == ["add"]]
    assert len(adds) == 3
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR")}
    env.update(NO_COLOR="1", PYTHONPATH=str(ROOT), PORTMAPCTL_CNI_CACHE_DIR=str(tmp_path))
    for example in adds:
        done = subprocess.run(
            ["ip", "netns", "exec", host_ns, sys.executable, "-m", "portmapctl", *example.argv],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        printed = (done.stderr + done.stdout).rstrip("\n").split("\n")
        printed = [line for line in printed if "no CNI cache at" not in line]
        assert sorted(printed) == sorted(example.shown), f"README.md:{example.line}"
