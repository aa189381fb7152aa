"""Another tool's iptables nat rule on the port of a mapping of the plugin's nftables
backend (upstream v1.9.1, `"backend": "nftables"`): iptables' nat PREROUTING and
cni_hostport's prerouting chain hook at one priority (dstnat, -100), so which takes
the port is the kernel's hook order. list marks the nftables row `contested`, check
reports it (exit 1, the rule named), add warns; a rule with a condition not every
packet meets (-s) raises nothing (iptables/foreign.py, past_entry)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, List

import pmctl
import pytest
import realplugin as rp
import upstream

pytestmark = pytest.mark.netns

V191 = "v1.9.1"
CID = "nftfor0a"
DOCKER_RULE = (
    "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80"
)


@pytest.fixture(autouse=True)
def _plugins() -> None:
    rp.require(upstream.available())


@pytest.fixture
def node() -> Iterator[str]:
    name = rp.create_netns("pmt-nfor")
    try:
        yield name
    finally:
        rp.delete_netns(name)


def _args(ns: str, cache: Path) -> List[str]:
    return ["--netns", ns, "--cni-cache-dir", str(cache), "--family", "4"]


def _nft_container(ns: str, cache: Path) -> None:
    ports = [rp.port_mapping(8080, 80), rp.port_mapping(9090, 90)]
    conf = upstream.nft_conf("podman", ["10.88.0.21/16"], ports)
    upstream.run(V191, "ADD", ns, CID, conf, check=True)
    rp.write_cni_cache(cache, "podman", CID, "eth0", conf, ports, ["10.88.0.21/16"])


def _docker(ns: str) -> None:
    """Docker's shape (PREROUTING -> DOCKER -> a -p DNAT), no plugin jump in iptables."""
    for rule in (
        ["-N", "DOCKER"],
        ["-A", "PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "DOCKER"],
        ["-A", "DOCKER", "-i", "docker0", "-j", "RETURN"],
        ["-A", "DOCKER", "!", "-i", "docker0", "-p", "tcp", "-m", "tcp",
         "--dport", "8080", "-j", "DNAT", "--to-destination", "172.17.0.2:80"],
    ):  # fmt: skip
        rp.iptables(ns, ["-t", "nat", *rule])


def _rows(args: List[str]) -> dict:
    rows = json.loads(pmctl.ok(["list", *args, "-o", "json"]))["mappings"]
    return {(r["backend"], r["host_port"]): r["status"] for r in rows}


def test_docker_rule_on_an_nftables_port_contests_it(node: str, tmp_path: Path) -> None:
    """The nftables row said `ok` and check was healthy: one of the two gets nothing."""
    _nft_container(node, tmp_path)
    _docker(node)
    # A rule for some packets only (-s) takes nothing: no false alarm on 9090.
    rp.iptables(node, ["-t", "nat", "-A", "DOCKER", "-s", "192.168.0.0/16", "-p", "tcp",
                       "-m", "tcp", "--dport", "9090", "-j", "REDIRECT"])  # fmt: skip
    args = _args(node, tmp_path)
    assert _rows(args) == {("nftables", 8080): ["contested"], ("nftables", 9090): ["ok"]}
    done = pmctl.run(["check", *args, "-o", "json"])
    assert done.returncode == 1, done.stdout + done.stderr
    problems = json.loads(done.stdout)["problems"]
    assert [(p["kind"], p["backend"], p["container_id"]) for p in problems] == [
        ("contested", "nftables", CID)
    ]
    assert problems[0]["detail"] == (
        "tcp/8080 is also taken by an iptables rule outside the plugin's chains"
        f" ({DOCKER_RULE}); the kernel's hook order decides which gets the traffic"
    )
    metrics = tmp_path / "list.prom"
    pmctl.ok(["list", *args, "--metrics-file", str(metrics)])
    assert any(
        'status="contested"' in line and line.endswith(" 1.0")
        for line in metrics.read_text().splitlines()
        if line.startswith("portmapctl_mappings{")
    )
    add = ["add", "--backend", "nftables", "--network", "podman", "--ip", "10.88.0.31/16"]
    for dry in ((), ("--dry-run",)):
        out = pmctl.run([*add, *args, "--container", "nftfor0c", "-p", "8080:80", *dry,
                         "-o", "json"])  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        assert [w for w in json.loads(out.stdout)["warnings"] if "contested" in w] == [
            "IPv4 tcp/8080 is taken by an iptables rule outside the plugin's chains too"
            f" ({DOCKER_RULE}): this mapping is contested (the kernel's hook order"
            " decides which of them gets the traffic)"
        ], out.stdout
