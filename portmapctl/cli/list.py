"""`portmapctl list`: one row per port mapping, with what is wrong with it."""

from __future__ import annotations

from typing import Optional

import typer

from portmapctl.cli._common import (
    DEFAULT_BACKEND,
    DEFAULT_CACHE_DIR,
    DEFAULT_FAMILY,
    DEFAULT_IPTABLES,
    DEFAULT_OUTPUT,
    Annotated,
    BackendOpt,
    CacheDirOpt,
    FamilyOpt,
    IptablesOpt,
    NetnsOpt,
    NftSnapshotOpt,
    NoColorOpt,
    Output,
    OutputOpt,
    ProtoChoice,
    QuietOpt,
    VerboseOpt,
    complete_container,
    complete_network,
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
    backend: BackendOpt = DEFAULT_BACKEND,
    iptables: IptablesOpt = DEFAULT_IPTABLES,
    family: FamilyOpt = DEFAULT_FAMILY,
    netns: NetnsOpt = None,
    cni_cache_dir: CacheDirOpt = DEFAULT_CACHE_DIR,
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
    if network is not None or container is not None:
        from portmapctl.core import validate

        if network is not None:
            validate.cni_name(network, "network name")
        if container is not None:
            # A prefix of a valid ID is itself one: anything else can match nothing.
            validate.cni_name(container, "container ID")
    snapshots = {f: path for f, path in ((4, snapshot), (6, snapshot6)) if path}
    options = node_options(iptables, family, netns, cni_cache_dir, snapshots, backend, nft_snapshot)
    with opened(options) as node:
        nft_live = None
        if node.nft is not None:
            # nft lists its tables while the cache is read and iptables-save runs.
            import threading

            from portmapctl.ops import nft

            box: dict = {}

            def read_nft() -> None:
                try:
                    box["live"] = node.read_nft()
                except BaseException as err:  # noqa: BLE001 - re-raised below
                    box["error"] = err

            reader = threading.Thread(target=read_nft, name="nft", daemon=True)
            reader.start()
        tables, cache = node.read_with_cache()
        found = inventory.build(tables, cache)
        mappings = list(found.mappings)
        if node.nft is not None:
            reader.join()
            if "error" in box:
                raise box["error"]
            nft_live = box["live"]
            ipt_owners = {c.container_id for c in found.chains if c.container_id}
            _live, _split, nft_found = nft.build(
                node, cache, ipt_owners, problems=False, live=nft_live
            )
            if nft_found.mappings:
                mappings += nft_found.mappings
                mappings.sort(key=_row_order)
            if node.nft_unusable is not None and _split.nftables:
                out.warn(f"{node.nft_unusable} (nftables rules not listed)")
        counts = None
        if conntrack:
            if options.offline:
                from portmapctl.errors import BadInput

                raise BadInput("--conntrack reads the kernel: it cannot be used with --snapshot")
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
    if out.json:
        out.print_json(render.list_json(rows, chains, counts))
        return
    if not rows and not chains:
        out.message("no portmap chains found")
        return
    out.show(render.list_table(rows, chains, counts))


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
