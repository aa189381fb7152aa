"""A Kubernetes node as containerd leaves it: the real plugin run by libcni through
containerd's go-cni, whose cache entries carry what go-cni marshals."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pmctl
import pytest
import realplugin as rp
import upstream

NETWORK = "k8s-pod-network"
POD = "a1" * 32  # a sandbox ID as containerd makes them: 64 hex digits
IPS = ["10.244.1.2/24", "fd00:10:244:1::2/64"]
# go-cni's PortMapping has no JSON tags: libcni injects (and caches) the Go field names,
# and the plugin, reading with encoding/json, matches them case-insensitively.
CONTAINERD_PORTS = [
    {"HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""},
    {"HostPort": 5353, "ContainerPort": 53, "Protocol": "udp", "HostIP": ""},
]


def _node_args(host_ns: str, cache: Path) -> list[str]:
    return ["--netns", host_ns, "--cni-cache-dir", str(cache)]


def test_containerd_port_mappings_are_read_and_checked(host_ns: str, tmp_path: Path) -> None:
    conf = rp.plugin_conf(NETWORK, IPS, CONTAINERD_PORTS)
    added = rp.run_plugin("ADD", host_ns, POD, conf)
    assert added.returncode == 0, added.stdout + added.stderr
    assert "--dport 8080" in rp.save(host_ns, 4) and "--dport 5353" in rp.save(host_ns, 6)
    rp.write_cni_cache(tmp_path, NETWORK, POD, "eth0", conf, CONTAINERD_PORTS, IPS)
    args = _node_args(host_ns, tmp_path)

    healthy = pmctl.run(["check", *args])
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert healthy.stderr == ""  # 0.1: "skipped a CNI cache entry that cannot be read"
    assert "all 2 chains" in healthy.stdout

    # The chains go (a script flushed them); the pod is still cached: check must see it.
    deleted = rp.run_plugin("DEL", host_ns, POD, conf)
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    missing = pmctl.run(["check", *args])
    assert missing.returncode == 1, missing.stdout + missing.stderr
    assert POD[:12] in missing.stdout
    repaired = pmctl.run(["check", "--repair", *args])
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    # What the repair wrote is what the plugin's CHECK expects, in both families.
    checked = rp.run_check(host_ns, POD, conf)
    assert [proc.returncode for proc in checked] == [0, 0], [proc.stderr for proc in checked]


def _conntrack(host_ns: str, *args: str) -> None:
    subprocess.run(
        [rp._ip(), "netns", "exec", host_ns, "conntrack", "-I", "-p", "udp", "-t", "100", *args],
        check=True,
        capture_output=True,
    )


def test_conditions_v4_shadow_nothing_and_keep_the_hosts_flows(
    host_ns: str, tmp_path: Path
) -> None:
    """Two networks map udp/5353; the first has `conditionsV4: ["!", "-s",
    "192.168.0.0/16"]`, so packets from 192.168.0.0/16 go on to the second container:
    neither is shadowed. With the guarded one alone, a flow from 192.168.5.7 that was
    never DNATed is the host's own, not stale (0.1 deleted it, and called the second
    container shadowed)."""
    ports = [{"HostPort": 5353, "ContainerPort": 53, "Protocol": "udp", "HostIP": ""}]
    guarded = rp.plugin_conf(
        NETWORK, ["10.244.1.2/24"], ports, conditions_v4=["!", "-s", "192.168.0.0/16"]
    )
    rp.run_plugin("ADD", host_ns, POD, guarded, check=True)
    rp.write_cni_cache(tmp_path, NETWORK, POD, "eth0", guarded, ports, ["10.244.1.2/24"])
    rp.run_plugin(
        "ADD", host_ns, "lan", rp.plugin_conf("other-net", ["10.245.1.2/24"], ports), check=True
    )
    args = _node_args(host_ns, tmp_path) + ["--family", "4", "-o", "json"]

    rows = json.loads(pmctl.ok(["list", *args]))["mappings"]
    assert [(r["container_id"], r["status"], r.get("conditions")) for r in rows] == [
        (POD, ["ok"], ["!", "-s", "192.168.0.0/16"]),
        ("lan", ["stale"], None),  # not in the cache: stale, never shadowed
    ]

    rp.run_plugin(
        "DEL", host_ns, "lan", rp.plugin_conf("other-net", ["10.245.1.2/24"], ports), check=True
    )
    subprocess.run(
        [rp._ip(), "-n", host_ns, "addr", "add", "192.0.2.1/24", "dev", "lo"], check=True
    )
    _conntrack(
        host_ns, "-s", "192.168.5.7", "-d", "192.0.2.1", "--sport", "1111", "--dport", "5353"
    )
    _conntrack(host_ns, "-s", "10.1.5.7", "-d", "192.0.2.1", "--sport", "1112", "--dport", "5353")
    _conntrack(
        host_ns, "-s", "10.1.5.8", "-d", "192.0.2.1", "--sport", "1113", "--dport", "5353",
        "-r", "10.244.1.9", "-q", "10.1.5.8", "--reply-port-src", "53", "--reply-port-dst", "1113",
    )  # fmt: skip
    flushed = json.loads(pmctl.ok(["flush-udp", "--stale-only", "--dry-run", *args]))
    # Only the flow DNATed to an address that is not the container's misroutes. Whether
    # the conditions match a flow is not judged: a flow never DNATed may be the host's.
    assert [(d["src"], d["reason"]) for d in flushed["deleted"]] == [
        ("10.1.5.8", "old-destination")
    ]


def test_nft_conditions_v4_keep_the_hosts_flows(host_ns: str, tmp_path: Path) -> None:
    """The nftables backend puts conditionsV4 on prerouting's jump to the host-port
    rules: every mapping takes only the packets they match. A flow they leave out was
    never DNATed and is the host's (0.1 deleted it as stale); the rows say them."""
    up_ok, reason = upstream.available()
    if not up_ok:
        pytest.skip(reason)
    ports = [{"hostPort": 5353, "containerPort": 53, "protocol": "udp"}]
    conf = upstream.nft_conf(
        NETWORK, ["10.244.1.2/24"], ports, conditions_v4=["ip saddr != 192.168.0.0/16"]
    )
    upstream.run("v1.9.1", "ADD", host_ns, POD, conf, check=True)
    rp.write_cni_cache(tmp_path, NETWORK, POD, "eth0", conf, ports, ["10.244.1.2/24"])
    args = _node_args(host_ns, tmp_path) + ["--family", "4", "-o", "json"]
    [row] = json.loads(pmctl.ok(["list", *args]))["mappings"]
    assert (row["status"], row["conditions"]) == (["ok"], ["ip saddr != 192.168.0.0/16"])

    subprocess.run(
        [rp._ip(), "-n", host_ns, "addr", "add", "192.0.2.1/24", "dev", "lo"], check=True
    )
    _conntrack(
        host_ns, "-s", "192.168.5.7", "-d", "192.0.2.1", "--sport", "1111", "--dport", "5353"
    )
    flushed = json.loads(pmctl.ok(["flush-udp", "--stale-only", "--dry-run", *args]))
    assert flushed["deleted"] == []


