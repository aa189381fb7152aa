"""(The tests of this subject that need root are in tests/kernel/test_check.py.)

`check` and `check --repair`: on real plugin output (fixtures), and against the
kernel with the real plugin in throwaway namespaces."""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import shlex
from dataclasses import replace
from pathlib import Path

import pytest
import realplugin as rp
from fixtures_lib import NAMES, configs, save_text, table
from pmctl import assert_error, run

from portmapctl import render
from portmapctl.cni.cache import Attachment, read_cache
from portmapctl.host.netns import NetnsState
from portmapctl.iptables.access.restore import RestoreBackend
from portmapctl.iptables.chains import chain_name, dnat_chain_name
from portmapctl.iptables.ruleset import parse_save
from portmapctl.ops import check
from portmapctl.ops.node import Node, NodeOptions
from portmapctl.render.check import split_fix

FIXTURES = Path(__file__).parents[1] / "fixtures"
EXAMPLES = Path(__file__).parents[2] / "examples"
EMPTY_NAT = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n"


def _attachments(name):
    return [
        Attachment(c.network, c.container_id, "eth0", f"/cache/{c.container_id}", c)
        for c in configs(name)
    ]


def _tables(name, edit=lambda text, family: text):
    return {f: parse_save(edit(save_text(name, f), f), f) for f in (4, 6)}


def _drop(*needles):
    """An edit that removes every line containing one of `needles`."""

    def edit(text, family):
        return "\n".join(line for line in text.splitlines() if not any(n in line for n in needles))

    return edit


def _kinds(problems):
    return sorted((p.kind, p.family, p.chain) for p in problems)


def _diagnose(tables, attachments, **kwargs):
    problems, _ = check.diagnose(tables, attachments, **kwargs)
    return problems


# --- the comparison, on fixtures ------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("shadowed", "legacy-sn")])
def test_plugin_made_state_is_healthy_against_its_own_cache(name):
    """Every fixture is what the plugin made from these configs: nothing is wrong."""
    problems, compared = check.diagnose(_tables(name), _attachments(name))
    assert problems == []
    assert compared == sum(len(c.families) for c in configs(name))


def test_shadowed_port_names_the_winner():
    first, second = configs("shadowed")
    problems = _diagnose(_tables("shadowed"), _attachments("shadowed"))
    assert _kinds(problems) == [("shadowed", 4, dnat_chain_name(second))]
    (problem,) = problems
    assert problem.container_id == "ctr-b"
    assert "tcp/8080" in problem.detail
    assert dnat_chain_name(first) in problem.detail and "ctr-a" in problem.detail
    assert "gc" not in problem.fix  # both are live: no command can pick for the operator


def test_shadowed_by_a_stale_chain_is_fixed_by_gc():
    _first, second = _attachments("shadowed")
    problems = _diagnose(_tables("shadowed"), [second])
    assert _kinds(problems) == [
        ("shadowed", 4, second.dnat_chain),
        ("stale", 4, dnat_chain_name(configs("shadowed")[0])),
    ]
    assert problems[0].fix.startswith("portmapctl gc")


def test_legacy_snat_chain_of_a_live_container_is_left_for_later():
    sn = chain_name("mynet", "abc123", "SN-")
    problems = _diagnose(_tables("legacy-sn"), _attachments("legacy-sn"))
    assert _kinds(problems) == [("legacy", 4, sn)]
    assert "once it is gone" in problems[0].fix
    problems = _diagnose(_tables("legacy-sn"), [])
    assert ("legacy", 4, sn) in _kinds(problems)
    assert [p.fix for p in problems if p.kind == "legacy"] == ["portmapctl gc"]


def test_flushed_nat_table_lists_every_missing_piece():
    """What `firewalld --reload` leaves: no CNI chain, no jump, in either family."""
    empty = {f: parse_save(EMPTY_NAT, f) for f in (4, 6)}
    problems = _diagnose(empty, _attachments("dual-stack"))
    (config,) = configs("dual-stack")
    expected = []
    for family in (4, 6):
        expected += [
            ("missing-toplevel", family, "CNI-HOSTPORT-DNAT"),
            ("missing-toplevel", family, "CNI-HOSTPORT-MASQ"),
            ("missing-toplevel", family, "CNI-HOSTPORT-SETMARK"),
            ("missing-chain", family, dnat_chain_name(config)),
        ]
    assert _kinds(problems) == sorted(expected)
    assert all(p.fix == "portmapctl check --repair" for p in problems)


