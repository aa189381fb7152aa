"""Faults while writing (SPEC §4, §5): iptables-restore fails, dies or waits too long.

Each family's change is one `iptables-restore --noflush` transaction, so whatever
happens the ruleset is unchanged or fully changed, never half; the exit code and the
line say what happened; and the retries (Node.converge, APPLY_TRIES) are bounded.

The faults are real: a wrapper placed first on PATH in front of the real
`iptables-*-restore` (it kills itself, or changes the table just before the real one
runs), the real binary SIGKILLed while it waits for the xtables lock, and the lock
held by another process for longer than the wait (`PORTMAPCTL_XTABLES_WAIT`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

import pytest
import realplugin as rp
from pmctl import assert_error, run

from portmapctl.iptables.access.restore import WAIT_ENV
from portmapctl.iptables.chains import chain_name
from portmapctl.ops.node import APPLY_TRIES

XTABLES_LOCK = "/run/xtables.lock"
CHAIN = chain_name("mynet", "new1")


def _add_args(ns: str, mode: str, *extra: str) -> List[str]:
    return ["add", "--netns", ns, "--iptables", mode, "--network", "mynet", "--container",
            "new1", "--ip", "10.88.0.5/16", "-p", "8080:80", "-p", "5353:53/udp", *extra]  # fmt: skip


def _state(ns: str, mode: str = "nft") -> dict:
    return {f: rp.strip_save_comments(rp.save(ns, f, mode)) for f in (4, 6)}


@pytest.fixture
def node(host_ns):
    """A namespace with one plugin-made container, so 'unchanged' means something."""
    conf = rp.plugin_conf(
        "othernet", ["10.88.0.9/16"], [{"hostPort": 7070, "containerPort": 70, "protocol": "tcp"}]
    )
    rp.run_plugin("ADD", host_ns, "existing", conf, check=True)
    return host_ns


def _wrapper(tmp_path: Path, tool: str, body: str) -> tuple:
    """A folder with `tool` (e.g. iptables-nft-restore) in front of the real one; each
    call appends a line to the returned log, then runs `body` (bash; $REAL is the
    real binary, stdin is the transaction)."""
    folder = tmp_path / "wrap"
    folder.mkdir(exist_ok=True)
    log = tmp_path / f"{tool}.calls"
    script = folder / tool
    script.write_text(f'#!/bin/bash\nREAL=/usr/sbin/{tool}\necho "$$ $*" >> {log}\n{body}\n')
    script.chmod(0o755)
    return {"PATH": f"{folder}:{os.environ['PATH']}"}, log


def _calls(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def _chain_lines(ns: str, family: int = 4, mode: str = "nft") -> List[str]:
    return [line for line in rp.save(ns, family, mode).splitlines() if CHAIN in line]


# The restore's faults: add through iptables-restore (PORTMAPCTL_NFT_BATCH=0), not its
# nf_tables batch, whose refusals and races are tests/kernel/test_nfnl_add.py's.
RESTORE_ONLY = {"PORTMAPCTL_NFT_BATCH": "0"}


def test_restore_killed_before_it_applies_changes_nothing_after_bounded_tries(node, tmp_path):
    env, log = _wrapper(tmp_path, "iptables-nft-restore", "cat > /dev/null\nkill -KILL $$")
    env.update(RESTORE_ONLY)
    before = _state(node)
    done = run(_add_args(node, "nft", "--family", "4"), env=env)
    assert_error(done, 1, f"gave up after {APPLY_TRIES} tries", "was killed by SIGKILL",
                 "whole or not at all")  # fmt: skip
    assert _calls(log) == APPLY_TRIES + 1  # add's try without a read, then the tries
    assert _state(node) == before


@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_restore_killed_after_it_applied_is_found_done_on_the_re_read(request, tmp_path, mode):
    """Killed after the commit: the transaction went in whole; the retry re-reads, finds
    nothing left to do and succeeds, reporting the write (it said "unchanged: already in
    place" and flushed only the misrouted flows: the write was its own)."""
    node = request.getfixturevalue("node" if mode == "nft" else "legacy_node")
    tool = f"iptables-{mode}-restore"
    env, log = _wrapper(tmp_path, tool, '"$REAL" "$@"\nkill -KILL $$')
    env.update(RESTORE_ONLY)
    done = run(_add_args(node, mode, "--family", "4", "-o", "json"), env=env)
    assert done.returncode == 0, done.stderr
    assert _calls(log) == 1
    result = json.loads(done.stdout)
    assert result["changed"] is True
    assert [w for w in result["warnings"] if f"{tool} was killed by SIGKILL" in w
            and "read again, everything it writes is there" in w]  # fmt: skip
    assert _chain_lines(node, mode=mode)  # fully there: the plugin's own CHECK agrees
    conf = rp.plugin_conf(
        "mynet",
        ["10.88.0.5/16"],
        [
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 5353, "containerPort": 53, "protocol": "udp"},
        ],
    )
    for check in rp.run_check(node, "new1", conf, mode=mode):
        assert check.returncode == 0, check.stderr


