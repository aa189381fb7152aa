"""`gc`: what it removes, what it never touches, and how it behaves under cron.

Pure planning on the real-plugin fixtures first; then the command against the real
plugin and real iptables (nf_tables and legacy) in throwaway namespaces: live
containers survive (the plugin's CHECK passes), foreign rules stay byte for byte,
retries when the plugin changes the table meanwhile, refusals change nothing, and a
plugin that keeps adding and deleting containers while gc runs in a loop loses nothing.
"""

from __future__ import annotations

import json
import os
import pty
import select
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest
import realplugin as rp
from gc_helpers import Node_, backdate, node  # noqa: F401
from gc_helpers import ports as _ports
from json_schemas import validated
from pmctl import assert_error, run
from run_dir_helpers import full_run_dir

from portmapctl import render
from portmapctl.errors import ApplyFailed
from portmapctl.host import netns, paths
from portmapctl.iptables.access.restore import RestoreBackend
from portmapctl.iptables.chains import OLD_TOPLEVEL_SNAT, TOPLEVEL_DNAT, chain_name
from portmapctl.iptables.inventory import build
from portmapctl.iptables.ruleset import NatTable, parse_save
from portmapctl.ops.gc import (
    GcOptions,
    Sources,
    gc,
)
from portmapctl.ops.gc import state as gc_state
from portmapctl.ops.gc.state import ChainKey
from portmapctl.ops.node import APPLY_TRIES, Node, NodeOptions

# --- valid-attachments documents ----------------------------------------------------------


# --- planning on real plugin output -------------------------------------------------------


# --- the teardown transaction ---------------------------------------------------------------


# --- the state file -------------------------------------------------------------------------


# --- the command against the real plugin --------------------------------------------------------


@pytest.fixture
def nft_node(host_ns, tmp_path) -> Node_:
    """For behaviour that does not depend on the iptables flavour."""
    if not rp.mode_available("nft")[0]:
        pytest.skip(rp.mode_available("nft")[1])
    cache = tmp_path / "cni"
    (cache / "results").mkdir(parents=True)
    return Node_(host_ns, "nft", cache)