def test_flushed_but_not_deleted_chains_report_rules_and_jumps():
    """What `iptables -t nat -F` leaves: the chains, empty."""

    def flush(text, family):
        return "\n".join(line for line in text.splitlines() if not line.startswith("-A "))

    (config,) = configs("basic")
    problems = _diagnose(_tables("basic", flush), _attachments("basic"))
    chain = dnat_chain_name(config)
    assert _kinds(problems) == sorted(
        [
            ("missing-jump", 4, "PREROUTING"),
            ("missing-jump", 4, "OUTPUT"),
            ("missing-jump", 4, "POSTROUTING"),
            ("missing-toplevel-rule", 4, "CNI-HOSTPORT-SETMARK"),
            ("missing-toplevel-rule", 4, "CNI-HOSTPORT-MASQ"),
            ("missing-rules", 4, chain),
            ("missing-entry", 4, chain),
        ]
    )
    entry = next(p for p in problems if p.kind == "missing-entry")
    assert "tcp/8080" in entry.detail and "udp/5353" in entry.detail


def test_snat_off_and_external_setmark_want_no_setmark_or_masq():
    for name in ("snat-off", "external-setmark"):
        problems = _diagnose(_tables(name, _drop("CNI-HOSTPORT-MASQ")), _attachments(name))
        assert problems == [], name


def test_a_missing_mark_rule_and_a_missing_dnat_rule_explain_themselves():
    problems = _diagnose(_tables("basic", _drop("-s 127.0.0.1/32 -p udp")), _attachments("basic"))
    assert _kinds(problems) == [("missing-rules", 4, dnat_chain_name(configs("basic")[0]))]
    assert "hairpin" in problems[0].why and "1 of 6" in problems[0].detail
    problems = _diagnose(
        _tables("basic", _drop("--to-destination 10.88.0.5:53")), _attachments("basic")
    )
    assert _kinds(problems) == [("missing-rules", 4, dnat_chain_name(configs("basic")[0]))]
    assert "not forwarded" in problems[0].why


def test_chain_that_disagrees_with_the_cache_is_reported_both_ways():
    """The cache says the container is at 10.88.0.99; the chain still DNATs to .5."""
    (config,) = configs("basic")
    moved_config = replace(config, addresses=(ipaddress.ip_interface("10.88.0.99/16"),))
    moved = [Attachment("mynet", "abc123", "eth0", "/c", moved_config)]
    kinds = {p.kind for p in _diagnose(_tables("basic"), moved)}
    assert kinds == {"missing-rules", "extra-rules"}


def test_rules_in_the_wrong_order():
    def swap(text, family):
        if family == 6:
            return text
        lines = text.splitlines()
        dnat = next(
            i for i, line in enumerate(lines) if "-j DNAT --to-destination 10.88.0.5:80" in line
        )
        lines.insert(dnat - 2, lines.pop(dnat))
        return "\n".join(lines)

    problems = _diagnose(_tables("basic", swap), _attachments("basic"))
    assert [p.kind for p in problems] == ["rules-order"]


def test_entry_rule_for_a_port_no_longer_mapped_is_extra():
    (config,) = configs("basic")
    fewer = replace(config, ports=config.ports[:1])
    attachment = Attachment("mynet", "abc123", "eth0", "/c", fewer)
    kinds = {p.kind for p in _diagnose(_tables("basic"), [attachment])}
    assert kinds == {"extra-rules", "extra-entry"}


