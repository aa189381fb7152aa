"""Review of 2729873: a keyless mapping that follows its container into nftables with
an option the nftables backend refuses: one line on stderr, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pmctl
import pytest
import realplugin as rp
import upstream

pytestmark = pytest.mark.netns


@pytest.fixture
def node() -> Iterator[str]:
    rp.require(upstream.available())
    name = rp.create_netns("pmt-rv2")
    try:
        yield name
    finally:
        rp.delete_netns(name)


@pytest.mark.parametrize(
    "option", [["--conditions-v4", "-s 1.2.3.0/24"], ["--external-setmark-chain", "FOO"]]
)
def test_a_followed_add_with_an_iptables_only_option_says_one_line(
    node: str, tmp_path: Path, option: list
) -> None:
    conf = upstream.nft_conf("podman", ["10.88.0.21/16"], [rp.port_mapping(8011, 80)])
    upstream.run("v1.9.1", "ADD", node, "nft1", conf, check=True)
    before = upstream.ruleset_text(node)
    nft1 = ["--network", "podman", "--container", "nft1", "--ip", "10.88.0.21/16", "-p", "8011:80"]
    done = pmctl.run(["add", *nft1, *option, "--netns", node, "--cni-cache-dir", str(tmp_path)])
    pmctl.assert_error(done, 2, "podman/nft1", "--backend iptables")
    assert upstream.ruleset_text(node) == before
    assert "CNI-DN-" not in rp.save(node, 4, "nft")  # (nor a copy in iptables)
