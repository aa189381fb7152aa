"""(The tests of this subject that need root are in tests/kernel/test_gc.py.)

`gc`: what it removes, what it never touches, and how it behaves under cron.

Pure planning on the real-plugin fixtures first; then the command against the real
plugin and real iptables (nf_tables and legacy) in throwaway namespaces: live
containers survive (the plugin's CHECK passes), foreign rules stay byte for byte,
retries when the plugin changes the table meanwhile, refusals change nothing, and a
plugin that keeps adding and deleting containers while gc runs in a loop loses nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
import sys
from pathlib import Path
from typing import Dict, Sequence

import pytest
from fixtures_lib import NAMES, save_text, table
from gc_helpers import Node_, node  # noqa: F401
from run_dir_helpers import plant

from portmapctl.core.backend import Flavour
from portmapctl.core.status import Status
from portmapctl.errors import BadInput, HostProblem
from portmapctl.iptables.chain_facts import chain_facts
from portmapctl.iptables.chains import OLD_TOPLEVEL_SNAT, TOPLEVEL_DNAT, chain_name
from portmapctl.iptables.inventory import build
from portmapctl.iptables.planner import plan_teardown
from portmapctl.iptables.ruleset import NatTable, parse_save, rule_target
from portmapctl.ops.gc import (
    Sources,
    ValidAttachments,
    fingerprint,
    liveness,
    parse_valid_attachments,
    plan_family,
)
from portmapctl.ops.gc import state as gc_state
from portmapctl.ops.gc.liveness import unmatched_keeps
from portmapctl.ops.gc.state import ChainKey

# --- valid-attachments documents ----------------------------------------------------------


def test_valid_attachments_bare_list_and_network_config():
    bare = parse_valid_attachments(
        '[{"containerID": "a1", "ifname": "eth0"}, {"containerID": "b2", "ifname": "eth1"}]', "f"
    )
    assert bare.network is None and bare.container_ids == {"a1", "b2"}
    conf = {
        "cniVersion": "1.1.0",
        "name": "podman",
        "plugins": [{"type": "bridge"}, {"type": "portmap"}],
        "cni.dev/valid-attachments": [{"containerID": "a1", "ifname": "eth0"}],
    }
    scoped = parse_valid_attachments(json.dumps(conf), "f")
    assert scoped.network == "podman" and scoped.container_ids == {"a1"}
    unnamed = parse_valid_attachments('{"cni.dev/valid-attachments": []}', "f")
    assert unnamed.network is None and unnamed.container_ids == frozenset()


@pytest.mark.parametrize(
    "text, words",
    [
        ("{", "not valid JSON"),
        ('{"name": "x"}', "no 'cni.dev/valid-attachments'"),
        ('{"cni.dev/valid-attachments": {}}', "must be a list"),
        ('[{"ifname": "eth0"}]', "containerID"),
        ('[{"containerID": "bad id"}]', "invalid container ID"),
        ('[{"containerID": "a", "ifname": 3}]', "ifname"),
        ('{"name": "bad/net", "cni.dev/valid-attachments": []}', "invalid network name"),
        ("42", "must be a list"),
    ],
)
def test_valid_attachments_rejects_malformed_documents(text, words):
    with pytest.raises(BadInput, match=words.replace("(", r"\(")):
        parse_valid_attachments(text, "doc.json")


# --- planning on real plugin output -------------------------------------------------------


def _chain_names(tbl: NatTable) -> Dict[str, str]:
    """container ID -> its DN- chain, from the entry comments."""
    return {c.container_id: c.name for c in build({tbl.family: tbl}).chains if c.container_id}


def _plan(tbl, live, seen=None, now=1000.0, min_age=0.0, only=None):
    return plan_family(tbl, live, seen or {}, now, min_age, only)


def test_plan_removes_exactly_the_containers_not_live():
    tbl = table("three-containers", 4)
    names = _chain_names(tbl)
    live = liveness(Sources(keep=("ctr2",)), None)
    plan = _plan(tbl, live)
    assert {c.chain for c in plan.removed} == {names["ctr1"], names["ctr3"]}
    assert plan.kept == 1 and plan.pending == ()
    removed = {c.container_id: c for c in plan.removed}
    assert removed["ctr1"].host_ports == (("tcp", 8081),)
    assert removed["ctr1"].network == "mynet" and removed["ctr1"].kind == "dnat"
    # ctr2's 5353/udp stays mapped: nothing to flush.
    assert plan.freed_udp_ports == ()


def test_plan_frees_udp_ports_no_other_chain_maps():
    tbl = table("three-containers", 4)
    plan = _plan(tbl, liveness(Sources(keep=("ctr1",)), None))
    assert plan.freed_udp_ports == (5353,)


def test_cache_liveness_is_by_container_id_on_every_network():
    """A cached attachment keeps its container's chains on every network (SPEC §3: a
    Multus pod's outer entry keeps its delegate network's chain)."""
    from portmapctl.cni.cache import Attachment

    tbl = table("three-containers", 4)
    names = _chain_names(tbl)
    same_net = Attachment("mynet", "ctr1", "eth0", "/x", None)
    other_net = Attachment("multus-cni-network", "ctr3", "eth0", "/y", None)
    plan = _plan(tbl, liveness(Sources(), [same_net, other_net]))
    assert {c.chain for c in plan.removed} == {names["ctr2"]}


def test_network_scoped_document_leaves_other_networks_alone():
    tbl = table("three-containers", 4)
    names = _chain_names(tbl)
    mine = ValidAttachments("mynet", frozenset({"ctr1"}), "doc")
    plan = _plan(tbl, liveness(Sources(documents=(mine,)), None))
    assert {c.chain for c in plan.removed} == {names["ctr2"], names["ctr3"]}
    other = ValidAttachments("othernet", frozenset(), "doc")
    plan = _plan(tbl, liveness(Sources(documents=(other,)), None))
    assert plan.removed == () and plan.kept == 3
    # A --keep does not widen a document's scope; a bare list or --all does.
    plan = _plan(tbl, liveness(Sources(documents=(other,), keep=("ctr1",)), None))
    assert plan.removed == ()
    bare = ValidAttachments(None, frozenset({"ctr1"}), "doc")
    plan = _plan(tbl, liveness(Sources(documents=(other, bare)), None))
    assert {c.chain for c in plan.removed} == {names["ctr2"], names["ctr3"]}


def test_keep_matches_an_id_prefix():
    tbl = table("three-containers", 4)
    plan = _plan(tbl, liveness(Sources(keep=("ctr",)), None))
    assert plan.removed == () and plan.kept == 3


def test_a_cut_comment_is_matched_by_chain_name():
    """A 200-character ID is cut out of its comment: the chain name still names it."""
    tbl = table("long-comment", 4)
    [info] = build({4: tbl}).chains
    assert info.container_id is None and info.network is not None
    full_id = json.loads(
        (Path(__file__).parents[1] / "fixtures/long-comment.conf.json").read_text()
    )["containers"][0]["containerId"]
    for sources in (
        Sources(keep=(full_id,)),
        Sources(documents=(ValidAttachments(None, frozenset({full_id}), "doc"),)),
    ):
        plan = _plan(tbl, liveness(sources, None))
        assert plan.removed == () and plan.kept == 1
    plan = _plan(tbl, liveness(Sources(keep=("someone-else",)), None))
    assert [c.chain for c in plan.removed] == [info.name]


@pytest.mark.parametrize("keep", ["0123456789ab", "0123456789abcdef0123", "full+more"])
def test_a_keep_prefix_of_an_id_cut_out_of_its_comment_keeps_the_chain(keep: str):
    """--keep takes an ID's prefix: that of a 200-character ID the kernel cut out of
    its entry comment (`id: "0123...ef01..`, 255 bytes) was never matched against what
    the comment still shows, so `gc --yes --keep 0123456789ab` removed the container's
    chain and warned that the prefix "matches no container". The part shown is a
    prefix of the ID: a --keep it starts with keeps the chain; one longer than what is
    shown, and agreeing with it, may be the ID (in doubt: kept)."""
    tbl = table("long-comment", 4)
    full_id = json.loads(
        (Path(__file__).parents[1] / "fixtures/long-comment.conf.json").read_text()
    )["containers"][0]["containerId"]
    prefix = full_id + "0" if keep == "full+more" else keep
    plan = _plan(tbl, liveness(Sources(keep=(prefix,)), None))
    assert plan.removed == () and plan.kept == 1
    assert unmatched_keeps((prefix,), {4: tbl}, (), None) == []
    # What the comment shows contradicts this one: removed, and said so.
    plan = _plan(tbl, liveness(Sources(keep=("0123456789ac",)), None))
    assert len(plan.removed) == 1
    assert len(unmatched_keeps(("0123456789ac",), {4: tbl}, (), None)) == 1


def test_orphan_chains_go_unless_live_by_name():
    # The example node: "lost" is in the cache but nothing enters its chain.
    text = (Path(__file__).parents[2] / "examples/node.v4.save").read_text()
    tbl = parse_save(text, 4)
    from portmapctl.cni.cache import read_cache

    cache = read_cache(str(Path(__file__).parents[2] / "examples/cni-cache"))
    orphans = [c for c in build({4: tbl}).chains if "orphan" in c.status]
    assert orphans
    plan = _plan(tbl, liveness(Sources(), cache))
    assert not {c.name for c in orphans} & {c.chain for c in plan.removed}
    plan = _plan(tbl, liveness(Sources(remove_all=True), None))
    assert {c.name for c in orphans} <= {c.chain for c in plan.removed}


def test_min_age_waits_and_a_changed_chain_starts_over():
    tbl = table("three-containers", 4)
    live = liveness(Sources(keep=("ctr2",)), None)
    first = _plan(tbl, live, now=1000.0, min_age=60.0)
    assert first.removed == () and len(first.pending) == 2
    assert all(c.seen_seconds == 0 for c in first.pending)
    later = _plan(tbl, live, seen=first.seen, now=1030.0, min_age=60.0)
    assert [c.seen_seconds for c in later.pending] == [30.0, 30.0]
    done = _plan(tbl, live, seen=first.seen, now=1060.0, min_age=60.0)
    assert len(done.removed) == 2 and done.pending == ()
    # A chain whose rules changed since is new again.
    changed = {k: gc_state.Seen("0" * 32, v.first_seen) for k, v in first.seen.items()}
    again = _plan(tbl, live, seen=changed, now=1060.0, min_age=60.0)
    assert again.removed == () and all(c.seen_seconds == 0 for c in again.pending)
    # A live chain is not remembered.
    assert ChainKey(4, _chain_names(tbl)["ctr2"]) not in done.seen


def test_fingerprint_ignores_position_but_not_content():
    tbl = table("three-containers", 4)
    chains = {c.container_id: c for c in build({4: tbl}).chains}
    # ctr1's entry rule moves up when another container's entry rules go.
    shorter = plan_teardown(tbl, [chains["ctr2"].name])
    assert shorter
    rules = [r for r in tbl.rules(TOPLEVEL_DNAT) if rule_target(r) != chains["ctr2"].name]
    moved = NatTable(
        4,
        {
            **{n: c for n, c in tbl.chains.items() if n != chains["ctr2"].name},
            TOPLEVEL_DNAT: type(tbl.chains[TOPLEVEL_DNAT])(TOPLEVEL_DNAT, "-", tuple(rules)),
        },
    )
    after = {c.container_id: c for c in build({4: moved}).chains}
    assert after["ctr3"].entries[0].index != chains["ctr3"].entries[0].index
    assert fingerprint(after["ctr3"]) == fingerprint(chains["ctr3"])
    assert fingerprint(chains["ctr1"]) != fingerprint(chains["ctr3"])


def test_fingerprint_is_the_digest_0_2_wrote():
    """The state file keeps fingerprints across versions: hashed as one text now, they
    must be 0.2's digest of the same lines fed one by one (or every pending chain's
    --min-age clock would restart on upgrade)."""
    import hashlib

    tbl = table("three-containers", 4)
    for chain in build({4: tbl}).chains:
        digest = hashlib.sha256()  # 0.2's way, line by line
        for rule in chain.rules:
            digest.update(b"R\0" + "\0".join(rule).encode() + b"\n")
        for entry_chain, args in sorted((e.chain, e.args) for e in chain.entries):
            digest.update(b"E\0" + entry_chain.encode() + b"\0" + "\0".join(args).encode() + b"\n")
        assert chain.rules and chain.entries
        assert fingerprint(chain) == digest.hexdigest()[:32]
        # iptables-nft's chains keep those bytes; legacy's twin of the same rules is
        # another table's chain, and no sighting of one ages the other.
        assert fingerprint(chain, Flavour.NFT) == digest.hexdigest()[:32]
        assert fingerprint(chain, Flavour.LEGACY) != fingerprint(chain, Flavour.NFT)


def test_liveness_hashes_only_pairs_no_cache_entry_names():
    """A (network, ID) pair a cache entry names has its chain names in `chains`
    already; derived_chains adds only the others (another network's chain of a live
    ID), each CNI-SN- name the CNI-DN- one's hash."""
    from portmapctl.cni.cache import Attachment

    tbl = table("three-containers", 4)
    facts = chain_facts(tbl)
    live = liveness(Sources(), [Attachment("othernet", "ctr3", "eth0", "/y", None)])
    assert live.chains == {chain_name("othernet", "ctr3"), chain_name("othernet", "ctr3", "SN-")}
    assert live.derived_chains(facts) == {
        chain_name("mynet", "ctr3"),
        chain_name("mynet", "ctr3", "SN-"),
    }


