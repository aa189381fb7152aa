"""`check --repair` while a container's network is being torn down.

libcni's DEL of a network list runs its plugins last first (here portmap, then bridge)
and removes the cache entry only after all of them ran. In between, the container is
still cached: a repair that reads the table after portmap's DEL (its chain gone, or
gone already in a firewall flush) made the chain again, a DNAT of its host ports to an
address host-local is giving back, kept by gc as long as the entry stood and removed
only `--min-age` after it went.

What a DEL under way looks like from outside (measured with podman 4.3 and its CNI
conflist bridge, portmap, firewall, tuning, on `rm -f`, `stop` and `network
disconnect`): the namespace stays until the runtime removes it after the DEL; the
container's processes are gone before it starts on `rm -f` and `stop` (containerd too
stops the sandbox first), but not on `network disconnect` (nor under CRI-O, which tears
the network down first); portmap's DEL ends, then about 10 ms later bridge's DEL has
deleted the container's interface, and with it its address, then host-local gives the
address back and libcni removes the entry, about 60 ms later. The repair leaves a
container alone whose namespace holds none of its addresses; between portmap's DEL and
the interface's removal nothing tells it apart from a live container after a flush.

Debian's real bridge (host-local IPAM in the test's folder) and portmap (or upstream
v1.9.1's, on its nftables backend) run plugin by plugin as libcni chains them, and the
cache entry is written and removed as libcni does.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pmctl
import pytest
import realplugin as rp
import upstream

from portmapctl.iptables.chains import chain_name

pytestmark = pytest.mark.netns

NETWORK = "delnet"
BACKENDS = pytest.mark.parametrize("backend", ["iptables", "nftables"])


BRIDGE = {"type": "bridge", "bridge": "cni-pmt0", "isGateway": True, "ipMasq": False}
RANGES = [[{"subnet": "10.89.0.0/24"}]]


def conflist(ipam_dir: Path, backend: str, main: str = "bridge") -> dict[str, Any]:
    """A podman-shaped network list: bridge (host-local), then portmap; or, `main` =
    "flannel", k3s's shape: flannel (its bridge's host-local data directory in its own
    `ipam`), then portmap."""
    portmap: dict[str, Any] = {"type": "portmap", "capabilities": {"portMappings": True}}
    if backend == "nftables":
        portmap["backend"] = "nftables"
    first: dict[str, Any] = dict(
        BRIDGE, ipam={"type": "host-local", "ranges": RANGES, "dataDir": str(ipam_dir)}
    )
    if main == "flannel":
        first = {"type": "flannel", "ipam": {"dataDir": str(ipam_dir)},
                 "delegate": {"bridge": "cni-pmt0", "hairpinMode": True}}  # fmt: skip
    return {"cniVersion": "0.4.0", "name": NETWORK, "plugins": [first, portmap]}


def flannel_delegate(conf: dict[str, Any]) -> dict[str, Any]:
    """What flannel's doCmdAdd hands bridge (flannel_linux.go): its delegate, named
    and typed, with getDelegateIPAM's host-local section (flannel's own `ipam`, its
    type host-local, the node's subnet) and the defaults it fills in."""
    ipam = dict(conf.get("ipam") or {}, type="host-local", ranges=RANGES, routes=[])
    return dict(BRIDGE, **conf["delegate"], name=conf["name"], mtu=1500,
                cniVersion=conf["cniVersion"], ipam=ipam)  # fmt: skip


@dataclass
class Container:
    id: str
    netns: str  # its namespace's name
    ip: str
    result: Any  # the ADD's result, as libcni caches it
    ports: list[dict[str, Any]]


