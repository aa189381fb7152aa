"""Backends: one small interface for reading and writing a family's nat table.

    read(family) -> NatTable
    apply(transaction) -> None      (atomic; raises ApplyFailed, state unchanged)

`open_backend` turns the `--iptables`/`--snapshot` options into one.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Collection, Dict, Iterator, Optional, Protocol

from portmapctl.core.backend import Flavour, IptablesAccess
from portmapctl.errors import BadInput, HostProblem

if TYPE_CHECKING:
    # (Not imported to run: add's early dump imports this package first, and the
    # sooner it starts the better; ops/add_early.py.)
    from portmapctl.iptables.ruleset import NatTable
    from portmapctl.iptables.transaction import Transaction

# The kernel backends' names: each is named for the --iptables word that opens it.
BACKEND_NAMES = tuple(IptablesAccess)


class Backend(Protocol):
    name: str  # an IptablesAccess for the kernel's (BACKEND_NAMES); else its own word
    writable: bool

    def read(self, family: int) -> NatTable: ...

    def apply(self, txn: Transaction) -> None: ...


def host_flavours(families: Collection[int] = (4, 6)) -> Dict[int, Flavour]:
    """Per family of `families`, which iptables (nft or legacy) the tool the plugin
    runs for it is: `iptables` for IPv4, `ip6tables` for IPv6, so where its rules are.

    Debian's alternatives set the two apart (`update-alternatives --set iptables`
    leaves ip6tables as it was): the plugin then writes IPv4 to one flavour's tables
    and IPv6 to the other's (access/per_family.py). A missing ip6tables leaves IPv6 to
    iptables' flavour (its reads say what is missing)."""
    from portmapctl.host.paths import find_tool

    path = find_tool("iptables")
    if path is None:
        raise HostProblem("no iptables command found: install iptables (nft or legacy)")
    flavour = tool_flavour(path)
    path6 = find_tool("ip6tables") if 6 in families else None
    flavour6 = tool_flavour(path6) if path6 is not None else flavour
    return {family: flavour6 if family == 6 else flavour for family in families}


def host_flavour(families: Collection[int] = (4, 6)) -> Flavour:
    """The one flavour of `families`' tools (host_flavours); HostProblem where they
    differ: for a caller that works in one flavour only (add's early write)."""
    found = host_flavours(families or (4,))
    flavours = set(found.values())
    if len(flavours) > 1:
        raise HostProblem(
            f"this host's iptables is {found[4]} and its ip6tables is {found[6]} (their"
            " alternatives differ)"
        )
    return flavours.pop()


def tool_flavour(path: str) -> Flavour:
    """Which iptables the command at `path` (`iptables` or `ip6tables`) is: nft or
    legacy (iptables before 1.8, whose tools have no flavour in their names, is legacy)."""
    import subprocess

    target = os.path.basename(os.path.realpath(path))
    # (The tools' names carry the flavour: iptables-legacy, xtables-nft-multi.)
    if Flavour.LEGACY in target:
        return Flavour.LEGACY
    if Flavour.NFT in target:
        return Flavour.NFT
    from portmapctl.host import settings

    timeout = settings.IPTABLES_TIMEOUT.value()
    try:
        version = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=timeout, check=False
        ).stdout
    except OSError as err:
        raise HostProblem(f"cannot run {path}: {err.strerror}") from None
    except subprocess.TimeoutExpired:
        # (It was an uncaught timeout: "internal error", exit 1.)
        from portmapctl.iptables.access.restore import _timed_out

        raise _timed_out(f"{path} --version") from None
    return Flavour.NFT if "nf_tables" in version else Flavour.LEGACY


# What iptables-legacy-save prints of a nat table it has just created: its built-in
# chains, empty. A table that is not there reads as this, without being created.
NEW_NAT_TABLE = (
    "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
    ":POSTROUTING ACCEPT [0:0]\nCOMMIT\n"
)


def legacy_nat_present(family: int) -> bool:
    """Whether the legacy (x_tables) nat table of `family` exists in the namespace the
    calling thread is in, asked without creating it: `iptables-legacy-save -t nat`,
    `iptables-legacy -S` and libiptc all create empty legacy tables where there were
    none (and iptables-nft then warns about them on every call), so a read of a table
    that is not there must not be made at all. True when it cannot be told."""
    name = "ip6_tables_names" if family == 6 else "ip_tables_names"
    # thread-self: the namespace this thread entered, not the process's first one.
    for folder in ("/proc/thread-self/net", "/proc/net"):
        try:
            with open(f"{folder}/{name}") as names:
                return "nat" in names.read().split()
        except FileNotFoundError:
            continue
        except OSError:
            return True  # cannot tell: reading is the safe answer
    return False  # no x_tables at all: the legacy module is not even loaded


