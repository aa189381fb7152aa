"""Tables on terminals narrower than 80 columns (laptops, tmux panes): the column that
says what is wrong (list's and gc's STATUS, check's KIND and PROBLEM, flush-udp's WHY)
is never cut; other columns give way first, and no line is wider than the terminal.
Piped, -o wide and --no-trunc are as before.

Read on a real pseudo-terminal (tests/unit/test_terminal.py), as an operator sees them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import pytest
from test_output_contract import EXAMPLE, LONG_V6, long_mapping, pmctl
from test_terminal import run_on_terminal

from portmapctl import render
from portmapctl.core.status import FlushReason
from portmapctl.host.conntrack import ConntrackEntry
from portmapctl.iptables.inventory import Mapping
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
        # (At 60 and 50 the long statuses go on below their row, a readable HOST ends it.)
        words = [word for line in lines for word in line.split()
                 if not word.startswith(("[", "a-very-"))]  # fmt: skip
        assert not any("…" in word for word in words), lines
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
    # Not consecutive: a run of ports would be one range, `20000-20002/tcp`.
    ports = tuple(("tcp", 20000 + 2 * i) for i in range(3))
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
    assert "20000/tcp,20002/tcp,20004/tcp" in whole and "podman" in whole


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
        (19, "10.88.0.1:65002 if…"),
        (18, "10.8…0.1:65002 if…"),
        (15, "10….1:65002 if…"),
        (12, "10.….1:65002"),
    ],
)
def test_a_host_cell_with_conditions_keeps_its_port_over_them(room, shown):
    """The HOST cell of a mapping with conditionsV4 (`10.88.0.1:65002 if ! -s ...`),
    cut to its column at 80 columns, showed `10.88.0.1:6…`: the host port, which mapping
    a row is, was cut first. The conditions go first now, from their end, down to the
    `if…` that says there are some (an IPv4 address beside it reads whole only:
    address_floor counts both); in a column narrower than that (only when nothing else
    is left to give way) the address's middle, then the mark; the port stays. Never
    `…` alone after the port (`10.88.0.1:65002…` reads as a cut port)."""
    from portmapctl.render.cuts import cut_address

    assert cut_address("10.88.0.1:65002 if ! -s 192.168.100.0/24", room) == shown
    assert len(shown) <= room


@pytest.mark.parametrize(
    "cell, floor",
    [("10.88.0.1:65002 if ! -s 192.168.100.0/24", len("10.88.0.1:65002 if…")),
     ("*:8080 if iifname \"eth0\"", len("*:8080 if…")),
     ("[2001:db8:85a3::8a2e:370:7334]:8080 if -s 2001:db8::/32", len("[2001:db8:…:7334]:8080 if…")),
     ("10.88.0.1:65002", 15)],
)  # fmt: skip
def test_a_host_cell_with_conditions_reads_in_its_address_and_the_mark_that_says_so(cell, floor):
    """address_floor, what a HOST cell is cut to at the least before other columns give
    way, counts `if…`: without it the cell reads as a mapping of every packet."""
    from portmapctl.render.cuts import address_floor, cut_address

    assert address_floor(cell) == floor
    assert cut_address(cell, floor).endswith(" if…") == (" if " in cell)


CONDITIONED = Mapping("podman", "3f2a9c1e5b7d", 4, "udp", "10.88.0.1", 65002, "10.88.0.5", 53,
                      True, "CNI-DN-0123456789abcdef01234", ("ok",),
                      conditions=("!", "-s", "192.168.100.0/24"))  # fmt: skip
UNCONDITIONED = Mapping("podman", "8c41d07a2e9f", 4, "udp", "10.88.0.1", 65003, "10.88.0.6", 53,
                        True, "CNI-DN-1123456789abcdef01234", ("ok",))  # fmt: skip


@pytest.mark.parametrize("width", range(47, 201))
def test_a_host_cell_with_conditions_says_so_at_every_width(width):
    """At 80 columns list showed a mapping with conditionsV4 as `10.88.0.1:65002`, the
    row of a mapping that takes every packet to the port (at 58 and 64 too; at 81-83,
    50-52 `10.88.0.1:65002…`, a cut port to the eye): HOST was cut to its address's
    floor, the conditions' mark let go, to keep CONTAINER ADDR. The mark is part of
    what the cell reads in: CONTAINER ADDR and the rest are left out first
    (`10.88.0.1:65002 if ! -s 192.…` at 80). Below 47 columns HOST is at its
    minimum, 12, too narrow for the port and the mark beside any address."""
    table = render.list_table([CONDITIONED, UNCONDITIONED], [], wide=False, width=width).plain
    lines = table.split("\n")
    assert all(len(line) <= width for line in lines), lines
    conditioned, unconditioned = lines[1], lines[2]
    assert ":65002 if" in conditioned and ":65002…" not in conditioned, (width, lines)
    assert ":65003 " in unconditioned and " if" not in unconditioned, (width, lines)


# --- addresses stay readable (review h213) -------------------------------------------
#
# On an 80-column terminal list cut an IPv6 HOST to `[200…334]:8080` and
# `[fd…7]:65535`: stubs that tell neither the network nor the host, in the cell that
# says which mapping a row is. An address is whole now, or cut to whole groups, its
# first two and last at least (cuts.ip_floor); CONTAINER ADDR, SNAT and NETWORK are
# left out before that is not enough.

HOST_V6 = "2001:db8:85a3::8a2e:370:7334"
CONTAINER_V6 = "fd00:88::5"


def host_v6_mapping() -> Mapping:
    return Mapping("podman", "3f2a9c1e5b7d", 6, "udp", HOST_V6, 8080, CONTAINER_V6, 80, True,
                   "CNI-DN-0123456789abcdef01234", ("ok",))  # fmt: skip


def host_v6_dump(tmp_path: Path) -> List[str]:
    """list's arguments for a dump of the example node's podman container with two
    IPv6 mappings on host addresses: udp [HOST_V6]:8080 and tcp [LONG_V6]:65535."""
    chain = "CNI-DN-27a3997738f625df8206e"
    comment = '-m comment --comment "dnat name: \\"podman\\" id: \\"3f2a9c1e5b7d4a60web\\""'
    rules = [
        f"-A {chain} -s fd00:88::/64 -d {HOST_V6}/128 -p udp -m udp --dport 8080"
        " -j CNI-HOSTPORT-SETMARK",
        f"-A {chain} -d {HOST_V6}/128 -p udp -m udp --dport 8080"
        f" -j DNAT --to-destination [{CONTAINER_V6}]:80",
        f"-A {chain} -s fd00:88::/64 -d {LONG_V6}/128 -p tcp -m tcp --dport 65535"
        " -j CNI-HOSTPORT-SETMARK",
        f"-A {chain} -d {LONG_V6}/128 -p tcp -m tcp --dport 65535"
        f" -j DNAT --to-destination [{CONTAINER_V6}]:443",
        f"-A CNI-HOSTPORT-DNAT -p tcp {comment} -m multiport --dports 65535 -j {chain}",
        f"-A CNI-HOSTPORT-DNAT -p udp {comment} -m multiport --dports 8080 -j {chain}",
    ]
    dump = "\n".join(
        ["*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
         ":POSTROUTING ACCEPT [0:0]", f":{chain} - [0:0]", ":CNI-HOSTPORT-DNAT - [0:0]",
         ":CNI-HOSTPORT-MASQ - [0:0]", ":CNI-HOSTPORT-SETMARK - [0:0]",
         "-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
         "-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
         *rules,
         "-A CNI-HOSTPORT-SETMARK -j MARK --set-xmark 0x2000/0x2000", "COMMIT", ""]
    )  # fmt: skip
    path = tmp_path / "host-v6.v6.save"
    path.write_text(dump)
    return ["--family", "6", "--snapshot6", str(path), *EXAMPLE[4:]]


def readable(cell: str, whole: str) -> bool:
    """Whether `cell` shows `whole` (an address) whole, or its first two groups and
    its last, each whole, `…` for groups between."""
    if cell == whole:
        return True
    head, mark, tail = cell.partition("…")
    groups = whole.split(":")
    return (
        mark == "…"
        and head.endswith(":")
        and tail.startswith(":")
        and whole.startswith(head)
        and whole.endswith(tail)
        and len([group for group in head.split(":") if group]) >= 2
        and len(head) + len(tail) - 1 < len(whole)
        and groups[-1] in tail
    )


def host_cells(table: str) -> List[str]:
    """The HOST cells of list's table, each `[address]:port` (other cells are words)."""
    return [word for line in table.split("\n")[1:] for word in line.split() if "]:" in word]


