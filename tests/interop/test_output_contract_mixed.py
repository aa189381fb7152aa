"""The output contract (SPEC §3 "Output contract", "JSON output", §4) of every command,
on one real mixed node: Debian's 1.1.1 (iptables) and upstream v1.9.1 and v1.6.2
(nftables) in a fresh namespace, IPv4 and IPv6, a stale chain shadowed by a live one, a
port contested between the backends, a host-IP mapping, UDP conntrack entries.

Each command's `-o json` is validated against docs/schema/ (and its closed copy:
tests/json_schemas.py), stdout holding that document alone; `-q` prints exactly one
line; the exit code is SPEC §4's for what the document says. tests/kernel/
test_output_contract_node.py does the same per command on a plain iptables node.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Iterator, List, Tuple

import pmctl
import pytest
import realplugin as rp
import upstream
from json_schemas import validated

pytestmark = pytest.mark.netns

_pm = rp.port_mapping
NET = "podman"
IPS_A = ["10.88.0.11/16", "fd00:88::11/64"]


@pytest.fixture(autouse=True)
def _plugins() -> None:
    rp.require(upstream.available())
    rp.require(rp.plugin_available())


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Iterator[Tuple[str, Path]]:
    """The node, once for the module (every command below only reads it, or dry-runs)."""
    rp.require(upstream.available())
    rp.require(rp.plugin_available())
    cache = tmp_path_factory.mktemp("cni")
    ns = rp.create_netns("pmt-ocmix")
    try:
        ports_a = [_pm(8080, 80), _pm(5353, 53, "udp"), _pm(9000, 90, host_ip="127.0.0.1")]
        conf = rp.plugin_conf(NET, IPS_A, ports_a)
        rp.run_plugin("ADD", ns, "ipt0a", conf, check=True)
        rp.write_cni_cache(cache, NET, "ipt0a", "eth0", conf, ports_a, IPS_A)
        # Stale, and shadowed by ipt0a's earlier entry on 8080 (uncached).
        stale = rp.plugin_conf(NET, ["10.88.0.12/16"], [_pm(8080, 81), _pm(5353, 54, "udp")])
        rp.run_plugin("ADD", ns, "ipt0b", stale, check=True)
        # nftables: contests 8080 with ipt0a; a host-IP mapping in v1.6.2's own chain.
        ports_c = [_pm(8080, 82), _pm(7000, 70, "udp")]
        conf_c = upstream.nft_conf(NET, ["10.88.0.13/16"], ports_c)
        upstream.run("v1.9.1", "ADD", ns, "nft0c", conf_c, check=True)
        rp.write_cni_cache(cache, NET, "nft0c", "eth0", conf_c, ports_c, ["10.88.0.13/16"])
        ports_d = [_pm(7100, 71, host_ip="127.0.0.1"), _pm(7101, 71)]
        conf_d = upstream.nft_conf(NET, ["10.88.0.14/16"], ports_d)
        upstream.run("v1.6.2", "ADD", ns, "nft0d", conf_d, check=True)  # stale: uncached
        for address in ("192.168.50.1/32", "fd00:50::1/128"):
            subprocess.run([rp._ip(), "-n", ns, "addr", "add", address, "dev", "lo"], check=True)
        for args in (
            ["-s", "192.168.50.11", "-d", "192.168.50.1", "--sport", "4001", "--dport", "5353"],
            ["-s", "192.168.50.12", "-d", "192.168.50.1", "--sport", "4002", "--dport", "7000"],
            ["-s", "fd00:50::20", "-d", "fd00:50::1", "--sport", "4100", "--dport", "5353"],
        ):
            subprocess.run(
                [rp._ip(), "netns", "exec", ns, "conntrack", "-I", "-p", "udp", *args, "-t", "300"],
                check=True,
                capture_output=True,
            )
        yield ns, cache
    finally:
        rp.delete_netns(ns)


ADD = ["--network", "n9", "--container", "zz1", "--ip", "10.90.0.5/16", "-p", "7777:77/udp"]
# (command and options, the exit codes SPEC §4 allows for this node)
COMMANDS: List[Tuple[List[str], Tuple[int, ...]]] = [
    (["list"], (0,)),
    (["list", "--conntrack"], (0,)),
    (["list", "--status", "stale"], (0,)),
    (["list", "--backend", "nftables"], (0,)),
    (["list", "--family", "6"], (0,)),
    (["check"], (1,)),
    (["check", "--backend", "iptables"], (1,)),
    (["check", "--family", "6"], (0,)),  # (the stale and contested ones are IPv4)
    (
        ["check", "--network", NET, "--container", "ipt0a", "--ip", IPS_A[0], "--ip", IPS_A[1]]
        + ["-p", "8080:80", "-p", "5353:53/udp", "-p", "127.0.0.1:9000:90"],
        (0, 1),  # (its 8080 is contested: whether one mapping's check says so is not asked)
    ),
    (["gc", "--dry-run"], (0,)),
    (["gc", "--dry-run", "--min-age", "0"], (0,)),
    (["gc", "--dry-run", "--min-age", "0", "--backend", "nftables"], (0,)),
    (["flush-udp", "--dry-run"], (0,)),
    (["flush-udp", "--dry-run", "--stale-only"], (0,)),
    (["flush-udp", "--dry-run", "--port", "5353"], (0,)),
    (["add", "--dry-run", *ADD], (0,)),
    (["add", "--dry-run", "--backend", "nftables", *ADD], (0,)),
]


def _name(case: Tuple[List[str], Tuple[int, ...]]) -> str:
    return " ".join(case[0])[:60]


@pytest.mark.parametrize("case", COMMANDS, ids=_name)
def test_every_command_keeps_the_output_contract_on_a_mixed_node(mixed, case) -> None:
    ns, cache = mixed
    argv, codes = case
    common = ["--netns", ns, "--cni-cache-dir", str(cache)]
    done = pmctl.run([*argv, *common, "-o", "json"])
    assert done.returncode in codes, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    # One document and nothing else on stdout (json.loads refuses any trailing text).
    doc = validated(argv[0], done.stdout)
    assert doc["schema"] == 2 and doc["cache"]["present"] is True
    if argv[0] == "check":
        assert doc["healthy"] is (done.returncode == 0)
    if argv[0] == "flush-udp":
        assert doc["count"] == len(doc["deleted"]) and doc["dry_run"] is True
    quiet = pmctl.run([*argv, *common, "-q"])
    assert quiet.returncode == done.returncode, quiet.stdout + quiet.stderr
    assert len(quiet.stdout.splitlines()) == 1, quiet.stdout
    table = pmctl.run([*argv, *common])
    assert table.returncode == done.returncode
    assert all(line == line.rstrip() for line in table.stdout.splitlines()), table.stdout
    # The table's summary is -q's line (check's says its fixes are above it).
    last = table.stdout.splitlines()[-1].removesuffix(" (fixes above)")
    assert last == quiet.stdout.strip(), (table.stdout, quiet.stdout)
