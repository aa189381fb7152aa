"""Every row of `list`'s table says what it is at 80 columns, where the CHAIN column
is left out (SPEC §3: the table fits 80 columns; -o wide has CHAIN): a mapping of a
chain no entry rule names, and a chain with no mapping at all, name their chain, as
check's and gc's tables name such a chain under CONTAINER (render/check.py _who,
render/gc.py). JSON keeps its values (`container_id` null)."""

from __future__ import annotations

import json
from typing import List

import pytest
from test_output_contract import at_80, pmctl

from portmapctl.iptables import inventory
from portmapctl.iptables.ruleset import parse_save

FIELD = "tests/fixtures/field"
NO_CACHE = ["--cni-cache-dir", "tests/golden/no-such-dir"]


def rows(out: str) -> List[List[str]]:
    """The table's rows as their cells (split at spaces), the header first."""
    table = out.replace("\r", "").split("\n\n")[0]
    return [line.split() for line in table.splitlines()]


@pytest.mark.parametrize("dump", ["plugins-643-dead", "plugins-643-hairpin32"])
def test_a_mapping_of_no_known_container_names_its_chain_under_container(dump):
    """Its row read `-  -  v4  tcp  *:2202  10.4.0.2:22  yes  orphan`: nothing in it
    said which chain (check and gc name the chain there)."""
    args = ["list", "--snapshot", f"{FIELD}/{dump}.v4.save", *NO_CACHE]
    document = json.loads(pmctl(*args, "-o", "json").stdout)
    (chain,) = {m["chain"] for m in document["mappings"]}
    assert {m["container_id"] for m in document["mappings"]} == {None}  # JSON as it was
    code, out, err = at_80(*args)
    assert code == 0, err
    # As long as a short ID: `CNI-DN-` and the hash's first five. The whole name, 28
    # characters, left out SNAT at 80 columns (hairpin32: CONTAINER ADDR too); beside
    # dead's `orphan,dead` CONTAINER ADDR does not fit anyway.
    for shown in (rows(out), rows(pmctl(*args).stdout)):  # on a terminal, and piped
        column = shown[0].index("CONTAINER")
        assert [row[column] for row in shown[1:]] == [chain[:12]], shown
    header = rows(out)[0]
    assert header[:5] == ["NETWORK", "CONTAINER", "FAM", "PROTO", "HOST"], out
    assert header[-2:] == ["SNAT", "STATUS"] and ("ADDR" in header) == ("hairpin" in dump), out
    # --no-trunc names it whole, as it shows IDs whole.
    whole = rows(pmctl(*args, "--no-trunc").stdout)
    assert [row[1] for row in whole[1:]] == [chain], whole
    # -o wide has the CHAIN column: CONTAINER stays `-` there, as in check's.
    wide = rows(pmctl(*args, "-o", "wide").stdout)
    assert [row[1] for row in wide[1:]] == ["-"] and chain in wide[1], wide


# Dumps with a chain that has no DNAT rule (a legacy CNI-SN- chain, a CNI-DN- chain
# whose only entry names a port of the other family), of a container that is known.
BARE = [
    ["--snapshot", "tests/fixtures/legacy-sn.v4.save", "--snapshot6", "tests/fixtures/legacy-sn.v6.save"],
    ["--snapshot", f"{FIELD}/cilium-6499-v0.6.v4.save"],
    ["--snapshot", f"{FIELD}/v0.6-portless-entries.v4.save"],
    ["--snapshot", f"{FIELD}/lima-nerdctl-hostip.v4.save"],
]  # fmt: skip


@pytest.mark.parametrize("dump", BARE, ids=["legacy-sn", "cilium-6499", "v0.6-portless", "lima"])
def test_a_chain_without_a_mapping_names_itself(dump):
    """Its row read `mynet  abc123  v4  -  -  -  -  legacy` (lima's `... -  ok`): one
    container's chain, but which? Its name stands where a mapping's protocol and
    addresses would, the STATUS column where it is on every other row."""
    args = ["list", *dump, *NO_CACHE]
    document = json.loads(pmctl(*args, "-o", "json").stdout)
    mapped = {(m["chain"], m["family"]) for m in document["mappings"]}
    bare = [c for c in document["chains"] if (c["chain"], c["family"]) not in mapped]
    assert bare and all(c["container_id"] for c in bare), document  # (a known container)
    code, out, err = at_80(*args)
    assert code == 0, err
    for table, terminal in ((out.replace("\r", ""), True), (pmctl(*args).stdout, False)):
        lines = table.split("\n\n")[0].splitlines()
        assert not terminal or all(len(line) <= 80 for line in lines), lines
        status = lines[0].index("STATUS")
        for chain in bare:
            (row,) = [line for line in lines if chain["chain"] in line]
            network, container, family = row.split()[:3]
            # (A terminal's width may cut the network's name at its end.)
            assert chain["network"].startswith(network.rstrip("…")), (row, lines)
            assert [container, family] == [chain["container_id"][:12], "v4"], (row, lines)
            assert row[status:].split(",") == chain["status"], (row, lines)


