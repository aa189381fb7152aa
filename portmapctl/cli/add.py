"""`portmapctl add`: create a container's port mappings exactly as the plugin would."""

from __future__ import annotations

from typing import List, Optional

import typer

from portmapctl.cli._common import (
    Annotated,
    CniBinDirOpt,
    Common,
    MappingOptions,
    common_options,
    complete_container,
    complete_network,
)
from portmapctl.cli._options import option_group

# The implementation: without typer, for add's fast path (cli/add_fast.py) too.
from portmapctl.cli.add_config import (
    mapping_and_key,
    mapping_from_options,
    refuse_short_id,
    with_backend,
)
from portmapctl.cli.add_warnings import shadow_warnings

__all__ = [
    "add_command",
    "mapping_and_key",
    "mapping_from_options",
    "mapping_options",
    "refuse_short_id",
    "shadow_warnings",
    "with_backend",
]

# \b: click keeps the next paragraph as written (an example must stay one line).
EXAMPLES = """
Examples:

\b
  portmapctl add --network mynet --container abc123 --ip 10.88.0.5/16 \\
      -p 8080:80 -p 5353:53/udp

\b
  portmapctl add --network mynet --container abc123 --ip 10.88.0.5/16 \\
      --ip fd00::5/64 -p 127.0.0.1:9090:90/tcp -p '[::1]:9091:91' --dry-run

\b
  portmapctl add --container abc123 --cni-config portmap.json
"""


Network = Annotated[
    Optional[str],
    typer.Option(
        "--network",
        metavar="NAME",
        help="The CNI network name.",
        rich_help_panel="Mapping",
        autocompletion=complete_network,
    ),
]
Container = Annotated[
    Optional[str],
    typer.Option(
        "--container",
        metavar="ID",
        help="The container ID.",
        rich_help_panel="Mapping",
        autocompletion=complete_container,
    ),
]
Ips = Annotated[
    Optional[List[str]],
    typer.Option(
        "--ip",
        metavar="IP/PREFIX",
        help="Container address (one per family).",
        rich_help_panel="Mapping",
    ),
]
Ports = Annotated[
    Optional[List[str]],
    typer.Option(
        "--publish",
        "-p",
        metavar="[HOSTIP:]HOSTPORT:CONTAINERPORT[/PROTO]",
        help="A port mapping (repeat for more); a range, 8000-8005:9000-9005, maps port by port.",
        rich_help_panel="Mapping",
    ),
]
NoSnat = Annotated[
    bool,
    typer.Option(
        "--no-snat", help="No hairpin/localhost masquerade marks.", rich_help_panel="Mapping"
    ),
]
MasqAll = Annotated[
    bool,
    typer.Option(
        "--masq-all", help="Mark all sources, as newer plugins' masqAll.", rich_help_panel="Mapping"
    ),
]
MarkBit = Annotated[
    Optional[int],
    typer.Option(
        "--mark-bit",
        metavar="BIT",
        help="Masquerade mark bit (default 13).",
        rich_help_panel="Mapping",
    ),
]
ExternalSetmark = Annotated[
    Optional[str],
    typer.Option(
        "--external-setmark-chain",
        metavar="NAME",
        help="Use this chain to set the mark instead.",
        rich_help_panel="Mapping",
    ),
]
ConditionsV4 = Annotated[
    Optional[List[str]],
    typer.Option(
        "--conditions-v4",
        metavar="ARGS",
        help="Extra iptables matches for IPv4 entry rules.",
        rich_help_panel="Mapping",
    ),
]
ConditionsV6 = Annotated[
    Optional[List[str]],
    typer.Option(
        "--conditions-v6",
        metavar="ARGS",
        help="Extra iptables matches for IPv6 entry rules.",
        rich_help_panel="Mapping",
    ),
]
CniConfig = Annotated[
    Optional[str],
    typer.Option(
        "--cni-config",
        metavar="FILE|-",
        help="The plugin's stdin config (runtimeConfig.portMappings,"
        " prevResult) instead of the options above.",
        rich_help_panel="Mapping",
    ),
]
IfName = Annotated[
    str,
    typer.Option(
        "--ifname",
        metavar="NAME",
        help="With --cni-config: the container interface whose addresses count"
        " (CNI_IFNAME). Cache entries of its container's other interfaces on the network"
        " share its chain: their rules are kept.",
        rich_help_panel="Mapping",
    ),
]

# add and check declare these once: `mapping: MappingOptions` in a command's signature
# stands for all of them, in this order, in its --help.
mapping_options = option_group(
    "mapping",
    (
        ("network", Network, None),
        ("container", Container, None),
        ("ip", Ips, None),
        ("publish", Ports, None),
        ("no_snat", NoSnat, False),
        ("masq_all", MasqAll, False),
        ("mark_bit", MarkBit, None),
        ("external_setmark_chain", ExternalSetmark, None),
        ("conditions_v4", ConditionsV4, None),
        ("conditions_v6", ConditionsV6, None),
        ("cni_config", CniConfig, None),
        ("ifname", IfName, "eth0"),
    ),
    MappingOptions,
)


@common_options
@mapping_options
def add_command(
    common: Common,
    mapping: MappingOptions = MappingOptions(),
    no_flush_udp: Annotated[
        bool, typer.Option("--no-flush-udp", help="Keep the mapped UDP ports' conntrack entries.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the transaction, change nothing.")
    ] = False,
    cni_bin_dir: CniBinDirOpt = None,
) -> None:
    """Create a container's port mappings, idempotently, as the plugin's ADD would.
    Prints what it did on stdout (with --dry-run: the transaction); warns on stderr
    when a host port is already taken."""
    from portmapctl.cli import add_run

    common = common.with_bin_dirs(cni_bin_dir)
    add_run.run(common, mapping, no_flush_udp=no_flush_udp, dry_run=dry_run)
