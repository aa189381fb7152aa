"""`add`'s fast path (cli/add_fast.py) parses what it takes exactly as typer does, and
leaves everything else -- help, mistakes, unusual spellings -- to typer."""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import pytest

from portmapctl.cli import add_fast, add_run
from portmapctl.cli.typer_app import _click_command

BASE = ["add", "--network", "n", "--container", "c", "--ip", "10.88.0.2/16", "-p", "80:80"]

TAKEN: List[Tuple[List[str], Dict[str, str]]] = [
    (BASE, {}),
    (["add", "--container", "c", "--cni-config", "-"], {}),
    (["add", "--container=c", "--cni-config=conf.json", "--ifname", "net1"], {}),
    ([*BASE, "--ip", "fd00::2/64", "--publish", "[::1]:81:81/udp", "--publish=53:53/udp"], {}),
    ([*BASE, "--no-snat", "--masq-all", "--mark-bit", "12", "--external-setmark-chain", "X"], {}),
    ([*BASE, "--conditions-v4", "x", "--conditions-v6=y", "--no-flush-udp", "--dry-run"], {}),
    ([*BASE, "--backend", "iptables", "--iptables", "legacy", "--family", "v6"], {}),
    ([*BASE, "--backend=nftables", "--iptables=iptc", "--family=4", "--netns", "ns1"], {}),
    ([*BASE, "--cni-cache-dir", "/a", "--cni-cache-dir=/b", "--cni-cache-dir", "/a"], {}),
    ([*BASE, "-o", "json", "--no-headers", "--no-trunc", "--no-color", "-q", "-v"], {}),
    ([*BASE, "--output=wide", "--quiet", "--verbose", "--network", "last", "--mark-bit=0"], {}),
    ([*BASE, "--network="], {}),
    (BASE, {"PORTMAPCTL_IPTABLES": "legacy", "PORTMAPCTL_CNI_CACHE_DIR": "/x  /y"}),
    ([*BASE, "--iptables", "nft", "--cni-cache-dir", "/z"], {"PORTMAPCTL_IPTABLES": "legacy"}),
    (BASE, {"PORTMAPCTL_IPTABLES": "", "PORTMAPCTL_CNI_CACHE_DIR": ""}),
    (BASE, {"PORTMAPCTL_METRICS_FILE": "/m.prom"}),  # (not add's: left alone)
]

LEFT_TO_TYPER: List[Tuple[List[str], Dict[str, str]]] = [
    (["add", "--help"], {}),
    ([*BASE, "-h"], {}),
    ([*BASE, "extra"], {}),
    (["add", "--network", "n", "--container", "c", "-p8080:80"], {}),
    ([*BASE, "-qv"], {}),
    ([*BASE, "--"], {}),
    ([*BASE, "--dry-run=1"], {}),
    ([*BASE, "--mark-bit", "x"], {}),
    ([*BASE, "--mark-bit", "-1"], {}),
    ([*BASE, "--mark-bit", "١"], {}),  # a digit, but not one int() and click agree on
    ([*BASE, "--backend", "IPTABLES"], {}),
    ([*BASE, "--family", "5"], {}),
    ([*BASE, "--snapshot", "x"], {}),
    ([*BASE, "--conditions-v4", "-s 10.0.0.0/8"], {}),
    ([*BASE, "--network"], {}),
    (["list"], {}),
    (BASE, {"PORTMAPCTL_IPTABLES": "bogus"}),
    (BASE, {"PORTMAPCTL_CNI_CACHE_DIR": "   "}),
    (BASE, {"_PORTMAPCTL_COMPLETE": "complete_bash"}),
]


def _captured(monkeypatch, call) -> Any:
    seen: List[Any] = []

    def capture(common: Any, mapping: Any, **options: Any) -> None:
        seen.append((common, mapping, options))

    monkeypatch.setattr(add_run, "run", capture)
    try:
        outcome = call()
    except SystemExit as done:  # pragma: no cover - a failure shows what typer said
        outcome = ("exit", done.code)
    return seen[0] if seen else outcome


def _environment(monkeypatch, env: Dict[str, str]) -> None:
    for name in ("PORTMAPCTL_IPTABLES", "PORTMAPCTL_CNI_CACHE_DIR", "PORTMAPCTL_METRICS_FILE",
                 "_PORTMAPCTL_COMPLETE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("args, env", TAKEN)
def test_what_the_fast_path_takes_reaches_add_as_typer_hands_it(monkeypatch, args, env):
    _environment(monkeypatch, env)
    fast = add_fast.runner(args)
    assert fast is not None
    by_typer = _captured(
        monkeypatch,
        lambda: _click_command(args).main(args=args, prog_name="portmapctl", standalone_mode=False),
    )
    assert _captured(monkeypatch, fast) == by_typer
    assert isinstance(by_typer, tuple) and len(by_typer) == 3  # (common, mapping, flags)


@pytest.mark.parametrize("args, env", LEFT_TO_TYPER)
def test_everything_else_goes_to_typer(monkeypatch, args, env):
    _environment(monkeypatch, env)
    assert add_fast.runner(args) is None


def test_the_fast_path_knows_every_option_typer_declares_for_add():
    """A new option of add (or a common one) must be taught to the fast path too: until
    it is, a command line using it would be parsed by typer, but the defaults the fast
    path passes would be incomplete."""
    command = _click_command(["add"]).commands["add"]
    declared = {opt for param in command.params for opt in param.opts}
    assert declared == set(add_fast.OPTIONS)


@pytest.mark.parametrize(
    "args",
    [
        ["add", "--network", "n", "-p", "80:80"],  # no --container
        ["add", "--network", "n", "--container", "c", "-p", "http"],
        ["add", "--network", "n", "--container", "c", "--ip", "10.88.0.300/16", "-p", "1:1"],
        [*BASE, "--cni-config", "conf.json"],  # cannot be combined
        [*BASE, "--cni-cache-dir="],
    ],
)
def test_bad_input_says_the_same_either_way(monkeypatch, capsys, args):
    from portmapctl.cli import main

    outcomes = []
    for fast in (True, False):
        if not fast:
            monkeypatch.setattr(add_fast, "runner", lambda args, early_claims=None: None)
        with pytest.raises(SystemExit) as done:
            main(list(args))
        captured = capsys.readouterr()
        outcomes.append((done.value.code, captured.out, captured.err))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] == 2 and outcomes[0][2].startswith("portmapctl: error: ")
