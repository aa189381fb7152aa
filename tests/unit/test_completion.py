"""Shell completion, for real: the committed scripts in a real bash (and fish).

The scripts are typer's: on each TAB they run `portmapctl` with
`_PORTMAPCTL_COMPLETE` set. Here `portmapctl` on PATH is this checkout. Checked:
subcommands, options, the choices of --iptables/--family/-o, container IDs and network
names from a CNI cache (what a cache holds, nothing made up), that a broken cache or a
missing directory completes nothing without a word on stderr, and that the committed
scripts are what typer's --show-completion/--install-completion give.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import realplugin as rp
import typer

from portmapctl.cli import _common, app
from tools import gendocs

ROOT = Path(__file__).resolve().parents[2]
CONTAINERS = {"3f2a9c1e5b7d": "podman", "8c41d07a2e9f": "podman", "d19e3b7f60c2": "kindnet"}

# complete LINE: what TAB offers for the last word of LINE (an empty word when LINE ends
# in a space), the way bash fills COMP_WORDS/COMP_CWORD; one "== LINE" header per call.
BASH_DRIVER = """
source "$1"; shift
for line in "$@"; do
  read -ra COMP_WORDS <<<"$line"
  [[ "$line" == *" " ]] && COMP_WORDS+=("")
  COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
  COMPREPLY=()
  _portmapctl_completion portmapctl
  echo "== $line"
  if [[ ${#COMPREPLY[@]} -gt 0 ]]; then printf '%s\\n' "${COMPREPLY[@]}"; fi
done
"""


@pytest.fixture(scope="module")
def shell_env(tmp_path_factory) -> Dict[str, str]:
    """PATH with `portmapctl` = this checkout, and a cache dir with three containers."""
    base = tmp_path_factory.mktemp("completion")
    program = base / "bin" / "portmapctl"
    program.parent.mkdir()
    program.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m portmapctl "$@"\n')
    program.chmod(0o755)
    cache = base / "cni"
    for container, network in CONTAINERS.items():
        ports = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
        conf = rp.plugin_conf(network, ["10.88.0.5/16"], ports)
        rp.write_cni_cache(cache, network, container, "eth0", conf, ports, ["10.88.0.5/16"])
    env = dict(os.environ, PATH=f"{program.parent}:{os.environ['PATH']}", CACHE=str(cache))
    env.pop("PORTMAPCTL_IPTABLES", None)
    return env


def bash_complete(env: Dict[str, str], *lines: str) -> Dict[str, List[str]]:
    script = ROOT / gendocs.COMPLETIONS["bash"]
    done = subprocess.run(
        ["bash", "--norc", "-c", BASH_DRIVER, "driver", str(script), *lines],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    found: Dict[str, List[str]] = {}
    for line in done.stdout.splitlines():
        if line.startswith("== "):
            current = found.setdefault(line[3:], [])
        else:
            current.append(line)
    assert list(found) == list(lines)
    return found


def commands() -> List[str]:
    return list(typer.main.get_command(app).commands)


def test_bash_completes_commands_options_choices_and_cached_names(shell_env):
    cache = shell_env["CACHE"]
    got = bash_complete(
        shell_env,
        "portmapctl ",
        "portmapctl l",
        "portmapctl gc --mi",
        "portmapctl gc --me",
        "portmapctl list --iptables ",
        "portmapctl check --family ",
        "portmapctl flush-udp -o ",
        f"portmapctl list --cni-cache-dir {cache} --container ",
        f"portmapctl check --cni-cache-dir {cache} --container 8c",
        f"portmapctl add --cni-cache-dir {cache} --network ",
        f"portmapctl list --cni-cache-dir {cache} --network k",
    )
    assert got["portmapctl "] == commands()
    assert got["portmapctl l"] == ["list"]
    assert got["portmapctl gc --mi"] == ["--min-age"]
    assert got["portmapctl gc --me"] == ["--metrics-file"]
    assert got["portmapctl list --iptables "] == ["auto", "nft", "legacy", "iptc"]
    assert got["portmapctl check --family "] == ["4", "6", "all"]
    assert got["portmapctl flush-udp -o "] == ["table", "json"]
    assert got[f"portmapctl list --cni-cache-dir {cache} --container "] == sorted(CONTAINERS)
    assert got[f"portmapctl check --cni-cache-dir {cache} --container 8c"] == ["8c41d07a2e9f"]
    assert got[f"portmapctl add --cni-cache-dir {cache} --network "] == ["kindnet", "podman"]
    assert got[f"portmapctl list --cni-cache-dir {cache} --network k"] == ["kindnet"]


def test_a_broken_or_missing_cache_completes_nothing_quietly(shell_env, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "garbage").write_text("{not json")
    (results / "list").write_text("[1, 2]")
    (results / "bad-name").write_text('{"networkName": "a b", "containerId": "x;rm"}')
    (results / "a-dir").mkdir()
    os.mkfifo(results / "a-fifo")  # reading it would hang the shell
    (results / "ok").write_text('{"networkName": "net1", "containerId": "c1"}')
    got = bash_complete(
        shell_env,
        f"portmapctl list --cni-cache-dir {tmp_path} --container ",
        f"portmapctl list --cni-cache-dir {tmp_path}/nowhere --network ",
    )
    assert got[f"portmapctl list --cni-cache-dir {tmp_path} --container "] == ["c1"]
    assert got[f"portmapctl list --cni-cache-dir {tmp_path}/nowhere --network "] == []


def test_completion_callbacks_give_hints_and_never_raise(tmp_path):
    class Ctx:
        params = {"cni_cache_dir": str(tmp_path)}

    assert _common.complete_container(Ctx(), "") == []  # no results/ at all
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "x").write_text('{"networkName": "n1", "containerId": "abc"}')
    (tmp_path / "results" / "y").write_text('{"networkName": "n1", "containerId": "abd"}')
    assert _common.complete_container(Ctx(), "ab") == [
        ("abc", "network n1"),
        ("abd", "network n1"),
    ]
    assert _common.complete_network(Ctx(), "") == [("n1", "2 cached containers")]

    class Broken:
        params = None

    assert isinstance(_common.complete_container(Broken(), ""), list)


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_fish_completes_with_hints(shell_env):
    script = ROOT / gendocs.COMPLETIONS["fish"]
    cache = shell_env["CACHE"]
    done = subprocess.run(
        [
            "fish",
            "--no-config",
            "-c",
            f"source {shlex.quote(str(script))}; complete -C 'portmapctl l';"
            f" complete -C 'portmapctl list --cni-cache-dir {cache} --container d'",
        ],
        capture_output=True,
        text=True,
        env=shell_env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("list\t") and "port mapping" in lines[0]
    assert lines[1:] == ["d19e3b7f60c2\tnetwork kindnet"]


@pytest.mark.parametrize("shell", ["bash", "fish", "zsh"])
def test_committed_scripts_are_what_typer_installs(shell):
    # What --show-completion SHELL prints is also what --install-completion writes.
    done = subprocess.run(
        [sys.executable, "-m", "portmapctl", "--show-completion", shell],
        capture_output=True,
        text=True,
        env=dict(os.environ, _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1"),
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    committed = (ROOT / gendocs.COMPLETIONS[shell]).read_text()
    code = [line for line in committed.splitlines() if not line.startswith("# portmapctl")]
    typer_code = [line for line in done.stdout.splitlines() if line]
    code = [line for line in code if line]
    if shell == "zsh":
        # Ours also completes on the first TAB when autoloaded from fpath (see gendocs).
        assert typer_code[-1] == "compdef _portmapctl_completion portmapctl"
        assert code[: len(typer_code) - 1] == typer_code[:-1]
        assert "loadautofunc" in committed
    else:
        assert code == typer_code
