"""Field cases of issue 12 against the real plugin and real iptables, in throwaway
namespaces: Multus caches, zombie cache entries, the portMappings capability, chains
only named like the plugin's, a container on two networks, a container coming back
while its old chain waits out --min-age, and cache entries 0.1 could not read.

Everything goes through the command line (tests/pmctl.run), as a user runs it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Dict, Iterator, List, Sequence

import pytest
import realplugin as rp
from gc_helpers import Node_, backdate
from json_schemas import validated
from pmctl import assert_error, ok, run, run_on_terminal

from portmapctl.iptables.chains import chain_name

PORT_A = [{"hostPort": 8081, "containerPort": 80, "protocol": "tcp"}]
PORT_B = [{"hostPort": 8082, "containerPort": 80, "protocol": "tcp"}]


class Lab:
    """The host namespace (nf_tables), its CNI cache directory, the plugin's configs."""

    def __init__(self, host_ns: str, cache: Path) -> None:
        self.ns, self.cache = host_ns, cache
        self.confs: Dict[str, dict] = {}

    def add(self, network: str, cid: str, ip: str, ports: List[dict], cache: bool = True,
            netns: str | None = None, cache_dir: Path | None = None) -> dict:  # fmt: skip
        conf = rp.plugin_conf(network, [ip], ports)
        rp.run_plugin("ADD", self.ns, cid, conf, mode="nft", check=True)
        self.confs[f"{network}/{cid}"] = conf
        if cache:
            rp.write_cni_cache(
                cache_dir or self.cache, network, cid, "eth0", conf, ports, [ip], netns=netns
            )
        return conf

    def pm(self, command: str, *args: str, dirs: Sequence[Path] = (), own_mounts: bool = False,
           env: dict | None = None):  # fmt: skip
        argv = [command, "--netns", self.ns, "--iptables", "nft"]
        for d in dirs or (self.cache,):
            argv += ["--cni-cache-dir", str(d)]
        return run([*argv, *args], own_mounts=own_mounts, env=env)

    def json(self, command: str, *args: str, dirs: Sequence[Path] = (), codes=(0,),
             env: dict | None = None) -> dict:  # fmt: skip
        done = self.pm(command, *args, "-o", "json", dirs=dirs, env=env)
        assert done.returncode in codes, done.stdout + done.stderr
        return json.loads(done.stdout)

    def rules(self, family: int = 4) -> List[str]:
        return rp.nat_rules(rp.save(self.ns, family, "nft"))

    def ipt(self, *args: str) -> None:
        rp.iptables(self.ns, ["-t", "nat", *args], family=4, mode="nft")

    def plugin_check(self, network: str, cid: str) -> None:
        for done in rp.run_check(self.ns, cid, self.confs[f"{network}/{cid}"], mode="nft"):
            assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def lab(host_ns, tmp_path) -> Lab:
    if not rp.mode_available("nft")[0]:
        pytest.skip(rp.mode_available("nft")[1])
    cache = tmp_path / "cni"
    (cache / "results").mkdir(parents=True)
    return Lab(host_ns, cache)


def statuses(listed: dict, cid: str) -> set:
    return {s for m in listed["mappings"] if m["container_id"] == cid for s in m["status"]}


def chain_lines(rules: List[str], chain: str) -> List[str]:
    return [r for r in rules if chain in r]


# --- 1. Multus ------------------------------------------------------------------------------


def _multus_cache(lab: Lab, cid: str, ip: str) -> None:
    """What a Multus pod leaves (multus-cni pkg/multus/multus.go): the runtime's libcni
    caches the outer multus-cni-network (a `multus` config, no portmap of its own) in
    DIR/results; Multus gives libcni DIR/multus (its cniDir) as cache for the delegate
    network, whose portmap made the chain; and keeps its delegate list in
    DIR/multus/<containerID>."""
    delegate = lab.confs[f"k8s-pod-network/{cid}"]
    rp.write_cni_cache(lab.cache / "multus", "k8s-pod-network", cid, "eth0", delegate,
                       PORT_A, [ip])  # fmt: skip
    outer = rp.write_cni_cache(lab.cache, "multus-cni-network", cid, "eth0", delegate,
                               PORT_A, [ip])  # fmt: skip
    doc = json.loads(outer.read_text())
    doc["config"] = base64.b64encode(
        json.dumps(
            {
                "cniVersion": "0.4.0",
                "name": "multus-cni-network",
                "type": "multus",
                "capabilities": {"portMappings": True},
                "kubeconfig": "/etc/cni/net.d/multus.d/multus.kubeconfig",
                "delegates": [{"cniVersion": "0.4.0", "name": "k8s-pod-network"}],
            }
        ).encode()
    ).decode()
    outer.write_text(json.dumps(doc))
    (lab.cache / "multus" / cid).write_text(json.dumps([{"name": "k8s-pod-network"}]))


def test_multus_pods_are_live_and_healthy_from_both_cache_dirs(lab: Lab):
    """0.1 read only DIR/results: every Multus pod's chain was stale, and gc removed
    it after --min-age on every node."""
    lab.add("k8s-pod-network", "pod1", "10.88.0.11/16", PORT_A, cache=False)
    _multus_cache(lab, "pod1", "10.88.0.11/16")
    lab.add("k8s-pod-network", "gone1", "10.88.0.12/16", PORT_B, cache=False)  # stale
    both = (lab.cache, lab.cache / "multus")

    listed = lab.json("list", dirs=both)
    assert statuses(listed, "pod1") == {"ok"}
    assert statuses(listed, "gone1") == {"stale"}
    doc = lab.json("check", dirs=both, codes=(1,))
    assert [(p["kind"], p["container_id"]) for p in doc["problems"]] == [("stale", "gone1")]

    # Liveness is by container ID over every directory: the outer entry alone keeps it.
    for dirs in ((lab.cache,), both):
        doc = lab.json("gc", "--yes", "--min-age", "0", dirs=dirs)
        assert [r["container_id"] for r in doc["removed"]] in ([], ["gone1"])
    assert chain_lines(lab.rules(), chain_name("k8s-pod-network", "pod1"))
    assert not chain_lines(lab.rules(), chain_name("k8s-pod-network", "gone1"))
    lab.plugin_check("k8s-pod-network", "pod1")


