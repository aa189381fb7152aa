"""`list` starts its nft listing before typer parses the command line (nftables/early.py).

- the early reading of the command line never starts nft where typer's parse says the
  command reads no live nft state, and lists the families the command will read;
- its option table is list's own (the names, the choices);
- a started listing is taken once, by a read of the same binary and families; a
  mismatch or `close` stops it;
- as a user runs it, `list` runs nft once per family (the read took the early
  listing), and --version, --help, offline and usage-error runs run no nft at all.
"""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import nftcases
import pmctl
import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st

from portmapctl.cli._common import (
    BackendChoice,
    FamilyChoice,
    ProtoChoice,
    families,
)
from portmapctl.cli.output import OutputChoice
from portmapctl.cli.typer_app import build_app
from portmapctl.core.backend import IptablesAccess
from portmapctl.core.status import Status
from portmapctl.nftables import early
from portmapctl.nftables.access.nft import EarlyListing, RealNft

LIST = typer.main.get_command(build_app("list"))
LIST_COMMAND = LIST.commands["list"]  # type: ignore[attr-defined]


def typer_reads_nft(args: List[str]) -> Optional[Tuple[int, ...]]:
    """The families `list ARGS` reads with nft by typer's parse, None when it reads none
    live (or typer refuses the line, or it asks for help)."""
    try:
        ctx = LIST_COMMAND.make_context("list", list(args), resilient_parsing=False)
    except (typer.Exit, Exception):  # noqa: BLE001 - any refusal: no command runs
        return None
    params = ctx.params  # as click parsed them: typer makes the Enums later
    if BackendChoice(params["backend"]) is BackendChoice.iptables:
        return None
    if params["netns"] is not None or params["nft_snapshot"] is not None:
        return None
    if params["snapshot"] is not None or params["snapshot6"] is not None:
        return None
    return families(FamilyChoice(params["family"]))


PLAIN = [
    [],
    ["--backend", "nftables"],
    ["--backend=auto", "-o", "json", "--family", "6"],
    ["--family=v4", "--status", "STALE", "--proto", "udp", "--port", "80", "-q", "-v"],
    ["--container", "abc", "--network", "n", "--cni-cache-dir", "/x", "--cni-cache-dir=/y"],
    ["--conntrack", "--no-headers", "--no-trunc", "--no-color", "--iptables", "legacy"],
    ["--metrics-file", "/tmp/m.prom", "--output=wide", "--family", "4", "--family", "all"],
]
NOT_STARTED = [
    ["--help"],
    ["-h"],
    ["--backend", "iptables"],
    ["--backend", "nftables", "--backend", "iptables"],
    ["--netns", "x"],
    ["--snapshot", "f"],
    ["--snapshot6=f"],
    ["--nft-snapshot", "f"],
    ["--backend", "nft"],  # not a choice
    ["--bogus"],
    ["-ojson"],
    ["-qv"],
    ["--", "x"],
    ["positional"],
    ["--container"],  # no value
    ["--container", "--help"],
    ["--quiet=yes"],
    ["--status", "fine"],
]


@pytest.mark.parametrize("args", PLAIN)
def test_plain_lines_start_what_typer_reads(args: List[str]) -> None:
    found = early.families_to_list(["list", *args])
    assert found is not None
    assert found == typer_reads_nft(args)


@pytest.mark.parametrize("args", NOT_STARTED)
def test_nothing_started_where_typer_reads_none_or_the_line_is_odd(args: List[str]) -> None:
    assert early.families_to_list(["list", *args]) is None


def test_only_list_and_not_completion(monkeypatch: pytest.MonkeyPatch) -> None:
    for command in ([], ["--version"], ["--help"], ["check"], ["gc"], ["add"], ["flush-udp"]):
        assert early.families_to_list(command) is None
    assert early.families_to_list(["list"]) == (4, 6)
    monkeypatch.setenv(early.COMPLETION_ENV, "bash_complete")
    assert early.families_to_list(["list"]) is None


WORDS = st.sampled_from(
    [
        "--backend", "auto", "nftables", "iptables", "--family", "4", "6", "v6", "all",
        "--netns", "--snapshot", "--nft-snapshot", "--help", "-o", "json", "-q", "--port",
        "80", "--status", "ok", "Zombie", "--proto", "TCP", "--family=6", "--backend=nftables",
        "--conntrack", "--", "-x", "x", "--iptables", "nft", "--output=json", "--cni-cache-dir",
    ]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(WORDS, max_size=7))
def test_never_starts_what_typer_would_not_read(args: List[str]) -> None:
    found = early.families_to_list(["list", *args])
    if found is not None:
        assert found == typer_reads_nft(args)


