"""Hostile and broken values for every option of every command (SPEC §4, §5).

One table: for each command, each option that takes a value gets hostile ones (ports
out of range or not numbers, malformed and wrong-family addresses, unknown protocols,
names with quotes, spaces, newlines, `-A INPUT -j ACCEPT`, shell metacharacters and
non-ASCII) and every file option gets empty, truncated, binary and huge files. Each
must end in exit 2 (3 for an unusable namespace), one `portmapctl: error:` line on
stderr, no traceback, nothing on stdout, and an unchanged node.

The commands run in this process (`cli.main`, no interpreter start-up: hundreds of
cases in a few seconds) against one namespace per module, built once with
plugin-made state: every case is refused before anything is written, so sharing is
sound, and the node (both families' nat tables and the UDP conntrack entries) is
compared after each case. A sample also runs as real processes
(`test_a_sample_as_real_processes`), so the entry point itself is covered.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import pytest
import realplugin as rp
import typer
from gc_helpers import ports as _ports
from pmctl import assert_error, run

from portmapctl.cli import main
from portmapctl.cni import cache as cni_cache
from portmapctl.cni.cache import MAX_CACHE_FILE_BYTES
from portmapctl.host import netns
from portmapctl.iptables.access.snapshot import MAX_DUMP_BYTES
from portmapctl.iptables.chains import chain_name
from portmapctl.nftables.access.snapshot import MAX_DUMP_BYTES as NFT_MAX_DUMP_BYTES

pytestmark = pytest.mark.netns

FIXTURES = Path(__file__).parents[1] / "fixtures"
LIVE = "live1"  # plugin-made, in the cache
STALE = "stale1"  # plugin-made, not in the cache: what a wrongly accepted gc would take
NET = "pmtnet"
UDP_PORT = 5353

# --- hostile values -------------------------------------------------------------------

HOSTILE_NAMES = [
    "a b",
    'x"y',
    "x'y",
    "-A INPUT -j ACCEPT",
    "x\n-A INPUT -j ACCEPT",
    "x\r\nCOMMIT",
    "$(reboot)",
    "`id`",
    "a;b",
    "a|b",
    "a&&b",
    "a>b",
    "*",
    "a/b",
    "../x",
    "",
    ".hidden",
    "_x",
    "-x",
    "ünï",
    "容器",
    "a\u202eb",  # right-to-left override
    "a\u00a0b",  # no-break space
    "x\t",
    "x\x1b[31m",  # a terminal escape
]
HOSTILE_PORTS = [
    "0",
    "65536",
    "-1",
    "99999999999999999999",
    "x",
    "80x",
    "0x50",
    "8_080",
    "８０",  # full-width digits: int() takes them
    " 80",
    "80 ",
    "+80",
    "",
    "1e3",
    "80.0",
    "80\n",
    "80;reboot",
]
HOSTILE_PORT_SPECS = [
    "8080",
    "0:80",
    "70000:80",
    "8080:0",
    "8080:http",
    "8_080:80",
    "８０８０:80",
    " 8080:80",
    "8080:80/icmp",
    "8080:80/",
    "8080:80/tcp/udp",
    "8080:80/TCP ",
    "999.1.1.1:8080:80",
    "10.0.0.1/8:8080:80",
    "::1:8080:80",
    "[::1]8080:80",
    "[fe80::1%eth0]:8080:80",
    "[10.0.0.1:8080:80",
    "localhost:8080:80",
    "-A INPUT -j ACCEPT",
    "8080:80 -j ACCEPT",
    "8080:80\n-A INPUT -j ACCEPT",
    "$(reboot):80",
    "",
    ":",
    "1:2:3:4",
    "ü:8080:80",
]
HOSTILE_ADDRESSES = [
    "10.88.0.60",  # no prefix
    "10.88.0.60/33",
    "10.88.0.256/16",
    "fd00::60/129",
    "fd00::60",
    "fe80::1%eth0/64",
    "fe80::1%a b/64",
    '10.88.0.60/16" -j ACCEPT',
    "10.88.0.60/16/1",
    "10.88.0.60/-1",
    "10.88.0.60/x",
    "010.088.000.060/16",
    "localhost/8",
    "10.88.0.60/16\n",
    "",
    "/16",
    "１０.88.0.60/16",
]
HOSTILE_CHAINS = ["bad chain", 'a"b', "x" * 29, "", "ü", "a\nb", "$(x)", "-j"]
HOSTILE_CONDITIONS = [
    "-j ACCEPT",
    "--jump ACCEPT",
    "-g X",
    "--goto X",
    "-jACCEPT",
    "-4jACCEPT",
    "--jum ACCEPT",
    "--j=ACCEPT",
    "'unterminated",
    '"unterminated',
    '-m comment --comment "a\nb"',
    "-s 999.0.0.0/8",
    "--dport",
]
HOSTILE_DURATIONS = ["soon", "-5", "5 m", "1e3", "５m", "", "1w", "0x10", "5m;reboot"]


# --- hostile files --------------------------------------------------------------------


def _b64(document: dict) -> str:
    return base64.b64encode(json.dumps(document).encode()).decode()


def _cache_document(**changes: object) -> dict:
    """A libcni cache entry for a new container, with some fields changed."""
    document = {
        "kind": "cniCacheV1",
        "containerId": "cached9",
        "config": _b64(
            {
                "cniVersion": "0.4.0",
                "name": NET,
                "type": "portmap",
                "capabilities": {"portMappings": True},  # else libcni passes no ports
            }
        ),
        "ifName": "eth0",
        "networkName": NET,
        "capabilityArgs": {
            "portMappings": [{"hostPort": 9191, "containerPort": 91, "protocol": "tcp"}]
        },
        "result": {
            "interfaces": [{"name": "eth0", "sandbox": "/x"}],
            "ips": [{"address": "10.88.0.91/16", "interface": 0}],
        },
    }
    document.update(changes)
    return document


def _portmap_config(**changes: object) -> dict:
    """The plugin's stdin for a valid new container, with some fields changed."""
    return {
        "cniVersion": "0.4.0",
        "name": NET,
        "type": "portmap",
        "runtimeConfig": {
            "portMappings": [{"hostPort": 9191, "containerPort": 91, "protocol": "tcp"}]
        },
        "prevResult": {"ips": [{"address": "10.88.0.60/16"}, {"address": "fd00::60/64"}]},
        **changes,
    }


