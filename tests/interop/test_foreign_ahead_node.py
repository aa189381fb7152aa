"""Another tool's nat rule ahead of the plugin's entry takes a mapped host port: the
real plugin's container on tcp/8080 (or 30080), and a Docker- or kube-proxy-shaped
rule before PREROUTING's jump to CNI-HOSTPORT-DNAT. list says `shadowed`, check
exit 1 with the rule named and no command as the fix, add warns; rules that take only
some packets, or come after the plugin's jump, take nothing (iptables/foreign.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Sequence

import pmctl
import pytest
import realplugin as rp

NETWORK = "k8s-pod-network"
POD = "b2" * 32
IPS = ["10.244.1.2/24"]

DOCKER_RULE = (
    "-A DOCKER ! -i docker0 -p tcp -m tcp --dport {port} -j DNAT --to-destination 172.17.0.2:80"
)
NODEPORT_RULE = (
    '-A KUBE-NODEPORTS -p tcp -m comment --comment "ns/svc:http" -m tcp --dport {port}'
    " -j KUBE-EXT-ABCDEFGHIJKLMNOP"
)


def _ports(port: int) -> List[dict]:
    return [{"HostPort": port, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}]


def _container(host_ns: str, cache: Path, port: int, mode: rp.Mode) -> List[str]:
    """The plugin's container on tcp/`port`, cached; the options that read this node."""
    conf = rp.plugin_conf(NETWORK, IPS, _ports(port))
    rp.run_plugin("ADD", host_ns, POD, conf, mode=mode, check=True)
    rp.write_cni_cache(cache, NETWORK, POD, "eth0", conf, _ports(port), IPS)
    return ["--netns", host_ns, "--cni-cache-dir", str(cache), "--family", "4",
            "--iptables", mode]  # fmt: skip


def _nat(host_ns: str, mode: rp.Mode, *rules: Sequence[str]) -> None:
    for rule in rules:
        rp.iptables(host_ns, ["-t", "nat", *rule], mode=mode)


def _docker(host_ns: str, mode: rp.Mode, port: int) -> None:
    """Docker's shape: PREROUTING -> DOCKER (the docker0 RETURN, then a -p DNAT)."""
    jump = ["-m", "addrtype", "--dst-type", "LOCAL", "-j", "DOCKER"]
    _nat(
        host_ns, mode,
        ["-N", "DOCKER"],
        ["-I", "PREROUTING", "1", *jump],
        ["-A", "DOCKER", "-i", "docker0", "-j", "RETURN"],
        ["-A", "DOCKER", "!", "-i", "docker0", "-p", "tcp", "-m", "tcp", "--dport", str(port),
         "-j", "DNAT", "--to-destination", "172.17.0.2:80"],
    )  # fmt: skip


def _kube(host_ns: str, mode: rp.Mode, port: int) -> None:
    """kube-proxy's shape: PREROUTING -> KUBE-SERVICES (a ClusterIP rule, then the
    NodePort jump last) -> KUBE-NODEPORTS -> KUBE-EXT- -> KUBE-SVC- -> KUBE-SEP-."""
    ext, svc, sep = (
        "KUBE-EXT-ABCDEFGHIJKLMNOP",
        "KUBE-SVC-ABCDEFGHIJKLMNOP",
        "KUBE-SEP-ABCDEFGHIJKLMNOP",
    )
    comment = ["-m", "comment", "--comment"]
    _nat(
        host_ns, mode,
        *(["-N", chain] for chain in ("KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-MARK-MASQ", ext, svc, sep)),
        ["-I", "PREROUTING", "1", *comment, "kubernetes service portals", "-j", "KUBE-SERVICES"],
        ["-A", "KUBE-SERVICES", "-d", "10.96.0.20/32", "-p", "tcp", *comment, "ns/svc:http cluster IP",
         "-m", "tcp", "--dport", "80", "-j", svc],
        ["-A", "KUBE-SERVICES", *comment,
         "kubernetes service nodeports; NOTE: this must be the last rule in this chain",
         "-m", "addrtype", "--dst-type", "LOCAL", "-j", "KUBE-NODEPORTS"],
        ["-A", "KUBE-NODEPORTS", "-p", "tcp", *comment, "ns/svc:http", "-m", "tcp", "--dport",
         str(port), "-j", ext],
        ["-A", ext, *comment, "masquerade traffic for ns/svc:http external destinations",
         "-j", "KUBE-MARK-MASQ"],
        ["-A", ext, "-j", svc],
        ["-A", svc, *comment, "ns/svc:http -> 10.244.2.5:8080", "-j", sep],
        ["-A", sep, "-p", "tcp", *comment, "ns/svc:http", "-m", "tcp", "-j", "DNAT",
         "--to-destination", "10.244.2.5:8080"],
    )  # fmt: skip


