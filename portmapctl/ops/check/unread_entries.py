"""The containers with a cache entry on a network that cannot be read (malformed, cut
short, not readable by us), beside entries that can: their chain is in doubt.

The plugin names a container's chain after the network and the container alone, so a
pod on one network through several interfaces (Multus naming it twice: net1, net2, one
entry each) has one chain every interface's ADD appended its rules to. Where one of
those entries cannot be read, the chain's rules that the others do not make may be
that interface's live mapping: the node's check reports its problems with no fix, and
--repair writes nothing for it (neither rewrites the chain from the entries it read nor
deletes the rules they do not make). Where the chain holds nothing the entries read do
not make (held_chains: after a flush, `-F -X` or `-F`), nothing of that interface's is
there to lose: --repair makes it from them, as the plugin's ADD of them alone does (the
check before offers it there: node_written, written_families), and the check after
still says the entry (unknown_rules: its rules are not known), exit 1.
Fixed or removed, the entry is read at the next run and the repair goes ahead."""

from __future__ import annotations

from dataclasses import replace
from typing import (
    Callable,
    Collection,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
)

from portmapctl.cni.cache import Attachment, skipped_line
from portmapctl.core.mapping import MappingConfig
from portmapctl.core.status import ProblemKind
from portmapctl.core.text import name_text
from portmapctl.errors import HostProblem
from portmapctl.iptables.chains import Chain, chain_name, dnat_chain_name
from portmapctl.iptables.ruleset import NatTable
from portmapctl.ops.check.problem import CheckResult, Problem

# (network, container ID): the pair a chain is named after.
Pair = Tuple[str, str]
# (family, network, container ID): a pair's chain in one family.
InFamily = Tuple[int, str, str]

UNREAD_WHY = (
    "a cache entry of this container on this network cannot be read (see the warning),"
    " and the chain is shared by all its interfaces on it: its rules may be that"
    " interface's live mapping, so nothing is written or removed for it"
)

MADE_WHY = (
    "a cache entry of this container on this network cannot be read (see the warning),"
    " but the chain holds nothing the entries read do not make: --repair makes their"
    " rules, that interface's stay unknown"
)


def unread_pairs(attachments: Optional[Sequence[Attachment]]) -> Dict[Pair, str]:
    """By (network, container ID), an entry that may be theirs and cannot be read, of
    those that also have an entry read (the chain judged from the entries read): every
    reading of its file name (cache.unreadable), as liveness takes it."""
    read: Set[Pair] = {
        (a.network, a.container_id) for a in attachments or () if a.mapping is not None
    }
    found: Dict[Pair, str] = {}
    for a in attachments or ():
        if _unreadable(a) and (a.network, a.container_id) in read:
            found.setdefault((a.network, a.container_id), a.path)
    return found


def _unreadable(attachment: Attachment) -> bool:
    """An entry that cannot be read. (A result-only entry is whole: libcni before v0.8
    wrote no config, no doubt.)"""
    return (
        attachment.mapping is None and attachment.problem is not None and not attachment.result_only
    )


def held_chains(live: NatTable, wanted: Iterable[Chain], names: Collection[str]) -> Set[str]:
    """Of `names` (chains of unread_pairs), those `live` holds a rule of, or an entry rule
    to, that `wanted` (made from the entries read) does not make: it may be the unread
    interface's live mapping. A chain not there, or holding only rules of theirs, loses
    nothing made from them (after `iptables -t nat -F -X`, or `-F`: left empty)."""
    from portmapctl.ops.check.compare import entry_index

    by_name = {chain.name: chain for chain in wanted}
    index = entry_index(live)
    held = set()
    for name in names:
        if not live.has_chain(name):
            continue
        chain = by_name.get(name, Chain(name))
        if any(r not in chain.rules for r in live.rules(name)) or any(
            r not in chain.entry_rules for r in index.by_target.get(name, ())
        ):
            held.add(name)
    return held


