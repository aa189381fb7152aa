"""A keyless mapping given on the command line follows its container's rules into the
plugin's nftables tables (ops/nft.py kept_in_nftables). Where that cannot go (an option
the nftables backend refuses) or cannot be told (nft cannot read the tables): one line
on stderr, the exit code of SPEC §4, nothing written in either backend."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

import pmctl
import pytest
import realplugin as rp
import upstream

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
