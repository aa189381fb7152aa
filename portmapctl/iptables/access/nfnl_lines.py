"""`iptables -S CHAIN` on iptables-nft without running iptables, for a chain whose every
rule this iptables has printed before: /run/portmapctl/iptables-lines.v4.json (v6).

add's foreign-rule warning lists PREROUTING and the chains its benign jumps reach
(ops/add_ahead.listed_foreign_takers), a process each: a fork, an exec, libnftnl and
libxtables loaded, and iptables-nft fetching the table's whole chain list (it grows
with the node). How iptables prints a rule is a function of the rule as the kernel
holds it and of the iptables build, so the memo keeps each line iptables printed,
keyed by what the kernel dumped for that rule: its expressions (counters zeroed,
nfnl_rules.comparable: -S prints none) and userdata (iptables-nft's comments), the
chain's name and the family; never its handle or position. A chain's first line (`-P
CHAIN POLICY` of a base chain, `-N CHAIN`) is keyed by the chain's attributes but its
handle, use count and counters.

Listing a chain: at one settled generation (nfgen.settled_at) the chain is asked for
and dumped; when the generation is still the same after the dump and every key is in
the memo, the text is built from it. Otherwise `iptables -S CHAIN` runs as before,
and when the generation is still the one dumped at afterwards (nothing committed
between the dump and the listing) and the text is exactly the first line and one `-A`
line per dumped rule, each line is remembered. A chain that does not exist, a torn
dump, anything netlink cannot answer: iptables is run, nothing learned.

The memo holds for one iptables build: it is stored with the identity of the binary
listing runs (real path, device, inode, size, modification and change times) and of
what iptables-nft prints through (the xtables extension directories, libxtables and
libnftnl beside them, /etc/protocols, XTABLES_LIBDIR); any other identity
makes it as none. Bounded (MAX_LINES, least recently used dropped when a run learns);
written only when a run learned something. A memo that cannot be trusted is as none
(host/tool_memo.read_document); nothing here is ever an error of add.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from typing import Callable, Dict, List, Optional, Tuple

from portmapctl.host import paths, tool_memo
from portmapctl.iptables.access import nfgen, nfmsg, nfnl_rules
from portmapctl.iptables.access.nfmsg import Changed

VERSION = 1
# Lines kept per family: a Docker node's PREROUTING and DOCKER chains, kube-proxy's
# KUBE-NODEPORTS. A chain longer than this is listed by iptables and not learned
# (learning it would push itself out).
MAX_LINES = 400
_MAX_BYTES = 1 << 20
_TABLE = "nat"
# NFTA_CHAIN_HANDLE, _USE, _COUNTERS, _PAD: move without changing what -S prints.
_CHAIN_IGNORED = frozenset((2, 6, 8, 9))
# NFTA_RULE_TABLE, _CHAIN (in the key by name), _HANDLE, _POSITION, _PAD, _ID,
# _POSITION_ID, _CHAIN_ID; EXPRESSIONS is taken with its counters zeroed.
_RULE_IGNORED = frozenset((1, 2, 3, 6, 8, 9, 10, 11))
_LIBRARIES = ("libxtables.so.12", "libnftnl.so.11")
_IDENTITIES: Dict[str, Optional[List[object]]] = {}


def file_name(family: int) -> str:
    return f"iptables-lines.v{family}.json"


def identity(binary: str) -> Optional[List[object]]:
    """What the text of `binary -S` depends on besides the rules (None: the binary
    cannot be looked at: no memo)."""
    tool = tool_memo.identity(binary)
    if tool is None:
        return None
    found: List[object] = [tool]
    for env in ("XTABLES_LIBDIR", "IPTABLES_LIB_DIR"):
        found.append(os.environ.get(env))
    seen = set()
    for folder in _extension_dirs():
        try:
            info = os.stat(folder)
        except OSError:
            continue
        if (info.st_dev, info.st_ino) in seen:
            continue  # (/lib and /usr/lib, merged)
        seen.add((info.st_dev, info.st_ino))
        # Installers replace an extension by a new file (dpkg and rpm rename one over
        # it, install(1) unlinks first): the directory's times move with it.
        found.append([folder, info.st_dev, info.st_ino, info.st_mtime_ns, info.st_ctime_ns])
        parent = os.path.dirname(folder)
        found.append([tool_memo.identity(os.path.join(parent, lib)) for lib in _LIBRARIES])
    found.append(tool_memo.identity("/etc/protocols"))
    return found


def _extension_dirs() -> List[str]:
    """Where libxtables may load extensions from: XTABLES_LIBDIR (IPTABLES_LIB_DIR, its
    old name) when set, and the directories distributions build it with."""
    named = os.environ.get("XTABLES_LIBDIR") or os.environ.get("IPTABLES_LIB_DIR")
    dirs = named.split(":") if named else []
    arch = getattr(sys.implementation, "_multiarch", None)
    lib_dirs = ["/usr/lib64", "/lib64", "/usr/lib", "/lib", "/usr/local/lib"]
    if arch:
        lib_dirs[:0] = [f"/usr/lib/{arch}", f"/lib/{arch}"]
    return [*dirs, *(f"{d}/xtables" for d in lib_dirs), "/usr/libexec/xtables"]


class Memo:
    """One family's lines, for one identity."""

    def __init__(self, family: int, key: Optional[List[object]], run_dir: Optional[str] = None):
        self.family = family
        self._key = key
        self._run_dir = run_dir or paths.RUN_DIR
        self._lines: Dict[str, str] = {}
        self._used: Dict[str, None] = {}  # used or learned by this run, in order
        self._learned = False
        if key is None:
            return
        document = tool_memo.read_document(self._run_dir, file_name(family), VERSION, _MAX_BYTES)
        lines = document.get("lines")
        if document.get("identity") != key or not isinstance(lines, list):
            return
        for pair in lines:
            if (
                isinstance(pair, list)
                and len(pair) == 2
                and isinstance(pair[0], str)
                and isinstance(pair[1], str)
            ):
                self._lines[pair[0]] = pair[1]

    def text(self, keys: List[str]) -> Optional[str]:
        """The listing made of the lines of `keys`, when all are known."""
        lines = []
        for key in keys:
            line = self._lines.get(key)
            if line is None:
                return None
            lines.append(line)
        for key in keys:
            self._used[key] = None
        return "".join(line + "\n" for line in lines)

    def learn(self, chain: str, keys: List[str], text: str) -> bool:
        """Remember the lines of `text` (iptables' listing of `chain`, dumped as `keys`:
        the chain's, then its rules') when it is exactly one line per key."""
        if self._key is None or len(keys) > MAX_LINES or not text.endswith("\n"):
            return False
        lines = text[:-1].split("\n")
        if len(lines) != len(keys) or not _first_line(lines[0], chain):
            return False
        if not all(line.startswith(f"-A {chain} ") for line in lines[1:]):
            return False
        clashing = [k for k, line in zip(keys, lines) if self._lines.get(k) not in (None, line)]
        if clashing:  # (the same bytes printed two ways: trust neither, keep neither)
            for key in clashing:
                del self._lines[key]
                self._used.pop(key, None)
            self._learned = True
            return False
        for key, line in zip(keys, lines):
            self._lines[key] = line
            self._used[key] = None
        self._learned = True
        return True

    def save(self) -> None:
        """Write the memo if this run learned a line: the lines used or learned by
        this run last, the least recently used dropped beyond MAX_LINES."""
        if not self._learned or self._key is None:
            return
        order = [k for k in self._lines if k not in self._used] + list(self._used)
        kept = [[k, self._lines[k]] for k in order if k in self._lines][-MAX_LINES:]
        tool_memo.write_document(
            self._run_dir,
            file_name(self.family),
            {"version": VERSION, "identity": self._key, "lines": kept},
        )


