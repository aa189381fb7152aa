"""A dual-stack `add` whose IPv4 transaction goes in and whose IPv6 one then fails.

The plugin's ADD (every version: plugins/meta/portmap/main.go cmdAdd) writes IPv4,
flushes IPv4's UDP conntrack entries of the mapped ports and sets route_localnet on
the interface towards the container, and only then tries IPv6: an IPv6 failure leaves
IPv4 working. add raised before its side effects, so the IPv4 mapping on the node had
neither (localhost:HOSTPORT to the container broken, UDP flows begun before it still
going where they went) until add was run again. The failures are real: the real
ip6tables-MODE-restore refused, killed or hung by a wrapper first on PATH (as in
test_faults.py), or the admin's setmark chain missing from IPv6's nat table alone.

Each case runs on every way add writes (`PATH`): iptables-nft's default, one nf_tables
batch for both families (ops/add_ahead.write_new), and iptables-restore
(PORTMAPCTL_NFT_BATCH=0: the write without a read, add_ahead.write_blind, then the
read and plan); legacy has only the latter. The batch goes in whole or not at all, so
a family can fail after another went in only once the batch was refused: the node is
the plugin's (another container on it, so the batch is sent) with the failing
family's PREROUTING jump gone, which refuses the batch for that family alone
(checked at -v) and leaves each family to its iptables-restore, the failing one
wrapped. When the IPv4 half is the one that fails, nothing of IPv4 is flushed and
route_localnet is left as it was.
"""

from __future__ import annotations

import os
from pathlib import Path
from subprocess import CompletedProcess
from typing import Dict, List, Optional, Tuple

import pytest
import realplugin as rp
from flush_udp_helpers import ct_args, ct_load, ct_sports, ns_run, route_localnet
from pmctl import assert_error, run

from portmapctl.iptables.chains import chain_name

CHAIN = chain_name("mynet", "new1")

# How a restore fails (bash, after the transaction is read).
FAULTS = {
    "refused": 'echo "iptables-restore: line 2 failed" >&2\nexit 1',
    "killed": "kill -KILL $$",
    "hung": "exec sleep 600",
}
# The exit code and words of the one line each ends with (unchanged by the side effects).
LINES = {
    "refused": (1, "gave up after", "refused the transaction"),
    "killed": (1, "gave up after", "was killed by SIGKILL"),
    "hung": (3, "did not finish within 1 s", "may have gone in"),
}
SETMARK = "KUBE-MARK-MASQ"


@pytest.fixture(
    params=[("nft", "batch"), ("nft", "restore"), ("legacy", "restore")],
    ids=["nft-batch", "nft-restore", "legacy-restore"],
)
def path(request: pytest.FixtureRequest) -> Tuple[rp.Mode, str]:
    """(the iptables flavour, how add writes a new container there)."""
    mode, way = request.param
    if rp.netns_available()[0]:
        rp.require(rp.mode_available(mode))
    return mode, way


def _node(ns: str, mode: rp.Mode, broken: Optional[int] = None) -> None:
    """The plugin's node (another container on it, dual-stack), `broken`'s PREROUTING
    jump to CNI-HOSTPORT-DNAT gone (the batch refused for that family alone), the
    container network behind a veth (a bridge plugin's host side), its knob off, and
    UDP flows to the mapped port from before the mapping in both families."""
    conf = rp.plugin_conf("mynet", ["10.88.0.2/16", "fd00::2/64"], [rp.port_mapping(8000, 80)])
    done = rp.run_plugin("ADD", ns, "old1", conf, mode=mode)
    assert done.returncode == 0, done.stdout + done.stderr
    if broken is not None:
        jump = ["-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"]
        rp.iptables(ns, ["-t", "nat", "-D", "PREROUTING", *jump], family=broken, mode=mode)
    ns_run(ns, "ip", "link", "add", "cnihost", "type", "veth", "peer", "name", "cnipeer")
    ns_run(ns, "ip", "addr", "add", "10.88.0.1/16", "dev", "cnihost")
    for device in ("cnihost", "cnipeer"):
        ns_run(ns, "ip", "link", "set", device, "up")
    assert route_localnet(ns, "cnihost") == "0"
    ct_load(ns, [
        ct_args("192.0.2.1", "10.0.0.1", 40001, 5353),  # IPv4
        ct_args("2001:db8::1", "fd00::1", 40002, 5353),  # IPv6
    ])  # fmt: skip


def _args(ns: str, mode: str, *extra: str) -> List[str]:
    return ["add", "--netns", ns, "--iptables", mode, "--network", "mynet", "--container",
            "new1", "--ip", "10.88.0.5/16", "--ip", "fd00::5/64", "-p", "5353:53/udp",
            "--cni-cache-dir", str(Path("/nonexistent-h315")), *extra]  # fmt: skip


def _env(way: str) -> Dict[str, str]:
    return {"PORTMAPCTL_NFT_BATCH": "1" if way == "batch" else "0"}


def _failing_restore(
    tmp_path: Path, mode: str, way: str, family: int, fault: str
) -> Dict[str, str]:
    folder = tmp_path / "wrap"
    folder.mkdir()
    tool = f"{'ip6tables' if family == 6 else 'iptables'}-{mode}-restore"
    script = folder / tool
    script.write_text(f"#!/bin/bash\ncat > /dev/null\n{FAULTS[fault]}\n")
    script.chmod(0o755)
    return {"PATH": f"{folder}:{os.environ['PATH']}", "PORTMAPCTL_IPTABLES_TIMEOUT": "1",
            **_env(way)}  # fmt: skip


