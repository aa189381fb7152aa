"""Duplicated entry rules, as the plugin's own racing ADDs leave them after a flush,
against real iptables (nf_tables and legacy) and Debian's plugin: `check` reports
them, `check --repair` deletes the extra copies and nothing else, and the plugin's
CHECK passes on what is left."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pmctl
import realplugin as rp
import upstream
from realplugin import require

NETWORK = "dnet"
CONTAINER = "d00b1e0001"
IPS = ["10.88.0.7/16"]
PORTS = [rp.port_mapping(8080, 80), rp.port_mapping(5353, 53, "udp")]
JUMP = ["PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"]
FOREIGN = ["PREROUTING", "-p", "tcp", "-m", "tcp", "--dport", "9999", "-j", "ACCEPT"]


def _args(ns: str, mode: rp.Mode, cache: Path) -> list[str]:
    return ["--netns", ns, "--iptables", mode, "--cni-cache-dir", str(cache), "--family", "4"]


def _problems(done) -> list[tuple[str, str]]:
    return sorted((p["kind"], p["chain"]) for p in json.loads(done.stdout)["problems"])


def test_repair_deletes_the_extra_copies_of_entry_rules_and_keeps_one(
    host_ns: str, iptables_mode: rp.Mode, tmp_path: Path
) -> None:
    require(rp.plugin_available())
    conf = rp.plugin_conf(NETWORK, IPS, PORTS)
    rp.run_plugin("ADD", host_ns, CONTAINER, conf, mode=iptables_mode, check=True)
    rp.write_cni_cache(tmp_path, NETWORK, CONTAINER, "eth0", conf, PORTS, IPS)
    rp.iptables(
        host_ns, ["-t", "nat", "-A", *FOREIGN], mode=iptables_mode
    )  # a foreign rule after it
    healthy = rp.save(host_ns, 4, iptables_mode)
    # Two writers that both found the jump missing, and a container's entry rule twice.
    entry_line = next(
        line
        for line in healthy.splitlines()
        if line.startswith("-A CNI-HOSTPORT-DNAT") and "-p udp" in line
    )
    entry = shlex.split(entry_line)[1:]
    rp.iptables(host_ns, ["-t", "nat", "-I", "PREROUTING", "2", *JUMP[1:]], mode=iptables_mode)
    rp.iptables(host_ns, ["-t", "nat", "-A", *JUMP], mode=iptables_mode)
    rp.iptables(host_ns, ["-t", "nat", "-A", *entry], mode=iptables_mode)
    args = _args(host_ns, iptables_mode, tmp_path)

    found = pmctl.run(["check", *args, "-o", "json"])
    assert found.returncode == 1, found.stderr
    assert _problems(found) == [
        ("duplicate-entry", "CNI-HOSTPORT-DNAT"),
        ("duplicate-entry", "PREROUTING"),
    ]
    assert all(
        p["fix"].startswith("portmapctl check --repair")
        for p in json.loads(found.stdout)["problems"]
    )

    repaired = pmctl.run(["check", "--repair", *args, "-o", "json"])
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert json.loads(repaired.stdout)["problems"] == []
    after = rp.save(host_ns, 4, iptables_mode)
    # One copy of each, where the first stood: the table as the plugin left it, byte for
    # byte (before, iptables' -D by text took the first copy and PREROUTING's jump went
    # behind the foreign rule).
    assert rp.strip_save_comments(after) == rp.strip_save_comments(healthy)
    for done in rp.run_check(host_ns, CONTAINER, conf, mode=iptables_mode):
        assert done.returncode == 0, done.stdout + done.stderr
    again = pmctl.run(["check", "--repair", *args])
    assert again.returncode == 0 and rp.strip_save_comments(
        rp.save(host_ns, 4, iptables_mode)
    ) == rp.strip_save_comments(after)


def test_a_mapping_check_repair_leaves_the_nodes_duplicates(
    host_ns: str, iptables_mode: rp.Mode, tmp_path: Path
) -> None:
    """`check -p ... --repair` is about one mapping: it does not touch the node's
    duplicated jump (the node check reports and repairs it)."""
    require(rp.plugin_available())
    conf = rp.plugin_conf(NETWORK, IPS, PORTS)
    rp.run_plugin("ADD", host_ns, CONTAINER, conf, mode=iptables_mode, check=True)
    rp.iptables(host_ns, ["-t", "nat", "-A", *JUMP], mode=iptables_mode)
    before = rp.save(host_ns, 4, iptables_mode)
    one = [*_args(host_ns, iptables_mode, tmp_path), "--cni-config", "-"]
    done = pmctl.run(
        ["check", "--repair", *one, "--container", CONTAINER, "--no-flush-udp"],
        stdin=json.dumps(conf),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert rp.strip_save_comments(rp.save(host_ns, 4, iptables_mode)) == rp.strip_save_comments(
        before
    )


def test_nft_entry_jumps_twice_are_reported_and_repaired_to_one(
    host_ns: str, tmp_path: Path
) -> None:
    """v1.9.1's nftables backend: its ADD flushes prerouting, output and hostports_all
    before it writes them, so only a hand (or a repair racing it, fixed at stop 43)
    doubles a jump. check reports each, --repair deletes the later copies by handle,
    and v1.9.1's CHECK passes; with a cached container and with none."""
    require(upstream.available())
    ips = ["10.88.0.7/16", "fd00::7/64"]
    conf = upstream.nft_conf(NETWORK, ips, PORTS)
    upstream.run("v1.9.1", "ADD", host_ns, CONTAINER, conf, check=True)
    rp.write_cni_cache(tmp_path, NETWORK, CONTAINER, "eth0", conf, PORTS, ips)
    healthy = upstream.ruleset_text(host_ns)
    upstream.nft(host_ns, "add", "rule", "ip", "cni_hostport", "prerouting",
                 "fib", "daddr", "type", "local", "jump", "hostports_all")  # fmt: skip
    upstream.nft(host_ns, "add", "rule", "ip6", "cni_hostport", "hostports_all",
                 "jump", "hostports")  # fmt: skip
    args = ["--netns", host_ns, "--cni-cache-dir", str(tmp_path), "--no-flush-udp"]
    found = pmctl.run(["check", *args[:-1], "-o", "json"])
    assert found.returncode == 1, found.stderr
    problems = json.loads(found.stdout)["problems"]
    assert sorted((p["kind"], p["family"], p["chain"]) for p in problems) == [
        ("duplicate-entry", 4, "prerouting"),
        ("duplicate-entry", 6, "hostports_all"),
    ]
    # JSON `fix` is the command; the way by hand, by handle, is in `why`.
    assert all(p["fix"].startswith("portmapctl check --repair") for p in problems)
    assert all("`nft delete rule" in p["why"] for p in problems)
    repaired = pmctl.run(["check", "--repair", *args])
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert upstream.ruleset_text(host_ns) == healthy
    assert upstream.run("v1.9.1", "CHECK", host_ns, CONTAINER, conf).returncode == 0

    # No nftables container cached (an empty cache directory): repaired the same.
    empty = tmp_path / "empty"
    (empty / "results").mkdir(parents=True)
    upstream.nft(host_ns, "add", "rule", "ip", "cni_hostport", "output",
                 "fib", "daddr", "type", "local", "jump", "hostports_all")  # fmt: skip
    bare = ["--netns", host_ns, "--cni-cache-dir", str(empty), "--no-flush-udp"]
    assert pmctl.run(["check", *bare[:-1]]).returncode == 1
    again = pmctl.run(["check", "--repair", *bare, "-o", "json"])
    # (Its container is stale to an empty cache: exit 1 for that, and only that.)
    assert again.returncode == 1, again.stdout + again.stderr
    document = json.loads(again.stdout)
    assert {p["kind"] for p in document["problems"]} == {"stale"}
    assert [(f["kind"], f["chain"]) for f in document["fixed"]] == [("duplicate-entry", "output")]
    assert upstream.ruleset_text(host_ns) == healthy


