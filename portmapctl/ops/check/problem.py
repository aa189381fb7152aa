"""What `check` reports: a Problem, a CheckResult, and the rules a problem is about
as iptables-save prints them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

from portmapctl.core.mapping import Mapping
from portmapctl.core.text import name_text
from portmapctl.iptables import inventory
from portmapctl.iptables.ruleset import Args
from portmapctl.iptables.shown import shown_rule


@dataclass(frozen=True)
class Unrepaired:
    """A container whose mapping a repair could not (re)make, and why."""

    family: int
    network: str
    container_id: str
    chain: str
    why: str

    @property
    def text(self) -> str:
        # The names are the node's, as their cells write them (core/text.name_text);
        # `why` is written so by whoever made it.
        return (
            f"could not repair IPv{self.family}"
            f" {name_text(self.network)}/{name_text(self.container_id)}"
            f" ({self.chain}): {self.why}"
        )


@dataclass(frozen=True)
class Problem:
    """One thing wrong on the node: what, where, why it matters, and what fixes it."""

    kind: str
    family: Optional[int]
    chain: Optional[str]
    network: Optional[str]
    container_id: Optional[str]
    detail: str
    fix: str
    why: str = ""
    # The rules at issue as iptables-save prints them (`-A CHAIN ...`; nft: the rule
    # text): the offending ones, or the wanted ones that are missing (check -o wide).
    rules: Tuple[str, ...] = ()

    @property
    def in_nftables(self) -> bool:
        """A problem of a chain or rules in the plugin's nftables tables (its chain is
        spelled `nft:CHAIN`)."""
        return (self.chain or "").startswith("nft:")

    @property
    def key(self) -> Tuple[str, Optional[int], Optional[str], Optional[str], Optional[str]]:
        """Identity across two checks (details carry counts that change)."""
        return (self.kind, self.family, self.chain, self.network, self.container_id)


@dataclass(frozen=True)
class CheckResult:
    """What a check (or a repair and the check after it) found."""

    problems: Tuple[Problem, ...]
    families: Tuple[int, ...]
    # "node": the whole node from the CNI cache; "mapping": one given mapping.
    scope: str = "node"
    cache_present: bool = False
    mappings_checked: int = 0  # (container, family) pairs compared with the table
    chains_seen: int = 0  # per-container chains on the node (node scope)
    chain: Optional[str] = None  # the mapping's chain (mapping scope)
    repaired: bool = False
    fixed: Tuple[Problem, ...] = ()
    transactions: Dict[int, str] = field(default_factory=dict)
    notes: Tuple[str, ...] = ()
    warnings: Tuple[str, ...] = ()
    # The node as check read it (node scope): what --metrics-file counts.
    found: Optional[inventory.Inventory] = field(default=None, compare=False, repr=False)
    # The node's rows (iptables', then nftables'), with the statuses their ports' other
    # owners give (ops/owners.py), as list shows them: what --metrics-file counts.
    rows: Tuple[Mapping, ...] = field(default=(), compare=False, repr=False)
    # What a repair could not make: (family, network, container ID, chain, why).
    unrepaired: Tuple[Tuple[int, str, str, str, str], ...] = ()

    # Of mappings_checked, those kept in nftables (a container's rules, not a chain).
    nft_checked: int = 0
    # (container, family) rule sets in the plugin's nftables tables (node scope): what
    # chains_seen is of iptables.
    nft_seen: int = 0
    # The backend --backend narrowed check to where the other one holds the plugin's
    # mappings (flavour_guard.UnreadBackend): the summary names what it read.
    looked_at: Optional[str] = None
    # The chains of containers with an unreadable cache entry that the node's repair
    # writes all the same (unread_entries.node_written): (family, network, ID).
    unread_written: frozenset[Tuple[int, str, str]] = field(
        default=frozenset(), compare=False, repr=False
    )
    # The cache entries the node's check placed in nftables (ops/nft.split: by their
    # key, a keyless one only by evidence there), as (network, container ID): the repair
    # plans nftables from these alone, iptables from the others
    # (followed_entries.in_doubt_left counts them as wanting the table).
    nft_placed: frozenset[Tuple[str, str]] = field(default=frozenset(), compare=False, repr=False)

    @property
    def healthy(self) -> bool:
        return not self.problems


# --- the rules a problem is about ------------------------------------------------------


def _saved_line(chain: str, rule: Args) -> str:
    return shown_rule("-A", chain, rule)  # (a control character from a dump: escaped)


def saved_rules(chain: str, rules: Sequence[Args]) -> Tuple[str, ...]:
    """Rules of `chain` as iptables-save prints them."""
    return tuple(_saved_line(chain, rule) for rule in rules)


def saved_lines(rules: Sequence[Tuple[str, Args]]) -> Tuple[str, ...]:
    """(chain, rule) pairs as iptables-save prints them."""
    return tuple(_saved_line(chain, rule) for chain, rule in rules)


def entries_or_rules(c: inventory.ChainInfo) -> Tuple[str, ...]:
    """The rules that jump to a chain (they take its host ports), else its own rules."""
    if c.entries:
        return saved_lines([(e.chain, e.args) for e in c.entries])
    return saved_rules(c.name, c.rules)


def entries_for(c: inventory.ChainInfo, ports: Sequence[Tuple[str, int]]) -> Tuple[str, ...]:
    """The entry rules of a chain that name one of `ports`."""
    wanted = set(ports)
    return saved_lines([(e.chain, e.args) for e in c.entries if wanted & set(e.ports)])
