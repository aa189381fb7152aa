"""entry.py's shortcuts for `add` (SPEC §6): inspect loaded on first use, and the exit."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Every module an `add` imports, its report's render modules included.
ADD_MODULES = (
    "portmapctl.cli.add_fast",
    "portmapctl.cli.add_run",
    "portmapctl.cli.add_warnings",
    "portmapctl.cni.config",
    "portmapctl.host.files",
    "portmapctl.host.lock",
    "portmapctl.host.netns",
    "portmapctl.iptables.access",
    "portmapctl.iptables.access.nfnl",
    "portmapctl.iptables.access.restore",
    "portmapctl.iptables.inventory",
    "portmapctl.iptables.planner",
    "portmapctl.ops.add",
    "portmapctl.ops.add_ahead",
    "portmapctl.ops.add_others",
    "portmapctl.ops.node",
    "portmapctl.render.add",
    "portmapctl.render.json",
    "portmapctl.render.table",
)


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def test_add_modules_leave_inspect_unloaded() -> None:
    # A dataclass without a docstring makes dataclasses call inspect.signature, which
    # loads inspect (~29M instructions): every dataclass on add's way needs one.
    done = _python(
        f"""
        import importlib, sys
        from portmapctl.entry import _inspect_on_first_use
        _inspect_on_first_use()
        stand_in = sys.modules["inspect"]
        for name in {ADD_MODULES!r}:
            importlib.import_module(name)
            if "signature" in vars(stand_in):
                print("inspect loaded by", name)
                break
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""


def test_inspect_stand_in_loads_on_first_use() -> None:
    done = _python(
        """
        import sys
        from portmapctl.entry import _inspect_on_first_use
        _inspect_on_first_use()
        import inspect
        assert "signature" not in vars(inspect)
        from inspect import Parameter
        import inspect as again
        assert again.Parameter is Parameter and inspect.Parameter is Parameter
        assert str(inspect.signature(lambda a, b=1: None)) == "(a, b=1)"
        try:
            inspect.no_such_name
        except AttributeError as err:
            print(err)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "module 'inspect' has no attribute 'no_such_name'\n"


def test_add_exit_code_and_streams_as_before() -> None:
    # A refused add exits through os._exit: its line on stderr and its code as ever.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-P", "-m", "portmapctl", "add", "-p", "1:2"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "portmapctl: error: --container is required\n"
