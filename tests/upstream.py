"""Run the real upstream portmap plugin (v1.6.2, v1.7.1, v1.9.1) and `nft` in namespaces.

The binaries live in `<repo>/../shared/reference/upstream/bin` (CI keeps `../shared`
beside the checkout); `PORTMAPCTL_UPSTREAM_BIN` names another folder (a git worktree
elsewhere). Everything runs with argument lists, never a shell, and needs root.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Literal, Sequence

import realplugin as rp

REPO = Path(__file__).resolve().parent.parent
VERSIONS = ("v1.6.2", "v1.7.1", "v1.9.1")
Command = Literal["ADD", "CHECK", "DEL"]


def bin_dir() -> Path:
    override = os.environ.get("PORTMAPCTL_UPSTREAM_BIN")
    if override:
        return Path(override)
    return REPO.parent / "shared" / "reference" / "upstream" / "bin"


def binary(version: str) -> Path:
    return bin_dir() / f"portmap-{version}"


@functools.cache
def available() -> tuple[bool, str]:
    """Whether the three upstream binaries and `nft` are here."""
    for version in VERSIONS:
        if not os.access(binary(version), os.X_OK):
            return False, f"no upstream plugin {binary(version)} (set PORTMAPCTL_UPSTREAM_BIN)"
    if shutil.which("nft", path=rp.SYSTEM_PATH) is None:
        return False, "no `nft` (Debian package nftables)"
    return True, ""


def nft_conf(
    network: str,
    ips: Sequence[str],
    port_mappings: Sequence[dict[str, Any]],
    *,
    snat: bool | None = None,
    conditions_v4: Sequence[str] | None = None,
    conditions_v6: Sequence[str] | None = None,
    backend: str | None = "nftables",
    cni_version: str = "0.4.0",
) -> dict[str, Any]:
    """The plugin's stdin config with `"backend": "nftables"` (unless told otherwise)."""
    conf = rp.plugin_conf(
        network,
        ips,
        port_mappings,
        snat=snat,
        conditions_v4=conditions_v4,
        conditions_v6=conditions_v6,
        cni_version=cni_version,
    )
    if backend is not None:
        conf = {**conf, "backend": backend}
        # Keep the key order libcni-like: options before runtimeConfig/prevResult.
        conf = {k: conf[k] for k in ("cniVersion", "name", "type", "backend")} | {
            k: v for k, v in conf.items() if k not in ("cniVersion", "name", "type", "backend")
        }
    return conf


def run(
    version: str,
    command: Command,
    host_ns: str,
    container_id: str,
    conf: dict[str, Any],
    *,
    ifname: str = "eth0",
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """`portmap-VERSION COMMAND` in `host_ns` with `conf` on stdin (system PATH)."""
    env = {
        "PATH": rp.SYSTEM_PATH,
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": rp.container_netns(),
        "CNI_IFNAME": ifname,
        "CNI_PATH": rp.CNI_PATH,
    }
    proc = subprocess.run(
        [rp._ip(), "netns", "exec", host_ns, str(binary(version))],
        input=json.dumps(conf),
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"portmap-{version} {command} {container_id} exit {proc.returncode}: "
            f"{proc.stdout.strip()} {proc.stderr.strip()}"
        )
    return proc


def nft(host_ns: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`nft ARGS` in `host_ns`; raises with nft's message on failure."""
    proc = subprocess.run(
        [rp._ip(), "netns", "exec", host_ns, "nft", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"nft {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def ruleset_json(host_ns: str) -> str:
    return nft(host_ns, "-j", "list", "ruleset").stdout


def ruleset_text(host_ns: str) -> str:
    return nft(host_ns, "list", "ruleset").stdout


def nft_killed_once_after_it_ran(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """PATH with an `nft` in front of the real one that SIGKILLs itself after the first
    `nft -f` it ran (its transaction in, no answer), and the file it makes then."""
    wrap, killed = tmp_path / "wrap", tmp_path / "killed"
    wrap.mkdir(parents=True)
    real = next(p for p in ("/usr/sbin/nft", "/sbin/nft") if os.path.exists(p))
    (wrap / "nft").write_text(
        f'#!/bin/bash\n{real} "$@"\nrc=$?\nif [ "$1" = -f ] && [ ! -e {killed} ]; then\n'
        f"  touch {killed}; kill -KILL $$\nfi\nexit $rc\n"
    )
    (wrap / "nft").chmod(0o755)
    return {"PATH": f"{wrap}:{os.environ['PATH']}"}, killed