def _first_line(line: str, chain: str) -> bool:
    return line == f"-N {chain}" or line.startswith(f"-P {chain} ")


class Lister:
    """`list_chain(family, chain)` of a RestoreBackend on iptables-nft, answered from
    the memo where it can be. Make it in the network namespace to list; close() it."""

    def __init__(
        self,
        family: int,
        binary: str,
        list_chain: Callable[[int, str], Optional[str]],
        run_dir: Optional[str] = None,
    ) -> None:
        self.family = family
        self._list_chain = list_chain
        if binary not in _IDENTITIES:  # (both families' iptables: one binary, looked at once)
            _IDENTITIES[binary] = identity(binary)
        self.memo = Memo(family, _IDENTITIES[binary], run_dir)
        self._sock: Optional[socket.socket] = None
        self.ran = 0  # iptables listings run (tests, -v)

    def list_chain(self, family: int, chain: str) -> Optional[str]:
        assert family == self.family
        try:
            dumped = self._dump(chain)
        except (OSError, Changed):
            dumped = None
            self._drop_socket()  # (a dump cut short may leave replies behind)
        if dumped is not None:
            text = self.memo.text(dumped[1])
            if text is not None:
                return text
        self.ran += 1
        text = self._list_chain(family, chain)
        if dumped is not None and text is not None:
            try:
                still = nfgen.ask(self._socket(), 7) == dumped[0]
            except OSError:
                still = False
            if still:
                self.memo.learn(chain, dumped[1], text)
        return text

    def _socket(self) -> socket.socket:
        if self._sock is None:
            self._sock = nfgen.open_socket()
        return self._sock

    def _dump(self, chain: str) -> Optional[Tuple[int, List[str]]]:
        """The generation and the keys of the chain and its rules, read at it; None
        when the chain does not exist or the generation moved."""
        sock = self._socket()
        at = nfgen.ask(sock, 1)
        if not nfgen.settled_at(sock, at, 2):
            return None
        head = nfmsg.chain_attributes(sock, self.family, _TABLE, chain)
        if head is None:
            return None
        try:
            rules = nfmsg.dump_chain(sock, self.family, _TABLE, chain)
        except OSError as err:
            if err.errno == errno.ENOENT:
                return None
            raise
        if nfgen.ask(sock, 5) != at:
            return None
        if len({rule.handle() for rule in rules}) != len(rules):
            return None  # (a rule shown twice: torn, as nfnl.py says)
        keys = [_chain_key(self.family, chain, head)]
        for rule in rules:
            key = _rule_key(self.family, chain, rule)
            if key is None:
                return None
            keys.append(key)
        return at, keys

    def _drop_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def close(self) -> None:
        """Save what was learned; close the socket."""
        self._drop_socket()
        self.memo.save()


