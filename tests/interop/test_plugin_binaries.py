"""Which backend a container cached `"backend": "nftables"` is in, where nothing of it
is left, told by the node's portmap binaries (--cni-bin-dir; host/cni_bins.py): the
real plugins copied into a bin directory of the test's own (conftest points the
default at none, so the machine's /usr/lib/cni is never read unasked)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, Iterator

import pmctl
import pytest
import realplugin as rp
import upstream

from portmapctl.iptables.chains import chain_name

pytestmark = pytest.mark.netns

V191 = "v1.9.1"
_pm = rp.port_mapping


@pytest.fixture(autouse=True)
def _upstream_binaries() -> None:
    rp.require(upstream.available())


@pytest.fixture
def node() -> Iterator[str]:
    name = rp.create_netns("pmt-bins")
    try:
        yield name
    finally:
        rp.delete_netns(name)


def _bin_dir(tmp_path: Path, name: str, plugin: Path) -> str:
    """A CNI bin directory holding `plugin` as `portmap`."""
    folder = tmp_path / name
    if not folder.exists():
        folder.mkdir()
        shutil.copy(plugin, folder / "portmap")
    return str(folder)


def _debian(tmp_path: Path) -> str:
    return _bin_dir(tmp_path, "debian-bin", Path(rp.PLUGIN))


def _v191(tmp_path: Path) -> str:
    return _bin_dir(tmp_path, "v191-bin", upstream.binary(V191))


def _pmctl(ns: str, cache: Path, *args: str):
    return pmctl.run([*args, "--netns", ns, "--cni-cache-dir", str(cache / "cache")])


def _cached(cache: Path, cid: str, conf: Dict[str, Any]) -> Dict[str, Any]:
    ports = conf["runtimeConfig"]["portMappings"]
    ips = [ip["address"] for ip in conf["prevResult"]["ips"]]
    rp.write_cni_cache(cache / "cache", "podman", cid, "eth0", conf, ports, ips)
    return conf


def _tables(node: str) -> str:
    return upstream.nft(node, "list", "tables").stdout


@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_a_debian_node_whose_rules_are_all_gone_is_repaired_in_iptables_by_its_binary(
    node: str, tmp_path: Path, mode: rp.Mode
) -> None:
    """Hole (a): deb1 added by Debian's 1.1.1 under `"backend": "nftables"` (a key it
    ignores: its chain in iptables). On iptables-nft, `nft flush ruleset` took
    iptables' nat table too: nothing on the node told a plugin before v1.6, and
    `check --repair` wrote deb1 into nftables, where that plugin never looks (its DEL
    leaves the copy, its next ADD makes a second one). On legacy, a firewall's flush
    of the nat table left deb1 in doubt for good. With its binary in --cni-bin-dir
    (no nftables backend in it), it is repaired in iptables, and its own CHECK passes."""
    conf = rp.plugin_conf("podman", ["10.88.0.41/16"], [_pm(8041, 80)])
    conf = _cached(tmp_path, "deb1", {**conf, "backend": "nftables"})
    rp.run_plugin("ADD", node, "deb1", conf, mode=mode, check=True)
    if mode == "nft":
        upstream.nft(node, "flush", "ruleset")
    else:
        rp.iptables(node, ["-t", "nat", "-F"], mode=mode)
        rp.iptables(node, ["-t", "nat", "-X"], mode=mode)
    assert chain_name("podman", "deb1") not in rp.save(node, 4, mode)
    bins = ("--cni-bin-dir", _debian(tmp_path), "--iptables", mode)
    done = _pmctl(node, tmp_path, "check", "-o", "json", *bins)
    assert done.returncode == 1, done.stdout + done.stderr
    said = json.loads(done.stdout)
    assert "cannot be told" not in done.stderr, done.stderr
    assert not any(p["kind"].startswith("nft-") for p in said["problems"]), done.stdout
    assert "ignores the key" in done.stdout + done.stderr
    assert "debian-bin/portmap" in done.stdout + done.stderr
    # One mapping of it, by its cached key, would go to nftables: it stops, naming the
    # node's repair, nothing written.
    mapping = ("--network", "podman", "--container", "deb1", "--ip", "10.88.0.41/16",
               "-p", "8041:80")  # fmt: skip
    for command in (("add",), ("check", "--repair")):
        one = _pmctl(node, tmp_path, *command, *mapping, *bins)
        assert one.returncode == 3, one.stdout + one.stderr
        assert "ignores the key" in one.stderr and "check --repair" in one.stderr, one.stderr
    assert "cni_hostport" not in _tables(node)
    repaired = _pmctl(node, tmp_path, "check", "--repair", *bins)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "cni_hostport" not in _tables(node)
    assert chain_name("podman", "deb1") in rp.save(node, 4, mode)
    assert all(c.returncode == 0 for c in rp.run_check(node, "deb1", conf, mode=mode))


@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_a_v191_node_whose_plugin_tables_were_deleted_is_repaired_in_nftables_by_its_binary(
    node: str, tmp_path: Path, mode: rp.Mode
) -> None:
    """Hole (b): nft1 added by v1.9.1 under `"backend": "nftables"`, then its tables
    deleted, beside kube-proxy's iptables nat table (either flavour): that table is the
    weak sign of a plugin that may keep containers in iptables, so nft1 was in doubt on
    every run, and nothing an operator could give settled it. With v1.9.1's binary in
    --cni-bin-dir it is repaired in nftables, and v1.9.1's CHECK passes; with Debian's
    beside it (two runtimes, two plugins), still in doubt, nothing written."""
    conf = _cached(
        tmp_path, "nft1", upstream.nft_conf("podman", ["10.88.0.42/16"], [_pm(8042, 80)])
    )
    upstream.run(V191, "ADD", node, "nft1", conf, check=True)
    rp.iptables(node, ["-t", "nat", "-N", "KUBE-SERVICES"], mode=mode)
    for family in ("ip", "ip6"):
        if f"table {family} cni_hostport" in _tables(node):
            upstream.nft(node, "delete", "table", family, "cni_hostport")
    doubted = _pmctl(node, tmp_path, "check", "--repair")
    assert doubted.returncode == 1 and "cannot be told" in doubted.stderr, doubted.stderr
    two = _pmctl(node, tmp_path, "check", "--repair", "--cni-bin-dir", _v191(tmp_path),
                 "--cni-bin-dir", _debian(tmp_path))  # fmt: skip
    assert two.returncode == 1 and "cannot be told" in two.stderr, two.stderr
    assert "cni_hostport" not in _tables(node)
    done = _pmctl(node, tmp_path, "check", "--repair", "--cni-bin-dir", _v191(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "honours the key" in done.stdout + done.stderr
    assert "v191-bin/portmap" in done.stdout + done.stderr
    upstream.run(V191, "CHECK", node, "nft1", conf, check=True)
    assert chain_name("podman", "nft1") not in rp.save(node, 4, mode)
