"""An empty value of a mapping option is bad input, never "no mapping options".

`portmapctl check --container "$CID" --cni-config "$CONF" --repair` with both unset:
check took the empty values for options not given, so it checked (and repaired) the
whole node instead of the one mapping, and said "healthy", exit 0 (an empty
--snapshot/--netns were the same mistake: tests/unit/test_snapshot_input.py).
"""

from __future__ import annotations

import pytest
from pmctl import assert_error, run

NAT = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
NAT += ":POSTROUTING ACCEPT [0:0]\nCOMMIT\n"

# Each option with an empty value: alone, the first of the others it needs is asked for.
EMPTY = {
    "--network": "--container is required",
    "--container": "--network is required",
    "--cni-config": "--container is required",
    "--external-setmark-chain": "--container is required",
}


@pytest.mark.parametrize("option", sorted(EMPTY))
def test_an_empty_mapping_option_is_refused_not_a_check_of_the_node(tmp_path, option):
    cache = ["--cni-cache-dir", str(tmp_path / "no-cache")]
    # (A snapshot, without CAP_NET_ADMIN: a check of the node would not read this one.)
    done = run(["check", "--snapshot", "-", *cache, option, ""], stdin=NAT, unprivileged=True)
    assert_error(done, 2, EMPTY[option])


def test_an_empty_cni_config_path_is_said_to_be_empty(tmp_path):
    done = run(["add", "--dry-run", "--container", "c1", "--cni-config", ""], unprivileged=True)
    assert_error(done, 2, "--cni-config is empty", "give a file")