def _foreign_rules(node: Node_) -> None:
    node.ipt(4, "-N", "DOCKER")
    node.ipt(4, "-A", "PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "DOCKER")
    node.ipt(4, "-A", "DOCKER", "-i", "docker0", "-j", "RETURN")
    node.ipt(
        4, "-A", "POSTROUTING", "-s", "172.17.0.0/16", "!", "-o", "docker0", "-j", "MASQUERADE"
    )
    node.ipt(6, "-A", "POSTROUTING", "-s", "fd00:dead::/64", "-j", "MASQUERADE")
    comment = 'a "quoted" \\ comment'
    node.ipt(4, "-I", "OUTPUT", "-p", "udp", "-m", "comment", "--comment", comment, "-j", "ACCEPT")


def _without(lines: List[str], chains: set) -> List[str]:
    """The save lines minus the chains and every rule that jumps to them."""
    kept = []
    for line in lines:
        words = line.split()
        if line.startswith(":") and line[1:].split()[0] in chains:
            continue
        if line.startswith("-A ") and (words[1] in chains or words[-1] in chains):
            continue
        kept.append(line)
    return kept


def _conntrack(node: Node_, *args: str) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", node.ns, "conntrack", *args], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def _udp_flow(node: Node_, sport: int, dport: int, to: Optional[str] = None) -> None:
    """To one of the node's own addresses (gc never touches forwarded flows); DNATed to
    `to` (a container's address, the same port), else never DNATed."""
    subprocess.run(["ip", "-n", node.ns, "addr", "replace", "10.0.0.1/32", "dev", "lo"],
                   check=True)  # fmt: skip
    _conntrack(node, "-I", "-p", "udp", "-s", "192.0.2.7", "-d", "10.0.0.1", "--sport", str(sport),
               "--dport", str(dport), "--reply-src", to or "10.0.0.1", "--reply-dst", "192.0.2.7",
               "--reply-port-src", str(dport), "--reply-port-dst", str(sport), "-t", "100")  # fmt: skip


def _udp_dports(node: Node_) -> List[int]:
    out = _conntrack(node, "-L", "-p", "udp")
    return sorted(
        int(word.split("=")[1])
        for line in out.splitlines()
        if line.startswith("udp")
        for word in line.split()[3:8]
        if word.startswith("dport=")
    )


def test_gc_json_lists_its_chains_in_the_order_of_its_table(node: Node_):
    """gc's JSON listed `pending` (and `removed`) in the plan's order, IPv4's table
    then IPv6's (the nftables rules after both), its table by network and container,
    then family: a script pairing the two, or reading a container's rows together,
    read them apart. Both now go by the table's order (render.gc.table_order)."""
    node.add("gcnet", "live1", ["10.88.0.11/16"], _ports("8090/tcp"))
    for i, (network, cid) in enumerate([("zeta", "b2"), ("alpha", "c3"), ("zeta", "a1")]):
        ips = [f"10.88.0.{21 + i}/16", f"fd00::{21 + i}/64"]
        node.add(network, cid, ips, _ports(f"{9091 + i}/tcp"), cache=False)

    def rows(stdout: str) -> List[tuple]:
        return [(int(line.split()[0][1:]), line.split()[2]) for line in stdout.splitlines()
                if line.startswith(("v4 ", "v6 "))]  # fmt: skip

    def listed(doc: dict, key: str) -> List[tuple]:
        return [(c["family"], c["container_id"]) for c in doc[key]]

    table_order = [(4, "c3"), (6, "c3"), (4, "a1"), (6, "a1"), (4, "b2"), (6, "b2")]
    for min_age, key in (("60s", "pending"), ("0", "removed")):
        shown = node.gc("--dry-run", "--min-age", min_age)
        assert shown.returncode == 0, shown.stderr
        assert rows(shown.stdout) == table_order, shown.stdout
        done = node.gc("--dry-run", "--min-age", min_age, "-o", "json")
        assert done.returncode == 0, done.stderr
        doc = validated("gc", done.stdout)
        assert listed(doc, key) == table_order, doc


def test_gc_leaves_exactly_the_live_containers_and_every_foreign_rule(node: Node_):
    _foreign_rules(node)
    node.add("gcnet", "live1", ["10.88.0.11/16"], _ports("8080/tcp", "5353/udp"))
    node.add("gcnet", "live2", ["10.88.0.12/16", "fd00::12/64"], _ports("8081/tcp"))
    node.add("gcnet", "stale1", ["10.88.0.13/16"], _ports("9090/tcp", "6000/udp"), cache=False)
    node.add("gcnet", "stale2", ["10.88.0.14/16", "fd00::14/64"], _ports("9091/tcp"), cache=False)
    # Pre-2018 SN- chains: one of a live container (stays), two of dead ones (go).
    live_sn = node.legacy_snat("gcnet", "live1", "10.88.0.11")
    stale_sn = {
        node.legacy_snat("gcnet", "stale1", "10.88.0.13"),
        node.legacy_snat("gcnet", "gone", "10.88.0.99"),
    }
    # A foreign rule in a shared chain and a foreign jump into CNI-HOSTPORT-DNAT stay.
    node.ipt(4, "-I", TOPLEVEL_DNAT, "1", "-p", "tcp", "--dport", "22", "-j", "RETURN")
    for sport in (40001, 40002):
        _udp_flow(node, sport, 6000, "10.88.0.13")  # to stale1's UDP port: deleted
    _udp_flow(node, 40003, 5353, "10.88.0.11")  # live1's UDP port: kept
    _udp_flow(node, 40005, 6000)  # the host's own on stale1's port (never DNATed): kept
    _udp_flow(node, 40004, 7000)  # not a mapped port: kept
    before = {f: node.lines(f) for f in (4, 6)}

    done = node.gc("--yes", "--min-age", "0", "-o", "json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)

    stale_dn = {chain_name("gcnet", c) for c in ("stale1", "stale2")}
    removed = {(r["family"], r["chain"]) for r in result["removed"]}
    assert removed == {(4, c) for c in stale_dn | stale_sn} | {(6, chain_name("gcnet", "stale2"))}
    by_chain = {(r["family"], r["chain"]): r for r in result["removed"]}
    stale1 = by_chain[(4, chain_name("gcnet", "stale1"))]
    assert stale1["network"] == "gcnet" and stale1["container_id"] == "stale1"
    assert sorted((p["protocol"], p["host_port"]) for p in stale1["host_ports"]) == [
        ("tcp", 9090),
        ("udp", 6000),
    ]
    assert by_chain[(4, chain_name("gcnet", "stale1", "SN-"))]["chain_type"] == "legacy-snat"
    assert result["pending"] == [] and result["dry_run"] is False
    assert result["kept"] == 4  # live1 and live2 in v4, live2 in v6, live1's SN- chain
    assert result["conntrack_deleted"] == 2 and result["shared_removed"] == []
    assert _udp_dports(node) == [5353, 6000, 7000]  # 6000: the host's own

    # Everything else is exactly as it was, line for line, in both families.
    for family in (4, 6):
        assert node.lines(family) == _without(before[family], stale_dn | stale_sn)
    assert any(live_sn in line for line in node.lines(4))
    for cid in ("live1", "live2"):
        node.check(cid)

    # Idempotent: a second run finds nothing and changes nothing.
    after = {f: node.lines(f) for f in (4, 6)}
    again = json.loads(node.gc("--yes", "--min-age", "0", "-o", "json").stdout)
    assert again["removed"] == [] and again["kept"] == 4
    assert {f: node.lines(f) for f in (4, 6)} == after


def test_a_restore_killed_after_it_went_in_is_reported_and_its_flows_flushed(node: Node_, tmp_path):
    """iptables-restore killed just after its commit (the OOM killer, a stop signal
    to the group): gc cannot know from the tool whether it went in. The next read
    tells: its chains are gone, so they are what gc removed, and their UDP flows are
    flushed (before: the re-plan found nothing to do, gc said it removed nothing, and
    the flows to the dead container stayed with no later run knowing their port)."""
    node.add("gcnet", "live1", ["10.88.0.11/16"], _ports("8080/tcp", "5353/udp"))
    node.add("gcnet", "stale1", ["10.88.0.13/16"], _ports("9090/tcp", "6000/udp"), cache=False)
    _udp_flow(node, 40001, 6000, "10.88.0.13")  # to stale1's port: goes with its chain
    _udp_flow(node, 40002, 5353, "10.88.0.11")  # live1's: stays
    wrap, killed = tmp_path / "wrap", tmp_path / "killed"
    wrap.mkdir()
    tool = f"iptables-{node.mode}-restore"
    (wrap / tool).write_text(
        f'#!/bin/bash\n/usr/sbin/{tool} "$@"\nrc=$?\n'
        f"if [ ! -e {killed} ]; then touch {killed}; kill -KILL $$; fi\nexit $rc\n"
    )
    (wrap / tool).chmod(0o755)
    env = {"PATH": f"{wrap}:{os.environ['PATH']}", "PORTMAPCTL_NFT_BATCH": "0"}
    done = run(["gc", "--netns", node.ns, "--iptables", node.mode, "--cni-cache-dir",
                str(node.cache), "--yes", "--min-age", "0", "-o", "json"], env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert killed.exists()  # (the wrapper was the restore run)
    result = json.loads(done.stdout)
    assert [(r["family"], r["chain"]) for r in result["removed"]] == [
        (4, chain_name("gcnet", "stale1"))
    ]
    assert [w for w in result["warnings"] if "it went in" in w and "SIGKILL" in w], result
    assert result["conntrack_deleted"] == 1
    assert _udp_dports(node) == [5353]
    assert not any(chain_name("gcnet", "stale1") in line for line in node.lines(4))
    node.check("live1")


def test_gc_removes_the_legacy_snat_chain_once_empty(node: Node_):
    node.ipt(4, "-A", "POSTROUTING", "-o", "eth9", "-j", "MASQUERADE")
    node.add("gcnet", "live1", ["10.88.0.11/16"], _ports("8080/tcp"))
    node.add("gcnet", "old1", ["10.88.0.12/16"], _ports("6001/udp"), cache=False)
    sns = {
        node.legacy_snat("gcnet", cid, ip)
        for cid, ip in (("old1", "10.88.0.12"), ("old2", "10.88.0.13"))
    }
    node.ipt(4, "-A", "POSTROUTING", "-o", "eth8", "-j", "MASQUERADE")
    _udp_flow(node, 40001, 6001)
    before = node.lines(4)

    done = node.gc("--yes", "--min-age", "0", "--no-flush-udp", "-q")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1, done.stdout
    assert done.stdout.startswith("gc: removed 3 chains of 2 containers and CNI-HOSTPORT-SNAT (v4)")
    assert "0 UDP conntrack entries deleted" in done.stdout
    gone = sns | {chain_name("gcnet", "old1"), OLD_TOPLEVEL_SNAT}
    assert node.lines(4) == _without(before, gone)
    assert not any("SNAT" in line for line in node.lines(4))
    assert _udp_dports(node) == [6001]  # --no-flush-udp
    node.check("live1")


def test_a_declined_gc_names_the_shared_chain_its_question_offered(node: Node_):
    """The question offered "3 chains of 2 containers and CNI-HOSTPORT-SNAT (v4)"; told
    no, the summary said "(3 chains of 2 containers not confirmed)": not what it
    offered, in a -q log the shared chain left out (4688b37 says the question's words)."""
    node.add("gcnet", "live1", ["10.88.0.11/16"], _ports("8080/tcp"))
    node.add("gcnet", "old1", ["10.88.0.12/16"], _ports("6001/udp"), cache=False)
    for cid, ip in (("old1", "10.88.0.12"), ("old2", "10.88.0.13")):
        node.legacy_snat("gcnet", cid, ip)
    before = node.lines(4)
    argv = ["gc", "--netns", node.ns, "--iptables", node.mode, "--cni-cache-dir",
            str(node.cache), "--min-age", "0", "-q"]  # fmt: skip
    offered = "3 chains of 2 containers and CNI-HOSTPORT-SNAT (v4)"
    for answer, why in ((b"n", "not confirmed"), (b"\x04", "offered, no answer")):
        code, shown, stdout = _on_terminal(argv, answer)
        assert code == 0, shown
        assert f"Remove {offered}? [y/N]" in shown, shown
        assert stdout == f"gc: nothing removed ({offered} {why}), 0 pending, 1 kept\n", shown
    assert node.lines(4) == before


def test_the_summary_says_an_orphan_chain_belongs_to_no_known_container(node: Node_):
    """A CNI-DN- chain nothing enters names no container: the summary said "removed
    1 chain of 0 containers"."""
    node.add("gcnet", "live1", ["10.88.0.11/16"], _ports("8080/tcp"))
    orphan = chain_name("gcnet", "gone9")
    node.ipt(4, "-N", orphan)
    node.ipt(4, "-A", orphan, "-p", "tcp", "-j", "DNAT", "--to-destination", "10.88.0.99:80")
    before = node.lines(4)
    dry = node.gc("--dry-run", "--min-age", "0", "-q")
    assert (
        dry.stdout
        == "gc (dry run): would remove 1 chain of no known container, 0 pending, 1 kept\n"
    )
    done = node.gc("--yes", "--min-age", "0", "-q")
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "gc: removed 1 chain of no known container, 0 pending, 1 kept,"
        " 0 UDP conntrack entries deleted\n"
    )
    assert node.lines(4) == _without(before, {orphan})
    node.check("live1")


def test_dry_run_changes_nothing(node: Node_):
    node.add("gcnet", "live1", ["10.88.0.11/16"], _ports("8080/tcp"))
    node.add("gcnet", "stale1", ["10.88.0.12/16", "fd00::12/64"], _ports("6002/udp"), cache=False)
    _udp_flow(node, 40001, 6002)
    before = {f: node.lines(f) for f in (4, 6)}
    done = node.gc("--dry-run", "--min-age", "0", "-o", "wide")  # wide: with the chain
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.endswith("would remove")]
    assert len(rows) == 2 and all(chain_name("gcnet", "stale1") in r for r in rows)
    assert "6002/udp" in rows[0] and "stale1" in rows[0]
    assert "gc (dry run): would remove 2 chains of 1 container," in done.stdout.splitlines()[-1]
    as_json = json.loads(node.gc("--dry-run", "--min-age", "0", "-o", "json").stdout)
    assert as_json["dry_run"] is True and len(as_json["removed"]) == 2
    assert as_json["conntrack_deleted"] == 0
    verbose = node.gc("--dry-run", "--min-age", "0", "-v").stderr
    stale = chain_name("gcnet", "stale1")
    for family in (4, 6):
        shown = verbose.split(f"# IPv{family}:")[1].split("COMMIT")[0]
        assert f"-X {stale}" in shown and f"-D {TOPLEVEL_DNAT} " in shown
    assert {f: node.lines(f) for f in (4, 6)} == before
    assert _udp_dports(node) == [6002]


def test_refusals_change_nothing(nft_node: Node_, tmp_path):
    node = nft_node
    node.add("gcnet", "stale1", ["10.88.0.12/16"], _ports("8080/tcp"), cache=False)
    before = {f: node.lines(f) for f in (4, 6)}
    nowhere = tmp_path / "no-cache"
    bad_doc = tmp_path / "bad.json"
    bad_doc.write_text('[{"containerID": "x y"}]')
    cases = [
        (["--yes"], {"cache": nowhere}, 2, "nothing says which containers are live"),
        (["--min-age", "0"], {}, 2, "--yes"),
        (["--all", "--min-age", "0"], {"cache": nowhere}, 2, "--yes"),
        (["--yes", "--min-age", "soon"], {}, 2, "invalid duration"),
        (["--yes", "--min-age", "-5"], {}, 2, "invalid duration"),
        (["--yes", "--keep", "bad/id"], {}, 2, "invalid --keep container ID"),
        (["--yes", "--valid-attachments", str(tmp_path / "missing.json")], {}, 2, "cannot read"),
        (["--yes", "--valid-attachments", str(bad_doc)], {}, 2, "invalid container ID"),
        (["--yes", "--valid-attachments", "-"], {"stdin": "not json"}, 2, "not valid JSON"),
        (["--yes", "--all", "--family", "5"], {"cache": nowhere}, 2, "--family"),
    ]
    for args, kwargs, code, words in cases:
        assert_error(node.gc(*args, **kwargs), code, words)
    as_nobody = run(
        ["gc", "--netns", node.ns, "--yes", "--all", "--cni-cache-dir", str(nowhere)],
        unprivileged=True,
    )
    assert_error(as_nobody, 3, "root")
    assert {f: node.lines(f) for f in (4, 6)} == before


def test_min_age_keeps_new_chains_pending_and_forgets_changed_or_live_ones(nft_node: Node_):
    node = nft_node
    tag = uuid.uuid4().hex[:8]
    young, revived = f"young-{tag}", f"revived-{tag}"
    # A cached container: an empty cache is no source of liveness (SPEC §3 gc).
    node.add("gcnet", f"live-{tag}", ["10.88.0.20/16"], _ports("8090/tcp"))
    node.add("gcnet", young, ["10.88.0.12/16"], _ports("8080/tcp"), cache=False)
    node.add("gcnet", revived, ["10.88.0.13/16"], _ports("8081/tcp"), cache=False)
    before = node.lines(4)

    first = json.loads(node.gc("--yes", "--min-age", "1h", "-o", "json").stdout)
    assert first["removed"] == [] and len(first["pending"]) == 2
    assert all(p["seen_seconds"] < 1 for p in first["pending"])
    assert node.lines(4) == before
    time.sleep(0.6)
    second = json.loads(node.gc("--yes", "--min-age", "1h", "-o", "json").stdout)
    assert all(p["seen_seconds"] >= 0.5 for p in second["pending"])

    # young changes (the plugin re-ADDs it with another port): its clock starts over.
    # revived gets a cache entry: it is live, and forgotten.
    node.add("gcnet", young, ["10.88.0.12/16"], _ports("8080/tcp", "8082/tcp"), cache=False)
    node.cache_add("gcnet", revived)
    third = json.loads(node.gc("--yes", "--min-age", "0.5s", "-o", "json").stdout)
    assert third["removed"] == []
    assert [(p["container_id"], p["seen_seconds"] < 0.5) for p in third["pending"]] == [
        (young, True)
    ]
    with netns.entered(node.ns):
        key = gc_state.namespace_key(node.ns)
    state = json.loads(Path(paths.RUN_DIR, gc_state.STATE_FILE).read_text())
    mine = [part for k, part in state["namespaces"].items() if k == key]
    assert len(mine) == 1 and list(mine[0]["chains"]) == [
        ChainKey(4, chain_name("gcnet", young)).text()
    ]
    assert stat.S_IMODE(Path(paths.RUN_DIR, gc_state.STATE_FILE).stat().st_mode) == 0o600

    time.sleep(0.6)
    done = json.loads(node.gc("--yes", "--min-age", "0.5s", "-o", "json").stdout)
    assert [r["container_id"] for r in done["removed"]] == [young]
    assert done["removed"][0]["host_ports"] == [
        {"protocol": "tcp", "host_port": 8080},
        {"protocol": "tcp", "host_port": 8082},
    ]
    node.check(revived)
    state = json.loads(Path(paths.RUN_DIR, gc_state.STATE_FILE).read_text())
    assert key not in state["namespaces"]


def test_a_chain_seen_in_one_iptables_flavour_does_not_age_its_twin_in_the_other(host_ns, tmp_path):
    """The state file keys a sighting by family and chain name; iptables-legacy and
    iptables-nft are two tables, each with its own chain of that name. A container's
    dead chain seen pending by a `gc --iptables legacy` gave the very same chain made in
    iptables-nft (the node's iptables switched flavour, the container started again
    under its ID, podman start, and gc looked during its ADD, before libcni wrote its
    cache entry) that sighting: `gc --iptables nft` removed it at once, never having
    seen it ("SEEN 5m00s", removed), which --min-age exists to prevent."""
    for mode in ("nft", "legacy"):
        if not rp.mode_available(mode)[0]:
            pytest.skip(rp.mode_available(mode)[1])
    cache = tmp_path / "cni"
    (cache / "results").mkdir(parents=True)
    legacy, nft = Node_(host_ns, "legacy", cache), Node_(host_ns, "nft", cache)
    legacy.add("gcnet", "live1", ["10.88.213.6/16"], _ports("8090/tcp"))
    nft.add("gcnet", "live1", ["10.88.213.6/16"], _ports("8090/tcp"))
    # (Addresses no other test holds: a young namespace with one would hold the chain.)
    legacy.add("gcnet", "back1", ["10.88.213.7/16"], _ports("8080/tcp"), cache=False)
    first = json.loads(legacy.gc("--dry-run", "--min-age", "1s", "-o", "json").stdout)
    assert [p["container_id"] for p in first["pending"]] == ["back1"]
    time.sleep(1.2)
    # The same container's ADD now goes to iptables-nft: the same chain, the same rules.
    nft.add("gcnet", "back1", ["10.88.213.7/16"], _ports("8080/tcp"), cache=False)
    done = nft.gc("--yes", "--min-age", "1s", "-o", "json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["removed"] == [], "a chain never seen before was removed at once"
    assert [(p["container_id"], p["seen_seconds"] < 1) for p in result["pending"]] == [
        ("back1", True)
    ]
    assert f"-N {chain_name('gcnet', 'back1')}" in nft.lines(4, keep_decl=True)
    # Seen for --min-age in its own table, it goes (the legacy twin stays: not read).
    time.sleep(1.2)
    done = json.loads(nft.gc("--yes", "--min-age", "1s", "-o", "json").stdout)
    assert [r["container_id"] for r in done["removed"]] == ["back1"]
    assert f"-N {chain_name('gcnet', 'back1')}" in legacy.lines(4, keep_decl=True)


def test_every_spelling_of_a_namespace_shares_its_min_age_clock(nft_node: Node_, tmp_path):
    """`--netns NAME`, `/run/netns/NAME`, `/var/run/netns/NAME` and a bind mount of it
    elsewhere are one namespace: a cron job and an operator spelling it differently
    each started a clock of their own (the state was keyed by the spelling), and a
    sighting kept under one spelling outlived a removal made under another."""
    node = nft_node
    node.add("gcnet", "live1", ["10.88.0.20/16"], _ports("8090/tcp"))
    node.add("gcnet", "old1", ["10.88.0.12/16"], _ports("8080/tcp"), cache=False)
    bound = tmp_path / "ns"
    bound.touch()
    subprocess.run(["mount", "--bind", f"/run/netns/{node.ns}", str(bound)], check=True)
    try:

        def gc_as(spelling: str, *args: str) -> dict:
            done = run(
                ["gc", "--netns", spelling, "--iptables", node.mode, "--cni-cache-dir",
                 str(node.cache), "--min-age", "1s", "-o", "json", *args]
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            return json.loads(done.stdout)

        first = gc_as(node.ns, "--yes")
        assert [p["container_id"] for p in first["pending"]] == ["old1"]
        time.sleep(1.1)
        for spelling in (f"/run/netns/{node.ns}", str(bound)):
            looked = gc_as(spelling, "--dry-run")
            assert [r["container_id"] for r in looked["removed"]] == ["old1"], (spelling, looked)
        done = gc_as(f"/var/run/netns/{node.ns}", "--yes")
        assert [r["container_id"] for r in done["removed"]] == ["old1"]
    finally:
        subprocess.run(["umount", str(bound)], check=True)
    with netns.entered(node.ns):
        key = gc_state.namespace_key(node.ns)
    state = json.loads(Path(paths.RUN_DIR, gc_state.STATE_FILE).read_text())
    assert key not in state["namespaces"]  # (no sighting left of what went)
    assert not [k for k in state["namespaces"] if node.ns in k]  # (nor one per spelling)


# What the kernel does at once when it frees a namespace (nsfs inode numbers are the
# lowest free ones), for every namespace: `/proc/self/ns/net` shows one inode number.
_SAME_INODE = """
import os

_stat = os.stat


def _one_inode(path, *args, **kwargs):
    info = _stat(path, *args, **kwargs)
    if path == "/proc/self/ns/net":
        return os.stat_result(
            (info.st_mode, 4026539999, info.st_dev, *info[3:7], *map(int, info[7:10]))
        )
    return info


os.stat = _one_inode
"""


def test_a_namespace_made_again_under_a_deleted_ones_inode_starts_afresh(tmp_path):
    """nsfs inode numbers are reused at once: a namespace made after one was deleted
    may get its inode, and so, at the same path (a node's namespace recreated), the
    same state key. Its containers, added again under their IDs, have the same chains:
    the old namespace's sightings let the next gc remove them at once, during their
    ADD. Whether the kernel gives the new namespace the old one's inode is luck (any
    namespace made on the machine meanwhile, a mount namespace of an `ip netns exec`
    too, takes the lowest free number, and a namespace's is freed from a work queue):
    so gc runs here where every namespace shows one inode number, the reuse made
    certain."""
    if not rp.mode_available("nft")[0]:
        pytest.skip(rp.mode_available("nft")[1])
    cache = tmp_path / "cni"
    (cache / "results").mkdir(parents=True)
    at = tmp_path / "node-ns"  # where the node's namespace is, old and new
    at.touch()
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(_SAME_INODE)
    python_path = os.pathsep.join(p for p in (str(shim), os.environ.get("PYTHONPATH")) if p)
    made: List[str] = []

    def gc_at() -> dict:
        done = run(
            ["gc", "--yes", "--netns", str(at), "--iptables", "nft", "--cni-cache-dir",
             str(cache), "--min-age", "1s", "-o", "json"],
            env={"PYTHONPATH": python_path},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def node_at() -> str:
        """A namespace bound at `at`, the containers added in it (old1 not cached)."""
        name = rp.create_netns("pmt-reuse")
        made.append(name)
        subprocess.run(["mount", "--bind", f"/run/netns/{name}", str(at)], check=True)
        node = Node_(name, "nft", cache)
        node.add("gcnet", "live1", ["10.88.0.20/16"], _ports("8090/tcp"))
        node.add("gcnet", "old1", ["10.88.0.12/16"], _ports("8080/tcp"), cache=False)
        return name

    try:
        old = node_at()
        assert [p["container_id"] for p in gc_at()["pending"]] == ["old1"]
        subprocess.run(["umount", str(at)], check=True)
        rp.delete_netns(old)
        made.remove(old)
        time.sleep(1.1)  # (past --min-age since the old namespace's sighting)
        node_at()
        done = gc_at()
        assert done["removed"] == [], done
        assert [(p["container_id"], p["seen_seconds"] < 1) for p in done["pending"]] == [
            ("old1", True)
        ]
    finally:
        subprocess.run(["umount", str(at)], check=False, capture_output=True)
        for name in made:
            rp.delete_netns(name)


def test_valid_attachments_and_keep(nft_node: Node_, tmp_path):
    node = nft_node
    node.add("neta", "a1", ["10.88.0.11/16"], _ports("8081/tcp"), cache=False)
    node.add("neta", "a2", ["10.88.0.12/16"], _ports("8082/tcp"), cache=False)
    node.add("netb", "b1-0123456789", ["10.89.0.11/16"], _ports("8083/tcp"), cache=False)
    node.add("netb", "b2", ["10.89.0.12/16"], _ports("8084/tcp"), cache=False)
    nowhere = tmp_path / "no-cache"
    # CNI GC for network neta: only neta's chains are judged.
    request = {
        "cniVersion": "1.1.0",
        "name": "neta",
        "type": "portmap",
        "cni.dev/valid-attachments": [{"containerID": "a1", "ifname": "eth0"}],
    }
    done = node.gc("--yes", "--min-age", "0", "-o", "json", "--valid-attachments", "-",
                   stdin=json.dumps(request), cache=nowhere)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert [r["container_id"] for r in result["removed"]] == ["a2"]
    assert result["kept"] == 3
    # With no cache the one line about it says what tells the live instead (it said
    # "stale mappings cannot be told from live ones" on every cron run that told it).
    [note] = done.stderr.splitlines()
    assert note.endswith(": the live containers are those --valid-attachments names"), note
    # A bare list speaks for every network; --keep takes an ID prefix.
    listed = tmp_path / "valid.json"
    listed.write_text(json.dumps([{"containerID": "a1", "ifname": "eth0"}]))
    done = node.gc("--yes", "--min-age", "0", "-o", "json", "--valid-attachments", str(listed),
                   "--keep", "b1-01", cache=nowhere)  # fmt: skip
    assert "those --valid-attachments and --keep names" in done.stderr
    result = json.loads(done.stdout)
    assert [r["container_id"] for r in result["removed"]] == ["b2"]
    node.check("a1")
    node.check("b1-0123456789")
    # --keep alone is a source: everything else goes.
    result = json.loads(
        node.gc("--yes", "--min-age", "0", "-o", "json", "--keep", "a1", cache=nowhere).stdout
    )
    assert [r["container_id"] for r in result["removed"]] == ["b1-0123456789"]
    node.check("a1")


def test_a_keep_that_matches_no_container_is_said(nft_node: Node_, tmp_path):
    """`gc --keep web` (a runtime's container name where an ID belongs) kept nothing
    and said nothing: the chain of the container it was meant to keep went, and the
    dry run or the question before it showed no sign. Now each --keep that no
    container on the node (a chain's rules, the plugin's nftables rules, the cache)
    has an ID starting with is named in a warning; one that does is not."""
    node = nft_node
    node.add("neta", "a1b2c3", ["10.88.0.11/16"], _ports("8081/tcp"), cache=False)
    nowhere = tmp_path / "no-cache"
    done = node.gc("--dry-run", "--min-age", "0", "--keep", "web", "--keep", "a1b",
                   cache=nowhere)  # fmt: skip
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stderr.splitlines() if "--keep" in line]
    assert len(said) == 2, done.stderr  # the cache note names --keep too
    [unmatched] = [line for line in said if "matches no container" in line]
    assert "--keep web matches no container" in unmatched, unmatched
    assert "a1b" not in unmatched
    done = node.gc("--yes", "--min-age", "0", "-o", "json", "--keep", "a1b", cache=nowhere)
    assert "matches no container" not in done.stderr, done.stderr
    assert json.loads(done.stdout)["removed"] == []
    # Asked on a terminal: said before the question (it may change the answer), once.
    argv = ["gc", "--netns", node.ns, "--iptables", "nft", "--cni-cache-dir", str(nowhere),
            "--min-age", "0", "--keep", "web"]  # fmt: skip
    code, shown, _ = _on_terminal(argv, b"y")
    assert code == 0, shown
    assert shown.count("--keep web matches no container") == 1, shown
    assert shown.index("--keep web matches no container") < shown.index("Remove 1 chain"), shown


def test_a_keep_of_a_container_not_running_now_is_said_only_when_the_run_removes(
    nft_node: Node_, tmp_path
):
    """A cron job's `gc --yes --keep ID` whose container is stopped right now (no
    chain, no cache entry: nothing of it to keep) warned on every run that the --keep
    "keeps nothing (... not a name)", though nothing was removed and the ID was right:
    stderr mailed every few minutes. An unattended run says it only when it removes or
    waits to remove a chain (what a wrong --keep costs), in words that allow a
    container that is not running; a dry run, where a person looks, says it always."""
    node = nft_node
    node.add("neta", "live01", ["10.88.0.11/16"], _ports("8081/tcp"))  # cached: live
    argv = ("--yes", "--min-age", "0", "--keep", "d00d5")
    done = node.gc(*argv)
    assert done.returncode == 0, done.stderr
    assert "--keep" not in done.stderr, done.stderr
    assert "--keep d00d5 matches no container" in node.gc("--dry-run", *argv[1:]).stderr
    node.add("neta", "gone01", ["10.88.0.12/16"], _ports("8082/tcp"), cache=False)
    done = node.gc(*argv)
    assert done.returncode == 0, done.stderr
    [said] = [line for line in done.stderr.splitlines() if "--keep d00d5" in line]
    assert "matches no container" in said and "not running" in said, said
    assert chain_name("neta", "gone01") not in "\n".join(node.lines(4))


def _one_live_one_stale(node: Node_) -> tuple:
    """live1 (cached) and stale1 (not) on gcnet: (the IPv4 table's lines before, the
    gc command line that asks about stale1)."""
    node.add("gcnet", "live1", ["10.88.0.11/16"], _ports("8090/tcp"))
    node.add("gcnet", "stale1", ["10.88.0.12/16"], _ports("8080/tcp"), cache=False)
    argv = ["gc", "--netns", node.ns, "--iptables", "nft", "--cni-cache-dir", str(node.cache),
            "--min-age", "0"]  # fmt: skip
    return node.lines(4), argv


def _on_terminal(
    argv: List[str],
    answer: bytes,
    env: Optional[dict] = None,
    watch: Optional[Callable[[bytes], None]] = None,
    before_answer: Optional[Callable[[], None]] = None,
) -> tuple:
    """Run portmapctl with a terminal on stdin/stderr (where gc asks and shows its
    preview), answer its prompt; returns (exit code, the terminal's text, stdout).
    `env` adds to (or overrides) the environment, 250 columns and NO_COLOR. `watch`
    is given what the terminal has shown so far, as it goes; `before_answer` is called
    once the question is shown, before it is answered (what happens while a person
    reads it)."""
    master, slave = pty.openpty()
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "250", **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "portmapctl", *argv], stdin=slave,
                            stdout=subprocess.PIPE, stderr=slave, env=env)  # fmt: skip
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 30
    answered = False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break  # the child closed the terminal
            if not chunk:
                break
            seen += chunk
        # The whole prompt: click writes its last character, a space, apart (its
        # input(" ")), and an answer typed before it is echoed ahead of it, so the space
        # began the run's next line on stderr (" portmapctl: warning: ...").
        if not answered and b"[y/N]: " in seen:
            if before_answer is not None:
                before_answer()
            os.write(master, answer + b"\n")
            answered = True
        if watch is not None:
            watch(seen)
        if proc.poll() is not None and not ready:
            break
    os.close(master)
    proc.wait(timeout=30)
    return proc.returncode, seen.decode(errors="replace"), proc.stdout.read().decode()


def _table_on_a_terminal(argv: List[str], columns: int) -> List[str]:
    """portmapctl ARGV with stdout on a terminal `columns` wide; its lines."""
    master, slave = pty.openpty()
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": str(columns)}
    proc = subprocess.Popen([sys.executable, "-m", "portmapctl", *argv], stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=subprocess.PIPE, env=env)  # fmt: skip
    os.close(slave)
    seen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 0.2)
        try:
            chunk = os.read(master, 4096) if ready else b""
        except OSError:
            break  # the child closed the terminal
        seen += chunk
        if not chunk and proc.poll() is not None:
            break
    os.close(master)
    assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
    return seen.decode().replace("\r", "").rstrip("\n").split("\n")


