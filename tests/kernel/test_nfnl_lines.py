"""iptables/access/nfnl_lines.py (a chain's `iptables -S` text printed from the memo of
how this iptables prints each rule) against real iptables-nft in a fresh namespace:
byte for byte the text `iptables -S CHAIN` prints, for Docker's, kube-proxy's and the
real plugin's rules, a comment that is not UTF-8 and counters that moved; iptables runs
again for a rule it has not printed and for another iptables build; a second add lists
PREROUTING and Docker's chain without running iptables, and warns as the first did.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List

import pmctl
import pytest
import realplugin as rp

from portmapctl.host.netns import entered
from portmapctl.iptables.access.restore import RestoreBackend

pytestmark = pytest.mark.netns

DOCKER_DNAT = "! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80"
# Docker's, kube-proxy's (comments, -m statistic, the NodePorts jump last), an admin's
# rule with a comment in Latin-1, and an empty user chain; the counters set, not zero.
RULES = (
    b"""*nat
:DOCKER - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-SVC-ABCDEFGHIJKLMNOP - [0:0]
:KUBE-SEP-AAAAAAAAAAAAAAAA - [0:0]
:KUBE-SEP-BBBBBBBBBBBBBBBB - [0:0]
:EMPTY - [0:0]
[3:180] -I PREROUTING 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
[5:300] -I PREROUTING 2 -m addrtype --dst-type LOCAL -j DOCKER
[7:420] -A PREROUTING -p udp -m comment --comment "caf\xe9 \xff" -m udp --dport 5353 -j RETURN
-A DOCKER -i docker0 -j RETURN
[9:540] -A DOCKER """
    + DOCKER_DNAT.encode()
    + b"""
-A KUBE-SERVICES -d 10.96.0.20/32 -p tcp -m comment --comment "ns/svc:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-ABCDEFGHIJKLMNOP
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-NODEPORTS -p tcp -m comment --comment "ns/svc:http" -m tcp --dport 30080 -j KUBE-SVC-ABCDEFGHIJKLMNOP
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-SVC-ABCDEFGHIJKLMNOP -m comment --comment "ns/svc:http -> 10.244.2.5:8080" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-AAAAAAAAAAAAAAAA
-A KUBE-SVC-ABCDEFGHIJKLMNOP -m comment --comment "ns/svc:http -> 10.244.2.6:8080" -j KUBE-SEP-BBBBBBBBBBBBBBBB
-A KUBE-SEP-AAAAAAAAAAAAAAAA -s 10.244.2.5/32 -m comment --comment "ns/svc:http" -j KUBE-MARK-MASQ
-A KUBE-SEP-AAAAAAAAAAAAAAAA -p tcp -m comment --comment "ns/svc:http" -m tcp -j DNAT --to-destination 10.244.2.5:8080
-A KUBE-SEP-BBBBBBBBBBBBBBBB -p tcp -m comment --comment "ns/svc:http" -m tcp -j DNAT --to-destination 10.244.2.6:8080
COMMIT
"""
)


def _node(ns: str) -> List[str]:
    """The real plugin's container (PREROUTING's jump, CNI-HOSTPORT-DNAT, its chain),
    then RULES beside it: the chains to list."""
    conf = rp.plugin_conf("mynet", ["10.88.0.5/16"], [rp.port_mapping(7070, 80)])
    rp.run_plugin("ADD", ns, "ctr1", conf, mode="nft", check=True)
    tool = rp.tool_path("iptables-restore", "nft")
    done = subprocess.run(
        ["ip", "netns", "exec", ns, tool, "--noflush", "--counters"],
        input=RULES, capture_output=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    tool = rp.tool_path("iptables-save", "nft")
    saved = subprocess.run(
        ["ip", "netns", "exec", ns, tool, "-t", "nat"], capture_output=True, check=True
    ).stdout
    chains = [line[1:].split()[0].decode() for line in saved.splitlines() if line[:1] == b":"]
    assert {"CNI-HOSTPORT-DNAT", "DOCKER", "EMPTY", "PREROUTING", "OUTPUT"} <= set(chains)
    assert any(c.startswith("CNI-DN-") for c in chains)
    return chains


def _not_in_kernel(ns: str, chains: List[str]) -> List[str]:
    """The chains iptables lists though nf_tables holds no such chain (a built-in chain
    iptables-nft has not made yet: it prints `-P INPUT ACCEPT`): these it runs for."""
    listed = subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "list", "table", "ip", "nat"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    return [c for c in chains if f"chain {c} {{".encode() not in listed]


def _printed(ns: str, chain: str, family: int = 4) -> bytes:
    """`iptables -S CHAIN`'s bytes, as iptables prints them."""
    tool = rp.tool_path("iptables" if family == 4 else "ip6tables", "nft")
    done = subprocess.run(
        ["ip", "netns", "exec", ns, tool, "-t", "nat", "-S", chain], capture_output=True,
        check=True,
    )  # fmt: skip
    return done.stdout


