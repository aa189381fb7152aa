"""A property of `check` and `check --repair` on generated nodes, without root: check
offers a fix (`fix` naming --repair) exactly where the repair makes it.

A node is a few containers on one network, each added by its plugin (iptables;
nftables by upstream v1.9.1's ADD; or Debian's 1.1.1, which ignores the config's
`"backend": "nftables"` and writes iptables: in doubt once nothing of it is left, see
_left), each then live (its address in
its namespace), torn down (its namespace there, its address and interface gone: a DEL
under way), a zombie (its namespace gone), stale (its cache entry gone) or unreadable
(its cache entry cut short); then the tables perturbed as firewalls and admins do
(shared chains or jumps flushed or deleted, a container's entry rule or chain deleted,
the plugin's nftables table, chain or jump deleted or flushed). For each node:

1. the check after `check --repair` offers no fix, and a second repair writes nothing
   (the repair reaches its fixed point in one run: no loop);
2. the repair writes nothing for a container torn down, a zombie, stale or in doubt
   (its own rules stay as they were);
3. every row the first check offered a fix for is gone after the repair;
4. every row the repair fixed was offered by the first check (it made nothing check
   did not offer: a row whose fix check names as left, or no fix, stays as it is).

The tables are the memory backends (held to the kernel by
tests/kernel/test_memory_conformance.py and test_nft_conformance.py); namespaces are a
fake view whose answers the node says (NetnsState, and what TornDownLook finds in each
namespace). What the property found is reproduced on the real kernel with the real
plugins in tests/interop."""

from __future__ import annotations

import importlib
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Set, Tuple

import pytest
import realplugin as rp
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from portmapctl.cni.cache import read_cache
from portmapctl.host import netns
from portmapctl.host.netns import Inside, NetnsState
from portmapctl.iptables.access.memory import MemoryBackend
from portmapctl.iptables.chains import TOPLEVEL_DNAT, dnat_chain_name, wanted_chains
from portmapctl.iptables.planner import plan_setup
from portmapctl.iptables.ruleset import BUILTIN_NAT_CHAINS, NatTable, SavedChain, rule_target
from portmapctl.nftables import planner as nft_planner
from portmapctl.nftables.access.memory import MemoryNft
from portmapctl.nftables.ruleset import (
    Ruleset,
    Table,
)
from portmapctl.nftables.wanted import wanted
from portmapctl.ops import check as check_lib
from portmapctl.ops.check.followed_entries import _IN_DOUBT, is_toplevel
from portmapctl.ops.check.hints import REPAIR_COMMAND
from portmapctl.ops.node import Node, NodeOptions

NETWORK = "podman"
BACKENDS = ("iptables", "nftables", "ignored")  # ignored: Debian's 1.1.1 under the key
STATES = ("live", "torn", "zombie", "stale", "unreadable")
# Perturbations of the whole node's iptables, of its nftables, and of one container's
# rules (`name:index`).
IPT_CUTS = (
    "ipt-flush-nat",  # iptables -t nat -F
    "ipt-delete-nat",  # iptables -t nat -F; -X
    "ipt-flush-dnat",
    "ipt-drop-prerouting-jump",
    "ipt-drop-output-jump",
    "ipt-flush-masq",
    "ipt-flush-setmark",
)
NFT_CUTS = (
    "nft-delete-table",
    "nft-flush-prerouting",
    "nft-flush-output",
    "nft-flush-hostports_all",
    "nft-flush-masquerading",
    "nft-delete-prerouting",
    "nft-delete-masquerading",
)
CONTAINER_CUTS = ("ipt-drop-entry", "ipt-drop-chain", "ipt-flush-chain", "nft-drop-rules")


class Container(NamedTuple):
    """One container: its plugin's backend (BACKENDS) and its fate (STATES)."""

    backend: str
    state: str


@dataclass(frozen=True)
class Scenario:
    """A node: its containers in ADD order, then the cuts made to its tables."""

    containers: Tuple[Container, ...]
    cuts: Tuple[str, ...]

    def cid(self, index: int) -> str:
        return f"h333ctr{index}"


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    containers = draw(
        st.lists(
            st.builds(Container, st.sampled_from(BACKENDS), st.sampled_from(STATES)),
            min_size=1,
            max_size=3,
        )
    )
    # At most one cut of each kind: each example more often cuts both backends.
    of_one = [f"{c}:{i}" for c in CONTAINER_CUTS for i in range(len(containers))]
    cuts = [draw(st.none() | st.sampled_from(kind)) for kind in (IPT_CUTS, NFT_CUTS, of_one)]
    return Scenario(tuple(containers), tuple(c for c in cuts if c is not None))


