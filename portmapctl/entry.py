"""The console script's entry point.

`--version` is answered before typer and the command modules are imported: it is
what scripts and monitoring call most, and SPEC §6 wants it fast.

`list` on a live node starts its `nft -j list` here, before typer and the command's
modules are imported (nftables/early.py): nft lists while Python starts. Nothing is
started for anything else (--version and --help included).

`add` (run once per container, SPEC §6) ends with os._exit once its output is flushed:
the interpreter's teardown (freeing every module and object) is ~20M instructions, 2 ms
of an `add` into 1,000 containers, and add leaves nothing to it (its files are closed,
its threads are daemons and done). Only when run as a program, and only when the exit
is plain: anything unusual (a failing flush, a message as exit code, a thread still
running) takes the usual way out.

`add` also gets the standard library's `inspect` loaded lazily (its body runs when one
of its names is first read). dataclasses imports it for one call,
the signature it writes into the __doc__ of a dataclass without a docstring; loading it
(ast, dis, tokenize...) is ~29M instructions, 7 ms of every `add`, and add's dataclasses
all have docstrings (tests/unit/test_entry_lazy.py holds that).

Ctrl-C can land anywhere, also while typer and rich are still being imported (a
third of a second on a slow node), before the CLI's own handler exists: it is caught
here too, so it is always one line and exit 130 (SPEC §3 output contract).
"""

from __future__ import annotations

import _signal
import io
import sys
from typing import List, Optional, Union

INTERRUPTED_EXIT = 130


def _interrupted() -> None:
    import signal

    # A second Ctrl-C while the line is written must not turn into a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.stderr.write("portmapctl: aborted\n")
    sys.exit(INTERRUPTED_EXIT)


def _exit_now(code: Union[int, None]) -> None:
    """End the process as SystemExit(code) would, minus the teardown; returns only when
    that cannot be done the same way (the caller re-raises)."""
    import atexit
    import os
    import threading

    if any(not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        return  # the interpreter waits for it, as ever
    atexit._run_exitfuncs()  # logging's flush, say: what the interpreter runs first
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:  # None: started with the descriptor closed
                stream.flush()
    except Exception:  # noqa: BLE001 - the interpreter's exit reports it, as ever
        return
    os._exit(code or 0)


def _open_closed_std_streams() -> None:
    """A standard descriptor the caller closed (`<&-`, `>&-`, some supervisors) is
    /dev/null for this run. Python leaves sys.stdin/stdout/stderr None then: gc's
    terminal test and every write would end in an internal error instead of
    "not on a terminal: give --yes" or a finished run, and the next file opened
    (lock, state) would take the free number that child processes see as their
    own stdin/stdout/stderr."""
    import os

    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        if getattr(sys, name) is not None:
            continue
        new = os.open(os.devnull, os.O_RDWR)  # the lowest free number: `fd`, as a rule
        if new != fd and not _in_use(fd):
            os.dup2(new, fd)
            os.close(new)
            new = fd
        setattr(sys, name, open(new, mode, encoding="utf-8", errors="backslashreplace"))


def _in_use(fd: int) -> bool:
    import os

    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


class _ReaderMayLeave(io.TextIOWrapper):
    """stdout or stderr whose reader may go away (`| head -1`, a journald restarted
    under a timer's unit): from the first EPIPE on, what is written goes to /dev/null,
    and the command runs to its end and exits with its own code. Raised, the error
    ended a finished gc in click's silent exit 1 ("could not apply") and a failed run
    in its metrics, and cut a run short where a warning could not be written.

    So is a socket's peer that reset the connection, or a terminal that hung up. Any
    other write error (`> check.json` on a full disk: ENOSPC, EIO, EDQUOT) is met the
    same way, and remembered in `lost`: the output a script reads is incomplete, so
    main() ends such a run with exit 3, not the command's 0 or 1 (a check's 1 would
    read as "problems found" in a file cut short)."""

    lost: Optional[str] = None  # why the output could not be written, once it could not

    def write(self, text: str) -> int:
        try:
            return super().write(text)
        except OSError as err:
            self._to_devnull(err)
            return super().write(text)

    def flush(self) -> None:
        try:
            super().flush()
        except OSError as err:
            self._to_devnull(err)
            super().flush()

    def _to_devnull(self, err: OSError) -> None:
        import os

        if self.lost is None and not _reader_left(err, self.fileno()):
            self.lost = err.strerror or type(err).__name__
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self.fileno())
        os.close(devnull)


