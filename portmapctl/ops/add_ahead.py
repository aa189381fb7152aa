"""What `add` does ahead: its write and its reads, started as early as they can be.

On iptables-nft, `add` writes a new container without reading the table: one
`iptables-restore` whose checks refuse it whole when the node is not as assumed
(planner.plan_blind; then add reads and plans as usual). Beside it, two reads that do
not depend on it: the interface towards the container (host/routes.py, for
route_localnet) and which rules of CNI-HOSTPORT-DNAT may claim one of its host ports
(iptables/access/nfnl.py, for the shadow warning). Each runs in a thread of its own
(which enters --netns itself), so they overlap each other and whatever the caller
does meanwhile: the CLI starts them, under the portmapctl lock, right after checking
its options, before the rest of add (ops/add.py, ops/node.py, render) is even
imported: that import and the restore run at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Set, Tuple, TypeVar

from portmapctl.errors import ApplyFailed, PortmapctlError, ToolTimedOut
from portmapctl.host.routes import route_interfaces

if TYPE_CHECKING:
    from portmapctl.core.mapping import MappingConfig
    from portmapctl.iptables.access import Backend
    from portmapctl.iptables.access.nfnl import Claims, KeptRule
    from portmapctl.iptables.access.nfnl_lines import Lister
    from portmapctl.iptables.access.restore import RestoreBackend
    from portmapctl.iptables.chains import Chain
    from portmapctl.iptables.shapes import ProtoPort
    from portmapctl.iptables.transaction import Transaction
    from portmapctl.ops.add_early import EarlyClaims

T = TypeVar("T")
# Told of a write whose tool died without saying, with what it would have changed.
Unsure = Callable[["Transaction", ApplyFailed], None]
SWITCH_INTERVAL = 0.0005


class Ahead:
    """The work, running; each accessor waits for its own part."""

    def __init__(
        self,
        written: Callable[[], Optional[Dict[int, Optional[Transaction]]]],
        routes: Callable[[], Optional[Dict[str, str]]],
        claims: Callable[[], Optional[Claims]],
        taken: Callable[[], Optional[Dict[int, Dict[ProtoPort, str]]]],
        killed: Optional[Dict[int, Tuple[Transaction, ApplyFailed]]] = None,
        hung: Optional[Dict[int, ToolTimedOut]] = None,
    ) -> None:
        self._written = written
        self._killed = {} if killed is None else killed
        self._hung = {} if hung is None else hung
        self._routes = routes
        self._claims = claims
        self._taken = taken

    @classmethod
    def start(
        cls,
        netns: Optional[str],
        config: MappingConfig,
        families: Sequence[int],
        *,
        look: bool = True,
        early: Optional[EarlyClaims] = None,
    ) -> Ahead:
        """Start the work for a container written to iptables-nft (the caller knows the
        flavour, and holds the portmapctl lock). `look`: the shadow warning's read too;
        `early`: that read, started before the lock (ops/add_early.py), kept when it
        shows the chain as the write found it, else taken again."""
        import sys
        import threading

        from portmapctl.core.backend import Flavour
        from portmapctl.iptables.access.restore import RestoreBackend

        # The threads start processes and read netlink while this one imports the rest
        # of add: they get the GIL back within 0.5 ms, not the default 5 ms, so each
        # step of theirs does not wait for the imports.
        sys.setswitchinterval(SWITCH_INTERVAL)
        from portmapctl.iptables.chains import TOPLEVEL_DNAT, wanted_chains

        backend = RestoreBackend(Flavour.NFT)
        wanted = {family: wanted_chains(config, family) for family in families}
        settled = threading.Event()  # the write is over: a torn dump can be taken again
        committed: List[Tuple[int, int]] = []  # the generations of nfnl_add's commit

        killed: Dict[int, Tuple[Transaction, ApplyFailed]] = {}
        hung: Dict[int, ToolTimedOut] = {}

        def write() -> Dict[int, Optional[Transaction]]:
            try:
                done = write_new(wanted, committed)
                if done is not None:
                    return done
                return write_blind(
                    backend,
                    wanted,
                    lambda txn, err: killed.__setitem__(txn.family, (txn, err)),
                    hung,
                )
            finally:
                settled.set()

        def own_commit() -> Optional[Tuple[int, int]]:
            settled.wait()
            return committed[0] if committed else None

        written = _in_thread(netns, write, "blind write")
        address = config.address(4)
        routes: Callable[[], Optional[Dict[str, str]]] = lambda: None  # noqa: E731
        if config.snat and 4 in families and address is not None:
            ip = str(address.ip)
            routes = _in_thread(netns, lambda: route_interfaces([ip]), "route lookup")
        claims: Callable[[], Optional[Claims]] = lambda: None  # noqa: E731
        taken: Callable[[], Optional[Dict[int, Dict[ProtoPort, str]]]] = lambda: None  # noqa: E731
        if look:
            from portmapctl.iptables.access import nfnl

            def foreign_takers() -> Dict[int, Dict[ProtoPort, str]]:
                settled.wait()  # not an iptables -S racing the batch's commit
                return listed_foreign_takers(backend, config, families)

            # PREROUTING and the chains its benign jumps reach: a few ms of iptables -S
            # each, while add's own thread sets route_localnet and flushes conntrack.
            taken = _in_thread(netns, foreign_takers, "foreign rules")

            def dump_again(family: int) -> Optional[List[KeptRule]]:
                ports = {p.host_port for p in config.ports if p.applies_to(family)}
                return nfnl.rules_for_ports(
                    family, TOPLEVEL_DNAT, sorted(ports), before_retry=settled.wait,
                    own_commit=own_commit,
                )  # fmt: skip

            if early is None:
                claims = _in_thread(netns, lambda: {f: dump_again(f) for f in families}, "nfnl")
            else:

                def early_or_again() -> Claims:
                    dumped = early.dumped(netns, frozenset(p.host_port for p in config.ports))
                    ours = own_commit()
                    claims: Claims = {}
                    for family in families:
                        found = dumped.get(family)
                        if found is not None and ours is not None and found.taken_at(ours[0], ours):
                            debug("IPv%s: the shadow warning's dump, taken as add started", family)
                            claims[family] = found.kept
                        else:
                            debug("IPv%s: the shadow warning's dump, taken again", family)
                            claims[family] = dump_again(family)
                    return claims

                claims = _in_thread(netns, early_or_again, "nfnl")
        return cls(written, routes, claims, taken, killed, hung)

    def written(self) -> Dict[int, Optional[Transaction]]:
        """write_blind's transaction by family: None (or no entry) where the caller must
        read and plan (refused, or the reads failed: the caller meets that again)."""
        return self._written() or {}

    def killed(self) -> Dict[int, Tuple[Transaction, ApplyFailed]]:
        """By family, the write whose restore died without saying (it may have gone in)
        and its error; the caller's read judges it."""
        self._written()
        return dict(self._killed)

    def hung(self) -> Dict[int, ToolTimedOut]:
        """By family, the write whose restore timed out (it may have gone in): add ends
        with its error, running no restore again (write_blind)."""
        self._written()
        return dict(self._hung)

    def interfaces(self) -> Optional[Dict[str, str]]:
        """route_interfaces of the container's IPv4 address (None: not looked up)."""
        return self._routes()

    def claims(self) -> Claims:
        """nfnl.dnat_claims by family ({}: not looked at, or failed)."""
        return self._claims() or {}

    def taken(self) -> Optional[Dict[int, Dict[ProtoPort, str]]]:
        """foreign.takers by family, from PREROUTING and the chains it reaches as
        listed beside the write (None: not looked at, or failed: add lists them)."""
        return self._taken()


