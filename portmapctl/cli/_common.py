"""What every command shares: the common options, output, and the exit codes.

Options are declared once here as `Annotated` types and listed in each command's
signature, so `portmapctl list -o json` works as people type it (SPEC §3).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable, Iterator, List, Optional, Sequence, Tuple

import typer

from portmapctl.host.paths import DEFAULT_CNI_CACHE_DIRS

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from portmapctl.ops.metrics import Recorder
    from portmapctl.ops.node import NodeOptions

try:
    from typing import Annotated
except ImportError:  # Python 3.8
    from typing_extensions import Annotated  # type: ignore[assignment]


class IptablesChoice(str, Enum):
    auto = "auto"
    nft = "nft"
    legacy = "legacy"
    iptc = "iptc"


class BackendChoice(str, Enum):
    """The plugin's rule backends (its config key `backend`)."""

    auto = "auto"
    iptables = "iptables"
    nftables = "nftables"


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


# --- shell completion of values (typer `autocompletion=`) -----------------------------
# They run on every TAB press: cheap sources only (the CNI cache, /run/netns), never
# iptables (root, slow), and never an error: anything odd gives no suggestions.

NETNS_DIR = "/run/netns"


def _cache_dir(ctx: typer.Context) -> Tuple[str, ...]:
    value = (ctx.params or {}).get("cni_cache_dir")
    if isinstance(value, str) and value:
        return (value,)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    return DEFAULT_CNI_CACHE_DIRS


def complete_container(ctx: typer.Context, incomplete: str) -> List[Tuple[str, str]]:
    """Container IDs from the CNI cache (with their network as the hint)."""
    try:
        from portmapctl.cni.cache import cached_names

        return [
            (container, f"network {network}")
            for network, container in sorted(cached_names(_cache_dir(ctx)), key=lambda n: n[1])
            if container.startswith(incomplete)
        ]
    except Exception:  # noqa: BLE001 - a completion must never print a traceback
        return []


def complete_network(ctx: typer.Context, incomplete: str) -> List[Tuple[str, str]]:
    """Network names from the CNI cache (with how many containers they hold)."""
    try:
        from portmapctl.cni.cache import cached_names

        counts: dict = {}
        for network, _container in cached_names(_cache_dir(ctx)):
            counts[network] = counts.get(network, 0) + 1
        return [
            (network, f"{count} cached container{'s' if count != 1 else ''}")
            for network, count in sorted(counts.items())
            if network.startswith(incomplete)
        ]
    except Exception:  # noqa: BLE001 - a completion must never print a traceback
        return []


def complete_netns(incomplete: str) -> List[str]:
    """Names of the namespaces `ip netns` knows (a path is completed by the shell)."""
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(incomplete))
    except OSError:
        return []


