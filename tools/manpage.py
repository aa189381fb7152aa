"""man/portmapctl.1: the man page, in roff, from the command definitions (clidoc).

The per-command sections, their synopses, options and examples come from the typer
app; the prose around them (DESCRIPTION, EXIT STATUS, FILES, ENVIRONMENT) is written
here, once. The output depends on nothing but the code: no date, no terminal width.
"""

from __future__ import annotations

from typing import Iterable, List, Optional

from portmapctl.core.backend import IptablesAccess
from portmapctl.host.paths import (
    CNI_CACHE_DIR,
    DEFAULT_RUN_DIR,
    HOST_LOCAL_DATA_DIR,
    MULTUS_CACHE_DIR,
)
from tools.clidoc import AppDoc, CommandDoc, OptionDoc

NAME = (
    "portmapctl \\- inspect and repair the NAT chains and UDP conntrack state"
    " of the CNI portmap plugin"
)

DESCRIPTION = [
    "The CNI portmap plugin publishes container ports on a Linux node with NAT rules."
    " On its iptables backend (the default): per container a chain CNI-DN-<hash> in"
    " the nat table (IPv4 and IPv6), entered from the shared chain CNI-HOSTPORT-DNAT,"
    " plus the marking and masquerade chains CNI-HOSTPORT-SETMARK and"
    " CNI-HOSTPORT-MASQ; plugins from before 2018 also left CNI-SN-<hash> chains. On"
    ' its nftables backend (v1.6 on, "backend": "nftables" in its config): the tables'
    " ip cni_hostport and ip6 cni_hostport, one DNAT rule per mapping and masquerade"
    " rules, each commented with the bare container ID. UDP flows keep following an"
    " old DNAT destination in conntrack until they go idle.",
    "portmapctl lists that state (list), creates it exactly as the plugin does (add),"
    " verifies and repairs it against the CNI cache (check), removes what dead"
    " containers left behind (gc) and deletes UDP conntrack entries that misroute"
    " (flush-udp). --backend auto (the default) reads both backends and follows each"
    " container to the one the plugin uses for it.",
    "list, check, gc and flush-udp read each address family with one iptables-save"
    " (with --iptables iptc: through python-iptables); check --repair and gc change it"
    " with one atomic iptables-restore --noflush transaction, waiting for the xtables"
    " lock (gc's removal on nf_tables: one nf_tables batch that the kernel refuses whole"
    " when the ruleset changed since it was read). add reads no whole table: a new"
    " container on nf_tables is checked over netlink and written as one such batch (else"
    " with one iptables-restore whose checks refuse it whole when the node is not as"
    " assumed); only when that is refused, on legacy iptables, with --iptables iptc or"
    " with --dry-run does add read the family as the others do and change it in one"
    " transaction. The nftables backend is read with nft -j list and changed with one"
    " nft -f transaction for both families (gc's deletions there: one nf_tables batch at"
    " the generation they were read at, refused whole when the ruleset changed since)."
    " Only the CNI-HOSTPORT-*, CNI-DN-* and CNI-SN-* chains and the"
    " rules that jump to them, and the cni_hostport tables and the plugin's rules in"
    " them, are ever written. Runs that change a node serialise on a lock file. Every"
    " value given on the command line or read from a file is validated before"
    " anything is written.",
    "Options go after the command, as in portmapctl list -o json. With -o json a command"
    " prints one JSON document on standard output and its messages on standard error."
    " Colour is used only on a terminal, and not with --no-color or NO_COLOR.",
]

