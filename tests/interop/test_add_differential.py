"""Cases found by differential fuzzing of `portmapctl add` against the real plugin's
ADD (the same stdin config, one fresh namespace each), kept here minimised: what the
plugin refuses portmapctl refuses, and what it writes portmapctl writes."""

from __future__ import annotations

import json

import pmctl
import pytest
import realplugin as rp
from test_writes_audit import _saves, twin_ns  # noqa: F401 (a fixture)

NETWORK = "fznet"
CONTAINER = "f00d1234"


def _add(ns: str, mode: rp.Mode, conf: dict):
    args = ["add", "--netns", ns, "--iptables", mode, "--container", CONTAINER]
    return pmctl.run([*args, "--cni-config", "-", "--no-flush-udp"], stdin=json.dumps(conf))


@pytest.mark.parametrize(
    "conditions, proto",
    [
        (["-p", "tcp", "--syn"], "udp"),
        (["-p", "tcp"], "tcp"),
        (["-s", "10.0.0.0/8", "-s", "10.1.0.0/16"], "tcp"),
    ],
    ids=["other-protocol", "same-protocol", "twice-in-conditions"],
)
def test_conditions_repeating_an_option_of_the_entry_rule_are_refused_as_the_plugin_is(
    host_ns: str, twin_ns: str, iptables_mode: rp.Mode, conditions: list, proto: str
) -> None:
    """conditionsV4 `-p tcp --syn` on a udp mapping: the plugin's entry rule already has
    `-p udp`, iptables says "multiple -p flags not allowed" and the plugin's ADD fails.
    add kept the last `-p` and wrote the udp mapping's entry rule as `-p tcp`: exit 0,
    a mapping that forwards no udp at all (and sends tcp to a chain of udp rules)."""
    conf = rp.plugin_conf(
        NETWORK, ["10.88.0.5/16"], [rp.port_mapping(8080, 80, proto)], conditions_v4=conditions
    )
    done = rp.run_plugin("ADD", host_ns, CONTAINER, conf, mode=iptables_mode)
    assert done.returncode != 0 and "multiple -" in done.stdout, done.stdout
    before = _saves(twin_ns, iptables_mode)
    pmctl.assert_error(_add(twin_ns, iptables_mode, conf), 2, "conditionsV4", "multiple")
    assert _saves(twin_ns, iptables_mode) == before


@pytest.mark.parametrize(
    "conditions",
    [["--sport", "1024:65535"], ["--dport", "80"], ["--source-port", "1024"]],
    ids=["sport", "dport", "source-port"],
)
def test_a_port_option_after_the_entry_rules_multiport_is_refused_as_the_plugin_is(
    host_ns: str, twin_ns: str, iptables_mode: rp.Mode, conditions: list
) -> None:
    """conditionsV4 `--sport 1024:65535` follows the plugin's `-m multiport -p tcp
    --destination-ports 8080`: iptables gives an option to the matches loaded so far,
    by prefix, so `--sport` is multiport's `--source-ports` ("cannot be used together
    with --destination-ports") and `--dport` its `--destination-ports` ("can only be
    used once"); the plugin's ADD fails. add gave them to the tcp match, exit 0."""
    conf = rp.plugin_conf(
        NETWORK, ["10.88.0.5/16"], [rp.port_mapping(8080, 80)], conditions_v4=conditions
    )
    done = rp.run_plugin("ADD", host_ns, CONTAINER, conf, mode=iptables_mode)
    assert done.returncode != 0 and "multiport: option" in done.stdout, done.stdout
    before = _saves(twin_ns, iptables_mode)
    pmctl.assert_error(_add(twin_ns, iptables_mode, conf), 2, "conditionsV4", "multiport")
    assert _saves(twin_ns, iptables_mode) == before


def test_a_port_option_of_an_explicit_match_after_multiport_is_the_plugins(
    host_ns: str, twin_ns: str, iptables_mode: rp.Mode
) -> None:
    """With `-m tcp` first the option is tcp's, as the plugin's ADD writes it."""
    conf = rp.plugin_conf(
        NETWORK,
        ["10.88.0.5/16"],
        [rp.port_mapping(8080, 80)],
        conditions_v4=["-m", "tcp", "--sport", "1024:65535"],
    )
    rp.run_plugin("ADD", host_ns, CONTAINER, conf, mode=iptables_mode, check=True)
    done = _add(twin_ns, iptables_mode, conf)
    assert done.returncode == 0, done.stderr
    assert _saves(twin_ns, iptables_mode) == _saves(host_ns, iptables_mode)