@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_an_add_whose_restore_was_killed_after_it_applied_is_reported_from_the_table_before(
    request, tmp_path, mode
):
    """A new container's restore killed after its commit: add judged it gone in by the
    read after it, but said its warnings and summary from that read too, the table
    with its own chain already in: "rewrote CNI-DN-..." for a chain it made, and "this
    mapping is shadowed" where an unkilled add says "will be shadowed". Reported now
    as from the table the write was made for, as the same add unkilled reports it."""
    node = request.getfixturevalue("node" if mode == "nft" else "legacy_node")
    ports = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
    first = rp.plugin_conf("othernet", ["10.88.0.8/16"], ports)
    rp.run_plugin("ADD", node, "first", first, mode=mode, check=True)
    tool = f"iptables-{mode}-restore"
    env, log = _wrapper(tmp_path, tool, '"$REAL" "$@"\nkill -KILL $$')
    env.update(RESTORE_ONLY)
    done = run(_add_args(node, mode, "--family", "4"), env=env)
    assert done.returncode == 0, done.stderr
    assert _calls(log) == 1
    assert f"{tool} was killed by SIGKILL" in done.stderr
    assert done.stdout.strip() == f"added {CHAIN} (mynet/new1)", done.stdout
    shadowed = [line for line in done.stderr.splitlines() if "tcp/8080" in line]
    assert len(shadowed) == 1 and "this mapping will be shadowed" in shadowed[0], done.stderr