def test_gc_dry_run_at_60_columns_keeps_the_status_whole(nft_node: Node_):
    """On a 60-column terminal gc's plan keeps what happens to each chain whole
    (`removable in 2m00s, at HH:MM:SS`, `would remove`): the network and the ports give
    way (-o wide shows them); nothing is wider than the terminal."""
    node = nft_node
    node.add("gcnet", "live1", ["10.88.0.11/16"], _ports("8090/tcp"))
    node.add("gcnet", "stale1", ["10.88.0.12/16"], _ports("8080/tcp"), cache=False)
    argv = ["gc", "--netns", node.ns, "--iptables", "nft", "--cni-cache-dir", str(node.cache),
            "--dry-run"]  # fmt: skip
    for extra, status in (([], "removable in 2m00s, at "), (["--min-age", "0"], "would remove")):
        lines = _table_on_a_terminal([*argv, *extra], 60)
        assert all(len(line) <= 60 for line in lines), lines
        assert lines[0].split()[-1] == "STATUS" and "…" not in "\n".join(lines), lines
        (row,) = [line for line in lines[1:] if " stale1 " in f"{line} "]
        assert status in row, lines


def test_on_a_terminal_gc_asks_first(nft_node: Node_):
    node = nft_node
    node.add("gcnet", "live1", ["10.88.0.11/16"], _ports("8090/tcp"))
    node.add("gcnet", "stale1", ["10.88.0.12/16"], _ports("8080/tcp"), cache=False)
    before = node.lines(4)
    argv = [
        "gc",
        "--netns",
        node.ns,
        "--iptables",
        "nft",
        "--cni-cache-dir",
        str(node.cache),
        "--min-age",
        "0",
    ]
    code, shown, _ = _on_terminal(argv, b"n")
    assert code == 0 and "Remove 1 chain of 1 container?" in shown and " stale1 " in shown
    assert node.lines(4) == before
    code, shown, stdout = _on_terminal([*argv, "-o", "json"], b"y")
    assert code == 0, shown
    assert "Remove 1 chain of 1 container?" in shown
    # stdout holds the result alone: the preview and the question went to the terminal.
    assert [c["chain"] for c in json.loads(stdout)["removed"]] == [chain_name("gcnet", "stale1")]
    assert node.lines(4) == _without(before, {chain_name("gcnet", "stale1")})


