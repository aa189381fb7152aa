"""Problems of what is on the node, whatever any one config wants: what `list` marks
(stale, orphan, incomplete, dead, shadowed, legacy), zombies, duplicate entry rules,
and portmap chains in both iptables flavours (split brain)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Collection, Dict, List, Optional, Sequence, Tuple
from typing import Mapping as ReadOnly

from portmapctl.cni.cache import Attachment
from portmapctl.core.status import ChainKind, ProblemKind, Status
from portmapctl.core.text import name_text, port_runs
from portmapctl.iptables import inventory, plugin_rules, shapes
from portmapctl.iptables.chains import TOPLEVEL_DNAT, is_portmap_chain
from portmapctl.iptables.ruleset import NatTable, option_value
from portmapctl.iptables.shown import shown_rule
from portmapctl.ops.check.hints import Fixes, _names_text, _ports_text, _who
from portmapctl.ops.check.problem import (
    Problem,
    entries_for,
    entries_or_rules,
    saved_rules,
)

if TYPE_CHECKING:
    from portmapctl.ops.check.nft import Held


def inventory_problems(
    found: inventory.Inventory,
    derived: ReadOnly[int, set],
    live_chains: set,
    fixes: Fixes,
    live_ids: Collection[str] = (),
    zombie_ids: Collection[str] = (),
) -> List[Problem]:
    """What `list` marks, for chains the cached-config comparison does not cover.

    `derived[family]` are the chains compared with a cached config: for them only
    shadowing is added here (the comparison already says what is missing).
    `live_ids`: the containers of cache entries whose namespace is there, which gc
    keeps (by ID, on every network and in either backend); `zombie_ids`: those cached
    only by zombie entries, which gc keeps unless --netns-liveness.
    """
    problems: List[Problem] = []
    by_chain = {(c.name, c.family): c for c in found.chains}
    shadowed: Dict[Tuple[str, int], List[inventory.Mapping]] = {}
    for m in found.mappings:
        if m.shadowed_by:
            shadowed.setdefault((m.chain, m.family), []).append(m)

    for c in found.chains:
        who = (c.network, c.container_id)
        if c.kind == ChainKind.LEGACY_SNAT:
            live = c.name in live_chains
            problems.append(
                Problem(
                    ProblemKind.LEGACY,
                    c.family,
                    c.name,
                    *who,
                    f"pre-2018 SNAT chain of {_who(*who)}"
                    + (" (stale)" if ProblemKind.STALE in c.status else ""),
                    "harmless while the container runs; `portmapctl gc` removes it once it is gone"
                    if live
                    else fixes.gc,
                    "nothing creates or uses these chains any more; they only take up the table",
                    entries_or_rules(c),
                )
            )
            continue
        if c.name in derived.get(c.family, ()):
            pass
        elif ProblemKind.STALE in c.status:
            # One row: gc removes the chain, whatever else is wrong with it (said here).
            also = " and nothing enters it" if ProblemKind.ORPHAN in c.status else ""
            maps = _ports_text([p for p in c.host_ports if p not in c.missing_ports])
            if ProblemKind.INCOMPLETE in c.status:
                maps += (
                    f"; entry rules send {_ports_text(c.missing_ports)} here but no rule DNATs them"
                )
            problems.append(
                Problem(
                    ProblemKind.STALE,
                    c.family,
                    c.name,
                    *who,
                    f"no CNI cache entry for {_who(*who)}{also}; it maps {maps}",
                    fixes.gc,
                    "the container is gone but its host ports stay taken: a new container on"
                    " them gets no traffic",
                    entries_or_rules(c),
                )
            )
            continue
        else:
            if ProblemKind.ORPHAN in c.status:
                problems.append(
                    Problem(
                        ProblemKind.ORPHAN,
                        c.family,
                        c.name,
                        *who,
                        f"no rule enters this chain ({_ports_text(c.host_ports)})",
                        *_orphan_fix(c, live_ids, zombie_ids, fixes),
                        saved_rules(c.name, c.rules),
                    )
                )
            if ProblemKind.INCOMPLETE in c.status:
                problems.append(
                    Problem(
                        ProblemKind.INCOMPLETE,
                        c.family,
                        c.name,
                        *who,
                        f"entry rules send {_ports_text(c.missing_ports)} here but no rule"
                        f" DNATs them; {_falls_through(found, c, c.missing_ports)}",
                        "re-create the mapping (`portmapctl add ...`), or `portmapctl gc` it if"
                        " the container is gone",
                        _FALLS_THROUGH_WHY,
                        entries_for(c, c.missing_ports),
                    )
                )
        if Status.DEAD in c.status:
            problems.append(dead_problem(found, c, fixes))
        rows = shadowed.get((c.name, c.family))
        if rows:
            problems.append(shadow_problem(c, rows, by_chain, fixes, found.mappings))
    return problems


def _orphan_fix(
    c: inventory.ChainInfo,
    live_ids: Collection[str],
    zombie_ids: Collection[str],
    fixes: Fixes,
) -> Tuple[str, str]:
    """(fix, why) of a chain nothing enters. gc keeps a cached container's chains (a
    container whose network moved to nftables keeps its old iptables chain): for
    those, `portmapctl gc` would change nothing, so the fix is prose (JSON null); a
    zombie's goes with gc --netns-liveness, as its zombie row says."""
    why = "it forwards nothing and nothing will ever remove it but gc"
    if c.container_id in zombie_ids:
        return f"{fixes.gc} --netns-liveness", why
    if c.container_id not in live_ids:
        return fixes.gc, why
    how = "; ".join(f"`{fixes.iptables(c.family, flag, c.name, ())}`" for flag in ("-F", "-X"))
    return (
        f"remove it by hand: {how}",
        "it forwards nothing; gc keeps it while its container is in the CNI cache"
        " and removes it once the container is gone",
    )


