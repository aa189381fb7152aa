"""iptables/access/nfnl_add.py: `add` of a new container on iptables-nft as one nf_tables
batch guarded by the generation its checks were read at, against the real kernel, the
real iptables-nft and the real plugin:

- on a node the plugin set up with each fixture's options, the batch leaves the table
  the plugin's own ADD of the next container leaves: the same iptables-save text and
  the same bytes in the kernel for every rule (counters aside); shapes it does not
  write (sctp, conditions it does not know, an external mark chain) are left to
  iptables-restore, nothing sent;
- the plugin's CHECK passes on what it wrote and its DEL removes it whole;
- one commit for every family;
- refused, nothing changed, when the node is not as the plan assumes: the chain
  exists, a shared rule or jump is gone, CNI-HOSTPORT-DNAT is gone; a shared rule with
  counters from real traffic still counts as there;
- a plugin ADD or DEL committed between the read and the batch makes the kernel refuse
  the batch (ERESTART); it is read again and applied, nothing lost or doubled; a
  plugin ADD of the same container in between ends as REFUSED (the chain is there);
- the `iptables --version` gate: another version is not written this way;
- the batch goes in only under the portmapctl lock.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from collections import Counter
from typing import Dict, List

import pytest
import realplugin as rp
from fixtures_lib import NAMES, added_first, conf
from pmctl import run, without_cache_note

from portmapctl.cni import config as cni_config
from portmapctl.host.netns import entered
from portmapctl.iptables.access import nfgen, nfmsg, nfnl_add, nfnl_rules
from portmapctl.iptables.access.nfnl_add import Outcome
from portmapctl.iptables.chains import TOPLEVEL_DNAT, wanted_chains
from portmapctl.ops.add_ahead import write_new

pytestmark = pytest.mark.netns

NET = "batchnet"


def _ports(tcp: int, udp: int) -> List[dict]:
    return [rp.port_mapping(tcp, 80), rp.port_mapping(udp, 53, "udp")]


def _plans(config) -> List:
    return [nfnl_add.plan(f, wanted_chains(config, f)) for f in config.families]


def _dumps(ns: str) -> Dict[tuple, List[bytes]]:
    """Every rule's expressions (counters zeroed), by (family, chain), in order."""
    found: Dict[tuple, List[bytes]] = {}
    with entered(ns), nfgen.open_socket() as sock:
        for family in (4, 6):
            table = rp.nat_rules(rp.save(ns, family))
            chains = [line.split()[0][1:] for line in table if line.startswith(":")]
            for chain in chains:
                found[(family, chain)] = [
                    nfnl_rules.comparable(rule.buf, rule.expressions())
                    for rule in nfmsg.dump_chain(sock, family, "nat", chain)
                ]
    return found


def _check(ns: str, cid: str, conf_: dict) -> None:
    for done in rp.run_check(ns, cid, conf_):
        assert done.returncode == 0, f"CHECK {cid}: {done.stdout}{done.stderr}"


@pytest.mark.parametrize("name", [n for n in NAMES if conf(n).get("mode", "nft") == "nft"])
def test_the_batch_leaves_what_the_plugins_add_leaves(name, host_ns):
    rp.require(rp.mode_available("nft"))
    other = rp.create_netns("pmt-batch")
    try:
        _first, second = added_first(name, (host_ns, other))
        config = cni_config.plugin_config(second, "second", name)
        plans = _plans(config)
        if any(plan is None for plan in plans):
            # Not this way: nothing sent (add writes it with iptables-restore).
            assert (
                "sctp" in str(second)
                or "externalSetMarkChain" in second
                or any(
                    # (a mask that is not a prefix: iptables prints it as an address)
                    "physdev" in c
                    or c in ("!", "--syn")
                    or ("/" in c and not c.partition("/")[2].isdigit())
                    for c in (*config.conditions_v4, *config.conditions_v6)
                )
            ), name
            return
        before = nfgen_of(host_ns)
        with entered(host_ns):
            result = nfnl_add.apply_new(plans)
        assert result.outcome is Outcome.APPLIED, result.why
        assert nfgen_of(host_ns) == nfgen.following(before)  # one commit, every family
        assert result.commit == (before, nfgen.following(before))
        done = rp.run_plugin("ADD", other, "second", second)
        assert done.returncode == 0, done.stdout + done.stderr
        for family in (4, 6):
            assert rp.nat_rules(rp.save(host_ns, family)) == rp.nat_rules(rp.save(other, family))
        assert _dumps(host_ns) == _dumps(other)
        _check(host_ns, "second", second)
    finally:
        rp.delete_netns(other)


