"""`list` at 80 columns on a real node (the plugin in a namespace, a pseudo-terminal):
a row of no known container names its chain under CONTAINER by a short form as long
as a short container ID (more where two chains share it), so the table keeps its
columns; the short form is accepted by `list --container` and `flush-udp --container`
(SPEC §3: every value printed is accepted as input), and `check` names the chain so
too. tests/unit/test_narrow_terminals.py
and test_list_row_names.py hold the rendering on dumps."""

from __future__ import annotations

import json
import shlex
from itertools import count
from typing import List, Tuple

from gc_helpers import Node_, node  # noqa: F401
from pmctl import run, run_on_terminal
from test_gc import _ports, _udp_flow

from portmapctl.iptables.chains import chain_name

NETWORK = "gcnet"


def _sharing_twelve() -> Tuple[str, str]:
    """Two container IDs whose chains on NETWORK share their first 12 characters
    (`CNI-DN-` and 5 of the hash: a pair among a few thousand IDs)."""
    seen = {}
    for i in count():
        cid = f"gone{i}"
        start = chain_name(NETWORK, cid)[:12]
        if start in seen:
            return seen[start], cid
        seen[start] = cid
    raise AssertionError("count() does not end")


def _orphan(node: Node_, cid: str, ip: str, port: int) -> str:
    """A chain the plugin made whose entry rule is gone and whose cache entry is not
    there: a row of no known container."""
    node.add(NETWORK, cid, [ip], _ports(f"{port}/udp"), cache=False)
    chain = chain_name(NETWORK, cid)
    lines = node.lines(4)
    (entry,) = [r for r in lines if r.startswith("-A CNI-HOSTPORT-DNAT") and chain in r]
    node.ipt(4, *shlex.split(entry.replace("-A", "-D", 1)))
    return chain


def _table(lines: str) -> List[str]:
    return lines.replace("\r", "").split("\n\n")[0].splitlines()


def test_a_row_of_no_known_container_keeps_the_table_at_80_columns(node: Node_):
    """It printed its chain's whole name, 28 characters, under CONTAINER: at 80
    columns the table left out CONTAINER ADDR (and, beside a longer HOST, SNAT and
    NETWORK) for every row, the known containers' too."""
    node.add(NETWORK, "live1abcdef0123456789", ["10.88.0.11/16"], _ports("8080/tcp"))
    one, two = _sharing_twelve()
    chains = [_orphan(node, one, "10.88.0.12/16", 5301), _orphan(node, two, "10.88.0.13/16", 5302)]
    lone = _orphan(node, "lone1", "10.88.0.14/16", 5303)
    common = ["--netns", node.ns, "--iptables", node.mode, "--cni-cache-dir", str(node.cache)]
    code, out, err = run_on_terminal(["list", *common], {"COLUMNS": "80", "NO_COLOR": "1"})
    assert code == 0, err
    table = _table(out)
    assert all(len(line) <= 80 for line in table), table
    header = table[0].split()
    assert header == ["NETWORK", "CONTAINER", "FAM", "PROTO", "HOST", "CONTAINER", "ADDR", "SNAT",
                      "STATUS"], table  # fmt: skip
    cells = {row.split()[1]: row.split() for row in table[1:]}
    assert cells["live1abcdef0"][0] == NETWORK and "10.88.0.11:80" in cells["live1abcdef0"]
    # A lone chain: as long as a short ID; two that share those: until they differ.
    shorts = {chain: next(c for c in cells if chain.startswith(c)) for chain in [*chains, lone]}
    assert len(shorts[lone]) == 12, shorts
    assert 12 < len(shorts[chains[0]]) == len(shorts[chains[1]]) < 28, shorts
    assert shorts[chains[0]][:-1] == shorts[chains[1]][:-1], shorts
    # -o wide and JSON keep the whole name; every short form selects its chain alone.
    wide = run(["list", *common, "-o", "wide"]).stdout
    assert all(chain in wide for chain in shorts)
    for chain, short in shorts.items():
        picked = json.loads(run(["list", *common, "--container", short, "-o", "json"]).stdout)
        assert {m["chain"] for m in picked["mappings"]} == {chain}, (short, picked)
        assert {m["container_id"] for m in picked["mappings"]} == {None}
        code, out, err = run_on_terminal(["list", *common, "--container", short],
                                         {"COLUMNS": "80", "NO_COLOR": "1"})  # fmt: skip
        assert [row.split()[1] for row in _table(out)[1:]] == [short], out
    # check names each chain as list does, at 80 columns, PROBLEM kept beside it; its
    # JSON and -o wide keep the whole name.
    code, out, err = run_on_terminal(["check", *common], {"COLUMNS": "80", "NO_COLOR": "1"})
    assert code == 1, err
    table = _table(out)
    assert all(len(line) <= 80 for line in table), table
    assert table[0].split() == ["KIND", "FAM", "CONTAINER", "PROBLEM"], table
    # (Each stale: no cache entry, nothing enters it; a PROBLEM goes on under its column.)
    named = [row.split()[2] for row in table[1:] if not row.startswith(" ")]
    assert sorted(c for c in named if c.startswith("CNI-")) == sorted(shorts.values()), table
    checked = json.loads(run(["check", *common, "-o", "json"]).stdout)["problems"]
    assert {p["chain"] for p in checked if p["container_id"] is None} == set(shorts), checked
    wide = run(["check", *common, "-o", "wide"]).stdout
    assert all(chain in wide for chain in shorts), wide
    # flush-udp --container: the flows of that chain's port alone.
    for port in (5301, 5302, 5303):
        _udp_flow(node, 40000 + port, port)
    for chain, short in shorts.items():
        port = {chains[0]: 5301, chains[1]: 5302, lone: 5303}[chain]
        done = run(["flush-udp", *common, "--container", short, "--dry-run", "-o", "json"])
        assert done.returncode == 0, done.stderr
        assert [e["host_port"] for e in json.loads(done.stdout)["deleted"]] == [port], done.stdout
