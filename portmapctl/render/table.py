"""The one grid builder and column fitting: every table of the commands.

A rich Table measures every cell and takes about 1 s for 2,000 rows; a grid is a single
Text, its plain string and style spans put together at once (a few milliseconds for
10,000 rows, SPEC §6). rich is imported only when a table is drawn.
"""

from __future__ import annotations

import sys
from typing import (
    TYPE_CHECKING,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from portmapctl.core.ids import SHORT_ID, short_form
from portmapctl.core.patterns import lazy
from portmapctl.core.status import Status
from portmapctl.core.text import cell_text, count, name_text, stream_codec  # noqa: F401 - re-exported (render.count)
from portmapctl.render.cuts import cut_end

if TYPE_CHECKING:
    from rich.text import Text

    from portmapctl.iptables import inventory

# A style span (start, end, style): rich's Span is this NamedTuple, made when drawn.
SpanTuple = Tuple[int, int, str]

STATUS_STYLE = {
    Status.OK: "green",
    Status.STALE: "yellow",
    Status.SHADOWED: "red",
    Status.ORPHAN: "yellow",
    Status.INCOMPLETE: "red",
    Status.LEGACY: "magenta",
    Status.DEAD: "red",
    Status.ZOMBIE: "yellow",
    Status.CONTESTED: "red",
}


class Cuttable(NamedTuple):
    """How a column may be narrowed to meet a terminal's width: each cell by
    `cut(cell, room)`, to no fewer than `minimum` characters (at least its header's).
    `readable(cell)`, when given, is the fewest characters a cell still reads in (an
    address: render/cuts.py address_floor); the column goes below that only when
    every column a table may leave out is out and the row still does not fit
    (see _fitted)."""

    minimum: int
    cut: Callable[[str, int], str]
    readable: Optional[Callable[[str], int]] = None


Cuts = Mapping[str, Cuttable]
"""The columns (by header) that may be cut, and how."""


class Across(NamedTuple):
    """Texts that stand in some rows in place of the cells of `columns` (by header;
    those of them a table shows, next to each other), across their width: `texts` by
    row number. list's row of a chain with no mapping names its chain where a
    mapping's protocol and addresses are (cut at its end, `…`, only where the columns
    left on a narrow terminal are narrower)."""

    columns: Tuple[str, ...]
    texts: Mapping[int, str]


class Piece(NamedTuple):
    """A part of a row's last cell, with its style ("" for none); pieces are joined by ","."""

    text: str
    style: str = ""


def owner_order(network: Optional[str], container_id: Optional[str]) -> Tuple[bool, str, bool, str]:
    """The first of every table's order (list's and gc's): by network, then container,
    unnamed ones last."""
    return (network is None, network or "", container_id is None, container_id or "")


def short_id(container_id: Optional[str], full: bool = False) -> str:
    if not container_id:
        return "-"
    return container_id if full else short_form(container_id)


def owner_cell(
    container_id: Optional[str],
    chain: Optional[str],
    full: bool = False,
    chain_shown: bool = False,
    starts: Optional[Mapping[str, str]] = None,
) -> str:
    """A CONTAINER cell: the container's short ID (`full`: whole); for a per-container
    chain of no known container (an orphan no entry rule names), the chain's name,
    unless the table has a CHAIN column (`chain_shown`, -o wide): else nothing in the
    row would say which chain. check's and list's tables (gc's names it always). With
    `starts` (chain_starts of the node's such chains) and not `full`, the name's short
    form there."""
    if not container_id and not chain_shown and chain:
        from portmapctl.iptables.chains import is_plugin_chain  # (rows of no known container only)

        if is_plugin_chain(chain):
            return chain if full or starts is None else starts.get(chain, chain)
    return short_id(container_id, full)


def unknown_chains(
    mappings: Iterable[inventory.Mapping], chains: Iterable[inventory.ChainInfo]
) -> List[str]:
    """The chains of no known container among `mappings`' and `chains`: what
    chain_starts tells apart (the node's, for list and check to name each alike)."""
    return [m.chain for m in mappings if not m.container_id] + [
        c.name for c in chains if not c.container_id
    ]


def chain_starts(chains: Iterable[str]) -> Dict[str, str]:
    """How list and check name each per-container chain of `chains` under CONTAINER (rows of no
    known container): `CNI-DN-` and the first characters of its hash, as long as a
    short ID (`CNI-DN-e7055`), one more than it shares with any other chain of the
    table where two share that (`CNI-DN-0123456`, `CNI-DN-0123459`). The whole name,
    28 characters, left out CONTAINER ADDR, SNAT and NETWORK of every row at 80
    columns; `--container` takes a start that goes into the hash (inventory.owned_by)."""
    from portmapctl.iptables.chains import is_plugin_chain  # (rows of no known container only)

    names = sorted({c for c in chains if is_plugin_chain(c)})
    starts: Dict[str, str] = {}
    for i, name in enumerate(names):
        # Sorted: a name shares its longest start with a neighbour.
        shared = max((_shared(name, other) for other in names[max(i - 1, 0) : i + 2]
                      if other != name), default=0)  # fmt: skip
        starts[name] = name[: max(SHORT_ID, shared + 1)]
    return starts


def _shared(one: str, other: str) -> int:
    """How many first characters `one` and `other` have in common."""
    n = 0
    for a, b in zip(one, other):
        if a != b:
            break
        n += 1
    return n


def status_text(status: Iterable[str]) -> Text:
    from rich.text import Text

    text = Text()
    for i, word in enumerate(status):
        if i:
            text.append(",")
        text.append(word, style=STATUS_STYLE.get(word, ""))
    return text


def status_pieces(words: Iterable[str]) -> List[Piece]:
    """Status words as pieces, each coloured as its word."""
    return [Piece(word, STATUS_STYLE.get(word, "")) for word in words]


def without_columns(headers: List[str], rows: List[List[str]], names: Sequence[str]) -> None:
    """Take the columns `names` out of `headers` and every row, in place (the narrow
    form of a table whose -o wide shows them)."""
    for name in names:
        column = headers.index(name)
        del headers[column]
        for cells in rows:
            del cells[column]


def grid(headers: List[str], rows: List[List[str]], status: List[Iterable[str]],
         header: bool = True, status_header: str = "STATUS", width: Optional[int] = None,
         cuts: Optional[Cuts] = None, drops: Sequence[str] = (),
         across: Optional[Across] = None) -> Grid:  # fmt: skip
    """Columns padded to width, then the status words, each coloured (list, gc); a
    `width` (a terminal's) is met as table() meets it, the statuses never cut
    (wrapped under their column): they are what a row says. `across`: texts that
    stand in some rows in place of some cells (see Across)."""
    last = [status_pieces(w) for w in status]
    headers = headers + [status_header]
    fitting = _Fitting(width, cuts or {}, tuple(drops))
    return Grid(*_text_and_spans(headers, rows, last, header, "", False, fitting, across))


class Grid:
    """A finished table as its plain text and style spans: the Text that table() would
    return, made only when something draws it (`__rich__`). Piped output takes
    `plain` and never imports rich (rich.text and rich.control: a tenth of `list`'s
    start-up)."""

    def __init__(self, text: str, spans: List[SpanTuple]) -> None:
        self._text = text
        self._spans = spans
        # What Text.rstrip() leaves (the text has no control codes to strip).
        self.plain = text.rstrip()

    def __rich__(self) -> Text:
        from rich.text import Span, Text

        out = Text(self._text, spans=[Span(*span) for span in self._spans])
        out.rstrip()
        return out

    @property
    def spans(self) -> List[SpanTuple]:
        return self.__rich__().spans


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    last: Sequence[Sequence[Piece]],
    header: bool = True,
    *,
    first_style: str = "",
    width: Optional[int] = None,
    strip_lines: bool = False,
    cuts: Optional[Cuts] = None,
    drops: Sequence[str] = (),
) -> Text:
    """The grid: `rows` padded under `headers[:-1]`, then each row's `last` cell (its
    pieces joined by ",") unpadded, under `headers[-1]`; the header line in bold.

    `first_style` styles the first column (padding included); `width` (a terminal's)
    is met so no row wraps: the columns in `cuts` are narrowed first (the widest
    first), as far as their minimums, to leave the last cell whole; then the columns
    in `drops` are left out, in that order, as long as the last cell still does not
    fit. What still does not fit of a last cell is wrapped onto lines of its own
    under its column (never cut: it says what is wrong). `strip_lines` drops the spaces a row ends with. Rows may be shorter or
    longer than the headers (extra cells are dropped).
    """
    from rich.text import Span, Text

    fitting = _Fitting(width, cuts or {}, tuple(drops))
    plain, spans = _text_and_spans(headers, rows, last, header, first_style, strip_lines, fitting)
    out = Text(plain, spans=[Span(*span) for span in spans])
    out.rstrip()
    return out


