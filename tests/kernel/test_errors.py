"""Bad input and a bad environment: one line on stderr, the SPEC §4 exit code,
no traceback, nothing changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import realplugin as rp
from pmctl import assert_error, ok, run

FIXTURES = Path(__file__).parents[1] / "fixtures"
ADD = ["add", "--network", "mynet", "--container", "abc123", "--ip", "10.88.0.5/16"]


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
            json.dumps({"name": "mynet", "prevResult": {"ips": [{"address": "10.0.0.1"}]}}),
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


