"""Issue 16 on a real node (root, a fresh namespace, the real plugin): the interactive
gc that finishes, -q and stdout for add/gc/flush-udp, their JSON against
docs/schema/, the empty-cache rule of gc, and add's warning about a taken port.
"""

from __future__ import annotations

import json
import re
import time

import pytest
from json_schemas import validated
from pmctl import assert_error, run
from test_gc import Node_, _on_terminal, _ports

from portmapctl.iptables.chains import chain_name


def valid(command: str, text: str) -> dict:
    return validated(command, text)


@pytest.fixture
def node(host_ns, tmp_path) -> Node_:
    cache = tmp_path / "cni"
    (cache / "results").mkdir(parents=True)
    return Node_(host_ns, "nft", cache)


def common(node: Node_):
    return ["--netns", node.ns, "--iptables", node.mode, "--cni-cache-dir", str(node.cache)]


def test_interactive_gc_removes_a_chain_after_min_age(node: Node_):
    """Item 1: the preview records sightings, so a second interactive run removes."""
    node.add("gcnet", "live1", ["10.88.0.11/16"], _ports("8080/tcp"))
    node.add("gcnet", "gone1", ["10.88.0.12/16"], _ports("8081/tcp"), cache=False)
    gone = chain_name("gcnet", "gone1")
    argv = ["gc", *common(node), "--min-age", "5s"]
    code, terminal, stdout = _on_terminal(argv, b"y")
    assert code == 0, terminal
    assert "(dry run)" not in terminal + stdout and "[y/N]" not in terminal
    pending = [line for line in stdout.splitlines() if " gone1 " in line]
    assert len(pending) == 1 and len(pending[0]) <= 80
    assert re.search(r"  removable in [45]s, at (\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d$", pending[0]), (
        pending
    )
    assert stdout.splitlines()[-1] == "gc: nothing to remove now, 1 pending, 1 kept"
    time.sleep(5.2)
    code, terminal, stdout = _on_terminal(argv, b"y")
    assert code == 0, terminal
    assert (
        "Remove 1 chain of 1 container?" in terminal and " gone1 " in terminal
    )  # the preview: terminal
    assert stdout.splitlines()[-1].startswith("gc: removed 1 chain of 1 container, 0 pending")
    assert not [line for line in node.lines(4) if gone in line]
    node.check("live1")


def test_dry_run_records_sightings_too(node: Node_):
    node.add("gcnet", "live1", ["10.88.0.11/16"], _ports("8080/tcp"))
    node.add("gcnet", "gone1", ["10.88.0.12/16"], _ports("8081/tcp"), cache=False)
    first = valid("gc", node.gc("--dry-run", "--min-age", "1s", "-o", "json").stdout)
    assert first["removed"] == [] and len(first["pending"]) == 1
    time.sleep(1.1)
    second = valid("gc", node.gc("--dry-run", "--min-age", "1s", "-o", "json").stdout)
    assert [r["container_id"] for r in second["removed"]] == ["gone1"]


def test_quiet_and_stdout_for_add_gc_and_flush_udp(node: Node_):
    """Item 5: the result on stdout (add too), -q is the summary line alone, stderr
    holds only warnings."""
    node.add("gcnet", "live1", ["10.88.0.11/16"], _ports("8080/tcp"))
    add = ["add", *common(node), "--network", "n1", "--container", "c1"]
    add += ["--ip", "10.88.0.21/16", "-p", "5300:53/udp"]
    done = run([*add, "--dry-run"])
    assert done.returncode == 0 and done.stderr == ""
    assert "*nat" in done.stdout and done.stdout.splitlines()[-1].startswith("would add CNI-DN-")
    quiet = run([*add, "--dry-run", "-q"])
    assert quiet.stdout == done.stdout.splitlines(keepends=True)[-1] and quiet.stderr == ""
    done = run([*add, "-q"])
    assert done.returncode == 0 and done.stderr == ""
    assert re.fullmatch(r"added CNI-DN-[0-9a-f]{21} \(n1/c1\)\n", done.stdout), done.stdout
    again = run([*add, "-q"])
    assert again.stdout.startswith("unchanged: ")
    # Its chain there with other ports, add writes it to this config: not "added".
    other = run([*add[:-2], "-p", "5301:53/udp", "-q"])
    assert re.fullmatch(r"rewrote CNI-DN-[0-9a-f]{21} \(n1/c1\)\n", other.stdout), other.stdout
    assert run([*add, "-q"]).stdout.startswith("rewrote ")
    doc = valid("add", run([*add, "-o", "json"]).stdout)
    assert doc["changed"] is False and doc["backend"] == "iptables"

    flush = run(["flush-udp", *common(node), "-q"])
    assert flush.returncode == 0 and flush.stderr == "" and flush.stdout.count("\n") == 1
    doc = valid("flush-udp", run(["flush-udp", *common(node), "--dry-run", "-o", "json"]).stdout)
    assert doc["dry_run"] is True

    gc = node.gc("--yes", "--min-age", "0", "-q")
    assert gc.returncode == 0, gc.stderr
    assert gc.stdout.count("\n") == 1 and gc.stdout.startswith("gc: removed 1 chain")
    assert gc.stderr == ""


