"""The plugin's own JSON: its stdin (a network config with `runtimeConfig` and
`prevResult`), as `--cni-config` gives it or as libcni caches it, into a `MappingConfig`.

Accepts what the plugin accepts; every refusal is a BadInput naming the source.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import replace
from typing import Any, List, Mapping, Optional, Tuple

from portmapctl.core.backend import Backend
from portmapctl.core.mapping import Interface, MappingConfig, PortMapping
from portmapctl.core.patterns import lazy
from portmapctl.core.validate import (
    CONFIG_KEYS,
    conditions,
    host_ip,
    interface,
    mapping_config,
    port,
    protocol,
    shown,
)
from portmapctl.errors import BadInput


def load_json(text: str, source: str) -> Any:
    if "\x00" in text:
        raise BadInput(f"{source}: binary data, not JSON")
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise BadInput(f"{source}: not valid JSON ({err})") from None
    # (A cheap look first: every command reads every cache entry through here.)
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):
        document = _as_go_reads(document)
    return document


# `\uD800`-`\uDFFF`: half of a UTF-16 pair, which json.loads keeps even with no other
# half: a lone surrogate, which no text can be encoded from (a rule's comment made of
# one ended list and check of the whole node in an internal error).
_SURROGATE_ESCAPE = lazy(r"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = lazy("[\ud800-\udfff]")


def _as_go_reads(value: Any) -> Any:
    """`value` with each lone surrogate as Go's encoding/json reads it: U+FFFD, the
    plugin's text (a pair json.loads has already joined into one character)."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_as_go_reads(item) for item in value]
    if isinstance(value, dict):
        return {_as_go_reads(key): _as_go_reads(item) for key, item in value.items()}
    return value


# The fields of the plugin's PortMapEntry, by their case-folded JSON names.
PORT_MAPPING_FIELDS = {
    name.casefold(): name for name in ("hostPort", "containerPort", "protocol", "hostIP")
}


def go_field(entry: Any, name: str, *, null_keeps: bool = False) -> Any:
    """`entry[name]` as Go's encoding/json fills a struct field `name` from a JSON object
    (None when it has none, or is no object): as _go_fields, keys match without regard
    to case and the later spelling wins. `null_keeps`: the field is no pointer (the
    plugin's `masqAll bool`), which a JSON null leaves as it was."""
    if not isinstance(entry, dict):
        return None
    folded, found = name.casefold(), None
    for key, value in entry.items():
        if isinstance(key, str) and key.casefold() == folded:
            if value is not None or not null_keeps:
                found = value
    return found


# The plugin's own options, PortMapConf's fields, by their case-folded JSON names.
_PLUGIN_OPTION_FIELDS = {
    name.casefold(): name
    for name in ("backend", "snat", "masqAll", "markMasqBit", "externalSetMarkChain",
                 "conditionsV4", "conditionsV6")
}  # fmt: skip


def _plugin_options(conf: Mapping[str, Any]) -> dict:
    """go_field of each of _PLUGIN_OPTION_FIELDS (masqAll with null_keeps), in one pass
    over `conf`'s keys: every cache entry is read through here, and a go_field each
    walked the whole config again (7 passes, 53,000 case folds for 1,000 entries)."""
    found: dict = dict.fromkeys(_PLUGIN_OPTION_FIELDS.values())
    for key, value in conf.items():
        name = _PLUGIN_OPTION_FIELDS.get(key.casefold()) if isinstance(key, str) else None
        if name is not None and (value is not None or name != "masqAll"):
            found[name] = value
    return found


def as_handed(value: Any) -> Any:
    """A plugin's entry as libcni handed it to the plugin: re-marshalled from a Go map
    (InjectConf), while the cache keeps the file's bytes. So its keys are sorted: of
    two spellings of one option (`"snat": false, "SNAT": true`) the plugin read the
    one sorted last (go_field takes the later one). And every number went
    through a float64 and back: `"markMasqBit": 5.0` reached the plugin as 5."""
    if isinstance(value, dict):
        return {key: as_handed(item) for key, item in sorted(value.items())}
    if isinstance(value, list):
        return [as_handed(item) for item in value]
    # (Go prints a float64 of 1e21 or more with an exponent, which no int field takes.)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    return value


def _go_fields(entry: Mapping[str, Any]) -> dict:
    """`entry` as Go's encoding/json fills the plugin's PortMapEntry: keys match the
    field names without regard to case, and of two spellings the later one wins.
    go-cni's PortMapping has no JSON tags, so containerd and Nomad (through libcni)
    cache `{"HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}`,
    which the plugin reads as it reads `hostPort`."""
    fields: dict = {}
    for key, value in entry.items():
        name = PORT_MAPPING_FIELDS.get(key.casefold()) if isinstance(key, str) else None
        if name is not None:
            fields[name] = value
    return fields


