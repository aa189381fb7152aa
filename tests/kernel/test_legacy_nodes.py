"""Nodes whose plugin runs legacy iptables, as they are in the field."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Dict, List

import json_schemas
import pytest
import realplugin as rp
from pmctl import assert_error, run

from portmapctl.iptables.chains import chain_name
from portmapctl.ops.node import APPLY_TRIES

PORTS = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]


def test_iptables_before_1_8_whose_legacy_tools_have_plain_names(host_ns, tmp_path):
    """iptables before 1.8 (CentOS 7, Ubuntu 18.04) has xtables-multi behind plain
    iptables/iptables-save/iptables-restore, and no iptables-legacy-* names: auto
    finds it legacy, and its plain tools are the ones to run (0.1: exit 3,
    "iptables-legacy-save not found"). Made here with the legacy binary under the old
    name, the 1.8 binaries hidden."""
    conf = rp.plugin_conf("mynet", ["10.88.0.5/16"], PORTS)
    rp.run_plugin("ADD", host_ns, "old1", conf, mode="legacy", check=True)
    rp.write_cni_cache(tmp_path / "cni", "mynet", "old1", "eth0", conf, PORTS, ["10.88.0.5/16"])
    old = tmp_path / "sbin"
    old.mkdir()
    shutil.copy2("/usr/sbin/xtables-legacy-multi", old / "xtables-multi")
    for tool in rp._TOOLS[4] + rp._TOOLS[6]:
        (old / tool).symlink_to("xtables-multi")
    hidden = sorted({os.path.realpath(f"/usr/sbin/iptables-{m}") for m in ("legacy", "nft")})
    env = {"PATH": f"{old}:/usr/bin:/bin"}

    def pm(*args: str):
        argv = [*args, "--netns", host_ns, "--cni-cache-dir", str(tmp_path / "cni"), "-o", "json"]
        return run(argv, env=env, hide=hidden)

    done = pm("list")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["mappings"]
    assert [(r["container_id"], r["host_port"], r["status"]) for r in rows] == [
        ("old1", 8080, ["ok"])
    ]
    done = pm("add", "--network", "mynet", "--container", "old2", "--ip", "10.88.0.6/16",
              "-p", "8081:80", "--family", "4")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert chain_name("mynet", "old2") in rp.save(host_ns, 4, "legacy")
    assert chain_name("mynet", "old2") not in rp.save(host_ns, 4, "nft")


def test_add_under_cron_sets_route_localnet_with_ip_only_in_sbin(host_ns, tmp_path):
    """A RHEL/CentOS node's cron job: PATH=/usr/bin:/bin, and `ip` only in /usr/sbin.
    add (and check --repair) must still find it for route_localnet, as the plugin's
    ADD sets it (0.1 ran `ip` from PATH alone: a warning, and localhost connections to
    the mapped port failed). A PATH without `ip` stands for that here."""
    ns = ["ip", "-n", host_ns]
    for args in (["link", "add", "cni0", "type", "bridge"],
                 ["addr", "add", "10.88.0.1/16", "dev", "cni0"],
                 ["link", "set", "cni0", "up"]):  # fmt: skip
        rp._run([*ns, *args], check=True)
    knob = "/proc/sys/net/ipv4/conf/cni0/route_localnet"
    nothing = tmp_path / "bin"
    nothing.mkdir()
    done = run(
        ["add", "--netns", host_ns, "--iptables", "legacy", "--network", "mynet",
         "--container", "cron1", "--ip", "10.88.0.5/16", "-p", "8080:80", "--family", "4"],
        env={"PATH": str(nothing)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "route_localnet" not in done.stderr
    assert rp._run(["ip", "netns", "exec", host_ns, "cat", knob]).stdout.strip() == "1"
    assert chain_name("mynet", "cron1") in rp.save(host_ns, 4, "legacy")


def test_check_on_a_node_without_the_other_flavour_says_so_plainly(host_ns, tmp_path):
    """A legacy node without iptables-nft (iptables before 1.8; RHEL 8 the other way
    round) cannot have a split brain: check says it did not look, and does not tell
    the operator to install the other iptables (0.1: 'install the iptables package
    (nft)', on every run)."""
    conf = rp.plugin_conf("mynet", ["10.88.0.5/16"], PORTS)
    rp.run_plugin("ADD", host_ns, "one1", conf, mode="legacy", check=True)
    rp.write_cni_cache(tmp_path / "cni", "mynet", "one1", "eth0", conf, PORTS, ["10.88.0.5/16"])
    done = run(
        ["check", "--netns", host_ns, "--iptables", "legacy", "--cni-cache-dir",
         str(tmp_path / "cni")],
        hide=[os.path.realpath("/usr/sbin/iptables-nft")],  # every -nft tool is this one
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == "not looking for split brain: no iptables-nft here\n"


def test_reading_legacy_where_there_is_no_legacy_table_creates_none(host_ns, tmp_path):
    """`--iptables legacy` on a node whose legacy nat tables do not exist (an nf_tables
    node): list, check, gc and flush-udp read them as empty and leave them absent.
    Before, each read ran iptables-legacy-save, which creates the empty legacy nat
    table (IPv4 and IPv6): a read changed the node, and iptables-nft then warns about
    legacy tables on every call. A write (add) creates it, as asked."""
    cache = str(tmp_path / "cni")

    def legacy_nat() -> list:
        out = []
        for name in ("ip_tables_names", "ip6_tables_names"):
            done = rp._run(["ip", "netns", "exec", host_ns, "cat", f"/proc/net/{name}"])
            out.append("nat" in done.stdout.split())
        return out

    assert legacy_nat() == [False, False]
    for command in (["list"], ["check"], ["gc", "--all", "--yes", "--min-age", "0"],
                    ["flush-udp", "--dry-run"]):  # fmt: skip
        done = run([*command, "--iptables", "legacy", "--netns", host_ns, "--cni-cache-dir", cache])
        assert done.returncode == 0, (command, done.stderr)
        assert legacy_nat() == [False, False], command
    done = run(["add", "--iptables", "legacy", "--netns", host_ns, "--network", "mynet",
                "--container", "c1", "--ip", "10.88.0.5/16", "-p", "8080:80",
                "--cni-cache-dir", cache])  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert legacy_nat()[0]
    assert chain_name("mynet", "c1") in rp.save(host_ns, 4, "legacy")


def test_check_without_net_raw_on_an_nf_tables_node_looks_for_split_brain_quietly(
    host_ns, tmp_path
):
    """A check run with CAP_NET_ADMIN alone (all an nf_tables node needs, as
    deploy/kubernetes says) on a node without legacy nat tables: the kernel's list of
    x_tables says there is nothing in legacy, so there is no split brain to look for
    and nothing to say. (Read without CAP_NET_RAW, iptables-legacy-save cannot run:
    asking it would only put a permission note on stderr at every run.)"""
    conf = rp.plugin_conf("mynet", ["10.88.0.5/16"], PORTS)
    rp.run_plugin("ADD", host_ns, "one1", conf, mode="nft", check=True)
    rp.write_cni_cache(tmp_path / "cni", "mynet", "one1", "eth0", conf, PORTS, ["10.88.0.5/16"])
    drop = "-net_raw"
    done = subprocess.run(
        ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}", sys.executable, "-m",
         "portmapctl", "check", "--netns", host_ns, "--iptables", "nft", "--cni-cache-dir",
         str(tmp_path / "cni")],
        capture_output=True, text=True, env=dict(os.environ, NO_COLOR="1"), timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "split brain" not in done.stderr, done.stderr


def test_gc_on_a_node_without_nft_removes_the_dead_iptables_chains(host_ns, tmp_path):
    """A node without the nftables package (CentOS 7, a slim DaemonSet image): gc
    under --backend auto failed every run, exit 3 'nft not found', and removed no dead
    chain (before; list and check went on with iptables). The plugin cannot have used
    nftables there (it runs nft): gc now removes the dead iptables chains, exit 0, and
    keeps the live one; where a cached config says "backend": "nftables" and the
    plugin's table is there (unreadable without nft) it stops, as check does (exit 3),
    nothing changed, and says how to work on the iptables containers alone."""
    cache = tmp_path / "cni"
    for cid, address, port in (("live1", "10.88.0.5/16", 8080), ("dead1", "10.88.0.6/16", 8081)):
        ports = [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]
        conf = rp.plugin_conf("mynet", [address], ports)
        rp.run_plugin("ADD", host_ns, cid, conf, mode="legacy", check=True)
        if cid == "live1":
            rp.write_cni_cache(cache, "mynet", cid, "eth0", conf, ports, [address])
    argv = ["gc", "--netns", host_ns, "--iptables", "legacy", "--family", "4", "--yes",
            "--min-age", "0", "--cni-cache-dir", str(cache)]  # fmt: skip
    no_nft = [os.path.realpath(shutil.which("nft") or "/usr/sbin/nft")]
    done = run(argv, hide=no_nft)
    assert done.returncode == 0, done.stderr
    saved = rp.save(host_ns, 4, "legacy")
    assert chain_name("mynet", "dead1") not in saved
    assert chain_name("mynet", "live1") in saved

    ports = [{"hostPort": 9090, "containerPort": 90, "protocol": "tcp"}]
    nft_conf = {**rp.plugin_conf("mynet", ["10.88.0.7/16"], ports), "backend": "nftables"}
    rp.write_cni_cache(cache, "mynet", "nft1", "eth0", nft_conf, ports, ["10.88.0.7/16"])
    rp.run_plugin("ADD", host_ns, "dead2", rp.plugin_conf("mynet", ["10.88.0.8/16"], ports),
                  mode="legacy", check=True)  # fmt: skip
    # (The plugin's table; without it nothing is in nftables to be read: gc goes on,
    # tests/interop/test_nft_field_audit.py.)
    for what in ("table", "chain"):
        subprocess.run(["ip", "netns", "exec", host_ns, "nft", "add", what, "ip", "cni_hostport",
                        *(["hostports"] if what == "chain" else [])], check=True)  # fmt: skip
    before = rp.nat_rules(rp.save(host_ns, 4, "legacy"))
    done = run(argv, hide=no_nft)
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip().splitlines() == [
        "portmapctl: error: nft not found: install nftables (1.0.1 or later) to work with"
        ' the plugin\'s nftables backend; 1 cached container (nft1) says "backend":'
        ' "nftables" (--backend iptables works on the iptables ones alone)'
    ]
    assert rp.nat_rules(rp.save(host_ns, 4, "legacy")) == before


def test_without_nft_a_cached_nftables_container_stops_check_before_any_repair(host_ns, tmp_path):
    """Without nft and without the plugin's cni_hostport table, the plugin's nftables
    tables are read as empty (fe0c4f8). A cached container whose config says
    "backend": "nftables" and whose rules are nowhere (not in iptables: no plugin that
    ignored the key) then came out as nft-missing-table/-rules with `check --repair`
    as the fix, and that repair rewrote the iptables containers' lost rules and only
    then stopped on nft: exit 3, its one line, nothing on stdout, the iptables change
    unreported. As where the table is there, check and --repair stop first (exit 3,
    saying how to work on the iptables containers alone), nothing changed. A zombie
    entry saying nftables (never repaired) stops nothing, as fe0c4f8 has it."""
    cache = tmp_path / "cni"
    ports = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
    conf = rp.plugin_conf("mynet", ["10.88.0.5/16"], ports)
    rp.run_plugin("ADD", host_ns, "live1", conf, mode="legacy", check=True)
    rp.write_cni_cache(cache, "mynet", "live1", "eth0", conf, ports, ["10.88.0.5/16"])
    chain = chain_name("mynet", "live1")
    dnat = [r for r in rp.nat_rules(rp.save(host_ns, 4, "legacy"))
            if r.startswith(f"-A {chain} ") and "-j DNAT" in r]  # fmt: skip
    rp.iptables(host_ns, ["-t", "nat", "-D", *dnat[0].split()[1:]], family=4, mode="legacy")
    nft_ports = [{"hostPort": 9090, "containerPort": 90, "protocol": "tcp"}]
    nft_conf = {**rp.plugin_conf("mynet", ["10.88.0.7/16"], nft_ports), "backend": "nftables"}
    no_nft = [os.path.realpath(shutil.which("nft") or "/usr/sbin/nft")]
    node = ["--netns", host_ns, "--iptables", "legacy", "--family", "4",
            "--cni-cache-dir", str(cache)]  # fmt: skip
    # A zombie entry saying nftables is never written: reported, it stops nothing.
    zombie_ports = [{"hostPort": 9191, "containerPort": 90, "protocol": "tcp"}]
    zombie = {**rp.plugin_conf("mynet", ["10.88.0.8/16"], zombie_ports), "backend": "nftables"}
    rp.write_cni_cache(cache, "mynet", "zomb1", "eth0", zombie, zombie_ports, ["10.88.0.8/16"],
                       netns=f"/run/netns/{host_ns}-gone")  # fmt: skip
    checked = run(["check", "-o", "json", *node], hide=no_nft)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    found = {(p["kind"], p["container_id"]) for p in json.loads(checked.stdout)["problems"]}
    assert found == {("missing-rules", "live1"), ("zombie", "zomb1")}, found
    rp.write_cni_cache(cache, "mynet", "nft1", "eth0", nft_conf, nft_ports, ["10.88.0.7/16"])
    before = rp.nat_rules(rp.save(host_ns, 4, "legacy"))
    for command in (["check"], ["check", "--repair"]):
        done = run([*command, *node], hide=no_nft)
        assert_error(done, 3, "nft not found", "(nft1)", "--backend iptables")
        assert rp.nat_rules(rp.save(host_ns, 4, "legacy")) == before, command
    # The iptables containers alone, as the line says.
    done = run(["check", "--repair", "--backend", "iptables", *node], hide=no_nft)
    assert done.returncode == 0, done.stdout + done.stderr
    assert dnat[0] in rp.nat_rules(rp.save(host_ns, 4, "legacy"))


def test_a_legacy_node_without_an_nf_tables_nat_table_runs_no_iptables_nft(host_ns, tmp_path):
    """list, check and gc on a legacy node look at the other flavour (split brain, the
    chains-elsewhere warnings, other tools' rules there); iptables-nft ran for it even
    where nf_tables holds no nat table at all, a process per family and per command.
    Its nat table is now asked of the kernel first (one netlink round trip): nothing of
    iptables-nft runs here, and the run's results are unchanged."""
    conf = rp.plugin_conf("mynet", ["10.88.0.5/16"], PORTS)
    rp.run_plugin("ADD", host_ns, "leg1", conf, mode="legacy", check=True)
    rp.write_cni_cache(tmp_path / "cni", "mynet", "leg1", "eth0", conf, PORTS, ["10.88.0.5/16"])
    shims = tmp_path / "bin"
    shims.mkdir()
    log = tmp_path / "ran"
    for tool in ("iptables-nft", "iptables-nft-save", "ip6tables-nft", "ip6tables-nft-save"):
        shim = shims / tool
        shim.write_text(f'#!/bin/sh\necho {tool} "$@" >> {log}\nexec /usr/sbin/{tool} "$@"\n')
        shim.chmod(0o755)
    env = {"PATH": f"{shims}:{os.environ['PATH']}"}
    node = ["--netns", host_ns, "--iptables", "legacy", "--cni-cache-dir", str(tmp_path / "cni")]
    for command in (["list"], ["check"], ["gc", "--yes", "--min-age", "0"]):
        done = run([*command, *node], env=env)
        assert done.returncode == 0, done.stdout + done.stderr
    assert not log.exists(), log.read_text()
    # Where nf_tables has a nat table, it is looked at as before.
    rp._run(
        ["ip", "netns", "exec", host_ns, "iptables-nft", "-t", "nat", "-N", "OTHER"], check=True
    )
    assert run(["list", *node], env=env).returncode == 0
    assert "iptables-nft" in log.read_text()


def test_a_dry_runs_transaction_applied_as_its_header_says_is_the_real_add(host_ns, tmp_path):
    """`add --dry-run` prints each family's text under the command that applies it. On
    a node whose plugin runs iptables-legacy while the plain `iptables` is nf_tables
    (Debian's default), that was `iptables-restore --noflush`: an operator applying the
    text so wrote the chain into iptables-nft, a split brain, and the real add then
    still had everything to do. Applied as the header now says, the text is the add."""
    conf = rp.plugin_conf("mynet", ["10.88.0.5/16", "fd00:88::5/64"], PORTS)
    rp.run_plugin("ADD", host_ns, "leg1", conf, mode="legacy", check=True)
    args = ["add", "--network", "mynet", "--container", "leg2", "--ip", "10.88.0.6/16",
            "--ip", "fd00:88::6/64", "-p", "8081:80", "--netns", host_ns,
            "--cni-cache-dir", str(tmp_path / "cni"), "--iptables", "legacy"]  # fmt: skip
    done = run([*args, "--dry-run"])
    assert done.returncode == 0, done.stderr
    parts = done.stdout.split("# IPv")[1:]
    assert [p.split(":", 1)[0] for p in parts] == ["4", "6"]
    for part in parts:
        header, text = part.split("\n", 1)
        command = header.split(": ", 1)[1].split()  # e.g. iptables-legacy-restore --noflush
        text = text.split("\nwould add", 1)[0] + "\n"
        subprocess.run(
            ["ip", "netns", "exec", host_ns, *command], input=text, text=True, check=True
        )
    chain = chain_name("mynet", "leg2")
    for family in (4, 6):
        assert chain in rp.save(host_ns, family, "legacy")
        assert "CNI-" not in rp.save(host_ns, family, "nft")
    done = run(args)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("unchanged:"), done.stdout


def _alternatives_apart(tmp_path) -> str:
    """A PATH folder where `iptables*` are the legacy tools and `ip6tables*` the nft
    ones: Debian's `update-alternatives --set iptables ...-legacy` switches iptables
    alone, ip6tables is an alternative of its own."""
    folder = tmp_path / "apart"
    folder.mkdir()
    for family, mode in ((4, "legacy"), (6, "nft")):
        for tool in rp._TOOLS[family]:
            (folder / tool).symlink_to(rp.tool_path(tool, mode))
    return str(folder)


def _apart_plugin(host_ns: str, apart: str, command: str, cid: str, conf: dict):
    """The real plugin run as a runtime on that node runs it: `iptables` and
    `ip6tables` found on its PATH, each family's alternative."""
    return rp._run(
        ["ip", "netns", "exec", host_ns, rp.PLUGIN],
        input=json.dumps(conf),
        env={"PATH": f"{apart}:{rp.SYSTEM_PATH}", "CNI_COMMAND": command,
             "CNI_CONTAINERID": cid, "CNI_NETNS": rp.container_netns(),
             "CNI_IFNAME": "eth0", "CNI_PATH": rp.CNI_PATH},
    )  # fmt: skip


def _apart_check(host_ns: str, cid: str, conf: dict) -> list:
    """The plugin's CHECK of each family in that family's flavour (Debian's 1.1.1 checks
    every address in every family it can run: one family at a time, realplugin.run_check)."""
    return [
        rp.run_plugin("CHECK", host_ns, cid, rp.narrow_conf(conf, family), mode=mode,
                      family=family).returncode
        for family, mode in ((4, "legacy"), (6, "nft"))
    ]  # fmt: skip


def _apart_node(host_ns: str, tmp_path) -> tuple:
    """A node whose alternatives differ (iptables legacy, ip6tables nft): the PATH
    folder, portmapctl's environment with it first, a CNI cache of the test's own, and
    the options that point portmapctl at the node and that cache."""
    apart = _alternatives_apart(tmp_path)
    cache = tmp_path / "cni"
    env = {"PATH": f"{apart}:{os.environ['PATH']}"}
    return apart, env, cache, ["--netns", host_ns, "--cni-cache-dir", str(cache)]


def _added_while_iptables_was_nft(host_ns: str, cache) -> None:
    """before1 (IPv4 only, cached): its chain in the nf_tables IPv4 table, as the plugin
    made it while `iptables` still pointed there."""
    old = rp.plugin_conf("mynet", ["10.88.0.8/16"], PORTS)
    rp.run_plugin("ADD", host_ns, "before1", old, mode="nft", check=True)
    rp.write_cni_cache(cache, "mynet", "before1", "eth0", old, PORTS, ["10.88.0.8/16"])


def test_auto_follows_ip6tables_for_ipv6_where_the_alternatives_differ(host_ns, tmp_path):
    """The plugin runs `iptables` for IPv4 and `ip6tables` for IPv6: where their
    alternatives differ, its IPv4 rules are in the legacy tables and its IPv6 ones in
    nf_tables. `--iptables auto` took `iptables`' flavour for both (check of a healthy
    node reported the plugin's IPv6 chains missing on every run, and add wrote IPv6
    into the legacy tables, where the plugin's DEL never looks), then refused both
    families, exit 3 (a cron `gc --yes` on such a node failed every run). Now each
    family is read and written in its own tool's flavour: check is healthy, a lost
    IPv6 rule is repaired in nf_tables, add writes each family where the plugin's
    CHECK and DEL find it, gc removes a dead container's chains from both."""
    apart, env, cache, node = _apart_node(host_ns, tmp_path)
    ips = ["10.88.0.5/16", "fd00::5/64"]
    conf = rp.plugin_conf("mynet", ips, PORTS)
    done = _apart_plugin(host_ns, apart, "ADD", "ds1", conf)
    assert done.returncode == 0, done.stderr
    rp.write_cni_cache(cache, "mynet", "ds1", "eth0", conf, PORTS, ips)
    chain = chain_name("mynet", "ds1")
    assert chain in rp.save(host_ns, 4, "legacy") and chain in rp.save(host_ns, 6, "nft")

    def tables() -> list:
        return [rp.strip_save_comments(rp.save(host_ns, f, mode))
                for f in (4, 6) for mode in ("nft", "legacy")]  # fmt: skip

    for family in ("4", "6", "all"):
        done = run(["check", "-o", "json", *node, "--family", family], env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["problems"] == []
    listed = run(["list", "-o", "json", *node], env=env)
    assert listed.returncode == 0, listed.stderr
    rows = {(m["family"], tuple(m["status"])) for m in json.loads(listed.stdout)["mappings"]}
    assert rows == {(4, ("ok",)), (6, ("ok",))}

    # A lost IPv6 rule: reported, and put back where the plugin's CHECK looks.
    before = tables()
    dnat = [line for line in rp.save(host_ns, 6, "nft").splitlines()
            if line.startswith(f"-A {chain} ") and "-j DNAT" in line]  # fmt: skip
    rp.iptables(host_ns, ["-t", "nat", "-D", *dnat[0].split()[1:]], family=6, mode="nft")
    done = run(["check", "-o", "json", *node], env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    found = [(p["kind"], p["family"]) for p in json.loads(done.stdout)["problems"]]
    assert found == [("missing-rules", 6)]
    done = run(["check", "--repair", *node], env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert tables() == before
    assert _apart_check(host_ns, "ds1", conf) == [0, 0]

    # add: each family in its own flavour, as the plugin's ADD would.
    ips2 = ["10.88.0.6/16", "fd00::6/64"]
    ports2 = [{"hostPort": 8081, "containerPort": 80, "protocol": "tcp"}]
    conf2 = rp.plugin_conf("mynet", ips2, ports2)
    added = run(["add", *node, "--network", "mynet", "--container", "ds2", "--ip", ips2[0],
                 "--ip", ips2[1], "-p", "8081:80"], env=env)  # fmt: skip
    assert added.returncode == 0, added.stdout + added.stderr
    chain2 = chain_name("mynet", "ds2")
    assert chain2 in rp.save(host_ns, 4, "legacy") and chain2 in rp.save(host_ns, 6, "nft")
    assert chain2 not in rp.save(host_ns, 4, "nft") + rp.save(host_ns, 6, "legacy")
    assert _apart_check(host_ns, "ds2", conf2) == [0, 0]
    assert _apart_plugin(host_ns, apart, "DEL", "ds2", conf2).returncode == 0
    saved = "".join(rp.save(host_ns, f, mode) for f in (4, 6) for mode in ("nft", "legacy"))
    assert chain2 not in saved

    # gc: a dead container's chains go from both flavours; the live one stays.
    ports3 = [{"hostPort": 8082, "containerPort": 80, "protocol": "tcp"}]
    dead = rp.plugin_conf("mynet", ["10.88.0.7/16", "fd00::7/64"], ports3)
    assert _apart_plugin(host_ns, apart, "ADD", "dead1", dead).returncode == 0
    done = run(["gc", "--yes", "--min-age", "0", *node], env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert tables() == before
    assert run(["check", *node], env=env).returncode == 0


def test_where_the_alternatives_differ_each_family_is_guarded_against_its_own_other_flavour(
    host_ns, tmp_path
):
    """On a node whose iptables is legacy and ip6tables nft, a container added while
    `iptables` still pointed at nf_tables has its IPv4 chain there. check says where it
    is, and check --repair makes no copy of it in the legacy tables (the split-brain
    guard, held per family: IPv4's other flavour is nft, IPv6's legacy); a copy of
    another container's IPv6 chain in the legacy ip6tables is a split brain."""
    _apart, env, cache, node = _apart_node(host_ns, tmp_path)
    _added_while_iptables_was_nft(host_ns, cache)
    checked = run(["check", "-o", "json", *node], env=env)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    problems = json.loads(checked.stdout)["problems"]
    assert {(p["kind"], p["family"]) for p in problems} >= {("missing-chain", 4)}
    assert any("nft tables" in p["detail"] for p in problems), problems
    before = [rp.save(host_ns, f, mode) for f in (4, 6) for mode in ("nft", "legacy")]
    repaired = run(["check", "--repair", *node], env=env)
    assert repaired.returncode == 1, repaired.stdout + repaired.stderr
    assert chain_name("mynet", "before1") not in rp.save(host_ns, 4, "legacy")
    after = [rp.save(host_ns, f, mode) for f in (4, 6) for mode in ("nft", "legacy")]
    assert [rp.strip_save_comments(t) for t in after] == [rp.strip_save_comments(t) for t in before]
    # list and gc say where the plugin's state is that they do not read (IPv4's other
    # flavour), and how to read that family there.
    for args in (["list"], ["gc", "--dry-run"]):
        done = run([*args, *node], env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert (
            "no portmap chains in the iptables-legacy tables read, but the iptables-nft ones"
            " hold CNI-HOSTPORT-DNAT: if the plugin runs iptables-nft, run with --family 4"
            " --iptables nft"
        ) in done.stderr
    added = run(["add", *node, "--network", "mynet", "--container", "before1",
                 "--ip", "10.88.0.8/16", "-p", "8080:80"], env=env)  # fmt: skip
    assert_error(added, 3, "is in the nft tables, not in the legacy ones add writes")

    six = rp.plugin_conf("mynet", ["fd00::9/64"], PORTS)
    for mode in ("nft", "legacy"):  # the plugin's (ip6tables: nft), and a copy in legacy
        rp.run_plugin("ADD", host_ns, "six1", six, mode=mode, check=True)
    rp.write_cni_cache(cache, "mynet", "six1", "eth0", six, PORTS, ["fd00::9/64"])
    checked = run(["check", "-o", "json", "--family", "6", *node], env=env)
    problems = json.loads(checked.stdout)["problems"]
    brains = [p for p in problems if p["kind"] == "split-brain"]
    assert [p["family"] for p in brains] == [6], problems
    assert "in both the nft and the legacy tables" in brains[0]["detail"]
    # Now the plugin's chains are here too: each family's chains in its other flavour
    # get a warning of their own.
    listed = run(["list", *node], env=env)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    warned = [line for line in listed.stderr.splitlines() if "tables also hold" in line]
    assert len(warned) == 2, listed.stderr
    assert "iptables-nft tables also hold 1" in warned[0] and "(IPv4 CNI-DN-" in warned[0]
    assert "iptables-legacy tables also hold 1" in warned[1] and "(IPv6 CNI-DN-" in warned[1]


def test_where_the_alternatives_differ_a_chain_left_in_the_other_flavour_names_both(
    host_ns, tmp_path
):
    """The why of a chain --repair leaves in the other flavour names the flavour the
    repair writes and the one the plugin may run. Where the alternatives differ the
    backend has no one flavour (each family its own), and the text said "a copy in the
    None tables would make a split brain ... if it runs iptables-None" for every such
    problem: the top-level chains and the container's chain, in the table and in JSON.
    Each family's is the other of the flavour that holds the chain."""
    _apart, env, cache, node = _apart_node(host_ns, tmp_path)
    _added_while_iptables_was_nft(host_ns, cache)
    checked = run(["check", "-o", "json", *node], env=env)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    left = [p for p in json.loads(checked.stdout)["problems"] if "--repair leaves it" in p["why"]]
    assert {p["kind"] for p in left} == {"missing-toplevel", "missing-chain"}, left
    for problem in left:
        assert "a copy in the legacy tables would make a split brain" in problem["why"], problem
        assert "if it runs iptables-legacy, first remove" in problem["why"], problem
    shown = run(["check", *node], env=env)
    assert "None" not in shown.stdout + shown.stderr, shown.stdout


def test_where_the_alternatives_differ_another_tools_rule_in_a_familys_other_flavour_contests(
    host_ns, tmp_path
):
    """iptables legacy, ip6tables nft: a DNAT of another tool (dockerd with its own
    iptables) in the nf_tables IPv4 nat table takes the plugin's IPv4 port, both hooked
    at -100. list and check said nothing of it on such a node (the other flavour's
    rules were read for one-flavour backends only); now IPv4's other flavour (nft) is
    read: the row is contested, check names `iptables-nft: -A DOCKER ...`, add warns."""
    apart, env, cache, node = _apart_node(host_ns, tmp_path)
    ips = ["10.88.0.5/16", "fd00::5/64"]
    conf = rp.plugin_conf("mynet", ips, PORTS)
    assert _apart_plugin(host_ns, apart, "ADD", "ds1", conf).returncode == 0
    rp.write_cni_cache(cache, "mynet", "ds1", "eth0", conf, PORTS, ips)
    for rule in (["-N", "DOCKER"], ["-A", "PREROUTING", "-j", "DOCKER"],
                 ["-A", "DOCKER", "-p", "tcp", "--dport", "8080", "-j", "DNAT",
                  "--to-destination", "172.17.0.2:80"]):  # fmt: skip
        rp.iptables(host_ns, ["-t", "nat", *rule], family=4, mode="nft")
    listed = run(["list", "-o", "json", *node], env=env)
    assert listed.returncode == 0, listed.stderr
    rows = {(m["family"], tuple(m["status"])) for m in json.loads(listed.stdout)["mappings"]}
    assert rows == {(4, ("contested",)), (6, ("ok",))}
    checked = run(["check", "-o", "json", *node], env=env)
    problems = json.loads(checked.stdout)["problems"]
    assert [(p["kind"], p["family"]) for p in problems] == [("contested", 4)], problems
    assert "iptables-nft: -A DOCKER -p tcp" in problems[0]["detail"]
    added = run(["add", "--dry-run", *node, "--network", "mynet", "--container", "two1",
                 "--ip", "10.88.0.6/16", "-p", "8080:80"], env=env)  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "IPv4 tcp/8080 is taken by a rule in the iptables-nft nat table too" in added.stderr


def test_where_the_alternatives_differ_a_rival_chain_in_a_familys_other_flavour_names_its_family(
    host_ns, tmp_path
):
    """iptables legacy, ip6tables nft: a gone container's chain left in the nf_tables
    IPv4 table maps the port a live container maps in legacy. check's `contested` fix
    removes it with gc in that flavour: `--family 4 --iptables nft` (`--iptables nft`
    alone would read and write IPv6 in the wrong flavour on this node)."""
    apart, env, cache, node = _apart_node(host_ns, tmp_path)
    old = rp.plugin_conf("mynet", ["10.88.0.8/16"], PORTS)
    rp.run_plugin("ADD", host_ns, "old1", old, mode="nft", check=True)  # not cached: gone
    ips = ["10.88.0.5/16", "fd00::5/64"]
    conf = rp.plugin_conf("mynet", ips, PORTS)
    assert _apart_plugin(host_ns, apart, "ADD", "new1", conf).returncode == 0
    rp.write_cni_cache(cache, "mynet", "new1", "eth0", conf, PORTS, ips)
    checked = run(["check", "-o", "json", *node], env=env)
    contested = [p for p in json.loads(checked.stdout)["problems"] if p["kind"] == "contested"]
    assert [p["family"] for p in contested] == [4], checked.stdout
    assert "iptables-nft" in contested[0]["detail"]
    assert "portmapctl gc --family 4 --iptables nft" in contested[0]["why"] + str(
        contested[0]["fix"]
    )


def test_a_stale_entry_rule_legacy_cannot_delete_by_its_text_is_named_and_the_rest_removed(
    host_ns, tmp_path
):
    """The plugin's conditionsV4 put `-m recent --name x --rcheck` into gone1's entry
    rule; on legacy iptables the rule's saved text does not round-trip through `-D`
    (iptables-legacy-restore: "line N failed": No chain/target/match by that name).
    gc's one transaction for IPv4 then failed whole on every try, every run: exit 1,
    and no stale chain of that family was ever removed again (gone2's stayed). SPEC §5:
    one bad record never stops the node's work. Now the refused chain is found (the
    removal halved until it stands alone) and named, on stderr (exit 1: gc could not
    apply it) and in the JSON (`refused`, with `why`); everything else is removed."""
    recent = ["-m", "recent", "--name", "x", "--rcheck"]
    for cid, ip, port, conditions in (
        ("gone1", "10.88.0.5/16", 8080, recent),
        ("gone2", "10.88.0.6/16", 8081, None),  # (UDP: its flow goes with its chain)
        ("gone3", "10.88.0.7/16", 8082, None),
        ("other1", "10.88.0.9/16", 8083, None),
    ):
        proto = "udp" if cid == "gone2" else "tcp"
        conf = rp.plugin_conf("mynet", [ip], [{**PORTS[0], "hostPort": port, "protocol": proto}],
                              conditions_v4=conditions)  # fmt: skip
        rp.run_plugin("ADD", host_ns, cid, conf, mode="legacy", check=True)
    assert "-m recent --rcheck --name x" in rp.save(host_ns, 4, "legacy")
    # A flow to gone2's UDP port, DNATed to it: it must not outlive the chain.
    subprocess.run(["ip", "netns", "exec", host_ns, "conntrack", "-I", "-p", "udp", "-s",
                    "127.0.0.1", "-d", "127.0.0.1", "--sport", "40001", "--dport", "8081",
                    "--reply-src", "10.88.0.6", "--reply-dst", "127.0.0.1", "--reply-port-src",
                    "80", "--reply-port-dst", "40001", "-t", "100"], check=True)  # fmt: skip
    (tmp_path / "cni" / "results").mkdir(parents=True)
    argv = ["gc", "--netns", host_ns, "--iptables", "legacy", "--cni-cache-dir",
            str(tmp_path / "cni"), "--keep", "other1", "--min-age", "0", "--yes"]  # fmt: skip
    env = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run")}
    done = run([*argv, "-o", "json"], env=env)
    assert done.returncode == 1, done.stderr
    saved = rp.save(host_ns, 4, "legacy")
    assert chain_name("mynet", "gone1") in saved
    for cid in ("gone2", "gone3"):
        assert chain_name("mynet", cid) not in saved
    assert chain_name("mynet", "other1") in saved
    document = json.loads(done.stdout)
    json_schemas.validated("gc", document)
    assert sorted(c["container_id"] for c in document["removed"]) == ["gone2", "gone3"]
    [refused] = document["refused"]
    assert (refused["container_id"], refused["chain"]) == ("gone1", chain_name("mynet", "gone1"))
    assert "refused" in refused["why"]
    lines = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and chain_name("mynet", "gone1") in lines[0], done.stderr
    assert "gone1" in lines[0] and "Traceback" not in done.stderr
    assert document["conntrack_deleted"] == 1
    flows = subprocess.run(["ip", "netns", "exec", host_ns, "conntrack", "-L", "-p", "udp"],
                           capture_output=True, text=True).stdout  # fmt: skip
    assert "dport=8081" not in flows, flows

    # The table: a row of its own; the next run (gone1's sighting forgotten) only waits.
    again = run([*argv[:-3], "--min-age", "1h", "--yes"], env=env)
    assert again.returncode == 0, again.stderr


def test_a_stale_chain_iptables_refuses_is_named_by_every_run_past_min_age(host_ns, tmp_path):
    """The chain above, under a real --min-age: gc forgets the sightings of what it is
    about to remove before the transaction goes in, and never wrote back those of the
    chain iptables then refused, so it waited --min-age afresh: every other run said
    exit 0 with the chain "pending", and a cron job's alarm flapped. It stays on file:
    each run past --min-age names it (exit 1)."""
    recent = ["-m", "recent", "--name", "x", "--rcheck"]
    for cid, ip, port, conditions in (
        ("gone1", "10.88.0.5/16", 8080, recent),
        ("gone2", "10.88.0.6/16", 8081, None),
        ("other1", "10.88.0.9/16", 8083, None),
    ):
        conf = rp.plugin_conf("mynet", [ip], [{**PORTS[0], "hostPort": port}],
                              conditions_v4=conditions)  # fmt: skip
        rp.run_plugin("ADD", host_ns, cid, conf, mode="legacy", check=True)
    (tmp_path / "cni" / "results").mkdir(parents=True)
    argv = ["gc", "--netns", host_ns, "--iptables", "legacy", "--cni-cache-dir",
            str(tmp_path / "cni"), "--keep", "other1", "--min-age", "2", "--yes"]  # fmt: skip
    env = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run")}
    first = run(argv, env=env)  # (sighted)
    assert first.returncode == 0, first.stderr
    time.sleep(3)  # (past --min-age)
    for _ in range(2):
        done = run(argv, env=env)
        assert done.returncode == 1, (done.stdout, done.stderr)
        assert chain_name("mynet", "gone1") in done.stderr, done.stderr
    assert chain_name("mynet", "gone2") not in rp.save(host_ns, 4, "legacy")


@pytest.mark.parametrize("fault", ["busy-lock", "hung", "hung-after-commit"])
def test_a_busy_lock_or_hung_tool_while_a_refused_removal_is_halved_is_no_refusal(
    host_ns, tmp_path, fault
):
    """gc halves a removal iptables refused whole (gone1's `-m recent` entry rule, as in
    the test above) to find the chain at fault. When one of those tries met a busy
    xtables lock (another iptables held it longer than the wait) or a tool that hung
    (killed at PORTMAPCTL_IPTABLES_TIMEOUT), the halving stopped, and every chain not
    removed by then was reported "refused by iptables ... (tried alone ...)", exit 1:
    gone3, which iptables never refused (it was never tried alone), named as refused,
    and a hung tool (SPEC §4: exit 3, as a hung tool anywhere else in gc) said exit 1.
    A try whose tool hung after its commit went in unreported: its chain's UDP flow
    kept the dead DNAT. Now the line is the lock's (exit 1) or the hung tool's (exit 3),
    the chains left are named as not removed, and what went in is flushed.

    The fault is real: a private xtables lock (XTABLES_LOCKFILE) taken by `flock`, or a
    restore that sleeps past the timeout, when the transaction removes gone3 alone."""
    gone = _halved_node(host_ns)
    lock, held = tmp_path / "xtables.lock", tmp_path / "held"
    # The transaction that removes gone3's chain alone (gone2's goes in alone before it,
    # gone3's and gone1's are refused together: the halving's order by chain name).
    alone = (f'grep -q -- "-X {gone["gone3"]}" "$IN" && ! grep -q -e {gone["gone1"]}'
             f' -e {gone["gone2"]} "$IN"')  # fmt: skip
    real = '/usr/sbin/iptables-legacy-restore "$@" < "$IN"'
    body = {
        # Held until the test ends (its fds away from ours: the restore's pipes close).
        "busy-lock": f'if {alone} && [ ! -e {held} ]; then setsid flock {lock} -c "echo \\$\\$ > {held}.pid;'
        f' touch {held}; exec sleep 60" < /dev/null > /dev/null 2>&1 & while [ ! -e {held} ]; do sleep 0.05;'
        f" done; fi\nexec {real}",
        "hung": f"if {alone}; then exec sleep 60; fi\nexec {real}",
        "hung-after-commit": f"{real} || exit $?\nif {alone}; then exec sleep 60; fi",
    }[fault]
    folder = tmp_path / "wrap"
    folder.mkdir()
    script = folder / "iptables-legacy-restore"
    script.write_text(f'#!/bin/bash\nIN={tmp_path}/in.$$\ncat > "$IN"\n{body}\n')
    script.chmod(0o755)
    (tmp_path / "cni" / "results").mkdir(parents=True)
    argv = ["gc", "--netns", host_ns, "--iptables", "legacy", "--family", "4", "--cni-cache-dir",
            str(tmp_path / "cni"), "--keep", "other1", "--min-age", "0", "--yes"]  # fmt: skip
    env = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run"), "PATH": f"{folder}:{os.environ['PATH']}",
           "XTABLES_LOCKFILE": str(lock), "PORTMAPCTL_XTABLES_WAIT": "1",
           "PORTMAPCTL_IPTABLES_TIMEOUT": "3"}  # fmt: skip
    try:
        done = run(argv, env=env)
    finally:
        if (tmp_path / "held.pid").exists():  # (the lock's holder: this test's own)
            os.kill(int((tmp_path / "held.pid").read_text()), signal.SIGTERM)
    saved = rp.save(host_ns, 4, "legacy")
    assert gone["gone2"] not in saved and chain_name("mynet", "other1") in saved
    assert gone["gone1"] in saved
    assert "Traceback" not in done.stderr
    [line] = [line for line in done.stderr.splitlines() if "error" in line]
    assert "refused the removal of" not in line and "tried alone" not in line, line
    flows = subprocess.run(["ip", "netns", "exec", host_ns, "conntrack", "-L", "-p", "udp"],
                           capture_output=True, text=True).stdout  # fmt: skip
    if fault == "busy-lock":
        assert done.returncode == 1, done.stderr
        assert "xtables lock" in line, line
    else:
        assert done.returncode == 3, done.stderr
        assert "did not finish within 3 s" in line, line
    if fault == "hung-after-commit":
        assert gone["gone3"] not in saved
        assert "dport=8082" not in flows, flows  # (its chain went: its flow with it)
    else:
        assert gone["gone3"] in saved
        assert gone["gone3"] in line, line  # named: not removed
        assert "dport=8082" in flows, flows


@pytest.mark.parametrize("fault", ["gone", "unreadable"])
def test_a_cache_lost_after_a_refused_removal_was_halved_still_reports_what_went_in(
    host_ns, tmp_path, fault
):
    """gc halves a removal iptables refused whole (gone1's `-m recent` entry rule, as
    above), and once the groups went in reads the table and the CNI cache again to plan
    what is left. A cache directory gone by then (the runtime's, removed or remounted),
    or one that could not be read (here: gc without CAP_DAC_OVERRIDE, results/ made
    mode 000), ended gc with a bare line, exit 3 ("the CNI cache ... disappeared while
    gc ran: nothing removed from this family"): gone2's and gone3's chains were gone,
    yet no table or JSON said so, gone3's UDP flow kept its dead DNAT, and gone1's
    sighting was not written back. Now it ends as every other late failure: the
    document of what went in, the family's one line (the cache's error, what was
    removed, gone1 refused), exit 3, the flow flushed, the sightings saved.

    The fault is real: the last try of gone1 alone (iptables-legacy-restore, wrapped)
    removes or locks the cache after iptables refused it."""
    gone = _halved_node(host_ns)
    cache = tmp_path / "cni"
    rp.write_cni_cache(cache, "other", "live1", "eth0",
                       rp.plugin_conf("other", ["10.89.0.5/16"], PORTS), PORTS,
                       ["10.89.0.5/16"])  # fmt: skip
    lose = {"gone": f"rm -rf {cache / 'results'}", "unreadable": f"chmod 000 {cache / 'results'}"}
    # gone1's removal alone, refused on each of its APPLY_TRIES tries: the last one
    # loses the cache, right before gc reads the table and the cache after the groups.
    folder = _after_restore_alone(tmp_path, gone, "gone1", APPLY_TRIES, lose[fault])
    run_dir = tmp_path / "run"
    argv = ["gc", "--netns", host_ns, "--iptables", "legacy", "--family", "4", "--cni-cache-dir",
            str(cache), "--keep", "other1", "--min-age", "0", "--yes", "-o", "json"]  # fmt: skip
    env = {"PORTMAPCTL_RUN_DIR": str(run_dir), "PATH": f"{folder}:{os.environ['PATH']}"}
    caps = ("dac_override", "dac_read_search") if fault == "unreadable" else ()
    try:
        done = run(argv, env=env, without_caps=caps)
    finally:
        if (cache / "results").exists():
            (cache / "results").chmod(0o700)  # (or pytest, without capabilities, cannot clean up)
    assert_error(done, 3, str(cache / "results"), "2 removed", gone["gone1"], after_work=True)
    assert "nothing removed" not in done.stderr, done.stderr
    saved = rp.save(host_ns, 4, "legacy")
    assert gone["gone2"] not in saved and gone["gone3"] not in saved and gone["gone1"] in saved
    document = json.loads(done.stdout)
    json_schemas.validated("gc", document)
    assert sorted(c["container_id"] for c in document["removed"]) == ["gone2", "gone3"]
    assert [r["container_id"] for r in document["refused"]] == ["gone1"]
    assert document["conntrack_deleted"] == 1
    flows = subprocess.run(["ip", "netns", "exec", host_ns, "conntrack", "-L", "-p", "udp"],
                           capture_output=True, text=True).stdout  # fmt: skip
    assert "dport=8082" not in flows, flows
    # gone1's sighting, forgotten before the first removal, is written back.
    state = (run_dir / "gc-state.json").read_text()
    assert gone["gone1"] in state and gone["gone2"] not in state, state


def test_a_cache_emptied_between_the_groups_of_a_halving_is_no_bad_input(host_ns, tmp_path):
    """The halving above plans each group from a fresh read of the table and the CNI
    cache. A cache emptied between two groups (the node's last container removed, gc
    judging by the cache alone) made planning the next group refuse as bad input
    ("the CNI cache at ... is empty ...: nothing says which containers are live"),
    which the halving's tries did not catch: gc ended with that bare line, exit 2
    ("bad input, nothing changed"), though gone2's chain had gone in alone, unreported
    and unrecorded. Now it stops the halving as a failed read does (exit 3), what went
    in reported, the chains left named as not removed."""
    gone = _halved_node(host_ns)
    cache = tmp_path / "cni"
    conf = rp.plugin_conf("mynet", ["10.88.0.9/16"], [{**PORTS[0], "hostPort": 8083}])
    rp.write_cni_cache(cache, "mynet", "other1", "eth0", conf, conf["runtimeConfig"]["portMappings"],
                       ["10.88.0.9/16"])  # fmt: skip
    # gone2's removal alone, the first group (it goes in): then the cache is emptied.
    folder = _after_restore_alone(tmp_path, gone, "gone2", 1, f"rm -f {cache}/results/*")
    argv = ["gc", "--netns", host_ns, "--iptables", "legacy", "--family", "4", "--cni-cache-dir",
            str(cache), "--min-age", "0", "--yes", "-o", "json"]  # fmt: skip
    env = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run"), "PATH": f"{folder}:{os.environ['PATH']}"}
    done = run(argv, env=env)
    assert_error(done, 3, "is empty", "1 removed", gone["gone3"], after_work=True)
    saved = rp.save(host_ns, 4, "legacy")
    assert gone["gone2"] not in saved and gone["gone3"] in saved and gone["gone1"] in saved
    document = json.loads(done.stdout)
    assert [c["container_id"] for c in document["removed"]] == ["gone2"]


def test_a_cache_emptied_before_the_first_group_of_a_halving_is_bad_input(host_ns, tmp_path):
    """The same cache, emptied once the removal of all three was refused whole and before
    any group went in: nothing changed, so it is the bad input it is (exit 2, one line,
    no document), as every other run that meets an empty cache says; ae44933 made it
    exit 3, a failure after work (found by h230's review)."""
    cache, folder = _emptied_after_whole_tries(host_ns, tmp_path, six1=False)
    before = rp.save(host_ns, 4, "legacy")
    argv = ["gc", "--netns", host_ns, "--iptables", "legacy", "--family", "4", "--cni-cache-dir",
            str(cache), "--min-age", "0", "--yes", "-o", "json"]  # fmt: skip
    env = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run"), "PATH": f"{folder}:{os.environ['PATH']}"}
    done = run(argv, env=env)
    assert (tmp_path / "whole").read_text().count("x") == WHOLE_TRIES  # (the halving's turn)
    assert_error(done, 2, "is empty")
    assert _rules_of(rp.save(host_ns, 4, "legacy")) == _rules_of(before)


def test_a_cache_emptied_before_the_first_group_of_a_halving_keeps_the_sightings(host_ns, tmp_path):
    """The run before saw gone1..3 (--min-age 2: pending); past it, their removal
    refused whole, the cache emptied before any group: exit 2, "nothing changed", yet
    the state file had lost their sightings (forgotten before the first try, written
    back only by the save that the bare bad input skipped; before f9ecd21, exit 3, they
    were): each then waited --min-age afresh. Now written back, then the bad input."""
    _sightings_kept_past_an_emptied_cache(host_ns, tmp_path, WHOLE_TRIES)  # (the halving's turn)


def test_a_cache_emptied_before_the_first_group_after_another_family_went_in_says_so(
    host_ns, tmp_path
):
    """The same, with six1 (IPv6, stale) removed ahead of IPv4: the cache emptied before
    the first group of IPv4's halving is then a failure after work, as f9ecd21 meant
    (exit 3, six1's removal said), not the bad input alone. Its Settled was built with
    one argument too many: "internal error" (a TypeError), six1's removal unsaid."""
    cache, folder = _emptied_after_whole_tries(host_ns, tmp_path, six1=True)
    before = rp.save(host_ns, 4, "legacy")
    argv = ["gc", "--netns", host_ns, "--iptables", "legacy", "--cni-cache-dir", str(cache),
            "--min-age", "0", "--yes", "-o", "json"]  # fmt: skip
    env = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run"), "PATH": f"{folder}:{os.environ['PATH']}"}
    done = run(argv, env=env)
    assert (tmp_path / "whole").read_text().count("x") == WHOLE_TRIES  # (the halving's turn)
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert_error(done, 3, "is empty", "IPv6 was applied ahead of it: 1 chain removed",
                 after_work=True)  # fmt: skip
    assert chain_name("mynet", "six1") not in rp.save(host_ns, 6, "legacy")
    assert _rules_of(rp.save(host_ns, 4, "legacy")) == _rules_of(before)
    assert [c["container_id"] for c in json.loads(done.stdout)["removed"]] == ["six1"]


def test_a_cache_emptied_between_whole_tries_after_another_family_went_in_says_so(
    host_ns, tmp_path
):
    """six1 (IPv6) removed ahead of IPv4, whose whole removal was refused once; the
    cache emptied before the re-plan of its next try (converge_family reads it again):
    a failure after work (exit 3, six1's removal said, its flows flushed), as when
    the cache is emptied before the halving's first group. It escaped bare: exit 2,
    "nothing changed", six1's removal unsaid and no sighting saved."""
    cache, folder = _emptied_after_whole_tries(host_ns, tmp_path, six1=True, tries=1)
    before = rp.save(host_ns, 4, "legacy")
    argv = ["gc", "--netns", host_ns, "--iptables", "legacy", "--cni-cache-dir", str(cache),
            "--min-age", "0", "--yes", "-o", "json"]  # fmt: skip
    env = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run"), "PATH": f"{folder}:{os.environ['PATH']}"}
    done = run(argv, env=env)
    assert (tmp_path / "whole").read_text().count("x") == 1
    assert chain_name("mynet", "six1") not in rp.save(host_ns, 6, "legacy")
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert_error(done, 3, "is empty", "IPv6 was applied ahead of it: 1 chain removed",
                 after_work=True)  # fmt: skip
    assert _rules_of(rp.save(host_ns, 4, "legacy")) == _rules_of(before)
    assert [c["container_id"] for c in json.loads(done.stdout)["removed"]] == ["six1"]


def test_a_cache_emptied_between_whole_tries_keeps_the_sightings(host_ns, tmp_path):
    """As ..._before_the_first_group_of_a_halving_keeps_the_sightings, the cache
    emptied before the re-plan of the second whole try instead: exit 2, and the
    sightings of gone1..3 as they were (lost: each waited --min-age afresh)."""
    _sightings_kept_past_an_emptied_cache(host_ns, tmp_path, 1)


def test_a_cache_emptied_between_the_whole_tries_of_the_family_applied_ahead_keeps_the_sightings(
    host_ns, tmp_path
):
    """The family applied ahead (IPv6, fewer chains) meets the cache emptied before the
    re-plan of its second whole try (its first refused: a wrapped restore): nothing
    went in, exit 2, and the sightings of six1 and six2 as the run before saved them;
    the bad input escaped plan_gc past apply_gc's save, and they were lost (each waited
    --min-age afresh)."""
    rows = [("six1", "fd00::5/64", 8090), ("six2", "fd00::6/64", 8091)]
    rows += [(f"gone{n}", f"10.88.0.{n + 10}/16", 8080 + n) for n in range(1, 4)]
    for cid, ip, port in rows:
        conf = rp.plugin_conf("mynet", [ip], [{**PORTS[0], "hostPort": port}])
        rp.run_plugin("ADD", host_ns, cid, conf, mode="legacy", check=True)
    cache, folder = _other1_cached(tmp_path, 8089)
    script = folder / "ip6tables-legacy-restore"
    script.write_text(
        f'#!/bin/bash\nIN={tmp_path}/in.$$\ncat > "$IN"\n'
        f'if grep -q -- "-X {chain_name("mynet", "six1")}" "$IN" && ! [ -e {tmp_path}/once ];'
        f" then touch {tmp_path}/once; rm -f {cache}/results/*;"
        ' echo "ip6tables-restore: line 4 failed" >&2; exit 1; fi\n'
        '/usr/sbin/ip6tables-legacy-restore "$@" < "$IN"\n'
    )
    script.chmod(0o755)
    _sightings_kept(host_ns, tmp_path, cache, folder, (), 5)
    assert (tmp_path / "once").exists()
    assert chain_name("mynet", "six2") in rp.save(host_ns, 6, "legacy")


def test_a_family_not_tried_after_the_one_applied_ahead_failed_keeps_its_sightings(
    host_ns, tmp_path
):
    """IPv4 (gone1, other1 kept: the smaller table) goes in ahead and fails (its removal
    refused once, then iptables-legacy-save failing); IPv6 (six1..3), later in the
    order, is not tried (exit 3, IPv4's line). Its sightings had left the state file
    before the first removal (Planning.forget) and were not written back: six1..3
    waited --min-age afresh after every such run. As the first run saved them now."""
    rows = [("gone1", "10.88.0.5/16", 8080), ("other1", "10.88.0.9/16", 8083)]
    rows += [(f"six{n}", f"fd00::{n + 4}/64", 8090 + n) for n in range(1, 4)]
    for cid, ip, port in rows:
        conf = rp.plugin_conf("mynet", [ip], [{**PORTS[0], "hostPort": port}])
        rp.run_plugin("ADD", host_ns, cid, conf, mode="legacy", check=True)
    marker, folder, failed = _refused_then_failing(tmp_path, "iptables")
    _sightings_kept(host_ns, tmp_path, tmp_path / "cni", folder, ("--keep", "other1"), 4, 3,
                    ("IPv4: ", f"failed: {failed}"))  # fmt: skip
    assert marker.exists()
    saved = rp.save(host_ns, 6, "legacy")
    assert all(chain_name("mynet", f"six{n}") in saved for n in range(1, 4))


def _sightings_kept_past_an_emptied_cache(host_ns: str, tmp_path, tries: int) -> None:
    """gc run twice (--min-age 2: gone1..3 pending, then past it), the cache emptied in
    the second once their removal was refused whole `tries` times: exit 2, and their
    sightings as the first run saved them."""
    cache, folder = _emptied_after_whole_tries(host_ns, tmp_path, six1=False, tries=tries)
    _sightings_kept(host_ns, tmp_path, cache, folder, ("--family", "4"), 3)
    assert (tmp_path / "whole").read_text().count("x") == tries


def _other1_cached(tmp_path, port: int):
    """A CNI cache of other1 alone (10.88.0.9, `port`), and an empty folder for PATH."""
    cache = tmp_path / "cni"
    conf = rp.plugin_conf("mynet", ["10.88.0.9/16"], [{**PORTS[0], "hostPort": port}])
    rp.write_cni_cache(cache, "mynet", "other1", "eth0", conf, conf["runtimeConfig"]["portMappings"],
                       ["10.88.0.9/16"])  # fmt: skip
    folder = tmp_path / "wrap"
    folder.mkdir()
    return cache, folder


def _sightings_kept(
    host_ns: str, tmp_path, cache, folder, args, pending: int, code: int = 2,
    words=("is empty",),
) -> None:  # fmt: skip
    """gc run twice (--min-age 2: `pending` chains pending, then past it, with `folder`
    first on PATH the second time): exit `code` with `words` (2: the cache empty), and
    the sightings as the first run saved them."""
    argv = ["gc", "--netns", host_ns, "--iptables", "legacy", *args, "--cni-cache-dir",
            str(cache), "--min-age", "2", "--yes", "-o", "json"]  # fmt: skip
    run_dir = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run")}
    first = run(argv, env=run_dir)
    assert first.returncode == 0, first.stderr
    assert len(json.loads(first.stdout)["pending"]) == pending
    state = tmp_path / "run" / "gc-state.json"
    sighted = json.loads(state.read_text())["namespaces"]
    time.sleep(3)  # (past --min-age)
    done = run(argv, env={**run_dir, "PATH": f"{folder}:{os.environ['PATH']}"})
    assert_error(done, code, *words)
    after = json.loads(state.read_text())["namespaces"]
    assert {ns: part["chains"] for ns, part in after.items()} == {
        ns: part["chains"] for ns, part in sighted.items()
    }


def _emptied_after_whole_tries(host_ns: str, tmp_path, six1: bool, tries: int = 0):
    """_halved_node with other1 cached alone, and a PATH folder whose
    iptables-legacy-restore empties the cache once the removal of gone1..3 was refused
    whole `tries` times (WHOLE_TRIES: the halving's turn next; fewer: the re-plan of
    the next whole try reads it): the cache and that folder."""
    tries = tries or WHOLE_TRIES
    gone = _halved_node(host_ns, six1=six1)
    cache, folder = _other1_cached(tmp_path, 8083)
    whole = "".join(f' && grep -q -- "-X {chain}" "$IN"' for chain in gone.values())
    script = folder / "iptables-legacy-restore"
    script.write_text(
        f'#!/bin/bash\nIN={tmp_path}/in.$$\ncat > "$IN"\n'
        f'/usr/sbin/iptables-legacy-restore "$@" < "$IN"; rc=$?\n'
        f"if [ $rc != 0 ]{whole}; then echo x >> {tmp_path}/whole;"
        f" if [ $(wc -l < {tmp_path}/whole) = {tries} ]; then rm -f {cache}/results/*;"
        " fi; fi\nexit $rc\n"
    )
    script.chmod(0o755)
    return cache, folder


# The transactions of a removal iptables refuses whole before gc halves it (the last of
# them by the rules' text: ops/gc/converge.py).
WHOLE_TRIES = APPLY_TRIES


def _rules_of(save: str) -> List[str]:
    """iptables-save's rules and chains, without its comments and counters."""
    return [line.split(" [")[0] for line in save.splitlines() if not line.startswith("#")]


def _after_restore_alone(tmp_path, gone: Dict[str, str], cid: str, nth: int, then: str):
    """A folder for PATH with an iptables-legacy-restore in front of the real one that
    runs `then` after the `nth` transaction removing `cid`'s chain alone (of the
    `gone` ones), whatever it answered."""
    others = [chain for other, chain in gone.items() if other != cid]
    alone = f'grep -q -- "-X {gone[cid]}" "$IN" && ! grep -q' + "".join(
        f" -e {chain}" for chain in others
    )
    folder = tmp_path / "wrap"
    folder.mkdir()
    script = folder / "iptables-legacy-restore"
    script.write_text(
        f'#!/bin/bash\nIN={tmp_path}/in.$$\ncat > "$IN"\n'
        f'/usr/sbin/iptables-legacy-restore "$@" < "$IN"; rc=$?\n'
        f'if {alone} "$IN"; then echo x >> {tmp_path}/tries;'
        f" if [ $(wc -l < {tmp_path}/tries) = {nth} ]; then {then}; fi; fi\n"
        "exit $rc\n"
    )
    script.chmod(0o755)
    return folder


@pytest.mark.parametrize("mode", ["legacy", "nft"])
def test_a_removal_whose_restore_hung_after_its_commit_still_has_its_flows_flushed(
    host_ns, tmp_path, mode
):
    """iptables-restore stopped at PORTMAPCTL_IPTABLES_TIMEOUT after its commit (a stuck
    exit, a kernel slow to answer): gc ended with exit 3, "its transaction may have gone
    in ... run again to see", and neither reported nor flushed what it removed. Run
    again, it found nothing to remove (exit 0), so the UDP flow DNATed to the removed
    container stayed for as long as its client kept sending: the blackhole gc's flush
    is there for. A tool killed by a signal was judged by the read after it; a hung one
    now is too: still exit 3 (the tool hung), the line saying it went in, its chains'
    flows flushed, their sightings gone."""
    for cid, ip, port, proto in (("gone1", "10.88.0.5/16", 8080, "udp"),
                                 ("gone2", "10.88.0.6/16", 8081, "tcp"),
                                 ("other1", "10.88.0.9/16", 8083, "tcp")):  # fmt: skip
        conf = rp.plugin_conf("mynet", [ip], [{**PORTS[0], "hostPort": port, "protocol": proto}])
        rp.run_plugin("ADD", host_ns, cid, conf, mode=mode, check=True)
    _gone1_flow(host_ns)
    folder = tmp_path / "wrap"
    folder.mkdir()
    tool = f"iptables-{mode}-restore"
    (folder / tool).write_text(f'#!/bin/bash\nIN={tmp_path}/in.$$\ncat > "$IN"\n'
                               f'/usr/sbin/{tool} "$@" < "$IN" || exit $?\nexec sleep 60\n')  # fmt: skip
    (folder / tool).chmod(0o755)
    (tmp_path / "cni" / "results").mkdir(parents=True)
    argv = ["gc", "--netns", host_ns, "--iptables", mode, "--family", "4", "--cni-cache-dir",
            str(tmp_path / "cni"), "--keep", "other1", "--min-age", "0", "--yes"]  # fmt: skip
    run_dir = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run")}
    # (PORTMAPCTL_NFT_BATCH=0: on iptables-nft the removal through the restore too.)
    env = {**run_dir, "PATH": f"{folder}:{os.environ['PATH']}",
           "PORTMAPCTL_IPTABLES_TIMEOUT": "2", "PORTMAPCTL_NFT_BATCH": "0"}  # fmt: skip
    done = run(argv, env=env)
    assert_error(done, 3, "did not finish within 2 s", "it went in", "2 chains", after_work=True)
    assert "run again to see" not in done.stderr  # (it went in: the read after it says so)
    saved = rp.save(host_ns, 4, mode)
    assert chain_name("mynet", "gone1") not in saved and chain_name("mynet", "gone2") not in saved
    assert chain_name("mynet", "other1") in saved
    flows = subprocess.run(["ip", "netns", "exec", host_ns, "conntrack", "-L", "-p", "udp"],
                           capture_output=True, text=True).stdout  # fmt: skip
    assert "dport=8080" not in flows, flows
    again = run(argv, env=run_dir)
    assert again.returncode == 0, again.stderr


def _halved_node(host_ns: str, six1: bool = False) -> Dict[str, str]:
    """gone1 (its entry rule `-m recent`: legacy iptables refuses its removal, so gc
    halves the family's), gone2, gone3 (UDP 8082, a flow DNATed to it) and other1 on
    legacy, with `six1` six1 too (IPv6, UDP 8090); the chains of the gone ones, by
    container ID."""
    recent = ["-m", "recent", "--name", "x", "--rcheck"]
    rows = [
        ("gone1", "10.88.0.5/16", 8080, recent),
        ("gone2", "10.88.0.6/16", 8081, None),
        ("gone3", "10.88.0.7/16", 8082, None),  # (UDP: its flow goes with its chain)
        ("other1", "10.88.0.9/16", 8083, None),
    ]
    for cid, ip, port, conditions in rows + ([("six1", "fd00::9/64", 8090, None)] if six1 else []):
        proto = "udp" if cid in ("gone3", "six1") else "tcp"
        conf = rp.plugin_conf("mynet", [ip], [{**PORTS[0], "hostPort": port, "protocol": proto}],
                              conditions_v4=conditions)  # fmt: skip
        rp.run_plugin("ADD", host_ns, cid, conf, mode="legacy", check=True)
    subprocess.run(["ip", "netns", "exec", host_ns, "conntrack", "-I", "-p", "udp", "-s",
                    "127.0.0.1", "-d", "127.0.0.1", "--sport", "40001", "--dport", "8082",
                    "--reply-src", "10.88.0.7", "--reply-dst", "127.0.0.1", "--reply-port-src",
                    "80", "--reply-port-dst", "40001", "-t", "100"], check=True)  # fmt: skip
    return {cid: chain_name("mynet", cid) for cid in ("gone1", "gone2", "gone3")}


def _added(host_ns: str, rows) -> None:
    """Containers of the Debian plugin on legacy: (ID, address, host port, protocol)
    each, its container port 80."""
    for cid, ip, port, proto in rows:
        conf = rp.plugin_conf("mynet", [ip], [{**PORTS[0], "hostPort": port, "protocol": proto}])
        rp.run_plugin("ADD", host_ns, cid, conf, mode="legacy", check=True)


def _gone1_flow(host_ns: str) -> None:
    """A UDP flow to gone1's host port 8080 (10.88.0.5, IPv4), DNATed to it."""
    subprocess.run(["ip", "netns", "exec", host_ns, "conntrack", "-I", "-p", "udp", "-s",
                    "127.0.0.1", "-d", "127.0.0.1", "--sport", "40001", "--dport", "8080",
                    "--reply-src", "10.88.0.5", "--reply-dst", "127.0.0.1", "--reply-port-src",
                    "80", "--reply-port-dst", "40001", "-t", "100"], check=True)  # fmt: skip


def _six1_flow(host_ns: str) -> None:
    """A UDP flow to six1's host port 8090 (fd00::9, IPv6), DNATed to it."""
    subprocess.run(["ip", "-n", host_ns, "addr", "replace", "fd00:1::1/128", "dev", "lo"],
                   check=True)  # fmt: skip
    subprocess.run(["ip", "netns", "exec", host_ns, "conntrack", "-I", "-p", "udp", "-s",
                    "2001:db8::7", "-d", "fd00:1::1", "--sport", "40001", "--dport", "8090",
                    "--reply-src", "fd00::9", "--reply-dst", "2001:db8::7", "--reply-port-src",
                    "80", "--reply-port-dst", "40001", "-t", "100"], check=True)  # fmt: skip


def _wrap(folder, restore: str, save: str, tools: str = "iptables") -> None:
    """bash scripts in `folder` in front of iptables-legacy-restore and -save (`tools`
    "ip6tables": ip6tables-legacy-restore and -save)."""
    for tool, body in ((f"{tools}-legacy-restore", restore), (f"{tools}-legacy-save", save)):
        (folder / tool).write_text(f"#!/bin/bash\n{body}\n")
        (folder / tool).chmod(0o755)


def _refused_then_failing(tmp_path, tools: str):
    """Wrappers (_wrap) refusing `tools`' first restore, then failing every read of its
    -save ("Cannot allocate memory", exit 1), and an empty CNI cache (tmp_path/cni): the
    marker the refusal makes, the wrappers' folder and the read's error."""
    marker, folder = tmp_path / "refused", tmp_path / "wrap"
    folder.mkdir()
    (tmp_path / "cni" / "results").mkdir(parents=True)
    failed = f"{tools}-legacy-save: Cannot allocate memory"
    _wrap(folder, f'if [ ! -e {marker} ]; then cat > /dev/null; touch {marker};'
                  f' echo "{tools}-restore: line 2 failed" >&2; exit 1; fi\n'
                  f'exec /usr/sbin/{tools}-legacy-restore "$@"',
          f"if [ -e {marker} ]; then echo '{failed}' >&2; exit 1; fi\n"
          f'exec /usr/sbin/{tools}-legacy-save "$@"', tools)  # fmt: skip
    return marker, folder, failed


def _udp_flows(host_ns: str, family: str) -> str:
    return subprocess.run(["ip", "netns", "exec", host_ns, "conntrack", "-L", "-f", family,
                           "-p", "udp"], capture_output=True, text=True).stdout  # fmt: skip


@pytest.mark.parametrize("fault", ["hung", "failing"])
@pytest.mark.parametrize("where", ["before-the-groups", "next-group", "after-the-groups"])
def test_a_hung_read_while_a_refused_removal_is_halved_still_flushes_what_went_in(
    host_ns, tmp_path, where, fault
):
    """The halving of a removal iptables refused whole (gone1's `-m recent` entry rule)
    reads the table before it starts, before each group and once after them all. An
    iptables-save that hung there (stopped at PORTMAPCTL_IPTABLES_TIMEOUT: a stuck
    kernel, as for a hung restore) escaped settle_family and apply_gc uncaught: exit 3,
    "iptables-legacy-save did not answer", and nothing of what had gone in was
    reported, recorded or flushed: gone3's chain (gone in alone before it) and six1's
    (IPv6, applied ahead) kept their UDP flows' dead DNAT, and the next run found
    nothing of them to remove. A hung restore there stops the halving with what went
    in flushed (the test above); a hung read now does too.

    Real tables, a real hang: a wrapper in front of iptables-legacy-save sleeps past
    the timeout once IPv4's whole removal was refused its last try (the read that
    starts the halving), once gone3's chain went in alone (the read for gone1's group),
    or once gone1's last try alone was refused (the read after the groups).

    `failing`: an iptables-save that fails there instead (exit 1, its own message: a
    HostProblem, not a timeout) escaped the same way: "iptables-legacy-save failed:
    ...", exit 3, gone2's and gone3's chains gone unsaid and gone3's flow kept; its
    line now says what went in, as the hung read's does."""
    gone = _halved_node(host_ns, six1=True)  # (six1: IPv6 alone, applied ahead; UDP)
    _six1_flow(host_ns)
    marker, tries = tmp_path / "hang", tmp_path / "tries"

    def alone(*cids: str) -> str:
        has = " && ".join(f'grep -q -- "-X {gone[c]}" "$IN"' for c in cids)
        others = " ".join(f"-e {gone[c]}" for c in gone if c not in cids)
        return has + (f' && ! grep -q {others} "$IN"' if others else "")

    def refused_thrice(*cids: str) -> str:
        return (f"if [ $rc != 0 ] && {alone(*cids)}; then echo >> {tries};"
                f" [ $(wc -l < {tries}) -ge 3 ] && touch {marker}; fi")  # fmt: skip

    after = {
        # IPv4's whole removal refused its last try (APPLY_TRIES): the halving's first read.
        "before-the-groups": refused_thrice("gone1", "gone2", "gone3"),
        # gone3's chain went in alone: the next read is the one for gone1's group.
        "next-group": f"if [ $rc = 0 ] && {alone('gone3')}; then touch {marker}; fi",
        # gone1's last try alone was refused: the next read is the one after the groups.
        "after-the-groups": refused_thrice("gone1"),
    }[where]
    folder = tmp_path / "wrap"
    folder.mkdir()
    failed = "iptables-legacy-save: Cannot allocate memory"
    then = "exec sleep 60" if fault == "hung" else f"echo '{failed}' >&2; exit 1"
    _wrap(folder, f'IN={tmp_path}/in.$$\ncat > "$IN"\n'
                  f'/usr/sbin/iptables-legacy-restore "$@" < "$IN"; rc=$?\n{after}\nexit $rc',
          f'if [ -e {marker} ]; then {then}; fi\nexec /usr/sbin/iptables-legacy-save "$@"')  # fmt: skip
    (tmp_path / "cni" / "results").mkdir(parents=True)
    argv = ["gc", "--netns", host_ns, "--iptables", "legacy", "--cni-cache-dir",
            str(tmp_path / "cni"), "--keep", "other1", "--min-age", "0", "--yes"]  # fmt: skip
    run_dir = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run")}
    env = {**run_dir, "PATH": f"{folder}:{os.environ['PATH']}", "PORTMAPCTL_IPTABLES_TIMEOUT": "3"}
    done = run(argv, env=env)
    assert marker.exists()  # (the hang was met)
    saved = rp.save(host_ns, 4, "legacy")
    removed = 0 if where == "before-the-groups" else 2
    assert (gone["gone2"] in saved, gone["gone3"] in saved) == (not removed, not removed)
    assert gone["gone1"] in saved and chain_name("mynet", "other1") in saved
    assert chain_name("mynet", "six1") not in rp.save(host_ns, 6, "legacy")
    said = "did not answer within 3 s" if fault == "hung" else f"failed: {failed}"
    assert_error(done, 3, "IPv4: ", said, f"{removed} removed",
                 gone["gone1"], "IPv6 was applied ahead of it: 1 chain removed",
                 after_work=True)  # fmt: skip
    line = done.stderr.splitlines()[-1]
    assert "refused the removal of" not in line, line
    flows = subprocess.run(["ip", "netns", "exec", host_ns, "conntrack", "-L", "-p", "udp"],
                           capture_output=True, text=True).stdout  # fmt: skip
    assert ("dport=8082" in flows) == (not removed), flows  # (its chain went: its flow too)
    flows = _udp_flows(host_ns, "ipv6")
    assert "dport=8090" not in flows, flows


def _ipv4_refused_then_unreadable(host_ns, tmp_path):
    """gone1 and other1 on IPv4, six1 (UDP, a flow) on IPv6, by the Debian plugin on
    legacy; wrappers in front of iptables-legacy-restore (refuses its first
    transaction) and iptables-legacy-save (fails once that refusal is made). Returns
    gc's argv (other1 kept), its run directory's env, the env with the wrappers, the
    refusal's marker and the save's error."""
    # (six1: IPv6 alone, the smaller table, applied ahead; UDP)
    _added(host_ns, (("gone1", "10.88.0.5/16", 8080, "tcp"),
                     ("other1", "10.88.0.9/16", 8083, "tcp"),
                     ("six1", "fd00::9/64", 8090, "udp")))  # fmt: skip
    _six1_flow(host_ns)
    marker, folder, failed = _refused_then_failing(tmp_path, "iptables")
    argv = ["gc", "--netns", host_ns, "--iptables", "legacy", "--cni-cache-dir",
            str(tmp_path / "cni"), "--keep", "other1", "--yes"]  # fmt: skip
    run_dir = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run")}
    env = {**run_dir, "PATH": f"{folder}:{os.environ['PATH']}"}
    return argv, run_dir, env, marker, failed


@pytest.mark.parametrize("output", ["table", "json"])
def test_a_gc_failing_after_a_family_went_in_shows_what_went_in(host_ns, tmp_path, output):
    """IPv6's removal went in (applied ahead), then IPv4's failed (exit 3): the one
    error line said "IPv6 was applied ahead of it: 1 chain removed", and stdout was
    empty, `-o json` printing no document: a script saw nothing of the chain removed,
    its flow flushed, its sighting forgotten. What went in is shown as any run's
    result (the table and summary, or the document), then the one line."""
    argv, _, env, _, failed = _ipv4_refused_then_unreadable(host_ns, tmp_path)
    shown = [] if output == "table" else ["-o", "json"]
    done = run([*argv, "--min-age", "0", *shown], env=env)
    assert_error(done, 3, "IPv4: ", f"failed: {failed}", after_work=True)
    six1 = chain_name("mynet", "six1")
    assert six1 not in rp.save(host_ns, 6, "legacy")
    if output == "json":
        doc = json.loads(done.stdout)
        assert [(r["chain"], r["family"], r["container_id"]) for r in doc["removed"]] == [
            (six1, 6, "six1")
        ], doc
        assert doc["dry_run"] is False and doc["conntrack_deleted"] >= 1, doc
    else:
        lines = done.stdout.splitlines()
        assert any("six1" in line and "removed" in line for line in lines), done.stdout
        assert lines[-1].startswith("gc: removed 1 chain of 1 container"), done.stdout


def test_a_gc_failing_after_a_family_went_in_says_it_could_not_record_either(host_ns, tmp_path):
    """IPv6's removal went in (applied ahead), IPv4's failed (exit 3), and the state file
    could not be written (a full run directory): the document of what went in was
    shown, then IPv4's line alone; nothing said the sightings were not recorded (the
    file removed: every stale chain waits --min-age again), while docs/json.md says
    the document's removal had "its sightings saved". The line says it now."""
    from run_dir_helpers import full_run_dir

    argv, _, env, _, failed = _ipv4_refused_then_unreadable(host_ns, tmp_path)
    with full_run_dir(tmp_path / "full") as run_dir:
        env = {**env, "PORTMAPCTL_RUN_DIR": str(run_dir)}
        done = run([*argv, "--min-age", "0", "-o", "json"], env=env)
    assert_error(done, 3, "IPv4: ", f"failed: {failed}",
                 "could not record the chains still pending", after_work=True)  # fmt: skip
    doc = json_schemas.validated("gc", done.stdout)
    assert [r["container_id"] for r in doc["removed"]] == ["six1"], doc
    assert chain_name("mynet", "six1") not in rp.save(host_ns, 6, "legacy")


def test_a_failed_read_while_a_family_is_planned_again_keeps_what_the_other_removed(
    host_ns, tmp_path
):
    """IPv4's removal refused once (the plugin changed the table, as gc takes it), and
    the read for its next try failed: iptables-legacy-save's own error (exit 1), a
    HostProblem, not a timeout. It escaped apply_gc: the one line was the bare read
    error ("... iptables-legacy-save failed: ..."), IPv6's removal, applied ahead,
    went unsaid, its chain's UDP flow kept the dead DNAT and no sighting was saved.
    Now the line is IPv4's, with what IPv6 removed; its flow is flushed; IPv4's chain,
    untouched, keeps its sighting (a later run counts --min-age from this one).

    Real tables: wrappers in front of iptables-legacy-restore (refuses its first
    transaction) and iptables-legacy-save (fails once that refusal is made)."""
    argv, run_dir, env, marker, failed = _ipv4_refused_then_unreadable(host_ns, tmp_path)
    done = run([*argv, "--min-age", "0"], env=env)
    assert marker.exists()  # (the refusal was made)
    assert_error(done, 3, "IPv4: ", f"failed: {failed}",
                 "IPv6 was applied ahead of it: 1 chain removed", after_work=True)  # fmt: skip
    assert chain_name("mynet", "six1") not in rp.save(host_ns, 6, "legacy")
    assert chain_name("mynet", "gone1") in rp.save(host_ns, 4, "legacy")
    flows = _udp_flows(host_ns, "ipv6")
    assert "dport=8090" not in flows, flows
    time.sleep(1.1)
    later = run([*argv, "--min-age", "1h", "-o", "json"], env=run_dir)
    assert later.returncode == 0, later.stderr
    [pending] = json.loads(later.stdout)["pending"]
    assert pending["container_id"] == "gone1" and pending["seen_seconds"] >= 1, pending


def test_a_failed_read_while_the_family_applied_ahead_is_planned_again_is_that_familys(
    host_ns, tmp_path
):
    """The family with the smaller table (IPv6 here) goes in while the others are
    planned (plan_gc's apply_early). Its removal refused once, the read for its next
    try failed (ip6tables-legacy-save's own error, a HostProblem, not a timeout): that
    escaped plan_gc, which caught only ApplyFailed and a timeout there, so the run
    ended on the bare read error (".../ip6tables-legacy-save failed: ...", no family
    named) and IPv4's removal was never tried, unlike when the same read hangs or the
    restore is refused (IPv6's line, IPv4 removed). Now it is IPv6's failure like
    those: its line, exit 3, IPv4's stale chain removed, its UDP flow flushed.

    Real tables: wrappers in front of ip6tables-legacy-restore (refuses its first
    transaction) and ip6tables-legacy-save (fails once that refusal is made)."""
    # (gone1: UDP, its flow goes with its chain; six1: IPv6 alone, the smaller table)
    _added(host_ns, (("gone1", "10.88.0.5/16", 8080, "udp"),
                     ("other1", "10.88.0.9/16", 8083, "tcp"),
                     ("other2", "10.88.0.10/16", 8084, "tcp"),
                     ("six1", "fd00::9/64", 8090, "tcp")))  # fmt: skip
    _gone1_flow(host_ns)
    marker, folder, failed = _refused_then_failing(tmp_path, "ip6tables")
    argv = ["gc", "--netns", host_ns, "--iptables", "legacy", "--cni-cache-dir",
            str(tmp_path / "cni"), "--keep", "other1", "--keep", "other2", "--min-age", "0",
            "--yes"]  # fmt: skip
    env = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run"), "PATH": f"{folder}:{os.environ['PATH']}"}
    done = run(argv, env=env)
    assert marker.exists()  # (the refusal was made)
    assert_error(done, 3, "IPv6: ", f"failed: {failed}", "earlier families: 1 chain removed",
                 after_work=True)  # fmt: skip
    assert chain_name("mynet", "gone1") not in rp.save(host_ns, 4, "legacy")
    assert chain_name("mynet", "six1") in rp.save(host_ns, 6, "legacy")
    assert "dport=8080" not in _udp_flows(host_ns, "ipv4")


KILLED_READ = "iptables-legacy-save: Cannot allocate memory"


def _seen_then_killed(host_ns: str, tmp_path, killed_when: str):
    """The runs of a killed-restore test: a first gc (--min-age 1h) sees the stale
    chains; 2 s later a second (--min-age 0) through wrappers, iptables-legacy-restore
    killed by SIGKILL once it applied a transaction `killed_when` (a bash condition on
    its input, "$IN") accepts, iptables-legacy-save failing (KILLED_READ) after that.
    Returns the second run and what gives a later dry run's pending ages by container."""
    killed, folder = tmp_path / "killed", tmp_path / "wrap"
    folder.mkdir()
    _wrap(folder, f'IN={tmp_path}/in.$$\ncat > "$IN"\n'
                  f'/usr/sbin/iptables-legacy-restore "$@" < "$IN"; rc=$?\n'
                  f"if [ $rc = 0 ] && {killed_when}; then touch {killed}; kill -9 $$; fi\nexit $rc",
          f"if [ -e {killed} ]; then echo '{KILLED_READ}' >&2; exit 1; fi\n"
          'exec /usr/sbin/iptables-legacy-save "$@"')  # fmt: skip
    (tmp_path / "cni" / "results").mkdir(parents=True)
    argv = ["gc", "--netns", host_ns, "--iptables", "legacy", "--family", "4", "--cni-cache-dir",
            str(tmp_path / "cni"), "--all", "--yes"]  # fmt: skip
    run_dir = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run")}
    first = run([*argv, "--min-age", "1h"], env=run_dir)
    assert first.returncode == 0, first.stderr
    time.sleep(2.1)
    done = run([*argv, "--min-age", "0"], env={**run_dir, "PATH": f"{folder}:{os.environ['PATH']}"})
    assert killed.exists()  # (a restore went in, then was killed)

    def pending_ages():
        later = run([*argv, "--min-age", "1h", "--dry-run", "-o", "json"], env=run_dir)
        assert later.returncode == 0, later.stderr
        return {p["container_id"]: p["seen_seconds"] for p in json.loads(later.stdout)["pending"]}

    return done, pending_ages


def test_a_failed_read_after_a_killed_restore_forgets_what_it_may_have_removed(host_ns, tmp_path):
    """An iptables-restore killed after its commit (the OOM killer: "killed by SIGKILL",
    it may have gone in) is judged by the read after it. When that read failed
    (iptables-save's own error, a HostProblem, not a timeout), apply_gc, which catches
    it now (6a529ec), took it for a family where nothing went and wrote its sightings
    back as they were: gone1's chain was gone, yet its old sighting stayed on file, so
    the same container's chain, made again under its ID, was past --min-age at its
    first sighting and the next gc removed it at once (SPEC: never sooner than
    --min-age after first seen stale). As for any write that may have gone in, they
    are forgotten, and the line says that write may have gone in.

    Real tables: gone1 seen stale by a first run (--min-age 1h: pending); the second
    run's restore goes in, then is killed, and every read after it fails; the plugin
    makes gone1's chain again; a third run counts gone1 from its own read."""
    conf = rp.plugin_conf("mynet", ["10.88.0.5/16"], PORTS)
    rp.run_plugin("ADD", host_ns, "gone1", conf, mode="legacy", check=True)
    done, pending_ages = _seen_then_killed(host_ns, tmp_path, "true")
    assert_error(
        done, 3, "IPv4: ", f"failed: {KILLED_READ}", "killed by SIGKILL", "may have gone in"
    )
    assert chain_name("mynet", "gone1") not in rp.save(host_ns, 4, "legacy")
    rp.run_plugin("ADD", host_ns, "gone1", conf, mode="legacy", check=True)
    ages = pending_ages()
    # (Its old sighting, written back, made it 2 s old at once: --min-age 2s removed it.)
    assert list(ages) == ["gone1"] and ages["gone1"] < 2, ages


def test_a_failed_read_after_a_killed_group_of_a_halving_forgets_that_group(host_ns, tmp_path):
    """The halving of a removal iptables refused whole (gone1's `-m recent` entry
    rule) applies its groups one by one. gone2's went in; gone3's restore went in too,
    then was killed (SIGKILL: it may have gone in), and every read after it failed, the
    one after the groups too. The family's line said so, yet its plan, made from the
    table as last known (gone3's chain still in it), wrote gone3's sighting back as it
    was: gone3's chain, gone, kept its old sighting, so the same container's chain,
    made again under its ID, was past --min-age at its first sighting (SPEC: never
    sooner than --min-age after first seen stale). A group that may have gone in is
    forgotten, as a removal's chains are.

    Real tables: gone3 seen stale by a first run (--min-age 1h); wrappers in front of
    iptables-legacy-restore (killed once gone3's chain went in alone) and
    iptables-legacy-save (failing after that)."""
    recent = ["-m", "recent", "--name", "x", "--rcheck"]
    for cid, ip, port, conditions in (
        ("gone1", "10.88.0.5/16", 8080, recent),
        ("gone2", "10.88.0.6/16", 8081, None),
        ("gone3", "10.88.0.7/16", 8082, None),
    ):
        conf = rp.plugin_conf("mynet", [ip], [{**PORTS[0], "hostPort": port}],
                              conditions_v4=conditions)  # fmt: skip
        rp.run_plugin("ADD", host_ns, cid, conf, mode="legacy", check=True)
    gone = {cid: chain_name("mynet", cid) for cid in ("gone1", "gone2", "gone3")}
    alone = (f'grep -q -- "-X {gone["gone3"]}" "$IN" &&'
             f' ! grep -q -e {gone["gone1"]} -e {gone["gone2"]} "$IN"')  # fmt: skip
    done, pending_ages = _seen_then_killed(host_ns, tmp_path, alone)
    assert_error(done, 3, "IPv4: ", f"failed: {KILLED_READ}", "killed by SIGKILL", "1 removed",
                 after_work=True)  # fmt: skip
    saved = rp.save(host_ns, 4, "legacy")
    assert gone["gone2"] not in saved and gone["gone3"] not in saved and gone["gone1"] in saved
    conf = rp.plugin_conf("mynet", ["10.88.0.7/16"], [{**PORTS[0], "hostPort": 8082}])
    rp.run_plugin("ADD", host_ns, "gone3", conf, mode="legacy", check=True)
    seen = pending_ages()
    # (gone3's old sighting, written back, made it 2 s old at once.)
    assert seen["gone3"] < 2 and seen["gone1"] >= 2, seen


def test_a_failed_nft_read_after_its_refusal_keeps_what_iptables_removed(host_ns, tmp_path):
    """The nftables side goes after the iptables families. Its `nft -f` refused (a rule
    gone meanwhile), the read for its next try failed (`nft -j list`'s own error: a
    HostProblem, not a timeout) and escaped apply_gc: the one line was the bare read
    error, the iptables chain removed just before kept its UDP flow's dead DNAT, and no
    sighting was saved. Now the line is nftables' (exit 3), that flow is flushed, the
    nftables container, untouched, keeps its sighting. Real tables (the Debian plugin on legacy, upstream v1.9.1's
    nftables backend); a wrapper in front of nft refuses its first write and fails
    every read after it."""
    import upstream

    rp.require(upstream.available())
    conf = rp.plugin_conf("mynet", ["10.88.0.5/16"], [{**PORTS[0], "protocol": "udp"}])
    rp.run_plugin("ADD", host_ns, "gone1", conf, mode="legacy", check=True)
    nft_ports = [{"hostPort": 8081, "containerPort": 80, "protocol": "tcp"}]
    upstream.run("v1.9.1", "ADD", host_ns, "nftgone", upstream.nft_conf(
        "mynet", ["10.88.0.6/16"], nft_ports), check=True)  # fmt: skip
    _gone1_flow(host_ns)
    marker, folder = tmp_path / "refused", tmp_path / "wrap"
    folder.mkdir()
    failed = "netlink: Error: cache initialization failed: Cannot allocate memory"
    (folder / "nft").write_text(
        f'#!/bin/bash\nif [ "$1" = -f ] && [ ! -e {marker} ]; then cat > /dev/null;'
        f' touch {marker}; echo "Error: Could not process rule: No such file or directory" >&2;'
        f" exit 1; fi\nif [ -e {marker} ]; then echo '{failed}' >&2; exit 1; fi\n"
        'exec /usr/sbin/nft "$@"\n'
    )  # fmt: skip
    (folder / "nft").chmod(0o755)
    (tmp_path / "cni" / "results").mkdir(parents=True)
    argv = ["gc", "--netns", host_ns, "--iptables", "legacy", "--family", "4", "--cni-cache-dir",
            str(tmp_path / "cni"), "--all", "--yes"]  # fmt: skip
    run_dir = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run")}
    # (PORTMAPCTL_NFT_BATCH=0: nftables' deletions through `nft -f`, which the wrapper
    # refuses; with an nf_tables batch nft only lists.)
    wrapped = {**run_dir, "PATH": f"{folder}:{os.environ['PATH']}", "PORTMAPCTL_NFT_BATCH": "0"}
    done = run([*argv, "--min-age", "0"], env=wrapped)
    assert marker.exists()  # (the refusal was made)
    # (What iptables removed before it: the line said nothing of it.)
    assert_error(done, 3, "nftables: ", "Cannot allocate memory",
                 "(iptables, applied before it: 1 chain removed)", after_work=True)  # fmt: skip
    assert chain_name("mynet", "gone1") not in rp.save(host_ns, 4, "legacy")
    assert '"nftgone"' in upstream.ruleset_text(host_ns)
    assert "dport=8080" not in _udp_flows(host_ns, "ipv4")
    time.sleep(1.1)
    later = run([*argv, "--min-age", "1h", "-o", "json"], env=run_dir)
    assert later.returncode == 0, later.stderr
    [pending] = json.loads(later.stdout)["pending"]
    assert pending["container_id"] == "nftgone" and pending["seen_seconds"] >= 1, pending
