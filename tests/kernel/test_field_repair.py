"""Issue 15: `check --repair` never rewrites a chain in an older plugin version's shape.

A field fixture (tests/fixtures/field) is restored into a fresh namespace, its
containers are put in a CNI cache, and `check --repair` must find the node healthy and
change nothing. Needs root (the namespace); skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import realplugin as rp
from pmctl import run

FIELD = Path(__file__).resolve().parents[1] / "fixtures" / "field"
ID_A = "3f6e3b0a4b7c2d1e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e"
ID_B = "8c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d"

CASES = {
    # fixture: ((container ID, IP/prefix, [(host port, container port, proto)]), ...), masqAll
    "v0.7-prepend-hairpin": (
        (
            (ID_A, "10.88.0.5/16", [(8080, 80, "tcp"), (5353, 53, "udp")]),
            (ID_B, "10.88.0.6/16", [(9090, 90, "tcp")]),
        ),
        False,
    ),
    "v1.2-masqall": (((ID_A, "10.88.0.5/16", [(8080, 80, "tcp")]),), True),
}


@pytest.mark.netns
@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("form", ["node", "mapping"])
def test_repair_leaves_an_old_working_shape_alone(host_ns, tmp_path, name, form):
    """The whole node, and each container as one mapping given on the command line
    (scripts' stand-in for the plugin's CHECK: it said `missing-rules` and
    `extra-rules` of the v0.7 chains, and its --repair rewrote them in the current
    shape)."""
    containers, masq_all = CASES[name]
    saved = (FIELD / f"{name}.v4.save").read_text()
    rp._run(
        [rp._ip(), "netns", "exec", host_ns, rp.tool_path("iptables-restore", "nft")],
        input=saved,
        check=True,
    )
    for cid, ip, ports in containers:
        mappings = [
            {"hostPort": h, "containerPort": c, "protocol": p, "hostIP": ""} for h, c, p in ports
        ]
        conf = rp.plugin_conf("mynet", [ip], mappings)
        if masq_all:
            conf["masqAll"] = True
        rp.write_cni_cache(tmp_path, "mynet", cid, "eth0", conf, mappings, [ip])
    before = rp.nat_rules(rp.save(host_ns, 4))
    # (--cni-cache-dir for each mapping too: never the machine's own cache)
    common = ["check", "--repair", "--netns", host_ns, "--family", "4", "-o", "json",
              "--cni-cache-dir", str(tmp_path)]  # fmt: skip
    runs = [common]
    if form == "mapping":
        runs = [
            [*common, "--network", "mynet", "--container", cid, "--ip", ip,
             *(w for h, c, p in ports for w in ("-p", f"{h}:{c}/{p}")),
             *(["--masq-all"] if masq_all else [])]
            for cid, ip, ports in containers
        ]  # fmt: skip
    for argv in runs:
        done = run(argv)
        assert done.returncode == 0, done.stdout + done.stderr
        doc = json.loads(done.stdout)
        assert doc["healthy"] and not doc["repaired"] and doc["problems"] == []
    assert rp.nat_rules(rp.save(host_ns, 4)) == before


@pytest.mark.netns
@pytest.mark.parametrize("form", ["node", "mapping"])
def test_repair_leaves_a_dead_chain_dead_and_the_live_port_where_it_is(
    host_ns, tmp_path, iptables_mode, form
):
    """v0.8.5 wrote A's host IP 0.0.0.0 as `-d 0.0.0.0/32` (dead), entered before B's
    working chain for the same tcp/2202. --repair must not bring A's mapping back: it
    rewrote A's chain in the current shape, A's entry rule came first and B, the
    container that had the port's traffic, got none (listed shadowed afterwards).
    So too the repair of A's mapping given on the command line (it said missing-rules
    and extra-rules, and rewrote the chain so)."""
    saved = (FIELD / "v0.8.5-dead-before-working.v4.save").read_text()
    rp._run(
        [rp._ip(), "netns", "exec", host_ns, rp.tool_path("iptables-restore", iptables_mode)],
        input=saved,
        check=True,
    )
    for cid, ip, host_ip in ((ID_A, "10.88.0.5/16", "0.0.0.0"), (ID_B, "10.88.0.6/16", "")):
        mappings = [{"hostPort": 2202, "containerPort": 22, "protocol": "tcp", "hostIP": host_ip}]
        conf = rp.plugin_conf("mynet", [ip], mappings)
        rp.write_cni_cache(tmp_path, "mynet", cid, "eth0", conf, mappings, [ip])
    before = rp.nat_rules(rp.save(host_ns, 4, iptables_mode))
    common = ["--netns", host_ns, "--family", "4", "--iptables", iptables_mode,
              "--cni-cache-dir", str(tmp_path), "-o", "json"]  # fmt: skip
    given = []
    if form == "mapping":
        given = ["--network", "mynet", "--container", ID_A, "--ip", "10.88.0.5/16",
                 "-p", "0.0.0.0:2202:22/tcp"]  # fmt: skip
    done = run(["check", "--repair", *common, *given])
    assert done.returncode == 1, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert not doc["repaired"] and [p["kind"] for p in doc["problems"]] == ["dead"]
    assert doc["problems"][0]["container_id"] == ID_A
    assert rp.nat_rules(rp.save(host_ns, 4, iptables_mode)) == before
    listed = json.loads(run(["list", *common]).stdout)["mappings"]
    assert {(m["container_id"], tuple(m["status"])) for m in listed} == {
        (ID_A, ("dead",)), (ID_B, ("ok",)),
    }  # fmt: skip


# A's dead chain lost its localhost rule; or A's second interface on mynet (net1,
# 10.88.0.7) appended its rules to the same chain (the v0.8.5 plugin's ADD of each).
A_LOCALHOST = "-s 127.0.0.1/32 -d 0.0.0.0/32 -p tcp -m tcp --dport 2202"
A_NET1 = (
    "-A {dn} -s 10.88.0.7/32 -d 0.0.0.0/32 -p tcp -m tcp --dport 2202 -j CNI-HOSTPORT-SETMARK\n"
    "-A {dn} -d 0.0.0.0/32 -p tcp -m tcp --dport 2202 -j DNAT --to-destination 10.88.0.7:22\n"
)


def cache_dead_a_and_b(directory: Path, shared: bool) -> None:
    """A's tcp/2202 on host IP 0.0.0.0 through eth0 (and net1, `shared`), then B's."""
    mappings = [{"hostPort": 2202, "containerPort": 22, "protocol": "tcp", "hostIP": "0.0.0.0"}]
    interfaces = [("eth0", "10.88.0.5/16")] + ([("net1", "10.88.0.7/16")] if shared else [])
    for ifname, ip in interfaces:
        conf = rp.plugin_conf("mynet", [ip], mappings)
        conf["prevResult"]["interfaces"][0]["name"] = ifname
        rp.write_cni_cache(directory, "mynet", ID_A, ifname, conf, mappings, [ip])
    b_mappings = [{**mappings[0], "hostIP": ""}]
    conf = rp.plugin_conf("mynet", ["10.88.0.6/16"], b_mappings)
    rp.write_cni_cache(directory, "mynet", ID_B, "eth0", conf, b_mappings, ["10.88.0.6/16"])


@pytest.mark.netns
@pytest.mark.parametrize("form", ["node", "mapping"])
@pytest.mark.parametrize("case", ["lost-a-rule", "shared", "shared-lost-a-mark"])
def test_repair_keeps_a_dead_chain_not_found_whole_dead(
    host_ns, tmp_path, iptables_mode, case, form
):
    """A dead chain that is not one config's exact shape (a rule lost; two interfaces'
    rules in it) was judged against the current shape, and --repair rewrote it without
    `-d 0.0.0.0/32`: A's entry rule, first, took tcp/2202 from B. Now its lost rule
    comes back as v0.8.5 wrote it, the shared chain is left, and B keeps the port. A
    shared chain that lost net1's /32 mark gets it back, and a second repair changes
    nothing (before: it took two, the second rewriting the chain in v0.8.6's shape)."""
    from portmapctl.iptables.chains import chain_name

    dn_a = chain_name("mynet", ID_A)
    written = (FIELD / "v0.8.5-dead-before-working.v4.save").read_text()
    lines = written.splitlines(keepends=True)
    if case == "lost-a-rule":
        body = "".join(ln for ln in lines if not ln.startswith(f"-A {dn_a} {A_LOCALHOST}"))
    else:
        at = max(i for i, ln in enumerate(lines) if ln.startswith(f"-A {dn_a} "))
        written = "".join([*lines[: at + 1], A_NET1.format(dn=dn_a), *lines[at + 1 :]])
        net1_mark = f"-A {dn_a} -s 10.88.0.7/32"
        body = "".join(
            ln
            for ln in written.splitlines(keepends=True)
            if case == "shared" or not ln.startswith(net1_mark)
        )
    rp._run(
        [rp._ip(), "netns", "exec", host_ns, rp.tool_path("iptables-restore", iptables_mode)],
        input=body,
        check=True,
    )
    cache_dead_a_and_b(tmp_path, shared=case.startswith("shared"))
    common = ["--netns", host_ns, "--family", "4", "--iptables", iptables_mode,
              "--cni-cache-dir", str(tmp_path), "-o", "json"]  # fmt: skip
    given = []
    if form == "mapping":
        given = ["--network", "mynet", "--container", ID_A, "--ip", "10.88.0.5/16",
                 "-p", "0.0.0.0:2202:22/tcp", "--ifname", "eth0"]  # fmt: skip
    done = run(["check", "--repair", *common, *given])
    assert done.returncode == 1, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert [p["kind"] for p in doc["problems"]] == ["dead"]
    assert bool(doc["repaired"]) == (case != "shared")
    # The chain as its plugin wrote it (the lost rule back, dead), and nothing else.
    assert rp.nat_rules(rp.save(host_ns, 4, iptables_mode)) == rp.nat_rules(written)
    again = json.loads(run(["check", "--repair", *common, *given]).stdout)
    assert not again["repaired"]
    listed = json.loads(run(["list", *common]).stdout)["mappings"]
    statuses = {(m["container_id"], m["container_ip"], tuple(m["status"])) for m in listed}
    assert (ID_B, "10.88.0.6", ("ok",)) in statuses
    assert all(s == ("dead",) for cid, _, s in statuses if cid == ID_A)


@pytest.mark.netns
def test_a_current_chain_of_a_host_length_address_is_not_read_as_dead(host_ns, tmp_path):
    """A container with a /32 address (Calico's IPAM hands those out): the current
    plugin (Debian's 1.1.1) marks hairpin traffic on the subnet, that very /32, the
    shape v0.7-v0.8.5 wrote on any pod address, and those versions wrote host IP
    0.0.0.0 dead. With the rules of its 0.0.0.0 port lost, the chain must not be read
    as theirs: --repair gives back the rules the plugin wrote (live), and its CHECK
    passes."""
    from portmapctl.iptables.chains import chain_name

    mappings = [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "0.0.0.0"},
        {"hostPort": 9090, "containerPort": 90, "protocol": "tcp", "hostIP": ""},
    ]
    conf = rp.plugin_conf("mynet", ["10.88.0.5/32"], mappings)
    rp.run_plugin("ADD", host_ns, ID_A, conf, check=True)
    rp.write_cni_cache(tmp_path, "mynet", ID_A, "eth0", conf, mappings, ["10.88.0.5/32"])
    written = rp.nat_rules(rp.save(host_ns, 4))
    dn_a = chain_name("mynet", ID_A)
    lost = [ln for ln in written if ln.startswith(f"-A {dn_a} ") and "--dport 8080" in ln]
    assert len(lost) == 3 and any("-s 10.88.0.5/32" in ln for ln in written)
    for line in lost:
        rp.iptables(host_ns, ["-t", "nat", "-D", *shlex.split(line)[1:]])
    done = run(["check", "--repair", "--netns", host_ns, "--family", "4",
                "--cni-cache-dir", str(tmp_path), "-o", "json"])  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["healthy"]
    assert rp.nat_rules(rp.save(host_ns, 4)) == written
    assert all(c.returncode == 0 for c in rp.run_check(host_ns, ID_A, conf))


