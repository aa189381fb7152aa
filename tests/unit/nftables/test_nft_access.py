"""The snapshot reader, the nft runner's refusals, and the memory fake's own rules."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import nftcases
import pytest

from portmapctl.errors import BadInput, HostProblem
from portmapctl.nftables.access import NftApplyFailed
from portmapctl.nftables.access.memory import MemoryNft
from portmapctl.nftables.access.nft import RealNft, first_error, parse_version
from portmapctl.nftables.access.snapshot import SnapshotNft
from portmapctl.nftables.ruleset import Action, ActionKind, BaseHook, Match, RuleBody
from portmapctl.nftables.transaction import Transaction


def test_snapshot_reads_a_dump() -> None:
    snap = SnapshotNft(str(nftcases.HERE / "v191-several.nft.json"))
    assert snap.read() == nftcases.live("v191-several")
    assert set(snap.read([6]).tables) == {6}
    with pytest.raises(BadInput, match="read-only"):
        snap.apply(Transaction())


def test_snapshot_bad_files(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="cannot read nft snapshot"):
        SnapshotNft(str(tmp_path / "nope.json"))
    bad = tmp_path / "bad.json"
    bad.write_text('{"nftables": [')
    with pytest.raises(BadInput, match=f"{bad}: not `nft -j list` output"):
        SnapshotNft(str(bad))


def _fake_nft(tmp_path: Path, version_line: str) -> str:
    script = tmp_path / "nft"
    script.write_text(f"#!/bin/sh\necho '{version_line}'\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_old_nft_is_a_host_problem(tmp_path: Path) -> None:
    nft = RealNft(_fake_nft(tmp_path, "nftables v0.9.8 (E.D.S.)"))
    with pytest.raises(HostProblem, match="nft 0.9.8 is too old .* needs 1.0.1 or later"):
        nft.read()


def test_an_nft_that_hangs_is_asked_once_and_exit_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nft stopped at its timeout: `nft -f` was an NftApplyFailed that converge_nft ran
    three times (each waiting 120 s), `nft --version` an uncaught timeout ("internal
    error", exit 1). Now both are ToolTimedOut (exit 3), which no retry loop catches;
    the write's says it may have gone in."""
    import shutil

    from portmapctl.errors import ToolTimedOut
    from portmapctl.nftables.access import nft as nft_access

    ran = tmp_path / "ran"
    script = tmp_path / "nft"
    sleep = shutil.which("sleep")
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$1" >> {ran}\n'
        f'[ "$1" = --version ] && [ ! -e {tmp_path}/answer ] && exec {sleep} 600\n'
        '[ "$1" = --version ] && { echo "nftables v1.0.6 (Lester Gooch #5)"; exit 0; }\n'
        f"exec {sleep} 600\n"
    )
    script.chmod(0o755)
    monkeypatch.setattr(nft_access, "TIMEOUT_SECONDS", 0.3)
    with pytest.raises(ToolTimedOut, match="did not answer within 0.3 s") as raised:
        RealNft(str(script)).check_version()
    assert raised.value.exit_code == 3
    (tmp_path / "answer").touch()
    txn = Transaction()
    txn.add_table(4)
    with pytest.raises(ToolTimedOut, match="nft -f did not finish within 0.3 s") as raised:
        RealNft(str(script)).apply(txn)
    assert raised.value.exit_code == 3 and raised.value.maybe_applied
    assert ran.read_text().split() == ["--version", "--version", "-f"]


def test_missing_nft_is_a_host_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(os, "defpath", str(tmp_path))
    from portmapctl.host import paths

    monkeypatch.setattr(paths, "SBIN_DIRS", str(tmp_path))
    with pytest.raises(HostProblem, match="nft not found: install nftables"):
        RealNft().read()


def test_version_and_error_parsing() -> None:
    assert parse_version("nftables v1.0.6 (Lester Gooch #5)") == (1, 0, 6)
    assert parse_version("nftables v1.1 (x)") == (1, 1, 0)
    assert parse_version("garbage") is None
    stderr = (
        "/dev/stdin:2:27-28: Error: Could not process rule: No such file or directory\n"
        "delete rule ip t c handle 99\n"
    )
    assert first_error(stderr) == "No such file or directory"


def _rule(port: int) -> RuleBody:
    return RuleBody(
        (Match("tcp dport", "==", str(port)),),
        Action(ActionKind.DNAT, addr="10.0.0.1", port=80),
        "c1",
    )


def test_memory_semantics() -> None:
    fake = MemoryNft()
    txn = Transaction()
    txn.add_table(4)
    txn.add_chain(4, "hostports")
    txn.add_rule(4, "hostports", _rule(1))
    fake.apply(txn)
    assert [r.handle for r in fake.read().tables[4].rules_of("hostports")] == [2]
    # A failed transaction changes nothing but keeps the handles it took.
    bad = Transaction()
    bad.add_rule(4, "hostports", _rule(2))
    bad.delete_rule(4, "hostports", 99)
    with pytest.raises(NftApplyFailed, match="No such file or directory"):
        fake.apply(bad)
    assert [r.handle for r in fake.read().tables[4].rules_of("hostports")] == [2]
    again = Transaction()
    again.add_rule(4, "hostports", _rule(3))
    fake.apply(again)
    assert [r.handle for r in fake.read().tables[4].rules_of("hostports")] == [2, 4]
    for build, reason in [
        (lambda t: t.add_rule(4, "nochain", _rule(1)), "No such file or directory"),
        (lambda t: t.add_chain(4, "hostports", BaseHook("nat", "prerouting", -100)), "File exists"),
        (lambda t: t.flush_chain(6, "hostports"), "No such file or directory"),
        (
            lambda t: t.add_rule(4, "hostports", RuleBody((), Action(ActionKind.JUMP, target="x"))),
            "No such file or directory",
        ),
    ]:
        t = Transaction()
        build(t)
        with pytest.raises(NftApplyFailed) as err:
            fake.apply(t)
        assert err.value.reason == reason
