"""host-local's leases as check --repair reads them (cni/leases.py): where the cached
config's IPAM keeps them, and what a lease file says. The file layout is host-local's
own (plugins/ipam/host-local/backend/disk: `DATADIR/NETWORK/ADDRESS` holding
`ID\\r\\nIFNAME`, the ID alone before v0.7), as the real plugin leaves it in
tests/interop/test_repair_during_del.py."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import stat

import pytest
from run_dir_helpers import opened_while

from portmapctl.cni import cache
from portmapctl.cni.leases import (
    Lease,
    LeasedNetwork,
    LeaseState,
    given_back,
    holders,
    host_local_data_dir,
    lease_of,
    leased_networks,
)

# Debian's podman 4.3 writes this conflist (/etc/cni/net.d/87-podman-bridge.conflist).
PODMAN = {
    "cniVersion": "0.4.0",
    "name": "podman",
    "plugins": [
        {"type": "bridge", "bridge": "cni-podman0", "isGateway": True, "ipMasq": True,
         "hairpinMode": True,
         "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}],
                  "ranges": [[{"subnet": "10.88.0.0/16", "gateway": "10.88.0.1"}]]}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "firewall"},
        {"type": "tuning"},
    ],
}  # fmt: skip


def test_podmans_conflist_keeps_its_leases_where_host_local_does_by_default(monkeypatch):
    monkeypatch.delenv("PORTMAPCTL_HOST_LOCAL_DIR")
    assert host_local_data_dir(PODMAN) == "/var/lib/cni/networks"
    monkeypatch.setenv("PORTMAPCTL_HOST_LOCAL_DIR", "/host/var/lib/cni/networks")
    assert host_local_data_dir(PODMAN) == "/host/var/lib/cni/networks"


@pytest.mark.parametrize(
    ("ipam", "found"),
    [
        ({"type": "host-local", "dataDir": "/srv/ipam"}, "/srv/ipam"),
        ({"type": "host-local", "dataDir": "relative/ipam"}, None),  # (not where it is)
        ({"type": "dhcp"}, None),
        ({"type": "whereabouts"}, None),
        ({"type": "calico-ipam"}, None),
    ],
)
def test_only_host_local_says_where_its_leases_are(ipam, found):
    conflist = json.loads(json.dumps(PODMAN))
    conflist["plugins"][0]["ipam"] = ipam
    assert host_local_data_dir(conflist) == found
    single = dict(conflist["plugins"][0], name="podman", cniVersion="0.4.0")
    assert host_local_data_dir(single) == found  # (a .conf: one plugin's config)


def test_keys_are_read_as_go_reads_them():
    """Go's encoding/json takes a key in any case, the later spelling winning; and
    libcni hands the plugin its entry re-marshalled from a Go map, keys sorted, so of
    two spellings the later one sorted, whatever the file's order."""
    conflist = json.loads(json.dumps(PODMAN))
    conflist["plugins"][0]["IPAM"] = dict(conflist["plugins"][0].pop("ipam"), datadir="/srv/x")
    assert host_local_data_dir(conflist) == "/srv/x"
    conflist["plugins"][0]["IPAM"]["dataDir"] = "/srv/exact"  # (later in the file)
    assert host_local_data_dir(conflist) == "/srv/x"  # (later sorted: "dataDir" < "datadir")
    conflist["plugins"][0]["IPAM"].pop("datadir")
    assert host_local_data_dir(conflist) == "/srv/exact"


# k3s's flannel conflist (its embedded CNI config), as libcni caches it.
K3S_FLANNEL = {
    "name": "cbr0",
    "cniVersion": "1.0.0",
    "plugins": [
        {"type": "flannel",
         "delegate": {"hairpinMode": True, "forceAddress": True, "isDefaultGateway": True}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "bandwidth", "capabilities": {"bandwidth": True}},
    ],
}  # fmt: skip


