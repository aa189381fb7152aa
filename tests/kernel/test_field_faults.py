"""Faults met on real nodes (issue 12, items 10, 14-17): one clear line, the SPEC §4
exit code, nothing left running, and what can be finished is finished.

Real faults, in throwaway namespaces: a FIFO where a namespace file should be, an
`iptables-nft-save` that hangs (a wrapper first on PATH), a native nft rule that
iptables-nft cannot show, a foreign rule whose comment is not UTF-8, a full run
directory (a tiny tmpfs), an unreadable cache (capabilities dropped), Ctrl-C while
the interpreter is still importing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest
import realplugin as rp
import run_dir_helpers
from pmctl import assert_error, ok, run
from run_dir_helpers import fill, plant

from portmapctl.iptables.chains import TOPLEVEL_DNAT, chain_name

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
UDP = [{"hostPort": 6000, "containerPort": 60, "protocol": "udp"}]


def _needs_root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("PORTMAPCTL_REQUIRE_NETNS") == "1":
            pytest.fail("PORTMAPCTL_REQUIRE_NETNS=1 but not root", pytrace=False)
        pytest.skip("needs root")


@pytest.fixture
def node(host_ns, tmp_path):
    """A namespace with one plugin-made, cached container (so `ok` means something)."""
    conf = rp.plugin_conf(
        "mynet", ["10.88.0.5/16"], [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
    )
    rp.run_plugin("ADD", host_ns, "live1", conf, check=True)
    cache = tmp_path / "cni"
    rp.write_cni_cache(cache, "mynet", "live1", "eth0", conf, conf["runtimeConfig"]["portMappings"],
                       ["10.88.0.5/16"])  # fmt: skip
    return host_ns, cache


def _gone(pids: List[int], within: float = 5.0) -> bool:
    """Every pid has exited (a zombie waiting for init counts as exited)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        alive = []
        for pid in pids:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                alive.append(pid)
        if not alive:
            return True
        time.sleep(0.1)
    return False


# --- item 17: Ctrl-C during start-up ----------------------------------------------------


@pytest.mark.parametrize(
    "command, module",
    [("check", "typer"), ("list", "base64")],  # a plain list does not import typer
)
def test_ctrl_c_while_importing_is_one_line_and_exit_130(tmp_path, command, module):
    # A KeyboardInterrupt raised by the import of a module the command loads is exactly
    # what Ctrl-C during the slowest part of start-up does, without depending on timing.
    shim = tmp_path / "shim" / module
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise KeyboardInterrupt\n")
    path = f"{shim.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    done = run([command, "--snapshot", str(FIXTURES / "basic.v4.save")], env={"PYTHONPATH": path})
    assert done.returncode == 130, done.stderr
    assert done.stderr == "portmapctl: aborted\n"
    assert done.stdout == ""


def test_ctrl_c_at_any_moment_once_main_runs_is_one_line(tmp_path):
    # Before portmapctl.entry.main runs, the interpreter itself (site, runpy) has the
    # signal and nothing of ours can catch it; from main() on, it is always one line.
    # A cache with entries: an empty one is warned about, before the one line.
    cache = Path(__file__).resolve().parents[2] / "examples" / "cni-cache"
    argv = [sys.executable, "-m", "portmapctl", "list", "--snapshot",
            str(FIXTURES / "basic.v4.save"), "--cni-cache-dir", str(cache)]  # fmt: skip
    ours = 0
    # From early (the interpreter's own start) to late: a fast machine runs the whole
    # command in about 0.1 s, a loaded one takes several times that.
    for delay in (0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.7):
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, env=dict(os.environ, NO_COLOR="1"))  # fmt: skip
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=60)
        if "Traceback" in err:
            assert "portmapctl/entry.py" not in err and "portmapctl/cli" not in err, err
            continue
        assert process.returncode in (0, 130, -signal.SIGINT), (delay, process.returncode, err)
        if err:  # (nothing at all: the signal killed it while it was exiting anyway)
            ours += 1
            assert err.strip().splitlines() == ["portmapctl: aborted"], err
    assert ours, "no interrupt landed in portmapctl's own start-up: the delays are off"


# --- item 16: nothing blocks, nothing hangs ---------------------------------------------


def test_netns_naming_a_fifo_does_not_hang(tmp_path):
    fifo = tmp_path / "ns-fifo"
    os.mkfifo(fifo)
    started = time.monotonic()
    done = run(["list", "--netns", str(fifo)])
    assert time.monotonic() - started < 30
    assert_error(done, 3, "namespace", str(fifo))


def _hanging_save(tmp_path: Path) -> tuple:
    """iptables-nft-save and ip6tables-nft-save that never answer (the pid logged)."""
    folder = tmp_path / "wrap"
    folder.mkdir()
    log = tmp_path / "pids"
    for tool in ("iptables-nft-save", "ip6tables-nft-save"):
        script = folder / tool
        script.write_text(f"#!/bin/bash\necho $$ >> {log}\nexec sleep 600\n")
        script.chmod(0o755)
    env = {"PATH": f"{folder}:{os.environ['PATH']}", "PORTMAPCTL_IPTABLES_TIMEOUT": "2"}
    return env, log