def nfgen_of(ns: str) -> int:
    with entered(ns):
        found = nfgen.generation()
    assert found is not None
    return found


def _node(ns: str) -> Dict[str, dict]:
    """Two containers of the plugin, dual-stack."""
    confs = {}
    for i in range(2):
        confs[f"c{i}"] = rp.plugin_conf(
            NET, [f"10.88.0.{i + 2}/16", f"fd00::{i + 2}/64"], _ports(8000 + i, 9000 + i)
        )
        done = rp.run_plugin("ADD", ns, f"c{i}", confs[f"c{i}"])
        assert done.returncode == 0, done.stdout + done.stderr
    return confs


def _new(cid: str, k: int) -> tuple:
    conf_ = rp.plugin_conf(NET, [f"10.88.1.{k}/16", f"fd00::1:{k}/64"], _ports(7000 + k, 7500 + k))
    return conf_, cni_config.plugin_config(conf_, cid, "test")


def test_the_plugin_checks_and_deletes_what_the_batch_wrote(host_ns):
    rp.require(rp.mode_available("nft"))
    _node(host_ns)
    empty = {f: rp.nat_rules(rp.save(host_ns, f)) for f in (4, 6)}
    conf_, config = _new("x", 5)
    with entered(host_ns):
        result = nfnl_add.apply_new(_plans(config))
    assert result.outcome is Outcome.APPLIED, result.why
    _check(host_ns, "x", conf_)
    done = rp.run_plugin("DEL", host_ns, "x", conf_)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {f: rp.nat_rules(rp.save(host_ns, f)) for f in (4, 6)} == empty


def _refused(ns: str, config) -> nfnl_add.Result:
    # (Without iptables-save's "# Generated ... on TIME" lines: a second may tick.)
    saved = {f: rp.strip_save_comments(rp.save(ns, f)) for f in (4, 6)}
    before = nfgen_of(ns)
    with entered(ns):
        result = nfnl_add.apply_new(_plans(config))
    assert result.outcome is Outcome.REFUSED, result.why
    assert nfgen_of(ns) == before  # nothing committed
    assert {f: rp.strip_save_comments(rp.save(ns, f)) for f in (4, 6)} == saved
    return result


@pytest.mark.parametrize(
    "change, why",
    [
        (["-F", "CNI-HOSTPORT-SETMARK"], "CNI-HOSTPORT-SETMARK lacks"),
        (["-F", "CNI-HOSTPORT-MASQ"], "CNI-HOSTPORT-MASQ lacks"),
        (["-F", "POSTROUTING"], "POSTROUTING lacks"),
        (["-D", "OUTPUT", "-m", "addrtype", "--dst-type", "LOCAL", "-j", TOPLEVEL_DNAT], "OUTPUT"),
    ],
)
def test_refused_whole_when_a_shared_rule_is_gone(host_ns, change, why):
    rp.require(rp.mode_available("nft"))
    _node(host_ns)
    rp.iptables(host_ns, ["-t", "nat", *change], family=6)
    _conf, config = _new("x", 5)
    assert why in _refused(host_ns, config).why


def test_refused_whole_when_the_chain_exists_or_the_entry_chain_is_gone(host_ns):
    rp.require(rp.mode_available("nft"))
    _node(host_ns)
    conf_, config = _new("x", 5)
    assert rp.run_plugin("ADD", host_ns, "x", conf_).returncode == 0
    assert "exists" in _refused(host_ns, config).why
    # CNI-HOSTPORT-DNAT gone (with the jumps into it): the kernel refuses the append.
    for family in (4, 6):
        for chain in ("PREROUTING", "OUTPUT"):
            rp.iptables(host_ns, ["-t", "nat", "-F", chain], family=family)
    _other, config = _new("y", 6)
    rp.iptables(host_ns, ["-t", "nat", "-F", TOPLEVEL_DNAT])
    rp.iptables(host_ns, ["-t", "nat", "-X", TOPLEVEL_DNAT])
    assert _refused(host_ns, config).why


