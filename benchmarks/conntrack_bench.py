"""Benchmark: dump and delete UDP conntrack entries, portmapctl vs the conntrack tool.

    python benchmarks/conntrack_bench.py [--entries 10000] [--ports 4] [--noise 0]

Runs as root in a throwaway network namespace, where `portmapctl add` maps the UDP
ports to a container first (flush-udp flushes mapped ports). Each run fills the table with
--entries UDP entries spread over --ports destination ports (plus --noise UDP entries
on another port, which must survive), then removes the entries of those ports with
one method. Prints the median of --runs runs per method (SPEC §6: at most 2 s for
10,000 entries, dump included).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from portmapctl.host import conntrack  # noqa: E402
from portmapctl.host.netns import entered  # noqa: E402

FIRST_PORT = 5353
NOISE_PORT = 9999
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
IPCTNL_MSG_CT_NEW, CTA_TIMEOUT = 0, 7


def addresses(i: int) -> tuple[str, str]:
    return f"10.{64 + (i >> 16) % 64}.{(i >> 8) & 255}.{i & 255}", "10.0.0.1"


def destination_local() -> None:
    """Make the entries' destination one of this namespace's own addresses: flush-udp
    only ever deletes flows to the node itself (forwarded flows are left alone)."""
    subprocess.run(["ip", "addr", "replace", "10.0.0.1/32", "dev", "lo"], check=True)


def create(count: int, ports: list[int], first: int = 0) -> None:
    """count entries, as batched netlink creates (the codec of portmapctl.host.conntrack):
    the fastest way found here (see setup_methods)."""
    destination_local()
    messages = []
    for seq, i in enumerate(range(first, first + count), 1):
        src, dst = addresses(i)
        sport, dport = 10000 + i % 50000, ports[i % len(ports)]
        messages.append(
            conntrack._message(
                IPCTNL_MSG_CT_NEW,
                NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
                socket.AF_INET,
                seq,
                conntrack._tuple(conntrack._CTA_TUPLE_ORIG, socket.AF_INET, src, dst, sport, dport),
                conntrack._tuple(
                    conntrack._CTA_TUPLE_REPLY, socket.AF_INET, dst, src, dport, sport
                ),
                conntrack._nla(CTA_TIMEOUT, struct.pack("!I", 600)),
            )
        )
    with conntrack._session("create") as sock:
        made = sum(
            conntrack._transact(sock, messages[i : i + conntrack._BATCH])[0]
            for i in range(0, len(messages), conntrack._BATCH)
        )
    assert made == count, (made, count)


def create_with_tool(count: int, ports: list[int]) -> None:
    for i in range(count):
        src, dst = addresses(i)
        sport, dport = str(10000 + i % 50000), str(ports[i % len(ports)])
        subprocess.run(
            ["conntrack", "-I", "-p", "udp", "-s", src, "-d", dst, "--sport", sport,
             "--dport", dport, "-t", "600"],
            check=True, capture_output=True,
        )  # fmt: skip


def create_with_pyroute2(count: int, ports: list[int]) -> None:
    from pyroute2.conntrack import Conntrack
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

    with Conntrack() as ct:
        for i in range(count):
            src, dst = addresses(i)
            sport, dport = 10000 + i % 50000, ports[i % len(ports)]
            orig = NFCTAttrTuple(saddr=src, daddr=dst, proto=17, sport=sport, dport=dport)
            ct.entry("add", timeout=600, tuple_orig=orig, tuple_reply=orig.reverse())


def flush() -> None:
    subprocess.run(["conntrack", "-F"], check=True, capture_output=True)


def count_udp() -> int:
    out = subprocess.run(
        ["conntrack", "-L", "-p", "udp"], check=True, capture_output=True, text=True
    ).stdout
    return len(out.splitlines())


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def portmapctl_in_process(ports: list[int], count: int) -> dict[str, float]:
    start = time.perf_counter()
    entries = conntrack.list_udp(dports=ports)
    listed = time.perf_counter()
    deleted = conntrack.delete(entries)
    end = time.perf_counter()
    assert deleted == count, (deleted, count)
    return {"dump": listed - start, "delete": end - listed, "total": end - start}


def portmapctl_process(ports: list[int]) -> float:
    """A fresh interpreter: start-up and the pyroute2 import count too, as for the CLI."""
    code = f"from portmapctl.host import conntrack as c;c.delete(c.list_udp(dports={ports!r}))"
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root}
    return timed(lambda: subprocess.run([sys.executable, "-c", code], check=True, env=env))


def map_ports(netns: str, ports: list[int]) -> None:
    """Map the UDP ports to a container with `portmapctl add`, so that flush-udp (which
    flushes the mapped ports) finds them."""
    publish = [arg for port in ports for arg in ("-p", f"{port}:{port}/udp")]
    subprocess.run(
        [sys.executable, "-m", "portmapctl", "add", "--netns", netns, "--network", "bench",
         "--container", "bench1", "--ip", "10.200.0.5/16", "-q", *publish],
        check=True, env=_env(),
    )  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def portmapctl_cli(netns: str, *options: str) -> float:
    """`portmapctl flush-udp` as an operator runs it: a fresh process that reads the
    nat tables for the mapped ports, dumps, plans and deletes."""
    argv = [sys.executable, "-m", "portmapctl", "flush-udp", "--netns", netns, "-q", *options]
    return timed(lambda: subprocess.run(argv, check=True, env=_env(), stdout=subprocess.DEVNULL))


def conntrack_tool(ports: list[int]) -> float:
    def run() -> None:
        for port in ports:
            subprocess.run(
                ["conntrack", "-D", "-p", "udp", "--orig-port-dst", str(port)],
                check=True, capture_output=True,
            )  # fmt: skip

    return timed(run)


def pyroute2_high_level(ports: list[int]) -> dict[str, float]:
    from pyroute2.conntrack import Conntrack
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

    start = time.perf_counter()
    with Conntrack() as ct:
        entries = [
            entry
            for port in ports
            for entry in ct.dump_entries(tuple_orig=NFCTAttrTuple(proto=17, dport=port))
        ]
        listed = time.perf_counter()
        for entry in entries:
            ct.delete(entry)
    end = time.perf_counter()
    return {"dump": listed - start, "delete": end - listed, "total": end - start}


def setup_methods(ports: list[int], count: int) -> None:
    print(f"creating {count} entries (extrapolated to 10,000):")
    for name, method in [
        ("conntrack -I, one process each", create_with_tool),
        ("pyroute2 Conntrack.entry('add')", create_with_pyroute2),
        ("batched netlink (used below)", create),
    ]:
        flush()
        seconds = timed(lambda method=method: method(count, ports))
        assert count_udp() == count
        print(f"  {name:34} {seconds * 10000 / count:8.2f} s")
    flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10000)
    parser.add_argument("--ports", type=int, default=4)
    parser.add_argument("--noise", type=int, default=0, help="UDP entries on another port")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--high-level", action="store_true", help="also time pyroute2's Conntrack API (slow)"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces, conntrack)")

    ports = list(range(FIRST_PORT, FIRST_PORT + args.ports))
    name = f"pmt-ct-bench-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        map_ports(name, ports)
        with entered(name):
            setup_methods(ports, 300)

            def fill() -> None:
                flush()
                create(args.entries, ports)
                if args.noise:
                    create(args.noise, [NOISE_PORT], first=args.entries)

            results: dict[str, list[float]] = {}

            def record(label: str, seconds: float) -> None:
                results.setdefault(label, []).append(seconds)

            for _ in range(args.runs):
                fill()
                for key, seconds in portmapctl_in_process(ports, args.entries).items():
                    record(f"portmapctl {key} (in process)", seconds)
                assert count_udp() == args.noise
                fill()
                record("portmapctl list+delete, new process", portmapctl_process(ports))
                assert count_udp() == args.noise
                fill()
                record("portmapctl flush-udp, new process", portmapctl_cli(name))
                assert count_udp() == args.noise
                fill()
                record(
                    "portmapctl flush-udp --stale-only, new process",
                    portmapctl_cli(name, "--stale-only"),
                )
                assert count_udp() == args.noise
                fill()
                record(f"conntrack -D x {len(ports)} ports", conntrack_tool(ports))
                assert count_udp() == args.noise
            if args.high_level:
                fill()
                for key, seconds in pyroute2_high_level(ports).items():
                    record(f"pyroute2 Conntrack API {key} (1 run)", seconds)
                assert count_udp() == args.noise
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)

    print(
        f"\n{args.entries} UDP entries on {len(ports)} ports, {args.noise} other UDP entries;"
        f" median of {args.runs} runs:"
    )
    width = max(map(len, results))
    for label, samples in results.items():
        print(f"  {label:{width}}  {statistics.median(samples):7.3f} s")


if __name__ == "__main__":
    main()
