"""Output in any locale (SPEC §3 output contract, §5 "one bad record never stops the
node's work"): a rule comment's bytes need not be UTF-8 (iptables takes any), and a
terminal's encoding need not be UTF-8 (PYTHONIOENCODING=ascii, a latin-1 locale).
Neither may turn a command into an "internal error", exit 1 (check's "problems found").

PYTHONIOENCODING=utf-8 gives the strict UTF-8 stdout that a locale such as en_US.UTF-8
gives (this machine has only C and C.UTF-8, for which Python escapes surrogates itself).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
from test_terminal import EXAMPLE, ROOT, run_on_terminal

from portmapctl.iptables.chains import chain_name

# An entry rule whose comment names a container ID that is not UTF-8: check reports it
# (extra-entry), and its text holds those bytes.
BAD_ENTRY = (
    b'-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \\"podman\\" id: '
    b'\\"bad\xe9id\xff\\"" -m multiport --dports 9100 -j CNI-DN-e73a80cc054c8f213a469\n'
)


@pytest.fixture
def bad_dump(tmp_path: Path) -> List[str]:
    """The example node's arguments, its IPv4 dump with BAD_ENTRY added."""
    dump = (ROOT / "examples/node.v4.save").read_bytes()
    marker = b"-A CNI-HOSTPORT-MASQ"
    path = tmp_path / "node.v4.save"
    path.write_bytes(dump.replace(marker, BAD_ENTRY + marker, 1))
    return ["--snapshot", str(path), *EXAMPLE[2:]]


def piped(args: List[str], env: Dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "portmapctl", *args],
        capture_output=True,
        env={**os.environ, **env},
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("output", ["table", "wide"])
def test_a_comment_that_is_not_utf8_is_written_as_backslash_x_in_a_strict_utf8_locale(
    bad_dump, output
):
    """The rule's bytes reached stdout raw (surrogateescape): the table writes them
    `\\xe9`, as JSON and stderr do (test_a_table_writes_a_foreign_comments_...)."""
    done = piped(["check", *bad_dump, "-o", output], {"PYTHONIOENCODING": "utf-8"})
    assert b"internal error" not in done.stderr, done.stderr
    assert done.returncode == 1, done.stderr  # problems found, as in any other locale
    assert b"bad\\xe9id\\xff" in done.stdout and b"\xe9" not in done.stdout
    assert b"3 problems" not in done.stdout and b"4 problems" in done.stdout


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_a_terminal_that_cannot_show_the_cut_mark_gets_three_dots(encoding, tmp_path):
    """At 80 columns list cuts an IPv6 host address, and a long network name, with
    `…`; a terminal whose encoding has no such character got `?` for it
    (`[2001:db8:85a3:?:370:7334]:8080`, `long-network-na?`), which reads as a
    character of the address or name. It gets `...`, the table still aligned and
    within the width, the address still in whole groups."""
    from test_narrow_terminals import host_v6_dump

    env = {"PYTHONIOENCODING": encoding, "COLUMNS": "80", "NO_COLOR": "1"}
    code, out, err = run_on_terminal(["list", *host_v6_dump(tmp_path)], env)
    assert code == 0 and "internal error" not in err, err
    rows = out.replace("\r", "").splitlines()
    # Whole groups, the first two and the last at least (cuts.ip_floor).
    assert re.search(r" \[2001:db8:[0-9a-f:]*\.\.\.:[0-9a-f:]*7334\]:8080 ", out), out
    assert len({row.index(" yes ") for row in rows[1:3]}) == 1, rows
    assert all(len(row) <= 80 for row in rows), rows
    assert "2 mappings of 1 container" in out
    assert "\u2026" not in out and "?" not in out, out
    save = ["--snapshot", "tests/fixtures/long-comment.v4.save", "--cni-cache-dir", EXAMPLE[5]]
    code, out, err = run_on_terminal(["list", *save], env)
    network = out.replace("\r", "").splitlines()[1].split()[0]
    assert code == 0 and network.startswith("long-network") and network.endswith("..."), out


@pytest.mark.parametrize("output", ["table", "wide"])
def test_a_comment_that_is_not_utf8_on_an_ascii_stdout_is_ascii_text(bad_dump, output):
    """It was one `?` a byte; it is `\\xNN` now, as in any other locale."""
    done = piped(["check", *bad_dump, "-o", output], {"PYTHONIOENCODING": "ascii"})
    assert b"internal error" not in done.stderr, done.stderr
    assert done.returncode == 1, done.stderr
    assert "bad\\xe9id\\xff" in done.stdout.decode("ascii")


