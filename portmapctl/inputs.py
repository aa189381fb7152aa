"""Validation of every value a user (or a file) hands us, before anything is written.

Each function returns a model value or raises BadInput with one line that says what
is wrong. The same checks serve the command line, `--cni-config`, and the CNI cache.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Tuple

from portmapctl.errors import BadInput
from portmapctl.model import DEFAULT_MARK_BIT, Interface, MappingConfig, PortMapping

PROTOCOLS = ("tcp", "udp", "sctp")
# The CNI spec's rule for network names and container IDs; the plugin enforces it.
_CNI_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*\Z")
_CHAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,27}\Z")
# Plain ASCII digits: int() would also take "８０", "8_080", " 80" and "+80".
_DIGITS = re.compile(r"[0-9]{1,5}\Z")
# CNI's rule for interface names (libcni ValidateInterfaceName), as the kernel's.
_IFNAME_FORBIDDEN = re.compile(r"[/:\s]")
# Words iptables' getopt reads as a target: -j/-g (also with the value attached, or
# bundled after flags such as -4jACCEPT) and unambiguous prefixes of --jump/--goto.
_TARGET_WORD = re.compile(r"-[^-]*[jg].*|--(?:j|ju|jum|jump|g|go|got|goto)(?:=.*)?", re.DOTALL)
_PORT_SPEC = re.compile(
    r"(?:(?P<host_ip>\[[^\]]*\]|[^:\[\]]+):)?(?P<host_port>[^:/]+):(?P<container_port>[^:/]+)"
    r"(?:/(?P<proto>[^/]*))?\Z"
)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def cni_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _CNI_NAME.match(value):
        raise BadInput(
            f"invalid {what} {_show(value)}: must match [a-zA-Z0-9][a-zA-Z0-9_.-]* (the CNI rule)"
        )
    return value


def chain(value: str, what: str = "chain name") -> str:
    if not isinstance(value, str) or not _CHAIN_NAME.match(value):
        raise BadInput(f"invalid {what} {_show(value)}: letters, digits, '_.-', at most 28")
    return value


def port(value: Any, what: str = "port") -> int:
    if isinstance(value, bool):
        raise BadInput(f"invalid {what} {_show(value)}: must be a number from 1 to 65535")
    if isinstance(value, str):
        number = int(value, 10) if _DIGITS.match(value) else None
    else:
        number = value
    if not isinstance(number, int) or not 1 <= number <= 65535:
        raise BadInput(f"invalid {what} {_show(value)}: must be a number from 1 to 65535")
    return number


def protocol(value: Any) -> str:
    proto = value.lower() if isinstance(value, str) else value
    if proto not in PROTOCOLS:
        raise BadInput(f"invalid protocol {_show(value)}: use tcp, udp or sctp")
    return proto


def host_ip(value: Any) -> str:
    """A host address without prefix; brackets around IPv6 are accepted."""
    if not isinstance(value, str):
        raise BadInput(f"invalid host IP {_show(value)}")
    text = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise BadInput(f"invalid host IP {_show(value)}: not an IPv4 or IPv6 address") from None
    # ipaddress takes a zone ("fe80::1%eth0", any text after the %): iptables does not.
    if getattr(address, "scope_id", None):
        raise BadInput(f"invalid host IP {_show(value)}: a zone (%...) cannot go in a rule")
    return address.compressed


def interface(value: Any) -> Interface:
    """A container address with its prefix, e.g. 10.88.0.5/16 or fd00::5/64."""
    if not isinstance(value, str) or "/" not in value:
        raise BadInput(f"invalid container address {_show(value)}: write it as IP/PREFIX")
    try:
        address = ipaddress.ip_interface(value)
    except ValueError:
        raise BadInput(f"invalid container address {_show(value)}: not IP/PREFIX") from None
    if getattr(address, "scope_id", None):
        raise BadInput(
            f"invalid container address {_show(value)}: a zone (%...) cannot go in a rule"
        )
    return address


def ifname(value: Any) -> str:
    """A container interface name as CNI allows it (CNI_IFNAME)."""
    if (
        not isinstance(value, str)
        or not value
        or len(value.encode()) > 15
        or value in (".", "..")
        or _IFNAME_FORBIDDEN.search(value)
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)
    ):
        raise BadInput(
            f"invalid interface name {_show(value)}: 1 to 15 bytes, no '/', ':' or whitespace"
        )
    return value


def port_spec(spec: str) -> PortMapping:
    """Docker's -p syntax: [HOSTIP:]HOSTPORT:CONTAINERPORT[/PROTO]; IPv6 in brackets."""
    match = _PORT_SPEC.match(spec) if isinstance(spec, str) else None
    if not match:
        raise BadInput(
            f"invalid port spec {_show(spec)}: use [HOSTIP:]HOSTPORT:CONTAINERPORT[/PROTO],"
            " e.g. 8080:80/tcp or [::1]:8080:80"
        )
    raw_ip = match["host_ip"]
    return PortMapping(
        host_port=port(match["host_port"], "host port"),
        container_port=port(match["container_port"], "container port"),
        protocol=protocol(match["proto"] if match["proto"] is not None else "tcp"),
        host_ip=host_ip(raw_ip) if raw_ip else "",
    )


