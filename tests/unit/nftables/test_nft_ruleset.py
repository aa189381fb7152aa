"""The nft -j parser on what the real upstream plugins left (tests/fixtures/nft)."""

from __future__ import annotations

import json
import re
from dataclasses import fields

import nftcases
import pytest

from portmapctl.errors import BadInput
from portmapctl.nftables import ruleset as rs
from portmapctl.nftables.ruleset import ActionKind, BaseHook, Match


def _text_rules(text: str) -> dict:
    """(family, chain) -> rule lines, from `nft list ruleset` text."""
    found: dict = {}
    family = chain = None
    for raw in text.splitlines():
        line = raw.strip()
        head = re.match(r"table (ip6?) cni_hostport \{", line)
        if head:
            family = rs.FAMILIES[head[1]]
            continue
        head = re.match(r"chain (\S+) \{", line)
        if head:
            chain = head[1]
            found[(family, chain)] = []
            continue
        if not line or line == "}" or line.startswith(("type ", "comment ")):
            continue
        found[(family, chain)].append(line)
    return found


@pytest.mark.parametrize("case", nftcases.CASES)
def test_every_rule_prints_back_as_nft_prints_it(case: str) -> None:
    """Value -> text gives nft's own text for every rule the real plugins wrote."""
    live = nftcases.live(case)
    expected = _text_rules(nftcases.text(case))
    got = {
        (family, chain): [rule.body.text(family) for rule in table.rules_of(chain)]
        for family, table in live.tables.items()
        for chain in table.chains
    }
    assert got == expected


def test_basic_shape() -> None:
    live = nftcases.live("v191-basic")
    assert live.nft_version == "1.0.6"
    table = live.table(4)
    assert table is not None
    assert list(table.chains) == [
        "hostports",
        "hostip_hostports",
        "hostports_all",
        "prerouting",
        "output",
        "masquerading",
    ]
    assert table.chains["prerouting"].base == BaseHook("nat", "prerouting", -100)
    assert table.chains["masquerading"].base == BaseHook("nat", "postrouting", 100)
    assert table.chains["hostports"].base is None
    first = table.rules_of("hostports")[0]
    assert (first.handle, first.comment) == (11, "aaaa1111")
    assert first.body.matches == (Match("tcp dport", "==", "8080"),)
    assert first.body.action.kind is ActionKind.DNAT
    assert (first.body.action.addr, first.body.action.port) == ("10.88.0.5", 80)
    v6 = live.table(6)
    assert v6 is not None
    assert v6.rules_of("hostports")[0].body.action.addr == "fd00:88::5"


def test_conditions_parse_as_values() -> None:
    live = nftcases.live("v191-several")
    pre4 = live.tables[4].rules_of("prerouting")[0].body
    assert pre4.matches[0] == Match("ip saddr", "==", "192.168.0.0/16")
    pre6 = live.tables[6].rules_of("prerouting")[0].body
    assert pre6.matches[0] == Match("ip6 saddr", "!=", "fd00:99::/64")
    assert rs.parse_conditions(["ip6 saddr != fd00:99::/64"]) == (pre6.matches[0],)
    # Written differently, same value.
    assert rs.parse_conditions(["ip saddr 192.168.7.1/16"]) == (pre4.matches[0],)
    assert rs.parse_conditions(["ip saddr 10.0.0.1/32"]) == (Match("ip saddr", "==", "10.0.0.1"),)


def test_conditions_text_round_trip() -> None:
    parsed = rs.parse_conditions(['iifname "eth0" tcp dport != 22', "ip daddr 192.0.2.0/24"])
    assert [m.text() for m in parsed] == [
        'iifname "eth0"',
        "tcp dport != 22",
        "ip daddr 192.0.2.0/24",
    ]
    opaque = rs.parse_conditions(["ct state new"])
    assert opaque == (Match("?", raw="ct state new"),)
    assert opaque[0].text() == "ct state new"


def test_other_tables_are_skipped() -> None:
    document = json.loads(nftcases.json_text("v191-basic"))
    document["nftables"] += [
        {"table": {"family": "ip", "name": "nat", "handle": 9}},
        {"chain": {"family": "ip", "table": "nat", "name": "CNI-HOSTPORT-DNAT", "handle": 1}},
        {"rule": {"family": "ip", "table": "nat", "chain": "X", "handle": 3, "expr": "junk"}},
        {"table": {"family": "inet", "name": "cni_hostport", "handle": 10}},
    ]
    assert rs.parse(json.dumps(document), "dump") == nftcases.live("v191-basic")


def test_unknown_expressions_are_kept_opaque() -> None:
    document = {
        "nftables": [
            {"table": {"family": "ip", "name": "cni_hostport", "handle": 1}},
            {"chain": {"family": "ip", "table": "cni_hostport", "name": "hostports", "handle": 1}},
            {
                "rule": {
                    "family": "ip",
                    "table": "cni_hostport",
                    "chain": "hostports",
                    "handle": 2,
                    "comment": "x",
                    "expr": [{"counter": {"packets": 0, "bytes": 0}}, {"accept": None}],
                }
            },
        ]
    }
    rule = rs.parse(json.dumps(document), "d").tables[4].rules_of("hostports")[0]
    assert [m.left for m in rule.body.matches] == ["?", "?"]
    assert rule.body.action.kind is ActionKind.NONE