def test_only_limits_removal_to_what_was_confirmed():
    tbl = table("three-containers", 4)
    names = _chain_names(tbl)
    live = liveness(Sources(remove_all=True), None)
    plan = _plan(tbl, live, only=frozenset({(4, names["ctr1"])}))
    assert [c.chain for c in plan.removed] == [names["ctr1"]]
    assert {c.chain for c in plan.pending} == {names["ctr2"], names["ctr3"]}


# --- the teardown transaction ---------------------------------------------------------------


def _check_teardown(tbl: NatTable, removed: Sequence[str]) -> None:
    """Properties every teardown has: deletes only what jumps to removed chains, all of
    it, in chain order, and no -X of a chain something still jumps to."""
    txn = plan_teardown(tbl, removed)
    gone_chains = {op.chain for op in txn.ops if op.kind == "delete-chain"}
    # A chain that goes is emptied rule by rule, by text, each exactly as read: its -X
    # then fails if anything else is in it by then (planner._empty_chain).
    emptying = [op for op in txn.ops if op.kind == "delete" and op.chain in gone_chains]
    for name in gone_chains:
        if name != OLD_TOPLEVEL_SNAT:
            assert [op.args for op in emptying if op.chain == name] == list(tbl.rules(name))
    deletes = [op for op in txn.ops if op.kind == "delete" and op.chain not in gone_chains]
    assert set(removed) <= gone_chains
    for op in deletes:
        assert rule_target(op.args) in gone_chains
        assert op.chain not in set(removed)
    wanted = [
        (chain.name, rule)
        for chain in tbl.chains.values()
        if chain.name not in gone_chains
        for rule in chain.rules
        if rule_target(rule) in gone_chains
    ]
    assert sorted((op.chain, op.args) for op in deletes) == sorted(wanted)
    for name in {op.chain for op in deletes}:
        indexes = [tbl.rules(name).index(op.args) for op in deletes if op.chain == name]
        assert indexes == sorted(indexes), f"{name}: deletes not in chain order"
    position = {id(op): i for i, op in enumerate(txn.ops)}
    for op in txn.ops:
        if op.kind == "delete-chain":
            later = [
                d
                for d in deletes
                if rule_target(d.args) == op.chain and position[id(d)] > position[id(op)]
            ]
            assert not later, f"-X {op.chain} before a rule jumping to it is gone"
            emptied = [e for e in emptying if e.chain == op.chain]
            assert all(position[id(e)] < position[id(op)] for e in emptied)


