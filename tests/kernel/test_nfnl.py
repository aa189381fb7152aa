"""iptables/access/nfnl.py (CNI-HOSTPORT-DNAT read over nf_tables netlink) against
`iptables -S` on real tables of every plugin shape: each fixture dump (every captured
plugin version and option, the field shapes: v0.6 entry rules without ports, dead
`-d 0.0.0.0/32` rules, /32 hairpins, masqAll, conditions) restored into a fresh
namespace with iptables-nft, and foreign rules of other shapes beside them.

- the rules it keeps for a set of ports are exactly those that `iptables -S` shows as
  something other than one `-m multiport --dports` list (no ranges, not negated)
  without any of the ports, with the same jump targets;
- add's shadow warning from it (ops.add_others.shadow_views) is the warning from the whole
  table, for a new container on every host port of the table and on a free one;
- a dump torn by commits meanwhile is never taken for an answer.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List, Optional, Sequence, Set, Tuple

import pytest
import realplugin as rp

from portmapctl.cli.add_warnings import shadow_warnings
from portmapctl.core import validate
from portmapctl.core.mapping import MappingConfig, PortMapping
from portmapctl.host.netns import entered
from portmapctl.iptables import inventory
from portmapctl.iptables.access import nfnl
from portmapctl.iptables.access.restore import RestoreBackend
from portmapctl.iptables.chains import TOPLEVEL_DNAT
from portmapctl.iptables.lexer import split_words
from portmapctl.iptables.ruleset import NatTable, rule_target
from portmapctl.ops.add_others import shadow_views

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]
DUMPS = sorted(
    [
        *(ROOT / "tests/fixtures").glob("*.v[46].save"),
        *(ROOT / "tests/fixtures/field").glob("*.v4.save"),
        *(ROOT / "examples").glob("node.v[46].save"),
    ]
)
WITH_DNAT = [p for p in DUMPS if f":{TOPLEVEL_DNAT} " in p.read_text()]
# Rules of other shapes in CNI-HOSTPORT-DNAT (an admin's, another tool's): each must be
# kept or passed by as `iptables -S` says.
FOREIGN = [
    "-p tcp -m tcp --dport 7001 -j CNI-DN-00000000000000000000a",
    "-p udp -m multiport --sports 7002 -j CNI-DN-00000000000000000000a",
    "-p tcp -m multiport ! --dports 7003 -j CNI-DN-00000000000000000000a",
    "-p tcp -m multiport --dports 7000:7010 -j CNI-DN-00000000000000000000a",
    "-p tcp -m multiport --dports 7004 -m multiport --dports 7005 -j CNI-DN-00000000000000000000a",
    "-p tcp -m multiport --ports 7006 -j CNI-DN-00000000000000000000a",
    "-p tcp -m multiport --dports 7007 -j RETURN",
    "-p tcp -m multiport --dports 7008 -g CNI-DN-00000000000000000000a",
    "-p tcp -m comment --comment multiport -m multiport --dports 7009 -j ACCEPT",
    '-m comment --comment "no ports at all" -j CNI-DN-00000000000000000000a',
    "-p tcp -m multiport --dports 1,2,3,4,5,6,7,8,9,10,11,12,13,14,7011 -j CNI-DN-00000000000000000000a",
]


def _restore(ns: str, family: int, text: str, noflush: bool = False) -> None:
    tool = rp.tool_path("iptables-restore" if family == 4 else "ip6tables-restore", "nft")
    argv = ["ip", "netns", "exec", ns, tool, *(["--noflush"] if noflush else [])]
    done = subprocess.run(argv, input=text, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def _listed(ns: str, family: int) -> List[Tuple[str, ...]]:
    done = rp.iptables(ns, ["-t", "nat", "-S", TOPLEVEL_DNAT], family=family, mode="nft")
    prefix = f"-A {TOPLEVEL_DNAT} "
    return [
        tuple(split_words(line)[2:]) for line in done.stdout.splitlines() if line.startswith(prefix)
    ]


def _passes_by(args: Sequence[str], ports: Set[int]) -> bool:
    """What nfnl may leave out, told from the rule as iptables prints it."""
    matches = [i for i, word in enumerate(args) if word == "multiport" and args[i - 1] == "-m"]
    if len(matches) != 1:
        return False
    at = matches[0] + 1
    if args[at] != "--dports":
        return False  # negated (`!`), --sports or --ports
    listed = args[at + 1]
    if ":" in listed:
        return False
    return not ports & {int(number) for number in listed.split(",")}


def _expected(
    rules: List[Tuple[str, ...]], chains: Set[str], ports: Set[int]
) -> List[nfnl.KeptRule]:
    kept = []
    for index, args in enumerate(rules):
        if not _passes_by(args, ports):
            target = rule_target(args)
            kept.append(nfnl.KeptRule(index, target if target in chains else None))
    return kept


def _probes(table: NatTable) -> List[Set[int]]:
    """Every port number the table names, one by one and all at once; a free port."""
    numbers: Set[int] = set()
    for chain in table.chains.values():
        for args in chain.rules:
            for option in ("--dport", "--dports"):
                if option in args:
                    value = args[args.index(option) + 1]
                    numbers |= {int(n) for n in value.replace(":", ",").split(",") if n.isdigit()}
    return [{n} for n in sorted(numbers)] + [numbers | {1}, {1}, {65535}]


def _loaded(dump: Path, ns: str) -> Tuple[str, int, NatTable]:
    """The dump restored into the namespace, and the table as read back whole."""
    rp.require(rp.mode_available("nft"))
    family = 6 if dump.name.endswith(".v6.save") else 4
    _restore(ns, family, dump.read_text())
    with entered(ns):
        table = RestoreBackend("nft").read(family)
    return ns, family, table


@pytest.mark.parametrize("dump", WITH_DNAT, ids=lambda p: p.name)
def test_kept_rules_are_those_iptables_shows_claiming_the_ports(dump, host_ns):
    ns, family, table = _loaded(dump, host_ns)
    needed = (
        "-N CNI-DN-00000000000000000000a\n"
        if "CNI-DN-00000000000000000000a" not in table.chains
        else ""
    )
    foreign = "".join(f"-A {TOPLEVEL_DNAT} {rule}\n" for rule in FOREIGN)
    _restore(ns, family, f"*nat\n{needed}{foreign}COMMIT\n", noflush=True)
    rules = _listed(ns, family)
    chains = set(table.chains) | {"CNI-DN-00000000000000000000a"}
    probes = _probes(table) + [{7000 + i} for i in range(12)]
    with entered(ns):
        for ports in probes:
            found = nfnl.rules_for_ports(family, TOPLEVEL_DNAT, sorted(ports))
            assert found == _expected(rules, chains, ports), sorted(ports)


def _new_containers(table: NatTable) -> List[MappingConfig]:
    """A new container (both families) on every (protocol, host port) the table maps, on
    every address and on the mapping's host IP; and one on a port nobody maps."""
    found = inventory.build({table.family: table})
    addresses = [validate.interface("10.99.0.9/16"), validate.interface("fd00:99::9/64")]
    seen = set()
    configs = []
    for m in found.mappings:
        if m.host_port is None or m.protocol is None:
            continue
        for host_ip in (None, m.host_ip):
            key = (m.host_port, m.protocol, host_ip)
            if key in seen:
                continue
            seen.add(key)
            configs.append(
                validate.mapping_config(
                    network="probe",
                    container_id=f"new{m.host_port}{m.protocol}{len(configs)}",
                    addresses=addresses,
                    ports=[PortMapping(m.host_port, 80, m.protocol, host_ip or "")],
                )
            )
    configs.append(
        validate.mapping_config(
            network="probe", container_id="nobody", addresses=addresses, ports=[PortMapping(1, 1)]
        )
    )
    return configs


