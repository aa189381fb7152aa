"""`nft -j list ...` output -> the plugin's nftables tables, as values.

The plugin's nftables backend (v1.6.0 on) keeps everything in two tables,
`ip cni_hostport` and `ip6 cni_hostport`. Each rule is parsed once into a `RuleBody`:
its matches in a normal form (`Match`, compared as values: addresses compressed,
prefixes normalised, ports as numbers), its action (dnat/masquerade/jump) and its
comment, which for per-container rules is the bare container ID. The same values are
what `wanted.py` generates and `transaction.py` prints, so "is this rule there" is a
value comparison, never a string one.

Input from a file or from `nft` that is not what `nft -j` prints is bad input naming
its source; objects of other tables (iptables-nft's, firewalld's) are skipped unread.
A chain of `cni_hostport` that is not the plugin's, and whose name or rules this
parser cannot take (another tool's, added through nft's JSON: `a b`, a name nft's own
syntax cannot write), is skipped too and said (`UnreadChain`): one such chain stopped every
command (SPEC §5: one bad record stops nothing). The plugin's own chains are read
whole, or the document is refused.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, Iterable, List, Mapping, Optional, Set, Tuple

from portmapctl.core.patterns import lazy
from portmapctl.core.text import count
from portmapctl.errors import BadInput
from portmapctl.nftables import FAMILY_NAMES, TABLE  # noqa: F401 - re-exported

TABLE_COMMENT = "CNI portmap plugin"
FAMILIES = {"ip": 4, "ip6": 6}

# The plugin's chains (v1.9.1; v1.6/v1.7 lack hostports_all).
HOSTPORTS = "hostports"
HOSTIP_HOSTPORTS = "hostip_hostports"
HOSTPORTS_ALL = "hostports_all"
PREROUTING = "prerouting"
OUTPUT = "output"
MASQUERADING = "masquerading"
# Chains whose rules belong to containers (what the plugin's DEL searches).
CONTAINER_CHAINS = (HOSTPORTS, HOSTIP_HOSTPORTS, MASQUERADING)
# Every chain the plugin makes: what cannot be read in one of them refuses the table.
PLUGIN_CHAINS = frozenset({HOSTPORTS, HOSTIP_HOSTPORTS, HOSTPORTS_ALL, PREROUTING, OUTPUT,
                           MASQUERADING})  # fmt: skip


class ActionKind(str, Enum):
    DNAT = "dnat"
    MASQUERADE = "masquerade"
    JUMP = "jump"
    NONE = "none"  # only matches (or a statement we do not model)
    OTHER = "other"


@dataclass(frozen=True)
class Match:
    """One match in normal form: `left op right`, e.g. ("ip saddr", "!=", "fd00::/64").

    `raw` holds what we could not model (an expression's JSON, or condition text),
    so an unknown match still compares by value and is never silently dropped.
    """

    left: str
    op: str = "=="
    right: str = ""
    raw: Optional[str] = None

    def text(self) -> str:
        """nft syntax for this match (what `nft list` prints)."""
        if self.raw is not None:
            return self.raw
        op = "" if self.op == "==" else f"{self.op} "
        left = self.left[len("meta ") :] if self.left in _BARE_META else self.left
        right = _quote(self.right) if self.left in _QUOTED else self.right
        return f"{left} {op}{right}"


# A `counter` statement, whatever it has counted: opaque (a rule with one is not the
# plugin's), but it holds every packet and lets each one on, so it is no condition of
# the rule (inventory), and its numbers, which traffic changes, are no part of the value.
COUNTER = Match("?", raw="counter")

_BARE_META = {"meta iifname", "meta oifname", "meta iif", "meta oif", "meta mark"}
_QUOTED = {"meta iifname", "meta oifname"}


def _quote(value: str) -> str:
    return '"' + value + '"'


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    target: Optional[str] = None  # jump target
    addr: Optional[str] = None  # dnat address (compressed)
    port: Optional[int] = None  # dnat port
    raw: Optional[str] = None

    def text(self, family: int) -> str:
        if self.kind is ActionKind.DNAT:
            addr = f"[{self.addr}]" if family == 6 else self.addr
            return f"dnat to {addr}:{self.port}" if self.port is not None else f"dnat to {addr}"
        if self.kind is ActionKind.MASQUERADE:
            return "masquerade"
        if self.kind is ActionKind.JUMP:
            return f"jump {self.target}"
        return self.raw or ""


@dataclass(frozen=True)
class RuleBody:
    """What a rule does, independent of where it sits and its handle."""

    matches: Tuple[Match, ...]
    action: Action
    comment: Optional[str] = None

    def text(self, family: int) -> str:
        parts = [m.text() for m in self.matches]
        action = self.action.text(family)
        if action:
            parts.append(action)
        if self.comment is not None:
            parts.append("comment " + _quote(self.comment))
        return " ".join(parts)

    def value(self, left: str) -> Optional[str]:
        """The right side of the first `left ==` match (e.g. "tcp dport" -> "8080")."""
        for match in self.matches:
            if match.left == left and match.op == "==":
                return match.right
        return None


@dataclass(frozen=True)
class Rule:
    family: int
    chain: str
    handle: int
    body: RuleBody

    @property
    def comment(self) -> Optional[str]:
        return self.body.comment


@dataclass(frozen=True)
class BaseHook:
    """What makes a chain a base chain: `type nat hook prerouting priority -100`."""

    type: str
    hook: str
    priority: int


@dataclass(frozen=True)
class Chain:
    family: int
    name: str
    handle: int
    base: Optional[BaseHook] = None
    # A base chain's policy as nft lists it ("accept", "drop"); None for a regular chain.
    policy: Optional[str] = None


@dataclass(frozen=True)
class Table:
    """One family's `cni_hostport` table: chains in listing order, rules per chain."""

    family: int
    handle: int
    chains: Mapping[str, Chain]
    rules: Mapping[str, Tuple[Rule, ...]] = field(default_factory=dict)

    def rules_of(self, chain: str) -> Tuple[Rule, ...]:
        return self.rules.get(chain, ())


def chain_bodies(table: Optional[Table], chain: str) -> List[RuleBody]:
    """The bodies of `chain`'s rules in order; none where the table is absent."""
    return [] if table is None else [rule.body for rule in table.rules_of(chain)]


@dataclass(frozen=True)
class UnreadChain:
    """A chain of `cni_hostport` that is not the plugin's and that the parser could not
    take (its name, or `rules` of its rules): left out of the Table, so that nothing
    of ours shows, judges, deletes or rewrites it."""

    family: int
    chain: str  # as listed (a name that is not text: its repr)
    why: str
    rules: int = 0  # its rules left unread

    def warning(self) -> str:
        where = f"{FAMILY_NAMES[self.family]} {TABLE}"
        rules = f"; {count(self.rules, 'rule')}" if self.rules else ""
        return (
            f"{where}: chain {self.chain!r} is not the plugin's and cannot be read"
            f" ({self.why}{rules}): left alone, not shown, checked or removed"
        )


@dataclass(frozen=True)
class Ruleset:
    """The plugin's tables by family (a family without its table is absent)."""

    tables: Mapping[int, Table]
    nft_version: Optional[str] = None
    unread: Tuple[UnreadChain, ...] = ()  # other chains of the tables, skipped
    # The nf_tables ruleset generation these tables were listed at, when nothing
    # committed while nft listed them (RealNft.read_settled); None when not known.
    generation: Optional[int] = field(default=None, compare=False)
    # Why a read meant to be stamped (read_settled) is not: gc's deletions then go as
    # `nft -f`, and `-v` says so with this (nftables.node.converge).
    unstamped: str = field(default="", compare=False)

    def table(self, family: int) -> Optional[Table]:
        return self.tables.get(family)


EMPTY = Ruleset({})


# A frozen dataclass's generated __init__ sets each field through object.__setattr__:
# for the 14,000 objects of a 1,000-container table that was a sixth of the parse. The
# parser builds its values here instead, every field given, equal to what __init__
# makes (tests/unit/nftables/test_nft_ruleset.py holds them so; none of these classes
# has a __post_init__ or __slots__).
_new = object.__new__


def _made_match(left: str, op: str, right: str) -> Match:
    made = _new(Match)
    made.__dict__.update(left=left, op=op, right=right, raw=None)
    return made


def _made_dnat(addr: str, port: Optional[int]) -> Action:
    made = _new(Action)
    made.__dict__.update(kind=ActionKind.DNAT, target=None, addr=addr, port=port, raw=None)
    return made


def _made_body(matches: Tuple[Match, ...], action: Action, comment: Optional[str]) -> RuleBody:
    made = _new(RuleBody)
    made.__dict__.update(matches=matches, action=action, comment=comment)
    return made


def _made_rule(family: int, chain: str, handle: int, body: RuleBody) -> Rule:
    made = _new(Rule)
    made.__dict__.update(family=family, chain=chain, handle=handle, body=body)
    return made


# --- JSON expressions -> values -------------------------------------------------------


# nft prints addresses canonically already; a dotted quad in canonical form (no leading
# zeros) is taken as it is: parsing 8,000 of them through ipaddress was a quarter of
# reading a 1,000-container table. Anything else goes through ipaddress. (Checked by
# hand, not by a regular expression: compiling one cost each run 5-9 ms.)
def _canonical_v4(value: str) -> bool:
    octets = value.split(".")
    return len(octets) == 4 and all(
        o.isdigit() and o.isascii() and len(o) <= 3 and (o == "0" or o[0] != "0") and int(o) < 256
        for o in octets
    )


def _address(value: str) -> str:
    if _canonical_v4(value):
        return value
    return ipaddress.ip_address(value).compressed


def _right(value: Any) -> str:
    if isinstance(value, bool):
        raise ValueError("boolean match value")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        try:
            return _address(value)
        except ValueError:
            return value
    if isinstance(value, dict) and "prefix" in value:
        prefix = value["prefix"]
        net = ipaddress.ip_network(f"{prefix['addr']}/{int(prefix['len'])}", strict=False)
        return _network_text(net)
    if isinstance(value, dict) and "set" in value:
        return "{ " + ", ".join(_right(v) for v in value["set"]) + " }"
    if isinstance(value, dict) and "range" in value:
        low, high = value["range"]
        return f"{_right(low)}-{_right(high)}"
    raise ValueError("unmodelled value")


def _network_text(net: Any) -> str:
    if net.prefixlen == net.max_prefixlen:
        return net.network_address.compressed
    return net.with_prefixlen


def _left(value: Any) -> str:
    if "payload" in value:
        payload = value["payload"]
        return f"{payload['protocol']} {payload['field']}"
    if "meta" in value:
        return f"meta {value['meta']['key']}"
    if "fib" in value:
        fib = value["fib"]
        return "fib " + " . ".join(fib.get("flags", ())) + f" {fib['result']}"
    raise ValueError("unmodelled left side")


# The left sides whose value is an address, with its family.
_ADDRESS_LEFTS = {"ip saddr": 4, "ip daddr": 4, "ip6 saddr": 6, "ip6 daddr": 6}


class _NotAnAddress(ValueError):
    """An address match or a dnat whose value is no address of its family: nft prints
    none such, so the document is not its output. The rule is refused, as a dnat to
    what is no address is (never an opaque match: list and check read a plugin rule's
    `ip daddr` as its host IP; a snapshot's `ip daddr zz` was an internal error)."""


def _is_v6(address: str) -> bool:
    """Of an address as _address gives it (compressed): IPv6 has a colon, IPv4 none."""
    return ":" in address


class _Values:
    """Expressions -> values for one parse, remembering what recurs.

    A 1,000-container table repeats a handful of left sides and many whole matches
    (`ip saddr 127.0.0.1`, the same ports in both families): looking them up is
    cheaper than building them again, and equal values may well be the same object.
    """

    def __init__(self) -> None:
        self.lefts: Dict[Tuple[str, str], str] = {}
        self.matches: Dict[Tuple[str, str, Any], Match] = {}
        self.names: Set[str] = set()  # chain names found valid
        # A container's address is in its DNAT rules and twice in its masquerade rule.
        self.addresses: Dict[str, str] = {}

    def address(self, value: str) -> str:
        found = self.addresses.get(value)
        if found is None:
            found = self.addresses[value] = _address(value)
        return found

    def right(self, value: Any) -> str:
        if type(value) is int:  # a port (not a bool: its type is bool)
            return str(value)
        if type(value) is str:
            try:
                return self.address(value)
            except ValueError:
                return value
        return _right(value)

    def chain_name(self, value: Any) -> str:
        if type(value) is not str or value not in self.names:
            self.names.add(_name(value))
        return value

    def left(self, value: Any) -> str:
        payload = value.get("payload") if type(value) is dict else None
        if type(payload) is dict:
            key = (payload["protocol"], payload["field"])
            found = self.lefts.get(key)
            if found is None:
                found = self.lefts[key] = _left(value)
            return found
        return _left(value)

    def match(self, expr: Mapping[str, Any]) -> Match:
        try:
            left = self.left(expr["left"])
            op = str(expr.get("op", "=="))
            right = expr["right"]
            key = (left, op, right) if type(right) in (int, str) else None
            found = self.matches.get(key) if key is not None else None
            if found is None:
                family = _ADDRESS_LEFTS.get(left)
                if family is not None:
                    self.addresses_of(left, right, family)
                found = _made_match(left, op, self.right(right))
                if key is not None:
                    self.matches[key] = found
            return found
        except _NotAnAddress:
            raise
        except (KeyError, TypeError, ValueError, AttributeError):
            return Match("?", raw=json.dumps({"match": expr}, sort_keys=True))

    def addresses_of(self, left: str, value: Any, family: int) -> None:
        """Raises _NotAnAddress where `value` of an address match (`left`) holds what is
        no address of `family`: a string (not a named set's `@name`), a prefix's
        address, a set's elements, a range's ends. Other forms are left as they are."""
        if type(value) is str:
            if value.startswith("@"):
                return
            try:
                address = self.address(value)
            except ValueError:
                address = None
            if address is None or _is_v6(address) != (family == 6):
                raise _NotAnAddress(f"{left} {value!r} is not an IPv{family} address")
        elif isinstance(value, dict) and len(value) == 1:
            ((kind, inner),) = value.items()
            if kind == "prefix" and isinstance(inner, dict):
                self.addresses_of(left, inner.get("addr"), family)
            elif kind in ("set", "range") and isinstance(inner, list):
                for element in inner:
                    self.addresses_of(left, element, family)

    def body(self, exprs: Iterable[Any], comment: Optional[str], family: int) -> RuleBody:
        matches: List[Match] = []
        action = _NO_ACTION
        for expr in exprs:
            if type(expr) is not dict or len(expr) != 1:
                if not isinstance(expr, dict) or len(expr) != 1:
                    raise ValueError("a rule expression is not a one-key object")
            ((key, value),) = expr.items()
            if key == "match" and isinstance(value, dict):
                matches.append(self.match(value))
            elif key == "dnat" and _plain_dnat(value):
                port = value.get("port")
                address = self.address(str(value["addr"]))
                if _is_v6(address) != (family == 6):
                    raise _NotAnAddress(f"dnat to {value['addr']!r} is not an IPv{family} address")
                action = _made_dnat(address, int(port) if port is not None else None)
            elif key == "masquerade" and not value:
                # (`masquerade random,persistent`, `to :port`: someone else's, opaque)
                action = _MASQUERADE
            elif key in ("jump", "goto") and isinstance(value, dict):
                action = Action(
                    ActionKind.JUMP if key == "jump" else ActionKind.OTHER,
                    target=str(value["target"]),
                    raw=None if key == "jump" else f"goto {value['target']}",
                )
            elif key == "counter":
                matches.append(COUNTER)
            else:
                # log, limit, ...: kept as opaque so the rule is not mistaken for ours.
                matches.append(Match("?", raw=json.dumps(expr, sort_keys=True)))
        return _made_body(tuple(matches), action, comment)


def _plain_dnat(value: Any) -> bool:
    """A dnat to one address and at most one port, as the plugin writes. Anything else
    someone wrote by hand (a map, a range, flags such as `persistent`) is read as an
    opaque statement: never the plugin's, and no reason to refuse the whole table."""
    return (
        isinstance(value, dict)
        and isinstance(value.get("addr"), str)
        and (value.get("port") is None or type(value.get("port")) is int)
        and set(value) <= {"addr", "port", "family"}
    )


_NO_ACTION = Action(ActionKind.NONE)
_MASQUERADE = Action(ActionKind.MASQUERADE)


# --- documents -> Ruleset ---------------------------------------------------------------


def parse(text: str, source: str) -> Ruleset:
    """One `nft -j list table|ruleset` document."""
    return parse_many([(text, source)])


def parse_many(documents: Iterable[Tuple[str, str]]) -> Ruleset:
    """Several documents (one per family, say) into one Ruleset."""
    tables: Dict[int, Dict[str, Any]] = {}
    version: Optional[str] = None
    values = _Values()
    for text, source in documents:
        version = _parse_into(text, source, tables, values) or version
    built = {}
    unread: List[UnreadChain] = []
    for family, parts in tables.items():
        rules = {name: tuple(found) for name, found in parts["rules"].items()}
        built[family] = Table(family, parts["handle"], dict(parts["chains"]), rules)
        unread += parts.get("unread", {}).values()
    return Ruleset(built, version, tuple(unread))


def _skip(parts: Dict[str, Any], family: int, chain: Any, why: str, rule: bool) -> None:
    """Leave out a chain that is not the plugin's (or one of its rules), said once."""
    name = chain if isinstance(chain, str) else repr(chain)
    if not isinstance(chain, str) or not _NAME.match(chain):
        why = "a name nft's own syntax cannot write" if isinstance(chain, str) else "no name"
    skipped = parts.setdefault("unread", {})
    found = skipped.get(name)
    if found is None:
        found = UnreadChain(family, name, why)
    skipped[name] = UnreadChain(family, name, found.why, found.rules + rule)


def _bad(source: str, detail: str) -> BadInput:
    return BadInput(f"{source}: not `nft -j list` output ({detail})")


def _parse_into(
    text: str, source: str, tables: Dict[int, Dict[str, Any]], values: _Values
) -> Optional[str]:
    if "\x00" in text:
        raise _bad(source, "binary data")
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise _bad(source, f"invalid JSON: {err}") from None
    if not isinstance(document, dict) or not isinstance(document.get("nftables"), list):
        raise _bad(source, 'no "nftables" list')
    version = None
    for index, item in enumerate(document["nftables"]):
        # Rules are nearly all of it: taken first, the rest as below.
        rule = item.get("rule") if type(item) is dict and len(item) == 1 else None
        if type(rule) is dict:
            try:
                _add_rule(rule, tables, values)
            except (KeyError, TypeError, ValueError) as err:
                # (A KeyError's own text is the key alone: 'expr'.)
                what = f"no {err} key" if isinstance(err, KeyError) else str(err)
                raise _bad(source, f"item {index}: bad rule: {what}") from None
            continue
        if not isinstance(item, dict) or len(item) != 1:
            raise _bad(source, f"item {index} is not a one-key object")
        ((kind, obj),) = item.items()
        if not isinstance(obj, dict):
            raise _bad(source, f"item {index}: {kind} is not an object")
        try:
            if kind == "metainfo":
                version = str(obj.get("version")) if obj.get("version") else None
            elif kind in ("table", "chain", "rule"):
                _add_object(kind, obj, tables, values)
        except (KeyError, TypeError, ValueError) as err:
            raise _bad(source, f"item {index}: bad {kind}: {err!r}") from None
    return version


def _ours(obj: Mapping[str, Any], table_key: str) -> Optional[int]:
    """The family of an object of a `cni_hostport` table, else None."""
    family = obj["family"]
    if obj[table_key] != TABLE or family not in FAMILIES:
        return None
    return FAMILIES[family]


def _handle(obj: Mapping[str, Any]) -> int:
    handle = obj["handle"]
    if isinstance(handle, bool) or not isinstance(handle, int) or handle < 0:
        raise ValueError(f"handle {handle!r}")
    return handle


def _add_object(
    kind: str, obj: Mapping[str, Any], tables: Dict[int, Dict[str, Any]], values: _Values
) -> None:
    if kind == "table":
        family = _ours(obj, "name")
        if family is not None:
            tables.setdefault(family, {"chains": {}, "rules": {}})["handle"] = _handle(obj)
        return
    if kind == "rule":
        _add_rule(obj, tables, values)
        return
    family = _ours(obj, "table")
    if family is None:
        return
    parts = tables.get(family)
    if parts is None:  # (setdefault would build the default for each of 4,000 rules)
        parts = tables[family] = {"chains": {}, "rules": {}, "handle": 0}
    try:
        name = _name(obj["name"])  # a chain
    except ValueError as err:
        # (Never one of the plugin's names: each of them is a valid one.)
        _skip(parts, family, obj["name"], str(err), rule=False)
        return
    base = policy = None
    if "hook" in obj:
        base = BaseHook(str(obj["type"]), str(obj["hook"]), int(obj["prio"]))
        policy = str(obj.get("policy", "accept"))
    parts["chains"][name] = Chain(family, name, _handle(obj), base, policy)


def _add_rule(obj: Mapping[str, Any], tables: Dict[int, Dict[str, Any]], values: _Values) -> None:
    family = _ours(obj, "table")
    if family is None:
        return
    parts = tables.get(family)
    if parts is None:  # (setdefault would build the default for each of 4,000 rules)
        parts = tables[family] = {"chains": {}, "rules": {}, "handle": 0}
    chain = obj["chain"]
    try:
        chain = values.chain_name(chain)
        comment = obj.get("comment")
        if comment is not None and not isinstance(comment, str):
            raise ValueError("comment is not a string")
        exprs = obj["expr"]
        if not isinstance(exprs, list):
            raise ValueError("expr is not a list")
        handle = obj["handle"]
        if type(handle) is not int or handle < 0:
            handle = _handle(obj)  # (raises: what is wrong with it)
        body = values.body(exprs, comment, family)
    except (KeyError, TypeError, ValueError) as err:
        if not isinstance(chain, str) or chain in PLUGIN_CHAINS:
            raise  # the plugin's own chain cannot be read: the whole table is refused
        what = f"no {err} key" if isinstance(err, KeyError) else str(err)
        _skip(parts, family, chain, what, rule=True)
        return
    rule = _made_rule(family, chain, handle, body)
    rules = parts["rules"].get(chain)
    if rules is None:
        rules = parts["rules"][chain] = []
    rules.append(rule)


_NAME = lazy(r"[A-Za-z_][A-Za-z0-9_./-]*\Z")


def _name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(f"chain name {value!r}")
    return value


# --- nft condition text -> values ----------------------------------------------------------


_SELECTORS = {
    ("ip", "saddr"), ("ip", "daddr"), ("ip6", "saddr"), ("ip6", "daddr"),
    ("tcp", "dport"), ("tcp", "sport"), ("udp", "dport"), ("udp", "sport"),
    ("sctp", "dport"), ("sctp", "sport"),
}  # fmt: skip
_META = {"iifname", "oifname", "iif", "oif", "mark"}
_OPS = {"==": "==", "eq": "==", "!=": "!=", "ne": "!="}


def parse_conditions(texts: Iterable[str]) -> Tuple[Match, ...]:
    """The plugin's `conditionsV4/V6` (nft syntax, joined by spaces) as matches.

    Only plain selector/value matches are modelled (addresses, prefixes, ports,
    interface names); anything else becomes one opaque match holding the text, which
    still prints back verbatim, as the plugin passes it.
    """
    text = " ".join(texts).strip()
    if not text:
        return ()
    tokens = text.split()
    found: List[Match] = []
    i = 0
    try:
        while i < len(tokens):
            if (tokens[i], tokens[i + 1] if i + 1 < len(tokens) else "") in _SELECTORS:
                left = f"{tokens[i]} {tokens[i + 1]}"
                i += 2
            elif tokens[i] in _META or (tokens[i] == "meta" and tokens[i + 1] in _META):
                i += 1 if tokens[i] != "meta" else 2
                left = f"meta {tokens[i - 1]}"
            else:
                raise ValueError(tokens[i])
            op = "=="
            if tokens[i] in _OPS:
                op = _OPS[tokens[i]]
                i += 1
            found.append(Match(left, op, _condition_value(left, tokens[i])))
            i += 1
    except (IndexError, ValueError):
        return (Match("?", raw=text),)
    return tuple(found)


def _condition_value(left: str, token: str) -> str:
    if left.endswith("addr"):
        return _network_text(ipaddress.ip_network(token, strict=False))
    if left.endswith("port"):
        if not token.isdigit():
            raise ValueError(token)
        return str(int(token))
    if left in _QUOTED:
        if token.startswith('"') and token.endswith('"') and len(token) >= 2:
            token = token[1:-1]
        if not token or '"' in token:
            raise ValueError(token)
    return token
