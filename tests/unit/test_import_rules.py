"""docs/architecture.md's layering rules, held mechanically over the source (imports
inside functions count too: a lazy import is still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, List, Tuple

import portmapctl

PACKAGE = Path(portmapctl.__file__).resolve().parent  # the one under test

# What starts a process (the subprocess module's and os's own ways).
SPAWNERS = {
    "subprocess": {"run", "Popen", "call", "check_call", "check_output", "getoutput"},
    "os": {"system", "popen", "posix_spawn", "posix_spawnp"},
}
OS_SPAWN_PREFIXES = ("exec", "spawn")
CORE_MAY_IMPORT = ("portmapctl.core", "portmapctl.errors")
IO_MODULES = {"os", "subprocess", "socket", "io", "pathlib", "shutil", "select"}


def _modules() -> Iterator[Tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield str(path.relative_to(PACKAGE.parent)), ast.parse(path.read_text(), str(path))


def _imported(name: str, tree: ast.Module) -> Iterator[Tuple[int, str]]:
    """Every module `name` imports (absolute names), with its line."""
    package = name[: -len(".py")].replace("/", ".").split(".")
    package = package[:-1]  # the module's package, where `from . import` starts
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package[: len(package) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            yield node.lineno, base


def test_core_imports_no_backend_no_host_and_no_io() -> None:
    """core/ is backend-neutral and pure: a newcomer may import it from anywhere."""
    found: List[str] = []
    for name, tree in _modules():
        if not name.startswith("portmapctl/core/"):
            continue
        for line, module in _imported(name, tree):
            ours = module == "portmapctl" or module.startswith("portmapctl.")
            if ours and not module.startswith(CORE_MAY_IMPORT):
                found.append(f"{name}:{line}: {module}")
            if module.split(".")[0] in IO_MODULES:
                found.append(f"{name}:{line}: {module}")
    assert found == []


# The cache layer sits below what shows it and what acts on it: a constant they share
# lives in core/ (the short-ID length did not: cni/entries.py imported render/table.py).
CNI_MAY_NOT_IMPORT = ("portmapctl.render", "portmapctl.cli", "portmapctl.ops")


def test_cni_imports_no_render_no_cli_and_no_ops() -> None:
    found = [
        f"{name}:{line}: {module}"
        for name, tree in _modules()
        if name.startswith("portmapctl/cni/")
        for line, module in _imported(name, tree)
        if module.startswith(CNI_MAY_NOT_IMPORT)
    ]
    assert found == []


def _spawns(tree: ast.Module) -> Iterator[Tuple[int, str]]:
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value
        if not isinstance(owner, ast.Name):
            continue
        attr = node.func.attr
        if attr in SPAWNERS.get(owner.id, ()) or (
            owner.id == "os" and attr.startswith(OS_SPAWN_PREFIXES)
        ):
            yield node.lineno, f"{owner.id}.{attr}"


def test_the_walk_finds_the_processes_access_runs() -> None:
    """Else the rule below would hold of nothing."""
    assert any(list(_spawns(tree)) for name, tree in _modules() if "/access/" in name)


def test_only_access_and_host_run_processes() -> None:
    found = [
        f"{name}:{line}: {call}"
        for name, tree in _modules()
        if "/access/" not in name and not name.startswith("portmapctl/host/")
        for line, call in _spawns(tree)
    ]
    assert found == []


def _spelt_words(tree: ast.Module) -> Iterator[Tuple[int, str]]:
    """String literals compared against (==, !=, in), or used as a dict's keys: where a
    status or problem kind would be tested or looked up."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                if isinstance(side, ast.Constant) and isinstance(side.value, str):
                    yield node.lineno, side.value
        elif isinstance(node, ast.Dict):
            for key in node.keys:
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    yield key.lineno, key.value
        elif isinstance(node, ast.Subscript):
            if isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
                yield node.lineno, node.slice.value


def test_statuses_and_problem_kinds_are_not_spelt_as_strings() -> None:
    """A status, problem kind, chain type or flush-udp reason tested as a literal is a
    typo nobody catches (docs/architecture.md: Vocabularies are Enums). "legacy" is
    also iptables' flavour, "dnat" also nft's JSON key of a DNAT statement."""
    from portmapctl.core.status import ChainKind, FlushReason, ProblemKind, Status

    words = {m.value for m in (*Status, *ProblemKind, *ChainKind, *FlushReason)}
    words -= {"legacy", "dnat"}
    found = [
        f"{name}:{line}: {word!r}"
        for name, tree in _modules()
        if name != "portmapctl/core/status.py"
        for line, word in _spelt_words(tree)
        if word in words
    ]
    assert found == []


# Where a backend or flavour word is still compared as text, and why: the command line
# read before anything is imported (the fork and the early nft listing come first),
# and "nft" as another vocabulary's word (the nftables transaction's key beside the
# families', check's chain for an nft problem).
SPELT_AT_THE_EDGE = {
    ("portmapctl/nftables/early.py", "iptables"),
    ("portmapctl/ops/add_early.py", "nftables"),
    ("portmapctl/render/add.py", "nft"),
    ("portmapctl/render/json.py", "nft"),
}


def test_backends_and_flavours_are_not_compared_as_strings() -> None:
    """The plugin's backend, iptables' flavour and --iptables's words are
    core/backend.py's Enums wherever code decides on them (docs/architecture.md:
    Vocabularies are Enums)."""
    from portmapctl.core.backend import Backend, Flavour, IptablesAccess

    words = {m.value for m in (*Backend, *Flavour, *IptablesAccess)}
    found = []
    for name, tree in _modules():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            for side in (node.left, *node.comparators):
                spelt = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
                for item in spelt:
                    if not (isinstance(item, ast.Constant) and item.value in words):
                        continue
                    if (name, item.value) not in SPELT_AT_THE_EDGE:
                        found.append(f"{name}:{node.lineno}: {item.value!r}")
    assert found == []