@pytest.mark.parametrize("dump", DUMPS, ids=lambda p: p.name)
def test_the_warning_from_the_dump_is_the_warning_from_the_whole_table(dump, host_ns):
    ns, family, table = _loaded(dump, host_ns)
    node = SimpleNamespace(backend=RestoreBackend("nft"))
    configs = _new_containers(table)
    warned = 0
    with entered(ns):
        for config in configs:
            whole = shadow_warnings(config, {family: table})
            ports = sorted({p.host_port for p in config.ports})
            claims = {family: nfnl.rules_for_ports(family, TOPLEVEL_DNAT, ports)}
            views = shadow_views(node, config, [family], claims)  # type: ignore[arg-type]
            seen = {f: v for f, v in views.items() if v is not None}
            assert shadow_warnings(config, seen) == whole, config
            warned += bool(whole)
    portless = any(
        "--dports" not in args and rule_target(args) in table.chains
        for args in table.rules(TOPLEVEL_DNAT)
    )
    # The free port: nothing can claim it, so nothing is listed (but for port-less rules).
    with entered(ns):
        free = nfnl.rules_for_ports(family, TOPLEVEL_DNAT, [1])
    assert free is not None and (bool(free) == portless or TOPLEVEL_DNAT not in table.chains)
    if len(table.rules(TOPLEVEL_DNAT)) > 2:
        assert warned  # the comparison met some shadowing


def test_a_dump_torn_by_commits_is_never_an_answer(host_ns):
    """One rule at the top of the chain comes and goes while the chain is dumped: every
    answer given is the chain's true rules for the port (the churning rule names
    another port), never a rule missed or doubled by the shifting positions."""
    rp.require(rp.mode_available("nft"))
    lines = ["*nat", "-N CNI-HOSTPORT-DNAT", "-N CNI-DN-00000000000000000000a"]
    lines += [
        f"-A CNI-HOSTPORT-DNAT -p tcp -m multiport --dports {10000 + i} -j CNI-DN-00000000000000000000a"
        for i in range(3000)
    ]
    _restore(host_ns, 4, "\n".join([*lines, "COMMIT", ""]))
    churn = "-p tcp -m multiport --dports 9 -j RETURN"
    stop = threading.Event()

    def churning() -> None:
        while not stop.is_set():
            for change in (f"-I {TOPLEVEL_DNAT} 1 {churn}", f"-D {TOPLEVEL_DNAT} {churn}"):
                _restore(host_ns, 4, f"*nat\n{change}\nCOMMIT\n", noflush=True)

    thread = threading.Thread(target=churning)
    thread.start()
    answers: List[Optional[List[nfnl.KeptRule]]] = []
    try:
        with entered(host_ns):
            for _ in range(30):
                answers.append(nfnl.rules_for_ports(4, TOPLEVEL_DNAT, [12999]))
    finally:
        stop.set()
        thread.join()
    targets: Dict[int, int] = {}
    for answer in answers:
        if answer is None:
            continue  # torn three times over: no answer, add lists the chain instead
        assert [rule.target for rule in answer] == ["CNI-DN-00000000000000000000a"], answer
        targets[answer[0].index] = targets.get(answer[0].index, 0) + 1
    assert set(targets) <= {2999, 3000}  # without, or after, the churning rule
    assert any(answer is not None for answer in answers)