@pytest.mark.parametrize("families", [["--family", "4"], []], ids=["one-save", "two-saves"])
def test_a_hung_iptables_save_is_killed_exit_3(node, tmp_path, families):
    ns, cache = node
    env, log = _hanging_save(tmp_path)
    started = time.monotonic()
    done = run(["list", "--netns", ns, "--iptables", "nft", "--cni-cache-dir", str(cache),
                *families], env=env)  # fmt: skip
    assert time.monotonic() - started < 30
    assert_error(done, 3, "did not answer within 2 s", "iptables-nft-save")
    pids = [int(p) for p in log.read_text().split()]
    assert len(pids) == (1 if families else 2)
    assert _gone(pids), "a save is still running"


@pytest.mark.parametrize("signal_name", ["SEGV", "KILL"])
@pytest.mark.parametrize("command", ["list", "gc"])
@pytest.mark.parametrize("tool", ["iptables-nft-save", "nft"])
def test_a_read_killed_by_a_signal_says_so_and_what_to_do(
    node, tmp_path, signal_name, command, tool
):
    """iptables-save (or `nft -j list`) killed by a signal (a crash, the OOM killer in
    a DaemonSet's memory limit on a node with a big table): the line said
    "iptables-nft-save failed: no error message" ("nft -j list table ip cni_hostport
    failed: failed"), which neither says what happened nor what to do. Now it names
    the signal, says nothing was changed and to run again. Exit 3."""
    ns, cache = node
    folder = tmp_path / "wrap"
    folder.mkdir()
    kill = f"exec kill -{signal_name} $$\n"
    if tool == "nft":  # (its version is asked first: answered, the listing dies)
        scripts = {"nft": f'[ "$1" = --version ] && exec /usr/sbin/nft "$@"\n{kill}'}
    else:
        scripts = {name: kill for name in ("iptables-nft-save", "ip6tables-nft-save")}
    for name, body in scripts.items():
        (folder / name).write_text(f"#!/bin/bash\n{body}")
        (folder / name).chmod(0o755)
    env = {"PATH": f"{folder}:{os.environ['PATH']}"}
    args = [command, "--netns", ns, "--iptables", "nft", "--cni-cache-dir", str(cache)]
    args += ["--yes", "--min-age", "0"] if command == "gc" else []
    before = _nat_save(ns, "nft")
    done = run(args, env=env)
    assert_error(done, 3, f"{tool} was killed by SIG{signal_name}" if tool != "nft" else
                 f"was killed by SIG{signal_name}", "nothing was changed", "run again")  # fmt: skip
    assert _nat_save(ns, "nft") == before


def _hanging_restore(tmp_path: Path, mode: str) -> tuple:
    """iptables-MODE-restore and ip6tables-MODE-restore that never answer (each start
    logged); the saves and listings are the real ones."""
    folder = tmp_path / "wrap"
    folder.mkdir()
    log = tmp_path / "restores"
    log.touch()
    for tool in (f"iptables-{mode}-restore", f"ip6tables-{mode}-restore"):
        script = folder / tool
        script.write_text(f"#!/bin/bash\necho $$ >> {log}\nexec sleep 600\n")
        script.chmod(0o755)
    # (PORTMAPCTL_NFT_BATCH=0: on iptables-nft, add's and gc's writes go through the
    # restore too, not one nf_tables batch.)
    env = {"PATH": f"{folder}:{os.environ['PATH']}", "PORTMAPCTL_IPTABLES_TIMEOUT": "1",
           "PORTMAPCTL_NFT_BATCH": "0"}  # fmt: skip
    return env, log


