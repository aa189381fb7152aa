"""Issue 16: the operator's and the script's contract (SPEC §3 "Output contract", list,
check, JSON output), on the example node's dumps and the real-plugin fixtures (no root).

Tables are read at 80 columns on a real pseudo-terminal, as an operator sees them;
every JSON document is validated against its schema in docs/schema/.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from typing import List

import jsonschema
import nftcases
import pytest
import realplugin as rp
import typer
from json_schemas import validated
from test_terminal import EXAMPLE, ROOT, run_on_terminal

from portmapctl import render
from portmapctl.cli import app
from portmapctl.cli._common import cache_info
from portmapctl.cli.add import shadow_warnings
from portmapctl.cli.output import Output
from portmapctl.core import validate
from portmapctl.core.mapping import Mapping, MappingConfig, PortMapping
from portmapctl.core.status import ProblemKind
from portmapctl.errors import BadInput
from portmapctl.host import lock
from portmapctl.iptables.access.snapshot import SnapshotBackend
from portmapctl.iptables.chains import chain_name
from portmapctl.ops.check import CheckResult, Problem
from portmapctl.ops.flush_udp import Flows

FIXTURES = ROOT / "tests" / "fixtures"
SCHEMAS = ROOT / "docs" / "schema"
SNAPSHOTS = EXAMPLE[:4]
CACHE = EXAMPLE[4:]


def pmctl(*args: str, env=None) -> subprocess.CompletedProcess:
    """portmapctl ARGS, stdout and stderr piped (as a script runs it)."""
    return subprocess.run(
        [sys.executable, "-m", "portmapctl", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )


def at_80(*args: str, env=None):
    """portmapctl ARGS on an 80-column terminal, plain (the width is what is tested)."""
    return run_on_terminal(list(args), {"COLUMNS": "80", "NO_COLOR": "1", **(env or {})})


def lines_of(out: str) -> List[str]:
    return out.replace("\r", "").split("\n")


def validate_document(command: str, text: str) -> dict:
    return validated(command, text)


# --- item 2: check reads at 80 columns -------------------------------------------------


def test_check_at_80_columns_one_row_per_problem_why_and_fix_once_then_a_summary():
    code, out, err = at_80("check", *EXAMPLE)
    assert code == 1 and err == ""
    lines = lines_of(out.rstrip("\r\n"))
    assert [line for line in lines if len(line) > 80] == []  # nothing wraps
    assert all(line == line.rstrip() for line in lines), "no trailing spaces"
    assert lines[0].split() == ["KIND", "FAM", "CONTAINER", "PROBLEM"]
    table = lines[1 : lines.index("")]
    rows = [line for line in table if not line.startswith(" ")]
    assert [r.split()[0] for r in rows] == ["shadowed", "stale", "missing-entry"]
    assert all(len(r.split()[2]) == 12 for r in rows), "12-character IDs"
    # The PROBLEM is never cut: what does not fit goes on under its column.
    problems = " ".join(line[len("missing-entry  v4   d19e3b7f60c2  ") :] for line in table)
    assert "…" not in problems
    assert (
        "taken first by the rule CNI-DN-27a3997738f625df8206e of podman/3f2a9c1e5b7d4a60web,"
        " which DNATs to 10.88.0.5:80" in problems
    )
    # Each kind explained once, the fix command whole on its own lines (continued with
    # " \\" where the checkout's path makes it longer than the terminal).
    pasted = re.sub(r" \\\n +", " ", "\n".join(lines)).split("\n")
    fixes = [line.strip() for line in pasted if line.strip().startswith("fix: ")]
    assert fixes == [
        "fix: portmapctl check --repair --cni-cache-dir " + CACHE[1],
        "fix: portmapctl gc --cni-cache-dir " + CACHE[1],
    ]
    assert sum(line.startswith("stale: ") for line in lines) == 1
    assert lines[-1] == "3 problems: 1 missing-entry, 1 shadowed, 1 stale (fixes above)"


def test_check_piped_keeps_lines_whole_and_greppable():
    done = pmctl("check", *EXAMPLE)
    assert done.returncode == 1
    stale = [line for line in done.stdout.splitlines() if "stale" in line]
    assert stale[0].startswith("stale") and stale[0].endswith("it maps tcp/9000")
    assert all(line == line.rstrip() for line in done.stdout.splitlines())
    # --no-trunc: full IDs, nothing cut, also at 80 columns.
    code, out, _ = at_80("check", *EXAMPLE, "--no-trunc")
    assert "b7e0f2c94d1a4e85oldjob" in out and "…" not in out


def test_check_of_many_stale_chains_says_why_once_and_sums_up():
    problems = tuple(
        Problem(
            ProblemKind.STALE,
            4,
            f"CNI-DN-{n:021x}",
            "podman",
            f"{n:064x}",
            f"no CNI cache entry for podman/{n:064x}; it maps tcp/{9000 + n}",
            "portmapctl gc",
            "the container is gone but its host ports stay taken: a new container on them"
            " gets no traffic",
        )
        for n in range(1094)
    )
    result = CheckResult(problems, (4, 6), "node", True, 10, 1100)
    lines = render.check_text(result, width=80).plain.split("\n")
    assert all(len(line) <= 80 and line == line.rstrip() for line in lines)
    assert sum(1 for line in lines if line.startswith("stale  ")) == 1094
    assert sum(1 for line in lines if line.startswith("stale: ")) == 1
    assert lines[-1] == "  fix: portmapctl gc"
    assert "0" * 13 not in "\n".join(lines), "64-character IDs are shown as 12"
    assert render.check_summary(result) == "1094 stale -> portmapctl gc"
    full = render.check_text(result, width=80, full_ids=True).plain
    assert f"{5:064x}" in full


def test_a_fix_command_longer_than_the_terminal_is_wrapped_to_paste_whole():
    """SPEC §3: the fix is printed whole (never cut); at 80 columns nothing wraps. So
    a long command is wrapped at the spaces a shell splits it at, each line but the
    last ending in " \\": pasted into a shell, the lines are the one command."""
    fix = ("portmapctl gc --netns /proc/1234567/ns/net --cni-cache-dir /var/lib/cni"
           " --cni-cache-dir '/srv/cni cache/of the second runtime' --family 4")  # fmt: skip
    problem = Problem(ProblemKind.STALE, 4, "CNI-DN-0123456789abcdef01234", "podman",
                      "0123456789abcdef", "no CNI cache entry", fix, "ports stay taken")  # fmt: skip
    result = CheckResult((problem,), (4,), "node", True, 1, 1)
    lines = render.check_text(result, width=80).plain.split("\n")
    assert all(len(line) <= 80 for line in lines), lines
    start = next(i for i, line in enumerate(lines) if line.startswith("  fix: "))
    shown = lines[start:]
    assert len(shown) > 1 and all(line.endswith(" \\") for line in shown[:-1])
    assert all(line.startswith(" " * len("  fix: ")) for line in shown[1:])
    pasted = "\n".join(shown)[len("  fix: ") :]
    assert shlex.split(pasted.replace(" \\\n", " ")) == shlex.split(fix)
    assert "'/srv/cni cache/of the second runtime'" in pasted  # a quoted word stays whole
    piped = render.check_text(result).plain.split("\n")
    assert piped[-1] == "  fix: " + fix


@pytest.mark.parametrize(
    "snapshots, summary",
    [
        (("--snapshot", str(FIXTURES / "field/plugins-643-dead.v4.save")),
         "5 problems: 2 missing-toplevel, 1 missing-toplevel-rule, 1 orphan, 1 dead"
         " (fixes above)"),
        (("--snapshot", str(FIXTURES / "basic.v4.save"),
          "--snapshot6", str(FIXTURES / "basic.v6.save")),
         "healthy: 1 portmap chain looks sound (IPv4 and IPv6); no CNI cache to compare"
         " it with"),
    ],
)  # fmt: skip
def test_summary_lines_are_word_wrapped_on_a_terminal_and_one_line_piped(snapshots, summary):
    args = ("check", *snapshots, "--cni-cache-dir", "/nonexistent")
    assert len(summary) > 80
    code, out, _ = at_80(*args)
    lines = lines_of(out.rstrip("\r\n"))
    assert [line for line in lines if len(line) > 80] == []
    wrapped = lines[-2:]
    assert " ".join(wrapped) == summary and len(wrapped[0]) > 70
    assert pmctl(*args).stdout.splitlines()[-1] == summary
    # -q prints nothing above the line: it does not point at fixes there.
    assert pmctl(*args, "-q").stdout == summary.replace(" (fixes above)", "") + "\n"


def test_a_summary_ending_in_a_command_is_wrapped_as_a_command(monkeypatch):
    """check's `... -> portmapctl ...` on a terminal: it was word-wrapped as prose, so
    the command's first line, pasted, ran without its last options. Now it goes on lines
    of its own, each but the last ending in ` \\`: pasted, it is the one command."""
    import io

    from test_terminal import summary_on_terminal

    command = ("portmapctl check --repair --netns node-with-a-long-name-0001"
               " --cni-cache-dir /var/lib/a-long-runtime-name/cni")  # fmt: skip
    summary = f"2 missing-entry -> {command}"
    shown = summary_on_terminal(monkeypatch, summary)
    assert shown[0] == "2 missing-entry ->"
    assert all(len(line) <= 80 for line in shown) and len(shown) == 3
    assert all(line.endswith(" \\") for line in shown[1:-1])
    pasted = " ".join(line.removesuffix(" \\").strip() for line in shown[1:])
    assert shlex.split(pasted) == shlex.split(command)
    piped = io.StringIO()
    monkeypatch.setattr("sys.stdout", piped)
    Output().summary(summary)
    assert piped.getvalue() == summary + "\n"


def test_a_command_quoted_in_a_why_is_wrapped_as_a_command():
    """A why that quotes a command (orphan's `portmapctl gc --valid-attachments FILE
    ...` when there is no cache; both-backends' iptables commands) was word-wrapped as
    prose on a terminal: a copy of its lines did not paste as the command (review
    helper-133). Now each quoted command goes on lines of its own, each but the last
    ending in ` \\`; piped, the why stays one line."""
    no_cache = ["--cni-cache-dir", "/no/cni/cache/here"]  # (a path that fits 60 columns)
    args = ["check", *EXAMPLE[:4], *no_cache]
    code, out, _ = run_on_terminal(args, {"COLUMNS": "60", "NO_COLOR": "1"})
    lines = out.replace("\r", "").splitlines()
    assert code == 1 and all(len(line) <= 60 for line in lines), out
    start = next(i for i, line in enumerate(lines) if line.startswith("    portmapctl gc"))
    end = next(i for i in range(start, len(lines)) if not lines[i].endswith(" \\"))
    assert end > start, lines  # (it needs more than one line at 60)
    pasted = " ".join(line.removesuffix(" \\").strip() for line in lines[start : end + 1])
    expected = "portmapctl gc --valid-attachments FILE --cni-cache-dir /no/cni/cache/here"
    assert shlex.split(pasted) == shlex.split(expected)
    assert lines[start - 1].endswith("but gc;"), lines  # (the why, before it)
    piped = pmctl(*args)
    (why,) = [line for line in piped.stdout.splitlines() if line.startswith("orphan: ")]
    assert f"`{expected}`" in why


def test_why_lines_put_each_quoted_command_on_lines_of_its_own():
    from portmapctl.render.check import why_lines

    drop = "iptables-nft -t nat -X CNI-DN-f0bca4ac77cde1bf2f3da"
    text = (f"both-backends: remove its copy by hand: `iptables-nft -t nat -F"
            f" CNI-DN-f0bca4ac77cde1bf2f3da`; `{drop}`, then check again")  # fmt: skip
    assert why_lines(text, None, "  ") == [text]  # piped: one line
    lines = why_lines(text, 60, "  ")
    assert lines == [
        "both-backends: remove its copy by hand:",
        "    iptables-nft -t nat -F CNI-DN-f0bca4ac77cde1bf2f3da",
        f"    {drop}",
        "  then check again",
    ], lines


