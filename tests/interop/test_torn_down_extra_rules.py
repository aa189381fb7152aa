"""`check --repair` of an nft-backed container being torn down (its namespace there,
its cached address gone from it) whose wanted rules are all there but which has an
extra rule of an old address: the plugin's ADD again on a new address without a DEL
leaves the old address's DNAT rule (real upstream v1.9.1). The repair keeps its rules
(liveness in doubt: ops/check/nft_repair._CacheAgain.kept), so it must say so, as for
one whose rules are missing; before, it said nothing, and the check after offered
`check --repair` for the extra rule again, a loop that never ends. On iptables the
repair rewrote such a container's chain (the old address's rule deleted, exit 0), and
filled one a flush had emptied with a DNAT to the address being given back: it keeps
it too (real Debian plugin, iptables-nft and legacy)."""

from __future__ import annotations

import json
import shlex
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


def _upstream_added(host: str, container: str, tmp_path: Path) -> None:
    """dying ADDed by upstream v1.9.1 at .7, then again at .8 without a DEL; its cache
    entry at .8, naming `container` (which holds no address) as its namespace."""
    ports = [rp.port_mapping(8080, 80)]
    for ip in ("10.88.0.7/16", "10.88.0.8/16"):  # ADD again, no DEL between
        upstream.run("v1.9.1", "ADD", host, "dying", upstream.nft_conf("podman", [ip], ports),
                     check=True)  # fmt: skip
    conf = upstream.nft_conf("podman", ["10.88.0.8/16"], ports)
    rp.write_cni_cache(tmp_path, "podman", "dying", "eth0", conf, ports, ["10.88.0.8/16"],
                       netns=f"/run/netns/{container}")  # fmt: skip


def test_a_torn_down_container_with_an_old_address_rule_is_named_not_repaired(
    nodes: tuple[str, str], tmp_path: Path
) -> None:
    host, container = nodes
    _upstream_added(host, container, tmp_path)
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


# The iptables backend: the same container, added by Debian's plugin (ADD again without
# a DEL appends the new address's DNAT to the chain behind the old one's). Its repair
# rewrote the chain there (the old address's rule deleted, exit 0) while the nftables
# repair keeps a torn-down container's rules as they are: the chain is kept too, and
# named, on both flavours.


def _debian_added(host: str, mode: rp.Mode, addresses: tuple[str, ...]) -> dict:
    ports = [rp.port_mapping(8080, 80)]
    conf: dict = {}
    for ip in addresses:  # ADD again, no DEL between
        conf = rp.plugin_conf("podman", [ip], ports)
        rp.run_plugin("ADD", host, "dying", conf, mode=mode, check=True)
    return conf


def _debian_dying(host: str, container: str, tmp_path: Path, mode: rp.Mode) -> list[str]:
    """dying ADDed by Debian's plugin at .7, then again at .8 without a DEL; its cache
    entry at .8, naming `container` (which holds no address): portmapctl's arguments."""
    conf = _debian_added(host, mode, ("10.88.0.7/16", "10.88.0.8/16"))
    rp.write_cni_cache(tmp_path, "podman", "dying", "eth0", conf, [rp.port_mapping(8080, 80)],
                       ["10.88.0.8/16"], netns=f"/run/netns/{container}")  # fmt: skip
    return ["--netns", host, "--cni-cache-dir", str(tmp_path), "--family", "4",
            "--iptables", mode]  # fmt: skip


def _named_not_repaired(done, out: dict, why: str) -> None:
    [left] = out["unrepaired"]
    assert (left["network"], left["container_id"], left["family"]) == ("podman", "dying", 4)
    assert left["chain"].startswith("CNI-DN-"), left
    assert left["why"].startswith(why), left
    assert done.returncode == 1, done.stdout + done.stderr


def test_iptables_a_torn_down_containers_chain_with_an_old_address_rule_is_kept(
    nodes: tuple[str, str], tmp_path: Path, iptables_mode: rp.Mode
) -> None:
    host, container = nodes
    args = _debian_dying(host, container, tmp_path, iptables_mode)
    before = rp.save(host, 4, iptables_mode)
    assert "10.88.0.7:80" in before and "10.88.0.8:80" in before

    done = pmctl.run(["check", "--repair", *args, "-o", "json"])
    out = json.loads(done.stdout)
    # Liveness in doubt: nothing written, the old address's rule kept as nftables keeps it.
    assert rp.nat_rules(rp.save(host, 4, iptables_mode)) == rp.nat_rules(before)
    _named_not_repaired(done, out, "its address 10.88.0.8 is on no interface of its network")
    extra = [p for p in out["problems"] if p["container_id"] == "dying"]
    assert [p["kind"] for p in extra] == ["extra-rules"], extra
    assert extra[0]["fix"] is None, extra


def test_iptables_a_torn_down_containers_flushed_chain_is_not_filled(
    nodes: tuple[str, str], tmp_path: Path, iptables_mode: rp.Mode
) -> None:
    """A flush of the nat table's rules (`iptables -t nat -F`: the chains stay, empty)
    while the container is torn down: its chain was filled again with a DNAT to the
    address being given back, where after `-F -X` (the chain made) nothing is."""
    host, container = nodes
    conf = _debian_added(host, iptables_mode, ("10.88.0.8/16",))
    rp.write_cni_cache(tmp_path, "podman", "dying", "eth0", conf, [rp.port_mapping(8080, 80)],
                       ["10.88.0.8/16"], netns=f"/run/netns/{container}")  # fmt: skip
    # A live container beside it (its namespace holds its address): repaired.
    ports = [rp.port_mapping(8090, 80)]
    live = rp.plugin_conf("podman", ["10.88.0.9/16"], ports)
    rp.run_plugin("ADD", host, "live1", live, mode=iptables_mode, check=True)
    rp.write_cni_cache(tmp_path, "podman", "live1", "eth0", live, ports, ["10.88.0.9/16"])
    rp.iptables(host, ["-t", "nat", "-F"], mode=iptables_mode)
    args = ["--netns", host, "--cni-cache-dir", str(tmp_path), "--family", "4",
            "--iptables", iptables_mode]  # fmt: skip

    done = pmctl.run(["check", "--repair", *args, "-o", "json"])
    out = json.loads(done.stdout)
    after = rp.save(host, 4, iptables_mode)
    assert "10.88.0.8" not in after, after  # no DNAT to the address being given back
    assert "-j DNAT --to-destination 10.88.0.9:80" in after, after  # live1's is made
    assert "-m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT" in after, after
    _named_not_repaired(done, out, "its address 10.88.0.8 is on no interface of its network")


# The plain check (no --repair) offered `check --repair` for such a container's
# problem, on both backends, though the repair leaves it as it is: it now looks into
# the namespaces of the containers whose problems --repair would fix, and says so.

_WHY = "its address 10.88.0.8 is on no interface of its network namespace"


def _check_says_repair_leaves_it(args: list[str]) -> None:
    done = pmctl.run(["check", *args, "-o", "json"])
    assert done.returncode == 1, done.stdout + done.stderr
    [problem] = [p for p in json.loads(done.stdout)["problems"] if p["container_id"] == "dying"]
    assert problem["kind"] == "extra-rules", problem
    assert problem["fix"] is None, problem
    assert "--repair would leave it as it is: " + _WHY in problem["why"], problem
    done = pmctl.run(["check", *args])
    assert done.returncode == 1, done.stdout + done.stderr
    assert "--repair" not in done.stdout.replace("--repair would leave", ""), done.stdout
    assert _WHY in done.stdout, done.stdout


