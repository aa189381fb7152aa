"""Tables on terminals narrower than 80 columns (laptops, tmux panes): the column that
says what is wrong (list's and gc's STATUS, check's KIND and PROBLEM, flush-udp's WHY)
is never cut; other columns give way first, and no line is wider than the terminal.
Piped, -o wide and --no-trunc are as before.

Read on a real pseudo-terminal (tests/unit/test_terminal.py), as an operator sees them.
"""

from __future__ import annotations

import json
from typing import List

import pytest
from test_output_contract import EXAMPLE, long_mapping, pmctl
from test_terminal import run_on_terminal

from portmapctl import render
from portmapctl.core.status import FlushReason
from portmapctl.host.conntrack import ConntrackEntry
from portmapctl.ops.flush_udp import Doomed, FlushResult
from portmapctl.ops.gc import GcChain, GcResult
from portmapctl.render.flush_udp import flush_why
from portmapctl.render.gc import gc_table

STATUSES = {"ok", "stale", "shadowed", "orphan"}


def at(columns: int, *args: str):
    code, out, err = run_on_terminal(list(args), {"COLUMNS": str(columns), "NO_COLOR": "1"})
    return code, out.replace("\r", "").rstrip("\n").split("\n"), err


def table_of(lines: List[str]) -> List[str]:
    return lines[: lines.index("")]


@pytest.mark.parametrize("columns", [60, 50])
def test_list_on_a_narrow_terminal_keeps_every_status_whole_and_the_header_one_line(columns):
    code, lines, err = at(columns, "list", *EXAMPLE)
    assert code == 0 and err == ""
    table = table_of(lines)
    assert all(len(line) <= columns for line in lines), lines  # nothing wraps
    header = table[0].split()
    assert header[:2] == ["CONTAINER", "FAM"] or header[:2] == ["NETWORK", "CONTAINER"]
    assert header[-1] == "STATUS" and "CHAIN" not in header
    rows = table[1:]
    assert len(rows) == 7, "one line a row"
    assert [row.split()[-1] for row in rows] == [
        "ok", "ok", "ok", "ok", "shadowed", "stale", "orphan",
    ]  # fmt: skip
    assert "…" not in "\n".join(table[1:]).replace("[fd00…8::5]", "")
    # The host port, which mapping a row is, stays.
    assert "HOST" in header and "*:8080" in rows[0]


def test_list_at_60_columns_leaves_out_the_container_address_first():
    code, lines, _ = at(60, "list", *EXAMPLE)
    header = table_of(lines)[0].split()
    assert header == ["NETWORK", "CONTAINER", "FAM", "PROTO", "HOST", "SNAT", "STATUS"]


def test_long_statuses_stay_whole_on_a_narrow_terminal():
    many = ("contested", "shadowed", "stale")
    mappings = [long_mapping("3f2a9c1e5b7d4a60web", many), long_mapping("8c41d07a2e9f")]
    for width in (80, 60, 50):
        lines = render.list_table(mappings, [], wide=False, width=width).plain.split("\n")
        assert all(len(line) <= width for line in lines), (width, lines)
        assert "…" not in "".join(line.rsplit(" ", 1)[-1] for line in lines), lines
        text = "".join(line.strip() for line in lines)
        assert "contested,shadowed,stale" in text, (width, lines)


def test_list_wide_and_no_trunc_are_unchanged_on_a_narrow_terminal():
    for extra in (["-o", "wide"], ["--no-trunc"]):
        code, lines, _ = at(60, "list", *EXAMPLE, *extra)
        assert code == 0
        piped = pmctl("list", *EXAMPLE, *extra).stdout.rstrip("\n").split("\n")
        assert table_of(lines) == table_of(piped), extra


def test_check_at_60_columns_cuts_no_kind_and_no_problem():
    code, lines, err = at(60, "check", *EXAMPLE)
    assert code == 1 and err == ""
    assert all(len(line) <= 60 for line in lines), lines
    assert all(line == line.rstrip() for line in lines)
    table = table_of(lines)
    assert table[0].split() == ["KIND", "FAM", "CONTAINER", "PROBLEM"]
    assert "…" not in "\n".join(lines)
    rows = [line for line in table[1:] if not line.startswith(" ")]
    assert [row.split()[0] for row in rows] == ["shadowed", "stale", "missing-entry"]
    # Each problem whole: its lines, joined, are the detail the piped table prints.
    piped = [line for line in pmctl("check", *EXAMPLE).stdout.split("\n")[1:4]]
    column = table[0].index("PROBLEM")
    shown = " ".join(line[column:] if not line.startswith(" ") else line for line in table[1:])
    for line in piped:
        assert " ".join(line[column:].split()) in " ".join(shown.split()), (line, table)


def test_check_wide_and_no_trunc_are_unchanged_on_a_narrow_terminal():
    for extra in (["-o", "wide"], ["--no-trunc"]):
        code, lines, _ = at(60, "check", *EXAMPLE, *extra)
        piped = pmctl("check", *EXAMPLE, *extra).stdout.rstrip("\n").split("\n")
        assert table_of(lines) == table_of(piped), extra


