"""Containers being torn down, as the node shows them (`TornDownLook`: a cache entry
whose address and interface are gone from its namespace, or whose host-local lease was
given back or taken), and what check and a repair may do with them: of a torn-down
interface's rules only what the chain still holds is kept (`held_only`: nothing of
theirs written anew, nothing deleted); plain check names why --repair would leave
them (`torn_down_fixes`, `one_mapping_fixes`) instead of offering it; one mapping's
repair and add judge the interface given and the others on its network (`torn_own`,
`torn_beside`, `one_mapping_held`; `nft_torn_own` on the plugin's nftables backend).
The repair's planning from the cache is ops/check/cache_now.py."""

from __future__ import annotations

from dataclasses import replace
from typing import (
    TYPE_CHECKING,
    Collection,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
)

from portmapctl.core.backend import Backend
from portmapctl.core.mapping import MappingConfig
from portmapctl.core.status import ProblemKind
from portmapctl.core.text import name_text
from portmapctl.iptables.chains import Chain, dnat_chain_name
from portmapctl.iptables.ruleset import NatTable
from portmapctl.ops.check.hints import REPAIR_COMMAND, WOULD_LEAVE
from portmapctl.ops.check.nft_table_rows import left_fix, nft_table_row, nft_wanted
from portmapctl.ops.check.problem import Problem, Unrepaired

if TYPE_CHECKING:
    from portmapctl.cni.cache import Attachment
    from portmapctl.host.netns import Inside


TORN_DOWN = (
    "its address {address} is on no interface of its network namespace {netns}, nor is"
    " its interface {ifname} there: its"
    " plugins' DEL is under way (libcni removes the cache entry last) or failed part"
    " way; a chain made now would send its host ports to an address being given back"
    " (run check again once the runtime is done)"
)
GIVEN_BACK = (
    "host-local gave its address {address} back ({lease} is gone): its plugins' DEL is"
    " under way (libcni removes the cache entry last) or failed part way; a chain made"
    " now would send its host ports to an address the next container gets (run check"
    " again once the runtime is done)"
)
TAKEN = (
    "host-local gave its address {address} to container {holder} ({lease}): this cache"
    " entry is stale, and a chain made from it would send its host ports to that"
    " container"
)


