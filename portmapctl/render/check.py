"""`check`: one row per problem, each kind's why and fix once, the summary line
(SPEC §3 check)."""

from __future__ import annotations

import re
from typing import (
    TYPE_CHECKING,
    AbstractSet,
    Any,
    Dict,
    Iterable,
    List,
    Optional,
    Sequence,
    Tuple,
)
from typing import Mapping as MappingT

from portmapctl.core.ids import short_form
from portmapctl.core.text import cell_text, name_text
from portmapctl.render.table import (
    SHORT_ID,
    Piece,
    chain_starts,
    count,
    owner_cell,
    short_id,
    table,
    unknown_chains,
    wrap,
)

if TYPE_CHECKING:
    from rich.text import Text

    from portmapctl.ops.check import CheckResult, Problem


_COMMAND = re.compile(r"(?:^|: )((?:portmapctl|ip6?tables(?:-\w+)?) [^`]*?)(?: \(([^()]*)\))?$")


def split_fix(fix: str) -> Tuple[Optional[str], str]:
    """A problem's fix as (the command, prose around it): `fix` in JSON is a command or
    null, prose goes with the why (SPEC §3 JSON)."""
    match = _COMMAND.search(fix or "")
    if match is None:
        return None, fix or ""
    before = fix[: match.start()].strip()
    prose = "; ".join(part for part in (before, match.group(2) or "") if part)
    return match.group(1), prose


_FULL_ID = re.compile(r"\b([0-9a-f]{12})[0-9a-f]{52}\b")
# A run of the characters a CNI container ID is made of (libcni: alphanumerics, _ . -).
_ID_LIKE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.\-]{{{SHORT_ID},}}")


def _in_path(text: str, match: re.Match) -> bool:
    """Whether the match is part of an absolute path (a word starting with "/"): an ID
    that names a file (Nomad's /var/run/netns/<allocation ID>) stays whole, since a cut
    path names nothing; `network/ID` is no path."""
    start = match.start()
    word_start = max(text.rfind(" ", 0, start), text.rfind("\n", 0, start)) + 1
    return start > word_start and text[word_start] == "/"


def _who(
    p: Problem, full_ids: bool, wide: bool, starts: Optional[MappingT[str, str]] = None
) -> str:
    """CONTAINER: the container's short ID; for a per-container chain of no known
    container (an orphan no entry rule names), the chain: else nothing in the row would
    say which chain (`-o wide` has its CHAIN column). By its start in `starts` (list's
    short form, `CNI-DN-e7055`), else (`full_ids`, a chain not among them) whole."""
    return owner_cell(p.container_id, p.chain, full_ids, chain_shown=wide, starts=starts)


def _chain_starts(result: CheckResult) -> Optional[Dict[str, str]]:
    """How list names the node's chains of no known container under CONTAINER
    (render.table.chain_starts over the node's such chains, as list_run passes them):
    one chain reads the same in list and check, and `list --container` or `flush-udp
    --container` with what check printed selects that chain alone. The whole name, 28
    characters, took room from PROBLEM at 80 columns. None where check did not read
    the node (one mapping's check): nothing to tell the chain apart from."""
    if result.found is None:
        return None
    return chain_starts(unknown_chains(result.rows, result.found.chains))


def _shorten_ids(text: str, ids: AbstractSet[str]) -> str:
    """Full container IDs in a problem's text as the 12 characters tables show.

    Looks each ID-like word up in `ids` (a set): checking every ID against every text
    took 9 s for 5,000 stale chains."""
    text = _FULL_ID.sub(lambda m: m.group() if _in_path(text, m) else m.group(1), text)

    def short(match: re.Match) -> str:
        word = match.group()
        if _in_path(text, match):
            return word
        bare = word.rstrip(".")  # the end of a sentence
        return short_form(bare) + word[len(bare) :] if bare in ids else word

    return _ID_LIKE.sub(short, text)


