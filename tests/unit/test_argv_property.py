"""Every command line, however malformed, ends as SPEC §3/§4 say (a property).

For argv generated from every command's options, with hostile values (empty, control
characters, bytes that are not UTF-8, very long, out-of-range ports, addresses with
zones, prefixes and brackets, unknown choices, options repeated and out of order) and
dumps that are truncated, binary, a directory, too big, or another tool's output:

- the exit code is one of SPEC §4's (0, 1, 2, 3), never an internal error;
- an error is exactly one stderr line starting `portmapctl: error: `, no traceback;
- nothing is written (the files, the cache, the working directory stay as they were).

No root, no kernel: `list` and `check` read a --snapshot; `add`, `gc` and `flush-udp`
run with --dry-run in a namespace path that does not exist, so a command that gets past
its options stops there (exit 3) without looking at the machine's own tables. Run in
the test's process (portmapctl.entry.main(argv)), derandomized: the same examples every
run, a few seconds in all.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portmapctl.entry import main

FIXTURES = Path(__file__).parents[1] / "fixtures"

COMMON = ["--backend", "--iptables", "--family", "--cni-cache-dir", "-o", "--output"]
FLAGS = ["--no-headers", "--no-trunc", "--no-color", "-q", "--quiet", "-v"]
MAPPING = ["--network", "--container", "--ip", "-p", "--publish", "--mark-bit",
           "--external-setmark-chain", "--conditions-v4", "--conditions-v6", "--cni-config",
           "--ifname"]  # fmt: skip
MAPPING_FLAGS = ["--no-snat", "--masq-all", "--no-flush-udp"]
# Each command's own options (--metrics-file, --netns and --repair left out: the one
# writes a file on purpose, the others would reach a real namespace's tables).
OPTIONS: Dict[str, Tuple[List[str], List[str]]] = {
    "list": (
        [
            "--container",
            "--network",
            "--port",
            "--proto",
            "--status",
            "--snapshot",
            "--snapshot6",
            "--nft-snapshot",
        ],
        ["--conntrack"],
    ),  # fmt: skip
    "check": (MAPPING + ["--snapshot", "--snapshot6", "--nft-snapshot"], MAPPING_FLAGS),
    "add": (MAPPING, MAPPING_FLAGS),
    "gc": (["--valid-attachments", "--keep", "--min-age"], ["--all", "--no-flush-udp", "-y"]),
    "flush-udp": (["--port", "--container"], ["--stale-only"]),
}

VALUES = [
    "", " ", "\t", "\x01", "\x7f", "\x1b[31m", "a\nb", "a" * 5000, "\udcff", "\udce9abc",
    "0", "1", "65535", "65536", "-1", "99999999999999999999", "8080-80", "80-8080",
    "1e3", "0x50", "+80", "\u0668\u0660", "fe80::1%eth0", "[::1]", "10.0.0.1/33",
    "10.0.0.1/-1", "::ffff:1.2.3.4", "1.2.3.4/24", "300.1.1.1/24", "fd00::5/64",
    "[::1]:8080:80", "a:b:c:d", "8080:80/TCP", "8080:80/icmp", "8080:80/", ":80", "8080:",
    "1.2.3.4:8080:80/udp", "[fe80::1%eth0]:80:80/tcp", "[10.0.0.1]:80:80", "1h05m", "-1s",
    "1.5m", "1d", "10000000000h", "4", "6", "all", "v7", "V4", "auto", "nft", "legacy",
    "iptc", "json", "wide", "xml", "-", "--", "-x", "abc123", "mynet", "ok", "stale",
    "bogus", "/", "/dev/null", "13", "33", "CNI-HOSTPORT-DNAT", "-s 1.2.3.4",
    "-m conntrack --ctstate BOGUS", "-j ACCEPT", "'unclosed", '"', "\\", "eth0", "..",
    "x" * 300, "-m comment --comment \udcff",
]  # fmt: skip


# A value each option takes, so that a command line is often valid but for one part.
VALID = {
    "--backend": "iptables", "--iptables": "nft", "--family": "v4", "-o": "json",
    "--output": "wide", "--container": "abc", "--network": "mynet", "--port": "8080",
    "--proto": "TCP", "--status": "ok", "--ip": "10.88.0.5/16", "-p": "127.0.0.1:9090:90/udp",
    "--publish": "[::1]:9091:91", "--mark-bit": "5", "--external-setmark-chain": "MARKIT",
    "--conditions-v4": "-s 10.0.0.0/8", "--conditions-v6": "! -s ::1",
    "--ifname": "net1", "--keep": "abc", "--min-age": "1h05m",
}  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    """Dumps and configs of every kind a user may hand a command by mistake."""
    root = tmp_path_factory.mktemp("argv")
    good = (FIXTURES / "basic.v4.save").read_text()
    made: Dict[str, str] = {}

    def put(name: str, content: bytes) -> None:
        (root / name).write_bytes(content)
        made[name] = str(root / name)

    put("good4", good.encode())
    put("good6", (FIXTURES / "basic.v6.save").read_bytes())
    put("truncated", good.encode()[:300])
    put("binary", bytes(range(256)) * 4)
    put("empty", b"")
    put("counters", good.replace("-A ", "[3:180] -A ").encode())  # iptables-save -c
    put("filter-only", b"*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n")
    put("nft-text", (FIXTURES / "nft" / "v162-hostip.nft").read_bytes())
    put("nft-json", (FIXTURES / "nft" / "v162-hostip.nft.json").read_bytes())
    put("conf", (FIXTURES / "basic.conf.json").read_bytes())
    put("not-utf8", b"*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j \xff\nCOMMIT\n")
    with open(root / "huge", "wb") as handle:  # sparse: over every size limit, no disk
        handle.truncate(80 * 1024 * 1024)
    made["huge"] = str(root / "huge")
    (root / "a-directory").mkdir()
    made["a-directory"] = str(root / "a-directory")
    made["missing"] = str(root / "missing")
    (root / "cache" / "results").mkdir(parents=True)
    made["cache"] = str(root / "cache")
    made["no-namespace"] = str(root / "no-such-namespace")
    return made


def _tree(root: Path) -> Dict[str, Tuple[int, int]]:
    found = {}
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d != "run"]  # (the lock and gc's state: its own)
        for name in names:
            info = os.lstat(os.path.join(folder, name))
            found[os.path.join(folder, name)] = (info.st_size, info.st_mtime_ns)
    return found


def _run(argv: List[str]) -> Tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    stdin = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(b""), encoding="utf-8")
    # -v hangs a handler on the library's logger, for a process's one run: taken off.
    library = logging.getLogger("portmapctl")
    handlers, level = library.handlers[:], library.level
    code: object = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(argv)
            except SystemExit as done:
                code = done.code
    finally:
        sys.stdin = stdin
        library.handlers[:] = handlers
        library.setLevel(level)
    return (
        (code if isinstance(code, int) else 0 if code is None else -1),
        out.getvalue(),
        err.getvalue(),
    )


@st.composite
def command_lines(draw: st.DrawFn, files: Dict[str, str]) -> List[str]:
    command = draw(st.sampled_from(sorted(OPTIONS)))
    valued, flags = OPTIONS[command]
    file_values = [files[k] for k in sorted(files) if k not in ("cache", "no-namespace")]
    hostile = st.one_of(
        st.sampled_from(VALUES),
        st.sampled_from(file_values),
        st.text(st.characters(blacklist_characters="\x00"), max_size=12),
    )

    def value(option: str) -> st.SearchStrategy[str]:
        return st.one_of(st.just(VALID[option]), hostile) if option in VALID else hostile

    # A valid base, so that the hostile part is what is judged; groups of an option
    # and its value, so that a shuffle never takes --dry-run or --netns from a
    # command that would then change the machine's own tables.
    if command in ("list", "check"):
        groups = [["--snapshot", files["good4"]]]
    else:
        groups = [["--dry-run"], ["--netns", files["no-namespace"]]]
    if command in ("add", "check") and draw(st.booleans()):
        groups += [["--network", "mynet"], ["--container", "abc123"], ["--ip", "10.88.0.5/16"],
                   ["-p", "8080:80"]]  # fmt: skip
    if command == "gc":
        groups.append(["--keep", "abc123"])
    groups.append(["--cni-cache-dir", files["cache"]])
    for option in draw(st.lists(st.sampled_from(valued + COMMON + flags + FLAGS), max_size=4)):
        if option in flags or option in FLAGS:
            groups.append([option])
        elif draw(st.booleans()):
            groups.append([option, draw(value(option))])
        else:
            groups.append([f"{option}={draw(value(option))}"])
    if draw(st.integers(0, 9)) == 0:
        groups.append([draw(hostile.filter(lambda v: not v.startswith("-")))])  # a stray one
    if draw(st.booleans()):
        groups = draw(st.permutations(groups))  # option order
    return [command, *(token for group in groups for token in group)]


ENV = {
    "PORTMAPCTL_IPTABLES": ["nft", "bogus", "\udcff", ""],
    "PORTMAPCTL_IPTABLES_TIMEOUT": ["5", "0", "nan", "inf", "-1", "\udcff"],
    "PORTMAPCTL_XTABLES_WAIT": ["3", "0", "1.5", "\udcff"],
    "PORTMAPCTL_NFT_BATCH": ["0", "1", "2", "\udcff"],
    "PORTMAPCTL_PROGRESS_AFTER": ["0", "-1", "1e999", "\udcff"],
    "PORTMAPCTL_HOST_LOCAL_DIR": ["relative", "\udcff"],
}


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_any_command_line_ends_as_spec_4_says(files, tmp_path, monkeypatch, data):
    argv = data.draw(command_lines(files))
    env = data.draw(st.sampled_from(sorted(ENV))) if data.draw(st.integers(0, 9)) == 0 else None
    root = Path(files["good4"]).parent
    monkeypatch.chdir(tmp_path)  # a relative path written to would land here
    monkeypatch.setenv("PORTMAPCTL_RUN_DIR", str(root / "run"))
    monkeypatch.setenv("PORTMAPCTL_METRICS_FILE", "")
    before = (_tree(root), _tree(tmp_path))
    with monkeypatch.context() as this_example:  # (the fixture outlives the example)
        if env is not None:  # one in ten: a PORTMAPCTL_ variable, often one it refuses
            this_example.setenv(env, data.draw(st.sampled_from(ENV[env])))
        code, out, err = _run(argv)
    lines = err.splitlines()
    verbose = "-v" in argv
    assert code in (0, 1, 2, 3), (argv, code, err)
    assert "internal error" not in err, (argv, err)
    if not verbose:
        assert "Traceback" not in err, (argv, err)
    if code in (2, 3):
        errors = [line for line in lines if line.startswith("portmapctl: error: ")]
        assert len(errors) == 1, (argv, err)
        if not verbose:
            assert lines == errors, (argv, err)
    assert code != 1 or argv[0] == "check", (argv, code, err)  # (1: check's problems)
    assert (_tree(root), _tree(tmp_path)) == before, argv


@pytest.mark.parametrize("option", ["--conditions-v4", "--conditions-v6"])
@pytest.mark.parametrize("words", ["-m comment --comment \udcff", "-i eth\udce9"])
def test_conditions_of_bytes_that_are_not_utf8_are_bad_input(files, option, words):
    """Bytes that are not UTF-8 on the command line arrive as lone surrogates: in a
    comment they ended check and add in an internal error (UnicodeEncodeError, exit
    3); they are refused as bad input, as an interface name that is not UTF-8 is."""
    argv = ["check", "--snapshot", files["good4"], "--cni-cache-dir", files["cache"],
            "--network", "mynet", "--container", "abc123", "--ip", "10.88.0.5/16",
            "--ip", "fd00::5/64", "-p", "8080:80", option, words]  # fmt: skip
    code, out, err = _run(argv)
    assert code == 2 and out == "", err
    assert err.startswith(f"portmapctl: error: invalid {option}") and "not UTF-8" in err, err
    assert len(err.splitlines()) == 1, err
