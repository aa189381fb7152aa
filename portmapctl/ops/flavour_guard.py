"""No copy of a container's chain in the other iptables flavour (split brain), and no
silence where the plugin's chains are all, or partly, in the other flavour
(chains_elsewhere); and list's reading of the other flavour's nat table, where another
tool's rules may take mapped ports (other_flavour_readers, ops/owners.py), and where
the plugin's own chains there may map add's host ports to another container
(plugin_rows, cli/add_warnings.other_flavour_warnings). Likewise no "nothing here"
where --backend narrowed a run to the plugin backend this node does not use
(unread_backend).

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

from dataclasses import dataclass
from functools import partial
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Collection,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
)

from portmapctl.core.backend import Backend, Flavour, IptablesAccess
from portmapctl.core.text import count

if TYPE_CHECKING:
    from portmapctl.core.mapping import Mapping as CoreMapping
    from portmapctl.core.mapping import MappingConfig
    from portmapctl.iptables.access.restore import RestoreBackend
    from portmapctl.iptables.foreign import ChainReader
    from portmapctl.iptables.ruleset import Args, NatTable

# The flavour each live one-flavour iptables backend writes, by its name (python-iptables:
# legacy tables only; auto's per-family backend says its own, `flavours`).
_FLAVOURS = {a: a.flavour for a in IptablesAccess if a.flavour is not None}


def flavour_of(backend_name: str) -> Optional[Flavour]:
    """nft or legacy for a live backend; None for a snapshot or a fake."""
    return _FLAVOURS.get(backend_name)


def flavours_of(backend: Any, families: Sequence[int]) -> Optional[Dict[int, Flavour]]:
    """The flavour each of `families` is read and written in: one for a one-flavour
    backend, each family's own where the alternatives differ (PerFamilyBackend, as a
    repair's ReadOnce wraps it too); None for a snapshot or a fake."""
    per_family = getattr(backend, "flavours", None)
    if per_family is not None:
        return {family: per_family[family] for family in families if family in per_family}
    used = flavour_of(backend.name)
    return None if used is None else {family: used for family in families}


def by_flavour(used_by: Mapping[int, Flavour]) -> Dict[Flavour, List[int]]:
    """flavours_of's answer turned around: the families each flavour is used for."""
    groups: Dict[Flavour, List[int]] = {}
    for family, used in sorted(used_by.items()):
        groups.setdefault(used, []).append(family)
    return groups


