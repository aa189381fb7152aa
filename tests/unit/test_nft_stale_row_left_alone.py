"""followed_entries.left_alone keeps --repair on a row of the plugin's nftables table
only where some other container's problem in nftables needs that table. The rows of a
container the cache does not know (stale, as nft_problems gives them: its DNAT rules,
or only its masquerade rules left) need none: their fix is gc, and the repair plans no
table for them; counted, they kept the fix on a table row only a container in doubt
wants, and `check --repair` wrote nothing (tests/interop/test_nft_in_doubt_beside_stale.py
on the real plugins)."""

from __future__ import annotations

import pytest

from portmapctl.core.status import ProblemKind
from portmapctl.ops.check.followed_entries import left_alone
from portmapctl.ops.check.problem import CheckResult, Problem

REPAIR = "portmapctl check --repair"
GC = "portmapctl gc"

# The plugin's IPv4 table without prerouting's jump (a row of the table, no container).
ENTRY = Problem(
    ProblemKind.NFT_MISSING_ENTRY.value, 4, "nft:prerouting", None, None, "no jump", REPAIR
)
# The container whose backend is in doubt: its own row in nftables.
DOUBTED = Problem(
    ProblemKind.NFT_MISSING_RULES.value, 4, "nft:hostports", "podman", "deb1", "missing", REPAIR
)
STALE_DNAT = Problem(
    ProblemKind.STALE.value,
    4,
    "nft:hostports",
    None,
    "stale",
    "nftables rules of a container the CNI cache does not know",
    GC,
    rules=('tcp dport 8080 dnat to 10.88.0.8:80 comment "stale"',),
)
STALE_MASQ = Problem(
    ProblemKind.STALE.value,
    4,
    "nft:masquerading",
    None,
    "stale",
    "1 masquerade rule for 10.88.0.8, no DNAT rule: left of a container the CNI cache"
    " does not know",
    GC,
    rules=('ip saddr 10.88.0.8 ip daddr 10.88.0.8 masquerade comment "stale"',),
)


@pytest.mark.parametrize("stale", [STALE_DNAT, STALE_MASQ], ids=["dnat", "masquerade"])
def test_a_stale_row_does_not_keep_the_tables_fix_for_a_container_in_doubt(
    stale: Problem,
) -> None:
    alone = left_alone(CheckResult((ENTRY, DOUBTED), (4,)), {("podman", "deb1")}, [])
    beside = left_alone(CheckResult((ENTRY, DOUBTED, stale), (4,)), {("podman", "deb1")}, [])
    assert alone.problems[0].fix == ""
    assert beside.problems[:2] == alone.problems, beside.problems
    assert beside.problems[2] == stale  # its own row as it was (gc's)


def test_a_cached_containers_row_still_keeps_the_tables_fix() -> None:
    other = Problem(
        ProblemKind.NFT_MISSING_RULES.value, 4, "nft:hostports", "podman", "ok1", "x", REPAIR
    )
    done = left_alone(
        CheckResult((ENTRY, DOUBTED, other, STALE_DNAT), (4,)), {("podman", "deb1")}, []
    )
    assert done.problems[0].fix == REPAIR