def test_a_rule_the_kernel_refuses_is_named_in_the_error_line(host_ns: str, twin_ns: str) -> None:
    """conditionsV4 `-m owner --uid-owner 0` parses (`iptables-restore --test` takes
    it) but the kernel refuses the owner match on a chain PREROUTING reaches: the
    plugin's ADD fails ("Invalid argument"), and so does add, nothing written. Its line
    said `refused the transaction, nothing changed: iptables-nft-restore v1.8.9
    (nf_tables):` and stopped there: the first line of iptables-nft-restore's stderr
    is a banner, the reason (`line 4: RULE_APPEND failed (Invalid argument): rule in
    chain CNI-HOSTPORT-DNAT`) is on the next."""
    conf = rp.plugin_conf(
        NETWORK,
        ["10.88.0.5/16"],
        [rp.port_mapping(8080, 80)],
        conditions_v4=["-m", "owner", "--uid-owner", "0"],
    )
    done = rp.run_plugin("ADD", host_ns, CONTAINER, conf, mode="nft")
    assert done.returncode != 0 and "Invalid argument" in done.stdout, done.stdout
    before = _saves(twin_ns, "nft")
    added = _add(twin_ns, "nft", conf)
    assert added.returncode == 1, added.stderr
    line = pmctl.without_cache_note(added.stderr).strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line, added.stderr
    assert "RULE_APPEND failed (Invalid argument)" in line, line
    assert _saves(twin_ns, "nft") == before


def test_a_second_mark_bit_under_ip6tables_legacy_gets_its_shared_rules(
    host_ns: str, twin_ns: str
) -> None:
    """A container whose network says markMasqBit 14, then one with the default 13,
    dual-stack, legacy iptables. The second add planned without a read: its `-C
    CNI-HOSTPORT-SETMARK ... --set-xmark 0x2000/0x2000` inside ip6tables-legacy-restore
    passed on the 0x4000 rule (ip6tables-legacy's -C ignores the MARK target's data, and
    the MASQ rule's mark), so IPv6 got no 0x2000 SETMARK/MASQ rules: add said "added",
    and check then called the node unhealthy (missing-toplevel-rule) at every run, and
    a second add wrote them. Planned from a read, as under IPv4 and nf_tables, they are
    what the plugin writes where its own `-C` is sound (ip6tables-nft)."""
    ips = [["10.88.0.5/16", "fd00::5/64"], ["10.88.0.6/16", "fd00::6/64"]]
    confs = [
        rp.plugin_conf(NETWORK, ips[0], [rp.port_mapping(8080, 80)], mark_masq_bit=14),
        rp.plugin_conf("other", ips[1], [rp.port_mapping(8081, 80)]),
    ]
    for number, conf in enumerate(confs):
        cid = f"{CONTAINER}{number}"
        rp.run_plugin("ADD", host_ns, cid, conf, mode="nft", check=True)
        args = ["add", "--netns", twin_ns, "--iptables", "legacy", "--container", cid]
        done = pmctl.run([*args, "--cni-config", "-", "--no-flush-udp"], stdin=json.dumps(conf))
        assert done.returncode == 0, done.stderr
    assert _saves(twin_ns, "legacy")[6] == _saves(host_ns, "nft")[6]


@pytest.mark.parametrize(
    "option, saved",
    [("--sport", "--sports"), ("--source-port", "--sports")],
    ids=["sport", "source-port"],
)
def test_a_port_option_of_a_second_multiport_in_conditions_is_the_plugins(
    host_ns: str, twin_ns: str, iptables_mode: rp.Mode, option: str, saved: str
) -> None:
    """conditionsV4 `-m multiport --sport 1024:65535` loads a second multiport, whose
    first port option `--sport` is (by prefix, as getopt_long gives it) `--sports`:
    the plugin's ADD writes `-m multiport --sports 1024:65535`. add refused it as a
    second port option of the entry rule's own multiport (exit 2)."""
    conf = rp.plugin_conf(
        NETWORK,
        ["10.88.0.5/16"],
        [rp.port_mapping(8080, 80)],
        conditions_v4=["-m", "multiport", option, "1024:65535"],
    )
    rp.run_plugin("ADD", host_ns, CONTAINER, conf, mode=iptables_mode, check=True)
    assert f"-m multiport {saved} 1024:65535" in _saves(host_ns, iptables_mode)[4]
    done = _add(twin_ns, iptables_mode, conf)
    assert done.returncode == 0, done.stderr
    assert _saves(twin_ns, iptables_mode) == _saves(host_ns, iptables_mode)
