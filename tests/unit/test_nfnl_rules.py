"""iptables/access/nfnl_rules.py without a kernel: the expressions it writes for a rule
are the bytes the kernel holds for that rule as the real plugin wrote it (through
iptables-nft 1.8.9), on every nft case of tests/fixtures (tests/fixtures/nfnl/
plugin-tables.json, captured by capture_tables.py there); what it does not know it
leaves alone, and the counters of a dumped rule never make it look different."""

from __future__ import annotations

import base64
import json
import struct
from functools import cache
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from portmapctl.iptables.access import nfmsg, nfnl_rules
from portmapctl.iptables.ruleset import Args, parse_save

HERE = Path(__file__).resolve().parents[1] / "fixtures/nfnl"
# Cases whose every CNI rule is of a shape nfnl_rules writes (the others hold
# conditions, sctp or an external mark chain somewhere).
PLAIN_CASES = (
    "basic", "dual-stack", "hostip", "hostip-v6", "snat-off", "markbit-5", "many-ports",
    "three-containers", "shadowed", "long-comment", "foreign",
)  # fmt: skip


@cache
def _tables() -> Dict[str, dict]:
    return json.loads((HERE / "plugin-tables.json").read_text())


def _rules(case: str, family: int) -> List[Tuple[str, Args, bytes]]:
    """(chain, rule as iptables-save printed it, its expressions as the kernel dumped
    them, counters zeroed) for every rule of the case's nat table."""
    data = _tables()[case][str(family)]
    table = parse_save(data["save"], family)
    buf = base64.b64decode(data["dump"])
    by_chain: Dict[str, List[nfmsg.DumpedRule]] = {}
    at = 0
    while at < len(buf):
        (length,) = struct.unpack_from("=I", buf, at)
        rule = nfmsg.DumpedRule(buf, at, at + length)
        start, end = rule.attributes()[nfmsg.RULE_CHAIN]
        by_chain.setdefault(buf[start:end].rstrip(b"\0").decode(), []).append(rule)
        at += (length + 3) & ~3
    found = []
    for name, chain in table.chains.items():
        dumped = by_chain.get(name, [])
        assert len(dumped) == len(chain.rules), (case, family, name)
        for args, rule in zip(chain.rules, dumped):
            span = rule.expressions()
            assert span is not None
            found.append((name, args, nfnl_rules.comparable(rule.buf, span)))
    return found


def test_the_capture_covers_every_nft_case():
    assert set(PLAIN_CASES) < set(_tables())
    assert {"conditions", "conditions-physdev", "sctp", "external-setmark"} <= set(_tables())


@pytest.mark.parametrize("case", sorted(json.loads((HERE / "plugin-tables.json").read_text())))
@pytest.mark.parametrize("family", [4, 6])
def test_every_rule_it_writes_is_the_plugins_byte_for_byte(case, family):
    compared = 0
    for chain, args, dumped in _rules(case, family):
        written = nfnl_rules.expressions(args, family)
        if written is None:
            # In those cases only foreign rules (nothing of the plugin's) are left alone.
            plugins = chain.startswith("CNI-") or any("CNI-" in word for word in args)
            assert case not in PLAIN_CASES or not plugins, (chain, args)
            continue
        assert written == dumped, (chain, args)
        compared += 1
    if case in PLAIN_CASES and (family == 4 or case in ("dual-stack", "hostip-v6", "foreign")):
        assert compared >= 5  # the shared rules, the container's chain, its entry rules


def test_every_shape_of_the_plugin_is_among_them():
    """The plugin's rule shapes all occur in the capture, so each is held to the kernel:
    -s of a whole and of a split byte, -d, tcp and udp, DNAT v4 and v6, the shared
    chains' comment, MARK, mark, MASQUERADE and addrtype, 15 ports in one multiport."""
    seen = [
        args
        for case in PLAIN_CASES
        for family in (4, 6)
        for _chain, args, _dumped in _rules(case, family)
        if nfnl_rules.expressions(args, family) is not None
    ]
    words = {word for args in seen for word in args}
    for needed in ("-s", "-d", "tcp", "udp", "DNAT", "MARK", "MASQUERADE", "addrtype", "mark"):
        assert needed in words, needed
    assert any(a[-1].startswith("[") for a in seen)  # an IPv6 DNAT
    assert any(len(a[a.index("--dports") + 1].split(",")) == 15 for a in seen if "--dports" in a)
    prefixes = {a[a.index("-s") + 1].split("/")[1] for a in seen if "-s" in a}
    assert {"16", "32"} <= prefixes


