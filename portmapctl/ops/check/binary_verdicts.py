"""The node's portmap binaries' verdicts on the cache entries cached "backend":
"nftables" that the rules on the node cannot place: those of which nothing is left
(by_binaries), and, under --backend nftables, those whose iptables cannot be read
(unread_by_binaries). host/cni_bins.py reads the binaries (--cni-bin-dir),
core/plugin_binary.py tells what each does with the key. Stated directories decide,
never against the rules (nft.honoured_here); the defaults, a guess, only add doubt
(_doubt_only). followed_entries.py judges the entries by the rules and asks here."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Dict, List, Optional

from portmapctl.cni.cache import Attachment
from portmapctl.ops.node import Node

if TYPE_CHECKING:
    from portmapctl.host.cni_bins import PortmapBinaries
    from portmapctl.nftables.ruleset import Ruleset
    from portmapctl.ops.check.followed_entries import Followed


def by_binaries(
    node: Node,
    followed: Followed,
    attachments: List[Attachment],
    chains: Dict[str, str],
    live: Ruleset,
    unheld: bool,
) -> Followed:
    """`followed` with the entries cached "nftables" of which nothing is left settled
    by what the node's portmap binaries do with the key (Node.plugin_binaries), where
    they all tell and agree; never against the rules on the node.

    All honour it (v1.6 on): those in doubt by a weak sign alone (an iptables nat
    table, kube-proxy's: nft.nothing_left) are judged, and repaired, by their key, in
    nftables; where other entries cached so are kept in iptables (`unheld`: a plugin
    before v1.6 added them, an upgrade since?) they stay in doubt, their warning
    saying so. All ignore it (before v1.6): each is the iptables backend's, where
    that plugin's CHECK and DEL look (`nft flush ruleset` of a Debian-plugin node on
    iptables-nft takes iptables' nat table too, and nothing was taken for a v1.6+
    node: repaired into nftables, a copy that plugin never deletes); not where the
    rules say a plugin honoured the key (nft.honoured_here): kept as they say, with a
    warning. Binaries read only where such an entry is there."""
    from portmapctl.ops import nft

    nothing = nft.nothing_of(attachments, chains, live)
    if not nothing:
        return followed
    binaries = node.plugin_binaries()
    if binaries is None:
        return followed
    verdict = binaries.verdict
    if verdict is None or not binaries.stated:
        return _doubt_only(followed, attachments, live, nothing, binaries)
    from portmapctl.core.plugin_binary import KeySupport
    from portmapctl.ops.nft_words import binaries_text

    said = binaries_text(binaries.words(), verdict, len(binaries.found))
    if verdict is KeySupport.HONOURS:
        doubted = [a for a in nothing if a.path in followed.gone]
        if unheld:
            gone = {
                path: f"{why}; {said}, but the others' plugin was not (an upgrade since?)"
                if path in {a.path for a in doubted}
                else why
                for path, why in followed.gone.items()
            }
            return replace(followed, gone=gone)
        settled = {a.path for a in doubted}
        return replace(
            followed,
            in_doubt=[a for a in followed.in_doubt if a.path not in settled],
            gone={p: w for p, w in followed.gone.items() if p not in settled},
            by_binaries={
                a.path: f"{_named(a)}: nothing of it is left ({followed.gone[a.path]}); {said}:"
                " judged, and repaired, in nftables, by its key"
                for a in doubted
            },
        )
    return _ignored_by_binaries(node, followed, attachments, nothing, live, said, "nothing")


def _ignored_by_binaries(
    node: Node,
    followed: Followed,
    attachments: List[Attachment],
    judged: List[Attachment],
    live: Ruleset,
    said: str,
    seen: str,
) -> Followed:
    """`followed` with those of `judged` (cached "nftables", no rule of theirs in
    nftables) that the node's rules do not tell a plugin honoured the key for
    (nft.honoured_here) judged in iptables, where the stated binaries (`said`:
    binaries_text), which all ignore the key, keep them; the others kept as the rules
    say, with a warning. `seen`: what was seen of them, as the note says it (nothing
    left; or nothing in nftables, iptables unread)."""
    from portmapctl.ops import nft

    settled_list = [a for a in judged if not nft.honoured_here(a, attachments, live)]
    doubted = {a.path for a in followed.in_doubt} | set(followed.gone)
    differ = tuple(
        _differ_text(a, said, a.path in doubted, seen) for a in judged if a not in settled_list
    )
    settled = {a.path for a in settled_list}
    # Under --backend nftables, which never writes iptables, it is judged there, not
    # repaired there: the note said "repaired in iptables" of a run that did not.
    done = (
        "judged, and repaired, in iptables, where that plugin's CHECK and DEL look"
        if node.options.reads_iptables
        else "judged in iptables, where that plugin's CHECK and DEL look: --backend nftables"
        " neither checks it nor writes anything for it"
    )
    return replace(
        followed,
        attachments=nft.judged_in_iptables(followed.attachments or [], settled_list),
        in_doubt=[a for a in followed.in_doubt if a.path not in settled],
        gone={p: w for p, w in followed.gone.items() if p not in settled},
        by_binaries={
            a.path: f'{_named(a)}: its cached config says "backend": "nftables" and'
            f" {_SEEN[seen]}; {said}: {done}"
            for a in settled_list
        },
        binaries_differ=differ,
    )


# What _ignored_by_binaries' note says was seen of a container.
_SEEN = {
    "nothing": "nothing of it is left",
    "unread": "no rule of it is in nftables (iptables, where its chain would be, cannot be read)",
}


def unread_by_binaries(
    node: Node,
    followed: Followed,
    attachments: Optional[List[Attachment]],
    doubted: List[Attachment],
    live: Ruleset,
) -> Followed:
    """`followed` (under --backend nftables, the host's iptables unread: `doubted` in
    doubt) with those the stated binaries settle: all ignoring the key, their plugin
    keeps them in iptables whatever that iptables holds (its chain there: the key
    ignored; none: lost there), so it need not be read; not this backend's, nothing is
    written. Binaries that honour it settle nothing: a plugin upgraded since may have
    left the chain of one added before in iptables, which cannot be looked at. Found
    in the default directories alone, a guess: nothing settled either."""
    if not doubted or attachments is None:
        return followed
    binaries = node.plugin_binaries()
    if binaries is None or not binaries.stated:
        return followed
    from portmapctl.core.plugin_binary import KeySupport
    from portmapctl.ops.nft_words import binaries_text

    if binaries.verdict is not KeySupport.IGNORES:
        return followed
    said = binaries_text(binaries.words(), KeySupport.IGNORES, len(binaries.found))
    return _ignored_by_binaries(node, followed, attachments, doubted, live, said, "unread")


def _doubt_only(
    followed: Followed,
    attachments: List[Attachment],
    live: Ruleset,
    nothing: List[Attachment],
    binaries: PortmapBinaries,
) -> Followed:
    """`followed` where the node's portmap binaries settle nothing (none found, one that
    tells nothing, binaries that disagree) or were found in the default directories
    alone, a guess of where the runtime's plugins are: a podman dependency's
    /usr/lib/cni/portmap (Debian's 1.1.1) where a kubelet's v1.9.1 is in
    /home/kubernetes/bin (GKE), /var/lib/cni/bin (OpenShift) or microk8s' snap decided
    alone, and a container its plugin keeps in nftables was repaired into iptables.
    Those only add doubt: all ignoring the key where the rules judge one of `nothing`
    by its key (no iptables nat table here, the weak sign), it is in doubt (nothing
    written) instead of repaired into nftables; agreeing with the rules, or telling
    nothing, as without them. Never against the strong evidence (nft.honoured_here):
    kept as it says, with a warning, as given binaries are. Each one of `nothing` in
    doubt has its warning name the directories looked in and `--cni-bin-dir`, which
    settles it."""
    from portmapctl.core.plugin_binary import KeySupport
    from portmapctl.ops import nft
    from portmapctl.ops.nft_words import binaries_text, settle_text

    settle = settle_text(binaries)
    gone = {
        path: f"{why}; {settle}" if path in {a.path for a in nothing} else why
        for path, why in followed.gone.items()
    }
    settles = {a.path: settle for a in nothing if a.path in gone}
    if binaries.verdict is not KeySupport.IGNORES:
        return replace(followed, gone=gone, settle=settles)
    said = binaries_text(binaries.words(), KeySupport.IGNORES, len(binaries.found))
    doubted = [
        a
        for a in nothing
        if a.path not in gone
        and a not in followed.in_doubt
        and not nft.honoured_here(a, attachments, live)
    ]
    differ = tuple(
        _differ_text(a, said)
        for a in nothing
        if a.path not in gone and nft.honoured_here(a, attachments, live)
    )
    for a in doubted:
        gone[a.path] = (
            "no iptables nat table is here, which alone says its plugin honours the key,"
            f" but {settle}"
        )
        settles[a.path] = settle
    return replace(
        followed,
        in_doubt=[*followed.in_doubt, *doubted],
        gone=gone,
        settle=settles,
        binaries_differ=(*followed.binaries_differ, *differ),
    )


def _differ_text(
    attachment: Attachment, said: str, in_doubt: bool = False, seen: str = "nothing"
) -> str:
    """The warning where binaries that ignore the key (`said`: binaries_text) meet the
    node's rules that tell a plugin honoured it: judged by the rules, or, `in_doubt`
    (left in doubt all the same: another container cached so with its chain in
    iptables beside it, iptables unread; its own warning says which), by neither: it
    said "judged by them" of one nothing was written for. `seen`: as _SEEN says it."""
    head = (
        f"{_named(attachment)}: {_SEEN[seen]}; {said}, but the node's rules tell"
        " that a plugin honoured the key (the plugin's table of its family, or another"
        " container's rules in nftables)"
    )
    if not in_doubt:
        return f"{head}: judged by them, not by the binaries"
    return (
        f"{head}, so the binaries do not settle it; nor do the rules (its other warning"
        " says why): it stays in doubt, nothing written for it in either backend"
    )


def _named(attachment: Attachment) -> str:
    return f"{attachment.network}/{attachment.container_id}"
