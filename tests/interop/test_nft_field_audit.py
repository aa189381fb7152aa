"""What a field audit against the real v1.9.1 plugin found, replayed: every test plays
a node in a fresh namespace with upstream's binary and runs `portmapctl` on it as an
operator would (temp CNI cache; never the machine's /var/lib/cni)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pmctl
import pytest
import realplugin as rp
import upstream
from test_nft_commands import (  # noqa: F401
    API,
    WEB,
    _container_rules,
    _delete_port_rule,
    _plugin_add,
    _pm,
    _pmctl,
    node,
)
from test_nft_migration import _both_rulesets, _debian_gone

from portmapctl.iptables.chains import chain_name

pytestmark = pytest.mark.netns


@pytest.fixture(autouse=True)
def _upstream_binaries() -> None:
    rp.require(upstream.available())


def _rules_of(ns: str, chain: str) -> list:
    return [
        obj["rule"]
        for obj in json.loads(upstream.ruleset_json(ns))["nftables"]
        if "rule" in obj
        and obj["rule"]["table"] == "cni_hostport"
        and obj["rule"]["chain"] == chain
    ]


# --- rules in hostports that are not the plugin's ---------------------------------------


def test_foreign_rules_in_hostports_are_no_stale_mappings(node: str, tmp_path: Path) -> None:
    """An admin's DNAT rules in hostports (no comment, a comment that is no container
    ID) were `stale` with fix `portmapctl gc`, which (rightly) keeps them: check stayed at
    exit 1 for ever. They name no container: no row, no problem, a note; gc keeps them."""
    _plugin_add(node, tmp_path, WEB)
    upstream.nft(node, "add", "rule", "ip", "cni_hostport", "hostports",
                 "tcp", "dport", "2222", "dnat", "to", "10.0.0.1:22")  # fmt: skip
    upstream.nft(node, "add", "rule", "ip", "cni_hostport", "hostports", "tcp", "dport",
                 "2223", "dnat", "to", "10.0.0.1:22", "comment", '"admin: ssh fwd"')  # fmt: skip
    before = _rules_of(node, "hostports")
    checked = _pmctl(node, tmp_path, "check", "-o", "json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert json.loads(checked.stdout)["problems"] == []
    assert checked.stderr.count("is not the plugin's") == 2
    listed = json.loads(_pmctl(node, tmp_path, "list", "-o", "json").stdout)["mappings"]
    assert {m["container_id"] for m in listed} == {"web1"}
    assert all(m["status"] == ["ok"] for m in listed)
    gc = _pmctl(node, tmp_path, "gc", "--yes", "--min-age", "0", "-o", "json")
    assert gc.returncode == 0 and json.loads(gc.stdout)["removed"] == []
    assert _rules_of(node, "hostports") == before


def test_a_foreign_rule_taking_a_containers_port_first_shadows_it(
    node: str, tmp_path: Path
) -> None:
    """Inserted before web1's rule for tcp/8080, an admin's rule gets the traffic: web1's
    mapping is `shadowed` by that rule (`handle N`), with no command as the fix (no
    command of ours deletes someone else's rule) and what to do in `why`."""
    _plugin_add(node, tmp_path, WEB)
    upstream.nft(node, "insert", "rule", "ip", "cni_hostport", "hostports",
                 "tcp", "dport", "8080", "dnat", "to", "10.0.0.1:22")  # fmt: skip
    (alien,) = [r for r in _rules_of(node, "hostports") if "comment" not in r]
    listed = json.loads(_pmctl(node, tmp_path, "list", "-o", "json").stdout)["mappings"]
    shadowed = [m for m in listed if "shadowed" in m["status"]]
    assert [(m["family"], m["protocol"], m["host_port"], m["shadowed_by"]) for m in shadowed] == [
        (4, "tcp", 8080, f"handle {alien['handle']}")
    ]
    checked = _pmctl(node, tmp_path, "check", "-o", "json")
    assert checked.returncode == 1
    (problem,) = json.loads(checked.stdout)["problems"]
    assert problem["kind"] == "shadowed" and problem["fix"] is None
    assert "not the plugin's" in problem["why"] and problem["container_id"] == "web1"


def test_a_counter_on_a_rule_taking_a_containers_port_first_is_no_condition(
    node: str, tmp_path: Path
) -> None:
    """A `counter` statement counts every packet and lets every one on: an admin's rule
    with one (the habit of anyone writing nft rules by hand) inserted before web1's
    takes tcp/8080 as the same rule without it does. It was read as a condition (the
    rule's JSON `{"counter": {"bytes": 0, ...}}` printed as one, in the HOST column and
    in check's note), so the rule claimed no port: web1's row said ok, check healthy,
    while every packet went to the admin's rule. The stale rule of a gone container
    with a counter, the same: no `if {"counter": ...}` on its row."""
    _plugin_add(node, tmp_path, WEB)
    upstream.nft(node, "insert", "rule", "ip", "cni_hostport", "hostports",
                 "tcp", "dport", "8080", "counter", "dnat", "to", "10.0.0.1:22")  # fmt: skip
    upstream.nft(node, "add", "rule", "ip", "cni_hostport", "hostports", "tcp", "dport",
                 "7070", "counter", "dnat", "to", "10.88.0.99:70", "comment", '"gone1"')  # fmt: skip
    (alien,) = [r for r in _rules_of(node, "hostports") if "comment" not in r]
    listed = json.loads(_pmctl(node, tmp_path, "list", "-o", "json").stdout)["mappings"]
    rows = {(m["container_id"], m["family"], m["protocol"], m["host_port"]): m for m in listed}
    web = rows[("web1", 4, "tcp", 8080)]
    assert (web["status"], web.get("shadowed_by")) == (["shadowed"], f"handle {alien['handle']}")
    gone = rows[("gone1", 4, "tcp", 7070)]
    assert (gone["status"], "conditions" in gone) == (["stale"], False)
    text = _pmctl(node, tmp_path, "list", "--no-trunc").stdout
    assert "counter" not in text, text
    checked = _pmctl(node, tmp_path, "check", "-o", "json")
    assert checked.returncode == 1
    kinds = {(p["kind"], p["container_id"]) for p in json.loads(checked.stdout)["problems"]}
    assert kinds == {("shadowed", "web1"), ("stale", "gone1")}
    # The note names the admin's rule as nft prints it, never its JSON.
    assert "tcp dport 8080 counter dnat to 10.0.0.1:22" in checked.stderr, checked.stderr
    assert "{" not in checked.stderr, checked.stderr


# --- a container in both backends -------------------------------------------------------

BOTH = ("both1", ["10.88.0.9/16"], [rp.port_mapping(8090, 90)])


def _run_steps(ns: str, why: str) -> None:
    """Every `command` in a problem's why, run in the node's namespace as a person would."""
    steps = [part.split("`")[0] for part in why.split("`")[1::2]]
    assert steps, why
    for step in steps:
        subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", step], check=True)


@pytest.mark.parametrize("cached", ["nftables", "iptables"])
def test_both_backends_says_how_to_remove_the_copy_the_config_does_not_use(
    node: str, tmp_path: Path, cached: str
) -> None:
    """v1.9.1 ADD of both1 with backend=iptables, then backend=nftables: its fix was
    `portmapctl gc`, which keeps both (the container is live). Now the fix is null and
    `why` holds the commands that remove the copy in the backend the cached config
    does not use; run, check is healthy and the plugin's CHECK of the cached config
    passes."""
    other = "iptables" if cached == "nftables" else "nftables"
    _plugin_add(node, tmp_path, BOTH, cached=False, backend=other)
    conf = _plugin_add(node, tmp_path, BOTH, backend=cached)
    checked = _pmctl(node, tmp_path, "check", "-o", "json")
    assert checked.returncode == 1
    (problem,) = json.loads(checked.stdout)["problems"]
    assert (problem["kind"], problem["container_id"], problem["fix"]) == (
        "both-backends", "both1", None,
    )  # fmt: skip
    why = problem["why"]
    if cached == "nftables":
        # Each copy under the plugin version that does not use it (a plugin before v1.6
        # ignores the key): both1's is v1.9.1's, so the iptables copy goes.
        assert "remove by hand the copy its plugin does not use" in why
        why = why.partition("With a plugin before v1.6")[0].partition("With v1.6 or later")[2]
    else:
        assert f"remove its {other} copy by hand" in why
    assert problem["rule"]
    gc = _pmctl(node, tmp_path, "gc", "--yes", "--min-age", "0", "-o", "json")
    assert json.loads(gc.stdout)["removed"] == []  # why gc was no fix
    _run_steps(node, why)
    after = _pmctl(node, tmp_path, "check", "-o", "json")
    assert after.returncode == 0, after.stdout + after.stderr
    upstream.run("v1.9.1", "CHECK", node, "both1", conf, check=True)
    in_nft = ("ip", "hostports", "both1") in _container_rules(node)
    assert in_nft == (cached == "nftables")
    assert ("CNI-DN-" in rp.save(node, 4)) == (cached == "iptables")


def test_a_container_in_both_backends_without_a_cni_cache_is_both_backends(
    node: str, tmp_path: Path
) -> None:
    """dbl1 mapped in both backends (Debian's 1.1.1 in iptables, then v1.9.1 with
    `"backend": "nftables"` in nftables: the same network, address and port), no CNI
    cache: `check` said "healthy: 1 portmap chain and 1 nftables rule set look sound",
    exit 0, while list showed the mapping twice, both ok. Live, one copy leaks at its
    plugin's DEL; gone, both are stale: wrong either way, so it is both-backends, with
    no command (no cache says which copy its plugin keeps). web1, on two networks one
    per backend (other addresses), is no double. Nothing is written: --repair leaves it,
    and gc, with no cache, still removes nothing it is not told is gone."""
    ports = [rp.port_mapping(8082, 80)]
    rp.run_plugin("ADD", node, "dbl1", rp.plugin_conf("mynet", ["10.88.0.7/16"], ports),
                  check=True)  # fmt: skip
    upstream.run("v1.9.1", "ADD", node, "dbl1", upstream.nft_conf("mynet", ["10.88.0.7/16"], ports),
                 check=True)  # fmt: skip
    rp.run_plugin("ADD", node, "web1", rp.plugin_conf("podman", ["10.88.0.5/16"], WEB[2][:1]),
                  check=True)  # fmt: skip
    two = upstream.nft_conf("net2", ["10.99.0.5/16"], [rp.port_mapping(9191, 91)])
    upstream.run("v1.9.1", "ADD", node, "web1", two, check=True)
    saved, nft_saved = rp.save(node, 4), upstream.ruleset_text(node)
    checked = _pmctl(node, tmp_path, "check", "-o", "json")
    assert checked.returncode == 1, checked.stdout + checked.stderr
    (problem,) = json.loads(checked.stdout)["problems"]
    assert (problem["kind"], problem["network"], problem["container_id"], problem["fix"]) == (
        "both-backends", "mynet", "dbl1", None,
    )  # fmt: skip
    assert "no CNI cache" in problem["detail"] and "--cni-cache-dir" in problem["why"]
    # Both copies: the chain, its entry rule, and the nftables rules.
    assert "-j CNI-DN-" in problem["rule"] and "--to-destination 10.88.0.7:80" in problem["rule"]
    assert 'dnat to 10.88.0.7:80 comment "dbl1"' in problem["rule"], problem["rule"]
    assert "10.88.0.5" not in problem["rule"] and "web1" not in problem["rule"]
    repaired = _pmctl(node, tmp_path, "check", "--repair")
    assert repaired.returncode == 1, repaired.stdout + repaired.stderr
    gc = _pmctl(node, tmp_path, "gc", "--yes", "--min-age", "0", "-o", "json")
    assert gc.returncode == 2, gc.stdout + gc.stderr  # nothing says which are live
    kept = _pmctl(node, tmp_path, "gc", "--yes", "--min-age", "0", "--keep", "dbl1",
                  "--keep", "web1", "-o", "json")  # fmt: skip
    assert json.loads(kept.stdout)["removed"] == [], kept.stdout + kept.stderr
    assert rp.strip_save_comments(rp.save(node, 4)) == rp.strip_save_comments(saved)
    assert upstream.ruleset_text(node) == nft_saved


# --- rules list could not read ----------------------------------------------------------


def test_every_containers_dnat_rule_has_a_row_and_check_and_gc_agree(
    node: str, tmp_path: Path
) -> None:
    """A port set had no row (yet gc removed it), an `iifname` rule was listed as
    `*:8080`. Now: one row per port of a set, a rule's own conditions on its rows
    (JSON `conditions`, the text's HOST column), and what list calls stale is what
    check calls stale and what gc removes. A conditional rule takes no port from a
    later one (it gets only some of the packets)."""
    _plugin_add(node, tmp_path, WEB)
    upstream.nft(node, "add", "rule", "ip", "cni_hostport", "hostports", "tcp", "dport",
                 "{ 7000, 7001 }", "dnat", "to", "10.0.0.1", "comment", '"weird1"')  # fmt: skip
    upstream.nft(node, "insert", "rule", "ip", "cni_hostport", "hostports", "iifname", "eth0",
                 "tcp", "dport", "8080", "dnat", "to", "10.0.0.2:80", "comment", '"weird2"')  # fmt: skip
    listed = json.loads(_pmctl(node, tmp_path, "list", "-o", "json").stdout)["mappings"]
    weird = {
        (m["container_id"], m["host_port"], m["container_port"], tuple(m.get("conditions", ())),
         tuple(m["status"]))
        for m in listed if m["container_id"] != "web1"
    }  # fmt: skip
    assert weird == {
        ("weird1", 7000, 7000, (), ("stale",)),
        ("weird1", 7001, 7001, (), ("stale",)),
        ("weird2", 8080, 80, ('iifname "eth0"',), ("stale",)),
    }
    assert all(m["status"] == ["ok"] for m in listed if m["container_id"] == "web1")
    text = _pmctl(node, tmp_path, "list", "--no-trunc").stdout
    assert '*:8080 if iifname "eth0"' in text
    checked = json.loads(_pmctl(node, tmp_path, "check", "-o", "json").stdout)["problems"]
    assert {(p["kind"], p["container_id"]) for p in checked} == {
        ("stale", "weird1"), ("stale", "weird2"),
    }  # fmt: skip
    gc = _pmctl(node, tmp_path, "gc", "--yes", "--min-age", "0", "-o", "json")
    removed = json.loads(gc.stdout)["removed"]
    assert {(c["container_id"], tuple(sorted(p["host_port"] for p in c["host_ports"])))
            for c in removed} == {("weird1", (7000, 7001)), ("weird2", (8080,))}  # fmt: skip
    assert _pmctl(node, tmp_path, "check").returncode == 0


# --- a cached config the nftables backend refuses ----------------------------------------


def test_a_cached_nftables_config_the_plugin_refuses_gets_no_nftables_rules(
    node: str, tmp_path: Path
) -> None:
    """`"backend": "nftables"` with iptables conditions: v1.9.1 refuses the config on
    every call, and Debian's 1.1.1 (which knows no `backend` key) made iptables rules of
    it. check called the container's nftables rules missing (exit 1) and check --repair
    wrote them: a container in both backends, rules its plugin never writes. Now the
    entry is one that cannot be read (one warning), its container live by name: check
    exits 0 and repair writes nothing."""
    cid, ips, ports = WEB
    conf = {**rp.plugin_conf("podman", ips, ports, conditions_v4=["-s", "10.0.0.0/8"]),
            "backend": "nftables"}  # fmt: skip
    refused = upstream.run("v1.9.1", "ADD", node, cid, conf)
    assert refused.returncode != 0 and "iptables-specific options [conditionsV4]" in refused.stdout
    rp.run_plugin("ADD", node, cid, conf, check=True)  # 1.1.1: iptables rules
    rp.write_cni_cache(tmp_path, "podman", cid, "eth0", conf, ports, ips)
    _plugin_add(node, tmp_path, API)  # a healthy nft-backed container beside it
    before = upstream.ruleset_text(node)
    checked = _pmctl(node, tmp_path, "check", "-o", "json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert json.loads(checked.stdout)["problems"] == []
    [warning] = checked.stderr.splitlines()
    assert "iptables-specific options [conditionsV4]" in warning and "web1" in warning
    repaired = _pmctl(node, tmp_path, "check", "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert upstream.ruleset_text(node) == before
    assert ("ip", "hostports", cid) not in _container_rules(node)


# --- nft that cannot be used -------------------------------------------------------------


def test_flush_udp_without_nft_keeps_the_flows_of_a_cached_nftables_container(
    node: str, tmp_path: Path
) -> None:
    """No usable nft (a DaemonSet image without nftables): flush-udp --stale-only read
    the node as having no nftables mappings, called web1's live flow, DNATed by the
    plugin's nftables rule to web1, 'DNATed, but nothing maps this port now' and deleted
    it (exit 0); without --port it said 'no mapped UDP host ports'. Where a cached
    config says nftables it now stops as check and gc do: exit 3, one line, nothing
    deleted. A --port flush without --stale-only needs no mappings and still runs."""
    _plugin_add(node, tmp_path, WEB)  # 5353/udp to 10.88.0.5:53
    subprocess.run(["ip", "-n", node, "addr", "add", "192.0.2.1/32", "dev", "lo"], check=True)
    flow = ["-p", "udp", "-s", "192.0.2.9", "-d", "192.0.2.1", "--sport", "40001", "--dport",
            "5353", "--reply-src", "10.88.0.5", "--reply-dst", "192.0.2.9",
            "--reply-port-src", "53", "--reply-port-dst", "40001"]  # fmt: skip
    subprocess.run(["ip", "netns", "exec", node, "conntrack", "-I", *flow, "-t", "120"],
                   check=True, capture_output=True)  # fmt: skip
    no_nft = [os.path.realpath(shutil.which("nft") or "/usr/sbin/nft")]
    where = ["--netns", node, "--cni-cache-dir", str(tmp_path)]
    for args in (["--port", "5353", "--stale-only"], ["--stale-only"], []):
        done = pmctl.run(["flush-udp", *args, *where], hide=no_nft)
        pmctl.assert_error(done, 3, "nft not found")
    listed = subprocess.run(["ip", "netns", "exec", node, "conntrack", "-L", *flow],
                            capture_output=True, text=True)  # fmt: skip
    assert "sport=40001" in listed.stdout, listed.stderr
    given = pmctl.run(["flush-udp", "--port", "5353", "--dry-run", "-o", "json", *where],
                      hide=no_nft)  # fmt: skip
    assert given.returncode == 0, given.stderr
    assert [d["sport"] for d in json.loads(given.stdout)["deleted"]] == [40001]


def test_add_dry_run_without_nft_on_a_node_with_the_plugins_tables_plans_nothing(
    node: str, tmp_path: Path
) -> None:
    """An nftables add's dry run where nft cannot be used and the kernel holds the
    plugin's tables: exit 3, one line, as the add itself. Its transaction's read is now
    add's only one (ops/node.py converge_nft): read as no table, it printed a plan that
    made the table afresh, exit 0."""
    _plugin_add(node, tmp_path, WEB)
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(upstream.nft_conf("podman", ["10.88.0.9/16"],
                                                 [rp.port_mapping(8081, 80)])))  # fmt: skip
    no_nft = [os.path.realpath(shutil.which("nft") or "/usr/sbin/nft")]
    args = ["add", "--container", "mine1", "--cni-config", str(path), "--netns", node,
            "--cni-cache-dir", str(tmp_path)]  # fmt: skip
    for extra in (["--dry-run"], []):
        pmctl.assert_error(pmctl.run([*args, *extra], hide=no_nft), 3, "nft not found")
    dry = pmctl.run([*args, "--dry-run"])
    assert dry.returncode == 0, dry.stderr
    assert "add rule ip cni_hostport hostports" in dry.stdout, dry.stdout


def test_list_without_nft_on_a_node_whose_cache_says_nftables_stops_as_check_does(
    node: str, tmp_path: Path
) -> None:
    """SPEC §5: a rule table that cannot be read stops a command, never "no chains
    found". With no usable nft, list said "no portmap chains found" (exit 0, with a
    warning on stderr) on a node whose cached container's rules are in nftables, where
    check and gc stop: exit 3, one line. With nft, it lists the mapping."""
    _plugin_add(node, tmp_path, WEB)
    where = ["--netns", node, "--cni-cache-dir", str(tmp_path)]
    no_nft = [os.path.realpath(shutil.which("nft") or "/usr/sbin/nft")]
    for command in (["list"], ["list", "-o", "json"], ["check"]):
        pmctl.assert_error(pmctl.run([*command, *where], hide=no_nft), 3, "nft not found")
    listed = json.loads(pmctl.ok(["list", "-o", "json", *where]))
    assert {m["host_port"] for m in listed["mappings"]} == {8080, 5353}  # (WEB's tcp, udp)


def test_an_admins_masquerade_rule_with_a_word_for_comment_is_never_gcs(
    node: str, tmp_path: Path
) -> None:
    """`masquerading` rules of shapes the plugin never writes (a prefix, flags), their
    comment a word CNI would take for an ID: gc deleted them as a dead container's
    (helper-138). The plugin's are `ip saddr A ip daddr B masquerade`, one address
    each; these are someone else's, as a DNAT of unknown shape already was."""
    _plugin_add(node, tmp_path, WEB)
    for rule in ("ip saddr 10.9.9.0/24 masquerade comment foreign3",
                 "ip saddr 10.9.9.1 ip daddr 10.9.9.2 masquerade random,persistent comment foreign4"):  # fmt: skip
        upstream.nft(node, "add", "rule", "ip", "cni_hostport", "masquerading", *rule.split())
    before = _rules_of(node, "masquerading")
    for args in (["gc", "--yes", "--min-age", "0", "-o", "json"], ["check", "-o", "json"]):
        done = _pmctl(node, tmp_path, *args)
        assert done.returncode == 0, (args, done.stdout + done.stderr)
        if args[0] == "gc":
            assert json.loads(done.stdout)["removed"] == []
    assert _rules_of(node, "masquerading") == before


def test_a_debian_plugins_chain_under_a_nftables_config_is_judged_where_it_is(
    node: str, tmp_path: Path
) -> None:
    """Debian's 1.1.1 ignores `"backend": "nftables"` (an unknown key to it) and writes
    the container's chain in iptables, where its CHECK and DEL look. Judged by the key,
    the container was `nft-missing-table`/`nft-missing-rules` on every run, with
    `--repair` as the fix, and a repair refused (exit 1): a cron check paged on a
    healthy node. The evidence says where its plugin writes: it is judged in iptables,
    healthy, with a warning that the key is ignored; the repair has nothing to do, makes
    nothing in nftables, and the plugin's CHECK still passes. Beside it, a container
    v1.9.1 added since (the plugin upgraded) is kept in nftables, as its config says."""
    cid, ips, ports = WEB[0], ["10.88.0.5/16"], WEB[2]
    conf = upstream.nft_conf("podman", ips, ports)
    rp.run_plugin("ADD", node, cid, conf, check=True)  # Debian's: iptables
    rp.write_cni_cache(tmp_path, "podman", cid, "eth0", conf, ports, ips)
    _plugin_add(node, tmp_path, API)  # v1.9.1: nftables
    saved, nft_saved = rp.save(node, 4), _rules_of(node, "hostports")
    checked = _pmctl(node, tmp_path, "check", "-o", "json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert json.loads(checked.stdout)["problems"] == []
    assert "podman/web1" in checked.stderr and "ignores the key" in checked.stderr
    # A note, not a warning: it is said on every run of a healthy node (helper-175).
    assert "warning" not in checked.stderr
    # One mapping, as a script asks (its cached config says where): the same answer.
    one = ("check", "--network", "podman", "--container", cid, "--ip", ips[0],
           "-p", "8080:80/tcp", "-p", "5353:53/udp")  # fmt: skip
    # Its config as the plugin was handed it, key and all (--cni-config): the same.
    (tmp_path / "conf.json").write_text(json.dumps(conf))
    given = ("check", "--container", cid, "--cni-config", str(tmp_path / "conf.json"))
    for args in (one, (*one, "--repair"), (*one, "--backend", "iptables", "--repair"),
                 given, (*given, "--repair")):  # fmt: skip
        done = _pmctl(node, tmp_path, *args)
        assert done.returncode == 0, (args, done.stdout + done.stderr)
        # (Under --backend iptables it is where it was asked for: nothing to say.)
        assert ("ignores the key" in done.stderr) == ("--backend" not in args), repr(args)
    repaired = _pmctl(node, tmp_path, "check", "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "ignores the key" in repaired.stderr
    assert f'comment "{cid}"' not in upstream.ruleset_text(node)
    assert _rules_of(node, "hostports") == nft_saved
    assert rp.strip_save_comments(rp.save(node, 4)) == rp.strip_save_comments(saved)
    for done in rp.run_check(node, cid, conf):
        assert done.returncode == 0, done.stdout + done.stderr


def test_a_debian_plugins_chain_under_a_nftables_config_is_repaired_in_iptables(
    node: str, tmp_path: Path
) -> None:
    """The same container with a rule of its chain deleted: check names it
    (missing-rules, in iptables), and --repair puts the rule back in iptables, where
    its plugin's CHECK then passes and its DEL removes everything; nothing is made in
    nftables (before, a repair found every rule missing from nftables and, until
    97c6e41, wrote a copy there that outlived the plugin's DEL)."""
    cid, ips, ports = WEB[0], ["10.88.0.5/16"], WEB[2]
    conf = upstream.nft_conf("podman", ips, ports)
    rp.run_plugin("ADD", node, cid, conf, check=True)  # Debian's: iptables
    rp.write_cni_cache(tmp_path, "podman", cid, "eth0", conf, ports, ips)
    saved = rp.save(node, 4)
    chain = next(line.split()[1] for line in saved.splitlines() if line.startswith("-A CNI-DN-"))
    dnat = next(
        line for line in saved.splitlines()
        if line.startswith(f"-A {chain} ") and "--dport 8080" in line and "DNAT" in line
    )  # fmt: skip
    rp.iptables(node, ["-t", "nat", "-D", *shlex.split(dnat)[1:]])
    checked = _pmctl(node, tmp_path, "check", "-o", "json")
    assert checked.returncode == 1, checked.stdout + checked.stderr
    kinds = {(p["kind"], p["backend"]) for p in json.loads(checked.stdout)["problems"]}
    assert kinds == {("missing-rules", "iptables")}, kinds
    repaired = _pmctl(node, tmp_path, "check", "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "cni_hostport" not in upstream.ruleset_text(node)
    for done in rp.run_check(node, cid, conf):
        assert done.returncode == 0, done.stdout + done.stderr
    rp.run_plugin("DEL", node, cid, conf, check=True)
    assert "CNI-DN-" not in rp.save(node, 4)


def test_a_debian_plugins_chain_under_a_nftables_config_gets_no_copy_under_backend_nftables(
    node: str, tmp_path: Path
) -> None:
    """Debian's 1.1.1 added web1 under a `"backend": "nftables"` config (cached so; its
    chain in iptables, where its CHECK and DEL look). `check --repair --backend
    nftables` (of the node, and of web1's mapping) printed "repaired: IPv4
    nft-missing-rules nft:hostports (podman/web1)", exit 0, and wrote nftables rules for
    web1: mapped in both backends, a copy its plugin never deletes. Under --backend
    nftables no iptables is read, so nothing asked whether the plugin had ignored the
    key. The mapping's repair is refused as add's is (one line, exit 2, nothing
    written); the node's repairs the rest (new1's deleted rule) and leaves web1 where its
    plugin keeps it, as the plain repair does."""
    cid, ips, ports = WEB[0], ["10.88.0.5/16"], WEB[2]
    conf = upstream.nft_conf("podman", ips, ports)
    rp.run_plugin("ADD", node, cid, conf, check=True)  # Debian's: iptables
    rp.write_cni_cache(tmp_path, "podman", cid, "eth0", conf, ports, ips)
    new = ("new1", ["10.88.0.8/16"], [rp.port_mapping(8088, 80)])
    _plugin_add(node, tmp_path, new)  # v1.9.1: nftables
    (lost,) = [r for r in _rules_of(node, "hostports") if r["comment"] == "new1"]
    saved, nft_saved = rp.save(node, 4), _rules_of(node, "hostports")
    upstream.nft(node, "delete", "rule", "ip", "cni_hostport", "hostports",
                 "handle", str(lost["handle"]))  # fmt: skip
    nft_before = upstream.ruleset_text(node)
    one = ("check", "--backend", "nftables", "--network", "podman", "--container", cid,
           "--ip", ips[0], "-p", "8080:80/tcp", "-p", "5353:53/udp")  # fmt: skip
    refused = _pmctl(node, tmp_path, *one, "--repair")
    pmctl.assert_error(refused, 2, "podman/web1: its chain", "is in iptables",
                       'ignores its cached "backend": "nftables"', "--backend nftables")  # fmt: skip
    assert upstream.ruleset_text(node) == nft_before
    checked = _pmctl(node, tmp_path, *one)
    assert "where --repair writes nothing for it" in checked.stderr, checked.stderr
    node_check = _pmctl(node, tmp_path, "check", "--backend", "nftables", "-o", "json")
    problems = json.loads(node_check.stdout)["problems"]
    assert {p["container_id"] for p in problems} == {"new1"}, problems
    repaired = _pmctl(node, tmp_path, "check", "--repair", "--backend", "nftables")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "podman/web1" in repaired.stderr and "ignores the key" in repaired.stderr
    assert "repaired: IPv4 nft-missing-rules nft:hostports (podman/new1)" in repaired.stderr
    assert "nft:hostports (podman/web1)" not in repaired.stderr, repaired.stderr
    assert f'comment "{cid}"' not in upstream.ruleset_text(node)
    assert len(_rules_of(node, "hostports")) == len(nft_saved)
    assert rp.strip_save_comments(rp.save(node, 4)) == rp.strip_save_comments(saved)
    for done in rp.run_check(node, cid, conf):
        assert done.returncode == 0, done.stdout + done.stderr


def test_a_cni_config_whose_key_is_not_where_the_plugin_keeps_it_gets_no_copy(
    node: str, tmp_path: Path
) -> None:
    """A `--cni-config` naming a backend is checked there: Debian's 1.1.1 added web1
    under a `"backend": "nftables"` config (cached so; its chain in iptables), and
    `check --repair --container web1 --cni-config c.json --backend nftables` (c.json
    that config) printed "repaired: IPv4 nft-missing-rules nft:hostports
    (podman/web1)", exit 0, writing a copy its plugin never deletes; so did one whose
    key says "iptables" for new1, which v1.9.1 keeps in nftables (an iptables chain for
    it). Only --backend given with a keyless config was asked where the plugin keeps
    the container. Both are refused now as that is (one line, exit 2, nothing written);
    their dry checks say so in a note, and no fix names --repair."""
    cid, ips, ports = WEB[0], ["10.88.0.5/16"], WEB[2]
    conf = upstream.nft_conf("podman", ips, ports)
    rp.run_plugin("ADD", node, cid, conf, check=True)  # Debian's: iptables
    rp.write_cni_cache(tmp_path, "podman", cid, "eth0", conf, ports, ips)
    new1 = _plugin_add(node, tmp_path, ("new1", ["10.88.0.8/16"], [rp.port_mapping(8088, 80)]))
    (tmp_path / "c.json").write_text(json.dumps(conf))
    (tmp_path / "i.json").write_text(json.dumps({**new1, "backend": "iptables"}))
    saved, nft_before = rp.strip_save_comments(rp.save(node, 4)), upstream.ruleset_text(node)
    web1 = ("check", "--container", cid, "--cni-config", str(tmp_path / "c.json"),
            "--backend", "nftables")  # fmt: skip
    ignored = 'ignores its cached "backend": "nftables"'
    refused = _pmctl(node, tmp_path, *web1, "--repair")
    pmctl.assert_error(refused, 2, "podman/web1: its chain", ignored, "--backend nftables", "copy")
    new = ("check", "--container", "new1", "--cni-config", str(tmp_path / "i.json"))
    told = 'its config\'s "backend": "iptables"'
    for args in (new, (*new, "--backend", "iptables")):
        refused = _pmctl(node, tmp_path, *args, "--repair")
        cached = 'podman/new1: its cached config says "backend": "nftables"'
        said = "--backend iptables" if "--backend" in args else told
        pmctl.assert_error(refused, 2, cached, said, "copy")
    for args, where in ((web1, ignored), (new, "as " + told + " says")):
        checked = _pmctl(node, tmp_path, *args)
        assert "where --repair writes nothing for it" in checked.stderr, checked.stderr
        assert where in checked.stderr and "--repair" not in checked.stdout, checked.stdout
    assert upstream.ruleset_text(node) == nft_before
    assert rp.strip_save_comments(rp.save(node, 4)) == saved
    for done in rp.run_check(node, cid, conf):
        assert done.returncode == 0, done.stdout + done.stderr


def test_a_chain_in_the_other_iptables_flavour_gets_no_nftables_copy_from_check_repair(
    node: str, tmp_path: Path
) -> None:
    """Debian's 1.1.1 ran with iptables-legacy first on its PATH (the `iptables`
    alternative switched to nft since): leg1's chain (config "backend": "nftables",
    cached so) and leg2's (no key, no cache entry) are in the legacy tables. `check
    --repair` of leg1's mapping (no --backend, and --backend nftables), of leg2's under
    --backend nftables, and of the node under --backend nftables each wrote an
    nftables copy, exit 0: the chain was looked for in iptables-nft alone (add looks in
    both flavours since aeb8760). None is written now: the mappings' --backend nftables
    repairs are refused (exit 2), leg1's own is left as a split brain (exit 1), the
    node's judges leg1 in iptables (exit 0)."""
    rp.require(rp.mode_available("legacy"))
    ports = [rp.port_mapping(8080, 80)]
    conf = upstream.nft_conf("podman", ["10.88.0.5/16"], ports)
    rp.run_plugin("ADD", node, "leg1", conf, mode="legacy", check=True)
    rp.write_cni_cache(tmp_path, "podman", "leg1", "eth0", conf, ports, ["10.88.0.5/16"])
    plain = rp.plugin_conf("podman", ["10.88.0.6/16"], [rp.port_mapping(8081, 80)])
    rp.run_plugin("ADD", node, "leg2", plain, mode="legacy", check=True)
    legacy = rp.strip_save_comments(rp.save(node, 4, "legacy"))
    one = ("check", "--repair", "--network", "podman", "--container")
    leg1 = (*one, "leg1", "--ip", "10.88.0.5/16", "-p", "8080:80")
    leg2 = (*one, "leg2", "--ip", "10.88.0.6/16", "-p", "8081:80")
    for args in ((*leg1, "--backend", "nftables"), (*leg2, "--backend", "nftables")):
        done = _pmctl(node, tmp_path, *args)
        pmctl.assert_error(done, 2, "its chain CNI-DN-", "--backend nftables", "copy")
    done = _pmctl(node, tmp_path, *leg1)
    assert done.returncode == 1 and "legacy tables" in done.stderr, done.stdout + done.stderr
    done = _pmctl(node, tmp_path, "check", "--repair", "--backend", "nftables")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "podman/leg1" in done.stderr and "ignores the key" in done.stderr
    assert "cni_hostport" not in upstream.ruleset_text(node)
    assert rp.strip_save_comments(rp.save(node, 4, "legacy")) == legacy
    assert "CNI-DN-" not in rp.save(node, 4, "nft")


def test_a_cached_condition_nft_would_run_as_more_than_a_match_stops_no_repair(
    node: str, tmp_path: Path
) -> None:
    """v1.9.1 writes conditions into its entry as given: `ip saddr 10.0.0.0/8 # lab
    only` comments out the jump, and its ADD of api1 left IPv4's prerouting and output
    without one (every IPv4 host port dark; check: nft-missing-entry). The repair
    refused that `#` (it would do the same to the entry we write) and exited 2, so
    nothing of the node was repaired, on every run. One bad record stops nothing: the
    other containers' rules are repaired; the entry, which takes the newest ADD's
    conditions, is left as it is (another container's, none here, would open every
    host port wider than api1's ADD asked: helper-175's review), said in a line, and
    api1 is named as not repaired (exit 1)."""
    _plugin_add(node, tmp_path, WEB)
    _plugin_add(node, tmp_path, API, conditions_v4=["ip saddr 10.0.0.0/8 # lab only"])
    hostports = _rules_of(node, "hostports")
    entries = {c: _rules_of(node, c) for c in ("prerouting", "output")}
    checked = _pmctl(node, tmp_path, "check", "-o", "json")
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert {(p["kind"], p["family"]) for p in json.loads(checked.stdout)["problems"]} == {
        ("nft-missing-entry", 4)
    }
    # web1 and api1 lose a rule each: web1's comes back; nothing is made for api1.
    for rule in hostports:
        if rule["family"] == "ip" and rule["comment"] in ("api1", "web1"):
            if rule["comment"] == "api1" or "udp" in json.dumps(rule["expr"]):
                upstream.nft(node, "delete", "rule", "ip", "cni_hostport", "hostports",
                             "handle", str(rule["handle"]))  # fmt: skip
    repaired = _pmctl(node, tmp_path, "check", "--repair")
    assert repaired.returncode == 1, repaired.stdout + repaired.stderr
    assert "could not repair IPv4 podman/api1 (hostports): refusing nftables" in repaired.stderr
    assert "IPv4 prerouting and output were left as they are" in repaired.stderr
    assert {c: _rules_of(node, c) for c in ("prerouting", "output")} == entries
    left = [(r["family"], r["comment"]) for r in _rules_of(node, "hostports")]
    assert sorted(left) == sorted(
        (r["family"], r["comment"]) for r in hostports if r["comment"] != "api1"
    )


# api1's conditions the repair refuses (a `#` outside quotes: nft would run the rest of
# its line as a comment); v1.9.1 wrote its IPv4 entry without the jump.
LAB_ONLY = "ip saddr 10.0.0.0/8 # lab only"


def _refused_node(node: str, cache: Path, beside: str) -> None:
    """api1 added by v1.9.1 with LAB_ONLY, the newest cached ADD: alone, after web1
    (healthy, its rules the repair writes), or after deb1, in doubt (Debian's 1.1.1
    under `"backend": "nftables"`, a key it ignores; its chain and entry rule gone;
    deb2, added so and whole, shows the node's plugin ignores the key)."""
    if beside == "web1":
        _plugin_add(node, cache, WEB)
    elif beside == "in-doubt":
        _debian_gone(node, cache, "deb1", "10.88.0.31/16", 8031, lose=True)
        _debian_gone(node, cache, "deb2", "10.88.0.32/16", 8032, lose=False)
    _plugin_add(node, cache, API, conditions_v4=[LAB_ONLY])


def _problems(done) -> list:
    return json.loads(done.stdout)["problems"]


def _offered(done) -> list:
    """(kind, family, chain, container) of the rows whose fix is a command."""
    return sorted(
        (p["kind"], p["family"], p["chain"], p["container_id"]) for p in _problems(done) if p["fix"]
    )


def _repair_line(stderr: str, start: str) -> str:
    """What follows `start` on the repair's stderr line that holds it."""
    (line,) = [line for line in stderr.splitlines() if start in line]
    return line.split(start, 1)[1]


@pytest.mark.parametrize("beside", ["alone", "web1", "in-doubt"])
def test_an_entry_whose_newest_add_is_refused_is_offered_no_repair(
    node: str, tmp_path: Path, beside: str
) -> None:
    """api1, the newest cached ADD of IPv4, has conditions the repair refuses: it
    leaves IPv4's prerouting and output as they are ("IPv4 prerouting and output were
    left as they are ..."), whatever else is cached. With the entry flushed (`nft flush
    chain ip cni_hostport prerouting`), both nft-missing-entry rows offered `check
    --repair`, which wrote nothing, and the next check offered it again: a cron job's
    loop. They name no fix and say why in the repair's words."""
    _refused_node(node, tmp_path, beside)
    upstream.nft(node, "flush", "chain", "ip", "cni_hostport", "prerouting")
    checked = _pmctl(node, tmp_path, "check", "-o", "json")
    assert checked.returncode == 1, checked.stdout + checked.stderr
    entry = [p for p in _problems(checked) if p["kind"] == "nft-missing-entry"]
    assert sorted((p["family"], p["chain"]) for p in entry) == [(4, "output"), (4, "prerouting")]
    assert _offered(checked) == []
    if beside == "in-doubt":
        doubted = [p for p in _problems(checked) if p["container_id"] == "deb1"]
        assert doubted and all("cannot be told" in p["why"] for p in doubted), doubted
    before = _both_rulesets(node)
    repaired = _pmctl(node, tmp_path, "check", "--repair", "-o", "json")
    assert repaired.returncode == 1, repaired.stdout + repaired.stderr
    assert _both_rulesets(node) == before
    held = _repair_line(repaired.stderr, "IPv4 prerouting and output were left as they are: they ")
    assert all(p["why"].endswith(f"prerouting and output {held}") for p in entry), entry
    again = _pmctl(node, tmp_path, "check", "-o", "json")
    assert _problems(again) == _problems(checked)


@pytest.mark.parametrize("beside", ["alone", "web1", "in-doubt"])
def test_a_container_whose_conditions_are_refused_wants_nothing_of_the_table(
    node: str, tmp_path: Path, beside: str
) -> None:
    """api1's conditions are refused: the repair writes nothing for it (`could not
    repair IPv4 podman/api1 (hostports): refusing nftables condition ...`). Counted as
    wanting the table, it kept the fix of the table's rows: with `nft delete table ip
    cni_hostport`, nft-missing-table and api1's own nft-missing-rules both offered
    `check --repair`, which wrote nothing, and the next check offered both again (so a
    lost chain beside a container in doubt). Its rows, and those of the table it alone
    wants, name no fix and say why; beside web1, whose rules the repair does write, the
    table keeps its fix and is made (its entry left as it is: api1 is the newest ADD)."""
    _refused_node(node, tmp_path, beside)
    if beside == "in-doubt":
        # (A lost chain: deb1's backend stays in doubt, api1's rules stay.)
        upstream.nft(node, "flush", "chain", "ip", "cni_hostport", "hostports_all")
        upstream.nft(node, "delete", "chain", "ip", "cni_hostport", "hostip_hostports")
    else:
        upstream.nft(node, "delete", "table", "ip", "cni_hostport")
    checked = _pmctl(node, tmp_path, "check", "-o", "json")
    assert checked.returncode == 1, checked.stdout + checked.stderr
    table = [p for p in _problems(checked) if p["container_id"] is None and p["family"] == 4]
    kinds = {p["kind"] for p in table}
    assert kinds >= ({"nft-missing-chain"} if beside == "in-doubt" else {"nft-missing-table"})
    written = [
        ("nft-missing-rules", 4, "hostports", "web1"),
        ("nft-missing-table", 4, None, None),
    ]
    assert _offered(checked) == (written if beside == "web1" else [])
    before = _both_rulesets(node)
    repaired = _pmctl(node, tmp_path, "check", "--repair", "-o", "json")
    assert repaired.returncode == 1, repaired.stdout + repaired.stderr
    if beside == "web1":
        fixed = json.loads(repaired.stdout)["fixed"]
        assert sorted((p["kind"], p["family"], p["chain"], p["container_id"]) for p in fixed) == (
            written
        )
        ip = [r for r in _rules_of(node, "hostports") if r["family"] == "ip"]
        assert {r["comment"] for r in ip} == {"web1"}
        assert [r for c in ("prerouting", "output") for r in _rules_of(node, c)
                if r["family"] == "ip"] == []  # fmt: skip
    else:
        assert _both_rulesets(node) == before
    if beside != "in-doubt":
        refused = _repair_line(repaired.stderr, "could not repair IPv4 podman/api1 (hostports): ")
        own = [p for p in _problems(checked) if p["container_id"] == "api1"]
        assert own and all(p["why"].endswith(refused) for p in own), own
        if beside == "alone":
            assert all(f"podman/api1: {refused}" in p["why"] for p in table), table
    again = _pmctl(node, tmp_path, "check", "-o", "json")
    assert _offered(again) == []
    assert _problems(again) == _problems(repaired)


@pytest.mark.parametrize("dual", ["torn-dual", "refused-dual"])
def test_a_table_a_refused_and_a_torn_down_container_alone_want_offers_no_repair(
    node: str, tmp_path: Path, dual: str
) -> None:
    """api1's conditions refused, then del1 (v1.9.1, "backend": "nftables") being torn
    down (its namespace there, its addresses gone: a DEL under way), one of them
    dual-stack; `nft delete table ip cni_hostport`. The repair writes nothing for
    either: nft-missing-table offered `check --repair`, which wrote nothing, and the
    next check offered it again (found by tests/unit/test_repair_property.py). Each
    judge left one of them out: the refused one (nft_table_rows.unwanted_left) and the
    torn-down one (torn_down.toplevel_fixes), and the other kept the row offered. (Both
    IPv4-only, nothing of either is left in nftables to follow them there: in doubt.)
    The row names no fix and says why in the repair's words, both of them."""
    ips = {"api1": ["10.88.0.6/16"], "del1": ["10.88.0.7/16"]}
    ips["del1" if dual == "torn-dual" else "api1"].append("fd00:88::77/64")
    rp.hold_addresses(rp.container_netns(), ips["api1"])
    _plugin_add(node, tmp_path, ("api1", ips["api1"], [_pm(8060, 80)]),
                conditions_v4=[LAB_ONLY])  # fmt: skip
    torn = rp.create_netns("pmt-h351-torn")
    try:
        conf = _plugin_add(node, tmp_path, ("del1", ips["del1"], [_pm(8070, 80)]), cached=False)
        rp.write_cni_cache(tmp_path, "podman", "del1", "eth0", conf, [_pm(8070, 80)],
                           ips["del1"], netns=f"/run/netns/{torn}")  # fmt: skip
        upstream.nft(node, "delete", "table", "ip", "cni_hostport")
        checked = _pmctl(node, tmp_path, "check", "-o", "json")
        assert checked.returncode == 1, checked.stdout + checked.stderr
        table = [p for p in _problems(checked) if p["kind"] == "nft-missing-table"]
        assert [p["family"] for p in table] == [4], _problems(checked)
        assert _offered(checked) == []  # (before: the table's row)
        before = _both_rulesets(node)
        repaired = _pmctl(node, tmp_path, "check", "--repair", "-o", "json")
        assert repaired.returncode == 1, repaired.stdout + repaired.stderr
        assert _both_rulesets(node) == before
        refused = _repair_line(repaired.stderr, "could not repair IPv4 podman/api1 (hostports): ")
        dying = _repair_line(repaired.stderr, "could not repair IPv4 podman/del1 (hostports): ")
        assert "; --repair would leave it as it is: " in table[0]["why"], table
        assert dying in table[0]["why"] and f"podman/api1: {refused}" in table[0]["why"], table
        again = _pmctl(node, tmp_path, "check", "-o", "json")
        assert _offered(again) == []
        assert _problems(again) == _problems(checked)
    finally:
        rp.delete_netns(torn)


@pytest.mark.parametrize(
    "fate, order",
    [("zombie", "first"), ("zombie", "last"), ("unreadable", "first")],
)
def test_a_gone_containers_entry_beside_a_container_in_doubt_offers_no_repair(
    node: str, tmp_path: Path, fate: str, order: str
) -> None:
    """zomb1 (v1.9.1, IPv4-only, LAB_ONLY, one mapping for hostIP 2001:db8::10), its
    namespace gone (or its cache entry cut short), beside deb1, live, added by Debian's
    1.1.1 under `"backend": "nftables"` (a key it ignores: its chain in iptables),
    before or after it; nothing cut. v1.9.1's ADD leaves the ip table with
    prerouting/output holding LAB_ONLY alone (its `#` takes the jump), zomb1's
    masquerade rules, no DNAT rule, no ip6 table. deb1 is in doubt (the table is not
    as the plugin leaves it), zomb1 gc's: the repair writes nothing for either. The
    nft-missing-entry rows offered `check --repair` on every run (zomb1's `incomplete`
    row, whose fix is gc's, counted as a need of the table) and it wrote nothing (found
    by tests/unit/test_repair_property.py). They name no fix: deb1's warning says why."""
    zombie = ("zomb1", ["10.88.0.40/16"], [_pm(8040, 80, host_ip="2001:db8::10")])

    def add_zombie() -> None:
        conf = _plugin_add(node, tmp_path, zombie, cached=False, conditions_v4=[LAB_ONLY])
        entry = rp.write_cni_cache(tmp_path, "podman", "zomb1", "eth0", conf, zombie[2],
                                   zombie[1], netns="/run/netns/does-not-exist")  # fmt: skip
        if fate == "unreadable":
            entry.write_text(entry.read_text()[:50])

    if order == "first":
        add_zombie()
    rp.hold_addresses(rp.container_netns(), ["10.88.0.41/16"])
    _debian_gone(node, tmp_path, "deb1", "10.88.0.41/16", 8041, lose=False)
    if order == "last":
        add_zombie()
    # What v1.9.1 left: the conditions alone in both entry chains, no DNAT rule, no ip6.
    for chain in ("prerouting", "output"):
        (rule,) = _rules_of(node, chain)
        assert "jump" not in json.dumps(rule["expr"]), rule
    assert _rules_of(node, "hostports") == []
    assert "table ip6 cni_hostport" not in upstream.ruleset_text(node)
    checked = _pmctl(node, tmp_path, "check", "-o", "json")
    assert checked.returncode == 1, checked.stdout + checked.stderr
    entry = [p for p in _problems(checked) if p["kind"] == "nft-missing-entry"]
    assert sorted((p["family"], p["chain"]) for p in entry) == [(4, "output"), (4, "prerouting")]
    gone = {p["kind"]: p["fix"] for p in _problems(checked) if p["container_id"] == "zomb1"}
    assert "incomplete" in gone and all("--repair" not in (fix or "") for fix in gone.values()), (
        gone
    )
    assert "podman/deb1: its cached config says" in checked.stderr, checked.stderr
    assert _repairs(checked) == []  # (before: both entry rows)
    before = _both_rulesets(node)
    repaired = _pmctl(node, tmp_path, "check", "--repair", "-o", "json")
    assert repaired.returncode == 1, repaired.stdout + repaired.stderr
    assert _both_rulesets(node) == before
    assert json.loads(repaired.stdout)["fixed"] == []
    again = _pmctl(node, tmp_path, "check", "-o", "json")
    assert _repairs(again) == []
    assert _problems(again) == _problems(checked)


def _repairs(done) -> list:
    """The rows whose fix is `check --repair` (a zombie's row names gc)."""
    return [p for p in _problems(done) if p["fix"] and "--repair" in p["fix"]]


@pytest.mark.parametrize(
    "who, beside, state",
    [
        ("api1", "alone", "flushed"),
        ("api1", "web1", "deleted"),
        ("api1", "in-doubt", "flushed"),
        ("web1", "web1", "flushed"),
        ("web1", "web1", "deleted"),
    ],
)
def test_the_one_mapping_check_offers_no_repair_its_repair_refuses(
    node: str, tmp_path: Path, who: str, beside: str, state: str
) -> None:
    """The one-mapping check (`check --container api1 --cni-config api1.json`) offered
    `--repair` on every row where that repair writes nothing: of api1, whose conditions
    it refuses (it stops: `refusing nftables condition ...`, exit 2), and of web1 for
    the entry it holds (api1, the newest cached ADD, is refused): every run the same.
    Those rows name no fix and say why, in the repair's words (api1's) or as the node's
    check says it (the held entry); what the repair does write (web1's table and rules)
    keeps its fix and is made."""
    _refused_node(node, tmp_path, beside)
    conf = upstream.nft_conf("podman", *({"api1": API, "web1": WEB}[who][1:]),
                             conditions_v4=[LAB_ONLY] if who == "api1" else None)  # fmt: skip
    path = tmp_path / f"{who}.json"
    path.write_text(json.dumps(conf))
    if state == "flushed":
        upstream.nft(node, "flush", "chain", "ip", "cni_hostport", "prerouting")
    else:
        upstream.nft(node, "delete", "table", "ip", "cni_hostport")
    one = ("check", "--container", who, "--cni-config", str(path), "-o", "json")
    checked = _pmctl(node, tmp_path, *one)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    written = [
        ("nft-missing-rules", 4, "hostports", "web1"),
        ("nft-missing-table", 4, None, None),
    ]
    assert _offered(checked) == (written if (who, state) == ("web1", "deleted") else [])
    before = _both_rulesets(node)
    repaired = _pmctl(node, tmp_path, *one[:-2], "--repair", "-o", "json")
    if who == "api1":
        assert repaired.returncode == 2, repaired.stdout + repaired.stderr
        refused = _repair_line(repaired.stderr, "portmapctl: error: ")
        assert all(p["why"].endswith(refused) for p in _problems(checked)), checked.stdout
    else:
        assert repaired.returncode == 1, repaired.stdout + repaired.stderr
    if _offered(checked):
        assert sorted(
            (p["kind"], p["family"], p["chain"], p["container_id"])
            for p in json.loads(repaired.stdout)["fixed"]
        ) == _offered(checked)
        assert {r["comment"] for r in _rules_of(node, "hostports") if r["family"] == "ip"} == {
            "web1"
        }
    else:
        assert _both_rulesets(node) == before
    if who == "web1":
        # The held entry's rows say what the node's check says of them.
        node_check = _pmctl(node, tmp_path, "check", "-o", "json")
        entry = [p for p in _problems(node_check) if p["kind"] == "nft-missing-entry"]
        after = [p for p in _problems(repaired) if p["kind"] == "nft-missing-entry"]
        assert entry and [p["why"] for p in after] == [p["why"] for p in entry], after
        # And the repair says it left that entry, in the node repair's words (it said
        # nothing: a cron job's log showed a repair that left two rows, unexplained).
        start = "IPv4 prerouting and output were left as they are: they "
        held = _repair_line(repaired.stderr, start)
        node_repair = _pmctl(node, tmp_path, "check", "--repair", "-o", "json")
        assert _repair_line(node_repair.stderr, start) == held, node_repair.stderr
        assert all(p["why"].endswith(f"prerouting and output {held}") for p in after), after
    again = _pmctl(node, tmp_path, *one)
    assert _offered(again) == []


def test_a_container_whose_other_network_is_in_nftables_is_still_judged_where_its_chain_is(
    node: str, tmp_path: Path
) -> None:
    """web1 on `podman` added by Debian's 1.1.1 under a `"backend": "nftables"` config
    (its chain in iptables), and on `net2` by v1.9.1 since (the plugin upgraded; its
    rules in nftables carry the same container ID). Judged by the container ID, the
    `podman` entry was taken as nftables' again (nft-missing-rules on every run): its
    nftables rules are net2's, DNATing to net2's address (helper-175's review)."""
    cid, ips, ports = WEB[0], ["10.88.0.5/16"], WEB[2]
    conf = upstream.nft_conf("podman", ips, ports)
    rp.run_plugin("ADD", node, cid, conf, check=True)  # Debian's: iptables
    rp.write_cni_cache(tmp_path, "podman", cid, "eth0", conf, ports, ips)
    ports2, ips2 = [{"hostPort": 9191, "containerPort": 91, "protocol": "tcp"}], ["10.99.0.5/16"]
    conf2 = upstream.nft_conf("net2", ips2, ports2)
    upstream.run("v1.9.1", "ADD", node, cid, conf2, check=True)
    rp.write_cni_cache(tmp_path, "net2", cid, "net1", conf2, ports2, ips2)
    checked = _pmctl(node, tmp_path, "check", "-o", "json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert json.loads(checked.stdout)["problems"] == []
    assert "podman/web1" in checked.stderr and "ignores the key" in checked.stderr
    one = _pmctl(node, tmp_path, "check", "--network", "podman", "--container", cid,
                 "--ip", ips[0], "-p", "8080:80/tcp", "-p", "5353:53/udp")  # fmt: skip
    assert one.returncode == 0 and "ignores the key" in one.stderr, one.stdout + one.stderr


def test_a_node_without_nft_and_without_the_plugins_tables_is_not_stopped_by_the_key(
    node: str, tmp_path: Path
) -> None:
    """Debian's 1.1.1 with `"backend": "nftables"` in its config (a key it ignores) on a
    node without nft (a slim DaemonSet image, a minimal install): check, list and gc
    stopped on every run with exit 3 "nft not found", since a cached config says
    nftables, and gc removed no dead chain. But the kernel holds no `cni_hostport`
    table (one netlink question, no nft needed): nothing is in nftables to be read, the
    container is judged where its chain is (healthy), and gc removes the dead chain and
    keeps the live one. Where the plugin's table is there, the commands still stop,
    and now say how to work on the iptables containers alone."""
    cid, ips, ports = WEB[0], ["10.88.0.5/16"], WEB[2]
    conf = upstream.nft_conf("podman", ips, ports)
    rp.run_plugin("ADD", node, cid, conf, check=True)  # Debian's: iptables
    rp.write_cni_cache(tmp_path, "podman", cid, "eth0", conf, ports, ips)
    dead = rp.plugin_conf("podman", ["10.88.0.9/16"], [rp.port_mapping(8099, 99)])
    rp.run_plugin("ADD", node, "dead1", dead, check=True)
    no_nft = [os.path.realpath(shutil.which("nft") or "/usr/sbin/nft")]
    where = ["--netns", node, "--cni-cache-dir", str(tmp_path)]
    checked = pmctl.run(["check", "-o", "json", *where], hide=no_nft)
    assert checked.returncode == 1, checked.stdout + checked.stderr  # dead1: stale
    assert {(p["kind"], p["container_id"]) for p in json.loads(checked.stdout)["problems"]} == {
        ("stale", "dead1")
    }
    listed = pmctl.run(["list", "-o", "json", *where], hide=no_nft)
    assert listed.returncode == 0, listed.stderr
    assert {m["container_id"] for m in json.loads(listed.stdout)["mappings"]} == {cid, "dead1"}
    done = pmctl.run(["gc", "--yes", "--min-age", "0", *where], hide=no_nft)
    assert done.returncode == 0, done.stdout + done.stderr
    saved = rp.save(node, 4)
    assert chain_name("podman", "dead1") not in saved
    assert chain_name("podman", cid) in saved

    _plugin_add(node, tmp_path, API)  # v1.9.1: the plugin's table is there now
    for command in (["check"], ["list"], ["gc", "--yes", "--min-age", "0"]):
        done = pmctl.run([*command, *where], hide=no_nft)
        pmctl.assert_error(done, 3, "nft not found")
        assert "--backend iptables works on the iptables ones alone" in done.stderr


def test_plugin_tables_nft_cannot_read_are_said_not_passed_over(node: str, tmp_path: Path) -> None:
    """nft gone (a slim DaemonSet image, nft removed after the plugin moved back to
    iptables) while the kernel still holds the v1.9.1 plugin's cni_hostport table of a
    container no cached config names: list printed its iptables rows and nothing else,
    check said healthy and gc removed nothing there, none of them with a word on stderr,
    though the table's rules forward the port all the same. Each now says the plugin's
    tables are not read, and why (its exit stays the iptables work's)."""
    _plugin_add(node, tmp_path, API, cached=False)  # left over: no cache entry says nftables
    cid, ips, ports = WEB[0], ["10.88.0.5/16"], WEB[2]
    conf = rp.plugin_conf("podman", ips, ports)
    rp.run_plugin("ADD", node, cid, conf, check=True)  # Debian's: iptables
    rp.write_cni_cache(tmp_path, "podman", cid, "eth0", conf, ports, ips)
    no_nft = [os.path.realpath(shutil.which("nft") or "/usr/sbin/nft")]
    where = ["--netns", node, "--cni-cache-dir", str(tmp_path)]
    for command, code in (
        (["list"], 0),
        (["check"], 0),
        (["gc", "--yes", "--min-age", "0"], 0),
        (["flush-udp", "--dry-run"], 0),
    ):
        done = pmctl.run([*command, *where], hide=no_nft)
        assert done.returncode == code, (command, done.stdout + done.stderr)
        said = [line for line in done.stderr.splitlines() if "cni_hostport" in line]
        assert len(said) == 1, (command, done.stderr)
        assert "nft not found" in said[0] and "not read" in said[0], said
    assert "api1" in upstream.ruleset_json(node)  # gc left the table as it was


def test_the_plugins_empty_tables_nft_cannot_read_are_no_warning(node: str, tmp_path: Path) -> None:
    """The plugin's DEL of its last nftables container leaves both cni_hostport tables
    in place, their host-port chains empty: the node that moved back to iptables and
    dropped nft (a slim DaemonSet image) holds them for good. list, check, gc and
    flush-udp each warned there that "their rules still forward ports", on every cron
    run, of tables with no rule that forwards a port. Said only where a host-port chain
    holds a rule (the test above), as netlink tells without nft."""
    conf = _plugin_add(node, tmp_path, WEB, cached=False)
    upstream.run("v1.9.1", "DEL", node, WEB[0], conf, check=True)
    assert "cni_hostport" in upstream.ruleset_text(node)  # left, empty
    cid, ips, ports = API[0], ["10.88.0.6/16"], [rp.port_mapping(9091, 91)]
    conf = rp.plugin_conf("podman", ips, ports)
    rp.run_plugin("ADD", node, cid, conf, check=True)  # Debian's: iptables
    rp.write_cni_cache(tmp_path, "podman", cid, "eth0", conf, ports, ips)
    no_nft = [os.path.realpath(shutil.which("nft") or "/usr/sbin/nft")]
    where = ["--netns", node, "--cni-cache-dir", str(tmp_path)]
    for command in (["list"], ["check"], ["gc", "--yes", "--min-age", "0"],
                    ["flush-udp", "--dry-run"]):  # fmt: skip
        done = pmctl.run([*command, *where], hide=no_nft)
        assert done.returncode == 0, (command, done.stdout + done.stderr)
        assert "cni_hostport" not in done.stderr, (command, done.stderr)


def test_a_node_whose_nftables_rules_were_flushed_asks_iptables_once_under_backend_nftables(
    node: str, tmp_path: Path
) -> None:
    """A firewall reload flushed the plugin's nftables rules on a node where
    iptables-legacy also has a nat table: under --backend nftables every cached
    "nftables" container has no rule left, and each had its chain looked for in
    iptables one by one (followed.chain_in_iptables: an `iptables-legacy -S CHAIN`
    process each; on a node of 1,000 such containers 1,000 processes, `check` 0.67 s ->
    4.4 s). Each iptables table is read once now, whatever the number of containers,
    and they are all still repaired in nftables (their plugin keeps them there)."""
    rp.require(rp.mode_available("legacy"))
    ids = [f"new{i}" for i in range(6)]
    for i, cid in enumerate(ids):
        _plugin_add(
            node, tmp_path, (cid, [f"10.88.0.{10 + i}/16"], [rp.port_mapping(8000 + i, 80)])
        )
    rp.iptables(node, ["-t", "nat", "-S"], mode="legacy")  # (a legacy nat table: another tool's)
    made = upstream.ruleset_text(node)
    for chain in ("hostports", "masquerading"):
        upstream.nft(node, "flush", "chain", "ip", "cni_hostport", chain)
    runs = tmp_path / "runs"
    wrappers = tmp_path / "bin"
    wrappers.mkdir()
    for name in ("iptables", "ip6tables"):
        for tail in ("-legacy", "-legacy-save", "-nft", "-nft-save"):
            real = shutil.which(name + tail)
            if real is None:
                continue
            wrapper = wrappers / (name + tail)
            wrapper.write_text(f'#!/bin/sh\necho "$0 $*" >> {runs}\nexec {real} "$@"\n')
            wrapper.chmod(0o755)
    env = {"PATH": f"{wrappers}:{os.environ['PATH']}"}
    args = ["check", "--backend", "nftables", "-o", "json", "--netns", node,
            "--cni-cache-dir", str(tmp_path)]  # fmt: skip
    done = pmctl.run(args, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    problems = json.loads(done.stdout)["problems"]
    assert {(p["kind"], p["container_id"]) for p in problems} == {
        ("nft-missing-rules", cid) for cid in ids
    }
    ran = runs.read_text().splitlines() if runs.exists() else []
    # At most one read of each family's nat table in each flavour.
    assert len(ran) <= 4, ran
    repaired = pmctl.run([*args[:1], "--repair", *args[1:]], env=env)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert sorted(upstream.ruleset_text(node).splitlines()) == sorted(made.splitlines())


def test_a_key_ignored_chain_in_a_nat_table_iptables_nft_cannot_save_gets_no_nftables_copy(
    node: str, tmp_path: Path
) -> None:
    """Debian's 1.1.1 added web1 under a `"backend": "nftables"` config (cached so; its
    chain in iptables-nft, the key ignored), beside v1.9.1's new1 in cni_hostport; a
    native nft rule in the nat table (`fib daddr type local`) leaves iptables-nft-save
    showing no nat table at all. `check --repair --backend nftables` asked the kernel
    for web1's chain (NFT_MSG_GETCHAIN) and followed it to iptables; since 5c626a4 it
    reads the table through iptables-nft-save, whose failure is taken for "no chain",
    and wrote web1 an nftables copy its plugin never reads nor deletes."""
    cid, ips, ports = WEB[0], ["10.88.0.5/16"], WEB[2]
    conf = upstream.nft_conf("podman", ips, ports)
    rp.run_plugin("ADD", node, cid, conf, check=True)  # Debian's: iptables
    rp.write_cni_cache(tmp_path, "podman", cid, "eth0", conf, ports, ips)
    _plugin_add(node, tmp_path, ("new1", ["10.88.0.8/16"], [rp.port_mapping(8088, 80)]))
    assert chain_name("podman", cid) in rp.save(node, 4)
    subprocess.run(["ip", "netns", "exec", node, "nft", "add", "rule", "ip", "nat",
                    "CNI-HOSTPORT-DNAT", "fib", "daddr", "type", "local", "counter"],
                   check=True)  # fmt: skip
    assert "incompatible" in rp.save(node, 4)
    before = upstream.ruleset_text(node)
    done = _pmctl(node, tmp_path, "check", "--repair", "--backend", "nftables")
    assert cid not in upstream.ruleset_text(node), done.stdout + done.stderr
    assert upstream.ruleset_text(node) == before
    assert done.returncode == 0 and "ignores the key" in done.stderr, done.stdout + done.stderr


def test_add_follows_a_container_kept_in_nftables_where_iptables_nft_cannot_save_nat(
    node: str, tmp_path: Path
) -> None:
    """v1.9.1 added new1 (cni_hostport, no cache entry); a native nft rule in the
    iptables-nft nat table (`fib daddr type local`) leaves iptables-nft-save showing no
    nat table at all. A keyless `add` of new1 printed "iptables-nft-save cannot read the
    nat table", exit 3, nothing written, where `add --backend nftables` adds it (exit
    0): the question whether its chain is in iptables too (choose: in both, iptables
    wins) read the whole table through iptables-nft-save, whose refusal ended the
    follow (new1 taken as iptables'), and the contested warning's read of iptables
    under auto was fatal where under --backend nftables it is skipped. The kernel is
    asked for the one chain now (NFT_MSG_GETCHAIN): add follows new1 to nftables, and
    writes no iptables chain for it."""
    new = ("new1", ["10.88.0.8/16"], [rp.port_mapping(8088, 80)])
    _plugin_add(node, tmp_path, new, cached=False)
    subprocess.run(["ip", "netns", "exec", node, "iptables-nft", "-t", "nat", "-N",
                    "CNI-HOSTPORT-DNAT"], check=True)  # fmt: skip
    subprocess.run(["ip", "netns", "exec", node, "nft", "add", "rule", "ip", "nat",
                    "CNI-HOSTPORT-DNAT", "fib", "daddr", "type", "local", "counter"],
                   check=True)  # fmt: skip
    assert "incompatible" in rp.save(node, 4)
    chain = chain_name("podman", "new1")
    done = _pmctl(node, tmp_path, "add", "--network", "podman", "--container", "new1",
                  "--ip", "10.88.0.8/16", "-p", "8088:80")  # fmt: skip
    listed = subprocess.run(["ip", "netns", "exec", node, "nft", "list", "table", "ip", "nat"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert chain not in listed, done.stdout + done.stderr
    assert done.returncode == 0, done.stdout + done.stderr
    assert "its rules are in the plugin's nftables tables alone" in done.stderr, done.stderr
    assert ("ip", "hostports", "new1") in _container_rules(node)


@pytest.mark.parametrize("form", ["node", "mapping"])
def test_a_container_whose_repair_would_take_a_port_is_offered_no_repair(
    node: str, tmp_path: Path, form: str
) -> None:
    """v1.9.1 ADDs ctr-a (tcp/8080, tcp/9090), then ctr-b (tcp/8080); ctr-a's 8080 rule
    deleted (`nft delete rule ... handle`): ctr-b has the port now, and the repair
    leaves ctr-a as it is ("could not repair IPv4 podman/ctr-a (hostports): its rules
    would take tcp/8080 from ctr-b ..."), nothing written, exit 1. The check (of the
    node, and of that one mapping) offered `check --repair` for ctr-a's
    nft-missing-rules on every run: a cron job's loop. It names no fix and says why
    in the repair's words."""
    a = ("ctr-a", ["10.88.0.21/16"], [_pm(8080, 80), _pm(9090, 90)])
    conf_a = _plugin_add(node, tmp_path, a)
    _plugin_add(node, tmp_path, ("ctr-b", ["10.88.0.22/16"], [_pm(8080, 8080)]))
    _delete_port_rule(node, "ctr-a", 8080)
    given: list = []
    if form == "mapping":
        path = tmp_path / "ctr-a.json"
        path.write_text(json.dumps(conf_a))
        given = ["--container", "ctr-a", "--cni-config", str(path)]
    checked = _pmctl(node, tmp_path, "check", *given, "-o", "json")
    assert checked.returncode == 1, checked.stdout + checked.stderr
    own = [p for p in _problems(checked) if p["container_id"] == "ctr-a"]
    assert [(p["kind"], p["family"]) for p in own] == [("nft-missing-rules", 4)], own
    assert _offered(checked) == []  # (before: ctr-a's nft-missing-rules)
    text = _pmctl(node, tmp_path, "check", *given)
    assert "check --repair" not in text.stdout, text.stdout
    before = _both_rulesets(node)
    repaired = _pmctl(node, tmp_path, "check", "--repair", *given, "-o", "json")
    assert repaired.returncode == 1, repaired.stdout + repaired.stderr
    assert _both_rulesets(node) == before
    why = _repair_line(repaired.stderr, "could not repair IPv4 podman/ctr-a (hostports): ")
    assert "would take tcp/8080 from ctr-b (hostports)" in why, why
    assert own[0]["why"].endswith(f"--repair would leave it as it is: {why}"), own
    again = _pmctl(node, tmp_path, "check", *given, "-o", "json")
    assert _problems(again) == _problems(checked)
