"""Which backend a container cached `"backend": "nftables"` is in, where nothing of it
is left, told by the node's portmap binaries (--cni-bin-dir; host/cni_bins.py): the
real plugins copied into a bin directory of the test's own (conftest points the
default at none, so the machine's /usr/lib/cni is never read unasked)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

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


def _pmctl(ns: str, cache: Path, *args: str, env: Optional[Dict[str, str]] = None):
    return pmctl.run([*args, "--netns", ns, "--cni-cache-dir", str(cache / "cache")], env=env)


def _defaults(folder: str) -> Dict[str, str]:
    """The environment of a run whose DEFAULT bin directories are `folder` alone (the
    seam conftest points at none): a guess of where the runtime's plugins are."""
    return {"PORTMAPCTL_CNI_BIN_DEFAULTS": folder}


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
        assert "ignores the key" in one.stderr, one.stderr
        assert f"check --repair --netns {node}" in one.stderr, one.stderr
    assert "cni_hostport" not in _tables(node)
    repaired = _pmctl(node, tmp_path, "check", "--repair", *bins)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "cni_hostport" not in _tables(node)
    assert chain_name("podman", "deb1") in rp.save(node, 4, mode)
    assert all(c.returncode == 0 for c in rp.run_check(node, "deb1", conf, mode=mode))


_NFT1_MAPPING = ("--network", "podman", "--container", "nft1", "--ip", "10.88.0.42/16",
                 "-p", "8042:80")  # fmt: skip


def _v191_tables_deleted(node: str, cache: Path, mode: rp.Mode) -> Dict[str, Any]:
    """Hole (b)'s node: nft1 added by v1.9.1 under `"backend": "nftables"` (cached so),
    then the plugin's tables deleted, beside kube-proxy's iptables nat table."""
    conf = _cached(cache, "nft1", upstream.nft_conf("podman", ["10.88.0.42/16"], [_pm(8042, 80)]))
    upstream.run(V191, "ADD", node, "nft1", conf, check=True)
    rp.iptables(node, ["-t", "nat", "-N", "KUBE-SERVICES"], mode=mode)
    for family in ("ip", "ip6"):
        if f"table {family} cni_hostport" in _tables(node):
            upstream.nft(node, "delete", "table", family, "cni_hostport")
    return conf


def _repair_line_says_what_settles_it(stderr: str, looked_in: str) -> None:
    """The repair's own line for a container left in doubt (an operator may read only
    it: a cron job's mail, a log grep for "could not repair") names the directories
    looked in and `--cni-bin-dir DIR`, as the check's warning does."""
    line = next(x for x in stderr.splitlines() if "could not repair" in x)
    assert "cannot be told" in line, line
    assert looked_in in line and "`--cni-bin-dir DIR`" in line, line


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
    conf = _v191_tables_deleted(node, tmp_path, mode)
    doubted = _pmctl(node, tmp_path, "check", "--repair")
    assert doubted.returncode == 1 and "cannot be told" in doubted.stderr, doubted.stderr
    # The binaries were looked for and settled nothing: the warning says where, and what
    # settles it.
    assert "no portmap binary is in the default CNI bin directories (/nonexistent/" in (
        doubted.stderr
    ), doubted.stderr
    assert "`--cni-bin-dir DIR`" in doubted.stderr, doubted.stderr
    _repair_line_says_what_settles_it(doubted.stderr, "/nonexistent/")
    two = _pmctl(node, tmp_path, "check", "--repair", "--cni-bin-dir", _v191(tmp_path),
                 "--cni-bin-dir", _debian(tmp_path))  # fmt: skip
    assert two.returncode == 1 and "cannot be told" in two.stderr, two.stderr
    assert "cni_hostport" not in _tables(node)
    bins = ("--cni-bin-dir", _v191(tmp_path))
    if mode == "nft":  # (one mapping of it: as the node's check judges it, by its key)
        one = _pmctl(node, tmp_path, "check", "--repair", *_NFT1_MAPPING, *bins)
        assert one.returncode == 0, one.stdout + one.stderr
        upstream.run(V191, "CHECK", node, "nft1", conf, check=True)
        upstream.nft(node, "delete", "table", "ip", "cni_hostport")
    done = _pmctl(node, tmp_path, "check", "--repair", *bins)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "honours the key" in done.stdout + done.stderr
    assert "v191-bin/portmap" in done.stdout + done.stderr
    upstream.run(V191, "CHECK", node, "nft1", conf, check=True)
    assert chain_name("podman", "nft1") not in rp.save(node, 4, mode)