def _lone_surrogates(text: str) -> bool:
    """Whether a JSON text holds an escaped surrogate that is not half of a pair."""
    import re

    pairs = re.sub(r"\\ud[89ab][0-9a-f]{2}\\ud[c-f][0-9a-f]{2}", "", text)
    return re.search(r"\\ud[89a-f][0-9a-f]{2}", pairs) is not None


@pytest.mark.parametrize("command", ["list", "check"])
def test_json_writes_a_byte_that_is_not_utf8_as_backslash_x_and_stays_unicode(
    bad_dump, tmp_path, command
):
    """An escaped lone surrogate (`\\udce9`, Python's own stand-in for such a byte) is
    no Unicode text: strict parsers refuse the whole document (orjson: "invalid high
    surrogate in string"). Such a byte is written as the text `\\xe9`, as the metrics
    write such bytes of a path; a cache directory's path included."""
    cache = os.fsdecode(bytes(tmp_path) + b"/cni-\xe9")
    shutil.copytree(EXAMPLE[5], cache)
    args = [command, *bad_dump[:4], "--cni-cache-dir", cache, "-o", "json"]
    done = piped(args, {"PYTHONIOENCODING": "utf-8"})
    assert done.returncode in (0, 1) and b"internal error" not in done.stderr, done.stderr
    text = done.stdout.decode("utf-8")
    assert not _lone_surrogates(text), text
    document = json.loads(text)
    assert document["cache"]["dirs"] == [cache.replace("\udce9", "\\xe9")]
    if command == "check":
        rules = [p["rule"] or "" for p in document["problems"]]
        assert any('id: \\"bad\\xe9id\\xff\\"' in rule for rule in rules), rules


def test_unicode_only_spells_each_lone_surrogate_and_leaves_text_alone():
    from portmapctl.render.json import unicode_only

    document = {"a\udcff": ["caf\udce9", "\ud800 \U0001f600 é", 4, None, True]}
    assert unicode_only(document) == {"a\\xff": ["caf\\xe9", "\\ud800 \U0001f600 é", 4, None, True]}
    json.dumps(unicode_only(document), ensure_ascii=False).encode("utf-8")  # all Unicode


# A command-line argument's byte that is not UTF-8: Python holds 0xe9 as "\udce9".
E9 = "\udce9"


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["list", "--container", E9], "invalid container ID '\\xe9'"),
        (["add", "--network", f"n{E9}t", "--container", "c1", "--ip", "10.88.0.2/16",
          "-p", "80:80", "--dry-run"], "invalid network name 'n\\xe9t'"),
        (["list", "--port", E9], "invalid --port '\\xe9'"),
        (["list", "--snapshot", f"/nonexistent/{E9}"], "cannot read snapshot /nonexistent/\\xe9:"),
        # typer's (click's) own messages, which quote with repr() too.
        (["list", "--family", E9], "Invalid value for '--family': '\\xe9' is not one of"),
        (["list", f"--{E9}"], "No such option: --\\xe9"),
        # The one line stays one: a control character is escaped as before.
        (["list", "--container", f"a\n{E9}\x1b"], "invalid container ID 'a\\n\\xe9\\x1b'"),
        # A backslash the argument holds is not taken for such a byte.
        (["list", "--container", "\\udce9"], "invalid container ID '\\\\udce9'"),
    ],
    ids=["container", "network", "port", "snapshot-path", "family", "option", "control", "text"],
)  # fmt: skip
@pytest.mark.parametrize("encoding", ["utf-8", "ascii", "latin-1"])
def test_an_error_line_writes_an_arguments_byte_as_backslash_x(args, line, encoding):
    """It wrote `\\udce9`, Python's stand-in for the byte, where JSON writes `\\xe9`."""
    done = piped(args, {"PYTHONIOENCODING": encoding})
    assert done.returncode == 2, done.stderr
    assert done.stderr.decode("ascii").splitlines() == [done.stderr.decode("ascii").strip()], (
        done.stderr
    )  # one line, all of it ASCII text
    assert line in done.stderr.decode("ascii"), done.stderr
    assert b"\\udc" not in done.stderr.replace(b"\\\\udce9", b""), done.stderr


