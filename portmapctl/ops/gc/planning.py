"""Planning one family of a gc run from a read of its table: what every try takes
besides the table (Planning: sources, options, sightings, where warnings go), the cache
read again for a re-plan, and the namespaces that look like an ADD in progress
(Adding). plan.py plans a whole run with it, converge.py each re-plan of a family.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import (
    Dict,
    FrozenSet,
    Iterable,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Set,
    Tuple,
)

from portmapctl.cni import cache as cni_cache
from portmapctl.cni.cache import Attachment, present_dirs, results_dir
from portmapctl.core.backend import Flavour
from portmapctl.errors import HostProblem
from portmapctl.host.netns import NamespaceView, addresses_of, fresh_uncached
from portmapctl.host.paths import RUN_DIR
from portmapctl.iptables import plugin_rules
from portmapctl.iptables.ruleset import NatTable
from portmapctl.ops.gc import state as gc_state
from portmapctl.ops.gc.family import FamilyPlan, plan_family
from portmapctl.ops.gc.liveness import (
    Liveness,
    Sources,
    ZombieHold,
    empty_cache_refusal,
    liveness,
    require_namespaces,
    says_nothing,
    zombie_hold,
)
from portmapctl.ops.gc.result import GcChain
from portmapctl.ops.gc.state import ChainKey
from portmapctl.ops.node import Node

DEFAULT_MIN_AGE = 120.0


@dataclass(frozen=True)
class GcOptions:
    min_age: float = DEFAULT_MIN_AGE
    dry_run: bool = False
    flush_udp: bool = True
    only: Optional[FrozenSet[Tuple[int, str]]] = None  # what a prompt confirmed
    state_dir: str = RUN_DIR


def read_cache_while_planning(
    node: Node, dirs: Sequence[str], warnings: List[str], judge_namespaces: bool = True
) -> List[Attachment]:
    """The cache (cni.cache reads a half-written file again); `dirs` were present at
    the start: one gone since would make its containers look stale. Namespaces are
    judged only for --netns-liveness (judge_namespaces)."""
    return checked_cache(node.read_cache(judge_namespaces), dirs, warnings)


def reread_cache(node: Node, planning: Planning) -> Optional[List[Attachment]]:
    """The cache read again for a re-plan (read_cache_while_planning), None where the
    run has none (liveness from other sources)."""
    if not planning.cache_dirs:
        return None
    return read_cache_while_planning(
        node, planning.cache_dirs, planning.warnings, planning.sources.netns_liveness
    )


def checked_cache(
    found: Optional[List[Attachment]], dirs: Sequence[str], warnings: List[str]
) -> List[Attachment]:
    missing = [d for d in dirs if d not in present_dirs(dirs)]
    if found is None or missing:
        gone = ", ".join(results_dir(d) for d in (missing or dirs))
        # (Not "nothing removed from this family": read again after some of a
        # family's chains went in (converge.settle_family), it said so of them too.)
        raise HostProblem(f"the CNI cache {gone} disappeared while gc ran")
    for warning in cni_cache.warnings(found, dirs):
        if warning not in warnings:
            warnings.append(warning)
    return found


class Adding(NamedTuple):
    """Young namespaces in no cache entry (see _adding): those holding an address a
    chain may DNAT to, those addresses, and those that could not be looked into."""

    namespaces: List[str]
    addresses: FrozenSet[str]
    unknown: List[str]


def _adding(
    view: Optional[NamespaceView],
    attachments: Optional[Sequence[Attachment]],
    min_age: float,
) -> Adding:
    """Namespaces that look like an ADD in progress (see netns.fresh_uncached).

    A container started again with the ID (and ports, and address) of a chain pending
    as stale gets that very chain back from the plugin, unchanged: nothing in the
    table tells, and its cache entry comes only at the end of the ADD. Its new
    namespace does tell: it is young, in no cache entry, and already holds the
    address the chain DNATs to (the plugins before portmap put it there).

    One that cannot be entered (no CAP_SYS_ADMIN: the shipped DaemonSet and systemd
    units run gc so) may hold any address: `unknown`. Taken for holding none, it let
    the chain of the container being added go.
    """
    if view is None or min_age <= 0:
        return Adding([], frozenset(), [])
    cached = [a.netns for a in attachments or () if a.netns]
    fresh = fresh_uncached(view, cached, min_age)
    if not fresh:
        return Adding([], frozenset(), [])
    found: Dict[str, Set[str]] = {}
    unknown: List[str] = []
    for path, addresses in addresses_of({path: True for path in fresh}).items():
        if addresses is None:
            unknown.append(path)
            continue
        addresses = addresses - {"127.0.0.1", "::1"}
        if addresses:
            found[path] = addresses
    return Adding(
        sorted(found),
        frozenset(a for addresses in found.values() for a in addresses),
        sorted(unknown),
    )


@dataclass(frozen=True)
class Planning:
    """What planning a family takes besides its table, the same for every try."""

    sources: Sources
    options: GcOptions
    seen: Mapping[ChainKey, gc_state.Seen]  # the state file as read
    view: Optional[NamespaceView]
    cache_dirs: Sequence[str]
    warnings: List[str]  # where warnings go (appended to)
    forgetting: Optional[gc_state.Forgetting] = None  # None: a dry run
    # Per family, the table its last try was planned from (converge_family): a refusal
    # on a table still so is no stale plan's (settle_family).
    last_read: Dict[int, NatTable] = field(default_factory=dict)
    # Per family, the iptables flavour its table is read from (flavour_guard.flavours_of;
    # empty for a snapshot or a fake): a sighting in one does not age the other's chain.
    flavours: Mapping[int, Flavour] = field(default_factory=dict)

    def forget(self, removed: Iterable[GcChain]) -> None:
        """Before a transaction removing `removed` goes in: their sightings leave the
        state file (state.forget; the run's own save comes after the removal, and a
        SIGKILL in between left them there). One write for all the chains given; none
        for those already forgotten or never on file."""
        if self.forgetting is not None:
            self.forgetting({chain.key for chain in removed})


def plan_table(
    table: NatTable,
    attachments: Optional[List[Attachment]],
    planning: Planning,
    by_number: bool,
    live: Optional[Liveness] = None,
    zombies: Optional[ZombieHold] = None,
) -> FamilyPlan:
    """plan_family with what the sources say; `attachments` read after `table`
    (`live`, `zombies`: what they say, when the caller has merged them already)."""
    sources, options, warnings = planning.sources, planning.options, planning.warnings
    if says_nothing(sources, attachments) and plugin_rules.per_container_chains(table):
        raise empty_cache_refusal(
            planning.cache_dirs, "portmap chains", "every per-container chain"
        )
    if attachments is not None and sources.netns_liveness:
        require_namespaces(attachments)
    adding = _adding(planning.view, attachments, options.min_age)
    found = plan_family(
        table,
        live if live is not None else liveness(sources, attachments),
        planning.seen,
        gc_state.clock(),
        options.min_age,
        options.only,
        hold=adding.addresses,
        by_number=by_number,
        zombies=zombies or zombie_hold(sources, attachments, planning.view),
        hold_all=bool(adding.unknown),
        flavour=planning.flavours.get(table.family),
    )
    if (adding.addresses or adding.unknown) and any(
        c.seen_seconds >= options.min_age for c in found.pending
    ):
        for warning in _adding_warnings(adding):
            if warning not in warnings:
                warnings.append(warning)
    return found


def _adding_warnings(adding: Adding) -> List[str]:
    """Why ripe chains stay pending this run (_adding)."""

    def named(paths: List[str]) -> str:
        return ", ".join(paths[:3]) + (", ..." if len(paths) > 3 else "")

    warnings = []
    if adding.addresses:
        warnings.append(
            f"a network namespace younger than --min-age and in no CNI cache entry"
            f" ({named(adding.namespaces)}) holds an"
            " address a stale chain DNATs to: its container is being added, so that"
            " chain is not removed this run"
        )
    if adding.unknown:
        warnings.append(
            f"a network namespace younger than --min-age and in no CNI cache entry"
            f" ({named(adding.unknown)}) could not be looked into (entering one needs"
            " CAP_SYS_ADMIN): a container may be being added there with the address of"
            " a stale chain, so no stale chain is removed this run"
        )
    return warnings