class FakeView:
    """The namespaces' fates as the scenario says them (NamespaceView's questions)."""

    def __init__(self, gone: Set[str]) -> None:
        self.gone = gone

    def state(self, path: Optional[str], entry: Optional[str] = None, cached=()) -> NetnsState:
        if not path:
            return NetnsState.UNKNOWN
        return NetnsState.GONE if path in self.gone else NetnsState.PRESENT

    def dated_by_the_entry(self, path: Optional[str], state: NetnsState) -> bool:
        return False

    def directory_visible(self, directory: str) -> bool:
        return True


@dataclass
class Built:
    cache: str
    ipt: MemoryBackend
    nft: MemoryNft
    view: FakeView
    inside: Dict[str, Inside]
    configs: Dict[str, object]  # by container ID, as its plugin's ADD had it


def _address(index: int) -> str:
    return f"10.88.0.{index + 2}"


def build(scenario: Scenario, directory: str) -> Built:
    """The node after the plugins' ADDs, the containers' fates and the cuts."""
    ipt = MemoryBackend()
    nft = MemoryNft()
    gone: Set[str] = set()
    inside: Dict[str, Inside] = {}
    configs: Dict[str, object] = {}
    paths: Dict[int, Path] = {}
    for index, container in enumerate(scenario.containers):
        cid = scenario.cid(index)
        ports = [{"hostPort": 8000 + index, "containerPort": 80, "protocol": "tcp"}]
        ips = [f"{_address(index)}/16"]
        conf = rp.plugin_conf(NETWORK, ips, ports)
        if container.backend != "iptables":
            conf["backend"] = "nftables"
        path = f"/run/netns/h333-{cid}"
        paths[index] = rp.write_cni_cache(directory, NETWORK, cid, "eth0", conf, ports, ips, path)
        # ADD order is the cache files' modification times.
        stamp = 1_700_000_000 + index
        os.utime(paths[index], (stamp, stamp))
        if container.state == "zombie":
            gone.add(path)
        elif container.state == "torn":
            inside[path] = Inside(set(), set())
        else:
            inside[path] = Inside({_address(index)}, {"eth0"})
    for attachment in read_cache(directory):
        configs[attachment.container_id] = attachment.mapping
    for index, container in enumerate(scenario.containers):
        config = configs[scenario.cid(index)]
        if container.backend == "nftables":
            nft.apply(nft_planner.setup(nft.read(), [wanted(config, 4)]))
        else:
            ipt.apply(plan_setup(wanted_chains(config, 4), ipt.read(4)))
    for index, container in enumerate(scenario.containers):
        if container.state == "stale":
            paths[index].unlink()
        elif container.state == "unreadable":
            rp.cut_short(Path(directory, "results"), NETWORK, scenario.cid(index), "eth0")
            stamp = 1_700_000_000 + index
            os.utime(paths[index], (stamp, stamp))
    for cut in scenario.cuts:
        name, _, which = cut.partition(":")
        config = configs[scenario.cid(int(which))] if which else None
        if name.startswith("ipt-"):
            ipt.tables[4] = _ipt_cut(ipt.tables[4], name, config)
        else:
            nft = MemoryNft(_nft_cut(nft.read(), name, config))
    return Built(directory, ipt, nft, FakeView(gone), inside, configs)


