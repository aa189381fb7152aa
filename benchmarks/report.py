"""benchmarks/out/results.json -> docs/performance.md and docs/performance.png.

    python benchmarks/report.py [benchmarks/out/results.json]

bench.py calls this at the end of a run; run it alone to redo the docs from a saved
run. The text between the `BEGIN hand-written` and `END hand-written` markers of the
existing docs/performance.md (the profiling notes) is carried over unchanged.
The plot needs matplotlib (`pip install matplotlib`, a benchmark-only dependency); without
it the Markdown is still written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "performance.md"
PNG = ROOT / "docs" / "performance.png"
RESULTS = ROOT / "benchmarks" / "out" / "results.json"
KEEP_BEGIN = "<!-- BEGIN hand-written: report.py keeps this part -->"
KEEP_END = "<!-- END hand-written -->"

Doc = Dict[str, Any]


# --- numbers ----------------------------------------------------------------------------


def seconds(value: float) -> str:
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 100:
        return f"{value:.2f} s"
    return f"{value:,.0f} s"


def spread(stat: Dict[str, float]) -> str:
    """median (min-max), in the median's unit."""
    median, low, high = stat["median"], stat["min"], stat["max"]
    if median < 1:
        return f"{median * 1000:.0f} ms ({low * 1000:.0f}–{high * 1000:.0f})"
    return f"{median:.2f} s ({low:.2f}–{high:.2f})"


def ratio(baseline: float, ours: float) -> str:
    value = baseline / ours
    return f"{value:,.0f}×" if value >= 10 else f"{value:.1f}×"


def faster(baseline: float, ours: float) -> str:
    """`311× faster`, or `2.2× slower` when the baseline wins."""
    if baseline < ours:
        return f"{ours / baseline:.1f}× slower"
    return f"{ratio(baseline, ours)} faster"


def count(n: int) -> str:
    return f"{n:,}"


def sizes(doc: Doc) -> List[int]:
    return [int(n) for n in doc["results"]]


def at(doc: Doc, n: int) -> Dict[str, Any]:
    return doc["results"][str(n)]


def plugin_total(entry: Dict[str, Any]) -> str:
    """An estimated or measured total for the plugin, saying which."""
    per = entry["per_container"]
    if entry["extrapolated"]:
        how = f"{entry['measured']} of {count(entry['of'])} run, × {count(entry['of'])}"
    else:
        how = f"all {count(entry['of'])} run"
    return (
        f"{seconds(entry['total'])} ({seconds(per['median'])} each,"
        f" {seconds(per['min'])}–{seconds(per['max'])}; {how})"
    )


# --- the Markdown ---------------------------------------------------------------------------


def targets(doc: Doc) -> List[List[str]]:
    """SPEC §6's targets, at N = 1,000 (where the spec puts them)."""
    if "1000" not in doc["results"]:
        return []
    r = at(doc, 1000)
    rows = []
    gc, dels = r["gc"]["median"], r["plugin_del"]["total"]
    rows.append(
        [
            "`gc` of 1,000 stale containers: ≥ 100× faster than the plugin's DEL of each,"
            " about 1 s or less",
            f"{seconds(gc)} vs {seconds(dels)}: {ratio(dels, gc)}",
            verdict(dels / gc >= 100 and gc <= 1.0),
        ]
    )
    listing, save = r["list"]["median"], r["save"]["median"]
    rows.append(
        [
            "`list` of 1,000 containers (2,000 mappings): ≤ 0.5 s and ≤ 5× a bare"
            " `iptables-save -t nat`",
            f"{seconds(listing)}; {listing / save:.1f}× the save's {seconds(save)}",
            verdict(listing <= 0.5 and listing <= 5 * save),
        ]
    )
    start = doc["startup"]
    worst = max(start["version"]["median"], start["help"]["median"])
    rows.append(
        [
            "`portmapctl --version` / `--help`: ≤ 0.15 s",
            f"{seconds(start['version']['median'])} / {seconds(start['help']['median'])}"
            f" (`python -c pass`: {seconds(start['python']['median'])})",
            verdict(worst <= 0.15),
        ]
    )
    add, plugin = r["add"]["median"], r["plugin_add"]["median"]
    rows.append(
        [
            "`add` of one container into a table of 1,000: ≥ 5× faster than the plugin's ADD",
            f"{seconds(add)} vs {seconds(plugin)}: {ratio(plugin, add)}",
            verdict(plugin / add >= 5),
        ]
    )
    flush = flush_result(doc)
    if flush is not None:
        ours = flush["flush_udp"]["median"]
        rows.append(
            [
                "`flush-udp` of 10,000 conntrack entries: ≤ 2 s",
                f"{seconds(ours)} (`conntrack -D`: {seconds(flush['conntrack_tool']['median'])})",
                verdict(ours <= 2),
            ]
        )
    return rows


def verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def flush_result(doc: Doc) -> Optional[Dict[str, Any]]:
    for n in sizes(doc):
        if "flush" in at(doc, n):
            return at(doc, n)["flush"]
    return None


def table(headers: List[str], rows: List[List[str]]) -> List[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def side_by_side(doc: Doc) -> List[str]:
    lines: List[str] = []
    ns = sizes(doc)
    rows = []
    for n in ns:
        r = at(doc, n)
        rules = r["rules"]
        rows.append(
            [
                count(n),
                f"{count(rules['4'])} + {count(rules['6'])}",
                spread(r["list"]),
                spread(r["list_json"]),
                spread(r["save"]),
                f"{r['list']['median'] / r['save']['median']:.1f}×",
            ]
        )
    lines += ["### `list` vs a bare `iptables-save -t nat`", ""]
    lines += table(
        [
            "N",
            "rules (IPv4 + IPv6)",
            "`portmapctl list`",
            "`list -o json`",
            "`iptables-save -t nat`",
            "list / save",
        ],
        rows,
    )
    lines += [
        "",
        "`list` reads both families (the two saves run side by side), the CNI cache"
        " (N files) and prints 2 rows per container; the bare save is IPv4 only"
        " (`ip6tables-save` of the 10% dual-stack containers: "
        + ", ".join(f"{seconds(at(doc, n)['save6']['median'])} at {count(n)}" for n in ns)
        + ").",
        "",
    ]
    rows = [
        [
            count(n),
            spread(at(doc, n)["add"]),
            spread(at(doc, n)["plugin_add"]),
            faster(at(doc, n)["plugin_add"]["median"], at(doc, n)["add"]["median"]),
        ]
        for n in ns
    ]
    lines += ["### `add` of one container vs the plugin's ADD", ""]
    lines += table(["N (table)", "`portmapctl add`", "plugin ADD", "portmapctl"], rows)
    lines += [
        "",
        "One new IPv4 container (one TCP, one UDP port) per run, into the table of N; ours and"
        " the plugin's take turns. Both flush the UDP port's conntrack entries and set"
        " route_localnet, as the plugin does.",
        "",
    ]
    rows = [
        [
            count(n),
            spread(at(doc, n)["check"]),
            plugin_total(at(doc, n)["plugin_check"]),
            faster(at(doc, n)["plugin_check"]["total"], at(doc, n)["check"]["median"]),
        ]
        for n in ns
    ]
    lines += ["### `check` of a healthy node vs the plugin's CHECK of each container", ""]
    lines += table(["N", "`portmapctl check`", "plugin CHECK × N", "portmapctl"], rows)
    lines += [
        "",
        "`check` compares every cached container's chains with the table, looks for"
        " shadowed/orphan/stale chains and reads the other iptables flavour for split brain."
        " The plugin's CHECK runs once per family a container has; above"
        f" N = {doc['plan']['every_up_to']} the mean of a sample is multiplied by N (the"
        " table does not change between CHECKs).",
        "",
    ]
    rows = [
        [
            count(n),
            spread(at(doc, n)["gc"]),
            plugin_total(at(doc, n)["plugin_del"]),
            faster(at(doc, n)["plugin_del"]["total"], at(doc, n)["gc"]["median"]),
        ]
        for n in ns
    ]
    lines += ["### `gc` of N stale containers vs the plugin's DEL of each", ""]
    lines += table(["N", "`portmapctl gc --yes --min-age 0`", "plugin DEL × N", "portmapctl"], rows)
    lines += [
        "",
        "`gc` removes every per-container chain (the CNI cache is there and empty) in one"
        " transaction per family, then deletes the UDP conntrack entries of the N freed ports."
        " Each run gets a freshly filled table. The plugin's DEL of each container is run in"
        f" a row up to N = {doc['plan']['every_up_to']}; above, a sample is **extrapolated**:"
        " DEL number j of k runs on a table shrunk (by bulk removal) to the size it has at"
        " that point of a row of N DELs, and stands for N/k of them.",
        "",
    ]
    flush = flush_result(doc)
    if flush is not None:
        lines += ["### `flush-udp` vs the `conntrack` tool", ""]
        lines += table(
            ["entries", "`portmapctl flush-udp`", f"`conntrack -D` × {flush['ports']} ports"],
            [
                [
                    count(flush["entries"]),
                    spread(flush["flush_udp"]),
                    spread(flush["conntrack_tool"]),
                ]
            ],
        )
        lines += [
            "",
            f"In the N = {count(doc['flush_at'])} node: {count(flush['entries'])} UDP entries"
            f" on {flush['ports']} mapped host ports. `flush-udp` reads the tables to find every"
            " mapped UDP port itself (a whole-table dump filtered by protocol, as there are"
            " more than 8 ports); the tool is told the 4 ports and runs once per port.",
            "",
        ]
    start = doc["startup"]
    lines += ["### Start-up", ""]
    lines += table(
        ["`portmapctl --version`", "`portmapctl --help`", "`portmapctl list --help`",
         "`python -c pass`"],
        [[spread(start[k]) for k in ("version", "help", "list_help", "python")]],
    )  # fmt: skip
    lines += [""]
    fills = [(n, at(doc, n)["fill"]) for n in ns if "plugin_seconds" in at(doc, n)["fill"]]
    if fills:
        lines += ["### Filling the tables", ""]
        lines += table(
            ["N", "through the plugin's ADD, one by one", "bulk `iptables-restore`", "identical"],
            [
                [
                    count(n),
                    f"{seconds(f['plugin_seconds'])} ({seconds(f['plugin_per_add']['median'])}"
                    " each)",
                    seconds(f["bulk_seconds"]),
                    "yes" if f["identical"] else "**no**",
                ]
                for n, f in fills
            ],
        )
        lines += [
            "",
            "The bulk fill writes what portmapctl's model generates for the plugin; at these N"
            " the `iptables-save` of both namespaces is compared and must be identical. Bulk"
            " fill at every N: "
            + ", ".join(f"{seconds(at(doc, n)['fill']['bulk_seconds'])} at {count(n)}" for n in ns)
            + ".",
            "",
        ]
    return lines


SERIES = {
    # key -> (label, how to read the median from a size's results)
    "list": ("`portmapctl list`", lambda r: r["list"]["median"]),
    "save": ("`iptables-save -t nat`", lambda r: r["save"]["median"]),
    "add": ("`portmapctl add` (one container)", lambda r: r["add"]["median"]),
    "plugin_add": ("plugin ADD (one container)", lambda r: r["plugin_add"]["median"]),
    "check": ("`portmapctl check`", lambda r: r["check"]["median"]),
    "plugin_check": ("plugin CHECK, per container", lambda r: r["plugin_check"]["per_container"]["median"]),
    "gc": ("`portmapctl gc` of N", lambda r: r["gc"]["median"]),
    "plugin_del": ("plugin DEL, per container", lambda r: r["plugin_del"]["per_container"]["median"]),
}  # fmt: skip


def growth(doc: Doc) -> List[str]:
    ns = sizes(doc)
    lines = [
        "## How the cost grows with N",
        "",
        "portmapctl reads a family with one `iptables-save` and writes it with one"
        " `iptables-restore`, whatever the number of containers or of changes. So every"
        " command costs a fixed part (interpreter, imports, spawning the tools: about the"
        " time at N = 10) plus a part linear in the table size (saving, parsing and"
        " planning ~9 rules per container; for `gc` also removing them, for `list` and"
        " `check` also reading N cache files). `add` changes one"
        " container and saves no table: on nf_tables one nf_tables batch for both"
        " families, guarded by the generation its few reads (the chain's absence, the"
        " shared rules) were made at, and for its warning a netlink dump of"
        " `CNI-HOSTPORT-DNAT` (from about 2,000 containers on, in a child forked as add"
        " starts); what still grows with the table is that dump and the kernel's own"
        " validation of the table on every commit. `gc` on nf_tables writes no restore: each family's"
        " removal is one nf_tables batch, refused by the kernel if the ruleset changed"
        " since the read, which flushes `CNI-HOSTPORT-DNAT` and appends the kept rules"
        " again when that is cheaper than deleting rules one by one (nf_tables finds a"
        " rule to delete by walking its chain from the start, so many deletions grow as"
        " the square; see the field shapes below). The plugin runs"
        " one `iptables` process per rule it checks or writes, and under nf_tables each"
        " of them fetches the ruleset: one ADD, DEL or CHECK is itself linear in the table"
        " size, so doing one for each of N containers grows as N².",
        "",
        "The check: for a linear cost, the extra time per 1,000 more containers is the"
        " same from 100 to 1,000 as from 1,000 to 5,000.",
        "",
    ]
    rows = []
    if not {100, 1000, 5000} <= set(ns):
        return lines + ["(needs N = 100, 1,000 and 5,000: a full run)", ""]
    for label, read in SERIES.values():
        t = {n: read(at(doc, n)) for n in ns}
        low = (t[1000] - t[100]) / 900 * 1000
        high = (t[5000] - t[1000]) / 4000 * 1000
        change = high / low if low > 0 else float("inf")
        if 0.7 <= change <= 1.4:
            verdict = "linear"
        elif change > 1.4:
            verdict = f"faster than linear (×{change:.1f})"
        else:
            verdict = f"slower than linear (×{change:.1f})"
        rows.append([label] + [seconds(t[n]) for n in ns] + [seconds(low), seconds(high), verdict])
    lines += table(
        [
            "figure",
            *(f"N = {count(n)}" for n in ns),
            "per 1,000 more, 100 → 1,000",
            "1,000 → 5,000",
            "growth",
        ],
        rows,
    )
    lines += [""]
    return lines


def markdown(doc: Doc, kept: str) -> str:
    m = doc["machine"]
    lines = [
        "# Performance",
        "",
        "SPEC §6, measured side by side with the real portmap plugin in one run on one"
        f" machine, by `sudo python benchmarks/bench.py` ({'quick' if doc['quick'] else 'full'}"
        f" run, {doc['date']}, {doc['seconds']:.0f} s). This page and"
        " [the plot](performance.png) are generated from its JSON by"
        " [benchmarks/report.py](../benchmarks/report.py); how to run it, what each figure"
        " is and how the tables are filled: [benchmarks/bench.py](../benchmarks/bench.py).",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; {m['os']}, kernel"
        f" {m['kernel']}; {m['iptables']} (the `{doc['mode']}` flavour measured);"
        f" {m['plugin']} (`/usr/lib/cni/portmap`); {m['conntrack']};"
        f" {m.get('interpreter') or 'Python ' + m['python']};"
        f" portmapctl {m['portmapctl']}. Load average (1, 5, 15 min) at the start"
        f" {fmt_load(doc['load_start'])}, at the end {fmt_load(doc['load_end'])} (other"
        " work ran on the machine).",
        "",
        f"Workload: N containers of one network, each with one TCP and one UDP host port;"
        " every tenth has a host IP on its TCP port, every tenth is dual-stack (IPv4 +"
        " IPv6), so a container has about 9 rules. Times are wall clock of whole processes"
        " as a user runs them (the installed console script, inside the node's network"
        " namespace, output read through a pipe; its modules compiled to bytecode, as"
        " `pip install` leaves them): median of"
        f" {doc['plan']['runs']} runs ({doc['plan']['add_runs']} for `add`,"
        f" {doc['plan']['startup_runs']} for start-up), min–max in brackets.",
        "",
        "![time against N, portmapctl and the plugin, log axes](performance.png)",
        "",
    ]
    rows = targets(doc)
    if rows:
        lines += ["## SPEC §6 targets", ""]
        lines += table(["target", "measured (N = 1,000)", ""], rows)
        lines += [""]
    lines += ["## Side by side", ""]
    lines += side_by_side(doc)
    lines += growth(doc)
    lines += [KEEP_BEGIN, kept.strip("\n"), KEEP_END, ""]
    return "\n".join(lines)


def fmt_load(values: Sequence[float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


def kept_text() -> str:
    if not DOC.exists():
        return "\n## Profiling\n\n(notes go here)\n"
    text = DOC.read_text()
    if KEEP_BEGIN not in text or KEEP_END not in text:
        return "\n## Profiling\n\n(notes go here)\n"
    return text.split(KEEP_BEGIN, 1)[1].split(KEEP_END, 1)[0]


# --- the plot ---------------------------------------------------------------------------------


PANELS = [
    # title, [(key, label) of portmapctl, (key, label) of the baseline], what the note says
    ("list", [("list", "portmapctl list"), ("save", "iptables-save -t nat (bare)")], "save"),
    ("add one container to a table of N", [("add", "portmapctl add"), ("plugin_add", "plugin ADD")], "faster"),
    ("check a healthy node", [("check", "portmapctl check"), ("plugin_check", "plugin CHECK × N")], "faster"),
    ("gc N stale containers", [("gc", "portmapctl gc"), ("plugin_del", "plugin DEL × N")], "faster"),
]  # fmt: skip


def _note(ours: float, theirs: float, kind: str) -> str:
    """`5.7× save` (list: how many saves it costs), `295× faster`, `2.1× slower`."""
    if kind == "save":
        return f"{ours / theirs:.1f}× save"
    factor = theirs / ours
    if factor < 1:
        return f"{1 / factor:.1f}× slower"
    return f"{factor:,.0f}× faster" if factor >= 10 else f"{factor:.1f}× faster"


def _point(r: Dict[str, Any], key: str) -> Tuple[float, float, float, bool]:
    """(median, low, high, extrapolated) for a panel's series."""
    entry = r[key]
    if "total" in entry:
        per = entry["per_container"]
        scale = entry["of"]
        if not entry["extrapolated"]:
            return entry["total"], entry["total"], entry["total"], False
        return entry["total"], per["min"] * scale, per["max"] * scale, True
    return entry["median"], entry["min"], entry["max"], False


def plot(doc: Doc, path: Path = PNG) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install matplotlib): no plot", file=sys.stderr)
        return False
    ns = sizes(doc)
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5), sharex=True)
    colours = {0: "#1f77b4", 1: "#d62728"}
    for ax, (title, series, kind) in zip(axes.flat, PANELS):
        for index, (key, label) in enumerate(series):
            points = [_point(at(doc, n), key) for n in ns]
            ys = [p[0] for p in points]
            low = [p[0] - p[1] for p in points]
            high = [p[2] - p[0] for p in points]
            ax.errorbar(ns, ys, yerr=[low, high], color=colours[index], marker="o",
                        capsize=3, label=label, linewidth=1.8)  # fmt: skip
            hollow = [(n, p[0]) for n, p in zip(ns, points) if p[3]]
            if hollow:
                ax.plot(*zip(*hollow), linestyle="none", marker="o", markersize=11,
                        markerfacecolor="white", markeredgecolor=colours[index],
                        label=f"{label}: sampled, extrapolated")  # fmt: skip
        highest = 0.0
        lowest = float("inf")
        for n in ns:
            a = _point(at(doc, n), series[0][0])
            b = _point(at(doc, n), series[1][0])
            highest = max(highest, a[2], b[2])
            lowest = min(lowest, a[1], b[1])
            ax.annotate(_note(a[0], b[0], kind), (n, max(a[0], b[0])), textcoords="offset points",
                        xytext=(0, 9), ha="center", fontsize=8, color="#333333")  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(lowest / 2, highest * 4)  # room for the notes above the points
        ax.set_xlim(ns[0] / 2.2, ns[-1] * 2.2)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
        ax.set_xticks(ns)
        ax.set_xticklabels([count(n) for n in ns])
    for ax in axes[1]:
        ax.set_xlabel("N containers in the table")
    for ax in axes[:, 0]:
        ax.set_ylabel("seconds (wall clock, log)")
    m = doc["machine"]
    fig.suptitle(
        f"portmapctl vs the portmap plugin (iptables {doc['mode']}): medians, min–max bars;"
        " hollow: sampled and extrapolated"
        f"\n{m['cpu']}, {m['cores']} cores, kernel {m['kernel']}, {doc['date'][:10]}",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(doc: Doc) -> None:
    DOC.write_text(markdown(doc, kept_text()))
    print(f"wrote {DOC.relative_to(ROOT)}")
    if plot(doc):
        print(f"wrote {PNG.relative_to(ROOT)}")


def main(argv: Optional[List[str]] = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else RESULTS
    write(json.loads(path.read_text()))


if __name__ == "__main__":
    main()
