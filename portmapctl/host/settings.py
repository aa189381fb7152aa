"""The environment variables that tune a run: what each accepts is said here, once.

Unset or empty, a variable is its default. Any other value it does not accept is bad
input (SPEC §4: one line, exit 2): `check()` says so as a command starts, before any
work, so a typo in a cron job's environment is seen, not replaced by the default.
Stdlib only and nothing read at import: `--version` never pays for it.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, NamedTuple, Optional, Tuple

from portmapctl.errors import BadInput
from portmapctl.host.paths import CNI_BIN_DIRS, DEFAULT_RUN_DIR, HOST_LOCAL_DATA_DIR

# Plain ASCII decimals: float() would also take "nan", "inf", "1e9", "1_0" and "١".
# (A pattern string, compiled on first use: add's start-up does not pay for it.)
_DECIMAL = r"[0-9]{1,9}(?:\.[0-9]{0,9})?|\.[0-9]{1,9}"


class Setting(NamedTuple):
    """One variable: its name, its default, and what it accepts (`parse`: None for a
    value it does not; `accepts`: that rule in words, for the error). A NamedTuple,
    not a dataclass: every command imports this, and a dataclass costs add's start-up
    0.7 ms to build."""

    name: str
    default: Any
    accepts: str
    parse: Callable[[str], Optional[Any]]

    def value(self) -> Any:
        raw = os.environ.get(self.name, "")
        if not raw.strip():
            return self.default
        found = self.parse(raw.strip())
        if found is None:
            shown = repr(raw) if len(raw) <= 40 else repr(raw[:37]) + "..."
            raise BadInput(
                f"invalid {self.name}={shown}: give {self.accepts}, or unset it"
                f" for the default ({self._default_text()})"
            )
        return found

    def _default_text(self) -> str:
        if isinstance(self.default, bool):
            return "1" if self.default else "0"
        if isinstance(self.default, tuple):  # (the error stays one short line)
            return f"{self.default[0]} and {len(self.default) - 1} more"
        return f"{self.default:g}" if isinstance(self.default, float) else str(self.default)


def _seconds(
    low: float, high: float, *, above_low: bool = False
) -> Callable[[str], Optional[float]]:
    def parse(text: str) -> Optional[float]:
        if not re.fullmatch(_DECIMAL, text):
            return None
        seconds = float(text)
        inside = (seconds > low if above_low else seconds >= low) and seconds <= high
        return seconds if inside else None

    return parse


def _whole_seconds(text: str) -> Optional[int]:
    whole = text.isascii() and text.isdigit() and len(text) <= 9
    return int(text) if whole and int(text) >= 1 else None


XTABLES_WAIT = Setting(
    "PORTMAPCTL_XTABLES_WAIT",
    10,
    "the whole seconds iptables waits for the xtables lock (1 or more)",
    _whole_seconds,
)
IPTABLES_TIMEOUT = Setting(
    "PORTMAPCTL_IPTABLES_TIMEOUT",
    120.0,
    "the seconds an iptables tool may run (above 0, up to 86400)",
    _seconds(0, 86400, above_low=True),
)
PROGRESS_AFTER = Setting(
    "PORTMAPCTL_PROGRESS_AFTER",
    1.0,
    "the seconds of work before progress shows (0 to 3600)",
    _seconds(0, 3600),
)
NFT_BATCH = Setting(
    "PORTMAPCTL_NFT_BATCH",
    True,
    "0 (changes through iptables-restore) or 1 (as one nf_tables batch)",
    {"0": False, "1": True}.get,
)


def _absolute(text: str) -> Optional[str]:
    return text if text.startswith("/") else None


HOST_LOCAL_DIR = Setting(
    "PORTMAPCTL_HOST_LOCAL_DIR", HOST_LOCAL_DATA_DIR, "an absolute path", _absolute
)
# Checked only (paths.RUN_DIR reads it): a relative one is a lock per working
# directory, and two runs from two directories would not wait for each other.
RUN_DIR = Setting("PORTMAPCTL_RUN_DIR", DEFAULT_RUN_DIR, "an absolute path", _absolute)


def _absolute_dirs(text: str) -> Optional[Tuple[str, ...]]:
    dirs = tuple(text.split())
    return dirs if all(d.startswith("/") for d in dirs) else None


# The DEFAULT CNI bin directories (paths.guessed_cni_bin_dirs reads it): a test seam,
# named in no user document (conftest points it at none, so a test never reads the
# machine's /usr/lib/cni/portmap unasked). Still a guess of where the runtime's plugins
# are, whose binaries only add doubt; an operator states them with --cni-bin-dir
# (PORTMAPCTL_CNI_BIN_DIR, an option's variable, declared with the option).
CNI_BIN_DEFAULTS = Setting(
    "PORTMAPCTL_CNI_BIN_DEFAULTS",
    CNI_BIN_DIRS,
    "absolute directories separated by spaces",
    _absolute_dirs,
)
ALL = (
    XTABLES_WAIT,
    IPTABLES_TIMEOUT,
    PROGRESS_AFTER,
    NFT_BATCH,
    HOST_LOCAL_DIR,
    RUN_DIR,
    CNI_BIN_DEFAULTS,
)


def check() -> None:
    """BadInput for the first variable set to a value it does not accept."""
    for setting in ALL:
        setting.value()
