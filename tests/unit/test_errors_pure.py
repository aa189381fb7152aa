"""(The tests of this subject that need root are in tests/kernel/test_errors.py.)

Bad input and a bad environment: one line on stderr, the SPEC §4 exit code,
no traceback, nothing changed."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from pmctl import assert_error, ok, run

FIXTURES = Path(__file__).parents[1] / "fixtures"


def test_missing_cni_config_file_is_bad_input(tmp_path):
    assert_error(
        run(["add", "--container", "abc123", "--cni-config", str(tmp_path / "nope")]),
        2,
        "cannot read --cni-config",
    )


@pytest.mark.parametrize(
    "content, words",
    [
        ("garbage\n", "not iptables-save output"),
        ("*nat\n:PREROUTING ACCEPT [0:0]\n", "no COMMIT"),
        ("*nat\n\x00\x00\nCOMMIT\n", "binary"),
        (b"\xff\xfe\x00".decode("latin-1"), "not text"),
    ],
)
def test_malformed_snapshot_is_bad_input(tmp_path, content, words):
    path = tmp_path / "dump"
    path.write_bytes(content.encode("latin-1"))
    assert_error(run(["list", "--snapshot", str(path)]), 2, words, str(path))


def test_missing_snapshot_is_bad_input(tmp_path):
    assert_error(run(["list", "--snapshot", str(tmp_path / "nope")]), 2, "cannot read snapshot")


@pytest.mark.parametrize("flag", ["-v", "--verbose"])
def test_verbose_adds_the_traceback_and_keeps_the_exit_code(tmp_path, flag):
    """-v shows where an error came from; before, it re-raised the error and Python
    exited 1 (check's "problems found") whatever SPEC §4 gives: 2 here."""
    done = run(["list", "--snapshot", str(tmp_path / "nope"), flag])
    assert done.returncode == 2, done.stderr
    assert "Traceback" in done.stderr and done.stdout == ""
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("portmapctl: error: cannot read snapshot"), last


def test_malformed_cache_file_is_a_warning_naming_the_file(tmp_path):
    """A cache file is a record of the node, not the user's input (SPEC §5): one
    warning line naming it, and list goes on (its container is live by the name)."""
    results = tmp_path / "results"
    results.mkdir()
    bad = results / "mynet-abc123-eth0"
    bad.write_text("{not json")
    done = run(
        ["list", "--snapshot", str(FIXTURES / "basic.v4.save"), "--cni-cache-dir", str(tmp_path)]
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("portmapctl: warning: ") and str(bad) in line
    assert "not valid JSON" in line and "stale" not in done.stdout


def test_help_and_version_work_and_exit_zero():
    assert ok(["--version"]).startswith("portmapctl ")
    for command in ([], ["list"], ["add"]):
        assert "Examples" in ok([*command, "--help"])


def test_no_command_is_a_usage_error_with_the_help_on_stderr():
    """SPEC §4: a usage error is exit 2; the help it shows is for the person, not for
    the script that forgot the command (stdout stays empty). Asked for, it is the
    result: stdout, exit 0."""
    done = run([])
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("Usage: portmapctl ") and "Examples" in done.stderr
    asked = run(["--help"])
    assert asked.returncode == 0 and asked.stderr == ""
    assert asked.stdout == done.stderr


def test_ctrl_c_that_python_could_only_print_is_taken_again():
    """A Ctrl-C landing in code whose exceptions Python prints and drops (a __del__, a
    weakref callback such as the import system's) must still end the command: the
    signal is sent again, and taken where it can be raised."""
    from portmapctl.cli import Interrupted, _ctrl_c_raises_interrupted

    class Dropping:
        def __del__(self) -> None:
            raise Interrupted()

    # (What it was: a run started in the background of a script ignores SIGINT.)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(Interrupted):
        with _ctrl_c_raises_interrupted():
            Dropping()  # its __del__ raises: Python can only report that
            time.sleep(5)  # the signal sent again ends this at once
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize(
    "ports, options, words",
    [
        ([{"hostPort": "7070", "containerPort": 70, "protocol": "tcp"}], {},
         "invalid hostPort '7070': a JSON number, not a string"),
        ([{"hostPort": 7070, "containerPort": "70", "protocol": "tcp"}], {},
         "invalid containerPort '70': a JSON number, not a string"),
        ([{"hostPort": 7070, "containerPort": 70, "protocol": "tcp"}],
         {"conditionsV4": "-s 1.2.3.4"}, "invalid conditionsV4 '-s 1.2.3.4': a list of strings"),
    ],
)  # fmt: skip
def test_a_config_value_the_plugins_go_types_refuse_is_bad_input(tmp_path, ports, options, words):
    """The plugin's ADD fails on a string where its Go type is an int or a []string
    (json.Unmarshal), making nothing: `add --cni-config` wrote the rules it seemed to
    mean (a string hostPort as the port, a string conditionsV4 as shell words), and
    check expected them of a cache entry so spelled."""
    conf = {
        "cniVersion": "0.4.0", "name": "mynet", "type": "portmap", **options,
        "runtimeConfig": {"portMappings": ports},
        "prevResult": {"cniVersion": "0.4.0", "ips": [{"address": "10.88.0.5/16"}]},
    }  # fmt: skip
    path = tmp_path / "conf.json"
    path.write_text(json.dumps(conf))
    done = run(["add", "--container", "abc123", "--cni-config", str(path), "--dry-run"])
    assert_error(done, 2, words, "the plugin's ADD fails on it")


@pytest.mark.parametrize("where", ["dir", "results"])
def test_a_cni_cache_that_is_a_file_is_bad_input(tmp_path, where):
    """`--cni-cache-dir` naming a file (or a `results` that is one) was "no CNI cache
    at …" (list: every chain stale unjudged; gc: no source of liveness): a typo read
    as a node without a cache."""
    if where == "dir":
        given = tmp_path / "plainfile"
        given.write_text("")
        named = given
    else:
        given = tmp_path
        named = tmp_path / "results"
        named.write_text("")
    for command in ("list", "check"):
        done = run([command, "--snapshot", str(FIXTURES / "basic.v4.save"),
                    "--cni-cache-dir", str(given)])  # fmt: skip
        assert_error(done, 2, f"the CNI cache {named} is not a directory")


@pytest.mark.parametrize("where", ["loop", "results-loop", "too-long"])
def test_a_cni_cache_path_that_can_never_be_a_directory_is_bad_input(tmp_path, where):
    """`--cni-cache-dir` naming a symlink loop (or a `results` that is one), or a name
    longer than the system takes, was "cannot read the CNI cache" exit 3, the
    environment's code (not root, no iptables): nothing on the node makes such a path a
    directory, no run as root reads it; the path given is wrong, as one naming a file is
    (exit 2)."""
    if where == "loop":
        (tmp_path / "a").symlink_to(tmp_path / "b")
        (tmp_path / "b").symlink_to(tmp_path / "a")
        given, named = tmp_path / "a", tmp_path / "a" / "results"
    elif where == "results-loop":
        (tmp_path / "results").symlink_to(tmp_path / "results")
        given, named = tmp_path, tmp_path / "results"
    else:
        given = tmp_path / ("x" * 300)
        named = given / "results"
    for command in ("list", "check"):
        done = run([command, "--snapshot", str(FIXTURES / "basic.v4.save"),
                    "--cni-cache-dir", str(given)])  # fmt: skip
        assert_error(done, 2, f"the CNI cache {named}", "cannot be a directory")


@pytest.mark.parametrize(
    "given, family, words",
    [("--snapshot", "6", "--family 6: no IPv6 dump to read (give --snapshot6 FILE)"),
     ("--snapshot6", "v4", "--family v4: no IPv4 dump to read (give --snapshot FILE)")],
)  # fmt: skip
@pytest.mark.parametrize("command", ["list", "check"])
def test_a_family_no_snapshot_holds_is_bad_input(command, given, family, words):
    """`list --snapshot v4.save --family 6` read nothing and printed "no portmap chains
    found", exit 0 (SPEC §5: never "no chains found" for a table not read)."""
    dump = FIXTURES / ("basic.v4.save" if given == "--snapshot" else "basic.v6.save")
    done = run([command, given, str(dump), "--family", family])
    assert_error(done, 2, words)


def test_a_module_that_cannot_be_imported_is_the_environments_exit_3(tmp_path):
    """typer not importable by this user (installed for root alone): it was "internal
    error", exit 1, which a cron script reads as check's "problems found"."""
    shadow = tmp_path / "typer"
    shadow.mkdir()
    (shadow / "__init__.py").write_text(
        'raise ImportError("No module named typer (test)", name="typer")\n'
    )
    done = run(["check", "--snapshot", str(FIXTURES / "basic.v4.save"), "-o", "wide",
                "--cni-cache-dir", str(tmp_path / "none")], env={"PYTHONPATH": str(tmp_path)})  # fmt: skip
    assert_error(done, 3, "cannot import typer", "reinstall")


def test_a_cni_config_without_addresses_says_where_they_come_from(tmp_path):
    """It said "give --ip IP/PREFIX", which --cni-config refuses beside it."""
    conf = {"cniVersion": "0.4.0", "name": "mynet", "type": "portmap",
            "runtimeConfig": {"portMappings": [{"hostPort": 80, "containerPort": 80,
                                                "protocol": "tcp"}]}}  # fmt: skip
    path = tmp_path / "conf.json"
    path.write_text(json.dumps(conf))
    done = run(["add", "--container", "abc123", "--cni-config", str(path), "--dry-run"])
    assert_error(done, 2, "no container address: its prevResult has none")
    assert "--ip" not in done.stderr


def test_a_port_mapping_in_an_error_is_quoted_as_the_file_spells_it(tmp_path):
    """It was Python's repr ({'hostPort': 7070, ...}), which no CNI file holds."""
    conf = {
        "cniVersion": "0.4.0", "name": "mynet", "type": "portmap",
        "runtimeConfig": {"portMappings": [{"hostPort": 7070, "containerPort": 70}]},
        "prevResult": {"cniVersion": "0.4.0", "ips": [{"address": "10.88.0.5/16"}]},
    }  # fmt: skip
    path = tmp_path / "conf.json"
    path.write_text(json.dumps(conf))
    done = run(["add", "--container", "abc123", "--cni-config", str(path), "--dry-run"])
    assert_error(done, 2, 'port mapping {"hostPort": 7070, "containerPort": 70}: no protocol')


@pytest.mark.parametrize("spelling", ["V4", "v4", "4"])
def test_the_choices_are_taken_in_any_case(spelling):
    """--proto TCP was taken, --family V4, --backend NFTABLES, -o JSON were not."""
    args = ["list", "--snapshot", str(FIXTURES / "basic.v4.save"), "--cni-cache-dir", "/x"]
    done = run([*args, "--family", spelling, "-o", "JSON", "--backend", "IPTABLES"])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["mappings"]


def test_backend_nftables_without_an_nft_dump_is_bad_input():
    """`list --snapshot v4.save --backend nftables` read nothing and said "no portmap
    chains found", exit 0, as a family without its dump did."""
    done = run(["list", "--snapshot", str(FIXTURES / "basic.v4.save"), "--backend", "nftables"])
    assert_error(done, 2, "--backend nftables: no nftables dump to read (give --nft-snapshot")


@pytest.mark.parametrize(
    ("chain", "why"),
    [
        ("PREROUTING", "a built-in chain: iptables refuses a jump to it"),
        ("CNI-HOSTPORT-DNAT", "a portmap chain, not a chain that marks"),
        ("CNI-DN-6c0f393d4121382ce7fde", "a portmap chain, not a chain that marks"),
    ],
)
def test_a_setmark_chain_that_cannot_mark_is_bad_input(tmp_path, chain, why):
    """helper-138: another container's CNI-DN- chain was taken (its DNAT rules for this
    container's marked packets), and PREROUTING or CNI-HOSTPORT-DNAT failed three
    tries with exit 1 and a cut message. Refused before anything is read (no namespace
    needed), in a config file as on the command line."""
    flags = ["add", "--network", "podman", "--container", "9999bbbb6666", "--ip",
             "10.88.0.40/16", "-p", "9700:80", "--netns", "/nonexistent"]  # fmt: skip
    assert_error(run([*flags, "--external-setmark-chain", chain]), 2, chain, why)
    conf = {"cniVersion": "0.4.0", "name": "podman", "type": "portmap",
            "externalSetMarkChain": chain,
            "runtimeConfig": {"portMappings": [{"hostPort": 9700, "containerPort": 80,
                                                "protocol": "tcp"}]},
            "prevResult": {"ips": [{"address": "10.88.0.40/16"}]}}  # fmt: skip
    path = tmp_path / "conf.json"
    path.write_text(json.dumps(conf))
    done = run(["add", "--container", "c1", "--cni-config", str(path), "--netns", "/nonexistent"])
    assert_error(done, 2, str(path), "externalSetMarkChain", why)


def test_an_iptables_save_that_prints_garbage_is_the_environment_not_bad_input():
    """helper-138 bind-mounted a script printing random bytes over xtables-nft-multi:
    every command said exit 2 (bad input) of the kernel's table. A table that cannot be
    read is exit 3 (SPEC §4, §5), one line naming the tool."""
    from portmapctl.errors import HostProblem
    from portmapctl.iptables.access.restore import _parse

    for text in ("\x00\x01\x02garbage", "*nat\n:PREROUTING ACCEPT [0:0]\n-A\x7f\n"):
        with pytest.raises(HostProblem) as raised:
            _parse(text, 4, "/usr/sbin/iptables-nft-save")
        assert raised.value.exit_code == 3
        message = str(raised.value)
        assert (
            "\n" not in message and "cannot be read through /usr/sbin/iptables-nft-save" in message
        )


@pytest.mark.parametrize("command", ["add --dry-run", "check"])
@pytest.mark.parametrize("name", ["\udcff", "eth\udce9", "\udcff" * 16])
def test_an_interface_name_not_utf8_is_bad_input(tmp_path, command, name):
    """A byte that is not UTF-8 in --ifname (held as a lone surrogate) ended in
    `internal error: UnicodeEncodeError`, exit 3, where any other bad name is exit 2."""
    mapping = ["--network", "mynet", "--container", "abc123", "--ip", "10.88.0.5/16"]
    snapshot = ["--snapshot", str(FIXTURES / "basic.v4.save")] if command == "check" else []
    done = run(
        [*command.split(), *mapping, "-p", "8080:80", "--ifname", name, *snapshot,
         "--cni-cache-dir", str(tmp_path)],
        unprivileged=True,
    )  # fmt: skip
    assert_error(done, 2, "invalid interface name", "\\x")