@pytest.mark.parametrize(
    "address, room, shown",
    [
        (HOST_V6, 28, HOST_V6),
        (HOST_V6, 24, "2001:db8:85a3:…:370:7334"),
        (HOST_V6, 20, "2001:db8:85a3:…:7334"),
        (HOST_V6, 15, "2001:db8:…:7334"),
        (LONG_V6, 30, "fd00:1111:2222:…:6666:7777"),
        (LONG_V6, 16, "fd00:1111:…:7777"),
        ("fd00:10:244:1::5", 14, "fd00:10:…:5"),
        ("fe80::1", 7, "fe80::1"),
        (CONTAINER_V6, 10, CONTAINER_V6),
    ],
)
def test_an_ipv6_address_is_cut_to_whole_groups_its_network_and_host(address, room, shown):
    """cut_ip keeps whole groups, the first ones and the last, as many as fit; a
    partial group (`85a`) would read as another address."""
    from portmapctl.render.cuts import cut_ip

    assert cut_ip(address, room) == shown


@pytest.mark.parametrize(
    "address, floor",
    [(HOST_V6, len("2001:db8:…:7334")), (LONG_V6, len("fd00:1111:…:7777")),
     ("fe80::1", 7), (CONTAINER_V6, 10), ("192.168.122.17", 14)],
)  # fmt: skip
def test_an_address_reads_in_its_first_two_groups_and_its_last(address, floor):
    """The readable floor: short IPv6 addresses (fe80::1, fd00:88::5) and IPv4 ones
    whole, where a cut would save nothing or turn them into another address."""
    from portmapctl.render.cuts import ip_floor

    assert ip_floor(address) == floor