BackendOpt = Annotated[
    BackendChoice,
    typer.Option(
        "--backend",
        envvar="PORTMAPCTL_BACKEND",
        help="The plugin's backend: auto reads both and follows each container's cached config.",
        rich_help_panel="Common options",
    ),
]
IptablesOpt = Annotated[
    IptablesChoice,
    typer.Option(
        "--iptables",
        envvar="PORTMAPCTL_IPTABLES",
        help="How iptables is read and written: auto picks what the host's iptables is.",
        rich_help_panel="Common options",
    ),
]
NftSnapshotOpt = Annotated[
    Optional[str],
    typer.Option(
        "--nft-snapshot",
        metavar="FILE",
        help="Read `nft -j list ruleset` output ('-' for stdin), not the kernel.",
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
        autocompletion=complete_netns,
    ),
]
CacheDirOpt = Annotated[
    Optional[List[str]],
    typer.Option(
        "--cni-cache-dir",
        metavar="DIR",
        help="libcni's cache directory (results/ below it); repeat for several."
        " Default: /var/lib/cni and, where it exists, /var/lib/cni/multus.",
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
MetricsFileOpt = Annotated[
    Optional[str],
    typer.Option(
        "--metrics-file",
        metavar="PATH",
        envvar="PORTMAPCTL_METRICS_FILE",
        help="Also write this run's Prometheus metrics to PATH (a .prom file in the"
        " node_exporter's textfile directory), atomically. A failed write is a warning,"
        " never a failed command.",
        show_envvar=True,
    ),
]

DEFAULT_BACKEND = BackendChoice.auto
DEFAULT_IPTABLES = IptablesChoice.auto
DEFAULT_CACHE_DIRS = None  # the option not given: paths.DEFAULT_CNI_CACHE_DIRS
DEFAULT_FAMILY = FamilyChoice.all
DEFAULT_OUTPUT = OutputChoice.table


def families(value: FamilyChoice) -> tuple:
    return (4, 6) if value == FamilyChoice.all else (int(value.value),)


def node_options(
    iptables: IptablesChoice,
    family: FamilyChoice,
    netns: Optional[str],
    cache_dirs: Optional[Sequence[str]],
    snapshots: Optional[dict] = None,
    backend: BackendChoice = DEFAULT_BACKEND,
    nft_snapshot: Optional[str] = None,
) -> NodeOptions:
    from portmapctl.ops.node import NodeOptions

    if snapshots and nft_snapshot and "-" in (*snapshots.values(), nft_snapshot):
        from portmapctl.errors import BadInput

        raise BadInput("only one of --snapshot/--snapshot6/--nft-snapshot can read standard input")
    return NodeOptions(
        iptables=iptables.value,
        families=families(family),
        netns=netns,
        cache_dirs=cache_dirs_of(cache_dirs),
        snapshots=snapshots or {},
        backend=backend.value,
        nft_snapshot=nft_snapshot,
    )


@contextlib.contextmanager
def metrics_recording(
    path: Optional[str],
    command: str,
    cache_dirs: List[str],
    out: Output,
    ok_exit_codes: Tuple[int, ...] = (0,),
) -> Iterator[Optional[Recorder]]:
    """Record the block's run into the metrics file `path`, if one was asked for.

    Yields None without one: nothing is imported (prometheus_client is only loaded
    to write), so a run without --metrics-file starts and works as before.
    """
    if not path:  # PORTMAPCTL_METRICS_FILE= (empty) is no file
        yield None
        return
    from portmapctl.ops import metrics

    with metrics.recording(
        path, metrics.Command(command), cache_dirs, out.warn, ok_exit_codes
    ) as recorder:
        yield recorder


def cache_dirs_of(given: Optional[Sequence[str]]) -> Tuple[str, ...]:
    """--cni-cache-dir as given (repeatable), or the default directories."""
    from portmapctl.errors import BadInput

    if not given:
        return DEFAULT_CNI_CACHE_DIRS
    if any(not d for d in given):
        raise BadInput("--cni-cache-dir is empty: give a directory (default /var/lib/cni)")
    return tuple(dict.fromkeys(given))


PROGRESS_FROM = 2000
"""Fewer items than this are done before a progress bar could be read: no bar."""

ProgressCallback = Callable[[int, int], None]


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

    def plain(self, stream: Any) -> bool:
        """No colour: --no-color, a non-empty NO_COLOR (no-color.org), or not a terminal."""
        return self.no_color or os.environ.get("NO_COLOR", "") != "" or not _isatty(stream)

    def _console(self, stderr: bool = False) -> Console:
        from rich.console import Console

        stream = sys.stderr if stderr else sys.stdout
        plain = self.plain(stream)
        # Off a terminal, tables get room instead of being squeezed to 80 columns.
        width = None if _isatty(stream) else 250
        return Console(
            file=stream,
            no_color=plain,
            highlight=False,
            # Messages carry names and paths from the node: "[...]" or ":x:" in them is
            # text, not rich markup or an emoji code.
            markup=False,
            emoji=False,
            width=width,
            color_system=None if plain else "auto",
        )

    def show(self, renderable: RenderableType, stderr: bool = False) -> None:
        stream = sys.stderr if stderr else sys.stdout
        if hasattr(renderable, "plain") and self.plain(stream):
            # Plain text off a terminal: no need for rich's line layout (fast for big
            # lists), nor for a Console (importing rich.console takes 13 ms).
            stream.write(renderable.plain + "\n")
            return
        console = self._console(stderr=stderr)
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

    @contextlib.contextmanager
    def progress(
        self, description: str, min_total: int = PROGRESS_FROM
    ) -> Iterator[Optional[ProgressCallback]]:
        """A progress bar on stderr for long work, as a `(done, total)` callback.

        Yields None -- no bar, and nothing for the library to call -- unless stderr
        is a terminal and neither -q nor JSON output was asked for. The bar shows up
        only once `total` reaches `min_total` (short work is over before it could be
        read) and is erased when done, so it never ends up in a log or a pipe.

            with out.progress("deleting UDP conntrack entries") as progress:
                result = flush(node, ..., progress=progress)
        """
        if self.quiet or self.json or not _isatty(sys.stderr):
            yield None
            return
        from rich.progress import Progress

        with contextlib.ExitStack() as stack:
            bars: List[Progress] = []

            def update(done: int, total: int) -> None:
                if not bars:
                    if total < min_total:
                        return
                    bar = Progress(console=self._console(stderr=True), transient=True)
                    bars.append(stack.enter_context(bar))
                    bar.add_task(description, total=total)
                bars[0].update(bars[0].task_ids[0], completed=done, total=total)

            yield update


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced or closed streams (tests, pipes)
        return False