def conditions(value: Any, what: str) -> Tuple[str, ...]:
    """Extra match arguments for the entry rules: a string (shell words) or a list.

    They must not carry a target (`-j`/`-g`), and no argument may hold a control
    character: a newline would let them add a rule of their own.
    """
    if value is None:
        return ()
    if isinstance(value, str):
        try:
            words: Sequence[Any] = shlex.split(value)
        except ValueError as err:
            raise BadInput(f"invalid {what} {_show(value)}: {err}") from None
    elif isinstance(value, list):
        words = value
    else:
        raise BadInput(f"invalid {what} {_show(value)}: expected a list of strings")
    for word in words:
        if not isinstance(word, str) or not word:
            raise BadInput(f"invalid {what}: {_show(word)} is not a non-empty string")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in word):
            raise BadInput(f"invalid {what}: {_show(word)} holds control characters")
        if _TARGET_WORD.fullmatch(word):
            raise BadInput(f"invalid {what}: conditions cannot set a target ({_show(word)})")
    return tuple(words)


def mark_bit(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 31:
        raise BadInput(f"invalid mark bit {_show(value)}: must be a number from 0 to 31")
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
) -> MappingConfig:
    """Check the pieces together, as the plugin's parseConfig does."""
    network = cni_name(network, "network name")
    container_id = cni_name(container_id, "container ID")
    if mark is not None and external_setmark_chain is not None:
        raise BadInput("--mark-bit and --external-setmark-chain cannot be used together")
    addresses = tuple(addresses)
    if not addresses:
        raise BadInput("no container address: give --ip IP/PREFIX")
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
    )


def buildable(config: MappingConfig) -> MappingConfig:
    """`config` if every family it has can be turned into rules, else BadInput.

    The conditions are free-form iptables arguments: one that names an address of the
    other family, or an option of no match, only shows when the rules are made. For
    options given by hand that must be before anything is written (not found by the
    second family after the first was applied). Cache files are not held to this:
    one odd entry must not stop `gc`.
    """
    from portmapctl.model import wanted_chains

    for family in config.families:
        try:
            wanted_chains(config, family)
        except BadInput as err:
            raise BadInput(
                f"invalid mapping for IPv{family}: {err} (see --conditions-v{family})"
            ) from None
    return config


# --- the plugin's own stdin format -----------------------------------------------


