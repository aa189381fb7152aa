"""The iptables-save parser, the normal form and restore quoting."""

from __future__ import annotations

import pytest
from fixtures_lib import NAMES, save_text, table
from hypothesis import given
from hypothesis import strategies as st

from portmapctl.errors import BadInput
from portmapctl.iptables.lexer import split_words
from portmapctl.iptables.normal_form import normalize
from portmapctl.iptables.ruleset import (
    format_rule,
    parse_save,
    quote,
    rule_target,
)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("family", [4, 6])
def test_saved_rules_are_already_in_normal_form(name, family):
    for chain in table(name, family).chains.values():
        for rule in chain.rules:
            assert normalize(rule, family) == rule


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("family", [4, 6])
def test_every_rule_line_round_trips_through_format_rule(name, family):
    """What we would write for a live rule is the line iptables-save printed."""
    lines = [line for line in save_text(name, family).splitlines() if line.startswith("-A ")]
    parsed = table(name, family)
    rendered = [
        format_rule("-A", chain.name, rule)
        for chain in parsed.chains.values()
        for rule in chain.rules
    ]
    assert sorted(rendered) == sorted(lines)


def test_parser_keeps_chain_order_policies_and_foreign_rules():
    nat = table("foreign", 4)
    assert list(nat.chains)[:4] == ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"]
    assert nat.chains["PREROUTING"].policy == "ACCEPT"
    assert nat.chains["KUBE-SERVICES"].policy == "-"
    kube = nat.rules("KUBE-SERVICES")[0]
    assert 'default/kubernetes:https "cluster IP" C:\\x\\' in kube
    assert rule_target(kube) == "KUBE-SVC-NPX46M4PTMTKRN6Y"


def test_other_tables_are_skipped_and_no_nat_table_is_an_empty_table():
    text = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\nCOMMIT\n"
    assert parse_save(text, 4).chains == {}


@pytest.mark.parametrize(
    "text, why",
    [
        ("hello world\n", "not iptables-save output"),
        ("*nat\n:FOO - [0:0]\n-A FOO -j RETURN\n", "no COMMIT"),
        ("*nat\n-A FOO -j RETURN\nCOMMIT\n", "undeclared chain"),
        ('*nat\n:FOO - [0:0]\n-A FOO -m comment --comment "open\nCOMMIT\n', "unterminated quote"),
        ("*nat\n:FOO - [0:0]\nrm -rf /\nCOMMIT\n", "unexpected line"),
        ("*nat\n\x00\x01\x02\nCOMMIT\n", "binary"),
    ],
)
def test_malformed_dumps_are_bad_input_naming_the_line(text, why):
    with pytest.raises(BadInput, match=why):
        parse_save(text, 4, source="dump")


@pytest.mark.parametrize(
    "given_args, saved",
    [
        (
            [
                "-m",
                "comment",
                "--comment",
                "x",
                "-m",
                "multiport",
                "-p",
                "tcp",
                "--destination-ports",
                "80,81",
                "-j",
                "C",
            ],
            (
                "-p",
                "tcp",
                "-m",
                "comment",
                "--comment",
                "x",
                "-m",
                "multiport",
                "--dports",
                "80,81",
                "-j",
                "C",
            ),
        ),
        (
            ["-p", "udp", "--dport", "53", "-d", "127.0.0.1", "-s", "10.1.2.3/8", "-j", "X"],
            (
                "-s",
                "10.0.0.0/8",
                "-d",
                "127.0.0.1/32",
                "-p",
                "udp",
                "-m",
                "udp",
                "--dport",
                "53",
                "-j",
                "X",
            ),
        ),
        (["-s", "0.0.0.0/0", "-p", "tcp", "-j", "X"], ("-p", "tcp", "-j", "X")),
        (["!", "--source", "10.0.0.1", "-j", "X"], ("!", "-s", "10.0.0.1/32", "-j", "X")),
        (
            ["-p", "SCTP", "--dport", "9", "-j", "X"],
            ("-p", "sctp", "-m", "sctp", "--dport", "9", "-j", "X"),
        ),
        (
            ["-m", "comment", "--comment", "y" * 300, "-j", "X"],
            ("-m", "comment", "--comment", "y" * 255, "-j", "X"),
        ),
    ],
)
def test_normalize_rewrites_like_iptables_save(given_args, saved):
    assert normalize(given_args, 4) == saved