def _ipt_cut(table: NatTable, name: str, config) -> NatTable:
    chains = dict(table.chains)

    def flush(chain: str) -> None:
        if chain in chains:
            chains[chain] = replace(chains[chain], rules=())

    def without(chain: str, drop) -> None:
        if chain in chains:
            chains[chain] = replace(
                chains[chain], rules=tuple(r for r in chains[chain].rules if not drop(r))
            )

    def delete(chain: str) -> None:
        chains.pop(chain, None)
        for other in list(chains):
            without(other, lambda r: rule_target(r) == chain)

    if name == "ipt-flush-nat":
        for chain in list(chains):
            flush(chain)
    elif name == "ipt-delete-nat":
        chains = {n: SavedChain(n, c.policy) for n, c in chains.items() if n in BUILTIN_NAT_CHAINS}
    elif name == "ipt-flush-dnat":
        flush(TOPLEVEL_DNAT)
    elif name == "ipt-drop-prerouting-jump":
        without("PREROUTING", lambda r: rule_target(r) == TOPLEVEL_DNAT)
    elif name == "ipt-drop-output-jump":
        without("OUTPUT", lambda r: rule_target(r) == TOPLEVEL_DNAT)
    elif name == "ipt-flush-masq":
        flush("CNI-HOSTPORT-MASQ")
    elif name == "ipt-flush-setmark":
        flush("CNI-HOSTPORT-SETMARK")
    elif name == "ipt-drop-entry":
        without(TOPLEVEL_DNAT, lambda r: rule_target(r) == dnat_chain_name(config))
    elif name == "ipt-drop-chain":
        delete(dnat_chain_name(config))
    elif name == "ipt-flush-chain":
        flush(dnat_chain_name(config))
    return NatTable(table.family, chains)


def _nft_cut(live: Ruleset, name: str, config) -> Ruleset:
    table = live.table(4)
    if table is None:
        return live
    chains = dict(table.chains)
    rules = dict(table.rules)
    if name == "nft-delete-table":
        return Ruleset({f: t for f, t in live.tables.items() if f != 4})
    if name.startswith("nft-flush-"):
        rules.pop(name[len("nft-flush-") :], None)
    elif name.startswith("nft-delete-"):
        chain = name[len("nft-delete-") :]
        chains.pop(chain, None)
        rules.pop(chain, None)
    elif name == "nft-drop-rules":
        rules = {
            c: tuple(r for r in rs if r.comment != config.container_id) for c, rs in rules.items()
        }
    tables = dict(live.tables)
    tables[4] = Table(4, table.handle, chains, {c: rs for c, rs in rules.items() if rs})
    return Ruleset(tables)


@pytest.fixture
def faked(monkeypatch):
    """The node's namespaces as `holder[0]` (a Built) says; no host reads or writes."""
    holder: List[Built] = []
    monkeypatch.setattr(Node, "namespace_view", lambda self: holder[0].view if holder else None)
    monkeypatch.setattr(Node, "plugin_binaries", lambda self: None)

    def look_into(paths, expected=None):
        return {p: holder[0].inside.get(p) for p in paths}

    monkeypatch.setattr(netns, "look_into", look_into)
    monkeypatch.setattr("portmapctl.nftables.hooks.live_hooks", lambda node: [])
    # iptables' nat table is there (the node runs iptables: podman's own rules).
    monkeypatch.setattr(
        "portmapctl.ops.check.followed_entries._nft_nat_table_here", lambda families: True
    )
    for module in ("repair", "repair_one"):
        target = importlib.import_module(f"portmapctl.ops.check.{module}")
        monkeypatch.setattr(target, "after_setup_many", lambda *a, **k: [])
        if hasattr(target, "after_setup"):
            monkeypatch.setattr(target, "after_setup", lambda *a, **k: [])
    return holder


def _node(built: Built) -> Node:
    options = NodeOptions(cache_dirs=(built.cache,), families=(4,))
    return Node(options, built.ipt, built.nft)


def _offered(result) -> List:
    return [p for p in result.problems if p.fix and REPAIR_COMMAND in p.fix]


def _own_rules(built: Built, cid: str) -> Tuple:
    """A container's rules on both backends: its chain, its entry rules, its nftables
    rules (by their comment)."""
    config = built.configs[cid]
    table = built.ipt.tables[4]
    name = dnat_chain_name(config)
    chain = table.chains.get(name)
    entries = tuple(r for r in table.rules(TOPLEVEL_DNAT) if rule_target(r) == name)
    live = built.nft.read().table(4)
    bodies = tuple(
        (c, r.body)
        for c, rs in (live.rules.items() if live else ())
        for r in rs
        if r.comment == cid
    )
    return (chain.rules if chain else None, entries, sorted(bodies, key=repr))


