"""iptables where `--backend nftables` says not to look: never read, never written.

Every table reads empty, so nothing is found there and nothing is expected of it; a
write is refused with one line that says why (before, a read-only --snapshot stood in
for it, and a repair that reached it said "a --snapshot is read-only").
"""

from __future__ import annotations

from portmapctl.errors import BadInput
from portmapctl.iptables.ruleset import NatTable
from portmapctl.iptables.transaction import Transaction


class Unread:
    name = "unread"
    writable = False

    def read(self, family: int) -> NatTable:
        return NatTable(family)

    def apply(self, txn: Transaction) -> None:
        raise BadInput(
            "--backend nftables does not look at iptables, so nothing is written there:"
            " run with --backend iptables (or auto) to change it"
        )