def test_flannel_hands_its_bridge_host_local(monkeypatch):
    """flannel's getDelegateIPAM: its own `ipam`, of type host-local where it names
    none; flannel's own `dataDir` holds its scratch configs, not leases."""
    monkeypatch.delenv("PORTMAPCTL_HOST_LOCAL_DIR")
    assert host_local_data_dir(K3S_FLANNEL) == "/var/lib/cni/networks"
    conflist = json.loads(json.dumps(K3S_FLANNEL))
    conflist["plugins"][0]["dataDir"] = "/var/lib/cni/flannel"
    assert host_local_data_dir(conflist) == "/var/lib/cni/networks"
    conflist["plugins"][0]["ipam"] = {"dataDir": "/srv/flannel-ipam"}
    assert host_local_data_dir(conflist) == "/srv/flannel-ipam"
    conflist["plugins"][0]["ipam"] = {"type": "whereabouts"}
    assert host_local_data_dir(conflist) is None


def test_a_config_without_ipam_says_nothing():
    assert host_local_data_dir({"name": "n", "plugins": [{"type": "portmap"}]}) is None
    assert host_local_data_dir({"type": "macvlan", "master": "eth0"}) is None
    assert host_local_data_dir(None) is None


def test_what_a_lease_file_says(tmp_path):
    net = tmp_path / "podman"
    net.mkdir()
    (net / "10.88.0.5").write_bytes(b"ctr1\r\neth0")  # host-local >= v0.7
    (net / "10.88.0.6").write_bytes(b"ctr1")  # older host-local: the ID alone
    (net / "10.88.0.7").write_bytes(b"other\r\neth0")
    (net / "10.88.0.8").write_bytes(b"")  # created, not written yet
    (net / "fd00:88::5").write_bytes(b"ctr1\r\neth0")
    os.mkfifo(net / "10.88.0.9")  # (something odd: read without waiting)
    assert lease_of(str(net), "10.88.0.5", "ctr1") == Lease(LeaseState.HELD, f"{net}/10.88.0.5")
    assert lease_of(str(net), "10.88.0.6", "ctr1").state is LeaseState.HELD
    assert lease_of(str(net), "10.88.0.7", "ctr1") == Lease(
        LeaseState.TAKEN, f"{net}/10.88.0.7", "other"
    )
    assert lease_of(str(net), "10.88.0.8", "ctr1").state is LeaseState.UNKNOWN
    assert lease_of(str(net), "10.88.0.9", "ctr1").state is LeaseState.UNKNOWN
    assert lease_of(str(net), "fd00:88::5", "ctr1").state is LeaseState.HELD
    assert lease_of(str(net), "10.88.0.4", "ctr1") == Lease(
        LeaseState.GIVEN_BACK, f"{net}/10.88.0.4"
    )
    # No data directory (another mount namespace, a node never on host-local): nothing.
    assert lease_of(str(tmp_path / "absent"), "10.88.0.4", "ctr1").state is LeaseState.UNKNOWN


