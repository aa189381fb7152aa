"""What a tool's binary answered about itself, remembered for as long as it is the same
file: /run/portmapctl/tool-answers.json.

`add` on iptables-nft asks `iptables --version` on every run, before it sends its
nf_tables batch (iptables/access/nfnl_add.py: the bytes it writes are pinned to the
iptables versions tests/kernel/test_nfnl_add.py holds). The answer is a property of the
binary: a process per add (a fork, an exec and the loading of libnftnl and libxtables,
about 3 ms of CPU on the 2-core VM, docs/performance.md) to learn again what the same
file said last time. The memo keys it by the file `iptables` resolves to: its real
path, device, inode, size, modification and change times. An upgrade (dpkg writes a
new file and renames it over the old), an `update-alternatives` switch (another real
path) or a rebuilt binary changes the key, and the tool is asked again.

Best effort both ways: a memo that cannot be read, is not a regular file of ours, is
writable by others, or is not what this module writes, is as none (the tool is asked);
one that cannot be written is not written. Neither is ever an error of the command.
"""

from __future__ import annotations

import json
import os
import stat
from typing import List, Optional

from portmapctl.host import paths

NAME = "tool-answers.json"
VERSION = 1
_MAX_BYTES = 64 * 1024


def identity(path: str) -> Optional[List[object]]:
    """The key of the file `path` resolves to (None when it cannot be looked at)."""
    real = os.path.realpath(path)
    try:
        info = os.stat(real)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    return [real, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]


def recall(question: str, key: List[object], run_dir: Optional[str] = None) -> Optional[str]:
    """What the file with `key` answered to `question` when last asked, if remembered
    (in `run_dir`, by default the run directory: host/paths.py)."""
    entry = _load(run_dir or paths.RUN_DIR).get(question)
    if isinstance(entry, dict) and entry.get("key") == key:
        answer = entry.get("answer")
        return answer if isinstance(answer, str) else None
    return None


def remember(question: str, key: List[object], answer: str, run_dir: Optional[str] = None) -> None:
    """Keep `answer` for `question` of the file with `key` (the other questions' stay)."""
    run_dir = run_dir or paths.RUN_DIR
    answers = _load(run_dir)
    answers[question] = {"key": key, "answer": answer}
    write_document(run_dir, NAME, {"version": VERSION, "answers": answers})


def write_document(run_dir: str, name: str, document: object) -> None:
    """`document` as JSON in `run_dir`/`name`, replaced whole, 0600; not written when it
    cannot be (a full or read-only /run: the memo is then as none next time)."""
    from portmapctl.errors import PortmapctlError
    from portmapctl.host.files import write_atomically
    from portmapctl.host.lock import safe_run_dir

    text = json.dumps(document, separators=(",", ":"))
    try:
        safe_run_dir(run_dir)
        write_atomically(os.path.join(run_dir, name), text.encode())
    except PortmapctlError:
        pass


def read_document(run_dir: str, name: str, version: int, max_bytes: int) -> dict:
    """The JSON object written by write_document at `version`, or {} when there is none
    to trust: not a regular file of ours (a symlink, another owner), writable by group
    or others, larger than `max_bytes`, not JSON, another version."""
    from portmapctl.errors import PortmapctlError
    from portmapctl.host.lock import open_own

    path = os.path.join(run_dir, name)
    try:
        fd = open_own(path, os.O_RDONLY, "memo")
    except (OSError, PortmapctlError):
        return {}
    try:
        info = os.fstat(fd)
        if info.st_mode & 0o022 or info.st_size > max_bytes:
            return {}
        document = json.loads(os.read(fd, max_bytes + 1))
    except (OSError, ValueError):
        return {}
    finally:
        os.close(fd)
    if not isinstance(document, dict) or document.get("version") != version:
        return {}
    return document


def _load(run_dir: str) -> dict:
    answers = read_document(run_dir, NAME, VERSION, _MAX_BYTES).get("answers")
    return dict(answers) if isinstance(answers, dict) else {}