def test_a_container_live_again_while_gc_asks_keeps_its_chain(nft_node: Node_):
    """gc that asks plans before the question. A container whose chain waits out
    --min-age comes back while the question is read, with its ID, address and ports (a
    static address): the plugin's ADD finds its chain as it was and changes nothing,
    and libcni writes the cache entry. The table had not changed, so the plan made
    before the question went in as it was and took the live container's chain (its
    host port no longer forwarded). Read again once the answer is given, the container
    is live, and its chain stays."""
    node = nft_node
    node.add("gcnet", "live1", ["10.88.0.11/16"], _ports("8090/tcp"))
    node.add("gcnet", "back", ["10.88.0.12/16"], _ports("8080/tcp"), cache=False)
    assert node.gc("--dry-run", "--min-age", "1s").returncode == 0  # seen stale from here
    time.sleep(1.2)

    def started_again() -> None:
        done = rp.run_plugin("ADD", node.ns, "back", node.confs["back"], mode=node.mode)
        assert done.returncode == 0, done.stdout + done.stderr
        node.cache_add("gcnet", "back")

    before = node.lines(4)
    argv = ["gc", "--netns", node.ns, "--iptables", "nft", "--cni-cache-dir", str(node.cache),
            "--min-age", "1s", "-o", "json"]  # fmt: skip
    code, shown, stdout = _on_terminal(argv, b"y", before_answer=started_again)
    assert code == 0, shown
    assert "Remove 1 chain of 1 container?" in shown and " back " in shown
    assert json.loads(stdout)["removed"] == []
    assert node.lines(4) == before
    node.check("back")