def test_a_chain_its_portless_cached_config_would_not_make_is_unexpected():
    """A container added again with `portMappings: []` is cached with no mapping while
    its earlier chain stays (real plugin output: the basic fixture): before, healthy.
    One row per family, no command fix (gc keeps it, --repair leaves it). Not when an
    entry of that attachment still maps ports (compared as usual), cannot be read
    (it may), or is a zombie (its own row), nor for a chain nothing enters (orphan)."""
    (config,) = configs("basic")
    chain = dnat_chain_name(config)
    portless = Attachment(config.network, config.container_id, "eth0", "/c", None)
    problems = _diagnose(_tables("basic"), [portless])
    assert _kinds(problems) == [("unexpected-mapping", 4, chain)]  # (a v4-only container)
    assert all(split_fix(p.fix)[0] is None for p in problems)
    assert "tcp/8080" in problems[0].detail
    mapped = Attachment(config.network, config.container_id, "net1", "/d", config)
    assert _diagnose(_tables("basic"), [portless, mapped]) == []
    unreadable = replace(portless, problem="cannot read it")
    assert "unexpected-mapping" not in {p.kind for p in _diagnose(_tables("basic"), [unreadable])}
    zombie = replace(portless, netns="/run/netns/gone", netns_state=NetnsState.GONE)
    assert {p.kind for p in _diagnose(_tables("basic"), [zombie])} == {"zombie"}
    orphaned = _diagnose(_tables("basic", _drop("-A CNI-HOSTPORT-DNAT")), [portless])
    assert {p.kind for p in orphaned} == {"orphan"}


def test_without_a_cache_orphans_and_incomplete_chains_and_the_top_level_are_checked():
    chain = dnat_chain_name(configs("basic")[0])
    tables = _tables("basic", _drop("-A CNI-HOSTPORT-DNAT"))
    assert _kinds(_diagnose(tables, None)) == [("orphan", 4, chain)]
    tables = _tables("basic", _drop("--to-destination 10.88.0.5:53", "-A OUTPUT"))
    assert _kinds(_diagnose(tables, None)) == [
        ("incomplete", 4, chain),
        ("missing-jump", 4, "OUTPUT"),
    ]


def test_stale_chains_are_reported_once_each():
    problems = _diagnose(_tables("three-containers"), [])
    assert _kinds(problems) == sorted(
        ("stale", 4, dnat_chain_name(c)) for c in configs("three-containers")
    )
    assert all(p.fix == "portmapctl gc" for p in problems)
    orphaned = _diagnose(_tables("three-containers", _drop('id: \\"ctr1\\"')), [])
    (ctr1,) = [p for p in orphaned if p.container_id is None]
    assert "nothing enters it" in ctr1.detail


def test_duplicate_entry_rules_come_with_a_command_that_deletes_one_copy():
    def double(text, family):
        lines = text.splitlines()
        out = []
        for line in lines:
            out.append(line)
            if line.startswith(("-A PREROUTING", "-A CNI-HOSTPORT-DNAT -p udp")):
                out.append(line)
        return "\n".join(out)

    tables = _tables("basic", double)
    problems = _diagnose(tables, _attachments("basic"), fixes=check.Fixes(flavour="nft"))
    assert _kinds(problems) == [
        ("duplicate-entry", 4, "CNI-HOSTPORT-DNAT"),
        ("duplicate-entry", 4, "PREROUTING"),
    ]
    for problem in problems:
        # The later copy by its number (a -D by text takes the first: the rule moves),
        # quoted in the prose after the repair command (JSON `fix` is that command).
        assert split_fix(problem.fix)[0] == "portmapctl check --repair"
        (by_hand,) = re.findall(r"`([^`]*)`", problem.fix)
        words = shlex.split(by_hand)
        assert words[:5] == ["iptables-nft", "-t", "nat", "-D", problem.chain]
        rules = tables[4].rules(problem.chain)
        second = int(words[5]) - 1
        assert rules[second] in rules[:second] and len(words) == 6
    by_chain = {p.chain: p for p in problems}
    assert by_chain["CNI-HOSTPORT-DNAT"].container_id == "abc123"
    assert by_chain["PREROUTING"].container_id is None