def test_a_shared_rule_with_traffic_counted_still_counts(host_ns):
    rp.require(rp.mode_available("nft"))
    _node(host_ns)
    text = rp.save(host_ns, 4)
    # The same table with every counter set, as after traffic.
    counted = text.replace("-A ", "[7:420] -A ")
    tool = rp.tool_path("iptables-restore", "nft")
    argv = ["ip", "netns", "exec", host_ns, tool, "--counters"]
    done = subprocess.run(argv, input=counted, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "[7:420]" in subprocess.run(
        ["ip", "netns", "exec", host_ns, rp.tool_path("iptables-save", "nft"), "-c", "-t", "nat"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    _conf, config = _new("x", 5)
    with entered(host_ns):
        result = nfnl_add.apply_new(_plans(config))
    assert result.outcome is Outcome.APPLIED, result.why


@pytest.mark.parametrize("race", ["other-add", "other-del", "same-container-add"])
def test_a_plugin_call_between_the_read_and_the_batch(host_ns, monkeypatch, race):
    rp.require(rp.mode_available("nft"))
    confs = _node(host_ns)
    conf_, config = _new("x", 5)
    real_probe = nfmsg.kernel_checks_generation
    calls: List[int] = []

    def plugin_then_probe(sock, read_at):
        if not calls:  # the first time only: the retry then goes through
            if race == "other-add":
                confs["y"] = _new("y", 6)[0]
                done = rp.run_plugin("ADD", host_ns, "y", confs["y"])
            elif race == "other-del":
                done = rp.run_plugin("DEL", host_ns, "c0", confs.pop("c0"))
            else:
                done = rp.run_plugin("ADD", host_ns, "x", conf_)
            assert done.returncode == 0, done.stdout + done.stderr
        calls.append(read_at)
        return real_probe(sock, read_at)

    monkeypatch.setattr(nfmsg, "kernel_checks_generation", plugin_then_probe)
    with entered(host_ns):
        result = nfnl_add.apply_new(_plans(config))
    if race == "same-container-add":
        assert result.outcome is Outcome.REFUSED and "exists" in result.why, result.why
    else:
        assert result.outcome is Outcome.APPLIED, result.why
        assert len(calls) == 2 and calls[0] != calls[1]  # refused once, read again
    confs["x"] = conf_
    for cid, one in confs.items():
        _check(host_ns, cid, one)
    for family in (4, 6):
        rules = [r for r in rp.nat_rules(rp.save(host_ns, family)) if r.startswith("-A ")]
        assert not [r for r, n in Counter(rules).items() if n > 1]
        entries = Counter(r.split()[-1] for r in rules if r.startswith(f"-A {TOPLEVEL_DNAT} "))
        assert len(entries) == len(confs) and set(entries.values()) == {2}


def test_another_iptables_version_is_not_written_this_way(host_ns, tmp_path, monkeypatch):
    rp.require(rp.mode_available("nft"))
    _node(host_ns)
    fake = tmp_path / "iptables"
    fake.write_text("#!/bin/sh\necho 'iptables v1.8.10 (nf_tables)'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/sbin:/usr/bin:/sbin:/bin")
    _conf, config = _new("x", 5)
    before = nfgen_of(host_ns)
    with entered(host_ns):
        written = write_new({f: wanted_chains(config, f) for f in config.families}, [])
    assert written is None  # iptables-restore writes it
    assert nfgen_of(host_ns) == before
    monkeypatch.setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    with entered(host_ns):
        committed: List[tuple] = []
        written = write_new({f: wanted_chains(config, f) for f in config.families}, committed)
    assert written is not None and set(written) == {4, 6} and all(written.values())
    assert committed == [(before, nfgen.following(before))]


def test_the_batch_goes_in_only_under_the_portmapctl_lock(host_ns, tmp_path):
    """Nothing records a batch the way a wrapper records iptables-restore
    (tests/kernel/test_concurrency.py): here the lock is held by the test, and the
    generation shows that add commits nothing until it has the lock, then one commit."""
    rp.require(rp.mode_available("nft"))
    _node(host_ns)
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    fd = os.open(run_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    before = nfgen_of(host_ns)
    argv = [sys.executable, "-m", "portmapctl", "add", "--netns", host_ns, "--iptables", "nft",
            "--network", NET, "--container", "x", "--ip", "10.88.1.5/16", "-p", "7005:80",
            "--cni-cache-dir", str(tmp_path / "cni"), "-v"]  # fmt: skip
    env = dict(os.environ, PORTMAPCTL_RUN_DIR=str(run_dir))
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        time.sleep(1.5)
        assert proc.poll() is None
        assert nfgen_of(host_ns) == before
    finally:
        os.close(fd)  # the lock goes with it
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "nf_tables batch: applied" in err
    assert nfgen_of(host_ns) == nfgen.following(before)


def _big_node(ns: str, containers: int) -> None:
    """`containers` plugin-shaped containers (one TCP port each, 20000 up), written in
    one restore: enough chains for add_early to fork its child."""
    from portmapctl.iptables.planner import plan_blind

    lines = []
    for i in range(containers):
        conf_ = rp.plugin_conf("bignet", [f"10.89.{i // 250}.{i % 250 + 1}/16"],
                               [rp.port_mapping(20000 + i, 80)])  # fmt: skip
        config = cni_config.plugin_config(conf_, f"big{i}", "test")
        chains = [c for c in wanted_chains(config, 4) if not c.shared]
        lines += plan_blind(chains, 4).render().splitlines()[1:-1]  # no *nat / COMMIT
    text = "*nat\n" + "\n".join(lines) + "\nCOMMIT\n"
    tool = rp.tool_path("iptables-restore", "nft")
    argv = ["ip", "netns", "exec", ns, tool, "--noflush"]
    done = subprocess.run(argv, input=text, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[:2000]


def test_on_a_big_node_the_dump_forked_as_add_starts_is_the_warnings(host_ns, tmp_path):
    """From add_early.FORK_FROM_CHAINS chains on, the shadow warning's dump runs in a
    child forked as add starts (entering --netns itself): kept when the ruleset moved
    only by add's own batch, and it warns as a dump taken under the lock would."""
    from portmapctl.ops.add_early import FORK_FROM_CHAINS

    rp.require(rp.mode_available("nft"))
    winner = rp.plugin_conf(NET, ["10.88.0.2/16"], [rp.port_mapping(7000, 80)])
    assert rp.run_plugin("ADD", host_ns, "winner", winner).returncode == 0
    _big_node(host_ns, FORK_FROM_CHAINS)
    argv = ["add", "--netns", host_ns, "--iptables", "nft", "--network", NET,
            "--container", "late", "--ip", "10.88.0.3/16", "-p", "7000:80", "-p", "7001:81",
            "--cni-cache-dir", str(tmp_path / "cni"), "-v"]  # fmt: skip
    done = run(argv)
    assert done.returncode == 0, done.stderr
    assert "nf_tables batch: applied" in done.stderr
    assert "IPv4: the shadow warning's dump, taken as add started" in done.stderr
    warnings = [line for line in without_cache_note(done.stderr).splitlines() if "warning:" in line]
    assert len(warnings) == 1 and "tcp/7000" in warnings[0] and "winner" in warnings[0]
    # The same add on a small node dumps under the lock, and warns the same.
    small = rp.create_netns("pmt-batch")
    try:
        assert rp.run_plugin("ADD", small, "winner", winner).returncode == 0
        argv[argv.index(host_ns)] = small
        again = run(argv)
        assert again.returncode == 0, again.stderr
        assert "taken as add started" not in again.stderr
        said = without_cache_note(again.stderr)
        assert [line for line in said.splitlines() if "warning:" in line] == warnings
    finally:
        rp.delete_netns(small)


def test_settling_the_generation_changes_nothing(host_ns):
    """nfgen.settled_at sends an empty batch carrying the generation: on this kernel it
    commits nothing (the generation stays, add's and gc's reads rely on it) and a
    stale number is told apart."""
    rp.require(rp.mode_available("nft"))
    _node(host_ns)
    with entered(host_ns), nfgen.open_socket() as sock:
        now = nfgen.ask(sock, 1)
        for i in range(20):
            assert nfgen.settled_at(sock, now, 10 + 4 * i)
        assert nfgen.ask(sock, 200) == now
        assert not nfgen.settled_at(sock, nfgen.following(now), 300)
        assert nfgen.generation() == now == nfgen.generation(settled=False)
