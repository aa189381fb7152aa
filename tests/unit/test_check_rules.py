"""check's rule at issue (issue 16, SPEC §3 check: "`-o wide` adds CHAIN and the rule"):
the RULE column of `check -o wide` and the `rule` key of check's JSON, on the example
node (examples/) and the real plugin's fixtures (tests/fixtures), no root.

The expected rules are read from the dumps the plugin wrote, never typed in here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

from json_schemas import validated
from test_terminal import EXAMPLE, ROOT, run_on_terminal
from typer.testing import CliRunner

from portmapctl import render
from portmapctl.cli import app
from portmapctl.core.status import ProblemKind
from portmapctl.nftables.ruleset import HOSTIP_HOSTPORTS
from portmapctl.ops.check import CheckResult, Problem

FIXTURES = ROOT / "tests" / "fixtures"


def invoke(*args: str) -> str:
    done = CliRunner().invoke(app, list(args))
    assert done.exception is None or isinstance(done.exception, SystemExit), done.exception
    return done.stdout


def saved_lines(path: Path, needle: str) -> List[str]:
    """The `-A` lines of a dump that mention `needle`, as iptables-save printed them."""
    return [
        line for line in path.read_text().splitlines() if line.startswith("-A") and needle in line
    ]


def by_kind(document: dict) -> Dict[str, dict]:
    return {p["kind"]: p for p in document["problems"]}


def test_wide_ends_each_problem_row_with_its_rule_whole():
    out = invoke("check", *EXAMPLE, "-o", "wide")
    lines = out.splitlines()
    assert lines[0].split() == [
        "KIND", "FAM", "CONTAINER", "NETWORK", "CHAIN", "PROBLEM", "RULE"
    ]  # fmt: skip
    rows = {line.split()[0]: line for line in lines[1:] if line and not line.startswith(" ")}
    dump = ROOT / "examples" / "node.v4.save"
    # An existing rule is shown exactly as iptables-save printed it: the entry rule that
    # takes the stale container's host port, and the one the winner shadows.
    (stale,) = saved_lines(dump, "b7e0f2c94d1a4e85oldjob")
    (shadowed,) = saved_lines(dump, "8c41d07a2e9f4b13web2")
    assert rows["stale"].endswith("  " + stale)
    assert rows["shadowed"].endswith("  " + shadowed)
    # A missing rule is shown as the plugin would write it (what --repair adds).
    assert rows["missing-entry"].endswith(
        "-m multiport --dports 9100 -j CNI-DN-e73a80cc054c8f213a469"
    )
    assert "…" not in out


def test_json_carries_the_same_rule_one_a_line_and_validates():
    wide = invoke("check", *EXAMPLE, "-o", "wide")
    document = json.loads(invoke("check", *EXAMPLE, "-o", "json"))
    validated("check", document)
    for problem in document["problems"]:
        assert problem["rule"] and problem["rule"].startswith("-A ")
        assert problem["rule"] in wide  # one rule each here: the same text in both
    assert (
        by_kind(document)["stale"]["rule"]
        == saved_lines(ROOT / "examples" / "node.v4.save", "b7e0f2c94d1a4e85oldjob")[0]
    )


def test_a_missing_chain_shows_every_rule_the_plugin_wrote(tmp_path):
    """The fixture `basic` is what the real plugin wrote for abc123; with the chain and
    its entry rules taken out, check of that mapping wants exactly those lines back."""
    dump = FIXTURES / "basic.v4.save"
    chain = "CNI-DN-70a29d9dc18bc4d652ea5"
    written = saved_lines(dump, chain)
    assert len(written) == 8
    gone = tmp_path / "gone.v4.save"
    gone.write_text("".join(line + "\n" for line in dump.read_text().splitlines()
                            if chain not in line))  # fmt: skip
    args = ["check", "--snapshot", str(gone), "--family", "4", "--network", "mynet",
            "--container", "abc123", "--ip", "10.88.0.5/16", "-p", "8080:80", "-p", "5353:53/udp"]  # fmt: skip
    problem = by_kind(json.loads(invoke(*args, "-o", "json")))["missing-chain"]
    assert sorted(problem["rule"].split("\n")) == sorted(written)
    wide = invoke(*args, "-o", "wide")
    row = next(line for line in wide.splitlines() if line.startswith("missing-chain"))
    assert row.endswith("  " + render.check.RULES_APART.join(problem["rule"].split("\n")))


def test_a_duplicated_entry_rule_is_the_rule_shown(tmp_path):
    dump = FIXTURES / "basic.v4.save"
    (entry,) = [line for line in saved_lines(dump, "--dports 8080") if "CNI-HOSTPORT-DNAT" in line]
    text = dump.read_text().replace(entry + "\n", entry + "\n" + entry + "\n")
    doubled = tmp_path / "doubled.v4.save"
    doubled.write_text(text)
    document = json.loads(invoke("check", "--snapshot", str(doubled), "--family", "4", "-o", "json",
                                 "--cni-cache-dir", str(tmp_path / "none")))  # fmt: skip
    assert by_kind(document)["duplicate-entry"]["rule"] == entry


def test_a_problem_about_no_rule_has_rule_null_and_a_dash():
    brain = Problem(ProblemKind.SPLIT_BRAIN, 4, None, None, None, "2 portmap chains...", "x", "y")
    result = CheckResult((brain,), (4,), "node", True, 1, 1)
    assert render.problem_json(brain)["rule"] is None
    cache = {"dirs": ["/var/lib/cni"], "present": True, "entries": 1}
    validated("check", render.check_json(result, cache))
    row = render.check_text(result, wide=True).plain.splitlines()[1]
    assert row.endswith("  -")


def test_at_80_columns_the_default_table_stays_unwrapped_and_wide_stays_whole():
    code, out, _ = run_on_terminal(["check", *EXAMPLE], {"COLUMNS": "80", "NO_COLOR": "1"})
    lines = out.replace("\r", "").rstrip("\n").split("\n")
    assert code == 1
    assert "RULE" not in lines[0] and lines[0].split()[-1] == "PROBLEM"
    assert [line for line in lines if len(line) > 80 and not line.startswith("  fix: ")] == []
    assert "…" not in out, "the long problems go on below, never cut"
    assert any(line.startswith(" " * 34) for line in lines), "continued under PROBLEM"
    code, wide, _ = run_on_terminal(["check", *EXAMPLE, "-o", "wide"],
                                    {"COLUMNS": "80", "NO_COLOR": "1"})  # fmt: skip
    (shadowed,) = saved_lines(ROOT / "examples" / "node.v4.save", "8c41d07a2e9f4b13web2")
    assert code == 1 and "…" not in wide
    assert shadowed in wide.replace("\r", "").split("\n")[1]  # whole, on its row


def test_the_wide_example_in_the_docs_is_a_real_run():
    """docs/commands/check.md shows `-o wide` and `-o json` on the example node: the
    output printed there is what those commands print today."""
    page = (ROOT / "docs" / "commands" / "check.md").read_text()
    for option in ("wide", "json"):
        prompt = f"$ portmapctl check -o {option} " + " ".join(
            str(Path(a).relative_to(ROOT)) if a.startswith(str(ROOT)) else a for a in EXAMPLE
        )
        shown = page.split(prompt + "\n", 1)[1].split("```", 1)[0]
        assert shown == invoke("check", "-o", option, *EXAMPLE).replace(str(ROOT) + "/", "")


def test_nftables_problems_show_the_rule_as_nft_list_prints_it():
    """The nftables side (examples/nft: `nft list` text next to its `nft -j` JSON): a
    stale and a shadowed container's rule, found by handle, as nft printed it."""
    nft = ROOT / "examples" / "nft"
    args = ["check", "--nft-snapshot", str(nft / "ruleset.json"), "--cni-cache-dir",
            str(nft / "cni-cache"), "--family", "4"]  # fmt: skip
    document = json.loads(invoke(*args, "-o", "json"))
    validated("check", document)
    printed = [line.strip() for line in (nft / "ruleset.nft").read_text().splitlines()]
    rules = {p["kind"]: p["rule"] for p in document["problems"] if p["backend"] == "nftables"}
    assert rules["stale"] in printed and "b7e0f2c94d1a4e85oldjob" in rules["stale"]
    assert rules["shadowed"] in printed and "8c41d07a2e9f4b13web2" in rules["shadowed"]


