"""check's `both-backends` problem: one container's rules in iptables and nftables.

It decides which copy is the one to remove, and says how. The plugin's DEL cleans
only the backend it uses, so the other copy leaks; gc keeps both while the cache
entry keeps the container live, and no command of ours deletes a live container's
rules: the problem names, command by command, the copy to delete by hand (both,
each under the plugin version that reads the other, when a cached `backend` key
does not settle it), or, with no CNI cache, how to find out which copy is whose.

Apart from ops/check/nft.py (whose node check calls it, for ops/nft.py's Split.both
and, with no cache, the rows of both backends) because it alone of check's nftables
problems reads both backends' rules and spells iptables and nft removals.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Set, Tuple
from typing import Mapping as ReadOnly

from portmapctl.core.backend import Backend
from portmapctl.core.mapping import Mapping
from portmapctl.core.status import ProblemKind
from portmapctl.iptables.ruleset import NatTable
from portmapctl.iptables.shown import shown_rule
from portmapctl.ops.check.nft import rules_by_handle
from portmapctl.ops.check.problem import Problem

if TYPE_CHECKING:
    from portmapctl.nftables.inventory import NftMapping
    from portmapctl.nftables.ruleset import Ruleset
    from portmapctl.ops.check.hints import Fixes
    from portmapctl.ops.nft import Split

WHY = "the plugin's DEL cleans one backend only: the other's rules leak"


def both_backends(
    cid: str,
    tables: ReadOnly[int, NatTable],
    live: Ruleset,
    parts: Split,
    fixes: Fixes,
) -> Optional[Problem]:
    """A container with a copy of its rules in the backend its cached config does not
    use. Its cache entry keeps it live, so gc keeps both copies (a `gc` fix did
    nothing), and no command of ours deletes a live container's rules: the fix is null,
    and `why` says, command by command, how to remove that copy (the plugin's DEL
    cleans only the other; no config: the one the plugin's default, iptables, does).

    A copy is judged per cached network: the iptables chain of a network whose cached
    config uses nftables, or nftables rules when no cached network of the container
    uses nftables. A container on two networks, one per backend (a network switched to
    nftables, the other not), has rules in both and nothing to remove: None.

    A cached `"backend": "nftables"` does not say alone which copy is the plugin's: a
    plugin of v1.6 on keeps the container in nftables, one before v1.6 (Debian's 1.1.1)
    ignores the key and keeps it in iptables (ops/nft.py key_ignored), and the two
    copies are the same whichever plugin wrote which. So `why` gives both removals,
    each under the plugin version it is for: naming the iptables copy alone told the
    operator of a node running 1.1.1 to delete the rules its plugin reads."""
    in_nft = [a for a in parts.nftables if a.container_id == cid]
    if in_nft:
        keep, network = Backend.NFTABLES, in_nft[0].network
        steps, rules = _iptables_copy(tables, {a.dnat_chain for a in in_nft}, fixes)
    else:
        keep = Backend.IPTABLES
        network = next((a.network for a in parts.iptables if a.container_id == cid), None)
        steps, rules = _nft_copy(cid, live)
    if not steps:
        return None  # each copy is a cached network's own
    other = Backend.IPTABLES if keep is Backend.NFTABLES else Backend.NFTABLES
    keyed = any(a.mapping is not None and a.mapping.backend == Backend.NFTABLES for a in in_nft)
    if not keyed:
        # No key, or "iptables": every plugin version keeps it in `keep`.
        detail = f"rules in both iptables and nftables; its cached config uses {keep.value}"
        # Prose, not a command: JSON `fix` is null and this goes to `why` (gc keeps a
        # live container's rules in both backends).
        how = f"remove its {other} copy by hand (gc keeps both: the container is live): "
        how += _commands(steps)
    else:
        nft_steps, nft_rules = _nft_copy(cid, live)
        rules += nft_rules
        detail = (
            "rules in both iptables and nftables; its cached config says nftables, which"
            " plugins before v1.6 ignore"
        )
        how = (
            "remove by hand the copy its plugin does not use (gc keeps both: the container"
            " is live); `portmap` run with no CNI_COMMAND prints its version. With v1.6"
            f" or later (it keeps it in nftables), the iptables copy: {_commands(steps)}."
            ' With a plugin before v1.6 (Debian\'s 1.1.1: "version unknown"; it ignores'
            f" the key and keeps it in iptables), the nftables copy: {_commands(nft_steps)}"
        )
    return Problem(
        ProblemKind.BOTH_BACKENDS.value,
        None,
        None,
        network,
        cid,
        detail,
        how,
        WHY,
        tuple(rules),
    )


def _iptables_copy(
    tables: ReadOnly[int, NatTable], chains: Set[str], fixes: Fixes
) -> Tuple[List[str], List[str]]:
    """The commands that remove `chains` and their entry rules from iptables, and those
    rules as iptables-save prints them."""
    from portmapctl.iptables.plugin_rules import entry_rules

    steps: List[str] = []
    rules: List[str] = []
    for family in sorted(tables):
        table = tables[family]
        for chain in sorted(c for c in chains if table.has_chain(c)):
            for entry in entry_rules(table, {chain})[chain]:
                steps.append(fixes.iptables(family, "-D", entry.chain, entry.args))
                rules.append(shown_rule("-A", entry.chain, entry.args))
            steps.append(fixes.iptables(family, "-F", chain, ()))
            steps.append(fixes.iptables(family, "-X", chain, ()))
            rules += [shown_rule("-A", chain, r) for r in table.rules(chain)]
    return steps, rules


def _nft_copy(cid: str, live: Ruleset) -> Tuple[List[str], List[str]]:
    """The `nft delete rule` of each of the container's rules in the plugin's tables,
    and those rules as `nft list` prints them."""
    from portmapctl.nftables.transaction import Op, OpKind

    steps: List[str] = []
    rules: List[str] = []
    for (family, _handle), rule in sorted(rules_by_handle(live).items()):
        if rule.comment != cid:
            continue
        delete = Op(OpKind.DELETE_RULE, family, rule.chain, handle=rule.handle)
        steps.append(f"nft {delete.line()}")
        rules.append(rule.body.text(family))
    return steps, rules


def _commands(steps: Sequence[str]) -> str:
    return "; ".join(f"`{step}`" for step in steps)


def both_backends_uncached(
    tables: ReadOnly[int, NatTable],
    live: Ruleset,
    nft_rows: Sequence[NftMapping],
    ipt_rows: Sequence[Mapping],
) -> List[Problem]:
    """With no CNI cache: containers whose iptables chain and nftables rules DNAT to
    one address (one attachment mapped in both backends; a container on two networks,
    one per backend, DNATs to two). Live, the plugin's DEL cleans one copy and the
    other leaks; gone, both are stale: wrong either way, though no cache says which.
    Nor which copy its plugin keeps (its config's `backend` key), so no command: `why`
    says how to find out. gc, with no source of liveness, removes neither."""
    in_nft = {(m.container_id, m.family, m.container_ip) for m in nft_rows if m.container_id}
    doubles: Dict[str, Set[str]] = {}  # container ID -> its chains with a copy in nftables
    network: Dict[str, Optional[str]] = {}
    for m in ipt_rows:
        if (m.container_id, m.family, m.container_ip) in in_nft and m.container_id:
            doubles.setdefault(m.container_id, set()).add(m.chain)
            network.setdefault(m.container_id, m.network)
    if not doubles:
        return []
    from portmapctl.iptables.plugin_rules import entry_rules

    by_handle = rules_by_handle(live)
    problems: List[Problem] = []
    for cid in sorted(doubles):
        rules: List[str] = []
        for family in sorted(tables):
            table = tables[family]
            for chain in sorted(c for c in doubles[cid] if table.has_chain(c)):
                rules += [
                    shown_rule("-A", e.chain, e.args) for e in entry_rules(table, {chain})[chain]
                ]
                rules += [shown_rule("-A", chain, r) for r in table.rules(chain)]
        rules += [
            rule.body.text(family)
            for (family, _handle), rule in sorted(by_handle.items())
            if rule.comment == cid
        ]
        problems.append(
            Problem(
                ProblemKind.BOTH_BACKENDS.value,
                None,
                None,
                network[cid],
                cid,
                "rules in both iptables and nftables to one address; no CNI cache says"
                " which its plugin uses",
                # Prose (JSON `fix` null): no cache says which copy is the plugin's.
                "no CNI cache says which copy its plugin keeps (the backend its network"
                " config's `backend` key names; no key, or a plugin before v1.6: iptables):"
                " give --cni-cache-dir where its runtime keeps the CNI cache, and check names"
                " the copy to remove, or both stale (gc removes both only once told the container is not"
                " live: --valid-attachments, --keep)",
                WHY,
                tuple(rules),
            )
        )
    return problems
