"""gc of the plugin's nftables backend (v1.6 on): which containers' rules go, one
`nft -f` transaction deleting them by handle, their sightings for --min-age. The
iptables side and the run as a whole are in gc.py, which calls `gc_nftables`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from portmapctl.cni.cache import Attachment
from portmapctl.ops import gc_state
from portmapctl.ops.gc import GcChain, GcOptions, Sources, read_cache_while_planning
from portmapctl.ops.node import Node

if TYPE_CHECKING:
    from portmapctl.nftables.ruleset import Ruleset


# Its rules carry the bare container ID and no network: liveness is by ID (the cache's
# IDs on any network, bare valid-attachments lists, --keep), and a network-scoped
# valid-attachments document alone speaks for no nftables rule. One GcChain per
# (family, container): chain "nft:<ID>", kind "nft-rule".

NFT_KIND = "nft-rule"


def nft_key(family: int, container_id: str) -> str:
    return f"nft{family} {container_id}"


def nft_key_family(key: str) -> int:
    head = key.split(" ", 1)[0][3:]
    return int(head) if head.isdigit() else 0


def _nft_live_ids(sources: Sources, attachments: Optional[Sequence[Attachment]]) -> Set[str]:
    # --netns-liveness: a cache entry whose namespace is gone (a zombie) is not live.
    ids = {
        a.container_id
        for a in attachments or ()
        if not (getattr(sources, "netns_liveness", False) and a.zombie)
    }
    for document in sources.documents:
        ids.update(document.container_ids)
    return ids


# (removed, pending, sightings, freed UDP ports per family, live (family, container) kept)
NftPlan = Tuple[List[GcChain], List[GcChain], Dict[str, gc_state.Seen], Dict[int, Set[int]], int]


def gc_nftables(
    node: Node,
    sources: Sources,
    options: GcOptions,
    seen: Mapping[str, gc_state.Seen],
    cache_dirs: Sequence[str],
    warnings: List[str],
) -> Tuple[str, Optional[NftPlan]]:
    from portmapctl.nftables.node import dead_containers
    from portmapctl.nftables.ruleset import CONTAINER_CHAINS
    from portmapctl.nftables.transaction import Transaction as NftTransaction

    use_cache = bool(cache_dirs)
    if (
        sources.documents
        and all(d.network is not None for d in sources.documents)
        and not (use_cache or sources.keep or sources.remove_all)
    ):
        return "", None  # network-scoped documents only: nftables rules name no network
    latest: List[NftPlan] = []

    def plan(live_rules: Ruleset) -> NftTransaction:
        attachments = read_cache_while_planning(node, cache_dirs, warnings) if use_cache else None
        ids = _nft_live_ids(sources, attachments)

        def is_live(cid: str) -> bool:
            return cid in ids or any(cid.startswith(k) for k in sources.keep)

        now = gc_state.clock()
        removed: List[GcChain] = []
        pending: List[GcChain] = []
        new_seen: Dict[str, gc_state.Seen] = {}
        txn = NftTransaction()
        gone_udp: Dict[int, Set[int]] = {}
        for dead in dead_containers(live_rules, is_live):
            for family in dead.families:
                if family not in node.families:
                    continue
                rules = tuple(r for r in dead.rules if r.family == family)
                ports = tuple((p, n) for f, p, n in dead.host_ports if f == family)
                key = nft_key(family, dead.container_id)
                mark = type(dead)(dead.container_id, rules, ()).fingerprint
                before = seen.get(key)
                first = before.first_seen if before and before.fingerprint == mark else now
                new_seen[key] = gc_state.Seen(mark, first)
                name = f"nft:{dead.container_id}"
                item = GcChain(
                    name,
                    family,
                    NFT_KIND,
                    None,
                    dead.container_id,
                    ports,
                    round(max(now - first, 0.0), 1),
                )
                allowed = options.only is None or (family, name) in options.only
                if now - first >= options.min_age and allowed:
                    removed.append(item)
                    for rule in rules:
                        txn.delete_rule(family, rule.chain, rule.handle)
                    gone_udp.setdefault(family, set()).update(n for p, n in ports if p == "udp")
                else:
                    pending.append(item)
        # UDP ports another rule still maps are not freed.
        still = _nft_udp_ports(live_rules, {(op.family, op.handle or 0) for op in txn.ops})
        freed = {f: ports - still.get(f, set()) for f, ports in gone_udp.items()}
        kept = len(
            {
                (family, rule.comment)
                for family, table in live_rules.tables.items()
                if family in node.families
                for chain in CONTAINER_CHAINS
                for rule in table.rules_of(chain)
                if rule.comment and is_live(rule.comment)
            }
        )
        latest.append((removed, pending, new_seen, {f: p for f, p in freed.items() if p}, kept))
        return txn

    text = node.converge_nft(plan, dry_run=options.dry_run)
    return text, (latest[-1] if latest else None)


def _nft_udp_ports(live_rules: Ruleset, gone: Set[Tuple[int, int]]) -> Dict[int, Set[int]]:
    """family -> UDP host ports the rules not in `gone` (family, handle) still map."""
    from portmapctl.nftables.ruleset import CONTAINER_CHAINS

    found: Dict[int, Set[int]] = {}
    for family, table in live_rules.tables.items():
        for chain in CONTAINER_CHAINS:
            for rule in table.rules_of(chain):
                if (family, rule.handle) in gone:
                    continue
                port = rule.body.value("udp dport")
                if port is not None and port.isdigit():
                    found.setdefault(family, set()).add(int(port))
    return found