def test_a_device_at_a_lease_is_not_opened(tmp_path):
    """Looked at, not opened (opening a device can act): the kernel's inotify says."""
    net = tmp_path / "podman"
    net.mkdir()
    try:
        os.mknod(net / "10.88.0.5", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("mknod of a device needs CAP_MKNOD (the unit tier runs without)")
    found = {}
    assert not opened_while(
        net / "10.88.0.5", lambda: found.update(x=lease_of(str(net), "10.88.0.5", "c"))
    )
    assert found["x"].state is LeaseState.UNKNOWN


def test_a_lease_symlink_is_not_followed(tmp_path):
    net = tmp_path / "podman"
    net.mkdir()
    (tmp_path / "elsewhere").write_bytes(b"ctr1\r\neth0")
    (net / "10.88.0.5").symlink_to(tmp_path / "elsewhere")
    assert lease_of(str(net), "10.88.0.5", "ctr1").state is LeaseState.UNKNOWN


def _entry(tmp_path, conflist: dict) -> str:
    results = tmp_path / "results"
    results.mkdir(exist_ok=True)
    path = results / "podman-ctr1-eth0"
    result = {
        "cniVersion": "0.4.0",
        "interfaces": [{"name": "eth0", "sandbox": "/proc/self/ns/net"}],
        "ips": [{"version": "4", "interface": 0, "address": "10.88.0.5/16"}],
    }
    path.write_text(json.dumps({
        "kind": "cniCacheV1", "containerId": "ctr1",
        "config": base64.b64encode(json.dumps(conflist).encode()).decode(),
        "ifName": "eth0", "networkName": "podman", "netns": "/proc/self/ns/net",
        "capabilityArgs": {"portMappings": [
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]},
        "result": result,
    }))  # fmt: skip
    return str(path)


def test_a_cached_entry_knows_its_networks_lease_directory(tmp_path):
    conflist = json.loads(json.dumps(PODMAN))
    conflist["plugins"][0]["ipam"]["dataDir"] = "/srv/ipam"
    assert cache.read_attachment(_entry(tmp_path, conflist)).leases == "/srv/ipam/podman"
    conflist["plugins"][0]["ipam"] = {"type": "dhcp"}
    assert cache.read_attachment(_entry(tmp_path, conflist)).leases is None


def test_an_address_of_a_leased_network_no_container_holds_is_given_back(tmp_path):
    """flush-udp --stale-only's and list --conntrack's sign of a removed container's
    address (its DEL gave the lease back): only an address of a cached mapping's
    host-local subnet whose lease file is gone; a lease held by anyone, a subnet of no
    cached entry, or no lease directory to read tells nothing."""
    conflist = json.loads(json.dumps(PODMAN))
    conflist["plugins"][0]["ipam"]["dataDir"] = str(tmp_path / "ipam")
    net = tmp_path / "ipam" / "podman"
    net.mkdir(parents=True)
    (net / "10.88.0.5").write_bytes(b"ctr1\r\neth0")
    (net / "10.88.0.6").write_bytes(b"other\r\neth0")
    networks = leased_networks([cache.read_attachment(_entry(tmp_path, conflist))])
    assert [(str(n.subnet), n.leases) for n in networks] == [("10.88.0.0/16", str(net))]
    assert given_back(networks, "10.88.0.7")
    assert not given_back(networks, "10.88.0.5") and not given_back(networks, "10.88.0.6")
    assert not given_back(networks, "10.89.0.7") and not given_back(networks, "fd00::7")
    assert not given_back(networks, "not an address")
    net.rename(tmp_path / "ipam" / "moved")
    assert not given_back(networks, "10.88.0.7")
    assert leased_networks(None) == ()


def test_host_local_hands_out_its_ranges_not_the_whole_subnet(tmp_path):
    """host-local leases only its ranges' addresses (rangeStart-rangeEnd, default the
    subnet's .1 to its last, an IPv4 broadcast not; the gateway, default .1, never),
    of every range set, the older top-level `subnet` one first (as /usr/lib/cni's
    host-local allocates: `subnet` 10.7.0.0/30 gives 10.7.0.2, then none). An address
    of the subnet outside them has no lease because no one ever had it: not given back
    (flush-udp --stale-only deleted another tool's flows to a static address there).
    Ranges that cannot be read tell nothing of the network's addresses."""
    from portmapctl.cni.leases import host_local_ranges

    conflist = json.loads(json.dumps(PODMAN))
    ipam = conflist["plugins"][0]["ipam"]
    ipam["dataDir"] = str(tmp_path / "ipam")
    ipam["ranges"] = [[{"subnet": "10.88.0.0/16", "rangeStart": "10.88.1.2",
                        "rangeEnd": "10.88.1.200"},
                       {"subnet": "10.87.0.0/24"}],
                      [{"subnet": "fd00:88::/126"}]]  # fmt: skip
    ipam.update(subnet="10.7.0.0/30", gateway="10.7.0.2")
    found = host_local_ranges(conflist)
    assert [(str(r.subnet), str(r.first), str(r.last), str(r.gateway)) for r in found] == [
        ("10.7.0.0/30", "10.7.0.1", "10.7.0.2", "10.7.0.2"),
        ("10.88.0.0/16", "10.88.1.2", "10.88.1.200", "10.88.0.1"),
        ("10.87.0.0/24", "10.87.0.1", "10.87.0.254", "10.87.0.1"),
        ("fd00:88::/126", "fd00:88::1", "fd00:88::3", "fd00:88::1"),
    ]
    (tmp_path / "ipam" / "podman").mkdir(parents=True)
    attachment = cache.read_attachment(_entry(tmp_path, conflist))
    assert attachment.ranges == found
    networks = leased_networks([attachment])
    back = {"10.7.0.1", "10.88.1.2", "10.88.1.200", "10.87.0.2", "10.87.0.254", "fd00:88::3"}
    never = {"10.7.0.2", "10.88.0.7", "10.88.1.1", "10.88.1.201", "10.88.0.1", "10.87.0.0",
             "10.87.0.1", "10.87.0.255", "fd00:88::1", "10.89.0.7"}  # fmt: skip
    assert {a for a in back | never if given_back(networks, a)} == back
    for bad in ({"rangeStart": "10.99.0.1"}, {"rangeEnd": 7}, {"subnet": "x"}):
        ipam["ranges"] = [[dict({"subnet": "10.88.0.0/16"}, **bad)]]
        assert host_local_ranges(conflist) is None
        unread = leased_networks([cache.read_attachment(_entry(tmp_path, conflist))])
        assert [n.known for n in unread] == [False] and not given_back(unread, "10.88.1.7")
    del ipam["ranges"], ipam["subnet"], ipam["gateway"]  # (flannel's: its subnet.env's)
    networks = leased_networks([cache.read_attachment(_entry(tmp_path, conflist))])
    assert given_back(networks, "10.88.0.7") and not given_back(networks, "10.88.0.1")


def test_an_address_is_given_back_only_where_no_network_handing_it_out_leases_it(tmp_path):
    """Networks whose subnets overlap (two conflists, each host-local's own lease
    directory) each lease an address on their own: one with no lease for it says
    nothing while another leases it to a live container (flush-udp --stale-only deleted
    that container's flows as a removed one's), nor while another's directory cannot be
    read or its ranges are not known (in doubt). Given back where none leases it."""
    wide, narrow = tmp_path / "ipam-a" / "podman", tmp_path / "ipam-b" / "other"
    wide.mkdir(parents=True)
    narrow.mkdir(parents=True)
    (narrow / "10.88.0.6").write_bytes(b"live\r\neth0")
    a = LeasedNetwork(ipaddress.ip_network("10.88.0.0/16"), str(wide))
    b = LeasedNetwork(ipaddress.ip_network("10.88.0.0/24"), str(narrow))
    assert given_back([a], "10.88.0.6") and not given_back([a, b], "10.88.0.6")
    assert not given_back([b, a], "10.88.0.6")
    assert given_back([a, b], "10.88.0.7") and given_back([a, b], "10.88.1.7")
    gone = LeasedNetwork(b.subnet, str(tmp_path / "ipam-c" / "other"))  # (not there)
    assert not given_back([a, gone], "10.88.0.7") and given_back([a, gone], "10.88.1.7")
    unknown = LeasedNetwork(b.subnet, str(narrow), known=False)
    assert not given_back([a, unknown], "10.88.0.7") and given_back([a, unknown], "10.88.1.7")
    assert holders([a, unknown], "10.88.0.6") == ()


HOST_LOCAL = "/usr/lib/cni/host-local"


def _handed_out_by_host_local(tmp_path, ipam: dict) -> set:
    """Every address the real host-local hands out under `ipam`, asked until it has
    none left (one container per call; each range set gives one address a call, so
    the sets of a config hold as many addresses each)."""
    import subprocess

    conf = {"cniVersion": "0.4.0", "name": "leasenet",
            "ipam": dict(ipam, dataDir=str(tmp_path / "ipam"))}  # fmt: skip
    found: set = set()
    for n in range(64):
        env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": f"c{n}", "CNI_NETNS": "/x",
               "CNI_IFNAME": "eth0", "CNI_PATH": os.path.dirname(HOST_LOCAL)}  # fmt: skip
        done = subprocess.run([HOST_LOCAL], input=json.dumps(conf), env=env,
                              capture_output=True, text=True, check=False)  # fmt: skip
        if done.returncode != 0:
            assert "no IP addresses available" in done.stdout, done.stdout
            return found
        found |= {ip["address"].split("/")[0] for ip in json.loads(done.stdout)["ips"]}
    raise AssertionError("host-local kept handing out addresses")


