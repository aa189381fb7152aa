"""Masquerade rules left without their container's DNAT rules: a check problem.

The fixture is real: tests/fixtures/nft/v191-masq-only.* was made by upstream v1.9.1's
ADD of two containers and `nft delete rule ... handle N` of one container's DNAT rules
(the recipe file holds both; capture.py makes it again). Which kind check says depends
on what the CNI cache knows:
- the container is not cached (cache present): `stale` (gc removes its rules);
- it is cached and nft-backed: `nft-missing-rules` (repair re-creates the DNAT rules),
  and nothing more;
- no cache at all: `incomplete` (its rules are there only in part).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence

import nftcases
import pytest
import realplugin as rp
from pmctl import run

from portmapctl.nftables.inventory import leftovers
from portmapctl.nftables.ruleset import MASQUERADING

CASE = "v191-masq-only"
SNAP = str(nftcases.HERE / f"{CASE}.nft.json")
RECIPE = json.loads((nftcases.HERE / f"{CASE}.recipe.json").read_text())
LIVE = nftcases.live(CASE)


def _deleted_from() -> str:
    """The container the recipe's `nft delete rule` commands took the DNAT rules of:
    the one ADDed that has no DNAT rule left in the dump."""
    assert RECIPE["then"] and all(c.startswith("nft delete rule ") for c in RECIPE["then"])
    added = {step["containerId"] for step in RECIPE["steps"] if step["command"] == "ADD"}
    with_dnat = {
        r.comment
        for t in LIVE.tables.values()
        for chain in ("hostports", "hostip_hostports")
        for r in t.rules_of(chain)
    }
    (gone,) = added - with_dnat
    return gone


GONE = _deleted_from()


def _cache(directory: Path, container_ids: Sequence[str]) -> str:
    (directory / "results").mkdir(parents=True, exist_ok=True)
    for step in RECIPE["steps"]:
        if step["command"] == "ADD" and step["containerId"] in container_ids:
            conf = step["conf"]
            ips = [ip["address"] for ip in conf["prevResult"]["ips"]]
            rp.write_cni_cache(directory, conf["name"], step["containerId"], "eth0", conf,
                               conf["runtimeConfig"]["portMappings"], ips)  # fmt: skip
    return str(directory)


def _check(cache: str) -> List[Dict]:
    done = run(["check", "--nft-snapshot", SNAP, "--cni-cache-dir", cache, "-o", "json"])
    assert done.returncode == 1, done.stderr
    return json.loads(done.stdout)["problems"]


def test_leftovers_are_exactly_the_masquerade_rules_of_the_container() -> None:
    found = leftovers(LIVE)
    expected = {
        (family, r.handle)
        for family, table in LIVE.tables.items()
        for r in table.rules_of(MASQUERADING)
        if r.comment == GONE
    }
    assert expected, "the fixture has no masquerade rules of the container"
    assert {(left.family, h) for left in found for h in left.handles} == expected
    assert {left.container_id for left in found} == {GONE}


@pytest.mark.parametrize("case", nftcases.CASES)
def test_plugin_made_nodes_have_no_leftovers(case: str) -> None:
    """Every state the plugin itself left (DEL included) has a DNAT rule for each
    masquerade rule: nothing is reported on them."""
    assert leftovers(nftcases.live(case)) == []


def test_not_cached_is_stale(tmp_path: Path) -> None:
    others = [s["containerId"] for s in RECIPE["steps"] if s["containerId"] != GONE]
    problems = _check(_cache(tmp_path, others))
    assert {(p["kind"], p["family"], p["container_id"]) for p in problems} == {
        ("stale", 4, GONE),
        ("stale", 6, GONE),
    }
    assert all(p["chain"] == "masquerading" and "gc" in p["fix"] for p in problems)


def test_cached_and_nft_backed_is_missing_rules_only(tmp_path: Path) -> None:
    everyone = [s["containerId"] for s in RECIPE["steps"]]
    problems = _check(_cache(tmp_path, everyone))
    assert {(p["kind"], p["family"], p["container_id"]) for p in problems} == {
        ("nft-missing-rules", 4, GONE),
        ("nft-missing-rules", 6, GONE),
    }


def test_without_a_cache_it_is_incomplete(tmp_path: Path) -> None:
    problems = _check(str(tmp_path))  # no results/ folder: no cache at all
    assert {(p["kind"], p["family"], p["container_id"]) for p in problems} == {
        ("incomplete", 4, GONE),
        ("incomplete", 6, GONE),
    }
    v4 = next(p for p in problems if p["family"] == 4)
    handles = [left.handles for left in leftovers(LIVE) if left.family == 4][0]
    assert f"(handle {', '.join(map(str, handles))})" in v4["detail"]
    assert v4["backend"] == "nftables"


def test_cached_on_the_iptables_backend_is_incomplete_and_its_fix_no_prose(tmp_path: Path) -> None:
    """The container cached with `"backend": "iptables"` (a node migrated back, or
    rules written by hand; a config naming no backend follows its rules into nftables,
    `nft-missing-rules`): its masquerade rules there are
    `incomplete`, and gc keeps a cached container, so no command fixes them now: JSON
    `fix` is null and the ways (gc once it is gone, `nft delete rule` by hand) are in
    `why` (SPEC §3 JSON: `fix` is a command or null). It was the whole prose,
    `portmapctl gc --cni-cache-dir DIR once the container is gone; while it runs, by
    hand, ...`, which as a command is refused (exit 2), and on a terminal it was
    wrapped with `\\` as one command to paste."""
    everyone = [s["containerId"] for s in RECIPE["steps"]]
    cache = _cache(tmp_path, everyone)
    step = next(s for s in RECIPE["steps"] if s["containerId"] == GONE)
    conf = {**step["conf"], "backend": "iptables"}
    ips = [ip["address"] for ip in conf["prevResult"]["ips"]]
    rp.write_cni_cache(cache, conf["name"], GONE, "eth0", conf,
                       conf["runtimeConfig"]["portMappings"], ips)  # fmt: skip
    problems = [p for p in _check(cache) if p["container_id"] == GONE]
    assert {(p["kind"], p["family"]) for p in problems} >= {("incomplete", 4), ("incomplete", 6)}
    for p in problems:
        if p["kind"] == "incomplete":
            assert p["fix"] is None, p["fix"]
            assert f"`portmapctl gc --cni-cache-dir {cache}`" in p["why"]
            assert "nft delete rule" in p["why"]