@pytest.mark.parametrize("dump", BARE, ids=["legacy-sn", "cilium-6499", "v0.6-portless", "lima"])
def test_a_chain_without_a_mapping_stands_with_its_containers_rows(dump):
    """SPEC §3 list: rows are sorted by network, container, family, so a container's
    rows stand together. A chain without a mapping went after every mapping's row:
    v0.6-portless printed 3f6e3b0a4b7c's shadowed 8080, 8c1d2e3f4a5b's two rows, then
    3f6e3b0a4b7c's CNI-SN- chain; lima's default-393b (a chain whose only entry names
    a port of no DNAT rule) after default-c93e. On a field node, a dual-stack pod whose
    host ports are all on IPv4 host IPs (its IPv6 chain maps nothing) and an emptied
    zombie chain went after the stale nftables rows of no network, far from their own.
    Piped and at 80 columns; JSON's `chains` is a list of its own and keeps its order."""
    args = ["list", *dump, *NO_CACHE]
    document = json.loads(pmctl(*args, "-o", "json").stdout)
    wanted = sorted(
        [(m["network"], m["container_id"][:12], m["family"]) for m in document["mappings"]]
        + [
            (c["network"], c["container_id"][:12], c["family"])
            for c in document["chains"]
            if (c["chain"], c["family"])
            not in {(m["chain"], m["family"]) for m in document["mappings"]}
        ]
    )
    code, out, err = at_80(*args)
    assert code == 0, err
    for shown in (rows(out), rows(pmctl(*args).stdout)):  # on a terminal, and piped
        got = [(row[1], int(row[2][1:])) for row in shown[1:]]
        assert got == [(container, family) for _, container, family in wanted], shown
        # (A terminal's width may cut the network's name at its end.)
        networks = [row[0].rstrip("…") for row in shown[1:]]
        assert all(w[0].startswith(n) for w, n in zip(wanted, networks)), shown


@pytest.mark.parametrize("dump", ["plugins-643-dead", "plugins-643-hairpin32"])
def test_the_chain_named_under_container_is_accepted_by_container(dump):
    """SPEC §3: every value an output prints is accepted as input. A row of no known
    container names its chain under CONTAINER (`-  CNI-DN-e7055ba87834d413d9694  v4
    tcp  0.0.0.0:2202 ...`), but `list --container CNI-DN-e7055ba87834d413d9694`
    printed `0 of 1 mapping match`: --container matched container IDs alone. The name
    as a terminal cuts it (its start) matches too, as an ID's prefix does."""
    args = ["list", "--snapshot", f"{FIELD}/{dump}.v4.save", *NO_CACHE]
    shown = rows(pmctl(*args).stdout)
    column = shown[0].index("CONTAINER")
    document = json.loads(pmctl(*args, "-o", "json").stdout)
    (chain,) = {m["chain"] for m in document["mappings"]}
    for row in shown[1:]:
        short = row[column]
        assert chain.startswith(short) and short.startswith("CNI-DN-"), row  # (the test's)
        for value in (short, chain, chain[:16]):
            narrowed = rows(pmctl(*args, "--container", value).stdout)
            assert narrowed[1:] == [row], (value, narrowed)
    # Not a chain of a known container: --container is about who owns a row.
    known = pmctl("list", "--snapshot", "tests/fixtures/legacy-sn.v4.save", *NO_CACHE,
                  "--container", "CNI-DN-70a29d9dc18bc4d652ea5").stdout  # fmt: skip
    assert known.startswith("0 of 2 mappings match"), known
    # flush-udp --container (which list --conntrack's fix is narrowed by) selects so too.
    with open(f"{FIELD}/{dump}.v4.save") as dump_file:
        found = inventory.build({4: parse_save(dump_file.read(), 4)})
    for row in shown[1:]:
        (selected,) = inventory.select(found.mappings, container=row[column])
        assert selected.chain == chain and selected.container_id is None


