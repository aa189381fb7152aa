"""One suite for every backend: save/restore nf_tables, save/restore legacy, and
python-iptables (iptc, legacy tables only).

All against the kernel, in throwaway namespaces, with the real plugin:
- what the plugin's ADD leaves (run with iptables-nft for `nft`, iptables-legacy for
  `legacy` and `iptc`) reads back as the fixture's table, and `list -o json` says
  the same as for the fixture dump;
- through iptc the table reads as `iptables-legacy-save` prints it, byte for byte,
  for every fixture case and for foreign rules of many shapes, and iptc can delete
  every rule iptables-legacy wrote (its entries are the very bytes iptables builds);
- `add`, `gc` and `check --repair` leave byte-identical `iptables-legacy-save` output
  through iptc and through legacy save/restore; the plugin's CHECK and DEL accept
  what iptc wrote;
- a transaction that fails half-way changes nothing, with every writable backend;
- iptc is refused (exit 3) where `iptables` is nf_tables, and `auto` never picks it.

`iptables` on PATH decides the host's flavour (as for the plugin): each test puts the
flavour's tools first.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Dict, Iterator, List

import pytest
import realplugin as rp
from fixtures_lib import NAMES, conf, save_text, table
from pmctl import assert_error, ok, run

from portmapctl.errors import ApplyFailed
from portmapctl.host import netns
from portmapctl.iptables.access import legacy_nat_present, open_backend
from portmapctl.iptables.chains import chain_name
from portmapctl.iptables.planner import plan_setup
from portmapctl.iptables.ruleset import NatTable, parse_save
from portmapctl.iptables.transaction import Transaction

BACKENDS = ["nft", "legacy", "iptc"]
MODE = {"nft": "nft", "legacy": "legacy", "iptc": "legacy"}
FAMILIES = (4, 6)


def _use_flavour(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """Make `iptables` on PATH the given flavour, here and in child processes."""
    monkeypatch.setenv("PATH", f"{rp.bin_dir(mode)}:{os.environ.get('PATH', rp.SYSTEM_PATH)}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """A backend name; the host's `iptables` is the flavour that backend works on."""
    name: str = request.param
    if rp.netns_available()[0]:
        available, reason = rp.mode_available(MODE[name])
        if not available:
            pytest.skip(reason)
    if name == "iptc":
        pytest.importorskip("iptc", reason="python-iptables is not installed")
    _use_flavour(monkeypatch, MODE[name])
    return name


# --- the real plugin's state, made once per case and flavour ----------------------------------


def _plugin_conf(case: str, container: dict) -> dict:
    data = conf(case)
    options = data["options"]
    return rp.plugin_conf(
        data["network"],
        container["ips"],
        container["portMappings"],
        snat=options.get("snat"),
        mark_masq_bit=options.get("markMasqBit"),
        external_setmark_chain=options.get("externalSetMarkChain"),
        conditions_v4=options.get("conditionsV4"),
        conditions_v6=options.get("conditionsV6"),
    )


def _hand_rules(ns: str, case: str, when: str, mode: str) -> None:
    for rule in conf(case)["handRules"]:
        if rule["when"] == when:
            rp.iptables(ns, rule["args"], family=rule["family"], mode=mode)


def _plugin_add(ns: str, case: str, mode: str) -> None:
    """What capture.py did for the fixture: hand rules, the plugin's ADDs, hand rules."""
    _hand_rules(ns, case, "before", mode)
    for container in conf(case)["containers"]:
        rp.run_plugin(
            "ADD",
            ns,
            container["containerId"],
            _plugin_conf(case, container),
            mode=mode,
            check=True,
        )
    _hand_rules(ns, case, "after", mode)


