"""Backend selection and the read-only snapshot backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pmctl import ok

from portmapctl.core.backend import Flavour, IptablesAccess
from portmapctl.errors import BadInput, HostProblem
from portmapctl.host import paths
from portmapctl.iptables.access import host_flavour, host_flavours, open_backend
from portmapctl.iptables.access.snapshot import SnapshotBackend
from portmapctl.iptables.transaction import Transaction

FIXTURES = Path(__file__).parents[1] / "fixtures"


@pytest.mark.parametrize("flavour", ["nft", "legacy"])
def test_auto_follows_the_iptables_command_on_path(tmp_path, monkeypatch, flavour):
    """The plugin runs `iptables`; auto picks whatever that is, as the plugin would."""
    target = f"/usr/sbin/iptables-{flavour}"
    if not os.path.exists(target):
        pytest.skip(f"{target} not installed")
    (tmp_path / "iptables").symlink_to(target)
    # (ip6tables too: the sbin directories' own, of the host's alternative, would be
    # the other flavour's for IPv6, which auto refuses for both families.)
    (tmp_path / "ip6tables").symlink_to(f"/usr/sbin/ip6tables-{flavour}")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert host_flavour() == flavour
    assert open_backend("auto").name == flavour
    assert host_flavour((4,)) == flavour


def test_auto_takes_each_familys_own_tool_where_the_alternatives_differ(tmp_path, monkeypatch):
    """The plugin runs `iptables` for IPv4 and `ip6tables` for IPv6 (Debian's
    alternatives are set one by one): each family is read and written in its own
    tool's flavour (tests/kernel/test_legacy_nodes.py has the real plugin's node)."""
    for tool, target in (("iptables", "iptables-legacy"), ("ip6tables", "ip6tables-nft")):
        if not os.path.exists(f"/usr/sbin/{target}"):
            pytest.skip(f"/usr/sbin/{target} not installed")
        (tmp_path / tool).symlink_to(f"/usr/sbin/{target}")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert host_flavour((4,)) == "legacy"
    assert host_flavour((6,)) == "nft"
    assert open_backend("auto", families=(6,)).name == "nft"
    assert host_flavours() == {4: "legacy", 6: "nft"}
    both = open_backend("auto")
    assert both.name == "auto"  # (a kernel backend of no one flavour: flavour_guard)
    assert {f: both.of(f).flavour for f in (4, 6)} == {4: "legacy", 6: "nft"}
    assert {f: both.restore_tool(f) for f in (4, 6)} == {
        4: "iptables-legacy-restore",
        6: "ip6tables-nft-restore",
    }
    # add's write without a read trusts -C where each family's own restore does.
    assert (both.checks(4), both.checks(6)) == (True, True)
    with pytest.raises(HostProblem, match="alternatives differ"):
        host_flavour()
    with pytest.raises(HostProblem, match="this host's ip6tables is nf_tables"):
        open_backend("iptc", families=(4, 6))


def test_no_iptables_at_all_is_an_environment_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(paths, "SBIN_DIRS", str(tmp_path))
    with pytest.raises(HostProblem, match="no iptables"):
        open_backend("auto")


def test_iptables_off_path_is_found_in_sbin(tmp_path, monkeypatch):
    """cron's PATH (/usr/bin:/bin) has no iptables: the sbin directories do."""
    (tmp_path / "bin").mkdir()
    sbin = tmp_path / "sbin"
    sbin.mkdir()
    multi = sbin / "xtables-nft-multi"
    multi.write_text("#!/bin/sh\nexit 0\n")
    multi.chmod(0o755)
    (sbin / "iptables").symlink_to(multi)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setattr(paths, "SBIN_DIRS", str(sbin))
    assert host_flavour() == "nft"


def test_iptables_access_words_and_the_flavours_they_write():
    """--iptables's words, in the order help and errors list them, and the tables each
    writes: python-iptables (libiptc) legacy ones only; auto the host tools' own."""
    assert [str(a) for a in IptablesAccess] == ["auto", "nft", "legacy", "iptc"]
    assert {a: a.flavour for a in IptablesAccess} == {
        IptablesAccess.AUTO: None,
        IptablesAccess.NFT: Flavour.NFT,
        IptablesAccess.LEGACY: Flavour.LEGACY,
        IptablesAccess.IPTC: Flavour.LEGACY,
    }
    # NFT and LEGACY are the flavours' own words.
    assert {IptablesAccess(f) for f in Flavour} == {IptablesAccess.NFT, IptablesAccess.LEGACY}


