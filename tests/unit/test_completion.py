"""Shell completion, for real: the committed scripts in a real bash (and fish).

The scripts are typer's: on each TAB they run `portmapctl` with
`_PORTMAPCTL_COMPLETE` set. Here `portmapctl` on PATH is this checkout. Checked:
subcommands, options, the choices of --backend/--iptables/--family/-o, container IDs and network
names from a CNI cache (what a cache holds, nothing made up), that a broken cache or a
missing directory completes nothing without a word on stderr, and that the committed
scripts are what --show-completion/--install-completion give (zsh completing its first
TAB when autoloaded from fpath).
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


def in_a_shell(*argv: str, env: Dict[str, str]) -> subprocess.CompletedProcess:
    """`argv` (a shell and its script) run to its end, its output as text."""
    return subprocess.run(
        list(argv), capture_output=True, text=True, env=env, timeout=120, check=False
    )


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
        "portmapctl list --backend ",
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
    assert got["portmapctl list --backend "] == ["auto", "iptables", "nftables"]
    assert got["portmapctl check --family "] == ["4", "6", "all", "v4", "v6"]
    assert got["portmapctl flush-udp -o "] == ["table", "wide", "json"]
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
    done = in_a_shell(
        "fish",
        "--no-config",
        "-c",
        f"source {shlex.quote(str(script))}; complete -C 'portmapctl l';"
        f" complete -C 'portmapctl list --cni-cache-dir {cache} --container d'",
        env=shell_env,
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
    # zsh's too: it completes the first TAB when autoloaded from fpath
    # (portmapctl/cli/completion_scripts.py).
    assert code == typer_code


def _first_tab_in_zsh(env: Dict[str, str], home: Path, line: str) -> str:
    """What an interactive zsh (HOME=`home`, its .zshrc read) shows after `line` and
    one TAB, on a pseudo-terminal; read until the line has grown or 20 s went by."""
    import pty
    import select
    import time

    master, slave = pty.openpty()
    shell = subprocess.Popen(
        ["zsh", "-i"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=dict(env, HOME=str(home), ZDOTDIR=str(home), TERM="xterm", PS1="> "),
        start_new_session=True,
    )
    os.close(slave)
    seen = b""

    def read(seconds: float, until: bytes = b"") -> None:
        nonlocal seen
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (until and until in seen):
            if select.select([master], [], [], 0.1)[0]:
                try:
                    seen += os.read(master, 4096)
                except OSError:
                    return

    try:
        os.write(master, b"PS1='> '; unsetopt beep; print re''ady\n")  # (the echo: re''ady)
        read(20, b"ready\r\n")
        os.write(master, line.encode() + b"\t")
        read(20, b"--dry-run")
    finally:
        shell.kill()
        shell.wait()
        os.close(master)
    return seen.decode(errors="replace")


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_completes_on_the_first_tab_after_install_completion(shell_env, tmp_path):
    """`portmapctl --install-completion` in zsh writes ~/.zfunc/_portmapctl, which
    .zshrc puts in fpath: autoloaded there, typer's script only registered itself on
    the first TAB of every new shell, which completed nothing (`gc --dry` stayed; the
    second TAB gave --dry-run). What it installs, and what --show-completion prints,
    must be the committed script, which completes that first TAB."""
    home = tmp_path / "home"
    home.mkdir()
    env = dict(shell_env, HOME=str(home))
    install = in_a_shell("zsh", "-fc", "portmapctl --install-completion; exit $?", env=env)
    assert install.returncode == 0, install.stderr
    installed = (home / ".zfunc" / "_portmapctl").read_text()
    assert "loadautofunc" in installed  # (typer's own lacks it)
    screen = _first_tab_in_zsh(shell_env, home, "portmapctl gc --dry")
    assert "portmapctl gc --dry-run" in screen, screen


def _tail_line_run(env: Dict[str, str], script: str) -> int:
    """The line of the installed ~/.zfunc/_portmapctl (HOME in `env`) whose command its
    zsh tail ran when `script` loaded it: xtrace names each command's file and line."""
    tracing = 'PS4="+%x:%I> "; compdef() { :; }; setopt xtrace; '
    done = in_a_shell("zsh", "-fc", tracing + script, env=env)
    installed = str(Path(env["HOME"]) / ".zfunc" / "_portmapctl")
    ran = [
        line.split("> ", 1)
        for line in done.stderr.splitlines()
        if line.startswith(f"+{installed}:")
    ]
    tail = [where for where, command in ran if command.split()[:1] in (["compdef"],)]
    tail += [where for where, command in ran if command == "_portmapctl_completion"]
    assert len(tail) == 1, done.stderr
    return int(tail[0].rsplit(":", 1)[1])


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_the_zsh_tails_comments_name_how_the_script_got_to_each_branch(shell_env, tmp_path):
    """The tail's comment said "sourced, or installed by --install-completion: register
    for later TABs", while --install-completion's file is autoloaded from the fpath its
    .zshrc line names and takes the other branch (completing the TAB). The comment just
    above the line each way of loading runs names that way."""
    home = tmp_path / "home"
    home.mkdir()
    env = dict(shell_env, HOME=str(home), ZDOTDIR=str(home))
    install = in_a_shell("zsh", "-fc", "portmapctl --install-completion; exit $?", env=env)
    assert install.returncode == 0, install.stderr
    lines = (home / ".zfunc" / "_portmapctl").read_text().splitlines()
    # As the new shell's first TAB does: compinit's autoload from .zshrc's fpath.
    autoloaded = _tail_line_run(env, "source ~/.zshrc; _portmapctl")
    sourced = _tail_line_run(env, "autoload -Uz compinit; compinit -u; source ~/.zfunc/_portmapctl")
    assert autoloaded != sourced
    assert "--install-completion" in lines[autoloaded - 2], lines
    assert "--install-completion" not in lines[sourced - 2], lines
    assert "sourced" in lines[sourced - 2] and "sourced" not in lines[autoloaded - 2], lines