def test_split_brain_counts_only_portmap_chains_in_both():
    tables = _tables("basic")
    pairs = {4: ("nft", "legacy"), 6: ("nft", "legacy")}
    problems = check.split_brain(tables, {4: table("basic", 4)}, pairs)
    assert _kinds(problems) == [("split-brain", 4, None)]
    assert "CNI-HOSTPORT-DNAT" in problems[0].detail
    assert "in both the nft and the legacy tables" in problems[0].detail
    # Where the alternatives differ, each family is judged against its own other flavour.
    apart = check.split_brain(tables, {4: table("basic", 4)}, {4: ("legacy", "nft")})
    assert "in both the legacy and the nft tables" in apart[0].detail
    assert "iptables-nft-save" in (apart[0].fix or "")
    # Empty legacy tables (iptables-legacy-save makes them) are no split brain.
    assert check.split_brain(tables, {4: parse_save(EMPTY_NAT, 4)}, pairs) == []
    # Through diagnose, and a missing chain says where it is instead.
    empty = {4: parse_save(EMPTY_NAT, 4)}
    problems = _diagnose(
        empty,
        _attachments("basic"),
        other_tables={4: table("basic", 4)},
        flavours={4: ("nft", "legacy")},
    )
    missing = next(p for p in problems if p.kind == "missing-chain")
    assert "legacy tables" in missing.detail


def test_mark_bit_of_the_cache_must_be_the_live_one():
    attachment = _attachments("markbit-5")
    problems = _diagnose(
        _tables("basic"), [Attachment("mynet", "abc123", "eth0", "/c", attachment[0].mapping)]
    )
    assert {p.kind for p in problems} >= {"missing-toplevel-rule"}


def test_the_example_node():
    tables = {f: parse_save((EXAMPLES / f"node.v{f}.save").read_text(), f) for f in (4, 6)}
    problems = _diagnose(tables, read_cache(str(EXAMPLES / "cni-cache")))
    by_kind = {(p.kind, p.container_id) for p in problems}
    assert by_kind == {
        ("missing-entry", "d19e3b7f60c24a57lost"),
        ("shadowed", "8c41d07a2e9f4b13web2"),
        ("stale", "b7e0f2c94d1a4e85oldjob"),
    }


def test_mapping_check_is_the_plugins_check_without_the_seed_bug():
    (config,) = configs("dual-stack")
    tables = _tables("dual-stack")
    assert check.diagnose_mapping(tables, config, "fix") == ([], 2)
    gone = {4: tables[4], 6: parse_save(EMPTY_NAT, 6)}
    problems, _ = check.diagnose_mapping(gone, config, "fix")
    assert _kinds(problems) == [("missing-chain", 6, dnat_chain_name(config))]
    # The plugin's CHECK only asks that wanted rules exist; a rule of its chain that
    # the config does not make is `extra-rules` here too, as the node check and the
    # nftables backend's one-mapping check say, and what --repair rewrites.
    extra = {
        4: parse_save(
            save_text("dual-stack", 4).replace(
                "COMMIT", f"-A {dnat_chain_name(config)} -p tcp -j RETURN\nCOMMIT"
            ),
            4,
        )
    }
    problems, compared = check.diagnose_mapping(extra, config, "fix")
    assert compared == 1 and _kinds(problems) == [("extra-rules", 4, dnat_chain_name(config))]
    assert problems[0].detail.startswith("1 rule its config does not make: ")


def test_fix_commands_carry_the_options_check_ran_with():
    options = NodeOptions(iptables="legacy", families=(6,), netns="my ns", cache_dirs=("/x/cni",))
    fixes = check.fixes_for(Node(options, RestoreBackend("legacy")))
    assert (
        fixes.repair
        == "portmapctl check --repair --netns 'my ns' --iptables legacy --family 6 --cni-cache-dir /x/cni"
    )
    assert fixes.flavour == "legacy"
    # Without a cache gc needs to be told who is live: prose naming the option (no
    # command that runs as it stands, so JSON's `fix` is null).
    no_cache = check.fixes_for(Node(NodeOptions(), RestoreBackend("nft")), False).gc
    assert "`portmapctl gc --valid-attachments FILE`" in no_cache
    assert render.split_fix(no_cache)[0] is None


