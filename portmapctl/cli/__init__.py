"""The command line: a thin layer over the library (one small module per command).

`main()` runs the typer app in non-standalone mode so that every failure becomes
one line on stderr with its SPEC §4 exit code, never a traceback (unless -v).
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import sys
from typing import Any, Callable, Iterator, List, NamedTuple, Optional, Tuple

import typer

from portmapctl import __version__
from portmapctl.cli._common import _isatty
from portmapctl.errors import PortmapctlError

HELP = """Inspect and repair the NAT chains and UDP conntrack state that the CNI
portmap plugin leaves on a node.

Examples:

\b
  portmapctl list

\b
  portmapctl add --network mynet --container abc123 --ip 10.88.0.5/16 -p 8080:80

Exit codes: 0 done (check: healthy), 1 problems found / could not apply,
2 bad input, 3 environment (not root, no iptables, no such namespace).
"""



class CommandModule(NamedTuple):
    """Where a command lives: `portmapctl.cli.<module>.<function>`, with EXAMPLES."""

    name: str
    module: str
    function: str


COMMAND_MODULES: Tuple[CommandModule, ...] = (
    CommandModule("list", "list", "list_command"),
    CommandModule("add", "add", "add_command"),
    CommandModule("check", "check", "check_command"),
    CommandModule("gc", "gc", "gc_command"),
    CommandModule("flush-udp", "flush_udp", "flush_udp_command"),
)
"""Every command, in --help's order. A command's module is imported only when that
command runs (or the whole app is built for --help): each one imports typer option
declarations and its own library entry points, which the others do not need."""


class Command(NamedTuple):
    name: str
    function: Callable[..., Any]
    examples: str


def load_command(entry: CommandModule) -> Command:
    """The command's function and examples (the epilog of its --help), imported now."""
    module = importlib.import_module(f"portmapctl.cli.{entry.module}")
    return Command(entry.name, getattr(module, entry.function), module.EXAMPLES)


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


def __getattr__(name: str) -> Any:
    """`app` (every command) and `COMMANDS` are built on first use: a run of one
    command imports that command's module only."""
    if name == "app":
        return build_app()
    if name == "COMMANDS":
        return tuple(map(load_command, COMMAND_MODULES))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _verbose(argv: List[str]) -> bool:
    return any(a in ("-v", "--verbose") for a in argv)


def _one_line(text: str) -> str:
    """The message as one printable line: a newline or an escape sequence in a name
    or path the user gave must not start a line of its own or steer the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _click_command(args: List[str]) -> Any:
    """The click command to run: for `portmapctl COMMAND ...` an app holding that one
    command, else the whole app. Typer builds every command's options from its
    signature, 12 ms for all five, a tenth of what `add` takes (SPEC §6)."""
    name = args[0] if args else None
    known = any(c.name == name for c in COMMAND_MODULES)
    return typer.main.get_command(build_app(name if known else None))


class Interrupted(BaseException):
    """Ctrl-C. Not a KeyboardInterrupt: typer turns that into a silent exit 130."""


@contextlib.contextmanager
def _ctrl_c_raises_interrupted() -> Iterator[None]:
    def raise_interrupted(signum: int, frame: Any) -> None:
        raise Interrupted()

    try:
        previous = signal.signal(signal.SIGINT, raise_interrupted)
    except ValueError:  # not the main thread (an embedding program): leave it be
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupted() -> None:
    """Ctrl-C: one line, on a line of its own (the cursor may sit after "^C" or a
    prompt), and exit 130 as shells do."""
    # A second Ctrl-C while the line is written must not turn into a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fresh = "\n" if _isatty(sys.stderr) else ""
    sys.stderr.write(f"{fresh}portmapctl: aborted\n")  # the words of entry.py's line
    sys.exit(130)


def main(argv: Optional[List[str]] = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        args = ["--help"]
    command = _click_command(args)
    try:
        with _ctrl_c_raises_interrupted():
            code = command.main(args=args, prog_name="portmapctl", standalone_mode=False)
    except PortmapctlError as err:
        if _verbose(args):
            raise
        sys.stderr.write(f"portmapctl: error: {_one_line(str(err))}\n")
        sys.exit(err.exit_code)
    except BrokenPipeError:
        sys.exit(0)
    except (Interrupted, KeyboardInterrupt, typer.Abort):
        _interrupted()
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.TyperException as err:
        # Usage errors (typer's click): its message, and where to read more.
        ctx = getattr(err, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        message = " ".join(err.format_message().split())  # type: ignore[attr-defined]
        sys.stderr.write(f"portmapctl: error: {_one_line(message)}{hint}\n")
        sys.exit(getattr(err, "exit_code", 2))
    except Exception as err:  # noqa: BLE001 - the one place that turns every failure into a line
        if _verbose(args):
            raise
        sys.stderr.write(
            f"portmapctl: internal error: {type(err).__name__}: {err} (run with -v for details)\n"
        )
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