def test_list_at_80_columns_keeps_an_ipv6_host_readable_leaving_out_the_container_address():
    """The reproductions of review h213: at 80 columns `[fd…7]:65535` and
    `[200…334]:8080` became `[fd00:1111:…:7777]:65535` and the address whole but its
    middle group, CONTAINER ADDR left out to make room."""
    one = render.list_table([long_mapping("3f2a9c1e5b7d4a60web")], [], wide=False, width=80)
    assert one.plain == (
        "NETWORK         CONTAINER     FAM  PROTO  HOST                      SNAT  STATUS\n"
        "a-very-long-n…  3f2a9c1e5b7d  v6   udp    [fd00:1111:…:7777]:65535  yes   ok"
    )
    two = render.list_table([host_v6_mapping()], [], wide=False, width=80)
    assert two.plain == (
        "NETWORK  CONTAINER     FAM  PROTO  HOST                             SNAT  STATUS\n"
        "podman   3f2a9c1e5b7d  v6   udp    [2001:db8:85a3:…:370:7334]:8080  yes   ok"
    )


@pytest.mark.parametrize("width", range(58, 121))
def test_every_address_cell_is_whole_or_readable_from_58_columns(width):
    """From 58 columns (what the ID, family, protocol, the longest IPv6 host with a
    five-digit port cut readable and STATUS need) every HOST cell and every CONTAINER
    ADDR shown is whole or readable, no line is wider than the terminal and every
    status is whole."""
    mappings = [long_mapping("3f2a9c1e5b7d4a60web"), host_v6_mapping(),
                long_mapping("8c41d07a2e9f", ("contested", "stale"))]  # fmt: skip
    table = render.list_table(mappings, [], wide=False, width=width).plain
    lines = table.split("\n")
    assert all(len(line) <= width for line in lines), (width, lines)
    for cell in host_cells(table):
        address = cell[1 : cell.index("]")]
        whole = {LONG_V6, HOST_V6, CONTAINER_V6}
        assert any(readable(address, one) for one in whole), (width, cell, lines)
        assert cell.endswith(("]:65535", "]:8080", "]:80")), "the port whole"
    text = "".join(line.strip() for line in lines)  # (a status may go on below)
    assert "contested,stale" in text and text.count("ok") == 2, lines


@pytest.mark.parametrize("width", [60, 50])
def test_list_gives_way_elsewhere_before_a_host_goes_below_readable(width):
    """At 60 columns CONTAINER ADDR, SNAT and NETWORK are left out and HOST stays
    readable; at 50, with all of them out, the row still does not fit beside a
    readable `[fd00:1111:…:7777]:65535`: only then is it cut further, the port whole,
    so that no line is wider than the terminal (the terminal's own wrap would break
    every row)."""
    table = render.list_table([long_mapping("3f2a9c1e5b7d4a60web"), host_v6_mapping()], [],
                              wide=False, width=width).plain  # fmt: skip
    lines = table.split("\n")
    assert lines[0].split() == ["CONTAINER", "FAM", "PROTO", "HOST", "STATUS"]
    assert all(len(line) <= width for line in lines), lines
    cells = host_cells(table)
    assert [cell.rsplit(":", 1)[1] for cell in cells] == ["65535", "8080"]
    if width == 60:
        assert cells == ["[fd00:1111:…:7777]:65535", "[2001:db8:…:7334]:8080"]
    assert [line.split()[-1] for line in lines[1:]] == ["ok", "ok"]


