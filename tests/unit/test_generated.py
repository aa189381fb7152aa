"""completions/, man/ and the generated blocks of docs/commands/ match the code.

They are generated from the typer app by `python -m tools.gendocs` (which is also
the fix when a test here fails). Beyond "the committed files are current", these tests
check that the generator really follows the app -- every registered command and option
shows up, and a command added to an app shows up without touching the generator --
and that the man page renders without a groff warning.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from enum import Enum
from pathlib import Path

import pytest
import typer

from portmapctl.cli import app
from portmapctl.cli import list as list_cli
from portmapctl.host.paths import DEFAULT_RUN_DIR
from tools import clidoc, gendocs, manpage

ROOT = Path(__file__).resolve().parents[2]
REGENERATE = "python -m tools.gendocs"


@pytest.mark.parametrize(
    "env",
    [
        {},
        # Nothing about the terminal or the environment may change the output.
        {
            "COLUMNS": "20",
            "LINES": "5",
            "NO_COLOR": "1",
            "TERM": "dumb",
            "PORTMAPCTL_IPTABLES": "legacy",
            clidoc.TYPER_TEST_ENV: "1",
        },
    ],
    ids=["plain", "odd-environment"],
)
def test_committed_files_are_up_to_date(monkeypatch, env):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    stale = gendocs.out_of_date(ROOT)
    assert not stale, f"out of date: {', '.join(stale)}; run `{REGENERATE}` and commit"


def test_a_change_is_detected_and_hand_written_text_survives(tmp_path):
    assert gendocs.write(tmp_path)  # a fresh tree gets every file
    assert gendocs.out_of_date(tmp_path) == []
    page = tmp_path / "docs/commands/list.md"
    page.write_text("# list\n\nHand-written intro.\n\n" + page.read_text().split("\n", 2)[2])
    man = tmp_path / gendocs.MAN_PAGE
    man.write_text(man.read_text().replace("\\-\\-snapshot6", "\\-\\-snap6"))
    script = tmp_path / gendocs.COMPLETIONS["fish"]
    script.write_text(script.read_text() + "# edited\n")
    assert gendocs.out_of_date(tmp_path) == sorted(
        [gendocs.MAN_PAGE, gendocs.COMPLETIONS["fish"]]
    ), "a hand edit outside the generated block is not staleness"
    text = page.read_text()
    page.write_text(text.replace("| `--port` |", "| `--prot` |"))
    assert "docs/commands/list.md" in gendocs.out_of_date(tmp_path)
    gendocs.write(tmp_path)
    assert gendocs.out_of_date(tmp_path) == []
    assert "Hand-written intro." in page.read_text()
    # A page left behind by a removed (or renamed) command is reported too.
    (tmp_path / "docs/commands/frob.md").write_text(page.read_text())
    assert gendocs.out_of_date(tmp_path) == ["docs/commands/frob.md"]
    assert "| `--port` |" in page.read_text()


def _click_tree():
    root = typer.main.get_command(app)
    return {name: root.commands[name] for name in root.commands}


def test_every_command_and_option_is_in_the_man_page_and_docs():
    man = (ROOT / gendocs.MAN_PAGE).read_text()
    index = (ROOT / "docs/commands/README.md").read_text()
    for name, command in _click_tree().items():
        assert f'.SH "{name.upper()} COMMAND"' in man, name
        assert f"[`{name}`]({name}.md)" in index, name
        page = (ROOT / f"docs/commands/{name}.md").read_text()
        for param in command.params:
            for opt in param.opts:
                assert manpage.esc(opt) in man, (name, opt)
                assert f"`{opt}`" in page or f"`{opt}`" in index, (name, opt)
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "EXIT STATUS", "FILES"):
        assert f"\n.SH {section}\n" in man
    for section in ("ENVIRONMENT", "EXAMPLES", "SEE ALSO", "COMMON OPTIONS"):
        assert f"\n.SH {section}\n" in man


def test_the_man_page_names_every_variable_the_docs_name():
    """Its ENVIRONMENT had 4 of the 11 variables docs/commands/README.md's table names
    (review helper-132): the two lists are held to the same names."""
    index = (ROOT / "docs/commands/README.md").read_text()
    environment = index[index.index("## Environment") :]
    documented = set(re.findall(r"^\| `([A-Z_]+)`(?:, `([A-Z_]+)`)? \|", environment, re.M))
    named = {name for pair in documented for name in pair if name}
    assert len(named) >= 10, named
    assert named <= {name for name, _ in manpage.ENVIRONMENT}, named
    man = (ROOT / gendocs.MAN_PAGE).read_text()
    for name in named:
        assert f"\\fB{manpage.esc(name)}\\fR" in man, name


def test_the_man_page_describes_both_of_the_plugins_backends():
    """Its DESCRIPTION spoke of the plugin's iptables chains alone, and said only the
    CNI-* chains "are ever written", while add, check --repair and gc write the
    plugin's nftables backend too (core.backend.Backend): each backend is named there,
    with what portmapctl reads and writes of it, and nft is in SEE ALSO."""
    from portmapctl.core.backend import Backend

    description = " ".join(manpage.DESCRIPTION)
    for backend in Backend:
        assert f"{backend} backend" in description, backend
    assert "cni_hostport" in description and "nft -f" in description
    assert ("nft", "8") in manpage.SEE_ALSO


def test_the_man_page_says_add_reads_over_netlink_and_who_reads_with_iptables_save():
    """It said "Each address family is read with one iptables-save", while add of a new
    container on nf_tables runs no iptables-save: its checks read over netlink and it
    writes one nf_tables batch (ops/add_ahead.write_new, iptables/access/nfnl_add.py),
    reading the table only when that is refused. The sentence that names iptables-save
    names every other command of the app, and add's its own way."""
    description = " ".join(manpage.DESCRIPTION)
    sentences = description.split(". ")
    saving = [s for s in sentences if "iptables-save" in s]
    assert saving, description
    names = {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands}
    for name in names - {"add"}:
        assert any(re.search(rf"(^|[ (]){name}\b", s) for s in saving), (name, saving)
    assert not any(re.match(r"(Each|Every) address family", s) for s in saving), saving
    add = [s for s in sentences if s.startswith("add ")]
    assert add and "netlink" in add[0], add


