"""docs/troubleshooting.md's recipes, run as written on a node broken as they say.

"Rules only visible to iptables-legacy": a dual-stack container's chains written by a
plugin that ran iptables-legacy on an nf_tables node (the real plugin, in a fresh
namespace). Steps 2 and 3 as the page gives them (gc of the legacy copies, check
--repair), step 4's shell block as it stands on the page, then `check`: healthy, as
the page shows. (The page's own outputs are the demo node's, an IPv4-only container:
tests/kernel/test_docs_demo_node.py.)
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import List

import pytest
import realplugin as rp
from pmctl import run

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "troubleshooting.md"

pytestmark = pytest.mark.netns


def _section(title: str) -> str:
    text = PAGE.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def _shell_blocks(section: str) -> List[str]:
    """The ```sh blocks of a section (indented under a list item, as step 4's is)."""
    blocks = re.findall(r"^( *)```sh\n(.*?)^\1```", section, re.S | re.M)
    return ["\n".join(line[len(indent) :] for line in body.splitlines()) for indent, body in blocks]


def test_the_legacy_split_brain_recipe_leaves_a_dual_stack_node_healthy(host_ns, tmp_path):
    rp.require(rp.mode_available("legacy"))
    cache = tmp_path / "cni"
    _pm = rp.port_mapping
    # (The containers' namespace, holding their addresses: what check --repair looks for.)
    pods = rp.container_netns()
    for container, ips, mode in (
        ("3f2a9c1e5b7d", ["10.88.0.5/16", "fd00:88::5/64"], "nft"),
        ("e5f6a7b8c9d0", ["10.88.0.11/16", "fd00:88::11/64"], "legacy"),
    ):
        ports = [_pm(7000 if mode == "legacy" else 8080, 80)]
        conf = rp.plugin_conf("podman", ips, ports)
        rp.run_plugin("ADD", host_ns, container, conf, mode=mode, check=True)
        rp.hold_addresses(pods, ips)
        rp.write_cni_cache(cache, "podman", container, "eth0", conf, ports, ips, netns=pods)
    on_node = ["--netns", host_ns]
    split = run(["check", *on_node, "--cni-cache-dir", str(cache), "-o", "json"])
    assert split.returncode == 1 and '"split-brain"' in split.stdout, split.stdout

    # Step 2: the legacy copies of the per-container chains.
    gc = ["gc", "--iptables", "legacy", "--cni-cache-dir", "/nonexistent", "--all"]
    done = run([*gc, "--min-age", "0", "--yes", *on_node])
    assert done.returncode == 0, done.stderr
    # Step 3: the mappings in the node's own tables.
    done = run(["check", "--repair", *on_node, "--cni-cache-dir", str(cache)])
    assert "repaired: IPv6 missing-chain" in done.stderr, done.stdout + done.stderr
    # Step 4: the shared chains, by the page's shell block.
    [step4] = _shell_blocks(_section("Rules only visible to iptables-legacy"))
    subprocess.run(["ip", "netns", "exec", host_ns, "bash", "-c", step4],
                   capture_output=True, text=True, check=False)  # fmt: skip
    done = run(["check", *on_node, "--cni-cache-dir", str(cache)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("healthy: "), done.stdout
    for save in ("iptables-legacy-save", "ip6tables-legacy-save"):
        saved = subprocess.run(["ip", "netns", "exec", host_ns, save, "-t", "nat"],
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert "CNI-" not in saved, (save, saved)
