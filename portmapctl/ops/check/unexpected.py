"""`unexpected-mapping`: host ports the plugin's rules still forward to a container the
CNI cache holds live, but whose cached config gives the plugin no ports.

The container added again with `portMappings: []`: the plugin's ADD then returns at
once and leaves the rules of its earlier ADD with ports (so does its DEL, in both
backends), while libcni caches the new config; or a network config that lost the
portMappings capability, or rules made by hand. No config compared makes them (SPEC §3:
not expected). gc keeps them (the container is live) and --repair never deletes a live
container's mapping: the fix is by hand, or gc once the container is gone (its rules
are stale then).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Collection, Dict, Iterable, List, Sequence, Tuple
from typing import Mapping as ReadOnly

from portmapctl.cni.cache import Attachment
from portmapctl.core.status import ChainKind, ProblemKind, Status
from portmapctl.iptables import inventory
from portmapctl.nftables import FAMILY_NAMES
from portmapctl.nftables.ruleset import TABLE
from portmapctl.ops.check.hints import Fixes, _ports_text
from portmapctl.ops.check.problem import Problem, saved_lines, saved_rules

if TYPE_CHECKING:
    from portmapctl.nftables.inventory import NftMapping
    from portmapctl.nftables.ruleset import Ruleset

_WHY = (
    "the container was added again without these ports (the plugin's ADD and DEL then"
    " leave its rules alone), its network lost the portMappings capability, or they were"
    " made by hand: they stay forwarded to it and no other container gets them; gc keeps a"
    " live container's rules and --repair never removes them; gc removes them once the"
    " container is gone"
)


def _portless(
    attachments: Iterable[Attachment], key: Callable[[Attachment], str]
) -> Dict[str, bool]:
    """Per key (a chain name, a container ID): whether every cache entry under it is
    readable, live (no zombie: its own row) and gives the plugin no ports."""
    found: Dict[str, bool] = {}
    for a in attachments:
        ok = a.mapping is None and a.problem is None and not a.zombie
        found[key(a)] = found.get(key(a), True) and ok
    return found


def unexpected_chains(
    found: inventory.Inventory,
    attachments: Sequence[Attachment],
    derived: ReadOnly[int, Collection[str]],
    fixes: Fixes,
    not_expected: Collection[str] = (),
) -> List[Problem]:
    """iptables: CNI-DN- chains that ports still enter, named for a (network, container)
    whose cache entries give no ports, compared with no config (`derived[family]`). A
    chain nothing enters is an orphan row already; `not_expected`: containers whose
    iptables chains are not judged here."""
    owners = {a.dnat_chain: (a.network, a.container_id) for a in attachments}
    portless = _portless(
        (a for a in attachments if a.container_id not in not_expected), lambda a: a.dnat_chain
    )
    problems: List[Problem] = []
    for c in found.chains:
        if c.kind != ChainKind.DNAT or not c.entries or c.name in derived.get(c.family, ()):
            continue
        if not portless.get(c.name):
            continue
        entries = [(e.chain, e.args) for e in c.entries]
        how = "; ".join(
            [f"`{fixes.iptables(c.family, '-D', chain, args)}`" for chain, args in entries]
            + [f"`{fixes.iptables(c.family, flag, c.name, ())}`" for flag in ("-F", "-X")]
        )
        problems.append(
            Problem(
                ProblemKind.UNEXPECTED_MAPPING,
                c.family,
                c.name,
                *owners[c.name],
                f"its cached config gives the plugin no ports, but this chain still maps"
                f" {_ports_text(c.host_ports)}",
                f"if those ports are to be closed while it runs, remove the chain by hand: {how}",
                _WHY,
                saved_lines(entries) + saved_rules(c.name, c.rules),
            )
        )
    return problems


def unexpected_nft(
    mappings: Sequence[NftMapping],
    live: Ruleset,
    attachments: Sequence[Attachment],
    skip: Collection[str],
    families: Collection[int],
) -> List[Problem]:
    """nftables: DNAT rules (their comment the bare container ID, so by ID over every
    network) of a container whose cache entries all give no ports; one row per family.
    `skip`: containers said otherwise (their rules in both backends, compared)."""
    portless = _portless(attachments, lambda a: a.container_id)
    networks: Dict[str, str] = {a.container_id: a.network for a in attachments}
    rows: Dict[Tuple[str, int], List[NftMapping]] = {}
    for m in mappings:
        cid = m.container_id
        if cid is None or cid in skip or not portless.get(cid) or Status.STALE in m.status:
            continue
        if families and m.family not in families:
            continue
        rows.setdefault((cid, m.family), []).append(m)
    problems: List[Problem] = []
    for (cid, family), found in sorted(rows.items()):
        table = live.table(family)
        rules = [
            r
            for chain in (table.rules.values() if table else ())
            for r in chain
            if r.comment == cid
        ]
        how = "; ".join(
            f"`nft delete rule {FAMILY_NAMES[family]} {TABLE} {r.chain} handle {r.handle}`"
            for r in rules
        )
        problems.append(
            Problem(
                ProblemKind.UNEXPECTED_MAPPING,
                family,
                f"nft:{found[0].chain}",
                networks.get(cid),
                cid,
                "its cached config gives the plugin no ports, but its nftables rules still map"
                f" {_ports_text([(m.protocol, m.host_port) for m in found])}",
                f"if those ports are to be closed while it runs, delete its rules by hand: {how}",
                _WHY,
                tuple(r.body.text(family) for r in rules),
            )
        )
    return problems
