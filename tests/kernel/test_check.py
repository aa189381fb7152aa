"""`check` and `check --repair`: on real plugin output (fixtures), and against the
kernel with the real plugin in throwaway namespaces."""

from __future__ import annotations

import json
import os
import shlex

import pytest
import realplugin as rp
from flush_udp_helpers import ct_args, ct_load, ct_sports, masquerade_flows
from pmctl import assert_error, run

from portmapctl.iptables.chains import chain_name

# --- the comparison, on fixtures ------------------------------------------------------


# --- the command, on snapshots (no root needed) ------------------------------------------------


# --- against the kernel, with the real plugin ---------------------------------------------

CONTAINERS = [
    ("ctr1", ["10.88.0.11/16"], [{"hostPort": 8081, "containerPort": 80, "protocol": "tcp"}]),
    (
        "ctr2",
        ["10.88.0.12/16"],
        [
            {"hostPort": 8082, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 5353, "containerPort": 53, "protocol": "udp"},
        ],
    ),
    (
        "ctr3",
        ["10.88.0.13/16", "fd00::13/64"],
        [{"hostPort": 8083, "containerPort": 80, "protocol": "tcp"}],
    ),
]


def _plugin_node(host_ns, mode, cache_dir, containers=CONTAINERS, cached=None):
    """The real plugin ADDs each container; libcni's cache entry is written for those in
    `cached` (default: all). Returns the plugin configs by container ID."""
    confs = {}
    for container_id, ips, ports in containers:
        conf = rp.plugin_conf("mynet", ips, ports)
        rp.run_plugin("ADD", host_ns, container_id, conf, mode=mode, check=True)
        if cached is None or container_id in cached:
            rp.write_cni_cache(cache_dir, "mynet", container_id, "eth0", conf, ports, ips)
        confs[container_id] = conf
    return confs


def _check(host_ns, mode, cache_dir, *extra):
    done = run(
        [
            "check",
            "--netns",
            host_ns,
            "--iptables",
            mode,
            "--cni-cache-dir",
            str(cache_dir),
            "-o",
            "json",
            *extra,
        ]
    )
    assert done.returncode in (0, 1), done.stderr
    doc = json.loads(done.stdout)
    assert doc["healthy"] == (done.returncode == 0)
    return doc


def _state(host_ns, mode):
    return {f: rp.nat_rules(rp.save(host_ns, f, mode)) for f in (4, 6)}


def _problems(doc):
    return sorted((p["kind"], p["family"], p["chain"]) for p in doc["problems"])


def _chain(container_id):
    return chain_name("mynet", container_id)


FIREWALLD = [
    ("missing-toplevel", 4, "CNI-HOSTPORT-DNAT"),
    ("missing-toplevel", 4, "CNI-HOSTPORT-MASQ"),
    ("missing-toplevel", 4, "CNI-HOSTPORT-SETMARK"),
    ("missing-chain", 4, _chain("ctr1")),
    ("missing-chain", 4, _chain("ctr2")),
    ("missing-chain", 4, _chain("ctr3")),
    ("missing-toplevel", 6, "CNI-HOSTPORT-DNAT"),
    ("missing-toplevel", 6, "CNI-HOSTPORT-MASQ"),
    ("missing-toplevel", 6, "CNI-HOSTPORT-SETMARK"),
    ("missing-chain", 6, _chain("ctr3")),
]
FLUSH = [
    *[
        (kind, f, chain)
        for f in (4, 6)
        for kind, chain in (
            ("missing-jump", "PREROUTING"),
            ("missing-jump", "OUTPUT"),
            ("missing-jump", "POSTROUTING"),
            ("missing-toplevel-rule", "CNI-HOSTPORT-MASQ"),
            ("missing-toplevel-rule", "CNI-HOSTPORT-SETMARK"),
        )
    ],
    *[
        (kind, 4, _chain(c))
        for c in ("ctr1", "ctr2", "ctr3")
        for kind in ("missing-rules", "missing-entry")
    ],
    ("missing-rules", 6, _chain("ctr3")),
    ("missing-entry", 6, _chain("ctr3")),
]


