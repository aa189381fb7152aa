"""The walk of iptables/foreign.py: which host ports another tool's nat rule takes
before PREROUTING's jump to CNI-HOSTPORT-DNAT, on saves shaped like real ones (the
real iptables-nft save tests/fixtures/foreign.v4.save: kube-proxy's KUBE-SERVICES,
Docker's DOCKER chain, the plugin's container on tcp/8080 and udp/5353)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple

import pytest

from portmapctl.iptables import foreign, inventory
from portmapctl.iptables.ruleset import parse_save
from portmapctl.ops.check.hints import Fixes
from portmapctl.ops.check.node_problems import shadow_problem as _shadow_problem
from portmapctl.render.check import split_fix

SAVE = (Path(__file__).parents[1] / "fixtures" / "foreign.v4.save").read_text()
WANTED = {("tcp", 8080), ("udp", 5353)}
DOCKER = "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80"
NODEPORT = (
    '-A KUBE-NODEPORTS -p tcp -m comment --comment "ns/svc:http" -m tcp --dport 8080'
    " -j KUBE-EXT-ABCDEFGHIJKLMNOP"
)


def _save(*rules: str, chains: Tuple[str, ...] = (), before: str = "-A KUBE-SERVICES -d") -> str:
    """The fixture with `rules` (and `chains` declared) put before the line `before`."""
    text = SAVE.replace(
        ":DOCKER - [0:0]", "".join(f":{c} - [0:0]\n" for c in chains) + ":DOCKER - [0:0]"
    )
    return text.replace(before, "".join(f"{r}\n" for r in rules) + before, 1)


def _takers(text: str, wanted=WANTED) -> Dict[Tuple[str, int], str]:
    table = parse_save(text, 4, skip_foreign=True)  # as the backends read it
    return foreign.takers(foreign.table_reader(table), wanted)


def test_the_real_save_as_it_is_takes_nothing() -> None:
    assert _takers(SAVE) == {}


def test_a_docker_dnat_takes_its_port_and_no_other() -> None:
    assert _takers(_save(DOCKER)) == {("tcp", 8080): DOCKER}


def test_a_kube_proxy_nodeport_takes_its_port_without_looking_inside() -> None:
    text = _save(
        '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must'
        ' be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS',
        NODEPORT,
        chains=("KUBE-NODEPORTS", "KUBE-EXT-ABCDEFGHIJKLMNOP"),
        before="COMMIT",
    )
    assert _takers(text) == {("tcp", 8080): NODEPORT}


@pytest.mark.parametrize(
    "rule",
    [
        "-A PREROUTING -p tcp -m multiport --dports 8000:8100,9000 -j REDIRECT --to-ports 3128",
        "-A PREROUTING -p tcp -m tcp --dport 8080 -j ACCEPT",
        "-A DOCKER -p tcp -m tcp --dport 8080:8090 -j DNAT --to-destination 172.17.0.3:80",
    ],
)
def test_redirect_accept_and_ranges_take_the_port(rule: str) -> None:
    before = (
        "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER"
        if "PREROUTING" in rule
        else "-A KUBE-SERVICES -d"
    )
    assert _takers(_save(rule, before=before)) == {("tcp", 8080): rule}


@pytest.mark.parametrize(
    "rules",
    [
        # Docker's rule for another port; another protocol.
        [DOCKER.replace("8080", "9090")],
        [DOCKER.replace("tcp", "udp")],
        # Conditions that not every packet meets.
        [DOCKER.replace("! -i docker0", "-s 10.0.0.0/8")],
        [DOCKER.replace("! -i docker0", "-i eth0")],
        [DOCKER.replace("-m tcp", "-m statistic --mode random --probability 0.5 -m tcp")],
        [DOCKER.replace("-m tcp", "-m mark --mark 0x1 -m tcp")],
        [DOCKER.replace("--dport 8080", "! --dport 22")],
        # A jump that only some packets take: not followed.
        [
            "-A PREROUTING -d 10.96.0.10/32 -j CLUSTER-IP",
            "-A CLUSTER-IP -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.244.0.9:80",
        ],
        # A RETURN for every packet before the DNAT.
        ["-A DOCKER -j RETURN", DOCKER],
    ],
)
def test_rules_that_take_only_some_packets_take_nothing(rules) -> None:
    at = (
        "-A PREROUTING -m comment"
        if rules[0].startswith("-A PREROUTING")
        else "-A KUBE-SERVICES -d"
    )
    assert _takers(_save(*rules, chains=("CLUSTER-IP",), before=at)) == {}


def test_rules_after_the_plugins_jump_take_nothing() -> None:
    rule = "-A PREROUTING -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.0.0.9:80"
    assert _takers(_save(rule, before="-A OUTPUT ! -d")) == {}


def test_output_alone_takes_nothing() -> None:
    """OUTPUT's DOCKER jump has `! -d 127.0.0.0/8`; with it benign, still nothing: only
    PREROUTING (the network's traffic) is judged."""
    text = _save(DOCKER).replace("-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n", "")
    text = text.replace("-A OUTPUT ! -d 127.0.0.0/8 -m", "-A OUTPUT -m")
    assert _takers(text) == {}


def test_no_entry_jump_no_verdict() -> None:
    text = _save(DOCKER).replace(
        "-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT\n", ""
    )
    assert _takers(text) == {}


def test_jump_loops_end() -> None:
    text = _save(
        "-A LOOP-A -j LOOP-B", "-A LOOP-B -j LOOP-A", "-A LOOP-B -p udp -m udp --dport 5353 -j REDIRECT",
        "-A PREROUTING -j LOOP-A", chains=("LOOP-A", "LOOP-B"), before="-A PREROUTING -m comment",
    )  # fmt: skip
    assert _takers(text) == {("udp", 5353): "-A LOOP-B -p udp -m udp --dport 5353 -j REDIRECT"}


@pytest.mark.parametrize("dest", [None, "192.168.1.5"])
@pytest.mark.parametrize("base", [1000, 80])
def test_only_the_few_rules_that_may_matter_are_split(monkeypatch, base: int, dest) -> None:
    """A kube-proxy KUBE-SERVICES of 2,000 ClusterIP rules: none split, on other ports
    (1000 + i) or on the mapped port itself (all on 80, as a node's web services are),
    for a mapping on every address or on one host IP (whose walk judges `-d`: before,
    that walk split every ClusterIP rule on a mapped port, again for each host IP)."""
    services = [
        f"-A KUBE-SERVICES -d 10.96.{i // 250}.{i % 250}/32 -p tcp -m comment --comment"
        f' "ns/s{i}:http cluster IP" -m tcp --dport {base + i if base > 80 else 80}'
        " -j KUBE-SVC-NPX46M4PTMTKRN6Y"
        for i in range(2000)
        if base + i != 8080
    ]
    text = _save(*services, DOCKER)
    split = []
    real = foreign.split_words
    monkeypatch.setattr(foreign, "split_words", lambda line: split.append(line) or real(line))
    table = parse_save(text, 4, skip_foreign=True)
    found = foreign.takers(foreign.table_reader(table), WANTED | {("tcp", 80)}, dest=dest)
    assert found == {("tcp", 8080): DOCKER}
    assert len(split) <= 3, split


def test_each_chain_is_listed_once_for_every_host_ips_walk() -> None:
    """add walks the rules once per host IP of its mappings (a rule's `-d` holds for
    all of one's connections or none), over chains listed one by one (`iptables -S
    CHAIN`, a process each): each chain is listed once for all those walks (before:
    again for each host IP)."""
    from collections import Counter

    from portmapctl.iptables.ruleset import format_rule

    table = parse_save(_save(DOCKER), 4)
    listed: Counter = Counter()

    def list_chain(chain: str):
        listed[chain] += 1
        if chain not in table.chains:
            return None
        return "\n".join(format_rule("-A", chain, r) for r in table.rules(chain))

    wanted = {None: {("tcp", 8080)}, "192.168.1.5": {("tcp", 8080)}, "10.0.0.7": {("tcp", 8081)}}
    found = foreign.hooked_takers(foreign.listing_reader(list_chain), wanted)
    assert found == {("tcp", 8080): DOCKER}
    assert listed["PREROUTING"] == 1 and max(listed.values()) == 1, listed


def test_list_and_check_say_shadowed_with_the_rule() -> None:
    table = parse_save(_save(DOCKER), 4, skip_foreign=True)
    found = inventory.build({4: table})
    rows = [(m.protocol, m.host_port, m.status, m.shadowed_by) for m in found.mappings]
    assert rows == [("tcp", 8080, ("shadowed",), DOCKER), ("udp", 5353, ("ok",), None)]
    (chain,) = found.chains
    problem = _shadow_problem(chain, [found.mappings[0]], {(chain.name, 4): chain}, Fixes())
    assert problem.detail == f"tcp/8080 taken first by a rule outside the plugin's chains: {DOCKER}"
    assert split_fix(problem.fix)[0] is None


PROXY_ENTRY = "-A PREROUTING -p tcp -j PROXY"


@pytest.mark.parametrize(
    "returning",
    [
        "-A PROXY -p tcp -m tcp --dport 8080 -j RETURN",  # the mapped port alone
        "-A PROXY -p tcp -m multiport --dports 22,8000:8100 -j RETURN",
        "-A PROXY -p tcp -j RETURN",  # every packet the jump sends (it says -p tcp)
    ],
)
def test_a_port_a_chain_returns_is_not_taken_by_its_later_rules(returning: str) -> None:
    # A transparent proxy: the ports it returns first reach the plugin's entry.
    text = _save(
        PROXY_ENTRY,
        returning,
        "-A PROXY -p tcp -j REDIRECT --to-ports 3128",
        chains=("PROXY",),
        before="-A PREROUTING -m addrtype",
    )
    assert _takers(text) == {}


def test_a_returned_port_is_returned_in_the_chains_a_later_rule_jumps_to() -> None:
    text = _save(
        PROXY_ENTRY,
        "-A PROXY -p tcp -m tcp --dport 8080 -j RETURN",
        "-A PROXY -j TPROXY-ALL",
        "-A TPROXY-ALL -p tcp -j REDIRECT --to-ports 3128",
        chains=("PROXY", "TPROXY-ALL"),
        before="-A PREROUTING -m addrtype",
    )
    assert _takers(text) == {}


def test_a_port_returned_from_a_chain_is_taken_by_its_callers_later_rule() -> None:
    redirect = "-A PREROUTING -p tcp -m tcp --dport 8080 -j REDIRECT --to-ports 3128"
    text = _save(
        PROXY_ENTRY,
        "-A PROXY -p tcp -m tcp --dport 8080 -j RETURN",
        "-A PROXY -p tcp -j REDIRECT --to-ports 3129",
        redirect,
        chains=("PROXY",),
        before="-A PREROUTING -m addrtype",
    )
    assert _takers(text) == {("tcp", 8080): redirect}


def test_each_chain_is_read_once() -> None:
    """A listing may fetch the whole table from the kernel (legacy iptables -S): the
    walk asks for PREROUTING and every chain it enters once."""
    from collections import Counter

    table = {
        "PREROUTING": (
            ("-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",),
            ("-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",),
        ),
        "DOCKER": (
            (
                "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80",
            ),
        ),
    }
    asked: Counter = Counter()

    def read(name: str):
        asked[name] += 1
        return table.get(name)

    found = foreign.takers(read, {("tcp", 8080)})
    assert set(found) == {("tcp", 8080)}
    assert asked == Counter({"PREROUTING": 1, "DOCKER": 1})


def test_for_nftables_ports_the_plugins_jump_ends_nothing() -> None:
    """An nftables mapping has no iptables entry: a rule after PREROUTING's jump to
    CNI-HOSTPORT-DNAT (which holds no rule for its port) takes it for iptables' hook
    all the same (`past_entry`), as does one on a node with no such jump at all."""
    redirect = "-A PREROUTING -p tcp -m tcp --dport 9000 -j REDIRECT --to-ports 3128"
    after = _save(redirect, before="-A POSTROUTING")
    table = parse_save(after, 4, skip_foreign=True)
    wanted = {("tcp", 9000)}
    assert foreign.takers(foreign.table_reader(table), wanted) == {}
    assert foreign.takers(foreign.table_reader(table), wanted, past_entry=True) == {
        ("tcp", 9000): redirect
    }
    jumpless = parse_save(
        after.replace("-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT\n", ""),
        4,
        skip_foreign=True,
    )
    assert foreign.takers(foreign.table_reader(jumpless), wanted, past_entry=True) == {
        ("tcp", 9000): redirect
    }


DOCKER_ON_ONE_IP = (
    "-A DOCKER -d 192.168.1.5/32 ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT"
    " --to-destination 172.17.0.2:80"
)


@pytest.mark.parametrize(
    ("rule", "dest", "taken"),
    [
        # Docker's publish on one host IP (`-p 192.168.1.5:8080:80`): all of that
        # address's connections, none of another's, only some of every address's.
        (DOCKER_ON_ONE_IP, "192.168.1.5", True),
        (DOCKER_ON_ONE_IP, "192.168.1.6", False),
        (DOCKER_ON_ONE_IP, None, False),
        # A prefix, and `! -d`.
        (DOCKER_ON_ONE_IP.replace("192.168.1.5/32", "192.168.0.0/16"), "192.168.1.6", True),
        (DOCKER_ON_ONE_IP.replace("-d", "! -d", 1), "192.168.1.5", False),
        (DOCKER_ON_ONE_IP.replace("-d", "! -d", 1), "192.168.1.6", True),
        # `! -d 127.0.0.0/8` holds for every connection of a mapping on every address.
        (DOCKER_ON_ONE_IP.replace("-d 192.168.1.5/32", "! -d 127.0.0.0/8"), None, True),
        (DOCKER_ON_ONE_IP.replace("-d 192.168.1.5/32", "-d 127.0.0.1/32"), None, False),
    ],
)
def test_a_destination_is_judged_for_the_host_ip_walked(rule, dest, taken) -> None:
    """`-d ADDR[/LEN]` and `! -d` hold for all of a mapping's connections on one host IP
    or none (before: never judged, the rule took nothing: a mapping on 192.168.1.5:8080
    behind Docker's publish on that address said `ok`)."""
    table = parse_save(_save(rule), 4, skip_foreign=True)
    found = foreign.takers(foreign.table_reader(table), WANTED, dest=dest)
    assert found == ({("tcp", 8080): rule} if taken else {})


def test_a_loopback_destination_walks_output_and_judges_its_docker_jump() -> None:
    """For 127.0.0.1 the walk is OUTPUT's: Docker's `! -d 127.0.0.0/8` jump meets none
    of its connections, a rule for 127.0.0.1 all of them."""
    rule = "-A OUTPUT -d 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j ACCEPT"
    table = parse_save(_save(DOCKER.replace("! -i docker0 ", "")), 4, skip_foreign=True)
    assert foreign.takers(foreign.table_reader(table), WANTED, dest="127.0.0.1") == {}
    table = parse_save(_save(rule, before="-A OUTPUT ! -d"), 4, skip_foreign=True)
    found = foreign.takers(foreign.table_reader(table), WANTED, dest="127.0.0.1")
    assert found == {("tcp", 8080): rule}