def _digest(parts: List[bytes]) -> str:
    try:
        from _sha512 import sha512  # (as chains.py: no OpenSSL load)
    except ImportError:  # pragma: no cover
        from hashlib import sha512
    digest = sha512()
    for part in parts:
        digest.update(len(part).to_bytes(4, "big") + part)
    return digest.hexdigest()[:48]


def _chain_key(family: int, chain: str, attributes: Dict[int, bytes]) -> str:
    parts = [b"chain", bytes([family]), chain.encode("utf-8", "surrogateescape")]
    for kind in sorted(attributes):
        if kind not in _CHAIN_IGNORED:
            parts.append(kind.to_bytes(2, "big") + attributes[kind])
    return _digest(parts)


# Expressions whose meaning lies outside the rule (a set's elements, a named object):
# the same bytes may print differently, so such a rule is never taken from the memo.
# (iptables-nft 1.8.9 writes none of them in an ip or ip6 table.) Each as its
# NFTA_EXPR_NAME attribute: length 11, type 1, the name.
_OUTSIDE = tuple(b"\x0b\x00\x01\x00" + name + b"\x00" for name in (b"lookup", b"dynset", b"objref"))


def _rule_key(family: int, chain: str, rule: nfmsg.DumpedRule) -> Optional[str]:
    parts = [b"rule", bytes([family]), chain.encode("utf-8", "surrogateescape")]
    found = rule.attributes()
    for kind in sorted(found):
        if kind in _RULE_IGNORED:
            continue
        span = found[kind]
        if kind == nfmsg.RULE_EXPRESSIONS:
            payload = nfnl_rules.comparable(rule.buf, span)
            if any(name in payload for name in _OUTSIDE):
                return None
        else:
            payload = rule.buf[span[0] : span[1]]
        parts.append(kind.to_bytes(2, "big") + payload)
    return _digest(parts)
