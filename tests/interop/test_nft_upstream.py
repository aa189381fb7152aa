"""portmapctl's nftables side against the real upstream plugins v1.6.2, v1.7.1, v1.9.1.

- plugin-made state reads exactly (rows and no problems);
- our setup passes upstream CHECK and vanishes on upstream DEL;
- teardown removes exactly the dead (the same state as the plugin's DEL of them);
- repair after `nft flush table ip cni_hostport` restores and CHECK passes again.

The binaries come from `<repo>/../shared/reference/upstream/bin` (or
`PORTMAPCTL_UPSTREAM_BIN`). Without them these tests skip, except under
`PORTMAPCTL_REQUIRE_NETNS=1` (CI), where they fail.
"""

from __future__ import annotations

from typing import Iterator, List, Sequence

import nftcases
import pytest
import realplugin as rp
import upstream

from portmapctl.core.mapping import MappingConfig
from portmapctl.core.status import ProblemKind
from portmapctl.host import netns
from portmapctl.nftables import inventory, planner, ruleset
from portmapctl.nftables.access.nft import RealNft
from portmapctl.nftables.inventory import Owner
from portmapctl.nftables.wanted import wanted

pytestmark = pytest.mark.netns


@pytest.fixture(autouse=True)
def _upstream_binaries() -> None:
    rp.require(upstream.available())


@pytest.fixture
def node() -> Iterator[str]:
    name = rp.create_netns("pmt-nftup")
    try:
        yield name
    finally:
        rp.delete_netns(name)


_pm = rp.port_mapping


def _step(cid: str, network: str, ips: Sequence[str], ports: Sequence[dict], **options) -> dict:
    return {"containerId": cid, "conf": upstream.nft_conf(network, ips, ports, **options)}


# Containers every upstream version's CHECK accepts in the v1.9 shape we write: v1.6/v1.7
# CHECK wants one masquerade rule per mapping and host-IP rules in hostip_hostports.
SIMPLE = [
    _step("simple1", "podman", ["10.88.0.5/16"], [_pm(8080, 80)]),
    _step("simple2", "podman", ["10.88.0.6/16"], [_pm(5353, 53, "udp")], snat=False),
]
FULL = [
    _step("full1", "podman", ["10.88.0.11/16", "fd00:88::11/64"], [_pm(8081, 80), _pm(5354, 53, "udp")]),
    _step("full2", "podman", ["10.88.0.12/16", "fd00:88::12/64"],
          [_pm(9090, 90, host_ip="127.0.0.1"), _pm(9091, 91, host_ip="::1"), _pm(9200, 92, "sctp")]),
    _step("full3", "other", ["10.89.0.13/16"], [_pm(7000, 70), _pm(7001, 71, "udp", "0.0.0.0")],
          snat=False),
    _step("full4", "condnet", ["10.90.0.14/16", "fd00:90::14/64"], [_pm(6100, 61)],
          conditions_v4=["ip saddr 192.168.0.0/16"], conditions_v6=["ip6 saddr != fd00:99::/64"]),
]  # fmt: skip


def _config(step: dict) -> MappingConfig:
    return nftcases.config_of(step)


def _wanted(configs: Sequence[MappingConfig]):
    return [w for c in configs for f in (4, 6) if (w := wanted(c, f)) is not None]


def _read(ns: str) -> ruleset.Ruleset:
    with netns.entered(ns):
        return RealNft().read()


def _apply(ns: str, txn) -> None:
    with netns.entered(ns):
        RealNft().apply(txn)


def _rows(live: ruleset.Ruleset, configs: Sequence[MappingConfig]):
    owners = [Owner(c.network, c.container_id, c) for c in configs]
    return inventory.build(live, owners, nft_backed=owners)


def _expected_rows(configs: Sequence[MappingConfig]) -> set:
    rows = set()
    for c in configs:
        for family in c.families:
            address = c.address(family)
            assert address is not None
            for p in c.ports:
                if p.applies_to(family):
                    rows.add(
                        (
                            c.network,
                            c.container_id,
                            family,
                            p.protocol,
                            p.host_ip_for_rule(),
                            p.host_port,
                            address.ip.compressed,
                            p.container_port,
                            c.snat,
                        )
                    )
    return rows


def _row_set(found) -> set:
    return {(m.network, m.container_id, m.family, m.protocol, m.host_ip, m.host_port,
             m.container_ip, m.container_port, m.snat) for m in found.mappings}  # fmt: skip


def _bodies(live: ruleset.Ruleset) -> dict:
    return {
        (f, name): (chain.base, [r.body for r in t.rules_of(name)])
        for f, t in live.tables.items()
        for name, chain in t.chains.items()
    }


def _check(version: str, ns: str, step: dict) -> None:
    upstream.run(version, "CHECK", ns, step["containerId"], step["conf"], check=True)