def test_check_offers_no_repair_for_a_torn_down_nft_container(
    nodes: tuple[str, str], tmp_path: Path
) -> None:
    host, container = nodes
    _upstream_added(host, container, tmp_path)
    _check_says_repair_leaves_it(
        ["--netns", host, "--cni-cache-dir", str(tmp_path), "--family", "4"]
    )


def test_check_offers_no_repair_for_a_torn_down_iptables_container(
    nodes: tuple[str, str], tmp_path: Path, iptables_mode: rp.Mode
) -> None:
    host, container = nodes
    _check_says_repair_leaves_it(_debian_dying(host, container, tmp_path, iptables_mode))


# A pod on one network twice (net1, net2: one chain both ADDs appended to), net1 being
# torn down (its address and interface gone from the pod's namespace), net2 live. After
# `-F -X` the repair makes the chain from net2's entry alone and names net1; after `-F`
# (the chain there, empty) it filled the chain from both entries: a DNAT to net1's
# address being given back, which a333eca stopped for a container alone.


def _pod_twice(host: str, pod: str, tmp_path: Path, mode: rp.Mode, ips: dict) -> None:
    for ifname, port in (("net1", 8080), ("net2", 9090)):
        ports = [rp.port_mapping(port, 80)]
        conf = rp.plugin_conf("podman", ips[ifname], ports)
        conf["prevResult"]["interfaces"][0]["name"] = ifname  # the delegate's interface
        rp.run_plugin("ADD", host, "twice", conf, mode=mode, ifname=ifname, check=True)
        rp.write_cni_cache(tmp_path, "podman", "twice", ifname, conf, ports, ips[ifname],
                           netns=f"/run/netns/{pod}")  # fmt: skip
    rp.hold_addresses(f"/run/netns/{pod}", ips["net2"])  # net1's address and interface gone


@pytest.mark.parametrize("flush", [["-F"], ["-F", "-X"]], ids=["F", "FX"])
def test_iptables_a_shared_chain_flushed_gets_no_rule_of_the_torn_down_interface(
    nodes: tuple[str, str], tmp_path: Path, iptables_mode: rp.Mode, flush: list
) -> None:
    host, pod = nodes
    _pod_twice(host, pod, tmp_path, iptables_mode,
               {"net1": ["10.88.0.7/16"], "net2": ["10.88.0.9/16"]})  # fmt: skip
    for args in flush:
        rp.iptables(host, ["-t", "nat", args], mode=iptables_mode)
    done = pmctl.run(["check", "--repair", "--netns", host, "--cni-cache-dir", str(tmp_path),
                      "--family", "4", "--iptables", iptables_mode, "-o", "json"])  # fmt: skip
    after = rp.save(host, 4, iptables_mode)
    assert "10.88.0.7" not in after, after  # no DNAT to the address being given back
    assert "-j DNAT --to-destination 10.88.0.9:80" in after, after  # net2's is made
    [left] = json.loads(done.stdout)["unrepaired"]
    assert left["why"].startswith("its address 10.88.0.7 is on no interface"), left
    assert done.returncode == 1, done.stdout + done.stderr


def test_iptables_a_shared_chain_there_in_one_family_made_in_the_other(
    nodes: tuple[str, str], tmp_path: Path, iptables_mode: rp.Mode
) -> None:
    """Dual-stack, net1 torn down: the IPv4 chain there, holding both interfaces' rules
    but net2's lost (rewritten from all entries: net1's kept, as they are there), the
    IPv6 chain gone (`ip6tables -F -X`): made, it must not get net1's DNAT to its IPv6
    address being given back, as a chain made of a pod alone does not."""
    host, pod = nodes
    ips = {"net1": ["10.88.0.7/16", "fd00:88::7/64"], "net2": ["10.88.0.9/16", "fd00:88::9/64"]}
    _pod_twice(host, pod, tmp_path, iptables_mode, ips)
    rp.iptables(host, ["-t", "nat", "-D", chain_of(host, iptables_mode), "-p", "tcp", "-m",
                       "tcp", "--dport", "9090", "-j", "DNAT", "--to-destination",
                       "10.88.0.9:80"], mode=iptables_mode)  # fmt: skip
    for args in (["-F"], ["-X"]):
        rp.iptables(host, ["-t", "nat", *args], mode=iptables_mode, family=6)
    done = pmctl.run(["check", "--repair", "--netns", host, "--cni-cache-dir", str(tmp_path),
                      "--iptables", iptables_mode, "-o", "json"])  # fmt: skip
    after4, after6 = rp.save(host, 4, iptables_mode), rp.save(host, 6, iptables_mode)
    assert "--to-destination 10.88.0.9:80" in after4, after4  # net2's lost rule is back
    assert "--to-destination 10.88.0.7:80" in after4, after4  # net1's kept: it was there
    assert "[fd00:88::9]:80" in after6, after6  # the IPv6 chain made for net2
    assert "fd00:88::7" not in after6, after6  # ... without net1's
    left = json.loads(done.stdout)["unrepaired"]
    assert [(u["family"], u["why"][:31]) for u in left] == [
        (6, "its address fd00:88::7 is on no")
    ], left  # named where it is left out; in IPv4 its rules are there, kept
    assert done.returncode == 1, done.stdout + done.stderr


def chain_of(host: str, mode: rp.Mode) -> str:
    [name] = {line.split()[1] for line in rp.save(host, 4, mode).splitlines()
              if line.startswith("-A CNI-DN-")}  # fmt: skip
    return name


def test_check_offers_repair_for_a_torn_down_containers_duplicated_entry_rule(
    nodes: tuple[str, str], tmp_path: Path, iptables_mode: rp.Mode
) -> None:
    """A torn-down container's entry rule twice in CNI-HOSTPORT-DNAT (a script re-adding
    the plugin's rules): the repair deletes the extra copy whatever the container (its
    dedupe reads the table, not the cache), so the plain check must offer it, not say
    `--repair would leave it as it is`."""
    host, container = nodes
    conf = _debian_added(host, iptables_mode, ("10.88.0.8/16",))
    rp.write_cni_cache(tmp_path, "podman", "dying", "eth0", conf, [rp.port_mapping(8080, 80)],
                       ["10.88.0.8/16"], netns=f"/run/netns/{container}")  # fmt: skip
    [entry] = [shlex.split(line) for line in rp.save(host, 4, iptables_mode).splitlines()
               if line.startswith("-A CNI-HOSTPORT-DNAT ")]  # fmt: skip
    rp.iptables(host, ["-t", "nat", *entry], mode=iptables_mode)  # the same rule again
    args = ["--netns", host, "--cni-cache-dir", str(tmp_path), "--family", "4",
            "--iptables", iptables_mode]  # fmt: skip
    assert rp.save(host, 4, iptables_mode).count("-A CNI-HOSTPORT-DNAT ") == 2

    done = pmctl.run(["check", *args, "-o", "json"])
    [dup] = [p for p in json.loads(done.stdout)["problems"] if p["kind"] == "duplicate-entry"]
    assert dup["fix"] is not None and "check --repair" in dup["fix"], dup
    assert "would leave it" not in dup["why"], dup
    done = pmctl.run(["check", "--repair", *args, "-o", "json"])
    assert rp.save(host, 4, iptables_mode).count("-A CNI-HOSTPORT-DNAT ") == 1  # it does
    assert [p["kind"] for p in json.loads(done.stdout)["fixed"]] == ["duplicate-entry"]


# A pod on one network twice, net1 being torn down, its chain there with a problem: the
# repair rewrote the chain from BOTH entries (a333eca: "shared with a live interface:
# rewritten from all of them"), so net1's lost entry rule, DNAT or mark rule was written
# anew, a host port sent to an address being given back. The decision is per entry, as
# on nftables: net2's rules repaired, net1's left as they are (what it holds kept, what
# it lacks not made, net1 named); the plain check offers --repair only for what the
# repair then does, and says why it leaves the rest (no loop).


