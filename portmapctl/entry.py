"""The console script's entry point.

`--version` is answered before typer and the command modules are imported: it is
what scripts and monitoring call most, and SPEC §6 wants it fast.
"""

from __future__ import annotations

import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--version"]:
        from portmapctl import __version__

        sys.stdout.write(f"portmapctl {__version__}\n")
        return
    from portmapctl.cli import main as cli_main

    cli_main(args)
