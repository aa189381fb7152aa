"""Whose a per-container chain is, where another tool's rule enters it too: the
plugin's own entry rule says (its comment names the network and container ID the
chain's name is the hash of), another rule's comment never does. Debian's real plugin
on iptables-nft and legacy, every command that names a chain's owner."""

from __future__ import annotations

import json

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
