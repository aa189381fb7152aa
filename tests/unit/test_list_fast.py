"""`list`'s fast path (cli/list_fast.py) parses what it takes exactly as typer does, and
leaves everything else -- help, mistakes, --proto/--status, unusual spellings -- to typer."""

from __future__ import annotations

import inspect
from typing import Any, Dict, List, Tuple

import pytest
from test_add_fast import _environment

from portmapctl.cli import list_fast, list_run
from portmapctl.cli.typer_app import _click_command

TAKEN: List[Tuple[List[str], Dict[str, str]]] = [
    (["list"], {}),
    (["list", "--cni-cache-dir", "/a", "--cni-cache-dir=/b", "--cni-cache-dir", "/a"], {}),
    (["list", "--container", "3f2a", "--container=c2", "--network", "n", "--port", "80"], {}),
    (["list", "--port=8080", "--port", "x", "--conntrack", "--metrics-file", "/m.prom"], {}),
    (["list", "--snapshot", "-", "--snapshot6", "v6.save", "--nft-snapshot=n.json"], {}),
    (["list", "-o", "json", "--no-headers", "--no-trunc", "--no-color", "-q", "-v"], {}),
    (["list", "--output=wide", "--backend", "iptables", "--iptables=legacy", "--family", "6"], {}),
    (["list", "--netns", "ns1", "--backend=nftables", "--iptables", "iptc"], {}),
    (["list", "--network="], {}),
    (["list"], {"PORTMAPCTL_IPTABLES": "legacy", "PORTMAPCTL_CNI_CACHE_DIR": "/x  /y"}),
    (["list", "--iptables", "nft", "--cni-cache-dir", "/z"], {"PORTMAPCTL_IPTABLES": "legacy"}),
    (["list"], {"PORTMAPCTL_IPTABLES": "", "PORTMAPCTL_CNI_CACHE_DIR": ""}),
    (["list"], {"PORTMAPCTL_METRICS_FILE": "/m dir/list.prom"}),
    (["list", "--metrics-file", "/given.prom"], {"PORTMAPCTL_METRICS_FILE": "/env.prom"}),
    (["list"], {"PORTMAPCTL_METRICS_FILE": ""}),
]

LEFT_TO_TYPER: List[Tuple[List[str], Dict[str, str]]] = [
    (["list", "--help"], {}),
    (["list", "-h"], {}),
    (["list", "extra"], {}),
    (["list", "--proto", "tcp"], {}),
    (["list", "--status", "stale"], {}),
    (["list", "-qv"], {}),
    (["list", "--"], {}),
    (["list", "--conntrack=1"], {}),
    (["list", "--output", "JSON"], {}),
    (["list", "--family", "5"], {}),
    (["list", "--container", "-x"], {}),
    (["list", "--network"], {}),
    (["list", "--ip", "10.0.0.1/8"], {}),
    (["add"], {}),
    (["check"], {}),
    (["list"], {"PORTMAPCTL_IPTABLES": "bogus"}),
    (["list"], {"PORTMAPCTL_CNI_CACHE_DIR": "   "}),
    (["list"], {"_PORTMAPCTL_COMPLETE": "complete_bash"}),
]


def _captured(monkeypatch, call) -> Any:
    seen: List[Any] = []

    def capture(common: Any, **options: Any) -> None:
        seen.append((common, options))

    monkeypatch.setattr(list_run, "run", capture)
    try:
        outcome = call()
    except SystemExit as done:  # pragma: no cover - a failure shows what typer said
        outcome = ("exit", done.code)
    return seen[0] if seen else outcome


# list_run.run's own parameters, read before a test puts its stand-in in its place
# (whose signature, `common, **options`, would leave no option to compare).
_RUN_PARAMETERS = inspect.signature(list_run.run).parameters


def _defaults(options: Dict[str, Any]) -> Dict[str, Any]:
    """What list_run.run sees for an option not passed: its default."""
    params = _RUN_PARAMETERS
    assert set(options) <= set(params), options
    return {name: options.get(name, params[name].default) for name in list(params)[1:]}


