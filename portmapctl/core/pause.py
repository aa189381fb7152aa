"""The cyclic garbage collector paused while a command builds its (acyclic) results."""

from __future__ import annotations

import contextlib
import gc
from typing import Iterator


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off while `list`, `check` or `flush-udp` builds its
    rows and
    problems: hundreds of thousands of small objects, none in a cycle, all kept to the
    end; each collection walked them again for nothing (3.5% of list's instructions at
    1,000 containers, 2.7% of check's)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