BROKEN_BYTES = {
    "empty": (b"", "not valid JSON"),
    "truncated": (b'{"name": "pmtnet", "runtimeConfig": {"portMa', "not valid JSON"),
    "binary": (b"\x00\x01\x02\x03", "binary"),
    "not-utf8": (b"\xff\xfe{}", "not text"),
    "deeply-nested": (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
}

CNI_CONFIGS = {
    "name-injection": (_portmap_config(name='pmtnet" -j ACCEPT'), "invalid network name"),
    "name-newline": (_portmap_config(name="pmtnet\n-A INPUT -j ACCEPT"), "invalid network name"),
    "port-string": (
        _portmap_config(
            runtimeConfig={"portMappings": [{"hostPort": "80;reboot", "containerPort": 80}]}
        ),
        "hostPort",
    ),
    "port-float": (
        _portmap_config(runtimeConfig={"portMappings": [{"hostPort": 80.5, "containerPort": 80}]}),
        "hostPort",
    ),
    "port-bool": (
        _portmap_config(runtimeConfig={"portMappings": [{"hostPort": True, "containerPort": 80}]}),
        "hostPort",
    ),
    "host-ip-zone": (
        _portmap_config(
            runtimeConfig={
                "portMappings": [{"hostPort": 80, "containerPort": 80, "hostIP": "fe80::1%eth0"}]
            }
        ),
        "invalid host IP",
    ),
    "protocol": (
        _portmap_config(
            runtimeConfig={
                "portMappings": [{"hostPort": 80, "containerPort": 80, "protocol": "icmp"}]
            }
        ),
        "invalid protocol",
    ),
    "mappings-not-list": (
        _portmap_config(runtimeConfig={"portMappings": {"hostPort": 80}}),
        "must be a list",
    ),
    # Go fails to decode these into the plugin's RuntimeConfig struct (both plugins:
    # "cannot unmarshal array into Go struct field ..."); add said "nothing to add", exit 0.
    "runtime-config-list": (_portmap_config(runtimeConfig=[]), "runtimeConfig must be an object"),
    "runtime-config-false": (
        _portmap_config(runtimeConfig=False),
        "runtimeConfig must be an object",
    ),
    "address-33": (
        _portmap_config(prevResult={"ips": [{"address": "10.88.0.60/33"}]}),
        "invalid container address",
    ),
    "mark-bit": (_portmap_config(markMasqBit=40), "invalid mark bit"),
    "mark-bit-string": (_portmap_config(markMasqBit="13"), "invalid mark bit"),
    "setmark-chain": (_portmap_config(externalSetMarkChain="a b"), "external setmark chain"),
    # Named by the file's keys, not by the command line's options.
    "mark-bit-with-setmark-chain": (
        _portmap_config(markMasqBit=13, externalSetMarkChain="KUBE-MARK-MASQ"),
        "markMasqBit and externalSetMarkChain cannot be used together",
    ),
    "conditions-target": (_portmap_config(conditionsV4=["-j", "ACCEPT"]), "cannot set a target"),
    "conditions-newline": (
        _portmap_config(conditionsV4=["x\n-A INPUT -j ACCEPT"]),
        "control characters",
    ),
    "snat-string": (_portmap_config(snat="no"), "snat must be true or false"),
}


def _with_conditions_v4(conditions: list) -> dict:
    """A cache document whose portmap config has these conditionsV4."""
    portmap = {"type": "portmap", "capabilities": {"portMappings": True}}
    plugins = [{"type": "bridge"}, {**portmap, "conditionsV4": conditions}]
    return _cache_document(config=_b64({"name": NET, "plugins": plugins}))


CACHE_FILES = {
    "id-injection": (_cache_document(containerId='x" -j ACCEPT'), "invalid container ID"),
    "id-newline": (_cache_document(containerId="x\n-A INPUT -j ACCEPT"), "invalid container ID"),
    "network-injection": (
        _cache_document(networkName="n -A INPUT -j ACCEPT"),
        "invalid network name",
    ),
    "kind": (_cache_document(kind="cniCacheV2"), "unknown kind"),
    "base64": (_cache_document(config="%%%"), "base64"),
    "config-binary": (
        _cache_document(config=base64.b64encode(b"\x00\x01").decode()),
        "binary",
    ),
    "port": (
        _cache_document(capabilityArgs={"portMappings": [{"hostPort": 0, "containerPort": 1}]}),
        "hostPort",
    ),
    "address": (
        _cache_document(result={"ips": [{"address": "10.88.0.91/40"}]}),
        "invalid container address",
    ),
    "conditions": (
        _with_conditions_v4(["--goto", "X"]),
        "cannot set a target",
    ),
    # nftables conditions without "backend": "nftables": the plugin refuses that ADD.
    "conditions-nft": (
        _with_conditions_v4(["ip saddr 192.168.0.0/16"]),
        "nftables-specific",
    ),
}

VALID_ATTACHMENTS = {
    "id-injection": ([{"containerID": 'x" -j ACCEPT', "ifname": "eth0"}], "invalid container ID"),
    "id-newline": ([{"containerID": "x\n-A INPUT", "ifname": "eth0"}], "invalid container ID"),
    "id-not-string": ([{"containerID": 7, "ifname": "eth0"}], "invalid container ID"),
    "name-injection": (
        {"name": "n -j ACCEPT", "cni.dev/valid-attachments": []},
        "invalid network name",
    ),
    "not-a-list": ({"cni.dev/valid-attachments": "x"}, "must be a list"),
    "no-key": ({"name": NET}, "no 'cni.dev/valid-attachments'"),
}

SNAPSHOTS = {
    "garbage": (b"garbage\n", "not iptables-save output"),
    "truncated": (b"*nat\n:PREROUTING ACCEPT [0:0]\n", "no COMMIT"),
    "truncated-line": (b"*nat\n:PREROUTING ACCEPT [0:0]\n-A PRERO", "undeclared chain"),
    "binary": (b"*nat\n\x00\x00\nCOMMIT\n", "binary"),
    "not-utf8": (b"\xff\xfe\x00", "not text"),
    "undeclared": (b"*nat\n-A NOPE -j ACCEPT\nCOMMIT\n", "undeclared chain"),
    "quote": (b'*nat\n:X - [0:0]\n-A X -m comment --comment "open\nCOMMIT\n', "quote"),
    "two-nat": (b"*nat\nCOMMIT\n*nat\nCOMMIT\n", "a second nat table"),
    "nested-table": (b"*nat\n*filter\nCOMMIT\n", "before table"),
    # A failed pipe (`ssh node iptables-save | portmapctl list --snapshot -`).
    "empty": (b"", "empty, not"),
    "no-nat": (b"*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n", "no nat table"),
}


@dataclass
class Files:
    """Hostile files, made once per module."""

    root: Path

    def write(self, name: str, data: bytes) -> str:
        path = self.root / name
        path.write_bytes(data)
        return str(path)

    def huge(self, name: str, size: int) -> str:
        """A file of `size` bytes (sparse: cheap to make, and read back as zeros)."""
        path = self.root / name
        with open(path, "wb") as handle:
            handle.truncate(size)
        return str(path)

    def cache_dir(self, name: str, data: bytes, file: str = f"{NET}-cached9-eth0") -> str:
        """A CNI cache directory whose one results/ file, `file`, holds `data`."""
        folder = self.root / f"cache-{name}"
        (folder / "results").mkdir(parents=True, exist_ok=True)
        (folder / "results" / file).write_bytes(data)
        return str(folder)

    def huge_cache_dir(self, size: int) -> str:
        """A CNI cache directory whose one results/ file has `size` bytes (sparse)."""
        folder = self.root / "cache-huge"
        (folder / "results").mkdir(parents=True, exist_ok=True)
        with open(folder / "results" / f"{NET}-cached9-eth0", "wb") as handle:
            handle.truncate(size)
        return str(folder)


# --- the node -------------------------------------------------------------------------


@dataclass
class NodeState:
    ns: str
    cache: str
    files: Files


_require = rp.require


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeState]:
    """One namespace with a live and a stale plugin-made container (both families), a
    foreign rule, a CNI cache naming the live one and UDP conntrack entries."""
    _require(rp.netns_available())
    _require(rp.plugin_available())
    ns = rp.create_netns("pmt-bad")
    root = tmp_path_factory.mktemp("bad-input")
    try:
        cache = root / "cni"
        for cid, ips, ports in (
            (LIVE, ["10.88.0.11/16", "fd00::11/64"], _ports("8080/tcp", f"{UDP_PORT}/udp")),
            (STALE, ["10.88.0.12/16", "fd00::12/64"], _ports("9090/tcp")),
        ):
            conf = rp.plugin_conf(NET, ips, ports)
            rp.run_plugin("ADD", ns, cid, conf, check=True)
            if cid == LIVE:
                rp.write_cni_cache(cache, NET, cid, "eth0", conf, ports, ips)
        rp.iptables(ns, ["-t", "nat", "-A", "POSTROUTING", "-s", "172.17.0.0/16", "-j", "RETURN"])
        for sport in (40001, 40002):
            subprocess.run(
                ["ip", "netns", "exec", ns, "conntrack", "-I", "-p", "udp", "-s", "192.0.2.7",
                 "-d", "10.0.0.1", "--sport", str(sport), "--dport", str(UDP_PORT), "-t", "300"],
                check=True, capture_output=True,
            )  # fmt: skip
        yield NodeState(ns, str(cache), Files(root))
    finally:
        rp.delete_netns(ns)