EXIT_STATUS = [
    ("0", "Done; for check: the node (or the mapping) is healthy, or was repaired."),
    (
        "1",
        "check found problems (or problems remain after --repair); gc or add could not"
        " apply its change after retries (nothing was half-applied).",
    ),
    (
        "2",
        "Usage or bad input: an unknown option, an invalid port, address, container ID or"
        " network name, an unreadable or malformed file. Nothing was changed.",
    ),
    (
        "3",
        "Environment: not root where root is needed, no usable iptables, the namespace"
        " was not found, or the backend cannot be used on this host; a nat table that"
        " cannot be read, an iptables tool or nft that did not answer within its"
        " timeout, the lock held by another run for over 60 s, output that could not"
        " be written (a full disk); and an internal error (portmapctl: internal error:"
        " ...), never 1, which check means as problems found.",
    ),
    ("130", "Interrupted (Ctrl-C): one line, portmapctl: aborted."),
    (
        "143",
        "Stopped by SIGTERM: one line, portmapctl: terminated, then the process ends by"
        " SIGTERM itself (shells and Kubernetes show 143; a systemd unit counts it a"
        " success only with SuccessExitStatus=SIGTERM, as the units in deploy/systemd"
        " have). No transaction is half-applied.",
    ),
]

FILES = [
    (
        f"{CNI_CACHE_DIR}/results/",
        "libcni's cache: one file per live attachment (network, container ID, interface),"
        " written after a successful ADD and removed on DEL. It is what check compares"
        " the chains with and what gc counts as live. Other directories are given with"
        " --cni-cache-dir (repeatable).",
    ),
    (
        f"{MULTUS_CACHE_DIR}/results/",
        "Multus's libcni cache for its delegate networks (the network that names a pod's"
        " portmap chain); read too, by default, where it exists.",
    ),
    (
        f"{DEFAULT_RUN_DIR}/lock",
        "Lock file: portmapctl runs that change a node wait for each other here.",
    ),
    (
        f"{DEFAULT_RUN_DIR}/",
        "gc's state (gc-state.json): when each chain that is not live was first seen, so"
        " that a chain is removed only after --min-age (a chain of a container being"
        " added is not live yet). add's memos of what the node's tools said"
        " (tool-answers.json: iptables --version; iptables-lines.v4.json and .v6: the"
        " lines iptables printed for rules add reads over netlink), each used only while"
        " the tool is the same file. Kept in /run, so it starts afresh after a reboot.",
    ),
    (
        f"{HOST_LOCAL_DATA_DIR}/",
        "host-local's leases: check --repair makes nothing for a cached container whose"
        " address is leased to it no more, where its network namespace cannot be looked"
        " into (read only).",
    ),
    ("/run/xtables.lock", "The xtables lock iptables-restore waits for."),
]

# --iptables's words (core's IptablesAccess), as a sentence lists them: "a, b or c".
_ACCESS = [str(access) for access in IptablesAccess]
_ACCESS_WORDS = f"{', '.join(_ACCESS[:-1])} or {_ACCESS[-1]}"

# Every variable docs/commands/README.md's environment table names (the test of the
# man page holds the two to the same names).
ENVIRONMENT = [
    ("PORTMAPCTL_IPTABLES", f"Default for --iptables: {_ACCESS_WORDS}."),
    (
        "PORTMAPCTL_CNI_CACHE_DIR",
        "Default for --cni-cache-dir (several directories separated by spaces).",
    ),
    (
        "PORTMAPCTL_CNI_BIN_DIR",
        "Default for check's and add's --cni-bin-dir (several directories separated by"
        " spaces): where the runtime's CNI plugins are.",
    ),
    ("PORTMAPCTL_METRICS_FILE", "Default for --metrics-file."),
    (
        "PORTMAPCTL_HOST_LOCAL_DIR",
        "host-local's data directory for a cached network config that names no dataDir;"
        " default /var/lib/cni/networks.",
    ),
    (
        "PORTMAPCTL_RUN_DIR",
        "Where the lock, gc's state and add's memos are kept (an absolute path);"
        " default /run/portmapctl.",
    ),
    (
        "PORTMAPCTL_XTABLES_WAIT",
        "Whole seconds (1 or more) iptables-restore -w, or --iptables iptc, waits for"
        " the xtables lock; default 10.",
    ),
    (
        "PORTMAPCTL_IPTABLES_TIMEOUT",
        "Seconds (above 0, up to 86400) an iptables tool may run before it is stopped;"
        " default 120.",
    ),
    (
        "PORTMAPCTL_NFT_BATCH",
        "0: gc's removal and add's write on nf_tables go through iptables-restore too,"
        " not as one nf_tables batch; 1 (the default): as one batch.",
    ),
    (
        "PORTMAPCTL_PROGRESS_AFTER",
        "Seconds (0 to 3600) of work before progress shows on a terminal's stderr;"
        " default 1. A PORTMAPCTL_ variable set to a value it does not take is bad"
        " input (exit 2); unset or empty, it is its default.",
    ),
    (
        "NO_COLOR",
        "When set and not empty, output has no colour, as with --no-color.",
    ),
    ("FORCE_COLOR", "When set, not empty and not 0: colour even off a terminal."),
    ("XTABLES_LOCKFILE", "iptables' own: where --iptables iptc takes the xtables lock."),
    (
        "COLUMNS",
        "Width of tables on a terminal (off a terminal, lines are not cut).",
    ),
]

