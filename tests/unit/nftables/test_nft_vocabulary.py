"""One vocabulary in every document (SPEC §3, docs/json.md): an nftables row's `chain`
is the bare nft chain (`hostports`, `masquerading`, ...) in list, check and gc alike,
never `nft:`-prefixed and never a container ID; `backend` says it is nftables. Only
the text tables write `nft:hostports`, for people.

On a real v1.9.1 dump (tests/fixtures/nft/v191-shadowed: ctr-a and ctr-b, both
tcp/8080) with an empty CNI cache: both containers are stale, ctr-b is shadowed.
"""

from __future__ import annotations

import json
from pathlib import Path

import nftcases
from json_schemas import validated
from pmctl import run

from portmapctl import render
from portmapctl.nftables.ruleset import CONTAINER_CHAINS, MASQUERADING
from portmapctl.ops.gc import GcOptions, GcResult, Sources
from portmapctl.ops.gc.nft import plan_nft

CASE = "v191-shadowed"
SNAP = str(nftcases.HERE / f"{CASE}.nft.json")
NFT_CHAINS = {*CONTAINER_CHAINS, MASQUERADING}


def validate_document(command: str, text: str) -> dict:
    return validated(command, text)


def _empty_cache(tmp_path: Path) -> str:
    (tmp_path / "results").mkdir()
    return str(tmp_path)


def test_list_and_check_name_the_same_bare_chain(tmp_path: Path) -> None:
    cache = _empty_cache(tmp_path)
    listed = run(["list", "--nft-snapshot", SNAP, "--cni-cache-dir", cache, "-o", "json"])
    assert listed.returncode == 0, listed.stderr
    rows = validate_document("list", listed.stdout)["mappings"]
    checked = run(["check", "--nft-snapshot", SNAP, "--cni-cache-dir", cache, "-o", "json"])
    assert checked.returncode == 1, checked.stderr
    problems = validate_document("check", checked.stdout)["problems"]
    assert {p["kind"] for p in problems} >= {"stale", "shadowed"}
    for p in problems:
        assert p["backend"] == "nftables" and p["chain"] in NFT_CHAINS, p
    by_row = {(m["container_id"], m["family"]): m["chain"] for m in rows}
    for p in problems:
        if p["kind"] in ("stale", "shadowed"):
            assert p["chain"] == by_row[(p["container_id"], p["family"])] == "hostports"


def test_check_text_keeps_the_nft_prefix_for_people(tmp_path: Path) -> None:
    cache = _empty_cache(tmp_path)
    wide = run(["check", "--nft-snapshot", SNAP, "--cni-cache-dir", cache, "-o", "wide"])
    assert "nft:hostports" in wide.stdout


def test_gc_names_the_chain_of_the_rules_not_the_container() -> None:
    """gc said `"chain": "nft:ctr-a"`: a container ID. Now the chain of its DNAT rules;
    the key its sightings and a prompt's confirmation use is still per container."""
    plan = plan_nft(
        nftcases.live(CASE), [], Sources(keep=("nobody",)), GcOptions(min_age=0), {}, (4, 6)
    )
    assert {c.container_id for c in plan.removed} == {"ctr-a", "ctr-b"}
    assert {c.key.chain for c in plan.removed} == {"nft:ctr-a", "nft:ctr-b"}
    result = GcResult(False, tuple(plan.removed), (), plan.kept, 0)
    document = json.dumps(render.gc_json(result, 0.0, {"dirs": [], "present": True, "entries": 0}))
    doc = validate_document("gc", document)
    assert [(c["backend"], c["chain"], c["chain_type"]) for c in doc["removed"]] == [
        ("nftables", "hostports", "nft-rule")
    ] * 2
    assert "nft:hostports" in render.gc_table(result, 0.0, wide=True).plain
