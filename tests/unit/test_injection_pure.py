"""(The tests of this subject that need root are in tests/kernel/test_injection.py.)

Text from a dump or the CNI cache cannot inject a rule (SPEC §5).

Comments and names that portmapctl reads (a foreign rule's comment in the live
table, the conditions in a cached network config) end up as arguments of the
restore lines it writes -- a `-D` of a rule that jumps to a chain it removes, an
entry rule it re-creates. Whatever they hold, each stays one quoted argument of the
one intended line: the transaction text has exactly the intended lines, each reads
back (as iptables-restore splits it) as exactly the intended arguments, and a text
with a control character is never written: refused (exit 2) where it would have to be,
deleted by its number (behind the count guard) where gc removes the rule that holds it.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from injection_helpers import HOSTILE_COMMENTS, _lines  # noqa: F401
from pmctl import run

from portmapctl.errors import BadInput
from portmapctl.iptables.chains import TOPLEVEL_DNAT, chain_name, dnat_chain_name
from portmapctl.iptables.planner import GUARD_CHAIN, plan_setup, plan_teardown
from portmapctl.iptables.ruleset import parse_save, rule_target


def _saved(text: str) -> str:
    """A comment as iptables-save prints it: in quotes, `"` and `\\` escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


STALE = chain_name("mynet", "stale1")


def _dump(comment: str) -> str:
    """A nat table holding a stale container's chain, a foreign jump into it and a
    foreign rule elsewhere, both carrying `comment`."""
    c = _saved(comment)
    return "\n".join(
        [
            "*nat",
            ":PREROUTING ACCEPT [0:0]",
            ":INPUT ACCEPT [0:0]",
            ":OUTPUT ACCEPT [0:0]",
            ":POSTROUTING ACCEPT [0:0]",
            ":CNI-HOSTPORT-DNAT - [0:0]",
            f":{STALE} - [0:0]",
            "-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
            f"-A PREROUTING -m comment --comment {c} -j RETURN",
            f'-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \\"mynet\\" id:'
            f' \\"stale1\\"" -m multiport --dports 8080 -j {STALE}',
            f"-A CNI-HOSTPORT-DNAT -p udp -m comment --comment {c} -j {STALE}",
            f"-A CNI-HOSTPORT-DNAT -m comment --comment {c} -j RETURN",
            f"-A {STALE} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.88.0.12:80",
            "COMMIT",
            "",
        ]
    )


def _check_teardown_text(comment: str) -> None:
    live = parse_save(_dump(comment), 4)
    txn = plan_teardown(live, [STALE])
    read_back = _lines(txn.render())
    # Exactly one line per step, and each reads back as exactly that step.
    assert len(read_back) == len(txn.ops)
    for op, words in zip(txn.ops, read_back):
        command = {"delete": "-D", "flush": "-F", "delete-chain": "-X"}[op.kind]
        assert words == [command, op.chain, *op.args]
    deleted = [words[2:] for words in read_back if words[:2] == ["-D", TOPLEVEL_DNAT]]
    # The stale chain itself is emptied rule by rule, each as read.
    assert [words[2:] for words in read_back if words[:2] == ["-D", STALE]] == [
        list(r) for r in live.rules(STALE)
    ]
    # The two rules that jump to the stale chain go (comment and all), nothing else.
    wanted = [list(r) for r in live.rules(TOPLEVEL_DNAT) if rule_target(r) == STALE]
    assert deleted == wanted and len(wanted) == 2
    assert ["--comment", comment] == deleted[1][4:6]
    assert {words[1] for words in read_back} == {TOPLEVEL_DNAT, STALE}


