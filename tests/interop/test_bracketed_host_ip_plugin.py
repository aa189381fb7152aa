"""A hostIP in brackets, through the real plugin and portmapctl side by side.

The plugin's Go reads no brackets (net.ParseIP is nil, To4() nil: an IPv6 entry), so
for a container without an IPv6 address it skips the entry and its ADD succeeds;
portmapctl read the address inside, and made a mapping the plugin does not make
(tests/unit/test_bracketed_host_ip.py has the rule in full).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pmctl
import pytest
import realplugin as rp

pytestmark = pytest.mark.netns

PORTS = [
    {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "[127.0.0.1]"},
    rp.port_mapping(9090, 90, "tcp"),
]


@pytest.fixture
def twins() -> Iterator[tuple[str, str]]:
    rp.require(rp.netns_available())
    rp.require(rp.plugin_available())
    names = (rp.create_netns("pmt-brk-p"), rp.create_netns("pmt-brk-m"))
    try:
        yield names
    finally:
        for name in names:
            rp.delete_netns(name)


def test_a_bracketed_host_ip_makes_what_the_plugin_makes(twins, tmp_path: Path) -> None:
    plugin_ns, ours_ns = twins
    conf = rp.plugin_conf("mynet", ["10.88.0.5/16"], PORTS)
    rp.run_plugin("ADD", plugin_ns, "c1", conf, check=True)
    theirs = [line for line in rp.nat_rules(rp.save(plugin_ns, 4)) if "CNI-" in line]
    # No DNAT rule for 8080 (its port stays in the entry rule's multiport).
    assert not any("--dport 8080" in line for line in theirs), theirs
    path = tmp_path / "conf.json"
    path.write_text(json.dumps(conf))
    done = pmctl.run(["add", "--container", "c1", "--cni-config", str(path), "--netns", ours_ns])
    assert done.returncode == 0, done.stderr
    assert [line for line in rp.nat_rules(rp.save(ours_ns, 4)) if "CNI-" in line] == theirs
    # The plugin's ADD cached as libcni caches it: check finds the node healthy.
    cache = tmp_path / "cni"
    rp.write_cni_cache(cache, "mynet", "c1", "eth0", conf, PORTS, ["10.88.0.5/16"])
    done = pmctl.run(["check", "--netns", plugin_ns, "--cni-cache-dir", str(cache)])
    assert done.returncode == 0, done.stdout + done.stderr