@pytest.mark.netns
@pytest.mark.parametrize("form", ["node", "mapping"])
@pytest.mark.parametrize("case", ["dead-chain-emptied", "two-containers-one-port"])
def test_repair_never_moves_a_port_from_the_mapping_that_has_it(
    host_ns, tmp_path, iptables_mode, case, form
):
    """A's chain is entered before B's, and B has tcp/2202's traffic: A's chain is one
    v0.8.5 wrote dead (host IP 0.0.0.0) that lost every rule (nothing says which plugin
    wrote it), or one written live whose DNAT rule was lost while B's cached config maps
    the port too. Written in its config's current shape, A's chain would take the port
    from B (before: it did). --repair leaves the node as it is, says why A was not
    repaired and who has the port, and B is still ok."""
    from portmapctl.iptables.chains import chain_name

    dn_a, dn_b = chain_name("mynet", ID_A), chain_name("mynet", ID_B)
    written = (FIELD / "v0.8.5-dead-before-working.v4.save").read_text()
    if case == "dead-chain-emptied":
        gone = f"-A {dn_a} "
        host_ip = "0.0.0.0"
    else:
        written = written.replace(" -d 0.0.0.0/32", "")
        gone = f"-A {dn_a} -p tcp -m tcp --dport 2202 -j DNAT"
        host_ip = ""
    body = "".join(ln for ln in written.splitlines(keepends=True) if not ln.startswith(gone))
    assert body != written
    rp._run(
        [rp._ip(), "netns", "exec", host_ns, rp.tool_path("iptables-restore", iptables_mode)],
        input=body,
        check=True,
    )
    for cid, ip, hip in ((ID_A, "10.88.0.5/16", host_ip), (ID_B, "10.88.0.6/16", "")):
        mappings = [{"hostPort": 2202, "containerPort": 22, "protocol": "tcp", "hostIP": hip}]
        conf = rp.plugin_conf("mynet", [ip], mappings)
        rp.write_cni_cache(tmp_path, "mynet", cid, "eth0", conf, mappings, [ip])
    common = ["--netns", host_ns, "--family", "4", "--iptables", iptables_mode,
              "--cni-cache-dir", str(tmp_path), "-o", "json"]  # fmt: skip
    given = []
    if form == "mapping":
        spec = f"{host_ip}:2202:22/tcp" if host_ip else "2202:22/tcp"
        given = ["--network", "mynet", "--container", ID_A, "--ip", "10.88.0.5/16",
                 "-p", spec, "--ifname", "eth0"]  # fmt: skip
    done = run(["check", "--repair", *common, *given])
    assert done.returncode == 1, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert not doc["repaired"]
    # (the live chain is v0.8.5's shape less its DNAT rule: judged in the current one)
    wrong = ["missing-rules"] if case == "dead-chain-emptied" else ["extra-rules", "missing-rules"]
    assert sorted(p["kind"] for p in doc["problems"]) == wrong
    # (no fix that names --repair again: the line of why it could not)
    assert all(p["fix"] is None and "could not repair" in p["why"] for p in doc["problems"])
    (left,) = doc["unrepaired"]
    assert left["container_id"] == ID_A and left["chain"] == dn_a
    assert f"take tcp/2202 from mynet/{ID_B[:12]} ({dn_b})" in left["why"]
    assert rp.nat_rules(rp.save(host_ns, 4, iptables_mode)) == rp.nat_rules(body)
    listed = json.loads(run(["list", *common]).stdout)["mappings"]
    assert [m["status"] for m in listed if m["container_id"] == ID_B] == [["ok"]]


