"""The pure part of the python-iptables backend (iptables/access/iptc/text.py): the
generic part of a rule printed as iptables-save prints it, and a rule's words grouped
as libiptc builds them. No root, no python-iptables; the backend itself is tested
against iptables-legacy-save in tests/kernel/test_backend_iptc.py."""

from __future__ import annotations

import socket

import pytest

from portmapctl.iptables.access.iptc.text import address_text, interface_text, split_rule


def _v4(text: str) -> bytes:
    return bytes(int(part) for part in text.split("."))


# --- the generic part of a rule, as iptables-save prints it --------------------------------


@pytest.mark.parametrize(
    "address, mask, inverted, printed",
    [
        ("0.0.0.0", "0.0.0.0", False, ""),  # anywhere: nothing
        ("0.0.0.0", "0.0.0.0", True, " ! -s 0.0.0.0/0"),
        ("10.88.0.0", "255.255.0.0", False, " -s 10.88.0.0/16"),
        ("127.0.0.1", "255.255.255.255", False, " -s 127.0.0.1/32"),
        ("10.0.0.0", "255.0.255.0", False, " -s 10.0.0.0/255.0.255.0"),
        ("10.0.0.0", "255.0.0.0", True, " ! -s 10.0.0.0/8"),
    ],
)
def test_ipv4_addresses(address, mask, inverted, printed):
    assert address_text("s", _v4(address), _v4(mask), inverted) == printed


def test_ipv6_addresses():
    def six(text: str) -> bytes:
        return socket.inet_pton(socket.AF_INET6, text)

    assert address_text("d", six("::"), six("::"), False) == ""
    assert address_text("d", six("fd00::"), six("ffff:ffff:ffff:ffff::"), False) == " -d fd00::/64"
    assert address_text("s", six("fd00::1"), six("ffff:" * 7 + "ffff"), True) == " ! -s fd00::1/128"
    assert address_text("s", six("fd00::"), six("ffff:0:ffff::"), False) == (
        " -s fd00::/ffff:0:ffff::"
    )


@pytest.mark.parametrize(
    "name, mask, inverted, printed",
    [
        (b"", b"", False, ""),
        (b"eth0", b"\xff" * 5, False, " -i eth0"),
        (b"docker0", b"\xff" * 8, True, " ! -i docker0"),
        (b"veth", b"\xff" * 4, False, " -i veth+"),  # a mask without the NUL: wildcard
    ],
)
def test_interfaces(name, mask, inverted, printed):
    assert interface_text("i", name, mask, inverted) == printed


def _arity(kind, module, option):
    return {"comment": True, "dport": True, "physdev-is-bridged": False, "tcp-flags": True}.get(
        option, True if option.startswith("to-") else None
    )


def test_split_rule_groups_options_by_their_extension():
    parts = split_rule(
        "! -s 10.0.0.0/8 -p tcp -m comment --comment --odd -m tcp ! --dport 80 "
        "--tcp-flags SYN,ACK SYN -m physdev ! --physdev-is-bridged "
        "-j DNAT --to-destination 10.1.1.1:80".split(),
        _arity,
    )
    assert parts.generic == ((True, "-s", ("10.0.0.0/8",)), (False, "-p", ("tcp",)))
    assert parts.matches == (
        ("comment", ((False, "--comment", ("--odd",)),)),
        ("tcp", ((True, "--dport", ("80",)), (False, "--tcp-flags", ("SYN,ACK", "SYN")))),
        ("physdev", ((True, "--physdev-is-bridged", ()),)),
    )
    assert parts.target == ("-j", "DNAT", ((False, "--to-destination", ("10.1.1.1:80",)),))
    assert parts.target.options[0].name == "--to-destination" and parts.matches[1].name == "tcp"
    assert split_rule(["-d", "1.2.3.4/32"], _arity).target is None


@pytest.mark.parametrize(
    "args, words",
    [
        (["-m", "tcp", "--nonsense", "1"], "no option --nonsense"),
        (["-m", "tcp", "--dport"], "needs a value"),
        (["-p", "tcp", "!"], "at the end"),
        (["-j", "ACCEPT", "-m", "tcp"], "misplaced -m"),
        (["-m", "tcp", "-s", "1.2.3.4"], "after a match"),
        (["stray"], "unexpected"),
    ],
)
def test_split_rule_refuses_what_iptables_would_not_take(args, words):
    with pytest.raises(ValueError, match=words):
        split_rule(args, _arity)