@dataclass
class Runtime:
    """libcni's part of a runtime: a network list's plugins run in order on ADD, in
    reverse on DEL, the cache entry written after the whole ADD and removed after the
    whole DEL."""

    host_ns: str
    dir: Path
    backend: str  # the portmap plugin's: Debian's on iptables, upstream's on nftables
    main: str = "bridge"  # the network list's main plugin: bridge, or flannel's bridge
    made: list[str] = field(default_factory=list)  # container namespaces

    @property
    def cache(self) -> Path:
        return self.dir / "cni"

    @property
    def conflist(self) -> dict[str, Any]:
        return conflist(self.dir / "ipam", self.backend, self.main)

    def entry(self, cid: str) -> Path:
        return self.cache / "results" / f"{NETWORK}-{cid}-eth0"

    def _plugin(self, command: str, cid: str, netns: str, conf: dict[str, Any]) -> Any:
        if conf["type"] == "flannel":  # (its bridge, as flannel runs it)
            conf = flannel_delegate(conf)
        nft = conf["type"] == "portmap" and self.backend == "nftables"
        binary = upstream.binary("v1.9.1") if nft else None
        done = rp.run_any_plugin(self.host_ns, command, cid, f"/run/netns/{netns}", conf, binary)
        assert done.returncode == 0, f"{command} {conf['type']}: {done.stdout} {done.stderr}"
        return json.loads(done.stdout) if command == "ADD" else None

    def _conf(self, plugin: dict[str, Any], ports: list[dict[str, Any]], result: Any) -> dict:
        conf = {**plugin, "cniVersion": "0.4.0", "name": NETWORK}
        if (plugin.get("capabilities") or {}).get("portMappings"):
            conf["runtimeConfig"] = {"portMappings": ports}
        if result is not None:
            conf["prevResult"] = result
        return conf

    def add(self, cid: str, host_port: int) -> Container:
        netns = rp.create_netns("pmt-del")
        self.made.append(netns)
        ports = [{"hostPort": host_port, "containerPort": 80, "protocol": "tcp"}]
        result = None
        for plugin in self.conflist["plugins"]:
            result = self._plugin("ADD", cid, netns, self._conf(plugin, ports, result))
        entry = {
            "kind": "cniCacheV1",
            "containerId": cid,
            "config": base64.b64encode(json.dumps(self.conflist).encode()).decode(),
            "ifName": "eth0",
            "networkName": NETWORK,
            "netns": f"/run/netns/{netns}",
            "capabilityArgs": {"portMappings": ports},
            "result": result,
        }
        self.entry(cid).parent.mkdir(parents=True, exist_ok=True)
        self.entry(cid).write_text(json.dumps(entry))
        ip = result["ips"][0]["address"].split("/")[0]
        return Container(cid, netns, ip, result, ports)

    def delete(self, c: Container, after: Callable[[str], None]) -> None:
        """The DEL of `c`, `after(plugin)` run when each plugin's DEL is done; then the
        cache entry goes, then the namespace (the runtime's)."""
        for plugin in reversed(self.conflist["plugins"]):
            self._plugin("DEL", c.id, c.netns, self._conf(plugin, c.ports, c.result))
            after(plugin["type"])
        self.entry(c.id).unlink()
        rp.delete_netns(c.netns)

    def pm(self, *args: str) -> subprocess.CompletedProcess:
        return pmctl.run([*args, "--netns", self.host_ns, "--cni-cache-dir", str(self.cache)])

    def pm_without_sys_admin(self, *args: str) -> subprocess.CompletedProcess:
        """portmapctl in the node's namespace without CAP_SYS_ADMIN (pmctl)."""
        return pmctl.run([*args, "--cni-cache-dir", str(self.cache)],
                         without_sys_admin_in=self.host_ns)  # fmt: skip

    def rules(self) -> str:
        """Where the plugin keeps its rules: the nat table, or the nftables ruleset."""
        if self.backend == "nftables":
            return upstream.ruleset_text(self.host_ns)
        return rp.strip_save_comments(rp.save(self.host_ns, 4, "nft"))

    def flush(self) -> None:
        """A firewall reload: every rule of the nat table gone, and its chains (on
        nftables: the plugin's table deleted)."""
        if self.backend == "nftables":
            upstream.nft(self.host_ns, "delete", "table", "ip", "cni_hostport")
            return
        for args in (["-F"], ["-X"]):
            rp.iptables(self.host_ns, ["-t", "nat", *args])

    def maps(self, c: Container) -> bool:
        """Whether the rules DNAT to `c`'s address."""
        text = self.rules()
        if self.backend == "nftables":
            return f"dnat to {c.ip}:80" in text
        return f"--to-destination {c.ip}:80" in text

    def check(self, c: Container) -> None:
        """The plugin's own CHECK of `c`'s mapping passes."""
        if self.backend == "nftables":
            conf = upstream.nft_conf(NETWORK, [f"{c.ip}/24"], c.ports)
            upstream.run("v1.9.1", "CHECK", self.host_ns, c.id, conf, check=True)
            return
        conf = rp.plugin_conf(NETWORK, [f"{c.ip}/24"], c.ports)
        for done in rp.run_check(self.host_ns, c.id, conf, mode="nft"):
            assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def main() -> str:
    """The network list's main plugin (a test parametrizes it)."""
    return "bridge"