def read_text(path: str, what: str, max_bytes: int = 16 * 2**20) -> str:
    """A file's text (`-`: standard input), refused when unreadable, huge or binary."""
    import sys

    source = "<stdin>" if path == "-" else path
    try:
        if path == "-":
            data = sys.stdin.buffer.read(max_bytes + 1)
        else:
            with open(path, "rb") as handle:
                data = handle.read(max_bytes + 1)
    except OSError as err:
        raise BadInput(f"cannot read {what} {source}: {err.strerror}") from None
    if len(data) > max_bytes:
        raise BadInput(f"{what} {source} is larger than {max_bytes // 2**20} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"{what} {source}: not text (binary data?)") from None


def load_json(text: str, source: str) -> Any:
    if "\x00" in text:
        raise BadInput(f"{source}: binary data, not JSON")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:
        raise BadInput(f"{source}: not valid JSON ({err})") from None


def _port_mapping(entry: Any, source: str) -> PortMapping:
    if not isinstance(entry, dict):
        raise BadInput(f"{source}: each port mapping must be an object")
    if "hostPort" not in entry or "containerPort" not in entry:
        raise BadInput(f"{source}: port mapping {_show(entry)} needs hostPort and containerPort")
    raw_ip = entry.get("hostIP") or ""
    try:
        return PortMapping(
            host_port=port(entry["hostPort"], "hostPort"),
            container_port=port(entry["containerPort"], "containerPort"),
            protocol=protocol(entry.get("protocol") or "tcp"),
            host_ip=host_ip(raw_ip) if raw_ip else "",
        )
    except BadInput as err:
        raise BadInput(f"{source}: {err}") from None


def port_mappings(value: Any, source: str) -> Tuple[PortMapping, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise BadInput(f"{source}: portMappings must be a list")
    return tuple(_port_mapping(entry, source) for entry in value)


def result_addresses(result: Any, ifname: Optional[str], source: str) -> List[Interface]:
    """The container's addresses from a CNI result, first of each family.

    Like the plugin, skip addresses of interfaces that are known not to be the
    container's (another name, or no sandbox).
    """
    if result is None:
        return []
    if not isinstance(result, dict) or not isinstance(result.get("ips", []), list):
        raise BadInput(f"{source}: the CNI result must be an object with an 'ips' list")
    interfaces = result.get("interfaces") or []
    found: dict = {}
    for ip in result.get("ips", []):
        if not isinstance(ip, dict) or "address" not in ip:
            raise BadInput(f"{source}: every entry of 'ips' needs an 'address'")
        index = ip.get("interface")
        if isinstance(index, int) and isinstance(interfaces, list) and 0 <= index < len(interfaces):
            iface = interfaces[index] if isinstance(interfaces[index], dict) else {}
            if not iface.get("sandbox") or (ifname and iface.get("name") != ifname):
                continue
        try:
            address = interface(ip["address"])
        except BadInput as err:
            raise BadInput(f"{source}: {err}") from None
        found.setdefault(address.version, address)
    return [found[f] for f in sorted(found)]


def plugin_config(
    conf: Any,
    container_id: str,
    source: str,
    ifname: Optional[str] = "eth0",
    port_mappings_override: Any = None,
) -> MappingConfig:
    """The portmap plugin's stdin (or the portmap entry of a cached conflist)."""
    if not isinstance(conf, dict):
        raise BadInput(f"{source}: the network config must be a JSON object")
    runtime = conf.get("runtimeConfig") or {}
    if not isinstance(runtime, dict):
        raise BadInput(f"{source}: runtimeConfig must be an object")
    raw_ports = (
        port_mappings_override
        if port_mappings_override is not None
        else runtime.get("portMappings")
    )
    snat = conf.get("snat", True)
    masq_all = conf.get("masqAll", False)
    for key, value in (("snat", snat), ("masqAll", masq_all)):
        if not isinstance(value, bool):
            raise BadInput(f"{source}: {key} must be true or false")
    try:
        return mapping_config(
            network=conf.get("name", ""),
            container_id=container_id,
            addresses=result_addresses(conf.get("prevResult"), ifname, source),
            ports=port_mappings(raw_ports, source),
            snat=snat,
            mark=conf.get("markMasqBit"),
            external_setmark_chain=conf.get("externalSetMarkChain"),
            conditions_v4=conditions(conf.get("conditionsV4"), "conditionsV4"),
            conditions_v6=conditions(conf.get("conditionsV6"), "conditionsV6"),
            masq_all=masq_all,
        )
    except BadInput as err:
        message = str(err)
        raise BadInput(message if message.startswith(source) else f"{source}: {message}") from None


def duration(value: str) -> float:
    """`30s`, `5m`, `2h`, `1d` or plain seconds (`0`) into seconds."""
    match = (
        re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([smhd]?)", value.strip())
        if isinstance(value, str)
        else None
    )
    if not match:
        raise BadInput(f"invalid duration {_show(value)}: use e.g. 30s, 5m, 2h or 0")
    scale = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]
    return float(match[1]) * scale


def ensure_mapping(value: Any, source: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise BadInput(f"{source}: expected a JSON object")
    return value