@pytest.mark.parametrize("one", [False, True], ids=["node", "one-mapping"])
def test_repair_whose_restore_was_killed_after_it_applied_reports_the_repair(node, tmp_path, one):
    """check --repair's restore killed after its commit: the retry's read found nothing
    to do, so it reported nothing written (JSON `repaired` false beside a `fixed`
    problem) and the repaired mapping got none of the ADD's side effects. Judged by
    that read now: its transaction is the one applied, with a warning."""
    ports = [{"hostPort": 7070, "containerPort": 70, "protocol": "tcp"}]
    conf = rp.plugin_conf("othernet", ["10.88.0.9/16"], ports)  # (the fixture's container)
    # (Its namespace the tests' container one, holding its address: a namespace there
    # without it is of a container being torn down, whose chain the repair keeps.)
    rp.write_cni_cache(tmp_path / "cni", "othernet", "existing", "eth0", conf, ports,
                       ["10.88.0.9/16"])  # fmt: skip
    rp.iptables(node, ["-t", "nat", "-F", "CNI-HOSTPORT-DNAT"])
    env, log = _wrapper(tmp_path, "iptables-nft-restore", '"$REAL" "$@"\nkill -KILL $$')
    args = ["check", "--repair", "--netns", node, "--iptables", "nft", "--family", "4",
            "--cni-cache-dir", str(tmp_path / "cni"), "-o", "json"]  # fmt: skip
    if one:
        path = tmp_path / "conf.json"
        path.write_text(json.dumps(conf))
        args += ["--container", "existing", "--cni-config", str(path)]
    done = run(args, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _calls(log) == 1
    result = json.loads(done.stdout)
    assert result["repaired"] is True and result["problems"] == []
    assert [p["kind"] for p in result["fixed"]] == ["missing-entry"]
    assert "iptables-nft-restore was killed by SIGKILL" in done.stderr
    assert "read again, everything it writes is there" in done.stderr
    for check in rp.run_check(node, "existing", conf):
        assert check.returncode == 0, check.stderr


def test_a_table_that_keeps_changing_is_given_up_on_without_a_half_change(node, tmp_path):
    """Before each real restore, someone (as the plugin would) creates or deletes the
    very chain the transaction is about: every plan is stale when it is applied."""
    toggle = (
        f"if /usr/sbin/iptables-nft -t nat -S {CHAIN} >/dev/null 2>&1;"
        f" then /usr/sbin/iptables-nft -t nat -X {CHAIN};"
        f' else /usr/sbin/iptables-nft -t nat -N {CHAIN}; fi\nexec "$REAL" "$@"'
    )
    env, log = _wrapper(tmp_path, "iptables-nft-restore", toggle)
    env.update(RESTORE_ONLY)
    before = _state(node)
    started = time.monotonic()
    done = run(_add_args(node, "nft", "--family", "4"), env=env)
    assert_error(done, 1, f"IPv4: gave up after {APPLY_TRIES} tries, nothing changed")
    # One more than the tries: add's first, planned without a read (refused: the
    # chain was made meanwhile), then the read-and-plan ones.
    assert _calls(log) == APPLY_TRIES + 1
    assert time.monotonic() - started < 10
    # Only the other party's change is there (its chain, toggled 4 times: absent).
    after = _state(node)
    assert after[6] == before[6]
    assert _chain_lines(node) == []
    assert [line for line in after[4].splitlines() if CHAIN not in line] == before[4].splitlines()


@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_conditions_iptables_refuses_are_bad_input_before_either_family_is_written(request, mode):
    """Conditions are iptables' own syntax: only iptables can refuse a match it does not
    know, and it refuses it whatever the table holds. It was tried three times as if
    the table had changed: exit 1, IPv4 written and IPv6 not. Now one
    `iptables-restore --test` of the entry rules says so first: exit 2 (bad input),
    neither family written (ops/conditions.py)."""
    node = request.getfixturevalue("node" if mode == "nft" else "legacy_node")
    before = _state(node, mode)
    args = _add_args(node, mode, "--ip", "fd00::5/64", "--conditions-v6", "-m nosuchmatch")
    done = run(args)
    assert_error(done, 2, "invalid --conditions-v6: iptables refuses them", "nosuchmatch")
    assert _state(node, mode) == before


@pytest.mark.parametrize(
    "conditions, said",
    [("-m nosuchmatch --foo", "nosuchmatch"), ("-m set --match-set nosuch src", "nosuch")],
)
def test_conditions_python_iptables_refuses_are_bad_input_as_through_restore(
    legacy_node, conditions, said
):
    """The same conditions through --iptables iptc: python-iptables builds the entry
    rule and refuses it as iptables-legacy-restore --test does (an unknown match, a set
    that does not exist), whatever the table holds. It was not asked before the write
    (no `refusal`): the write was tried three times as if the plugin had changed the
    table, exit 1 "gave up after 3 tries", where --iptables legacy says exit 2."""
    before = _state(legacy_node, "legacy")
    env = {"PATH": f"{rp.bin_dir('legacy')}:{os.environ['PATH']}"}
    for mode in ("legacy", "iptc"):
        done = run(_add_args(legacy_node, mode, "--conditions-v4", conditions), env=env)
        assert_error(done, 2, "invalid --conditions-v4: iptables refuses them", said)
        assert "tries" not in done.stderr, done.stderr
        assert _state(legacy_node, "legacy") == before


@pytest.mark.parametrize("mode", ["legacy", "iptc"])
@pytest.mark.parametrize("dry_run", [False, True])
def test_conditions_are_judged_without_creating_a_legacy_table(host_ns, mode, dry_run):
    """Where the legacy nat table is not there (a fresh namespace, an nf_tables node),
    the conditions' probe opened it to parse them (iptables-legacy-restore --test, a
    python-iptables handle) and so created it: `add --dry-run` left empty legacy tables
    behind, and so did conditions refused as bad input (exit 2, "nothing changed").
    The probe now runs in a scratch namespace there, and still refuses what it refused."""
    tables = "/proc/self/net/ip_tables_names /proc/self/net/ip6_tables_names"
    env = {"PATH": f"{rp.bin_dir('legacy')}:{os.environ['PATH']}"}  # (iptc: a legacy host)
    extra = ["--ip", "fd00::5/64", "--conditions-v6", "-s fd00::/8"] + ["--dry-run"] * dry_run
    for conditions, code in (("-s 10.0.0.0/8", 0), ("-m nosuchmatch --foo", 2)):
        if code == 0 and not dry_run:
            continue  # (a write creates the table: it is the write's to)
        done = run(_add_args(host_ns, mode, "--conditions-v4", conditions, *extra), env=env)
        if code:
            assert_error(done, 2, "invalid --conditions-v4: iptables refuses them", "nosuchmatch")
        else:
            assert done.returncode == 0, done.stderr
        made = rp._run([rp._ip(), "netns", "exec", host_ns, "cat", *tables.split()], check=True)
        assert made.stdout.split() == [], (conditions, made.stdout)


@pytest.mark.parametrize("mode", ["legacy", "iptc"])
@pytest.mark.parametrize("dry_run", [False, True])
def test_conditions_naming_an_ipset_of_the_namespace_are_taken_where_no_legacy_table_is(
    host_ns, mode, dry_run
):
    """Ipsets belong to a network namespace, and iptables looks the set of
    `-m set --match-set NAME` up when it parses the rule: the conditions' probe, run in
    a scratch namespace where the legacy nat table is not there (so as not to create
    it), found no such set and refused valid conditions as bad input (exit 2, "Set NAME
    doesn't exist"), for a dry run and for the write, which never came: the first
    container of a fresh namespace whose conditions name a set the node made. The set
    is there: the add goes ahead, and its rule names the set."""
    subprocess.run(["ip", "netns", "exec", host_ns, sys.executable, "-c",
                    "from pyroute2.ipset import IPSet; IPSet().create('pmt-allowed', stype='hash:net')"],
                   check=True)  # fmt: skip
    env = {"PATH": f"{rp.bin_dir('legacy')}:{os.environ['PATH']}"}  # (iptc: a legacy host)
    extra = ["--dry-run"] * dry_run
    conditions = "-m set --match-set pmt-allowed src"
    done = run(_add_args(host_ns, mode, "--conditions-v4", conditions, *extra), env=env)
    assert done.returncode == 0, done.stderr
    if dry_run:
        assert "--match-set pmt-allowed src" in done.stdout, done.stdout
    else:
        assert "--match-set pmt-allowed src" in rp.save(host_ns, 4, "legacy")


# --- the xtables lock (legacy iptables) --------------------------------------------------


class LockHolder:
    """Another process holding the xtables lock, as a running iptables-legacy would."""

    def __init__(self, path: str = XTABLES_LOCK) -> None:
        code = (
            "import fcntl, os, sys, time\n"
            f"fd = os.open({path!r}, os.O_RDWR | os.O_CREAT, 0o600)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('held', flush=True)\n"
            "sys.stdin.read()\n"  # held until told
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline() == "held\n"

    def release(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            self.process.wait(timeout=10)


@pytest.fixture
def legacy_node(host_ns):
    if not rp.mode_available("legacy")[0]:
        pytest.skip(rp.mode_available("legacy")[1])
    conf = rp.plugin_conf(
        "othernet", ["10.88.0.9/16"], [{"hostPort": 7070, "containerPort": 70, "protocol": "tcp"}]
    )
    rp.run_plugin("ADD", host_ns, "existing", conf, mode="legacy", check=True)
    return host_ns


@pytest.mark.parametrize("mode", ["legacy", "iptc"])
def test_xtables_lock_held_longer_than_the_wait_fails_cleanly(legacy_node, mode):
    """PORTMAPCTL_XTABLES_WAIT is the wait of every path that takes the lock (0.1:
    python-iptables waited its own 10 s whatever it said)."""
    before = _state(legacy_node, "legacy")
    # python-iptables is for a host whose iptables is legacy: this run's is.
    env = {WAIT_ENV: "1", "PATH": f"{rp.bin_dir('legacy')}:{os.environ['PATH']}"}
    holder = LockHolder()
    try:
        started = time.monotonic()
        done = run(_add_args(legacy_node, mode, "--family", "4"), env=env)
        elapsed = time.monotonic() - started
    finally:
        holder.release()
    assert_error(
        done,
        1,
        f"gave up after {APPLY_TRIES} tries, nothing changed",
        "waiting 1 s for the xtables lock" if mode == "legacy" else "xtables lock",
    )
    if mode == "iptc":
        assert "for 1 s" in done.stderr, done.stderr
    # Bounded: three tries of a one-second wait, not three of the default ten.
    assert APPLY_TRIES * 1 <= elapsed < APPLY_TRIES * 1 + 4
    assert _state(legacy_node, "legacy") == before


def test_a_lock_held_at_xtables_lockfile_is_a_busy_lock_not_a_refusal(legacy_node, tmp_path):
    """iptables honours XTABLES_LOCKFILE (as python-iptables' path here does): its
    `Can't lock PATH: ...` line names that file, not xtables.lock, so a held lock was
    read as iptables refusing the rules. check --repair then blamed each container
    ("iptables refused it") and halved down to one restore per container, each
    waiting the lock's whole wait again (5 containers: 9.6 s against 3 s)."""
    ports = {f"ctr{i}": [{"hostPort": 8090 + i, "containerPort": 80, "protocol": "tcp"}]
             for i in range(1, 5)}  # fmt: skip
    for i, (container, mapping) in enumerate(ports.items(), start=1):
        conf = rp.plugin_conf("mynet", [f"10.88.0.{10 + i}/16"], mapping)
        rp.run_plugin("ADD", legacy_node, container, conf, mode="legacy", check=True)
        # (Its namespace holding its address: not one being torn down, left as it is.)
        rp.write_cni_cache(tmp_path / "cni", "mynet", container, "eth0", conf, mapping,
                           [f"10.88.0.{10 + i}/16"])  # fmt: skip
    for line in rp.save(legacy_node, 4, "legacy").splitlines():
        if line.startswith("-A CNI-DN-") and "-s 127.0.0.1/32" in line:
            rp.iptables(legacy_node, ["-t", "nat", "-D", *line.split()[1:]], mode="legacy")
    before = _state(legacy_node, "legacy")
    lock = str(tmp_path / "iptables.lock")  # (a name without "xtables.lock" in it)
    env = {WAIT_ENV: "2", "XTABLES_LOCKFILE": lock}
    args = ["check", "--repair", "--netns", legacy_node, "--iptables", "legacy", "--family",
            "4", "--cni-cache-dir", str(tmp_path / "cni")]  # fmt: skip
    holder = LockHolder(lock)
    try:
        started = time.monotonic()
        done = run(args, env=env)
        elapsed = time.monotonic() - started
    finally:
        holder.release()
    assert done.returncode == 1, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "could not repair" in line]
    assert len(warnings) == len(ports), done.stderr
    assert all("the xtables lock was busy" in line for line in warnings), done.stderr
    assert "refused" not in done.stderr
    # One round of tries for all of them (three waits), not one per container and
    # half (seven waits and more).
    assert elapsed < APPLY_TRIES * 2 + 5
    assert _state(legacy_node, "legacy") == before


def test_conditions_put_to_iptables_while_the_lock_is_held_are_no_bad_input(legacy_node, tmp_path):
    """`iptables-legacy-restore --test` waits for the xtables lock too: a lock held
    longer than the wait made its `Can't lock` line the conditions' refusal, so valid
    conditions were "invalid --conditions-v4" (exit 2, bad input) whenever kube-proxy
    or the plugin held the lock. A busy lock tells nothing of them: the write says
    it, as for an add without conditions (exit 1, nothing changed)."""
    before = _state(legacy_node, "legacy")
    lock = str(tmp_path / "iptables.lock")  # (the host's own lock left alone)
    env = {WAIT_ENV: "1", "XTABLES_LOCKFILE": lock}
    holder = LockHolder(lock)
    try:
        done = run(_add_args(legacy_node, "legacy", "--family", "4",
                             "--conditions-v4", "-s 10.0.0.0/8"), env=env)  # fmt: skip
    finally:
        holder.release()
    assert_error(done, 1, f"gave up after {APPLY_TRIES} tries, nothing changed",
                 "waiting 1 s for the xtables lock")  # fmt: skip
    assert "invalid" not in done.stderr
    assert _state(legacy_node, "legacy") == before


@pytest.mark.parametrize("mode", ["legacy", "iptc"])
@pytest.mark.parametrize("conditions", [False, True], ids=["plain", "conditions"])
def test_an_xtables_lock_that_cannot_be_opened_is_an_environment_error(
    legacy_node, tmp_path, mode, conditions
):
    """A lock file iptables cannot open (/run read-only or not there in a container,
    XTABLES_LOCKFILE in a missing directory): `Fatal: can't open lock file`, exit 4,
    for every write. python-iptables' path said so, exit 3; iptables-legacy-restore's
    was "refused the transaction" three times, exit 1, and with conditions its --test
    run made them "invalid --conditions-v4", exit 2. One node, one answer: exit 3."""
    before = _state(legacy_node, "legacy")
    lock = str(tmp_path / "not-there" / "xtables.lock")
    env = {WAIT_ENV: "1", "XTABLES_LOCKFILE": lock,
           "PATH": f"{rp.bin_dir('legacy')}:{os.environ['PATH']}"}  # fmt: skip
    extra = ["--conditions-v4", "-s 10.0.0.0/8"] if conditions else []
    done = run(_add_args(legacy_node, mode, "--family", "4", *extra), env=env)
    assert_error(done, 3, "xtables lock", lock)
    assert "invalid" not in done.stderr and "refused" not in done.stderr
    assert _state(legacy_node, "legacy") == before


def _child_restore(parent: int) -> Optional[int]:
    """The pid of the iptables-legacy-restore that `parent` runs, if any."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"restore" in cmdline:
            return int(entry)
    return None


def test_restore_sigkilled_while_it_waits_for_the_lock_is_retried(legacy_node):
    """The real iptables-legacy-restore, waiting (-w) for a lock someone holds, is
    killed: nothing was applied; the lock is then freed and the retry applies it all."""
    holder = LockHolder()
    try:
        command = subprocess.Popen(
            [sys.executable, "-m", "portmapctl",
             *_add_args(legacy_node, "legacy", "--family", "4")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, **{WAIT_ENV: "30"}),
        )  # fmt: skip
        deadline = time.monotonic() + 20
        victim = None
        while victim is None and time.monotonic() < deadline:
            victim = _child_restore(command.pid)
            time.sleep(0.02)
        assert victim is not None, "portmapctl never ran iptables-legacy-restore"
        time.sleep(0.2)  # well inside its wait for the lock
        assert _chain_lines(legacy_node, mode="legacy") == []
        os.kill(victim, signal.SIGKILL)
        time.sleep(0.2)
    finally:
        holder.release()
    out, err = command.communicate(timeout=60)
    assert command.returncode == 0, err
    assert f"added {CHAIN}" in out
    lines = _chain_lines(legacy_node, mode="legacy")
    assert len([line for line in lines if line.startswith("-A CNI-DN")]) == 6  # whole


def test_each_family_is_one_restore_transaction(node, tmp_path):
    """Each family `add` changes is written by exactly one `iptables-restore --noflush
    -w` run; `gc`'s removals on nf_tables by none: one nf_tables batch per family
    (tests/kernel/test_nfnl_batch.py counts the commits)."""
    env: dict = {}
    logs = {}
    for tool in ("iptables-nft-restore", "ip6tables-nft-restore"):
        env, logs[tool] = _wrapper(tmp_path, tool, 'exec "$REAL" "$@"')
    cache = tmp_path / "cni"
    (cache / "results").mkdir(parents=True)
    common = ["--netns", node, "--iptables", "nft", "--cni-cache-dir", str(cache)]
    add = ["add", "--network", "mynet", "--container", "new1", "--ip", "10.88.0.5/16",
           "--ip", "fd00::5/64", *(a for p in range(8001, 8041) for a in ("-p", f"{p}:80"))]  # fmt: skip
    gc = ["gc", "--yes", "--all", "--min-age", "0"]
    for command in (add, gc):
        for log in logs.values():
            log.unlink(missing_ok=True)
        done = run([*command, *common], env=env)
        assert done.returncode == 0, done.stderr
        for log in logs.values():
            calls = log.read_text().splitlines() if log.exists() else []
            # add in a family without the shared chains (here IPv6): first its plan
            # without a read, which iptables-restore refuses whole
            # (tests/kernel/test_add_blind.py), then the one that writes.
            # gc's removals on nf_tables are one nf_tables batch per family, not a
            # restore (tests/kernel/test_nfnl_batch.py counts the commits).
            assert len(calls) in ((1, 2) if command is add else (0,)), (command[0], calls)
            assert all(call.split()[1:] == ["--noflush", "-w", "10"] for call in calls)
