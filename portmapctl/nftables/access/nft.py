"""The real `nft`: `nft -j list table ...` to read, `nft -f -` to write.

One `nft -j list table FAMILY cni_hostport` per family, the families listed
concurrently (one process each: `nft -f` of several `list` commands mis-reports a
missing table in nft 1.0.6, and `list ruleset` would also dump iptables-nft's own
tables, which on a kube-proxy node are most of the bytes). One `nft -f -` for any
change of both families.

The plugin's backend needs nft 1.0.1 or later (knftables checks the same); older or
missing nft is an environment problem (exit 3) raised only when nft state is needed.
A read takes the version from the `metainfo` of the listing itself; `nft --version`
runs only when no listing carries one, and before the first write.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Tuple

from portmapctl.errors import HostProblem
from portmapctl.nftables import FAMILY_NAMES, TABLE
from portmapctl.nftables.access import NftApplyFailed, NftUnusable

if TYPE_CHECKING:
    from portmapctl.nftables.ruleset import Ruleset
    from portmapctl.nftables.transaction import Transaction

MIN_VERSION = (1, 0, 1)
TIMEOUT_SECONDS = 120
# Patterns as text: `re` compiles them when first used (a version check, an error),
# not on every start (compiling them was 5 ms of each `list`).
_VERSION = r"nftables v(\d+)\.(\d+)(?:\.(\d+))?"
_ERRNO = r"Error: (?:Could not process rule: )?([^\n]*)"
# `{"nftables": [{"metainfo": {"version": "1.0.6", ...`: what `nft -j` prints first.
_LISTED_VERSION = '{"nftables": [{"metainfo": {"version": "'


def parse_version(text: str) -> Optional[Tuple[int, int, int]]:
    """`nftables v1.0.6 (Lester Gooch #5)` -> (1, 0, 6)."""
    match = re.search(_VERSION, text)
    if not match:
        return None
    return int(match[1]), int(match[2]), int(match[3] or 0)


def _listed_version(out: str) -> Optional[Tuple[int, int, int]]:
    """The version in the metainfo a `nft -j list` document starts with, else None."""
    if not out.startswith(_LISTED_VERSION):
        return None
    end = out.find('"', len(_LISTED_VERSION), len(_LISTED_VERSION) + 32)
    parts = out[len(_LISTED_VERSION) : end].split(".") if end > 0 else []
    if not 2 <= len(parts) <= 3 or not all(p.isdigit() and p.isascii() for p in parts):
        return None
    major, minor, patch = (int(p) for p in (*parts, "0")[:3])
    return major, minor, patch


def _too_old(version: Tuple[int, int, int]) -> str:
    found = ".".join(map(str, version))
    return f"nft {found} is too old for the plugin's nftables backend: needs 1.0.1 or later"


def first_error(stderr: str) -> str:
    """The errno text of nft's first error ("No such file or directory"), else its line."""
    match = re.search(_ERRNO, stderr)
    if match:
        # "No such file or directory; did you mean table ... in family ip?": the errno part.
        return match[1].split(";", 1)[0].strip()
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[0] if lines else "failed"


class RealNft:
    name = "nft"
    writable = True

    def __init__(self, binary: Optional[str] = None) -> None:
        self._binary = binary
        self._checked = False

    def binary(self) -> str:
        if self._binary is None:
            path = shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
            if path is None:
                raise NftUnusable(
                    "nft not found: install nftables (1.0.1 or later) to work with the "
                    "plugin's nftables backend"
                )
            self._binary = path
        return self._binary

    def _run(self, argv: List[str], stdin: Optional[str] = None) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(
                argv,
                input=stdin,
                capture_output=True,
                text=True,
                check=False,
                timeout=TIMEOUT_SECONDS,
            )
        except OSError as err:
            raise HostProblem(f"cannot run {argv[0]}: {err.strerror}") from None

    def check_version(self) -> Tuple[int, int, int]:
        proc = self._run([self.binary(), "--version"])
        version = parse_version(proc.stdout + proc.stderr)
        if proc.returncode != 0 or version is None:
            raise NftUnusable(f"{self.binary()} --version failed: is it nftables' nft?")
        if version < MIN_VERSION:
            raise NftUnusable(_too_old(version))
        return version

    def _ready(self) -> None:
        if not self._checked:
            self.check_version()
            self._checked = True

    def read(self, families: Iterable[int] = (4, 6)) -> Ruleset:
        procs: Dict[int, subprocess.Popen] = {}
        try:
            for family in sorted(set(families)):
                argv = [self.binary(), "-j", "list", "table", FAMILY_NAMES[family], TABLE]
                procs[family] = subprocess.Popen(
                    argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                )
        except OSError as err:
            raise HostProblem(f"cannot run {self.binary()}: {err.strerror}") from None
        # Imported while nft lists: the parser's import is not on the way to nft's start.
        from portmapctl.nftables.ruleset import parse_many

        done: List[Tuple[int, subprocess.CompletedProcess]] = []
        for family, proc in procs.items():
            try:
                out, err = proc.communicate(timeout=TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                raise HostProblem("nft did not answer within 120 s") from None
            done.append((family, subprocess.CompletedProcess(proc.args, proc.returncode, out, err)))
        self._check_listed_version([proc.stdout for _f, proc in done if proc.returncode == 0])
        documents = []
        for family, proc in done:
            source = f"nft -j list table {FAMILY_NAMES[family]} {TABLE}"
            if proc.returncode != 0:
                reason = first_error(proc.stderr)
                if reason.startswith("No such file or directory"):
                    continue  # no table in this family: nothing made by the plugin
                if "Operation not permitted" in reason:
                    raise HostProblem(f"{source}: operation not permitted (run as root)")
                raise HostProblem(f"{source} failed: {reason}")
            documents.append((proc.stdout, source))
        return parse_many(documents)

    def _check_listed_version(self, outputs: List[str]) -> None:
        """The version check, from the `metainfo` that `nft -j` prints first: one
        process less per read (it was a tenth of `list`'s nft time). Without one (no
        table, or not nftables' JSON) `nft --version` answers."""
        if self._checked:
            return
        for out in outputs:
            listed = _listed_version(out)
            if listed is not None:
                if listed < MIN_VERSION:
                    raise NftUnusable(_too_old(listed))
                self._checked = True
                return
        self._ready()

    def apply(self, txn: Transaction) -> None:
        if not txn:
            return
        self._ready()
        try:
            proc = subprocess.run(
                [self.binary(), "-f", "-"],
                input=txn.render(),
                capture_output=True,
                text=True,
                check=False,
                timeout=TIMEOUT_SECONDS,
            )
        except OSError as err:
            raise HostProblem(f"cannot run {self.binary()}: {err.strerror}") from None
        except subprocess.TimeoutExpired:
            raise NftApplyFailed(
                "nft -f did not finish within 120 s and was stopped", maybe_applied=True
            ) from None
        if proc.returncode != 0:
            reason = first_error(proc.stderr)
            if "Operation not permitted" in reason:
                raise HostProblem("nft -f: operation not permitted (run as root)")
            raise NftApplyFailed(
                f"nft -f refused the transaction: {reason}",
                reason,
                userspace="Could not process rule" not in proc.stderr,
            )