def test_teardown_of_dnat_chains():
    tbl = table("three-containers", 4)
    names = _chain_names(tbl)
    _check_teardown(tbl, [names["ctr1"], names["ctr3"]])
    txn = plan_teardown(tbl, [names["ctr2"]])
    # ctr2 has two entry rules (tcp, udp); nothing shared goes. Its chain is emptied
    # first (the faster order for iptables-nft-restore: planner.plan_teardown), by
    # deleting each of its rules as read: no flush, which would take rules gc never saw.
    own = len(tbl.rules(names["ctr2"]))
    assert own > 0
    assert [(op.kind, op.chain) for op in txn.ops] == [
        *[("delete", names["ctr2"])] * own,
        ("delete", TOPLEVEL_DNAT),
        ("delete", TOPLEVEL_DNAT),
        ("delete-chain", names["ctr2"]),
    ]
    assert not any(op.kind == "flush" for op in txn.ops)


def test_teardown_of_legacy_snat_in_the_order_nf_tables_accepts():
    tbl = table("legacy-sn", 4)
    dn = chain_name("mynet", "abc123", "DN-")
    sn = chain_name("mynet", "abc123", "SN-")
    _check_teardown(tbl, [dn, sn])
    txn = plan_teardown(tbl, [sn])
    kinds = [(op.kind, op.chain) for op in txn.ops]
    # FACTS: flush CNI-HOSTPORT-SNAT, empty and delete the SN- chains, then the
    # POSTROUTING jump, then CNI-HOSTPORT-SNAT itself.
    assert kinds == [
        ("flush", OLD_TOPLEVEL_SNAT),
        *[("delete", sn)] * len(tbl.rules(sn)),
        ("delete-chain", sn),
        ("delete", "POSTROUTING"),
        ("delete-chain", OLD_TOPLEVEL_SNAT),
    ]


