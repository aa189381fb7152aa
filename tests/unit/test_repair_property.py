"""A property of `check` and `check --repair` on generated nodes, without root: check
offers a fix (`fix` naming --repair) exactly where the repair makes it.

A node is a few containers, each added by its plugin (iptables; nftables by upstream
v1.9.1's ADD, cached with the `backend` key or without it, its rules in nftables alone;
or Debian's 1.1.1, which ignores the config's `"backend": "nftables"` and writes
iptables: in doubt once nothing of it is left, see _left), each drawn IPv4 or
dual-stack, its mapping with no hostIP, the wildcard or one of either family, SNAT on
or `"snat": false`, on one network or two (an entry each), an nftables one perhaps with
conditions the repair refuses (ops/check/nft_refused.py); each then live (its
addresses in its namespace), torn down (its namespace there, its addresses and
interfaces gone: a DEL under way), a zombie (its namespace gone), stale (its cache
entries gone) or unreadable (its cache entries cut short); then the tables of one
family perturbed as firewalls and admins do (shared chains or jumps flushed or deleted,
a container's entry rule or chain deleted, the plugin's nftables table, chain or jump
deleted or flushed). For each node:

1. the check after `check --repair` offers no fix, and a second repair writes nothing
   (the repair reaches its fixed point in one run: no loop);
2. the repair writes nothing for a container torn down, a zombie, stale, in doubt or
   whose conditions it refuses (its own rules stay as they were);
3. every row the first check offered a fix for is gone after the repair;
4. every row the repair fixed was offered by the first check (it made nothing check
   did not offer: a row whose fix check names as left, or no fix, stays as it is).

Before that, where the scenario draws one container, the check and `check --repair` of
its first mapping alone (`--cni-config`, _check_one) hold 1, 3 and 4 too, and that
repair writes no other container's rules.

The tables are the memory backends (held to the kernel by
tests/kernel/test_memory_conformance.py and test_nft_conformance.py); namespaces are a
fake view whose answers the node says (NetnsState, and what TornDownLook finds in each
namespace). What the property found is reproduced on the real kernel with the real
plugins in tests/interop. The 200 derandomized examples take about 5-10 s without
capabilities (an entry cut short is re-read without the pause a torn write gets);
3,000 random ones about a minute."""

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
from portmapctl.core.mapping import MappingConfig
from portmapctl.errors import BadInput
from portmapctl.host import netns
from portmapctl.host.netns import Inside, NetnsState
from portmapctl.iptables.access.memory import MemoryBackend
from portmapctl.iptables.chains import TOPLEVEL_DNAT, dnat_chain_name, wanted_chains
from portmapctl.iptables.planner import plan_setup
from portmapctl.iptables.ruleset import BUILTIN_NAT_CHAINS, NatTable, SavedChain, rule_target
from portmapctl.nftables import planner as nft_planner
from portmapctl.nftables.access.memory import MemoryNft
from portmapctl.nftables.ruleset import (
    OUTPUT,
    PREROUTING,
    Action,
    ActionKind,
    RuleBody,
    Ruleset,
    Table,
    parse_conditions,
)
from portmapctl.nftables.transaction import Transaction as NftTransaction
from portmapctl.nftables.wanted import wanted
from portmapctl.ops import check as check_lib
from portmapctl.ops.check.followed import KeyInDoubt
from portmapctl.ops.check.followed_entries import _IN_DOUBT, is_toplevel
from portmapctl.ops.check.hints import REPAIR_COMMAND
from portmapctl.ops.check.run import SAME_WITH_REPAIR
from portmapctl.ops.node import Node, NodeOptions

NETWORKS = ("podman", "podman2")  # a container on two has an entry (and rules) on each
# ignored: Debian's 1.1.1 under the key (iptables); keyless: v1.9.1's ADD cached without
# the key, its rules in nftables alone (as that plugin leaves them where iptables does
# not work; followed there by its rules, 6044a81).
BACKENDS = ("iptables", "nftables", "ignored", "keyless")
STATES = ("live", "torn", "zombie", "stale", "unreadable")
# A mapping's hostIP: none, the wildcard (the plugin writes no address match), one of
# each family (the other family's ADD skips the mapping).
HOST_IPS = (None, "0.0.0.0", "192.0.2.10", "2001:db8::10")
# v1.9.1 writes conditions into its entry as given: the `#` comments out the rest of
# the rule (its `fib daddr type local jump hostports_all`); the repair refuses them
# (nftables/transaction.refused_condition, ops/check/nft_refused.py).
REFUSED = "ip saddr 10.0.0.0/8 # lab only"
NFT_BACKENDS = ("nftables", "keyless")
# Perturbations of the whole node's iptables, of its nftables, and of one container's
# rules (`name:index`); `/6` after one: of IPv6 (else IPv4).
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
    """One container: its plugin's backend (BACKENDS) and its fate (STATES); an IPv6
    address too (`dual`), its mapping's hostIP (HOST_IPS), `snat` in its config, on
    how many of NETWORKS, and (an nftables one) conditions the repair refuses."""

    backend: str
    state: str
    dual: bool = False
    host_ip: Optional[str] = None
    snat: bool = True
    networks: int = 1
    refused: bool = False