def _list(args: List[str]) -> List[tuple]:
    rows = json.loads(pmctl.ok(["list", *args, "-o", "json"]))["mappings"]
    return [(r["host_port"], r["status"], r.get("shadowed_by")) for r in rows]


def _assert_shadowed(args: List[str], port: int, rule: str) -> None:
    assert _list(args) == [(port, ["shadowed"], rule)]
    table = pmctl.run(["list", *args])
    assert "shadowed" in table.stdout, table.stdout + table.stderr
    checked = pmctl.run(["check", *args, "-o", "json"])
    assert checked.returncode == 1, checked.stdout + checked.stderr
    problems = json.loads(checked.stdout)["problems"]
    assert [(p["kind"], p["fix"]) for p in problems] == [("shadowed", None)]
    assert problems[0]["detail"] == (
        f"tcp/{port} taken first by a rule outside the plugin's chains: {rule}"
    )
    text = pmctl.run(["check", *args])
    assert text.returncode == 1 and "kube-proxy NodePort, Docker -p" in text.stdout, text.stdout


@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_a_docker_dnat_ahead_of_the_plugin_shadows_its_port(
    host_ns: str, tmp_path: Path, mode: rp.Mode
) -> None:
    args = _container(host_ns, tmp_path, 8080, mode)
    assert _list(args) == [(8080, ["ok"], None)]
    _docker(host_ns, mode, 8080)
    assert DOCKER_RULE.format(port=8080) in rp.save(host_ns, 4, mode)
    _assert_shadowed(args, 8080, DOCKER_RULE.format(port=8080))


def test_a_kube_proxy_nodeport_ahead_of_the_plugin_shadows_its_port(
    host_ns: str, tmp_path: Path
) -> None:
    args = _container(host_ns, tmp_path, 30080, "nft")
    _kube(host_ns, "nft", 30080)
    assert NODEPORT_RULE.format(port=30080) in rp.save(host_ns, 4)
    _assert_shadowed(args, 30080, NODEPORT_RULE.format(port=30080))


@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_a_control_character_in_a_foreign_rule_is_shown_escaped_not_refused(
    host_ns: str, tmp_path: Path, mode: rp.Mode
) -> None:
    """Another tool's rule ahead of the plugin's entry whose comment holds an escape
    (iptables takes it; so does the kernel): list and check of the whole node stopped
    at it, "refusing a rule argument with control characters", exit 2, every run. It is
    read as any rule, and shown with the escape written out (never sent to a terminal),
    as a rule with no escape is shown (review helper-133)."""
    args = _container(host_ns, tmp_path, 8080, mode)
    _nat(host_ns, mode, ["-I", "PREROUTING", "1", "-p", "tcp", "-m", "tcp", "--dport", "8080",
                         "-m", "comment", "--comment", "red \x1b[31m alert", "-j", "RETURN"])  # fmt: skip
    rule = (
        '-A PREROUTING -p tcp -m tcp --dport 8080 -m comment --comment "red \\x1b[31m alert"'
        " -j RETURN"
    )
    _assert_shadowed(args, 8080, rule)
    for command in ("list", "check"):
        assert "\x1b" not in pmctl.run([command, *args]).stdout  # (the table: no raw escape)