EXAMPLES_INTRO = [
    (
        "See what the plugin left on a node, and what is wrong with it:",
        ["portmapctl list", "portmapctl check"],
    ),
    (
        "Read a support bundle on a laptop (no root, no kernel access):",
        [
            "portmapctl list --snapshot iptables-save.txt \\\n"
            "    --snapshot6 ip6tables-save.txt --cni-cache-dir ./cni"
        ],
    ),
    (
        "From cron, a systemd timer or a Kubernetes DaemonSet, every few minutes"
        " (one summary line, exit 0 unless something failed):",
        ["portmapctl gc --yes -q"],
    ),
]

SEE_ALSO = [
    ("iptables-save", "8"),
    ("iptables-restore", "8"),
    ("iptables", "8"),
    ("nft", "8"),
    ("conntrack", "8"),
    ("ip-netns", "8"),
]


def esc(text: str) -> str:
    """Text for a roff line: backslashes and hyphens literal, no line a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-").replace("'", "\\(aq")
    return "\n".join("\\&" + line if line.startswith(".") else line for line in text.split("\n"))


def bold(text: str) -> str:
    return f"\\fB{esc(text)}\\fR"


def italic(text: str) -> str:
    return f"\\fI{esc(text)}\\fR"


def option_term(option: OptionDoc) -> str:
    """`-o, --output table|json`: names in bold, the value in italics (choices bold)."""
    names = ", ".join(bold(n) for n in option.names)
    if option.is_flag:
        return names
    if option.choices:
        return names + " " + "|".join(bold(c) for c in option.choices)
    return names + " " + italic(option.metavar or "")


def option_synopsis(option: OptionDoc) -> str:
    term = bold(option.long_name)
    if not option.is_flag:
        # Choices, unless the option names its value (`--status WORD`: eight choices
        # would make a synopsis line that cannot be broken).
        named = option.metavar is not None and option.metavar != "|".join(option.choices)
        value = (
            "|".join(bold(c) for c in option.choices)
            if option.choices and not named
            else italic(option.metavar or "")
        )
        # "\ " does not break: an option stays on one line with its value.
        term += r"\ " + value
    suffix = " .\\|.\\|." if option.multiple else ""
    return term + suffix if option.required else f"[{term}]{suffix}"


def option_help(option: OptionDoc) -> str:
    parts = [option.help.rstrip(".") + "." if option.help else ""]
    if option.multiple:
        parts.append("May be given more than once.")
    if option.required:
        parts.append("Required.")
    if option.range:
        parts.append(f"Range: {option.range}.")
    if option.default is not None:
        parts.append(f"Default: {option.default}.")
    if option.envvar:
        parts.append(f"Environment: {option.envvar}.")
    return esc(" ".join(p for p in parts if p))


def _options(options: Iterable[OptionDoc]) -> List[str]:
    lines: List[str] = []
    for option in options:
        lines += [".TP", option_term(option), option_help(option)]
    return lines


def _example(command: str) -> List[str]:
    return [".PP", ".RS 4", ".EX", esc(command), ".EE", ".RE"]


def _synopsis(name: str, parts: List[str]) -> List[str]:
    # .SY/.YS (groff's man extensions, which man-db uses): wrapped lines hang indented.
    return [f".SY {name}", *parts, ".YS"]


def _command_section(doc: AppDoc, command: CommandDoc) -> List[str]:
    own = doc.own_options(command)
    lines = [f'.SH "{command.name.upper()} COMMAND"']
    lines += _synopsis(
        "portmapctl",
        [bold(command.name)] + [option_synopsis(o) for o in own] + ["[\\fIcommon\\ options\\fR]"],
    )
    for paragraph in command.help:
        lines += [".PP", esc(paragraph)]
    panels: List[Optional[str]] = [None]
    for option in own:
        if option.panel not in panels:
            panels.append(option.panel)
    for panel in panels:
        # Options without a panel are the command's own; a panel (e.g. "Mapping")
        # gathers a group that commands share.
        group = [o for o in own if o.panel == panel]
        if not group:
            continue
        if panel:
            lines += [".PP", f"{esc(panel)} options:"]
        lines += [".RS 4" if panel else ".PP", *_options(group)]
        if panel:
            lines.append(".RE")
    lines += [".PP", "The common options (see \\fBCOMMON OPTIONS\\fR) apply, and \\fB\\-h\\fR."]
    for note in command.notes:
        if "\n" in note:  # laid out by hand (a table of words): keep its lines
            lines += [".PP", ".nf", *(esc(line) for line in note.splitlines()), ".fi"]
        else:
            lines += [".PP", esc(note)]
    return lines


def render(doc: AppDoc) -> str:
    lines = [
        f'.TH PORTMAPCTL 1 "" "portmapctl {esc(doc.version)}" "User Commands"',
        # No hyphenation, ragged right: chain names and options must stay whole. The
        # man macros turn hyphenation back on at every paragraph, from register HY.
        ".nr HY 0",
        ".nh",
        ".ad l",
        ".SH NAME",
        NAME,
        ".SH SYNOPSIS",
        *_synopsis("portmapctl", [italic("COMMAND"), "[\\fIOPTIONS\\fR]"]),
        *_synopsis("portmapctl", [bold("--version")]),
        *_synopsis(
            "portmapctl", ["\\fB\\-\\-install\\-completion\\fR | \\fB\\-\\-show\\-completion\\fR"]
        ),
        ".PP",
        "Commands: " + ", ".join(bold(c.name) for c in doc.commands) + ".",
        ".SH DESCRIPTION",
    ]
    for paragraph in DESCRIPTION:
        lines += [".PP", esc(paragraph)]
    lines += [".SH COMMANDS"]
    for command in doc.commands:
        lines += [".TP", bold(command.name), esc(command.summary)]
    for command in doc.commands:
        lines += _command_section(doc, command)
    lines += [
        ".SH COMMON OPTIONS",
        ".PP",
        "Every command takes these options:",
        *_options(doc.common),
        ".TP",
        f"{bold('-h')}, {bold('--help')}",
        "Show the command's options and examples, and exit.",
        ".SH GLOBAL OPTIONS",
        ".PP",
        "Given before any command:",
        *_options(doc.global_options),
        ".SH EXIT STATUS",
    ]
    for code, meaning in EXIT_STATUS:
        lines += [".TP", bold(code), esc(meaning)]
    lines += [
        ".PP",
        "Every error is one line on standard error, saying what went wrong and what to do;"
        " \\fB\\-v\\fR adds the traceback.",
        ".SH FILES",
    ]
    for path, meaning in FILES:
        lines += [".TP", italic(path), esc(meaning)]
    lines += [".SH ENVIRONMENT"]
    for name, meaning in ENVIRONMENT:
        lines += [".TP", bold(name), esc(meaning)]
    lines += [".SH EXAMPLES"]
    for intro, commands in EXAMPLES_INTRO:
        lines += [".PP", esc(intro)]
        for command_line in commands:
            lines += _example(command_line)
    for command in doc.commands:
        if not command.examples:
            continue
        lines += [".PP", f"{bold('portmapctl ' + command.name)}:"]
        for example in command.examples:
            lines += _example(example)
    lines += [".SH SEE ALSO"]
    lines.append(",\n".join(f".BR {name} ({section})" for name, section in SEE_ALSO))
    return "\n".join(lines) + "\n"