def test_netns_liveness_in_a_mount_namespace_cut_off_from_the_hosts_mounts(
    host_ns: str, tmp_path: Path
) -> None:
    """A DaemonSet mounting the host's /run/netns without HostToContainer propagation
    sees the namespace of every pod made after it started as a plain empty file (the
    runtime's mount point, its mount not propagated). That pod is live: never a zombie,
    and gc --netns-liveness keeps it (0.1 removed its chain); a pod whose namespace is
    gone (file removed, as runtimes do) is still one, where a pod made before the
    DaemonSet shows its namespaces are seen."""
    early = rp.create_netns("pmt-pod")  # made before: its namespace is seen there
    cut_off = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sleep", "120"])
    later = ""
    try:
        # Until sleep runs, the process may not have its own mount namespace yet.
        deadline = time.monotonic() + 10
        while Path(f"/proc/{cut_off.pid}/comm").read_text().strip() != "sleep":
            assert time.monotonic() < deadline, "unshare did not start"
            time.sleep(0.01)
        later = rp.create_netns("pmt-pod")  # made after the mount namespace was cut off
        gone = rp.create_netns("pmt-pod")
        try:
            for cid, netns, ip in (
                (POD, later, "10.244.1.2/24"),
                ("zombie", gone, "10.244.1.3/24"),
                ("early", early, "10.244.1.4/24"),
            ):
                ports = [
                    {
                        "HostPort": {POD: 8080, "zombie": 8081}.get(cid, 8082),
                        "ContainerPort": 80,
                        "Protocol": "tcp",
                    }
                ]
                conf = rp.plugin_conf(NETWORK, [ip], ports)
                rp.run_plugin(
                    "ADD", host_ns, cid, conf, container_ns=f"/run/netns/{netns}", check=True
                )
                rp.write_cni_cache(
                    tmp_path, NETWORK, cid, "eth0", conf, ports, [ip], netns=f"/run/netns/{netns}"
                )
        finally:
            rp.delete_netns(gone)
        argv = ["nsenter", "-m", "-t", str(cut_off.pid), sys.executable, "-m", "portmapctl"]
        common = [*_node_args(host_ns, tmp_path), "--family", "4", "-o", "json"]
        env = dict(os.environ, NO_COLOR="1")
        env.setdefault("PYTHONPATH", str(Path(__file__).parents[2]))  # this checkout
        run = functools.partial(subprocess.run, capture_output=True, text=True, env=env)

        listed = run([*argv, "list", *common])
        assert listed.returncode == 0, listed.stderr
        statuses = {m["container_id"]: m["status"] for m in json.loads(listed.stdout)["mappings"]}
        assert statuses == {POD: ["ok"], "zombie": ["zombie"], "early": ["ok"]}
        planned = run([*argv, "gc", "--dry-run", "--netns-liveness", "--min-age", "0", *common])
        assert planned.returncode == 0, planned.stderr
        removed = [c["container_id"] for c in json.loads(planned.stdout)["removed"]]
        assert removed == ["zombie"]
    finally:
        cut_off.kill()
        cut_off.wait()
        if later:
            rp.delete_netns(later)
        rp.delete_netns(early)