@pytest.mark.parametrize("how", ["firewalld", "flush"])
def test_flushed_node_is_listed_then_repaired_until_the_plugin_check_passes(
    host_ns, iptables_mode, tmp_path, how
):
    mode = iptables_mode
    confs = _plugin_node(host_ns, mode, tmp_path)
    made_by_plugin = _state(host_ns, mode)
    doc = _check(host_ns, mode, tmp_path)
    assert {k: doc[k] for k in ("healthy", "repaired", "problems", "fixed")} == {
        "healthy": True,
        "repaired": False,
        "problems": [],
        "fixed": [],
    }

    # firewalld --reload flushes every chain and deletes the user chains; a script's
    # `iptables -t nat -F` only flushes.
    for family in (4, 6):
        rp.iptables(host_ns, ["-t", "nat", "-F"], family=family, mode=mode)
        if how == "firewalld":
            rp.iptables(host_ns, ["-t", "nat", "-X"], family=family, mode=mode)
    doc = _check(host_ns, mode, tmp_path)
    assert _problems(doc) == sorted(FIREWALLD if how == "firewalld" else FLUSH)
    assert all(p["fix"].startswith("portmapctl check --repair") for p in doc["problems"])

    doc = _check(host_ns, mode, tmp_path, "--repair")
    assert doc["healthy"] and doc["repaired"] and doc["problems"] == []
    assert sorted((p["kind"], p["family"], p["chain"]) for p in doc["fixed"]) == _problems(
        {
            "problems": [
                dict(kind=k, family=f, chain=c)
                for k, f, c in (FIREWALLD if how == "firewalld" else FLUSH)
            ]
        }
    )
    for container_id, conf in confs.items():
        for proc in rp.run_check(host_ns, container_id, conf, mode=mode):
            assert proc.returncode == 0, (container_id, proc.stdout, proc.stderr)
    assert _state(host_ns, mode) == made_by_plugin

    # Idempotent: a second repair changes nothing.
    doc = _check(host_ns, mode, tmp_path, "--repair")
    assert {k: doc[k] for k in ("healthy", "repaired", "problems", "fixed")} == {
        "healthy": True,
        "repaired": False,
        "problems": [],
        "fixed": [],
    }
    assert _state(host_ns, mode) == made_by_plugin


def test_repaired_lines_are_in_the_order_of_the_problem_rows(host_ns, tmp_path):
    """check --repair says what it fixed in the order check's problem rows are in
    (network, container, family; the node's own first), so one container's v4 and v6
    lines stand together; -o json's "fixed" likewise."""
    _plugin_node(host_ns, "nft", tmp_path)
    order = [
        *[("missing-toplevel", f, f"CNI-HOSTPORT-{c}") for f in (4, 6)
          for c in ("SETMARK", "MASQ", "DNAT")],  # as check finds them
        ("missing-chain", 4, _chain("ctr1")),
        ("missing-chain", 4, _chain("ctr2")),
        ("missing-chain", 4, _chain("ctr3")),
        ("missing-chain", 6, _chain("ctr3")),
    ]  # fmt: skip
    argv = ["check", "--netns", host_ns, "--iptables", "nft", "--cni-cache-dir", str(tmp_path),
            "--repair"]  # fmt: skip
    for extra in ([], ["-o", "json"]):
        for family in (4, 6):  # firewalld --reload
            rp.iptables(host_ns, ["-t", "nat", "-F"], family=family)
            rp.iptables(host_ns, ["-t", "nat", "-X"], family=family)
        done = run([*argv, *extra])
        assert done.returncode == 0, done.stderr
        if extra:
            fixed = [(p["kind"], p["family"], p["chain"]) for p in json.loads(done.stdout)["fixed"]]
            assert fixed == order
            continue
        lines = [line for line in done.stderr.splitlines() if line.startswith("repaired: ")]
        assert lines == [
            f"repaired: IPv{f} {kind} {chain}"
            + (f" (mynet/{chain_owner})" if (chain_owner := _owner(chain)) else "")
            for kind, f, chain in order
        ], done.stderr


def test_a_quiet_repair_says_what_it_repaired_in_its_one_line(host_ns, tmp_path):
    """check --repair -q prints the summary line alone: after a flush it said
    "healthy: ..." exactly as a night when nothing was wrong (the repaired: lines go
    with -q, as every message): a cron job's log could not tell. It starts with what
    was repaired now; a run with nothing to do says healthy alone."""
    _plugin_node(host_ns, "nft", tmp_path)
    argv = ["check", "--netns", host_ns, "--iptables", "nft", "--cni-cache-dir", str(tmp_path),
            "--repair", "-q"]  # fmt: skip
    rp.iptables(host_ns, ["-t", "nat", "-F"], family=4)
    done = run(argv)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    [line] = done.stdout.splitlines()
    # Four chains lost their rules (three containers), and the three shared chains
    # their jumps and rules.
    assert line.startswith("repaired ") and " of 3 containers; healthy: all 4 chains" in line
    again = run(argv)
    assert again.returncode == 0 and again.stdout.startswith("healthy: all 4 chains"), again.stdout


def _owner(chain):
    return next((c for c in ("ctr1", "ctr2", "ctr3") if _chain(c) == chain), None)


def test_table_output_of_a_broken_node(host_ns, tmp_path):
    _plugin_node(host_ns, "nft", tmp_path, CONTAINERS[:1])
    rp.iptables(
        host_ns,
        [
            "-t",
            "nat",
            "-D",
            "OUTPUT",
            "-m",
            "addrtype",
            "--dst-type",
            "LOCAL",
            "-j",
            "CNI-HOSTPORT-DNAT",
        ],
    )
    done = run(["check", "--netns", host_ns, "--iptables", "nft", "--cni-cache-dir", str(tmp_path)])
    assert done.returncode == 1
    header, row = done.stdout.splitlines()[:2]
    assert header.split() == ["KIND", "FAM", "CONTAINER", "PROBLEM"]
    assert row.split()[:4] == ["missing-jump", "v4", "-", "OUTPUT"]
    assert "portmapctl check --repair" in done.stdout
    done = run(
        [
            "check",
            "--repair",
            "--netns",
            host_ns,
            "--iptables",
            "nft",
            "--cni-cache-dir",
            str(tmp_path),
        ]
    )
    assert done.returncode == 0, done.stderr
    assert "repaired: IPv4 missing-jump OUTPUT" in done.stderr
    assert done.stdout.startswith("repaired 1 problem; healthy:"), done.stdout


