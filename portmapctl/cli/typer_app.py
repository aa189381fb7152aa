"""The typer app: every command, or the one being run (cli/__init__.py runs it)."""

from __future__ import annotations

import sys
from typing import Any, List, Optional

import typer

from portmapctl import __version__
from portmapctl.cli import COMMAND_MODULES, load_command

HELP = """Inspect and repair the NAT chains and UDP conntrack state that the CNI
portmap plugin leaves on a node.

Examples:

\b
  portmapctl list

\b
  portmapctl add --network mynet --container abc123 --ip 10.88.0.5/16 \\
      -p 8080:80

Exit codes: 0 done (check: healthy), 1 problems found / could not apply,
2 bad input, 3 environment (not root, no iptables, no such namespace).
"""


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"portmapctl {__version__}\n")
        raise typer.Exit(0)


def _root(
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Inspect and repair the state of the CNI portmap plugin."""


def build_app(only: Optional[str] = None) -> typer.Typer:
    """The typer app with every command, or with the one named `only` (when it is one)."""
    built = typer.Typer(
        name="portmapctl",
        help=HELP,
        no_args_is_help=True,
        add_completion=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    built.callback()(_root)
    chosen = [c for c in COMMAND_MODULES if c.name == only] or COMMAND_MODULES
    for name, function, examples in map(load_command, chosen):
        built.command(name, epilog=examples)(function)
    return built


def _click_command(args: List[str]) -> Any:
    """The click command to run: for `portmapctl COMMAND ...` an app holding that one
    command, else the whole app. Typer builds every command's options from its
    signature, 12 ms for all five, a tenth of what `add` takes (SPEC §6)."""
    name = args[0] if args else None
    known = any(c.name == name for c in COMMAND_MODULES)
    return typer.main.get_command(build_app(name if known else None))