@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_the_same_in_another_tools_chain_is_shown_escaped_too(
    host_ns: str, tmp_path: Path, mode: rp.Mode
) -> None:
    """The same comment on a Docker-shaped DNAT in a chain of its own: a rule of another
    tool's chain is kept as its raw line, which was reported as it was, escape and all,
    to a terminal (check's detail, add's warning; review helper-134)."""
    args = _container(host_ns, tmp_path, 8080, mode)
    _nat(
        host_ns, mode,
        ["-N", "DOCKER"],
        ["-I", "PREROUTING", "1", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "DOCKER"],
        ["-A", "DOCKER", "-p", "tcp", "-m", "tcp", "--dport", "8080", "-m", "comment",
         "--comment", "red \x1b[31m alert", "-j", "DNAT", "--to-destination", "172.17.0.2:80"],
    )  # fmt: skip
    rule = (
        '-A DOCKER -p tcp -m tcp --dport 8080 -m comment --comment "red \\x1b[31m alert"'
        " -j DNAT --to-destination 172.17.0.2:80"
    )
    _assert_shadowed(args, 8080, rule)
    for command in ("list", "check"):
        assert "\x1b" not in pmctl.run([command, *args]).stdout
    added = pmctl.run(["add", *args[:-2], "--network", NETWORK, "--container", "c2", "--ip",
                       "10.244.1.3/24", "-p", "8080:80", "--dry-run"])  # fmt: skip
    assert "\\x1b[31m" in added.stderr and "\x1b" not in added.stderr, added.stderr


def test_rules_that_take_only_some_packets_or_come_later_shadow_nothing(
    host_ns: str, tmp_path: Path
) -> None:
    """Docker's rule for another port, a DNAT with `-s 10.0.0.0/8`, one after the
    plugin's jump, one in a chain entered through `-d 10.96.0.10/32`: all ahead of (or
    beside) the container's tcp/8080, none takes every packet of it."""
    args = _container(host_ns, tmp_path, 8080, "nft")
    dnat = ["-p", "tcp", "-m", "tcp", "--dport", "8080", "-j", "DNAT",
            "--to-destination", "172.17.0.9:80"]  # fmt: skip
    _docker(host_ns, "nft", 9090)
    _nat(
        host_ns, "nft",
        ["-I", "PREROUTING", "1", "-s", "10.0.0.0/8", *dnat],
        ["-A", "PREROUTING", *dnat],
        ["-N", "CLUSTER-IP"],
        ["-I", "PREROUTING", "1", "-d", "10.96.0.10/32", "-j", "CLUSTER-IP"],
        ["-A", "CLUSTER-IP", *dnat],
    )  # fmt: skip
    assert _list(args) == [(8080, ["ok"], None)]
    checked = pmctl.run(["check", *args])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # ... and the same walk does see Docker's chain, once its rule names this port.
    _nat(host_ns, "nft", ["-A", "DOCKER", "!", "-i", "docker0", *dnat])
    assert _list(args)[0][1] == ["shadowed"]


@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_add_warns_when_a_foreign_rule_takes_the_port_first(
    host_ns: str, tmp_path: Path, mode: rp.Mode
) -> None:
    rp.run_plugin(
        "ADD", host_ns, "other", rp.plugin_conf("net", ["10.88.0.9/16"], _ports(7070)),
        mode=mode, check=True,
    )  # fmt: skip
    _docker(host_ns, mode, 8080)
    base = ["add", "--netns", host_ns, "--iptables", mode, "--family", "4", "--network",
            "mynet", "--container", "abc123", "--ip", "10.88.0.5/16"]  # fmt: skip
    warning = (
        "IPv4 tcp/8080 is taken first by a rule outside the plugin's chains"
        f" ({DOCKER_RULE.format(port=8080)}): this mapping will be shadowed"
    )
    dry = pmctl.run([*base, "-p", "8080:80", "--dry-run", "-o", "json"])
    assert dry.returncode == 0, dry.stderr
    assert warning in dry.stderr
    assert any(warning in w for w in json.loads(dry.stdout)["warnings"])
    added = pmctl.run([*base, "-p", "8080:80", "-p", "9090:90"])
    assert added.returncode == 0, added.stderr
    assert warning in added.stderr and "9090" not in added.stderr


