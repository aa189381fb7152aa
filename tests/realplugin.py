"""Run the real CNI ``portmap`` plugin inside throwaway network namespaces.

Used by the integration tests and by ``tests/fixtures/capture.py``. Everything here runs
processes with argument lists (never through a shell) and needs root; callers decide
whether to skip with :func:`netns_available` and :func:`plugin_available`.
"""

from __future__ import annotations

import atexit
import base64
import functools
import ipaddress
import json
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

Mode = Literal["nft", "legacy"]
Family = Literal[4, 6]

PLUGIN = "/usr/lib/cni/portmap"
CNI_PATH = "/usr/lib/cni"
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# The plugin ignores the sandbox path in prevResult; a fixed one keeps fixtures stable.
SANDBOX = "/var/run/netns/ctr"

_TOOLS: dict[int, tuple[str, ...]] = {
    4: ("iptables", "iptables-save", "iptables-restore"),
    6: ("ip6tables", "ip6tables-save", "ip6tables-restore"),
}


def _ip() -> str:
    return shutil.which("ip", path=os.environ.get("PATH", "") + ":" + SYSTEM_PATH) or "ip"


def _run(args: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    return subprocess.run(list(args), **kwargs)


# --- namespaces -------------------------------------------------------------------------


def create_netns(prefix: str = "pmt") -> str:
    """Create a uniquely named network namespace with ``lo`` up and return its name."""
    name = f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"
    _run([_ip(), "netns", "add", name], check=True)
    try:
        _run([_ip(), "-n", name, "link", "set", "lo", "up"], check=True)
    except subprocess.CalledProcessError:
        delete_netns(name)
        raise
    return name


def delete_netns(name: str) -> None:
    """Delete a namespace made by :func:`create_netns`; a missing one is not an error."""
    proc = _run([_ip(), "netns", "delete", name])
    if proc.returncode != 0 and Path("/run/netns", name).exists():
        raise RuntimeError(f"ip netns delete {name} failed: {proc.stderr.strip()}")


_container_ns: str | None = None


def container_netns() -> str:
    """Path of one shared container namespace for ``CNI_NETNS``, created on first use.

    The portmap plugin never enters it, but CNI requires the variable on ADD and CHECK.
    """
    global _container_ns
    if _container_ns is None:
        _container_ns = create_netns("pmt-ctr")
        atexit.register(delete_netns, _container_ns)
    return f"/run/netns/{_container_ns}"


def hold_addresses(netns: str, ips: Sequence[str]) -> None:
    """Put the first address of each family of `ips` on `lo` of the namespace at
    `netns` (each as a host address: nothing else becomes local there), as a real ADD
    leaves the container's namespace: `check --repair` makes no chain for a cached
    container whose namespace is there without its address (a DEL under way). One
    already there is no error (the namespace of container_netns is shared)."""
    first: dict[int, str] = {}
    for ip in ips:
        first.setdefault(ipaddress.ip_interface(ip).version, ip)
    hold_many_addresses(netns, list(first.values()))


def hold_many_addresses(netns: str, ips: Sequence[str]) -> None:
    """hold_addresses of every address of `ips`, in one `ip -batch` (benchmarks: one
    `ip` process for 5,000 containers, not 5,000)."""
    lines = []
    for ip in ips:
        address = ipaddress.ip_interface(ip)
        nodad = " nodad" if address.version == 6 else ""
        lines.append(f"addr add {address.ip}/{address.max_prefixlen} dev lo{nodad}\n")
    if not lines:
        return
    # -force: go on past an address already there (and say so, which is no error here).
    done = _run([_ip(), "-n", Path(netns).name, "-force", "-batch", "-"], input="".join(lines))
    errors = [
        line
        for line in done.stderr.splitlines()
        if line.strip()
        and "exists" not in line
        and "assigned" not in line
        and not line.startswith("Command failed")
    ]
    if errors:
        raise RuntimeError(f"ip addr add in {netns}: {errors}")


# --- iptables flavour -------------------------------------------------------------------


@functools.cache
def bin_dir(mode: Mode, family: Family | None = None) -> str:
    """A folder whose ``iptables*``/``ip6tables*`` run the ``-nft`` or ``-legacy`` tools.

    Put first on ``PATH`` it decides which flavour the plugin (which runs plain
    ``iptables``) uses. With ``family`` the other family's tools are shadowed by
    ``false``, so go-iptables finds them unusable even with ``/usr/sbin`` later on
    ``PATH``: Debian's 1.1.1 CHECK otherwise checks both families and fails for a
    single-family container.
    """
    if mode not in ("nft", "legacy"):
        raise ValueError(f"unknown iptables mode {mode!r}")
    if family not in (None, 4, 6):
        raise ValueError(f"unknown family {family!r}")
    folder = Path(tempfile.mkdtemp(prefix=f"pmt-bin-{mode}-{family or 'all'}-"))
    atexit.register(shutil.rmtree, folder, True)
    false = shutil.which("false", path=SYSTEM_PATH) or "/bin/false"
    for fam, tools in _TOOLS.items():
        for tool in tools:
            target = _flavoured(tool, mode) if family in (None, fam) else false
            (folder / tool).symlink_to(target)
    return str(folder)


def _flavoured(tool: str, mode: Mode) -> str:
    # iptables-save -> /usr/sbin/iptables-nft-save: the flavour goes after the family name.
    base, _, action = tool.partition("-")
    return f"/usr/sbin/{base}-{mode}" + (f"-{action}" if action else "")


def tool_path(tool: str, mode: Mode) -> str:
    """Absolute path of ``tool`` (e.g. ``"ip6tables-save"``) in the given flavour."""
    return str(Path(bin_dir(mode), tool))


# --- plugin config and invocation -------------------------------------------------------


def family_of(address: str) -> Family:
    """4 or 6 for an address with or without prefix."""
    return 6 if ":" in address else 4


def _version_lt_1(cni_version: str) -> bool:
    return int(cni_version.split(".")[0]) < 1


def prev_result(ips: Sequence[str], cni_version: str = "0.4.0") -> dict[str, Any]:
    """The ``prevResult`` an interface plugin would hand to portmap (interface ``eth0``)."""
    ip_entries = []
    for address in ips:
        entry: dict[str, Any] = {}
        if _version_lt_1(cni_version):
            entry["version"] = str(family_of(address))
        entry.update({"address": address, "interface": 0})
        ip_entries.append(entry)
    return {
        "cniVersion": cni_version,
        "interfaces": [{"name": "eth0", "sandbox": SANDBOX}],
        "ips": ip_entries,
    }


def plugin_conf(
    network: str,
    ips: Sequence[str],
    port_mappings: Sequence[dict[str, Any]],
    *,
    snat: bool | None = None,
    mark_masq_bit: int | None = None,
    external_setmark_chain: str | None = None,
    conditions_v4: Sequence[str] | None = None,
    conditions_v6: Sequence[str] | None = None,
    cni_version: str = "0.4.0",
) -> dict[str, Any]:
    """The plugin's stdin config: options only where given, as libcni would pass them.

    ``ips`` are addresses with prefix (``"10.88.0.5/16"``); ``port_mappings`` are CNI
    ``portMappings`` entries (``hostPort``, ``containerPort``, ``protocol``, ``hostIP``).
    """
    conf: dict[str, Any] = {"cniVersion": cni_version, "name": network, "type": "portmap"}
    options = {
        "snat": snat,
        "markMasqBit": mark_masq_bit,
        "externalSetMarkChain": external_setmark_chain,
        "conditionsV4": list(conditions_v4) if conditions_v4 is not None else None,
        "conditionsV6": list(conditions_v6) if conditions_v6 is not None else None,
    }
    conf.update({key: value for key, value in options.items() if value is not None})
    conf["runtimeConfig"] = {"portMappings": [dict(pm) for pm in port_mappings]}
    conf["prevResult"] = prev_result(ips, cni_version)
    return conf


def run_plugin(
    command: Literal["ADD", "CHECK", "DEL"],
    host_ns: str,
    container_id: str,
    conf: dict[str, Any],
    *,
    mode: Mode = "nft",
    family: Family | None = None,
    ifname: str = "eth0",
    container_ns: str | None = None,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``/usr/lib/cni/portmap COMMAND`` in ``host_ns`` with ``conf`` on stdin.

    ``family`` limits the iptables tools the plugin sees (use it for CHECK, see
    :func:`bin_dir`). ``container_ns`` is a path for ``CNI_NETNS``; by default a shared
    throwaway namespace. With ``check`` a non-zero exit raises ``CalledProcessError``.
    """
    env = {
        "PATH": f"{bin_dir(mode, family)}:{SYSTEM_PATH}",
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": container_ns or container_netns(),
        "CNI_IFNAME": ifname,
        "CNI_PATH": CNI_PATH,
    }
    return _run(
        [_ip(), "netns", "exec", host_ns, PLUGIN],
        input=json.dumps(conf),
        env=env,
        check=check,
    )


def run_any_plugin(
    host_ns: str,
    command: str,
    container_id: str,
    container_ns: str,
    conf: dict[str, Any],
    binary: str | os.PathLike[str] | None = None,
    mode: Mode = "nft",
) -> subprocess.CompletedProcess[str]:
    """Run Debian's plugin of `conf`'s type (`/usr/lib/cni/TYPE`: bridge, host-local
    through it, firewall, loopback, portmap), or `binary`, in ``host_ns``, as libcni
    runs each plugin of a network list, with `mode`'s iptables first on PATH;
    `container_ns` is CNI_NETNS."""
    env = {
        "PATH": f"{bin_dir(mode)}:{SYSTEM_PATH}",
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": container_ns,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": CNI_PATH,
    }
    return _run(
        [_ip(), "netns", "exec", host_ns, str(binary or f"{CNI_PATH}/{conf['type']}")],
        input=json.dumps(conf),
        env=env,
        check=False,
    )


def run_list(
    command: Literal["ADD", "DEL"],
    host_ns: str,
    container_id: str,
    container_ns: str,
    conflist: dict[str, Any],
    ports: Sequence[dict[str, Any]] = (),
    *,
    mode: Mode = "nft",
    cache: str | os.PathLike[str] | None = None,
) -> Any:
    """libcni's ADD or DEL of a network list: its plugins (Debian's) in order, each
    given the one before's result (DEL: last first, each the ADD's), `ports` to those
    with the portMappings capability. With `cache`, ADD writes the entry after the
    whole list (``cniCacheV1``, the conflist's bytes) and DEL removes it after. ADD
    returns the result (as libcni caches it)."""
    name = conflist["name"]
    entry = Path(cache, "results", f"{name}-{container_id}-eth0") if cache else None
    cached = json.loads(entry.read_text())["result"] if command == "DEL" and entry else None
    plugins = conflist["plugins"] if command == "ADD" else conflist["plugins"][::-1]
    result = None
    for plugin in plugins:
        conf = {**plugin, "cniVersion": conflist["cniVersion"], "name": name}
        if (plugin.get("capabilities") or {}).get("portMappings"):
            conf["runtimeConfig"] = {"portMappings": [dict(p) for p in ports]}
        if (result or cached) is not None:
            conf["prevResult"] = result or cached
        done = run_any_plugin(host_ns, command, container_id, container_ns, conf, mode=mode)
        assert done.returncode == 0, f"{command} {plugin['type']}: {done.stdout} {done.stderr}"
        if command == "ADD":
            result = json.loads(done.stdout)
    if entry is None:
        return result
    if command == "DEL":
        entry.unlink()
        return None
    config = json.dumps(conflist).encode()
    _write_entry(entry.parents[1], name, container_id, "eth0", config, container_ns, ports, result)
    return result


def narrow_conf(conf: dict[str, Any], family: Family) -> dict[str, Any]:
    """``conf`` with ``prevResult.ips`` limited to one family."""
    narrowed = json.loads(json.dumps(conf))
    ips = narrowed["prevResult"]["ips"]
    narrowed["prevResult"]["ips"] = [ip for ip in ips if family_of(ip["address"]) == family]
    return narrowed


def run_check(
    host_ns: str,
    container_id: str,
    conf: dict[str, Any],
    *,
    mode: Mode = "nft",
    ifname: str = "eth0",
) -> list[subprocess.CompletedProcess[str]]:
    """The plugin's CHECK, once per family the container has; one result per family.

    Debian's 1.1.1 checks every container address against every usable family, so a
    dual-stack container fails any single CHECK. Each run here sees one family's
    address and only that family's iptables.
    """
    families = sorted({family_of(ip["address"]) for ip in conf["prevResult"]["ips"]})
    return [
        run_plugin(
            "CHECK",
            host_ns,
            container_id,
            narrow_conf(conf, family),
            mode=mode,
            family=family,
            ifname=ifname,
        )
        for family in families
    ]


def iptables(
    host_ns: str, args: Sequence[str], *, family: Family = 4, mode: Mode = "nft"
) -> subprocess.CompletedProcess[str]:
    """Run ``iptables ARGS`` (``ip6tables`` for family 6) in ``host_ns``; raise on failure."""
    tool = tool_path("iptables" if family == 4 else "ip6tables", mode)
    return _run([_ip(), "netns", "exec", host_ns, tool, "-w", *args], check=True)


def save(host_ns: str, family: Family = 4, mode: Mode = "nft") -> str:
    """``iptables-save -t nat`` (``ip6tables-save`` for family 6) output in ``host_ns``."""
    tool = tool_path("iptables-save" if family == 4 else "ip6tables-save", mode)
    return _run([_ip(), "netns", "exec", host_ns, tool, "-t", "nat"], check=True).stdout


def strip_save_comments(text: str) -> str:
    """Drop the ``# Generated by``/``# Completed on`` lines (they carry a timestamp)."""
    return "".join(line for line in text.splitlines(True) if not line.startswith("# "))


def nat_rules(text: str) -> list[str]:
    """The chain declarations of non-builtin chains and the ``-A`` rules of a save."""
    return [
        line
        for line in text.splitlines()
        if line.startswith("-A ") or (line.startswith(":") and " - " in line)
    ]


def udp_flows(ns: str) -> set[tuple[int, str]]:
    """(destination port, DNAT destination) of the namespace's UDP conntrack entries."""
    out = subprocess.run([_ip(), "netns", "exec", ns, "conntrack", "-L", "-p", "udp"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    found = set()
    for line in out.splitlines():
        # The original direction's dport= comes first, the reply's src= second.
        dports = [w.split("=", 1)[1] for w in line.split() if w.startswith("dport=")]
        srcs = [w.split("=", 1)[1] for w in line.split() if w.startswith("src=")]
        found.add((int(dports[0]), srcs[1]))
    return found


# --- libcni cache -----------------------------------------------------------------------


def _go_json(value: Any) -> str:
    # encoding/json: compact, map keys sorted (structs keep field order, handled by caller).
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def cut_short(results: Path, network: str, container_id: str, ifname: str) -> Callable[[], None]:
    """Make the entry `results/NETWORK-CONTAINERID-IFNAME` unreadable, as a torn write
    leaves it (not valid JSON); the function returned puts it back, with its
    modification time (its ADD order, as the commands read it)."""
    entry = results / f"{network}-{container_id}-{ifname}"
    good, stamp = entry.read_bytes(), entry.stat().st_mtime

    def restore() -> None:
        entry.write_bytes(good)
        os.utime(entry, (stamp, stamp))

    entry.write_text('{"kind": "cniCacheV1", "containerId": ')
    return restore


def write_cni_cache(
    directory: str | os.PathLike[str],
    network: str,
    container_id: str,
    ifname: str,
    conf: dict[str, Any],
    port_mappings: Sequence[dict[str, Any]],
    ips: Sequence[str],
    netns: str | None = None,
    leases: str | os.PathLike[str] | None = None,
    ranges: Sequence[Sequence[dict[str, str]]] | None = None,
) -> Path:
    """Write ``DIR/results/NETWORK-CONTAINERID-IFNAME`` as libcni's ``cniCacheV1`` does.

    ``ranges``: host-local's ``ranges`` in the conflist (default: one range set per
    address, its whole subnet).

    ``leases``: host-local's data directory, named in the conflist (``dataDir``), where
    each address gets its lease as host-local's ADD leaves it (``ID\r\nIFNAME``).
    Without it the conflist names none, and the tests' default (conftest) is nowhere.

    ``netns`` is the container's namespace path the entry names (default: the test
    container namespace, which exists: a path that does not makes a zombie entry).

    ``conf`` is the portmap plugin config (as from :func:`plugin_conf`); its options
    (``snat``, ``markMasqBit``, ...) go into the portmap entry of a conflist whose first
    plugin is a bridge, and ``config`` holds that conflist's bytes (base64, as Go
    encodes ``[]byte``). Returns the path written.
    """
    cni_version = conf.get("cniVersion", "0.4.0")
    portmap_entry = {"type": "portmap", "capabilities": {"portMappings": True}}
    not_options = {"cniVersion", "name", "type", "runtimeConfig", "prevResult"}
    portmap_entry.update({k: v for k, v in conf.items() if k not in not_options})
    conflist = {
        "cniVersion": cni_version,
        "name": network,
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipMasq": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": str(ipaddress.ip_interface(ip).network)}] for ip in ips]
                    if ranges is None
                    else [[dict(r) for r in rs] for rs in ranges],
                },
            },
            portmap_entry,
        ],
    }
    if leases is not None:
        conflist["plugins"][0]["ipam"]["dataDir"] = str(leases)
        for ip in ips:
            lease = Path(leases, network, str(ipaddress.ip_interface(ip).ip))
            lease.parent.mkdir(parents=True, exist_ok=True)
            lease.write_text(f"{container_id}\r\n{ifname}")
    config_bytes = (json.dumps(conflist, indent=2) + "\n").encode()

    # Unprivileged (tests/unit on a laptop) no namespace can be made: the entry names
    # this process's own, which exists, so the entry is no zombie either way.
    if netns is None and netns_available()[0]:
        netns = container_netns()
        hold_addresses(netns, ips)  # as the plugins before portmap left it on ADD
    netns = netns or "/proc/self/ns/net"
    result = prev_result(ips, cni_version)
    result["interfaces"] = [
        {"name": "cni0", "mac": "02:00:00:00:00:01"},
        {"name": "veth0", "mac": "02:00:00:00:00:02"},
        {"name": ifname, "mac": "02:00:00:00:00:03", "sandbox": netns},
    ]
    for entry in result["ips"]:
        entry["interface"] = 2
    result["dns"] = {}

    return _write_entry(
        directory, network, container_id, ifname, config_bytes, netns, port_mappings, result
    )


