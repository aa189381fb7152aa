"""check and --repair on real nodes (issue 12, items 12 and 13), with the real plugin in
throwaway namespaces.

- After a firewall reload, a cached container that iptables cannot set up again (its
  externalSetMarkChain is gone, or its conditions name an ipset that is gone) is named
  with the reason, and every other container is repaired (SPEC §5).
- conditionsV4 as people write them (`--dst-type local`, `--ctstate ESTABLISHED,NEW`,
  `--mark 1`), which iptables prints back otherwise: the plugin's CHECK accepts the
  rule, so `check` is healthy and `--repair` changes nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List

import pytest
import realplugin as rp
from pmctl import ok, run

from portmapctl.iptables.chains import TOPLEVEL_DNAT, chain_name

EXT = "ADMIN-SETMARK"


def _ports(port: int) -> List[dict]:
    return [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]


def _cache(cache: Path, network: str, cid: str, conf: dict) -> None:
    ips = [ip["address"] for ip in conf["prevResult"]["ips"]]
    rp.write_cni_cache(cache, network, cid, "eth0", conf, conf["runtimeConfig"]["portMappings"],
                       ips)  # fmt: skip


def _dnat_lines(ns: str, mode: str) -> List[str]:
    return [line for line in rp.save(ns, 4, mode).splitlines() if line.startswith("-A ")]


@pytest.fixture
def reloaded(host_ns, iptables_mode, tmp_path):
    """Six cached containers; one marks through the admin's chain. Then a firewall
    reload flushes and deletes every nat chain: the admin's chain is gone too."""
    cache = tmp_path / "cni"
    rp.iptables(host_ns, ["-t", "nat", "-N", EXT], mode=iptables_mode)
    confs = {}
    for i in range(6):
        cid = f"ctr{i}"
        extra = {"external_setmark_chain": EXT} if i == 2 else {}
        conf = rp.plugin_conf("mynet", [f"10.88.0.{10 + i}/16"], _ports(8100 + i), **extra)
        rp.run_plugin("ADD", host_ns, cid, conf, mode=iptables_mode, check=True)
        _cache(cache, "mynet", cid, conf)
        confs[cid] = conf
    for args in (["-F"], ["-X"]):
        rp.iptables(host_ns, ["-t", "nat", *args], mode=iptables_mode)
    return host_ns, iptables_mode, cache, confs


def test_repair_makes_every_container_but_the_one_it_cannot_and_names_it(reloaded):
    ns, mode, cache, confs = reloaded
    common = ["--netns", ns, "--iptables", mode, "--cni-cache-dir", str(cache)]
    done = run(["check", "--repair", *common, "-o", "json"])
    assert done.returncode == 1, done.stderr  # ctr2's problem remains
    warnings = [line for line in done.stderr.splitlines() if "could not repair" in line]
    assert len(warnings) == 1, done.stderr
    assert (
        "mynet/ctr2" in warnings[0]
        and f"externalSetMarkChain {EXT} does not exist" in (warnings[0])
    )
    doc = json.loads(done.stdout)
    assert [(u["container_id"], u["family"]) for u in doc["unrepaired"]] == [("ctr2", 4)]
    assert {p["container_id"] for p in doc["problems"] if p["container_id"]} == {"ctr2"}
    for cid, conf in confs.items():
        if cid != "ctr2":
            assert all(c.returncode == 0 for c in rp.run_check(ns, cid, conf, mode=mode)), cid
    assert chain_name("mynet", "ctr2") not in rp.save(ns, 4, mode)

    # Once the admin's chain is back, the same command repairs the last one.
    rp.iptables(ns, ["-t", "nat", "-N", EXT], mode=mode)
    ok(["check", "--repair", *common])
    assert all(c.returncode == 0 for c in rp.run_check(ns, "ctr2", confs["ctr2"], mode=mode))


@pytest.mark.parametrize("mode", ["nft", "legacy"])
@pytest.mark.parametrize(
    "count, refused", [(3, (1,)), (11, (2, 3, 9))], ids=["one-of-3", "three-of-11"]
)
def test_a_container_iptables_refuses_is_named_and_the_others_repaired(
    host_ns, tmp_path, count, refused, mode
):
    """Not foreseeable from the table: conditions naming an ipset that is gone. The
    containers iptables refuses are found by halving the others (repair.py settle);
    neighbours and one far off, each named, every other one repaired."""
    cache = tmp_path / "cni"
    confs = {}
    for i in range(count):
        conf = rp.plugin_conf("mynet", [f"10.88.0.{10 + i}/16"], _ports(8100 + i))
        if i in refused:
            conf["conditionsV4"] = ["-m", "set", "--match-set", "pmt-gone", "dst"]
        else:
            rp.run_plugin("ADD", host_ns, f"ctr{i}", conf, check=True, mode=mode)
            confs[f"ctr{i}"] = conf
        _cache(cache, "mynet", f"ctr{i}", conf)
    rp.iptables(host_ns, ["-t", "nat", "-F", TOPLEVEL_DNAT], mode=mode)
    # Each save and restore logged: a refused restore on a table that has not changed
    # since it was read is final (not tried again: the same transaction is never
    # handed to iptables-restore twice), and on iptables-nft, whose ruleset generation
    # says so, the table is not read again for each try the halving makes.
    wrap, saves, restores = tmp_path / "wrap", tmp_path / "saves", tmp_path / "restores"
    wrap.mkdir()
    for tool in (f"iptables-{mode}-save", f"ip6tables-{mode}-save"):
        (wrap / tool).write_text(
            f'#!/bin/bash\necho {tool} >> {saves}\nexec /usr/sbin/{tool} "$@"\n'
        )
        (wrap / tool).chmod(0o755)
    (wrap / f"iptables-{mode}-restore").write_text(
        f'#!/bin/bash\ntext=$(cat)\necho "$text" | md5sum >> {restores}\n'
        f'echo "$text" | exec /usr/sbin/iptables-{mode}-restore "$@"\n'
    )
    (wrap / f"iptables-{mode}-restore").chmod(0o755)
    done = run(["check", "--repair", "--netns", host_ns, "--iptables", mode, "--cni-cache-dir",
                str(cache), "-o", "json"], env={"PATH": f"{wrap}:{os.environ['PATH']}"})  # fmt: skip
    assert done.returncode == 1, done.stderr
    if mode == "nft":
        assert saves.read_text().splitlines().count("iptables-nft-save") == 1
    handed = restores.read_text().splitlines()
    assert len(handed) == len(set(handed)) and len(handed) > len(refused), handed
    doc = json.loads(done.stdout)
    names = [f"ctr{i}" for i in refused]
    assert [u["container_id"] for u in doc["unrepaired"]] == names
    assert all("iptables refused it" in u["why"] for u in doc["unrepaired"])
    assert all(f"could not repair IPv4 mynet/{n}" in done.stderr for n in names)
    assert {p["container_id"] for p in doc["problems"] if p["container_id"]} == set(names)
    for cid, conf in confs.items():  # the plugin's CHECK agrees
        assert all(c.returncode == 0 for c in rp.run_check(host_ns, cid, conf, mode=mode)), cid


