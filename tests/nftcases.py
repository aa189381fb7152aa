"""The captured nftables cases (tests/fixtures/nft) as values for tests."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any, Dict, List

from portmapctl.core.mapping import MappingConfig, PortMapping
from portmapctl.nftables import ruleset

HERE = Path(__file__).resolve().parent / "fixtures" / "nft"
CASES = sorted(p.name[: -len(".steps.json")] for p in HERE.glob("*.steps.json"))


def steps(name: str) -> List[Dict[str, Any]]:
    return json.loads((HERE / f"{name}.steps.json").read_text())["steps"]


def json_text(name: str) -> str:
    return (HERE / f"{name}.nft.json").read_text()


def text(name: str) -> str:
    return (HERE / f"{name}.nft").read_text()


def live(name: str) -> ruleset.Ruleset:
    return ruleset.parse(json_text(name), f"{name}.nft.json")


def config_of(step: Dict[str, Any]) -> MappingConfig:
    """The MappingConfig the plugin was given in one captured step."""
    conf = step["conf"]
    ports = tuple(
        PortMapping(
            pm["hostPort"], pm["containerPort"], pm.get("protocol", "tcp"), pm.get("hostIP", "")
        )
        for pm in conf["runtimeConfig"]["portMappings"]
    )
    addresses = tuple(ipaddress.ip_interface(ip["address"]) for ip in conf["prevResult"]["ips"])
    return MappingConfig(
        conf["name"],
        step["containerId"],
        addresses,
        ports,
        snat=conf.get("snat", True),
        conditions_v4=tuple(conf.get("conditionsV4", ())),
        conditions_v6=tuple(conf.get("conditionsV6", ())),
    )


def live_configs(name: str) -> List[MappingConfig]:
    """Configs of the containers still there at the end of a case, in ADD order."""
    found: Dict[str, MappingConfig] = {}
    for step in steps(name):
        if step["command"] == "ADD":
            found[step["containerId"]] = config_of(step)
        elif step["command"] == "DEL":
            found.pop(step["containerId"], None)
    return list(found.values())