@pytest.mark.parametrize(
    "text, words",
    [
        ("", "invalid JSON"),
        ("[]", 'no "nftables" list'),
        ('{"nftables": 3}', 'no "nftables" list'),
        ('{"nftables": [1]}', "item 0 is not a one-key object"),
        ('{"nftables": [{"table": 1}]}', "item 0: table is not an object"),
        ('{"nftables": [{"table": {"family": "ip", "name": "cni_hostport"}}]}', "bad table"),
        (
            '{"nftables": [{"table": {"family": "ip", "name": "cni_hostport", "handle": "x"}}]}',
            "bad table",
        ),
        (
            # (In one of the plugin's chains: another tool's is skipped and said.)
            '{"nftables": [{"rule": {"family": "ip", "table": "cni_hostport",'
            ' "chain": "hostports", "handle": -1, "expr": []}}]}',
            "bad rule",
        ),
        (
            '{"nftables": [{"rule": {"family": "ip", "table": "cni_hostport",'
            ' "chain": "masquerading", "handle": 1, "expr": [{"a": 1, "b": 2}]}}]}',
            "bad rule",
        ),
        ("\x00", "binary"),
    ],
)
def test_malformed_input_names_its_source(text: str, words: str) -> None:
    with pytest.raises(BadInput) as err:
        rs.parse(text, "/tmp/node.json")
    message = str(err.value)
    assert message.startswith("/tmp/node.json: not `nft -j list` output")
    assert words in message
    assert "\n" not in message


def test_the_parsers_own_constructors_make_what_init_makes() -> None:
    """The parser builds its frozen values without their __init__ (speed): the same
    values, equal and hashing alike, every field set."""
    for cls in (rs.Match, rs.Action, rs.RuleBody, rs.Rule):
        assert not hasattr(cls, "__post_init__") and "__slots__" not in vars(cls)
    match = rs._made_match("tcp dport", "==", "80")
    by_init = Match("tcp dport", "==", "80")
    assert match == by_init and hash(match) == hash(by_init)
    dnat = rs._made_dnat("10.0.0.1", None)
    assert dnat == rs.Action(ActionKind.DNAT, addr="10.0.0.1") and dnat.target is None
    body = rs._made_body((match,), dnat, "c1")
    assert body == rs.RuleBody((match,), rs.Action(ActionKind.DNAT, addr="10.0.0.1"), "c1")
    rule = rs._made_rule(4, "hostports", 7, body)
    rule_by_init = rs.Rule(4, "hostports", 7, body)
    assert rule == rule_by_init and hash(rule) == hash(rule_by_init)
    assert rule.comment == "c1" and repr(rule) == repr(rule_by_init)
    for made in (match, dnat, body, rule):
        assert set(vars(made)) == {f.name for f in fields(type(made))}
        with pytest.raises(AttributeError):
            made.x = 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "change, words",
    [
        ({"handle": True}, "handle True"),
        ({"handle": -1}, "handle -1"),
        ({"handle": "1"}, "handle '1'"),
        ({"comment": 5}, "comment is not a string"),
        ({"expr": {}}, "expr is not a list"),
        ({"family": []}, "unhashable type"),
        ({"expr": [{"dnat": {"addr": "nope", "port": 1}}]}, "does not appear to be an IPv4"),
        # A key missing: said so, not Python's KeyError('expr').
        ({"expr": None}, "expr is not a list"),
    ],
)
def test_a_bad_rule_names_what_is_wrong(change: dict, words: str) -> None:
    rule = {"family": "ip", "table": "cni_hostport", "chain": "hostports", "handle": 3,
            "expr": [], **change}  # fmt: skip
    with pytest.raises(BadInput) as err:
        rs.parse(json.dumps({"nftables": [{"rule": rule}]}), "src")
    assert str(err.value).startswith("src: not `nft -j list` output (item 0: bad rule: ")
    assert words in str(err.value) and "Error(" not in str(err.value)


def test_a_rule_without_its_expressions_says_which_key_is_missing() -> None:
    rule = {"family": "ip", "table": "cni_hostport", "chain": "hostports", "handle": 3}
    with pytest.raises(BadInput) as err:
        rs.parse(json.dumps({"nftables": [{"rule": rule}]}), "src")
    assert str(err.value) == "src: not `nft -j list` output (item 0: bad rule: no 'expr' key)"