def test_check_wide_adds_network_chain_and_rule():
    done = pmctl("check", *EXAMPLE, "-o", "wide")
    header = done.stdout.splitlines()[0].split()
    assert header == ["KIND", "FAM", "CONTAINER", "NETWORK", "CHAIN", "PROBLEM", "RULE"]
    assert "CNI-DN-e1c8843393f54b3655873" in done.stdout


# --- list at 80 columns, counting, sorting, filters (items 8-10) --------------------------


def test_list_fits_80_columns_without_the_chain_column_and_sums_up():
    code, out, err = at_80("list", *EXAMPLE)
    lines = lines_of(out.rstrip("\r\n"))
    assert code == 0 and err == ""
    assert all(len(line) <= 80 and line == line.rstrip() for line in lines)
    assert "CHAIN" not in lines[0] and "STATUS" in lines[0]
    assert lines[-1] == "7 mappings of 4 containers: 4 ok, 1 stale, 1 shadowed, 1 orphan"
    wide = pmctl("list", *EXAMPLE, "-o", "wide").stdout
    assert "CHAIN" in wide.splitlines()[0]


LONG_V6 = "fd00:1111:2222:3333:4444:5555:6666:7777"


def long_mapping(container_id: str, status=("ok",)) -> Mapping:
    return Mapping("a-very-long-network-name.example", container_id, 6, "udp", LONG_V6, 65535,
                   LONG_V6, 65535, True, "CNI-DN-0123456789abcdef01234", status)  # fmt: skip


