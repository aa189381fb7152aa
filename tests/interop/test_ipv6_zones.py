"""A host IP with a zone (`fe80::1%lo`): ip6tables reads its `-d` through glibc's
getaddrinfo, which takes a zone on a link-local address whose interface exists (or a
numeric one) and drops it. So the plugin's iptables backend writes `-d fe80::1/128`,
its ADD succeeds, and libcni caches the mapping with the zone as the runtime gave it.
Its nftables backend fails on it (nft has no zones): no such cache entry is made."""

from __future__ import annotations

from pathlib import Path

import pmctl
import realplugin as rp

from portmapctl.iptables.chains import chain_name

IPS = ["10.88.0.5/16", "fd00:88::5/64"]
PORTS = [rp.port_mapping(8080, 80, "tcp"), rp.port_mapping(8085, 85, "udp", "fe80::1%lo")]


def test_a_cached_link_local_host_ip_with_a_zone_is_checked_and_repaired(
    host_ns: str, tmp_path: Path
) -> None:
    """0.1 skipped the entry ("a zone (%...) cannot go in a rule") on every run: its
    container was never checked, and a lost rule of it never repaired."""
    conf = rp.plugin_conf("mynet", IPS, PORTS)
    added = rp.run_plugin("ADD", host_ns, "zone1", conf)
    assert added.returncode == 0, added.stdout + added.stderr
    saved = rp.save(host_ns, 6)
    assert "-d fe80::1/128 -p udp -m udp --dport 8085 -j DNAT" in saved, saved
    rp.write_cni_cache(tmp_path, "mynet", "zone1", "eth0", conf, PORTS, IPS)
    node = ["--netns", host_ns, "--cni-cache-dir", str(tmp_path)]

    healthy = pmctl.run(["check", *node])
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert healthy.stderr == ""

    rp.iptables(
        host_ns,
        ["-t", "nat", "-D", chain_name("mynet", "zone1"), "-d", "fe80::1/128", "-p", "udp",
         "-m", "udp", "--dport", "8085", "-j", "DNAT", "--to-destination", "[fd00:88::5]:85"],
        family=6,
    )  # fmt: skip
    missing = pmctl.run(["check", *node])
    assert missing.returncode == 1, missing.stdout + missing.stderr
    assert "missing-rules" in missing.stdout and "fe80::1/128" in missing.stdout

    repaired = pmctl.run(["check", "--repair", *node])
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert rp.nat_rules(rp.save(host_ns, 6)) == rp.nat_rules(saved)
    checked = rp.run_check(host_ns, "zone1", conf)
    assert [proc.returncode for proc in checked] == [0, 0], [proc.stderr for proc in checked]