def test_could_not_repair_lines_are_in_the_order_of_the_problem_rows(host_ns, tmp_path):
    """The "could not repair" lines (and -o json's "unrepaired") are in the order of
    check's problem rows and "repaired:" lines (network, container, family), so one
    container's v4 and v6 lines stand together, not each family's in turn."""
    cache = tmp_path / "cni"
    for family in (4, 6):
        rp.iptables(host_ns, ["-t", "nat", "-N", EXT], family=family)
    for i, cid in enumerate(("ctrB", "ctrA")):  # cached in an order that is not sorted
        conf = rp.plugin_conf("mynet", [f"10.88.0.{10 + i}/16", f"fd00::{10 + i}/64"],
                              _ports(8100 + i), external_setmark_chain=EXT)  # fmt: skip
        rp.run_plugin("ADD", host_ns, cid, conf, check=True)
        _cache(cache, "mynet", cid, conf)
    for family in (4, 6):  # a firewall reload: the admin's chain goes too
        for args in (["-F"], ["-X"]):
            rp.iptables(host_ns, ["-t", "nat", *args], family=family)
    argv = ["check", "--repair", "--netns", host_ns, "--iptables", "nft", "--cni-cache-dir",
            str(cache)]  # fmt: skip
    order = [("ctrA", 4), ("ctrA", 6), ("ctrB", 4), ("ctrB", 6)]
    for extra in ([], ["-o", "json"]):
        done = run([*argv, *extra])
        assert done.returncode == 1, done.stderr
        lines = [line for line in done.stderr.splitlines() if "could not repair" in line]
        assert [
            next((c, f) for c, f in order if f"IPv{f} mynet/{c} " in line) for line in lines
        ] == order, done.stderr
        if extra:
            doc = json.loads(done.stdout)
            assert [(u["container_id"], u["family"]) for u in doc["unrepaired"]] == order


# --- item 13: conditions as iptables rewrites them ------------------------------------------

CONDITIONS = {
    "addrtype-lower": ["-m", "addrtype", "--dst-type", "local"],
    "ctstate-order": ["-m", "conntrack", "--ctstate", "ESTABLISHED,NEW"],
    "mark-decimal": ["-m", "mark", "--mark", "1"],
    "all-three": [
        "-m",
        "addrtype",
        "--dst-type",
        "local",
        "-m",
        "conntrack",
        "--ctstate",
        "ESTABLISHED,NEW",
        "-m",
        "mark",
        "--mark",
        "1",
    ],  # fmt: skip
    "state-and-mask": [
        "-m",
        "state",
        "--state",
        "established,new",
        "-m",
        "mark",
        "!",
        "--mark",
        "16/255",
    ],  # fmt: skip
}


@pytest.mark.parametrize("conditions", CONDITIONS.values(), ids=CONDITIONS.keys())
def test_conditions_iptables_respells_are_healthy_and_repair_moves_nothing(
    host_ns, iptables_mode, tmp_path, conditions
):
    cache = tmp_path / "cni"
    first = rp.plugin_conf("mynet", ["10.88.0.5/16"], _ports(8080), conditions_v4=conditions)
    later = rp.plugin_conf("mynet", ["10.88.0.6/16"], _ports(8081))
    for cid, conf in (("first", first), ("later", later)):
        rp.run_plugin("ADD", host_ns, cid, conf, mode=iptables_mode, check=True)
        _cache(cache, "mynet", cid, conf)
    assert all(c.returncode == 0 for c in rp.run_check(host_ns, "first", first,
                                                       mode=iptables_mode))  # fmt: skip
    before = _dnat_lines(host_ns, iptables_mode)
    common = ["--netns", host_ns, "--iptables", iptables_mode, "--cni-cache-dir", str(cache)]

    done = run(["check", *common])
    assert done.returncode == 0, done.stdout + done.stderr
    done = run(["check", "--repair", *common, "-o", "json"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["repaired"] is False
    assert _dnat_lines(host_ns, iptables_mode) == before  # not moved behind "later"
