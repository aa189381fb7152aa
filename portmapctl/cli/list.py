"""`portmapctl list`: one row per port mapping, with what is wrong with it."""

from __future__ import annotations

from typing import Any, Optional, Tuple

import typer

from portmapctl.cli._common import (
    DEFAULT_BACKEND,
    DEFAULT_CACHE_DIRS,
    DEFAULT_FAMILY,
    DEFAULT_IPTABLES,
    DEFAULT_OUTPUT,
    Annotated,
    BackendOpt,
    CacheDirOpt,
    FamilyOpt,
    IptablesOpt,
    MetricsFileOpt,
    NetnsOpt,
    NftSnapshotOpt,
    NoColorOpt,
    Output,
    OutputOpt,
    ProtoChoice,
    QuietOpt,
    VerboseOpt,
    cache_dirs_of,
    complete_container,
    complete_network,
    metrics_recording,
    node_options,
)

# \b: click keeps the next paragraph as written (an example must stay one line).
EXAMPLES = """
Examples:

\b
  portmapctl list

\b
  portmapctl list --container 3f2a --proto udp --conntrack

\b
  portmapctl list -o json --snapshot iptables-save.txt --snapshot6 ip6tables-save.txt

\b
  portmapctl list --nft-snapshot ruleset.json --cni-cache-dir ./cni
"""


def list_command(
    container: Annotated[
        Optional[str],
        typer.Option(help="Only this container (ID prefix).", autocompletion=complete_container),
    ] = None,
    network: Annotated[
        Optional[str], typer.Option(help="Only this network.", autocompletion=complete_network)
    ] = None,
    port: Annotated[
        Optional[int], typer.Option(help="Only this host port.", min=1, max=65535)
    ] = None,
    proto: Annotated[Optional[ProtoChoice], typer.Option(help="Only this protocol.")] = None,
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
    backend: BackendOpt = DEFAULT_BACKEND,
    iptables: IptablesOpt = DEFAULT_IPTABLES,
    family: FamilyOpt = DEFAULT_FAMILY,
    netns: NetnsOpt = None,
    cni_cache_dir: CacheDirOpt = DEFAULT_CACHE_DIRS,
    output: OutputOpt = DEFAULT_OUTPUT,
    no_color: NoColorOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """List every port mapping on the node, with its status."""
    from portmapctl import render
    from portmapctl.iptables import inventory
    from portmapctl.ops.node import opened

    out = Output(output, no_color, quiet, verbose)
    with metrics_recording(
        metrics_file, "list", list(cache_dirs_of(cni_cache_dir)), out
    ) as recorder:
        if network is not None or container is not None:
            from portmapctl.core import validate

            if network is not None:
                validate.cni_name(network, "network name")
            if container is not None:
                # A prefix of a valid ID is itself one: anything else can match nothing.
                validate.cni_name(container, "container ID")
        snapshots = {f: path for f, path in ((4, snapshot), (6, snapshot6)) if path}
        options = node_options(
            iptables, family, netns, cni_cache_dir, snapshots, backend, nft_snapshot
        )
        with opened(options) as node:
            reader = _start_nft_read(node)
            tables, cache = node.read_with_cache()
            from portmapctl.cni.cache import warnings

            for warning in warnings(cache):
                out.warn(warning)
            found = inventory.build(tables, cache)
            if recorder is not None:
                recorder.note_node(found.mappings, found.chains, tuple(tables))
            mappings = list(found.mappings)
            if reader is not None:
                nft_rows = _nft_rows(node, reader, cache, found, out)
                if nft_rows:
                    mappings = sorted(mappings + nft_rows, key=_row_order)
            counts = None
            if conntrack:
                if options.offline:
                    from portmapctl.errors import BadInput

                    raise BadInput(
                        "--conntrack reads the kernel: it cannot be used with --snapshot"
                    )
                from portmapctl.ops.flush_udp import count_per_mapping

                counts = count_per_mapping(mappings)
        rows = inventory.select(
            mappings,
            container=container,
            network=network,
            port=port,
            protocol=proto.value if proto else None,
        )
        chains = inventory.select_chains(found.chains, container=container, network=network)
        if port is not None or proto is not None:
            chains = [
                c for c in chains if any(m.chain == c.name and m.family == c.family for m in rows)
            ]
        if cache is None and not out.quiet:
            # Without a cache nothing can be called stale: say so, or a wrong
            # --cni-cache-dir turns every stale chain into "ok" without a word.
            out.warn(
                f"no CNI cache in {' or '.join(d + '/results' for d in options.cache_dirs)}:"
                " stale mappings are not marked"
                " (give --cni-cache-dir)"
            )
        if out.json:
            document = render.list_json(rows, chains, counts)
            document["cache"] = {
                "dirs": list(options.cache_dirs),
                "present": cache is not None,
                # An unreadable file is one entry (held as one stand-in per reading).
                "entries": len({a.path for a in cache or ()}),
            }
            out.print_json(document)
            return
        if not rows and not chains:
            out.message("no portmap chains found")
            return
        out.show(render.list_table(rows, chains, counts))


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
    from portmapctl.ops import nft

    reader, box = started
    reader.join()
    if "error" in box:
        raise box["error"]
    owners = {c.container_id for c in found.chains if c.container_id}
    _live, split, nft_found = nft.build(node, cache, owners, problems=False, live=box["live"])
    if node.nft_unusable is not None and split.nftables:
        out.warn(f"{node.nft_unusable} (nftables rules not listed)")
    if not nft_found.mappings:
        return []
    return list(nft_found.mappings)


def _row_order(m: object) -> tuple:
    """SPEC §3: network, container, family, protocol, host port (a container's rows,
    iptables and nftables alike, stand together)."""
    return (
        getattr(m, "network", None) or "",
        getattr(m, "container_id", None) or "",
        getattr(m, "family", 0),
        getattr(m, "protocol", ""),
        getattr(m, "host_port", 0),
    )
