"""add's shadow warning from `ops.add_others.neighbours` (CNI-HOSTPORT-DNAT listed alone, only
the rules naming one of the new host ports parsed, their chains listed one by one)
says what it says from the whole table, on real dumps: the example node, and field
shapes (v0.6 entry rules without ports, dead `-d 0.0.0.0/32` rules, /32 hairpins)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import List, Optional, Tuple

import pytest

from portmapctl.cli.add_warnings import shadow_warnings
from portmapctl.core import validate
from portmapctl.core.mapping import MappingConfig, PortMapping
from portmapctl.iptables import inventory
from portmapctl.iptables.access.snapshot import SnapshotBackend
from portmapctl.iptables.chains import TOPLEVEL_DNAT
from portmapctl.iptables.ruleset import Args, NatTable, format_rule
from portmapctl.ops.add_others import neighbours

ROOT = Path(__file__).resolve().parents[2]
DUMPS = [
    ROOT / "examples/node.v4.save",
    *sorted((ROOT / "tests/fixtures/field").glob("*.v4.save")),
]


class Listing:
    """`iptables -S CHAIN` of a saved table, as the restore backend lists it."""

    def __init__(self, table: NatTable) -> None:
        self.table = table

    def list_chain(self, family: int, chain: str) -> Optional[str]:
        if chain not in self.table.chains:
            return None
        lines = [f"-N {chain}"] + [format_rule("-A", chain, a) for a in self.table.rules(chain)]
        return "\n".join(lines) + "\n"

    def read_chain(self, family: int, chain: str) -> Optional[Tuple[Args, ...]]:
        return self.table.rules(chain) if chain in self.table.chains else None


def _configs(table: NatTable) -> List[MappingConfig]:
    """A new container on every (protocol, host port) of the table, on every address and
    on its host IP; each owner re-added; and a port nobody maps."""
    found = inventory.build({4: table})
    configs = []
    for m in found.mappings:
        if m.host_port is None or m.protocol is None:
            continue
        for host_ip in {None, m.host_ip}:
            configs.append(
                validate.mapping_config(
                    network="probe",
                    container_id=f"new{m.host_port}{m.protocol}",
                    addresses=[validate.interface("10.99.0.9/16")],
                    ports=[PortMapping(m.host_port, 80, m.protocol, host_ip or "")],
                )
            )
        if m.network and m.container_id and m.container_ip:
            configs.append(
                validate.mapping_config(
                    network=m.network,
                    container_id=m.container_id,
                    addresses=[validate.interface(f"{m.container_ip}/16")],
                    ports=[PortMapping(m.host_port, m.container_port or 80, m.protocol)],
                )
            )
    configs.append(
        validate.mapping_config(
            network="probe",
            container_id="nobody",
            addresses=[validate.interface("10.99.0.9/16")],
            ports=[PortMapping(1, 1)],
        )
    )
    return configs


@pytest.mark.parametrize("dump", DUMPS, ids=lambda p: p.name)
def test_the_listed_neighbours_warn_as_the_whole_table(dump):
    table = SnapshotBackend({4: str(dump)}).read(4)
    node = SimpleNamespace(backend=Listing(table))
    configs = _configs(table)
    assert len(configs) > 1
    warned = 0
    for config in configs:
        whole = shadow_warnings(config, {4: table})
        view = neighbours(node, 4, config)  # type: ignore[arg-type]
        # None: no CNI-HOSTPORT-DNAT to list (a partial field dump), so no warning.
        seen = {4: view} if view is not None else {}
        assert shadow_warnings(config, seen) == whole, config
        warned += bool(whole)
    if dump.name in ("node.v4.save", "v0.6-portless-entries.v4.save"):
        assert warned  # the comparison met some shadowing


def test_without_drops_the_chain_and_the_rules_that_jump_to_it():
    table = SnapshotBackend({4: str(ROOT / "examples/node.v4.save")}).read(4)
    chain = next(c for c in table.chains if c.startswith("CNI-DN-"))
    left = table.without({chain})
    assert chain not in left.chains
    assert all(chain not in args for args in left.rules(TOPLEVEL_DNAT))
    assert len(left.rules(TOPLEVEL_DNAT)) < len(table.rules(TOPLEVEL_DNAT))
