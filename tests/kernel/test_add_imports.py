"""What a live `add` imports (SPEC §6: one `add` per container): cni/cache.py (~5 ms of
imports) only where the container has a cache entry whose `backend` key it follows;
nftables' modules not for an iptables add on a node with no plugin nftables table."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import realplugin as rp

ROOT = Path(__file__).resolve().parents[2]
PORTS = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]


def _add_importing(
    host_ns: str, cache: Path, container: str, *extra: str, module: str = "portmapctl.cni.cache"
) -> tuple:
    """A keyless `add --dry-run` of `container` in-process (`extra`: more options):
    (its exit code, whether it imported `module`)."""
    argv = ["add", "--netns", host_ns, "--cni-cache-dir", str(cache), "--family", "4",
            "--network", "n1", "--container", container, "--ip", "10.1.0.2/24",
            "-p", "8080:80", "--dry-run", "-q", *extra]  # fmt: skip
    code = f"""
        import sys
        from portmapctl.entry import main
        try:
            main({argv!r})
        except SystemExit as done:
            print(done.code, {module!r} in sys.modules)
        """
    done = subprocess.run(
        [sys.executable, "-P", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    code, imported = done.stdout.splitlines()[-1].split()
    return code, imported == "True"


def test_add_of_an_uncached_container_reads_no_cache_module(host_ns, tmp_path):
    """The usual add (the container is not in the cache yet): a directory listing,
    no cni/cache.py; a cached entry is still read for its `backend` key."""
    (tmp_path / "results").mkdir()
    assert _add_importing(host_ns, tmp_path, "c1") == ("0", False)
    conf = rp.plugin_conf("n1", ["10.1.0.2/24"], PORTS)
    conf["backend"] = "iptables"
    rp.write_cni_cache(tmp_path, "n1", "c2", "eth0", conf, PORTS, ["10.1.0.2/24"])
    assert _add_importing(host_ns, tmp_path, "c2") == ("0", True)


def test_add_told_iptables_opens_no_nftables_module(host_ns, tmp_path):
    """`add --backend iptables` asks netlink whether the plugin's nftables tables exist
    (a copy of a container kept there is refused): with none, nothing of nftables is
    imported (ops/nft.py and what it pulls in, ~20 ms: 4b56ba9 imported it first)."""
    (tmp_path / "results").mkdir()
    for module in ("portmapctl.ops.nft", "portmapctl.nftables.node", "portmapctl.cni.cache"):
        told = _add_importing(host_ns, tmp_path, "c1", "--backend", "iptables", module=module)
        assert told == ("0", False), module