def _state(node: NodeState, conntrack: bool = True) -> Dict[str, str]:
    """Both families' nat tables and (unless told not to: `conntrack` takes 10 ms) the
    UDP conntrack entries, read from inside."""
    found = {}
    with netns.entered(node.ns):
        for tool in ("iptables-nft-save", "ip6tables-nft-save"):
            text = subprocess.run(
                [tool, "-t", "nat"], capture_output=True, text=True, check=True
            ).stdout
            found[tool] = rp.strip_save_comments(text)
        if not conntrack:
            return found
        done = subprocess.run(
            ["conntrack", "-L", "-p", "udp"], capture_output=True, text=True, check=False
        )
        found["conntrack"] = "\n".join(
            sorted(
                " ".join(w for w in line.split() if "=" in w) for line in done.stdout.splitlines()
            )
        )
    return found


@pytest.fixture(scope="module")
def before(node: NodeState) -> Dict[str, str]:
    state = _state(node)
    assert chain_name(NET, LIVE) in state["iptables-nft-save"]
    assert chain_name(NET, STALE) in state["ip6tables-nft-save"]
    assert state["conntrack"].count(f"dport={UDP_PORT}") >= 2
    return state


# --- the table ------------------------------------------------------------------------

Argv = Callable[[NodeState], List[str]]


@dataclass(frozen=True)
class Case:
    id: str
    argv: Argv
    words: Sequence[str] = ()
    code: int = 2
    stdin: Optional[bytes] = None
    stdin_size: int = 0  # a huge stdin of zeros, made when the case runs


def _add(n: NodeState) -> List[str]:
    return ["add", "--netns", n.ns, "--iptables", "nft", "--network", NET, "--container",
            "newctr", "--ip", "10.88.0.60/16", "--ip", "fd00::60/64", "-p", "9191:91"]  # fmt: skip


def _repair(n: NodeState) -> List[str]:
    return ["check", "--repair", "--netns", n.ns, "--iptables", "nft", "--cni-cache-dir", n.cache,
            "--network", NET, "--container", "newctr", "--ip", "10.88.0.60/16", "--ip", "fd00::60/64",
            "-p", "9191:91"]  # fmt: skip


def _gc(n: NodeState) -> List[str]:
    return ["gc", "--yes", "--min-age", "0", "--netns", n.ns, "--iptables", "nft",
            "--cni-cache-dir", n.cache]  # fmt: skip


def _list(n: NodeState) -> List[str]:
    return ["list", "--netns", n.ns, "--iptables", "nft", "--cni-cache-dir", n.cache]


def _flush(n: NodeState) -> List[str]:
    return ["flush-udp", "--netns", n.ns, "--iptables", "nft", "--port", str(UDP_PORT)]


def _node_repair(n: NodeState) -> List[str]:
    return ["check", "--repair", "--netns", n.ns, "--iptables", "nft", "--cni-cache-dir", n.cache]


BASES = {"add": _add, "check": _repair, "gc": _gc, "list": _list, "flush-udp": _flush}


def _with(base: Argv, option: str, value: str) -> Argv:
    """The base command with `option` set to `value` (replaced where the base has it)."""

    def argv(n: NodeState) -> List[str]:
        args = base(n)
        if option in args:
            args[args.index(option) + 1] = value
        else:
            args += [option, value]
        return args

    return argv


