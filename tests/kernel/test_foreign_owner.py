"""Whose a per-container chain is, where another tool's rule enters it too: the
plugin's own entry rule says (its comment names the network and container ID the
chain's name is the hash of), another rule's comment never does. Debian's real plugin
on iptables-nft and legacy, every command that names a chain's owner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional

import pytest
from gc_helpers import Node_, node  # noqa: F401
from gc_helpers import ports as _ports
from pmctl import run

from portmapctl.iptables.chains import TOPLEVEL_DNAT, chain_name

EVIL = "ev\x1b[2J\x07il"


def _enter(node: Node_, chain: str, comment: str, port: int) -> None:
    """Another tool's rule, first in CNI-HOSTPORT-DNAT, sending `port` to `chain`."""
    node.ipt(4, "-I", TOPLEVEL_DNAT, "-p", "tcp", "-m", "comment", "--comment", comment,
             "-m", "multiport", "--dports", str(port), "-j", chain)  # fmt: skip


@pytest.fixture
def foreign(node: Node_) -> Node_:
    """live1 cached; stale1 and stale2 not. Ahead of stale1's own entry rule, another
    tool's rule whose comment names network `ev<ESC>[2J<BEL>il` and the live container
    live1; stale2's own entry rule deleted, another tool's naming other/ghost enters
    its chain alone."""
    node.add("gcnet", "live1", ["10.88.0.11/16"], _ports("8090/tcp"))
    node.add("gcnet", "stale1", ["10.88.0.12/16"], _ports("8080/tcp", "5353/udp"), cache=False)
    node.add("gcnet", "stale2", ["10.88.0.13/16"], _ports("8081/tcp"), cache=False)
    stale2 = chain_name("gcnet", "stale2")
    node.ipt(4, "-D", TOPLEVEL_DNAT, "-p", "tcp", "-m", "comment", "--comment",
             'dnat name: "gcnet" id: "stale2"', "-m", "multiport", "--dports", "8081",
             "-j", stale2)  # fmt: skip
    _enter(node, stale2, 'dnat name: "other" id: "ghost"', 8084)
    _enter(node, chain_name("gcnet", "stale1"), f'dnat name: "{EVIL}" id: "live1"', 8082)
    return node


def _cli(node: Node_, *args: str) -> str:
    argv = [args[0], "--netns", node.ns, "--iptables", node.mode, "--family", "4"]
    done = run([*argv, "--cni-cache-dir", str(node.cache), *args[1:]])
    assert done.returncode in (0, 1), done.stderr
    return done.stdout


def test_a_foreign_rule_entering_a_chain_never_names_its_owner(foreign: Node_):
    """A foreign rule's comment named the chain's owner where it stood first: list,
    check and gc called stale1's chain `ev\\x1b[2J\\x07il`/live1's (list called it ok:
    live1 is cached, so neither stale in list nor counted so in metrics, and
    `flush-udp --container stale1` found none of its UDP ports), and stale2's, which only
    that tool's rule enters, other/ghost's. Now stale1's is gcnet/stale1's (its own
    entry rule's comment, whose hash is the chain's name), stale2's nobody's known."""
    node = foreign
    stale1, stale2 = chain_name("gcnet", "stale1"), chain_name("gcnet", "stale2")
    owners = {stale1: ["gcnet", "stale1"], stale2: [None, None]}

    listed = json.loads(_cli(node, "list", "-o", "json"))
    got = {c["chain"]: [c["network"], c["container_id"]] for c in listed["chains"]}
    assert {k: got[k] for k in owners} == owners, listed["chains"]
    assert {m["chain"]: [m["network"], m["container_id"]] for m in listed["mappings"]
            if m["chain"] in owners} == owners  # fmt: skip
    status = {c["chain"]: c["status"] for c in listed["chains"]}
    assert "stale" in status[stale1] and "stale" in status[stale2], status

    checked = json.loads(_cli(node, "check", "-o", "json"))
    stale = {p["chain"]: [p["network"], p["container_id"]] for p in checked["problems"]
             if p["kind"] == "stale"}  # fmt: skip
    assert stale == owners, checked["problems"]
    table = _cli(node, "check")
    assert "gcnet/stale1" in table and "live1" not in table and "ghost" not in table, table

    planned = json.loads(_cli(node, "gc", "--dry-run", "--min-age", "0", "-o", "json"))
    gone = {c["chain"]: [c["network"], c["container_id"]] for c in planned["removed"]}
    assert gone.get(stale2) == owners[stale2], planned

    flushed = _cli(node, "flush-udp", "--dry-run", "--container", "stale1")
    assert "5353" in flushed, flushed


def _gc_rows(node: Node_, *args: str, cache: Optional[Path] = None) -> Dict[str, List]:
    """The chains gc --dry-run --min-age 0 would remove, with their owners."""
    done = node.gc("--dry-run", "--min-age", "0", "-o", "json", *args, cache=cache)
    assert done.returncode == 0, done.stderr
    return {c["chain"]: [c["network"], c["container_id"]]
            for c in json.loads(done.stdout)["removed"]}  # fmt: skip