def test_shadowed_host_port_names_who_wins(host_ns, tmp_path):
    port = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
    _plugin_node(
        host_ns,
        "nft",
        tmp_path,
        [("ctr-a", ["10.88.0.21/16"], port), ("ctr-b", ["10.88.0.22/16"], port)],
    )
    before = _state(host_ns, "nft")
    doc = _check(host_ns, "nft", tmp_path)
    assert _problems(doc) == [("shadowed", 4, _chain("ctr-b"))]
    assert _chain("ctr-a") in doc["problems"][0]["detail"]
    # Nothing is missing: repair has nothing to do, and the problem stays (exit 1).
    doc = _check(host_ns, "nft", tmp_path, "--repair")
    assert not doc["repaired"] and _problems(doc) == [("shadowed", 4, _chain("ctr-b"))]
    assert _state(host_ns, "nft") == before


def test_stale_and_orphan_chains_are_left_to_gc(host_ns, tmp_path):
    _plugin_node(host_ns, "legacy", tmp_path, CONTAINERS[:2], cached={"ctr1"})
    doc = _check(host_ns, "legacy", tmp_path)
    assert _problems(doc) == [("stale", 4, _chain("ctr2"))]
    assert doc["problems"][0]["container_id"] == "ctr2"
    assert doc["problems"][0]["fix"] == (
        f"portmapctl gc --netns {host_ns} --iptables legacy --cni-cache-dir {tmp_path}"
    )
    # An entry rule gone by hand: without a cache, the chain is an orphan.
    rp.iptables(host_ns, ["-t", "nat", "-F", "CNI-HOSTPORT-DNAT"], mode="legacy")
    doc = _check(host_ns, "legacy", tmp_path / "nowhere")
    assert _problems(doc) == [("orphan", 4, _chain("ctr1")), ("orphan", 4, _chain("ctr2"))]
    # Repair never deletes: the stale chain stays, ctr1's entry rule comes back.
    before = _state(host_ns, "legacy")
    doc = _check(host_ns, "legacy", tmp_path, "--repair")
    assert doc["repaired"] and _problems(doc) == [("stale", 4, _chain("ctr2"))]
    after = _state(host_ns, "legacy")
    assert set(before[4]) < set(after[4])
    assert [line for line in after[4] if "CNI-HOSTPORT-DNAT -p" in line] == [
        line for line in after[4] if 'id: \\"ctr1\\"' in line
    ]


def test_split_brain_is_reported_and_empty_legacy_tables_are_not(host_ns, tmp_path):
    conf = _plugin_node(host_ns, "nft", tmp_path, CONTAINERS[:1])["ctr1"]
    rp.save(host_ns, 4, "legacy")  # creates empty legacy tables, as FACTS says
    rp.save(host_ns, 6, "legacy")
    assert _check(host_ns, "nft", tmp_path)["healthy"]
    rp.run_plugin("ADD", host_ns, "ctr1", conf, mode="legacy", check=True)
    doc = _check(host_ns, "nft", tmp_path)
    assert _problems(doc) == [("split-brain", 4, None)]
    assert _chain("ctr1") in doc["problems"][0]["detail"]
    # The other way round too.
    assert _problems(_check(host_ns, "legacy", tmp_path)) == [("split-brain", 4, None)]


def test_check_does_not_create_legacy_tables(host_ns, tmp_path):
    _plugin_node(host_ns, "nft", tmp_path, CONTAINERS[:1])
    _check(host_ns, "nft", tmp_path)
    names = rp._run(["ip", "netns", "exec", host_ns, "cat", "/proc/net/ip_tables_names"]).stdout
    assert "nat" not in names.split()


