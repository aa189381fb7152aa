"""How the plugin's nftables tables are read and written.

    read(families) -> Ruleset
    apply(transaction) -> None      (atomic; raises NftApplyFailed, state unchanged)

nft.py runs the real `nft`; snapshot.py reads `nft -j list ruleset` output from a file
(no root); memory.py is a writable fake with nft's semantics, pinned to the real one
by tests/kernel/test_nft_conformance.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Protocol, Sequence

from portmapctl.core.ids import short_form
from portmapctl.core.text import count
from portmapctl.errors import ApplyFailed, HostProblem

if TYPE_CHECKING:
    from portmapctl.nftables.ruleset import Ruleset
    from portmapctl.nftables.transaction import Transaction


class NftApplyFailed(ApplyFailed):
    """nft refused a transaction; nothing of it was applied.

    `reason` is the errno text nft printed ("No such file or directory", "File
    exists", ...): callers re-read and re-plan on it, never force.
    """

    def __init__(
        self,
        message: str,
        reason: str = "",
        maybe_applied: bool = False,
        userspace: bool = False,
    ) -> None:
        super().__init__(message, maybe_applied=maybe_applied)
        self.reason = reason
        # nft itself refused the text (syntax, an unknown name, a value out of range),
        # before the kernel saw it; otherwise the kernel refused it (a missing handle...).
        self.userspace = userspace


class NftUnusable(HostProblem):
    """No nft, or one older than 1.0.1: the plugin cannot use nftables here either."""

    def needed_by(self, ids: Iterable[str], unplaced: Iterable[str] = ()) -> NftUnusable:
        """This, where cached containers (`ids`) say `"backend": "nftables"`, or
        (`unplaced`) have no `backend` key and no chain in iptables beside the plugin's
        tables nft cannot read (ops/check/followed_entries.py follow_the_plugin: they may
        be kept there), and a whole-node command stops for them (exit 3): with the way to work
        on the node's iptables containers meanwhile, which the bare line left to be
        guessed."""
        keyed, keyless = sorted(ids), sorted(unplaced)
        if not keyed and not keyless:
            return self
        said = []
        if keyed:
            says = "says" if len(keyed) == 1 else "say"
            said.append(f'{_some(keyed)} {says} "backend": "nftables"')
        if keyless:
            said.append(
                f'{_some(keyless)} {"has" if len(keyless) == 1 else "have"} no "backend" key'
                " and no chain in iptables, so may be in nftables"
            )
        return NftUnusable(
            f"{self}; {'; '.join(said)} (--backend iptables works on the iptables ones alone)"
        )


def _some(named: Sequence[str]) -> str:
    """`named` containers counted, and the first two by short ID, as tables print them:
    the line stays one a terminal can show."""
    shown = ", ".join(short_form(i) for i in named[:2]) + (", ..." if len(named) > 2 else "")
    return f"{count(len(named), 'cached container')} ({shown})"


class NftAccess(Protocol):
    name: str
    writable: bool

    def read(self, families: Iterable[int] = (4, 6)) -> Ruleset: ...

    def apply(self, txn: Transaction) -> None: ...
