"""`add --backend nftables` while the real upstream plugin (v1.9.1) ADDs: the plugin's
`nft -f` lands between add's read of the tables and its own `nft -f`.

The plugin's ADD appends its container's rules without looking (FACTS: `add rule`
only), so add's transaction, planned from the read before it, appended the same rules
again: every rule of the container twice, in both families. add's transaction now
carries a guard the plugin's ADD breaks (planner._guard_plugin_add): the table made with
`create` where the read found none, else the entry rule of `prerouting` replaced or
deleted by the handle read (every plugin ADD flushes that chain): the kernel refuses
the try whole and add reads and plans again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, List, Optional

import pytest
import realplugin as rp
import upstream

from portmapctl.cni import config as cni_config
from portmapctl.core.backend import Backend
from portmapctl.host import netns
from portmapctl.ops.add import add
from portmapctl.ops.node import Node, NodeOptions
from portmapctl.ops.node_access import iptables_access, nft_access

pytestmark = pytest.mark.netns

V191 = "v1.9.1"
PORTS = [rp.port_mapping(8080, 80), rp.port_mapping(5353, 53, "udp")]


@pytest.fixture(autouse=True)
def _upstream_binaries() -> None:
    rp.require(upstream.available())


@pytest.fixture
def node() -> Iterator[str]:
    name = rp.create_netns("pmt-nftaddrace")
    try:
        yield name
    finally:
        rp.delete_netns(name)


class ApplyRacingNft:
    """The real nftables access; `race` (the real plugin) runs once, just before add's
    first `nft -f`, after the read it was planned from."""

    def __init__(self, access, race: Callable[[], None]) -> None:
        self.access = access
        self.race: Optional[Callable[[], None]] = race
        self.applied: List[str] = []

    def __getattr__(self, name: str):
        return getattr(self.access, name)

    def apply(self, txn, *args, **kwargs):
        if self.race is not None:
            self.race, race = None, self.race
            race()
        self.applied.append(txn.render())
        return self.access.apply(txn, *args, **kwargs)


def _add_racing(ns: str, tmp_path: Path, cid: str, conf: dict, race: Callable[[], None]):
    config = cni_config.plugin_config(conf, cid, "eth0")
    options = NodeOptions(netns=ns, cache_dirs=(str(tmp_path),), backend=Backend.NFTABLES)
    with netns.entered(ns):
        racing = ApplyRacingNft(nft_access(options), race)
        result = add(Node(options, iptables_access(options), racing), config, flush_udp=False)
    assert racing.race is None  # (it ran)
    return result, racing.applied


# (what is on the node before: the other container's conf, or none)
BEFORE = {
    # No table yet: the read finds none, the plugin's ADD makes it.
    "no-table": None,
    # The table with another container: its entry is the one add writes (kept).
    "other-container": upstream.nft_conf("podman", ["10.88.0.10/16"], [rp.port_mapping(9090, 90)]),
    # The last ADD's conditions in prerouting/output: add rewrites the entry (flush).
    "other-conditions": upstream.nft_conf(
        "condnet",
        ["10.89.0.10/16", "fd00:89::10/64"],
        [rp.port_mapping(9090, 90)],
        conditions_v4=["ip saddr 192.168.0.0/16"],
        conditions_v6=["ip6 saddr fd00::/8"],
    ),
    # An IPv4-only container: the IPv4 table is there, the IPv6 one is not.
    "ipv4-table-only": upstream.nft_conf("podman", ["10.88.0.10/16"], [rp.port_mapping(9090, 90)]),
}


@pytest.mark.parametrize("before", list(BEFORE))
def test_a_plugin_add_of_the_same_container_between_read_and_write_is_not_doubled(
    node: str, tmp_path: Path, before: str
) -> None:
    other = BEFORE[before]
    if other is not None:
        upstream.run(V191, "ADD", node, "other", other, check=True)
    conf = upstream.nft_conf("podman", ["10.88.0.5/16", "fd00:88::5/64"], PORTS)
    result, applied = _add_racing(
        node,
        tmp_path,
        "racer",
        conf,
        lambda: upstream.run(V191, "ADD", node, "racer", conf, check=True),
    )
    ruleset = upstream.ruleset_text(node)
    for rule in (
        'tcp dport 8080 dnat to 10.88.0.5:80 comment "racer"',
        'udp dport 5353 dnat to 10.88.0.5:53 comment "racer"',
        'ip saddr 10.88.0.5 ip daddr 10.88.0.5 masquerade comment "racer"',
        'ip saddr 127.0.0.1 ip daddr 10.88.0.5 masquerade comment "racer"',
        'tcp dport 8080 dnat to [fd00:88::5]:80 comment "racer"',
        'udp dport 5353 dnat to [fd00:88::5]:53 comment "racer"',
        'ip6 saddr fd00:88::5 ip6 daddr fd00:88::5 masquerade comment "racer"',
    ):
        assert ruleset.count(rule) == 1, ruleset
    # One entry per base chain and family, the plugin's (no conditions: racer's).
    assert ruleset.count("\t\tfib daddr type local jump hostports_all\n") == 4, ruleset
    assert len(applied) == 1  # the first try refused, found nothing left to write
    assert not result.changed  # (the plugin's ADD made it all)
    upstream.run(V191, "CHECK", node, "racer", conf, check=True)
    upstream.run(V191, "DEL", node, "racer", conf, check=True)
    assert "racer" not in upstream.ruleset_text(node)
    if other is not None:
        upstream.run(V191, "CHECK", node, "other", other, check=True)


def test_a_plugin_add_of_another_container_between_read_and_write_loses_nothing(
    node: str, tmp_path: Path
) -> None:
    """The guard refuses add's try for any plugin ADD in the family, another
    container's too: planned again, both containers' rules are there once."""
    first = upstream.nft_conf("podman", ["10.88.0.10/16"], [rp.port_mapping(9090, 90)])
    upstream.run(V191, "ADD", node, "first", first, check=True)
    newcomer = upstream.nft_conf("podman", ["10.88.0.11/16"], [rp.port_mapping(9091, 91)])
    conf = upstream.nft_conf("podman", ["10.88.0.5/16"], PORTS)
    result, applied = _add_racing(
        node, tmp_path, "racer", conf,
        lambda: upstream.run(V191, "ADD", node, "newcomer", newcomer, check=True),
    )  # fmt: skip
    assert result.changed
    assert len(applied) == 2  # refused once, then written from a fresh read
    ruleset = upstream.ruleset_text(node)
    assert ruleset.count('comment "racer"') == 4, ruleset  # 2 DNAT + 2 masquerade
    assert ruleset.count('comment "newcomer"') == 3, ruleset
    for cid, c in (("first", first), ("newcomer", newcomer), ("racer", conf)):
        upstream.run(V191, "CHECK", node, cid, c, check=True)
