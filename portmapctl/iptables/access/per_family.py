"""Each family in its own iptables flavour: the node whose `iptables` and `ip6tables`
alternatives differ.

Debian sets the two alternatives one by one (`update-alternatives --set iptables
/usr/sbin/iptables-legacy` leaves ip6tables on nf_tables). The plugin runs `iptables`
for IPv4 and `ip6tables` for IPv6, so its IPv4 rules are in one flavour's tables and
its IPv6 rules in the other's: `--iptables auto` reads and writes each family where
the plugin does, through the flavour's RestoreBackend.

Named `auto` (what it was opened with): a kernel backend of no single flavour.
`flavours` says each family's; ops/flavour_guard.flavours_of reads it, so that check's
split brain, the guards against a copy of a chain the other flavour holds (check
--repair, add), list's and gc's warnings of plugin chains there, and another tool's
rules there that take a mapped port (ops/owners.py, flow judging) look at each
family's own other flavour.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, Mapping, Optional, Sequence, Tuple

from portmapctl.core.backend import Flavour, IptablesAccess

if TYPE_CHECKING:
    from portmapctl.iptables.access.restore import RestoreBackend
    from portmapctl.iptables.ruleset import Args, NatTable
    from portmapctl.iptables.transaction import Transaction


class PerFamilyBackend:
    name = IptablesAccess.AUTO
    writable = True
    # (One family's chains are cheap to list under nf_tables, the other's are not: add
    # takes the path that reads the table, right for both.)
    cheap_chain_reads = False

    def __init__(self, by_family: Mapping[int, RestoreBackend]) -> None:
        self._by_family = dict(by_family)

    @property
    def flavours(self) -> Dict[int, Flavour]:
        return {family: backend.flavour for family, backend in self._by_family.items()}

    def of(self, family: int) -> RestoreBackend:
        return self._by_family[family]

    def checks(self, family: int) -> bool:
        """Whether `-C` in `family`'s restore can be trusted (RestoreBackend.checks)."""
        return self.of(family).checks(family)

    def read(self, family: int) -> NatTable:
        return self.of(family).read(family)

    def apply(self, txn: Transaction) -> None:
        self.of(txn.family).apply(txn)

    def refusal(self, txn: Transaction) -> Optional[str]:
        return self.of(txn.family).refusal(txn)

    def read_chain(self, family: int, chain: str) -> Optional[Tuple[Args, ...]]:
        return self.of(family).read_chain(family, chain)

    def list_chain(self, family: int, chain: str) -> Optional[str]:
        return self.of(family).list_chain(family, chain)

    def lists_chain(self, family: int, chain: str) -> Optional[bool]:
        return self.of(family).lists_chain(family, chain)

    def list_binary(self, family: int) -> str:
        return self.of(family).list_binary(family)

    def has_nat_table(self, family: int) -> bool:
        return self.of(family).has_nat_table(family)

    def installed(self, family: int) -> bool:
        return self.of(family).installed(family)

    def restore_tool(self, family: int) -> str:
        return self.of(family).restore_tool(family)

    def read_families(self, families: Sequence[int]) -> Dict[int, NatTable]:
        return self.start_read(families)()

    def start_read(self, families: Sequence[int]) -> Callable[[], Dict[int, NatTable]]:
        """Each family's save started now, side by side (two flavours, two tools). On
        any error every save still running is killed (stop_tools reaps them)."""
        try:
            finishes = [self.of(family).start_read([family]) for family in families]
        except BaseException:
            self.stop_tools()
            raise

        def finish() -> Dict[int, NatTable]:
            tables: Dict[int, NatTable] = {}
            try:
                for done in finishes:
                    tables.update(done())
            except BaseException:
                self.stop_tools()
                raise
            return dict(sorted(tables.items()))

        return finish

    def generation_now(self) -> Optional[int]:
        """nf_tables' ruleset generation (the nft family's tables follow it; a legacy
        family's table is read with none, and compared by a fresh read instead)."""
        for backend in self._by_family.values():
            if backend.flavour is Flavour.NFT:
                return backend.generation_now()
        return None

    def stop_tools(self) -> None:
        for backend in self._by_family.values():
            backend.stop_tools()