def test_malformed_cache_file_is_skipped_and_the_rest_repaired(host_ns, tmp_path):
    """The unreadable entry's container is live by its file name (its chain is not
    called stale), and everything else is repaired (0.1: exit 2, nothing repaired)."""
    _plugin_node(host_ns, "nft", tmp_path, CONTAINERS[:1])
    made = _state(host_ns, "nft")
    _plugin_node(host_ns, "nft", tmp_path / "other", CONTAINERS[1:2])  # ctr2: no entry here
    rp.iptables(host_ns, ["-t", "nat", "-F", "PREROUTING"])
    bad = tmp_path / "results" / "mynet-ctr2-eth0"
    bad.write_text('{"kind": "cniCacheV1", "containerId": "ctr2", "config": 7}')
    done = run(
        [
            "check",
            "--repair",
            "--netns",
            host_ns,
            "--iptables",
            "nft",
            "--cni-cache-dir",
            str(tmp_path),
        ]
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert str(bad) in done.stderr and "config must be a base64 string" in done.stderr
    assert "stale" not in done.stdout.replace("nothing stale", "")
    after = _state(host_ns, "nft")
    assert set(made[4]) <= set(after[4]) and "-A PREROUTING" in "\n".join(after[4])
    assert any(_chain("ctr2") in line for line in after[4])


def test_single_mapping_check_and_repair(host_ns, iptables_mode, tmp_path):
    mode = iptables_mode
    container_id, ips, ports = CONTAINERS[2]
    conf = rp.plugin_conf("mynet", ips, ports)
    path = tmp_path / "conf.json"
    path.write_text(json.dumps(conf))
    args = [
        "check",
        "--netns",
        host_ns,
        "--iptables",
        mode,
        "--container",
        container_id,
        "--cni-config",
        str(path),
        "-o",
        "json",
    ]
    done = run(args)
    assert done.returncode == 1  # the seed's CHECK passed here: the chain does not exist
    assert _problems(json.loads(done.stdout)) == [
        ("missing-chain", 4, _chain(container_id)),
        ("missing-chain", 6, _chain(container_id)),
    ]
    # The fix is the command that was run, with --repair (its output options left out).
    fixes = {p["fix"] for p in json.loads(done.stdout)["problems"]}
    assert fixes == {shlex.join(["portmapctl", *args[:-2], "--repair"])}
    done = run([*args, "--repair"])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["repaired"] is True
    for proc in rp.run_check(host_ns, container_id, conf, mode=mode):
        assert proc.returncode == 0, proc.stdout
    assert run(args).returncode == 0
    done = run([*args, "--repair"])
    assert json.loads(done.stdout)["repaired"] is False


def test_single_mapping_check_reports_a_wrong_rule_its_repair_rewrites(
    host_ns, iptables_mode, tmp_path
):
    """A DNAT rule of the container's chain that its config does not make, put first (the
    port now goes to :81): the plugin's CHECK passes (it asks only that the wanted rules
    exist), and so did check of that one mapping, exit 0, while its --repair rewrote the
    chain. Now it is `extra-rules`, exit 1, as the node check and the nftables backend's
    one-mapping check say; --repair puts the plugin's chain back, byte for byte."""
    mode = iptables_mode
    container_id, ips, ports = CONTAINERS[2]
    conf = rp.plugin_conf("mynet", ips, ports)
    rp.run_plugin("ADD", host_ns, container_id, conf, mode=mode, check=True)
    made = rp.nat_rules(rp.save(host_ns, 4, mode))
    chain = _chain(container_id)
    wrong = ["-I", chain, "1", "-p", "tcp", "-m", "tcp", "--dport", str(ports[0]["hostPort"]),
             "-j", "DNAT", "--to-destination", f"{ips[0].split('/')[0]}:81"]  # fmt: skip
    rp.iptables(host_ns, ["-t", "nat", *wrong], mode=mode)
    for proc in rp.run_check(host_ns, container_id, conf, mode=mode):
        assert proc.returncode == 0, proc.stdout  # the plugin sees nothing wrong
    path = tmp_path / "conf.json"
    path.write_text(json.dumps(conf))
    args = ["check", "--netns", host_ns, "--iptables", mode, "--container", container_id,
            "--cni-config", str(path), "--family", "4", "-o", "json"]  # fmt: skip
    done = run(args)
    assert done.returncode == 1, done.stdout + done.stderr
    problems = json.loads(done.stdout)["problems"]
    assert _problems(json.loads(done.stdout)) == [("extra-rules", 4, chain)]
    assert problems[0]["detail"].startswith("1 rule its config does not make: ")
    assert ":81" in problems[0]["detail"]
    done = run([*args, "--repair"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert rp.nat_rules(rp.save(host_ns, 4, mode)) == made
    assert run(args).returncode == 0


def test_repair_flushes_udp_conntrack_of_what_it_recreated(host_ns, tmp_path):
    """While the mapping was gone, a UDP flow to the node got an un-NATed conntrack
    entry; it would keep bypassing the re-created DNAT until idle (the seed commit's
    blackhole). Forwarded flows on the same port met no mapping and stay: a container's
    query to a server outside, a client of a container's own address (repair deleted
    them, as the plugin's ADD does)."""
    _plugin_node(host_ns, "nft", tmp_path, CONTAINERS[1:2])
    rp.iptables(host_ns, ["-t", "nat", "-F", "CNI-HOSTPORT-DNAT"])
    rp._run(["ip", "-n", host_ns, "addr", "add", "192.0.2.2/32", "dev", "lo"], check=True)
    conntrack = ["ip", "netns", "exec", host_ns, "conntrack"]
    for sport, dst in ((40000, "192.0.2.2"), (40001, "8.8.8.8"), (40002, "10.88.0.12")):
        rp._run([*conntrack, "-I", "-p", "udp", "-s", "192.0.2.1", "-d", dst, "--sport",
                 str(sport), "--dport", "5353", "-t", "100"], check=True)  # fmt: skip
    assert rp._run([*conntrack, "-L", "-p", "udp"]).stdout.count("dport=5353") == 3
    assert _check(host_ns, "nft", tmp_path, "--repair")["repaired"]
    left = rp._run([*conntrack, "-L", "-p", "udp"]).stdout
    assert "sport=40000" not in left
    assert "sport=40001" in left and "sport=40002" in left


def test_repair_flushes_only_the_flows_its_mapping_takes(host_ns, tmp_path):
    """A mapping bound to one host IP takes only that address's flows: repairing it
    deleted every flow to the port on every node address, in every family the
    container has, another healthy container's live ones included (their replies then
    left un-NATed), and the host's own. Only the repaired mapping's destinations go."""
    udp = "udp"
    _plugin_node(
        host_ns,
        "nft",
        tmp_path,
        [
            ("ctrc", ["10.88.0.21/16", "fd00::21/64"],
             [{"hostPort": 6000, "containerPort": 60, "protocol": udp, "hostIP": "192.0.2.2"},
              {"hostPort": 7000, "containerPort": 70, "protocol": udp}]),
            ("ctrd", ["10.88.0.22/16"],
             [{"hostPort": 6000, "containerPort": 60, "protocol": udp, "hostIP": "192.0.2.3"}]),
            ("ctre", ["fd00::23/64"], [{"hostPort": 6000, "containerPort": 60, "protocol": udp}]),
        ],
    )  # fmt: skip
    for family in (4, 6):
        for line in rp.save(host_ns, family).splitlines():
            if line.startswith("-A CNI-HOSTPORT-DNAT") and '\\"ctrc\\"' in line:
                rp.iptables(host_ns, ["-t", "nat", "-D", *shlex.split(line)[1:]], family=family)
    for address in ("192.0.2.2/32", "192.0.2.3/32", "192.0.2.4/32", "fd00:1::1/128"):
        rp._run(["ip", "-n", host_ns, "addr", "add", address, "dev", "lo"], check=True)
    conntrack = ["ip", "netns", "exec", host_ns, "conntrack"]
    flows = [
        (40010, "192.0.2.1", "192.0.2.2", 6000, None),  # ctrc's, un-NATed while it was gone
        (40011, "192.0.2.1", "192.0.2.3", 6000, "10.88.0.22"),  # ctrd's, live
        (40012, "192.0.2.1", "192.0.2.4", 6000, None),  # the host's own: no mapping for it
        (40013, "2001:db8::1", "fd00:1::1", 6000, "fd00::23"),  # ctre's, live (IPv6)
        (40014, "192.0.2.1", "192.0.2.4", 7000, None),  # ctrc's, un-NATed
    ]
    for sport, src, dst, dport, reply in flows:
        args = ["-I", "-p", "udp", "-s", src, "-d", dst, "--sport", str(sport),
                "--dport", str(dport), "-t", "100"]  # fmt: skip
        if reply is not None:
            args += ["--reply-src", reply, "--reply-dst", src, "--reply-port-src", "60",
                     "--reply-port-dst", str(sport)]  # fmt: skip
        rp._run([*conntrack, *args], check=True)
    assert _check(host_ns, "nft", tmp_path, "--repair")["repaired"]
    left = (
        rp._run([*conntrack, "-L", "-f", "ipv4"]).stdout
        + rp._run([*conntrack, "-L", "-f", "ipv6"]).stdout
    )
    assert "sport=40010 " not in left and "sport=40014 " not in left
    assert all(f"sport={sport} " in left for sport in (40011, 40012, 40013)), left


def test_repair_keeps_the_udp_flows_that_reach_the_mapping_it_recreated(host_ns, tmp_path):
    """A flow DNATed to the re-created mapping's own container and port is live: its
    next datagram goes there through the rules anyway, and deleting its entry sends
    the replies already on their way out un-NATed (a second add keeps such flows for
    that reason). Repairing ctr2's missing tcp/8082 entry deleted its live UDP flows on
    5353, whose rules had never gone; the flows that misroute still go."""
    _plugin_node(host_ns, "nft", tmp_path, CONTAINERS[1:2])  # 5353/udp to 10.88.0.12:53
    for line in rp.save(host_ns, 4).splitlines():
        if line.startswith("-A CNI-HOSTPORT-DNAT") and "-p tcp" in line:
            rp.iptables(host_ns, ["-t", "nat", "-D", *shlex.split(line)[1:]])
    rp._run(["ip", "-n", host_ns, "addr", "add", "192.0.2.2/32", "dev", "lo"], check=True)
    conntrack = ["ip", "netns", "exec", host_ns, "conntrack"]
    for sport, reply in ((40020, "10.88.0.12"), (40021, "10.88.0.99"), (40022, None)):
        args = ["-I", "-p", "udp", "-s", "192.0.2.1", "-d", "192.0.2.2", "--sport", str(sport),
                "--dport", "5353", "-t", "100"]  # fmt: skip
        if reply is not None:
            args += ["--reply-src", reply, "--reply-dst", "192.0.2.1", "--reply-port-src", "53",
                     "--reply-port-dst", str(sport)]  # fmt: skip
        rp._run([*conntrack, *args], check=True)
    doc = _check(host_ns, "nft", tmp_path, "--repair")
    assert doc["repaired"] and doc["healthy"], doc
    left = rp._run([*conntrack, "-L", "-p", "udp"]).stdout
    assert "sport=40020 " in left, left  # live: reaches ctr2
    assert "sport=40021 " not in left and "sport=40022 " not in left, left


def test_repair_keeps_the_flows_of_the_container_or_rule_that_takes_the_port_first(
    host_ns, tmp_path
):
    """Repairing a shadowed container's missing entry rule (wina, added first, keeps
    taking 5353/udp) deleted wina's live flows, and those of another tool's rule ahead
    of the plugin's (-d 192.0.2.3): they reach neither the repaired container nor its
    port, so they went, although the re-created rule takes none of them (its replies on
    their way then go out un-NATed). Found with real traffic (helper h190). Now what
    would go is judged against every mapping of the node and the rules that take a
    destination first, as flush-udp --stale-only judges: the blackholed and the
    old-destination flows still go."""
    udp = [{"hostPort": 5353, "containerPort": 53, "protocol": "udp"}]
    _plugin_node(
        host_ns, "nft", tmp_path, [("wina", ["10.88.0.31/16"], udp), ("shadb", ["10.88.0.32/16"], udp)]
    )  # fmt: skip
    for line in rp.save(host_ns, 4).splitlines():
        if line.startswith("-A CNI-HOSTPORT-DNAT") and '\\"shadb\\"' in line:
            rp.iptables(host_ns, ["-t", "nat", "-D", *shlex.split(line)[1:]])
    rp.iptables(host_ns, ["-t", "nat", "-I", "PREROUTING", "1", "-d", "192.0.2.3", "-p", "udp",
                          "--dport", "5353", "-j", "DNAT", "--to-destination", "10.244.1.7:53"])  # fmt: skip
    for address in ("192.0.2.2/32", "192.0.2.3/32"):
        rp._run(["ip", "-n", host_ns, "addr", "add", address, "dev", "lo"], check=True)
    ct_load(
        host_ns,
        [
            ct_args("192.0.2.1", "192.0.2.2", 40040, 5353, "10.88.0.31", 53),  # wina's, live
            ct_args("192.0.2.1", "192.0.2.3", 40041, 5353, "10.244.1.7", 53),  # the other rule's
            ct_args("192.0.2.1", "192.0.2.2", 40042, 5353),  # never DNATed: the blackhole
            ct_args("192.0.2.1", "192.0.2.2", 40043, 5353, "10.88.0.99", 53),  # a gone one's
        ],
    )
    doc = _check(host_ns, "nft", tmp_path, "--repair")
    assert doc["repaired"], doc
    assert ct_sports(host_ns) == {40040, 40041}


def test_repair_flushes_the_flows_that_reach_the_mapping_without_the_masquerade_they_need(
    host_ns, tmp_path
):
    """A hairpin or localhost flow that began while the container's mark rules were
    missing reached it DNATed but not masqueraded: its replies bypass the node, and
    kept it stays broken for as long as it is busy. Repair deletes it; the same flows
    masqueraded, and an outside client's (no masquerade wanted), stay."""
    _plugin_node(host_ns, "nft", tmp_path, CONTAINERS[1:2])  # 5353/udp to 10.88.0.12:53
    for line in rp.save(host_ns, 4).splitlines():
        if line.startswith("-A CNI-DN-") and "-p udp" in line and "CNI-HOSTPORT-SETMARK" in line:
            rp.iptables(host_ns, ["-t", "nat", "-D", *shlex.split(line)[1:]])
    rp._run(["ip", "-n", host_ns, "addr", "add", "192.0.2.2/32", "dev", "lo"], check=True)
    ct_load(
        host_ns,
        masquerade_flows("10.88.0.12", "192.0.2.2", 5353, 53, "10.88.0.1", "192.0.2.1", 40030),
    )
    doc = _check(host_ns, "nft", tmp_path, "--repair")
    assert doc["repaired"] and doc["healthy"], doc
    assert ct_sports(host_ns) == {40032, 40033}


def test_repair_keeps_the_node_own_flows_from_its_address_on_the_containers_network(
    host_ns, tmp_path
):
    """A flow the node itself sends from its own address on the containers' network
    (the bridge's 10.88.0.1, to a mapped port of the node) reached ctr2 with its source
    as it was: the masquerade the mapping gives it picks that very address (a no-op),
    and the replies come back to the node anyway. Repair took it for a hairpin flow
    lacking its masquerade and deleted it, live, whenever it re-created anything of
    ctr2 (here its tcp entry rule). Found by an oracle fuzz with real traffic (helper
    h190). A container's own hairpin flow without the masquerade still goes."""
    _plugin_node(host_ns, "nft", tmp_path, CONTAINERS[1:2])  # 5353/udp to 10.88.0.12:53
    rp.routed_node(host_ns)  # 10.88.0.1/16 on d0, 10.0.0.1 on lo
    for line in rp.save(host_ns, 4).splitlines():
        if line.startswith("-A CNI-HOSTPORT-DNAT") and "-p tcp" in line:
            rp.iptables(host_ns, ["-t", "nat", "-D", *shlex.split(line)[1:]])
    ct_load(
        host_ns,
        [
            ct_args("10.88.0.1", "10.0.0.1", 40050, 5353, "10.88.0.12", 53),  # the node's own
            ct_args("10.88.0.1", "10.88.0.1", 40051, 5353, "10.88.0.12", 53),  # the node's own
            ct_args("10.88.0.7", "10.0.0.1", 40052, 5353, "10.88.0.12", 53),  # hairpin, bare
        ],
    )
    doc = _check(host_ns, "nft", tmp_path, "--repair")
    assert doc["repaired"] and doc["healthy"], doc
    assert ct_sports(host_ns) == {40050, 40051}


def test_repair_needs_root(host_ns, tmp_path):
    done = run(
        ["check", "--repair", "--netns", host_ns, "--cni-cache-dir", str(tmp_path)],
        unprivileged=True,
    )
    assert_error(done, 3)


def test_repair_makes_no_copy_of_what_the_other_flavour_holds(host_ns, tmp_path):
    """The plugin wrote legacy tables (its PATH runs iptables-legacy), check looks at
    nf_tables (--iptables nft, or auto on a host whose own iptables is nft): what is
    missing here but there is not made here, where a copy makes a split brain (both
    DNAT; the plugin's DEL leaves the copy). 0.1 copied the whole family into nft."""
    _plugin_node(host_ns, "legacy", tmp_path, CONTAINERS)
    doc = _check(host_ns, "nft", tmp_path, "--repair")
    assert not doc["repaired"] and not doc["healthy"]
    assert ("missing-chain", 4, _chain("ctr1")) in _problems(doc)
    for p in doc["problems"]:
        assert p["kind"] in ("missing-toplevel", "missing-chain"), p
        assert "legacy tables" in p["detail"] and p["fix"] is None, p
        assert "--iptables legacy" in p["why"], p
    assert _state(host_ns, "nft") == {4: [], 6: []}
    assert _check(host_ns, "legacy", tmp_path)["healthy"]

    # Both flavours in use (ctr4 by iptables-nft): only what the legacy tables hold is
    # left; ctr4's entry rule, gone, comes back.
    ctr4 = ("ctr4", ["10.88.0.14/16"], [{"hostPort": 8084, "containerPort": 80, "protocol": "tcp"}])
    _plugin_node(host_ns, "nft", tmp_path, [ctr4])
    entry = next(line for line in _state(host_ns, "nft")[4] if "-A CNI-HOSTPORT-DNAT" in line)
    rp.iptables(host_ns, ["-t", "nat", "-D", *shlex.split(entry)[1:]], mode="nft")
    done = run(
        ["check", "--repair", "--netns", host_ns, "--iptables", "nft",
         "--cni-cache-dir", str(tmp_path)]
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "repaired: IPv4 missing-entry " + _chain("ctr4") in done.stderr
    assert f"could not repair IPv4 mynet/ctr1 ({_chain('ctr1')}): its chain is in the legacy" in (
        done.stderr
    )
    after = "\n".join(_state(host_ns, "nft")[4])
    assert entry in after and _chain("ctr4") in after
    assert not any(_chain(c) in after for c in ("ctr1", "ctr2", "ctr3"))


def test_repair_keeps_the_host_port_with_the_container_added_first(host_ns, tmp_path):
    """Two live containers on one host port: the first ADD's entry rule comes first
    and takes the traffic. After a flush, repair re-creates them in ADD order (the
    cache files' times), so the port stays with that container (0.1: in file-name
    order, which here handed it to the other one)."""
    port = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
    first, second = ("zzz1", ["10.88.0.30/16"], port), ("aaa1", ["10.88.0.31/16"], port)
    _plugin_node(host_ns, "legacy", tmp_path, [first, second])
    for at, cid in enumerate(("zzz1", "aaa1")):
        os.utime(tmp_path / "results" / f"mynet-{cid}-eth0", (1_000_000 + at,) * 2)

    def entries():
        return [line for line in _state(host_ns, "legacy")[4] if "-A CNI-HOSTPORT-DNAT" in line]

    before = entries()
    assert _chain("zzz1") in before[0]
    for args in (["-F"], ["-X"]):
        rp.iptables(host_ns, ["-t", "nat", *args], mode="legacy")
    doc = _check(host_ns, "legacy", tmp_path, "--repair", "--family", "4")
    assert doc["repaired"] and _problems(doc) == [("shadowed", 4, _chain("aaa1"))]
    assert entries() == before


def test_repair_after_a_flush_is_not_stopped_by_shared_chains_a_del_left_elsewhere(
    host_ns, tmp_path
):
    """The other flavour holds only the shared chains a plugin DEL leaves behind (no
    container's chain): no sign that the plugin writes there, so a flushed nat table
    is repaired as ever (the guard against split-brain copies must not stop it)."""
    port = [{"hostPort": 8090, "containerPort": 80, "protocol": "tcp"}]
    old = rp.plugin_conf("mynet", ["10.88.0.40/16"], port)
    rp.run_plugin("ADD", host_ns, "gone1", old, mode="legacy", check=True)
    rp.run_plugin("DEL", host_ns, "gone1", old, mode="legacy", check=True)
    left = _state(host_ns, "legacy")[4]
    assert ":CNI-HOSTPORT-DNAT - [0:0]" in left and not any("CNI-DN-" in line for line in left)
    _plugin_node(host_ns, "nft", tmp_path, CONTAINERS[:1])
    made = _state(host_ns, "nft")
    for args in (["-F"], ["-X"]):
        rp.iptables(host_ns, ["-t", "nat", *args], mode="nft")
    doc = _check(host_ns, "nft", tmp_path, "--repair", "--family", "4")
    assert doc["repaired"]
    assert _problems(doc) == [("split-brain", 4, None)]  # the leftovers, reported
    assert _state(host_ns, "nft")[4] == made[4]


def test_repair_after_a_flush_is_not_stopped_by_stale_chains_elsewhere(host_ns, tmp_path):
    """The other flavour holds a container chain, but of no cached container (one the
    plugin failed to DEL there, long ago): no sign that the plugin writes there, so a
    flushed nat table is repaired as ever."""
    _plugin_node(host_ns, "legacy", tmp_path / "old", CONTAINERS[1:2])  # ctr2: not cached
    _plugin_node(host_ns, "nft", tmp_path, CONTAINERS[:1])
    made = _state(host_ns, "nft")
    for args in (["-F"], ["-X"]):
        rp.iptables(host_ns, ["-t", "nat", *args], mode="nft")
    doc = _check(host_ns, "nft", tmp_path, "--repair", "--family", "4")
    assert doc["repaired"] and ("split-brain", 4, None) in _problems(doc)
    assert _state(host_ns, "nft")[4] == made[4]


def test_an_entry_rule_with_control_characters_leaves_its_container_alone_not_the_node(
    host_ns, iptables_mode, tmp_path
):
    """A rule another tool inserted into CNI-HOSTPORT-DNAT, jumping to ctr1's chain
    with an escape sequence in its comment: check calls it extra-entry, and --repair,
    whose plan deletes it by its text, stopped with "error: refusing a rule argument
    with control characters", exit 2 (bad input, which nobody gave): nothing was
    repaired, ctr2's missing chain neither. Now ctr1 gets a `could not repair` line
    naming the rule's number, and the rest of the node is repaired."""
    mode = iptables_mode
    _plugin_node(host_ns, mode, tmp_path, CONTAINERS[:2])
    rp.iptables(host_ns, ["-t", "nat", "-I", "CNI-HOSTPORT-DNAT", "1", "-p", "tcp", "-m",
                          "comment", "--comment", "x\x1b[31my", "-m", "multiport", "--dports",
                          "8081", "-j", _chain("ctr1")], mode=mode)  # fmt: skip
    entries = [line for line in rp.save(host_ns, 4, mode).splitlines()
               if line.startswith("-A CNI-HOSTPORT-DNAT") and _chain("ctr2") in line]  # fmt: skip
    assert entries
    for line in entries:  # ctr2's entry rules gone: missing-entry, for --repair to make
        rp.iptables(host_ns, ["-t", "nat", "-D", *shlex.split(line)[1:]], mode=mode)
    args = ["--netns", host_ns, "--iptables", mode, "--cni-cache-dir", str(tmp_path)]
    one_mapping = ["--network", "mynet", "--container", "ctr1", "--ip", "10.88.0.11/16",
                   "-p", "8081:80"]  # fmt: skip
    for one in ([], one_mapping):
        done = run(["check", "--repair", *args, *one])
        assert done.returncode == 1, done.stdout + done.stderr
        assert "could not repair IPv4 mynet/ctr1" in done.stderr, done.stderr
        assert "rule 1 of CNI-HOSTPORT-DNAT" in done.stderr, done.stderr
        assert "\x1b" not in done.stdout + done.stderr
    after = "\n".join(_state(host_ns, mode)[4])
    assert len([line for line in after.splitlines() if _chain("ctr2") in line
                and line.startswith("-A CNI-HOSTPORT-DNAT")]) == len(entries), after  # fmt: skip
    assert "x[31my" in after or "x\x1b[31my" in after  # the other tool's rule: left


def test_copies_of_a_rule_with_control_characters_stop_no_repair(host_ns, iptables_mode, tmp_path):
    """Two copies of a jump to CNI-HOSTPORT-DNAT in PREROUTING with an escape sequence
    in its comment (written by another tool, or a script re-adding the plugin's rules
    from a mangled dump): check rightly calls them duplicate-entry, but --repair, whose
    dedupe deletes copies by their text, which quote() refuses, stopped with "error:
    refusing a rule argument with control characters", exit 2: nothing of the node was
    repaired. Now the copies are left, their fix is the way by hand alone (no --repair,
    which cannot do it), and the rest is repaired."""
    mode = iptables_mode
    _plugin_node(host_ns, mode, tmp_path, CONTAINERS[:2])
    for _ in range(2):
        rp.iptables(host_ns, ["-t", "nat", "-I", "PREROUTING", "1", "-p", "tcp", "-m", "comment",
                              "--comment", "y\x1b[31my", "-j", "CNI-HOSTPORT-DNAT"], mode=mode)  # fmt: skip
    rp.iptables(host_ns, ["-t", "nat", "-F", _chain("ctr2")], mode=mode)
    args = ["--netns", host_ns, "--iptables", mode, "--cni-cache-dir", str(tmp_path)]
    done = run(["check", "--repair", "-o", "json", *args])
    assert done.returncode == 1, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    (left,) = doc["problems"]
    assert left["kind"] == "duplicate-entry" and left["chain"] == "PREROUTING", left
    assert left["fix"].endswith("-t nat -D PREROUTING 2"), left
    assert "--repair leaves it" in left["why"], left
    after = "\n".join(_state(host_ns, mode)[4])
    assert f"-A {_chain('ctr2')} -p tcp" in after, after  # repaired
    assert len([line for line in after.splitlines() if "y[31my" in line or "\x1b" in line]) == 2
