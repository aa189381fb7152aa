"""Every DNAT rule of a container is a row (SPEC §3 list: a row for every DNAT rule),
as far as the row's columns can say it: one row per port of a set or small range, and
the matches the columns cannot say (an `iifname`) on the row, never dropped. The real
plugin's node is tests/interop/test_nft_field_audit.py."""

from __future__ import annotations

import json

import nftcases
import pytest

from portmapctl.nftables import inventory, ruleset
from portmapctl.render.list import host_address


@pytest.mark.parametrize(
    ("right", "ports"),
    [
        ("8080", (8080,)),
        ("{ 7000, 7001 }", (7000, 7001)),
        ("7000-7002", (7000, 7001, 7002)),
        ("{ 80, 8000-8001 }", (80, 8000, 8001)),
        ("@ports", None),  # a named set: nothing to read
        ("1-65535", None),  # no list of rows
    ],
)
def test_dport_values(right: str, ports) -> None:
    assert inventory.dport_values(right) == ports


def _with_rule(expr: list, comment: str, first: bool = False) -> ruleset.Ruleset:
    doc = json.loads(nftcases.json_text("v191-shadowed"))
    rule = {"rule": {"family": "ip", "table": "cni_hostport", "chain": "hostports",
                     "handle": 100, "comment": comment, "expr": expr}}  # fmt: skip
    at = next(
        i for i, o in enumerate(doc["nftables"]) if o.get("rule", {}).get("chain") == "hostports"
    )
    doc["nftables"].insert(at if first else len(doc["nftables"]), rule)
    return ruleset.parse(json.dumps(doc), "test")


def _dport(right) -> dict:
    return {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                      "right": right}}  # fmt: skip


def test_a_port_set_is_a_row_per_port() -> None:
    live = _with_rule([_dport({"set": [7000, 7001]}), {"dnat": {"addr": "10.0.0.1"}}], "weird1")
    rows = [
        m for m in inventory.build(live, [], problems=False).mappings if m.container_id == "weird1"
    ]
    assert [(m.host_port, m.container_port, m.status) for m in rows] == [
        (7000, 7000, ("stale",)), (7001, 7001, ("stale",)),
    ]  # fmt: skip


def test_an_interface_condition_is_on_the_row_and_takes_no_port_from_later_rules() -> None:
    iif = {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "eth0"}}
    live = _with_rule(
        [iif, _dport(8080), {"dnat": {"addr": "10.0.0.2", "port": 80}}], "weird2", True
    )
    rows = {m.container_id: m for m in inventory.build(live, None, problems=False).mappings}
    assert rows["weird2"].conditions == ('iifname "eth0"',)
    assert host_address(rows["weird2"]) == '*:8080 if iifname "eth0"'
    assert rows["ctr-a"].shadowed_by is None  # weird2 gets only eth0's packets