def test_hand_written_dnat_statements_are_opaque_not_a_bad_table() -> None:
    """A node's table with dnat rules someone added by hand (a map, a port range, an
    address range, `persistent`; tests/fixtures/nft_edited, real `nft -j` output over
    the v1.9.1 plugin's rules): every command exited 2, 'not `nft -j list` output',
    gc included, on every run. Such a statement is opaque (never the plugin's rule);
    the plugin's own rules read as before."""
    from portmapctl.nftables.node import is_plugin_rule

    folder = nftcases.HERE.parent / "nft_edited"
    live = rs.parse((folder / "hand-dnat.nft.json").read_text(), "hand-dnat.nft.json")
    rules = live.tables[4].rules_of("hostports")
    by_comment = {rule.comment: rule for rule in rules}
    for cid in ("eeee5555", "ffff6667", "ffff6668", "ffff6669"):
        rule = by_comment[cid]
        assert rule.body.action.kind is ActionKind.NONE, rule
        assert not is_plugin_rule(rule)
    plugin = [r for r in rules if is_plugin_rule(r)]
    assert [r.comment for r in plugin] == ["aaaa1111"] * 2 + ["bbbb2222"] * 2 + ["cccc3333"] * 2
    assert plugin[0].body.text(4) == 'tcp dport 8080 dnat to 10.88.0.5:80 comment "aaaa1111"'


def test_a_counter_is_one_value_whatever_it_counted() -> None:
    """A `counter` statement reads as one opaque value, printed as nft takes it: the
    numbers traffic changes are no part of the rule (its JSON with them was printed as
    the rule's condition, and made the rule a new value at every packet)."""

    def body(packets: int) -> rs.RuleBody:
        document = {"nftables": [
            {"table": {"family": "ip", "name": "cni_hostport", "handle": 1}},
            {"chain": {"family": "ip", "table": "cni_hostport", "name": "hostports", "handle": 1}},
            {"rule": {"family": "ip", "table": "cni_hostport", "chain": "hostports", "handle": 2,
                      "expr": [
                          {"match": {"op": "==", "left": {"payload": {"protocol": "tcp",
                                                                      "field": "dport"}},
                                     "right": 8080}},
                          {"counter": {"packets": packets, "bytes": 60 * packets}},
                          {"dnat": {"addr": "10.0.0.1", "port": 22}}]}},
        ]}  # fmt: skip
        return rs.parse(json.dumps(document), "d").tables[4].rules_of("hostports")[0].body

    assert body(0) == body(7)
    assert body(7).text(4) == "tcp dport 8080 counter dnat to 10.0.0.1:22"
    assert rs.COUNTER in body(7).matches


def test_a_chain_that_is_not_the_plugins_and_cannot_be_read_is_skipped_and_said() -> None:
    """Real `nft -j` output (tests/fixtures/nft_edited/foreign-chain): the v1.9.1
    plugin's table with a chain `a b` and a rule in it, added through nft's JSON (a
    name nft's own syntax cannot write). The whole table was refused ("item 8: bad
    chain: ValueError("chain name 'a b'")"): every command exited 2. That chain is
    left out and said once; the plugin's chains and rules read as before."""
    folder = nftcases.HERE.parent / "nft_edited"
    live = rs.parse((folder / "foreign-chain.nft.json").read_text(), "foreign-chain.nft.json")
    table = live.tables[4]
    assert list(table.chains) == [
        "hostports", "hostip_hostports", "hostports_all", "prerouting", "output", "masquerading"
    ]  # fmt: skip
    assert [r.comment for r in table.rules_of("hostports")] == ["web1", "old1"]
    assert len(table.rules_of("masquerading")) == 4
    assert live.unread == (rs.UnreadChain(4, "a b", "a name nft's own syntax cannot write", 1),)
    assert live.unread[0].warning() == (
        "ip cni_hostport: chain 'a b' is not the plugin's and cannot be read (a name nft's"
        " own syntax cannot write; 1 rule): left alone, not shown, checked or removed"
    )


def test_a_rule_that_cannot_be_read_refuses_the_table_only_in_a_chain_of_the_plugins() -> None:
    """Another tool's chain (a valid name) holding a rule the parser cannot take is
    skipped and said; the same rule in one of the plugin's chains refuses the table:
    what is not read of the plugin's own there can never be judged, nor written."""
    folder = nftcases.HERE.parent / "nft_edited"
    document = json.loads((folder / "foreign-chain.nft.json").read_text())
    items = document["nftables"]
    rule = next(i["rule"] for i in items if "rule" in i and i["rule"]["chain"] == "a b")
    rule["chain"] = "mine"
    rule["expr"] = [{"accept": None, "drop": None}]  # (no one-key expression)
    items.insert(2, {"chain": {"family": "ip", "table": "cni_hostport", "name": "mine",
                               "handle": 99}})  # fmt: skip
    live = rs.parse(json.dumps(document), "d")
    assert [(u.chain, u.rules) for u in live.unread] == [("a b", 0), ("mine", 1)]
    assert "mine" in live.tables[4].chains and not live.tables[4].rules_of("mine")
    assert [r.comment for r in live.tables[4].rules_of("hostports")] == ["web1", "old1"]
    rule["chain"] = "hostports"
    with pytest.raises(BadInput, match="bad rule: a rule expression is not a one-key object"):
        rs.parse(json.dumps(document), "d")
