"""What `portmapctl list` does once its options are parsed: by typer (cli/list.py) or
by the fast path (cli/list_fast.py). No typer here: the fast path never imports it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Collection, List, Optional, Sequence, Tuple

from portmapctl.cli._common import Common, snapshot_files
from portmapctl.cli.metrics_file import metrics_recording, node_unrecorded
from portmapctl.core.pause import gc_paused


def run(
    common: Common,
    *,
    container: Optional[List[str]] = None,
    network: Optional[List[str]] = None,
    port: Optional[List[str]] = None,
    proto: Optional[Sequence[Any]] = None,
    status: Optional[Sequence[Any]] = None,
    snapshot: Optional[str] = None,
    snapshot6: Optional[str] = None,
    nft_snapshot: Optional[str] = None,
    conntrack: bool = False,
    metrics_file: Optional[str] = None,
) -> None:
    """`list` with its options as typer hands them (`proto`, `status`: Enum members)."""
    from portmapctl.core import validate
    from portmapctl.ops.node import opened

    out = common.out()
    # A dump's rows are not this node's, nor is a run narrowed to a family or backend
    # the whole node: neither goes into the node's file (node_unrecorded, as check's).
    unrecorded = node_unrecorded(common, snapshot, snapshot6, nft_snapshot)
    metrics = metrics_recording(metrics_file, "list", common.cache_dirs, out, unrecorded=unrecorded)
    with gc_paused(), metrics as recorder:
        ports = tuple(validate.port(p, "--port") for p in port or ())
        for name in network or ():
            validate.cni_name(name, "network name")
        for prefix in container or ():
            # A prefix of a valid ID is itself one: anything else can match nothing.
            validate.cni_name(prefix, "container ID")
        snapshots, nft_snapshot = snapshot_files(snapshot, snapshot6, nft_snapshot)
        options = common.node_options(snapshots, nft_snapshot)
        if conntrack and options.offline:
            # Said before the snapshot is read: whatever the file holds, the two clash.
            from portmapctl.errors import BadInput

            raise BadInput("--conntrack reads the kernel: it cannot be used with --snapshot")
        with opened(options) as node, out.busy("reading the ruleset and the CNI cache"):
            # iptables-save first (the longest to run), then nft; the modules below are
            # imported and the cache read while they run.
            started = node.start_read()
            reader = _start_nft_read(node)
            from portmapctl import render
            from portmapctl.iptables import inventory

            tables, attachments = node.read_with_cache(started)
            from portmapctl.cni.cache import warnings

            for warning in warnings(attachments, options.cache_dirs):
                out.warn(warning)
            found = inventory.build(tables, attachments)
            nft_rows: list = []
            if reader is not None:
                nft_rows = _nft_rows(node, reader, attachments, found, out)
                for unread in node.nft_unread():
                    out.warn(unread)
            # (Where the plugin's nftables tables are, even empty, the plugin is
            # there: only containers' chains in the other flavour are worth a word.)
            from portmapctl.ops.flavour_guard import chains_elsewhere

            nft_here = reader is not None and bool(reader[1]["live"].tables)
            for elsewhere in chains_elsewhere(node.backend, tables, nft_here):
                out.warn(elsewhere)
            mappings: list = []
            owners = None
            other = None
            if found.mappings or nft_rows:
                from portmapctl.ops.owners import node_rows, read_owners

                # Other owners of the rows' ports: another nftables table's nat hook,
                # the other backend, another tool's iptables rule (ops/owners.py).
                live = reader[1].get("live") if reader is not None else None
                from portmapctl.ops.flavour_guard import other_flavour_readers

                other = other_flavour_readers(node.backend, tuple(tables))
                owners = read_owners(node, tables, found.mappings, nft_rows, live, other)
                mappings = node_rows(found.mappings, nft_rows, owners)
            unread = None
            if not mappings and not found.chains:
                from portmapctl.ops.flavour_guard import unread_backend

                unread = unread_backend(node)
                if unread is not None:
                    out.warn(unread.warning("to list them"))
            if recorder is not None:
                from portmapctl.ops.nft import backends_read

                read = backends_read(node, tuple(tables))
                recorder.note_node(mappings, found.chains, tuple(tables), read)
            counts = None
            if conntrack:
                from portmapctl.cni.leases import leased_networks
                from portmapctl.ops.flow_owners import Judging, node_judging
                from portmapctl.ops.flush_udp import count_flows

                # Misrouted as flush-udp --stale-only judges: by every rule that routes
                # flows, the other backend's under --backend iptables or nftables too.
                whole = reader is not None and node.options.reads_iptables
                judging = (
                    Judging(
                        mappings,
                        tables,
                        other[1] if other else {},
                        node,
                        owners.hook_ports() if owners is not None else frozenset(),
                        leased_networks(attachments),
                    )
                    if whole
                    else node_judging(node, tables, attachments)
                )
                counts = count_flows(mappings, judging)
        cache = common.cache()
        out.cache_note(cache)
        wanted = Filters(
            tuple(container or ()),
            tuple(network or ()),
            ports,
            tuple(p.value for p in proto or ()),
            tuple(s.value for s in status or ()),
        )
        if owners is not None and (owners.unsure or owners.unread):
            from portmapctl.ops.owners import unsure_warnings

            # Said of the rows shown only (list --container X is about X).
            for warning in unsure_warnings(owners, wanted.mapping if wanted.any else None):
                out.warn(warning)
        # Without filters every row and chain stays: not asked one by one.
        rows = sorted(
            (m for m in mappings if wanted.mapping(m)) if wanted.any else mappings,
            key=render.sort_key,
        )
        chains = [c for c in found.chains if wanted.chain(c)] if wanted.any else list(found.chains)
        if wanted.by_row:
            # A chain stays when one of its rows does (or, without rows, when it matches).
            kept = {(m.chain, m.family) for m in rows}
            with_rows = {(m.chain, m.family) for m in mappings}
            chains = [
                c
                for c in chains
                if (c.name, c.family) in kept
                or ((c.name, c.family) not in with_rows and wanted.bare_chain(c))
            ]
        chains.sort(key=render.chain_sort_key)
        undecided = inventory.undecided_note(chains)  # (of the chains shown)
        if undecided is not None:
            out.warn(undecided)
        total = len(mappings)
        flows = counts.rows if counts is not None else None
        # The fix's count: with one --container it is narrowed to that container's own
        # addresses (flush_fix), so flows to another address on its ports are not its.
        misrouted = (
            counts.misrouted(rows, elsewhere=len(wanted.containers) != 1)
            if counts is not None
            else None
        )
        if out.json:
            out.print_json(render.list_json(rows, chains, flows, cache.json(), total, misrouted))
            return
        udp_mapped = {(m.family, m.host_port) for m in mappings if m.protocol == "udp"}
        fix = flush_fix(options, wanted, udp_mapped) if misrouted else render.FLUSH_STALE
        summary = render.list_summary(
            rows, chains, total if wanted.any else None, misrouted or 0, fix
        )
        if (rows or chains) and not out.quiet:  # -q: the summary line alone
            out.show(
                render.list_table(
                    rows,
                    chains,
                    flows,
                    wide=out.wide,
                    full_ids=out.no_trunc,
                    header=not out.no_headers,
                    width=out.width(),
                    # Short forms told apart on the node, not only among the rows shown:
                    # `--container` with one selects that chain alone.
                    unknown=render.unknown_chains(mappings, found.chains),
                )
            )
            out.blank()
        elif not mappings and not found.chains:
            # Narrowed by --backend to the one the plugin does not use here: "nothing"
            # would be wrong (the warning above says where the mappings are).
            summary = "no portmap chains found" + (
                f" in {unread.looked_at}" if unread is not None else ""
            )
        out.summary(summary)


@dataclass(frozen=True)
class Filters:
    """list's filters: each tuple is "any of these" (empty: no filter)."""

    containers: Tuple[str, ...] = ()
    networks: Tuple[str, ...] = ()
    ports: Tuple[int, ...] = ()
    protocols: Tuple[str, ...] = ()
    statuses: Tuple[str, ...] = ()

    @property
    def any(self) -> bool:
        return any((self.containers, self.networks, self.ports, self.protocols, self.statuses))

    @property
    def by_row(self) -> bool:
        """Filters only a mapping (a row) can answer."""
        return bool(self.ports or self.protocols or self.statuses)

    def _owner(self, network: Optional[str], container_id: Optional[str], chain: str) -> bool:
        if self.networks and network not in self.networks:
            return False
        if not self.containers:
            return True
        from portmapctl.iptables.inventory import owned_by  # (read the node: imported)

        return owned_by(container_id, chain, self.containers)

    def mapping(self, m: Any) -> bool:
        return (
            self._owner(m.network, m.container_id, m.chain)
            and (not self.ports or m.host_port in self.ports)
            and (not self.protocols or m.protocol in self.protocols)
            and (not self.statuses or any(str(s) in self.statuses for s in m.status))
        )

    def chain(self, c: Any) -> bool:
        return self._owner(c.network, c.container_id, c.name)

    def bare_chain(self, c: Any) -> bool:
        """A chain without DNAT rows: only a status filter can speak for it."""
        return (
            not self.ports
            and not self.protocols
            and (not self.statuses or any(str(s) in self.statuses for s in c.status))
        )


