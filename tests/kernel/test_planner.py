"""The planner's transactions against live tables, including a table that changes
between reading and writing (the plugin ran meanwhile)."""

from __future__ import annotations

import ipaddress

import pytest
import realplugin as rp
from fixtures_lib import table

from portmapctl.core.mapping import MappingConfig, PortMapping
from portmapctl.errors import ApplyFailed
from portmapctl.iptables.chains import chain_name, wanted_chains
from portmapctl.iptables.planner import GUARD_CHAIN, plan_setup
from portmapctl.iptables.transaction import OpKind, Transaction
from portmapctl.ops.node import NodeOptions, opened


def _config(container_id: str, port: int) -> MappingConfig:
    return MappingConfig(
        "mynet", container_id, (ipaddress.ip_interface("10.88.0.5/16"),), (PortMapping(port, 80),)
    )


def test_new_chains_are_created_with_dash_n_never_declared():
    """A `:CHAIN` line would flush a chain that appeared after we read the table."""
    text = plan_setup(wanted_chains(_config("abc123", 8080), 4), table("basic", 6)).render()
    assert "-N CNI-HOSTPORT-DNAT" in text
    assert not any(line.startswith(":") for line in text.splitlines())


def test_a_changed_per_container_chain_is_emptied_by_text_and_rewritten():
    live = table("basic", 4)
    chain = "CNI-DN-70a29d9dc18bc4d652ea5"
    txn = plan_setup(wanted_chains(_config("abc123", 9999), 4), live)
    text = txn.render()
    assert "-F " not in text and "-N CNI-DN" not in text
    own = [(op.kind, op.args) for op in txn.ops if op.chain == chain]
    # Each rule read deleted by its text, then the guard (the chain must be empty by
    # then: -D 1 takes the jump only then, else -X of the guard fails), then the
    # wanted rules: a chain the plugin rewrote meanwhile fails the transaction.
    read = [(OpKind.DELETE, rule) for rule in live.rules(chain)]
    assert read and own[: len(read)] == read
    assert own[len(read) : len(read) + 2] == [
        (OpKind.APPEND, ("-j", GUARD_CHAIN)),
        (OpKind.DELETE_NUMBER, ("1",)),
    ]
    assert all(kind is OpKind.APPEND for kind, _ in own[len(read) + 2 :])
    # One guard chain for the transaction: made first, removed last.
    guard = [op.kind for op in txn.ops if op.chain == GUARD_CHAIN]
    assert guard == [OpKind.NEW_CHAIN, OpKind.DELETE_CHAIN]
    assert txn.ops[0].chain == txn.ops[-1].chain == GUARD_CHAIN
    assert "-D CNI-HOSTPORT-DNAT" in text  # the old entry rules go


def _rewrites(options: NodeOptions, ns: str, mode: str) -> Transaction:
    """Two containers the plugin made, planned again with another address (10.88.0.5):
    both chains rewritten in one transaction."""
    configs = []
    for cid, port in (("one", 8081), ("two", 8082)):
        conf = rp.plugin_conf(
            "mynet", ["10.88.0.7/16"], [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]
        )
        rp.run_plugin("ADD", ns, cid, conf, mode=mode, check=True)
        configs.append(_config(cid, port))
    with opened(options) as node:
        txn = plan_setup([c for cfg in configs for c in wanted_chains(cfg, 4)], node.read()[4])
    return txn


def test_rewrites_apply_and_leave_exactly_the_wanted_rules(host_ns, iptables_mode):
    options = NodeOptions(iptables=iptables_mode, families=(4,), netns=host_ns)
    txn = _rewrites(options, host_ns, iptables_mode)
    with opened(options) as node:
        node.backend.apply(txn)
        configs = [_config("one", 8081), _config("two", 8082)]
        wanted = [c for cfg in configs for c in wanted_chains(cfg, 4)]
        assert not plan_setup(wanted, node.read()[4])  # nothing left to do
    assert "10.88.0.7" not in rp.strip_save_comments(rp.save(host_ns, 4, iptables_mode))


def test_a_rewrite_fails_whole_when_the_chain_gained_a_rule(host_ns, iptables_mode):
    # The plugin's ADD appends a chain's rules one iptables run at a time: a chain read
    # half made gains the rest before the write. The rules read are all still there, so
    # only the guard sees it; a flush took them all.
    options = NodeOptions(iptables=iptables_mode, families=(4,), netns=host_ns)
    txn = _rewrites(options, host_ns, iptables_mode)
    chain = chain_name("mynet", "two", "DN-")
    rp.iptables(
        host_ns, ["-t", "nat", "-A", chain, "-p", "udp", "-j", "RETURN"], mode=iptables_mode
    )
    before = rp.strip_save_comments(rp.save(host_ns, 4, iptables_mode))
    with opened(options) as node:
        with pytest.raises(ApplyFailed):
            node.backend.apply(txn)
    assert rp.strip_save_comments(rp.save(host_ns, 4, iptables_mode)) == before


def test_a_stale_plan_fails_whole_and_converge_replans(host_ns, iptables_mode):
    options = NodeOptions(iptables=iptables_mode, families=(4,), netns=host_ns)
    ours = wanted_chains(_config("ours", 8081), 4)
    with opened(options) as node:
        stale = plan_setup(ours, node.read()[4])  # read before the plugin runs
    conf = rp.plugin_conf(
        "mynet", ["10.88.0.7/16"], [{"hostPort": 8082, "containerPort": 80, "protocol": "tcp"}]
    )
    rp.run_plugin("ADD", host_ns, "theirs", conf, mode=iptables_mode, check=True)
    before = rp.save(host_ns, 4, iptables_mode)
    with opened(options) as node:
        with pytest.raises(ApplyFailed):
            node.backend.apply(stale)
        assert rp.strip_save_comments(rp.save(host_ns, 4, iptables_mode)) == rp.strip_save_comments(
            before
        )
        node.converge(4, lambda live: plan_setup(ours, live))
    for done in rp.run_check(host_ns, "theirs", conf, mode=iptables_mode):
        assert done.returncode == 0, done.stderr
    text = rp.save(host_ns, 4, iptables_mode)
    assert "--dports 8081" in text and "--dports 8082" in text
