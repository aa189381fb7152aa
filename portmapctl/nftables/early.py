"""`nft -j list` for `portmapctl list`, started before the command line is parsed.

On an nftables node `list` waits for nft (100 ms for 1,000 containers) as much as it
works itself, and typer with the command's modules takes about as long to import:
started first, nft lists while Python starts (SPEC §6: `list` within 3x a bare
`nft -j list table`). entry.py asks `start(args)` before it imports the CLI; the
listing reaches the read through NodeOptions.early_nft, which takes it only if it is
what that read would start (nft binary, families, network namespace), and entry.py
stops it if nothing took it (a usage error, a bad value).

Only a command line that surely reads live nft state is taken: `list` spelled the
plain way (as cli/add_fast.py takes `add`), every option known, --backend auto or
nftables, none of --help, --netns, --snapshot, --snapshot6 or --nft-snapshot (they
read elsewhere, or nothing). Anything else starts nothing: the command starts its
own nft, as it did before, if it needs one. Not starting is always right; starting
for a command that reads no nft is not (tests/unit/nftables/test_nft_early.py holds
this to typer's own parse).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

if TYPE_CHECKING:
    from portmapctl.nftables.access.nft import EarlyListing

COMMAND = "list"
COMPLETION_ENV = "_PORTMAPCTL_COMPLETE"
# list's options (cli/list.py and the common ones, cli/_options.py) that take a value,
# with the choices of those that have them (the Enums' values: no import of the CLI
# here; the test holds them equal); then its flags. Other values (a port, a name) are
# the command's to check: a bad one stops the listing unread.
OUTPUTS = ("table", "wide", "json")
VALUES: Dict[str, Optional[Tuple[str, ...]]] = {
    "--container": None,
    "--network": None,
    "--port": None,
    "--proto": ("tcp", "udp", "sctp"),
    "--status": (
        "ok",
        "stale",
        "shadowed",
        "orphan",
        "incomplete",
        "legacy",
        "dead",
        "zombie",
        "contested",
    ),
    "--metrics-file": None,
    "--backend": ("auto", "iptables", "nftables"),
    "--iptables": ("auto", "nft", "legacy", "iptc"),
    "--family": ("4", "6", "all", "v4", "v6"),
    "--cni-cache-dir": None,
    "--output": OUTPUTS,
    "-o": OUTPUTS,
}
CASELESS = frozenset({"--proto", "--status"})  # case_sensitive=False in cli/list.py
FLAGS = frozenset(
    {
        "--conntrack",
        "--no-headers",
        "--no-trunc",
        "--no-color",
        "--quiet",
        "-q",
        "--verbose",
        "-v",
    }
)
# Reading dumps or another namespace (or nothing: help): never started for them.
ELSEWHERE = frozenset({"--snapshot", "--snapshot6", "--nft-snapshot", "--netns"})


def families_to_list(args: List[str]) -> Optional[Tuple[int, ...]]:
    """The families `portmapctl ARGS` lists with `nft -j list table`, when ARGS is a
    `list` of the live node spelled plainly; else None."""
    if not args or args[0] != COMMAND or os.environ.get(COMPLETION_ENV):
        return None
    given: Dict[str, str] = {}
    words = iter(args[1:])
    for word in words:
        name, equals, attached = word.partition("=")
        if name in FLAGS and not equals:
            continue
        if name not in VALUES or equals and not name.startswith("--"):
            return None  # --help, a positional, `-ojson`, `-qv`, `--`, ELSEWHERE, a typo
        value = attached if equals else next(words, None)
        if value is None or value.startswith("-"):
            return None  # missing, or what click might read as an option: typer's call
        choices = VALUES[name]
        if choices is not None and (value.lower() if name in CASELESS else value) not in choices:
            return None
        given[name] = value  # the last one counts, as click takes a repeated option
    if given.get("--backend", "auto") == "iptables":
        return None
    family = given.get("--family", "all")
    return (4, 6) if family == "all" else (int(family.lstrip("v")),)


def start(args: List[str]) -> Optional[EarlyListing]:
    """The listing `portmapctl ARGS` will read, started now; None when it reads none
    (or the read will start its own and say why it cannot)."""
    families = families_to_list(args)
    if families is None:
        return None
    from portmapctl.nftables.access.nft import EarlyListing

    return EarlyListing.start(families)