@pytest.mark.netns
def test_one_mapping_repair_of_a_v06_node_writes_nothing(host_ns, tmp_path, iptables_mode):
    """v0.6 made no CNI-HOSTPORT-SETMARK/MASQ (its CNI-SN- chains masquerade), and the
    node check wants none for its chains: nor does the check of one of its mappings
    given on the command line, whose --repair created both (before). A is shadowed by
    B's port-less entry (exit 1, nothing to repair); B is healthy."""
    saved = (FIELD / "v0.6-portless-entries.v4.save").read_text()
    rp._run(
        [rp._ip(), "netns", "exec", host_ns, rp.tool_path("iptables-restore", iptables_mode)],
        input=saved,
        check=True,
    )
    before = rp.nat_rules(rp.save(host_ns, 4, iptables_mode))
    common = ["check", "--repair", "--netns", host_ns, "--family", "4", "-o", "json",
              "--iptables", iptables_mode, "--cni-cache-dir", str(tmp_path / "none")]  # fmt: skip
    for cid, ip, ports, kinds in (
        (ID_A, "10.88.0.5/16", ["8080:80/tcp"], ["shadowed"]),
        (ID_B, "10.88.0.6/16", ["8080:80/tcp", "9090:90/tcp"], []),
    ):
        done = run([*common, "--network", "mynet", "--container", cid, "--ip", ip,
                    *(w for p in ports for w in ("-p", p))])  # fmt: skip
        doc = json.loads(done.stdout)
        assert not doc["repaired"], done.stdout
        assert [p["kind"] for p in doc["problems"]] == kinds
        assert done.returncode == (1 if kinds else 0), done.stderr
    assert rp.nat_rules(rp.save(host_ns, 4, iptables_mode)) == before