class _Fitting(NamedTuple):
    """How a table meets a terminal's `width` (None: piped, nothing changes): see
    table()."""

    width: Optional[int]
    cuts: Cuts
    drops: Tuple[str, ...]


class Wrapped(NamedTuple):
    """A last cell wrapped onto lines, those after the first `indent` characters in:
    each line's pieces are joined as they are (the commas between the cell's pieces
    are pieces here)."""

    lines: List[List[Piece]]
    indent: int


# Where a wrapped last cell's lines after the first start when a word of it is longer
# than its column is wide (a chain's name, a path): near the left edge, the word whole.
HANG = 4


LastCell = Sequence[Piece]


def _widths(shown: Sequence[str], rows: Sequence[Sequence[str]]) -> List[int]:
    if all(len(row) == len(shown) for row in rows):
        columns = list(zip(*rows)) or [()] * len(shown)
        return [max([len(h), *map(len, column)]) for h, column in zip(shown, columns)]
    widths = [len(h) for h in shown]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row)]
    return widths


def _text_and_spans(headers: Sequence[str], rows: Sequence[Sequence[str]],
                    last: Sequence[LastCell], header: bool, first_style: str,
                    strip_lines: bool, fitting: _Fitting,
                    across: Optional[Across] = None) -> Tuple[str, List[SpanTuple]]:  # fmt: skip
    """table()'s text and spans (start, end, style), before rich: see table()."""
    rows, last = _escaped(headers, rows, last)
    if across is not None:
        across = across._replace(
            texts={n: cell_text(name_text(t)) for n, t in across.texts.items()}
        )
    widths = _widths(headers[:-1], rows)
    cells: Sequence[Union[LastCell, Wrapped]] = last
    if fitting.width is not None:
        headers, rows, widths = _fitted(headers, rows, widths, last, fitting)
        column = sum(widths) + 2 * len(widths)  # where the last cell starts
        room = fitting.width - column
        # Never less than the header's own room (a terminal narrower than the other
        # columns: the cell goes past the width, still whole).
        room = max(room, len(headers[-1]))
        indent, later = column, room
        if _longest_word(last, room) > room:
            indent, later = HANG, max(fitting.width - HANG, room)
        cells = [_wrapped(pieces, room, later, indent) for pieces in last]
    layout = _Layout(list(headers), widths, header, first_style, strip_lines, across)
    plain, spans = _grid_text(layout, rows, cells, _same)
    if _STRIPPED_FOUND.search(plain) is not None:
        # Text.append drops control codes from each piece: offsets must be counted
        # after that (a header's only: _escaped wrote out those of the cells).
        plain, spans = _grid_text(layout, rows, cells, strip_control_codes)
    return plain, spans


