"""`check --repair` without CAP_SYS_ADMIN, as the shipped DaemonSet and systemd units run
portmapctl, after a firewall flush on a podman node where one container's CNI DEL failed
part way: judged by the lease files podman's host-local really writes.

podman's conflist names no `dataDir`: host-local keeps its leases in
/var/lib/cni/networks, in the lab's mount namespace in the node's cache folder
(`Node.host_local_dir`), which the repair is given with PORTMAPCTL_HOST_LOCAL_DIR. The
failed DEL is a real one: `podman network disconnect` runs every plugin's DEL (tuning,
firewall, portmap, then Debian's bridge, which deletes the interface and has host-local
give the address back), and then bridge reports a failure (as when its ip masquerade
teardown fails, which in 1.1.1 comes after host-local's DEL): libcni keeps the cache
entry, the container runs on in its namespace. (`podman stop` with the same failure
unmounts the namespace all the same: a zombie, judged elsewhere.) Nothing but the lease
tells that container from a live one after the flush, its namespace being closed to
the repair.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from podmanlab import NODE_IP, PAGE, SYSTEM_PLUGINS, Node
from test_podman_e2e import WEB, flush_nat

from portmapctl.iptables.chains import chain_name

pytestmark = pytest.mark.netns

FAILED_DEL = "pmt-e2e: the DEL of bridge failed after that of host-local"
# Debian's bridge, whose DEL, once done, fails for the containers listed in {ids}.
BRIDGE_WHOSE_DEL_FAILS = f"""#!/bin/sh
out=$({SYSTEM_PLUGINS / "bridge"})
rc=$?
if [ "$CNI_COMMAND" = DEL ] && [ "$rc" = 0 ] && grep -qxF "$CNI_CONTAINERID" {{ids}}; then
    echo '{{{{"cniVersion": "0.4.0", "code": 999, "msg": "{FAILED_DEL}"}}}}'
    exit 1
fi
printf '%s\\n' "$out"
exit "$rc"
"""


def bridge_whose_del_fails(node: Node) -> Path:
    """Podman's bridge on this node fails its DEL, after it is done, for the container
    IDs written to the file returned (none yet)."""
    ids = node.dir / "bridge-del-fails"
    ids.write_text("")
    script = node.dir / "bridge-whose-del-fails"
    script.write_text(BRIDGE_WHOSE_DEL_FAILS.format(ids=ids))
    script.chmod(0o755)
    node.use_plugin("bridge", script)
    return ids


def test_without_cap_sys_admin_podmans_leases_tell_a_container_whose_del_failed(
    node: Node,
) -> None:
    fails = bridge_whose_del_fails(node)
    node.network("pma", "10.89.130.0/24")
    live = node.start("live", ["pma"], ["8080:80"], WEB)
    dying = node.start("dying", ["pma"], ["8081:80"], WEB)
    fails.write_text(dying.id + "\n")
    done = node.podman("network", "disconnect", "pma", "dying", check=False)
    assert done.returncode != 0 and FAILED_DEL in done.stderr, done.stdout + done.stderr
    leases = node.host_local_dir / "pma"
    # What the DEL left: the cache entry and the namespace; the live container's lease
    # only, as host-local writes it.
    assert node.cache_entries(dying) and Path(dying.sandbox).exists()
    assert (leases / live.ips["pma"]).read_bytes() == f"{live.id}\r\neth0".encode()
    assert not (leases / dying.ips["pma"]).exists()

    # No leases to read (a folder without the network's): nothing tells the dying
    # container from a live one, and its chain is made again, a DNAT to the address
    # host-local gave back. What the leases are for, and what fails the test when they
    # are not read.
    no_leases = node.dir / "no-leases"
    no_leases.mkdir()
    flush_nat(node)
    done = node.portmapctl_without_sys_admin(
        "check", "--repair", env={"PORTMAPCTL_HOST_LOCAL_DIR": str(no_leases)}
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"--to-destination {dying.ips['pma']}:80" in "\n".join(node.nat_rules())

    flush_nat(node)
    done = node.portmapctl_without_sys_admin(
        "check", "--repair", env={"PORTMAPCTL_HOST_LOCAL_DIR": str(node.host_local_dir)}
    )
    assert done.returncode == 1, done.stdout + done.stderr
    warnings = [line for line in done.stderr.splitlines() if "could not repair" in line]
    lease = leases / dying.ips["pma"]
    assert warnings == [
        f"portmapctl: warning: could not repair IPv4 pma/{dying.id}"
        f" ({chain_name('pma', dying.id)}): host-local gave its address {dying.ips['pma']}"
        f" back ({lease} is gone): its plugins' DEL is under way (libcni removes the cache"
        " entry last) or failed part way; a chain made now would send its host ports to an"
        " address the next container gets (run check again once the runtime is done)"
    ], done.stderr
    rules = "\n".join(node.nat_rules())
    assert f"--to-destination {live.ips['pma']}:80" in rules, rules
    assert dying.ips["pma"] not in rules and chain_name("pma", dying.id) not in rules, rules
    assert node.http_get(NODE_IP, 8080) == PAGE