def _also(base: Argv, option: str, make: Callable[[Files], str]) -> Argv:
    """The base command with one more `option` (a repeatable one)."""
    return lambda n: [*base(n), option, make(n.files)]


def _then(base: Argv, *extra: str) -> Argv:
    return lambda n: [*base(n), *extra]


def _file_arg(base: Argv, option: str, make: Callable[[Files], str]) -> Argv:
    return lambda n: _with(base, option, make(n.files))(n)


def _cases() -> List[Case]:
    cases: List[Case] = []

    def add(id_: str, argv: Argv, *words: str, code: int = 2, **kw: object) -> None:
        cases.append(Case(id_, argv, words, code, **kw))  # type: ignore[arg-type]

    # Names and IDs, wherever a command takes one.
    name_options = [
        ("add", "--network", "network name"),
        ("add", "--container", "container ID"),
        ("check", "--network", "network name"),
        ("check", "--container", "container ID"),
        ("list", "--network", "network name"),
        ("list", "--container", "container ID"),
        ("flush-udp", "--container", "container ID"),
        ("gc", "--keep", "--keep container ID"),
    ]
    for command, option, words in name_options:
        # Every name where it gets written (add); elsewhere one of each kind is enough.
        names = HOSTILE_NAMES if command == "add" else HOSTILE_NAMES[::2]
        for name in names:
            i = HOSTILE_NAMES.index(name)
            add(f"{command} {option} name{i}", _with(BASES[command], option, name), words)
    # A chain's name is a valid CNI name, and kept no container: the one meant lost its
    # chains (it was taken without a word).
    for i, name in enumerate([chain_name(NET, STALE), "CNI-SN-6644", chain_name(NET, STALE)[:12]]):
        add(f"gc --keep chain{i}", _with(BASES["gc"], "--keep", name), "a chain's name")
    # Ports.
    for command in ("flush-udp",):
        for i, value in enumerate(HOSTILE_PORTS):
            add(f"{command} --port port{i}", _with(BASES[command], "--port", value), "--port")
    for i, value in enumerate(["0", "65536", "-1", "x", "", "80x", "1e3", "80.0"]):
        add(f"list --port port{i}", _with(_list, "--port", value), "--port")
    for command in ("add", "check"):
        for i, spec in enumerate(HOSTILE_PORT_SPECS):
            add(f"{command} -p spec{i}", _with(BASES[command], "-p", spec), "invalid")
    # Container addresses, and two of one family.
    for command in ("add", "check"):
        for i, address in enumerate(HOSTILE_ADDRESSES):
            add(
                f"{command} --ip addr{i}",
                _with(BASES[command], "--ip", address),
                "container address",
            )
        add(f"{command} --ip twice", _then(BASES[command], "--ip", "10.88.0.61/16"),
            "at most one container address per family")  # fmt: skip
        add(f"{command} --ip v6 twice", _then(BASES[command], "--ip", "fd00::61/64"),
            "at most one container address per family")  # fmt: skip
    # Protocols (list takes a choice; add/check in the port spec, above).
    # "TCP" is accepted: what the outputs print is (SPEC §3 output contract).
    for i, proto in enumerate(["icmp", "", "tcp ", "all", "6", "udp\n"]):
        add(f"list --proto proto{i}", _with(_list, "--proto", proto), "--proto")
    for i, word in enumerate(["bogus", "", "ok,stale", "stale;x", "STALE\n"]):
        add(f"list --status status{i}", _with(_list, "--status", word), "--status")
    # Mapping options of add and check.
    for command in ("add", "check"):
        base = BASES[command]
        for i, value in enumerate(["32", "-1", "x", "1.5", "99999999999999999999", ""]):
            add(f"{command} --mark-bit bit{i}", _with(base, "--mark-bit", value), "mark")
        add(f"{command} --mark-bit with setmark",
            _then(base, "--mark-bit", "3", "--external-setmark-chain", "X"),
            "cannot be used together")  # fmt: skip
        for i, value in enumerate(HOSTILE_CHAINS):
            add(f"{command} --external-setmark-chain chain{i}",
                _with(base, "--external-setmark-chain", value), "external setmark chain")  # fmt: skip
        for option in ("--conditions-v4", "--conditions-v6"):
            for i, value in enumerate(HOSTILE_CONDITIONS):
                add(f"{command} {option} cond{i}", _with(base, option, value), "invalid")
        # A condition of the other family: refused before either family is written.
        add(f"{command} --conditions-v6 wrong family",
            _then(base, "--conditions-v6", "-s 10.0.0.0/8"), "not IPv6", "--conditions-v6")  # fmt: skip
        add(f"{command} --conditions-v4 wrong family",
            _then(base, "--conditions-v4", "-s fd00::/8"), "not IPv4", "--conditions-v4")  # fmt: skip
        for i, value in enumerate(["a b", "a/b", "x" * 16, ".", "..", "", "a:b", "eth0\n"]):
            add(f"{command} --ifname if{i}", _with(base, "--ifname", value), "interface name")
        for flag in ("--no-snat", "--masq-all", "--no-flush-udp"):
            add(f"{command} {flag}=x", _then(base, f"{flag}=x"), "does not take a value")
        add(f"{command} --cni-config with --network",
            _then(base, "--cni-config", "/dev/null"), "cannot be combined")  # fmt: skip
    add("add --dry-run=x", _then(_add, "--dry-run=x"), "does not take a value")
    add("flush-udp --dry-run=x", _then(_flush, "--dry-run=x"), "does not take a value")
    # Options every command takes.
    for command, base in BASES.items():
        # (Any case is taken: `NFT` is nft, as the tables print choices.)
        for value in ("bogus", "", "nft ", "nft;reboot"):
            add(f"{command} --iptables {value!r}", _with(base, "--iptables", value), "--iptables")
        for value in ("5", "", "4,6", "46"):
            add(f"{command} --family {value!r}", _then(base, "--family", value), "--family")
        for value in ("xml", "", "jsn"):
            add(f"{command} -o {value!r}", _then(base, "-o", value), "--output")
        add(f"{command} --cni-cache-dir ''", _then(base, "--cni-cache-dir", ""), "cache")
        for i, value in enumerate(["pmt-no-such-ns", "a b", "", "x\ny", "/etc/passwd", "/proc/1"]):
            # An empty value is a mistake in the command line (`--netns "$NS"`, NS unset):
            # bad input, as an empty --snapshot is; it said "namespace '' not found", 3.
            code, words = (2, "--netns is empty") if value == "" else (3, "namespace")
            add(f"{command} --netns ns{i}", _with(base, "--netns", value), words, code=code)
        add(f"{command} --no-such-option", _then(base, "--no-such-option"), "No such option")
        add(f"{command} --no-color=x", _then(base, "--no-color=x"), "does not take a value")
        for flag in ("--no-headers", "--no-trunc"):
            add(f"{command} {flag}=x", _then(base, f"{flag}=x"), "does not take a value")
        for value in ("bogus", "", "nft", "iptables;reboot"):
            add(f"{command} --backend {value!r}", _with(base, "--backend", value), "--backend")
    # The commands that judge backends read the node's portmap binaries (--cni-bin-dir):
    # an empty one is a mistake in the command line (`--cni-bin-dir "$DIR"`, DIR unset).
    for command in ("add", "check"):
        add(f"{command} --cni-bin-dir ''", _then(BASES[command], "--cni-bin-dir", ""),
            "--cni-bin-dir is empty")  # fmt: skip
    # gc's own options.
    for i, value in enumerate(HOSTILE_DURATIONS):
        add(f"gc --min-age dur{i}", _with(_gc, "--min-age", value), "invalid duration")
    for flag in ("--yes", "--all", "--dry-run", "--no-flush-udp"):
        add(f"gc {flag}=x", _then(_gc, f"{flag}=x"), "does not take a value")
    add("gc without --yes", lambda n: [a for a in _gc(n) if a != "--yes"], "--yes")
    add("gc without a source", lambda n: [*_gc(n)[:-1], "/nonexistent"], "nothing says")
    add("flush-udp --stale-only=x", _then(_flush, "--stale-only=x"), "does not take a value")
    add("check --repair=x", _then(_repair, "--repair=x"), "does not take a value")

    # Files: --cni-config (add, check), --valid-attachments (gc), --snapshot (list,
    # check), cache files (list, check, check --repair, gc, flush-udp).
    config_bases = {
        "add": lambda n: ["add", "--netns", n.ns, "--iptables", "nft", "--container", "newctr"],
        "check": lambda n: [
            "check",
            "--repair",
            "--netns",
            n.ns,
            "--iptables",
            "nft",
            "--container",
            "newctr",
        ],  # fmt: skip
    }
    huge_config = MAX_CACHE_FILE_BYTES + 1
    for command, base in config_bases.items():
        for name, (data, words) in BROKEN_BYTES.items():
            add(f"{command} --cni-config {name}",
                _file_arg(base, "--cni-config", lambda f, d=data, m=name: f.write(f"conf-{m}", d)),
                words)  # fmt: skip
            add(f"{command} --cni-config - {name}", _then(base, "--cni-config", "-"), words,
                stdin=data)  # fmt: skip
        for name, (document, words) in CNI_CONFIGS.items():
            data = json.dumps(document).encode()
            add(f"{command} --cni-config {name}",
                _file_arg(base, "--cni-config", lambda f, d=data, m=name: f.write(f"conf-{m}", d)),
                words)  # fmt: skip
        add(f"{command} --cni-config huge",
            _file_arg(base, "--cni-config", lambda f: f.huge("conf-huge", huge_config)),
            "larger than 16 MiB")  # fmt: skip
        add(f"{command} --cni-config - huge", _then(base, "--cni-config", "-"),
            "larger than 16 MiB", stdin_size=huge_config)  # fmt: skip
        add(f"{command} --cni-config directory", _then(base, "--cni-config", "/"),
            "cannot read --cni-config")  # fmt: skip
        add(f"{command} --cni-config missing", _then(base, "--cni-config", "/nonexistent"),
            "cannot read --cni-config")  # fmt: skip
        # The config's own keys say these: taken silently, they were dropped (add
        # --cni-config --no-snat wrote the SNAT rules, exit 0).
        valid = json.dumps(_portmap_config()).encode()
        for extra in (["--no-snat"], ["--masq-all"], ["--mark-bit", "5"],
                      ["--external-setmark-chain", "KUBE-MARK-MASQ"],
                      ["--conditions-v4", "-s 10.0.0.0/8"], ["--conditions-v6", "-s fd00::/8"]):  # fmt: skip
            add(f"{command} --cni-config with {extra[0]}",
                _then(_file_arg(base, "--cni-config", lambda f, d=valid: f.write("conf-ok", d)),
                      *extra),
                "cannot be combined", extra[0])  # fmt: skip
        add(f"{command} --ifname bad with --cni-config",
            _then(base, "--cni-config", "/dev/null", "--ifname", "a b"), "interface name")  # fmt: skip

    for name, (data, words) in BROKEN_BYTES.items():
        add(f"gc --valid-attachments {name}",
            _file_arg(_gc, "--valid-attachments", lambda f, d=data, m=name: f.write(f"va-{m}", d)),
            words)  # fmt: skip
        add(f"gc --valid-attachments - {name}", _then(_gc, "--valid-attachments", "-"), words,
            stdin=data)  # fmt: skip
    for name, (document, words) in VALID_ATTACHMENTS.items():
        data = json.dumps(document).encode()
        add(f"gc --valid-attachments {name}",
            _file_arg(_gc, "--valid-attachments", lambda f, d=data, m=name: f.write(f"va-{m}", d)),
            words)  # fmt: skip
    add("gc --valid-attachments huge",
        _file_arg(_gc, "--valid-attachments", lambda f: f.huge("va-huge", huge_config)),
        "larger than 16 MiB")  # fmt: skip
    add("gc --valid-attachments - huge", _then(_gc, "--valid-attachments", "-"),
        "larger than 16 MiB", stdin_size=huge_config)  # fmt: skip

    huge_dump = MAX_DUMP_BYTES + 1
    limit = f"larger than {MAX_DUMP_BYTES // 2**20} MiB"
    for command in ("list", "check"):
        for option in ("--snapshot", "--snapshot6"):
            base = lambda n, c=command: [c, "--cni-cache-dir", n.cache]  # noqa: E731
            for name, (data, words) in SNAPSHOTS.items():
                add(f"{command} {option} {name}",
                    _file_arg(base, option, lambda f, d=data, m=name: f.write(f"dump-{m}", d)),
                    words)  # fmt: skip
                add(f"{command} {option} - {name}", _then(base, option, "-"), words, stdin=data)
            add(f"{command} {option} huge",
                _file_arg(base, option, lambda f: f.huge("dump-huge", huge_dump)), limit)  # fmt: skip
            add(f"{command} {option} - huge", _then(base, option, "-"), limit,
                stdin_size=huge_dump)  # fmt: skip
            add(f"{command} {option} directory", _then(base, option, "/"), "cannot read snapshot")
        add(f"{command} both snapshots from stdin",
            lambda n, c=command: [c, "--snapshot", "-", "--snapshot6", "-"],
            "only one of --snapshot/--snapshot6")  # fmt: skip
    # The plugin's nftables backend: --backend, --nft-snapshot, add's nft refusals.
    for command, base in BASES.items():
        for value in ("bogus", "", "nftable", "nft"):
            add(f"{command} --backend {value!r}", _with(base, "--backend", value), "--backend")
    nft_dumps = {
        **{name: value for name, value in BROKEN_BYTES.items() if name != "not-utf8"},
        "not-utf8": (b"\xff\xfe{}", "not text"),
        "no-list": (b'{"nftables": 3}', "not `nft -j list` output"),
        "bad-handle": (
            b'{"nftables": [{"table": {"family": "ip", "name": "cni_hostport", "handle": "x"}}]}',
            "bad table",
        ),
    }
    nft_limit = f"larger than {NFT_MAX_DUMP_BYTES // 2**20} MiB"
    for command in ("list", "check"):
        base = lambda n, c=command: [c, "--cni-cache-dir", n.cache]  # noqa: E731
        for name, (data, words) in nft_dumps.items():
            words = "not `nft -j list` output" if words == "not valid JSON" else words
            add(f"{command} --nft-snapshot {name}",
                _file_arg(base, "--nft-snapshot", lambda f, d=data, m=name: f.write(f"nft-{m}", d)),
                words)  # fmt: skip
            add(f"{command} --nft-snapshot - {name}", _then(base, "--nft-snapshot", "-"), words,
                stdin=data)  # fmt: skip
        add(f"{command} --nft-snapshot huge",
            _file_arg(base, "--nft-snapshot", lambda f: f.huge("nft-huge", NFT_MAX_DUMP_BYTES + 1)),
            nft_limit)  # fmt: skip
        add(f"{command} --nft-snapshot directory", _then(base, "--nft-snapshot", "/"),
            "cannot read nft snapshot")  # fmt: skip
        add(f"{command} two snapshots from stdin",
            lambda n, c=command: [c, "--snapshot", "-", "--nft-snapshot", "-"],
            "only one of --snapshot/--snapshot6/--nft-snapshot")  # fmt: skip
        add(f"{command} --nft-snapshot with --netns",
            lambda n, c=command: [c, "--nft-snapshot", "/dev/null", "--netns", n.ns],
            "give one or the other")  # fmt: skip
        add(f"{command} --snapshot with --netns",
            lambda n, c=command: [c, "--snapshot", "/dev/null", "--netns", n.ns],
            "give one or the other")  # fmt: skip
    add("check --repair with --nft-snapshot",
        lambda n: ["check", "--repair", "--nft-snapshot", "/dev/null"], "--snapshot")  # fmt: skip
    add("add --backend nftables with --external-setmark-chain",
        _then(_add, "--backend", "nftables", "--external-setmark-chain", "X"),
        "iptables-specific options [externalSetMarkChain]")  # fmt: skip
    add("add --backend nftables with iptables conditions",
        _then(_add, "--backend", "nftables", "--conditions-v4", "-s 10.0.0.0/8"),
        "iptables-specific options [conditionsV4]")  # fmt: skip
    nft_conditions = [
        ("ip saddr 1.2.3.4 ; flush ruleset", "refusing nftables condition"),
        ("ip saddr 1.2.3.4 # x", "refusing nftables condition"),
        # A set's braces in pairs are the plugin's own (interop/test_writes_audit.py);
        # one left open, or closing what the condition did not open, is refused.
        ("ip saddr { 1.2.3.4", "refusing nftables condition"),
        ("ip saddr 1.2.3.4 } {", "refusing nftables condition"),
        # Quoted names pass our filter; nft's parser refuses the rest: still bad input.
        ('ip saddr 1.2.3.4 comment "x"', "syntax error"),
        ("ip saddr 10.0.0.0/99", "Prefix length 99 is invalid"),
        ("tcp dport 99999", "Service out of range"),
    ]
    for i, (value, words) in enumerate(nft_conditions):
        add(f"add --backend nftables nft-cond{i}",
            _then(_add, "--backend", "nftables", "--conditions-v4", value), words)  # fmt: skip
    # A container ID nft takes no comment of (over 128 characters): said so, not the
    # conditions (v1.9.1's ADD fails on it too).
    add("add --backend nftables id-129",
        lambda n: [*_with(_add, "--container", "c" * 129)(n), "--backend", "nftables"],
        "the rules' comment is the container ID, too long for nftables")  # fmt: skip
    # Words our filter lets through that iptables itself refuses, whatever the table
    # holds: said after one `iptables-restore --test` (ops/conditions.py). They were
    # tried three times as if the table had changed, and exit 1.
    ipt_conditions = [
        ("--foo", 'unknown option "--foo"'),
        ("-m nosuchmatch --x 1", "Couldn't load match"),
        ("-m conntrack --ctstate BOGUS", 'Bad ctstate "BOGUS"'),
    ]
    for i, (value, words) in enumerate(ipt_conditions):
        add(f"add iptables ipt-cond{i}", _then(_add, "--conditions-v4", value), words)
        add(f"add --dry-run iptables ipt-cond{i}",
            _then(_add, "--dry-run", "--conditions-v4", value), words)  # fmt: skip
        add(f"check --repair iptables ipt-cond{i}",
            _then(BASES["check"], "--repair", "--conditions-v4", value), words)  # fmt: skip
    add("add --backend iptables against a config's nftables",
        _file_arg(lambda n: ["add", "--netns", n.ns, "--backend", "iptables", "--container",
                             "newctr"], "--cni-config",
                  lambda f: f.write("conf-nft", json.dumps(_portmap_config(backend="nftables"))
                                    .encode())),
        "contradicts")  # fmt: skip
    add("add --cni-config with an unknown backend",
        _file_arg(lambda n: ["add", "--netns", n.ns, "--container", "newctr"], "--cni-config",
                  lambda f: f.write("conf-nftx", json.dumps(_portmap_config(backend="nft"))
                                    .encode())),
        "unrecognized backend")  # fmt: skip
    add("list --snapshot with --conntrack",
        lambda n: ["list", "--snapshot", "/dev/null", "--conntrack"], "--conntrack")  # fmt: skip
    add("check --repair with --snapshot",
        lambda n: ["check", "--repair", "--snapshot", "/dev/null"], "--snapshot")  # fmt: skip

    cache_bases = {  # commands that read the cache; those that change things, as dry runs
        "list": _list,
        "check": lambda n: [
            "check",
            "--netns",
            n.ns,
            "--iptables",
            "nft",
            "--cni-cache-dir",
            n.cache,
        ],
        "gc": lambda n: [*_gc(n), "--dry-run"],
        "flush-udp": lambda n: [
            "flush-udp",
            "--netns",
            n.ns,
            "--iptables",
            "nft",
            "--cni-cache-dir",
            n.cache,
            "--dry-run",
        ],  # fmt: skip
    }
    broken_cache = {name: (data, words) for name, (data, words) in BROKEN_BYTES.items()}
    broken_cache.update(
        {name: (json.dumps(doc).encode(), words) for name, (doc, words) in CACHE_FILES.items()}
    )
    add("gc --netns-liveness without a cache",
        lambda n: ["gc", "--yes", "--netns", n.ns, "--iptables", "nft", "--keep", "x",
                   "--cni-cache-dir", f"{n.cache}-nowhere", "--netns-liveness"],
        "--netns-liveness", "no CNI cache")  # fmt: skip
    # A cache file is not the user's input but one record of the node's (SPEC §5): it
    # is skipped with a warning (code 0; check: 1 for what it then finds), never exit 2.
    for command, base in cache_bases.items():
        for name, (data, words) in broken_cache.items():
            add(f"{command} cache {name}",
                _also(base, "--cni-cache-dir", lambda f, d=data, m=name: f.cache_dir(m, d)),
                "CNI cache file", words, code=WARNED)  # fmt: skip
        add(f"{command} cache huge",
            _also(base, "--cni-cache-dir", lambda f: f.huge_cache_dir(huge_config)),
            "CNI cache file", "larger than 16 MiB", code=WARNED)  # fmt: skip
        # A whole entry under a name libcni never writes: no reading of the name keeps
        # a container live, and it was skipped without a word.
        misnamed = lambda f: f.cache_dir("misnamed", b"{}", "cached9 copy")  # noqa: E731
        add(f"{command} cache misnamed", _also(base, "--cni-cache-dir", misnamed),
            "CNI cache file", "cached9 copy: its name is not libcni's",
            "keeps no container live", code=WARNED)  # fmt: skip
    return cases