def test_on_a_terminal_gc_whose_lock_is_refused_exits_3_before_it_asks(nft_node: Node_, tmp_path):
    """gc that asks reads and previews without the lock, and takes it only after the
    answer. A FIFO at the lock path made the preview's save a warning, the question was
    asked, and the yes ended in exit 3 all the same: now the preview's save, under the
    lock, ends the run before the question, one line, nothing removed."""
    node = nft_node
    node.add("gcnet", "live1", ["10.88.0.11/16"], _ports("8090/tcp"))
    node.add("gcnet", "stale1", ["10.88.0.12/16"], _ports("8080/tcp"), cache=False)
    before = node.lines(4)
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    os.mkfifo(run_dir / "lock", 0o600)
    argv = ["gc", "--netns", node.ns, "--iptables", "nft", "--cni-cache-dir", str(node.cache),
            "--min-age", "0"]  # fmt: skip
    env = {"PORTMAPCTL_RUN_DIR": str(run_dir), "PORTMAPCTL_PROGRESS_AFTER": "3600"}
    code, shown, stdout = _on_terminal(argv, b"y", env)
    assert code == 3, shown
    assert "[y/N]" not in shown and stdout == ""
    assert shown.strip().splitlines() == [
        f"portmapctl: error: {run_dir / 'lock'} is not a regular file owned by us: refusing"
        " to use it"
    ]
    assert node.lines(4) == before


def test_on_a_terminal_gc_answered_no_says_the_preview_could_not_record(nft_node: Node_, tmp_path):
    """The preview records its sightings as a dry run does. With no room for them a dry
    run ends with the one error line, exit 3; gc that asked and was told "no" said
    "nothing removed" and exited 0, the failed save unsaid (--min-age never counting
    from that look). Now the "no" ends with the same line, exit 3, nothing removed
    (its summary line on stdout, as any run's result)."""
    node = nft_node
    before, argv = _one_live_one_stale(node)
    with full_run_dir(tmp_path / "run") as run_dir:
        env = {"PORTMAPCTL_RUN_DIR": str(run_dir), "PORTMAPCTL_PROGRESS_AFTER": "3600"}
        code, shown, stdout = _on_terminal(argv, b"n", env)
    assert code == 3, shown
    assert "[y/N]" in shown and stdout.startswith("gc: nothing removed (")
    # (.lstrip(): the answer is typed as soon as the question shows, so the space click
    # writes after it can come after the echoed answer, at the next line's start.)
    last = shown.strip().splitlines()[-1].lstrip()
    assert last.startswith("portmapctl: error: could not record the chains seen for"), shown
    assert "No space left on device" in last
    assert node.lines(4) == before


