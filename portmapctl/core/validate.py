"""Validation of every value a user (or a file) hands us, before anything is written.

Each function returns a model value or raises BadInput with one line that says what
is wrong. The same checks serve the command line, `--cni-config`, and the CNI cache.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence, Tuple

from portmapctl.core.backend import Backend
from portmapctl.core.mapping import DEFAULT_MARK_BIT, Interface, MappingConfig, PortMapping
from portmapctl.core.patterns import lazy
from portmapctl.errors import BadInput

PROTOCOLS = ("tcp", "udp", "sctp")
# The CNI spec's rule for network names and container IDs; the plugin enforces it.
_CNI_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*\Z")
_CHAIN_NAME = lazy(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,27}\Z")
# Plain ASCII digits: int() would also take "８０", "8_080", " 80" and "+80".
_DIGITS = lazy(r"[0-9]{1,5}\Z")
# CNI's rule for interface names (libcni ValidateInterfaceName), as the kernel's.
_IFNAME_FORBIDDEN = lazy(r"[/:\s]")
# Words iptables' getopt reads as a target: -j/-g (also with the value attached, or
# bundled after flags such as -4jACCEPT) and unambiguous prefixes of --jump/--goto.
_TARGET_WORD = lazy(r"-[^-]*[jg].*|--(?:j|ju|jum|jump|g|go|got|goto)(?:=.*)?", re.DOTALL)
# Words iptables reads as a command or a table of its own: in conditions (appended to
# the plugin's own -A/-C/-D) iptables refuses them ("Cannot use -A with -A"), so the
# plugin's ADD fails; refused here, before anything is written or retried.
_COMMAND_WORD = lazy(
    r"-[ACDIRLSFZNXPEthV].*|--(?:append|check|delete|insert|replace|list|list-rules|flush"
    r"|zero|new-chain|delete-chain|policy|rename-chain|table|help|version)(?:=.*)?",
    re.DOTALL,
)
# IPv4 IP/PREFIX as ipaddress reads it (no leading zeros), ASCII only: parsed 2x faster
# than by ip_interface (a tenth of reading a 1,000-entry CNI cache); any other form goes
# to ipaddress, whose result this equals.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_INTERFACE = re.compile(
    rf"({_OCTET})\.({_OCTET})\.({_OCTET})\.({_OCTET})/(3[0-2]|[12]?[0-9])\Z"
)
_PORT_SPEC = lazy(
    r"(?:(?P<host_ip>\[[^\]]*\]|[^:\[\]]+):)?(?P<host_port>[^:/]+):(?P<container_port>[^:/]+)"
    r"(?:/(?P<proto>[^/]*))?\Z"
)


def shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def cni_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _CNI_NAME.match(value):
        raise BadInput(
            f"invalid {what} {shown(value)}: must match [a-zA-Z0-9][a-zA-Z0-9_.-]* (the CNI rule)"
        )
    return value


def chain(value: str, what: str = "chain name") -> str:
    if not isinstance(value, str) or not _CHAIN_NAME.match(value):
        raise BadInput(f"invalid {what} {shown(value)}: letters, digits, '_.-', at most 28")
    return value


def port(value: Any, what: str = "port") -> int:
    if isinstance(value, bool):
        raise BadInput(f"invalid {what} {shown(value)}: must be a number from 1 to 65535")
    if isinstance(value, str):
        number = int(value, 10) if _DIGITS.match(value) else None
    else:
        number = value
    if not isinstance(number, int) or not 1 <= number <= 65535:
        raise BadInput(f"invalid {what} {shown(value)}: must be a number from 1 to 65535")
    return number


def protocol(value: Any) -> str:
    proto = value.lower() if isinstance(value, str) else value
    if proto not in PROTOCOLS:
        raise BadInput(f"invalid protocol {shown(value)}: use tcp, udp or sctp")
    return proto


def host_ip(value: Any, *, zone_taken: bool = False) -> str:
    """A host address without prefix; brackets around IPv6 are accepted.

    `zone_taken`: the value is one the plugin's iptables backend took (a CNI cache
    entry of it: its ADD succeeded), zone and all. ip6tables reads `-d` through
    getaddrinfo, which takes a zone on a link-local address whose interface exists
    there (`fe80::1%eth0`) and drops it: the rule is `-d fe80::1/128`. Whether the
    interface existed cannot be told now, so a zone is refused where nothing says it
    was taken (add: the plugin fails on `fe80::1%nosuch`, and its nftables backend on
    any zone)."""
    if not isinstance(value, str):
        raise BadInput(f"invalid host IP {shown(value)}")
    text = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise BadInput(f"invalid host IP {shown(value)}: not an IPv4 or IPv6 address") from None
    # ipaddress takes a zone ("fe80::1%eth0", any text after the %); iptables only
    # where the node resolves it (above).
    zone = getattr(address, "scope_id", None)
    if zone and not zone_taken:
        raise BadInput(f"invalid host IP {shown(value)}: a zone (%...) cannot go in a rule")
    if zone:
        # (Go's net.ParseIP fails on a zone, so the plugin took it for IPv6 whatever
        # its bits: not the IPv4 of a ::ffff:a.b.c.d, below.)
        return ipaddress.IPv6Address(text.partition("%")[0]).compressed
    # Go's net.IP treats ::ffff:a.b.c.d as the IPv4 a.b.c.d (To4), and so does the
    # plugin: its rules are IPv4 ones, `-d a.b.c.d`.
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).compressed


def interface(value: Any) -> Interface:
    """A container address with its prefix, e.g. 10.88.0.5/16 or fd00::5/64."""
    if not isinstance(value, str) or "/" not in value:
        raise BadInput(f"invalid container address {shown(value)}: write it as IP/PREFIX")
    plain_v4 = _IPV4_INTERFACE.match(value)
    if plain_v4:
        a, b, c, d, prefix = (int(part) for part in plain_v4.groups())
        return ipaddress.IPv4Interface(((a << 24) | (b << 16) | (c << 8) | d, prefix))
    try:
        address = ipaddress.ip_interface(value)
    except ValueError:
        raise BadInput(f"invalid container address {shown(value)}: not IP/PREFIX") from None
    if getattr(address, "scope_id", None):
        raise BadInput(
            f"invalid container address {shown(value)}: a zone (%...) cannot go in a rule"
        )
    # ::ffff:a.b.c.d/P is the container's IPv4 address to the plugin (Go's To4), its
    # mask the last 32 bits of P's: a.b.c.d/(P-96), /0 below 96 (IPNet's own reading).
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        return ipaddress.IPv4Interface((mapped, max(address.network.prefixlen - 96, 0)))
    return address


def ifname(value: Any) -> str:
    """A container interface name as CNI allows it (CNI_IFNAME)."""
    if (
        not isinstance(value, str)
        or not value
        # A byte that is not UTF-8 (an argument's, held as a lone surrogate): no name
        # in the ADD result (JSON) is it; encode() raised, an internal error.
        or not _utf8(value)
        or len(value.encode()) > 15
        or value in (".", "..")
        or _IFNAME_FORBIDDEN.search(value)
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)
    ):
        raise BadInput(
            f"invalid interface name {shown(value)}: 1 to 15 bytes of UTF-8, no '/', ':' or whitespace"
        )
    return value


def _utf8(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def port_spec(spec: str) -> PortMapping:
    """Docker's -p syntax: [HOSTIP:]HOSTPORT:CONTAINERPORT[/PROTO]; IPv6 in brackets."""
    mappings = port_specs(spec)
    if len(mappings) != 1:
        raise BadInput(f"invalid port spec {shown(spec)}: one port, not a range, here")
    return mappings[0]