@dataclass(frozen=True)
class Scenario:
    """A node: its containers in ADD order, then the cuts made to its tables; `one`:
    the container whose first network's mapping is checked and repaired alone
    (`--cni-config`) before the node's check, or None."""

    containers: Tuple[Container, ...]
    cuts: Tuple[str, ...]
    one: Optional[int] = None

    def cid(self, index: int) -> str:
        return f"h333ctr{index}"


@st.composite
def containers(draw: st.DrawFn) -> Container:
    backend = draw(st.sampled_from(BACKENDS))
    return Container(
        backend,
        draw(st.sampled_from(STATES)),
        draw(st.booleans()),
        draw(st.sampled_from(HOST_IPS)),
        draw(st.booleans()),
        draw(st.sampled_from((1, 2))),
        backend in NFT_BACKENDS and draw(st.booleans()),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    drawn = draw(st.lists(containers(), min_size=1, max_size=3))
    # At most one cut of each kind: each example more often cuts both backends.
    of_one = [f"{c}:{i}" for c in CONTAINER_CUTS for i in range(len(drawn))]
    cuts = []
    for kind in (IPT_CUTS, NFT_CUTS, of_one):
        cut = draw(st.none() | st.sampled_from(kind))
        if cut is not None:
            cuts.append(cut + draw(st.sampled_from(("", "/6"))))
    one = draw(st.none() | st.integers(0, len(drawn) - 1))
    return Scenario(tuple(drawn), tuple(cuts), one)


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
    # By container ID, as its plugin's ADD had it: one config a network, in NETWORKS' order.
    configs: Dict[str, List[MappingConfig]]


def _addresses(index: int, network: int, dual: bool) -> List[str]:
    """The container's addresses (with prefix) on NETWORKS[network]."""
    ips = [f"10.{88 + network}.0.{index + 2}/16"]
    if dual:
        ips.append(f"fd00:{88 + network}::{index + 2}/64")
    return ips


def _conf(scenario: Scenario, index: int, network: int) -> Tuple[Dict, List[Dict], List[str]]:
    """The plugin's stdin config of one ADD, its port mappings and addresses."""
    container = scenario.containers[index]
    port: Dict[str, object] = {"hostPort": 8000 + index, "containerPort": 80, "protocol": "tcp"}
    if container.host_ip is not None:
        port["hostIP"] = container.host_ip
    ips = _addresses(index, network, container.dual)
    conf = rp.plugin_conf(
        NETWORKS[network],
        ips,
        [port],
        snat=None if container.snat else False,
        conditions_v4=[REFUSED] if container.refused else None,
    )
    if container.backend in ("nftables", "ignored"):
        conf["backend"] = "nftables"
    return conf, [port], ips


def _add_nft(nft: MemoryNft, config: MappingConfig) -> None:
    """v1.9.1's ADD of `config`; refused conditions as it leaves them: its entry is the
    conditions alone, their `#` having commented out the jump."""
    parts = (config.conditions_v4, config.conditions_v6)
    refused = [any("#" in c for c in conditions) for conditions in parts]
    plain = replace(
        config,
        conditions_v4=() if refused[0] else config.conditions_v4,
        conditions_v6=() if refused[1] else config.conditions_v6,
    )
    wants = [w for f in (4, 6) if (w := wanted(plain, f)) is not None]
    nft.apply(nft_planner.setup(nft.read(), wants))
    families = {w.family for w in wants}
    for family, conditions in zip((4, 6), parts):
        if family in families and refused[family == 6]:
            kept = parse_conditions([" ".join(conditions).split("#")[0]])
            txn = NftTransaction()
            for chain in (PREROUTING, OUTPUT):
                txn.flush_chain(family, chain)
                txn.add_rule(family, chain, RuleBody(kept, Action(ActionKind.NONE)))
            nft.apply(txn)


def build(scenario: Scenario, directory: str) -> Built:
    """The node after the plugins' ADDs, the containers' fates and the cuts."""
    ipt = MemoryBackend()
    nft = MemoryNft()
    gone: Set[str] = set()
    inside: Dict[str, Inside] = {}
    configs: Dict[str, List[MappingConfig]] = {}
    paths: Dict[int, List[Path]] = {}
    stamp = 1_700_000_000
    adds: List[Tuple[int, Path]] = []  # (container, its entry) in ADD order
    for index, container in enumerate(scenario.containers):
        cid = scenario.cid(index)
        path = f"/run/netns/h333-{cid}"
        addresses: Set[str] = set()
        ifnames: Set[str] = set()
        for network in range(container.networks):
            conf, ports, ips = _conf(scenario, index, network)
            ifname = f"eth{network}"
            written = rp.write_cni_cache(
                directory, NETWORKS[network], cid, ifname, conf, ports, ips, path
            )
            # ADD order is the cache files' modification times.
            stamp += 1
            os.utime(written, (stamp, stamp))
            paths.setdefault(index, []).append(written)
            adds.append((index, written))
            addresses |= {ip.split("/")[0] for ip in ips}
            ifnames.add(ifname)
        if container.state == "zombie":
            gone.add(path)
        elif container.state == "torn":
            inside[path] = Inside(set(), set())
        else:
            inside[path] = Inside(addresses, ifnames)
    by_path = {a.path: a for a in read_cache(directory) or ()}
    for index, written in adds:
        config = by_path[str(written)].mapping
        if config is None:
            continue  # (its one mapping's hostIP is of a family it has no address of)
        configs.setdefault(scenario.cid(index), []).append(config)
        if scenario.containers[index].backend in NFT_BACKENDS:
            _add_nft(nft, config)
        else:
            for family in (4, 6):
                ipt.apply(plan_setup(wanted_chains(config, family), ipt.read(family)))
    for index, container in enumerate(scenario.containers):
        for network, written in enumerate(paths[index]):
            if container.state == "stale":
                written.unlink()
            elif container.state == "unreadable":
                kept = written.stat().st_mtime
                rp.cut_short(
                    Path(directory, "results"),
                    NETWORKS[network],
                    scenario.cid(index),
                    f"eth{network}",
                )
                os.utime(written, (kept, kept))
    for cut in scenario.cuts:
        cut, _, family_text = cut.partition("/")
        family = int(family_text or 4)
        name, _, which = cut.partition(":")
        config = configs.get(scenario.cid(int(which)), [None])[0] if which else None
        if which and config is None:
            continue
        if name.startswith("ipt-"):
            ipt.tables[family] = _ipt_cut(ipt.tables[family], name, config)
        else:
            nft = MemoryNft(_nft_cut(nft.read(), name, config, family))
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


def _nft_cut(live: Ruleset, name: str, config, family: int) -> Ruleset:
    table = live.table(family)
    if table is None:
        return live
    chains = dict(table.chains)
    rules = dict(table.rules)
    if name == "nft-delete-table":
        return Ruleset({f: t for f, t in live.tables.items() if f != family})
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
    tables[family] = Table(family, table.handle, chains, {c: rs for c, rs in rules.items() if rs})
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
    # An entry cut short stays so: its re-reads' pause (a torn write finishing) is not
    # what is tested here, and took most of the run.
    monkeypatch.setattr("portmapctl.cni.cache.RETRY_SECONDS", 0.0)
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
    options = NodeOptions(cache_dirs=(built.cache,), families=(4, 6))
    return Node(options, built.ipt, built.nft)


def _offered(result) -> List:
    return [p for p in result.problems if p.fix and REPAIR_COMMAND in p.fix]


def _own_rules(built: Built, cid: str) -> Tuple:
    """A container's rules on both backends, in both families, on each of its networks:
    its chains, their entry rules, its nftables rules (by their comment)."""
    own = []
    for family in (4, 6):
        table = built.ipt.tables[family]
        for config in built.configs.get(cid, ()):
            name = dnat_chain_name(config)
            chain = table.chains.get(name)
            entries = tuple(r for r in table.rules(TOPLEVEL_DNAT) if rule_target(r) == name)
            own.append((chain.rules if chain else None, entries))
        live = built.nft.read().table(family)
        bodies = tuple(
            (c, r.body)
            for c, rs in (live.rules.items() if live else ())
            for r in rs
            if r.comment == cid
        )
        own.append(sorted(bodies, key=repr))
    return tuple(own)


def _left(scenario: Scenario, built: Built) -> List[str]:
    """The containers the repair must write nothing for: all but the live ones, a live
    one whose conditions it refuses, and a live one under a key its plugin ignores
    (Debian's 1.1.1) of which nothing is left in iptables where another such one keeps
    its chain there (in doubt: its plugin may keep it in iptables). One whose chain is
    still there is followed to iptables (the key ignored: not in doubt); one of which
    nothing is left with no other such one to tell is judged by its key (nftables), as
    the runtime's plugin cannot be read here (plugin_binaries: none)."""

    def kept(index: int) -> bool:
        return any(
            built.ipt.tables[f].has_chain(dnat_chain_name(c))
            for c in built.configs.get(scenario.cid(index), ())
            for f in (4, 6)
        )

    telling = [
        i
        for i, c in enumerate(scenario.containers)
        if c.backend == "ignored" and c.state in ("live", "torn") and kept(i)
    ]
    return [
        scenario.cid(i)
        for i, c in enumerate(scenario.containers)
        if c.state != "live"
        or c.refused
        or (c.backend == "ignored" and not kept(i) and any(t != i for t in telling))
    ]


def _check_one(scenario: Scenario, built: Built) -> None:
    """`check --cni-config` of one container's first mapping offers what its `check
    --repair` makes, the check after offers nothing, and that repair writes no other
    container's rules, nor its own where it makes nothing of it: being torn down, a
    zombie (its namespace gone: the node's repair expects nothing of it; this one made
    the mapping given, exit 0), or its conditions refused. (A stale or unreadable
    one's given mapping is made: the mapping given, not its entry, is what that repair
    writes.)"""
    assert scenario.one is not None
    container = scenario.containers[scenario.one]
    config = built.configs[scenario.cid(scenario.one)][0]
    others = {cid: _own_rules(built, cid) for cid in built.configs if cid != config.container_id}
    mine = _own_rules(built, config.container_id)
    first = check_lib.check_mapping(_node(built), config, "eth0")
    try:
        repaired = check_lib.repair(_node(built), config, flush_udp=False, ifname="eth0")
    except (BadInput, KeyInDoubt) as stopped:
        # Its conditions refused (exit 2), or its backend in doubt (exit 3): that
        # repair stops before it writes, and the check named it no fix
        # (nft_refused.mapping_refused_left, run.check_mapping's left_alone).
        story = f"{scenario}\n{stopped}\none first: {_one_offered(first)}"
        assert _one_offered(first) == [], story
        assert _own_rules(built, config.container_id) == mine, story
        return
    second = check_lib.check_mapping(_node(built), config, "eth0")
    story = f"{scenario}\none first: {_one_offered(first)}\none after: {_one_offered(second)}"
    assert _one_offered(second) == [], story
    offered = {p.key for p in _one_offered(first)}
    unoffered = [p for p in repaired.fixed if p.key not in offered]
    assert unoffered == [], f"{story}\none made, not offered: {unoffered}"
    for cid, rules in others.items():
        assert _own_rules(built, cid) == rules, f"{story}\n{cid} changed by the one repair"
    if container.state in ("torn", "zombie") or container.refused:
        assert _own_rules(built, config.container_id) == mine, f"{story}\nits own changed"


def _one_offered(result) -> List:
    return [p for p in result.problems if p.fix == SAME_WITH_REPAIR]


def _check(scenario: Scenario, faked) -> None:
    with tempfile.TemporaryDirectory(prefix="h333-") as directory:
        built = build(scenario, directory)
        faked[:] = [built]
        if scenario.one is not None and built.configs.get(scenario.cid(scenario.one)):
            _check_one(scenario, built)
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
# A container's other network's entry judged in doubt with its own (by container ID).
@example(Scenario((Container("ignored", "live", networks=2),),
                  ("ipt-flush-nat", "ipt-drop-chain:0")))  # fmt: skip
# One mapping of a container being torn down, cached under a key its plugin ignores.
@example(Scenario((Container("ignored", "torn"),), ("ipt-drop-entry:0",), 0))
# One mapping of a stale container on two networks, its first network's chain flushed:
# its other network's stale chain has the port, and its repair leaves it (port_moves).
@example(Scenario((Container("iptables", "stale", networks=2),), ("ipt-flush-chain:0",), 0))
# A table a refused container and one being torn down alone want (one dual-stack: the
# IPv6 table left follows them to nftables), the IPv4 table deleted.
@example(Scenario((Container("nftables", "live", refused=True),
                   Container("nftables", "torn", dual=True)), ("nft-delete-table",)))  # fmt: skip
# One mapping of a zombie, its rules cut: written anew, and its check offered it.
@example(Scenario((Container("iptables", "zombie"),), ("ipt-drop-entry:0",), 0))
@example(Scenario((Container("nftables", "zombie"),), ("nft-drop-rules:0",), 0))
# A zombie (refused conditions, its one mapping's hostIP of a family it has no address
# of: no DNAT rule, its masquerade rules alone) beside a live container under a key its
# plugin ignores (in doubt): its `incomplete` row kept the entry's --repair.
@example(Scenario((Container("nftables", "zombie", host_ip="2001:db8::10", refused=True),
                   Container("ignored", "live")), ()))  # fmt: skip
# Derandomized, as test_argv_property: the same 60 generated nodes every run, so CI is
# never red for a node no one has seen (explore with more examples and a random seed by
# hand; the examples above pin what that found).
@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(scenarios())
def test_check_offers_what_the_repair_makes(faked, scenario: Scenario) -> None:
    _check(scenario, faked)