def _debian_keyed(node: str, cache: Path, cid: str, ip: str, port: int) -> Dict[str, Any]:
    """Debian's 1.1.1 ADD of podman/`cid` under `"backend": "nftables"` (its chain in
    iptables), cached so."""
    conf = rp.plugin_conf("podman", [ip], [_pm(port, 80)])
    conf = _cached(cache, cid, {**conf, "backend": "nftables"})
    rp.run_plugin("ADD", node, cid, conf, check=True)
    return conf


def _lose(node: str, cid: str) -> None:
    """A firewall took podman/`cid`'s chain and its CNI-HOSTPORT-DNAT rule."""
    chain = chain_name("podman", cid)
    rule = next(
        line for line in rp.save(node, 4).splitlines()
        if line.startswith("-A CNI-HOSTPORT-DNAT") and chain in line
    )  # fmt: skip
    rp.iptables(node, ["-t", "nat", "-D", *shlex.split(rule)[1:]])
    rp.iptables(node, ["-t", "nat", "-F", chain])
    rp.iptables(node, ["-t", "nat", "-X", chain])


def test_binaries_without_the_backend_never_outweigh_a_v16_plugins_rules(
    node: str, tmp_path: Path
) -> None:
    """deb1 added by Debian's 1.1.1 under the key, then lost (chain and entry rule);
    nft2 added by v1.9.1 under the key, its rules in the plugin's table. Only Debian's
    binary given (a second runtime's v1.9.1 not named): the binaries say "ignored", the
    node's rules say a plugin here honours the key. Judged by the rules, as without
    binaries (deb1 repaired in nftables), with a warning that says so."""
    _debian_keyed(node, tmp_path, "deb1", "10.88.0.51/16", 8051)
    _lose(node, "deb1")
    nft2 = upstream.nft_conf("podman", ["10.88.0.52/16"], [_pm(8052, 80)])
    upstream.run(V191, "ADD", node, "nft2", _cached(tmp_path, "nft2", nft2), check=True)
    done = _pmctl(node, tmp_path, "check", "-o", "json", "--cni-bin-dir", _debian(tmp_path))
    assert done.returncode == 1, done.stdout + done.stderr
    said = json.loads(done.stdout)
    assert "judged by them, not by the binaries" in done.stderr, done.stderr
    kinds = {p["kind"] for p in said["problems"] if p["container_id"] == "deb1"}
    assert kinds and all(k.startswith("nft-") for k in kinds), said
    assert chain_name("podman", "deb1") not in rp.save(node, 4)


def test_binaries_with_the_backend_leave_in_doubt_beside_containers_kept_in_iptables(
    node: str, tmp_path: Path
) -> None:
    """deb1 lost, deb2 whole, both added by Debian's 1.1.1 under the key (kept in
    iptables: the key ignored). v1.9.1's binary given (the plugin upgraded since?):
    which plugin added deb1 cannot be told, so it stays in doubt, nothing written, its
    warning naming the binary."""
    _debian_keyed(node, tmp_path, "deb1", "10.88.0.53/16", 8053)
    _lose(node, "deb1")
    _debian_keyed(node, tmp_path, "deb2", "10.88.0.54/16", 8054)
    before = rp.save(node, 4).split("\n", 1)[1]
    done = _pmctl(node, tmp_path, "check", "--repair", "--cni-bin-dir", _v191(tmp_path))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "cannot be told" in done.stderr and "v191-bin/portmap" in done.stderr, done.stderr
    assert "an upgrade since?" in done.stderr, done.stderr
    assert "cni_hostport" not in _tables(node)
    assert rp.nat_rules(rp.save(node, 4)) == rp.nat_rules(before)