def torn_down_fixes(
    problems: Sequence[Problem],
    attachments: Optional[Sequence[Attachment]],
    tables: Optional[Mapping[int, NatTable]] = None,
    nft_placed: Collection[Tuple[str, str]] = (),
) -> Tuple[Problem, ...]:
    """`problems` as the plain check reports them: those of a container whose fix is
    --repair, where every cache entry of the container on that network is of one being
    torn down (TornDownLook), name why the repair would leave it as it is (prose: JSON
    `fix` null) instead of offering it. The repair keeps such a container's chain (or
    nftables rules) as it is on both backends; offered, `check --repair` said `could
    not repair`, and the next check offered it again. Only the namespaces of those
    containers are looked into (a healthy node's none), once each.
    Where some of its entries are torn down and some live (a pod on the network twice)
    and its chain is there in `tables`, the repair keeps of the torn-down ones only what
    the chain holds (CacheNow.held): a row the chain so judged no longer has is theirs
    alone, and names why the repair leaves it; the others keep --repair. On nftables
    the repair makes only the live entries' rules (_nft_made): a missing-rules row
    (one entry's) none of whose rules they make is the torn-down ones' alone."""
    by_key: Dict[Tuple[str, str], List[Attachment]] = {}
    for a in attachments or ():
        if a.mapping is not None and not a.zombie:
            by_key.setdefault((a.network, a.container_id), []).append(a)
    # (A duplicated entry rule's extra copies the repair deletes whoever's it is: its
    # dedupe reads the table, not the cache.)
    left = [p.family and REPAIR_COMMAND in p.fix and p.kind != ProblemKind.DUPLICATE_ENTRY
            for p in problems]  # fmt: skip
    keys = {
        key
        for p, leaves in zip(problems, left)
        if leaves and (key := (p.network or "", p.container_id or "")) in by_key
    }
    look = TornDownLook()  # (one look for both: a namespace is entered once)
    problems = toplevel_fixes(problems, attachments or (), tables, look=look, nft_placed=nft_placed)
    if not keys:
        return tuple(problems)
    gone = set(map(id, look.torn_down([a for key in sorted(keys) for a in by_key[key]])))
    why: Dict[Tuple[str, str, int], str] = {}  # (network, container ID, family)
    # Of a container with live entries too, by (network, container ID, family): the
    # kinds of problem its chain still has once the repair keeps the torn-down
    # entries' rules only as far as it holds them.
    after: Dict[Tuple[str, str, int], Set[str]] = {}
    whole = set()  # every entry torn down: the repair leaves its chain as it is
    # Of such a container on nftables, by (network, container ID, family): the rules the
    # repair makes there, of its live entries alone.
    made: Dict[Tuple[str, str, int], Set[str]] = {}
    for key in keys:
        torn = [a for a in by_key[key] if id(a) in gone]
        if torn and len(torn) == len(by_key[key]):
            whole.add(key)
        for a in torn:
            for family in (4, 6):
                if (text := look.why.get((a.path, family))) is not None:
                    why.setdefault((*key, family), text)
        if torn and len(torn) < len(by_key[key]):
            for family, live in (tables or {}).items():
                if (*key, family) in why:
                    after[(*key, family)] = _still_after(by_key[key], torn, live)
            for family in (4, 6):
                made[(*key, family)] = _nft_made(by_key[key], torn, family)
    return tuple(
        replace(p, fix=WOULD_LEAVE.format(why=text))
        if leaves
        and (text := why.get(at := (p.network or "", p.container_id or "", p.family or 0)))
        and (
            at[:2] in whole
            or (not p.in_nftables and p.kind not in after.get(at, {p.kind}))
            or (
                p.in_nftables
                and p.kind == ProblemKind.NFT_MISSING_RULES
                and at in made
                and bool(p.rules)
                and not made[at].intersection(p.rules)
            )
        )
        else p
        for p, leaves in zip(problems, left)
    )