class PluginStates:
    """Namespaces holding the plugin's ADD of a fixture case, built on first use.

    Tests only read them, so one per (case, flavour) serves every backend.
    """

    def __init__(self) -> None:
        self._made: Dict[tuple, str] = {}

    def get(self, case: str, mode: str) -> str:
        key = (case, mode)
        if key not in self._made:
            name = rp.create_netns("pmt-conf")
            self._made[key] = name
            _plugin_add(name, case, mode)
        return self._made[key]

    def close(self) -> None:
        for name in self._made.values():
            rp.delete_netns(name)


@pytest.fixture(scope="module")
def plugin_states() -> Iterator[PluginStates]:
    states = PluginStates()
    try:
        yield states
    finally:
        states.close()


def _body(text: str) -> str:
    return rp.strip_save_comments(text)


def _legacy_saves(ns: str) -> Dict[int, str]:
    return {f: _body(rp.save(ns, f, "legacy")) for f in FAMILIES}


# --- reading ----------------------------------------------------------------------------------


@pytest.mark.netns
@pytest.mark.parametrize("case", NAMES)
def test_plugin_state_reads_as_the_fixture(backend, plugin_states, case):
    ns = plugin_states.get(case, MODE[backend])
    with netns.entered(ns):
        absent = {f for f in FAMILIES if MODE[backend] == "legacy" and not legacy_nat_present(f)}
        opened = open_backend(backend)
        assert opened.name == backend
        tables = {f: opened.read(f) for f in FAMILIES}
        # The plugin wrote no legacy table for a family it had no address in: read as
        # the save prints a new one (the fixture's), and not created by the read.
        assert {
            f for f in FAMILIES if MODE[backend] == "legacy" and not legacy_nat_present(f)
        } == absent
    for family in FAMILIES:
        expected = table(case, family)
        if backend != "iptc":
            # iptables-save's text, read as the restore backends read it: another tool's
            # rule without "CNI-" is kept whole as its line (parse_save skip_foreign).
            expected = parse_save(save_text(case, family), family, skip_foreign=True)
        assert tables[family] == expected, family


# One path that exists nowhere, for both runs: the JSON names the cache it used.
NO_CACHE = Path("/nonexistent/portmapctl-test-no-cache")
LIST_CASES = ["basic", "dual-stack", "hostip-v6", "conditions-physdev", "shadowed", "foreign"]
LIST_CASES += ["legacy-sn", "long-comment"]
# One absent cache directory for both sides: `list -o json` names it (SPEC §3 "cache").
NO_CACHE = Path("/nonexistent/portmapctl-tests/cni-cache")


@pytest.fixture(scope="module")
def snapshot_lists() -> Dict[str, str]:
    """`list -o json` of the fixture dumps (no kernel): what every backend must print."""
    nowhere = NO_CACHE
    fixtures = Path(__file__).parents[1] / "fixtures"
    return {
        case: ok(
            [
                "list",
                "--snapshot",
                str(fixtures / f"{case}.v4.save"),
                "--snapshot6",
                str(fixtures / f"{case}.v6.save"),
                "--cni-cache-dir",
                str(nowhere),
                "-o",
                "json",
            ]
        )
        for case in LIST_CASES
    }


@pytest.mark.netns
@pytest.mark.parametrize("case", LIST_CASES)
def test_list_json_is_the_same_through_every_backend(
    backend, plugin_states, snapshot_lists, tmp_path, case
):
    ns = plugin_states.get(case, MODE[backend])
    args = ["list", "--netns", ns, "--iptables", backend, "-o", "json"]
    out = ok([*args, "--cni-cache-dir", str(NO_CACHE)])
    assert json.loads(out) == json.loads(snapshot_lists[case])
    assert out == snapshot_lists[case]


@pytest.mark.netns
@pytest.mark.parametrize("case", NAMES)
def test_iptc_prints_what_iptables_legacy_save_prints(plugin_states, case):
    pytest.importorskip("iptc", reason="python-iptables is not installed")
    from portmapctl.iptables.access.iptc import IptcBackend

    ns = plugin_states.get(case, "legacy")
    with netns.entered(ns):
        texts = {f: IptcBackend().save_text(f) for f in FAMILIES}
    assert texts == _legacy_saves(ns)