def test_the_missing_rules_line_is_true_of_a_moved_rule_that_still_forwards():
    """examples/nft (the real plugin's ruleset): 5e1c0a7d2b9f's host-IP rule is in
    hostip_hostports, which hostports_all jumps to: it forwards, and is reported missing
    from hostports only because v1.9's CHECK counts that chain alone. The kind's line
    said "a cached container's host ports are not forwarded", against its own detail."""
    nft = ROOT / "examples" / "nft"
    printed = (nft / "ruleset.nft").read_text()
    hostip = printed.split("chain hostip_hostports {", 1)[1].split("}", 1)[0]
    assert '"5e1c0a7d2b9f' in hostip and "jump hostip_hostports" in printed
    out = invoke("check", "--nft-snapshot", str(nft / "ruleset.json"), "--cni-cache-dir",
                 str(nft / "cni-cache"), "--family", "4")  # fmt: skip
    [row] = [line for line in out.splitlines() if line.startswith("nft-missing-rules ")]
    assert "in hostip_hostports" in row and "forwarded, but" in row, row
    [why] = [line for line in out.splitlines() if line.startswith("nft-missing-rules:")]
    # True of both: rules lost (not forwarded) and rules that still forward where
    # v1.9's CHECK does not count them.
    assert "not forwarded" in why and "still forward" in why, why
    assert HOSTIP_HOSTPORTS in why and "CHECK" in why, why


