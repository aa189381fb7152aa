"""`portmapctl list`: one row per port mapping, with what is wrong with it."""

from __future__ import annotations

from typing import List, Optional

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
)
from portmapctl.core.status import Status

# \b: click keeps the next paragraph as written (an example must stay one line).
EXAMPLES = """
Statuses (a row can have several):

\b
  ok          in place: the host port reaches the container
  stale       no CNI cache entry names the container (gone): gc removes it
  shadowed    an earlier rule takes the same host port to another container:
              this one gets no traffic (iptables is first-match-wins); also
              (beyond SPEC §3) another tool's nat rule ahead of PREROUTING's
              jump to CNI-HOSTPORT-DNAT (Docker -p, a kube-proxy NodePort)
  orphan      a CNI-DN- chain that no rule enters
  incomplete  the plugin's entry rule names a port the chain has no DNAT
              rule for (another tool's rule entering it: check's extra-entry)
  legacy      a CNI-SN- chain of plugins before 2018
  dead        a rule that never matches (-d 0.0.0.0/32, plugins before v0.8.7)
  zombie      cached, but the container's network namespace is gone
  contested   the same host port is mapped in the other backend (iptables
              and nftables): the kernel's hook order decides which gets it

Examples:

\b
  portmapctl list --status stale --status shadowed

\b
  portmapctl list

\b
  portmapctl list --container 3f2a --proto udp --conntrack

\b
  portmapctl list -o json --snapshot iptables-save.txt \\
      --snapshot6 ip6tables-save.txt
"""


@common_options
def list_command(
    common: Common,
    container: Annotated[
        Optional[List[str]],
        typer.Option(
            metavar="ID",
            help="Only this container (ID prefix, or the chain a row of no known container names there; repeat for either).",
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
            metavar="FILE",
            help="Read `iptables-save -t nat` output ('-' for stdin), not the kernel.",
        ),
    ] = None,
    snapshot6: Annotated[
        Optional[str], typer.Option(metavar="FILE", help="Read `ip6tables-save -t nat` output.")
    ] = None,
    nft_snapshot: NftSnapshotOpt = None,
    conntrack: Annotated[
        bool,
        typer.Option(
            "--conntrack",
            help="Count UDP conntrack entries per UDP mapping, and say how many misroute.",
        ),
    ] = False,
    metrics_file: MetricsFileOpt = None,
) -> None:
    """List every port mapping on the node, with its status, sorted by network,
    container, family, protocol and host port; a summary line follows.

    Filters of one kind repeat (either matches); different filters must all hold."""
    from portmapctl.cli import list_run

    list_run.run(
        common,
        container=container,
        network=network,
        port=port,
        proto=proto,
        status=status,
        snapshot=snapshot,
        snapshot6=snapshot6,
        nft_snapshot=nft_snapshot,
        conntrack=conntrack,
        metrics_file=metrics_file,
    )