def test_the_man_page_says_how_gc_deletes_nftables_rules():
    """It said the nftables backend is changed with one nft -f transaction alone; gc's
    deletions there go as one nf_tables batch at the generation of their read (acad330:
    nft -f deletes by handle, which a firewall reload between hands to live rules)."""
    description = " ".join(manpage.DESCRIPTION)
    assert "gc's deletions there: one nf_tables batch" in description, description


def test_the_man_pages_exit_status_has_every_exit_code_the_program_ends_with():
    """Its EXIT STATUS listed 0-3 alone: not Ctrl-C's 130 nor the end by SIGTERM (143
    in a shell), and its 3 said nothing of an internal error, which is 3 (never 1, which
    a unit's SuccessExitStatus=1 takes for check's problems found)."""
    import signal

    from portmapctl import entry, errors

    listed = {int(code) for code, _ in manpage.EXIT_STATUS}
    ends = {0, errors.ApplyFailed.exit_code, errors.BadInput.exit_code}
    ends |= {errors.HostProblem.exit_code, entry.INTERRUPTED_EXIT, 128 + signal.SIGTERM}
    assert ends <= listed, sorted(ends - listed)
    meaning = dict(manpage.EXIT_STATUS)
    assert "internal error" in meaning[str(errors.HostProblem.exit_code)]
    assert "SIGTERM" in meaning[str(128 + signal.SIGTERM)]


def test_the_man_pages_files_name_what_portmapctl_keeps_in_its_run_directory():
    """FILES said /run/portmapctl/ held gc's state; add keeps its memos there too
    (tool-answers.json, iptables-lines.v4.json and .v6), which an operator finds there
    and the page did not name."""
    from portmapctl.host import tool_memo
    from portmapctl.iptables.access import nfnl_lines
    from portmapctl.ops.gc.state import STATE_FILE

    [run_dir] = [meaning for path, meaning in manpage.FILES if path == f"{DEFAULT_RUN_DIR}/"]
    kept = [STATE_FILE, tool_memo.NAME, nfnl_lines.file_name(4)]
    assert [name for name in kept if name not in run_dir] == []


class Level(str, Enum):
    low = "low"
    high = "high"


def test_a_new_command_shows_up_without_touching_the_generator():
    other = typer.Typer()
    other.command("list", epilog=list_cli.EXAMPLES)(list_cli.list_command)

    def frob(
        level: Level = typer.Option(Level.low, "--frob-level", help="How hard."),
        yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
    ) -> None:
        """Frob the node.

        Second paragraph."""

    other.command("frob", epilog="Examples:\n\n  portmapctl frob --frob-level high\n")(frob)
    doc = clidoc.read(other)
    assert [c.name for c in doc.commands] == ["list", "frob"]
    man = manpage.render(doc)
    assert '.SH "FROB COMMAND"' in man
    assert "\\fB\\-\\-frob\\-level\\fR \\fBlow\\fR|\\fBhigh\\fR" in man
    assert "portmapctl frob \\-\\-frob\\-level high" in man
    assert "Default: low." in man
    block = gendocs.command_block(doc, doc.command("frob"))
    assert "| `-y`, `--yes` |  | Do not ask. |  |" in block
    assert "portmapctl frob [--frob-level low|high] [--yes] [common options]" in block
    assert "Frob the node. Second paragraph." in block
    # Common options are what every command has: only `frob` lacks them here.
    assert doc.common == ()


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_man_page_renders_without_warnings():
    page = ROOT / gendocs.MAN_PAGE
    done = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-z", str(page)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr


@pytest.mark.skipif(shutil.which("man") is None, reason="man-db is not installed")
def test_man_l_shows_the_sections():
    done = subprocess.run(
        ["man", "-l", str(ROOT / gendocs.MAN_PAGE)],
        capture_output=True,
        text=True,
        env=dict(os.environ, MANWIDTH="80", MANPAGER="cat", PAGER="cat", LANG="C.UTF-8"),
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["PORTMAPCTL(1)", "User", "Commands", "PORTMAPCTL(1)"]
    headings = [line for line in lines if line and not line[0].isspace()]
    for name in _click_tree():
        assert f"{name.upper()} COMMAND" in headings
    for heading in ("NAME", "SYNOPSIS", "EXIT STATUS", "FILES", "ENVIRONMENT", "SEE ALSO"):
        assert heading in headings
