"""`portmapctl list`: one row per port mapping, with what is wrong with it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import typer

from portmapctl.cli._common import (
    Annotated,
    Common,
    MetricsFileOpt,
    NftSnapshotOpt,
    ProtoChoice,
    common_options,
    complete_container,
    complete_network,
    metrics_recording,
)
from portmapctl.cli._gc_pause import gc_paused
from portmapctl.core.status import Status

# \b: click keeps the next paragraph as written (an example must stay one line).
EXAMPLES = """
Statuses (a row can have several):

\b
  ok          in place: the host port reaches the container
  stale       no CNI cache entry names the container (it is gone): gc removes it
  shadowed    an earlier rule takes the same host port to another container:
              this one gets no traffic (iptables is first-match-wins)
  orphan      a CNI-DN- chain that no rule enters
  incomplete  an entry rule names a port the chain has no DNAT rule for
  legacy      a CNI-SN- chain of plugins before 2018
  dead        a rule that can never match (-d 0.0.0.0/32, plugins before v0.8.7)
  zombie      cached, but the container's network namespace is gone

Examples:

\b
  portmapctl list --status stale --status shadowed

\b
  portmapctl list

\b
  portmapctl list --container 3f2a --proto udp --conntrack

\b
  portmapctl list -o json --snapshot iptables-save.txt --snapshot6 ip6tables-save.txt
"""


@common_options
def list_command(
    common: Common,
    container: Annotated[
        Optional[List[str]],
        typer.Option(
            metavar="ID",
            help="Only this container (ID prefix; repeat for either).",
            autocompletion=complete_container,
        ),
    ] = None,
    network: Annotated[
        Optional[List[str]],
        typer.Option(
            metavar="NAME",
            help="Only this network (repeat for either).",
            autocompletion=complete_network,
        ),
    ] = None,
    port: Annotated[
        Optional[List[str]],
        typer.Option(metavar="N", help="Only this host port, 1-65535 (repeat for either)."),
    ] = None,
    proto: Annotated[
        Optional[List[ProtoChoice]],
        typer.Option(help="Only this protocol (repeat for either).", case_sensitive=False),
    ] = None,
    status: Annotated[
        Optional[List[Status]],
        typer.Option(
            metavar="WORD",
            help="Only rows with this status (repeat for either).",
            case_sensitive=False,
        ),
    ] = None,
    snapshot: Annotated[
        Optional[str],
        typer.Option(
            metavar="FILE", help="Read an iptables-save dump ('-' for stdin), not the kernel."
        ),
    ] = None,
    snapshot6: Annotated[
        Optional[str], typer.Option(metavar="FILE", help="Read an ip6tables-save dump.")
    ] = None,
    nft_snapshot: NftSnapshotOpt = None,
    conntrack: Annotated[
        bool, typer.Option("--conntrack", help="Count UDP conntrack entries per UDP mapping.")
    ] = False,
    metrics_file: MetricsFileOpt = None,
) -> None:
    """List every port mapping on the node, with its status, sorted by network,
    container, family, protocol and host port; a summary line follows.

    Filters of one kind repeat (either matches); different filters must all hold."""
    from portmapctl.core import validate
    from portmapctl.ops.node import opened

    out = common.out()
    with gc_paused(), metrics_recording(metrics_file, "list", common.cache_dirs, out) as recorder:
        ports = tuple(validate.port(p, "--port") for p in port or ())
        for name in network or ():
            validate.cni_name(name, "network name")
        for prefix in container or ():
            # A prefix of a valid ID is itself one: anything else can match nothing.
            validate.cni_name(prefix, "container ID")
        snapshots = {f: path for f, path in ((4, snapshot), (6, snapshot6)) if path}
        options = common.node_options(snapshots, nft_snapshot)
        with opened(options) as node, out.busy("reading the ruleset and the CNI cache"):
            reader = _start_nft_read(node)
            # Imported while nft lists its tables.
            from portmapctl import render
            from portmapctl.iptables import inventory

            tables, attachments = node.read_with_cache()
            from portmapctl.cni.cache import warnings

            for warning in warnings(attachments):
                out.warn(warning)
            found = inventory.build(tables, attachments)
            mappings = list(found.mappings)
            if reader is not None:
                mappings += _nft_rows(node, reader, attachments, found, out)
            if recorder is not None:
                from portmapctl.ops.nft import backends_read

                read = backends_read(node, tuple(tables))
                recorder.note_node(mappings, found.chains, tuple(tables), read)
            counts = None
            if conntrack:
                if options.offline:
                    from portmapctl.errors import BadInput

                    raise BadInput(
                        "--conntrack reads the kernel: it cannot be used with --snapshot"
                    )
                from portmapctl.ops.flush_udp import count_per_mapping

                counts = count_per_mapping(mappings)
        cache = common.cache()
        out.cache_note(cache)
        wanted = Filters(
            tuple(container or ()),
            tuple(network or ()),
            ports,
            tuple(p.value for p in proto or ()),
            tuple(s.value for s in status or ()),
        )
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
        total = len(mappings)
        if out.json:
            out.print_json(render.list_json(rows, chains, counts, cache.json(), total))
            return
        summary = render.list_summary(rows, chains, total if wanted.any else None)
        if rows or chains:
            out.show(
                render.list_table(
                    rows,
                    chains,
                    counts,
                    wide=out.wide,
                    full_ids=out.no_trunc,
                    header=not out.no_headers,
                )
            )
            out.blank()
        elif not mappings and not found.chains:
            summary = "no portmap chains found"
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

    def _owner(self, network: Optional[str], container_id: Optional[str]) -> bool:
        return (not self.networks or network in self.networks) and (
            not self.containers or (container_id or "").startswith(self.containers)
        )

    def mapping(self, m: Any) -> bool:
        return (
            self._owner(m.network, m.container_id)
            and (not self.ports or m.host_port in self.ports)
            and (not self.protocols or m.protocol in self.protocols)
            and (not self.statuses or any(str(s) in self.statuses for s in m.status))
        )

    def chain(self, c: Any) -> bool:
        return self._owner(c.network, c.container_id)

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
        # (15 ms of an iptables node's list). Unusable nft still warns, below.
        return []
    from portmapctl.ops import nft

    owners = {c.container_id for c in found.chains if c.container_id}
    _live, split, nft_found = nft.build(node, cache, owners, problems=False, live=box["live"])
    if node.nft_unusable is not None and split.nftables:
        out.warn(f"{node.nft_unusable} (nftables rules not listed)")
    if not nft_found.mappings:
        return []
    return list(nft_found.mappings)


