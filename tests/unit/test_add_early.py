"""ops/add_early.py and what decides whether its dump is kept, without a kernel: the
command line read leniently (host ports, --netns, families; nothing for the lines it
cannot serve), and nfnl.Dumped.taken_at -- a dump is the chain as add's batch found it
only when no commit but add's own came while it ran."""

from __future__ import annotations

import pytest

from portmapctl.iptables.access import nfgen
from portmapctl.iptables.access.nfnl import Dumped
from portmapctl.ops import add_early

BASE = ["add", "--network", "n", "--container", "c", "--ip", "10.88.0.5/16"]


@pytest.mark.parametrize(
    "args, ports, netns, families",
    [
        ([*BASE, "-p", "8080:80", "-p", "5353:53/udp"], {8080, 5353}, None, (4,)),
        ([*BASE, "--publish=127.0.0.1:8080:80", "--netns", "node1"], {8080}, "node1", (4,)),
        (
            [*BASE, "--ip=fd00::5/64", "-p", "[::1]:8443:443/tcp", "--family", "6"],
            {8443},
            None,
            (6,),
        ),
        ([*BASE, "-p", "1:2", "--family=v4", "--netns=a", "--netns", "b"], {1}, "b", (4,)),
        # Dual-stack: both families; none given: add says so, the dump takes both.
        ([*BASE, "--ip", "fd00::5/64", "-p", "1:2"], {1}, None, (4, 6)),
        (["add", "--ip=10.0.0.1/8", "--ip=fd00::1/64", "-p", "1:2"], {1}, None, (4, 6)),
        # An IPv4-mapped IPv6 address is IPv6 to add too (ipaddress).
        (["add", "--ip", "::ffff:10.0.0.1/120", "-p", "1:2"], {1}, None, (6,)),
        (["add", "-p", "1:2", "--network", "n"], {1}, None, (4, 6)),
        # An option's value that looks like one of the options read is its value.
        (["add", "--network", "-p", "-p", "9:9"], {9}, None, (4, 6)),
    ],
)
def test_the_line_is_read_for_what_the_dump_needs(args, ports, netns, families):
    assert add_early._read_line(args) == (frozenset(ports), netns, families)


@pytest.mark.parametrize(
    "args",
    [
        BASE,  # no -p
        [*BASE, "-p", "http:80"],
        [*BASE, "-p", "8080"],
        [*BASE, "-p"],
        ["add", "--container", "c", "--cni-config", "conf.json"],  # ports in the file
        [*BASE, "-p", "1:1", "--backend", "nftables"],
        [*BASE, "-p", "1:1", "--family", "5"],  # add says what is wrong
        [*BASE, "-p", "1:1", "--family", "6"],  # an IPv4 container: nothing in IPv6
    ],
)
def test_lines_it_cannot_serve_start_nothing(args):
    assert add_early._read_line(args) is None


def test_nothing_starts_for_a_dry_run_or_with_the_batch_off(monkeypatch):
    assert add_early.start([*BASE, "-p", "1:1", "--dry-run"]) is None
    assert add_early.start([*BASE, "-p", "1:1", "--netns", "no/such"]) is None  # never raises
    monkeypatch.setenv("PORTMAPCTL_NFT_BATCH", "0")
    assert add_early.start([*BASE, "-p", "1:1"]) is None


def test_a_dump_is_kept_only_for_the_netns_and_ports_add_then_uses():
    early = add_early.EarlyClaims(["add", "-p", "no-port"])  # read: nothing dumped
    assert early.dumped(None, frozenset({1})) == {}
    early.ports, early.netns = frozenset({1, 2}), "a"
    early._box = {4: Dumped([], 5, 5)}
    assert early.dumped("a", frozenset({1})) == {4: Dumped([], 5, 5)}
    assert early.dumped("a", frozenset({1, 3})) == {}  # a port it did not look for
    assert early.dumped(None, frozenset({1})) == {}  # another namespace


G = 41