def _lose(host: str, mode: rp.Mode, what: str) -> None:
    """Delete one rule of the pod's: net1's (8080) or net2's (9090) DNAT, or net1's entry
    rule in CNI-HOSTPORT-DNAT."""
    ifname, kind = what.split("-")
    port = "8080" if ifname == "net1" else "9090"
    for line in rp.save(host, 4, mode).splitlines():
        words = shlex.split(line)
        if words[:1] != ["-A"] or port not in words:
            continue
        if (kind == "entry") == (words[1] == "CNI-HOSTPORT-DNAT") and (
            kind == "entry" or "DNAT" == words[words.index("-j") + 1]
        ):
            rp.iptables(host, ["-t", "nat", "-D", *words[1:]], mode=mode)
            return
    raise AssertionError(f"no rule for {what}")


def _net2_repaired_net1_kept(done, host: str, mode: rp.Mode, before: list, added: list) -> list:
    """After the repair: net1's rules as they were (nothing made, nothing deleted), net2's
    as its ADD made them, net1 named, exit 1. The rules now."""
    after = rp.nat_rules(rp.save(host, 4, mode))
    assert [r for r in after if "8080" in r] == [r for r in before if "8080" in r], after
    assert [r for r in after if "9090" in r] == [r for r in added if "9090" in r], after
    [left] = json.loads(done.stdout)["unrepaired"]
    assert left["why"].startswith("its address 10.88.0.7 is on no interface"), left
    assert done.returncode == 1, done.stdout + done.stderr
    return after


def _twice_rows(done) -> list:
    assert done.returncode == 1, done.stdout + done.stderr
    return [p for p in json.loads(done.stdout)["problems"] if p["container_id"] == "twice"]


@pytest.mark.parametrize(
    "lost",
    [("net1-entry",), ("net1-entry", "net2-dnat"), ("net1-dnat", "net2-dnat")],
    ids=["dying-entry", "dying-entry+live-dnat", "dying-dnat+live-dnat"],
)
def test_iptables_a_shared_chain_there_gets_nothing_new_of_the_torn_down_interface(
    nodes: tuple[str, str], tmp_path: Path, iptables_mode: rp.Mode, lost: tuple
) -> None:
    host, pod = nodes
    _pod_twice(host, pod, tmp_path, iptables_mode,
               {"net1": ["10.88.0.7/16"], "net2": ["10.88.0.9/16"]})  # fmt: skip
    added = rp.nat_rules(rp.save(host, 4, iptables_mode))
    for what in lost:
        _lose(host, iptables_mode, what)
    before = rp.nat_rules(rp.save(host, 4, iptables_mode))
    args = ["--netns", host, "--cni-cache-dir", str(tmp_path), "--family", "4",
            "--iptables", iptables_mode, "-o", "json"]  # fmt: skip

    # The plain check: --repair offered only where the repair does something.
    rows = _twice_rows(pmctl.run(["check", *args]))
    live_lost = "net2-dnat" in lost
    assert [bool(p["fix"]) for p in rows] == [
        live_lost and p["kind"] == "missing-rules" for p in rows
    ], rows
    assert all("--repair would leave it as it is" in p["why"] for p in rows if not p["fix"])

    done = pmctl.run(["check", "--repair", *args])
    after = _net2_repaired_net1_kept(done, host, iptables_mode, before, added)
    assert all(not p["fix"] for p in _twice_rows(done)), done.stdout

    # After: no --repair offered again, and a second repair writes nothing.
    rows = _twice_rows(pmctl.run(["check", *args]))
    assert rows and all(not p["fix"] for p in rows), rows
    assert all("--repair would leave it as it is" in p["why"] for p in rows), rows
    pmctl.run(["check", "--repair", *args])
    assert rp.nat_rules(rp.save(host, 4, iptables_mode)) == after


def _net2_given_after_losses(
    nodes: tuple[str, str], tmp_path: Path, mode: rp.Mode
) -> tuple[list, list, Path]:
    """The pod, net1's entry rule and net2's DNAT then lost: the rules as the ADDs made
    them, the rules now, and net2's delegate stdin (for --cni-config)."""
    host, pod = nodes
    _pod_twice(host, pod, tmp_path, mode, {"net1": ["10.88.0.7/16"], "net2": ["10.88.0.9/16"]})
    added = rp.nat_rules(rp.save(host, 4, mode))
    for what in ("net1-entry", "net2-dnat"):
        _lose(host, mode, what)
    conf = rp.plugin_conf("podman", ["10.88.0.9/16"], [rp.port_mapping(9090, 80)])
    conf["prevResult"]["interfaces"][0]["name"] = "net2"
    stdin = tmp_path / "net2.json"
    stdin.write_text(json.dumps(conf))
    return added, rp.nat_rules(rp.save(host, 4, mode)), stdin


def _net1_given(tmp_path: Path) -> Path:
    """net1's delegate stdin (the interface being torn down), for --cni-config."""
    conf = rp.plugin_conf("podman", ["10.88.0.7/16"], [rp.port_mapping(8080, 80)])
    conf["prevResult"]["interfaces"][0]["name"] = "net1"
    stdin = tmp_path / "net1.json"
    stdin.write_text(json.dumps(conf))
    return stdin


@pytest.mark.parametrize("ifname", ["net2", "net1"])
def test_one_mapping_repair_writes_nothing_new_of_the_torn_down_interface(
    nodes: tuple[str, str], tmp_path: Path, iptables_mode: rp.Mode, ifname: str
) -> None:
    """The same pod, net1's entry rule and net2's DNAT lost, through the check and the
    repair of net2's mapping alone (its delegate's stdin, --ifname net2): the check
    offered `--repair` for net1's lost entry rule, and the repair wrote it anew (`--dports
    8080 -j CNI-DN-...`, exit 0), net1's torn-down state never judged on this path. Now
    as the node's repair: net2's DNAT back, nothing of net1's made, net1 named, exit 1;
    the check offers --repair only for net2's row, and nothing after. So through net1's
    own mapping (--ifname net1): that path judged the other interfaces alone, and wrote
    net1's lost entry rule anew too (exit 0); the live net2's lost DNAT, in the chain
    both share, it makes."""
    host, _ = nodes
    added, before, stdin = _net2_given_after_losses(nodes, tmp_path, iptables_mode)
    stdin = _net1_given(tmp_path) if ifname == "net1" else stdin
    args = ["--netns", host, "--cni-cache-dir", str(tmp_path), "--family", "4",
            "--iptables", iptables_mode, "-o", "json", "--container", "twice",
            "--cni-config", str(stdin), "--ifname", ifname]  # fmt: skip

    rows = _twice_rows(pmctl.run(["check", *args]))
    assert [(p["kind"], bool(p["fix"])) for p in rows] == [
        ("missing-rules", True),
        ("missing-entry", False),
    ], rows
    assert "--repair would leave it as it is: its address 10.88.0.7" in rows[1]["why"], rows

    done = pmctl.run(["check", "--repair", *args])
    after = _net2_repaired_net1_kept(done, host, iptables_mode, before, added)
    assert "could not repair IPv4 podman/twice" in done.stderr, done.stderr

    rows = _twice_rows(pmctl.run(["check", *args]))
    assert [(p["kind"], bool(p["fix"])) for p in rows] == [("missing-entry", False)], rows
    pmctl.run(["check", "--repair", *args])
    assert rp.nat_rules(rp.save(host, 4, iptables_mode)) == after


