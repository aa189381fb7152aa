"""A keyless mapping given on the command line follows its container's rules into the
plugin's nftables tables (ops/nft.py kept_in_nftables). Where that cannot go (an option
the nftables backend refuses) or cannot be told (nft cannot read the tables): one line
on stderr, the exit code of SPEC §4, nothing written in either backend."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Iterator

import pmctl
import pytest
import realplugin as rp
import upstream

from portmapctl.iptables.chains import chain_name

pytestmark = pytest.mark.netns


@pytest.fixture
def node() -> Iterator[str]:
    rp.require(upstream.available())
    name = rp.create_netns("pmt-rv2")
    try:
        yield name
    finally:
        rp.delete_netns(name)


@pytest.mark.parametrize(
    "option", [["--conditions-v4", "-s 1.2.3.0/24"], ["--external-setmark-chain", "FOO"]]
)
def test_a_followed_add_with_an_iptables_only_option_says_one_line(
    node: str, tmp_path: Path, option: list
) -> None:
    conf = upstream.nft_conf("podman", ["10.88.0.21/16"], [rp.port_mapping(8011, 80)])
    upstream.run("v1.9.1", "ADD", node, "nft1", conf, check=True)
    before = upstream.ruleset_text(node)
    nft1 = ["--network", "podman", "--container", "nft1", "--ip", "10.88.0.21/16", "-p", "8011:80"]
    done = pmctl.run(["add", *nft1, *option, "--netns", node, "--cni-cache-dir", str(tmp_path)])
    pmctl.assert_error(done, 2, "podman/nft1", "so it goes to nftables, which refuses it")
    assert upstream.ruleset_text(node) == before
    assert "CNI-DN-" not in rp.save(node, 4, "nft")  # (nor a copy in iptables)


def test_where_nft_cannot_read_the_plugins_tables_nothing_is_written(
    node: str, tmp_path: Path
) -> None:
    """The plugin's nftables tables are there (netlink says so), and the nft on PATH
    cannot read them: whether nft1 is kept there cannot be told, so add and a
    one-mapping --repair write nothing (exit 3, one line saying what to give), and a
    check says in a note that it checked iptables. Before, add wrote an iptables copy."""
    conf = upstream.nft_conf("podman", ["10.88.0.21/16"], [rp.port_mapping(8011, 80)])
    upstream.run("v1.9.1", "ADD", node, "nft1", conf, check=True)
    broken = tmp_path / "bin" / "nft"
    broken.parent.mkdir()
    broken.write_text("#!/bin/sh\nexit 1\n")
    broken.chmod(0o755)
    env = {"PATH": f"{broken.parent}:{os.environ['PATH']}"}
    nft1 = ["--network", "podman", "--container", "nft1", "--ip", "10.88.0.21/16", "-p", "8011:80"]
    where = ["--netns", node, "--cni-cache-dir", str(tmp_path)]
    for command in (["add"], ["check", "--repair"]):
        done = pmctl.run([*command, *nft1, *where], env=env)
        pmctl.assert_error(
            done, 3, "nft cannot read them", "--backend iptables or --backend nftables"
        )
        assert "CNI-DN-" not in rp.save(node, 4, "nft"), command
    done = pmctl.run(["check", *nft1, *where], env=env)
    assert done.returncode == 1, done.stdout + done.stderr  # (no iptables chain)
    assert "nft cannot read them" in done.stderr and "checked in iptables" in done.stderr


def test_a_one_mapping_repair_follows_a_cached_nftables_config_whose_rules_are_gone(
    node: str, tmp_path: Path
) -> None:
    """nft1's cached config says `"backend": "nftables"` and all its rules are gone: a
    one-mapping check (no --backend) looked for a CNI-DN- chain and --repair wrote
    one in iptables, where the plugin never looks for nft1 (its DEL leaves it behind).
    It is checked and repaired in nftables, with a note, and upstream CHECK passes."""
    ips = ["10.88.0.21/16"]
    ports = [rp.port_mapping(8011, 80), rp.port_mapping(5311, 53, "udp")]
    conf = upstream.nft_conf("podman", ips, ports)
    upstream.run("v1.9.1", "ADD", node, "nft1", conf, check=True)
    rp.write_cni_cache(tmp_path, "podman", "nft1", "eth0", conf, ports, ips)
    upstream.run("v1.9.1", "DEL", node, "nft1", conf, check=True)  # the rules are gone
    nft1 = ["--network", "podman", "--container", "nft1", "--ip", ips[0]]
    nft1 += ["-p", "8011:80", "-p", "5311:53/udp"]
    where = ["--netns", node, "--cni-cache-dir", str(tmp_path)]
    done = pmctl.run(["check", *nft1, *where, "-o", "json"])
    assert done.returncode == 1, done.stdout + done.stderr
    assert {p["backend"] for p in json.loads(done.stdout)["problems"]} == {"nftables"}
    assert '"backend": "nftables"' in done.stderr
    done = pmctl.run(["check", "--repair", *nft1, *where])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "CNI-DN-" not in rp.save(node, 4, "nft")
    assert 'comment "nft1"' in upstream.ruleset_text(node)
    upstream.run("v1.9.1", "CHECK", node, "nft1", conf, check=True)


def test_a_cached_nftables_key_under_backend_iptables_stops_where_nft_cannot_read_the_tables(
    node: str, tmp_path: Path
) -> None:
    """web1's cached config says `"backend": "nftables"`: v1.9.1 keeps it in the
    plugin's nftables table, beside a leaked copy of Debian's 1.1.1 ADD in iptables
    (its entry rule lost). With nft readable, `add --backend iptables` is refused (exit
    2: a copy its plugin never reads). Where the table is there and the nft on PATH
    cannot read it, the add took the unread table for none, "the key ignored", and
    wrote the iptables entry rule, exit 0: whether its plugin ignored the key cannot be
    told there, so it stops, nft's own line, exit 3, nothing written (a dry run too)."""
    web1 = _leaked_copy_of_web1(node, tmp_path)
    before = rp.nat_rules(rp.save(node, 4))
    given = [*web1, "--backend", "iptables"]
    done = pmctl.run(["add", *given])
    pmctl.assert_error(done, 2, "its cached config says", "would write a copy")
    broken, env = _broken_nft(tmp_path)
    for dry in (["--dry-run"], []):
        done = pmctl.run(["add", *given, *dry], env=env)
        pmctl.assert_error(done, 3, str(broken))
        assert rp.nat_rules(rp.save(node, 4)) == before, dry