def _reader_left(err: OSError, fd: int) -> bool:
    """Whether `err` says the reader of `fd` went away (no file was cut short): EPIPE
    or ESHUTDOWN, a socket's ECONNRESET or ECONNABORTED, a terminal's EIO (hung up)."""
    import errno
    import os
    import stat

    if isinstance(err, ConnectionError):
        return True
    if err.errno != errno.EIO:
        return False
    try:
        return stat.S_ISCHR(os.fstat(fd).st_mode)  # (a file on a failing disk: a file)
    except OSError:
        return False


def _errors_for(encoding: str, errors: Optional[str]) -> Optional[str]:
    """How a standard stream meets a character its encoding lacks. Python's "strict"
    (a locale such as en_US.UTF-8, or PYTHONIOENCODING) turned a rule comment that is
    not UTF-8 (iptables takes any bytes; they are read as surrogates) or a table's
    cut mark `…` on an ASCII terminal into an internal error, exit 1. UTF-8 writes
    such bytes back as they were (as Python's C locale does); any other encoding
    writes `?`, one character for one, so a table stays aligned. (Tables write such
    bytes as `\\xNN` themselves, core/text.cell_text, and their cut mark as `...`
    where the encoding has no `…`, render/cuts.mark: this is the last resort.)"""
    if errors != "strict":
        return errors
    import codecs

    try:
        utf8 = codecs.lookup(encoding).name == "utf-8"
    except LookupError:
        return errors
    return "surrogateescape" if utf8 else "replace"


def _survive_a_reader_leaving() -> None:
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if type(stream) is not io.TextIOWrapper:  # replaced by the caller: theirs
            continue
        stream.flush()
        settings = dict(
            encoding=stream.encoding,
            errors=_errors_for(stream.encoding, stream.errors),
            line_buffering=stream.line_buffering,
            write_through=stream.write_through,
        )
        wrapped = _ReaderMayLeave(stream.detach(), **settings)
        setattr(sys, name, wrapped)
        if getattr(sys, f"__{name}__") is stream:  # (detached: unusable as it was)
            setattr(sys, f"__{name}__", wrapped)


def end_by_sigterm(after: str = "") -> None:
    """SIGTERM's way out, once whatever was under way is cleaned: one line, then the
    process ends by SIGTERM itself, as it would have without us (shells and Kubernetes
    say 143; systemd, for a Type=oneshot unit, a clean stop only with
    SuccessExitStatus=SIGTERM, which deploy/systemd's units list: it never counts an
    exit 143 so). `after`: Interrupted.after. The CLI's handler ends a command so
    (cli._terminated); this module's ends the moments outside one."""
    import os

    _signal.signal(_signal.SIGTERM, _signal.SIG_IGN)  # a second one: no traceback
    try:
        sys.stderr.write(f"portmapctl: terminated{': ' + after if after else ''}\n")
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
    except Exception:  # noqa: BLE001, S110 - a stream closed or full: end all the same
        pass
    _signal.signal(_signal.SIGTERM, _signal.SIG_DFL)
    os.kill(os.getpid(), _signal.SIGTERM)
    sys.exit(128 + _signal.SIGTERM)  # (only if SIGTERM is blocked: the same code)


def _terminated_outside_the_command(signum: int, frame: object) -> None:
    """SIGTERM while Python starts (before the CLI's handler exists) or once the
    command is over (the CLI puts this back when it ends): its one line too. The
    default action ended those runs without a word (review helper-131: 8 of 40
    SIGTERMs in a repair's last 30 ms, after its output). Nothing of the command's
    needs cleaning here: what starts before the CLI (list's early `nft`, add's early
    child) ends on its own, as under the default action."""
    end_by_sigterm()