def test_add_of_the_live_interface_writes_nothing_new_of_the_torn_down_one(
    nodes: tuple[str, str], tmp_path: Path, iptables_mode: rp.Mode
) -> None:
    """The same pod, net1's entry rule and net2's DNAT lost, then add of net2's mapping
    (its delegate's stdin): add joins the chain from both cached interfaces (as check
    wants it) and wrote net1's lost entry rule anew, exit 0 ('rewrote CNI-DN-...'),
    where the plugin's ADD of net2 appends net2's rules alone. Now net2's DNAT is back,
    nothing of net1's made or deleted, and a warning says why."""
    host, _ = nodes
    added, before, stdin = _net2_given_after_losses(nodes, tmp_path, iptables_mode)
    done = pmctl.run(["add", "--netns", host, "--cni-cache-dir", str(tmp_path), "--family",
                      "4", "--iptables", iptables_mode, "--container", "twice",
                      "--cni-config", str(stdin), "--ifname", "net2"])  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    after = rp.nat_rules(rp.save(host, 4, iptables_mode))
    assert [r for r in after if "8080" in r] == [r for r in before if "8080" in r], after
    assert [r for r in after if "9090" in r] == [r for r in added if "9090" in r], after
    assert "its address 10.88.0.7 is on no interface" in done.stderr, done.stderr


# The same pod on the plugin's nftables backend (upstream v1.9.1): the repair keeps a
# torn-down interface's rules as they are (nft_repair._CacheAgain.kept: what they lack
# is not made) and repairs the live one's, but the plain check offered `--repair` for
# the dying interface's lost rule all the same (torn_down_fixes judged only iptables
# rows of a container with live entries too): `check --repair` then said `could not
# repair`, and the next check offered it again, a loop.


def _nft_pod_twice(host: str, pod: str, tmp_path: Path) -> None:
    ips = {"net1": ["10.88.0.7/16"], "net2": ["10.88.0.9/16"]}
    for ifname, port in (("net1", 8080), ("net2", 9090)):
        ports = [rp.port_mapping(port, 80)]
        conf = upstream.nft_conf("podman", ips[ifname], ports)
        conf["prevResult"]["interfaces"][0]["name"] = ifname
        upstream.run("v1.9.1", "ADD", host, "twice", conf, ifname=ifname, check=True)
        rp.write_cni_cache(tmp_path, "podman", "twice", ifname, conf, ports, ips[ifname],
                           netns=f"/run/netns/{pod}")  # fmt: skip
    rp.hold_addresses(f"/run/netns/{pod}", ips["net2"])  # net1's address and interface gone


def _nft_lose(host: str, chain: str, text: str) -> None:
    listed = upstream.nft(host, "-a", "list", "chain", "ip", "cni_hostport", chain).stdout
    [handle] = [line.rsplit("# handle ", 1)[1] for line in listed.splitlines() if text in line]
    upstream.nft(host, "delete", "rule", "ip", "cni_hostport", chain, "handle", handle)


_NET1_DNAT = ("hostports", "dnat to 10.88.0.7:80")
_NET1_MASQ = ("masquerading", "ip saddr 10.88.0.7 ip daddr 10.88.0.7")
_NET2_DNAT = ("hostports", "dnat to 10.88.0.9:80")


@pytest.mark.parametrize(
    "lost",
    [(_NET1_DNAT,), (_NET1_MASQ,), (_NET1_MASQ, _NET2_DNAT)],
    ids=["dying-dnat", "dying-masq", "dying-masq+live-dnat"],
)
def test_nft_check_offers_no_repair_for_the_torn_down_interfaces_lost_rule(
    nodes: tuple[str, str], tmp_path: Path, lost: tuple
) -> None:
    host, pod = nodes
    _nft_pod_twice(host, pod, tmp_path)
    for chain, text in lost:
        _nft_lose(host, chain, text)
    args = ["--netns", host, "--cni-cache-dir", str(tmp_path), "--family", "4", "-o", "json"]

    rows = _twice_rows(pmctl.run(["check", *args]))
    live_lost = _NET2_DNAT in lost
    # --repair offered for net2's lost rule alone: the repair makes it, not net1's.
    assert [bool(p["fix"]) for p in rows] == ["10.88.0.9" in p["detail"] for p in rows], rows
    assert len(rows) == len(lost), rows
    assert all(_WHY.replace("10.88.0.8", "10.88.0.7") in p["why"] for p in rows if not p["fix"])

    before = upstream.ruleset_text(host)
    done = pmctl.run(["check", "--repair", *args])
    after = upstream.ruleset_text(host)
    made = [line for line in after.splitlines() if line not in before.splitlines()]
    assert made == (['\t\ttcp dport 9090 dnat to 10.88.0.9:80 comment "twice"'] if live_lost
                    else []), made  # fmt: skip
    [left] = json.loads(done.stdout)["unrepaired"]
    assert left["why"].startswith("its address 10.88.0.7 is on no interface"), left
    assert done.returncode == 1, done.stdout + done.stderr

    # After: the dying interface's row named, --repair not offered again (no loop).
    rows = _twice_rows(pmctl.run(["check", *args]))
    assert len(rows) == len(lost) - live_lost and not any(p["fix"] for p in rows), rows
    pmctl.run(["check", "--repair", *args])
    assert upstream.ruleset_text(host) == after


def test_one_mapping_repair_of_a_torn_down_container_keeps_its_chain(
    nodes: tuple[str, str], tmp_path: Path, iptables_mode: rp.Mode
) -> None:
    """A container alone on the network, being torn down, its entry rule lost beside
    its old address's extra DNAT, repaired through its own --cni-config: the chain and
    its entry rules are left as they are (the node's repair leaves them), named, exit 1;
    the check offers --repair for none of its rows."""
    host, container = nodes
    args = _debian_dying(host, container, tmp_path, iptables_mode)
    [entry] = [shlex.split(line)[1:] for line in rp.save(host, 4, iptables_mode).splitlines()
               if line.startswith("-A CNI-HOSTPORT-DNAT ")]  # fmt: skip
    rp.iptables(host, ["-t", "nat", "-D", *entry], mode=iptables_mode)
    before = rp.nat_rules(rp.save(host, 4, iptables_mode))
    conf = rp.plugin_conf("podman", ["10.88.0.8/16"], [rp.port_mapping(8080, 80)])
    stdin = tmp_path / "dying.json"
    stdin.write_text(json.dumps(conf))
    args += ["-o", "json", "--container", "dying", "--cni-config", str(stdin),
             "--ifname", "eth0"]  # fmt: skip

    done = pmctl.run(["check", *args])
    assert done.returncode == 1, done.stdout + done.stderr
    rows = json.loads(done.stdout)["problems"]
    assert {p["kind"] for p in rows} == {"missing-entry", "extra-rules"}, rows
    assert all(not p["fix"] and "--repair would leave it as it is: " + _WHY in p["why"]
               for p in rows), rows  # fmt: skip

    done = pmctl.run(["check", "--repair", *args])
    assert rp.nat_rules(rp.save(host, 4, iptables_mode)) == before
    _named_not_repaired(done, json.loads(done.stdout), _WHY)


