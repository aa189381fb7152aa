"""portmapctl against podman 4 with its CNI backend, as on a real node.

Each test gets a fresh node (network namespace) in which podman creates bridges,
containers and the portmap plugin's rules; portmapctl runs as a process with
``--netns`` and ``--cni-cache-dir`` naming that node. Traffic is real: busybox httpd in
the containers, busybox nc (and a Python UDP socket) on the node.

Tests of bugs not fixed yet are ``xfail(strict=True)`` with the item of issue 12 they
reproduce: they start passing (and so failing as XPASS) when the fix lands, and the
marker goes then.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest
from podmanlab import NODE_IP, PAGE, Container, Node

pytestmark = pytest.mark.netns

WEB = ("busybox", "httpd", "-f", "-p", "80", "-h", "/www")


def listing(node: Node, *args: str) -> dict[str, Any]:
    done = node.portmapctl("list", "-o", "json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def chains_of(listed: dict[str, Any], container: Container) -> list[dict[str, Any]]:
    return [c for c in listed["chains"] if c["container_id"] == container.id]


def the_chain(listed: dict[str, Any], container: Container) -> dict[str, Any]:
    chains = chains_of(listed, container)
    assert len(chains) == 1, chains
    return chains[0]


def podman_ports(node: Node, container: Container) -> set[tuple[str, str, str, int, int]]:
    """``podman port`` as (container ID, protocol, host IP, host port, container port)."""
    ports = set()
    for line in node.podman("port", container.id).stdout.splitlines():
        # 80/tcp -> 0.0.0.0:8080
        inner, _, outer = line.partition(" -> ")
        cport, _, proto = inner.strip().partition("/")
        host_ip, _, hport = outer.strip().rpartition(":")
        ports.add((container.id, proto, host_ip, int(hport), int(cport)))
    return ports


def listed_ports(listed: dict[str, Any]) -> set[tuple[str, str, str, int, int]]:
    return {
        (
            m["container_id"],
            m["protocol"],
            m["host_ip"] or "0.0.0.0",
            m["host_port"],
            m["container_port"],
        )
        for m in listed["mappings"]
    }


def lines_naming(rules: list[str], chain: str) -> set[str]:
    """The declaration of ``chain``, its rules and the rules that jump to it."""
    return {line for line in rules if chain in line.split() or line.split()[0] == f":{chain}"}


def flush_nat(node: Node) -> None:
    """What a firewall reload does to CNI: the nat table flushed, user chains deleted."""
    node.ns("iptables", "-w", "-t", "nat", "-F")
    node.ns("iptables", "-w", "-t", "nat", "-X")


# --- 1. healthy node ----------------------------------------------------------------------


def test_healthy_node_agrees_with_podman_port(node: Node) -> None:
    node.network("pma", "10.89.10.0/24")
    node.network("pmb", "10.89.11.0/24")
    web = node.start("web", ["pma"], ["8080:80", "5353:53/udp"], WEB)
    pinned = node.start("pinned", ["pma"], [f"{NODE_IP}:8081:80"], WEB)
    other = node.start("other", ["pmb"], ["8082:80/tcp", "8083:81"], WEB)

    listed = listing(node)
    expected = set()
    for container in (web, pinned, other):
        expected |= podman_ports(node, container)
    assert listed_ports(listed) == expected
    assert {s for m in listed["mappings"] for s in m["status"]} == {"ok"}
    by_container = {m["container_id"]: m["container_ip"] for m in listed["mappings"]}
    assert by_container == {
        web.id: web.ips["pma"],
        pinned.id: pinned.ips["pma"],
        other.id: other.ips["pmb"],
    }

    done = node.portmapctl("check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert node.http_get(NODE_IP, 8080) == PAGE
    assert node.http_get(NODE_IP, 8081) == PAGE
    assert node.http_get(NODE_IP, 8082) == PAGE


# --- 2. leaks -----------------------------------------------------------------------------


def test_leak_as_podman_leaks_is_stale_and_gc_removes_only_it(node: Node) -> None:
    node.network("pma", "10.89.20.0/24")
    node.network("pmleak", "10.89.21.0/24")
    keep = node.start("keep", ["pma"], ["8080:80", "5353:53/udp"], WEB)
    leaky = node.start("leaky", ["pmleak"], ["8700:80", "8701:80"], WEB)
    leaky_chain = the_chain(listing(node), leaky)["chain"]

    node.leak(leaky, "pmleak")

    listed = listing(node)
    assert "stale" in the_chain(listed, leaky)["status"]
    assert {s for m in listed["mappings"] if m["container_id"] == keep.id for s in m["status"]} == {
        "ok"
    }
    before = node.nat_rules()
    assert lines_naming(before, leaky_chain), before

    done = node.portmapctl("gc", "--yes", "--min-age", "0")
    assert done.returncode == 0, done.stdout + done.stderr

    after = node.nat_rules()
    assert set(after) <= set(before), "gc added rules"
    assert set(before) - set(after) == lines_naming(before, leaky_chain)
    listed = listing(node)
    assert chains_of(listed, leaky) == []
    assert {c["container_id"] for c in listed["chains"]} == {keep.id}
    assert node.portmapctl("check").returncode == 0
    assert node.http_get(NODE_IP, 8080) == PAGE


def statuses_of(listed: dict[str, Any], container: Container) -> set[str]:
    """Every status ``list`` gives the container's chains and mappings."""
    rows = chains_of(listed, container)
    rows += [m for m in listed["mappings"] if m["container_id"] == container.id]
    return {status for row in rows for status in row["status"]}