def test_teardown_keeps_snat_chain_that_still_holds_something():
    text = table("legacy-sn", 4)
    sn = chain_name("mynet", "abc123", "SN-")
    snat = text.chains[OLD_TOPLEVEL_SNAT]
    foreign = ("-s", "10.1.0.0/16", "-j", "RETURN")
    with_foreign = NatTable(
        4, {**text.chains, OLD_TOPLEVEL_SNAT: type(snat)(snat.name, "-", (*snat.rules, foreign))}
    )
    txn = plan_teardown(with_foreign, [sn])
    assert ("delete-chain", OLD_TOPLEVEL_SNAT) not in [(op.kind, op.chain) for op in txn.ops]
    assert all(op.chain != "POSTROUTING" for op in txn.ops)
    _check_teardown(with_foreign, [sn])


def test_teardown_refuses_shared_and_foreign_chains():
    tbl = table("foreign", 4)
    for name in (TOPLEVEL_DNAT, "DOCKER", "PREROUTING"):
        with pytest.raises(ValueError):
            plan_teardown(tbl, [name])
    assert not plan_teardown(tbl, ["CNI-DN-doesnotexist"])


# --- the state file -------------------------------------------------------------------------


def test_state_round_trip_safe_and_per_namespace(tmp_path):
    run_dir = tmp_path / "run"
    seen = {
        ChainKey(4, "CNI-DN-x"): gc_state.Seen("f" * 32, gc_state.clock() - 5),
        ChainKey(4, "nft:3f2a9c1e"): gc_state.Seen("a" * 16, gc_state.clock() - 5),
    }
    gc_state.save(str(run_dir), "ns-a", seen)
    gc_state.save(str(run_dir), "ns-b", {ChainKey(6, "CNI-DN-y"): gc_state.Seen("e" * 32, 1.0)})
    assert gc_state.load(str(run_dir), "ns-a") == (seen, [])
    assert set(gc_state.load(str(run_dir), "ns-b")[0]) == {ChainKey(6, "CNI-DN-y")}
    path = run_dir / gc_state.STATE_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    assert [p.name for p in run_dir.iterdir()] == [gc_state.STATE_FILE]  # no temporary left
    gc_state.save(str(run_dir), "ns-a", {})
    assert gc_state.load(str(run_dir), "ns-a") == ({}, [])
    assert set(gc_state.load(str(run_dir), "ns-b")[0]) == {ChainKey(6, "CNI-DN-y")}


def test_state_file_of_0_2_is_read_and_written_back_in_its_format(tmp_path):
    """0.2 keyed the file by strings ("4 CNI-DN-...", "nft6 <ID>"); so does this version
    on disk (ChainKey in memory): a file 0.2 left is read, and 0.2 reads ours."""
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    then = round(gc_state.clock() - 30, 3)
    dn, sn = "CNI-DN-0123456789abcdef01234", "CNI-SN-0123456789abcdef01234"
    chains = {
        f"4 {dn}": {"fingerprint": "a" * 32, "first_seen": then},
        f"6 {sn}": {"fingerprint": "b" * 32, "first_seen": then},
        "nft6 3f2a9c1e": {"fingerprint": "c" * 16, "first_seen": then},
        "x bogus": {"fingerprint": "d" * 32, "first_seen": then},  # not a key: skipped
    }
    # As 0.2 wrote it: json.dumps with separators (",", ":"), keys sorted.
    written_by_0_2 = json.dumps(
        {
            "version": 1,
            "boot_id": gc_state._boot_id(),
            "namespaces": {"ns": {"updated": then, "chains": chains}},
        },
        separators=(",", ":"),
    )
    (run_dir / gc_state.STATE_FILE).write_text(written_by_0_2)
    found, warnings = gc_state.load(str(run_dir), "ns")
    assert warnings == []
    assert found == {
        ChainKey(4, dn): gc_state.Seen("a" * 32, then),
        ChainKey(6, sn): gc_state.Seen("b" * 32, then),
        ChainKey(6, "nft:3f2a9c1e"): gc_state.Seen("c" * 16, then),
    }
    assert ChainKey(6, "nft:3f2a9c1e").nft and not ChainKey(4, dn).nft
    gc_state.save(str(run_dir), "ns", found)
    again = json.loads((run_dir / gc_state.STATE_FILE).read_text())
    del chains["x bogus"]
    assert again["namespaces"]["ns"]["chains"] == chains


