"""Regular expressions compiled the first time they are used.

Compiling one is Python code (re._parser, re._compiler): 0.05-0.6 ms each. A module's
patterns were all compiled as it was imported, also those of checks the command never
makes (add made 12 it never used, list 19). A module-level `lazy(...)` is compiled on
its first use instead, and from then on costs what the compiled pattern does.
"""

from __future__ import annotations

import re
from typing import Any


class lazy:  # noqa: N801 - read as a function: `_X = lazy(r"...")`, as `re.compile(r"...")`
    """re.compile(pattern, flags), made when one of its attributes (match, search, sub,
    pattern...) is first read; each attribute read is then kept on this object, so a
    later read of it finds it at once (a compiled pattern makes a new bound method on
    every read)."""

    def __init__(self, pattern: str, flags: int = 0) -> None:
        self._source = (pattern, flags)

    def __getattr__(self, name: str) -> Any:
        # (Only for what this object does not hold yet: _source, then what is kept.
        # re.compile's own cache makes the pattern once for all the names.)
        if name == "_source":
            # One made without __init__ (copy.copy, pickle: they ask it for
            # __setstate__ before its state is in) has none: asked for here again,
            # it recursed until RecursionError.
            raise AttributeError(name)
        value = getattr(re.compile(*self._source), name)
        setattr(self, name, value)
        return value