WARNED = -1  # Case.code of a record that is skipped with a warning
ALL_CASES = _cases()
CASES = [c for c in ALL_CASES if c.code != WARNED]
CACHE_CASES = [c for c in ALL_CASES if c.code == WARNED]
_get_command = typer.main.get_command


@functools.cache
def _command(app: object) -> object:
    """typer builds the click command anew on every main() (10 ms): once is enough here."""
    return _get_command(app)


def _in_process(
    argv: Sequence[str], stdin: bytes, capsys: pytest.CaptureFixture[str], monkeypatch
) -> subprocess.CompletedProcess:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    monkeypatch.setattr(typer.main, "get_command", _command)
    capsys.readouterr()
    try:
        main(list(argv))
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else int(done.code is not None)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(argv), code, out, err)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_and_changes_nothing(
    node: NodeState, before: Dict[str, str], case: Case, capsys, monkeypatch
):
    # A cache file that cannot be parsed is read again (libcni may be writing it): not here.
    monkeypatch.setattr(cni_cache, "RETRY_SECONDS", 0.0)
    monkeypatch.setenv("NO_COLOR", "1")
    stdin = case.stdin if case.stdin is not None else b"\x00" * case.stdin_size
    argv = case.argv(node)
    done = _in_process(argv, stdin, capsys, monkeypatch)
    assert_error(done, case.code, *case.words)
    # Only flush-udp deletes conntrack entries unasked (add and gc flush the UDP ports
    # they map or unmap: none here), so only its cases pay for reading them.
    conntrack = argv[0] == "flush-udp"
    expected = before if conntrack else {k: v for k, v in before.items() if k != "conntrack"}
    assert _state(node, conntrack) == expected