def test_the_state_key_is_the_namespace_not_its_spelling(monkeypatch):
    """The --netns spelling (`foo`, `/run/netns/foo`, none for the current one) is no
    part of the key where the kernel gives the namespace's cookie (never reused in a
    boot, unlike its inode); without one, the key is as before: the spelling and the
    inode (a delay where spellings differ, no key shared with another namespace that
    had the inode before)."""
    if gc_state._netns_cookie() is None:
        pytest.skip("this kernel gives no SO_NETNS_COOKIE (before 5.14)")
    key = gc_state.namespace_key(None)
    assert key == gc_state.namespace_key("foo") == gc_state.namespace_key("/run/netns/foo")
    assert key == f"netns-cookie:{gc_state._netns_cookie()}"
    monkeypatch.setattr(gc_state, "_netns_cookie", lambda: None)
    info = os.stat("/proc/self/ns/net")
    assert gc_state.namespace_key("foo") == f"foo@{info.st_dev}:{info.st_ino}"


@pytest.mark.parametrize(
    "machine, option",
    [
        # The kernel's arch/*/include/uapi/asm/socket.h (include/uapi/asm-generic/
        # socket.h for the others): SO_NETNS_COOKIE.
        ("x86_64", 71),
        ("aarch64", 71),
        ("ppc64le", 71),
        ("s390x", 71),
        ("mips64", 71),
        ("alpha", 71),
        ("parisc", 0x4045),
        ("parisc64", 0x4045),
        ("sparc64", 0x0050),
    ],
)
def test_the_cookie_is_asked_for_by_the_architectures_option_number(monkeypatch, machine, option):
    """Python (3.11) does not name SO_NETNS_COOKIE: its number is the architecture's. A
    wrong one reads another option (a value of another size: no cookie; worse, one that
    does not tell namespaces apart) or none."""
    import socket

    asked = []

    class Socket:
        def __init__(self, *args: object) -> None:
            pass

        def __enter__(self) -> Socket:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def getsockopt(self, level: int, name: int, size: int) -> bytes:
            asked.append((level, name, size))
            return (12345).to_bytes(8, sys.byteorder)

    monkeypatch.delattr(socket, "SO_NETNS_COOKIE", raising=False)
    monkeypatch.setattr(socket, "socket", Socket)
    monkeypatch.setattr(os, "uname", lambda: os.uname_result(("Linux", "n", "r", "v", machine)))
    assert gc_state._netns_cookie() == 12345
    assert asked == [(socket.SOL_SOCKET, option, 8)]


