"""Cross-backend collisions: one host port mapped in iptables and in nftables at once.

On a node in the middle of a backend migration the plugin's iptables chains
(CNI-HOSTPORT-DNAT) and its nftables table (cni_hostport) both hook nat at priority
-100 (dstnat). Which of two mappings of one port gets the traffic depends on the order
the kernel registered the hooks, which no dump shows: neither is `shadowed`, both are
`contested`. Pure and backend-neutral: rows of either inventory in, pairs out.

The same holds for another tool's iptables nat rule that takes the port of an
nftables mapping (iptables/foreign.py's nft_takers: Docker's DNAT, a kube-proxy
NodePort, a hand-written REDIRECT): one hook, one priority, an unknown order. Such
rows are contested too (`foreign_contested`), the rule named by check and add.

So is a row of either backend whose port a rule in the OTHER iptables flavour's nat
table takes (`crossed`: Docker on iptables-legacy, the plugin on iptables-nft, or the
reverse): legacy's nat chains, iptables-nft's and cni_hostport's all hook at -100, and
of nat chains at one hook and priority the kernel runs the one registered LAST first
(measured with real connections, both orders: tests/interop/
test_foreign_verdicts_traffic.py);
nothing a dump shows says which was registered when, or re-created since.

Another nftables table's nat prerouting hook, or output hook for a row on a loopback
host IP (a hand-written nft firewall,
nftables/foreign.py) is judged by priority against the row's own hook (`hooked`):
earlier takes the port (`shadowed`, `shadowed_by` that rule as `nft list` prints
it), the same priority is the hook order again (`contested`), later takes nothing.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Collection, Dict, Iterable, List, Optional, Sequence, Tuple, TypeVar
from typing import Mapping as ReadOnly

from portmapctl.core.backend import Backend
from portmapctl.core.mapping import Mapping, destination
from portmapctl.core.status import Status

M = TypeVar("M", bound=Mapping)

# A row that takes no traffic of its port for sure contests nothing: the backend's own
# winner speaks for a shadowed row; a dead rule matches no packet; an orphan chain is
# entered by no rule.
_TAKES_NOTHING = frozenset((Status.SHADOWED, Status.DEAD, Status.ORPHAN))


def backend_of(row: Mapping) -> Backend:
    """The plugin backend a row is in (nftables rows say so; iptables rows predate it)."""
    return getattr(row, "backend", Backend.IPTABLES)


def takes_port(row: Mapping) -> bool:
    # A row with conditions takes only some of the port's packets: as within one
    # backend (a conditional rule shadows nothing), it contests nothing.
    return not row.conditions and not any(s in _TAKES_NOTHING for s in row.status)


def _overlap(a: Optional[str], b: Optional[str]) -> bool:
    return a is None or b is None or a == b


def contests(rows: Iterable[M]) -> Dict[M, Tuple[M, ...]]:
    """Each contested row -> the other backend's rows it collides with (same family,
    protocol and host port, overlapping host IP, another container), in input order.
    Empty unless both backends have rows."""
    by_port: Dict[Tuple[int, str, int], List[M]] = {}
    backends = set()
    for row in rows:
        if takes_port(row):
            by_port.setdefault((row.family, row.protocol, row.host_port), []).append(row)
            backends.add(backend_of(row))
    found: Dict[M, Tuple[M, ...]] = {}
    if len(backends) < 2:
        return found  # the usual node: one backend, nothing to compare
    for same in by_port.values():
        if len({backend_of(r) for r in same}) < 2:
            continue
        for row in same:
            others = tuple(
                o
                for o in same
                if backend_of(o) != backend_of(row)
                and _overlap(row.host_ip, o.host_ip)
                # A container with rules in both backends (both-backends) does not
                # contest itself.
                and (row.container_id is None or o.container_id != row.container_id)
            )
            if others:
                found[row] = others
    return found


def flavour_rivals(mine: Iterable[M], theirs: Iterable[M]) -> Dict[M, Tuple[M, ...]]:
    """Each row of `mine` -> the rows of the plugin's own chains in the other iptables
    flavour (`theirs`, a split-brain node's) that map its port too (same family,
    protocol and host port, overlapping host IP, another container), in their order:
    both nat tables hook at -100, so which one gets the traffic is the kernel's hook
    order, as between the backends (`contests`). A row that takes nothing there
    (shadowed in its own table, dead, with conditions) contests nothing."""
    by_port: Dict[Tuple[int, str, int], List[M]] = {}
    for row in theirs:
        if takes_port(row):
            by_port.setdefault((row.family, row.protocol, row.host_port), []).append(row)
    found: Dict[M, Tuple[M, ...]] = {}
    if not by_port:
        return found
    for row in mine:
        if not takes_port(row):
            continue
        others = tuple(
            o
            for o in by_port.get((row.family, row.protocol, row.host_port), ())
            if _overlap(row.host_ip, o.host_ip)
            # The container's own copy there (its split brain) DNATs to it alike.
            and (row.container_id is None or o.container_id != row.container_id)
        )
        if others:
            found[row] = others
    return found


PortKey = Tuple[int, str, int]  # family, protocol, host port
# ... and the one address its connections are for (None: every address): a loopback
# one's pass the nat output hook, the others' prerouting, and another tool's rule for
# one destination takes all or none of them (core/mapping.destination).
HookPortKey = Tuple[int, str, int, Optional[str]]


def hook_port_key(row: Mapping) -> HookPortKey:
    return (row.family, row.protocol, row.host_port, destination(row.host_ip))


def foreign_contested(
    rows: Iterable[M], taken: Optional[ReadOnly[HookPortKey, str]]
) -> Dict[M, str]:
    """Each nftables row whose port another tool's rule takes at the same hook priority
    (`taken`: hook_port_key -> that rule) -> the rule."""
    return crossed(rows, taken, nft_only=True)


def crossed(
    rows: Iterable[M], taken: Optional[ReadOnly[HookPortKey, str]], nft_only: bool = False
) -> Dict[M, str]:
    """Each row (of either backend, or nftables only) whose port a rule of another nat
    table at the row's own hook priority takes (`taken`: hook_port_key -> that rule; the
    other iptables flavour's, ops/owners.py) -> the rule."""
    if not taken:
        return {}
    return {
        row: taken[key]
        for row in rows
        if not (nft_only and backend_of(row) == Backend.IPTABLES)
        and takes_port(row)
        and (key := hook_port_key(row)) in taken
    }


