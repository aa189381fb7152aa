"""A keyless mapping given on the command line follows its container's rules into the
plugin's nftables tables (ops/nft.py kept_in_nftables): what that costs where the plugin
has no nftables tables (nothing but one netlink question)."""

from __future__ import annotations

import os
import shutil
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
    (three processes: list ip, list ip6, --version) to learn there is nothing. An `nft`
    first on PATH records each run and hands over to the real one."""
    real = shutil.which("nft") or "/usr/sbin/nft"
    runs = tmp_path / "runs"
    wrapper = tmp_path / "bin" / "nft"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {runs}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    env = {"PATH": f"{wrapper.parent}:{os.environ['PATH']}"}
    done = pmctl.run(["check", *MAPPING, "--netns", host_ns, "--cni-cache-dir", str(tmp_path)],
                     env=env)  # fmt: skip
    assert done.returncode == 1, done.stderr  # (its chain is missing)
    assert not runs.exists(), runs.read_text()
    # (The wrapper is the nft that runs where there is something to read.)
    done = pmctl.run(["list", "--netns", host_ns, "--cni-cache-dir", str(tmp_path)], env=env)
    assert done.returncode == 0, done.stderr
    assert runs.exists()
