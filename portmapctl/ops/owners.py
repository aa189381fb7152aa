"""A mapped host port's other owners on the node, read once per command, and the
node's rows with every status they give (core/contest.py): list shows these rows,
check reports the same owners as problems (ops/check/crossed.py), and both count
the rows alike in --metrics-file.

The owners: another nftables table's nat prerouting hook, or output hook for a
loopback host IP (nftables/foreign.py:
`shadowed` by an earlier one, `contested` at the plugin's priority), the plugin's
other backend and another tool's iptables nat rule on an nftables row's port
(iptables/foreign.py: `contested`), and another tool's rule in the other iptables
flavour's nat table on any row's port (`contested`: that table hooks at the plugin's
priority, in an order no dump shows; flavour_guard.other_flavour_readers), and the
plugin's own chain of another container there on the same port (a split-brain node:
`contested` likewise; flavour_guard.plugin_rows)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

from portmapctl.core.contest import HookPortKey
from portmapctl.core.text import name_text
from portmapctl.ops.flavour_guard import named


@dataclass(frozen=True)
class Owners:
    """What other than a row itself takes its host port."""

    # An nftables row's hook_port_key -> another tool's iptables rule that takes its
    # port at the same hook priority (iptables/foreign.py nft_takers).
    taken: Dict[HookPortKey, str] = field(default_factory=dict)
    # A row (either backend) -> (shadowed or contested, another nftables table's rule
    # that takes its port: nftables/foreign.py node_hooked).
    hooked: Dict[Any, Tuple[str, str]] = field(default_factory=dict)
    # A row -> a rule of another nftables table's nat hook, at or before the row's,
    # that may take some of its packets: a condition no dump can judge (`ip saddr`).
    unsure: Dict[Any, str] = field(default_factory=dict)
    # Why some rows' other nftables hooks could not be read (nftables/foreign.py).
    unread: Tuple[str, ...] = ()
    # A row's hook_port_key -> a rule of the other iptables flavour's nat table (named
    # "iptables-legacy: -A ...") that takes its port at the row's hook priority.
    other_flavour: Dict[HookPortKey, str] = field(default_factory=dict)
    # A row (either backend) -> the plugin's own rows of other containers in the other
    # iptables flavour's chains that map its port too (a split-brain node:
    # core/contest.flavour_rivals), and that flavour's name by family (each family's
    # own other flavour where the alternatives differ).
    rivals: Dict[Any, Tuple[Any, ...]] = field(default_factory=dict)
    rival_flavours: Mapping[int, str] = field(default_factory=dict)
    # A row of `hooked` -> the nftables table its rule is in (`ip kube-proxy`).
    hooked_tables: Dict[Any, str] = field(default_factory=dict)

    def hook_ports(self) -> Optional[FrozenSet[Tuple[int, int]]]:
        """The (family, UDP host port) of the rows another nftables table's nat hook
        takes or may take some packets of: of the rows' ports, the only ones whose flows
        to a destination the rows' walk judged (their hook: prerouting, or output for a
        loopback host IP) that hook may have DNATed, judged per flow destination
        (flow_owners.Judging, which also asks a loopback destination's flows and a port no
        row maps). None when the hooks could not be read: every port then."""
        if self.unread:
            return None
        rows = (*self.hooked, *self.unsure)
        return frozenset((row.family, row.host_port) for row in rows if row.protocol == "udp")


def read_owners(
    node: Any,
    tables: Mapping[int, Any],
    rows: Sequence[Any],
    nft_rows: Sequence[Any],
    nft_live: Optional[Any],
    other: Optional[Tuple[Mapping[int, str], Mapping[int, Any]]] = None,
) -> Owners:
    """The owners of the ports of `rows` (iptables) and `nft_rows` (the plugin's
    nftables, `nft_live` as read; None: not read): the usual node pays one netlink
    dump, and nft runs only for another table with a nat hook some row passes.
    `other`: by family, the other iptables flavour's name and its nat table as a chain
    reader (iptables/foreign.py; only the families where it has one;
    flavour_guard.other_flavour_readers)."""
    taken: Dict[HookPortKey, str] = {}
    if nft_rows and any(t.rules("PREROUTING") or t.rules("OUTPUT") for t in tables.values()):
        from portmapctl.iptables.foreign import nft_takers

        taken = nft_takers(tables, nft_rows)
    if not (rows or nft_rows):
        return Owners(taken)
    crossed: Dict[HookPortKey, str] = {}
    if other is not None and other[1]:
        from portmapctl.iptables.foreign import same_priority_takers

        crossed = {
            key: f"iptables-{other[0][key[0]]}: {rule}"
            for key, rule in same_priority_takers(other[1], [*rows, *nft_rows]).items()
        }
    from portmapctl.nftables.foreign import node_hooked

    hooked = node_hooked(node, [*rows, *nft_rows], nft_live)
    rivals = plugin_rivals(other, [*rows, *nft_rows], hooked.taken)
    return Owners(
        taken,
        hooked.taken,
        hooked.unsure,
        hooked.unread,
        crossed,
        rivals,
        dict(other[0]) if rivals and other is not None else {},
        hooked.tables,
    )


def plugin_rivals(
    other: Optional[Tuple[Mapping[int, str], Mapping[int, Any]]],
    rows: Sequence[Any],
    hooked: Mapping[Any, Tuple[str, str]],
) -> Dict[Any, Tuple[Any, ...]]:
    """Owners.rivals: read through the readers `other` gives (nothing run where that
    flavour has no nat table). A failure to read it is a -v detail: it never fails
    list or check (chains_elsewhere's warning already names the chains there)."""
    if other is None or not other[1] or not rows:
        return {}
    from portmapctl.core.contest import flavour_rivals, hook_marked
    from portmapctl.errors import PortmapctlError
    from portmapctl.ops.flavour_guard import plugin_rows

    try:
        theirs = [
            row
            for family, read in other[1].items()
            for row in plugin_rows(read, family, {r.host_port for r in rows if r.family == family})
        ]
    except (PortmapctlError, OSError) as err:
        from portmapctl.ops.add_ahead import debug

        debug(
            "reading the plugin's chains in iptables-%s failed: %s", named(other[0], other[1]), err
        )
        return {}
    # As node_rows marks them: a row another nftables table's hook shadows contests
    # nothing (the keys are the rows node_rows marks, equal as frozen dataclasses).
    return flavour_rivals(hook_marked(rows, hooked), theirs)


def unsure_warnings(owners: Owners, keep: Optional[Callable[[Any], bool]] = None) -> List[str]:
    """One line per row whose traffic cannot be judged (Owners.unsure), of the rows
    `keep` keeps: its status stays what the rules that can be judged give, and this
    says what was not; first, one per part of the node that could not be read."""
    unread = [
        f"cannot tell whether another nftables table's nat hook takes mapped ports: {why}"
        for why in owners.unread
    ]
    return unread + [
        f"cannot tell whether IPv{row.family} {row.protocol}/{row.host_port}"
        f" ({name_text(row.network or '?')}/{name_text(row.container_id or '?')}) gets all its"
        " traffic: another nftables"
        f" table's nat hook, at or before the plugin's, may take some of it ({rule})"
        for row, rule in sorted(
            ((row, rule) for row, rule in owners.unsure.items() if keep is None or keep(row)),
            key=lambda item: (item[0].family, item[0].protocol, item[0].host_port),
        )
    ]


def node_rows(rows: Sequence[Any], nft_rows: Sequence[Any], owners: Owners) -> List[Any]:
    """The node's rows (iptables', then nftables') with every status their ports'
    other owners give: another nftables table's hook first (a row it shadows contests
    nothing), then `contested` between the backends, by another tool's rule, and by the
    plugin's chain of another container in the other iptables flavour."""
    from portmapctl.core.contest import hook_marked, marked

    mappings = hook_marked([*rows, *nft_rows], owners.hooked)
    if (nft_rows and (rows or owners.taken)) or owners.other_flavour or owners.rivals:
        # (Only then can a row be contested: no pass over an iptables node's rows.)
        mappings = marked(mappings, owners.taken, owners.other_flavour, owners.rivals)
    return mappings
