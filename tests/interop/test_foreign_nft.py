"""Another tool's iptables nat rule on the port of a mapping of the plugin's nftables
backend (upstream v1.9.1, `"backend": "nftables"`): iptables' nat PREROUTING and
cni_hostport's prerouting chain hook at one priority (dstnat, -100), so which takes
the port is the kernel's hook order. list marks the nftables row `contested`, check
reports it (exit 1, the rule named), add warns; a rule with a condition not every
packet meets (-s) raises nothing (iptables/foreign.py, past_entry)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

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
    return [*_whole_node(ns, cache), "--family", "4"]


def _whole_node(ns: str, cache: Path) -> List[str]:
    """_args without --family: a run narrowed to a family writes no metrics file."""
    return ["--netns", ns, "--cni-cache-dir", str(cache)]


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
    pmctl.ok(["list", *_whole_node(node, tmp_path), "--metrics-file", str(metrics)])
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


def test_one_mapping_check_reports_the_docker_rule_on_its_nftables_port(
    node: str, tmp_path: Path
) -> None:
    """The node check reported the nftables mapping contested by Docker's iptables
    rule while the check of that one mapping (the plugin's CHECK looks at nftables
    alone) said healthy, exit 0: now the same problem, exit 1, with and without
    --backend nftables (which does not read iptables for the node check)."""
    _nft_container(node, tmp_path)
    _docker(node)
    args = _args(node, tmp_path)
    whole = pmctl.run(["check", *args, "-o", "json"])
    expected = json.loads(whole.stdout)["problems"]
    assert [p["kind"] for p in expected] == ["contested"], whole.stdout
    mapping = ["--network", "podman", "--container", CID, "--ip", "10.88.0.21/16"]
    mapping += ["-p", "8080:80", "-p", "9090:90"]
    for extra in ((), ("--backend", "nftables")):
        done = pmctl.run(["check", *args, *mapping, *extra, "-o", "json"])
        assert done.returncode == 1, done.stdout + done.stderr
        assert json.loads(done.stdout)["problems"] == expected


# A hand-written nft firewall beside the plugin's tables, at three priorities.
HANDMADE = """
table ip early {
  chain pre {
    type nat hook prerouting priority dstnat - 10; policy accept;
    fib daddr type local tcp dport 8080 dnat to 10.0.0.9:80
    ip saddr 10.0.0.0/8 tcp dport 9090 dnat to 10.0.0.9:90
    tcp dport 7070 counter redirect to :3128
  }
}
table inet same {
  chain pre {
    type nat hook prerouting priority dstnat; policy accept;
    jump ports
  }
  chain ports {
    tcp dport { 8081, 7071 } dnat ip to 10.0.0.9:80
  }
}
table ip late {
  chain pre {
    type nat hook prerouting priority dstnat + 10; policy accept;
    tcp dport { 8082, 7072 } dnat to 10.0.0.9:80
  }
}
"""


def _statuses(args: List[str]) -> dict:
    rows = json.loads(pmctl.ok(["list", *args, "-o", "json"]))["mappings"]
    return {(r["backend"], r["host_port"]): (r["status"], r.get("shadowed_by")) for r in rows}


def _behind_handmade(node: str, tmp_path: Path) -> None:
    """A container of each backend (upstream v1.9.1's nftables: 8080-8082, 9090;
    Debian's iptables: 7070-7072), then HANDMADE's tables beside them."""
    rp.require(rp.plugin_available())
    ports = [rp.port_mapping(p, 80) for p in (8080, 8081, 8082, 9090)]
    conf = upstream.nft_conf("podman", ["10.88.0.21/16"], ports)
    upstream.run(V191, "ADD", node, CID, conf, check=True)
    rp.write_cni_cache(tmp_path, "podman", CID, "eth0", conf, ports, ["10.88.0.21/16"])
    ipt_ports = [rp.port_mapping(p, 80) for p in (7070, 7071, 7072)]
    ipt_conf = rp.plugin_conf("podman", ["10.88.0.11/16"], ipt_ports)
    rp.run_plugin("ADD", node, "nftfor0b", ipt_conf, check=True)
    rp.write_cni_cache(tmp_path, "podman", "nftfor0b", "eth0", ipt_conf, ipt_ports,
                       ["10.88.0.11/16"])  # fmt: skip
    upstream.nft(node, "-f", "-", stdin=HANDMADE)


def test_other_nft_tables_take_ports_by_priority(node: str, tmp_path: Path) -> None:
    """Earlier than the plugin's hook (dstnat - 10): shadowed by the rule as `nft list`
    prints it; at its priority (dstnat): contested; later (dstnat + 10): nothing. For
    the nftables backend (upstream v1.9.1) and the iptables one (Debian's plugin on
    iptables-nft: iptables' nat PREROUTING hooks at dstnat too) alike; a rule for some
    packets (ip saddr) takes nothing. Both said `ok`, check was healthy."""
    _behind_handmade(node, tmp_path)
    args = _args(node, tmp_path)
    redirect = "tcp dport 7070 counter packets 0 bytes 0 redirect to :3128"
    assert _statuses(args) == {
        ("nftables", 8080): (
            ["shadowed"],
            "fib daddr type local tcp dport 8080 dnat to 10.0.0.9:80",
        ),
        ("nftables", 8081): (["contested"], None),
        ("nftables", 8082): (["ok"], None),
        ("nftables", 9090): (["ok"], None),
        ("iptables", 7070): (["shadowed"], redirect),
        ("iptables", 7071): (["contested"], None),
        ("iptables", 7072): (["ok"], None),
    }
    done = pmctl.run(["check", *args, "-o", "json"])
    assert done.returncode == 1, done.stdout + done.stderr
    found = {
        (p["kind"], p["container_id"], p["detail"].split(" ")[0])
        for p in json.loads(done.stdout)["problems"]
    }
    assert found == {
        ("shadowed", CID, "tcp/8080"),
        ("contested", CID, "tcp/8081"),
        ("shadowed", "nftfor0b", "tcp/7070"),
        ("contested", "nftfor0b", "tcp/7071"),
    }
    same = "tcp dport { 7071, 8081 } dnat ip to 10.0.0.9:80"  # nft sorts the set
    for backend in ("nftables", "iptables"):
        out = pmctl.run(["add", "--backend", backend, "--network", "podman", "--ip",
                         "10.88.0.31/16", *args, "--container", f"nftfor0{backend[0]}x",
                         "-p", "8080:80", "-p", "8081:80", "-p", "8082:80", "--dry-run",
                         "-o", "json"])  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        warnings = [w for w in json.loads(out.stdout)["warnings"] if "nat hook" in w]
        assert warnings == [
            "IPv4 tcp/8080 is taken first by another nftables table's nat hook"
            " (fib daddr type local tcp dport 8080 dnat to 10.0.0.9:80): this mapping is"
            " shadowed (it gets no traffic there)",
            "IPv4 tcp/8081 is taken by another nftables table's nat hook at the plugin's"
            f" priority too ({same}): this mapping is contested (the kernel's hook order"
            " decides which of them gets the traffic)",
        ], (backend, out.stdout)


def test_one_nft_mapping_check_reports_the_other_nat_owners_of_its_ports(
    node: str, tmp_path: Path
) -> None:
    """Beside HANDMADE's tables, and a rule in iptables-legacy's nat table on 9090 (the
    plugin's iptables is iptables-nft): the whole-node check reported the nftables
    mapping's 8080 shadowed, 8081 and 9090 contested, while the check of that one
    mapping said healthy, exit 0. Now the same problems, exit 1; under --backend
    nftables (which reads no iptables, the other flavour neither) those of the node
    check under it."""
    rp.require(rp.mode_available("legacy"))
    _behind_handmade(node, tmp_path)
    rp.iptables(node, ["-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport", "9090", "-j",
                       "DNAT", "--to-destination", "172.17.0.2:80"], mode="legacy")  # fmt: skip
    args = _args(node, tmp_path)
    mapping = ["--network", "podman", "--container", CID, "--ip", "10.88.0.21/16"]
    mapping += [arg for port in (8080, 8081, 8082, 9090) for arg in ("-p", f"{port}:80")]
    for extra, kinds in (
        ((), [("shadowed", "tcp/8080"), ("contested", "tcp/8081"), ("contested", "tcp/9090")]),
        (("--backend", "nftables"), [("shadowed", "tcp/8080"), ("contested", "tcp/8081")]),
    ):
        whole = pmctl.run(["check", *args, *extra, "-o", "json"])
        expected = [p for p in json.loads(whole.stdout)["problems"] if p["container_id"] == CID]
        found = sorted((p["kind"], p["detail"].split(" ")[0]) for p in expected)
        assert found == sorted(kinds), whole.stdout
        done = pmctl.run(["check", *args, *mapping, *extra, "-o", "json"])
        assert done.returncode == 1, done.stdout + done.stderr
        assert json.loads(done.stdout)["problems"] == expected, (extra, done.stdout)
    # --repair cures none of them (another tool's tables are not ours): nothing written.
    before = upstream.ruleset_text(node)
    done = pmctl.run(["check", *args, *mapping, "--repair"])
    assert done.returncode == 1, done.stdout + done.stderr
    assert upstream.ruleset_text(node) == before


def test_a_kube_proxy_nftables_nodeport_on_a_host_port_is_contested(
    node: str, tmp_path: Path
) -> None:
    """kube-proxy in nftables mode (its table as tests/fixtures/nft_foreign/
    ip-kube-proxy.txt: nat-prerouting at dstnat, the NodePorts in a verdict map): a
    NodePort that is also a hostPort is contested; the row said `ok`."""
    ports = [rp.port_mapping(30080, 80), rp.port_mapping(30090, 80)]
    conf = upstream.nft_conf("podman", ["10.88.0.21/16"], ports)
    upstream.run(V191, "ADD", node, CID, conf, check=True)
    rp.write_cni_cache(tmp_path, "podman", CID, "eth0", conf, ports, ["10.88.0.21/16"])
    kube = Path(__file__).parents[1] / "fixtures" / "nft_foreign" / "ip-kube-proxy.txt"
    text = "\n".join(line.split(" # handle ")[0] for line in kube.read_text().splitlines())
    upstream.nft(node, "-f", "-", stdin=text)
    args = _args(node, tmp_path)
    assert _statuses(args) == {
        ("nftables", 30080): (["contested"], None),
        ("nftables", 30090): (["ok"], None),
    }
    done = pmctl.run(["check", *args, "-o", "json"])
    assert done.returncode == 1, done.stdout + done.stderr
    [problem] = json.loads(done.stdout)["problems"]
    assert (
        problem["kind"] == "contested"
        and "vmap @service-nodeports (tcp . 30080 : goto" in (problem["detail"])
    )


def test_the_contested_fix_names_kube_proxys_table_not_a_hand_written_one(
    node: str, tmp_path: Path
) -> None:
    """check's fix for a hostPort that kube-proxy's nftables NodePort contests said "the
    node's other NAT owner (a hand-written nft table) holds this port": the operator was
    sent looking for a table someone wrote by hand, while it is kube-proxy's (a Service
    to change). It names the table the rule is in, on the terminal and in JSON."""
    ports = [rp.port_mapping(30080, 80)]
    conf = upstream.nft_conf("podman", ["10.88.0.21/16"], ports)
    upstream.run(V191, "ADD", node, CID, conf, check=True)
    rp.write_cni_cache(tmp_path, "podman", CID, "eth0", conf, ports, ["10.88.0.21/16"])
    kube = Path(__file__).parents[1] / "fixtures" / "nft_foreign" / "ip-kube-proxy.txt"
    text = "\n".join(line.split(" # handle ")[0] for line in kube.read_text().splitlines())
    upstream.nft(node, "-f", "-", stdin=text)
    args = _args(node, tmp_path)
    done = pmctl.run(["check", *args, "-o", "json"])
    [problem] = json.loads(done.stdout)["problems"]
    said = "the node's other NAT owner (the nftables table ip kube-proxy) holds this port"
    assert problem["kind"] == "contested" and said in problem["why"], problem
    assert "hand-written" not in problem["why"] + (problem["fix"] or "")
    done = pmctl.run(["check", *args])
    assert done.returncode == 1 and said in " ".join(done.stdout.split()), done.stdout


def _mapping_samples(path: Path) -> Dict[Tuple[str, ...], str]:
    """portmapctl_mappings samples of a metrics file, keyed by their labels but the
    command's."""
    found = {}
    for line in path.read_text().splitlines():
        if line.startswith("portmapctl_mappings{"):
            labels, _, value = line.partition("} ")
            pairs = sorted(
                p for p in labels.split("{", 1)[1].split(",") if not p.startswith("command=")
            )
            found[tuple(pairs)] = value
    return found


def test_check_counts_the_mappings_list_counts(node: str, tmp_path: Path) -> None:
    """check --metrics-file counted a mapping another nftables table's earlier hook
    shadows (or one at its priority contests) as `ok`, while list counted it `shadowed`
    (`contested`): an alert on one command's series missed what the other's raised."""
    _behind_handmade(node, tmp_path)
    args = _whole_node(node, tmp_path)
    samples = {}
    for command in ("list", "check"):
        path = tmp_path / f"{command}.prom"
        done = pmctl.run([command, *args, "--metrics-file", str(path)])
        assert done.returncode in (0, 1), done.stdout + done.stderr
        samples[command] = _mapping_samples(path)
    assert samples["check"] == samples["list"]
    for backend, status, count in (
        ("nftables", "shadowed", "1.0"),
        ("nftables", "contested", "1.0"),
        ("nftables", "ok", "2.0"),
        ("iptables", "shadowed", "1.0"),
        ("iptables", "contested", "1.0"),
        ("iptables", "ok", "1.0"),
    ):
        key = (f'backend="{backend}"', 'family="4"', f'status="{status}"')
        assert samples["check"][key] == count, (key, samples["check"])


EARLY_6060 = """
table ip early {
  chain pre {
    type nat hook prerouting priority dstnat - 10; policy accept;
    tcp dport 6060 dnat to 10.0.0.9:80
  }
}
"""


def test_a_port_another_table_takes_first_is_not_also_contested(node: str, tmp_path: Path) -> None:
    """One host port in both plugin backends, and a hand-written table whose hook runs
    before both takes it: each row is shadowed, and neither contests the other (no
    traffic reaches either). list said so; check also reported each as contested with
    the other backend, a second problem with a fix that could not help."""
    rp.require(rp.plugin_available())
    ports = [rp.port_mapping(6060, 80)]
    conf = upstream.nft_conf("podman", ["10.88.0.21/16"], ports)
    upstream.run(V191, "ADD", node, CID, conf, check=True)
    rp.write_cni_cache(tmp_path, "podman", CID, "eth0", conf, ports, ["10.88.0.21/16"])
    ipt_conf = rp.plugin_conf("podman", ["10.88.0.11/16"], ports)
    rp.run_plugin("ADD", node, "nftfor0c", ipt_conf, check=True)
    rp.write_cni_cache(tmp_path, "podman", "nftfor0c", "eth0", ipt_conf, ports, ["10.88.0.11/16"])
    upstream.nft(node, "-f", "-", stdin=EARLY_6060)
    args = _args(node, tmp_path)
    rule = "tcp dport 6060 dnat to 10.0.0.9:80"
    assert _statuses(args) == {
        ("nftables", 6060): (["shadowed"], rule),
        ("iptables", 6060): (["shadowed"], rule),
    }
    done = pmctl.run(["check", *args, "-o", "json"])
    assert done.returncode == 1, done.stdout + done.stderr
    found = sorted((p["kind"], p["container_id"]) for p in json.loads(done.stdout)["problems"])
    assert found == [("shadowed", CID), ("shadowed", "nftfor0c")]


def _mapped_behind(node: str, tmp_path: Path, ports: List[dict], table: str) -> None:
    """CID (upstream v1.9.1, nftables) mapping `ports`, then another tool's `table`."""
    conf = upstream.nft_conf("podman", ["10.88.0.21/16"], ports)
    upstream.run(V191, "ADD", node, CID, conf, check=True)
    rp.write_cni_cache(tmp_path, "podman", CID, "eth0", conf, ports, ["10.88.0.21/16"])
    upstream.nft(node, "-f", "-", stdin=table)


# A firewall's named sets (one of them an interval set) and conditional gotos.
SETS_AND_GOTOS = """
table ip fw {
  set ports {
    type inet_service
    elements = { 8080 }
  }
  set span {
    type inet_service
    flags interval
    elements = { 8082-8083 }
  }
  chain pre {
    type nat hook prerouting priority dstnat - 10; policy accept;
    tcp dport @ports dnat to 10.0.0.9:80
    tcp dport @span dnat to 10.0.0.9:80
    meta l4proto udp goto udp_only
    tcp dport 8081 dnat to 10.0.0.9:80
    meta l4proto . th dport vmap { tcp . 8085 : goto elsewhere }
    tcp dport 8085 dnat to 10.0.0.9:85
    jump sub
  }
  chain udp_only {
    udp dport 9999 dnat to 10.0.0.9:99
  }
  chain sub {
    tcp dport 7777 goto elsewhere
    tcp dport 8084 dnat to 10.0.0.9:84
  }
  chain elsewhere {
  }
}
"""


def test_named_sets_and_conditional_gotos_are_walked(node: str, tmp_path: Path) -> None:
    """A named port set (interval too) was not judged, and a goto with a condition
    ended the whole walk: every row said `ok`, check was healthy, while the
    firewall's earlier hook took 8080-8084. A goto ends its chain only for what it
    sends (tcp goes on past `meta l4proto udp goto`), and the end of a chain a
    nested goto went to returns to the caller's caller (8084 after `jump sub`). A vmap
    element's goto sends its port away for good: the DNAT after it never sees tcp/8085
    (it was `shadowed` by it)."""
    ports = [rp.port_mapping(p, 80) for p in range(8080, 8086)]
    ports.append(rp.port_mapping(5353, 53, "udp"))
    _mapped_behind(node, tmp_path, ports, SETS_AND_GOTOS)
    args = _args(node, tmp_path)
    by = {
        8080: "tcp dport @ports dnat to 10.0.0.9:80",
        8081: "tcp dport 8081 dnat to 10.0.0.9:80",
        8082: "tcp dport @span dnat to 10.0.0.9:80",
        8083: "tcp dport @span dnat to 10.0.0.9:80",
        8084: "tcp dport 8084 dnat to 10.0.0.9:84",
    }
    expected = {("nftables", p): (["shadowed"], rule) for p, rule in by.items()}
    expected[("nftables", 8085)] = (["ok"], None)
    expected[("nftables", 5353)] = (["ok"], None)
    assert _statuses(args) == expected
    done = pmctl.run(["check", *args, "-o", "json"])
    assert done.returncode == 1, done.stdout + done.stderr
    assert sorted(p["detail"].split(" ")[0] for p in json.loads(done.stdout)["problems"]) == [
        f"tcp/{p}" for p in sorted(by)
    ]


def test_an_iptables_conditional_goto_ends_only_its_packets(node: str, tmp_path: Path) -> None:
    """`-p udp -g X` ahead of a tcp DNAT ended the walk of PREROUTING: the DNAT that
    takes the port first (Debian's plugin, iptables) or at the same hook priority
    (upstream v1.9.1, nftables) was not seen, and both rows said `ok`."""
    rp.require(rp.plugin_available())
    _nft_container(node, tmp_path)  # 8080, 9090 in nftables
    ipt_ports = [rp.port_mapping(7070, 80)]
    ipt_conf = rp.plugin_conf("podman", ["10.88.0.11/16"], ipt_ports)
    rp.run_plugin("ADD", node, "nftfor0b", ipt_conf, check=True)
    rp.write_cni_cache(tmp_path, "podman", "nftfor0b", "eth0", ipt_conf, ipt_ports,
                       ["10.88.0.11/16"])  # fmt: skip
    for rule in (
        ["-N", "UDPONLY"],
        ["-A", "UDPONLY", "-p", "udp", "-m", "udp", "--dport", "9999", "-j", "REDIRECT"],
        ["-I", "PREROUTING", "1", "-p", "udp", "-g", "UDPONLY"],
        ["-I", "PREROUTING", "2", "-p", "tcp", "-m", "multiport", "--dports",
         "7070,9090", "-j", "REDIRECT"],
    ):  # fmt: skip
        rp.iptables(node, ["-t", "nat", *rule])
    statuses = {k: v[0] for k, v in _statuses(_args(node, tmp_path)).items()}
    assert statuses == {
        ("nftables", 8080): ["ok"],
        ("nftables", 9090): ["contested"],
        ("iptables", 7070): ["shadowed"],
    }


DNAT_MAPS = """
table ip fw {
  map by_port {
    type inet_service : ipv4_addr
    elements = { 8085 : 10.0.0.9 }
  }
  chain pre {
    type nat hook prerouting priority dstnat - 10; policy accept;
    dnat to tcp dport map { 9000 : 10.0.0.9 }
    dnat to tcp dport map @by_port
  }
}
"""


def test_a_dnat_through_a_port_map_takes_only_its_keys(node: str, tmp_path: Path) -> None:
    """`dnat to tcp dport map { 9000 : ... }` was read as a DNAT of every packet: every
    row of every protocol was `shadowed` by it (a false alarm on the whole node). It
    takes the ports its map (inline or named) has a value for, tcp only."""
    ports = [rp.port_mapping(8080, 80), rp.port_mapping(8085, 85)]
    ports.append(rp.port_mapping(5353, 53, "udp"))
    _mapped_behind(node, tmp_path, ports, DNAT_MAPS)
    assert _statuses(_args(node, tmp_path)) == {
        ("nftables", 8080): (["ok"], None),
        ("nftables", 8085): (["shadowed"], "dnat to tcp dport map @by_port"),
        ("nftables", 5353): (["ok"], None),
    }


def test_a_rule_for_some_packets_of_a_port_is_said_not_called_ok(node: str, tmp_path: Path) -> None:
    """HANDMADE's earlier hook DNATs tcp/9090 from 10.0.0.0/8 only: whether the mapping
    gets its traffic depends on where it comes from, which no dump says. The row stays
    `ok` (no false alarm, exit codes unchanged) and list and check say on stderr that
    they cannot tell, naming the rule; before, nothing was said. So for a DNAT in a
    chain a jump not judged leads to (OpenWrt fw4's `iifname "wan" jump dstnat_wan`).
    A later hook's rule (dstnat + 10) is never said."""
    _behind_handmade(node, tmp_path)
    upstream.nft(node, "add", "rule", "ip", "late", "pre", "ip", "saddr", "10.0.0.0/8",
                 "tcp", "dport", "8080", "dnat", "to", "10.0.0.9:80")  # fmt: skip
    upstream.nft(node, "-f", "-", stdin=FW4)
    args = _args(node, tmp_path)
    said = [
        f"portmapctl: warning: cannot tell whether IPv4 tcp/{port} (podman/{CID}) gets all"
        " its traffic: another nftables table's nat hook, at or before the plugin's, may"
        f" take some of it ({rule})"
        for port, rule in (
            (8082, 'iifname "wan" jump dstnat_wan, then tcp dport 8082 dnat ip to 10.0.0.9:80'),
            (9090, "ip saddr 10.0.0.0/8 tcp dport 9090 dnat to 10.0.0.9:90"),
        )
    ]
    done = pmctl.run(["list", *args, "-o", "json"])
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == said
    rows = {r["host_port"]: r["status"] for r in json.loads(done.stdout)["mappings"]}
    assert rows[8082] == rows[9090] == ["ok"]
    # Said of the rows shown only.
    done = pmctl.run(["list", *args, "--container", "nftfor0b"])
    assert done.returncode == 0 and "cannot tell" not in done.stderr, done.stderr
    done = pmctl.run(["check", *args])
    assert done.returncode == 1  # (HANDMADE's shadowed and contested ports)
    assert [line for line in done.stderr.splitlines() if "cannot tell" in line] == said
    assert "tcp/9090" not in done.stdout and "tcp/8082" not in done.stdout


FW4 = """
table inet fw4 {
  chain dstnat {
    type nat hook prerouting priority dstnat - 5; policy accept;
    iifname "wan" jump dstnat_wan
  }
  chain dstnat_wan {
    tcp dport 8082 dnat ip to 10.0.0.9:80
  }
}
"""


NATIVE_NAT = """
table ip nat {
  chain PREROUTING {
    type nat hook prerouting priority dstnat - 10; policy accept;
    tcp dport 8080 dnat to 10.0.0.9:80
  }
}
"""


def test_an_nft_table_named_like_iptables_nat_at_another_priority_is_read(
    node: str, tmp_path: Path
) -> None:
    """A firewall written with nft as `table ip nat { chain PREROUTING ... }` at dstnat
    - 10 was passed by as iptables' own nat table (iptables-nft-save shows none of its
    rules: "contains incompatible base-chains"), so the port it takes first said `ok`.
    iptables-nft makes that chain at -100 only: at any other priority it is read."""
    _nft_container(node, tmp_path)
    upstream.nft(node, "-f", "-", stdin=NATIVE_NAT)
    assert _statuses(_args(node, tmp_path)) == {
        ("nftables", 8080): (["shadowed"], "tcp dport 8080 dnat to 10.0.0.9:80"),
        ("nftables", 9090): (["ok"], None),
    }


PORT_VMAPS = """
table ip vm {
  chain pre {
    type nat hook prerouting priority dstnat - 10; policy accept;
    tcp dport vmap { 8080 : drop, 9999 : goto x }
    th dport vmap { 8081 : jump x }
  }
  chain x {
    dnat to 10.0.0.9
  }
}
"""


def test_a_vmap_keyed_by_the_port_alone_is_judged(node: str, tmp_path: Path) -> None:
    """`tcp dport vmap { 8080 : drop }` and `th dport vmap { 8081 : jump x }` were
    not judged (only `meta l4proto . th dport` keys were): the ports they take first
    said `ok`. Each element is judged as the rule it stands for; a port with no
    element (sctp/8082) is left alone."""
    ports = [rp.port_mapping(8080, 80), rp.port_mapping(8081, 81, "udp")]
    ports.append(rp.port_mapping(8082, 82, "sctp"))
    _mapped_behind(node, tmp_path, ports, PORT_VMAPS)
    assert _statuses(_args(node, tmp_path)) == {
        ("nftables", 8080): (
            ["shadowed"],
            "tcp dport vmap { 8080 : drop, 9999 : goto x } (8080 : drop)",
        ),
        ("nftables", 8081): (["shadowed"], "th dport vmap { 8081 : jump x }"),
        ("nftables", 8082): (["ok"], None),
    }


def _loopback_and_not(node: str, tmp_path: Path, table: str) -> List[str]:
    """A container of each backend mapping a port on 127.0.0.1 and one on every
    address (upstream v1.9.1's nftables: 9000 on 127.0.0.1, 9001; Debian's iptables:
    7000 on 127.0.0.1, 7001), then another tool's `table`. The list arguments."""
    rp.require(rp.plugin_available())
    _mapped_behind(node, tmp_path, [rp.port_mapping(9000, 80, host_ip="127.0.0.1"),
                                    rp.port_mapping(9001, 80)], table)  # fmt: skip
    ports = [rp.port_mapping(7000, 80, host_ip="127.0.0.1"), rp.port_mapping(7001, 80)]
    conf = rp.plugin_conf("podman", ["10.88.0.11/16"], ports)
    rp.run_plugin("ADD", node, "nftfor0b", conf, check=True)
    rp.write_cni_cache(tmp_path, "podman", "nftfor0b", "eth0", conf, ports, ["10.88.0.11/16"])
    return _args(node, tmp_path)


def _hook_warnings(args: List[str], port: int) -> List[str]:
    """add's (dry run, nftables) warnings of another table's nat hook for 127.0.0.1:port."""
    done = pmctl.run(["add", *args, "--backend", "nftables", "--network", "podman", "--ip",
                      "10.88.0.31/16", "--container", "nftfor0c", "-p", f"127.0.0.1:{port}:80",
                      "--dry-run", "-o", "json"])  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return [w for w in json.loads(done.stdout)["warnings"] if "nftables table's nat" in w]


def _problem_ports(args: List[str]) -> List[Tuple[str, str]]:
    done = pmctl.run(["check", *args, "-o", "json"])
    problems = json.loads(done.stdout)["problems"]
    assert done.returncode == (1 if problems else 0), done.stdout + done.stderr
    return sorted((p["kind"], p["detail"].split(" ")[0]) for p in problems)


PREROUTING_FW = """
table ip fw {
  chain pre {
    type nat hook prerouting priority dstnat - 10; policy accept;
    tcp dport { 7000, 7001, 9000, 9001 } dnat to 10.0.0.9
  }
}
"""


def test_a_loopback_mapping_is_not_judged_by_another_tables_prerouting(
    node: str, tmp_path: Path
) -> None:
    """Only the node's own connections reach a mapping on 127.0.0.1, through the nat
    output hook: another table's earlier prerouting DNAT of its port takes nothing
    from it (before: `shadowed`, check exit 1, a false alarm), in either backend. The
    same rule still shadows the port mapped on every address."""
    args = _loopback_and_not(node, tmp_path, PREROUTING_FW)
    rule = "tcp dport { 7000, 7001, 9000, 9001 } dnat to 10.0.0.9"
    assert _statuses(args) == {
        ("nftables", 9000): (["ok"], None),
        ("nftables", 9001): (["shadowed"], rule),
        ("iptables", 7000): (["ok"], None),
        ("iptables", 7001): (["shadowed"], rule),
    }
    assert _problem_ports(args) == [("shadowed", "tcp/7001"), ("shadowed", "tcp/9001")]
    assert _hook_warnings(args, 9000) == []


OUTPUT_FW = """
table ip fw {
  chain out {
    type nat hook output priority -110; policy accept;
    ip daddr != 127.0.0.0/8 tcp dport 7000 dnat to 10.0.0.9
    tcp dport 9000 dnat to 10.0.0.9
    tcp dport 7000 drop
    tcp dport { 7001, 9001 } dnat to 10.0.0.9
  }
}
table inet same {
  chain out {
    type nat hook output priority -100; policy accept;
    tcp dport 9000 dnat ip to 10.0.0.9
  }
}
"""


def test_a_loopback_mapping_is_judged_by_another_tables_output_hook(
    node: str, tmp_path: Path
) -> None:
    """Another table's nat output hook at an earlier priority than the plugin's (-100)
    that DNATs or drops the port of a mapping on 127.0.0.1 takes every connection
    to it first: `shadowed`, naming the rule (before: `ok`, check healthy; output
    hooks were never looked at). A rule for other destinations only (`ip daddr !=
    127.0.0.0/8`) takes nothing from it; the mappings on every address get the
    network's traffic and stay `ok`."""
    args = _loopback_and_not(node, tmp_path, OUTPUT_FW)
    assert _statuses(args) == {
        ("nftables", 9000): (["shadowed"], "tcp dport 9000 dnat to 10.0.0.9"),
        ("nftables", 9001): (["ok"], None),
        ("iptables", 7000): (["shadowed"], "tcp dport 7000 drop"),
        ("iptables", 7001): (["ok"], None),
    }
    assert _problem_ports(args) == [("shadowed", "tcp/7000"), ("shadowed", "tcp/9000")]
    assert _hook_warnings(args, 9000) == [
        "IPv4 tcp/9000 is taken first by another nftables table's nat hook (tcp dport 9000"
        " dnat to 10.0.0.9): this mapping is shadowed (it gets no traffic there)"
    ]


def test_an_output_hook_at_the_plugins_priority_contests_a_loopback_mapping(
    node: str, tmp_path: Path
) -> None:
    """At the plugin's own output priority (-100) the kernel's hook order decides:
    `contested` (before: `ok`)."""
    args = _loopback_and_not(node, tmp_path, OUTPUT_FW.replace("priority -110", "priority -90"))
    assert _statuses(args) == {
        ("nftables", 9000): (["contested"], None),
        ("nftables", 9001): (["ok"], None),
        ("iptables", 7000): (["ok"], None),
        ("iptables", 7001): (["ok"], None),
    }
    assert _problem_ports(args) == [("contested", "tcp/9000")]


def test_an_iptables_rule_contests_a_loopback_nftables_mapping_from_output(
    node: str, tmp_path: Path
) -> None:
    """iptables' nat PREROUTING and cni_hostport's prerouting hook at one priority,
    but a mapping on 127.0.0.1 gets the node's own connections only, through the nat
    output hook: another tool's PREROUTING rule for its port contests nothing (before:
    `contested`, check exit 1); its OUTPUT rule, at cni_hostport's output priority
    (-100), does. The port mapped on every address is contested by PREROUTING's."""
    ports = [rp.port_mapping(9000, 80, host_ip="127.0.0.1"), rp.port_mapping(9001, 80)]
    _mapped_behind(node, tmp_path, ports, "")
    rp.iptables(node, ["-t", "nat", "-A", "PREROUTING", "-p", "tcp", "-m", "multiport",
                       "--dports", "9000,9001", "-j", "REDIRECT"])  # fmt: skip
    args = _args(node, tmp_path)
    assert _statuses(args) == {
        ("nftables", 9000): (["ok"], None),
        ("nftables", 9001): (["contested"], None),
    }
    assert _problem_ports(args) == [("contested", "tcp/9001")]
    rp.iptables(node, ["-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-m", "tcp",
                       "--dport", "9000", "-j", "REDIRECT"])  # fmt: skip
    assert _statuses(args) == {
        ("nftables", 9000): (["contested"], None),
        ("nftables", 9001): (["contested"], None),
    }


def test_a_table_whose_hook_cannot_be_read_is_said_not_taken_for_nothing(
    node: str, tmp_path: Path
) -> None:
    """Another table's earlier nat hook DNATs 8080 (NATIVE_NAT's shape, as `fw`), and
    nft cannot list that table (an `nft` first on PATH fails for it alone). Before, the
    row said a plain `ok`, list and check said nothing and add warned of nothing (the
    failure was a -v note): now each says, in one line on stderr, that it cannot tell
    whether another table's hook takes the ports. Statuses and exit codes stay what the
    rules that could be read give (no false alarm)."""
    ports = [rp.port_mapping(8080, 80)]
    _mapped_behind(node, tmp_path, ports, NATIVE_NAT.replace("table ip nat", "table ip fw"))
    real = shutil.which("nft") or "/usr/sbin/nft"
    wrapper = tmp_path / "bin" / "nft"
    wrapper.parent.mkdir()
    wrapper.write_text(
        '#!/bin/sh\ncase "$*" in *"table ip fw"*) echo "Error: no" >&2; exit 1;; esac\n'
        f'exec {real} "$@"\n'
    )
    wrapper.chmod(0o755)
    env = {"PATH": f"{wrapper.parent}:{os.environ['PATH']}"}
    args = _args(node, tmp_path)
    done = pmctl.run(["list", *args, "-o", "json"], env=env)
    assert done.returncode == 0, done.stderr
    assert [r["status"] for r in json.loads(done.stdout)["mappings"]] == [["ok"]]
    said = "cannot tell whether another nftables table's nat hook takes mapped ports"
    assert said in done.stderr and "prerouting" in done.stderr, done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    done = pmctl.run(["check", *args], env=env)
    assert done.returncode == 0 and said in done.stderr, done.stdout + done.stderr
    mapping = ["--network", "podman", "--container", CID, "--ip", "10.88.0.21/16", "-p", "8080:80"]
    done = pmctl.run(["add", "--dry-run", "--backend", "nftables", *mapping, *args], env=env)
    assert done.returncode == 0, done.stderr
    assert "cannot tell whether another nftables table's nat hook takes these ports" in done.stderr
    # Readable again: shadowed, as before.
    done = pmctl.run(["list", *args, "-o", "json"])
    assert [r["status"] for r in json.loads(done.stdout)["mappings"]] == [["shadowed"]]


ANOTHER_ADDRESS = """
table ip fw {
  chain out {
    type nat hook output priority -110; policy accept;
    ip daddr 192.168.5.5 tcp dport { 7000, 9000 } dnat to 10.0.0.9
    ip daddr 127.0.0.1 tcp dport 9001 dnat to 10.0.0.9
  }
}
"""


def test_an_output_rule_for_another_address_is_nothing_to_a_loopback_mapping(
    node: str, tmp_path: Path
) -> None:
    """An earlier output hook's `ip daddr 192.168.5.5 tcp dport 9000 dnat ...` (a
    netavark-style rule for a container on another host IP) never meets a connection
    to 127.0.0.1:9000: before, list and check said they could not tell whether the
    loopback mappings got all their traffic. A rule for a loopback destination the
    walk cannot judge (`ip daddr 127.0.0.1`, port 9001 on every address) is not
    judged, and says nothing of a mapping the output hook is not walked for."""
    args = _loopback_and_not(node, tmp_path, ANOTHER_ADDRESS)
    done = pmctl.run(["list", *args, "-o", "json"])
    assert done.returncode == 0 and done.stderr == "", done.stderr
    rows = {r["host_port"]: r["status"] for r in json.loads(done.stdout)["mappings"]}
    assert rows == {9000: ["ok"], 9001: ["ok"], 7000: ["ok"], 7001: ["ok"]}
    done = pmctl.run(["check", *args])
    assert done.returncode == 0 and "cannot tell" not in done.stderr, done.stdout + done.stderr


# netavark's shape (its nftables driver): a container's mapping on one host IP is
# `ip daddr HOSTIP tcp dport PORT`, on every address `tcp dport PORT` alone.
ONE_HOST_IP = """
table ip nv {
  chain pre {
    type nat hook prerouting priority dstnat - 10; policy accept;
    ip daddr 192.168.5.5 tcp dport { 7000, 7001, 9000, 9001 } dnat to 10.0.0.9
    ip daddr != 192.168.5.0/24 tcp dport { 7002, 9002 } dnat to 10.0.0.9
  }
}
"""


def test_another_tables_rule_for_one_host_ip_is_judged_for_each_host_ip(
    node: str, tmp_path: Path
) -> None:
    """An earlier prerouting hook's `ip daddr 192.168.5.5 tcp dport 9000 dnat ...` takes
    every connection of a mapping on 192.168.5.5:9000 (before: `ok`, and list said it
    could not tell), none of one on 192.168.6.6:9001 (before: a 'cannot tell' line on
    every run), and only some of a mapping on every address (still 'cannot tell'). The
    same for `ip daddr != PREFIX`, and for both backends."""
    rp.require(rp.plugin_available())
    ports = [rp.port_mapping(9000, 80, host_ip="192.168.5.5"),
             rp.port_mapping(9001, 80, host_ip="192.168.6.6"),
             rp.port_mapping(9002, 80, host_ip="192.168.6.6")]  # fmt: skip
    _mapped_behind(node, tmp_path, ports, ONE_HOST_IP)
    ipt_ports = [rp.port_mapping(7000, 80, host_ip="192.168.5.5"),
                 rp.port_mapping(7001, 80),
                 rp.port_mapping(7002, 80, host_ip="192.168.5.6")]  # fmt: skip
    conf = rp.plugin_conf("podman", ["10.88.0.11/16"], ipt_ports)
    rp.run_plugin("ADD", node, "nftfor0b", conf, check=True)
    rp.write_cni_cache(tmp_path, "podman", "nftfor0b", "eth0", conf, ipt_ports, ["10.88.0.11/16"])
    args = _args(node, tmp_path)
    taken = "ip daddr 192.168.5.5 tcp dport { 7000, 7001, 9000, 9001 } dnat to 10.0.0.9"
    elsewhere = "ip daddr != 192.168.5.0/24 tcp dport { 7002, 9002 } dnat to 10.0.0.9"
    done = pmctl.run(["list", *args, "-o", "json"])
    assert done.returncode == 0, done.stderr
    rows = {(r["backend"], r["host_port"]): (r["status"], r.get("shadowed_by"))
            for r in json.loads(done.stdout)["mappings"]}  # fmt: skip
    assert rows == {
        ("nftables", 9000): (["shadowed"], taken),
        ("nftables", 9001): (["ok"], None),
        ("nftables", 9002): (["shadowed"], elsewhere),
        ("iptables", 7000): (["shadowed"], taken),
        ("iptables", 7001): (["ok"], None),
        ("iptables", 7002): (["ok"], None),
    }
    # Only the mapping on every address is left in doubt, and said so once.
    assert "cannot tell" in done.stderr and "7001" in done.stderr, done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert _problem_ports(args) == [
        ("shadowed", "tcp/7000"), ("shadowed", "tcp/9000"), ("shadowed", "tcp/9002")
    ]  # fmt: skip
    mapping = ["--network", "podman", "--ip", "10.88.0.31/16", "--container", "nftfor0c"]
    done = pmctl.run(["add", *args, "--backend", "nftables", *mapping, "-p",
                      "192.168.7.7:9000:80", "--dry-run"])  # fmt: skip
    assert done.returncode == 0 and done.stderr == "", done.stderr
    done = pmctl.run(["add", *args, "--backend", "nftables", *mapping, "-p",
                      "192.168.5.5:9001:80", "--dry-run"])  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == (
        "portmapctl: warning: IPv4 tcp/9001 is taken first by another nftables table's nat"
        f" hook ({taken}): this mapping is shadowed (it gets no traffic there)\n"
    )


# kube-proxy's nftables mode as it runs by default (nodePortAddresses "primary"): the
# NodePorts are taken on the node's primary addresses alone, a named address set.
KUBE_PRIMARY = """
table ip kube-proxy {
  comment "rules for kube-proxy"
  set nodeport-ips {
    type ipv4_addr
    comment "IPs that accept NodePort traffic"
    elements = { 192.168.5.5 }
  }
  map service-nodeports {
    type inet_proto . inet_service : verdict
    comment "NodePort traffic"
    elements = { tcp . 30085 : goto external-4GDCUZ2U-ns/svc/tcp/http,
                 tcp . 30086 : goto external-4GDCUZ2U-ns/svc/tcp/http,
                 tcp . 30087 : goto external-4GDCUZ2U-ns/svc/tcp/http,
                 tcp . 30088 : goto external-4GDCUZ2U-ns/svc/tcp/http }
  }
  chain nat-prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    jump services
  }
  chain services {
    ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports
  }
  chain mark-for-masquerade {
    meta mark set meta mark | 0x00004000
  }
  chain external-4GDCUZ2U-ns/svc/tcp/http {
    jump mark-for-masquerade
    goto service-4GDCUZ2U-ns/svc/tcp/http
  }
  chain service-4GDCUZ2U-ns/svc/tcp/http {
    numgen random mod 1 vmap { 0 : goto endpoint-5OJB2KTY-ns/svc/tcp/http__10.244.2.5/8080 }
  }
  chain endpoint-5OJB2KTY-ns/svc/tcp/http__10.244.2.5/8080 {
    ip saddr 10.244.2.5 jump mark-for-masquerade
    meta l4proto tcp dnat to 10.244.2.5:8080
  }
}
"""


def test_kube_proxys_nodeports_on_its_primary_addresses_are_judged(
    node: str, tmp_path: Path
) -> None:
    """kube-proxy's default nftables rule, `ip daddr @nodeport-ips meta l4proto . th
    dport vmap @service-nodeports`, was passed over whole: a hostPort on the node's
    primary address (in the set) that is also a NodePort was `ok` in either backend
    (it is contested: both hooks at dstnat), and one on every address was `ok` with
    nothing said, though the NodePort takes its connections to that address. The set
    is judged for a mapping on one host IP, as `ip daddr 192.168.5.5` is; for a mapping
    on every address list and check say they cannot tell; a host IP outside the set
    is not taken."""
    rp.require(rp.plugin_available())
    _mapped_behind(node, tmp_path, [rp.port_mapping(30088, 80, host_ip="192.168.5.5")],
                   KUBE_PRIMARY)  # fmt: skip
    ipt_ports = [rp.port_mapping(30085, 80, host_ip="192.168.5.5"),
                 rp.port_mapping(30086, 80, host_ip="192.168.6.6"),
                 rp.port_mapping(30087, 80)]  # fmt: skip
    conf = rp.plugin_conf("podman", ["10.88.0.11/16"], ipt_ports)
    rp.run_plugin("ADD", node, "nftfor0b", conf, check=True)
    rp.write_cni_cache(tmp_path, "podman", "nftfor0b", "eth0", conf, ipt_ports, ["10.88.0.11/16"])
    args = _args(node, tmp_path)
    done = pmctl.run(["list", *args, "-o", "json"])
    assert done.returncode == 0, done.stderr
    rows = {(r["backend"], r["host_port"]): r["status"]
            for r in json.loads(done.stdout)["mappings"]}  # fmt: skip
    assert rows == {
        ("nftables", 30088): ["contested"],
        ("iptables", 30085): ["contested"],
        ("iptables", 30086): ["ok"],
        ("iptables", 30087): ["ok"],
    }
    rule = "ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports"
    assert done.stderr.splitlines() == [
        "portmapctl: warning: cannot tell whether IPv4 tcp/30087 (podman/nftfor0b) gets all"
        " its traffic: another nftables table's nat hook, at or before the plugin's, may"
        f" take some of it ({rule} (tcp . 30087 : goto external-4GDCUZ2U-ns/svc/tcp/http))"
    ]
    done = pmctl.run(["check", *args, "-o", "json"])
    assert done.returncode == 1, done.stdout + done.stderr
    problems = json.loads(done.stdout)["problems"]
    assert sorted((p["kind"], p["detail"].split(" ")[0]) for p in problems) == [
        ("contested", "tcp/30085"), ("contested", "tcp/30088")
    ]  # fmt: skip
    assert all(rule in p["detail"] for p in problems), problems
