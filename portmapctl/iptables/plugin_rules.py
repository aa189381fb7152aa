"""The plugin's own iptables rules, read: whose a chain is (the entry rules' comments),
which host ports an entry rule sends to it and under what conditions, and what each
per-port rule of a CNI-DN- chain matches and where its DNAT rules send traffic.

Pure, and the one place these rules are parsed: `inventory` (list's and check's
rows and statuses) and `chain_facts` (gc's lean pass) build on it. Older plugin
versions' shapes come from `shapes` (a v0.6 entry rule without a port match claims
every port its chain DNATs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Set, Tuple
from typing import Mapping as ReadOnly

from portmapctl.cni.cache import Attachment
from portmapctl.iptables import shapes
from portmapctl.iptables.chains import DNAT_PREFIX, TOPLEVEL_DNAT, chain_name, is_plugin_chain
from portmapctl.iptables.ruleset import Args, NatTable, option_value, options, rule_target
from portmapctl.iptables.shapes import ProtoPort

_COMMENT = re.compile(r'(?:dnat|snat) name: "(?P<network>[^"]*)" id: "(?P<id>[^"]*)(?P<end>"?)\Z')

_JUMPS = ("-j", "-g")

# The kernel keeps a comment's first 255 bytes (xt_comment: 256 with the NUL): the
# plugin's comment of a long network name and ID ends there, without its closing quote.
_COMMENT_KEPT = 255


class Identity(NamedTuple):
    """Whose a chain or rule is: its network and container ID, None where unknown."""

    network: Optional[str]
    container_id: Optional[str]


_NOBODY = Identity(None, None)


class PortMatch(NamedTuple):
    """What a per-port rule of a CNI-DN- chain matches."""

    protocol: str
    host_port: int
    host_ip: Optional[str]  # without its prefix length


class DnatRule(NamedTuple):
    """One DNAT rule of a CNI-DN- chain, with whether a mark rule (hairpin or
    localhost SNAT) for the same match comes before it."""

    protocol: str
    host_port: int
    host_ip: Optional[str]
    container_ip: str
    container_port: int
    snat: bool


@dataclass(frozen=True)
class EntryRule:
    """A rule that jumps to a per-container chain, with what it says in clear text."""

    chain: str  # the chain the rule is in (CNI-HOSTPORT-DNAT, CNI-HOSTPORT-SNAT, ...)
    index: int
    args: Args
    target: str
    network: Optional[str]
    container_id: Optional[str]
    ports: Tuple[ProtoPort, ...]
    # Its matches beyond the plugin's own (the network's conditionsV4/V6, as saved): such
    # a rule sends only some of its ports' packets to the chain.
    conditions: Tuple[str, ...] = ()


# Each rule is looked into once, through ruleset.options (one dict per rule): asking
# option_value five times per rule was half of `list`'s own time at 5,000 containers.


def parse_comment(args: Sequence[str]) -> Identity:
    return _identity_of(option_value(args, "--comment"))


def _identity_of(comment: Optional[str]) -> Identity:
    match = _COMMENT.match(comment) if comment else None
    if not match:
        return _NOBODY
    if match["end"]:
        return Identity(match["network"], match["id"])
    # A comment cut at 255 bytes loses the end of the ID: the network is still sure. One
    # that ends short of it, unquoted, is no comment the plugin wrote.
    if len(comment.encode("utf-8", "surrogateescape")) >= _COMMENT_KEPT:
        return Identity(match["network"], None)
    return _NOBODY


def _entry_ports_of(opts: ReadOnly[str, str]) -> Tuple[ProtoPort, ...]:
    proto = opts.get("-p")
    ports = opts.get("--dports")
    if not proto or not ports:
        return ()
    found = []
    for part in ports.split(","):
        low, _, high = part.partition(":")
        if low.isdigit() and (not high or high.isdigit()):
            found += [(proto, p) for p in range(int(low), int(high or low) + 1)]
    return tuple(found)


# The matches of the plugin's own entry rules, as saved (with the number of values
# each takes): `-p PROTO -m comment --comment C -m multiport --dports PORTS -j CHAIN`.
_ENTRY_OWN = {"-p": 1, "--comment": 1, "--dports": 1, "--dport": 1, "-j": 1, "-g": 1}
_ENTRY_OWN_MODULES = ("comment", "multiport", "tcp", "udp", "sctp")


def entry_conditions(args: Sequence[str]) -> Tuple[str, ...]:
    """What an entry rule matches beyond the plugin's own matches: the conditions it
    was given (`! -s 10.0.0.0/8`, `-m physdev ! --physdev-is-bridged`), as saved."""
    found: List[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        if token in _ENTRY_OWN and (not found or found[-1] != "!"):
            i += 1 + _ENTRY_OWN[token]
        elif token == "-m" and i + 2 < len(args) and args[i + 1] in _ENTRY_OWN_MODULES:
            # A module of our own is followed by its option: conditions' options of
            # the same module (`-m tcp --tcp-flags ...`) keep their `-m`.
            if args[i + 2] in _ENTRY_OWN:
                i += 2
            else:
                found += args[i : i + 2]
                i += 2
        else:
            found.append(token)
            i += 1
    return tuple(found)


def _strip_prefix(address: Optional[str]) -> Optional[str]:
    if address is None:
        return None
    return address.split("/", 1)[0]


def port_match(args: Sequence[str]) -> Optional[PortMatch]:
    """What a per-port rule matches, or None for another rule."""
    return _port_rule_of(options(args))


def _port_rule_of(opts: ReadOnly[str, str]) -> Optional[PortMatch]:
    proto = opts.get("-p")
    port = opts.get("--dport")
    if not proto or not port or not port.isdigit():
        return None
    return PortMatch(proto, int(port), _strip_prefix(opts.get("-d")))


def is_dead_host_ip(host_ip: Optional[str]) -> bool:
    """A `-d 0.0.0.0/32` (`::/128`) rule: see shapes.is_dead_destination."""
    return host_ip is not None and shapes.is_dead_destination(
        f"{host_ip}/{128 if ':' in host_ip else 32}"
    )


def per_container_chains(table: NatTable) -> List[str]:
    """The per-container chains: named exactly as the plugin names them (another chain
    that only starts with CNI-DN- is an admin's, foreign like any other)."""
    return [n for n in table.chains if is_plugin_chain(n)]


def entry_rules(table: NatTable, targets: Set[str]) -> Dict[str, List[EntryRule]]:
    """Rules anywhere in the table that jump to one of `targets`, by target."""
    found: Dict[str, List[EntryRule]] = {t: [] for t in targets}
    for chain in table.chains.values():
        for index, args in enumerate(chain.rules):
            # A jump's target is last: the first step of rule_target, without the call
            # (this runs for every rule of the table).
            target = args[-1] if len(args) > 1 and args[-2] in _JUMPS else rule_target(args)
            if target in found:
                opts = options(args)
                network, container_id = _identity_of(opts.get("--comment"))
                ports = _entry_ports_of(opts)
                if not ports and chain.name == TOPLEVEL_DNAT and target.startswith(DNAT_PREFIX):
                    # v0.6: no port match, every port its chain DNATs is claimed.
                    ports = shapes.entry_ports(args, table.rules(target))
                found[target].append(
                    EntryRule(
                        chain.name,
                        index,
                        args,
                        target,
                        network,
                        container_id,
                        ports,
                        entry_conditions(args) if chain.name == TOPLEVEL_DNAT else (),
                    )
                )
    return found


def _names(network: Optional[str], container_id: Optional[str], target: Optional[str]) -> bool:
    """Whether `target` is the chain the plugin names for `network` and `container_id`
    (SHA-512 of both, chain_name), under its prefix (DN- or SN-)."""
    if network is None or container_id is None or not target or not is_plugin_chain(target):
        return False
    return chain_name(network, container_id, target[len("CNI-") : len(DNAT_PREFIX)]) == target


def names_its_chain(entry: EntryRule) -> bool:
    """Whether the entry rule's comment names the network and container ID its target
    is named for, as the plugin's own comment does. Another tool's rule may say anything
    there (another network, a live container's ID, control characters)."""
    return _names(entry.network, entry.container_id, entry.target)


def rule_owner(args: Sequence[str]) -> Identity:
    """Whose a rule jumping to a per-container chain is, as its comment says where it
    names that chain's owner (or, cut by the kernel, the network alone: nothing to
    hash); a comment naming anyone else names nobody."""
    return _claimed(parse_comment(args), rule_target(args))


def entry_owner(entry: EntryRule) -> Identity:
    """rule_owner of an entry rule already read (its comment parsed once)."""
    return _claimed(Identity(entry.network, entry.container_id), entry.target)


def cut_id(entry: EntryRule) -> Optional[str]:
    """What the comment the kernel cut (the network alone known) still shows of its
    container ID, the plugin's `...` left out: a prefix of that ID (a --keep prefix
    is matched against it); None for any other comment."""
    if entry.network is None or entry.container_id is not None:
        return None
    match = _COMMENT.match(option_value(entry.args, "--comment") or "")
    return match["id"].rstrip(".") if match else None


def written_by_plugin(entry: EntryRule) -> bool:
    """Whether `entry` may be the plugin's own entry rule: in CNI-HOSTPORT-DNAT, its
    comment naming its chain's owner (entry_owner; cut by the kernel: the network).
    Another tool's rule entering the chain sends ports the container never asked for."""
    return entry.chain == TOPLEVEL_DNAT and entry_owner(entry).network is not None


def _claimed(found: Identity, target: Optional[str]) -> Identity:
    if found.container_id is None or _names(*found, target):
        return found
    return _NOBODY


def owner(attachment: Optional[Attachment], entries: Iterable[EntryRule]) -> Identity:
    """Who a chain belongs to: the cache knows for sure; else an entry comment that
    names its chain (names_its_chain), wherever it stands among other tools' rules; else
    the network of a comment the kernel cut (the plugin's, for a long ID: nothing to
    hash), where all such say one. A comment naming another chain's owner names nobody:
    who entered it is unknown, not the other tool's word."""
    if attachment is not None:
        return Identity(attachment.network, attachment.container_id)
    cut: Set[str] = set()
    for entry in entries:
        if names_its_chain(entry):
            return Identity(entry.network, entry.container_id)
        if entry.network is not None and entry.container_id is None:
            cut.add(entry.network)
    return Identity(cut.pop(), None) if len(cut) == 1 else _NOBODY


def chain_owner(
    name: str,
    entries: ReadOnly[str, Sequence[EntryRule]],
    by_chain: ReadOnly[str, Attachment],
) -> Identity:
    """owner() of chain `name` (`entries`: entry_rules of the table; `by_chain`: the
    cache entries by chain name); where it tells nothing, the owner of its twin chain
    of the same hash (v0.6 made a CNI-DN- and a CNI-SN- chain per container)."""
    found = owner(by_chain.get(name), entries.get(name, ()))
    if found.network is not None:
        return found
    twin = (
        shapes.paired_snat_chain(name)
        if name.startswith(DNAT_PREFIX)
        else shapes.paired_dnat_chain(name)
    )
    if twin in entries:
        return owner(by_chain.get(twin), entries[twin])
    return found


def dnat_rules(rules: Sequence[Args]) -> List[DnatRule]:
    """The DNAT rules of a CNI-DN- chain's `rules`, each knowing whether a mark rule
    for the same match comes before it."""
    marked: Set[PortMatch] = set()
    found: List[DnatRule] = []
    for args in rules:
        opts = options(args)
        parsed = _port_rule_of(opts)
        if parsed is None:
            continue
        # A jump's target is last (mark rules): rule_target only for DNAT's options.
        target = args[-1] if args[-2] in _JUMPS else rule_target(args)
        if target == "DNAT":
            destination = shapes.split_destination(opts.get("--to-destination") or "")
            if destination:
                found.append(DnatRule(*parsed, *destination, parsed in marked))
        elif target is not None:
            # A hairpin or localhost mark rule (to SETMARK or an external chain). Not
            # "has -s": with masqAll the hairpin source is 0.0.0.0/0, which
            # iptables-save leaves out.
            marked.add(parsed)
    return found
