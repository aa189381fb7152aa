"""An nftables zombie's check row names its rules' chain (`nft:hostports`) and, where
they are in one family, that family (node_problems.zombies): it is a problem in
nftables (Problem.in_nftables). followed_entries.left_alone takes the families that
other containers' nftables problems need the plugin's tables in; a zombie needs none
(its fix is gc, --repair writes nothing for it), so its row must change nothing of
what left_alone leaves of the rows of the tables (rows as the check gives them on a
v1.9.1 node: tests/interop/test_nft_commands.py's zombie tests)."""

from __future__ import annotations

from dataclasses import replace

from portmapctl.core.status import ProblemKind
from portmapctl.ops.check.followed_entries import left_alone
from portmapctl.ops.check.problem import CheckResult, Problem

REPAIR = "portmapctl check --repair"
GC = "portmapctl gc --netns-liveness"

ZOMBIE = Problem(
    ProblemKind.ZOMBIE.value,
    4,
    "nft:hostports",
    "podman",
    "zomb4",
    "cached on podman, but its network namespace /run/netns/does-not-exist is gone;"
    " its rules are still in nftables; not repaired",
    GC,
    rules=('tcp dport 7300 dnat to 10.88.0.50:70 comment "zomb4"',),
)
# The plugin's IPv4 table without prerouting's jump (a row of the table, no container).
ENTRY = Problem(
    ProblemKind.NFT_MISSING_ENTRY.value, 4, "nft:prerouting", None, None, "no jump", REPAIR
)
# The container whose backend is in doubt: its own row in nftables.
DOUBTED = Problem(
    ProblemKind.NFT_MISSING_RULES.value, 4, "nft:hostports", "podman", "web1", "missing", REPAIR
)
# Another live container of IPv4 in nftables that needs the table.
OTHER = replace(DOUBTED, container_id="ok1")


def test_the_zombie_row_is_in_nftables_with_its_family() -> None:
    assert ZOMBIE.in_nftables and ZOMBIE.family == 4


def test_a_nft_zombies_row_does_not_keep_the_tables_fix_for_a_container_in_doubt() -> None:
    alone = left_alone(CheckResult((ENTRY, DOUBTED), (4,)), {("podman", "web1")}, [])
    with_zombie = left_alone(CheckResult((ENTRY, DOUBTED, ZOMBIE), (4,)), {("podman", "web1")}, [])
    assert alone.problems[0].fix == ""  # (nothing but the doubted one needs the table)
    assert with_zombie.problems[:2] == alone.problems, with_zombie.problems
    # The zombie's own row: as it was (gc's fix is not --repair's).
    assert with_zombie.problems[2] == ZOMBIE


def test_another_containers_row_keeps_the_tables_fix() -> None:
    """(What the zombie's row must not stand in for: a live container that needs it.)"""
    done = left_alone(CheckResult((ENTRY, DOUBTED, OTHER, ZOMBIE), (4,)), {("podman", "web1")}, [])
    assert done.problems[0].fix == REPAIR
    assert done.problems[3] == ZOMBIE
