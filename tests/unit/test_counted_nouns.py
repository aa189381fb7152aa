"""Messages that count containers, chains or mappings say `1 container`, `2 containers`
(core/text.count), as nftables' rule counts do since 96eee26: they said `N
container(s)`, `N mapping(s)`, their verb plural for one as well (`1 cached
container(s) (nft1) say ...`).

On the example node (examples/node.v*.save, iptables-save of a real node, and its CNI
cache) with one, two or three of its cached configs saying `"backend": "nftables"`.
The iptables split-brain warnings (ops/flavour_guard.chains_elsewhere, check's
_uncached_elsewhere) read the other flavour's tables on the node:
tests/kernel/test_split_writes.py asserts them with one and with two chains.
"""

from __future__ import annotations

from typing import Dict, Sequence

import pytest
from test_check_nft_empty import ROOT, nft_configured_cache

from portmapctl.cni.cache import Attachment, read_cache
from portmapctl.iptables.access.memory import MemoryBackend
from portmapctl.iptables.ruleset import NatTable, parse_save
from portmapctl.nftables.ruleset import Ruleset

WEB, WEB2, LOST = "3f2a9c1e5b7d4a60web", "8c41d07a2e9f4b13web2", "d19e3b7f60c24a57lost"


def _tables_without(chain: str) -> Dict[int, NatTable]:
    """The example node's nat tables with `chain` and its entry rules gone (a firewall
    took them)."""
    tables = {}
    for family in (4, 6):
        text = (ROOT / "examples" / f"node.v{family}.save").read_text()
        kept = "".join(line for line in text.splitlines(True) if chain not in line)
        tables[family] = parse_save(kept, family)
    return tables


def _entry(attachments: Sequence[Attachment], container_id: str) -> Attachment:
    [entry] = [a for a in attachments if a.container_id == container_id]
    return entry


@pytest.mark.parametrize(
    ("others", "said"),
    [
        ((WEB2,), "1 other container cached so has its chain in iptables and no rule"),
        ((WEB2, LOST), "2 other containers cached so have their chain in iptables and no rule"),
    ],
)
def test_a_keyed_entry_left_with_nothing_counts_the_others_that_keep_theirs_in_iptables(
    tmp_path, others, said
):
    """ops/nft.nothing_left's why (check's and --repair's in-doubt row of web, whose
    config says nftables and of which nothing is left), beside the note of the entries
    whose plugin ignored the key (nft_words.key_ignored_note): `N other container(s)`,
    `N container(s) whose cached config says ... have`."""
    from portmapctl.ops import nft
    from portmapctl.ops.nft_words import key_ignored_note

    attachments = read_cache(nft_configured_cache(tmp_path, (WEB, *others)))
    web = _entry(attachments, WEB)
    tables = _tables_without(web.dnat_chain)
    chains = {name for table in tables.values() for name in table.chains}
    live = Ruleset({})
    judged = nft.key_judged(attachments, chains, live)
    assert sorted(a.container_id for a in judged.ignored) == sorted(others)
    why = nft.nothing_left(attachments, chains, live, judged, "CNI-HOSTPORT-DNAT is there")
    assert why == {web.path: f"{said} in nftables ({', '.join(f'podman/{i}' for i in others)}):"
                   " the plugin here may ignore the key"}  # fmt: skip
    note = key_ignored_note(judged.ignored, {})
    if len(others) == 1:
        assert note.startswith(
            '1 container whose cached config says "backend": "nftables" has its chain in'
            f" iptables and no rule in nftables (podman/{WEB2}): the plugin that added it"
            " ignores the key (plugins before v1.6 do, Debian's 1.1.1 among them), so it is"
            " judged in iptables"
        ), note
    else:
        assert note.startswith(
            '2 containers whose cached config says "backend": "nftables" have their chain in'
            " iptables and no rule in nftables"
        ), note
        assert "the plugin that added them ignores the key" in note, note
        assert "so they are judged in iptables" in note, note


def test_backend_iptables_counts_the_one_nftables_container_it_did_not_check(tmp_path):
    """check --backend iptables of the example node whose web says nftables and has no
    chain in iptables: its note said `1 cached container(s) are the plugin's
    nftables'` (test_check_nft_empty has --backend nftables' `2 cached containers are`)."""
    from portmapctl.ops.check.run import check_node
    from portmapctl.ops.node import Node, NodeOptions

    cache = nft_configured_cache(tmp_path, (WEB,))
    web = _entry(read_cache(cache), WEB)
    options = NodeOptions(cache_dirs=(cache,), backend="iptables")
    notes = check_node(Node(options, MemoryBackend(_tables_without(web.dnat_chain)), None)).notes
    assert [n for n in notes if n.startswith("--backend")] == [
        "--backend iptables: 1 cached container is the plugin's nftables' (their config's"
        " backend key, or their rules are in nftables alone): not checked"
    ]


@pytest.mark.parametrize(
    ("keyed", "keyless", "said"),
    [
        ((WEB,), (), f'1 cached container ({WEB[:12]}) says "backend": "nftables"'),
        ((WEB, WEB2), (), f'2 cached containers ({WEB[:12]}, {WEB2[:12]}) say "backend"'),
        ((), (LOST,), f'1 cached container ({LOST[:12]}) has no "backend" key and no chain'),
        ((), (WEB2, LOST), f'2 cached containers ({WEB2[:12]}, {LOST[:12]}) have no "backend"'),
    ],
)
def test_no_usable_nft_counts_the_cached_containers_that_need_it(keyed, keyless, said):
    """nftables/access NftUnusable.needed_by: the exit-3 line of a whole-node command
    without a usable nft said `1 cached container(s) (nft1) say "backend": ...`."""
    from portmapctl.nftables.access import NftUnusable

    line = str(NftUnusable("nft not found").needed_by(keyed, keyless))
    assert said in line, line


@pytest.mark.parametrize(
    ("mappings", "said"), [(1, "holds 1 mapping on"), (2, "holds 2 mappings on")]
)
def test_the_warning_of_the_backend_left_out_counts_its_mappings(mappings, said):
    """ops/flavour_guard UnreadBackend (list/check/gc narrowed by --backend to the one
    that holds nothing): `holds 1 mapping(s) on this node`. Its count is of a live read
    of the other backend (tests/interop/test_nft_commands.py has 4 and 2)."""
    from portmapctl.ops.flavour_guard import UnreadBackend

    line = UnreadBackend("iptables", "nftables", mappings).warning("to list them")
    assert line == (
        f"--backend iptables: the plugin's nftables {said} this node, not read here: run"
        " with --backend auto to list them"
    )
