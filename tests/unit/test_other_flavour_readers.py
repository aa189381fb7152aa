"""ops/flavour_guard.other_flavour_readers: list's view of the other iptables flavour's
nat table runs nothing where that flavour has none (the usual nft node: no legacy nat in
/proc/net/ip_tables_names; a legacy node: no `nat` table in nf_tables), and reads no
legacy table that is not there (the read would create it)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import List

import pytest

from portmapctl.iptables.access import nfmsg, restore
from portmapctl.iptables.access.restore import RestoreBackend
from portmapctl.ops import flavour_guard


def _backend(name: str) -> SimpleNamespace:
    """A backend as flavour_guard.flavours_of reads it: by name (nft, legacy, iptc; a
    snapshot's or a fake's has no flavour)."""
    return SimpleNamespace(name=name)


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> List[List[str]]:
    """Every tool a backend would run (none is run)."""
    started: List[List[str]] = []

    def run(self: RestoreBackend, argv: List[str], stdin: str = "") -> None:
        started.append(argv)
        raise AssertionError(f"ran {argv}")

    monkeypatch.setattr(RestoreBackend, "_run", run)
    monkeypatch.setattr(RestoreBackend, "installed", lambda self, family: True)
    return started


def test_an_nft_node_without_a_legacy_nat_table_runs_nothing(
    runs: List[List[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(restore, "legacy_nat_present", lambda family: False)
    assert flavour_guard.other_flavour_readers(_backend("nft"), (4, 6)) is None
    assert runs == []


def test_a_legacy_node_without_an_iptables_nft_nat_table_runs_nothing(
    runs: List[List[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = []
    monkeypatch.setattr(
        nfmsg, "table_present", lambda family, table: asked.append((family, table)) and False
    )
    assert flavour_guard.other_flavour_readers(_backend("legacy"), (4, 6)) is None
    assert flavour_guard.other_flavour_readers(_backend("iptc"), (4,)) is None
    assert asked == [(4, "nat"), (6, "nat"), (4, "nat")] and runs == []


def test_a_snapshot_or_fake_reads_no_other_flavour(runs: List[List[str]]) -> None:
    assert flavour_guard.other_flavour_readers(_backend("snapshot"), (4,)) is None
    assert flavour_guard.other_flavour_readers(_backend("memory"), (4,)) is None
    assert runs == []


def test_a_missing_tool_says_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """(As the split-brain check: no iptables-legacy here is no problem.)"""
    monkeypatch.setattr(restore, "legacy_nat_present", lambda family: True)
    monkeypatch.setattr(RestoreBackend, "installed", lambda self, family: False)
    assert flavour_guard.other_flavour_readers(_backend("nft"), (4, 6)) is None