@pytest.fixture
def runtime(host_ns: str, tmp_path: Path, backend: str, main: str) -> Iterator[Runtime]:
    rp.require(rp.mode_available("nft"))
    if backend == "nftables":
        rp.require(upstream.available())
    for plugin in ("bridge", "host-local", "portmap"):
        if not Path(rp.CNI_PATH, plugin).exists():
            pytest.skip(f"no {rp.CNI_PATH}/{plugin} (Debian containernetworking-plugins)")
    made = Runtime(host_ns, tmp_path, backend, main=main)
    try:
        yield made
    finally:
        for netns in made.made:
            rp.delete_netns(netns)


def _repaired_after_bridges_del(
    runtime: Runtime, pm: Callable[..., subprocess.CompletedProcess]
) -> tuple[subprocess.CompletedProcess, Container]:
    """Two containers, a firewall flush, then the DEL of the second with `pm("check",
    "--repair")` run after bridge's DEL (its interface and address gone, host-local has
    the address back), before libcni removed the entry: the repair repaired the live
    one, made nothing for the dying one, and once the DEL is done the node is healthy.
    The repair's run and the dying container."""
    live = runtime.add("live0c0ffee", 8080)
    dying = runtime.add("dying0decaf", 8081)
    runtime.flush()
    seen: dict[str, Any] = {}

    def repair_after(plugin: str) -> None:
        if plugin in ("bridge", "flannel"):
            assert runtime.entry(dying.id).exists()  # (libcni removes it after this)
            seen["repair"] = pm("check", "--repair")
            seen["live"], seen["dying"] = runtime.maps(live), runtime.maps(dying)
            runtime.check(live)

    runtime.delete(dying, repair_after)
    done = seen["repair"]
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"could not repair IPv4 {NETWORK}/{dying.id}" in done.stderr, done.stderr
    assert (seen["live"], seen["dying"]) == (True, False)
    assert chain_name(NETWORK, dying.id, "DN-") not in runtime.rules()
    after = pm("check")
    assert after.returncode == 0, after.stdout + after.stderr
    return done, dying


@BACKENDS
def test_a_container_whose_interface_its_del_removed_is_not_made_again(runtime: Runtime):
    """Before, the dying container's chain was made again from its entry: a DNAT to an
    address the next container gets, kept by every gc while the entry stood. Now it is
    named (exit 1) by what its namespace shows."""
    done, dying = _repaired_after_bridges_del(runtime, runtime.pm)
    assert f"its address {dying.ip} is on no interface" in done.stderr, done.stderr


@BACKENDS
def test_between_portmaps_del_and_the_interfaces_removal_the_chain_is_made_again(
    runtime: Runtime,
):
    """The window that is left (docs/guarantees.md): after portmap's DEL, before the
    next plugin removed the container's interface, its namespace still holds its
    address, and nothing tells it from a live container after a flush: the chain is
    made again. Once the DEL is done (the entry gone), gc removes it."""
    live = runtime.add("live0c0ffee", 8080)
    dying = runtime.add("dying0decaf", 8081)
    seen: dict[str, Any] = {}

    def repair_after(plugin: str) -> None:
        if plugin == "portmap":
            seen["repair"] = runtime.pm("check", "--repair")
            seen["dying"] = runtime.maps(dying)

    runtime.delete(dying, repair_after)
    assert seen["repair"].returncode == 0, seen["repair"].stdout + seen["repair"].stderr
    assert seen["dying"]

    done = runtime.pm("gc", "--yes", "--min-age", "0", "-o", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert {r["container_id"] for r in json.loads(done.stdout)["removed"]} == {dying.id}
    assert not runtime.maps(dying)
    runtime.check(live)


@BACKENDS
@pytest.mark.parametrize("main", ["bridge", "flannel"])
def test_without_cap_sys_admin_host_locals_leases_tell_a_container_being_torn_down(
    runtime: Runtime,
):
    """The same, the repair run as the shipped DaemonSet and systemd units run
    portmapctl, without CAP_SYS_ADMIN: no container's namespace can be looked into, and
    the chain was made again, as before 88f3b5b. host-local's lease, which bridge's DEL
    has it give back right after it deleted the interface, tells it without privilege."""
    done, dying = _repaired_after_bridges_del(runtime, runtime.pm_without_sys_admin)
    lease = runtime.dir / "ipam" / NETWORK / dying.ip
    assert f"host-local gave its address {dying.ip} back ({lease} is gone)" in done.stderr
