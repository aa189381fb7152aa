"""What every command shares: the common options, output, and the exit codes.

Options are declared once here as `Annotated` types and listed in each command's
signature, so `portmapctl list -o json` works as people type it (SPEC §3).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Optional

import typer

from portmapctl.paths import CNI_CACHE_DIR

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from portmapctl.node import NodeOptions

try:
    from typing import Annotated
except ImportError:  # Python 3.8
    from typing_extensions import Annotated  # type: ignore[assignment]


class BackendChoice(str, Enum):
    auto = "auto"
    nft = "nft"
    legacy = "legacy"
    iptc = "iptc"


class FamilyChoice(str, Enum):
    v4 = "4"
    v6 = "6"
    all = "all"


class OutputChoice(str, Enum):
    table = "table"
    json = "json"


class ProtoChoice(str, Enum):
    tcp = "tcp"
    udp = "udp"
    sctp = "sctp"


BackendOpt = Annotated[
    BackendChoice,
    typer.Option(
        "--backend",
        envvar="PORTMAPCTL_BACKEND",
        help="How iptables is read and written: auto picks what the host's iptables is.",
        rich_help_panel="Common options",
    ),
]
FamilyOpt = Annotated[
    FamilyChoice,
    typer.Option(
        "--family",
        help="Address families to work on.",
        rich_help_panel="Common options",
    ),
]
NetnsOpt = Annotated[
    Optional[str],
    typer.Option(
        "--netns",
        metavar="NAME|PATH",
        help="Work inside this network namespace (/run/netns/NAME or a path).",
        rich_help_panel="Common options",
    ),
]
CacheDirOpt = Annotated[
    str,
    typer.Option(
        "--cni-cache-dir",
        metavar="DIR",
        help="libcni's cache directory (results/ below it).",
        rich_help_panel="Common options",
    ),
]
OutputOpt = Annotated[
    OutputChoice,
    typer.Option(
        "--output",
        "-o",
        help="Human table or machine JSON.",
        rich_help_panel="Common options",
    ),
]
NoColorOpt = Annotated[
    bool,
    typer.Option(
        "--no-color",
        help="Plain output (also: NO_COLOR, or stdout not a terminal).",
        rich_help_panel="Common options",
    ),
]
QuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", help="Print less: the result only.", rich_help_panel="Common options"
    ),
]
VerboseOpt = Annotated[
    bool,
    typer.Option(
        "--verbose",
        "-v",
        help="Print more (and tracebacks on errors).",
        rich_help_panel="Common options",
    ),
]

DEFAULT_BACKEND = BackendChoice.auto
DEFAULT_CACHE_DIR = CNI_CACHE_DIR
DEFAULT_FAMILY = FamilyChoice.all
DEFAULT_OUTPUT = OutputChoice.table


def families(value: FamilyChoice) -> tuple:
    return (4, 6) if value == FamilyChoice.all else (int(value.value),)


def node_options(
    backend: BackendChoice,
    family: FamilyChoice,
    netns: Optional[str],
    cache_dir: str,
    snapshots: Optional[dict] = None,
) -> NodeOptions:
    from portmapctl.node import NodeOptions

    return NodeOptions(
        backend=backend.value,
        families=families(family),
        netns=netns,
        cache_dir=cache_dir,
        snapshots=snapshots or {},
    )


@dataclass
class Output:
    """Where results and messages go: results on stdout, messages on stderr."""

    mode: OutputChoice = OutputChoice.table
    no_color: bool = False
    quiet: bool = False
    verbose: bool = False

    @property
    def json(self) -> bool:
        return self.mode == OutputChoice.json

    def _console(self, stderr: bool = False) -> Console:
        from rich.console import Console

        stream = sys.stderr if stderr else sys.stdout
        plain = self.no_color or "NO_COLOR" in os.environ or not stream.isatty()
        # Off a terminal, tables get room instead of being squeezed to 80 columns.
        width = None if stream.isatty() else 250
        return Console(
            file=stream,
            no_color=plain,
            highlight=False,
            width=width,
            color_system=None if plain else "auto",
        )

    def show(self, renderable: RenderableType) -> None:
        console = self._console()
        if console.no_color and hasattr(renderable, "plain"):
            # Plain text off a terminal: no need for rich's line layout (fast for big lists).
            sys.stdout.write(renderable.plain + "\n")
            return
        # soft_wrap: long lines stay whole, as scripts and `less -S` expect.
        console.print(renderable, soft_wrap=True)

    def print_json(self, document: Any) -> None:
        sys.stdout.write(json.dumps(document, indent=2) + "\n")

    def message(self, text: str) -> None:
        """A remark for people, on stderr; silent with -q."""
        if not self.quiet:
            self._console(stderr=True).print(text)

    def warn(self, text: str) -> None:
        sys.stderr.write(f"portmapctl: warning: {text}\n")
