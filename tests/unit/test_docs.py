"""docs/ stays usable: every example command in it is one portmapctl accepts today,
and every relative link points at a file (and heading) that exists.

The example commands are parsed by portmapctl's own command line, not run, so a
renamed or removed option breaks this test instead of the reader's copy-paste.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest
import typer
from docexamples import Example, console_examples

from portmapctl.cli import app

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted((ROOT / "docs").rglob("*.md"))


def example_commands(page: Path) -> Iterator[Tuple[int, List[str]]]:
    """(line number, argv after `portmapctl`) of each `$ [sudo] portmapctl ...` line."""
    lines = page.read_text().splitlines()
    in_console = False
    number = 0
    while number < len(lines):
        line = lines[number].strip()
        number += 1
        if line.startswith("```"):
            in_console = line == "```console"
            continue
        if not (in_console and line.startswith("$ ")):
            continue
        start = number
        command = line[2:]
        while command.endswith("\\"):
            command = command[:-1] + " " + lines[number].strip()
            number += 1
        words = shlex.split(command)
        if words[:1] == ["sudo"]:
            words = words[1:]
        if words[:1] == ["portmapctl"]:
            yield start, words[1:]


def test_the_docs_have_examples():
    found = {page.name: list(example_commands(page)) for page in PAGES}
    for name in ("list.md", "add.md", "check.md", "gc.md", "flush-udp.md"):
        assert len(found[name]) >= 3, name


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_example_commands_parse(page):
    root = typer.main.get_command(app)
    for number, argv in example_commands(page):
        where = f"{page.relative_to(ROOT)}:{number}: portmapctl {' '.join(argv)}"
        if argv in (["--version"], ["--help"]):
            continue
        try:
            name, command, rest = root.resolve_command(
                root.make_context("portmapctl", list(argv)), list(argv)
            )
            command.make_context(name, rest)
        except Exception as err:  # noqa: BLE001 - any parse failure is the finding
            # The documented mistakes are meant to fail; nothing else may.
            if "--colour" in argv:
                continue
            pytest.fail(f"{where}: {type(err).__name__}: {getattr(err, 'message', err)}")


def _anchors(page: Path) -> set:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for line in page.read_text().splitlines():
        match = re.match(r"#+ (.+)", line)
        if match:
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


@pytest.mark.parametrize(
    "page", [*PAGES, ROOT / "README.md"], ids=lambda p: str(p.relative_to(ROOT))
)
def test_relative_links_resolve(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.relative_to(ROOT)}: broken link {target}"
        if anchor and resolved.suffix == ".md":
            assert anchor in _anchors(resolved), f"{page.relative_to(ROOT)}: no #{anchor}"


def _reads_only_files(argv: List[str]) -> bool:
    """An example that reads dumps and a cache it names: runnable here, without root and
    without this machine's /var/lib/cni (those without --cni-cache-dir would read it)."""
    return (
        any(option in argv for option in ("--snapshot", "--nft-snapshot"))
        and "--cni-cache-dir" in argv
        and "--netns" not in argv
    )


