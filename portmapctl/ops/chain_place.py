"""Where a container's chain is in iptables: the one question behind "does the plugin
keep this container in iptables?" for a mapping given on the command line (`add`'s
backend, cli/add_backend.py; `check` of one mapping and its --repair,
ops/check/followed.py). The plugin's ADD of a container without a `backend` key writes
iptables where its chain is (ops/nft.py choose: in both backends, iptables wins), and a
plugin before v1.6 writes iptables whatever the key says: a chain found here is the
plugin's, and a copy in nftables would be one its DEL never removes.

Asked of the flavour the node uses first (on iptables-nft, the kernel, by netlink:
NFT_MSG_GETCHAIN, no process, and a nat table iptables-nft-save cannot show -- "Table
`nat' is incompatible" -- is searched all the same), then of the other flavour (the
plugin ran with it: the `iptables` alternative switched since; ops/flavour_guard.py
in_other_flavour, no process where it has no nat table)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Collection, Mapping, Optional, Sequence, Set

from portmapctl.core.backend import Flavour
from portmapctl.errors import PortmapctlError

if TYPE_CHECKING:
    from portmapctl.iptables.ruleset import NatTable

# A caller's own read of the flavour used (check's Node.read: read once per command).
Read = Callable[[Sequence[int]], Mapping[int, "NatTable"]]


@dataclass(frozen=True)
class ChainPlace:
    """Where the chain was found: `other` None in the flavour the node uses, else the
    other flavour's tables."""

    other: Optional[Flavour] = None

    @property
    def words(self) -> str:
        """As the notes and refusals say it ("its chain X is in ...")."""
        return "iptables" if self.other is None else f"the iptables-{self.other} tables"


def chain_place(
    backend: object,
    families: Sequence[int],
    name: str,
    *,
    read: Optional[Read] = None,
    other_flavour: bool = True,
) -> Optional[ChainPlace]:
    """Where chain `name` is in one of `families`: the flavour `backend` uses
    (in_flavour_used), else the other one (unless `other_flavour` is False: a snapshot
    has no other); None where it is in neither. Raises what reading the flavour used
    raises; the other flavour unreadable is taken for not there (the plugin cannot use
    it either)."""
    if in_flavour_used(backend, families, name, read=read):
        return ChainPlace()
    if not other_flavour:
        return None
    from portmapctl.ops.flavour_guard import in_other_flavour

    try:
        other = in_other_flavour(backend, families, name)
    except PortmapctlError:
        return None
    return None if other is None else ChainPlace(other)


def in_flavour_used(
    backend: object, families: Sequence[int], name: str, *, read: Optional[Read] = None
) -> bool:
    """Whether the nat table `backend` reads holds chain `name` in one of `families`.
    On iptables-nft the kernel is asked (chains_in_kernel); elsewhere, or where netlink
    cannot be asked, the table: through `read` where the caller reads it anyway, else
    one `iptables -S CHAIN` a family where the backend lists chains (a save of the whole
    table otherwise, and where the listing cannot tell: legacy's waits for the xtables
    lock, the save takes none); a family without a nat table, asked without creating
    one, is passed by."""
    if getattr(backend, "flavour", None) is Flavour.NFT:
        found = chains_in_kernel(families, (name,))
        if found is not None:
            return bool(found)
    has_table = getattr(backend, "has_nat_table", lambda _family: True)
    there = tuple(f for f in families if has_table(f))
    if not there:
        return False
    if read is not None:
        return any(t.has_chain(name) for t in read(there).values())
    lists_chain = getattr(backend, "lists_chain", None)
    if lists_chain is not None:
        unsure = []
        for family in there:
            listed = lists_chain(family, name)
            if listed:
                return True
            if listed is None:
                unsure.append(family)
        # (Not "not there": another iptables holding the xtables lock past the wait
        # failed legacy's listing, and the chain so hidden got a copy in nftables.)
        there = tuple(unsure)
    return any(backend.read(f).has_chain(name) for f in there)  # type: ignore[attr-defined]


def chains_in_kernel(families: Sequence[int], names: Collection[str]) -> Optional[Set[str]]:
    """Those of `names` the nf_tables nat table of one of `families` holds (one
    NFT_MSG_GETCHAIN each, one socket, in the calling thread's network namespace); None
    where netlink cannot be asked."""
    from portmapctl.iptables.access import nfgen, nfmsg

    try:
        with nfgen.open_socket() as sock:
            return {
                n for n in names if any(nfmsg.chain_exists(sock, f, "nat", n) for f in families)
            }
    except OSError:
        return None
