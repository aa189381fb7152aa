"""The one normal form of a rule: its arguments as `iptables-save` prints them.

A rule is kept as its argument tokens after `-A CHAIN`, unquoted, exactly as
`iptables-save` printed them (ruleset.py reads them so). Rules we generate are passed
through `normalize()`, which rewrites the plugin's argument order and spellings into
what `iptables-save` prints (`-s 10.88.0.5/16` becomes `-s 10.88.0.0/16`,
`--destination-ports` becomes `--dports`, `-p tcp --dport` gains `-m tcp`, addresses
and protocol move to the front). Wanted and live rules are then compared as plain
tuples. What normalize makes of a condition is held to iptables itself
(tests/kernel/test_normal_form_reference.py).

normal_port_rule and normal_entry_rule give the plugin's own rules in that form
directly (held to normalize() by tests/unit/test_ruleset_builders.py), and
address_lists splits a -s/-d list into one rule per address as iptables does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from portmapctl.errors import BadInput
from portmapctl.iptables.spelling import (
    SYN,
    canonical,
    normal_address,
    normal_protocol,
    tcp_flags,
)

if TYPE_CHECKING:
    from portmapctl.iptables.ruleset import Args

# Long spellings iptables accepts for its generic options.
_GENERIC_ALIASES = {
    "--source": "-s",
    "--src": "-s",
    "--destination": "-d",
    "--dst": "-d",
    "--in-interface": "-i",
    "--out-interface": "-o",
    "--protocol": "-p",
    "--fragment": "-f",
    "--match": "-m",
    "--jump": "-j",
    "--goto": "-g",
}
_GENERIC_ORDER = ("-s", "-d", "-i", "-o", "-p", "-f")
_PROTO_OPTIONS = {
    "--dport": "--dport",
    "--destination-port": "--dport",
    "--sport": "--sport",
    "--source-port": "--sport",
    "--tcp-flags": "--tcp-flags",
    "--syn": "--syn",
    "--tcp-option": "--tcp-option",
    "--chunk-types": "--chunk-types",
}
_MATCH_OPTION_ALIASES = {
    "multiport": {
        "--destination-ports": "--dports",
        "--source-ports": "--sports",
    },
    "tcp": {"--destination-port": "--dport", "--source-port": "--sport"},
    "udp": {"--destination-port": "--dport", "--source-port": "--sport"},
    "sctp": {"--destination-port": "--dport", "--source-port": "--sport"},
}
# Options each well-known match owns; an option a known match does not own goes to
# the protocol's implicit match, as iptables does.
_MATCH_OPTIONS = {
    "comment": {"--comment"},
    "multiport": {"--dports", "--sports", "--ports", "--destination-ports", "--source-ports"},
    "mark": {"--mark"},
    "addrtype": {"--src-type", "--dst-type", "--limit-iface-in", "--limit-iface-out"},
}
# The protocol matches' port options that are prefixes of one multiport option: once
# multiport is loaded, iptables' option parser (getopt_long) gives them to it.
_MULTIPORT_BY_PREFIX = {
    "--sport": "--sports",
    "--dport": "--dports",
    "--source-port": "--source-ports",
    "--destination-port": "--destination-ports",
}
# multiport's port options as saved (one of them a match: a second is refused).
_MULTIPORT_PORTS = {"--sports", "--dports", "--ports"}
FLAG_OPTIONS = {"--syn", "-f", "--limit-iface-in", "--limit-iface-out"}  # addrtype: flags
# Options known to take a value, even one that starts with a dash.
_VALUED_OPTIONS = (set().union(*_MATCH_OPTIONS.values()) | set(_PROTO_OPTIONS)) - FLAG_OPTIONS


def normalize(args: Iterable[str], family: int) -> Args:
    """Rewrite rule arguments into the form `iptables-save` prints them in.

    Handles what the plugin writes and common conditions: generic options first
    (-s -d -i -o -p -f, each possibly negated), then matches in the order they were
    loaded (an implicit `-m tcp|udp|sctp` where `--dport` is used without one), then
    the target with its options. A rule already in saved form comes back unchanged.
    """
    tokens = [_GENERIC_ALIASES.get(t, t) for t in args]
    generic: Dict[str, List[str]] = {}
    matches: List[Tuple[str, List[str]]] = []
    target: List[str] = []
    proto: Optional[str] = None
    implicit: Optional[List[str]] = None
    current: Optional[Tuple[str, List[str]]] = None
    negate = False
    seen: Set[str] = set()  # generic options given (also those printed as nothing)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == "!":
            negate = True
            i += 1
            continue
        prefix = ["!"] if negate else []
        negate = False
        if target:
            target.extend(prefix + [token])
            i += 1
            continue
        if token in _GENERIC_ORDER and token in seen:
            # iptables takes each generic option once: conditions that give `-p` again
            # (`-p tcp --syn` beside the plugin's own `-p udp`) make the plugin's ADD
            # fail; keeping the last one wrote a udp mapping's entry rule as tcp.
            raise BadInput(f"multiple {token} flags in rule (iptables refuses it)")
        if token in _GENERIC_ORDER:
            seen.add(token)
            if token == "-f":
                generic[token] = prefix + [token]
                i += 1
                continue
            value = _need_value(tokens, i)
            if token in ("-s", "-d"):
                value = normal_address(value, family)
                if value.endswith("/0") and not prefix:
                    i += 2  # "anywhere": iptables-save prints nothing for it
                    continue
            elif token == "-p":
                protocol = normal_protocol(value)
                if protocol is None and prefix:
                    raise BadInput(
                        f"'! -p {value}' in rule would never match (iptables refuses it)"
                    )
                if protocol is None:
                    i += 2  # `all`: iptables-save prints nothing for it
                    continue
                value = proto = protocol
            generic[token] = prefix + [token, value]
            i += 2
            continue
        if token == "-m":
            name = _need_value(tokens, i)
            current = (name, [])
            matches.append(current)
            i += 2
            continue
        if token in ("-j", "-g"):
            target = [token, _need_value(tokens, i)]
            i += 2
            continue
        # An option of a match: the open one, or the protocol's implicit match.
        owner = current
        if (
            token in _MULTIPORT_BY_PREFIX
            and current is not None
            and current[0] == "multiport"
            and not _MULTIPORT_PORTS.intersection(current[1])
        ):
            # The open multiport has no port option yet (conditions' own `-m multiport
            # --sport 1024:65535`): by prefix it is that match's --source-ports, as
            # iptables and the plugin's ADD take it.
            token = _MULTIPORT_BY_PREFIX[token]
        elif (
            token in _MULTIPORT_BY_PREFIX
            and any(m == "multiport" for m, _ in matches)
            and not any(m == proto for m, _ in matches)
        ):
            # iptables offers an option to the matches loaded so far, by prefix, and
            # loads the protocol's own match only for an option none of them takes:
            # after the plugin's `-m multiport --destination-ports`, conditions'
            # `--sport 1024:65535` is multiport's --source-ports, which iptables
            # refuses there (the plugin's ADD fails); `-m tcp --sport` is tcp's.
            raise BadInput(
                f"{token} after -m multiport is multiport's {_MULTIPORT_BY_PREFIX[token]},"
                " a second port option of one multiport match (iptables refuses it;"
                f" give -m {proto} {token} for the {proto} match's)"
            )
        if token in _PROTO_OPTIONS and proto in ("tcp", "udp", "sctp"):
            known = _MATCH_OPTIONS.get(current[0]) if current else None
            if current is None or (known is not None and token not in known):
                if implicit is None:
                    implicit = []
                    matches.append((proto, implicit))
                owner = (proto, implicit)
        if owner is None:
            raise BadInput(f"option {token!r} belongs to no match in rule")
        name, options = owner
        spelled = _MATCH_OPTION_ALIASES.get(name, {}).get(token, token)
        if token == "--comment" and i + 1 < len(tokens):
            tokens[i + 1] = _stored_comment(tokens[i + 1])
        takes_value = token in _VALUED_OPTIONS or (
            i + 1 < len(tokens) and not tokens[i + 1].startswith("-") and tokens[i + 1] != "!"
        )
        if spelled in ("--syn", "--tcp-flags"):
            if name != "tcp" or "--tcp-flags" in options:
                raise BadInput(f"{spelled} in rule outside one tcp match (iptables refuses it)")
        if spelled == "--syn":
            options.extend(prefix + list(SYN))  # what iptables keeps of it
            i += 1
        elif spelled == "--tcp-flags":
            # Two values: the flags looked at, and those of them that must be set.
            if i + 2 >= len(tokens):
                raise BadInput("--tcp-flags in rule needs two values (mask and set flags)")
            flags = [tcp_flags(tokens[i + 1]), tcp_flags(tokens[i + 2])]
            if flags[0] == "NONE":
                # Looks at no flag: the two iptables flavours save it differently.
                raise BadInput("--tcp-flags in rule looks at no flag")
            options.extend(prefix + [spelled, *flags])
            i += 3
        elif token in FLAG_OPTIONS or not takes_value:
            options.extend(prefix + [spelled])
            i += 1
        else:
            options.extend(prefix + [spelled, _need_value(tokens, i)])
            i += 2
    out: List[str] = []
    for option in _GENERIC_ORDER:
        out.extend(generic.get(option, ()))
    for name, options in matches:
        # Option values as iptables prints them back (`local` -> `LOCAL`): a rule
        # the plugin's CHECK accepts must compare equal (spelling.py).
        out.extend(["-m", name, *canonical(name, options)])
    out.extend(target)
    return tuple(out)


# The plugin's own rules, in their normal form without the walk above: `check` makes
# every cached container's chain (4 rules a container), and normalize() was most of
# its diagnosis. Each builder gives exactly what normalize() gives for the tokens its
# docstring names (tests/unit/test_ruleset_builders.py, with hypothesis), and hands
# anything outside the plain case to normalize() itself.
_PORT_PROTOCOLS = frozenset({"tcp", "udp", "sctp"})
# Tokens normalize() reads as something else than a plain value.
_SPECIAL_TOKENS = frozenset({"!", "-j", "-g", *_GENERIC_ALIASES})


def _plain_values(values: Iterable[str]) -> bool:
    return not any(value in _SPECIAL_TOKENS for value in values)


def normal_port_rule(
    protocol: str,
    port: str,
    destination: Optional[str],
    source: Optional[str],
    target: Sequence[str],
    family: int,
) -> Args:
    """normalize(["-p", protocol, "--dport", port] + ["-d", destination] (when given)
    + ["-s", source] (when given) + ["-j", *target], family): a rule of a CNI-DN- chain
    as the plugin writes it, in saved form."""
    args = ["-p", protocol, "--dport", port]
    if destination is not None:
        args += ["-d", destination]
    if source is not None:
        args += ["-s", source]
    args += ["-j", *target]
    values = [port, *target]
    values += [] if destination is None else [destination]
    values += [] if source is None else [source]
    if protocol not in _PORT_PROTOCOLS or not target or not _plain_values(values):
        return normalize(args, family)
    out: List[str] = []
    # Addresses normalized (and refused) in the order normalize() meets them.
    normal_destination = None if destination is None else normal_address(destination, family)
    normal_source = None if source is None else normal_address(source, family)
    if normal_source is not None and not normal_source.endswith("/0"):
        out += ["-s", normal_source]
    if normal_destination is not None and not normal_destination.endswith("/0"):
        out += ["-d", normal_destination]
    out += ["-p", protocol, "-m", protocol, "--dport", port, "-j", *target]
    return tuple(out)


def normal_entry_rule(comment: str, protocol: str, ports: str, target: str, family: int) -> Args:
    """normalize(["-m", "comment", "--comment", comment, "-m", "multiport", "-p",
    protocol, "--destination-ports", ports, "-j", target], family): an entry rule of
    CNI-HOSTPORT-DNAT as the plugin writes it without conditions, in saved form."""
    values = (comment, protocol, ports, target)
    if protocol not in _PORT_PROTOCOLS or not _plain_values(values):
        return normalize(
            ["-m", "comment", "--comment", comment, "-m", "multiport", "-p", protocol,
             "--destination-ports", ports, "-j", target],
            family,
        )  # fmt: skip
    return ("-p", protocol, "-m", "comment", "--comment", _stored_comment(comment),
            "-m", "multiport", "--dports", ports, "-j", target)  # fmt: skip


def _stored_comment(text: str) -> str:
    """The kernel keeps at most 255 bytes of a comment; iptables cuts the rest."""
    raw = text.encode()
    return text if len(raw) <= 255 else raw[:255].decode(errors="ignore")


def address_lists(args: Sequence[str]) -> List[List[str]]:
    """`args` as iptables makes rules of them: a -s or -d naming several addresses
    (`-s 10.0.0.0/8,192.168.0.0/16`, as a plugin's conditions may) is one rule per
    address, every source with every destination, sources outermost (xtables' append
    loops). Anything else is `args` alone; a negated list too (iptables refuses it,
    and so does normalize)."""
    tokens = list(args)
    at: Dict[str, int] = {}  # "-s"/"-d" -> the index of its list
    for i, token in enumerate(tokens[:-1]):
        if token in ("-j", "-g"):
            break
        name = _GENERIC_ALIASES.get(token, token)
        negated = i > 0 and tokens[i - 1] == "!"
        if name in ("-s", "-d") and name not in at and "," in tokens[i + 1] and not negated:
            at[name] = i + 1
    if not at:
        return [tokens]
    sources = tokens[at["-s"]].split(",") if "-s" in at else [None]
    destinations = tokens[at["-d"]].split(",") if "-d" in at else [None]
    rules = []
    for source in sources:
        for destination in destinations:
            rule = list(tokens)
            for name, value in (("-s", source), ("-d", destination)):
                if value is not None:
                    rule[at[name]] = value
            rules.append(rule)
    return rules


def _need_value(tokens: Sequence[str], i: int) -> str:
    # The target cannot be an option's value: "--dport" given last in conditions
    # would otherwise swallow the "-j" that follows and leave a rule with no target.
    if i + 1 >= len(tokens) or tokens[i + 1] in ("-j", "-g"):
        raise BadInput(f"option {tokens[i]!r} needs a value")
    return tokens[i + 1]
