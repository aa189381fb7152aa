"""The plugin's stdin keys in another case: Go's encoding/json fills the plugin's
structs from `"RuntimeConfig"`, `"PortMappings"`, `"PrevResult"` and `"Name"` as from
their usual spelling (the later of two spellings winning), and the real plugins map
the ports of such a config. `add --cni-config` read them only as spelled in the CNI
spec: it said "nothing to add" of a config whose ports the plugins map (exit 0, no
rule; `check --cni-config` expected nothing of it), and refused one whose prevResult
or name was spelled otherwise (found by a differential run against upstream v1.9.1)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Dict, Iterator

import pmctl
import pytest
import realplugin as rp
import upstream

pytestmark = pytest.mark.netns

BASE = rp.plugin_conf("mynet", ["10.88.0.5/16"], [rp.port_mapping(8080, 80, "tcp")])
OTHER = [rp.port_mapping(9090, 90, "tcp")]


def _respelled(**changes: Any) -> Dict[str, Any]:
    conf = copy.deepcopy(BASE)
    for key, value in changes.items():
        for spelled in [k for k in conf if k.casefold() == key.casefold()]:
            del conf[spelled]
        conf[key] = value
    return conf


CASES = {
    "RuntimeConfig": _respelled(RuntimeConfig=BASE["runtimeConfig"]),
    "PortMappings": _respelled(runtimeConfig={"PORTMAPPINGS": OTHER}),
    "PrevResult": _respelled(PrevResult=BASE["prevResult"]),
    "Name": _respelled(Name="mynet"),
    # Two spellings: the later one is the plugin's.
    "runtimeConfig twice": {**BASE, "RUNTIMECONFIG": {"portMappings": OTHER}},
}


@pytest.fixture(autouse=True)
def _upstream_binaries() -> None:
    rp.require(upstream.available())


@pytest.fixture
def twins() -> Iterator[tuple[str, str]]:
    names = (rp.create_netns("pmt-keys-p"), rp.create_netns("pmt-keys-m"))
    try:
        yield names
    finally:
        for name in names:
            rp.delete_netns(name)


@pytest.mark.parametrize("case", sorted(CASES))
def test_add_cni_config_reads_the_keys_in_any_case_as_the_plugin_does(
    twins: tuple[str, str], tmp_path: Path, case: str
) -> None:
    plugin_ns, ours_ns = twins
    conf = CASES[case]
    upstream.run("v1.9.1", "ADD", plugin_ns, "c1", conf, check=True)
    theirs = [line for line in rp.nat_rules(rp.save(plugin_ns, 4)) if "CNI-" in line]
    assert any("DNAT --to-destination" in line for line in theirs), theirs
    path = tmp_path / "conf.json"
    path.write_text(json.dumps(conf))
    done = pmctl.run(["add", "--container", "c1", "--cni-config", str(path), "--netns", ours_ns])
    assert done.returncode == 0, done.stderr
    assert "nothing to add" not in done.stdout, done.stdout
    assert [line for line in rp.nat_rules(rp.save(ours_ns, 4)) if "CNI-" in line] == theirs