def early_foreign_takers(
    netns: Optional[str], config: MappingConfig, families: Sequence[int], flavour: str
) -> Callable[[], Optional[Dict[int, Dict[ProtoPort, str]]]]:
    """The foreign-rule walk over PREROUTING and the chains it reaches, listed in a
    thread as add starts, for a write with no Ahead (legacy iptables: each `iptables -S`
    fetches the whole table from the kernel, ~20 ms at 1,000 containers, which the
    imports of the rest of add now hide). Judged as the write will leave PREROUTING
    (`entry_appended`), so listing it before the write gives the same answer."""
    from portmapctl.iptables.access.restore import RestoreBackend

    backend = RestoreBackend(flavour)
    return _in_thread(
        netns, lambda: listed_foreign_takers(backend, config, families), "foreign rules"
    )


def listed_foreign_takers(
    backend: RestoreBackend, config: MappingConfig, families: Sequence[int]
) -> Dict[int, Dict[ProtoPort, str]]:
    """foreign.takers by family over chains listed one by one (`iptables -S CHAIN`),
    judged as add's write leaves PREROUTING (its jump to CNI-HOSTPORT-DNAT appended
    where missing)."""
    from portmapctl.iptables import foreign

    taken = {}
    for family in families:
        lister = memo_lister(backend, family)
        try:
            taken[family] = foreign.hooked_takers(
                foreign.listing_reader(
                    chain_lister(
                        backend.list_chain if lister is None else lister.list_chain, family
                    )
                ),
                foreign_wanted(config, family),
                entry_appended=True,
            )
        finally:
            if lister is not None:
                lister.close()
    return taken