@pytest.mark.parametrize("comment", HOSTILE_COMMENTS)
def test_a_hostile_comment_stays_one_argument_of_the_intended_delete(comment):
    _check_teardown_text(comment)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"),
        max_size=60,
    )
)
def test_any_comment_text_is_deleted_by_its_exact_text_or_refused(comment):
    if re.search(r"[\x00-\x1f\x7f]", comment):
        # A control character cannot be written back as a restore argument. The dump
        # that holds one in a rule is refused where it is read (binary data), or the
        # rule that jumps to the stale chain goes by its number, behind the count
        # guard: no text of it is written (a refusal stopped every gc of the node).
        try:
            live = parse_save(_dump(comment), 4)
        except BadInput as err:
            assert "binary data" in str(err)
            return
        text = plan_teardown(live, [STALE]).render()
        # gc's last try goes by text elsewhere (by_number=False): this rule still not.
        assert plan_teardown(live, [STALE], by_number=False).render() == text
        assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", text), text
        entering = [
            i + 1 for i, r in enumerate(live.rules(TOPLEVEL_DNAT)) if rule_target(r) == STALE
        ]
        count = len(live.rules(TOPLEVEL_DNAT))
        guarded = [f"-A {TOPLEVEL_DNAT} -j {GUARD_CHAIN}", f"-D {TOPLEVEL_DNAT} {count + 1}"]
        by_number = [f"-D {TOPLEVEL_DNAT} {n}" for n in reversed(entering)]
        lines = [line for line in text.splitlines() if TOPLEVEL_DNAT in line]
        assert lines == guarded + by_number, text
        return
    _check_teardown_text(comment)


def test_a_hostile_foreign_jump_into_our_chain_is_deleted_by_setup_only_as_itself():
    """add/repair delete entry rules into the container's chain that it does not want:
    a foreign one with a hostile comment goes as exactly itself."""
    from fixtures_lib import configs, table

    config = configs("basic")[0]
    from portmapctl.iptables.chains import wanted_chains

    dn = dnat_chain_name(config)
    text = (
        table_text := Path(__file__).parents[1].joinpath("fixtures/basic.v4.save").read_text()
    ).replace(
        "COMMIT",
        f"-A CNI-HOSTPORT-DNAT -m comment --comment {_saved(HOSTILE_COMMENTS[1])} -j {dn}\nCOMMIT",
    )
    assert text != table_text
    txn = plan_setup(wanted_chains(config, 4), parse_save(text, 4))
    assert _lines(txn.render()) == [
        ["-D", TOPLEVEL_DNAT, "-m", "comment", "--comment", HOSTILE_COMMENTS[1], "-j", dn]
    ]
    assert not plan_setup(wanted_chains(config, 4), table("basic", 4))


# --- against the kernel ---------------------------------------------------------------


def test_base64_config_cannot_smuggle_a_target(tmp_path):
    """The cached config is base64: decoded, its conditions are checked like any (the
    entry is then skipped with a warning: a record of the node, SPEC §5)."""
    portmap = {"type": "portmap", "capabilities": {"portMappings": True}}
    conf = {"name": "mynet", "plugins": [dict(portmap, conditionsV4=["-jACCEPT"])]}
    entry = {
        "kind": "cniCacheV1",
        "containerId": "c1",
        "networkName": "mynet",
        "ifName": "eth0",
        "config": base64.b64encode(json.dumps(conf).encode()).decode(),
        "capabilityArgs": {
            "portMappings": [{"hostPort": 80, "containerPort": 80, "protocol": "tcp"}]
        },
        "result": {"ips": [{"address": "10.88.0.5/16"}]},
    }
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "mynet-c1-eth0").write_text(json.dumps(entry))
    done = run(["check", "--snapshot", str(Path(__file__).parents[1] / "fixtures/basic.v4.save"),
                "--cni-cache-dir", str(tmp_path)])  # fmt: skip
    assert done.returncode == 1, done.stderr  # the fixture's own container: no entry
    [line] = done.stderr.splitlines()
    assert line.startswith("portmapctl: warning: ")
    assert "cannot set a target" in line and "mynet-c1-eth0" in line
