"""A snapshot whose rule holds what is no address where iptables prints one is bad
input: exit 2, one line naming the file and the line (review h304).

`list --snapshot6 FILE` with `-d zz::zz::1/128` in a rule of a per-container chain
ended in "internal error: ValueError", exit 3 (list and check read every -d of the
plugin's chains as a host IP); an IPv4 `-d` in an ip6tables dump, or a
`--to-destination` that is no address, was listed as a mapping (`10.0.0.1:8080` in
a v6 row, `[fd00:zz::5]:80`). iptables prints none of these and iptables-restore takes
none: the file is not iptables-save output, as a line cut short is not (SPEC §4: a
malformed file is exit 2; docs/guarantees.md: a --snapshot that cannot be read is
the user's input). The live read cannot meet one: iptables prints what the kernel
holds. The same for `--nft-snapshot`: an `ip daddr` that is no IPv4 address, or a
dnat to an address of the other family, is refused as a dnat to no address was.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pmctl import assert_error, run

from portmapctl.iptables.ruleset import parse_save
from portmapctl.iptables.shapes import split_destination

FIXTURES = Path(__file__).parents[1] / "fixtures"
EXAMPLES = Path(__file__).parents[2] / "examples"
CHAIN = "CNI-DN-70a29d9dc18bc4d652ea5"

# (fixture, the rule's text, what it becomes, the option, the family's word)
BROKEN = {
    # The reviewer's: a -d of a per-container chain's DNAT rule that is no address.
    "v6-d-not-an-address": (
        "hostip-v6.v6.save",
        f"-A {CHAIN} -d ::1/128 -p tcp -m tcp --dport 8443 -j DNAT",
        f"-A {CHAIN} -d zz::zz::1/128 -p tcp -m tcp --dport 8443 -j DNAT",
        "-d 'zz::zz::1/128'",
    ),
    "v6-d-ipv4": (
        "hostip-v6.v6.save",
        f"-A {CHAIN} -d ::1/128 -p tcp -m tcp --dport 8443 -j DNAT",
        f"-A {CHAIN} -d 127.0.0.1/32 -p tcp -m tcp --dport 8443 -j DNAT",
        "-d '127.0.0.1/32'",
    ),
    "v6-to-destination": (
        "hostip-v6.v6.save",
        "--to-destination [fd00::5]:443",
        "--to-destination [fd00::zz]:443",
        "'fd00::zz'",
    ),
    "v6-mark-source": (
        "hostip-v6.v6.save",
        f"-A {CHAIN} -s fd00::/64 -d ::1/128",
        f"-A {CHAIN} -s 10.88.0.0/16 -d ::1/128",
        "-s '10.88.0.0/16'",
    ),
    "v4-d-not-an-address": (
        "hostip.v4.save",
        f"-A {CHAIN} -d 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j DNAT",
        f"-A {CHAIN} -d 127.0.0.300/32 -p tcp -m tcp --dport 8080 -j DNAT",
        "-d '127.0.0.300/32'",
    ),
    "v4-d-ipv6": (
        "hostip.v4.save",
        f"-A {CHAIN} -d 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j DNAT",
        f"-A {CHAIN} -d ::1/128 -p tcp -m tcp --dport 8080 -j DNAT",
        "-d '::1/128'",
    ),
    "v4-to-destination": (
        "hostip.v4.save",
        "--to-destination 10.88.0.5:90",
        "--to-destination 10.88.0.500:90",
        "'10.88.0.500'",
    ),
    # Another tool's rule: iptables-restore refuses it as well, wherever it is.
    "v4-foreign-rule": (
        "hostip.v4.save",
        "-A PREROUTING -m addrtype",
        "-A PREROUTING -d 10.1.2/24 -j ACCEPT\n-A PREROUTING -m addrtype",
        "-d '10.1.2/24'",
    ),
}


def _broken(tmp_path: Path, name: str) -> tuple:
    fixture, old, new, words = BROKEN[name]
    text = (FIXTURES / fixture).read_text()
    assert text.count(old) == 1, old
    text = text.replace(old, new)
    number = next(i for i, line in enumerate(text.split("\n"), 1) if new.split("\n")[0] in line)
    path = tmp_path / fixture
    path.write_text(text)
    family = 6 if fixture.endswith(".v6.save") else 4
    return path, family, number, words


@pytest.mark.parametrize("name", sorted(BROKEN))
@pytest.mark.parametrize("command", [["list"], ["list", "-o", "json"], ["check"]])
def test_a_snapshot_rule_with_no_address_where_one_must_be_is_bad_input(tmp_path, name, command):
    """Before: the -d cases of a plugin chain were 'internal error: ValueError', exit 3;
    the others were listed and checked as if they were mappings (exit 0 or 1)."""
    path, family, number, words = _broken(tmp_path, name)
    option = "--snapshot6" if family == 6 else "--snapshot"
    save = "ip6tables-save" if family == 6 else "iptables-save"
    done = run([*command, option, str(path), "--cni-cache-dir", str(tmp_path / "none")])
    assert_error(
        done, 2, f"{path}: line {number}: ", words, f"is not an IPv{family} address",
        f"`{save} -t nat`",
    )  # fmt: skip


def test_the_other_familys_dump_still_says_which_option_it_is_for(tmp_path):
    """A whole dump of the other family is named as such, before any line of it."""
    dump = tmp_path / "v4.save"
    dump.write_text((FIXTURES / "hostip.v4.save").read_text())
    done = run(["list", "--snapshot6", str(dump), "--cni-cache-dir", str(tmp_path)])
    assert_error(done, 2, "is an IPv4 dump", "give it as --snapshot")


# What iptables-save prints, odd as it is, is read as before (the parse of a dump
# from the kernel is not strict, and a --snapshot's is checked for addresses only).
PRINTED = [
    ("-d 10.0.0.0/255.0.255.0", 4),  # a mask that is not a prefix: printed as an address
    ("-s fd00::/ffff:0:ffff::", 6),
    ("! -d 127.0.0.0/8", 4),
    ("-d ::ffff:10.0.0.1/128", 6),
    ("--to-destination 10.0.0.1-10.0.0.9:80-90", 4),
    ("--to-destination :8080", 4),
    ("--to-destination fd00::5", 6),  # a DNAT to the address alone: no brackets
    ("--to-destination [fd00::5-fd00::9]:80", 6),
    ("--to-source 192.168.0.1", 4),
    ('-m comment --comment "-d not-an-address"', 4),
]


@pytest.mark.parametrize("args, family", PRINTED)
def test_what_iptables_save_prints_is_no_refusal(args, family):
    chain = "CNI-DN-70a29d9dc18bc4d652ea5"
    text = f"*nat\n:PREROUTING ACCEPT [0:0]\n:{chain} - [0:0]\n"
    text += f"-A {chain} -p tcp -m tcp --dport 80 {args} -j DNAT --to-destination :81\nCOMMIT\n"
    table = parse_save(text, family, "dump", strict=True)
    assert len(table.rules(chain)) == 1


# Rules as iptables 1.8.9's iptables-save printed them (iptables-restore --test takes
# each): a free text made of `-_0-9A-Za-z` alone is printed unquoted, and a quoted one
# is one word once read, so an option's value may be the very word `-d` or
# `--to-destination`. Only `--comment`'s was known; a log prefix or a recent list
# named so made the dump "not an IPv4 address", exit 2.
FREE_TEXT = [
    "-A POSTROUTING -m recent --rcheck --name -d --mask 255.255.255.255 --rsource -j RETURN",
    '-A POSTROUTING -m string --string "-d" --algo bm -j RETURN',
    "-A POSTROUTING -j LOG --log-prefix -d --log-level 6",
    "-A POSTROUTING -j LOG --log-prefix --to-destination --log-level 6",
    "-A POSTROUTING -j LOG --log-prefix --src --log-level 6",
    "-A POSTROUTING -m hashlimit --hashlimit-upto 5/sec --hashlimit-burst 5"
    " --hashlimit-name -d -j RETURN",
    "-A POSTROUTING -m helper --helper -d -j RETURN",
    "-A POSTROUTING -m comment --comment -s -m comment --comment x -j RETURN",
]


@pytest.mark.parametrize("rule", FREE_TEXT)
def test_an_options_free_text_that_is_an_address_options_name_is_no_refusal(rule):
    text = f"*nat\n:POSTROUTING ACCEPT [0:0]\n{rule}\nCOMMIT\n"
    table = parse_save(text, 4, "dump", strict=True)
    assert len(table.rules("POSTROUTING")) == 1


def test_an_address_option_after_a_flag_is_still_an_address_option():
    """A hand-written `--syn -d zz` (iptables-restore takes generic options anywhere):
    `-d` after a flag is the option, not the flag's value."""
    from portmapctl.iptables.ruleset import address_refusal

    assert address_refusal(("-p", "tcp", "--syn", "-d", "zz", "-j", "ACCEPT"), 4) == (
        "-d 'zz' is not an IPv4 address"
    )


