"""When `gc` first saw each chain that is not live: /run/portmapctl/gc-state.json.

`gc --min-age` removes a chain only once it has seen it not live and unchanged for
that long (SPEC §3), so the first sighting must outlive the run. In memory a sighting
is keyed by `ChainKey(family, chain)`; the file holds, per network namespace (its
cookie: namespace_key),
`"<family> <chain>" -> {fingerprint, first_seen}` (an nftables container's rules:
`"nft<family> <container ID>"`), the format 0.2 wrote, so either version reads the
other's file. gc rewrites its namespace's part on every run, which forgets chains
that became live, changed or went.

Times are CLOCK_BOOTTIME seconds: wall-clock jumps (NTP, a wrong clock set right)
must not age a chain early. A different boot ID (after a reboot, should /run not be a
tmpfs) discards the file. A file of ours that says nothing usable (not JSON, too
large, of another version) is treated as empty: that delays a removal, never hastens
it, and the save replaces it. Anything else at its path (a directory, a FIFO, a
socket, a symlink, another user's file) or a file that cannot be read is refused
(HostProblem: exit 3) as the lock refuses one, when gc plans: before it changes
anything, dry run or not (it was a warning for some, exit 3 for others, and a
directory there failed every save after the removal).

Written atomically (a new file renamed over the old one), 0600 in the 0700 run
directory, never through a symlink: the same care as `lock.py`.
"""

from __future__ import annotations

import json
import os
import stat
import time
from dataclasses import dataclass, field
from typing import Collection, Dict, List, Mapping, NamedTuple, Optional, Set, Tuple

from portmapctl.errors import HostProblem
from portmapctl.host.files import write_atomically
from portmapctl.host.lock import open_own, safe_run_dir

STATE_FILE = "gc-state.json"
VERSION = 1
MAX_STATE_BYTES = 16 * 1024 * 1024
# A namespace's part nobody has updated for this long belongs to a namespace that is
# gone (keyed by inode where the kernel gives no cookie, and inodes are reused, so it
# must not linger).
FORGET_NAMESPACE_SECONDS = 24 * 3600.0


# The chain field of an nftables container's rules (they have no chain of their own).
NFT_PREFIX = "nft:"


class ChainKey(NamedTuple):
    """What a sighting is of: an iptables chain of one family, or (chain
    `nft:<container ID>`) a container's rules in that family's nftables table."""

    family: int
    chain: str

    @property
    def nft(self) -> bool:
        return self.chain.startswith(NFT_PREFIX)

    def text(self) -> str:
        """The key as the file spells it."""
        if self.nft:
            return f"nft{self.family} {self.chain[len(NFT_PREFIX) :]}"
        return f"{self.family} {self.chain}"

    @classmethod
    def parse(cls, text: str) -> Optional[ChainKey]:
        """The key of `text` as written by `text()` (or 0.2); None if it is not one."""
        family, _, name = text.partition(" ")
        nft = family.startswith("nft")
        family = family[3:] if nft else family
        if family not in ("4", "6") or not name:
            return None
        return cls(int(family), NFT_PREFIX + name if nft else name)


@dataclass(frozen=True)
class Seen:
    """A chain seen not live: its fingerprint then, and since when (boot-time seconds)."""

    fingerprint: str
    first_seen: float


def clock() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


# SO_NETNS_COOKIE (Linux 5.14): a number the kernel gives each network namespace it
# makes, never again in the same boot. Python's socket module does not name it (3.11);
# 71 (asm-generic, alpha, mips) unless the kernel's arch/*/include/uapi/asm/socket.h
# says otherwise.
_NETNS_COOKIE = {"parisc": 0x4045, "parisc64": 0x4045, "sparc": 0x0050, "sparc64": 0x0050}


def namespace_key(label: Optional[str] = None) -> str:
    """The current network namespace, as the state file keys its part.

    Its cookie where the kernel gives one: `--netns foo`, `/run/netns/foo`,
    `/var/run/netns/foo`, a bind mount of it and /proc/PID/ns/net are one namespace,
    one clock (keyed by the spelling, a cron job and an operator each had theirs, and a
    sighting kept under one outlived a removal made under another). Not its inode
    alone: nsfs inodes are reused at once, and a namespace made again (a node's
    namespace recreated, its containers added again under their IDs) took over the
    old one's sightings and lost the chains at once, during their ADD. A cookie is
    never reused in a boot (and the file goes with the boot ID). Without one (a
    kernel before 5.14): `--netns` as given and the inode, as before: a delay where
    spellings differ, and that takeover, where a namespace made again at the same
    path gets the old one's inode within a day of the old one's last run (its part is
    dropped then; docs/guarantees.md)."""
    cookie = _netns_cookie()
    if cookie is not None:
        return f"netns-cookie:{cookie}"
    try:
        info = os.stat("/proc/self/ns/net")
        identity = f"{info.st_dev}:{info.st_ino}"
    except OSError:
        identity = "?"
    return f"{label or ''}@{identity}"