def _port_mapping(entry: Any, source: str, zone_taken: bool = False) -> PortMapping:
    if not isinstance(entry, dict):
        raise BadInput(f"{source}: each port mapping must be an object")
    fields = _go_fields(entry)
    if "hostPort" not in fields or "containerPort" not in fields:
        raise BadInput(f"{source}: port mapping {_as_json(entry)} needs hostPort and containerPort")
    raw_ip = fields.get("hostIP") or ""
    try:
        host_port = port(_go_int(fields["hostPort"], "hostPort"), "hostPort")
        container_port = port(_go_int(fields["containerPort"], "containerPort"), "containerPort")
        address = host_ip(raw_ip, zone_taken=zone_taken) if raw_ip else ""
        refused = plugin_refuses(fields.get("protocol"))
        if refused:
            raise BadInput(f"port mapping {_as_json(entry)}: {refused}")
        lower = protocol(fields["protocol"])
        return PortMapping(
            host_port=host_port,
            container_port=container_port,
            protocol=lower,
            host_ip=address,
            protocol_spelling="" if fields["protocol"] == lower else fields["protocol"],
        )
    except BadInput as err:
        raise BadInput(f"{source}: {err}") from None


# A value the plugin's Go types do not take fails its config's parse, and so its whole
# ADD: nothing is made for that container. Read so here too (never expected, never
# written), not made into what it looks like.
_FAILS_THE_ADD = "the plugin's ADD fails on it, making nothing"


def _go_int(value: Any, what: str) -> Any:
    """`value` as the plugin's `int` field takes it: a JSON string is refused."""
    if isinstance(value, str):
        raise BadInput(
            f"invalid {what} {shown(value)}: a JSON number, not a string ({_FAILS_THE_ADD})"
        )
    return value


def _go_conditions(value: Any, what: str) -> Tuple[str, ...]:
    """`value` as the plugin's `*[]string` takes it: a JSON string is refused (a
    command line's --conditions-v4 is shell words: core/validate.conditions)."""
    if isinstance(value, str):
        raise BadInput(
            f"invalid {what} {shown(value)}: a list of strings, not a string ({_FAILS_THE_ADD})"
        )
    return conditions(value, what)


