"""A throwaway node to try portmapctl on, and to run the examples in docs/ as written.

    sudo python docs/demo_node.py up                 build it
    sudo python docs/demo_node.py run portmapctl list   run a command "on the node"
    sudo python docs/demo_node.py shell              a root shell "on the node"
    sudo python docs/demo_node.py break firewall-reload | legacy-plugin
    sudo python docs/demo_node.py down               remove it

The node is a network namespace (`pmdemo`) where the real CNI portmap plugin
(/usr/lib/cni/portmap) has published ports, with a libcni cache and a /run/portmapctl
of its own; a second namespace (`pmdemo-pods`) holds the cached containers' addresses,
as each container's own would. Commands started with `run` or `shell` see that namespace's iptables and
conntrack, and the demo's cache at /var/lib/cni and state at /run/portmapctl (bind
mounts private to them), so `portmapctl list` there works as on a real node. Nothing
outside the two namespaces is touched, except that an empty /var/lib/cni is created as a
mount point when the host has none (and removed again by `down`).

What `up` leaves (network "podman", SNAT on, as podman/containerd would):

- web  3f2a9c1e5b7d  10.88.0.5, fd00:88::5  8080->80/tcp, 5353->53/udp   (cached)
- old  a1b2c3d4e5f6  10.88.0.8              8443->443/tcp  (its DEL never ran: no cache)
- new  c9d8e7f6a5b4  10.88.0.9              8443->443/tcp  (the restarted pod: cached)
- UDP conntrack entries to host port 5353: one to web, one still DNATed to 10.88.0.7
  (a pod that is gone), one never DNATed (sent before the mapping existed).

Needs root, iproute2, iptables, conntrack and containernetworking-plugins; uses the
helpers in tests/realplugin.py to run the plugin and write the cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import realplugin as rp  # noqa: E402

NS = "pmdemo"
STATE = Path("/tmp/pmdemo")
CACHE = STATE / "cni"
RUN = STATE / "run"
MOUNTPOINT_MARK = STATE / "created-var-lib-cni"

WEB = ("3f2a9c1e5b7d", ["10.88.0.5/16", "fd00:88::5/64"])
OLD = ("a1b2c3d4e5f6", ["10.88.0.8/16"])
NEW = ("c9d8e7f6a5b4", ["10.88.0.9/16"])
WEB_PORTS = [
    {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
    {"hostPort": 5353, "containerPort": 53, "protocol": "udp"},
]
TLS_PORTS = [{"hostPort": 8443, "containerPort": 443, "protocol": "tcp"}]


def add(container: str, ips: List[str], ports: List[dict], cached: bool, mode: str = "nft"):
    conf = rp.plugin_conf("podman", ips, ports)
    rp.run_plugin("ADD", NS, container, conf, mode=mode, check=True)
    if cached:
        # The entry names a namespace that exists and holds the container's address, as
        # after a real ADD (one namespace stands in for every container's): a path that
        # does not exist makes a zombie, and one without the address a container whose
        # DEL is under way, which check --repair leaves alone.
        netns = str(Path("/run/netns", _pods()))
        rp.hold_addresses(netns, ips)
        rp.write_cni_cache(CACHE, "podman", container, "eth0", conf, ports, ips, netns=netns)


def _pods() -> str:
    """The namespace standing in for the containers' own (named after NS, which the
    docs' tests change)."""
    return f"{NS}-pods"


def conntrack(*args: str) -> None:
    subprocess.run(["ip", "netns", "exec", NS, "conntrack", *args], check=True, capture_output=True)


def udp_entry(sport: int, reply_src: str) -> None:
    # A client 192.0.2.10 talking to host port 5353; the reply comes from reply_src.
    conntrack(
        "-I", "-p", "udp", "-s", "192.0.2.10", "-d", "203.0.113.1",
        "--sport", str(sport), "--dport", "5353",
        "--reply-src", reply_src, "--reply-dst", "192.0.2.10",
        "--reply-port-src", "53" if reply_src != "203.0.113.1" else "5353",
        "--reply-port-dst", str(sport), "-t", "3600",
    )  # fmt: skip


def up() -> None:
    if Path("/run/netns", NS).exists():
        sys.exit(f"{NS} exists already: `{sys.argv[0]} down` first")
    subprocess.run(["ip", "netns", "add", NS], check=True)
    subprocess.run(["ip", "-n", NS, "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "netns", "add", _pods()], check=True)
    subprocess.run(["ip", "-n", _pods(), "link", "set", "lo", "up"], check=True)
    # The node's own address, which the UDP flows below are sent to: flush-udp only
    # looks at flows to the node's addresses (a forwarded flow met no mapping).
    subprocess.run(["ip", "-n", NS, "addr", "add", "203.0.113.1/32", "dev", "lo"], check=True)
    (CACHE / "results").mkdir(parents=True, exist_ok=True)
    RUN.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not Path("/var/lib/cni").exists():
        Path("/var/lib/cni").mkdir(parents=True)
        MOUNTPOINT_MARK.touch()
    add(*WEB, WEB_PORTS, cached=True)
    add(*OLD, TLS_PORTS, cached=False)
    add(*NEW, TLS_PORTS, cached=True)
    udp_entry(40001, "10.88.0.5")  # to web: fine
    udp_entry(40002, "10.88.0.7")  # to a pod that is gone
    udp_entry(40003, "203.0.113.1")  # never DNATed: answered by the host itself
    print(f"{NS} is up: `sudo python {sys.argv[0]} shell`")


def break_node(how: str) -> None:
    if how == "firewall-reload":
        # What `firewall-cmd --reload` or an `iptables-restore` of a saved ruleset does
        # to the nat table: every chain the plugin made is gone.
        for tool in ("iptables", "ip6tables"):
            for flag in ("-F", "-X"):
                run_on_node([tool, "-t", "nat", flag])
    elif how == "legacy-plugin":
        # A plugin binary that runs iptables-legacy on an nf_tables host.
        add("e5f6a7b8c9d0", ["10.88.0.11/16"], TLS_PORTS[:0] + [
            {"hostPort": 7000, "containerPort": 7000, "protocol": "tcp"}
        ], cached=True, mode="legacy")  # fmt: skip
    else:
        sys.exit(f"unknown way to break the node: {how}")


def _on_node(command: List[str]) -> List[str]:
    mounts = (
        f"mount --bind {CACHE} /var/lib/cni && mkdir -p /run/portmapctl"
        f' && mount --bind {RUN} /run/portmapctl && exec "$@"'
    )
    return ["ip", "netns", "exec", NS, "sh", "-c", mounts, "sh", *command]


def run_on_node(command: List[str]) -> int:
    return subprocess.run(_on_node(command), check=False).returncode


def down() -> None:
    subprocess.run(["ip", "netns", "delete", NS], check=False)
    subprocess.run(["ip", "netns", "delete", _pods()], check=False, capture_output=True)
    if MOUNTPOINT_MARK.exists():
        try:
            Path("/var/lib/cni").rmdir()
        except OSError:
            pass
    shutil.rmtree(STATE, ignore_errors=True)


def main(argv: List[str]) -> int:
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces, iptables)")
    if not argv or argv[0] not in ("up", "down", "run", "shell", "break"):
        sys.exit(__doc__)
    action, rest = argv[0], argv[1:]
    if action == "up":
        up()
    elif action == "down":
        down()
    elif action == "break":
        break_node(rest[0] if rest else "")
    elif action == "shell":
        return run_on_node([os.environ.get("SHELL", "/bin/bash")])
    else:
        return run_on_node(rest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
