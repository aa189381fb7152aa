"""gc killed by SIGTERM (a DaemonSet pod deleted, a systemd timer stopped) while it
writes its --min-age state or its metrics file: a real process, a real signal. The
moment is held open by a hook in the process (PMT_HOOK: the write's fsync, or the
metrics' rendering, sleeps once its temporary file exists), the only stand-in."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import realplugin as rp
import upstream
from flush_udp_helpers import ns_run, route_localnet
from pmctl import run as pm_run
from pmctl import without_cache_note
from sigterm_helpers import killed_while_writing

from portmapctl.iptables.chains import chain_name
from portmapctl.ops.gc import state as gc_state

PORTS = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
REPAIR_WENT_IN = (
    "portmapctl: terminated: the repair of 1 container had gone in, or was going in"
    " (`portmapctl check` shows what is left)\n"
)


def _node(host_ns, tmp_path):
    """A chain of a container nobody keeps (so gc's --min-age records a sighting), and
    other1's, which --keep keeps (the source of liveness gc needs: a --keep that
    matches no container is a warning of its own where chains are pending)."""
    for n in range(3):
        conf = rp.plugin_conf("mynet", [f"10.88.0.{5 + n}/16"], PORTS)
        rp.run_plugin("ADD", host_ns, f"gone{n}", conf, check=True)
    conf = rp.plugin_conf("mynet", ["10.88.0.9/16"], [{**PORTS[0], "hostPort": 8081}])
    rp.run_plugin("ADD", host_ns, "other1", conf, check=True)
    (tmp_path / "cni" / "results").mkdir(parents=True)
    run_dir = tmp_path / "run"
    argv = ["gc", "--netns", host_ns, "--cni-cache-dir", str(tmp_path / "cni"),
            "--keep", "other1", "--min-age", "1h", "--yes", "-q"]  # fmt: skip
    return argv, run_dir, {"PORTMAPCTL_RUN_DIR": str(run_dir)}


def test_sigterm_during_the_state_save_leaves_no_temporary_file(host_ns, tmp_path):
    """0.1: the default SIGTERM killed gc at once: gc-state.json.PID.tmp stayed in the
    run directory (one more with each killed run), and nothing was said. Now the file
    goes, one line says so, and the process still ends by SIGTERM (shells: 143)."""
    argv, run_dir, env = _node(host_ns, tmp_path)
    code, out, err = killed_while_writing(argv, env, "state", tmp_path / "marker")
    assert [n for n in os.listdir(run_dir) if n.startswith(gc_state.STATE_FILE + ".")] == []
    assert code == -signal.SIGTERM, err
    assert err == "portmapctl: terminated\n"


def test_sigterm_during_the_metrics_write_leaves_no_temporary_file(host_ns, tmp_path):
    argv, run_dir, env = _node(host_ns, tmp_path)
    metrics = tmp_path / "textfile" / "portmapctl-gc.prom"
    metrics.parent.mkdir()
    argv += ["--metrics-file", str(metrics)]
    code, out, err = killed_while_writing(argv, env, "metrics", tmp_path / "marker")
    assert os.listdir(metrics.parent) == []
    assert code == -signal.SIGTERM, err
    assert without_cache_note(err) == "portmapctl: terminated\n"


def _conntrack(ns, *args):
    return subprocess.run(["ip", "netns", "exec", ns, "conntrack", *args],
                          check=True, capture_output=True, text=True).stdout  # fmt: skip


def _gc_terminated_at(host_ns, tmp_path, where, *extra):
    """gc --min-age 0 keeping live1, SIGTERMed at `where`, once its removal of gone1's
    chain went in (or was going in): ends as terminated, and its line says so (it said
    "terminated" alone, which reads as "nothing happened")."""
    (tmp_path / "cni" / "results").mkdir(parents=True)
    argv = ["gc", "--netns", host_ns, "--cni-cache-dir", str(tmp_path / "cni"),
            "--keep", "live1", "--min-age", "0", "--yes", "-q", *extra]  # fmt: skip
    env = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run")}
    code, _out, err = killed_while_writing(argv, env, where, tmp_path / "marker")
    assert code == -signal.SIGTERM, err
    assert without_cache_note(err) == (
        "portmapctl: terminated: the removal of 1 chain had gone in, or was going in"
        " (`portmapctl gc --dry-run` shows what is left)\n"
    )


@pytest.mark.parametrize(
    "where, extra", [("save", ()), ("converge", ()), ("converge", ("--no-flush-udp",))]
)
def test_sigterm_after_the_removal_still_flushes_its_udp_flows(host_ns, tmp_path, where, extra):
    """SIGTERM once gc's removal was in, before its UDP conntrack flush (a pod deleted
    mid-run, on a node with 3,000 stale chains: 1 run in 4 at a random moment) left
    the flows to the removed host ports DNATed to the dead container, and the next gc
    found nothing to remove, so nothing ever flushed them. Now the flush of what went
    is done on the way out; the live container's flow stays. `converge`: SIGTERM
    once the commit went in, before gc had its answer (1 run in 4 still, before).
    --no-flush-udp: kept, as by a whole run."""
    udp = [{"hostPort": 6000, "containerPort": 53, "protocol": "udp"}]
    live = [{"hostPort": 5353, "containerPort": 53, "protocol": "udp"}]
    for cid, ip, ports in (("gone1", "10.88.0.5/16", udp), ("live1", "10.88.0.6/16", live)):
        rp.run_plugin("ADD", host_ns, cid, rp.plugin_conf("mynet", [ip], ports), check=True)
    subprocess.run(["ip", "-n", host_ns, "addr", "replace", "10.0.0.1/32", "dev", "lo"],
                   check=True)  # fmt: skip
    for sport, dport, to in ((40001, 6000, "10.88.0.5"), (40002, 5353, "10.88.0.6")):
        _conntrack(host_ns, "-I", "-p", "udp", "-s", "192.0.2.7", "-d", "10.0.0.1",
                   "--sport", str(sport), "--dport", str(dport), "--reply-src", to,
                   "--reply-dst", "192.0.2.7", "--reply-port-src", "53", "--reply-port-dst",
                   str(sport), "-t", "100")  # fmt: skip
    _gc_terminated_at(host_ns, tmp_path, where, *extra)
    assert chain_name("mynet", "gone1") not in rp.save(host_ns)
    flows = _conntrack(host_ns, "-L", "-p", "udp")
    assert ("dport=6000" in flows) == bool(extra) and "dport=5353" in flows, flows


def test_sigterm_after_the_family_applied_ahead_still_flushes_its_udp_flows(host_ns, tmp_path):
    """The same when SIGTERM comes while IPv4 is planned, the smaller IPv6 table's
    removal already in (gc applies it meanwhile): its IPv6 flows are flushed too."""
    conf = rp.plugin_conf("mynet", ["10.88.0.5/16", "fd00::5/64"],
                          [{"hostPort": 6000, "containerPort": 53, "protocol": "udp"}])  # fmt: skip
    rp.run_plugin("ADD", host_ns, "gone1", conf, check=True)
    conf = rp.plugin_conf("mynet", ["10.88.0.6/16"], PORTS)
    rp.run_plugin("ADD", host_ns, "live1", conf, check=True)
    subprocess.run(["ip", "-n", host_ns, "addr", "replace", "fd00:1::1/128", "dev", "lo"],
                   check=True)  # fmt: skip
    _conntrack(host_ns, "-I", "-p", "udp", "-s", "2001:db8::7", "-d", "fd00:1::1",
               "--sport", "40001", "--dport", "6000", "--reply-src", "fd00::5", "--reply-dst",
               "2001:db8::7", "--reply-port-src", "53", "--reply-port-dst", "40001",
               "-t", "100")  # fmt: skip
    _gc_terminated_at(host_ns, tmp_path, "ahead")
    assert chain_name("mynet", "gone1") not in rp.save(host_ns, 6)
    assert chain_name("mynet", "gone1") in rp.save(host_ns, 4)  # never planned
    flows = _conntrack(host_ns, "-L", "-f", "ipv6", "-p", "udp")
    assert "dport=6000" not in flows, flows


@pytest.mark.parametrize("where", ["converge", "save"])
def test_a_removal_stopped_by_sigterm_leaves_no_sighting_of_what_it_removed(
    host_ns, tmp_path, where
):
    """SIGTERM once gc's removal went in, before its state save replaced the file
    (`converge`), or during it (`save`): the file kept the removed chain's sighting
    from the run before. The same container started again under its ID (podman
    restart: same address and ports, so the same chain and rules), seen by the next
    gc during its ADD, before libcni wrote its cache entry, had that old sighting pass
    --min-age and lost its chain at once: live, without its mapping. Now a removal
    stopped on its way forgets every sighting (the file goes): the chain is pending,
    first seen now."""
    conf = rp.plugin_conf("mynet", ["10.88.0.5/16"], PORTS)
    rp.run_plugin("ADD", host_ns, "gone1", conf, check=True)
    (tmp_path / "cni" / "results").mkdir(parents=True)
    argv = ["gc", "--netns", host_ns, "--cni-cache-dir", str(tmp_path / "cni"),
            "--keep", "other1", "--min-age", "1s", "--yes"]  # fmt: skip
    env = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run")}
    pm_run(argv, env=env)  # sighted
    time.sleep(1.2)
    code, _out, err = killed_while_writing(argv, env, where, tmp_path / "marker")
    assert code == -signal.SIGTERM, err
    assert chain_name("mynet", "gone1") not in rp.save(host_ns)

    rp.run_plugin("ADD", host_ns, "gone1", conf, check=True)  # started again
    done = pm_run([*argv, "-o", "json"], env=env)
    assert done.returncode == 0, done.stderr
    assert chain_name("mynet", "gone1") in rp.save(host_ns)
    pending = json.loads(done.stdout)["pending"]
    assert [(p["container_id"], p["seen_seconds"] < 1) for p in pending] == [("gone1", True)]


def test_a_removal_applied_ahead_and_stopped_by_sigterm_leaves_no_sighting(host_ns, tmp_path):
    """The same when SIGTERM comes while IPv4 is planned, the smaller IPv6 table's
    removal already in (gc applies it meanwhile): that way out (plan_gc's) flushed the
    removed ports' flows but left the state file, and with it the removed IPv6 chain's
    sighting from the run before; the container started again, seen by the next gc
    during its ADD, lost its IPv6 chain at once. Now that way out forgets every
    sighting too: both chains are pending, first seen now."""
    conf = rp.plugin_conf("mynet", ["10.88.0.5/16", "fd00::5/64"], PORTS)
    rp.run_plugin("ADD", host_ns, "gone1", conf, check=True)
    live = rp.plugin_conf("mynet", ["10.88.0.6/16"], PORTS)  # IPv4 the bigger table
    rp.run_plugin("ADD", host_ns, "live1", live, check=True)
    (tmp_path / "cni" / "results").mkdir(parents=True)
    argv = ["gc", "--netns", host_ns, "--cni-cache-dir", str(tmp_path / "cni"),
            "--keep", "live1", "--min-age", "1s", "--yes"]  # fmt: skip
    env = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run")}
    pm_run(argv, env=env)  # sighted
    time.sleep(1.2)
    code, _out, err = killed_while_writing(argv, env, "ahead", tmp_path / "marker")
    assert code == -signal.SIGTERM, err
    assert chain_name("mynet", "gone1") not in rp.save(host_ns, 6)

    # Started again (its runtime's DEL of what is left, then its ADD), not cached yet.
    rp.run_plugin("DEL", host_ns, "gone1", conf, check=True)
    rp.run_plugin("ADD", host_ns, "gone1", conf, check=True)
    done = pm_run([*argv, "-o", "json"], env=env)
    assert done.returncode == 0, done.stderr
    assert chain_name("mynet", "gone1") in rp.save(host_ns, 6)
    assert chain_name("mynet", "gone1") in rp.save(host_ns, 4)
    pending = json.loads(done.stdout)["pending"]
    assert sorted((p["container_id"], p["family"], p["seen_seconds"] < 1) for p in pending) == [
        ("gone1", 4, True), ("gone1", 6, True)
    ]  # fmt: skip


@pytest.mark.parametrize("where", ["converge", "save", "ahead"])
def test_a_removal_sigkilled_before_its_state_save_leaves_no_sighting_of_what_it_removed(
    host_ns, tmp_path, where
):
    """SIGKILL (the OOM killer, a pod's grace period over) once gc's removal went in,
    before its state save: nothing runs on the way out, so the file kept the removed
    chains' sightings from the run before; the same container started again under its
    ID (podman restart), seen by the next gc during its ADD before libcni wrote its
    cache entry, had that old sighting pass --min-age and lost its chain at once. Now
    the sightings of the chains a transaction removes leave the file before it goes
    in: both chains are pending, first seen now. IPv4's removal in order (`converge`),
    every removal in (`save`), and the smaller IPv6 table's applied ahead (`ahead`)."""
    conf = rp.plugin_conf("mynet", ["10.88.0.5/16", "fd00::5/64"], PORTS)
    rp.run_plugin("ADD", host_ns, "gone1", conf, check=True)
    live = rp.plugin_conf("mynet", ["10.88.0.6/16"], PORTS)  # IPv4 the bigger table
    rp.run_plugin("ADD", host_ns, "live1", live, check=True)
    (tmp_path / "cni" / "results").mkdir(parents=True)
    argv = ["gc", "--netns", host_ns, "--cni-cache-dir", str(tmp_path / "cni"),
            "--keep", "live1", "--min-age", "1s", "--yes"]  # fmt: skip
    env = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run")}
    pm_run(argv, env=env)  # sighted
    time.sleep(1.2)
    code, _out, err = killed_while_writing(argv, env, where, tmp_path / "marker", signal.SIGKILL)
    assert code == -signal.SIGKILL, err
    gone = {6} if where == "ahead" else {4, 6}  # (IPv6, the smaller, went in ahead)
    for family in gone:
        assert chain_name("mynet", "gone1") not in rp.save(host_ns, family)

    rp.run_plugin("DEL", host_ns, "gone1", conf, check=True)  # its runtime's DEL, then
    rp.run_plugin("ADD", host_ns, "gone1", conf, check=True)  # started again, not cached
    done = pm_run([*argv, "-o", "json"], env=env)
    assert done.returncode == 0, done.stderr
    # (`ahead`: IPv4's chain was never removed, and a container that comes back while
    # its chain waits out --min-age is a limit of its own: docs/guarantees.md.)
    for family in gone:
        assert chain_name("mynet", "gone1") in rp.save(host_ns, family)
    pending = json.loads(done.stdout)["pending"]
    assert sorted(
        (p["container_id"], p["family"], p["seen_seconds"] < 1)
        for p in pending
        if p["family"] in gone
    ) == [("gone1", family, True) for family in sorted(gone)]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_gc_reports_its_removal_says_the_removal_went_in(host_ns, tmp_path, sig):
    """SIGTERM or Ctrl-C once gc's removal, its UDP flush and its state save were done,
    while it printed what it removed (a table of 1,200 rows, the metrics file): the
    line was "aborted" alone (h169: 1 run in 4 at a random moment on 2,000 chains),
    nothing on stdout yet, so the operator took it that nothing was removed, and the
    next gc said "nothing to remove". Now it says the removal went in, as a signal
    during the removal does."""
    udp = [{"hostPort": 6000, "containerPort": 53, "protocol": "udp"}]
    rp.run_plugin("ADD", host_ns, "gone1", rp.plugin_conf("mynet", ["10.88.0.5/16"], udp),
                  check=True)  # fmt: skip
    (tmp_path / "cni" / "results").mkdir(parents=True)
    argv = ["gc", "--netns", host_ns, "--cni-cache-dir", str(tmp_path / "cni"),
            "--keep", "live1", "--min-age", "0", "--yes"]  # fmt: skip
    env = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run")}
    code, out, err = killed_while_writing(argv, env, "gc-show", tmp_path / "marker", sig)
    assert chain_name("mynet", "gone1") not in rp.save(host_ns)
    word = "terminated" if sig == signal.SIGTERM else "aborted"
    assert code == (-signal.SIGTERM if sig == signal.SIGTERM else 130), err
    assert out == ""
    assert without_cache_note(err) == (
        f"portmapctl: {word}: the removal of 1 chain had gone in, or was going in"
        " (`portmapctl gc --dry-run` shows what is left)\n"
    )
    # A dry run removed nothing, whatever its table says would go.
    rp.run_plugin("ADD", host_ns, "gone2", rp.plugin_conf("mynet", ["10.88.0.6/16"], udp),
                  check=True)  # fmt: skip
    (tmp_path / "marker").unlink()
    code, out, err = killed_while_writing([*argv[:-1], "--dry-run"], env, "gc-show",
                                          tmp_path / "marker", sig)  # fmt: skip
    assert chain_name("mynet", "gone2") in rp.save(host_ns)
    assert without_cache_note(err) == f"portmapctl: {word}\n"


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_sigterm_after_a_repair_went_in_still_flushes_its_udp_flows(host_ns, tmp_path, backend):
    """check --repair after a firewall flush, SIGTERMed once its IPv4 transaction went
    in (1 run in 5 at a random moment, at 1,500 containers): the UDP flows that took
    the un-NATed path while the rules were gone were never flushed, and the next check
    --repair found the node healthy, so they stayed pinned to the host. Now what went
    in gets the plugin's side effects on the way out. nftables: the same after `nft
    delete table` (upstream v1.9.1's container), SIGTERMed once `nft -f` went in."""
    cache = tmp_path / "cni"
    udp = [{"hostPort": 6000, "containerPort": 53, "protocol": "udp"}]
    if backend == "nftables":
        rp.require(upstream.available())
        conf = upstream.nft_conf("mynet", ["10.88.0.5/16"], udp)
        upstream.run("v1.9.1", "ADD", host_ns, "c1", conf, check=True)
        upstream.nft(host_ns, "delete", "table", "ip", "cni_hostport")  # a firewall reload
    else:
        conf = rp.plugin_conf("mynet", ["10.88.0.5/16"], udp)
        rp.run_plugin("ADD", host_ns, "c1", conf, check=True)
        rp.iptables(host_ns, ["-t", "nat", "-F"])  # a firewall reload
    rp.write_cni_cache(cache, "mynet", "c1", "eth0", conf, udp, ["10.88.0.5/16"])
    subprocess.run(["ip", "-n", host_ns, "addr", "replace", "10.0.0.1/32", "dev", "lo"],
                   check=True)  # fmt: skip
    _conntrack(host_ns, "-I", "-p", "udp", "-s", "192.0.2.7", "-d", "10.0.0.1",
               "--sport", "40001", "--dport", "6000", "-t", "100")  # fmt: skip
    argv = ["check", "--repair", "-q", "--netns", host_ns, "--cni-cache-dir", str(cache)]
    env = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run")}
    where = "repair" if backend == "iptables" else "nft-repair"
    code, _out, err = killed_while_writing(argv, env, where, tmp_path / "marker")
    assert code == -signal.SIGTERM, err
    # What went in is said: "terminated" alone read as "nothing was written".
    assert without_cache_note(err) == REPAIR_WENT_IN
    if backend == "nftables":
        assert 'comment "c1"' in upstream.ruleset_text(host_ns)
    else:
        assert f"-j {chain_name('mynet', 'c1')}" in rp.save(host_ns)
    assert "dport=6000" not in _conntrack(host_ns, "-L", "-p", "udp")


@pytest.mark.parametrize(
    "backend, extra",
    [("nft", ()), ("legacy", ()), ("nft", ("--no-flush-udp",)), ("nftables", ())],
    ids=["iptables-nft", "iptables-legacy", "no-flush-udp", "nftables"],
)
def test_sigterm_after_a_one_mapping_repair_went_in_still_flushes_its_udp_flows(
    host_ns, tmp_path, backend, extra
):
    """The same for `check --repair` of one mapping given on the command line (as the
    plugin's CHECK is asked): SIGTERMed once its IPv4 transaction (nftables: its `nft
    -f`) went in, the flow that took the un-NATed path while the rules were gone stayed
    pinned there, and the next check found the mapping healthy. Now it is flushed on
    the way out (and route_localnet set on the pod interface, as the plugin's ADD
    does); --no-flush-udp keeps it, as a whole run does."""
    ns_run(host_ns, "ip", "link", "add", "cni0", "type", "veth", "peer", "name", "cni0p")
    ns_run(host_ns, "ip", "addr", "add", "10.88.0.1/16", "dev", "cni0")
    for device in ("cni0", "cni0p"):
        ns_run(host_ns, "ip", "link", "set", device, "up")
    udp = [{"hostPort": 6000, "containerPort": 53, "protocol": "udp"}]
    mapping = ["--network", "mynet", "--container", "c1", "--ip", "10.88.0.5/16",
               "-p", "6000:53/udp"]  # fmt: skip
    if backend == "nftables":
        rp.require(upstream.available())
        conf = upstream.nft_conf("mynet", ["10.88.0.5/16"], udp)
        upstream.run("v1.9.1", "ADD", host_ns, "c1", conf, check=True)
        upstream.nft(host_ns, "delete", "table", "ip", "cni_hostport")  # a firewall reload
        mapping += ["--backend", "nftables"]
    else:
        conf = rp.plugin_conf("mynet", ["10.88.0.5/16"], udp)
        rp.run_plugin("ADD", host_ns, "c1", conf, mode=backend, check=True)
        rp.iptables(host_ns, ["-t", "nat", "-F"], mode=backend)  # a firewall reload
        mapping += ["--iptables", backend]
    ns_run(host_ns, "sysctl", "-qw", "net.ipv4.conf.cni0.route_localnet=0")
    subprocess.run(["ip", "-n", host_ns, "addr", "replace", "10.0.0.1/32", "dev", "lo"],
                   check=True)  # fmt: skip
    _conntrack(host_ns, "-I", "-p", "udp", "-s", "192.0.2.7", "-d", "10.0.0.1",
               "--sport", "40001", "--dport", "6000", "-t", "100")  # fmt: skip
    argv = ["check", "--repair", "-q", "--netns", host_ns, *mapping, *extra]
    env = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run")}
    where = "nft-write" if backend == "nftables" else "repair"
    code, _out, err = killed_while_writing(argv, env, where, tmp_path / "marker")
    assert code == -signal.SIGTERM, err
    assert without_cache_note(err) == REPAIR_WENT_IN
    if backend == "nftables":
        assert 'comment "c1"' in upstream.ruleset_text(host_ns)
    else:
        assert f"-j {chain_name('mynet', 'c1')}" in rp.save(host_ns, 4, backend)
    flows = _conntrack(host_ns, "-L", "-p", "udp")
    assert ("dport=6000" in flows) == bool(extra), flows
    assert route_localnet(host_ns, "cni0") == "1"


@pytest.mark.parametrize("where", ["repair-check-after", "repair-returned"])
@pytest.mark.parametrize("scope", ["node", "mapping", "nft-mapping"])
def test_a_signal_once_a_repair_is_done_says_the_repair_went_in(host_ns, tmp_path, where, scope):
    """SIGTERM once check --repair's transactions and their side effects were done:
    while it checked again (`repair-check-after`), or reported (`repair-returned`:
    its "repaired:" lines, the table, the metrics file). The line was "terminated"
    alone (h169: 1 run in 5 at a random moment, 1,000 containers repaired after a
    flush, on iptables-legacy; a Ctrl-C in the middle of the "repaired:" lines read as
    "nothing more was repaired"). Now it says the repair went in, as a signal during
    its write does."""
    cache = tmp_path / "cni"
    tcp = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
    if scope == "nft-mapping":
        rp.require(upstream.available())
        conf = upstream.nft_conf("mynet", ["10.88.0.5/16"], tcp)
        upstream.run("v1.9.1", "ADD", host_ns, "c1", conf, check=True)
        upstream.nft(host_ns, "delete", "table", "ip", "cni_hostport")  # a firewall reload
    else:
        conf = rp.plugin_conf("mynet", ["10.88.0.5/16"], tcp)
        rp.run_plugin("ADD", host_ns, "c1", conf, check=True)
        rp.iptables(host_ns, ["-t", "nat", "-F"])  # a firewall reload
    rp.write_cni_cache(cache, "mynet", "c1", "eth0", conf, tcp, ["10.88.0.5/16"])
    argv = ["check", "--repair", "--netns", host_ns, "--cni-cache-dir", str(cache)]
    if scope != "node":
        argv += ["--network", "mynet", "--container", "c1", "--ip", "10.88.0.5/16",
                 "-p", "8080:80/tcp"]  # fmt: skip
    argv += ["--backend", "nftables"] if scope == "nft-mapping" else []
    env = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run")}
    code, out, err = killed_while_writing(argv, env, where, tmp_path / "marker")
    assert code == -signal.SIGTERM, err
    if scope == "nft-mapping":
        assert 'comment "c1"' in upstream.ruleset_text(host_ns)
    else:
        assert f"-j {chain_name('mynet', 'c1')}" in rp.save(host_ns)
    assert out == ""
    assert without_cache_note(err) == REPAIR_WENT_IN
    # Nothing to repair, nothing said but the signal.
    (tmp_path / "marker").unlink()
    code, out, err = killed_while_writing(argv, env, "repair-returned", tmp_path / "marker")
    assert without_cache_note(err) == "portmapctl: terminated\n"


def test_stale_temporary_files_of_killed_runs_go_on_the_next_save(host_ns, tmp_path):
    """A SIGKILLed run cannot clean up: its temporary files go with the next save,
    only those of our own names and older than a minute (a writer running now is
    never that slow); anything else in the directories stays."""
    import pmctl

    argv, run_dir, env = _node(host_ns, tmp_path)
    metrics = tmp_path / "textfile" / "portmapctl-gc.prom"
    metrics.parent.mkdir()
    run_dir.mkdir(mode=0o700)
    old = time.time() - 120
    stale = [run_dir / f"{gc_state.STATE_FILE}.4242.tmp", Path(f"{metrics}.4242.139872")]
    kept = [
        run_dir / f"{gc_state.STATE_FILE}.4243.tmp",  # fresh: maybe a writer at work
        run_dir / "something-else.4242.tmp",  # not ours
        Path(f"{metrics}.old"),  # not the writer's name
        metrics.parent / "node.prom.4242.139872",  # another exporter's
    ]
    for path in stale + kept:
        path.write_text("x")
    for path in [*stale, *kept[1:]]:
        os.utime(path, (old, old))
    done = pmctl.run([*argv, "--metrics-file", str(metrics)], env=env)
    assert done.returncode == 0, done.stderr
    assert (run_dir / gc_state.STATE_FILE).exists() and metrics.exists()
    assert [p for p in stale if p.exists()] == []
    assert [p for p in kept if not p.exists()] == []


# An iptables-nft-save that hangs (a stuck kernel, a held lock): it says its PID, then
# sleeps as that very process.
HUNG_SAVE = '#!/bin/sh\necho $$ >> "$PMT_PIDS"\nexec sleep 600\n'


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("command", [["list"], ["check"], ["gc", "--yes", "-q", "--keep", "c1"]])
def test_sigterm_during_a_hung_iptables_save_leaves_no_save_behind(host_ns, tmp_path, command):
    """The saves of both families are waited for in a thread while the main one reads
    the CNI cache. SIGTERM to portmapctl alone (`kill
    PID`, systemd's KillMode=mixed) ended the run by the signal while that thread still
    waited: the hung iptables-save children outlived it, one pair more each run of a
    cron job. Now the run stops them on its way out."""
    shims = tmp_path / "bin"
    shims.mkdir()
    for tool in ("iptables-nft-save", "ip6tables-nft-save"):
        (shims / tool).write_text(HUNG_SAVE)
        (shims / tool).chmod(0o755)
    (shims / "iptables").symlink_to("/usr/sbin/iptables-nft")
    (tmp_path / "cni" / "results").mkdir(parents=True)
    pids = tmp_path / "pids"
    env = dict(
        os.environ,
        PATH=f"{shims}:{os.environ['PATH']}",
        PMT_PIDS=str(pids),
        PORTMAPCTL_RUN_DIR=str(tmp_path / "run"),
        PORTMAPCTL_IPTABLES="auto",
    )
    argv = [*command, "--netns", host_ns, "--cni-cache-dir", str(tmp_path / "cni"),
            "--backend", "iptables"]  # fmt: skip
    child = subprocess.Popen(
        [sys.executable, "-m", "portmapctl", *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # the signal reaches portmapctl alone, not its children
    )
    started: list = []
    try:
        deadline = time.monotonic() + 30
        while len(started) < 2:
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the saves never started"
            time.sleep(0.05)
            started = pids.read_text().split() if pids.exists() else []
        time.sleep(0.3)  # (the cache is read meanwhile: an empty one, at once)
        child.send_signal(signal.SIGTERM)
        _out, err = child.communicate(timeout=30)
        time.sleep(0.2)
        left = [int(pid) for pid in started if _alive(int(pid))]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for pid in pids.read_text().split() if pids.exists() else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    assert left == []
    assert child.returncode == -signal.SIGTERM, err
    assert err == "portmapctl: terminated\n"


@pytest.mark.parametrize(
    "extra",
    [(), ("--iptables", "legacy"), ("--backend", "nftables"), ("--no-flush-udp",),
     ("add-early",), ("ahead-start",)],
    ids=["nft-ahead", "legacy", "nftables", "no-flush-udp", "nft-ahead-before-add",
         "nft-ahead-starting"],
)  # fmt: skip
def test_sigterm_after_adds_write_still_flushes_the_flows_it_misroutes(host_ns, tmp_path, extra):
    """add SIGTERMed once its write went in, before its UDP conntrack flush: the flows
    to its UDP host port that began before the mapping (never DNATed) or were DNATed to
    an old destination kept going there until idle, as gc's and check --repair's did
    before their fix. Now they are flushed on the way out, as theirs are; a flow made
    through the new rules meanwhile stays; the run still ends by SIGTERM with its one
    line. Held on each way of writing: iptables-nft's write ahead (nf_tables batch), a
    legacy restore, the nftables backend's nft -f; and once the write ahead went in
    while add was still starting: before ops.add was entered, or while the write
    ahead's other threads were started (there the signal waits until the write is
    known; before, the run ended with the write unseen). --no-flush-udp keeps them
    all."""
    subprocess.run(["ip", "-n", host_ns, "addr", "replace", "10.0.0.1/32", "dev", "lo"],
                   check=True)  # fmt: skip
    for args in (
        ("--sport", "40001"),  # began before the mapping
        (
            "--sport",
            "40002",
            "--reply-src",
            "10.88.0.9",
            "--reply-dst",
            "192.0.2.7",
            "--reply-port-src",
            "53",
            "--reply-port-dst",
            "40002",
        ),
    ):  # an old one
        _conntrack(host_ns, "-I", "-p", "udp", "-s", "192.0.2.7", "-d", "10.0.0.1",
                   "--dport", "6000", "-t", "100", *args)  # fmt: skip
    during = ("-I -p udp -s 192.0.2.8 -d 10.0.0.1 --sport 40003 --dport 6000 -t 100"
              " --reply-src 10.88.0.5 --reply-dst 192.0.2.8 --reply-port-src 53"
              " --reply-port-dst 40003")  # fmt: skip
    (tmp_path / "cni" / "results").mkdir(parents=True)
    node = ["add", "--netns", host_ns, "--cni-cache-dir", str(tmp_path / "cni"), "-q",
            "--network", "mynet", *(a for a in extra if not a.startswith(("add-", "ahead-")))]  # fmt: skip
    # Another container first: a node with the shared chains, where iptables-nft's
    # write ahead goes in (on an empty one it is refused, and add reads and plans).
    done = pm_run([*node, "--container", "c0", "--ip", "10.88.0.4/16", "-p", "7000:53/udp"])
    assert done.returncode == 0, done.stderr
    argv = [*node, "--container", "c1", "--ip", "10.88.0.5/16", "-p", "6000:53/udp"]
    env = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run"), "PMT_DURING": during}
    where = extra[0] if extra and extra[0] in ("add-early", "ahead-start") else "add"
    code, _out, err = killed_while_writing(argv, env, where, tmp_path / "marker")
    assert code == -signal.SIGTERM, err
    assert without_cache_note(err) == (
        "portmapctl: terminated: the write of mynet/c1 may have gone in"
        " (the same add again finishes what is missing)\n"
    )
    if "--backend" in extra:
        assert 'comment "c1"' in upstream.ruleset_text(host_ns)
    else:
        mode = "legacy" if "legacy" in extra else "nft"
        assert f"-j {chain_name('mynet', 'c1')}" in rp.save(host_ns, 4, mode)
    flows = _conntrack(host_ns, "-L", "-p", "udp")
    kept = {sport for sport in (40001, 40002, 40003) if f"sport={sport}" in flows}
    assert kept == ({40001, 40002, 40003} if "--no-flush-udp" in extra else {40003}), flows


@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_sigterm_while_add_looks_around_says_its_write_went_in(host_ns, tmp_path, mode):
    """add SIGTERMed once its write and its UDP flush were done, while it lists the
    node for its warnings (another tool's rules, the shadow listing): add had emptied
    what it owed the flush, and the line said "terminated" alone, as if nothing had
    been written (review helper-134). It says the write may have gone in there too."""
    (tmp_path / "cni" / "results").mkdir(parents=True)
    node = ["add", "--netns", host_ns, "--cni-cache-dir", str(tmp_path / "cni"), "-q",
            "--network", "mynet", "--iptables", mode]  # fmt: skip
    # Another container first: the shared chains are there, add writes without reading
    # (iptables-nft) or plans from a read (legacy); either way it then looks around.
    done = pm_run([*node, "--container", "c0", "--ip", "10.88.0.4/16", "-p", "7000:53/udp"])
    assert done.returncode == 0, done.stderr
    argv = [*node, "--container", "c1", "--ip", "10.88.0.5/16", "-p", "6000:53/udp"]
    env = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run")}
    code, _out, err = killed_while_writing(argv, env, "add-looking", tmp_path / "marker")
    assert code == -signal.SIGTERM, err
    assert without_cache_note(err) == (
        "portmapctl: terminated: the write of mynet/c1 may have gone in"
        " (the same add again finishes what is missing)\n"
    )
    assert f"-j {chain_name('mynet', 'c1')}" in rp.save(host_ns, 4, mode)