def toplevel_fixes(
    problems: Sequence[Problem],
    attachments: Sequence[Attachment],
    tables: Optional[Mapping[int, NatTable]],
    left: Optional[str] = None,
    look: Optional[TornDownLook] = None,
    nft_placed: Collection[Tuple[str, str]] = (),
) -> Sequence[Problem]:
    """`problems` with the rows of the shared iptables chains and jumps whose fix is
    --repair naming why the repair leaves them where no cached iptables entry but
    those being torn down wants them: the repair plans from the others (CacheNow
    leaves such entries out), so it makes none of them. Offered, `check --repair`
    wrote nothing (a node whose only container is being deleted, after `iptables -t nat
    -F`), and the next check offered them again. The shared chains are not made for a
    container being deleted: its own chain is not either. Likewise the rows of the
    plugin's nftables table itself (nft_structure: its table, chains, entry and jumps)
    where no nft-backed entry but those being torn down wants them (nft_wanted): the
    nftables repair makes none of them either (nft_repair._CacheAgain). Only where
    such a row is offered are the entries' namespaces looked into (a healthy node's
    none). `left`: the fix they name instead (the repair's report: its `could not
    repair` line); else WOULD_LEAVE, with why. `look`: one already made
    (torn_down_fixes'), so that a namespace is entered once a command. `nft_placed`:
    the entries the check placed in nftables (CheckResult.nft_placed), as (network,
    container ID): the repair plans nftables from those, iptables from the others."""
    from portmapctl.ops.check.followed_entries import is_toplevel, toplevel_key, toplevel_wanted
    from portmapctl.ops.check.nft_refused import refused_beside_text, written_and_refused

    offered = [
        bool(p.family and REPAIR_COMMAND in p.fix)
        and ((tables is not None and is_toplevel(p)) or nft_table_row(p))
        for p in problems
    ]
    if not any(offered):
        return problems
    usable = [a for a in attachments if a.mapping is not None and not a.zombie]
    look = look or TornDownLook()
    gone = set(map(id, look.torn_down(usable)))
    if not gone:
        return problems
    # By entry: whether the repair plans it in iptables, and in nftables, as the
    # check's split placed it (a keyless one in nftables only by evidence there). A
    # keyless one the split put in iptables counted for nftables too, and kept a row of
    # the table offered that the repair, planning nftables from nothing, never made.
    placed = set(nft_placed)
    kinds = {id(a): ((a.network, a.container_id) not in placed,
                     (a.network, a.container_id) in placed) for a in usable}  # fmt: skip
    wanted = (
        toplevel_wanted([a for a in usable if id(a) not in gone and kinds[id(a)][0]], dict(tables))
        if tables is not None
        else set()
    )
    # Those whose conditions the repair refuses want nothing of it either (nft_refused):
    # counted, they kept a row offered that, beside them, only torn-down ones want.
    nft_live, refused = written_and_refused(
        [a for a in usable if id(a) not in gone and kinds[id(a)][1]]
    )
    # The first torn-down entry's reason, by backend (nftables?) and family: those rows say it.
    why: Dict[Tuple[bool, int], str] = {}
    for a in usable:
        for family in (4, 6):
            if id(a) in gone and (text := look.why.get((a.path, family))) is not None:
                for nft in (False, True):
                    if kinds[id(a)][nft]:
                        why.setdefault((nft, family), text)

    def leaves(p: Problem) -> bool:
        if nft_table_row(p):
            return not nft_wanted(p, nft_live)
        return toplevel_key(p) not in wanted

    def said(p: Problem, text: str) -> str:
        wanting = [a for a in refused if nft_table_row(p) and nft_wanted(p, [a.mapping])]  # type: ignore[list-item]
        return f"{text}; {refused_beside_text(wanting)}" if wanting else text

    return tuple(
        replace(p, fix=left_fix(p, left or WOULD_LEAVE.format(why=said(p, text))))
        if offers and (text := why.get((nft_table_row(p), p.family or 0))) is not None and leaves(p)
        else p
        for p, offers in zip(problems, offered)
    )


def _nft_made(
    attachments: Sequence[Attachment], torn: Sequence[Attachment], family: int
) -> Set[str]:
    """The nftables rules (as `nft list` prints them) the repair makes in `family` for
    the entries of `attachments` (one container on one network) not in `torn`: it keeps
    the torn-down ones' rules as they are and makes none they lack
    (nft_repair._CacheAgain.kept), so a missing-rules row (one entry's) none of whose
    rules a live entry makes is theirs alone, and left."""
    from portmapctl.nftables.wanted import wanted

    out = set(map(id, torn))
    made: Set[str] = set()
    for a in attachments:
        if id(a) in out or a.mapping is None or a.mapping.backend == Backend.IPTABLES:
            continue
        if (w := wanted(a.mapping, family)) is not None:
            made.update(body.text(family) for body in (*w.hostports, *w.masquerading))
    return made


def torn_beside(
    config: MappingConfig, entries: Sequence[Attachment], ifname: Optional[str] = None
) -> Tuple[List[Attachment], TornDownLook]:
    """Of the entries of `config`'s container on its network (run.entries_of) of its
    other interfaces (not `ifname`'s, nor one with its addresses: expected.sharing_chain
    keeps those beside it), those being torn down (TornDownLook), for the check and the
    repair of one mapping given on the command line: their rules in the shared chain
    are kept as far as it holds them (held_only), as the node's repair keeps them."""
    addresses = (config.address(4), config.address(6))
    others = [
        a
        for a in entries
        if a.mapping is not None
        and not a.zombie
        and a.mapping.backend != Backend.NFTABLES
        and (a.ifname != ifname if ifname else True)
        and (a.mapping.address(4), a.mapping.address(6)) != addresses
    ]
    look = TornDownLook()
    return (look.torn_down(others) if others else []), look


