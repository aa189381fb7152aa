"""The sentences that say which backend the plugin keeps a container in, and why that
cannot be told: the notes, warnings and refusals of add and check (cli/add_backend.py,
check/followed.py, check/followed_entries.py, check/run.py, check/repair.py) begin or
end with these words. The judgement they report is ops/nft.py's (key_judged,
nothing_left, unread_key_verdict, kept_in_nftables) and ops/chain_place.py's; this
module only words it, so that one finding reads the same in every command.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Mapping, Optional, Sequence

from portmapctl.core.backend import Backend
from portmapctl.core.mapping import MappingConfig
from portmapctl.core.plugin_binary import KeySupport
from portmapctl.core.text import count, name_text
from portmapctl.iptables.chains import chain_name, dnat_chain_name

if TYPE_CHECKING:  # (add's refusals import these words: not the cache reader with them)
    from portmapctl.cni.cache import Attachment
    from portmapctl.host.cni_bins import PortmapBinaries


def gone_text(config: MappingConfig, said: str, why: str) -> str:
    """Why the backend of a container nothing_left puts in doubt cannot be told
    (`said`: where its key "nftables" was read; `why`: nothing_left's)."""
    return doubt_text(
        config,
        said,
        f"is in no iptables and no rule of it is in nftables (nothing of it is left); {why}",
        _KEY_WHETHER,
        _KEY_WHY,
    )


def unread_text(config: MappingConfig, said: str, why: str) -> str:
    """Why the backend of a container whose config says "nftables" and which has no
    rule in nftables cannot be told where the host's iptables cannot be read (`why`:
    its error; followed_entries.follow_the_plugin under --backend nftables)."""
    return doubt_text(
        config,
        said,
        f"cannot be looked for in iptables, which cannot be read ({why}), and no rule of it"
        " is in nftables",
        _KEY_WHETHER,
        _KEY_WHY,
    )


# What cannot be told of a container whose key "nftables" its plugin may ignore, and
# what would tell (in_doubt_text, gone_text, unread_text).
_KEY_WHETHER = (
    "its plugin ignores the key (before v1.6: it keeps it in iptables) or not (v1.6 on:"
    " in nftables)"
)
_KEY_WHY = "`portmap` run with no CNI_COMMAND prints its version"


def in_doubt_text(
    config: MappingConfig, said: str, where: str = "iptables", unread: Optional[str] = None
) -> str:
    """Why the backend of a container key_judged puts `in_doubt` cannot be told (`said`:
    where its key "nftables" was read, configured_there's words or the config's;
    `where`: its chain, ChainPlace.words); `unread`: nft's error, where that is so
    because the plugin's table is here and nft cannot read it
    (followed_entries.follow_the_plugin)."""
    seen = (
        " and it has no rule in nftables, where the plugin's table is here but not as the"
        " plugin leaves it (flushed?)"
        if unread is None
        else _UNREAD.format(unread)
    )
    return doubt_text(config, said, f"is in {where}{seen}", _KEY_WHETHER, _KEY_WHY)


def unplaced_text(config: MappingConfig, unread: str) -> str:
    """Why a cache entry without a `backend` key whose chain is in no iptables
    (followed_entries.follow_the_plugin: `unplaced`) is in doubt: the plugin's table is
    here and nft cannot read it (`unread`: nft's error), so whether its rules are there
    alone (where it is followed: kept_in_nftables, split) cannot be told."""
    return doubt_text(
        config,
        f'{_who(config)}: its cached config has no "backend" key',
        f"is not in iptables (either flavour){_UNREAD.format(unread)}",
        "its rules are in nftables alone (where it is followed) or gone",
        "an iptables copy would map it twice",
    )


_UNREAD = ", and the plugin's table is here but nft cannot read it ({})"


def doubt_text(config: MappingConfig, said: str, chain: str, whether: str, why: str) -> str:
    """The one line in_doubt_text, gone_text, unread_text and unplaced_text say: `said` (its config's key),
    where its chain is (`chain`), `whether` what cannot be told, and nothing written
    (`why`: what tells more, or what a write would do)."""
    return (
        f"{said}, its chain {chain_name(config.network, config.container_id, 'DN-')}"
        f" {chain}: whether {whether} cannot be told, so nothing is written for it in either"
        f" backend ({why})"
    )


def key_ignored_note(ignored: Sequence[Attachment], where: Mapping[str, str]) -> str:
    """The one line that says key_ignored's entries are judged in iptables: a note,
    not a warning (a healthy node says it on every run; the warnings metric would
    count it for ever). `where`: each one's chain, by name, as
    check/followed.chain_in_iptables says it ("iptables", "the iptables-legacy
    tables"): "in iptables" alone sent people to `iptables -t nat -S`, which shows
    nothing of a chain in the other flavour."""
    names = sorted({f"{name_text(a.network)}/{name_text(a.container_id)}" for a in ignored})
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    places = " or ".join(sorted({where.get(a.dnat_chain, "iptables") for a in ignored}))
    one = len(names) == 1
    return (
        f'{count(len(names), "container")} whose cached config says "backend": "nftables"'
        f" {'has its' if one else 'have their'} chain in {places} and no rule in nftables"
        f" ({shown}): the plugin that added {'it' if one else 'them'} ignores the key (plugins"
        f" before v1.6 do, Debian's 1.1.1 among them), so {'it is' if one else 'they are'}"
        " judged in iptables, where its CHECK and DEL look"
    )


def kept_there(config: MappingConfig) -> str:
    """What kept_in_nftables found, as the notes and errors that follow it begin."""
    return f"{_who(config)}: its rules are in the plugin's nftables tables alone"


def chain_there(config: MappingConfig, where: str = "iptables") -> str:
    """What ops/chain_place.py found (`where`: ChainPlace.words), as the notes and
    refusals that follow it begin: the plugin keeps a container whose chain is in
    iptables there."""
    return f"{_who(config)}: its chain {dnat_chain_name(config)} is in {where}"


class FollowedBy(str, Enum):
    """What a command does with a mapping whose key "nftables" its plugin ignored, and
    the plugin call that looks for it where it goes (key_followed_to_iptables' end)."""

    ADD = "it goes to iptables, where its DEL looks"
    CHECK = "it is checked in iptables, where its CHECK looks"


def key_followed_to_iptables(config: MappingConfig, where: str, said: str, by: FollowedBy) -> str:
    """The note of one mapping whose config says "backend": "nftables" while its chain
    is in iptables and no rule of it is in nftables, which add and check follow to
    iptables (cli/add_backend.py, check/followed.py): `said`, where the key was read
    (configured_there's words); `where`, its chain (ChainPlace.words); `by`, the
    command, which the note ends with. The node's many such entries: key_ignored_note."""
    return (
        f"{said}, but its chain {dnat_chain_name(config)} is in {where} and it has no"
        " rule in nftables: the plugin that added it ignores the key (plugins before v1.6"
        f" do), so {by.value}"
    )


def ignored_there(config: MappingConfig, where: str = "iptables", whose: str = "its cached") -> str:
    """What key_ignored found for one container, as the refusals that follow it begin:
    its plugin ignored the `"backend": "nftables"` of a config (`where`: its chain,
    ChainPlace.words; `whose`: its cached config's, else the config given)."""
    return (
        f"{chain_there(config, where)}, no rule of it in nftables: its plugin ignores {whose}"
        ' "backend": "nftables" (plugins before v1.6 do)'
    )


def configured_there(
    config: MappingConfig, backend: Backend = Backend.NFTABLES, cached: bool = True
) -> str:
    """What cni/cache.py configured_backend found, as the notes and errors that follow
    it begin: the container's cached config names `backend` (`cached` False: the
    config given, --cni-config, does)."""
    whose = "its cached config" if cached else "its config"
    return f'{_who(config)}: {whose} says "backend": "{backend.value}"'


def cannot_tell(config: MappingConfig, why: object) -> str:
    """Why a write of a mapping without a `backend` key stops where the plugin's tables
    exist and nft cannot read them: when in doubt, nothing is written (an iptables copy
    of a container kept there would map it twice)."""
    return (
        f"the plugin's nftables tables are here but nft cannot read them ({why}): cannot"
        f" tell whether it keeps {_who(config)} there; give"
        " --backend iptables or --backend nftables"
    )


def _who(config: MappingConfig) -> str:
    """NETWORK/ID as these lines name a container: the names are the node's (a cached
    config's) or the user's, written as their cells write them (core/text.name_text)."""
    return f"{name_text(config.network)}/{name_text(config.container_id)}"


def binaries_text(paths: str, verdict: KeySupport, count: int) -> str:
    """What the node's portmap binaries (`paths`, `count` of them: host/cni_bins.py)
    do with the key "backend": "nftables", as a verdict they settled says it."""
    one = count == 1
    them = f"the portmap binar{'y' if one else 'ies'} {paths}"
    if verdict is KeySupport.HONOURS:
        return (
            f"{them} honour{'s' if one else ''} the key (v1.6 on: the table name"
            f" cni_hostport is in {'it' if one else 'each'})"
        )
    return (
        f"{them} ignore{'s' if one else ''} the key (before v1.6: no nftables backend"
        f" in {'it' if one else 'any'}, the table name cni_hostport is not there)"
    )


def settle_text(binaries: PortmapBinaries) -> str:
    """Why the node's portmap binaries (host/cni_bins.py) settled nothing of a container
    of which nothing is left, or decide nothing (found in the default directories, a
    guess of where the runtime's plugins are), and what settles it: the directories
    looked in, and `--cni-bin-dir DIR`, where the runtime's plugins are."""
    looked = "given" if binaries.stated else "default"
    where = f"the {looked} CNI bin directories ({', '.join(binaries.dirs)})"
    told = [b for b in binaries.found if b.support is not None]
    verdict = binaries.verdict
    if not binaries.found:
        found = f"no portmap binary is in {where}"
    elif verdict is not None and not binaries.stated:
        found = (
            f"{binaries_text(binaries.words(), verdict, len(binaries.found))}, found in"
            f" {where}, which need not be the runtime's"
        )
    elif len(told) < len(binaries.found):
        untold = "; ".join(f"{b.path}: {b.error}" for b in binaries.found if b.support is None)
        found = f"a portmap binary of {where} tells nothing ({untold})"
    else:
        found = (
            f"the portmap binaries of {where} disagree ("
            + "; ".join(f"{b.path} {b.support.value} the key" for b in told if b.support)
            + ")"
        )
    return (
        f"{found}: `--cni-bin-dir DIR`, the directory the runtime's plugins are in"
        " (containerd's bin_dir, CRI-O's plugin_dirs), settles it"
    )