def _leaked_copy_of_web1(node: str, cache: Path) -> list:
    """v1.9.1's ADD of podman/web1 (10.88.0.5/16, 8080:80) under `"backend":
    "nftables"`, cached so in `cache`; Debian's 1.1.1 ADD of the same, a leaked copy in
    iptables, its CNI-HOSTPORT-DNAT entry rule deleted. web1's mapping options (with
    --netns and --cni-cache-dir)."""
    conf = upstream.nft_conf("podman", ["10.88.0.5/16"], [rp.port_mapping(8080, 80)])
    upstream.run("v1.9.1", "ADD", node, "web1", conf, check=True)
    ports = conf["runtimeConfig"]["portMappings"]
    rp.write_cni_cache(cache, "podman", "web1", "eth0", conf, ports, ["10.88.0.5/16"])
    rp.run_plugin("ADD", node, "web1", conf, check=True)  # Debian's copy, in iptables
    entry = next(
        line for line in rp.save(node, 4).splitlines()
        if line.startswith("-A CNI-HOSTPORT-DNAT") and "web1" in line
    )  # fmt: skip
    rp.iptables(node, ["-t", "nat", "-D", *shlex.split(entry)[1:]])
    web1 = ["--network", "podman", "--container", "web1", "--ip", "10.88.0.5/16", "-p", "8080:80"]
    return [*web1, "--netns", node, "--cni-cache-dir", str(cache)]


