"""A container whose own CNI cache entry cannot be read, given without a backend (no
--backend, no config key): `add` and a one-mapping `check --repair` went on as if the
cache said nothing, into iptables (the plugin's default without the key) with not a
word, though that entry may say `"backend": "nftables"`. Where the node's rules decide
which backend the plugin keeps it in, they are followed; where they do not, nothing is
written (exit 3, one line). Another container's unreadable entry (its name begins as
this one's) stops nothing: a warning, in add's JSON `warnings` too.

Real plugins (Debian's 1.1.1, upstream v1.9.1) make the node, in a fresh namespace per
test; portmapctl runs as a process with --netns.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Iterator, List, Tuple

import pmctl
import pytest
import realplugin as rp
import upstream

from portmapctl.iptables.chains import chain_name

pytestmark = pytest.mark.netns

V191 = "v1.9.1"
_pm = rp.port_mapping
IP = "10.88.0.5/16"
CHAIN = chain_name("mynet", "web1")


@pytest.fixture
def node() -> Iterator[str]:
    rp.require(rp.plugin_available())
    rp.require(upstream.available())
    name = rp.create_netns("pmt-unread")
    try:
        yield name
    finally:
        rp.delete_netns(name)


def _conf(backend: str | None = "nftables") -> dict:
    return upstream.nft_conf("mynet", [IP], [_pm(8080, 80)], backend=backend)


def _made(node: str, state: str) -> None:
    """web1 (mynet, 10.88.0.5, 8080:80) as `state` leaves it: nowhere; its chain in
    iptables (Debian's 1.1.1); its rules in nftables (v1.9.1 given "nftables"); both;
    its chain in iptables beside the plugin's table flushed (its v1.9.1 rules gone)."""
    if state in ("nftables", "both", "flushed"):
        upstream.run(V191, "ADD", node, "web1", _conf(), check=True)
    if state in ("iptables", "both", "flushed"):
        rp.run_plugin("ADD", node, "web1", _conf(None), check=True)
    if state == "flushed":
        upstream.nft(node, "flush", "table", "ip", "cni_hostport")


def _broken(cache: Path, name: str = "mynet-web1-eth0", body: str = "{not json") -> Path:
    (cache / "results").mkdir(parents=True, exist_ok=True)
    path = cache / "results" / name
    path.write_text(body)
    return path


def _state(node: str) -> Tuple[str, str]:
    """IPv4's iptables rules (no header, no counters) and the whole nftables ruleset."""
    save = rp.save(node, 4)
    rules = "\n".join(line for line in save.splitlines() if line.startswith("-"))
    return rules, upstream.nft(node, "list", "ruleset").stdout


def _args(node: str, cache: Path, *extra: str) -> List[str]:
    return ["--network", "mynet", "--container", "web1", "--ip", IP, "-p", "8080:80",
            "--netns", node, "--cni-cache-dir", str(cache), *extra]  # fmt: skip


IN_DOUBT = ("mynet/web1: its CNI cache entry", "cannot be read", "cannot be told",
            "nothing is written", "--backend iptables or --backend nftables")  # fmt: skip


@pytest.mark.parametrize("state", ["nowhere", "both", "flushed"])
def test_add_whose_own_entry_cannot_be_read_writes_nothing_where_the_rules_do_not_tell(
    node: str, tmp_path: Path, state: str
) -> None:
    """add printed `added CNI-DN-...` (nowhere: a new iptables chain; both, flushed:
    `unchanged`, iptables taken for its backend), exit 0, nothing on stderr, while the
    entry it could not read may say "nftables". It writes nothing now, the dry run as
    the real run: one line, exit 3. --backend says which, and goes."""
    _made(node, state)
    _broken(tmp_path)
    before = _state(node)
    for dry in (["--dry-run"], [], ["-o", "json"]):
        done = pmctl.run(["add", *_args(node, tmp_path, *dry)])
        pmctl.assert_error(done, 3, *IN_DOUBT)
        assert _state(node) == before, dry
    if state == "nowhere":
        done = pmctl.run(["add", *_args(node, tmp_path, "--backend", "iptables")])
        assert done.returncode == 0 and done.stdout.startswith(f"added {CHAIN}"), done.stderr


@pytest.mark.parametrize("state", ["iptables", "nftables"])
def test_add_whose_own_entry_cannot_be_read_follows_its_rules(
    node: str, tmp_path: Path, state: str
) -> None:
    """Where its rules are in one backend alone, the plugin keeps it there whatever the
    entry says (a key "nftables" ignored by a plugin before v1.6 leaves its chain in
    iptables and nothing in nftables; "iptables", or no key, nothing in nftables): add
    goes there, a note says why, and finds it in place."""
    _made(node, state)
    _broken(tmp_path)
    before = _state(node)
    for dry in (["--dry-run"], []):
        done = pmctl.run(["add", *_args(node, tmp_path, *dry)])
        assert done.returncode == 0, done.stderr
        where = CHAIN if state == "iptables" else "nftables rules"
        assert done.stdout.startswith(f"unchanged: {where} (mynet/web1)"), done.stdout
        assert f"it goes to {state}" in done.stderr, done.stderr
        assert _state(node) == before, dry
    if state == "iptables":
        rp.run_plugin("CHECK", node, "web1", _conf(None), family=4, check=True)
    else:
        upstream.run(V191, "CHECK", node, "web1", _conf(), check=True)


@pytest.mark.parametrize("state", ["nowhere", "both", "flushed"])
def test_check_repair_of_one_mapping_whose_own_entry_cannot_be_read_writes_nothing(
    node: str, tmp_path: Path, state: str
) -> None:
    """`check --repair` of web1 repaired it in iptables (nowhere: a whole chain written;
    exit 0), its entry unread. It stops now (exit 3, one line), writing nothing; a
    check says why in a warning, and its problems (where it is judged without a key,
    iptables) name no fix."""
    _made(node, state)
    _broken(tmp_path)
    before = _state(node)
    done = pmctl.run(["check", "--repair", *_args(node, tmp_path)])
    pmctl.assert_error(done, 3, *IN_DOUBT)
    assert _state(node) == before
    done = pmctl.run(["check", *_args(node, tmp_path, "-o", "json")])
    assert "cannot be read" in done.stderr and "cannot be told" in done.stderr, done.stderr
    problems = json.loads(done.stdout)["problems"]
    assert all(p["fix"] is None for p in problems), problems
    # Judged where the plugin goes without a key (iptables): its chain there is whole
    # unless nothing of it is anywhere.
    assert bool(problems) == (state == "nowhere") and done.returncode == len(problems[:1])


def test_check_repair_of_one_mapping_whose_own_entry_cannot_be_read_follows_its_chain(
    node: str, tmp_path: Path
) -> None:
    """Its chain in iptables and no rule of it in nftables: the plugin keeps it in
    iptables whatever the entry says, so its lost entry rule is repaired there."""
    _made(node, "iptables")
    _broken(tmp_path)
    rule = next(line for line in rp.save(node, 4).splitlines()
                if line.startswith("-A CNI-HOSTPORT-DNAT") and CHAIN in line)  # fmt: skip
    rp.iptables(node, ["-t", "nat", "-D", *shlex.split(rule)[1:]])
    done = pmctl.run(["check", "--repair", *_args(node, tmp_path)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "checked in iptables" in done.stderr, done.stderr
    rp.run_plugin("CHECK", node, "web1", _conf(None), family=4, check=True)


def _other_entry(cache: Path) -> Path:
    """web1-2's entry (its name begins as web1's does: mynet-web1-), whole JSON that
    names it, its config not base64: it cannot be read, and is not web1's."""
    body = {"kind": "cniCacheV1", "containerId": "web1-2", "networkName": "mynet",
            "ifName": "eth0", "config": "%not base64%", "result": {}}  # fmt: skip
    return _broken(cache, "mynet-web1-2-eth0", json.dumps(body))


def test_another_containers_unreadable_entry_is_a_warning_and_stops_nothing(
    node: str, tmp_path: Path
) -> None:
    """web1-2's unreadable entry, which add of web1 reads (its name begins with web1's),
    was skipped without a word; it names another container, so it stops nothing: add
    goes on, and says it on stderr and in its JSON `warnings`, as list does."""
    _other_entry(tmp_path)
    done = pmctl.run(["add", *_args(node, tmp_path, "--dry-run", "-o", "json")])
    assert done.returncode == 0, done.stderr
    said = [line.removeprefix("portmapctl: warning: ") for line in done.stderr.splitlines()]
    assert len(said) == 1 and said[0].startswith("skipped a CNI cache entry"), said
    assert "mynet-web1-2-eth0" in said[0] and "not valid base64" in said[0], said
    assert json.loads(done.stdout)["warnings"] == said
    done = pmctl.run(["add", *_args(node, tmp_path)])
    assert done.returncode == 0 and done.stdout.startswith(f"added {CHAIN}"), done.stderr
    assert "skipped a CNI cache entry" in done.stderr
    listed = pmctl.run(["list", "--netns", node, "--cni-cache-dir", str(tmp_path)])
    assert said[0] in listed.stderr
    rp.run_plugin("CHECK", node, "web1", _conf(None), family=4, check=True)


def test_an_unreadable_entry_whose_name_may_be_this_containers_is_in_doubt(
    node: str, tmp_path: Path
) -> None:
    """The same name with nothing readable in it: `mynet-web1-2-eth0` is web1-2's entry
    of eth0, or web1's of an interface `2-eth0`; which cannot be told, so web1's
    backend cannot be either: nothing written, as for its own."""
    _broken(tmp_path, "mynet-web1-2-eth0")
    done = pmctl.run(["add", *_args(node, tmp_path)])
    pmctl.assert_error(done, 3, *IN_DOUBT)
    assert CHAIN not in rp.save(node, 4)