def torn_own(
    config: MappingConfig,
    entries: Sequence[Attachment],
    ifname: Optional[str],
    look: TornDownLook,
    backend: Backend = Backend.IPTABLES,
) -> List[Attachment]:
    """The cache entries of `config`'s own interface (`ifname`'s, else those with its
    addresses: expected.sharing_chain's own), where the container is being torn down
    by what its namespace shows of `config`'s addresses (TornDownLook, `look`'s why):
    for the check and the repair of the dying interface's own mapping. Those judged
    the other interfaces alone (torn_beside), so its own lost rules were written anew,
    a DNAT to an address its namespace no longer holds; the node's repair leaves them.
    Without such an entry (nothing cached says it is the container's) nothing is.
    `backend`: the one `config` is kept in (no entry cached for the other is its own).
    So are its own entries that are zombies, where no live one is among them (the
    namespace gone: the container is dead, its address free for the next one): the
    node's repair expects nothing of a zombie; this one wrote the mapping given, exit 0
    (TornDownLook.dead says why)."""
    other = Backend.IPTABLES if backend == Backend.NFTABLES else Backend.NFTABLES
    group = [
        a
        for a in entries
        if a.mapping is not None and dnat_chain_name(a.mapping) == dnat_chain_name(config)
    ]
    addresses = (config.address(4), config.address(6))
    # `ifname`'s entry is its own whatever backend its key names: one cached
    # `"nftables"` whose plugin ignores the key (Debian's 1.1.1) is kept in iptables.
    mine = [a for a in group if ifname and a.ifname == ifname] or [
        a
        for a in group
        if a.mapping.backend != other  # type: ignore[union-attr]
        and (a.mapping.address(4), a.mapping.address(6)) == addresses  # type: ignore[union-attr]
    ]
    if mine and all(a.zombie for a in mine):
        look.dead(mine, config)
        return mine
    mine = [a for a in mine if not a.zombie]
    if not mine:
        return []
    # Judged by the addresses the write DNATs to (`config`'s), in the entry's namespace.
    gone = {a.path for a in look.torn_down([replace(a, mapping=config) for a in mine])}
    return [a for a in mine if a.path in gone]


def nft_torn_own(
    config: MappingConfig, entries: Sequence[Attachment], ifname: Optional[str]
) -> Dict[int, str]:
    """By family, why the nft-backed `config`'s own interface is being torn down
    (torn_own): for the check and the repair of that mapping alone. Its rules are
    judged by its own addresses only (nft_one.own_addresses), so nothing else of the
    container's is written there: that family is left as it is, as the node's repair
    keeps a torn-down entry's rules and makes none they lack (nft_repair._CacheAgain).
    Before, the repair wrote its lost DNAT or masquerade rule anew, exit 0."""
    look = TornDownLook()
    found: Dict[int, str] = {}
    for a in torn_own(config, entries, ifname, look, Backend.NFTABLES):
        for family in (4, 6):
            why = look.why.get((a.path, family))
            if why is not None and config.address(family) is not None:
                found.setdefault(family, why)
    return found


def one_mapping_held(
    config: MappingConfig,
    sharing: Sequence[MappingConfig],
    torn: Sequence[Attachment],
    wanted: Sequence[Chain],
    live: NatTable,
    as_found: bool = True,
    own: Sequence[Attachment] = (),
) -> List[Chain]:
    """`wanted` (the chains a write of `config` makes, its chain holding `sharing`'s
    rules: expected.wanted_sharing) with its CNI-DN- chain held_only for the entries
    `torn` (torn_beside) and, where `own` (torn_own), for `config`'s own: theirs kept
    where `live` holds them, not made where not. Every entry of the chain so: the chain
    is left out (the node's repair leaves such a chain as it is). `as_found`: `wanted`
    judged the shapes found in `live` (wanted_sharing's `live`), as check does; add's
    does not."""
    from portmapctl.ops.check.expected import wanted_sharing

    if not torn and not own:
        return list(wanted)
    name = dnat_chain_name(config)
    out = [a.mapping for a in (*torn, *own)] + ([config] if own else [])
    rest = [c for c in sharing if c not in out]
    if own and not rest:
        return [c for c in wanted if c.name != name]
    rest = rest or [config]
    found = wanted_sharing(config, rest, live.family, live if as_found else None)
    bare = {c.name: c for c in found}
    return [held_only(c, bare.get(c.name), live) if c.name == name else c for c in wanted]


