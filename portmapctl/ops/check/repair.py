"""`check --repair`: plans with `planner.plan_setup` from the same wanted chains the
diagnosis compares against and applies through `Node.converge`. It only creates what is
missing (a cached container's own chain is rewritten when its rules differ, as the
plugin's ADD would), never deletes another container's chain, and leaves stale state
to `gc`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from portmapctl.cni.cache import Attachment
from portmapctl.core.mapping import MappingConfig
from portmapctl.errors import ApplyFailed, BadInput
from portmapctl.iptables.chains import (
    TOPLEVEL_DNAT,
    dnat_chain_name,
    wanted_chains,
)
from portmapctl.iptables.planner import plan_setup
from portmapctl.iptables.ruleset import (
    NatTable,
    rule_target,
)
from portmapctl.iptables.transaction import OpKind, Transaction
from portmapctl.ops.add import after_setup, after_setup_many
from portmapctl.ops.check.diagnose import CheckResult, cached_configs, wanted_on_node
from portmapctl.ops.check.run import _check_node, check_mapping, nft_mapping
from portmapctl.ops.node import Node

# --- repair ---------------------------------------------------------------------------


def _plan(
    configs: Optional[Sequence[MappingConfig]], single: Optional[MappingConfig]
) -> Callable[[NatTable], Transaction]:
    """The planner for one family: what the check compares against, made to exist."""

    def plan(live: NatTable) -> Transaction:
        if single is not None:
            return plan_setup(wanted_chains(single, live.family), live)
        shared, per_container = wanted_on_node(configs, live.family, live)
        return plan_setup([*shared, *(chain for _, chain in per_container)], live)

    return plan


def _changed(txn: Transaction, configs: Sequence[MappingConfig]) -> List[MappingConfig]:
    """The mappings a repair (re)made: their chain or entry rules were written, or the
    jumps into CNI-HOSTPORT-DNAT were (then every mapping of the family was dark)."""
    touched = set()
    whole_family = False
    for op in txn.ops:
        target = rule_target(op.args) if op.args else None
        touched.update({op.chain, target})
        if (op.kind is OpKind.NEW_CHAIN and op.chain == TOPLEVEL_DNAT) or (
            op.chain in ("PREROUTING", "OUTPUT") and target == TOPLEVEL_DNAT
        ):
            whole_family = True
    return [
        c
        for c in configs
        if txn.family in c.families and (whole_family or dnat_chain_name(c) in touched)
    ]


@dataclass(frozen=True)
class Unrepaired:
    """A container whose mapping a repair could not (re)make, and why."""

    family: int
    network: str
    container_id: str
    chain: str
    why: str

    @property
    def text(self) -> str:
        return (
            f"could not repair IPv{self.family} {self.network}/{self.container_id}"
            f" ({self.chain}): {self.why}"
        )


def _missing_reference(config: MappingConfig, live: NatTable) -> Optional[str]:
    """Why `config` cannot be set up in this table as it is, found before trying:
    its externalSetMarkChain is the admin's to create (the plugin never makes it)."""
    chain = config.external_setmark_chain
    if chain is not None and not live.has_chain(chain):
        return (
            f"its externalSetMarkChain {chain} does not exist in the IPv{live.family} nat"
            " table (the plugin does not create it: restore it, then repair again)"
        )
    return None


def _repair_family(
    node: Node, family: int, configs: Sequence[MappingConfig]
) -> Tuple[List[Transaction], List[Unrepaired]]:
    """Repair one family container by container where needed (SPEC §5: one bad record
    stops nothing). First everything in one transaction, as always; when iptables
    refuses it, the shared chains alone, then each container alone, so that the one
    it refuses is named and all the others are repaired."""
    skipped: Dict[str, Unrepaired] = {}

    def usable(live: NatTable) -> List[MappingConfig]:
        kept = []
        for config in configs:
            why = _missing_reference(config, live)
            if why is None:
                kept.append(config)
                skipped.pop(dnat_chain_name(config), None)
            elif family in config.families:
                name = dnat_chain_name(config)
                skipped[name] = Unrepaired(family, config.network, config.container_id, name, why)
        return kept

    def plan_all(live: NatTable) -> Transaction:
        return _plan(usable(live), None)(live)

    try:
        txn = node.converge(family, plan_all)
        return ([txn] if txn else []), list(skipped.values())
    except ApplyFailed:
        pass
    applied: List[Transaction] = []

    def plan_shared(live: NatTable) -> Transaction:
        shared, _ = wanted_on_node(usable(live), family, live)
        return plan_setup(shared, live)

    txn = node.converge(family, plan_shared)  # the shared chains failing fails the family
    if txn:
        applied.append(txn)
    failed: List[Unrepaired] = []
    for config in configs:
        if family not in config.families or dnat_chain_name(config) in skipped:
            continue

        def plan_one(live: NatTable, config: MappingConfig = config) -> Transaction:
            if _missing_reference(config, live) is not None:
                return Transaction(family)
            shared, per_container = wanted_on_node([config], family, live)
            return plan_setup([*shared, *(chain for _, chain in per_container)], live)

        try:
            txn = node.converge(family, plan_one)
        except ApplyFailed as err:
            name = dnat_chain_name(config)
            failed.append(
                Unrepaired(
                    family, config.network, config.container_id, name, f"iptables refused it: {err}"
                )  # fmt: skip
            )
            continue
        if txn:
            applied.append(txn)
    return applied, [*skipped.values(), *failed]


