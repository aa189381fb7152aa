"""gc's teardown by rule number (planner._delete_rules), against the real kernel and the
real plugin: many entry rules out of CNI-HOSTPORT-DNAT, interleaved with live ones.

- the result is the same as deleting by text (what stays stays, in its order);
- the guard: a plugin ADD or DEL between gc's read and its write makes the planned
  transaction fail whole (nothing changed), and Node.converge then re-plans and gets
  it right: nothing the plugin did is lost or undone;
- `gc` in a loop while the real plugin ADDs and DELs containers, with enough stale
  chains each round that the teardown is by number: no plugin call fails, no live
  container loses a rule.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Dict, List

import pytest
import realplugin as rp
from test_gc import Node_, _containers, _ports

from portmapctl.errors import ApplyFailed
from portmapctl.host.netns import entered
from portmapctl.iptables import planner
from portmapctl.iptables.access import open_backend
from portmapctl.iptables.chains import DNAT_PREFIX, TOPLEVEL_DNAT, chain_name
from portmapctl.iptables.planner import BY_NUMBER_FROM, GUARD_CHAIN, plan_teardown
from portmapctl.iptables.ruleset import NatTable, rule_target
from portmapctl.ops.node import Node, NodeOptions

pytestmark = pytest.mark.netns

NET = "tdnet"


@pytest.fixture
def node(host_ns, iptables_mode, tmp_path) -> Node_:
    """As test_gc's: the host namespace, a flavour, an empty CNI cache."""
    cache = tmp_path / "cni"
    (cache / "results").mkdir(parents=True)
    return Node_(host_ns, iptables_mode, cache)


def _fill(node: Node_, count: int, tag: str, cache_every: int = 2) -> List[str]:
    """count containers through the real plugin; every cache_every-th gets a cache
    entry (live), the others none (stale). Returns the stale ones' IDs."""
    stale = []
    for i in range(count):
        cid = f"c{i:02d}-{tag}"
        live = i % cache_every == 0
        node.add(
            NET, cid, [f"10.88.3.{i + 1}/16"], _ports(f"{9000 + i}/tcp", f"{9500 + i}/udp"), live
        )
        if not live:
            stale.append(cid)
    return stale


def _read(node: Node_) -> NatTable:
    with entered(node.ns):
        return open_backend(node.mode).read(4)


def _apply(node: Node_, txn) -> None:
    with entered(node.ns):
        open_backend(node.mode).apply(txn)


def _dn(cids: List[str]) -> List[str]:
    return [chain_name(NET, cid, "DN-") for cid in cids]


def test_by_number_removes_exactly_what_by_text_does(node: Node_, monkeypatch):
    tag = uuid.uuid4().hex[:6]
    stale = _fill(node, 12, tag)
    before = _read(node)
    txn = plan_teardown(before, _dn(stale))
    assert any(op.kind == "delete-number" for op in txn.ops)
    assert txn.render().count(f"-N {GUARD_CHAIN}") == 1
    _apply(node, txn)
    after = _read(node)
    # The same plan by text, on the table as it was: the expected result.
    monkeypatch.setattr(planner, "BY_NUMBER_FROM", 10**9)
    by_text = plan_teardown(before, _dn(stale))
    assert not any(op.kind == "delete-number" for op in by_text.ops)
    monkeypatch.undo()
    # gc's last try (a busy node kept failing the guard): by text, the same plan.
    assert plan_teardown(before, _dn(stale), by_number=False).render() == by_text.render()
    gone = set(_dn(stale))
    for name, chain in before.chains.items():
        if name in gone:
            assert not after.has_chain(name)
            continue
        kept = tuple(r for r in chain.rules if rule_target(r) not in gone)
        assert after.rules(name) == kept, name
    assert not after.has_chain(GUARD_CHAIN)
    assert _containers(node) == {f"c{i:02d}-{tag}" for i in range(0, 12, 2)}
    for i in range(0, 12, 2):
        node.check(f"c{i:02d}-{tag}")


def _race_cases(node: Node_, tag: str) -> Dict[str, object]:
    def add() -> None:
        node.add(NET, f"new-{tag}", ["10.88.4.1/16"], _ports("9900/tcp", "9901/udp"))

    def delete() -> None:
        cid = f"c00-{tag}"  # live, first in the chain: every stale rule comes after it
        done = rp.run_plugin("DEL", node.ns, cid, node.confs[cid], mode=node.mode)
        assert done.returncode == 0, done.stderr

    def both() -> None:  # the rule count comes out the same
        delete()
        add()

    return {"add": add, "del": delete, "del+add": both}