@pytest.mark.parametrize(
    "started, ended, own, kept",
    [
        (G, G, None, True),  # nothing committed: the chain at G
        (G, G, (G, G + 1), True),  # over before our commit
        (G, G + 1, (G, G + 1), True),  # torn by our commit alone
        (G + 1, G + 1, (G, G + 1), True),  # after our commit: ours are told apart
        (G, G + 1, None, False),  # torn, and not by us
        (G - 1, G, (G, G + 1), False),  # someone committed before our read
        (G - 1, G - 1, (G, G + 1), False),
        (G, G + 2, (G, G + 1), False),
        (G + 1, G + 2, (G, G + 1), False),
        (G, G + 1, (G, G + 2), False),  # another commit right after ours: can't tell
        (G, G, (G, G + 2), True),
    ],
)
def test_a_dump_is_the_chain_as_read_only_when_no_other_commit_came(started, ended, own, kept):
    assert Dumped([], started, ended).taken_at(G, own) is kept


def test_the_generation_after_the_last_is_one():
    top = 0xFFFFFFFF
    assert nfgen.following(top) == 1  # the kernel skips 0
    assert Dumped([], top, 1).taken_at(top, (top, 1))


def _fed(data: bytes, *, ends: bool = True) -> add_early.EarlyClaims:
    """An EarlyClaims reading `data` as its child's answer (no child forked: a pipe
    written here; the stand-in child exits at once). `ends`: the pipe is closed after
    `data` (else it stays open, as a child still at work leaves it)."""
    import os

    early = add_early.EarlyClaims(["add", "-p", "no-port"])
    reading, writing = os.pipe()
    os.write(writing, data)
    if ends:
        os.close(writing)
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    early._pid, early._pipe = pid, reading
    early.ports, early.netns = frozenset({80}), None
    return early


def test_the_childs_answer_is_each_familys_dump():
    import marshal

    early = _fed(marshal.dumps({4: ([(3, "CNI-DN-x"), (7, None)], 9, 10)}))
    found = early.dumped(None, frozenset({80}))[4]
    assert found.kept == [(3, "CNI-DN-x"), (7, None)] and (found.started, found.ended) == (9, 10)
    assert early._pid == 0 and early._pipe == -1  # waited for, closed
    assert early.dumped(None, frozenset({80}))[4] == found  # read once


def test_a_child_that_said_nothing_or_garbage_gives_nothing():
    assert _fed(b"").dumped(None, frozenset({80})) == {}
    assert _fed(b"not marshal data").dumped(None, frozenset({80})) == {}


def test_a_silent_child_is_given_up_on_in_time(monkeypatch):
    import time

    monkeypatch.setattr(add_early, "WAIT_SECONDS", 0.3)
    early = _fed(b"", ends=False)  # nothing written, the pipe left open
    started = time.monotonic()
    assert early.dumped(None, frozenset({80})) == {}
    assert time.monotonic() - started < 2
    assert early._pid == 0  # and the child is ended, waited for


def test_an_unread_child_is_ended_by_close():
    early = _fed(b"", ends=False)
    early.close()
    early.close()  # twice: nothing left to do
    assert early._pid == 0 and early._pipe == -1


def test_close_from_another_thread_while_the_dump_is_read_ends_it_cleanly():
    """entry.py closes from the main thread while add's warning thread may still be
    reading the dump: the child is killed, the reader meets the pipe's end and closes
    and waits itself; neither raises, nothing is closed or waited for twice."""
    import os
    import threading
    import time

    early = add_early.EarlyClaims(["add", "-p", "no-port"])
    reading, writing = os.pipe()
    pid = os.fork()
    if pid == 0:  # a child at work: it holds the pipe's other end
        os.close(reading)
        time.sleep(30)
        os._exit(0)
    os.close(writing)
    early._pid, early._pipe = pid, reading
    early.ports = frozenset({80})
    failures = []

    def read() -> None:
        try:
            assert early.dumped(None, frozenset({80})) == {}
        except BaseException as err:  # noqa: BLE001 - reported below
            failures.append(err)

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.2)
    started = time.monotonic()
    early.close()
    reader.join(5)
    assert not reader.is_alive() and not failures, failures
    assert time.monotonic() - started < 2
    assert early._pid == 0 and early._pipe == -1
    early.close()  # again: nothing left