def _write_entry(
    directory: str | os.PathLike[str],
    network: str,
    container_id: str,
    ifname: str,
    config_bytes: bytes,
    netns: str,
    port_mappings: Sequence[dict[str, Any]],
    result: Any,
) -> Path:
    """libcni's cache entry ``DIR/results/NETWORK-CONTAINERID-IFNAME``, as it writes it."""
    # cachedInfo's fields in declaration order (Go marshals structs that way).
    fields = [
        ("kind", "cniCacheV1"),
        ("containerId", container_id),
        ("config", base64.b64encode(config_bytes).decode()),
        ("ifName", ifname),
        ("networkName", network),
        ("netns", netns),
        ("capabilityArgs", {"portMappings": [dict(pm) for pm in port_mappings]}),
        ("result", result),
    ]
    text = "{" + ",".join(f"{json.dumps(k)}:{_go_json(v)}" for k, v in fields) + "}"

    path = Path(directory, "results", f"{network}-{container_id}-{ifname}")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(text)
    path.chmod(0o600)
    return path


def nomad_conflist(ipam_dir: str | None = None) -> dict[str, Any]:
    """Nomad's bridge network list (client/allocrunner/networking_bridge_linux.go, its
    defaults): loopback, bridge with ipMasq, firewall with the admin chain NOMAD-ADMIN,
    portmap. `ipam_dir`: where host-local keeps its state (a test's folder)."""
    ipam: dict[str, Any] = {
        "type": "host-local",
        "ranges": [[{"subnet": "172.26.64.0/20"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
    }
    if ipam_dir is not None:
        ipam["dataDir"] = ipam_dir
    return {
        "cniVersion": "0.4.0",
        "name": "nomad",
        "plugins": [
            {"type": "loopback"},
            {
                "type": "bridge",
                "bridge": "nomad",
                "ipMasq": True,
                "isGateway": True,
                "forceAddress": True,
                "hairpinMode": False,
                "ipam": ipam,
            },
            {"type": "firewall", "backend": "iptables", "iptablesAdminChainName": "NOMAD-ADMIN"},
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        ],
    }


# --- prerequisites ----------------------------------------------------------------------


@functools.cache
def require(available: tuple[bool, str]) -> None:
    """Skip with the reason, or fail under PORTMAPCTL_REQUIRE_NETNS=1 (CI: nothing that
    needs root, the plugins or podman may be skipped there)."""
    import pytest  # here: benchmarks import this module without pytest

    ok, reason = available
    if ok:
        return
    if os.environ.get("PORTMAPCTL_REQUIRE_NETNS") == "1":
        pytest.fail(f"PORTMAPCTL_REQUIRE_NETNS=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def port_mapping(
    host: int, container: int, proto: str = "tcp", host_ip: str | None = None
) -> dict[str, Any]:
    """One entry of the plugin's runtimeConfig.portMappings."""
    entry: dict[str, Any] = {"hostPort": host, "containerPort": container, "protocol": proto}
    if host_ip is not None:
        entry["hostIP"] = host_ip
    return entry


@functools.cache
def netns_available() -> tuple[bool, str]:
    """Whether this process can make network namespaces (root, ``ip netns``)."""
    if os.geteuid() != 0:
        return False, "needs root (network namespaces, iptables)"
    if shutil.which("ip", path=os.environ.get("PATH", "") + ":" + SYSTEM_PATH) is None:
        return False, "no `ip` command (Debian package iproute2)"
    try:
        name = create_netns("pmt-probe")
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", None) or str(exc)
        return False, f"`ip netns add` does not work here: {str(detail).strip()}"
    delete_netns(name)
    return True, ""


@functools.cache
def plugin_available() -> tuple[bool, str]:
    """Whether the real plugin and both iptables flavours are installed."""
    if not os.access(PLUGIN, os.X_OK):
        return False, f"no {PLUGIN} (Debian package containernetworking-plugins)"
    for mode in ("nft", "legacy"):
        for tools in _TOOLS.values():
            for tool in tools:
                real = _flavoured(tool, mode)
                if not os.access(real, os.X_OK):
                    return False, f"no {real} (Debian package iptables)"
    return True, ""


@functools.cache
def mode_available(mode: Mode) -> tuple[bool, str]:
    """Whether both families' nat tables work in a namespace with this iptables flavour."""
    ok, reason = netns_available()
    if not ok:
        return ok, reason
    name = create_netns("pmt-probe")
    try:
        for tool in ("iptables", "ip6tables"):
            proc = _run([_ip(), "netns", "exec", name, tool_path(tool, mode), "-t", "nat", "-S"])
            if proc.returncode != 0:
                return False, f"{tool}-{mode} does not work here: {proc.stderr.strip()}"
    finally:
        delete_netns(name)
    return True, ""


def routed_node(ns: str) -> None:
    """Give the namespace a route to the containers' network (a veth up, 10.88.0.1/16)
    and an address of its own, 10.0.0.1: a connection from the node to 10.0.0.1 is
    DNATed by the mappings and leaves (its conntrack entry is confirmed)."""
    for args in (
        ["link", "add", "d0", "type", "veth", "peer", "name", "d0p"],
        ["link", "set", "d0", "up"],
        ["link", "set", "d0p", "up"],
        ["addr", "add", "10.88.0.1/16", "dev", "d0"],
        ["addr", "add", "10.0.0.1/32", "dev", "lo"],
    ):
        subprocess.run(["ip", "-n", ns, *args], check=True)


def dnat_destination(ns: str, address: str, port: int) -> str:
    """Where the kernel DNATs a TCP connection from the node itself to address:port:
    the reply source of its conntrack entry (the SYN goes nowhere; the entry is made)."""
    script = f"exec 3<>/dev/tcp/{address}/{port}"
    subprocess.run(["ip", "netns", "exec", ns, "timeout", "1", "bash", "-c", script],
                   capture_output=True, check=False)  # fmt: skip
    listed = subprocess.run(
        ["ip", "netns", "exec", ns, "conntrack", "-L", "-p", "tcp", "--dport", str(port),
         "--dst", address],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [w for w in listed.split() if w.startswith("src=")][1].split("=")[1]
