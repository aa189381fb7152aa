"""The nftables side of the commands: which cached containers are nft-backed, and the
inventory of the plugin's `cni_hostport` tables next to the iptables one.

Per container, as the plugin decides (nftables/node.py `choose`): the cached config's
`backend` key; without one, nftables when only nftables holds its rules; else iptables.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, replace
from enum import Enum
from typing import Callable, Collection, Dict, List, Optional, Sequence, Set, Tuple, Type

from portmapctl.cni.cache import Attachment
from portmapctl.core.backend import Backend
from portmapctl.core.mapping import MappingConfig
from portmapctl.core.text import count, name_text
from portmapctl.errors import HostProblem
from portmapctl.nftables import inventory as nft_inventory
from portmapctl.nftables.inventory import NftInventory, Owner
from portmapctl.nftables.node import choose, owners_in
from portmapctl.nftables.ruleset import Ruleset
from portmapctl.ops.nft_words import doubt_text, in_doubt_text
from portmapctl.ops.node import Node


@dataclass(frozen=True)
class Split:
    """Cached attachments by the backend that holds them."""

    iptables: Tuple[Attachment, ...]
    nftables: Tuple[Attachment, ...]
    both: Tuple[str, ...]  # container IDs with rules in both backends

    @property
    def expected(self) -> Tuple[Attachment, ...]:
        """The nft-backed attachments whose rules must be there, as the plugin's ADD
        wrote them: what check compares and --repair makes, from this one list. As on
        the iptables side (check/expected.py cached_configs), a zombie's are not
        expected: its container is gone, so it is reported, never re-created."""
        return tuple(a for a in self.nftables if a.mapping is not None and not a.zombie)


def split(
    attachments: Optional[Sequence[Attachment]],
    nft_live: Ruleset,
    iptables_owners: Collection[str],
    keyless: Backend = Backend.IPTABLES,
) -> Split:
    """`keyless`: the backend the plugin takes on this node for a config without a
    `backend` key (NodeOptions.keyless). --backend narrows only what is looked at: a
    container without the key whose rules are not in nftables is iptables' (the plugin
    takes iptables wherever iptables works) even under --backend nftables, where no
    iptables is read, so check never expects, nor --repair writes, nftables rules for
    it."""
    nft_owners = owners_in(nft_live)
    targets = _dnat_targets(nft_live)
    default = Backend(keyless)
    ipt: List[Attachment] = []
    nft: List[Attachment] = []
    ipt_ids: Set[str] = set()
    for attachment in attachments or ():
        cid = attachment.container_id
        configured = attachment.mapping.backend if attachment.mapping is not None else None
        # The evidence is the attachment's own: its network's chain (by its name, where
        # the caller gives chain names), and nftables rules DNATing to its address (they
        # name no network: a container on two networks, one per backend, must not make
        # the other network's attachment look nft-backed).
        in_ipt = attachment.dnat_chain in iptables_owners or cid in iptables_owners
        in_nft = cid in nft_owners and _dnats_to(attachment, targets.get(cid))
        chosen = choose(configured, cid, {cid} if in_nft else (), {cid} if in_ipt else (), default)
        (nft if chosen is Backend.NFTABLES else ipt).append(attachment)
        if in_ipt:
            ipt_ids.add(cid)
    both = sorted(set(nft_owners) & ipt_ids)
    return Split(tuple(ipt), tuple(nft), tuple(both))


def key_ignored(
    attachments: Sequence[Attachment], iptables_chains: Collection[str], nft_live: Ruleset
) -> List[Attachment]:
    """The cache entries whose config says `"backend": "nftables"` and whose plugin
    wrote them in iptables all the same: their network's chain is there (by name, in
    `iptables_chains`) and their container has no rule in the plugin's nftables tables
    that DNATs to their address, where that absence says so (absence_tells: no such
    table of theirs, or one as the plugin leaves it).

    Debian's 1.1.1, as every plugin before v1.6, takes `backend` for an unknown key. Its
    CHECK and DEL look in iptables alone: judged by the key, such a container was
    `nft-missing-*` on every run, and a repair wrote a copy its plugin never deletes."""
    return key_judged(attachments, iptables_chains, nft_live).ignored


@dataclass(frozen=True)
class KeyJudged:
    """key_judged's answer: the entries whose plugin ignored their key "nftables"
    (`ignored`), and those of which that cannot be told (`in_doubt`)."""

    ignored: List[Attachment]
    in_doubt: List[Attachment]


def key_judged(
    attachments: Sequence[Attachment], iptables_chains: Collection[str], nft_live: Ruleset
) -> KeyJudged:
    """key_ignored, and beside it the entries whose chain is in iptables with no rule
    in nftables where the plugin's table of their family is here but not as any
    plugin leaves it (a firewall's `nft flush table`): a v1.6+ plugin's rules, and
    the jumps to them, are gone from it as well, so the absence tells nothing of which
    plugin added them; the iptables chain may be an older plugin's leaked copy."""
    candidates = [
        a
        for a in attachments
        if a.mapping is not None
        and a.mapping.backend == Backend.NFTABLES
        and a.dnat_chain in iptables_chains
    ]
    if not candidates:
        return KeyJudged([], [])
    # As split() judges: rules of the container that DNAT to this entry's address (a
    # container on two networks, the other one added by v1.9.1 in nftables, has rules
    # there that are not this network's).
    in_nft, targets = owners_in(nft_live), _dnat_targets(nft_live)
    verdicts = [(a, _verdict(a.mapping, nft_live, in_nft, targets)) for a in candidates]
    return KeyJudged(
        [a for a, said in verdicts if said is KeyVerdict.IGNORED],
        [a for a, said in verdicts if said is KeyVerdict.IN_DOUBT],
    )


class KeyVerdict(Enum):
    """What the plugin that added a container did with its config's `"backend":
    "nftables"`, its chain being in iptables (key_verdict)."""

    HONOURED = "honoured"  # its rules are in nftables: v1.6 on, kept there
    IGNORED = "ignored"  # none, and that absence tells: before v1.6, kept in iptables
    IN_DOUBT = "in doubt"  # none, in a table not as a plugin leaves it: cannot be told


def key_verdict(config: MappingConfig, nft_live: Ruleset) -> KeyVerdict:
    """key_judged for one mapping given on the command line (check of one mapping and
    its --repair, add) whose chain is in iptables: the same question, the same answer
    as the node's check gives its cache entry."""
    return _verdict(config, nft_live, owners_in(nft_live), _dnat_targets(nft_live))


def key_ignored_in(
    config: MappingConfig,
    live: Optional[Ruleset],
    where: str,
    said: Callable[[], str],
    stop: Type[HostProblem] = HostProblem,
) -> bool:
    """Whether the plugin that added a mapping given on the command line (add, check
    of one mapping and its --repair), its config saying `"backend": "nftables"` and
    its chain in iptables (`where`: ChainPlace.words), ignored the key: key_verdict of
    the plugin's tables as read strictly (`live`; None: there are none, and the absence
    tells). Where that cannot be told (the plugin's table here but flushed: a v1.6+
    plugin's rules went with it), `stop` with in_doubt_text (`said()`: where its key
    was read), exit 3, nothing written: taken for the key ignored, the iptables entry
    rule went in, which a v1.9.1 plugin never reads; taken for it honoured, the
    nftables rules would be a copy an older plugin never deletes."""
    if live is None:
        return True  # (no table of its families: the absence tells)
    verdict = key_verdict(config, live)
    if verdict is KeyVerdict.IN_DOUBT:
        raise stop(in_doubt_text(config, said(), where))
    return verdict is KeyVerdict.IGNORED


def _verdict(
    config: Optional[MappingConfig],
    nft_live: Ruleset,
    owners: Collection[str],
    targets: Dict[str, Set[str]],
) -> KeyVerdict:
    if _rules_of(config, owners, targets):
        return KeyVerdict.HONOURED
    return KeyVerdict.IGNORED if absence_tells(config, nft_live) else KeyVerdict.IN_DOUBT


def absence_tells(config: Optional[MappingConfig], live: Ruleset) -> bool:
    """Whether no rule of `config`'s container in the plugin's nftables tables says
    that its plugin never wrote there: for each family of its addresses, no
    `cni_hostport` table (a v1.6+ ADD given the key makes it, and no DEL removes it),
    or one as a v1.6+ ADD leaves it and no DEL undoes (FACTS: its chains, but
    masquerading, which only an ADD with SNAT on makes; prerouting and output jumping
    to the host-port rules, hostports_all's two jumps where v1.9 made it). A table that lost those (flushed) lost that plugin's rules too."""
    from portmapctl.nftables import ruleset as rs
    from portmapctl.nftables.layout import entry_ok, hostports_all_ok

    if config is None:
        return True
    # (hostports_all: v1.9 on; its absence is v1.6/v1.7's layout. masquerading: made
    # only by an ADD with SNAT on, so a node whose ADDs all had `"snat": false` has none.)
    made = rs.PLUGIN_CHAINS - {rs.HOSTPORTS_ALL, rs.MASQUERADING}
    for family in config.families:
        table = live.table(family)
        if table is None:
            continue
        if not made <= set(table.chains):
            return False
        if not all(entry_ok(table, chain) for chain in (rs.PREROUTING, rs.OUTPUT)):
            return False
        if rs.HOSTPORTS_ALL in table.chains and not hostports_all_ok(table, copies_ok=True):
            return False
    return True


def left_as_the_plugin_leaves_it(families: Sequence[int]) -> bool:
    """absence_tells' test of the plugin's `cni_hostport` tables, asked over netlink
    where nft cannot read them (ops/check/followed_entries.py _follow_keys): in each of
    `families`, no table, or one with the chains a v1.6+ ADD makes (but masquerading and
    hostports_all), prerouting and output each jumping to hostports_all or to both
    host-port chains, and hostports_all, where there, jumping to both. (Jump targets
    alone: a table a flush emptied has none.) False where that cannot be told."""
    from portmapctl.iptables.access import nfgen
    from portmapctl.iptables.access.nfmsg import Changed, dump_chain, table_chains
    from portmapctl.nftables import TABLE
    from portmapctl.nftables import ruleset as rs

    made = rs.PLUGIN_CHAINS - {rs.HOSTPORTS_ALL, rs.MASQUERADING}
    both = {rs.HOSTPORTS, rs.HOSTIP_HOSTPORTS}
    try:
        with nfgen.open_socket() as sock:
            for family in families:
                if table_chains(sock, family, TABLE) == 0:
                    continue
                targets = {
                    chain: {rule.target() for rule in dump_chain(sock, family, TABLE, chain)}
                    for chain in made
                }  # (OSError ENOENT: a chain the plugin makes is not there)
                for chain in (rs.PREROUTING, rs.OUTPUT):
                    if rs.HOSTPORTS_ALL not in targets[chain] and not both <= targets[chain]:
                        return False
                try:
                    alls = {
                        rule.target() for rule in dump_chain(sock, family, TABLE, rs.HOSTPORTS_ALL)
                    }
                except OSError as err:
                    if err.errno != errno.ENOENT:
                        raise
                    continue  # (v1.6/v1.7's layout)
                if not both <= alls:
                    return False
    except (OSError, Changed):
        return False
    return True


def nothing_left(
    attachments: Sequence[Attachment],
    iptables_chains: Collection[str],
    live: Ruleset,
    judged: KeyJudged,
    iptables_sign: Optional[str],
) -> Dict[str, str]:
    """By path, with why (gone_text's), the cache entries whose config says `"backend":
    "nftables"` of which nothing is left (no chain in `iptables_chains`, no rule in the
    plugin's nftables tables that DNATs to their address: a firewall took it all) and
    of which nothing on the node tells that their plugin honours the key. Judged by the
    key, they were repaired into nftables, where a plugin before v1.6 (Debian's 1.1.1,
    which keeps them in iptables) never looks: its DEL leaves that copy, its next ADD
    makes a second one in iptables. In doubt (nothing written for them) where the
    node's other entries cached so are kept in iptables (`judged`: key_judged's
    ignored or in doubt); not where one of them has its rules in nftables (the plugin
    here honours the key), where a `cni_hostport` table of their family is here (only
    a v1.6+ ADD given the key makes it, no DEL removes it), or where nothing of
    iptables is here (`iptables_sign` None: no CNI-HOSTPORT-DNAT, which every iptables
    ADD makes and no DEL removes, and no nat table a firewall could have flushed it
    from: the plugin's tables of a v1.6+ node dropped by `nft flush ruleset`, repaired
    there). `iptables_sign`: what says iptables may hold them (CNI-HOSTPORT-DNAT, or a
    nat table without it: a firewall's reload of iptables, `iptables-restore` of its
    own file, takes CNI-HOSTPORT-DNAT with the chains, and was taken for a v1.6+
    node's, deb1 written to nftables)."""
    owners, targets = owners_in(live), _dnat_targets(live)
    keyed = _keyed(attachments)
    gone = nothing_of(attachments, iptables_chains, live)
    if not gone:
        return {}
    unheld = sorted(
        {f"{name_text(a.network)}/{name_text(a.container_id)}"
         for a in (*judged.ignored, *judged.in_doubt)}
    )  # fmt: skip
    if unheld:
        shown = ", ".join(unheld[:3]) + (", ..." if len(unheld) > 3 else "")
        why = (
            f"{count(len(unheld), 'other container')} cached so"
            f" {'has its' if len(unheld) == 1 else 'have their'} chain in iptables and"
            f" no rule in nftables ({shown}): the plugin here may ignore the key"
        )
        return {a.path: why for a in gone}
    if iptables_sign is None or any(_rules_of(a.mapping, owners, targets) for a in keyed):
        return {}
    why = (
        "nothing on the node tells that its plugin honours the key (no other container"
        f" cached so has rules in nftables, no plugin table of its family is there, and"
        f" {iptables_sign})"
    )
    return {
        a.path: why
        for a in gone
        if not any(live.table(family) is not None for family in a.mapping.families)  # type: ignore[union-attr]
    }


def nothing_of(
    attachments: Sequence[Attachment], iptables_chains: Collection[str], live: Ruleset
) -> List[Attachment]:
    """The cache entries whose config says `"backend": "nftables"` of which nothing is
    left (nothing_left's: no chain in `iptables_chains`, no rule in nftables that DNATs
    to their address), whatever tells their backend."""
    owners, targets = owners_in(live), _dnat_targets(live)
    return [
        a
        for a in _keyed(attachments)
        if a.dnat_chain not in iptables_chains and not _rules_of(a.mapping, owners, targets)
    ]


def honoured_here(attachment: Attachment, attachments: Sequence[Attachment], live: Ruleset) -> bool:
    """Whether the node's rules tell that a plugin honoured the key "nftables" here, as
    nothing_left takes it (the strong evidence, which a plugin binary read never
    overrides): a `cni_hostport` table of `attachment`'s family (only a v1.6+ ADD given
    the key makes it), or another entry cached so with its rules in nftables."""
    owners, targets = owners_in(live), _dnat_targets(live)
    config = attachment.mapping
    if config is not None and any(live.table(f) is not None for f in config.families):
        return True
    return any(_rules_of(a.mapping, owners, targets) for a in _keyed(attachments))


def _keyed(attachments: Sequence[Attachment]) -> List[Attachment]:
    return [
        a
        for a in attachments
        if a.mapping is not None and a.mapping.backend == Backend.NFTABLES and not a.zombie
    ]


def unread_key_verdict(
    config: MappingConfig,
    unread: str,
    where: Optional[str],
    live: Optional[Ruleset],
    stop: Type[HostProblem] = HostProblem,
) -> Backend:
    """The backend the plugin keeps a container in whose own cache entry cannot be read
    (`unread`: why; cni/cache.py CachedKey), for a mapping given without a backend (add,
    check of one mapping and its --repair): its key, which its ADD and DEL were given,
    is not known, so only what its plugin left decides. Its chain in iptables (`where`:
    ChainPlace.words) and no rule of it in nftables, where that absence tells
    (absence_tells): iptables, whatever the key (a key "nftables" there is one its
    plugin ignored); its rules in nftables (`live`: the plugin's tables as read
    strictly; None: there are none) and no chain: nftables, whatever the key (a plugin
    writes there only by the key, or on a node then without iptables). Else (nothing of it anywhere, both, a
    flushed table) `stop`, exit 3, nothing written: taken for iptables, the plugin's
    default, the add or repair wrote a copy where a plugin given "nftables" never looks."""
    in_nft = live is not None and has_rules_for(config, live)
    if where is not None and not in_nft and (live is None or absence_tells(config, live)):
        return Backend.IPTABLES
    if in_nft and where is None:
        return Backend.NFTABLES
    if where is None:
        chain = "is in no iptables and " + ("it has rules" if in_nft else "no rule of it is")
        chain += " in nftables"
    elif in_nft:
        chain = f"is in {where} and it has rules in nftables too"
    else:
        chain = (
            f"is in {where} and it has no rule in nftables, where the plugin's table is here"
            " but not as the plugin leaves it (flushed?)"
        )
    said = (
        f"{name_text(config.network)}/{name_text(config.container_id)}: its CNI cache entry"
        f" cannot be read ({unread})"
    )
    raise stop(
        doubt_text(
            config,
            said,
            chain,
            "its plugin keeps it in iptables or in nftables",
            "give --backend iptables or --backend nftables to say which, or mend the entry",
        )
    )


def has_rules_for(config: MappingConfig, live: Ruleset) -> bool:
    """Whether the container has rules in the plugin's nftables tables that are this
    config's: they DNAT to one of its addresses (key_ignored's test, for one mapping)."""
    return _rules_of(config, owners_in(live), _dnat_targets(live))


def all_have_rules(configs: Sequence[MappingConfig], live: Ruleset) -> bool:
    """has_rules_for of each of `configs`, `live` indexed once."""
    owners, targets = owners_in(live), _dnat_targets(live)
    return all(_rules_of(config, owners, targets) for config in configs)


def _rules_of(
    config: Optional[MappingConfig], owners: Collection[str], targets: Dict[str, Set[str]]
) -> bool:
    return (
        config is not None
        and config.container_id in owners
        and _to_one_of(config, targets.get(config.container_id))
    )


def judged_in_iptables(
    attachments: Sequence[Attachment], ignored: Collection[Attachment]
) -> List[Attachment]:
    """`attachments` with key_ignored's entries taken as the iptables backend's, where
    their plugin keeps them."""
    paths = {a.path for a in ignored}
    return [
        replace(a, mapping=replace(a.mapping, backend=Backend.IPTABLES))
        if a.path in paths and a.mapping is not None
        else a
        for a in attachments
    ]


def _dnat_targets(live: Ruleset) -> Dict[str, Set[str]]:
    """container ID -> the addresses its nftables DNAT rules send to."""
    from portmapctl.nftables.ruleset import CONTAINER_CHAINS, ActionKind

    found: Dict[str, Set[str]] = {}
    for table in live.tables.values():
        for chain in CONTAINER_CHAINS:
            for rule in table.rules_of(chain):
                action = rule.body.action
                if rule.comment and action.kind is ActionKind.DNAT and action.addr:
                    found.setdefault(rule.comment, set()).add(action.addr)
    return found


def _dnats_to(attachment: Attachment, targets: Optional[Set[str]]) -> bool:
    """Whether the container's nftables rules are this attachment's: they DNAT to one
    of its addresses (no DNAT rule, or no address known: they are taken as its)."""
    return _to_one_of(attachment.mapping, targets)


def _to_one_of(config: Optional[MappingConfig], targets: Optional[Set[str]]) -> bool:
    if not targets or config is None or not config.addresses:
        return True
    return any(a.ip.compressed in targets for a in config.addresses)


def kept_in_nftables(
    config: MappingConfig,
    live: Ruleset,
    in_iptables: Callable[[], bool],
    keyless: Backend = Backend.IPTABLES,
) -> bool:
    """For a mapping given without a `backend` key (add, a one-mapping check and its
    --repair, under --backend auto): whether the plugin keeps its container in
    nftables, by the rule a cached container is followed by (`choose`): its rules are
    in the plugin's tables, DNATing to one of its addresses, and `in_iptables()` (asked
    only then) finds no chain of it there. Such a mapping is checked, repaired and added
    there: written to iptables too, the container would be mapped in both backends, one
    of them where the plugin's DEL for it never looks."""
    cid = config.container_id
    if not has_rules_for(config, live):
        return False
    in_ipt = {cid} if in_iptables() else set()
    return choose(None, cid, {cid}, in_ipt, Backend(keyless)) is Backend.NFTABLES


def owners(attachments: Optional[Sequence[Attachment]]) -> Optional[List[Owner]]:
    if attachments is None:
        return None
    return [Owner(a.network, a.container_id, a.mapping, a.zombie) for a in attachments]


def build(
    node: Node,
    attachments: Optional[Sequence[Attachment]],
    iptables_owners: Set[str],
    *,
    problems: bool = True,
    live: Optional[Ruleset] = None,
) -> Tuple[Ruleset, Split, NftInventory]:
    """Read nftables (unless `live` was read already); split the cache by backend; the
    nftables inventory (with its problems unless told otherwise)."""
    if live is None:
        live = node.read_nft()
    parts = split(attachments, live, iptables_owners, node.options.keyless)
    # nft_backed: compared with what the plugin would write, only for the problems.
    backed = parts.expected if problems else ()
    found = nft_inventory.build(
        live,
        owners(attachments),
        nft_backed=[Owner(a.network, a.container_id, a.mapping, a.zombie) for a in backed],
        problems=problems,
    )
    return live, parts, found


def backends_read(node: Node, iptables_families: Sequence[int]) -> Dict[str, Tuple[int, ...]]:
    """The plugin's backends a command's read of `node` covered, with their families
    (for --metrics-file: counts are zero-filled only where something was looked at)."""
    options = node.options
    found: Dict[str, Tuple[int, ...]] = {}
    if options.reads_iptables:
        found[Backend.IPTABLES] = tuple(iptables_families)
    if node.nft is not None and node.nft_unusable is None:
        found[Backend.NFTABLES] = tuple(options.families)
    return found