def _counted(statuses: List[List[str]]) -> dict:
    counted: dict = {}
    for status in statuses:
        for word in status:
            counted[word] = counted.get(word, 0) + 1
    return counted


def _said(part: str) -> dict:
    """`2 ok, 1 shadowed` as {word: count}."""
    return {word: int(n) for n, word in (item.split(" ", 1) for item in part.split(", "))}


@pytest.mark.parametrize("dump", BARE, ids=["legacy-sn", "cilium-6499", "v0.6-portless", "lima"])
def test_the_summary_counts_statuses_of_mappings_over_the_mappings(dump):
    """SPEC §3 list: `7 mappings of 4 containers: 5 ok, 1 stale, 1 shadowed`. The
    statuses of chains without a mapping were counted in with the mappings' (`3
    mappings of 2 containers, 2 chains without a mapping: 2 ok, 1 shadowed, 2 legacy`:
    5 statuses of 3 mappings; on a field node `72 mappings of 28 containers, 1 chain
    without a mapping: 72 ok, 1 shadowed`, which reads as a miscount). The mappings'
    statuses are counted over the mappings now, those chains' after them with their
    own; -q's one line is the same line."""
    args = ["list", *dump, *NO_CACHE]
    document = json.loads(pmctl(*args, "-o", "json").stdout)
    mappings = document["mappings"]
    mapped = {(m["chain"], m["family"]) for m in mappings}
    bare = [c for c in document["chains"] if (c["chain"], c["family"]) not in mapped]
    containers = {m["container_id"] or m["chain"] for m in mappings}
    (line,) = pmctl(*args, "-q").stdout.splitlines()
    assert pmctl(*args).stdout.rstrip("\n").split("\n")[-1] == line
    of_mappings, of_chains = line.split("; ")
    head, statuses = of_mappings.split(": ")
    assert head == f"{len(mappings)} mapping{'s' * (len(mappings) != 1)} of" + (
        f" {len(containers)} container{'s' * (len(containers) != 1)}"
    )
    assert _said(statuses) == _counted([m["status"] for m in mappings])
    head, statuses = of_chains.split(": ")
    assert head == f"{len(bare)} chain{'s' * (len(bare) != 1)} without a mapping"
    assert _said(statuses) == _counted([c["status"] for c in bare])


def test_the_summary_of_a_v06_node_reads_as_its_rows_add_up():
    args = ["list", *BARE[2], *NO_CACHE, "-q"]
    assert pmctl(*args).stdout == (
        "3 mappings of 2 containers: 2 ok, 1 shadowed; 2 chains without a mapping: 2 legacy\n"
    )


@pytest.mark.parametrize("dump", ["plugins-643-dead", "plugins-643-hairpin32"])
def test_container_selects_no_chain_by_the_start_every_chain_shares(dump):
    """A row of no known container is selected by its chain's name or a start of it
    (the test above), but `C`, `CNI`, `CNI-DN-` name no chain: they are the start of
    every one the plugin makes. Taken as one, `flush-udp --container CNI-DN-` (a
    script's `CNI-DN-$HASH` with HASH unset, as `--container ""` is refused for) or
    `--container C` deleted the UDP flows of every such row's ports, where it had
    matched nothing before; it matches nothing again. A start that goes into the
    hash still selects its chain."""
    args = ["list", "--snapshot", f"{FIELD}/{dump}.v4.save", *NO_CACHE]
    with open(f"{FIELD}/{dump}.v4.save") as dump_file:
        found = inventory.build({4: parse_save(dump_file.read(), 4)})
    (chain,) = {m.chain for m in found.mappings}
    for value in ("C", "CN", "CNI", "CNI-", "CNI-D", "CNI-DN", "CNI-DN-"):
        assert inventory.select(found.mappings, container=value) == [], value
        out = pmctl(*args, "--container", value).stdout
        assert out.startswith("0 of 1 mapping match"), (value, out)
    for value in (chain[:8], chain):
        assert [m.chain for m in inventory.select(found.mappings, container=value)] == [chain]
        assert rows(pmctl(*args, "--container", value).stdout)[1][0] == "-", value
