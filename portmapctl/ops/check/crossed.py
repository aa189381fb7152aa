"""check's problems between a host port's owners on the node: the plugin's other
backend (`contested`: core/contest.py), another tool's iptables rule on an nftables
mapping's port (iptables/foreign.py), and other nftables tables' nat prerouting (output,
for a loopback host IP) hooks (nftables/foreign.py), and another tool's rule in the other
iptables flavour's nat table or the plugin's chain of another container there
(ops/owners.py). None of them is the plugin's to repair: their fix is gc when the
other side is stale, else prose."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from portmapctl.core.backend import Backend
from portmapctl.core.contest import backend_of
from portmapctl.core.status import ProblemKind
from portmapctl.core.text import name_text
from portmapctl.ops.check.hints import Fixes
from portmapctl.ops.check.nft import STALE, rule_text, rules_by_handle
from portmapctl.ops.check.problem import Problem, entries_for
from portmapctl.ops.owners import Owners

if TYPE_CHECKING:
    from portmapctl.iptables import inventory
    from portmapctl.nftables.inventory import NftInventory
    from portmapctl.nftables.ruleset import Ruleset


_CONTESTED_WHY = (
    "iptables' and nftables' nat hooks run at one priority (dstnat, -100): the order in"
    " which the kernel registered them, which no dump shows, decides which of the two"
    " mappings gets the port's traffic; the other gets none"
)


_CONTESTED_WHY_FOREIGN = (
    "iptables' nat PREROUTING and the plugin's nftables prerouting chain hook at one"
    " priority (dstnat, -100): the order in which the kernel registered them, which no"
    " dump shows, decides whether another tool's iptables rule or this mapping gets"
    " the port's traffic"
)


def contested_problems(
    found: Optional[inventory.Inventory],
    nft_found: Optional[NftInventory],
    live: Optional[Ruleset],
    fixes: Fixes,
    owners: Owners,
) -> List[Problem]:
    """One `contested` problem per mapping whose host port the other backend maps too
    (core/contest.py says which), naming the other side; one per nftables mapping
    whose port another tool's iptables nat rule takes (`owners.taken`,
    iptables/foreign.py). Its fix removes the row's own side when it is stale or a
    zombie, else the other side when that is (as shadowed's does when the winner is);
    otherwise no command of ours can pick a winner: prose (JSON `fix` null)."""
    if found is None or nft_found is None or not nft_found.mappings:
        return []
    from portmapctl.core.contest import contests, foreign_contested, hook_marked

    rules = rules_by_handle(live) if live is not None else {}
    problems: List[Problem] = []
    # As list marks them (ops/owners.py node_rows): a row another table's earlier hook
    # shadows gets no traffic, so it contests nothing and nothing contests it.
    rows, nft_rows = (
        hook_marked(found.mappings, owners.hooked),
        hook_marked(nft_found.mappings, owners.hooked),
    )
    for row, rule in foreign_contested(nft_rows, owners.taken).items():
        problems.append(
            Problem(
                ProblemKind.CONTESTED.value,
                row.family,
                f"nft:{row.chain}",
                row.network,
                row.container_id,
                f"{row.protocol}/{row.host_port} is also taken by an iptables rule outside"
                f" the plugin's chains ({rule}); the kernel's hook order decides which gets"
                " the traffic",
                "free the port in that tool's rules, or re-create the container on another"
                " host port",
                _CONTESTED_WHY_FOREIGN,
                rule_text(rules, row),  # type: ignore[arg-type]
            )
        )
    if not rows:
        return problems
    chains = {(c.name, c.family): c for c in found.chains}
    for row, others in contests([*rows, *nft_rows]).items():
        other = others[0]
        # The row's own side first: a stale or zombie row's container is gone, and
        # removing its rules ends the contest whatever the other side is.
        if STALE in row.status:
            fix = f"{fixes.gc} (this side is stale)"
        elif ProblemKind.ZOMBIE.value in row.status:
            fix = f"{fixes.gc} --netns-liveness (this side is a zombie)"
        elif STALE in other.status:
            fix = f"{fixes.gc} (the other side is stale)"
        elif ProblemKind.ZOMBIE.value in other.status:
            fix = f"{fixes.gc} --netns-liveness (the other side is a zombie)"
        else:
            fix = (
                "both are live, and no command of ours picks a winner: re-create one of them"
                " on another host port, or finish the migration (re-create the iptables one"
                ' with "backend": "nftables")'
            )
        problems.append(
            _mapped_too(row, others, str(backend_of(other)), fix, _CONTESTED_WHY, chains, rules)
        )
    return problems


_OTHER_FLAVOUR_WHY = (
    "iptables-legacy's and iptables-nft's nat tables, and the plugin's nftables chains,"
    " hook at one priority (dstnat, -100), and the kernel runs the nat chain it"
    " registered last first: which of the two gets the port's traffic depends on which"
    " table was created (or re-created) later, which no dump shows"
)


def other_flavour_problems(
    found: Optional[inventory.Inventory],
    nft_found: Optional[NftInventory],
    live: Optional[Ruleset],
    owners: Owners,
) -> List[Problem]:
    """One `contested` problem per mapping (either backend) whose port another tool's
    rule in the other iptables flavour's nat table takes (`owners.other_flavour`). No
    command of ours touches another tool's rules: prose."""
    if not owners.other_flavour:
        return []
    from portmapctl.core.contest import crossed, hook_marked

    rows = [*(found.mappings if found else ()), *(nft_found.mappings if nft_found else ())]
    rules = rules_by_handle(live) if live is not None and nft_found is not None else {}
    problems: List[Problem] = []
    # As list marks them: a row another nftables table's earlier hook shadows gets
    # no traffic, so nothing contests it.
    for row, rule in crossed(hook_marked(rows, owners.hooked), owners.other_flavour).items():
        nft = getattr(row, "backend", Backend.IPTABLES) != Backend.IPTABLES
        problems.append(
            Problem(
                ProblemKind.CONTESTED.value,
                row.family,
                f"nft:{row.chain}" if nft else row.chain,
                row.network,
                row.container_id,
                f"{row.protocol}/{row.host_port} is also taken by a rule in the other"
                f" iptables flavour's nat table ({rule}); the kernel's hook order decides"
                " which gets the traffic",
                "free the port in that tool's rules (a tool that runs the other iptables"
                " flavour: Docker's own iptables?), or re-create the container on another"
                " host port",
                _OTHER_FLAVOUR_WHY,
                rule_text(rules, row) if nft else (),  # type: ignore[arg-type]
            )
        )
    return problems


def flavour_rival_problems(
    found: Optional[inventory.Inventory],
    live: Optional[Ruleset],
    owners: Owners,
) -> List[Problem]:
    """One `contested` problem per mapping (either backend) whose port the plugin's
    chain of another container in the other iptables flavour maps too
    (`owners.rivals`, a split-brain node: core/contest.flavour_rivals); the same
    container's copy there is split_brain's. As between the backends, no command of
    ours picks a winner: prose naming the other side."""
    if not owners.rivals:
        return []
    from portmapctl.ops.flavour_guard import named

    chains = {(c.name, c.family): c for c in found.chains} if found is not None else {}
    rules = rules_by_handle(live) if live is not None else {}
    # Where the alternatives differ, --iptables alone would move the other family too.
    apart = len(set(owners.rival_flavours.values())) > 1

    def fix(family: int) -> str:
        other = named(owners.rival_flavours, (family,))
        given = f"--family {family} --iptables {other}" if apart else f"--iptables {other}"
        return (
            "no command of ours picks a winner: re-create one of them on another host"
            f" port, or remove the iptables-{other} one if its container is gone"
            f" (`portmapctl gc {given}`)"
        )

    return [
        _mapped_too(
            row,
            others,
            f"iptables-{named(owners.rival_flavours, (row.family,))}",
            fix(row.family),
            _OTHER_FLAVOUR_WHY,
            chains,
            rules,
        )
        for row, others in owners.rivals.items()
    ]


def _mapped_too(
    row: Any,
    others: Sequence[Any],
    there: str,
    fix: str,
    why: str,
    chains: Dict[Tuple[str, int], Any],
    rules: Any,
) -> Problem:
    """The `contested` problem of a row whose port `others` (rows in `there`: the other
    backend, the other iptables flavour) map too, naming the first of them, with the
    row's own rules as check shows them."""
    if backend_of(row) == Backend.IPTABLES:
        chain = chains.get((row.chain, row.family))
        where = row.chain
        shown = entries_for(chain, [(row.protocol, row.host_port)]) if chain else ()
    else:
        where = f"nft:{row.chain}"
        shown = rule_text(rules, row)
    other = others[0]
    more = f" and {len(others) - 1} more" if len(others) > 1 else ""
    who = f"{name_text(other.network or '?')}/{name_text(other.container_id or '?')}"
    return Problem(
        ProblemKind.CONTESTED.value,
        row.family,
        where,
        row.network,
        row.container_id,
        f"{row.protocol}/{row.host_port} is also mapped in {there} to {who}"
        f" ({other.chain}){more}; the kernel's hook order decides which gets the traffic",
        fix,
        why,
        shown,
    )


_HOOK_WHY = {
    ProblemKind.SHADOWED.value: (
        "nat hooks run by priority, and nat is decided once per connection: another"
        " nftables table's nat hook (prerouting; output for a loopback host IP) that runs"
        " before the plugin's takes those ports, and this container gets no traffic on"
        " them"
    ),
    ProblemKind.CONTESTED.value: (
        "another nftables table's nat hook (prerouting; output for a loopback host IP)"
        " runs at the plugin's priority: the order in which the kernel registered them,"
        " which no dump shows, decides which gets the port's traffic"
    ),
}


def _table_named(table: Optional[str]) -> str:
    """The table a hooked row's rule is in, as nft names it (kube-proxy's NodePorts,
    firewalld's, one written by hand: which one says who to ask)."""
    return f"the nftables table {table}" if table else "another nftables table"


def hook_problems(live: Optional[Ruleset], owners: Owners) -> List[Problem]:
    """One problem per mapping (either backend) whose port another nftables table's nat
    hook takes (`owners.hooked`; prerouting, output for a loopback host IP): shadowed by an earlier hook, contested at
    the same priority (nftables/foreign.py). No command of ours touches another tool's
    table: prose."""
    if not owners.hooked:
        return []
    rules = rules_by_handle(live) if live is not None else {}
    problems: List[Problem] = []
    for row, (word, rule) in owners.hooked.items():
        nft = getattr(row, "backend", Backend.IPTABLES) != Backend.IPTABLES
        if word == ProblemKind.SHADOWED.value:
            detail = (
                f"{row.protocol}/{row.host_port} taken first by another nftables table's"
                f" nat hook (an earlier priority): {rule}"
            )
        else:
            detail = (
                f"{row.protocol}/{row.host_port} is also taken by another nftables table's"
                f" nat hook at the plugin's priority ({rule}); the kernel's hook order"
                " decides which gets the traffic"
            )
        problems.append(
            Problem(
                word,
                row.family,
                f"nft:{row.chain}" if nft else row.chain,
                row.network,
                row.container_id,
                detail,
                f"the node's other NAT owner ({_table_named(owners.hooked_tables.get(row))})"
                " holds this port: free it there or re-create the container on another host"
                " port",
                _HOOK_WHY[word],
                rule_text(rules, row) if nft else (),  # type: ignore[arg-type]
            )
        )
    return problems
