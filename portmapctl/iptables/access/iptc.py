"""python-iptables (libiptc), no iptables processes: `--iptables iptc`, legacy only.

libiptc reads and writes the legacy (x_tables) tables and nothing else. On a host
whose `iptables` is nf_tables it would find an empty nat table and "repair" into the
wrong tables, so `open_backend` refuses it there and `auto` never picks it.

Reading does in process what `iptables-legacy-save -t nat` does: walk libiptc's
entries, print the generic part (-s -d -i -o -p -f) the way iptables-save's
print_rule4/print_rule6 do, and let every match and target print its options with
its own xtables `save()` -- the very code iptables-save runs. The text is then read by
`ruleset.parse_save` like any dump, so rules come out in exactly the saved normal
form, foreign ones included (tests compare it byte for byte with iptables-legacy-save).

Writing builds each rule of a transaction (saved form) into a libiptc entry with
python-iptables' Rule/Match/Target, runs all of the transaction's ops on one table
handle with autocommit off, and commits once: libiptc replaces the whole table in one
setsockopt, so it is all or nothing: on any failure the handle is dropped uncommitted
(and a failed `-D` is how a table that changed under us shows, as with
iptables-restore). Like iptables-legacy-restore -w, it holds the xtables lock from
reading the table to the commit, so it serialises with the plugin's iptables runs.

Each read and each transaction is one libiptc session in a fork of this process (no
exec, a few ms; see `_in_child` for why).

python-iptables (1.2.0, with libxtables 1.8.9) quirks this module works around:
- libxtables registers a family-specific target (DNAT, MASQUERADE, SNAT, REDIRECT)
  for the first address family that loads its library, so in one process DNAT works
  for IPv4 or for IPv6, never both; python-iptables' attempt to register it again
  can end the process with exit(1) ("target ... already registered"). And
  `iptc.Table("nat")` is a process-wide singleton whose libiptc handle (and socket)
  belongs to the namespace it was opened in. So every session (one family: one read,
  or one transaction) runs in a fork of this process, which itself never loads an
  extension or opens a table: each starts clean, in the current (`--netns`)
  namespace, and a crash in C ends the child, not the command, with nothing
  committed.
- Its Rule objects cost about 100 us a rule (every attribute set calls dir()), most
  of the "40 times slower than iptables-legacy-save" in FACTS: reading unpacks the
  raw entries and calls the extensions' save() directly, with C's stdout pointed at
  a memfd once per read (python-iptables makes a pipe per match).
- `get_all_parameters()` re-parses save() output with shlex, which keeps the
  backslash of iptables' `\\'`; `Rule.final_check()` makes the same round trip
  before a write, so a comment with a `'` would be written with a backslash.
  Matches and targets get their extension's own final check instead.
- `Rule6` interface masks are 0x01 bytes, not 0xff (the kernel would compare one bit
  of each character, and a `-D` would not find ip6tables' rule); `Rule6.src` keeps
  the host bits; `Rule6.protocol = "!tcp"` clears IP6T_F_PROTO, which ip6tables
  always sets. Addresses, interfaces and that flag are written here directly.
- `Target(rule, name)` for a name outside its hard-coded list opens every table
  (creating the legacy filter, mangle, raw and security tables): jumps to chains
  are built as standard targets directly.
- libiptc messages come as bytes (`b'Bad rule ...'`) in its exceptions.
- `import iptc` takes 0.25-0.4 s (0.15 s of it is setuptools' distutils shim, for
  one get_python_lib(); it also runs `ldconfig -N -v` and `modprobe ip_tables`): it
  happens only when this backend is opened.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import socket
import struct
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from portmapctl.errors import ApplyFailed, BadInput, HostProblem, PortmapctlError
from portmapctl.host.lock import flock_within
from portmapctl.iptables.access import NEW_NAT_TABLE, legacy_read_skipped
from portmapctl.iptables.access.restore import lock_wait_seconds
from portmapctl.iptables.ruleset import Args, NatTable, format_rule, parse_save
from portmapctl.iptables.spelling import XTABLES_PROTOCOLS, Option, protocol_number
from portmapctl.iptables.transaction import Op, OpKind, Transaction

XT_LOCK_NAME = "/run/xtables.lock"  # iptables' own lock (XTABLES_LOCKFILE overrides it)
VERDICTS = ("ACCEPT", "DROP", "QUEUE", "RETURN")
_BYTES_REPR = re.compile(r"""\bb(['"])(.*?)\1""")
XTF_TRY_LOAD = 2
XTTYPE_NONE = 0
# Names iptables uses for protocols /etc/protocols does not know (xtables_chain_protos).


@dataclass(frozen=True)
class FamilyLayout:
    """Where one family's ipt_entry/ip6t_entry keeps the generic fields, and its flags."""

    family: int
    ip_field: str
    f_frag: int
    f_goto: int
    f_proto: int
    f_tos: int
    inv_via_in: int = 0x01
    inv_via_out: int = 0x02
    inv_tos: int = 0x04
    inv_srcip: int = 0x08
    inv_dstip: int = 0x10
    inv_frag: int = 0x20
    inv_proto: int = 0x40


LAYOUTS = {
    4: FamilyLayout(4, "ip", f_frag=0x01, f_goto=0x02, f_proto=0, f_tos=0),
    6: FamilyLayout(6, "ipv6", f_frag=0, f_goto=0x04, f_proto=0x01, f_tos=0x02),
}


# --- pure helpers: the generic part of a rule, as iptables-save prints it ----------------


def address_text(letter: str, address: bytes, mask: bytes, inverted: bool) -> str:
    """` [!] -s ADDR/LEN` (or `/MASK` for a mask that is not a prefix), or nothing.

    iptables prints nothing for an IPv4 match-all (0.0.0.0 with mask 0) and for any
    IPv6 mask of length 0; a negated one is printed all the same.
    """
    bits = len(mask) * 8
    value = int.from_bytes(mask, "big")
    length = bin(value).count("1")
    prefix = value == ((1 << bits) - 1) ^ ((1 << (bits - length)) - 1)
    if not inverted:
        if bits == 32 and value == 0 and not any(address):
            return ""
        if bits == 128 and value == 0:
            return ""
    family = socket.AF_INET if bits == 32 else socket.AF_INET6
    text = socket.inet_ntop(family, address)
    suffix = str(length) if prefix else socket.inet_ntop(family, mask)
    return f"{' !' if inverted else ''} -{letter} {text}/{suffix}"


def interface_text(letter: str, name: bytes, mask: bytes, inverted: bool) -> str:
    """` [!] -i NAME` with a `+` for a wildcard, as iptables' save_iface prints it."""
    name = name.ljust(16, b"\0")
    mask = mask.ljust(16, b"\0")
    if mask[0] == 0:
        return ""
    out = []
    for i in range(16):
        if mask[i]:
            if name[i]:
                out.append(chr(name[i]))
        else:
            if name[i - 1]:
                out.append("+")
            break
    return f"{' !' if inverted else ''} -{letter} {''.join(out)}"


class MatchPart(NamedTuple):
    """`-m NAME` and its options."""

    name: str
    options: Tuple[Option, ...]


class TargetPart(NamedTuple):
    """`-j NAME` (or `-g NAME`) and its options."""

    jump: str  # -j or -g
    name: str
    options: Tuple[Option, ...]


@dataclass(frozen=True)
class RuleParts:
    """A rule in saved form, split the way it is built: generic options (`-s`, `-d`,
    `-i`, `-o`, `-p`, `-f`), matches, and the target (None for a rule without one)."""

    generic: Tuple[Option, ...]
    matches: Tuple[MatchPart, ...]
    target: Optional[TargetPart]


def split_rule(args: Sequence[str], takes_value) -> RuleParts:
    """Group a rule's words (as the lexer split them) into RuleParts.

    `takes_value(module, option)` says whether an extension's option takes a value
    (True), none (False), or is unknown (None); only the extensions know, since a
    value may itself start with a dash (a comment, say).
    """
    generic: List[Option] = []
    match_names: List[str] = []
    match_options: List[List[Option]] = []
    target: Optional[Tuple[str, str]] = None  # (-j or -g, name)
    target_options: List[Option] = []
    owner: Optional[Tuple[str, str, List[Option]]] = None  # (kind, module, its options)
    negate = False
    i = 0
    while i < len(args):
        token = args[i]
        if token == "!":
            if negate:
                raise ValueError("'!' twice")
            negate = True
            i += 1
            continue
        if token in ("-s", "-d", "-i", "-o", "-p"):
            if owner is not None:
                raise ValueError(f"{token} after a match or target")
            generic.append(Option(negate, token, (_value(args, i),)))
            i += 2
        elif token == "-f":
            generic.append(Option(negate, token, ()))
            i += 1
        elif token == "-m":
            if negate or target is not None:
                raise ValueError("misplaced -m")
            match_names.append(_value(args, i))
            match_options.append([])
            owner = ("match", match_names[-1], match_options[-1])
            i += 2
        elif token in ("-j", "-g"):
            if negate or target is not None:
                raise ValueError(f"misplaced {token}")
            target = (token, _value(args, i))
            owner = ("target", target[1], target_options)
            i += 2
        elif token.startswith("--") and owner is not None:
            kind, module, options = owner
            wants = takes_value(kind, module, token[2:])
            if wants is None:
                raise ValueError(f"{kind} {module} has no option {token}")
            values: List[str] = []
            j = i + 1
            if wants and j < len(args):
                values.append(args[j])
                j += 1
                # Some options take more than one value (--tcp-flags MASK COMP).
                while j < len(args) and args[j] != "!" and not args[j].startswith("-"):
                    values.append(args[j])
                    j += 1
            elif wants:
                raise ValueError(f"option {token} needs a value")
            options.append(Option(negate, token, tuple(values)))
            i = j
        else:
            raise ValueError(f"unexpected {token!r}")
        negate = False
    if negate:
        raise ValueError("'!' at the end")
    return RuleParts(
        tuple(generic),
        tuple(MatchPart(n, tuple(o)) for n, o in zip(match_names, match_options)),
        None if target is None else TargetPart(*target, tuple(target_options)),
    )


def _value(args: Sequence[str], i: int) -> str:
    if i + 1 >= len(args):
        raise ValueError(f"{args[i]} needs a value")
    return args[i + 1]


# --- python-iptables, loaded on demand ---------------------------------------------------


@dataclass(frozen=True)
class _Lib:
    """python-iptables' modules and the few libc/libxtables calls used next to them."""

    iptc: Any
    ip4tc: Any
    ip6tc: Any
    xtables: Any
    libc: Any
    libxtables: Any


def _load() -> _Lib:
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
    return _Lib(iptc, ip4tc, ip6tc, xtables, libc, libxtables)


class IptcBackend:
    """The backend; every libiptc session runs in a forked child (see `_in_child`)."""

    name = "iptc"
    writable = True

    def __init__(self, lock_wait: Optional[float] = None) -> None:
        self._lib = _load()
        # The wait iptables-legacy-restore -w is given (PORTMAPCTL_XTABLES_WAIT, or 10 s):
        # the lock is the same, and so is the operator's setting for it.
        self.lock_wait = lock_wait_seconds() if lock_wait is None else lock_wait

    def read(self, family: int) -> NatTable:
        if legacy_read_skipped(family):
            # libiptc would create the table it opens: a read changes nothing.
            return parse_save(NEW_NAT_TABLE, family, source="python-iptables")
        return parse_save(self.save_text(family), family, source="python-iptables")

    def save_text(self, family: int) -> str:
        """The nat table as `iptables-legacy-save -t nat` prints it, minus `#` lines."""
        text = _in_child(self._lib, lambda: _Session(self._lib, family).save_text(), HostProblem)
        assert isinstance(text, str)
        return text

    def apply(self, txn: Transaction) -> None:
        if not txn.ops:
            return
        # Held by this process while the child reads, changes and commits the table.
        with xtables_lock(self.lock_wait):
            _in_child(self._lib, lambda: _Session(self._lib, txn.family).apply(txn), ApplyFailed)


def _in_child(lib: _Lib, work: Callable[[], Optional[str]], failure: type) -> Optional[str]:
    """Run one libiptc session in a forked child and hand back its result or error.

    Why a child: libxtables 1.8.9 registers a target extension for one address
    family per process (the first that loads it: DNAT/MASQUERADE work for IPv4 or
    IPv6, never both), and python-iptables keeps table handles, loaded extensions and
    their flags in process-wide caches. A fresh fork per session (a few ms) starts
    from the clean state this process keeps (it never opens a table itself), in the
    network namespace this process is in now. A C-level exit() in libxtables
    (python-iptables can trigger "already registered") ends the child, not the
    command; a child that dies before its commit has changed nothing.

    Errors come back as the PortmapctlError the child raised, anything else as
    `failure` (HostProblem for a read, ApplyFailed for a transaction).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    lib.libc.fflush(None)  # or the child would print C's pending output again
    errors = os.memfd_create("portmapctl-iptc-stderr", os.MFD_CLOEXEC)
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        status = 1
        try:
            os.close(reader)
            os.dup2(errors, 2)  # C libraries' complaints, for the parent's message
            try:
                reply: Dict[str, Any] = {"result": work()}
            except PortmapctlError as err:
                reply = {"error": type(err).__name__, "message": str(err)}
            except BaseException as err:  # noqa: BLE001 - reported to the parent
                reply = {"error": "", "message": f"{type(err).__name__}: {_clean(err)}"}
            data = json.dumps(reply).encode()
            view = memoryview(data)
            while view:
                view = view[os.write(writer, view) :]
            status = 0
        finally:
            os._exit(status)
    os.close(writer)
    chunks = []
    try:
        while True:
            chunk = os.read(reader, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(reader)
        _, status = os.waitpid(pid, 0)
    stderr = os.pread(errors, 4096, 0).decode(errors="replace")
    os.close(errors)
    if not chunks or os.waitstatus_to_exitcode(status) != 0:
        said = next((line.strip() for line in stderr.splitlines() if line.strip()), "")
        raise failure(
            "python-iptables died (exit status"
            f" {os.waitstatus_to_exitcode(status)}{': ' + said if said else ''}):"
            " nothing was committed; use --iptables legacy"
        )
    reply = json.loads(b"".join(chunks))
    if "error" in reply:
        known = {"HostProblem": HostProblem, "BadInput": BadInput, "ApplyFailed": ApplyFailed}
        raise known.get(reply["error"], failure)(reply["message"])
    return reply["result"]


class _ProtoEnt(ctypes.Structure):
    _fields_ = [
        ("p_name", ctypes.c_char_p),
        ("p_aliases", ctypes.c_void_p),
        ("p_proto", ctypes.c_int),
    ]


# xt_entry_match / xt_entry_target: u16 size, char name[29], u8 revision.
_EXTENSION_HEADER = struct.Struct("=H29sB")


@dataclass(frozen=True)
class _EntryLayout:
    """Byte offsets in ipt_entry / ip6t_entry, taken from python-iptables' structs."""

    entry_size: int
    ip_size: int
    offsets_at: int  # where target_offset and next_offset are
    tail_at: int  # where proto, [tos,] flags, invflags are
    tail: struct.Struct
    flags_at: int

    @staticmethod
    def of(lib: _Lib, family: int) -> _EntryLayout:
        if family == 4:
            entry, ip, tail = lib.ip4tc.ipt_entry, lib.ip4tc.ipt_ip, "=HBB"
        else:
            entry, ip, tail = lib.ip6tc.ip6t_entry, lib.ip6tc.ip6t_ip6, "=HBBB"
        return _EntryLayout(
            entry_size=ctypes.sizeof(entry),
            ip_size=ctypes.sizeof(ip),
            offsets_at=entry.target_offset.offset,
            tail_at=ip.proto.offset,
            tail=struct.Struct(tail),
            flags_at=ip.flags.offset,
        )


_OFFSETS = struct.Struct("=HH")


@dataclass(frozen=True)
class _Extension:
    """How one match/target revision is printed: its alias() and save(), as plain calls."""

    alias: Optional[Callable[[int], str]]
    save: Optional[Callable[[int, int], None]]
    unsupported: bool


def _save_function(pointer: Any) -> Optional[Callable[[int, int], None]]:
    """save(ip, match) re-typed to take plain addresses: no ctypes cast per call."""
    if not pointer:
        return None
    address = ctypes.cast(pointer, ctypes.c_void_p).value
    return ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)(address)


def _alias_function(pointer: Any) -> Optional[Callable[[int], str]]:
    """alias(match) -> the name iptables prints (e.g. `state` for a conntrack match)."""
    if not pointer:
        return None
    address = ctypes.cast(pointer, ctypes.c_void_p).value
    function = ctypes.CFUNCTYPE(ctypes.c_char_p, ctypes.c_void_p)(address)
    return lambda data: function(data).decode()


class _Session:
    """One family's nat table handle, in the forked child: read it, or change and commit it."""

    def __init__(self, lib: _Lib, family: int) -> None:
        self._lib = lib
        self.family = family
        self.layout = LAYOUTS[family]
        xtables = lib.xtables
        self._xt = xtables.xtables(xtables.NFPROTO_IPV4 if family == 4 else xtables.NFPROTO_IPV6)
        self._head = _EntryLayout.of(lib, family)
        # Caches for one read: extensions by (kind, name, revision), generic parts
        # by their bytes (most rules share them), protocol names by number.
        self._extensions: Dict[Tuple[str, bytes, int], _Extension] = {}
        self._generic: Dict[bytes, str] = {}
        self._proto_names: Dict[int, str] = {}
        self.table = self._open()

    def _open(self) -> Any:
        """The family's nat table, as it is now in the current network namespace."""
        iptc = self._lib.iptc
        table_class = iptc.Table if self.family == 4 else iptc.Table6
        what = f"the IPv{self.family} nat table"
        # A handle opened before the fork (by another user of python-iptables in this
        # process) may belong to another namespace, or be old: then open a new one.
        # (The class cache is python-iptables' own; missing, assume the worst.)
        opened_before = "nat" in getattr(table_class, "_cache", {"nat": None})
        try:
            table = table_class("nat", autocommit=False)
            if opened_before:
                table.refresh()
        except self._lib.ip4tc.IPTCError as err:
            message = _clean(err)
            if "ermission denied" in message or "must be root" in message:
                # libiptc opens a raw socket: CAP_NET_ADMIN alone is not enough.
                raise HostProblem(
                    f"python-iptables cannot open {what}: permission denied:"
                    " run as root (CAP_NET_ADMIN and CAP_NET_RAW)"
                ) from None
            raise HostProblem(f"python-iptables cannot open {what}: {message}") from None
        return table

    # --- reading ------------------------------------------------------------------------

    def save_text(self) -> str:
        table = self.table
        chains = [chain.name for chain in table.chains]
        pieces: List[Optional[str]] = ["*nat\n"]
        for chain in chains:
            if table.builtin_chain(chain):
                policy, (packets, octets) = table.get_policy(chain)
                pieces.append(f":{chain} {policy.name} [{packets}:{octets}]\n")
            else:
                pieces.append(f":{chain} - [0:0]\n")
        with _CStdout(self._lib.libc) as out:
            for chain in chains:
                entry = table.first_rule(chain)
                while entry:
                    self._rule_pieces(chain, entry, out, pieces)
                    entry = table.next_rule(entry)
        saved = iter(out.text().split("\0"))
        text = "".join(next(saved) if piece is None else piece for piece in pieces)
        return text + "COMMIT\n"

    def _rule_pieces(
        self, chain: str, entry: Any, out: _CStdout, pieces: List[Optional[str]]
    ) -> None:
        """One rule's line, as print_rule4/print_rule6 write it.

        Fields are unpacked from the entry's bytes (ctypes attribute access costs more
        than the rest of the read). A None in `pieces` stands for the next save()
        output, read after the walk.
        """
        base = ctypes.addressof(entry)
        head = self._head
        target_offset, next_offset = _OFFSETS.unpack(
            ctypes.string_at(base + head.offsets_at, _OFFSETS.size)
        )
        raw = ctypes.string_at(base, next_offset)
        generic = raw[: head.ip_size]
        text = self._generic.get(generic)
        if text is None:
            text = self._generic_text(generic)
            self._generic[generic] = text
        pieces.append(f"-A {chain}{text}")

        offset = head.entry_size
        while offset < target_offset:
            size, name, revision = _EXTENSION_HEADER.unpack_from(raw, offset)
            if size == 0:
                raise HostProblem(f"python-iptables: a broken rule in chain {chain}")
            name = name.rstrip(b"\0").split(b"\0", 1)[0]
            ext = self._extension("match", name, revision)
            shown = ext.alias(base + offset) if ext.alias else name.decode()
            pieces.append(f" -m {shown}")
            self._saved(ext, base, base + offset, out, pieces)
            offset += size

        _, name, revision = _EXTENSION_HEADER.unpack_from(raw, target_offset)
        name = name.split(b"\0", 1)[0]
        if name:
            ext = self._extension("target", name, revision)
            shown = ext.alias(base + target_offset) if ext.alias else name.decode()
            pieces.append(f" -j {shown}")
            self._saved(ext, base, base + target_offset, out, pieces)
        else:
            jump = self.table.get_target(entry)  # a chain, a verdict, or nothing
            if jump:
                goto = raw[head.flags_at] & self.layout.f_goto
                pieces.append(f" -{'g' if goto else 'j'} {jump.decode()}")
        pieces.append("\n")

    def _generic_text(self, generic: bytes) -> str:
        """-s -d -i -o -p -f (and ip6tables' -? for TOS) of one rule."""
        layout = self.layout
        width = 4 if layout.family == 4 else 16
        src, dst, smsk, dmsk = (generic[i * width : (i + 1) * width] for i in range(4))
        at = 4 * width
        iniface, outiface, inmask, outmask = (
            generic[at + i * 16 : at + (i + 1) * 16] for i in range(4)
        )
        tail = self._head.tail.unpack_from(generic, self._head.tail_at)
        if layout.family == 4:
            (proto, flags, inv), tos = tail, 0
        else:
            proto, tos, flags, inv = tail
        parts = [
            address_text("s", src, smsk, bool(inv & layout.inv_srcip)),
            address_text("d", dst, dmsk, bool(inv & layout.inv_dstip)),
            interface_text("i", iniface, inmask, bool(inv & layout.inv_via_in)),
            interface_text("o", outiface, outmask, bool(inv & layout.inv_via_out)),
        ]
        if proto:
            parts.append(f"{' !' if inv & layout.inv_proto else ''} -p {self._proto_name(proto)}")
        if flags & layout.f_frag:
            parts.append(f"{' !' if inv & layout.inv_frag else ''} -f")
        if flags & layout.f_tos:
            parts.append(f"{' !' if inv & layout.inv_tos else ''} -? {tos}")
        return "".join(parts)

    @staticmethod
    def _saved(
        ext: _Extension, ip: int, data: int, out: _CStdout, pieces: List[Optional[str]]
    ) -> None:
        """The extension's own save() output, or what iptables-save says without one."""
        if ext.save is not None:
            ext.save(ip, data)
            out.separate()
            pieces.append(None)
        elif ext.unsupported:
            pieces.append(" [unsupported revision]")

    def _extension(self, kind: str, name: bytes, revision: int) -> _Extension:
        """How iptables-save prints a match or target of this name and revision.

        The best revision loaded gives the name (or alias, as `state` for conntrack);
        save() comes from the rule's own revision, which may be older (rules written
        by an older iptables); without it iptables-save says "[unsupported revision]".
        """
        key = (kind, name, revision)
        found = self._extensions.get(key)
        if found is not None:
            return found
        best = self._xt.find_match(name) if kind == "match" else self._xt.find_target(name)
        if not best:
            raise HostProblem(
                f"python-iptables: no library for {kind} {name.decode()!r}"
                " (iptables-legacy-save fails on it too)"
            )
        saver: Any = best[0]
        if saver.revision != revision:
            saver = None
            finder = getattr(self._lib.libxtables, f"xtables_find_{kind}_revision", None)
            if finder is not None:
                finder.restype = type(best)
                finder.argtypes = [ctypes.c_char_p, ctypes.c_int, type(best), ctypes.c_int]
                other = finder(name, XTF_TRY_LOAD, best, revision)
                saver = other[0] if other else None
        named = saver if saver is not None else best[0]
        found = _Extension(
            alias=_alias_function(named.alias),
            save=_save_function(saver.save) if saver is not None else None,
            unsupported=saver is None and bool(named.save),
        )
        self._extensions[key] = found
        return found

    def _proto_name(self, number: int) -> str:
        """getprotobynumber(), then iptables' own list, then the number (as iptables)."""
        name = self._proto_names.get(number)
        if name is None:
            entry = self._lib.libc.getprotobynumber(number)
            if entry:
                name = _ProtoEnt.from_address(entry).p_name.decode()
            else:
                name = next((n for n, v in XTABLES_PROTOCOLS if v == number), str(number))
            self._proto_names[number] = name
        return name

    # --- writing ----------------------------------------------------------------------

    def apply(self, txn: Transaction) -> None:
        """Every op on this one handle, then one commit; nothing reaches the kernel before."""
        op: Optional[Op] = None
        try:
            for op in txn.ops:
                self._do(op)
            op = None
            self.table.commit()
        except PortmapctlError:
            raise
        except Exception as err:  # noqa: BLE001 - python-iptables raises many kinds
            where = "commit" if op is None else _op_text(op)
            raise ApplyFailed(
                f"python-iptables refused the transaction, nothing changed: {where}: {_clean(err)}"
            ) from None

    def _do(self, op: Op) -> None:
        table = self.table
        if op.kind is OpKind.NEW_CHAIN:
            table.create_chain(op.chain)
        elif op.kind is OpKind.FLUSH:
            table.flush_entries(op.chain)
        elif op.kind is OpKind.DELETE_CHAIN:
            table.delete_chain(op.chain)
        elif op.kind is OpKind.APPEND:
            table.append_entry(op.chain, self.build(op.args).rule)
        elif op.kind is OpKind.INSERT:
            table.insert_entry(op.chain, self.build(op.args).rule, 0)
        elif op.kind is OpKind.DELETE:
            rule = self.build(op.args)
            table.delete_entry(op.chain, rule.rule, rule.mask)
        elif op.kind is OpKind.DELETE_NUMBER:
            # python-iptables has no call for it; libiptc counts from 0.
            if (
                table._iptc.iptc_delete_num_entry(
                    op.chain.encode(), int(op.args[0]) - 1, table._handle
                )
                != 1
            ):
                raise ValueError(f"no rule {op.args[0]} in chain {op.chain}: {table.strerror()}")
        elif op.kind is OpKind.CHECK:
            # Never sent here: ops/add.py plans without reading (with -C lines) only
            # for a backend whose `checks` is true, and this one has none.
            raise ValueError("python-iptables cannot check a rule inside a transaction (-C)")
        else:
            raise AssertionError(f"unknown op kind {op.kind!r}")  # OpKind is closed

    def build(self, args: Args) -> Any:
        """A python-iptables Rule holding the entry iptables builds from these tokens."""
        iptc = self._lib.iptc
        layout = self.layout
        parts = split_rule(args, self._takes_value)
        rule = iptc.Rule() if self.family == 4 else iptc.Rule6()
        ip = getattr(rule.entry, layout.ip_field)
        for negated, option, values in parts.generic:
            sign = "!" if negated else ""
            if option in ("-s", "-d"):
                _set_address(ip, option, values[0], negated, layout)
            elif option in ("-i", "-o"):
                _set_interface(ip, option, values[0], negated, layout)
            elif option == "-p":
                rule.protocol = sign + str(_proto_number(values[0]))
                ip.flags |= layout.f_proto  # ip6tables sets it, negated or not
            elif layout.f_frag:  # -f
                ip.flags |= layout.f_frag
                if negated:
                    ip.invflags |= layout.inv_frag
            else:
                raise ValueError("-f is IPv4 only")
        for name, options in parts.matches:
            match = rule.create_match(name)
            for negated, option, values in options:
                match.parse(option[2:], ["!", *values] if negated else list(values))
            # Not rule.final_check(): it round-trips options through shlex (docstring).
            match._final_check()
        if parts.target is None:
            rule.create_target("")  # no -j: the rule only counts packets
        else:
            jump, name, options = parts.target
            goto = jump == "-g"
            if name in VERDICTS or self.table.is_chain(name):
                # A standard target carrying the chain or verdict, as iptables builds it.
                target = rule.create_target("", goto=goto)
                target.standard_target = name
            else:
                target = rule.create_target(name, goto=goto)
            for negated, option, values in options:
                target.parse(option[2:], ["!", *values] if negated else list(values))
            target._final_check()
        return rule

    def _takes_value(self, kind: str, module: str, option: str) -> Optional[bool]:
        """Whether an extension's option takes a value, from its own option table."""
        found = self._xt.find_match(module) if kind == "match" else self._xt.find_target(module)
        if not found:
            return None
        ext = found[0]
        if ext.x6_options:
            i = 0
            while ext.x6_options[i].name:
                if ext.x6_options[i].name.decode() == option:
                    return ext.x6_options[i].type != XTTYPE_NONE
                i += 1
        if ext.extra_opts:
            i = 0
            while ext.extra_opts[i].name:
                if ext.extra_opts[i].name.decode() == option:
                    return ext.extra_opts[i].has_arg != 0
                i += 1
        return None


def _set_address(ip: Any, option: str, value: str, negated: bool, layout: FamilyLayout) -> None:
    """`-s`/`-d` as iptables stores it: address and mask, the address masked.

    Not python-iptables' setters: Rule6's leaves the host bits of the address in.
    """
    family = socket.AF_INET if layout.family == 4 else socket.AF_INET6
    width = 4 if layout.family == 4 else 16
    address, _, mask_text = value.partition("/")
    if not mask_text:
        mask = b"\xff" * width
    elif mask_text.isdigit():
        length = int(mask_text)
        if length > width * 8:
            raise ValueError(f"invalid prefix length in {value!r}")
        mask = (((1 << length) - 1) << (width * 8 - length)).to_bytes(width, "big")
    else:
        mask = socket.inet_pton(family, mask_text)
    raw = bytes(a & m for a, m in zip(socket.inet_pton(family, address), mask))
    if option == "-s":
        addr_field, mask_field, inv = "src", "smsk", layout.inv_srcip
    else:
        addr_field, mask_field, inv = "dst", "dmsk", layout.inv_dstip
    for name, data in ((addr_field, raw), (mask_field, mask)):
        if layout.family == 4:
            getattr(ip, name).s_addr = int.from_bytes(data, sys.byteorder)
        else:
            ctypes.memmove(_field_address(ip, name), data, width)
    if negated:
        ip.invflags |= inv


def _set_interface(ip: Any, option: str, value: str, negated: bool, layout: FamilyLayout) -> None:
    """`-i`/`-o` as xtables_parse_interface stores it: the name and a 0xff mask over it
    (and its NUL), or over the prefix before a `+`.

    Not python-iptables' setters: Rule6's mask bytes are 0x01, so the kernel would
    compare one bit of each character, and a `-D` would not find ip6tables' rule.
    """
    name = value.encode()
    if len(name) >= 16:
        raise ValueError(f"interface name {value!r} too long")
    if name.endswith(b"+"):
        name = name[:-1]
        length = len(name)
    else:
        length = len(name) + 1
    prefix = "in" if option == "-i" else "out"
    ctypes.memmove(_field_address(ip, f"{prefix}iface"), name.ljust(16, b"\0"), 16)
    mask = (b"\xff" * length).ljust(16, b"\0")
    ctypes.memmove(_field_address(ip, f"{prefix}iface_mask"), mask, 16)
    if negated:
        ip.invflags |= layout.inv_via_in if option == "-i" else layout.inv_via_out


def _field_address(struct: Any, name: str) -> int:
    # Char-array fields read back as bytes copies: write them through their address.
    return ctypes.addressof(struct) + getattr(type(struct), name).offset


def _in4(address: Any) -> bytes:
    """An in_addr's bytes in network order (python-iptables keeps s_addr as a native int)."""
    return int(address.s_addr).to_bytes(4, sys.byteorder)


def _proto_number(name: str) -> int:
    """A protocol as iptables parses `-p` (spelling.protocol_number)."""
    number = protocol_number(name.lower())
    if number is None:
        raise ValueError(f"unknown protocol {name!r}")
    return number


def _clean(err: BaseException) -> str:
    """python-iptables puts libiptc's message in as bytes (b'...'): show it as text."""
    return _BYTES_REPR.sub(lambda m: m.group(2), str(err)).strip()


def _op_text(op: Op) -> str:
    try:
        return op.line()
    except Exception:  # noqa: BLE001 - only for the message
        return format_rule(op.kind, op.chain, ())


class _CStdout:
    """Point C's stdout (fd 1) at a memfd while extensions' save() functions print.

    Every save() output is followed by a NUL (no option text can hold one), so the
    outputs are told apart after one read, without a syscall per match.
    """

    def __init__(self, libc: Any) -> None:
        self._libc = libc
        self._stdout = ctypes.c_void_p.in_dll(libc, "stdout")
        self._fd = -1
        self._saved: Optional[int] = None

    def __enter__(self) -> _CStdout:
        sys.stdout.flush()
        self._libc.fflush(None)  # whatever C printed so far goes where it was meant to
        self._fd = os.memfd_create("portmapctl-save", os.MFD_CLOEXEC)
        try:
            self._saved = os.dup(1)
        except OSError:
            self._saved = None  # stdout was closed; closed it stays afterwards
        os.dup2(self._fd, 1)
        return self

    def separate(self) -> None:
        self._libc.fputc(0, self._stdout)

    def __exit__(self, *exc_info: object) -> None:
        self._libc.fflush(self._stdout)
        if self._saved is not None:
            os.dup2(self._saved, 1)
            os.close(self._saved)
        else:
            os.close(1)

    def text(self) -> str:
        size = os.fstat(self._fd).st_size
        data = os.pread(self._fd, size, 0) if size else b""
        os.close(self._fd)
        return data.decode("utf-8", errors="surrogateescape")


@contextlib.contextmanager
def xtables_lock(wait: float) -> Iterator[None]:
    """Hold iptables' xtables lock, as iptables-legacy-restore -w does, for `wait` s at most."""
    path = os.environ.get("XTABLES_LOCKFILE") or XT_LOCK_NAME
    try:
        fd = os.open(path, os.O_CREAT | os.O_RDONLY | os.O_CLOEXEC, 0o600)
    except OSError as err:
        raise HostProblem(f"cannot open the xtables lock {path}: {err.strerror}") from None
    try:
        if not flock_within(fd, wait):
            raise ApplyFailed(
                f"another program held the xtables lock ({path}) for {wait:g} s: nothing changed"
            )
        yield
    finally:
        os.close(fd)