@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_the_first_container_on_a_docker_node_is_warned_of_too(host_ns: str, mode: rp.Mode) -> None:
    """No plugin chain yet: the add itself appends PREROUTING's jump to
    CNI-HOSTPORT-DNAT, behind Docker's. The warning judges PREROUTING as the write
    left it (on iptables-nft the listing runs beside the rest of add, after the write),
    not as it was before, when no jump meant nothing to judge."""
    _docker(host_ns, mode, 8080)
    done = pmctl.run(["add", "--netns", host_ns, "--iptables", mode, "--family", "4",
                      "--network", "mynet", "--container", "first1", "--ip", "10.88.0.5/16",
                      "-p", "8080:80"])  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "IPv4 tcp/8080 is taken first by a rule outside the plugin's chains" in done.stderr


def test_a_proxy_that_returns_the_mapped_port_before_its_redirect_shadows_nothing(
    host_ns: str, tmp_path: Path
) -> None:
    """A transparent proxy ahead of the plugin: every tcp packet but those it RETURNs
    first (the container's 8080) is redirected. 8080 reaches CNI-HOSTPORT-DNAT: ok, and
    check healthy (the walk said the REDIRECT took it: shadowed, exit 1)."""
    args = _container(host_ns, tmp_path, 8080, "nft")
    _nat(
        host_ns, "nft",
        ["-N", "PROXY"],
        ["-I", "PREROUTING", "1", "-p", "tcp", "-j", "PROXY"],
        ["-A", "PROXY", "-p", "tcp", "-m", "multiport", "--dports", "22,8000:8100", "-j", "RETURN"],
        ["-A", "PROXY", "-p", "tcp", "-j", "REDIRECT", "--to-ports", "3128"],
    )  # fmt: skip
    assert _list(args) == [(8080, ["ok"], None)]
    checked = pmctl.run(["check", *args])
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _on_host_ip_behind_an_accept(host_ns: str, tmp_path, host_ip: str, chain: str) -> list:
    """POD (Debian's plugin) mapping tcp/9000 on `host_ip`, behind a firewall's
    `-I CHAIN 1 -p tcp -m multiport --dports 9000,9001 -j ACCEPT`; the options that
    read this node."""
    ports = [{"hostPort": 9000, "containerPort": 80, "protocol": "tcp", "hostIP": host_ip}]
    conf = rp.plugin_conf(NETWORK, IPS, ports)
    rp.run_plugin("ADD", host_ns, POD, conf, check=True)
    rp.write_cni_cache(tmp_path, NETWORK, POD, "eth0", conf, ports, IPS)
    _nat(host_ns, "nft", ["-I", chain, "1", "-p", "tcp", "-m", "multiport", "--dports",
                          "9000,9001", "-j", "ACCEPT"])  # fmt: skip
    return ["--netns", host_ns, "--cni-cache-dir", str(tmp_path), "--family", "4"]


