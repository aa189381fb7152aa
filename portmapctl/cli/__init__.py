"""The command line: a thin layer over the library (one small module per command).

`main()` runs the typer app (cli/typer_app.py) in non-standalone mode so that every
failure becomes one line on stderr with its SPEC §4 exit code, never a traceback
(unless -v); `add` and `list` with plain options are parsed by cli/add_fast.py and
cli/list_fast.py, without typer.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
from typing import Any, Callable, Iterator, List, NamedTuple, Optional, Tuple

from portmapctl.errors import Interrupted, PortmapctlError, Terminated


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


def __getattr__(name: str) -> Any:
    """`app` (every command) and `COMMANDS` are built on first use: a run of one
    command imports that command's module only (and `add` not even typer)."""
    if name == "COMMANDS":
        return tuple(map(load_command, COMMAND_MODULES))
    if name in ("app", "HELP", "build_app", "_click_command"):
        from portmapctl.cli import typer_app as built

        return built.build_app() if name == "app" else getattr(built, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _verbose(argv: List[str]) -> bool:
    return any(a in ("-v", "--verbose") for a in argv)


def _one_line(text: str) -> str:
    """The message as one printable line: a newline or an escape sequence in a name
    or path the user gave must not start a line of its own or steer the terminal. A
    byte that is not UTF-8 (an argument's, held as a lone surrogate) is `\\xNN`, as
    JSON writes it (core/text.py), where repr() wrote `\\udce9`."""
    if text.isprintable() and "\\udc" not in text:
        return text
    from portmapctl.core.text import char_text, message_text

    return message_text("".join(c if c.isprintable() else char_text(c) for c in text))


@contextlib.contextmanager
def _ctrl_c_raises_interrupted() -> Iterator[None]:
    """Ctrl-C raises Interrupted, SIGTERM Terminated: the command's `finally` blocks
    run (a temporary file is removed, a child process reaped) before it ends. An
    iptables-restore or nf_tables batch under way commits whole or not at all."""

    def raise_interrupted(signum: int, frame: Any) -> None:
        raise Terminated() if signum == signal.SIGTERM else Interrupted()

    def unraisable(event: Any) -> None:
        # Ctrl-C landed in code whose exceptions Python can only print and drop (a
        # weakref callback, such as the import system's module-lock one): the signal
        # is sent again a moment later, from a thread, to be taken where it can end
        # the command (sent from here, it would be taken in here and dropped again).
        if isinstance(event.exc_value, Interrupted):
            import threading

            number = signal.SIGTERM if isinstance(event.exc_value, Terminated) else signal.SIGINT
            again = threading.Timer(0.005, os.kill, (os.getpid(), number))
            again.daemon = True
            again.start()
        else:
            previous_hook(event)

    try:
        previous = signal.signal(signal.SIGINT, raise_interrupted)
    except ValueError:  # not the main thread (an embedding program): leave it be
        yield
        return
    previous_term = signal.signal(signal.SIGTERM, raise_interrupted)
    previous_hook = sys.unraisablehook
    sys.unraisablehook = unraisable
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)
        sys.unraisablehook = previous_hook


def _interrupted(after: str = "") -> None:
    """Ctrl-C: one line, on a line of its own (the cursor may sit after "^C" or a
    prompt), and exit 130 as shells do. `after`: Interrupted.after."""
    # A second Ctrl-C while the line is written must not turn into a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from portmapctl.cli.output import _isatty

    fresh = "\n" if _isatty(sys.stderr) else ""
    done = f": {after}" if after else ""
    sys.stderr.write(f"{fresh}portmapctl: aborted{done}\n")  # entry.py's words, unsaid
    sys.exit(130)


def _terminated(after: str = "") -> None:
    """SIGTERM, once the command's `finally` blocks ran (entry.end_by_sigterm)."""
    from portmapctl.entry import end_by_sigterm

    end_by_sigterm(after)


def _signal_behind(err: BaseException) -> Optional[BaseException]:
    """The Ctrl-C or SIGTERM an error was raised from, if any: Python 3.11 wraps what a
    descriptor's __set_name__ raised in a RuntimeError, so a signal landing while a
    dataclass is made (a module still importing) was an "internal error", exit 1."""
    cause = err.__cause__
    while cause is not None and not isinstance(cause, (Interrupted, KeyboardInterrupt)):
        cause = cause.__cause__
    return cause


