"""gc --min-age across a firewall reload and a table made again, on a node of the
upstream plugin's nftables backend.

A sighting is of a container's very rules, in the table seen: the same container's
rules written again (its DEL and ADD: podman restart; the plugin making the table again
after `nft flush ruleset`, even under the same rule handles) must start a new one, gc
may be looking during that ADD, before libcni wrote the cache entry that makes it live.
A real `nft -f` of the saved ruleset (a firewall service's reload) makes the tables
afresh as well: it starts the clock over too (a delay), and a later run past
--min-age removes the rules.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Dict, Iterator, Tuple

import pmctl
import pytest
import realplugin as rp
import upstream

pytestmark = pytest.mark.netns

V191 = "v1.9.1"
MIN_AGE = 2.0
LIVE = ("live1", ["10.88.0.5/16", "fd00:88::5/64"], [rp.port_mapping(8080, 80)])
OLD = ("old1", ["10.88.0.7/16", "fd00:88::7/64"], [rp.port_mapping(7000, 70, "udp")])


@pytest.fixture
def node() -> Iterator[str]:
    rp.require(upstream.available())
    name = rp.create_netns("pmt-nftreload")
    try:
        yield name
    finally:
        rp.delete_netns(name)


def _add(ns: str, cache: Path, ctr, cached: bool, version: str = V191) -> dict:
    cid, ips, ports = ctr
    conf = upstream.nft_conf("podman", ips, ports)
    upstream.run(version, "ADD", ns, cid, conf, check=True)
    if cached:
        rp.write_cni_cache(cache, "podman", cid, "eth0", conf, ports, ips)
    return conf


def _handles(ns: str) -> Dict[Tuple[str, str], int]:
    """(family, owner) -> handles: each table's, and each container's rules'."""
    found: Dict[Tuple[str, str], list] = {}
    for obj in json.loads(upstream.ruleset_json(ns))["nftables"]:
        if "table" in obj and obj["table"]["name"] == "cni_hostport":
            found[(obj["table"]["family"], "table")] = [obj["table"]["handle"]]
        rule = obj.get("rule")
        if rule and rule["table"] == "cni_hostport" and rule.get("comment"):
            found.setdefault((rule["family"], rule["comment"]), []).append(rule["handle"])
    return {key: tuple(sorted(value)) for key, value in found.items()}


def _reload(ns: str) -> None:
    """The node's firewall reloads its saved ruleset, as nftables.service does."""
    saved = upstream.ruleset_text(ns)
    upstream.nft(ns, "-f", "-", stdin="flush ruleset\n" + saved)


