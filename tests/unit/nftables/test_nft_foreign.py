"""A DNAT rule in hostports that is not the plugin's (no comment, or one that is no
container ID) is nobody's: no row (so never `stale`), listed in
NftInventory.foreign, and it takes its port first (a later container's rule for the
port is `shadowed` by `handle N`). gc never removes it (nftables/node.is_plugin_rule),
so nothing may tell to run gc for it. The real plugin's case is
tests/interop/test_nft_field_audit.py."""

from __future__ import annotations

import json

import nftcases

from portmapctl.nftables import inventory, ruleset
from portmapctl.nftables.node import dead_containers


def _with(*rules: dict) -> ruleset.Ruleset:
    doc = json.loads(nftcases.json_text("v191-shadowed"))
    doc["nftables"] += [{"rule": r} for r in rules]
    return ruleset.parse(json.dumps(doc), "test")


def _dnat(handle: int, port: int, comment=None, first=False) -> dict:
    rule = {
        "family": "ip", "table": "cni_hostport", "chain": "hostports", "handle": handle,
        "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                       "right": port}},
            {"dnat": {"addr": "10.0.0.1", "port": 22}},
        ],
    }  # fmt: skip
    if comment is not None:
        rule["comment"] = comment
    return rule


def test_foreign_rules_are_no_rows_and_never_stale() -> None:
    live = _with(_dnat(100, 2222), _dnat(101, 2223, "admin: ssh fwd"))
    found = inventory.build(live, [], problems=False)  # a cache that knows nobody
    assert {m.container_id for m in found.mappings} == {"ctr-a", "ctr-b"}
    assert [(f.family, f.chain, f.handle) for f in found.foreign] == [
        (4, "hostports", 100), (4, "hostports", 101),
    ]  # fmt: skip
    # ...and gc, which removes what is stale, keeps them: the two agree.
    assert {d.container_id for d in dead_containers(live, lambda cid: False)} == {"ctr-a", "ctr-b"}


def test_a_foreign_rule_before_a_container_shadows_it() -> None:
    live = _with(_dnat(100, 8080))
    # Parsed after the plugin's rules: move it first, as `nft insert rule` puts it.
    table = live.tables[4]
    rules = table.rules["hostports"]
    table.rules["hostports"] = rules[-1:] + rules[:-1]
    found = inventory.build(live, None, problems=False)
    assert {(m.container_id, m.shadowed_by) for m in found.mappings} == {
        ("ctr-a", "handle 100"), ("ctr-b", "handle 100"),
    }  # fmt: skip