def test_list_fits_a_terminal_by_cutting_names_and_addresses_never_ports_or_statuses():
    mappings = [long_mapping("3f2a9c1e5b7d4a60web"), long_mapping("8c41d07a2e9f", ("stale",))]
    table = render.list_table(mappings, [], wide=False, width=80).plain
    lines = table.split("\n")
    assert all(len(line) <= 80 for line in lines), table
    # Beside two 47-character addresses no row fits 80 columns with both readable:
    # CONTAINER ADDR is left out, HOST cut to whole groups (tests/unit/test_narrow_terminals.py).
    assert lines[0].split()[-3:] == ["HOST", "SNAT", "STATUS"], table
    for line in lines[1:]:
        network, container, _fam, _proto, host, _snat, status = line.split()
        assert network.startswith("a-very-") and network.endswith("…")
        assert container in ("3f2a9c1e5b7d", "8c41d07a2e9f")
        # The port whole, the address's first two groups and its last.
        assert host == "[fd00:1111:…:7777]:65535"
        assert status in ("ok", "stale")
    # --conntrack's FLOWS column too: docs/commands/list.md's rows, 83 columns with the
    # header CONNTRACK, fit whole.
    mapped = Mapping("podman", "3f2a9c1e5b7d", 6, "udp", None, 5353, "fd00:88::5", 53, True,
                     "CNI-DN-0123456789abcdef01234", ("ok",))  # fmt: skip
    assert render.list_table([mapped], [], {mapped: Flows(0)}, wide=False, width=80).plain == (
        "NETWORK  CONTAINER     FAM  PROTO  HOST    CONTAINER ADDR   SNAT  FLOWS  STATUS\n"
        "podman   3f2a9c1e5b7d  v6   udp    *:5353  [fd00:88::5]:53  yes   0      ok"
    )
    # Off a terminal, with --no-trunc, and in -o wide, everything stays whole.
    for whole in (
        render.list_table(mappings, [], wide=False),
        render.list_table(mappings, [], wide=False, width=80, full_ids=True),
        render.list_table(mappings, [], wide=True, width=80),
    ):
        assert "a-very-long-network-name.example" in whole.plain
        assert f"[{LONG_V6}]:65535  [{LONG_V6}]:65535" in whole.plain


def test_list_at_80_columns_cuts_a_long_network_name_and_pipes_keep_it():
    save = ("--snapshot", str(FIXTURES / "long-comment.v4.save"), "--cni-cache-dir", CACHE[1])
    code, out, _ = at_80("list", *save)
    lines = lines_of(out.rstrip("\r\n"))
    assert code == 0 and all(len(line) <= 80 for line in lines), lines
    # The comment is cut before its container ID: the row names its chain there, by
    # its start as long as a short ID (tests/unit/test_list_row_names.py).
    network, container = lines[1].split()[:2]
    assert network.startswith("long-network-") and network.endswith("…"), lines
    assert container == "CNI-DN-b90b4", lines
    piped = pmctl("list", *save).stdout
    assert piped.startswith("NETWORK")
    assert "long-network-name-for-comment-truncation  CNI-DN-b90b4 " in piped


def test_list_sorts_a_containers_rows_together():
    rows = [line.split() for line in pmctl("list", *EXAMPLE, "--no-headers").stdout.splitlines()]
    rows = [r for r in rows if r and r[0] == "podman"]
    keys = [(r[1], r[2], r[3], int(r[4].rsplit(":", 1)[1])) for r in rows]
    assert keys == sorted(keys)
    assert [r[1] for r in rows[:4]] == ["3f2a9c1e5b7d"] * 4  # v4 and v6 rows together


def test_no_headers_and_no_trunc():
    out = pmctl("list", *EXAMPLE, "--no-headers", "--no-trunc").stdout
    assert not out.startswith("NETWORK") and "3f2a9c1e5b7d4a60web" in out


def test_filters_repeat_status_and_an_honest_count():
    done = pmctl("list", *EXAMPLE, "--container", "8c41", "--container", "b7e0")
    assert done.stdout.splitlines()[-1] == "2 of 7 mappings match: 1 stale, 1 shadowed"
    done = pmctl("list", *EXAMPLE, "--status", "stale", "--status", "orphan", "-q")
    assert done.stdout == "2 of 7 mappings match: 1 stale, 1 orphan\n"
    done = pmctl("list", *EXAMPLE, "--container", "zzz")
    assert done.returncode == 0 and done.stdout == "0 of 7 mappings match\n"
    doc = json.loads(pmctl("list", *EXAMPLE, "--status", "shadowed", "-o", "json").stdout)
    assert [m["container_id"] for m in doc["mappings"]] == ["8c41d07a2e9f4b13web2"]
    assert doc["total_mappings"] == 7


def test_inputs_accept_what_outputs_print():
    done = pmctl("list", *EXAMPLE, "--family", "v4", "--proto", "TCP", "-q")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("4 of 5 mappings match")
    assert validate.duration("1h30m") == 5400 and validate.duration("1m40s") == 100
    assert validate.duration("2h05m") == 7500
    with pytest.raises(BadInput):
        validate.duration("1h30")
    # A year is the most: beyond, a typo (and a time of day that names no day).
    assert validate.duration("366d") == 366 * 86400
    with pytest.raises(BadInput, match="at most 366d"):
        validate.duration("99999999999h")


