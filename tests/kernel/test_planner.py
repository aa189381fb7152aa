"""The planner's transactions against live tables, including a table that changes
between reading and writing (the plugin ran meanwhile)."""

from __future__ import annotations

import ipaddress

import pytest
import realplugin as rp
from fixtures_lib import table

from portmapctl.core.mapping import MappingConfig, PortMapping
from portmapctl.errors import ApplyFailed
from portmapctl.iptables.chains import wanted_chains
from portmapctl.iptables.planner import plan_setup
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


def test_a_changed_per_container_chain_is_flushed_and_rewritten():
    live = table("basic", 4)
    text = plan_setup(wanted_chains(_config("abc123", 9999), 4), live).render()
    assert "-F CNI-DN-70a29d9dc18bc4d652ea5" in text
    assert "-N CNI-DN" not in text
    assert "-D CNI-HOSTPORT-DNAT" in text  # the old entry rules go


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
