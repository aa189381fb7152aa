"""`portmapctl flush-udp`, `list --conntrack` and the conntrack step of `add`.

Pure selection logic on inventories of real-plugin fixtures first; then real conntrack
tables in throwaway namespaces, with mappings made by the real plugin (or by
`portmapctl add`), entries made by `conntrack -I`, and one blackhole made and ended
with real UDP traffic through the DNAT rules.
"""

from __future__ import annotations

import base64
import errno
import json
import shlex
import socket

import pytest
import realplugin as rp
from flush_udp_helpers import (  # noqa: F401
    ALL,
    CTR_IP,
    ENTRIES,
    HOST_IP,
    TCP_SPORT,
    addresses,
    cli,
    container,
    ct_args,
    ct_load,
    ct_sports,
    entries,
    mapping,
    mappings,
    ns_run,
    route_localnet,
    some_ports,
    udp,
)
from pmctl import assert_error, run, without_cache_note
from test_gc import _table_on_a_terminal

from portmapctl.host.netns import entered
from portmapctl.ops import flush_udp
from portmapctl.ops.node import NodeOptions, opened

# --- which ports ------------------------------------------------------------------------


# --- which entries go -------------------------------------------------------------------------


# --- rendering --------------------------------------------------------------------------------


# --- real conntrack tables ------------------------------------------------------------------


def ct_insert(ns: str, *entry: object, **options: object) -> None:
    ns_run(ns, "conntrack", *ct_args(*entry, **options))  # type: ignore[arg-type]


# Entries by source port. abc123 maps 5353/udp to 10.88.0.5:53 and [fd00::5]:53,
# def456 maps 127.0.0.1:6000/udp to 10.88.0.6:60.


@pytest.fixture
def node(host_ns: str) -> str:
    """Two containers mapped by the real plugin, and the entries above."""
    mappings = [{"hostPort": 5353, "containerPort": 53, "protocol": "udp"}]
    conf = rp.plugin_conf("mynet", ["10.88.0.5/16", "fd00::5/64"], mappings)
    rp.run_plugin("ADD", host_ns, "abc123", conf, check=True)
    local = [{"hostPort": 6000, "containerPort": 60, "protocol": "udp", "hostIP": "127.0.0.1"}]
    rp.run_plugin("ADD", host_ns, "def456", rp.plugin_conf("mynet", ["10.88.0.6/16"], local),
                  check=True)  # fmt: skip
    # The entries' destinations are the node's own addresses: only flows to those can
    # meet a mapping (a forwarded flow is never touched, test_forwarded_flows_...).
    ns_run(host_ns, "ip", "addr", "add", "10.0.0.1/32", "dev", "lo")
    ns_run(host_ns, "ip", "addr", "add", "fd00::1/128", "dev", "lo")
    lines = [
        ct_args(src, dst, sport, dport, reply_src, reply_sport)
        for sport, (src, dst, dport, reply_src, reply_sport) in ENTRIES.items()
    ]
    ct_load(host_ns, [*lines, ct_args("192.0.2.9", "10.0.0.1", TCP_SPORT, 5353, proto="tcp")])
    assert ct_sports(host_ns) == ALL
    return host_ns


def test_stale_only_dry_run_then_for_real(node: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "flush-udp", "--netns", node, "--stale-only", "--dry-run",
                         "-o", "json")  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    assert doc["dry_run"] is True and doc["count"] == 3
    assert {(d["sport"], d["reason"]) for d in doc["deleted"]} == {
        (40002, "old-destination"), (40003, "not-dnated"), (40012, "old-destination")
    }  # fmt: skip
    assert ct_sports(node) == ALL  # a dry run deletes nothing

    code, out, err = cli(capsys, "flush-udp", "--netns", node, "--stale-only")
    assert code == 0, err
    # The three go to 5353; 6000 was looked at and kept its entries.
    assert out == (
        "deleted 3 UDP conntrack entries to host port 5353 (v4/v6);"
        " kept 4 that reach their container or the host\n"
    )
    # Kept: the current container's entries, the host's own flow to 6000 (not
    # def456's host IP), and everything under unmapped ports.
    assert ct_sports(node) == ALL - {40002, 40003, 40012}


def test_an_entry_gone_before_the_delete_is_not_reported_deleted(
    node: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An entry that went between the dump and the delete (idle, another flush) was
    listed under "deleted" in JSON and the -v table, while `count` left it out
    (helper-146): only what this run deleted is listed, the summary says the rest."""
    dump = flush_udp.conntrack.list_udp

    def then_one_goes(*args, **kwargs):
        entries = dump(*args, **kwargs)
        ns_run(node, "conntrack", "-D", "-p", "udp", "--sport", "40002")
        return entries

    monkeypatch.setattr(flush_udp.conntrack, "list_udp", then_one_goes)
    code, out, err = cli(capsys, "flush-udp", "--netns", node, "--stale-only", "-o", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert sorted(d["sport"] for d in doc["deleted"]) == [40003, 40012]
    assert doc["count"] == 2
    again = [(sport, ENTRIES[sport]) for sport in (40002, 40003)]
    ct_load(node, [ct_args(src, dst, sport, dport, rsrc, rport)
                   for sport, (src, dst, dport, rsrc, rport) in again])  # fmt: skip
    code, out, err = cli(capsys, "flush-udp", "--netns", node, "--stale-only", "-v")
    assert code == 0, err
    lines = out.splitlines()
    assert [line.split()[3] for line in lines[1:-2]] == ["40003->5353"]
    assert lines[-1] == (
        "deleted 1 UDP conntrack entry to host port 5353 (v4);"
        " kept 4 that reach their container or the host; 1 had gone already"
    )


def test_only_the_local_tables_addresses_are_the_nodes_own(
    node: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The plugin's DNAT is entered for `-m addrtype --dst-type LOCAL`, which (no
    interface given) looks in the `local` and `main` routing tables: a local route in
    another table (policy routing, a VRF's) makes no address a mapping takes flows to,
    so a flow to it was never mapped and stays (it was deleted as the node's own)."""
    from portmapctl.host.addresses import local_addresses

    ns_run(node, "ip", "route", "add", "local", "198.51.100.0/24", "dev", "lo", "table", "100")
    ns_run(node, "ip", "route", "add", "local", "203.0.113.0/24", "dev", "lo")  # table local
    ns_run(node, "ip", "route", "add", "local", "192.0.2.128/25", "dev", "lo", "table", "main")
    ns_run(node, "ip", "-6", "route", "add", "local", "fd00:200::/64", "dev", "lo", "table", "main")
    ns_run(node, "ip", "-6", "route", "add", "local", "fd00:100::/64", "dev", "lo", "table", "100")
    with entered(node):
        own = local_addresses()
    assert (4, "10.0.0.1") in own and (4, "203.0.113.9") in own and (6, "fd00::1") in own
    assert (4, "192.0.2.130") in own and (6, "fd00:200::1") in own
    assert (4, "198.51.100.1") not in own and (6, "fd00:100::1") not in own
    ct_load(node, [
        ct_args("192.0.2.21", "198.51.100.1", 41001, 5353),  # local only in table 100
        ct_args("192.0.2.22", "203.0.113.1", 41002, 5353),  # AnyIP in the local table
        ct_args("fd00:1::22", "fd00:100::1", 41003, 5353),  # local only in table 100
    ])  # fmt: skip
    code, out, err = cli(capsys, "flush-udp", "--netns", node, "--stale-only", "--dry-run",
                         "-o", "json")  # fmt: skip
    assert code == 0, err
    going = {d["sport"] for d in json.loads(out)["deleted"]}
    assert 41002 in going and not going & {41001, 41003}


def test_stale_only_keeps_the_flows_another_tools_dnat_takes_first(
    node: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another tool's DNAT ahead of the plugin's jump takes 5353 (Docker publishing
    the same port): `list` says abc123's mapping is shadowed, and the port's IPv4
    flows are that rule's. --stale-only deleted them all as "old destination: the port
    now goes to 10.88.0.5", a live flow to the rule's 10.88.0.99 among them, every run.
    IPv6, where no rule of another tool stands, is judged as before."""
    ns_run(node, "iptables", "-t", "nat", "-I", "PREROUTING", "1", "-p", "udp", "--dport",
           "5353", "-j", "DNAT", "--to-destination", "10.88.0.99:53")  # fmt: skip
    ct_load(node, [ct_args("192.0.2.30", "10.0.0.1", 41030, 5353, "10.88.0.99", 53)])
    code, out, err = cli(capsys, "list", "--netns", node, "-o", "json")
    assert code == 0, err
    rows = [m for m in json.loads(out)["mappings"] if m["family"] == 4 and m["host_port"] == 5353]
    assert rows and all("shadowed" in m["status"] for m in rows)
    code, out, err = cli(capsys, "flush-udp", "--netns", node, "--stale-only", "-o", "json")
    assert code == 0, err
    assert {d["sport"] for d in json.loads(out)["deleted"]} == {40012}  # IPv6's old address
    assert ct_sports(node) == (ALL | {41030}) - {40012}


def test_stale_only_keeps_another_tools_flows_to_an_address_the_port_is_not_mapped_on(
    node: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """def456 maps 127.0.0.1:6000 alone; another tool (kube-proxy's NodePort) DNATs
    10.0.0.1:6000 to a pod of its own. --stale-only deleted that live flow as "DNATed,
    but nothing maps this port now" (nothing takes it from def456's mapping: another
    address). A flow DNATed there to def456's own address (an older mapping of it on
    every address) still misroutes and goes."""
    ns_run(node, "iptables", "-t", "nat", "-I", "PREROUTING", "1", "-d", "10.0.0.1", "-p", "udp",
           "--dport", "6000", "-j", "DNAT", "--to-destination", "10.244.1.7:60")  # fmt: skip
    ct_load(node, [
        ct_args("192.0.2.40", "10.0.0.1", 41040, 6000, "10.244.1.7", 60),  # the NodePort's
        ct_args("192.0.2.41", "10.0.0.1", 41041, 6000, "10.88.0.6", 60),  # def456's, old
    ])  # fmt: skip
    code, out, err = cli(capsys, "flush-udp", "--netns", node, "--stale-only", "-o", "json")
    assert code == 0, err
    going = {d["sport"]: d["reason"] for d in json.loads(out)["deleted"]}
    assert going.get(41041) == "unmapped" and 41040 not in going
    assert 41040 in ct_sports(node) and 41041 not in ct_sports(node)


def test_plain_flush_takes_all_of_the_mapped_ports(
    node: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "flush-udp", "--netns", node, "--dry-run")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["FAM", "SOURCE", "DESTINATION", "PORTS", "REPLY", "FROM", "WHY"]
    row = next(line for line in lines if "40012->5353" in line)
    assert row.split()[:5] == ["v6", "2001:db8::2", "fd00::1", "40012->5353", "[fd00::9]:53"]
    assert row.endswith("mapped host port")
    assert lines[-1] == "would delete 7 UDP conntrack entries to host ports 5353 (v4/v6), 6000 (v4)"
    assert ct_sports(node) == ALL

    code, out, err = cli(capsys, "flush-udp", "--netns", node, "-o", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["dry_run"] is False and doc["count"] == 7
    mapped = {40001, 40002, 40003, 40011, 40012, 40021, 40022}
    assert {d["sport"] for d in doc["deleted"]} == mapped
    assert ct_sports(node) == ALL - mapped


def test_no_headers_leaves_the_header_line_out(
    node: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--no-headers (SPEC §3, every command's tables): the dry run's rows alone, then
    the summary; it printed the FAM SOURCE ... header line all the same."""
    for extra in ([], ["-o", "wide"], ["--stale-only"]):
        code, out, err = cli(capsys, "flush-udp", "--netns", node, "--dry-run", "--no-headers",
                             *extra)  # fmt: skip
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0].split()[0] in ("v4", "v6"), (extra, lines[0])
        assert not any(line.startswith("FAM") for line in lines)
        assert lines[-1].startswith("would delete ")
    assert ct_sports(node) == ALL