def _broken_nft(tmp_path: Path) -> tuple:
    """An `nft` that exits 1, and the environment that puts it first on PATH."""
    broken = tmp_path / "bin" / "nft"
    broken.parent.mkdir()
    broken.write_text("#!/bin/sh\nexit 1\n")
    broken.chmod(0o755)
    return broken, {"PATH": f"{broken.parent}:{os.environ['PATH']}"}


@pytest.mark.parametrize("backend", [[], ["--backend", "iptables"]], ids=["auto", "iptables"])
def test_a_one_mapping_repair_of_a_cached_nftables_key_stops_where_nft_cannot_read_the_tables(
    node: str, tmp_path: Path, backend: list
) -> None:
    """As add (above), so check of web1's one mapping: where the plugin's table is there
    and the nft on PATH cannot read it, its unread rules were taken for none, "the
    plugin that added it ignores the key ... checked in iptables", and `check --repair`
    (without --backend too) put the entry rule back in iptables, exit 0, a rule its
    v1.9.1 plugin never reads. Whether it ignored the key cannot be told: check and
    --repair stop with nft's own line, exit 3, nothing written."""
    web1 = _leaked_copy_of_web1(node, tmp_path)
    before = rp.nat_rules(rp.save(node, 4))
    broken, env = _broken_nft(tmp_path)
    for command in (["check"], ["check", "--repair"]):
        done = pmctl.run([*command, *web1, *backend], env=env)
        pmctl.assert_error(done, 3, str(broken))
        assert rp.nat_rules(rp.save(node, 4)) == before, command


def _lost_entry_of_web2(node: str, cache: Path) -> str:
    """Debian's 1.1.1 ADD of podman/web2 (10.88.0.6/16, 8081:80), no `backend` key,
    cached in `cache`, its CNI-HOSTPORT-DNAT entry rule deleted: an iptables container
    whose repair nothing else stands in the way of. Its chain's name."""
    conf = rp.plugin_conf("podman", ["10.88.0.6/16"], [rp.port_mapping(8081, 80)])
    return _debian_add_without_entry(node, cache, "web2", conf, "10.88.0.6/16")


def _debian_add_without_entry(node: str, cache: Path, name: str, conf: dict, ip: str) -> str:
    """Debian's 1.1.1 ADD of podman/`name` (`conf`, at `ip`), cached so in `cache`, its
    CNI-HOSTPORT-DNAT entry rule deleted. Its chain's name."""
    ports = conf["runtimeConfig"]["portMappings"]
    rp.write_cni_cache(cache, "podman", name, "eth0", conf, ports, [ip])
    rp.run_plugin("ADD", node, name, conf, check=True)
    entry = next(
        line for line in rp.save(node, 4).splitlines()
        if line.startswith("-A CNI-HOSTPORT-DNAT") and name in line
    )  # fmt: skip
    rp.iptables(node, ["-t", "nat", "-D", *shlex.split(entry)[1:]])
    return shlex.split(entry)[-1]


def _entered(node: str, chain: str) -> bool:
    return any(
        line.startswith("-A CNI-HOSTPORT-DNAT") and line.endswith(f"-j {chain}")
        for line in rp.save(node, 4).splitlines()
    )


def test_the_node_check_of_a_cached_nftables_key_stops_where_nft_cannot_read_the_tables(
    node: str, tmp_path: Path
) -> None:
    """As the one-mapping check (above), the node's: where the plugin's table is there
    and the nft on PATH cannot read it, web1's unread rules were taken for none, "the
    plugin that added them ignores the key", and `check --repair` put its entry rule
    back in iptables, exit 0, a rule its v1.9.1 plugin never reads. Left to its key,
    nftables, which cannot be read here: check and --repair stop as they do for any
    cached "nftables" container then (exit 3, naming --backend iptables), nothing
    written."""
    _leaked_copy_of_web1(node, tmp_path)
    _lost_entry_of_web2(node, tmp_path)
    _node_check_stops(node, tmp_path, "--backend iptables works on the iptables")


