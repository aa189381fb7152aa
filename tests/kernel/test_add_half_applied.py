"""A dual-stack `add` whose IPv4 transaction goes in and whose IPv6 one then fails.

The plugin's ADD (every version: plugins/meta/portmap/main.go cmdAdd) writes IPv4,
flushes IPv4's UDP conntrack entries of the mapped ports and sets route_localnet on
the interface towards the container, and only then tries IPv6: an IPv6 failure leaves
IPv4 working. add raised before its side effects, so the IPv4 mapping on the node had
neither (localhost:HOSTPORT to the container broken, UDP flows begun before it still
going where they went) until add was run again. The failures are real: the real
ip6tables-MODE-restore refused, killed or hung by a wrapper first on PATH (as in
test_faults.py), or the admin's setmark chain missing from IPv6's nat table alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List

import pytest
import realplugin as rp
from flush_udp_helpers import ct_args, ct_load, ct_sports, ns_run, route_localnet
from pmctl import assert_error, run

from portmapctl.iptables.chains import chain_name

CHAIN = chain_name("mynet", "new1")

# How the IPv6 restore fails (bash, after the transaction is read; $REAL the real one).
FAULTS = {
    "refused": 'echo "ip6tables-restore: line 2 failed" >&2\nexit 1',
    "killed": "kill -KILL $$",
    "hung": "exec sleep 600",
}
# The one line each ends with: its exit code and words (unchanged by the side effects).
LINES = {
    "refused": (1, "IPv6: ", "(IPv4 was applied)"),
    "killed": (1, "IPv6: gave up after", "was killed by SIGKILL", "(IPv4 was applied)"),
    "hung": (3, "IPv6: ", "did not finish within 1 s", "may have gone in", "(IPv4 was applied)"),
}


def _node(ns: str) -> None:
    """The container network behind a veth (a bridge plugin's host side), its knob off,
    and UDP flows to the mapped port from before the mapping in both families."""
    ns_run(ns, "ip", "link", "add", "cnihost", "type", "veth", "peer", "name", "cnipeer")
    ns_run(ns, "ip", "addr", "add", "10.88.0.1/16", "dev", "cnihost")
    for device in ("cnihost", "cnipeer"):
        ns_run(ns, "ip", "link", "set", device, "up")
    assert route_localnet(ns, "cnihost") == "0"
    ct_load(ns, [
        ct_args("192.0.2.1", "10.0.0.1", 40001, 5353),  # IPv4, never DNATed: goes
        ct_args("2001:db8::1", "fd00::1", 40002, 5353),  # IPv6: nothing of it went in
    ])  # fmt: skip


def _args(ns: str, mode: str, *extra: str) -> List[str]:
    return ["add", "--netns", ns, "--iptables", mode, "--network", "mynet", "--container",
            "new1", "--ip", "10.88.0.5/16", "--ip", "fd00::5/64", "-p", "5353:53/udp",
            "--cni-cache-dir", str(Path("/nonexistent-h315")), *extra]  # fmt: skip


def _failing_ip6_restore(tmp_path: Path, mode: str, fault: str) -> Dict[str, str]:
    folder = tmp_path / "wrap"
    folder.mkdir()
    tool = f"ip6tables-{mode}-restore"
    script = folder / tool
    script.write_text(f"#!/bin/bash\ncat > /dev/null\n{FAULTS[fault]}\n")
    script.chmod(0o755)
    # (PORTMAPCTL_NFT_BATCH=0: on iptables-nft, add writes through the restore, not one
    # nf_tables batch, whose refusals are test_nfnl_add.py's.)
    return {"PATH": f"{folder}:{os.environ['PATH']}", "PORTMAPCTL_IPTABLES_TIMEOUT": "1",
            "PORTMAPCTL_NFT_BATCH": "0"}  # fmt: skip


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_the_ipv4_half_gets_route_localnet_and_its_udp_flush(
    host_ns, iptables_mode, tmp_path, fault
):
    _node(host_ns)
    env = _failing_ip6_restore(tmp_path, iptables_mode, fault)
    done = run(_args(host_ns, iptables_mode), env=env)
    assert_error(done, *LINES[fault])
    assert CHAIN in rp.save(host_ns, 4, iptables_mode)  # IPv4 went in ...
    assert CHAIN not in rp.save(host_ns, 6, iptables_mode)  # ... IPv6 did not
    assert route_localnet(host_ns, "cnihost") == "1"
    assert route_localnet(host_ns, "lo") == "0"
    # As the plugin: the IPv4 flow begun before the rules goes; IPv6 had no rule go in.
    assert ct_sports(host_ns) == {40002}


def test_a_setmark_chain_missing_from_ipv6_alone_leaves_ipv4_working(host_ns, iptables_mode):
    """The admin's KUBE-MARK-MASQ in the IPv4 nat table alone (exit 3, `(IPv4 was
    applied)`): the IPv4 half gets its side effects; the dry run before it, which
    applies nothing, sets nothing and flushes nothing."""
    _node(host_ns)
    rp.iptables(host_ns, ["-t", "nat", "-N", "KUBE-MARK-MASQ"], family=4, mode=iptables_mode)
    args = _args(host_ns, iptables_mode, "--external-setmark-chain", "KUBE-MARK-MASQ")
    named = "its --external-setmark-chain KUBE-MARK-MASQ does not exist in the IPv6 nat table"
    done = run([*args, "--dry-run"])
    assert_error(done, 3, "cannot add mynet/new1: " + named)
    assert "applied" not in done.stderr
    assert route_localnet(host_ns, "cnihost") == "0"
    assert ct_sports(host_ns) == {40001, 40002}
    done = run(args)
    assert_error(done, 3, "cannot add mynet/new1: " + named, "(IPv4 was applied)")
    assert route_localnet(host_ns, "cnihost") == "1"
    assert ct_sports(host_ns) == {40002}


def test_no_flush_udp_keeps_the_flows_of_the_half_that_went_in(host_ns, iptables_mode, tmp_path):
    _node(host_ns)
    env = _failing_ip6_restore(tmp_path, iptables_mode, "refused")
    done = run(_args(host_ns, iptables_mode, "--no-flush-udp"), env=env)
    assert_error(done, *LINES["refused"])
    assert route_localnet(host_ns, "cnihost") == "1"
    assert ct_sports(host_ns) == {40001, 40002}
