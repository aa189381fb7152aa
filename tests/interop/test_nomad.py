"""portmapctl on a Nomad-shaped node: Nomad's bridge networking, reproduced without Nomad.

Nomad (client/allocrunner/networking_bridge_linux.go) runs one conflist named "nomad"
through go-cni and libcni: loopback, bridge (with ipMasq: its own `CNI-<hash>` chain
entered from POSTROUTING), firewall (iptables: `CNI-FORWARD` and the admin chain
`NOMAD-ADMIN` in filter) and portmap. The container ID is the allocation's UUID, its
namespace `/var/run/netns/<allocation ID>`, and every port is mapped for tcp and udp
with the node's address as host IP. go-cni's PortMapping has no JSON tags, so libcni
caches `HostPort`/`ContainerPort`/`Protocol`/`HostIP`.

Here Debian's real plugins run that conflist in a namespace, plugin by plugin as libcni
chains them, and the cache entry is written as libcni writes it.
"""

from __future__ import annotations

import base64
import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pmctl
import pytest
import realplugin as rp

NODE_IP = "192.0.2.10"
PLUGINS = ("loopback", "bridge", "firewall", "portmap")


@dataclass
class NomadNode:
    host_ns: str
    dir: Path
    allocs: list[str] = field(default_factory=list)

    @property
    def cache(self) -> Path:
        return self.dir / "cni"

    def add(self, ports: list[int], host_ip: str = NODE_IP) -> str:
        """An allocation with these ports (each to itself, tcp and udp), as Nomad adds it."""
        alloc = str(uuid.uuid4())
        subprocess.run([rp._ip(), "netns", "add", alloc], check=True)
        self.allocs.append(alloc)
        netns = f"/var/run/netns/{alloc}"
        mappings = [
            {"HostPort": p, "ContainerPort": p, "Protocol": proto, "HostIP": host_ip}
            for p in ports
            for proto in ("tcp", "udp")
        ]
        conflist = rp.nomad_conflist(str(self.dir / "ipam"))
        result: Any = None
        for plugin in conflist["plugins"]:
            conf = {**plugin, "cniVersion": "0.4.0", "name": "nomad"}
            if (plugin.get("capabilities") or {}).get("portMappings"):
                conf["runtimeConfig"] = {"portMappings": mappings}
            if result is not None:
                conf["prevResult"] = result
            done = rp.run_any_plugin(self.host_ns, "ADD", alloc, netns, conf)
            assert done.returncode == 0, f"{plugin['type']}: {done.stdout} {done.stderr}"
            # The bridge makes a result of its own: loopback's is no prevResult of note.
            result = json.loads(done.stdout) if plugin["type"] != "loopback" else None
        entry = {
            "kind": "cniCacheV1",
            "containerId": alloc,
            # Nomad marshals its conflist with tabs (json.MarshalIndent "", "\t").
            "config": base64.b64encode(json.dumps(conflist, indent="\t").encode()).decode(),
            "ifName": "eth0",
            "networkName": "nomad",
            "netns": netns,
            "capabilityArgs": {"portMappings": mappings},
            "result": result,
        }
        results = self.cache / "results"
        results.mkdir(parents=True, exist_ok=True)
        (results / f"nomad-{alloc}-eth0").write_text(json.dumps(entry, separators=(",", ":")))
        return alloc

    def pm(self, *args: str) -> subprocess.CompletedProcess:
        return pmctl.run([*args, "--netns", self.host_ns, "--cni-cache-dir", str(self.cache)])

    def save(self, table: str) -> list[str]:
        text = subprocess.run(
            [rp._ip(), "netns", "exec", self.host_ns, rp.tool_path("iptables-save", "nft")]
            + ["-t", table],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return rp.nat_rules(text)

    def forget_netns(self, alloc: str) -> None:
        """The pause container is gone: its namespace with it, no DEL (a zombie)."""
        subprocess.run([rp._ip(), "netns", "delete", alloc], check=True)


@pytest.fixture
def nomad(host_ns: str, tmp_path: Path) -> Iterator[NomadNode]:
    rp.require(rp.plugin_available())
    for plugin in PLUGINS:
        if not Path(rp.CNI_PATH, plugin).exists():
            pytest.skip(f"no {rp.CNI_PATH}/{plugin} (Debian containernetworking-plugins)")
    subprocess.run([rp._ip(), "-n", host_ns, "addr", "add", f"{NODE_IP}/32", "dev", "lo"])
    node = NomadNode(host_ns, tmp_path)
    try:
        yield node
    finally:
        for alloc in node.allocs:
            subprocess.run([rp._ip(), "netns", "delete", alloc], capture_output=True)


def portmap_chains(rules: list[str]) -> dict[str, list[str]]:
    """The plugin's part of a nat table, chain by chain in order: its per-container and
    CNI-HOSTPORT-* chains, and the jumps to them. The entry rules of several containers
    stand in CNI-HOSTPORT-DNAT in the order they were added, which no cache records:
    those are compared as a set."""
    chains: dict[str, list[str]] = {}
    for line in rules:
        if "CNI-DN-" in line or "CNI-HOSTPORT-" in line:
            chain = line.split()[0][1:] if line.startswith(":") else line.split()[1]
            chains.setdefault(chain, []).append(line)
    if "CNI-HOSTPORT-DNAT" in chains:
        chains["CNI-HOSTPORT-DNAT"].sort()
    return chains


def test_a_flushed_nomad_node_is_found_broken_and_repaired_as_the_plugin_made_it(nomad):
    pinned = nomad.add([8080, 20001])
    anywhere = nomad.add([8081], host_ip="")
    made = nomad.save("nat")

    done = nomad.pm("check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning" not in done.stderr, done.stderr
    listed = json.loads(nomad.pm("list", "-o", "json").stdout)
    assert {
        (m["container_id"], m["protocol"], m["host_ip"], m["host_port"]) for m in listed["mappings"]
    } == {(pinned, proto, NODE_IP, port) for port in (8080, 20001) for proto in ("tcp", "udp")} | {
        (anywhere, proto, None, 8081) for proto in ("tcp", "udp")
    }

    # A firewall reload flushes the nat table: every allocation's forwarding is gone.
    for args in (["-F"], ["-X"]):
        rp.iptables(nomad.host_ns, ["-t", "nat", *args])
    done = nomad.pm("check", "-o", "json")
    assert done.returncode == 1, done.stdout + done.stderr
    missing = {
        p["container_id"]
        for p in json.loads(done.stdout)["problems"]
        if p["kind"] == "missing-chain"
    }
    assert missing == {pinned, anywhere}

    done = nomad.pm("check", "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    assert portmap_chains(nomad.save("nat")) == portmap_chains(made)


def test_gc_on_a_nomad_node_removes_a_zombie_allocations_chain_and_nothing_of_nomads(nomad):
    live = nomad.add([8080])
    gone = nomad.add([8090])
    nomad.forget_netns(gone)
    nat, filter_ = nomad.save("nat"), nomad.save("filter")
    assert any("NOMAD-ADMIN" in line for line in filter_)

    done = nomad.pm("gc", "--yes", "--min-age", "0", "--netns-liveness", "-o", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert [r["container_id"] for r in json.loads(done.stdout)["removed"]] == [gone]
    after = nomad.save("nat")
    assert set(after) <= set(nat)
    removed = set(nat) - set(after)
    assert removed and all(gone in line or "CNI-DN-" in line for line in removed), removed
    # The bridge's masquerade chains and the firewall's filter chains are Nomad's.
    assert [line for line in nat if "CNI-DN-" not in line and "CNI-HOSTPORT-DNAT" not in line] == [
        line for line in after if "CNI-DN-" not in line and "CNI-HOSTPORT-DNAT" not in line
    ]
    assert nomad.save("filter") == filter_
    listed = json.loads(nomad.pm("list", "-o", "json").stdout)
    assert {(m["container_id"], tuple(m["status"])) for m in listed["mappings"]} == {
        (live, ("ok",))
    }


def test_allocations_are_named_by_nomads_short_id_in_tables(nomad):
    """Nomad prints an allocation by its UUID's first group (`nomad alloc status
    0b4e5e4f`). Cut at 12 characters, `1b2a08e9-8c5`, the tables named it by a string
    neither Nomad nor the operator uses, cut inside the second group; now list, check
    and gc print the 8 characters (the problem texts too), and that short ID selects
    the allocation. JSON and --no-trunc keep the whole ID."""
    live = nomad.add([8080])
    gone = nomad.add([8090])
    (nomad.cache / "results" / f"nomad-{gone}-eth0").unlink()  # its chain is stale

    listed = nomad.pm("list", "--container", live[:8])
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()[1:] if line.startswith("nomad")]
    assert rows and {row[1] for row in rows} == {live[:8]}, listed.stdout
    assert live[:9] not in listed.stdout, listed.stdout
    whole = nomad.pm("list", "--container", live[:8], "--no-trunc")
    assert live in whole.stdout, whole.stdout

    checked = nomad.pm("check")
    assert checked.returncode == 1, checked.stdout + checked.stderr
    stale = [line for line in checked.stdout.splitlines() if line.startswith("stale")]
    assert stale and stale[0].split()[2] == gone[:8], checked.stdout
    assert f"nomad/{gone[:8]};" in stale[0], stale[0]
    assert gone[:9] not in checked.stdout, checked.stdout

    planned = nomad.pm("gc", "--dry-run", "--min-age", "0")
    assert planned.returncode == 0, planned.stderr
    assert gone[:8] in planned.stdout and gone[:9] not in planned.stdout, planned.stdout
    as_json = json.loads(nomad.pm("check", "-o", "json").stdout)
    assert {p["container_id"] for p in as_json["problems"]} == {gone}