def test_a_dry_run_of_a_rewrite_says_it_would_rewrite(node: Node_):
    """add --dry-run over a container's chain that holds other ports said `would add
    CNI-DN-... (n1/c1) (dry run)`, where the same add for real says `rewrote`: the dry
    run names what the real run would print, and changes nothing."""
    add = ["add", *common(node), "--network", "n1", "--container", "c1"]
    add += ["--ip", "10.88.0.21/16"]
    assert run([*add, "-p", "5300:53/udp", "--dry-run", "-q"]).stdout.startswith("would add ")
    assert run([*add, "-p", "5300:53/udp", "-q"]).stdout.startswith("added ")
    before = node.lines(4)
    dry = run([*add, "-p", "5301:53/udp", "--dry-run", "-q"])
    assert dry.returncode == 0, dry.stderr
    want = rf"would rewrite {chain_name('n1', 'c1')} \(n1/c1\) \(dry run\)\n"
    assert re.fullmatch(want, dry.stdout), dry.stdout
    assert node.lines(4) == before
    assert run([*add, "-p", "5301:53/udp", "-q"]).stdout.startswith("rewrote ")


def test_gc_json_validates_with_pending_and_removed(node: Node_):
    node.add("gcnet", "a1", ["10.88.0.11/16", "fd00::11/64"], _ports("8080/tcp", "53/udp"))
    node.add("gcnet", "b1", ["10.88.0.12/16"], _ports("8081/tcp"), cache=False)
    doc = valid("gc", node.gc("--yes", "--min-age", "1h", "-o", "json").stdout)
    assert [p["chain"] for p in doc["pending"]] == [chain_name("gcnet", "b1")]
    assert doc["pending"][0]["removable_in_seconds"] > 3500
    assert doc["cache"]["present"] and doc["cache"]["entries"] == 1
    doc = valid("gc", node.gc("--yes", "--min-age", "0", "-o", "json").stdout)
    assert doc["removed"][0]["host_ports"] == [{"protocol": "tcp", "host_port": 8081}]
    listing = valid("list", run(["list", *common(node), "-o", "json"]).stdout)
    assert {c["chain_type"] for c in listing["chains"]} == {"dnat"}
    check = valid("check", run(["check", *common(node), "-o", "json"]).stdout)
    assert check["healthy"] is True


def test_gc_refuses_an_empty_cache_while_chains_exist(node: Node_, tmp_path):
    """Item 3: an existing but empty cache is no source of liveness (SPEC §3 gc)."""
    node.add("gcnet", "live1", ["10.88.0.11/16"], _ports("8080/tcp"))
    empty = tmp_path / "empty"
    (empty / "results").mkdir(parents=True)
    before = node.lines(4)
    for args in (["--dry-run"], ["--yes", "--min-age", "0"]):
        assert_error(node.gc(*args, cache=empty), 2, "is empty")
    assert node.lines(4) == before
    done = node.gc("--yes", "--min-age", "0", "--keep", "live1", cache=empty)
    assert done.returncode == 0 and "removed" not in done.stdout.splitlines()[0]


