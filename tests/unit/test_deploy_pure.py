"""(The tests of this subject that need root are in tests/kernel/test_deploy.py.)

deploy/: the Kubernetes DaemonSet and the systemd service + timer that run `gc`.

Parsed as Kubernetes and systemd would read them, and checked for what gc needs on a
node: the command (parsed by portmapctl's own command line, so a renamed option
breaks this test), the host network, the mounts at the paths portmapctl uses, and the
capabilities. The capabilities are then tried for real: gc, run with exactly those
capabilities and nothing else, removes a real plugin's chain under nf_tables and
legacy iptables, and without NET_RAW legacy iptables refuses (so the list is not
longer than it must be, nor shorter).

Both write their metrics into the node_exporter's textfile directory; the alert rules
on those metrics (deploy/prometheus) are checked by promtool, and tried by promtool's
rule tests on the metrics the example node really gives (docs/monitoring.md).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

import pytest
import typer
import yaml
from deploy_helpers import (  # noqa: F401
    DEPLOY,
    MANIFEST,
    RULES,
    SERVICE,
    gc_argv,
    promtool,
    promtool_test_rules,
    read_unit,
    run_promtool_test,
    series_name,
)

from portmapctl.cli import app
from portmapctl.host import netns, paths
from portmapctl.iptables.access import BACKEND_NAMES

ROOT = Path(__file__).resolve().parents[2]
TIMER = DEPLOY / "systemd" / "portmapctl-gc.timer"
CHECK_SERVICE = DEPLOY / "systemd" / "portmapctl-check.service"
CHECK_TIMER = DEPLOY / "systemd" / "portmapctl-check.timer"
MONITORING = ROOT / "docs" / "monitoring.md"
XTABLES_LOCK = "/run/xtables.lock"
# Where the node_exporter reads textfiles: the DaemonSet's host path (a common choice)
# and Debian's prometheus-node-exporter package (the systemd units).
K8S_TEXTFILE_DIR = "/var/lib/node_exporter/textfile_collector"
DEBIAN_TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"


def parse_with_cli(argv: List[str]) -> Dict[str, object]:
    """Parse `argv` exactly as portmapctl would (unknown options raise), run nothing."""
    command = typer.main.get_command(app)
    name, sub, rest = command.resolve_command(command.make_context("portmapctl", list(argv)), argv)
    ctx = sub.make_context(name, rest)
    return {"command": name, **ctx.params}


def assert_is_quiet_unattended_gc(argv: List[str]) -> None:
    params = parse_with_cli(argv)
    assert params["command"] == "gc"
    assert params["yes"] is True, "not on a terminal, gc needs --yes"
    assert params["quiet"] is True, "one summary line per run"
    assert params["dry_run"] is False and params["remove_all"] is False
    assert getattr(params["output"], "value", params["output"]) == "table"


def assert_writes_metrics(params: Dict[str, object], directory: str) -> None:
    """Into the textfile directory, in a file of the command's own (see monitoring.md)."""
    path = str(params["metrics_file"])
    assert os.path.dirname(path) == directory, path
    assert os.path.basename(path) == f"portmapctl-{params['command']}.prom", path


def expand(word: str, env: Dict[str, str]) -> str:
    return word.replace("${METRICS_DIR}", env["METRICS_DIR"]).replace(
        "$METRICS_DIR", env["METRICS_DIR"]
    )


# --- Kubernetes --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def daemonset() -> dict:
    documents = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    kinds = [d["kind"] for d in documents]
    assert kinds == ["DaemonSet"], kinds
    return documents[0]


def daemonset_commands(daemonset: dict) -> Dict[str, str]:
    """{command: its shell line} of the pod's loop."""
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    script = "\n".join(container["command"] + container["args"])
    lines = [line.strip() for line in script.splitlines() if "portmapctl " in line]
    found = {gc_argv(line)[0]: line for line in lines}
    assert len(found) == len(lines), lines
    return found