def test_address_refusal_names_the_first_value_that_is_no_address():
    from portmapctl.iptables.ruleset import address_refusal
    from portmapctl.iptables.spelling import is_rule_address, nat_misread

    assert address_refusal(("-s", "10.0.0.0/8", "-d", "zz", "-j", "ACCEPT"), 4) == (
        "-d 'zz' is not an IPv4 address"
    )
    assert address_refusal(("-j", "DNAT", "--to-destination", "[fd00::5]:80"), 4) == (
        "--to-destination '[fd00::5]:80': 'fd00::5' is not an IPv4 address"
    )
    assert address_refusal(("-p", "tcp", "-j", "ACCEPT"), 4) is None
    assert not is_rule_address("fe80::1%eth0/128", 6)  # iptables takes no zone
    assert not is_rule_address("10.0.0.1/33", 4)
    assert is_rule_address("10.0.0.1", 4)
    assert nat_misread("10.0.0.1-zz:80", 4) == "zz"
    assert nat_misread("[fd00::5:80", 6) == "[fd00::5:80"


def test_an_ipv6_dnat_to_an_address_alone_is_no_port_of_a_cut_address():
    """ip6tables-save prints a DNAT without a port as the bare address (`fd00:88::5`):
    it was read as address `fd00:88:` port 5, a row `[fd00:88:]:5`; an IPv4 DNAT
    without a port was no row. Both are none now (the chain is incomplete)."""
    assert split_destination("fd00:88::5") is None
    assert split_destination("10.88.0.5") is None
    assert split_destination("[fd00:88::5]:80") == ("fd00:88::5", 80)
    assert split_destination("10.88.0.5:80") == ("10.88.0.5", 80)