def _nat_save(ns: str, mode: str) -> str:
    done = subprocess.run(["ip", "netns", "exec", ns, f"iptables-{mode}-save", "-t", "nat"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return "".join(line for line in done.stdout.splitlines(True) if not line.startswith("#"))


@pytest.mark.parametrize("command", ["add", "check --repair", "gc"])
def test_a_hung_iptables_restore_is_run_once_then_exit_3(host_ns, iptables_mode, tmp_path, command):
    """An iptables-restore that hangs is waited for once: the first timeout ends the
    command, exit 3, naming the tool and the timeout. It was an ApplyFailed (it may
    have gone in), tried again like a refusal: add waited the timeout 4 times (legacy,
    or iptables-nft without its batch), check --repair 6, gc 3, then exit 1: an
    unattended run stuck several times as long as the timeout says."""
    ns, mode = host_ns, iptables_mode
    conf = rp.plugin_conf("mynet", ["10.88.0.5/16"], [rp.port_mapping(8080, 80)])
    rp.run_plugin("ADD", ns, "live1", conf, mode=mode, check=True)
    cache = tmp_path / "cni"
    rp.write_cni_cache(cache, "mynet", "live1", "eth0", conf, conf["runtimeConfig"]["portMappings"],
                       ["10.88.0.5/16"])  # fmt: skip
    common = ["--netns", ns, "--iptables", mode, "--cni-cache-dir", str(cache)]
    if command == "add":
        args = ["add", *common, "--network", "mynet", "--container", "new1",
                "--ip", "10.88.0.6/16", "-p", "8081:80", "--no-flush-udp"]  # fmt: skip
    elif command == "check --repair":
        missing = rp.plugin_conf("mynet", ["10.88.0.7/16"], [rp.port_mapping(8082, 80)])
        rp.write_cni_cache(cache, "mynet", "miss1", "eth0", missing,
                           missing["runtimeConfig"]["portMappings"], ["10.88.0.7/16"])  # fmt: skip
        args = ["check", "--repair", *common]
    else:
        stale = rp.plugin_conf("mynet", ["10.88.0.8/16"], [rp.port_mapping(8083, 80)])
        rp.run_plugin("ADD", ns, "gone1", stale, mode=mode, check=True)  # never cached
        args = ["gc", *common, "--yes", "--min-age", "0"]
    env, log = _hanging_restore(tmp_path, mode)
    before = _nat_save(ns, mode)
    done = run(args, env=env)
    # (gc reads again: what it removes is still there, but gone1's entry rule is the
    # last, as the plugin's ADD of it again after a commit would leave it: it cannot
    # say it did not go in)
    said = "may have gone in"
    assert_error(done, 3, "did not finish within 1 s", f"iptables-{mode}-restore", said)
    pids = [int(p) for p in log.read_text().split()]
    assert len(pids) == 1, f"the hung restore was started {len(pids)} times"
    assert _gone(pids), "a restore is still running"
    assert _nat_save(ns, mode) == before  # (this restore never commits)


def test_a_gc_restore_that_went_in_then_hung_leaves_no_sighting_of_what_it_removed(
    host_ns, iptables_mode, tmp_path
):
    """gc's restore committed, then did not exit (a stuck iptables, killed at the
    timeout: "may have gone in"). gc saved, as for a removal that had not gone in, the
    sightings of the chains it planned to remove, first seen before. The same container
    started again under its ID (same address and ports: the same chain and rules),
    seen by the next gc during its ADD before libcni wrote its cache entry, had that
    old sighting pass --min-age and lost its chain at once. Now a family whose write
    may have gone in keeps no sighting: the chain is pending, first seen now."""
    ns, mode = host_ns, iptables_mode
    (tmp_path / "cni" / "results").mkdir(parents=True)
    stale = rp.plugin_conf("mynet", ["10.88.0.8/16"], [rp.port_mapping(8083, 80)])
    rp.run_plugin("ADD", ns, "gone1", stale, mode=mode, check=True)  # never cached
    args = ["gc", "--netns", ns, "--iptables", mode, "--cni-cache-dir", str(tmp_path / "cni"),
            "--keep", "other1", "--family", "4", "--yes", "--min-age", "1s"]  # fmt: skip
    env = {"PORTMAPCTL_RUN_DIR": str(tmp_path / "run")}
    ok(args, env=env)  # sighted
    time.sleep(1.2)
    folder = tmp_path / "wrap"
    folder.mkdir()
    tool = f"iptables-{mode}-restore"
    (folder / tool).write_text(f'#!/bin/bash\n/usr/sbin/{tool} "$@"\nexec sleep 600\n')
    (folder / tool).chmod(0o755)
    hung = {"PATH": f"{folder}:{os.environ['PATH']}", "PORTMAPCTL_IPTABLES_TIMEOUT": "1",
            "PORTMAPCTL_NFT_BATCH": "0"}  # fmt: skip
    # (its line says what the read after it found: it went in, not "may have")
    assert_error(run(args, env={**env, **hung}), 3, "it went in", after_work=True)
    assert chain_name("mynet", "gone1") not in _nat_save(ns, mode)  # it went in

    rp.run_plugin("ADD", ns, "gone1", stale, mode=mode, check=True)  # started again
    done = run([*args, "-o", "json"], env=env)
    assert done.returncode == 0, done.stderr
    assert chain_name("mynet", "gone1") in _nat_save(ns, mode)
    pending = json.loads(done.stdout)["pending"]
    assert [(p["container_id"], p["seen_seconds"] < 1) for p in pending] == [("gone1", True)]


def test_a_gc_restore_that_went_in_then_hung_while_the_chain_was_made_again(
    host_ns, iptables_mode, tmp_path
):
    """h239: gc's restore committed, then hung (stopped at its time limit), and
    meanwhile the plugin added the same container again (the same chain: its name comes
    from network and ID). gc read again, found the chain, and said "read again, what it
    removes is still there: it did not go in": false, it had gone in. Now it says the
    chain is there, as it was or made again, and that it may have gone in."""
    ns, mode = host_ns, iptables_mode
    (tmp_path / "cni" / "results").mkdir(parents=True)
    stale = rp.plugin_conf("mynet", ["10.88.0.8/16"], [rp.port_mapping(8083, 80)])
    rp.run_plugin("ADD", ns, "gone1", stale, mode=mode, check=True)  # never cached
    live = rp.plugin_conf("mynet", ["10.88.0.9/16"], [rp.port_mapping(8084, 80)])
    rp.run_plugin("ADD", ns, "other1", live, mode=mode, check=True)
    conf = tmp_path / "gone1.json"
    conf.write_text(json.dumps(stale))
    folder = tmp_path / "wrap"
    folder.mkdir()
    tool = f"iptables-{mode}-restore"
    # The restore commits; then the plugin's ADD of gone1 (in the same namespace: the
    # wrapper runs where portmapctl entered); then it hangs.
    plugin_env = (f"PATH={rp.bin_dir(mode)}:{rp.SYSTEM_PATH} CNI_COMMAND=ADD CNI_CONTAINERID=gone1"
                  f" CNI_NETNS={rp.container_netns()} CNI_IFNAME=eth0 CNI_PATH={rp.CNI_PATH}")  # fmt: skip
    (folder / tool).write_text(
        f'#!/bin/bash\n/usr/sbin/{tool} "$@" || exit\n'
        f"env -i {plugin_env} {rp.PLUGIN} < {conf} > /dev/null\nexec sleep 600\n"
    )
    (folder / tool).chmod(0o755)
    args = ["gc", "--netns", ns, "--iptables", mode, "--cni-cache-dir", str(tmp_path / "cni"),
            "--keep", "other1", "--family", "4", "--yes", "--min-age", "0"]  # fmt: skip
    hung = {"PATH": f"{folder}:{os.environ['PATH']}", "PORTMAPCTL_IPTABLES_TIMEOUT": "2",
            "PORTMAPCTL_NFT_BATCH": "0", "PORTMAPCTL_RUN_DIR": str(tmp_path / "run")}  # fmt: skip
    done = run(args, env=hung)
    assert chain_name("mynet", "gone1") in _nat_save(ns, mode)  # made again
    assert_error(done, 3, "did not finish within 2 s", "made again meanwhile", "may have gone in")
    assert "did not go in" not in done.stderr


def _without_dac(args: List[str]) -> subprocess.CompletedProcess:
    """portmapctl as root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH: file modes
    apply to it, as to a non-root user (or root in a user namespace)."""
    drop = "-dac_override,-dac_read_search"
    argv = ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}",
            sys.executable, "-m", "portmapctl", *args]  # fmt: skip
    env = dict(os.environ, NO_COLOR="1")
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)


