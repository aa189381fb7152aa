"""(The tests of this subject that need root are in tests/kernel/test_deploy.py.)

deploy/: the Kubernetes DaemonSet and the systemd service + timer that run `gc`.

Parsed as Kubernetes and systemd would read them, and checked for what gc needs on a
node: the command (parsed by portmapctl's own command line, so a renamed option
breaks this test), the host network, the mounts at the paths portmapctl uses, and the
capabilities. The capabilities are then tried for real: gc, run with exactly those
capabilities and nothing else, removes a real plugin's chain under nf_tables and
legacy iptables, and without NET_RAW legacy iptables refuses (so the list is not
longer than it must be, nor shorter).
"""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import typer
import yaml

from portmapctl.cli import app
from portmapctl.host import paths
from portmapctl.iptables.access import BACKEND_NAMES

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MANIFEST = DEPLOY / "kubernetes" / "portmapctl-gc.yaml"
SERVICE = DEPLOY / "systemd" / "portmapctl-gc.service"
TIMER = DEPLOY / "systemd" / "portmapctl-gc.timer"
XTABLES_LOCK = "/run/xtables.lock"


def gc_argv(line: str) -> List[str]:
    """The arguments after `portmapctl` in a shell line or ExecStart=."""
    words = shlex.split(line)
    for i, word in enumerate(words):
        if os.path.basename(word) == "portmapctl":
            return words[i + 1 :]
    raise AssertionError(f"no portmapctl command in {line!r}")


def parse_with_cli(argv: List[str]) -> Dict[str, object]:
    """Parse `argv` exactly as portmapctl would (unknown options raise), run nothing."""
    command = typer.main.get_command(app)
    name, sub, rest = command.resolve_command(command.make_context("portmapctl", list(argv)), argv)
    ctx = sub.make_context(name, rest)
    return {"command": name, **ctx.params}


def assert_is_quiet_unattended_gc(argv: List[str]) -> None:
    params = parse_with_cli(argv)
    assert params["command"] == "gc"
    assert params["yes"] is True, "not on a terminal, gc needs --yes"
    assert params["quiet"] is True, "one summary line per run"
    assert params["dry_run"] is False and params["remove_all"] is False
    assert getattr(params["output"], "value", params["output"]) == "table"


# --- Kubernetes --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def daemonset() -> dict:
    documents = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    kinds = [d["kind"] for d in documents]
    assert kinds == ["DaemonSet"], kinds
    return documents[0]


def test_daemonset_runs_quiet_gc_in_a_loop_on_every_node(daemonset):
    assert daemonset["apiVersion"] == "apps/v1"
    spec = daemonset["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in spec["selector"]["matchLabels"].items())
    assert pod["hostNetwork"] is True
    assert {"operator": "Exists"} in pod["tolerations"], "every node, tainted ones too"
    assert pod.get("automountServiceAccountToken") is False, "it never talks to the API"
    (container,) = pod["containers"]
    script = "\n".join(container["command"] + container["args"])
    gc_lines = [line for line in script.splitlines() if "portmapctl " in line]
    assert len(gc_lines) == 1, gc_lines
    assert_is_quiet_unattended_gc(gc_argv(gc_lines[0].split("||")[0]))
    assert "sleep" in script and "while" in script
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["PORTMAPCTL_IPTABLES"] in BACKEND_NAMES
    assert env["PORTMAPCTL_IPTABLES"] != "auto", "in an image, auto sees the image's iptables"
    assert int(env["GC_INTERVAL_SECONDS"]) >= 60


def test_daemonset_is_unprivileged_with_exactly_net_admin_and_net_raw(daemonset):
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    security = container["securityContext"]
    assert security.get("privileged") is False
    assert security.get("allowPrivilegeEscalation") is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert sorted(security["capabilities"]["add"]) == ["NET_ADMIN", "NET_RAW"]


def test_daemonset_mounts_the_host_paths_portmapctl_uses(daemonset):
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {v["name"]: v["hostPath"] for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for path in (paths.CNI_CACHE_DIR, paths.RUN_DIR, XTABLES_LOCK):
        assert path in mounts, f"{path} is not mounted"
        host = volumes[mounts[path]["name"]]
        assert host["path"] == path, "same path on the node and in the pod"
    cache = mounts[paths.CNI_CACHE_DIR]
    assert cache.get("readOnly") is True, "gc only reads the CNI cache"
    # DirectoryOrCreate would make up an empty cache on a node without one, and with
    # an empty cache every chain looks dead.
    assert volumes[cache["name"]]["type"] == "Directory"
    assert volumes[mounts[XTABLES_LOCK]["name"]]["type"] == "FileOrCreate"
    assert not mounts[paths.RUN_DIR].get("readOnly"), "the lock and gc state are written"
    assert not mounts[XTABLES_LOCK].get("readOnly")
    assert container["securityContext"].get("readOnlyRootFilesystem") is True


# --- systemd -----------------------------------------------------------------------------


def read_unit(path: Path) -> configparser.ConfigParser:
    # systemd units are ini-like; keys are case-sensitive and may repeat (last one wins
    # for the keys used here).
    unit = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(path.read_text())
    return unit


def test_service_runs_quiet_gc_once_with_only_the_capabilities_it_needs():
    service = read_unit(SERVICE)
    assert service["Service"]["Type"] == "oneshot"
    exec_start = service["Service"]["ExecStart"]
    assert shlex.split(exec_start)[0].startswith("/"), "systemd wants an absolute path"
    assert_is_quiet_unattended_gc(gc_argv(exec_start))
    caps = service["Service"]["CapabilityBoundingSet"].split()
    assert sorted(caps) == ["CAP_NET_ADMIN", "CAP_NET_RAW"]
    assert service["Service"]["NoNewPrivileges"] == "yes"
    # gc keeps its lock and state in /run/portmapctl between runs: /run stays writable.
    assert service["Service"]["ProtectSystem"] != "strict"
    assert "PrivateNetwork" not in service["Service"], "the chains are in the host's netns"
    condition = service["Unit"]["ConditionPathIsDirectory"]
    assert condition == f"{paths.CNI_CACHE_DIR}/results"
    environment = dict(
        item.split("=", 1) for item in shlex.split(service["Service"].get("Environment", ""))
    )
    assert environment.get("PORTMAPCTL_IPTABLES", "auto") in BACKEND_NAMES


def test_timer_starts_the_service_every_few_minutes():
    timer = read_unit(TIMER)
    assert timer["Timer"].get("Unit", SERVICE.name) == SERVICE.name
    assert TIMER.stem == SERVICE.stem
    assert timer["Timer"]["OnUnitActiveSec"] and timer["Timer"]["OnBootSec"]
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_systemd_analyze_verify_accepts_the_units(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify checks that ExecStart's program exists: point it at this checkout's.
    program = tmp_path / "portmapctl"
    program.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m portmapctl "$@"\n')
    program.chmod(0o755)
    text = SERVICE.read_text()
    installed = shlex.split(read_unit(SERVICE)["Service"]["ExecStart"])[0]
    (tmp_path / SERVICE.name).write_text(text.replace(installed, str(program)))
    shutil.copy(TIMER, tmp_path / TIMER.name)
    done = subprocess.run(
        [analyze, "verify", "--man=no", str(tmp_path / SERVICE.name), str(tmp_path / TIMER.name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


# --- the capabilities, for real ------------------------------------------------------------


