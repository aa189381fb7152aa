"""libcni cache entries as real nodes have them (issue 12): several cache directories
(Multus), entries the plugin accepts that 0.1 refused, capabilities, unreadable and
half-written files, zombie judging. Pure reading of files in tmp_path: no root."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

import pytest
from fixtures_lib import table
from hypothesis import given
from hypothesis import strategies as st
from realplugin import nomad_conflist

from portmapctl.cli._common import Common
from portmapctl.cni import cache as cni_cache
from portmapctl.cni import config as cni_config
from portmapctl.cni.cache import Attachment, name_readings, read_attachment, read_cache
from portmapctl.errors import BadInput
from portmapctl.host import paths
from portmapctl.host.netns import NamespaceView, NetnsState
from portmapctl.iptables import inventory
from portmapctl.iptables.chains import chain_name, is_plugin_chain
from portmapctl.iptables.ruleset import parse_save
from portmapctl.ops.check import diagnose as diagnose_mod
from portmapctl.ops.check.expected import cached_configs
from portmapctl.ops.gc import Sources, liveness, plan_family

PORTS = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]


def entry(
    network: str = "mynet",
    cid: str = "abc123",
    *,
    portmap: Optional[dict] = None,
    result: Any = "default",
    ports: Any = PORTS,
    netns: Optional[str] = "/var/run/netns/x",
    config: Any = None,
) -> dict:
    """A cniCacheV1 entry as libcni writes it (a bridge + portmap conflist)."""
    if portmap is None:
        portmap = {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}
    if config is None:
        config = {
            "cniVersion": "1.0.0",
            "name": network,
            "plugins": [{"type": "bridge", "bridge": "cni0"}, portmap],
        }
    if result == "default":
        result = {
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": netns or ""}],
            "ips": [{"address": "10.88.0.5/16", "interface": 0}],
        }
    doc = {
        "kind": "cniCacheV1",
        "containerId": cid,
        "config": base64.b64encode(json.dumps(config).encode()).decode(),
        "ifName": "eth0",
        "networkName": network,
        "capabilityArgs": {"portMappings": ports},
        "result": result,
    }
    if netns is not None:
        doc["netns"] = netns
    return doc


def write(folder: Path, name: str, doc: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


# --- 1. Multus: several cache directories ------------------------------------------------


def multus_node(root: Path, cid: str = "5f8e0c2a9b7d") -> Path:
    """The layout a Multus node has (multus-cni pkg/multus/multus.go): the runtime's
    libcni caches the outer network in /var/lib/cni/results; Multus calls libcni with
    its cniDir (/var/lib/cni/multus) as cache, so the delegate network -- the one whose
    portmap names the chain -- is in /var/lib/cni/multus/results, with the master
    plugin's interface name (eth0); Multus keeps its own list of delegates beside it in
    /var/lib/cni/multus/<containerID> (not a libcni entry)."""
    delegate = {
        "cniVersion": "0.3.1",
        "name": "k8s-pod-network",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local"}},
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        ],
    }
    outer_conf = {
        "cniVersion": "0.3.1",
        "name": "multus-cni-network",
        "type": "multus",
        "capabilities": {"portMappings": True},
        "kubeconfig": "/etc/cni/net.d/multus.d/multus.kubeconfig",
        "delegates": [delegate],
    }
    args = [
        ["IgnoreUnknown", "true"],
        ["K8S_POD_NAMESPACE", "default"],
        ["K8S_POD_NAME", "web-0"],
        ["K8S_POD_INFRA_CONTAINER_ID", cid],
    ]
    outer = entry("multus-cni-network", cid, config=outer_conf)
    outer["cniArgs"] = args
    inner = entry("k8s-pod-network", cid, config=delegate)
    inner["cniArgs"] = [*args, ["K8S_POD_UID", "0d6c1a8e"]]
    write(root / "results", f"multus-cni-network-{cid}-eth0", outer)
    write(root / "multus" / "results", f"k8s-pod-network-{cid}-eth0", inner)
    write(root / "multus", cid, json.dumps([{"conf": delegate, "masterplugin": True}]))
    return root


def test_default_cache_dirs_name_multus_where_it_exists(tmp_path, monkeypatch):
    """SPEC §3: /var/lib/cni and, where it exists, /var/lib/cni/multus. Before, both
    always: JSON's cache.dirs, the no-cache warning and the metrics named a Multus
    cache on every node without one."""
    monkeypatch.setattr(paths, "MULTUS_CACHE_DIR", str(tmp_path / "multus"))
    assert paths.default_cni_cache_dirs() == ("/var/lib/cni",)
    assert Common().cache_dirs == ("/var/lib/cni",)
    (tmp_path / "multus").mkdir()
    assert paths.default_cni_cache_dirs() == ("/var/lib/cni", str(tmp_path / "multus"))
    assert Common().cache_dirs == ("/var/lib/cni", str(tmp_path / "multus"))
    assert Common(cni_cache_dir=("/a", "/b", "/a")).cache_dirs == ("/a", "/b")
    with pytest.raises(BadInput, match="empty"):
        Common(cni_cache_dir=("/a", "")).node_options()


def test_multus_delegate_is_read_from_its_own_cache_dir(tmp_path):
    root = multus_node(tmp_path)
    outer_only = read_cache([str(root)])
    assert [(a.network, a.mapping) for a in outer_only] == [("multus-cni-network", None)]
    both = read_cache([str(root), str(root / "multus")])
    mapped = [a for a in both if a.mapping is not None]
    assert [(a.network, a.container_id) for a in mapped] == [("k8s-pod-network", "5f8e0c2a9b7d")]
    # A directory without results/ is no cache; with none at all, there is no cache.
    assert read_cache([str(tmp_path / "none"), str(root / "multus")]) is not None
    assert read_cache([str(tmp_path / "none")]) is None


def _delegate_chain(cid: str):
    """The nat table with the chain of `cid`'s delegate network (multus_node)."""
    name = chain_name("k8s-pod-network", cid)
    save = (
        "*nat\n:PREROUTING ACCEPT [0:0]\n:CNI-HOSTPORT-DNAT - [0:0]\n"
        f":{name} - [0:0]\n"
        f'-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \\"k8s-pod-network\\"'
        f' id: \\"{cid}\\"" -m multiport --dports 8080 -j {name}\n'
        f"-A {name} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.88.0.5:80\n"
        "COMMIT\n"
    )
    return parse_save(save, 4)


def test_multus_pod_is_live_by_container_id_whichever_dir_is_read(tmp_path):
    """0.1 read only /var/lib/cni: every Multus pod's chain was stale and gc took it."""
    cid = "5f8e0c2a9b7d"
    root = multus_node(tmp_path, cid)
    tbl = _delegate_chain(cid)
    for dirs in ([str(root)], [str(root), str(root / "multus")]):
        attachments = read_cache(dirs)
        plan = plan_family(tbl, liveness(Sources(), attachments), {}, 1000.0, 0.0)
        assert plan.removed == () and plan.kept == 1, dirs
        # list agrees: the container is cached, so its chain is not stale.
        assert inventory.build({4: tbl}, attachments).chains[0].status == ("ok",), dirs


# --- 9. entries the plugin accepts; what cannot be read ----------------------------------


@pytest.mark.parametrize(
    "doc, snat, masq_all",
    [
        (entry(portmap={"type": "portmap", "capabilities": {"portMappings": True}, "snat": None}),
         True, False),
        (entry(portmap={"type": "portmap", "capabilities": {"portMappings": True},
                        "masqAll": None, "markMasqBit": None, "externalSetMarkChain": None,
                        "conditionsV4": None}),
         True, False),
    ],
    ids=["snat-null", "masqAll-null"],
)  # fmt: skip
def test_null_means_the_plugins_default(tmp_path, doc, snat, masq_all):
    found = read_attachment(str(write(tmp_path, "mynet-abc123-eth0", doc)))
    assert found.mapping is not None
    assert (found.mapping.snat, found.mapping.masq_all, found.mapping.mark_bit) == (
        snat,
        masq_all,
        13,
    )


