"""The check and `check --repair` of one mapping (`--container ID --cni-config FILE
--ifname IF`) of a zombie: its cache entry names a network namespace that is gone (the
runtime forgot the container without a CNI DEL), its rules cut. The node's repair
leaves a zombie alone (its address may be handed to the next container); the
one-mapping repair made the given mapping all the same: Debian's 1.1.1 chain's entry
rule written anew after `iptables -t nat -F CNI-HOSTPORT-DNAT` (exit 0), v1.9.1's lost
DNAT rule appended again (exit 0), a host port sent to a dead container's address, and
its check offered that `--repair`. Now it writes nothing, says why in the zombie row's
words, exit 1, and the check offers no `--repair` (real plugins, iptables-nft and
legacy, nftables)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

import pmctl
import pytest
import realplugin as rp
import upstream

pytestmark = pytest.mark.netns

_WHY = "its network namespace /run/netns/{netns} is gone"


@pytest.fixture
def zombie_ns() -> Iterator[tuple[str, str]]:
    """The node's namespace, and the name of the container's, deleted (without a DEL)."""
    host = rp.create_netns("pmt-zom")
    gone = rp.create_netns("pmt-zom-ctr")
    rp.delete_netns(gone)
    try:
        yield host, gone
    finally:
        rp.delete_netns(host)


def _given(tmp_path: Path, conf: dict, host: str, extra: list[str]) -> list[str]:
    stdin = tmp_path / "zombie.json"
    stdin.write_text(json.dumps(conf))
    return ["--netns", host, "--cni-cache-dir", str(tmp_path), "--family", "4", *extra,
            "-o", "json", "--container", "zombie", "--cni-config", str(stdin),
            "--ifname", "eth0"]  # fmt: skip


def _healthy(args: list[str], rules: Callable[[], object]) -> None:
    """Its rules all there: healthy (as the plugin's CHECK says), and its repair writes
    nothing and names nothing (it said `could not repair` of a healthy chain)."""
    before = rules()
    for command in (["check"], ["check", "--repair"]):
        done = pmctl.run([*command, *args])
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["problems"] == [], done.stdout
        assert "could not repair" not in done.stderr, done.stderr
    assert rules() == before


def _left_alone(args: list[str], rules: Callable[[], object], why: str) -> None:
    """The check offers no --repair, and the repair (twice) writes nothing and names it."""
    checked = pmctl.run(["check", *args])
    assert checked.returncode == 1, checked.stdout + checked.stderr
    rows = json.loads(checked.stdout)["problems"]
    assert rows, checked.stdout
    for p in rows:
        assert p["fix"] is None and "--repair would leave it as it is: " in p["why"], p
        assert why in p["why"], p
    before = rules()
    for _ in range(2):
        done = pmctl.run(["check", "--repair", *args])
        assert rules() == before, "the repair wrote for a zombie"
        assert done.returncode == 1, done.stdout + done.stderr
        out = json.loads(done.stdout)
        assert not out["repaired"], out
        [left] = out["unrepaired"]
        assert (left["container_id"], left["family"]) == ("zombie", 4), left
        assert why in left["why"], left
        assert "could not repair IPv4 podman/zombie" in done.stderr, done.stderr


def test_iptables_one_mapping_of_a_zombie_is_not_written(
    zombie_ns: tuple[str, str], tmp_path: Path, iptables_mode: rp.Mode
) -> None:
    host, gone = zombie_ns
    ports = [rp.port_mapping(8080, 80)]
    conf = rp.plugin_conf("podman", ["10.88.0.8/16"], ports)
    rp.run_plugin("ADD", host, "zombie", conf, mode=iptables_mode, check=True)
    rp.write_cni_cache(tmp_path, "podman", "zombie", "eth0", conf, ports, ["10.88.0.8/16"],
                       netns=f"/run/netns/{gone}")  # fmt: skip
    args = _given(tmp_path, conf, host, ["--iptables", iptables_mode])

    def rules() -> list[str]:
        return rp.nat_rules(rp.save(host, 4, iptables_mode))

    _healthy(args, rules)
    rp.iptables(host, ["-t", "nat", "-F", "CNI-HOSTPORT-DNAT"], mode=iptables_mode)
    assert "-A CNI-HOSTPORT-DNAT" not in rp.save(host, 4, iptables_mode)
    _left_alone(args, rules, _WHY.format(netns=gone))


def test_nft_one_mapping_of_a_zombie_is_not_written(
    zombie_ns: tuple[str, str], tmp_path: Path
) -> None:
    rp.require(upstream.available())
    host, gone = zombie_ns
    ports = [rp.port_mapping(8080, 80)]
    conf = upstream.nft_conf("podman", ["10.88.0.8/16"], ports)
    upstream.run("v1.9.1", "ADD", host, "zombie", conf, check=True)
    rp.write_cni_cache(tmp_path, "podman", "zombie", "eth0", conf, ports, ["10.88.0.8/16"],
                       netns=f"/run/netns/{gone}")  # fmt: skip
    args = _given(tmp_path, conf, host, [])
    _healthy(args, lambda: upstream.ruleset_text(host))
    listed = upstream.nft(host, "-a", "list", "chain", "ip", "cni_hostport", "hostports").stdout
    [handle] = [line.rsplit("# handle ", 1)[1] for line in listed.splitlines()
                if "dnat to 10.88.0.8:80" in line]  # fmt: skip
    upstream.nft(host, "delete", "rule", "ip", "cni_hostport", "hostports", "handle", handle)
    assert "dnat to 10.88.0.8:80" not in upstream.ruleset_text(host)
    _left_alone(args, lambda: upstream.ruleset_text(host), _WHY.format(netns=gone))