@pytest.mark.parametrize(
    "args",
    [
        ("!", "-s", "10.0.0.0/8", "-j", "CNI-X"),
        ("-p", "sctp", "-m", "sctp", "--dport", "9", "-j", "CNI-X"),
        ("-m", "physdev", "!", "--physdev-is-bridged", "-j", "CNI-X"),
        ("-p", "tcp", "-m", "multiport", "--dports", "1:100", "-j", "CNI-X"),
        ("-p", "tcp", "-m", "multiport", "--dports", ",".join(map(str, range(1, 17))), "-j", "C"),
        ("-p", "tcp", "-m", "tcp", "--dport", "80", "-j", "ACCEPT"),
        ("-p", "tcp", "-m", "tcp", "--dport", "80", "-j", "MY-SETMARK"),
        ("-p", "tcp", "-m", "udp", "--dport", "80", "-j", "CNI-X"),
        ("-m", "comment", "--comment", "x" * 256, "-j", "CNI-X"),
        ("-i", "eth0", "-j", "CNI-X"),
        ("-s", "0.0.0.0/0", "-j", "CNI-X"),
        ("-s", "fd00::/64", "-j", "CNI-X"),  # an IPv6 address in the IPv4 table
        # A mask that is not a prefix (iptables takes it as it is): no pinned bytes.
        ("-s", "0.0.0.0/0.0.255.255", "-j", "CNI-X"),
        ("-d", "10.0.2.0/255.0.255.0", "-j", "CNI-X"),
        ("-j", "DNAT", "--to-destination", "10.0.0.1"),  # no port
        ("-j", "CNI-X", "--foo"),
        ("-p", "tcp"),
        # Values iptables refuses or prints otherwise: never written as something else.
        ("-m", "mark", "--mark", "0x1ffffffff", "-j", "CNI-X"),
        ("-m", "mark", "--mark", "1_0", "-j", "CNI-X"),
        ("-m", "mark", "--mark", "0b1", "-j", "CNI-X"),
        ("-m", "mark", "--mark", "-1", "-j", "CNI-X"),
        ("-p", "tcp", "-m", "tcp", "--dport", "0080", "-j", "CNI-X"),
        ("-p", "tcp", "-m", "multiport", "--dports", "80,081", "-j", "CNI-X"),
        ("-p", "tcp", "-m", "tcp", "--dport", "65536", "-j", "CNI-X"),
        ("-p", "²", "-j", "CNI-X"),
    ],
)
def test_a_shape_it_does_not_know_is_never_guessed(args):
    assert nfnl_rules.expressions(args, 4) is None


def test_an_ipv6_address_with_a_zone_is_refused_as_ip6tables_refuses_it():
    assert nfnl_rules.expressions(("-s", "fe80::%eth0/64", "-j", "CNI-X"), 6) is None
    assert nfnl_rules.expressions(("-s", "fe80::/64", "-j", "CNI-X"), 6) is not None


def test_a_dumped_rules_counters_do_not_change_what_it_compares_as():
    _chain, args, dumped = next(r for r in _rules("basic", 4) if r[0] == "CNI-HOSTPORT-SETMARK")
    counter = dumped.find(b"counter\0")
    assert counter > 0
    # Both 64-bit counts set, as on a rule that has seen traffic.
    busy = bytearray(dumped)
    for value_at in (
        busy.find(b"\x0c\x00\x01\x00", counter),
        busy.find(b"\x0c\x00\x02\x00", counter),
    ):
        busy[value_at + 4 : value_at + 12] = (123456).to_bytes(8, "big")
    assert bytes(busy) != dumped
    span = (4, len(busy))
    assert nfnl_rules.comparable(bytes(busy), span) == dumped == nfnl_rules.expressions(args, 4)


@pytest.mark.parametrize(
    "args, proto, flags",
    [
        (("-p", "tcp", "-m", "multiport", "--dports", "80", "-j", "X"), 6, 0),
        (("-p", "udp", "-j", "X"), 17, 0),
        (("!", "-p", "sctp", "-j", "X"), 132, 2),  # NFT_RULE_COMPAT_F_INV is bit 1
        (("-m", "comment", "--comment", "-p", "-p", "udp", "-j", "X"), 17, 0),
        (("-p", "6", "-j", "X"), 6, 0),
        (("-m", "comment", "--comment", "v0.6: no -p", "-j", "X"), 0, 0),
    ],
)
def test_rules_go_in_with_their_protocol(args, proto, flags):
    compat = nfnl_rules.compat(args)
    assert compat is not None
    # NFTA_RULE_COMPAT (nested), then NFTA_RULE_COMPAT_PROTO and _FLAGS, big-endian.
    assert struct.unpack("=HH", compat[:4]) == (20, 5 | 0x8000)
    assert struct.unpack("!I", compat[8:12])[0] == proto
    assert struct.unpack("!I", compat[16:20])[0] == flags


def test_a_protocol_it_does_not_know_is_never_guessed():
    assert nfnl_rules.compat(("-p", "gre", "-j", "X")) is None
    assert nfnl_rules.compat(("-p", "²", "-j", "X")) is None  # a digit, not an ASCII one
    assert nfnl_rules.compat(("-p", "300", "-j", "X")) is None
