"""Rebuild the example node in this folder from the real portmap plugin.

Run as root from the repository root: ``python examples/make_example.py``.

It plays a node in a throwaway network namespace: the real plugin ADDs four
containers on network ``podman``; libcni's cache (``cni-cache/``) holds three of them.
Then one container's entry rules are deleted by hand, as a half-finished cleanup
would. What ``iptables-save`` prints is kept in ``node.v4.save`` / ``node.v6.save``:

- web      8080/tcp, 5353/udp, IPv4 + IPv6  -> ok
- web2     8080/tcp (again)                 -> shadowed (web's entry rule comes first)
- old-job  9000/tcp, not in the cache       -> stale
- lost     9100/tcp, in the cache, entry rules gone -> orphan
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import realplugin as rp  # noqa: E402

NETWORK = "podman"
CONTAINERS = [
    # id, addresses, port mappings, in the CNI cache?
    (
        "3f2a9c1e5b7d4a60web",
        ["10.88.0.5/16", "fd00:88::5/64"],
        [
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 5353, "containerPort": 53, "protocol": "udp"},
        ],
        True,
    ),
    (
        "8c41d07a2e9f4b13web2",
        ["10.88.0.6/16"],
        [{"hostPort": 8080, "containerPort": 8000, "protocol": "tcp"}],
        True,
    ),
    (
        "b7e0f2c94d1a4e85oldjob",
        ["10.88.0.7/16"],
        [{"hostPort": 9000, "containerPort": 9000, "protocol": "tcp"}],
        False,
    ),
    (
        "d19e3b7f60c24a57lost",
        ["10.88.0.8/16"],
        [{"hostPort": 9100, "containerPort": 9100, "protocol": "tcp"}],
        True,
    ),
]


def main() -> None:
    cache = HERE / "cni-cache"
    shutil.rmtree(cache, ignore_errors=True)
    host = rp.create_netns("pmt-example")
    try:
        for container_id, ips, ports, cached in CONTAINERS:
            conf = rp.plugin_conf(NETWORK, ips, ports)
            rp.run_plugin("ADD", host, container_id, conf, check=True)
            if cached:
                rp.write_cni_cache(cache, NETWORK, container_id, "eth0", conf, ports, ips)
        from portmapctl.iptables.chains import chain_name

        lost = chain_name(NETWORK, CONTAINERS[3][0])
        for line in rp.nat_rules(rp.save(host, 4)):
            if line.startswith("-A CNI-HOSTPORT-DNAT") and line.endswith(f"-j {lost}"):
                rp.iptables(host, ["-t", "nat", "-D", *_args(line)], family=4)
        for family in (4, 6):
            (HERE / f"node.v{family}.save").write_text(rp.save(host, family))
    finally:
        rp.delete_netns(host)


def _args(line: str) -> list:
    from portmapctl.iptables.ruleset import split_line

    return split_line(line)[1:]


if __name__ == "__main__":
    main()