@pytest.mark.parametrize(
    "ipam",
    [
        # The gateway outside the subnet (host-local takes it: .1 is handed out).
        {"ranges": [[{"subnet": "10.11.0.0/29", "gateway": "10.99.0.1"}]]},
        {"ranges": [[{"subnet": "10.11.0.0/29", "gateway": "10.11.0.6"}]],
         "routes": [{"dst": "0.0.0.0/0"}]},
        {"ranges": [[{"subnet": "10.11.0.0/28", "rangeEnd": "10.11.0.6"}],
                    [{"subnet": "fd00:11::/125", "rangeStart": "fd00:11::3"}]]},
        {"subnet": "10.12.0.0/29", "rangeStart": "10.12.0.3", "gateway": "10.12.0.4",
         "ranges": [[{"subnet": "fd00:12::/125", "rangeStart": "fd00:12::5"}]]},
    ],
)  # fmt: skip
def test_the_ranges_read_are_what_the_real_host_local_hands_out(tmp_path, ipam):
    """host_local_ranges against /usr/lib/cni/host-local itself: every address of the
    ranges' subnets it hands out, and no other, is one a range read `hands_out` (a
    gateway outside its subnet made the whole network's ranges unreadable, None: its
    removed containers' flows were no longer judged by their leases)."""
    from portmapctl.cni.leases import host_local_ranges

    if not os.access(HOST_LOCAL, os.X_OK):
        pytest.skip(f"no {HOST_LOCAL} (Debian package containernetworking-plugins)")
    ranges = host_local_ranges({"type": "bridge", "ipam": dict(ipam, type="host-local")})
    assert ranges is not None
    read = {str(a) for r in ranges for a in r.subnet if r.hands_out(a)}
    assert read == _handed_out_by_host_local(tmp_path, dict(ipam, type="host-local"))


