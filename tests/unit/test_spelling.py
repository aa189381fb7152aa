"""Conditions respelled as iptables prints them (portmapctl.iptables.spelling), on
pairs taken from iptables-nft 1.8.9 (`-A` as written, `-S` as printed back)."""

from __future__ import annotations

import pytest

from portmapctl.iptables.normal_form import normalize

# (as written, as iptables -S / iptables-save prints it), from a real iptables 1.8.9
PRINTED = [
    ("-m addrtype --dst-type local,unicast --src-type broadcast",
     "-m addrtype --src-type BROADCAST --dst-type UNICAST,LOCAL"),
    ("-m conntrack --ctstate ESTABLISHED,NEW,DNAT,INVALID,related,UNTRACKED,SNAT",
     "-m conntrack --ctstate INVALID,NEW,RELATED,ESTABLISHED,UNTRACKED,SNAT,DNAT"),
    ("-m state --state ESTABLISHED,NEW,INVALID,RELATED,UNTRACKED",
     "-m state --state INVALID,NEW,RELATED,ESTABLISHED,UNTRACKED"),
    ("-m mark --mark 1", "-m mark --mark 0x1"),
    ("-m mark --mark 10/0xff", "-m mark --mark 0xa/0xff"),
    ("-m mark ! --mark 0x10/255", "-m mark ! --mark 0x10/0xff"),
    ("-m conntrack --ctstatus assured,SEEN_REPLY --ctdir original",
     "-m conntrack --ctstatus SEEN_REPLY,ASSURED --ctdir ORIGINAL"),
    ("-m connmark --mark 7", "-m connmark --mark 0x7"),
    ("-m addrtype ! --dst-type LOCAL --limit-iface-in",
     "-m addrtype ! --dst-type LOCAL --limit-iface-in"),
    ("-m pkttype --pkt-type Unicast", "-m pkttype --pkt-type unicast"),
]  # fmt: skip


@pytest.mark.parametrize("written, printed", PRINTED)
def test_conditions_come_out_as_iptables_prints_them(written, printed):
    rule = [*written.split(), "-j", "RETURN"]
    assert normalize(rule, 4) == (*printed.split(), "-j", "RETURN")
    # Idempotent: the printed form is its own normal form.
    assert normalize([*printed.split(), "-j", "RETURN"], 4) == (*printed.split(), "-j", "RETURN")


def test_values_it_cannot_judge_are_left_as_written():
    for odd in ("-m mark --mark banana", "-m conntrack --ctstate NEW,BOGUS",
                "-m addrtype --dst-type NOPE"):  # fmt: skip
        assert normalize([*odd.split(), "-j", "RETURN"], 4) == (*odd.split(), "-j", "RETURN")
