"""What `gc` reports: each chain it removed or waits on (GcChain) and the run's
GcResult. Apart from the planning and applying that produce them: the renderers,
JSON and metrics read these values and nothing else of gc."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, Optional, Sequence, Tuple

from portmapctl.core.backend import Backend
from portmapctl.core.status import ChainKind, GcHold
from portmapctl.iptables.shapes import ProtoPort
from portmapctl.ops.gc import state as gc_state
from portmapctl.ops.gc.state import ChainKey


def row_order(ports: Iterable[ProtoPort]) -> Tuple[ProtoPort, ...]:
    """A chain's host ports as list orders a container's rows: protocol, then port. Rule
    order differs by backend for the same container (the plugin's nftables v1.6/v1.7
    put host-IP mappings in hostip_hostports, its iptables one chain in mapping order),
    so gc's HOST PORTS and JSON `host_ports` read differently for the same ports."""
    return tuple(sorted(ports))


@dataclass(frozen=True)
class GcChain:
    """A per-container chain gc removes (or would), or waits on (pending); for the
    nftables backend one container's rules in one family (`chain`: the nft chain of
    its DNAT rules, as list and check name it, never the container ID)."""

    chain: str
    family: int
    kind: ChainKind  # NFT_RULE: one container's rules in one family (ops/gc/nft.py)
    network: Optional[str]
    container_id: Optional[str]
    host_ports: Tuple[ProtoPort, ...]
    seen_seconds: float
    # nftables: every chain its rules are in, in the order nftables meets them (a v1.6/
    # v1.7 container's host-IP rules are in hostip_hostports, its others in hostports,
    # `chain` names one); empty for an iptables chain, which is its own one chain.
    nft_chains: Tuple[str, ...] = ()
    # Pending though past --min-age: why a later run, not this one, may remove it (a
    # time until then would be false: "removable in 0s" beside "1 pending").
    held: Optional[GcHold] = None

    @property
    def chains(self) -> Tuple[str, ...]:
        """Every chain of what it removes (JSON `chains`)."""
        return self.nft_chains or (self.chain,)

    @property
    def backend(self) -> Backend:
        """The plugin backend it is in: its kind says (JSON `backend`)."""
        return Backend.NFTABLES if self.kind == ChainKind.NFT_RULE else Backend.IPTABLES

    @property
    def key(self) -> ChainKey:
        """What sightings and a prompt's confirmation are keyed by: an nftables
        container's rules have no chain of their own (gc_state.ChainKey)."""
        if self.kind == ChainKind.NFT_RULE:
            return ChainKey(self.family, f"{gc_state.NFT_PREFIX}{self.container_id}")
        return ChainKey(self.family, self.chain)


# How many chains an error line names: a line naming 5,002 was 535 KB, read by nobody
# (the table and JSON list them all).
NAMED_AT_MOST = 3


def some_of(names: Sequence[str]) -> str:
    """`A, B` for a few; `A, B, C and 4999 more` past NAMED_AT_MOST (an error line's
    list of chains, after its count)."""
    if len(names) <= NAMED_AT_MOST:
        return ", ".join(names)
    return f"{', '.join(names[:NAMED_AT_MOST])} and {len(names) - NAMED_AT_MOST} more"


@dataclass(frozen=True)
class Refused:
    """A chain whose removal iptables refused when tried alone (SPEC §5: named, the
    others removed): `why` is the tool's refusal."""

    chain: GcChain
    why: str


@dataclass(frozen=True)
class GcResult:
    dry_run: bool
    removed: Tuple[GcChain, ...]
    pending: Tuple[GcChain, ...]
    kept: int
    conntrack_deleted: int
    shared_removed: Tuple[Tuple[int, str], ...] = ()  # (family, CNI-HOSTPORT-SNAT)
    transactions: Dict[int, str] = field(default_factory=dict)
    warnings: Tuple[str, ...] = ()
    state_error: Optional[str] = None  # the state file could not be written
    refused: Tuple[Refused, ...] = ()  # not removed: iptables refused them (converge.settle_family)
    # Not removed: what the question offered and the person did not confirm (cli gc;
    # None: no question declined; JSON lists these alone), and the shared chains it
    # offered with them (the summary names them, as the question did).
    declined: Optional[Tuple[GcChain, ...]] = None
    declined_shared: Tuple[Tuple[int, str], ...] = ()

    @property
    def changes(self) -> bool:
        return bool(self.removed or self.shared_removed)
