"""python-iptables, loaded on demand (`import iptc` costs 0.25-0.4 s), and the nat
table handle one session works on. Used only inside the forked child of a session
(see the package's `_in_child`)."""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass
from typing import Any

from portmapctl.errors import HostProblem
from portmapctl.iptables.access.iptc.text import LAYOUTS

_BYTES_REPR = re.compile(r"""\bb(['"])(.*?)\1""")


@dataclass(frozen=True)
class Lib:
    """python-iptables' modules and the few libc/libxtables calls used next to them."""

    iptc: Any
    ip4tc: Any
    ip6tc: Any
    xtables: Any
    libc: Any
    libxtables: Any


def load() -> Lib:
    """Import python-iptables (costly: only here) or say, as a HostProblem, what is missing."""
    hint = "or use --iptables legacy"
    try:
        import iptc
        from iptc import ip4tc, ip6tc, xtables

        # The library python-iptables loaded (dlopen of the same soname returns it).
        libxtables = ctypes.CDLL(f"libxtables.so.{xtables.xtables_version}")
    except ImportError:
        raise HostProblem(
            "--iptables iptc needs python-iptables: pip install 'portmapctl[iptc]', " + hint
        ) from None
    except Exception as err:  # noqa: BLE001 - a missing libiptc surfaces as anything
        # python-iptables finds libip4tc/libxtables at import time; when they are
        # missing it fails with AttributeError on None, XTablesError or OSError.
        raise HostProblem(
            f"python-iptables cannot load libiptc/libxtables ({type(err).__name__}: {err}):"
            f" install iptables (libip4tc2, libip6tc2, libxtables12), {hint}"
        ) from None
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fflush.argtypes = [ctypes.c_void_p]
    libc.fputc.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.getprotobynumber.restype = ctypes.c_void_p
    libc.getprotobynumber.argtypes = [ctypes.c_int]
    return Lib(iptc, ip4tc, ip6tc, xtables, libc, libxtables)


class Session:
    """One family's nat table in a session's forked child, with that family's
    libxtables (where extensions are found) and the layout of its entries."""

    def __init__(self, lib: Lib, family: int) -> None:
        self._lib = lib
        self.family = family
        self.layout = LAYOUTS[family]
        xtables = lib.xtables
        self._xt = xtables.xtables(xtables.NFPROTO_IPV4 if family == 4 else xtables.NFPROTO_IPV6)
        self.table = open_nat_table(lib, family)


def open_nat_table(lib: Lib, family: int) -> Any:
    """The family's nat table, as it is now in the current network namespace."""
    iptc = lib.iptc
    table_class = iptc.Table if family == 4 else iptc.Table6
    what = f"the IPv{family} nat table"
    # A handle opened before the fork (by another user of python-iptables in this
    # process) may belong to another namespace, or be old: then open a new one.
    # (The class cache is python-iptables' own; missing, assume the worst.)
    opened_before = "nat" in getattr(table_class, "_cache", {"nat": None})
    try:
        table = table_class("nat", autocommit=False)
        if opened_before:
            table.refresh()
    except lib.ip4tc.IPTCError as err:
        message = clean(err)
        if "ermission denied" in message or "must be root" in message:
            # libiptc opens a raw socket: CAP_NET_ADMIN alone is not enough.
            raise HostProblem(
                f"python-iptables cannot open {what}: permission denied:"
                " run as root (CAP_NET_ADMIN and CAP_NET_RAW)"
            ) from None
        raise HostProblem(f"python-iptables cannot open {what}: {message}") from None
    return table


def clean(err: BaseException) -> str:
    """python-iptables puts libiptc's message in as bytes (b'...'): show it as text."""
    return _BYTES_REPR.sub(lambda m: m.group(2), str(err)).strip()