@pytest.mark.parametrize("locked", ["results", "cache-dir"])
@pytest.mark.parametrize("command", [["list"], ["check"]])
def test_an_unreadable_cache_is_exit_3_never_an_empty_one(tmp_path, locked, command):
    _needs_root()
    cache = tmp_path / "cni"
    (cache / "results").mkdir(parents=True)
    (cache / "results" / "mynet-abc123-eth0").write_text("{}")
    target = cache / "results" if locked == "results" else cache
    target.chmod(0)
    try:
        done = _without_dac([*command, "--snapshot", str(FIXTURES / "basic.v4.save"),
                             "--cni-cache-dir", str(cache)])  # fmt: skip
    finally:
        target.chmod(0o700)
    assert_error(done, 3, "cannot read the CNI cache", "Permission denied")


def test_a_cache_listed_but_not_searchable_is_exit_3_never_stale(node):
    """results/ that can be listed but not searched (mode 0600, or an ACL, for a
    root without CAP_DAC_*): every entry failed as if removed by a DEL, so list said
    every mapping stale with no word of why, and gc with another source of liveness
    (--keep) removed the cached, live container's chain. Now: exit 3, nothing changed."""
    _needs_root()
    ns, cache = node
    live = chain_name("mynet", "live1")
    results = cache / "results"
    results.chmod(0o600)
    try:
        listed = _without_dac(["list", "--netns", ns, "--cni-cache-dir", str(cache)])
        gc = _without_dac(["gc", "--netns", ns, "--cni-cache-dir", str(cache), "--yes",
                           "--min-age", "0", "--keep", "other1"])  # fmt: skip
    finally:
        results.chmod(0o700)
    for done in (listed, gc):
        assert_error(done, 3, "cannot read the CNI cache", "Permission denied")
    assert live in rp.save(ns)


def test_cache_entries_that_are_no_regular_files_never_block(tmp_path):
    results = tmp_path / "cni" / "results"
    results.mkdir(parents=True)
    os.mkfifo(tmp_path / "fifo")
    (results / "mynet-fifo-eth0").symlink_to(tmp_path / "fifo")
    (results / "mynet-chardev-eth0").symlink_to("/dev/zero")
    (results / "mynet-tty-eth0").symlink_to("/dev/tty")
    snapshot = str(FIXTURES / "basic.v4.save")
    started = time.monotonic()
    out = ok(["list", "--snapshot", snapshot, "--cni-cache-dir", str(tmp_path / "cni"), "-o",
              "json"])  # fmt: skip
    assert time.monotonic() - started < 30
    assert json.loads(out)["mappings"]