def test_one_mapping_repair_of_a_healthy_torn_down_container_names_nothing(
    nodes: tuple[str, str], tmp_path: Path, iptables_mode: rp.Mode
) -> None:
    """The same container with its chain and entry rule all there (one ADD): its check
    says healthy, and its repair wrote nothing but warned `could not repair IPv4
    podman/dying (CNI-DN-...): its address 10.88.0.8 is on no interface ...` of a chain
    that lacked nothing (exit 0): a cron job's log said a repair failed every night.
    Now it names nothing, as the node's repair says nothing of such a chain."""
    host, container = nodes
    conf = _debian_added(host, iptables_mode, ("10.88.0.8/16",))
    rp.write_cni_cache(tmp_path, "podman", "dying", "eth0", conf, [rp.port_mapping(8080, 80)],
                       ["10.88.0.8/16"], netns=f"/run/netns/{container}")  # fmt: skip
    stdin = tmp_path / "dying.json"
    stdin.write_text(json.dumps(conf))
    node = ["--netns", host, "--cni-cache-dir", str(tmp_path), "--family", "4",
            "--iptables", iptables_mode, "-o", "json"]  # fmt: skip
    one = [*node, "--container", "dying", "--cni-config", str(stdin), "--ifname", "eth0"]
    before = rp.nat_rules(rp.save(host, 4, iptables_mode))
    for command in (["check", *one], ["check", "--repair", *one], ["check", "--repair", *node]):
        done = pmctl.run(command)
        assert done.returncode == 0, (command, done.stdout + done.stderr)
        assert "could not repair" not in done.stderr, (command, done.stderr)
        out = json.loads(done.stdout)
        assert out["healthy"] and not out.get("unrepaired"), out
    assert rp.nat_rules(rp.save(host, 4, iptables_mode)) == before


@pytest.mark.parametrize(
    "lost",
    [(_NET1_DNAT,), (_NET1_MASQ,), (_NET1_DNAT, _NET2_DNAT)],
    ids=["dying-dnat", "dying-masq", "dying-dnat+live-dnat"],
)
def test_nft_one_mapping_repair_of_the_torn_down_interface_writes_nothing_of_it(
    nodes: tuple[str, str], tmp_path: Path, lost: tuple
) -> None:
    """The same pod on v1.9.1's tables, through net1's own mapping (its delegate's
    stdin, --ifname net1), net1 being torn down: `repair_nft_mapping` never judged the
    interface given (torn_down.torn_own covered iptables alone), so it wrote net1's lost
    DNAT or masquerade rule anew, exit 0 (a host port sent to an address being given
    back), where the node's repair keeps it as it is and names it; the plain check
    offered --repair for it. Now nothing of net1's is made, it is named, exit 1; the
    check offers no --repair for net1's rows. net2's rules are not this mapping's
    (another address: nft_one.own_addresses): its lost DNAT is left to the node's
    repair either way."""
    host, pod = nodes
    _nft_pod_twice(host, pod, tmp_path)
    for chain, text in lost:
        _nft_lose(host, chain, text)
    conf = upstream.nft_conf("podman", ["10.88.0.7/16"], [rp.port_mapping(8080, 80)])
    conf["prevResult"]["interfaces"][0]["name"] = "net1"
    stdin = tmp_path / "net1.json"
    stdin.write_text(json.dumps(conf))
    args = ["--netns", host, "--cni-cache-dir", str(tmp_path), "--family", "4", "-o", "json",
            "--container", "twice", "--cni-config", str(stdin), "--ifname", "net1"]  # fmt: skip
    why = _WHY.replace("10.88.0.8", "10.88.0.7")

    rows = _twice_rows(pmctl.run(["check", *args]))
    assert rows and all("10.88.0.7" in p["detail"] for p in rows), rows
    assert all(not p["fix"] and "--repair would leave it as it is: " + why in p["why"]
               for p in rows), rows  # fmt: skip

    before = upstream.ruleset_text(host)
    done = pmctl.run(["check", "--repair", *args])
    assert upstream.ruleset_text(host) == before, "the repair wrote for net1"
    [left] = json.loads(done.stdout)["unrepaired"]
    assert left["why"].startswith(why), left
    assert done.returncode == 1, done.stdout + done.stderr
    assert "could not repair IPv4 podman/twice" in done.stderr, done.stderr

    # After: --repair not offered again (no loop), and a second repair writes nothing.
    rows = _twice_rows(pmctl.run(["check", *args]))
    assert rows and not any(p["fix"] for p in rows), rows
    pmctl.run(["check", "--repair", *args])
    assert upstream.ruleset_text(host) == before


def _nft_added(
    host: str, cid: str, ip: str, port: int, netns: str, tmp_path: Path, v6: str | None = None
) -> dict:
    """`cid` ADDed by upstream v1.9.1 at `ip` (and `v6`: dual-stack; host port `port`
    to 80), its cache entry naming `netns`; its config."""
    ports, ips = [rp.port_mapping(port, 80)], [ip, *([v6] if v6 else [])]
    conf = upstream.nft_conf("podman", ips, ports)
    upstream.run("v1.9.1", "ADD", host, cid, conf, check=True)
    rp.write_cni_cache(tmp_path, "podman", cid, "eth0", conf, ports, ips,
                       netns=f"/run/netns/{netns}")  # fmt: skip
    return conf


@pytest.mark.parametrize("lost", [("hostports", "dnat to 10.88.0.7:80"),
                                  ("masquerading", "ip saddr 10.88.0.7 ip daddr 10.88.0.7")],
                         ids=["dnat", "masq"])  # fmt: skip
def test_nft_one_mapping_repair_of_a_torn_down_container_alone_writes_nothing(
    nodes: tuple[str, str], tmp_path: Path, lost: tuple
) -> None:
    """A container alone on its network (no other interface beside it) on v1.9.1's
    tables, being torn down (its address and interface gone from its namespace), one of
    its rules lost, repaired through its own --cni-config and --ifname: as on iptables
    (test_one_mapping_repair_of_a_torn_down_container_keeps_its_chain), nothing is
    written, it is named, exit 1; its check offers --repair for none of its rows, and a
    second repair writes nothing either."""
    host, container = nodes
    conf = _nft_added(host, "dying", "10.88.0.7/16", 8080, container, tmp_path)
    _nft_lose(host, *lost)
    stdin = tmp_path / "dying.json"
    stdin.write_text(json.dumps(conf))
    args = ["--netns", host, "--cni-cache-dir", str(tmp_path), "--family", "4", "-o", "json",
            "--container", "dying", "--cni-config", str(stdin), "--ifname", "eth0"]  # fmt: skip
    why = _WHY.replace("10.88.0.8", "10.88.0.7")

    done = pmctl.run(["check", *args])
    assert done.returncode == 1, done.stdout + done.stderr
    rows = json.loads(done.stdout)["problems"]
    assert [p["kind"] for p in rows] == ["nft-missing-rules"], rows
    assert not rows[0]["fix"] and "--repair would leave it as it is: " + why in rows[0]["why"]

    before = upstream.ruleset_text(host)
    assert lost[1] not in before, before
    for _ in range(2):
        done = pmctl.run(["check", "--repair", *args])
        assert upstream.ruleset_text(host) == before, "the repair wrote for the dying one"
        [left] = json.loads(done.stdout)["unrepaired"]
        assert (left["container_id"], left["family"]) == ("dying", 4), left
        assert left["why"].startswith(why), left
        assert done.returncode == 1, done.stdout + done.stderr
        assert "could not repair IPv4 podman/dying" in done.stderr, done.stderr


# A container alone on the node, being torn down, after a flush of the nat table (`-F`:
# the chains stay, empty; `-F -X`: gone). The repair writes nothing for it, not even the
# shared chains and jumps (CacheNow leaves the entry out: nothing is left to plan from),
# but the plain check offered `--repair` on those top-level rows (missing-toplevel-rule,
# missing-jump; missing-toplevel after -X), and after the repair offered them again.