@pytest.mark.parametrize(
    "result",
    [
        {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/x"}]},
        {"cniVersion": "1.0.0", "ips": None, "dns": {}},
        {"cniVersion": "0.4.0", "ips": []},
        None,
    ],
    ids=["no-ips", "ips-null", "ips-empty", "no-result"],
)
def test_a_result_without_address_maps_nothing(tmp_path, result):
    """An L2 network with empty IPAM: the plugin forwards nothing (0.1: exit 2)."""
    found = read_attachment(str(write(tmp_path, "mynet-abc123-eth0", entry(result=result))))
    assert found.mapping is None and found.container_id == "abc123"


def test_an_unreadable_entry_is_skipped_and_its_container_stays_live(tmp_path):
    good = write(tmp_path / "results", "mynet-abc123-eth0", entry())
    bad = write(tmp_path / "results", "my-net-f00d-1-eth0", '{"kind": "cniCacheV1", "config": 7')
    found = cni_cache.read_entries([str(good), str(bad)], wait=0.0)
    assert [a.container_id for a in found if a.problem is None] == ["abc123"]
    readings = {(a.network, a.container_id) for a in found if a.problem is not None}
    assert ("my-net", "f00d-1") in readings and ("my", "net-f00d") in readings
    [warning] = cni_cache.warnings(found)
    assert str(bad) in warning and "not valid JSON" in warning
    # gc: the chain of that container on that network is live by name.
    live = liveness(Sources(), found)
    assert chain_name("my-net", "f00d-1") in live.chains
    assert "f00d-1" in live.ids


@pytest.mark.parametrize("duplicate_key", [False, True], ids=["other-id", "duplicate-key"])
def test_an_entry_whose_body_names_another_container_is_no_entry_of_either(tmp_path, duplicate_key):
    """libcni names a file NETWORK-CONTAINERID-IFNAME and a runtime's DEL finds it by
    that name. A body naming another container (a copied file; a duplicate key, of
    which JSON readers keep the last) made gc take the named, live container's chains
    for stale and check --repair write chains for the body's: now the entry is one
    that cannot be read, its file name keeps its container live, nothing is modelled."""
    good = write(tmp_path / "results", "mynet-f00d-eth0", entry(cid="f00d"))
    body = entry(cid="abc123")
    if duplicate_key:
        text = json.dumps(entry(cid="abc123"))[:-1] + ', "containerId": "def456"}'
    else:
        text = json.dumps(dict(body, containerId="def456"))
    odd = write(tmp_path / "results", "mynet-abc123-eth0", text)
    found = cni_cache.read_entries([str(good), str(odd)], wait=0.0)
    assert [a.container_id for a in found if a.problem is None] == ["f00d"]
    [warning] = cni_cache.warnings(found)
    assert str(odd) in warning and "'def456'" in warning
    live = liveness(Sources(), found)
    assert chain_name("mynet", "abc123") in live.chains
    assert "def456" not in live.ids
    # The other names of the body, each against the file name: network, interface.
    other_net = write(tmp_path / "results", "other-abc123-eth0", json.dumps(body))
    other_if = write(tmp_path / "results", "mynet-abc123-net1", json.dumps(body))
    for path in (other_net, other_if):
        with pytest.raises(BadInput, match="not what its file name says"):
            read_attachment(str(path))


def test_an_entry_whose_conditions_make_no_rule_stops_nothing(tmp_path):
    """Conditions are free-form: one no rule can be made of (an address iptables
    reads otherwise) is that entry's problem, reported as one that cannot be read; its
    container stays live by name, and check models every other container."""
    odd = {
        "type": "portmap",
        "capabilities": {"portMappings": True},
        "conditionsV4": ["-s", "010.0.0.1"],
    }
    good = write(tmp_path / "results", "mynet-abc123-eth0", entry())
    bad = write(tmp_path / "results", "mynet-def456-eth0", entry(cid="def456", portmap=odd))
    found = cni_cache.read_entries([str(good), str(bad)], wait=0.0)
    assert [a.container_id for a in found if a.problem is None] == ["abc123"]
    [warning] = cni_cache.warnings(found)
    assert "conditionsV4" in warning and "010.0.0.1" in warning
    assert "def456" in liveness(Sources(), found).ids
    # The same conditions with a mask iptables takes: read, and modelled.
    odd["conditionsV4"] = ["-s", "10.0.0.0/0.0.255.255"]
    fine = write(tmp_path / "results", "mynet-def456-eth0", entry(cid="def456", portmap=odd))
    assert read_attachment(str(fine)).mapping is not None


def test_a_lone_surrogate_in_an_entry_is_read_as_the_plugin_reads_it(tmp_path):
    """JSON can spell a UTF-16 half with no other half (`"\\udcff"`): Python's json
    makes it a lone surrogate, which no text can be encoded from, so one such entry's
    conditions ended `list` and `check` of the whole node in an internal error (exit 3).
    Go's encoding/json reads it as U+FFFD, and so does the plugin: so it is read here
    (cni/config.load_json), and every other container is handled as before."""
    odd = {
        "type": "portmap",
        "capabilities": {"portMappings": True},
        "conditionsV4": ["-m", "comment", "--comment", "a\udcffb"],
    }
    good = write(tmp_path / "results", "mynet-abc123-eth0", entry())
    bad = write(tmp_path / "results", "mynet-def456-eth0", entry(cid="def456", portmap=odd))
    read = read_attachment(str(bad)).mapping
    assert read is not None and read.conditions_v4 == ("-m", "comment", "--comment", "a\ufffdb")
    assert read_attachment(str(good)).mapping is not None
    nat = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
    nat += ":POSTROUTING ACCEPT [0:0]\nCOMMIT\n"
    dump = tmp_path / "nat.save"
    dump.write_text(nat)
    for command in ("list", "check"):
        done = subprocess.run(
            [sys.executable, "-m", "portmapctl", command, "-o", "json", "--snapshot", str(dump),
             "--cni-cache-dir", str(tmp_path)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode in (0, 1) and "error" not in done.stderr, done.stderr
        if command == "check":
            missing = {p["container_id"] for p in json.loads(done.stdout)["problems"]}
            assert {"abc123", "def456"} <= missing, done.stdout


def test_name_readings():
    assert name_readings("net-abc-eth0") == [("net", "abc", "eth0")]
    assert ("a-b", "c", "d-e") in name_readings("a-b-c-d-e")
    assert name_readings("nodashes") == [] and name_readings("x-y") == []
    # 13 dash-parts each (a generated network name, an ID with dashes): it was past the
    # bound (24 dashes), so an unreadable entry so named kept its container live under
    # no reading, and said nothing.
    network, cid = "-".join("n" * 13), "-".join("c" * 13)
    assert (network, cid, "eth0") in name_readings(f"{network}-{cid}-eth0")


def test_one_networks_config_is_decoded_once_and_never_stands_in_for_another(tmp_path, monkeypatch):
    """The containers of a network share their conflist bytes: decoded once per read.
    Only the very same text is taken from the memo, and only what decoded cleanly."""
    decoded = []
    real = cni_cache._decode_config

    def counted(value: Any, source: str) -> Any:
        decoded.append(value)
        return real(value, source)

    monkeypatch.setattr(cni_cache, "_decode_config", counted)
    folder = tmp_path / "results"
    for i in range(3):
        write(folder, f"mynet-ok{i}-eth0", entry(cid=f"ok{i}"))
    nosnat = {"type": "portmap", "capabilities": {"portMappings": True}, "snat": False}
    write(folder, "mynet-nosnat-eth0", entry(cid="nosnat", portmap=nosnat))
    broken = entry(cid="broken")
    broken["config"] = broken["config"][:-8] + "!!!!!!!!"  # same network, bad base64
    write(folder, "mynet-broken-eth0", broken)
    bad_type = entry(cid="badtype")
    bad_type["config"] = base64.b64encode(b'{"name": "mynet", "plugins": 7}').decode()
    write(folder, "mynet-badtype-eth0", bad_type)
    write(folder, "mynet-badtype2-eth0", dict(bad_type, containerId="badtype2"))
    paths = cni_cache.cache_paths(str(tmp_path)) or []
    found = {a.container_id: a for a in cni_cache.read_entries(paths, tries=1)}
    assert sorted(found) == ["badtype", "badtype2", "broken", "nosnat", "ok0", "ok1", "ok2"]
    assert all(found[f"ok{i}"].mapping.snat for i in range(3))
    assert found["nosnat"].mapping is not None and not found["nosnat"].mapping.snat
    assert "not valid base64" in found["broken"].problem
    # A config that fails is decoded again for each file: each names its own file.
    assert "badtype-eth0: the cached config's plugins" in found["badtype"].problem
    assert "badtype2-eth0: the cached config's plugins" in found["badtype2"].problem
    good = entry()["config"]
    assert decoded.count(good) == 1 and decoded.count(bad_type["config"]) == 2
    assert len(decoded) == 5  # ok*, nosnat, broken, badtype, badtype2


# --- 3. capabilities ---------------------------------------------------------------------


def test_without_the_capability_the_runtime_ports_are_not_the_plugins(tmp_path):
    """libcni hands a plugin the runtime's portMappings only where its config says
    `capabilities: {portMappings: true}`; a static runtimeConfig goes as it is."""
    bare = entry(portmap={"type": "portmap", "snat": True})
    assert read_attachment(str(write(tmp_path / "a", "mynet-abc123-eth0", bare))).mapping is None
    off = entry(portmap={"type": "portmap", "capabilities": {"portMappings": False}})
    assert read_attachment(str(write(tmp_path / "b", "mynet-abc123-eth0", off))).mapping is None
    static = entry(
        portmap={
            "type": "portmap",
            "runtimeConfig": {
                "portMappings": [{"hostPort": 9090, "containerPort": 90, "protocol": "tcp"}]
            },
        }
    )
    found = read_attachment(str(write(tmp_path / "c", "mynet-abc123-eth0", static))).mapping
    assert found is not None and [p.host_port for p in found.ports] == [9090]
    on = read_attachment(str(write(tmp_path / "d", "mynet-abc123-eth0", entry()))).mapping
    assert on is not None and [p.host_port for p in on.ports] == [8080]


# --- 11. a half-written file is read again -----------------------------------------------


def test_a_half_written_file_is_read_again_until_complete(tmp_path):
    text = json.dumps(entry())
    path = write(tmp_path / "results", "mynet-abc123-eth0", text[: len(text) // 3])

    def finish() -> None:
        time.sleep(0.15)
        path.write_text(text)  # libcni writes in place: the rest comes a moment later

    writer = threading.Thread(target=finish)
    writer.start()
    try:
        found = read_cache(str(tmp_path))
    finally:
        writer.join()
    assert [(a.container_id, a.problem) for a in found] == [("abc123", None)]
    assert found[0].mapping is not None


def test_a_whole_file_with_something_wrong_is_read_once(tmp_path, monkeypatch):
    """Only a file that is not yet one JSON document may be half-written: one that
    parses is complete, and what is wrong in it is reported without reading it again
    (and without waiting between reads). The half-written one beside it is read again."""
    wrong = entry()
    wrong["kind"] = "cniCacheV2"
    whole = write(tmp_path / "results", "mynet-abc123-eth0", wrong)
    half = write(tmp_path / "results", "mynet-def456-eth0", "{")
    reads = {str(whole): 0, str(half): 0}
    real = cni_cache.files.read_text

    def counted(path: str, *args: Any, **kwargs: Any) -> str:
        reads[path] += 1
        return real(path, *args, **kwargs)

    monkeypatch.setattr(cni_cache.files, "read_text", counted)
    found = cni_cache.read_entries([str(whole), str(half)], tries=3, wait=0)
    assert reads == {str(whole): 1, str(half): 3}
    problems = {a.container_id: a.problem for a in found}
    assert "unknown kind" in (problems["abc123"] or "")
    assert problems["def456"] is not None


def test_an_entry_that_is_no_file_is_reported_and_keeps_its_container_live(tmp_path):
    """libcni writes regular files; a directory or a dangling symlink in results/ is
    not one, but its name still says which container it was for: reported (once, not
    waited for), and that container stays live for gc."""
    results = tmp_path / "results"
    (results / "mynet-dir123-eth0").mkdir(parents=True)
    (results / "mynet-link456-eth0").symlink_to(tmp_path / "nowhere")
    write(results, "mynet-abc123-eth0", entry())
    found = read_cache(str(tmp_path))
    problems = {a.container_id: a.problem for a in found}
    assert problems["abc123"] is None
    assert problems["dir123"] and problems["link456"]
    assert len(cni_cache.warnings(found)) == 2
    assert liveness(Sources(), found).ids >= {"abc123", "dir123", "link456"}


def test_a_file_removed_while_reading_is_not_live(tmp_path, monkeypatch):
    path = write(tmp_path / "results", "mynet-abc123-eth0", "{")

    def removed(path_: str, namespaces: Any = None, *, configs: Any = None) -> Attachment:
        os.unlink(path_)
        raise BadInput("cannot read CNI cache file: No such file or directory")

    monkeypatch.setattr(cni_cache, "read_attachment", removed)
    assert read_cache(str(tmp_path)) == [] and not path.exists()


# --- 2. zombies: the namespace's state ---------------------------------------------------


def _kept_out_of_sight(paths):
    """Another mount namespace (a kind node's runtime's) shows a namespace at each path."""
    return {p: True for p in paths}


def test_namespace_paths_that_cannot_be_judged_are_never_zombies(tmp_path):
    view = NamespaceView(host_mounts=False)
    assert view.state(None) == NetnsState.UNKNOWN
    assert view.state("relative/path") == NetnsState.UNKNOWN
    # Outside the host's mount namespace, a directory that holds no namespace at all
    # (a container's own empty /run/netns): not visible, nothing in it is called gone.
    (tmp_path / "netns").mkdir()
    (tmp_path / "netns" / "placeholder").write_text("")
    assert view.state(str(tmp_path / "netns" / "gone")) == NetnsState.UNSEEN
    assert view.state(str(tmp_path / "netns" / "placeholder")) == NetnsState.UNSEEN
    assert view.state(str(tmp_path / "missing" / "gone")) == NetnsState.UNSEEN
    # Read without a view (a snapshot from another node): never judged.
    found = read_attachment(str(write(tmp_path, "mynet-abc123-eth0", entry(netns="/nope/x"))))
    assert found.netns == "/nope/x" and found.netns_state == NetnsState.UNKNOWN
    # Without `netns` (older libcni), the interface's sandbox names it.
    old = entry(netns=None)
    old["result"]["interfaces"][0]["sandbox"] = "/run/netns/cni-1234"
    assert (
        read_attachment(str(write(tmp_path / "old", "mynet-abc123-eth0", old))).netns
        == "/run/netns/cni-1234"
    )


def test_from_the_hosts_mounts_an_entry_from_before_this_boot_names_no_namespace(tmp_path):
    """A node just rebooted: /run/netns is missing (or empty) on the host, the cache on
    disk still names the namespaces of containers that died with the boot. Seen from
    the host's own mount namespace, an entry written before this boot names a namespace
    that is gone (a zombie, never repaired back). One written this boot is no such
    sign: a runtime in a mount namespace of its own (a kind node's) keeps its live
    namespaces where the host sees an empty directory. A file there that is no
    namespace, and any entry outside the host's mounts, still cannot be judged."""
    booted = 1_700_000_000.0
    gone = str(tmp_path / "missing" / "gone")
    old = write(tmp_path / "results", "mynet-old-eth0", entry(cid="old", netns=gone))
    os.utime(old, (booted - 60, booted - 60))
    new = write(tmp_path / "results", "mynet-new-eth0", entry(cid="new", netns=gone))
    (tmp_path / "netns").mkdir()
    (tmp_path / "netns" / "placeholder").write_text("")
    host = NamespaceView(host_mounts=True, booted=booted, elsewhere=_kept_out_of_sight)
    for gone in (tmp_path / "netns" / "gone", tmp_path / "missing" / "gone"):
        assert host.state(str(gone), str(old)) == NetnsState.GONE
        assert host.state(str(gone), str(new)) == NetnsState.UNSEEN
        assert host.state(str(gone)) == NetnsState.UNSEEN
    assert host.state(str(tmp_path / "netns" / "placeholder"), str(old)) == NetnsState.UNSEEN
    assert host.state("/proc/self/ns/net", str(old)) == NetnsState.UNKNOWN
    elsewhere = NamespaceView(host_mounts=False, booted=booted)
    assert elsewhere.state(str(tmp_path / "missing" / "gone"), str(old)) == NetnsState.UNSEEN
    # Read together, two entries naming one namespace are judged each by its own time.
    read = cni_cache.read_entries([str(old), str(new)], host)
    found = {a.container_id: a.netns_state for a in read}
    assert found == {"old": NetnsState.GONE, "new": NetnsState.UNSEEN}


def test_a_clock_stepped_forward_after_the_boot_dates_no_live_entry_before_it(tmp_path):
    """/proc/stat's btime is the wall clock now less the time since boot: a clock
    stepped forward after the boot (a VM resumed or restored from a snapshot, NTP
    after a boot without RTC or with fake-hwclock) moves it later, past the entries
    a runtime wrote early this boot (this machine's own /dev was made 4 h before its
    btime). Such an entry, of a live container a runtime of another mount namespace
    keeps out of sight, is no zombie: before, it was (gc --netns-liveness removed its
    chain). /dev's birth (devtmpfs, made by the kernel at boot) is the boot as the
    clock then said; an entry from before both is still from the boot before."""
    born = subprocess.run(["stat", "-c", "%W", "/dev"], capture_output=True, text=True)
    if born.returncode != 0 or not born.stdout.strip().isdigit() or int(born.stdout) <= 0:
        pytest.skip("/dev has no birth time here")
    boot = float(born.stdout)
    stepped = boot + 4 * 3600  # btime once the clock jumped 4 h forward
    gone = str(tmp_path / "missing" / "cni-1")
    live = write(tmp_path / "results", "mynet-live-eth0", entry(cid="live", netns=gone))
    os.utime(live, (boot + 30, boot + 30))  # 30 s into this boot, before the step
    dead = write(tmp_path / "results", "mynet-dead-eth0", entry(cid="dead", netns=gone))
    os.utime(dead, (boot - 3600, boot - 3600))
    host = NamespaceView(host_mounts=True, booted=stepped, elsewhere=_kept_out_of_sight)
    assert host.state(gone, str(live)) == NetnsState.UNSEEN
    assert host.state(gone, str(dead)) == NetnsState.GONE


def test_a_directory_shows_the_caches_namespaces_only_by_one_it_names(tmp_path):
    """A path is gone from a directory that holds a namespace the cache names. One
    that holds only others (the host's own, beside a runtime of another mount
    namespace that keeps its live ones out of sight) shows nothing of the cache's:
    before, any namespace there made every entry's missing namespace gone."""
    directory = tmp_path / "netns"
    directory.mkdir()
    hosts, hidden = str(directory / "host-1"), str(directory / "cni-1")
    Path(hosts).touch()  # a namespace, as is_namespace below says (the kernel test's real)
    view = NamespaceView(host_mounts=True, booted=1_700_000_000.0, elsewhere=_kept_out_of_sight)
    view.is_namespace = lambda p: p == hosts or (False if p == hidden else None)  # type: ignore
    hidden_entry = write(tmp_path / "results", "mynet-hid-eth0", entry(cid="hid", netns=hidden))
    assert [a.netns_state for a in cni_cache.read_entries([str(hidden_entry)], view)] == [
        NetnsState.UNSEEN
    ]
    hosts_entry = write(tmp_path / "results", "mynet-host-eth0", entry(cid="host", netns=hosts))
    found = cni_cache.read_entries([str(hidden_entry), str(hosts_entry)], view)
    assert {a.container_id: a.netns_state for a in found} == {
        "hid": NetnsState.GONE,
        "host": NetnsState.PRESENT,
    }


def test_on_the_host_a_namespace_no_mount_namespace_shows_is_gone(tmp_path):
    """`ip netns del` (podman's removal too) of the one namespace the cache names, this
    boot: its directory holds no other, so it was not visible; seen from the host's
    mount namespace a path that holds nothing in any mount namespace is gone (before,
    unseen: listed ok and repaired back). Where another mount namespace shows one, or
    cannot be looked at, it stays unseen; outside the host's mounts none is asked."""
    gone = str(tmp_path / "netns" / "pmt-1")
    written = write(tmp_path / "results", "mynet-del-eth0", entry(cid="del", netns=gone))
    asked = []

    def nowhere(paths):
        asked.append(sorted(paths))
        return {p: False for p in paths}

    def states(view):
        return [a.netns_state for a in cni_cache.read_entries([str(written)], view)]

    booted = 1_700_000_000.0  # the entry is from this boot
    assert states(NamespaceView(host_mounts=True, booted=booted, elsewhere=nowhere)) == [
        NetnsState.GONE
    ]
    assert asked == [[gone]]
    for other in (_kept_out_of_sight, lambda paths: {p: None for p in paths}):
        view = NamespaceView(host_mounts=True, booted=booted, elsewhere=other)
        assert states(view) == [NetnsState.UNSEEN]
    asked.clear()
    away = NamespaceView(host_mounts=False, booted=booted, elsewhere=nowhere)
    assert states(away) == [NetnsState.UNSEEN] and asked == []


def test_a_proc_pid_path_from_before_this_boot_names_another_process(tmp_path):
    """Runtimes that cache /proc/PID/ns/net (cri-dockerd's) leave, after a reboot,
    entries whose PIDs this boot has long given to other processes: the namespace there
    is theirs, the container died with the boot. Before, it counted as present and
    check --repair wrote the dead container's chain back. One written this boot keeps
    the safe side (a PID reused since still counts as present)."""
    if os.stat("/proc/self/ns/pid").st_ino != 0xEFFFFFFC:
        pytest.skip("not in the host's PID namespace")
    booted = 1_700_000_000.0
    reused = f"/proc/{os.getpid()}/ns/net"  # a live process, as a reused PID is
    old = write(tmp_path / "results", "mynet-old-eth0", entry(cid="old", netns=reused))
    os.utime(old, (booted - 60, booted - 60))
    new = write(tmp_path / "results", "mynet-new-eth0", entry(cid="new", netns=reused))
    view = NamespaceView(host_mounts=True, booted=booted)
    found = cni_cache.read_entries([str(old), str(new)], view)
    assert {a.container_id: a.netns_state for a in found} == {
        "old": NetnsState.GONE,
        "new": NetnsState.PRESENT,
    }


def _basic_zombie():
    """The basic fixture's container, cached with its network namespace gone."""
    [config] = [c for c in cached_configs(_basic_attachments())]
    zombie = Attachment(
        config.network, config.container_id, "eth0", "/c", config, "/run/netns/gone",
        NetnsState.GONE,
    )  # fmt: skip
    return config, zombie


def test_zombie_entries_are_reported_and_not_expected():
    tbl = table("basic", 4)
    config, zombie = _basic_zombie()
    assert cached_configs([zombie]) == []
    found = inventory.build({4: tbl}, [zombie])
    assert all("zombie" in m.status for m in found.mappings)
    problems, compared = diagnose_mod({4: tbl}, [zombie])
    assert compared == 0
    kinds = [(p.kind, p.container_id) for p in problems]
    assert kinds == [("zombie", config.container_id)]
    assert "--netns-liveness" in problems[0].fix and "/run/netns/gone" in problems[0].detail
    # gc: live by default; not live with --netns-liveness.
    assert liveness(Sources(), [zombie]).ids == {config.container_id}
    assert liveness(Sources(netns_liveness=True), [zombie]).ids == frozenset()


def test_a_zombie_with_no_chain_left_is_not_sent_to_gc_again():
    """After `gc --netns-liveness` removed a zombie's chain its cache entry stays (the
    runtime's): check still names the zombie, but its fix is no longer that gc, which
    would change nothing (0.1 sent cron and operators round that loop forever). An
    nftables-backed zombie's rules are not in iptables: gc is its fix while it has some."""
    from portmapctl.render.check import split_fix

    [config] = [c for c in cached_configs(_basic_attachments())]
    zombie = Attachment(
        config.network, config.container_id, "eth0", "/var/lib/cni/results/x-eth0", config,
        "/run/netns/gone", NetnsState.GONE,
    )  # fmt: skip
    empty = parse_save("*nat\nCOMMIT\n", 4)
    [problem] = diagnose_mod({4: empty}, [zombie])[0]
    assert problem.kind == "zombie"
    command, prose = split_fix(problem.fix)
    assert command is None
    assert "/var/lib/cni/results/x-eth0" in prose
    # Its chain still there: gc removes it.
    [problem] = diagnose_mod({4: table("basic", 4)}, [zombie])[0]
    assert split_fix(problem.fix)[0] is not None and "--netns-liveness" in problem.fix
    # nftables-backed: its rules are not in iptables, gc reaches them.
    ids = {config.container_id}
    [problem] = diagnose_mod({4: empty}, [zombie], not_expected=ids)[0]
    assert split_fix(problem.fix)[0] is not None and "--netns-liveness" in problem.fix
    [problem] = diagnose_mod({4: empty}, [zombie], not_expected=ids, nft_owners=ids)[0]
    assert split_fix(problem.fix)[0] is not None and "--netns-liveness" in problem.fix
    # ... while it has rules there: none left, and it is as with no chain left.
    [problem] = diagnose_mod({4: empty}, [zombie], not_expected=ids, nft_owners=set())[0]
    assert split_fix(problem.fix)[0] is None and "/var/lib/cni/results/x-eth0" in problem.fix


def test_a_zombie_on_two_networks_says_which_network_each_row_is():
    """One container cached on two networks, its namespace gone: two zombie rows that
    the default table (no NETWORK column) showed alike; the detail names the network."""
    from dataclasses import replace

    [config] = [c for c in cached_configs(_basic_attachments())]
    other = replace(config, network="other")
    zombies = [
        Attachment(c.network, c.container_id, "eth0", f"/c/results/{c.network}-eth0", c,
                   "/run/netns/gone", NetnsState.GONE)
        for c in (config, other)
    ]  # fmt: skip
    problems = diagnose_mod({4: table("basic", 4)}, zombies)[0]
    details = sorted(p.detail for p in problems if p.kind == "zombie")
    assert [d.split(",")[0] for d in details] == [
        f"cached on {config.network}",
        "cached on other",
    ]


def test_a_container_shadowed_by_a_zombie_is_sent_to_gc_netns_liveness():
    """Nomad's leak: an allocation's pause container vanished (DEL failed, the cache
    entry stays, its namespace is gone) and a new allocation got the same static port.
    The winner's container is gone: the fix is gc --netns-liveness, not "re-create one
    of them with another host port" (0.1)."""
    gone, new = "51182c63-4a4b-47e4-ab12-41e4d7d56768", "44c2598d-b6e0-4d0e-9a39-2f6e2f0c1a11"
    lines = ["*nat", ":CNI-HOSTPORT-DNAT - [0:0]"]
    for cid, ip in ((gone, "172.26.64.2"), (new, "172.26.64.3")):
        chain = chain_name("nomad", cid)
        lines += [
            f":{chain} - [0:0]",
            f"-A {chain} -p tcp -m tcp --dport 8080 -j DNAT --to-destination {ip}:8080",
        ]
    for cid in (gone, new):
        lines.append(
            f'-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \\"nomad\\"'
            f' id: \\"{cid}\\"" -m multiport --dports 8080 -j {chain_name("nomad", cid)}'
        )
    tbl = parse_save("\n".join([*lines, "COMMIT", ""]), 4)
    doc = {"HostPort": 8080, "ContainerPort": 8080, "Protocol": "tcp", "HostIP": ""}
    found = []
    for cid, ip, netns in ((gone, "172.26.64.2", NetnsState.GONE), (new, "172.26.64.3", None)):
        result = {"cniVersion": "0.4.0", "ips": [{"version": "4", "address": f"{ip}/20"}]}
        config = cni_config.plugin_config(
            {"name": "nomad", "type": "portmap", "snat": False, "prevResult": result},
            cid,
            "test",
            port_mappings_override=[doc],
        )
        found.append(
            Attachment("nomad", cid, "eth0", f"/c/{cid}", config, "/run/netns/x",
                       netns or NetnsState.PRESENT)
        )  # fmt: skip
    problems = {p.kind: p for p in diagnose_mod({4: tbl}, found)[0] if p.container_id}
    assert sorted(problems) == ["shadowed", "zombie"]
    assert problems["shadowed"].container_id == new
    assert "--netns-liveness" in problems["shadowed"].fix
    assert "re-create" not in problems["shadowed"].fix


def _basic_attachments():
    from fixtures_lib import configs

    return [Attachment(c.network, c.container_id, "eth0", "/c", c) for c in configs("basic")]


# --- 4. only the plugin's names ----------------------------------------------------------


def test_only_the_plugins_exact_names_are_per_container_chains():
    assert is_plugin_chain("CNI-DN-70a29d9dc18bc4d652ea5")
    assert is_plugin_chain("CNI-SN-70a29d9dc18bc4d652ea5")
    for name in (
        "CNI-DN-admin-redirects",
        "CNI-DN-70a29d9dc18bc4d652ea",
        "CNI-DN-",
        "CNI-DN-70A29D9DC18BC4D652EA5",
        "CNI-DN-70a29d9dc18bc4d652ea5x",
    ):
        assert not is_plugin_chain(name), name  # fmt: skip
    save = table("basic", 4).chains  # noqa: F841 - the fixture parses
    text = (
        "*nat\n:PREROUTING ACCEPT [0:0]\n:CNI-DN-admin-redirects - [0:0]\n"
        "-A PREROUTING -p tcp --dport 81 -j CNI-DN-admin-redirects\n"
        "-A CNI-DN-admin-redirects -p tcp -j REDIRECT --to-ports 8081\nCOMMIT\n"
    )
    tbl = parse_save(text, 4)
    assert inventory.build({4: tbl}, []).chains == ()
    plan = plan_family(tbl, liveness(Sources(remove_all=True), None), {}, 1000.0, 0.0)
    assert plan.removed == () and not plan.transaction


# --- gc: the cache read beside the tables, as if after them ---------------------------------


def test_read_then_cache_holds_what_the_cache_holds_after_the_read(tmp_path):
    """Node.read_then_cache parses the cache while the tables are read (gc), yet must
    give what a read of the cache after them gives: an ADD that finished during the
    read is in; a DEL that finished during it keeps its container (live one run more,
    never removed early); the order is read_cache's."""
    from portmapctl.iptables.access.memory import MemoryBackend
    from portmapctl.ops.node import Node, NodeOptions

    results = tmp_path / "results"
    write(results, "mynet-bbb-eth0", entry(cid="bbb"))
    gone = write(results, "mynet-ddd-eth0", entry(cid="ddd"))
    node = Node(NodeOptions(cache_dirs=(str(tmp_path),)), MemoryBackend())
    first_reading_done = threading.Event()
    real_read_entries = cni_cache.read_entries

    def read_entries_then_tell(paths, namespaces=None):
        found = real_read_entries(paths, namespaces)
        first_reading_done.set()
        return found

    def read_while_the_plugin_works() -> str:
        # The cache is read beside this read: change it after that.
        assert first_reading_done.wait(10)
        write(results, "mynet-aaa-eth0", entry(cid="aaa"))  # an ADD finished
        write(results, "mynet-ccc-eth0", entry(cid="ccc"))
        gone.unlink()  # a DEL finished
        return "tables"

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cni_cache, "read_entries", read_entries_then_tell)
        tables, found = node.read_then_cache(read_while_the_plugin_works)
    assert tables == "tables"
    assert [a.container_id for a in found] == ["aaa", "bbb", "ccc", "ddd"]
    assert [a.container_id for a in read_cache(str(tmp_path))] == ["aaa", "bbb", "ccc"]


def test_read_then_cache_raises_the_tables_problem_first(tmp_path):
    from portmapctl.errors import HostProblem
    from portmapctl.iptables.access.memory import MemoryBackend
    from portmapctl.ops.node import Node, NodeOptions

    (tmp_path / "results").mkdir()
    (tmp_path / "results").chmod(0)  # the cache cannot be read either (unless root)
    node = Node(NodeOptions(cache_dirs=(str(tmp_path),)), MemoryBackend())

    def broken() -> None:
        raise HostProblem("iptables-save failed")

    try:
        with pytest.raises(HostProblem, match="iptables-save failed"):
            node.read_then_cache(broken)
    finally:
        (tmp_path / "results").chmod(0o755)


def test_a_cached_namespace_path_that_cannot_be_resolved_is_taken_as_written(tmp_path, monkeypatch):
    """gc looks for young namespaces no cache entry names; a cache entry's
    /proc/PID/ns/net that realpath may not follow (PermissionError: another process's
    namespace link) is compared as written instead of ending gc with an internal
    error."""
    from portmapctl.host import netns

    real = os.path.realpath

    def realpath(path, *args, **kwargs):
        if path.startswith("/proc/"):
            raise PermissionError(13, "Permission denied", path)
        return real(path, *args, **kwargs)

    class View:
        def directory_visible(self, directory):
            return directory == str(tmp_path)

        def is_namespace(self, path):
            return True

    (tmp_path / "young").write_text("")
    monkeypatch.setattr(netns.os.path, "realpath", realpath)
    monkeypatch.setattr(netns, "NETNS_RUN_DIR", str(tmp_path))
    cached = ["/proc/4242/ns/net", str(tmp_path / "named")]
    assert netns.fresh_uncached(View(), cached, max_age=60.0) == [str(tmp_path / "young")]


# --- Nomad / containerd: go-cni's port mappings ----------------------------------------


def test_go_cni_port_mappings_are_read_as_the_plugin_reads_them(tmp_path):
    """go-cni's PortMapping has no JSON tags: Nomad (and containerd) cache
    `HostPort`/`ContainerPort`/`Protocol`/`HostIP`, which the plugin's Go decoder
    matches without regard to case. 0.1 skipped every such entry as unreadable: check
    called a flushed Nomad node healthy and repair re-created nothing."""
    alloc = "6b235529-8111-4bbe-520b-d639b1d2a94e"
    ports = [
        {"HostPort": 25432, "ContainerPort": 5432, "Protocol": "tcp", "HostIP": "192.0.2.10"},
        {"HostPort": 25432, "ContainerPort": 5432, "Protocol": "udp", "HostIP": "192.0.2.10"},
        {"HostPort": 8080, "ContainerPort": 8080, "Protocol": "tcp", "HostIP": ""},
        # Of two spellings of one field the later one wins, as in Go.
        {"hostPort": 1, "HOSTPORT": 9090, "containerport": 90, "PROTOCOL": "udp"},
    ]
    doc = entry(
        "nomad", alloc, ports=ports, config=nomad_conflist(), netns=f"/var/run/netns/{alloc}"
    )
    found = read_attachment(str(write(tmp_path, f"nomad-{alloc}-eth0", doc)))
    assert found.problem is None
    assert found.mapping is not None
    assert [
        (p.protocol, p.host_ip, p.host_port, p.container_port) for p in found.mapping.ports
    ] == [
        ("tcp", "192.0.2.10", 25432, 5432),
        ("udp", "192.0.2.10", 25432, 5432),
        ("tcp", "", 8080, 8080),
        ("udp", "", 9090, 90),
    ]
    assert found.dnat_chain == chain_name("nomad", alloc)


@pytest.mark.parametrize(
    ("protocol", "backend", "refused"),
    [
        (None, None, "no protocol"),
        ("", "iptables", "no protocol"),
        (None, "nftables", "no protocol"),
        ("TCP", None, ""),  # iptables lower-cases it: the plugin's ADD works
        ("TCP", "iptables", ""),
        ("TCP", "nftables", "nftables backend"),
        ("Sctp", "nftables", "nftables backend"),
        ("udp", "nftables", ""),
    ],
)
def test_the_protocols_the_plugins_add_refuses(protocol, backend, refused):
    """Pinned to Debian's 1.1.1 and upstream v1.6.2-v1.9.1 by
    tests/interop/test_protocol_refusals.py. 0.1 read a missing protocol as tcp and
    "TCP" as tcp in nftables too: add wrote what the plugin refuses."""
    pm = {"hostPort": 8080, "containerPort": 80}
    if protocol is not None:
        pm["protocol"] = protocol
    conf = {"name": "net", "runtimeConfig": {"portMappings": [pm]},
            "prevResult": {"ips": [{"address": "10.88.0.5/16"}]}}  # fmt: skip
    if backend is not None:
        conf["backend"] = backend
    if refused:
        with pytest.raises(BadInput, match=refused):
            cni_config.plugin_config(conf, "c1", "conf.json")
    else:
        config = cni_config.plugin_config(conf, "c1", "conf.json")
        assert [p.protocol for p in config.ports] == [protocol.lower()]


def test_each_spelling_of_a_protocol_is_an_entry_rule_of_its_own():
    """The plugin groups entry rules by the protocol as the config spells it, in byte
    order (pinned by tests/interop/test_protocol_refusals.py); the command line's -p
    is lower-cased. The DNAT rules are the same either way."""
    from portmapctl.core import validate
    from portmapctl.iptables.chains import dnat_chain

    spelled = [("tcp", 8080), ("TCP", 8081), ("Tcp", 8082), ("udp", 5353), ("tcp", 8083)]
    ports = [{"hostPort": p, "containerPort": 80, "protocol": w} for w, p in spelled]
    conf = {"name": "net", "runtimeConfig": {"portMappings": ports},
            "prevResult": {"ips": [{"address": "10.88.0.5/16"}]}}  # fmt: skip
    config = cni_config.plugin_config(conf, "c1", "conf.json")
    assert [p.protocol for p in config.ports] == ["tcp", "tcp", "tcp", "udp", "tcp"]
    entries = [" ".join(rule) for rule in dnat_chain(config, 4).entry_rules]
    assert [e.split("--dports ")[1].split()[0] for e in entries] == [
        "8081", "8082", "8080,8083", "5353",
    ]  # fmt: skip
    rules = dnat_chain(config, 4).entry_rules
    assert [rule[list(rule).index("-p") + 1] for rule in rules] == ["tcp", "tcp", "tcp", "udp"]
    flags = validate.mapping_config(
        network="net",
        container_id="c1",
        addresses=[validate.interface("10.88.0.5/16")],
        ports=[validate.port_spec(f"{p}:80/{w}") for w, p in spelled],
    )
    merged = [" ".join(rule) for rule in dnat_chain(flags, 4).entry_rules]
    assert [e.split("--dports ")[1].split()[0] for e in merged] == ["8080,8081,8082,8083", "5353"]
    assert dnat_chain(flags, 4).rules == dnat_chain(config, 4).rules


@pytest.mark.parametrize(
    ("addresses", "host_ip", "refused"),
    [
        (["10.88.0.5/16"], "", True),
        (["10.88.0.5/16"], "127.0.0.1", True),
        (["10.88.0.5/16"], "::1", False),  # skipped: no IPv6 address
        (["fd00::5/64"], "127.0.0.1", False),
        (["10.88.0.5/16", "fd00::5/64"], "::1", True),
    ],
)
def test_the_nftables_backend_fails_on_a_spelling_only_where_it_writes_the_mapping(
    addresses, host_ip, refused
):
    pm = {"hostPort": 8081, "containerPort": 81, "protocol": "UDP", "hostIP": host_ip}
    conf = {"name": "net", "backend": "nftables", "runtimeConfig": {"portMappings": [pm]},
            "prevResult": {"ips": [{"address": a} for a in addresses]}}  # fmt: skip
    if refused:
        with pytest.raises(BadInput, match="'UDP': the plugin's nftables backend fails"):
            cni_config.plugin_config(conf, "c1", "conf.json")
    else:
        [port] = cni_config.plugin_config(conf, "c1", "conf.json").ports
        assert (port.protocol, port.protocol_spelling) == ("udp", "UDP")


@pytest.mark.parametrize(
    ("options", "field", "value"),
    [
        ({"SNAT": False}, "snat", False),
        ({"snat": False, "Snat": True}, "snat", True),
        ({"snat": False, "SNAT": None}, "snat", True),  # null: the nil pointer, default
        ({"MasqAll": True}, "masq_all", True),
        ({"masqAll": True, "MASQALL": None}, "masq_all", True),  # a bool keeps its value
        ({"MarkMasqBit": 5}, "mark_bit", 5),
        ({"ExternalSetMarkChain": "KUBE-MARK-MASQ"}, "external_setmark_chain", "KUBE-MARK-MASQ"),
        ({"ConditionsV4": ["-s", "192.168.0.0/16"]}, "conditions_v4", ("-s", "192.168.0.0/16")),
        ({"conditionsv6": ["!", "-i", "eth0"]}, "conditions_v6", ("!", "-i", "eth0")),
        ({"Backend": "nftables"}, "backend", "nftables"),
    ],
)
def test_the_plugins_options_are_read_in_any_case(options, field, value):
    """Go's encoding/json fills PortMapConf's fields from keys in any case, the later
    spelling winning (pinned by tests/interop/test_writes_audit.py); 0.1 read the exact
    spelling alone: `"SNAT": false` made add write mark rules the plugin leaves out."""
    conf = {"name": "net", **options, "runtimeConfig": {"portMappings": PORTS},
            "prevResult": {"ips": [{"address": "10.88.0.5/16"}]}}  # fmt: skip
    assert getattr(cni_config.plugin_config(conf, "c1", "conf.json"), field) == value


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["backend", "snat", "masqAll", "markMasqBit", "externalSetMarkChain",
                             "conditionsV4", "conditionsV6", "name", "type", "capabilities"]),
            st.sampled_from([str.lower, str.upper, str.title, lambda name: name]),
            st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=3)),
        ),
        max_size=12,
    )
)  # fmt: skip
def test_the_plugins_options_read_in_one_pass_as_go_field_reads_each(keys):
    """plugin_config reads its 7 options in one pass over the config's keys; what it
    finds is go_field's for each (masqAll with null_keeps), for any spellings in any
    order, nulls among them."""
    conf = {spell(name): value for name, spell, value in keys}
    expected = {
        name: cni_config.go_field(conf, name, null_keeps=name == "masqAll")
        for name in ("backend", "snat", "masqAll", "markMasqBit", "externalSetMarkChain",
                     "conditionsV4", "conditionsV6")
    }  # fmt: skip
    assert cni_config._plugin_options(conf) == expected