# The columns whose cells are names read from the node, each written as name_text
# writes it (list's, check's and gc's tables).
NAME_COLUMNS = frozenset({"NETWORK", "CONTAINER", "CHAIN"})


def _escaped(headers: Sequence[str], rows: Sequence[Sequence[str]], last: Sequence[LastCell],
             ) -> Tuple[Sequence[Sequence[str]], Sequence[LastCell]]:  # fmt: skip
    """The cells with what a terminal acts on or stdout cannot write written out
    (core/text.cell_text): a control character (ESC of a foreign rule's comment) as
    `\\x1b`, a byte that is not UTF-8 (a container ID from such a comment) as `\\xNN`,
    as in JSON and on stderr, `é` on an ASCII stdout as `\\u00e9`. A cell of a name
    (NAME_COLUMNS: a network, a container ID, a chain) is written as name_text writes
    it, its backslash doubled, so that it reads back to one name; any other (a
    problem quoting a rule, a rule, the status) is text. One scan of all the cells
    when none holds any (the usual case)."""
    everything = "".join(cell for row in rows for cell in row) + "".join(
        piece.text for pieces in last for piece in pieces
    )
    codec = stream_codec(sys.stdout)
    if "\\" not in everything and cell_text(everything, codec) == everything:
        return rows, last
    named = [h in NAME_COLUMNS for h in headers]
    rows = [
        [cell_text(name_text(cell) if name else cell, codec) for cell, name in zip(row, named)]
        + [cell_text(cell, codec) for cell in row[len(named) :]]
        for row in rows
    ]
    last = [[Piece(cell_text(p.text, codec), p.style) for p in pieces] for pieces in last]
    return rows, last


