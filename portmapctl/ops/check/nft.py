"""check over the plugin's nftables backend.

Containers are split by backend as the plugin chooses (ops/nft.py); the nft-backed
ones are compared with what upstream v1.9.1's ADD writes (nftables/inventory.py).
Their repair, one `nft -f` transaction, is ops/check/nft_repair.py (one mapping's:
ops/check/nft_repair_one.py); a container with rules in both backends is judged by
ops/check/both_backends.py, and one mapping given on the command line by
ops/check/nft_one.py.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import (
    TYPE_CHECKING,
    Collection,
    Dict,
    FrozenSet,
    Iterable,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Set,
    Tuple,
)
from typing import Mapping as ReadOnly

from portmapctl.cni.cache import Attachment, added_at
from portmapctl.core.backend import Backend
from portmapctl.core.mapping import Mapping, MappingConfig
from portmapctl.core.status import ProblemKind, Status
from portmapctl.core.text import count, name_text
from portmapctl.iptables.ruleset import NatTable
from portmapctl.nftables import FAMILY_NAMES
from portmapctl.nftables.ruleset import MASQUERADING, TABLE
from portmapctl.ops.check.hints import Fixes
from portmapctl.ops.check.problem import Problem
from portmapctl.ops.check.unexpected import unexpected_nft
from portmapctl.ops.node import Node

if TYPE_CHECKING:
    from portmapctl.nftables.inventory import Foreign, NftInventory, NftMapping
    from portmapctl.nftables.problems import Problem as InventoryProblem
    from portmapctl.nftables.ruleset import Rule, Ruleset
    from portmapctl.ops.nft import Split

STALE = ProblemKind.STALE.value
SHADOWED = ProblemKind.SHADOWED.value
INCOMPLETE = ProblemKind.INCOMPLETE.value


NFT_WHY = {
    ProblemKind.NFT_MISSING_TABLE: "without the table no nft-backed host port is forwarded",
    ProblemKind.NFT_MISSING_CHAIN: "the plugin's rules have nowhere to live, or are never reached",
    ProblemKind.NFT_MISSING_ENTRY: "prerouting/output no longer send traffic to the"
    " host-port rules",
    ProblemKind.NFT_MISSING_JUMPS: "hostports_all no longer reaches the host-port rules",
    ProblemKind.NFT_ENTRY_NOT_LOCAL: "traffic routed through this node to another host on a"
    " mapped port is DNATed to a container (an older plugin's ADD ran after v1.9's; the next"
    " v1.6/v1.7 ADD writes that entry again: run one plugin version on the node)",
    # (Also the host-IP rules v1.6/v1.7 left in hostip_hostports once v1.9 has run:
    # layout.upgraded. They forward; only the CHECK fails, so the line says both.)
    ProblemKind.NFT_MISSING_RULES: "a cached container's rules are not where the plugin's"
    " CHECK counts them: lost ones leave its host ports not forwarded; those v1.6/v1.7 left"
    " in hostip_hostports on a node v1.9 has run still forward, but that CHECK fails",
    ProblemKind.EXTRA_RULES: "the container's rules do not match its config (an old address or"
    " port?): nftables is first-match-wins, so traffic may go to the wrong place",
    ProblemKind.NFT_UNCLAIMED_RULES: "the plugin marks its nftables rules with the bare"
    " container ID, so these may be the container's mapping on another network whose cache"
    " entry is not read here (unreadable, in a cache directory not given, or not written yet:"
    " libcni writes it after the ADD); --repair leaves them",
    ProblemKind.DUPLICATE_ENTRY: "every packet walks each copy; the plugin's ADD flushes"
    " these chains before it writes them, so a script or a hand wrote the copy",
    ProblemKind.NFT_WRONG_BASE_CHAIN: "the plugin's ADD of every new container fails on a"
    " chain of another type, hook or priority (Operation not supported); a policy drop drops"
    " the traffic no rule of the table takes",
}


def iptables_owners(
    tables: ReadOnly[int, NatTable], attachments: Optional[Sequence[Attachment]]
) -> set:
    """The CNI-DN- chains of cached containers that are in iptables (by name: the
    evidence of each cached network, ops/nft.py split)."""
    return {
        a.dnat_chain
        for a in attachments or ()
        if any(t.has_chain(a.dnat_chain) for t in tables.values())
    }


def nft_backed_unread(
    node: Node, tables: ReadOnly[int, NatTable], attachments: Optional[Sequence[Attachment]]
) -> List[Attachment]:
    """The nft-backed cache entries where nftables is not looked at, judged as a plain
    check judges them (ops/nft.py split): by their `backend` key, else by evidence --
    under --backend iptables nftables is still read for that (Node.read_nft_evidence),
    so a keyless container whose rules are in nftables alone is never called
    missing-chain, nor given an iptables chain by --repair (its ports mapped twice, in
    a backend its plugin's DEL never looks at)."""
    if not attachments:
        return []
    live = node.read_nft_evidence()
    if not live.tables:
        # No plugin table: only a `backend` key makes an entry nftables' (and ops.nft
        # need not be imported).
        return [
            a
            for a in attachments
            if a.mapping is not None and a.mapping.backend == Backend.NFTABLES
        ]
    from portmapctl.ops import nft

    owners = iptables_owners(tables, attachments)
    return list(nft.split(attachments, live, owners, node.options.keyless).nftables)


def configured_nft(attachments: Optional[Sequence[Attachment]]) -> set:
    """IDs of cached containers whose config says `"backend": "nftables"`."""
    return {
        a.container_id
        for a in attachments or ()
        if a.mapping is not None and a.mapping.backend == Backend.NFTABLES
    }


class Held(NamedTuple):
    """What a stale row of a container gives in one family: the chain (`nft:CHAIN`)
    and the rules at issue."""

    chain: str
    rules: Tuple[str, ...]


def held_rules(
    live: Ruleset, found: NftInventory, ids: Collection[str]
) -> Dict[str, Dict[int, Held]]:
    """By container (of `ids`) and family, what a stale row of it gives (nft_problems,
    _leftover_problems): its first DNAT row's chain and rule, else, with no DNAT rule
    left, its masquerade rules."""
    held: Dict[str, Dict[int, Held]] = {}
    if not ids:
        return held
    rules = rules_by_handle(live)
    for m in found.mappings:
        if m.container_id in ids and m.family not in held.get(m.container_id, {}):
            held.setdefault(m.container_id, {})[m.family] = Held(
                f"nft:{m.chain}", rule_text(rules, m)
            )
    from portmapctl.nftables.inventory import leftovers

    for left in leftovers(live):
        if left.container_id in ids:
            texts = tuple(r.body.text(left.family) for r in left.rules)
            held.setdefault(left.container_id, {}).setdefault(
                left.family, Held(f"nft:{MASQUERADING}", texts)
            )
    return held


class NftCheck(NamedTuple):
    problems: List[Problem]
    nft_ids: Set[str]  # IDs of nft-backed containers
    compared: int  # (container, family) pairs compared with the tables
    notes: List[str]
    found: Optional[NftInventory]  # the rows read (None: nftables not looked at)
    # IDs with a rule left in the plugin's tables (what gc can remove); None: not read.
    owners: Optional[Set[str]] = None
    # (network, ID) of the nft-backed cache entries: nothing of them is expected in
    # iptables. By entry, not ID: a container on two networks may have one per backend.
    nft_keys: FrozenSet[Tuple[str, str]] = frozenset()
    # The zombies' rules left, by ID and family, as a stale row gives them (held_rules):
    # what their rows give (diagnose's zombies); the owner IDs alone tell no rule.
    held: ReadOnly[str, ReadOnly[int, Held]] = MappingProxyType({})


def _keys(attachments: Iterable[Attachment]) -> FrozenSet[Tuple[str, str]]:
    return frozenset((a.network, a.container_id) for a in attachments)


def nft_problems(
    node: Node,
    tables: ReadOnly[int, NatTable],
    attachments: Optional[Sequence[Attachment]],
    fixes: Fixes,
    live: Optional[Ruleset] = None,
    ipt_rows: Sequence[Mapping] = (),
) -> NftCheck:
    """nftables' part of a node check; `live`: the tables as read already (else read
    here); `ipt_rows`: the iptables inventory's rows (with no CNI cache, a container
    whose copies in both backends DNAT to one address is `both-backends` by them)."""
    if node.nft is None:
        # nftables not looked at (--backend iptables, iptables dumps only): nothing of
        # it is checked, and nothing of the containers it holds is expected in iptables.
        backed = nft_backed_unread(node, tables, attachments)
        ids = {a.container_id for a in backed}
        notes = []
        if ids and node.options.backend == Backend.IPTABLES:
            why = "their config's backend key, or their rules are in nftables alone"
            notes.append(_not_checked(Backend.IPTABLES, len(ids), Backend.NFTABLES, why))
        return NftCheck([], ids, 0, notes, None, nft_keys=_keys(backed))
    if live is None:
        live = node.read_nft()
    if (
        not live.tables
        and node.options.backend != Backend.NFTABLES
        and not configured_nft(attachments)
    ):
        # No plugin table and no container that belongs in one: nothing is nft-backed,
        # nothing can be missing, stale, shadowed or left over (what the full pass below
        # finds too, tests/unit/test_check_nft_empty.py), and the nftables inventory
        # and planner modules need not be imported (a tenth of an iptables node's check).
        return NftCheck([], set(), 0, [], None)
    from portmapctl.ops import nft
    from portmapctl.ops.check.both_backends import both_backends, both_backends_uncached

    live, parts, found = nft.build(
        node, attachments, iptables_owners(tables, attachments), live=live
    )
    nft_ids = {a.container_id for a in parts.nftables}
    if node.nft_unusable is not None:
        if parts.nftables:
            # nft state is needed and cannot be read
            raise node.nft_unusable.needed_by(a.container_id for a in parts.nftables)
        return NftCheck([], nft_ids, 0, [], None, nft_keys=_keys(parts.nftables))
    needed = [a.container_id for a in parts.nftables if not a.zombie]
    if node.nft_absent is not None and needed:
        # No plugin table, and no nft: their rules are nowhere, and neither --repair
        # nor the plugin can write them here. Said before anything is done (a repair
        # rewrote the iptables containers, then stopped on nft, none of it reported).
        # A zombie's are never written: it is reported as one, nft or not.
        raise node.nft_absent.needed_by(needed)
    problems = [
        # (With no CNI cache, --repair leaves nftables alone: nft_repair.)
        as_problem(
            p,
            "" if attachments is None and p.kind is ProblemKind.DUPLICATE_ENTRY else fixes.repair,
        )
        for p in found.problems
        if not node.options.families or p.family in node.options.families
    ]
    from portmapctl.ops.check.nft_refused import refused_left
    from portmapctl.ops.check.nft_table_rows import unwanted_left

    # As the repair judges them (nft_repair: what it compares against, in ADD order):
    # what it leaves for conditions it refuses names no fix, else each run offered it.
    in_add_order = [a for a in sorted(parts.expected, key=added_at) if a.mapping is not None]
    problems = refused_left(problems, in_add_order, node.options.families)
    problems = unwanted_left(problems, attachments, parts.nftables)
    seen_stale: Set[Tuple[Optional[str], int]] = set()
    rules = rules_by_handle(live)
    foreign = {(f.family, f.label): f for f in found.foreign}
    for m in found.mappings:
        if Status.STALE in m.status and (m.container_id, m.family) not in seen_stale:
            seen_stale.add((m.container_id, m.family))
            problems.append(
                Problem(
                    STALE,
                    m.family,
                    f"nft:{m.chain}",
                    None,
                    m.container_id,
                    "nftables rules of a container the CNI cache does not know",
                    fixes.gc,
                    "the container is gone but its host ports stay taken: a new container on"
                    " them gets no traffic",
                    rule_text(rules, m),
                )
            )
        if Status.SHADOWED in m.status:
            problems.append(shadow_problem(m, found, foreign, rules, fixes))
    problems += _leftover_problems(node, live, parts, attachments, fixes, seen_stale)
    compared_ids = {a.container_id for a in parts.expected}
    problems += unexpected_nft(
        found.mappings, live, attachments or (), {*parts.both, *compared_ids},
        node.options.families,
    )  # fmt: skip
    for cid in parts.both:
        problem = both_backends(cid, tables, live, parts, fixes)
        if problem is not None:
            problems.append(problem)
    if attachments is None:
        problems += both_backends_uncached(tables, live, found.mappings, ipt_rows)
    compared = sum(len(a.mapping.families) for a in parts.expected if a.mapping is not None)
    from portmapctl.nftables.node import owners_in

    notes = _foreign_notes(node, found) + _keyless_notes(node, parts)
    # --backend nftables reads no iptables: the containers the plugin keeps there are
    # not judged (run.py), as --backend iptables says of nftables' above.
    iptables_ids = {a.container_id for a in parts.iptables} - nft_ids
    if iptables_ids and node.options.backend == Backend.NFTABLES:
        why = "their config's backend key, or no rules of theirs in nftables"
        notes.append(_not_checked(Backend.NFTABLES, len(iptables_ids), Backend.IPTABLES, why))
    zombies = {a.container_id for a in attachments or () if a.zombie}
    return NftCheck(
        problems, nft_ids, compared, notes, found, owners_in(live), _keys(parts.nftables),
        held_rules(live, found, zombies),
    )  # fmt: skip


def shadow_problem(
    m: NftMapping,
    found: NftInventory,
    foreign: ReadOnly[Tuple[int, str], Foreign],
    rules: ReadOnly[Tuple[int, int], Rule],
    fixes: Fixes,
) -> Problem:
    """The `shadowed` problem of a row an earlier rule in the plugin's chains takes
    (`foreign`: the rules there that are not the plugin's, by family and label): its
    fix removes the winner when that is stale or a zombie."""
    winner_status = {
        word
        for w in found.mappings
        if w.family == m.family and w.container_id == m.shadowed_by
        for word in w.status
    }
    alien = foreign.get((m.family, m.shadowed_by or ""))
    if alien is not None:
        # No command of ours may delete a rule that is not the plugin's.
        shadow_fix = (
            f"a rule that is not the plugin's ({alien.text}) takes the port first:"
            " delete it, or re-create the container with another host port"
        )
    elif Status.STALE in winner_status:
        shadow_fix = f"{fixes.gc} (the winner is stale)"
    elif Status.ZOMBIE in winner_status:
        # A pod sandbox the runtime forgot keeps the port from its successor.
        shadow_fix = f"{fixes.gc} --netns-liveness (the winner is a zombie)"
    else:
        shadow_fix = (
            "two containers claim one host port: re-create one of them with another host port"
        )
    return Problem(
        SHADOWED,
        m.family,
        f"nft:{m.chain}",
        m.network,
        m.container_id,
        f"{m.protocol}/{m.host_port} goes to {m.shadowed_by} first",
        shadow_fix,
        "nftables is first-match-wins: this mapping gets no traffic",
        rule_text(rules, m),
    )


def as_problem(p: InventoryProblem, fix: str) -> Problem:
    """An nftables inventory problem as check reports it (`repair` fixes each kind)."""
    where = f"nft:{p.chain or ''}".rstrip(":") or "nft"
    why = NFT_WHY.get(p.kind.value, "")
    if p.kind is ProblemKind.NFT_UNCLAIMED_RULES:
        fix = (
            f"give every cache directory of the node (--cni-cache-dir), or mend the entry"
            f" that cannot be read; rules nobody owns go by handle (`nft delete rule"
            f" {FAMILY_NAMES[p.family]} {TABLE} {p.chain} handle N`)"
        )
    if p.kind is ProblemKind.NFT_WRONG_BASE_CHAIN:
        # Repair re-creates a missing base chain as the plugin's, never rewrites a chain
        # someone changed: prose (JSON `fix` null), as `--repair` alone changes nothing.
        fix = f"{wrong_base_by_hand(p.family, p.chain)}, then run `{fix}`, which re-creates it as the plugin's"
    if p.kind is ProblemKind.DUPLICATE_ENTRY:
        by_hand = "; ".join(
            f"`nft delete rule {FAMILY_NAMES[p.family]} {TABLE} {p.chain} handle {h}`"
            for h in p.handles
        )
        # The command, then the way by hand in parentheses: JSON `fix` is a command
        # (render.split_fix), the rest goes with the why.
        fix = (
            f"{fix} (by hand instead, delete the extra copies: {by_hand})"
            if fix
            else f"delete the extra copies by hand: {by_hand}"
        )
    return Problem(
        p.kind.value, p.family, where, p.network, p.container_id, p.detail, fix, why, p.rules
    )


def wrong_base_by_hand(family: int, chain: str) -> str:
    """The way by hand of a wrong base chain's row (nft-wrong-base-chain): what lets the
    plugin's table have the chain made again as its own."""
    return (
        f"delete the chain by hand (`nft delete chain {FAMILY_NAMES[family]} {TABLE}"
        f" {chain.removeprefix('nft:')}`)"
    )


def _not_checked(looked_at: str, number: int, held_in: str, why: str) -> str:
    """The note of a check narrowed by --backend: the cached containers of the backend
    it did not look at."""
    return (
        f"--backend {looked_at}: {count(number, 'cached container')}"
        f" {'is' if number == 1 else 'are'} the plugin's {held_in}'"
        f" ({why}): not checked"
    )


def _keyless_notes(node: Node, parts: Split) -> List[str]:
    """Containers the plugin put in nftables, with no `backend` key, while it found
    iptables unusable, on a node with iptables now (NodeOptions.keyless): the plugin
    takes iptables for them on every call from now on. Their rules are in place (no
    problem), but its CHECK fails and its DEL leaves these rules behind (gc removes
    them once the cache entry is gone): worth knowing before it happens."""
    if node.options.keyless != Backend.IPTABLES or node.options.offline:
        return []
    notes = []
    for a in parts.nftables:
        if a.mapping is None or a.mapping.backend is not None or a.zombie:
            continue
        notes.append(
            f"{name_text(a.network)}/{name_text(a.container_id)}: its rules are in nftables,"
            " but its cached config"
            ' has no "backend" key, for which the plugin takes iptables wherever iptables'
            " works, as it does here: then its CHECK fails and its DEL leaves these rules"
            " (gc removes them once the container is gone)"
        )
    return notes


def _foreign_notes(node: Node, found: NftInventory) -> List[str]:
    """DNAT rules in the plugin's host-port chains that are not the plugin's: said, not
    a problem. As a foreign rule in CNI-HOSTPORT-DNAT on the iptables side they name no
    container, so nothing is stale or missing, and no command of ours touches them (gc
    keeps them: a `gc` fix would never make check pass). They matter only when they
    take a container's port first: that container is `shadowed`."""
    notes = []
    for f in found.foreign:
        if node.options.families and f.family not in node.options.families:
            continue
        where = f"{FAMILY_NAMES[f.family]} {TABLE} {f.chain}"
        notes.append(
            f"{where} handle {f.handle} is not the plugin's (its comment names no container):"
            f" left alone: {f.text}"
        )
    return notes


def _leftover_problems(
    node: Node,
    live: Ruleset,
    parts: Split,
    attachments: Optional[Sequence[Attachment]],
    fixes: Fixes,
    seen_stale: Set[Tuple[Optional[str], int]],
) -> List[Problem]:
    """Masquerade rules left without their container's DNAT rules (nftables/inventory.py
    `leftovers`): `stale` when the cache does not know the container (gc removes them),
    else `incomplete` (the container's rules are there only in part), unless its
    cached config is compared already (`nft-missing-rules` names the DNAT rules to
    re-create) or its rules are in both backends (`both-backends`)."""
    from portmapctl.nftables.inventory import leftovers

    cached = {a.container_id for a in attachments or ()}
    compared = {a.container_id for a in parts.expected}
    problems: List[Problem] = []
    for left in leftovers(live):
        if node.options.families and left.family not in node.options.families:
            continue
        cid, family = left.container_id, left.family
        rules = f"{count(len(left.rules), 'masquerade rule')} for {left.address}"
        texts = tuple(r.body.text(family) for r in left.rules)  # -o wide, JSON `rules`
        if attachments is not None and cid not in cached:
            if (cid, family) in seen_stale:
                continue  # said once per container and family
            seen_stale.add((cid, family))
            problems.append(
                Problem(
                    STALE,
                    family,
                    f"nft:{MASQUERADING}",
                    None,
                    cid,
                    f"{rules}, no DNAT rule: left of a container the CNI cache does not know",
                    fixes.gc,
                    "the container is gone; its leftover rules would masquerade a later"
                    " container given the same address",
                    texts,
                )
            )
            continue
        if cid in compared or cid in parts.both:
            continue
        handles = ", ".join(map(str, left.handles))
        # With a cache the container is in it (else it is stale, above), and gc keeps a
        # cached container: no command fixes this now, so the gc for later is prose
        # too, quoted (JSON `fix` is a command or null: render.split_fix).
        gc = f"`{fixes.gc}`" if fixes.cache_present else fixes.gc
        problems.append(
            Problem(
                INCOMPLETE,
                family,
                f"nft:{MASQUERADING}",
                _network_of(attachments, cid),
                cid,
                f"{rules} (handle {handles}) but no DNAT rule of the container to it: left behind",
                f"{gc} once the container is gone; while it runs, by hand, for each"
                f" handle: nft delete rule ip|ip6 {TABLE} {MASQUERADING} handle N",
                "the container's host ports are not forwarded, and its leftover rules would"
                " masquerade a later container given the same address",
                texts,
            )
        )
    return problems


def _network_of(attachments: Optional[Sequence[Attachment]], container_id: str) -> Optional[str]:
    for attachment in attachments or ():
        if attachment.container_id == container_id:
            return attachment.network
    return None


def rules_by_handle(live: Ruleset) -> Dict[Tuple[int, int], Rule]:
    """Every rule by (family, handle): a handle is unique in its table."""
    return {
        (family, rule.handle): rule
        for family, table in live.tables.items()
        for rules in table.rules.values()
        for rule in rules
    }


def rule_text(rules: ReadOnly[Tuple[int, int], Rule], m: NftMapping) -> Tuple[str, ...]:
    """The nft rule of a row, as `nft list` prints it."""
    rule = rules.get((m.family, m.handle))
    return (rule.body.text(m.family),) if rule is not None else ()


def expected_in_add_order(node: Node, attachments: Sequence[Attachment]) -> List[Attachment]:
    """What the check compares against (no zombie's rules), in ADD order (the cache
    files' modification times): the rule order the plugin would have made, and the
    last ADD's conditions in prerouting/output, as on the node."""
    from portmapctl.ops import nft

    parts = nft.split(
        attachments,
        node.read_nft(),
        iptables_owners(node.read(), attachments),
        node.options.keyless,
    )
    return [a for a in sorted(parts.expected, key=added_at) if a.mapping is not None]


def expected_configs(node: Node, attachments: Sequence[Attachment]) -> List[MappingConfig]:
    return [a.mapping for a in expected_in_add_order(node, attachments)]  # type: ignore[misc]
