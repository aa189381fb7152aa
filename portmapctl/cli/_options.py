"""The common options as typer declares them (SPEC §3), and `common_options`, which
adds them to a command.

Apart from cli/_common.py (which re-exports these names) so that what a command runs
with, `Common` and `Output`, can be imported without typer: `add`'s fast path
(cli/add_fast.py) parses its options with the standard library.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, List, Optional, Sequence, Tuple, get_type_hints

import typer

from portmapctl.cli._common import (
    Annotated,
    BackendChoice,
    Common,
    FamilyChoice,
    complete_netns,
)
from portmapctl.cli.output import OutputChoice
from portmapctl.core.backend import IptablesAccess
from portmapctl.host.paths import (
    CNI_BIN_DIR_ENV,
    CNI_BIN_DIRS,
    CNI_CACHE_DIR,
    MULTUS_CACHE_DIR,
    default_cni_cache_dirs,
)

# Completion of values (typer `autocompletion=`): typer reads their annotations, so
# they live where typer is imported.


def _cache_dir(ctx: typer.Context) -> Tuple[str, ...]:
    value = (ctx.params or {}).get("cni_cache_dir")
    if isinstance(value, str) and value:
        return (value,)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    return default_cni_cache_dirs()


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


PANEL = "Common options"

# The options every command takes (SPEC §3), declared once: `common_options` adds them
# to each command's signature and hands the command one `Common` value.
COMMON_PARAMETERS: Tuple[Tuple[str, Any, Any], ...] = (
    (
        "backend",
        Annotated[
            BackendChoice,
            typer.Option(
                "--backend",
                help="Which of the plugin's backends to work on: auto follows each"
                " container's cached config.",
                rich_help_panel=PANEL,
                case_sensitive=False,
            ),
        ],
        BackendChoice.auto,
    ),
    (
        "iptables",
        Annotated[
            IptablesAccess,
            typer.Option(
                "--iptables",
                envvar="PORTMAPCTL_IPTABLES",
                help="How iptables is read and written: auto picks what the host's iptables is.",
                rich_help_panel=PANEL,
                case_sensitive=False,
            ),
        ],
        IptablesAccess.AUTO,
    ),
    (
        "family",
        Annotated[
            FamilyChoice,
            typer.Option(
                "--family",
                help="Address families to work on.",
                rich_help_panel=PANEL,
                case_sensitive=False,
            ),
        ],
        FamilyChoice.all,
    ),
    (
        "netns",
        Annotated[
            Optional[str],
            typer.Option(
                "--netns",
                metavar="NAME|PATH",
                help="Work inside this network namespace (/run/netns/NAME or a path).",
                rich_help_panel=PANEL,
                autocompletion=complete_netns,
            ),
        ],
        None,
    ),
    (
        "cni_cache_dir",
        Annotated[
            Optional[List[str]],
            typer.Option(
                "--cni-cache-dir",
                metavar="DIR",
                # Several directories in the variable: separated by spaces (click's rule).
                envvar="PORTMAPCTL_CNI_CACHE_DIR",
                help=f"libcni's cache directory, results/ below it (repeat for more;"
                f" default {CNI_CACHE_DIR} and, where it exists, {MULTUS_CACHE_DIR}).",
                rich_help_panel=PANEL,
            ),
        ],
        None,
    ),
    (
        "output",
        Annotated[
            OutputChoice,
            typer.Option(
                "--output",
                "-o",
                help="Table (fits 80 columns), wide table (all columns), or JSON.",
                rich_help_panel=PANEL,
                case_sensitive=False,
            ),
        ],
        OutputChoice.table,
    ),
    (
        "no_headers",
        Annotated[
            bool,
            typer.Option(
                "--no-headers", help="Tables without the header line.", rich_help_panel=PANEL
            ),
        ],
        False,
    ),
    (
        "no_trunc",
        Annotated[
            bool,
            typer.Option(
                "--no-trunc",
                help="Full container IDs and texts (tables show 12-character IDs; a UUID's first 8).",
                rich_help_panel=PANEL,
            ),
        ],
        False,
    ),
    (
        "no_color",
        Annotated[
            bool,
            typer.Option(
                "--no-color",
                help="Plain output (also: NO_COLOR, or stdout not a terminal; FORCE_COLOR forces"
                " colour).",
                rich_help_panel=PANEL,
            ),
        ],
        False,
    ),
    (
        "quiet",
        Annotated[
            bool,
            typer.Option(
                "--quiet", "-q", help="Print the summary line only.", rich_help_panel=PANEL
            ),
        ],
        False,
    ),
    (
        "verbose",
        Annotated[
            bool,
            typer.Option(
                "--verbose",
                "-v",
                help="Print more (and tracebacks on errors).",
                rich_help_panel=PANEL,
            ),
        ],
        False,
    ),
)

# Not common: only the commands that report metrics take it (list, check, gc).
NftSnapshotOpt = Annotated[
    Optional[str],
    typer.Option(
        "--nft-snapshot",
        metavar="FILE",
        help="Read `nft -j list ruleset` output ('-' for stdin), not the kernel.",
    ),
]
# Not common: only the commands that judge which backend a container's plugin keeps it
# in (check, add) take it.
CniBinDirOpt = Annotated[
    Optional[List[str]],
    typer.Option(
        "--cni-bin-dir",
        metavar="DIR",
        # Several directories in the variable: separated by spaces (click's rule).
        envvar=CNI_BIN_DIR_ENV,
        help="Where the node's CNI plugins are (repeat for more; default"
        f" {', '.join(CNI_BIN_DIRS)}): their `portmap` is read, never run, where a"
        " container's backend cannot be told from its rules; found in the defaults"
        " alone, it only adds doubt.",
        show_envvar=True,
    ),
]
MetricsFileOpt = Annotated[
    Optional[str],
    typer.Option(
        "--metrics-file",
        metavar="PATH",
        envvar="PORTMAPCTL_METRICS_FILE",
        help="Also write this run's Prometheus metrics to PATH (a .prom file in the"
        " node_exporter's textfile directory), atomically; {command} in PATH is the"
        " command's name (one file each). A failed write is a warning, never a failed"
        " command.",
        show_envvar=True,
    ),
]


# (COMMON_NAMES, in cli/_common.py, lists the same names: tests/unit/test_fast_paths_pure.py)


# The name under which typer hands a command built with `with_context` its context.
CONTEXT_PARAMETER = "typer_context"


def option_group(
    name: str,
    parameters: Sequence[Tuple[str, Any, Any]],
    build: Callable[..., Any],
    at_end: bool = False,
    with_context: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator: the command's parameter `name` becomes the options `parameters`
    (name, typer annotation, default) in its typer signature -- where `name` stood, or
    after the command's own with `at_end` -- and reaches the command as one value,
    `build(**their values)`. Declared once, shared by every command that takes them.
    `with_context`: build also gets `context=` the click context (not an option)."""
    names = [option for option, _, _ in parameters]

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = inspect.signature(command)
        hints = get_type_hints(command, include_extras=True)
        signature: List[inspect.Parameter] = []
        for parameter in own.parameters.values():
            if parameter.name != name:
                hint = hints.get(parameter.name, parameter.annotation)
                signature.append(parameter.replace(annotation=hint))
            elif not at_end:
                signature += [
                    inspect.Parameter(option, parameter.kind, default=default, annotation=hint)
                    for option, hint, default in parameters
                ]
        if at_end:
            signature += [
                inspect.Parameter(option, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=h)
                for option, h, d in parameters
            ]
        if with_context:
            # typer passes the context to a parameter of this type (it is no option).
            signature.append(
                inspect.Parameter(
                    CONTEXT_PARAMETER, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context
                )
            )

        @functools.wraps(command)
        def run(**values: Any) -> Any:
            given = {option: values.pop(option) for option in names}
            if with_context:
                given["context"] = values.pop(CONTEXT_PARAMETER, None)
            return command(**{name: build(**given)}, **values)

        run.__signature__ = own.replace(parameters=signature)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in signature}
        return run

    return decorate


