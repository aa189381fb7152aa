"""check's problem rows are sorted as list's rows are (SPEC §3 list: network,
container, family), so that one container's problems stand together, after the
problems of the node as a whole; the summary line and the whys below the table keep
the kinds in the order check finds them."""

from __future__ import annotations

import json

from test_output_contract import EXAMPLE, pmctl

from portmapctl import render
from portmapctl.core.status import ProblemKind
from portmapctl.ops.check import CheckResult, Problem


def problem(kind, family, network, container_id, detail) -> Problem:
    return Problem(kind, family, "CNI-DN-x" if container_id else None, network, container_id,
                   detail, "portmapctl check --repair", f"why {kind}")  # fmt: skip


# In the order check's diagnosis finds them: the top-level chains first, each
# container's chain and entry rules, then what list marks (shadowed, stale).
FOUND = (
    problem(ProblemKind.MISSING_TOPLEVEL, 4, None, None, "no CNI-HOSTPORT-DNAT"),
    problem(ProblemKind.MISSING_ENTRY, 6, "podman", "bbbbbbbbbbbb", "bbbb's v6 entry"),
    problem(ProblemKind.MISSING_ENTRY, 4, "podman", "cccccccccccc", "cccc's entry"),
    problem(ProblemKind.SHADOWED, 4, "podman", "bbbbbbbbbbbb", "bbbb shadowed"),
    problem(ProblemKind.STALE, 4, "podman", "aaaaaaaaaaaa", "aaaa stale"),
    problem(ProblemKind.MISSING_ENTRY, 4, "cni0", "dddddddddddd", "dddd on cni0"),
)
SORTED = ["no CNI-HOSTPORT-DNAT", "dddd on cni0", "aaaa stale", "bbbb shadowed",
          "bbbb's v6 entry", "cccc's entry"]  # fmt: skip


def test_rows_by_network_container_and_family_the_nodes_own_first():
    result = CheckResult(FOUND, (4, 6), "node", True, 4, 4)
    lines = render.check_text(result).plain.split("\n")
    rows = lines[1 : lines.index("")]
    assert [row.split("  ")[-1].strip() for row in rows] == SORTED
    # The JSON lists them in the same order.
    assert [p["detail"] for p in render.check_json(result)["problems"]] == SORTED
    # The kinds: summed up and explained in the order check finds them.
    kinds = ["missing-toplevel", "missing-entry", "shadowed", "stale"]
    explained = [line.split(":")[0] for line in lines[lines.index("") + 1 :] if line[:1] != " "]
    assert explained == kinds
    assert render.check_summary(result) == (
        "1 missing-toplevel, 3 missing-entry, 1 shadowed, 1 stale -> portmapctl check --repair"
    )


def test_the_example_nodes_rows_stand_by_container():
    piped = pmctl("check", *EXAMPLE).stdout.split("\n")
    rows = piped[1 : piped.index("")]
    assert [row.split()[2] for row in rows] == ["8c41d07a2e9f", "b7e0f2c94d1a", "d19e3b7f60c2"]
    document = json.loads(pmctl("check", *EXAMPLE, "-o", "json").stdout)
    ids = [p["container_id"][:12] for p in document["problems"]]
    assert ids == ["8c41d07a2e9f", "b7e0f2c94d1a", "d19e3b7f60c2"]
    assert piped[-2] == "3 problems: 1 missing-entry, 1 shadowed, 1 stale (fixes above)"


def test_each_kind_is_named_once_whatever_its_whys_and_fixes():
    """SPEC §3: once per kind, why it matters and the command that fixes it. A kind
    whose problems differ in why or fix (a hand-removal command per family, a jump per
    built-in chain) was explained once per difference, its name each time: `orphan:`
    twice, `missing-jump:` three times. The name comes once now, every why and every
    fix whole under it."""
    jumps = [
        Problem(ProblemKind.MISSING_JUMP, 4, chain, None, None, f"no jump in {chain}",
                f"portmapctl check --repair --family 4 # {chain}", f"why {chain}")
        for chain in ("PREROUTING", "OUTPUT", "POSTROUTING")
    ]  # fmt: skip
    lines = render.check_text(CheckResult(tuple(jumps), (4,), "node", True, 0, 0), width=80)
    text = lines.plain.split("\n")
    block = text[text.index("") + 1 :]
    assert [line for line in block if line.startswith("missing-jump")] == [
        "missing-jump: why PREROUTING"
    ]
    assert "  why OUTPUT" in block and "  why POSTROUTING" in block
    assert sum(line.startswith("  fix: ") for line in block) == 3
