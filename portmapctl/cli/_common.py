"""What every command shares: the common options, as typed and as parsed.

Their vocabularies (BackendChoice, FamilyChoice, ProtoChoice; OutputChoice is
cli/output.py's), Common (one run's common options -> NodeOptions, Output) and
MappingOptions (add's and check's one mapping, as given), the dumps given
(snapshot_files), and the CNI cache they name (CacheInfo: the one line said when it
cannot tell what is live). The common options are declared once (COMMON_PARAMETERS,
cli/_options.py) and added to every command by `common_options`, after the command's
own, so `portmapctl list -o json` works as people type it (SPEC §3). Where output
goes is cli/output.py; --metrics-file around a run, cli/metrics_file.py.
"""

from __future__ import annotations

import os
from enum import Enum
from typing import (
    TYPE_CHECKING,
    Annotated,  # noqa: F401 - re-exported: the command modules' option declarations
    Any,
    Dict,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
)

from portmapctl.cli.output import Output, OutputChoice, WarningTally
from portmapctl.core.backend import Backend, IptablesAccess
from portmapctl.host.paths import (
    CNI_CACHE_DIR,
    default_cni_bin_dirs,
    default_cni_cache_dirs,
    same_dirs,
    stated_cni_bin_dirs,
)

if TYPE_CHECKING:
    from portmapctl.nftables.access.nft import EarlyListing
    from portmapctl.ops.node import NodeOptions


class BackendChoice(str, Enum):
    """Which of the plugin's backends (its config key `backend`)."""

    auto = "auto"
    iptables = "iptables"
    nftables = "nftables"


class FamilyChoice(str, Enum):
    v4 = "4"
    v6 = "6"
    all = "all"
    # What the tables print (FAM column) is accepted too (SPEC §3 output contract).
    v4_word = "v4"
    v6_word = "v6"


class ProtoChoice(str, Enum):
    tcp = "tcp"
    udp = "udp"
    sctp = "sctp"


# --- shell completion of values (typer `autocompletion=`) -----------------------------
# They run on every TAB press: cheap sources only (the CNI cache, /run/netns), never
# iptables (root, slow), and never an error: anything odd gives no suggestions.


def complete_netns(incomplete: str) -> List[str]:
    """Names of the namespaces `ip netns` knows (a path is completed by the shell)."""
    from portmapctl.host.netns import NETNS_RUN_DIR

    try:
        return sorted(n for n in os.listdir(NETNS_RUN_DIR) if n.startswith(incomplete))
    except OSError:
        return []


# The names of the common options, in COMMON_PARAMETERS' order (cli/_options.py, where
# typer declares them: imported only when typer parses a command line).
COMMON_NAMES = (
    "backend",
    "iptables",
    "family",
    "netns",
    "cni_cache_dir",
    "output",
    "no_headers",
    "no_trunc",
    "no_color",
    "quiet",
    "verbose",
)
_TYPER_DECLARED = (
    "PANEL",
    "COMMON_PARAMETERS",
    "NftSnapshotOpt",
    "MetricsFileOpt",
    "CniBinDirOpt",
    "common_options",
    "complete_container",
    "complete_network",
)