def test_add_warns_when_the_host_port_is_taken(node: Node_):
    """Item 7: on stderr, in --dry-run too; the result stays on stdout."""
    node.add("gcnet", "first", ["10.88.0.11/16"], _ports("8080/tcp"))
    add = ["add", *common(node), "--network", "gcnet", "--container", "second"]
    add += ["--ip", "10.88.0.12/16", "-p", "8080:80"]
    for extra in (["--dry-run"], []):
        done = run([*add, *extra])
        assert done.returncode == 0
        assert done.stderr.startswith("portmapctl: warning: IPv4 tcp/8080 is mapped first to")
        assert "gcnet/first" in done.stderr and "will be shadowed" in done.stderr
    listing = json.loads(run(["list", *common(node), "-o", "json"]).stdout)
    second = [m for m in listing["mappings"] if m["container_id"] == "second"]
    assert second and "shadowed" in second[0]["status"]


def _stale_chains(node: Node_, count: int) -> None:
    """`count` containers' chains as the plugin writes them, none of them in the cache,
    in one iptables-restore (the plugin one by one would take minutes)."""
    import subprocess

    import realplugin as rp

    lines = ["*nat", "-N CNI-HOSTPORT-DNAT" if "CNI-HOSTPORT-DNAT" not in
             "\n".join(node.lines(4)) else ""]  # fmt: skip
    for n in range(count):
        cid = f"gone{n:04d}"
        chain = chain_name("gcnet", cid)
        port = 20000 + n
        comment = f'"dnat name: \\"gcnet\\" id: \\"{cid}\\""'
        lines += [
            f"-N {chain}",
            f"-A {chain} -p tcp -m tcp --dport {port} -j DNAT --to-destination 10.88.1.{n % 250 + 1}:80",
            f"-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment {comment} -m multiport"
            f" --dports {port} -j {chain}",
        ]  # fmt: skip
    text = "\n".join(line for line in lines if line) + "\nCOMMIT\n"
    restore = rp.tool_path("iptables-restore", node.mode)
    subprocess.run(["ip", "netns", "exec", node.ns, restore, "--noflush"], input=text,
                   text=True, check=True)  # fmt: skip


def test_gc_shows_its_counts_on_the_terminal_and_leaves_stdout_alone(node: Node_):
    """Item 4: progress of a long gc, with N/M of the chains, on stderr (a terminal),
    80 columns; stdout is what it is without it, byte for byte. The 1-second delay is
    lowered through PORTMAPCTL_PROGRESS_AFTER (a long one keeps it off)."""
    count = 300
    argv = ["gc", *common(node), "--family", "4", "--all", "--min-age", "0", "--no-flush-udp"]
    outputs = []
    for after in ("0", "3600"):
        _stale_chains(node, count)
        env = {"COLUMNS": "80", "PORTMAPCTL_PROGRESS_AFTER": after}
        code, terminal, stdout = _on_terminal(argv, b"y", env)
        assert code == 0, terminal
        assert not [line for line in node.lines(4) if "gone0" in line]
        outputs.append((terminal, stdout))
    (shown, with_bar), (quiet, without) = outputs
    assert with_bar == without, "stdout does not change with the progress display"
    assert stdout.splitlines()[-1].startswith(f"gc: removed {count} chains of {count} containers")
    assert f"0/{count}" in shown and f"{count}/{count}" in shown and "removing chains" in shown
    assert f"/{count}" not in quiet.split("Remove")[-1], "no display below the delay"
    assert "\x1b[2K" in shown, "the display is erased"
    bar = [
        line for line in re.split(r"[\r\n]|\x1b\[[0-9;?]*[A-Za-z]", shown) if f"/{count}" in line
    ]
    assert bar and max(map(len, bar)) <= 80, bar


def test_the_gc_prompt_leaves_stdout_alone(node: Node_):
    """The prompt is all on the terminal (stderr): click writes its last character, a
    space, to stdout unless told otherwise, a stray byte in `gc -o json > file`."""
    node.add("gcnet", "live1", ["10.88.0.11/16"], _ports("8080/tcp"))
    node.add("gcnet", "gone1", ["10.88.0.12/16"], _ports("8081/tcp"), cache=False)
    argv = ["gc", *common(node), "--min-age", "0"]
    code, terminal, stdout = _on_terminal(argv, b"n")
    assert code == 0, terminal
    assert "Remove 1 chain of 1 container? [y/N]:" in terminal
    assert (
        stdout == "gc: nothing removed (1 chain of 1 container not confirmed), 0 pending, 1 kept\n"
    )
    code, terminal, stdout = _on_terminal([*argv, "-o", "json"], b"y")
    assert code == 0, terminal
    assert stdout.startswith("{") and valid("gc", stdout)["removed"], stdout


