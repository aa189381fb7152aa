"""One host port mapped in both plugin backends (a node mid-migration): iptables'
CNI-HOSTPORT-DNAT and nftables' cni_hostport both hook nat at dstnat priority, so the
kernel's hook order, which no dump shows, decides which container gets the traffic.
list marks both rows `contested`, check reports each side (exit 1), add warns.

The real plugins write both sides: Debian's 1.1.1 (iptables) and upstream v1.9.1 with
`"backend": "nftables"`, in a fresh namespace; portmapctl runs as a process.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pmctl
import pytest
import realplugin as rp
import upstream

pytestmark = pytest.mark.netns

V191 = "v1.9.1"
_pm = rp.port_mapping
A = "migr0a"  # iptables (Debian's plugin)
B = "migr0b"  # nftables (v1.9.1)


@pytest.fixture(autouse=True)
def _plugins() -> None:
    rp.require(upstream.available())
    rp.require(rp.plugin_available())


@pytest.fixture
def node() -> Iterator[str]:
    name = rp.create_netns("pmt-cont")
    try:
        yield name
    finally:
        rp.delete_netns(name)


def _pmctl(ns: str, cache: Path, *args: str):
    return pmctl.run([*args, "--netns", ns, "--cni-cache-dir", str(cache)])


def _cache(cache: Path, cid: str, conf: Dict[str, Any]) -> None:
    ports = conf["runtimeConfig"]["portMappings"]
    ips = [ip["address"] for ip in conf["prevResult"]["ips"]]
    rp.write_cni_cache(cache, conf["name"], cid, "eth0", conf, ports, ips)


def _both(ns: str, cache: Path, ipt_ports: List[Any], nft_ports: List[Any], **nft: Any) -> None:
    """A in iptables, B in nftables, both cached."""
    ipt_conf = rp.plugin_conf("podman", ["10.88.0.11/16"], ipt_ports)
    rp.run_plugin("ADD", ns, A, ipt_conf, check=True)
    _cache(cache, A, ipt_conf)
    nft_conf = upstream.nft_conf("podman", ["10.88.0.21/16"], nft_ports, **nft)
    upstream.run(V191, "ADD", ns, B, nft_conf, check=True)
    _cache(cache, B, nft_conf)


def _rows(ns: str, cache: Path) -> Dict[str, List[str]]:
    done = _pmctl(ns, cache, "list", "-o", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    return {
        f"{m['container_id']}/{m['protocol']}/{m['host_port']}": m["status"]
        for m in json.loads(done.stdout)["mappings"]
    }


def _problems(ns: str, cache: Path, *args: str):
    done = _pmctl(ns, cache, "check", "-o", "json", *args)
    return done, json.loads(done.stdout)["problems"]


def test_one_port_in_both_backends_is_contested_in_list_and_check(
    node: str, tmp_path: Path
) -> None:
    """Both rows were `ok` and check healthy: one of the two gets no traffic."""
    _both(node, tmp_path, [_pm(8080, 80)], [_pm(8080, 80)])
    assert _rows(node, tmp_path) == {f"{A}/tcp/8080": ["contested"], f"{B}/tcp/8080": ["contested"]}
    table = _pmctl(node, tmp_path, "list")
    assert table.returncode == 0, table.stderr
    assert [line.split()[-1] for line in table.stdout.splitlines() if "8080" in line] == [
        "contested",
        "contested",
    ], table.stdout
    assert "2 contested" in table.stdout
    filtered = _pmctl(node, tmp_path, "list", "--status", "contested", "-o", "json")
    assert filtered.returncode == 0, filtered.stderr
    assert len(json.loads(filtered.stdout)["mappings"]) == 2
    done, problems = _problems(node, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert sorted((p["kind"], p["backend"], p["container_id"]) for p in problems) == [
        ("contested", "iptables", A),
        ("contested", "nftables", B),
    ]
    by_id = {p["container_id"]: p for p in problems}
    assert by_id[A]["detail"].startswith(f"tcp/8080 is also mapped in nftables to podman/{B[:12]}")
    assert by_id[B]["detail"].startswith(f"tcp/8080 is also mapped in iptables to podman/{A[:12]}")
    for p in problems:
        assert "hook order" in p["detail"]
        assert p["fix"] is None  # both live: no command of ours picks a winner
        assert "another host port" in p["why"] and "finish the migration" in p["why"]
    # --metrics-file counts them alike from list and check, one per backend.
    for command in ("list", "check"):
        metrics = tmp_path / f"{command}.prom"
        _pmctl(node, tmp_path, command, "--metrics-file", str(metrics))
        counted = {
            line.split("{")[1].split(",")[0] + " " + line.split()[-1]
            for line in metrics.read_text().splitlines()
            if line.startswith("portmapctl_mappings{")
            and 'status="contested"' in line
            and 'family="4"' in line
        }
        assert counted == {'backend="iptables" 1.0', 'backend="nftables" 1.0'}, command
    # --repair does not "fix" it, and says so by its exit code.
    repaired = _pmctl(node, tmp_path, "check", "--repair", "-o", "json")
    assert repaired.returncode == 1, repaired.stdout + repaired.stderr
    assert {p["kind"] for p in json.loads(repaired.stdout)["problems"]} == {"contested"}


def test_a_stale_other_side_gets_gcs_fix(node: str, tmp_path: Path) -> None:
    """The nftables side's container is gone (no cache entry): gc removes it."""
    _both(node, tmp_path, [_pm(8080, 80)], [_pm(8080, 80)])
    (tmp_path / "results" / f"podman-{B}-eth0").unlink()
    _done, problems = _problems(node, tmp_path)
    contested = [p for p in problems if p["kind"] == "contested"]
    assert [(p["container_id"], p["fix"]) for p in contested if p["container_id"] == A] == [
        (A, f"portmapctl gc --netns {node} --cni-cache-dir {tmp_path}")
    ]
    gc = _pmctl(node, tmp_path, "gc", "--yes", "--min-age", "0")
    assert gc.returncode == 0, gc.stdout + gc.stderr
    done, problems = _problems(node, tmp_path)
    assert done.returncode == 0 and problems == [], done.stdout + done.stderr


