"""`portmapctl add` parsed with the standard library, before typer is imported.

`add` is what runtimes and scripts call once per container, where start-up is most of
the cost (SPEC §6: typer's import alone is a third of an `add` into 1,000 containers).
Only command lines spelled the plain way are taken: every option by its own name,
`--name value` or `--name=value`, values that do not start with "-", choices among
their values. Anything else -- --help, a mistake, a completion request, `-qv`, `--` --
returns None and typer parses it, so help, error messages and exit codes are typer's
(tests/unit/test_add_fast.py holds the two to the same result).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from portmapctl.cli import add_options
from portmapctl.cli._common import BackendChoice, FamilyChoice
from portmapctl.cli.output import OutputChoice
from portmapctl.core.backend import IptablesAccess

if TYPE_CHECKING:
    from portmapctl.cli._common import Common

# The options whose values are an Enum's (cli/_common.py, cli/output.py: no typer there).
_ENUMS = {
    "backend": BackendChoice,
    "iptables": IptablesAccess,
    "family": FamilyChoice,
    "output": OutputChoice,
}
_CHOICES = {name: tuple(member.value for member in enum) for name, enum in _ENUMS.items()}
# Option name -> (parameter, kind), cli/add_options.py's table with each Enum option's
# choices put in.
OPTIONS: Dict[str, tuple] = {
    name: (parameter, _CHOICES[parameter] if kind == "choice" else kind)
    for name, (parameter, kind) in add_options.OPTIONS.items()
}
# Options typer also reads from the environment when not given (envvar=); each only
# for a command that has it (list's --metrics-file, not add's).
ENVIRONMENT = {
    "iptables": "PORTMAPCTL_IPTABLES",
    "cni_cache_dir": "PORTMAPCTL_CNI_CACHE_DIR",
    "cni_bin_dir": "PORTMAPCTL_CNI_BIN_DIR",
    "metrics_file": "PORTMAPCTL_METRICS_FILE",
}
COMPLETION_ENV = "_PORTMAPCTL_COMPLETE"


def parse(
    args: List[str], command: str = "add", options: Optional[Dict[str, tuple]] = None
) -> Optional[Dict[str, Any]]:
    """`add`'s options as typer hands them to the command (the common ones included),
    or None when typer must parse this command line. `command` and its `options` (in
    OPTIONS' form): another command's plain command lines (cli/list_fast.py)."""
    known = OPTIONS if options is None else options
    if not args or args[0] != command or os.environ.get(COMPLETION_ENV):
        return None
    given: Dict[str, Any] = {}
    words = iter(args[1:])
    for word in words:
        name, equals, attached = word.partition("=")
        if name not in known or not name.startswith("--") and equals:
            return None  # a positional, --help, `-p8080:80`, `-qv`, `--`, a typo
        parameter, kind = known[name]
        if kind == "flag":
            if equals:
                return None
            given[parameter] = True
            continue
        value = attached if equals else next(words, None)
        if value is None or value.startswith("-") and value != "-":
            return None  # missing, or what click might read as an option: typer's call
        if kind == "many":
            given.setdefault(parameter, []).append(value)
        elif kind == "int":
            if not (value.isascii() and value.isdigit()):
                return None
            given[parameter] = int(value)
        elif isinstance(kind, tuple) and value not in kind:
            return None
        else:
            given[parameter] = value
    kinds = dict(known.values())
    for parameter, variable in ENVIRONMENT.items():
        value = os.environ.get(variable, "")
        if parameter not in kinds or parameter in given or not value:
            continue
        kind = kinds[parameter]
        if kind == "many":
            # click splits a repeatable option's variable at whitespace
            if not value.split():
                return None
            given[parameter] = value.split()
        elif isinstance(kind, tuple) and value not in kind:
            return None
        else:
            given[parameter] = value
    return given


def runner(args: List[str], early_claims: Any = None) -> Optional[Callable[[], Any]]:
    """What `portmapctl ARGS` runs, when ARGS is an `add` this module can parse.
    `early_claims`: ops/add_early.EarlyClaims, started for these ARGS (or None)."""
    given = parse(args)
    if given is None:
        return None
    from portmapctl.cli import add_run
    from portmapctl.cli._common import MAPPING_NAMES, MappingOptions

    common = pop_common(given).with_bin_dirs(given.pop("cni_bin_dir", None))
    mapping = MappingOptions(**{name: given.pop(name) for name in MAPPING_NAMES if name in given})
    flags = {"no_flush_udp": False, "dry_run": False, **given}  # add's own options
    if early_claims is not None:
        flags["early_claims"] = early_claims  # (typer's path has none to hand over)
    return lambda: add_run.run(common, mapping, **flags)


def pop_common(given: Dict[str, Any], recorded: bool = False) -> Common:
    """The common options out of what parse() found (they are taken out of `given`);
    BadInput for an environment variable set to a value it does not accept.
    `recorded`: a command with a metrics file (list), whose recording checks them
    (cli/metrics_file.metrics_recording: a refusal is a failed run in the file too)."""
    from portmapctl.cli._common import COMMON_NAMES, Common
    from portmapctl.host import settings

    if not recorded:
        settings.check()  # before the command does anything (as typer's _options._common)

    common: Dict[str, Any] = {}
    for name in COMMON_NAMES:
        if name in given:
            value = given.pop(name)
            common[name] = _ENUMS[name](value) if name in _ENUMS else value
    if "cni_cache_dir" in common:
        common["cni_cache_dir"] = tuple(common["cni_cache_dir"])
    return Common(**common)
