"""--metrics-file on an nft-backed node: the nftables rows are counted, with
backend="nftables", next to the iptables ones (issue 14).

Offline, no root: the example node of examples/nft (--nft-snapshot), read back with
prometheus_client's own parser. The expected counts are taken from the same run's
`list -o json` rows, not written down here, so they follow the example.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Dict, FrozenSet, List, Tuple

import pytest
from pmctl import run
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).parents[3]
SNAP = str(ROOT / "examples" / "nft" / "ruleset.json")
NFT_CACHE = str(ROOT / "examples" / "nft" / "cni-cache")
V4_SAVE = str(ROOT / "examples" / "node.v4.save")

Series = Tuple[str, FrozenSet[Tuple[str, str]]]


def samples(path: Path) -> Dict[Series, float]:
    found: Dict[Series, float] = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in found, f"duplicate series {key}"
            found[key] = sample.value
    return found


def mapping_counts(found: Dict[Series, float], command: str) -> Counter:
    """(backend, family, status) -> count of portmapctl_mappings, zeros left out."""
    counts: Counter = Counter()
    for (name, labels), value in found.items():
        label = dict(labels)
        if name == "portmapctl_mappings" and value:
            assert label["command"] == command
            counts[(label["backend"], label["family"], label["status"])] = int(value)
    return counts


def rows_counts(rows: List[dict]) -> Counter:
    counts: Counter = Counter()
    for row in rows:
        for status in row["status"]:
            counts[(row["backend"], str(row["family"]), status)] += 1
    return counts


def list_rows(*args: str) -> List[dict]:
    done = run(["list", *args, "-o", "json"])
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["mappings"]


@pytest.mark.parametrize("command", ["list", "check"])
def test_nft_rows_are_counted(tmp_path: Path, command: str) -> None:
    args = ["--nft-snapshot", SNAP, "--cni-cache-dir", NFT_CACHE]
    metrics = tmp_path / f"{command}.prom"
    done = run([command, *args, "--metrics-file", str(metrics)])
    assert done.returncode in (0, 1), done.stderr
    assert "warning" not in done.stderr
    found = samples(metrics)
    counts = mapping_counts(found, command)
    rows = list_rows(*args)
    assert {r["backend"] for r in rows} == {"nftables"}
    assert counts == rows_counts(rows)
    # The example node's known state (README: one stale, one shadowed, v4 and v6).
    assert counts[("nftables", "4", "stale")] == 1
    assert counts[("nftables", "4", "shadowed")] == 1
    assert counts[("nftables", "6", "ok")] == 2
    series = {(n, dict(labels).get("backend"), dict(labels).get("status")) for n, labels in found}
    # Zero-filled where an nft rule can be it, and only there; no iptables was read.
    assert ("portmapctl_mappings", "nftables", "zombie") in series
    assert ("portmapctl_mappings", "nftables", "orphan") not in series
    assert not any(backend == "iptables" for _n, backend, _s in series)
    assert not any(n == "portmapctl_chains" and b == "nftables" for n, b, _s in series)


def test_both_backends_in_one_file(tmp_path: Path) -> None:
    """An iptables dump and an nft snapshot at once: each backend's rows under its own
    label, as `list` shows them."""
    args = ["--snapshot", V4_SAVE, "--nft-snapshot", SNAP, "--cni-cache-dir", NFT_CACHE]
    metrics = tmp_path / "list.prom"
    done = run(["list", *args, "--metrics-file", str(metrics)])
    assert done.returncode == 0, done.stderr
    counts = mapping_counts(samples(metrics), "list")
    rows = list_rows(*args)
    assert {r["backend"] for r in rows} == {"iptables", "nftables"}
    assert counts == rows_counts(rows)
    assert {backend for backend, _f, _s in counts} == {"iptables", "nftables"}
