"""A read-only backend over `iptables-save` dumps (`--snapshot`, `--snapshot6`).

Needs no root and no kernel: support bundles can be read on a laptop.
"""

from __future__ import annotations

from typing import Dict

from portmapctl.errors import BadInput
from portmapctl.host.files import read_text
from portmapctl.iptables.ruleset import NatTable, parse_save
from portmapctl.iptables.transaction import Transaction

# A node with 1,000 containers saves about 1 MiB. Parsing costs about 14 bytes of
# memory per byte of dump (and 0.03 s per MiB): 64 MiB is room for some 60,000
# containers in under 1 GiB, where the former 256 MiB could take 3.5 GiB.
MAX_DUMP_BYTES = 64 * 1024 * 1024


class SnapshotBackend:
    name = "snapshot"
    writable = False

    def __init__(self, paths: Dict[int, str]) -> None:
        if sum(1 for p in paths.values() if p == "-") > 1:
            raise BadInput("only one of --snapshot/--snapshot6 can read standard input")
        self.paths = dict(paths)
        # Read every file now: a bad path is bad input before anything else happens.
        self._texts = {family: _read(path) for family, path in self.paths.items()}

    def read(self, family: int) -> NatTable:
        text = self._texts.get(family)
        if text is None:
            return NatTable(family)
        name = "<stdin>" if self.paths[family] == "-" else self.paths[family]
        # Strict: a dump from a file may hold what iptables itself never prints.
        return parse_save(text, family, source=name, strict=True)

    def apply(self, txn: Transaction) -> None:
        raise BadInput("a --snapshot is read-only: run without --snapshot to change the node")


def _read(path: str) -> str:
    # any_bytes: a foreign rule's comment need not be UTF-8 (SPEC §5).
    return read_text(path, "snapshot", MAX_DUMP_BYTES, any_bytes=True)