@pytest.mark.netns
@pytest.mark.parametrize("form", ["node", "mapping"])
def test_repair_leaves_a_v07_shared_dead_chain_as_v07_wrote_it(
    host_ns, tmp_path, iptables_mode, form
):
    """v0.7 inserted the rules a chain lacked at its top (A's net1 rules before its
    eth0 rules in their one chain). Found whole the chain is `dead` alone and --repair
    changes nothing (before: rules-order, and the repair reordered it as v0.8
    appends)."""
    written = (FIELD / "v0.7-prepend-shared-dead.v4.save").read_text()
    rp._run(
        [rp._ip(), "netns", "exec", host_ns, rp.tool_path("iptables-restore", iptables_mode)],
        input=written,
        check=True,
    )
    cache_dead_a_and_b(tmp_path, shared=True)
    given = []
    if form == "mapping":
        given = ["--network", "mynet", "--container", ID_A, "--ip", "10.88.0.5/16",
                 "-p", "0.0.0.0:2202:22/tcp", "--ifname", "eth0"]  # fmt: skip
    done = run(["check", "--repair", "--netns", host_ns, "--family", "4", "--iptables",
                iptables_mode, "--cni-cache-dir", str(tmp_path), "-o", "json", *given])  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert [p["kind"] for p in doc["problems"]] == ["dead"] and not doc["repaired"]
    assert rp.nat_rules(rp.save(host_ns, 4, iptables_mode)) == rp.nat_rules(written)