@pytest.mark.parametrize("case", CACHE_CASES, ids=[c.id for c in CACHE_CASES])
def test_a_cache_file_nobody_can_read_is_a_warning_and_changes_nothing(
    node: NodeState, before: Dict[str, str], case: Case, capsys, monkeypatch
):
    monkeypatch.setattr(cni_cache, "RETRY_SECONDS", 0.0)
    monkeypatch.setenv("NO_COLOR", "1")
    argv = case.argv(node)
    done = _in_process(argv, b"", capsys, monkeypatch)
    # The node's own cache and the broken one (--cni-cache-dir repeats): the node's
    # containers stay live, the unreadable entry's too (by its file name).
    assert argv.count("--cni-cache-dir") == 2, argv
    # check: 1 for the node's own stale container (and only for it).
    assert done.returncode == (1 if argv[0] == "check" else 0), done.stdout + done.stderr
    warning = [line for line in done.stderr.splitlines() if "warning" in line]
    assert len(warning) == 1 and "Traceback" not in done.stderr, done.stderr
    for word in case.words:
        assert word in warning[0], (word, warning[0])
    conntrack = argv[0] == "flush-udp"
    expected = before if conntrack else {k: v for k, v in before.items() if k != "conntrack"}
    assert _state(node, conntrack) == expected