def main(argv: Optional[List[str]] = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if argv is None:
        # The console script's (the process's handler from here on; main(argv) from a
        # program leaves its handlers be). `_signal`: the builtin; `signal` would
        # import enum before --version answers.
        try:
            _signal.signal(_signal.SIGTERM, _terminated_outside_the_command)
        except ValueError:  # not the main thread: signals are not ours to take
            pass
        _open_closed_std_streams()
        _survive_a_reader_leaving()
    try:
        _ended(args, argv)
    except KeyboardInterrupt:
        # Ctrl-C once the command is over (its handler gone), while its output is
        # flushed: one line too, not a traceback.
        _interrupted()


def _ended(args: List[str], argv: Optional[List[str]]) -> None:
    """main's run: the command, then its exit code (a lost output, add's quick exit)."""
    try:
        _run(args, program=argv is None)
    except SystemExit as done:
        code = _unless_output_lost(done.code) if argv is None else done.code
        # (A bool is an int: sys.exit(True) exits 1 both ways.)
        if argv is None and args[:1] == ["add"] and isinstance(code, (int, type(None))):
            _exit_now(code)
        if code == done.code:
            raise
        raise SystemExit(code) from None
    if argv is None:
        code = _unless_output_lost(None)
        if code is not None:
            raise SystemExit(code)


def _unless_output_lost(code: Union[int, str, None]) -> Union[int, str, None]:
    """The exit code, or 3 with one line when a run that would end 0 or 1 could not
    write all of its output to stdout (flushed here: a file's buffer is written only
    now). A code that already says the run failed otherwise (2, 3, 130) stays."""
    stream = sys.stdout
    if not isinstance(stream, _ReaderMayLeave):
        return code
    stream.flush()
    if stream.lost is None or code not in (None, 0, 1):
        return code
    sys.stderr.write(
        f"portmapctl: error: could not write the output ({stream.lost}): what stdout"
        " got is incomplete; the command itself ran to its end\n"
    )
    sys.stderr.flush()
    from portmapctl.errors import HostProblem

    return HostProblem.exit_code  # SPEC §4: the environment


def _inspect_on_first_use() -> None:
    """sys.modules["inspect"] as a stand-in that imports the real module the first time
    one of its names is read (an `import inspect` alone reads none: LazyLoader's modules
    load on that already), and from then on holds the real module's names."""
    if "inspect" in sys.modules:
        return
    import importlib.util
    import threading
    import types

    spec = importlib.util.find_spec("inspect")
    if spec is None:
        return
    stand_in = types.ModuleType("inspect")
    stand_in.__spec__ = spec
    loading = threading.Lock()

    def load(name: str) -> object:
        with loading:
            if sys.modules.get("inspect") is stand_in:
                del sys.modules["inspect"]
                real = importlib.import_module("inspect")
                names = vars(stand_in)
                names.pop("__getattr__", None)
                names.update(vars(real))
        if name not in vars(stand_in):
            raise AttributeError(f"module 'inspect' has no attribute {name!r}")
        return vars(stand_in)[name]

    stand_in.__getattr__ = load  # type: ignore[method-assign]
    sys.modules["inspect"] = stand_in


def _run(args: List[str], program: bool = False) -> None:
    try:
        if args == ["--version"]:
            from portmapctl import __version__

            sys.stdout.write(f"portmapctl {__version__}\n")
            return
        if args[:1] in (["add"], ["list"]):
            # The cyclic collector off for the whole run, imports included: they make
            # tens of thousands of objects (functions, classes, the code of the
            # dataclasses' methods), none in a cycle worth collecting in a run this
            # short, and each collection walks them again; and what a run made, frozen
            # at its end, is not walked by the collection that the exit or the
            # interpreter's teardown would start (add into 1,000 containers: 1.5% of
            # its instructions, list: 2.1%). A program calling main(argv) gets the
            # collector back as it was, nothing frozen.
            from portmapctl.core.pause import gc_paused

            with gc_paused(freeze=program):
                _command(args, program)
        else:
            _command(args, program)
    except KeyboardInterrupt:
        _interrupted()


def _command(args: List[str], program: bool) -> None:
    """The command: add's and list's early starts, then the CLI."""
    early_nft = early_claims = None
    if args[:1] == ["add"]:
        _inspect_on_first_use()
        if program:  # (it forks: not inside another program's process)
            from portmapctl.ops.add_early import start as start_claims

            early_claims = start_claims(args)
    if args[:1] == ["list"]:
        from portmapctl.nftables.early import start

        early_nft = start(args)
    try:
        from portmapctl.cli import main as cli_main

        cli_main(args, early_nft, early_claims)
    finally:
        if early_nft is not None:
            early_nft.close()  # not taken (a usage error, say): stopped, unread
        if early_claims is not None:
            early_claims.close()  # (taken: over already; else ended, unread)