@pytest.mark.parametrize(
    ("options", "snat"),
    [({"snat": False, "SNAT": True}, False), ({"SNAT": True, "snat": False}, False),
     ({"Snat": True, "SNAT": False}, True)],
)  # fmt: skip
def test_a_cached_option_in_two_spellings_is_read_as_libcni_handed_it(tmp_path, options, snat):
    """libcni re-marshals a plugin's entry from a Go map (keys sorted) before handing it
    over, and caches the file's bytes: the spelling sorted last is the plugin's
    (pinned by tests/interop/test_writes_audit.py), whatever the file's order."""
    portmap = {"type": "portmap", "capabilities": {"portMappings": True}, **options}
    found = read_attachment(str(write(tmp_path, "mynet-abc123-eth0", entry(portmap=portmap))))
    assert found.mapping is not None and found.mapping.snat is snat


@pytest.mark.parametrize(("value", "bit"), [(5.0, 5), (1e1, 10), (5, 5)])
def test_a_cached_whole_number_as_a_float_is_read_as_libcni_handed_it(tmp_path, value, bit):
    """libcni hands the plugin its entry through a Go map: 5.0 is a float64, marshalled
    as 5, which the plugin's int takes (pinned by tests/interop/test_writes_audit.py).
    5.5 stays 5.5: the plugin's ADD fails on it, and the entry cannot be read."""
    portmap = {"type": "portmap", "capabilities": {"portMappings": True}, "markMasqBit": value}
    found = read_attachment(str(write(tmp_path, "mynet-abc123-eth0", entry(portmap=portmap))))
    assert found.mapping is not None and found.mapping.mark_bit == bit
    portmap["markMasqBit"] = 5.5
    with pytest.raises(BadInput, match="invalid mark bit 5.5"):
        read_attachment(str(write(tmp_path, "mynet-abc123-eth0", entry(portmap=portmap))))


