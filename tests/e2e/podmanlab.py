"""Podman with its CNI backend, boxed in so that the machine it runs on is untouched.

A :class:`Lab` (one per test module) holds podman's storage (vfs, in a temporary folder),
a local busybox image and a private mount namespace that every podman call joins. In
that mount namespace, and only there:

- ``/var/lib`` is an overlay whose writes land in the lab folder, and ``/var/lib/cni``
  (libcni's cache, which podman 4.3 cannot be told to put elsewhere) is a bind mount of
  the current node's cache folder;
- ``/dev/shm`` is a fresh tmpfs (podman's lock segment lives there);
- ``/sys/fs/cgroup`` is cgroup2 when the host is in hybrid mode (crun refuses hybrid
  mode even with cgroups disabled).

``/run/netns`` stays shared with the host, so the namespaces podman creates for its
containers (``/run/netns/netns-…``) are visible to portmapctl, as on a real node.

A :class:`Node` (one per test) is a fresh network namespace in which podman runs
(``nsenter --net``), so its bridges, its iptables rules and its conntrack table are the
node's, not the host's; plus a fresh CNI cache folder and network config folder.

Everything runs with argument lists and a timeout; nothing goes through a shell.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

IMAGE = "localhost/portmapctl-e2e-busybox:latest"
# A pod's infra container (podman's own pause image needs catatonit, which Debian's
# podman does not depend on): the same tree, sleeping.
INFRA_IMAGE = "localhost/portmapctl-e2e-pause:latest"
BUSYBOX = "/bin/busybox"
# The node's own address (TEST-NET-1, on lo): what clients connect to.
NODE_IP = "192.0.2.10"
PAGE = "hello from portmapctl e2e\n"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PODMAN_TIMEOUT = 90.0
TOOL_TIMEOUT = 30.0
SYSTEM_PLUGINS = Path("/usr/lib/cni")
TOOLS = ("podman", "nsenter", "unshare", "mount", "umount", "findmnt", "ip", "conntrack")


def run(
    argv: Sequence[str],
    *,
    timeout: float = TOOL_TIMEOUT,
    check: bool = True,
    input: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with a timeout (killed on expiry), stdin closed unless ``input``."""
    done = subprocess.run(
        list(argv),
        input=input if input is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {done.returncode}\n"
            f"stdout: {done.stdout}\nstderr: {done.stderr}"
        )
    return done


def _which(tool: str) -> str | None:
    return shutil.which(tool, path=os.environ.get("PATH", "") + ":" + SYSTEM_PATH)


@functools.cache
def available() -> tuple[bool, str]:
    """Whether podman end-to-end tests can run here, and if not why (for skip/fail)."""
    if os.geteuid() != 0:
        return False, "needs root (podman, network and mount namespaces)"
    for tool in TOOLS:
        if _which(tool) is None:
            return False, f"no `{tool}` (Debian packages podman, util-linux, iproute2, conntrack)"
    if not (_which("crun") or _which("runc")):
        return False, "no OCI runtime (Debian package crun)"
    if not os.access(BUSYBOX, os.X_OK):
        return False, f"no {BUSYBOX} (Debian package busybox-static)"
    with open(BUSYBOX, "rb") as f:
        head = f.read(1 << 16)
    # A dynamically linked busybox would need its libraries in the image too.
    if b"ld-linux" in head:
        return False, f"{BUSYBOX} is not statically linked (install busybox-static)"
    if not (SYSTEM_PLUGINS / "bridge").exists():
        return False, "no /usr/lib/cni/bridge (Debian package containernetworking-plugins)"
    return True, ""


# --- the lab: storage, image, mount namespace ---------------------------------------------


