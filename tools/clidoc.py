"""The command line as data: commands, their options, choices and defaults.

Read from the typer app itself (through the click command that typer builds), so the
man page, the option tables in docs/commands/ and the tests that keep them current
all see a new command or option as soon as it is registered. Only
`python -m tools.gendocs` and the tests import this module.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any, List, Optional, Tuple

# The environment variable that makes typer's --show-completion take a shell name
# instead of detecting one; set by typer's own tests, it would change our docs.
TYPER_TEST_ENV = "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION"


@dataclass(frozen=True)
class OptionDoc:
    names: Tuple[str, ...]  # short names first: ("-o", "--output")
    metavar: Optional[str]  # None for a flag
    choices: Tuple[str, ...]
    help: str
    default: Optional[str]  # None when there is no default worth printing
    envvar: Optional[str]
    multiple: bool
    required: bool
    panel: Optional[str]  # typer's rich_help_panel: how the options group
    range: Optional[str] = None  # "1-65535" for a bounded number

    @property
    def key(self) -> Tuple[str, ...]:
        return self.names

    @property
    def long_name(self) -> str:
        return max(self.names, key=len)

    @property
    def is_flag(self) -> bool:
        return self.metavar is None


@dataclass(frozen=True)
class CommandDoc:
    name: str
    summary: str  # the first sentence of the help
    help: Tuple[str, ...]  # paragraphs
    options: Tuple[OptionDoc, ...]
    examples: Tuple[str, ...]  # command lines (continuation lines kept)
    notes: Tuple[str, ...]  # the epilog's other paragraphs


@dataclass(frozen=True)
class AppDoc:
    name: str
    version: str
    global_options: Tuple[OptionDoc, ...]
    commands: Tuple[CommandDoc, ...]
    common: Tuple[OptionDoc, ...]  # options every command takes (SPEC §3)

    def command(self, name: str) -> CommandDoc:
        for command in self.commands:
            if command.name == name:
                return command
        raise KeyError(name)

    def own_options(self, command: CommandDoc) -> Tuple[OptionDoc, ...]:
        """The command's options without the common ones (and without --help)."""
        common = {o.key for o in self.common}
        return tuple(o for o in command.options if o.key not in common)


def read(app: Any = None) -> AppDoc:
    """Describe the typer app (portmapctl's, unless another is given)."""
    import typer

    from portmapctl import __version__

    if app is None:
        from portmapctl.cli import app
    root = typer.main.get_command(app)
    ctx = typer.Context(root, info_name="portmapctl")
    commands = tuple(
        _command(name, root.commands[name])
        for name in root.list_commands(ctx)
        if not getattr(root.commands[name], "hidden", False)
    )
    return AppDoc(
        name="portmapctl",
        version=__version__,
        global_options=_options(root),
        commands=commands,
        common=_common(commands),
    )


def _command(name: str, command: Any) -> CommandDoc:
    paragraphs = _paragraphs(inspect.cleandoc(command.help or ""))
    examples: List[str] = []
    notes: List[str] = []
    for paragraph in _paragraphs(command.epilog or "", keep_lines=True):
        lines = paragraph.splitlines()
        if lines[0].strip().rstrip(":").lower() == "examples":
            continue
        if lines[0].lstrip().startswith("portmapctl "):
            examples.append("\n".join(_dedent(lines)))
        elif len(lines) > 1 and all(line.startswith(" ") for line in lines):
            notes.append("\n".join(_dedent(lines)))  # a table kept as laid out (\b)
        else:
            notes.append(" ".join(paragraph.split()))
    summary = paragraphs[0] if paragraphs else ""
    first = re.match(r"(.+?[.!?])(\s|$)", summary)
    return CommandDoc(
        name=name,
        summary=first.group(1) if first else summary,
        help=tuple(paragraphs),
        options=_options(command),
        examples=tuple(examples),
        notes=tuple(notes),
    )


def _paragraphs(text: str, keep_lines: bool = False) -> List[str]:
    """Blank-line separated paragraphs; click's \\b (no-rewrap) markers dropped."""
    out = []
    for block in re.split(r"\n\s*\n", text.replace("\b", "")):
        if not block.strip():
            continue
        out.append(block.strip("\n") if keep_lines else " ".join(block.split()))
    return out


def _dedent(lines: List[str]) -> List[str]:
    indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    return [line[indent:].rstrip() for line in lines]


def _options(command: Any) -> Tuple[OptionDoc, ...]:
    found = []
    for param in command.params:
        if getattr(param, "param_type_name", "") != "option" or getattr(param, "hidden", False):
            continue
        found.append(_option(param))
    return tuple(found)


def _option(param: Any) -> OptionDoc:
    names = tuple(sorted(list(param.opts) + list(param.secondary_opts), key=_name_order))
    choices = tuple(str(c) for c in getattr(param.type, "choices", ()) or ())
    if param.is_flag:
        metavar = None
    elif param.metavar:
        metavar = param.metavar
    elif choices:
        metavar = "|".join(choices)
    elif type(param.type).__name__ in ("IntRange", "IntParamType"):
        metavar = "N"
    else:
        metavar = param.name.upper()
    envvar = param.envvar if isinstance(param.envvar, str) else None
    return OptionDoc(
        names=names,
        metavar=metavar,
        choices=choices,
        help=" ".join((param.help or "").split()),
        default=_default(param),
        envvar=envvar,
        multiple=bool(param.multiple),
        required=bool(param.required),
        panel=getattr(param, "rich_help_panel", None),
        range=_range(param.type),
    )


def _range(kind: Any) -> Optional[str]:
    low, high = getattr(kind, "min", None), getattr(kind, "max", None)
    if low is None and high is None:
        return None
    if high is None:
        return f"{low} or more"
    if low is None:
        return f"at most {high}"
    return f"{low}-{high}"


def _name_order(name: str) -> Tuple[int, str]:
    return (0 if not name.startswith("--") else 1, name)


def _default(param: Any) -> Optional[str]:
    value = param.default
    if param.is_flag or value is None or callable(value) or value == ():
        return None
    if isinstance(value, Enum):
        value = value.value
    return str(value)


def _common(commands: Tuple[CommandDoc, ...]) -> Tuple[OptionDoc, ...]:
    """Options that every command has, alike (the ones SPEC §3 lists), in order."""
    if not commands:
        return ()
    shared = set(commands[0].options)
    for command in commands[1:]:
        shared &= set(command.options)
    return tuple(o for o in commands[0].options if o in shared and o.long_name != "--help")