def _netns_cookie() -> Optional[int]:
    import socket
    import sys

    option = getattr(socket, "SO_NETNS_COOKIE", None)
    if option is None:
        option = _NETNS_COOKIE.get(os.uname().machine, 71)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            raw = sock.getsockopt(socket.SOL_SOCKET, option, 8)
    except OSError:  # (ENOPROTOOPT: an older kernel; a sandbox without sockets)
        return None
    cookie = int.from_bytes(raw, sys.byteorder) if len(raw) == 8 else 0
    return cookie or None


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _path(state_dir: str) -> str:
    return os.path.join(state_dir, STATE_FILE)


def _read_document(state_dir: str) -> Tuple[dict, List[str]]:
    """The whole file as a dict ({} when absent or its content unusable), with
    warnings; HostProblem when something else is there or it cannot be read."""
    path = _path(state_dir)
    try:
        fd = open_own(path, os.O_RDONLY, "gc's state file")
    except FileNotFoundError:
        return {}, []
    try:
        data = os.read(fd, MAX_STATE_BYTES + 1)
    except OSError as err:
        raise HostProblem(f"cannot read gc's state file {path}: {err.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_STATE_BYTES:
        return {}, [f"{path} is larger than {MAX_STATE_BYTES // 2**20} MiB: starting afresh"]
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return {}, [f"{path} is not valid JSON: starting afresh"]
    if not isinstance(document, dict) or not isinstance(document.get("namespaces"), dict):
        return {}, [f"{path} is not gc's state: starting afresh"]
    if document.get("version") != VERSION:
        # (Another portmapctl's on this node: each would wipe the other's sightings.)
        version = str(document.get("version"))[:20]
        return {}, [f"{path} is of version {version}, not {VERSION}: starting afresh"]
    if document.get("boot_id") != _boot_id():
        return {}, []  # (/run outlived a reboot: no sighting survives one, no news)
    return document, []


def load(state_dir: str, namespace: str) -> Tuple[Dict[ChainKey, Seen], List[str]]:
    """The chains seen in this namespace, and warnings about the file."""
    document, warnings = _read_document(state_dir)
    return _sightings(document, namespace), warnings


def _sightings(document: dict, namespace: str) -> Dict[ChainKey, Seen]:
    part = document.get("namespaces", {}).get(namespace)
    chains = part.get("chains") if isinstance(part, dict) else None
    if not isinstance(chains, dict):
        return {}
    now = clock()
    found: Dict[ChainKey, Seen] = {}
    for text, value in chains.items():
        key = ChainKey.parse(text) if isinstance(text, str) else None
        if key is None or not isinstance(value, dict):
            continue
        fingerprint, first_seen = value.get("fingerprint"), value.get("first_seen")
        if (
            isinstance(fingerprint, str)
            and isinstance(first_seen, (int, float))
            and not isinstance(first_seen, bool)
            and 0 <= first_seen <= now  # a time from the future is not to be trusted
        ):
            found[key] = Seen(fingerprint, float(first_seen))
    return found


def save(
    state_dir: str,
    namespace: str,
    chains: Mapping[ChainKey, Seen],
    since: Optional[Mapping[ChainKey, Seen]] = None,
) -> None:
    """Replace this namespace's part of the file; drop parts nobody updates any more.

    `since`: what this run loaded, for a run that did not hold the lock from its
    load to this save (a dry run, gc's preview, the gc confirmed after it; under the
    lock throughout, it changes nothing). Another gc may have saved in
    between, so only this run's own changes go onto the part as it is now
    (`merged`); the caller holds the lock for this call."""
    safe_run_dir(state_dir)
    document, unusable = _read_document(state_dir)
    if since is not None:
        chains = merged(_sightings(document, namespace), since, chains)
    now = clock()
    namespaces = {
        key: part
        for key, part in document.get("namespaces", {}).items()
        if isinstance(part, dict)
        and isinstance(part.get("updated"), (int, float))
        and now - FORGET_NAMESPACE_SECONDS <= part["updated"] <= now
        and key != namespace
    }
    if chains:
        namespaces[namespace] = {
            "updated": now,
            "chains": {
                key.text(): {"fingerprint": seen.fingerprint, "first_seen": seen.first_seen}
                for key, seen in sorted(chains.items(), key=lambda item: item[0].text())
            },
        }
    if not unusable and namespaces == document.get("namespaces", {}):
        # Nothing pending here, none before, no part dropped: the file would say what
        # it says (an absent one, nothing). Not writing keeps a full run directory
        # from failing a gc that has nothing to remember (a bad file is replaced).
        return
    _write(state_dir, _boot_id(), namespaces)


def forget(state_dir: str, namespace: str, keys: Collection[ChainKey]) -> None:
    """Drop the sightings of `keys` from this namespace's part of the file: the chains
    a transaction is about to remove, before it goes in (the caller holds the lock).

    The run's save comes only after the removal, and nothing runs on the way out of a
    SIGKILL (the OOM killer): kept on file, the removed chain's old sighting let the
    same container started again under its ID (podman restart), seen by the next gc
    during its ADD before libcni wrote its cache entry, pass --min-age at once. Forgotten
    first, a removal that then may have gone in only makes the chain wait --min-age
    again: a delay, never a hastened removal (one refused, nothing changed, has its
    sightings written back by the run's save: apply.py `unremoved`). One write for the
    run's removal (not per chain); none when no key is on file. A file it cannot replace (a full /run) is
    removed, as by save (forget_all: every chain waits again), and HostProblem raised."""
    if not keys:
        return
    document, _unusable = _read_document(state_dir)
    part = document.get("namespaces", {}).get(namespace)
    chains = part.get("chains") if isinstance(part, dict) else None
    if not isinstance(chains, dict):
        return
    left = {
        text: value
        for text, value in chains.items()
        if not (isinstance(text, str) and ChainKey.parse(text) in keys)
    }
    if len(left) == len(chains):
        return
    namespaces = dict(document["namespaces"])
    if left:
        namespaces[namespace] = {**part, "chains": left}
    else:
        del namespaces[namespace]
    _write(state_dir, document["boot_id"], namespaces)


def _write(state_dir: str, boot_id: object, namespaces: Mapping[str, object]) -> None:
    """The file as `namespaces` (save's and forget's one write): a file it cannot
    replace (a full /run) is removed (forget_all: every chain waits --min-age again),
    and HostProblem raised."""
    text = json.dumps(
        {"version": VERSION, "boot_id": boot_id, "namespaces": namespaces},
        separators=(",", ":"),
    )
    try:
        write_atomically(_path(state_dir), text.encode())
    except HostProblem:
        forget_all(state_dir)
        raise


@dataclass(frozen=True)
class Forgetting:
    """A run's `forget` calls: each sighting loaded (`on_file`) leaves the file once,
    in one write per call; a write that failed (the file then removed) is kept in
    `errors` for the run to end on, as a failed save ends it (exit 3), since the save
    after it may have nothing left to write."""

    state_dir: str
    namespace: str
    on_file: Set[ChainKey]
    errors: List[str] = field(default_factory=list)

    def __call__(self, keys: Collection[ChainKey]) -> None:
        dropping = self.on_file.intersection(keys)
        if not dropping:
            return
        self.on_file.difference_update(dropping)
        try:
            forget(self.state_dir, self.namespace, dropping)
        except HostProblem as err:
            self.errors.append(str(err))


def forget_all(state_dir: str) -> None:
    """Remove the state file after a save that could not replace it (a full /run), or
    that a removal stopped on its way (SIGTERM, Ctrl-C) never came to: the file still
    holds what the run meant to forget, the sightings of chains it removed, or that
    became live or changed. Kept, such a sighting let the chain's next
    not-live moment pass --min-age at once: a container started again under its ID
    with the same rules, seen during its ADD before libcni wrote its cache entry, lost
    its chain (the min-age rule exists for that moment). Without the file every chain
    waits --min-age again: a delay, never a hastened removal. Best effort (a removal
    needs no room); only our own regular file is removed."""
    path = _path(state_dir)
    try:
        info = os.lstat(path)
        if stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid():
            os.unlink(path)
    except OSError:
        pass


def merged(
    current: Mapping[ChainKey, Seen],
    loaded: Mapping[ChainKey, Seen],
    ours: Mapping[ChainKey, Seen],
) -> Dict[ChainKey, Seen]:
    """The sightings on file (`current`) with the changes of a run that loaded
    `loaded` and ends with `ours`. What this run forgot is forgotten; what it left
    as it was stays as the other run left it (forgotten too if that run forgot it:
    written back, an old first sighting would let --min-age pass for a container
    being added again under the same chain); of two sightings of one chain the later
    one is kept. Each rule can only delay a removal, never hasten one."""
    result = dict(current)
    for key in loaded.keys() - ours.keys():
        result.pop(key, None)
    for key, seen in ours.items():
        if loaded.get(key) == seen:
            continue
        other = result.get(key)
        if other is None or other.first_seen <= seen.first_seen:
            result[key] = seen
    return result