def test_add_backend_nftables_refuses_what_the_nftables_plugin_refuses():
    """A config without the key, written to nftables (add --backend nftables)."""
    pm = {"hostPort": 8080, "containerPort": 80, "protocol": "TCP"}
    conf = {"name": "net", "runtimeConfig": {"portMappings": [pm]},
            "prevResult": {"ips": [{"address": "10.88.0.5/16"}]}}  # fmt: skip
    assert cni_config.plugin_config(conf, "c1", "conf.json").ports[0].protocol == "tcp"
    with pytest.raises(BadInput, match="nftables backend"):
        cni_config.plugin_config(conf, "c1", "conf.json", writes_to_backend="nftables")


def test_a_cached_mapping_without_protocol_is_one_entry_that_cannot_be_read(tmp_path):
    """No successful ADD leaves it (the plugin refuses it): a hand edit. Reported once,
    its container live by its file name, and no mapping expected of it."""
    doc = entry(ports=[{"hostPort": 8080, "containerPort": 80}])
    path = write(tmp_path / "results", "mynet-abc123-eth0", doc)
    [found] = [a for a in cni_cache.read_entries([str(path)]) if a.container_id == "abc123"]
    assert found.mapping is None and "no protocol" in (found.problem or "")
    [warning] = cni_cache.warnings([found])
    assert "no protocol" in warning and "kept as live" in warning