@pytest.mark.parametrize("host_ip", ["127.0.0.1", "10.0.0.1"])
def test_a_loopback_host_ip_is_not_shadowed_by_prerouting(host_ns, tmp_path, host_ip):
    """A mapping bound to 127.0.0.1 gets no external traffic: only the node's own
    connections reach it, through OUTPUT, never PREROUTING. A firewall's
    `-A PREROUTING -p tcp -m multiport --dports 9000,9001 -j ACCEPT` ahead of the plugin's jump takes
    nothing from it: list says ok, check is healthy, add warns of nothing (before:
    `shadowed`, exit 1, and a warning). The same rule still shadows the port on any
    other host address (10.0.0.1 here)."""
    opts = _on_host_ip_behind_an_accept(host_ns, tmp_path, host_ip, "PREROUTING")
    loopback = host_ip == "127.0.0.1"

    (row,) = json.loads(pmctl.run(["list", *opts, "-o", "json"]).stdout)["mappings"]
    assert row["host_ip"] == host_ip
    assert row["status"] == (["ok"] if loopback else ["shadowed"])
    done = pmctl.run(["check", *opts])
    assert done.returncode == (0 if loopback else 1), done.stdout + done.stderr
    add = ["add", *opts, "--network", "other", "--container", "c2", "--ip", "10.244.1.3/24",
           "-p", f"{host_ip}:9001:80"]  # fmt: skip
    done = pmctl.run(add)
    assert done.returncode == 0, done.stderr
    assert ("IPv4 tcp/9001" in done.stderr) is not loopback, done.stderr


@pytest.mark.parametrize("host_ip", ["127.0.0.1", "10.0.0.1"])
def test_a_loopback_host_ip_is_shadowed_by_an_output_rule(host_ns, tmp_path, host_ip):
    """The other side: a rule ahead of OUTPUT's jump to CNI-HOSTPORT-DNAT
    (`-A OUTPUT -p tcp -m multiport --dports 9000,9001 -j ACCEPT`) takes every
    connection a mapping on 127.0.0.1 gets: list says `shadowed`, add warns, check
    names the rule, exit 1 (before: ok, no warning, healthy). A mapping on another
    host IP still serves the network: not shadowed."""
    opts = _on_host_ip_behind_an_accept(host_ns, tmp_path, host_ip, "OUTPUT")
    loopback = host_ip == "127.0.0.1"

    (row,) = json.loads(pmctl.run(["list", *opts, "-o", "json"]).stdout)["mappings"]
    assert row["status"] == (["shadowed"] if loopback else ["ok"])
    done = pmctl.run(["check", *opts, "-o", "json"])
    assert done.returncode == (1 if loopback else 0), done.stdout + done.stderr
    if loopback:
        (problem,) = json.loads(done.stdout)["problems"]
        assert problem["kind"] == "shadowed"
        assert "-A OUTPUT -p tcp -m multiport --dports 9000,9001 -j ACCEPT" in problem["detail"]
        assert "OUTPUT" in problem["why"]
    add = ["add", *opts, "--network", "other", "--container", "c2", "--ip", "10.244.1.3/24",
           "-p", f"{host_ip}:9001:80"]  # fmt: skip
    done = pmctl.run(add)
    assert done.returncode == 0, done.stderr
    assert ("IPv4 tcp/9001 is taken first" in done.stderr) is loopback, done.stderr


DOCKER_ON_ONE_IP = (
    "-A DOCKER -d 192.168.1.5/32 ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT"
    " --to-destination 172.17.0.2:80"
)