@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_a_portmap_of_another_package_in_the_default_dirs_never_decides_a_write(
    node: str, tmp_path: Path, mode: rp.Mode
) -> None:
    """Hole (b) where the runtime's plugin dir (v1.9.1: GKE's /home/kubernetes/bin,
    microk8s' snap, OpenShift's /var/lib/cni/bin) is not among the defaults and
    Debian's 1.1.1 (a podman dependency's /usr/lib/cni/portmap) is: that binary
    decided alone, and `check --repair` wrote nft1 into iptables, where v1.9.1 never
    looks. The defaults are a guess: nft1 stays in doubt, nothing written, the warning
    naming the directory looked in and --cni-bin-dir; one mapping of it stops (exit
    3). Stated (PORTMAPCTL_CNI_BIN_DIR, as --cni-bin-dir), v1.9.1's binary decides."""
    conf = _v191_tables_deleted(node, tmp_path, mode)
    before = rp.save(node, 4, mode).split("\n", 1)[1]
    guess = _defaults(_debian(tmp_path))
    done = _pmctl(node, tmp_path, "check", "--repair", env=guess)
    assert done.returncode == 1 and "cannot be told" in done.stderr, done.stdout + done.stderr
    assert "debian-bin/portmap ignores the key" in done.stderr, done.stderr
    assert f"default CNI bin directories ({_debian(tmp_path)})" in done.stderr, done.stderr
    assert "`--cni-bin-dir DIR`" in done.stderr, done.stderr
    _repair_line_says_what_settles_it(done.stderr, _debian(tmp_path))
    assert chain_name("podman", "nft1") not in rp.save(node, 4, mode)
    assert rp.nat_rules(rp.save(node, 4, mode)) == rp.nat_rules(before)
    assert "cni_hostport" not in _tables(node)
    for command in (("add",), ("check", "--repair")):
        one = _pmctl(node, tmp_path, *command, *_NFT1_MAPPING, env=guess)
        assert one.returncode == 3, one.stdout + one.stderr
        assert "`--cni-bin-dir DIR`" in one.stderr, one.stderr
    assert chain_name("podman", "nft1") not in rp.save(node, 4, mode)
    assert "cni_hostport" not in _tables(node)
    stated = {**guess, "PORTMAPCTL_CNI_BIN_DIR": _v191(tmp_path)}
    repaired = _pmctl(node, tmp_path, "check", "--repair", env=stated)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    upstream.run(V191, "CHECK", node, "nft1", conf, check=True)
    assert chain_name("podman", "nft1") not in rp.save(node, 4, mode)


def test_default_binaries_against_the_weak_sign_put_in_doubt_not_decide(
    node: str, tmp_path: Path
) -> None:
    """Hole (a) on iptables-nft (`nft flush ruleset` took iptables' nat table too: no
    nat table, the weak sign read as a v1.6+ plugin, deb1 judged by its key): Debian's
    binary only in the default directories says the opposite, so deb1 is in doubt,
    nothing written in either backend (before the binaries it was written into
    nftables, where that plugin never looks; decided by a guess, into iptables).
    v1.9.1's there agrees with the rules: as before them, repaired in nftables."""
    conf = rp.plugin_conf("podman", ["10.88.0.41/16"], [_pm(8041, 80)])
    conf = _cached(tmp_path, "deb1", {**conf, "backend": "nftables"})
    rp.run_plugin("ADD", node, "deb1", conf, mode="nft", check=True)
    upstream.nft(node, "flush", "ruleset")
    guess = _defaults(_debian(tmp_path))
    for args in (("check", "--repair"), ("check", "-o", "json")):
        done = _pmctl(node, tmp_path, *args, env=guess)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "cannot be told" in done.stderr, done.stderr
        assert "no iptables nat table is here" in done.stderr, done.stderr
        assert "`--cni-bin-dir DIR`" in done.stderr, done.stderr
    said = json.loads(done.stdout)
    assert all(not p["fix"] for p in said["problems"] if p["container_id"] == "deb1"), said
    assert "cni_hostport" not in _tables(node)
    assert chain_name("podman", "deb1") not in rp.save(node, 4, "nft")
    mapping = ("--network", "podman", "--container", "deb1", "--ip", "10.88.0.41/16",
               "-p", "8041:80")  # fmt: skip
    one = _pmctl(node, tmp_path, "add", *mapping, env=guess)
    assert one.returncode == 3 and "`--cni-bin-dir DIR`" in one.stderr, one.stderr
    assert "cni_hostport" not in _tables(node)
    # Agreeing with the rules: as without binaries (its key, nftables).
    agree = _pmctl(node, tmp_path, "check", "--repair", env=_defaults(_v191(tmp_path)))
    assert agree.returncode == 0, agree.stdout + agree.stderr
    assert "cni_hostport" in _tables(node)