def test_a_dry_run_waiting_for_the_lock_says_so_alone_without_its_bar(nft_node: Node_, tmp_path):
    """gc --dry-run takes the lock only to record its sightings, after it has looked.
    Its bar ("looking for chains to remove") stayed on while it waited: the waiting line
    went through rich's redirect above it and the bar spun on below for work that was
    done (with the default delay it even appeared then, a second into the wait). Now
    the bar is gone before the lock is asked for: the waiting line shows alone."""
    import fcntl

    node = nft_node
    node.add("gcnet", "live1", ["10.88.0.11/16"], _ports("8090/tcp"))
    node.add("gcnet", "stale1", ["10.88.0.12/16"], _ports("8080/tcp"), cache=False)
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    held = os.open(run_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(held, fcntl.LOCK_EX)  # another run holds it (this one: not inherited)
    waiting = f"waiting for the portmapctl lock held by PID {os.getpid()} ({run_dir / 'lock'})"
    release: List[float] = []

    def watch(seen: bytes) -> None:
        """Once the waiting line shows, the lock is let go 0.6 s later: time for the
        bar, had it stayed, to be redrawn (ten times a second)."""
        if not release and waiting.encode() in seen:
            release.append(time.monotonic() + 0.6)
        if release and release[0] and time.monotonic() > release[0]:
            os.close(held)
            release[0] = 0.0

    argv = ["gc", "--netns", node.ns, "--iptables", "nft", "--cni-cache-dir", str(node.cache),
            "--min-age", "0", "--dry-run"]  # fmt: skip
    env = {"PORTMAPCTL_RUN_DIR": str(run_dir), "PORTMAPCTL_PROGRESS_AFTER": "0"}
    try:
        code, text, stdout = _on_terminal(argv, b"", env, watch)
    finally:
        if not release or release[0]:
            os.close(held)
    assert code == 0, text
    _, line, after = text.partition(f"portmapctl: {waiting}")
    assert line, text
    assert "looking for chains" not in after and "━" not in after, after
    assert after.replace("\r", "").startswith("\n"), after
    assert "gc (dry run): would remove 1 chain of 1 container" in stdout


def test_the_preview_on_a_terminal_writes_a_byte_that_is_not_utf8_as_backslash_x(
    nft_node: Node_,
):
    """gc's preview table on stderr (shown before it asks) wrote a container ID's byte
    that is not UTF-8 (0xe9, from the chain's comment) as `\\udce9`, Python's stand-in,
    where every other stderr line writes `\\xe9`; the columns stay aligned."""
    node = nft_node
    node.add("gcnet", "live1", ["10.88.0.11/16"], _ports("8090/tcp"))
    node.add("gcnet", "stale1", ["10.88.0.12/16"], _ports("8080/tcp"), cache=False)
    # The plugin refuses such an ID; its comment gets one as any other tool could write
    # it, its chain renamed to match (a comment naming another chain names nobody).
    from portmapctl.iptables.chains import chain_name

    ns_exec = ["ip", "netns", "exec", node.ns]
    dump = subprocess.run([*ns_exec, rp.tool_path("iptables-save", "nft"), "-t", "nat"],
                          check=True, capture_output=True).stdout  # fmt: skip
    dump = dump.replace(b'id: \\"stale1\\"', b'id: \\"stale\xe9\\"').replace(
        chain_name("gcnet", "stale1").encode(), chain_name("gcnet", "stale\udce9").encode()
    )
    subprocess.run([*ns_exec, rp.tool_path("iptables-restore", "nft")], check=True, input=dump)
    argv = ["gc", "--netns", node.ns, "--iptables", "nft", "--cni-cache-dir", str(node.cache),
            "--min-age", "0"]  # fmt: skip
    for columns in ("250", "60"):
        code, shown, _ = _on_terminal(argv, b"n", {"COLUMNS": columns})
        assert code == 0, shown
        lines = shown.replace("\r", "").split("\n")
        header = next(line for line in lines if line.split()[:1] == ["FAM"])
        (row,) = [line for line in lines if "stale" in line and "Remove" not in line]
        assert "\\udc" not in shown and " stale\\xe9 " in f"{row} ", shown
        assert row.index("to remove") == header.index("STATUS"), shown


def test_end_of_input_at_gc_prompt_is_the_default_answer_no(nft_node: Node_):
    """Ctrl-D (stdin at its end) answers the prompt as Enter does: no, nothing removed,
    said in one line (the result's, on stdout), exit 0; 130 is Ctrl-C's alone."""
    node = nft_node
    before, argv = _one_live_one_stale(node)
    code, shown, stdout = _on_terminal(argv, b"\x04")  # VEOF at a line's start: end of input
    assert code == 0, shown
    # The summary line alone on stdout, not even the space click writes after the
    # prompt (it goes to the terminal with the rest of the prompt).
    assert "aborted" not in shown
    assert (
        stdout
        == "gc: nothing removed (1 chain of 1 container offered, no answer), 0 pending, 1 kept\n"
    )
    assert shown.replace("\r", "").split("[y/N]:", 1)[1].split() == []
    assert node.lines(4) == before


# --- retries when the plugin changes the table meanwhile -------------------------------------


class RacingBackend(RestoreBackend):
    """The real restore backend; after each read, `races` (the real plugin) change the
    table before gc can apply what it planned: the window a concurrent DEL hits."""

    def __init__(self, flavour: str, races: list) -> None:
        super().__init__(flavour)
        self.races = list(races)
        self.applied = 0

    def read(self, family: int) -> NatTable:
        tbl = super().read(family)
        if self.races:
            self.races.pop(0)()
        return tbl

    def apply(self, txn) -> None:
        self.applied += 1
        super().apply(txn)


def _racing_node(node: Node_, races: list) -> Node:
    options = NodeOptions(
        iptables=node.mode, families=(4,), netns=node.ns, cache_dirs=(str(node.cache),)
    )
    return Node(options, RacingBackend(node.mode, races))


def _foreign_entry(node: Node_) -> str:
    """live1, and stale1 and stale2 stale, stale1's chain entered also by another
    tool's rule with control characters in its comment (it goes by number, behind the
    count guard of CNI-HOSTPORT-DNAT: planner._delete_rules): stale1's chain."""
    node.add("gcnet", "live1", ["10.88.0.11/16"], _ports("8090/tcp"))
    node.add("gcnet", "stale1", ["10.88.0.12/16"], _ports("8080/tcp"), cache=False)
    node.add("gcnet", "stale2", ["10.88.0.13/16"], _ports("8081/tcp"), cache=False)
    hostile = chain_name("gcnet", "stale1")
    comment = 'dnat name: "ev\x1b[2J\x07il" id: "stale1"'
    node.ipt(4, "-I", "CNI-HOSTPORT-DNAT", "-p", "tcp", "-m", "comment", "--comment", comment,
             "-m", "multiport", "--dports", "8082", "-j", hostile)  # fmt: skip
    return hostile


def _busy_node(node: Node_) -> Node:
    """`node` where the real plugin ADDs a new pod after each of gc's reads, every try."""

    def pod_added(i: int) -> Callable[[], None]:
        def race() -> None:  # (the real plugin, as the kubelet's ADD of a new pod)
            node.add("gcnet", f"new{i}", [f"10.88.0.{30 + i}/16"], _ports(f"90{10 + i}/tcp"))

        return race

    return _racing_node(node, [pod_added(i) for i in range(APPLY_TRIES)])


def _containers(node: Node_, family: int = 4) -> set:
    """The container IDs whose chains are in the table now."""
    tbl = parse_save(rp.save(node.ns, family, node.mode), family)
    return {c.container_id for c in build({family: tbl}).chains}


def _plugin_del(node: Node_, cid: str):
    def race() -> None:
        done = rp.run_plugin("DEL", node.ns, cid, node.confs[cid], mode=node.mode)
        assert done.returncode == 0, done.stderr

    return race


def test_a_table_changed_under_gc_is_read_again(node: Node_, tmp_path):
    node.add("gcnet", "live1", ["10.88.0.11/16"], _ports("8080/tcp"))
    node.add("gcnet", "old1", ["10.88.0.12/16"], _ports("8081/tcp"), cache=False)
    node.add("gcnet", "old2", ["10.88.0.13/16"], _ports("8082/tcp"), cache=False)
    racing = _racing_node(node, [_plugin_del(node, "old1")])
    with netns.entered(node.ns):
        result = gc(racing, Sources(), GcOptions(min_age=0, state_dir=str(tmp_path / "run")))
    assert racing.backend.applied == 2  # the first plan no longer applied
    assert [c.container_id for c in result.removed] == ["old2"]
    assert _containers(node) == {"live1"}
    node.check("live1")


def test_gc_gives_up_cleanly_when_the_table_keeps_changing(node: Node_, tmp_path):
    node.add("gcnet", "live1", ["10.88.0.11/16"], _ports("8080/tcp"))
    for i in range(4):
        node.add("gcnet", f"old{i}", [f"10.88.0.2{i}/16"], _ports(f"808{i + 1}/tcp"), cache=False)
    racing = _racing_node(node, [_plugin_del(node, f"old{i}") for i in range(3)])
    run_dir = tmp_path / "run"
    with netns.entered(node.ns), pytest.raises(ApplyFailed, match="gave up after 3 tries"):
        gc(racing, Sources(), GcOptions(min_age=0, state_dir=str(run_dir)))
    # Only the plugin's three DELs happened: old3 and live1 are untouched.
    assert _containers(node) == {"live1", "old3"}
    node.check("live1")
    node.check("old3")
    with netns.entered(node.ns):
        seen, _ = gc_state.load(str(run_dir), gc_state.namespace_key(node.ns))
    assert ChainKey(4, chain_name("gcnet", "old3")) in seen


class LateRacingBackend(RestoreBackend):
    """The real restore backend; `race` (the real plugin) runs once just before the
    first apply: the window between an interactive gc's plan and its answer."""

    def __init__(self, flavour: str, race) -> None:
        super().__init__(flavour)
        self.race = race

    def apply(self, txn) -> None:
        if self.race is not None:
            self.race, race = None, self.race
            race()
        super().apply(txn)


def test_a_container_added_again_after_the_plan_keeps_its_chain(node: Node_, tmp_path):
    # A stopped container (its chain left, no cache entry) is started again while gc
    # waits to apply its plan: the plugin's DEL and ADD give the same chain (same
    # network and ID) with the same entry rule but another address, and libcni writes
    # the cache entry. The chain is live now and not what gc judged: it must stay.
    node.add("gcnet", "live1", ["10.88.0.11/16"], _ports("8080/tcp"))
    node.add("gcnet", "back", ["10.88.0.12/16"], _ports("8081/tcp"), cache=False)

    def started_again() -> None:
        done = rp.run_plugin("DEL", node.ns, "back", node.confs["back"], mode=node.mode)
        assert done.returncode == 0, done.stderr
        node.add("gcnet", "back", ["10.88.0.22/16"], _ports("8081/tcp"))

    options = NodeOptions(
        iptables=node.mode, families=(4,), netns=node.ns, cache_dirs=(str(node.cache),)
    )
    racing = Node(options, LateRacingBackend(node.mode, started_again))
    with netns.entered(node.ns):
        result = gc(racing, Sources(), GcOptions(min_age=0, state_dir=str(tmp_path / "run")))
    assert result.removed == ()
    assert _containers(node) == {"live1", "back"}
    node.check("back")


def _refusing(tmp_path: Path, tool: str) -> dict:
    """PATH with a `tool` in front of the real one that refuses every transaction
    (iptables-restore's exit 1, nothing applied)."""
    folder = tmp_path / "refusing"
    folder.mkdir(exist_ok=True)
    script = folder / tool
    script.write_text("#!/bin/bash\ncat > /dev/null\necho 'refused by the test' >&2\nexit 1\n")
    script.chmod(0o755)
    return {"PATH": f"{folder}:{os.environ['PATH']}"}


def _two_families_stale(node: Node_) -> Dict[int, set]:
    """One live container, one stale dual-stack and one stale IPv4-only: the IPv6
    table is the smaller one, so `gc --yes` applies IPv6 while it plans IPv4."""
    node.add("gcnet", "live1", ["10.88.0.11/16", "fd00::11/64"], _ports("8080/tcp"))
    node.add("gcnet", "old1", ["10.88.0.12/16", "fd00::12/64"], _ports("8081/tcp"), cache=False)
    node.add("gcnet", "old4", ["10.88.0.14/16"], _ports("8084/tcp"), cache=False)
    before = {f: _containers(node, f) for f in (4, 6)}
    assert before == {4: {"live1", "old1", "old4"}, 6: {"live1", "old1"}}
    return before


def test_a_family_applied_ahead_that_fails_leaves_the_other_as_in_order(nft_node, tmp_path):
    """IPv6 goes in while IPv4 is planned; when it is refused (every try), IPv4 still
    goes in, as it would have first in family order, and the line says so."""
    node = nft_node
    _two_families_stale(node)
    env = _refusing(tmp_path, "ip6tables-nft-restore")
    env["PORTMAPCTL_NFT_BATCH"] = "0"  # the removal through iptables-restore, refused
    done = run(["gc", "--yes", "--min-age", "0", "--netns", node.ns, "--iptables", "nft",
                "--cni-cache-dir", str(node.cache)], env=env)  # fmt: skip
    assert_error(done, 1, "IPv6: gave up after 3 tries, nothing changed", "refused by the test",
                 "(earlier families: 2 chains removed)", after_work=True)  # fmt: skip
    assert {f: _containers(node, f) for f in (4, 6)} == {4: {"live1"}, 6: {"live1", "old1"}}
    node.check("live1")
    assert node.gc("--yes", "--min-age", "0").returncode == 0  # the rest, once it can
    assert _containers(node, 6) == {"live1"}


def test_a_family_that_fails_after_the_other_went_in_ahead_says_so(nft_node, tmp_path):
    """IPv4 refused (every try) after IPv6 went in ahead of it: IPv6's removal stands
    (its own whole transaction), IPv4 is untouched, the line names both, and the
    IPv4 chains stay remembered as seen."""
    node = nft_node
    _two_families_stale(node)
    env = _refusing(tmp_path, "iptables-nft-restore")
    env["PORTMAPCTL_NFT_BATCH"] = "0"  # the removal through iptables-restore, refused
    run_dir = tmp_path / "run"
    env["PORTMAPCTL_RUN_DIR"] = str(run_dir)
    done = run(["gc", "--yes", "--min-age", "0", "--netns", node.ns, "--iptables", "nft",
                "--cni-cache-dir", str(node.cache)], env=env)  # fmt: skip
    assert_error(done, 1, "IPv4: gave up after 3 tries, nothing changed",
                 "(IPv6 was applied ahead of it: 1 chain removed)", after_work=True)  # fmt: skip
    assert {f: _containers(node, f) for f in (4, 6)} == {4: {"live1", "old1", "old4"},
                                                         6: {"live1"}}  # fmt: skip
    node.check("live1")
    with netns.entered(node.ns):
        seen, _ = gc_state.load(str(run_dir), gc_state.namespace_key(node.ns))
    assert {key for key in seen if key.family == 4} == {
        ChainKey(4, chain_name("gcnet", cid)) for cid in ("old1", "old4")
    }
    assert not [key for key in seen if key.family == 6]  # removed: forgotten


def test_a_family_refused_after_the_other_went_in_with_no_state_saved_is_exit_3(nft_node, tmp_path):
    """IPv4 refused every try (exit 1 alone) after IPv6 went in ahead, and the state file
    could not be written (a full run directory): the run ended exit 1, where any run
    whose save failed ends exit 3 (the environment; a refusal's exit 1 is said after
    that line, _not_recorded before _refused). Now 3, the line naming both."""
    node = nft_node
    _two_families_stale(node)
    env = _refusing(tmp_path, "iptables-nft-restore")
    env["PORTMAPCTL_NFT_BATCH"] = "0"  # the removal through iptables-restore, refused
    with full_run_dir(tmp_path / "full") as run_dir:
        env["PORTMAPCTL_RUN_DIR"] = str(run_dir)
        done = run(["gc", "--yes", "--min-age", "0", "--netns", node.ns, "--iptables", "nft",
                    "--cni-cache-dir", str(node.cache)], env=env)  # fmt: skip
    assert_error(done, 3, "IPv4: gave up after 3 tries", "IPv6 was applied ahead of it",
                 "could not record the chains still pending", after_work=True)  # fmt: skip
    assert _containers(node, 6) == {"live1"}


# --- the plugin and gc at the same time ---------------------------------------------------------


def test_concurrent_plugin_add_del_and_gc_loop(node: Node_):
    """The real plugin adds and deletes containers (writing libcni's cache as libcni
    does, in place, after the ADD) while `gc --yes` runs in a loop. No plugin call
    fails, no live mapping is lost, and the stale containers from before do go."""
    tag = uuid.uuid4().hex[:6]
    stale = [f"stale{i}-{tag}" for i in range(3)]
    for i, cid in enumerate(stale):
        node.add(
            "gcnet",
            cid,
            [f"10.88.1.{i + 1}/16"],
            _ports(f"{7000 + i}/tcp", f"{7100 + i}/udp"),
            cache=False,
        )
    # A cached container from the start: an empty cache with chains on the node is no
    # source of liveness (gc refuses, exit 2, by design), which the first gc run met
    # whenever it came before the first ADD's cache entry.
    anchor = f"anchor-{tag}"
    node.add("gcnet", anchor, ["10.88.3.1/16"], _ports("7900/tcp"))
    stop = threading.Event()
    gc_runs: List[subprocess.CompletedProcess] = []

    def gc_loop() -> None:
        while not stop.is_set():
            gc_runs.append(node.gc("--yes", "--min-age", "1s", "-o", "json"))

    failures: List[str] = []
    live: Dict[str, Path] = {}
    ever_live = {anchor}
    thread = threading.Thread(target=gc_loop)
    thread.start()
    try:
        deadline = time.monotonic() + 3.0
        i = 0
        while time.monotonic() < deadline or i < 6:
            cid = f"new{i}-{tag}"
            conf = rp.plugin_conf(
                "gcnet", [f"10.88.2.{i + 1}/16"], _ports(f"{8000 + i}/tcp", f"{8100 + i}/udp")
            )
            done = rp.run_plugin("ADD", node.ns, cid, conf, mode=node.mode)
            if done.returncode:
                failures.append(f"ADD {cid}: {done.stdout}{done.stderr}")
                break
            node.confs[cid] = conf
            live[cid] = node.cache_add("gcnet", cid)
            ever_live.add(cid)
            if len(live) > 3:
                oldest = next(iter(live))
                for check in rp.run_check(node.ns, oldest, node.confs[oldest], mode=node.mode):
                    if check.returncode:
                        failures.append(f"CHECK {oldest}: {check.stdout}{check.stderr}")
                done = rp.run_plugin("DEL", node.ns, oldest, node.confs[oldest], mode=node.mode)
                if done.returncode:
                    failures.append(f"DEL {oldest}: {done.stdout}{done.stderr}")
                live.pop(oldest).unlink()  # libcni drops the cache entry after the DEL
            i += 1
    finally:
        stop.set()
        thread.join()
    assert not failures, failures
    assert len(gc_runs) >= 2  # gc really ran alongside the plugin
    for done in gc_runs:
        assert done.returncode == 0, done.stderr
    removed = [r["container_id"] for done in gc_runs for r in json.loads(done.stdout)["removed"]]
    assert not set(removed) & ever_live, "gc removed a container that was live or being added"
    for cid in live:
        node.check(cid)
    time.sleep(1.0)
    final = node.gc("--yes", "--min-age", "1s", "-o", "json")
    removed += [r["container_id"] for r in json.loads(final.stdout)["removed"]]
    assert sorted(removed) == sorted(stale)
    assert _containers(node) == set(live) | {anchor}


def test_an_entry_rule_whose_comment_holds_control_characters_goes_by_number(node: Node_):
    """A stale chain entered by a rule whose comment holds an escape sequence (written
    by another tool: the plugin refuses such names) stopped every gc of the node, the
    dry run too: "error: refusing a rule argument with control characters", exit 2 (bad
    input, which nobody gave), and no other stale chain went either. quote() refuses
    such a token as restore text (a newline would inject a line); the rule is now
    deleted by its number behind the count guard (planner._delete_rules), the JSON
    names the chain, and every other rule stays."""
    hostile = _foreign_entry(node)
    before = node.lines(4)
    dry = node.gc("--dry-run", "--min-age", "0", "-o", "json")
    assert dry.returncode == 0, dry.stderr
    assert {r["container_id"] for r in json.loads(dry.stdout)["removed"]} >= {"stale2"}
    assert node.lines(4) == before
    done = node.gc("--yes", "--min-age", "0", "-o", "json")
    assert done.returncode == 0, done.stderr
    gone = {r["chain"] for r in json.loads(done.stdout)["removed"]}
    assert {hostile, chain_name("gcnet", "stale2")} <= gone
    after = node.lines(4)
    assert not [line for line in after if hostile in line or "stale2" in line], after
    assert [line for line in after if chain_name("gcnet", "live1") in line]
    node.check("live1")


def test_a_stale_chain_holding_a_rule_with_control_characters_goes_by_number(node: Node_):
    """As the entry rule above, a rule with an escape sequence in its comment inside a
    stale CNI-DN- chain itself (another tool's: the plugin writes no comment there)
    stopped gc with "error: refusing a rule argument with control characters", exit 2:
    every run on legacy iptables, and every dry run on iptables-nft too (its removal
    goes as an nf_tables batch, the dry run shows the restore text). _empty_chain
    deleted each rule read by its text; such a chain's rules now go by number, last
    first, the chain's -X (or the rewrite's guard) failing the transaction when it
    holds anything else by then."""
    node.add("gcnet", "live1", ["10.88.0.11/16"], _ports("8090/tcp"))
    node.add("gcnet", "stale1", ["10.88.0.12/16"], _ports("8080/tcp"), cache=False)
    node.add("gcnet", "stale2", ["10.88.0.13/16"], _ports("8081/tcp"), cache=False)
    hostile = chain_name("gcnet", "stale1")
    node.ipt(4, "-A", hostile, "-p", "tcp", "-m", "comment", "--comment", "x\x1b[31my",
             "-j", "RETURN")  # fmt: skip
    before = node.lines(4)
    dry = node.gc("--dry-run", "--min-age", "0", "-o", "json")
    assert dry.returncode == 0, dry.stderr
    assert {r["chain"] for r in json.loads(dry.stdout)["removed"]} == {
        hostile,
        chain_name("gcnet", "stale2"),
    }
    assert node.lines(4) == before
    done = node.gc("--yes", "--min-age", "0", "-o", "json")
    assert done.returncode == 0, done.stderr
    gone = {r["chain"] for r in json.loads(done.stdout)["removed"]}
    assert gone == {hostile, chain_name("gcnet", "stale2")}
    after = node.lines(4)
    assert not [line for line in after if hostile in line or "stale2" in line], after
    assert [line for line in after if chain_name("gcnet", "live1") in line]
    node.check("live1")
    # check --repair's rewrite of a live chain empties it the same way: it refused too.
    live = chain_name("gcnet", "live1")
    node.ipt(4, "-I", live, "2", "-p", "tcp", "-m", "comment", "--comment", "x\x1b[31my",
             "-j", "RETURN")  # fmt: skip
    repair = run(["check", "--repair", "--netns", node.ns, "--iptables", node.mode,
                  "--cni-cache-dir", str(node.cache)])  # fmt: skip
    assert repair.returncode == 0, repair.stdout + repair.stderr
    assert not [line for line in node.lines(4) if "RETURN" in line], node.lines(4)
    node.check("live1")


def test_a_busy_node_still_loses_its_other_stale_chains_beside_one_gone_by_number(
    node: Node_, tmp_path
):
    """A stale chain entered by another tool's rule with control characters in its
    comment goes by number behind the count guard of CNI-HOSTPORT-DNAT, on every try
    (planner._delete_rules: its text cannot be written). On a busy node the plugin
    changes that chain (another pod's ADD) between each read and write: the guard
    fails every try, the last one too, which otherwise deletes by text precisely so
    that such a change does not make it fail. The family gave up after 3 tries and
    no stale chain of it went (stale2's neither), whatever the run. The last try now
    leaves that one chain for a later run and removes the others by text."""
    hostile = _foreign_entry(node)

    racing = _busy_node(node)
    with netns.entered(node.ns):
        result = gc(racing, Sources(), GcOptions(min_age=0, state_dir=str(tmp_path / "run")))
    assert [c.container_id for c in result.removed] == ["stale2"]
    assert [c.chain for c in result.pending] == [hostile]
    assert _containers(node) == {"live1", "stale1", *(f"new{i}" for i in range(APPLY_TRIES))}
    node.check("live1")
    # The next run, on a quiet node, removes it.
    with netns.entered(node.ns):
        result = gc(racing, Sources(), GcOptions(min_age=0, state_dir=str(tmp_path / "run")))
    assert [c.chain for c in result.removed] == [hostile]


def test_a_stale_chain_left_for_a_later_run_by_the_last_try_keeps_its_sighting(
    node: Node_, tmp_path
):
    """The chain gc's last try leaves for a later run (family._by_text: entered by a
    rule with control characters, on a busy node) had its sighting forgotten before the
    first try, as every chain a try removes has, and never written back: the run
    removed the others and the state file lost it, so its --min-age started over at
    the next run (pending again, "removable in" the whole --min-age), and under a
    cron more frequent than --min-age it was ripe one run in two at best. A chain not
    removed keeps its sighting (as a refused removal's do)."""
    hostile = _foreign_entry(node)
    options = GcOptions(min_age=1, state_dir=str(tmp_path / "run"))
    quiet = _racing_node(node, [])
    with netns.entered(node.ns):
        first = gc(quiet, Sources(), options)  # (the sightings: a second to wait)
    assert sorted(c.container_id for c in first.pending) == ["stale1", "stale2"]
    time.sleep(1.2)

    racing = _busy_node(node)
    with netns.entered(node.ns):
        busy = gc(racing, Sources(), options)
    assert [c.container_id for c in busy.removed] == ["stale2"], (busy.pending, busy.warnings)
    [waiting] = busy.pending
    assert waiting.chain == hostile and waiting.seen_seconds >= 1
    # The next run, at once, on a quiet node: ripe still (seen over a second ago), so
    # removed; its sighting lost, it was a new chain there, pending for --min-age.
    with netns.entered(node.ns):
        result = gc(quiet, Sources(), options)
    assert [c.chain for c in result.removed] == [hostile], result.pending


def test_a_stale_chain_left_for_a_later_run_by_the_last_try_is_said_why(node: Node_, tmp_path):
    """The chain gc's last try leaves for a later run (family._by_text) was a pending
    row like any other, "removable in 1s", though past --min-age, with nothing said:
    pending means not yet seen for --min-age (docs/monitoring.md,
    portmapctl_gc_chains_pending), and on a node that stays busy every run leaves it
    so. A warning now names it and says why, as for a chain held by an ADD."""
    hostile = _foreign_entry(node)

    racing = _busy_node(node)
    with netns.entered(node.ns):
        result = gc(racing, Sources(), GcOptions(min_age=0, state_dir=str(tmp_path / "run")))
    assert [c.chain for c in result.pending] == [hostile]
    [said] = [w for w in result.warnings if hostile in w]
    assert "IPv4" in said and "stale1" in said and "later run" in said, said
    assert "control characters" in said and "by number" in said, said


def test_a_stale_chain_left_for_a_later_run_by_the_last_try_says_why_in_its_row(
    node: Node_, tmp_path
):
    """The chain gc's last try leaves for a later run (family._by_text: a foreign rule
    with control characters in its comment enters it, on a busy node), past --min-age,
    read "removable in 0s, at <now>" in the table and `removable_in_seconds` 0 in JSON,
    beside a warning that this run left it; on a node that stays busy no run takes it.
    Its row now says why it waits, as a chain held for an ADD does (3b355c4): `held`
    names the reason, `removable_in_seconds` is null; the chain still waiting out
    --min-age beside it keeps its time."""
    hostile = _foreign_entry(node)
    options = GcOptions(min_age=60, state_dir=str(tmp_path / "run"))
    with netns.entered(node.ns):
        gc(_racing_node(node, []), Sources(), options)  # (the sightings)
    backdate(tmp_path / "run", {hostile, chain_name("gcnet", "stale2")}, 61)
    # A chain seen just now beside them: it waits out --min-age, and says when.
    node.add("gcnet", "young", ["10.88.0.14/16"], _ports("8083/tcp"), cache=False)

    racing = _busy_node(node)
    with netns.entered(node.ns):
        result = gc(racing, Sources(), options)
    assert [c.container_id for c in result.removed] == ["stale2"], result.pending
    cache = {"dirs": [str(node.cache)], "present": True, "entries": 1}
    doc = validated("gc", render.gc_json(result, options.min_age, cache))
    by_id = {p["container_id"]: p for p in doc["pending"]}
    assert set(by_id) == {"stale1", "young"}, doc
    assert by_id["stale1"]["held"] == "foreign-entry-unwritable", by_id["stale1"]
    assert by_id["stale1"]["removable_in_seconds"] is None
    assert by_id["young"]["held"] is None
    assert 0 < by_id["young"]["removable_in_seconds"] <= 60
    grid = render.gc_table(result, options.min_age)
    rows = {line.split()[2]: line for line in grid.plain.splitlines() if line.startswith("v4 ")}
    assert rows["stale1"].endswith("  held: a foreign rule entering it has control characters"), (
        rows
    )
    assert "removable in" in rows["young"] and "removable in" not in rows["stale1"], rows