def test_backend_auto_without_iptables_follows_the_plugin_to_nftables(
    host_ns: str, tmp_path: Path
) -> None:
    """A node with nft and no iptables command (kube-proxy in nftables mode on a system
    without iptables): the plugin, given no `backend` key, takes nftables there. So does
    --backend auto (0.1 stopped every command: "no iptables command found")."""
    up_ok, reason = upstream.available()
    if not up_ok:
        pytest.skip(reason)
    nft_only = tmp_path / "bin"
    nft_only.mkdir()
    (nft_only / "nft").symlink_to(shutil.which("nft", path=rp.SYSTEM_PATH) or "/usr/sbin/nft")
    ports = [{"HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}]
    conf = upstream.nft_conf(NETWORK, ["10.244.1.2/24"], ports, backend=None)
    env = {
        "PATH": str(nft_only),
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": POD,
        "CNI_NETNS": rp.container_netns(),
        "CNI_IFNAME": "eth0",
        "CNI_PATH": rp.CNI_PATH,
    }
    added = subprocess.run(
        [rp._ip(), "netns", "exec", host_ns, str(upstream.binary("v1.9.1"))],
        input=json.dumps(conf),
        env=env,
        capture_output=True,
        text=True,
    )
    assert added.returncode == 0, added.stdout + added.stderr
    assert "cni_hostport" in upstream.ruleset_text(host_ns)  # the plugin chose nftables
    rp.write_cni_cache(tmp_path / "cni", NETWORK, POD, "eth0", conf, ports, ["10.244.1.2/24"])
    args = ["--netns", host_ns, "--cni-cache-dir", str(tmp_path / "cni"), "-o", "json"]
    # No iptables on PATH, nor in the sbin directories portmapctl also looks in.
    iptables = [p for p in ("/usr/sbin/iptables", "/usr/sbin/ip6tables") if os.path.exists(p)]
    without_iptables = {"env": {"PATH": str(nft_only)}, "hide": iptables}

    [row] = json.loads(pmctl.ok(["list", *args], **without_iptables))["mappings"]
    assert (row["backend"], row["container_id"], row["status"]) == ("nftables", POD, ["ok"])
    assert json.loads(pmctl.ok(["check", *args], **without_iptables))["healthy"] is True
    planned = json.loads(pmctl.ok(["gc", "--dry-run", *args], **without_iptables))
    assert (planned["removed"], planned["kept"]) == ([], 1)

    # With an iptables nat table there (portmapctl in an image without iptables, on a
    # node whose plugin uses iptables), nothing is guessed: exit 3, as before.
    for mode in ("nft", "legacy"):
        node = rp.create_netns("pmt-node")  # a fresh one each: tables outlive their chains
        try:
            rp.iptables(node, ["-t", "nat", "-N", "KUBE-MARK-MASQ"], mode=mode)
            stopped = pmctl.run(["list", "--netns", node, *args[2:]], **without_iptables)
            pmctl.assert_error(stopped, 3, "no iptables command found")
        finally:
            rp.delete_netns(node)


def test_nft_port_kept_by_a_zombie_says_how_to_free_it(host_ns: str, tmp_path: Path) -> None:
    """Pod sandbox restart on the nftables backend, the old sandbox forgotten by the
    runtime (its namespace gone, its cache entry left): the new sandbox's rule comes
    second, and check's fix for it is gc --netns-liveness (0.1: re-create a container
    with another host port)."""
    up_ok, reason = upstream.available()
    if not up_ok:
        pytest.skip(reason)
    ports = [{"HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}]
    old_ns = rp.create_netns("pmt-pod")
    for cid, ip, netns in (("old", "10.244.1.2/24", old_ns), (POD, "10.244.1.3/24", None)):
        conf = upstream.nft_conf(NETWORK, [ip], ports)
        upstream.run("v1.9.1", "ADD", host_ns, cid, conf, check=True)
        rp.write_cni_cache(
            tmp_path, NETWORK, cid, "eth0", conf, ports, [ip],
            netns=f"/run/netns/{netns}" if netns else None,
        )  # fmt: skip
    rp.delete_netns(old_ns)  # the runtime forgot the old sandbox
    checked = pmctl.run(["check", *_node_args(host_ns, tmp_path), "-o", "json"])
    assert checked.returncode == 1, checked.stderr
    problems = json.loads(checked.stdout)["problems"]
    [shadowed] = [p for p in problems if p["kind"] == "shadowed"]
    assert shadowed["container_id"] == POD
    assert shadowed["fix"].endswith("--netns-liveness"), shadowed
    assert "zombie" in shadowed["why"]


def _no_ports_stdins() -> dict[str, dict]:
    """What libcni hands portmap for pods it forwards nothing for: containerd and CRI-O
    pass no runtimeConfig for a pod without a hostPort (every such pod runs the
    plugin), and an L2-only network gives no address."""
    plain = rp.plugin_conf(NETWORK, IPS, [])
    del plain["runtimeConfig"]
    plain["capabilities"] = {"portMappings": True}
    empty = {**rp.plugin_conf(NETWORK, IPS, []), "runtimeConfig": {"portMappings": []}}
    no_address = rp.plugin_conf(NETWORK, [], CONTAINERD_PORTS)
    return {
        "no runtimeConfig": plain,
        "empty portMappings": empty,
        "no runtimeConfig, nftables": {**plain, "backend": "nftables"},
        "no address": no_address,
    }


def _node_rules(host_ns: str) -> tuple[str, str, str]:
    return (
        rp.strip_save_comments(rp.save(host_ns, 4)),
        rp.strip_save_comments(rp.save(host_ns, 6)),
        upstream.ruleset_text(host_ns),
    )


@pytest.mark.parametrize("case", list(_no_ports_stdins()))
def test_cni_config_the_plugin_forwards_nothing_for_writes_nothing(
    host_ns: str, tmp_path: Path, case: str
) -> None:
    """0.2: add --cni-config with a pod's stdin that maps no ports wrote the top-level
    chains, an empty CNI-DN- chain in both families (nftables: the table and the pod's
    masquerade rules) and said 'added'; check --cni-config called the node broken
    ('chain missing', exit 1) and --repair wrote the same. The plugin's ADD and CHECK
    return at once for it, so add writes nothing and check is healthy."""
    rp.require(upstream.available())
    conf = _no_ports_stdins()[case]
    before = _node_rules(host_ns)
    # The real plugins: Debian's and v1.9.1 succeed and leave the node as it was.
    assert rp.run_plugin("ADD", host_ns, POD, conf).returncode == 0
    upstream.run("v1.9.1", "ADD", host_ns, POD, conf, check=True)
    upstream.run("v1.9.1", "CHECK", host_ns, POD, conf, check=True)
    assert _node_rules(host_ns) == before

    path = tmp_path / "stdin.json"
    path.write_text(json.dumps(conf))
    node = ["--netns", host_ns, "--container", POD, "--cni-config", str(path)]
    added = pmctl.run(["add", *node])
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("nothing to add: ")
    assert pmctl.without_cache_note(added.stderr) == "", added.stderr
    checked = pmctl.run(["check", "--repair", *node])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith("healthy: ")
    assert _node_rules(host_ns) == before
    as_json = json.loads(pmctl.ok(["add", *node, "-o", "json"]))
    assert (as_json["changed"], as_json["chains"], as_json["transaction"]) == (False, [], {})


@pytest.mark.parametrize("case", ["no address", "no runtimeConfig"])
def test_a_config_the_plugin_refuses_is_refused_though_it_forwards_nothing(
    host_ns: str, tmp_path: Path, case: str
) -> None:
    """The plugin's parseConfig reads the whole config before ADD and CHECK look at the
    ports or the address: a mark bit of 40 fails it ('MasqMarkBit must be between 0 and
    31'), with or without either. add and check refuse it (exit 2; before: 'nothing to
    add', exit 0, for a config without an address)."""
    conf = {**_no_ports_stdins()[case], "markMasqBit": 40}
    refused = rp.run_plugin("ADD", host_ns, POD, conf)
    assert refused.returncode != 0 and "MasqMarkBit" in refused.stdout, refused.stdout
    path = tmp_path / "stdin.json"
    path.write_text(json.dumps(conf))
    node = ["--netns", host_ns, "--container", POD, "--cni-config", str(path)]
    before = _node_rules(host_ns)
    for command in (["add"], ["check", "--repair"]):
        pmctl.assert_error(pmctl.run([*command, *node]), 2, "mark bit 40")
    assert _node_rules(host_ns) == before


def test_a_zombie_attachment_of_a_live_container_is_not_sent_to_gc(
    host_ns: str, tmp_path: Path
) -> None:
    """A container on two networks whose DEL on one failed (podman: the network's config
    was gone), then restarted on the other alone: that network's cache entry names the
    old, gone namespace (a zombie), the other's the new one. gc --netns-liveness keeps
    the zombie's chain (liveness is by container ID, SPEC §3), so check's fix for it must
    not be that command (0.2: 'gc --netns-liveness', which removed nothing, and check
    stayed at exit 1 with the same fix forever)."""
    old_ns = rp.create_netns("pmt-pod")
    ports = [{"hostPort": 8600, "containerPort": 80, "protocol": "tcp"}]
    for network, ip, netns in (("neta", "10.88.0.5/16", None), ("netb", "10.89.0.5/16", old_ns)):
        conf = rp.plugin_conf(network, [ip], ports)
        assert rp.run_plugin("ADD", host_ns, POD, conf).returncode == 0
        rp.write_cni_cache(
            tmp_path, network, POD, "eth0", conf, ports, [ip],
            netns=f"/run/netns/{netns}" if netns else None,
        )  # fmt: skip
    rp.delete_netns(old_ns)
    args = _node_args(host_ns, tmp_path)
    before = rp.strip_save_comments(rp.save(host_ns, 4))

    gc = pmctl.run(["gc", "--yes", "--min-age", "0", "--netns-liveness", *args])
    assert gc.returncode == 0, gc.stderr
    # Kept: the container is live on neta.
    assert rp.strip_save_comments(rp.save(host_ns, 4)) == before

    checked = pmctl.run(["check", *args, "-o", "json"])
    assert checked.returncode == 1, checked.stderr
    [zombie] = [p for p in json.loads(checked.stdout)["problems"] if p["kind"] == "zombie"]
    assert zombie["network"] == "netb"
    assert zombie["fix"] is None, zombie  # no command of ours removes it
    assert "live on neta" in zombie["why"] and "DEL for netb" in zombie["why"], zombie


# kube-proxy's and Calico's nat rules as they stand on such a node (iptables mode): their
# jumps ahead of the plugin's in PREROUTING, OUTPUT and POSTROUTING.
KUBE_AND_CALICO = """*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-SVC-ABCDEFGHIJKLMNOP - [0:0]
:KUBE-SEP-AAAAAAAAAAAAAAAA - [0:0]
:cali-PREROUTING - [0:0]
:cali-POSTROUTING - [0:0]
:cali-nat-outgoing - [0:0]
-I PREROUTING 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-I PREROUTING 1 -m comment --comment "cali:6gwbT8clXdHdC1b1" -j cali-PREROUTING
-I OUTPUT 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-I POSTROUTING 1 -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-I POSTROUTING 1 -m comment --comment "cali:O3lYWMrLQYEMJtB5" -j cali-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment "ns/svc:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-ABCDEFGHIJKLMNOP
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-SVC-ABCDEFGHIJKLMNOP -m comment --comment "ns/svc:http -> 10.244.104.5:8080" -j KUBE-SEP-AAAAAAAAAAAAAAAA
-A KUBE-SEP-AAAAAAAAAAAAAAAA -s 10.244.104.5/32 -m comment --comment "ns/svc:http" -j KUBE-MARK-MASQ
-A KUBE-SEP-AAAAAAAAAAAAAAAA -p tcp -m comment --comment "ns/svc:http" -m tcp -j DNAT --to-destination 10.244.104.5:8080
-A cali-PREROUTING -m comment --comment "cali:r6XmIziWUJsdOK6Z" -j MARK --set-xmark 0x0/0x100000
-A cali-POSTROUTING -m comment --comment "cali:nYKhEzDlr11Jccal" -j cali-nat-outgoing
-A cali-nat-outgoing -s 10.244.0.0/16 ! -d 10.244.0.0/16 -m comment --comment "cali:flqWnvo8yq4ULQLa" -j MASQUERADE --random-fully
COMMIT
"""


def _not_the_plugins(save: str) -> list[str]:
    return [
        line
        for line in rp.nat_rules(save)
        if "CNI-" not in line  # (the plugin's chains, and the jumps to them)
    ]


def test_a_restarted_pods_zombie_sandbox_left_unentered_is_not_shadowed(
    host_ns: str, tmp_path: Path, iptables_mode: rp.Mode
) -> None:
    """A pod restarted into a new sandbox on the same hostPort while the old sandbox's
    DEL never ran (Calico's k8s-pod-network, "snat": true, /32 addresses): the old
    sandbox's cache entry is left and its namespace gone (a zombie). A flush of
    CNI-HOSTPORT-DNAT and check --repair bring back the new sandbox's entry rule alone
    (a zombie is never repaired): the old chain is entered by nothing. It gets no
    traffic because nothing enters it, not because the new sandbox takes its port
    first: list marked it `shadowed` too, and check reported it shadowed by the live
    new sandbox with "two containers claim one host port: re-create one of them with
    another host port" (and the node's metrics counted a shadowed mapping), where the
    live pod is healthy and gc --netns-liveness, as its zombie and orphan rows say,
    clears the node. kube-proxy's and Calico's rules stay as they were throughout."""
    mode = iptables_mode
    restored = subprocess.run(
        [rp._ip(), "netns", "exec", host_ns, rp.tool_path("iptables-restore", mode), "-w",
         "--noflush"],
        input=KUBE_AND_CALICO, capture_output=True, text=True,
    )  # fmt: skip
    assert restored.returncode == 0, restored.stderr
    foreign = _not_the_plugins(rp.save(host_ns, 4, mode))
    old, new = "0d" * 32, "ee" * 32  # the pod's old and new sandbox
    ports = [
        {"HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""},
        {"HostPort": 5353, "ContainerPort": 53, "Protocol": "udp", "HostIP": ""},
    ]
    old_ns = rp.create_netns("pmt-pod")
    try:
        for cid, ip, netns in ((old, "10.244.104.2/32", old_ns), (new, "10.244.104.3/32", None)):
            conf = rp.plugin_conf(NETWORK, [ip], ports, snat=True)
            path = f"/run/netns/{netns}" if netns else None
            rp.run_plugin("ADD", host_ns, cid, conf, mode=mode, container_ns=path, check=True)
            rp.write_cni_cache(tmp_path, NETWORK, cid, "eth0", conf, ports, [ip], netns=path)
    finally:
        rp.delete_netns(old_ns)  # the old sandbox's namespace went without its DEL
    args = [*_node_args(host_ns, tmp_path), "--iptables", mode, "--family", "4"]

    rp.iptables(host_ns, ["-t", "nat", "-F", "CNI-HOSTPORT-DNAT"], mode=mode)
    repaired = pmctl.run(["check", "--repair", *args])
    assert repaired.returncode == 1, repaired.stdout + repaired.stderr  # the zombie stays
    assert _not_the_plugins(rp.save(host_ns, 4, mode)) == foreign

    rows = json.loads(pmctl.ok(["list", *args, "-o", "json"]))["mappings"]
    assert sorted((r["container_id"], r["protocol"], r["status"]) for r in rows) == [
        (old, "tcp", ["zombie", "orphan"]),
        (old, "udp", ["zombie", "orphan"]),
        (new, "tcp", ["ok"]),
        (new, "udp", ["ok"]),
    ]
    checked = pmctl.run(["check", *args, "-o", "json"])
    assert checked.returncode == 1, checked.stderr
    problems = json.loads(checked.stdout)["problems"]
    assert sorted((p["kind"], p["container_id"]) for p in problems) == [
        ("orphan", old),
        ("zombie", old),
    ], problems
    assert all(p["fix"].endswith(" --netns-liveness") for p in problems), problems

    # A UDP flow DNATed to the old sandbox misroutes (the new one takes the port);
    # one DNATed to the new sandbox does not.
    subprocess.run(
        [rp._ip(), "-n", host_ns, "addr", "add", "192.0.2.1/24", "dev", "lo"], check=True
    )
    for sport, to in ((1111, "10.244.104.2"), (1112, "10.244.104.3")):
        _conntrack(
            host_ns, "-s", "192.0.2.9", "-d", "192.0.2.1", "--sport", str(sport),
            "--dport", "5353", "-r", to, "-q", "192.0.2.9", "--reply-port-src", "53",
            "--reply-port-dst", str(sport),
        )  # fmt: skip
    flushed = json.loads(pmctl.ok(["flush-udp", "--stale-only", "--dry-run", *args, "-o", "json"]))
    assert [(d["reply_src"], d["reason"]) for d in flushed["deleted"]] == [
        ("10.244.104.2", "old-destination")
    ]

    # As they say: the old sandbox's chain goes, the new one's stays, as the plugin's
    # CHECK of the new sandbox finds it.
    gc = json.loads(
        pmctl.ok(["gc", "--yes", "--min-age", "0", "--netns-liveness", *args, "-o", "json"])
    )
    assert [r["container_id"] for r in gc["removed"]] == [old]
    conf = rp.plugin_conf(NETWORK, ["10.244.104.3/32"], ports, snat=True)
    checked = rp.run_check(host_ns, new, conf, mode=mode)
    assert [proc.returncode for proc in checked] == [0], [proc.stdout for proc in checked]
    assert _not_the_plugins(rp.save(host_ns, 4, mode)) == foreign