def _node_check_stops(node: str, tmp_path: Path, *said: str) -> None:
    """Where the nft on PATH cannot read the plugin's table, the node's check and
    check --repair stop with nft's line (and `said`), exit 3, nothing written."""
    before = rp.nat_rules(rp.save(node, 4))
    broken, env = _broken_nft(tmp_path)
    where = ["--netns", node, "--cni-cache-dir", str(tmp_path)]
    for command in (["check"], ["check", "--repair"]):
        done = pmctl.run([*command, *where], env=env)
        pmctl.assert_error(done, 3, str(broken), *said)
        assert "ignores the key (plugins before v1.6" not in done.stderr, done.stderr
        assert rp.nat_rules(rp.save(node, 4)) == before, command


def test_the_node_check_under_backend_iptables_leaves_a_cached_nftables_key_in_doubt_where_nft_cannot_read_the_tables(
    node: str, tmp_path: Path
) -> None:
    """Under --backend iptables (what the stop above bids), web1 was judged "the key
    ignored" from tables nobody read, and --repair wrote its entry rule in iptables.
    Whether its plugin ignored the key cannot be told there: web1 is in doubt (a
    warning that says why, its problems with no fix, nothing written for it), and
    web2, an iptables container, is repaired all the same (one record stops nothing)."""
    web1 = chain_name("podman", "web1")
    _leaked_copy_of_web1(node, tmp_path)
    web2 = _lost_entry_of_web2(node, tmp_path)
    broken, env = _broken_nft(tmp_path)
    given = ["--backend", "iptables", "--netns", node, "--cni-cache-dir", str(tmp_path)]
    done = pmctl.run(["check", *given, "-o", "json"], env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "ignores the key (plugins before v1.6" not in done.stderr, done.stderr
    assert "podman/web1" in done.stderr and "nft cannot read" in done.stderr, done.stderr
    problems = json.loads(done.stdout)["problems"]
    assert {p["container_id"] for p in problems if p["fix"]} == {"web2"}, problems
    done = pmctl.run(["check", "--repair", *given], env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"repaired: IPv4 missing-entry {web2} (podman/web2)" in done.stdout + done.stderr
    assert "(podman/web1)" not in done.stdout, done.stdout
    assert _entered(node, web2) and not _entered(node, web1)


def _keyless_kl1(node: str, cache: Path) -> str:
    """v1.9.1's ADD of podman/kl1 (10.88.0.7/16, 8087:80) under `"backend":
    "nftables"`, cached in `cache` without the key: a keyless container whose rules are
    in the plugin's nftables table alone, which check follows there. Its chain's name
    (none in iptables)."""
    conf = upstream.nft_conf("podman", ["10.88.0.7/16"], [rp.port_mapping(8087, 80)])
    upstream.run("v1.9.1", "ADD", node, "kl1", conf, check=True)
    keyless = {k: v for k, v in conf.items() if k != "backend"}
    ports = keyless["runtimeConfig"]["portMappings"]
    rp.write_cni_cache(cache, "podman", "kl1", "eth0", keyless, ports, ["10.88.0.7/16"])
    return chain_name("podman", "kl1")


def test_the_node_check_of_a_keyless_entry_without_a_chain_stops_where_nft_cannot_read_the_tables(
    node: str, tmp_path: Path
) -> None:
    """kl1 has no `backend` key and its rules are in the plugin's nftables table alone:
    check follows it there (healthy). Where the table is there and the nft on PATH
    cannot read it, kl1 was `missing-chain` with --repair as its fix, and `check
    --repair` wrote its chain in iptables (exit 0): a copy beside its nftables rules,
    `both-backends` once nft reads again. Whether its rules are in nftables cannot be
    told: check and --repair stop as for a cached "nftables" entry (exit 3, naming it
    and --backend iptables), nothing written."""
    kl1 = _keyless_kl1(node, tmp_path)
    where = ["--netns", node, "--cni-cache-dir", str(tmp_path)]
    done = pmctl.run(["check", *where])
    assert done.returncode == 0, done.stdout + done.stderr
    before = rp.nat_rules(rp.save(node, 4))
    broken, env = _broken_nft(tmp_path)
    for command in (["check"], ["check", "--repair"]):
        done = pmctl.run([*command, *where], env=env)
        pmctl.assert_error(
            done, 3, str(broken), "(kl1)", "--backend iptables works on the iptables"
        )
        assert rp.nat_rules(rp.save(node, 4)) == before, command
    assert kl1 not in rp.save(node, 4)
    assert pmctl.run(["check", *where]).returncode == 0


def test_the_node_check_under_backend_iptables_leaves_a_keyless_entry_without_a_chain_in_doubt_where_nft_cannot_read_the_tables(
    node: str, tmp_path: Path
) -> None:
    """Under --backend iptables (what the stop above bids), kl1 was `missing-chain`
    with --repair as its fix, and --repair wrote its chain in iptables. It is in doubt:
    a warning that says why, its problem with no fix, nothing written for it; web2, an
    iptables container, is repaired beside it, and once nft reads again the node is
    healthy (no copy of kl1 in iptables)."""
    kl1 = _keyless_kl1(node, tmp_path)
    web2 = _lost_entry_of_web2(node, tmp_path)
    broken, env = _broken_nft(tmp_path)
    where = ["--netns", node, "--cni-cache-dir", str(tmp_path)]
    given = ["--backend", "iptables", *where]
    done = pmctl.run(["check", *given, "-o", "json"], env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "podman/kl1" in done.stderr and "nft cannot read" in done.stderr, done.stderr
    problems = json.loads(done.stdout)["problems"]
    assert any(p["container_id"] == "kl1" for p in problems), problems  # (reported)
    assert {p["container_id"] for p in problems if p["fix"]} == {"web2"}, problems
    done = pmctl.run(["check", "--repair", *given], env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"repaired: IPv4 missing-entry {web2} (podman/web2)" in done.stdout + done.stderr
    assert "(podman/kl1)" not in done.stdout, done.stdout
    assert _entered(node, web2) and kl1 not in rp.save(node, 4)
    done = pmctl.run(["check", *where])
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_keyless_entry_without_a_chain_beside_a_table_with_no_rule_is_iptables_where_nft_cannot_read_it(
    node: str, tmp_path: Path
) -> None:
    """The guard of the two above: the plugin's table is there, but its host-port
    chains hold no rule (v1.9.1's DEL of its last container leaves it so, on a node
    that went back to iptables): no container is kept there, so a keyless one without
    a chain is iptables' and `missing-chain`, and --repair makes it, nft readable or
    not (asked over netlink)."""
    conf = upstream.nft_conf("podman", ["10.88.0.8/16"], [rp.port_mapping(8088, 80)])
    upstream.run("v1.9.1", "ADD", node, "gone1", conf, check=True)
    upstream.run("v1.9.1", "DEL", node, "gone1", conf, check=True)
    keyless = rp.plugin_conf("podman", ["10.88.0.9/16"], [rp.port_mapping(8089, 80)])
    ports = keyless["runtimeConfig"]["portMappings"]
    rp.write_cni_cache(tmp_path, "podman", "kl2", "eth0", keyless, ports, ["10.88.0.9/16"])
    _broken, env = _broken_nft(tmp_path)
    where = ["--netns", node, "--cni-cache-dir", str(tmp_path)]
    for backend in ([], ["--backend", "iptables"]):
        done = pmctl.run(["check", *where, *backend, "-o", "json"], env=env)
        assert done.returncode == 1, done.stdout + done.stderr
        problems = json.loads(done.stdout)["problems"]
        assert any(p["kind"] == "missing-chain" and p["fix"] for p in problems), problems
    done = pmctl.run(["check", "--repair", *where], env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert chain_name("podman", "kl2") in rp.save(node, 4)


def test_the_top_level_chains_only_a_keyless_entry_in_doubt_needs_name_no_fix(
    node: str, tmp_path: Path
) -> None:
    """kl1 alone, in doubt under --backend iptables (above): the node has no iptables
    chain of the plugin, and the three missing-toplevel rows that kl1 alone wants
    named `check --repair` as their fix, which writes none of them (it writes nothing
    for kl1): no fix, the repair leaves iptables as it is, and once nft reads again the
    node is healthy."""
    _keyless_kl1(node, tmp_path)
    broken, env = _broken_nft(tmp_path)
    where = ["--netns", node, "--cni-cache-dir", str(tmp_path)]
    given = ["--backend", "iptables", *where]
    before = rp.nat_rules(rp.save(node, 4))
    done = pmctl.run(["check", *given, "-o", "json"], env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    problems = json.loads(done.stdout)["problems"]
    assert {p["kind"] for p in problems} == {"missing-toplevel", "missing-chain"}, problems
    assert [p for p in problems if p["fix"]] == [], problems
    done = pmctl.run(["check", "--repair", *given, "-o", "json"], env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert [p for p in json.loads(done.stdout)["problems"] if p["fix"]] == [], done.stdout
    assert rp.nat_rules(rp.save(node, 4)) == before
    done = pmctl.run(["check", *where])
    assert done.returncode == 0, done.stdout + done.stderr


def _ignored_key_beside_an_emptied_table(node: str, cache: Path) -> str:
    """v1.9.1's ADD then DEL of other/nftx under `"backend": "nftables"` (the table it
    leaves: its chains and base-chain jumps, no rule in its host-port chains: a node
    gone back to iptables); Debian's 1.1.1 ADD of podman/web1 (10.88.0.5/16, 8080:80)
    given the key, which it ignores (its chain in iptables), cached so in `cache`, its
    CNI-HOSTPORT-DNAT entry rule deleted. web1's chain."""
    other = upstream.nft_conf("other", ["10.89.0.9/16"], [rp.port_mapping(9090, 90)])
    upstream.run("v1.9.1", "ADD", node, "nftx", other, check=True)
    upstream.run("v1.9.1", "DEL", node, "nftx", other, check=True)
    conf = upstream.nft_conf("podman", ["10.88.0.5/16"], [rp.port_mapping(8080, 80)])
    return _debian_add_without_entry(node, cache, "web1", conf, "10.88.0.5/16")


def test_a_cached_nftables_key_beside_a_table_with_no_rule_is_ignored_where_nft_cannot_read_it(
    node: str, tmp_path: Path
) -> None:
    """The guard of the two node tests above: the plugin's table is there as its DEL of
    its last container leaves it (no rule in its host-port chains, netlink says; its
    base chains' jumps kept), so no container's rules are in it, and web1, whose
    Debian plugin ignored its key, is iptables' (missing-entry, repaired) whether nft
    reads the table or not. 0d7e573 stopped here every run (exit 3, naming web1), a
    node that dropped nft and kept the table the DEL leaves."""
    web1 = _ignored_key_beside_an_emptied_table(node, tmp_path)
    _broken, env = _broken_nft(tmp_path)
    where = ["--netns", node, "--cni-cache-dir", str(tmp_path)]
    for backend in ([], ["--backend", "iptables"]):
        done = pmctl.run(["check", *where, *backend, "-o", "json"], env=env)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "ignores the key (plugins before v1.6" in done.stderr, done.stderr
        problems = json.loads(done.stdout)["problems"]
        assert [(p["kind"], p["container_id"]) for p in problems if p["fix"]] == [
            ("missing-entry", "web1")
        ], problems
    done = pmctl.run(["check", "--repair", *where], env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _entered(node, web1)


def test_a_cached_nftables_key_beside_a_flushed_emptied_table_stays_in_doubt_where_nft_cannot_read_it(
    node: str, tmp_path: Path
) -> None:
    """The table as above, flushed (its base chains lost their jumps too): what a
    flush took cannot be told from it, so the stop of 0d7e573 stands (exit 3 naming
    web1, --repair too, nothing written)."""
    _ignored_key_beside_an_emptied_table(node, tmp_path)
    upstream.nft(node, "flush", "table", "ip", "cni_hostport")
    _node_check_stops(node, tmp_path, "(web1)")
