"""What both nftables repairs (the node's, nft_repair.py; one mapping's,
nft_repair_one.py) judge their one `nft -f` transaction by: the addresses that are a
container's own when asking whether it takes another's host port (cached_addresses: its
rule for any other address is stale), which try went in when nft died (_judged: the
read after it found it in), and the mappings it (re)made, for the plugin's side effects
and the line a SIGTERM prints (nft_changed). A module of its own so that neither repair
imports the other's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, Iterable, List, Sequence, Tuple, TypeVar

from portmapctl.cni.cache import Attachment
from portmapctl.core.mapping import MappingConfig
from portmapctl.errors import ApplyFailed, found_in

if TYPE_CHECKING:
    from portmapctl.nftables.transaction import Transaction as NftTransaction


T = TypeVar("T")


def cached_addresses(attachments: Iterable[Attachment]) -> Dict[str, Tuple[str, ...]]:
    """By container ID, the container addresses its cache entries give it (both
    families, as nft prints them): its nftables rules for others are stale."""
    found: Dict[str, Tuple[str, ...]] = {}
    for a in attachments:
        if a.mapping is not None:
            ips = tuple(address.ip.compressed for address in a.mapping.addresses)
            found[a.container_id] = (*found.get(a.container_id, ()), *ips)
    return found


def _judged(
    tried: List[T], txn_of: Callable[[T], NftTransaction], notes: List[str]
) -> Callable[[ApplyFailed], None]:
    """converge_nft's `went_in` for a repair: a try whose nft died was found gone in by
    the read after it, so it is the transaction applied, not the empty plan that read
    made (`tried`: each try's entry, last last; `txn_of`: its transaction)."""

    def went_in(err: ApplyFailed) -> None:
        while tried and not txn_of(tried[-1]):
            tried.pop()
        notes.append(found_in("nftables", err))

    return went_in


def nft_changed(
    txn: NftTransaction, configs: Sequence[MappingConfig]
) -> List[Tuple[MappingConfig, List[int]]]:
    """The mappings an nft repair transaction (re)made, with their families."""
    from portmapctl.nftables.ruleset import OUTPUT, PREROUTING
    from portmapctl.nftables.transaction import OpKind

    touched: Dict[str, set] = {}
    dark: set = set()  # families whose entry rules were rewritten: every mapping was dark
    for op in txn.ops:
        if (op.family, op.chain) in txn.as_read:
            continue  # each rule once again: nothing was missing
        if op.kind is OpKind.ADD_RULE and op.chain in (PREROUTING, OUTPUT):
            dark.add(op.family)
        elif op.body is not None and op.body.comment:
            # A rule of the container added or deleted: where its traffic goes changed.
            touched.setdefault(op.body.comment, set()).add(op.family)
    changed = []
    for c in configs:
        fams = sorted({f for f in c.families if f in dark} | touched.get(c.container_id, set()))
        if fams:
            changed.append((c, fams))
    return changed