def unheld(
    live: NatTable,
    per_container: Sequence[Tuple[MappingConfig, Chain]],
    unread: Collection[str],
) -> List[Tuple[MappingConfig, Chain]]:
    """`per_container` (expected.wanted_on_node's) less the chains of `unread` (chains of
    unread_pairs) that `live` holds (held_chains): what the node's repair writes
    (repair_plan._plan) and so what its check offers --repair for (node_written)."""
    if not unread:
        return list(per_container)
    held = held_chains(live, [chain for _, chain in per_container], unread)
    return [(c, chain) for c, chain in per_container if chain.name not in held]


def node_written(
    configs: Optional[Sequence[MappingConfig]],
    tables: Mapping[int, NatTable],
    attachments: Optional[Sequence[Attachment]],
) -> frozenset[InFamily]:
    """The chains of unread_pairs, by family, that the node's repair writes all the
    same: unheld keeps them from `configs` (the cached configs the node check judges
    in iptables), as it does in the repair's plan. Its check offers --repair there (it
    named no fix and said "nothing is written" of the rows the repair then made)."""
    pairs = unread_pairs(attachments)
    if not pairs or configs is None:
        return frozenset()
    from portmapctl.ops.check.expected import wanted_on_node

    names = {chain_name(*pair): pair for pair in pairs}
    found: Set[InFamily] = set()
    for family, live in tables.items():
        _, per_container = wanted_on_node(configs, family, live)
        for _, chain in unheld(live, per_container, names):
            if chain.name in names:
                found.add((family, *names[chain.name]))
    return frozenset(found)


def not_torn_down(
    written: frozenset[InFamily], attachments: Optional[Sequence[Attachment]]
) -> frozenset[InFamily]:
    """`written` (node_written's) less the chains every entry read of which (a zombie's
    aside) is of an interface being torn down (torn_down.TornDownLook): the node's
    repair leaves those entries out of its plan before it writes (CacheNow._torn_down:
    a torn-down interface's rules are kept only where a live one shares the chain), so
    it writes nothing there. The check offered --repair and said "--repair makes their
    rules" of such a chain after a flush (net1 torn down, net2's entry unreadable),
    where the repair left it as it was. Only the namespaces of those containers are
    looked into; a snapshot's are another node's (the caller does not ask then)."""
    if not written:
        return written
    from portmapctl.ops.check.torn_down import TornDownLook

    pairs = {(network, container_id) for _, network, container_id in written}
    read = [
        a
        for a in attachments or ()
        if a.mapping is not None and not a.zombie and (a.network, a.container_id) in pairs
    ]
    gone = set(map(id, TornDownLook().torn_down(read)))
    live = {(a.network, a.container_id) for a in read if id(a) not in gone}
    return frozenset(w for w in written if w[1:] in live)


def node_writes(
    result: CheckResult, attachments: Optional[Sequence[Attachment]], looks: bool
) -> frozenset[InFamily]:
    """The `written` the node's check gives unread_left: result.unread_written
    (node_written, by _check_node) less, where the node's namespaces are looked into
    (`looks`: not a snapshot's), those not_torn_down leaves out. The repair's checks
    before and after it ask the same: the one after said "nothing is written or removed
    for it" of a chain it had just made."""
    written = result.unread_written
    return not_torn_down(written, attachments) if looks else written


UNKNOWN_DETAIL = (
    "the chain holds the rules of its entries that are read; those of the one that cannot"
    " be read are not known"
)


def unknown_rules(pairs: Mapping[Pair, str], tables: Mapping[int, NatTable]) -> List[Problem]:
    """A row for each chain of `pairs` there in a family of `tables` that no problem
    names (made from the entries read, by a repair after a flush): the unread
    interface's rules are not known, so it is not known healthy (exit 1), and no fix
    (nothing --repair writes or deletes makes it known)."""
    return [
        Problem(
            ProblemKind.MISSING_RULES,
            family,
            chain_name(*pair),
            *pair,
            UNKNOWN_DETAIL,
            "",
            UNREAD_WHY,
        )
        for pair in sorted(pairs)
        for family, live in sorted(tables.items())
        if live.has_chain(chain_name(*pair))
    ]


