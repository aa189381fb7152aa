"""Issue 15: nodes written by older plugin versions, read right by list/check/gc.

Each test reads a fixture of tests/fixtures/field (real posted dumps, or dumps derived
from that version's source: README.md there) through the command line with
`--snapshot`, so no root is needed. One test per bullet of the issue.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import List, Optional, Sequence

import pytest
import realplugin
from pmctl import assert_error, run

from portmapctl.iptables.chains import chain_name

FIELD = Path(__file__).resolve().parents[1] / "fixtures" / "field"
FIXTURES = FIELD.parent
# A real ip6tables-save -t nat of a node without IPv6 mappings (an empty file is refused).
EMPTY_V6 = str(FIXTURES / "basic.v6.save")
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


def cache(tmp_path: Path, *containers, masq_all: bool = False, network: str = "mynet") -> str:
    """A CNI cache with (container ID, IP/prefix, [(host port, container port, proto)]);
    a port may carry a fourth item, its host IP."""
    directory = tmp_path / "cache"
    (directory / "results").mkdir(parents=True, exist_ok=True)
    for cid, ip, ports in containers:
        mappings = [
            {"hostPort": h, "containerPort": c, "protocol": p, "hostIP": "".join(host)}
            for h, c, p, *host in ports
        ]
        conf = realplugin.plugin_conf(network, [ip], mappings)
        if masq_all:
            conf["masqAll"] = True
        realplugin.write_cni_cache(directory, network, cid, "eth0", conf, mappings, [ip])
    return str(directory)


def empty_cache(tmp_path: Path) -> str:
    """A CNI cache directory with no entries: every chain is stale."""
    directory = tmp_path / "empty-cache"
    (directory / "results").mkdir(parents=True, exist_ok=True)
    return str(directory)


def no_cache(tmp_path: Path) -> str:
    return str(tmp_path / "no-cache-here")


def cli(command: str, save: str, cache_dir: str, *more: str) -> List[str]:
    return [
        command,
        "--snapshot",
        save,
        "--snapshot6",
        EMPTY_V6,
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


def test_a_cached_dead_chain_is_dead_alone_and_its_repair_takes_no_port(tmp_path):
    """A chain an old plugin wrote for host IP 0.0.0.0 is in its version's exact shape:
    with its container cached it is `dead` (what check says to do about it), never
    missing/extra rules for --repair to rewrite into a working chain. That rewrite
    (before) put A's chain, entered first, on tcp/2202 and took the port from B, the
    live container that had its traffic: B became shadowed."""
    save = snapshot(tmp_path, "v0.8.5-dead-before-working")
    both = cache(
        tmp_path,
        (ID_A, "10.88.0.5/16", [(2202, 22, "tcp", "0.0.0.0")]),
        (ID_B, "10.88.0.6/16", [(2202, 22, "tcp")]),
    )
    checked = check_json(save, both)
    assert kinds(checked) == ["dead"] and checked["exit"] == 1
    assert problem(checked, "dead", DN_A)["container_id"] == ID_A

    from portmapctl.cni.cache import read_cache
    from portmapctl.iptables.ruleset import parse_save
    from portmapctl.ops import check
    from portmapctl.ops.check.repair_plan import _plan

    configs = check.cached_configs(read_cache(both))
    assert len(configs) == 2
    assert not _plan(configs, None)(parse_save(text("v0.8.5-dead-before-working"), 4))


def test_one_dead_mapping_checked_alone_is_dead_and_its_repair_takes_no_port(tmp_path):
    """A's mapping given on the command line, as a script asks in place of the
    plugin's CHECK: its chain in v0.8.5's exact shape for host IP 0.0.0.0 is `dead`,
    as the node check says, not missing/extra rules that --repair rewrote into a
    working chain, entered first, taking tcp/2202 from B (before)."""
    save = snapshot(tmp_path, "v0.8.5-dead-before-working")
    given = ["--network", "mynet", "--container", ID_A, "--ip", "10.88.0.5/16",
             "-p", "0.0.0.0:2202:22/tcp"]  # fmt: skip
    checked = check_json(save, empty_cache(tmp_path), *given)
    assert kinds(checked) == ["dead"] and checked["exit"] == 1
    assert problem(checked, "dead", DN_A)["container_id"] == ID_A

    from portmapctl.core.mapping import MappingConfig, PortMapping
    from portmapctl.iptables.ruleset import parse_save
    from portmapctl.ops.check.repair_plan import _plan

    config = MappingConfig(
        "mynet",
        ID_A,
        (ipaddress.ip_interface("10.88.0.5/16"),),
        (PortMapping(2202, 22, "tcp", "0.0.0.0"),),
    )
    assert not _plan(None, config)(parse_save(text("v0.8.5-dead-before-working"), 4))


# A's dead chain (v0.8.5, host IP 0.0.0.0) lost its localhost rule; or A has a second
# interface on mynet (net1, 10.88.0.7) whose ADD appended its rules to the same chain.
A_LOCALHOST = f"-A {DN_A} -s 127.0.0.1/32 -d 0.0.0.0/32 -p tcp -m tcp --dport 2202"
A_NET1 = (
    f"-A {DN_A} -s 10.88.0.7/32 -d 0.0.0.0/32 -p tcp -m tcp --dport 2202 -j CNI-HOSTPORT-SETMARK\n"
    f"-A {DN_A} -d 0.0.0.0/32 -p tcp -m tcp --dport 2202 -j DNAT --to-destination 10.88.0.7:22\n"
)


def dead_variant(case: str) -> str:
    body = text("v0.8.5-dead-before-working")
    if case == "lost-a-rule":
        return "\n".join(ln for ln in body.splitlines() if not ln.startswith(A_LOCALHOST)) + "\n"
    last_of_a = f"-A {DN_A} -d 0.0.0.0/32 -p tcp -m tcp --dport 2202 -j DNAT"
    at = body.index("\n", body.index(last_of_a)) + 1
    shared = body[:at] + A_NET1 + body[at:]
    if case == "shared-lost-a-mark":  # net1's hairpin mark gone
        net1_mark = f"-A {DN_A} -s 10.88.0.7/32"
        return "\n".join(ln for ln in shared.splitlines() if not ln.startswith(net1_mark)) + "\n"
    return shared


def dead_cache(tmp_path: Path, case: str) -> str:
    directory = Path(cache(
        tmp_path,
        (ID_A, "10.88.0.5/16", [(2202, 22, "tcp", "0.0.0.0")]),
        (ID_B, "10.88.0.6/16", [(2202, 22, "tcp")]),
    ))  # fmt: skip
    if case.startswith("shared"):
        mappings = [{"hostPort": 2202, "containerPort": 22, "protocol": "tcp", "hostIP": "0.0.0.0"}]
        conf = realplugin.plugin_conf("mynet", ["10.88.0.7/16"], mappings)
        conf["prevResult"]["interfaces"][0]["name"] = "net1"
        realplugin.write_cni_cache(
            directory, "mynet", ID_A, "net1", conf, mappings, ["10.88.0.7/16"]
        )
    return str(directory)


def dead_plan(cache_dir: str, form: str):
    """(the check's mapping options, the repair's planner) of A's eth0 mapping (form
    "mapping") or of the whole node."""
    from portmapctl.cni.cache import read_cache
    from portmapctl.ops import check
    from portmapctl.ops.check.expected import sharing_chain
    from portmapctl.ops.check.repair_plan import _plan

    attachments = read_cache(cache_dir)
    configs = check.cached_configs(attachments)
    if form == "node":
        return [], _plan(configs, None)
    (a_eth0,) = [c for c in configs if str(c.address(4)) == "10.88.0.5/16"]
    given = ["--network", "mynet", "--container", ID_A, "--ip", "10.88.0.5/16",
             "-p", "0.0.0.0:2202:22/tcp"]  # fmt: skip
    return given, _plan(None, a_eth0, sharing=sharing_chain(a_eth0, attachments, "eth0"))


@pytest.mark.parametrize("form", ["node", "mapping"])
@pytest.mark.parametrize("case", ["lost-a-rule", "shared", "shared-lost-a-mark"])
def test_a_dead_chain_not_found_whole_stays_dead(tmp_path, case, form):
    """A dead chain not exactly in one config's shape (it lost a rule; the container's
    two interfaces share it) is judged in the dead shape its plugin wrote, not the
    current one: before, --repair rewrote it without `-d 0.0.0.0/32`, and A's entry
    rule, first in CNI-HOSTPORT-DNAT, took tcp/2202 from B. Now a lost rule comes back
    as written (dead), and a whole shared chain is `dead` and left alone. A shared
    chain that lost one interface's /32 mark gets it back in one repair, and a second
    changes nothing (before: the first wrote net1's part in v0.8.6's shape, the
    second rewrote the whole chain so, as the chain's one DNAT target per port made
    net1's mark on its own address a mark of no known shape)."""
    from portmapctl.iptables.access.memory import MemoryBackend
    from portmapctl.iptables.ruleset import parse_save
    from portmapctl.iptables.shapes import first_taker

    body = dead_variant(case)
    cache_dir = dead_cache(tmp_path, case)
    given, plan = dead_plan(cache_dir, form)
    checked = check_json(snapshot(tmp_path, "x", body), cache_dir, *given)
    expected = ["dead"] if case == "shared" else ["dead", "missing-rules"]
    assert kinds(checked) == expected and checked["exit"] == 1
    hit = problem(checked, "dead", DN_A)
    assert hit["container_id"] == ID_A
    assert hit["detail"].startswith("tcp/2202 only") and "takes tcp/2202 instead" in hit["detail"]

    table = parse_save(body, 4)
    memory = MemoryBackend({4: table})
    memory.apply(plan(table))
    after = memory.read(4)
    # (the chain as its plugin wrote it: the lost rule back in its dead form)
    whole = text("v0.8.5-dead-before-working") if case == "lost-a-rule" else dead_variant("shared")
    assert after.rules(DN_A) == parse_save(whole, 4).rules(DN_A)
    assert first_taker(after, "tcp", 2202, -1) == DN_B
    assert not plan(after)  # settled in one repair


def test_a_dead_v06_chain_is_dead_alone(tmp_path):
    # v0.6 wrote host IP 0.0.0.0 as a dead -d too: B's chain, entered first, is dead
    # on tcp/8080 (A gets it) and working on 9090; nothing for --repair to rewrite.
    body = text("v0.6-portless-entries").replace(
        f"-A {DN_B} -p tcp -m tcp --dport 8080",
        f"-A {DN_B} -d 0.0.0.0/32 -p tcp -m tcp --dport 8080",
    )
    both = cache(
        tmp_path,
        (ID_A, "10.88.0.5/16", [(8080, 80, "tcp")]),
        (ID_B, "10.88.0.6/16", [(8080, 80, "tcp", "0.0.0.0"), (9090, 90, "tcp")]),
    )
    checked = check_json(snapshot(tmp_path, "x", body), both)
    assert kinds(checked) == ["dead", "legacy", "legacy"]
    assert problem(checked, "dead", DN_B)["container_id"] == ID_B


@pytest.mark.parametrize("lost", ["its-dead-rule", "its-dead-rule-and-entry", "nothing"])
def test_a_v06_chain_without_its_dead_rule_gets_it_back_dead(tmp_path, lost):
    """v0.6 wrote B's host IP 0.0.0.0 port dead; B's port-less entry comes first. With
    that rule lost, nothing in B's chain says `-d 0.0.0.0/32`, but its port-less entry
    says v0.6, which wrote every 0.0.0.0 port dead: --repair puts the rule back dead,
    and A keeps tcp/8080 (judged in the current shape, B's chain took it from A). A
    0.0.0.0 port's rule written live (no -d) is kept live, not killed."""
    from portmapctl.cni.cache import read_cache
    from portmapctl.iptables.access.memory import MemoryBackend
    from portmapctl.iptables.ruleset import parse_save
    from portmapctl.iptables.shapes import first_taker
    from portmapctl.ops import check
    from portmapctl.ops.check.repair_plan import _plan

    dead_rule = f"-A {DN_B} -d 0.0.0.0/32 -p tcp -m tcp --dport 8080"
    written = text("v0.6-portless-entries").replace(
        f"-A {DN_B} -p tcp -m tcp --dport 8080", dead_rule
    )
    body = written
    if lost != "nothing":
        # (and B's entry: the paired CNI-SN- chain still says v0.6)
        gone = (
            dead_rule,
            f'-A CNI-HOSTPORT-DNAT -m comment --comment "dnat name: \\"mynet\\" id: \\"{ID_B}',
        )
        gone = gone if lost == "its-dead-rule-and-entry" else gone[:1]
        body = "\n".join(ln for ln in written.splitlines() if not ln.startswith(gone)) + "\n"
        assert body.count("\n") == written.count("\n") - len(gone)
    both = cache(
        tmp_path,
        (ID_A, "10.88.0.5/16", [(8080, 80, "tcp")]),
        (ID_B, "10.88.0.6/16", [(8080, 80, "tcp", "0.0.0.0"), (9090, 90, "tcp")]),
    )
    checked = check_json(snapshot(tmp_path, "x", body), both)
    if lost == "nothing":
        assert kinds(checked) == ["dead", "legacy", "legacy"]
    elif lost == "its-dead-rule":  # (no dead rule left to list; missing as v0.6 wrote it)
        assert kinds(checked) == ["legacy", "legacy", "missing-rules"]
        assert dead_rule in problem(checked, "missing-rules", DN_B)["detail"]

    table = parse_save(body, 4)
    memory = MemoryBackend({4: table})
    memory.apply(_plan(check.cached_configs(read_cache(both)), None)(table))
    after = memory.read(4)
    assert after.rules(DN_B) == parse_save(written, 4).rules(DN_B)
    assert first_taker(after, "tcp", 8080, -1) == DN_A
    if lost != "its-dead-rule-and-entry":
        assert first_taker(after, "tcp", 9090, -1) == DN_B


def test_a_host_ip_0_0_0_0_rule_written_live_is_not_killed():
    """A v0.8.5-shaped chain whose rules for a host IP 0.0.0.0 port carry no `-d`
    (they forward; what wrote them is not what the config says): not read as dead, so
    --repair does not rewrite them dead (the port stays A's, first in the chain)."""
    from portmapctl.core.mapping import MappingConfig, PortMapping
    from portmapctl.iptables.access.memory import MemoryBackend
    from portmapctl.iptables.ruleset import parse_save
    from portmapctl.iptables.shapes import first_taker
    from portmapctl.ops.check.repair_plan import _plan

    written = text("v0.8.5-dead-before-working").replace(" -d 0.0.0.0/32", "")
    body = (
        "\n".join(
            ln
            for ln in written.splitlines()
            if not ln.startswith(A_LOCALHOST.replace(" -d 0.0.0.0/32", ""))
        )
        + "\n"
    )
    table = parse_save(body, 4)
    assert first_taker(table, "tcp", 2202, -1) == DN_A
    config = MappingConfig(
        "mynet",
        ID_A,
        (ipaddress.ip_interface("10.88.0.5/16"),),
        (PortMapping(2202, 22, "tcp", "0.0.0.0"),),
    )
    memory = MemoryBackend({4: table})
    memory.apply(_plan(None, config)(table))
    after = memory.read(4)
    assert not any("0.0.0.0/32" in " ".join(r) for r in after.rules(DN_A))
    assert first_taker(after, "tcp", 2202, -1) == DN_A


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


def test_a_v06_node_with_its_cache_still_needs_its_jumps(tmp_path):
    """v0.6 made no SETMARK/MASQ, but it entered CNI-HOSTPORT-DNAT from PREROUTING and
    OUTPUT as every version since: with the containers cached, missing jumps are still
    missing (a firewall reload), and the repair writes what v0.6 wrote there."""
    body = _without("v0.6-portless-entries", ["-A PREROUTING ", "-A OUTPUT "])
    both = cache(
        tmp_path,
        (ID_A, "10.88.0.5/16", [(8080, 80, "tcp")]),
        (ID_B, "10.88.0.6/16", [(8080, 80, "tcp"), (9090, 90, "tcp")]),
    )
    checked = check_json(snapshot(tmp_path, "x", body), both)
    assert kinds(checked) == ["legacy", "legacy", "missing-jump", "missing-jump", "shadowed"]
    assert {p["chain"] for p in checked["problems"] if p["kind"] == "missing-jump"} == {
        "PREROUTING", "OUTPUT",
    }  # fmt: skip
    assert "missing-toplevel" not in kinds(checked)  # (no SETMARK/MASQ wanted, as before)


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
    chains = {c["chain"]: c for c in list_json(save, no_cache(tmp_path))["chains"]}
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
    done = run(["list", "--snapshot", str(path), "--snapshot6", EMPTY_V6])
    assert_error(done, 2, str(path), f"line {at + 1}", "!")


def test_snapshot_refuses_an_option_without_its_value(tmp_path):
    lines = (FIXTURES / "basic.v4.save").read_text().splitlines()
    at = lines.index("COMMIT")
    lines.insert(at, "-A POSTROUTING -j")
    path = tmp_path / "cut.save"
    path.write_text("\n".join(lines) + "\n")
    done = run(["list", "--snapshot", str(path), "--snapshot6", EMPTY_V6])
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
    from portmapctl.ops.check.repair_plan import _plan

    directory = cache(
        tmp_path,
        (ID_A, "10.88.0.5/16", [(8080, 80, "tcp"), (5353, 53, "udp")]),
        (ID_B, "10.88.0.6/16", [(9090, 90, "tcp")]),
    )
    configs = check.cached_configs(read_cache(directory))
    live = parse_save(text("v0.7-prepend-hairpin"), 4)
    assert len(configs) == 2
    assert not _plan(configs, None)(live)


# --- posted dumps: nerdctl (lima), cilium#6499 (v0.6), flannel UDP (hwchiu), podman ------

NERDCTL_8082 = "default-3d263c6a1c710edc1362764464c073ca834ec9adc0766411772f2b7a3dd1de0f"
NERDCTL_HOSTIP = "default-c93e2a3a2264f98647f0d33dc80d88de81c0710bf30ea822e2ed19213f9c53b5"
NERDCTL_EMPTY = "default-393bd750d06186633a02b44487765ce038b7df434bfb16027ca1903bf5f3dc31"
LIMA_8082 = "CNI-DN-04579c7bb67f4c3f6cca0"
LIMA_HOSTIP = "CNI-DN-2e2f8d5b91929ef9fc152"
LIMA_EMPTY = "CNI-DN-2d72aeb202429907277c5"
CILIUM_A = "883b02f84c3cdd3e5e8432fecab3306a6a180c32aa0a6c78a0378d532cbe9d13"
CILIUM_DN_A = "CNI-DN-c20774ee0bf22c7e19507"
CILIUM_SN_A = "CNI-SN-c20774ee0bf22c7e19507"
CILIUM_DN_B = "CNI-DN-9b37bc50e0ab952351885"
HWCHIU_ID = "c55a611c4b8e8a4bef86ac05a3328258a858165b3bf4a3982997f9662bd82916"
HWCHIU_DN = "CNI-DN-eb9116f984fef9374c9e2"
PODMAN_A = "fa36b49b8bea7190b08c43e96ab22615774c259264cbebcac1ab598114f062b4"
PODMAN_B = "47c6c0a0689ac856ca395ac0390bbaec5c53fc8d29f2089a19a84b8312cad638"
PODMAN_DN_A = "CNI-DN-fcb138bbe0a69715574a4"
PODMAN_DN_B = "CNI-DN-01a0df798eef277db5129"


def statuses(found: dict) -> dict:
    """chain -> its status words: a mapping row's, else (no DNAT rule) the chain's."""
    by_chain = {c["chain"]: c["status"] for c in found["chains"]}
    by_chain.update({m["chain"]: m["status"] for m in found["mappings"]})
    return by_chain


def read_node(save: str, cache_dir: str) -> tuple:
    """(each chain's statuses from `list`, `check`'s JSON) for one dump and cache."""
    return statuses(list_json(save, cache_dir)), check_json(save, cache_dir)


def lima_cache(tmp_path: Path) -> str:
    # The two containers the test data says run: 8082 and 127.0.0.1:8081.
    return cache(
        tmp_path,
        (NERDCTL_8082, "10.4.0.10/24", [(8082, 80, "tcp")]),
        (NERDCTL_HOSTIP, "10.4.0.7/24", [(8081, 80, "tcp", "127.0.0.1")]),
        network="bridge",
    )


def test_nerdctl_dump_without_cache(tmp_path):
    save = snapshot(tmp_path, "lima-nerdctl-hostip")
    found = list_json(save, no_cache(tmp_path))
    assert statuses(found) == {
        LIMA_8082: ["ok"],
        LIMA_HOSTIP: ["ok"],
        LIMA_EMPTY: ["incomplete"],
    }
    (hostip,) = rows(found, LIMA_HOSTIP)
    assert (hostip["host_ip"], hostip["host_port"], hostip["container_ip"]) == (
        "127.0.0.1",
        8081,
        "10.4.0.7",
    )
    assert (hostip["network"], hostip["container_id"]) == ("bridge", NERDCTL_HOSTIP)
    (working,) = rows(found, LIMA_8082)
    assert (working["host_ip"], working["host_port"]) == (None, 8082)
    # The bridge plugin's own CNI-<hash> chains are no portmap chains.
    assert {c["chain"] for c in found["chains"]} == {LIMA_8082, LIMA_HOSTIP, LIMA_EMPTY}
    checked = check_json(save, no_cache(tmp_path))
    assert kinds(checked) == ["incomplete"] and checked["exit"] == 1
    # The empty chain returns: the next entry's chain takes tcp/8082, nothing is shadowed.
    assert LIMA_8082 in problem(checked, "incomplete", LIMA_EMPTY)["detail"]


def test_nerdctl_dump_alone_says_what_it_cannot_tell(tmp_path):
    """The same IPv4 dump given alone (no --snapshot6, no cache: a support bundle of
    one file): the empty chain entered for tcp/8082 cannot be told from a container
    whose port has an IPv6 host IP (the plugin's IPv4 chain then has no rule for it),
    so it is not called incomplete; it was called ok without a word, and check said
    "healthy". Now list and check say, in a warning, what one family cannot tell."""
    save = snapshot(tmp_path, "lima-nerdctl-hostip")
    warning = (
        f"portmapctl: warning: {LIMA_EMPTY} (IPv4) is entered for tcp/8082 but has no rule"
        " for it: it is incomplete unless that port has an IPv6 host IP, which only the"
        " IPv6 table or the container's CNI cache entry can tell, and neither is at hand\n"
    )
    alone = ["--snapshot", save, "--cni-cache-dir", no_cache(tmp_path)]
    for command, code in (("list", 0), ("check", 0)):
        done = run([command, *alone])
        assert done.returncode == code, done.stderr
        assert warning in done.stderr, (command, done.stderr)
    listed = run(["list", *alone, "-o", "json"])
    assert statuses(json.loads(listed.stdout))[LIMA_EMPTY] == ["ok"]
    assert warning in listed.stderr  # (stderr: the JSON stays as it was)
    # Filtered to the other containers, the chain is not shown and not spoken of.
    other = run(["list", *alone, "--port", "8081"])
    assert "warning: CNI-DN" not in other.stderr, other.stderr
    # With the IPv6 table (or a cache) it is told, and there is nothing to warn of.
    both = run(["check", *alone, "--snapshot6", EMPTY_V6])
    assert both.returncode == 1 and "incomplete" in both.stdout, both.stdout
    assert "warning: CNI-DN" not in both.stderr, both.stderr


def test_nerdctl_dump_with_an_empty_cache(tmp_path):
    listed, checked = read_node(snapshot(tmp_path, "lima-nerdctl-hostip"), empty_cache(tmp_path))
    assert listed == {
        LIMA_8082: ["stale"],
        LIMA_HOSTIP: ["stale"],
        LIMA_EMPTY: ["stale", "incomplete"],
    }
    # One row a stale chain (gc removes it whole); its missing DNAT is said in it.
    assert kinds(checked) == ["stale"] * 3 and checked["exit"] == 1
    assert "tcp/8082" in problem(checked, "stale", LIMA_EMPTY)["detail"]


def test_nerdctl_dump_with_its_two_running_containers_cached(tmp_path):
    listed, checked = read_node(snapshot(tmp_path, "lima-nerdctl-hostip"), lima_cache(tmp_path))
    assert listed == {LIMA_8082: ["ok"], LIMA_HOSTIP: ["ok"], LIMA_EMPTY: ["stale", "incomplete"]}
    # The host-IP chain is exactly what the plugin makes for 127.0.0.1:8081.
    assert kinds(checked, LIMA_HOSTIP) == [] and kinds(checked, LIMA_8082) == []
    assert kinds(checked) == ["stale"]


def test_v06_post_without_cache(tmp_path):
    save = snapshot(tmp_path, "cilium-6499-v0.6")
    found = list_json(save, no_cache(tmp_path))
    by_port = {(m["chain"], m["protocol"], m["host_port"]): m["status"] for m in found["mappings"]}
    # Port-less entries of different ports: neither shadows the other.
    assert by_port == {(CILIUM_DN_A, "udp", 41529): ["ok"], (CILIUM_DN_B, "udp", 43407): ["ok"]}
    chains = {c["chain"]: c for c in found["chains"]}
    assert chains[CILIUM_SN_A]["status"] == ["legacy"]
    assert chains[CILIUM_SN_A]["chain_type"] == "legacy-snat"
    assert (chains[CILIUM_SN_A]["network"], chains[CILIUM_SN_A]["container_id"]) == (
        "cilium-portmap",
        CILIUM_A,
    )
    checked = check_json(save, no_cache(tmp_path))
    # The post shows no PREROUTING/OUTPUT jump; a v0.6 node needs no SETMARK/MASQ.
    assert kinds(checked) == ["legacy", "missing-jump", "missing-jump"]
    assert kinds(checked, CILIUM_SN_A) == ["legacy"]


def test_v06_post_with_an_empty_cache(tmp_path):
    listed, checked = read_node(snapshot(tmp_path, "cilium-6499-v0.6"), empty_cache(tmp_path))
    assert listed == {
        CILIUM_DN_A: ["stale"],
        CILIUM_DN_B: ["stale"],
        CILIUM_SN_A: ["stale", "legacy"],
    }
    assert kinds(checked) == ["legacy", "stale", "stale"] and checked["exit"] == 1
    assert "(stale)" in problem(checked, "legacy", CILIUM_SN_A)["detail"]


def test_posted_udp_hairpin32_chain_is_healthy(tmp_path):
    save = snapshot(tmp_path, "hwchiu-flannel-udp-hairpin32")
    found = list_json(save, no_cache(tmp_path))
    (row,) = found["mappings"]
    assert (row["network"], row["container_id"], row["protocol"], row["host_port"]) == (
        "cbr0",
        HWCHIU_ID,
        "udp",
        20001,
    )
    assert row["status"] == ["ok"] and row["snat"] is True
    checked = check_json(save, no_cache(tmp_path))
    # `grep 20001` kept none of the shared rules: they are reported, the chain is not.
    assert kinds(checked) == [
        "missing-jump",
        "missing-jump",
        "missing-toplevel",
        "missing-toplevel-rule",
    ]
    assert kinds(checked, HWCHIU_DN) == []
    cached = cache(tmp_path, (HWCHIU_ID, "10.244.0.6/24", [(20001, 20001, "udp")]), network="cbr0")
    assert rows(list_json(save, cached), HWCHIU_DN)[0]["status"] == ["ok"]
    # The v0.7 - v0.8.5 shape of its cached config: no missing or extra rules.
    assert kinds(check_json(save, cached), HWCHIU_DN) == []


def test_posted_udp_hairpin32_chain_with_an_empty_cache(tmp_path):
    save = snapshot(tmp_path, "hwchiu-flannel-udp-hairpin32")
    listed, checked = read_node(save, empty_cache(tmp_path))
    assert listed == {HWCHIU_DN: ["stale"]}
    assert kinds(checked) == ["stale"] and checked["exit"] == 1


def test_podman_dump_beside_docker_and_libvirt(tmp_path):
    save = snapshot(tmp_path, "x-monitor-podman-docker-libvirt")
    found = list_json(save, no_cache(tmp_path))
    assert statuses(found) == {PODMAN_DN_A: ["ok"], PODMAN_DN_B: ["ok"]}
    assert {(m["container_id"], m["host_port"], m["container_ip"]) for m in found["mappings"]} == {
        (PODMAN_A, 9070, "10.88.0.6"),
        (PODMAN_B, 9080, "10.88.0.7"),
    }
    checked = check_json(save, no_cache(tmp_path))
    assert checked["problems"] == [] and checked["exit"] == 0
    cached = cache(
        tmp_path,
        (PODMAN_A, "10.88.0.6/16", [(9070, 80, "tcp")]),
        (PODMAN_B, "10.88.0.7/16", [(9080, 80, "tcp")]),
        network="podman",
    )
    checked = check_json(save, cached)
    assert checked["problems"] == [] and checked["exit"] == 0


def test_podman_dump_with_an_empty_cache(tmp_path):
    save = snapshot(tmp_path, "x-monitor-podman-docker-libvirt")
    listed, checked = read_node(save, empty_cache(tmp_path))
    assert listed == {PODMAN_DN_A: ["stale"], PODMAN_DN_B: ["stale"]}
    assert kinds(checked) == ["stale", "stale"] and checked["exit"] == 1


@pytest.mark.parametrize(
    "name", ["lima-nerdctl-hostip", "x-monitor-podman-docker-libvirt"]
)  # fmt: skip
def test_gc_of_posted_nodes_touches_only_portmap_chains(name):
    # Nothing live: every CNI-DN- chain and its entry go; the bridge plugin's CNI-<hash>
    # chains (one shares its hash prefix with a CNI-DN- chain), DOCKER and LIBVIRT_PRT stay.
    body = text(name)
    plan = _gc_plan(body)
    dn = {ln.split()[0][1:] for ln in body.splitlines() if ln.startswith(":CNI-DN-")}
    assert {c.chain for c in plan.removed} == dn
    touched = {op.chain for op in plan.transaction.ops}
    assert touched == dn | {"CNI-HOSTPORT-DNAT"}


def test_add_over_a_dead_chain_warns_it_takes_the_port_of_the_container_behind():
    """add of A (host IP 0.0.0.0) on the v0.8.5 node rewrites A's dead chain in the
    current shape, and A's entry rule, first, then takes tcp/2202 from B, which had
    its traffic: add said nothing (it judged the table as it was, A dead)."""
    from portmapctl.cli.add_warnings import shadow_warnings
    from portmapctl.core import validate
    from portmapctl.core.mapping import PortMapping
    from portmapctl.iptables.ruleset import parse_save

    config = validate.mapping_config(
        network="mynet",
        container_id=ID_A,
        addresses=[validate.interface("10.88.0.5/16")],
        ports=[PortMapping(2202, 22, host_ip="0.0.0.0")],
    )
    table = parse_save(text("v0.8.5-dead-before-working"), 4)
    [warning] = shadow_warnings(config, {4: table})
    assert f"tcp/2202 is mapped to mynet/{ID_B[:12]} ({DN_B}) too" in warning
    assert warning.endswith("this mapping comes first and shadows it")


# A's dead chain (v0.8.5, host IP 0.0.0.0), entered first, that lost every rule showing
# its version (an empty chain), or B's port given to A by a cached config too: B has
# tcp/2202's traffic now.
A_DEAD = f"-A {DN_A} -s 10.88.0.5/32 -d 0.0.0.0/32", A_LOCALHOST, f"-A {DN_A} -d 0.0.0.0/32"


def moving_variant(case: str) -> str:
    body = text("v0.8.5-dead-before-working")
    if case == "dead-chain-emptied":
        return "\n".join(ln for ln in body.splitlines() if not ln.startswith(A_DEAD)) + "\n"
    # A written live for tcp/2202 (no host IP), then its DNAT rule lost
    body = body.replace(" -d 0.0.0.0/32", "")
    lost = f"-A {DN_A} -p tcp -m tcp --dport 2202 -j DNAT"
    return "\n".join(ln for ln in body.splitlines() if not ln.startswith(lost)) + "\n"


@pytest.mark.parametrize("form", ["node", "mapping"])
@pytest.mark.parametrize("case", ["dead-chain-emptied", "two-containers-one-port"])
def test_repair_never_moves_a_port_from_the_mapping_that_has_it(tmp_path, case, form):
    """A's chain, entered before B's, would take tcp/2202 from B if --repair wrote it in
    its config's current shape: a dead chain come back to life (nothing left of it says
    which plugin wrote it), or two cached containers on one port. B has the port's
    traffic now; the repair leaves A as it is and says who has the port (before: A's
    chain was rewritten and took the port from B)."""
    from portmapctl.cni.cache import read_cache
    from portmapctl.core.mapping import MappingConfig, PortMapping
    from portmapctl.iptables.access.memory import MemoryBackend
    from portmapctl.iptables.ruleset import parse_save
    from portmapctl.iptables.shapes import first_taker
    from portmapctl.ops import check
    from portmapctl.ops.check.repair import repair
    from portmapctl.ops.node import Node, NodeOptions

    body = moving_variant(case)
    host_ip = "0.0.0.0" if case == "dead-chain-emptied" else ""
    both = cache(
        tmp_path,
        (ID_A, "10.88.0.5/16", [(2202, 22, "tcp", host_ip)]),
        (ID_B, "10.88.0.6/16", [(2202, 22, "tcp")]),
    )
    table = parse_save(body, 4)
    assert first_taker(table, "tcp", 2202, -1) == DN_B
    memory = MemoryBackend({4: table})
    node = Node(NodeOptions(cache_dirs=(both,), backend="iptables", families=(4,)), memory)
    if form == "node":
        assert len(check.cached_configs(read_cache(both))) == 2
        unrepaired = repair(node, flush_udp=False).unrepaired
    else:
        a = MappingConfig(
            "mynet",
            ID_A,
            (ipaddress.ip_interface("10.88.0.5/16"),),
            (PortMapping(2202, 22, "tcp", host_ip or None),),
        )
        done = repair(node, a, flush_udp=False)
        unrepaired = done.unrepaired
    after = memory.read(4)
    assert after.rules(DN_A) == table.rules(DN_A)
    assert first_taker(after, "tcp", 2202, -1) == DN_B
    (why,) = [u for u in unrepaired if DN_A in u]
    assert f"take tcp/2202 from mynet/{ID_B[:12]} ({DN_B})" in why[-1]


def test_a_lost_portless_entry_names_the_ports_it_sent(tmp_path):
    """B's v0.6 entry rule (port-less: every port its chain DNATs) lost: missing-entry
    names those ports (before: `for None/None`)."""
    entry_b = f'-A CNI-HOSTPORT-DNAT -m comment --comment "dnat name: \\"mynet\\" id: \\"{ID_B}'
    written = text("v0.6-portless-entries")
    body = "\n".join(ln for ln in written.splitlines() if not ln.startswith(entry_b)) + "\n"
    assert body != written
    both = cache(
        tmp_path,
        (ID_A, "10.88.0.5/16", [(8080, 80, "tcp")]),
        (ID_B, "10.88.0.6/16", [(8080, 80, "tcp"), (9090, 90, "tcp")]),
    )
    checked = check_json(snapshot(tmp_path, "x", body), both)
    detail = problem(checked, "missing-entry", DN_B)["detail"]
    assert detail == (
        "no entry rule in CNI-HOSTPORT-DNAT for tcp/8080, tcp/9090"
        " (a port-less entry rule, as v0.6 wrote it) (1 of 1 missing)"
    )


@pytest.mark.parametrize("form", ["node", "mapping"])
@pytest.mark.parametrize(
    "lost", ["nothing", "-s 127.0.0.1/32", "-s 10.88.0.7/32", "-s 10.88.0.5/32"]
)
def test_a_v07_shared_dead_chain_is_judged_in_the_order_v07_wrote_it(tmp_path, lost, form):
    """v0.7 inserted the rules a chain lacked at its top: A's net1 ADD put its rules
    before eth0's in their shared (dead) chain. Found whole it is `dead` alone (before:
    also rules-order, and --repair reordered it as v0.8 appends); with a rule lost,
    --repair puts it back where v0.7 wrote it."""
    from portmapctl.iptables.access.memory import MemoryBackend
    from portmapctl.iptables.ruleset import parse_save
    from portmapctl.iptables.shapes import first_taker

    written = text("v0.7-prepend-shared-dead")
    body = written
    if lost != "nothing":
        body = "\n".join(
            ln for ln in written.splitlines() if not ln.startswith(f"-A {DN_A} {lost}")
        )
        body += "\n"
        assert body.count("\n") == written.count("\n") - 1
    cache_dir = dead_cache(tmp_path, "shared")
    given, plan = dead_plan(cache_dir, form)
    checked = check_json(snapshot(tmp_path, "x", body), cache_dir, *given)
    expected = ["dead"] if lost == "nothing" else ["dead", "missing-rules"]
    assert kinds(checked) == expected and checked["exit"] == 1

    table = parse_save(body, 4)
    memory = MemoryBackend({4: table})
    txn = plan(table)
    assert bool(txn) == (lost != "nothing")
    memory.apply(txn)
    after = memory.read(4)
    assert after.rules(DN_A) == parse_save(written, 4).rules(DN_A)
    assert first_taker(after, "tcp", 2202, -1) == DN_B
    assert not plan(after)


# --- a v0.6 CNI-SN- chain's --dport is the container port, never a host port -----------


def _sn_udp_body() -> str:
    """v0.6-portless-entries with B's second mapping UDP (5353->53): its CNI-SN- chain
    then matches `-p udp --dport 53`, the container port, which no chain maps on the
    host."""
    return (
        text("v0.6-portless-entries")
        .replace(
            "-p tcp -m tcp --dport 9090 -j DNAT --to-destination 10.88.0.6:90",
            "-p udp -m udp --dport 5353 -j DNAT --to-destination 10.88.0.6:53",
        )
        .replace(
            "-d 10.88.0.6/32 -p tcp -m tcp --dport 90 -j MASQUERADE",
            "-d 10.88.0.6/32 -p udp -m udp --dport 53 -j MASQUERADE",
        )
    )


def test_a_legacy_sn_chain_maps_no_host_port():
    """ChainInfo.host_ports of a CNI-SN- chain said its MASQUERADE rules' --dport (80,
    90: the container ports) were host ports it maps; gc's ChainFacts already said none.
    No output read them (check's legacy row and gc's use ChainFacts), but the next
    caller would have (a `--dport 80` of the SNAT chain flushed as UDP host port 80)."""
    from portmapctl.iptables import inventory
    from portmapctl.iptables.ruleset import parse_save

    built = inventory.build({4: parse_save(text("v0.6-portless-entries"), 4)})
    by_name = {c.name: c for c in built.chains}
    assert by_name[SN_A].host_ports == () and by_name[SN_B].host_ports == ()
    assert by_name[DN_B].host_ports == (("tcp", 8080), ("tcp", 9090))


def test_no_output_and_no_flush_shows_a_legacy_chains_container_port(tmp_path):
    """list, check and gc (-o json, every chain stale) on the UDP variant: no host port
    53 (nor 80) anywhere, gc's SN rows map nothing, and gc's UDP flush after removing
    them is 5353 alone."""
    save = snapshot(tmp_path, "v0.6-portless-entries", _sn_udp_body())
    empty = empty_cache(tmp_path)
    listed = json.loads(run(cli("list", save, empty, "-o", "json")).stdout)
    assert sorted(m["host_port"] for m in listed["mappings"]) == [5353, 8080, 8080]
    checked = run(cli("check", save, empty, "-o", "json"))
    stale = [p for p in json.loads(checked.stdout)["problems"] if p["kind"] == "stale"]
    assert sorted(p["detail"].split("it maps ")[1] for p in stale) == [
        "tcp/8080", "tcp/8080, udp/5353"
    ]  # fmt: skip
    details = [p["detail"] for p in json.loads(checked.stdout)["problems"]]
    assert not [d for d in details if re.search(r"/(53|80|90)\b", d)], details
    plan = _gc_plan(_sn_udp_body(), keep=("ffffffff",))
    removed = {c.chain: c for c in plan.removed}
    assert removed[SN_A].host_ports == () and removed[SN_B].host_ports == ()
    assert plan.freed_udp_ports == (5353,)
