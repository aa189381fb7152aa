"""A command that only looks leaves the node exactly as it was.

Operators run `list` and `check` by hand on production nodes, and a DaemonSet runs
`check` every few minutes: a read that changes anything (a table created, a sysctl set,
a conntrack entry deleted, the nf_tables generation moved) is a safety bug. Each node
kind is made once per module by the real plugins (Debian's 1.1.1 in nft and legacy
mode, upstream v1.9.1's nftables backend), plus an empty namespace, where a read is most
likely to create something; every reading command is then run against it with a
snapshot of everything a command could change taken before and after.
"""

from __future__ import annotations

import difflib
import glob
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pmctl
import pytest
import realplugin as rp
import upstream

from portmapctl.host.netns import entered
from portmapctl.iptables.access import nfgen
from portmapctl.ops.gc.state import STATE_FILE

pytestmark = pytest.mark.netns

_pm = rp.port_mapping
# (container, addresses, port mappings): one dual-stack, one UDP, one on a host address.
WEB = ("web1", ["10.88.0.5/16", "fd00:88::5/64"], [_pm(8080, 80), _pm(5353, 53, "udp")])
DNS = ("dns1", ["10.88.0.6/16"], [_pm(5354, 53, "udp")])
API = ("api1", ["10.88.0.7/16"], [_pm(9090, 90, host_ip="127.0.0.1")])
GONE = ("gone1", ["10.88.0.8/16"], [_pm(7000, 70)])  # no cache entry: stale, gc's to plan
# The nftables backend's containers on the mixed node: other addresses, other ports.
NFT_WEB = ("nweb1", ["10.88.1.5/16", "fd00:88::1:5/64"], [_pm(8180, 80), _pm(5453, 53, "udp")])
NFT_GONE = ("ngone1", ["10.88.1.8/16"], [_pm(7100, 70)])

NODE_IP = "192.0.2.1"  # one of the node's own addresses: flush-udp looks at flows to it


@dataclass(frozen=True)
class Node:
    ns: str
    cache: Path