def unread_left(
    result: CheckResult,
    attachments: Optional[Sequence[Attachment]],
    tables: Optional[Mapping[int, NatTable]] = None,
    written: Collection[InFamily] = (),
) -> CheckResult:
    """`result` with the iptables problems of the containers of unread_pairs naming no
    fix and saying why, a row for such a chain in `tables` no problem names
    (unknown_rules), and a warning for each such container with a problem. `written`:
    the chains, by family, that the repair writes all the same (node_written;
    written_families, of one mapping): their problems keep their fix, and say so (an
    unknown_rules row says so with no fix: what the repair wrote there is all it knows)."""
    pairs = unread_pairs(attachments)
    if not pairs:
        return result
    named = {(p.family, p.network, p.container_id) for p in result.problems if not p.in_nftables}
    unknown = [
        p
        for p in unknown_rules(pairs, tables or {})
        if (p.family, p.network, p.container_id) not in named
    ]
    result = replace(result, problems=(*result.problems, *unknown))
    left = [
        not p.in_nftables
        and (p.network, p.container_id) in pairs
        and (p.family, p.network, p.container_id) not in written
        for p in result.problems
    ]
    # An unknown_rules row is the unread interface's alone: no fix (nothing --repair
    # writes makes it known: no loop), though where the repair writes the chain it says
    # so, as the rows before it did (the check after a repair that made the chain said
    # "nothing is written or removed for it").
    problems = tuple(
        replace(p, fix="", why=UNREAD_WHY)
        if doubted
        else replace(p, fix="" if p in unknown else p.fix, why=MADE_WHY)
        if not p.in_nftables and (p.family, p.network, p.container_id) in written
        else p
        for p, doubted in zip(result.problems, left)
    )
    hit = sorted({(p.network, p.container_id) for p, doubted in zip(problems, left) if doubted})
    # Of those with a problem only where the repair writes all the same (`written`).
    made = sorted(
        {
            (p.network, p.container_id)
            for p in problems
            if not p.in_nftables
            and (p.family, p.network, p.container_id) in written
            and (p.network, p.container_id) in pairs
        }
        - set(hit)
    )
    why = {a.path: a.problem for a in attachments or () if a.problem is not None}
    paths = [pairs[pair] for pair in hit]  # type: ignore[index]
    said = tuple(unread_text(pair, path, why.get(path)) for pair, path in zip(hit, paths))
    said += tuple(unread_text(pair, pairs[pair], why.get(pairs[pair]), True) for pair in made)
    paths += [pairs[pair] for pair in made]
    # Each says all the cache reader's own line of its entry says (cni/cache.py
    # skipped_line): that line goes, so the file is warned of once.
    merged = {skipped_line(why[path]) for path in paths if path in why}
    kept = tuple(w for w in result.warnings if w not in merged)
    return replace(result, problems=problems, warnings=(*kept, *said))


def unread_text(pair: Pair, path: str, problem: Optional[str] = None, made: bool = False) -> str:
    """The node check's warning; the names and path as the node gives them, escaped
    (core/text.name_text: a file name's tail is anyone's text). `problem`: why the
    entry cannot be read, as the cache reader says it (its own `CNI cache file PATH: `
    left out, the path being said already). `made`: the chain holds nothing the
    entries read do not make, and the repair writes it from them (written_families)."""
    network, container_id = pair
    source = f"CNI cache file {name_text(path)}: "
    why = ""
    if problem is not None:
        why = f" ({problem[len(source) :] if problem.startswith(source) else problem})"
    head = (
        f"{name_text(network)}/{name_text(container_id)}: its cache entry {name_text(path)}"
        f" cannot be read{why}; its container is kept as live by the file name"
    )
    if made:
        return (
            f"{head}, and its chain holds nothing the entries read do not make: --repair"
            " makes their rules, that interface's stay unknown (fix or remove the entry,"
            " then run check --repair again)"
        )
    return (
        f"{head}, and its chain may hold that interface's live mapping: nothing is written"
        " or removed for it (fix or remove the entry, then run check --repair again)"
    )