def test_state_distrusts_what_it_cannot_vouch_for(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    path = run_dir / gc_state.STATE_FILE
    path.write_text("{ half a file")
    found, warnings = gc_state.load(str(run_dir), "ns")
    assert found == {} and "not valid JSON" in warnings[0]
    future = {"4 a": {"fingerprint": "f", "first_seen": gc_state.clock() + 3600}}
    document = {
        "version": 1,
        "boot_id": gc_state._boot_id(),
        "namespaces": {"ns": {"updated": gc_state.clock(), "chains": future}},
    }
    path.write_text(json.dumps(document))
    assert gc_state.load(str(run_dir), "ns") == ({}, [])
    document["namespaces"]["ns"]["chains"] = {"4 a": {"fingerprint": "f", "first_seen": 1.0}}
    path.write_text(json.dumps(dict(document, boot_id="another boot")))
    assert gc_state.load(str(run_dir), "ns") == ({}, [])
    path.write_text(json.dumps(document))
    assert gc_state.load(str(run_dir), "ns")[0] == {ChainKey(4, "a"): gc_state.Seen("f", 1.0)}


@pytest.mark.parametrize(
    ("document", "words"),
    [
        ({"version": 99, "namespaces": {}}, "version 99"),
        ([1, 2], "not gc's state"),
        ({"version": 1, "namespaces": []}, "not gc's state"),
    ],
)
def test_a_state_file_of_another_version_or_shape_is_started_afresh_with_a_warning(
    tmp_path, document, words
):
    """guarantees.md says a state file that says nothing usable is started afresh with
    a warning: one of another version (two portmapctl versions on one node would wipe
    each other's sightings, so --min-age were never reached) or not gc's shape was
    started afresh silently. (Another boot's is: /run outlived a reboot, no news.)"""
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    if isinstance(document, dict):
        document = {"boot_id": gc_state._boot_id(), **document}
    (run_dir / gc_state.STATE_FILE).write_text(json.dumps(document))
    found, warnings = gc_state.load(str(run_dir), "ns")
    assert found == {}
    assert len(warnings) == 1 and words in warnings[0] and "starting afresh" in warnings[0]


def test_state_refuses_symlinks(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    target = tmp_path / "elsewhere"
    target.write_text("precious")
    (run_dir / gc_state.STATE_FILE).symlink_to(target)
    with pytest.raises(HostProblem, match="symlink"):
        gc_state.load(str(run_dir), "ns")
    with pytest.raises(HostProblem, match="symlink"):
        gc_state.save(str(run_dir), "ns", {})
    assert target.read_text() == "precious"
    planted = tmp_path / "planted-dir"
    planted.mkdir()
    link_dir = tmp_path / "linkdir"
    link_dir.symlink_to(planted)
    with pytest.raises(HostProblem, match="not a directory owned by us"):
        gc_state.save(str(link_dir), "ns", {})


@pytest.mark.parametrize("planted", ["fifo", "socket", "directory"])
def test_state_refuses_what_is_not_its_own_file_and_replaces_nothing(tmp_path, planted):
    """Anything but gc's own regular file at gc-state.json is refused, when gc loads
    (before it changes anything) and when it saves, as the lock refuses one (exit 3).
    A FIFO was ignored with a warning and replaced by the save (and another user's
    file too), a socket was exit 3, and a directory failed every save, after the
    removal: no --min-age could ever pass."""
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    path = run_dir / gc_state.STATE_FILE
    plant(path, planted)
    kind = path.lstat().st_mode
    refused = f"{path} is not a regular file owned by us: refusing to use it"
    with pytest.raises(HostProblem, match=re.escape(refused)):
        gc_state.load(str(run_dir), "ns")
    seen = {ChainKey(4, "CNI-DN-x"): gc_state.Seen("f" * 32, gc_state.clock() - 5)}
    with pytest.raises(HostProblem, match=re.escape(refused)):
        gc_state.save(str(run_dir), "ns", seen)
    assert path.lstat().st_mode == kind and sorted(p.name for p in run_dir.iterdir()) == [
        gc_state.STATE_FILE
    ]


def test_a_state_file_that_cannot_be_read_is_refused_not_taken_for_none(tmp_path, monkeypatch):
    """A state file gc may not open (EACCES: it was a warning, the file as none and
    replaced) or whose read fails (EIO: an uncaught OSError, exit 1) is one line, exit
    3, before gc changes anything; a run directory that is a file names that file."""
    import errno

    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    path = run_dir / gc_state.STATE_FILE
    path.write_text("{}")
    real_open, real_read = os.open, os.read

    def denied(name, *args, **kwargs):
        if str(name) == str(path):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(gc_state.os, "open", denied)
    with pytest.raises(
        HostProblem, match=re.escape(f"cannot open gc's state file {path}: Permission")
    ):
        gc_state.load(str(run_dir), "ns")
    monkeypatch.setattr(gc_state.os, "open", real_open)

    def failing(fd, size):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(gc_state.os, "read", failing)
    with pytest.raises(
        HostProblem, match=re.escape(f"cannot read gc's state file {path}: Input/output")
    ):
        gc_state.load(str(run_dir), "ns")
    monkeypatch.setattr(gc_state.os, "read", real_read)
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    with pytest.raises(HostProblem, match=re.escape(f"{a_file} is not a directory owned by us")):
        gc_state.load(str(a_file), "ns")
    with pytest.raises(HostProblem, match=re.escape(f"{a_file} is not a directory owned by us")):
        gc_state.save(str(a_file), "ns", {})


# --- the command against the real plugin --------------------------------------------------------


# --- retries when the plugin changes the table meanwhile -------------------------------------


# --- the plugin and gc at the same time ---------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("family", [4, 6])
def test_chain_facts_say_what_the_inventory_says(name, family):
    """gc plans from chain_facts.chain_facts, one pass without statuses: it must see
    each chain as inventory.build does (identity, entries, rules, ports, addresses)."""
    tbl = table(name, family)
    built = build({family: tbl})
    facts = chain_facts(tbl)
    assert [f.name for f in facts] == [c.name for c in built.chains]
    for fact, chain in zip(facts, built.chains):
        assert (fact.family, fact.kind, fact.network, fact.container_id) == (
            chain.family, chain.kind, chain.network, chain.container_id,
        )  # fmt: skip
        assert fact.entries == chain.entries and fact.rules == chain.rules
        assert fact.host_ports == (() if chain.kind == "legacy-snat" else chain.host_ports)
        assert fact.container_ips == {
            m.container_ip for m in built.mappings if m.chain == chain.name
        }
        assert fingerprint(fact) == fingerprint(chain)


def test_plan_keeps_the_udp_mappings_left_when_a_removed_port_stays_mapped():
    """Two containers on 8080/udp (the shadowed fixture, in UDP): ctr-a goes, ctr-b
    keeps the port. Its flows are judged (flush-udp --stale-only) against the UDP
    mappings left, which are worked out only then, on the table as the removal leaves
    it: ctr-b, shadowed by ctr-a before, takes the port (it was still said shadowed
    by the chain gone, and since flush-udp keeps the flows of a port something else
    takes, none would have gone)."""
    tbl = parse_save(save_text("shadowed", 4).replace("tcp", "udp"), 4)
    names = _chain_names(tbl)
    plan = _plan(tbl, liveness(Sources(keep=("ctr-b",)), None))
    assert {c.chain for c in plan.removed} == {names["ctr-a"]}
    assert plan.remapped_udp_ports == (8080,) and plan.freed_udp_ports == ()
    before = [m for m in build({4: tbl}).mappings if m.chain == names["ctr-b"]]
    assert before and all(m.shadowed_by == names["ctr-a"] for m in before)
    left = tuple(dataclasses.replace(m, status=(Status.OK,), shadowed_by=None) for m in before)
    assert plan.remaining_udp == left
    # Nothing left mapped: no mappings carried.
    gone = _plan(tbl, liveness(Sources(remove_all=True), None))
    assert gone.freed_udp_ports == (8080,) and gone.remaining_udp == ()


def test_a_document_that_lists_no_attachment_is_no_source_of_liveness(tmp_path):
    """An empty valid-attachments list is what a script whose query failed writes, as
    readily as a runtime with nothing running: like an empty cache (SPEC §3), it says
    nothing, and gc refuses without --all rather than remove every chain."""
    import pmctl

    from portmapctl.ops.gc.liveness import require_source, says_nothing

    empty = ValidAttachments(None, frozenset(), "<stdin>")
    absent = (str(tmp_path / "no-cache"),)
    with pytest.raises(BadInput, match="<stdin> lists no attachment"):
        require_source(Sources(documents=(empty,)), absent)
    assert says_nothing(Sources(documents=(empty,)), [])
    # Anything else that speaks is a source again.
    listed = ValidAttachments(None, frozenset({"ctr1"}), "doc")
    for sources in (
        Sources(documents=(empty, listed)),
        Sources(documents=(empty,), keep=("ctr1",)),
        Sources(documents=(empty,), remove_all=True),
    ):
        require_source(sources, absent)
        assert not says_nothing(sources, [])
    # The command: refused before it looks at any namespace (this one does not exist).
    done = pmctl.run(
        ["gc", "--yes", "--netns", "pmt-no-such-ns", "--cni-cache-dir", absent[0],
         "--valid-attachments", "-"],
        stdin='{"cni.dev/valid-attachments": []}',
    )  # fmt: skip
    pmctl.assert_error(done, 2, "lists no attachment", "--all")


def test_the_summary_counts_a_container_in_both_backends_once() -> None:
    """A dead container with an iptables chain and nftables rules (re-added after the
    network switched backends) is one container, as list counts it; the nftables rows
    name no network, and 0.1 counted (network, ID) pairs. Its nftables rules are no
    chain: before, "3 chains of 2 containers"."""
    from portmapctl.core.status import ChainKind
    from portmapctl.ops.gc import GcChain, GcResult
    from portmapctl.render.gc import gc_summary

    removed = (
        GcChain("CNI-DN-faf37fff854eed34720e8", 4, "dnat", "podman", "re1", (), 0.0),
        GcChain("CNI-DN-faf37fff854eed34720e8", 6, "dnat", "podman", "re1", (), 0.0),
        GcChain("hostports", 4, ChainKind.NFT_RULE, None, "re1", (), 0.0),
        GcChain("hostports", 4, ChainKind.NFT_RULE, None, "gone1", (), 0.0),
        GcChain("hostports", 6, ChainKind.NFT_RULE, None, "gone1", (), 0.0),
    )
    summary = gc_summary(GcResult(False, removed, (), 2, 0))
    assert summary.startswith(
        "gc: removed 2 chains of 1 container and the nftables rules of 2 containers, 0 pending,"
    ), summary


_ORPHAN = "CNI-DN-0123456789abcdef01234"


@pytest.mark.parametrize(
    "removed, shared, words",
    [
        # An orphan (nothing enters it, so nothing names its container): before,
        # "1 chain of 0 containers".
        ([(_ORPHAN, "dnat", None)], (), "1 chain of no known container"),
        (
            [
                (_ORPHAN, "dnat", None),
                ("CNI-DN-a", "dnat", "c1"),
                ("CNI-SN-b", "legacy-snat", None),
            ],
            (),
            "1 chain of 1 container and 2 chains of no known container",
        ),
        # The nftables backend's items are a container's rules in one family: before,
        # "2 chains of 1 container".
        (
            [("hostports", "nft", "c2"), ("hostports6", "nft", "c2")],
            (),
            "the nftables rules of 1 container",
        ),
        (
            [("CNI-DN-a", "dnat", "c1"), (_ORPHAN, "dnat", None), ("hostports", "nft", "c2")],
            ((4, "CNI-HOSTPORT-SNAT"),),
            "1 chain of 1 container, 1 chain of no known container, the nftables rules of"
            " 1 container and CNI-HOSTPORT-SNAT (v4)",
        ),
        ([], ((4, "CNI-HOSTPORT-SNAT"),), "CNI-HOSTPORT-SNAT (v4)"),
    ],
)
def test_the_summary_says_what_was_removed_as_it_is(removed, shared, words) -> None:
    from portmapctl.core.status import ChainKind
    from portmapctl.ops.gc import GcChain, GcResult
    from portmapctl.render.gc import gc_summary

    chains = tuple(
        GcChain(name, 6 if name.endswith("6") else 4, ChainKind.NFT_RULE if kind == "nft" else kind,
                None if kind == "nft" else "net", cid, (), 0.0)
        for name, kind, cid in removed
    )  # fmt: skip
    done = gc_summary(GcResult(False, chains, (), 1, 0, shared_removed=shared))
    assert done == f"gc: removed {words}, 0 pending, 1 kept, 0 UDP conntrack entries deleted"
    dry = gc_summary(GcResult(True, chains, (), 1, 0, shared_removed=shared))
    assert dry == f"gc (dry run): would remove {words}, 0 pending, 1 kept"
    # The same words in the prompt and in the error after a failed state write.
    from portmapctl.render.gc import removal_text

    assert removal_text(chains, shared) == words


def test_a_zombie_s_orphan_chain_is_named_by_its_cache_entry():
    """--netns-liveness removes a zombie's chain; when nothing enters it (a firewall
    reload flushed CNI-HOSTPORT-DNAT) no comment names it, but the zombie's cache entry
    does, by the chain's name: gc's row (and JSON) say whose it is, as list's do,
    not `no known container` with the chain's name in CONTAINER (which --keep refuses)."""
    from portmapctl.cni.cache import Attachment
    from portmapctl.host.netns import NetnsState

    tbl = table("three-containers", 4)
    names = _chain_names(tbl)
    text = "".join(
        line + "\n"
        for line in save_text("three-containers", 4).splitlines()
        if not (line.startswith("-A CNI-HOSTPORT-DNAT") and names["ctr1"] in line)
    )
    orphaned = parse_save(text, 4)
    zombie = Attachment("mynet", "ctr1", "eth0", "/x", None, "/gone", netns_state=NetnsState.GONE)
    plan = _plan(orphaned, liveness(Sources(keep=("ctr2", "ctr3"), netns_liveness=True), [zombie]))
    assert [(c.chain, c.network, c.container_id) for c in plan.removed] == [
        (names["ctr1"], "mynet", "ctr1")
    ]


def test_an_empty_valid_attachments_path_is_bad_input_never_no_option(tmp_path):
    """`gc --yes --valid-attachments "$DOC"` with DOC unset: the empty path was taken
    for no option at all, and gc went on with the cache (or --keep) alone, so the
    containers the document was to keep live were not; now exit 2 before anything is
    read (a namespace that does not exist: a regression here touches no node)."""
    import pmctl

    cache = tmp_path / "cache"
    (cache / "results").mkdir(parents=True)
    done = pmctl.run(
        ["gc", "--yes", "--min-age", "0", "--netns", "pmt-no-such-ns", "--cni-cache-dir",
         str(cache), "--keep", "abc123", "--valid-attachments", ""],
        unprivileged=True,
    )  # fmt: skip
    pmctl.assert_error(done, 2, "--valid-attachments is empty", "give a file")


# Debian's plugin (/usr/lib/cni/portmap, iptables-nft) ADD of mynet/gone1 (10.88.0.5/16,
# fd00::5/64; 8080:80, [fd00::1]:9090:90/tcp, [fd00::1]:9191:91/udp), then of mynet/live1
# (10.88.0.7/16; 9191:91/udp): its IPv4 nat table as iptables-save printed it (the
# built-in chains' declarations written by the loop, their rules moved last).
_BUILTIN = "".join(f":{c} ACCEPT [0:0]\n" for c in ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"))
_GONE1_LIVE1_V4 = (
    "*nat\n"
    + _BUILTIN
    + """:CNI-DN-83bfb10bc11d871583609 - [0:0]
:CNI-DN-e48e31feea1c58a50531a - [0:0]
:CNI-HOSTPORT-DNAT - [0:0]
:CNI-HOSTPORT-MASQ - [0:0]
:CNI-HOSTPORT-SETMARK - [0:0]
-A CNI-DN-83bfb10bc11d871583609 -s 10.88.0.0/16 -p udp -m udp --dport 9191 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-83bfb10bc11d871583609 -s 127.0.0.1/32 -p udp -m udp --dport 9191 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-83bfb10bc11d871583609 -p udp -m udp --dport 9191 -j DNAT --to-destination 10.88.0.7:91
-A CNI-DN-e48e31feea1c58a50531a -s 10.88.0.0/16 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-e48e31feea1c58a50531a -s 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-e48e31feea1c58a50531a -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.88.0.5:80
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \\"mynet\\" id: \\"gone1\\"" -m multiport --dports 8080,9090 -j CNI-DN-e48e31feea1c58a50531a
-A CNI-HOSTPORT-DNAT -p udp -m comment --comment "dnat name: \\"mynet\\" id: \\"gone1\\"" -m multiport --dports 9191 -j CNI-DN-e48e31feea1c58a50531a
-A CNI-HOSTPORT-DNAT -p udp -m comment --comment "dnat name: \\"mynet\\" id: \\"live1\\"" -m multiport --dports 9191 -j CNI-DN-83bfb10bc11d871583609
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ
-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE
-A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000
COMMIT
"""
)


@pytest.mark.parametrize("keep", [("live1",), ()], ids=["live1-kept", "all"])
def test_a_removed_chain_frees_only_the_ports_it_maps_in_its_family(keep):
    """gone1's IPv4 entry rules name 9090/tcp and 9191/udp (the plugin's multiport has
    every port of the container), but its IPv4 chain DNATs 8080 alone: both have an
    IPv6 host IP. gc's v4 row said `8080/tcp,9090/tcp,9191/udp`, and its UDP flush
    judged IPv4 9191 as a port the removal touched (remapped, with live1 kept: a
    flush-udp --stale-only of IPv4 9191 nobody asked for; freed, with live1 gone too,
    where it is live1's own port that frees it)."""
    tbl = parse_save(_GONE1_LIVE1_V4, 4)
    sources = Sources(keep=keep) if keep else Sources(remove_all=True)
    plan = _plan(tbl, liveness(sources, None))
    removed = {c.container_id: c for c in plan.removed}
    assert removed["gone1"].host_ports == (("tcp", 8080),)
    assert [f.host_ports for f in chain_facts(tbl)] == [(("udp", 9191),), (("tcp", 8080),)]
    if keep:
        assert plan.remapped_udp_ports == () and plan.freed_udp_ports == ()
    else:
        assert plan.freed_udp_ports == (9191,) and plan.remapped_udp_ports == ()