METRICS_PARAMETER = "metrics_file"  # MetricsFileOpt's parameter, in each command


def _common(context: Any = None, **given: Any) -> Common:
    from portmapctl.host import settings

    recorded = METRICS_PARAMETER in (getattr(context, "params", None) or {})
    # Before the command does anything (as add_fast.pop_common); a command with a
    # metrics file (list, check, gc) checks them in its recording (_common's
    # metrics_recording, the first thing it enters), where a refusal is a failed run.
    if not recorded:
        settings.check()
    if given["cni_cache_dir"] is not None:
        given["cni_cache_dir"] = tuple(given["cni_cache_dir"]) or None
    # The context's obj: the nft listing entry.py started for `list` (nftables/early.py).
    early_nft = getattr(context, "obj", None)
    # Where --metrics-file's value came from: ParameterSource.ENVIRONMENT, by its name
    # (typer 0.28 carries a click of its own, typer._click, whose enum is not click's).
    source = context.get_parameter_source(METRICS_PARAMETER) if recorded else None
    from_environment = getattr(source, "name", None) == "ENVIRONMENT"
    return Common(**given, early_nft=early_nft, metrics_from_environment=from_environment)


# `command(common: Common, **its own options)` as a typer command that also takes the
# common options, after its own in `--help`.
common_options = option_group("common", COMMON_PARAMETERS, _common, at_end=True, with_context=True)