def test_binaries_without_the_backend_settle_where_iptables_cannot_be_read(
    node: str, tmp_path: Path
) -> None:
    """Under --backend nftables, which reads iptables only to follow the plugin, by a
    portmapctl that cannot run iptables (a DaemonSet image without its tools): deb1,
    Debian's 1.1.1 under the key (its chain in iptables), nothing of it in nftables. Whether its chain is in
    iptables cannot be looked at, so it was in doubt on every run, whatever binary
    was given. Debian's binary stated, its plugin keeps it in iptables whatever that
    iptables holds: judged there (not this backend's: nothing written, not checked),
    the note naming the binary and saying nothing is repaired there. v1.9.1's stated,
    or Debian's in the defaults alone, settle nothing (a plugin upgraded since may have
    left its chain in iptables; a guess): in doubt as before, nothing written."""
    _debian_keyed(node, tmp_path, "deb1", "10.88.0.55/16", 8055)
    hide = [os.path.realpath(shutil.which(tool, path=rp.SYSTEM_PATH) or tool)
            for tool in ("iptables-nft", "iptables-legacy")]  # fmt: skip
    told = ["--netns", node, "--cni-cache-dir", str(tmp_path / "cache"), "--backend", "nftables"]
    before = rp.nat_rules(rp.save(node, 4))
    debian = ["--cni-bin-dir", _debian(tmp_path)]
    done = pmctl.run(["check", "--repair", *told, *debian], hide=hide)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cannot be told" not in done.stderr, done.stderr
    assert "debian-bin/portmap ignores the key" in done.stderr, done.stderr
    assert "judged, and repaired, in iptables" not in done.stderr, done.stderr
    assert "not checked" in done.stderr, done.stderr
    mapping = ["--network", "podman", "--container", "deb1", "--ip", "10.88.0.55/16",
               "-p", "8055:80"]  # fmt: skip
    one = pmctl.run(["add", *mapping, *told, *debian], hide=hide)
    pmctl.assert_error(one, 3, "podman/deb1", "ignores the key", "--backend nftables neither")
    assert "which does" not in one.stderr, one.stderr
    for given, env in (
        (["--cni-bin-dir", _v191(tmp_path)], None),
        ([], _defaults(_debian(tmp_path))),
    ):
        doubted = pmctl.run(["check", "--repair", *told, *given], hide=hide, env=env)
        assert doubted.returncode == 1, doubted.stdout + doubted.stderr
        assert "which cannot be read" in doubted.stderr, doubted.stderr
    assert "cni_hostport" not in _tables(node)
    assert rp.nat_rules(rp.save(node, 4)) == before


def test_binaries_never_settle_a_chain_in_iptables_beside_a_flushed_table(
    node: str, tmp_path: Path
) -> None:
    """deb1 added by Debian's 1.1.1 under the key (its chain in iptables), nft2 by
    v1.9.1 (its rules in the plugin's table), then `nft flush table ip cni_hostport`:
    the table says a plugin here honoured the key, deb1's chain that one ignored it.
    Neither binary overrules those rules: deb1 stays in doubt with either given,
    nothing written for it in either backend."""
    _debian_keyed(node, tmp_path, "deb1", "10.88.0.56/16", 8056)
    nft2 = upstream.nft_conf("podman", ["10.88.0.57/16"], [_pm(8057, 80)])
    upstream.run(V191, "ADD", node, "nft2", _cached(tmp_path, "nft2", nft2), check=True)
    upstream.nft(node, "flush", "table", "ip", "cni_hostport")
    before = (rp.nat_rules(rp.save(node, 4)), upstream.ruleset_text(node))
    for given in (_debian(tmp_path), _v191(tmp_path)):
        done = _pmctl(node, tmp_path, "check", "--repair", "--cni-bin-dir", given)
        assert done.returncode == 1, done.stdout + done.stderr
        doubt = next(x for x in done.stderr.splitlines() if "warning: podman/deb1:" in x)
        assert "is in iptables" in doubt and "cannot be told" in doubt, done.stderr
        assert (rp.nat_rules(rp.save(node, 4)), upstream.ruleset_text(node)) == before
        # nft2 stays in doubt too (deb1's chain in iptables beside it): Debian's binary
        # meeting the table's word said nft2 was "judged by them, not by the binaries".
        differ = [x for x in done.stderr.splitlines() if "podman/nft2: nothing of it is" in x]
        assert len(differ) == (given == _debian(tmp_path)), done.stderr
        assert all("judged by them" not in x and "stays in doubt" in x for x in differ), differ
