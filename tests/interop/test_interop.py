"""portmapctl and the real portmap plugin, both ways, in throwaway namespaces.

- what `portmapctl add` writes is byte for byte what the plugin writes (compared with
  the fixtures, which test_realplugin re-checks against the installed plugin);
- the plugin's CHECK passes on it and its DEL removes every trace of it;
- what the plugin writes, `portmapctl list` reports exactly;
- `add` twice leaves the ruleset identical.
Every test runs for nf_tables and for legacy iptables.
"""

from __future__ import annotations

import json

import pytest
import realplugin as rp
from fixtures_lib import conf, configs, save_text
from pmctl import ok

from portmapctl.iptables.chains import DNAT_PREFIX, dnat_chain_name

# Cases that cover IPv6, host IPs, SNAT off, mark bits, external setmark chains,
# conditions (with masks and --syn), 20 ports of one protocol, sctp, several containers, foreign rules.
CASES = [
    "basic",
    "dual-stack",
    "hostip",
    "hostip-v6",
    "snat-off",
    "markbit-5",
    "external-setmark",
    "conditions",
    "conditions-physdev",
    "conditions-masks",
    "conditions-syn",
    "many-ports",
    "sctp",
    "three-containers",
    "shadowed",
    "long-comment",
    "foreign",
]


def _plugin_conf(case: str, container: dict) -> dict:
    data = conf(case)
    kwargs = {
        "snat": data["options"].get("snat"),
        "mark_masq_bit": data["options"].get("markMasqBit"),
        "external_setmark_chain": data["options"].get("externalSetMarkChain"),
        "conditions_v4": data["options"].get("conditionsV4"),
        "conditions_v6": data["options"].get("conditionsV6"),
    }
    return rp.plugin_conf(data["network"], container["ips"], container["portMappings"], **kwargs)


def _hand_rules(host_ns: str, case: str, when: str, mode: str) -> None:
    for rule in conf(case)["handRules"]:
        if rule["when"] == when:
            done = rp.iptables(host_ns, rule["args"], family=rule["family"], mode=mode)
            assert done.returncode == 0, done.stderr


def _portmapctl_add(host_ns: str, mode: str, case: str) -> None:
    _hand_rules(host_ns, case, "before", mode)
    for container in conf(case)["containers"]:
        ok(
            [
                "add",
                "--netns",
                host_ns,
                "--iptables",
                mode,
                "--container",
                container["containerId"],
                "--cni-config",
                "-",
                "--no-flush-udp",
            ],
            stdin=json.dumps(_plugin_conf(case, container)),
        )
    _hand_rules(host_ns, case, "after", mode)


def _body(text: str) -> str:
    return rp.strip_save_comments(text)


@pytest.mark.parametrize("case", CASES)
def test_add_writes_exactly_what_the_plugin_writes(host_ns, iptables_mode, case):
    _portmapctl_add(host_ns, iptables_mode, case)
    for family in (4, 6):
        assert _body(rp.save(host_ns, family, iptables_mode)) == _body(save_text(case, family))