def _fitted(headers: Sequence[str], rows: Sequence[Sequence[str]], widths: List[int],
            last: Sequence[LastCell], fitting: _Fitting,
            ) -> Tuple[List[str], Sequence[Sequence[str]], List[int]]:  # fmt: skip
    """The headers, rows and widths that meet `fitting.width` with the last cells
    whole: the cuts first (on the columns kept, each no further than its cells read:
    Cuttable.readable), then the fewest of `fitting.drops` left out, in their order.
    When even all of them out is not enough, the last cells go on below (see
    table()); only when the columns then leave no room for the last column's header
    are they cut on, to their minimums, as little as that needs: a line wider than
    the terminal is wrapped by it, and no row reads through that."""
    assert fitting.width is not None
    whole = max([len(headers[-1]), *(len(",".join(p.text for p in cell)) for cell in last)])
    if sum(widths) + 2 * len(widths) + whole <= fitting.width:
        return list(headers), rows, widths  # (the usual case: no cell is looked at)
    dropped = [name for name in fitting.drops if name in headers[:-1]]
    readable = _readable_cuts(headers, rows, fitting.cuts)
    tries = [(leave, readable, whole) for leave in range(len(dropped) + 1)]
    tries.append((len(dropped), fitting.cuts, len(headers[-1])))
    for number, (leave, cuts, room) in enumerate(tries):
        gone = {headers.index(name) for name in dropped[:leave]}
        kept = [i for i in range(len(headers) - 1) if i not in gone]
        now_headers = [headers[i] for i in kept] + [headers[-1]]
        now_rows: Sequence[Sequence[str]] = rows
        if gone:
            now_rows = [[row[i] for i in kept if i < len(row)] for row in rows]
        now_widths = [widths[i] for i in kept]
        by_index = {n: cuts[name] for n, name in enumerate(now_headers[:-1]) if name in cuts}
        least = sum(min(w, by_index[n].minimum) if n in by_index else w
                    for n, w in enumerate(now_widths))  # fmt: skip
        if number < len(dropped) and least + 2 * len(now_widths) + room > fitting.width:
            continue  # (cutting every row to find that out took a third of a wide list's time)
        if by_index:
            cut_rows, now_widths = _narrowed(now_rows, now_widths, room, by_index, fitting.width)
            if cut_rows is not now_rows:
                # cuts.cut_ip keeps whole groups, often fewer characters than the room:
                # the column as wide as what it shows, the last cells' room the wider.
                shown = _widths(now_headers[:-1], cut_rows)
                now_widths = [min(w, need) for w, need in zip(now_widths, shown)]
            now_rows = cut_rows
        columns = sum(now_widths) + 2 * len(now_widths)
        if columns + room <= fitting.width:
            break
        if number == len(dropped) and columns + len(headers[-1]) <= fitting.width:
            break  # all out, every cell readable: the last cells go on below
    return now_headers, now_rows, now_widths


def _readable_cuts(headers: Sequence[str], rows: Sequence[Sequence[str]], cuts: Cuts) -> Cuts:
    """`cuts` with each minimum raised to what the column's cells read in (the most
    any of them needs, Cuttable.readable). Only a cell longer than the floor found so
    far is measured: most are short (`*:8080`), and a table may have 10,000 rows."""
    raised = dict(cuts)
    for name, cuttable in cuts.items():
        if cuttable.readable is None or name not in headers[:-1]:
            continue
        column = headers.index(name)
        floor = cuttable.minimum
        for row in rows:
            if column < len(row) and len(row[column]) > floor:
                floor = max(floor, cuttable.readable(row[column]))
        raised[name] = cuttable._replace(minimum=floor)
    return raised


# The control codes rich's Text drops from what it is given (rich.control
# STRIP_CONTROL_CODES: bell, backspace, vertical tab, form feed, carriage return), as
# a translate table here: importing rich.control costs more than a whole `list` of
# 100 containers spends on its table (tests/unit/test_render_grid.py holds the two
# to the same result).
_STRIPPED = dict.fromkeys((7, 8, 11, 12, 13))
# Whether a text holds one: a search, where translating a table of 10,000 rows with a
# `…` in it (not ASCII) to compare took 50-90 ms.
_STRIPPED_FOUND = lazy("[\a\b\v\f\r]")


def strip_control_codes(text: str) -> str:
    return text.translate(_STRIPPED)


class _Layout(NamedTuple):
    headers: List[str]
    widths: List[int]
    header: bool
    first_style: str
    strip_lines: bool
    across: Optional[Across] = None


