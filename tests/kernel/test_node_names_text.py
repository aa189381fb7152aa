"""Names read from the node (a network's name in the plugin's rule comment, a CNI
cache file's name) in what people read: one text per name, in any stream encoding
(SPEC §3 output contract; core/text.py name_text). Under PYTHONIOENCODING=ascii the
NETWORK cell of `café` was rich's `caf?`, the text of `cafe`'s neighbours too, and a
warning named the cache file `caf\\xe9-...`, the text of the byte 0xe9 and of a name
holding a backslash."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import realplugin as rp
from pmctl import run

from portmapctl.iptables.chains import TOPLEVEL_DNAT, chain_name

NETWORK = "caf\u00e9"


def _network_cell(stdout: str) -> str:
    header, row = stdout.splitlines()[:2]
    assert header.split()[0] == "NETWORK"
    return row.split()[0]


@pytest.fixture
def node(host_ns, tmp_path):
    """The rules of container x1 of network `café` as the plugin writes them (the
    plugin itself refuses such a name: another tool's, or an older plugin's); a cache
    holding three files of no libcni name, named `caf` then the byte 0xe9, the text
    `\\xe9`, and `é`."""
    chain = chain_name(NETWORK, "x1")
    comment = f'"dnat name: \\"{NETWORK}\\" id: \\"x1\\""'
    restore = "\n".join([
        "*nat",
        f":{TOPLEVEL_DNAT} - [0:0]",
        f":{chain} - [0:0]",
        f"-A PREROUTING -m addrtype --dst-type LOCAL -j {TOPLEVEL_DNAT}",
        f"-A {chain} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.88.0.5:80",
        f"-A {TOPLEVEL_DNAT} -p tcp -m comment --comment {comment} -m multiport"
        f" --dports 8080 -j {chain}",
        "COMMIT",
        "",
    ])  # fmt: skip
    tool = rp.tool_path("iptables-restore", "nft")
    subprocess.run(["ip", "netns", "exec", host_ns, tool, "--noflush"], input=restore.encode(),
                   check=True)  # fmt: skip
    results = tmp_path / "cni" / "results"
    results.mkdir(parents=True)
    for name in (b"caf\xe9-x2", b"caf\\xe9-x3", "caf\u00e9-x4".encode()):
        (results / os.fsdecode(name)).write_text("{}")
    return host_ns, tmp_path / "cni"


@pytest.mark.parametrize("encoding", ["ascii", "utf-8"])
def test_a_name_from_the_node_reads_back_to_itself(node, encoding):
    ns, cache = node
    args = ["list", "--netns", ns, "--backend", "iptables", "--cni-cache-dir", str(cache)]
    env = {**os.environ, "PYTHONIOENCODING": encoding}
    done = run(args, env=env)
    assert done.returncode == 0, done.stderr
    assert _network_cell(done.stdout) == ("caf\\u00e9" if encoding == "ascii" else NETWORK)
    named = sorted(
        line.split("/results/")[1].split(":")[0]
        for line in done.stderr.splitlines()
        if "skipped CNI cache file" in line
    )
    written = "caf\\u00e9-x4" if encoding == "ascii" else "caf\u00e9-x4"
    assert named == sorted(["caf\\xe9-x2", "caf\\\\xe9-x3", written])
    # JSON is as it was: the name itself.
    listed = json.loads(run([*args, "-o", "json"], env=env).stdout)
    assert [m["network"] for m in listed["mappings"]] == [NETWORK]