def _left(scenario: Scenario, built: Built) -> List[str]:
    """The containers the repair must write nothing for: all but the live ones, and a
    live one under a key its plugin ignores (Debian's 1.1.1) of which nothing is left
    in iptables where another such one keeps its chain there (in doubt: its plugin
    may keep it in iptables). One whose chain is still there is followed to iptables
    (the key ignored: not in doubt); one of which nothing is left with no other such
    one to tell is judged by its key (nftables), as the runtime's plugin cannot be
    read here (plugin_binaries: none)."""
    table = built.ipt.tables[4]

    def kept(index: int) -> bool:
        return table.has_chain(dnat_chain_name(built.configs[scenario.cid(index)]))

    telling = [
        i
        for i, c in enumerate(scenario.containers)
        if c.backend == "ignored" and c.state in ("live", "torn") and kept(i)
    ]
    return [
        scenario.cid(i)
        for i, c in enumerate(scenario.containers)
        if c.state != "live"
        or (c.backend == "ignored" and not kept(i) and any(t != i for t in telling))
    ]


def _check(scenario: Scenario, faked) -> None:
    with tempfile.TemporaryDirectory(prefix="h333-") as directory:
        built = build(scenario, directory)
        faked[:] = [built]
        first = check_lib.check_node(_node(built))
        left = _left(scenario, built)
        before = {cid: _own_rules(built, cid) for cid in left}
        repaired = check_lib.repair(_node(built), flush_udp=False)
        second = check_lib.check_node(_node(built))
        again = check_lib.repair(_node(built), flush_udp=False)
        story = f"{scenario}\nfirst: {_offered(first)}\nafter: {_offered(second)}"
        # (1) No loop. Judgement: a container the first check held in doubt (its key
        # ignored or not cannot be told while the plugin's table is not as the plugin
        # leaves it: `prerouting` flushed) may be told once the repair made the table
        # for the others; what it lacks is offered then (its own rows, and the shared
        # iptables chains' it alone wants), a fix the first repair could not make
        # (nothing is written for a container in doubt).
        settled = {p.container_id for p in first.problems if p.why == _IN_DOUBT}
        later = [
            p
            for p in _offered(second)
            if p.container_id not in settled and not (settled and is_toplevel(p))
        ]
        assert later == [], story
        if len(later) == len(_offered(second)):
            assert not again.transactions, f"{story}\nsecond repair: {again.transactions}"
        # (2) Nothing written for those it must leave.
        for cid in left:
            assert _own_rules(built, cid) == before[cid], f"{story}\n{cid} changed"
        # (3) Every row offered was made, and (4) nothing made that was not offered.
        remaining = {p.key for p in second.problems}
        unmade = [p for p in _offered(first) if p.key in remaining]
        assert unmade == [], f"{story}\noffered, not made: {unmade}\n{repaired.transactions}"
        offered = {p.key for p in _offered(first)}
        unoffered = [p for p in repaired.fixed if p.key not in offered]
        assert unoffered == [], f"{story}\nmade, not offered: {unoffered}"


# What the property found (the two commits before this test's), and the fixes of the
# stop before, pinned: each example fails with that fix undone.
@example(Scenario((Container("iptables", "live"), Container("nftables", "torn")),
                  ("nft-flush-prerouting",)))  # fmt: skip
@example(Scenario((Container("iptables", "live"), Container("nftables", "stale")),
                  ("nft-flush-hostports_all",)))  # fmt: skip
@example(Scenario((Container("iptables", "torn"),), ("ipt-drop-prerouting-jump",)))
@example(Scenario((Container("nftables", "stale"),), ("nft-delete-prerouting",)))  # 3144609
@example(Scenario((Container("nftables", "torn"),), ("nft-flush-hostports_all",)))  # 4660cac
@example(Scenario((Container("ignored", "live"), Container("ignored", "live"),
                   Container("nftables", "live")),
                  ("ipt-drop-chain:0", "nft-flush-prerouting")))  # fmt: skip  # c242989
# Derandomized, as test_argv_property: the same 60 generated nodes every run, so CI is
# never red for a node no one has seen (explore with more examples and a random seed by
# hand; the examples above pin what that found).
@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(scenarios())
def test_check_offers_what_the_repair_makes(faked, scenario: Scenario) -> None:
    _check(scenario, faked)
