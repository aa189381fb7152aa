"""Shared fixtures: throwaway network namespaces running the real portmap plugin.

Tests that use ``host_ns`` are marked ``netns`` automatically. Every ``netns`` test is
skipped, with the reason, when the machine cannot run it (not root, no ``ip netns``, no
plugin) -- unless ``PORTMAPCTL_REQUIRE_NETNS=1``, which turns those skips into failures
(CI sets it). When ``PORTMAPCTL_NETNS_REPORT`` names a file, the session writes there
how many ``netns`` tests ran and which were skipped, so CI can refuse a silent skip.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import realplugin

# Tests never read the machine's own CNI cache (/var/lib/cni): a command run without
# --cni-cache-dir gets this directory, which does not exist, so a test that forgot to
# name its cache sees "no cache" here and on every other machine alike.
os.environ["PORTMAPCTL_CNI_CACHE_DIR"] = "/nonexistent/portmapctl-tests-name-a-cache-dir"
# Nor host-local's leases (/var/lib/cni/networks): a cached config without `dataDir`
# says nothing of them; a test that wants them gives its conflist a `dataDir`.
os.environ["PORTMAPCTL_HOST_LOCAL_DIR"] = "/nonexistent/portmapctl-tests-host-local"
# Nor its CNI plugins (/usr/lib/cni/portmap, Debian's 1.1.1 on CI, would add doubt of
# which backend a container whose rules are gone is in): a command run without
# --cni-bin-dir looks in this directory, which does not exist, as its default (not a
# --cni-bin-dir: commands run as an operator runs them, without the option); a test
# that wants a plugin read gives --cni-bin-dir, or points the default at its own
# directory (tests/unit/test_plugin_binary.py guards this).
os.environ.pop("PORTMAPCTL_CNI_BIN_DIR", None)
os.environ["PORTMAPCTL_CNI_BIN_DEFAULTS"] = "/nonexistent/portmapctl-tests-no-cni-bin-dir"
REPORT_ENV = "PORTMAPCTL_NETNS_REPORT"


_require = realplugin.require


_netns_nodeids: set[str] = set()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "host_ns" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.netns)
        if item.get_closest_marker("netns") is not None:
            _netns_nodeids.add(item.nodeid)


def pytest_runtest_setup(item: pytest.Item) -> None:
    # Also covers tests marked netns by hand that make their own namespaces.
    if item.get_closest_marker("netns") is not None:
        _require(realplugin.netns_available())
        _require(realplugin.plugin_available())


@pytest.fixture
def host_ns() -> Iterator[str]:
    """A fresh network namespace (name) to play the node in; deleted afterwards."""
    _require(realplugin.netns_available())
    _require(realplugin.plugin_available())
    name = realplugin.create_netns("pmt-host")
    try:
        yield name
    finally:
        realplugin.delete_netns(name)


@pytest.fixture(params=["nft", "legacy"])
def iptables_mode(request: pytest.FixtureRequest) -> realplugin.Mode:
    """The iptables flavour under test: ``"nft"`` (nf_tables) or ``"legacy"``."""
    mode: realplugin.Mode = request.param
    if realplugin.netns_available()[0]:
        _require(realplugin.mode_available(mode))
    return mode


# --- accounting of netns tests, for CI ----------------------------------------------------

_netns_outcomes: dict[str, str] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.nodeid not in _netns_nodeids:
        return
    if report.skipped and not hasattr(report, "wasxfail"):
        _netns_outcomes[report.nodeid] = "skipped"
    elif report.failed:
        _netns_outcomes[report.nodeid] = "failed"
    elif report.when == "call":
        _netns_outcomes.setdefault(report.nodeid, "passed")


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get(REPORT_ENV)
    if not target:
        return
    counts = {outcome: 0 for outcome in ("passed", "failed", "skipped")}
    for outcome in _netns_outcomes.values():
        counts[outcome] += 1
    summary = {
        "netns_tests": len(_netns_outcomes),
        **counts,
        "skipped_tests": sorted(n for n, o in _netns_outcomes.items() if o == "skipped"),
    }
    Path(target).write_text(json.dumps(summary, indent=2) + "\n")