def problem_sort_key(p: Problem) -> Tuple[Any, ...]:
    """The order of check's problem rows (table and JSON): as list's (SPEC §3 list) by
    network, container and family, so that an operator looking for one container finds
    its problems together; the kinds are summed up by the summary line and explained
    once each below the table. Problems that name neither a network nor a container
    (the top-level chains, split brain, a chain no rule names an owner of) come first:
    they concern every container, and explain the rows after them (a firewall
    reload's missing-toplevel before each container's missing-chain). The sort is
    stable: one container's problems keep the order check finds them in (its chain
    before its entry rules)."""
    about_the_node = p.network is None and p.container_id is None
    return (
        not about_the_node,
        p.network is None,
        p.network or "",
        p.container_id is None,
        p.container_id or "",
        p.family is None,
        p.family or 0,
    )


def sorted_problems(problems: Iterable[Problem]) -> List[Problem]:
    return sorted(problems, key=problem_sort_key)


def check_text(
    result: CheckResult,
    width: Optional[int] = None,
    wide: bool = False,
    full_ids: bool = False,
    header: bool = True,
) -> Text:
    """SPEC §3 check: one row per problem (KIND, FAM, CONTAINER, PROBLEM; wide adds
    NETWORK, CHAIN and, last, the RULE at issue, whole), then once per kind why it
    matters and the fix, whole; then the summary line. `width` is the terminal's (None:
    piped, one line a row): a PROBLEM longer than its room goes on over lines of its
    own under its column (never cut: it is what is wrong), unless `full_ids`
    (--no-trunc) or `wide`, so no line of the default table wraps."""
    problems = sorted_problems(result.problems)
    ids = {p.container_id for p in problems if p.container_id}
    starts = None if full_ids or wide else _chain_starts(result)
    headers = ["KIND", "FAM", "CONTAINER"] + (["NETWORK", "CHAIN"] if wide else []) + ["PROBLEM"]
    if wide:
        headers.append("RULE")
    rows = []
    details = []
    for p in problems:
        detail = p.detail if full_ids else _shorten_ids(p.detail, ids)
        row = [str(p.kind), f"v{p.family}" if p.family else "-", _who(p, full_ids, wide, starts)]
        if wide:
            row += [p.network or "-", p.chain or "-", detail]
            details.append([Piece(rule_cell(p.rules))])
        else:
            details.append([Piece(detail)])
        rows.append(row)
    cut = width is not None and not full_ids and not wide
    out = table(
        headers,
        rows,
        details,
        header,
        first_style="red",
        width=width if cut else None,
        strip_lines=True,
    )
    if out.plain:
        out.append("\n")
    # Each kind's why and fix once, in the order check finds the kinds (the summary
    # line's), not the rows'.
    explained: Dict[str, List[Tuple[str, Optional[str]]]] = {}
    for p in result.problems:
        command, prose = split_fix(p.fix)
        why = "; ".join(part for part in (p.why, prose) if part)
        # Written out as the table's cells are (a fix quotes a foreign rule's comment).
        entry = (cell_text(why), cell_text(command) if command else command)
        if entry not in explained.setdefault(str(p.kind), []):
            explained[str(p.kind)].append(entry)
    if explained:
        out.append("\n")
    for kind, entries in explained.items():
        # The kind's name once (SPEC §3); a why that differs (a reason per chain, a
        # command per family) follows it indented, each whole; one fix for them all is
        # said once, after them.
        one_fix = len({command for _, command in entries}) == 1
        for number, (why, command) in enumerate(entries):
            if number == 0:
                out.append(kind, style="bold")
                wrapped = why_lines(f"{kind}: {why}", width, "  ")
                out.append(wrapped[0][len(kind) :] + "\n")
            else:
                wrapped = why_lines(f"  {why}", width, "  ")
                out.append(wrapped[0] + "\n")
            for line in wrapped[1:]:
                out.append(line + "\n")
            if command and (not one_fix or number == len(entries) - 1):
                out.append("  fix: ", style="bold")
                out.append("\n".join(command_lines(command, width, len("  fix: "))) + "\n")
    out.rstrip()
    return out