def test_zombie_cache_entry_listed_and_collected_with_netns_liveness(node: Node) -> None:
    node.network("pma", "10.89.30.0/24")
    keep = node.start("keep", ["pma"], ["8080:80"], WEB)
    gone = node.start("gone", ["pma"], ["8090:80"], WEB)
    gone_chain = the_chain(listing(node), gone)["chain"]

    node.kill_and_forget(gone)
    assert node.cache_entries(gone), "the zombie's cache entry should still be there"
    before = node.nat_rules()

    # Without --netns-liveness the cache entry still counts: nothing goes.
    done = node.portmapctl("gc", "--yes", "--min-age", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert node.nat_rules() == before

    listed = listing(node)
    assert "zombie" in statuses_of(listed, gone)
    assert statuses_of(listed, keep) == {"ok"}

    done = node.portmapctl("gc", "--yes", "--min-age", "0", "--netns-liveness")
    assert done.returncode == 0, done.stdout + done.stderr
    after = node.nat_rules()
    assert set(before) - set(after) == lines_naming(before, gone_chain)
    assert set(after) <= set(before)
    assert node.http_get(NODE_IP, 8080) == PAGE


def test_zombie_cache_entry_never_repaired(node: Node) -> None:
    node.network("pma", "10.89.40.0/24")
    keep = node.start("keep", ["pma"], ["8080:80"], WEB)
    gone = node.start("gone", ["pma"], ["8090:80"], WEB)
    node.kill_and_forget(gone)
    flush_nat(node)

    # Whether a reported zombie leaves check at 0 or 1 is the fix's call; it must be
    # one of those, name the zombie, and re-create only the live container's chain.
    done = node.portmapctl("check", "--repair")
    assert done.returncode in (0, 1), done.stdout + done.stderr
    listed = listing(node)
    assert chains_of(listed, gone) == [], "a chain was made for a container that is gone"
    assert "zombie" in done.stdout + done.stderr
    assert statuses_of(listed, keep) == {"ok"}
    assert node.http_get(NODE_IP, 8080) == PAGE


def test_a_zombie_whose_del_failed_after_portmaps_is_not_said_to_hold_its_ports(
    node: Node,
) -> None:
    """A firewall restart (`nft flush ruleset`) takes the bridge plugin's masquerade
    chains too: the next `podman stop` runs the CNI DEL, portmap's removes the chain,
    then bridge's fails on its missing chain, and libcni keeps the cache entry while
    podman removes the namespace. check called that zombie's entry what "keeps its host
    ports taken" (and "the runtime forgot the container without a CNI DEL"), beside its
    own fix saying nothing of it is left: an operator looked for a runtime bug and for
    what held the port, which a new container publishes and gets traffic on."""
    node.network("pma", "10.89.45.0/24")
    web = node.start("web", ["pma"], ["8080:80"], WEB)
    node.ns("nft", "flush", "ruleset")
    assert node.portmapctl("check", "--repair").returncode == 0
    # (The DEL's error goes to `podman stop`'s stderr or to conmon's clean-up's log,
    # whichever tears the network down first.)
    node.podman("stop", "-t", "0", "web")
    node.wait_torn_down(web)
    assert node.cache_entries(web) and not Path(web.sandbox).exists()
    assert chains_of(listing(node), web) == []

    done = node.portmapctl("check", "-o", "json")
    assert done.returncode == 1, done.stdout + done.stderr
    [zombie] = json.loads(done.stdout)["problems"]
    assert (zombie["kind"], zombie["container_id"], zombie["fix"]) == ("zombie", web.id, None)
    assert "taken" not in zombie["why"] and "or its DEL failed" in zombie["why"], zombie["why"]
    assert zombie["why"].endswith(
        f"delete its cache entry {node.cache_entries(web)[0]} once the runtime is done with"
        " the container"
    ), zombie["why"]

    node.start("new", ["pma"], ["8080:80"], WEB)
    assert node.http_get(NODE_IP, 8080) == PAGE


# --- 3. firewall flush and repair ---------------------------------------------------------


def test_firewall_flush_check_repair_with_traffic(node: Node) -> None:
    node.network("pma", "10.89.50.0/24")
    node.start("web", ["pma"], ["8080:80", "5353:53/udp"], WEB)
    node.start("web2", ["pma"], [f"{NODE_IP}:8081:80"], WEB)
    assert node.http_get(NODE_IP, 8080) == PAGE
    assert node.http_get(NODE_IP, 8081) == PAGE
    assert node.portmapctl("check").returncode == 0

    flush_nat(node)
    # conmon holds the host port: without the DNAT the client hangs on its socket
    assert node.http_get(NODE_IP, 8080, attempts=1, wait=1.0) == ""

    done = node.portmapctl("check")
    assert done.returncode == 1, done.stdout + done.stderr
    done = node.portmapctl("check", "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    done = node.portmapctl("check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert node.http_get(NODE_IP, 8080) == PAGE
    assert node.http_get(NODE_IP, 8081) == PAGE


# --- 4. one container on two networks -----------------------------------------------------


def test_two_networks_give_two_chains_of_one_container(node: Node) -> None:
    node.network("pma", "10.89.60.0/24")
    node.network("pmb", "10.89.61.0/24")
    both = node.start("both", ["pma", "pmb"], ["8600:80"], WEB)

    listed = listing(node)
    chains = chains_of(listed, both)
    assert sorted(c["network"] for c in chains) == ["pma", "pmb"]
    assert len({c["chain"] for c in chains}) == 2
    assert node.http_get(NODE_IP, 8600) == PAGE


def test_two_networks_check_is_healthy(node: Node) -> None:
    node.network("pma", "10.89.70.0/24")
    node.network("pmb", "10.89.71.0/24")
    node.start("both", ["pma", "pmb"], ["8600:80"], WEB)

    done = node.portmapctl("check")
    assert done.returncode == 0, done.stdout + done.stderr
    listed = listing(node)
    assert {s for m in listed["mappings"] for s in m["status"]} == {"ok"}


# --- 5. UDP after gc ----------------------------------------------------------------------

UDP_PORT = 5353
CLIENT_PORT = 40053


def test_gc_flushes_udp_flows_misrouted_by_a_stale_chain(node: Node) -> None:
    node.network("pmold", "10.89.80.0/24")
    node.network("pmnew", "10.89.81.0/24")
    old = node.start("old", ["pmold"], [f"{UDP_PORT}:53/udp"], WEB)
    node.leak(old, "pmold")
    old_ip = old.ips["pmold"]

    new = node.start("new", ["pmnew"], [f"{UDP_PORT}:53/udp"], WEB)
    new_ip = new.ips["pmnew"]
    old_chain = [c for c in listing(node)["chains"] if c["container_id"] == old.id]
    assert [c["status"] for c in old_chain] == [["stale"]]

    # The plugin's ADD for "new" flushed the port's flows; a client that keeps its
    # source port sends again, and the stale chain (entered first) DNATs its flow to
    # the dead container's address.
    node.send_udp(NODE_IP, UDP_PORT, CLIENT_PORT)
    flows = node.udp_flows(UDP_PORT)
    assert any(f["reply_src"] == old_ip for f in flows), flows

    done = node.portmapctl("gc", "--yes", "--min-age", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    listed = listing(node)
    assert chains_of(listed, old) == []
    assert "ok" in the_chain(listed, new)["status"]

    misrouted = [f for f in node.udp_flows(UDP_PORT) if f["reply_src"] == old_ip]
    assert misrouted == [], "gc left flows that follow the removed container"
    node.send_udp(NODE_IP, UDP_PORT, CLIENT_PORT)
    assert {f["reply_src"] for f in node.udp_flows(UDP_PORT)} == {new_ip}

    # The client's flow now reaches the new container: flush-udp --stale-only keeps it,
    # and its summary says so without denying the flow is there.
    done = node.portmapctl("flush-udp", "--stale-only", "--dry-run", "--family", "4")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == (
        f"would delete 0 UDP conntrack entries: none misrouted to host port {UDP_PORT} (v4);"
        " kept 1 that reach their container or the host"
    ), done.stdout


SLEEP = ("busybox", "sleep", "3600")


def test_stale_only_deletes_a_removed_containers_flows_to_a_host_ip_no_mapping_covers(
    node: Node,
) -> None:
    """`podman run -p 127.0.0.1:7100-7140:7100-7140/udp` (local) beside `-p
    NODE_IP:7100-7140:7100-7140/udp` (old), the node's flows to NODE_IP going to old;
    `podman rm -f old` (the plugin's DEL flushes nothing) leaves them DNATed to its
    address, which host-local gave back. flush-udp --stale-only kept them, "kept 3 that
    reach their container or the host", and list --conntrack counted none: a flow to an
    address the port is mapped on by none (local's is 127.0.0.1) was kept unless it
    went to a mapped container's address, as another tool's NodePort would. An address
    of the plugin's network that no container holds is no other tool's live flow."""
    node.network("pma", "10.89.140.0/24")
    node.start("local", ["pma"], ["127.0.0.1:7100-7140:7100-7140/udp"], SLEEP)
    old = node.start("old", ["pma"], [f"{NODE_IP}:7100-7140:7100-7140/udp"], SLEEP)
    ports = {CLIENT_PORT + i: port for i, port in enumerate((7100, 7105, 7140))}
    for sport, port in ports.items():
        node.send_udp(NODE_IP, port, sport)
    node.podman("rm", "-f", "-t", "0", old.id)
    for port in ports.values():
        assert {f["reply_src"] for f in node.udp_flows(port)} == {old.ips["pma"]}
    leases = {"PORTMAPCTL_HOST_LOCAL_DIR": str(node.host_local_dir)}
    assert not (node.host_local_dir / "pma" / old.ips["pma"]).exists()

    done = node.portmapctl("list", "--conntrack", "-o", "json", env=leases)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["conntrack_misrouted"] == len(ports), done.stdout
    done = node.portmapctl("flush-udp", "--stale-only", "--dry-run", "-o", "json", env=leases)
    assert done.returncode == 0, done.stdout + done.stderr
    going = {d["sport"]: (d["host_port"], d["reason"]) for d in json.loads(done.stdout)["deleted"]}
    assert going == {sport: (port, "unmapped") for sport, port in ports.items()}, going
    done = node.portmapctl("flush-udp", "--stale-only", env=leases)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "reach their container" not in done.stdout, done.stdout
    assert all(node.udp_flows(port) == [] for port in ports.values())


def test_flush_udps_summary_names_a_podman_port_range_as_a_range(node: Node) -> None:
    """`podman run -p 7100-7140:7100-7140/udp` hands the plugin a mapping per port:
    flush-udp's summary said "none misrouted to 42 host ports" (more than 8: which ones,
    not said) and "to host ports 7100 (v4), 7101 (v4), 7102 (v4), 7120 (v4)". Runs of
    consecutive ports read as ranges, as podman shows them and gc and check say them."""
    node.network("pma", "10.89.141.0/24")
    rng = node.start("rng", ["pma"], ["7100-7140:7100-7140/udp", "7200:7200/udp"], SLEEP)
    sent = (7100, 7101, 7102, 7120)
    for i, port in enumerate(sent):
        node.send_udp(NODE_IP, port, CLIENT_PORT + i)
    narrow = {"COLUMNS": "80"}

    for args in ([], ["--container", rng.id[:12]]):
        done = node.portmapctl("flush-udp", "--stale-only", "--dry-run", *args, env=narrow)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.splitlines()[-1] == (
            "would delete 0 UDP conntrack entries: none misrouted to host ports 7100-7140 (v4),"
            f" 7200 (v4); kept {len(sent)} that reach their container or the host"
        ), done.stdout
        done = node.portmapctl("flush-udp", "--dry-run", *args, env=narrow)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.splitlines()[-1] == (
            f"would delete {len(sent)} UDP conntrack entries to host ports 7100-7102 (v4),"
            " 7120 (v4)"
        ), done.stdout
    done = node.portmapctl("flush-udp", "--dry-run", "-o", "json")
    assert sorted(d["host_port"] for d in json.loads(done.stdout)["deleted"]) == list(sent)


# --- 6. check --repair against podman's own network reload ----------------------------------


def portmap_rules(node: Node) -> set[str]:
    """The plugin's part of the node's nat table (its chains, their rules and the jumps
    to them), as a set: repair and podman write the same rules in their own order."""
    names = ("CNI-HOSTPORT-", "CNI-DN-")
    return {
        line
        for line in node.nat_rules()
        if any(word.lstrip(":").startswith(names) for word in line.split())
    }


def test_check_repair_writes_what_podman_network_reload_writes(node: Node) -> None:
    node.network("pma", "10.89.90.0/24")
    node.network("pmb", "10.89.91.0/24")
    node.network("pmnosnat", "10.89.92.0/24")
    conflist = node.netconf_dir / "pmnosnat.conflist"
    config = json.loads(conflist.read_text())
    for plugin in config["plugins"]:
        if plugin["type"] == "portmap":
            plugin["snat"] = False
    conflist.write_text(json.dumps(config))
    node.start("web", ["pma"], ["8080:80", "5353:53/udp"], WEB)
    node.start("lo", ["pma"], ["127.0.0.1:9000:80"], WEB)
    node.start("pinned", ["pmb"], [f"{NODE_IP}:8081:80"], WEB)
    node.start("both", ["pma", "pmb"], ["8090:80"], WEB)
    node.start("nosnat", ["pmnosnat"], ["8095:80"], WEB)
    gone = node.start("gone", ["pmb"], ["8099:80"], WEB)
    gone_chain = the_chain(listing(node), gone)["chain"]
    node.kill_and_forget(gone)
    healthy = portmap_rules(node)

    node.ns("iptables", "-w", "-t", "nat", "-F")
    done = node.portmapctl("check", "--repair")
    assert done.returncode == 1, done.stdout + done.stderr  # the zombie remains
    repaired = portmap_rules(node)
    node.ns("iptables", "-w", "-t", "nat", "-F")
    node.podman("network", "reload", "--all", check=False)
    assert portmap_rules(node) == repaired
    # The zombie's rules are the only ones neither writes again (-F keeps its empty chain).
    assert repaired <= healthy
    assert healthy - repaired == lines_naming(list(healthy), gone_chain) - {
        f":{gone_chain} - [0:0]"
    }
    assert node.portmapctl("check").returncode == 1
    assert node.http_get(NODE_IP, 8080) == PAGE
    assert node.http_get(NODE_IP, 8095) == PAGE


# --- 7. check of one mapping, as a script gives it ------------------------------------------


def test_one_mapping_check_takes_the_ports_in_any_order_podman_gave_them(node: Node) -> None:
    """podman hands the plugin its mappings in an order of its own (a Go map's: it
    changes from one container to the next), and the chain's rules follow it. check of
    the mapping given as `podman run -p` took it said `rules-order`, exit 1, unless the
    -p came in that order, where the plugin's CHECK, which looks at no order in the
    chain, passes; --repair rewrote the chain. Whatever the place of the UDP mapping
    now, healthy and nothing rewritten (the TCP ones keep the order of their entry
    rule's --dports, which the plugin's CHECK compares as text). The order that matters,
    a mark rule before its port's DNAT, is still held."""
    node.network("pma", "10.89.130.0/24")
    web = node.start("web", ["pma"], ["8080:80", "127.0.0.1:8081:80", "5353:53/udp"], WEB)
    chain = the_chain(listing(node), web)["chain"]
    rules = [line for line in node.nat_rules() if line.startswith(f"-A {chain} ")]
    entry = next(r for r in node.nat_rules() if f"-j {chain}" in r and "-p tcp" in r)
    tcp = {"8080": "8080:80", "8081": "127.0.0.1:8081:80"}
    in_entry = [tcp[port] for port in entry.split("--dports ")[1].split()[0].split(",")]
    before = node.nat_rules()
    for place in range(3):
        ports = list(in_entry)
        ports.insert(place, "5353:53/udp")
        mapping = ["--network", "pma", "--container", web.id, "--ip", f"{web.ips['pma']}/24"]
        for port in ports:
            mapping += ["-p", port]
        done = node.portmapctl("check", *mapping)
        assert done.returncode == 0, f"{ports}: {done.stdout}{done.stderr}"
        assert done.stdout.startswith(f"healthy: {chain} and its entry rules are in place")
        done = node.portmapctl("check", "--repair", *mapping)
        assert done.returncode == 0, f"{ports}: {done.stdout}{done.stderr}"
        assert node.nat_rules() == before, ports

    # 8080's DNAT moved before its mark rules: those never run (hairpin and localhost
    # connections lose their masquerade).
    dnat = next(r for r in rules if "--dport 8080" in r and "-j DNAT" in r)
    node.ns("iptables", "-w", "-t", "nat", "-D", *dnat.split()[1:])
    node.ns("iptables", "-w", "-t", "nat", "-I", chain, "1", *dnat.split()[2:])
    done = node.portmapctl("check", "-o", "json", *mapping)
    assert done.returncode == 1, done.stdout + done.stderr
    assert [p["kind"] for p in json.loads(done.stdout)["problems"]] == ["rules-order"]
    assert node.portmapctl("check", "--repair", *mapping).returncode == 0
    assert set(node.nat_rules()) == set(before)
    assert node.portmapctl("check", *mapping).returncode == 0
    assert node.http_get(NODE_IP, 8080) == PAGE


def test_one_mapping_check_and_add_take_podmans_port_ranges(node: Node) -> None:
    """`podman run -p 8000-8005:8000-8005` hands the plugin one portMapping per port.
    check of the mapping given with the same -p (Docker's syntax, which SPEC §3 says
    the specs follow) said "invalid host port '8000-8005'", exit 2. Now a range maps
    port by port: healthy, add unchanged; a port of the range whose DNAT is lost is
    found and repaired; a range podman refuses too (lengths differ) is bad input."""
    node.network("pmr", "10.89.131.0/24")
    ports = ["8000-8005:8000-8005", "127.0.0.1:9000-9001:90-91/udp", "8080:80"]
    web = node.start("web", ["pmr"], ports, WEB)
    chain = the_chain(listing(node), web)["chain"]
    mapping = ["--network", "pmr", "--container", web.id, "--ip", f"{web.ips['pmr']}/24"]
    for port in ports:
        mapping += ["-p", port]
    before = node.nat_rules()

    done = node.portmapctl("check", *mapping)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(f"healthy: {chain} and its entry rules are in place")
    done = node.portmapctl("add", "-o", "json", *mapping)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["changed"] is False
    assert node.nat_rules() == before

    # The middle of the range loses its DNAT: the check of the range names it.
    dnat = next(r for r in before if f"-A {chain} " in r and "--dport 8003 " in r and "DNAT" in r)
    node.ns("iptables", "-w", "-t", "nat", "-D", *dnat.split()[1:])
    done = node.portmapctl("check", "-o", "json", *mapping)
    assert done.returncode == 1, done.stdout + done.stderr
    assert [p["kind"] for p in json.loads(done.stdout)["problems"]] == ["missing-rules"]
    assert node.portmapctl("check", "--repair", *mapping).returncode == 0
    assert node.nat_rules() == before

    for bad, says in (
        ("8000-8005:80", "the host and container port ranges have different lengths (6 and 1)"),
        ("8005-8000:8000-8005", "invalid host port range '8005-8000': its end is below its start"),
    ):
        done = node.portmapctl("check", *mapping, "-p", bad)
        assert done.returncode == 2, done.stdout + done.stderr
        assert says in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    assert node.nat_rules() == before


RANGES = ["20000-20299:20000-20299", "7100-7102:7100-7102/udp", "127.0.0.1:7200:80"]


def leaked_ranges(node: Node, subnet: int) -> Container:
    """A container publishing RANGES, leaked as podman leaks it, beside a live one
    (so gc has a source of liveness); networks 10.89.SUBNET.0/24 and the next."""
    node.network("pma", f"10.89.{subnet}.0/24")
    node.network("pmleak", f"10.89.{subnet + 1}.0/24")
    node.start("keep", ["pma"], ["9000-9010:9000-9010"], WEB)
    leaky = node.start("leaky", ["pmleak"], RANGES, WEB)
    node.leak(leaky, "pmleak")
    return leaky


def test_a_stale_containers_port_range_is_named_as_a_range(node: Node) -> None:
    """`podman run -p 20000-20299:20000-20299` hands the plugin a portMapping per port;
    leaked, check's stale row named them one by one ("it maps tcp/20000, tcp/20001,
    ..."): 300 ports, 60 lines of one row at 80 columns. Runs of consecutive ports of
    one protocol read as ranges, as podman itself shows them; the JSON of list and gc
    still has every port."""
    leaky = leaked_ranges(node, 132)

    done = node.portmapctl("check", "-o", "json")
    assert done.returncode == 1, done.stdout + done.stderr
    (stale,) = json.loads(done.stdout)["problems"]
    assert stale["kind"] == "stale" and stale["container_id"] == leaky.id, stale
    said = stale["detail"].partition("; it maps ")[2]
    assert sorted(said.split(", ")) == ["tcp/20000-20299", "tcp/7200", "udp/7100-7102"], said
    done = node.portmapctl("gc", "--dry-run", "--min-age", "0", "-o", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    (removable,) = json.loads(done.stdout)["removed"]
    assert len(removable["host_ports"]) == 300 + 3 + 1, removable


def test_gc_names_a_stale_containers_port_ranges_as_podman_does(node: Node) -> None:
    """gc's HOST PORTS named a leaked `-p 20000-20299:20000-20299 -p
    7100-7102:7100-7102/udp` port by port: 3,000 characters in `-o wide`, and cut at 80
    columns to `20000/tcp,20001/tcp,20002/tcp,2…`, its UDP ports out of sight. Runs of
    consecutive ports of one protocol are ranges there, as `podman ps` shows them."""
    leaky = leaked_ranges(node, 134)

    for output in ("table", "wide"):
        done = node.portmapctl("gc", "--dry-run", "--min-age", "0", "-o", output)
        assert done.returncode == 0, done.stdout + done.stderr
        (row,) = [line for line in done.stdout.splitlines() if leaky.id[:12] in line]
        cell = next(word for word in row.split() if "/tcp" in word)
        assert sorted(cell.split(",")) == ["20000-20299/tcp", "7100-7102/udp", "7200/tcp"], row


def test_a_range_shadowed_by_a_stale_containers_range_is_named_as_a_range(node: Node) -> None:
    """A new container on the host ports of a leaked one (`-p 20000-20299:...` both; its
    entry rule comes after the stale one's): check's shadowed row named each port and
    each destination ("tcp/20000, tcp/20001, ... taken first by the stale rule ... which
    DNATs to 10.89.137.2:20000, 10.89.137.2:20001, ..."), 7,000 characters. Ranges now."""
    leaky = leaked_ranges(node, 136)
    late = node.start("late", ["pma"], RANGES[:1], WEB)

    done = node.portmapctl("check", "-o", "json")
    assert done.returncode == 1, done.stdout + done.stderr
    problems = json.loads(done.stdout)["problems"]
    (shadowed,) = [p for p in problems if p["kind"] == "shadowed"]
    assert shadowed["container_id"] == late.id, shadowed
    leaked_ip = leaky.ips["pmleak"]
    assert shadowed["detail"].startswith("tcp/20000-20299 taken first by the stale rule "), shadowed
    assert f", which DNATs to {leaked_ip}:20000-20299" in shadowed["detail"], shadowed


def test_a_ranges_missing_entry_rules_are_named_as_ranges(node: Node) -> None:
    """Debian's plugin sends `-p 21000-21040:21000-21040` to the chain by three entry
    rules of 15, 15 and 11 ports (multiport's limit). Deleted, check's missing-entry row
    named every port ("tcp/21000,21001,...,21014, tcp/21015,..."); now each rule's
    ports as a range."""
    node.network("pma", "10.89.138.0/24")
    wide = node.start("wide", ["pma"], ["21000-21040:21000-21040"], WEB)
    entries = [r for r in node.nat_rules() if r.startswith("-A CNI-HOSTPORT-DNAT") and wide.id in r]
    assert len(entries) == 3, entries
    for rule in entries:
        node.ns("iptables", "-w", "-t", "nat", "-D", *shlex.split(rule)[1:])

    done = node.portmapctl("check", "-o", "json")
    assert done.returncode == 1, done.stdout + done.stderr
    (missing,) = json.loads(done.stdout)["problems"]
    assert missing["kind"] == "missing-entry", missing
    assert missing["detail"] == (
        "no entry rule in CNI-HOSTPORT-DNAT for tcp/21000-21014, tcp/21015-21029,"
        " tcp/21030-21040 (3 of 3 missing)"
    ), missing