_FALLS_THROUGH_WHY = (
    "iptables returns from a chain with no matching rule and goes on down"
    f" {TOPLEVEL_DNAT}: a later entry rule's chain takes those ports, or if none does the"
    " connection reaches the node itself; the container gets none of it"
)


def _falls_through(
    found: inventory.Inventory,
    chain: inventory.ChainInfo,
    ports: Sequence[Tuple[str, int]],
    host_ip: Optional[str] = None,
) -> str:
    """Where those ports' connections go instead (for a problem's detail): the chain
    has no matching rule, so it returns and CNI-HOSTPORT-DNAT goes on."""
    table = found.tables.get(chain.family)
    after = min((e.index for e in chain.entries if e.chain == TOPLEVEL_DNAT), default=None)
    taken: Dict[str, List[str]] = {}
    alone: List[str] = []
    for proto, port in ports:
        taker = None
        if table is not None and after is not None:
            taker = shapes.first_taker(table, proto, port, after, host_ip)
        if taker is None:
            alone.append(f"{proto}/{port}")
        else:
            taken.setdefault(taker, []).append(f"{proto}/{port}")
    parts = []
    for taker, words in taken.items():
        other = next(
            (o for o in found.chains if o.name == taker and o.family == chain.family), None
        )
        who = _who(other.network, other.container_id) if other else "?"
        parts.append(f"{taker} ({who}) takes {', '.join(words)} instead")
    if alone:
        parts.append(f"no later chain takes {', '.join(alone)}: the node itself gets them")
    return "; ".join(parts)


def dead_problem(found: inventory.Inventory, c: inventory.ChainInfo, fixes: Fixes) -> Problem:
    dead = [m for m in found.mappings if m.chain == c.name and m.family == c.family]
    dead = [m for m in dead if Status.DEAD in m.status]
    # (a port once: a chain the container's interfaces share DNATs it for each)
    ports = list(dict.fromkeys((m.protocol, m.host_port) for m in dead))
    where = dead[0].host_ip if dead else "0.0.0.0"
    prefix = 128 if ":" in (where or "") else 32
    return Problem(
        ProblemKind.DEAD,
        c.family,
        c.name,
        c.network,
        c.container_id,
        f"{_ports_text(ports)} only for destination {where}/{prefix} (host IP {where} as"
        f" plugins before v0.8.7 wrote it), which no packet has; {_falls_through(found, c, ports)}",
        "re-create the container under a current plugin (it writes no -d for 0.0.0.0),"
        f" or {fixes.gc} once it is gone",
        "a rule that never matches: the mapping forwards nothing and takes no port from"
        f" anyone; iptables returns from the chain and goes on down {TOPLEVEL_DNAT}",
        saved_rules(
            c.name,
            [r for r in c.rules if shapes.is_dead_destination(option_value(r, "-d") or "")],
        ),
    )


_FOREIGN_FIX = (
    "the node's other NAT owner (kube-proxy NodePort, Docker -p, a hand-written rule)"
    " holds this port: free it there or re-create the container on another host port"
)
_FOREIGN_WHY = (
    "iptables uses the first rule that ends NAT for a packet: a rule ahead of PREROUTING's"
    " jump to CNI-HOSTPORT-DNAT (OUTPUT's, for a loopback host IP) takes those ports, and"
    " this container gets no traffic on them"
)


