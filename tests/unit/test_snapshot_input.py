"""A snapshot that holds no nat table is bad input, never "no portmap chains found".

`ssh node iptables-save | portmapctl list --snapshot -` whose ssh failed feeds an
empty stdin; read as a node without chains it passed for a clean node, exit 0. What
`iptables-save -t nat` prints always holds a `*nat` block (even in a namespace where
no table was ever made), and `nft -j list ruleset` always prints its metainfo.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pmctl import assert_error, run

from portmapctl.ops.gc.liveness import read_valid_attachments

FIXTURES = Path(__file__).parents[1] / "fixtures"

NO_NAT = {
    "empty": ("", "empty, not {save} output"),
    "blank": ("\n \n", "empty, not {save} output"),
    "filter-only": (
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n",
        "no nat table in this {save} output",
    ),
    # What iptables-nft-save prints where only legacy tables exist.
    "warning-only": (
        "# Warning: iptables-legacy tables present, use iptables-legacy-save to see them\n",
        "no nat table in this {save} output",
    ),
}


@pytest.mark.parametrize("command", ["list", "check"])
@pytest.mark.parametrize("option", ["--snapshot", "--snapshot6"])
@pytest.mark.parametrize("name", sorted(NO_NAT))
@pytest.mark.parametrize("where", ["stdin", "file"])
def test_a_snapshot_without_a_nat_table_is_bad_input(tmp_path, command, option, name, where):
    body, words = NO_NAT[name]
    save = "ip6tables-save" if option == "--snapshot6" else "iptables-save"
    cache = ["--cni-cache-dir", str(tmp_path / "no-cache")]
    if where == "stdin":
        done = run([command, option, "-", *cache], stdin=body)
        source = "<stdin>"
    else:
        path = tmp_path / "dump.save"
        path.write_text(body)
        done = run([command, option, str(path), *cache])
        source = str(path)
    assert_error(done, 2, f"{source}: ", words.format(save=save), f"`{save} -t nat`")


def test_an_empty_nft_snapshot_is_said_to_be_empty(tmp_path):
    done = run(["list", "--nft-snapshot", "-", "--cni-cache-dir", str(tmp_path)], stdin="")
    assert_error(done, 2, "<stdin>: empty, not `nft -j list` output", "nft -j list ruleset")


def test_a_nat_table_without_chains_is_a_node_without_chains(tmp_path: Path):
    """What `iptables-save -t nat` prints in a namespace where nothing was made."""
    nat = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
    nat += ":POSTROUTING ACCEPT [0:0]\nCOMMIT\n"
    done = run(["list", "--snapshot", "-", "--cni-cache-dir", str(tmp_path)], stdin=nat)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "no portmap chains found"
    # The same table after a filter table, as plain `iptables-save` prints them.
    both = "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n" + nat
    done = run(["list", "--snapshot", "-", "--cni-cache-dir", str(tmp_path)], stdin=both)
    assert done.returncode == 0 and done.stdout.strip() == "no portmap chains found"


def test_conntrack_with_a_snapshot_is_refused_whatever_the_file_holds(tmp_path):
    done = run(["list", "--snapshot", "/dev/null", "--conntrack"])
    assert_error(done, 2, "--conntrack reads the kernel")


@pytest.mark.parametrize("command", ["list", "check", "check --repair"])
@pytest.mark.parametrize("option", ["--snapshot", "--snapshot6", "--nft-snapshot"])
def test_an_empty_snapshot_path_is_bad_input_never_a_read_of_the_kernel(tmp_path, command, option):
    """`portmapctl check -o json --snapshot "$DUMP"` with DUMP unset: the empty path was
    taken for no option at all, so the command read the node it ran on (as root: said
    "healthy" of the laptop reading a support bundle; --repair wrote to it) and exit 0."""
    cache = ["--cni-cache-dir", str(tmp_path / "no-cache")]
    # (Without CAP_NET_ADMIN: were the path ever taken for no option again, this test
    # must not read or repair the machine it runs on.)
    done = run([*command.split(), option, "", *cache], unprivileged=True)
    assert_error(done, 2, f"{option} is empty", "give a file")


# --- files written on Windows ---------------------------------------------------------

BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize("where", ["stdin", "file"])
def test_a_dump_that_starts_with_a_byte_order_mark_is_read(tmp_path, where):
    """A support bundle opened and saved on Windows (Notepad, `Out-File -Encoding utf8`)
    starts with a UTF-8 byte-order mark: it was refused as "not iptables-save output"
    (line 1: expected a '*table' line first), where the dump itself is whole. The mark
    says how the text is encoded, nothing more: it is read as the same dump without it."""
    dump = (FIXTURES / "basic.v4.save").read_bytes()
    cache = ["--cni-cache-dir", str(tmp_path / "no-cache")]
    plain = run(["list", "-o", "json", "--snapshot", "-", *cache], stdin=dump.decode())
    assert plain.returncode == 0, plain.stderr
    if where == "stdin":
        # (The mark as bytes: run's text stdin would encode a str "\ufeff" the same.)
        done = run(["list", "-o", "json", "--snapshot", "-", *cache], stdin=(BOM + dump).decode())
    else:
        path = tmp_path / "dump.save"
        path.write_bytes(BOM + dump)
        done = run(["list", "-o", "json", "--snapshot", str(path), *cache])
    assert done.returncode == 0, done.stderr
    assert done.stdout == plain.stdout


def test_other_files_named_by_the_user_are_read_past_a_byte_order_mark(tmp_path):
    nft = (FIXTURES / "nft" / "upgrade.nft.json").read_bytes()
    (tmp_path / "ruleset.json").write_bytes(BOM + nft)
    cache = ["--cni-cache-dir", str(tmp_path / "no-cache")]
    done = run(["list", "--nft-snapshot", str(tmp_path / "ruleset.json"), *cache])
    assert done.returncode == 0, done.stderr
    doc = {"cniVersion": "1.1.0", "cni.dev/valid-attachments": [{"containerID": "c1"}]}
    (tmp_path / "valid.json").write_bytes(BOM + json.dumps(doc).encode())
    assert read_valid_attachments(str(tmp_path / "valid.json")).container_ids == {"c1"}


def test_a_utf16_dump_is_said_to_be_utf16(tmp_path):
    """Windows PowerShell's `>` writes UTF-16 with its byte-order mark: not read (every
    other byte a NUL), and said so in the words that tell what to do."""
    dump = (FIXTURES / "basic.v4.save").read_text()
    path = tmp_path / "dump.save"
    path.write_bytes(dump.encode("utf-16"))  # (the mark first, as PowerShell writes)
    done = run(["list", "--snapshot", str(path), "--cni-cache-dir", str(tmp_path / "c")])
    assert_error(done, 2, str(path), "UTF-16", "UTF-8")
