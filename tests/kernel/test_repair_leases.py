"""`check --repair` and host-local's leases (cni/leases.py, ops/check/torn_down.TornDownLook):
run as the shipped DaemonSet and systemd unit run it, without CAP_SYS_ADMIN, it cannot
look into a container's namespace; a cached container whose address host-local has
given to another container is then told by the lease, and nothing made for it (a chain
made from the stale entry would send its host ports to that other container). Where
the namespace can be looked into, it decides. Debian's real portmap, both flavours."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import realplugin as rp
from pmctl import run as pm_run

from portmapctl.iptables.chains import chain_name

pytestmark = pytest.mark.netns


def _without_sys_admin(host_ns: str, *args: str) -> subprocess.CompletedProcess:
    """portmapctl in the node's namespace without CAP_SYS_ADMIN (pmctl)."""
    return pm_run(list(args), without_sys_admin_in=host_ns)


def _two_cached(host_ns: str, cache: Path, mode: rp.Mode, holder: str = "newcomer") -> None:
    """`live` (10.77.0.6) and `stale` (10.77.0.5) added by the real plugin and cached,
    their leases in cache/ipam, each address on the container namespace's lo; then
    host-local gives 10.77.0.5 to `newcomer` (stale's DEL failed past bridge, the
    entry kept, and the address handed out again); then a firewall flush."""
    for cid, ip, port in (("stale", "10.77.0.5/16", 8080), ("live", "10.77.0.6/16", 9090)):
        ports = [rp.port_mapping(port, 80)]
        conf = rp.plugin_conf("leasenet", [ip], ports)
        rp.run_plugin("ADD", host_ns, cid, conf, mode=mode, check=True)
        rp.write_cni_cache(cache, "leasenet", cid, "eth0", conf, ports, [ip],
                           leases=cache / "ipam")  # fmt: skip
    (cache / "ipam" / "leasenet" / "10.77.0.5").write_text(f"{holder}\r\neth0")
    for args in (["-F"], ["-X"]):
        rp.iptables(host_ns, ["-t", "nat", *args], mode=mode)


def test_an_address_host_local_gave_to_another_container_is_not_mapped_again(
    host_ns: str, tmp_path: Path, iptables_mode: rp.Mode
) -> None:
    _two_cached(host_ns, tmp_path, iptables_mode)
    args = ["check", "--repair", "--iptables", iptables_mode, "--family", "4"]
    done = _without_sys_admin(host_ns, *args, "--cni-cache-dir", str(tmp_path))
    assert done.returncode == 1, done.stdout + done.stderr
    lease = tmp_path / "ipam" / "leasenet" / "10.77.0.5"
    assert (
        f"could not repair IPv4 leasenet/stale ({chain_name('leasenet', 'stale', 'DN-')}):"
        f" host-local gave its address 10.77.0.5 to container newcomer ({lease})"
    ) in done.stderr, done.stderr
    saved = rp.save(host_ns, 4, iptables_mode)
    assert "--to-destination 10.77.0.6:80" in saved and "10.77.0.5" not in saved, saved
    assert chain_name("leasenet", "stale", "DN-") not in saved


def test_a_holder_read_from_the_lease_is_written_as_a_name(
    host_ns: str, tmp_path: Path, iptables_mode: rp.Mode
) -> None:
    """The lease file's first line is whatever host-local (or anyone) wrote there: in
    the refusal it reads as name_text writes a name, a real ESC apart from the text
    `\\x1b`, so neither can forge the line."""
    _two_cached(host_ns, tmp_path, iptables_mode, holder="new\x1b[31mcomer\\x1b")
    args = ["check", "--repair", "--iptables", iptables_mode, "--family", "4"]
    done = _without_sys_admin(host_ns, *args, "--cni-cache-dir", str(tmp_path))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "to container new\\x1b[31mcomer\\\\x1b (" in done.stderr, done.stderr


def test_where_the_namespace_can_be_looked_into_it_decides(
    host_ns: str, tmp_path: Path, iptables_mode: rp.Mode
) -> None:
    """The same node repaired with CAP_SYS_ADMIN: the container's namespace holds
    10.77.0.5, so it is live whatever the lease says (a data directory changed by
    hand): its chain is made, as before."""
    _two_cached(host_ns, tmp_path, iptables_mode)
    done = pm_run(["check", "--repair", "--netns", host_ns, "--iptables", iptables_mode,
                   "--family", "4", "--cni-cache-dir", str(tmp_path)])  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    saved = rp.save(host_ns, 4, iptables_mode)
    assert "--to-destination 10.77.0.5:80" in saved and "--to-destination 10.77.0.6:80" in saved