def test_unknown_backend_is_bad_input():
    with pytest.raises(BadInput, match="unknown iptables flavour"):
        open_backend("pf")


def test_snapshot_reads_each_family_and_refuses_to_write():
    backend = SnapshotBackend({4: str(FIXTURES / "basic.v4.save")})
    assert backend.read(4).has_chain("CNI-DN-70a29d9dc18bc4d652ea5")
    assert backend.read(6).chains == {}  # no dump given for IPv6: nothing to see
    with pytest.raises(BadInput, match="read-only"):
        backend.apply(Transaction(4))


def test_list_reads_a_snapshot_from_stdin():
    text = (FIXTURES / "dual-stack.v6.save").read_text()
    doc = json.loads(ok(["list", "--snapshot6", "-", "-o", "json"], stdin=text))
    assert {m["family"] for m in doc["mappings"]} == {6}
    assert {m["container_ip"] for m in doc["mappings"]} == {"fd00::5"}


def test_legacy_tables_that_do_not_exist_are_read_as_empty_without_a_save(tmp_path, monkeypatch):
    """iptables-legacy-save (and iptables-legacy -S) create the empty legacy nat table
    they read where there was none: a family whose table the kernel does not list is
    read as empty and nothing is run for it; the other family is saved as usual."""
    from portmapctl.iptables.access import restore

    ran = tmp_path / "ran"
    for tool in ("iptables-legacy-save", "iptables-legacy", "ip6tables-legacy-save"):
        script = tmp_path / tool
        body = "*nat\n:PREROUTING ACCEPT [0:0]\n:CNI-HOSTPORT-DNAT - [0:0]\nCOMMIT\n"
        script.write_text(f"#!/bin/sh\necho {tool} >> {ran}\nprintf '{body}'\n")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(paths, "SBIN_DIRS", str(tmp_path))
    monkeypatch.setattr(restore, "legacy_read_skipped", lambda family: family == 4)
    backend = restore.RestoreBackend("legacy")
    tables = backend.read_families((4, 6))
    assert list(tables) == [4, 6]
    built_in = ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"]
    assert list(tables[4].chains) == built_in and "CNI-HOSTPORT-DNAT" in tables[6].chains
    assert not any(chain.rules for chain in tables[4].chains.values())
    assert backend.read(4) == tables[4]
    assert backend.list_chain(4, "PREROUTING") is None
    assert ran.read_text().split() == ["ip6tables-legacy-save"]


def test_no_ip6tables_names_the_package_and_the_way_round_it(tmp_path, monkeypatch):
    """Alpine and minimal images ship ip6tables apart: with only iptables there, every
    command's default `--family all` stops at IPv6 (exit 3). The line says what to
    install, and that --family 4 looks at IPv4 alone (0.1: 'install the iptables
    package', which is installed)."""
    from portmapctl.iptables.access import restore

    save = tmp_path / "iptables-nft-save"
    save.write_text("#!/bin/sh\nprintf '*nat\\n:PREROUTING ACCEPT [0:0]\\nCOMMIT\\n'\n")
    save.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(paths, "SBIN_DIRS", str(tmp_path))
    backend = restore.RestoreBackend("nft")
    assert "PREROUTING" in backend.read(4).chains
    with pytest.raises(HostProblem) as raised:
        backend.read(6)
    assert str(raised.value) == (
        "ip6tables-nft-save not found: install ip6tables (nft),"
        " or give --family 4 to look at IPv4 only"
    )


def test_a_dry_runs_header_names_the_legacy_restore_tool_there_is_before_1_8(tmp_path, monkeypatch):
    """The header above a dry run's text is the command to pipe it into. iptables
    before 1.8 (CentOS 7) names its legacy tools plainly, with no iptables-legacy-restore:
    there python-iptables (legacy tables) named that missing command, where
    --iptables legacy named iptables-restore."""
    from portmapctl.iptables.access import restore_tools
    from portmapctl.iptables.access.iptc import IptcBackend
    from portmapctl.iptables.access.restore import RestoreBackend

    for command in ("iptables", "ip6tables"):
        for tool in (command, f"{command}-restore"):
            script = tmp_path / tool
            script.write_text("#!/bin/sh\necho 'iptables v1.4.21'\n")
            script.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(paths, "SBIN_DIRS", str(tmp_path))
    plain = {4: "iptables-restore", 6: "ip6tables-restore"}
    assert restore_tools(RestoreBackend("legacy")) == plain
    # Not loading libiptc: only the backend's kind matters here.
    assert restore_tools(IptcBackend.__new__(IptcBackend)) == plain