def test_a_removal_on_another_day_says_which_day():
    import time

    from portmapctl.ops.gc import GcChain
    from portmapctl.render.gc import removable_text

    chain = GcChain("CNI-DN-x", 4, "dnat", "net", "ctr", (), seen_seconds=0.0)
    now = time.mktime((2026, 12, 1, 12, 0, 0, 0, 0, -1))
    assert removable_text(chain, 100, now) == "removable in 1m40s, at 12:01:40"
    assert removable_text(chain, 2 * 86400, now) == "removable in 48h00m, at 2026-12-03 12:00:00"


def test_list_help_explains_the_statuses():
    out = pmctl("list", "--help", env={"COLUMNS": "80"}).stdout
    for word in ("ok", "stale", "shadowed", "orphan", "incomplete", "legacy", "dead", "zombie"):
        assert f"\n    {word} " in out, word


@pytest.mark.parametrize("command", [[], ["list"], ["add"], ["check"], ["gc"], ["flush-udp"]])
def test_help_fits_80_columns_and_its_wrapped_examples_still_paste(command):
    out = pmctl(*command, "--help", env={"COLUMNS": "80"}).stdout
    assert "Examples:" in out
    assert [line for line in out.splitlines() if len(line) > 80] == []
    # An example wrapped with " \" is one command to a shell: one portmapctl accepts.
    root = typer.main.get_command(app)
    examples = [
        shlex.split(line)[1:]
        for line in out.replace(" \\\n", " ").splitlines()
        if line.lstrip().startswith("portmapctl ")
    ]
    assert examples
    for argv in examples:
        name, found, rest = root.resolve_command(root.make_context("portmapctl", argv), argv)
        found.make_context(name, rest)


# --- item 3: which cache was used --------------------------------------------------------


def test_a_wrong_cache_dir_is_said_on_stderr_and_in_json(tmp_path):
    wrong = str(tmp_path / "wrong")
    done = pmctl("list", *SNAPSHOTS, "--cni-cache-dir", wrong, "-o", "json")
    doc = validate_document("list", done.stdout)
    assert doc["cache"] == {"dirs": [wrong], "present": False, "entries": 0}
    assert done.stderr.count("\n") == 1 and "no CNI cache at" in done.stderr
    empty = tmp_path / "empty"
    (empty / "results").mkdir(parents=True)
    done = pmctl("check", *SNAPSHOTS, "--cni-cache-dir", str(empty), "-o", "json")
    assert validate_document("check", done.stdout)["cache"]["entries"] == 0
    assert "is empty" in done.stderr
    # The results/ folder itself given (helper-171's review): the line says to give its
    # parent, still one line.
    (empty / "results" / "mynet-abc-eth0").write_text("{}")
    done = pmctl("list", *SNAPSHOTS, "--cni-cache-dir", str(empty / "results"))
    assert done.stderr.count("\n") == 1, done.stderr
    assert f"results/ is below the cache directory: give {empty})" in done.stderr
    good = pmctl("list", *EXAMPLE, "-o", "json")
    assert json.loads(good.stdout)["cache"] == {"dirs": [CACHE[1]], "present": True, "entries": 3}
    assert good.stderr == ""


def test_cache_dir_repeats(tmp_path):
    other = tmp_path / "other"
    (other / "results").mkdir(parents=True)
    assert cache_info([CACHE[1], str(other)]).entries == 3
    done = pmctl("list", *EXAMPLE, "--cni-cache-dir", str(other), "-o", "json")
    assert json.loads(done.stdout)["cache"]["dirs"] == [CACHE[1], str(other)]


def test_one_cache_directory_given_in_several_spellings_is_read_once(tmp_path):
    """`--cni-cache-dir D --cni-cache-dir D/` (or D and a symlink to it, or a path
    through one: a unit file naming /var/lib/cni beside a runtime's config naming where
    it really is) read every entry twice: JSON said 6 entries of a 3-entry cache, each
    warning about an entry came twice, and the metrics file had a series per spelling,
    whose sum (monitoring.md's "nodes whose cache is empty" query) doubled the count.
    The directory is read once, under the spelling given first."""
    import shutil

    cache = tmp_path / "cni"
    shutil.copytree(CACHE[1], cache)
    (cache / "results" / "mynet-abc123-eth0").write_text("{")  # one warning, named
    (tmp_path / "alias").symlink_to(cache)
    spellings = [str(cache), f"{cache}/", str(tmp_path / "alias"), f"{tmp_path}/./cni"]
    given = [arg for d in spellings for arg in ("--cni-cache-dir", d)]
    metrics = tmp_path / "list.prom"
    done = pmctl("list", *SNAPSHOTS, *given, "-o", "json", "--metrics-file", str(metrics))
    assert done.returncode == 0, done.stderr
    doc = validate_document("list", done.stdout)
    assert doc["cache"] == {"dirs": [str(cache)], "present": True, "entries": 4}
    assert done.stderr.count("mynet-abc123-eth0") == 1, done.stderr
    series = [
        line for line in metrics.read_text().splitlines()
        if line.startswith("portmapctl_cni_cache_entries{")
    ]  # fmt: skip
    assert len(series) == 1 and f'dir="{cache}"' in series[0], series


def test_a_relative_cache_directory_in_a_deleted_working_directory_is_no_internal_error(
    tmp_path,
):
    """A cron job or script whose working directory was removed, given a relative
    --cni-cache-dir: telling the directories apart by real path asked for the working
    directory (realpath of a relative path), and every command ended in "internal
    error: FileNotFoundError" (exit 3). The cache is missing, as it is to the reads:
    said once, the command done."""
    gone = tmp_path / "gone"
    gone.mkdir()
    script = 'cd "$1" && rmdir "$1" && shift && exec "$@"'
    argv = ["sh", "-c", script, "sh", str(gone), sys.executable, "-m", "portmapctl",
            "list", *SNAPSHOTS, "--cni-cache-dir", "cni", "--cni-cache-dir", "cni/",
            "-o", "json"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT), NO_COLOR="1")
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert validate_document("list", done.stdout)["cache"]["dirs"] == ["cni"]
    assert done.stderr.count("no CNI cache at cni/results") == 1, done.stderr