def test_a_rule_the_config_does_not_make_and_one_missing_are_the_rules_shown(tmp_path):
    """In web's chain on the example node: its first mark rule rewritten to another
    port. The rewritten rule is extra (shown as in the dump), the original missing."""
    dump = ROOT / "examples" / "node.v4.save"
    original = saved_lines(dump, "-A CNI-DN-27a3997738f625df8206e -s 10.88.0.0/16")[0]
    changed = original.replace("--dport 8080", "--dport 8081")
    edited = tmp_path / "edited.v4.save"
    edited.write_text(dump.read_text().replace(original, changed))
    args = ["check", "--snapshot", str(edited), "--family", "4", *EXAMPLE[4:], "-o", "json"]
    problems = [p for p in json.loads(invoke(*args))["problems"]
                if p["chain"] == "CNI-DN-27a3997738f625df8206e"]  # fmt: skip
    rules = {p["kind"]: p["rule"] for p in problems}
    assert rules == {"missing-rules": original, "extra-rules": changed}
    # One rule is one rule (it said "1 rules").
    details = {p["kind"]: p["detail"] for p in problems}
    assert details["extra-rules"].startswith("1 rule its cached config does not make: ")


def test_with_no_cache_the_healthy_line_counts_the_nftables_rule_sets_it_saw(tmp_path):
    """No cache, a node whose containers are all nft-backed: the line said "0 portmap
    chains look sound" of a node it had read rules of (helper-136's review)."""
    example = json.loads((ROOT / "examples" / "nft" / "ruleset.json").read_text())
    web = "3f2a9c1e5b7d4a60web"  # (dual-stack; its rules alone: no shadowing)
    example["nftables"] = [
        item for item in example["nftables"]
        if "rule" not in item or item["rule"].get("comment") in (None, web)
    ]  # fmt: skip
    dump = tmp_path / "web.json"
    dump.write_text(json.dumps(example))
    args = ["check", "--nft-snapshot", str(dump), "--cni-cache-dir", str(tmp_path / "none")]
    document = json.loads(invoke(*args, "-o", "json"))
    assert document["healthy"] and document["summary"] == (
        "healthy: 2 nftables rule sets look sound (IPv4 and IPv6); no CNI cache to compare"
        " them with"
    )
    # An IPv4 dump alone: IPv4 is what was read, of both backends.
    both = [*args, "--snapshot", str(ROOT / "tests" / "fixtures" / "sctp.v4.save")]
    assert json.loads(invoke(*both, "-o", "json"))["summary"].startswith(
        "healthy: 1 portmap chain and 1 nftables rule set look sound (IPv4);"
    )