def _start_nft_read(node: Any) -> Optional[Tuple[Any, dict]]:
    """nft lists its tables while the cache is read and iptables-save runs."""
    if node.nft is None:
        return None
    import threading

    box: dict = {}

    def read_nft() -> None:
        try:
            box["live"] = node.read_nft()
        except BaseException as err:  # noqa: BLE001 - re-raised in _nft_rows
            box["error"] = err

    reader = threading.Thread(target=read_nft, name="nft", daemon=True)
    reader.start()
    return reader, box


def _nft_rows(node: Any, started: Tuple[Any, dict], cache: Any, found: Any, out: Any) -> list:
    """The rows of the plugin's nftables backend, in the iptables rows' order."""
    reader, box = started
    reader.join()
    if "error" in box:
        raise box["error"]
    if not box["live"].tables and node.nft_unusable is None:
        # No plugin table, hence no rows: the nftables modules need not even be imported
        # (15 ms of an iptables node's list). Unusable nft is judged below.
        return []
    from portmapctl.ops import nft

    owners = {c.container_id for c in found.chains if c.container_id}
    _live, split, nft_found = nft.build(node, cache, owners, problems=False, live=box["live"])
    if node.nft_unusable is not None and split.nftables:
        # Cached containers whose rules are in nftables, and nft cannot read them: a
        # table that cannot be read stops the command (SPEC §5: never "no chains
        # found"), as in check and gc (exit 3, one line).
        raise node.nft_unusable.needed_by(a.container_id for a in split.nftables)
    if not nft_found.mappings:
        return []
    return list(nft_found.mappings)