# A command quoted in a why (`portmapctl gc --valid-attachments FILE ...` with no cache,
# the iptables commands that remove a copy by hand): on a terminal, lines of its own.
_QUOTED_COMMAND = re.compile(r"`((?:portmapctl|ip6?tables(?:-\w+)?|nft) [^`]*)`")


def why_lines(text: str, width: Optional[int], indent: str) -> List[str]:
    """`text` (a kind's why) word-wrapped at `width` after `indent`, except the commands
    quoted in it (in backticks), which go on lines of their own, under the text and two
    further in, wrapped as a fix is (command_lines): word-wrapped as prose, a command's
    first line pasted ran it without the rest. Piped (None), or when it fits: one line,
    as before."""
    if width is None or len(text) <= width or not _QUOTED_COMMAND.search(text):
        return wrap(text, width, indent)
    inner = len(indent) + 2
    lines: List[str] = []
    at = 0
    for match in _QUOTED_COMMAND.finditer(text):
        prose, at = text[at : match.start()], match.end()
        if prose.strip(" ;,"):  # (not the "; " between two commands)
            lines += (
                wrap(prose.rstrip(), width, indent) if not lines else _more(prose, width, indent)
            )
        # (Its own lines two further in again: where one command ends shows.)
        first, *rest = command_lines(match.group(1), width, inner + 2)
        lines += [" " * inner + first, *rest]
    if text[at:].strip(" ;,."):
        lines += _more(text[at:], width, indent)
    return lines


def _more(prose: str, width: Optional[int], indent: str) -> List[str]:
    """Prose between or after commands, on lines of its own at `indent`."""
    return wrap(indent + prose.strip().lstrip(";,").strip(), width, indent)


def command_lines(command: str, width: Optional[int], indent: int) -> List[str]:
    """A fix command, whole (SPEC §3: never cut), in lines that fit `width` after an
    `indent` (None: one line). It is wrapped only at the spaces a shell splits words at,
    each line but the last ending in ` \\`, so that a copy of the lines pasted into a
    shell is still the one command; a word longer than the line stays whole."""
    if width is None or indent + len(command) <= width:
        return [command]
    lines: List[str] = []
    line = ""
    for word in _shell_words(command):
        if line and indent + len(f"{line} {word} \\") > width:
            lines.append(line + " \\")
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    # The lines after the first start under the command's first word.
    return lines[:1] + [" " * indent + rest for rest in lines[1:]]


def _shell_words(command: str) -> List[str]:
    """`command` split at its spaces outside quotes and backslash escapes (where a shell
    splits it), each word spelled as given (shlex.split would unquote them)."""
    words: List[str] = []
    word = ""
    quote = ""
    escaped = False
    for char in command:
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == " ":
            if word:
                words.append(word)
            word = ""
            continue
        word += char
    return words + ([word] if word else [])


RULES_APART = "; "
"""Between the rules of one problem in the RULE column (JSON: one rule a line)."""


def rule_cell(rules: Sequence[str]) -> str:
    """The RULE cell: the rules at issue, whole; `-` for a problem about no rule."""
    return RULES_APART.join(rules) or "-"


def rule_text(rules: Sequence[str]) -> Optional[str]:
    """JSON `rule`: the rules at issue one a line (iptables-save lines; nft: the rule
    text), null for a problem about no rule."""
    return "\n".join(rules) or None


def check_summary(result: CheckResult, fixes_above: bool = False) -> str:
    """The check's one summary line: healthy; or the count per kind, with the command
    when one command fixes them all (`1094 stale -> portmapctl gc`). `fixes_above`:
    the problems' whys and fixes were printed above it, and it says so (not under -q,
    nor in JSON, where nothing is printed above it). After a repair that fixed
    something, it starts with what (under -q, the only record of it: a cron job's log
    must tell a repair from a night when nothing was wrong)."""
    return _repaired_part(result) + _state_part(result, fixes_above)