def test_flush_udp_cuts_an_ipv6_source_to_whole_groups_and_an_ipv4_one_not_at_all():
    """flush-udp's SOURCE at 80 columns read `192.16…22.17`; an IPv4 address is whole
    now, an IPv6 one cut to whole groups."""
    v4 = ConntrackEntry(4, "udp", "192.168.122.17", "192.168.122.10", 41000, 5353,
                        "10.88.0.7", "192.168.122.17", 53, 41000)  # fmt: skip
    v6 = ConntrackEntry(6, "udp", LONG_V6, "fd00:1111:2222:3333::1", 40012, 5353,
                        "fd00:88:0:1:2:3:4:9", LONG_V6, 53, 40012)  # fmt: skip
    doomed = (Doomed(v4, FlushReason.OLD_DESTINATION, ("10.88.0.9:53",)),
              Doomed(v6, FlushReason.OLD_DESTINATION, ("[fd00:88:0:1:2:3:4:5]:53",)))  # fmt: skip
    result = FlushResult(True, False, ((4, 5353), (6, 5353)), doomed, 2, 0)
    for width in (80, 60, 50):
        lines = render.flush_table(result, width=width).plain.split("\n")
        assert all(len(line) <= width for line in lines), (width, lines)
        sources = [line.split()[1] for line in lines[1:] if line.startswith("v")]
        assert sources[0] == "192.168.122.17", (width, lines)
        assert readable(sources[1], LONG_V6) and sources[1] != LONG_V6, (width, lines)


@pytest.mark.parametrize("columns", [80, 60])
def test_list_on_a_terminal_shows_an_ipv6_host_readable(tmp_path, columns):
    """As an operator sees it: a dump with IPv6 host addresses, on a real pseudo-
    terminal."""
    code, lines, err = at(columns, "list", *host_v6_dump(tmp_path))
    assert code == 0 and err == "", err
    table = table_of(lines)
    assert all(len(line) <= columns for line in lines), lines
    assert "CONTAINER ADDR" not in table[0] and table[0].split()[-1] == "STATUS"
    assert host_cells("\n".join(table)) == (
        ["[fd00:1111:…:7777]:65535", "[2001:db8:…:7334]:8080"]
        if columns == 60
        else ["[fd00:1111:2222:…:7777]:65535", "[2001:db8:85a3:…:370:7334]:8080"]
    ), table
    # Piped, whole.
    piped = pmctl("list", *host_v6_dump(tmp_path)).stdout.split("\n")
    assert piped[2].split()[4:6] == [f"[{HOST_V6}]:8080", f"[{CONTAINER_V6}]:80"]
    assert piped[1].split()[4] == f"[{LONG_V6}]:65535" and "…" not in "".join(piped)


FIELD = Path(__file__).resolve().parents[1] / "fixtures" / "field"
# A kubelet's entry and namespace paths, as long as real ones are: a CNI cache entry is
# `/var/lib/cni/results/NET-<64 hex ID>-IFNAME` (93-96 characters), containerd's
# namespace `/var/run/netns/cni-<UUID>`.
NETNS = "/var/run/netns/cni-5e8b1a2c-3d4f-5a6b-7c8d-9e0f1a2b3c4d"


def _node_problems():
    """Every problem check finds on the real-plugin fixtures (with their cache, without
    one, and with every entry a zombie: its chain still there or gone, as after `gc
    --netns-liveness`) and on the field dumps (no cache), with kubelet-long IDs and
    paths."""
    from dataclasses import replace

    from fixtures_lib import NAMES, configs, table

    from portmapctl.cni.cache import Attachment
    from portmapctl.host.netns import NetnsState
    from portmapctl.iptables.ruleset import parse_save
    from portmapctl.ops.check import diagnose

    empty = {4: parse_save("*nat\nCOMMIT\n", 4), 6: parse_save("*nat\nCOMMIT\n", 6)}
    for name in NAMES:
        tables = {4: table(name, 4), 6: table(name, 6)}
        found = configs(name)

        def entries(state, of=found):
            return [
                Attachment(c.network, c.container_id, "eth0",
                           f"/var/lib/cni/results/{c.network}-{c.container_id}-eth0", c,
                           NETNS, state)
                for c in of
            ]  # fmt: skip

        yield from diagnose(tables, None)[0]
        yield from diagnose(tables, entries(NetnsState.PRESENT))[0]
        yield from diagnose(tables, entries(NetnsState.GONE))[0]
        yield from diagnose(tables, entries(NetnsState.PRESENT, found[1:]))[0]  # stale
        # Kubelet's 64-hex IDs, nothing of them left in the tables.
        long_ids = [replace(c, container_id=f"{n:x}" * 64) for n, c in enumerate(found, 10)]
        yield from diagnose(empty, entries(NetnsState.GONE, long_ids))[0]
        yield from diagnose(empty, entries(NetnsState.PRESENT, long_ids))[0]
    for dump in sorted(FIELD.glob("*.v4.save")):
        yield from diagnose({4: parse_save(dump.read_text(), 4)}, None)[0]


