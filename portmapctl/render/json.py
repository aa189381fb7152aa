"""Schema 2 JSON documents of every command (SPEC §3 "JSON output").

JSON keys are part of the interface: add new ones, never rename. Schema 2 speaks one
vocabulary (docs/json.md, docs/schema/*.json): `chain`, `chain_type`, `backend`,
`network`, `container_id`, `family`, `protocol`, `host_ip`, `host_port`,
`container_ip`, `container_port`; `kind` is only a problem's kind; `fix` is a command
or null. Addresses are plain strings without brackets or prefix; absent values are null.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional
from typing import Mapping as MappingT

from portmapctl.core.backend import Backend
from portmapctl.core.status import ProblemKind
from portmapctl.core.text import bytes_as_text
from portmapctl.render.check import check_summary, rule_text, sorted_problems, split_fix
from portmapctl.render.gc import refused_order, table_order

if TYPE_CHECKING:
    from portmapctl.iptables.inventory import ChainInfo, Mapping
    from portmapctl.ops.add import AddResult
    from portmapctl.ops.check import CheckResult, Problem
    from portmapctl.ops.flush_udp import Flows, FlushResult
    from portmapctl.ops.gc import GcChain, GcResult

SCHEMA = 2
BACKEND = Backend.IPTABLES  # rows and chains of the plugin's iptables backend


# Check's problems name an nft chain `nft:<chain>` (bare `nft`: none) for the text
# table's humans (ops/check/nft.py); JSON says `backend` and the bare chain, as list's
# rows do (docs/json.md: one vocabulary in every document).
NFT_TEXT_PREFIX = "nft:"


def backend_of_chain(chain: Optional[str]) -> Optional[str]:
    if chain is None:
        return None
    return Backend.NFTABLES if chain == "nft" or chain.startswith(NFT_TEXT_PREFIX) else BACKEND


def bare_chain(chain: Optional[str]) -> Optional[str]:
    """A problem's chain as JSON spells it: `nft:hostports` -> `hostports`, `nft` -> null."""
    if chain is None or backend_of_chain(chain) == BACKEND:
        return chain
    return chain[len(NFT_TEXT_PREFIX) :] or None