def test_a_warning_writes_a_paths_byte_as_backslash_x(tmp_path):
    """The missing cache's warning named `--cni-cache-dir $'/tmp/\\xe9'` `/tmp/\\udce9`."""
    cache = os.fsdecode(bytes(tmp_path) + b"/cni-\xe9")
    done = piped(["list", *EXAMPLE[:2], "--cni-cache-dir", cache], {})
    assert done.returncode == 0, done.stderr
    assert done.stderr.decode("ascii") == (
        f"portmapctl: warning: no CNI cache at {tmp_path}/cni-\\xe9/results: stale mappings"
        f" cannot be told from live ones ({tmp_path}/cni-\\xe9 is the cache directory given:"
        " check that the container runtime writes its CNI cache there)\n"
    )


def test_message_text_spells_lone_surrogates_and_repr_escapes_of_them():
    from portmapctl.core.text import message_text

    assert message_text("caf\udce9 \ud800 é \U0001f600") == "caf\\xe9 \\ud800 é \U0001f600"
    assert message_text(repr("caf\udce9")) == "'caf\\xe9'"
    # A backslash the value held is doubled by repr(): not such a byte.
    assert message_text(repr("caf\\udce9")) == "'caf\\\\udce9'"
    assert message_text(repr("\\\udce9")) == "'\\\\\\xe9'"


def test_message_text_writes_control_characters_a_terminal_would_act_on():
    """A foreign nft rule's comment holding ESC reached stderr raw in check's note
    (helper-138): it could colour or move the operator's terminal. Line breaks stay."""
    from portmapctl.core.text import message_text

    comment = "caf\u00e9 \x1b[31m\x07\x7f\x9b"
    # (A C1 control as `\\u009b`: `\\x9b` is the text of the byte 0x9b.)
    want = "rule: café \\x1b[31m\\x07\\x7f\\u009b\nnext"
    assert message_text(f"rule: {comment}\nnext", None) == want
    assert message_text("a\tb") == "a\tb"


# A foreign rule entering a portmap chain, twice, whose comment names a network and a
# container with an escape sequence and bytes that are not UTF-8 in them: list shows
# them (NETWORK, CONTAINER), check in its rows, its PROBLEM and RULE columns and the
# fix under the table (a duplicate-entry's `iptables -D` quotes the rule).
# (Its chain named for them, as the plugin names one: a comment naming another chain's
# owner names nobody.)
FOREIGN_CHAIN = chain_name("n\x1b[31met\udce9\udcff", "c\x1b[2Jid\udce9\udcff").encode()
FOREIGN_RULES = (
    b"-A " + FOREIGN_CHAIN + b" -p tcp -m tcp --dport 7000 -j DNAT --to-destination 10.88.0.9:70\n"
    + 2 * (
        b'-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \\"n\x1b[31met\xe9\xff\\"'
        b' id: \\"c\x1b[2Jid\xe9\xff\\"" -m multiport --dports 7000 -j ' + FOREIGN_CHAIN + b"\n"
    )
)  # fmt: skip


@pytest.fixture
def foreign_dump(tmp_path: Path) -> List[str]:
    """The example node's arguments, its IPv4 dump with FOREIGN_RULES added."""
    dump = (ROOT / "examples/node.v4.save").read_bytes()
    dump = dump.replace(
        b":CNI-HOSTPORT-DNAT", b":" + FOREIGN_CHAIN + b" - [0:0]\n:CNI-HOSTPORT-DNAT"
    )
    marker = b"-A CNI-HOSTPORT-MASQ"
    path = tmp_path / "node.v4.save"
    path.write_bytes(dump.replace(marker, FOREIGN_RULES + marker, 1))
    return ["--snapshot", str(path), *EXAMPLE[2:]]


def _shown_as_text(out: str, whole: bool = True) -> None:
    """Table output holds the comment's ESC and bytes as text, never raw: no control
    character but the line breaks, no lone surrogate (nor the U+FFFD that decoding a
    raw byte makes). Not `whole`: a narrow terminal may cut the network's name."""
    assert "c\\x1b[2Jid\\xe9\\xff" in out, out
    assert not whole or "n\\x1b[31met\\xe9\\xff" in out, out
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffd]", out), repr(out)