@pytest.mark.parametrize("version", upstream.VERSIONS)
def test_plugin_made_state_reads_exactly(node: str, version: str) -> None:
    steps = SIMPLE + FULL
    for step in steps:
        upstream.run(version, "ADD", node, step["containerId"], step["conf"], check=True)
    live = _read(node)
    assert live == ruleset.parse(upstream.ruleset_json(node), "dump")
    configs = [_config(s) for s in steps]
    found = _rows(live, configs)
    assert _row_set(found) == _expected_rows(configs)
    assert all(m.status == ("ok",) for m in found.mappings)
    assert not found.problems
    # And nothing to add: the plugin's own state is healthy for our planner.
    txn = planner.setup(live, _wanted(configs))
    assert all(op.chain == "hostports_all" for op in txn.ops), txn.render()


@pytest.mark.parametrize("version", upstream.VERSIONS)
def test_our_setup_passes_upstream_check_and_vanishes_on_del(node: str, version: str) -> None:
    steps = SIMPLE + (FULL if version == "v1.9.1" else [])
    configs = [_config(s) for s in steps]
    _apply(node, planner.setup(_read(node), _wanted(configs)))
    for step in steps:
        _check(version, node, step)
    for step in steps:
        upstream.run(version, "DEL", node, step["containerId"], step["conf"], check=True)
    left = _read(node)
    assert not [
        r for t in left.tables.values() for c in ruleset.CONTAINER_CHAINS for r in t.rules_of(c)
    ]


def test_v191_add_of_our_setup_changes_nothing_but_order(node: str) -> None:
    """Our setup of FULL equals, rule for rule, what v1.9.1's ADDs of FULL write."""
    _apply(node, planner.setup(_read(node), _wanted([_config(s) for s in FULL])))
    ours = _bodies(_read(node))
    other = rp.create_netns("pmt-nftup")
    try:
        for step in FULL:
            upstream.run("v1.9.1", "ADD", other, step["containerId"], step["conf"], check=True)
        assert ours == _bodies(_read(other))
    finally:
        rp.delete_netns(other)


def test_teardown_removes_exactly_the_dead(node: str) -> None:
    steps = SIMPLE + FULL
    old = _step("old1", "podman", ["10.88.0.30/16"], [_pm(9300, 93, host_ip="127.0.0.1")])
    upstream.run("v1.7.1", "ADD", node, old["containerId"], old["conf"], check=True)
    for step in steps:
        upstream.run("v1.9.1", "ADD", node, step["containerId"], step["conf"], check=True)
    dead = {"old1", "full2", "simple1"}
    # The reference: the same node, with the plugin's DEL of the dead.
    other = rp.create_netns("pmt-nftup")
    try:
        upstream.run("v1.7.1", "ADD", other, old["containerId"], old["conf"], check=True)
        for step in steps:
            upstream.run("v1.9.1", "ADD", other, step["containerId"], step["conf"], check=True)
        for step in [old, *steps]:
            if step["containerId"] in dead:
                upstream.run("v1.9.1", "DEL", other, step["containerId"], step["conf"], check=True)
        reference = _read(other)
    finally:
        rp.delete_netns(other)
    txn = planner.teardown(_read(node), dead)
    _apply(node, txn)
    after = _read(node)
    assert after == reference  # handles included: the same rules went
    for step in steps:
        if step["containerId"] not in dead:
            _check("v1.9.1", node, step)
    assert not planner.teardown(after, dead)


def test_repair_after_flush_table(node: str) -> None:
    steps = FULL
    for step in steps:
        upstream.run("v1.9.1", "ADD", node, step["containerId"], step["conf"], check=True)
    before = _bodies(_read(node))
    upstream.nft(node, "flush", "table", "ip", "cni_hostport")
    failed = upstream.run("v1.9.1", "CHECK", node, "full1", steps[0]["conf"])
    assert failed.returncode != 0
    configs = [_config(s) for s in steps]
    broken = _rows(_read(node), configs)
    assert {p.kind for p in broken.problems} >= {
        ProblemKind.NFT_MISSING_ENTRY,
        ProblemKind.NFT_MISSING_RULES,
    }
    _apply(node, planner.setup(_read(node), _wanted(configs)))
    assert _bodies(_read(node)) == before
    for step in steps:
        _check("v1.9.1", node, step)
    assert not _rows(_read(node), configs).problems


def test_mixed_versions_and_upgrade(node: str) -> None:
    """v1.7.1 state, then our setup of a new container: v1.9.1 DEL still removes both."""
    old = _step("old1", "podman", ["10.88.0.6/16"], [_pm(9090, 90, host_ip="127.0.0.1")])
    new = _step("new1", "podman", ["10.88.0.7/16"], [_pm(9091, 91)])
    upstream.run("v1.7.1", "ADD", node, old["containerId"], old["conf"], check=True)
    configs: List[MappingConfig] = [_config(old), _config(new)]
    _apply(node, planner.setup(_read(node), _wanted(configs)))
    found = _rows(_read(node), configs)
    assert not found.problems
    assert {m.chain for m in found.mappings} == {"hostip_hostports", "hostports"}
    _check("v1.9.1", node, new)
    for step in (old, new):
        upstream.run("v1.9.1", "DEL", node, step["containerId"], step["conf"], check=True)
    left = _read(node)
    assert not [
        r for t in left.tables.values() for c in ruleset.CONTAINER_CHAINS for r in t.rules_of(c)
    ]