@pytest.mark.parametrize("race", ["add", "del", "del+add"])
def test_a_plugin_call_between_read_and_write_fails_the_plan(node: Node_, race: str):
    tag = uuid.uuid4().hex[:6]
    stale = _fill(node, 2 * BY_NUMBER_FROM + 2, tag)
    read = _read(node)
    txn = plan_teardown(read, _dn(stale))
    assert any(op.kind == "delete-number" for op in txn.ops)
    _race_cases(node, tag)[race]()
    raced = node.lines(4)
    with pytest.raises(ApplyFailed):
        _apply(node, txn)
    assert node.lines(4) == raced  # refused whole
    # converge re-reads and re-plans: the stale chains go, the plugin's work stays.
    with entered(node.ns):
        node_ = Node(NodeOptions(iptables=node.mode, families=(4,)), open_backend(node.mode))
        node_.converge(4, lambda live: plan_teardown(live, _dn(stale)))
    expected = {f"c{i:02d}-{tag}" for i in range(0, 2 * BY_NUMBER_FROM + 2, 2)}
    if race != "add":
        expected.discard(f"c00-{tag}")
    if race != "del":
        expected.add(f"new-{tag}")
    assert _containers(node) == expected
    for cid in expected:
        node.check(cid)


def _gc(node: Node_) -> List[str]:
    done = node.gc("--yes", "--min-age", "1s", "-o", "json")
    assert done.returncode == 0, done.stderr
    return [r["container_id"] for r in json.loads(done.stdout)["removed"]]


def test_gc_loop_by_number_while_the_plugin_adds_and_deletes(node: Node_):
    """Each round makes 8 stale containers interleaved with the plugin's live ones (so
    gc deletes by number), while another thread runs the real plugin's ADD, CHECK and
    DEL of containers with a cache entry. gc must never take a live one's rule."""
    tag = uuid.uuid4().hex[:6]
    stop = threading.Event()
    failures: List[str] = []
    live: Dict[str, object] = {}
    ever_live = set()

    def plugin_loop() -> None:
        i = 0
        while not stop.is_set():
            cid = f"p{i}-{tag}"
            ip = f"10.88.5.{i % 250 + 1}/16"
            conf = rp.plugin_conf(NET, [ip], _ports(f"{20000 + i}/tcp", f"{21000 + i}/udp"))
            done = rp.run_plugin("ADD", node.ns, cid, conf, mode=node.mode)
            if done.returncode:
                failures.append(f"ADD {cid}: {done.stdout}{done.stderr}")
                return
            node.confs[cid] = conf
            live[cid] = node.cache_add(NET, cid)
            ever_live.add(cid)
            if len(live) > 4:
                oldest = next(iter(live))
                for check in rp.run_check(node.ns, oldest, node.confs[oldest], mode=node.mode):
                    if check.returncode:
                        failures.append(f"CHECK {oldest}: {check.stdout}{check.stderr}")
                done = rp.run_plugin("DEL", node.ns, oldest, node.confs[oldest], mode=node.mode)
                if done.returncode:
                    failures.append(f"DEL {oldest}: {done.stdout}{done.stderr}")
                live.pop(oldest).unlink()  # type: ignore[attr-defined]
            i += 1

    # The shared chains first: two plugin ADDs into an empty table at once race each
    # other (both see no CNI-HOSTPORT-MASQ, one -N fails), which is not what this tests.
    node.add(NET, f"w-{tag}", ["10.88.7.1/16"], _ports("29999/tcp"))
    thread = threading.Thread(target=plugin_loop)
    thread.start()
    removed: List[str] = []
    stale_made: List[str] = []
    try:
        deadline = time.monotonic() + 6.0
        rounds = 0
        while time.monotonic() < deadline or rounds < 3:
            for k in range(8):
                cid = f"s{rounds}x{k}-{tag}"
                node.add(
                    NET,
                    cid,
                    [f"10.88.6.{k + 1}/16"],
                    _ports(f"{30000 + 10 * rounds + k}/tcp"),
                    False,
                )
                stale_made.append(cid)
            # --min-age: a container the plugin is adding has no cache entry yet (libcni
            # writes it after the ADD); the rule that protects it. A stale chain goes on
            # the round after it was first seen.
            time.sleep(1.1)
            removed += _gc(node)
            rounds += 1
    finally:
        stop.set()
        thread.join()
    time.sleep(1.1)
    removed += _gc(node)
    assert not failures, failures
    assert not set(removed) & ever_live, "gc removed a container that was live"
    assert set(stale_made) <= set(removed)
    for cid in [*live, f"w-{tag}"]:
        node.check(cid)
    assert {c for c in _containers(node) if c.startswith("p")} == set(live)
    assert not _read(node).has_chain(GUARD_CHAIN)
    assert all(rule_target(r).startswith(DNAT_PREFIX) for r in _read(node).rules(TOPLEVEL_DNAT))