def test_gc_does_not_ask_where_the_question_cannot_be_seen(node: Node_, tmp_path):
    """`gc 2>log` on a terminal: stdin is the terminal but the question would go to the
    log, and gc would wait for an answer to nothing shown. It refuses as off a terminal
    (exit 2, one line, in the log), and changes nothing."""
    import os
    import pty
    import subprocess
    import sys

    node.add("gcnet", "live1", ["10.88.0.11/16"], _ports("8080/tcp"))
    node.add("gcnet", "gone1", ["10.88.0.12/16"], _ports("8081/tcp"), cache=False)
    before = node.lines(4)
    log = tmp_path / "log"
    master, slave = pty.openpty()
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "portmapctl", "gc", *common(node), "--min-age", "0"],
            stdin=slave, stdout=subprocess.PIPE, stderr=err,
        )  # fmt: skip
    os.close(slave)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.write(master, b"n\n")  # it asked where nobody sees it: answer, to end it
        proc.wait(timeout=20)
    finally:
        os.close(master)
    text = log.read_text()
    assert proc.returncode == 2, text
    assert text.startswith("portmapctl: ") and "give --yes" in text and text.count("\n") == 1
    assert proc.stdout.read() == b""
    assert node.lines(4) == before


@pytest.mark.parametrize("cache", ["missing", "empty"])
def test_every_command_says_once_when_there_is_no_cache(node: Node_, tmp_path, cache):
    """SPEC §3: with no cache directory, or an empty one, every command says so once on
    stderr (before: add, flush-udp, check of one mapping and gc with --keep said
    nothing; a wrong --cni-cache-dir then went unnoticed where the cache decides: gc
    --keep removes what it would have kept, add misses a container's cached backend)."""
    node.add("gcnet", "live1", ["10.88.0.11/16"], _ports("8080/tcp"))
    where = tmp_path / cache
    if cache == "empty":
        (where / "results").mkdir(parents=True)
    said = "no CNI cache at" if cache == "missing" else "is empty: no container is known"
    mapping = ["--network", "gcnet", "--container", "c2", "--ip", "10.88.0.12/16", "-p", "8081:80"]
    args = ["--netns", node.ns, "--iptables", node.mode, "--cni-cache-dir", str(where)]
    for argv in (
        ["list"],
        ["check"],
        ["check", *mapping],
        ["add", *mapping, "--dry-run"],
        ["add", *mapping, "--dry-run", "-o", "json"],
        ["gc", "--dry-run", "--keep", "live1"],
        ["flush-udp", "--dry-run"],
        ["flush-udp", "--dry-run", "-o", "json"],
    ):
        done = run([*argv, *args])
        assert done.returncode in (0, 1), (argv, done.stderr)
        lines = [line for line in done.stderr.splitlines() if said in line]
        assert len(lines) == 1 and lines[0].startswith("portmapctl: warning: "), (argv, done.stderr)


@pytest.mark.parametrize("cache", ["empty", "runtime-below"])
def test_gc_json_warnings_are_every_warning_said_on_stderr(node: Node_, tmp_path, cache):
    """docs/json.md gc: `warnings` are "also printed on stderr". The cache's own lines
    (an empty results/, a runtime's cache below the one read) were said on stderr
    alone: a script reading the document learnt nothing of a wrong --cni-cache-dir
    that made every chain removable."""
    node.add("gcnet", "live1", ["10.88.0.11/16"], _ports("8080/tcp"))
    node.add("gcnet", "gone1", ["10.88.0.12/16"], _ports("8081/tcp"), cache=False)
    where = tmp_path / "other"
    (where / "results").mkdir(parents=True)
    args = ["--keep", "nosuch1"]  # (a warning of gc's own: keeps nothing)
    if cache == "runtime-below":  # cri-dockerd's: CACHE/cache/results, not read
        node.cache_add("gcnet", "live1").rename(where / "results" / "gcnet-live1-eth0")
        (where / "cache" / "results").mkdir(parents=True)
        (where / "cache" / "results" / "gcnet-other1-eth0").write_text("{}")
        args = []
    done = node.gc("--dry-run", "--min-age", "0", *args, "-o", "json", cache=where)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines and all(line.startswith("portmapctl: warning: ") for line in lines), lines
    said = [line.removeprefix("portmapctl: warning: ") for line in lines]
    assert valid("gc", done.stdout)["warnings"] == said