@pytest.mark.parametrize(
    "page", [*PAGES, ROOT / "README.md"], ids=lambda p: str(p.relative_to(ROOT))
)
def test_examples_that_read_only_files_show_what_they_print_today(page):
    """The output shown under each such example is what the command prints today, piped
    (stderr and stdout together, in any order: the page shows them as a terminal
    interleaves them)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR")}
    env.update(NO_COLOR="1", PYTHONPATH=str(ROOT))
    for example in console_examples(page):
        number, argv, shown = example.line, example.argv, example.shown
        if not argv or not _reads_only_files(argv):
            continue
        done = subprocess.run(
            [sys.executable, "-m", "portmapctl", *argv],
            cwd=ROOT, capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
        printed = (done.stderr + done.stdout).rstrip("\n").split("\n")
        where = f"{page.relative_to(ROOT)}:{number}: portmapctl {' '.join(argv)}"
        assert sorted(printed) == sorted(shown), where


@pytest.mark.parametrize(
    "page", [ROOT / "README.md", *PAGES], ids=lambda p: str(p.relative_to(ROOT))
)
def test_a_quiet_example_shows_its_summary_line(page):
    """`-q` prints the summary line (SPEC §3 output contract), never nothing: a console
    example of it that shows no output says the command prints nothing."""
    for example in console_examples(page):
        if example.argv and ({"-q", "--quiet"} & set(example.argv)):
            where = f"{page.relative_to(ROOT)}:{example.line}: {' '.join(example.words)}"
            assert [line for line in example.shown if line.strip()], where


def test_a_console_block_indented_under_a_list_item_is_read_as_any_other(tmp_path):
    """troubleshooting.md's steps hold their ```console blocks indented under the list
    item (three spaces, as Markdown nests them): console_examples read none of them, so
    their shown output was never checked. Each is read with its indentation taken off,
    the block's own (a line indented further keeps the rest)."""
    page = tmp_path / "page.md"
    page.write_text(
        "1. A step:\n\n"
        "   ```console\n"
        "   $ sudo portmapctl gc --all \\\n"
        "       --yes\n"
        "   FAM  NETWORK\n"
        "     v4 podman\n"
        "\n"
        "   ```\n\n"
        "   ```sh\n"
        "   $ not an example\n"
        "   ```\n"
        "```console\n$ portmapctl list\nno portmap chains found\n```\n"
    )
    assert console_examples(page) == [
        Example(4, ["portmapctl", "gc", "--all", "--yes"], ["FAM  NETWORK", "  v4 podman", ""]),
        Example(15, ["portmapctl", "list"], ["no portmap chains found"]),
    ]
    steps = [e for e in console_examples(ROOT / "docs" / "troubleshooting.md") if e.line > 250]
    assert steps[0].argv[:3] == ["gc", "--iptables", "legacy"], steps[0]
    assert steps[0].shown[-1].startswith("gc: removed 1 chain of 1 container"), steps[0]


def _unquoted_globs(command: str) -> List[str]:
    """The words of a command line, as typed, that a shell would expand as a glob: `[`,
    `]`, `*` or `?` outside quotes (`$?` is a parameter; a comment is no word)."""
    command = re.sub(r"\s#.*$", "", command)
    bare = re.sub(r"'[^']*'|\"[^\"]*\"|\$\?", "Q", command)
    return [word for word in bare.split() if re.search(r"[\[\]*?]", word)]


def test_example_commands_quote_what_a_shell_would_expand():
    """`add --help`'s example (and so the man page's) gave `-p [::1]:9091:91` bare: zsh,
    whose completion we ship, stops at it (`no matches found: [::1]:9091:91`), and bash
    turns it into `-p 1:9091:91` where a file of that name is in the current directory.
    Every example a reader copies, from --help, the man page or these pages, quotes
    such a word, as add.md's `-p '[::1]:8082:80/tcp'` does."""
    from tools import clidoc, manpage

    found = []
    for command in clidoc.read().commands:
        for example in command.examples:
            words = _unquoted_globs(example.replace("\\\n", " "))
            found += [f"{command.name} --help: {word}" for word in words]
    for _, commands in manpage.EXAMPLES_INTRO:
        for example in commands:
            found += [f"man page: {word}" for word in _unquoted_globs(example)]
    for page in [*PAGES, ROOT / "README.md"]:
        lines = page.read_text().splitlines()
        for example in console_examples(page):
            typed, number = lines[example.line - 1].lstrip()[2:], example.line
            while typed.endswith("\\") and number < len(lines):
                typed, number = typed[:-1] + " " + lines[number], number + 1
            words = _unquoted_globs(typed)
            found += [f"{page.relative_to(ROOT)}:{example.line}: {word}" for word in words]
    assert found == []