@pytest.mark.parametrize("output", ["table", "wide"])
@pytest.mark.parametrize("command", ["list", "check"])
def test_a_table_writes_a_foreign_comments_escape_and_bytes_as_text(foreign_dump, command, output):
    """They reached stdout raw: ESC in list's NETWORK and CONTAINER and check's
    CONTAINER, PROBLEM and RULE cells (it could colour or move the operator's
    terminal), the bytes \xe9\xff in check's last column and its fix line; piped
    and on a terminal (rich draws it), wide and cut to 80 columns."""
    args = [command, *foreign_dump, "-o", output, "--no-trunc"]
    done = piped(args, {"PYTHONIOENCODING": "utf-8"})
    assert done.returncode == (1 if command == "check" else 0), done.stderr
    _shown_as_text(done.stdout.decode("utf-8"))
    if command == "check":  # (the duplicate-entry's PROBLEM quotes the rule)
        rule = '2 copies of -A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \\"n\\x1b[31met\\xe9\\xff\\"'
        assert rule in done.stdout.decode(), done.stdout
    for columns in ("200", "80"):
        env = {"NO_COLOR": "1", "COLUMNS": columns, "PYTHONIOENCODING": "utf-8"}
        code, out, err = run_on_terminal(args[:-1], env)
        assert code == done.returncode, err
        _shown_as_text(out.replace("\r\n", "\n"), whole=columns == "200")


@pytest.mark.parametrize("command", ["list", "check"])
def test_json_of_a_foreign_comments_escape_and_bytes_is_as_it_was(foreign_dump, command):
    """The tables' escaping leaves JSON as it was: ESC is JSON's \u001b (the string
    holds the character), a byte \xe9 the text `\\xe9` (unicode_only)."""
    done = piped([command, *foreign_dump, "-o", "json"], {"PYTHONIOENCODING": "utf-8"})
    assert done.returncode in (0, 1), done.stderr
    assert b'"c\\u001b[2Jid\\\\xe9\\\\xff"' in done.stdout, done.stdout
    document = json.loads(done.stdout)
    rows = document["mappings"] if command == "list" else document["problems"]
    ours = [row for row in rows if row["container_id"] == "c\x1b[2Jid\\xe9\\xff"]
    assert ours and all(row["network"] == "n\x1b[31met\\xe9\\xff" for row in ours), rows
    if command == "check":
        rules = [row["rule"] for row in ours if row["kind"] == "duplicate-entry"]
        assert rules == ['-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \\"n'
                         '\\x1b[31met\\xe9\\xff\\" id: \\"c\\x1b[2Jid\\xe9\\xff\\"" -m multiport'
                         " --dports 7000 -j " + FOREIGN_CHAIN.decode()], rules  # fmt: skip


def test_every_table_and_the_summary_line_write_control_characters_and_bytes_as_text(capsys):
    """The grid under list and gc (a row's cells and its status), the table under check
    and flush-udp (a last cell's pieces too), and the summary line: a tab and a line
    break in a cell are written out too (they would move its columns)."""
    from portmapctl.cli.output import Output
    from portmapctl.core.text import cell_text
    from portmapctl.ops.gc import GcChain, GcResult
    from portmapctl.render.gc import gc_table
    from portmapctl.render.table import Piece, grid, table

    odd = "a\x1b[2J\t\n\x9b\udce9\ud800"
    shown = "a\\x1b[2J\\t\\n\\u009b\\xe9\\ud800"
    assert cell_text(odd, None) == shown and cell_text("café \U0001f600", None) == "café \U0001f600"
    rows = grid(["A", "B"], [[odd, "x"]], [[odd, "ok"]], width=None)
    drawn = table(["A", "LAST"], [[odd]], [[Piece(odd, "red")]], width=80)
    chain = GcChain("CNI-DN-0123456789abcdef01234", 4, "dnat", odd, odd, (), 0.0)
    gc = gc_table(GcResult(False, (chain,), (), 0, 0), wide=True)
    for out in (rows.plain, rows.__rich__().plain, drawn.plain, gc.plain):
        assert out.count(shown) >= 2 and out.count("\n") == 1, repr(out)
    Output().summary(f"1 duplicate-entry -> iptables -D X '{odd}'")
    assert capsys.readouterr().out == f"1 duplicate-entry -> iptables -D X '{shown}'\n"


