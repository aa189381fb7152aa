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

Ctrl-C can land anywhere, also while typer and rich are still being imported (a
third of a second on a slow node), before the CLI's own handler exists: it is caught
here too, so it is always one line and exit 130 (SPEC §3 output contract).
"""

from __future__ import annotations

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


def main(argv: Optional[List[str]] = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        _run(args)
    except SystemExit as done:
        # (A bool is an int: sys.exit(True) exits 1 both ways.)
        if argv is None and args[:1] == ["add"] and isinstance(done.code, (int, type(None))):
            _exit_now(done.code)
        raise


def _run(args: List[str]) -> None:
    try:
        if args == ["--version"]:
            from portmapctl import __version__

            sys.stdout.write(f"portmapctl {__version__}\n")
            return
        early_nft = None
        if args[:1] == ["list"]:
            from portmapctl.nftables.early import start

            early_nft = start(args)
        try:
            from portmapctl.cli import main as cli_main

            cli_main(args, early_nft)
        finally:
            if early_nft is not None:
                early_nft.close()  # not taken (a usage error, say): stopped, unread
    except KeyboardInterrupt:
        _interrupted()