def _cached(tmp_path, conflist: dict, container_id: str, address: str) -> cache.Attachment:
    """A cached entry of `conflist`'s network for `container_id` at `address` (/16)."""
    network = conflist["name"]
    path = tmp_path / "results" / f"{network}-{container_id}-eth0"
    path.parent.mkdir(exist_ok=True)
    result = {"cniVersion": "0.4.0", "interfaces": [{"name": "eth0", "sandbox": "/x"}],
              "ips": [{"version": "4", "interface": 0, "address": f"{address}/16"}]}  # fmt: skip
    path.write_text(json.dumps({
        "kind": "cniCacheV1", "containerId": container_id,
        "config": base64.b64encode(json.dumps(conflist).encode()).decode(),
        "ifName": "eth0", "networkName": network, "netns": "/proc/self/ns/net",
        "capabilityArgs": {"portMappings": [
            {"hostPort": 7100, "containerPort": 7100, "protocol": "udp"}]},
        "result": result,
    }))  # fmt: skip
    return cache.read_attachment(str(path))


def test_a_lease_in_any_lease_directory_of_the_node_keeps_the_address(tmp_path, monkeypatch):
    """A host-local network no cached mapping is on (its config has no portmap, or its
    entry is cached elsewhere: a Multus delegate's) may lease an address of the plugin's
    networks' subnets too (podman's `podman` and a user network both on 10.88.0.0/16).
    Its lease was never read: the address was given back for the plugin's network
    alone, and flush-udp --stale-only deleted its live container's flows as a removed
    one's. Every lease directory under the data directories in use (host-local's
    default, every one a cached config names) counts, held there: no address given
    back, and no holder told of (its holder's asks not known)."""
    default = tmp_path / "default"
    monkeypatch.setenv("PORTMAPCTL_HOST_LOCAL_DIR", str(default))
    podman = json.loads(json.dumps(PODMAN))
    podman["plugins"][0]["ipam"]["dataDir"] = str(tmp_path / "ipam-a")
    user = {"cniVersion": "0.4.0", "name": "user", "plugins": [
        {"type": "bridge", "bridge": "cni-user", "ipam": {
            "type": "host-local", "dataDir": str(tmp_path / "ipam-b"),
            "ranges": [[{"subnet": "10.88.0.0/16", "rangeStart": "10.88.0.20"}]]}}]}  # fmt: skip
    leases = {"ipam-a/podman/10.88.0.5": "web", "ipam-a/podman/10.88.0.30": "web",
              "ipam-b/user/10.88.0.20": "db", "default/sec/10.88.0.30": "pod",
              "default/sec/fd00::30": "pod"}  # fmt: skip
    for path, holder in leases.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(holder.encode() + b"\r\neth0")
    attachments = [_cached(tmp_path, podman, "web", "10.88.0.5"),
                   _cached(tmp_path, user, "db", "10.88.0.20")]  # fmt: skip
    assert attachments[1].mapping is None and attachments[1].data_dir == str(tmp_path / "ipam-b")
    networks = leased_networks(attachments)
    assert given_back(networks, "10.88.0.7")
    assert not given_back(networks, "10.88.0.20") and not given_back(networks, "10.88.0.30")
    assert not given_back(networks, "fd00::30") and not given_back(networks, "10.89.0.20")
    web = holders(networks, "10.88.0.30")
    assert len(web) == 2 and web[0] is not None and web[1] is None, web


