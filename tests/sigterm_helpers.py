"""portmapctl killed by SIGTERM at a chosen moment of its write: a real process, a real
signal. The moment is held open by a hook in the process (PMT_HOOK names it: the
write's fsync, a transaction's apply, ...; it sleeps once it is there), the only
stand-in. Shared by tests/kernel/test_sigterm.py and the nftables interop tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

# Runs portmapctl as its console script does, with the write held open at one point.
HOOK = """
import faulthandler, os, signal, sys, time
faulthandler.register(signal.SIGUSR1, all_threads=True)  # where it hangs, if it does
marker, where = os.environ["PMT_MARKER"], os.environ["PMT_HOOK"]

def hold():
    open(marker, "w").close()
    # Short sleeps: a signal that lands after the interpreter's last look for one but
    # before the sleep's system call starts does not interrupt that call (Python runs
    # its handler only once the call returns); one long sleep held such a SIGTERM for
    # the whole minute, and the test timed out one run in some hundreds.
    for _ in range(600):
        time.sleep(0.1)

if where == "save":
    # Every family's removal is in by then; the UDP conntrack flush comes after it.
    from portmapctl.ops.gc import state
    real_save = state.save
    def save(*args, **kwargs):
        hold()
        return real_save(*args, **kwargs)
    state.save = save
elif where == "converge":
    # IPv4's removal went in; its converge_family has not returned yet.
    from portmapctl.ops.gc import apply
    real_converge = apply.converge_family
    def converge_family(node, first, *args, **kwargs):
        done = real_converge(node, first, *args, **kwargs)
        if first.family == 4:
            hold()
        return done
    apply.converge_family = converge_family
elif where == "repair":
    # check --repair's IPv4 transaction went in; its apply has not returned yet.
    from portmapctl.ops.check.read_once import ReadOnce
    real_apply = ReadOnce.apply
    def apply(self, txn):
        real_apply(self, txn)
        if txn.family == 4:
            hold()
    ReadOnce.apply = apply
elif where == "nft-repair":
    import importlib
    nft_repair = importlib.import_module("portmapctl.ops.check.nft_repair")
    real_nft_apply = nft_repair.ReadOnceNft.apply
    def nft_apply(self, txn):
        real_nft_apply(self, txn)
        hold()
    nft_repair.ReadOnceNft.apply = nft_apply
elif where == "nft-write":
    # The nftables backend's write went in (`nft -f`, or gc's batch at the generation
    # read: read_at); its apply has not returned yet.
    from portmapctl.nftables.access import nft
    real_nft_write = nft.RealNft.apply
    def nft_write(self, txn, *read_at):
        real_nft_write(self, txn, *read_at)
        hold()
    nft.RealNft.apply = nft_write
elif where == "ahead":
    # The IPv4 plan held until the family applied ahead of it (IPv6) went in.
    import threading
    from portmapctl.ops.gc import plan
    went = threading.Event()
    real_converge, real_plan_table = plan.converge_family, plan.plan_table
    def converge_family(*args, **kwargs):
        done = real_converge(*args, **kwargs)
        went.set()
        return done
    def plan_table(table, *args, **kwargs):
        if table.family == 4:
            went.wait(30)
            hold()
        return real_plan_table(table, *args, **kwargs)
    plan.converge_family, plan.plan_table = converge_family, plan_table
elif where == "add":
    # add's write went in (ahead of it, or by add itself); its UDP flush has not run.
    # Meanwhile a flow through the new rules is made (PMT_DURING: conntrack -I's args).
    # (An nftables add's side effects are looked up in ops/add_nft.py, an iptables
    # add's in ops/add.py: both are held.)
    import subprocess
    from portmapctl.ops import add, add_nft
    real_after_setup, held = add.after_setup, []
    def after_setup(*args, **kwargs):
        if not held:
            held.append(True)
            subprocess.run(["conntrack", *os.environ["PMT_DURING"].split()], check=True,
                           capture_output=True)
            hold()
        return real_after_setup(*args, **kwargs)
    add.after_setup = add_nft.after_setup = after_setup
elif where == "add-looking":
    # add's write and its UDP flush are done; it looks around for its warnings.
    from portmapctl.ops import add
    real_takers = add.foreign_takers
    def foreign_takers(*args, **kwargs):
        hold()
        return real_takers(*args, **kwargs)
    add.foreign_takers = foreign_takers
elif where == "add-early":
    # iptables-nft's write ahead went in while add was still starting: ops.add not yet
    # entered (the imports, the node's opening).
    import subprocess
    from portmapctl.cli import add_run
    real_add = add_run._add
    def _add(common, config, ahead, **kwargs):
        ahead.written()
        subprocess.run(["ip", "netns", "exec", common.netns, "conntrack",
                        *os.environ["PMT_DURING"].split()], check=True, capture_output=True)
        hold()
        return real_add(common, config, ahead, **kwargs)
    add_run._add = _add