def _failed(done: CompletedProcess, way: str, code: int, *words: str) -> str:
    """A -v run (its details, then the one error line, last): the exit code, the line's
    words, and the way add wrote. The line is returned."""
    __tracebackhide__ = True
    assert done.returncode == code, done.stderr
    assert done.stdout == ""
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("portmapctl: error: "), line
    for word in words:
        assert word in line, (word, line)
    if way == "batch":
        assert "nf_tables batch: refused (IPv" in done.stderr, done.stderr
    else:
        assert "nf_tables batch" not in done.stderr, done.stderr
    return line


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_the_ipv4_half_gets_route_localnet_and_its_udp_flush(host_ns, path, tmp_path, fault):
    mode, way = path
    _node(host_ns, mode, broken=6)
    env = _failing_restore(tmp_path, mode, way, 6, fault)
    done = run([*_args(host_ns, mode), "-v"], env=env)
    code, *words = LINES[fault]
    _failed(done, way, code, "IPv6: ", *words, "(IPv4 was applied)")
    if way == "batch":
        assert "refused (IPv6: PREROUTING lacks a rule" in done.stderr
    assert CHAIN in rp.save(host_ns, 4, mode)  # IPv4 went in ...
    assert CHAIN not in rp.save(host_ns, 6, mode)  # ... IPv6 did not
    assert route_localnet(host_ns, "cnihost") == "1"
    assert route_localnet(host_ns, "lo") == "0"
    # As the plugin: the IPv4 flow begun before the rules goes; IPv6 had no rule go in.
    assert ct_sports(host_ns) == {40002}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_failing_ipv4_half_flushes_nothing_of_ipv4_and_sets_nothing(
    host_ns, path, tmp_path, fault
):
    """IPv4 fails: route_localnet stays off, IPv4's flow stays. The plugin's ADD then
    never tries IPv6, and neither does add through the batch (refused whole) or
    legacy; on iptables-nft's restore path the write without a read has put IPv6 in
    already (add_ahead.write_blind tries each family), and only where it did (not
    after a hung restore, which ends the writes) IPv6 gets its flush and is named."""
    mode, way = path
    _node(host_ns, mode, broken=4)
    env = _failing_restore(tmp_path, mode, way, 4, fault)
    done = run([*_args(host_ns, mode), "-v"], env=env)
    code, *words = LINES[fault]
    line = _failed(done, way, code, "IPv4: ", *words)
    if way == "batch":
        assert "refused (IPv4: PREROUTING lacks a rule" in done.stderr
    assert CHAIN not in rp.save(host_ns, 4, mode)
    assert route_localnet(host_ns, "cnihost") == "0"
    ipv6_ahead = mode == "nft" and way == "restore" and fault != "hung"
    assert (CHAIN in rp.save(host_ns, 6, mode)) == ipv6_ahead
    assert ("(IPv6 was applied)" in line) == ipv6_ahead
    assert ct_sports(host_ns) == ({40001} if ipv6_ahead else {40001, 40002})


def test_a_setmark_chain_missing_from_ipv6_alone_leaves_ipv4_working(host_ns, path):
    """The admin's KUBE-MARK-MASQ in the IPv4 nat table alone (exit 3, `(IPv4 was
    applied)`): the IPv4 half gets its side effects; the dry run before it, which
    applies nothing, sets nothing and flushes nothing. (The batch does not write a rule
    jumping to an external chain: on iptables-nft both ways write it through
    iptables-restore, which -v shows.)"""
    mode, way = path
    _node(host_ns, mode)
    rp.iptables(host_ns, ["-t", "nat", "-N", SETMARK], family=4, mode=mode)
    args = _args(host_ns, mode, "--external-setmark-chain", SETMARK)
    named = f"its --external-setmark-chain {SETMARK} does not exist in the IPv6 nat table"
    done = run([*args, "--dry-run"], env=_env(way))
    assert_error(done, 3, "cannot add mynet/new1: " + named)
    assert "applied" not in done.stderr
    assert route_localnet(host_ns, "cnihost") == "0"
    assert ct_sports(host_ns) == {40001, 40002}
    done = run([*args, "-v"], env=_env(way))
    assert done.returncode == 3, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(f"portmapctl: error: cannot add mynet/new1: {named}"), line
    assert line.endswith("(IPv4 was applied)"), line
    if way == "batch":
        assert "a rule nfnl_rules does not write" in done.stderr, done.stderr
    assert CHAIN in rp.save(host_ns, 4, mode)
    assert route_localnet(host_ns, "cnihost") == "1"
    assert ct_sports(host_ns) == {40002}


def test_no_flush_udp_keeps_the_flows_of_the_half_that_went_in(host_ns, path, tmp_path):
    mode, way = path
    _node(host_ns, mode, broken=6)
    env = _failing_restore(tmp_path, mode, way, 6, "refused")
    done = run([*_args(host_ns, mode, "--no-flush-udp"), "-v"], env=env)
    _failed(done, way, 1, "IPv6: ", "(IPv4 was applied)")
    assert route_localnet(host_ns, "cnihost") == "1"
    assert ct_sports(host_ns) == {40001, 40002}
