"""Rebuild the example nftables node in examples/nft/ from the real upstream plugin.

Run as root from the repository root: ``python examples/make_nft_example.py``
(the upstream binaries from ``../shared/reference/upstream/bin`` or
``PORTMAPCTL_UPSTREAM_BIN``).

A throwaway network namespace plays a node whose portmap runs with
``"backend": "nftables"``: upstream v1.7.1 ADDs one container, then (after an upgrade)
v1.9.1 ADDs four more; libcni's cache (``nft/cni-cache/``) holds all but one. What
``nft -j list ruleset`` prints is kept in ``nft/ruleset.json`` (and ``nft list
ruleset`` in ``nft/ruleset.nft``, for people):

- web      8080/tcp, 5353/udp, IPv4 + IPv6            -> ok
- api      8081/tcp, 127.0.0.1:9443/tcp, snat off     -> ok
- web2     8080/tcp (again)                            -> shadowed (web's rule comes first)
- old-job  9000/tcp, not in the cache                  -> stale
- legacy   127.0.0.1:9200/tcp, added by v1.7.1         -> ok (in hostip_hostports)
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import realplugin as rp  # noqa: E402
import upstream  # noqa: E402

NETWORK = "podman"
OUT = HERE / "nft"


def _pm(host: int, container: int, proto: str = "tcp", host_ip: str | None = None) -> dict:
    entry = {"hostPort": host, "containerPort": container, "protocol": proto}
    if host_ip is not None:
        entry["hostIP"] = host_ip
    return entry


CONTAINERS = [
    # version, id, addresses, port mappings, options, in the CNI cache?
    ("v1.7.1", "5e1c0a7d2b9f4c38legacy", ["10.88.0.9/16"], [_pm(9200, 92, host_ip="127.0.0.1")],
     {}, True),
    ("v1.9.1", "3f2a9c1e5b7d4a60web", ["10.88.0.5/16", "fd00:88::5/64"],
     [_pm(8080, 80), _pm(5353, 53, "udp")], {}, True),
    ("v1.9.1", "a91c6e2f0d3b4f77api", ["10.88.0.6/16"],
     [_pm(8081, 80), _pm(9443, 443, host_ip="127.0.0.1")], {"snat": False}, True),
    ("v1.9.1", "8c41d07a2e9f4b13web2", ["10.88.0.7/16"], [_pm(8080, 8000)], {}, True),
    ("v1.9.1", "b7e0f2c94d1a4e85oldjob", ["10.88.0.8/16"], [_pm(9000, 9000)], {}, False),
]  # fmt: skip


def main() -> int:
    for probe in (rp.netns_available, upstream.available):
        ok, reason = probe()
        if not ok:
            print(f"make_nft_example.py: {reason}", file=sys.stderr)
            return 3
    shutil.rmtree(OUT, ignore_errors=True)
    (OUT / "cni-cache").mkdir(parents=True)
    ns = rp.create_netns("pmt-example")
    try:
        for version, cid, ips, ports, options, cached in CONTAINERS:
            conf = upstream.nft_conf(NETWORK, ips, ports, **options)
            upstream.run(version, "ADD", ns, cid, conf, check=True)
            if cached:
                rp.write_cni_cache(OUT / "cni-cache", NETWORK, cid, "eth0", conf, ports, ips)
        (OUT / "ruleset.json").write_text(upstream.ruleset_json(ns))
        (OUT / "ruleset.nft").write_text(upstream.ruleset_text(ns))
    finally:
        rp.delete_netns(ns)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
