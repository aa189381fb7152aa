"""The python-iptables backend on its own: the pieces of iptables-save's format it
prints itself, namespaces, the xtables lock, what happens when python-iptables or
libiptc is missing or dies, and that `import iptc` is paid only with --iptables iptc.

The conformance suite (test_backends_conformance.py) holds it to the same results as
the save/restore backends.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import realplugin as rp
from pmctl import assert_error, run

from portmapctl.errors import ApplyFailed, HostProblem
from portmapctl.host import netns
from portmapctl.iptables.transaction import Transaction

FIXTURES = Path(__file__).parents[1] / "fixtures"


# --- python-iptables, for real ------------------------------------------------------------------


@pytest.fixture
def iptc_backend(monkeypatch):
    pytest.importorskip("iptc", reason="python-iptables is not installed")
    from portmapctl.iptables.access.iptc import IptcBackend

    return IptcBackend


def _legacy_save(ns: str, family: int = 4) -> str:
    return rp.strip_save_comments(rp.save(ns, family, "legacy"))


def _chain_txn(name: str) -> Transaction:
    txn = Transaction(4)
    txn.new_chain(name)
    txn.append(name, ("-p", "tcp", "-m", "tcp", "--dport", "80", "-j", "RETURN"))
    return txn


def test_each_use_works_in_the_namespace_it_is_in(host_ns, iptc_backend):
    """One backend object, used in two namespaces one after the other: libiptc's
    handle and socket are opened at use time, nothing is kept from an earlier setns."""
    other = rp.create_netns("pmt-other")
    try:
        backend = iptc_backend()
        with netns.entered(host_ns):
            backend.apply(_chain_txn("CNI-DN-in-host"))
        with netns.entered(other):
            assert not backend.read(4).has_chain("CNI-DN-in-host")
            backend.apply(_chain_txn("CNI-DN-in-other"))
        with netns.entered(host_ns):
            assert backend.read(4).has_chain("CNI-DN-in-host")
            assert not backend.read(4).has_chain("CNI-DN-in-other")
        assert "CNI-DN-in-host" in _legacy_save(host_ns)
        assert "CNI-DN-in-other" not in _legacy_save(host_ns)
        assert "CNI-DN-in-other" in _legacy_save(other)
        assert "CNI-DN-in-host" not in _legacy_save(other)
    finally:
        rp.delete_netns(other)


def test_a_held_xtables_lock_is_waited_for_then_refused(
    host_ns, iptc_backend, monkeypatch, tmp_path
):
    """iptables' own lock, as iptables-legacy-restore -w takes it (the file is moved
    with XTABLES_LOCKFILE, which iptables honours too, to leave the host's alone)."""
    lock = tmp_path / "xtables.lock"
    monkeypatch.setenv("XTABLES_LOCKFILE", str(lock))
    backend = iptc_backend(lock_wait=0.3)
    fd = os.open(lock, os.O_CREAT | os.O_RDONLY, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with netns.entered(host_ns), pytest.raises(ApplyFailed, match="xtables lock"):
            backend.apply(_chain_txn("CNI-DN-locked"))
        assert "CNI-DN-locked" not in _legacy_save(host_ns)
        # iptables itself gives up on the same file: it is the lock iptables takes.
        # (`-w 1`, and a timeout here: iptables' `-w 0` waits for ever.)
        tool = rp.tool_path("iptables", "legacy")
        done = subprocess.run(
            ["ip", "netns", "exec", host_ns, tool, "-w", "1", "-t", "nat", "-N", "X"],
            capture_output=True,
            text=True,
            env={**os.environ, "XTABLES_LOCKFILE": str(lock)},
            timeout=20,
        )
        assert done.returncode != 0 and "xtables lock" in done.stderr
        fcntl.flock(fd, fcntl.LOCK_UN)
        with netns.entered(host_ns):
            backend.apply(_chain_txn("CNI-DN-locked"))
        assert "CNI-DN-locked" in _legacy_save(host_ns)
    finally:
        os.close(fd)


def test_a_python_iptables_crash_ends_the_child_not_the_command(host_ns, iptc_backend):
    """libxtables registers a family-specific target for one family per process, and
    python-iptables' retry exits the process from C ("already registered"): that is
    why every session runs in a fork. Here it happens, in the child, on purpose."""
    from portmapctl.iptables.access import iptc as module

    backend = iptc_backend()
    lib = backend._lib

    def both_families() -> None:
        from iptc import xtables

        ipv4, ipv6 = xtables.xtables(xtables.NFPROTO_IPV4), xtables.xtables(xtables.NFPROTO_IPV6)
        ipv4.find_target(b"LOG")
        ipv4.find_target(b"TCPMSS")
        ipv6.find_target(b"TCPMSS")  # libxtables: exit(1), "already registered"

    with pytest.raises(ApplyFailed, match="died .*already registered.*nothing was committed"):
        module._in_child(lib, both_families, ApplyFailed)
    with netns.entered(host_ns):  # and this process goes on working
        assert ":POSTROUTING ACCEPT" in backend.save_text(6)


def test_a_writer_killed_by_a_signal_may_have_committed(host_ns, iptc_backend):
    """The OOM killer or a signal to the whole cgroup can end the child after its
    commit: the transaction may have gone in (whole: libiptc replaces the table in one
    go), so it is never said to have changed nothing, and check --repair reads the
    table again instead of calling it a refusal (ApplyFailed.maybe_applied)."""
    import signal

    from portmapctl.iptables.access import iptc as module

    backend = iptc_backend()

    def committed_then_killed() -> None:
        backend.apply(_chain_txn("CNI-DN-killed"))  # (its own child: committed)
        os.kill(os.getpid(), signal.SIGKILL)

    with netns.entered(host_ns):
        with pytest.raises(ApplyFailed, match="killed by SIGKILL") as raised:
            module._in_child(backend._lib, committed_then_killed, ApplyFailed)
    assert raised.value.maybe_applied
    assert "CNI-DN-killed" in _legacy_save(host_ns)


@pytest.mark.netns
def test_not_root_is_an_environment_error(monkeypatch):
    """Without CAP_NET_ADMIN libiptc cannot even read (here, in this process's own
    namespace: the kernel refuses before it looks at any table)."""
    pytest.importorskip("iptc", reason="python-iptables is not installed")
    monkeypatch.setenv("PATH", f"{rp.bin_dir('legacy')}:{os.environ['PATH']}")
    done = run(["list", "--iptables", "iptc"], unprivileged=True)
    assert_error(done, 3, "permission denied", "root")


@pytest.mark.netns
def test_without_net_raw_the_error_names_it(host_ns):
    """CAP_NET_ADMIN without CAP_NET_RAW (a DaemonSet that added only NET_ADMIN):
    libiptc's raw socket is refused, and the line says which capability is missing
    (0.1: 'run as root (or with CAP_NET_ADMIN)', which the process had)."""
    pytest.importorskip("iptc", reason="python-iptables is not installed")
    drop = "-net_raw"
    env = dict(os.environ, NO_COLOR="1", PATH=f"{rp.bin_dir('legacy')}:{os.environ['PATH']}")
    done = subprocess.run(
        ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}", sys.executable, "-m",
         "portmapctl", "list", "--iptables", "iptc", "--netns", host_ns],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert_error(done, 3, "permission denied", "CAP_NET_RAW")