@pytest.mark.parametrize("flush", [["-F"], ["-F", "-X"]], ids=["F", "FX"])
def test_check_offers_no_repair_for_the_toplevel_rows_only_a_torn_down_container_wants(
    nodes: tuple[str, str], tmp_path: Path, iptables_mode: rp.Mode, flush: list
) -> None:
    host, container = nodes
    conf = _debian_added(host, iptables_mode, ("10.88.0.8/16",))
    rp.write_cni_cache(tmp_path, "podman", "dying", "eth0", conf, [rp.port_mapping(8080, 80)],
                       ["10.88.0.8/16"], netns=f"/run/netns/{container}")  # fmt: skip
    for args in flush:
        rp.iptables(host, ["-t", "nat", args], mode=iptables_mode)
    args = ["--netns", host, "--cni-cache-dir", str(tmp_path), "--family", "4",
            "--iptables", iptables_mode, "-o", "json"]  # fmt: skip
    before = rp.nat_rules(rp.save(host, 4, iptables_mode))

    def offered(done) -> list:
        assert done.returncode == 1, done.stdout + done.stderr
        rows = json.loads(done.stdout)["problems"]
        assert rows, done.stdout
        return [(p["kind"], p["chain"]) for p in rows if p["fix"]]

    check = pmctl.run(["check", *args])
    toplevel = [p for p in json.loads(check.stdout)["problems"] if p["container_id"] is None]
    assert toplevel, check.stdout  # the shared chains' rows are there ...
    assert offered(check) == [], check.stdout  # ... but --repair makes none of them
    assert all(_WHY in p["why"] for p in toplevel), toplevel  # and they say why
    text = pmctl.run(["check", *args[:-2]])
    assert "--repair" not in text.stdout.replace("--repair would leave", ""), text.stdout

    done = pmctl.run(["check", "--repair", *args])
    assert rp.nat_rules(rp.save(host, 4, iptables_mode)) == before  # nothing written
    _named_not_repaired(done, json.loads(done.stdout), _WHY)
    assert offered(done) == [], done.stdout  # nor does the repair's own report
    assert offered(pmctl.run(["check", *args])) == []  # no loop


# The nftables twin: a node whose only nft-backed container (v1.9.1) is being torn
# down, its table flushed or deleted, or a chain of it lost. The repair makes no shared
# structure for it (_CacheAgain leaves it out), but the plain check offered `--repair`
# on the table's rows (nft-missing-table, -chain, -entry, -jumps), the repair wrote
# nothing (or, where none of the container's own rules was lost, made the structure
# that sends host ports to the address being given back), and offered them again.
# Beside a live container, the structure is offered and made as before.


def _nft_break(host: str, how: str, family: str = "ip") -> None:
    at = (family, "cni_hostport")
    if how == "flush-table":
        upstream.nft(host, "flush", "table", *at)
    elif how == "delete-table":
        upstream.nft(host, "delete", "table", *at)
    elif how == "delete-masquerading":
        upstream.nft(host, "delete", "chain", *at, "masquerading")
    elif how == "delete-hostports":  # (hostports_all jumps to it: flushed first)
        upstream.nft(host, "flush", "chain", *at, "hostports_all")
        upstream.nft(host, "delete", "chain", *at, "hostports")
    elif how == "flush-hostports_all":
        upstream.nft(host, "flush", "chain", *at, "hostports_all")
    elif how == "flush-entry":
        upstream.nft(host, "flush", "chain", *at, "prerouting")
        upstream.nft(host, "flush", "chain", *at, "output")
    else:
        assert how == "delete-prerouting", how
        upstream.nft(host, "delete", "chain", *at, "prerouting")


def _nft_shared(done) -> list:
    """The rows of the table's shared structure (no container's)."""
    return [p for p in json.loads(done.stdout)["problems"] if p["container_id"] is None]


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("live", [False, True], ids=["alone", "beside-live"])
@pytest.mark.parametrize("how", ["flush-table", "delete-table", "delete-masquerading",
                                 "delete-hostports", "flush-hostports_all",
                                 "delete-prerouting"])  # fmt: skip
def test_nft_check_offers_no_repair_for_the_table_only_a_torn_down_container_wants(
    nodes: tuple[str, str], tmp_path: Path, how: str, live: bool, family: int
) -> None:
    """IPv4: an IPv4-only container. IPv6: a dual-stack one, the ip6 table broken and
    checked alone (--family 6), whose rows toplevel_fixes judges by family."""
    host, container = nodes
    v6 = "fd00:88::8/64" if family == 6 else None
    _nft_added(host, "dying", "10.88.0.8/16", 8080, container, tmp_path, v6=v6)
    if live:  # another container, its address in its namespace
        ips = ["10.88.0.9/16", *(["fd00:88::9/64"] if v6 else [])]
        _nft_added(host, "alive", ips[0], 9090, host, tmp_path, v6=(ips[1:] or [None])[0])
        rp.hold_addresses(f"/run/netns/{host}", ips)
    whole = upstream.ruleset_text(host)
    _nft_break(host, how, "ip6" if family == 6 else "ip")
    args = ["--netns", host, "--cni-cache-dir", str(tmp_path), "--family", str(family),
            "-o", "json"]  # fmt: skip
    why, dnat = _WHY, "dnat to 10.88.0.9:80"
    if family == 6:
        why, dnat = _WHY.replace("10.88.0.8", "fd00:88::8"), "dnat to [fd00:88::9]:80"
    shared = _nft_shared
    check = pmctl.run(["check", *args])
    rows = shared(check)
    assert check.returncode == 1 and rows, check.stdout + check.stderr
    before = upstream.ruleset_text(host)
    done = pmctl.run(["check", "--repair", *args])
    after = upstream.ruleset_text(host)
    assert {p["family"] for p in rows} == {family}, rows
    if live:
        assert all(p["fix"] for p in rows), rows  # offered, and made
        assert dnat in after and "jump hostports_all" in after, after
        assert shared(pmctl.run(["check", *args])) == []
        return
    assert all(not p["fix"] and why in p["why"] for p in rows), rows  # says why
    text = pmctl.run(["check", *args[:-2]])
    assert "--repair" not in text.stdout.replace("--repair would leave", ""), text.stdout
    assert after == before, f"the repair wrote for the dying one:\n{whole}\n{after}"
    [left] = json.loads(done.stdout)["unrepaired"]
    assert (left["container_id"], left["family"]) == ("dying", family), left
    assert left["why"].startswith(why) and done.returncode == 1, done.stdout + done.stderr
    assert not any(p["fix"] for p in shared(done)), done.stdout  # nor its own report
    assert not any(p["fix"] for p in shared(pmctl.run(["check", *args])))  # no loop


# A node whose plugin table holds only rules no CNI cache entry claims (stale: gc's),
# then loses a chain or jump of its own. The repair plans the table from the cached
# nft-backed containers alone (with no CNI cache it leaves nftables alone), so it makes
# none of it here; the check offered `check --repair` on the table's rows all the same,
# the repair wrote nothing, and the next check offered them again: a loop. Beside a
# cached live container the structure is offered and made, as before.

_UNWANTED = "--repair would leave it as it is: no live container whose cache entry is read wants"


def _structure_rows(done) -> list:
    """The rows of the table's own structure (no container's)."""
    assert done.returncode == 1, done.stdout + done.stderr
    return _nft_shared(done)