def shadow_problem(
    loser: inventory.ChainInfo,
    rows: Sequence[inventory.Mapping],
    by_chain: ReadOnly[Tuple[str, int], inventory.ChainInfo],
    fixes: Fixes,
    mappings: Sequence[inventory.Mapping] = (),
) -> Problem:
    """`loser`'s ports (`rows`) that an earlier entry takes. `mappings`: every row of the
    node, to say where the winning rule sends each port: a stale chain of a container
    that is gone often DNATs to the address the runtime gave the shadowed one since
    (IPAM hands it out again), and then that container gets its traffic today, through
    a rule gc is about to remove; "gets no traffic" was false there."""
    winners: Dict[str, List[inventory.Mapping]] = {}
    for m in rows:
        winners.setdefault(m.shadowed_by or "?", []).append(m)
    sends: Dict[Tuple[str, str, int], List[inventory.Mapping]] = {}
    for m in mappings:
        if m.family == loser.family:
            sends.setdefault((m.chain, m.protocol, m.host_port), []).append(m)
    parts = []
    winner_stale = winner_zombie = foreign = False
    own_everywhere = True  # every winning rule sends to the loser's own address and port
    for name, lost in winners.items():
        ports = _ports_text([(m.protocol, m.host_port) for m in lost])
        if name.startswith("-A "):
            # Another tool's rule ahead of the plugin's entry (iptables/foreign.py).
            own_everywhere = False
            foreign = True
            parts.append(f"{ports} taken first by a rule outside the plugin's chains: {name}")
            continue
        winner = by_chain.get((name, loser.family))
        who = _who(winner.network, winner.container_id) if winner else "?"
        stale = winner is not None and ProblemKind.STALE in winner.status
        # A zombie's container is gone too (Nomad: a new allocation on the static port
        # of one whose pause container vanished), but only gc --netns-liveness removes it.
        zombie = winner is not None and ProblemKind.ZOMBIE in winner.status
        winner_stale, winner_zombie = winner_stale or stale, winner_zombie or zombie
        state = "the stale rule" if stale else "the zombie's rule" if zombie else "the rule"
        dests, own = _destinations(lost, name, sends)
        own_everywhere = own_everywhere and own
        text = f"{ports} taken first by {state} {name} of {who}"
        if dests:
            text += f", which DNATs to {dests}"
            if own:
                text += (
                    f": {name_text(loser.container_id or 'this container')}'s own address and port"
                )
        parts.append(text)
    if foreign:
        # No command of ours may touch another tool's rule: prose (JSON fix null).
        fix = _FOREIGN_FIX
    elif winner_stale:
        fix = f"{fixes.gc} (the winner is stale)"
    elif winner_zombie:
        fix = f"{fixes.gc} --netns-liveness (the winner is a zombie)"
    else:
        fix = "two containers claim one host port: re-create one of them with another host port"
    return Problem(
        ProblemKind.SHADOWED,
        loser.family,
        loser.name,
        loser.network,
        loser.container_id,
        "; ".join(parts),
        fix,
        _FOREIGN_WHY if foreign else _shadow_why(own_everywhere, winner_stale or winner_zombie),
        entries_for(loser, [(m.protocol, m.host_port) for m in rows]),
    )


def _destinations(
    lost: Sequence[inventory.Mapping],
    winner: str,
    sends: ReadOnly[Tuple[str, str, int], Sequence[inventory.Mapping]],
) -> Tuple[str, bool]:
    """Where `winner` sends the ports `lost` (`10.88.0.5:80`, `[fd00::5]:80`; empty
    when its rows are not known), and whether each goes to the loser's own address and
    port, as the loser's rule would send it."""
    found: Dict[Tuple[str, int], None] = {}
    own = True
    for m in lost:
        sent = sends.get((winner, m.protocol, m.host_port))
        if not sent:
            return "", False
        for row in sent:
            found[(row.container_ip, row.container_port)] = None
            own = own and (row.container_ip, row.container_port) == (
                m.container_ip,
                m.container_port,
            )
    # A podman range (a mapping per port) as one: `10.88.0.5:9000-9010`.
    return ", ".join(_address_port(ip, ports) for ip, ports in port_runs(found)), own


def _address_port(address: str, port: str) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _shadow_why(own: bool, gone: bool) -> str:
    """What the shadowing does to the loser's traffic, and what gc and --repair do.
    Naming no container: a kind's whys are printed once each under the table."""
    name = "this container"
    head = "iptables uses the first matching rule in CNI-HOSTPORT-DNAT: "
    if own and gone:
        return (
            f"{head}{name} gets this traffic now, through the rule of a container that is"
            f" gone; gc removes that rule and its own rule takes over, to the same address;"
            f" check --repair leaves it (stale chains are gc's)"
        )
    if gone:
        return (
            f"{head}{name} gets no traffic on those ports; gc removes the winning rule and"
            f" its own rule takes them; check --repair leaves it (stale chains are gc's)"
        )
    return (
        f"{head}{name} gets no traffic on those ports; check --repair leaves it (which"
        " container should have a port is not a repair's to decide)"
    )


