"""The plugin's two rule backends, iptables' two flavours and the ways iptables is
accessed: the words every layer decides on (a cached config's `backend` key,
`--backend`, `--iptables` and PORTMAPCTL_IPTABLES, JSON `backend`). StrEnums: as text,
JSON or a command line they are the plain words."""

from __future__ import annotations

from enum import StrEnum
from typing import Optional


class Backend(StrEnum):
    """Where the plugin writes its rules (its config key `backend`, v1.6 on)."""

    IPTABLES = "iptables"
    NFTABLES = "nftables"


class Flavour(StrEnum):
    """Which kernel tables an `iptables` command drives: nf_tables, or legacy x_tables."""

    NFT = "nft"
    LEGACY = "legacy"


class IptablesAccess(StrEnum):
    """How iptables is read and written (--iptables, PORTMAPCTL_IPTABLES): save/restore
    of the flavour the host's tools are (auto: each family's own), of one flavour, or
    python-iptables (iptc). Its values are the command line's words, in its order."""

    AUTO = "auto"
    NFT = Flavour.NFT.value
    LEGACY = Flavour.LEGACY.value
    IPTC = "iptc"

    @property
    def flavour(self) -> Optional[Flavour]:
        """The flavour whose tables this writes: python-iptables (libiptc) sees legacy
        tables only; None for auto (the host's tools say, per family)."""
        if self is IptablesAccess.AUTO:
            return None
        return Flavour.NFT if self is IptablesAccess.NFT else Flavour.LEGACY
