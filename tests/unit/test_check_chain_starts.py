"""`check`'s table names a chain of no known container under CONTAINER as `list`'s
does (render.table.chain_starts, since 2494ff2): a start as long as a short ID, longer
where two of the node's such chains share it. It printed the whole name, 28
characters, which took room from PROBLEM at 80 columns, and one chain read two ways in
list and check. -o wide (CHAIN column) and JSON keep the whole name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import pytest
from test_list_row_names import FIELD, NO_CACHE, rows
from test_output_contract import at_80, pmctl

EXAMPLE_NO_CACHE = ["--snapshot", "examples/node.v4.save", "--snapshot6", "examples/node.v6.save",
                    *NO_CACHE]  # fmt: skip
NODES = {
    "example": EXAMPLE_NO_CACHE,
    "plugins-643-dead": ["--snapshot", f"{FIELD}/plugins-643-dead.v4.save", *NO_CACHE],
    "plugins-643-hairpin32": ["--snapshot", f"{FIELD}/plugins-643-hairpin32.v4.save", *NO_CACHE],
}


def _cells(out: str, header: str) -> List[str]:
    """The cells of the column `header` (one word) of a table's rows (not the lines
    a PROBLEM goes on over, under its column)."""
    table = out.replace("\r", "").split("\n\n")[0].splitlines()
    cells = rows("\n".join(line for line in table if not line.startswith(" ")))
    column = cells[0].index(header)
    return [row[column] for row in cells[1:]]


def _orphans(args: List[str]) -> List[str]:
    """The whole names of the per-container chains check finds no known container of
    (JSON)."""
    document = json.loads(pmctl("check", *args, "-o", "json").stdout)
    problems = document["problems"]
    return sorted({p["chain"] for p in problems if p["container_id"] is None and p["chain"]
                   and p["chain"].startswith(("CNI-DN-", "CNI-SN-"))})  # fmt: skip


@pytest.mark.parametrize("node", sorted(NODES))
def test_check_at_80_columns_names_the_chain_of_no_known_container_as_list_does(node):
    args = NODES[node]
    (chain,) = _orphans(args)
    code, out, err = at_80("check", *args)
    assert code == 1, err
    table = out.replace("\r", "").split("\n\n")[0].splitlines()
    assert all(len(line) <= 80 for line in table), table
    assert table[0].split() == ["KIND", "FAM", "CONTAINER", "PROBLEM"], table
    # (dead: two problems of the chain, one name.)
    shown = sorted({cell for cell in _cells(out, "CONTAINER") if cell.startswith("CNI-")})
    listed = [cell for cell in _cells(at_80("list", *args)[1], "CONTAINER") if cell[:4] == "CNI-"]
    # As long as a short ID, the chain's start, and list's own.
    assert shown == listed == [chain[:12]], (shown, listed)
    # PROBLEM starts where a short ID's column ends (`orphan    v4   CNI-DN-e7055  no ...`).
    assert table[0].index("PROBLEM") == table[0].index("CONTAINER") + 14, table
    # Piped, as on a terminal; --no-trunc, -o wide (CHAIN) and JSON name it whole.
    assert chain[:12] in _cells(pmctl("check", *args).stdout, "CONTAINER")
    assert chain in _cells(pmctl("check", *args, "--no-trunc").stdout, "CONTAINER")
    wide = pmctl("check", *args, "-o", "wide").stdout
    assert chain in _cells(wide, "CHAIN") and chain[:12] not in _cells(wide, "CONTAINER")
    # What check prints selects that chain alone in list (check has no such filter:
    # its --container is the one mapping to check, with --ip and -p or --cni-config).
    picked = json.loads(pmctl("list", *args, "--container", chain[:12], "-o", "json").stdout)
    assert {m["chain"] for m in picked["mappings"]} == {chain}, picked


ENTERED = "CNI-DN-b90b4b4b2acd85a47b9be"  # long-comment's: entered, of no known container
TWIN = "CNI-DN-b90b4b0123456789abcde"  # shares its first 13 characters with ENTERED


def test_check_tells_the_chain_apart_from_the_nodes_others_as_list_does(tmp_path: Path):
    """Unique over the node's chains of no known container, not only those check has a
    problem with: beside long-comment's healthy chain (its entry rule's comment cut, so
    no container is named) an orphan sharing 13 characters with it is `CNI-DN-b90b4b0`
    in both; `CNI-DN-b90b4`, unique among check's rows, selects both in list."""
    save = Path("tests/fixtures/long-comment.v4.save").read_text()
    chain = f":{TWIN} - [0:0]\n-A {TWIN} -p tcp -m tcp --dport 9100 -j DNAT --to-destination 10.88.0.8:9100\n"  # fmt: skip
    dump = tmp_path / "twins.v4.save"
    dump.write_text(save.replace("COMMIT", chain + "COMMIT"))
    args = ["--snapshot", str(dump), *NO_CACHE]
    assert _orphans(args) == [TWIN]
    code, out, err = at_80("check", *args)
    assert code == 1, err
    assert _cells(out, "CONTAINER") == [TWIN[:14]], out
    listed = _cells(at_80("list", *args)[1], "CONTAINER")
    assert sorted(listed) == sorted([ENTERED[:14], TWIN[:14]]), listed
    picked = json.loads(pmctl("list", *args, "--container", TWIN[:14], "-o", "json").stdout)
    assert {m["chain"] for m in picked["mappings"]} == {TWIN}, picked
