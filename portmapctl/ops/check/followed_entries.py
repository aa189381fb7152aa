"""Following the plugin over the node: the backend each cache entry's plugin keeps
its container in (its key "nftables" ignored by a plugin before v1.6, or where that
cannot be told), for the node's check and its --repair (run.py, repair.py); and their
results with the problems of the containers in doubt naming no fix (in_doubt_left).
One mapping given on the command line: followed.py; what the node's portmap binaries
settle of the entries the rules cannot place: binary_verdicts.py."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Collection, Dict, List, Optional, Sequence, Set, Tuple

from portmapctl.cni.cache import Attachment
from portmapctl.core.backend import Backend
from portmapctl.core.mapping import MappingConfig
from portmapctl.core.status import ProblemKind
from portmapctl.iptables.chains import TOPLEVEL_DNAT
from portmapctl.iptables.ruleset import NatTable
from portmapctl.ops.check.binary_verdicts import by_binaries, unread_by_binaries
from portmapctl.ops.check.problem import CheckResult, Problem
from portmapctl.ops.node import Node

if TYPE_CHECKING:
    from portmapctl.nftables.access import NftUnusable
    from portmapctl.nftables.ruleset import Ruleset
    from portmapctl.ops.check.run import NodeTables


def in_doubt_left(
    result: CheckResult, followed: Followed, tables: Optional[Dict[int, NatTable]] = None
) -> CheckResult:
    """`result` with the problems of the containers whose backend is in doubt
    (follow_the_plugin) naming no fix, in either backend (--repair writes nothing for
    them, and a removal by hand may be of the rules its plugin reads), nor do those of
    the plugin's nftables structure where they alone need it (rebuilt, it would make
    their absence read as the key ignored); and one warning each that says why.
    Judged by their key (nftables): not healthy to a plugin that honours it. So are
    the `unplaced` ones (no key; their iptables `missing-chain`, no fix), and the
    top-level chains and jumps in `tables` (as checked) that they alone want
    (_toplevel_left)."""
    if followed.by_binaries or followed.binaries_differ:
        result = replace(
            result,
            notes=(*followed.by_binaries.values(), *result.notes),
            warnings=(*result.warnings, *followed.binaries_differ),
        )
    if not followed.in_doubt and not followed.unplaced:
        return result
    from portmapctl.ops.nft_words import unplaced_text

    said = [followed.doubt_text(a) for a in followed.in_doubt if a.mapping is not None]
    said += [
        unplaced_text(a.mapping, followed.unread or "")
        for a in followed.unplaced
        if a.mapping is not None
    ]
    # By network and container: each cache entry is followed apart (its own chain
    # tells), and the repair writes one of a container whose other entry is in doubt.
    doubted = {(a.network, a.container_id) for a in (*followed.in_doubt, *followed.unplaced)}
    # The containers the repair makes the plugin's table for (nft_repair: the cached
    # nft-backed ones it writes), healthy ones too: they have no row to show it. As the
    # check split them (result.nft_placed), not by their key alone: a keyless entry
    # whose rules are in nftables alone is written there too (its row gave no fix, and
    # the repair made the entry for it). Not one whose conditions the repair refuses
    # (nft_refused): it writes nothing for it, nor the table it alone wants.
    from portmapctl.ops.check.nft_refused import written_and_refused

    cached = [
        a
        for a in followed.written(followed.attachments or ())
        if a.mapping is not None
        and not a.zombie
        and (a.network, a.container_id) in result.nft_placed
        and (a.network, a.container_id) not in doubted
    ]
    wanting, refused = written_and_refused(cached)
    result = left_alone(
        result, doubted, said, wanting, {(a.network, a.container_id) for a in refused}
    )
    if not followed.unplaced or tables is None:
        return result
    return _toplevel_left(result, followed, tables)


# The problems of the plugin's shared iptables chains (compare.check_shared): the cached
# iptables containers want them, none in particular.
_TOPLEVEL_KINDS = frozenset(
    k.value
    for k in (
        ProblemKind.MISSING_TOPLEVEL,
        ProblemKind.MISSING_TOPLEVEL_RULE,
        ProblemKind.MISSING_JUMP,
    )
)


def _toplevel_left(
    result: CheckResult, followed: Followed, tables: Dict[int, NatTable]
) -> CheckResult:
    """`result` with the problems of the shared iptables chains and jumps (CNI-HOSTPORT-*)
    that no cached iptables container but the `unplaced` ones wants naming no fix:
    --repair, which writes nothing for those, makes none of them (repair.py plans from
    the other configs); their fix named it, and a node whose only container is in doubt
    got the plugin's top-level chains from it. Wanted as the check wants them
    (wanted_on_node, check_shared), by the other cached iptables configs."""
    unplaced = {(a.network, a.container_id) for a in followed.unplaced}
    others = [a for a in followed.attachments or () if (a.network, a.container_id) not in unplaced]
    wanted = toplevel_wanted(others, tables)
    problems = tuple(
        replace(p, fix="") if is_toplevel(p) and toplevel_key(p) not in wanted else p
        for p in result.problems
    )
    return replace(result, problems=problems)


def is_toplevel(problem: Problem) -> bool:
    """A problem of the plugin's shared iptables chains or jumps (check_shared's)."""
    return (
        problem.kind in _TOPLEVEL_KINDS and problem.container_id is None and not problem.in_nftables
    )


def toplevel_key(problem: Problem) -> Tuple[str, Optional[int], Optional[str]]:
    return problem.kind, problem.family, problem.chain


def toplevel_wanted(
    attachments: Sequence[Attachment], tables: Dict[int, NatTable]
) -> Set[Tuple[str, Optional[int], Optional[str]]]:
    """The top-level problems (toplevel_key) that the iptables-kept ones of
    `attachments` want fixed, as the check wants them (wanted_on_node, check_shared):
    those the repair, planning from those entries, makes."""
    from portmapctl.ops.check.compare import check_shared
    from portmapctl.ops.check.expected import cached_configs, wanted_on_node
    from portmapctl.ops.check.hints import Fixes

    configs = cached_configs(
        [a for a in attachments if a.mapping is not None and a.mapping.backend != Backend.NFTABLES]
    )
    return {
        toplevel_key(p)
        for family, live in tables.items()
        for chain in wanted_on_node(configs, family, live)[0]
        for p in check_shared(chain, live, Fixes())
    }


def left_alone(
    result: CheckResult,
    entries: Collection[Tuple[str, str]],
    said: Sequence[str],
    wanting: Sequence[MappingConfig] = (),
    refused: Collection[Tuple[str, str]] = (),
) -> CheckResult:
    """in_doubt_left's work, for the cache entries `entries` (network, container ID; a
    one-mapping check's too: check_mapping), with `said`, the warnings that say why. `wanting`: the configs of
    the other cached containers the repair writes in nftables, which keep the fix of a
    row of the table they want (nft_table_rows.nft_wanted): a healthy one has no row of its
    own, and the repair made the table's entry for it where that row named no fix.
    Those being torn down are judged after (torn_down.toplevel_fixes). `refused`:
    (network, container ID) of those whose conditions the repair refuses
    (nft_refused): their own rows show no need of the table, as it writes nothing
    for them."""
    from portmapctl.ops.check.nft_table_rows import nft_wanted
    from portmapctl.ops.check.repair_report import names_repair

    # The families some other container's problem in nftables that --repair makes shows
    # in need of them. Not one whose fix is another: a zombie's (its row names its rules
    # there and their family, nft.held_rules), a stale one's (rules of a container the
    # cache does not know) or an unreadable entry's (`incomplete`: its masquerade rules
    # without a DNAT rule) are gc's, and --repair plans nothing for them (each kept the
    # table's --repair where only a container in doubt wanted it; the repair wrote
    # nothing, the next check offered it again).
    needed = {
        p.family
        for p in result.problems
        if p.in_nftables
        and p.container_id is not None
        and not _of_entries(p, entries)
        and names_repair(p.fix)
        and (p.network, p.container_id) not in refused
    }
    # A row of the table that names why the repair leaves it already (nft_refused's,
    # nft_table_rows') keeps saying so: only an offered repair is taken back.
    problems = tuple(
        replace(p, fix="", why=_IN_DOUBT)
        if _of_entries(p, entries)
        else replace(p, fix="")
        if p.container_id is None
        and names_repair(p.fix)
        and _of_nft_tables(p)
        and p.family not in needed
        and not nft_wanted(p, wanting)
        else p
        for p in result.problems
    )
    return replace(result, problems=problems, warnings=(*result.warnings, *said))


def _of_entries(problem: Problem, entries: Collection[Tuple[str, str]]) -> bool:
    """Whether `problem` is of one of the cache `entries` (network, container ID); one
    that names no network (rules only a container ID marks), of any of its container."""
    if problem.container_id is None:
        return False
    if problem.network is None:
        return problem.container_id in {cid for _, cid in entries}
    return (problem.network, problem.container_id) in entries


def _of_nft_tables(problem: Problem) -> bool:
    """A problem of the plugin's nftables structure: of its chains or rules, or its
    table missing (where nothing is left of a container in doubt, nft.nothing_left,
    its fix made that table for it alone)."""
    return problem.in_nftables or problem.kind == ProblemKind.NFT_MISSING_TABLE


_IN_DOUBT = (
    "which backend its plugin keeps it in cannot be told (see the warning): nothing is"
    " written or removed for it"
)


@dataclass(frozen=True)
class Followed:
    """follow_the_plugin's answer: the cache entries as judged (`attachments`: those
    whose plugin ignored their key "nftables" taken as iptables'), those entries
    (`ignored`), the entries of which that cannot be told (`in_doubt`: left to their
    key, nftables; nothing is written for them), where each chain in iptables is, by
    name (followed.chain_in_iptables' words: "iptables", or the other flavour's
    tables, which `iptables` does not show), and, where `in_doubt` is so because nft
    cannot read the plugin's tables, nft's error (`unread`; None: they were read).
    `unplaced`: the entries without a `backend` key whose chain is in no iptables,
    where nft cannot read the plugin's tables (--backend iptables: in doubt as well,
    by evidence nobody read rather than by a key; _unplaced)."""

    attachments: Optional[List[Attachment]]
    ignored: Sequence[Attachment] = ()
    in_doubt: Sequence[Attachment] = ()
    where: Dict[str, str] = field(default_factory=dict)
    unread: Optional[str] = None
    unplaced: Sequence[Attachment] = ()
    gone: Dict[str, str] = field(default_factory=dict)  # path -> why (nft.nothing_left)
    # Under --backend nftables: the host's iptables could not be read (its error), so
    # whether `in_doubt` are kept there cannot be told (_follow_keys).
    iptables_unread: Optional[str] = None
    # The entries the rules cannot place whose backend the node's portmap binaries
    # settled (binary_verdicts.py), by path: the note that says so, naming the
    # binaries; and `binaries_differ`: the warnings where those binaries say what the
    # node's rules contradict (kept as the rules say).
    by_binaries: Dict[str, str] = field(default_factory=dict)
    binaries_differ: Tuple[str, ...] = ()
    # By path, of the entries in doubt that a --cni-bin-dir of the runtime's plugins
    # would settle (binary_verdicts._doubt_only): the directories looked in and that
    # option (nft_words.settle_text), for the repair's own line of each (repair.py).
    settle: Dict[str, str] = field(default_factory=dict)

    def written(self, attachments: Sequence[Attachment]) -> List[Attachment]:
        """Those of `attachments` a repair may write: not in doubt, not unplaced (it
        writes nothing for those, so they want nothing of it made)."""
        left = {a.path for a in (*self.in_doubt, *self.unplaced)}
        return [a for a in attachments if a.path not in left]

    def doubt_text(self, attachment: Attachment) -> str:
        """Why `attachment` (of `in_doubt`, its mapping there) is in doubt."""
        from portmapctl.ops.nft_words import configured_there, gone_text, in_doubt_text, unread_text

        config = attachment.mapping
        assert config is not None
        said = configured_there(config)
        if attachment.path in self.gone:
            return gone_text(config, said, self.gone[attachment.path])
        if self.iptables_unread is not None:
            return unread_text(config, said, self.iptables_unread)
        where = self.where.get(attachment.dnat_chain, "iptables")
        return in_doubt_text(config, said, where, unread=self.unread)


def follow_the_plugin(
    node: Node, attachments: Optional[List[Attachment]], read: NodeTables
) -> Followed:
    """`attachments` judged where their plugin keeps them (_follow_keys), and the
    entries without a key that cannot be placed (_unplaced)."""
    return _unplaced(node, _follow_keys(node, attachments, read), read)


def entry_in_doubt(
    node: Node, config: MappingConfig, seen: Optional[Ruleset] = None
) -> Optional[str]:
    """The node's check's verdict (follow_the_plugin, from the same reads) on the cache
    entry of `config`'s container on its network, for one mapping given on the command
    line (check of it, its --repair, add) whose cached config says `"backend":
    "nftables"` and whose chain is in no iptables: why it is in doubt (its warning,
    Followed.doubt_text), or None. Nothing of such a container left (ops/nft.py
    nothing_left: a firewall took its chain and entry rule) was judged by its key, and
    the one-mapping --repair and add wrote it into nftables, a copy a plugin before
    v1.6 (Debian's 1.1.1, which ignores the key) never deletes. Asked only where no
    rule of it is in the plugin's nftables tables: the usual nftables container costs
    the nft read its check makes anyway. A new one (no rule yet) beside the plugin's
    table of its family, where every other entry cached so has its rules in nftables,
    costs the cache read, no iptables read: nothing iptables holds changes the verdict
    then (_table_tells, _others_honour_the_key). `seen`: the plugin's tables of
    `config`'s families as the caller read them (add), taken for the node's read where
    those are the node's families (the same tables): each was listed once more here."""
    from portmapctl.cni.cache import configured_backend
    from portmapctl.ops.nft import has_rules_for

    cached = configured_backend(node.options.cache_dirs, config.network, config.container_id)
    if cached != Backend.NFTABLES:
        return None
    if seen is not None and set(config.families) == set(node.families):
        live = seen
    else:
        live = node.read_nft_evidence()
    if has_rules_for(config, live):
        return None
    from dataclasses import replace

    from portmapctl.ops.check.run import read_tables
    from portmapctl.ops.node import side_by_side

    # The tables as the node's check reads them (read_tables with_nft), its nftables
    # read being the one just made (node.read_nft where nft is looked at): reading them
    # again listed each table twice on every add of a new container cached so.
    kept = live if node.nft is not None else None

    def tables() -> NodeTables:
        return replace(read_tables(node), nft_live=kept)

    if not _table_tells(node, config, live):
        read, attachments = side_by_side(tables, node.read_cache, foreground_first=True)
    else:
        # The cache first: where it tells, iptables is not read (its save of each
        # family was 2 of the 11 processes of add of a new container on a v1.9.1 node).
        attachments = node.read_cache()
        if _others_honour_the_key(config, attachments, live):
            return None
        read = tables()
    followed = follow_the_plugin(node, attachments, read)
    mine = (config.network, config.container_id)
    for a in followed.attachments or ():
        if (a.network, a.container_id) == mine and a.path in followed.by_binaries:
            if a.mapping is not None and a.mapping.backend == Backend.IPTABLES:
                # (Its plugin keeps it in iptables, the binaries say: this command, by
                # the key, would write it into nftables. The node's repair puts it back;
                # not under --backend nftables, which the note says.)
                if not node.options.reads_iptables:
                    return followed.by_binaries[a.path]
                return (
                    f"{followed.by_binaries[a.path]}; give `portmapctl check --repair"
                    f"{node.options.arguments}` of the node, which does"
                )
    return next(
        (
            followed.doubt_text(a)
            for a in followed.in_doubt
            if (a.network, a.container_id) == mine and a.mapping is not None
        ),
        None,
    )


def _table_tells(node: Node, config: MappingConfig, live: Ruleset) -> bool:
    """Whether the plugin's table of one of the families of `config`'s container (no
    rule of it there, its chain in no iptables the caller saw) is in `live`, read
    whole, as a v1.6+ ADD leaves it (ops/nft.py absence_tells): then nothing_left puts
    it in doubt only where another entry cached "nftables" is kept in iptables (its
    chain there, no rule of it in nftables: _others_honour_the_key), and the chain of
    its own, were it in an iptables the caller did not look at, would be "the key
    ignored", not in doubt. Only where iptables is read (under --backend nftables an
    iptables that cannot be read puts it in doubt: _follow_keys)."""
    from portmapctl.ops.nft import absence_tells

    return (
        node.options.reads_iptables
        and not node.options.offline
        and node.nft_unusable is None
        and any(live.table(family) is not None for family in config.families)
        and absence_tells(config, live)
    )


def _others_honour_the_key(
    config: MappingConfig, attachments: Optional[List[Attachment]], live: Ruleset
) -> bool:
    """Whether every other cache entry whose config says `"backend": "nftables"` (zombies
    too, as key_judged counts them) has a rule in `live` that DNATs to its address (as
    nothing_left and key_judged find it): then none is kept in iptables, whatever
    iptables holds, and, beside _table_tells' table, follow_the_plugin's verdict on
    `config`'s container is "kept by its key" without iptables read. Its own entries
    (its network, its container: one chain) are what is judged."""
    from portmapctl.ops.nft import all_have_rules

    own = (config.network, config.container_id)
    return all_have_rules(
        [
            a.mapping
            for a in attachments or ()
            if a.mapping is not None
            and a.mapping.backend == Backend.NFTABLES
            and (a.network, a.container_id) != own
        ],
        live,
    )


def _follow_keys(node: Node, attachments: Optional[List[Attachment]], read: NodeTables) -> Followed:
    """`attachments` judged where their plugin keeps them: the entries whose config
    says nftables but whose plugin wrote them in iptables (ops/nft.py key_ignored) taken
    as iptables' (see Followed). Cheap where there are none: no nftables module is
    imported, nft not read.
    Under --backend nftables, which reads no iptables, the host's is asked for the
    chains of those with no rule in nftables (either flavour: followed.chains_in_iptables):
    judged by the key alone, a --repair wrote them a copy their plugin never deletes.
    Where the kernel holds the plugin's tables and nft cannot read them, no entry is
    judged "the key ignored" (_tables_to_judge_by): under --backend auto they are left
    to their key, and the check stops for them as for every cached "nftables" entry
    then (check/nft.py nft_problems: NftUnusable.needed_by, exit 3, which names
    --backend iptables); under --backend iptables, which that line bids, they are in
    doubt: reported with no fix, nothing written for them, the rest of the node done.
    Not where netlink tells that no container's rules are in those tables
    (_no_container_there): judged as where nft reads them."""
    keyed = [
        a
        for a in attachments or ()
        if a.mapping is not None and a.mapping.backend == Backend.NFTABLES
    ]
    if not keyed:
        return Followed(attachments)
    live = None
    if not node.options.reads_iptables and not node.options.offline:
        from portmapctl.ops import nft

        live = read.nft_live if read.nft_live is not None else node.read_nft_evidence()
        judged = nft.key_judged(keyed, {a.dnat_chain for a in keyed}, live)
        unheld = [*judged.ignored, *judged.in_doubt]
        if not unheld:
            return Followed(attachments)  # (all in nftables, the usual node: no iptables read)
        from portmapctl.ops.check.followed import IptablesUnread, chains_in_iptables

        asked = {a.dnat_chain for a in unheld} | {TOPLEVEL_DNAT}
        try:
            chains = chains_in_iptables(node, node.families, asked)
        except IptablesUnread as err:
            # Whether their plugin keeps them in iptables cannot be told: read as none,
            # they were judged v1.6+'s and repaired into nftables.
            doubted = [a for a in unheld if not a.zombie]
            followed = Followed(attachments, in_doubt=doubted, iptables_unread=str(err))
            return unread_by_binaries(node, followed, attachments, doubted, live)
    else:
        chains = _chains_read(read, {a.dnat_chain for a in keyed} | {TOPLEVEL_DNAT})
    # Whether a plugin may have written iptables here (nft.nothing_left): its
    # CNI-HOSTPORT-DNAT, or a nat table a firewall's reload may have flushed it from.
    sign = _iptables_sign(node, chains.pop(TOPLEVEL_DNAT, None) is not None)
    if not chains and sign is None:
        # (Nothing of iptables here: each judged by its key. Where nothing is left of
        # one, the plugin's binaries may say otherwise: `nft flush ruleset` took
        # iptables-nft's nat table of a Debian-plugin node too.)
        seen = live if live is not None else read.nft_live
        if seen is None or attachments is None:
            return Followed(attachments)
        return by_binaries(node, Followed(attachments), attachments, chains, seen, False)
    from portmapctl.ops import nft

    unread = None
    if live is None:
        live, unread = _tables_to_judge_by(node, read)
    if unread is not None and _no_container_there(node):
        unread = None  # (the absence of their rules tells, as where nft reads it: `live`, none)
    if unread is not None:
        # Judged from tables nobody read, each was "the key ignored" (no rule of it
        # seen), and --repair wrote its iptables rules, which a v1.6+ plugin never reads.
        if node.nft is not None:
            return Followed(attachments)  # (nft_problems stops for them: needed_by)
        doubted = [a for a in keyed if a.dnat_chain in chains]
        return Followed(attachments, in_doubt=doubted, where=chains, unread=str(unread))
    found = nft.key_judged(attachments, chains, live)
    ignored = found.ignored
    in_iptables = nft.judged_in_iptables(attachments, ignored)
    # Those of which nothing is left, where nothing tells their plugin honours the key.
    gone = nft.nothing_left(attachments, chains, live, found, sign)
    in_doubt = [*found.in_doubt, *(a for a in attachments or () if a.path in gone)]
    followed = Followed(in_iptables, ignored, in_doubt, chains, gone=gone)
    if attachments is None:
        return followed
    unheld = bool(found.ignored or found.in_doubt)
    return by_binaries(node, followed, attachments, chains, live, unheld)


def _iptables_sign(node: Node, toplevel: bool) -> Optional[str]:
    """What says a plugin may have written this node's iptables (nft.nothing_left), or
    None: the plugin's CNI-HOSTPORT-DNAT there (`toplevel`), else an iptables nat table
    of one of the node's families in either flavour (asked without creating one: a
    netlink question, /proc for legacy). A firewall's reload of iptables
    (`iptables-restore` of its own file, `iptables -t nat -F` and `-X`) takes
    CNI-HOSTPORT-DNAT with the chains but leaves the table: its absence then said "no
    plugin wrote iptables here", and a container Debian's plugin keeps in iptables,
    cached `"backend": "nftables"`, was repaired into nftables. Offline (dumps) or
    read from no kernel (a test's tables in memory): the toplevel chain alone."""
    if toplevel:
        return f"the plugin's {TOPLEVEL_DNAT} is in iptables"
    if node.namespace_view() is None:
        return None  # (this host's kernel is not the node read)
    from portmapctl.iptables.access import legacy_nat_present

    if _nft_nat_table_here(node.families) or any(legacy_nat_present(f) for f in node.families):
        return (
            f"iptables' nat table is here, without {TOPLEVEL_DNAT}: a firewall's reload of"
            " it takes that chain too"
        )
    return None


def _nft_nat_table_here(families: Sequence[int]) -> bool:
    """Whether iptables-nft's nat table exists in one of `families`, empty too (its
    `-F` and `-X` leave it with no chain: nfmsg.table_present counts chains); True where
    netlink cannot be asked (then nothing tells that iptables was never written)."""
    from portmapctl.iptables.access import nfgen
    from portmapctl.iptables.access.nfmsg import table_handle

    try:
        with nfgen.open_socket() as sock:
            return any(table_handle(sock, f, "nat") is not None for f in families)
    except OSError:
        return True


def _no_container_there(node: Node) -> bool:
    """Where nft cannot read the plugin's tables: whether netlink says no container's
    rules are in them, and that this tells (ops/nft.py absence_tells): their host-port
    chains hold no rule (Node.plugin_rules_may_be_here, the narrowing of _unplaced)
    and each is as the plugin leaves it (left_as_the_plugin_leaves_it: not flushed,
    which empties those chains too). v1.9.1's DEL of its last container leaves the
    table so, for good on a node gone back to iptables that dropped nft: a container
    cached "nftables" whose chain is in iptables is then judged "the key ignored", as
    where nft reads the table, not a stop on every cron run."""
    from portmapctl.ops.nft import left_as_the_plugin_leaves_it

    if node.plugin_rules_may_be_here():
        return False
    return left_as_the_plugin_leaves_it(node.options.families)


def _unplaced(node: Node, followed: Followed, read: NodeTables) -> Followed:
    """`followed`, where the kernel holds the plugin's tables, their host-port chains
    may hold rules (netlink), and nft cannot read them, with the cache entries without
    a `backend` key whose chain is in no iptables (either flavour): a container kept in
    nftables (its rules there alone: ops/nft.py split, which is followed) cannot be
    told from one whose chain is gone. Judged from the unread tables as none, each was
    `missing-chain` and --repair wrote an iptables copy beside its nftables rules.
    Under --backend auto the check stops for them, as for the cached "nftables"
    entries then (NftUnusable.needed_by, exit 3, naming --backend iptables); under
    --backend iptables they are in doubt (`unplaced`: their problems name no fix,
    --repair writes nothing for them, the rest of the node is done). Cheap where there
    are none: nothing more is read."""
    if not node.options.reads_iptables or node.options.offline:
        return followed  # (--backend nftables: a keyless entry without rules there is iptables')
    families = set(read.tables)
    keyless = [
        a
        for a in followed.attachments or ()
        if a.mapping is not None
        and a.mapping.backend is None
        and not a.zombie  # (nothing is expected of it)
        and families & set(a.mapping.families)
    ]
    if not keyless:
        return followed
    held = _chains_read(read, {a.dnat_chain for a in keyless})
    chainless = [a for a in keyless if a.dnat_chain not in held]
    if not chainless:
        return followed
    _live, unread = _tables_to_judge_by(node, read)
    # (Host-port chains with no rule: no container is kept there, v1.9.1's DEL of its
    # last one leaves them so on a node gone back to iptables; a missing chain is one.)
    if unread is None or not node.plugin_rules_may_be_here():
        return followed
    if node.nft is not None:
        keyed = [
            a.container_id
            for a in followed.attachments or ()
            if a.mapping is not None and a.mapping.backend == Backend.NFTABLES
        ]
        raise unread.needed_by(keyed, unplaced=[a.container_id for a in chainless])
    return replace(followed, unplaced=tuple(chainless), unread=str(unread))


def _tables_to_judge_by(node: Node, read: NodeTables) -> Tuple[Ruleset, Optional[NftUnusable]]:
    """The plugin's nftables tables that follow_the_plugin judges the keys by (as check
    read them, else read for it), and nft's error where the kernel holds them and nft
    cannot read them (None: read, or there are none): they read as none then."""
    from portmapctl.nftables.access import NftUnusable
    from portmapctl.nftables.ruleset import EMPTY

    if read.nft_live is not None:
        return read.nft_live, node.nft_unusable  # (set only where the tables are here)
    try:
        return node.read_nft_evidence(strict=True), None
    except NftUnusable as err:
        return EMPTY, err


def _chains_read(read: NodeTables, names: Set[str]) -> Dict[str, str]:
    """Those of `names` in the tables check read, each with where (as
    followed.chains_in_iptables says it): the flavour used first."""
    from portmapctl.ops.check.followed import chains_in_tables

    other_of = {family: other for family, (_used, other) in (read.flavours or {}).items()}
    return chains_in_tables(names, read.tables.values(), read.other_tables, other_of)