# --- item 6: JSON schema 2, validated -------------------------------------------------------


def _fixture_runs():
    for v4 in sorted(FIXTURES.glob("*.v4.save")):
        v6 = v4.with_name(v4.name.replace(".v4.", ".v6."))
        yield v4.name[: -len(".v4.save")], ["--snapshot", str(v4), "--snapshot6", str(v6)]


@pytest.mark.parametrize("command", ["list", "check"])
def test_every_list_and_check_document_validates(command, tmp_path):
    runs = [("example", EXAMPLE)] + [
        (name, [*args, "--cni-cache-dir", str(tmp_path)]) for name, args in _fixture_runs()
    ]
    for name, args in runs:
        done = pmctl(command, *args, "-o", "json")
        assert done.returncode in (0, 1), (name, done.stderr)
        doc = validate_document(command, done.stdout)
        assert doc["schema"] == 2, name


def test_check_fix_is_a_command_or_null_and_prose_goes_in_why():
    doc = json.loads(pmctl("check", *EXAMPLE, "-o", "json").stdout)
    shadowed = [p for p in doc["problems"] if p["kind"] == "shadowed"][0]
    assert shadowed["fix"] is None and "another host port" in shadowed["why"]
    stale = [p for p in doc["problems"] if p["kind"] == "stale"][0]
    assert stale["fix"].startswith("portmapctl gc")


def _fix_lines(out: str) -> str:
    """The one `fix:` of a check table, its lines joined as a shell joins them."""
    lines = lines_of(out)
    start = next(i for i, line in enumerate(lines) if line.startswith("  fix: "))
    shown = [lines[start]]
    while shown[-1].endswith(" \\"):
        shown.append(lines[start + len(shown)])
    return " ".join(line.rstrip("\\").strip() for line in shown)[len("fix: ") :]


def _doubled_nft_entry(tmp_path) -> str:
    """v191-basic (upstream v1.9.1's ADD) with prerouting's entry rule twice, as `nft
    add rule ip cni_hostport prerouting ...` by hand leaves it (handle 40)."""
    import copy

    document = json.loads((FIXTURES / "nft" / "v191-basic.nft.json").read_text())
    items = document["nftables"]
    at = next(i for i, item in enumerate(items)
              if item.get("rule", {}).get("chain") == "prerouting"
              and item["rule"]["family"] == "ip")  # fmt: skip
    copied = copy.deepcopy(items[at])
    copied["rule"]["handle"] = 40
    items.insert(at + 1, copied)
    path = tmp_path / "doubled.nft.json"
    path.write_text(json.dumps(document))
    return str(path)


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_a_duplicate_entrys_fix_is_the_repair_command_and_by_hand_is_in_why(tmp_path, backend):
    """SPEC §3 JSON: `fix` is a command or null, prose goes in `why`. duplicate-entry's
    fix was `portmapctl check --repair ..., or by hand, the later copies by number, ...:
    iptables -t nat -D CNI-HOSTPORT-DNAT 2` (nftables: `..., or delete the extra
    copies by hand: nft delete rule ...`), whole in JSON `fix` (a script running it got
    `--cni-cache-dir DIR,` and exit 2), and on a terminal wrapped with `\\` as one
    command to paste."""
    cache = str(tmp_path / "cache")
    if backend == "iptables":
        conf = json.loads((FIXTURES / "basic.conf.json").read_text())
        [container] = conf["containers"]
        ports, ips = container["portMappings"], container["ips"]
        rp.write_cni_cache(cache, conf["network"], container["containerId"], "eth0",
                           rp.plugin_conf(conf["network"], ips, ports), ports, ips)  # fmt: skip
        dump = FIXTURES / "basic.v4.save"
        (entry,) = [line for line in dump.read_text().splitlines()
                    if line.startswith("-A CNI-HOSTPORT-DNAT") and "--dports 8080" in line]  # fmt: skip
        doubled = tmp_path / "doubled.v4.save"
        doubled.write_text(dump.read_text().replace(entry + "\n", entry + "\n" + entry + "\n"))
        node = ["--snapshot", str(doubled), "--family", "4", "--cni-cache-dir", cache]
        repair = f"portmapctl check --repair --family 4 --cni-cache-dir {cache}"
        by_hand = "`iptables -t nat -D CNI-HOSTPORT-DNAT 2`"
    else:
        for step in nftcases.steps("v191-basic"):
            conf = step["conf"]
            ips = [ip["address"] for ip in conf["prevResult"]["ips"]]
            ports = conf["runtimeConfig"]["portMappings"]
            rp.write_cni_cache(cache, conf["name"], step["containerId"], "eth0", conf, ports, ips)
        node = ["--nft-snapshot", _doubled_nft_entry(tmp_path), "--cni-cache-dir", cache]
        repair = f"portmapctl check --repair --cni-cache-dir {cache}"
        by_hand = "`nft delete rule ip cni_hostport prerouting handle 40`"
    done = pmctl("check", *node, "-o", "json")
    assert done.returncode == 1, done.stderr
    [problem] = [p for p in validated("check", done.stdout)["problems"]
                 if p["kind"] == "duplicate-entry"]  # fmt: skip
    assert problem["fix"] == repair
    assert by_hand in problem["why"]
    code, out, _ = at_80("check", *node)
    assert code == 1 and _fix_lines(out) == repair, out
    assert all(len(line) <= 80 for line in lines_of(out)), out


def test_without_a_cache_no_fix_is_a_command_with_a_placeholder():
    """gc needs a source of liveness where there is no cache: no command runs as it
    stands, so `fix` is null and what to give gc is said in `why`."""
    node = ("--snapshot", str(ROOT / "tests/fixtures/legacy-sn.v4.save"))
    done = pmctl("check", *node, "--cni-cache-dir", "/nonexistent", "-o", "json")
    doc = json.loads(done.stdout)
    [legacy] = [p for p in doc["problems"] if p["kind"] == "legacy"]
    assert legacy["fix"] is None and "--valid-attachments FILE" in legacy["why"]
    assert "FILE" not in doc["summary"]
    for problem in doc["problems"]:
        assert problem["fix"] is None or "FILE" not in problem["fix"], problem