def test_normalize_ipv6_addresses():
    assert normalize(["-s", "fd00::5/64", "-d", "::1", "-j", "X"], 6) == (
        "-s",
        "fd00::/64",
        "-d",
        "::1/128",
        "-j",
        "X",
    )


@pytest.mark.parametrize(
    "given, family, saved",
    [
        # iptables takes any mask as it is: one of leading ones prints as a length...
        ("10.1.2.3/255.255.0.0", 4, "10.1.0.0/16"),
        # ...any other as an address, the address masked (ipaddress would read
        # 0.0.255.255 as a host mask, /16: another rule).
        ("10.0.0.0/0.0.255.255", 4, "0.0.0.0/0.0.255.255"),
        ("10.1.2.3/255.0.255.0", 4, "10.0.2.0/255.0.255.0"),
        ("fd00::1/ffff::ffff", 6, "fd00::1/ffff::ffff"),
        ("2001:db8::1/ffff:ffff::", 6, "2001:db8::/32"),
        # inet_ntop's dotted tail, where ipaddress writes hex.
        ("::ffff:10.1.2.3", 6, "::ffff:10.1.2.3/128"),
        ("::10.1.2.3", 6, "::10.1.2.3/128"),
        ("::102", 6, "::102/128"),
    ],
)
def test_normalize_masks_as_iptables_prints_them(given, family, saved):
    # (Held to iptables itself: tests/kernel/test_address_reference.py.)
    assert normalize(["-s", given, "-j", "X"], family) == ("-s", saved, "-j", "X")
    assert normalize(["-s", "10.1.2.3/0.0.0.0", "-j", "X"], 4) == ("-j", "X")  # as /0


@pytest.mark.parametrize(
    "given, saved",
    [
        # A protocol as iptables reads it (lower-cased; a number, 0x hex or 0 octal;
        # a name or alias) and prints it (/etc/protocols' name, else libxtables').
        ("-p 6", "-p tcp"),
        ("-p TCP", "-p tcp"),
        ("-p 0x11", "-p udp"),
        ("-p 021", "-p udp"),
        ("-p all", ""),
        ("-p 0", ""),
        ("-p 253", "-p 253"),
        ("-p 17 --dport 53", "-p udp -m udp --dport 53"),
        ("-p tcp --syn", "-p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN"),
        ("-p tcp ! --syn", "-p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN"),
        ("-p tcp --tcp-flags ack,SYN syn", "-p tcp -m tcp --tcp-flags SYN,ACK SYN"),
        ("-p tcp --tcp-flags ALL NONE", "-p tcp -m tcp --tcp-flags FIN,SYN,RST,PSH,ACK,URG NONE"),
        # The limit match's rate, as libxt_limit prints it back.
        ("-m limit --limit 10/second", "-m limit --limit 10/sec"),
        ("-m limit", "-m limit --limit 3/hour"),
        ("-m limit --limit 120/min --limit-burst 5", "-m limit --limit 2/sec"),
        ("-m limit --limit-burst 7 --limit 90/m", "-m limit --limit 90/min --limit-burst 7"),
    ],
)
def test_normalize_protocols_and_tcp_flags_as_iptables_prints_them(given, saved):
    # (Held to iptables itself: tests/kernel/test_normal_form_reference.py.)
    rule = [*given.split(), "-j", "X"]
    assert normalize(rule, 4) == (*saved.split(), "-j", "X")


@pytest.mark.parametrize(
    "words", ["! -p all", "-p 256", "-p 08", "-p nosuch", "-p tcp --tcp-flags SYN,X SYN"]
)
def test_normalize_rejects_what_iptables_rejects(words):
    with pytest.raises(BadInput):
        normalize([*words.split(), "-j", "X"], 4)


