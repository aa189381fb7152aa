"""The console script's entry point.

`--version` is answered before typer and the command modules are imported: it is
what scripts and monitoring call most, and SPEC §6 wants it fast.

`list` on a live node starts its `nft -j list` here, before typer and the command's
modules are imported (nftables/early.py): nft lists while Python starts. Nothing is
started for anything else (--version and --help included).

Ctrl-C can land anywhere, also while typer and rich are still being imported (a
third of a second on a slow node), before the CLI's own handler exists: it is caught
here too, so it is always one line and exit 130 (SPEC §3 output contract).
"""

from __future__ import annotations

import sys
from typing import List, Optional

INTERRUPTED_EXIT = 130


def _interrupted() -> None:
    import signal

    # A second Ctrl-C while the line is written must not turn into a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.stderr.write("portmapctl: aborted\n")
    sys.exit(INTERRUPTED_EXIT)


def main(argv: Optional[List[str]] = None) -> None:
    try:
        args = sys.argv[1:] if argv is None else argv
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
