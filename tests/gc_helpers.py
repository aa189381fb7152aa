"""What tests/kernel/test_gc.py and tests/unit/test_gc_pure.py share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Collection, Dict, List, Optional, Sequence

import pytest
import realplugin as rp
from pmctl import run

from portmapctl.iptables.chains import OLD_TOPLEVEL_SNAT, chain_name
from portmapctl.ops.gc.state import STATE_FILE, ChainKey


def backdate(run_dir: Path, chains: Collection[str], seconds: float, family: int = 4) -> None:
    """Backdate by `seconds` the first sightings gc saved of `chains` (as state.save
    writes them: boot-time seconds, per namespace part): a chain past --min-age without
    waiting for it."""
    path = run_dir / STATE_FILE
    document = json.loads(path.read_text())
    keys = {ChainKey(family, chain).text() for chain in chains}
    found = set()
    for part in document["namespaces"].values():
        for key, seen in part["chains"].items():
            if key in keys:
                seen["first_seen"] = max(0.0, seen["first_seen"] - seconds)
                found.add(key)
    assert found == keys, document
    path.write_text(json.dumps(document))


def ports(*specs: str) -> List[dict]:
    """Port mappings as the runtime passes them: `8080/tcp` -> 8080 to container port 80."""
    found = []
    for spec in specs:
        port, proto = spec.split("/")
        found.append({"hostPort": int(port), "containerPort": 80, "protocol": proto})
    return found


class Node_:
    """A test node: the host namespace, its iptables flavour and a CNI cache."""

    def __init__(self, host_ns: str, mode: str, cache: Path) -> None:
        self.ns, self.mode, self.cache = host_ns, mode, cache
        self.confs: Dict[str, dict] = {}

    def add(self, network: str, cid: str, ips: Sequence[str], ports: List[dict], cache=True):
        conf = rp.plugin_conf(network, ips, ports)
        done = rp.run_plugin("ADD", self.ns, cid, conf, mode=self.mode)
        assert done.returncode == 0, done.stdout + done.stderr
        self.confs[cid] = conf
        if cache:
            self.cache_add(network, cid)
        return conf

    def cache_add(self, network: str, cid: str) -> Path:
        conf = self.confs[cid]
        ips = [ip["address"] for ip in conf["prevResult"]["ips"]]
        ports = conf["runtimeConfig"]["portMappings"]
        return rp.write_cni_cache(self.cache, network, cid, "eth0", conf, ports, ips)

    def check(self, cid: str) -> None:
        for done in rp.run_check(self.ns, cid, self.confs[cid], mode=self.mode):
            assert done.returncode == 0, f"CHECK {cid}: {done.stdout}{done.stderr}"

    def ipt(self, family: int, *args: str) -> None:
        rp.iptables(self.ns, ["-t", "nat", *args], family=family, mode=self.mode)

    def legacy_snat(self, network: str, cid: str, ip: str) -> str:
        """A pre-2018 CNI-SN- chain, as the old plugin made it (by hand: nothing does now)."""
        sn = chain_name(network, cid, "SN-")
        if "-N CNI-HOSTPORT-SNAT" not in self.lines(4, keep_decl=True):
            self.ipt(4, "-N", OLD_TOPLEVEL_SNAT)
            self.ipt(
                4,
                "-A",
                "POSTROUTING",
                "-s",
                "127.0.0.1",
                "!",
                "-d",
                "127.0.0.1",
                "-j",
                OLD_TOPLEVEL_SNAT,
            )
        self.ipt(4, "-N", sn)
        comment = f'snat name: "{network}" id: "{cid}"'
        self.ipt(4, "-A", OLD_TOPLEVEL_SNAT, "-m", "comment", "--comment", comment, "-j", sn)
        self.ipt(
            4,
            "-A",
            sn,
            "-s",
            "127.0.0.1",
            "-d",
            ip,
            "-p",
            "tcp",
            "--dport",
            "80",
            "-j",
            "MASQUERADE",
        )
        return sn

    def lines(self, family: int, keep_decl: bool = False) -> List[str]:
        text = rp.strip_save_comments(rp.save(self.ns, family, self.mode))
        if keep_decl:
            return [
                f"-N {line[1:].split()[0]}" if line.startswith(":") else line
                for line in text.splitlines()
            ]
        return text.splitlines()

    def gc(self, *args: str, stdin: Optional[str] = None, cache: Optional[Path] = None):
        argv = ["gc", "--netns", self.ns, "--iptables", self.mode]
        argv += ["--cni-cache-dir", str(cache or self.cache), *args]
        return run(argv, stdin=stdin)


@pytest.fixture
def node(host_ns, iptables_mode, tmp_path) -> Node_:
    cache = tmp_path / "cni"
    (cache / "results").mkdir(parents=True)
    return Node_(host_ns, iptables_mode, cache)