def test_the_table_covers_every_option_of_every_command():
    """A new option without hostile values here fails this test."""
    import typer

    from portmapctl.cli import app

    command = typer.main.get_command(app)
    tried = " ".join(c.id for c in ALL_CASES)
    flags_ok = {"--help", "--quiet", "--verbose", "--conntrack"}  # harmless: no value
    # A bad metrics path is not refused (the command does its work and warns):
    # test_hostile_metrics_paths_warn_once_and_change_nothing tries its hostile values.
    flags_ok |= {"--metrics-file"}
    missing = []
    for name, sub in command.commands.items():  # type: ignore[attr-defined]
        for param in sub.params:
            longest = max(param.opts, key=len)
            if longest in flags_ok or longest == "--publish":
                continue
            spelled = [o for o in param.opts if f"{name} {o}" in tried or f" {o} " in tried]
            if not spelled and f"{name} {longest}" not in tried:
                missing.append(f"{name} {longest}")
    assert not missing, f"no hostile values tried for: {missing}"
    assert len(ALL_CASES) > 500


# --metrics-file: never refused, never fatal. The command does its work, exits as it
# would have, and says in one warning line that the metrics were not written.

METRICS_READ_ONLY = {
    "list": lambda n: ["list", "--netns", n.ns, "--iptables", "nft", "--cni-cache-dir", n.cache],
    "check": lambda n: ["check", "--netns", n.ns, "--iptables", "nft", "--cni-cache-dir", n.cache],
    # (A gc that writes its file and removes nothing: the stale chain is sighted, and
    # pending for an hour. A dry run writes no metrics file at all.)
    "gc": lambda n: ["gc", "--yes", "--min-age", "1h", "--netns", n.ns, "--iptables", "nft",
                     "--cni-cache-dir", n.cache],
}  # fmt: skip
HOSTILE_METRICS_PATHS = {
    "missing-dir": lambda root: str(root / "no-such-dir" / "portmapctl.prom"),
    "a-directory": lambda root: str(root),
    "under-a-file": lambda root: "/etc/hostname/portmapctl.prom",
    "read-only-fs": lambda root: "/proc/portmapctl.prom",
    "newline": lambda root: str(root / "a\n-A INPUT -j ACCEPT" / "x.prom"),
    "nul-byte": lambda root: str(root / "a\0b.prom"),
    "stdout": lambda root: "-",
    "trailing-slash": lambda root: str(root / "metrics") + "/",
}