def _in(ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return rp._run([rp._ip(), "netns", "exec", ns, *args], check=True)


def _debian(ns: str, cache: Path, mode: rp.Mode, containers) -> None:
    for cid, ips, ports in containers:
        conf = rp.plugin_conf("mynet", ips, ports)
        rp.run_plugin("ADD", ns, cid, conf, mode=mode, check=True)
        if cid != GONE[0]:
            rp.write_cni_cache(cache, "mynet", cid, "eth0", conf, ports, ips)


def _upstream(ns: str, cache: Path, containers) -> None:
    for cid, ips, ports in containers:
        conf = upstream.nft_conf("podman", ips, ports)
        upstream.run("v1.9.1", "ADD", ns, cid, conf, check=True)
        if cid not in (GONE[0], NFT_GONE[0]):
            rp.write_cni_cache(cache, "podman", cid, "eth0", conf, ports, ips)


def _udp_flows(ns: str, container_ip: str, container_ip6: str) -> None:
    """Flows flush-udp's dry runs must list and leave: to the UDP mapping's port, one
    DNATed to the container, one never DNATed (--stale-only's kind), one IPv6."""
    rp._run(["ip", "-n", ns, "addr", "add", f"{NODE_IP}/32", "dev", "lo"], check=True)
    rp._run(["ip", "-n", ns, "addr", "add", "2001:db8::1/128", "dev", "lo"], check=True)
    common = ["conntrack", "-I", "-p", "udp", "-t", "3600", "--dport", "5353"]
    _in(ns, *common, "-s", "192.0.2.9", "-d", NODE_IP, "--sport", "40001",
        "--reply-src", container_ip, "--reply-dst", "192.0.2.9",
        "--reply-port-src", "53", "--reply-port-dst", "40001")  # fmt: skip
    _in(ns, *common, "-s", "192.0.2.9", "-d", NODE_IP, "--sport", "40002")
    _in(ns, *common, "-s", "2001:db8::9", "-d", "2001:db8::1", "--sport", "40003",
        "--reply-src", container_ip6, "--reply-dst", "2001:db8::9",
        "--reply-port-src", "53", "--reply-port-dst", "40003")  # fmt: skip


def _bridge(ns: str) -> None:
    """cni0 routes to the containers: where add would set route_localnet."""
    for args in (["link", "add", "cni0", "type", "bridge"],
                 ["addr", "add", "10.88.0.1/16", "dev", "cni0"],
                 ["link", "set", "cni0", "up"]):  # fmt: skip
        rp._run(["ip", "-n", ns, *args], check=True)


def _localnet_off(ns: str) -> None:
    """The plugin's ADD set route_localnet on cni0; off again, a command that sets it
    (as add and check --repair do) shows."""
    _in(ns, "sysctl", "-q", "-w", "net.ipv4.conf.cni0.route_localnet=0")


def _iptables_nft(ns: str, cache: Path) -> None:
    _bridge(ns)
    _debian(ns, cache, "nft", [WEB, DNS, API, GONE])
    _udp_flows(ns, "10.88.0.5", "fd00:88::5")
    _localnet_off(ns)


def _legacy(ns: str, cache: Path) -> None:
    _bridge(ns)
    _debian(ns, cache, "legacy", [WEB, DNS, API, GONE])
    _udp_flows(ns, "10.88.0.5", "fd00:88::5")
    _localnet_off(ns)


def _nftables(ns: str, cache: Path) -> None:
    _bridge(ns)
    _upstream(ns, cache, [WEB, DNS, API, GONE])
    _udp_flows(ns, "10.88.0.5", "fd00:88::5")
    _localnet_off(ns)


def _empty(ns: str, cache: Path) -> None:
    (cache / "results").mkdir(parents=True)


def _mixed(ns: str, cache: Path) -> None:
    _bridge(ns)
    _debian(ns, cache, "nft", [WEB, DNS, GONE])
    _upstream(ns, cache, [NFT_WEB, NFT_GONE])
    _udp_flows(ns, "10.88.0.5", "fd00:88::5")
    _localnet_off(ns)


KINDS: dict[str, Callable[[str, Path], None]] = {
    "iptables-nft": _iptables_nft,
    "legacy": _legacy,
    "nftables": _nftables,
    "empty": _empty,
    "mixed": _mixed,
}


@pytest.fixture(scope="module", params=list(KINDS))
def node(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Node]:
    rp.require(rp.netns_available())
    rp.require(rp.plugin_available())
    if request.param in ("nftables", "mixed"):
        rp.require(upstream.available())
    if request.param == "legacy":
        rp.require(rp.mode_available("legacy"))
    ns = rp.create_netns("pmt-ro")
    try:
        cache = tmp_path_factory.mktemp(f"cni-{request.param}")
        KINDS[request.param](ns, cache)
        _settled(ns)
        yield Node(ns, cache)
    finally:
        rp.delete_netns(ns)


# --- the snapshot -------------------------------------------------------------------------


def _tool(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    # Exit status and stderr too: a save that starts failing (or warning) is a change.
    return f"$ {' '.join(args)} (exit {done.returncode})\n{done.stdout}{done.stderr}"


def _saved(text: str) -> str:
    """A save without its `# Generated by ... on <date>` lines."""
    return "".join(line for line in text.splitlines(True) if not line.startswith("# "))


def _flows(text: str) -> str:
    """conntrack -L's entries, sorted, their timeouts (the third word, counting down)
    left out."""
    lines = []
    for line in text.splitlines():
        words = line.split()
        if len(words) > 3 and words[2].isdigit():
            words[2] = "<timeout>"
        lines.append(" ".join(words))
    return "\n".join(sorted(lines))


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError as err:
        return f"<{err.strerror}>"


def node_state(ns: str) -> dict[str, str]:
    """Everything a portmapctl command could change in `ns`, as text per part."""
    state: dict[str, str] = {}
    with entered(ns):
        # Every nf_tables commit moves it, even one that leaves the ruleset as it was.
        # Asked without settling (that sends an empty batch): a plain read.
        state["nf_tables generation"] = str(nfgen.generation(settled=False))
        for names in sorted(glob.glob("/proc/self/net/*_tables_names")):
            state[names] = _read(names)
        for tool in ("iptables-nft-save", "ip6tables-nft-save"):
            state[tool] = _saved(_tool(tool))
        # iptables-legacy-save creates the table it reads: saved only where the kernel
        # lists a table already (the names files above say whether one appeared).
        for tool, names in (("iptables-legacy-save", "ip_tables_names"),
                            ("ip6tables-legacy-save", "ip6_tables_names")):  # fmt: skip
            if _read(f"/proc/self/net/{names}").split():
                state[tool] = _saved(_tool(tool))
        state["nft list ruleset"] = _tool("nft", "-a", "list", "ruleset")
        for knob in sorted(glob.glob("/proc/sys/net/ipv4/conf/*/route_localnet")):
            state[knob] = _read(knob)
        for family in ("ipv4", "ipv6"):
            state[f"conntrack {family}"] = _flows(_tool("conntrack", "-L", "-f", family))
    return state


# The lock file is "lock" in the run directory (host/lock.py, held()).
GC_RECORDS = (STATE_FILE, "lock")


def run_dir_state(run_dir: Path, metrics: Path, gc: bool) -> dict[str, str]:
    """The files under PORTMAPCTL_RUN_DIR, but the metrics file the command was told to
    write and, for gc, its state file and the lock it saves that under: SPEC §3 gc,
    every run, --dry-run included, records when it first saw each chain not live; §5,
    runs serialise on the lock file."""
    state = {}
    for path in sorted(run_dir.rglob("*")):
        if path == metrics or (gc and path.relative_to(run_dir).as_posix() in GC_RECORDS):
            continue
        state[f"run dir: {path.relative_to(run_dir)}"] = (
            "<directory>" if path.is_dir() else path.read_text(errors="replace")
        )
    return state


def _settled(ns: str) -> None:
    """Waits until the node is quiet: a new interface's IGMP report, sent shortly after
    it comes up, leaves a conntrack entry and counts in the nat hooks' counters."""
    state = node_state(ns)
    for _ in range(10):
        time.sleep(1)
        state, was = node_state(ns), state
        if state == was:
            return
    raise AssertionError(f"the node kept changing on its own:\n{differences(was, state)}")


def differences(before: dict[str, str], after: dict[str, str]) -> str:
    out = []
    for part in sorted(before.keys() | after.keys()):
        was, now = before.get(part, "<absent>"), after.get(part, "<absent>")
        if was != now:
            diff = difflib.unified_diff(
                was.splitlines(), now.splitlines(), "before", "after", lineterm=""
            )
            out.append(f"{part} changed:\n" + "\n".join(diff))
    return "\n\n".join(out)


# --- the commands -------------------------------------------------------------------------

ONE_MAPPING = ["--network", "mynet", "--container", "web1", "--ip", "10.88.0.5/16",
               "--ip", "fd00:88::5/64", "-p", "8080:80", "-p", "5353:53/udp"]  # fmt: skip
NEW_MAPPING = ["--network", "mynet", "--container", "new1", "--ip", "10.88.0.9/16",
               "-p", "8090:80", "-p", "5355:53/udp"]  # fmt: skip
# Conditions are put to iptables-restore --test before a write (ops/conditions.py);
# legacy's --test opens the nat table, which created it where there was none.
LEGACY_CONDITIONS = ["--ip", "fd00:88::9/64", "--iptables", "legacy",
                     "--conditions-v4", "-s 10.0.0.0/8", "--conditions-v6", "-s fd00::/8"]  # fmt: skip
NFT_CONDITIONS = ["--ip", "fd00:88::9/64", "--iptables", "nft",
                  "--conditions-v4", "-s 10.0.0.0/8", "--conditions-v6", "-s fd00::/8"]  # fmt: skip
NFTABLES_CONDITIONS = ["--ip", "fd00:88::9/64", "--backend", "nftables",
                       "--conditions-v4", "ip saddr 10.0.0.0/8", "--conditions-v6", "ip6 saddr fd00::/8"]  # fmt: skip

READS = {
    "list": ["list"],
    "list json": ["list", "-o", "json"],
    "list conntrack": ["list", "--conntrack"],
    "list iptables legacy": ["list", "--iptables", "legacy"],
    "list iptables nft": ["list", "--iptables", "nft"],
    "list backend nftables": ["list", "--backend", "nftables"],
    "list backend iptables": ["list", "--backend", "iptables"],
    "check": ["check"],
    "check json": ["check", "-o", "json"],
    "check metrics": ["check", "--metrics-file", "{metrics}"],
    "check iptables legacy": ["check", "--iptables", "legacy"],
    "check one mapping": ["check", *ONE_MAPPING],
    "gc dry-run": ["gc", "--dry-run", "--min-age", "0"],
    "gc dry-run all": ["gc", "--dry-run", "--all"],
    "flush-udp dry-run": ["flush-udp", "--dry-run"],
    "flush-udp stale-only dry-run": ["flush-udp", "--stale-only", "--dry-run"],
    "add dry-run": ["add", *NEW_MAPPING, "--dry-run"],
    "add dry-run conditions legacy": ["add", *NEW_MAPPING, *LEGACY_CONDITIONS, "--dry-run"],
    "add dry-run conditions nft": ["add", *NEW_MAPPING, *NFT_CONDITIONS, "--dry-run"],
    "add dry-run conditions nftables": ["add", *NEW_MAPPING, *NFTABLES_CONDITIONS, "--dry-run"],
}


@pytest.mark.parametrize("command", list(READS))
def test_a_read_changes_nothing(node: Node, command: str, tmp_path: Path) -> None:
    run_dir, metrics = tmp_path / "run", tmp_path / "metrics.prom"
    args = [arg.replace("{metrics}", str(metrics)) for arg in READS[command]]
    gc = args[0] == "gc"
    before = {**node_state(node.ns), **run_dir_state(run_dir, metrics, gc)}
    done = pmctl.run([*args, "--netns", node.ns, "--cni-cache-dir", str(node.cache)],
                     env={"PORTMAPCTL_RUN_DIR": str(run_dir)})  # fmt: skip
    after = {**node_state(node.ns), **run_dir_state(run_dir, metrics, gc)}
    # It looked: a read that stopped at once (exit 3, or a traceback) proves nothing.
    assert done.returncode in (0, 1, 2), done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    changed = differences(before, after)
    assert not changed, f"portmapctl {' '.join(args)} changed the node:\n{changed}"


def test_the_snapshot_sees_what_a_write_changes(tmp_path: Path) -> None:
    """The snapshot is not blind: add and flush-udp (not dry runs) on a node show up in
    it, in the parts they change."""
    rp.require(rp.netns_available())
    rp.require(rp.plugin_available())
    ns = rp.create_netns("pmt-ro")
    try:
        cache = tmp_path / "cni"
        _iptables_nft(ns, cache)
        before = node_state(ns)
        done = pmctl.run(["add", *NEW_MAPPING, "--netns", ns, "--cni-cache-dir", str(cache)],
                         env={"PORTMAPCTL_RUN_DIR": str(tmp_path / "run")})  # fmt: skip
        assert done.returncode == 0, done.stderr
        done = pmctl.run(["flush-udp", "--netns", ns, "--cni-cache-dir", str(cache)],
                         env={"PORTMAPCTL_RUN_DIR": str(tmp_path / "run")})  # fmt: skip
        assert done.returncode == 0, done.stderr
        changed = differences(before, node_state(ns))
        for part in ("nf_tables generation", "iptables-nft-save", "nft list ruleset",
                     "/proc/sys/net/ipv4/conf/cni0/route_localnet", "conntrack ipv4"):  # fmt: skip
            assert f"{part} changed" in changed, (part, changed)
    finally:
        rp.delete_netns(ns)