@pytest.mark.parametrize("cache", ["empty", "absent", "beside-live"])
@pytest.mark.parametrize("how", ["flush-hostports_all", "delete-prerouting", "flush-entry"])
def test_nft_check_offers_no_repair_for_a_table_only_stale_rules_want(
    nodes: tuple[str, str], tmp_path: Path, how: str, cache: str
) -> None:
    host = nodes[0]
    ports = [rp.port_mapping(8080, 80)]
    upstream.run("v1.9.1", "ADD", host, "stale",
                 upstream.nft_conf("podman", ["10.88.0.8/16"], ports), check=True)  # fmt: skip
    if cache == "empty":  # a cache, no entry of it (removed)
        (tmp_path / "results").mkdir()
    elif cache == "beside-live":  # a cached container, its address in its namespace
        _nft_added(host, "alive", "10.88.0.9/16", 9090, host, tmp_path)
        rp.hold_addresses(f"/run/netns/{host}", ["10.88.0.9/16"])
    _nft_break(host, how)
    args = ["--netns", host, "--cni-cache-dir", str(tmp_path), "--family", "4", "-o", "json"]

    rows = _structure_rows(pmctl.run(["check", *args]))
    assert rows, rows
    before = upstream.ruleset_text(host)
    done = pmctl.run(["check", "--repair", *args])
    after = upstream.ruleset_text(host)
    if cache == "beside-live":
        assert all(p["fix"] for p in rows), rows  # offered, and made
        assert "jump hostports_all" in after and "dnat to 10.88.0.9:80" in after, after
        assert _structure_rows(pmctl.run(["check", *args])) == []  # (the stale row stays)
        return
    # The repair makes nothing for no container: the rows say so, offering no fix.
    assert all(not p["fix"] and _UNWANTED in p["why"] for p in rows), rows
    text = pmctl.run(["check", *args[:-2]])
    assert "--repair" not in text.stdout.replace("--repair would leave", ""), text.stdout
    assert after == before, f"the repair wrote:\n{before}\n{after}"
    assert not any(p["fix"] for p in _structure_rows(done)), done.stdout  # nor its own report
    assert not any(p["fix"] for p in _structure_rows(pmctl.run(["check", *args])))  # no loop


# Nor where the table's rules are of a container whose only entry cannot be read, or of
# a zombie (its namespace gone). The repair plans the table from the entries it reads, so it makes
# nothing; but the check offered `--repair` on the table's rows (nft-missing-jumps,
# -chain), the repair wrote nothing, its own report offered them again, and so did the
# next check: a loop. (On iptables the check asks nothing of the shared chains no entry
# read wants.)


@pytest.mark.parametrize("how", ["flush-hostports_all", "delete-prerouting"])
@pytest.mark.parametrize("entry", ["unreadable", "zombie"])  # (stale: above)
def test_nft_check_offers_no_repair_for_the_table_no_entry_read_wants(
    nodes: tuple[str, str], tmp_path: Path, entry: str, how: str
) -> None:
    host, _ = nodes
    netns = host if entry != "zombie" else f"{host}-gone"
    _nft_added(host, "ctr", "10.88.0.9/16", 9090, netns, tmp_path)
    rp.hold_addresses(f"/run/netns/{host}", ["10.88.0.9/16"])
    if entry == "unreadable":
        rp.cut_short(tmp_path / "results", "podman", "ctr", "eth0")
    _nft_break(host, how)
    args = ["--netns", host, "--cni-cache-dir", str(tmp_path), "--family", "4", "-o", "json"]

    check = pmctl.run(["check", *args])
    rows = _nft_shared(check)
    assert check.returncode == 1 and rows, check.stdout + check.stderr
    assert all(not p["fix"] and _UNWANTED in p["why"] for p in rows), rows
    text = pmctl.run(["check", *args[:-2]])
    assert "check --repair" not in text.stdout, text.stdout
    before = upstream.ruleset_text(host)
    done = pmctl.run(["check", "--repair", *args])
    assert upstream.ruleset_text(host) == before  # nothing to make it from
    assert not any(p["fix"] for p in _nft_shared(done)), done.stdout  # nor its own report
    assert not any(p["fix"] for p in _nft_shared(pmctl.run(["check", *args])))  # no loop


# The table's prerouting chain re-made by hand at another priority (nft-wrong-base-
# chain): the fix is by hand, the row said "delete the chain by hand (...), then run
# `portmapctl check --repair`, which re-creates it as the plugin's". Where no cached
# container but a torn-down one wants the table (or only stale rules are in it), that
# repair re-creates nothing: done as told, the chain stayed gone and the next check
# said the repair would leave it. The row says what re-makes it there instead.


def _wrong_priority(host: str) -> None:
    """prerouting deleted and made again at priority -50, its rules as they were."""
    listed = upstream.nft(host, "list", "chain", "ip", "cni_hostport", "prerouting").stdout
    rules = [line.strip() for line in listed.splitlines()
             if line.strip() and not line.strip().startswith(("table", "chain", "type", "}"))]  # fmt: skip
    upstream.nft(host, "delete", "chain", "ip", "cni_hostport", "prerouting")
    script = "add chain ip cni_hostport prerouting { type nat hook prerouting priority -50 ; }\n"
    script += "".join(f"add rule ip cni_hostport prerouting {r}\n" for r in rules)
    upstream.nft(host, "-f", "-", stdin=script)


@pytest.mark.parametrize("cache", ["empty", "torn-down", "beside-live"])
def test_nft_wrong_base_chain_names_the_repair_only_where_it_re_creates_the_chain(
    nodes: tuple[str, str], tmp_path: Path, cache: str
) -> None:
    host, container = nodes
    if cache == "empty":  # stale rules only: a cache, no entry of them
        ports = [rp.port_mapping(8080, 80)]
        upstream.run("v1.9.1", "ADD", host, "stale",
                     upstream.nft_conf("podman", ["10.88.0.8/16"], ports), check=True)  # fmt: skip
        (tmp_path / "results").mkdir()
    else:
        _nft_added(host, "dying", "10.88.0.8/16", 8080, container, tmp_path)
    if cache == "beside-live":
        _nft_added(host, "alive", "10.88.0.9/16", 9090, host, tmp_path)
        rp.hold_addresses(f"/run/netns/{host}", ["10.88.0.9/16"])
    _wrong_priority(host)
    args = ["--netns", host, "--cni-cache-dir", str(tmp_path), "--family", "4", "-o", "json"]

    check = pmctl.run(["check", *args])
    [row] = [p for p in _structure_rows(check) if p["kind"] == "nft-wrong-base-chain"]
    assert row["chain"] == "prerouting" and row["fix"] is None, row
    assert "nft delete chain ip cni_hostport prerouting" in row["why"], row
    text = pmctl.run(["check", *args[:-2]]).stdout
    # Done as the row says: the chain deleted by hand, then (where it says so) the repair.
    upstream.nft(host, "delete", "chain", "ip", "cni_hostport", "prerouting")
    before = upstream.ruleset_text(host)
    done = pmctl.run(["check", "--repair", *args])
    after = upstream.ruleset_text(host)
    if cache == "beside-live":
        assert "portmapctl check --repair" in row["why"], row
        assert "chain prerouting" in after and "priority dstnat" in after, after
        assert pmctl.run(["check", *args]).returncode == 0
        return
    # The repair re-creates nothing here: the row does not send the operator to it ...
    assert "then run `portmapctl check --repair" not in row["why"], row
    assert "then run `portmapctl check --repair" not in text, text
    assert "the plugin's next ADD" in row["why"], row  # ... but to what re-makes it
    assert after == before, f"the repair wrote:\n{before}\n{after}"
    assert not any(p["fix"] for p in _structure_rows(done)), done.stdout
    assert not any(p["fix"] for p in _structure_rows(pmctl.run(["check", *args])))
    # What the row says re-makes it does: the plugin's ADD of the next container.
    upstream.run("v1.9.1", "ADD", host, "next",
                 upstream.nft_conf("podman", ["10.88.0.10/16"], [rp.port_mapping(7070, 80)]),
                 check=True)  # fmt: skip
    made = upstream.nft(host, "list", "chain", "ip", "cni_hostport", "prerouting").stdout
    assert "priority dstnat" in made and "jump hostports_all" in made, made


