"""Rootless podman (CNI backend): the recipe docs/troubleshooting.md gives, tried for real.

Rootless podman runs the portmap plugin in a network namespace of its own (its
"rootless netns"), and keeps libcni's cache below its tmp_dir
(``<tmp_dir>/rootless-netns/var/lib/cni``, bind-mounted on /var/lib/cni where the plugin
runs). The namespace's file is mounted only in the mount namespace of podman's pause
process, so root on the host reaches it from there:
``nsenter --mount=/proc/PAUSE/ns/mnt portmapctl ... --netns NS --cni-cache-dir CACHE``.

Needs what the rest of tests/e2e needs plus slirp4netns and newuidmap (Debian packages
slirp4netns, uidmap), a user named :data:`USER` with subordinate IDs, and a
/dev/net/tun that user may open: `.ci/run` provides them. Podman runs as that user in a
fresh network namespace (the host port rootlessport binds is that namespace's) and in
the lab's mount namespace (cgroup2, as crun wants).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import podmanlab
import pytest
import realplugin
from podmanlab import IMAGE, run

pytestmark = pytest.mark.netns

USER = "portmapctl-rootless"


def _rootless_available() -> tuple[bool, str]:
    ok, why = podmanlab.available()
    if not ok:
        return ok, why
    for tool in ("slirp4netns", "newuidmap", "setpriv"):
        if shutil.which(tool) is None:
            return False, f"no `{tool}` (Debian packages slirp4netns, uidmap, util-linux)"
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return False, f"no user {USER} (`useradd --no-create-home {USER}`, as .ci/run does)"
    # (Either may be missing: a distribution without subordinate IDs, a container
    # without the tun device. A reason to skip, not an error in the fixture.)
    try:
        with open("/etc/subuid") as f:
            if not any(line.startswith(f"{USER}:") for line in f):
                return False, f"{USER} has no subordinate IDs in /etc/subuid"
    except OSError as err:
        return False, f"cannot read /etc/subuid: {err.strerror}"
    try:
        tun = os.stat("/dev/net/tun")
    except OSError as err:
        return False, f"no /dev/net/tun for slirp4netns: {err.strerror}"
    if stat.S_IMODE(tun.st_mode) & 0o006 != 0o006:
        return False, "/dev/net/tun is not open to users (Debian's udev makes it 0666)"
    return True, ""


@dataclass(frozen=True)
class Rootless:
    """One rootless podman: its folders, the network namespace it runs in."""

    lab: podmanlab.Lab
    dir: Path
    netns: str
    uid: int
    gid: int

    @property
    def tmp_dir(self) -> Path:
        return self.dir / "tmp"

    @property
    def cache_dir(self) -> Path:
        """libcni's cache as the plugin in the rootless netns writes it."""
        return self.tmp_dir / "rootless-netns" / "var" / "lib" / "cni"

    def podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [
            "nsenter", f"--mount={self.lab.mntns}", f"--net=/run/netns/{self.netns}",
            "setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups",
            "podman", *args,
        ]  # fmt: skip
        env = {
            "PATH": podmanlab.SYSTEM_PATH,
            "HOME": str(self.dir / "home"),
            "XDG_RUNTIME_DIR": str(self.dir / "xdg"),
            "CONTAINERS_CONF": str(self.dir / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(self.dir / "storage.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(self.dir / "registries.conf"),
        }
        return run(argv, env=env, check=check, timeout=podmanlab.PODMAN_TIMEOUT)

    def pause_mntns(self) -> str:
        """The mount namespace of podman's pause process, where its namespaces are."""
        pid = (self.tmp_dir / "pause.pid").read_text().strip()
        return f"/proc/{int(pid)}/ns/mnt"

    def rootless_netns(self) -> str:
        listed = run(
            ["nsenter", f"--mount={self.pause_mntns()}", "ls", str(self.dir / "xdg/netns")]
        )
        names = [n for n in listed.stdout.split() if n.startswith("rootless-netns")]
        assert len(names) == 1, listed.stdout
        return str(self.dir / "xdg/netns" / names[0])

    def kill_own_processes(self) -> None:
        """The pause process, slirp4netns, rootlessport of this podman: the processes in
        its pause process's user namespace. Not every process of the user: that is
        shared by every run of this test on the machine (`pkill -u` killed another
        checkout's run in the middle, its podman exiting -9)."""
        try:
            pid = int((self.tmp_dir / "pause.pid").read_text().strip())
            own = os.readlink(f"/proc/{pid}/ns/user")
        except (OSError, ValueError):
            return  # (podman never ran, or its pause process is gone)
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:  # (a container's process may run as a subordinate ID: not by uid)
                if os.readlink(f"/proc/{entry}/ns/user") == own:
                    os.kill(int(entry), signal.SIGKILL)
            except OSError:
                continue  # (gone meanwhile)

    def portmapctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The documented root recipe: portmapctl in the pause process's mount namespace,
        given the rootless netns and the cache below podman's tmp_dir."""
        argv = [
            "nsenter", f"--mount={self.pause_mntns()}",
            sys.executable, "-m", "portmapctl", *args,
            "--netns", self.rootless_netns(), "--cni-cache-dir", str(self.cache_dir),
        ]  # fmt: skip
        env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "250"}
        return run(argv, check=False, env=env, timeout=120)


@pytest.fixture
def rootless(lab: podmanlab.Lab) -> Iterator[Rootless]:
    realplugin.require(_rootless_available())
    user = pwd.getpwnam(USER)
    # Not below pytest's temporary folder: that is root's alone (0700).
    base = Path(tempfile.mkdtemp(prefix="pmt-rootless-", dir="/tmp"))
    base.chmod(0o755)
    netns = f"pmt-rl-{os.getpid()}-{base.name[-6:]}"
    made = Rootless(lab=lab, dir=base, netns=netns, uid=user.pw_uid, gid=user.pw_gid)
    run(["ip", "netns", "add", netns])
    try:
        run(["ip", "-n", netns, "link", "set", "lo", "up"])
        for sub in ("home", "xdg", "tmp", "graph", "run", "netconf", "volumes"):
            (base / sub).mkdir()
            os.chown(base / sub, user.pw_uid, user.pw_gid)
        (base / "xdg").chmod(0o700)
        (base / "storage.conf").write_text(
            f'[storage]\ndriver = "vfs"\ngraphroot = "{base / "graph"}"\n'
            f'runroot = "{base / "run"}"\n'
        )
        (base / "registries.conf").write_text("")
        (base / "containers.conf").write_text(
            "\n".join(
                [
                    "[containers]",
                    'cgroups = "disabled"',
                    "[engine]",
                    'cgroup_manager = "cgroupfs"',
                    'events_logger = "none"',
                    f'tmp_dir = "{base / "tmp"}"',
                    f'volume_path = "{base / "volumes"}"',
                    "[network]",
                    'network_backend = "cni"',
                    f'network_config_dir = "{base / "netconf"}"',
                    f'cni_plugin_dirs = ["{podmanlab.SYSTEM_PLUGINS}"]',
                    "",
                ]
            )
        )
        tree = base / "image"
        (tree / "bin").mkdir(parents=True)
        (tree / "www").mkdir()
        shutil.copy2(podmanlab.BUSYBOX, tree / "bin" / "busybox")
        (tree / "www" / "index.html").write_text(podmanlab.PAGE)
        run(["tar", "-C", str(tree), "-cf", str(base / "image.tar"), "."])
        made.podman(
            "import", "--change", 'CMD ["/bin/busybox", "sh"]', str(base / "image.tar"), IMAGE
        )
        yield made
    finally:
        made.podman("rm", "-a", "-f", "-t", "0", check=False)
        made.kill_own_processes()
        run(["ip", "netns", "delete", netns], check=False)
        shutil.rmtree(base, ignore_errors=True)


WEB = ("busybox", "httpd", "-f", "-p", "80", "-h", "/www")


def _start(rootless: Rootless, name: str, port: int) -> str:
    done = rootless.podman(
        "run", "-d", "--name", name, "--network", "rlnet", "-p", f"{port}:80", IMAGE, *WEB
    )
    return done.stdout.strip().splitlines()[-1]


def _mappings(rootless: Rootless) -> dict[str, list[tuple[int, tuple[str, ...]]]]:
    done = rootless.portmapctl("list", "-o", "json")
    assert done.returncode == 0, done.stderr
    found: dict[str, list[tuple[int, tuple[str, ...]]]] = {}
    for m in json.loads(done.stdout)["mappings"]:
        found.setdefault(m["container_id"], []).append((m["host_port"], tuple(m["status"])))
    return found


def test_rootless_podmans_mappings_are_read_checked_and_collected_where_it_keeps_them(
    rootless: Rootless,
) -> None:
    rootless.podman("network", "create", "--disable-dns", "--subnet", "10.89.140.0/24", "rlnet")
    web = _start(rootless, "web", 18080)
    gone = _start(rootless, "gone", 18081)
    assert _mappings(rootless) == {web: [(18080, ("ok",))], gone: [(18081, ("ok",))]}
    checked = rootless.portmapctl("check")
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # A runtime that forgot a container: its cache entry gone, its chain left behind.
    entries = sorted((rootless.cache_dir / "results").glob(f"*-{gone}-*"))
    assert entries, "podman's rootless cache entry is where the docs say"
    for entry in entries:
        entry.unlink()
    assert _mappings(rootless) == {web: [(18080, ("ok",))], gone: [(18081, ("stale",))]}
    collected = rootless.portmapctl("gc", "--yes", "--min-age", "0", "-o", "json")
    assert collected.returncode == 0, collected.stderr
    removed = {c["container_id"] for c in json.loads(collected.stdout)["removed"]}
    assert removed == {gone}
    assert _mappings(rootless) == {web: [(18080, ("ok",))]}