def test_the_line_is_read_without_the_cli_modules():
    """The child forks once the line is read and the table counted: what that imports
    first, add waits for (cli/add_options.py imports nothing; cli/_common.py, enum and
    dataclasses come after the fork)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys\n"
        "from portmapctl.ops import add_early\n"
        "assert add_early._read_line(['add', '-p', '1:2', '--ip', '10.0.0.2/8'])\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('portmapctl'))))\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
        check=True,
    )
    loaded = set(done.stdout.split())
    assert "portmapctl.cli.add_options" in loaded
    assert not loaded & {"portmapctl.cli._common", "portmapctl.cli.add_fast"}, loaded


def test_a_family_the_child_did_not_dump_is_dumped_again(monkeypatch):
    """The child dumps only the families an --ip is given in (_read_line): for any other
    family add's mapping has, Ahead dumps it itself, never goes without."""
    from portmapctl.core import validate
    from portmapctl.iptables.access import nfnl
    from portmapctl.ops import add_ahead

    config = validate.mapping_config(
        network="n", container_id="c",
        addresses=[validate.interface("10.88.0.5/16"), validate.interface("fd00::5/64")],
        ports=[validate.port_spec("8080:80")],
    )  # fmt: skip

    def write_new(wanted, committed):
        committed.append((7, 8))  # applied at 7, made 8: as nfnl_add reports
        return {family: None for family in wanted}

    dumped_again = []

    def rules_for_ports(family, chain, ports, **_):
        dumped_again.append(family)
        return [nfnl.KeptRule(0, "CNI-DN-fresh")]

    class Early:
        def dumped(self, netns, ports):
            return {4: Dumped([nfnl.KeptRule(3, "CNI-DN-early")], 7, 7)}  # IPv4 only

    monkeypatch.setattr(add_ahead, "write_new", write_new)
    monkeypatch.setattr(add_ahead, "route_interfaces", lambda addresses: {})
    monkeypatch.setattr(nfnl, "rules_for_ports", rules_for_ports)
    ahead = add_ahead.Ahead.start(None, config, [4, 6], early=Early())  # type: ignore[arg-type]
    claims = ahead.claims()
    assert claims == {
        4: [nfnl.KeptRule(3, "CNI-DN-early")],
        6: [nfnl.KeptRule(0, "CNI-DN-fresh")],
    }
    assert dumped_again == [6]


def test_a_dump_that_shows_a_rule_twice_is_torn_whatever_its_generations():
    """The kernel resumes a rule dump by position: a rule put in or taken out before
    the point where one 32 KB part ends shows the next part's first rule twice, or
    not at all. tests/kernel/test_nfnl.py's churn met such dumps between two equal
    generations; one rule twice (by its handle) marks the dump torn, and it is taken
    again (rules_for_ports), never answered from."""
    import struct
    from pathlib import Path

    from portmapctl.host import netlink as nl
    from portmapctl.iptables.access import nfnl

    rules = (Path(__file__).resolve().parents[1] / "fixtures/nfnl/dnat.v4.bin").read_bytes()
    done = struct.pack("=IHHII", nl.HEADER.size + 4, nl.NLMSG_DONE, 2, 1, 0) + bytes(4)
    (first,) = struct.unpack_from("=I", rules, 0)
    first_rule = rules[: (first + 3) & ~3]

    class Socket:
        def __init__(self, parts):
            self.parts = list(parts)

        def sendto(self, *_):
            pass

        def recv(self, _size):
            return self.parts.pop(0)

    kept, doubled = nfnl._dump(Socket([rules, done]), 4, "nat", "X", frozenset({1}))
    assert not doubled and kept  # (the fixture's foreign rule is kept: no ports)
    # The first rule again at the start of the next part, as after a shift.
    again, doubled = nfnl._dump(Socket([rules, first_rule, done]), 4, "nat", "X", frozenset({1}))
    assert doubled
    torn = Dumped(again, 5, nfnl._TORN)
    assert not torn.taken_at(5, None) and not torn.taken_at(5, (5, 6))