def test_the_first_copy_keeps_its_place_so_a_port_stays_with_its_container(
    host_ns: str, iptables_mode: rp.Mode, tmp_path: Path
) -> None:
    """s1 then s2 on host port 7100: s1 has the port, s2 is shadowed. s1's entry rule
    appended again, after s2's. The repair keeps s1's first copy where it stood:
    deleting the first copy by text (the repair's first way) handed the port to s2
    (review helper-141)."""
    require(rp.plugin_available())
    ports = [rp.port_mapping(7100, 71)]
    for n, cid in enumerate(("5100000001", "5200000002")):
        ips = [f"10.88.0.{20 + n}/16"]
        conf = rp.plugin_conf(NETWORK, ips, ports)
        rp.run_plugin("ADD", host_ns, cid, conf, mode=iptables_mode, check=True)
        rp.write_cni_cache(tmp_path, NETWORK, cid, "eth0", conf, ports, ips)
    healthy = rp.save(host_ns, 4, iptables_mode)
    first = next(x for x in healthy.splitlines() if x.startswith("-A CNI-HOSTPORT-DNAT"))
    rp.iptables(host_ns, ["-t", "nat", *shlex.split(first)], mode=iptables_mode)
    args = _args(host_ns, iptables_mode, tmp_path)
    done = pmctl.run(["check", "--repair", *args, "--no-flush-udp", "-o", "json"])
    assert done.returncode == 1, done.stderr  # s2 stays shadowed, as before
    problems = json.loads(done.stdout)["problems"]
    assert [(p["kind"], p["container_id"]) for p in problems] == [("shadowed", "5200000002")]
    after = rp.save(host_ns, 4, iptables_mode)
    assert rp.strip_save_comments(after) == rp.strip_save_comments(healthy)
