"""The nft version comes from the listing's own metainfo: one process less per read;
`nft --version` only when no listing carries one."""

from __future__ import annotations

import stat
from pathlib import Path

import nftcases
import pytest

from portmapctl.nftables.access import NftUnusable
from portmapctl.nftables.access.nft import RealNft


def _fake_nft(tmp_path: Path, listing: str, version_line: str) -> tuple[str, Path]:
    """An `nft` that prints `listing` for `-j list ...`, `version_line` for --version,
    and logs its arguments."""
    (tmp_path / "listing.json").write_text(listing)
    log = tmp_path / "calls"
    script = tmp_path / "nft"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {log}\n'
        f'if [ "$1" = --version ]; then echo "{version_line}"; exit 0; fi\n'
        f"cat {tmp_path / 'listing.json'}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script), log


def test_a_listing_with_metainfo_needs_no_version_call(tmp_path: Path) -> None:
    listing = nftcases.json_text("v191-basic")
    assert listing.startswith('{"nftables": [{"metainfo": {"version": "1.0.6"')
    binary, log = _fake_nft(tmp_path, listing, "nftables v1.0.6 (Lester Gooch #5)")
    nft = RealNft(binary)
    # One family asked: the fake prints the whole dump, both tables, once.
    assert nft.read([4]) == nftcases.live("v191-basic")
    nft.read([4])
    calls = log.read_text().splitlines()
    assert calls and all(c.startswith("-j list table ") for c in calls), calls


def test_an_old_version_in_the_listing_is_refused(tmp_path: Path) -> None:
    listing = nftcases.json_text("v191-basic").replace('"version": "1.0.6"', '"version": "0.9.8"')
    binary, log = _fake_nft(tmp_path, listing, "nftables v0.9.8 (E.D.S.)")
    with pytest.raises(NftUnusable, match="nft 0.9.8 is too old"):
        RealNft(binary).read()
    assert "--version" not in log.read_text()


def test_without_metainfo_nft_version_answers(tmp_path: Path) -> None:
    binary, log = _fake_nft(tmp_path, '{"nftables": []}', "nftables v0.9.3 (Topsy)")
    with pytest.raises(NftUnusable, match="nft 0.9.3 is too old"):
        RealNft(binary).read()
    assert "--version" in log.read_text()