# Matches whose words iptables resolves in the namespace it parses them in (not only
# when the rule goes in): `-m set --match-set NAME` (libxt_set asks the kernel for the
# set by name, and ipsets are per network namespace). A scratch namespace has none.
_NAMESPACE_MATCHES = frozenset({"set"})


def _names_namespace_objects(txn: Transaction) -> bool:
    """Whether a rule of `txn` loads a match of _NAMESPACE_MATCHES (`-m`/`--match`)."""
    for op in txn.ops:
        words = op.args
        if any(
            word in ("-m", "--match") and following in _NAMESPACE_MATCHES
            for word, following in zip(words, words[1:])
        ):
            return True
    return False


@contextlib.contextmanager
def legacy_probe_place(txn: Transaction) -> Iterator[bool]:
    """Where a probe that opens the legacy nat table of `txn`'s family only to parse
    `txn` (never to commit: iptables-legacy-restore --test, a python-iptables handle
    dropped) runs: here where the table is there; else in a scratch namespace, since
    opening it would create it (a dry run, or bad input said as exit 2, must leave the
    node as it was). Yields False when neither can be (no namespace can be made, or
    `txn` names what only this namespace has, an ipset: refused there as missing, valid
    conditions were bad input, exit 2): no probe then, the write judges."""
    if legacy_nat_present(txn.family):
        yield True
        return
    if _names_namespace_objects(txn):
        yield False
        return
    from portmapctl.host.netns import scratch

    with scratch() as made:
        yield made


def legacy_read_skipped(family: int) -> bool:
    """Whether a read of the legacy nat table of `family` is answered as empty without
    running anything: the table is not there, and the process could read it if it were
    (without the capabilities the read runs, and fails with its own line, as always)."""
    from portmapctl.host.privilege import CAP_NET_ADMIN, CAP_NET_RAW, effective

    return not legacy_nat_present(family) and effective(CAP_NET_ADMIN, CAP_NET_RAW) is True


def restore_tools(backend: object) -> Dict[int, str]:
    """Per family, the restore command a transaction of `backend` goes to, as a dry run
    (or -v) names it above the text: the flavour's own (`iptables-legacy-restore`), since
    the plain `iptables-restore` may be the other flavour, where the text would make a
    split brain. python-iptables writes legacy tables: legacy's tool (plain before 1.8,
    as for --iptables legacy); a backend that writes nothing (snapshots) gets none, and
    its texts the plain name."""
    if getattr(backend, "name", "") == IptablesAccess.IPTC:
        from portmapctl.iptables.access.restore import RestoreBackend

        backend = RestoreBackend(Flavour.LEGACY)
    tool = getattr(backend, "restore_tool", None)
    if tool is not None:
        return {family: tool(family) for family in (4, 6)}
    return {}


def open_backend(
    name: str = IptablesAccess.AUTO,
    snapshots: Optional[Dict[int, str]] = None,
    families: Collection[int] = (4, 6),
) -> Backend:
    """The backend for these options; snapshot files win over `--iptables`. `auto`
    follows the tool the plugin runs for each of `families` (host_flavours): one
    flavour's backend, or where the alternatives differ each family's own."""
    if snapshots:
        from portmapctl.iptables.access.snapshot import SnapshotBackend

        return SnapshotBackend(snapshots)
    try:
        access = IptablesAccess(name)
    except ValueError:
        words = ", ".join(IptablesAccess)
        raise BadInput(f"unknown iptables flavour {name!r}: use one of {words}") from None
    # `auto` is "nft" or "legacy", never "iptc": on legacy tables save/restore is
    # 2-3 times faster end to end than python-iptables (benchmarks/iptc_bench.py).
    from portmapctl.iptables.access.restore import RestoreBackend

    if access is IptablesAccess.AUTO:
        found = host_flavours(families or (4,))
        if len(set(found.values())) > 1:
            # Each family where the plugin writes it (the alternatives differ).
            from portmapctl.iptables.access.per_family import PerFamilyBackend

            return PerFamilyBackend({f: RestoreBackend(flavour) for f, flavour in found.items()})
        return RestoreBackend(next(iter(found.values())))
    if access is IptablesAccess.IPTC:
        # libiptc sees only legacy tables: on an nf_tables host it would read an empty
        # table (and a repair would write into tables nothing uses). Checked before
        # the costly import of python-iptables.
        nft = [f for f, flavour in host_flavours(families).items() if flavour is Flavour.NFT]
        if nft:
            tool = "iptables" if 4 in nft else "ip6tables"
            raise HostProblem(
                f"--iptables iptc works on legacy iptables only, and this host's {tool}"
                " is nf_tables (python-iptables would see empty legacy tables here):"
                " use --iptables auto or nft"
            )
        from portmapctl.iptables.access.iptc import IptcBackend

        return IptcBackend()
    return RestoreBackend(access.flavour)
