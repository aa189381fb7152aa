"""Whether a `portmap` plugin binary honours the config key `"backend": "nftables"`,
told from its bytes (never by running it): host/cni_bins.py reads the files.

The test: the binary holds the name of the table the nftables backend writes,
`cni_hostport`. Measured on the real binaries: upstream v1.6.2, v1.7.1 and v1.9.1
hold it (once, inside Go's packed string data, `cni_hostportmasquerading...`: Go
strings are not NUL-terminated, so the name is searched for as bytes, not as a C
string); Debian's 1.1.1 (/usr/lib/cni/portmap), like every plugin before v1.6, which
has no nftables backend and takes `backend` for an unknown key, does not.

Why not the version: Go's build information (the `\\xff Go buildinf:` blob, what
`go version -m` prints) names the toolchain (go1.19.8 in Debian's, go1.23.5 and
go1.25.5 upstream's) but not the plugin's version: upstream's release binaries say
`mod github.com/containernetworking/plugins (devel)`, and Debian's, built without
modules, have no `mod` line at all. Its `dep sigs.k8s.io/knftables` line (v1.6+'s)
is missing from a build without modules. The table name is the backend itself.
The blob still serves: a file without it is no Go program (a wrapper script named
`portmap`), of which nothing is told.

Why the plugin's own chain name too: "ignores" is told by a name's absence, which
any Go program has. Another plugin put where portmap is (the same release's bridge
or host-local, a Go shim that runs the real one elsewhere) said "ignores the key",
and a container whose plugin keeps it in nftables was repaired in iptables. The
iptables backend's chain CNI-HOSTPORT-DNAT is in every portmap (Debian's 1.1.1,
upstream's v1.6.2 to v1.9.1: measured) and in no other plugin of those releases.

Cost, measured: 3-5 ms a binary (2.5-5 MB read a MiB at a time and searched, page
cache warm; memory: a MiB or two, whatever its size), and
asked only where a container's backend is in doubt without it.
"""

from __future__ import annotations

from enum import Enum
from typing import FrozenSet, Iterable, Optional

# The table the plugin's nftables backend (v1.6 on) writes (nftables/__init__.py TABLE).
NFT_TABLE_NAME = b"cni_hostport"
# The start of Go's build information (debug/buildinfo): in every Go program since 1.13.
GO_BUILDINFO = b"\xff Go buildinf:"
# The iptables backend's toplevel chain (iptables/chains.TOPLEVEL_DNAT): in every
# portmap plugin, in none of the other plugins.
PORTMAP_MARK = b"CNI-HOSTPORT-DNAT"


class KeySupport(Enum):
    """What a portmap binary does with the key `"backend": "nftables"`."""

    HONOURS = "honours"  # v1.6 on: the nftables backend
    IGNORES = "ignores"  # before v1.6: an unknown key, the container kept in iptables


# What key_support looks for, and how much of a chunk's end the next one is searched
# with (a name split between two reads is still found).
_MARKS = (GO_BUILDINFO, PORTMAP_MARK, NFT_TABLE_NAME)
_OVERLAP = max(len(mark) for mark in _MARKS) - 1


def key_support(data: bytes) -> Optional[KeySupport]:
    """What the portmap binary whose bytes are `data` does with the key, or None where
    `data` is no Go program, or no portmap plugin (nothing is told of it)."""
    return key_support_of((data,))


def key_support_of(chunks: Iterable[bytes]) -> Optional[KeySupport]:
    """key_support of the bytes `chunks` make, one after another: a binary read a
    chunk at a time is never held whole (k3s's multi-call `cni` is some 60 MB)."""
    found: FrozenSet[bytes] = frozenset()
    tail = b""
    for chunk in chunks:
        window = tail + chunk
        found |= {mark for mark in _MARKS if mark not in found and mark in window}
        tail = window[-_OVERLAP:]
    if GO_BUILDINFO not in found or PORTMAP_MARK not in found:
        return None
    return KeySupport.HONOURS if NFT_TABLE_NAME in found else KeySupport.IGNORES