def zombies(
    attachments: Sequence[Attachment],
    tables: ReadOnly[int, NatTable],
    fixes: Fixes,
    nft_backed: Collection[str] = (),
    nft_owners: Optional[Collection[str]] = None,
    live_on: Optional[ReadOnly[str, Collection[str]]] = None,
    found: Optional[inventory.Inventory] = None,
    nft_held: ReadOnly[str, ReadOnly[int, Held]] = {},  # noqa: B006 - read only
    unread_on: ReadOnly[str, Collection[str]] = {},  # noqa: B006 - read only
) -> List[Problem]:
    """Cache entries whose network namespace is gone, that have or would have chains.

    Each row gives the rules at issue as a stale chain's does (`found`, the inventory
    of `tables`: the entry rules that take its host ports, else its own rules); one
    whose rules are in nftables, as its stale rows would (`nft_held`, by ID and family:
    nft.held_rules), every family's, and their chain (and family) when they share one.

    gc --netns-liveness removes a zombie's chains (or, for the `nft_backed` IDs, its
    nftables rules: those of `nft_owners`, the IDs with rules left; None when not
    known), never its cache entry: once a zombie has nothing left there, gc has
    nothing more to do, and the fix is the runtime's (or a person's). Nor does it
    remove them while another entry whose namespace is there keeps the container
    live (`live_on`: container ID -> those entries' networks; `unread_on`, of those,
    the networks where only an entry that cannot be read does): liveness is by ID."""
    problems: List[Problem] = []
    seen = set()
    by_chain = {(c.name, c.family): c for c in found.chains} if found is not None else {}
    for a in attachments:
        if not a.zombie or a.dnat_chain in seen:
            continue
        present = [f for f in sorted(tables) if tables[f].has_chain(a.dnat_chain)]
        if a.mapping is None and not present:
            continue  # no port mappings: nothing of portmap's to say about it
        seen.add(a.dnat_chain)
        where = f"; its chain is still in IPv{'/IPv'.join(map(str, present))}" if present else ""
        owned = nft_owners is not None and a.container_id in nft_owners
        in_nft = owned or a.container_id in nft_backed
        if owned:
            where += "; its rules are still in nftables"
        left = present or owned or (a.container_id in nft_backed and nft_owners is None)
        # An nftables container's: no chain of its own (JSON backend nftables); the one
        # its rules are in, when that is one.
        held = nft_held.get(a.container_id, {}) if in_nft and not present else {}
        nft_chains = {h.chain for h in held.values()}
        nft_chain = nft_chains.pop() if len(nft_chains) == 1 else "nft"
        problems.append(
            Problem(
                ProblemKind.ZOMBIE,
                # The family its rules are in, where one (as its stale rows give theirs).
                present[0] if len(present) == 1 else next(iter(held)) if len(held) == 1 else None,
                a.dnat_chain if present or not in_nft else nft_chain,
                a.network,
                a.container_id,
                f"{zombie_gone(a)}{where}; not repaired",
                _zombie_fix(
                    a,
                    fixes,
                    in_nft,
                    (live_on or {}).get(a.container_id),
                    unread_on.get(a.container_id, ()),
                )
                if left
                else "nothing of it is left for gc to remove: delete its cache entry"
                f" {name_text(a.path)} once the runtime is done with the container",
                f"{ZOMBIE_FORGOT}: its cache entry keeps its host ports taken"
                if left
                # Nothing takes its ports: a DEL that failed after portmap's (bridge's,
                # its masquerade chain gone in a firewall restart) leaves just this.
                else _ZOMBIE_LEFT_NOTHING,
                tuple(
                    rule
                    for family in present
                    if (a.dnat_chain, family) in by_chain
                    for rule in entries_or_rules(by_chain[a.dnat_chain, family])
                )
                + tuple(rule for family in sorted(held) for rule in held[family].rules),
            )
        )
    return problems


ZOMBIE_FORGOT = "the runtime forgot the container without a CNI DEL"
_ZOMBIE_LEFT_NOTHING = (
    f"{ZOMBIE_FORGOT}, or its DEL failed after portmap's (libcni then keeps the entry):"
    " its host ports are free, but it is reported until its cache entry goes"
)


