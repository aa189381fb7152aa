"""`iptables-save` text, read into a nat table; looking into its rules; writing them.

This module, `lexer.py` (a line into words), `normal_form.py` and `transaction.py`
are the only ones that know iptables' text syntax.

A rule is kept as its argument tokens after `-A CHAIN`, unquoted, exactly as
`iptables-save` printed them: the normal form (`normal_form.py`, which puts the
rules we generate in it). Wanted and live rules are then compared as plain tuples.

The parser never rejects what it does not know: other tools' chains, matches and
targets are kept token for token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import (
    Any,
    Callable,
    Collection,
    Dict,
    List,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
)

from portmapctl.core.patterns import lazy
from portmapctl.errors import BadInput
from portmapctl.iptables.lexer import split_words
from portmapctl.iptables.normal_form import FLAG_OPTIONS
from portmapctl.iptables.spelling import is_rule_address, nat_misread

Args = Tuple[str, ...]

BUILTIN_NAT_CHAINS = ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")

T = TypeVar("T")


@dataclass(frozen=True)
class SavedChain:
    """One chain as `iptables-save` shows it: policy (`-` for user chains) and rules."""

    name: str
    policy: str = "-"
    rules: Tuple[Args, ...] = ()

    @property
    def builtin(self) -> bool:
        return self.policy != "-"


@dataclass(frozen=True)
class NatTable:
    """The nat table of one address family. `chains` keeps iptables-save's order.

    `generation`: the nf_tables ruleset generation it was read at, when the backend
    could tell that nothing committed while it read (iptables-nft); None otherwise. It
    lets gc's removal be refused whole by the kernel if anything changed since
    (iptables/access/nfnl_batch.py). Not part of the table's value."""

    family: int
    chains: Dict[str, SavedChain] = field(default_factory=dict)
    generation: Optional[int] = field(default=None, compare=False, repr=False)
    # What derived() made of it: no part of its value, nor of a copy (init=False: a
    # table made by replace() or without() starts with none).
    _derived: Dict[str, Any] = field(default_factory=dict, init=False, compare=False, repr=False)

    def derived(self, key: str, make: Callable[[NatTable], T]) -> T:
        """`make(self)`, made once per table (a table is not changed once made): an
        index a check consults for every container, built once instead of a scan of
        CNI-HOSTPORT-DNAT per container (quadratic at thousands of them)."""
        if key not in self._derived:
            self._derived[key] = make(self)
        return self._derived[key]

    def rules(self, chain: str) -> Tuple[Args, ...]:
        found = self.chains.get(chain)
        return found.rules if found else ()

    def has_chain(self, chain: str) -> bool:
        return chain in self.chains

    def without(self, gone: Collection[str]) -> NatTable:
        """The table without the chains in `gone` and the rules that jump to them
        (what a teardown of them leaves); chains it does not touch are shared."""
        chains: Dict[str, SavedChain] = {}
        for name, chain in self.chains.items():
            if name in gone:
                continue
            rules = tuple(rule for rule in chain.rules if rule_target(rule) not in gone)
            same = len(rules) == len(chain.rules)
            chains[name] = chain if same else SavedChain(name, chain.policy, rules)
        return NatTable(self.family, chains)


# --- reading -----------------------------------------------------------------


# Rules of the built-in chains are always read whole: entry rules and their shadows.
_BUILTIN_RULE = tuple(f"-A {name} " for name in BUILTIN_NAT_CHAINS)


_UNREADABLE_RE = lazy(r"^# Table `nat' is incompatible.*$", re.MULTILINE)
# `iptables-save -c` puts each rule's counters first: "[PACKETS:BYTES] -A CHAIN ...".
_COUNTERS_RE = lazy(r"^\[\d+:\d+\] (?=-A )", re.MULTILINE)


def unreadable_note(text: str) -> Optional[str]:
    """iptables-nft-save's note that it could not show the nat table (it holds rules
    only nft understands), or None. The save still exits 0, with no table at all."""
    found = _UNREADABLE_RE.search(text)
    return found.group(0).lstrip("# ").strip() if found else None