@pytest.mark.netns
def test_repair_without_a_cache_does_not_guess_the_mark_bit(host_ns, tmp_path):
    """markMasqBit 5; a firewall script flushed SETMARK and MASQ. With no CNI cache
    (a DaemonSet missing its mount) --repair wrote them with the default bit 13: every
    packet other software marks so was masqueraded. Not written now, a warning says
    why; with the cache, bit 5 comes back."""
    ports = [{"hostPort": 7700, "containerPort": 77, "protocol": "tcp"}]
    conf = rp.plugin_conf("mynet", ["10.88.0.5/16"], ports, mark_masq_bit=5)
    rp.run_plugin("ADD", host_ns, "ctr1", conf, check=True)
    for chain in ("CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ"):
        rp.iptables(host_ns, ["-t", "nat", "-F", chain])
    base = ["check", "--repair", "--netns", host_ns, "--family", "4"]
    done = run([*base, "--cni-cache-dir", str(tmp_path / "none")])
    assert done.returncode == 1, done.stdout + done.stderr
    assert "no CNI cache says the masquerade mark bit" in done.stderr
    saved = rp.save(host_ns)
    assert "--set-xmark" not in saved and "-m mark" not in saved, saved
    # A live container: its namespace holds its address (one without it is being torn
    # down, and the repair makes the shared rules for no such container alone).
    pod = rp.container_netns()
    rp.hold_addresses(pod, ["10.88.0.5/16"])
    rp.write_cni_cache(tmp_path / "cni", "mynet", "ctr1", "eth0", conf, ports,
                       ["10.88.0.5/16"], netns=pod)  # fmt: skip
    fixed = run([*base, "--cni-cache-dir", str(tmp_path / "cni")])
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    saved = rp.save(host_ns)
    assert "--set-xmark 0x20/0x20" in saved and "--mark 0x20/0x20" in saved, saved
    for check in rp.run_check(host_ns, "ctr1", conf):
        assert check.returncode == 0, check.stderr