@pytest.mark.parametrize("args, env", TAKEN)
def test_what_the_fast_path_takes_reaches_list_as_typer_hands_it(monkeypatch, args, env):
    _environment(monkeypatch, env)
    fast = list_fast.runner(args)
    assert fast is not None
    by_typer = _captured(
        monkeypatch,
        lambda: _click_command(args).main(args=args, prog_name="portmapctl", standalone_mode=False),
    )
    assert isinstance(by_typer, tuple) and len(by_typer) == 2  # (common, options)
    common, options = _captured(monkeypatch, fast)
    assert (common, _defaults(options)) == (by_typer[0], _defaults(by_typer[1]))


@pytest.mark.parametrize("args, env", LEFT_TO_TYPER)
def test_everything_else_goes_to_typer(monkeypatch, args, env):
    _environment(monkeypatch, env)
    assert list_fast.runner(args) is None


def test_the_fast_path_knows_every_option_typer_declares_for_list():
    """A new option of list (or a common one) must be taught to the fast path (or named
    as typer's only): until then, the defaults the fast path passes could be wrong."""
    command = _click_command(["list"]).commands["list"]
    declared = {opt for param in command.params for opt in param.opts}
    assert declared == set(list_fast.OPTIONS) | set(list_fast.TYPER_ONLY)


@pytest.mark.parametrize(
    "args",
    [
        ["list", "--port", "http", "--snapshot", "/nonexistent"],
        ["list", "--network", "bad name", "--snapshot", "/nonexistent"],
        ["list", "--cni-cache-dir=", "--snapshot", "/nonexistent"],
        ["list", "--snapshot", "/nonexistent"],
    ],
)
def test_bad_input_says_the_same_either_way(monkeypatch, capsys, args):
    from portmapctl.cli import main

    def outcome() -> Tuple[Any, str, str]:
        with pytest.raises(SystemExit) as done:
            main(list(args))
        return (done.value.code, *capsys.readouterr())

    fast = outcome()
    monkeypatch.setattr(list_fast, "runner", lambda *args: None)  # typer parses it
    assert fast == outcome()
    assert fast[0] == 2 and fast[2].startswith("portmapctl: error: ")


# --- flush-udp, the other command that reads the whole node ---------------------------

FLUSH_TAKEN: List[List[str]] = [
    ["flush-udp"],
    ["flush-udp", "--port", "53", "--port=5353", "--dry-run", "--stale-only"],
    ["flush-udp", "--container", "3f2a", "-o", "json", "--cni-cache-dir", "/c", "-q"],
    ["flush-udp", "--netns=ns1", "--family", "4", "--iptables", "legacy", "--no-color"],
    ["flush-udp", "--container", "a", "--container", "b"],  # the last, as typer
]
FLUSH_LEFT: List[List[str]] = [
    ["flush-udp", "--help"],
    ["flush-udp", "--port"],
    ["flush-udp", "--dry-run=yes"],
    ["flush-udp", "--snapshot", "x"],
]


def _captured_flush(monkeypatch, call) -> Any:
    from portmapctl.cli import flush_udp_run

    seen: List[Any] = []
    monkeypatch.setattr(flush_udp_run, "run", lambda common, **options: seen.append(
        (common, {"port": None, "container": None, "stale_only": False, "dry_run": False,
                  **options})))  # fmt: skip
    try:
        outcome = call()
    except SystemExit as done:  # pragma: no cover - a failure shows what typer said
        outcome = ("exit", done.code)
    return seen[0] if seen else outcome


@pytest.mark.parametrize("args", FLUSH_TAKEN)
def test_what_the_fast_path_takes_reaches_flush_udp_as_typer_hands_it(monkeypatch, args):
    _environment(monkeypatch, {})
    fast = list_fast.runner(args)
    assert fast is not None
    by_typer = _captured_flush(
        monkeypatch,
        lambda: _click_command(args).main(args=args, prog_name="portmapctl", standalone_mode=False),
    )
    assert isinstance(by_typer, tuple) and len(by_typer) == 2
    assert _captured_flush(monkeypatch, fast) == by_typer


@pytest.mark.parametrize("args", FLUSH_LEFT)
def test_other_flush_udp_lines_go_to_typer(monkeypatch, args):
    _environment(monkeypatch, {})
    assert list_fast.runner(args) is None


def test_the_fast_path_knows_every_option_typer_declares_for_flush_udp():
    command = _click_command(["flush-udp"]).commands["flush-udp"]
    declared = {opt for param in command.params for opt in param.opts}
    assert declared == set(list_fast.FLUSH_OPTIONS)