def one_mapping_fixes(
    problems: Sequence[Problem],
    config: MappingConfig,
    sharing: Sequence[MappingConfig],
    torn: Sequence[Attachment],
    look: TornDownLook,
    tables: Mapping[int, NatTable],
    fix: str,
    own: Sequence[Attachment] = (),
) -> Tuple[Problem, ...]:
    """`problems` of one mapping (run.check_followed) whose fix is `fix` (--repair of
    it), those the repair leaves because they are the torn-down entries' alone (a row
    the chain judged held_only no longer has) naming why, as torn_down_fixes does.
    `own`: torn_own's (the mapping's own interface torn down too); where no live entry
    shares the chain, the repair leaves it whole: none of its rows is offered."""
    from portmapctl.ops.check.compare import check_container
    from portmapctl.ops.check.expected import wanted_sharing

    if not torn and not own:
        return tuple(problems)
    name = dnat_chain_name(config)
    still: Dict[int, Set[str]] = {}
    why: Dict[int, str] = {}
    for family, live in tables.items():
        texts = [t for a in (*own, *torn) if (t := look.why.get((a.path, family))) is not None]
        if not texts or config.address(family) is None:
            continue
        why[family] = texts[0]
        wanted = wanted_sharing(config, sharing, family, live)
        held = one_mapping_held(config, sharing, torn, wanted, live, own=own)
        chain = next((c for c in held if c.name == name), None)
        if chain is None:
            # Left out whole: what stays is the shared chains' (made as ever).
            still[family] = set(ProblemKind) - CHAIN_KINDS
            continue
        found = check_container(config, chain, live, "", exact=True, any_order=True)
        still[family] = {p.kind for p in found}
    return tuple(
        replace(p, fix=WOULD_LEAVE.format(why=why[p.family]))
        if p.fix == fix and p.family in still and p.kind not in still[p.family]
        else p
        for p in problems
    )


# The kinds of problem of a container's own chain and entry rules (compare.check_container).
CHAIN_KINDS = frozenset(
    {
        ProblemKind.MISSING_CHAIN,
        ProblemKind.MISSING_RULES,
        ProblemKind.EXTRA_RULES,
        ProblemKind.RULES_ORDER,
        ProblemKind.MISSING_ENTRY,
        ProblemKind.EXTRA_ENTRY,
    }
)


def _still_after(
    attachments: Sequence[Attachment], torn: Sequence[Attachment], live: NatTable
) -> Set[str]:
    """The kinds of problem of the chain of `attachments` (one container on one network)
    in `live` once the repair wrote it from the live entries, keeping of the torn-down
    ones (`torn`) only what it holds (held_only); every kind where the chain is not
    there (the repair makes it from the live ones)."""
    from portmapctl.ops.check.compare import check_container
    from portmapctl.ops.check.expected import cached_configs, wanted_on_node

    configs = cached_configs(attachments)
    out = {id(a.mapping) for a in torn}
    _, full = wanted_on_node(configs, live.family, live)
    _, bare = wanted_on_node([c for c in configs if id(c) not in out], live.family, live)
    if not full or not live.has_chain(full[0][1].name):
        return set(ProblemKind)
    config, chain = full[0]
    kept = held_only(chain, bare[0][1] if bare else None, live)
    return {p.kind for p in check_container(config, kept, live, "", exact=True)}