def port_specs(spec: str) -> Tuple[PortMapping, ...]:
    """Docker's -p syntax, port ranges too: [HOSTIP:]HOSTPORT[-END]:CONTAINERPORT[-END][/PROTO].

    A range maps port by port, in ascending order: `8000-8002:9000-9002` is 8000->9000,
    8001->9001, 8002->9002, the portMappings podman (and Docker's CNI users) hand the
    plugin for it. Both sides are ranges of one length or neither is, as podman
    requires: Docker reads `8000-8002:80` as "any one free host port of the range", which
    names no mapping to add or check."""
    match = _PORT_SPEC.match(spec) if isinstance(spec, str) else None
    if not match:
        raise BadInput(
            f"invalid port spec {shown(spec)}: use [HOSTIP:]HOSTPORT:CONTAINERPORT[/PROTO],"
            " e.g. 8080:80/tcp, [::1]:8080:80 or 8000-8005:8000-8005"
        )
    raw_ip = match["host_ip"]
    host_ports = _port_range(match["host_port"], "host port")
    container_ports = _port_range(match["container_port"], "container port")
    if len(host_ports) != len(container_ports):
        raise BadInput(
            f"invalid port spec {shown(spec)}: the host and container port ranges have"
            f" different lengths ({len(host_ports)} and {len(container_ports)})"
        )
    proto = protocol(match["proto"] if match["proto"] is not None else "tcp")
    address = host_ip(raw_ip) if raw_ip else ""
    return tuple(
        PortMapping(host_port=host, container_port=inside, protocol=proto, host_ip=address)
        for host, inside in zip(host_ports, container_ports)
    )