def test_the_schemas_refuse_schema_1_words():
    doc = json.loads(pmctl("list", *EXAMPLE, "-o", "json").stdout)
    doc["chains"][0]["name"] = doc["chains"][0]["chain"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, json.loads((SCHEMAS / "list.json").read_text()))


# --- item 5: stdout/stderr/-q for list and check (add, gc, flush-udp: tests/kernel) ----------


@pytest.mark.parametrize("command", ["list", "check"])
def test_quiet_is_the_summary_line_alone_on_stdout(command):
    full = pmctl(command, *EXAMPLE)
    quiet = pmctl(command, *EXAMPLE, "-q")
    assert quiet.stderr == "" and quiet.stdout.count("\n") == 1
    # The same line, less check's pointer at the fixes the table output prints above it.
    last = full.stdout.splitlines(keepends=True)[-1]
    assert quiet.stdout == last.replace(" (fixes above)", "")


# --- item 7: add warns about a taken host port ------------------------------------------


def test_add_warns_when_its_mapping_will_be_shadowed():
    tables = {f: SnapshotBackend({4: str(ROOT / "examples/node.v4.save")}).read(f) for f in (4,)}
    config = validate.mapping_config(
        network="podman",
        container_id="newone",
        addresses=[validate.interface("10.88.0.9/16")],
        ports=[PortMapping(8080, 80), PortMapping(8443, 443)],
    )
    warnings = shadow_warnings(config, tables)
    assert len(warnings) == 1
    assert "tcp/8080 is mapped first to podman/3f2a9c1e5b7d" in warnings[0]
    assert "will be shadowed" in warnings[0]
    same = validate.mapping_config(
        network="podman",
        container_id="3f2a9c1e5b7d4a60web",
        addresses=[validate.interface("10.88.0.5/16")],
        ports=[PortMapping(8080, 80)],
    )
    # The winner re-added keeps its place: it shadows the other.
    assert [w.split(": ", 1)[1] for w in shadow_warnings(same, tables)] == [
        "this mapping comes first and shadows it"
    ]


def test_add_warns_only_of_a_mapping_that_takes_every_packet_first():
    """An earlier entry rule with conditions (conditionsV4/V6) takes only the packets
    they match: it shadows nothing (list and check say so), and add must not warn that
    the new mapping gets no traffic because of it. The one that takes the rest does."""
    from portmapctl.iptables.ruleset import parse_save

    text = (ROOT / "examples/node.v4.save").read_text()
    [first] = [
        line
        for line in text.splitlines()
        if line.startswith("-A CNI-HOSTPORT-DNAT -p tcp") and "3f2a9c1e5b7d4a60web" in line
    ]
    guarded = text.replace(first, first.replace(" -p tcp", " ! -s 192.168.0.0/16 -p tcp"))
    config = validate.mapping_config(
        network="podman",
        container_id="newone",
        addresses=[validate.interface("10.88.0.9/16")],
        ports=[PortMapping(8080, 80)],
    )
    [warning] = shadow_warnings(config, {4: parse_save(guarded, 4)})
    assert "tcp/8080 is mapped first to podman/8c41d07a2e9f" in warning
    alone = "\n".join(line for line in guarded.splitlines() if "8c41d07a2e9f4b13web2" not in line)
    assert shadow_warnings(config, {4: parse_save(alone + "\n", 4)}) == []


def test_add_warns_only_of_a_mapping_for_all_of_its_addresses():
    """The two containers mapping tcp/8080 first, bound to 127.0.0.1 alone: they take
    that address from a new mapping for every address, which gets all the rest: no
    "will be shadowed" (it was said). A new mapping for 127.0.0.1 itself is."""
    from portmapctl.iptables.ruleset import parse_save

    text = (
        (ROOT / "examples/node.v4.save")
        .read_text()
        .replace(
            "-p tcp -m tcp --dport 8080 -j DNAT",
            "-d 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j DNAT",
        )
    )
    tables = {4: parse_save(text, 4)}

    def config(host_ip: str) -> MappingConfig:
        return validate.mapping_config(
            network="podman",
            container_id="newone",
            addresses=[validate.interface("10.88.0.9/16")],
            ports=[PortMapping(8080, 80, host_ip=host_ip)],
        )

    assert shadow_warnings(config(""), tables) == []
    [warning] = shadow_warnings(config("127.0.0.1"), tables)
    assert "tcp/8080 is mapped first to podman/3f2a9c1e5b7d" in warning


# --- item 4: waiting for the lock, progress only on a terminal ----------------------------


def test_waiting_for_the_lock_says_who_holds_it(tmp_path, capfd):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from portmapctl.host import lock\n"
            "with lock.held(sys.argv[1]):\n"
            "    print('held', flush=True); time.sleep(2.5)\n",
            str(run_dir),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert holder.stdout.readline().strip() == "held"
    started = time.monotonic()
    with lock.held(str(run_dir), wait=10):
        waited = time.monotonic() - started
    holder.wait(timeout=10)
    err = capfd.readouterr().err
    assert waited > 1
    assert err == f"portmapctl: waiting for the portmapctl lock held by PID {holder.pid}" + (
        f" ({run_dir}/lock)\n"
    )


