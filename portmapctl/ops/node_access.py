"""How a node is reached, decided once as it is opened (ops/node.opened): which of
the plugin's backends --backend auto means where the node has nft but no iptables
(as_the_plugin_chooses: as the plugin decides for a config without a `backend`
key), and the access each backend is read and written through: the kernel's
iptables (--iptables), a dump (--snapshot), or none (iptables_access); nft, an
--nft-snapshot, or none (nft_access).

Apart from ops/node.py, whose Node works on whatever access it is given (tests give
it memory fakes), so that probing the host for tools is read in one place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from portmapctl.core.backend import Backend as PluginBackend
from portmapctl.core.backend import IptablesAccess
from portmapctl.host import paths
from portmapctl.iptables.access import Backend, open_backend
from portmapctl.iptables.access.unread import Unread

if TYPE_CHECKING:
    from portmapctl.nftables.access import NftAccess
    from portmapctl.ops.node import NodeOptions


def as_the_plugin_chooses(options: NodeOptions) -> NodeOptions:
    """--backend auto where there is no iptables command but nft: the plugin, given no
    `backend` key, takes iptables only if `iptables` works, else nftables (a node with
    nftables alone: kube-proxy's nftables mode on a system without iptables). So do
    we, rather than stop at "no iptables command found". --backend nftables on such a
    node: containers without the key are nftables' too (`keyless`)."""
    from dataclasses import replace

    if options.offline or options.backend == PluginBackend.IPTABLES:
        return options
    if options.backend is None and options.iptables is not IptablesAccess.AUTO:
        return options
    # (Found as the tools are found: on PATH, else in the sbin directories cron leaves out.)
    nft = paths.find_tool("nft")
    if paths.find_tool("iptables") is not None or nft is None or _iptables_nat_present(nft):
        # A nat table of iptables here: the plugin's iptables may work where it runs
        # (portmapctl in an image without iptables): stop, never guess nftables. Under
        # --backend nftables, containers without the key stay iptables' (not looked at).
        return options
    nftables = PluginBackend.NFTABLES
    return replace(options, backend=nftables, keyless=nftables)


def _iptables_nat_present(nft: str) -> bool:
    # nftables/access is imported only here: most nodes have an iptables command.
    from portmapctl.nftables.access.nft import iptables_nat_present

    return iptables_nat_present(nft)


def iptables_access(options: NodeOptions) -> Backend:
    if not options.uses_iptables and not options.offline:
        return Unread()
    if options.offline or not options.uses_iptables:
        # Only the dumps given are read: an --nft-snapshot alone reads no iptables.
        from portmapctl.iptables.access.snapshot import SnapshotBackend

        return SnapshotBackend(options.snapshots if options.uses_iptables else {})
    return open_backend(options.iptables, families=options.families)


def nft_access(options: NodeOptions) -> Optional[NftAccess]:
    if not options.uses_nft:
        return None
    if options.nft_snapshot:
        from portmapctl.nftables.access.snapshot import SnapshotNft

        return SnapshotNft(options.nft_snapshot)
    if options.offline:
        return None  # iptables dumps only: no nftables state to read
    from portmapctl.nftables.access.nft import RealNft

    return RealNft(early=options.early_nft)