def _listed(ns: str, chains: List[str], run_dir: Path, family: int = 4) -> tuple:
    """Each chain as a fresh Lister lists it (saved on close), and how many times it
    ran iptables."""
    from portmapctl.iptables.access import nfnl_lines  # (here: main's proof runs the rest)

    backend = RestoreBackend("nft")
    nfnl_lines._IDENTITIES.clear()  # (looked at once per process: each run of add)
    texts: Dict[str, bytes] = {}
    with entered(ns):
        lister = nfnl_lines.Lister(
            family, backend.list_binary(family), backend.list_chain, str(run_dir)
        )
        try:
            for chain in chains:
                text = lister.list_chain(family, chain)
                assert text is not None, chain
                texts[chain] = text.encode("utf-8", "surrogateescape")
        finally:
            lister.close()
    return texts, lister.ran


def test_the_memo_prints_what_iptables_prints_and_runs_it_no_more(host_ns, tmp_path):
    chains = _node(host_ns)
    first, ran = _listed(host_ns, chains, tmp_path)
    assert ran == len(chains)
    assert first == {chain: _printed(host_ns, chain) for chain in chains}
    assert b"caf\xe9 \xff" in first["PREROUTING"]
    assert b"-m statistic --mode random" in first["KUBE-SVC-ABCDEFGHIJKLMNOP"]
    assert first["EMPTY"] == b"-N EMPTY\n"
    # Counters moved (zeroed: PREROUTING's and DOCKER's were not zero): still known.
    rp.iptables(host_ns, ["-t", "nat", "-Z"])
    again, ran = _listed(host_ns, chains, tmp_path)
    assert ran == len(_not_in_kernel(host_ns, chains)) == 1  # (INPUT)
    assert again == {chain: _printed(host_ns, chain) for chain in chains}


def test_ip6tables_is_printed_from_its_own_memo(host_ns, tmp_path):
    """IPv6: the real plugin's dual-stack container beside Docker's IPv6 shape."""
    conf = rp.plugin_conf("mynet", ["10.88.0.5/16", "fd00::5/64"], [rp.port_mapping(7070, 80)])
    rp.run_plugin("ADD", host_ns, "ctr6", conf, mode="nft", check=True)
    for rule in (
        ["-N", "DOCKER"],
        ["-I", "PREROUTING", "1", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "DOCKER"],
        ["-A", "DOCKER", "!", "-i", "docker0", "-p", "tcp", "-m", "tcp", "--dport", "8080",
         "-m", "comment", "--comment", "v6 publish", "-j", "DNAT", "--to-destination",
         "[fd00::2]:80"],
    ):  # fmt: skip
        rp.iptables(host_ns, ["-t", "nat", *rule], family=6)
    chains = ["PREROUTING", "DOCKER", "OUTPUT", "CNI-HOSTPORT-DNAT"]
    first, ran = _listed(host_ns, chains, tmp_path, family=6)
    assert ran == len(chains) and first == {c: _printed(host_ns, c, 6) for c in chains}
    assert b"[fd00::2]:80" in first["DOCKER"]
    again, ran = _listed(host_ns, chains, tmp_path, family=6)
    assert ran == 0 and again == first
    assert (tmp_path / "iptables-lines.v6.json").exists()
    assert not (tmp_path / "iptables-lines.v4.json").exists()


def test_a_changed_rule_is_listed_afresh(host_ns, tmp_path):
    chains = _node(host_ns)
    _listed(host_ns, chains, tmp_path)
    rp.iptables(
        host_ns, ["-t", "nat", "-R", "DOCKER", "2", *DOCKER_DNAT.replace("8080", "9090").split()]
    )
    rp.iptables(host_ns, ["-t", "nat", "-A", "EMPTY", "-j", "RETURN"])
    texts, ran = _listed(host_ns, ["DOCKER", "EMPTY", "PREROUTING"], tmp_path)
    assert ran == 2  # (PREROUTING unchanged: from the memo)
    assert texts == {c: _printed(host_ns, c) for c in ["DOCKER", "EMPTY", "PREROUTING"]}
    assert (
        b"--dport 9090" in texts["DOCKER"] and texts["EMPTY"] == b"-N EMPTY\n-A EMPTY -j RETURN\n"
    )
    assert _listed(host_ns, ["DOCKER", "EMPTY"], tmp_path)[1] == 0