@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_a_docker_publish_on_one_host_ip_shadows_that_address_alone(
    host_ns: str, tmp_path: Path, mode: rp.Mode
) -> None:
    """Docker's `-p 192.168.1.5:8080:80` (`-A DOCKER -d 192.168.1.5/32 ...`) ahead of
    the plugin's mappings of 8080 on 192.168.1.5 and on 192.168.1.6: the first gets no
    connection (before: `ok`; `-d` was never judged), the second all of its own. list,
    check and each of add's paths say so."""
    ports = [{"HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ip}
             for ip in ("192.168.1.5", "192.168.1.6")]  # fmt: skip
    conf = rp.plugin_conf(NETWORK, IPS, ports)
    rp.run_plugin("ADD", host_ns, POD, conf, mode=mode, check=True)
    rp.write_cni_cache(tmp_path, NETWORK, POD, "eth0", conf, ports, IPS)
    args = ["--netns", host_ns, "--cni-cache-dir", str(tmp_path), "--family", "4",
            "--iptables", mode]  # fmt: skip
    _docker(host_ns, mode, 9999)
    _nat(host_ns, mode, ["-A", "DOCKER", "-d", "192.168.1.5/32", "!", "-i", "docker0", "-p",
                         "tcp", "-m", "tcp", "--dport", "8080", "-j", "DNAT",
                         "--to-destination", "172.17.0.2:80"])  # fmt: skip
    assert DOCKER_ON_ONE_IP in rp.save(host_ns, 4, mode)
    rows = json.loads(pmctl.ok(["list", *args, "-o", "json"]))["mappings"]
    assert sorted((r["host_ip"], r["status"], r.get("shadowed_by")) for r in rows) == [
        ("192.168.1.5", ["shadowed"], DOCKER_ON_ONE_IP),
        ("192.168.1.6", ["ok"], None),
    ]
    checked = pmctl.run(["check", *args, "-o", "json"])
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert [(p["kind"], p["detail"]) for p in json.loads(checked.stdout)["problems"]] == [
        ("shadowed", f"tcp/8080 taken first by a rule outside the plugin's chains: {DOCKER_ON_ONE_IP}")
    ]  # fmt: skip
    base = ["add", "--netns", host_ns, "--iptables", mode, "--family", "4", "--network",
            "mynet", "--container", "abc123", "--ip", "10.88.0.5/16"]  # fmt: skip
    warning = (
        f"IPv4 tcp/8080 is taken first by a rule outside the plugin's chains ({DOCKER_ON_ONE_IP})"
    )
    for extra in (["--dry-run"], []):
        elsewhere = pmctl.run([*base, "-p", "192.168.1.7:8080:80", *extra])
        assert elsewhere.returncode == 0 and "outside" not in elsewhere.stderr, elsewhere.stderr
    there = pmctl.run([*base[:-4], "--container", "abc124", "--ip", "10.88.0.6/16", "-p",
                       "192.168.1.5:8080:80"])  # fmt: skip
    assert there.returncode == 0 and warning in there.stderr, there.stderr


@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_a_jump_to_the_plugin_for_other_ports_does_not_hide_a_rule_after_it(
    host_ns: str, tmp_path: Path, mode: rp.Mode
) -> None:
    """An operator's workaround on a Docker node: `iptables -t nat -I PREROUTING 1 -p
    tcp --dport 9443 -j CNI-HOSTPORT-DNAT`, so that one hostPort beats Docker's rule.
    Every other port's packets go on past it to Docker's DNAT of tcp/8080, which takes
    the container's port first: shadowed. The walk stopped at the first jump to
    CNI-HOSTPORT-DNAT whatever it matched, and called the mapping ok (list, check
    healthy, exit 0). The ports that jump does send to the plugin are the plugin's."""
    args = _container(host_ns, tmp_path, 8080, mode)
    _docker(host_ns, mode, 8080)
    for ports in ("9443", "9443,9444"):
        _nat(host_ns, mode, ["-I", "PREROUTING", "1", "-p", "tcp", "-m", "multiport",
                             "--dports", ports, "-j", "CNI-HOSTPORT-DNAT"])  # fmt: skip
    _assert_shadowed(args, 8080, DOCKER_RULE.format(port=8080))
    # The same workaround for this very port: the container gets its traffic.
    _nat(host_ns, mode, ["-I", "PREROUTING", "1", "-p", "tcp", "-m", "tcp", "--dport",
                         "8080", "-j", "CNI-HOSTPORT-DNAT"])  # fmt: skip
    assert _list(args) == [(8080, ["ok"], None)]
    checked = pmctl.run(["check", *args])
    assert checked.returncode == 0, checked.stdout + checked.stderr