def test_the_option_table_is_lists() -> None:
    names = set()
    for param in LIST_COMMAND.params:
        names.update(param.opts)
        names.update(param.secondary_opts)
    names -= {"--help", "-h", "--install-completion", "--show-completion"}
    known = set(early.VALUES) | early.FLAGS | early.ELSEWHERE
    assert known == names
    choices = {
        "--backend": BackendChoice,
        "--iptables": IptablesAccess,
        "--family": FamilyChoice,
        "--output": OutputChoice,
        "-o": OutputChoice,
        "--proto": ProtoChoice,
        "--status": Status,
    }
    for name, enum in choices.items():
        assert set(early.VALUES[name] or ()) == {member.value for member in enum}, name
    assert {n for n, c in early.VALUES.items() if c is None} == {
        "--container", "--network", "--port", "--metrics-file", "--cni-cache-dir",
    }  # fmt: skip


# --- the listing itself -------------------------------------------------------------------


def _fake_nft(tmp_path: Path, listing: str) -> Tuple[str, Path]:
    """An `nft` that logs its arguments and prints `listing` for the ip table, "no such
    table" for ip6 (as nft does without one)."""
    (tmp_path / "listing.json").write_text(listing)
    log = tmp_path / "calls"
    script = tmp_path / "nft"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {log}\n'
        'if [ "$4" = ip6 ]; then\n'
        '  echo "Error: No such file or directory; did you mean table ‘x’?" >&2; exit 1\n'
        "fi\n"
        f"cat {tmp_path / 'listing.json'}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script), log


def test_a_started_listing_is_taken_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    listing = nftcases.json_text("v191-basic")
    binary, log = _fake_nft(tmp_path, listing)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    started = EarlyListing.start([6, 4, 4])
    assert started is not None and started.binary == binary and started.families == (4, 6)
    nft = RealNft(early=started)
    expected = nftcases.live("v191-basic")
    assert nft.read() == RealNft(binary).read() == expected
    assert len(log.read_text().splitlines()) == 4  # 2 started early and taken, 2 by the plain read
    assert started.take(binary, (4, 6)) is None  # taken already
    assert nft.read() == expected  # a later read starts its own
    assert len(log.read_text().splitlines()) == 6


def test_a_listing_not_asked_for_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary, _log = _fake_nft(tmp_path, nftcases.json_text("v191-basic"))
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    started = EarlyListing.start([4, 6])
    assert started is not None
    processes = [r.process for r in started._running or ()]
    assert started.take(binary, (4,)) is None  # other families: stopped, not handed out
    assert all(p.returncode is not None for p in processes)
    again = EarlyListing.start([4])
    assert again is not None
    processes = [r.process for r in again._running or ()]
    again.close()
    assert all(p.returncode is not None for p in processes)
    assert again.take(binary, (4,)) is None


def test_no_nft_starts_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from portmapctl.host import paths

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(paths, "SBIN_DIRS", str(tmp_path))
    assert EarlyListing.start([4, 6]) is None


def _run(args: List[str], bin_dir: Path) -> subprocess.CompletedProcess:
    return pmctl.run(args, env={"PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/bin"})


def test_as_run_list_lists_once_and_the_rest_not_at_all(tmp_path: Path) -> None:
    binary, log = _fake_nft(tmp_path, nftcases.json_text("v191-basic"))
    cache = tmp_path / "cache"
    cache.mkdir()
    common = ["--backend", "nftables", "--cni-cache-dir", str(cache)]
    done = _run(["list", *common, "-o", "json"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert '"backend": "nftables"' in done.stdout
    calls = log.read_text().splitlines()
    assert sorted(calls) == ["-j list table ip cni_hostport", "-j list table ip6 cni_hostport"]
    log.unlink()
    snapshot = str(nftcases.HERE / "v191-basic.nft.json")
    offline = _run(["list", *common, "-o", "json", "--nft-snapshot", snapshot], tmp_path)
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout == done.stdout  # the same tables, read as a dump
    for args in (["--version"], ["--help"], ["list", "--help"], ["list", "--bogus"]):
        assert _run(args, tmp_path).returncode in (0, 2)
    assert not log.exists(), log.read_text()


def test_a_bad_value_stops_the_listing(tmp_path: Path) -> None:
    script = tmp_path / "nft"
    marker = tmp_path / "still-running"
    # Lists slowly: the command fails long before; the listing must not outlive it.
    script.write_text(f"#!/bin/sh\necho $$ > {marker}\nexec sleep 30\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    done = _run(["list", "--backend", "nftables", "--port", "0"], tmp_path)
    assert done.returncode == 2
    assert (
        done.stderr == "portmapctl: error: invalid --port '0': must be a number from 1 to 65535\n"
    )
    pid = marker.read_text().split()[0] if marker.exists() else None
    if pid is not None:  # started: it must be gone (killed, reaped) when list exits
        alive = subprocess.run(["kill", "-0", pid], capture_output=True)
        assert alive.returncode != 0


def test_entry_imports_nothing_for_version() -> None:
    code = (
        "import sys; from portmapctl.entry import main\n"
        "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
        "assert 'portmapctl.nftables.early' not in sys.modules\n"
        "assert 'subprocess' not in sys.modules, 'subprocess imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
