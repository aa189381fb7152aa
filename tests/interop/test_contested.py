"""One host port mapped in both plugin backends (a node mid-migration): iptables'
CNI-HOSTPORT-DNAT and nftables' cni_hostport both hook nat at dstnat priority, so the
kernel's hook order, which no dump shows, decides which container gets the traffic.
list marks both rows `contested`, check reports each side (exit 1), add warns.

The real plugins write both sides: Debian's 1.1.1 (iptables) and upstream v1.9.1 with
`"backend": "nftables"`, in a fresh namespace; portmapctl runs as a process.
"""

from __future__ import annotations

import json
import os
import shutil
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
C = "migr0g"


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
    """The nftables side's container is gone (no cache entry): gc removes it. Its own
    contested row says so too (it said "both are live", no command: prose)."""
    _both(node, tmp_path, [_pm(8080, 80)], [_pm(8080, 80)])
    (tmp_path / "results" / f"podman-{B}-eth0").unlink()
    _done, problems = _problems(node, tmp_path)
    contested = [p for p in problems if p["kind"] == "contested"]
    command = f"portmapctl gc --netns {node} --cni-cache-dir {tmp_path}"
    assert sorted((p["container_id"], p["fix"]) for p in contested) == [
        (A, command),
        (B, command),
    ]
    by_id = {p["container_id"]: p["why"] for p in contested}
    assert by_id[A].endswith("the other side is stale"), by_id[A]
    assert by_id[B].endswith("this side is stale"), by_id[B]
    assert all("both are live" not in why for why in by_id.values())
    # One command fixes them all: the summary names it.
    table = _pmctl(node, tmp_path, "check")
    assert table.stdout.splitlines()[-1] == f"1 stale, 2 contested -> {command}", table.stdout
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


def _dual(node: str, cache: Path, nft_first: bool) -> Dict[str, Dict[str, Any]]:
    """Container A in one backend, B and C in the other, all dual-stack, A and B on
    tcp/8080, C alone on tcp/9090, all cached: their stdin configs."""
    confs: Dict[str, Dict[str, Any]] = {}
    for cid, ips, ports, nft in (
        (A, ["10.88.0.11/16", "fd00::11/64"], [_pm(8080, 80)], nft_first),
        (B, ["10.88.0.21/16", "fd00::21/64"], [_pm(8080, 80)], not nft_first),
        (C, ["10.88.0.31/16", "fd00::31/64"], [_pm(9090, 90)], not nft_first),
    ):
        if nft:
            conf = upstream.nft_conf("podman", ips, ports)
            upstream.run(V191, "ADD", node, cid, conf, check=True)
        else:
            conf = rp.plugin_conf("podman", ips, ports)
            rp.run_plugin("ADD", node, cid, conf, check=True)
        _cache(cache, cid, conf)
        confs[cid] = conf
    return confs


def _both_backends_rules(node: str) -> List[Any]:
    return [
        *(rp.nat_rules(rp.save(node, family)) for family in (4, 6)),  # type: ignore[arg-type]
        upstream.ruleset_text(node),
    ]


