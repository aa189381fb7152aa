"""What tests/kernel/test_conntrack.py and tests/unit/test_conntrack_pure.py share."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from typing import Callable, Iterator

import pytest

from portmapctl.host.conntrack import ConntrackEntry
from portmapctl.host.netns import entered


def udp(
    src: str = "192.0.2.7",
    dst: str = "10.0.0.1",
    sport: int = 40000,
    dport: int = 5353,
    reply_src: str | None = None,
    reply_sport: int | None = None,
    family: int = 4,
    zone: int = 0,
    ct_id: int | None = None,
) -> ConntrackEntry:
    """An entry as the kernel shows it; DNATed when reply_src/reply_sport are given."""
    return ConntrackEntry(
        family=family,
        protocol="udp",
        src=src,
        dst=dst,
        sport=sport,
        dport=dport,
        reply_src=reply_src or dst,
        reply_dst=src,
        reply_sport=reply_sport or dport,
        reply_dport=sport,
        zone=zone,
        ct_id=ct_id,
    )


REQUIRE_NETNS = os.environ.get("PORTMAPCTL_REQUIRE_NETNS") == "1"


def unavailable(reason: str) -> None:
    if REQUIRE_NETNS:
        pytest.fail(f"{reason}, and PORTMAPCTL_REQUIRE_NETNS=1")
    pytest.skip(reason)


def run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def make_netns() -> Iterator[Callable[[], str]]:
    """Creates fresh namespaces on demand; deletes them all afterwards."""
    if os.geteuid() != 0:
        unavailable("needs root")
    for tool in ("ip", "conntrack"):
        if shutil.which(tool) is None:
            unavailable(f"needs the {tool} command")
    made: list[str] = []

    def make() -> str:
        name = f"pmt-ct-{uuid.uuid4().hex[:10]}"
        result = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
        if result.returncode:
            unavailable(f"cannot create a network namespace: {result.stderr.strip()}")
        made.append(name)
        return name

    try:
        yield make
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def netns(make_netns: Callable[[], str]) -> Iterator[str]:
    """A fresh namespace that the test runs in, with working conntrack."""
    name = make_netns()
    with entered(name):
        probe = subprocess.run(["conntrack", "-L"], capture_output=True, text=True)
        if probe.returncode:
            unavailable(f"conntrack does not work here: {probe.stderr.strip()}")
        yield name