def test_gc_removes_what_check_calls_stale_whatever_a_foreign_comment_names(
    foreign: Node_, tmp_path
):
    """gc kept a chain whenever any rule entering it had a comment naming a live
    container (also through a --keep prefix), and judged it by that comment's network
    under a valid-attachments document of one network: with another tool's rule
    naming live1 entering stale1's chain, `check` said stale1 stale ("fix: portmapctl
    gc") while every `gc` kept it ("2 kept"), a leaked chain and a cron loop for ever.
    Only a comment naming the network and ID its chain's name is the hash of (the
    plugin's own) says whose a chain is. Where no such comment says (stale3's, only
    another tool's rule enters it, naming gcnet and live1), the document of gcnet
    does not speak for it: it is kept."""
    node = foreign
    node.add("gcnet", "stale3", ["10.88.0.14/16"], _ports("8083/tcp"), cache=False)
    stale1, stale2, stale3 = (chain_name("gcnet", c) for c in ("stale1", "stale2", "stale3"))
    node.ipt(4, "-D", TOPLEVEL_DNAT, "-p", "tcp", "-m", "comment", "--comment",
             'dnat name: "gcnet" id: "stale3"', "-m", "multiport", "--dports", "8083",
             "-j", stale3)  # fmt: skip
    _enter(node, stale3, 'dnat name: "gcnet" id: "live1"', 8085)
    live1 = chain_name("gcnet", "live1")

    checked = json.loads(_cli(node, "check", "-o", "json"))
    said_stale = {p["chain"] for p in checked["problems"] if p["kind"] == "stale"}
    assert said_stale == {stale1, stale2, stale3}, checked["problems"]
    fixes = {p["fix"] for p in checked["problems"] if p["kind"] == "stale"}
    assert len(fixes) == 1 and fixes.pop().startswith("portmapctl gc "), checked["problems"]
    # The cache says live1 alone is live: all three go, as check says.
    owners = {stale1: ["gcnet", "stale1"], stale2: [None, None], stale3: [None, None]}
    assert _gc_rows(node) == owners
    # --keep of a prefix of live1's ID keeps live1's chain alone.
    assert _gc_rows(node, "--keep", "liv", cache=tmp_path / "none") == owners
    # A document of gcnet listing live1: stale1's chain is gcnet's (its own comment),
    # whatever network the other rule names; stale2's and stale3's are of no known
    # network, and the document speaks for gcnet's alone.
    document = tmp_path / "doc.json"
    document.write_text(json.dumps(
        {"name": "gcnet", "cni.dev/valid-attachments": [{"containerID": "live1"}]}))  # fmt: skip
    assert _gc_rows(node, "--valid-attachments", str(document), cache=tmp_path / "none") == {
        stale1: ["gcnet", "stale1"]
    }

    done = node.gc("--yes", "--min-age", "0", "-o", "json")
    assert done.returncode == 0, done.stderr
    assert {c["chain"] for c in json.loads(done.stdout)["removed"]} == set(owners)
    after = "\n".join(node.lines(4))
    assert live1 in after and not any(c in after for c in owners), after
    assert not json.loads(_cli(node, "check", "-o", "json"))["problems"]


def test_a_foreign_rule_entering_a_chain_makes_it_no_incomplete(foreign: Node_, tmp_path):
    """Another tool's rule sending a port into a plugin chain that has no rule for it
    made the chain `incomplete`: list called live1 incomplete where check (its cached
    config) said extra-entry, check without a cache said "entry rules send tcp/8099
    here but no rule DNATs them" and "re-create the mapping", and stale1's stale row
    said so of tcp/8082. Only the plugin's own entry rules say which ports a chain
    must DNAT; the foreign rule is check's extra-entry where a cached config says what
    the plugin's are. Both families read (IPv6's table tells tcp/8082 is missing)."""
    node = foreign
    live1, stale1 = chain_name("gcnet", "live1"), chain_name("gcnet", "stale1")
    _enter(node, live1, "kube-proxy: web", 8099)
    argv = ["--netns", node.ns, "--iptables", node.mode, "-o", "json", "--cni-cache-dir"]

    for cache in (str(node.cache), str(tmp_path / "none")):
        done = run(["list", *argv, cache])
        assert done.returncode == 0, done.stderr
        chains = {c["chain"]: c for c in json.loads(done.stdout)["chains"]}
        for chain in (stale1, live1):
            assert "incomplete" not in chains[chain]["status"], chains[chain]
        done = run(["check", *argv, cache])
        assert done.returncode in (0, 1), done.stderr
        problems = json.loads(done.stdout)["problems"]
        assert not [p for p in problems if p["kind"] == "incomplete"], problems
        assert not [p for p in problems if "no rule DNATs" in p["detail"]], problems

    done = run(["check", *argv, str(node.cache)])
    extra = [p for p in json.loads(done.stdout)["problems"] if p["kind"] == "extra-entry"]
    assert [(p["chain"], p["container_id"]) for p in extra] == [(live1, "live1")], extra
    assert "--dports 8099" in extra[0]["rule"], extra
