"""A node as the commands see it: where to look (namespace, backend, cache) and
how to read and change it safely. The access it is opened with (which backend, read
and written through what) is chosen in ops/node_access.py.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Callable,
    Dict,
    Iterator,
    List,
    Optional,
    Protocol,
    Tuple,
    TypeVar,
    Union,
)

from portmapctl.core.backend import Backend as PluginBackend
from portmapctl.core.backend import IptablesAccess
from portmapctl.core.patterns import lazy
from portmapctl.errors import ApplyFailed, HostProblem, PortmapctlError, found_in
from portmapctl.host import lock, netns, paths
from portmapctl.host.netns import NamespaceView
from portmapctl.iptables.access import BACKEND_NAMES, Backend, open_backend
from portmapctl.iptables.access.unread import Unread
from portmapctl.iptables.ruleset import NatTable
from portmapctl.iptables.transaction import Transaction
from portmapctl.ops.node_access import as_the_plugin_chooses, iptables_access, nft_access

if TYPE_CHECKING:
    from portmapctl.cni import cache as cni_cache
    from portmapctl.host.cni_bins import PortmapBinaries
    from portmapctl.nftables.access import NftAccess, NftUnusable
    from portmapctl.nftables.access.nft import EarlyListing
    from portmapctl.nftables.ruleset import Ruleset, UnreadChain
    from portmapctl.nftables.transaction import Transaction as NftTransaction

APPLY_TRIES = 3
_NOTHING_CHANGED = "nothing changed"
# How the tools' lines say it (restore.py: "refused the transaction, nothing changed: ",
# iptc: "... for 5 s: nothing changed"), taken out where a failed converge says it.
_SAID_UNCHANGED = lazy(r"[,:] nothing changed(?=:|$)")


class HoldsTransaction(Protocol):
    """A plan that carries the transaction it needs (gc's FamilyPlan)."""

    @property
    def transaction(self) -> Transaction: ...


Planned = TypeVar("Planned", bound=Union[Transaction, HoldsTransaction])
Read = TypeVar("Read")
Other = TypeVar("Other")


@dataclass(frozen=True)
class NodeOptions:
    """The options every command takes (SPEC §3).

    `iptables` is how iptables is read and written (--iptables); `backend` which of
    the plugin's backends to look at (--backend): one of them, or None for auto (both,
    each container followed to its own, as cli's Common.plugin_backend says it).
    """

    iptables: IptablesAccess = IptablesAccess.AUTO
    families: Tuple[int, ...] = (4, 6)
    netns: Optional[str] = None
    cache_dirs: Tuple[str, ...] = field(default_factory=paths.default_cni_cache_dirs)
    snapshots: Dict[int, str] = field(default_factory=dict)
    backend: Optional[PluginBackend] = None
    nft_snapshot: Optional[str] = None
    # The backend the plugin takes on this node for a config without a `backend` key:
    # iptables wherever iptables works; nftables only where the node has none
    # (node_access.as_the_plugin_chooses). Never --backend itself: that narrows what is
    # looked at.
    keyless: PluginBackend = PluginBackend.IPTABLES
    # An nft listing started before the command line was parsed (entry.py, for `list`):
    # the first read takes it if it is the one that read would start.
    early_nft: Optional[EarlyListing] = field(default=None, compare=False, repr=False)
    # -q: nothing on stderr but problems (no "waiting for the lock" line for cron to mail).
    quiet: bool = False
    # Where the node's CNI plugins are (--cni-bin-dir): their `portmap` is read (never
    # run) where a container's backend cannot be told from its rules (plugin_binaries).
    bin_dirs: Tuple[str, ...] = field(default_factory=paths.default_cni_bin_dirs)
    # Whether `bin_dirs` were stated (--cni-bin-dir, PORTMAPCTL_CNI_BIN_DIR): their
    # binaries decide. The defaults are a guess of where the runtime's plugins are (a
    # podman dependency's /usr/lib/cni/portmap beside a kubelet's plugins elsewhere):
    # theirs only add doubt (ops/check/binary_verdicts.py).
    bin_dirs_stated: bool = field(default_factory=lambda: bool(paths.stated_cni_bin_dirs()))

    def __post_init__(self) -> None:
        # Its word, as a core Backend: "auto" is None here, and a word of another
        # vocabulary (an --iptables flavour) is refused, not read as neither backend.
        if self.backend is not None:
            object.__setattr__(self, "backend", PluginBackend(self.backend))
        # (And --iptables's word as an IptablesAccess: a caller's plain "nft" is one.)
        object.__setattr__(self, "iptables", IptablesAccess(self.iptables))

    @property
    def offline(self) -> bool:
        """Reading dumps, not the kernel: nothing is read from or written to the node."""
        return bool(self.snapshots or self.nft_snapshot)

    @property
    def uses_iptables(self) -> bool:
        return self.backend != PluginBackend.NFTABLES

    @property
    def uses_nft(self) -> bool:
        return self.backend != PluginBackend.IPTABLES

    @property
    def reads_iptables(self) -> bool:
        """iptables is looked at: the kernel's, or the dumps given (an --nft-snapshot
        alone reads no iptables, --backend nftables none at all)."""
        return self.uses_iptables and (not self.offline or bool(self.snapshots))

    @property
    def arguments(self) -> str:
        """These options as command-line arguments, those that differ from the
        defaults (` --netns pmdemo --family 4`): a fix command a command prints is
        spelled with them, or it would run on another namespace, cache or family."""
        from portmapctl.core.text import shell_word

        spelled = ""
        if self.netns:
            spelled += f" --netns {shell_word(self.netns)}"
        if self.backend is not None:
            spelled += f" --backend {self.backend}"
        if self.iptables is not IptablesAccess.AUTO:
            spelled += f" --iptables {self.iptables}"
        if tuple(self.families) != (4, 6):
            one = len(self.families) == 1
            spelled += " --family " + (str(self.families[0]) if one else "all")
        if tuple(self.cache_dirs) != paths.default_cni_cache_dirs():
            spelled += "".join(f" --cni-cache-dir {shell_word(d)}" for d in self.cache_dirs)
        if tuple(self.bin_dirs) != paths.default_cni_bin_dirs():
            spelled += "".join(f" --cni-bin-dir {shell_word(d)}" for d in self.bin_dirs)
        return spelled


@dataclass
class Node:
    """A node opened for a command: its backends, read and written under the lock."""

    options: NodeOptions
    backend: Backend
    nft: Optional[NftAccess] = None
    # Why nft could not be used (no nft, too old) when --backend auto met that: iptables
    # work goes on, and whatever needs nft state raises it.
    nft_unusable: Optional[NftUnusable] = None
    # Why nft could not be used where the kernel holds no plugin table: read as empty,
    # nothing needs nft to read it, but a container whose rules belong in nftables
    # cannot be written there (a check or repair of it raises this, before any work).
    nft_absent: Optional[NftUnusable] = None
    # Set while `locked` holds the lock for this node: a second `locked` inside (a dry
    # run's save of its sightings, under a library caller's write) must not wait on
    # the lock this process holds already (flock(2) would, for a second descriptor).
    holds_lock: bool = field(default=False, compare=False, repr=False)
    # Chains of the plugin's tables that are not its own and that the parser could not
    # take (nftables/ruleset.py UnreadChain), as any read of this command found them: said
    # once by nft_unread.
    nft_skipped: Tuple[UnreadChain, ...] = field(default=(), compare=False, repr=False)
    # The node's portmap binaries as plugin_binaries read them: once a command.
    binaries: Optional[PortmapBinaries] = field(default=None, compare=False, repr=False)

    def plugin_binaries(self) -> Optional[PortmapBinaries]:
        """The `portmap` binaries of the node's CNI bin directories (options.bin_dirs;
        host/cni_bins.py), read once. None where the node read is not this host's: a
        dump may be another node's, a test's tables in memory are no node (under
        --netns they are read: the binaries are the host's files, not namespaced)."""
        if self.namespace_view() is None:
            return None
        if self.binaries is None:
            from portmapctl.host.cni_bins import portmap_binaries

            self.binaries = portmap_binaries(
                self.options.bin_dirs, stated=self.options.bin_dirs_stated
            )
        return self.binaries

    def read_nft(self, families: Optional[Tuple[int, ...]] = None) -> Ruleset:
        """The plugin's nftables tables (empty when not looked at)."""
        from portmapctl.nftables.access import NftUnusable
        from portmapctl.nftables.ruleset import EMPTY

        if self.nft is None:
            return EMPTY
        wanted = families or self.options.families
        try:
            live = self.nft.read(wanted)
        except NftUnusable as err:
            if self.options.backend == PluginBackend.NFTABLES:
                raise
            if not self._plugin_tables_may_be_here(wanted):
                # Known empty without nft: no entry or judgment needs nft to read it (a
                # config whose plugin ignored `"backend": "nftables"` on a node without
                # nft stopped every whole-node run, exit 3). A write still needs nft.
                self.nft_absent = err
                return EMPTY
            self.nft_unusable = err
            return EMPTY
        self.note_nft_unread(live)
        return live

    def note_nft_unread(self, live: Ruleset) -> None:
        """Keep the chains `live` skipped unread (UnreadChain) that no read of this
        command met before, for nft_unread to say: also those of the reads a write
        makes before each try (converge_nft), where another tool's chain may first
        show. One per chain: a rule more in it since is no other chain."""
        said = {(u.family, u.chain) for u in self.nft_skipped}
        new = tuple(u for u in live.unread if (u.family, u.chain) not in said)
        if new:
            self.nft_skipped += new

    def nft_unread(self) -> List[str]:
        """The warning of a whole-node command that went on without the plugin's
        nftables tables: nft cannot be used here (nft_unusable), the kernel holds them
        (or cannot be asked), and no cached container needed them (that stops the
        command). Their rules forward ports all the same: said, never passed over. Not
        where their host-port chains hold no rule: the plugin's DEL of its last
        container leaves the tables so, for good on a node that moved back to iptables
        and dropped nft, and every cron run said "their rules still forward ports".
        Also each chain of those tables that is not the plugin's and could not be read
        (nft_skipped): the rest was read, and the command went on without it."""
        skipped = [unread.warning() for unread in self.nft_skipped]
        if self.nft_unusable is None or not self.plugin_rules_may_be_here():
            return skipped
        return skipped + [
            f"the plugin's nftables tables (cni_hostport) are not read: {self.nft_unusable};"
            " their rules still forward ports, and are not shown, checked or removed"
        ]

    def plugin_rules_may_be_here(self) -> bool:
        """Whether the plugin's host-port chains (hostports, hostip_hostports) may hold
        a rule: asked over netlink as _plugin_tables_may_be_here is, and on the same
        terms (True offline, beside a fake nft, or where it cannot be told); under
        --backend iptables, where no nft is looked at, as read_nft_evidence's real nft."""
        from portmapctl.iptables.access.nfmsg import chains_hold_rules
        from portmapctl.nftables import TABLE
        from portmapctl.nftables.access.nft import RealNft
        from portmapctl.nftables.ruleset import HOSTIP_HOSTPORTS, HOSTPORTS

        if self.options.offline or (self.nft is not None and not isinstance(self.nft, RealNft)):
            return True
        return chains_hold_rules(self.options.families, TABLE, (HOSTPORTS, HOSTIP_HOSTPORTS))

    def _plugin_tables_may_be_here(self, families: Tuple[int, ...]) -> bool:
        """Whether the kernel may hold the plugin's `cni_hostport` table in `families`:
        asked over netlink (no nft needed), for the real nft of a live node only (an
        offline node's kernel is not the one its files come from); True where that
        cannot be told."""
        from portmapctl.iptables.access.nfmsg import table_present
        from portmapctl.nftables import TABLE
        from portmapctl.nftables.access.nft import RealNft

        if self.options.offline or not isinstance(self.nft, RealNft):
            return True
        return any(table_present(family, TABLE) for family in families)

    def read_nft_evidence(self, quick: bool = False, strict: bool = False) -> Ruleset:
        """The plugin's nftables tables, also where nftables is not looked at
        (--backend iptables): only to tell which cache entries are nftables' (a config
        without the `backend` key whose rules are there alone), so that nothing of
        theirs is expected, or written, in iptables. Empty offline, beside iptables in
        memory, and where nft cannot be used (the plugin's nftables backend runs nft: it
        wrote nothing there). `quick`: where nftables is not looked at, read for what
        can do without it (a warning; gc's flush judged by the removed chains alone):
        each listing waits EVIDENCE_TIMEOUT_SECONDS, not 120 s. `strict`: where nft
        cannot be used and the kernel holds the plugin's tables, that error (exit 3), not
        read as no table: a judgement made from the absence of a container's rules there
        (ops/check/followed.py _key_ignored) would be made from tables nobody read."""
        from portmapctl.nftables.access import NftUnusable
        from portmapctl.nftables.ruleset import EMPTY

        if self.nft is not None:
            live = self.read_nft()
            if strict and self.nft_unusable is not None:
                raise self.nft_unusable  # (set only where the tables may be here)
            return live
        if self.options.offline or self.options.backend != PluginBackend.IPTABLES:
            return EMPTY
        if self.backend.name not in BACKEND_NAMES:
            return EMPTY  # iptables in memory: a test's node, whose nftables is not this host's
        from portmapctl.nftables.access import nft as real_nft

        timeout = real_nft.EVIDENCE_TIMEOUT_SECONDS if quick else real_nft.TIMEOUT_SECONDS
        try:
            return real_nft.RealNft(read_timeout=timeout).read(self.options.families)
        except NftUnusable:
            if strict:
                from portmapctl.iptables.access.nfmsg import tables_present
                from portmapctl.nftables import TABLE

                if tables_present(self.options.families, TABLE):
                    raise
            return EMPTY

    def read_iptables_evidence(
        self, families: Tuple[int, ...], strict: bool = False
    ) -> Dict[int, NatTable]:
        """iptables' nat tables in `families` where there is one (asked first: no save
        runs where there is none, and a legacy read would create it), also under
        --backend nftables, where they are read only to judge (whose port a flow is,
        which rule takes it); none offline without --snapshot, or where iptables
        cannot be read then (a -v detail; `strict`: that error instead, for a judgement
        that an absence there would decide, followed.chains_in_iptables)."""
        if self.options.reads_iptables:
            backend = self.backend
        elif self.options.offline:
            return {}
        else:
            try:
                backend = open_backend(self.options.iptables, families=families)
            except (PortmapctlError, OSError) as err:
                if strict:
                    raise
                _debug("reading iptables to judge by failed: %s", err)
                return {}
        has_table = getattr(backend, "has_nat_table", None)
        wanted = tuple(f for f in families if has_table is None or has_table(f))
        if not wanted:
            return {}
        if self.options.reads_iptables:
            return self.read(wanted)
        try:
            return {f: backend.read(f) for f in wanted}
        except (PortmapctlError, OSError) as err:
            if strict:
                raise
            _debug("reading iptables to judge by failed: %s", err)
            return {}

    def read_nft_to_change(self) -> Ruleset:
        """The tables as converge_nft's first try reads them (for a plan made ahead,
        then given to it as `planned`); as read_nft, nft unusable under --backend auto
        is noted (nft_unusable) for the caller to judge, and read as no table."""
        if self.nft_unusable is not None:
            raise self.nft_unusable
        return self.read_nft()

    def converge_nft(
        self,
        plan: Callable[[Ruleset], NftTransaction],
        dry_run: bool = False,
        planned: Optional[NftTransaction] = None,
        went_in: Optional[Callable[[ApplyFailed], None]] = None,
        at_generation: bool = False,
    ) -> str:
        """One `nft -f` transaction for both families, re-planned when the tables
        changed under us; returns its text ("" when nothing was needed).

        `planned`: the first try's transaction, planned from read_nft_to_change (gc
        plans before it asks); `plan` makes the later ones. Deleting by handle, it
        fails whole when a rule went meanwhile (handles are never reused). `went_in`:
        a try whose nft died without saying is judged by the next read, not raised;
        when it went in, its text is returned and `went_in` is told its error.
        `at_generation` (gc's deletions): applied only at the ruleset generation of the
        read they were checked against (nftables.node.converge), so a firewall reload
        after that read cannot hand their handles to live rules.
        """
        from portmapctl.nftables.node import converge

        if self.nft_unusable is not None:
            raise self.nft_unusable
        if self.nft is None:
            return ""
        if dry_run or not self.nft.writable:
            if planned is not None:
                return planned.render()
            live = self.read_nft()
            if self.nft_unusable is not None:
                # (This read found nft unusable, the tables maybe here: a plan from no
                # table is no plan of theirs. add's own read used to find it first.)
                raise self.nft_unusable
            return plan(live).render()
        if planned is not None and not planned:
            return ""
        first = [planned] if planned is not None else []

        def first_then_plan(live: Ruleset) -> NftTransaction:
            self.note_nft_unread(live)
            # nftables.node.converge reads before every try: the first read is spent,
            # unless the tables were made again since `planned` was read (a firewall
            # reload): its handles may now be other containers' rules, and nft would
            # delete them. Planned again from this read then.
            if first:
                planned_first = first.pop()
                if planned_first.holds_in(live):
                    return planned_first
            return plan(live)

        done = converge(
            self.nft,
            first_then_plan,
            self.options.families,
            judge_unsure=went_in is not None,
            at_generation=at_generation,
        )
        if done.unsure is not None and went_in is not None:
            went_in(done.unsure)
        return done.text

    @property
    def families(self) -> Tuple[int, ...]:
        if self.options.snapshots:
            return tuple(f for f in self.options.families if f in self.options.snapshots)
        return self.options.families

    def read(self, families: Optional[Tuple[int, ...]] = None) -> Dict[int, NatTable]:
        wanted = families or self.families
        read_families = getattr(self.backend, "read_families", None)
        if read_families is not None and len(wanted) > 1:
            return read_families(wanted)
        return {f: self.backend.read(f) for f in wanted}

    def namespace_view(self) -> Optional[NamespaceView]:
        """How to judge cached namespaces: only on a live node, read through one of the
        kernel backends (a snapshot's cache comes from another node; the memory backend
        is a test's node). None: not judged."""
        # --backend nftables on a live node reads nftables from the kernel: judged too.
        # (By name: a repair wraps the backend, read_once.ReadOnce.)
        kernel = self.backend.name in (*BACKEND_NAMES, Unread.name)
        live = not self.options.offline and kernel
        return NamespaceView() if live else None

    def read_cache(self, judge_namespaces: bool = True) -> Optional[List[cni_cache.Attachment]]:
        """judge_namespaces=False: each entry's namespace is not looked up (a stat per
        entry; gc needs it only for --netns-liveness), its netns_state UNKNOWN."""
        from portmapctl.cni import cache as cni_cache  # ~15M instructions: not for add

        view = self.namespace_view() if judge_namespaces else None
        return cni_cache.read_cache(self.options.cache_dirs, view)

    def start_read(self) -> Callable[[], Dict[int, NatTable]]:
        """read() in two steps where the backend can (iptables-save of both families
        starts now); the function returned gives what read() would."""
        start_read = getattr(self.backend, "start_read", None)
        if start_read is not None and len(self.families) > 1:
            return start_read(self.families)
        return self.read

    def read_with_cache(
        self, started: Optional[Callable[[], Dict[int, NatTable]]] = None
    ) -> Tuple[Dict[int, NatTable], Optional[List[cni_cache.Attachment]]]:
        """read() and read_cache() at once, for a command that only looks (`list`).

        The cache is read while iptables-save runs on the other core: 0.07 s of the
        0.39 s that `list` took for 1,000 containers. The saves are started from a
        thread, which is in the namespace this one has entered (a new thread starts in
        its creator's); errors come out as from read() and then read_cache().
        Commands that change the node read in their own order (gc: tables first).
        `started`: what start_read() returned, when the saves were started before.
        """
        return side_by_side(started or self.read, self.read_cache)

    def read_then_cache(
        self, read: Callable[[], Read], judge_namespaces: bool = True
    ) -> Tuple[Read, Optional[List[cni_cache.Attachment]]]:
        """read(), then the CNI cache, as a command that removes by the cache needs
        them (gc: a container whose ADD finished after the tables were read must count
        as live), in about the time of the slower of the two.

        The cache files are parsed while `read` runs (it waits on iptables-save);
        once it is done, the directories are listed again and the files that appeared
        meanwhile are read too: what the cache holds after the read is all in. A file
        gone meanwhile still counts (its container stays live one run more, never goes
        early). The order is read_cache's; judge_namespaces as there.
        """
        from portmapctl.cni import cache as cni_cache

        view = self.namespace_view() if judge_namespaces else None
        dirs = self.options.cache_dirs

        def first_reading() -> Tuple[List[str], List[cni_cache.Attachment]]:
            paths = cni_cache.cache_paths(dirs) or []
            return paths, cni_cache.read_entries(paths, view)

        tables, (paths, found) = side_by_side(read, first_reading)
        later = cni_cache.cache_paths(dirs)
        if later is None:
            return tables, None  # gone while we read: as read_cache says
        known = set(paths)
        found += cni_cache.read_entries([p for p in later if p not in known], view)
        by_path: Dict[str, List[cni_cache.Attachment]] = {}
        for attachment in found:
            by_path.setdefault(attachment.path, []).append(attachment)
        listed = set(later)
        order = later + [p for p in paths if p not in listed]
        return tables, [a for path in order for a in by_path.get(path, ())]

    def converge(
        self,
        family: int,
        plan: Callable[[NatTable], Planned],
        dry_run: bool = False,
        planned: Optional[Planned] = None,
        unsure: Optional[Callable[[Planned, ApplyFailed], None]] = None,
    ) -> Planned:
        """Read, plan, apply; when the table changed under us (the plugin ran), again.

        `plan` returns a Transaction, or a plan holding one as `.transaction` (gc's,
        with what it removes). `planned`: the first try's, made ahead from a table
        read before (gc plans, then asks); the later tries read and call `plan`.
        Every try is one whole transaction, so a failed try changes nothing. A
        refusal its backend knows to be final (ApplyFailed.final) ends the tries.
        `unsure(plan, error)` is told of a try whose tool died without saying whether
        its transaction went in (ApplyFailed.maybe_applied), before the next read: the
        next plan is made on a table it may have changed. Returns what `plan` returned for the try that was applied (or would be, in a
        dry run).
        """
        error: Optional[ApplyFailed] = None
        for attempt in range(APPLY_TRIES):
            found = planned if attempt == 0 and planned is not None else None
            if found is None:
                found = plan(self.backend.read(family))
            txn = found if isinstance(found, Transaction) else found.transaction
            if dry_run or not txn:
                return found
            try:
                self.backend.apply(txn)
                return found
            except ApplyFailed as err:
                if err.final:
                    raise  # (the same plan would be refused the same way)
                if err.maybe_applied and unsure is not None:
                    unsure(found, err)
                error = err
        outcome = (
            "the last try may have been applied (whole): run again to see"
            if error is not None and error.maybe_applied
            else _NOTHING_CHANGED
        )
        said = str(error)
        if outcome == _NOTHING_CHANGED:
            # The tool's line says it too ("... refused the transaction, nothing changed:
            # ..."): said once, where gc's lines for a refused chain carry it.
            said = _SAID_UNCHANGED.sub("", said, count=1)
        raise ApplyFailed(
            f"gave up after {APPLY_TRIES} tries, {outcome}: {said}",
            maybe_applied=error is not None and error.maybe_applied,
            busy=error is not None and error.busy,
        )

    def converge_judged(
        self,
        family: int,
        plan: Callable[[NatTable], Transaction],
        notes: List[str],
        dry_run: bool = False,
        earlier: Optional[Tuple[Transaction, ApplyFailed]] = None,
    ) -> Transaction:
        """converge for a write that makes what is missing (add, check --repair), a try
        whose tool died without saying (ApplyFailed.maybe_applied; `earlier`: one made
        before this call, with what it would change) judged by the read after it: a
        transaction goes in whole or not at all, so when that read leaves nothing to do
        the try went in. It is returned as the transaction applied (what it made gets
        the plugin's side effects), and `notes` gets errors.found_in's warning. (gc
        judges its own tries: ops/gc/converge.py converge_family.)"""
        killed = [earlier] if earlier is not None else []

        def unsure(tried: Planned, err: ApplyFailed) -> None:
            killed.append((tried, err))  # type: ignore[arg-type]

        txn = self.converge(family, plan, dry_run, unsure=unsure)
        if txn or not killed or dry_run:
            return txn  # type: ignore[return-value]
        tried, err = killed[-1]
        notes.append(found_in(f"IPv{family}", err))
        return tried


def side_by_side(
    background: Callable[[], Read],
    foreground: Callable[[], Other],
    foreground_first: bool = False,
) -> Tuple[Read, Other]:
    """background() in a thread while foreground() runs here; errors come out as if
    background() had run first (`foreground_first`: as if foreground() had). The
    thread is in the namespace this one has entered (a new thread starts in its
    creator's)."""
    import threading

    found: Dict[str, object] = {}

    def run() -> None:
        try:
            found["value"] = background()
        except BaseException as err:  # noqa: BLE001 - re-raised below, in this thread
            found["error"] = err

    worker = threading.Thread(target=run, name="iptables-save", daemon=True)
    worker.start()
    try:
        other = foreground()
    except BaseException as err:
        worker.join()
        # As if background had run first; but Ctrl-C or SIGTERM here is the run's end,
        # whatever the background met meanwhile (sent to the process group, by a
        # terminal or systemd, it also killed the background's nft or iptables-save,
        # whose "failed" was the exit 3 said instead of "aborted" or "terminated").
        interrupted = not isinstance(err, Exception)
        if "error" in found and not foreground_first and not interrupted:
            raise found["error"] from None  # type: ignore[misc]
        raise
    worker.join()
    if "error" in found:
        raise found["error"]  # type: ignore[misc]
    return found["value"], other  # type: ignore[return-value]


def has_net_admin() -> bool:
    """CAP_NET_ADMIN in the effective set (root without it cannot change iptables)."""
    from portmapctl.host.privilege import CAP_NET_ADMIN, effective

    found = effective(CAP_NET_ADMIN)
    return os.geteuid() == 0 if found is None else found


@contextlib.contextmanager
def opened(options: NodeOptions, write: bool = False, lock_now: bool = True) -> Iterator[Node]:
    """Enter the namespace, pick the backend, and (to write) take the lock.

    lock_now=False: the caller takes it later with `locked` (interactive gc reads and
    plans, then asks, and only then writes: no other run waits on a person).
    """
    if write and not options.offline and not has_net_admin():
        # (Not "iptables": flush-udp changes conntrack, the nftables backend nft's tables.)
        raise HostProblem(
            "changing the node's nat rules or conntrack entries needs root (or CAP_NET_ADMIN):"
            " run with sudo"
        )
    with netns.entered(options.netns):
        options = as_the_plugin_chooses(options)
        node = Node(options, iptables_access(options), nft_access(options))
        if write and lock_now:
            with locked(node), _tools_stopped(node):
                yield node
        else:
            with _tools_stopped(node):
                yield node


@contextlib.contextmanager
def _tools_stopped(node: Node) -> Iterator[None]:
    """On the way out (SIGTERM, Ctrl-C, an error), kill the iptables tools still
    running: a save that a thread waits on (side_by_side) is not reaped by that thread
    when the main one ends the run, and would outlive us, hung, for good. Inside the
    lock: a restore under way is stopped before another run may write."""
    try:
        yield
    finally:
        stop = getattr(node.backend, "stop_tools", None)
        if stop is not None:
            stop()


@contextlib.contextmanager
def locked(node: Node) -> Iterator[None]:
    """The portmapctl lock, to change the node (none needed offline)."""
    if node.options.offline or node.holds_lock:
        yield
        return
    with lock.held(say_waiting=not node.options.quiet):
        node.holds_lock = True
        try:
            yield
        finally:
            node.holds_lock = False


def _debug(message: str, *args: object) -> None:
    from portmapctl.ops.add_ahead import debug

    debug(message, *args)
