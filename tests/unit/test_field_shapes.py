"""Issue 15: nodes written by older plugin versions, read right by list/check/gc.

Each test reads a fixture of tests/fixtures/field (real posted dumps, or dumps derived
from that version's source: README.md there) through the command line with
`--snapshot`, so no root is needed. One test per bullet of the issue.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Sequence

import realplugin
from pmctl import assert_error, run

from portmapctl.iptables.chains import chain_name

FIELD = Path(__file__).resolve().parents[1] / "fixtures" / "field"
FIXTURES = FIELD.parent
ID_A = "3f6e3b0a4b7c2d1e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e"
ID_B = "8c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d"
DN_A = chain_name("mynet", ID_A)
DN_B = chain_name("mynet", ID_B)
SN_A = chain_name("mynet", ID_A, "SN-")
SN_B = chain_name("mynet", ID_B, "SN-")


def text(name: str) -> str:
    return (FIELD / f"{name}.v4.save").read_text()


def snapshot(tmp_path: Path, name: str, body: Optional[str] = None) -> str:
    path = tmp_path / f"{name}.v4.save"
    path.write_text(text(name) if body is None else body)
    return str(path)


def cache(tmp_path: Path, *containers, masq_all: bool = False) -> str:
    """A CNI cache with (container ID, IP/prefix, [(host port, container port, proto)])."""
    directory = tmp_path / "cache"
    (directory / "results").mkdir(parents=True, exist_ok=True)
    for cid, ip, ports in containers:
        mappings = [
            {"hostPort": h, "containerPort": c, "protocol": p, "hostIP": ""} for h, c, p in ports
        ]
        conf = realplugin.plugin_conf("mynet", [ip], mappings)
        if masq_all:
            conf["masqAll"] = True
        realplugin.write_cni_cache(directory, "mynet", cid, "eth0", conf, mappings, [ip])
    return str(directory)


def no_cache(tmp_path: Path) -> str:
    return str(tmp_path / "no-cache-here")


def cli(command: str, save: str, cache_dir: str, *more: str) -> List[str]:
    return [
        command,
        "--snapshot",
        save,
        "--snapshot6",
        "/dev/null",
        "--cni-cache-dir",
        cache_dir,
        *more,
    ]


def list_json(save: str, cache_dir: str) -> dict:
    done = run(cli("list", save, cache_dir, "-o", "json"))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def check_json(save: str, cache_dir: str, *more: str) -> dict:
    done = run(cli("check", save, cache_dir, "-o", "json", *more))
    assert done.returncode in (0, 1), done.stderr
    found = json.loads(done.stdout)
    found["exit"] = done.returncode
    return found


def rows(found: dict, chain: str) -> List[dict]:
    return [m for m in found["mappings"] if m["chain"] == chain]


def kinds(found: dict, chain: Optional[str] = None) -> List[str]:
    return sorted(p["kind"] for p in found["problems"] if chain is None or p["chain"] == chain)


def problem(found: dict, kind: str, chain: str) -> dict:
    (hit,) = [p for p in found["problems"] if p["kind"] == kind and p["chain"] == chain]
    return hit


# --- bullet 1: -d 0.0.0.0/32 is dead and shadows nothing ---------------------------------


def test_dead_rule_is_listed_dead_and_shadows_nothing(tmp_path):
    save = snapshot(tmp_path, "v0.8.5-dead-before-working")
    both = cache(
        tmp_path,
        (ID_A, "10.88.0.5/16", [(2202, 22, "tcp")]),
        (ID_B, "10.88.0.6/16", [(2202, 22, "tcp")]),
    )
    found = list_json(save, both)
    (dead,) = rows(found, DN_A)
    assert "dead" in dead["status"] and "ok" not in dead["status"]
    (working,) = rows(found, DN_B)
    assert working["status"] == ["ok"]
    checked = check_json(save, no_cache(tmp_path))
    assert "shadowed" not in kinds(checked)
    assert kinds(checked, DN_A) == ["dead"]
    assert "0.0.0.0/32" in problem(checked, "dead", DN_A)["detail"]


def test_posted_dead_chain_is_dead(tmp_path):
    # plugins#643 as posted: the chain alone, entered by nothing.
    found = list_json(snapshot(tmp_path, "plugins-643-dead"), no_cache(tmp_path))
    (row,) = found["mappings"]
    assert "dead" in row["status"]
    (working,) = list_json(snapshot(tmp_path, "plugins-643-hairpin32"), no_cache(tmp_path))[
        "mappings"
    ]
    assert "dead" not in working["status"]


# --- bullet 2: v0.6's port-less entry rules shadow ---------------------------------------


def test_portless_entries_shadow(tmp_path):
    save = snapshot(tmp_path, "v0.6-portless-entries")
    found = list_json(save, no_cache(tmp_path))
    by_port = {(m["chain"], m["host_port"]): m["status"] for m in found["mappings"]}
    # B's entry was prepended last: it is first and takes tcp/8080; 9090 is B's alone.
    assert by_port[(DN_B, 8080)] == ["ok"]
    assert by_port[(DN_B, 9090)] == ["ok"]
    assert by_port[(DN_A, 8080)] == ["shadowed"]
    checked = check_json(save, no_cache(tmp_path))
    assert DN_B in problem(checked, "shadowed", DN_A)["detail"]


# --- bullet 3: v0.7-v0.8.5 hairpin (and masqAll, v0.6) shapes are healthy ----------------


def test_old_hairpin_shape_is_healthy_with_its_cache(tmp_path):
    save = snapshot(tmp_path, "v0.7-prepend-hairpin")
    both = cache(
        tmp_path,
        (ID_A, "10.88.0.5/16", [(8080, 80, "tcp"), (5353, 53, "udp")]),
        (ID_B, "10.88.0.6/16", [(9090, 90, "tcp")]),
    )
    checked = check_json(save, both)
    assert checked["problems"] == [] and checked["exit"] == 0


def test_masq_all_shape_is_healthy_when_the_cache_says_masq_all(tmp_path):
    save = snapshot(tmp_path, "v1.2-masqall")
    cached = cache(tmp_path, (ID_A, "10.88.0.5/16", [(8080, 80, "tcp")]), masq_all=True)
    checked = check_json(save, cached)
    assert checked["problems"] == [] and checked["exit"] == 0


def test_v06_chains_are_not_missing_or_extra_rules(tmp_path):
    save = snapshot(tmp_path, "v0.6-portless-entries")
    both = cache(
        tmp_path,
        (ID_A, "10.88.0.5/16", [(8080, 80, "tcp")]),
        (ID_B, "10.88.0.6/16", [(8080, 80, "tcp"), (9090, 90, "tcp")]),
    )
    checked = check_json(save, both)
    # A v0.6 node needs no SETMARK/MASQ; its SN chains are legacy; A is shadowed.
    assert kinds(checked) == ["legacy", "legacy", "shadowed"]


def test_a_stale_address_is_still_reported_in_an_old_shape(tmp_path):
    save = snapshot(tmp_path, "v0.7-prepend-hairpin")
    moved = cache(
        tmp_path,
        (ID_A, "10.88.0.5/16", [(8080, 80, "tcp"), (5353, 53, "udp")]),
        (ID_B, "10.88.0.7/16", [(9090, 90, "tcp")]),
    )
    checked = check_json(save, moved)
    assert "missing-rules" in kinds(checked, DN_B)


# --- bullet 4: a CNI-SN- chain is its CNI-DN- twin's (same hash) --------------------------


def test_sn_chain_pairs_with_its_dn_chain(tmp_path):
    found = list_json(snapshot(tmp_path, "v0.6-portless-entries"), no_cache(tmp_path))
    assert all(m["snat"] for m in found["mappings"])
    # With its CNI-HOSTPORT-SNAT entries gone, the SN chain still names its container.
    body = "\n".join(
        line for line in text("v0.6-portless-entries").splitlines()
        if not line.startswith("-A CNI-HOSTPORT-SNAT")
    ) + "\n"  # fmt: skip
    save = snapshot(tmp_path, "v0.6-portless-entries", body)
    chains = {c["name"]: c for c in list_json(save, no_cache(tmp_path))["chains"]}
    assert chains[SN_A]["container_id"] == ID_A and chains[SN_A]["network"] == "mynet"
    assert chains[SN_B]["container_id"] == ID_B
    checked = check_json(save, no_cache(tmp_path))
    assert "unknown container" not in problem(checked, "legacy", SN_A)["detail"]
    assert ID_A[:12] in problem(checked, "legacy", SN_A)["detail"]


# --- bullet 5: an entered but empty chain returns; the next entry's chain takes the port --


def _emptied(name: str, chain: str) -> str:
    return (
        "\n".join(ln for ln in text(name).splitlines() if not ln.startswith(f"-A {chain} ")) + "\n"
    )


def test_empty_entered_chain_is_explained_truthfully(tmp_path):
    save = snapshot(
        tmp_path, "v0.8.5-dead-before-working", _emptied("v0.8.5-dead-before-working", DN_A)
    )
    checked = check_json(save, no_cache(tmp_path))
    hit = problem(checked, "incomplete", DN_A)
    said = hit["detail"] + " " + (hit.get("why") or "")
    assert DN_B in said and "reach the node itself" not in said
    assert "shadowed" not in kinds(checked)


def test_empty_chain_with_nothing_after_it_reaches_the_node(tmp_path):
    body = _emptied("v0.8.5-dead-before-working", DN_A)
    body = "\n".join(ln for ln in body.splitlines() if not ln.endswith(f"-j {DN_B}")) + "\n"
    checked = check_json(snapshot(tmp_path, "x", body), no_cache(tmp_path))
    hit = problem(checked, "incomplete", DN_A)
    assert "node itself" in hit["detail"] + " " + (hit.get("why") or "")


# --- bullet 6: without a cache, every shared chain is verified --------------------------


def _without(name: str, drop: Sequence[str]) -> str:
    return "\n".join(ln for ln in text(name).splitlines() if not any(d in ln for d in drop)) + "\n"


def test_check_without_cache_sees_setmark_without_its_rule(tmp_path):
    body = _without("v0.7-prepend-hairpin", ["-A CNI-HOSTPORT-SETMARK "])
    checked = check_json(snapshot(tmp_path, "x", body), no_cache(tmp_path))
    assert "missing-toplevel-rule" in kinds(checked, "CNI-HOSTPORT-SETMARK")
    assert checked["exit"] == 1


def test_check_without_cache_sees_a_missing_masq_chain(tmp_path):
    body = _without("v0.7-prepend-hairpin", ["CNI-HOSTPORT-MASQ"])
    checked = check_json(snapshot(tmp_path, "x", body), no_cache(tmp_path))
    assert "missing-toplevel" in kinds(checked, "CNI-HOSTPORT-MASQ")


def test_check_without_cache_wants_no_setmark_on_a_v06_node(tmp_path):
    checked = check_json(snapshot(tmp_path, "v0.6-portless-entries"), no_cache(tmp_path))
    assert "missing-toplevel" not in kinds(checked)


# --- bullet 7: --snapshot refuses what iptables-restore refuses --------------------------


def test_snapshot_refuses_a_cut_negation(tmp_path):
    lines = (FIXTURES / "basic.v4.save").read_text().splitlines()
    at = lines.index("COMMIT")
    lines.insert(at, "-A POSTROUTING !")
    path = tmp_path / "cut.save"
    path.write_text("\n".join(lines) + "\n")
    done = run(["list", "--snapshot", str(path), "--snapshot6", "/dev/null"])
    assert_error(done, 2, str(path), f"line {at + 1}", "!")


def test_snapshot_refuses_an_option_without_its_value(tmp_path):
    lines = (FIXTURES / "basic.v4.save").read_text().splitlines()
    at = lines.index("COMMIT")
    lines.insert(at, "-A POSTROUTING -j")
    path = tmp_path / "cut.save"
    path.write_text("\n".join(lines) + "\n")
    done = run(["list", "--snapshot", str(path), "--snapshot6", "/dev/null"])
    assert_error(done, 2, str(path), f"line {at + 1}")


# --- bullet 8: a --cni-cache-dir that is absent or has no results/ ----------------------


def test_list_warns_when_the_cache_dir_is_absent(tmp_path):
    save = snapshot(tmp_path, "v0.7-prepend-hairpin")
    for cache_dir in (no_cache(tmp_path), str(tmp_path)):  # absent; no results/ in it
        done = run(cli("list", save, cache_dir, "-o", "json"))
        assert done.returncode == 0
        assert cache_dir in done.stderr and "stale" in done.stderr
        assert json.loads(done.stdout)["cache"]["present"] is False
        table = run(cli("list", save, cache_dir))
        assert cache_dir in table.stderr


# --- gc reads the same catalogue ---------------------------------------------------------


def _gc_plan(body: str, **liveness):
    from portmapctl.iptables.ruleset import parse_save
    from portmapctl.ops import gc

    table = parse_save(body, 4)
    return gc.plan_family(table, gc.Liveness(**liveness), {}, 1000.0, 0.0)


def test_gc_keeps_an_orphaned_sn_chain_of_a_kept_container():
    # CNI-HOSTPORT-SNAT flushed: the SN chains are entered by nothing, yet each is
    # its DN twin's, and --keep (an ID prefix) keeps both.
    body = (
        "\n".join(
            ln
            for ln in text("v0.6-portless-entries").splitlines()
            if not ln.startswith("-A CNI-HOSTPORT-SNAT")
        )
        + "\n"
    )
    plan = _gc_plan(body, keep=(ID_A[:8], ID_B[:8]))
    assert plan.removed == () and plan.kept == 4


def test_gc_removes_a_v06_container_with_its_portless_entry_ports():
    plan = _gc_plan(text("v0.6-portless-entries"), keep=(ID_B[:8],))
    removed = {c.chain: c for c in plan.removed}
    assert set(removed) == {DN_A, SN_A}
    assert removed[DN_A].host_ports == (("tcp", 8080),)
    assert removed[SN_A].network == "mynet" and removed[SN_A].container_id == ID_A


def test_repair_plans_nothing_for_an_old_working_shape(tmp_path):
    # The plan --repair applies, on the v0.7 node with both containers cached.
    from portmapctl.cni.cache import read_cache
    from portmapctl.iptables.ruleset import parse_save
    from portmapctl.ops import check
    from portmapctl.ops.check.repair import _plan

    directory = cache(
        tmp_path,
        (ID_A, "10.88.0.5/16", [(8080, 80, "tcp"), (5353, 53, "udp")]),
        (ID_B, "10.88.0.6/16", [(9090, 90, "tcp")]),
    )
    configs = check.cached_configs(read_cache(directory))
    live = parse_save(text("v0.7-prepend-hairpin"), 4)
    assert len(configs) == 2
    assert not _plan(configs, None)(live)