@pytest.mark.parametrize(
    "case",
    ["basic", "dual-stack", "hostip", "snat-off", "many-ports", "external-setmark", "conditions"],
)
def test_plugin_check_passes_and_del_removes_everything(host_ns, iptables_mode, case):
    _portmapctl_add(host_ns, iptables_mode, case)
    for container in conf(case)["containers"]:
        plugin_conf = _plugin_conf(case, container)
        for done in rp.run_check(
            host_ns, container["containerId"], plugin_conf, mode=iptables_mode
        ):
            assert done.returncode == 0, done.stdout + done.stderr
    for container in conf(case)["containers"]:
        done = rp.run_plugin(
            "DEL",
            host_ns,
            container["containerId"],
            _plugin_conf(case, container),
            mode=iptables_mode,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    for family in (4, 6):
        text = rp.save(host_ns, family, iptables_mode)
        assert DNAT_PREFIX not in text


@pytest.mark.parametrize("case", ["basic", "dual-stack", "many-ports", "three-containers"])
def test_add_twice_changes_nothing(host_ns, iptables_mode, case):
    _portmapctl_add(host_ns, "nft" if iptables_mode == "nft" else "legacy", case)
    before = {f: _body(rp.save(host_ns, f, iptables_mode)) for f in (4, 6)}
    for container in conf(case)["containers"]:
        out = ok(
            [
                "add",
                "--netns",
                host_ns,
                "--iptables",
                iptables_mode,
                "-o",
                "json",
                "--container",
                container["containerId"],
                "--cni-config",
                "-",
            ],
            stdin=json.dumps(_plugin_conf(case, container)),
        )
        assert json.loads(out)["changed"] is False
    assert {f: _body(rp.save(host_ns, f, iptables_mode)) for f in (4, 6)} == before


@pytest.mark.parametrize(
    "case",
    ["basic", "dual-stack", "hostip-v6", "snat-off", "many-ports", "three-containers", "sctp"],
)
def test_list_reports_what_the_plugin_made(host_ns, iptables_mode, case):
    for container in conf(case)["containers"]:
        rp.run_plugin(
            "ADD",
            host_ns,
            container["containerId"],
            _plugin_conf(case, container),
            mode=iptables_mode,
            check=True,
        )
    doc = json.loads(ok(["list", "--netns", host_ns, "--iptables", iptables_mode, "-o", "json"]))
    got = sorted(
        (
            (
                m["network"],
                m["container_id"],
                m["family"],
                m["protocol"],
                m["host_ip"],
                m["host_port"],
                m["container_ip"],
                m["container_port"],
                m["snat"],
                m["chain"],
                tuple(m["status"]),
            )
            for m in doc["mappings"]
        ),
        key=repr,
    )
    wanted = sorted(
        (
            (
                c.network,
                c.container_id,
                family,
                p.protocol,
                p.host_ip_for_rule(),
                p.host_port,
                c.address(family).ip.compressed,
                p.container_port,
                c.snat,
                dnat_chain_name(c),
                ("ok",),
            )
            for c in configs(case)
            for family in c.families
            for p in c.ports
            if p.applies_to(family)
        ),
        key=repr,
    )
    assert got == wanted


def test_dry_run_prints_the_transaction_and_changes_nothing(host_ns, iptables_mode):
    before = rp.save(host_ns, 4, iptables_mode)
    out = ok(
        [
            "add",
            "--netns",
            host_ns,
            "--iptables",
            iptables_mode,
            "--network",
            "mynet",
            "--container",
            "abc123",
            "--ip",
            "10.88.0.5/16",
            "-p",
            "8080:80",
            "--dry-run",
        ]
    )
    assert (
        "-A CNI-DN-70a29d9dc18bc4d652ea5 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.88.0.5:80"
        in out
    )
    assert _body(rp.save(host_ns, 4, iptables_mode)) == _body(before)


def test_changed_ports_rewrite_the_chain_and_entry_rules(host_ns, iptables_mode):
    """Re-adding with other ports leaves the state the plugin would leave."""
    base = [
        "add",
        "--netns",
        host_ns,
        "--iptables",
        iptables_mode,
        "--network",
        "mynet",
        "--container",
        "abc123",
        "--ip",
        "10.88.0.5/16",
    ]
    ok([*base, "-p", "8080:80", "-p", "5353:53/udp"])
    ok([*base, "-p", "8081:80"])
    plugin_conf = rp.plugin_conf(
        "mynet", ["10.88.0.5/16"], [{"hostPort": 8081, "containerPort": 80, "protocol": "tcp"}]
    )
    for done in rp.run_check(host_ns, "abc123", plugin_conf, mode=iptables_mode):
        assert done.returncode == 0, done.stdout + done.stderr
    text = rp.save(host_ns, 4, iptables_mode)
    assert "8080" not in text and "5353" not in text


def test_an_unspecified_host_ip_of_one_family_is_no_fault_of_the_other(host_ns, iptables_mode):
    """`0.0.0.0` maps in IPv4 alone and `::` in IPv6 alone (FACTS: a host IP of the other
    family skips that family), though the plugin's entry rules name every port in both:
    read without the CNI cache, the other family's rule, with no `-d`, is what says so.
    A port that still has a rule of this family (its SETMARK rules, the DNAT gone) is
    another matter: that one stays incomplete."""
    ips = ["10.88.0.5/16", "fd00:88::5/64"]
    ports = [
        {"hostPort": 8082, "containerPort": 82, "protocol": "udp", "hostIP": "0.0.0.0"},
        {"hostPort": 8083, "containerPort": 83, "protocol": "tcp", "hostIP": "::"},
        # udp: ip6tables-legacy -C takes a second tcp port for the first (FACTS.md).
        {"hostPort": 8084, "containerPort": 84, "protocol": "udp"},
    ]
    conf_ = rp.plugin_conf("mynet", ips, ports)
    rp.run_plugin("ADD", host_ns, "abc123", conf_, mode=iptables_mode, check=True)
    common = ["--netns", host_ns, "--iptables", iptables_mode]
    doc = json.loads(ok(["list", *common, "-o", "json"]))
    got = sorted(
        (m["family"], m["protocol"], m["host_port"], *m["status"]) for m in doc["mappings"]
    )
    assert got == [
        (4, "udp", 8082, "ok"),
        (4, "udp", 8084, "ok"),
        (6, "tcp", 8083, "ok"),
        (6, "udp", 8084, "ok"),
    ]
    assert ok(["check", *common]).startswith("healthy: ")

    # The IPv6 DNAT of 8084 (no host IP: in both families) lost, its SETMARK rule kept.
    (rule,) = [
        line
        for line in rp.nat_rules(rp.save(host_ns, 6, iptables_mode))
        if "--dport 8084" in line and "DNAT" in line
    ]
    rp.iptables(host_ns, ["-t", "nat", "-D", *rule.split()[1:]], family=6, mode=iptables_mode)
    doc = json.loads(ok(["list", *common, "-o", "json"]))
    incomplete = {
        (m["family"], m["host_port"]) for m in doc["mappings"] if "incomplete" in m["status"]
    }
    assert incomplete == {(6, 8083)}