def unicode_only(value: Any) -> Any:
    """`value` with every byte that is not UTF-8 written as the text `\\xNN`. Such a
    byte (an iptables comment's, a path's) is held as a lone surrogate, which
    json.dumps escapes as `\\udcNN`: no Unicode text, and strict parsers refuse the
    whole document (orjson). `\\xNN`, as the metrics write a path's such bytes; any
    other lone surrogate (a cache file's JSON may escape one) is `\\uNNNN`."""
    if isinstance(value, str):
        return bytes_as_text(value)
    if isinstance(value, dict):
        return {unicode_only(key): unicode_only(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [unicode_only(item) for item in value]
    return value


def document(cache: Optional[MappingT[str, Any]], **body: Any) -> Dict[str, Any]:
    """A schema 2 document: `schema` and `cache` first, then the command's keys."""
    return {"schema": SCHEMA, "cache": dict(cache) if cache is not None else None, **body}


# --- list ------------------------------------------------------------------------------


def mapping_json(
    m: Mapping, conntrack: Optional[MappingT[Mapping, Flows]] = None
) -> Dict[str, Any]:
    doc: Dict[str, Any] = {
        "backend": BACKEND.value,
        "network": m.network,
        "container_id": m.container_id,
        "family": m.family,
        "protocol": m.protocol,
        "host_ip": m.host_ip,
        "host_port": m.host_port,
        "container_ip": m.container_ip,
        "container_port": m.container_port,
        "snat": m.snat,
        "chain": m.chain,
        "status": list(m.status),
    }
    if m.shadowed_by:
        doc["shadowed_by"] = m.shadowed_by
    backend = getattr(m, "backend", None)
    if backend is not None:
        # nftables rows (iptables ones get the key with JSON schema 2).
        doc["backend"] = backend
        doc["chain_type"] = getattr(m, "chain_type", None)
    if m.conditions:
        # (nftables) the rule's matches the other keys cannot say (`iifname "eth0"`).
        doc["conditions"] = list(m.conditions)
    if conntrack is not None and m.protocol == "udp":
        flows = conntrack.get(m)
        doc["conntrack_entries"] = flows.entries if flows else 0
        # Of those, the ones flush-udp --stale-only would delete.
        doc["conntrack_misrouted"] = len(flows.misrouted) if flows else 0
    return doc


def chain_json(c: ChainInfo) -> Dict[str, Any]:
    return {
        "backend": BACKEND.value,
        "chain": c.name,
        "chain_type": c.kind,
        "family": c.family,
        "network": c.network,
        "container_id": c.container_id,
        "status": list(c.status),
    }


def list_json(
    mappings: Iterable[Mapping],
    chains: Iterable[ChainInfo],
    conntrack: Optional[MappingT[Mapping, Flows]] = None,
    cache: Optional[MappingT[str, Any]] = None,
    total: Optional[int] = None,
    misrouted: Optional[int] = None,
) -> Dict[str, Any]:
    rows = [mapping_json(m, conntrack) for m in mappings]
    # With --conntrack: the summary's count of misrouted flows (the rows' own, and
    # those to another address on their ports: what its fix deletes).
    counted = {} if misrouted is None else {"conntrack_misrouted": misrouted}
    return document(
        cache,
        mappings=rows,
        chains=[chain_json(c) for c in chains],
        # How many mappings there are before the filters (equal to len(mappings) without).
        total_mappings=len(rows) if total is None else total,
        **counted,
    )


# --- add -------------------------------------------------------------------------------


def add_json(
    result: AddResult,
    cache: Optional[MappingT[str, Any]] = None,
    warnings: Iterable[str] = (),
    after: Iterable[str] = (),
) -> Dict[str, Any]:
    """add's document; `warnings`: said before the result's own, `after`: after them
    (the cache's notes), as on stderr."""
    return document(
        cache,
        backend=getattr(result, "backend", BACKEND),
        dry_run=result.dry_run,
        changed=result.changed,
        chains=list(result.chains),
        transaction={str(f): text for f, text in sorted(result.transactions.items())},
        warnings=[*warnings, *result.warnings, *after],
    )


# --- check -----------------------------------------------------------------------------


def _problem_backend(p: Problem) -> Optional[str]:
    """nftables for the nft problems, none for a container in both, else iptables."""
    if p.kind == ProblemKind.BOTH_BACKENDS:
        return None
    if str(p.kind).startswith("nft-"):
        return Backend.NFTABLES
    return backend_of_chain(p.chain) or BACKEND


def problem_json(p: Problem) -> Dict[str, Any]:
    command, prose = split_fix(p.fix)
    why = "; ".join(part for part in (p.why, prose) if part)
    return {
        "kind": str(p.kind),
        "backend": _problem_backend(p),
        "family": p.family,
        "chain": bare_chain(p.chain),
        "network": p.network,
        "container_id": p.container_id,
        "detail": p.detail,
        "why": why,
        "fix": command,
        # The rules at issue, one a line (offending, or wanted and missing); null: none.
        "rule": rule_text(getattr(p, "rules", ())),
    }


def check_json(result: CheckResult, cache: Optional[MappingT[str, Any]] = None) -> Dict[str, Any]:
    """SPEC §3: healthy, repaired, problems; plus what a repair fixed."""
    doc = document(
        cache,
        healthy=result.healthy,
        repaired=result.repaired,
        problems=[problem_json(p) for p in sorted_problems(result.problems)],
        fixed=[problem_json(p) for p in sorted_problems(result.fixed)],
        summary=check_summary(result),
    )
    if result.unrepaired:  # only after a repair that had to leave containers out
        doc["unrepaired"] = [
            {"family": f, "network": n, "container_id": c, "chain": chain, "why": why}
            for f, n, c, chain, why in result.unrepaired
        ]
    return doc


# --- gc --------------------------------------------------------------------------------


def _host_ports_json(c: GcChain) -> List[Dict[str, Any]]:
    return [{"protocol": proto, "host_port": port} for proto, port in c.host_ports]


def gc_chain_json(
    c: GcChain, pending: bool = False, min_age: Optional[float] = None
) -> Dict[str, Any]:
    doc: Dict[str, Any] = {
        "backend": c.backend,
        "chain": c.chain,
        "chain_type": c.kind,
        "family": c.family,
        "network": c.network,
        "container_id": c.container_id,
        "host_ports": _host_ports_json(c),
        "chains": list(c.chains),
    }
    if pending:
        doc["seen_seconds"] = c.seen_seconds
        # Held past --min-age: no time to give (0 said "now"), `held` says why.
        doc["removable_in_seconds"] = (
            max(min_age - c.seen_seconds, 0.0) if min_age is not None and c.held is None else None
        )
        doc["held"] = c.held
    return doc


def gc_json(
    result: GcResult,
    min_age: Optional[float] = None,
    cache: Optional[MappingT[str, Any]] = None,
    warnings: Iterable[str] = (),
) -> Dict[str, Any]:
    """`warnings`: said before the result's own (the cache's: cli Output.cache_note)."""
    return document(
        cache,
        dry_run=result.dry_run,
        min_age_seconds=min_age,
        # Rows in the table's order (by network, container, family), not the plan's.
        removed=[gc_chain_json(c) for c in table_order(result.removed)],
        pending=[
            gc_chain_json(c, pending=True, min_age=min_age) for c in table_order(result.pending)
        ],
        kept=result.kept,
        conntrack_deleted=result.conntrack_deleted,
        # Shared chains removed once empty (the legacy CNI-HOSTPORT-SNAT).
        shared_removed=[
            {"backend": BACKEND.value, "chain": name, "family": fam}
            for fam, name in result.shared_removed
        ],
        warnings=[*warnings, *result.warnings],
        # Not removed: iptables refused them, each tried alone (the others went). Only
        # when there are some (docs/schema/gc.json): a new key on a rare path.
        **(
            {
                "refused": [
                    {**gc_chain_json(r.chain), "why": r.why} for r in refused_order(result.refused)
                ]
            }
            if result.refused
            else {}
        ),
        # Not removed: the person did not confirm the question's removal (cli gc).
        **(
            {"declined": [gc_chain_json(c) for c in table_order(result.declined)]}
            if result.declined is not None
            else {}
        ),
    )


# --- flush-udp -------------------------------------------------------------------------


def flush_json(result: FlushResult, cache: Optional[MappingT[str, Any]] = None) -> Dict[str, Any]:
    """SPEC §3: dry_run, deleted (in a dry run: what would be), count; plus why.
    The original destination is the mapped host port: `host_ip`/`host_port`."""
    return document(
        cache,
        dry_run=result.dry_run,
        deleted=[
            {
                "family": d.entry.family,
                "protocol": "udp",
                "src": d.entry.src,
                "sport": d.entry.sport,
                "host_ip": d.entry.dst,
                "host_port": d.entry.dport,
                "reply_src": d.entry.reply_src,
                "reply_sport": d.entry.reply_sport,
                "reason": d.reason.value,
            }
            for d in result.shown
        ],
        count=result.deleted,
    )
