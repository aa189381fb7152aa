"""What `add` reads before its restore, started as early as it can be.

On iptables-nft, `add` writes a new container without reading the table
(planner.plan_blind), but first needs three reads that do not depend on each other:
the jumps into CNI-HOSTPORT-DNAT (`iptables -S PREROUTING`, `-S OUTPUT`), the
interface towards the container (`ip route get`, for route_localnet), and which rules
of CNI-HOSTPORT-DNAT may claim one of its host ports (iptables/access/nfnl.py, for the
shadow warning). Each runs in a thread of its own (which enters --netns itself), so
they overlap each other and whatever the caller does meanwhile: the CLI starts them
right after checking its options, before the rest of add (ops/add.py, ops/node.py) is
even imported. None of them needs the portmapctl lock: the reads look at rules only
the plugin and this command add, and nothing ever removes (the jumps), or only feed a
warning and a sysctl.
"""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

from portmapctl.errors import PortmapctlError

if TYPE_CHECKING:
    from portmapctl.core.mapping import MappingConfig
    from portmapctl.iptables.access.nfnl import Claims
    from portmapctl.iptables.ruleset import Args

T = TypeVar("T")
ChainReads = Dict[Tuple[int, str], Optional[Tuple["Args", ...]]]


class Ahead:
    """The three reads, running; each accessor waits for its own."""

    def __init__(
        self,
        chains: Callable[[], Optional[ChainReads]],
        routes: Callable[[], Optional[Dict[str, str]]],
        claims: Callable[[], Optional[Claims]],
    ) -> None:
        self._chains = chains
        self._routes = routes
        self._claims = claims

    @classmethod
    def start(
        cls,
        netns: Optional[str],
        config: MappingConfig,
        families: Sequence[int],
        *,
        look: bool = True,
    ) -> Ahead:
        """Start the reads for a new container written to iptables-nft (the caller knows
        the flavour). `look`: the shadow warning's too."""
        from portmapctl.iptables.access.restore import RestoreBackend
        from portmapctl.iptables.chains import wanted_chains
        from portmapctl.iptables.planner import read_before_blind

        wanted = [
            (family, chain)
            for family in families
            for chain in read_before_blind(wanted_chains(config, family))
        ]
        chains = _in_thread(netns, lambda: RestoreBackend("nft").read_chains(wanted), "reads")
        address = config.address(4)
        routes: Callable[[], Optional[Dict[str, str]]] = lambda: None  # noqa: E731
        if config.snat and 4 in families and address is not None:
            ip = str(address.ip)
            routes = _in_thread(netns, lambda: route_interfaces([ip]), "ip route get")
        claims: Callable[[], Optional[Claims]] = lambda: None  # noqa: E731
        if look:
            from portmapctl.iptables.access import nfnl

            claims = _in_thread(netns, lambda: nfnl.dnat_claims(config, families), "nfnl")
        return cls(chains, routes, claims)

    def chains(self) -> Optional[ChainReads]:
        """read_chains of what read_before_blind names (None: the reads failed; the
        caller reads again, and meets the problem itself)."""
        return self._chains()

    def interfaces(self) -> Optional[Dict[str, str]]:
        """route_interfaces of the container's IPv4 address (None: not looked up)."""
        return self._routes()

    def claims(self) -> Claims:
        """nfnl.dnat_claims by family ({}: not looked at, or failed)."""
        return self._claims() or {}


def _in_thread(
    netns: Optional[str], work: Callable[[], T], what: str
) -> Callable[[], Optional[T]]:
    """Run `work` in a thread inside `netns` (None: the namespace this thread is in,
    which a new thread starts in); the returned call waits for its result, None when
    it failed (logged at -v: the caller does without it, or does it again)."""
    import threading

    box: Dict[str, T] = {}

    def run() -> None:
        from portmapctl.host.netns import entered

        try:
            with entered(netns):
                box["result"] = work()
        except (PortmapctlError, OSError) as err:
            import logging

            logging.getLogger(__name__).debug("%s ahead of add's restore failed: %s", what, err)

    thread = threading.Thread(target=run, name=what, daemon=True)
    thread.start()

    def result() -> Optional[T]:
        thread.join()
        return box.get("result")

    return result


def route_interfaces(addresses: Sequence[str]) -> Dict[str, str]:
    """The interface the kernel routes each address through: `ip route get` for all of
    them in one `ip -batch` process (-force: an address without a route is skipped,
    not the end of the batch). Addresses without a route are left out."""
    done = subprocess.run(
        ["ip", "-o", "-force", "-batch", "-"],
        input="".join(f"route get {a}\n" for a in addresses),
        capture_output=True,
        text=True,
        check=False,
    )
    wanted = set(addresses)
    found: Dict[str, str] = {}
    for line in done.stdout.splitlines():
        words: List[str] = line.split()
        # "10.88.0.5 dev cni0 src 10.88.0.1 uid 0 \    cache": the address comes first
        # (after "local"/"broadcast"... for such routes), as the kernel spells it.
        first = next((i for i, word in enumerate(words[:2]) if word in wanted), None)
        if first is None:
            continue
        if "dev" in words[first:]:
            found[words[first]] = words[words.index("dev", first) + 1]
    return found