def _padded(layout: _Layout, number: int, row: Sequence[str]) -> List[str]:
    """Row `number`'s cells, each padded to its column's width; a text `layout.across`
    has for it in one cell across the columns it names."""
    padded = [c.ljust(w) for c, w in zip(row, layout.widths)]
    text = layout.across.texts.get(number) if layout.across is not None else None
    if text is None:
        return padded
    assert layout.across is not None
    span = [i for i in range(len(padded)) if layout.headers[i] in layout.across.columns]
    if not span:
        return padded
    first, end = span[0], span[-1] + 1
    room = sum(map(len, padded[first:end])) + 2 * (end - first - 1)
    return padded[:first] + [cut_end(text, room).ljust(room)] + padded[end:]


def _same(text: str) -> str:
    return text


def _grid_text(
    layout: _Layout,
    rows: Sequence[Sequence[str]],
    last: Sequence[Union[LastCell, Wrapped]],
    clean: Callable[[str], str],
) -> Tuple[str, List[SpanTuple]]:
    """The grid's text and style spans (start, end, style), as Text.append piece by
    piece would make them.

    Put together here and handed to Text once: Text.append per piece took 0.1 s for
    10,000 rows.
    """
    widths = layout.widths
    head = "  ".join(h.ljust(w) for h, w in zip(layout.headers, widths))
    head = clean(head + f"  {layout.headers[-1]}").rstrip() + "\n"
    pieces = [head] if layout.header else []
    spans = [(0, len(head), "bold")] if layout.header else []
    offset = len(head) if layout.header else 0
    for number, (row, cell) in enumerate(zip(rows, last)):
        if isinstance(cell, Wrapped):
            offset = _wrapped_row(layout, number, row, cell, clean, pieces, spans, offset)
            continue
        padded = _padded(layout, number, row)
        if layout.first_style and padded:
            first = clean(padded[0])
            rest = clean("  " + "  ".join(padded[1:]) + "  ")
            if first:
                spans.append((offset, offset + len(first), layout.first_style))
            line = first + rest
        else:
            line = clean("  ".join(padded) + "  ")
        text = ",".join(piece.text for piece in cell)
        if layout.strip_lines and not text.strip():
            pieces.append(line.rstrip() + "\n")
            offset += len(line.rstrip()) + 1
            continue
        pieces.append(line)
        offset += len(line)
        for i, piece in enumerate(cell):
            if i:
                pieces.append(",")
                offset += 1
            piece_text = clean(piece.text)
            if layout.strip_lines and i == len(cell) - 1:
                piece_text = piece_text.rstrip()
            if piece.style and piece_text:
                spans.append((offset, offset + len(piece_text), piece.style))
            pieces.append(piece_text)
            offset += len(piece_text)
        pieces.append("\n")
        offset += 1
    return "".join(pieces), spans


def _wrapped_row(layout: _Layout, number: int, row: Sequence[str], cell: Wrapped,
                 clean: Callable[[str], str], out: List[str], spans: List[SpanTuple],
                 offset: int) -> int:  # fmt: skip
    """Row `number`, whose last cell is wrapped, appended to `out` and `spans` as
    _grid_text's rows are; returns the offset after it."""
    padded = _padded(layout, number, row)
    first = clean(padded[0]) if padded else ""
    start = first + clean("  " + "  ".join(padded[1:]) + "  ") if padded else ""
    for number, line in enumerate(cell.lines):
        text = start if number == 0 else " " * cell.indent
        if not line:  # (the cell starts on the next line: no spaces left at the end)
            text = text.rstrip()
        if number == 0 and layout.first_style and first:
            spans.append((offset, offset + min(len(first), len(text)), layout.first_style))
        out.append(text)
        offset += len(text)
        for piece in line:
            piece_text = clean(piece.text)
            if piece.style and piece_text:
                spans.append((offset, offset + len(piece_text), piece.style))
            out.append(piece_text)
            offset += len(piece_text)
        out.append("\n")
        offset += 1
    return offset


def _longest_word(last: Sequence[LastCell], room: int) -> int:
    """The longest word (between spaces and after commas) of the cells longer than
    `room` (0: none)."""
    longest = 0
    for pieces in last:
        joined = ",".join(p.text for p in pieces)
        if len(joined) > room:
            words = joined.replace(",", ", ").split()
            longest = max(longest, *map(len, words))
    return longest