def test_render():
    problems = tuple(_diagnose(_tables("shadowed"), _attachments("shadowed")))
    result = check.CheckResult(problems, (4, 6), cache_present=True, mappings_checked=2)
    doc = render.check_json(result)
    assert set(doc) >= {"healthy", "repaired", "problems"}
    assert doc["healthy"] is False and doc["repaired"] is False
    assert set(doc["problems"][0]) >= {
        "kind",
        "family",
        "chain",
        "network",
        "container_id",
        "detail",
        "fix",
    }
    assert json.loads(json.dumps(doc)) == doc
    text = render.check_text(result).plain
    command, prose = render.split_fix(problems[0].fix)
    assert "shadowed" in text and "ctr-b" in text and (command or prose) in text
    healthy = check.CheckResult((), (4, 6), cache_present=True, mappings_checked=3, chains_seen=3)
    assert render.check_healthy_line(healthy).startswith(
        "healthy: all 3 chains of the cached containers"
    )


# --- the command, on snapshots (no root needed) ------------------------------------------------


def _write_cache(folder, name):
    data = json.loads((FIXTURES / f"{name}.conf.json").read_text())
    for container in data["containers"]:
        conf = rp.plugin_conf(
            data["network"],
            container["ips"],
            container["portMappings"],
            **{
                {
                    "markMasqBit": "mark_masq_bit",
                    "snat": "snat",
                    "externalSetMarkChain": "external_setmark_chain",
                    "conditionsV4": "conditions_v4",
                    "conditionsV6": "conditions_v6",
                }[k]: v
                for k, v in data["options"].items()
            },
        )
        rp.write_cni_cache(
            folder,
            data["network"],
            container["containerId"],
            container["ifname"],
            conf,
            container["portMappings"],
            container["ips"],
        )
    return str(folder)


def _snapshot_args(name, cache):
    return [
        "check",
        "--snapshot",
        str(FIXTURES / f"{name}.v4.save"),
        "--snapshot6",
        str(FIXTURES / f"{name}.v6.save"),
        "--cni-cache-dir",
        cache,
    ]


def test_cli_healthy_snapshot_prints_one_line_and_exits_0(tmp_path):
    done = run(_snapshot_args("three-containers", _write_cache(tmp_path, "three-containers")))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("healthy: all 3 chains of the cached containers")
    assert len(done.stdout.splitlines()) == 1


def test_cli_problems_exit_1_with_json(tmp_path):
    cache = _write_cache(tmp_path, "three-containers")
    broken = tmp_path / "v4.save"
    broken.write_text(save_text("three-containers", 4).replace("-A PREROUTING", "#"))
    done = run(["check", "--snapshot", str(broken), "--cni-cache-dir", cache, "-o", "json"])
    assert done.returncode == 1, done.stderr
    doc = json.loads(done.stdout)
    assert doc["healthy"] is False and doc["repaired"] is False
    assert [(p["kind"], p["chain"], p["family"]) for p in doc["problems"]] == [
        ("missing-jump", "PREROUTING", 4)
    ]
    assert doc["problems"][0]["fix"] == f"portmapctl check --repair --cni-cache-dir {cache}"


def test_cli_repair_of_a_snapshot_is_bad_input(tmp_path):
    args = _snapshot_args("basic", str(tmp_path))
    assert_error(run([*args, "--repair"]), 2, "--snapshot")


@pytest.mark.parametrize(
    "content, words",
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"kind": "cniCacheV2", "containerId": "x"}), "unknown kind"),
        (json.dumps({"kind": "cniCacheV1", "containerId": "x", "config": "%%%"}), "base64"),
        (json.dumps({"kind": "cniCacheV1", "containerId": "bad id!"}), "container ID"),
        (
            json.dumps(
                {
                    "kind": "cniCacheV1",
                    "containerId": "broken",
                    "networkName": "mynet",
                    "config": base64.b64encode(
                        b'{"type":"portmap","name":"n","capabilities":{"portMappings":true}}'
                    ).decode(),
                    "capabilityArgs": {"portMappings": [{"hostPort": 0, "containerPort": 1}]},
                    "result": {"ips": [{"address": "10.0.0.1/8"}]},
                }
            ),
            "hostPort",
        ),
    ],
    ids=["json", "kind", "base64", "id", "port"],
)
def test_cli_malformed_cache_file_is_skipped_with_a_warning_naming_it(tmp_path, content, words):
    """SPEC §5: one bad cache entry never stops the node's check (it did: exit 2)."""
    cache = _write_cache(tmp_path, "basic")
    bad = tmp_path / "results" / "mynet-broken-eth0"
    bad.write_text(content)
    done = run([*_snapshot_args("basic", cache), "-o", "json"])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["healthy"] is True
    warning = [line for line in done.stderr.splitlines() if str(bad) in line]
    assert len(warning) == 1 and words in warning[0] and "warning" in warning[0]


