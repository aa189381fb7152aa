"""The short container ID that list and check print, given back to add or check.

The plugin names a chain after the whole ID (SHA-512 of network + ID): the 12 characters
the tables show name another chain. Taken as given, `check` called a healthy
container's chain missing and told the operator to `--repair`, and `add` (or that
repair) wrote rules for a container nobody runs, shadowed by the real one. Refused now,
exit 2, with the whole ID to give; the whole ID works as before.
"""

from __future__ import annotations

import realplugin as rp
from pmctl import assert_error, run

FULL = "3f2a9c1e5b7d" + "0" * 51 + "1"
SHORT = FULL[:12]
IPS = ["10.88.0.5/16"]
PORTS = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]


def _mapping(container: str) -> list[str]:
    return ["--network", "podman", "--container", container, "--ip", IPS[0], "-p", "8080:80"]


def test_the_short_id_printed_is_refused_by_add_and_check(host_ns, tmp_path):
    conf = rp.plugin_conf("podman", IPS, PORTS)
    rp.run_plugin("ADD", host_ns, FULL, conf, check=True)
    rp.write_cni_cache(tmp_path, "podman", FULL, "eth0", conf, PORTS, IPS)
    common = ["--netns", host_ns, "--cni-cache-dir", str(tmp_path), "--family", "4"]
    listed = run(["list", *common])
    assert f"podman   {SHORT}  v4" in listed.stdout, listed.stdout
    before = rp.save(host_ns)

    for argv in (
        ["add", *_mapping(SHORT)],
        ["check", *_mapping(SHORT)],
        ["check", "--repair", *_mapping(SHORT)],
        ["add", *_mapping(SHORT[:8]), "--dry-run"],
    ):
        assert_error(run([*argv, *common]), 2, f"--container {SHORT[: len(argv[4])]}", FULL)
    assert rp.strip_save_comments(rp.save(host_ns)) == rp.strip_save_comments(before)

    whole = run(["check", *_mapping(FULL), *common])
    assert whole.returncode == 0, whole.stderr
    again = run(["add", *_mapping(FULL), *common, "-o", "json"])
    assert again.returncode == 0, again.stderr
    assert '"changed": false' in again.stdout


def test_an_id_that_is_not_a_prefix_of_a_cached_one_is_added(host_ns, tmp_path):
    """A new container beside a cached one is added as before (no false refusal for an
    ID that merely shares the network, nor for one the cache has exactly)."""
    conf = rp.plugin_conf("podman", IPS, PORTS)
    rp.write_cni_cache(tmp_path, "podman", FULL, "eth0", conf, PORTS, IPS)
    common = ["--netns", host_ns, "--cni-cache-dir", str(tmp_path), "--family", "4"]
    other = run(["add", *_mapping("c9d8e7f6a5b4"), *common, "--dry-run", "-q"])
    assert other.returncode == 0, other.stderr
    exact = run(["add", *_mapping(FULL), *common, "--dry-run", "-q"])
    assert exact.returncode == 0, exact.stderr


ALLOC = "0b4e5e4f-7a3c-4f5e-9d0a-1c2b3d4e5f60"  # a Nomad allocation ID
NOMAD_IPS = ["172.26.64.2/20"]
NOMAD_PORTS = [{"hostPort": 8080, "containerPort": 8080, "protocol": "tcp", "hostIP": "192.0.2.10"}]


def test_nomads_short_allocation_id_is_refused_by_add_and_check(host_ns, tmp_path, iptables_mode):
    """Nomad's short allocation ID (`nomad alloc status 0b4e5e4f`) is the UUID's first
    group: a '-' follows it in the entry's name, which was taken for the end of another
    ID, so add wrote a chain for container `0b4e5e4f` and check called the allocation's
    healthy chain missing and offered --repair. Refused now as a podman short ID is."""
    conf = rp.plugin_conf("nomad", NOMAD_IPS, NOMAD_PORTS)
    rp.run_plugin("ADD", host_ns, ALLOC, conf, mode=iptables_mode, check=True)
    rp.write_cni_cache(tmp_path, "nomad", ALLOC, "eth0", conf, NOMAD_PORTS, NOMAD_IPS)
    common = ["--netns", host_ns, "--cni-cache-dir", str(tmp_path), "--family", "4"]
    common += ["--iptables", iptables_mode]
    before = rp.save(host_ns, mode=iptables_mode)

    def mapping(container: str) -> list[str]:
        return ["--network", "nomad", "--container", container, "--ip", NOMAD_IPS[0],
                "-p", "192.0.2.10:8080:8080"]  # fmt: skip

    short = ALLOC[:8]
    for given, argv in (
        (short, ["add", *mapping(short)]),
        (short, ["add", *mapping(short), "--dry-run"]),
        (short, ["check", *mapping(short)]),
        (short, ["check", "--repair", *mapping(short)]),
        (ALLOC[:13], ["add", *mapping(ALLOC[:13]), "--dry-run"]),  # up to the next dash
    ):
        assert_error(run([*argv, *common]), 2, f"--container {given} ", ALLOC)
    after = rp.save(host_ns, mode=iptables_mode)
    assert rp.strip_save_comments(after) == rp.strip_save_comments(before)

    whole = run(["check", *mapping(ALLOC), *common])
    assert whole.returncode == 0, whole.stdout + whole.stderr
    again = run(["add", *mapping(ALLOC), *common, "-o", "json"])
    assert again.returncode == 0, again.stderr
    assert '"changed": false' in again.stdout


def test_a_hand_named_id_that_a_cached_non_uuid_begins_with_dash_is_its_own(host_ns, tmp_path):
    """`web01` beside a cached `web01-blue`, `0b4e5e4f` beside a cached `0b4e5e4f-2`: a
    dash ends the ID asked about there unless the cached ID is a UUID."""
    for cached in ("0b4e5e4f-2", "0b4e5e4f-7a3c"):
        conf = rp.plugin_conf("nomad", NOMAD_IPS, NOMAD_PORTS)
        rp.write_cni_cache(tmp_path, "nomad", cached, "eth0", conf, NOMAD_PORTS, NOMAD_IPS)
    common = ["--netns", host_ns, "--cni-cache-dir", str(tmp_path), "--family", "4"]
    done = run(["add", "--network", "nomad", "--container", ALLOC[:8], "--ip", NOMAD_IPS[0],
                "-p", "8080:8080", *common, "--dry-run", "-q"])  # fmt: skip
    assert done.returncode == 0, done.stderr
