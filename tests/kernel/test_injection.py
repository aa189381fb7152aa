"""Text from a dump or the CNI cache cannot inject a rule (SPEC §5).

Comments and names that portmapctl reads (a foreign rule's comment in the live
table, the conditions in a cached network config) end up as arguments of the
restore lines it writes -- a `-D` of a rule that jumps to a chain it removes, an
entry rule it re-creates. Whatever they hold, each stays one quoted argument of the
one intended line: the transaction text has exactly the intended lines, each reads
back (as iptables-restore splits it) as exactly the intended arguments, and a text
with a control character is refused (exit 2) instead of written.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import List

import pytest
import realplugin as rp
from injection_helpers import HOSTILE_COMMENTS, _lines  # noqa: F401
from pmctl import assert_error, run
from test_gc import Node_, _ports, _without

from portmapctl.iptables.chains import TOPLEVEL_DNAT, chain_name
from portmapctl.iptables.ruleset import parse_save, rule_target

# --- against the kernel ---------------------------------------------------------------


def _transaction_text(stderr: str, family: int = 4) -> str:
    """The IPv4 restore text that `-v` printed."""
    marker = re.search(rf"# IPv{family}[^\n]*\n", stderr)
    assert marker, stderr
    body = stderr[marker.end() :]
    return body[: body.index("COMMIT\n") + len("COMMIT\n")]


@pytest.fixture
def node(host_ns, iptables_mode, tmp_path) -> Node_:
    cache = tmp_path / "cni"
    (cache / "results").mkdir(parents=True)
    return Node_(host_ns, iptables_mode, cache)


def test_gc_deletes_a_hostile_jump_as_itself_and_keeps_hostile_foreign_rules(node: Node_):
    node.add("mynet", "live1", ["10.88.0.11/16"], _ports("8080/tcp"))
    node.add("mynet", "stale1", ["10.88.0.12/16"], _ports("9090/tcp"), cache=False)
    stale = chain_name("mynet", "stale1")
    for comment in HOSTILE_COMMENTS[:-1]:
        node.ipt(4, "-A", "PREROUTING", "-m", "comment", "--comment", comment, "-j", "RETURN")
        node.ipt(4, "-I", TOPLEVEL_DNAT, "1", "-m", "comment", "--comment", comment, "-j", "RETURN")
    jump = HOSTILE_COMMENTS[1]
    node.ipt(4, "-A", TOPLEVEL_DNAT, "-p", "udp", "-m", "comment", "--comment", jump, "-j", stale)
    before = node.lines(4)

    shown = node.gc("--dry-run", "--min-age", "0", "-v", "--family", "4")
    assert shown.returncode == 0, shown.stderr
    read_back = _lines(_transaction_text(shown.stderr))
    live = parse_save(rp.save(node.ns, 4, node.mode), 4)
    into_stale = [list(r) for r in live.rules(TOPLEVEL_DNAT) if rule_target(r) == stale]
    entries = [w[2:] for w in read_back if w[:2] == ["-D", TOPLEVEL_DNAT]]
    assert entries == into_stale
    assert ["--comment", jump] in [w[4:6] for w in entries]
    # The stale chain is emptied rule by rule as read (never flushed), then deleted.
    own = [list(r) for r in live.rules(stale)]
    assert [w[2:] for w in read_back if w[:2] == ["-D", stale]] == own
    others = [w for w in read_back if w[0] != "-D"]
    assert others == [["-X", stale]] and read_back[-1] == ["-X", stale]
    assert len(read_back) == len(into_stale) + len(own) + 1

    done = node.gc("--yes", "--min-age", "0")
    assert done.returncode == 0, done.stderr
    # Everything else, hostile comments included, byte for byte.
    assert node.lines(4) == _without(before, {stale})
    node.check("live1")


def _cache_with_conditions(node: Node_, cid: str, conditions: List[str]) -> Path:
    """A cache entry for `cid` whose cached portmap config carries `conditions`."""
    conf = rp.plugin_conf("mynet", ["10.88.0.21/16"], _ports("7070/tcp"), conditions_v4=conditions)
    node.confs[cid] = conf
    return node.cache_add("mynet", cid)


def test_repair_writes_a_hostile_cached_condition_as_one_argument(node: Node_):
    """The cache says the container's entry rule carries a comment condition full of
    restore syntax: repair re-creates exactly that rule, nothing more."""
    node.add("mynet", "live1", ["10.88.0.11/16"], _ports("8080/tcp"))
    hostile = 'x" -j ACCEPT\n'.rstrip() + " -A INPUT -j DROP COMMIT"
    _cache_with_conditions(node, "cond1", ["-m", "comment", "--comment", hostile])
    before = node.lines(4)
    done = run(["check", "--repair", "-v", "--netns", node.ns, "--iptables", node.mode,
                "--cni-cache-dir", str(node.cache), "--family", "4"])  # fmt: skip
    assert done.returncode == 0, done.stderr
    read_back = _lines(_transaction_text(done.stderr))
    dn = chain_name("mynet", "cond1")
    assert read_back[0] == ["-N", dn]
    assert {w[0] for w in read_back} == {"-N", "-A"}
    assert {w[1] for w in read_back} == {dn, TOPLEVEL_DNAT}
    [entry] = [w for w in read_back if w[1] == TOPLEVEL_DNAT]
    assert entry[entry.index("--comment", 7) + 1] == hostile  # the condition's own comment
    after = node.lines(4)
    added = [line for line in after if line not in before]
    assert len(added) == len(read_back)  # one new line per restore line, no more
    assert all(dn in line for line in added)
    table = parse_save(rp.save(node.ns, 4, node.mode), 4)
    assert table.rules("INPUT") == ()
    targets = {rule_target(r) for chain in table.chains.values() for r in chain.rules}
    assert not targets & {"ACCEPT", "DROP"}
    node.check("cond1")


def test_a_cached_condition_with_a_newline_is_refused(node: Node_):
    """The entry is refused -- skipped with a warning naming it (a record of the node,
    SPEC §5) -- and nothing of it is written; the live container stays as it was."""
    node.add("mynet", "live1", ["10.88.0.11/16"], _ports("8080/tcp"))
    path = _cache_with_conditions(node, "cond2", ["-m", "comment", "--comment", "a\n-A INPUT"])
    before = {f: node.lines(f) for f in (4, 6)}
    done = run(["check", "--repair", "--netns", node.ns, "--iptables", node.mode,
                "--cni-cache-dir", str(node.cache)])  # fmt: skip
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stdout + done.stderr
    [warning] = done.stderr.splitlines()
    assert warning.startswith("portmapctl: warning: ")
    assert str(path) in warning and "control characters" in warning
    assert {f: node.lines(f) for f in (4, 6)} == before


def test_a_foreign_comment_with_a_newline_makes_the_node_unreadable_not_writable(node: Node_):
    """iptables-save prints a newline in a comment as it is: the dump is then not
    iptables-save syntax (iptables-restore could not read it either). portmapctl
    refuses the node, naming the line, and writes nothing: exit 3, a table that cannot
    be read (SPEC §5), not 2, which says the user's own input was wrong."""
    node.add("mynet", "stale1", ["10.88.0.12/16"], _ports("9090/tcp"), cache=False)
    fake = f"x\n-A {TOPLEVEL_DNAT} -j ACCEPT\n-A PREROUTING -m comment --comment y"
    node.ipt(4, "-A", "PREROUTING", "-m", "comment", "--comment", fake, "-j", "RETURN")
    before = node.lines(4)
    for argv in (["gc", "--yes", "--min-age", "0", "--all"], ["check", "--repair"], ["list"]):
        done = run([*argv, "--netns", node.ns, "--iptables", node.mode,
                    "--cni-cache-dir", str(node.cache)])  # fmt: skip
        assert_error(done, 3, "line", "unterminated quote", "cannot be read through")
    assert node.lines(4) == before
