"""Rules in normal form against iptables itself: for conditions a user may give the
plugin (--conditions-v4/-v6, conditionsV4/V6), normal_form.normalize writes what
iptables-save prints back after the plugin's `iptables -A` with the same words, so
portmapctl writes, and recognises, the rule the plugin leaves. Addresses with any
mask (a length, leading ones, or any other mask, which iptables takes as it is),
protocols by number, alias or /etc/protocols name, --syn and --tcp-flags, the
limit match's rate. What
iptables refuses, normalize refuses. The unit half: tests/unit/test_ruleset.py."""

from __future__ import annotations

import pytest
import realplugin as rp

from portmapctl.errors import BadInput
from portmapctl.iptables.lexer import split_words
from portmapctl.iptables.normal_form import normalize

CHAIN = "PMT-ADDR"

ADDRESSES = [
    (4, "10.1.2.3"),
    (4, "10.1.2.3/8"),
    (4, "10.1.2.3/255.255.0.0"),  # leading ones: printed as /16
    (4, "10.0.0.0/0.0.255.255"),  # not /16: any mask is taken as it is
    (4, "10.1.2.3/255.0.255.0"),
    (4, "10.1.2.3/0"),
    (4, "10.1.2.3/010"),  # a length as strtoul reads it: /8
    (6, "fd00::1"),
    (6, "fd00::1/64"),
    (6, "fd00::1/ffff:ffff::"),
    (6, "fd00::1/ffff::ffff"),
    (6, "::ffff:10.1.2.3"),  # inet_ntop's dotted tail
    (6, "::10.1.2.3"),
    (6, "::ffff:0:0/96"),
    (6, "::102"),
]


# (family, rule words before -j)
RULES = [
    (4, "-p 6"),  # saved as tcp
    (4, "-p 17 --dport 53"),  # udp, with its implicit match
    (4, "-p 0x11"),  # strtoul's base 0
    (4, "-p 021"),
    (4, "-p TCP"),
    (4, "-p all"),  # left out
    (4, "-p ip"),  # /etc/protocols' 0
    (4, "-p 47"),  # /etc/protocols' gre
    (4, "-p 253"),  # no name anywhere: the number
    (4, "-p udplite"),
    (4, "-p 132 --dport 9"),
    (4, "-p tcp --syn"),
    (4, "-p tcp ! --syn"),
    (4, "-p tcp --tcp-flags ACK,SYN SYN"),
    (4, "-p tcp --tcp-flags ALL NONE"),
    (4, "-m tcp -p tcp --tcp-flags syn,rst,ack,fin syn"),
    (4, "-p tcp --tcp-flags SYN,,ACK, SYN"),  # empty items skipped
    (4, "-p tcp --syn --sport 1024:65535"),  # the tcp match's own order
    (4, "-p udp --dport 53 --sport 1:2"),
    (6, "-p 58"),  # ipv6-icmp
    (6, "-p icmpv6"),
    (6, "-p 135"),  # /etc/protocols' mobility-header before libxtables' ipv6-mh
    (6, "-p mh"),
    (6, "-p mobility-header"),
    # The limit match: a rate is printed in the largest unit that gives a whole number.
    (4, "-m limit --limit 10/second"),
    (4, "-m limit"),  # 3/hour
    (4, "-m limit --limit 120/min"),  # 2/sec
    (4, "-m limit --limit 100/m"),
    (4, "-m limit --limit 5/s --limit-burst 10"),
    (4, "-m limit --limit-burst 5 --limit 2/h"),
    (4, "-m limit --limit 7/hour"),
    (4, "-m limit --limit 3"),
    (4, "-m limit --limit 90/minute"),
    (4, "-m limit --limit 1000/sec"),
    (6, "-m limit --limit 25/MIN --limit-burst 1"),
]


def _printed(host_ns: str, mode: str, family: int, rule: list) -> list:
    """What `iptables -S` prints back of `rule` appended to a chain of its own."""
    tool = "ip6tables" if family == 6 else "iptables"
    run = [rp._ip(), "netns", "exec", host_ns, rp.tool_path(tool, mode), "-t", "nat"]
    rp._run([*run, "-N", CHAIN], check=True)
    try:
        rp._run([*run, "-A", CHAIN, *rule], check=True)
        listed = rp._run([*run, "-S", CHAIN], check=True).stdout.splitlines()
    finally:
        rp._run([*run, "-F", CHAIN], check=False)
        rp._run([*run, "-X", CHAIN], check=False)
    return [split_words(line)[2:] for line in listed if line.startswith(f"-A {CHAIN} ")]


@pytest.mark.parametrize("family, address", ADDRESSES)
def test_an_address_is_normal_as_iptables_prints_it(host_ns, iptables_mode, family, address):
    rule = ["-s", address, "-d", address, "-j", "RETURN"]
    assert _printed(host_ns, iptables_mode, family, rule) == [list(normalize(rule, family))]


@pytest.mark.parametrize("family, words", RULES)
def test_a_condition_is_normal_as_iptables_prints_it(host_ns, iptables_mode, family, words):
    rule = [*split_words(words), "-j", "RETURN"]
    assert _printed(host_ns, iptables_mode, family, rule) == [list(normalize(rule, family))]


@pytest.mark.parametrize(
    "family, words",
    [
        (4, "! -p all"),  # iptables: "rule would never match protocol"
        (4, "-p 256"),
        (4, "-p nosuchproto"),
        (4, "-p tcp --tcp-flags SYN"),
        (4, "-p tcp --tcp-flags SYN,BOGUS SYN"),
        (4, "-s 10.0.0.0/33"),
        (4, "-s 10.0.0.0/08"),  # not a number to strtoul
        (4, "-p udp --syn"),
        (4, "-p tcp --syn --tcp-flags SYN SYN"),
    ],
)
def test_what_iptables_refuses_normalize_refuses(host_ns, iptables_mode, family, words):
    rule = [*split_words(words), "-j", "RETURN"]
    tool = "ip6tables" if family == 6 else "iptables"
    run = [rp._ip(), "netns", "exec", host_ns, rp.tool_path(tool, iptables_mode), "-t", "nat"]
    assert rp._run([*run, "-A", "PREROUTING", *rule]).returncode != 0
    with pytest.raises(BadInput):
        normalize(rule, family)