def memo_lister(backend: RestoreBackend, family: int) -> Optional[Lister]:
    """On iptables-nft, a lister that prints a chain from the memo of how this iptables
    prints each rule (iptables/access/nfnl_lines.py) and runs `iptables -S` only for a
    rule it has not seen; None elsewhere (legacy lists as it always did)."""
    from portmapctl.core.backend import Flavour

    if backend.flavour is not Flavour.NFT:
        return None
    from portmapctl.iptables.access.nfnl_lines import Lister

    try:
        binary = backend.list_binary(family)
    except PortmapctlError:
        return None  # (list_chain says so, as before)
    return Lister(family, binary, backend.list_chain)


def foreign_wanted(config: MappingConfig, family: int) -> Dict[Optional[str], Set[ProtoPort]]:
    """The (protocol, host port) pairs of `config` in `family`, by the one host IP they
    are mapped on (core/mapping.destination, None: every address): foreign rules are
    walked for each (iptables/foreign.takers)."""
    from portmapctl.core.mapping import destination

    wanted: Dict[Optional[str], Set[ProtoPort]] = {}
    for p in config.ports:
        if p.applies_to(family):
            wanted.setdefault(destination(p.host_ip), set()).add((p.protocol, p.host_port))
    return wanted


def chain_lister(
    list_chain: Callable[[int, str], Optional[str]], family: int
) -> Callable[[str], Optional[str]]:
    """`list_chain` of one family, a failure logged at -v and read as no such chain
    (the foreign-rule warning does without it)."""

    def one(chain: str) -> Optional[str]:
        try:
            return list_chain(family, chain)
        except (PortmapctlError, OSError) as err:
            debug("listing %s for the foreign-rule warning failed: %s", chain, err)
            return None

    return one


def write_new(
    wanted: Dict[int, List[Chain]], committed: List[Tuple[int, int]]
) -> Optional[Dict[int, Optional[Transaction]]]:
    """The new container as one nf_tables batch (iptables/access/nfnl_add.py), every
    family at once: each family's transaction (what changed), or None for each when the
    node is not as planner.plan_blind assumes (the caller reads and plans). None when
    it cannot go that way (an iptables whose bytes are not pinned, a rule of a shape
    nfnl_rules does not write, PORTMAPCTL_NFT_BATCH=0): write_blind then. The
    generations of the commit are put in `committed`."""

    from portmapctl.iptables.access import nfgen, nfnl_add
    from portmapctl.iptables.planner import plan_blind

    if not nfgen.batches_on() or not wanted:
        return None
    try:
        version = nfnl_add.PinnedCheck()  # answered when the batch is ready to go
    except OSError as err:
        debug("iptables --version: %s", err)
        return None
    try:
        plans = [nfnl_add.plan(family, chains) for family, chains in wanted.items()]
        if any(one is None for one in plans):
            debug("a rule nfnl_rules does not write: iptables-restore writes the container")
            return None
        result = nfnl_add.apply_new([one for one in plans if one is not None], version.answer)
    finally:
        version.close()
    debug("nf_tables batch: %s (%s)", result.outcome.value, result.why)
    if result.outcome is nfnl_add.Outcome.UNAVAILABLE:
        return None
    if result.outcome is nfnl_add.Outcome.REFUSED:
        return {family: None for family in wanted}
    if result.commit is not None:
        committed.append(result.commit)
    return {
        family: plan_blind(chains, family).without_checks() for family, chains in wanted.items()
    }


