"""The process's effective capabilities, as the kernel lists them in /proc/self/status.

Read without importing anything beyond the standard library: `add` asks before the
rest of itself is imported, and the iptables backends before they run a tool.
"""

from __future__ import annotations

from typing import Optional

CAP_NET_ADMIN = 12
CAP_NET_RAW = 13


def effective(*bits: int) -> Optional[bool]:
    """Whether every capability numbered in `bits` is in the effective set; None when
    that cannot be told (no /proc)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    mask = int(line.split()[1], 16)
                    return all(mask >> bit & 1 for bit in bits)
    except (OSError, ValueError, IndexError):
        pass
    return None