def test_cli_mapping_options_check_one_mapping(tmp_path):
    base = [
        "check",
        "--snapshot",
        str(FIXTURES / "basic.v4.save"),
        "--network",
        "mynet",
        "--ip",
        "10.88.0.5/16",
        "-p",
        "8080:80",
        "-p",
        "5353:53/udp",
    ]
    done = run([*base, "--container", "abc123"])
    assert done.returncode == 0, done.stderr
    assert "CNI-DN-70a29d9dc18bc4d652ea5" in done.stdout
    done = run([*base, "--container", "other", "-o", "json"])
    assert done.returncode == 1
    assert [p["kind"] for p in json.loads(done.stdout)["problems"]] == ["missing-chain"]
    assert_error(run([*base]), 2, "--container")
    assert_error(run(["check", "--no-snat"]), 2, "--container")


# --- against the kernel, with the real plugin ---------------------------------------------


def test_the_healthy_line_counts_chains_and_nftables_rule_sets_apart():
    """An nft-backed container has rules, not a chain: the line says what it compared."""
    from portmapctl.ops.check.problem import CheckResult
    from portmapctl.render import check_healthy_line

    def line(compared: int, nft: int) -> str:
        result = CheckResult((), (4, 6), "node", True, compared, nft_checked=nft)
        text = check_healthy_line(result)
        return text.split(" are in place")[0] if " are " in text else text.split(" with its")[0]

    assert check_healthy_line(CheckResult((), (4, 6), "node", True, 1)).endswith(
        "; nothing stale, orphaned or shadowed in IPv4 and IPv6"
    )

    assert line(3, 0) == "healthy: all 3 chains of the cached containers"
    assert line(2, 2) == "healthy: all 2 nftables rule sets of the cached containers"
    assert line(3, 1) == "healthy: all 2 chains and 1 nftables rule set of the cached containers"
    # One: not "all 1 chain ... are".
    assert line(1, 0) == "healthy: the chain of the cached container is in place,"
    assert line(1, 1) == "healthy: the nftables rule set of the cached container is in place,"