def test_the_cache_reader_opens_only_regular_files_without_blocking(tmp_path):
    from portmapctl.errors import BadInput
    from portmapctl.host import files

    os.mkfifo(tmp_path / "fifo")
    for path in (tmp_path / "fifo", Path("/dev/zero"), tmp_path):
        with pytest.raises(BadInput, match="not a regular file|Is a directory"):
            files.read_text(str(path), "CNI cache file", regular_only=True)


# --- item 15: a nat table iptables cannot read -------------------------------------------


def _poison_nat_table(ns: str) -> None:
    # A native nft rule iptables-nft has no words for: it then shows no nat table at
    # all ("# Table `nat' is incompatible, use 'nft' tool.") and exits 0.
    subprocess.run(["ip", "netns", "exec", ns, "nft", "add", "rule", "ip", "nat", TOPLEVEL_DNAT,
                    "fib", "daddr", "type", "local", "counter"], check=True)  # fmt: skip
    save = subprocess.run(["ip", "netns", "exec", ns, "iptables-nft-save", "-t", "nat"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert "incompatible" in save.stdout


@pytest.mark.parametrize(
    "command", [["list"], ["check"], ["gc", "--dry-run", "--all"], ["flush-udp", "--dry-run"]]
)
def test_a_nat_table_iptables_cannot_read_is_exit_3(node, command):
    ns, cache = node
    _poison_nat_table(ns)
    done = run([*command, "--netns", ns, "--iptables", "nft", "--cni-cache-dir", str(cache)])
    assert_error(done, 3, "cannot read the nat table", "nft list table ip nat")


def test_a_dump_of_an_unreadable_nat_table_is_bad_input(tmp_path):
    dump = tmp_path / "dump"
    dump.write_text("# Table `nat' is incompatible, use 'nft' tool.\n")
    assert_error(run(["list", "--snapshot", str(dump)]), 2, "could not be saved", str(dump))


# --- item 10: foreign rules with any bytes ----------------------------------------------

NOT_UTF8 = b"admin \xff\xfe caf\xe9"


def _foreign_rule(ns: str) -> None:
    argv = [b"ip", b"netns", b"exec", ns.encode(), b"iptables-nft", b"-w", b"-t", b"nat",
            b"-I", b"PREROUTING", b"-p", b"udp", b"-m", b"comment", b"--comment", NOT_UTF8,
            b"-j", b"RETURN"]  # fmt: skip
    subprocess.run(argv, check=True)


def _save_bytes(ns: str) -> bytes:
    return subprocess.run(["ip", "netns", "exec", ns, "iptables-nft-save", "-t", "nat"],
                          capture_output=True, check=True).stdout  # fmt: skip


def _foreign_lines(save: bytes) -> List[bytes]:
    return [line for line in save.splitlines() if b"\xff\xfe" in line]


def test_a_foreign_rule_with_a_non_utf8_comment_stops_nothing(node, tmp_path):
    ns, cache = node
    _foreign_rule(ns)
    before = _foreign_lines(_save_bytes(ns))
    assert len(before) == 1
    common = ["--netns", ns, "--iptables", "nft", "--cni-cache-dir", str(cache)]

    listed = json.loads(ok(["list", *common, "-o", "json"]))
    assert [m["container_id"] for m in listed["mappings"]] == ["live1"]
    ok(["check", *common])
    ok(["gc", *common, "--dry-run"])
    ok(["flush-udp", *common, "--dry-run"])

    # A firewall flush of the plugin's chains, then a repair: the foreign rule's bytes
    # are read, kept, and never written back.
    dn = chain_name("mynet", "live1")
    rp.iptables(ns, ["-t", "nat", "-F", TOPLEVEL_DNAT])
    rp.iptables(ns, ["-t", "nat", "-F", dn])
    rp.iptables(ns, ["-t", "nat", "-X", dn])
    assert run(["check", *common]).returncode == 1
    ok(["check", "--repair", *common])
    ok(["check", *common])
    assert _foreign_lines(_save_bytes(ns)) == before

    # The same from a dump (a support bundle): read as it is.
    dump = tmp_path / "dump"
    dump.write_bytes(_save_bytes(ns))
    listed = json.loads(ok(["list", "--snapshot", str(dump), "-o", "json"]))
    assert [m["container_id"] for m in listed["mappings"]] == ["live1"]


def test_gc_removes_a_stale_chain_holding_a_rule_whose_comment_is_not_utf8(node):
    """gc fingerprints each not-live chain (its --min-age clock) from the chain's rule
    text; a rule in it whose comment is not UTF-8 (an operator's, say) ended every gc,
    --dry-run included, in "internal error", exit 1: a cron job that never removed a
    stale chain on the node again."""
    ns, cache = node
    conf = rp.plugin_conf("mynet", ["10.88.0.6/16"], [rp.port_mapping(9090, 90)])
    rp.run_plugin("ADD", ns, "gone1", conf, check=True)  # never cached: stale
    stale = chain_name("mynet", "gone1")
    argv = [b"ip", b"netns", b"exec", ns.encode(), b"iptables-nft", b"-w", b"-t", b"nat",
            b"-I", stale.encode(), b"-p", b"tcp", b"-m", b"comment", b"--comment", NOT_UTF8,
            b"-j", b"RETURN"]  # fmt: skip
    subprocess.run(argv, check=True)
    _foreign_rule(ns)
    before = _foreign_lines(_save_bytes(ns))
    common = ["--netns", ns, "--iptables", "nft", "--cni-cache-dir", str(cache)]

    planned = json.loads(ok(["gc", *common, "--dry-run", "--min-age", "0", "-o", "json"]))
    assert [c["chain"] for c in planned["removed"]] == [stale]
    done = json.loads(ok(["gc", *common, "--yes", "--min-age", "0", "-o", "json"]))
    assert [c["chain"] for c in done["removed"]] == [stale]
    after = _save_bytes(ns)
    assert stale.encode() not in after and chain_name("mynet", "live1").encode() in after
    foreign = [line for line in before if line.startswith(b"-A PREROUTING ")]
    assert len(foreign) == 1 and _foreign_lines(after) == foreign  # byte for byte


# --- item 14: a full run directory ------------------------------------------------------


@pytest.fixture
def full_run_dir(tmp_path):
    """A tiny tmpfs, filled up: files can be created (the lock), nothing written."""
    _needs_root()
    with run_dir_helpers.full_run_dir(tmp_path / "run") as run_dir:
        yield run_dir


def test_gc_whose_output_goes_to_a_full_disk_removes_records_and_exits_3(node, tmp_path):
    """A cron line `portmapctl gc --yes --metrics-file ... >> /var/log/portmapctl.log` on a
    full /var: 0.2 removed the chains, then said "internal error: OSError" (exit 1: "could
    not apply") and its metrics said the run had failed, with no chain removed. Now the
    metrics say what it did and the exit is 3, one line: the output is incomplete."""
    ns, cache = node
    rp.run_plugin("ADD", ns, "stale1", rp.plugin_conf("mynet", ["10.88.0.13/16"], UDP), check=True)
    metrics = tmp_path / "portmapctl-gc.prom"
    argv = [sys.executable, "-m", "portmapctl", "gc", "--netns", ns, "--cni-cache-dir",
            str(cache), "--yes", "--min-age", "0", "--metrics-file", str(metrics)]  # fmt: skip
    with open("/dev/full", "w") as full:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=full, stderr=subprocess.PIPE,
                              text=True, env=dict(os.environ, PORTMAPCTL_RUN_DIR=str(tmp_path / "run"),
                                                  NO_COLOR="1"), timeout=120)  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert done.stderr == (
        "portmapctl: error: could not write the output (No space left on device): what"
        " stdout got is incomplete; the command itself ran to its end\n"
    )
    assert chain_name("mynet", "stale1") not in rp.save(ns)
    assert chain_name("mynet", "live1") in rp.save(ns)
    written = metrics.read_text()
    assert 'portmapctl_last_run_success{command="gc"} 1.0' in written
    assert 'portmapctl_gc_chains_removed{command="gc",family="4"} 1.0' in written


def test_gc_with_a_full_run_dir_reports_what_it_did_flushes_and_exits_3(node, full_run_dir):
    ns, cache = node
    stale = rp.plugin_conf("mynet", ["10.88.0.13/16"], UDP)
    rp.run_plugin("ADD", ns, "stale1", stale, check=True)
    gone = chain_name("mynet", "stale1")
    # A flow to the stale container's port, DNATed to it: it must not outlive the chain.
    subprocess.run(["ip", "netns", "exec", ns, "conntrack", "-I", "-p", "udp", "-s", "127.0.0.1",
                    "-d", "127.0.0.1", "--sport", "40001", "--dport", "6000", "--reply-src",
                    "10.88.0.13", "--reply-dst", "127.0.0.1", "--reply-port-src", "60",
                    "--reply-port-dst", "40001", "-t", "100"], check=True)  # fmt: skip

    # A sighting on file (recorded while there was room): removing the chain means
    # forgetting it, a write the full run directory refuses.
    gc_args = ["gc", "--netns", ns, "--iptables", "nft", "--cni-cache-dir", str(cache)]
    env = {"PORTMAPCTL_RUN_DIR": str(full_run_dir)}
    (full_run_dir / "filler").unlink()
    ok([*gc_args, "--dry-run"], env=env)
    fill(full_run_dir)

    done = run([*gc_args, "--yes", "--min-age", "0", "-q"], env=env)

    # stdout: what was done (-q: the summary line); stderr: the one error line.
    assert done.returncode == 3, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("portmapctl: error: removed 1 chain of 1 container (see above)")
    assert lines[0].endswith(": No space left on device (free space in the run directory)")
    assert done.stdout.startswith("gc: removed 1 chain of 1 container")
    assert "1 UDP conntrack entry deleted" in done.stdout
    assert gone not in rp.save(ns)
    flows = subprocess.run(["ip", "netns", "exec", ns, "conntrack", "-L", "-p", "udp"],
                           capture_output=True, text=True).stdout  # fmt: skip
    assert "dport=6000" not in flows


def test_a_sighting_a_full_run_dir_kept_never_hastens_a_removal(node, full_run_dir):
    """A gc that removed a chain but could not rewrite its state file (full /run:
    journald's volatile logs fill it) left the chain's old sighting on file. The same
    container started again (podman restart: same ID, address and ports) has the same
    chain with the same rules; a gc that ran during its ADD, before libcni wrote its
    cache entry, found that sighting older than --min-age and removed the chain at
    once (the min-age rule exists for exactly this), and the container came up live
    without its mapping, also after the run directory had room again. Now a state file
    that cannot be rewritten is removed (forgetting only delays a removal): the chain
    is pending, first seen now."""
    ns, cache = node
    stale = rp.plugin_conf("mynet", ["10.88.0.13/16"], UDP)
    rp.run_plugin("ADD", ns, "again1", stale, check=True)
    gc_args = ["gc", "--netns", ns, "--iptables", "nft", "--cni-cache-dir", str(cache), "--yes"]
    env = {"PORTMAPCTL_RUN_DIR": str(full_run_dir)}
    (full_run_dir / "filler").unlink()
    ok([*gc_args, "--min-age", "1s"], env=env)  # sighted, while there was room
    fill(full_run_dir)
    time.sleep(1.2)
    done = run([*gc_args, "--min-age", "1s"], env=env)
    assert done.returncode == 3, done.stderr  # removed, its sighting not forgotten
    assert chain_name("mynet", "again1") not in rp.save(ns)
    (full_run_dir / "filler").unlink()  # room again

    # Started again: the plugin's ADD is done, libcni has not written the entry yet.
    rp.run_plugin("ADD", ns, "again1", stale, check=True)
    done = run([*gc_args, "--min-age", "1s", "-o", "json"], env=env)
    assert done.returncode == 0, done.stderr
    assert chain_name("mynet", "again1") in rp.save(ns)
    pending = json.loads(done.stdout)["pending"]
    assert [(p["container_id"], p["seen_seconds"] < 1) for p in pending] == [("again1", True)]


def test_gc_with_nothing_to_remember_is_fine_with_a_full_run_dir(node, full_run_dir):
    """A cron gc on a healthy node whose /run is full: nothing stale, nothing pending,
    no state file before, so none to write. It wrote an empty one anyway and exited 3
    ("removed 0 chains (see above), but could not record ...") on every run; now it
    writes nothing and exits 0. A dry run said a warning for the same non-write."""
    ns, cache = node
    args = ["gc", "--netns", ns, "--iptables", "nft", "--cni-cache-dir", str(cache)]
    env = {"PORTMAPCTL_RUN_DIR": str(full_run_dir)}
    for extra in (["--yes", "--min-age", "0"], ["--yes"], ["--dry-run"]):
        done = run([*args, *extra, "-q"], env=env)
        assert done.returncode == 0, done.stderr
        assert done.stderr == "", done.stderr
        assert "nothing to remove now, 0 pending, 1 kept" in done.stdout
    assert not (full_run_dir / "gc-state.json").exists()
    assert chain_name("mynet", "live1") in rp.save(ns)


def test_gc_dry_run_with_a_full_run_dir_shows_its_plan_and_exits_3(node, full_run_dir):
    """A dry run records its sightings as any run does (SPEC §3 gc). With no room for
    them it said a warning and exited 0, where the real run it previews exits 3: now it
    shows its plan all the same and ends with the one error line, exit 3."""
    ns, cache = node
    stale = rp.plugin_conf("mynet", ["10.88.0.13/16"], UDP)
    rp.run_plugin("ADD", ns, "stale1", stale, check=True)
    before = rp.strip_save_comments(rp.save(ns))
    args = ["gc", "--netns", ns, "--iptables", "nft", "--cni-cache-dir", str(cache), "--dry-run"]
    done = run(args, env={"PORTMAPCTL_RUN_DIR": str(full_run_dir)})
    assert done.returncode == 3, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("portmapctl: error: could not record the chains seen for")
    assert lines[0].endswith(": No space left on device (free space in the run directory)")
    assert "stale1" in done.stdout and "gc (dry run): nothing to remove now, 1 pending" in (
        done.stdout
    )
    assert rp.strip_save_comments(rp.save(ns)) == before


# --- an unusable run directory -----------------------------------------------------------

# What may stand where the run directory or its files should be. The lock's cases stop
# every command that takes the lock; gc's state file stops gc (the others never read it).
RUN_DIR_CASES = ["file-as-run-dir", "file-on-its-path", "read-only", "lock-fifo", "lock-socket",
                 "lock-directory"]  # fmt: skip
STATE_CASES = ["state-directory", "state-fifo", "state-socket", "state-symlink",
               "state-someone-elses"]  # fmt: skip


def _planted(base: Path, case: str) -> tuple:
    """(the run directory to give, the path each refusal names) for `case`."""
    run_dir = base / "run"
    if case == "file-as-run-dir":
        run_dir.write_text("")
        return run_dir, run_dir
    if case == "file-on-its-path":
        (base / "file").write_text("")
        return base / "file" / "run", base / "file" / "run"
    run_dir.mkdir(mode=0o700)
    if case == "read-only":
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k,mode=0700", "tmpfs",
                        str(run_dir)], check=True)  # fmt: skip
        return run_dir, run_dir / "lock"
    what, kind = case.split("-", 1)
    path = run_dir / ("lock" if what == "lock" else "gc-state.json")
    if what == "state":  # (a lock there already: taking it changes no directory)
        os.close(os.open(run_dir / "lock", os.O_WRONLY | os.O_CREAT, 0o600))
    plant(path, kind)
    return run_dir, path