def __getattr__(name: str) -> Any:
    """The typer declarations, from cli/_options.py, for the modules that import them
    from here (every command module): typer is imported then, not before."""
    if name in _TYPER_DECLARED:
        from portmapctl.cli import _options

        return getattr(_options, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def families(value: FamilyChoice) -> Tuple[int, ...]:
    if value == FamilyChoice.all:
        return (4, 6)
    return (int(value.value.lstrip("v")),)


class CacheInfo(NamedTuple):
    """Which CNI cache a command used: said on stderr and in every JSON document."""

    dirs: Tuple[str, ...]
    present: bool
    entries: int
    # Whether --cni-cache-dir named `dirs` (else they are the defaults): a missing
    # cache's hint tells to give the option only when it was not given.
    given: bool = False

    def json(self) -> Dict[str, Any]:
        return {"dirs": list(self.dirs), "present": self.present, "entries": self.entries}

    def note(self, told_by: str = "") -> Optional[str]:
        """The one line to say when the cache cannot tell what is live (else None).
        `told_by`: what else says it (gc's --valid-attachments, --keep): then that is
        what the line says, not that stale cannot be told from live."""
        where = ", ".join(os.path.join(d, "results") for d in self.dirs)
        if not self.present:
            # `--cni-cache-dir /var/lib/cni/results`: the folder libcni keeps below it.
            below = [d for d in self.dirs if os.path.basename(os.path.normpath(d)) == "results"]
            hint = " (give --cni-cache-dir)"
            if self.given:
                # Given (--cni-cache-dir or its variable), and wrong: whether the runtime
                # writes there is what to check.
                which = (
                    "is the cache directory" if len(self.dirs) == 1 else "are the cache directories"
                )
                hint = (
                    f" ({', '.join(self.dirs)} {which} given:"
                    " check that the container runtime writes its CNI cache there)"
                )
            if below and os.path.isdir(below[0]):
                parent = os.path.dirname(os.path.normpath(below[0])) or "."
                where += f" (results/ is below the cache directory: give {parent})"
                hint = ""  # (that says what to give)
            if told_by:
                return f"no CNI cache at {where}: the live containers are those {told_by} names"
            return f"no CNI cache at {where}: stale mappings cannot be told from live ones{hint}"
        if not self.entries:
            # Of several directories, one missing is named as such, not called empty.
            results = [os.path.join(d, "results") for d in self.dirs]
            here = [r for r in results if os.path.isdir(r)]
            missing = [r for r in results if r not in here]
            also = f" (no {', '.join(missing)})" if here and missing else ""
            where = ", ".join(here) or where
            return f"the CNI cache at {where} is empty{also}: no container is known to be live"
        return None


def cache_glance(dirs: Sequence[str], given: bool = False) -> CacheInfo:
    """Whether there is a cache with an entry in it, without counting them all (`entries`
    is 0 or 1): what the note needs, at no cost per entry (add, at 5,000 of them).
    `given`: as CacheInfo's."""
    present = False
    for folder in dirs:
        try:
            with os.scandir(os.path.join(folder, "results")) as names:
                present = True
                if any(not n.name.startswith(".") for n in names):
                    return CacheInfo(tuple(dirs), True, 1, given)
        except OSError:
            continue
    return CacheInfo(tuple(dirs), present, 0, given)


def cache_info(dirs: Sequence[str], given: bool = False) -> CacheInfo:
    """Counted by listing results/ (cheap): the entries libcni wrote, not temporary files.
    `given`: as CacheInfo's."""
    present = False
    entries = 0
    for folder in dirs:
        results = os.path.join(folder, "results")
        try:
            names = os.listdir(results)
        except OSError:
            continue
        present = True
        entries += sum(1 for n in names if not n.startswith("."))
    return CacheInfo(tuple(dirs), present, entries, given)


class MappingOptions(NamedTuple):
    """The options that describe one mapping (add, and check of one mapping), as given:
    cli/add_config.mapping_from_options validates them into a MappingConfig."""

    network: Optional[str] = None
    container: Optional[str] = None
    ip: Optional[List[str]] = None
    publish: Optional[List[str]] = None
    no_snat: bool = False
    masq_all: bool = False
    mark_bit: Optional[int] = None
    external_setmark_chain: Optional[str] = None
    conditions_v4: Optional[List[str]] = None  # each a string of words; repeats add up
    conditions_v6: Optional[List[str]] = None
    cni_config: Optional[str] = None
    ifname: str = "eth0"

    @property
    def given(self) -> bool:
        """Whether any was given (check then checks that mapping, not the node). An
        empty value is given (`--container "$CID"`, CID unset: refused as bad input),
        never taken for no option: that checked and repaired the whole node instead."""
        named = (self.network, self.container, self.cni_config, self.external_setmark_chain)
        return (
            any(v is not None for v in named)
            or any((self.ip, self.publish, self.no_snat, self.masq_all))
            or any(v is not None for v in (self.conditions_v4, self.conditions_v6))
            or self.mark_bit is not None
            or self.ifname != "eth0"
        )


MAPPING_NAMES = MappingOptions._fields


class Common(NamedTuple):
    """The common options of one run, parsed."""

    backend: BackendChoice = BackendChoice.auto
    iptables: IptablesAccess = IptablesAccess.AUTO
    family: FamilyChoice = FamilyChoice.all
    netns: Optional[str] = None
    cni_cache_dir: Optional[Tuple[str, ...]] = None
    output: OutputChoice = OutputChoice.table
    no_headers: bool = False
    no_trunc: bool = False
    no_color: bool = False
    quiet: bool = False
    verbose: bool = False
    # The nft listing entry.py started for this run (nftables/early.py), not an option.
    early_nft: Optional[EarlyListing] = None
    # --metrics-file's value came from PORTMAPCTL_METRICS_FILE, not the command line
    # (click's ParameterSource.ENVIRONMENT): the node's own file (node_unrecorded).
    metrics_from_environment: bool = False
    # --cni-bin-dir (check's and add's own option, not a common one: with_bin_dirs).
    cni_bin_dir: Optional[Tuple[str, ...]] = None

    @property
    def plugin_backend(self) -> Optional[Backend]:
        """--backend as the core's word: the one place a choice becomes a Backend
        (None: auto, the plugin's own choice)."""
        if self.backend is BackendChoice.auto:
            return None
        return Backend(self.backend.value)

    @property
    def narrowed(self) -> bool:
        """--family or --backend looks at part of the node only."""
        return self.family is not FamilyChoice.all or self.backend is not BackendChoice.auto

    @property
    def cache_dirs(self) -> Tuple[str, ...]:
        """--cni-cache-dir as given (repeatable; a directory given twice, in any
        spelling, once: host/paths.same_dirs), or the default directories."""
        if self.cni_cache_dir:
            return same_dirs(self.cni_cache_dir)
        return default_cni_cache_dirs()

    def out(self) -> Output:
        return Output(
            self.output,
            self.no_color,
            self.quiet,
            self.verbose,
            self.no_headers,
            self.no_trunc,
            WarningTally(),
        )

    def with_bin_dirs(self, given: Optional[Sequence[str]]) -> Common:
        """With --cni-bin-dir's directories (repeatable; given, they replace the
        defaults, host/paths.CNI_BIN_DIRS), as check and add take it."""
        from portmapctl.errors import BadInput

        if not given:
            return self
        if any(not d for d in given):
            raise BadInput("--cni-bin-dir is empty: give a directory (where `portmap` is)")
        return self._replace(cni_bin_dir=same_dirs(given))

    @property
    def bin_dirs(self) -> Tuple[str, ...]:
        """--cni-bin-dir as given, or the default directories."""
        return self.cni_bin_dir or default_cni_bin_dirs()

    def cache(self) -> CacheInfo:
        return cache_info(self.cache_dirs, given=bool(self.cni_cache_dir))

    def node_options(
        self, snapshots: Optional[Dict[int, str]] = None, nft_snapshot: Optional[str] = None
    ) -> NodeOptions:
        from portmapctl.errors import BadInput
        from portmapctl.ops.node import NodeOptions

        dirs = self.cache_dirs
        if any(not d for d in dirs):
            raise BadInput(f"--cni-cache-dir is empty: give a directory (default {CNI_CACHE_DIR})")
        if (snapshots or nft_snapshot) and self.netns is not None:
            # Silently reading the file would pass for a look at that namespace.
            raise BadInput(
                "--netns reads a namespace's tables and a snapshot is read from a file:"
                " give one or the other"
            )
        wanted = families(self.family)
        if snapshots and not nft_snapshot and not any(f in snapshots for f in wanted):
            # (It read nothing and said "no portmap chains found".)
            missing, other = ("--snapshot6", "IPv6") if 4 in snapshots else ("--snapshot", "IPv4")
            raise BadInput(
                f"--family {self.family.value}: no {other} dump to read (give {missing} FILE)"
            )
        if snapshots and not nft_snapshot and self.backend is BackendChoice.nftables:
            # (As a family with no dump: it read nothing, "no portmap chains found".)
            raise BadInput(
                "--backend nftables: no nftables dump to read (give --nft-snapshot FILE,"
                " `nft -j list ruleset` output)"
            )
        if snapshots and nft_snapshot and "-" in (*snapshots.values(), nft_snapshot):
            raise BadInput(
                "only one of --snapshot/--snapshot6/--nft-snapshot can read standard input"
            )
        return NodeOptions(
            iptables=self.iptables,
            families=wanted,
            netns=self.netns,
            cache_dirs=dirs,
            bin_dirs=self.bin_dirs,
            # (Its variable too where a command without the option reads it.)
            bin_dirs_stated=bool(self.cni_bin_dir or stated_cni_bin_dirs()),
            snapshots=snapshots or {},
            backend=self.plugin_backend,
            nft_snapshot=nft_snapshot,
            early_nft=self.early_nft,
            quiet=self.quiet,
        )


def snapshot_files(
    snapshot: Optional[str], snapshot6: Optional[str], nft_snapshot: Optional[str]
) -> Tuple[Dict[int, str], Optional[str]]:
    """The dumps given (--snapshot, --snapshot6 by family; --nft-snapshot). An empty
    path is bad input: taken for no option (`--snapshot "$DUMP"`, DUMP unset), it had
    the command read the node it runs on instead of the file, and say "healthy"."""
    from portmapctl.errors import BadInput

    given = (("--snapshot", snapshot), ("--snapshot6", snapshot6), ("--nft-snapshot", nft_snapshot))
    for option, path in given:
        if path == "":
            raise BadInput(f"{option} is empty: give a file (a dump to read, or - for stdin)")
    return {f: path for f, path in ((4, snapshot), (6, snapshot6)) if path}, nft_snapshot
