"""No copy of a container's chain in the other iptables flavour (split brain), and no
silence where the plugin's chains are all in the other flavour (chains_elsewhere).

A node can hold rules in both iptables flavours (legacy x_tables and nf_tables): the
kernel applies both, so a container's chain written in the flavour in use while the
plugin's own copy is in the other one DNATs twice, and the plugin's DEL leaves one of
them behind, taking the port to a gone address. Where the container's chain is in the
other flavour and not in this one, `add` and `check --repair` of one mapping write
nothing for it, as the whole-node repair does (repair._in_other_flavour). A new
container (its chain in neither) is written where `iptables` points, as the plugin's
ADD does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, List, Mapping, Optional, Sequence

if TYPE_CHECKING:
    from portmapctl.core.mapping import MappingConfig
    from portmapctl.iptables.ruleset import NatTable

# The flavour each live iptables backend writes (python-iptables: legacy tables only).
_FLAVOURS = {"nft": "nft", "legacy": "legacy", "iptc": "legacy"}


def flavour_of(backend_name: str) -> Optional[str]:
    """nft or legacy for a live backend; None for a snapshot or a fake."""
    return _FLAVOURS.get(backend_name)


def other_flavour(flavour: str) -> str:
    """legacy for nft, nft for legacy."""
    return "legacy" if flavour == "nft" else "nft"


def split_why(used: str, other: str, whole_family: bool = False) -> str:
    """Why a container is left unwritten (the words of every repair that leaves one)."""
    where = "CNI-HOSTPORT-DNAT is" if whole_family else "its chain is"
    return (
        f"{where} in the {other} tables and not in the {used} ones this repair writes"
        f" (a copy would make a split brain): is the plugin using iptables-{other}?"
    )


def families_only_in_other_flavour(
    used: str, config: MappingConfig, families: Sequence[int], here: Callable[[int], bool]
) -> List[int]:
    """The families in which the other flavour holds the container's chain and this
    one does not (`here(family)`: whether the chain is in the flavour in use, asked
    only then). Cheap where nothing is there: legacy's nat table is looked for in
    /proc first (reading legacy tables would create them), in the caller's namespace."""
    from portmapctl.iptables.access.restore import RestoreBackend
    from portmapctl.iptables.chains import dnat_chain_name

    other = RestoreBackend(other_flavour(used))
    name = dnat_chain_name(config)
    found = []
    for family in families:
        if not other.has_nat_table(family) or not other.installed(family):
            continue
        if other.list_chain(family, name) is None or here(family):
            continue
        found.append(family)
    return found


def refuse_a_copy(
    used: str, config: MappingConfig, families: Sequence[int], here: Callable[[int], bool]
) -> None:
    """add: one line and exit 3 (the node's state stops it, as --iptables iptc on an
    nf_tables host does), nothing written, when the container's chain is in the other
    flavour only."""
    from portmapctl.errors import HostProblem
    from portmapctl.iptables.chains import dnat_chain_name

    found = families_only_in_other_flavour(used, config, families, here)
    if not found:
        return
    other = other_flavour(used)
    fams = "/".join(f"IPv{f}" for f in found)
    raise HostProblem(
        f"{fams} chain {dnat_chain_name(config)} of {config.network}/{config.container_id}"
        f" is in the {other} tables, not in the {used} ones add writes: nothing written"
        f" (a copy would make a split brain). If the plugin runs iptables-{other}, run"
        f" with --iptables {other}; else remove the {other} copy first"
    )


def chains_elsewhere(backend_name: str, tables: Mapping[int, NatTable]) -> Optional[str]:
    """The warning for iptables tables, as read, that hold none of the plugin's chains
    while the other flavour's hold CNI-HOSTPORT-DNAT: list would show an empty node and
    gc remove nothing, and say nothing of why (a DaemonSet image whose `iptables` is
    the other flavour than the node's, PORTMAPCTL_IPTABLES not set). None otherwise;
    the other flavour is asked only for a node that looks empty."""
    used = flavour_of(backend_name)
    if used is None or any(_plugins(table) for table in tables.values()):
        return None
    from portmapctl.iptables.access.restore import RestoreBackend
    from portmapctl.iptables.chains import TOPLEVEL_DNAT

    other = other_flavour(used)
    backend = RestoreBackend(other)
    for family in tables:
        if not backend.installed(family) or not backend.has_nat_table(family):
            continue
        if backend.list_chain(family, TOPLEVEL_DNAT) is not None:
            return (
                f"no portmap chains in the iptables-{used} tables read, but the iptables-{other}"
                f" ones hold {TOPLEVEL_DNAT}: if the plugin runs iptables-{other}, run with"
                f" --iptables {other} (or PORTMAPCTL_IPTABLES={other})"
            )
    return None


def _plugins(table: NatTable) -> bool:
    """Whether the table holds any chain of the plugin's (shared or per container)."""
    from portmapctl.iptables.chains import DNAT_PREFIX, SNAT_PREFIX, TOPLEVEL_DNAT

    return any(
        name == TOPLEVEL_DNAT or name.startswith((DNAT_PREFIX, SNAT_PREFIX))
        for name in table.chains
    )