def _with_backend(backend: Optional[str], network: str = "net", cid: str = "c1") -> dict:
    portmap = {"type": "portmap", "capabilities": {"portMappings": True}}
    if backend is not None:
        portmap["backend"] = backend
    return entry(network, cid, portmap=portmap)


def test_the_backend_a_containers_cached_config_names_is_found_for_its_network(tmp_path):
    """A mapping given on the command line without a `backend` key follows its
    container's cached config (add, one-mapping check): the key of the entries libcni
    names NETWORK-CONTAINERID-IFNAME, read from them, not from the name alone."""
    runtime, multus = tmp_path / "cni", tmp_path / "multus"
    write(runtime / "results", "net-c1-eth0", _with_backend("nftables"))
    write(runtime / "results", "net-c2-eth0", _with_backend("iptables", cid="c2"))
    write(runtime / "results", "net-c3-eth0", _with_backend(None, cid="c3"))
    # Network "net", container "c4-x": its name also starts with "net-c4-".
    write(runtime / "results", "net-c4-x-eth0", _with_backend("nftables", cid="c4-x"))
    # One container, two interfaces on one network (in two caches) that disagree.
    write(runtime / "results", "net-c5-eth0", _with_backend("nftables", cid="c5"))
    write(
        multus / "results", "net-c5-net1", dict(_with_backend("iptables", cid="c5"), ifName="net1")
    )
    write(runtime / "results", "net-c6-eth0", "{not json")
    dirs = (str(runtime), str(multus), str(tmp_path / "absent"))
    found = {cid: cni_cache.configured_backend(dirs, "net", cid) for cid in
             ("c1", "c2", "c3", "c4", "c4-x", "c5", "c6", "c7")}  # fmt: skip
    assert found == {
        "c1": "nftables",
        "c2": "iptables",
        "c3": None,  # no key: the caller decides as without the cache
        "c4": None,  # the file is c4-x's
        "c4-x": "nftables",
        "c5": None,  # they disagree: the caller decides as without the cache
        "c6": None,  # cannot be read (list and check report it)
        "c7": None,  # not cached
    }
    assert cni_cache.configured_backend(dirs, "other", "c1") is None