def _typer_failure(err: Exception) -> None:
    """Exit as typer's own exceptions ask (when typer ran: the fast path has none)."""
    typer = sys.modules.get("typer")
    if typer is None:
        return
    if isinstance(err, typer.Abort):
        _interrupted()
    if isinstance(err, typer.Exit):
        sys.exit(err.exit_code)
    if isinstance(err, typer.TyperException):
        # Usage errors (typer's click): its message, and where to read more.
        ctx = getattr(err, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        message = " ".join(err.format_message().split())  # type: ignore[attr-defined]
        sys.stderr.write(f"portmapctl: error: {_one_line(message)}{hint}\n")
        sys.exit(getattr(err, "exit_code", 2))


def _by_typer(args: List[str], early_nft: Any = None) -> Callable[[], Any]:
    from portmapctl.cli.typer_app import _click_command

    command = _click_command(args)
    # early_nft: the context's `obj`, where the common options find it (cli/_options.py).
    run = lambda: command.main(  # noqa: E731
        args=args, prog_name="portmapctl", standalone_mode=False, obj=early_nft
    )
    from portmapctl.cli import completion_scripts

    if not completion_scripts.asks_for_a_script(args):
        return run

    def with_our_zsh_script() -> Any:
        with completion_scripts.zsh_completes_the_first_tab():
            return run()

    return with_our_zsh_script


def _no_command() -> None:
    """No command is a usage error (SPEC §4: exit 2): the help goes to stderr, where
    a script's mistake is seen, not into what it reads (`--help` asked for it:
    stdout, exit 0)."""
    with contextlib.redirect_stdout(sys.stderr):
        _by_typer(["--help"])()
    sys.exit(2)


def _show_details() -> None:
    """-v: the library's details on stderr, one line each (how a change was applied,
    why a plan was refused and made again). logging is imported only then."""
    import logging

    from portmapctl.core.text import message_text

    class _Lines(logging.Formatter):
        """A path's byte that is not UTF-8 as `\\xNN`, as error and warning lines."""

        def format(self, record: logging.LogRecord) -> str:
            return message_text(super().format(record))

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Lines("portmapctl: %(message)s"))
    library = logging.getLogger("portmapctl")
    library.addHandler(handler)
    library.setLevel(logging.DEBUG)


def main(argv: Optional[List[str]] = None, early_nft: Any = None, early_claims: Any = None) -> None:
    """Run the command line. `early_nft`: the nft listing entry.py started for it
    (nftables/early.py), for the command's read to take; `early_claims`: the dump
    behind add's shadow warning, started for a plain `add` (ops/add_early.py)."""
    from portmapctl.cli import add_fast, list_fast

    args = sys.argv[1:] if argv is None else argv
    # A shell's TAB runs us without arguments too, with click's completion variable set.
    if not args and not os.environ.get(add_fast.COMPLETION_ENV):
        _no_command()
    # `add` as scripts and runtimes call it, and a plain `list` (or `flush-udp`), are
    # parsed without typer (SPEC §6: typer's import is a third of add's time, a fifth
    # of list's); anything else, --help and every mistake included, goes to typer,
    # which has the only words for them.
    if _verbose(args):
        _show_details()
    try:
        with _ctrl_c_raises_interrupted():
            # (In the try: the fast paths check the environment as they parse.)
            run = (
                add_fast.runner(args, early_claims)
                or list_fast.runner(args, early_nft)
                or _by_typer(args, early_nft)
            )
            code = run()
    except PortmapctlError as err:
        if _verbose(args):
            import traceback

            # The details first; the exit code stays SPEC §4's (a script's -v run must
            # not read an environment fault as check's "problems found").
            traceback.print_exc()
        sys.stderr.write(f"portmapctl: error: {_one_line(str(err))}\n")
        sys.exit(err.exit_code)
    except BrokenPipeError:
        sys.exit(0)
    except Terminated as stop:
        _terminated(stop.after)
    except Interrupted as stop:
        _interrupted(stop.after)
    except KeyboardInterrupt:
        _interrupted()
    except Exception as err:  # noqa: BLE001 - the one place that turns every failure into a line
        signalled = _signal_behind(err)
        if isinstance(signalled, Terminated):
            _terminated(signalled.after)
        if signalled is not None:
            _interrupted(getattr(signalled, "after", ""))
        _typer_failure(err)
        if _verbose(args):
            import traceback

            traceback.print_exc()  # then the line and exit code below, as without -v
        if isinstance(err, ImportError):
            # A module of ours or a dependency that this Python cannot load (installed
            # for another user, a venv half removed): the environment's (exit 3), not
            # check's "problems found" (1).
            sys.stderr.write(
                f"portmapctl: error: cannot import {err.name or 'a module'}: {_one_line(str(err))}"
                " (its installation is incomplete or not readable here: reinstall it)\n"
            )
            sys.exit(3)
        # A bug, or something of the node this version does not expect: exit 3, never
        # 1, which is check's "problems found" (a check unit that crashed every run
        # passed as one that found problems: SuccessExitStatus=1).
        detail = _one_line(f"{type(err).__name__}: {err}")
        sys.stderr.write(f"portmapctl: internal error: {detail} (run with -v for details)\n")
        sys.exit(3)
    sys.exit(code if isinstance(code, int) else 0)
