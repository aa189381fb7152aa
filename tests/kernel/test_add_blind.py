"""`add` without reading the table (planner.plan_blind; ops/add._apply_blind), against
the real kernel and the real plugin:

- the result is byte for byte what the read-and-plan path (and the plugin) makes;
- it is refused whole, and the read-and-plan path takes over, when the node is not as
  assumed: no shared chains yet, the container's chain exists (a second add), a shared
  rule gone; nothing is doubled;
- a plugin ADD or DEL between planning and applying is seen at commit, never lost or
  duplicated; and with the plugin ADDing/DELing other containers all along, every
  container portmapctl added and every one the plugin has passes the plugin's CHECK,
  with exactly one copy of each entry rule.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from typing import Dict, List

import pytest
import realplugin as rp
from pmctl import run, without_cache_note

from portmapctl.cni import config as cni_config
from portmapctl.errors import ApplyFailed
from portmapctl.host.netns import entered
from portmapctl.iptables.access import open_backend
from portmapctl.iptables.chains import TOPLEVEL_DNAT, wanted_chains
from portmapctl.iptables.planner import plan_blind
from portmapctl.iptables.ruleset import rule_target

pytestmark = pytest.mark.netns

NET = "blindnet"


def _ports(tcp: int, udp: int) -> List[dict]:
    return [
        {"hostPort": tcp, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": udp, "containerPort": 53, "protocol": "udp"},
    ]


def _plugin_add(ns: str, mode: str, cid: str, ip: str, tcp: int, udp: int) -> dict:
    conf = rp.plugin_conf(NET, [ip], _ports(tcp, udp))
    done = rp.run_plugin("ADD", ns, cid, conf, mode=mode)
    assert done.returncode == 0, done.stdout + done.stderr
    return conf


def _pm_add(ns: str, mode: str, cid: str, ip: str, tcp: int, udp: int, *extra: str):
    args = ["add", "--netns", ns, "--iptables", mode, "--network", NET, "--container", cid]
    args += ["--ip", ip, "-p", f"{tcp}:80", "-p", f"{udp}:53/udp", "-o", "json", *extra]
    return run(args)


def _check(ns: str, mode: str, cid: str, conf: dict) -> None:
    for done in rp.run_check(ns, cid, conf, mode=mode):
        assert done.returncode == 0, f"CHECK {cid}: {done.stdout}{done.stderr}"


def _save(ns: str, mode: str) -> Dict[int, List[str]]:
    return {f: rp.nat_rules(rp.save(ns, f, mode)) for f in (4, 6)}


def _no_duplicates(ns: str, mode: str) -> None:
    for family in (4, 6):
        rules = [r for r in rp.nat_rules(rp.save(ns, family, mode)) if r.startswith("-A ")]
        doubled = [r for r, n in Counter(rules).items() if n > 1]
        assert not doubled, doubled


def test_blind_add_makes_what_the_plugin_makes(host_ns, iptables_mode):
    """Two nodes with the same containers; the next one added by portmapctl (blind,
    on a node the plugin set up) in one and by the plugin in the other."""
    other = rp.create_netns("pmt-blind")
    try:
        for ns in (host_ns, other):
            for i in range(3):
                _plugin_add(ns, iptables_mode, f"c{i}", f"10.88.0.{i + 2}/16", 8000 + i, 9000 + i)
        done = _pm_add(host_ns, iptables_mode, "new", "10.88.0.9/16", 8009, 9009)
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        assert doc["changed"] is True
        assert "-C " not in json.dumps(doc)  # the checks are not shown as changes
        conf = _plugin_add(other, iptables_mode, "new", "10.88.0.9/16", 8009, 9009)
        assert _save(host_ns, iptables_mode) == _save(other, iptables_mode)
        _check(host_ns, iptables_mode, "new", conf)
    finally:
        rp.delete_netns(other)


def test_refused_blind_plan_falls_back_and_stays_idempotent(host_ns, iptables_mode):
    # An empty node: no shared chains, so the blind plan is refused; the full path works.
    done = _pm_add(host_ns, iptables_mode, "first", "10.88.0.2/16", 8000, 9000)
    assert done.returncode == 0, done.stderr
    after_first = _save(host_ns, iptables_mode)
    # A second add of the same container: -N refused, the full path changes nothing.
    again = _pm_add(host_ns, iptables_mode, "first", "10.88.0.2/16", 8000, 9000)
    assert again.returncode == 0 and json.loads(again.stdout)["changed"] is False
    assert _save(host_ns, iptables_mode) == after_first
    # A shared rule gone (an admin's edit): refused, and the full path puts it back.
    rp.iptables(host_ns, ["-t", "nat", "-F", "CNI-HOSTPORT-SETMARK"], mode=iptables_mode)
    done = _pm_add(host_ns, iptables_mode, "second", "10.88.0.3/16", 8001, 9001)
    assert done.returncode == 0, done.stderr
    conf = rp.plugin_conf(NET, ["10.88.0.3/16"], _ports(8001, 9001))
    _check(host_ns, iptables_mode, "second", conf)
    # The jump into CNI-HOSTPORT-DNAT gone: the transaction's -C refuses it, and the
    # full path puts it back.
    jump = ["-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"]
    rp.iptables(host_ns, ["-t", "nat", "-D", "PREROUTING", *jump], mode=iptables_mode)
    done = _pm_add(host_ns, iptables_mode, "third", "10.88.0.4/16", 8002, 9002)
    assert done.returncode == 0, done.stderr
    _check(
        host_ns, iptables_mode, "third", rp.plugin_conf(NET, ["10.88.0.4/16"], _ports(8002, 9002))
    )
    _check(host_ns, iptables_mode, "second", conf)
    _no_duplicates(host_ns, iptables_mode)


def _mapping(cid: str, ip: str, tcp: int, udp: int):
    conf = rp.plugin_conf(NET, [ip], _ports(tcp, udp))
    return cni_config.plugin_config(conf, cid, "test")


@pytest.mark.parametrize("race", ["same-container-add", "other-add", "other-del"])
def test_a_plugin_call_between_planning_and_applying(host_ns, iptables_mode, race):
    mode = iptables_mode
    confs = {f"c{i}": _plugin_add(host_ns, mode, f"c{i}", f"10.88.0.{i + 2}/16", 8000 + i, 9000 + i)
             for i in range(2)}  # fmt: skip
    txn = plan_blind(wanted_chains(_mapping("x", "10.88.0.9/16", 8009, 9009), 4), 4)
    if race == "same-container-add":
        confs["x"] = _plugin_add(host_ns, mode, "x", "10.88.0.9/16", 8009, 9009)
    elif race == "other-add":
        confs["y"] = _plugin_add(host_ns, mode, "y", "10.88.0.8/16", 8008, 9008)
    else:
        done = rp.run_plugin("DEL", host_ns, "c0", confs.pop("c0"), mode=mode)
        assert done.returncode == 0
    with entered(host_ns):
        backend = open_backend(mode)
        if race == "same-container-add":
            with pytest.raises(ApplyFailed):  # -N of the chain the plugin made
                backend.apply(txn)
        else:
            backend.apply(txn)  # the plugin's change does not touch what it checks
            confs["x"] = rp.plugin_conf(NET, ["10.88.0.9/16"], _ports(8009, 9009))
        entries = Counter(rule_target(r) for r in backend.read(4).rules(TOPLEVEL_DNAT))
    for cid, conf in confs.items():
        _check(host_ns, mode, cid, conf)
    assert set(entries.values()) == {2}  # tcp + udp, once each, for every container
    assert len(entries) == len(confs)
    _no_duplicates(host_ns, mode)


def test_adds_while_the_plugin_adds_and_deletes(host_ns):
    """portmapctl adds 12 containers one after another while the plugin ADDs, CHECKs
    and DELs others in a loop; afterwards every portmapctl container and every plugin
    container still there passes the plugin's CHECK, exactly once each."""
    mode = "nft"
    if not rp.mode_available(mode)[0]:
        pytest.skip(rp.mode_available(mode)[1])
    _plugin_add(host_ns, mode, "base", "10.88.0.2/16", 7999, 8999)
    tag = uuid.uuid4().hex[:4]
    stop = threading.Event()
    failures: List[str] = []
    plugin_live: Dict[str, dict] = {}

    def plugin_loop() -> None:
        i = 0
        while not stop.is_set():
            cid = f"p{i}-{tag}"
            conf = rp.plugin_conf(NET, [f"10.88.1.{i % 250 + 1}/16"], _ports(20000 + i, 21000 + i))
            done = rp.run_plugin("ADD", host_ns, cid, conf, mode=mode)
            if done.returncode:
                failures.append(f"ADD {cid}: {done.stdout}{done.stderr}")
                return
            plugin_live[cid] = conf
            if len(plugin_live) > 3:
                oldest = next(iter(plugin_live))
                done = rp.run_plugin("DEL", host_ns, oldest, plugin_live.pop(oldest), mode=mode)
                if done.returncode:
                    failures.append(f"DEL {oldest}: {done.stdout}{done.stderr}")
            i += 1

    thread = threading.Thread(target=plugin_loop)
    thread.start()
    ours: Dict[str, dict] = {}
    try:
        for k in range(12):
            cid = f"m{k}-{tag}"
            done = _pm_add(host_ns, mode, cid, f"10.88.2.{k + 1}/16", 30000 + k, 31000 + k)
            if done.returncode:
                failures.append(f"portmapctl add {cid}: {done.stderr}")
            ours[cid] = rp.plugin_conf(NET, [f"10.88.2.{k + 1}/16"], _ports(30000 + k, 31000 + k))
    finally:
        stop.set()
        thread.join()
    assert not failures, failures
    for cid, conf in {**ours, **plugin_live}.items():
        _check(host_ns, mode, cid, conf)
    _no_duplicates(host_ns, mode)
    with entered(host_ns):
        entries = Counter(rule_target(r) for r in open_backend(mode).read(4).rules(TOPLEVEL_DNAT))
    assert len(entries) == 1 + len(ours) + len(plugin_live)
    assert set(entries.values()) == {2}


