"""iptables/access/nfnl_batch.py: gc's removal on an iptables-nft table as one nf_tables
batch guarded by the generation the table was read at, against real iptables-nft, the
real plugin and iptables-restore.

- on every captured plugin shape, removing one, every other, or every per-container
  chain leaves exactly what the same transaction through iptables-restore leaves, both
  when the shared chain is rebuilt and when the rules go by handle;
- rules of shapes it does not know to re-add (stateful matches) make it delete by
  handle, never append them again, and foreign rules stay as they were;
- a plugin ADD or DEL after the read: the kernel refuses the batch whole, nothing
  changes, and what follows (the restore text with its own checks, Node.converge's
  re-plan) keeps the ADD's entry rule and does not bring the DEL's container back;
  commits elsewhere in the namespace do not keep gc from converging;
- a kept rule with a negated protocol, and the counters of kept rules, survive a
  rebuild; a refusal of 30,000 messages is read to its end without hanging;
- both families read at one generation apply one after the other (our own commit is
  recognised), and a gc moves the generation by exactly one commit per family;
- where it cannot vouch for the change, the restore text applies it instead; with
  PORTMAPCTL_NFT_BATCH=0 every change goes through iptables-restore.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import List, Sequence

import pytest
import realplugin as rp
from gc_helpers import Node_
from test_gc import _ports, _refusing

from portmapctl.errors import ApplyFailed
from portmapctl.host.netns import entered
from portmapctl.iptables.access import nfgen, nfmsg, nfnl_batch, open_backend
from portmapctl.iptables.access.nfnl_batch import Outcome
from portmapctl.iptables.access.restore import RestoreBackend
from portmapctl.iptables.chains import TOPLEVEL_DNAT, chain_name, is_plugin_chain
from portmapctl.iptables.planner import plan_teardown
from portmapctl.iptables.ruleset import NatTable
from portmapctl.ops.node import Node, NodeOptions

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]
DUMPS = sorted(
    [
        *(ROOT / "tests/fixtures").glob("*.v[46].save"),
        *(ROOT / "tests/fixtures/field").glob("*.v4.save"),
        *(ROOT / "examples").glob("node.v[46].save"),
    ]
)
# Those holding a per-container chain to remove (an IPv4-only setup's IPv6 dump has none).
WITH_CHAINS = [p for p in DUMPS if ":CNI-DN-" in p.read_text() or ":CNI-SN-" in p.read_text()]
WAYS = {"rebuild": 0, "by-handle": 10**12}  # REBUILD_STEPS_PER_RULE for each


@pytest.fixture
def nft_node(host_ns, tmp_path) -> Node_:
    rp.require(rp.mode_available("nft"))
    cache = tmp_path / "cni"
    (cache / "results").mkdir(parents=True)
    return Node_(host_ns, "nft", cache)


def _restore(ns: str, family: int, text: str, noflush: bool = False) -> None:
    tool = rp.tool_path("iptables-restore" if family == 4 else "ip6tables-restore", "nft")
    argv = ["ip", "netns", "exec", ns, tool, *(["--noflush"] if noflush else [])]
    done = subprocess.run(argv, input=text, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def _saved(ns: str, family: int) -> str:
    return rp.strip_save_comments(rp.save(ns, family, "nft"))


def _read(ns: str, family: int) -> NatTable:
    with entered(ns):
        table = RestoreBackend("nft").read(family)
    assert table.generation is not None  # nothing else commits here
    return table


def _choices(table: NatTable) -> List[Sequence[str]]:
    chains = [name for name in table.chains if is_plugin_chain(name)]
    return [chains[:1], chains[::2], chains] if chains else []


@pytest.mark.parametrize("way", sorted(WAYS))
@pytest.mark.parametrize("dump", WITH_CHAINS, ids=lambda p: p.name)
def test_the_batch_leaves_what_iptables_restore_leaves(dump, way, host_ns, monkeypatch):
    rp.require(rp.mode_available("nft"))
    monkeypatch.setattr(nfnl_batch, "REBUILD_STEPS_PER_RULE", WAYS[way])
    family = 6 if dump.name.endswith(".v6.save") else 4
    text = dump.read_text()
    _restore(host_ns, family, text)
    choices = _choices(_read(host_ns, family))
    assert choices, dump.name
    for removed in choices:
        left = {}
        for how in ("batch", "restore"):
            _restore(host_ns, family, text)
            table = _read(host_ns, family)
            txn = plan_teardown(table, removed)
            assert txn.removal is not None and txn.removal.generation == table.generation
            with entered(host_ns):
                if how == "batch":
                    result = nfnl_batch.apply_removal(family, txn.removal, table.generation)
                    assert result.outcome is Outcome.APPLIED, result.why
                    rebuilt = f"{TOPLEVEL_DNAT}: rebuilt" in result.why
                    going = txn.removal.rules.get(TOPLEVEL_DNAT, ())
                    every = len(going) == len(table.rules(TOPLEVEL_DNAT))
                    # Emptied whole, it is flushed: nothing to append again.
                    assert rebuilt == bool(going and (way == "rebuild" or every)), result.why
                else:
                    RestoreBackend("nft").apply(replace(txn, removal=None))
            left[how] = _saved(host_ns, family)
        assert left["batch"] == left["restore"], removed


def _foreign_stateful(node: Node_, target: str) -> List[str]:
    """Rules in CNI-HOSTPORT-DNAT that a rebuild would reset (a rate limit, a random
    choice): returned as `iptables -S` prints them."""
    rules = [
        ["-p", "tcp", "-m", "limit", "--limit", "5/sec", "-j", target],
        ["-p", "tcp", "-m", "statistic", "--mode", "random", "--probability", "0.5", "-j", target],
    ]
    for rule in rules:
        node.ipt(4, "-I", TOPLEVEL_DNAT, "1", *rule)
    return [line for line in node.lines(4) if "limit" in line or "statistic" in line]


def test_rules_it_cannot_re_add_make_it_delete_by_handle(nft_node, monkeypatch):
    node = nft_node
    monkeypatch.setattr(nfnl_batch, "REBUILD_STEPS_PER_RULE", 0)  # rebuild whenever it may
    for i in range(6):
        node.add("bnet", f"c{i}", [f"10.88.5.{i + 1}/16"], _ports(f"{9100 + i}/tcp"))
    foreign = _foreign_stateful(node, chain_name("bnet", "c0"))
    table = _read(node.ns, 4)
    txn = plan_teardown(table, [chain_name("bnet", f"c{i}") for i in (1, 2, 3, 4, 5)])
    with entered(node.ns):
        result = nfnl_batch.apply_removal(4, txn.removal, table.generation)
    assert result.outcome is Outcome.APPLIED, result.why
    assert f"{TOPLEVEL_DNAT}: by handle" in result.why
    lines = node.lines(4)
    assert [line for line in lines if "limit" in line or "statistic" in line] == foreign
    node.check("c0")
    assert not any(chain_name("bnet", f"c{i}") in "\n".join(lines) for i in range(1, 6))


def _node_for(node: Node_) -> Node:
    return Node(NodeOptions(iptables=node.mode, families=(4,)), open_backend(node.mode))


@pytest.mark.parametrize("way", sorted(WAYS))
@pytest.mark.parametrize("plugin_call", ["ADD", "DEL"])
def test_a_plugin_call_after_the_read_refuses_the_batch_whole(
    nft_node, plugin_call, way, monkeypatch
):
    """The danger a rebuild brings (an entry rule appended after the read would be
    flushed; one deleted would come back) is refused by the kernel: nothing changes,
    and the re-plan keeps what the plugin did."""
    node = nft_node
    monkeypatch.setattr(nfnl_batch, "REBUILD_STEPS_PER_RULE", WAYS[way])
    for i in range(8):
        node.add("bnet", f"c{i}", [f"10.88.5.{i + 1}/16"], _ports(f"{9100 + i}/tcp"))
    stale = [chain_name("bnet", f"c{i}") for i in (1, 3, 5, 7)]
    table = _read(node.ns, 4)
    txn = plan_teardown(table, stale)
    if plugin_call == "ADD":
        node.add("bnet", "late", ["10.88.5.50/16"], _ports("9150/tcp"))
    else:
        done = rp.run_plugin("DEL", node.ns, "c2", node.confs["c2"], mode="nft")
        assert done.returncode == 0, done.stderr
    before = node.lines(4)
    with entered(node.ns):
        result = nfnl_batch.apply_removal(4, txn.removal, table.generation)
        assert result.outcome is Outcome.CHANGED, result.why
        assert node.lines(4) == before
        # Refused, the backend falls back to the restore text planned from the same
        # read: its own checks refuse it when our chains moved; deleting by text it
        # may still apply, exactly. Either way converge ends with the stale ones gone.
        try:
            RestoreBackend("nft").apply(txn)
        except ApplyFailed:
            assert node.lines(4) == before
        _node_for(node).converge(4, lambda live: plan_teardown(live, stale))
    after = "\n".join(node.lines(4))
    assert not any(name in after for name in stale)
    live = ["c0", "c4", "c6"] + (["c2", "late"] if plugin_call == "ADD" else [])
    for cid in live:
        node.check(cid)
    if plugin_call == "DEL":
        assert chain_name("bnet", "c2") not in after  # not brought back


def test_both_families_read_at_one_generation_apply_in_turn(nft_node, caplog):
    node = nft_node
    caplog.set_level(logging.DEBUG, logger="portmapctl.iptables")
    for i in range(4):
        node.add(
            "bnet",
            f"d{i}",
            [f"10.88.6.{i + 1}/16", f"fd00:6::{i + 1}/64"],
            _ports(f"{9200 + i}/tcp"),
        )
    stale = [chain_name("bnet", f"d{i}") for i in (1, 3)]
    with entered(node.ns):
        backend = RestoreBackend("nft")
        tables = backend.read_families((4, 6))
        assert tables[4].generation == tables[6].generation is not None
        start = nfgen.generation()
        backend.apply(plan_teardown(tables[6], stale))
        backend.apply(plan_teardown(tables[4], stale))  # not refused: the move was ours
        assert nfgen.generation() == start + 2
    batches = [r.getMessage() for r in caplog.records if "one nf_tables batch" in r.getMessage()]
    assert len(batches) == 2 and all("applied as" in m for m in batches), batches
    for family in (4, 6):
        assert not any(name in line for line in node.lines(family) for name in stale)
    node.check("d0")
    node.check("d2")


def test_gc_commits_once_per_family_and_not_through_iptables_restore(
    nft_node, tmp_path, monkeypatch
):
    node = nft_node
    for i in range(6):
        ips = [f"10.88.7.{i + 1}/16", f"fd00:7::{i + 1}/64"]
        node.add(
            "bnet", f"e{i}", ips, _ports(f"{9300 + i}/tcp", f"{9400 + i}/udp"), cache=i % 2 == 0
        )
    with entered(node.ns):
        start = nfgen.generation()
    # iptables-restore refuses everything: gc does not need it on nf_tables.
    for name, value in _refusing(tmp_path, "iptables-nft-restore").items():
        monkeypatch.setenv(name, value)
    _refusing(tmp_path, "ip6tables-nft-restore")
    done = node.gc("--yes", "--min-age", "0")
    assert done.returncode == 0, done.stderr
    with entered(node.ns):
        assert nfgen.generation() == start + 2
    for cid in ("e0", "e2", "e4"):
        node.check(cid)
    # The same with the batch turned off: the refusing restore is what gc runs.
    for i in (1, 3):
        node.add("bnet", f"e{i}", [f"10.88.7.{i + 1}/16"], _ports(f"{9300 + i}/tcp"), cache=False)
    monkeypatch.setenv("PORTMAPCTL_NFT_BATCH", "0")
    done = node.gc("--yes", "--min-age", "0")
    assert done.returncode == 1 and "refused by the test" in done.stderr, done.stderr


def test_what_it_cannot_vouch_for_goes_through_iptables_restore(nft_node, monkeypatch):
    node = nft_node
    for i in range(4):
        node.add("bnet", f"f{i}", [f"10.88.8.{i + 1}/16"], _ports(f"{9500 + i}/tcp"))
    table = _read(node.ns, 4)
    txn = plan_teardown(table, [chain_name("bnet", "f1")])
    # A removal read from another chain than the one dumped: not applied by batch.
    wrong = replace(txn.removal, read={TOPLEVEL_DNAT: table.rules(TOPLEVEL_DNAT)[:-1]})
    before = node.lines(4)
    with entered(node.ns):
        result = nfnl_batch.apply_removal(4, wrong, table.generation)
        assert result.outcome is Outcome.UNAVAILABLE and "rules listed" in result.why
        assert node.lines(4) == before
        RestoreBackend("nft").apply(replace(txn, removal=wrong))  # the restore text does it
    assert chain_name("bnet", "f1") not in "\n".join(node.lines(4))
    for cid in ("f0", "f2", "f3"):
        node.check(cid)


def test_a_commit_just_before_the_batch_is_sent_is_refused_by_the_kernel(nft_node, monkeypatch):
    """The generation is checked by the kernel as it takes the batch, not only before:
    a plugin ADD committed between the last look and the send (here: made at that very
    moment) refuses the whole batch with ERESTART."""
    node = nft_node
    monkeypatch.setattr(nfnl_batch, "REBUILD_STEPS_PER_RULE", 0)
    for i in range(6):
        node.add("bnet", f"g{i}", [f"10.88.9.{i + 1}/16"], _ports(f"{9600 + i}/tcp"))
    table = _read(node.ns, 4)
    txn = plan_teardown(table, [chain_name("bnet", f"g{i}") for i in (1, 3, 5)])
    real_room_for = nfmsg.room_for

    def plugin_add_then_room_for(sock, size):
        node.add("bnet", "late", ["10.88.9.50/16"], _ports("9650/tcp"))
        real_room_for(sock, size)

    monkeypatch.setattr(nfmsg, "room_for", plugin_add_then_room_for)
    with entered(node.ns):
        result = nfnl_batch.apply_removal(4, txn.removal, table.generation)
    assert result.outcome is Outcome.CHANGED, result.why
    lines = "\n".join(node.lines(4))
    assert all(chain_name("bnet", f"g{i}") in lines for i in range(6))  # nothing went
    node.check("late")


def test_a_kept_rule_with_a_negated_protocol_is_appended_again_as_it_was(nft_node, monkeypatch):
    """`! -p udp` re-added with NFT_RULE_COMPAT_F_INV: the rebuild goes through (the
    kernel refuses an unknown flag) and iptables-save shows the rule as it was."""
    node = nft_node
    monkeypatch.setattr(nfnl_batch, "REBUILD_STEPS_PER_RULE", 0)
    for i in range(4):
        node.add("bnet", f"h{i}", [f"10.88.10.{i + 1}/16"], _ports(f"{9700 + i}/tcp"))
    target = chain_name("bnet", "h0")
    node.ipt(
        4, "-A", TOPLEVEL_DNAT, "!", "-p", "udp", "-m", "comment", "--comment", "x", "-j", target
    )
    table = _read(node.ns, 4)
    txn = plan_teardown(table, [chain_name("bnet", f"h{i}") for i in (1, 2, 3)])
    with entered(node.ns):
        result = nfnl_batch.apply_removal(4, txn.removal, table.generation)
    assert result.outcome is Outcome.APPLIED and f"{TOPLEVEL_DNAT}: rebuilt" in result.why, (
        result.why
    )
    dnat = [line for line in node.lines(4) if line.startswith(f"-A {TOPLEVEL_DNAT} ")]
    assert dnat[-1] == f"-A {TOPLEVEL_DNAT} ! -p udp -m comment --comment x -j {target}"
    node.check("h0")


def test_a_rebuild_keeps_the_counters_of_the_rules_kept(nft_node, monkeypatch):
    node = nft_node
    monkeypatch.setattr(nfnl_batch, "REBUILD_STEPS_PER_RULE", 0)
    for i in range(4):
        node.add("bnet", f"k{i}", [f"10.88.11.{i + 1}/16"], _ports(f"{9800 + i}/tcp"))
    saved = rp.save(node.ns, 4, "nft")
    # The same table, each entry rule with counters of its own (iptables-restore -c).
    counted = "\n".join(
        f"[{n + 7}:{(n + 7) * 60}] {line}" if line.startswith(f"-A {TOPLEVEL_DNAT} ") else line
        for n, line in enumerate(saved.splitlines())
    )
    tool = rp.tool_path("iptables-restore", "nft")
    subprocess.run(
        ["ip", "netns", "exec", node.ns, tool, "-c"], input=counted + "\n", text=True, check=True
    )

    def counters() -> dict:
        text = subprocess.run(
            ["ip", "netns", "exec", node.ns, rp.tool_path("iptables-save", "nft"), "-c", "-t", "nat"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        found = {}
        for line in text.splitlines():
            if f"-A {TOPLEVEL_DNAT} " in line:
                count, rule = line.split(" ", 1)  # "[packets:bytes] -A ..."
                found[rule] = count
        return found

    before = counters()
    table = _read(node.ns, 4)
    txn = plan_teardown(table, [chain_name("bnet", f"k{i}") for i in (1, 3)])
    with entered(node.ns):
        result = nfnl_batch.apply_removal(4, txn.removal, table.generation)
    assert result.outcome is Outcome.APPLIED and "rebuilt" in result.why, result.why
    after = counters()
    assert after and after == {rule: c for rule, c in before.items() if rule in after}
    assert len(after) == 2 and "[0:0]" not in after.values()


def test_many_refused_messages_are_all_answered_and_nothing_hangs(nft_node):
    """A batch the kernel refuses message by message (30,000 deletes of rules that do
    not exist): more errors than the receive buffer holds. The answer is still read
    (the question asked again after the overflow), with the errors, in bounded time."""
    node = nft_node
    node.add("bnet", "m0", ["10.88.12.1/16"], _ports("9900/tcp"))
    from portmapctl.host.netlink import nla as _nla

    where = _nla(1, b"nat\0") + _nla(2, TOPLEVEL_DNAT.encode() + b"\0")
    missing = ((1 << 40) + i for i in range(30_000))  # no rule has such a handle
    messages = [
        nfgen.message(nfgen.nftables(8), 1, 2, 10 + i, where + _nla(3, h.to_bytes(8, "big")))
        for i, h in enumerate(missing)
    ]
    import socket

    batch = (
        nfgen.message(0x10, 1, 0, 9, b"", socket.htons(10))
        + b"".join(messages)
        + nfgen.message(0x11, 1, 0, 40_010, b"", socket.htons(10))
    )
    before = node.lines(4)
    with entered(node.ns):
        with nfgen.open_socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, 32, len(batch) + (1 << 16))  # SO_SNDBUFFORCE
            started = time.monotonic()
            sock.send(batch)
            _generation, errors = nfgen.replies_until(sock, 40_011)
            assert time.monotonic() - started < 10
    assert errors  # refused: every delete named a rule that is not there
    assert node.lines(4) == before


def test_gc_on_a_node_where_other_tables_keep_changing_still_converges(nft_node):
    """Commits elsewhere in the namespace (another program's nftables table, every few
    milliseconds) refuse the batch each time; the restore text, whose own checks are
    about our chains only, then applies the removal, as before the batch existed."""
    node = nft_node
    for i in range(8):
        node.add(
            "bnet", f"n{i}", [f"10.88.13.{i + 1}/16"], _ports(f"{9950 + i}/tcp"), cache=i % 2 == 0
        )
    nft = ["ip", "netns", "exec", node.ns, "nft"]
    subprocess.run([*nft, "add table inet busy"], check=True)
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            subprocess.run([*nft, "add chain inet busy c; delete chain inet busy c"], check=False)

    worker = threading.Thread(target=busy, daemon=True)
    worker.start()
    try:
        done = node.gc("--yes", "--min-age", "0")
    finally:
        stop.set()
        worker.join()
    assert done.returncode == 0, done.stderr
    lines = "\n".join(node.lines(4))
    assert not any(chain_name("bnet", f"n{i}") in lines for i in (1, 3, 5, 7))
    for cid in ("n0", "n2", "n4", "n6"):
        node.check(cid)


def test_gc_verbose_says_how_each_family_was_removed(nft_node):
    node = nft_node
    for i in range(4):
        node.add("bnet", f"v{i}", [f"10.88.14.{i + 1}/16"], _ports(f"{9990 + i}/tcp"), cache=i == 0)
    done = node.gc("--yes", "--min-age", "0", "-v", "--family", "4")
    assert done.returncode == 0, done.stderr
    told = [line for line in done.stderr.splitlines() if "nf_tables batch" in line]
    assert told == [
        f"portmapctl: IPv4: applied as one nf_tables batch: {TOPLEVEL_DNAT}: by handle,"
        " 3 rules out, 1 kept; 3 chains deleted"
    ], done.stderr


def test_gc_verbose_says_a_removal_went_through_iptables_restore(nft_node, monkeypatch):
    """With PORTMAPCTL_NFT_BATCH=0 (or a read whose ruleset generation is not known)
    gc's removal on iptables-nft goes through iptables-restore, and `-v` said nothing
    of it, where the batch says "applied as one nf_tables batch": which way ran could
    not be told. Said now."""
    node = nft_node
    for i in range(2):
        node.add("bnet", f"r{i}", [f"10.88.15.{i + 1}/16"], _ports(f"{9980 + i}/tcp"), cache=i == 0)
    monkeypatch.setenv("PORTMAPCTL_NFT_BATCH", "0")
    done = node.gc("--yes", "--min-age", "0", "-v", "--family", "4")
    assert done.returncode == 0, done.stderr
    assert chain_name("bnet", "r1") not in "\n".join(node.lines(4))
    told = [line for line in done.stderr.splitlines() if "nf_tables batch" in line]
    assert told == [
        "portmapctl: IPv4: not as one nf_tables batch (PORTMAPCTL_NFT_BATCH=0): iptables-restore"
    ], done.stderr