def _wrapped(pieces: LastCell, room: int, later: int, indent: int) -> Union[LastCell, Wrapped]:
    """A last cell as it is when it fits `room`, else wrapped onto lines, the first of
    at most `room` characters, the others of `later`, `indent` in: after a comma or at
    a space (dropped there); a word longer than the line goes on over lines. Nothing
    of it is cut."""
    joined = ",".join(p.text for p in pieces)
    if len(joined) <= room:
        return pieces
    # The cell as runs (start, end, style) of `joined`; the commas between pieces are
    # unstyled runs of their own.
    runs: List[SpanTuple] = []
    at = 0
    for i, piece in enumerate(pieces):
        if i:
            runs.append((at, at + 1, ""))
            at += 1
        runs.append((at, at + len(piece.text), piece.style))
        at += len(piece.text)
    lines: List[List[Piece]] = []
    for start, end in _line_ranges(joined, room, later):
        line = [
            Piece(joined[max(a, start) : min(b, end)], style)
            for a, b, style in runs
            if a < end and b > start
        ]
        lines.append([piece for piece in line if piece.text])
    return Wrapped(lines, indent)


def _line_ranges(text: str, room: int, later: int) -> List[Tuple[int, int]]:
    """Where `text` is broken into lines, the first of at most `room` (>= 1)
    characters, the others of `later`: at the last space or comma that leaves a line
    within that, else (one word longer than that) there; the first line is left
    empty when its first word fits the others only. Spaces at a break are dropped."""
    ranges: List[Tuple[int, int]] = []
    start = 0
    while start < len(text):
        if ranges:
            room = later
        if len(text) - start <= room:
            ranges.append((start, len(text)))
            break
        end = start + room
        while end > start and text[end] != " " and text[end - 1] != ",":
            end -= 1
        if end == start and not ranges and later > room:
            ranges.append((start, start))  # the first word starts on the wider lines
            continue
        if end == start:
            end = start + room  # one word longer than the line: it goes on below
        line_end = end
        while line_end > start and text[line_end - 1] == " ":
            line_end -= 1
        ranges.append((start, line_end))
        start = end
        while start < len(text) and text[start] == " ":
            start += 1
    return ranges


def _narrowed(rows: Sequence[Sequence[str]], widths: List[int], whole: int,
              cuts: Mapping[int, Cuttable],
              width: int) -> Tuple[Sequence[Sequence[str]], List[int]]:  # fmt: skip
    """The rows and widths with the `cuts` columns narrowed, so that the rows fit
    `width` with their last cells (`whole` wide) whole (or the columns are at their
    minimums)."""
    room = width - 2 * len(widths) - whole
    narrowed = list(widths)
    for _ in range(sum(widths) - room):
        # The widest first: a long name gives way before a short address is cut.
        above = [i for i, c in cuts.items() if i < len(narrowed) and narrowed[i] > c.minimum]
        if not above:
            break
        narrowed[max(above, key=narrowed.__getitem__)] -= 1
    changed = [i for i, (old, new) in enumerate(zip(widths, narrowed)) if new < old]
    if not changed:
        return rows, widths
    cut_rows = []
    for row in rows:
        row = list(row)
        for i in changed:
            if i < len(row) and len(row[i]) > narrowed[i]:
                row[i] = cuts[i].cut(row[i], narrowed[i])
        cut_rows.append(row)
    return cut_rows, narrowed


def wrap(text: str, width: Optional[int], indent: str) -> List[str]:
    """`text` as lines of at most `width` (None: one line), continuation indented; words
    are never cut, but a word longer than a line (a cache entry's path: 93-96
    characters) is folded after a `/` or `-` in it, the last of them that fits, and
    only where it has none that fits, at the line's end: at 80 columns nothing wraps
    (SPEC §3). A fix command is not wrapped here (render/check.command_lines)."""
    if width is None:
        return [text]
    import textwrap  # (here: most runs wrap nothing)

    wrapper = textwrap.TextWrapper(
        width=width,
        subsequent_indent=indent,
        break_long_words=True,
        break_on_hyphens=False,
    )
    plain_split = wrapper._split
    room = width - len(indent)

    def folding_split(text: str) -> List[str]:
        # textwrap joins pieces with no space between them back on one line as they
        # fit; a word no longer than a line stays whole (`missing-chain` is never
        # split at its hyphen).
        chunks: List[str] = []
        for chunk in plain_split(text):
            if len(chunk) > room and not chunk.isspace():
                chunks += [piece for piece in _FOLDS.split(chunk) if piece]
            else:
                chunks.append(chunk)
        return chunks

    wrapper._split = folding_split  # type: ignore[method-assign]
    return wrapper.wrap(text) or [""]


# After each `/` and `-`: where a word longer than a line is folded.
_FOLDS = lazy("(?<=[/-])")