def other_flavour(flavour: str) -> Flavour:
    """legacy for nft, nft for legacy."""
    return Flavour.LEGACY if flavour == Flavour.NFT else Flavour.NFT


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
    /proc first (reading legacy tables would create them), in the caller's namespace.
    Asked as in_other_flavour asks (_holds): a failed listing (legacy's, under a held
    xtables lock) was taken for "not there", and add and a one-mapping --repair wrote
    the copy they refuse with the lock free."""
    from portmapctl.iptables.access.restore import RestoreBackend
    from portmapctl.iptables.chains import dnat_chain_name

    other = RestoreBackend(other_flavour(used))
    name = dnat_chain_name(config)
    found = []
    for family in families:
        if not other.has_nat_table(family) or not other.installed(family):
            continue
        if not _holds(other, family, name) or here(family):
            continue
        found.append(family)
    return found


def in_other_flavour(backend: Any, families: Sequence[int], name: str) -> Optional[Flavour]:
    """The other iptables flavour (than `backend` uses, per family) whose nat table
    holds chain `name` in one of `families` (the plugin ran with it: the `iptables`
    alternative switched since); None where none does. Looked for only where that
    flavour has a nat table, asked without creating one (legacy's in /proc, nf_tables'
    by netlink): no process where there is none. A listing that cannot tell (legacy's
    waits for the xtables lock, and fails past -w) is answered by the save, which takes
    no lock: taken for "not there", the chain so hidden got a copy in nftables."""
    from portmapctl.iptables.access.restore import RestoreBackend

    for family, used in (flavours_of(backend, families) or {}).items():
        other = RestoreBackend(other_flavour(used))
        if not other.has_nat_table(family) or not other.installed(family):
            continue
        if _holds(other, family, name):
            return other_flavour(used)
    return None


def _holds(other: RestoreBackend, family: int, name: str) -> bool:
    """Whether `other` (a RestoreBackend of the other flavour, its nat table there)
    holds chain `name`: its listing, and where that cannot tell (legacy's waits for
    the xtables lock, and fails past -w) the save, which takes no lock."""
    listed = other.lists_chain(family, name)
    if listed is None:
        listed = other.read(family).has_chain(name)
    return bool(listed)


def other_flavour_tables(backend: Any, families: Sequence[int]) -> Dict[int, NatTable]:
    """in_other_flavour for many chains: the other flavour's nat table of each of
    `families` read once, where it has one (asked as in_other_flavour asks)."""
    from portmapctl.iptables.access.restore import RestoreBackend

    tables: Dict[int, NatTable] = {}
    for family, used in (flavours_of(backend, families) or {}).items():
        other = RestoreBackend(other_flavour(used))
        if other.has_nat_table(family) and other.installed(family):
            tables[family] = other.read(family)
    return tables


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


def chains_elsewhere(
    backend: Any, tables: Mapping[int, NatTable], plugin_here: bool = False
) -> List[str]:
    """The warnings of list and gc where the other flavour holds plugin state this run
    does not read. Two cases: the tables read (and, `plugin_here` False, the plugin's
    nftables tables) hold none of the plugin's chains while the other flavour's hold
    CNI-HOSTPORT-DNAT: list would show an empty node and gc remove nothing (a
    DaemonSet image whose `iptables` is the other flavour than the node's); or the
    other flavour's CNI-HOSTPORT-DNAT enters containers' chains: a node half moved
    between flavours, whose chains there (live or dead, forwarding their ports in the
    kernel all the same) list never shows and gc never removes. An empty
    CNI-HOSTPORT-DNAT left there (the plugin's DEL leaves it) is no such state.
    Each family against its own other flavour (two where the alternatives differ:
    one warning each); none for a snapshot."""
    used_by = flavours_of(backend, tuple(tables))
    if used_by is None:
        return []
    from portmapctl.iptables.access.restore import RestoreBackend
    from portmapctl.iptables.chains import TOPLEVEL_DNAT

    here = plugin_here or any(_plugins(table) for table in tables.values())
    # Where the alternatives differ, --iptables alone would move the other family too.
    apart = len(set(used_by.values())) > 1
    entered: Dict[Tuple[Flavour, Flavour], List[str]] = {}
    for family in tables:
        used = used_by[family]
        other = other_flavour(used)
        there = RestoreBackend(other)
        if not there.installed(family) or not there.has_nat_table(family):
            continue
        listed = there.list_chain(family, TOPLEVEL_DNAT)
        if listed is None:
            continue
        if not here:
            run_with = (
                f"--family {family} --iptables {other}"
                if apart
                else f"--iptables {other} (or PORTMAPCTL_IPTABLES={other})"
            )
            return [
                f"no portmap chains in the iptables-{used} tables read, but the iptables-{other}"
                f" ones hold {TOPLEVEL_DNAT}: if the plugin runs iptables-{other}, run with"
                f" {run_with}"
            ]
        names = [f"IPv{family} {chain}" for chain in _entered(listed)]
        if names:
            entered.setdefault((used, other), []).extend(names)
    return [
        f"the iptables-{other} tables also hold {count(len(names), 'container chain')} entered"
        f" from {TOPLEVEL_DNAT} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''}),"
        f" which this run (iptables-{used}) does not read: list shows none of them and gc"
        f" removes none; run with --iptables {other} to see them, and `portmapctl check`"
        f" for the split brain"
        for (used, other), names in entered.items()
    ]


def other_flavour_readers(
    backend: Any, families: Sequence[int]
) -> Optional[Tuple[Dict[int, Flavour], Dict[int, ChainReader]]]:
    """list's view of the other iptables flavour's nat table, for another tool's rules
    there that take a mapped port (ops/owners.py): per family, its name (each family's
    own where the alternatives differ), and where it has a nat table a reader of its
    chains. Nothing is run where it has none (RestoreBackend.has_nat_table: legacy's
    looked for in /proc, as a read would create it; iptables-nft's with one netlink
    GETTABLE); then iptables-nft lists only the chains the walk reaches (`-S CHAIN`, a
    few ms each), legacy is saved once. None for a snapshot or a fake, or where the
    other flavour's tool is missing."""
    used_by = flavours_of(backend, families)
    if used_by is None:
        return None
    from portmapctl.errors import HostProblem
    from portmapctl.iptables.access.restore import RestoreBackend
    from portmapctl.iptables.foreign import listing_reader, table_reader

    names: Dict[int, Flavour] = {}
    readers: Dict[int, ChainReader] = {}
    for family in families:
        # (Every family's name, read or not: whether the families' differ is a hint's.)
        other = names[family] = other_flavour(used_by[family])
        there = RestoreBackend(other)
        if not there.has_nat_table(family) or not there.installed(family):
            continue
        if other == Flavour.NFT:
            readers[family] = listing_reader(partial(there.list_chain, family))
        else:
            try:
                readers[family] = table_reader(there.read(family))
            except HostProblem:
                continue  # (unreadable: as the split-brain check, nothing said of it)
    return (names, readers) if readers else None


def named(names: Mapping[int, str], families: Collection[int]) -> str:
    """The other flavour's name for a message about rows of `families` (both, joined,
    where the alternatives differ and rows of both families are named at once)."""
    return "/".join(sorted({names[f] for f in families if f in names})) or "other"


def plugin_rows(read: ChainReader, family: int, ports: Collection[int]) -> List[CoreMapping]:
    """The plugin's own mappings in a nat table (`read`: the other flavour's, as
    other_flavour_readers gives it) that may be on one of `ports` (host port numbers):
    those of the CNI-HOSTPORT-DNAT rules that name one of the numbers, or no port at all
    (v0.6), and of the per-container chains they enter (one listing each: usually
    none). Built as list builds rows (iptables/inventory.py: shadowing within that table
    judged the same way), without the cache. Nothing when there is no such chain."""
    from portmapctl.iptables import inventory
    from portmapctl.iptables.chains import DNAT_PREFIX, TOPLEVEL_DNAT
    from portmapctl.iptables.ruleset import NatTable, SavedChain, rule_target

    numbers = {str(port) for port in ports}
    kept: List[Args] = []
    for rule in read(TOPLEVEL_DNAT) or ():
        args = _lexed(rule, TOPLEVEL_DNAT)
        # (A text test: a false match costs one chain's listing; the inventory judges.)
        text = " ".join(args or ())
        if args and ("--dport" not in text or any(number in text for number in numbers)):
            kept.append(args)
    if not kept:
        return []
    chains = {TOPLEVEL_DNAT: SavedChain(TOPLEVEL_DNAT, "-", tuple(kept))}
    for target in dict.fromkeys(rule_target(args) for args in kept):
        if target is None or not target.startswith(DNAT_PREFIX):
            continue
        rules = read(target)
        if rules is not None:
            lexed = (_lexed(rule, target) for rule in rules)
            chains[target] = SavedChain(target, "-", tuple(r for r in lexed if r))
    return list(inventory.build({family: NatTable(family, chains)}).mappings)


def _lexed(rule: Args, chain: str) -> Optional[Args]:
    """A rule as its tokens: a reader's one-token placeholder (the line `iptables -S`
    printed, listing_reader) split; None for a line that cannot be."""
    if len(rule) != 1 or not rule[0].startswith(f"-A {chain} "):
        return rule
    from portmapctl.iptables.lexer import split_words

    try:
        return tuple(split_words(rule[0])[2:])
    except ValueError:
        return None  # (a line iptables would not print: not the plugin's)


def _entered(listed: str) -> List[str]:
    """The per-container chains that `iptables -S CNI-HOSTPORT-DNAT` output jumps to,
    each once, in order."""
    from portmapctl.iptables.chains import is_plugin_chain
    from portmapctl.iptables.lexer import split_words

    found: List[str] = []
    for line in listed.splitlines():
        if not line.startswith("-A "):
            continue
        try:
            words = split_words(line)
        except ValueError:
            continue  # (a line iptables would not print: not the plugin's)
        target = words[words.index("-j") + 1] if "-j" in words[:-1] else ""
        if is_plugin_chain(target) and target not in found:
            found.append(target)
    return found


def _plugins(table: NatTable) -> bool:
    """Whether the table holds any chain of the plugin's (shared or per container)."""
    from portmapctl.iptables.chains import DNAT_PREFIX, SNAT_PREFIX, TOPLEVEL_DNAT

    return any(
        name == TOPLEVEL_DNAT or name.startswith((DNAT_PREFIX, SNAT_PREFIX))
        for name in table.chains
    )


@dataclass(frozen=True)
class UnreadBackend:
    """The plugin's mappings in the backend that --backend left out, where the one
    read holds none."""

    looked_at: str
    held_in: str
    count: int

    def warning(self, to: str) -> str:
        """`to`: what --backend auto does with them (`to list them`)."""
        return (
            f"--backend {self.looked_at}: the plugin's {self.held_in} holds"
            f" {count(self.count, 'mapping')} on this node, not read here: run with --backend"
            f" auto {to}"
        )


def unread_backend(node: Any) -> Optional[UnreadBackend]:
    """Where --backend narrowed a live read to a backend that holds nothing, the other
    backend's mappings (read as evidence only, in the families asked): `list --backend
    iptables` on a node whose plugin writes nftables said "no portmap chains found",
    check "healthy", gc "nothing to remove", and nothing more. None where there are
    none, offline, or not narrowed. The caller asks only when its backend held none."""
    options = node.options
    if options.backend is None or options.offline:
        return None
    if options.backend == Backend.IPTABLES:
        from portmapctl.errors import PortmapctlError
        from portmapctl.nftables import inventory as nft_inventory

        # Evidence for a warning only, as read_iptables_evidence's below: an nft that
        # cannot list (a kernel without nf_tables, often why --backend iptables was
        # given) stopped list, check and gc of an idle node with exit 3; one that hangs
        # delayed them by nft's 120 s (a short wait: quick).
        try:
            ruleset = node.read_nft_evidence(quick=True)
        except PortmapctlError as err:
            from portmapctl.ops.add_ahead import debug

            debug("reading nftables to count its mappings failed: %s", err)
            return None
        count = len(nft_inventory.build(ruleset, problems=False).mappings)
        held_in = Backend.NFTABLES
    else:
        from portmapctl.iptables import inventory

        tables = node.read_iptables_evidence(options.families)
        count = len(inventory.build(tables, None).mappings) if tables else 0
        held_in = Backend.IPTABLES
    if not count:
        return None
    return UnreadBackend(str(options.backend), str(held_in), count)
