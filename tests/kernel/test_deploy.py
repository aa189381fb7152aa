"""deploy/: the Kubernetes DaemonSet and the systemd service + timer that run `gc`.

Parsed as Kubernetes and systemd would read them, and checked for what gc needs on a
node: the command (parsed by portmapctl's own command line, so a renamed option
breaks this test), the host network, the mounts at the paths portmapctl uses, and the
capabilities. The capabilities are then tried for real: gc, run with exactly those
capabilities and nothing else, removes a real plugin's chain under nf_tables and
legacy iptables, and without NET_RAW legacy iptables refuses (so the list is not
longer than it must be, nor shorter).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
import realplugin as rp
import yaml
from deploy_helpers import DEPLOY, MANIFEST, SERVICE, gc_argv, read_unit  # noqa: F401

# --- Kubernetes --------------------------------------------------------------------------


# --- systemd -----------------------------------------------------------------------------


# --- the capabilities, for real ------------------------------------------------------------


def _setpriv_caps(names: List[str]) -> str:
    return ",".join(["-all"] + [f"+{n.lower().removeprefix('cap_')}" for n in names])


def run_gc_with_caps(host_ns: str, mode: str, caps: List[str], cache: Path, argv: List[str]):
    # The command of the deployment, pointed at a test cache and without the age rule
    # (which would only postpone the removal to a later run).
    argv = [*argv, "--cni-cache-dir", str(cache), "--min-age", "0"]
    drop = _setpriv_caps(caps)
    return subprocess.run(
        ["ip", "netns", "exec", host_ns, "setpriv", f"--bounding-set={drop}", "--inh-caps=-all"]
        + [sys.executable, "-m", "portmapctl", *argv],
        capture_output=True,
        text=True,
        env=dict(os.environ, PORTMAPCTL_IPTABLES=mode, NO_COLOR="1"),
        timeout=120,
        check=False,
    )


@pytest.mark.netns
def test_the_deployed_capabilities_are_enough_and_needed(host_ns, iptables_mode, tmp_path):
    (container,) = yaml.safe_load(MANIFEST.read_text())["spec"]["template"]["spec"]["containers"]
    k8s_caps = ["CAP_" + c for c in container["securityContext"]["capabilities"]["add"]]
    systemd_caps = read_unit(SERVICE)["Service"]["CapabilityBoundingSet"].split()
    assert sorted(k8s_caps) == sorted(systemd_caps)
    argv = gc_argv(read_unit(SERVICE)["Service"]["ExecStart"])
    (tmp_path / "results").mkdir()
    conf = rp.plugin_conf(
        "mynet", ["10.88.0.5/16"], [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
    )
    rp.run_plugin("ADD", host_ns, "gone1", conf, mode=iptables_mode, check=True)
    # Another container is live: an empty cache is no source of liveness (SPEC §3 gc).
    live = rp.plugin_conf("mynet", ["10.88.0.6/16"], [])
    rp.write_cni_cache(tmp_path, "mynet", "live1", "eth0", live, [], ["10.88.0.6/16"])

    if iptables_mode == "legacy":
        # Without NET_RAW, legacy iptables cannot even read: exit 3, nothing removed.
        refused = run_gc_with_caps(host_ns, "legacy", ["CAP_NET_ADMIN"], tmp_path, argv)
        assert refused.returncode == 3, refused.stderr
        assert "CAP_NET_RAW" in refused.stderr
        assert "CNI-DN-" in rp.save(host_ns, 4, iptables_mode)

    done = run_gc_with_caps(host_ns, iptables_mode, systemd_caps, tmp_path, argv)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1 and "removed 1 chain" in done.stdout, done.stdout
    assert "CNI-DN-" not in rp.save(host_ns, 4, iptables_mode)


# --- cron ------------------------------------------------------------------------------------


@pytest.mark.netns
def test_a_cron_job_finds_iptables_off_crons_path(host_ns, tmp_path):
    """Debian's cron runs jobs with PATH=/usr/bin:/bin, where no iptables is (it is in
    /usr/sbin): `--iptables auto` must still find the host's iptables, as the tools
    it runs are found."""
    if not os.path.exists("/usr/sbin/iptables") or os.path.exists("/usr/bin/iptables"):
        pytest.skip("needs iptables in /usr/sbin only, as Debian has it")
    (tmp_path / "results").mkdir()
    conf = rp.plugin_conf(
        "mynet", ["10.88.0.5/16"], [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
    )
    rp.run_plugin("ADD", host_ns, "gone1", conf, mode="nft", check=True)
    live = rp.plugin_conf("mynet", ["10.88.0.6/16"], [])
    rp.write_cni_cache(tmp_path, "mynet", "live1", "eth0", live, [], ["10.88.0.6/16"])
    root = Path(__file__).resolve().parents[2]
    argv = ["gc", "--yes", "-q", "--min-age", "0", "--netns", host_ns]
    done = subprocess.run(
        [sys.executable, "-m", "portmapctl", *argv, "--cni-cache-dir", str(tmp_path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(root),
            "PORTMAPCTL_RUN_DIR": str(tmp_path / "run"),
        },
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "removed 1 chain" in done.stdout, done.stdout
    assert "CNI-DN-" not in rp.save(host_ns, 4, "nft")