def test_nft_wrong_masquerading_chain_beside_a_live_container_without_snat_says_no_untruth(
    nodes: tuple[str, str], tmp_path: Path
) -> None:
    """A live container without SNAT (`"snat": false`) wants the table, not its
    masquerading chain: v1.9.1's ADD makes that chain all the same (every ADD fails on it
    made again at another priority), so it is an nft-wrong-base-chain row. Its why must
    not say that no live container whose cache entry is read wants the table (one does;
    nft_wanted judged the masquerading chain by SNAT, as for a missing one)."""
    host, _ = nodes
    conf = upstream.nft_conf("podman", ["10.88.0.9/16"], [rp.port_mapping(9090, 80)])
    conf["snat"] = False
    upstream.run("v1.9.1", "ADD", host, "alive", conf, check=True)
    rp.write_cni_cache(tmp_path, "podman", "alive", "eth0", conf, [rp.port_mapping(9090, 80)],
                       ["10.88.0.9/16"], netns=f"/run/netns/{host}")  # fmt: skip
    rp.hold_addresses(f"/run/netns/{host}", ["10.88.0.9/16"])
    listed = upstream.nft(host, "list", "table", "ip", "cni_hostport").stdout
    assert "chain masquerading" not in listed, listed  # no SNAT: the ADD makes no such chain
    upstream.nft(host, "-f", "-", stdin="add chain ip cni_hostport masquerading"
                 " { type nat hook postrouting priority 50 ; }\n")  # fmt: skip
    args = ["--netns", host, "--cni-cache-dir", str(tmp_path), "--family", "4", "-o", "json"]
    check = pmctl.run(["check", *args])
    [row] = [p for p in _structure_rows(check) if p["kind"] == "nft-wrong-base-chain"]
    assert row["chain"] == "masquerading", row
    assert "nft delete chain ip cni_hostport masquerading" in row["why"], row
    assert "no live container whose cache entry is read wants it" not in row["why"], row
    assert "has SNAT" in row["why"] and "the plugin's next ADD" in row["why"], row


# The shared chains' rows only a torn-down container wants: the check names why the
# repair leaves them (torn_down.toplevel_fixes), and the repair must leave them. Where
# its chain and entry rule were intact and only a jump or a shared chain's rule was
# gone, the repair judged no namespace (it judged the containers whose own chain it
# writes) and put them back, for the torn-down container alone: PREROUTING's jump sent
# its host ports to the address being given back, exit 0, nothing named (found by
# tests/unit/test_repair_property.py).


@pytest.mark.parametrize(
    "cut",
    [
        ["-D", "PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"],
        ["-F", "CNI-HOSTPORT-MASQ"],
    ],
    ids=["prerouting-jump", "masq-flushed"],
)
@pytest.mark.parametrize("beside", ["alone", "beside-live"])
def test_iptables_the_shared_rules_only_a_torn_down_container_wants_are_not_made(
    nodes: tuple[str, str], tmp_path: Path, iptables_mode: rp.Mode, cut: list, beside: str
) -> None:
    host, container = nodes
    conf = _debian_added(host, iptables_mode, ("10.88.0.8/16",))
    rp.write_cni_cache(tmp_path, "podman", "dying", "eth0", conf, [rp.port_mapping(8080, 80)],
                       ["10.88.0.8/16"], netns=f"/run/netns/{container}")  # fmt: skip
    if beside == "beside-live":  # (its namespace holds its address: the rows are its too)
        ports = [rp.port_mapping(8090, 80)]
        live = rp.plugin_conf("podman", ["10.88.0.9/16"], ports)
        rp.run_plugin("ADD", host, "live1", live, mode=iptables_mode, check=True)
        rp.write_cni_cache(tmp_path, "podman", "live1", "eth0", live, ports, ["10.88.0.9/16"])
    rp.iptables(host, ["-t", "nat", *cut], mode=iptables_mode)
    args = ["--netns", host, "--cni-cache-dir", str(tmp_path), "--family", "4",
            "--iptables", iptables_mode]  # fmt: skip
    rows = [p for p in json.loads(pmctl.run(["check", *args, "-o", "json"]).stdout)["problems"]
            if p["container_id"] is None]  # fmt: skip
    assert rows, rows
    before = rp.save(host, 4, iptables_mode)
    done = pmctl.run(["check", "--repair", *args, "-o", "json"])
    out = json.loads(done.stdout)
    after = rp.save(host, 4, iptables_mode)
    if beside == "beside-live":  # offered, and made
        assert all((p["fix"] or "").startswith("portmapctl check --repair") for p in rows), rows
        assert [p for p in out["problems"] if p["container_id"] is None] == [], out
        assert rp.nat_rules(after) != rp.nat_rules(before)
        return
    assert all(p["fix"] is None and _WHY in p["why"] for p in rows), rows
    assert rp.nat_rules(after) == rp.nat_rules(before), after  # nothing made for it
    _named_not_repaired(done, out, _WHY.replace("namespace", "").rstrip())
    again = json.loads(pmctl.run(["check", *args, "-o", "json"]).stdout)["problems"]
    assert not any(p["fix"] for p in again if p["container_id"] is None), again


def test_one_mapping_of_a_torn_down_container_whose_plugin_ignores_its_key_is_not_written(
    nodes: tuple[str, str], tmp_path: Path, iptables_mode: rp.Mode
) -> None:
    """dying ADDed by Debian's 1.1.1 under `"backend": "nftables"` (a key it ignores:
    its chain in iptables), cached so, its namespace there without its address (a DEL
    under way); its entry rule lost. The check of its mapping (`--cni-config` of its
    stdin, with the key) offered `--repair` for the missing entry, and the repair wrote
    it anew (`--dports 8080 -j CNI-DN-...`, exit 0), a DNAT to the address being given
    back: its cache entry, keyed "nftables", was not taken for its own interface's
    (torn_own), so nothing of it was judged torn down. Now as without the key: no fix,
    nothing written, the container named."""
    host, container = nodes
    conf = {**rp.plugin_conf("podman", ["10.88.0.8/16"], [rp.port_mapping(8080, 80)]),
            "backend": "nftables"}  # fmt: skip
    rp.run_plugin("ADD", host, "dying", conf, mode=iptables_mode, check=True)
    rp.write_cni_cache(tmp_path, "podman", "dying", "eth0", conf, [rp.port_mapping(8080, 80)],
                       ["10.88.0.8/16"], netns=f"/run/netns/{container}")  # fmt: skip
    entry = next(line for line in rp.save(host, 4, iptables_mode).splitlines()
                 if line.startswith("-A CNI-HOSTPORT-DNAT") and "dying" in line)  # fmt: skip
    rp.iptables(host, ["-t", "nat", "-D", *shlex.split(entry)[1:]], mode=iptables_mode)
    before = rp.save(host, 4, iptables_mode)
    stdin = tmp_path / "dying.json"
    stdin.write_text(json.dumps(conf))
    args = ["--netns", host, "--cni-cache-dir", str(tmp_path), "--family", "4",
            "--iptables", iptables_mode, "-o", "json", "--container", "dying",
            "--cni-config", str(stdin)]  # fmt: skip

    checked = pmctl.run(["check", *args])
    rows = [p for p in json.loads(checked.stdout)["problems"] if p["container_id"] == "dying"]
    assert [(p["kind"], p["fix"]) for p in rows] == [("missing-entry", None)], rows
    done = pmctl.run(["check", "--repair", *args])
    assert rp.nat_rules(rp.save(host, 4, iptables_mode)) == rp.nat_rules(before)
    _named_not_repaired(done, json.loads(done.stdout), "its address 10.88.0.8")
