"""Whether a portmap binary honours "backend": "nftables", told from its bytes
(core/plugin_binary.py, host/cni_bins.py), on the real binaries: Debian's 1.1.1
(/usr/lib/cni/portmap) and upstream's v1.6.2, v1.7.1, v1.9.1 (../shared; CI has both).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import upstream

from portmapctl.core.plugin_binary import KeySupport, key_support
from portmapctl.host import cni_bins
from portmapctl.host.cni_bins import portmap_binaries

DEBIAN = Path("/usr/lib/cni/portmap")


def _bytes_of(path: Path) -> bytes:
    if not path.is_file():
        pytest.skip(f"no {path} here (CI has it; PORTMAPCTL_UPSTREAM_BIN names the folder)")
    return path.read_bytes()


def test_debians_1_1_1_ignores_the_key() -> None:
    assert key_support(_bytes_of(DEBIAN)) is KeySupport.IGNORES


@pytest.mark.parametrize("version", upstream.VERSIONS)
def test_upstream_v1_6_on_honours_the_key(version: str) -> None:
    assert key_support(_bytes_of(upstream.binary(version))) is KeySupport.HONOURS


def test_no_go_program_tells_nothing(tmp_path: Path) -> None:
    # A wrapper script named portmap: neither verdict.
    assert key_support(b'#!/bin/sh\nexec /usr/lib/cni/portmap.real "$@"\n') is None
    assert key_support(b"#!/bin/sh\n# cni_hostport\n") is None


@pytest.mark.parametrize("plugin", ["bridge", "host-local", "tuning"])
def test_another_go_program_named_portmap_tells_nothing(plugin: str) -> None:
    # Another plugin of the same release (or any Go shim) put where portmap is: a Go
    # program without the nftables table name, which is no portmap before v1.6. Read
    # as one, it said "ignores the key", and a container cached "nftables" of which
    # nothing is left was repaired in iptables, whatever the real plugin does.
    assert key_support(_bytes_of(DEBIAN.parent / plugin)) is None


def _bin_dir(tmp_path: Path, name: str, source: Path) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    _bytes_of(source)
    shutil.copy(source, folder / "portmap")
    # The copy keeps the source's mode (r-x: ../shared's are read-only), and the unit
    # tier runs as a root without CAP_DAC_OVERRIDE: the tests that grow it must write.
    (folder / "portmap").chmod(0o755)
    return folder


def test_the_binaries_of_the_dirs_agree_or_tell_nothing(tmp_path: Path) -> None:
    deb = _bin_dir(tmp_path, "deb", DEBIAN)
    new = _bin_dir(tmp_path, "new", upstream.binary("v1.9.1"))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert portmap_binaries([str(deb), str(empty)]).verdict is KeySupport.IGNORES
    assert portmap_binaries([str(new), str(tmp_path / "missing")]).verdict is KeySupport.HONOURS
    # Two runtimes, two plugins: which one added a container is not known.
    both = portmap_binaries([str(deb), str(new)])
    assert both.verdict is None and len(both.found) == 2
    assert portmap_binaries([str(empty)]).verdict is None
    assert portmap_binaries([]).verdict is None


def test_the_same_file_through_two_dirs_is_one_binary(tmp_path: Path) -> None:
    new = _bin_dir(tmp_path, "new", upstream.binary("v1.7.1"))
    (tmp_path / "link").symlink_to(new)
    found = portmap_binaries([str(new), str(tmp_path / "link")])
    assert [b.path for b in found.found] == [str(new / "portmap")]


def test_an_unreadable_or_oversized_binary_tells_nothing(tmp_path: Path, monkeypatch) -> None:
    new = _bin_dir(tmp_path, "new", upstream.binary("v1.6.2"))
    odd = tmp_path / "odd"
    odd.mkdir()
    os.mkfifo(odd / "portmap")  # (never waited on: not a regular file)
    found = portmap_binaries([str(new), str(odd)])
    assert found.verdict is None
    assert found.found[1].support is None and found.found[1].error
    monkeypatch.setattr(cni_bins, "MAX_BYTES", 1 << 20)
    big = portmap_binaries([str(new)])
    assert big.verdict is None and "larger than" in (big.found[0].error or "")


def test_a_portmap_that_cannot_be_looked_at_tells_nothing(tmp_path: Path) -> None:
    # A portmap whose stat(2) fails but for "no such file" (a symlink loop, planted or
    # a k3s data/ link caught mid-upgrade; a directory this process may not search)
    # is a binary there that cannot be read, not an empty directory: skipped, the other
    # directory's binary decided alone, against what the unread one may do.
    new = _bin_dir(tmp_path, "new", upstream.binary("v1.9.1"))
    loop = tmp_path / "loop"
    loop.mkdir()
    (loop / "portmap").symlink_to(loop / "portmap")
    found = portmap_binaries([str(new), str(loop)])
    assert found.verdict is None, found
    assert found.found[1].path == str(loop / "portmap") and found.found[1].error
    shut = tmp_path / "shut"
    shutil.copytree(_bin_dir(tmp_path, "deb", DEBIAN), shut)
    shut.chmod(0)
    try:
        if os.access(shut / "portmap", os.F_OK):
            pytest.skip(
                "this root may search any directory (CAP_DAC_OVERRIDE): the unit tier has none"
            )
        found = portmap_binaries([str(new), str(shut)])
        assert found.verdict is None and "ermission" in (found.found[1].error or ""), found
    finally:
        shut.chmod(0o755)


def test_a_portmap_that_is_no_regular_file_is_never_opened(tmp_path: Path, monkeypatch) -> None:
    # Opening a device has effects of its own (/dev/watchdog arms the node's watchdog,
    # a tape rewinds): a portmap linked to one was opened, then refused by its fstat.
    # What stat(2) already shows to be no regular file tells nothing, unopened.
    opened = []
    real = cni_bins.open_regular

    def spy(path: str):
        opened.append(path)
        return real(path)

    monkeypatch.setattr(cni_bins, "open_regular", spy)
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "portmap").symlink_to("/dev/null")
    found = portmap_binaries([str(odd)])
    assert found.verdict is None and found.found[0].error == "not a regular file"
    assert opened == []


def _cut(data: bytes, size: int) -> list:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_marks_split_between_chunks_are_found() -> None:
    # The chunks a binary is read in (a MiB each) cut where they fall: a name across
    # two of them is still found, and one cut short is not made up.
    from portmapctl.core.plugin_binary import key_support_of

    data = b"..\xff Go buildinf:..CNI-HOSTPORT-DNAT..cni_hostport.."
    for size in (1, 2, 3, 5, 7, 11):
        assert key_support_of(_cut(data, size)) is KeySupport.HONOURS, size
        assert key_support_of(_cut(data[:-3], size)) is KeySupport.IGNORES, size
        assert key_support_of(_cut(data[:30], size)) is None, size
    assert key_support_of([]) is None


def _read_with_peak(folder: Path):
    """portmap_binaries of `folder`, and the most memory held at once meanwhile."""
    import tracemalloc

    tracemalloc.start()
    try:
        found = portmap_binaries([str(folder)])
        return found, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_binary_is_never_held_whole_in_memory(tmp_path: Path) -> None:
    # k3s's multi-call `cni` (which its portmap links to) is some 60 MB, and a file up
    # to the cap was read whole and then joined: twice its size at once, 256 MiB near
    # the cap, the DaemonSet's memory limit (an OOM kill on every run). Searched a
    # chunk at a time, and a file over the cap not read at all.
    new = _bin_dir(tmp_path, "new", upstream.binary("v1.9.1"))
    with open(new / "portmap", "r+b") as grown:
        grown.truncate((cni_bins.MAX_BYTES >> 1) + (16 << 20))  # (sparse: no disk)
        grown.seek(cni_bins.MAX_BYTES >> 1)
        grown.write(upstream.binary("v1.9.1").read_bytes())
    found, peak = _read_with_peak(new)
    assert found.verdict is KeySupport.HONOURS, found
    assert peak < 8 << 20, f"{peak >> 20} MiB held at once"
    with open(new / "portmap", "r+b") as huge:
        huge.truncate(cni_bins.MAX_BYTES + 1)
    found, peak = _read_with_peak(new)
    assert found.verdict is None and "larger than" in (found.found[0].error or "")
    assert peak < 1 << 20, f"{peak >> 20} MiB read of a file over the cap"


def test_tests_never_read_the_machines_own_plugins() -> None:
    # conftest points the default at a directory without a plugin: CI has Debian's
    # /usr/lib/cni/portmap, which would settle verdicts that every other machine
    # leaves in doubt. In-process (NodeOptions' default) and in a command's process.
    from portmapctl.host.paths import CNI_BIN_DIRS, default_cni_bin_dirs
    from portmapctl.ops.node import NodeOptions

    assert "/usr/lib/cni" in CNI_BIN_DIRS
    for dirs in (default_cni_bin_dirs(), NodeOptions().bin_dirs):
        assert not set(dirs) & set(CNI_BIN_DIRS)
        assert portmap_binaries(dirs).found == ()
    assert os.environ["PORTMAPCTL_CNI_BIN_DEFAULTS"].startswith("/nonexistent/")
    assert "PORTMAPCTL_CNI_BIN_DIR" not in os.environ  # (the defaults, as an operator's)
    assert not NodeOptions().bin_dirs_stated


def test_cni_bin_dir_replaces_the_defaults_and_is_spelled_in_fix_commands(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from portmapctl.cli import add_fast
    from portmapctl.cli._common import Common
    from portmapctl.ops.node import NodeOptions

    common = Common().with_bin_dirs(["/srv/cni", "/srv/cni/", "/opt/other"])
    options = common.node_options()
    assert options.bin_dirs == ("/srv/cni", "/opt/other")
    assert " --cni-bin-dir /srv/cni --cni-bin-dir /opt/other" in options.arguments
    assert "--cni-bin-dir" not in Common().node_options().arguments
    # Given, they decide; the defaults only add doubt (binary_verdicts._doubt_only).
    assert options.bin_dirs_stated and not Common().node_options().bin_dirs_stated
    # add's fast path (no typer) takes it as typer does.
    given = add_fast.parse(["add", "--cni-bin-dir", "/srv/cni", "--network", "n"])
    assert given is not None and given["cni_bin_dir"] == ["/srv/cni"]
    with pytest.raises(Exception, match="--cni-bin-dir is empty"):
        Common().with_bin_dirs([""])
    # Its variable is a statement too; empty, the defaults (as every variable's empty
    # value is: host/settings.py), whose binaries only add doubt.
    monkeypatch.setenv("PORTMAPCTL_CNI_BIN_DIR", "/srv/cni")
    assert NodeOptions().bin_dirs_stated and Common().node_options().bin_dirs_stated
    monkeypatch.setenv("PORTMAPCTL_CNI_BIN_DIR", " ")
    assert not NodeOptions().bin_dirs_stated and not Common().node_options().bin_dirs_stated