def test_check_md_says_what_each_table_shows_under_container_for_a_chain_of_no_container(
    tmp_path,
):
    """check.md said a chain no rule names has "the chain's name" under CONTAINER (list's
    short form since h327), and
    `-o wide` keeps `-` there (its CHAIN column names the chain): the page's paragraph
    on CONTAINER says what each table prints, as check prints it today (the example
    node with no cache: its orphan chain, of no known container)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, NO_COLOR="1", PYTHONPATH=str(ROOT))
    snapshots = ["--snapshot", "examples/node.v4.save", "--snapshot6", "examples/node.v6.save"]
    shown = {}
    for output in ("table", "wide"):
        done = subprocess.run(
            [sys.executable, "-m", "portmapctl", "check", *snapshots, "-o", output,
             "--cni-cache-dir", str(tmp_path / "nocache")],
            cwd=ROOT, capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
        header, *rows = done.stdout.split("\n\n")[0].splitlines()
        start = header.index("CONTAINER")
        end = header.index(header[start:].split()[1], start)  # the next column's
        orphan = [row for row in rows if row.startswith("orphan ")]
        assert len(orphan) == 1, done.stdout
        shown[output] = orphan[0][start:end].strip()
    assert shown["table"].startswith("CNI-DN-"), shown
    page = (ROOT / "docs" / "commands" / "check.md").read_text()
    paragraph = page[page.index("CONTAINER is the container's") :].split("\n\n")[0]
    # By list's short form since h327 (its example is this orphan's row, as printed).
    assert len(shown["table"]) == 12 and shown["table"] in paragraph, (paragraph, shown)
    assert "as `list` does" in paragraph.replace("\n", " "), paragraph
    said = re.search(r"`-o wide`[^.;]*`([^`]+)`", paragraph)
    assert said is not None and said.group(1) == shown["wide"], (paragraph, shown)


# Where the map's description column starts: left of it, a module's or directory's name.
_MAP_COLUMN = 26


def _mapped_modules(text: str) -> set:
    """The package-relative paths architecture.md's map names: a module in the name
    column under its directory (indented below it), a module a directory's description
    names (`diagnose.py`, `check/nft.py`: below that directory), and a path a module's
    description gives (`check/nft.py` beside ops/nft.py: below ops/; `nftables/early.py`:
    below portmapctl/). A bare name in a module's description names nothing."""
    tree = text[text.index("```\nportmapctl/") + 4 : text.index("\ntools/")]
    named = set()
    parents: List[Tuple[int, str]] = []  # (indent, directory), innermost last
    here, of_directory = "", True  # the entry the description column belongs to
    mention = r"(?<![\w/])(?:\w+/)*\w+\.py\b"
    for line in tree.splitlines()[1:]:
        head, said = line[:_MAP_COLUMN], line[_MAP_COLUMN:]
        if head.strip():
            indent = len(head) - len(head.lstrip())
            while parents and parents[-1][0] >= indent:
                parents.pop()
            parent = parents[-1][1] if parents else ""
            if head.split()[0].endswith("/"):
                here, of_directory = parent + head.split()[0], True
                parents.append((indent, here))
            else:
                named |= {parent + name for name in re.findall(r"\b\w+\.py\b", head)}
                here, of_directory = parent, False
        for path in re.findall(mention, said):
            if of_directory or "/" in path:
                named.add(here + path)
            if "/" in path:
                named.add(path)
    return named


def test_the_architecture_map_names_every_module():
    """docs/architecture.md maps the code module by module; portmapctl/core/patterns.py
    (the lazily compiled regular expressions nine modules use) was in no line of it.
    Each module of the package is named in the map by its path: matched by file name
    alone, cli/check.py passed as render/check.py, and a new nft.py anywhere would pass
    as nftables/access/nft.py."""
    named = _mapped_modules((ROOT / "docs" / "architecture.md").read_text())
    missing = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "portmapctl").rglob("*.py"))
        if path.stem != "__init__" and str(path.relative_to(ROOT / "portmapctl")) not in named
    ]
    assert missing == []


def test_the_architecture_map_is_read_by_path():
    """The reading above holds a module to its own directory: a name elsewhere, or a
    bare one in another module's description, does not name it."""
    text = """```
portmapctl/
  a.py                    names b.py in passing; d/e.py by path
  d/                      the d package: c.py, x/y.py
    f.py                  one module
tools/
```"""
    assert _mapped_modules(text) == {"a.py", "d/e.py", "d/c.py", "d/x/y.py", "x/y.py", "d/f.py"}