def parse_save(
    text: str,
    family: int,
    source: str = "iptables-save output",
    *,
    strict: bool = False,
    skip_foreign: bool = False,
) -> NatTable:
    """Read the nat table out of `iptables-save` text (other tables are skipped).

    skip_foreign (the backends' reads): a rule of another tool's chain without "CNI-"
    anywhere in it (it can neither jump to a portmap chain nor be one) is not split
    into words: it is kept as a one-token placeholder, its whole line, so positions
    stay right (`list` on a kube-proxy node of 50,000 rules: docs/performance.md).
    Nothing portmapctl does looks into such a rule; it is never written back.

    Rule counters (`iptables-save -c`) are left out: they are not part of the rule.
    Text without a nat table gives an empty table: nothing of the plugin's is there.
    Raises BadInput, naming the line, for text that is not iptables-save output.
    `strict` (a --snapshot: text from a file, not from iptables-save itself) also
    refuses nat rules that iptables-restore would refuse (`restore_refusal`).
    """
    note = unreadable_note(text)
    if note is not None:
        raise BadInput(f"{source}: the nat table could not be saved ({note}): nothing to read")
    if "\n[" in text:
        # Saved with -c (a support bundle's dump): the rules are the same without them.
        text = _COUNTERS_RE.sub("", text)
    chains: Dict[str, SavedChain] = {}
    rules: Dict[str, List[Args]] = {}
    table: Optional[str] = None
    seen_nat = False
    # Asked of the whole text once, not of every line: most texts have neither.
    carriage_returns = "\r" in text
    binary = "\x00" in text
    # Lines end at "\n" only, as iptables-restore reads them: str.splitlines() would
    # also cut at \x1c, \x85 or \u2028 inside a quoted comment.
    for number, line in enumerate(text.split("\n"), 1):
        if carriage_returns and line.endswith("\r"):
            line = line[:-1]
        if table == "nat" and line.startswith("-A "):
            # The bulk of the text (9 lines per container), first: none of the checks
            # below but this one can fire for such a line. (A closure per line, as
            # below, cost a tenth of the time.)
            if binary and "\x00" in line:
                raise _bad(source, number, "binary data, not iptables-save output")
            if skip_foreign and "CNI-" not in line and not line.startswith(_BUILTIN_RULE):
                # Another tool's rule that cannot jump to (or be) a portmap chain: on a
                # Kubernetes node, tens of thousands of KUBE-SVC-/KUBE-SEP- rules. Kept
                # as a placeholder (its raw line, one token: no target, no options) so
                # the chain keeps its length and positions, never split into words.
                end = line.find(" ", 3)
                chain_rules = rules.get(line[3:end] if end > 0 else line[3:])
                if chain_rules is not None:
                    chain_rules.append((line,))
                    continue
            # split_words' first fast path, inline (no newline can be in a line here).
            tokens = line.split(" ") if '"' not in line and "\t" not in line else []
            if not all(tokens) or not tokens:
                try:
                    tokens = split_words(line)
                except ValueError as err:
                    raise _bad(source, number, str(err)) from None
            if len(tokens) < 2:
                raise _bad(source, number, "rule without a chain")
            if strict:
                refused = restore_refusal(tokens[2:])
                if refused:
                    raise _bad(source, number, f"iptables-restore would refuse it: {refused}")
                misread = address_refusal(tokens[2:], family)
                if misread:
                    save = "ip6tables-save" if family == 6 else "iptables-save"
                    raise _bad(
                        source,
                        number,
                        f"{misread} ({save} prints only addresses there):"
                        f" give the output of `{save} -t nat`",
                    )
            chain_rules = rules.get(tokens[1])
            if chain_rules is None:
                raise _bad(source, number, f"rule for undeclared chain {tokens[1]!r}")
            chain_rules.append(tuple(tokens[2:]))
            continue
        if not line or line.startswith("#") or line.isspace():
            continue

        def bad(why: str, number: int = number) -> BadInput:
            return _bad(source, number, why)

        if "\x00" in line:
            raise bad("binary data, not iptables-save output")
        if line.startswith("*"):
            if table is not None:
                raise bad(f"table {line[1:]!r} starts before table {table!r} was COMMITted")
            table = line[1:].strip()
            if table == "nat":
                if seen_nat:
                    raise bad("a second nat table")
                seen_nat = True
            continue
        if table is None:
            raise bad("not iptables-save output (expected a '*table' line first)")
        if line.rstrip() == "COMMIT":
            table = None
            continue
        if table != "nat":
            continue
        if line.startswith(":"):
            parts = line[1:].split()
            if len(parts) < 2:
                raise bad("malformed chain line")
            name, policy = parts[0], parts[1]
            chains[name] = SavedChain(name, policy)
            rules.setdefault(name, [])
        else:
            raise bad(f"unexpected line {line[:60]!r}")
    if table is not None:
        raise BadInput(f"{source}: table {table!r} has no COMMIT (truncated?)")
    return NatTable(
        family,
        {name: SavedChain(name, c.policy, tuple(rules[name])) for name, c in chains.items()},
    )


