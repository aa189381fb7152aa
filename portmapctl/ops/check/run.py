"""`check` on a node: read the tables and the cache, then diagnose."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Set, Tuple

from portmapctl.cni import cache as cni_cache
from portmapctl.cni.cache import Attachment
from portmapctl.core import validate
from portmapctl.core.mapping import MappingConfig
from portmapctl.core.status import Status
from portmapctl.core.text import count
from portmapctl.core.validate import OPTIONS, Spelling
from portmapctl.errors import HostProblem
from portmapctl.iptables import inventory, plugin_rules
from portmapctl.iptables.chains import (
    DNAT_PREFIX,
    chain_name,
    dnat_chain_name,
)
from portmapctl.iptables.ruleset import (
    NatTable,
)
from portmapctl.ops.check.diagnose import diagnose, diagnose_mapping, iptables_configs
from portmapctl.ops.check.expected import cached_configs, sharing_chain
from portmapctl.ops.check.followed import KeyInDoubt, followed, nft_mapping
from portmapctl.ops.check.followed_entries import follow_the_plugin, in_doubt_left, left_alone
from portmapctl.ops.check.hints import REPAIR_COMMAND, WOULD_LEAVE, fixes_for
from portmapctl.ops.check.problem import CheckResult, Problem
from portmapctl.ops.check.unread_entries import (
    node_writes,
    node_written,
    unread_left,
    unread_pairs,
    written_families,
)
from portmapctl.ops.node import Node, side_by_side
from portmapctl.ops.owners import node_rows, read_owners, unsure_warnings

if TYPE_CHECKING:
    from portmapctl.iptables.foreign import ChainReader
    from portmapctl.nftables.ruleset import Ruleset


def _other_flavour(
    node: Node, families: Sequence[int]
) -> Tuple[Optional[Dict[int, Tuple[str, str]]], Dict[int, NatTable], List[str]]:
    """The same families read from the iptables flavour the backend does not use for
    each (where the alternatives differ, each family's other one), and per family the
    pair (used, other)."""
    from portmapctl.ops.flavour_guard import flavours_of, other_flavour

    used_by = None if node.options.snapshots else flavours_of(node.backend, families)
    if used_by is None:
        return None, {}, []  # a snapshot: there is no other flavour to look at
    from portmapctl.iptables.access.restore import RestoreBackend

    tables: Dict[int, NatTable] = {}
    for family in families:
        other = other_flavour(used_by[family])
        backend = RestoreBackend(other)
        if not backend.installed(family):
            # (RHEL 8 has no iptables-legacy, iptables before 1.8 no iptables-nft: that is
            # no problem to be fixed by installing it.)
            return None, {}, [f"not looking for split brain: no iptables-{other} here"]
        try:
            # Reading legacy tables that do not exist would create them: ask first.
            if backend.has_nat_table(family):
                tables[family] = backend.read(family)
        except HostProblem as err:
            # A host without the other flavour cannot have a split brain in it.
            return None, {}, [f"not looking for split brain: {err}"]
    pairs = {f: (used_by[f], other_flavour(used_by[f])) for f in families}
    return pairs, tables, []


@dataclass(frozen=True)
class NodeTables:
    """What check reads of the node's iptables: the backend's tables, and the same
    families in the other flavour (split brain), with why those could not be read;
    `nft_live`: the plugin's nftables tables when read with them (else None)."""

    tables: Dict[int, NatTable]
    other_tables: Dict[int, NatTable]
    # Per family (used, other); None: no other flavour here.
    flavours: Optional[Dict[int, Tuple[str, str]]]
    notes: Tuple[str, ...] = ()
    nft_live: Optional[Ruleset] = None


def read_tables(node: Node, with_nft: bool = False) -> NodeTables:
    """One read of each family (and of the other flavour's, for split brain); with
    `with_nft`, then nftables' tables as nft_problems would read them."""
    tables = node.read()
    flavours, other_tables, notes = _other_flavour(node, tuple(tables))
    nft_live = node.read_nft() if with_nft and node.nft is not None else None
    return NodeTables(tables, other_tables, flavours, tuple(notes), nft_live)


def _other_readers(read: NodeTables) -> Optional[Tuple[Dict[int, str], Dict[int, ChainReader]]]:
    """The other flavour's tables (read for split brain) as ops/owners.py reads them:
    another tool's rules there may take mapped ports."""
    return _readers_of(read.flavours, read.other_tables)


def _readers_of(
    flavours: Optional[Dict[int, Tuple[str, str]]], other_tables: Dict[int, NatTable]
) -> Optional[Tuple[Dict[int, str], Dict[int, ChainReader]]]:
    """By family, the other flavour's name and its table as a chain reader
    (ops/owners.py), as flavour_guard.other_flavour_readers gives them."""
    if flavours is None or not other_tables:
        return None
    from portmapctl.iptables.foreign import table_reader

    names = {family: other for family, (_used, other) in flavours.items()}
    return names, {f: table_reader(t) for f, t in other_tables.items()}


def check_node(node: Node) -> CheckResult:
    """Check the whole node against its CNI cache (see the module doc).

    The tables are read (iptables-save and nft run as processes) while the cache is
    parsed here; errors come out in the order of reading one after the other: the
    cache's first (a malformed file: BadInput, named), then the tables'.
    """
    read, attachments = side_by_side(
        lambda: read_tables(node, with_nft=True), node.read_cache, foreground_first=True
    )
    followed = follow_the_plugin(node, attachments, read)
    result = in_doubt_left(_check_node(node, followed.attachments, read), followed, read.tables)
    # Where its repair writes the chain all the same (node_written), --repair is offered;
    # not where it leaves every entry read as torn down (not_torn_down).
    looks = node.namespace_view() is not None  # (a snapshot's namespaces are another node's)
    written = node_writes(result, followed.attachments, looks)
    result = unread_left(result, followed.attachments, read.tables, written)
    if looks:
        from portmapctl.ops.check.torn_down import torn_down_fixes

        # (Not of the entries in doubt: nothing made for them, they want nothing made.)
        problems = torn_down_fixes(
            result.problems,
            followed.written(followed.attachments or ()),
            read.tables,
            result.nft_placed,
        )
        result = replace(result, problems=problems)
    if read.tables and any(REPAIR_COMMAND in p.fix for p in result.problems):
        # Where its repair leaves a cached chain (its externalSetMarkChain missing, an
        # entry rule it cannot write back, a port it would take from another mapping):
        # said so.
        from portmapctl.ops.check.repair_plan import refused_left

        configs = cached_configs(followed.written(followed.attachments or ()))
        unread = frozenset(chain_name(*p) for p in unread_pairs(followed.attachments))
        problems = refused_left(result.problems, configs, read.tables, unread)
        result = replace(result, problems=problems)
    if followed.attachments and any(
        p.in_nftables and p.container_id is not None and REPAIR_COMMAND in p.fix
        for p in result.problems
    ):
        # Where its repair leaves a container's family because it would take a port
        # another mapping has (port_moves): said so, as the repair plans it (dry run).
        from portmapctl.ops.check.nft_repair import nft_ports_left
        from portmapctl.ops.check.repair import in_doubt_why

        moved = nft_ports_left(
            node, followed.attachments, in_doubt_why(followed.in_doubt, followed)
        )
        whys = {(u.family, u.network, u.container_id): u.why for u in moved}
        problems = tuple(
            replace(p, fix=WOULD_LEAVE.format(why=why))
            if p.in_nftables
            and REPAIR_COMMAND in p.fix
            and (why := whys.get((p.family, p.network, p.container_id))) is not None
            else p
            for p in result.problems
        )
        result = replace(result, problems=problems)
    if not followed.ignored:
        return result
    from portmapctl.ops.nft_words import key_ignored_note

    note = key_ignored_note(followed.ignored, followed.where)
    return replace(result, notes=(note, *result.notes))


def _check_node(
    node: Node, attachments: Optional[List[Attachment]], read: Optional[NodeTables] = None
) -> CheckResult:
    """The check of `read` (the node's tables as read, or as a repair left them),
    reading them first when not given."""
    if read is None:
        read = read_tables(node)
    tables, flavours, other_tables = read.tables, read.flavours, read.other_tables
    notes = list(read.notes)
    # An empty cache is no source of liveness for gc either (SPEC §3): the fix that
    # names plain gc would be refused.
    fixes = fixes_for(node, bool(attachments))
    found = inventory.build(tables, attachments)
    from portmapctl.ops.check.crossed import (
        contested_problems,
        flavour_rival_problems,
        hook_problems,
        other_flavour_problems,
    )
    from portmapctl.ops.check.nft import nft_problems

    nft = nft_problems(node, tables, attachments, fixes, read.nft_live, found.mappings)
    nft_found, nft_ids, nft_compared = nft.problems, nft.nft_ids, nft.compared
    notes += nft.notes
    # --backend narrows what is looked at: nothing is expected of a backend not looked
    # at, and the cache entries of the containers it holds are not judged.
    cached = {a.container_id for a in attachments or ()}
    reads_iptables = node.options.reads_iptables
    judged = (cached - nft_ids if reads_iptables else set()) | (
        nft_ids if node.nft is not None else set()
    )
    not_expected = () if reads_iptables else cached
    problems, compared = diagnose(
        tables,
        attachments,
        fixes,
        other_tables=other_tables,
        flavours=flavours,
        found=found,
        not_expected=not_expected,
        judged=judged,
        nft_owners=nft.owners,
        nft_entries=nft.nft_keys,
        nft_held=nft.held,
    )
    problems += nft_found
    # The ports' other owners, read once: problems here, the rows' statuses below.
    nft_rows = nft.found.mappings if nft.found is not None else ()
    owners = read_owners(
        node, tables, found.mappings, nft_rows, read.nft_live, _other_readers(read)
    )
    problems += contested_problems(found, nft.found, read.nft_live, fixes, owners)
    problems += other_flavour_problems(found, nft.found, read.nft_live, owners)
    problems += flavour_rival_problems(found, read.nft_live, owners)
    problems += hook_problems(read.nft_live, owners)
    compared += nft_compared
    if attachments is None:
        notes.append(
            f"no CNI cache in {' or '.join(d + '/results' for d in node.options.cache_dirs)}:"
            " cached mappings and stale chains were not checked (give --cni-cache-dir)"
        )
    result_only = cni_cache.result_only_note(attachments)
    if result_only is not None:
        notes.append(result_only)
    # A warning, as list and gc say theirs: one line, -q included (not a remark).
    elsewhere = _uncached_elsewhere(read, attachments)
    looked_at: Optional[str] = None
    if node.options.backend is not None and not (found.mappings or found.chains or nft_rows):
        # Narrowed to the backend this node's plugin does not use: "healthy" alone
        # would pass a node whose other backend holds stale rules.
        from portmapctl.ops.flavour_guard import unread_backend

        unread = unread_backend(node)
        if unread is not None:
            elsewhere.append(unread.warning("to check them"))
            looked_at = unread.looked_at
    chains = sum(len(plugin_rules.per_container_chains(t)) for t in tables.values())
    undecided = inventory.undecided_note(found.chains)
    return CheckResult(
        tuple(problems),
        tuple(sorted(tables)),
        "node",
        attachments is not None,
        compared,
        chains,
        nft_checked=nft_compared,
        nft_seen=len({(m.container_id, m.family) for m in nft_rows if m.family in tables}),
        looked_at=looked_at,
        notes=tuple(notes),
        found=found,
        rows=tuple(node_rows(found.mappings, nft_rows, owners)),
        warnings=(
            *cni_cache.warnings(attachments, node.options.cache_dirs),
            *unsure_warnings(owners),
            *elsewhere,
            *node.nft_unread(),
            *([undecided] if undecided is not None else ()),
        ),
        unread_written=node_written(
            iptables_configs(attachments, not_expected, nft.nft_keys), tables, attachments
        ),
        nft_placed=frozenset(nft.nft_keys),
    )


def _uncached_elsewhere(read: NodeTables, attachments: Optional[List[Attachment]]) -> List[str]:
    """The notes for containers' chains only the other flavour holds, of containers the
    cache does not name (a cached one's problem says where its chain is): on a node
    half moved between flavours, stale ones there forward their ports in the kernel
    all the same, and no run in this flavour judges them (list and gc say so too:
    flavour_guard.chains_elsewhere). One per pair of flavours (two where the
    alternatives differ)."""
    if read.flavours is None:
        return []
    cached = {dnat_chain_name(a.mapping) for a in attachments or () if a.mapping is not None}
    by_pair: Dict[Tuple[str, str], Set[str]] = {}
    for family, table in read.other_tables.items():
        by_pair.setdefault(read.flavours[family], set()).update(
            name
            for name in table.chains
            if name.startswith(DNAT_PREFIX)
            and name not in cached
            and not (family in read.tables and read.tables[family].has_chain(name))
        )
    notes = []
    for (used, other), found in by_pair.items():
        if not found:
            continue
        names = sorted(found)
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        notes.append(
            f"the iptables-{other} tables hold {count(len(names), 'container chain')} that this"
            f" check (iptables-{used}) does not judge and the CNI cache does not name ({shown}):"
            f" see them with `portmapctl list --iptables {other}`"
        )
    return notes


def check_mapping(
    node: Node,
    config: MappingConfig,
    ifname: Optional[str] = None,
    forced: bool = False,
    spelling: Spelling = OPTIONS,
) -> CheckResult:
    """Check one mapping as the plugin's CHECK does (a missing chain is a failure), in
    the backend its container is followed to (`followed`; `forced`: --backend's, given
    with the mapping options, else its --cni-config's key); `ifname`: its interface;
    `spelling`: how its options were given (what its --repair would leave says them
    so)."""
    given = config.backend
    try:
        config, notes = followed(node, config, forced=forced, ifname=ifname)
    except KeyInDoubt as doubt:
        # As the node's check (in_doubt_left): judged where it was asked (by its key,
        # nftables, under auto), naming no fix, and a warning says why.
        config = replace(config, backend=given or doubt.judged_in or node.options.keyless)
        result = check_followed(node, config, (), ifname, spelling)
        return left_alone(result, {(config.network, config.container_id)}, [str(doubt)])
    result = check_followed(node, config, notes, ifname, spelling)
    if given is not None and config.backend == given and notes:
        # Checked where --backend or its config's key says, not where the plugin keeps
        # it (`followed`'s note; one followed elsewhere has another backend): --repair
        # would refuse, so no fix names it.
        problems = tuple(
            replace(p, fix=None) if p.fix == SAME_WITH_REPAIR else p for p in result.problems
        )
        result = replace(result, problems=problems)
    if nft_mapping(node, config):
        result = _nft_ports_left(node, config, result)
    return result


def _nft_ports_left(node: Node, config: MappingConfig, result: CheckResult) -> CheckResult:
    """`result` (the check of one nft-backed mapping) where its --repair leaves a family
    because it would take a port another mapping has (port_moves): those rows say so,
    as that repair plans it (dry run). Not in the repair's own check before and after
    (check_followed): the after names its `could not repair` line."""
    offered = sorted({p.family for p in result.problems if p.fix == SAME_WITH_REPAIR and p.family})
    if not offered:
        return result
    from portmapctl.ops.check.nft_repair_one import ports_left

    moved = ports_left(node, config, tuple(offered))
    problems = tuple(
        replace(p, fix=WOULD_LEAVE.format(why=moved[p.family]))
        if p.fix == SAME_WITH_REPAIR and p.family in moved
        else p
        for p in result.problems
    )
    return replace(result, problems=problems)


def check_followed(
    node: Node,
    config: MappingConfig,
    notes: Tuple[str, ...] = (),
    ifname: Optional[str] = None,
    spelling: Spelling = OPTIONS,
) -> CheckResult:
    """check_mapping of a mapping `followed` has been asked about already (--repair
    checks before and after: the node is not asked again)."""
    families = validate.chosen_families(config, node.families, "check")
    if nft_mapping(node, config):
        from portmapctl.ops.check import nft_one
        from portmapctl.ops.check.backend_rivals import nft_mapping_rivals

        live = node.read_nft(families)
        problems = nft_one.check_mapping(node, config, families, live)
        problems += nft_one.mapping_shadowed(node, config, families, live)
        # What the plugin's iptables (or another tool's rule there) takes of its ports,
        # as the node check says: the plugin's CHECK looks at nftables alone.
        problems += nft_mapping_rivals(node, config, families, live)
        problems += nft_owner_problems(node, config, families, live)
        if any(p.fix == SAME_WITH_REPAIR for p in problems):
            # Conditions its --repair refuses (its own: it stops; the newest cached
            # ADD's: the entry is held) leave those rows as they are, said so: offered,
            # a cron job ran a repair that wrote nothing, every time.
            from portmapctl.ops.check.nft import expected_in_add_order
            from portmapctl.ops.check.nft_refused import mapping_refused_left

            in_add_order = expected_in_add_order(node, node.read_cache() or [])
            problems = mapping_refused_left(
                problems, config, in_add_order, families, SAME_WITH_REPAIR
            )
        if any(p.fix == SAME_WITH_REPAIR for p in problems):
            # Its own interface being torn down: its --repair writes nothing in that
            # family (torn_down.nft_torn_own), so it is not offered there.
            from portmapctl.ops.check.torn_down import nft_torn_own

            dying = nft_torn_own(config, entries_of(node, config), ifname)
            problems = [
                replace(p, fix=WOULD_LEAVE.format(why=dying[p.family]))
                if p.fix == SAME_WITH_REPAIR and p.family in dying
                else p
                for p in problems
            ]
        return CheckResult(
            tuple(problems),
            families,
            "mapping",
            mappings_checked=len(families),
            chain=f"nft:{config.container_id}",
            notes=notes,
        )
    tables = node.read(families)
    entries = entries_of(node, config)
    sharing = sharing_chain(config, entries, ifname)
    result = mapping_result(config, tables, _chain_elsewhere(node, config, tables), sharing)
    result = with_owner_problems(node, config, tables, result)
    # An entry of its container on the network that cannot be read: as the node's check
    # says it, no fix named (its --repair stops: unread_entries.stop_where_held), and a
    # warning says why; but where that repair writes all the same (nothing the entries
    # read do not make is there: after a flush), --repair is offered.
    # Not where its own interface is being torn down and the repair leaves the chain.
    looks = node.namespace_view() is not None  # (a snapshot's namespaces are another node's)
    written = written_families(config, entries, sharing, tables, ifname, looks)
    result = unread_left(result, entries, tables, written)
    if looks and any(p.fix == SAME_WITH_REPAIR for p in result.problems):
        # Its other interfaces' entries being torn down: what of theirs the chain lacks
        # its --repair does not make (torn_down.one_mapping_held); not offered for it.
        # So is its own interface's, where that is being torn down (torn_down.torn_own).
        from portmapctl.ops.check.torn_down import one_mapping_fixes, torn_beside, torn_own

        torn, look = torn_beside(config, entries, ifname)
        own = torn_own(config, entries, ifname, look)
        problems = one_mapping_fixes(
            result.problems, config, sharing, torn, look, tables, SAME_WITH_REPAIR, own
        )
        result = replace(result, problems=problems)
    if any(p.fix == SAME_WITH_REPAIR for p in result.problems):
        # Where its --repair cannot set the chain up (its externalSetMarkChain missing,
        # an entry rule it cannot write back) or would take a port from another mapping
        # (a stale chain of its own container on another network included), it leaves
        # the chain: said so.
        from portmapctl.ops.check.repair_one import repair_left

        problems = repair_left(
            node, config, entries, sharing, ifname, tables, result.problems, spelling
        )
        result = replace(result, problems=problems)
    return replace(result, notes=notes + result.notes) if notes else result


def with_owner_problems(
    node: Node, config: MappingConfig, tables: Dict[int, NatTable], result: CheckResult
) -> CheckResult:
    """`result` with the problems the whole-node check reports of this mapping's ports
    taken by owners outside its table (ops/owners.py): the plugin's chain of another
    container in the other iptables flavour, another tool's rule there, another nftables
    table's nat hook. The plugin's CHECK looks at its own rules alone and passes; a
    script asking about this mapping wants to know it may get no traffic. None of them
    is --repair's to cure. So is the plugin's nftables backend mapping them for another
    container (ops/check/backend_rivals.py)."""
    name = dnat_chain_name(config)
    ports = {(p.protocol, p.host_port) for p in config.ports}
    found = inventory.build(tables)
    rows = tuple(
        m for m in found.mappings if m.chain == name and (m.protocol, m.host_port) in ports
    )
    if not rows:
        return result
    from portmapctl.ops.check.backend_rivals import iptables_mapping_rivals

    rivals = iptables_mapping_rivals(node, config, tables)
    flavours, other_tables, _ = _other_flavour(node, tuple(tables))
    owners = read_owners(node, tables, rows, (), None, _readers_of(flavours, other_tables))
    from portmapctl.ops.check.crossed import (
        flavour_rival_problems,
        hook_problems,
        other_flavour_problems,
    )

    mine = replace(found, mappings=rows)
    problems = [
        *rivals,
        *other_flavour_problems(mine, None, None, owners),
        *flavour_rival_problems(mine, None, owners),
        *hook_problems(None, owners),
    ]
    if not problems:
        return result
    return replace(result, problems=result.problems + tuple(problems))


def nft_owner_problems(
    node: Node, config: MappingConfig, families: Sequence[int], live: Ruleset
) -> List[Problem]:
    """with_owner_problems for an nft-backed mapping (`live`: the plugin's tables as
    read): what the whole-node check reports of its ports taken by another nftables
    table's nat hook, by another tool's rule in the other iptables flavour's nat table,
    or by the plugin's chain of another container there; the plugin's CHECK looks at
    its own rules alone. (The plugin's iptables and another tool's rule in the flavour
    in use: backend_rivals.py.)"""
    from portmapctl.nftables import inventory as nft_inventory

    ports = {(p.protocol, p.host_port) for p in config.ports}
    found = nft_inventory.build(live, problems=False)
    rows = tuple(
        m
        for m in found.mappings
        if m.container_id == config.container_id
        and m.family in families
        and (m.protocol, m.host_port) in ports
    )
    if not rows:
        return []
    other = None
    if node.options.reads_iptables:
        flavours, other_tables, _ = _other_flavour(node, tuple(sorted({m.family for m in rows})))
        other = _readers_of(flavours, other_tables)
    # No iptables tables given: another tool's rule in the flavour in use is
    # backend_rivals.py's (said once).
    owners = read_owners(node, {}, (), rows, live, other)
    from portmapctl.ops.check.crossed import (
        flavour_rival_problems,
        hook_problems,
        other_flavour_problems,
    )

    problems = [
        *other_flavour_problems(None, replace(found, mappings=rows), live, owners),
        *flavour_rival_problems(None, live, owners),
        *hook_problems(live, owners),
    ]
    # (An nftables row names no network without the cache: the mapping's is known.)
    return [replace(p, network=p.network or config.network) for p in problems]


def _chain_elsewhere(
    node: Node, config: MappingConfig, tables: Dict[int, NatTable]
) -> Dict[int, str]:
    """The families whose chain is missing here and held by the other iptables flavour
    (a split node): --repair leaves it there, so its fix is not --repair."""
    from portmapctl.ops.flavour_guard import (
        by_flavour,
        families_only_in_other_flavour,
        flavours_of,
        other_flavour,
    )

    name = dnat_chain_name(config)
    missing = [family for family, table in tables.items() if not table.has_chain(name)]
    used_by = flavours_of(node.backend, missing)
    if used_by is None or not missing:
        return {}
    return {
        family: other_flavour(used)
        for used, families in by_flavour(used_by).items()
        for family in families_only_in_other_flavour(used, config, families, lambda f: False)
    }


# The fix of a problem of one mapping: the CLI spells it as the command that was run
# (cli/check.py); a library caller gets these words.
SAME_WITH_REPAIR = "run the same command with --repair"


def entries_of(node: Node, config: MappingConfig) -> List[Attachment]:
    """The cache entries of `config`'s container on its network, those that cannot be
    read included (cni/cache.py pair_entries)."""
    return cni_cache.pair_entries(
        node.options.cache_dirs, config.network, config.container_id, node.namespace_view()
    )


def mapping_result(
    config: MappingConfig,
    tables: Dict[int, NatTable],
    elsewhere: Optional[Dict[int, str]] = None,
    sharing: Sequence[MappingConfig] = (),
) -> CheckResult:
    """The check of one mapping in these tables (as read, or as a repair left them);
    `elsewhere`: the families whose chain only the other iptables flavour holds;
    `sharing`: expected.sharing_chain of its entries (entries_of)."""
    problems, compared = diagnose_mapping(
        tables, config, SAME_WITH_REPAIR, elsewhere or {}, sharing
    )
    problems += _as_the_node_check_says(config, tables)
    families = tuple(tables)
    return CheckResult(
        tuple(problems),
        families,
        "mapping",
        mappings_checked=compared,
        chain=dnat_chain_name(config),
    )


def _as_the_node_check_says(config: MappingConfig, tables: Dict[int, NatTable]) -> List[Problem]:
    """What the whole-node check reports of this mapping's chain that its rules being
    in place does not tell: `dead` (its chain in the shape a plugin before v0.8.7 wrote
    for host IP 0.0.0.0, which no packet matches), and `shadowed`, of its ports that an
    earlier entry rule (another container's, another tool's) takes. The plugin's CHECK
    finds its rules in place and passes, but a script asking about this mapping wants
    to know that it gets no traffic."""
    from portmapctl.ops.check.hints import Fixes
    from portmapctl.ops.check.node_problems import dead_problem, shadow_problem

    name = dnat_chain_name(config)
    ports = {(p.protocol, p.host_port) for p in config.ports}
    found = inventory.build(tables)
    by_chain = {(c.name, c.family): c for c in found.chains}
    problems: List[Problem] = []
    for family in tables:
        chain = by_chain.get((name, family))
        rows = [
            m
            for m in found.mappings
            if m.chain == name
            and m.family == family
            and m.shadowed_by
            and (m.protocol, m.host_port) in ports
        ]
        if chain is not None and Status.DEAD in chain.status:
            problems.append(dead_problem(found, chain, Fixes()))
        if chain is not None and rows:
            problems.append(shadow_problem(chain, rows, by_chain, Fixes(), found.mappings))
    return problems
