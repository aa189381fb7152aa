"""`check --repair` of an nft-backed container being torn down (its namespace there,
its cached address gone from it) whose wanted rules are all there but which has an
extra rule of an old address: the plugin's ADD again on a new address without a DEL
leaves the old address's DNAT rule (real upstream v1.9.1). The repair keeps its rules
(liveness in doubt: ops/check/nft_repair._CacheAgain.kept), so it must say so, as for
one whose rules are missing; before, it said nothing, and the check after offered
`check --repair` for the extra rule again, a loop that never ends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pmctl
import pytest
import realplugin as rp
import upstream

pytestmark = pytest.mark.netns


@pytest.fixture
def nodes() -> Iterator[tuple[str, str]]:
    """The node's namespace, and the container's: there, holding no address."""
    rp.require(upstream.available())
    host = rp.create_netns("pmt-tdx")
    container = rp.create_netns("pmt-tdx-ctr")  # holds nothing: the address is gone
    try:
        yield host, container
    finally:
        rp.delete_netns(host)
        rp.delete_netns(container)


def test_a_torn_down_container_with_an_old_address_rule_is_named_not_repaired(
    nodes: tuple[str, str], tmp_path: Path
) -> None:
    host, container = nodes
    ports = [rp.port_mapping(8080, 80)]
    for ip in ("10.88.0.7/16", "10.88.0.8/16"):  # ADD again, no DEL between
        upstream.run("v1.9.1", "ADD", host, "dying", upstream.nft_conf("podman", [ip], ports),
                     check=True)  # fmt: skip
    conf = upstream.nft_conf("podman", ["10.88.0.8/16"], ports)
    rp.write_cni_cache(tmp_path, "podman", "dying", "eth0", conf, ports, ["10.88.0.8/16"],
                       netns=f"/run/netns/{container}")  # fmt: skip
    before = upstream.ruleset_text(host)
    assert "dnat to 10.88.0.7:80" in before and "dnat to 10.88.0.8:80" in before
    args = ["--netns", host, "--cni-cache-dir", str(tmp_path), "--family", "4"]

    done = pmctl.run(["check", "--repair", *args, "-o", "json"])
    out = json.loads(done.stdout)
    assert upstream.ruleset_text(host) == before  # liveness in doubt: nothing written
    why = "its address 10.88.0.8 is on no interface of its network namespace"
    [left] = out["unrepaired"]
    assert (left["network"], left["container_id"], left["family"]) == ("podman", "dying", 4)
    assert left["why"].startswith(why), left
    extra = [p for p in out["problems"] if p["container_id"] == "dying"]
    assert [p["kind"] for p in extra] == ["extra-rules"], extra
    # No loop: --repair would leave it again. Its `could not repair` line says why.
    assert extra[0]["fix"] is None, extra
    assert "could not repair" in extra[0]["why"], extra
    assert done.returncode == 1, done.stdout + done.stderr

    done = pmctl.run(["check", "--repair", *args])
    assert "could not repair IPv4 podman/dying" in done.stderr, done.stderr
    assert why in done.stderr, done.stderr
    assert "check --repair" not in done.stdout, done.stdout
    assert upstream.ruleset_text(host) == before