def test_list_of_an_ipv6_dnat_without_a_port_shows_no_cut_address(tmp_path):
    text = (FIXTURES / "hostip-v6.v6.save").read_text()
    text = text.replace("--to-destination [fd00::5]:80", "--to-destination fd00::5")
    dump = tmp_path / "v6.save"
    dump.write_text(text)
    done = run(["list", "--snapshot6", str(dump), "-o", "json", "--cni-cache-dir", str(tmp_path)])
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["mappings"]
    assert [(r["host_port"], r["container_ip"], r["container_port"]) for r in rows] == [
        (8443, "fd00::5", 443)
    ]
    assert json.loads(done.stdout)["chains"][0]["status"] == ["incomplete"]


def _nft_with(tmp_path: Path, old: str, new: str) -> Path:
    text = (EXAMPLES / "nft" / "ruleset.json").read_text()
    assert text.count(old) == 1, old
    path = tmp_path / "ruleset.json"
    path.write_text(text.replace(old, new))
    return path


# The rule of examples/nft's a91c6e2f0d3b on 127.0.0.1:9443, and its dnat.
DADDR = '"right": "127.0.0.1"}}, {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 9443}'  # noqa: E501
NFT_BROKEN = {
    "daddr-not-an-address": (DADDR, DADDR.replace("127.0.0.1", "127.0.0.300"), "ip daddr '127.0.0.300'"),
    "daddr-ipv6": (DADDR, DADDR.replace("127.0.0.1", "fd00::1"), "ip daddr 'fd00::1'"),
    "daddr-word": (DADDR, DADDR.replace("127.0.0.1", "zz"), "ip daddr 'zz'"),
    "dnat-other-family": (
        '"dnat": {"addr": "fd00:88::5", "port": 80}',
        '"dnat": {"addr": "10.88.0.5", "port": 80}',
        "dnat to '10.88.0.5' is not an IPv6 address",
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(NFT_BROKEN))
@pytest.mark.parametrize("command", ["list", "check"])
def test_an_nft_snapshot_rule_with_no_address_where_one_must_be_is_bad_input(
    tmp_path, name, command
):
    """Before: with an iptables dump beside it (the rows of both backends contest
    ports) the daddr cases were 'internal error: ValueError', exit 3; alone, a row
    `zz:9443` (`[fd00::1]:9443` in a v4 row), and a v6 row DNATing to 10.88.0.5."""
    old, new, words = NFT_BROKEN[name]
    path = _nft_with(tmp_path, old, new)
    cache = ["--cni-cache-dir", str(EXAMPLES / "nft" / "cni-cache")]
    for dumps in ([], ["--snapshot", str(EXAMPLES / "node.v4.save")]):
        done = run([command, "--nft-snapshot", str(path), *dumps, *cache])
        assert_error(done, 2, f"{path}: not `nft -j list` output", "bad rule", words)


def _nft_rule(right) -> str:
    rule = {"family": "ip", "table": "cni_hostport", "chain": "hostports", "handle": 3,
            "comment": "c1", "expr": [
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                           "right": right}},
                {"dnat": {"addr": "10.88.0.5", "port": 80}}]}  # fmt: skip
    return json.dumps({"nftables": [{"rule": rule}]})


@pytest.mark.parametrize(
    "right",
    [{"prefix": {"addr": "fd00::", "len": 8}}, {"set": ["10.0.0.1", "zz"]},
     {"range": ["10.0.0.1", "10.0.0.999"]}],
)  # fmt: skip
def test_an_nft_address_match_of_no_address_is_refused_in_any_form(right):
    from portmapctl.errors import BadInput
    from portmapctl.nftables import ruleset as rs

    with pytest.raises(BadInput) as err:
        rs.parse(_nft_rule(right), "src")
    assert "bad rule: ip daddr" in str(err.value) and "is not an IPv4 address" in str(err.value)


@pytest.mark.parametrize(
    "right",
    ["10.0.0.1", "@blocked", {"prefix": {"addr": "10.0.0.0", "len": 8}},
     {"set": ["10.0.0.1", {"prefix": {"addr": "10.1.0.0", "len": 16}}]}],
)  # fmt: skip
def test_an_nft_address_match_as_nft_prints_it_is_read(right):
    from portmapctl.nftables import ruleset as rs

    table = rs.parse(_nft_rule(right), "src").table(4)
    assert table is not None and len(table.rules_of("hostports")) == 1
