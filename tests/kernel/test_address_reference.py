"""-s/-d addresses in normal form against iptables itself: whatever mask a rule is
given (a length, a mask of leading ones, or any other mask, which iptables takes as
it is), ruleset.normalize writes the address as iptables-save prints it back, so a
condition of the plugin's (--conditions-v4/-v6) is written, and recognised, as the
plugin's iptables call leaves it. The unit half: tests/unit/test_ruleset.py."""

from __future__ import annotations

import pytest
import realplugin as rp

from portmapctl.iptables.lexer import split_words
from portmapctl.iptables.ruleset import normalize

CHAIN = "PMT-ADDR"

ADDRESSES = [
    (4, "10.1.2.3"),
    (4, "10.1.2.3/8"),
    (4, "10.1.2.3/255.255.0.0"),  # leading ones: printed as /16
    (4, "10.0.0.0/0.0.255.255"),  # not /16: any mask is taken as it is
    (4, "10.1.2.3/255.0.255.0"),
    (4, "10.1.2.3/0"),
    (6, "fd00::1"),
    (6, "fd00::1/64"),
    (6, "fd00::1/ffff:ffff::"),
    (6, "fd00::1/ffff::ffff"),
    (6, "::ffff:10.1.2.3"),  # inet_ntop's dotted tail
    (6, "::10.1.2.3"),
    (6, "::ffff:0:0/96"),
    (6, "::102"),
]


@pytest.mark.parametrize("family, address", ADDRESSES)
def test_an_address_is_normal_as_iptables_prints_it(host_ns, iptables_mode, family, address):
    tool = "ip6tables" if family == 6 else "iptables"
    run = [rp._ip(), "netns", "exec", host_ns, rp.tool_path(tool, iptables_mode), "-t", "nat"]
    rp._run([*run, "-N", CHAIN], check=True)
    try:
        rule = ["-s", address, "-d", address, "-j", "RETURN"]
        rp._run([*run, "-A", CHAIN, *rule], check=True)
        listed = rp._run([*run, "-S", CHAIN], check=True).stdout.splitlines()
    finally:
        rp._run([*run, "-F", CHAIN], check=False)
        rp._run([*run, "-X", CHAIN], check=False)
    printed = [split_words(line)[2:] for line in listed if line.startswith(f"-A {CHAIN} ")]
    assert printed == [list(normalize(rule, family))]
