"""The pure part of the python-iptables backend: a rule's generic part (-s -d -i -o)
printed as iptables-save prints it, and a rule in saved form split into the pieces
libiptc builds (generic options, matches, target). No ctypes, no python-iptables:
unit-tested without root."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import List, NamedTuple, Optional, Sequence, Tuple

from portmapctl.iptables.spelling import Option


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
