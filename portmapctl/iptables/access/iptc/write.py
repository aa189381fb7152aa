"""Writing a transaction through libiptc: each rule (saved form) built into a libiptc
entry with python-iptables' Rule/Match/Target, every op on one table handle with
autocommit off, one commit (one setsockopt: all or nothing). Runs in the session's
forked child, under the xtables lock the parent holds."""

from __future__ import annotations

import ctypes
import socket
import sys
from typing import Any, Optional

from portmapctl.errors import ApplyFailed, PortmapctlError
from portmapctl.iptables.access.iptc.lib import Session, clean
from portmapctl.iptables.access.iptc.text import FamilyLayout, split_rule
from portmapctl.iptables.ruleset import Args, format_rule
from portmapctl.iptables.spelling import protocol_number
from portmapctl.iptables.transaction import Op, OpKind, Transaction

VERDICTS = ("ACCEPT", "DROP", "QUEUE", "RETURN")
XTTYPE_NONE = 0


class Writer(Session):
    """One family's nat table in the forked child: every op of a transaction, one commit."""

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
                f"python-iptables refused the transaction, nothing changed: {where}: {clean(err)}"
            ) from None

    def refusal(self, txn: Transaction) -> Optional[str]:
        """What python-iptables refuses of `txn`, every op built and done on this
        handle, which is dropped, never committed (as iptables-restore --test parses
        without committing: ops/conditions.py asks it); None when it takes it all."""
        for op in txn.ops:
            try:
                self._do(op)
            except Exception as err:  # noqa: BLE001 - python-iptables raises many kinds
                # (Not the rule: the caller's is a scratch one, ops/conditions.py.)
                return f"python-iptables: {clean(err)}"
        return None

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
            table.insert_entry(op.chain, self.build(op.args).rule, op.position - 1)
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
            # Every backend applies every op kind alike (tests/kernel/
            # test_backends_conformance.py); add plans no -C lines for this one (its
            # `checks` is false).
            rule = self.build(op.args)
            if not self._check_entry(op.chain, rule):
                raise ValueError(f"no such rule in chain {op.chain}: {_op_text(op)}")
        else:
            raise AssertionError(f"unknown op kind {op.kind!r}")  # OpKind is closed

    def _check_entry(self, chain: str, rule: Any) -> bool:
        """libiptc's check_entry (what `iptables-legacy -C` calls) on this handle, as
        it stands after the ops before it; python-iptables does not bind it."""
        table = self.table
        lib = sys.modules[type(table._iptc).__module__]._libiptc
        check = lib.iptc_check_entry if self.family == 4 else lib.ip6tc_check_entry
        check.restype = ctypes.c_int
        found = check(
            chain.encode(), ctypes.cast(rule.rule, ctypes.c_void_p), rule.mask, table._handle
        )
        return found == 1

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


def _proto_number(name: str) -> int:
    """A protocol as iptables parses `-p` (spelling.protocol_number)."""
    number = protocol_number(name.lower())
    if number is None:
        raise ValueError(f"unknown protocol {name!r}")
    return number


def _op_text(op: Op) -> str:
    try:
        return op.line()
    except Exception:  # noqa: BLE001 - only for the message
        return format_rule(op.kind, op.chain, ())