@pytest.mark.parametrize("answer", [b"n", b"\x04"])
def test_a_declined_gc_says_so_on_stdout(node: Node_, answer):
    """SPEC §3: stdout holds the result, the JSON document with -o json, the summary
    line alone with -q. A "no" (or no answer: Ctrl-D) printed nothing there: `gc -o
    json > out` on a terminal left an empty file, not a document; -q said nothing at
    all. Now one summary line saying nothing was removed (the document: `removed`
    empty, `declined` what the question offered), exit 0, the chain still there."""
    node.add("gcnet", "live1", ["10.88.0.11/16"], _ports("8080/tcp"))
    node.add("gcnet", "gone1", ["10.88.0.12/16"], _ports("8081/tcp"), cache=False)
    gone = chain_name("gcnet", "gone1")
    argv = ["gc", *common(node), "--min-age", "0"]
    why = "not confirmed" if answer == b"n" else "offered, no answer"
    line = f"gc: nothing removed (1 chain of 1 container {why}), 0 pending, 1 kept\n"
    code, terminal, stdout = _on_terminal([*argv, "-q"], answer)
    assert (code, stdout) == (0, line), terminal
    code, terminal, stdout = _on_terminal(argv, answer)
    assert (code, stdout) == (0, line), terminal
    assert "nothing removed" not in terminal  # (said once, on stdout)
    code, terminal, stdout = _on_terminal([*argv, "-o", "json"], answer)
    assert code == 0, terminal
    doc = valid("gc", stdout)
    assert doc["dry_run"] is False and doc["removed"] == [] and doc["kept"] == 1
    assert [d["chain"] for d in doc["declined"]] == [gone]
    assert [line for line in node.lines(4) if gone in line]


NOTHING_TO_ADD = {  # the plugin's stdin with no port mapping: its ADD returns at once
    "cniVersion": "0.4.0",
    "name": "gcnet",
    "type": "portmap",
    "runtimeConfig": {"portMappings": []},
    "prevResult": {"cniVersion": "0.4.0", "ips": [{"address": "10.88.0.13/16"}]},
}


@pytest.mark.parametrize("cache", ["missing", "empty", "multus", "runtime-below"])
def test_add_json_warnings_are_every_warning_said_on_stderr(node: Node_, tmp_path, cache):
    """docs/json.md add: `warnings` held the port's clash and what went wrong
    afterwards, not the cache's own lines (no cache, an empty one, Multus's or a
    runtime's cache below the one read), which the run said on stderr alone: a script
    reading the document learnt nothing of a wrong --cni-cache-dir, where add follows a
    container's cached backend. Now every warning said is there, once, in stderr's
    order; so too for an add that has nothing to write."""
    node.add("gcnet", "first", ["10.88.0.11/16"], _ports("8080/tcp"))
    where = tmp_path / "other"
    if cache != "missing":
        (where / "results").mkdir(parents=True)
    below = {"multus": "multus", "runtime-below": "cache"}.get(cache)
    if below is not None:  # the plugin's own entry of `first`, in a cache not read
        (where / below / "results").mkdir(parents=True)
        node.cache_add("gcnet", "first").rename(where / below / "results" / "gcnet-first-eth0")
    args = ["--netns", node.ns, "--iptables", node.mode, "--cni-cache-dir", str(where)]
    mapping = ["--network", "gcnet", "--container", "second", "--ip", "10.88.0.12/16"]
    runs = [
        (["add", *mapping, "-p", "8080:80", *args], None),  # shadowed by `first`
        (["add", *mapping, "-p", "8082:80", *args, "--dry-run"], None),
        (["add", "--container", "third", "--cni-config", "-", *args], NOTHING_TO_ADD),
    ]
    for argv, stdin in runs:
        done = run([*argv, "-o", "json"], stdin=json.dumps(stdin) if stdin else None)
        assert done.returncode == 0, done.stderr
        lines = done.stderr.splitlines()
        assert lines and all(line.startswith("portmapctl: warning: ") for line in lines), lines
        said = [line.removeprefix("portmapctl: warning: ") for line in lines]
        assert valid("add", done.stdout)["warnings"] == said, argv
