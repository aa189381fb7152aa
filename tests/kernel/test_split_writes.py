"""add and check --repair of one mapping on a split node (rules in both iptables
flavours): no copy of a container's chain in the flavour in use when the other one
holds it (the whole-node repair's guard, tests/kernel/test_check.py)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import realplugin as rp
from pmctl import assert_error, run

from portmapctl.iptables.chains import chain_name

PORTS = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
MAPPING = ["--network", "mynet", "--ip", "10.88.0.5/16", "-p", "8080:80", "--family", "4"]


def _plugin_add(host_ns, container_id, mode):
    conf = rp.plugin_conf("mynet", ["10.88.0.5/16"], PORTS)
    rp.run_plugin("ADD", host_ns, container_id, conf, mode=mode, check=True)


@pytest.mark.parametrize(
    "plugin_mode, ours, extra",
    [
        # The node's iptables is nft (auto): the fast path (nf_tables batch) and the
        # read-and-plan path of a dry run; legacy in use, the plugin's copy in nft.
        ("legacy", "nft", ["--iptables", "auto"]),
        ("legacy", "nft", ["--iptables", "nft", "--dry-run"]),
        ("nft", "legacy", ["--iptables", "legacy"]),
    ],
)
def test_add_makes_no_copy_of_a_chain_the_other_flavour_holds(host_ns, plugin_mode, ours, extra):
    """The plugin wrote ctrA's chain in one flavour (the node's iptables alternative
    was switched since); add of ctrA, same mapping, in the other flavour refuses with
    one line that says where its rules are, exit 3, and writes nothing (before: a copy,
    both DNATing, which the plugin's DEL leaves behind). A new container is written
    where portmapctl is told (auto: where `iptables` points, as the plugin's ADD)."""
    _plugin_add(host_ns, "ctrA", plugin_mode)
    before = rp.nat_rules(rp.save(host_ns, 4, ours))
    done = run(["add", "--netns", host_ns, "--container", "ctrA", *MAPPING, *extra])
    assert_error(done, 3, chain_name("mynet", "ctrA"), f"in the {plugin_mode} tables",
                 f"--iptables {plugin_mode}")  # fmt: skip
    assert rp.nat_rules(rp.save(host_ns, 4, ours)) == before
    assert chain_name("mynet", "ctrA") not in rp.save(host_ns, 4, ours)
    assert chain_name("mynet", "ctrA") in rp.save(host_ns, 4, plugin_mode)

    if "--dry-run" in extra:
        return
    new = ["--network", "mynet", "--ip", "10.88.0.6/16", "-p", "8081:80", "--family", "4"]
    done = run(["add", "--netns", host_ns, "--container", "ctrB", *new, *extra])
    assert done.returncode == 0, done.stderr
    assert chain_name("mynet", "ctrB") in rp.save(host_ns, 4, ours)
    assert chain_name("mynet", "ctrB") not in rp.save(host_ns, 4, plugin_mode)


def test_check_repair_of_one_mapping_makes_no_copy(host_ns):
    """check --repair with mapping options for a container whose chain only the legacy
    tables hold, nft in use: as the whole-node repair, it writes nothing, says why on
    one line, and the problem stays (exit 1)."""
    _plugin_add(host_ns, "ctrA", "legacy")
    argv = ["check", "--netns", host_ns, "--iptables", "nft", "--container", "ctrA", *MAPPING]
    done = run([*argv, "--repair"])
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert (
        f"could not repair IPv4 mynet/ctrA ({chain_name('mynet', 'ctrA')}): its chain is in"
        " the legacy tables and not in the nft ones" in done.stderr
    )
    assert chain_name("mynet", "ctrA") not in rp.save(host_ns, 4, "nft")
    assert "CNI-HOSTPORT-DNAT" not in rp.save(host_ns, 4, "nft")
    doc = json.loads(run([*argv, "--repair", "-o", "json"]).stdout)
    assert not doc["repaired"] and not doc["healthy"]
    # With legacy in use, the same command finds it healthy.
    done = run([*argv[:4], "legacy", *argv[5:]])
    assert done.returncode == 0, done.stdout + done.stderr


def test_check_of_one_mapping_says_where_the_chain_is_not_to_repair(host_ns):
    """Plain check of one mapping whose chain only the legacy tables hold, nft in use:
    the missing chain names the legacy tables, and its fix is not --repair (which
    leaves such a chain, above) but --iptables legacy or removing the legacy copy."""
    _plugin_add(host_ns, "ctrA", "legacy")
    argv = ["check", "--netns", host_ns, "--iptables", "nft", "--container", "ctrA", *MAPPING]
    doc = json.loads(run([*argv, "-o", "json"]).stdout)
    (problem,) = doc["problems"]
    assert problem["kind"] == "missing-chain"
    assert "it is in the legacy tables" in problem["detail"]
    assert problem["fix"] is None  # prose: in `why`, never a command that would not run
    assert "--iptables legacy" in problem["why"]
    done = run(argv)
    assert done.returncode == 1
    assert "--repair" not in done.stdout.replace("--repair leaves it", "")


def test_node_check_offers_no_repair_that_repair_refuses(host_ns, tmp_path):
    """Whole-node check, nft in use, the plugin's state in the legacy tables (ctrA's
    chain and CNI-HOSTPORT-DNAT there), and a cached ctrB whose chain is in neither:
    check --repair writes nothing for ctrB (a copy in nft would be a split brain), so
    check says the same of ctrB's missing chain as of ctrA's: it names where the
    plugin's state is, and its fix is prose, not `check --repair` (before: ctrB's
    problem offered `portmapctl check --repair`, which then refused it)."""
    _plugin_add(host_ns, "ctrA", "legacy")
    for cid, address in (("ctrA", "10.88.0.5/16"), ("ctrB", "10.88.0.6/16")):
        conf = rp.plugin_conf("mynet", [address], PORTS)
        rp.write_cni_cache(tmp_path, "mynet", cid, "eth0", conf, PORTS, [address])
    argv = ["check", "--netns", host_ns, "--iptables", "nft", "--family", "4",
            "--cni-cache-dir", str(tmp_path)]  # fmt: skip
    doc = json.loads(run([*argv, "-o", "json"]).stdout)
    missing = {p["container_id"]: p for p in doc["problems"] if p["kind"] == "missing-chain"}
    assert set(missing) == {"ctrA", "ctrB"}
    assert "CNI-HOSTPORT-DNAT is in the legacy tables" in missing["ctrB"]["detail"]
    for problem in missing.values():
        assert problem["fix"] is None, problem
        assert "--iptables legacy" in problem["why"]
    done = run(argv)
    assert done.returncode == 1
    assert "check --repair" not in done.stdout

    done = run([*argv, "--repair"])
    assert done.returncode == 1
    assert "could not repair IPv4 mynet/ctrB" in done.stderr
    assert "CNI-HOSTPORT-DNAT is in the legacy tables" in done.stderr
    assert "CNI-HOSTPORT-DNAT" not in rp.save(host_ns, 4, "nft")


def _gc_says(args, said):
    """gc --yes --min-age 0 -o json: exit 0, `said` on stderr and in its JSON warnings;
    its document."""
    done = run(["gc", *args, "--yes", "--min-age", "0", "-o", "json"])
    assert done.returncode == 0, done.stderr
    assert said in done.stderr, done.stderr
    doc = json.loads(done.stdout)
    assert any(said.removeprefix("portmapctl: warning: ") in w for w in doc["warnings"])
    return doc


@pytest.mark.parametrize(("plugin_mode", "ours"), [("nft", "legacy"), ("legacy", "nft")])
def test_list_and_gc_say_when_the_plugins_chains_are_all_in_the_other_flavour(
    host_ns, tmp_path, plugin_mode, ours
):
    """The plugin wrote in one flavour, portmapctl reads the other (a DaemonSet image
    whose `iptables` is not the node's): list found no chains and gc removed nothing,
    exit 0 and not a word why (before); now each says where the plugin's chains are
    and which option reads them, and still changes nothing. Said only when the
    flavour read holds none of the plugin's chains."""
    _plugin_add(host_ns, "ctrA", plugin_mode)
    cache = tmp_path / "cni"
    (cache / "results").mkdir(parents=True)
    node = ["--netns", host_ns, "--family", "4", "--cni-cache-dir", str(cache)]
    args = [*node, "--iptables", ours]
    said = (
        f"portmapctl: warning: no portmap chains in the iptables-{ours} tables read, but the"
        f" iptables-{plugin_mode} ones hold CNI-HOSTPORT-DNAT: if the plugin runs"
        f" iptables-{plugin_mode}, run with --iptables {plugin_mode}"
    )
    before = rp.nat_rules(rp.save(host_ns, 4, plugin_mode))
    listed = run(["list", *args])
    assert listed.returncode == 0 and listed.stdout.strip() == "no portmap chains found"
    assert said in listed.stderr, listed.stderr
    assert _gc_says([*args, "--all"], said)["removed"] == []
    assert rp.nat_rules(rp.save(host_ns, 4, plugin_mode)) == before
    # The flavour the plugin uses: nothing to say.
    listed = run(["list", *node, "--iptables", plugin_mode])
    assert listed.returncode == 0 and "no portmap chains in" not in listed.stderr, listed.stderr


def _half_moved(host_ns: str, cache, ours: str, other: str) -> None:
    """A node half moved between flavours: ctrA's chain in `ours`, ctrB's (live, cached)
    and ctrC's (dead: no cache entry) in `other`, each DNATing in the kernel."""
    for cid, address, port, mode in (("ctrA", "10.88.0.5/16", 8080, ours),
                                     ("ctrB", "10.88.0.6/16", 8081, other),
                                     ("ctrC", "10.88.0.7/16", 8082, other)):  # fmt: skip
        ports = [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]
        conf = rp.plugin_conf("mynet", [address], ports)
        rp.run_plugin("ADD", host_ns, cid, conf, mode=mode, check=True)
        if cid != "ctrC":
            rp.write_cni_cache(cache, "mynet", cid, "eth0", conf, ports, [address])


@pytest.mark.parametrize(("other", "ours"), [("legacy", "nft"), ("nft", "legacy")])
def test_list_and_gc_say_when_some_containers_chains_are_in_the_other_flavour(
    host_ns, tmp_path, other, ours
):
    """A node half moved between flavours: ctrA's chain in the flavour read, ctrB's
    (live) and ctrC's (dead: no cache entry) in the other, both DNATing in the kernel.
    list showed ctrA alone and gc removed nothing of ctrC, exit 0 and not a word
    (before: only a flavour with none of the plugin's chains was warned of); each now
    names the other flavour's entered chains on stderr (gc's JSON warnings too), and
    still changes nothing there."""
    cache = tmp_path / "cni"
    _half_moved(host_ns, cache, ours, other)
    args = ["--netns", host_ns, "--family", "4", "--cni-cache-dir", str(cache), "--iptables", ours]
    said = (
        f"portmapctl: warning: the iptables-{other} tables also hold 2 container chains"
        f" entered from CNI-HOSTPORT-DNAT (IPv4 {chain_name('mynet', 'ctrB')}, IPv4"
        f" {chain_name('mynet', 'ctrC')}), which this run (iptables-{ours}) does not read"
    )
    before = rp.nat_rules(rp.save(host_ns, 4, other))
    listed = run(["list", *args])
    assert listed.returncode == 0, listed.stderr
    assert "ctrA" in listed.stdout and "ctrB" not in listed.stdout
    assert said in listed.stderr, listed.stderr
    _gc_says(args, said)
    assert rp.nat_rules(rp.save(host_ns, 4, other)) == before
    # Once the other flavour's containers are gone (its shared chains left, as the
    # plugin's DEL leaves them), nothing to say.
    gone = run(["gc", "--netns", host_ns, "--family", "4", "--cni-cache-dir", str(tmp_path / "none"),
                "--iptables", other, "--all", "--yes", "--min-age", "0"])  # fmt: skip
    assert gone.returncode == 0, gone.stderr
    assert ":CNI-HOSTPORT-DNAT" in rp.save(host_ns, 4, other)
    listed = run(["list", *args])
    assert listed.returncode == 0 and "iptables-" + other not in listed.stderr, listed.stderr


@pytest.mark.parametrize(("other", "ours"), [("legacy", "nft"), ("nft", "legacy")])
def test_the_other_flavours_entered_chains_are_counted_one_and_two(host_ns, tmp_path, other, ours):
    """The warning of the test above counted its chains `N container chain(s)`: with
    ctrC's chain gone by the plugin's DEL, list and gc said `1 container chain(s)` of
    ctrB's. Now `2 container chains`, then `1 container chain`."""
    cache = tmp_path / "cni"
    _half_moved(host_ns, cache, ours, other)
    args = ["--netns", host_ns, "--family", "4", "--cni-cache-dir", str(cache), "--iptables", ours]
    listed = run(["list", *args])
    assert listed.returncode == 0, listed.stderr
    assert f"the iptables-{other} tables also hold 2 container chains entered" in listed.stderr
    ports = [{"hostPort": 8082, "containerPort": 80, "protocol": "tcp"}]
    conf = rp.plugin_conf("mynet", ["10.88.0.7/16"], ports)
    rp.run_plugin("DEL", host_ns, "ctrC", conf, mode=other, check=True)
    said = (
        f"portmapctl: warning: the iptables-{other} tables also hold 1 container chain"
        f" entered from CNI-HOSTPORT-DNAT (IPv4 {chain_name('mynet', 'ctrB')}), which this"
        f" run (iptables-{ours}) does not read"
    )
    listed = run(["list", *args])
    assert listed.returncode == 0, listed.stderr
    assert said in listed.stderr, listed.stderr
    _gc_says(args, said)


@pytest.mark.parametrize(("other", "ours"), [("legacy", "nft"), ("nft", "legacy")])
def test_check_names_the_other_flavours_chains_the_cache_does_not(host_ns, tmp_path, other, ours):
    """The half-moved node of the test above, checked: ctrB (cached) gets its problem
    saying where its chain is; ctrC (no cache entry) was not said at all, and with an
    empty cache check called the node healthy, 'no portmap chains', exit 0 and not a
    word (QA). Now a note names the chains only the other flavour holds that the cache
    does not, and how to see and remove them; nothing changes there."""
    cache = tmp_path / "cni"
    (cache / "results").mkdir(parents=True)
    _half_moved(host_ns, cache, ours, other)
    args = ["--netns", host_ns, "--family", "4", "--iptables", ours]
    note = (
        f"the iptables-{other} tables hold 1 container chain that this check"
        f" (iptables-{ours}) does not judge and the CNI cache does not name"
        f" ({chain_name('mynet', 'ctrC')}): see them with `portmapctl list --iptables {other}`"
    )
    before = rp.nat_rules(rp.save(host_ns, 4, other))
    done = run(["check", *args, "--cni-cache-dir", str(cache)])
    assert done.returncode == 1, done.stdout + done.stderr  # ctrB's chain is not here
    assert note in " ".join(done.stderr.split()), done.stderr
    assert chain_name("mynet", "ctrB") not in done.stderr
    # No cache entry at all: every chain there is named (ctrA's, here, is stale).
    empty = tmp_path / "empty"
    (empty / "results").mkdir(parents=True)
    done = run(["check", *args, "--cni-cache-dir", str(empty)])
    assert done.returncode == 1, done.stdout + done.stderr
    names = sorted(chain_name("mynet", c) for c in ("ctrB", "ctrC"))
    said = " ".join(done.stderr.split())
    assert "hold 2 container chains" in said and ", ".join(names) in said, done.stderr
    assert rp.nat_rules(rp.save(host_ns, 4, other)) == before


def test_checks_word_of_the_other_flavours_chains_is_one_line_as_list_and_gc_say_it(
    host_ns, tmp_path
):
    """The note of the test above, on an 80-column terminal: check printed it as a
    remark for people, word-wrapped over four lines with no `portmapctl:` prefix, and
    said nothing of it under -q, where list and gc (test above) say the same fact as one
    `warning:` line, -q included (a cron job's `check -q` lost it). It is now a
    warning: one line on stderr, said once, -q included, also by check --repair; stdout
    keeps the result alone (-o json a document)."""
    from test_gc import _on_terminal

    cache = tmp_path / "cni"
    _half_moved(host_ns, cache, "nft", "legacy")
    args = ["--netns", host_ns, "--family", "4", "--iptables", "nft", "--cni-cache-dir", str(cache)]
    said = (
        "portmapctl: warning: the iptables-legacy tables hold 1 container chain that this"
        " check (iptables-nft) does not judge and the CNI cache does not name"
        f" ({chain_name('mynet', 'ctrC')}): see them with `portmapctl list --iptables legacy`"
    )
    for extra in ([], ["-q"], ["-o", "json"], ["--repair"]):
        code, terminal, stdout = _on_terminal(["check", *args, *extra], b"n", env={"COLUMNS": "80"})
        assert code == 1, terminal  # ctrB's chain is in the other flavour
        lines = [line.rstrip("\r") for line in terminal.splitlines()]
        assert lines.count(said) == 1, (extra, terminal)
        assert "container chain" not in stdout
        if extra == ["-o", "json"]:
            json.loads(stdout)


@pytest.mark.parametrize(("other", "ours"), [("legacy", "nft"), ("nft", "legacy")])
def test_add_warns_of_a_port_the_other_flavours_plugin_chain_maps(host_ns, tmp_path, other, ours):
    """A split-brain node: the plugin's ADD of ctrA on 8080 went to one flavour, then
    add of ctrB on 8080 (and 8081) to the other. Both nat tables hook PREROUTING at
    -100, so which of the two gets 8080's traffic is the kernel's hook order. add said
    nothing, exit 0, and list showed both ok (only check's split-brain said anything);
    now add warns on stderr (and in its JSON) that 8080, not 8081, is mapped in the
    other flavour too, naming ctrA, and still writes ctrB's rules, exit 0."""
    _plugin_add(host_ns, "ctrA", other)
    _cache_ctr_a(tmp_path / "cni")
    theirs = rp.nat_rules(rp.save(host_ns, 4, other))
    ctr_b = ["--network", "mynet", "--container", "ctrB", "--ip", "10.88.0.6/16",
             "-p", "8080:80", "-p", "8081:81", "--family", "4"]  # fmt: skip
    args = ["--netns", host_ns, "--iptables", ours, "--cni-cache-dir", str(tmp_path / "cni")]
    done = run(["add", *args, *ctr_b])
    assert done.returncode == 0, done.stderr
    assert done.stderr == (
        f"portmapctl: warning: IPv4 tcp/8080 is mapped in the iptables-{other} tables too,"
        f" to mynet/ctrA ({chain_name('mynet', 'ctrA')}): this mapping is contested (the"
        " kernel's hook order decides which of them gets the traffic); `portmapctl check`"
        " reports the split brain\n"
    )
    assert chain_name("mynet", "ctrB") in rp.save(host_ns, 4, ours)
    assert rp.nat_rules(rp.save(host_ns, 4, other)) == theirs
    # Said again by the add that changes nothing (the port is still contested), and in
    # the JSON document's warnings.
    done = run(["add", *args, *ctr_b, "-o", "json"])
    assert done.returncode == 0, done.stderr
    warnings = json.loads(done.stdout)["warnings"]
    assert [w.split(" is mapped in ")[0] for w in warnings] == ["IPv4 tcp/8080"], warnings
    assert "to mynet/ctrA" in warnings[0]


def test_add_says_nothing_of_the_other_flavour_when_it_cannot_read_it(host_ns, tmp_path):
    """Legacy tables holding the plugin's chain on 8080 but no iptables-legacy to read
    them (a DaemonSet image with iptables-nft alone): add of another container on 8080
    in nft writes its rules, exit 0, and says nothing (no error, no guess). With no
    legacy table at all, add reads none (a legacy read would create it)."""
    args = ["add", "--netns", host_ns, "--cni-cache-dir", str(tmp_path / "cni"), "--network",
            "mynet", "--ip", "10.88.0.6/16", "--family", "4"]  # fmt: skip
    _cache_ctr_a(tmp_path / "cni")
    done = run([*args, "--container", "ctrN", "-p", "8090:80"])
    assert done.returncode == 0 and done.stderr == "", done.stderr
    legacy_nat = rp._run(["ip", "netns", "exec", host_ns, "cat", "/proc/net/ip_tables_names"])
    assert "nat" not in legacy_nat.stdout.split(), legacy_nat.stdout
    _plugin_add(host_ns, "ctrA", "legacy")
    hidden = [os.path.realpath("/usr/sbin/iptables-legacy")]  # every -legacy tool is this one
    done = run([*args, "--container", "ctrB", "-p", "8080:80"], hide=hidden)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    assert chain_name("mynet", "ctrB") in rp.save(host_ns, 4, "nft")


def _cache_ctr_a(cache) -> None:
    """ctrA's cache entry (what _plugin_add makes), so that add has a cache to glance at."""
    conf = rp.plugin_conf("mynet", ["10.88.0.5/16"], PORTS)
    rp.write_cni_cache(cache, "mynet", "ctrA", "eth0", conf, PORTS, ["10.88.0.5/16"])


def _plugin_add_at(host_ns, container_id, mode, address):
    conf = rp.plugin_conf("mynet", [address], PORTS)
    rp.run_plugin("ADD", host_ns, container_id, conf, mode=mode, check=True)


@pytest.mark.parametrize(("other", "ours"), [("legacy", "nft"), ("nft", "legacy")])
def test_list_and_check_mark_a_port_the_other_flavours_plugin_chain_maps(
    host_ns, tmp_path, other, ours
):
    """A split-brain node: the real plugin's ADD of ctrA on 8080 under one iptables
    flavour, of ctrB on 8080 under the other. Both nat tables hook PREROUTING at -100:
    the kernel's hook order decides which container gets the port. list showed both
    rows ok and check said nothing of the port; now list (either flavour) marks its
    row contested, and check reports it as a port contested by the other backend is
    (kind contested, naming the other container and its chain)."""
    _plugin_add_at(host_ns, "ctrA", other, "10.88.0.5/16")
    _plugin_add_at(host_ns, "ctrB", ours, "10.88.0.6/16")
    cache = tmp_path / "cni"
    for ctr, address in (("ctrA", "10.88.0.5/16"), ("ctrB", "10.88.0.6/16")):
        conf = rp.plugin_conf("mynet", [address], PORTS)
        rp.write_cni_cache(cache, "mynet", ctr, "eth0", conf, PORTS, [address])
    args = ["--netns", host_ns, "--cni-cache-dir", str(cache), "-o", "json"]
    for flavour, mine, theirs in ((ours, "ctrB", "ctrA"), (other, "ctrA", "ctrB")):
        done = run(["list", *args, "--iptables", flavour])
        assert done.returncode == 0, done.stderr
        rows = json.loads(done.stdout)["mappings"]
        assert [(r["container_id"], r["host_port"], r["status"]) for r in rows] == [
            (mine, 8080, ["contested"])
        ], rows
        done = run(["check", *args, "--iptables", flavour])
        problems = json.loads(done.stdout)["problems"]
        contested = [p for p in problems if p["kind"] == "contested"]
        assert [(p["container_id"], p["chain"]) for p in contested] == [
            (mine, chain_name("mynet", mine))
        ], problems
        assert (
            f"tcp/8080 is also mapped in iptables-{'legacy' if flavour == 'nft' else 'nft'}"
            f" to mynet/{theirs} ({chain_name('mynet', theirs)})" in contested[0]["detail"]
        ), contested
        assert done.returncode == 1, done.stderr


def test_the_same_container_in_both_flavours_is_not_contested(host_ns, tmp_path):
    """ctrA's chain in both flavours (the plugin's ADD under each): its own copy DNATs
    to it alike, so neither row is contested; check reports the split brain, as before,
    and no contested problem."""
    _plugin_add(host_ns, "ctrA", "legacy")
    _plugin_add(host_ns, "ctrA", "nft")
    _cache_ctr_a(tmp_path / "cni")
    args = ["--netns", host_ns, "--cni-cache-dir", str(tmp_path / "cni"), "-o", "json"]
    for flavour in ("nft", "legacy"):
        done = run(["list", *args, "--iptables", flavour])
        assert done.returncode == 0, done.stderr
        rows = json.loads(done.stdout)["mappings"]
        assert [(r["container_id"], r["status"]) for r in rows] == [("ctrA", ["ok"])], rows
        done = run(["check", *args, "--iptables", flavour])
        kinds = [p["kind"] for p in json.loads(done.stdout)["problems"]]
        assert "split-brain" in kinds and "contested" not in kinds, kinds


@pytest.mark.parametrize("command", [["add", "--dry-run"], ["add"], ["check", "--repair"]])
def test_a_busy_xtables_lock_never_hides_the_legacy_copy_from_a_one_mapping_write(
    host_ns, tmp_path, command
):
    """ctrA's chain is in the legacy tables only, nft in use (--iptables nft), and
    another iptables holds the xtables lock past the wait (a private XTABLES_LOCKFILE
    held by `flock`). The guard asked `iptables-legacy -t nat -S CHAIN`, which waits
    for the lock and fails (exit 4), and took that for "not there": add wrote ctrA a
    copy in the nft tables (exit 0), and check --repair of its mapping too ("repaired"),
    the split brain each refuses with the lock free. A listing that cannot tell is
    answered by the save (iptables-legacy-save takes no lock), as ops/chain_place.py
    asks: refused the same, nothing written."""
    _plugin_add(host_ns, "ctrA", "legacy")
    name = chain_name("mynet", "ctrA")
    before = rp.nat_rules(rp.save(host_ns, 4, "nft"))
    lock = tmp_path / "xtables.lock"
    lock.touch()
    env = {"XTABLES_LOCKFILE": str(lock), "PORTMAPCTL_XTABLES_WAIT": "1"}
    held = subprocess.Popen(["flock", str(lock), "sleep", "120"])
    try:
        busy = subprocess.run(["ip", "netns", "exec", host_ns, "iptables-legacy", "-w", "1",
                               "-t", "nat", "-S", name], capture_output=True, text=True,
                              env={**os.environ, **env})  # fmt: skip
        assert busy.returncode == 4, busy.stderr  # (the lock is held: the fault is real)
        argv = [*command, "--netns", host_ns, "--iptables", "nft", "--container", "ctrA"]
        done = run([*argv, *MAPPING], env=env)
    finally:
        held.kill()
        held.wait()
    if command[0] == "add":
        assert_error(done, 3, name, "in the legacy tables", "--iptables legacy")
    else:
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"could not repair IPv4 mynet/ctrA ({name}): its chain is in the legacy" in (
            done.stderr
        ), done.stderr
    assert rp.nat_rules(rp.save(host_ns, 4, "nft")) == before
    assert name in rp.save(host_ns, 4, "legacy")