class ChainInDoubt(HostProblem):
    """A write of one mapping (check --repair of it, add) into a chain unread_pairs puts
    in doubt: stopped, nothing written (exit 3: the node's state stops it, as a backend
    in doubt stops them: followed_entries.entry_in_doubt). `applied`: what went in
    before it was found, in the words of ops/add.py _applied (else nothing did)."""

    def __init__(self, pair: Pair, path: str, applied: str = "") -> None:
        super().__init__(stopped_text(pair, path, applied))
        self.pair = pair
        self.path = path


def stop_where_unread(
    config: MappingConfig,
    entries: Sequence[Attachment],
    live: Optional[NatTable] = None,
    wanted: Sequence[Chain] = (),
) -> None:
    """ChainInDoubt where one of `entries` (run.entries_of: `config`'s container's on its
    network) cannot be read and another can: the chain made from the entries read (and
    the one given) dropped the rules of the interface whose entry it is, a live mapping,
    where the plugin's ADD appends to them. Given `live` (and `wanted`, the chains the
    write makes), only where the chain there holds such rules (held_chains)."""
    pair = (config.network, config.container_id)
    path = unread_pairs(entries).get(pair)
    if path is None:
        return
    if live is None or held_chains(live, wanted, {chain_name(*pair)}):
        raise ChainInDoubt(pair, path)


def stop_where_held(
    config: MappingConfig,
    entries: Sequence[Attachment],
    sharing: Sequence[MappingConfig],
    live: NatTable,
) -> None:
    """stop_where_unread judged on `live` against the chain a write of `config` makes
    there, its container's other interfaces' rules (`sharing`: expected.sharing_chain)
    joined to it: where the chain holds nothing more (a flush emptied it), nothing of
    the unread interface's is there to lose, and the write goes ahead, as the node's
    repair makes it (held_chains). The same judgement for add and the one-mapping
    repair, so that the three agree."""
    if (config.network, config.container_id) not in unread_pairs(entries):
        return
    from portmapctl.ops.check.expected import wanted_sharing

    wanted = wanted_sharing(config, sharing or (config,), live.family, live)
    stop_where_unread(config, entries, live, wanted)


def written_families(
    config: MappingConfig,
    entries: Sequence[Attachment],
    sharing: Sequence[MappingConfig],
    tables: Mapping[int, NatTable],
    ifname: Optional[str] = None,
    looks: bool = False,
) -> frozenset[InFamily]:
    """Its chain, in the families of `tables` where the repair of `config` alone writes it
    though an entry of its container on the network cannot be read: stop_where_held,
    which that repair asks of each family, does not stop it (the chain holds nothing
    the write does not make: a flush emptied or deleted it). Its check offers --repair
    there, as the repair then does; it said "nothing is written" and named no fix.
    `looks`: the node's namespaces are looked into (run.check_followed's, the repair's):
    where `config`'s own interface (`ifname`'s) is being torn down and no live entry
    read shares the chain, that repair leaves it as it is (torn_down.one_mapping_held),
    so it is not written either; the check said "--repair makes their rules" of it, and
    so did the repair's report after writing nothing."""
    if (config.network, config.container_id) not in unread_pairs(entries):
        return frozenset()
    leaves = _left_as_torn_down(config, entries, sharing, ifname) if looks else None
    found: Set[InFamily] = set()
    for family, live in tables.items():
        try:
            stop_where_held(config, entries, sharing, live)
        except ChainInDoubt:
            continue
        if leaves is not None and leaves(live):
            continue
        found.add((family, config.network, config.container_id))
    return frozenset(found)


