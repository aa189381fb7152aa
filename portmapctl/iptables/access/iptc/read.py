"""Reading a nat table through libiptc, as `iptables-legacy-save -t nat` prints it:
walk the entries, print the generic part the way print_rule4/print_rule6 do, and let
every match and target print its options with its own xtables `save()`, the code
iptables-save runs. Runs in the session's forked child."""

from __future__ import annotations

import ctypes
import os
import struct
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from portmapctl.errors import HostProblem
from portmapctl.iptables.access.iptc.lib import Lib, Session
from portmapctl.iptables.access.iptc.text import address_text, interface_text
from portmapctl.iptables.spelling import XTABLES_PROTOCOLS

XTF_TRY_LOAD = 2


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
    def of(lib: Lib, family: int) -> _EntryLayout:
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


class Reader(Session):
    """One family's nat table in the forked child, printed as iptables-legacy-save does."""

    def __init__(self, lib: Lib, family: int) -> None:
        super().__init__(lib, family)
        self._head = _EntryLayout.of(lib, family)
        # Caches for one read: extensions by (kind, name, revision), generic parts
        # by their bytes (most rules share them), protocol names by number.
        self._extensions: Dict[Tuple[str, bytes, int], _Extension] = {}
        self._generic: Dict[bytes, str] = {}
        self._proto_names: Dict[int, str] = {}

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