@pytest.mark.parametrize(
    "address, family",
    [
        ("10.0.0.0/33", 4),
        ("10.0.0.0/ffff::", 4),
        ("fd00::/129", 6),
        ("fd00::/255.0.0.0", 6),
        # A zone: ip6tables drops it where the interface exists and refuses it where
        # not; refused here either way (whether the plugin's call worked depends on it).
        ("fe80::1%eth0/64", 6),
    ],
)
def test_normalize_rejects_a_mask_iptables_refuses(address, family):
    with pytest.raises(BadInput):
        normalize(["-s", address, "-j", "X"], family)


def test_normalize_rejects_wrong_family_and_garbage():
    with pytest.raises(BadInput):
        normalize(["-s", "fd00::1", "-j", "X"], 4)
    with pytest.raises(BadInput):
        normalize(["-s", "not-an-ip", "-j", "X"], 4)
    with pytest.raises(BadInput):
        normalize(["--dport", "80"], 4)  # no protocol, no match


@given(
    st.text(min_size=0, max_size=40).filter(
        lambda s: all(ord(c) >= 0x20 and ord(c) != 0x7F for c in s)
    )
)
def test_quote_round_trips_through_the_restore_tokenizer(token):
    assert split_words(f"-A X {quote(token)} end") == ["-A", "X", token, "end"]


@pytest.mark.parametrize("evil", ["a\n-A INPUT -j ACCEPT", "x\rCOMMIT", "\x00"])
def test_quote_refuses_control_characters(evil):
    with pytest.raises(BadInput):
        quote(evil)


def test_rule_counters_of_a_save_with_c_are_left_out():
    """`iptables-save -c` writes "[PACKETS:BYTES] -A ...": the same rules (the real
    dump with counters: tests/interop/test_realplugin.py)."""
    plain = save_text("basic", 4)
    counted = "\n".join(
        f"[{n}:{60 * n}] {line}" if line.startswith("-A ") else line
        for n, line in enumerate(plain.split("\n"))
    )
    assert counted.count("] -A ") == plain.count("\n-A ")
    assert parse_save(counted, 4, strict=True) == parse_save(plain, 4, strict=True)
    with pytest.raises(BadInput, match="unexpected line"):
        parse_save(counted.replace("] -A ", "] -I ", 1), 4)


@pytest.mark.parametrize(
    ("args", "rules"),
    [
        (["-s", "10.0.0.0/8", "-j", "X"], [["-s", "10.0.0.0/8", "-j", "X"]]),
        (
            ["--src", "10.0.0.0/8,192.168.0.0/16", "-d", "192.0.2.1,192.0.2.2", "-j", "X"],
            [
                ["--src", "10.0.0.0/8", "-d", "192.0.2.1", "-j", "X"],
                ["--src", "10.0.0.0/8", "-d", "192.0.2.2", "-j", "X"],
                ["--src", "192.168.0.0/16", "-d", "192.0.2.1", "-j", "X"],
                ["--src", "192.168.0.0/16", "-d", "192.0.2.2", "-j", "X"],
            ],
        ),
        (
            ["-d", "fd00::1,fd00::2", "-j", "X"],
            [["-d", "fd00::1", "-j", "X"], ["-d", "fd00::2", "-j", "X"]],
        ),
        # Negated: iptables refuses a list (normalize does too); the comment is no -s.
        (["!", "-s", "10.0.0.0/8,10.1.0.0/16"], [["!", "-s", "10.0.0.0/8,10.1.0.0/16"]]),
        (
            ["-m", "comment", "--comment", "a,b", "-j", "X"],
            [["-m", "comment", "--comment", "a,b", "-j", "X"]],
        ),
    ],
)
def test_an_address_list_is_a_rule_per_address_as_iptables_makes_them(args, rules):
    """Pinned to iptables' own expansion (sources outermost) by
    tests/interop/test_writes_audit.py::test_conditions_with_address_lists_make_a_rule_per_address_as_iptables_does."""
    from portmapctl.iptables.normal_form import address_lists

    assert address_lists(args) == rules
