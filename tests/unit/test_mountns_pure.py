"""host/mountns.py's look-up of a path inside another root directory: what the other
mount namespaces' /proc/PID/root shows, read here with a temporary directory as root."""

from __future__ import annotations

import os

import pytest

from portmapctl.host import mountns


@pytest.fixture
def root(tmp_path):
    (tmp_path / "run" / "netns").mkdir(parents=True)
    (tmp_path / "run" / "netns" / "cni-1").write_text("")
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "run").symlink_to("/run")  # absolute: that root's /run
    (tmp_path / "loop").symlink_to("loop")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    yield tmp_path, fd
    os.close(fd)


def test_paths_resolve_inside_the_root(root):
    """An absolute symlink (/var/run -> /run) means the other root's /run, never this
    process's; `..` stops at the root; a missing part is nothing there."""
    _, fd = root
    assert mountns._resolve(fd, "/var/run/netns/cni-1") == "run/netns/cni-1"
    assert mountns._resolve(fd, "/../../run/./netns/cni-1") == "run/netns/cni-1"
    assert mountns._resolve(fd, "/var/run/netns/cni-2/x") is None
    assert mountns._resolve(fd, "/run/netns/cni-1/x") is None  # not a directory
    with pytest.raises(OSError):
        mountns._resolve(fd, "/loop/x")


def test_what_a_path_holds_in_another_root(root):
    """A namespace file (the nsfs device) there: True; nothing there: False; anything
    else (an empty mount point), or what cannot be looked at: None."""
    tmp_path, fd = root
    device = os.stat(tmp_path / "run" / "netns" / "cni-1").st_dev
    assert mountns._holds_namespace(fd, "/var/run/netns/cni-1", device) is True
    assert mountns._holds_namespace(fd, "/var/run/netns/cni-2", device) is False
    assert mountns._holds_namespace(fd, "/run/netns/cni-1", device + 1) is None
    assert mountns._holds_namespace(fd, "/loop/cni-1", device) is None
    assert mountns.sightings(["/run/netns/cni-1"], None) == {"/run/netns/cni-1": None}