def write_blind(
    backend: Backend,
    wanted: Dict[int, List[Chain]],
    unsure: Optional[Unsure] = None,
    hung: Optional[Dict[int, ToolTimedOut]] = None,
) -> Dict[int, Optional[Transaction]]:
    """apply_blind for each family; a family whose restore cannot run gets None. One
    that timed out goes in `hung` and ends the writes (the next family's is not tried):
    add ends with it, where it would read, plan and run the restore again, each run
    waiting the timeout again."""
    from portmapctl.iptables.planner import plan_blind

    done: Dict[int, Optional[Transaction]] = {}
    for family, chains in wanted.items():
        try:
            done[family] = apply_blind(backend, plan_blind(chains, family), unsure)
        except ToolTimedOut as err:
            if hung is None:
                raise
            hung[family] = err
            break
        except PortmapctlError:
            done[family] = None
    return done


def apply_blind(
    backend: Backend, txn: Transaction, unsure: Optional[Unsure] = None
) -> Optional[Transaction]:
    """A new container on a working node, without reading the table: planner.plan_blind's
    transaction `txn` applied (what it changed returned: its -C lines left out), or None
    when iptables-restore refused it (nothing changed: a shared chain or rule, or a jump
    into one, is missing, or the container's chain exists) or the backend cannot check
    (python-iptables), or not soundly in that family (ip6tables-legacy); then the caller reads and plans as usual. `unsure(txn, error)` is
    told when the restore died without saying (killed: it may have gone in, whole), with
    what it would have changed: the caller's read and plan judge it (ops/add.py).

    Every check is in the transaction, the jumps into CNI-HOSTPORT-DNAT from PREROUTING
    and OUTPUT too (reading those two chains first, as before, cost two processes on
    the way to the restore and saved nothing measurable: the -A of the entry rules
    makes iptables-nft fetch CNI-HOSTPORT-DNAT's rules anyway). Sending no -C at all
    (every check a read of its chain first) makes the restore itself flat -- 2 / 4 /
    16-29 ms at 100 / 1,000 / 5,000 containers against 3 / 11 / 70-100 -- but was not
    faster end to end: the quicker commit then lands during the shadow warning's dump
    of CNI-HOSTPORT-DNAT (nfnl), which is torn and taken again (measured side by side,
    benchmarks/shapes_bench.py)."""
    checks = getattr(backend, "checks", None)
    if checks is None or not checks(txn.family):
        return None
    try:
        backend.apply(txn)
    except ApplyFailed as err:
        debug("IPv%s: planned without a read, refused (%s): reading the table", txn.family, err)
        if err.maybe_applied and unsure is not None:
            unsure(txn.without_checks(), err)
        return None
    return txn.without_checks()


def debug(message: str, *args: object) -> None:
    """A -v detail. -v imports logging to show them (cli/__init__.py); without it
    nothing would be shown, and importing logging costs 3-5 ms of every add."""
    import sys

    logging = sys.modules.get("logging")
    if logging is not None:
        logging.getLogger("portmapctl.ops.add").debug(message, *args)


def _in_thread(netns: Optional[str], work: Callable[[], T], what: str) -> Callable[[], Optional[T]]:
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
        except Exception as err:  # noqa: BLE001 - add does without it, or does it again
            debug("%s, ahead of the rest of add, failed: %s", what, err)

    thread = threading.Thread(target=run, name=what, daemon=True)
    thread.start()

    def result() -> Optional[T]:
        thread.join()
        return box.get("result")

    return result
