"""The shortcuts taken for speed (SPEC §6, benchmarks/bench.py) answer exactly as the
plain ways they replace.

- ruleset: the one-split reading of quoted lines, `options()` for option_value;
- render.grid: text and style spans put together at once, as Text.append makes them;
- cli: a command's app built alone parses, helps and fails like the whole app;
- Node.read_with_cache: the saves run from a thread, in the namespace entered, and
  the tables' problem is reported first, as read() then read_cache() would.
"""

from __future__ import annotations

import realplugin as rp

from portmapctl.cni import cache as cni_cache
from portmapctl.host.netns import NamespaceView, NetnsState
from portmapctl.ops.node import NodeOptions, opened

# --- ruleset --------------------------------------------------------------------------

# Quotes, backslashes, blanks of several kinds and line-breaking characters: the
# places where the fast split could go wrong.


# --- render.grid --------------------------------------------------------------------------


# --- the command line -----------------------------------------------------------------------


# --- Node.read_with_cache -------------------------------------------------------------------


def test_read_with_cache_reads_the_namespace_entered(host_ns, iptables_mode, tmp_path):
    """The saves run in a thread: it must see the namespace, not the process's own."""
    ports = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
    ips = ["10.88.0.5/16", "fd00::5/64"]
    conf = rp.plugin_conf("mynet", ips, ports)
    rp.run_plugin("ADD", host_ns, "abc123", conf, mode=iptables_mode, check=True)
    rp.write_cni_cache(tmp_path, "mynet", "abc123", "eth0", conf, ports, ips)
    options = NodeOptions(iptables=iptables_mode, netns=host_ns, cache_dirs=(str(tmp_path),))
    with opened(options) as node:
        tables, cache = node.read_with_cache()
        assert tables == node.read()
        assert cache == node.read_cache()
    assert all(t.has_chain("CNI-DN-70a29d9dc18bc4d652ea5") for t in tables.values())
    assert [a.container_id for a in cache] == ["abc123"]
    assert cni_cache.read_cache(str(tmp_path), NamespaceView()) == cache
    assert cache[0].netns_state == NetnsState.PRESENT