def _left_as_torn_down(
    config: MappingConfig,
    entries: Sequence[Attachment],
    sharing: Sequence[MappingConfig],
    ifname: Optional[str],
) -> Optional[Callable[[NatTable], bool]]:
    """Where `config`'s own interface is being torn down (torn_down.torn_own), whether
    the repair of it leaves its chain in a table as it is: the question its plan asks
    (one_mapping_held, given the torn-down entries beside it too: torn_beside). None
    where its own is not torn down (the chain is made of it, and of the live others)."""
    from portmapctl.ops.check.expected import wanted_sharing
    from portmapctl.ops.check.torn_down import one_mapping_held, torn_beside, torn_own

    torn, look = torn_beside(config, entries, ifname)
    own = torn_own(config, entries, ifname, look)
    if not own:
        return None
    name = dnat_chain_name(config)

    def leaves(live: NatTable) -> bool:
        wanted = wanted_sharing(config, sharing or (config,), live.family, live)
        kept = one_mapping_held(config, sharing, torn, wanted, live, own=own)
        return all(chain.name != name for chain in kept)

    return leaves


def own_unread_only(
    config: MappingConfig, entries: Sequence[Attachment], ifname: Optional[str]
) -> bool:
    """Whether the entries of `config`'s container on its network that cannot be read
    (unread_pairs: another read beside them) are all that of `ifname` itself, the
    interface an add is given for: every other interface's rules are known from its
    entry, so what the chain holds beyond them and `config` is that interface's own
    (an earlier ADD of it), or of an interface with no entry at all, as where every
    entry reads. add then keeps it (kept_as_added), as the plugin's ADD does, and
    needs no stop: nothing of another interface's is lost."""
    pair = (config.network, config.container_id)
    if not ifname or pair not in unread_pairs(entries):
        return False
    unread = [a for a in entries if _unreadable(a) and (a.network, a.container_id) == pair]
    return all(a.ifname == ifname for a in unread)


def kept_as_added(chains: Sequence[Chain], name: str, live: NatTable) -> List[Chain]:
    """`chains` with chain `name` as the plugin's ADD leaves it where `live` holds it:
    every rule and entry rule there kept, in place, those of `chains` it lacks
    appended (it appends what is missing and deletes nothing)."""
    from portmapctl.ops.check.compare import entry_index

    if not live.has_chain(name):
        return list(chains)
    there = tuple(live.rules(name))
    entered = tuple(entry_index(live).by_target.get(name, ()))
    return [
        replace(
            c,
            rules=there + tuple(r for r in c.rules if r not in there),
            entry_rules=entered + tuple(r for r in c.entry_rules if r not in entered),
        )
        if c.name == name
        else c
        for c in chains
    ]


def in_chain_order(sharing: Sequence[MappingConfig], live: NatTable) -> List[MappingConfig]:
    """`sharing` (expected.sharing_chain: one mapping given and its container's other
    interfaces' on the network) in the order their rules stand in `live`'s chain, for
    where own_unread_only holds: the given interface's entry not read, sharing_chain
    puts its mapping last (the newest ADD), though its earlier ADD may have come
    first, and a repair that wrote the chain so moved rules nothing broke. Each
    mapping goes where the first of its rules left there stands; one with none left
    last, where the plugin's ADD appends it (its entry's time tells nothing: a torn
    write is newer than the ADD). None left at all (a flush): as given."""
    from portmapctl.ops.check.expected import mapping_dnat_chain

    name = chain_name(sharing[0].network, sharing[0].container_id) if sharing else ""
    if len(sharing) < 2 or not live.has_chain(name):
        return list(sharing)
    have = live.rules(name)
    at = {rule: i for i, rule in reversed(list(enumerate(have)))}  # (each rule's first)

    def first(config: MappingConfig) -> int:
        chain = mapping_dnat_chain(config, (config,), live)
        return (
            min((at[r] for r in chain.rules if r in at), default=len(have)) if chain else len(have)
        )

    return sorted(sharing, key=first)


def stopped_text(pair: Pair, path: str, applied: str = "") -> str:
    """ChainInDoubt's one line; the names and path as the node gives them, escaped
    (core/text.name_text). `applied`: as ChainInDoubt's."""
    network, container_id = pair
    changed = f"nothing more changed{applied}" if applied else "nothing changed"
    return (
        f"{name_text(network)}/{name_text(container_id)}: its cache entry {name_text(path)}"
        " cannot be read, and its chain is shared by all its interfaces on the network, so"
        f" it may hold that interface's live mapping: {changed} (fix or remove the"
        " entry, then run the same command again)"
    )
