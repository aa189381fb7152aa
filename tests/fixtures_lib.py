"""Loading the real-plugin fixtures in tests/fixtures (see its README)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

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