def test_gc_at_60_columns_keeps_its_status_whole():
    ports = tuple(("tcp", 20000 + i) for i in range(3))
    pending = GcChain("CNI-DN-70a29d9dc18bc4d652ea5", 4, "dnat", "podman",
                      "0123456789abcdef", ports, seen_seconds=30.0)  # fmt: skip
    gone = GcChain("CNI-DN-70a29d9dc18bc4d652ea6", 4, "dnat", "podman",
                   "1123456789abcdef", ports[:1], seen_seconds=300.0)  # fmt: skip
    result = GcResult(True, (gone,), (pending,), kept=0, conntrack_deleted=0)
    for width in (60, 50, 40):
        lines = gc_table(result, 120.0, width=width).plain.split("\n")
        assert all(len(line) <= width for line in lines), (width, lines)
        assert lines[0].split() == ["FAM", "CONTAINER", "SEEN", "STATUS"]  # GC_DROPS gone
        text = " ".join(" ".join(lines).split())
        assert "would remove" in text and "removable in 1m30s, at" in text, lines
        assert lines[1].split()[1] == "1123456789ab", "the container ID stays whole"
    # Piped and -o wide, whole.
    whole = gc_table(result, 120.0).plain
    assert "20000/tcp,20001/tcp,20002/tcp" in whole and "podman" in whole


def test_gc_names_a_chain_of_no_known_container_by_its_name():
    """An orphan chain no entry rule names has no container ID: its row said `-`, and
    with HOST PORTS left out at 60 columns it read `v4  -  9s  removable in 1m51s`,
    naming nothing (review helper-133). Its chain's name stands there instead."""
    orphan = GcChain("CNI-DN-70a29d9dc18bc4d652ea5", 4, "dnat", None, None,
                     (("udp", 5353),), seen_seconds=9.0)  # fmt: skip
    result = GcResult(True, (), (orphan,), kept=0, conntrack_deleted=0)
    for width in (None, 60, 40):
        lines = gc_table(result, 120.0, width=width).plain.split("\n")
        column = lines[0].split().index("CONTAINER")  # (NETWORK is left out when narrow)
        assert lines[1].split()[column] == "CNI-DN-70a29d9dc18bc4d652ea5", (width, lines)


def test_check_piped_is_one_line_a_problem():
    doc = json.loads(pmctl("check", *EXAMPLE, "-o", "json").stdout)
    piped = pmctl("check", *EXAMPLE).stdout.split("\n")
    assert len(table_of(piped)) == 1 + len(doc["problems"])


def test_flush_udp_keeps_why_whole_on_a_narrow_terminal():
    """WHY says why an entry goes: never cut; REPLY FROM, then DESTINATION give way
    (-o wide shows them), and what does not fit of WHY goes on below it."""
    old = ConntrackEntry(4, "udp", "192.168.122.17", "192.168.122.10", 41000, 5353,
                         "10.88.0.7", "192.168.122.17", 53, 41000)  # fmt: skip
    never = ConntrackEntry(6, "udp", "fd00:1::17", "fd00:1::10", 41001, 5353,
                           "fd00:1::10", "fd00:1::17", 5353, 41001)  # fmt: skip
    doomed = (
        Doomed(old, FlushReason.OLD_DESTINATION, ("10.88.0.9:53",)),
        Doomed(never, FlushReason.NOT_DNATED, ("[fd00::9]:53",)),
        Doomed(old, FlushReason.MAPPED),
    )
    result = FlushResult(True, False, ((4, 5353), (6, 5353)), doomed, 3, 0)
    whys = [flush_why(d) for d in doomed]
    for width in (80, 60, 50):
        lines = render.flush_table(result, width=width).plain.split("\n")
        assert all(len(line) <= width for line in lines), (width, lines)
        assert lines[0].split()[-1] == "WHY", (width, lines)
        text = " ".join(" ".join(lines).split())
        assert "…" not in text.replace("192.16…22.17", ""), "only the source's middle"
        assert all(why in text for why in whys), (width, lines)
        assert "41000->5353" in lines[1] and "41001->5353" in text, "the ports stay"
    # Piped (no width) and so -o wide: every column, whole.
    whole = render.flush_table(result).plain
    assert whole.split("\n")[0].split()[-3:] == ["REPLY", "FROM", "WHY"]
    assert all(why in whole for why in whys) and "192.168.122.10" in whole


@pytest.mark.parametrize(
    "room, shown",
    [
        (60, "10.88.0.1:65002 if ! -s 192.168.100.0/24"),
        (20, "10.88.0.1:65002 if …"),
        (15, "10….1:65002 if…"),
        (12, "10.….1:65002"),
    ],
)
def test_a_host_cell_with_conditions_keeps_its_port_over_them(room, shown):
    """The HOST cell of a mapping with conditionsV4 (`10.88.0.1:65002 if ! -s ...`),
    cut to its column at 80 columns, showed `10.88.0.1:6…`: the host port, which mapping
    a row is, was cut first. The conditions go first now, from their end, then the mark
    that they follow, then the address's middle; the port stays."""
    from portmapctl.render.table import cut_address

    assert cut_address("10.88.0.1:65002 if ! -s 192.168.100.0/24", room) == shown
    assert len(shown) <= room