# Foreign rules of many shapes (hand-written, accepted by iptables-legacy-restore): the
# comparison is with what iptables-legacy-save prints for them.
FOREIGN_V4 = r"""*nat
:CNI-X - [0:0]
-A PREROUTING -s 10.0.0.0/255.0.255.0 -j CNI-X
-A PREROUTING ! -p tcp -j RETURN
-A PREROUTING -f -j CNI-X
-A PREROUTING ! -f -j CNI-X
-A PREROUTING -g CNI-X
-A PREROUTING -d 192.168.0.0/16
-A PREROUTING -p 253 -j CNI-X
-A PREROUTING -m state --state ESTABLISHED,RELATED -j CNI-X
-A PREROUTING -m conntrack --ctstate NEW,INVALID -j CNI-X
-A PREROUTING -p tcp -m tcp --tcp-flags SYN,ACK SYN -j CNI-X
-A PREROUTING -p tcp -m tcp ! --dport 80:90 --sport 1000 -j CNI-X
-A PREROUTING -m comment --comment "it's a \"q\" C:\\x\\ --dport 5 ! -j" -j CNI-X
-A PREROUTING -m comment --comment --looks-like-an-option -j CNI-X
-A OUTPUT -p udp -j LOG --log-prefix "x y " --log-level 4
-A OUTPUT -m iprange --src-range 10.0.0.1-10.0.0.9 -j CNI-X
-A OUTPUT -m physdev --physdev-in veth+ ! --physdev-is-bridged -j CNI-X
-A OUTPUT -m mark ! --mark 0x10/0xff -m addrtype ! --src-type LOCAL --limit-iface-out -j CNI-X
-A OUTPUT -p sctp -m sctp --dport 9 -j DNAT --to-destination 10.1.1.1-10.1.1.5:100-200 --random --persistent
-A POSTROUTING -o eth0 -j SNAT --to-source 1.2.3.4 --random-fully
-A POSTROUTING -p icmp -m icmp --icmp-type 8 -j NETMAP --to 10.9.0.0/16
-A CNI-X -i eth+ ! -o veth0 -p tcp -j RETURN
-A CNI-X -m string --string "a b" --algo bm -j RETURN
-A CNI-X -m u32 --u32 "0>>22&0x3C@4=0x29" -j RETURN
-A CNI-X -m statistic --mode nth --every 3 --packet 0 -j RETURN
-A CNI-X -m limit --limit 5/sec --limit-burst 7 -j RETURN
COMMIT
"""
FOREIGN_V6 = r"""*nat
:CNI-X - [0:0]
-A PREROUTING -s fd00::/ffff:0:ffff:: -j CNI-X
-A PREROUTING ! -s fd00::1/128 ! -p udp -j CNI-X
-A PREROUTING -d ::1/128 -p tcp -m tcp --dport 80 -j DNAT --to-destination [fd00::5]:80
-A PREROUTING -p ipv6-icmp -m icmp6 --icmpv6-type 128 -j CNI-X
-A PREROUTING -m comment --comment "it's" -g CNI-X
-A PREROUTING -p 253
-A OUTPUT -p udp -m multiport ! --dports 1,2:5 -j REDIRECT --to-ports 99
-A POSTROUTING -s fd00:dead::/64 ! -o docker0 -j MASQUERADE --random
-A POSTROUTING -m ipv6header --header frag --soft -j CNI-X
-A CNI-X -i veth0 -p sctp -m sctp --sport 5 -j RETURN
-A CNI-X -m frag --fragid 5 -j RETURN
COMMIT
"""