# Options that take a value: generic ones, and what the plugin's and kube-proxy's
# rules use. Given last on a line, iptables-restore refuses the rule.
_NEEDS_VALUE = frozenset(
    {"-p", "-s", "-d", "-i", "-o", "-j", "-g", "-m", "--dport", "--sport", "--dports",
     "--sports", "--comment", "--to-destination", "--to-source", "--to-ports", "--mark",
     "--set-xmark", "--set-mark", "--dst-type", "--src-type", "--match-set"}
)  # fmt: skip


def restore_refusal(args: Sequence[str]) -> Optional[str]:
    """Why iptables-restore would refuse a rule (its arguments after `-A CHAIN`), or
    None. Only what is sure to be refused whatever the extensions: a `!` that negates
    nothing (a line cut to `-A POSTROUTING !`), a value-taking option without its
    value, a `-j`/`-g`/`-m` followed by an option instead of a name. Anything else
    is left to iptables, as the parser leaves other tools' rules alone."""
    free = False  # (this token is a free-text option's value)
    for i, token in enumerate(args):
        following = args[i + 1] if i + 1 < len(args) else None
        if free:
            free = False
            continue
        if token in _FREE_TEXT:
            if following is None:
                return f"option {token} at the end of the rule has no value"
            free = True
        elif token == "!":
            if following is None:
                return "'!' at the end of the rule negates nothing"
            if not following.startswith("-"):
                return f"'!' before {following!r}, which is not an option"
        elif token in _NEEDS_VALUE:
            if following is None:
                return f"option {token} at the end of the rule has no value"
            if token in ("-j", "-g", "-m") and following.startswith("-"):
                return f"option {token} needs a name, not {following!r}"
    return None


# Options whose value is free text, which iptables-save prints unquoted when it is of
# `-_0-9A-Za-z` (`--log-prefix -s`, `--comment -j`, a recent list's `--name -p`) or
# quoted (`--log-prefix "!"`, `--string "-m"`): a word, whatever it looks like.
_FREE_TEXT = frozenset(
    {"--comment", "--log-prefix", "--nflog-prefix", "--ulog-prefix", "--name",
     "--hashlimit-name", "--string", "--helper"}
)  # fmt: skip


# Options whose value is an address (or, for the NAT targets, a range of them): what
# list, check and add read out of a rule's -d and --to-destination.
_ADDRESS_OPTIONS = frozenset({"-s", "-d", "--source", "--src", "--destination", "--dst"})
_NAT_OPTIONS = frozenset({"--to-destination", "--to-source"})
_ADDRESS_WORDS = _ADDRESS_OPTIONS | _NAT_OPTIONS