def test_a_lease_directory_that_cannot_be_listed_keeps_every_address(tmp_path, monkeypatch):
    """A data directory that cannot be listed may hold any network's lease of any
    address: none is given back while it stands so (in doubt: kept). One that is not
    there holds none."""
    podman = json.loads(json.dumps(PODMAN))
    podman["plugins"][0]["ipam"]["dataDir"] = str(tmp_path / "ipam")
    (tmp_path / "ipam" / "podman").mkdir(parents=True)
    attachments = [_cached(tmp_path, podman, "web", "10.88.0.5")]
    monkeypatch.setenv("PORTMAPCTL_HOST_LOCAL_DIR", str(tmp_path / "nowhere"))
    assert given_back(leased_networks(attachments), "10.88.0.7")
    loop = tmp_path / "loop"
    loop.symlink_to(loop)  # (ELOOP: even root cannot list it)
    monkeypatch.setenv("PORTMAPCTL_HOST_LOCAL_DIR", str(loop))
    assert not given_back(leased_networks(attachments), "10.88.0.7")
    shut = tmp_path / "shut"
    (shut / "sec").mkdir(parents=True)
    monkeypatch.setenv("PORTMAPCTL_HOST_LOCAL_DIR", str(shut))
    assert given_back(leased_networks(attachments), "10.88.0.7")
    for unread in (shut, shut / "sec"):
        unread.chmod(0)
        try:
            if os.access(unread, os.R_OK):
                pytest.skip(
                    "this root may read any directory (CAP_DAC_OVERRIDE): the unit tier has none"
                )
            assert not given_back(leased_networks(attachments), "10.88.0.7"), unread
        finally:
            unread.chmod(0o755)
