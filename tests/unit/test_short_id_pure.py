"""cni/entries.longer_id: which cached ID a given --container is the short form of."""

from __future__ import annotations

import json

from portmapctl.cni.entries import longer_id

FULL = "3f2a9c1e5b7d" + "0" * 51 + "1"


def _entry(cache, network: str, container: str, ifname: str = "eth0") -> None:
    results = cache / "results"
    results.mkdir(parents=True, exist_ok=True)
    body = {"kind": "cniCacheV1", "containerId": container, "networkName": network}
    (results / f"{network}-{container}-{ifname}").write_text(json.dumps(body))


def test_a_prefix_of_a_cached_id_names_the_whole_one(tmp_path):
    _entry(tmp_path, "podman", FULL, ifname="net-1")  # an ifname with a '-' too
    assert longer_id(str(tmp_path), "podman", FULL[:12]) == FULL
    assert longer_id([str(tmp_path / "none"), str(tmp_path)], "podman", FULL[:8]) == FULL
    # Shorter than 8: a hand-named hex ID (`cafe`) a cached one begins with is no short form.
    assert longer_id(str(tmp_path), "podman", FULL[:7]) is None


def test_no_short_form_where_the_id_is_cached_or_ends_at_a_dash(tmp_path):
    _entry(tmp_path, "podman", FULL)
    _entry(tmp_path, "podman", "job-web-1")
    assert longer_id(str(tmp_path), "podman", FULL) is None  # the whole ID
    assert longer_id(str(tmp_path), "other", FULL[:12]) is None  # another network
    assert longer_id(str(tmp_path), "podman", "job") is None  # "job-..." ends at a '-'
    assert longer_id(str(tmp_path), "podman", "c9d8e7f6a5b4") is None
    assert longer_id(str(tmp_path / "missing"), "podman", FULL[:12]) is None


def test_a_hand_named_container_is_no_short_form_of_another(tmp_path):
    """IDs a runtime does not make (hand-named, as in the README's tour) are containers
    of their own: `web` beside `webserver-01`, `c1` beside `c10` (printed whole);
    a hex prefix of a cached ID longer than the tables print is still a short form."""
    _entry(tmp_path / "a", "podman", "webserver-01")
    _entry(tmp_path / "a", "podman", "c10")
    assert longer_id(str(tmp_path / "a"), "podman", "web") is None
    assert longer_id(str(tmp_path / "a"), "podman", "c1") is None
    _entry(tmp_path / "b", "podman", "c1d2e3f4a5b6c7")
    assert longer_id(str(tmp_path / "b"), "podman", "c1d2e3f4") == "c1d2e3f4a5b6c7"


def test_another_networks_entry_is_not_a_longer_id(tmp_path):
    """libcni names an entry NETWORK-ID-IFNAME: a network `podman-deadbeefcafe-net`'s
    entries start as `--network podman --container deadbeefca...` would. Their
    containers are on another network, and their IDs do not start so: not a short form
    (before faa4d7b: add and check refused it as short for that container)."""
    _entry(tmp_path, "podman-deadbeefcafe-net", FULL)
    assert longer_id(str(tmp_path), "podman", "deadbeefca") is None
    assert longer_id(str(tmp_path), "podman", "deadbeefcafe") is None
    (tmp_path / "results" / f"podman-deadbeefcafe-net-{FULL}-eth0").write_text("{")
    assert longer_id(str(tmp_path), "podman", "deadbeefca") is None  # unreadable: by its name
    # A network named on as the short form goes, whose container's ID starts so too.
    _entry(tmp_path, "podman-3f2a9c1e5b7d", FULL)
    assert longer_id(str(tmp_path), "podman", FULL[:8]) is None