def _warnings(done) -> List[str]:
    assert done.returncode == 0, done.stdout + done.stderr
    said = without_cache_note(done.stderr)
    return [line for line in said.splitlines() if line.startswith("portmapctl: warning:")]


def test_shadow_warning_without_a_save_says_what_the_whole_table_says(host_ns, iptables_mode):
    """Written without a read, add lists CNI-HOSTPORT-DNAT alone (and the chains its
    rules for the same port numbers jump to): the warnings are those of the dry run,
    which reads and plans against the whole table. Around the new mappings: a port
    taken on every address, one taken on one host IP only, and a port whose number
    contains the new one's (18080 holds "8080": found by text, then told apart). A port
    taken on one host IP shadows no mapping for every address (it still gets the rest)."""
    taken = [
        ("a", "10.88.0.2/16", [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
        ("b", "10.88.0.3/16", [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]),
        (
            "c",
            "10.88.0.4/16",
            [{"hostPort": 9090, "containerPort": 90, "protocol": "tcp", "hostIP": "192.0.2.1"}],
        ),
    ]
    for cid, ip, ports in taken:
        conf = rp.plugin_conf(NET, [ip], ports)
        done = rp.run_plugin("ADD", host_ns, cid, conf, mode=iptables_mode)
        assert done.returncode == 0, done.stdout + done.stderr
    cases = [
        ("d", ["-p", "8080:80"], 1),  # shadowed by a
        ("e", ["-p", "8081:80", "-p", "18081:81/udp"], 0),
        ("f", ["-p", "198.51.100.1:9090:90"], 0),  # another host IP than c's
        # Every address: c takes 192.0.2.1 alone first, g gets the rest: not shadowed.
        ("g", ["-p", "9090:90"], 0),
        ("h", ["-p", "80:80"], 0),  # a number inside others' (8080, 18080)
    ]
    for cid, ports, expected in cases:
        args = ["add", "--netns", host_ns, "--iptables", iptables_mode, "--network", NET]
        args += ["--container", cid, "--ip", f"10.88.1.{ord(cid)}/16", *ports]
        dry = _warnings(run([*args, "--dry-run"]))
        assert len(dry) == expected, dry
        assert _warnings(run(args)) == dry
    _no_duplicates(host_ns, iptables_mode)


@pytest.mark.parametrize("way", ["batch", "restore"])
@pytest.mark.parametrize("ipv6_half", ["before-ipv6-write", "after-ipv6-write"])
def test_a_dual_stack_add_whose_ipv4_write_is_refused_writes_ipv6_once_from_a_fresh_look(
    host_ns, monkeypatch, tmp_path, way, ipv6_half
):
    """The plugin's ADD of the same dual-stack container lands between add's look at
    the node and its IPv4 write (its IPv4 half: iptables, then ip6tables), so that
    write is refused (the chain is there). IPv6 is then written once and only from
    what holds at its own write: its restore carries its own checks (-N, -C) or add
    reads IPv6 afresh after the refusal, never a plan from the look before; with the
    plugin's IPv6 half landing before that write (refused too, nothing doubled) or
    after it (the plugin's ADD tears its chain down and makes it again). On iptables-nft,
    through add's nf_tables batch (refused whole at the generation it read) and through
    iptables-restore (PORTMAPCTL_NFT_BATCH=0)."""
    from portmapctl.core.backend import Backend
    from portmapctl.iptables.access import nfnl_add
    from portmapctl.iptables.access.restore import RestoreBackend
    from portmapctl.ops.add import add
    from portmapctl.ops.node import NodeOptions, opened

    mode = "nft"
    if not rp.mode_available(mode)[0]:
        pytest.skip(rp.mode_available(mode)[1])
    monkeypatch.setenv("PORTMAPCTL_NFT_BATCH", "1" if way == "batch" else "0")
    # c0, dual-stack: the shared chains in both families (IPv6's write goes in blind).
    c0 = rp.plugin_conf(NET, ["10.88.0.2/16", "fd00:88::2/64"], _ports(8000, 9000))
    assert rp.run_plugin("ADD", host_ns, "c0", c0, mode=mode).returncode == 0
    conf = rp.plugin_conf(NET, ["10.88.0.9/16", "fd00:88::9/64"], _ports(8009, 9009))

    def plugin_half(family: int) -> None:
        half = rp.narrow_conf(conf, family)
        done = rp.run_plugin("ADD", host_ns, "x", half, mode=mode, family=family)
        assert done.returncode == 0, done.stdout + done.stderr

    # Each write add tries (the batch, right before it is sent; a restore) first lets
    # the next plugin step land.
    races = [lambda: plugin_half(4)]
    if ipv6_half == "before-ipv6-write":
        races.append(lambda: plugin_half(6))
    went_in: List[int] = []  # the families of the restores that went in
    real_apply, real_apply_new = RestoreBackend.apply, nfnl_add.apply_new

    def racing_apply(self, txn):
        if races:
            races.pop(0)()
        real_apply(self, txn)
        went_in.append(txn.family)

    def racing_apply_new(plans, pinned=lambda: True):
        def raced() -> bool:
            if races:
                races.pop(0)()
            return pinned()

        return real_apply_new(plans, raced)

    monkeypatch.setattr(RestoreBackend, "apply", racing_apply)
    monkeypatch.setattr(nfnl_add, "apply_new", racing_apply_new)
    config = cni_config.plugin_config(conf, "x", "eth0")
    options = NodeOptions(
        iptables=mode, netns=host_ns, cache_dirs=(str(tmp_path),), backend=Backend.IPTABLES
    )
    with opened(options, write=True) as node:
        result = add(node, config, flush_udp=False)
    assert not races  # (every plugin step landed where it was meant to)
    if ipv6_half == "after-ipv6-write":
        assert set(result.transactions) == {6}  # IPv4 the plugin's, IPv6 add's
        plugin_half(6)
    else:
        assert not result.changed  # the plugin's ADD made it all
    assert went_in.count(6) <= 1 and 4 not in went_in
    _check(host_ns, mode, "x", conf)
    _no_duplicates(host_ns, mode)
    saved = _save(host_ns, mode)
    for family in (4, 6):
        entries = [r for r in saved[family] if r.startswith("-A CNI-HOSTPORT-DNAT ")]
        assert len(entries) == 4, entries  # tcp + udp of c0 and x, once each
    # The same as the plugin's ADD alone leaves, in another namespace.
    other = rp.create_netns("pmt-blind")
    try:
        for cid, c in (("c0", c0), ("x", conf)):
            done = rp.run_plugin("ADD", other, cid, c, mode=mode)
            assert done.returncode == 0, done.stdout + done.stderr
        assert _save(other, mode) == saved
    finally:
        rp.delete_netns(other)