# --- 2. zombies ----------------------------------------------------------------------------


def _zombie_lab(lab: Lab) -> str:
    """`keep`'s entry names a namespace that exists; `gone`'s one in /run/netns that
    does not (its runtime forgot it without a DEL)."""
    lab.add("mynet", "keep", "10.88.0.21/16", PORT_A)
    gone_ns = f"/run/netns/pmt-gone-{uuid.uuid4().hex[:8]}"
    lab.add("mynet", "gone", "10.88.0.22/16", PORT_B, netns=gone_ns)
    return gone_ns


def _flush_and_repair_keeping_zombies(lab: Lab, live: str, zombies: List[tuple]) -> None:
    """The nat table flushed, then check --repair: the live container's chain (on
    mynet) comes back as the plugin wrote it, no zombie's does (exit 1: they remain)."""
    lab.ipt("-F")
    lab.ipt("-X")
    done = lab.pm("check", "--repair")
    assert done.returncode == 1 and "zombie" in done.stdout, done.stdout + done.stderr
    rules = lab.rules()
    assert chain_lines(rules, chain_name("mynet", live))
    for network, cid in zombies:
        assert not chain_lines(rules, chain_name(network, cid)), f"re-created {cid}'s chain"
    lab.plugin_check("mynet", live)


def test_zombie_entry_is_listed_reported_and_never_repaired(lab: Lab):
    gone_ns = _zombie_lab(lab)
    listed = lab.json("list")
    assert statuses(listed, "gone") == {"zombie"} and statuses(listed, "keep") == {"ok"}
    doc = lab.json("check", codes=(1,))
    [problem] = doc["problems"]
    assert (problem["kind"], problem["container_id"]) == ("zombie", "gone")
    assert gone_ns in problem["detail"] and "--netns-liveness" in problem["fix"]

    _flush_and_repair_keeping_zombies(lab, "keep", [("mynet", "gone")])


def test_gc_counts_zombies_as_live_unless_netns_liveness(lab: Lab):
    _zombie_lab(lab)
    before = lab.rules()
    doc = lab.json("gc", "--yes", "--min-age", "0")
    assert doc["removed"] == [] and lab.rules() == before
    doc = lab.json("gc", "--yes", "--min-age", "0", "--netns-liveness")
    assert [r["container_id"] for r in doc["removed"]] == ["gone"]
    gone = chain_name("mynet", "gone")
    assert set(before) - set(lab.rules()) == set(chain_lines(before, gone))
    lab.plugin_check("mynet", "keep")


def test_a_plain_gc_between_netns_liveness_runs_keeps_the_zombies_clock(lab: Lab):
    """A cron's plain gc (a zombie counts as live) between two `gc --netns-liveness`
    runs: the zombie's --min-age clock goes on. Before, each plain run forgot the
    sighting, the second run found the chain 0 s old again, and with a plain gc more
    often than --min-age the zombie was never removed."""
    _zombie_lab(lab)
    before = lab.rules()
    doc = lab.json("gc", "--yes", "--min-age", "3s", "--netns-liveness")
    assert doc["removed"] == [] and [c["container_id"] for c in doc["pending"]] == ["gone"]
    time.sleep(1.5)
    assert lab.json("gc", "--yes", "--min-age", "3s")["removed"] == []
    time.sleep(1.7)
    doc = lab.json("gc", "--yes", "--min-age", "3s", "--netns-liveness")
    assert [c["container_id"] for c in doc["removed"]] == ["gone"]
    assert set(before) - set(lab.rules()) == set(chain_lines(before, chain_name("mynet", "gone")))
    lab.plugin_check("mynet", "keep")


def test_a_plain_gc_forgets_a_sighting_once_the_container_is_live_again(lab: Lab):
    """The clock kept is only a zombie's: once its namespace is there again (a live
    container), a plain run forgets the sighting as before, and the next
    --netns-liveness run that finds it gone starts from 0 s."""
    gone_ns = _zombie_lab(lab)
    lab.json("gc", "--yes", "--min-age", "3s", "--netns-liveness")
    name = os.path.basename(gone_ns)
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        time.sleep(3.2)
        assert lab.json("gc", "--yes", "--min-age", "3s")["removed"] == []
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True)
    doc = lab.json("gc", "--yes", "--min-age", "3s", "--netns-liveness")
    assert doc["removed"] == [] and [c["container_id"] for c in doc["pending"]] == ["gone"]


def test_netns_liveness_is_refused_where_the_namespaces_are_not_visible(lab: Lab, tmp_path):
    """As in a container without the host's /run/netns (a mount namespace of its own):
    an empty namespaces directory would make every entry look like a zombie. Exit 3
    (environment), one line."""
    hidden = tmp_path / "netns"
    hidden.mkdir()
    lab.add("mynet", "elsewhere", "10.88.0.23/16", PORT_A, netns=str(hidden / "cni-1"))
    before = lab.rules()
    assert_error(
        lab.pm("gc", "--yes", "--min-age", "0", "--netns-liveness", own_mounts=True), 3,
        "--netns-liveness", "not visible",
    )  # fmt: skip
    assert lab.rules() == before
    # Without the option, nothing is judged: the entry is an ordinary live one.
    done = lab.pm("list", "-o", "json", own_mounts=True)
    assert done.returncode == 0, done.stderr
    assert statuses(json.loads(done.stdout), "elsewhere") == {"ok"}