def _listing(base: Path) -> list:
    """What is below `base`, but the lock (taken, and so written, by design)."""
    found = []
    for path in sorted(base.rglob("*")):
        if path.name == "lock" and path.is_file() and not path.is_symlink():
            continue
        info = path.lstat()
        found.append((str(path), info.st_mode, info.st_uid, info.st_size, info.st_mtime_ns))
    return found


@pytest.mark.parametrize("case", ["read-only", "no-inodes"])
def test_a_lock_file_that_cannot_be_made_says_what_to_do(node, tmp_path, case):
    """The lock file cannot be made in the run directory: /run read-only (a container
    whose /run is a read-only mount), or out of inodes (a small tmpfs full of files,
    while it still has blocks). The line said only what open(2) said ("cannot open
    lock file /run/portmapctl/lock: Read-only file system", "... No space left on
    device"), where a write of gc's state file in the same directory says the remedy.
    Now the lock's line says it too. Exit 3, nothing changed."""
    _needs_root()
    ns, cache = node
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    options = "ro,size=64k" if case == "read-only" else "size=64k,nr_inodes=2"
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"{options},mode=0700", "tmpfs",
                    str(run_dir)], check=True)  # fmt: skip
    try:
        if case == "no-inodes":
            (run_dir / "other").write_text("")  # (the root directory is the other inode)
        remedy = {"read-only": "PORTMAPCTL_RUN_DIR moves it",
                  "no-inodes": "free space in the run directory"}[case]  # fmt: skip
        before = rp.strip_save_comments(rp.save(ns))
        for command in (["gc", "--yes", "--min-age", "0"], ["check", "--repair"]):
            args = [*command, "--netns", ns, "--iptables", "nft", "--cni-cache-dir", str(cache)]
            done = run(args, env={"PORTMAPCTL_RUN_DIR": str(run_dir)})
            assert_error(done, 3, f"cannot open lock file {run_dir / 'lock'}", remedy)
        assert rp.strip_save_comments(rp.save(ns)) == before
    finally:
        subprocess.run(["umount", "-l", str(run_dir)], check=False)