@dataclass(frozen=True)
class Lab:
    root: Path

    @property
    def mntns(self) -> Path:
        return self.root / "ns" / "mnt"

    @property
    def storage_conf(self) -> Path:
        return self.root / "storage.conf"

    def containers_conf(self, network_config_dir: Path, path: Path) -> str:
        """containers.conf for one node (written at `path`): CNI backend, everything
        under the lab folder.

        conmon's exit command (`podman container cleanup`, the CNI DEL after a container
        exits on its own or is killed) gets only flags and conmon's environment: the
        environment names this file, so the DEL runs with the node's plugin folder;
        its --root puts podman's database under graphroot/libpod, so no static_dir
        here (one elsewhere and the clean-up finds no container)."""
        # No CAP_SYS_RESOURCE in some sandboxes: podman's default rlimits (raised above
        # the caller's) would make crun fail, so ask for low ones.
        conmon_env = [
            f"PATH={SYSTEM_PATH}",
            f"CONTAINERS_CONF={path}",
            f"CONTAINERS_STORAGE_CONF={self.storage_conf}",
        ]
        return "\n".join(
            [
                "[containers]",
                'default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]',
                'cgroups = "disabled"',
                "[engine]",
                'cgroup_manager = "cgroupfs"',
                'events_logger = "none"',
                f"conmon_env_vars = {json.dumps(conmon_env)}",
                f'tmp_dir = "{self.root / "tmp"}"',
                f'volume_path = "{self.root / "volumes"}"',
                "[network]",
                'network_backend = "cni"',
                f'network_config_dir = "{network_config_dir}"',
                f'cni_plugin_dirs = ["{SYSTEM_PLUGINS}"]',
                "",
            ]
        )

    def podman_env(self, containers_conf: Path) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", SYSTEM_PATH) + ":" + SYSTEM_PATH,
            "HOME": str(self.root),
            "CONTAINERS_CONF": str(containers_conf),
            "CONTAINERS_STORAGE_CONF": str(self.storage_conf),
            "CONTAINERS_REGISTRIES_CONF": str(self.root / "registries.conf"),
        }

    def in_mntns(self, argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess[str]:
        return run(["nsenter", f"--mount={self.mntns}", *argv], **kwargs)


def _mount_of(path: str) -> str:
    # Stacked mounts (two on /dev/shm here) print the target once per mount.
    return run(["findmnt", "-n", "-o", "TARGET", "-T", path]).stdout.splitlines()[0].strip()


def _fs_type(path: str) -> str:
    return run(["stat", "-f", "-c", "%T", path]).stdout.strip()


def make_lab(root: Path) -> Lab:
    """Create the lab under ``root`` (empty folder); undo with :func:`close_lab`."""
    lab = Lab(root)
    for sub in ("graph", "run", "tmp", "volumes", "ns", "ovl/upper", "ovl/work"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    lab.storage_conf.write_text(
        f'[storage]\ndriver = "vfs"\ngraphroot = "{root / "graph"}"\nrunroot = "{root / "run"}"\n'
    )
    (root / "registries.conf").write_text("")
    # A persistent mount namespace is a bind mount of /proc/PID/ns/mnt onto a file, which
    # must not sit on a shared mount: give the folder a private mount of its own.
    ns_dir = str(root / "ns")
    _ensure_shared_run_netns()
    run(["mount", "--bind", ns_dir, ns_dir])
    try:
        run(["mount", "--make-private", ns_dir])
        lab.mntns.touch()
        run(["unshare", f"--mount={lab.mntns}", "--propagation", "unchanged", "true"])
        _furnish_mntns(lab)
        _import_image(lab)
    except BaseException:
        close_lab(lab)
        raise
    return lab


def _ensure_shared_run_netns() -> None:
    """Make sure /run/netns is a shared mount of its own before the lab copies it.

    ``ip netns add`` makes it so on first use. Were it made only after the lab's mount
    namespace, the lab would get a one-way (slave) copy, and the namespaces podman
    mounts there would not show on the host.
    """
    probe = f"pmt-e2e-probe-{os.getpid()}-{secrets.token_hex(3)}"
    run(["ip", "netns", "add", probe])
    run(["ip", "netns", "delete", probe])
    found = run(["findmnt", "-n", "-o", "PROPAGATION", "/run/netns"], check=False).stdout
    if "shared" not in found:
        raise AssertionError(f"/run/netns is not a shared mount ({found.strip() or 'none'})")


def _furnish_mntns(lab: Lab) -> None:
    # "unchanged" keeps /run/netns in the host's peer group (podman's container
    # namespaces must show on the host). The mounts made below must not travel the other
    # way: turn the mounts they are made on into slaves (one level, not recursive, which
    # would cut /run/netns off too).
    # The lab folder too: podman mounts a tmpfs per container below it.
    places = ("/var/lib", "/sys/fs/cgroup", "/dev/shm", str(lab.root))
    for target in sorted({_mount_of(place) for place in places}):
        lab.in_mntns(["mount", "--make-slave", target])
    upper, work = lab.root / "ovl/upper", lab.root / "ovl/work"
    overlay = lab.in_mntns(
        [
            "mount", "-t", "overlay", "overlay",
            "-o", f"lowerdir=/var/lib,upperdir={upper},workdir={work}", "/var/lib",
        ],
        check=False,
    )  # fmt: skip
    if overlay.returncode != 0:
        # No overlayfs: an empty /var/lib will do (podman is told where its own state
        # goes; only libcni insists on /var/lib/cni).
        lab.in_mntns(["mount", "-t", "tmpfs", "-o", "size=64m", "pmt-e2e-varlib", "/var/lib"])
    lab.in_mntns(["mkdir", "-p", "/var/lib/cni"])
    lab.in_mntns(["mount", "-t", "tmpfs", "-o", "size=64m", "pmt-e2e-shm", "/dev/shm"])
    if _fs_type("/sys/fs/cgroup") != "cgroup2fs":
        lab.in_mntns(["mount", "-t", "cgroup2", "none", "/sys/fs/cgroup"])


def _import_image(lab: Lab) -> None:
    """A busybox-static image: /bin/busybox, /bin/sh and a page to serve in /www."""
    tree = lab.root / "image"
    (tree / "bin").mkdir(parents=True)
    (tree / "www").mkdir()
    shutil.copy2(BUSYBOX, tree / "bin" / "busybox")
    (tree / "bin" / "sh").symlink_to("busybox")
    (tree / "www" / "index.html").write_text(PAGE)
    tarball = lab.root / "image.tar"
    run(["tar", "-C", str(tree), "-cf", str(tarball), "."])
    conf = lab.root / "containers-import.conf"
    conf.write_text(lab.containers_conf(lab.root / "netconf-import", conf))
    for cmd, image in (('["/bin/sh"]', IMAGE), ('["/bin/busybox", "sleep", "86400"]', INFRA_IMAGE)):
        lab.in_mntns(
            ["podman", "import", "--change", f"CMD {cmd}", str(tarball), image],
            env=lab.podman_env(conf),
            timeout=PODMAN_TIMEOUT,
        )


def close_lab(lab: Lab) -> None:
    """Remove what :func:`make_lab` mounted (the folder itself is pytest's)."""
    if lab.mntns.exists():
        run(["umount", str(lab.mntns)], check=False)
    run(["umount", str(lab.root / "ns")], check=False)


# --- a node: a network namespace podman runs in -------------------------------------------


@dataclass(frozen=True)
class Container:
    name: str
    id: str
    # network name -> IPv4 address of the container on it
    ips: dict[str, str]
    sandbox: str


@dataclass(frozen=True)
class Node:
    lab: Lab
    netns: str
    dir: Path
    # Container namespaces this test made, to unmount if podman could not.
    sandboxes: list[str] = field(default_factory=list)

    @property
    def cache_dir(self) -> Path:
        return self.dir / "cni-cache"

    @property
    def host_local_dir(self) -> Path:
        """host-local's data directory (one folder of leases per network): podman's
        conflists name none, so host-local's default, /var/lib/cni/networks, which in
        the lab's mount namespace is in the node's cache folder."""
        return self.cache_dir / "networks"

    @property
    def netconf_dir(self) -> Path:
        return self.dir / "netconf"

    @property
    def conf(self) -> Path:
        return self.dir / "containers.conf"

    # -- commands --

    def podman(
        self, *args: str, check: bool = True, timeout: float = PODMAN_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        argv = [
            "nsenter", f"--mount={self.lab.mntns}", f"--net=/run/netns/{self.netns}",
            "podman", *args,
        ]  # fmt: skip
        return run(argv, env=self.lab.podman_env(self.conf), check=check, timeout=timeout)

    def ns(
        self, *argv: str, check: bool = True, input: str | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the node's network namespace (host mounts)."""
        return run(
            ["ip", "netns", "exec", self.netns, *argv], check=check, input=input, timeout=timeout
        )

    def portmapctl(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """``python -m portmapctl ARGS --netns NODE --cni-cache-dir CACHE`` (never raises);
        `env` is added to the environment."""
        argv = [
            sys.executable, "-m", "portmapctl", *args,
            "--netns", self.netns, "--cni-cache-dir", str(self.cache_dir),
        ]  # fmt: skip
        return run(argv, check=False, timeout=timeout, env=_portmapctl_env(env))

    def portmapctl_without_sys_admin(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """``portmapctl ARGS --cni-cache-dir CACHE`` run in the node's namespace as the
        shipped DaemonSet and systemd units run it: root with CAP_NET_ADMIN, without
        CAP_SYS_ADMIN (no container's namespace can be entered). `env` is added to the
        environment. Never raises."""
        from pmctl import without_sys_admin

        argv = [*without_sys_admin(self.netns), sys.executable, "-m", "portmapctl", *args,
                "--cni-cache-dir", str(self.cache_dir)]  # fmt: skip
        return run(argv, check=False, timeout=timeout, env=_portmapctl_env(env))

    def nat_rules(self) -> list[str]:
        """``iptables-save -t nat`` of the node: declarations of user chains and rules."""
        text = self.ns("iptables-save", "-t", "nat").stdout
        return [
            line
            for line in text.splitlines()
            if line.startswith("-A ") or (line.startswith(":") and " - " in line)
        ]

    # -- podman objects --

    def network(self, name: str, subnet: str) -> None:
        """A podman (CNI) network; explicit subnets, so a removed one is never reused."""
        self.podman("network", "create", "--disable-dns", "--subnet", subnet, name)

    def use_portmap(self, binary: Path) -> None:
        """Podman's plugin folder for this node: the system's plugins, `binary` as portmap."""
        self.use_plugin("portmap", binary)

    def use_plugin(self, name: str, binary: Path) -> None:
        """Podman's plugin folder for this node: the system's plugins, `binary` as `name`
        (the folder made on first use; a later call replaces one more plugin)."""
        plugins = self.dir / "cni-plugins"
        if not plugins.exists():
            plugins.mkdir()
            for plugin in SYSTEM_PLUGINS.iterdir():
                os.symlink(plugin, plugins / plugin.name)
            conf = self.conf.read_text()
            self.conf.write_text(conf.replace(f'"{SYSTEM_PLUGINS}"', f'"{plugins}"'))
        (plugins / name).unlink(missing_ok=True)
        os.symlink(binary, plugins / name)

    def use_backend(self, network: str, backend: str) -> None:
        """The portmap plugin's `backend` in a network's config (podman writes none)."""
        conflist = self.netconf_dir / f"{network}.conflist"
        config = json.loads(conflist.read_text())
        for plugin in config["plugins"]:
            if plugin["type"] == "portmap":
                plugin["backend"] = backend
        conflist.write_text(json.dumps(config))

    def start(
        self,
        name: str,
        networks: Sequence[str],
        ports: Sequence[str],
        command: Sequence[str] = ("busybox", "httpd", "-f", "-p", "80", "-h", "/www"),
    ) -> Container:
        args = ["run", "-d", "--name", name, "--network", ",".join(networks)]
        for port in ports:
            args += ["-p", port]
        cid = self.podman(*args, IMAGE, *command).stdout.strip().splitlines()[-1]
        return self._inspected(name, cid)

    def pod(self, name: str, networks: Sequence[str], ports: Sequence[str]) -> Container:
        """A started pod publishing `ports`: its infra container, whose ID the plugin's
        chains carry (the pod's other containers share its network namespace)."""
        args = ["pod", "create", "--name", name, "--network", ",".join(networks)]
        for port in ports:
            args += ["-p", port]
        self.podman(*args, "--infra-image", INFRA_IMAGE)
        self.podman("pod", "start", name)
        infra = json.loads(self.podman("pod", "inspect", name).stdout)["InfraContainerID"]
        return self._inspected(f"{name}-infra", infra)

    def _inspected(self, name: str, cid: str) -> Container:
        info = json.loads(self.podman("inspect", cid).stdout)[0]
        settings = info["NetworkSettings"]
        sandbox = settings.get("SandboxKey", "")
        if sandbox:
            self.sandboxes.append(sandbox)
        ips = {net: value["IPAddress"] for net, value in settings["Networks"].items()}
        return Container(name=name, id=cid, ips=ips, sandbox=sandbox)

    def wait_torn_down(self, container: Container, timeout: float = 30.0) -> None:
        """Wait for podman to tear the container's network down (conmon's exit command
        runs `podman container cleanup`, a CNI DEL, once the container has exited)."""
        deadline = time.monotonic() + timeout
        while True:
            info = json.loads(self.podman("inspect", container.id).stdout)[0]
            if not info["NetworkSettings"].get("SandboxKey"):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{container.name}: network not torn down in {timeout}s")
            time.sleep(0.2)

    def cache_entries(self, container: Container) -> list[Path]:
        return sorted((self.cache_dir / "results").glob(f"*-{container.id}-*"))

    def leak(self, container: Container, network: str) -> None:
        """Leak the way podman does: cache entry and network config gone before ``rm -f``.

        The CNI DEL then fails ("network not found"), podman removes the container anyway
        and the portmap chain stays behind with nothing naming it live.
        """
        for entry in self.cache_entries(container):
            entry.unlink()
        for conf in self.netconf_dir.glob(f"{network}.conf*"):
            conf.unlink()
        self.podman("rm", "-f", "-t", "0", container.id)

    def kill_and_forget(self, container: Container) -> None:
        """Kill conmon and the container with SIGKILL and unmount its network namespace.

        No CNI DEL runs: the cache entry stays, naming a namespace that no longer exists
        (a zombie). Podman is not asked about the container again until clean-up.
        """
        state = json.loads(self.podman("inspect", container.id).stdout)[0]["State"]
        for pid in (state.get("ConmonPid"), state.get("Pid")):
            if pid:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        _unmount_netns(container.sandbox)

    # -- traffic --

    def http_get(self, address: str, port: int, *, attempts: int = 10, wait: float = 3.0) -> str:
        """The body busybox httpd serves at ``address:port``, asked from the node.

        Retried briefly: the container's httpd may not listen yet. Returns "" when
        nothing answered (``attempts=1`` to show that nothing does).
        """
        request = "GET / HTTP/1.0\r\n\r\n"
        for attempt in range(attempts):
            try:
                done = self.ns(
                    BUSYBOX, "nc", "-w", "2", address, str(port),
                    input=request, check=False, timeout=wait,
                )  # fmt: skip
            except subprocess.TimeoutExpired:
                # Connected but no answer: with the DNAT gone, the client reaches the
                # socket podman's conmon listens on to reserve the host port.
                continue
            # text mode turned the CRLFs into newlines
            if done.returncode == 0 and "\n\n" in done.stdout:
                return done.stdout.split("\n\n", 1)[1]
            if attempt + 1 < attempts:
                time.sleep(0.3)
        return ""

    def send_udp(self, address: str, port: int, sport: int, count: int = 3) -> None:
        """Send UDP datagrams from the node (fixed source port, as a client that stays)."""
        code = (
            "import socket, sys\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            "s.bind((sys.argv[1], int(sys.argv[3])))\n"
            "for _ in range(int(sys.argv[4])):\n"
            "    s.sendto(b'ping', (sys.argv[1], int(sys.argv[2])))\n"
        )
        self.ns(sys.executable, "-c", code, address, str(port), str(sport), str(count))

    def udp_flows(self, port: int) -> list[dict[str, str]]:
        """UDP conntrack entries to ``port``: original and reply ``src``/``dst``."""
        done = self.ns("conntrack", "-L", "-p", "udp", "--orig-port-dst", str(port), check=False)
        flows = []
        for line in done.stdout.splitlines():
            fields = [f.split("=", 1) for f in line.split() if "=" in f]
            srcs = [v for k, v in fields if k == "src"]
            dsts = [v for k, v in fields if k == "dst"]
            if len(srcs) >= 2 and len(dsts) >= 2:
                flows.append(
                    {"src": srcs[0], "dst": dsts[0], "reply_src": srcs[1], "reply_dst": dsts[1]}
                )
        return flows


def _portmapctl_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "NO_COLOR": "1", "COLUMNS": "250", **(extra or {})}


def _unmount_netns(path: str) -> None:
    if not path or not Path(path).exists():
        return
    run(["umount", path], check=False)
    try:
        Path(path).unlink()
    except FileNotFoundError:
        pass


def open_node(lab: Lab, base: Path) -> Node:
    """A fresh node: network namespace (lo, with :data:`NODE_IP`), folders."""
    name = f"pmt-e2e-{os.getpid()}-{secrets.token_hex(3)}"
    run(["ip", "netns", "add", name])
    node = Node(lab=lab, netns=name, dir=base)
    try:
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        # On lo (no dummy module everywhere): local all the same, and routed back to.
        run(["ip", "-n", name, "addr", "add", f"{NODE_IP}/32", "dev", "lo"])
        node.cache_dir.mkdir(parents=True)
        node.netconf_dir.mkdir()
        node.conf.write_text(lab.containers_conf(node.netconf_dir, node.conf))
        # libcni writes /var/lib/cni: in the lab's mount namespace that is this folder.
        lab.in_mntns(["mount", "--bind", str(node.cache_dir), "/var/lib/cni"])
    except BaseException:
        run(["ip", "netns", "delete", name], check=False)
        raise
    return node


def close_node(node: Node) -> None:
    """Remove the node's containers, namespaces and mounts; best effort, never raises."""
    # A container whose conmon was killed takes two tries: the first only notices that
    # it stopped ("container state improper"), the second removes it.
    for _ in range(3):
        try:
            # Pods first: their infra containers go only with them.
            node.podman("pod", "rm", "-a", "-f", "-t", "0", check=False)
            if node.podman("rm", "-a", "-f", "-t", "0", check=False).returncode == 0:
                break
        except subprocess.TimeoutExpired:
            pass
    for sandbox in node.sandboxes:
        _unmount_netns(sandbox)
    try:
        node.lab.in_mntns(["umount", "/var/lib/cni"], check=False)
    except subprocess.TimeoutExpired:
        pass
    run(["ip", "netns", "delete", node.netns], check=False)


def same_network(address: str, subnet: str) -> bool:
    return ipaddress.ip_address(address) in ipaddress.ip_network(subnet)
