"""Transaction scenarios run through the memory backend and through real iptables
(tests/kernel/test_memory_conformance.py), and alone (tests/unit/test_memory_backend.py).

Each scenario is a list of steps; a step builds one Transaction from the table as it
is then (so plans are made against the state both backends really have).
"""

from __future__ import annotations

from typing import Callable, Dict, List

from fixtures_lib import NAMES, configs

from portmapctl.iptables.chains import TOPLEVEL_DNAT, dnat_chain_name
from portmapctl.iptables.planner import plan_setup, plan_teardown
from portmapctl.iptables.plugin_rules import per_container_chains
from portmapctl.iptables.ruleset import NatTable
from portmapctl.iptables.transaction import Transaction
from portmapctl.ops.check import wanted_on_node

Step = Callable[[NatTable], Transaction]


def setup_of(case: str) -> Step:
    def step(live: NatTable) -> Transaction:
        shared, per_container = wanted_on_node(configs(case), live.family, live)
        return plan_setup([*shared, *(chain for _, chain in per_container)], live)

    return step


def dedupe_of(case: str) -> Step:
    """check --repair's plan of the node: the case's chains, duplicates deleted."""

    def step(live: NatTable) -> Transaction:
        shared, per_container = wanted_on_node(configs(case), live.family, live)
        return plan_setup([*shared, *(chain for _, chain in per_container)], live, dedupe=True)

    return step


def teardown_all(live: NatTable) -> Transaction:
    return plan_teardown(live, per_container_chains(live))


def teardown_first(live: NatTable) -> Transaction:
    return plan_teardown(live, per_container_chains(live)[:1])


def raw(*ops: tuple) -> Step:
    """Hand-written ops, e.g. ("new_chain", "X"), ("append", "X", ("-j", "RETURN"))."""

    def step(live: NatTable) -> Transaction:
        txn = Transaction(live.family)
        for name, *args in ops:
            getattr(txn, name)(*args)
        return txn

    return step


def first_dn(case: str) -> str:
    return dnat_chain_name(configs(case)[0])


def scenarios() -> Dict[str, List[Step]]:
    found: Dict[str, List[Step]] = {}
    for case in NAMES:
        if case == "external-setmark":  # its SETMARK chain is the admin's: made first
            found[f"setup-{case}"] = [raw(("new_chain", "MY-SETMARK")), setup_of(case)]
            continue
        found[f"setup-{case}"] = [setup_of(case)]
        found[f"setup-twice-{case}"] = [setup_of(case), setup_of(case)]
        found[f"setup-teardown-{case}"] = [setup_of(case), teardown_all]
    found["teardown-one-of-three"] = [setup_of("three-containers"), teardown_first]
    dn = first_dn("basic")
    found["refused: -N of an existing chain"] = [setup_of("basic"), raw(("new_chain", dn))]
    found["refused: -D of a missing rule"] = [
        setup_of("basic"),
        raw(("delete", TOPLEVEL_DNAT, ("-p", "udp", "-j", dn))),
    ]
    found["refused: -X of a referenced chain"] = [
        setup_of("basic"),
        raw(("flush", dn), ("delete_chain", dn)),
    ]
    found["refused: -X of a chain with rules"] = [
        setup_of("basic"),
        raw(
            ("new_chain", "CNI-DN-x"),
            ("append", "CNI-DN-x", ("-j", "RETURN")),
            ("delete_chain", "CNI-DN-x"),
        ),
    ]
    found["refused: -A to a missing chain"] = [raw(("append", "CNI-DN-none", ("-j", "RETURN")))]
    found["refused: -j to a missing chain"] = [
        raw(("new_chain", "CNI-DN-a"), ("append", "CNI-DN-a", ("-j", "CNI-DN-none")))
    ]
    found["refused: -F of a missing chain"] = [raw(("flush", "CNI-DN-none"))]
    found["refused half-way, nothing changes"] = [
        setup_of("basic"),
        raw(
            ("new_chain", "CNI-DN-new"),
            ("append", "CNI-DN-new", ("-j", "RETURN")),
            ("flush", dn),
            ("delete", TOPLEVEL_DNAT, ("-p", "sctp", "-j", dn)),
        ),
    ]
    found["insert goes first"] = [
        raw(
            ("new_chain", "CNI-DN-b"),
            ("new_chain", "CNI-HOSTPORT-DNAT"),
            ("append", "CNI-HOSTPORT-DNAT", ("-j", "RETURN")),
            ("insert_first", "CNI-HOSTPORT-DNAT", ("-j", "CNI-DN-b")),
        ),
    ]
    found["-X of an emptied, unreferenced chain"] = [
        raw(("new_chain", "CNI-DN-c"), ("append", "CNI-DN-c", ("-j", "RETURN"))),
        raw(("flush", "CNI-DN-c"), ("delete_chain", "CNI-DN-c")),
    ]
    found["delete by number, last first"] = [
        setup_of("three-containers"),
        raw(("delete_number", TOPLEVEL_DNAT, 3), ("delete_number", TOPLEVEL_DNAT, 1)),
    ]
    found["refused: delete by a number past the end"] = [
        setup_of("basic"),
        raw(("delete_number", TOPLEVEL_DNAT, 99)),
    ]
    found["-C of a rule that is there changes nothing"] = [
        setup_of("basic"),
        raw(
            ("check", "PREROUTING", ("-m", "addrtype", "--dst-type", "LOCAL", "-j", TOPLEVEL_DNAT))
        ),
    ]
    found["refused: -C of a rule that is not there"] = [
        setup_of("basic"),
        raw(("check", TOPLEVEL_DNAT, ("-p", "sctp", "-j", dn))),
    ]
    jump = ("-m", "addrtype", "--dst-type", "LOCAL", "-j", TOPLEVEL_DNAT)
    found["dedupe: the extra copies go, one stays"] = [
        setup_of("basic"),
        raw(("append", "PREROUTING", jump), ("append", "PREROUTING", ("-j", "RETURN"))),
        raw(("append", "PREROUTING", jump)),
        dedupe_of("basic"),
    ]
    found["dedupe: copies apart keep the first's place"] = [
        setup_of("basic"),
        raw(
            ("append", "PREROUTING", ("-p", "tcp", "-j", "ACCEPT")), ("append", "PREROUTING", jump)
        ),
        dedupe_of("basic"),
    ]
    found["insert at a position"] = [
        setup_of("basic"),
        raw(("insert_at", "PREROUTING", 2, ("-p", "udp", "-j", "RETURN"))),
    ]
    found["refused: insert past the end"] = [
        setup_of("basic"),
        raw(("insert_at", TOPLEVEL_DNAT, 99, ("-p", "udp", "-j", "RETURN"))),
    ]
    found["refused: every copy deleted, then -C"] = [
        setup_of("basic"),
        raw(("append", "PREROUTING", jump)),
        raw(
            ("delete", "PREROUTING", jump),
            ("delete", "PREROUTING", jump),
            ("check", "PREROUTING", jump),
        ),
    ]
    return found
