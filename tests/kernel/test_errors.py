"""Bad input and a bad environment: one line on stderr, the SPEC §4 exit code,
no traceback, nothing changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import realplugin as rp
from pmctl import assert_error, ok, run

from portmapctl.ops.check.hints import REPAIR_COMMAND

FIXTURES = Path(__file__).parents[1] / "fixtures"
ADD = ["add", "--network", "mynet", "--container", "abc123", "--ip", "10.88.0.5/16"]
CHAIN = "CNI-DN-70a29d9dc18bc4d652ea5"  # mynet/abc123's


@pytest.fixture
def node(host_ns):
    """A namespace holding one plugin-made container, so 'unchanged' means something."""
    conf = rp.plugin_conf(
        "othernet",
        ["10.88.0.9/16", "fd00::9/64"],
        [{"hostPort": 7070, "containerPort": 70, "protocol": "tcp"}],
    )
    rp.run_plugin("ADD", host_ns, "existing", conf, check=True)
    return host_ns


def _state(ns):
    return {f: rp.strip_save_comments(rp.save(ns, f)) for f in (4, 6)}


BAD_ADD = [
    (["-p", "8080"], "invalid port spec"),
    (["-p", "0:80"], "invalid host port"),
    (["-p", "70000:80"], "invalid host port"),
    (["-p", "8080:http"], "invalid container port"),
    (["-p", "8080:80/icmp"], "invalid protocol"),
    (["-p", "999.1.1.1:8080:80"], "invalid host IP"),
    (["-p", "::1:8080:80"], "invalid port spec"),
    (["-p", "[::1]8080:80"], "invalid port spec"),
    (["-p", "8080:80", "--ip", "10.88.0.6"], "IP/PREFIX"),
    (["-p", "8080:80", "--ip", "fd00::5/129"], "invalid container address"),
    (["-p", "8080:80", "--ip", "10.88.0.7/16"], "at most one container address per family"),
    (["-p", "8080:80", "--mark-bit", "40"], "invalid mark bit"),
    (
        ["-p", "8080:80", "--mark-bit", "3", "--external-setmark-chain", "X"],
        "cannot be used together",
    ),
    (["-p", "8080:80", "--external-setmark-chain", "bad chain"], "invalid external setmark chain"),
    (["-p", "8080:80", "--conditions-v4", "-j ACCEPT"], "cannot set a target"),
    (["-p", "8080:80", "--conditions-v4", "'unterminated"], "invalid --conditions-v4"),
    # A newline splits into words like a space: the -A it carries is refused as a word.
    (["-p", "8080:80", "--conditions-v4", "-s 1.2.3.4\n-A INPUT -p tcp"], "not a command"),
    (["-p", "8080:80", "--conditions-v4", "-t filter"], "not a command or table"),
    # The plugin's iptables backend refuses nftables conditions (upstream/FACTS.md).
    (["-p", "8080:80", "--conditions-v4", "ip saddr 192.168.0.0/16"], "nftables-specific"),
    # --family leaving out the mapping's only address: nothing to add, not "in place".
    (["-p", "8080:80", "--family", "6"], "no IPv6 address"),
    (["-p", "8080:80", "--iptables", "bogus"], "--iptables"),
    (["-p", "8080:80", "--family", "5"], "--family"),
    (["-p", "8080:80", "--no-such-option"], "No such option"),
]


@pytest.mark.parametrize("extra, words", BAD_ADD, ids=[" ".join(e) for e, _ in BAD_ADD])
def test_add_rejects_bad_values_before_touching_anything(node, extra, words):
    before = _state(node)
    assert_error(run([*ADD, "--netns", node, *extra]), 2, words)
    assert _state(node) == before


HOSTILE_NAMES = [
    "a b",
    'x"y',
    "-A INPUT -j ACCEPT",
    "x\n-A INPUT -j ACCEPT",
    "$(reboot)",
    "a;b",
    "ünï",
    "",
    ".hidden",
    "x" * 3 + "\t",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
@pytest.mark.parametrize("option", ["--network", "--container"])
def test_hostile_names_and_ids_are_refused(node, option, name):
    args = [
        "add",
        "--netns",
        node,
        "--network",
        "mynet",
        "--container",
        "abc123",
        "--ip",
        "10.88.0.5/16",
        "-p",
        "8080:80",
    ]
    args[args.index(option) + 1] = name
    before = _state(node)
    done = run(args)
    assert_error(done, 2, "invalid", "network name" if option == "--network" else "container ID")
    assert _state(node) == before


@pytest.mark.parametrize(
    "content, words",
    [
        ("not json", "not valid JSON"),
        ("\x00\x01binary", "binary data"),
        ("[1, 2]", "must be a JSON object"),
        (
            json.dumps({"name": "mynet", "runtimeConfig": {"portMappings": [{"hostPort": 80}]}}),
            "needs hostPort and containerPort",
        ),
        (
            json.dumps({"name": "my net", "runtimeConfig": {}, "prevResult": {"ips": []}}),
            "invalid network name",
        ),
        (json.dumps({"name": "mynet", "snat": "yes"}), "snat must be true or false"),
        (
            # (With its cniVersion: without one the plugin reads prevResult as a 0.1.0
            # result, whose `ips` it never reads: tests/interop/test_cni_versions.py.)
            json.dumps(
                {
                    "cniVersion": "0.4.0",
                    "name": "mynet",
                    "prevResult": {"ips": [{"address": "10.0.0.1"}]},
                }
            ),
            "IP/PREFIX",
        ),
    ],
)
def test_malformed_cni_config_is_bad_input(node, tmp_path, content, words):
    path = tmp_path / "conf.json"
    path.write_text(content)
    before = _state(node)
    assert_error(
        run(["add", "--netns", node, "--container", "abc123", "--cni-config", str(path)]), 2, words
    )
    assert_error(
        run(["add", "--netns", node, "--container", "abc123", "--cni-config", "-"], stdin=content),
        2,
        words,
    )
    assert _state(node) == before


def test_missing_namespace_is_an_environment_error():
    assert_error(run(["list", "--netns", "pmt-does-not-exist"]), 3, "not found")
    assert_error(run([*ADD, "-p", "8080:80", "--netns", "/nonexistent/ns"]), 3, "not found")


@pytest.mark.netns
def test_not_root_is_an_environment_error_and_snapshots_need_no_root(tmp_path):
    assert_error(run([*ADD, "-p", "8080:80"], unprivileged=True), 3, "root")
    assert_error(run(["list", "--iptables", "nft"], unprivileged=True), 3, "root")
    assert_error(run(["list", "--netns", "/proc/1/ns/net"], unprivileged=True), 3, "namespace")
    snapshot = tmp_path / "dump"
    snapshot.write_text((FIXTURES / "basic.v4.save").read_text())
    out = ok(["list", "--snapshot", str(snapshot), "-o", "json"], unprivileged=True)
    assert len(json.loads(out)["mappings"]) == 2


@pytest.mark.netns
def test_a_namespace_root_may_not_open_is_not_told_to_run_as_root():
    """As root without CAP_SYS_PTRACE (a confined DaemonSet), another user's
    /proc/PID/ns/net is EACCES: it said "run as root" to root."""
    import subprocess
    import sys

    other = subprocess.Popen(["setpriv", "--reuid=nobody", "--regid=nogroup",
                              "--clear-groups", "sleep", "30"])  # fmt: skip
    try:
        argv = ["setpriv", "--bounding-set=-sys_ptrace", sys.executable, "-m", "portmapctl",
                "list", "--netns", f"/proc/{other.pid}/ns/net", "--cni-cache-dir", "/nowhere"]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    finally:
        other.kill()
        other.wait()
    assert_error(
        done, 3, f"cannot open network namespace /proc/{other.pid}/ns/net: permission denied"
    )
    assert "run as root" not in done.stderr


def _modal_state(ns: str, mode: str) -> dict:
    return {f: rp.strip_save_comments(rp.save(ns, f, mode=mode)) for f in (4, 6)}


@pytest.mark.parametrize("given", ["options", "cni-config"])
def test_add_whose_setmark_chain_is_missing_says_so_once_and_changes_nothing(
    host_ns, iptables_mode, tmp_path, given
):
    """externalSetMarkChain (KUBE-MARK-MASQ) is the admin's chain: where it does not
    exist iptables refuses the jump every time. 0.1 retried that refusal three times
    and said exit 1, "gave up after 3 tries" (SPEC §4: the plugin kept changing the
    table). Now: the node's fact, said at once as check --repair says it, exit 3 (the
    environment), in the reader's words (the option, or the config's key), nothing
    changed; on a node with the plugin's shared chains and without."""
    other = rp.plugin_conf(
        "mynet",
        ["10.88.0.9/16", "fd00::9/64"],
        [{"hostPort": 7070, "containerPort": 70, "protocol": "tcp"}],
    )
    conf = rp.plugin_conf(
        "mynet", ["10.88.0.5/16", "fd00::5/64"], [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
        external_setmark_chain="KUBE-MARK-MASQ",
    )  # fmt: skip
    if given == "options":
        args = [*ADD, "--ip", "fd00::5/64", "-p", "8080:80"]
        args += ["--external-setmark-chain", "KUBE-MARK-MASQ"]
        named = "its --external-setmark-chain KUBE-MARK-MASQ does not exist in the IPv4 nat table"
    else:
        (tmp_path / "conf.json").write_text(json.dumps(conf))
        args = ["add", "--container", "abc123", "--cni-config", str(tmp_path / "conf.json")]
        named = "its externalSetMarkChain KUBE-MARK-MASQ does not exist in the IPv4 nat table"
    args += ["--netns", host_ns, "--iptables", iptables_mode]
    for shared in (False, True):
        if shared:  # the plugin's shared chains there, as on a working node
            rp.run_plugin("ADD", host_ns, "other", other, check=True, mode=iptables_mode)
        before = _modal_state(host_ns, iptables_mode)
        for extra in ([], ["--dry-run"]):
            done = run([*args, *extra])
            assert_error(done, 3, "cannot add mynet/abc123: " + named, "create it, then add again")
            assert "tries" not in done.stderr and "applied" not in done.stderr
            assert _modal_state(host_ns, iptables_mode) == before
    # Once the admin's chain is there, the same add goes in.
    for family in (4, 6):
        rp.iptables(
            host_ns, ["-t", "nat", "-N", "KUBE-MARK-MASQ"], family=family, mode=iptables_mode
        )
    assert "added" in ok(args)
    assert "-j KUBE-MARK-MASQ" in rp.save(host_ns, 4, mode=iptables_mode)


def test_a_dry_run_stopped_at_a_later_family_says_nothing_was_applied(host_ns, iptables_mode):
    """The admin's KUBE-MARK-MASQ in the IPv4 nat table alone, a dual-stack add under
    it: the write stops at IPv6 (exit 3) and says that IPv4 went in, which it did. Its
    dry run said the same, "(IPv4 was applied)", with nothing written: what a dry run
    would write is not applied."""
    rp.iptables(host_ns, ["-t", "nat", "-N", "KUBE-MARK-MASQ"], family=4, mode=iptables_mode)
    args = [*ADD, "--ip", "fd00::5/64", "-p", "8080:80", "--external-setmark-chain",
            "KUBE-MARK-MASQ", "--netns", host_ns, "--iptables", iptables_mode,
            "--cni-cache-dir", str(host_ns)]  # fmt: skip
    before = _modal_state(host_ns, iptables_mode)
    done = run([*args, "--dry-run"])
    named = "its --external-setmark-chain KUBE-MARK-MASQ does not exist in the IPv6 nat table"
    assert_error(done, 3, "cannot add mynet/abc123: " + named)
    assert "applied" not in done.stderr, done.stderr
    assert _modal_state(host_ns, iptables_mode) == before
    done = run(args)
    assert_error(done, 3, "cannot add mynet/abc123: " + named, "(IPv4 was applied)")
    assert "CNI-DN-70a29d9dc18bc4d652ea5" in rp.save(host_ns, 4, mode=iptables_mode)


def test_check_repair_of_one_mapping_whose_setmark_chain_is_missing_names_it(host_ns):
    """check --repair of one mapping met the same refusal three times (exit 1, "gave up
    after 3 tries"); now it names it as the whole-node repair does: not repaired, why,
    the problem still reported (exit 1), nothing changed."""
    args = ["check", "--repair", *ADD[1:], "--netns", host_ns, "-p", "8080:80"]
    args += ["--external-setmark-chain", "KUBE-MARK-MASQ", "--cni-cache-dir", str(host_ns)]
    before = _state(host_ns)
    done = run(args)
    assert done.returncode == 1, done.stderr
    assert "tries" not in done.stderr and "Traceback" not in done.stderr
    assert (
        "could not repair IPv4 mynet/abc123 (CNI-DN-70a29d9dc18bc4d652ea5): its"
        " --external-setmark-chain KUBE-MARK-MASQ does not exist in the IPv4 nat table"
        " (the plugin does not create it: restore it, then repair again)"
    ) in done.stderr
    assert "missing-chain" in done.stdout
    assert _state(host_ns) == before


@pytest.mark.parametrize("refusal", ["setmark-options", "setmark-cni-config", "unwritable"])
def test_one_mapping_check_offers_no_repair_that_refuses_to_set_the_chain_up(
    host_ns, iptables_mode, tmp_path, refusal
):
    """One mapping's check (`check --network ... -p ...`, or `--cni-config`) offered
    `--repair` (missing-chain; missing-rules and extra-entry) where that repair refuses
    the chain before it tries (`could not repair IPv4 mynet/abc123 ...`, exit 1,
    nothing written): its externalSetMarkChain KUBE-MARK-MASQ missing, or a rule
    entering its chain with control characters in its comment (another tool's:
    iptables-restore cannot be given it back). Every run the same: a cron job's loop.
    The rows name no fix and say why in the repair's words, as for a port move."""
    ports = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
    given = ["--netns", host_ns, "--iptables", iptables_mode, "--cni-cache-dir", str(tmp_path)]
    if refusal == "setmark-cni-config":
        conf = rp.plugin_conf("mynet", ["10.88.0.5/16"], ports,
                              external_setmark_chain="KUBE-MARK-MASQ")  # fmt: skip
        (tmp_path / "conf.json").write_text(json.dumps(conf))
        given += ["--container", "abc123", "--cni-config", str(tmp_path / "conf.json")]
    else:
        given += [*ADD[1:], "-p", "8080:80"]
    if refusal == "setmark-options":
        given += ["--external-setmark-chain", "KUBE-MARK-MASQ"]
    if refusal == "unwritable":
        conf = rp.plugin_conf("mynet", ["10.88.0.5/16"], ports)
        rp.run_plugin("ADD", host_ns, "abc123", conf, check=True, mode=iptables_mode)
        rp.iptables(host_ns, ["-t", "nat", "-F", CHAIN], mode=iptables_mode)
        rp.iptables(host_ns, ["-t", "nat", "-I", "CNI-HOSTPORT-DNAT", "-p", "tcp", "--dport",
                              "9999", "-m", "comment", "--comment", "ev\x1b[2Jil", "-j", CHAIN],
                    mode=iptables_mode)  # fmt: skip
    _offers_no_repair_it_refuses(given, host_ns, iptables_mode, refusal)


def _offers_no_repair_it_refuses(given: list, ns: str, mode: str, refusal: str) -> None:
    """`check GIVEN` finds mynet/abc123's chain (CHAIN) wanting what `refusal` stops its
    --repair from making (setmark*, unwritable: it cannot set the chain up; port: it
    would take a port), and names no fix: each row says why in the words of the
    repair's `could not repair` line; that repair changes nothing, the next check is
    the same."""
    checked = run(["check", *given, "-o", "json"])
    assert checked.returncode == 1, checked.stdout + checked.stderr
    rows = json.loads(checked.stdout)["problems"]
    kinds = {"unwritable": ("missing-rules", "extra-entry"), "port": ("missing-rules",)}
    assert {(r["kind"], r["chain"]) for r in rows} == {
        (kind, CHAIN) for kind in kinds.get(refusal, ("missing-chain",))
    }, rows
    assert [r["fix"] for r in rows] == [None] * len(rows), rows  # (before: with --repair)
    before = _modal_state(ns, mode)
    repaired = run(["check", "--repair", *given, "-o", "json"])
    assert repaired.returncode == 1, repaired.stdout + repaired.stderr
    assert _modal_state(ns, mode) == before
    start = f"could not repair IPv4 mynet/abc123 ({CHAIN}): "
    (line,) = [line for line in repaired.stderr.splitlines() if start in line]
    why = line.split(start, 1)[1]
    assert all(r["why"].endswith(f"--repair would leave it as it is: {why}") for r in rows), rows
    again = run(["check", *given, "-o", "json"])
    assert json.loads(again.stdout)["problems"] == rows


@pytest.mark.parametrize("refusal", ["setmark", "unwritable"])
def test_node_check_offers_no_repair_that_refuses_to_set_a_cached_chain_up(
    host_ns, iptables_mode, tmp_path, refusal
):
    """The node's check (`check --cni-cache-dir ...`) of a cached container (Debian's
    plugin ADD) offered `portmapctl check --repair` where that repair refuses its chain
    before it tries, as the one mapping's check did: its chain lost and its
    externalSetMarkChain KUBE-MARK-MASQ deleted (missing-chain), or a rule entering its
    chain with control characters in its comment (another tool's). `check --repair`
    said `could not repair IPv4 mynet/abc123 ...` and wrote nothing, every run: a cron
    job's loop. The rows name no fix and say why in the repair's words."""
    cache = tmp_path / "cni"
    ports = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
    extra = {"external_setmark_chain": "KUBE-MARK-MASQ"} if refusal == "setmark" else {}
    if extra:
        rp.iptables(host_ns, ["-t", "nat", "-N", "KUBE-MARK-MASQ"], mode=iptables_mode)
    conf = rp.plugin_conf("mynet", ["10.88.0.5/16"], ports, **extra)
    rp.run_plugin("ADD", host_ns, "abc123", conf, check=True, mode=iptables_mode)
    rp.write_cni_cache(cache, "mynet", "abc123", "eth0", conf, ports, ["10.88.0.5/16"])

    def nat(*args: str) -> None:
        rp.iptables(host_ns, ["-t", "nat", *args], mode=iptables_mode)

    nat("-F", CHAIN)
    if refusal == "setmark":
        nat("-F", "CNI-HOSTPORT-DNAT")  # (its entry rule: the chain can go then)
        nat("-X", CHAIN)
        nat("-X", "KUBE-MARK-MASQ")
    else:
        nat("-I", "CNI-HOSTPORT-DNAT", "-p", "tcp", "--dport", "9999", "-m", "comment",
            "--comment", "ev\x1b[2Jil", "-j", CHAIN)  # fmt: skip
    given = ["--netns", host_ns, "--iptables", iptables_mode, "--cni-cache-dir", str(cache)]
    text = run(["check", *given])
    assert text.returncode == 1 and REPAIR_COMMAND not in text.stdout, text.stdout
    _offers_no_repair_it_refuses(given, host_ns, iptables_mode, refusal)


def test_node_check_offers_no_repair_that_would_take_a_port(host_ns, iptables_mode, tmp_path):
    """Two cached containers on one host port (Debian's plugin ADDs: abc123's entry
    rule first), abc123's chain flushed: def456 gets tcp/8080 now. The node's check
    offered `portmapctl check --repair` (missing-rules) on every run, while that repair
    left the chain ("could not repair IPv4 mynet/abc123 ...: its chain would take
    tcp/8080 from mynet/def456 ...; a repair never moves a port between mappings",
    exit 1) and wrote nothing: a cron job's loop. The row names no fix and says why in
    the repair's words; def456 keeps the port."""
    cache = tmp_path / "cni"
    ports = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
    for cid, ip in (("abc123", "10.88.0.5/16"), ("def456", "10.88.0.6/16")):
        conf = rp.plugin_conf("mynet", [ip], ports)
        rp.run_plugin("ADD", host_ns, cid, conf, check=True, mode=iptables_mode)
        rp.write_cni_cache(cache, "mynet", cid, "eth0", conf, ports, [ip])
    rp.iptables(host_ns, ["-t", "nat", "-F", CHAIN], mode=iptables_mode)
    given = ["--netns", host_ns, "--iptables", iptables_mode, "--cni-cache-dir", str(cache)]
    text = run(["check", *given])
    assert text.returncode == 1 and REPAIR_COMMAND not in text.stdout, text.stdout
    _offers_no_repair_it_refuses(given, host_ns, iptables_mode, "port")
    assert "would take tcp/8080 from mynet/def456" in text.stdout, text.stdout