class TornDownLook:
    """Which cache entries are of a container being torn down, by what the node shows
    of them (its namespace, host-local's leases), for a repair to make nothing for
    them. A chain (or nftables rules) made then would send its host ports to an
    address being given back, kept by gc while the entry stands (docs/guarantees.md,
    Concurrent-safe).

    libcni runs a network list's DEL last plugin first, portmap before bridge, ptp or
    calico, which delete the container's interface (bridge then has host-local give
    the address back), and removes the cache entry after all of them. So an entry is
    torn down when

    - its network namespace is there but holds none of the addresses the plugin DNATs
      to (the first of each family), nor an interface of the entry's name: the
      interface is gone. One there without the address is a live container's whose
      address lives elsewhere (Kata's macvtap mode takes it off the veth into its
      VM), unless host-local's lease says as below (host-device's DEL failed after
      its IPAM's: the device back in under its name, without addresses). Only
      namespaces this command judged there (NetnsState.PRESENT) are looked into, as
      many at once as asked (a setns, a netlink dump of its addresses, and one of its
      interfaces where an address is missing: 18-36 us a namespace; 0.17 s of the
      6.1 s a repair of 5,000 made after a flush takes, each in a namespace of its
      own: docs/performance.md), again only for an entry an earlier look cannot tell;
      one that cannot be entered (no CAP_SYS_ADMIN, as in the shipped DaemonSet and
      systemd units) says nothing of itself;
    - or, where its namespace cannot be looked into, its network uses host-local and
      none of those addresses is leased to it any more (cni/leases.py): given back, or
      given to another container (the entry is stale). That needs no privilege: a
      repair run as the shipped DaemonSet and systemd units run portmapctl judges by
      it. The namespace, where it can be seen, decides where it holds the address:
      the address there is the container's, whatever the leases say (a data
      directory wiped by hand). An entry whose namespace is gone is a zombie, judged
      elsewhere."""

    def __init__(self) -> None:
        self.inside: Dict[Tuple[str, bool], Optional[Inside]] = {}  # by namespace
        self.why: Dict[Tuple[str, int], str] = {}  # (path, family): why it is torn down

    def torn_down(self, attachments: Sequence[Attachment]) -> List[Attachment]:
        from portmapctl.host.netns import look_into

        keys = [self._key(a) for a in attachments]
        wanted: Dict[str, bool] = {}  # namespace path -> its IPv6 addresses too
        expected: Dict[str, Set[str]] = {}  # ... and the addresses its entries DNAT to
        for a, key in zip(attachments, keys):
            if key is not None and not self._known(key, a):
                wanted[key[0]] = wanted.get(key[0], False) or key[1]
                expected.setdefault(key[0], set()).update(self._addresses(a).values())
        for path, found in look_into(wanted, expected).items():
            self.inside[(path, wanted[path])] = found
            self.inside.setdefault((path, False), found)
        return [a for a, key in zip(attachments, keys) if self._gone(a, key)]

    def _known(self, key: Tuple[str, bool], attachment: Attachment) -> bool:
        """Whether an earlier look at the namespace (`key`) tells `attachment`'s case:
        not where its interfaces were not asked (every address that look expected was
        there) and its address is not there (a pod's other interface, judged by a plan
        of the other family or a later try)."""
        if key not in self.inside:
            return False
        found = self.inside[key]
        if found is None or found.interfaces is not None:
            return True
        return found.addresses.issuperset(self._addresses(attachment).values())

    @staticmethod
    def _key(attachment: Attachment) -> Optional[Tuple[str, bool]]:
        """(namespace path, whether its IPv6 addresses are wanted) of an entry whose
        namespace this command judged there; None for one not to be looked into."""
        from portmapctl.host.netns import NetnsState

        mapping, path = attachment.mapping, attachment.netns
        if mapping is None or path is None or attachment.netns_state != NetnsState.PRESENT:
            return None
        return path, mapping.address(6) is not None

    def _gone(self, attachment: Attachment, key: Optional[Tuple[str, bool]]) -> bool:
        """Whether the entry is of a container being torn down (and why: `why`)."""
        mapping = attachment.mapping
        if mapping is None or attachment.zombie:
            return False
        addresses = self._addresses(attachment)
        found = self.inside.get(key) if key is not None else None
        if found is not None:  # (what the namespace shows decides, where it can be seen)
            if any(a in found.addresses for a in addresses.values()):
                return False
            if not attachment.ifname or attachment.ifname not in (found.interfaces or ()):
                for family, address in addresses.items():
                    why = TORN_DOWN.format(
                        address=address,
                        netns=name_text(str(attachment.netns)),
                        ifname=name_text(attachment.ifname or "-"),
                    )
                    self.why[(attachment.path, family)] = why
                return True
            # Its interface there, its address elsewhere: live (Kata's macvtap mode),
            # unless host-local gave the address back (host-device's DEL, failed after
            # its IPAM's: the device moved back in under its name, its addresses lost).
        if attachment.leases is None:
            return False
        from portmapctl.cni.leases import LeaseState, lease_of

        leases = {f: lease_of(attachment.leases, a, attachment.container_id)
                  for f, a in addresses.items()}  # fmt: skip
        ended = (LeaseState.GIVEN_BACK, LeaseState.TAKEN)
        if not leases or not all(lease.state in ended for lease in leases.values()):
            return False
        for family, lease in leases.items():
            template = GIVEN_BACK if lease.state is LeaseState.GIVEN_BACK else TAKEN
            # The lease file's first line and the paths are the node's text, not ours.
            holder = name_text(lease.holder or "")
            why = template.format(
                address=addresses[family], lease=name_text(lease.path), holder=holder
            )
            self.why[(attachment.path, family)] = why
        return True

    def dead(self, attachments: Sequence[Attachment], config: MappingConfig) -> None:
        """Why nothing is made of `config` for these zombie entries (torn_own), in each
        family it has an address of: the zombie row's words (node_problems)."""
        from portmapctl.ops.check.node_problems import ZOMBIE_FORGOT, zombie_gone

        for a in attachments:
            for family in (4, 6):
                if config.address(family) is not None:
                    self.why[(a.path, family)] = (
                        f"{zombie_gone(a)} ({ZOMBIE_FORGOT}): a rule made now would send"
                        " its host ports to an address the next container may get"
                    )

    @staticmethod
    def _addresses(attachment: Attachment) -> Dict[int, str]:
        """The addresses the plugin DNATs to (the first of each family), by family."""
        mapping = attachment.mapping
        found = (mapping.address(f) if mapping is not None else None for f in (4, 6))
        return {f: str(a.ip) for f, a in zip((4, 6), found) if a is not None}

    def not_made(self, attachment: Attachment, family: int, chain: str) -> Optional[Unrepaired]:
        """The `could not repair` line of an entry torn_down found in `family` (None
        where it has no address of that family)."""
        why = self.why.get((attachment.path, family))
        if why is None:
            return None
        return Unrepaired(family, attachment.network, attachment.container_id, chain, why)


def held_only(full: Chain, bare: Optional[Chain], live: NatTable) -> Chain:
    """`full` (a chain as all its entries make it) with the rules and entry rules that
    only its torn-down entries make (not in `bare`, the chain of the others) kept where
    `live` holds them, and not made where it does not: theirs are neither written anew
    nor deleted."""
    from portmapctl.ops.check.compare import entry_index

    rules = bare.rules if bare is not None else ()
    entry_rules = bare.entry_rules if bare is not None else ()
    there = live.rules(full.name)
    entered = entry_index(live).by_target.get(full.name, ())
    return replace(
        full,
        rules=tuple(r for r in full.rules if r in rules or r in there),
        entry_rules=tuple(r for r in full.entry_rules if r in entry_rules or r in entered),
    )
