"""check of one mapping (--network/--container/--ip/-p, the plugin's CHECK stand-in)
against the whole-node check of the same state, written by the real plugin."""

from __future__ import annotations

import json

import pytest
import realplugin as rp
from pmctl import run

from portmapctl.iptables.chains import chain_name

PORTS = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]


def test_one_mapping_check_reports_its_port_shadowed_by_an_earlier_container(host_ns, tmp_path):
    """The real plugin's ADD of ctrA, then ctrB, both on tcp/8080: ctrA's entry rule is
    first in CNI-HOSTPORT-DNAT, so ctrB gets no traffic. The whole-node check said so
    (shadowed) while the check of ctrB's one mapping said healthy, exit 0: a script using
    it as the plugin's CHECK was told a mapping that forwards nothing is fine. Now both
    report it, exit 1; ctrA's own mapping stays healthy."""
    cache = tmp_path / "cni"
    for ctr, address in (("ctrA", "10.88.0.5/16"), ("ctrB", "10.88.0.6/16")):
        conf = rp.plugin_conf("mynet", [address], PORTS)
        rp.run_plugin("ADD", host_ns, ctr, conf, check=True)
        rp.write_cni_cache(cache, "mynet", ctr, "eth0", conf, PORTS, [address])
    args = ["--netns", host_ns, "--cni-cache-dir", str(cache), "-o", "json"]
    whole = run(["check", *args])
    assert whole.returncode == 1, whole.stderr
    assert [(p["kind"], p["container_id"]) for p in json.loads(whole.stdout)["problems"]] == [
        ("shadowed", "ctrB")
    ]
    one = ["check", *args, "--network", "mynet", "-p", "8080:80", "--family", "4"]
    done = run([*one, "--container", "ctrB", "--ip", "10.88.0.6/16"])
    problems = json.loads(done.stdout)["problems"]
    assert [(p["kind"], p["chain"]) for p in problems] == [
        ("shadowed", chain_name("mynet", "ctrB"))
    ], problems
    assert (
        f"tcp/8080 taken first by the rule {chain_name('mynet', 'ctrA')} of mynet/ctrA,"
        " which DNATs to 10.88.0.5:80" in problems[0]["detail"]
    ), problems[0]["detail"]
    assert done.returncode == 1, done.stderr
    # --repair cannot cure it (no command of ours picks a winner): still exit 1, no change.
    before = rp.nat_rules(rp.save(host_ns, 4))
    done = run([*one, "--container", "ctrB", "--ip", "10.88.0.6/16", "--repair"])
    assert done.returncode == 1, done.stderr
    assert rp.nat_rules(rp.save(host_ns, 4)) == before
    done = run([*one, "--container", "ctrA", "--ip", "10.88.0.5/16"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["problems"] == []


@pytest.mark.parametrize(("other", "ours"), [("legacy", "nft"), ("nft", "legacy")])
def test_one_mapping_check_reports_its_port_mapped_in_the_other_flavour(
    host_ns, tmp_path, other, ours
):
    """A split-brain node: the real plugin's ADD of ctrA on tcp/8080 under one iptables
    flavour, of ctrB on it under the other; both nat tables hook at -100, so the
    kernel's hook order decides which gets the port. The whole-node check reported
    ctrB's mapping contested (fbf5cef) while the check of ctrB's one mapping said
    healthy, exit 0. Now it reports the same contested problem, exit 1, and --repair
    (which cannot pick a winner) still exits 1 and writes nothing."""
    cache = tmp_path / "cni"
    for ctr, address, mode in (("ctrA", "10.88.0.5/16", other), ("ctrB", "10.88.0.6/16", ours)):
        conf = rp.plugin_conf("mynet", [address], PORTS)
        rp.run_plugin("ADD", host_ns, ctr, conf, mode=mode, check=True)
        rp.write_cni_cache(cache, "mynet", ctr, "eth0", conf, PORTS, [address])
    args = ["--netns", host_ns, "--cni-cache-dir", str(cache), "-o", "json", "--iptables", ours]
    whole = run(["check", *args])
    node_problems = [
        (p["kind"], p["container_id"], p["detail"])
        for p in json.loads(whole.stdout)["problems"]
        if p["container_id"] == "ctrB"
    ]
    assert [k for k, _, _ in node_problems] == ["contested"], node_problems
    one = ["check", *args, "--network", "mynet", "-p", "8080:80", "--family", "4"]
    one += ["--container", "ctrB", "--ip", "10.88.0.6/16"]
    done = run(one)
    problems = [
        (p["kind"], p["container_id"], p["detail"]) for p in json.loads(done.stdout)["problems"]
    ]
    assert problems == node_problems, problems
    assert f"mapped in iptables-{other} to mynet/ctrA" in problems[0][2]
    assert done.returncode == 1, done.stderr
    before = (rp.nat_rules(rp.save(host_ns, 4, "nft")), rp.nat_rules(rp.save(host_ns, 4, "legacy")))
    done = run([*one, "--repair"])
    assert done.returncode == 1, done.stderr
    assert [p["kind"] for p in json.loads(done.stdout)["problems"]] == ["contested"]
    assert (
        rp.nat_rules(rp.save(host_ns, 4, "nft")),
        rp.nat_rules(rp.save(host_ns, 4, "legacy")),
    ) == before


@pytest.mark.parametrize("first_bound", [True, False], ids=["bound-first", "every-address-first"])
def test_a_mapping_for_one_host_ip_shadows_only_that_address(host_ns, tmp_path, first_bound):
    """ctrA maps tcp/8081 first, for 127.0.0.1 alone (bound-first), then ctrB for every
    address: a connection to another of the node's addresses reaches ctrB, so ctrB is
    not shadowed (it was, and check said to re-create one of them). The other way
    round, ctrB's mapping for 10.0.0.1 alone gets nothing: shadowed."""
    rp.routed_node(host_ns)
    cache = tmp_path / "cni"
    bound = {"hostPort": 8081, "containerPort": 80, "protocol": "tcp"}
    ports = {
        "ctrA": [{**bound, "hostIP": "127.0.0.1"}] if first_bound else [bound],
        "ctrB": [bound] if first_bound else [{**bound, "hostIP": "10.0.0.1"}],
    }
    for ctr, address in (("ctrA", "10.88.0.5/16"), ("ctrB", "10.88.0.6/16")):
        conf = rp.plugin_conf("mynet", [address], ports[ctr])
        rp.run_plugin("ADD", host_ns, ctr, conf, check=True)
        rp.write_cni_cache(cache, "mynet", ctr, "eth0", conf, ports[ctr], [address])
    # What the kernel does with a connection to 10.0.0.1:8081.
    taker = rp.dnat_destination(host_ns, "10.0.0.1", 8081)
    assert taker == ("10.88.0.6" if first_bound else "10.88.0.5")
    listed = run(["list", "--netns", host_ns, "--cni-cache-dir", str(cache), "-o", "json"])
    statuses = {m["container_id"]: m["status"] for m in json.loads(listed.stdout)["mappings"]}
    checked = run(["check", "--netns", host_ns, "--cni-cache-dir", str(cache), "-o", "json"])
    problems = [(p["kind"], p["container_id"]) for p in json.loads(checked.stdout)["problems"]]
    if first_bound:
        assert statuses == {"ctrA": ["ok"], "ctrB": ["ok"]}
        assert problems == [] and checked.returncode == 0, checked.stdout
    else:
        assert statuses == {"ctrA": ["ok"], "ctrB": ["shadowed"]}
        assert problems == [("shadowed", "ctrB")] and checked.returncode == 1