def test_after_a_reboot_the_dead_containers_entries_are_zombies_on_the_host(lab: Lab, tmp_path):
    """A node just rebooted: the cache on disk, written before this boot, names
    namespaces in a directory that /run no longer holds (missing, or made again and
    still empty), and the rules are gone with the boot. Seen from the host's mount
    namespace no namespace outlives a boot: the entries are zombies, check --repair does not bring their chains back (before, it
    re-created both: dead containers' rules taking host ports that new containers would
    claim), and gc --netns-liveness takes a restored one away. The live container's
    chain is repaired as usual."""
    lab.add("mynet", "keep", "10.88.0.24/16", PORT_A)
    empty = tmp_path / "run-after-boot" / "netns"
    empty.mkdir(parents=True)
    lab.add("mynet", "dead1", "10.88.0.25/16", PORT_B, netns=str(empty / "cni-1"))
    missing = tmp_path / "run-after-boot" / "never-made" / "netns"
    port_c = [{"hostPort": 8083, "containerPort": 80, "protocol": "tcp"}]
    lab.add("other", "dead2", "10.88.0.26/16", port_c, netns=str(missing / "cni-2"))
    for entry in ("mynet-dead1-eth0", "other-dead2-eth0"):
        _written_before_this_boot(lab.cache / "results" / entry)
    listed = lab.json("list")
    assert statuses(listed, "dead1") == {"zombie"} and statuses(listed, "dead2") == {"zombie"}
    assert statuses(listed, "keep") == {"ok"}

    _flush_and_repair_keeping_zombies(lab, "keep", [("mynet", "dead1"), ("other", "dead2")])

    # Rules restored from a saved ruleset (iptables-persistent): gc --netns-liveness
    # removes the dead containers' chains, keeps the live one's.
    for cid in ("dead1", "dead2"):
        network = "mynet" if cid == "dead1" else "other"
        rp.run_plugin("ADD", lab.ns, cid, lab.confs[f"{network}/{cid}"], mode="nft", check=True)
    doc = lab.json("gc", "--yes", "--min-age", "0", "--netns-liveness")
    assert sorted(r["container_id"] for r in doc["removed"]) == ["dead1", "dead2"]
    assert chain_lines(lab.rules(), chain_name("mynet", "keep"))
    lab.plugin_check("mynet", "keep")


def test_after_a_reboot_an_entrys_reused_proc_pid_is_no_live_container(lab: Lab):
    """A runtime that caches /proc/PID/ns/net (cri-dockerd) leaves, after a reboot,
    entries whose PIDs this boot gave to other processes: the namespace there is
    theirs. Before, the entry counted as present and check --repair wrote the dead
    container's chain back, its host port with it."""
    lab.add("mynet", "keep", "10.88.0.24/16", PORT_A)
    other = subprocess.Popen(["sleep", "300"])  # the process the old PID now names
    try:
        lab.add("mynet", "shim", "10.88.0.25/16", PORT_B, netns=f"/proc/{other.pid}/ns/net")
        _written_before_this_boot(lab.cache / "results" / "mynet-shim-eth0")
        assert statuses(lab.json("list"), "shim") == {"zombie"}
        _flush_and_repair_keeping_zombies(lab, "keep", [("mynet", "shim")])
    finally:
        other.kill()
        other.wait()


