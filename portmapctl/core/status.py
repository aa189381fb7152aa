"""The words every output uses for what it found, as `str` Enums: JSON keeps the plain
words, and a misspelt status is a NameError instead of a silently empty filter."""

from __future__ import annotations

from enum import Enum, StrEnum


class Status(str, Enum):
    """A mapping's or chain's state (SPEC §3 list); a row carries one or more."""

    OK = "ok"
    STALE = "stale"  # no CNI cache entry names the container
    SHADOWED = "shadowed"  # an earlier rule takes its host port (first match wins)
    ORPHAN = "orphan"  # a per-container chain that no rule enters
    INCOMPLETE = "incomplete"  # an entry rule names a port the chain does not DNAT
    LEGACY = "legacy"  # a CNI-SN- chain from plugins before 2018
    DEAD = "dead"  # a rule that can never match (-d 0.0.0.0/32, plugins < v0.8.7)
    ZOMBIE = "zombie"  # cached, but the container's network namespace is gone
    # Not in SPEC §3's list: the same port mapped live in the other plugin backend
    # (iptables and nftables hook nat at one priority; no dump says which wins).
    CONTESTED = "contested"

    def __str__(self) -> str:
        return self.value

    # Equal to its word, so it must hash like it (Enum hashes the member's name).
    __hash__ = str.__hash__


class ProblemKind(str, Enum):
    """What `check` reports; stable words (JSON consumers match on them)."""

    MISSING_CHAIN = "missing-chain"  # a cached container's CNI-DN- chain is not there
    MISSING_RULES = "missing-rules"  # ... it is there but lacks some of its rules
    EXTRA_RULES = "extra-rules"  # ... it holds rules its cached config does not make
    RULES_ORDER = "rules-order"  # ... the right rules, in the wrong order (or repeated)
    MISSING_ENTRY = "missing-entry"  # CNI-HOSTPORT-DNAT lacks an entry rule to the chain
    EXTRA_ENTRY = "extra-entry"  # CNI-HOSTPORT-DNAT sends ports the container does not map
    # A cached container's chain, entered, that its cached config maps no ports for
    # (added again with `portMappings: []`): gc keeps it, --repair leaves it.
    UNEXPECTED_MAPPING = "unexpected-mapping"
    MISSING_TOPLEVEL = "missing-toplevel"  # CNI-HOSTPORT-DNAT/SETMARK/MASQ is gone
    MISSING_TOPLEVEL_RULE = "missing-toplevel-rule"  # SETMARK's or MASQ's rule is gone
    MISSING_JUMP = "missing-jump"  # PREROUTING/OUTPUT/POSTROUTING no longer jump in
    SHADOWED = "shadowed"
    ORPHAN = "orphan"
    INCOMPLETE = "incomplete"
    STALE = "stale"
    LEGACY = "legacy"
    DEAD = "dead"
    ZOMBIE = "zombie"
    DUPLICATE_ENTRY = "duplicate-entry"
    SPLIT_BRAIN = "split-brain"
    # The plugin's nftables backend (tables ip/ip6 cni_hostport).
    NFT_MISSING_TABLE = "nft-missing-table"
    NFT_MISSING_CHAIN = "nft-missing-chain"
    NFT_MISSING_ENTRY = "nft-missing-entry"  # prerouting/output do not reach the rules
    NFT_MISSING_JUMPS = "nft-missing-jumps"  # hostports_all lacks its two jumps
    # prerouting holds v1.6/v1.7's entry (no `fib daddr type local`) in a table v1.9
    # made (hostports_all): an older plugin's ADD ran last, and forwarded traffic on a
    # mapped port is DNATed too
    NFT_ENTRY_NOT_LOCAL = "nft-entry-not-local"
    NFT_MISSING_RULES = "nft-missing-rules"  # a cached nft-backed container lacks rules
    # Rules with a cached container's ID for a host port or address none of its cached
    # configs has: maybe its mapping on a network whose entry is not read here (the
    # rules carry the bare ID); --repair leaves them (nftables/planner.not_wanted)
    NFT_UNCLAIMED_RULES = "nft-unclaimed-rules"
    # prerouting/output/masquerading is not the base chain the plugin's ADD asks for
    # (another type, hook or priority: that ADD then fails; or a policy other than accept)
    NFT_WRONG_BASE_CHAIN = "nft-wrong-base-chain"
    BOTH_BACKENDS = "both-backends"  # one container's rules in iptables and nftables
    CONTESTED = "contested"  # one host port mapped in iptables and in nftables

    def __str__(self) -> str:
        return self.value

    # Equal to its word, so it must hash like it (Enum hashes the member's name).
    __hash__ = str.__hash__


class FlushReason(StrEnum):
    """Why flush-udp deletes a conntrack entry (its JSON `reason`, its table's WHY)."""

    # Plain flush: every entry under the port goes.
    MAPPED = "mapped"  # the port is a mapped UDP host port
    GIVEN = "given"  # the port was asked for (--port) and is not mapped
    # --stale-only: the entry misroutes.
    OLD_DESTINATION = "old-destination"  # DNATed elsewhere than the container's address:port
    NOT_DNATED = "not-dnated"  # never DNATed: its flow began before the rule, bypasses it
    UNMAPPED = "unmapped"  # DNATed, but nothing maps this port (or address) any more


class GcHold(StrEnum):
    """Why gc leaves a chain past --min-age for a later run (its JSON `held`, its row's
    STATUS): a container may be being added with that very chain, its cache entry not
    written yet (ops/gc/planning._adding); or its removal cannot go in on a busy node
    (ops/gc/family._by_text). Not a time: it waits as long as that lasts."""

    # A network namespace younger than --min-age, in no cache entry, has its address.
    ADDRESS_IN_NEW_NAMESPACE = "address-in-new-namespace"
    # Such a namespace gc could not look into (no CAP_SYS_ADMIN): it may have it.
    NEW_NAMESPACE_UNSEEN = "new-namespace-unseen"
    # A rule of another tool with control characters in its comment enters it: it goes
    # by number, behind a guard the plugin's calls failed at every try this run.
    FOREIGN_ENTRY_UNWRITABLE = "foreign-entry-unwritable"


class ChainKind(StrEnum):
    """What a per-container row's chain is (`chain_type` in JSON and metrics)."""

    DNAT = "dnat"  # an iptables CNI-DN- chain
    LEGACY_SNAT = "legacy-snat"  # an iptables CNI-SN- chain (plugins before 2018)
    # The nftables backend has no chain per container: its rows are rules of the
    # shared chains.
    NFT_RULE = "nft-rule"
