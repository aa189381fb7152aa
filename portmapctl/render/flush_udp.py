"""`flush-udp`: one line per conntrack entry and why it goes, the summary line."""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Sequence, Tuple

from portmapctl.core.mapping import endpoint
from portmapctl.core.status import FlushReason
from portmapctl.core.text import port_runs
from portmapctl.render.cuts import address_floor, cut_address, cut_ip, ip_floor
from portmapctl.render.table import Cuttable, Piece, table

if TYPE_CHECKING:
    from rich.text import Text

    from portmapctl.ops.flush_udp import Doomed, FlushResult

FLUSH_WHY = {
    FlushReason.MAPPED: "mapped host port",
    FlushReason.GIVEN: "port given",
    FlushReason.OLD_DESTINATION: "old DNAT destination: the port now goes to {wanted}",
    FlushReason.NOT_DNATED: "never DNATed: bypasses the mapping to {wanted}",
    FlushReason.UNMAPPED: "DNATed, but nothing maps this port now",
}
FLUSH_STYLE = {
    FlushReason.OLD_DESTINATION: "red",
    FlushReason.NOT_DNATED: "red",
    FlushReason.UNMAPPED: "yellow",
}


# UNMAPPED where the port is mapped, on other host IPs (a mapping bound to 127.0.0.1):
# "nothing maps this port now" was false there.
UNMAPPED_HERE = "DNATed, but this port is not mapped on {address} now (only on {mapped_on})"


# What a stale chain (list: `stale`, a leaked one) means, and what ends it.
STALE_CHAIN = "its container is not in the CNI cache: portmapctl gc removes the chain"
# Kept flows that a stale chain sends to its container's address.
LEAKED = f"that a stale chain DNATs ({STALE_CHAIN})"
# Kept flows to a destination another tool's rule may take first (FlushResult.kept_taken).
TAKEN = "to a destination another tool's rule may take before the plugin's"
# Where the port goes now, where that is a stale chain's gone container (Doomed.stale).
BY_STALE = f"by a stale chain ({STALE_CHAIN})"


def flush_why(d: Doomed) -> str:
    if d.reason is FlushReason.UNMAPPED and d.mapped_on:
        return UNMAPPED_HERE.format(address=d.entry.dst, mapped_on=", ".join(d.mapped_on))
    live = ", ".join(w for w in d.wanted if w not in d.stale)
    wanted = live or "-"
    if d.stale:
        # ("the port now goes to" a gone container's address was no place to go.)
        stale = f"{', '.join(d.stale)} {BY_STALE}"
        wanted = f"{live}, and to {stale}" if live else stale
    return FLUSH_WHY[d.reason].format(wanted=wanted)


# What a terminal's width may cut (the widest first): the addresses in their middle,
# no further than they read (ip_floor, address_floor), a port whole. WHY, what says
# why an entry goes, is never cut.
FLUSH_CUTS = {
    "SOURCE": Cuttable(12, cut_ip, ip_floor),
    "DESTINATION": Cuttable(12, cut_ip, ip_floor),
    "REPLY FROM": Cuttable(12, cut_address, address_floor),
}
# Below that, left out in this order while WHY does not fit whole: where the replies
# come from (a stale reason's WHY names where the port goes now), then the node's own
# address (the host port stays in PORTS); -o wide and JSON show all. What still does
# not fit of WHY goes on below, under its column; only then is SOURCE cut below what
# it reads in.
FLUSH_DROPS = ("REPLY FROM", "DESTINATION")


def flush_table(result: FlushResult, width: Optional[int] = None, header: bool = True) -> Text:
    """One line per entry: family, source, destination, ports, where the replies come
    from (the DNAT destination), why it goes (coloured by the reason). `width` is the
    terminal's (None: nothing is cut): met by FLUSH_CUTS, then FLUSH_DROPS, WHY never
    cut; `header` False for --no-headers."""
    headers = ["FAM", "SOURCE", "DESTINATION", "PORTS", "REPLY FROM", "WHY"]
    rows = [
        [
            f"v{d.entry.family}",
            d.entry.src,
            d.entry.dst,
            f"{d.entry.sport}->{d.entry.dport}",
            endpoint(d.entry.reply_src, d.entry.reply_sport),
        ]
        for d in result.shown
    ]
    why = [[Piece(flush_why(d), FLUSH_STYLE.get(d.reason, ""))] for d in result.shown]
    return table(headers, rows, why, header, width=width, cuts=FLUSH_CUTS, drops=FLUSH_DROPS)


def _flush_ports_text(keys: Iterable[Tuple[int, int]]) -> str:
    """`host ports 7100-7140 (v4), 7200 (v4/v6)`: consecutive ports of the same families
    as one range (podman's `-p 7100-7140:7100-7140/udp` is a mapping per port: it read
    "41 host ports", and up to 8 one by one); more than 8 runs, their ports' count."""
    families: Dict[int, List[str]] = {}
    for family, port in sorted(keys):
        families.setdefault(port, []).append(f"v{family}")
    runs = port_runs(("/".join(fams), port) for port, fams in sorted(families.items()))
    if len(runs) > 8:
        return f"{len(families)} host ports"
    shown = ", ".join(f"{ports} ({fams})" for fams, ports in runs)
    return ("host port " if len(families) == 1 else "host ports ") + shown


def flush_summary(
    result: FlushResult, container: Optional[str] = None, asked: Sequence[int] = ()
) -> str:
    """The one line that says what happened (or would): the ports named are those of
    the entries deleted, or where none was, those looked at (with --stale-only, "none
    misrouted to" them: the entries it found there are kept, and counted). `asked`:
    the --port values, named when the container maps none of them."""
    if not result.ports:
        if container and asked:
            named = ", ".join(str(p) for p in asked)
            some = "no UDP host port" if len(asked) == 1 else "none of the UDP host ports"
            return f"a container {container}* maps {some} {named}: nothing to flush"
        whose = f" of a container {container}*" if container else ""
        return f"no mapped UDP host ports{whose}: nothing to flush"
    count = result.deleted
    noun = "entry" if count == 1 else "entries"
    verb = "would delete" if result.dry_run else "deleted"
    # Of the entries it deleted: not of those gone before it reached them.
    found = {(d.entry.family, d.entry.dport) for d in result.shown}
    if found:
        line = f"{verb} {count} UDP conntrack {noun} to {_flush_ports_text(found)}"
    else:
        # --stale-only looked at entries it keeps: "none to the ports" would deny them.
        which = "none misrouted" if result.stale_only else "none"
        line = f"{verb} 0 UDP conntrack entries: {which} to {_flush_ports_text(result.ports)}"
    if result.stale_only and result.kept:
        fine = result.kept - result.kept_stale - result.kept_taken
        kept = [f"{fine} that reach their container or the host"] if fine else []
        # (A leaked chain's container is gone, another tool's flow none of the plugin's:
        # "their container or the host" was not true of them.)
        for count, words in ((result.kept_stale, LEAKED), (result.kept_taken, TAKEN)):
            if count:
                kept.append(f"{count} {words}")
        line += "; kept " + ", ".join(kept)
    gone = len(result.doomed) - result.deleted
    if not result.dry_run and gone > 0:
        line += f"; {gone} had gone already"
    return line