@pytest.mark.parametrize(
    ("args", "deleted"),
    [
        (["--port", "8053"], {40004, 40013}),
        (["--port", "8053", "--port", "9999", "--family", "4"], {40004, 40005}),
        # def456's flows alone: to its host IP, 127.0.0.1 (40022, to 10.0.0.1:6000, is
        # none of its: it went too, review helper-135).
        (["--container", "def"], {40021}),
        (["--container", "abc", "--port", "6000"], set()),
        (["--family", "6"], {40011, 40012}),
        (["--port", "8053", "--stale-only"], {40004}),  # DNATed to a gone container
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
def test_options_choose_the_ports(
    node: str, capsys: pytest.CaptureFixture[str], args: list[str], deleted: set[int]
) -> None:
    code, out, err = cli(capsys, "flush-udp", "--netns", node, "-o", "json", *args)
    assert code == 0, err
    assert json.loads(out)["count"] == len(deleted)
    assert ct_sports(node) == ALL - deleted


@pytest.mark.parametrize(
    ("args", "summary"),
    [
        # Entries to 5353 only: it named 6000 too, where nothing was deleted.
        (["--stale-only"], "would delete 3 UDP conntrack entries to host port 5353 (v4/v6);"
                           " kept 4 that reach their container or the host"),
        # Ten ports looked at, entries to one: it said "to 10 host ports".
        ([f"--port={p}" for p in (8053, *range(7000, 7009))],
         "would delete 2 UDP conntrack entries to host port 8053 (v4/v6)"),
        (["--port", "7777"], "would delete 0 UDP conntrack entries: none to host port 7777 (v4/v6)"),
        # (A run of consecutive ports reads as a range, as podman's `-p 7000-7009`.)
        ([f"--port={p}" for p in range(7000, 7010)],
         "would delete 0 UDP conntrack entries: none to host ports 7000-7009 (v4/v6)"),
        (["--container", "def", "--family", "4"],
         "would delete 1 UDP conntrack entry to host port 6000 (v4)"),
        # It said "no mapped UDP host ports of a container abc*", which maps 5353.
        (["--container", "abc", "--port", "6000"],
         "a container abc* maps no UDP host port 6000: nothing to flush"),
    ],
    ids=["stale-only", "ten-ports-one-found", "none-found", "ten-ports-none-found", "container",
         "container-port"],
)  # fmt: skip
def test_the_summary_names_the_ports_of_what_it_deletes(
    node: str, capsys: pytest.CaptureFixture[str], args: list[str], summary: str
) -> None:
    code, out, err = cli(capsys, "flush-udp", "--netns", node, "--dry-run", *args)
    assert code == 0, err
    assert out.splitlines()[-1] == summary
    assert ct_sports(node) == ALL


def test_list_counts_entries_per_udp_mapping(node: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "list", "--netns", node, "--conntrack", "-o", "json")
    assert code == 0, err
    counts = {
        (m["container_id"], m["family"], m["host_port"]): m["conntrack_entries"]
        for m in json.loads(out)["mappings"]
    }
    # def456's mapping has host IP 127.0.0.1: the entry to 10.0.0.1:6000 is not its.
    assert counts == {("abc123", 4, 5353): 3, ("abc123", 6, 5353): 2, ("def456", 4, 6000): 1}


def test_list_says_which_flows_misroute_as_flush_udp_judges_them(
    node: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A count alone said "3 flows, ok" of a mapping two of whose three flows went to a
    gone pod or bypassed it (helper-146): each UDP row says how many of its entries
    misroute, and the summary how many in all, with the fix (whose dry run deletes
    exactly those)."""
    code, out, err = cli(capsys, "list", "--netns", node, "--conntrack", "-o", "json")
    assert code == 0, err
    rows = json.loads(out)["mappings"]
    assert {
        (m["container_id"], m["family"], m["host_port"]): m["conntrack_misrouted"] for m in rows
    } == {("abc123", 4, 5353): 2, ("abc123", 6, 5353): 1, ("def456", 4, 6000): 0}
    # The fix runs as printed: on this namespace (it ran on the host's, "nothing to
    # flush"), narrowed as the list was, and its dry run deletes what was counted.
    for narrowed, summary, misrouted in (
        ((), "3 mappings of 2 containers: 3 ok", 3),
        (("--family", "4", "--container", "abc"), "1 of 2 mappings match: 1 ok", 2),
    ):
        code, out, err = cli(capsys, "list", "--netns", node, "--conntrack", "-q", *narrowed)
        assert code == 0, err
        said, fix = out.rstrip("\n").split(" -> ")
        assert said == f"{summary}; {misrouted} UDP flows misrouted"
        command = shlex.split(fix)
        assert command[:3] == ["portmapctl", "flush-udp", "--stale-only"]
        assert command[command.index("--netns") + 1] == node
        code, out, err = cli(capsys, *command[1:], "--dry-run", "-o", "json")
        assert code == 0, err
        assert json.loads(out)["count"] == misrouted
    # Filtered, the rows' own: def456's port has none.
    code, out, err = cli(capsys, "list", "--netns", node, "--conntrack", "-q", "--port", "6000")
    assert code == 0, err
    assert out == "1 of 3 mappings match: 1 ok\n"
    code, out, err = cli(capsys, "flush-udp", "--netns", node, "--stale-only")
    assert code == 0, err
    code, out, err = cli(capsys, "list", "--netns", node, "--conntrack", "-q")
    assert code == 0, err
    assert out == "3 mappings of 2 containers: 3 ok\n"


def test_lists_fix_narrowed_by_port_deletes_no_flow_of_a_family_the_port_is_not_mapped_in(
    node: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """def456 maps 127.0.0.1:6000 in IPv4 only; another tool DNATs [fd00::1]:6000 to a
    pod of its own. `list --port 6000 --conntrack` counts def456's one misrouted flow
    and printed `flush-udp --stale-only --port 6000`, which looks at 6000 in IPv6 too,
    a port given there, and deleted that tool's live flow as "DNATed, but nothing maps
    this port now" (review h210): the fix deletes what list counted, no more."""
    ct_load(node, [ct_args("127.0.0.1", "127.0.0.1", 40051, 6000, "10.88.0.9", 60),
                   ct_args("2001:db8::5", "fd00::1", 40052, 6000, "fd00:77::7", 60)])  # fmt: skip
    code, out, err = cli(capsys, "list", "--netns", node, "--conntrack", "-q", "--port", "6000")
    assert code == 0, err
    said, fix = out.rstrip("\n").split(" -> ")
    assert said == "1 of 3 mappings match: 1 ok; 1 UDP flow misrouted"
    command = shlex.split(fix)
    code, out, err = cli(capsys, *command[1:], "--dry-run", "-o", "json")
    assert code == 0, err
    assert [d["sport"] for d in json.loads(out)["deleted"]] == [40051]


@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_list_and_flush_udp_judge_a_port_another_nft_table_takes_first_alike(
    host_ns: str, capsys: pytest.CaptureFixture[str], mode: str
) -> None:
    """Another tool's nftables table hooks nat prerouting before iptables (priority
    -150) and DNATs 5353/udp to its own pod. list marks the plugin's row shadowed and
    its flow routed; flush-udp --stale-only deleted it as an old DNAT destination, and
    `list --backend iptables` counted it misrouted: they judged without the other
    owners list reads (review helper-149)."""
    conf = rp.plugin_conf("mynet", ["10.88.0.5/16"], [{"hostPort": 5353, "containerPort": 53,
                                                       "protocol": "udp"}])  # fmt: skip
    rp.run_plugin("ADD", host_ns, "abc123", conf, mode=mode, check=True)
    ns_run(host_ns, "ip", "addr", "add", "10.0.0.1/32", "dev", "lo")
    script = ("table ip otherfw {\n chain pre {\n  type nat hook prerouting priority -150;"
              " policy accept;\n  udp dport 5353 dnat to 10.77.0.7:53\n }\n}\n")  # fmt: skip
    import subprocess

    subprocess.run(["ip", "netns", "exec", host_ns, "nft", "-f", "-"], input=script, text=True,
                   check=True)  # fmt: skip
    ct_load(host_ns, [ct_args("192.0.2.20", "10.0.0.1", 40100, 5353, "10.77.0.7", 53)])
    args = ["--netns", host_ns, "--iptables", mode]
    for backend in ("auto", "iptables"):
        code, out, err = cli(capsys, "list", *args, "--backend", backend, "--conntrack", "-o",
                             "json")  # fmt: skip
        assert code == 0, err
        doc = json.loads(out)
        assert [m["status"] for m in doc["mappings"]] == [["shadowed"]]
        assert [m["conntrack_misrouted"] for m in doc["mappings"]] == [0]
        assert doc["conntrack_misrouted"] == 0
    code, out, err = cli(capsys, "flush-udp", *args, "--stale-only", "--dry-run", "-o", "json")
    assert code == 0, err
    assert json.loads(out)["count"] == 0
    assert ct_sports(host_ns) == {40100}


def test_list_counts_the_flow_flush_udp_deletes_on_an_address_no_longer_mapped(
    host_ns: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """abc123 maps 5353/udp on 10.0.0.2 only; a flow to 10.0.0.1:5353 still DNATs to it
    (from when the port was mapped on every address). flush-udp --stale-only deletes it
    (nothing maps the port there now); list's summary said nothing misroutes: the flow
    is under no row (review helper-149). The fix narrowed to the container looks at its
    own addresses only: that summary leaves it out."""
    conf = rp.plugin_conf("mynet", ["10.88.0.5/16"], [{"hostPort": 5353, "containerPort": 53,
                          "protocol": "udp", "hostIP": "10.0.0.2"}])  # fmt: skip
    rp.run_plugin("ADD", host_ns, "abc123", conf, check=True)
    for address in ("10.0.0.1/32", "10.0.0.2/32"):
        ns_run(host_ns, "ip", "addr", "add", address, "dev", "lo")
    ct_load(host_ns, [ct_args("192.0.2.20", "10.0.0.1", 40100, 5353, "10.88.0.5", 53)])
    for narrowed, misrouted in (((), 1), (("--container", "abc"), 0)):
        code, out, err = cli(capsys, "list", "--netns", host_ns, "--conntrack", "-o", "json",
                             *narrowed)  # fmt: skip
        assert code == 0, err
        doc = json.loads(out)
        assert [m["conntrack_entries"] for m in doc["mappings"]] == [0]
        assert doc["conntrack_misrouted"] == misrouted
        code, out, err = cli(capsys, "flush-udp", "--netns", host_ns, "--stale-only",
                             "--dry-run", "-o", "json", *narrowed)  # fmt: skip
        assert code == 0, err
        assert json.loads(out)["count"] == misrouted
    code, out, err = cli(capsys, "list", "--netns", host_ns, "--conntrack", "-q")
    assert code == 0, err
    assert out.startswith(
        "1 mapping of 1 container: 1 ok; 1 UDP flow misrouted -> portmapctl flush-udp"
        f" --stale-only --netns {host_ns}"
    )


def test_library_flush_reports_progress_and_flush_ports_keeps(host_ns: str) -> None:
    many = [ct_args("192.0.2.1", "10.0.0.1", sport, 5353) for sport in range(30000, 30600)]
    current = ct_args("192.0.2.1", "10.0.0.1", 31000, 5353, "10.88.0.5", 53)
    ns_run(host_ns, "ip", "addr", "add", "10.0.0.1/32", "dev", "lo")  # the node's own
    with entered(host_ns):
        ct_load(host_ns, [*many, current])
        # gc's call: with the current mappings, what reaches their container stays.
        assert flush_udp.flush_ports([4], [5353], keep=[mapping("10.88.0.5")]) == 600
        assert ct_sports(host_ns) == {31000}
        assert flush_udp.flush_ports([6], [5353]) == 0
        assert flush_udp.flush_ports([4], [5353]) == 1
        assert ct_sports(host_ns) == set()

        ct_load(host_ns, many)
        calls: list[tuple[int, int]] = []
        with opened(NodeOptions(netns=host_ns), write=True) as node_:
            result = flush_udp.flush(node_, ports=[5353], progress=lambda *a: calls.append(a))
        assert (result.deleted, result.kept, len(result.doomed)) == (600, 0, 600)
        assert len(calls) > 1 and calls[-1] == (600, 600)  # after each batch
        assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert ct_sports(host_ns) == set()


# --- real traffic: the blackhole of the seed commit, and its end ------------------------------


@pytest.mark.parametrize("who_flushes", ["add", "flush-udp"])
def test_blackhole_after_mapping_ends_with_the_flush(
    host_ns: str, container: str, capsys: pytest.CaptureFixture[str], who_flushes: str
) -> None:
    with entered(container):
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with server, client:
        server.bind((CTR_IP, 53))
        client.bind((CTR_IP, 0))

        def delivered(timeout: float) -> bool:
            client.sendto(b"ping", (HOST_IP, 5353))
            server.settimeout(timeout)
            try:
                return server.recvfrom(100)[0] == b"ping"
            except TimeoutError:
                return False

        # A node already in use: its nat table (hence conntrack) is active. Without it,
        # the kernel tracks nothing in a fresh namespace.
        other = ["add", "--netns", host_ns, "--network", "mynet", "--container", "other",
                 "--ip", "10.99.0.3/24", "-p", "7070:70"]  # fmt: skip
        assert cli(capsys, *other)[0] == 0
        # A flow that starts before the mapping exists goes to the host itself ...
        assert not delivered(0.05)
        add = ["add", "--netns", host_ns, "--network", "mynet", "--container", "ctr1",
               "--ip", f"{CTR_IP}/24", "-p", "5353:53/udp"]  # fmt: skip
        if who_flushes == "flush-udp":
            code, _, err = cli(capsys, *add, "--no-flush-udp")
            assert code == 0, err
            # ... and keeps going there while its entry lives: the blackhole.
            assert not delivered(0.2)
            code, out, err = cli(capsys, "flush-udp", "--netns", host_ns, "--stale-only",
                                 "--dry-run", "-o", "json")  # fmt: skip
            [doomed] = json.loads(out)["deleted"]
            assert (doomed["src"], doomed["host_ip"], doomed["reply_src"], doomed["reason"]) == (
                CTR_IP, HOST_IP, HOST_IP, "not-dnated"
            )  # fmt: skip
            assert not delivered(0.2)  # the dry run changed nothing
            code, out, err = cli(capsys, "flush-udp", "--netns", host_ns, "--stale-only")
            assert (code, out) == (0, "deleted 1 UDP conntrack entry to host port 5353 (v4)\n")
        else:
            code, _, err = cli(capsys, *add)  # the plugin's flush, right after the rules
            assert code == 0, err
        assert delivered(5)
        # Now DNATed to the current container: --stale-only keeps it.
        code, out, err = cli(capsys, "flush-udp", "--netns", host_ns, "--stale-only", "-o", "json")
        assert json.loads(out)["count"] == 0
        assert delivered(5)


# --- add: the conntrack step and route_localnet ---------------------------------------------


@pytest.mark.parametrize("no_flush", [False, True], ids=["flush", "no-flush-udp"])
def test_add_flushes_its_udp_host_ports(
    host_ns: str, capsys: pytest.CaptureFixture[str], no_flush: bool
) -> None:
    ct_insert(host_ns, "192.0.2.1", "10.0.0.1", 40001, 5353, "10.88.0.9", 53)
    ct_insert(host_ns, "192.0.2.2", "10.0.0.1", 40002, 5353)
    ct_insert(host_ns, "192.0.2.3", "10.0.0.1", 40003, 8053)
    ct_insert(host_ns, "192.0.2.4", "10.0.0.1", 40004, 5353, proto="tcp")
    ct_insert(host_ns, "2001:db8::1", "fd00::1", 40005, 5353)  # the container has no IPv6
    args = ["add", "--netns", host_ns, "--network", "mynet", "--container", "abc123",
            "--ip", "10.88.0.5/16", "-p", "5353:53/udp", "-p", "8080:80"]  # fmt: skip
    code, _, err = cli(capsys, *args, *(["--no-flush-udp"] if no_flush else []))
    assert code == 0 and "warning" not in without_cache_note(err), err
    everything = {40001, 40002, 40003, 40004, 40005}
    assert ct_sports(host_ns) == (everything if no_flush else everything - {40001, 40002})


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_add_flushes_a_port_bound_to_a_host_ip_in_that_family_alone(
    host_ns: str, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """A dual-stack container's `[fd00::1]:9191:91/udp` gets rules in IPv6 alone, yet
    add flushed 9191 in IPv4 too (as the plugin's ADD does: every UDP port in each
    family of the container), deleting the live IPv4 flows another container's
    `*:9191` mapping had DNATed to it; nothing of this add takes an IPv4 flow there."""
    ns_run(host_ns, "ip", "addr", "add", "fd00::1/128", "dev", "lo", "nodad")
    ct_load(host_ns, [
        ct_args("192.0.2.1", "10.0.0.1", 40001, 9191, "10.88.0.7", 91),  # another's, live
        ct_args("2001:db8::1", "fd00::1", 40002, 9191),  # began before the rule: goes
    ])  # fmt: skip
    args = ["add", "--netns", host_ns, "--network", "mynet", "--container", "gone1",
            "--ip", "10.88.0.5/16", "--ip", "fd00::5/64", "-p", "8080:80",
            "-p", "[fd00::1]:9191:91/udp"]  # fmt: skip
    if backend == "nftables":
        args += ["--backend", "nftables"]
    code, _, err = cli(capsys, *args)
    assert code == 0 and "warning" not in without_cache_note(err), err
    assert ct_sports(host_ns) == {40001}


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_a_second_add_keeps_the_flows_the_first_one_routed(
    host_ns: str, capsys: pytest.CaptureFixture[str], backend: str, monkeypatch
) -> None:
    """add is idempotent: a run that writes nothing moves no flow to new rules, so it
    has nothing to flush; it deleted every live flow of the port (replies in flight
    were lost) on each run of an "ensure the mapping" script. With nothing to go, the
    node's mappings are not read for it (a whole table on a big node)."""
    read: list = []
    from portmapctl.ops import flow_owners

    real = flow_owners.node_judging
    monkeypatch.setattr(flow_owners, "node_judging", lambda *a: read.append(1) or real(*a))
    args = ["add", "--netns", host_ns, "--network", "mynet", "--container", "abc123",
            "--ip", "10.88.0.5/16", "-p", "5353:53/udp"]  # fmt: skip
    if backend == "nftables":
        args += ["--backend", "nftables"]
    ct_insert(host_ns, "192.0.2.1", "10.0.0.1", 40001, 5353)  # before the mapping
    code, _, err = cli(capsys, *args)
    assert code == 0 and "warning" not in without_cache_note(err), err
    assert 40001 not in ct_sports(host_ns)
    assert ("cni_hostport" in ns_run(host_ns, "nft", "list", "tables")) == (backend == "nftables")
    ct_insert(host_ns, "192.0.2.2", "10.0.0.1", 40002, 5353, "10.88.0.5", 53)  # through it
    code, out, err = cli(capsys, *args, "-o", "json")
    assert code == 0 and "warning" not in without_cache_note(err), err
    assert json.loads(out)["changed"] is False
    assert 40002 in ct_sports(host_ns)
    assert read == []


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_a_second_add_flushes_the_flows_that_do_not_reach_its_container(
    host_ns: str, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """An add stopped after its write and before its flush (SIGTERM, Ctrl-C) left the
    flows made before the mapping (never DNATed) or DNATed to an old destination going
    there, and the next, identical add said "unchanged" and flushed nothing, for good.
    It now deletes those (flush-udp's not-dnated and old-destination), flows to the
    node's own addresses under its UDP host ports only; the flows DNATed to this
    container (a reply on its way), other ports', a forwarded flow and TCP stay."""
    args = ["add", "--netns", host_ns, "--network", "mynet", "--container", "abc123",
            "--ip", "10.88.0.5/16", "-p", "5353:53/udp", "-p", "5353:53/tcp"]  # fmt: skip
    if backend == "nftables":
        args += ["--backend", "nftables"]
    code, _, err = cli(capsys, *args, "--no-flush-udp")  # the write, without its flush
    assert code == 0, err
    ns_run(host_ns, "ip", "addr", "add", "10.0.0.1/32", "dev", "lo")
    ct_load(host_ns, [
        ct_args("192.0.2.1", "10.0.0.1", 40001, 5353, "10.88.0.5", 53),  # to abc123: kept
        ct_args("192.0.2.2", "10.0.0.1", 40002, 5353, "10.88.0.9", 53),  # old destination
        ct_args("192.0.2.3", "10.0.0.1", 40003, 5353),  # began before the rule
        ct_args("192.0.2.4", "10.0.0.1", 40004, 5353, "10.88.0.5", 54),  # old container port
        ct_args("192.0.2.5", "10.0.0.1", 40005, 8053),  # not its port
        ct_args("192.0.2.6", "198.51.100.1", 40006, 5353),  # forwarded: never met the rule
        ct_args("192.0.2.7", "10.0.0.1", 40007, 5353, proto="tcp"),
    ])  # fmt: skip
    code, out, err = cli(capsys, *args, "-o", "json")
    assert code == 0 and "warning" not in without_cache_note(err), err
    assert json.loads(out)["changed"] is False
    assert ct_sports(host_ns) == {40001, 40005, 40006, 40007}
    # --no-flush-udp: nothing, as for an add that writes.
    ct_load(host_ns, [ct_args("192.0.2.3", "10.0.0.1", 40003, 5353)])
    code, _, err = cli(capsys, *args, "--no-flush-udp")
    assert code == 0, err
    assert 40003 in ct_sports(host_ns)


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_a_second_add_of_a_shadowed_container_keeps_the_winners_flows(
    host_ns: str, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """bbb maps 5353 first; eee's add of 5353 (shadowed: bbb gets the port) is run
    again and writes nothing. Its flush judged the port's flows against eee's mapping
    alone and deleted bbb's live flow at every run. What would go is judged against the
    node's mappings too now (read only then): bbb's flow stays, as does eee's own (the
    add's flush never takes the flows of its container), the flows that reach neither
    go."""
    common = ["--netns", host_ns, "--network", "mynet"]
    if backend == "nftables":
        common += ["--backend", "nftables"]
    first = ["add", *common, "--container", "bbb", "--ip", "10.88.0.6/16", "-p", "5353:53/udp"]
    again = ["add", *common, "--container", "eee", "--ip", "10.88.0.5/16", "-p", "5353:53/udp"]
    for args in (first, again):
        code, _, err = cli(capsys, *args)
        assert code == 0, err
    ns_run(host_ns, "ip", "addr", "add", "10.0.0.1/32", "dev", "lo")
    ct_load(host_ns, [
        ct_args("192.0.2.1", "10.0.0.1", 40001, 5353, "10.88.0.6", 53),  # to bbb: the winner
        ct_args("192.0.2.2", "10.0.0.1", 40002, 5353, "10.88.0.5", 53),  # to eee, shadowed
        ct_args("192.0.2.3", "10.0.0.1", 40003, 5353),  # never DNATed
    ])  # fmt: skip
    code, out, err = cli(capsys, *again, "-o", "json")
    assert code == 0, err
    assert json.loads(out)["changed"] is False
    assert ct_sports(host_ns) == {40001, 40002}


def test_a_second_add_keeps_the_flows_another_tools_rule_takes_first(
    host_ns: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another tool's `-d 10.0.0.1` DNAT of 5353/udp ahead of the plugin's entry; abc123
    maps 5353 on every address, and its add is run again (writes nothing). Its flush
    deleted that tool's live flow to 10.0.0.1 as an old destination (review
    helper-149's finding, for add): it is kept, while a flow to the node's other
    address DNATed to a gone pod goes."""
    args = ["add", "--netns", host_ns, "--network", "mynet", "--container", "abc123",
            "--ip", "10.88.0.5/16", "-p", "5353:53/udp"]  # fmt: skip
    code, _, err = cli(capsys, *args)
    assert code == 0, err
    for address in ("10.0.0.1/32", "10.0.0.2/32"):
        ns_run(host_ns, "ip", "addr", "add", address, "dev", "lo")
    ns_run(host_ns, "iptables", "-t", "nat", "-I", "PREROUTING", "1", "-d", "10.0.0.1", "-p",
           "udp", "--dport", "5353", "-j", "DNAT", "--to-destination", "10.244.1.7:53")  # fmt: skip
    ct_load(host_ns, [
        ct_args("192.0.2.1", "10.0.0.1", 40001, 5353, "10.244.1.7", 53),  # the other tool's
        ct_args("192.0.2.2", "10.0.0.2", 40002, 5353, "10.88.0.9", 53),  # old destination
        ct_args("192.0.2.3", "10.0.0.2", 40003, 5353, "10.88.0.5", 53),  # to abc123
    ])  # fmt: skip
    code, out, err = cli(capsys, *args, "-o", "json")
    assert code == 0, err
    assert json.loads(out)["changed"] is False
    assert ct_sports(host_ns) == {40001, 40003}


@pytest.mark.parametrize("snat", [True, False], ids=["snat", "no-snat"])
def test_add_sets_route_localnet_towards_the_container(
    host_ns: str, capsys: pytest.CaptureFixture[str], snat: bool
) -> None:
    # The container network behind a veth, as a bridge plugin's host side would be.
    ns_run(host_ns, "ip", "link", "add", "cnihost", "type", "veth", "peer", "name", "cnipeer")
    ns_run(host_ns, "ip", "addr", "add", "10.88.0.1/16", "dev", "cnihost")
    for device in ("cnihost", "cnipeer"):
        ns_run(host_ns, "ip", "link", "set", device, "up")
    assert route_localnet(host_ns, "cnihost") == "0"
    args = ["add", "--netns", host_ns, "--network", "mynet", "--container", "abc123",
            "--ip", "10.88.0.5/16", "--ip", "fd00::5/64", "-p", "8080:80"]  # fmt: skip
    code, _, err = cli(capsys, *args, *([] if snat else ["--no-snat"]))
    assert code == 0 and "warning" not in without_cache_note(err), err
    assert route_localnet(host_ns, "cnihost") == ("1" if snat else "0")
    assert route_localnet(host_ns, "lo") == "0"
    assert route_localnet(host_ns, "cnipeer") == "0"


# --- bad input and a bad environment ----------------------------------------------------------

BAD = [
    (["--port", "0"], "invalid --port '0'"),
    (["--port", "65536"], "invalid --port '65536'"),
    (["--port", "5353", "--port", "x"], "invalid --port 'x'"),
    (["--container", "a b"], "invalid container ID"),
    (["--container", "-x"], "invalid container ID"),
    (["--family", "5"], "--family"),
]


@pytest.mark.parametrize("extra, words", BAD, ids=[" ".join(e) for e, _ in BAD])
def test_bad_input_changes_nothing(node: str, extra: list[str], words: str) -> None:
    assert_error(run(["flush-udp", "--netns", node, *extra]), 2, words)
    assert ct_sports(node) == ALL


@pytest.mark.netns
def test_environment_problems_exit_3() -> None:
    assert_error(run(["flush-udp", "--netns", "pmt-no-such-ns"]), 3, "not found")
    assert_error(run(["flush-udp", "--port", "5353"], unprivileged=True), 3, "root")
    assert_error(run(["flush-udp", "--port", "5353", "--dry-run"], unprivileged=True), 3, "root")


def test_no_conntrack_support_exits_3(
    host_ns: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kernel without conntrack netlink refuses the socket's requests."""
    from portmapctl.host import conntrack

    class NoConntrack:
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise OSError(errno.EPROTONOSUPPORT, "Protocol not supported")

    monkeypatch.setattr(conntrack, "_socket", NoConntrack)
    code, out, err = cli(capsys, "flush-udp", "--netns", host_ns, "--port", "5353")
    assert (code, out) == (3, "")
    assert err.splitlines() == [
        "portmapctl: error: cannot list conntrack entries: Protocol not supported;"
        " this kernel offers no conntrack netlink: modprobe nf_conntrack_netlink"
    ]


def test_dry_run_at_60_columns_keeps_why_whole(node: str) -> None:
    """On a 60-column terminal flush-udp's table keeps why each entry goes whole (`old
    DNAT destination: the port now goes to ...`): REPLY FROM and DESTINATION give way
    (-o wide shows them); nothing is wider than the terminal."""
    lines = _table_on_a_terminal(["flush-udp", "--netns", node, "--stale-only", "--dry-run"], 60)
    table = lines[: lines.index("")]
    assert all(len(line) <= 60 for line in lines), lines
    assert table[0].split() == ["FAM", "SOURCE", "PORTS", "WHY"], lines
    assert "…" not in "\n".join(table), lines
    text = " ".join(" ".join(table).split())
    for why in ("old DNAT destination: the port now goes to 10.88.0.5 ",
                "never DNATed: bypasses the mapping to 10.88.0.5 ",
                "old DNAT destination: the port now goes to fd00::5"):  # fmt: skip
        assert why in f"{text} ", lines


@pytest.mark.parametrize(
    ("priority", "daddr", "status"),
    [
        (-150, "ip daddr 10.0.0.1 ", "ok"),
        (-100, "ip daddr 10.0.0.1 ", "ok"),
        (-100, "", "contested"),
    ],  # fmt: skip
)
def test_flows_an_other_nft_tables_address_rule_takes_are_kept_and_counted_alike(
    host_ns: str, capsys: pytest.CaptureFixture[str], priority: int, daddr: str, status: str
) -> None:
    """Another tool's nftables table DNATs 5353/udp on one node address only (netavark's
    `ip daddr ADDR udp dport N dnat`), at an earlier hook or at the plugin's own
    priority; the plugin maps 5353/udp on every address. The row is judged neither
    shadowed nor ok for all its packets (list warns it may lose some), and a flow that
    tool DNATed to its own pod on its address went as the mapping's old destination
    (flush-udp --stale-only, list's count), where a flow to the gone pod on the other
    address still goes. At the plugin's priority for every address (the row
    `contested`: the hook order decides) both flows may be that tool's: both stay (the
    one to its pod went)."""
    conf = rp.plugin_conf("mynet", ["10.88.0.5/16"], [{"hostPort": 5353, "containerPort": 53,
                                                       "protocol": "udp"}])  # fmt: skip
    rp.run_plugin("ADD", host_ns, "abc123", conf, check=True)
    for address in ("10.0.0.1/32", "10.0.0.2/32"):
        ns_run(host_ns, "ip", "addr", "add", address, "dev", "lo")
    script = (f"table inet otherfw {{\n chain pre {{\n  type nat hook prerouting priority"
              f" {priority}; policy accept;\n  {daddr}udp dport 5353 dnat ip to"
              " 10.77.0.7:53\n }\n}\n")  # fmt: skip
    import subprocess

    subprocess.run(["ip", "netns", "exec", host_ns, "nft", "-f", "-"], input=script, text=True,
                   check=True)  # fmt: skip
    ct_load(host_ns, [ct_args("192.0.2.20", "10.0.0.1", 40100, 5353, "10.77.0.7", 53),
                      ct_args("192.0.2.20", "10.0.0.2", 40200, 5353, "10.88.0.9", 53)])  # fmt: skip
    code, out, err = cli(capsys, "list", "--netns", host_ns, "--conntrack", "-o", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert [m["status"] for m in doc["mappings"]] == [[status]]
    if daddr:
        assert "ip daddr 10.0.0.1 udp dport 5353" in err  # may lose some packets to it
    going = ["10.0.0.2"] if daddr else []
    assert doc["conntrack_misrouted"] == len(going)
    code, out, err = cli(capsys, "flush-udp", "--netns", host_ns, "--stale-only", "-o", "json")
    assert code == 0, err
    assert [d["host_ip"] for d in json.loads(out)["deleted"]] == going
    assert ct_sports(host_ns) == ({40100} if daddr else {40100, 40200})


def test_list_counts_a_flow_under_the_mapping_it_was_dnated_by(
    host_ns: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A container on two networks, both mapping 6001/udp (podman allows it): net1's
    entry rule comes first and takes the port. The node sends a datagram to its own
    192.0.2.10:6001 (real traffic through the plugin's OUTPUT jump): DNATed to net1's
    10.88.0.5. `list --conntrack` counted that one flow on both rows (FLOWS 1 and 1:
    two flows to a reader), and a flow DNATed to net2's address on net1's row too. A
    flow counts under the mappings that DNATed it to their container's address (not
    under another's row); one never DNATed (what --stale-only deletes) under every
    mapping of its port and address."""
    mapped = [{"hostPort": 6001, "containerPort": 6001, "protocol": "udp"}]
    for n, (network, address) in enumerate((("net1", "10.88.0.5"), ("net2", "10.89.0.5"))):
        # A route to each network (a veth link: the datagram leaves, conntrack keeps it).
        ns_run(host_ns, "ip", "link", "add", f"br{n}", "type", "veth", "peer", f"br{n}p")
        ns_run(host_ns, "ip", "addr", "add", f"{address[:-1]}1/16", "dev", f"br{n}")
        for device in (f"br{n}", f"br{n}p"):
            ns_run(host_ns, "ip", "link", "set", device, "up")
        conf = rp.plugin_conf(network, [f"{address}/16"], mapped)
        rp.run_plugin("ADD", host_ns, "ctr1", conf, check=True)
    ns_run(host_ns, "ip", "addr", "add", "192.0.2.10/32", "dev", "lo")

    def counted() -> tuple[dict[str, tuple[int, int]], int]:
        code, out, err = cli(capsys, "list", "--netns", host_ns, "--conntrack", "-o", "json")
        assert code == 0, err
        doc = json.loads(out)
        rows = {
            m["network"]: (m["conntrack_entries"], m["conntrack_misrouted"])
            for m in doc["mappings"]
        }
        return rows, doc["conntrack_misrouted"]

    with entered(host_ns):
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sender:
        sender.bind(("192.0.2.10", 40001))
        sender.sendto(b"ping", ("192.0.2.10", 6001))
    assert rp.udp_flows(host_ns) == {(6001, "10.88.0.5")}  # the real DNAT: net1 first
    assert counted() == ({"net1": (1, 0), "net2": (0, 0)}, 0)
    ct_load(host_ns, [ct_args("192.0.2.30", "192.0.2.10", 40003, 6001, "10.89.0.5", 6001),
                      ct_args("192.0.2.20", "192.0.2.10", 40002, 6001)])  # fmt: skip
    assert counted() == ({"net1": (2, 1), "net2": (2, 1)}, 1)
    code, out, err = cli(capsys, "flush-udp", "--netns", host_ns, "--stale-only", "--dry-run",
                         "-o", "json")  # fmt: skip
    assert code == 0, err
    assert [d["sport"] for d in json.loads(out)["deleted"]] == [40002]


def _local_and_node_ip(host_ns: str, cache, mode: rp.Mode, **cached: object) -> None:
    """`local` maps 127.0.0.1:7100/udp to 10.77.38.5 (the real plugin; cached, with
    `cached`'s leases and ranges as write_cni_cache takes them); 192.0.2.10 is the
    node's, for the mappings on it (_on_node_ip)."""
    port = rp.port_mapping(7100, 7100, "udp", "127.0.0.1")
    conf = rp.plugin_conf("leasenet", ["10.77.38.5/16"], [port])
    rp.run_plugin("ADD", host_ns, "local", conf, mode=mode, check=True)
    rp.write_cni_cache(cache, "leasenet", "local", "eth0", conf, [port], ["10.77.38.5/16"],
                       **cached)  # type: ignore[arg-type]  # fmt: skip
    ns_run(host_ns, "ip", "addr", "add", "192.0.2.10/32", "dev", "lo")


def _on_node_ip(host_ns: str, cid: str, ip: str, mode: rp.Mode, proto: str = "udp") -> dict:
    """The real plugin's ADD of `cid` at `ip` mapping 192.0.2.10:7100/`proto`: its conf."""
    conf = rp.plugin_conf("leasenet", [ip], [rp.port_mapping(7100, 7100, proto, "192.0.2.10")])
    rp.run_plugin("ADD", host_ns, cid, conf, mode=mode, check=True)
    return conf


def test_why_a_flow_to_an_address_the_port_is_not_mapped_on_goes_says_so(
    host_ns: str, tmp_path, iptables_mode: rp.Mode
) -> None:
    """`local` maps 127.0.0.1:7100/udp (live); `old` mapped 192.0.2.10:7100/udp and was
    removed (the plugin's DEL, its cache entry and host-local lease gone: `podman rm
    -f`), its flow to 192.0.2.10:7100 still DNATed to its address. flush-udp
    --stale-only deletes that flow (reason `unmapped`) saying "DNATed, but nothing maps
    this port now": the port is mapped, on 127.0.0.1. Its WHY now says the port is not
    mapped on that address, and where it is; a flow DNATed under a port nothing maps
    at all (`--port 7200`) still reads "nothing maps this port now". Piped and at 80
    columns, dry run and real."""
    cache = tmp_path / "cni"
    _local_and_node_ip(host_ns, cache, iptables_mode, leases=tmp_path / "ipam")
    old = _on_node_ip(host_ns, "old", "10.77.38.6/16", iptables_mode)
    rp.run_plugin("DEL", host_ns, "old", old, mode=iptables_mode, check=True)
    ct_load(host_ns, [ct_args("192.0.2.7", "192.0.2.10", 40700, 7100, "10.77.38.6", 7100),
                      ct_args("192.0.2.7", "192.0.2.10", 40701, 7200, "10.77.38.7", 7200)])  # fmt: skip
    common = ["--netns", host_ns, "--iptables", iptables_mode, "--cni-cache-dir", str(cache),
              "--stale-only", "--port", "7100", "--port", "7200"]  # fmt: skip
    elsewhere = "DNATed, but this port is not mapped on 192.0.2.10 now (only on 127.0.0.1)"
    nothing = "DNATed, but nothing maps this port now"
    doc = json.loads(run(["flush-udp", *common, "--dry-run", "-o", "json"]).stdout)
    assert [(d["sport"], d["reason"]) for d in doc["deleted"]] == [
        (40700, "unmapped"), (40701, "unmapped")
    ]  # fmt: skip
    lines = _table_on_a_terminal(["flush-udp", *common, "--dry-run"], 80)
    assert all(len(line) <= 80 for line in lines), lines
    text = " ".join(" ".join(lines).split())
    assert elsewhere in text and nothing in text, lines
    for extra in (["--dry-run"], ["-v"]):
        done = run(["flush-udp", *common, *extra])
        assert done.returncode == 0, done.stderr
        why = {line.split()[3]: line for line in done.stdout.splitlines() if line.startswith("v4")}
        assert why["40700->7100"].endswith(f"  {elsewhere}"), done.stdout
        assert why["40701->7200"].endswith(f"  {nothing}"), done.stdout
    assert ct_sports(host_ns) == set()


def test_stale_only_deletes_a_removed_containers_flows_to_its_address_re_leased_to_another(
    host_ns: str, tmp_path, iptables_mode: rp.Mode
) -> None:
    """`local` maps 127.0.0.1:7100/udp; `old` mapped 192.0.2.10:7100/udp and was removed
    (`podman rm -f`: the plugin's DEL, its cache entry and lease gone), its flow still
    DNATed to its address 10.77.38.6; then `new` was run and host-local gave it that
    same address (it hands them out in order), `new` mapping 192.0.2.10:7100/tcp alone.
    The old flow now reaches a container that does not serve it, and --stale-only kept
    it (the lease is held): `new`'s cache entry says it maps no such UDP port. A flow
    to an address held by one with no cache entry (being added) is kept (in doubt), and
    local's own flow, which its live mapping explains, too."""
    leases = tmp_path / "ipam"
    cache = tmp_path / "cni"
    _local_and_node_ip(host_ns, cache, iptables_mode, leases=leases)
    old = _on_node_ip(host_ns, "old", "10.77.38.6/16", iptables_mode)
    ct_load(host_ns, [ct_args("192.0.2.7", "192.0.2.10", 40700, 7100, "10.77.38.6", 7100),
                      ct_args("192.0.2.7", "192.0.2.10", 40701, 7100, "10.77.38.8", 7100),
                      ct_args("127.0.0.1", "127.0.0.1", 40702, 7100, "10.77.38.5", 7100)])  # fmt: skip
    rp.run_plugin("DEL", host_ns, "old", old, mode=iptables_mode, check=True)
    new = _on_node_ip(host_ns, "new", "10.77.38.6/16", iptables_mode, proto="tcp")
    ports = new["runtimeConfig"]["portMappings"]
    rp.write_cni_cache(cache, "leasenet", "new", "eth0", new, ports, ["10.77.38.6/16"],
                       leases=leases)  # fmt: skip
    (leases / "leasenet" / "10.77.38.8").write_text("adding\r\neth0")  # no cache entry yet
    common = ["--netns", host_ns, "--iptables", iptables_mode, "--cni-cache-dir", str(cache)]
    listed = json.loads(run(["list", *common, "--conntrack", "-o", "json"]).stdout)
    assert listed["conntrack_misrouted"] == 1, listed
    doc = json.loads(run(["flush-udp", *common, "--stale-only", "--dry-run", "-o", "json"]).stdout)
    assert [(d["sport"], d["reason"]) for d in doc["deleted"]] == [(40700, "unmapped")], doc
    done = run(["flush-udp", *common, "--stale-only"])
    assert done.returncode == 0, done.stderr
    assert ct_sports(host_ns) == {40701, 40702}


def test_stale_only_keeps_flows_to_an_address_host_local_never_hands_out(
    host_ns: str, tmp_path, iptables_mode: rp.Mode
) -> None:
    """host-local hands out only its ranges' addresses (`rangeStart`-`rangeEnd`, the
    gateway skipped), not the whole subnet: an address of the subnet outside them has
    no lease because host-local never gives it to anyone, not because a container gave
    it back (a static address on the bridge: a VM's, another tool's pod). A flow to
    192.0.2.10:7100 DNATed there, the port mapped on 127.0.0.1 alone, is another
    tool's live flow: --stale-only deleted it as a removed container's (`unmapped`) and
    list counted it misrouted. One to an address inside a range with no lease still
    goes (7bd322b), and so does one to an address in a second range set."""
    leases = tmp_path / "ipam"
    cache = tmp_path / "cni"
    ranges = [[{"subnet": "10.77.0.0/16", "rangeStart": "10.77.38.2", "rangeEnd": "10.77.38.100"},
               {"subnet": "10.76.0.0/16", "rangeStart": "10.76.1.1", "rangeEnd": "10.76.1.9"}]]  # fmt: skip
    _local_and_node_ip(host_ns, cache, iptables_mode, leases=leases, ranges=ranges)
    replies = {40700: "10.77.38.6", 40701: "10.76.1.3", 40702: "10.77.99.9",
               40703: "10.77.38.101", 40704: "10.77.0.1", 40705: "10.76.2.1"}  # fmt: skip
    ct_load(host_ns, [ct_args("192.0.2.7", "192.0.2.10", sport, 7100, reply, 7100)
                      for sport, reply in replies.items()])  # fmt: skip
    common = ["--netns", host_ns, "--iptables", iptables_mode, "--cni-cache-dir", str(cache)]
    listed = json.loads(run(["list", *common, "--conntrack", "-o", "json"]).stdout)
    assert listed["conntrack_misrouted"] == 2, listed
    doc = json.loads(run(["flush-udp", *common, "--stale-only", "--dry-run", "-o", "json"]).stdout)
    assert [(d["sport"], d["reason"]) for d in doc["deleted"]] == [
        (40700, "unmapped"), (40701, "unmapped")
    ]  # fmt: skip
    assert run(["flush-udp", *common, "--stale-only"]).returncode == 0
    assert ct_sports(host_ns) == {40702, 40703, 40704, 40705}


def _leaky(host_ns: str, tmp_path, mode: rp.Mode) -> list[str]:
    """`local` (_local_and_node_ip); `leaky` maps 192.0.2.10:7100/udp to 10.77.38.6, its
    chain leaked (as podman leaks it: no cache entry, `list` says `stale`). Flows to
    7100: 40700 DNATed by leaky's chain, 40701 to an old address (10.77.38.9), 40702
    local's own. The options of flush-udp --stale-only there."""
    cache = tmp_path / "cni"
    _local_and_node_ip(host_ns, cache, mode)
    _on_node_ip(host_ns, "leaky", "10.77.38.6/16", mode)
    ct_load(host_ns, [ct_args("192.0.2.7", "192.0.2.10", 40700, 7100, "10.77.38.6", 7100),
                      ct_args("192.0.2.7", "192.0.2.10", 40701, 7100, "10.77.38.9", 7100),
                      ct_args("127.0.0.1", "127.0.0.1", 40702, 7100, "10.77.38.5", 7100)])  # fmt: skip
    return ["--netns", host_ns, "--iptables", mode, "--cni-cache-dir", str(cache), "--stale-only"]


def test_stale_only_says_which_kept_flows_a_leaked_chain_sends(
    host_ns: str, tmp_path, iptables_mode: rp.Mode
) -> None:
    """`leaky` maps 192.0.2.10:7100/udp and leaked its chain (as podman leaks it: no
    cache entry, `list` says `stale`); `local` maps 127.0.0.1:7100/udp, cached. A flow
    DNATed by leaky's chain to its container's address is kept by --stale-only (its
    next packet would go there again: gc's business), and the summary said it "reach[es]
    their container or the host": its container is not cached, the chain stale. It now
    says what the flow follows and what ends it; a kept flow to a live container is
    still said to reach it."""
    common = _leaky(host_ns, tmp_path, iptables_mode)
    leaked = ("1 that a stale chain DNATs (its container is not in the CNI cache:"
              " portmapctl gc removes the chain)")  # fmt: skip
    done = run(["flush-udp", *common, "--dry-run"])
    assert done.stdout.splitlines()[-1] == (
        "would delete 1 UDP conntrack entry to host port 7100 (v4);"
        f" kept 1 that reach their container or the host, {leaked}"
    ), done.stdout
    done = run(["flush-udp", *common, "--port", "7100", "--container", "leaky", "-q"])
    assert done.stdout.strip() == (
        f"deleted 1 UDP conntrack entry to host port 7100 (v4); kept {leaked}"
    ), done.stdout
    assert ct_sports(host_ns) == {40700, 40702}


def test_stale_only_keeps_flows_to_an_address_an_overlapping_network_still_leases(
    host_ns: str, tmp_path, iptables_mode: rp.Mode
) -> None:
    """Two host-local networks whose subnets overlap, each its own lease directory:
    `leasenet` (10.77.0.0/16: `local`, 127.0.0.1:7100/udp) and `overlap`
    (10.77.38.0/24), whose `live` leases 10.77.38.6 and maps 192.0.2.10:7100/udp. Its
    rules went (a nat table flushed under it: check --repair's business), its flow
    192.0.2.10:7100 -> 10.77.38.6:7100 still reaches it. leasenet has no lease for
    10.77.38.6, and --stale-only called the address given back and deleted live's flow
    (`unmapped`), and that of `adding`, leased on overlap with no cache entry yet: an
    address is given back only when every network handing it out has no lease for it.
    One to an address neither leases still goes."""
    cache = tmp_path / "cni"
    _local_and_node_ip(host_ns, cache, iptables_mode, leases=tmp_path / "ipam-a")
    ports = [rp.port_mapping(7100, 7100, "udp", "192.0.2.10")]
    live = rp.plugin_conf("overlap", ["10.77.38.6/24"], ports)
    rp.run_plugin("ADD", host_ns, "live", live, mode=iptables_mode, check=True)
    rp.write_cni_cache(cache, "overlap", "live", "eth0", live, ports, ["10.77.38.6/24"],
                       leases=tmp_path / "ipam-b")  # fmt: skip
    (tmp_path / "ipam-b" / "overlap" / "10.77.38.7").write_text("adding\r\neth0")
    ct_load(host_ns, [ct_args("192.0.2.7", "192.0.2.10", 40700, 7100, "10.77.38.6", 7100),
                      ct_args("192.0.2.7", "192.0.2.10", 40701, 7100, "10.77.38.7", 7100),
                      ct_args("192.0.2.7", "192.0.2.10", 40702, 7100, "10.77.38.8", 7100)])  # fmt: skip
    rp.run_plugin("DEL", host_ns, "live", live, mode=iptables_mode, check=True)  # (rules gone)
    common = ["--netns", host_ns, "--iptables", iptables_mode, "--cni-cache-dir", str(cache)]
    listed = json.loads(run(["list", *common, "--conntrack", "-o", "json"]).stdout)
    assert listed["conntrack_misrouted"] == 1, listed
    doc = json.loads(run(["flush-udp", *common, "--stale-only", "--dry-run", "-o", "json"]).stdout)
    assert [(d["sport"], d["reason"]) for d in doc["deleted"]] == [(40702, "unmapped")], doc
    assert run(["flush-udp", *common, "--stale-only"]).returncode == 0
    assert ct_sports(host_ns) == {40700, 40701}


def test_why_an_old_destination_says_the_port_now_goes_to_a_stale_chains_container(
    host_ns: str, tmp_path, iptables_mode: rp.Mode
) -> None:
    """_leaky: the flow DNATed to 10.77.38.9 goes as an old DNAT destination, its WHY
    saying "the port now goes to 10.77.38.6": that is where leaky's leaked (stale)
    chain sends it, a container that is gone. The WHY now says so, as the summary says
    of the kept flows; so does a flow never DNATed there ("bypasses the mapping to").
    JSON's reasons stay `old-destination` and `not-dnated`."""
    common = _leaky(host_ns, tmp_path, iptables_mode)
    ct_load(host_ns, [ct_args("192.0.2.7", "192.0.2.10", 40703, 7100)])  # never DNATed
    by = ("by a stale chain (its container is not in the CNI cache:"
          " portmapctl gc removes the chain)")  # fmt: skip
    done = run(["flush-udp", *common, "--dry-run"])
    why = {line.split()[3]: line for line in done.stdout.splitlines() if line.startswith("v4")}
    assert why["40701->7100"].endswith(
        f"  old DNAT destination: the port now goes to 10.77.38.6 {by}"
    ), done.stdout
    assert why["40703->7100"].endswith(
        f"  never DNATed: bypasses the mapping to 10.77.38.6 {by}"
    ), done.stdout
    doc = json.loads(run(["flush-udp", *common, "--dry-run", "-o", "json"]).stdout)
    assert [(d["sport"], d["reason"]) for d in doc["deleted"]] == [
        (40701, "old-destination"), (40703, "not-dnated")
    ]  # fmt: skip


def test_stale_only_says_which_kept_flows_another_tools_rule_takes(
    host_ns: str, tmp_path, iptables_mode: rp.Mode
) -> None:
    """`local` maps 127.0.0.1:7100/udp; another tool (kube-proxy's NodePort) DNATs
    192.0.2.10:7100/udp to a pod of its own, 10.244.1.7. Its flow there, and one never
    DNATed to that destination, are kept by --stale-only (that tool's to route), and
    the summary said they "reach their container or the host": neither is a
    container's of the plugin's, nor the host's. It now counts them apart; local's own
    flow still reaches its container."""
    cache = tmp_path / "cni"
    _local_and_node_ip(host_ns, cache, iptables_mode)
    ns_run(host_ns, f"iptables-{iptables_mode}", "-t", "nat", "-I", "PREROUTING", "1", "-d",
           "192.0.2.10", "-p", "udp", "--dport", "7100", "-j", "DNAT", "--to-destination",
           "10.244.1.7:7100")  # fmt: skip
    ct_load(host_ns, [ct_args("192.0.2.7", "192.0.2.10", 40700, 7100, "10.244.1.7", 7100),
                      ct_args("192.0.2.7", "192.0.2.10", 40701, 7100),
                      ct_args("127.0.0.1", "127.0.0.1", 40702, 7100, "10.77.38.5", 7100)])  # fmt: skip
    common = ["--netns", host_ns, "--iptables", iptables_mode, "--cni-cache-dir", str(cache),
              "--stale-only"]  # fmt: skip
    done = run(["flush-udp", *common, "--dry-run"])
    assert done.stdout.splitlines()[-1] == (
        "would delete 0 UDP conntrack entries: none misrouted to host port 7100 (v4); kept 1"
        " that reach their container or the host, 2 to a destination another tool's rule"
        " may take before the plugin's"
    ), done.stdout
    done = run(["flush-udp", *common, "-q"])
    assert done.stdout.strip().endswith("; kept 1 that reach their container or the host,"
                                        " 2 to a destination another tool's rule may take"
                                        " before the plugin's"), done.stdout  # fmt: skip
    assert ct_sports(host_ns) == {40700, 40701, 40702}


def _real_pod(host_ns: str, tmp_path, cid: str, ports: list, mode: rp.Mode, spaces: list) -> str:
    """A pod as kubelet's CNI adds it: Debian's bridge (host-local leasing from
    10.77.0.0/16 in tmp_path/ipam) in a namespace of its own (added to `spaces`), then
    the plugin with `ports` and the bridge's result, cached as libcni caches the list.
    Its address."""
    ipam = {"type": "host-local", "ranges": [[{"subnet": "10.77.0.0/16"}]],
            "dataDir": str(tmp_path / "ipam")}  # fmt: skip
    # (No ipMasq: its rules would be iptables-nft's whatever `mode` is.)
    bridge = {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipam": ipam}
    portmap = {"type": "portmap", "capabilities": {"portMappings": True}}
    conflist = {"cniVersion": "0.4.0", "name": "ipvsnet", "plugins": [bridge, portmap]}
    pod_ns = rp.create_netns("pmt-pod")
    spaces.append(pod_ns)
    path = f"/run/netns/{pod_ns}"
    done = rp.run_any_plugin(host_ns, "ADD", cid, path, {**bridge, "cniVersion": "0.4.0",
                                                         "name": "ipvsnet"})  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    conf = {**portmap, "cniVersion": "0.4.0", "name": "ipvsnet",
            "runtimeConfig": {"portMappings": ports}, "prevResult": result}  # fmt: skip
    rp.run_plugin("ADD", host_ns, cid, conf, mode=mode, container_ns=path, check=True)
    entry = {"kind": "cniCacheV1", "containerId": cid,
             "config": base64.b64encode(json.dumps(conflist).encode()).decode(),
             "ifName": "eth0", "networkName": "ipvsnet", "netns": path,
             "capabilityArgs": {"portMappings": ports}, "result": result}  # fmt: skip
    results = tmp_path / "cni" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / f"ipvsnet-{cid}-eth0").write_text(json.dumps(entry, separators=(",", ":")))
    return result["ips"][0]["address"].split("/")[0]


def test_stale_only_keeps_a_flow_ipvs_sent_to_a_clusterip_as_another_tools(
    host_ns: str, tmp_path, iptables_mode: rp.Mode
) -> None:
    """kube-proxy in IPVS mode: ClusterIPs sit on the dummy interface kube-ipvs0 (the
    node's own addresses, which no nat rule names), and IPVS leaves a UDP flow's
    conntrack entry as NAT would (original CLIENT -> CLUSTERIP:PORT, reply from
    POD:TARGETPORT: ip_vs_nfct.c alters the reply tuple alone). `mapped` maps
    192.0.2.10:7100/udp; `dns`, a host-local pod mapping no UDP port, serves
    10.96.0.10:7100 through IPVS. That live flow was deleted as `unmapped` (its pod's
    cached config sends no such flow there: 266ec86a) and counted misrouted; it is
    kept, as another tool's. The same flow to the bridge's address (the node's, on no
    kube-ipvs0) still goes, and mapped's own stays."""
    spaces: list = []
    try:
        mapped = _real_pod(host_ns, tmp_path, "mapped", [rp.port_mapping(7100, 7100, "udp",
                           "192.0.2.10")], iptables_mode, spaces)  # fmt: skip
        dns = _real_pod(host_ns, tmp_path, "dns", [rp.port_mapping(8080, 8080, "tcp",
                        "192.0.2.10")], iptables_mode, spaces)  # fmt: skip
        ns_run(host_ns, "ip", "addr", "add", "192.0.2.10/32", "dev", "lo")
        # kube-proxy's is a dummy; a kernel without that driver (this one) gets a
        # bridge: the name alone tells IPVS's addresses, whatever the device kind.
        made = rp._run([rp._ip(), "-n", host_ns, "link", "add", "kube-ipvs0", "type", "dummy"])
        if made.returncode != 0:
            ns_run(host_ns, "ip", "link", "add", "kube-ipvs0", "type", "bridge")
        ns_run(host_ns, "ip", "addr", "add", "10.96.0.10/32", "dev", "kube-ipvs0")
        ct_load(host_ns, [ct_args("192.0.2.7", "10.96.0.10", 40700, 7100, dns, 7100),
                          ct_args("192.0.2.7", "10.77.0.1", 40701, 7100, dns, 7100),
                          ct_args("192.0.2.7", "192.0.2.10", 40702, 7100, mapped, 7100)])  # fmt: skip
        common = ["--netns", host_ns, "--iptables", iptables_mode, "--cni-cache-dir",
                  str(tmp_path / "cni")]  # fmt: skip
        listed = json.loads(run(["list", *common, "--conntrack", "-o", "json"]).stdout)
        assert listed["conntrack_misrouted"] == 1, listed
        stale = [*common, "--stale-only"]
        doc = json.loads(run(["flush-udp", *stale, "--dry-run", "-o", "json"]).stdout)
        assert [(d["sport"], d["reason"]) for d in doc["deleted"]] == [(40701, "unmapped")], doc
        done = run(["flush-udp", *stale, "-q"])
        assert done.stdout.strip() == (
            "deleted 1 UDP conntrack entry to host port 7100 (v4); kept 1 that reach their"
            " container or the host, 1 to a destination another tool's rule may take before"
            " the plugin's"
        ), done.stdout + done.stderr
        assert ct_sports(host_ns, "udp") == {40700, 40702}
    finally:
        for space in spaces:
            rp.delete_netns(space)


def _lease_net(name: str, bridge: str, data_dir, start: str, *plugins: dict) -> dict:
    """A network list on 10.88.0.0/16: bridge with host-local (addresses from `start`,
    leases under `data_dir`), then `plugins`."""
    ipam = {"type": "host-local", "dataDir": str(data_dir),
            "ranges": [[{"subnet": "10.88.0.0/16", "rangeStart": start}]]}  # fmt: skip
    first = {"type": "bridge", "bridge": bridge, "ipMasq": False, "ipam": ipam}
    return {"cniVersion": "0.4.0", "name": name, "plugins": [first, *plugins]}


def test_stale_only_keeps_flows_to_an_address_a_network_without_mappings_leases(
    host_ns: str, tmp_path, iptables_mode: rp.Mode
) -> None:
    """Debian's bridge, host-local and portmap as libcni runs them: `podman`
    (10.88.0.0/16, portmap) where `web` maps 127.0.0.1:7100/udp and `gone` mapped
    192.0.2.10:7100/udp and was removed (DEL: rules, lease, cache entry gone); and two
    networks on the same subnet whose leases no cached mapping names: `user` (no
    portmap; `db` cached at 10.88.0.20, its own dataDir) and `sec` (a Multus
    delegate's: cached elsewhere, leases under host-local's default, here
    PORTMAPCTL_HOST_LOCAL_DIR; `pod` at 10.88.0.30). Flows to 192.0.2.10:7100 another
    tool DNATed to db and pod are live, yet podman's directory has no lease for their
    addresses: --stale-only deleted them as removed containers' (`unmapped`) and list
    counted 3 misrouted. Only gone's flow goes."""
    default = tmp_path / "default"
    cache = tmp_path / "cni"
    portmap = {"type": "portmap", "capabilities": {"portMappings": True}}
    podman = _lease_net("podman", "cni-pmt-a", tmp_path / "ipam-a", "10.88.0.2", portmap)
    user = _lease_net("user", "cni-pmt-b", tmp_path / "ipam-b", "10.88.0.20")
    sec = _lease_net("sec", "cni-pmt-c", default, "10.88.0.30")
    made = []
    try:
        for cid, conflist, ports, cached in [
            ("web", podman, [rp.port_mapping(7100, 7100, "udp", "127.0.0.1")], cache),
            ("gone", podman, [rp.port_mapping(7100, 7100, "udp", "192.0.2.10")], cache),
            ("db", user, [], cache),
            ("pod", sec, [], None),
        ]:
            made.append(rp.create_netns("pmt-ctr"))
            netns = f"/run/netns/{made[-1]}"
            rp.run_list("ADD", host_ns, cid, netns, conflist, ports, mode=iptables_mode,
                        cache=cached)  # fmt: skip
        ns_run(host_ns, "ip", "addr", "add", "192.0.2.10/32", "dev", "lo")
        ct_load(host_ns, [ct_args("192.0.2.7", "192.0.2.10", 40700, 7100, "10.88.0.20", 7100),
                          ct_args("192.0.2.7", "192.0.2.10", 40701, 7100, "10.88.0.30", 7100),
                          ct_args("192.0.2.7", "192.0.2.10", 40702, 7100, "10.88.0.3", 7100)])  # fmt: skip
        rp.run_list("DEL", host_ns, "gone", f"/run/netns/{made[1]}", podman,
                    [rp.port_mapping(7100, 7100, "udp", "192.0.2.10")], mode=iptables_mode,
                    cache=cache)  # fmt: skip
        assert sorted(p.name for p in (tmp_path / "ipam-a" / "podman").glob("10.*")) == [
            "10.88.0.2"
        ]
        env = {"PORTMAPCTL_HOST_LOCAL_DIR": str(default)}
        common = ["--netns", host_ns, "--iptables", iptables_mode, "--cni-cache-dir", str(cache)]
        listed = json.loads(run(["list", *common, "--conntrack", "-o", "json"], env=env).stdout)
        assert listed["conntrack_misrouted"] == 1, listed
        doc = json.loads(
            run(["flush-udp", *common, "--stale-only", "--dry-run", "-o", "json"], env=env).stdout
        )
        assert [(d["sport"], d["reason"]) for d in doc["deleted"]] == [(40702, "unmapped")], doc
        assert run(["flush-udp", *common, "--stale-only"], env=env).returncode == 0
        # (By the UDP flows: the bridges' ICMPv6 has entries of its own.)
        assert rp.udp_flows(host_ns) == {(7100, "10.88.0.20"), (7100, "10.88.0.30")}
    finally:
        for name in made:
            rp.delete_netns(name)