def repair(
    node: Node, config: Optional[MappingConfig] = None, *, flush_udp: bool = True
) -> CheckResult:
    """Create what is missing (cached mappings, or `config`, and the top-level
    structure), then check again. Returns the check after, with what was fixed and
    what could not be (by container, with the reason)."""
    if node.options.offline or (node.options.uses_iptables and not node.backend.writable):
        raise BadInput("--repair changes the node: it cannot work on a --snapshot")
    attachments: Optional[List[Attachment]] = None
    if config is not None:
        before = check_mapping(node, config)
        configs: Optional[List[MappingConfig]] = [config]
        families = before.families
    else:
        attachments = node.read_cache()
        before = _check_node(node, attachments)
        configs = cached_configs(attachments) if attachments is not None else None
        families = node.families
    if config is not None and nft_mapping(node, config):
        return _repair_nft_mapping(node, config, before, flush_udp)
    from portmapctl.ops.check import nft as check_nft

    nft_ids: set = set()
    if config is None and attachments is not None:
        if node.nft is None:
            # nftables not looked at: containers configured for it still get nothing
            # in iptables, and nothing is written in nftables.
            excluded = check_nft.configured_nft(attachments)
        else:
            from portmapctl.ops import nft

            parts = nft.split(
                attachments,
                node.read_nft(),
                check_nft.iptables_owners(node.read(), attachments),
                node.options.backend,
            )
            excluded = nft_ids = {a.container_id for a in parts.nftables}
        if configs is not None:
            configs = [c for c in configs if c.container_id not in excluded]
    transactions: Dict = {}
    changed: Dict[str, Tuple[MappingConfig, List[int]]] = {}
    unrepaired: List[Unrepaired] = []
    for family in families:
        if config is None and configs:
            txns, family_unrepaired = _repair_family(node, family, configs)
            unrepaired += family_unrepaired
        else:
            txn = node.converge(family, _plan(configs, config))
            txns = [txn] if txn else []
        if not txns:
            continue
        transactions[family] = "".join(t.render() for t in txns)
        left_out = {u.chain for u in unrepaired if u.family == family}
        for txn in txns:
            for c in _changed(txn, configs or []):
                if dnat_chain_name(c) in left_out:
                    continue  # nothing of it was made: no route_localnet, no flush
                fams = changed.setdefault(dnat_chain_name(c), (c, []))[1]
                if family not in fams:
                    fams.append(family)
    nft_changed: List[Tuple[MappingConfig, List[int]]] = []
    if nft_ids:
        text, nft_changed = check_nft.nft_repair(node, attachments, dry_run=False)
        if text:
            transactions["nft"] = text  # both families, one `nft -f` transaction
    warnings: List[str] = [u.text for u in unrepaired]
    for c, fams in nft_changed:
        warnings += after_setup(c, fams, flush_udp)
    # As the plugin's ADD: route_localnet, and no UDP flow left pinned to the
    # un-NATed path it took while the mapping was missing.
    warnings += after_setup_many(list(changed.values()), flush_udp)
    after = check_mapping(node, config) if config is not None else _check_node(node, attachments)
    remaining = {p.key for p in after.problems}
    fixed = tuple(p for p in before.problems if p.key not in remaining)
    return CheckResult(
        after.problems,
        after.families,
        after.scope,
        after.cache_present,
        after.mappings_checked,
        after.chains_seen,
        after.chain,
        repaired=bool(transactions),
        fixed=fixed,
        transactions=transactions,
        notes=after.notes,
        warnings=after.warnings + tuple(warnings),
        found=after.found,
        nft_found=after.nft_found,
        unrepaired=tuple((u.family, u.network, u.container_id, u.chain, u.why) for u in unrepaired),
    )


def _repair_nft_mapping(
    node: Node, config: MappingConfig, before: CheckResult, flush_udp: bool
) -> CheckResult:
    from portmapctl.nftables.transaction import check_condition
    from portmapctl.ops.add import nft_refusals
    from portmapctl.ops.check import nft as check_nft

    nft_refusals(config)
    for condition in (*config.conditions_v4, *config.conditions_v6):
        check_condition(condition)
    text, families = check_nft.repair_mapping(node, config, before.families)
    warnings = after_setup(config, families, flush_udp) if families else []
    after = check_mapping(node, config)
    remaining = {p.key for p in after.problems}
    return CheckResult(
        after.problems,
        after.families,
        after.scope,
        mappings_checked=after.mappings_checked,
        chain=after.chain,
        repaired=bool(text),
        fixed=tuple(p for p in before.problems if p.key not in remaining),
        transactions={"nft": text} if text else {},
        warnings=tuple(warnings),
    )
