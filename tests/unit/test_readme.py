"""The README's example that needs no root shows what the command prints today."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from pmctl import ok

ROOT = Path(__file__).parents[2]


def test_readme_list_example_is_real_output(monkeypatch):
    text = (ROOT / "README.md").read_text()
    match = re.search(r"\$ (portmapctl list --snapshot [^\n]+)\n(.*?)```", text, re.S)
    assert match, "the README lost its `portmapctl list --snapshot` example"
    monkeypatch.chdir(ROOT)
    args = shlex.split(match[1])[1:]
    assert ok(args) == match[2]


def test_readme_setup_command_reads_the_shipped_example():
    text = (ROOT / "README.md").read_text()
    setup = re.search(r"pip install \. && .*?&& (portmapctl [^\n]+)", text)
    assert setup and setup[1].startswith("portmapctl list --snapshot examples/")


def test_readme_install_works_where_system_pip_refuses_and_the_unit_finds_it():
    """Debian 12 / Ubuntu 24.04: no `pip install` into the system Python (PEP 668); the
    documented install links the binary where deploy/systemd's unit runs it from."""
    text = (ROOT / "README.md").read_text()
    line = re.search(r"^(sudo python3 -m venv [^\n]+)$", text, re.M)
    assert line, "the README lost its venv install line"
    words = shlex.split(line[1])
    assert "--break-system-packages" not in words
    link = words[words.index("ln") + 3]  # ln -sf TARGET LINK
    unit = (ROOT / "deploy/systemd/portmapctl-gc.service").read_text()
    exec_start = re.search(r"^ExecStart=(\S+)", unit, re.M)
    assert exec_start and exec_start[1] == link == "/usr/local/bin/portmapctl"


def test_readme_stays_short():
    """The owner's rule: what it is, set-up, a tour, exit codes, the performance table;
    the details live in docs/ (linked from its "More" list)."""
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 180, f"README.md has {len(lines)} lines: move details to docs/"