@pytest.mark.parametrize("case", RUN_DIR_CASES + STATE_CASES)
def test_an_unusable_run_dir_is_one_line_exit_3_and_changes_nothing(node, tmp_path, case):
    """Whatever keeps a command from using the run directory as it must (a file where
    it should be or on its path, a read-only one, a FIFO, socket or directory at its
    lock; for gc, anything but its own regular file at gc-state.json) is one line, exit
    3, before anything changes: for every command that takes the lock, gc's dry run
    included. It was a warning (exit 0) for a dry run at a refused lock, exit 3 for one
    with a file on the run directory's path; a FIFO or another user's file at the
    state file was ignored (and replaced), a socket exit 3, and a directory there made
    every gc remove, then fail to record, exit 3 after a warning: two lines."""
    _needs_root()
    ns, cache = node
    stale = rp.plugin_conf("mynet", ["10.88.0.13/16"], UDP)
    rp.run_plugin("ADD", ns, "stale1", stale, check=True)
    base = tmp_path / "planted"
    base.mkdir()
    run_dir, named = _planted(base, case)
    common = ["--netns", ns, "--iptables", "nft", "--cni-cache-dir", str(cache)]
    commands = [["gc", "--dry-run", "--min-age", "0"], ["gc", "--yes", "--min-age", "0"]]
    if case in RUN_DIR_CASES:
        commands += [
            ["add", "--network", "mynet", "--container", "new1", "--ip", "10.88.0.14/16",
             "-p", "9090:90"],
            ["check", "--repair"],
            ["flush-udp"],
        ]  # fmt: skip
    before, planted = rp.strip_save_comments(rp.save(ns)), _listing(base)
    try:
        for command in commands:
            done = run([*command, *common], env={"PORTMAPCTL_RUN_DIR": str(run_dir)})
            assert_error(done, 3, str(named))
            if case.startswith(("lock-", "state-")) and not case.endswith("symlink"):
                assert "is not a regular file owned by us: refusing to use it" in done.stderr
            if case.startswith("file-"):
                assert "is not a directory owned by us: refusing to use it" in done.stderr or (
                    "Not a directory" in done.stderr
                )
        assert rp.strip_save_comments(rp.save(ns)) == before
        assert _listing(base) == planted
    finally:
        if case == "read-only":
            subprocess.run(["umount", "-l", str(run_dir)], check=False)
    if case.endswith("symlink"):
        assert (base / "elsewhere").read_text() == "precious"