def test_on_an_empty_cache_the_stale_fix_is_no_gc_that_refuses(tmp_path):
    """An empty cache is no source of liveness (SPEC §3): plain `gc` refuses there
    (exit 2), so check must not give it as the fix of its stale chains: the fix says
    what gc must be told (JSON fix null, the prose in why), as with no cache at all."""
    (tmp_path / "results").mkdir()
    done = run(
        ["check", "-o", "json", "--cni-cache-dir", str(tmp_path),
         "--snapshot", str(EXAMPLES / "node.v4.save"), "--snapshot6", str(EXAMPLES / "node.v6.save")]
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    stale = [p for p in json.loads(done.stdout)["problems"] if p["kind"] == "stale"]
    assert stale
    for problem in stale:
        assert problem["fix"] is None
        assert "portmapctl gc --valid-attachments FILE" in problem["why"]


def test_a_missing_chains_detail_names_each_ports_host_ip():
    """One port on every address and on one host IP: the detail said
    `tcp/8080->[fd00:77::5]:80, tcp/8080->[fd00:77::5]:80`, the same text twice
    (helper-176)."""
    import ipaddress

    from portmapctl.core.mapping import MappingConfig, PortMapping
    from portmapctl.ops.check.hints import _config_ports

    config = MappingConfig(
        "mynet",
        "abc123",
        (ipaddress.ip_interface("10.88.0.5/16"), ipaddress.ip_interface("fd00:77::5/64")),
        (PortMapping(8080, 80), PortMapping(8080, 80, host_ip="2001:db8::1")),
    )
    assert _config_ports(config, 6) == (
        "tcp/8080->[fd00:77::5]:80, tcp/[2001:db8::1]:8080->[fd00:77::5]:80"
    )
    assert _config_ports(config, 4) == "tcp/8080->10.88.0.5:80"


def test_a_chain_of_no_known_container_is_named_in_the_table(tmp_path):
    """A per-container chain no rule names (an orphan an admin or a DEL cut short left)
    showed `-` under CONTAINER and "no CNI cache entry for an unknown container and
    nothing enters it; it maps tcp/9999": at 80 columns (the chain is in `-o wide`
    alone) nothing said which chain. As gc's table, CONTAINER names the chain then;
    JSON keeps `container_id` null."""
    orphan = "CNI-DN-0123456789abcdef01234"
    dump = (
        (EXAMPLES / "node.v4.save")
        .read_text()
        .replace(
            "COMMIT\n",
            f":{orphan} - [0:0]\n"
            f"-A {orphan} -p tcp -m tcp --dport 9999 -j DNAT --to-destination 10.88.0.99:99\n"
            "COMMIT\n",
        )
    )
    (tmp_path / "v4.save").write_text(dump)
    argv = ["check", "--snapshot", str(tmp_path / "v4.save")]
    argv += ["--cni-cache-dir", str(EXAMPLES / "cni-cache")]
    done = run(argv)
    assert done.returncode == 1, done.stderr
    [row] = [line for line in done.stdout.splitlines() if "tcp/9999" in line]
    # By list's short form (render.table.chain_starts; whole with --no-trunc).
    assert row.split()[:3] == ["stale", "v4", orphan[:12]], row
    [whole] = [line for line in run([*argv, "--no-trunc"]).stdout.splitlines() if "9999" in line]
    assert whole.split()[:3] == ["stale", "v4", orphan], whole
    [problem] = [p for p in json.loads(run([*argv, "-o", "json"]).stdout)["problems"]
                 if p["chain"] == orphan]  # fmt: skip
    assert problem["container_id"] is None
    # A problem of the node's shared chains (no container either) stays `-`.
    (tmp_path / "empty.save").write_text(EMPTY_NAT)
    flushed = run(["check", "--snapshot", str(tmp_path / "empty.save"), *argv[3:]])
    rows = [line.split() for line in flushed.stdout.splitlines() if "missing-toplevel" in line]
    assert rows and all(row[2] == "-" for row in rows if row[0] == "missing-toplevel"), rows


@pytest.mark.parametrize("family, maps", [(4, "tcp/8080, tcp/9000"), (6, "tcp/8080, tcp/8443")])
def test_a_stale_chain_maps_only_the_ports_of_its_own_family(tmp_path, family, maps):
    """The plugin's entry rules name every port of the container in both families
    (`--dports 8080,8443,9000` in IPv4's, though `[::1]:8443` has rules in IPv6
    alone): a stale chain was said to map every one of them in each family, `it maps
    tcp/8080, tcp/8443, tcp/9000` for IPv4 whose chain DNATs no 8443. (With one
    family's table alone, such a port is undecided: said in a warning, not mapped.)"""
    cache = tmp_path / "cni"
    conf = rp.plugin_conf("mynet", ["10.88.0.9/16"], [{"hostPort": 7000, "containerPort": 70}])
    rp.write_cni_cache(cache, "mynet", "other1", "eth0", conf, [], ["10.88.0.9/16"])
    done = run(_snapshot_args("hostip-v6", str(cache)))
    assert done.returncode == 1, done.stderr
    [row] = [
        line for line in done.stdout.splitlines() if line.split()[:2] == ["stale", f"v{family}"]
    ]
    assert row.endswith(f"no CNI cache entry for mynet/abc123; it maps {maps}"), row
    alone = run(_snapshot_args("hostip-v6", str(cache))[:3] + ["--cni-cache-dir", str(cache)])
    [row] = [line for line in alone.stdout.splitlines() if line.split()[:2] == ["stale", "v4"]]
    assert row.endswith("it maps tcp/8080, tcp/9000") and "tcp/8443" in alone.stderr, row
