"""gc SIGKILLed once its write (its nf_tables batch; `nft -f` where there is none)
removed a dead container's rules, before its state save, on a node of the upstream
plugin's nftables backend: a real process, a real signal (tests/kernel/test_sigterm.py
has the iptables side).

The sightings of what a removal takes must leave the --min-age state file before the
removal goes in; otherwise the same container started again under its ID (podman
restart), seen by the next gc during its ADD before libcni wrote its cache entry,
has the old sighting pass --min-age and loses its rules at once. A sighting of
nftables rules holds across a firewall reload (the same rules in a table made afresh):
here the firewall restores the ruleset it saved before the removal, gone1's rules
with it, so a sighting left on file would have them go at once.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Iterator

import pmctl
import pytest
import realplugin as rp
import upstream
from sigterm_helpers import killed_while_writing

pytestmark = pytest.mark.netns

V191 = "v1.9.1"
GONE = ("gone1", ["10.88.0.5/16", "fd00:88::5/64"], [rp.port_mapping(8080, 80)])
LIVE = ("live1", ["10.88.0.6/16"], [rp.port_mapping(8081, 80)])


@pytest.fixture
def node() -> Iterator[str]:
    rp.require(upstream.available())
    name = rp.create_netns("pmt-nftkill")
    try:
        yield name
    finally:
        rp.delete_netns(name)


def _rules_of(ns: str, container_id: str) -> set:
    """(family, chain) of every cni_hostport rule commented with the container's ID."""
    found = set()
    for obj in json.loads(upstream.ruleset_json(ns))["nftables"]:
        rule = obj.get("rule")
        if rule and rule.get("table") == "cni_hostport" and rule.get("comment") == container_id:
            found.add((rule["family"], rule["chain"]))
    return found


def test_a_nft_removal_sigkilled_before_its_state_save_leaves_no_sighting_of_what_it_removed(
    node: str, tmp_path: Path
) -> None:
    confs = {}
    for cid, ips, ports in (GONE, LIVE):
        confs[cid] = upstream.nft_conf("podman", ips, ports)
        upstream.run(V191, "ADD", node, cid, confs[cid], check=True)
    cache = tmp_path / "cni"
    cid, ips, ports = LIVE
    rp.write_cni_cache(cache, "podman", cid, "eth0", confs[cid], ports, ips)
    argv = ["gc", "--netns", node, "--cni-cache-dir", str(cache), "--min-age", "1s", "--yes"]
    env = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run")}
    sighted = pmctl.run(argv, env=env)
    assert sighted.returncode == 0, sighted.stderr
    assert {f for f, _ in _rules_of(node, "gone1")} == {"ip", "ip6"}
    time.sleep(1.2)
    saved = upstream.ruleset_text(node)

    code, _out, err = killed_while_writing(
        argv, env, "nft-write", tmp_path / "marker", signal.SIGKILL
    )
    assert code == -signal.SIGKILL, err
    assert _rules_of(node, "gone1") == set(), "the removal went in before the kill"

    # The node's firewall restores the ruleset it saved before the removal.
    upstream.nft(node, "-f", "-", stdin="flush ruleset\n" + saved)
    done = pmctl.run([*argv, "-o", "json"], env=env)
    assert done.returncode == 0, done.stderr
    assert {f for f, _ in _rules_of(node, "gone1")} == {"ip", "ip6"}, done.stdout
    pending = json.loads(done.stdout)["pending"]
    assert sorted((p["container_id"], p["family"], p["seen_seconds"] < 1) for p in pending) == [
        ("gone1", 4, True),
        ("gone1", 6, True),
    ]