@pytest.mark.parametrize("nft_first", [False, True], ids=["A-iptables", "A-nftables"])
def test_one_mapping_check_reports_its_port_mapped_in_the_other_backend(
    node: str, tmp_path: Path, nft_first: bool
) -> None:
    """The whole-node check reported a port mapped in both backends contested, while
    the check of one of those mappings (scripts' stand-in for the plugin's CHECK, which
    looks at its own backend alone) said healthy, exit 0, in every form. Now each form
    reports the node check's problems of that container, word for word, exit 1, IPv4
    and IPv6; --repair cures none and writes nothing; a port with no rival is no
    problem."""
    confs = _dual(node, tmp_path, nft_first)
    done, whole = _problems(node, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    by_id: Dict[str, List[Any]] = {}
    for p in whole:
        by_id.setdefault(p["container_id"], []).append(p)
    for cid in (A, B):
        assert [(p["kind"], p["family"]) for p in by_id[cid]] == [
            ("contested", 4),
            ("contested", 6),
        ], whole
    assert C not in by_id, whole
    backend = {A: "nftables" if nft_first else "iptables"}
    backend[B] = backend[C] = "iptables" if nft_first else "nftables"
    for cid, conf in confs.items():
        mapping = _mapping_options(cid, conf)
        stdin = tmp_path / f"{cid}.json"
        stdin.write_text(json.dumps(conf))
        forms = {
            "options": mapping,
            "--backend": [*mapping, "--backend", backend[cid]],
            "--cni-config": ["--container", cid, "--cni-config", str(stdin)],
        }
        for form, args in forms.items():
            done, problems = _problems(node, tmp_path, *args)
            # C's port has no rival: healthy, as before.
            assert problems == by_id.get(cid, []), (cid, form, problems)
            assert done.returncode == (0 if cid == C else 1), (cid, form, done.stdout + done.stderr)
        before = _both_backends_rules(node)
        repaired = _pmctl(node, tmp_path, "check", "--repair", "-o", "json", *mapping)
        assert repaired.returncode == (0 if cid == C else 1), repaired.stdout + repaired.stderr
        assert json.loads(repaired.stdout)["problems"] == by_id.get(cid, [])
        assert _both_backends_rules(node) == before


def _mapping_options(cid: str, conf: Dict[str, Any]) -> List[str]:
    """The one-mapping check's options for a container's stdin config."""
    options = ["--network", conf["name"], "--container", cid]
    for p in conf["runtimeConfig"]["portMappings"]:
        options += ["-p", f"{p['hostPort']}:{p['containerPort']}"]
    return options + [arg for ip in conf["prevResult"]["ips"] for arg in ("--ip", ip["address"])]


@pytest.mark.parametrize("nft_first", [False, True], ids=["A-iptables", "A-nftables"])
def test_one_mapping_check_names_gc_for_a_stale_rival_in_the_other_backend(
    node: str, tmp_path: Path, nft_first: bool
) -> None:
    """The rival's container is gone (no cache entry): the one-mapping check's fix is
    the node check's, gc (not spelt with the --backend that names this mapping's)."""
    confs = _dual(node, tmp_path, nft_first)
    (tmp_path / "results" / f"podman-{A}-eth0").unlink()
    _done, whole = _problems(node, tmp_path)
    mine = [p for p in whole if p["container_id"] == B]
    assert [p["fix"] for p in mine] == [
        f"portmapctl gc --netns {node} --cni-cache-dir {tmp_path}"
    ] * 2, whole
    mapping = _mapping_options(B, confs[B])
    for extra in ((), ("--backend", "iptables" if nft_first else "nftables")):
        done, problems = _problems(node, tmp_path, *mapping, *extra)
        assert done.returncode == 1, done.stdout + done.stderr
        assert problems == mine, problems


_READERS = ("nft", *(f"{ip}tables{f}-save" for ip in ("", "ip6") for f in ("", "-nft", "-legacy")))


def _logged_path(tmp: Path) -> Dict[str, str]:
    """A PATH whose table readers (nft, the iptables saves) write their names to
    tmp/ran before they run: what a command started."""
    folder = tmp / "bin"
    folder.mkdir(parents=True)
    for tool in _READERS:
        real = shutil.which(tool, path=rp.SYSTEM_PATH)
        if real is None:
            continue
        wrapper = folder / tool
        wrapper.write_text(f'#!/bin/sh\necho {tool} >> {tmp / "ran"}\nexec {real} "$@"\n')
        wrapper.chmod(0o755)
    return {"PATH": f"{folder}:{os.environ['PATH']}"}


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_one_mapping_check_reads_no_other_backend_that_has_nothing(
    node: str, tmp_path: Path, backend: str
) -> None:
    """A node on one backend alone (the usual one): the check of one mapping asks the
    kernel (netlink, /proc) whether the other backend has a table, and runs no process
    to read it: as many as before, none of the other backend's."""
    cache = tmp_path / "cni"
    ips = ["10.88.0.11/16", "fd00::11/64"]
    if backend == "nftables":
        conf = upstream.nft_conf("podman", ips, [_pm(8080, 80)])
        upstream.run(V191, "ADD", node, A, conf, check=True)
    else:
        conf = rp.plugin_conf("podman", ips, [_pm(8080, 80)])
        rp.run_plugin("ADD", node, A, conf, check=True)
    _cache(cache, A, conf)
    for extra in ((), ("--backend", backend)):
        args = ["check", *_mapping_options(A, conf), *extra, "--netns", node]
        done = pmctl.run(
            [*args, "--cni-cache-dir", str(cache)], env=_logged_path(tmp_path / str(len(extra)))
        )
        assert done.returncode == 0, done.stdout + done.stderr
        ran = (tmp_path / str(len(extra)) / "ran").read_text().split()
        if backend == "nftables":
            assert set(ran) == {"nft"}, ran
        else:
            assert "nft" not in ran and ran, ran
