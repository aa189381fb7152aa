"""A node whose runtime keeps libcni's cache where portmapctl does not read it.

cri-dockerd (and k3s --docker, which embeds it) gives libcni `/var/lib/cni/cache`
(its --cni-cache-dir default; docs/troubleshooting.md has where each runtime keeps
it), below the `/var/lib/cni` portmapctl reads. Its live pods' entries are then in
`/var/lib/cni/cache/results`, while `/var/lib/cni/results` may hold another runtime's
(podman's, or one left from before a migration). Here the real plugin makes the
chains, and `write_cni_cache` writes the entries libcni would, in a private tree laid
out as the node's /var/lib/cni."""

from __future__ import annotations

import json
from pathlib import Path

import pmctl
import realplugin as rp

NETWORK = "cbr0"
POD = "d0" * 32  # cri-dockerd's sandbox: cached in /var/lib/cni/cache only
OTHER = "e0" * 32  # a podman container: cached in /var/lib/cni
GONE = "f0" * 32  # cached nowhere: really stale


def _node(host_ns: str, root: Path) -> Path:
    """The three containers' chains, made by the real plugin; the cache tree's
    /var/lib/cni (POD's entry in its cache/, OTHER's in its own results/)."""
    var_lib_cni = root / "var" / "lib" / "cni"
    for n, cid in enumerate((POD, OTHER, GONE)):
        ips = [f"10.244.1.{n + 2}/24"]
        ports = [{"hostPort": 8080 + n, "containerPort": 80, "protocol": "tcp"}]
        conf = rp.plugin_conf(NETWORK, ips, ports)
        added = rp.run_plugin("ADD", host_ns, cid, conf)
        assert added.returncode == 0, added.stdout + added.stderr
        where = {POD: var_lib_cni / "cache", OTHER: var_lib_cni}.get(cid)
        if where is not None:
            rp.write_cni_cache(where, NETWORK, cid, "eth0", conf, ports, ips)
    return var_lib_cni


def _warned(stderr: str, var_lib_cni: Path) -> list[str]:
    return [
        line
        for line in stderr.splitlines()
        if line.startswith("portmapctl: warning: ") and f"{var_lib_cni}/cache/results" in line
    ]


def test_gc_keeps_the_pods_of_a_runtime_cache_it_does_not_read(
    host_ns: str, tmp_path: Path
) -> None:
    """gc reading /var/lib/cni alone took the cri-dockerd pod for stale and removed
    its chain, without a word: its host port no longer forwarded, and nothing re-made
    it (check called it stale, not missing)."""
    var_lib_cni = _node(host_ns, tmp_path)
    args = ["--netns", host_ns, "--cni-cache-dir", str(var_lib_cni)]

    gc = pmctl.run(["gc", "--yes", "--min-age", "0", "-o", "json", *args])
    assert gc.returncode == 0, gc.stdout + gc.stderr
    removed = {row["container_id"] for row in json.loads(gc.stdout)["removed"]}
    assert removed == {GONE}
    rules = rp.save(host_ns, 4)
    assert "--dport 8080" in rules and "--dport 8081" in rules
    assert "--dport 8082" not in rules
    (line,) = _warned(gc.stderr, var_lib_cni)
    assert "cri-dockerd" in line and "--cni-cache-dir" in line, line

    # list and check call the pod stale (its config is not read): they say why, once.
    for command in (["list"], ["check"]):
        done = pmctl.run([*command, *args])
        assert len(_warned(done.stderr, var_lib_cni)) == 1, done.stderr

    # Given both directories, as the warning says, nothing is left to warn of.
    both = [*args, "--cni-cache-dir", str(var_lib_cni / "cache")]
    healthy = pmctl.run(["check", *both])
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert healthy.stderr == ""


def test_gc_with_only_a_runtime_cache_it_does_not_read_names_it(
    host_ns: str, tmp_path: Path
) -> None:
    """A cri-dockerd-only node: no /var/lib/cni/results at all. gc refuses (nothing
    it reads says what is live), and its one line says where the cache is."""
    var_lib_cni = _node(host_ns, tmp_path)
    (var_lib_cni / "results" / f"{NETWORK}-{OTHER}-eth0").unlink()
    (var_lib_cni / "results").rmdir()
    before = rp.nat_rules(rp.save(host_ns, 4))

    gc = pmctl.run(["gc", "--yes", "--min-age", "0", "--netns", host_ns,
                    "--cni-cache-dir", str(var_lib_cni)])  # fmt: skip
    pmctl.assert_error(gc, 2, "nothing says which containers are live", f"{var_lib_cni}/cache")
    assert rp.nat_rules(rp.save(host_ns, 4)) == before


def test_a_runtime_cache_given_through_another_spelling_is_read_not_warned_of(
    host_ns: str, tmp_path: Path
) -> None:
    """The node's /var/lib/cni a symlink to where the disk is (/data/cni), and
    cri-dockerd's cache given as its config names it, through the real path: both
    directories were read (check healthy), yet every command warned, every run, that
    /var/lib/cni/cache/results was not read, and told to give it a third time (the
    unread cache was told from the ones read by normpath, which follows no symlink)."""
    data_cni = _node(host_ns, tmp_path / "data")
    var_lib = tmp_path / "var" / "lib"
    var_lib.mkdir(parents=True)
    (var_lib / "cni").symlink_to(data_cni)
    given = ["--netns", host_ns, "--cni-cache-dir", str(var_lib / "cni"),
             "--cni-cache-dir", str(data_cni / "cache")]  # fmt: skip

    check = pmctl.run(["check", *given])
    assert "cri-dockerd" not in check.stderr, check.stderr
    assert "stale" in check.stdout  # GONE, and only it: POD's entry was read
    assert f"{POD[:12]}" not in check.stdout, check.stdout
    gc = pmctl.run(["gc", "--yes", "--min-age", "0", "-o", "json", *given])
    assert gc.returncode == 0 and gc.stderr == "", gc.stderr
    assert {row["container_id"] for row in json.loads(gc.stdout)["removed"]} == {GONE}
