"""The environment variables that tune a run (host/settings.py): what each accepts."""

from __future__ import annotations

import pytest

from portmapctl.errors import BadInput
from portmapctl.host import settings

GOOD = [
    (settings.XTABLES_WAIT, "", 10),
    (settings.XTABLES_WAIT, "1", 1),
    (settings.XTABLES_WAIT, " 30 ", 30),
    (settings.IPTABLES_TIMEOUT, "", 120.0),
    (settings.IPTABLES_TIMEOUT, "0.5", 0.5),
    (settings.IPTABLES_TIMEOUT, "86400", 86400.0),
    (settings.PROGRESS_AFTER, "0", 0.0),
    (settings.PROGRESS_AFTER, "3600", 3600.0),
    (settings.NFT_BATCH, "", True),
    (settings.NFT_BATCH, "0", False),
    (settings.NFT_BATCH, "1", True),
    (settings.CNI_BIN_DEFAULTS, "/srv/cni  /opt/b ", ("/srv/cni", "/opt/b")),
]
BAD = [
    (settings.XTABLES_WAIT, "x"),
    (settings.XTABLES_WAIT, "0"),
    (settings.XTABLES_WAIT, "-1"),
    (settings.XTABLES_WAIT, "1.5"),
    (settings.XTABLES_WAIT, "１"),
    (settings.XTABLES_WAIT, "9" * 5000),
    (settings.IPTABLES_TIMEOUT, "abc"),
    (settings.IPTABLES_TIMEOUT, "0"),
    (settings.IPTABLES_TIMEOUT, "nan"),
    (settings.IPTABLES_TIMEOUT, "inf"),
    (settings.IPTABLES_TIMEOUT, "1e3"),
    (settings.IPTABLES_TIMEOUT, "1_0"),
    (settings.IPTABLES_TIMEOUT, "86401"),
    (settings.PROGRESS_AFTER, "x"),
    (settings.PROGRESS_AFTER, "-1"),
    (settings.PROGRESS_AFTER, "3601"),
    (settings.NFT_BATCH, "maybe"),
    (settings.NFT_BATCH, "yes"),
    (settings.NFT_BATCH, "false"),
    (settings.CNI_BIN_DEFAULTS, "cni/bin"),
    (settings.CNI_BIN_DEFAULTS, "/opt/cni/bin ./bin"),
]


@pytest.mark.parametrize(("setting", "value", "expected"), GOOD)
def test_accepted_values_and_the_default(monkeypatch, setting, value, expected):
    monkeypatch.setenv(setting.name, value)
    assert setting.value() == expected
    settings.check()


@pytest.mark.parametrize(("setting", "value"), BAD)
def test_any_other_value_is_bad_input_naming_the_variable(monkeypatch, setting, value):
    monkeypatch.setenv(setting.name, value)
    with pytest.raises(BadInput) as refused:
        settings.check()
    message = str(refused.value)
    assert message.startswith(f"invalid {setting.name}=")
    assert "\n" not in message and len(message) < 200
    assert "unset it for the default" in message


def test_the_accessors_read_the_one_definition(monkeypatch):
    """restore.py, nfgen.py and the progress display read the variables through it."""
    from portmapctl.cli.output import progress_after
    from portmapctl.iptables.access import nfgen
    from portmapctl.iptables.access.restore import lock_wait_seconds, tool_timeout

    for setting, read in (
        (settings.XTABLES_WAIT, lock_wait_seconds),
        (settings.IPTABLES_TIMEOUT, tool_timeout),
        (settings.PROGRESS_AFTER, progress_after),
        (settings.NFT_BATCH, nfgen.batches_on),
    ):
        monkeypatch.setenv(setting.name, "bogus")
        with pytest.raises(BadInput):
            read()
        monkeypatch.delenv(setting.name)
        assert read() == setting.default


def test_the_cni_bin_defaults_seam_is_read_through_its_one_definition(monkeypatch):
    """PORTMAPCTL_CNI_BIN_DEFAULTS (tests' seam: conftest points it at none) is read by
    host/paths.py through settings, so a relative directory, which would be looked for
    below whatever directory a run starts in, is refused as every variable's bad value
    is, not taken."""
    from portmapctl.host.paths import CNI_BIN_DIRS, guessed_cni_bin_dirs

    monkeypatch.setenv(settings.CNI_BIN_DEFAULTS.name, "usr/lib/cni")
    with pytest.raises(BadInput):
        guessed_cni_bin_dirs()
    monkeypatch.setenv(settings.CNI_BIN_DEFAULTS.name, " ")
    assert guessed_cni_bin_dirs() == CNI_BIN_DIRS == settings.CNI_BIN_DEFAULTS.default


def test_the_cni_bin_defaults_seam_is_no_user_option():
    """It moves the guess only (binaries found there never decide a write), and is
    named in no user document: the operator's statement is --cni-bin-dir."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for doc in [
        root / "README.md",
        *root.joinpath("docs").rglob("*.md"),
        root / "man/portmapctl.1",
    ]:
        assert settings.CNI_BIN_DEFAULTS.name not in doc.read_text(), doc
