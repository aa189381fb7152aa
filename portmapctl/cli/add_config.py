"""add's mapping, and check's, from the command line: the options (or the plugin's own
stdin, --cni-config) validated into a MappingConfig held to --backend, what the plugin
would do nothing for (ForwardsNothing), and a short container ID refused. Shared by
add's fast path (cli/add_fast.py), typer's add (cli/add.py) and check; no typer here."""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

from portmapctl.core.backend import Backend

if TYPE_CHECKING:
    from portmapctl.cli._common import MappingOptions
    from portmapctl.core.mapping import MappingConfig
    from portmapctl.core.validate import Spelling


class ForwardsNothing(Exception):
    """A --cni-config for which the plugin's ADD and CHECK touch no rule (no port
    mappings, or no container address): add writes nothing, check expects nothing.
    Its text: the file and why."""


def mapping_from_options(mapping: MappingOptions, *, backend: Optional[Backend]) -> MappingConfig:
    """Validate the mapping options (shared by add and check) into a MappingConfig,
    held to --backend (None: auto). ForwardsNothing for a --cni-config the plugin does nothing for."""
    return mapping_and_key(mapping, backend=backend)[0]


def mapping_and_key(
    mapping: MappingOptions, *, backend: Optional[Backend]
) -> Tuple[MappingConfig, bool]:
    """mapping_from_options, and whether the backend it holds is the config's own
    `backend` key (a --cni-config that names one) rather than --backend's."""
    from portmapctl.core import validate
    from portmapctl.errors import BadInput
    from portmapctl.iptables.chains import buildable

    network, container, ip, publish = (
        mapping.network,
        mapping.container,
        mapping.ip,
        mapping.publish,
    )
    cni_config = mapping.cni_config
    if container is None:
        raise BadInput("--container is required")
    ifname = validate.ifname(mapping.ifname)
    if cni_config == "":
        # (It said "cannot read --cni-config : No such file or directory".)
        raise BadInput("--cni-config is empty: give a file (or - for stdin)")
    if cni_config is not None:
        from portmapctl.cni import config as cni_json
        from portmapctl.host import files, paths

        # The config's own keys say all of these (name, snat, markMasqBit, ...): one
        # given beside it was dropped without a word (--no-snat, and SNAT written).
        given = [
            name
            for name, value in (
                ("--network", network),
                ("--ip", ip),
                ("-p", publish),
                ("--no-snat", mapping.no_snat),
                ("--masq-all", mapping.masq_all),
                ("--mark-bit", mapping.mark_bit is not None),
                ("--external-setmark-chain", mapping.external_setmark_chain is not None),
                ("--conditions-v4", mapping.conditions_v4 is not None),
                ("--conditions-v6", mapping.conditions_v6 is not None),
            )
            if value
        ]
        if given:
            raise BadInput(
                f"--cni-config cannot be combined with {', '.join(given)}: the config's own"
                f" keys say what they would (give one or the other)"
            )
        source = "<stdin>" if cni_config == "-" else cni_config
        conf = cni_json.load_json(files.read_text(cni_config, "--cni-config"), source)
        conf = cni_json.stdin_as_read(conf, source)
        writes_to = backend
        if writes_to is None and paths.find_tool("iptables") is None:
            # No iptables: the plugin, and _add after it, take nftables for a config
            # without the key, so what that backend refuses is refused here too.
            writes_to = Backend.NFTABLES
        idle = cni_json.forwards_nothing(conf, ifname, source)
        stand_in = None
        if idle and not cni_json.result_addresses(conf["prevResult"], ifname, source):
            # No address: one stands in (nothing is built from it), so that the config
            # is held to all the rest below, as the plugin's is.
            stand_in = [validate.interface("192.0.2.1/32")]
        # Held to what the plugin's parseConfig refuses (bad names, mark bit, ports,
        # ...), which it reads before it looks at the ports or the address.
        parsed = cni_json.plugin_config(
            conf,
            validate.cni_name(container, "container ID"),
            source,
            ifname=ifname,
            addresses=stand_in,
            writes_to_backend=writes_to,
        )
        if idle:
            raise ForwardsNothing(f"{source} {idle}")
        return buildable(with_backend(parsed, backend), source), parsed.backend is not None
    if network is None:
        raise BadInput("--network is required (or give --cni-config)")
    if not publish:
        raise BadInput("give at least one -p [HOSTIP:]HOSTPORT:CONTAINERPORT[/PROTO]")
    config = validate.mapping_config(
        network=network,
        container_id=container,
        addresses=[validate.interface(value) for value in ip or []],
        ports=[mapping for spec in publish for mapping in validate.port_specs(spec)],
        snat=not mapping.no_snat,
        mark=mapping.mark_bit,
        external_setmark_chain=mapping.external_setmark_chain,
        conditions_v4=validate.conditions(_words(mapping.conditions_v4), "--conditions-v4"),
        conditions_v6=validate.conditions(_words(mapping.conditions_v6), "--conditions-v6"),
        masq_all=mapping.masq_all,
    )
    return buildable(with_backend(config, backend)), False


def spelling_of(mapping: MappingOptions) -> Spelling:
    """How the mapping's options were given: the plugin's config keys (--cni-config),
    else the command line's options; what the errors about them name."""
    from portmapctl.core import validate

    return validate.CONFIG_KEYS if mapping.cni_config is not None else validate.OPTIONS


def refuse_short_id(cache_dirs: Sequence[str], config: MappingConfig) -> None:
    """A short ID as list and check print it (a prefix of a cached container's ID on
    the network) names another chain than that container's: add and check --repair
    would write rules for a container nobody runs, check would report its chain
    missing. Refused (exit 2) with the whole ID to give."""
    from portmapctl.cni.entries import longer_id

    whole = longer_id(cache_dirs, config.network, config.container_id)
    if whole is not None:
        from portmapctl.errors import BadInput

        raise BadInput(
            f"--container {config.container_id} is short for {config.network}/{whole} in"
            f" the CNI cache: give the whole ID (the plugin names the chain after it)"
        )


def with_backend(config: MappingConfig, backend: Optional[Backend]) -> MappingConfig:
    """--backend (None: auto) against the config's own `backend` key (from --cni-config)."""
    from dataclasses import replace

    from portmapctl.errors import BadInput

    if backend is None:
        return config
    if config.backend not in (None, backend):
        raise BadInput(
            f'--backend {backend} contradicts the config\'s "backend": "{config.backend}"'
        )
    return replace(config, backend=backend)


def _words(values: Optional[List[str]]) -> Optional[str]:
    """A repeated --conditions-vN: every one applies (the last alone silently dropped
    the others, writing entry rules broader than asked), as one string of words."""
    return None if not values else " ".join(values)