def test_the_waiting_message_names_the_holder_not_the_last_run(tmp_path, capfd):
    """The lock file keeps the PID of the last portmapctl run that held it; while
    something else holds the lock (flock(1), an older portmapctl, a run in another
    PID namespace) that number is a process gone, or another one: not to be named."""
    run_dir = tmp_path / "run"
    with lock.held(str(run_dir)):
        pass  # our PID is in the file now, and we do not hold the lock
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDWR)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('held', flush=True); time.sleep(2.5)\n",
            str(run_dir / "lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with lock.held(str(run_dir), wait=10):
        pass
    holder.wait(timeout=10)
    err = capfd.readouterr().err
    assert err == f"portmapctl: waiting for the portmapctl lock held by PID {holder.pid}" + (
        f" ({run_dir}/lock)\n"
    )


def test_the_holder_is_read_from_the_kernels_lock_table(tmp_path):
    path = tmp_path / "lock"
    path.write_text("4242\n")  # what a run long gone wrote
    info = os.stat(path)
    where = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    table = tmp_path / "locks"
    fd = os.open(path, os.O_RDONLY)
    try:
        table.write_text(f"1: -> FLOCK  ADVISORY  WRITE 99 {where} 0 EOF\n")
        assert lock.holder(fd, str(table)) is None, "a waiter holds nothing"
        table.write_text(f"1: FLOCK  ADVISORY  WRITE 0 {where} 0 EOF\n")
        assert lock.holder(fd, str(table)) is None, "outside our PID namespace"
        table.write_text(
            f"1: POSIX  ADVISORY  WRITE 7 {where} 0 EOF\n"
            f"2: FLOCK  ADVISORY  WRITE 1234 {where} 0 EOF\n"
        )
        assert lock.holder(fd, str(table)) == 1234
        assert lock.holder(fd, str(tmp_path / "absent")) is None
    finally:
        os.close(fd)


def test_no_waiting_message_when_the_lock_is_free(tmp_path, capfd):
    with lock.held(str(tmp_path / "run"), wait=1):
        pass
    assert capfd.readouterr().err == ""


def test_busy_shows_nothing_off_a_terminal_or_for_short_work(capsys):
    with Output().busy("working", after=0.0):
        time.sleep(0.05)
    assert capsys.readouterr().err == ""


def test_busy_spinner_on_a_terminal_after_the_delay(terminal_stderr):
    from test_terminal import _drain

    terminal = terminal_stderr()
    with Output().busy("quick", after=0.5):
        pass
    assert _drain(terminal, 0.2) == b""
    done = threading.Event()
    with Output().busy("removing chains", after=0.1):
        time.sleep(0.5)
        done.set()
    assert b"removing chains" in _drain(terminal)


# --- polish -----------------------------------------------------------------------------


def test_force_color_colours_a_pipe_and_no_color_wins():
    coloured = pmctl("list", *EXAMPLE, env={"FORCE_COLOR": "1", "NO_COLOR": ""}).stdout
    assert "\x1b[" in coloured
    plain = pmctl("list", *EXAMPLE, env={"FORCE_COLOR": "1", "NO_COLOR": "1"}).stdout
    assert "\x1b[" not in plain


def test_backend_nftables_lists_only_the_nftables_rows():
    nft = ["--nft-snapshot", str(ROOT / "examples/nft/ruleset.json"),
           "--cni-cache-dir", str(ROOT / "examples/nft/cni-cache")]  # fmt: skip
    both = json.loads(pmctl("list", *nft, "-o", "json").stdout)
    only = json.loads(pmctl("list", *nft, "--backend", "nftables", "-o", "json").stdout)
    assert only["mappings"] and {m["backend"] for m in only["mappings"]} == {"nftables"}
    assert only["mappings"] == [m for m in both["mappings"] if m["backend"] == "nftables"]


def test_an_ipv6_dump_given_to_snapshot_is_refused(tmp_path):
    done = pmctl("list", "--snapshot", str(ROOT / "examples/node.v6.save"), *CACHE)
    assert done.returncode == 2, done.stdout
    assert "IPv6" in done.stderr and "--snapshot6" in done.stderr
    done = pmctl("list", "--snapshot6", str(ROOT / "examples/node.v4.save"), *CACHE)
    assert done.returncode == 2 and "--snapshot" in done.stderr


@pytest.fixture
def terminal_stderr(monkeypatch):
    import io
    import pty

    master, slave = pty.openpty()
    stream = io.TextIOWrapper(os.fdopen(slave, "wb", buffering=0), write_through=True)
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)

    def attach() -> int:
        monkeypatch.setattr(sys, "stderr", stream)
        return master

    yield attach
    monkeypatch.undo()
    stream.close()
    os.close(master)


