"""The stdin's `cniVersion`, and its prevResult's, as the real plugins read them: a
version the plugin's skel does not take, or a prevResult of another version than the
config's, fails its ADD before a rule is written; a config without `cniVersion` is
0.1.0 to it, whose prevResult spells addresses `ip4`/`ip6` (an `ips` list is unread,
so no address: the ADD writes nothing). `add --cni-config` ignored both versions: it
wrote the rules of configs the plugins refuse, wrote them for one they write nothing
for, and none for one they map (found by a differential run of hand-written configs
against Debian's 1.1.1 and upstream v1.9.1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import pmctl
import pytest
import realplugin as rp
import upstream

pytestmark = pytest.mark.netns

PORTS = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
IPS_040 = {"interfaces": [{"name": "eth0", "sandbox": "/x"}],
           "ips": [{"version": "4", "address": "10.88.0.5/16", "interface": 0}]}  # fmt: skip
IPS_100 = {"interfaces": [{"name": "eth0", "sandbox": "/x"}],
           "ips": [{"address": "10.88.0.5/16", "interface": 0}]}  # fmt: skip
IP4_020 = {"ip4": {"ip": "10.88.0.5/16"}}


def _conf(version: Any, prev: Dict[str, Any], prev_version: Optional[str] = None) -> dict:
    conf: Dict[str, Any] = {"name": "mynet", "type": "portmap", "runtimeConfig": PORTS}
    if version is not ...:
        conf["cniVersion"] = version
    conf["prevResult"] = dict(prev, **({"cniVersion": prev_version} if prev_version else {}))
    return conf


# case: (stdin, what v1.9.1's ADD does: "maps", "nothing" (exit 0, no rule), "refuses")
CASES = {
    "none, ips": (_conf(..., IPS_040), "nothing"),
    "none, ip4": (_conf(..., IP4_020), "maps"),
    "none, prevResult 0.4.0": (_conf(..., IPS_040, "0.4.0"), "refuses"),
    "0.2.0, prevResult 0.4.0": (_conf("0.2.0", IPS_040, "0.4.0"), "refuses"),
    "0.4.0, prevResult 1.0.0": (_conf("0.4.0", IPS_100, "1.0.0"), "refuses"),
    "0.4.0, prevResult without": (_conf("0.4.0", IPS_040), "maps"),
    "1.1.0": (_conf("1.1.0", IPS_100, "1.1.0"), "maps"),
    "9.9.9": (_conf("9.9.9", IPS_040, "0.4.0"), "refuses"),
    "v0.4.0": (_conf("v0.4.0", IPS_040, "0.4.0"), "refuses"),
    "a number": (_conf(4, IPS_040, "0.4.0"), "refuses"),
}


@pytest.fixture(autouse=True)
def _upstream_binaries() -> None:
    rp.require(upstream.available())


@pytest.fixture
def twins() -> Iterator[tuple[str, str]]:
    names = (rp.create_netns("pmt-ver-p"), rp.create_netns("pmt-ver-m"))
    try:
        yield names
    finally:
        for name in names:
            rp.delete_netns(name)


def _cni_rules(ns: str) -> list:
    return [line for line in rp.nat_rules(rp.save(ns, 4)) if "CNI-" in line]


@pytest.mark.parametrize("case", sorted(CASES))
def test_add_cni_config_reads_the_versions_as_the_plugin_does(
    twins: tuple[str, str], tmp_path: Path, case: str
) -> None:
    plugin_ns, ours_ns = twins
    conf, expected = CASES[case]
    added = upstream.run("v1.9.1", "ADD", plugin_ns, "c1", conf)
    theirs = _cni_rules(plugin_ns)
    outcome = "refuses" if added.returncode else ("maps" if theirs else "nothing")
    assert outcome == expected, (case, added.stdout + added.stderr)
    # Debian's 1.1.1 agrees, but for 1.1.0, which it does not take yet (run after the
    # read above, for another container).
    debian = rp.run_plugin("ADD", plugin_ns, "c2", conf)
    assert (debian.returncode != 0) == (expected == "refuses" or case == "1.1.0"), debian.stdout
    path = tmp_path / "conf.json"
    path.write_text(json.dumps(conf))
    done = pmctl.run(["add", "--container", "c1", "--cni-config", str(path), "--netns", ours_ns])
    if expected == "refuses":
        pmctl.assert_error(done, 2, str(path), "cniVersion")
        assert _cni_rules(ours_ns) == []
    else:
        assert done.returncode == 0, done.stderr
        assert _cni_rules(ours_ns) == theirs