@pytest.mark.parametrize(
    "ipt_ports, nft_ports, ipt",
    [
        ([_pm(8080, 80)], [_pm(8081, 80)], {}),
        ([_pm(8080, 80)], [_pm(8080, 80, "udp")], {}),
        ([_pm(8080, 80, host_ip="127.0.0.2")], [_pm(8080, 80, host_ip="127.0.0.1")], {}),
        ([_pm(8080, 80)], [_pm(8080, 80)], {"conditions_v4": ["!", "-s", "192.168.0.0/16"]}),
    ],
    ids=["other-port", "other-protocol", "other-host-ip", "conditional"],
)
def test_what_does_not_contest(
    node: str, tmp_path: Path, ipt_ports: List[Any], nft_ports: List[Any], ipt: Dict[str, Any]
) -> None:
    """Only the same protocol and host port on overlapping host IPs, without conditions
    (a conditional rule takes only some packets: it shadows nothing, and contests
    nothing). 9090, mapped by two other containers, one per backend, is contested."""
    ipt_conf = rp.plugin_conf("podman", ["10.88.0.11/16"], ipt_ports, **ipt)
    rp.run_plugin("ADD", node, A, ipt_conf, check=True)
    _cache(tmp_path, A, ipt_conf)
    ctl = rp.plugin_conf("podman", ["10.88.0.12/16"], [_pm(9090, 90)])
    rp.run_plugin("ADD", node, "migr0e", ctl, check=True)
    _cache(tmp_path, "migr0e", ctl)
    for cid, ip, ports in (
        (B, "10.88.0.21/16", nft_ports),
        ("migr0f", "10.88.0.22/16", [_pm(9090, 90)]),
    ):
        conf = upstream.nft_conf("podman", [ip], ports)
        upstream.run(V191, "ADD", node, cid, conf, check=True)
        _cache(tmp_path, cid, conf)
    contested = {row for row, status in _rows(node, tmp_path).items() if "contested" in status}
    assert contested == {"migr0e/tcp/9090", "migr0f/tcp/9090"}
    done, problems = _problems(node, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert sorted((p["kind"], p["container_id"]) for p in problems) == [
        ("contested", "migr0e"),
        ("contested", "migr0f"),
    ]


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_add_of_a_third_container_on_the_port_warns(
    node: str, tmp_path: Path, backend: str
) -> None:
    """add says when the port is mapped live in the other backend (it said nothing, or
    for an nftables mapping that the iptables one "shadows" it, which no dump shows)."""
    _both(node, tmp_path, [_pm(8080, 80)], [_pm(8080, 80)])
    other = "nftables" if backend == "iptables" else "iptables"
    args = ["add", "--backend", backend, "--network", "podman", "--ip", "10.88.0.31/16"]
    for dry in ((), ("--dry-run",)):
        done = _pmctl(node, tmp_path, *args, "--container", "migr0c", "-p", "8080:80",
                      *dry, "-o", "json")  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        contested = [w for w in json.loads(done.stdout)["warnings"] if "contested" in w]
        assert contested == [
            f"IPv4 tcp/8080 is mapped in {other} too, to"
            f" {f'{B} (hostports)' if other == 'nftables' else f'podman/{A} ({rp_chain(node, A)})'}: this"
            " mapping is contested (the kernel's hook order decides which of them gets the"
            " traffic)"
        ], done.stdout
        assert contested[0] in done.stderr
    quiet = _pmctl(node, tmp_path, *args, "--container", "migr0d", "-p", "8090:80",
                   "-o", "json")  # fmt: skip
    assert not [w for w in json.loads(quiet.stdout)["warnings"] if "contested" in w], quiet.stdout


def rp_chain(ns: str, cid: str) -> str:
    """The CNI-DN- chain of container `cid` in the namespace's iptables."""
    for line in rp.nat_rules(rp.save(ns, 4)):
        if line.startswith("-A CNI-HOSTPORT-DNAT") and cid in line:
            return line.split()[-1]
    raise AssertionError(f"no chain of {cid}")