def test_ctrl_c_is_one_line_and_exit_130():
    import signal

    proc = subprocess.Popen(
        [sys.executable, "-m", "portmapctl", "list", "--snapshot", "-", *CACHE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)  # blocked reading the dump from stdin
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and out == "" and err == "portmapctl: aborted\n"


@pytest.mark.parametrize("command", ["list", "check"])
def test_nftables_documents_follow_the_schema(command):
    nft = ["--nft-snapshot", str(ROOT / "examples/nft/ruleset.json"),
           "--cni-cache-dir", str(ROOT / "examples/nft/cni-cache")]  # fmt: skip
    done = pmctl(command, *nft, "-o", "json")
    document = validate_document(command, done.stdout)
    rows = document["mappings"] if command == "list" else document["problems"]
    assert rows and {r["backend"] for r in rows} == {"nftables"}


def test_gc_table_rows_are_in_network_and_container_order():
    """As list's rows: gc printed them in the tables' order (c00023, c00021, c00020,
    ...), which an operator cannot scan (helper-142); removed rows first, then pending."""
    from portmapctl.ops.gc import GcChain, GcResult
    from portmapctl.render.gc import gc_table

    def chain(network: str, cid: str, family: int, seen: float) -> GcChain:
        return GcChain(f"CNI-DN-{cid}", family, "dnat", network, cid, (), seen_seconds=seen)

    removed = (chain("b", "c00003", 4, 300.0), chain("a", "c00002", 6, 300.0),
               chain("a", "c00002", 4, 300.0), chain("a", "c00001", 4, 300.0))  # fmt: skip
    pending = (chain("a", "c00009", 4, 1.0), chain("a", "c00008", 4, 1.0))
    result = GcResult(False, removed, pending, kept=0, conntrack_deleted=0)
    rows = gc_table(result, 120.0).plain.splitlines()[1:]
    order = [(line.split()[0], line.split()[2]) for line in rows if line.strip()]
    assert order == [("v4", "c00001"), ("v4", "c00002"), ("v6", "c00002"), ("v4", "c00003"),
                     ("v4", "c00008"), ("v4", "c00009")]  # fmt: skip


def test_gc_table_fits_a_terminal_by_cutting_the_network_and_ports():
    """gc's table, like list's: on a terminal of 80 columns a long network name and a
    long port list give way (with …); the ID, the age and the status stay whole; piped,
    everything is whole."""
    from portmapctl.ops.gc import GcChain, GcResult
    from portmapctl.render.gc import gc_table

    ports = tuple(("tcp", 20000 + i) for i in range(12))
    chain = GcChain(
        "CNI-DN-70a29d9dc18bc4d652ea5", 4, "dnat", "a-very-long-network-name.example",
        "0123456789abcdef", ports, seen_seconds=30.0,
    )  # fmt: skip
    result = GcResult(False, (), (chain,), kept=0, conntrack_deleted=0)
    narrow = gc_table(result, 120.0, width=80).plain.splitlines()
    assert max(len(line) for line in narrow) <= 80, narrow
    assert "…" in narrow[1] and "0123456789ab " in narrow[1] and "removable in 1m30s" in narrow[1]
    whole = gc_table(result, 120.0).plain
    assert "a-very-long-network-name.example" in whole and "20011/tcp" in whole


def test_a_container_id_in_a_path_is_not_cut():
    """Nomad names an allocation's namespace by its ID (/var/run/netns/<alloc ID>): the
    table shows the ID short, but the path in the text whole (0.1 cut it to a path that
    does not exist); a 64-hex ID that names a file likewise."""
    alloc = "2d413095-8fb8-42c9-8036-cabf8157bf60"
    hexid = f"{7:064x}"
    problems = tuple(
        Problem(
            ProblemKind.ZOMBIE,
            4,
            f"CNI-DN-{n:021x}",
            "nomad",
            cid,
            f"cached, but its network namespace /var/run/netns/{cid} is gone; {cid} is not repaired",
            "portmapctl gc --netns-liveness",
            "the runtime forgot the container without a CNI DEL",
        )
        for n, cid in enumerate((alloc, hexid))
    )
    text = render.check_text(CheckResult(problems, (4, 6), "node", True, 2, 2), width=250).plain
    # (The allocation short as Nomad prints it: the UUID's first group.)
    for cid, short in ((alloc, "2d413095"), (hexid, hexid[:12])):
        assert f"/var/run/netns/{cid} is gone; {short} is not repaired" in text


def test_a_byte_that_is_not_utf8_in_a_comment_is_written_escaped_in_the_table(tmp_path):
    """A container ID from a rule's comment with byte 0xff went raw into list's table
    (on a terminal too), where JSON and stderr write it \\xff (core/text)."""
    # (Its chain named for it, as the plugin names one: a comment naming another
    # chain's owner names nobody.)
    text = (FIXTURES / "basic.v4.save").read_bytes().replace(b'id: \\"abc123', b'id: \\"ab\xff')
    text = text.replace(
        chain_name("mynet", "abc123").encode(), chain_name("mynet", "ab\udcff").encode()
    )
    dump = tmp_path / "odd.v4.save"
    dump.write_bytes(text)
    args = ("list", "--snapshot", str(dump), "--cni-cache-dir", "/nonexistent")
    for out in (pmctl(*args).stdout, at_80(*args)[1], pmctl(*args, "--no-trunc").stdout):
        assert "ab\\xff" in out and "\udcff" not in out and "\ufffd" not in out, out
    assert json.loads(pmctl(*args, "-o", "json").stdout)["mappings"][0]["container_id"] == "ab\\xff"


def test_the_fix_of_one_mapping_checked_in_a_dump_is_a_repair_that_runs(tmp_path):
    """A check of one mapping prints as its fix the same command with --repair. Read
    from a dump (--snapshot6, on a laptop with a support bundle), that command kept
    `--snapshot6 FILE`, and `check --repair --snapshot6` is refused (exit 2: "--repair
    changes the node"): the fix printed could not run. As the node check's fix, it is
    now the command for the node itself, the dumps left out."""
    dump = str(FIXTURES / "basic.v6.save")  # the real plugin's empty IPv6 nat table
    mapping = ["--family", "6", "--network", "mynet", "--container", "abc123",
               "--ip", "fd00::5/64", "-p", "8080:80", "--cni-cache-dir", str(tmp_path)]  # fmt: skip
    for snapshot in (["--snapshot6", dump], [f"--snapshot6={dump}"]):
        done = pmctl("check", *snapshot, *mapping, "-o", "json")
        assert done.returncode == 1, done.stderr
        [problem] = validated("check", done.stdout)["problems"]
        assert problem["kind"] == "missing-chain"
        assert shlex.split(problem["fix"]) == ["portmapctl", "check", *mapping, "--repair"]


def test_every_key_of_each_json_schema_is_in_docs_json_md():
    """docs/json.md is where a script's author reads what each command's document
    holds: gc's `refused` (the chains iptables refused, each tried alone, with `why`:
    the run exits 1 and still prints its document) was in docs/schema/gc.json and in
    the output, and not in json.md's gc table, whose Errors section said to read stdout
    only on exit 0 (or 1 for check)."""
    text = (ROOT / "docs" / "json.md").read_text()
    sections = dict(re.findall(r"^## (\S+)\n(.*?)(?=^## |\Z)", text, re.M | re.S))
    for command in ("list", "add", "check", "gc", "flush-udp"):
        schema = json.loads((ROOT / "docs" / "schema" / f"{command}.json").read_text())
        common = ("schema", "cache")  # (Schema 2's section says them for every command)
        missing = [k for k in schema["properties"] if k not in common
                   and f"`{k}`" not in sections[command]]  # fmt: skip
        assert not missing, (command, missing)


def test_a_line_break_in_a_cache_directory_keeps_each_warning_one_line(tmp_path):
    """A warning is one line (Output.warn: a log's grep finds it whole), its control
    characters escaped; a line break was not: with --cni-cache-dir "D\\nE" holding an
    empty results/ and a runtime's cache/ below it, "the CNI cache at D" / "E/results
    is empty ..." and "D" / "E/cache/results holds 1 CNI cache entry not read here ..."
    came out as two lines each, the second without `portmapctl: warning:`."""
    from pmctl import run

    odd = tmp_path / "n\nl"
    (odd / "results").mkdir(parents=True)
    below = odd / "cache" / "results"
    below.mkdir(parents=True)
    (below / "cbr0-d0d0d0d0-eth0").write_text(json.dumps({"kind": "cniCacheV1"}))
    snapshot = str(ROOT / "tests" / "fixtures" / "basic.v4.save")
    done = run(["list", "--snapshot", snapshot, "--cni-cache-dir", str(odd)])
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert any("not read here" in line for line in lines), done.stderr
    assert all(line.startswith("portmapctl: warning: ") for line in lines), done.stderr
    assert all("n\\nl" in line for line in lines), done.stderr