# Lines that reach stderr other than through the error line and Output.warn.
_STDERR_LINES = {
    # host/lock.py's line while another run holds the lock, under a run directory
    # (PORTMAPCTL_RUN_DIR) with such a byte in its name.
    "lock": (
        "import fcntl, os, sys\n"
        "from portmapctl.host import lock\n"
        "run = sys.argv[1]\n"
        "os.makedirs(run)\n"
        "fd = os.open(os.path.join(run, 'lock'), os.O_RDWR | os.O_CREAT, 0o600)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "if os.fork() == 0:\n"
        "    with lock.held(run, wait=30):\n"
        "        os._exit(0)\n"
        "import time; time.sleep(3)  # past SAY_WAITING_AFTER, even on a busy machine\n"
        "fcntl.flock(fd, fcntl.LOCK_UN)\n"
        "os.wait()\n"
    ),
    # A remark (Output.message, printed by rich): check's notes, the repair's lines.
    "message": (
        "import sys\n"
        "from portmapctl.cli.output import Output\n"
        "Output().message(f'looked in {sys.argv[1]}')\n"
    ),
    # -v's details (logging).
    "detail": (
        "import logging, sys\n"
        "from portmapctl import cli\n"
        "cli._show_details()\n"
        "logging.getLogger('portmapctl.test').debug('looked in %s', sys.argv[1])\n"
    ),
}


@pytest.mark.parametrize("what", sorted(_STDERR_LINES))
@pytest.mark.parametrize("encoding", ["utf-8", "ascii"])
def test_other_stderr_lines_write_a_paths_byte_as_backslash_x(tmp_path, what, encoding):
    """The lock's waiting line, rich's remarks and -v's details wrote `\\udce9`."""
    path = os.fsdecode(bytes(tmp_path) + b"/run-\xe9")
    done = subprocess.run(
        [sys.executable, "-c", _STDERR_LINES[what], path],
        capture_output=True,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "PYTHONIOENCODING": encoding,
            "NO_COLOR": "1",
        },  # fmt: skip
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    err = done.stderr.decode("ascii")  # all of it ASCII text
    assert f"{tmp_path}/run-\\xe9" in err and "\\udc" not in err, err
    assert len(err.splitlines()) == 1, err


def _words_a_shell_reads(command: str, shell: str) -> List[bytes]:
    """The arguments `shell` hands portmapctl when `command` is pasted into it."""
    done = subprocess.run(
        [shell, "-c", "portmapctl() { printf '%s\\0' \"$@\"; }\n" + command],
        capture_output=True,
        timeout=30,
        check=True,
    )
    return done.stdout.split(b"\0")[:-1]


@pytest.mark.parametrize(
    "name", [b"cni-\xf6", b"cni\nnew line", b"it's \\ \xe9\x1b[31m"], ids=["byte", "newline", "mix"]
)
@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_a_fix_command_names_a_paths_bytes_as_a_shell_reads_them_back(tmp_path, name, shell):
    """A cache directory whose name is not UTF-8 text (or holds a control character):
    check's fix `portmapctl gc --cni-cache-dir '/tmp/.../cni-\\xf6'` was the text
    `\\xf6` in single quotes, so pasted, gc read a directory that is not there and
    refused ("nothing says which containers are live"). The command, pasted into a
    shell, must give gc the directory's own bytes: in the table and in JSON `fix`."""
    if shutil.which(shell) is None:
        pytest.skip(f"no {shell}")
    cache = bytes(tmp_path) + b"/" + name
    os.makedirs(cache + b"/results")
    # An entry of another container: the cache is there, so gc is the fix (a command).
    Path(os.fsdecode(cache + b"/results/othernet-0123456789ab-eth0")).write_text("{}")
    args = ["check", "--snapshot", str(ROOT / "tests/fixtures/basic.v4.save")]
    args += ["--cni-cache-dir", os.fsdecode(cache)]
    wanted = [b"gc", b"--cni-cache-dir", cache]
    table = piped(args, {"NO_COLOR": "1"})
    assert table.returncode == 1, table.stderr
    fixes = [line for line in table.stdout.decode().splitlines() if "fix: " in line]
    assert len(fixes) == 1, table.stdout
    assert _words_a_shell_reads(fixes[0].split("fix: ", 1)[1], shell) == wanted
    document = json.loads(piped([*args, "-o", "json"], {}).stdout)
    (fix,) = {p["fix"] for p in document["problems"]}
    assert _words_a_shell_reads(fix, shell) == wanted