def _port_range(value: str, what: str) -> range:
    """`80` or `8000-8005` (both ends included, the end not below the start)."""
    start, dash, end = value.partition("-")
    if not dash:
        number = port(value, what)
        return range(number, number + 1)
    first, last = _range_end(value, start, "start", what), _range_end(value, end, "end", what)
    if last < first:
        raise BadInput(f"invalid {what} range {shown(value)}: its end is below its start")
    return range(first, last + 1)


def _range_end(value: str, part: str, which: str, what: str) -> int:
    """One end of the range `value`, named with the range: `port` would say "invalid
    host port ''" for `8000-`, a port no one gave."""
    if not part:
        raise BadInput(
            f"invalid {what} range {shown(value)}: its {which} is missing (START-END, e.g."
            " 8000-8005)"
        )
    try:
        return port(part, what)
    except BadInput:
        raise BadInput(
            f"invalid {what} range {shown(value)}: its {which} {shown(part)} must be a number"
            " from 1 to 65535"
        ) from None


def conditions(value: Any, what: str) -> Tuple[str, ...]:
    """Extra match arguments for the entry rules: a string (shell words) or a list.

    They must not carry a target (`-j`/`-g`), and no argument may hold a control
    character: a newline would let them add a rule of their own.
    """
    if value is None:
        return ()
    if isinstance(value, str):
        import shlex  # only here: every `add` imports this module

        try:
            words: Sequence[Any] = shlex.split(value)
        except ValueError as err:
            raise BadInput(f"invalid {what} {shown(value)}: {err}") from None
    elif isinstance(value, list):
        words = value
    else:
        raise BadInput(f"invalid {what} {shown(value)}: expected a list of strings")
    for word in words:
        if not isinstance(word, str) or not word:
            raise BadInput(f"invalid {what}: {shown(word)} is not a non-empty string")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in word):
            raise BadInput(f"invalid {what}: {shown(word)} holds control characters")
        if not _utf8(word):
            # Bytes that are not UTF-8 in argv (lone surrogates): no rule text can be
            # made of them (an internal error, exit 3, in a comment).
            raise BadInput(f"invalid {what}: {shown(word)} is not UTF-8")
        if _TARGET_WORD.fullmatch(word):
            raise BadInput(f"invalid {what}: conditions cannot set a target ({shown(word)})")
        if _COMMAND_WORD.fullmatch(word):
            raise BadInput(
                f"invalid {what}: conditions are match options, not a command or table"
                f" ({shown(word)})"
            )
    return tuple(words)


@dataclass(frozen=True)
class Spelling:
    """The mapping's options as the reader wrote them: the CLI's options, or the keys of
    the plugin's config (a --cni-config file, a CNI cache entry)."""

    mark_bit: str
    external_setmark_chain: str
    conditions_v4: str
    conditions_v6: str
    no_address: str  # where the container's addresses come from, when there are none

    def conditions(self, family: int) -> str:
        return self.conditions_v6 if family == 6 else self.conditions_v4


OPTIONS = Spelling(
    "--mark-bit",
    "--external-setmark-chain",
    "--conditions-v4",
    "--conditions-v6",
    "give --ip IP/PREFIX",
)
CONFIG_KEYS = Spelling(
    "markMasqBit",
    "externalSetMarkChain",
    "conditionsV4",
    "conditionsV6",
    "its prevResult has none (the plugin takes the container's addresses from there)",
)


