"""The one line every command says when the CNI cache cannot tell what is live
(SPEC §3 output contract), with several --cni-cache-dir directories."""

from __future__ import annotations

from pathlib import Path

from portmapctl.cli._common import CacheInfo


def test_of_several_directories_a_missing_one_is_not_called_empty(tmp_path: Path) -> None:
    empty, missing = tmp_path / "empty", tmp_path / "nocache"
    (empty / "results").mkdir(parents=True)
    note = CacheInfo((str(empty), str(missing)), True, 0).note()
    assert note == (
        f"the CNI cache at {empty}/results is empty (no {missing}/results):"
        " no container is known to be live"
    )
    assert CacheInfo((str(empty),), True, 0).note() == (
        f"the CNI cache at {empty}/results is empty: no container is known to be live"
    )
    assert (
        CacheInfo((str(missing),), False, 0)
        .note()
        .startswith(f"no CNI cache at {missing}/results: ")
    )