def test_another_iptables_build_is_listed_afresh(host_ns, tmp_path, monkeypatch):
    chains = _node(host_ns)
    chains = [c for c in chains if c not in _not_in_kernel(host_ns, chains)]
    _listed(host_ns, chains, tmp_path / "run")
    # The same iptables copied elsewhere (another file): another build as far as the
    # memo can tell.
    folder = tmp_path / "bin"
    folder.mkdir()
    real = os.path.realpath(rp.tool_path("iptables", "nft"))
    shutil.copy2(real, folder / "iptables-nft")
    monkeypatch.setenv("PATH", f"{folder}:{os.environ['PATH']}")
    assert RestoreBackend("nft").list_binary(4) == str(folder / "iptables-nft")
    texts, ran = _listed(host_ns, chains, tmp_path / "run")
    assert ran == len(chains) and texts == {c: _printed(host_ns, c) for c in chains}
    assert _listed(host_ns, chains, tmp_path / "run")[1] == 0
    os.utime(folder / "iptables-nft", ns=(1, 1))  # (rebuilt in place: new times)
    assert _listed(host_ns, chains, tmp_path / "run")[1] == len(chains)
    # Its extensions from another directory, then one of them replaced (by rename,
    # as dpkg and rpm do).
    extensions = tmp_path / "xtables"
    from portmapctl.iptables.access import nfnl_lines

    installed = next(d for d in nfnl_lines._extension_dirs() if os.path.isdir(d))
    shutil.copytree(installed, extensions, symlinks=True)
    monkeypatch.setenv("XTABLES_LIBDIR", str(extensions))
    texts, ran = _listed(host_ns, chains, tmp_path / "run")
    assert ran == len(chains) and texts == {c: _printed(host_ns, c) for c in chains}
    assert _listed(host_ns, chains, tmp_path / "run")[1] == 0
    comment = extensions / "libxt_comment.so"
    (extensions / "new.tmp").write_bytes(comment.read_bytes())
    os.replace(extensions / "new.tmp", comment)
    assert _listed(host_ns, chains, tmp_path / "run")[1] == len(chains)


def test_a_second_add_lists_without_running_iptables_and_warns_the_same(host_ns, tmp_path):
    """The real CLI: the first add on a Docker node runs `iptables -S` for PREROUTING
    and DOCKER (a wrapper on PATH logs it); the second, another container on Docker's
    other port, runs none, and is warned of Docker's rule as the first was."""
    _node(host_ns)
    folder = tmp_path / "bin"
    folder.mkdir()
    log = tmp_path / "iptables.log"
    real = rp.tool_path("iptables", "nft")
    wrapper = folder / "iptables-nft"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    env = {"PATH": f"{folder}:{os.environ['PATH']}", "PORTMAPCTL_RUN_DIR": str(tmp_path / "run")}
    docker = [line for line in _printed(host_ns, "DOCKER").decode().splitlines() if "DNAT" in line]
    lists, warned = [], []
    for n, port in ((1, 8080), (2, 8081)):
        if log.exists():
            log.unlink()
        done = pmctl.run(
            ["add", "--netns", host_ns, "--iptables", "nft", "--family", "4", "--network",
             "mynet", "--container", f"memo{n}", "--ip", f"10.88.0.{5 + n}/16", "-p",
             f"{port}:80"],
            env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        warned.append([line for line in done.stderr.splitlines() if "outside" in line])
        ran = log.read_text().splitlines() if log.exists() else []
        lists.append([line for line in ran if " -S " in f" {line} "])
    assert any(line.endswith("-S PREROUTING") for line in lists[0]), lists[0]
    assert any(line.endswith("-S DOCKER") for line in lists[0]), lists[0]
    assert lists[1] == []
    for port, lines, rule in zip((8080, 8081), warned, docker):
        assert len(lines) == 1 and lines[0].endswith(
            f"IPv4 tcp/{port} is taken first by a rule outside the plugin's chains ({rule}):"
            " this mapping will be shadowed (it gets no traffic there)"
        ), lines


def test_a_rule_looking_up_a_set_is_never_printed_from_the_memo(host_ns, tmp_path):
    """iptables-nft 1.8.9 prints `tcp dport { 1, 2 }` as `-p tcp`: the set's elements
    are not in the rule's bytes, so the memo never answers for such a rule."""
    _node(host_ns)
    nft = ["ip", "netns", "exec", host_ns, "nft"]
    subprocess.run([*nft, "add", "chain", "ip", "nat", "SETS"], check=True)
    subprocess.run(
        [*nft, "add", "rule", "ip", "nat", "SETS", "tcp", "dport", "{ 1, 2 }"], check=True
    )
    for runs in (2, 1):  # (DOCKER from the memo the second time, SETS never)
        texts, ran = _listed(host_ns, ["SETS", "DOCKER"], tmp_path)
        assert texts["SETS"] == _printed(host_ns, "SETS") == b"-N SETS\n-A SETS -p tcp\n"
        assert ran == runs