def _repaired_part(result: CheckResult) -> str:
    if not result.fixed:
        return ""
    containers = {p.container_id for p in result.fixed if p.container_id}
    of = f" of {count(len(containers), 'container')}" if containers else ""
    return f"repaired {count(len(result.fixed), 'problem')}{of}; "


def _state_part(result: CheckResult, fixes_above: bool) -> str:
    if result.healthy:
        return check_healthy_line(result)
    counts: Dict[str, int] = {}
    commands: Dict[Optional[str], None] = {}
    for p in result.problems:
        counts[str(p.kind)] = counts.get(str(p.kind), 0) + 1
        commands[split_fix(p.fix)[0]] = None
    kinds = ", ".join(f"{number} {kind}" for kind, number in counts.items())
    if len(commands) == 1 and None not in commands:
        return f"{kinds} -> {next(iter(commands))}"
    total = len(result.problems)
    return f"{count(total, 'problem')}: {kinds}" + (" (fixes above)" if fixes_above else "")


def _families_text(families: Iterable[int]) -> str:
    return " and ".join(f"IPv{f}" for f in families) or "no family"


def check_healthy_line(result: CheckResult) -> str:
    """The one reassuring line of a healthy check."""
    where = _families_text(result.families)
    if result.scope == "mapping":
        if result.chain is None and result.notes:  # (a config the plugin does nothing for)
            return f"healthy: {result.notes[0]}; the plugin expects no rule for it"
        if (result.chain or "").startswith("nft:"):  # (nftables: no chain of its own)
            return f"healthy: the nftables rules of {result.chain[4:]} are in place ({where})"
        return f"healthy: {result.chain} and its entry rules are in place ({where})"
    nothing = not result.mappings_checked and not result.chains_seen and not result.nft_seen
    if nothing and result.looked_at is not None:
        # (The other backend holds them: "no cached port mappings", or without a cache
        # "0 portmap chains look sound", would pass a node that holds them.)
        return f"healthy: no port mappings in {result.looked_at} ({where})"
    if not result.cache_present:
        seen = ([count(result.chains_seen, "portmap chain")] if result.chains_seen else []) + (
            [count(result.nft_seen, "nftables rule set")] if result.nft_seen else []
        )
        one = result.chains_seen + result.nft_seen == 1
        return (
            f"healthy: {' and '.join(seen) or count(0, 'portmap chain')}"
            f" {'looks' if one else 'look'} sound ({where});"
            f" no CNI cache to compare {'it' if one else 'them'} with"
        )
    if nothing:
        return f"healthy: no cached port mappings and no portmap chains ({where})"
    # What was compared: one chain per cached container and family, or under the
    # nftables backend that container's rules for the family.
    chains = result.mappings_checked - result.nft_checked
    compared = " and ".join(
        ([count(chains, "chain")] if chains else [])
        + ([count(result.nft_checked, "nftables rule set")] if result.nft_checked else [])
    ) or count(0, "chain")
    # The families go last: they are what was read, not where each chain is (one
    # IPv4-only container's chain is not "in place (IPv4 and IPv6)").
    if result.mappings_checked == 1:
        return (
            f"healthy: the {compared.split(' ', 1)[1]} of the cached container is in place,"
            " with its top-level chains and jumps; nothing stale, orphaned or shadowed in"
            f" {where}"
        )
    return (
        f"healthy: all {compared} of the cached containers are in place, with their"
        f" top-level chains and jumps; nothing stale, orphaned or shadowed in {where}"
    )


def check_fixed_lines(result: CheckResult) -> List[str]:
    """What a repair did, one line per problem it fixed, in the order of check's
    problem rows (sorted_problems: one container's lines together)."""
    return [
        f"repaired: IPv{p.family} {p.kind} {p.chain or ''}"
        + (
            f" ({name_text(p.network or '?')}/{name_text(short_id(p.container_id))})"
            if p.network or p.container_id
            else ""
        )
        for p in sorted_problems(result.fixed)
    ]
