"""Where a command's output goes (SPEC §3 output contract): Output writes the result
to stdout (a table and its summary line, or JSON) and warnings, remarks and progress
to stderr, with colour and widths as the terminal (or NO_COLOR, FORCE_COLOR,
TTY_COMPATIBLE, COLUMNS) says; the progress display (a spinner, or a bar once counts
come in) shows on a terminal's stderr only, after ~1 s.

Apart from cli/_common.py (the options every command shares, which Common.out turns
into an Output) so that what is written, and how, reads in one place. No typer here,
and rich only when something is drawn: `add` and `list` import this on their fast
paths.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
from enum import Enum
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Iterator,
    List,
    NamedTuple,
    Optional,
    Protocol,
    Tuple,
)

from portmapctl.core.text import cell_text, message_text

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from portmapctl.cli._common import CacheInfo


class OutputChoice(str, Enum):
    table = "table"
    wide = "wide"
    json = "json"


def progress_after() -> float:
    """Seconds of work before progress shows (SPEC §3: progress for work over ~1 s;
    0 shows it at once: tests, demos)."""
    from portmapctl.host import settings

    return settings.PROGRESS_AFTER.value()


class ProgressCallback(Protocol):
    """What Output.progress yields: called with (done, total) as the work goes;
    `end()` when the work is over before the block is (see _Display.end)."""

    def __call__(self, done: int, total: int) -> None: ...

    def end(self) -> None: ...


class _Display:
    """The progress shown on stderr: a spinner while the amount of work is unknown, a
    bar with `N/M` once a count comes in. Started by a timer (short work shows
    nothing), refreshed by rich's own thread, erased when done. Called with
    `(done, total)`; `end()` erases it before its block ends (ProgressCallback)."""

    def __init__(self, console: Callable[[], Console], description: str) -> None:
        self._console = console
        self._description = description
        self._guard = threading.Lock()
        self._counts: Optional[Tuple[int, int]] = None
        self._shown: Optional[Any] = None  # the rich Progress on screen
        self._counted = False  # it shows counts (else: a spinner)
        self._over = False

    def update(self, done: int, total: int) -> None:
        with self._guard:
            self._counts = (done, total)
            if self._shown is None:
                return
            if not self._counted:  # the first count: from a spinner to a bar
                self._shown.stop()
                self._show()
            else:
                self._shown.update(self._shown.task_ids[0], completed=done, total=total)

    def start(self) -> None:
        with self._guard:
            if not self._over and self._shown is None:
                self._show()

    def stop(self) -> None:
        with self._guard:
            self._over = True
            if self._shown is not None:
                self._shown.stop()

    __call__ = update

    def end(self) -> None:
        """The work it shows is over, its block not yet: erased now, and its timer
        shows nothing after (gc --dry-run, which then waits for the lock: the
        waiting line alone, no bar spinning for work that is done)."""
        self.stop()

    def _show(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self._counted = self._counts is not None
        columns: List[Any] = [SpinnerColumn(), TextColumn("{task.description}")]
        if self._counted:  # 20 wide: the whole line fits 80 columns
            columns += [BarColumn(bar_width=20), MofNCompleteColumn()]
        columns.append(TimeElapsedColumn())
        console = self._console()
        # A line written to stderr while the bar shows (a warning, the lock's "waiting
        # for ... held by PID N") goes through rich's redirect and this console's
        # print: soft_wrap keeps it one line, as warn() writes it (its wrap is the
        # terminal's; a command it names pastes whole).
        console.soft_wrap = True
        shown = Progress(*columns, console=console, transient=True)
        done, total = self._counts if self._counts is not None else (0, None)
        shown.add_task(self._description, total=total, completed=done)
        shown.start()
        self._shown = shown


class WarningTally:
    """How many warnings one run has said: the metrics file's
    portmapctl_last_run_warnings. A timer's or cron job's stderr is read by nobody,
    and a warning there (a conntrack flush that failed, an unreadable cache entry) is
    otherwise a run that worked."""

    __slots__ = ("said",)

    def __init__(self) -> None:
        self.said = 0


class Output(NamedTuple):
    """Where results and messages go (SPEC §3 output contract): the result (table and
    summary line, or JSON; with -q the summary line alone) on stdout; warnings,
    remarks, progress and prompts on stderr."""

    mode: OutputChoice = OutputChoice.table
    no_color: bool = False
    quiet: bool = False
    verbose: bool = False
    no_headers: bool = False
    no_trunc: bool = False
    tally: Optional[WarningTally] = None  # the run's warnings, counted (Common.out)

    @property
    def json(self) -> bool:
        return self.mode == OutputChoice.json

    @property
    def wide(self) -> bool:
        return self.mode == OutputChoice.wide

    def plain(self, stream: Any) -> bool:
        """No colour: --no-color, a non-empty NO_COLOR (no-color.org), or not a terminal
        (TTY_COMPATIBLE=0 says it is none; a non-empty FORCE_COLOR asks for colour
        anyway)."""
        if self.no_color or os.environ.get("NO_COLOR", "") != "":
            return True
        if _force_color():
            return False
        return not _terminal(stream)

    def width(self, stream: Any = None) -> Optional[int]:
        """The terminal's width (COLUMNS wins, as for every tool), None off a terminal:
        piped tables keep whole lines."""
        stream = sys.stdout if stream is None else stream
        if not _isatty(stream):
            return None
        import shutil

        return max(shutil.get_terminal_size().columns, 40)

    def _console(self, stderr: bool = False) -> Console:
        from rich.console import Console

        stream = sys.stderr if stderr else sys.stdout
        plain = self.plain(stream)
        # Off a terminal, tables get room instead of being squeezed to 80 columns. On
        # one, the width the tables were fitted to: rich's own reading takes COLUMNS=0
        # as it is, and prints nothing at all at that width.
        width = self.width(stream) if _isatty(stream) else 250
        return Console(
            file=stream,
            no_color=plain,
            highlight=False,
            # Messages carry names and paths from the node: "[...]" or ":x:" in them is
            # text, not rich markup or an emoji code.
            markup=False,
            emoji=False,
            width=width,
            # Whether it is a terminal is ours to say: rich reads FORCE_COLOR (and
            # TTY_COMPATIBLE) for it too, an empty FORCE_COLOR as "not a terminal".
            force_terminal=True if not plain and _force_color() else _terminal(stream),
            color_system=None if plain else "auto",
        )

    def show(self, renderable: RenderableType, stderr: bool = False) -> None:
        """A table: on stdout it is the result (not with -q); on stderr a preview."""
        if self.quiet and not stderr:
            return
        stream = sys.stderr if stderr else sys.stdout
        if hasattr(renderable, "plain") and self.plain(stream):
            # Plain text off a terminal: no need for rich's line layout (fast for big
            # lists), nor for a Console (importing rich.console takes 13 ms).
            stream.write(renderable.plain + "\n")
            return
        console = self._console(stderr=stderr)
        # soft_wrap: long lines stay whole, as scripts and `less -S` expect.
        console.print(renderable, soft_wrap=True)

    def show_text(self, text: str) -> None:
        """Plain text that is part of the result (a transaction): stdout, not with -q."""
        if not self.quiet:
            sys.stdout.write(text)

    def blank(self) -> None:
        """The empty line between a table and its summary line (not with -q)."""
        if not self.quiet:
            sys.stdout.write("\n")

    def cache_note(self, cache: CacheInfo, told_by: str = "") -> List[str]:
        """Say once, on stderr, when no cache or an empty one was found (SPEC §3: every
        command): a wrong --cni-cache-dir must not turn stale into ok silently, nor
        make gc with --keep remove what the cache would have kept, nor add and check
        of one mapping miss the backend its cached config names. `told_by`: as for
        CacheInfo.note. Returns the warnings said (gc's JSON `warnings` holds every
        warning it said)."""
        said = [] if (note := cache.note(told_by)) is None else [note]
        # A runtime's cache below the one read (cri-dockerd's /var/lib/cni/cache): its
        # live pods were called stale, and gc removed their chains, without a word.
        from portmapctl.cni.entries import unread_caches

        said += [unread.warning(cache.dirs) for unread in unread_caches(cache.dirs)]
        for warning in said:
            self.warn(warning)
        return said

    def summary(self, line: str) -> None:
        """The result's one summary line: on stdout, -q included (it is all -q prints).
        On a terminal it is word-wrapped at the width (nothing wraps there, SPEC §3);
        piped it stays one line, as the scripts that read it expect. A command it ends
        in (`check`'s `... -> portmapctl gc ...`) goes on lines of its own, each but the
        last ending in ` \\`, as a fix is printed: a copy of them is still the command
        (cut at a space, its first line ran without the rest). A foreign rule's comment
        that command quotes is written out as the tables write it (cell_text); JSON's
        `summary` is left as it was."""
        line = cell_text(line)
        width = self.width()
        if width is not None and len(line) > width:
            from portmapctl.render.table import wrap

            head, arrow, command = line.partition(" -> ")
            if arrow and command.startswith("portmapctl "):
                from portmapctl.render.check import command_lines

                first, *rest = command_lines(command, width, 2)  # (rest indented)
                lines = [*wrap(head + " ->", width, ""), "  " + first, *rest]
            else:
                lines = wrap(line, width, "")
            line = "\n".join(lines)
        sys.stdout.write(line + "\n")

    def print_json(self, document: Any) -> None:
        text = json.dumps(document, indent=2)
        if "\\ud" in text:  # a surrogate, escaped (a cheap test; unicode_only looks closer)
            from portmapctl.render.json import unicode_only

            text = json.dumps(unicode_only(document), indent=2)
        sys.stdout.write(text + "\n")

    def message(self, text: str) -> None:
        """A remark for people, on stderr; silent with -q."""
        if not self.quiet:
            # A byte that is not UTF-8 as `\xNN`, as warn() and error lines write it.
            # Piped, one line, as warn() writes it: rich broke a remark longer than its
            # 250 columns in two (a log's grep missed it). On a terminal it is still
            # word-wrapped at the width, as the tables are fitted to it.
            if not _isatty(sys.stderr):
                self._console(stderr=True).print(message_text(text), soft_wrap=True)
                return
            # rich leaves the space it broke a line at on that line's end (`...9116c `
            # before a long network name went to the next line): printed without it.
            console = self._console(stderr=True)
            with console.capture() as wrapped:
                console.print(message_text(text))
            sys.stderr.write("".join(row.rstrip(" ") + "\n" for row in wrapped.get().splitlines()))

    def warn(self, text: str) -> None:
        # A path's byte that is not UTF-8 as `\xNN`, as error lines and JSON write it.
        # One line, on a terminal too (its own wrap is the terminal's): a warning that
        # names a command (`portmapctl list --iptables legacy`) must paste whole, and a
        # log's grep finds it whole.
        # A line break too (message_text keeps it, for messages of several lines): a
        # --cni-cache-dir holding one made a warning two lines, the second unprefixed.
        line = message_text(text).replace("\n", "\\n")
        sys.stderr.write(f"portmapctl: warning: {line}\n")
        if self.tally is not None:
            self.tally.said += 1

    @contextlib.contextmanager
    def progress(
        self, description: str, after: Optional[float] = None
    ) -> Iterator[Optional[ProgressCallback]]:
        """Progress on stderr for work that may be long, with a `(done, total)` callback.

        Yields None -- nothing shown, nothing for the library to call -- unless stderr
        is a terminal and neither -q nor JSON output was asked for. Shows only once the
        work has run `after` seconds (default progress_after()):
        a spinner, or a bar with `N/M` once the callback gave a count. Erased when
        done, so it never ends up in a log or a pipe, and stdout is never touched.

            with out.progress("deleting UDP conntrack entries") as progress:
                result = flush(node, ..., progress=progress)
        """
        if self.quiet or self.json or not _isatty(sys.stderr):
            yield None
            return
        display = _Display(lambda: self._console(stderr=True), description)
        timer = threading.Timer(progress_after() if after is None else after, display.start)
        timer.daemon = True
        timer.start()
        try:
            yield display
        finally:
            timer.cancel()
            display.stop()

    @contextlib.contextmanager
    def busy(self, description: str, after: Optional[float] = None) -> Iterator[None]:
        """A spinner on stderr while work of unknown length runs (see progress)."""
        with self.progress(description, after):
            yield


def _force_color() -> bool:
    return os.environ.get("FORCE_COLOR", "") not in ("", "0")


def _terminal(stream: Any) -> bool:
    """Whether `stream` is a terminal that takes escape sequences: a tty, unless
    TTY_COMPATIBLE=0 says otherwise (rich's variable, which it no longer reads itself
    once told whether the stream is a terminal: Output._console)."""
    return _isatty(stream) and os.environ.get("TTY_COMPATIBLE", "") != "0"


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced or closed streams (tests, pipes)
        return False