def hooked(
    rows: Iterable[M],
    taken: Optional[ReadOnly[PortKey, Tuple[int, str]]],
    priority: Callable[[M], int],
) -> Dict[M, Tuple[str, str]]:
    """Each row whose port another table's nat hook takes (`taken`:
    (family, protocol, host port) -> (that hook's priority, the rule)) -> (shadowed or
    contested, the rule), by that priority against the row's own (`priority`)."""
    found: Dict[M, Tuple[str, str]] = {}
    for row in rows:
        hit = taken.get((row.family, row.protocol, row.host_port)) if taken else None
        if hit is None or not takes_port(row):
            continue
        own = priority(row)
        if hit[0] < own:
            found[row] = (Status.SHADOWED, hit[1])
        elif hit[0] == own:
            found[row] = (Status.CONTESTED, hit[1])
    return found


def hook_marked(rows: Sequence[M], found: ReadOnly[M, Tuple[str, str]]) -> List[M]:
    """`rows` with what `hooked` found added (a shadowed row names the rule)."""
    if not found:
        return list(rows)
    marked_rows = []
    for row in rows:
        if row not in found:
            marked_rows.append(row)
            continue
        word, rule = found[row]
        status = (*(s for s in row.status if s not in (Status.OK, word)), word)
        if word == Status.SHADOWED:
            marked_rows.append(replace(row, status=status, shadowed_by=row.shadowed_by or rule))
        else:
            marked_rows.append(replace(row, status=status))
    return marked_rows


def marked(
    rows: Sequence[M],
    taken: Optional[ReadOnly[HookPortKey, str]] = None,
    other_flavour: Optional[ReadOnly[HookPortKey, str]] = None,
    rivals: Collection[M] = (),
) -> List[M]:
    """`rows` with `contested` added to the status of each contested one: by the other
    backend's rows, by another tool's rule (`taken`, see foreign_contested), by a
    rule in the other iptables flavour's nat table (`other_flavour`, see crossed), or
    by the plugin's chain of another container there (`rivals`: the rows
    flavour_rivals found)."""
    found = {
        **contests(rows),
        **foreign_contested(rows, taken),
        **crossed(rows, other_flavour),
        **dict.fromkeys(rivals),
    }
    if not found:
        return list(rows)
    return [
        replace(r, status=(*(s for s in r.status if s != Status.OK), Status.CONTESTED))
        if r in found and Status.CONTESTED not in r.status
        else r
        for r in rows
    ]