def address_refusal(args: Sequence[str], family: int) -> Optional[str]:
    """What in a rule (its arguments after `-A CHAIN`) is not an address of `family`
    where one must be (-s, -d, a DNAT's --to-destination, an SNAT's --to-source), or
    None. iptables prints none such, and iptables-restore takes none (a name in -s/-d
    it would look up, not in a dump); a snapshot's `-d zz::zz::1/128` in a plugin
    chain was an internal error of list and check (review h304)."""
    present = _ADDRESS_WORDS.intersection(args)
    if not present:
        return None  # (asked in C: a dump's rules are many)
    found: List[Tuple[int, str]] = []
    last = len(args) - 1
    for word in present:
        at = -1
        for _ in range(args.count(word)):  # (no ValueError to end on: it costs)
            at = args.index(word, at + 1)
            if at == last or at and _valued(args[at - 1]):
                continue  # (last: no value; after an option: that option's free text)
            value = args[at + 1]
            if word in _NAT_OPTIONS:
                misread = nat_misread(value, family)
                if misread is not None:
                    found.append(
                        (at, f"{word} {value!r}: {misread!r} is not an IPv{family} address")
                    )
            elif not is_rule_address(value, family):
                found.append((at, f"{word} {value!r} is not an IPv{family} address"))
    return min(found)[1] if found else None  # (the first in the rule, whatever the set's order)


def _valued(word: str) -> bool:
    """Whether `word`, just before an address option's name, is an option whose value
    that name is: iptables-save prints a free text of `-_0-9A-Za-z` unquoted (`--comment
    -d`, `--log-prefix -d`, a recent list's `--name -d`; a quoted `"-d"` is the same
    word once read), and a real -s/-d follows the chain, a `!` or a value, a NAT
    target's option its target's name. A flag is no option with a value (`--syn -d`)."""
    return word[:1] == "-" and word not in FLAG_OPTIONS


def _bad(source: str, number: int, why: str) -> BadInput:
    return BadInput(f"{source}: line {number}: {why}")


# --- looking into rules --------------------------------------------------------


def rule_target(args: Sequence[str]) -> Optional[str]:
    """The `-j`/`-g` target of a rule in saved form (it is always near the end)."""
    for i in range(len(args) - 2, -1, -1):
        if args[i] in ("-j", "-g"):
            return args[i + 1]
    return None


def options(args: Sequence[str]) -> Dict[str, str]:
    """Every token mapped to the one after it, first occurrence winning: what
    option_value(args, name) answers for each name, in one pass (in C). For code that
    asks several questions of one rule."""
    return dict(zip(args[-2::-1], args[:0:-1]))


def option_value(args: Sequence[str], *names: str) -> Optional[str]:
    """The value after the first of `names`, or None. Negation is not reported."""
    # tuple.index searches in C: `list` of 5,000 containers asks 200,000 times.
    first = len(args) - 1  # a name in the last place has no value
    for name in names:
        try:
            first = args.index(name, 0, first)
        except ValueError:
            continue
    return args[first + 1] if first < len(args) - 1 else None


# --- writing -----------------------------------------------------------------

# The same two checks as regular expressions: a transaction of 1,000 containers has
# some 30,000 tokens, and per-character generators took 0.2 s of gc's budget. (What
# quote() refuses, iptables/shown.py writes out for people.)
CONTROL_CHARS = lazy(r"[\x00-\x1f\x7f]")
_BARE_RE = lazy(r"[A-Za-z0-9_\-./:,!\[\]+=@%]+\Z")


def quote(token: str) -> str:
    """One argument as iptables-restore reads it back unchanged.

    Refuses control characters: a newline inside a token would start a new
    restore command, which is how text from a dump could inject a rule.
    """
    if CONTROL_CHARS.search(token):
        raise BadInput(f"refusing a rule argument with control characters: {token!r}")
    if _BARE_RE.match(token):
        return token
    escaped = token.replace("\\", "\\\\").replace('"', '\\"').replace("'", "\\'")
    return f'"{escaped}"'


def format_rule(command: str, chain: str, args: Sequence[str]) -> str:
    """A restore line such as `-A CHAIN args...` with every argument quoted safely."""
    return " ".join([command, quote(chain), *(quote(a) for a in args)])