def _as_json(entry: Mapping[str, Any]) -> str:
    """A port mapping as the file spells it (JSON, not Python's repr), cut at 80."""
    text = json.dumps(entry, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def plugin_refuses(raw_protocol: Any) -> str:
    """Why the plugin's ADD fails for a port mapping's `protocol` ("" if it does not).
    Debian's 1.1.1 and upstream v1.6.2-v1.9.1 (tests/interop/test_protocol_refusals.py):
    without one (absent, null, "") every backend writes `-p  --dport` or `dport`, which
    iptables and nft reject. (A word in upper case: nftables_refuses.)"""
    if raw_protocol is None or raw_protocol == "":
        return "no protocol: the plugin's ADD fails without one (give tcp, udp or sctp)"
    return ""


def nftables_refuses(config: MappingConfig) -> str:
    """Why the nftables backend's ADD fails for `config` ("" if it does not): it writes
    the protocol as the config spells it, and nft knows only lower-case tcp/udp/sctp
    (iptables lower-cases it, so "TCP" works there). Only a mapping it writes fails:
    one whose host IP is of a family the container has no address in is skipped
    before nft sees the word."""
    for mapping in config.ports:
        spelled = mapping.protocol_spelling
        if spelled and any(
            config.address(family) is not None and mapping.applies_to(family) for family in (4, 6)
        ):
            entry = {"hostPort": mapping.host_port, "containerPort": mapping.container_port,
                     "protocol": spelled, **({"hostIP": mapping.host_ip} if mapping.host_ip else {})}  # fmt: skip
            return (
                f"port mapping {_as_json(entry)}: protocol {shown(spelled)}: the plugin's"
                f' nftables backend fails on it (nft takes it only in lower case: "{mapping.protocol}")'
            )
    return ""


def port_mappings(
    value: Any, source: str, zone_taken: bool = False, writes_to: Optional[Backend] = None
) -> Tuple[Tuple[PortMapping, ...], Tuple[Mapping[str, Any], ...]]:
    """The entries, and those whose hostIP the plugin takes for an IPv6 one it cannot
    write (_unwritable_in_brackets; among the entries as IPv6 ones): `plugin_config`
    refuses them for a container with an IPv6 address, where the plugin's ADD fails. `zone_taken`: host IPs the plugin's iptables backend took
    (core/validate.host_ip). `writes_to`: the backend the rules go to (None: iptables)."""
    if value is None:
        return (), ()
    if not isinstance(value, list):
        raise BadInput(f"{source}: portMappings must be a list")
    mappings, unwritable = [], []
    for entry in value:
        if _unwritable_in_brackets(entry, writes_to):
            unwritable.append(entry)
            mappings.append(_as_ipv6_entry(entry, source, zone_taken))
        else:
            mappings.append(_port_mapping(entry, source, zone_taken))
    return tuple(mappings), tuple(unwritable)


def _as_ipv6_entry(entry: Mapping[str, Any], source: str, zone_taken: bool) -> PortMapping:
    """A bracketed hostIP's entry as the plugin has it where it skips it (a container
    without an IPv6 address): an IPv6 one, so this family writes no rule of it while
    its entry rule still names the port (the plugin's multiport lists every entry's),
    as for `::1`. The address inside, in IPv6 (`[127.0.0.1]`: ::ffff:127.0.0.1)."""
    inside = {key: item for key, item in entry.items() if str(key).casefold() != "hostip"}
    inside["hostIP"] = str(_go_fields(entry)["hostIP"])[1:].rstrip("]")
    mapping = _port_mapping(inside, source, zone_taken)
    address = ipaddress.ip_address(mapping.host_ip)
    if address.version == 4:
        address = ipaddress.IPv6Address(f"::ffff:{address}")
    return replace(mapping, host_ip=address.compressed)


def _unwritable_in_brackets(entry: Any, writes_to: Optional[Backend]) -> bool:
    """Whether the plugin takes `entry`'s hostIP for an IPv6 host IP it cannot write.

    Brackets are -p syntax (core/validate.port_spec; Docker strips them from any
    address). The plugin's Go reads a hostIP with net.ParseIP, which takes no brackets:
    nil, whose To4() is nil, so the entry is an IPv6 one to it: skipped for a container
    without an IPv6 address, and written as `-d [x]` otherwise, which ip6tables refuses
    (`host/network '[::1]' not found`). Its nftables backend writes `ip6 daddr [x]`, which
    nft reads for an IPv6 address, and refuses for any other (Debian's 1.1.1, upstream
    v1.9.1: tests/unit/test_bracketed_host_ip.py)."""
    fields = _go_fields(entry) if isinstance(entry, dict) else {}
    raw = fields.get("hostIP")
    if not isinstance(raw, str) or not raw.startswith("["):
        return False
    if writes_to == Backend.NFTABLES and raw.endswith("]"):
        try:
            inside = ipaddress.ip_address(raw[1:-1])
        except ValueError:
            return True
        # (`ip6 daddr [::]` is a rule for ::, not every address: not written so here.)
        return not (
            inside.version == 6 and inside.ipv4_mapped is None and not inside.is_unspecified
        )
    return True


# Results of these versions (a conflist of cniVersion 0.2.0: libcni caches the result,
# and hands it to portmap as prevResult, in that version) spell addresses their own way.
LEGACY_RESULT_VERSIONS = ("0.1.0", "0.2.0")

# libcni's result types (types/020, 040, 100), each with the cniVersions it reads: the
# stdin's cniVersion picks one, and prevResult must be of a version of that one. ""
# is 020's too: a config without cniVersion is 0.1.0 to the plugin.
RESULT_TYPES = (("", *LEGACY_RESULT_VERSIONS), ("0.3.0", "0.3.1", "0.4.0"), ("1.0.0", "1.1.0"))
# What the plugin's skel takes (upstream v1.6.2-v1.9.1; Debian's 1.1.1 stops at 1.0.0).
PLUGIN_VERSIONS = tuple(version for versions in RESULT_TYPES for version in versions if version)


def stdin_as_read(conf: Any, source: str) -> Any:
    """`conf` (the plugin's stdin) as the plugin reads it: the keys its structs take in
    any case (Go's encoding/json: "RuntimeConfig", "PortMappings", "PrevResult" and
    "Name" are theirs, the later spelling winning) spelled as the rest of this module
    reads them, and its prevResult's `cniVersion` the one the plugin reads that result
    in, which result_addresses goes by; BadInput where the plugin
    refuses the versions before it reads anything else: a cniVersion it does not
    support (its skel: "incompatible CNI versions"), or a prevResult of another
    version than the config's (libcni: "result type supports [...] but unmarshalled
    cniVersion is ..."). The plugin reads prevResult in the config's version: without
    a cniVersion (0.1.0), a prevResult spelling `ips` has no address to it, and one
    spelling `ip4` does."""
    if not isinstance(conf, dict):
        return conf  # (plugin_config says why the plugin refuses it)
    conf = _spelled_as_read(conf, {"name": True, "runtimeConfig": True, "prevResult": False})
    if isinstance(conf.get("runtimeConfig"), dict):
        runtime = _spelled_as_read(conf["runtimeConfig"], {"portMappings": False})
        conf = dict(conf, runtimeConfig=runtime)
    version = go_field(conf, "cniVersion", null_keeps=True)
    version = "" if version is None else version
    if not isinstance(version, str) or (version and version not in PLUGIN_VERSIONS):
        raise BadInput(
            f"{source}: unsupported cniVersion {shown(version)}: the plugin's ADD fails on it"
            f" (it takes {', '.join(PLUGIN_VERSIONS)})"
        )
    previous = conf.get("prevResult")
    if not isinstance(previous, dict):
        return conf
    # libcni's ParsePrevResult: a result without a version is given the config's, and
    # the result is re-marshalled from a Go map (keys sorted) before it is read.
    handed = dict(previous)
    if handed.get("CNIVersion", "") == "":
        handed["CNIVersion"] = version
    result_version = go_field(dict(sorted(handed.items())), "cniVersion", null_keeps=True) or ""
    [result_type] = [versions for versions in RESULT_TYPES if version in versions]
    if result_version not in result_type:
        raise BadInput(
            f"{source}: prevResult's cniVersion {shown(result_version)} is not of the"
            f" config's cniVersion {shown(version or '0.1.0')}: the plugin's ADD fails on it"
            f" (give both the same version)"
        )
    if result_version not in ("", *LEGACY_RESULT_VERSIONS):
        from portmapctl.cni.result_types import refusal

        why = refusal(as_handed(previous), result_version)
        if why is not None:
            raise BadInput(
                f"{source}: prevResult{why}: the plugin's ADD fails on it (libcni cannot"
                " read the result)"
            )
    # (0.1.0 for 020's "": result_addresses reads a result of that type by its version.)
    return dict(conf, prevResult=dict(previous, cniVersion=result_version or "0.1.0"))


def _spelled_as_read(entry: dict, fields: Mapping[str, bool]) -> dict:
    """`entry` with each of `fields` (name: whether a JSON null leaves the Go field as
    it was: a string's or a struct's) under that name alone, as go_field reads it."""
    folded = {name.casefold(): name for name in fields}
    kept = {k: v for k, v in entry.items() if not (isinstance(k, str) and k.casefold() in folded)}
    for name, null_keeps in fields.items():
        if any(isinstance(k, str) and k.casefold() == name.casefold() for k in entry):
            value = go_field(entry, name, null_keeps=null_keeps)
            if value is not None or not null_keeps:
                kept[name] = value
    return kept


def result_addresses(result: Any, ifname: Optional[str], source: str) -> List[Interface]:
    """The container's addresses from a CNI result, first of each family.

    Like the plugin, skip addresses of interfaces that are known not to be the
    container's (another name, or no sandbox).
    """
    if result is None:
        return []
    if isinstance(result, dict) and result.get("cniVersion") in LEGACY_RESULT_VERSIONS:
        # No `ips` there: `ip4` and `ip6` ({"ip": "10.88.0.5/16", ...}), which the plugin
        # converts to addresses of no interface (types/020), so none is skipped.
        legacy = (result.get("ip4"), result.get("ip6"))
        result = {"ips": [{"address": c.get("ip")} for c in legacy if isinstance(c, dict)]}
    # `"ips": null` is Go's empty list (a result without addresses: L2-only IPAM).
    if not isinstance(result, dict) or not isinstance(result.get("ips") or [], list):
        raise BadInput(f"{source}: the CNI result must be an object with an 'ips' list")
    interfaces = result.get("interfaces") or []
    found: dict = {}
    for ip in result.get("ips") or []:
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


def forwards_nothing(conf: Any, ifname: Optional[str], source: str) -> str:
    """Why the plugin's ADD and CHECK leave every rule alone for this stdin ("" when
    they act): no port mappings (libcni passes no `runtimeConfig` for a container
    without ports, as containerd and CRI-O do for every pod without a hostPort), or a
    `prevResult` without an address on the interface (an L2-only network). Both
    return before a rule is read or written (main.go cmdAdd, cmdCheck)."""
    if not isinstance(conf, dict) or not isinstance(conf.get("prevResult"), dict):
        return ""  # (the plugin refuses these: plugin_config says why)
    runtime = conf.get("runtimeConfig") or {}
    ports = runtime.get("portMappings") if isinstance(runtime, dict) else None
    if ports is None or ports == []:
        return "maps no ports (runtimeConfig.portMappings is empty)"
    if not result_addresses(conf["prevResult"], ifname, source):
        where = "prevResult.ips"
        if conf["prevResult"].get("cniVersion") in LEGACY_RESULT_VERSIONS:
            # (A config without cniVersion is 0.1.0: its prevResult's `ips` are unread.)
            where = "prevResult.ip4/ip6, as a result of cniVersion 0.1.0 or 0.2.0"
        return f"gives {ifname or 'the container'} no address ({where})"
    return ""


def plugin_config(
    conf: Any,
    container_id: str,
    source: str,
    ifname: Optional[str] = "eth0",
    port_mappings_override: Any = None,
    addresses: Optional[List[Interface]] = None,
    writes_to_backend: Optional[Backend] = None,
    cached: bool = False,
) -> MappingConfig:
    """The portmap plugin's stdin (or the portmap entry of a cached conflist).

    `addresses`: those of `prevResult`, when the caller has them already.
    `writes_to_backend`: where rules go for a config without a `backend` key (add
    --backend nftables), for what the plugin refuses there.
    `cached`: a CNI cache entry's, which the plugin's ADD took: a host IP's zone
    (`fe80::1%eth0`) its iptables backend took too, and dropped (validate.host_ip)."""
    if not isinstance(conf, dict):
        raise BadInput(f"{source}: the network config must be a JSON object")
    # (Only a null, or no key, is none: Go fails to decode [], "", 0 or false into the
    # plugin's struct, where `or {}` took them for an empty one.)
    runtime = conf.get("runtimeConfig")
    runtime = {} if runtime is None else runtime
    if not isinstance(runtime, dict):
        raise BadInput(f"{source}: runtimeConfig must be an object")
    raw_ports = (
        port_mappings_override
        if port_mappings_override is not None
        else runtime.get("portMappings")
    )
    # The plugin's own options are PortMapConf's fields, which Go fills from keys in
    # any case ("SNAT": false is snat: false to it): as go_field reads, not conf.get.
    options = _plugin_options(conf)
    # Go reads an absent key and `null` alike (a nil pointer): the plugin's default.
    snat = options["snat"]
    snat = True if snat is None else snat
    masq_all = options["masqAll"]
    masq_all = False if masq_all is None else masq_all
    for key, value in (("snat", snat), ("masqAll", masq_all)):
        if not isinstance(value, bool):
            raise BadInput(f"{source}: {key} must be true or false")
    raw_backend = options["backend"]
    if raw_backend is not None and raw_backend not in tuple(Backend):
        # As the plugin: `failed to parse config: unrecognized backend "nft"`.
        raise BadInput(
            f"{source}: unrecognized backend {shown(raw_backend)}: use iptables or nftables"
        )
    backend = None if raw_backend is None else Backend(raw_backend)
    # The backend the rules go to decides what the plugin refuses (add --backend
    # nftables writes a keyless config there).
    writes_to = backend or writes_to_backend
    try:
        if addresses is None:
            addresses = result_addresses(conf.get("prevResult"), ifname, source)
        # (Its nftables backend fails on a zone: never cached with one.)
        zone_taken = cached and writes_to != Backend.NFTABLES
        ports, unwritable = port_mappings(raw_ports, source, zone_taken, writes_to)
        if unwritable and any(address.version == 6 for address in addresses):
            odd = unwritable[0]
            raise BadInput(
                f"port mapping {_as_json(odd)}: hostIP {shown(_go_fields(odd)['hostIP'])}:"
                " the plugin reads no brackets there (they are -p syntax) and takes it for"
                f" an IPv6 address it cannot write: {_FAILS_THE_ADD}"
            )
        config = mapping_config(
            network=conf.get("name", ""),
            container_id=container_id,
            addresses=addresses,
            ports=ports,
            snat=snat,
            mark=options["markMasqBit"],
            external_setmark_chain=options["externalSetMarkChain"],
            conditions_v4=_go_conditions(options["conditionsV4"], "conditionsV4"),
            conditions_v6=_go_conditions(options["conditionsV6"], "conditionsV6"),
            masq_all=masq_all,
            backend=backend,
            spelling=CONFIG_KEYS,
        )
    except BadInput as err:
        message = str(err)
        raise BadInput(message if message.startswith(source) else f"{source}: {message}") from None
    refused = nftables_refuses(config) if writes_to == Backend.NFTABLES else ""
    if refused:
        raise BadInput(f"{source}: {refused}")
    return config


def ensure_mapping(value: Any, source: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise BadInput(f"{source}: expected a JSON object")
    return value