def test_check_at_80_columns_no_problem_of_any_kind_is_wider_than_the_terminal():
    """SPEC §3 check: at 80 columns nothing wraps. A zombie whose chain `gc
    --netns-liveness` had removed was explained with its cache entry's path, one word
    of 93-96 characters (`/var/lib/cni/results/NET-<64 hex>-eth0`), printed whole past
    the terminal's edge. A word longer than the line is folded after a `/` or `-`
    now; JSON and the piped table keep it whole."""
    from portmapctl.ops.check import CheckResult

    problems = tuple(_node_problems())
    kinds = {str(p.kind) for p in problems}
    assert {"zombie", "stale", "missing-chain", "shadowed", "dead"} <= kinds, kinds
    result = CheckResult(problems, (4, 6), cache_present=True)
    lines = render.check_text(result, width=80).plain.split("\n")
    assert [line for line in lines if len(line) > 80] == []
    # The path folded, never cut: its pieces, joined, are the path.
    long_path = next(
        p.fix.split("entry ", 1)[1].split()[0]
        for p in problems
        if p.kind == "zombie" and "delete its cache entry" in p.fix and len(p.fix) > 150
    )
    assert long_path in "".join(line.strip() for line in lines)
    piped = render.check_text(result).plain
    assert long_path in piped.split()


# --- a row of no known container (h322) ----------------------------------------------
#
# Its chain's whole name (28 characters) under CONTAINER left out CONTAINER ADDR, SNAT
# and NETWORK of every row at 80 columns beside an IPv6 host. It is as long as a short
# ID now, `CNI-DN-` and the hash's first five, longer where two of the table's chains
# share those; --container takes it (inventory.owned_by).


def _unknown(chain: str, port: int) -> Mapping:
    """A row of no known container (plugins-643-hairpin32's, on other ports)."""
    return Mapping(None, None, 4, "tcp", None, port, "10.4.0.2", 22, True, chain, ("orphan",))


def test_a_row_of_no_known_container_names_its_chain_short_so_the_table_keeps_its_columns():
    from portmapctl.core.status import ChainKind
    from portmapctl.iptables.inventory import ChainInfo, select

    known = host_v6_mapping()
    lone, twin, twin2 = (
        "CNI-DN-e7055ba87834d413d9694",
        "CNI-DN-0123456789abcdef01234",
        "CNI-DN-0123459876543210fedcb",  # (shares 13 characters with twin)
    )
    mappings = [known, _unknown(lone, 2202), _unknown(twin, 2203), _unknown(twin2, 2204)]
    legacy = ChainInfo("CNI-SN-e7055ba87834d413d9694", 4, ChainKind.LEGACY_SNAT, None, None,
                       ("orphan",), (), ())  # fmt: skip
    lines = render.list_table(mappings, [legacy], wide=False, width=80).plain.split("\n")
    assert all(len(line) <= 80 for line in lines), lines
    # The columns the known container's row keeps alone (its IPv6 HOST leaves out
    # CONTAINER ADDR); with the whole names NETWORK and SNAT went too.
    alone = render.list_table([known], [], wide=False, width=80).plain.split("\n")
    assert lines[0].split() == alone[0].split() == [
        "NETWORK", "CONTAINER", "FAM", "PROTO", "HOST", "SNAT", "STATUS"], lines  # fmt: skip
    # One short ID, then the rows of no known container by port, the legacy chain last:
    # twin and twin2 share `CNI-DN-012345`, so they show one more character each.
    assert [line.split()[1] for line in lines[1:]] == [
        "3f2a9c1e5b7d", "CNI-DN-e7055", "CNI-DN-0123456", "CNI-DN-0123459", "CNI-SN-e7055",
    ], lines  # fmt: skip
    # A chain with no mapping still names itself whole where a mapping's cells would be.
    assert legacy.name in lines[-1], lines
    # Each selects its own chain's rows alone (list and flush-udp: inventory.select).
    for m, line in zip(mappings[1:], lines[2:]):
        assert select(mappings, container=line.split()[1]) == [m], line
    # -o wide and --no-trunc name every chain whole.
    for wide, full in ((True, False), (False, True)):
        table = render.list_table(mappings, [legacy], wide=wide, full_ids=full, width=80).plain
        assert all(m.chain in table for m in mappings[1:]), table