@pytest.mark.parametrize("command", sorted(METRICS_READ_ONLY))
@pytest.mark.parametrize("hostile", sorted(HOSTILE_METRICS_PATHS))
def test_hostile_metrics_paths_warn_once_and_change_nothing(
    node: NodeState, before: Dict[str, str], command, hostile, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.chdir(tmp_path)  # "-" must not become a file here
    argv = METRICS_READ_ONLY[command](node)
    plain = _in_process(argv, b"", capsys, monkeypatch)
    path = HOSTILE_METRICS_PATHS[hostile](tmp_path)
    done = _in_process([*argv, "--metrics-file", path], b"", capsys, monkeypatch)
    assert done.returncode == plain.returncode == (1 if command == "check" else 0)
    if command != "gc":  # gc shows how long it has seen each chain
        assert done.stdout == plain.stdout
    warnings = done.stderr.splitlines()[len(plain.stderr.splitlines()) :]
    assert done.stderr.startswith(plain.stderr)
    assert len(warnings) == 1, done.stderr
    assert warnings[0].startswith("portmapctl: warning: could not write the metrics file ")
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "no file, no temporary file"
    assert _state(node, conntrack=False) == {k: v for k, v in before.items() if k != "conntrack"}


def test_a_nat_table_without_chains_is_a_node_without_chains(tmp_path, host_ns, iptables_mode):
    """What `iptables-save -t nat` prints where no table was made (it makes the nat
    table's built-in chains): no chains, not bad input. (An empty dump, what plain
    iptables-nft-save prints there, is refused: it is also what a failed pipe gives.)"""
    args = ["list", "--cni-cache-dir", str(tmp_path / "no-cache"), "-o", "json"]
    for family, option in ((4, "--snapshot"), (6, "--snapshot6")):
        dump = tmp_path / f"nat.v{family}.save"
        dump.write_text(rp.save(host_ns, family, iptables_mode))
        done = run([*args, option, str(dump)])
        assert done.returncode == 0, done.stderr
        document = json.loads(done.stdout)
        assert (document["mappings"], document["chains"]) == ([], [])


SAMPLE = [
    c
    for c in CASES
    if c.id
    in (
        "add --network name4",
        "add -p spec21",
        "check --ip addr6",
        "list --container name4",
        "flush-udp --port port7",
        "gc --keep name2",
        "gc --valid-attachments - truncated",
        "add --cni-config name-injection",
        "list --snapshot - binary",
        "gc --netns-liveness without a cache",
        "add --netns ns3",
    )
]


def test_a_sample_as_real_processes(node: NodeState, before: Dict[str, str]):
    """The same refusals through the installed entry point, as a shell script sees them."""
    assert len(SAMPLE) == 11
    for case in SAMPLE:
        stdin = (case.stdin or b"").decode("latin-1")
        assert_error(run(case.argv(node), stdin=stdin), case.code, *case.words)
    assert _state(node) == before


# Each variable (host/settings.py) with values it does not accept: not replaced by the
# default any more, but refused before any work.
BAD_ENVIRONMENT = {
    "PORTMAPCTL_IPTABLES_TIMEOUT": ["abc", "0", "nan", "-5", "1e3"],
    "PORTMAPCTL_XTABLES_WAIT": ["x", "0", "1.5"],
    "PORTMAPCTL_PROGRESS_AFTER": ["x", "-1", "inf"],
    "PORTMAPCTL_NFT_BATCH": ["maybe", "yes", "2"],
    # A relative run directory is a lock per working directory: runs from two of them
    # did not wait for each other (noticed by helper h161).
    "PORTMAPCTL_RUN_DIR": ["run", "./run"],
    "PORTMAPCTL_HOST_LOCAL_DIR": ["networks"],
}


@pytest.mark.parametrize("variable", sorted(BAD_ENVIRONMENT))
def test_an_environment_variable_with_a_bad_value_is_refused_and_changes_nothing(
    node: NodeState, before: Dict[str, str], variable: str
):
    """As real processes (the fast paths of add and list, typer's for the others): one
    line naming the variable, exit 2, the node as it was. add would add a container,
    gc remove the stale one, flush-udp delete conntrack entries."""
    first, *others = BAD_ENVIRONMENT[variable]
    runs = [(first, base) for base in BASES.values()] + [(value, _add) for value in others]
    for value, base in runs:
        done = run(base(node), env={variable: value})
        assert_error(done, 2, f"invalid {variable}={value!r}")
    assert _state(node) == before