def _without(path: str, scratch: Path, *args: str) -> subprocess.CompletedProcess:
    """`portmapctl ARGS` in a private mount namespace where `path` is hidden under an
    empty file or directory bind-mounted over it: what a missing package looks like."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare (util-linux) to hide a library in a mount namespace")
    empty = "/dev/null"
    if not os.path.isfile(path):
        empty = str(scratch / "empty")
        os.mkdir(empty)
    code = (
        "import subprocess, sys\n"
        f"hidden = subprocess.run(['mount', '--bind', {empty!r}, {path!r}])\n"
        "if hidden.returncode: sys.exit(97)\n"
        "from portmapctl.cli import main\n"
        f"main({list(args)!r})\n"
    )
    env = dict(os.environ, NO_COLOR="1", PATH=f"{rp.bin_dir('legacy')}:{os.environ['PATH']}")
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    if done.returncode == 97 or "unshare failed" in done.stderr:
        pytest.skip(f"cannot bind-mount in a private mount namespace here: {done.stderr.strip()}")
    return done


def test_missing_python_iptables_is_an_environment_error(host_ns, tmp_path):
    iptc = pytest.importorskip("iptc", reason="python-iptables is not installed")
    package = os.path.dirname(iptc.__file__)
    done = _without(package, tmp_path, "list", "--netns", host_ns, "--iptables", "iptc")
    assert_error(done, 3, "needs python-iptables", "portmapctl[iptc]")


def test_missing_libiptc_is_an_environment_error(host_ns, tmp_path):
    pytest.importorskip("iptc", reason="python-iptables is not installed")
    # The libip4tc python-iptables loaded into this process (it is imported above).
    with open("/proc/self/maps") as maps:
        paths = {line.split()[-1] for line in maps if "libip4tc" in line}
    assert paths, "python-iptables loaded no libip4tc"
    library = os.path.realpath(paths.pop())
    done = _without(library, tmp_path, "list", "--netns", host_ns, "--iptables", "iptc")
    assert_error(done, 3, "cannot load libiptc", "install iptables")


# --- start-up cost -------------------------------------------------------------------------------


def _imports(*args: str, env: dict) -> str:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "portmapctl", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    return done.stderr


def _imported_iptc(stderr: str) -> bool:
    return any(line.rstrip().endswith("| iptc") for line in stderr.splitlines())


def test_import_iptc_only_with_backend_iptc(host_ns):
    """`import iptc` costs 0.25-0.4 s: paid only when --iptables iptc is used."""
    pytest.importorskip("iptc", reason="python-iptables is not installed")
    legacy = dict(os.environ, PATH=f"{rp.bin_dir('legacy')}:{os.environ['PATH']}")
    nft = dict(os.environ, PATH=f"{rp.bin_dir('nft')}:{os.environ['PATH']}")
    snapshot = ["--snapshot", str(FIXTURES / "basic.v4.save"), "-o", "json"]
    assert not _imported_iptc(_imports("--version", env=legacy))
    assert not _imported_iptc(_imports("list", *snapshot, env=legacy))
    assert not _imported_iptc(
        _imports("list", "--netns", host_ns, "--iptables", "legacy", env=legacy)
    )
    # Refused on an nf_tables host before the import.
    assert not _imported_iptc(_imports("list", "--netns", host_ns, "--iptables", "iptc", env=nft))
    assert _imported_iptc(_imports("list", "--netns", host_ns, "--iptables", "iptc", env=legacy))


def test_host_problem_reads_come_back_as_host_problems(host_ns, iptc_backend):
    """A table that cannot be opened is exit 3 (HostProblem), not a crash."""
    from portmapctl.iptables.access import iptc as module

    backend = iptc_backend()

    def refuse() -> None:
        raise HostProblem("python-iptables cannot open the IPv4 nat table: test")

    with pytest.raises(HostProblem, match="cannot open"):
        module._in_child(backend._lib, refuse, ApplyFailed)