def test_an_entry_that_may_be_the_containers_own_and_cannot_be_read_leaves_its_key_unknown(
    tmp_path,
):
    """configured_backend took an entry of the container's own that cannot be read for
    none at all, so add and a one-mapping check --repair wrote iptables for a container
    whose entry may say "nftables". configured_key says it is unread (the caller judges
    by the node), also beside a readable entry of another interface; an unreadable
    entry whose name begins with the container's but whose body names another
    container (`c3-x`) is that one's: a warning, the key still known."""
    results = tmp_path / "results"
    write(results, "net-c1-eth0", "{not json")
    write(results, "net-c2-eth0", _with_backend("nftables", cid="c2"))
    write(results, "net-c2-net1", dict(_with_backend("nftables", cid="c2"), config="%"))
    write(results, "net-c3-eth0", _with_backend("nftables", cid="c3"))
    write(results, "net-c3-x-eth0", dict(_with_backend("iptables", cid="c3-x"), config="%"))
    # Nothing readable in it: c4-x's entry of eth0, or c4's of an interface `x-eth0`.
    write(results, "net-c4-x-eth0", "{not json")
    keys = {cid: cni_cache.configured_key(str(tmp_path), "net", cid) for cid in
            ("c1", "c2", "c3", "c4", "c4-x", "c5")}  # fmt: skip
    assert {cid: (k.backend, k.unread is not None) for cid, k in keys.items()} == {
        "c1": (None, True),
        "c2": (None, True),  # its net1 entry's key is not known: nor is its backend
        "c3": ("nftables", False),
        "c4": (None, True),
        "c4-x": (None, True),
        "c5": (None, False),  # not cached
    }
    assert "net-c1-eth0: not valid JSON" in (keys["c1"].unread or "")
    assert "net-c2-net1: config is not valid base64" in (keys["c2"].unread or "")
    assert [k for k, v in keys.items() if v.skipped] == ["c3"]
    [warning] = keys["c3"].skipped
    listed = cni_cache.warnings(cni_cache.read_cache(str(tmp_path)), str(tmp_path))
    assert warning in listed and "net-c3-x-eth0" in warning, (warning, listed)  # list's line
    # (configured_backend answers as it did: None where the key is not known.)
    assert cni_cache.configured_backend(str(tmp_path), "net", "c1") is None