def _gc(ns: str, cache: Path, run_dir: Path) -> dict:
    done = pmctl.run(
        ["gc", "--yes", "--netns", ns, "--cni-cache-dir", str(cache), "--min-age",
         f"{MIN_AGE:g}s", "-o", "json"],
        env={"PORTMAPCTL_RUN_DIR": str(run_dir)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _ids(rows) -> set:
    return {(row["container_id"], row["family"]) for row in rows}


def test_a_reload_of_the_same_rules_starts_the_clock_over(node: str, tmp_path: Path) -> None:
    """`nft -f` of the saved ruleset renumbers every handle, the tables' too: the stale
    container's rules stay pending from that run (it cannot be told for sure from the
    plugin writing the table again), and go once seen so for --min-age."""
    _add(node, tmp_path, LIVE, cached=True)
    _add(node, tmp_path, OLD, cached=False)
    run_dir = tmp_path / "run"
    first = _gc(node, tmp_path, run_dir)
    assert _ids(first["pending"]) == {("old1", 4), ("old1", 6)} and first["removed"] == []
    time.sleep(MIN_AGE + 0.2)
    before = _handles(node)
    _reload(node)
    after = _handles(node)
    # The reload renumbered everything: the tables' handles and every rule's.
    assert before.keys() == after.keys()
    assert all(before[key] != after[key] for key in before), (before, after)
    _started_over(_gc(node, tmp_path, run_dir))
    time.sleep(MIN_AGE + 0.2)
    done = _gc(node, tmp_path, run_dir)
    assert _ids(done["removed"]) == {("old1", 4), ("old1", 6)}, done
    assert {key for key in _handles(node) if key[1] != "table"} == {
        ("ip", "live1"), ("ip6", "live1"),
    }  # fmt: skip


def _sighted_then_aged(
    node: str, cache: Path, run_dir: Path, version: str = V191, live=LIVE
) -> dict:
    """live1 cached, old1 stale: seen once, then left for longer than --min-age."""
    confs = {
        LIVE[0]: _add(node, cache, live, cached=True, version=version),
        OLD[0]: _add(node, cache, OLD, cached=False, version=version),
    }
    first = _gc(node, cache, run_dir)
    assert _ids(first["pending"]) == {("old1", 4), ("old1", 6)} and first["removed"] == []
    time.sleep(MIN_AGE + 0.2)
    return confs


def _started_over(done: dict) -> None:
    """old1 kept, pending, its clock started again at this run."""
    assert done["removed"] == [], done
    assert sorted(
        (p["container_id"], p["family"], p["seen_seconds"] < 1) for p in done["pending"]
    ) == [
        ("old1", 4, True),
        ("old1", 6, True),
    ]


def test_a_stale_container_written_again_after_a_reload_starts_over(
    node: str, tmp_path: Path
) -> None:
    """The same rules, written again by the container's DEL and ADD (podman restart)
    after the reload: the rules gc sees are new, gc may be looking during that ADD."""
    run_dir = tmp_path / "run"
    confs = _sighted_then_aged(node, tmp_path, run_dir)
    _reload(node)
    for command in ("DEL", "ADD"):
        upstream.run(V191, command, node, "old1", confs["old1"], check=True)
    _started_over(_gc(node, tmp_path, run_dir))


@pytest.mark.parametrize("order", [("live1", "old1"), ("old1", "live1")])
def test_a_table_the_plugin_made_again_after_a_flush_starts_over(
    node: str, tmp_path: Path, order: Tuple[str, str]
) -> None:
    """`nft flush ruleset` (a firewall reload of a file without the plugin's tables),
    then both started again under their IDs, old1 not cached yet: the rules look as
    they did, in the order they were added even under the same handles, but the
    plugin wrote them, not a reload (before: in the first order, old1's went at once)."""
    run_dir = tmp_path / "run"
    confs = _sighted_then_aged(node, tmp_path, run_dir)
    before = _handles(node)
    upstream.nft(node, "flush", "ruleset")
    for cid in order:
        upstream.run(V191, "ADD", node, cid, confs[cid], check=True)
    if order == ("live1", "old1"):
        same = {key: value for key, value in _handles(node).items() if key[1] != "table"}
        assert same == {key: value for key, value in before.items() if key[1] != "table"}
    _started_over(_gc(node, tmp_path, run_dir))


def test_the_same_id_with_other_rules_starts_over_across_a_reload(
    node: str, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    confs = _sighted_then_aged(node, tmp_path, run_dir)
    upstream.run(V191, "DEL", node, "old1", confs["old1"], check=True)
    cid, ips, _ports = OLD
    upstream.run(
        V191, "ADD", node, cid,
        upstream.nft_conf("podman", ips, [rp.port_mapping(7002, 70, "udp")]), check=True,
    )  # fmt: skip
    _reload(node)
    _started_over(_gc(node, tmp_path, run_dir))


LIVE2 = ("live2", ["10.88.0.9/16", "fd00:88::9/64"], [rp.port_mapping(8090, 90)])


@pytest.mark.parametrize("version", upstream.VERSIONS)
@pytest.mark.parametrize("made_by", ["flush", "reload"])
def test_a_stale_container_added_again_before_another_add_starts_over(
    node: str, tmp_path: Path, made_by: str, version: str
) -> None:
    """old1 started again under its ID in a table made afresh (after `nft flush
    ruleset` the plugin's ADDs make it again; after a reload its DEL and ADD), and
    another container's ADD before libcni wrote old1's cache entry (containers started
    together). Every ADD flushes and writes again the table's jumps: old1's new rules
    end up below the first jump beside live1's, as a reload leaves them (a mark that
    took that for a reload carried its clock, and its new rules went at once, during
    its ADD)."""
    run_dir = tmp_path / "run"
    confs = _sighted_then_aged(node, tmp_path, run_dir, version)
    if made_by == "flush":
        upstream.nft(node, "flush", "ruleset")
        _add(node, tmp_path, LIVE, cached=True, version=version)
    else:
        _reload(node)
        upstream.run(version, "DEL", node, "old1", confs["old1"], check=True)
    upstream.run(version, "ADD", node, "old1", confs["old1"], check=True)
    _add(node, tmp_path, LIVE2, cached=True, version=version)
    _started_over(_gc(node, tmp_path, run_dir))
