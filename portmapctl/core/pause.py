"""The cyclic garbage collector paused while a command builds its (acyclic) results."""

from __future__ import annotations

import contextlib
import gc
from typing import Iterator


@contextlib.contextmanager
def gc_paused(freeze: bool = False) -> Iterator[None]:
    """The cyclic garbage collector off while `list`, `check`, `flush-udp` or `gc` reads
    the tables and builds its rows, problems or plan: hundreds of thousands of small
    objects (a million at 10,000 containers), none in a cycle; each collection walked
    them again for nothing (3.5% of list's instructions at 1,000 containers, 2.7% of
    check's, 10-30% of gc's parse and plan at 5,000 stale of 10,000).

    `freeze`: what exists at the end is frozen (left out of later collections, still
    freed by reference counting), or the first young collection after it would walk all
    of it at once; gc uses it, whose plan outlives the pause. A caller that paused the
    collector already keeps control of it."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        gc.enable()