def test_mark_bit_and_setmark_chain_together_are_named_as_the_entry_spells_them(tmp_path):
    """A cache entry has config keys, not the CLI's options: its warning names
    markMasqBit and externalSetMarkChain (0.1: --mark-bit and --external-setmark-chain,
    options the entry does not have); the command line still names its options."""
    portmap = {
        "type": "portmap",
        "capabilities": {"portMappings": True},
        "markMasqBit": 13,
        "externalSetMarkChain": "KUBE-MARK-MASQ",
    }
    both = write(tmp_path / "results", "mynet-abc123-eth0", entry(portmap=portmap))
    [found] = cni_cache.read_entries([str(both)], wait=0.0)
    [warning] = cni_cache.warnings([found])
    assert "markMasqBit and externalSetMarkChain cannot be used together" in warning, warning
    assert "--" not in warning
    from portmapctl.core import validate

    with pytest.raises(BadInput, match="^--mark-bit and --external-setmark-chain cannot"):
        validate.mapping_config(
            network="mynet",
            container_id="abc123",
            addresses=[validate.interface("10.88.0.5/16")],
            ports=(),
            mark=13,
            external_setmark_chain="KUBE-MARK-MASQ",
        )


@pytest.mark.parametrize(
    "options, named",
    [
        ({"externalSetMarkChain": "MYMARK"}, "[externalSetMarkChain]"),
        ({"conditionsV4": ["-s", "10.0.0.1"]}, "[conditionsV4]"),
        ({"conditionsV6": ["!", "-s", "fd00::1"]}, "[conditionsV6]"),
    ],
)
def test_an_nftables_entry_with_options_the_plugin_refuses_is_no_entry_to_model(
    tmp_path, options, named
):
    """`"backend": "nftables"` with an iptables-only option: upstream v1.6.2 to v1.9.1
    refuse that config on every call (`failed to parse config: nftables backend was
    requested but configuration contains iptables-specific options [...]`), so no
    rules are its. It was read as an nft-backed container: check called its rules
    missing and check --repair wrote them. Now it cannot be read, as an iptables entry
    with nftables conditions: one warning, its container live by name."""
    refused = {"type": "portmap", "capabilities": {"portMappings": True},
               "backend": "nftables", **options}  # fmt: skip
    good = write(tmp_path / "results", "mynet-abc123-eth0", entry())
    bad = write(tmp_path / "results", "mynet-def456-eth0", entry(cid="def456", portmap=refused))
    found = cni_cache.read_entries([str(good), str(bad)], wait=0.0)
    assert [a.container_id for a in found if a.problem is None] == ["abc123"]
    [warning] = cni_cache.warnings(found)
    assert "iptables-specific options " + named in warning and str(bad) in warning
    assert "def456" in liveness(Sources(), found).ids


@pytest.mark.parametrize(
    "portmap",
    [
        {"Type": "portmap", "capabilities": {"portMappings": True}},
        {"TYPE": "portmap", "Capabilities": {"portMappings": True}},
        {"type": "portmap", "RuntimeConfig": {"PortMappings": PORTS}},
    ],
)
def test_the_plugins_type_and_capabilities_are_read_in_any_case(tmp_path, portmap):
    """libcni reads a plugin's `type` and `capabilities` into types.NetConf, and the
    plugin its `runtimeConfig.portMappings` into a struct: keys in any case. The entry
    was taken for no portmap at all: its chains unexpected, a flushed node healthy."""
    found = read_attachment(str(write(tmp_path, "mynet-abc123-eth0", entry(portmap=portmap))))
    assert found.mapping is not None
    assert [p.host_port for p in found.mapping.ports] == [p["hostPort"] for p in PORTS]


def _zoned(backend: Optional[str]) -> dict:
    portmap = {"type": "portmap", "capabilities": {"portMappings": True}}
    if backend is not None:
        portmap["backend"] = backend
    result = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/x"}],
        "ips": [{"address": "fd00:88::5/64", "interface": 0}],
    }
    ports = [
        {"hostPort": 8085, "containerPort": 85, "protocol": "udp", "hostIP": "FE80::1%lo"},
        {"hostPort": 8086, "containerPort": 86, "protocol": "tcp", "hostIP": "::ffff:1.2.3.4%1"},
    ]
    return entry(portmap=portmap, result=result, ports=ports)


@pytest.mark.parametrize("backend", [None, "iptables"])
def test_a_cached_host_ip_with_a_zone_is_the_address_the_plugin_wrote(tmp_path, backend):
    """ip6tables (getaddrinfo) takes `fe80::1%lo` where `lo` exists and writes `-d
    fe80::1/128`: the plugin's ADD succeeded and libcni cached the zone. 0.1 skipped
    the entry ("a zone (%...) cannot go in a rule"): the container was never checked.
    A zone makes Go's net.ParseIP fail, so the plugin took the address for IPv6,
    whatever its bits (not the IPv4 of ::ffff:a.b.c.d)."""
    found = read_attachment(str(write(tmp_path, "mynet-abc123-eth0", _zoned(backend))))
    assert found.mapping is not None
    assert [(p.host_ip, p.applies_to(6)) for p in found.mapping.ports] == [
        ("fe80::1", True),
        ("::ffff:102:304", True),
    ]


def test_a_host_ip_zone_is_refused_where_the_plugin_fails_on_it(tmp_path):
    """Its nftables backend writes the zone into nft's input, a syntax error: no ADD
    of such a config succeeded, and its entry says so. The plugin's stdin (add
    --cni-config) is no proof that the zone's interface exists: refused, as before."""
    path = str(write(tmp_path, "mynet-abc123-eth0", _zoned("nftables")))
    with pytest.raises(BadInput, match="a zone"):
        read_attachment(path)
    stdin = {"cniVersion": "1.0.0", "name": "mynet", "type": "portmap",
             "runtimeConfig": {"portMappings": _zoned(None)["capabilityArgs"]["portMappings"]},
             "prevResult": _zoned(None)["result"]}  # fmt: skip
    with pytest.raises(BadInput, match="a zone"):
        cni_config.plugin_config(stdin, "abc123", "<stdin>")


NAMELESS = ["abc123", "weird name", "-abc123-eth0", "mynet-\x1b[31m-eth0", "my\udcffnet-abc-eth0"]


@pytest.mark.parametrize("command", ["list", "check"])
def test_an_entry_whose_name_is_not_libcnis_is_reported_not_dropped(tmp_path, command):
    """A file in results/ whose name has no reading as NETWORK-CONTAINERID-IFNAME (a
    copy saved by hand, a name with a space, a byte that is not UTF-8) has no stand-in
    to report it, and was skipped without a word, the others' warnings said: now one
    warning each, naming the file, saying it keeps no container live; the rest of the
    cache is read as ever."""
    import pmctl

    results = tmp_path / "results"
    write(results, "mynet-abc123-eth0", entry())
    write(results, "mynet-f00d-eth0", "{")  # unreadable, named: as before
    for name in NAMELESS:
        (results / os.fsencode(name).decode("utf-8", "surrogateescape")).write_text(
            json.dumps(entry())
        )
    snapshot = str(Path(__file__).parents[1] / "fixtures" / "basic.v4.save")
    done = pmctl.run([command, "--snapshot", snapshot, "--cni-cache-dir", str(tmp_path)])
    assert done.returncode in (0, 1), done.stderr  # (check: the entry has one port of two)
    lines = done.stderr.splitlines()
    assert all(line.startswith("portmapctl: warning: ") for line in lines), lines
    named = [line for line in lines if "mynet-f00d-eth0" in line]
    assert len(named) == 1 and "kept as live by the file name" in named[0]
    nameless = [line for line in lines if "is not libcni's" in line]
    assert len(nameless) == len(NAMELESS) == len(lines) - 1, lines
    assert all("keeps no container live" in line for line in nameless)
    shown = " ".join(nameless)
    for name in (
        "abc123",
        "weird name",
        "-abc123-eth0",
        "mynet-\\x1b[31m-eth0",
        "my\\xffnet-abc-eth0",
    ):
        assert str(results / name) in shown, (name, shown)


