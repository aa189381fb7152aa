"""A name read from the node inside a sentence (check's PROBLEM text and JSON
`detail`, hints, warnings and error lines) is written as the NETWORK and CONTAINER
cells write it (core/text.name_text: bash's $'...' reading, its backslash doubled).

Only the cells did (f8a0654): in the sentence a network holding a real ESC and a
container ID holding the text `\\x1b` were both `\\x1b`, so a name could pass for
another, or for an escape of the line's own. The node here is examples/node.v4.save
(iptables-save of a real node) with one entry rule's comment made hostile, read as a
dump (`check --snapshot`), as a support bundle would be.
"""

from __future__ import annotations

import json
from pathlib import Path

import pmctl

from portmapctl.iptables.chains import chain_name

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# A real ESC (and colour) in the network; the text `\x1b[2J` and a real BEL in the ID.
NETWORK = "pod\x1b[31mRED"
CONTAINER = "b7e0\\x1b[2Jold\x07"
# As the cells write them, read back by bash's $'...' to the names above.
NETWORK_TEXT = r"pod\x1b[31mRED"
CONTAINER_TEXT = r"b7e0\\x1b[2Jold\x07"


def _hostile_dump(tmp_path: Path, network: str, container: str) -> Path:
    """The example node with the entry rule of b7e0f2c94d1a4e85oldjob (stale: no cache
    entry) naming `network`/`container` instead, quoted as iptables-save quotes it, and
    its chain named for them (a comment naming another chain's owner names nobody)."""
    text = (EXAMPLES / "node.v4.save").read_text()
    quoted = f'dnat name: \\"{network}\\" id: \\"{container.replace(chr(92), chr(92) * 2)}\\"'
    old = 'dnat name: \\"podman\\" id: \\"b7e0f2c94d1a4e85oldjob\\"'
    assert text.count(old) == 1
    text = text.replace(
        chain_name("podman", "b7e0f2c94d1a4e85oldjob"), chain_name(network, container)
    )
    dump = tmp_path / "node.v4.save"
    dump.write_text(text.replace(old, quoted))
    return dump


def _check(dump: Path, *extra: str):
    return pmctl.run(
        ["check", "--snapshot", str(dump), "--cni-cache-dir", str(EXAMPLES / "cni-cache"),
         *extra]
    )  # fmt: skip


def test_a_hostile_name_reads_in_check_s_problem_as_in_its_cell(tmp_path):
    done = _check(_hostile_dump(tmp_path, NETWORK, CONTAINER))
    assert done.returncode == 1, done.stderr
    (line,) = [row for row in done.stdout.splitlines() if row.startswith("stale ")]
    assert f"no CNI cache entry for {NETWORK_TEXT}/{CONTAINER_TEXT}; it maps tcp/9000" in line
    assert "\x1b" not in done.stdout + done.stderr and "\x07" not in done.stdout + done.stderr
    # The JSON names it raw in its fields, and in its prose as the text output does.
    document = json.loads(_check(_hostile_dump(tmp_path, NETWORK, CONTAINER), "-o", "json").stdout)
    (stale,) = [p for p in document["problems"] if p["kind"] == "stale"]
    assert (stale["network"], stale["container_id"]) == (NETWORK, CONTAINER)
    assert f"for {NETWORK_TEXT}/{CONTAINER_TEXT};" in stale["detail"]


def test_the_text_of_an_escape_is_not_the_escape_it_looks_like(tmp_path):
    """`\\x1b` as text and a real ESC were one sentence; now two."""
    real = _check(_hostile_dump(tmp_path, "net", "id\x1bx")).stdout
    text = _check(_hostile_dump(tmp_path, "net", "id\\x1bx")).stdout
    assert "no CNI cache entry for net/id\\x1bx;" in real
    assert "no CNI cache entry for net/id\\\\x1bx;" in text


def test_an_ordinary_name_is_written_as_it_is(tmp_path):
    done = _check(_hostile_dump(tmp_path, "my-net.2", "b7e0f2c94d1a4e85oldjob"), "--no-trunc")
    assert "no CNI cache entry for my-net.2/b7e0f2c94d1a4e85oldjob; it maps tcp/9000" in (
        done.stdout
    )
    assert (
        "tcp/8080 taken first by the rule CNI-DN-27a3997738f625df8206e of"
        " podman/3f2a9c1e5b7d4a60web, which DNATs to 10.88.0.5:80"
    ) in done.stdout


