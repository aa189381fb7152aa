"""How the commands' node picks up nftables: --backend, --nft-snapshot, an unusable nft."""

from __future__ import annotations

import stat
from pathlib import Path

import nftcases
import pytest

from portmapctl.nftables.access import NftUnusable
from portmapctl.nftables.access.nft import RealNft
from portmapctl.nftables.access.snapshot import SnapshotNft
from portmapctl.nftables.ruleset import EMPTY
from portmapctl.ops.node import Node, NodeOptions, opened

SNAPSHOT = str(nftcases.HERE / "v191-basic.nft.json")


def _old_nft(tmp_path: Path) -> RealNft:
    script = tmp_path / "nft"
    script.write_text("#!/bin/sh\necho 'nftables v0.9.3 (Topsy)'\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return RealNft(str(script))


def test_auto_goes_on_without_a_usable_nft(tmp_path: Path) -> None:
    node = Node(NodeOptions(snapshots={4: "/dev/null"}), backend=None, nft=_old_nft(tmp_path))  # type: ignore[arg-type]
    assert node.read_nft() == EMPTY
    assert isinstance(node.nft_unusable, NftUnusable)
    with pytest.raises(NftUnusable, match="too old"):
        node.converge_nft(lambda live: None)  # type: ignore[arg-type,return-value]


def test_backend_nftables_needs_a_usable_nft(tmp_path: Path) -> None:
    node = Node(NodeOptions(backend="nftables"), backend=None, nft=_old_nft(tmp_path))  # type: ignore[arg-type]
    with pytest.raises(NftUnusable, match="needs 1.0.1 or later"):
        node.read_nft()


def test_offline_options() -> None:
    with opened(NodeOptions(nft_snapshot=SNAPSHOT)) as node:
        assert isinstance(node.nft, SnapshotNft)
        assert node.read_nft() == nftcases.live("v191-basic")
        assert node.read() == {4: node.backend.read(4), 6: node.backend.read(6)}
        assert not any(t.chains for t in node.read().values())  # no iptables read at all
    with opened(NodeOptions(snapshots={4: "/dev/null"})) as node:
        assert node.nft is None  # iptables dumps only: no nftables state
    with opened(NodeOptions(backend="iptables", nft_snapshot=SNAPSHOT)) as node:
        assert node.nft is None


def test_backend_nftables_neither_reads_nor_writes_iptables() -> None:
    """What stands for iptables there reads empty and refuses a write with one line
    that says why (before: a read-only --snapshot's line, with no --snapshot given)."""
    from portmapctl.errors import BadInput
    from portmapctl.iptables.access.unread import Unread
    from portmapctl.iptables.transaction import Transaction
    from portmapctl.ops.node_access import iptables_access

    options = NodeOptions(backend="nftables")
    assert not options.reads_iptables
    assert NodeOptions(nft_snapshot=SNAPSHOT).reads_iptables is False
    assert NodeOptions(backend="iptables", snapshots={4: "/dev/null"}).reads_iptables
    backend = iptables_access(options)
    assert isinstance(backend, Unread) and not backend.read(4).chains
    with pytest.raises(BadInput, match="^--backend nftables does not look at iptables"):
        backend.apply(Transaction(4))
    # Live: the cache's namespaces are judged (a zombie is one), as on any live read.
    assert Node(options, backend, None).namespace_view() is not None
