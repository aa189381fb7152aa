"""check's `shadowed` problem says what an operator needs: which rule takes the port,
where that rule sends it (the shadowed container's own address, or another), and what
gc and `check --repair` will do about it. Nodes made by Debian's real plugin."""

from __future__ import annotations

import json
from pathlib import Path

import pmctl
import pytest
import realplugin as rp

from portmapctl.iptables.chains import chain_name

pytestmark = pytest.mark.netns

PORTS = [rp.port_mapping(8080, 80)]


@pytest.mark.parametrize("stale_address", ["10.88.0.5", "10.88.0.7"], ids=["own", "other"])
def test_a_stale_winner_is_named_with_where_it_sends_the_port(
    host_ns: str, tmp_path: Path, stale_address: str
) -> None:
    """ctr1 went without a DEL (its chain stale, first in CNI-HOSTPORT-DNAT); ctr2 got
    the same host port, and with `own` ctr1's old address too. The problem said
    "tcp/8080 taken first by CNI-DN-... (mynet/ctr1), which wins" and "this container
    gets no traffic on those ports" in both cases: with `own` the stale rule DNATs to
    ctr2's own address and port, so ctr2 gets the traffic today, through a rule gc is
    about to remove (then ctr2's own rule takes over: nothing to fear of the gc)."""
    rp.run_plugin("ADD", host_ns, "ctr1", rp.plugin_conf("mynet", [f"{stale_address}/16"], PORTS),
                  check=True)  # fmt: skip
    conf = rp.plugin_conf("mynet", ["10.88.0.5/16"], PORTS)
    rp.run_plugin("ADD", host_ns, "ctr2", conf, check=True)
    rp.write_cni_cache(tmp_path, "mynet", "ctr2", "eth0", conf, PORTS, ["10.88.0.5/16"])
    args = ["--netns", host_ns, "--cni-cache-dir", str(tmp_path), "-o", "json"]

    done = pmctl.run(["check", *args])
    assert done.returncode == 1, done.stdout + done.stderr
    problems = json.loads(done.stdout)["problems"]
    [shadowed] = [p for p in problems if p["kind"] == "shadowed"]
    stale_chain = chain_name("mynet", "ctr1", "DN-")
    assert shadowed["container_id"] == "ctr2"
    detail, why = shadowed["detail"], shadowed["why"]
    assert f"taken first by the stale rule {stale_chain} of mynet/ctr1" in detail, detail
    assert f"DNATs to {stale_address}:80" in detail, detail
    assert shadowed["fix"].startswith("portmapctl gc ")
    assert "check --repair leaves it" in why, why
    if stale_address == "10.88.0.5":
        assert "ctr2's own address and port" in detail, detail
        assert "this container gets this traffic now" in why and "no traffic" not in why, why
        assert "its own rule takes over" in why, why
    else:
        assert "ctr2's own" not in detail, detail
        assert "this container gets no traffic on those ports" in why, why

    # What it says of --repair holds: the stale chain stays, so does the problem.
    before = rp.save(host_ns)
    repaired = pmctl.run(["check", "--repair", *args])
    assert repaired.returncode == 1, repaired.stdout + repaired.stderr
    assert rp.nat_rules(rp.save(host_ns)) == rp.nat_rules(before)
