"""The interface the kernel routes a container's address through (`ip route get`):
add's route_localnet is set on that interface."""

from __future__ import annotations

import subprocess
from typing import Dict, List, Sequence

from portmapctl.host.paths import find_tool


def route_interfaces(addresses: Sequence[str]) -> Dict[str, str]:
    """The interface the kernel routes each address through: `ip route get` for all of
    them in one `ip -batch` process (-force: an address without a route is skipped,
    not the end of the batch). Addresses without a route are left out."""
    # Found as iptables is: RHEL/CentOS keep ip in /usr/sbin, off cron's PATH.
    done = subprocess.run(
        [find_tool("ip") or "ip", "-o", "-force", "-batch", "-"],
        input="".join(f"route get {a}\n" for a in addresses),
        capture_output=True,
        text=True,
        check=False,
    )
    wanted = set(addresses)
    found: Dict[str, str] = {}
    for line in done.stdout.splitlines():
        words: List[str] = line.split()
        # "10.88.0.5 dev cni0 src 10.88.0.1 uid 0 \    cache": the address comes first
        # (after "local"/"broadcast"... for such routes), as the kernel spells it.
        first = next((i for i, word in enumerate(words[:2]) if word in wanted), None)
        if first is None:
            continue
        if "dev" in words[first:]:
            found[words[first]] = words[words.index("dev", first) + 1]
    return found
