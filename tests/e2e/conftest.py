"""Fixtures for the podman end-to-end suite: one podman lab per module, a node per test.

Every test here needs root, podman and namespaces: each module sets
``pytestmark = pytest.mark.netns`` so the top-level accounting counts its tests, and
``PORTMAPCTL_REQUIRE_NETNS=1`` (CI) turns a skip into a failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import podmanlab
import pytest
import realplugin


def _require() -> None:
    realplugin.require(podmanlab.available())


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[podmanlab.Lab]:
    """Podman storage with the busybox image and its mount namespace, for one module."""
    _require()
    made = podmanlab.make_lab(tmp_path_factory.mktemp("podman-lab"))
    try:
        yield made
    finally:
        podmanlab.close_lab(made)


@pytest.fixture
def node(lab: podmanlab.Lab, tmp_path: Path) -> Iterator[podmanlab.Node]:
    """A fresh node (network namespace, CNI cache, network configs) podman runs in."""
    made = podmanlab.open_node(lab, tmp_path / "node")
    try:
        yield made
    finally:
        podmanlab.close_node(made)
