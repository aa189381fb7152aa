"""host/paths.find_tool finds what shutil.which finds (it replaces it on add's path:
shutil's import loads bz2, lzma and zlib)."""

from __future__ import annotations

import shutil

import pytest

from portmapctl.host import paths


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "adir").mkdir()
    (tmp_path / "plain").write_text("")
    tool = tmp_path / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    return tmp_path


@pytest.mark.parametrize("name", ["tool", "adir", "plain", "sh", "nosuch", "/bin/sh", "/nosuch/x"])
@pytest.mark.parametrize("where", [None, "", "F", "F:/usr/bin", "::F:/usr/bin:F", "/usr/bin:F"])
def test_which_is_shutil_which(folder, monkeypatch, name, where):
    path = None if where is None else where.replace("F", str(folder))
    if path is None:
        monkeypatch.delenv("PATH", raising=False)
    monkeypatch.chdir(folder)  # (an empty PATH entry is the current directory)
    assert paths._which(name, path) == shutil.which(name, path=path)


def test_find_tool_looks_on_path_then_in_sbin(folder, monkeypatch):
    monkeypatch.setenv("PATH", str(folder))
    assert paths.find_tool("tool") == str(folder / "tool")
    assert paths.find_tool("sh") == shutil.which("sh", path=paths.SBIN_DIRS)
    monkeypatch.setenv("PATH", "/usr/bin")
    assert paths.find_tool("tool") is None
