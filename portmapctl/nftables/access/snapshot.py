"""A read-only view of `nft -j list ruleset` output (`--nft-snapshot FILE`).

Needs no root and no kernel, so a support bundle can be read on a laptop. Tables
other than `ip`/`ip6 cni_hostport` in the dump are skipped.
"""

from __future__ import annotations

from typing import Iterable

from portmapctl.errors import BadInput
from portmapctl.host.files import read_text
from portmapctl.nftables.ruleset import Ruleset, Table, parse
from portmapctl.nftables.transaction import Transaction

# `nft -j list ruleset` of 1,000 containers is about 1.5 MiB; iptables-nft's own
# tables can be far bigger on a kube-proxy node.
MAX_DUMP_BYTES = 64 * 1024 * 1024


class SnapshotNft:
    name = "nft-snapshot"
    writable = False

    def __init__(self, path: str) -> None:
        self.path = path
        self.source = "<stdin>" if path == "-" else path
        # Read and parse now: a bad file is bad input before anything else happens.
        text = read_text(path, "nft snapshot", MAX_DUMP_BYTES)
        if not text.strip():
            # A failed pipe, said as such (as --snapshot's): `nft -j list ruleset`
            # prints its metainfo even where no table exists.
            raise BadInput(
                f"{self.source}: empty, not `nft -j list` output (did the command that made"
                " it fail?): give the output of `nft -j list ruleset`"
            )
        self._ruleset = parse(text, self.source)

    def read(self, families: Iterable[int] = (4, 6)) -> Ruleset:
        wanted = set(families)
        tables: dict[int, Table] = {f: t for f, t in self._ruleset.tables.items() if f in wanted}
        return Ruleset(tables, self._ruleset.nft_version)

    def apply(self, txn: Transaction) -> None:
        raise BadInput(
            "an --nft-snapshot is read-only: run without --nft-snapshot to change the node"
        )
