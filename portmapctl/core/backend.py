"""The plugin's two rule backends and iptables' two flavours: the words every layer
decides on (a cached config's `backend` key, `--backend`, `--iptables`, JSON
`backend`). StrEnums: as text, JSON or a command line they are the plain words."""

from __future__ import annotations

from enum import StrEnum


class Backend(StrEnum):
    """Where the plugin writes its rules (its config key `backend`, v1.6 on)."""

    IPTABLES = "iptables"
    NFTABLES = "nftables"


class Flavour(StrEnum):
    """Which kernel tables an `iptables` command drives: nf_tables, or legacy x_tables."""

    NFT = "nft"
    LEGACY = "legacy"
