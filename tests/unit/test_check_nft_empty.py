"""check's shortcut for a node without the plugin's nftables tables (ops/check/nft.py):
it must find exactly what the full nftables pass finds, on nodes where it applies, and
stand aside where it does not (a table, a container configured for nftables, or
--backend nftables)."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Sequence

import pytest

from portmapctl.cni.cache import read_cache
from portmapctl.iptables.access.memory import MemoryBackend
from portmapctl.iptables.ruleset import parse_save
from portmapctl.nftables.access.memory import MemoryNft
from portmapctl.ops.check import nft as check_nft
from portmapctl.ops.check.hints import Fixes
from portmapctl.ops.node import Node, NodeOptions

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CACHE = ROOT / "examples" / "cni-cache"


def example_tables():
    return {f: parse_save((ROOT / "examples" / f"node.v{f}.save").read_text(), f) for f in (4, 6)}


def full_pass(node: Node, tables, attachments):
    """What nft_problems' whole nftables pass starts from: (the split, the inventory)."""
    from portmapctl.ops import nft

    _live, parts, found = nft.build(
        node, attachments, check_nft.iptables_owners(tables, attachments)
    )
    return parts, found


def nft_configured_cache(tmp_path: Path, ids: Sequence[str] = ()) -> str:
    """The example cache with one container's config saying `"backend": "nftables"`
    (the first's; or those of the container IDs `ids`)."""
    cache = tmp_path / "cache"
    shutil.copytree(EXAMPLE_CACHE, cache)
    entries = sorted((cache / "results").iterdir())
    keyed = [e for e in entries if e.name.endswith(tuple(f"-{i}-eth0" for i in ids))]
    for entry_file in keyed if ids else entries[:1]:
        entry = json.loads(entry_file.read_text())
        conf = json.loads(base64.b64decode(entry["config"]))
        for plugin in conf.get("plugins", [conf]):
            if plugin.get("type") == "portmap":
                plugin["backend"] = "nftables"
        entry["config"] = base64.b64encode(json.dumps(conf).encode()).decode()
        entry_file.write_text(json.dumps(entry))
    return str(cache)


@pytest.mark.parametrize("cache", [str(EXAMPLE_CACHE), None], ids=["cache", "no-cache"])
def test_an_iptables_node_without_nft_tables_gives_what_the_full_pass_gives(cache):
    tables = example_tables()
    node = Node(
        NodeOptions(cache_dirs=(cache or "/nonexistent",)), MemoryBackend(tables), MemoryNft()
    )
    attachments = read_cache(cache) if cache else None
    short = check_nft.nft_problems(node, tables, attachments, Fixes())
    parts, found = full_pass(node, tables, attachments)
    # The full pass finds no problem, no row, nothing nft-backed, nothing compared.
    assert not found.problems and not found.mappings and not parts.nftables and not parts.both
    assert short.problems == [] and short.nft_ids == set() and short.compared == 0
    assert short.notes == [] and short.found is None


def test_the_shortcut_stands_aside_for_a_container_configured_for_nftables(tmp_path):
    cache = nft_configured_cache(tmp_path)
    tables = example_tables()
    node = Node(NodeOptions(cache_dirs=(cache,)), MemoryBackend(tables), MemoryNft())
    attachments = read_cache(cache)
    found = check_nft.nft_problems(node, tables, attachments, Fixes())
    # Its table is missing: the full pass says so.
    assert found.nft_ids and found.found is not None
    assert any(p.kind == "nft-missing-table" for p in found.problems)


def test_the_shortcut_stands_aside_for_backend_nftables():
    tables = example_tables()
    # A node without iptables (keyless: the plugin takes nftables for a config without
    # the key; --backend nftables reads no iptables): the example's containers are
    # nftables' and their tables missing.
    options = NodeOptions(cache_dirs=(str(EXAMPLE_CACHE),), backend="nftables", keyless="nftables")
    node = Node(options, MemoryBackend(tables), MemoryNft())
    attachments = read_cache(str(EXAMPLE_CACHE))
    found = check_nft.nft_problems(node, {}, attachments, Fixes())
    assert found.found is not None and found.nft_ids
    # Where iptables works they stay iptables' (not looked at): nothing is expected.
    options = NodeOptions(cache_dirs=(str(EXAMPLE_CACHE),), backend="nftables")
    node = Node(options, MemoryBackend(tables), MemoryNft())
    found = check_nft.nft_problems(node, {}, attachments, Fixes())
    assert found.found is not None and not found.nft_ids and not found.problems


def test_backend_nftables_says_how_many_iptables_containers_it_did_not_check(tmp_path):
    """--backend nftables judges nothing of the cached containers the plugin keeps in
    iptables (run.py `judged`): check said "healthy" of a mixed node without saying
    that part was skipped, as --backend iptables says of nftables' containers."""
    from portmapctl.iptables.access.unread import Unread
    from portmapctl.ops.check.run import check_node

    cache = nft_configured_cache(tmp_path)  # one of the three configured for nftables
    options = NodeOptions(cache_dirs=(cache,), backend="nftables")
    notes = check_node(Node(options, Unread(), MemoryNft())).notes
    assert [n for n in notes if n.startswith("--backend")] == [
        "--backend nftables: 2 cached containers are the plugin's iptables' (their"
        " config's backend key, or no rules of theirs in nftables): not checked"
    ]
    # Where the plugin takes nftables for a config without the key, all three are
    # nftables' (and judged); a check not narrowed by --backend skips nothing.
    keyless = NodeOptions(cache_dirs=(cache,), backend="nftables", keyless="nftables")
    plain = NodeOptions(cache_dirs=(cache,))
    for node in (
        Node(keyless, Unread(), MemoryNft()),
        Node(plain, MemoryBackend(example_tables()), MemoryNft()),
    ):
        assert not [n for n in check_node(node).notes if n.startswith("--backend")]


def test_a_stale_container_is_explained_alike_in_either_backend():
    """check explains each kind once (SPEC §3): on a node with stale containers in both
    backends the two stale whys said the same thing in other words, so "stale:" was
    explained twice."""
    import nftcases

    from portmapctl.ops.check.run import check_node

    options = NodeOptions(cache_dirs=(str(EXAMPLE_CACHE),))
    node = Node(options, MemoryBackend(example_tables()), MemoryNft(nftcases.live("v191-several")))
    problems = [p for p in check_node(node).problems if p.kind == "stale"]
    backends = {p.chain.startswith("nft:") for p in problems}
    assert backends == {True, False}, problems  # stale ones in both
    dnat = [p for p in problems if not p.chain.startswith("nft:masquerading")]
    assert len({p.why for p in dnat}) == 1, {p.why for p in dnat}
