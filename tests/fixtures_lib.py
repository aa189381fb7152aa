"""Loading the real-plugin fixtures in tests/fixtures (see its README)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Sequence, Tuple

from portmapctl.cni import config as cni_config
from portmapctl.core.mapping import MappingConfig
from portmapctl.iptables.ruleset import NatTable, parse_save

FIXTURES = Path(__file__).parent / "fixtures"
NAMES = sorted(p.name[: -len(".conf.json")] for p in FIXTURES.glob("*.conf.json"))


def conf(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.conf.json").read_text())


def save_text(name: str, family: int) -> str:
    return (FIXTURES / f"{name}.v{family}.save").read_text()


def table(name: str, family: int) -> NatTable:
    return parse_save(save_text(name, family), family)


def configs(name: str) -> List[MappingConfig]:
    """The MappingConfig of every container the fixture's plugin ADD was given."""
    data = conf(name)
    found = []
    for container in data["containers"]:
        plugin_conf = dict(
            data["options"],
            name=data["network"],
            runtimeConfig={"portMappings": container["portMappings"]},
            prevResult={
                "interfaces": [{"name": container["ifname"], "sandbox": "/x"}],
                "ips": [{"address": ip, "interface": 0} for ip in container["ips"]],
            },
        )
        found.append(cni_config.plugin_config(plugin_conf, container["containerId"], name))
    return found


def plugin_stdin(name: str, index: int, port_shift: int) -> dict:
    """The plugin's stdin for container `index` of a fixture (its options, its
    addresses), with its host ports shifted (the ID is the caller's to give)."""
    import realplugin

    data = conf(name)
    container = data["containers"][index]
    ports = [dict(pm, hostPort=pm["hostPort"] + port_shift) for pm in container["portMappings"]]
    plugin = dict(data["options"], cniVersion="0.4.0", name=data["network"], type="portmap")
    plugin["runtimeConfig"] = {"portMappings": ports}
    plugin["prevResult"] = realplugin.prev_result(container["ips"])
    return plugin


def added_first(name: str, namespaces: Sequence[str]) -> Tuple[dict, dict]:
    """In each namespace, the real plugin's ADD of a fixture's first container (as
    "first"; the admin's external mark chain made beforehand, when it has one).
    Returns the stdin of that ADD and of the next container (host ports 1000 up)."""
    import realplugin

    first, second = plugin_stdin(name, 0, 0), plugin_stdin(name, 0, 1000)
    for ns in namespaces:
        if "externalSetMarkChain" in first:
            realplugin.iptables(ns, ["-t", "nat", "-N", first["externalSetMarkChain"]])
        done = realplugin.run_plugin("ADD", ns, "first", first)
        assert done.returncode == 0, done.stdout + done.stderr
    return first, second