def flush_fix(
    options: Any, wanted: Filters, mapped: Optional[Collection[Tuple[int, int]]] = None
) -> str:
    """The flush-udp that deletes the misrouted flows the summary counts: on the same
    namespace, families and cache as this list, narrowed by its --container (one; the
    command takes one) and --port. Its other filters (--network, --status) flush-udp
    cannot say: it deletes the other misrouted flows too, none of them live.

    `mapped`: the (family, host port) of list's UDP rows. flush-udp --port N looks at N
    in every family of the run, and judges a family N is not mapped in as a port
    given (a DNATed flow there goes: another tool's live one too), where list counted
    nothing: without --container a --port is spelled only for the families it is
    mapped in (a --family then), or, mapped in some families for one port and others
    for another, not at all (review h210)."""
    import dataclasses
    import shlex

    from portmapctl import render

    narrowed = ""
    if len(wanted.containers) == 1:
        narrowed += f" --container {shlex.quote(wanted.containers[0])}"
    ports = wanted.ports
    if ports and mapped is not None and len(wanted.containers) != 1:
        # (With one --container flush-udp takes that container's mapped ports alone.)
        families = tuple(options.families)
        where = {p: tuple(f for f in families if (f, p) in mapped) for p in ports}
        ports = tuple(p for p in ports if where[p])  # (a port no UDP row is for: none)
        spans = {where[p] for p in ports}
        if len(spans) != 1:
            ports = ()  # unnarrowed: it deletes only what misroutes on mapped ports
        elif next(iter(spans)) != families:
            options = dataclasses.replace(options, families=next(iter(spans)))
    narrowed += "".join(f" --port {port}" for port in ports)
    return f"{render.FLUSH_STALE}{narrowed}{options.arguments}"
