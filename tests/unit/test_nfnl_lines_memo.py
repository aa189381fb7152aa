"""iptables/access/nfnl_lines.py's memo file: what it learns from a listing and what it
refuses to, how it is bounded, and that a memo it cannot trust (corrupt, another
version, another iptables, not ours, writable by others, a symlink) is as none and
written over, never an error. No root needed: the memo is given its identity."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from portmapctl.iptables.access import nfnl_lines
from portmapctl.iptables.access.nfnl_lines import Memo

KEY = [["/usr/sbin/xtables-nft-multi", 1, 2, 3, 4, 5], None]
TEXT = "-P PREROUTING ACCEPT\n-A PREROUTING -j DOCKER\n-A PREROUTING -j CNI-HOSTPORT-DNAT\n"
KEYS = ["head", "docker", "cni"]


def _learned(run_dir: Path) -> Memo:
    memo = Memo(4, KEY, str(run_dir))
    assert memo.learn("PREROUTING", KEYS, TEXT)
    memo.save()
    return memo


def test_a_learned_listing_is_printed_back_whole_by_a_later_run(tmp_path):
    _learned(tmp_path)
    memo_file = tmp_path / nfnl_lines.file_name(4)
    assert memo_file.stat().st_mode & 0o777 == 0o600
    later = Memo(4, KEY, str(tmp_path))
    assert later.text(KEYS) == TEXT
    assert later.text(["head", "cni", "docker"]) == (
        "-P PREROUTING ACCEPT\n-A PREROUTING -j CNI-HOSTPORT-DNAT\n-A PREROUTING -j DOCKER\n"
    )
    assert later.text(["head", "docker", "unknown"]) is None
    assert Memo(6, KEY, str(tmp_path)).text(KEYS) is None  # (the other family's file)


def test_another_iptables_identity_is_as_no_memo(tmp_path):
    _learned(tmp_path)
    other = [["/usr/sbin/xtables-nft-multi", 1, 2, 3, 4, 6], None]
    assert Memo(4, other, str(tmp_path)).text(KEYS) is None
    assert Memo(4, None, str(tmp_path)).text(KEYS) is None
    # ... and the next learning replaces it with the new identity's lines alone.
    memo = Memo(4, other, str(tmp_path))
    assert memo.learn("DOCKER", ["d"], "-N DOCKER\n")
    memo.save()
    assert Memo(4, KEY, str(tmp_path)).text(KEYS) is None
    assert Memo(4, other, str(tmp_path)).text(["d"]) == "-N DOCKER\n"


@pytest.mark.parametrize(
    "chain, keys, text",
    [
        ("PREROUTING", KEYS, TEXT[:-1]),  # (cut short)
        ("PREROUTING", KEYS[:2], TEXT),  # a line more than rules dumped
        ("PREROUTING", [*KEYS, "x"], TEXT),  # a rule more than lines
        ("OUTPUT", KEYS, TEXT),  # another chain's listing
        ("PREROUTING", KEYS, TEXT.replace("-P PREROUTING ACCEPT", "# Warning: legacy")),
        # A comment holding a newline: as many lines, one of them no rule's.
        ("PREROUTING", KEYS, '-P PREROUTING ACCEPT\n-A PREROUTING -m comment --comment "a\nb"\n'),
        ("PREROUTING", ["head"], "-N PREROUTING\n-A PREROUTING -j X\n"),
    ],
)
def test_a_listing_that_is_not_one_line_per_rule_is_not_learned(tmp_path, chain, keys, text):
    memo = Memo(4, KEY, str(tmp_path))
    assert not memo.learn(chain, keys, text)
    memo.save()
    assert not (tmp_path / nfnl_lines.file_name(4)).exists()


def test_nothing_is_learned_without_an_identity_or_for_a_chain_longer_than_the_memo(tmp_path):
    assert not Memo(4, None, str(tmp_path)).learn("PREROUTING", KEYS, TEXT)
    many = nfnl_lines.MAX_LINES
    keys = [f"k{i}" for i in range(many + 1)]
    text = "-N LONG\n" + "".join(
        f"-A LONG -j RETURN -m comment --comment {i}\n" for i in range(many)
    )
    memo = Memo(4, KEY, str(tmp_path))
    assert not memo.learn("LONG", keys, text)
    assert memo.learn("LONG", keys[:-1], "".join(text.splitlines(True)[:-1]))


def test_one_rule_printed_two_ways_is_forgotten(tmp_path):
    _learned(tmp_path)
    memo = Memo(4, KEY, str(tmp_path))
    assert not memo.learn("PREROUTING", KEYS, TEXT.replace("DOCKER", "DOCKER2"))
    memo.save()
    later = Memo(4, KEY, str(tmp_path))
    assert later.text(KEYS) is None and later.text(["head", "cni"]) is not None


def test_the_least_recently_used_lines_go_first(tmp_path, monkeypatch):
    monkeypatch.setattr(nfnl_lines, "MAX_LINES", 4)
    memo = Memo(4, KEY, str(tmp_path))
    assert memo.learn("A", ["a", "a1"], "-N A\n-A A -j X\n")
    assert memo.learn("B", ["b", "b1"], "-N B\n-A B -j X\n")
    memo.save()
    memo = Memo(4, KEY, str(tmp_path))
    assert memo.text(["a", "a1"]) is not None  # A used by this run, B not
    assert memo.learn("C", ["c", "c1"], "-N C\n-A C -j X\n")
    memo.save()
    memo = Memo(4, KEY, str(tmp_path))
    assert memo.text(["a", "a1"]) and memo.text(["c", "c1"]) and memo.text(["b", "b1"]) is None


def test_a_run_that_learns_nothing_writes_nothing(tmp_path):
    _learned(tmp_path)
    memo_file = tmp_path / nfnl_lines.file_name(4)
    os.utime(memo_file, ns=(1, 1))
    memo = Memo(4, KEY, str(tmp_path))
    assert memo.text(KEYS) == TEXT
    memo.save()
    assert memo_file.stat().st_mtime_ns == 1


def _document() -> bytes:
    return json.dumps(
        {"version": nfnl_lines.VERSION, "identity": KEY, "lines": [[k, "-N X"] for k in KEYS]}
    ).encode()


@pytest.mark.parametrize(
    "content, mode, owner",
    [
        (b"{not json", 0o600, None),
        (b"", 0o600, None),
        (json.dumps({"version": 99, "identity": KEY, "lines": []}).encode(), 0o600, None),
        (json.dumps(["a list"]).encode(), 0o600, None),
        (json.dumps({"version": 1, "identity": KEY, "lines": "x"}).encode(), 0o600, None),
        (
            json.dumps({"version": 1, "identity": KEY, "lines": [["a", 1], "b", ["c"]]}).encode(),
            0o600,
            None,
        ),
        (None, 0o620, None),  # group-writable
        (None, 0o602, None),  # world-writable
        (None, 0o600, "someone else"),  # not ours
    ],
)
def test_a_memo_it_cannot_trust_is_as_none_and_written_over(
    tmp_path, monkeypatch, content, mode, owner
):
    memo_file = tmp_path / nfnl_lines.file_name(4)
    memo_file.write_bytes(_document() if content is None else content)
    memo_file.chmod(mode)
    if owner is not None:
        # A file of another user's, seen from the reader's side: the unit tier runs with
        # no capabilities, where even root cannot chown (CI: EPERM).
        real_euid = os.geteuid()
        monkeypatch.setattr(os, "geteuid", lambda: real_euid + 1)
    memo = Memo(4, KEY, str(tmp_path))
    assert memo.text(KEYS) is None
    monkeypatch.undo()
    assert memo.learn("PREROUTING", KEYS, TEXT)
    memo.save()
    assert Memo(4, KEY, str(tmp_path)).text(KEYS) == TEXT
    info = memo_file.stat()
    assert info.st_mode & 0o777 == 0o600 and info.st_uid == os.geteuid()


def test_the_control_document_is_trusted(tmp_path):
    """(What the cases above spoil, as it is: read.)"""
    memo_file = tmp_path / nfnl_lines.file_name(4)
    memo_file.write_bytes(_document())
    memo_file.chmod(0o600)
    assert Memo(4, KEY, str(tmp_path)).text(KEYS) == "-N X\n-N X\n-N X\n"


def test_a_memo_behind_a_symlink_is_not_followed(tmp_path):
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_bytes(_document())
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    (run_dir / nfnl_lines.file_name(4)).symlink_to(elsewhere)
    assert Memo(4, KEY, str(run_dir)).text(KEYS) is None
    _learned(run_dir)
    assert not (run_dir / nfnl_lines.file_name(4)).is_symlink()
    assert elsewhere.read_bytes() == _document()


def test_a_run_dir_it_cannot_write_loses_only_the_memo(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    memo = Memo(4, KEY, str(blocker / "run"))
    assert memo.learn("PREROUTING", KEYS, TEXT)
    memo.save()  # no error
    assert Memo(4, KEY, str(blocker / "run")).text(KEYS) is None


def test_the_identity_follows_the_binary_and_its_extensions(tmp_path, monkeypatch):
    tool = tmp_path / "iptables-nft"
    tool.write_text("#!/bin/sh\n")
    extensions = tmp_path / "xtables"
    extensions.mkdir()
    (extensions / "libxt_comment.so").write_bytes(b"a")
    monkeypatch.setenv("XTABLES_LIBDIR", str(extensions))
    first = nfnl_lines.identity(str(tool))
    assert first is not None and first == nfnl_lines.identity(str(tool))
    assert json.loads(json.dumps(first)) == first  # (compared as read back from JSON)
    # An extension replaced as dpkg and rpm do: a new file renamed over it.
    (extensions / "new.tmp").write_bytes(b"b")
    os.replace(extensions / "new.tmp", extensions / "libxt_comment.so")
    second = nfnl_lines.identity(str(tool))
    assert second != first
    (extensions / "libxt_new.so").write_bytes(b"")
    third = nfnl_lines.identity(str(tool))
    assert third != second
    replacement = tmp_path / "new"
    replacement.write_text("#!/bin/sh\n")
    os.replace(replacement, tool)
    assert nfnl_lines.identity(str(tool)) != third
    assert nfnl_lines.identity(str(tmp_path / "missing")) is None