@pytest.mark.netns
@pytest.mark.parametrize("form", ["node", "mapping"])
def test_a_v07_chain_that_lost_a_rule_gets_it_back_in_its_own_shape(host_ns, tmp_path, form):
    """A v0.7 - v0.8.5 chain (hairpin marks on the pod's own address, /32) whose udp
    DNAT rule was deleted (by hand, a script): check said its plugin's own /32 marks
    were `extra-rules` ('does not match the container's config (an old address or
    port?)') and the subnet marks `missing-rules`, and --repair rewrote both marks in
    the current shape, as if the chain were another version's. Its marks show which
    version wrote it: the lost rule alone is missing, and the repair puts it back as
    that version wrote it, the rest of the chain as it was."""
    containers, _ = CASES["v0.7-prepend-hairpin"]
    saved = (FIELD / "v0.7-prepend-hairpin.v4.save").read_text()
    rp._run(
        [rp._ip(), "netns", "exec", host_ns, rp.tool_path("iptables-restore", "nft")],
        input=saved,
        check=True,
    )
    for cid, ip, ports in containers:
        mappings = [{"hostPort": h, "containerPort": c, "protocol": p} for h, c, p in ports]
        conf = rp.plugin_conf("mynet", [ip], mappings)
        rp.write_cni_cache(tmp_path, "mynet", cid, "eth0", conf, mappings, [ip])
    whole = rp.nat_rules(rp.save(host_ns, 4))
    lost = next(r for r in whole if r.endswith("-j DNAT --to-destination 10.88.0.5:53"))
    rp.iptables(host_ns, ["-t", "nat", *shlex.split(lost.replace("-A ", "-D ", 1))])
    common = ["--netns", host_ns, "--family", "4", "-o", "json", "--cni-cache-dir", str(tmp_path)]
    if form == "mapping":
        cid, ip, ports = containers[0]
        common += ["--network", "mynet", "--container", cid, "--ip", ip,
                   *(w for h, c, p in ports for w in ("-p", f"{h}:{c}/{p}"))]  # fmt: skip
    done = run(["check", *common])
    assert done.returncode == 1, done.stdout + done.stderr
    problems = json.loads(done.stdout)["problems"]
    assert [p["kind"] for p in problems] == ["missing-rules"], problems
    assert "10.88.0.0/16" not in problems[0]["detail"], problems[0]["detail"]
    done = run(["check", "--repair", *common])
    assert done.returncode == 0, done.stdout + done.stderr
    assert rp.nat_rules(rp.save(host_ns, 4)) == whole


@pytest.mark.netns
def test_a_v06_chain_that_lost_a_rule_gets_it_back_in_its_own_shape(host_ns, tmp_path):
    """A v0.6 chain (DNAT rules only, a port-less entry rule, its CNI-SN- twin) whose
    9090 DNAT rule was deleted: check called the whole current shape missing (the mark
    rules, SETMARK and MASQ, a multiport entry rule) and v0.6's own entry rule
    `extra-entry`, and --repair rewrote the container in the current shape. Its
    port-less entry and CNI-SN- twin show v0.6 wrote it: the lost rule alone is
    missing, and the repair puts it back as v0.6 wrote it."""
    saved = (FIELD / "v0.6-portless-entries.v4.save").read_text()
    rp._run(
        [rp._ip(), "netns", "exec", host_ns, rp.tool_path("iptables-restore", "nft")],
        input=saved,
        check=True,
    )
    containers = (
        (ID_A, "10.88.0.5/16", [(8080, 80)]),
        (ID_B, "10.88.0.6/16", [(8080, 80), (9090, 90)]),
    )
    for cid, ip, ports in containers:
        mappings = [{"hostPort": h, "containerPort": c, "protocol": "tcp"} for h, c in ports]
        conf = rp.plugin_conf("mynet", [ip], mappings)
        rp.write_cni_cache(tmp_path, "mynet", cid, "eth0", conf, mappings, [ip])
    common = ["--netns", host_ns, "--family", "4", "-o", "json", "--cni-cache-dir", str(tmp_path)]
    whole = rp.nat_rules(rp.save(host_ns, 4))
    before = {
        (p["kind"], p["container_id"])
        for p in json.loads(run(["check", *common]).stdout)["problems"]
    }
    lost = next(r for r in whole if r.endswith("-j DNAT --to-destination 10.88.0.6:90"))
    rp.iptables(host_ns, ["-t", "nat", *shlex.split(lost.replace("-A ", "-D ", 1))])
    done = run(["check", *common])
    assert done.returncode == 1, done.stdout + done.stderr
    problems = json.loads(done.stdout)["problems"]
    assert {(p["kind"], p["container_id"]) for p in problems} == before | {("missing-rules", ID_B)}
    [missing] = [p for p in problems if p["kind"] == "missing-rules"]
    assert "SETMARK" not in missing["detail"], missing["detail"]
    run(["check", "--repair", *common])
    assert rp.nat_rules(rp.save(host_ns, 4)) == whole
