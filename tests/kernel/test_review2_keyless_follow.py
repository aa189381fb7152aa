"""Review of 2729873/dfcee10: a keyless mapping given on the command line follows its
container's rules into nftables. What that costs where the plugin has no nftables
tables, and how its refusals read."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pmctl
import pytest

pytestmark = pytest.mark.netns

MAPPING = ["--network", "podman", "--container", "c1", "--ip", "10.88.0.5/16", "-p", "8000:80"]


def test_add_on_an_iptables_node_imports_nothing_of_nft(host_ns: str, tmp_path: Path) -> None:
    """No cni_hostport table: one netlink question, nft's access modules never imported
    (add_run.py: "importing its modules alone is ~15 ms")."""
    done = pmctl.run(
        ["add", *MAPPING, "--netns", host_ns, "--cni-cache-dir", str(tmp_path)],
        env={"PYTHONPROFILEIMPORTTIME": "1"},
    )
    assert done.returncode == 0, done.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert "portmapctl.nftables.access.nft" not in imported


def test_check_of_a_mapping_on_an_iptables_node_runs_no_nft(host_ns: str, tmp_path: Path) -> None:
    """No cni_hostport table: a one-mapping check asks netlink, it does not run nft
    (three processes: list ip, list ip6, --version) to learn there is nothing."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("no strace")
    trace = tmp_path / "trace"
    argv = [strace, "-f", "-qq", "-e", "trace=execve", "-o", str(trace),
            sys.executable, "-m", "portmapctl", "check", *MAPPING, "--netns", host_ns,
            "--cni-cache-dir", str(tmp_path)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ),
                          check=False, timeout=120)  # fmt: skip
    assert done.returncode == 1, done.stderr  # (its chain is missing)
    assert "/nft\"" not in trace.read_text()