def test_a_runtime_cache_below_is_counted_by_its_entries_not_its_names(tmp_path):
    """The runtime cache below the one read (cri-dockerd's cache/) was judged by every
    name in its results/: one holding a README, a lost+found or only files no libcni
    name reads as NETWORK-CONTAINERID-IFNAME was warned of at every run as "holds 2 CNI
    cache entries not read here ... gc keeps their chains by the entries' names", and
    gc's refusal pointed at it, though no name there keeps anything live. Now only the
    names gc keeps containers by are counted."""
    import pmctl

    from portmapctl.cni.entries import unread_caches
    from portmapctl.ops.gc.liveness import held_ids

    write(tmp_path / "results", "mynet-abc123-eth0", entry())
    below = tmp_path / "cache" / "results"
    below.mkdir(parents=True)
    (below / "README").write_text("cri-dockerd's cache\n")
    (below / "lost+found").mkdir()
    for name in NAMELESS[1:3]:
        (below / name).write_text(json.dumps(entry()))
    assert unread_caches([str(tmp_path)]) == [] and held_ids([str(tmp_path)]) == frozenset()
    snapshot = str(Path(__file__).parents[1] / "fixtures" / "basic.v4.save")
    done = pmctl.run(["list", "--snapshot", snapshot, "--cni-cache-dir", str(tmp_path)])
    assert done.returncode == 0 and "not read here" not in done.stderr, done.stderr

    # One entry libcni names beside them: it is counted alone, and keeps its container.
    write(below, "cbr0-d0d0d0d0-eth0", entry("cbr0", "d0d0d0d0"))
    (unread,) = unread_caches([str(tmp_path)])
    assert unread.names == ("cbr0-d0d0d0d0-eth0",)
    assert "holds 1 CNI cache entry not read here" in unread.warning([str(tmp_path)])
    assert "d0d0d0d0" in held_ids([str(tmp_path)])


def test_multus_delegates_below_the_runtime_cache_read_are_warned_of(tmp_path):
    """A Multus node with `--cni-cache-dir /var/lib/cni` given (as troubleshooting's
    cri-dockerd advice spells it): the runtime's cache holds the outer
    multus-cni-network entry, whose config has no portmap of its own, and the delegate
    that names the pod's chain is cached in Multus's `cniDir`, /var/lib/cni/multus,
    below it. Not read, and not said: with the nat table flushed, check called the node
    "healthy: no cached port mappings" (exit 0) and --repair re-made nothing. Now every
    command says once that Multus's cache is there and not read, as cri-dockerd's."""
    import pmctl

    from portmapctl.cni.entries import unread_caches

    pod = "d1" * 32
    delegate = entry("k8s-pod-network", pod)
    outer_config = {"cniVersion": "0.3.1", "name": "multus-cni-network", "type": "multus",
                    "capabilities": {"portMappings": True},
                    "delegates": [json.loads(base64.b64decode(delegate["config"]))]}  # fmt: skip
    write(tmp_path / "results", f"multus-cni-network-{pod}-eth0",
          entry("multus-cni-network", pod, config=outer_config))  # fmt: skip
    write(tmp_path / "multus" / "results", f"k8s-pod-network-{pod}-eth0", delegate)
    (tmp_path / "multus" / pod).write_text("[]")  # Multus's own scratch file of the pod

    (unread,) = unread_caches([str(tmp_path)])
    assert unread.cache_dir == str(tmp_path / "multus") and "Multus" in unread.runtime
    assert unread.names == (f"k8s-pod-network-{pod}-eth0",)
    flushed = tmp_path / "flushed.v4.save"  # the node's nat table after a flush
    flushed.write_text("*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n")
    empty = str(flushed)
    done = pmctl.run(["check", "--snapshot", empty, "--cni-cache-dir", str(tmp_path)])
    warned = [line for line in done.stderr.splitlines() if "not read here" in line]
    assert len(warned) == 1, done.stderr
    assert f"{tmp_path}/multus/results holds 1 CNI cache entry" in warned[0]
    assert f"--cni-cache-dir {tmp_path}/multus" in warned[0]
    assert "stale" not in warned[0]  # the pod is live by its outer entry: unchecked

    # Read as the warning says (or by default, where /var/lib/cni/multus exists): quiet.
    both = ["--cni-cache-dir", str(tmp_path), "--cni-cache-dir", str(tmp_path / "multus")]
    done = pmctl.run(["check", "--snapshot", empty, *both])
    assert "not read here" not in done.stderr, done.stderr


def test_a_zombie_multus_pod_goes_with_netns_liveness_whichever_dir_is_read(tmp_path):
    """`gc --netns-liveness` of a Multus pod whose network namespace is gone: with both
    cache directories read its chain goes; with `--cni-cache-dir /var/lib/cni` alone it
    went too (its outer entry, a zombie, is what gc reads of it), until Multus's cache
    below was looked at as cri-dockerd's is, whose entries' names hold their containers
    live: the zombie's chain stayed ("1 kept"). Multus's pods have their outer entry in
    the directory read, so its cache is warned of and holds nothing; cri-dockerd's
    still holds (test_a_runtime_cache_below_is_counted_by_its_entries_not_its_names)."""
    from dataclasses import replace

    from portmapctl.cni.entries import unread_caches
    from portmapctl.ops.gc.liveness import held_ids

    cid = "5f8e0c2a9b7d"
    root = multus_node(tmp_path, cid)
    tbl = _delegate_chain(cid)
    for dirs in ([str(root)], [str(root), str(root / "multus")]):
        # Its namespace gone, as the host's view judges it (tested apart, above).
        gone = [replace(a, netns_state=NetnsState.GONE) for a in read_cache(dirs) or ()]
        sources = Sources(netns_liveness=True, held=held_ids(dirs))  # (as gc's plan)
        plan = plan_family(tbl, liveness(sources, gone), {}, 1000.0, 0.0)
        assert [c.chain for c in plan.removed] == [chain_name("k8s-pod-network", cid)], dirs
        assert plan.kept == 0, dirs
        # Without --netns-liveness it is live, by either entry.
        plan = plan_family(tbl, liveness(Sources(held=held_ids(dirs)), gone), {}, 1000.0, 0.0)
        assert plan.removed == () and plan.kept == 1, dirs
    (unread,) = unread_caches([str(root)])
    said = unread.warning([str(root)])
    assert "gc judges their pods by the runtime's entries;" in said
    assert "keeps their chains" not in said


def test_the_options_an_unread_runtime_cache_warning_gives_paste_as_they_read(tmp_path):
    """The warning of a runtime cache below the one read ends "give --cni-cache-dir D
    --cni-cache-dir D/cache" for the operator to paste; with a space in D (a data disk
    mounted as "/mnt/node data") it gave `--cni-cache-dir /mnt/node data/cni ...`,
    which a shell splits into other options and a stray argument (the command the
    cache note spells, ops/node.py, quotes them). So does gc's refusal hint."""
    import shlex

    from portmapctl.cni.entries import unread_caches
    from portmapctl.ops.gc.liveness import _unread_hint

    spaced = tmp_path / "node data"
    write(spaced / "results", "mynet-abc123-eth0", entry())
    write(spaced / "cache" / "results", "cbr0-d0d0d0d0-eth0", entry("cbr0", "d0d0d0d0"))
    (unread,) = unread_caches([str(spaced)])
    given = unread.warning([str(spaced)]).rpartition("; give ")[2]
    assert shlex.split(given) == ["--cni-cache-dir", str(spaced),
                                  "--cni-cache-dir", str(spaced / "cache")]  # fmt: skip
    hint = _unread_hint([str(spaced)])
    assert hint.endswith(f" cache: give --cni-cache-dir {shlex.quote(str(spaced / 'cache'))})")


def test_a_zombie_row_gives_the_entry_rule_of_its_chain_as_a_stale_row_does():
    """check -o wide / JSON: a zombie's RULE was `-` (`rule` null) while its chain's
    entry rule, which takes its host ports, was still there; a stale chain's row gives
    that rule. Now the zombie's row gives it as the same chain's stale row would."""
    tbl = table("basic", 4)
    _config, zombie = _basic_zombie()
    [problem] = diagnose_mod({4: tbl}, [zombie])[0]
    [stale] = [p for p in diagnose_mod({4: tbl}, [])[0] if p.chain == problem.chain]
    assert (problem.kind, stale.kind) == ("zombie", "stale")
    assert problem.rules and problem.rules == stale.rules
    assert all("-A CNI-HOSTPORT-DNAT " in rule for rule in problem.rules), problem.rules
    # Nothing of it left: no rule to give.
    empty = parse_save("*nat\nCOMMIT\n", 4)
    [problem] = diagnose_mod({4: empty}, [zombie])[0]
    assert problem.rules == ()