elif where == "ahead-start":
    # iptables-nft's write ahead went in while Ahead.start still runs (starting its other
    # threads: Thread.start waits for each); SIGTERM lands there, held for a second.
    import subprocess
    from portmapctl.ops import add_ahead
    real_start = add_ahead.Ahead.start.__func__
    def start(cls, netns, *args, **kwargs):
        ahead = real_start(cls, netns, *args, **kwargs)
        ahead.written()
        subprocess.run(["ip", "netns", "exec", netns, "conntrack",
                        *os.environ["PMT_DURING"].split()], check=True, capture_output=True)
        open(marker, "w").close()
        time.sleep(1)
        return ahead
    add_ahead.Ahead.start = classmethod(start)
elif where == "gc-show":
    # gc's removal, its UDP flush and its state save are done; it reports what it did.
    from portmapctl.cli import gc as gc_cli
    real_show = gc_cli._show
    def _show(*args, **kwargs):
        hold()
        return real_show(*args, **kwargs)
    gc_cli._show = _show
elif where == "repair-returned":
    # check --repair's repair, its side effects and the check after it are done; the
    # command reports them (its "repaired:" lines first, then the table).
    from portmapctl import render
    real_fixed_lines = render.check_fixed_lines
    def check_fixed_lines(*args, **kwargs):
        hold()
        return real_fixed_lines(*args, **kwargs)
    render.check_fixed_lines = check_fixed_lines
elif where == "repair-check-after":
    # check --repair's transactions went in and their side effects are done: the check
    # after it (of the node, or of the one mapping) is under way.
    import sys as _sys
    import portmapctl.ops.check.repair
    import portmapctl.ops.check.repair_one
    repair_module = _sys.modules["portmapctl.ops.check.repair"]
    one_module = _sys.modules["portmapctl.ops.check.repair_one"]
    real_check_node, real_owners, calls = repair_module._check_node, one_module.with_owner_problems, []
    def _check_node(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # (the first is the check before)
            hold()
        return real_check_node(*args, **kwargs)
    def with_owner_problems(*args, **kwargs):
        hold()
        return real_owners(*args, **kwargs)
    repair_module._check_node, one_module.with_owner_problems = _check_node, with_owner_problems
    # One mapping in the nftables backend: its check after is the one check_followed
    # looked up in ops.check.run when called (repair_one.py's check before has its own
    # name for it, imported before this).
    from portmapctl.ops.check import run as check_run
    real_followed = check_run.check_followed
    def check_followed(*args, **kwargs):
        hold()
        return real_followed(*args, **kwargs)
    check_run.check_followed = check_followed
elif where in ("starting", "over"):
    # Outside the command: Python still starting (the CLI's modules not imported, its
    # handler not there), or the command over (its output written, its handler gone).
    from portmapctl import entry
    real_run = entry._run
    def _run(*args, **kwargs):
        if where == "starting":
            hold()
        try:
            return real_run(*args, **kwargs)
        finally:
            if where == "over":
                hold()
    entry._run = _run
elif where == "state":
    real_fsync = os.fsync
    def fsync(fd):
        real_fsync(fd)
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp"):
            hold()
    os.fsync = fsync
else:
    # The metrics file's temporary one (NAME.prom.PID.TID) written, before its rename.
    import re as _re
    real_fsync = os.fsync
    def fsync(fd):
        real_fsync(fd)
        if _re.search(r"\\.prom\\.[0-9]+\\.[0-9]+$", os.readlink(f"/proc/self/fd/{fd}")):
            hold()
    os.fsync = fsync
from portmapctl.entry import main
main()
"""


def _ctrl_c_as_on_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def killed_while_writing(argv, env, where, marker, sig=signal.SIGTERM):
    """`portmapctl ARGV` held at the hook `where` (its `marker` file says it is there),
    then sent SIGTERM (or `sig`): (exit status, stdout, stderr)."""
    full = dict(os.environ, PMT_MARKER=str(marker), PMT_HOOK=where, **env)
    child = subprocess.Popen(
        [sys.executable, "-c", HOOK, *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full,
        # Ctrl-C's default, as on a terminal: a suite started in the background by a
        # shell without job control inherits SIGINT ignored, and Python keeps it so.
        preexec_fn=_ctrl_c_as_on_a_terminal,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the write never started"
            time.sleep(0.01)
        child.send_signal(sig)
        try:
            out, err = child.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGUSR1)  # its threads' stacks, to stderr
            time.sleep(1)
            child.kill()
            out, err = child.communicate()
            raise AssertionError(f"still running 30 s after SIGTERM:\n{err}") from None
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return child.returncode, out, err