def mark_bit(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 31:
        raise BadInput(f"invalid mark bit {shown(value)}: must be a number from 0 to 31")
    return value


def mapping_config(
    *,
    network: str,
    container_id: str,
    addresses: Iterable[Interface],
    ports: Iterable[PortMapping],
    snat: bool = True,
    mark: Optional[int] = None,
    external_setmark_chain: Optional[str] = None,
    conditions_v4: Tuple[str, ...] = (),
    conditions_v6: Tuple[str, ...] = (),
    masq_all: bool = False,
    backend: Optional[Backend] = None,
    spelling: Spelling = OPTIONS,
) -> MappingConfig:
    """Check the pieces together, as the plugin's parseConfig does; `spelling`: how
    the reader wrote the options an error names."""
    network = cni_name(network, "network name")
    container_id = cni_name(container_id, "container ID")
    if mark is not None and external_setmark_chain is not None:
        raise BadInput(
            f"{spelling.mark_bit} and {spelling.external_setmark_chain} cannot be used together"
        )
    addresses = tuple(addresses)
    if not addresses:
        raise BadInput(f"no container address: {spelling.no_address}")
    families = [a.version for a in addresses]
    if len(set(families)) != len(families):
        raise BadInput("give at most one container address per family")
    return MappingConfig(
        network=network,
        container_id=container_id,
        addresses=addresses,
        ports=tuple(ports),
        snat=snat,
        mark_bit=DEFAULT_MARK_BIT if mark is None else mark_bit(mark),
        external_setmark_chain=(
            chain(external_setmark_chain, "external setmark chain")
            if external_setmark_chain is not None
            else None
        ),
        conditions_v4=conditions_v4,
        conditions_v6=conditions_v6,
        masq_all=masq_all,
        backend=backend,
    )


def iptables_style(conditions: Sequence[str]) -> bool:
    """Whether conditions are iptables arguments, as the plugin tells (v1.6 on): the
    first word an option (`-s`) or a negation (`!`); else they are nftables syntax."""
    return bool(conditions) and conditions[0][:1] in ("-", "!")


def nft_refusals(config: MappingConfig, source: Optional[str] = None) -> None:
    """What the plugin refuses for its nftables backend (v1.6 on, on every ADD, CHECK
    and DEL), refused the same way: BadInput, `source` (a cache file) first."""
    iptables_only = []
    if config.external_setmark_chain is not None:
        iptables_only.append("externalSetMarkChain")
    for name, conditions in (
        ("conditionsV4", config.conditions_v4),
        ("conditionsV6", config.conditions_v6),
    ):
        if iptables_style(conditions):
            iptables_only.append(name)
    if iptables_only:
        where = f"{source}: " if source is not None else ""
        raise BadInput(
            f"{where}nftables backend was requested but configuration contains"
            f" iptables-specific options [{' '.join(iptables_only)}]"
        )


def chosen_families(config: MappingConfig, chosen: Sequence[int], what: str) -> Tuple[int, ...]:
    """The families of `chosen` (--family) the mapping has an address in; BadInput when
    none: there is nothing to `what` (add, check), which is no "in place" either."""
    found = tuple(family for family in config.families if family in chosen)
    if not found:
        missing = " or ".join(f"IPv{family}" for family in chosen) or "chosen"
        raise BadInput(
            f"nothing to {what}: the mapping has no {missing} address (--ip), and --family"
            " leaves out the others"
        )
    return found


# A wait longer than a year is a typo (`99999h`), not a policy.
MAX_DURATION_DAYS = 366


def duration(value: str) -> float:
    """`30s`, `5m`, `1h30m`, `1m40s`, `2h`, `1d` or plain seconds (`0`) into seconds:
    what the outputs print is accepted back."""
    text = value.strip().lower() if isinstance(value, str) else ""
    parts = re.findall(r"([0-9]+(?:\.[0-9]+)?)([smhd]?)", text)
    joined = "".join(number + unit for number, unit in parts)
    if not parts or joined != text or (len(parts) > 1 and not all(u for _, u in parts)):
        raise BadInput(f"invalid duration {shown(value)}: use e.g. 30s, 5m, 1h30m or 0")
    scale = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
    seconds = sum(float(number) * scale[unit] for number, unit in parts)
    if seconds > MAX_DURATION_DAYS * 86400:
        raise BadInput(f"invalid duration {shown(value)}: at most {MAX_DURATION_DAYS}d")
    return seconds
