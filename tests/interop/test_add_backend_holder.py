"""add told a backend (--backend, a --cni-config's `backend` key) for a container its
plugin keeps in the other one: its rules are there (an iptables CNI-DN- chain of its
network, nftables rules DNATing to its address), or its cached config names it. A copy
would map the container in both backends, and the plugin's DEL cleans one alone: add
writes nothing, one line on stderr, exit 2 (SPEC §4; as check --repair refuses such a
copy), `--dry-run` too. Real plugins
(Debian's 1.1.1, upstream v1.9.1) make the node; a fresh namespace per test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, List

import pmctl
import pytest
import realplugin as rp
import upstream

pytestmark = pytest.mark.netns

_pm = rp.port_mapping


@pytest.fixture
def node() -> Iterator[str]:
    rp.require(rp.plugin_available())
    rp.require(upstream.available())
    name = rp.create_netns("pmt-hold")
    try:
        yield name
    finally:
        rp.delete_netns(name)


def _add(node: str, cache: Path, cid: str, ip: str, *args: str) -> List[str]:
    return ["add", "--network", "mynet", "--container", cid, "--ip", ip, *args,
            "--netns", node, "--cni-cache-dir", str(cache)]  # fmt: skip


def _state(node: str) -> tuple:
    """Both backends' rules as the kernel holds them (iptables-save's header and
    counters, which change by the second, left out)."""
    nft = upstream.nft(node, "list", "ruleset").stdout
    return _rules(rp.save(node, 4, "nft")), _rules(rp.save(node, 6, "nft")), nft


def _rules(save: str) -> str:
    return "\n".join(line for line in save.splitlines() if not line.startswith(("#", ":")))


def _refused(node: str, cache: Path, who: tuple, backend: str, *words: str) -> None:
    """add of `who` (container, address, host port) under --backend `backend`: its dry
    run, its real run and the same container with other ports each write nothing,
    exit 2, one line with `words`."""
    cid, ip, port = who
    before = _state(node)
    for extra in (["--dry-run", "-p", f"{port}:80"], ["-p", f"{port}:80"], ["-p", "8099:80"]):
        done = pmctl.run(_add(node, cache, cid, ip, "--backend", backend, *extra))
        pmctl.assert_error(done, 2, *words, f"--backend {backend}", "both backends")
        assert _state(node) == before, extra


def test_backend_nftables_for_a_container_kept_in_iptables_is_refused(
    node: str, tmp_path: Path
) -> None:
    """Debian's plugin added mynet/ipt1 (its CNI-DN- chain in iptables; no cache entry):
    `add --backend nftables` of it printed an nftables plan (--dry-run) and wrote it
    (exit 0), the container then mapped in both backends, and `check` said healthy. It
    is refused, the dry run as the real run; another container still goes to nftables."""
    conf = rp.plugin_conf("mynet", ["10.88.0.5/16"], [_pm(8080, 80)])
    rp.run_plugin("ADD", node, "ipt1", conf, check=True)
    before = _state(node)
    chain = "mynet/ipt1: its chain CNI-DN-b0247353f1acf2151164b is in iptables"
    _refused(node, tmp_path, ("ipt1", "10.88.0.5/16", 8080), "nftables", chain)
    rp.run_plugin("CHECK", node, "ipt1", conf, family=4, check=True)
    other = _add(node, tmp_path, "new1", "10.88.0.7/16", "--backend", "nftables", "-p", "8082:80")
    assert pmctl.run(other).returncode == 0
    assert 'comment "new1"' in upstream.ruleset_text(node)
    assert _rules(rp.save(node, 4, "nft")) == before[0]


def test_backend_iptables_for_a_container_kept_in_nftables_is_refused(
    node: str, tmp_path: Path
) -> None:
    """The mirror: v1.9.1 added mynet/nft1 in nftables (no cache entry): `add --backend
    iptables` of it wrote a CNI-DN- chain (exit 0), the container then mapped in both
    backends. Refused, the dry run as the real run. A container whose nftables rules
    are another network's (they DNAT to another address: the plugin's rules name no
    network) and a new one still go to iptables."""
    conf = upstream.nft_conf("mynet", ["10.88.0.6/16"], [_pm(8081, 80)])
    upstream.run("v1.9.1", "ADD", node, "nft1", conf, check=True)
    other = upstream.nft_conf("othernet", ["10.89.0.8/16"], [_pm(8083, 80)])
    upstream.run("v1.9.1", "ADD", node, "two1", other, check=True)
    before = _state(node)
    kept = "mynet/nft1: its rules are in the plugin's nftables tables alone"
    _refused(node, tmp_path, ("nft1", "10.88.0.6/16", 8081), "iptables", kept)
    upstream.run("v1.9.1", "CHECK", node, "nft1", conf, check=True)
    for cid, ip, port in (("two1", "10.88.0.8/16", "8084:80"), ("new1", "10.88.0.7/16", "8082:80")):
        args = _add(node, tmp_path, cid, ip, "--backend", "iptables", "-p", port)
        done = pmctl.run(args)
        assert done.returncode == 0, done.stderr
    assert rp.save(node, 4, "nft").count("-A CNI-HOSTPORT-DNAT ") == 2
    assert upstream.nft(node, "list", "table", "ip", "cni_hostport").stdout in before[2]


def test_a_backend_other_than_the_cached_configs_is_refused(node: str, tmp_path: Path) -> None:
    """web1's cached config says "backend": "nftables" (v1.9.1 added it there), ipt1's
    says "iptables": `add --backend iptables` of web1 (and `--backend nftables` of
    ipt1) wrote the copy, exit 0, with a warning that it outlives the container: a
    second set of rules its plugin never reads nor deletes. Refused, the dry run too;
    so is a --cni-config whose key names the other backend. deb1's cached config says
    nftables, but Debian's 1.1.1 ignored the key (its chain in iptables, no rule in
    nftables): its plugin keeps it in iptables, so --backend iptables is its own."""
    ports = [_pm(8081, 80)]
    web = upstream.nft_conf("mynet", ["10.88.0.6/16"], ports)
    upstream.run("v1.9.1", "ADD", node, "web1", web, check=True)
    rp.write_cni_cache(tmp_path, "mynet", "web1", "eth0", web, ports, ["10.88.0.6/16"])
    ipt = upstream.nft_conf("mynet", ["10.88.0.5/16"], [_pm(8080, 80)], backend="iptables")
    upstream.run("v1.9.1", "ADD", node, "ipt1", ipt, check=True)
    rp.write_cni_cache(tmp_path, "mynet", "ipt1", "eth0", ipt, [_pm(8080, 80)], ["10.88.0.5/16"])
    deb = {**rp.plugin_conf("mynet", ["10.88.0.7/16"], [_pm(8082, 80)]), "backend": "nftables"}
    rp.run_plugin("ADD", node, "deb1", deb, check=True)
    rp.write_cni_cache(tmp_path, "mynet", "deb1", "eth0", deb, [_pm(8082, 80)], ["10.88.0.7/16"])
    said = 'its cached config says "backend": "{}", so the plugin keeps it there'
    _refused(node, tmp_path, ("web1", "10.88.0.6/16", 8081), "iptables", said.format("nftables"))
    _refused(node, tmp_path, ("ipt1", "10.88.0.5/16", 8080), "nftables", said.format("iptables"))
    before = _state(node)
    given = tmp_path / "web1.json"
    given.write_text(json.dumps({**web, "backend": "iptables"}))
    for extra in (["--dry-run"], []):
        done = pmctl.run(["add", "--container", "web1", "--cni-config", str(given), *extra,
                          "--netns", node, "--cni-cache-dir", str(tmp_path)])  # fmt: skip
        pmctl.assert_error(done, 2, said.format("nftables"), '"backend": "iptables"')
        assert _state(node) == before, extra
    done = pmctl.run(_add(node, tmp_path, "deb1", "10.88.0.7/16", "--backend", "iptables",
                          "-p", "8082:80"))  # fmt: skip
    assert done.returncode == 0 and done.stdout.startswith("unchanged"), done.stderr
    assert _state(node) == before
    upstream.run("v1.9.1", "CHECK", node, "web1", web, check=True)


def test_a_cached_nftables_key_its_plugin_ignored_keeps_the_container_in_iptables(
    node: str, tmp_path: Path
) -> None:
    """deb1's cached config says "backend": "nftables", and Debian's 1.1.1, which takes
    the key for an unknown one, wrote it in iptables (check judges it there: key
    ignored). `add` of it without a backend followed the key: "its cached config says
    "backend": "nftables", so the plugin keeps it there: it goes to nftables", and
    wrote an nftables copy (exit 0; --backend nftables the same, silently): the
    container in both backends, where its plugin's DEL cleans iptables alone. add
    follows it into iptables (unchanged, a note says why), and --backend nftables is
    refused."""
    ports = [_pm(8082, 80)]
    deb = {**rp.plugin_conf("mynet", ["10.88.0.7/16"], ports), "backend": "nftables"}
    rp.run_plugin("ADD", node, "deb1", deb, check=True)
    rp.write_cni_cache(tmp_path, "mynet", "deb1", "eth0", deb, ports, ["10.88.0.7/16"])
    before = _state(node)
    for extra in (["--dry-run"], []):
        done = pmctl.run(_add(node, tmp_path, "deb1", "10.88.0.7/16", "-p", "8082:80", *extra))
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("unchanged: CNI-DN-"), done.stdout
        assert "ignores the key" in done.stderr, done.stderr
        assert _state(node) == before, extra
    chain = "its chain CNI-DN-5674861064a32995697f4 is in iptables"
    _refused(node, tmp_path, ("deb1", "10.88.0.7/16", 8082), "nftables", chain)
    rp.run_plugin("CHECK", node, "deb1", deb, family=4, check=True)


def test_backend_nftables_for_a_container_kept_in_the_other_iptables_flavour_is_refused(
    node: str, tmp_path: Path
) -> None:
    """Debian's plugin ran with iptables-legacy first on its PATH (the alternative
    switched since): leg1's chain is in the legacy tables, `iptables` is iptables-nft.
    `add --backend nftables` of leg1 looked in iptables-nft alone and wrote an nftables
    copy (exit 0). Refused, as a chain in the flavour add reads is."""
    rp.require(rp.mode_available("legacy"))
    conf = rp.plugin_conf("mynet", ["10.88.0.5/16"], [_pm(8080, 80)])
    rp.run_plugin("ADD", node, "leg1", conf, mode="legacy", check=True)
    before = _rules(rp.save(node, 4, "legacy"))
    chain = "mynet/leg1: its chain CNI-DN-"
    for extra in (["--dry-run"], []):
        args = _add(node, tmp_path, "leg1", "10.88.0.5/16", "--backend", "nftables", *extra)
        done = pmctl.run([*args, "-p", "8080:80"])
        pmctl.assert_error(done, 2, chain, "iptables-legacy", "--backend nftables")
    assert "cni_hostport" not in upstream.ruleset_text(node)
    assert _rules(rp.save(node, 4, "legacy")) == before


def test_a_copy_for_the_other_family_alone_is_refused(node: str, tmp_path: Path) -> None:
    """The plugin keeps a container in one backend whatever the family: Debian's
    plugin added ipt1 (its chain in iptables, IPv4), v1.9.1 added nft1 (its rules in
    ip cni_hostport). `add --family 6` of either, with its IPv6 address too, under the
    other backend looked for its rules in IPv6 alone, found none, and wrote the IPv6
    copy (exit 0): the container mapped in both backends, its plugin's DEL cleaning
    one. Refused, the dry run as the real run."""
    ipt = rp.plugin_conf("mynet", ["10.88.0.5/16"], [_pm(8080, 80)])
    rp.run_plugin("ADD", node, "ipt1", ipt, check=True)
    nft = upstream.nft_conf("mynet", ["10.88.0.6/16"], [_pm(8081, 80)])
    upstream.run("v1.9.1", "ADD", node, "nft1", nft, check=True)
    before = _state(node)
    cases = (
        ("ipt1", "10.88.0.5/16", "fd00::5/64", "8080:80", "nftables",
         "mynet/ipt1: its chain CNI-DN-b0247353f1acf2151164b is in iptables"),
        ("nft1", "10.88.0.6/16", "fd00::6/64", "8081:80", "iptables",
         "mynet/nft1: its rules are in the plugin's nftables tables alone"),
    )  # fmt: skip
    for cid, ip4, ip6, port, backend, words in cases:
        for extra in (["--dry-run"], []):
            args = _add(node, tmp_path, cid, ip4, "--ip", ip6, "--family", "6",
                        "--backend", backend, "-p", port, *extra)  # fmt: skip
            done = pmctl.run(args)
            pmctl.assert_error(done, 2, words, f"--backend {backend}", "both backends")
            assert _state(node) == before, (cid, extra)


def test_a_keyless_add_for_the_other_family_alone_follows_the_container(
    node: str, tmp_path: Path
) -> None:
    """v1.9.1 keeps nft1 in nftables (ip cni_hostport; no ip6 table, no cache entry).
    A keyless `add --family 6` of it, with its IPv6 address too, looked for its rules in
    IPv6 alone, found no table there and wrote an ip6tables CNI-DN- chain: the
    container mapped in both backends, the plugin's DEL cleaning nftables alone (found
    by h230). It follows the container into nftables, as without --family."""
    nft = upstream.nft_conf("mynet", ["10.88.0.6/16"], [_pm(8081, 80)])
    upstream.run("v1.9.1", "ADD", node, "nft1", nft, check=True)
    args = _add(node, tmp_path, "nft1", "10.88.0.6/16", "--ip", "fd00::6/64",
                "--family", "6", "-p", "8081:80")  # fmt: skip
    done = pmctl.run(args)
    assert done.returncode == 0, done.stderr
    assert "its rules are in the plugin's nftables tables alone" in done.stderr, done.stderr
    assert "CNI-DN-" not in _rules(rp.save(node, 6, "nft"))
    ip6 = upstream.nft(node, "list", "table", "ip6", "cni_hostport").stdout
    assert 'comment "nft1"' in ip6 and "fd00::6" in ip6, ip6


def test_a_cni_configs_nftables_key_is_refused_only_where_its_plugin_ignored_it(
    node: str, tmp_path: Path
) -> None:
    """v1.9.1 added podman/web1 with `"backend": "nftables"` (its rules in cni_hostport),
    and Debian's 1.1.1 added it too (a CNI-DN- chain in iptables); no cache entry.
    `add --cni-config` of that same config said "its chain CNI-DN-... is in iptables,
    so the plugin keeps it there ... (give its config no "backend" key: add follows
    it)", exit 2: false (a plugin given the key keeps it in nftables from v1.6 on) and
    steering the operator into iptables, while check --repair of the same config said
    healthy. add now agrees: unchanged, in nftables, where v1.9.1's CHECK passes. Where
    Debian's plugin alone added it (the key ignored: its chain in iptables, no rule in
    nftables) add still refuses, and says that is why."""
    ports = [_pm(8080, 80)]
    conf = upstream.nft_conf("podman", ["10.88.0.5/16"], ports)
    upstream.run("v1.9.1", "ADD", node, "web1", conf, check=True)
    rp.run_plugin("ADD", node, "web1", conf, check=True)
    given = tmp_path / "conf.json"
    given.write_text(json.dumps(conf))
    before = _state(node)
    for extra in (["--dry-run"], []):
        done = pmctl.run(["add", "--container", "web1", "--cni-config", str(given), *extra,
                          "--netns", node, "--cni-cache-dir", str(tmp_path)])  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("unchanged: nftables rules (podman/web1)"), done.stdout
        assert _state(node) == before, extra
    upstream.run("v1.9.1", "CHECK", node, "web1", conf, check=True)
    deb = upstream.nft_conf("podman", ["10.88.0.7/16"], [_pm(8082, 80)])
    rp.run_plugin("ADD", node, "deb1", deb, check=True)
    given.write_text(json.dumps(deb))
    before = _state(node)
    ignored = 'no rule of it in nftables: its plugin ignores its config\'s "backend": "nftables"'
    for extra in (["--dry-run"], []):
        done = pmctl.run(["add", "--container", "deb1", "--cni-config", str(given), *extra,
                          "--netns", node, "--cni-cache-dir", str(tmp_path)])  # fmt: skip
        pmctl.assert_error(done, 2, "podman/deb1: its chain CNI-DN-", ignored,
                           'give its config no "backend" key')  # fmt: skip
        assert _state(node) == before, extra