def test_a_hostile_name_in_a_warning_on_stderr(tmp_path):
    """A warning line (ops/owners.unsure_warnings: an nftables row read from the node,
    which names no network) writes the ID as its cell does; it wrote `None/` too."""
    from types import SimpleNamespace
    from typing import NamedTuple, Optional

    from portmapctl.ops.owners import unsure_warnings

    class Row(NamedTuple):
        family: int
        protocol: str
        host_port: int
        network: Optional[str]
        container_id: str

    owners = SimpleNamespace(unread=[], unsure={Row(4, "tcp", 8080, None, CONTAINER): "r"})
    (line,) = unsure_warnings(owners)  # type: ignore[arg-type]
    assert f"IPv4 tcp/8080 (?/{CONTAINER_TEXT}) gets all its traffic" in line


def test_a_hostile_name_in_could_not_repair_and_zombie_lines():
    """Two sentences 4b5b210 and 6888495 left: the head of check --repair's `could not
    repair IPv4 NETWORK/ID (CHAIN): WHY` line (6888495 escaped its WHY alone), and a
    zombie entry's PROBLEM detail and fix (its network, its cached netns path, its cache
    file's path: all the node's text). A real ESC and the text `\\x1b` read alike."""
    import ipaddress
    from types import SimpleNamespace

    from portmapctl.cni.cache import Attachment
    from portmapctl.core.mapping import MappingConfig, PortMapping
    from portmapctl.host.netns import NetnsState
    from portmapctl.ops.check.hints import Fixes
    from portmapctl.ops.check.node_problems import zombies
    from portmapctl.ops.check.problem import Unrepaired

    line = Unrepaired(4, NETWORK, CONTAINER, "CNI-DN-x", "why").text
    assert line.startswith(f"could not repair IPv4 {NETWORK_TEXT}/{CONTAINER_TEXT} ("), line

    config = MappingConfig(
        NETWORK, CONTAINER, (ipaddress.ip_interface("10.88.0.5/16"),), (PortMapping(8080, 80),)
    )
    netns = "/var/run/netns/x\x1b[2Jy"
    path = "/var/lib/cni/results/n-b\\x1b-eth0"
    common = dict(mapping=config, netns=netns, netns_state=NetnsState.GONE)
    entry = Attachment(NETWORK, CONTAINER, "eth0", path, **common)  # type: ignore[arg-type]
    left = SimpleNamespace(has_chain=lambda _chain: True)
    gone = SimpleNamespace(has_chain=lambda _chain: False)
    (kept,) = zombies([entry], {4: left}, Fixes())  # type: ignore[dict-item]
    assert f"cached on {NETWORK_TEXT}, but its network namespace" in kept.detail
    assert "/var/run/netns/x\\x1b[2Jy is gone" in kept.detail, kept.detail
    (done,) = zombies([entry], {4: gone}, Fixes())  # type: ignore[dict-item]
    assert "delete its cache entry /var/lib/cni/results/n-b\\\\x1b-eth0 once" in done.fix


def test_a_hostile_name_in_the_backend_notes_and_refusals():
    """The notes, warnings and refusals that say which backend the plugin keeps a cached
    container in (ops/nft_words.py: check's stderr, add's refusals), the unreadable
    entry's warning (its cache file's path too) and the held entry's note wrote the
    names as they were."""
    import ipaddress

    from portmapctl.cni.cache import Attachment
    from portmapctl.core.mapping import MappingConfig, PortMapping
    from portmapctl.ops import nft_words
    from portmapctl.ops.check.nft_refused import entry_held
    from portmapctl.ops.check.unread_entries import unread_text

    config = MappingConfig(
        NETWORK, CONTAINER, (ipaddress.ip_interface("10.88.0.5/16"),), (PortMapping(8080, 80),)
    )
    entry = Attachment(NETWORK, CONTAINER, "eth0", "/c/n-b\x1b-eth0", config)
    who = f"{NETWORK_TEXT}/{CONTAINER_TEXT}"
    lines = {
        "configured_there": nft_words.configured_there(config),
        "chain_there": nft_words.chain_there(config),
        "kept_there": nft_words.kept_there(config),
        "cannot_tell": nft_words.cannot_tell(config, "nft: error"),
        "unplaced_text": nft_words.unplaced_text(config, "nft: error"),
        "key_ignored_note": nft_words.key_ignored_note([entry], {}),
        "unread_text": unread_text((NETWORK, CONTAINER), entry.path),
        "entry_held": entry_held(entry, "why"),
    }
    for name, line in lines.items():
        assert who in line and "\x1b" not in line and "\x07" not in line, (name, line)
    assert "its cache entry /c/n-b\\x1b-eth0 cannot be read" in lines["unread_text"]