def _restore(ns: str, family: int, text: str) -> None:
    tool = rp.tool_path("iptables-restore" if family == 4 else "ip6tables-restore", "legacy")
    done = subprocess.run(
        ["ip", "netns", "exec", ns, tool, "--noflush"], input=text, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def _all_rules(tables: NatTable) -> List[tuple]:
    return [(c.name, rule) for c in tables.chains.values() for rule in c.rules]


@pytest.mark.parametrize("family", FAMILIES)
def test_iptc_reads_deletes_and_rewrites_foreign_rules_as_iptables_does(
    host_ns, monkeypatch, family
):
    """Read: byte for byte. Delete (gc deletes entry rules by their text): every rule
    iptables-legacy wrote is found, so iptc builds the same entry bytes. Write: the
    same rules appended through iptc print exactly the same again."""
    pytest.importorskip("iptc", reason="python-iptables is not installed")
    from portmapctl.iptables.access.iptc import IptcBackend

    _use_flavour(monkeypatch, "legacy")
    _restore(host_ns, family, FOREIGN_V4 if family == 4 else FOREIGN_V6)
    written = _legacy_saves(host_ns)[family]
    backend = IptcBackend()
    with netns.entered(host_ns):
        assert backend.save_text(family) == written
        live = backend.read(family)
        rules = _all_rules(live)
        assert len(rules) > 10
        txn = Transaction(family)
        for chain, rule in rules:
            txn.delete(chain, rule)
        backend.apply(txn)
        assert _all_rules(backend.read(family)) == []
        txn = Transaction(family)
        for chain, rule in rules:
            txn.append(chain, rule)
        backend.apply(txn)
    assert _legacy_saves(host_ns)[family] == written


# --- writing ----------------------------------------------------------------------------------

ADD_CASES = ["basic", "dual-stack", "hostip-v6", "conditions", "conditions-physdev"]
ADD_CASES += ["many-ports", "sctp", "external-setmark", "long-comment", "foreign"]


def _portmapctl_add(ns: str, backend: str, case: str) -> None:
    mode = MODE[backend]
    _hand_rules(ns, case, "before", mode)
    for container in conf(case)["containers"]:
        ok(
            [
                "add",
                "--netns",
                ns,
                "--iptables",
                backend,
                "--container",
                container["containerId"],
                "--cni-config",
                "-",
                "--no-flush-udp",
            ],
            stdin=json.dumps(_plugin_conf(case, container)),
        )
    _hand_rules(ns, case, "after", mode)


@pytest.mark.parametrize("case", ADD_CASES)
def test_add_leaves_the_plugin_s_table_through_every_backend(host_ns, backend, case):
    """Every backend's `add` gives the fixture's save output, so legacy save/restore
    and iptc give byte-identical iptables-legacy-save output."""
    _portmapctl_add(host_ns, backend, case)
    for family in FAMILIES:
        saved = _body(rp.save(host_ns, family, MODE[backend]))
        assert saved == _body(save_text(case, family)), family


@pytest.mark.parametrize("case", ["dual-stack", "conditions", "conditions-physdev"])
def test_plugin_check_passes_and_del_removes_what_iptc_added(host_ns, monkeypatch, case):
    """The plugin's CHECK (iptables -C) and DEL (iptables -D) find iptc's entries."""
    pytest.importorskip("iptc", reason="python-iptables is not installed")
    _use_flavour(monkeypatch, "legacy")
    _portmapctl_add(host_ns, "iptc", case)
    for container in conf(case)["containers"]:
        plugin_conf = _plugin_conf(case, container)
        for done in rp.run_check(host_ns, container["containerId"], plugin_conf, mode="legacy"):
            assert done.returncode == 0, done.stdout + done.stderr
        done = rp.run_plugin("DEL", host_ns, container["containerId"], plugin_conf, mode="legacy")
        assert done.returncode == 0, done.stdout + done.stderr
    for family in FAMILIES:
        assert "CNI-DN-" not in rp.save(host_ns, family, "legacy")


CONTAINERS = [
    ("ctr1", ["10.88.0.11/16"], [{"hostPort": 8081, "containerPort": 80, "protocol": "tcp"}]),
    (
        "ctr2",
        ["10.88.0.12/16", "fd00::12/64"],
        [
            {"hostPort": 8082, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 5353, "containerPort": 53, "protocol": "udp"},
        ],
    ),
    (
        "ctr3",
        ["10.88.0.13/16", "fd00::13/64"],
        [{"hostPort": 8083, "containerPort": 80, "protocol": "tcp"}],
    ),
]


def _plugin_node(ns: str, cache: Path, cached: List[str]) -> None:
    """The plugin ADDs every container (legacy); libcni's cache lists those `cached`."""
    for container_id, ips, ports in CONTAINERS:
        plugin_conf = rp.plugin_conf("mynet", ips, ports)
        rp.run_plugin("ADD", ns, container_id, plugin_conf, mode="legacy", check=True)
        if container_id in cached:
            rp.write_cni_cache(cache, "mynet", container_id, "eth0", plugin_conf, ports, ips)


def _scenario(name: str, backend: str, tmp_path: Path) -> Dict[int, str]:
    """Run a write scenario with one backend in a fresh namespace; its legacy saves."""
    ns = rp.create_netns("pmt-conf")
    cache = tmp_path / backend / "cni"
    (cache / "results").mkdir(parents=True)
    try:
        if name == "gc":
            _plugin_node(ns, cache, cached=["ctr2"])
            args = ["gc", "--yes", "--min-age", "0", "-q"]
        else:  # check --repair after firewalld flushed and deleted everything
            _plugin_node(ns, cache, cached=["ctr1", "ctr2", "ctr3"])
            for family in FAMILIES:
                rp.iptables(ns, ["-t", "nat", "-F"], family=family, mode="legacy")
                rp.iptables(ns, ["-t", "nat", "-X"], family=family, mode="legacy")
            args = ["check", "--repair", "--no-flush-udp", "-o", "json"]
        ok([*args, "--netns", ns, "--iptables", backend, "--cni-cache-dir", str(cache)])
        return _legacy_saves(ns)
    finally:
        rp.delete_netns(ns)


@pytest.mark.netns
@pytest.mark.parametrize("scenario", ["gc", "repair"])
def test_gc_and_repair_leave_byte_identical_tables_through_iptc_and_legacy(
    monkeypatch, tmp_path, scenario
):
    pytest.importorskip("iptc", reason="python-iptables is not installed")
    _use_flavour(monkeypatch, "legacy")
    through_legacy = _scenario(scenario, "legacy", tmp_path)
    through_iptc = _scenario(scenario, "iptc", tmp_path)
    assert through_iptc == through_legacy
    text = through_iptc[4] + through_iptc[6]
    assert chain_name("mynet", "ctr2") in text
    gone = ("ctr1", "ctr3") if scenario == "gc" else ()
    for container_id in gone:
        assert chain_name("mynet", container_id) not in text
    if scenario == "repair":
        assert chain_name("mynet", "ctr1") in text and "CNI-HOSTPORT-MASQ" in text


@pytest.mark.netns
def test_a_failed_transaction_changes_nothing(backend):
    """Chains made, rules appended and a chain flushed before a `-D` of a rule that is
    not there (as when the plugin changed the table meanwhile): the whole transaction
    is refused, the table stays as it was."""
    mode = MODE[backend]
    ns = rp.create_netns("pmt-conf")
    try:
        _plugin_add(ns, "dual-stack", mode)
        before = {f: _body(rp.save(ns, f, mode)) for f in FAMILIES}
        dn = chain_name("mynet", "abc123")
        with netns.entered(ns):
            opened = open_backend(backend)
            for family in FAMILIES:
                txn = Transaction(family)
                txn.new_chain("CNI-DN-new")
                txn.append("CNI-DN-new", ("-p", "tcp", "-j", "RETURN"))
                txn.append("CNI-HOSTPORT-DNAT", ("-p", "tcp", "-j", "CNI-DN-new"))
                txn.flush(dn)
                gone = ("-p", "udp", "-m", "udp", "--dport", "9999", "-j", dn)
                txn.delete("CNI-HOSTPORT-DNAT", gone)
                with pytest.raises(ApplyFailed):
                    opened.apply(txn)
        assert {f: _body(rp.save(ns, f, mode)) for f in FAMILIES} == before
    finally:
        rp.delete_netns(ns)


@pytest.mark.netns
def test_a_check_in_a_transaction_holds_it_to_what_is_there(backend):
    """`-C` alike through every backend: PREROUTING's jump twice, one copy deleted then
    `-C` of it goes in; every copy deleted then `-C` is refused whole, the table as it
    was. Then check --repair's dedupe of copies apart: the first keeps its place."""
    mode = MODE[backend]
    ns = rp.create_netns("pmt-conf")
    jump = ("-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT")
    try:
        _plugin_add(ns, "dual-stack", mode)
        for family in FAMILIES:
            rp.iptables(ns, ["-t", "nat", "-A", "PREROUTING", *jump], family=family, mode=mode)
        with netns.entered(ns):
            opened = open_backend(backend)
            for family in FAMILIES:
                before = _body(rp.save(ns, family, mode))
                txn = Transaction(family)
                for _ in range(2):
                    txn.delete("PREROUTING", jump)
                txn.check("PREROUTING", jump)
                with pytest.raises(ApplyFailed):
                    opened.apply(txn)
                assert _body(rp.save(ns, family, mode)) == before
                txn = Transaction(family)
                txn.delete("PREROUTING", jump)
                txn.check("PREROUTING", jump)
                opened.apply(txn)
                assert opened.read(family).rules("PREROUTING").count(jump) == 1
                # check --repair's dedupe: copies apart, the first's place kept (every
                # copy deleted, the rule inserted where the first stood).
                foreign = ("-p", "tcp", "-m", "tcp", "--dport", "9999", "-j", "ACCEPT")
                rp.iptables(
                    ns, ["-t", "nat", "-A", "PREROUTING", *foreign], family=family, mode=mode
                )
                rp.iptables(ns, ["-t", "nat", "-A", "PREROUTING", *jump], family=family, mode=mode)
                live = opened.read(family)
                opened.apply(plan_setup([], live, dedupe=True))
                assert opened.read(family).rules("PREROUTING")[-2:] == (jump, foreign)
    finally:
        rp.delete_netns(ns)


# --- where iptc is not the right tool ----------------------------------------------------------


def test_iptc_is_refused_where_iptables_is_nf_tables(host_ns, monkeypatch):
    if not rp.mode_available("nft")[0]:
        pytest.skip(rp.mode_available("nft")[1])
    _use_flavour(monkeypatch, "nft")
    rp.run_plugin(
        "ADD", host_ns, "abc123", _plugin_conf("basic", conf("basic")["containers"][0]), check=True
    )
    before = _body(rp.save(host_ns, 4, "nft"))
    assert_error(run(["list", "--netns", host_ns, "--iptables", "iptc"]), 3, "nf_tables")
    add = ["add", "--netns", host_ns, "--iptables", "iptc", "--network", "n", "--container", "c"]
    done = run([*add, "--ip", "10.1.0.2/16", "-p", "80:80"])
    assert_error(done, 3, "--iptables iptc", "nf_tables", "--iptables auto or nft")
    assert _body(rp.save(host_ns, 4, "nft")) == before
    with netns.entered(host_ns):
        assert open_backend("auto").name == "nft"


def test_auto_picks_save_restore_on_a_legacy_host(monkeypatch):
    _use_flavour(monkeypatch, "legacy")
    assert open_backend("auto").name == "legacy"
