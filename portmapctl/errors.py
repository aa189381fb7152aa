"""Errors that carry their SPEC §4 exit code.

The CLI turns each into one line on stderr and its exit code; library callers can
catch the base class.
"""

from __future__ import annotations


class PortmapctlError(Exception):
    """Base class: a message meant for the user, and the exit code it maps to."""

    exit_code = 1
    # What had been done when it ended, set on the way out by whoever knows (gc: the
    # GcResult of chains that went in before a family failed), for the CLI to show
    # ahead of the one line: else `-o json` printed no document of what was removed.
    done: object = None


class BadInput(PortmapctlError):
    """Usage or bad input: nothing was changed (exit 2)."""

    exit_code = 2


class HostProblem(PortmapctlError):
    """The environment: not root, no usable iptables, no such namespace (exit 3).
    `maybe_applied`: it stopped a write's judging (a read after a tool that died or
    hung while writing): that transaction may have gone in (whole, never half)."""

    exit_code = 3

    def __init__(self, message: str = "", maybe_applied: bool = False) -> None:
        super().__init__(message)
        self.maybe_applied = maybe_applied


class ToolTimedOut(HostProblem):
    """An iptables tool killed at PORTMAPCTL_IPTABLES_TIMEOUT (exit 3). Not an
    ApplyFailed on purpose: no retry loop tries it again, since each try would wait as
    long (an unattended add waited the timeout four times, check --repair six): the
    first one ends the command. `maybe_applied`: it was writing, and its transaction
    may have gone in (whole: the kernel takes it in one commit). `stopped`: the line
    without its advice for that ("may have gone in ...: run again to see"), for a read
    after it that settles whether it did (gc's HungWentIn, NftHungWentIn)."""

    def __init__(self, message: str = "", maybe_applied: bool = False, stopped: str = "") -> None:
        super().__init__(message, maybe_applied)
        self.stopped = stopped or message

    def not_gone_in(self) -> ToolTimedOut:
        """This timeout once a read after it found what it removes still there: its line
        says so instead of "may have gone in ...: run again to see" (gc's families and
        its nftables write judge a hung write alike)."""
        line = f"{self.stopped}; {NOT_GONE_IN}"
        return ToolTimedOut(line, maybe_applied=self.maybe_applied, stopped=self.stopped)

    def made_again(self) -> ToolTimedOut:
        """This timeout once a read after it found what it removes made again meanwhile
        (gc's nftables write: rules with the bodies of those it deletes, not where it
        planned them): that read cannot tell whether it went in, and says so; it said
        NOT_GONE_IN, false where the write went in before the same container's ADD."""
        line = f"{self.stopped}; {MADE_AGAIN}"
        return ToolTimedOut(line, maybe_applied=self.maybe_applied, stopped=self.stopped)

    def there_again_or_not_gone(self) -> ToolTimedOut:
        """This timeout once a read after it found a chain it removes there, but not
        where a chain never removed would be (gc's iptables families: an iptables
        chain has no handle; the plugin's ADD of the same container after the write
        makes the same chain again, its entry rule appended): it may have gone in."""
        line = f"{self.stopped}; {THERE_AGAIN_OR_NOT_GONE}"
        return ToolTimedOut(line, maybe_applied=self.maybe_applied, stopped=self.stopped)


# What a writing tool stopped at its time limit adds to its line (ToolTimedOut.stopped).
MAY_HAVE_GONE_IN = "its transaction may have gone in (whole, never half): run again to see"
# What replaces it once a read after it found what it removes still there (gc).
NOT_GONE_IN = "read again, what it removes is still there: it did not go in"
# What replaces it once that read found what it removes made again meanwhile (gc's
# nftables write: ToolTimedOut.made_again).
MADE_AGAIN = (
    "read again, rules like those it deletes are there, made again meanwhile (the same"
    " container started again under its ID and ports, or a firewall reload): it may have"
    " gone in"
)

# What replaces it once that read found a chain it removes there, but nothing in the
# table says it was never removed (gc's iptables families: ToolTimedOut.there_again_or_not_gone).
THERE_AGAIN_OR_NOT_GONE = (
    "read again, a chain it removes is there, as it was or made again meanwhile (the same"
    " container added again under its ID): it may have gone in"
)


class ApplyFailed(PortmapctlError):
    """A transaction could not be applied, even after retries (exit 1).

    `maybe_applied`: the tool died without saying (killed), so the transaction may
    have gone in -- whole, never half. `busy`: another program held the xtables lock
    (a later try may get it). `final`: refused on a table that had not changed since
    it was read, so the same plan would meet the same refusal: Node.converge tries no
    more (check --repair's reads say so, ops/check/repair.py).
    """

    exit_code = 1

    def __init__(
        self,
        message: str = "",
        maybe_applied: bool = False,
        busy: bool = False,
        final: bool = False,
    ) -> None:
        super().__init__(message)
        self.maybe_applied = maybe_applied
        self.busy = busy
        self.final = final


def killed(tool: str, number: int) -> ApplyFailed:
    """The tool writing a transaction died of signal `number` (the OOM killer, a stop
    signal to its group): maybe after its commit, which the kernel makes whole or not
    at all; the caller's next read tells which."""
    return ApplyFailed(
        f"{tool} was killed by {signal_name(number)} (a transaction is applied whole or"
        " not at all)",
        maybe_applied=True,
    )


def signal_name(number: int) -> str:
    """`SIGKILL` for 9; `signal N` for a number Python does not name."""
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def found_in(where: str, err: ApplyFailed) -> str:
    """The warning for a write whose tool died without saying (`err`) when the read
    after it found everything it writes there: it went in (or the same was made
    meanwhile), and the command goes on as having written it."""
    return f"{where}: {err}; read again, everything it writes is there"


class Interrupted(BaseException):
    """Ctrl-C, as the CLI raises it. Not a KeyboardInterrupt: typer turns that into a
    silent exit 130. Not an Exception: no `except Exception` may swallow it.

    `after`: what had been changed already, set on the way out by whoever knows (gc:
    a removal that went in), for the CLI's one line ("aborted" alone reads as "nothing
    happened")."""

    after: str = ""


class Terminated(Interrupted):
    """SIGTERM (a DaemonSet pod deleted, a systemd timer stopped), raised by the CLI as
    Ctrl-C is, so that every `finally` runs (temporary files go) before the process
    ends: one line, then death by SIGTERM itself."""