def test_daemonset_runs_quiet_gc_in_a_loop_on_every_node(daemonset):
    assert daemonset["apiVersion"] == "apps/v1"
    spec = daemonset["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in spec["selector"]["matchLabels"].items())
    assert pod["hostNetwork"] is True
    assert {"operator": "Exists"} in pod["tolerations"], "every node, tainted ones too"
    assert pod.get("automountServiceAccountToken") is False, "it never talks to the API"
    (container,) = pod["containers"]
    script = "\n".join(container["command"] + container["args"])
    commands = daemonset_commands(daemonset)
    assert sorted(commands) == ["check", "gc"]
    assert_is_quiet_unattended_gc(gc_argv(commands["gc"].split("||")[0]))
    assert "sleep" in script and "while" in script
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["PORTMAPCTL_IPTABLES"] in BACKEND_NAMES
    assert env["PORTMAPCTL_IPTABLES"] != "auto", "in an image, auto sees the image's iptables"
    assert int(env["GC_INTERVAL_SECONDS"]) >= 60


def test_daemonset_writes_check_and_gc_metrics_to_the_textfile_directory(daemonset):
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["METRICS_DIR"] == K8S_TEXTFILE_DIR
    commands = daemonset_commands(daemonset)
    # check before gc, its problem table discarded (the metrics carry it) and its exit
    # 1 (problems found) not stopping the loop: `set -e` is not on.
    order = list(commands)
    assert order.index("check") < order.index("gc")
    check_line = commands["check"]
    assert check_line.endswith(">/dev/null")
    check_argv = [expand(w, env) for w in gc_argv(check_line.replace(">/dev/null", ""))]
    check = parse_with_cli(check_argv)
    assert check["quiet"] is True and check["repair"] is False
    assert_writes_metrics(check, K8S_TEXTFILE_DIR)
    gc = parse_with_cli([expand(w, env) for w in gc_argv(commands["gc"].split("||")[0])])
    assert_writes_metrics(gc, K8S_TEXTFILE_DIR)
    volumes = {v["name"]: v["hostPath"] for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    metrics = mounts[K8S_TEXTFILE_DIR]
    assert not metrics.get("readOnly"), "the metrics are written there"
    assert volumes[metrics["name"]] == {"path": K8S_TEXTFILE_DIR, "type": "DirectoryOrCreate"}


CONTAINERFILE = DEPLOY / "kubernetes" / "Containerfile"


def containerfile_packages() -> List[str]:
    """The Debian packages the image's `apt-get install` lines install."""
    text = CONTAINERFILE.read_text().replace("\\\n", " ")
    found: List[str] = []
    for match in re.finditer(r"apt-get install ([^&\n]*)", text):
        found += [w for w in match.group(1).split() if not w.startswith("-")]
    return found


def test_the_image_is_tagged_with_the_version_it_is_built_from(daemonset):
    """0.2.0 left the DaemonSet on image tag 0.1.0 (and the Containerfile's build line
    with it): an image rebuilt under the same tag changes no pod spec, so nothing rolls
    out, and nodes that hold the old image (IfNotPresent, a tag that is not `latest`)
    keep running the old portmapctl, its metrics' build_info the only sign."""
    from portmapctl import __version__

    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    assert container["image"].rpartition(":")[2] == __version__
    built = re.findall(r"docker build .* -t (\S+) ", CONTAINERFILE.read_text())
    assert built == [container["image"]]


def test_the_image_has_every_tool_the_daemonsets_gc_runs(daemonset):
    """The tools gc runs with the DaemonSet's options (both iptables flavours, and nft
    for --backend auto), found where this Debian host has them, each from a package the
    Containerfile installs: the node's own binaries are not in the pod."""
    from portmapctl.iptables.access.restore import RestoreBackend
    from portmapctl.nftables.access.nft import find_nft

    if shutil.which("dpkg") is None:
        pytest.skip("needs dpkg (a Debian host) to tell which package ships a tool")
    params = parse_with_cli(gc_argv(daemonset_commands(daemonset)["gc"].split("||")[0]))
    tools = [
        RestoreBackend(flavour)._binary(family, tool)
        for flavour in ("nft", "legacy")
        for family in (4, 6)
        for tool in ("save", "restore")
    ]
    if getattr(params["backend"], "value", params["backend"]) in ("auto", "nftables"):
        tools.append(find_nft())
    installed = containerfile_packages()
    assert "iptables" in installed, installed
    for tool in tools:
        owner = subprocess.run(["dpkg", "-S", os.path.realpath(tool)], capture_output=True,
                               text=True, check=True).stdout.split(":")[0]  # fmt: skip
        assert owner in installed, f"{tool} is in {owner}, which the image does not install"


def test_daemonset_is_unprivileged_with_exactly_net_admin_and_net_raw(daemonset):
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    security = container["securityContext"]
    assert security.get("privileged") is False
    assert security.get("allowPrivilegeEscalation") is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert sorted(security["capabilities"]["add"]) == ["NET_ADMIN", "NET_RAW"]


def test_daemonset_mounts_the_host_paths_portmapctl_uses(daemonset):
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {v["name"]: v["hostPath"] for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for path in (paths.CNI_CACHE_DIR, paths.RUN_DIR, XTABLES_LOCK):
        assert path in mounts, f"{path} is not mounted"
        host = volumes[mounts[path]["name"]]
        assert host["path"] == path, "same path on the node and in the pod"
    cache = mounts[paths.CNI_CACHE_DIR]
    assert cache.get("readOnly") is True, "gc only reads the CNI cache"
    # DirectoryOrCreate would make up an empty cache on a node without one, and with
    # an empty cache every chain looks dead.
    assert volumes[cache["name"]]["type"] == "Directory"
    assert volumes[mounts[XTABLES_LOCK]["name"]]["type"] == "FileOrCreate"
    assert not mounts[paths.RUN_DIR].get("readOnly"), "the lock and gc state are written"
    assert not mounts[XTABLES_LOCK].get("readOnly")
    assert container["securityContext"].get("readOnlyRootFilesystem") is True


def test_daemonset_sees_the_nodes_network_namespaces(daemonset):
    """gc keeps a stale-looking chain while a young namespace holds its address (an ADD
    in progress, host/netns.fresh_uncached): only if it can see the node's namespaces,
    including those made after the pod started."""
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {v["name"]: v["hostPath"] for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert netns.NETNS_RUN_DIR in mounts, f"{netns.NETNS_RUN_DIR} is not mounted"
    mount = mounts[netns.NETNS_RUN_DIR]
    assert volumes[mount["name"]]["path"] == netns.NETNS_RUN_DIR
    assert mount.get("readOnly") is True
    assert mount.get("mountPropagation") == "HostToContainer"


# --- systemd -----------------------------------------------------------------------------


def test_service_runs_quiet_gc_once_with_only_the_capabilities_it_needs():
    service = read_unit(SERVICE)
    assert service["Service"]["Type"] == "oneshot"
    exec_start = service["Service"]["ExecStart"]
    assert shlex.split(exec_start)[0].startswith("/"), "systemd wants an absolute path"
    assert_is_quiet_unattended_gc(gc_argv(exec_start))
    caps = service["Service"]["CapabilityBoundingSet"].split()
    assert sorted(caps) == ["CAP_NET_ADMIN", "CAP_NET_RAW"]
    assert service["Service"]["NoNewPrivileges"] == "yes"
    # gc keeps its lock and state in /run/portmapctl between runs: /run stays writable.
    assert service["Service"]["ProtectSystem"] != "strict"
    assert "PrivateNetwork" not in service["Service"], "the chains are in the host's netns"
    condition = service["Unit"]["ConditionPathIsDirectory"]
    assert condition == f"{paths.CNI_CACHE_DIR}/results"
    environment = dict(
        item.split("=", 1) for item in shlex.split(service["Service"].get("Environment", ""))
    )
    assert environment.get("PORTMAPCTL_IPTABLES", "auto") in BACKEND_NAMES


def test_service_writes_gc_metrics_to_debians_textfile_directory():
    params = parse_with_cli(gc_argv(read_unit(SERVICE)["Service"]["ExecStart"]))
    assert_writes_metrics(params, DEBIAN_TEXTFILE_DIR)
    # ProtectSystem=full leaves /var writable; strict would need ReadWritePaths=.
    assert read_unit(SERVICE)["Service"]["ProtectSystem"] == "full"


def test_check_service_writes_check_metrics_and_fails_only_on_errors():
    service = read_unit(CHECK_SERVICE)["Service"]
    assert service["Type"] == "oneshot"
    params = parse_with_cli(gc_argv(service["ExecStart"]))
    assert params["command"] == "check" and params["quiet"] is True
    assert params["repair"] is False, "monitoring never changes the node"
    assert_writes_metrics(params, DEBIAN_TEXTFILE_DIR)
    assert service["SuccessExitStatus"].split() == ["1", "SIGTERM"], "exit 1: problems found"
    assert service["StandardOutput"] == "null"
    gc_service = read_unit(SERVICE)["Service"]
    for key in ("CapabilityBoundingSet", "NoNewPrivileges", "ProtectSystem", "UMask"):
        assert service[key] == gc_service[key], key
    assert read_unit(CHECK_SERVICE)["Unit"]["ConditionPathIsDirectory"] == (
        f"{paths.CNI_CACHE_DIR}/results"
    )


@pytest.mark.parametrize("service_path", [SERVICE, CHECK_SERVICE])
def test_a_stop_mid_run_is_a_clean_stop_of_the_oneshot_unit(service_path):
    """portmapctl stopped by SIGTERM cleans up and ends by SIGTERM (cli._terminated).
    systemd judges a Type=oneshot's main process as a command's (EXIT_CLEAN_COMMAND:
    exit 0 alone is clean, no signal is), so without SIGTERM in SuccessExitStatus= a
    `systemctl stop` or a shutdown during a run leaves the unit failed."""
    service = read_unit(service_path)["Service"]
    assert service["Type"] == "oneshot"
    assert "SIGTERM" in service.get("SuccessExitStatus", "").split()


@pytest.mark.parametrize(
    "timer_path,service_path", [(TIMER, SERVICE), (CHECK_TIMER, CHECK_SERVICE)]
)
def test_timer_starts_the_service_every_few_minutes(timer_path, service_path):
    timer = read_unit(timer_path)
    assert timer["Timer"].get("Unit", service_path.name) == service_path.name
    assert timer_path.stem == service_path.stem
    assert timer["Timer"]["OnUnitActiveSec"] and timer["Timer"]["OnBootSec"]
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_systemd_analyze_verify_accepts_the_units(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify checks that ExecStart's program exists: point it at this checkout's.
    program = tmp_path / "portmapctl"
    program.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m portmapctl "$@"\n')
    program.chmod(0o755)
    for service in (SERVICE, CHECK_SERVICE):
        installed = shlex.split(read_unit(service)["Service"]["ExecStart"])[0]
        (tmp_path / service.name).write_text(service.read_text().replace(installed, str(program)))
    shutil.copy(TIMER, tmp_path / TIMER.name)
    shutil.copy(CHECK_TIMER, tmp_path / CHECK_TIMER.name)
    units = [str(tmp_path / u.name) for u in (SERVICE, TIMER, CHECK_SERVICE, CHECK_TIMER)]
    done = subprocess.run(
        [analyze, "verify", "--man=no", *units],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


# --- Prometheus alert rules ----------------------------------------------------------------

# The alerts issue 17 asks for, with how long each condition must hold.
REQUIRED_ALERTS = {
    "PortmapctlStaleChains": "30m",
    "PortmapctlShadowedMapping": None,
    "PortmapctlGcFailing": "1h",
    "PortmapctlMetricsStale": None,
}


def rules() -> List[dict]:
    document = yaml.safe_load(RULES.read_text())
    assert list(document) == ["groups"]
    return [rule for group in document["groups"] for rule in group["rules"]]


def anchors(markdown: str) -> List[str]:
    """GitHub's anchors of the headings (enough of its rule for these headings)."""
    found = []
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.append(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return found


def test_alert_rules_schema_and_runbooks():
    """What `promtool check rules` checks of the shape, and what it cannot: that each
    alert has a section in docs/monitoring.md and uses metrics portmapctl writes."""
    from portmapctl.ops import metrics

    document = yaml.safe_load(RULES.read_text())
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"} and group["name"]
    written = set(metrics.metric_names(_every_metric_report()))
    sections = anchors(MONITORING.read_text())
    names = []
    for rule in rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        name = rule["alert"]
        names.append(name)
        assert re.fullmatch(r"Portmapctl[A-Z][A-Za-z]+", name)
        assert isinstance(rule["expr"], str) and rule["expr"].strip()
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        assert rule["labels"]["severity"] in ("info", "warning", "critical")
        assert {"summary", "description", "runbook"} <= set(rule["annotations"])
        page, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert (ROOT / page) == MONITORING and anchor == name.lower(), name
        assert anchor in sections, f"docs/monitoring.md has no section {name}"
        used = set(re.findall(r"\bportmapctl_[a-z_]+", rule["expr"]))
        assert used <= written, f"{name} uses metrics portmapctl never writes: {used - written}"
    assert len(names) == len(set(names))
    for name, duration in REQUIRED_ALERTS.items():
        assert name in names
        if duration:
            assert next(r for r in rules() if r["alert"] == name)["for"] == duration


def _every_metric_report():
    from types import SimpleNamespace

    from portmapctl.ops import metrics

    gc = SimpleNamespace(dry_run=False, removed=(), pending=(), conntrack_deleted=0)
    found = metrics.Findings(
        metrics.node_findings((), (), (4,)).mappings,
        metrics.node_findings((), (), (4,)).chains,
        metrics.problem_findings(()),
        metrics.gc_findings(gc, (4,)).gc,
        0,
    )
    return metrics.MetricsReport(
        metrics.Command.GC, 0.0, 0.0, True, found, (metrics.cache_dir("/nonexistent"),)
    )


def test_promtool_checks_the_rules():
    done = subprocess.run(
        [promtool(), "check", "rules", str(RULES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


EXAMPLE_NODE = (
    ["--snapshot", str(ROOT / "examples" / "node.v4.save")]
    + ["--snapshot6", str(ROOT / "examples" / "node.v6.save")]
    + ["--cni-cache-dir", str(ROOT / "examples" / "cni-cache")]
)
# The nftables example (examples/nft): one stale mapping of a gone container.
NFT_EXAMPLE_NODE = ["--backend", "nftables"] + (
    ["--nft-snapshot", str(ROOT / "examples" / "nft" / "ruleset.json")]
    + ["--cni-cache-dir", str(ROOT / "examples" / "nft" / "cni-cache")]
)


def example_check_metrics(tmp_path: Path, node: Sequence[str] = tuple(EXAMPLE_NODE)) -> str:
    """The metrics file `portmapctl check` writes for an example node (examples/)."""
    path = tmp_path / "portmapctl-check.prom"
    done = subprocess.run(
        [sys.executable, "-m", "portmapctl", "check", "-q", "--metrics-file", str(path)]
        + list(node),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=dict(os.environ, NO_COLOR="1"),
    )
    assert done.returncode == 1, done.stderr  # problems found
    assert done.stderr == "", done.stderr
    return path.read_text()


def test_the_alerts_fire_on_the_example_node(tmp_path):
    """promtool's rule tests, fed the metrics the example node gives (scraped every
    minute for 70 minutes from the node_exporter at instance "node1"), plus a gc that
    fails from the start and stops running at minute 10."""
    from prometheus_client.parser import text_string_to_metric_families

    node = {"instance": "node1", "job": "node"}
    series = []
    for family in text_string_to_metric_families(example_check_metrics(tmp_path)):
        for sample in family.samples:
            labels = {**sample.labels, **node}
            if sample.name == "portmapctl_last_run_timestamp_seconds":
                values = "0+60x70"  # fresh: written every minute
            else:
                values = f"{sample.value:g}x70"
            series.append({"series": series_name(sample.name, labels), "values": values})
    gc = {"command": "gc", **node}
    series += [
        {"series": series_name("portmapctl_last_run_success", gc), "values": "0x70"},
        {
            "series": series_name("portmapctl_last_run_timestamp_seconds", gc),
            "values": "0+60x10 600x60",
        },
        {"series": series_name("node_textfile_scrape_error", node), "values": "0x70"},
    ]
    warn = {"severity": "warning", **node}

    def expect(minute: int, alert: str, *found: Dict[str, str]) -> dict:
        return {
            "eval_time": f"{minute}m",
            "alertname": alert,
            "exp_alerts": [{"exp_labels": labels} for labels in found],
        }

    cases = [
        # The example node has one stale chain: 30 minutes before it is an alert.
        expect(29, "PortmapctlStaleChains"),
        expect(31, "PortmapctlStaleChains", warn),
        expect(14, "PortmapctlShadowedMapping"),
        expect(16, "PortmapctlShadowedMapping", warn),
        # No nftables state on it.
        expect(31, "PortmapctlStaleNftMappings"),
        # Its orphaned-but-live chain lacks its entry rule (missing-entry).
        expect(16, "PortmapctlProblems", warn),
        expect(59, "PortmapctlGcFailing"),
        expect(61, "PortmapctlGcFailing", {**warn, "command": "gc"}),
        expect(61, "PortmapctlCheckFailing"),
        # gc's last run at 10m: over 900 s old from 25m on, for 5 minutes.
        expect(29, "PortmapctlMetricsStale"),
        expect(31, "PortmapctlMetricsStale", {**warn, "command": "gc"}),
        expect(61, "PortmapctlMetricsMissing"),
    ]
    promtool_test_rules(tmp_path, series, cases)


def test_the_stale_nft_alert_fires_on_the_nft_example_node(tmp_path):
    """The nftables example's one stale mapping fires PortmapctlStaleNftMappings after
    30 minutes (and not the chain alert: that backend has no chains)."""
    from prometheus_client.parser import text_string_to_metric_families

    node = {"instance": "node3", "job": "node"}
    text = example_check_metrics(tmp_path, NFT_EXAMPLE_NODE)
    series = [
        {
            "series": series_name(sample.name, {**sample.labels, **node}),
            "values": f"{sample.value:g}x40",
        }
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]
    stale = [
        s for s in series
        if 'backend="nftables"' in s["series"] and 'status="stale"' in s["series"]
        and s["values"] != "0x40"
    ]  # fmt: skip
    assert len(stale) == 1, series  # the example's one gone container, IPv4
    warn = {"severity": "warning", **node}
    cases = [
        {"eval_time": "29m", "alertname": "PortmapctlStaleNftMappings", "exp_alerts": []},
        {
            "eval_time": "31m",
            "alertname": "PortmapctlStaleNftMappings",
            "exp_alerts": [{"exp_labels": warn}],
        },
        {"eval_time": "31m", "alertname": "PortmapctlStaleChains", "exp_alerts": []},
    ]
    promtool_test_rules(tmp_path, series, cases)


def test_a_list_run_long_ago_keeps_no_alert_firing(tmp_path):
    """An operator's `list` writes its own file too (one PORTMAPCTL_METRICS_FILE with
    {command} for the node), which nobody rewrites: the counts it saw once (a stale
    chain gc has removed since, a shadowed mapping) kept the alerts on list-or-check
    firing for ever, against check's fresh zeros. A list run as fresh as check's still
    counts."""
    node = {"instance": "node4", "job": "node"}
    series = []
    for command, stamps, count in (
        ("check", "0+60x40", 0),  # the timer's: fresh, the node is clean now
        ("list", "0x40", 1),  # once, at minute 0, before gc removed it
    ):
        mine = {"command": command, **node}
        series.append(
            {"series": series_name("portmapctl_last_run_timestamp_seconds", mine), "values": stamps}
        )
        for name, labels in (
            ("portmapctl_chains", {"backend": "iptables", "chain_type": "dnat", "status": "stale"}),
            ("portmapctl_mappings", {"backend": "iptables", "status": "shadowed"}),
            ("portmapctl_mappings", {"backend": "nftables", "status": "stale"}),
        ):
            series.append(
                {
                    "series": series_name(name, {**labels, "family": "4", **mine}),
                    "values": f"{count}x40",
                }
            )
    cases = [
        {"eval_time": "35m", "alertname": alert, "exp_alerts": []}
        for alert in (
            "PortmapctlStaleChains",
            "PortmapctlStaleNftMappings",
            "PortmapctlShadowedMapping",
        )
    ]
    promtool_test_rules(tmp_path, series, cases)
    # The same list run every minute: what it counts is now, and fires.
    fresh = [{**s, "values": "0+60x40"} if "timestamp" in s["series"] else s for s in series]
    warn = {"severity": "warning", **node}
    cases = [{**case, "exp_alerts": [{"exp_labels": warn}]} for case in cases]
    promtool_test_rules(tmp_path, fresh, cases)


def test_a_failing_check_is_an_alert_before_the_node_is_blind_for_long(tmp_path):
    """A check that fails writes no counts: the stale-chain alert on this node stops
    at once (its chain is not gone), and PortmapctlCheckFailing waited an hour, so a
    node whose check broke was blind for an hour. It fires once check failed over half
    of the last 30 minutes, for 5 (some 20 minutes of failing runs)."""
    node = {"instance": "node5", "job": "node"}
    check = {"command": "check", **node}
    stale = {"backend": "iptables", "chain_type": "dnat", "family": "4", "status": "stale"}
    series = [
        {
            "series": series_name("portmapctl_last_run_timestamp_seconds", check),
            "values": "0+60x70",
        },
        # Runs fine for 20 minutes, then fails every time (from minute 21).
        {"series": series_name("portmapctl_last_run_success", check), "values": "1x20 0x50"},
        {"series": series_name("portmapctl_chains", {**stale, **check}), "values": "1x20 _x50"},
    ]
    failing = {"severity": "warning", **check}
    cases = [
        {"eval_time": "40m", "alertname": "PortmapctlCheckFailing", "exp_alerts": []},
        {
            "eval_time": "42m",
            "alertname": "PortmapctlCheckFailing",
            "exp_alerts": [{"exp_labels": failing}],
        },
        # What it hides: the stale chain, seen for 20 minutes, never fires.
        {"eval_time": "42m", "alertname": "PortmapctlStaleChains", "exp_alerts": []},
    ]
    promtool_test_rules(tmp_path, series, cases)


def test_a_check_failing_most_runs_is_an_alert_though_it_never_fails_for_long(tmp_path):
    """A check failing two runs in three (a lock the plugin holds half the time): each
    good run ended the failing alert's 15 minutes, each failed one the stale chain's
    30 (it writes no counts), so neither fired for hours (found by h227). Failing over
    half of the last 30 minutes is the alert; one failed run now and then is not."""
    node = {"instance": "node6", "job": "node"}
    check = {"command": "check", **node}
    flapping = " ".join((["0"] * 10 + ["1"] * 5) * 8)  # 120 minutes
    now_and_then = " ".join((["0"] + ["1"] * 9) * 12)  # one run in ten fails
    series = [
        {
            "series": series_name("portmapctl_last_run_timestamp_seconds", check),
            "values": "0+60x119",
        },
        {"series": series_name("portmapctl_last_run_success", check), "values": flapping},
        {
            "series": series_name("portmapctl_last_run_success", {**check, "instance": "node7"}),
            "values": now_and_then,
        },
    ]
    failing = {"severity": "warning", **check}
    cases = [
        {
            "eval_time": "60m",
            "alertname": "PortmapctlCheckFailing",
            "exp_alerts": [{"exp_labels": failing}],
        },
        {
            "eval_time": "110m",
            "alertname": "PortmapctlCheckFailing",
            "exp_alerts": [{"exp_labels": failing}],
        },
    ]
    promtool_test_rules(tmp_path, series, cases)


def test_the_missing_metrics_alert_fires_where_nobody_writes_them(tmp_path):
    node = {"instance": "node2", "job": "node"}
    series = [{"series": series_name("node_textfile_scrape_error", node), "values": "0x40"}]
    cases = [
        {"eval_time": "29m", "alertname": "PortmapctlMetricsMissing", "exp_alerts": []},
        {
            "eval_time": "31m",
            "alertname": "PortmapctlMetricsMissing",
            "exp_alerts": [{"exp_labels": {"severity": "info", **node}}],
        },
    ]
    promtool_test_rules(tmp_path, series, cases)


def _documented_query(what: str) -> str:
    """The PromQL docs/monitoring.md's "Some queries" gives for `what`."""
    found = re.search(rf"^- {re.escape(what)}: `([^`]+)`", MONITORING.read_text(), re.M)
    assert found, f"docs/monitoring.md gives no query for {what!r}"
    return found.group(1)


def test_the_empty_cache_query_names_only_nodes_with_an_empty_cache(tmp_path):
    """gc reports each CNI cache directory it reads, by default /var/lib/cni and, where
    it exists, /var/lib/cni/multus (here an empty one on every node). The
    documented query compared each directory alone, so it named every such node as one
    whose cache is empty (where gc would refuse), a false alarm on most of a fleet."""
    query = _documented_query("nodes whose cache is empty")
    series = []
    for instance, entries in (("node1", 3), ("node2", 0)):
        for directory, count in (("/var/lib/cni", entries), ("/var/lib/cni/multus", 0)):
            labels = {"command": "gc", "dir": directory, "instance": instance, "job": "node"}
            series.append(
                {
                    "series": series_name("portmapctl_cni_cache_entries", labels),
                    "values": f"{count}x5",
                }
            )
    test = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": query,
                        "eval_time": "2m",
                        "exp_samples": [
                            {"labels": '{command="gc",instance="node2",job="node"}', "value": 0}
                        ],
                    }
                ],
            }
        ],
    }
    run_promtool_test(tmp_path, test)


def test_every_line_the_pods_loop_writes_to_its_log_is_portmapctls(daemonset, tmp_path):
    """The pod's log holds the loop's stdout (gc's summary line each round) and its
    stderr, where a log pipeline keeps the lines that start `portmapctl:` (every error
    and warning of portmapctl does). The loop's own line for a failed gc read
    `portmapctl gc: exit 2`, the one stderr line without it, and was dropped with the
    exit code it gives. The loop runs here as the pod runs it, one round; its portmapctl is this
    one, pointed at a namespace and a CNI cache that are not there, so check (exit 3)
    and gc (exit 2) fail without looking at anything of this machine's."""
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    shim = tmp_path / "bin" / "portmapctl"
    shim.parent.mkdir()
    shim.write_text(
        f'#!/bin/sh\nexec {sys.executable} -m portmapctl "$@" --netns {tmp_path}/no-such-ns'
        f" --cni-cache-dir {tmp_path}/cni\n"
    )
    shim.chmod(0o755)
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    run_env = {
        **os.environ,
        **env,
        "METRICS_DIR": str(metrics),
        "GC_INTERVAL_SECONDS": "600",
        "PORTMAPCTL_RUN_DIR": str(tmp_path / "run"),
        "PATH": f"{shim.parent}:{os.environ['PATH']}",
    }
    log = tmp_path / "log"
    with log.open("w") as stderr:
        loop = subprocess.Popen(
            [*container["command"], *container["args"]],
            env=run_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            for _ in range(600):  # one round: gc's metrics written, its exit said
                if len(log.read_text().splitlines()) >= 3:
                    break
                time.sleep(0.05)
        finally:
            loop.terminate()  # the pod's stop: the loop ends at its sleep
            assert loop.wait(timeout=30) == 0
    lines = log.read_text().splitlines()
    assert len(lines) >= 3, lines  # check's error, gc's error, gc's exit code
    assert [line for line in lines if not line.startswith("portmapctl:")] == [], lines
    assert lines[-1].endswith(" 2"), lines