def zombie_gone(a: Attachment) -> str:
    """What a zombie row says of its entry first (the one-mapping repair's why too:
    torn_down.TornDownLook.dead)."""
    return f"cached on {name_text(a.network)}, but its network namespace {name_text(str(a.netns))} is gone"


def _zombie_fix(
    a: Attachment,
    fixes: Fixes,
    in_nft: bool,
    live_on: Optional[Collection[str]],
    unread_on: Collection[str] = (),
) -> str:
    """gc --netns-liveness, unless the container is live on another network: gc keeps
    every chain of a live container ID (SPEC §3), so that command would change nothing.
    `unread_on`: the networks where an entry of it that cannot be read keeps it live
    (by its file name, as gc takes it), of those of `live_on` where no entry read does."""
    if not live_on:
        return f"{fixes.gc} --netns-liveness"
    said = [
        f"{', '.join(map(name_text, sorted(networks)))} ({why})"
        for networks, why in (
            (set(live_on) - set(unread_on), "a cache entry whose namespace is there"),
            (
                set(unread_on) & set(live_on),
                "a cache entry that cannot be read keeps it live by its file name",
            ),
        )
        if networks
    ]
    kept = (
        f"gc keeps its rules: the container is live on {' and on '.join(said)},"
        " and liveness is by container ID"
    )
    if in_nft:
        # The plugin's nftables DEL deletes every rule with the container ID: the live
        # network's too.
        return f"{kept}; they go when the container does"
    return (
        f"{kept}; the plugin's DEL for {name_text(a.network)} removes them, then delete"
        f" its cache entry {name_text(a.path)}"
    )


def _duplicate_fix(family: int, dup: Any, fixes: Fixes) -> str:
    """--repair, then the way by hand; by hand alone for a rule --repair leaves
    (planner.unwritable_duplicate: control characters in its text)."""
    from portmapctl.iptables.planner import unwritable_duplicate

    commands = [
        fixes.iptables(family, "-D", dup.chain, (str(i + 1),)) for i in reversed(dup.at[1:])
    ]
    if unwritable_duplicate(dup):
        return (
            "--repair leaves it (control characters in its text, which portmapctl does not"
            " write back): delete the later copies by number, last first: " + "; ".join(commands)
        )
    # The command, then the way by hand in parentheses: JSON `fix` is a command
    # (render.split_fix), the rest goes with the why.
    return (
        f"{fixes.repair} (by hand instead, delete the later copies by number, last"
        " first, as a -D by text deletes the first copy and the rule moves: "
        + "; ".join(f"`{c}`" for c in commands)
        + ")"
    )


def duplicates(live: NatTable, fixes: Fixes) -> List[Problem]:
    """The plugin's rules standing more than once in one chain (planner.duplicates)."""
    from portmapctl.iptables.planner import duplicates as found

    problems = []
    for dup in found(live):
        network, container_id = plugin_rules.rule_owner(dup.rule)
        problems.append(
            Problem(
                ProblemKind.DUPLICATE_ENTRY,
                live.family,
                dup.chain,
                network,
                container_id,
                f"{dup.count} copies of {shown_rule('-A', dup.chain, dup.rule)}",
                _duplicate_fix(live.family, dup, fixes),
                "two writers found it missing at once (the plugin's ADDs after a flush"
                " race so) or a script re-adds the plugin's rules; every packet walks"
                " each copy",
                saved_rules(dup.chain, [dup.rule]),
            )
        )
    return problems


def split_brain(
    tables: ReadOnly[int, NatTable],
    other_tables: ReadOnly[int, NatTable],
    flavours: ReadOnly[int, Tuple[str, str]],
) -> List[Problem]:
    """Portmap chains present in both flavours' tables (empty tables do not count);
    `flavours`: per family, (used, other)."""
    problems = []
    for family in sorted(tables):
        other_table = other_tables.get(family)
        if other_table is None or family not in flavours:
            continue
        used, other = flavours[family]
        both = [
            n for n in tables[family].chains if is_portmap_chain(n) and other_table.has_chain(n)
        ]
        if not both:
            continue
        tool = "ip6tables" if family == 6 else "iptables"
        problems.append(
            Problem(
                ProblemKind.SPLIT_BRAIN,
                family,
                None,
                None,
                None,
                f"{len(both)} portmap chains are in both the {used} and the {other} tables:"
                f" {_names_text(both)}",
                f"find which iptables the plugin runs (`{tool} --version`), then remove the"
                f" portmap chains from the other one ({tool}-{other}-save -t nat shows them)",
                "the kernel applies both copies but each iptables shows only its own: mappings"
                " work on one node and not on another, and gc or the plugin cleans only one",
            )
        )
    return problems