def test_a_hung_restore_is_run_once_and_ends_the_command_exit_3(tmp_path, monkeypatch):
    """An iptables-restore that does not finish within PORTMAPCTL_IPTABLES_TIMEOUT is
    killed and not run again: ToolTimedOut (exit 3), which no retry loop catches. As an
    ApplyFailed (it may have gone in) Node.converge tried it three times, and add's
    write without a read once more before that: four waits of the timeout, exit 1.
    Through the commands, on a real node: tests/kernel/test_field_faults.py."""
    import ipaddress
    import shutil

    from portmapctl.core.mapping import MappingConfig, PortMapping
    from portmapctl.errors import PortmapctlError
    from portmapctl.iptables.access import restore
    from portmapctl.iptables.chains import wanted_chains
    from portmapctl.iptables.planner import plan_setup
    from portmapctl.ops.add_ahead import write_blind
    from portmapctl.ops.node import Node, NodeOptions

    ran = tmp_path / "ran"
    sleep = shutil.which("sleep")  # (PATH is tmp_path alone)
    for command in ("iptables", "ip6tables"):
        save = tmp_path / f"{command}-legacy-save"
        save.write_text("#!/bin/sh\nprintf '*nat\\n:PREROUTING ACCEPT [0:0]\\nCOMMIT\\n'\n")
        hung = tmp_path / f"{command}-legacy-restore"
        hung.write_text(f"#!/bin/sh\necho {command} >> {ran}\nexec {sleep} 600\n")
        for script in (save, hung):
            script.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(paths, "SBIN_DIRS", str(tmp_path))
    monkeypatch.setattr(restore, "legacy_read_skipped", lambda family: False)
    monkeypatch.setenv("PORTMAPCTL_IPTABLES_TIMEOUT", "0.2")
    config = MappingConfig(
        network="mynet",
        container_id="abc123",
        addresses=(ipaddress.ip_interface("10.88.0.5/16"), ipaddress.ip_interface("fd00::5/64")),
        ports=(PortMapping(8080, 80),),
    )
    backend = restore.RestoreBackend("legacy")
    node = Node(NodeOptions(), backend)

    with pytest.raises(
        PortmapctlError, match="iptables-legacy-restore did not finish within 0.2 s"
    ) as raised:
        node.converge_judged(4, lambda live: plan_setup(wanted_chains(config, 4), live), [])
    assert ran.read_text().split() == ["iptables"]
    assert raised.value.exit_code == 3 and "may have gone in" in str(raised.value)

    # add's write without a read (add_ahead.write_blind): the family that timed out is
    # the last one tried, and add ends with its error (ops/add.py).
    from portmapctl.errors import ToolTimedOut

    timed_out: dict = {}
    wanted = {family: wanted_chains(config, family) for family in (4, 6)}
    assert write_blind(backend, wanted, None, timed_out) == {}
    assert list(timed_out) == [4] and isinstance(timed_out[4], ToolTimedOut)
    assert timed_out[4].maybe_applied
    assert ran.read_text().split() == ["iptables", "iptables"]


def test_an_iptables_that_hangs_when_asked_its_version_is_exit_3(tmp_path, monkeypatch):
    """`--iptables auto` asks `iptables --version` which flavour it is: one that hangs
    was an uncaught timeout after a fixed 10 s ("internal error", exit 1). Now it is
    ToolTimedOut after PORTMAPCTL_IPTABLES_TIMEOUT (exit 3), naming the tool; and the
    command asks once (add's early flavour question re-raises it, it no longer asks
    again)."""
    import shutil

    from portmapctl.errors import ToolTimedOut
    from portmapctl.iptables.access import tool_flavour

    ran = tmp_path / "ran"
    hung = tmp_path / "iptables"
    hung.write_text(f"#!/bin/sh\necho run >> {ran}\nexec {shutil.which('sleep')} 600\n")
    hung.chmod(0o755)
    monkeypatch.setenv("PORTMAPCTL_IPTABLES_TIMEOUT", "0.2")
    with pytest.raises(
        ToolTimedOut, match="iptables --version did not answer within 0.2 s"
    ) as raised:
        tool_flavour(str(hung))
    assert raised.value.exit_code == 3 and ran.read_text().split() == ["run"]
    env = {**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin", "PORTMAPCTL_IPTABLES_TIMEOUT": "0.2"}
    ran.unlink()
    done = subprocess.run(
        [sys.executable, "-m", "portmapctl", "list", "--iptables", "auto", "--backend", "iptables"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "--version did not answer" in done.stderr and len(done.stderr.splitlines()) == 1
    assert "internal error" not in done.stderr
