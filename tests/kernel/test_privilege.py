"""Privilege and the lock file (SPEC §4, §5).

Commands that change the node, run without CAP_NET_ADMIN, exit 3 with a clear line
before they touch anything (not even the run directory); commands that read snapshots
need no privilege at all. The lock that serialises portmapctl runs
(`/run/portmapctl/lock`, or `$PORTMAPCTL_RUN_DIR/lock`) is a 0600 file in a 0700
directory, and whatever is planted at its path -- a symlink, a FIFO, a directory,
a run directory others can write to or that is itself a symlink -- is refused (exit 3),
never followed.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import realplugin as rp
from pmctl import assert_error, run
from run_dir_helpers import plant, unusable_run_dir

from portmapctl.errors import HostProblem
from portmapctl.host import lock

FIXTURES = Path(__file__).parents[1] / "fixtures"
PORTS = [
    {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
    {"hostPort": 5353, "containerPort": 53, "protocol": "udp"},
]


def _state(ns: str) -> dict:
    return {f: rp.strip_save_comments(rp.save(ns, f)) for f in (4, 6)}


@pytest.fixture
def node(host_ns, tmp_path):
    """A namespace with one plugin-made container (cached) and one stale one."""
    cache = tmp_path / "cni"
    for cid, ips in (("live1", ["10.88.0.11/16", "fd00::11/64"]), ("stale1", ["10.88.0.12/16"])):
        conf = rp.plugin_conf("mynet", ips, PORTS if cid == "live1" else PORTS[:1])
        rp.run_plugin("ADD", host_ns, cid, conf, check=True)
        if cid == "live1":
            rp.write_cni_cache(cache, "mynet", cid, "eth0", conf, PORTS, ips)
    # The live container's chain goes missing: a repair would have work to do.
    rp.iptables(host_ns, ["-t", "nat", "-F", "CNI-HOSTPORT-MASQ"])
    return host_ns, str(cache)


def test_changing_commands_without_net_admin_exit_3_before_touching_anything(node, tmp_path):
    ns, cache = node
    run_dir = tmp_path / "run"
    env = {"PORTMAPCTL_RUN_DIR": str(run_dir)}
    common = ["--netns", ns, "--cni-cache-dir", cache]
    commands = [
        ["add", "--network", "mynet", "--container", "new1", "--ip", "10.88.0.13/16",
         "-p", "9090:90"],
        ["check", "--repair"],
        ["check", "--repair", "--network", "mynet", "--container", "live1", "--ip",
         "10.88.0.11/16", "-p", "8080:80"],
        ["gc", "--yes", "--min-age", "0"],
        ["gc", "--yes", "--all", "--min-age", "0"],
        ["flush-udp"],
        ["flush-udp", "--port", "5353"],
    ]  # fmt: skip
    before = _state(ns)
    for command in commands:
        done = run([*command, *common], env=env, unprivileged=True)
        assert_error(done, 3, "needs root (or CAP_NET_ADMIN)", "sudo")
        # flush-udp changes conntrack, not iptables: the line says what is changed.
        assert "nat rules or conntrack entries needs root" in done.stderr
    assert _state(ns) == before
    # Not even the run directory (lock, gc state) was made.
    assert not run_dir.exists()
    # With the capability, the same repair works (so the refusal was about privilege).
    done = run(["check", "--repair", *common], env=env)
    assert done.returncode == 1 and "repaired: IPv4 missing-toplevel-rule" in done.stderr
    assert "stale" in done.stdout  # stale1 is left for gc: exit 1
    assert _state(ns) != before
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((run_dir / "lock").stat().st_mode) == 0o600


def test_reading_snapshots_needs_no_privilege(tmp_path):
    cache = tmp_path / "cni"
    conf = json.loads((FIXTURES / "basic.conf.json").read_text())
    container = conf["containers"][0]
    rp.write_cni_cache(
        cache,
        conf["network"],
        container["containerId"],
        "eth0",
        rp.plugin_conf(conf["network"], container["ips"], container["portMappings"]),
        container["portMappings"],
        container["ips"],
    )
    env = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run")}
    snapshots = ["--snapshot", str(FIXTURES / "basic.v4.save"),
                 "--snapshot6", str(FIXTURES / "basic.v6.save")]  # fmt: skip
    listed = run(["list", *snapshots, "-o", "json", "--cni-cache-dir", str(cache)],
                 env=env, unprivileged=True)  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)["mappings"]
    assert {(r["family"], r["host_port"]) for r in rows} == {(4, 8080), (4, 5353)}
    assert all(r["status"] == ["ok"] for r in rows)
    checked = run(["check", *snapshots, "-o", "json", "--cni-cache-dir", str(cache)],
                  env=env, unprivileged=True)  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["healthy"] is True
    stdin = run(["list", "--snapshot", "-", "-o", "wide"], stdin=(FIXTURES / "basic.v4.save").read_text(),
                unprivileged=True)  # fmt: skip
    assert stdin.returncode == 0 and "CNI-DN-70a29d9dc18bc4d652ea5" in stdin.stdout
    assert not (tmp_path / "run").exists()


@pytest.mark.netns
def test_reading_the_kernel_without_privilege_is_an_environment_error():
    for command in (["list", "--iptables", "nft"], ["check", "--iptables", "legacy"]):
        assert_error(run(command, unprivileged=True), 3, "permission denied", "root")


# --- the lock file, in this process -----------------------------------------------------


def test_lock_file_is_0600_in_a_0700_directory_whatever_the_umask(tmp_path):
    run_dir = tmp_path / "run"
    old = os.umask(0)
    try:
        with lock.held(str(run_dir), wait=1):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    info = (run_dir / "lock").lstat()
    assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == os.geteuid()


def test_a_symlink_at_the_lock_path_is_refused_not_followed(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    for target in (tmp_path / "precious", tmp_path / "does-not-exist-yet"):
        if target.name == "precious":
            target.write_text("precious")
        link = run_dir / "lock"
        link.symlink_to(target)
        with pytest.raises(HostProblem, match="is a symlink: refusing to follow it"):
            with lock.held(str(run_dir), wait=1):
                pytest.fail("the lock was taken through a symlink")
        link.unlink()
    assert (tmp_path / "precious").read_text() == "precious"
    assert not (tmp_path / "does-not-exist-yet").exists()


@pytest.mark.parametrize("planted", ["fifo", "socket", "directory", "someone-elses"])
def test_something_else_at_the_lock_path_is_refused(tmp_path, planted):
    """Refused, and said as such whatever it is (a directory was "cannot open lock
    file ...: Is a directory", a socket "...: No such device or address")."""
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    path = run_dir / "lock"
    plant(path, planted)
    refused = f"{path} is not a regular file owned by us: refusing to use it"
    with pytest.raises(HostProblem, match=re.escape(refused)):
        with lock.held(str(run_dir), wait=1):
            pytest.fail("the lock was taken")


def test_a_run_directory_that_is_a_file_is_refused(tmp_path):
    """A file where the run directory should be was "cannot create ...: File exists"."""
    a_file = tmp_path / "run"
    a_file.write_text("")
    with pytest.raises(HostProblem, match=re.escape(f"{a_file} is not a directory owned by us")):
        with lock.held(str(a_file), wait=1):
            pytest.fail("the lock was taken")
    below = a_file / "run"
    with pytest.raises(HostProblem, match=re.escape(f"cannot create {below}: Not a directory")):
        with lock.held(str(below), wait=1):
            pytest.fail("the lock was taken")
    assert a_file.read_text() == ""


def test_a_run_directory_that_is_a_symlink_or_writable_by_others_is_refused(tmp_path):
    planted = tmp_path / "planted"
    planted.mkdir(mode=0o700)
    link = tmp_path / "run-link"
    link.symlink_to(planted)
    with pytest.raises(HostProblem, match="not a directory owned by us"):
        with lock.held(str(link), wait=1):
            pytest.fail("the lock was taken")
    assert list(planted.iterdir()) == []
    open_dir = tmp_path / "run-open"
    open_dir.mkdir()
    open_dir.chmod(0o1777)
    with pytest.raises(HostProblem, match="writable by other users"):
        with lock.held(str(open_dir), wait=1):
            pytest.fail("the lock was taken")
    assert list(open_dir.iterdir()) == []
    foreign = tmp_path / "run-foreign"
    foreign.mkdir(mode=0o700)
    os.chown(foreign, 65534, 65534)
    with pytest.raises(HostProblem, match="not a directory owned by us"):
        with lock.held(str(foreign), wait=1):
            pytest.fail("the lock was taken")


def _hold(path: Path, seconds: float) -> subprocess.Popen:
    """Another process holding an flock on `path` for `seconds` (prints 'held' first)."""
    code = (
        "import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "time.sleep(float(sys.argv[2]))\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder


def test_a_held_lock_is_waited_for_then_refused_with_a_clear_message(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    holder = _hold(run_dir / "lock", 30)
    try:
        started = time.monotonic()
        # The holder as the kernel names it (it wrote no PID into the file).
        said = rf"another portmapctl \(PID {holder.pid}\) holds .* for over 0.5 s"
        with pytest.raises(HostProblem, match=said):
            with lock.held(str(run_dir), wait=0.5):
                pytest.fail("the lock was taken while another process held it")
        assert 0.5 <= time.monotonic() - started < 3
    finally:
        holder.kill()
        holder.wait()
    # Released (the holder died): taken at once.
    with lock.held(str(run_dir), wait=0.5):
        pass


def test_a_lock_released_while_waiting_is_taken(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    holder = _hold(run_dir / "lock", 0.4)
    taken = []
    waiter = threading.Thread(target=lambda: taken.append(_take(run_dir)))
    waiter.start()
    waiter.join(10)
    holder.wait()
    assert taken and taken[0] >= 0.2  # it waited for the holder, then got the lock


def _take(run_dir: Path) -> float:
    started = time.monotonic()
    with lock.held(str(run_dir), wait=5):
        return time.monotonic() - started


def test_a_planted_lock_symlink_stops_a_real_add_before_it_writes(host_ns, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    target = tmp_path / "precious"
    target.write_text("precious")
    (run_dir / "lock").symlink_to(target)
    before = _state(host_ns)
    done = run(
        ["add", "--netns", host_ns, "--network", "mynet", "--container", "abc123",
         "--ip", "10.88.0.5/16", "-p", "8080:80"],
        env={"PORTMAPCTL_RUN_DIR": str(run_dir)},
    )  # fmt: skip
    assert_error(done, 3, "is a symlink: refusing to follow it")
    assert _state(host_ns) == before
    assert target.read_text() == "precious"


@pytest.mark.parametrize("unusable", ["someone-elses", "file", "open-to-all", "lock-symlink"])
def test_a_dry_run_add_refuses_a_run_directory_as_the_add_does(host_ns, tmp_path, unusable):
    """h243: run as nobody with CAP_NET_ADMIN and CAP_NET_RAW (setpriv), `add` said
    "<run dir> is not a directory owned by us: refusing to use it", exit 3, while `add
    --dry-run` printed the whole transaction and exited 0: a plan the run cannot carry
    out. The dry run now refuses with the add's own line and exit code (SPEC §4: 3,
    environment), and creates nothing there."""
    run_dir = unusable_run_dir(tmp_path, unusable)
    before = _state(host_ns)
    add = ["add", "--netns", host_ns, "--network", "mynet", "--container", "abc123",
           "--ip", "10.88.0.5/16", "-p", "8080:80", "--cni-cache-dir", str(tmp_path / "cni")]  # fmt: skip
    env = {"PORTMAPCTL_RUN_DIR": str(run_dir)}
    real = run(add, env=env)
    assert real.returncode == 3, real.stderr
    refusal = real.stderr.strip().splitlines()[-1]
    assert "refusing" in refusal, real.stderr
    for extra in (["--dry-run"], ["--dry-run", "-o", "json"]):
        dry = run([*add, *extra], env=env)
        assert_error(dry, 3, refusal.removeprefix("portmapctl: error: "))
    assert _state(host_ns) == before
    if unusable != "file":
        assert sorted(p.name for p in run_dir.iterdir()) == (
            ["lock"] if unusable == "lock-symlink" else []
        )
    assert not (tmp_path / "elsewhere").exists()


def _add_in_read_only_run_dir(run_dir: Path, args: list) -> subprocess.CompletedProcess:
    """`portmapctl ARGS` with its run directory bind-mounted read-only over itself, in
    a mount namespace of its own (the host's mounts untouched): a container whose root
    file system, /run with it, is read-only."""
    folder = str(run_dir)
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" || exit 97; shift; exec "$@"'
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, folder, "sh",
            sys.executable, "-m", "portmapctl", *args]  # fmt: skip
    env = dict(os.environ, NO_COLOR="1", COLUMNS="250", PORTMAPCTL_RUN_DIR=folder)
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)


@pytest.mark.parametrize("unusable", ["read-only", "closed", "lock-read-only"])
def test_a_dry_run_add_refuses_a_run_directory_whose_lock_the_add_cannot_open(
    host_ns, tmp_path, unusable
):
    """With the run directory on a read-only file system (or, without
    CAP_DAC_OVERRIDE, ours but 0500, or its lock 0400), `add` said "cannot open lock
    file <run dir>/lock: Read-only file system (...)" (Permission denied), exit 3,
    while `add --dry-run` printed the whole transaction and exited 0."""
    run_dir = tmp_path / "run"
    if unusable == "read-only":
        run_dir.mkdir(mode=0o700)
    else:
        run_dir = unusable_run_dir(tmp_path, unusable)
    add = ["add", "--netns", host_ns, "--network", "mynet", "--container", "abc123",
           "--ip", "10.88.0.5/16", "-p", "8080:80", "--cni-cache-dir", str(tmp_path / "cni")]  # fmt: skip
    before = _state(host_ns)

    def portmapctl(args: list) -> subprocess.CompletedProcess:
        if unusable == "read-only":
            return _add_in_read_only_run_dir(run_dir, args)
        caps = ("dac_override", "dac_read_search")
        return run(args, env={"PORTMAPCTL_RUN_DIR": str(run_dir)}, without_caps=caps)

    real = portmapctl(add)
    assert_error(real, 3, f"cannot open lock file {run_dir}/lock: ")
    refusal = real.stderr.strip().removeprefix("portmapctl: error: ")
    for extra in (["--dry-run"], ["--dry-run", "-o", "json"]):
        assert_error(portmapctl([*add, *extra]), 3, refusal)
    assert _state(host_ns) == before
    assert sorted(p.name for p in run_dir.iterdir()) == (
        ["lock"] if unusable == "lock-read-only" else []
    )