def test_a_namespace_deleted_this_boot_is_a_zombie_though_the_cache_names_no_other(lab: Lab):
    """A container's namespace made as `ip netns add` and podman make them
    (/run/netns/NAME), the plugin's ADD given it, then deleted this boot with the entry
    left behind. It was the one namespace the cache names, so /run/netns showed none of
    the cache's: before, the entry was unseen, listed ok, check said healthy, check
    --repair after a flush re-created the dead container's chain and gc
    --netns-liveness was refused. Seen from the host's mount namespace, nothing is at
    its path in any mount namespace a process is in: a zombie everywhere."""
    ctr = rp.create_netns("pmt-del")
    path = f"/run/netns/{ctr}"
    try:
        conf = rp.plugin_conf("mynet", ["10.88.0.41/16"], PORT_A)
        rp.run_plugin("ADD", lab.ns, "deleted", conf, mode="nft", container_ns=path, check=True)
        lab.confs["mynet/deleted"] = conf
        rp.write_cni_cache(lab.cache, "mynet", "deleted", "eth0", conf, PORT_A,
                           ["10.88.0.41/16"], netns=path)  # fmt: skip
        assert statuses(lab.json("list"), "deleted") == {"ok"}  # alive: nothing judged
    finally:
        rp.delete_netns(ctr)
    assert statuses(lab.json("list"), "deleted") == {"zombie"}
    # Without CAP_SYS_PTRACE not every process's mounts can be looked at (/proc's
    # hidepid leaves processes out): nothing is judged, the safe side.
    argv = ["list", "--netns", lab.ns, "--iptables", "nft", "--cni-cache-dir", str(lab.cache)]
    done = subprocess.run(
        ["setpriv", "--bounding-set=-sys_ptrace", "--inh-caps=-sys_ptrace",
         sys.executable, "-m", "portmapctl", *argv, "-o", "json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert statuses(json.loads(done.stdout), "deleted") == {"ok"}
    doc = lab.json("check", codes=(1,))
    assert [(p["kind"], p["container_id"]) for p in doc["problems"]] == [("zombie", "deleted")]
    lab.ipt("-F")
    lab.ipt("-X")
    done = lab.pm("check", "--repair")
    assert done.returncode == 1 and "zombie" in done.stdout, done.stdout + done.stderr
    assert not chain_lines(lab.rules(), chain_name("mynet", "deleted")), "re-created"
    # Its rules restored (iptables-persistent): gc --netns-liveness takes them away.
    rp.run_plugin("ADD", lab.ns, "deleted", conf, mode="nft", check=True)
    doc = lab.json("gc", "--yes", "--min-age", "0", "--netns-liveness")
    assert [r["container_id"] for r in doc["removed"]] == ["deleted"]
    assert not chain_lines(lab.rules(), chain_name("mynet", "deleted"))


def test_a_deleted_namespace_is_judged_among_more_mount_namespaces_than_descriptors(lab: Lab):
    """Every container of a node has a mount namespace of its own, easily more than the
    descriptors a process may hold (a soft limit of 1024 is common). Looking for a
    deleted namespace held every other mount namespace's root open at once: past the
    limit that failed (EMFILE) and nothing was judged (the entry stayed ok). They are
    looked at one at a time: here 80 of them under a limit of 64."""
    sleepers = [
        subprocess.Popen(["unshare", "-m", "--propagation", "slave", "sleep", "300"])
        for _ in range(80)
    ]
    ctr = rp.create_netns("pmt-del")
    path = f"/run/netns/{ctr}"
    try:
        conf = rp.plugin_conf("mynet", ["10.88.0.42/16"], PORT_A)
        rp.run_plugin("ADD", lab.ns, "deleted", conf, mode="nft", container_ns=path, check=True)
        rp.write_cni_cache(lab.cache, "mynet", "deleted", "eth0", conf, PORT_A,
                           ["10.88.0.42/16"], netns=path)  # fmt: skip
    finally:
        rp.delete_netns(ctr)
    try:
        argv = ["list", "--netns", lab.ns, "--iptables", "nft", "--cni-cache-dir", str(lab.cache)]
        done = subprocess.run(
            ["prlimit", "--nofile=64", sys.executable, "-m", "portmapctl", *argv, "-o", "json"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert statuses(json.loads(done.stdout), "deleted") == {"zombie"}
    finally:
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()


def _written_before_this_boot(path: Path) -> None:
    """What a reboot leaves: the cache entry's file dates from the boot before, before
    btime and before /dev was made (btime moves with a clock stepped since the boot:
    a VM restored from a snapshot has files of this boot from before it)."""
    with open("/proc/stat") as stat:
        [booted] = [int(line.split()[1]) for line in stat if line.startswith("btime ")]
    born = subprocess.run(["stat", "-c", "%W", "/dev"], capture_output=True, text=True)
    if born.stdout.strip().isdigit() and int(born.stdout) > 0:
        booted = min(booted, int(born.stdout))
    os.utime(path, (booted - 3600, booted - 3600))


def test_a_live_namespace_another_mount_namespace_keeps_is_no_zombie(lab: Lab, tmp_path):
    """A runtime in a mount namespace of its own (a kind node's containerd, looked at
    from the host with --netns /proc/PID/ns/net and its cache: docs/troubleshooting.md)
    keeps its containers' namespaces on a mount the host does not see: there the host
    sees an empty directory, its containers alive. Their entries, written this boot,
    are no zombies: before, seen from the host's mount namespace every one was, and gc
    --netns-liveness removed the live containers' chains."""
    with _hidden_namespace(tmp_path) as hidden:
        lab.add("mynet", "nested", "10.88.0.27/16", PORT_A, netns=hidden)
        assert statuses(lab.json("list"), "nested") == {"ok"}
        doc = lab.json("check")
        assert doc["problems"] == [], doc["problems"]
        _netns_liveness_refused_and_chain_kept(lab, "nested")


def test_a_hidden_live_namespace_is_no_zombie_beside_the_hosts_own(lab: Lab, tmp_path):
    """The host's own namespaces directory holds namespaces of its own (`ip netns
    add`; with kind's podman provider the node container's own, in /run/netns) while a
    runtime in a mount namespace of its own keeps its live ones on a mount over it.
    Those of the host say nothing of the runtime's: before, any namespace there made
    the directory visible, the runtime's live containers were zombies (check exit 1)
    and gc --netns-liveness removed their chains (exit 0). A namespace the cache names
    is the sign that its namespaces are seen."""
    with _hidden_namespace(tmp_path) as hidden:
        hosts = os.path.join(os.path.dirname(hidden), "host-1")
        Path(hosts).touch()
        subprocess.run(["unshare", f"--net={hosts}", "true"], check=True)
        try:
            lab.add("mynet", "nested", "10.88.0.27/16", PORT_A, netns=hidden)
            assert statuses(lab.json("list"), "nested") == {"ok"}
            doc = lab.json("check")
            assert doc["problems"] == [], doc["problems"]
            _netns_liveness_refused_and_chain_kept(lab, "nested")
            # One entry naming the host's namespace: its directory is seen, and the
            # hidden one, not there, is gone.
            lab.add("mynet", "hosts", "10.88.0.29/16", PORT_B, netns=hosts)
            listed = lab.json("list")
            assert statuses(listed, "nested") == {"zombie"}
            assert statuses(listed, "hosts") == {"ok"}
        finally:
            subprocess.run(["umount", hosts], check=True)


def test_an_entry_written_before_the_clock_stepped_forward_is_no_zombie(lab: Lab, tmp_path):
    """btime is the wall clock now less the time since boot: a clock stepped forward
    after the boot (this test's own VM, restored from a snapshot; NTP after
    fake-hwclock) moves it past the entries written early this boot. Such an entry of
    a live container that a runtime of another mount namespace keeps is no zombie:
    before, gc --netns-liveness removed its chain. Runs where the machine's clock did
    step: /dev (made by the kernel at boot) born well before btime."""
    with open("/proc/stat") as stat:
        [btime] = [int(line.split()[1]) for line in stat if line.startswith("btime ")]
    born = subprocess.run(["stat", "-c", "%W", "/dev"], capture_output=True, text=True)
    if not born.stdout.strip().isdigit() or not 0 < int(born.stdout) < btime - 120:
        pytest.skip("this machine's clock did not step forward since its boot")
    with _hidden_namespace(tmp_path) as hidden:
        lab.add("mynet", "early", "10.88.0.28/16", PORT_A, netns=hidden)
        entry = lab.cache / "results" / "mynet-early-eth0"
        os.utime(entry, (int(born.stdout) + 60,) * 2)  # a minute into this boot
        assert statuses(lab.json("list"), "early") == {"ok"}
        _netns_liveness_refused_and_chain_kept(lab, "early")


@contextlib.contextmanager
def _hidden_namespace(tmp_path: Path) -> Iterator[str]:
    """A live network namespace on a mount of a mount namespace of its own (a kind
    node's runtime): where the host sees an empty directory."""
    hidden = tmp_path / "node-run" / "netns"
    hidden.mkdir(parents=True)
    script = (
        f"mount -t tmpfs none {hidden} && touch {hidden}/cni-1 &&"
        f" unshare --net={hidden}/cni-1 true && echo ready && exec sleep 300"
    )
    runtime = subprocess.Popen(
        [shutil.which("unshare") or "unshare", "-m", "--propagation", "private",
         "sh", "-c", script],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert runtime.stdout is not None and runtime.stdout.readline().strip() == "ready"
        assert not os.listdir(hidden), "the runtime's mount leaked to the host"
        yield str(hidden / "cni-1")
    finally:
        runtime.kill()
        runtime.wait()


@contextlib.contextmanager
def _private_directory(folder: Path) -> Iterator[Path]:
    """`folder` as a runtime in a mount namespace of its own has it (rootlesskit's
    copied-up /var/lib, a containerized kubelet's): a tmpfs there, the host's own
    `folder` another directory. Yields the path into it from the host,
    /proc/PID/root/FOLDER, whose real path is the host's FOLDER (the link reads "/")."""
    runtime = subprocess.Popen(
        [shutil.which("unshare") or "unshare", "-m", "--propagation", "private",
         "sh", "-c", f"mount -t tmpfs none {folder} && echo ready && exec sleep 300"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert runtime.stdout is not None and runtime.stdout.readline().strip() == "ready"
        inside = Path(f"/proc/{runtime.pid}/root{folder}")
        assert os.path.realpath(inside) == str(folder), "a root of its own"
        yield inside
    finally:
        runtime.kill()
        runtime.wait()


def test_a_cache_seen_through_another_mount_namespace_is_read_beside_the_hosts(lab: Lab):
    """`--cni-cache-dir D --cni-cache-dir /proc/PID/root/D`: the host's D and the one of
    a runtime in a mount namespace of its own (same root, so the link reads "/") are two
    directories. Told apart by real path they were one: the second was never read, its
    container had no entry, and gc removed the chain of that live container."""
    with _private_directory(lab.cache) as inside:
        (inside / "results").mkdir()
        lab.add("mynet", "hostctr", "10.88.0.51/16", PORT_A)
        lab.add("mynet", "nsctr", "10.88.0.52/16", PORT_B, cache_dir=inside)
        dirs = (lab.cache, inside)
        listed = lab.json("list", dirs=dirs)
        assert listed["cache"]["dirs"] == [str(d) for d in dirs]
        assert listed["cache"]["entries"] == 2
        assert statuses(listed, "nsctr") == {"ok"}
        doc = lab.json("gc", "--yes", "--min-age", "0", dirs=dirs)
        assert doc["removed"] == [], doc["removed"]
        assert chain_lines(lab.rules(), chain_name("mynet", "nsctr"))


def test_a_runtime_cache_below_another_mount_namespaces_directory_keeps_its_chains(
    lab: Lab, tmp_path
):
    """`--cni-cache-dir D/cache --cni-cache-dir /proc/PID/root/D`: the runtime cache
    below the second (cri-dockerd's D/cache, as that mount namespace has it) is not the
    host's D/cache read first, though its real path is. Taken for it, it was neither
    warned of nor held: gc removed the chain of its live container."""
    folder = tmp_path / "node-cni"
    (folder / "cache" / "results").mkdir(parents=True)
    lab.add("mynet", "hostctr", "10.88.0.54/16", PORT_A, cache_dir=folder / "cache")
    with _private_directory(folder) as inside:
        (inside / "cache" / "results").mkdir(parents=True)
        lab.add("mynet", "belowctr", "10.88.0.55/16", PORT_B, cache_dir=inside / "cache")
        dirs = (folder / "cache", inside)
        done = lab.pm("gc", "--yes", "--min-age", "0", "-o", "json", dirs=dirs)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["removed"] == []
        assert f"{inside}/cache/results holds 1 CNI cache entry not read here" in done.stderr
        assert chain_lines(lab.rules(), chain_name("mynet", "belowctr"))


def test_a_bind_mount_of_a_cache_directory_is_that_directory(lab: Lab, tmp_path):
    """`/var/lib/cni` where it is a bind mount of the cache given beside it (podman
    unshare --rootless-netns's /var/lib/cni is `<tmp_dir>/rootless-netns/var/lib/cni`):
    one directory, whose entries were counted twice, as `D` and `D/` were."""
    lab.add("mynet", "ctr1", "10.88.0.53/16", PORT_A)
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    argv = [
        shutil.which("unshare") or "unshare", "-m", "--propagation", "private", "sh", "-c",
        f"mount --bind {lab.cache} {mounted} && exec \"$@\"", "sh",
        sys.executable, "-m", "portmapctl", "list", "--netns", lab.ns, "--iptables", "nft",
        "--cni-cache-dir", str(lab.cache), "--cni-cache-dir", str(mounted), "-o", "json",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["cache"] == {
        "dirs": [str(lab.cache)], "present": True, "entries": 1
    }  # fmt: skip


def _netns_liveness_refused_and_chain_kept(lab: Lab, cid: str) -> None:
    before = lab.rules()
    assert_error(
        lab.pm("gc", "--yes", "--min-age", "0", "--netns-liveness"), 3,
        "--netns-liveness", "not visible",
    )  # fmt: skip
    assert lab.rules() == before
    assert chain_lines(before, chain_name("mynet", cid))


# --- 3. capabilities -----------------------------------------------------------------------


def test_no_portmappings_capability_means_no_chain_expected_or_made(lab: Lab):
    """libcni gives the plugin no ports without `capabilities.portMappings: true`, yet
    caches the runtime's list; 0.1's repair opened those host ports."""
    lab.add("mynet", "ctr1", "10.88.0.31/16", PORT_A)
    conf = rp.plugin_conf("capless", ["10.88.0.32/16"], PORT_B)
    path = rp.write_cni_cache(lab.cache, "capless", "nocap", "eth0", conf, PORT_B,
                              ["10.88.0.32/16"])  # fmt: skip
    doc = json.loads(path.read_text())
    config = json.loads(base64.b64decode(doc["config"]))
    for plugin in config["plugins"]:
        plugin.pop("capabilities", None)
    doc["config"] = base64.b64encode(json.dumps(config).encode()).decode()
    path.write_text(json.dumps(doc))

    before = lab.rules()
    assert lab.json("check")["healthy"] is True
    done = lab.pm("check", "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    assert lab.rules() == before
    assert not any("8082" in line for line in lab.rules())


def test_a_container_added_again_without_ports_keeps_a_chain_check_reports(lab: Lab):
    """The real plugin's ADD with `portMappings: []` for a container that has a chain
    from an earlier ADD with ports returns at once: the chain stays and libcni's cache
    holds the new config. Before, check said healthy (exit 0) while the chain still
    forwarded ports its cached config no longer gives. It is reported (unexpected-mapping,
    exit 1), gc keeps it (the container is live), --repair leaves it byte for byte, the
    hand commands its text gives remove it, entry rules too; and once such a container
    is gone (the plugin's DEL with no ports leaves the chain too) gc removes it."""
    ports = [*PORT_A, {"hostPort": 5353, "containerPort": 53, "protocol": "udp"}]
    lab.add("mynet", "keep", "10.88.0.51/16", PORT_B)
    lab.add("mynet", "again", "10.88.0.52/16", ports)
    lab.add("mynet", "later", "10.88.0.53/16", [{**PORT_A[0], "hostPort": 8083}])
    assert lab.json("check")["healthy"] is True
    lab.add("mynet", "again", "10.88.0.52/16", [])  # the ADD, and the cache it leaves
    lab.add("mynet", "later", "10.88.0.53/16", [])
    again, later = chain_name("mynet", "again"), chain_name("mynet", "later")
    before = lab.rules()
    assert len(chain_lines(before, again)) == 9  # 2 entry rules, 6 rules, its declaration

    doc = lab.json("check", codes=(1,))
    found = {p["container_id"]: p for p in doc["problems"]}
    assert sorted(found) == ["again", "later"]
    problem = found["again"]
    assert (problem["kind"], problem["chain"]) == ("unexpected-mapping", again)
    assert "tcp/8081, udp/5353" in problem["detail"] and problem["fix"] is None
    assert "gc keeps" in problem["why"] and "--repair never removes" in problem["why"]
    assert lab.json("gc", "--yes", "--min-age", "0")["removed"] == []
    done = lab.pm("check", "--repair", "-o", "json")
    assert done.returncode == 1, done.stdout + done.stderr
    repaired = json.loads(done.stdout)
    assert [p["kind"] for p in repaired["problems"]] == ["unexpected-mapping"] * 2
    assert repaired["fixed"] == [] and lab.rules() == before

    for command in problem["why"].split("`")[1::2]:  # the commands, in backquotes
        words = shlex.split(command)
        assert words[0] == "iptables-nft", command
        subprocess.run(["ip", "netns", "exec", lab.ns, *words], check=True)
    assert not chain_lines(lab.rules(), again)

    # `later` is removed: the runtime's DEL (its cached config: no ports) leaves the
    # chain, libcni deletes the entry, and gc takes the now stale chain.
    rp.run_plugin("DEL", lab.ns, "later", lab.confs["mynet/later"], mode="nft", check=True)
    assert chain_lines(lab.rules(), later)
    (lab.cache / "results" / "mynet-later-eth0").unlink()
    doc = lab.json("gc", "--yes", "--min-age", "0")
    assert [r["container_id"] for r in doc["removed"]] == ["later"]
    assert lab.json("check")["healthy"] is True
    lab.plugin_check("mynet", "keep")


# --- 4. names not the plugin's ----------------------------------------------------------------


def test_gc_leaves_an_admins_chain_that_only_looks_like_the_plugins(lab: Lab):
    lab.add("mynet", "live1", "10.88.0.41/16", PORT_A)
    lab.add("mynet", "dead1", "10.88.0.42/16", PORT_B, cache=False)
    lab.ipt("-N", "CNI-DN-admin-redirects")
    lab.ipt("-A", "CNI-DN-admin-redirects", "-p", "tcp", "-j", "REDIRECT", "--to-ports", "9000")
    lab.ipt("-A", "PREROUTING", "-p", "tcp", "--dport", "81", "-j", "CNI-DN-admin-redirects")
    admin = [line for line in lab.rules() if "admin-redirects" in line]
    assert len(admin) == 3

    doc = lab.json("gc", "--yes", "--min-age", "0")
    assert [r["container_id"] for r in doc["removed"]] == ["dead1"]
    assert [line for line in lab.rules() if "admin-redirects" in line] == admin
    assert lab.json("gc", "--yes", "--min-age", "0", "--all")["removed"] == []
    assert [line for line in lab.rules() if "admin-redirects" in line] == admin


# --- 5. one container, two networks ----------------------------------------------------------


def test_a_container_on_two_networks_does_not_shadow_itself(lab: Lab):
    """podman --network a,b -p 8600:80: a chain per network, one container ID."""
    ports = [{"hostPort": 8600, "containerPort": 80, "protocol": "tcp"}]
    lab.add("neta", "both", "10.88.0.51/24", ports)
    lab.add("netb", "both", "10.89.0.51/24", ports)
    done = lab.pm("check")
    assert done.returncode == 0, done.stdout + done.stderr
    listed = lab.json("list")
    assert {s for m in listed["mappings"] for s in m["status"]} == {"ok"}
    assert len(listed["chains"]) == 2
    # Another container on the same port is still shadowed, by the first of them.
    lab.add("netc", "other", "10.90.0.51/24", ports)
    doc = lab.json("check", codes=(1,))
    assert [(p["kind"], p["container_id"]) for p in doc["problems"]] == [("shadowed", "other")]


# --- 6. min-age and a container coming back -------------------------------------------------


# --min-age of the tests below. What they pin happens while a namespace is younger than
# --min-age and a chain has been pending for longer: the chain's first sighting is
# backdated in gc's state file (_ripen) rather than waited for, so this only has to
# outlast making a namespace, one plugin ADD and one gc. (--min-age 3s and a sleep of
# 3.2 s: on a loaded machine the namespace was older than 3 s by the time gc ran,
# rightly no longer taken for an ADD in progress, and the chain went.)
MIN_AGE = 60.0


def _ripen(run_dir: Path, *cids: str) -> None:
    """Backdate the first sightings gc saved of `cids`' chains (mynet, IPv4) by twice
    MIN_AGE."""
    backdate(run_dir, [chain_name("mynet", cid) for cid in cids], 2 * MIN_AGE)


def _ripe(pending: List[dict]) -> List[str]:
    """The pending chains' containers, each asserted past MIN_AGE (kept for a reason
    other than its age)."""
    assert all(p["seen_seconds"] >= MIN_AGE for p in pending), pending
    return [p["container_id"] for p in pending]


def test_a_chain_pending_as_stale_waits_while_a_container_is_being_added(lab: Lab, tmp_path):
    """The container comes back with the same ID, address and ports: the plugin's ADD
    leaves its old chain exactly as it was (nothing in the table changes) and libcni
    writes the cache entry only at the end. Its new namespace is there all along: while
    a namespace younger than --min-age, in no cache entry, holds the address a chain
    DNATs to, that chain is not removed."""
    # A cached live container: an empty cache is no source of liveness (SPEC §3 gc).
    lab.add("mynet", "live", "10.88.0.60/16",
            [{"hostPort": 8083, "containerPort": 80, "protocol": "tcp"}])  # fmt: skip
    # (Addresses no other test uses: another's namespace younger than --min-age holding
    # one would hold its chain too.)
    lab.add("mynet", "back", "10.88.61.61/16", PORT_A, cache=False)
    lab.add("mynet", "other", "10.88.61.62/16", PORT_B, cache=False)
    run_dir = tmp_path / "run"
    env = {"PORTMAPCTL_RUN_DIR": str(run_dir)}
    gc = ("gc", "--yes", "--min-age", f"{MIN_AGE:g}s")
    doc = lab.json(*gc, env=env)
    assert sorted(p["container_id"] for p in doc["pending"]) == ["back", "other"]
    _ripen(run_dir, "back", "other")
    # The runtime makes the container's namespace, its bridge plugin gives it the
    # address, then portmap's ADD leaves the chain as it was.
    new_ns = rp.create_netns("pmt-back")
    try:
        rp._run(["ip", "-n", new_ns, "link", "set", "lo", "up"], check=True)
        rp._run(["ip", "-n", new_ns, "addr", "add", "10.88.61.61/16", "dev", "lo"], check=True)
        conf = lab.confs["mynet/back"]
        rp.run_plugin("ADD", lab.ns, "back", conf, mode="nft", check=True)
        done = lab.pm(*gc, "-o", "json", env=env)
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        # The stale chain whose address no new namespace holds goes as usual.
        assert [r["container_id"] for r in doc["removed"]] == ["other"], (done.stderr, doc)
        assert _ripe(doc["pending"]) == ["back"], "removed a chain being added"
        assert "being added" in done.stderr and new_ns in done.stderr
        # libcni writes the entry: the container is live, its sighting forgotten.
        rp.write_cni_cache(lab.cache, "mynet", "back", "eth0", conf, PORT_A,
                           ["10.88.61.61/16"], netns=f"/run/netns/{new_ns}")  # fmt: skip
        doc = lab.json(*gc, env=env)
        assert doc["removed"] == [] and doc["pending"] == []
        lab.plugin_check("mynet", "back")
    finally:
        rp.delete_netns(new_ns)


def test_a_young_namespace_gc_cannot_look_into_keeps_the_ripe_chains(lab: Lab, tmp_path):
    """The same, with gc run as the shipped DaemonSet and systemd units run it: without
    CAP_SYS_ADMIN no namespace can be entered, so what the young namespace holds is
    not known. It was taken for holding nothing, and the chain being added went (the
    container's host port unforwarded, its cache entry saying live). Now every chain
    that would go waits while such a namespace is younger than --min-age (a delay of
    --min-age at most), and a warning says why. (Not asserted: that the chain goes once
    the namespace has gone; on a shared test machine other young namespaces come and
    go, and hold it too.)"""
    # live's entry names the node's own namespace (lab.ns, made for this test: as
    # young as the new one, and no more enterable without CAP_SYS_ADMIN): a namespace a
    # cache entry names is no ADD in progress, so only the new one can hold the chain.
    lab.add("mynet", "live", "10.88.0.60/16",
            [{"hostPort": 8083, "containerPort": 80, "protocol": "tcp"}],
            netns=f"/run/netns/{lab.ns}")  # fmt: skip
    lab.add("mynet", "back", "10.88.0.61/16", PORT_A, cache=False)
    run_dir = tmp_path / "run"

    def gc() -> dict:
        argv = ["gc", "--yes", "--min-age", f"{MIN_AGE:g}s", "--iptables", "nft", "-o", "json",
                "--cni-cache-dir", str(lab.cache)]  # fmt: skip
        done = run(argv, env={"PORTMAPCTL_RUN_DIR": str(run_dir)}, without_sys_admin_in=lab.ns)
        assert done.returncode == 0, done.stderr
        return {**json.loads(done.stdout), "stderr": done.stderr}

    doc = gc()
    assert [p["container_id"] for p in doc["pending"]] == ["back"]
    assert "could not be looked into" not in doc["stderr"]  # (nothing ripe yet)
    _ripen(run_dir, "back")
    # (Named to sort first: the warning names three of the young namespaces, and on a
    # shared test machine others may be younger than --min-age.)
    new_ns = rp.create_netns("0-pmt-back")
    try:
        rp._run(["ip", "-n", new_ns, "addr", "add", "10.88.0.61/16", "dev", "lo"], check=True)
        rp.run_plugin("ADD", lab.ns, "back", lab.confs["mynet/back"], mode="nft", check=True)
        doc = gc()
        assert doc["removed"] == [], "removed a chain being added"
        assert _ripe(doc["pending"]) == ["back"]
        assert "could not be looked into" in doc["stderr"] and new_ns in doc["stderr"]
    finally:
        rp.delete_netns(new_ns)


def test_a_ripe_chain_held_for_a_container_being_added_says_so_in_every_output(
    host_ns, iptables_mode, tmp_path
):
    """The chain held back (its address in a namespace younger than --min-age that no
    cache entry names: a container being added) showed STATUS `removable in 0s, at
    <now>` (JSON `removable_in_seconds` 0) beside a summary and a warning saying it is
    pending: the row said it goes now, and no run would take it while the namespace
    is there. Its row says why it waits now, in a dry run and a real one, piped and at
    80 columns; JSON `held` names the reason, `removable_in_seconds` is null (not
    known: up to the namespace)."""
    node = Node_(host_ns, iptables_mode, tmp_path / "cni")
    (node.cache / "results").mkdir(parents=True)
    node.add("mynet", "live", ["10.88.0.60/16"], [PORT_A[0] | {"hostPort": 8083}])
    # (An address no other test uses: another's young namespace holding it would hold
    # the chains of the rows below too.)
    node.add("mynet", "back", ["10.88.63.38/16"], PORT_A, cache=False)
    node.add("mynet", "other", ["10.88.63.39/16"], PORT_B, cache=False)
    run_dir = tmp_path / "run"
    env = {"PORTMAPCTL_RUN_DIR": str(run_dir)}
    common = ["--netns", node.ns, "--iptables", iptables_mode,
              "--cni-cache-dir", str(node.cache), "--min-age", f"{MIN_AGE:g}s"]  # fmt: skip
    assert run(["gc", "--dry-run", *common], env=env).returncode == 0
    _ripen(run_dir, "back")
    # The container's namespace is made again, the address given it.
    new_ns = rp.create_netns("pmt-h338-back")
    try:
        rp._run(["ip", "-n", new_ns, "addr", "add", "10.88.63.38/16", "dev", "lo"], check=True)
        doc = validated("gc", ok(["gc", "--dry-run", *common, "-o", "json"], env=env))
        by_id = {p["container_id"]: p for p in doc["pending"]}
        assert set(by_id) == {"back", "other"} and doc["removed"] == [], doc
        assert by_id["back"]["held"] == "address-in-new-namespace", by_id["back"]
        assert by_id["back"]["removable_in_seconds"] is None
        assert by_id["other"]["held"] is None
        assert 0 < by_id["other"]["removable_in_seconds"] <= MIN_AGE
        held = "held: a new namespace has its address"
        for argv in (["gc", "--dry-run", *common], ["gc", "--yes", *common]):
            done = run(argv, env=env)
            assert done.returncode == 0, done.stderr
            assert "being added" in done.stderr and new_ns in done.stderr
            rows = {line.split()[2]: line for line in done.stdout.splitlines()
                    if line.startswith("v4 ")}  # fmt: skip
            assert rows["back"].endswith(f"  {held}"), done.stdout
            assert "removable in 0s" not in done.stdout
            # (Seen under a second: "1m00s" or "59s", as the clock falls.)
            assert re.search(r"  removable in (\d+m)?\d+s, at ", rows["other"]), done.stdout
            assert done.stdout.splitlines()[-1].endswith("2 pending, 1 kept"), done.stdout
            code, shown, err = run_on_terminal(argv, {"COLUMNS": "80", "NO_COLOR": "1",
                                                      **env})  # fmt: skip
            assert code == 0, err
            lines = shown.replace("\r", "").splitlines()
            assert max(map(len, lines)) <= 80, shown
            assert [line for line in lines if " back " in line][0].endswith(f"  {held}"), shown
        # The chain kept its place in the table: the plugin's CHECK of it passes.
        node.check("back")
    finally:
        rp.delete_netns(new_ns)


# --- 9. entries the plugin accepts; entries nobody can read --------------------------------


def test_odd_but_valid_entries_and_an_unreadable_one_stop_nothing(lab: Lab):
    """0.1: `list`, `check` and `gc` exited 2 for the whole node, so a cron gc never
    ran again. Now: the plugin's defaults for null, no address = nothing mapped, and
    an unreadable file is skipped with a warning, its container live by file name."""
    lab.add("mynet", "ok1", "10.88.0.71/16", PORT_A)
    lab.add("mynet", "stale1", "10.88.0.72/16", PORT_B, cache=False)
    lab.add("mynet", "blurred", "10.88.0.73/16",
            [{"hostPort": 8083, "containerPort": 80, "protocol": "tcp"}], cache=False)  # fmt: skip
    conf = rp.plugin_conf("mynet", ["10.88.0.74/16"], [])
    nulls = rp.write_cni_cache(lab.cache, "mynet", "nulls", "eth0", conf, [], ["10.88.0.74/16"])
    doc = json.loads(nulls.read_text())
    config = json.loads(base64.b64decode(doc["config"]))
    config["plugins"][-1].update(snat=None, masqAll=None)
    doc["config"] = base64.b64encode(json.dumps(config).encode()).decode()
    doc["result"].pop("ips")  # an L2 network: IPAM gave no address
    doc["capabilityArgs"] = {"portMappings": PORT_B}
    nulls.write_text(json.dumps(doc))
    bad = lab.cache / "results" / "mynet-blurred-eth0"
    bad.write_text('{"kind": "cniCacheV1", "containerId": "blurred", "config": "%%%"}')

    for command in ("list", "check"):
        done = lab.pm(command)
        assert done.returncode in (0, 1), done.stdout + done.stderr
        assert str(bad) in done.stderr and "warning" in done.stderr
    assert statuses(lab.json("list"), "blurred") == {"ok"}
    done = lab.pm("gc", "--yes", "--min-age", "0", "-o", "json")
    assert done.returncode == 0, done.stderr
    assert [r["container_id"] for r in json.loads(done.stdout)["removed"]] == ["stale1"]
    assert str(bad) in done.stderr
    assert chain_lines(lab.rules(), chain_name("mynet", "blurred"))
    lab.plugin_check("mynet", "ok1")


def test_a_zombies_orphaned_chain_is_sent_to_gc_netns_liveness(lab: Lab):
    """A zombie whose chain lost its entry rule is an orphan too: that row's fix was
    plain `portmapctl gc`, which keeps a zombie's chain (2 kept, nothing removed); it
    is gc --netns-liveness now, as the zombie row says, and that removes it."""
    _zombie_lab(lab)
    gone = chain_name("mynet", "gone")
    entry = next(line for line in lab.rules() if line.startswith("-A CNI-HOSTPORT-DNAT")
                 and line.endswith(f"-j {gone}"))  # fmt: skip
    lab.ipt("-D", *shlex.split(entry)[1:])
    doc = lab.json("check", codes=(1,))
    fixes = {p["kind"]: p["fix"] for p in doc["problems"] if p["container_id"] == "gone"}
    assert set(fixes) == {"orphan", "zombie"}, doc["problems"]
    assert fixes["orphan"] == fixes["zombie"] and fixes["orphan"].endswith(" --netns-liveness")
    assert lab.json("gc", "--yes", "--min-age", "0")["removed"] == []
    doc = lab.json("gc", "--yes", "--min-age", "0", "--netns-liveness")
    assert [r["chain"] for r in doc["removed"]] == [gone]
    lab.plugin_check("mynet", "keep")
