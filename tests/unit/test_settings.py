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
    from portmapctl.cli._common import progress_after
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
