"""`portmapctl list` (and `flush-udp`) parsed with the standard library, before typer
is imported.

`list` is what people and monitoring run most, and typer's import and command set-up
are a fifth of a `list` of 1,000 containers (SPEC §6: at most 5x a bare iptables-save).
Plain command lines only, as for add (cli/add_fast.py, whose parser this uses): every
option by its own name, values that do not start with "-", choices among their values.
--proto and --status (case-insensitive choices), --help, mistakes, completion requests
and anything unusual go to typer (tests/unit/test_list_fast.py holds the two to the
same result).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from portmapctl.cli import add_fast
from portmapctl.cli._common import COMMON_NAMES

# The common options as add's fast path knows them, and list's own (cli/list.py).
OPTIONS: Dict[str, tuple] = {
    **{name: spec for name, spec in add_fast.OPTIONS.items() if spec[0] in COMMON_NAMES},
    "--container": ("container", "many"),
    "--network": ("network", "many"),
    "--port": ("port", "many"),
    "--snapshot": ("snapshot", "value"),
    "--snapshot6": ("snapshot6", "value"),
    "--nft-snapshot": ("nft_snapshot", "value"),
    "--conntrack": ("conntrack", "flag"),
    "--metrics-file": ("metrics_file", "value"),
}
# Left to typer: their values are choices typer matches case-insensitively.
TYPER_ONLY = ("--proto", "--status")
# `flush-udp` (cli/flush_udp.py), the other command that reads the whole node.
FLUSH_OPTIONS: Dict[str, tuple] = {
    **{name: spec for name, spec in add_fast.OPTIONS.items() if spec[0] in COMMON_NAMES},
    "--port": ("port", "many"),
    "--container": ("container", "value"),
    "--stale-only": ("stale_only", "flag"),
    "--dry-run": ("dry_run", "flag"),
}


def _given_on_command_line(args: List[str], option: str) -> bool:
    """Whether `option` is one of the words of a command line add_fast.parse took:
    there a value never starts with "-", so every such word is an option's name
    (`--name` or `--name=value`). Else its value came from its variable, as click's
    ParameterSource.ENVIRONMENT says on typer's path (cli/_options._common)."""
    return any(word.partition("=")[0] == option for word in args[1:])


def runner(args: List[str], early_nft: Any = None) -> Optional[Callable[[], Any]]:
    """What `portmapctl ARGS` runs, when ARGS is a `list` or a `flush-udp` this module
    can parse. `early_nft`: the nft listing entry.py started for a `list`
    (nftables/early.py), handed on as typer's path hands it (Common.early_nft)."""
    given = add_fast.parse(args, "list", OPTIONS)
    if given is not None:
        from portmapctl.cli import list_run

        common = add_fast.pop_common(given, recorded=True)._replace(
            early_nft=early_nft,
            metrics_from_environment="metrics_file" in given
            and not _given_on_command_line(args, "--metrics-file"),
        )
        return lambda: list_run.run(common, **given)
    given = add_fast.parse(args, "flush-udp", FLUSH_OPTIONS)
    if given is not None:
        from portmapctl.cli import flush_udp_run

        common = add_fast.pop_common(given)
        return lambda: flush_udp_run.run(common, **given)
    return None
