"""core/patterns.lazy: a module's regular expression compiled on its first use."""

from __future__ import annotations

import re

from portmapctl.core.patterns import lazy


def test_a_lazy_pattern_answers_as_the_compiled_one() -> None:
    source, flags = r'"([^"\\]*(?:\\.[^"\\]*)*)"', re.DOTALL
    made, compiled = lazy(source, flags), re.compile(source, flags)
    text = 'a "b\\"c" d "e\nf"'
    assert made.split(text) == compiled.split(text)
    assert made.search(text).group(1) == compiled.search(text).group(1)
    assert made.sub("_", text) == compiled.sub("_", text)
    assert made.fullmatch("x") is None
    assert (made.pattern, made.flags, made.groups) == (source, compiled.flags, 1)


def test_a_lazy_pattern_is_compiled_on_first_use_then_kept() -> None:
    made = lazy(r"[0-9]+\Z")
    assert "match" not in vars(made)  # nothing compiled as the module is imported
    assert made.match("42") is not None
    assert vars(made)["match"].__self__ is re.compile(r"[0-9]+\Z")  # kept: read once


def test_a_lazy_pattern_copied_or_pickled_answers_as_the_compiled_one() -> None:
    # copy.copy and pickle make the object without __init__ and ask it for
    # __setstate__: its missing _source was looked up through __getattr__ again, a
    # RecursionError (re.compile's patterns copy and pickle).
    import copy
    import pickle

    for used in (False, True):
        made = lazy(r"[0-9]+\Z")
        if used:
            assert made.match("1") is not None
        for again in (copy.copy(made), pickle.loads(pickle.dumps(made))):
            assert again.match("42") is not None
            assert again.match("x") is None
            assert again.pattern == r"[0-9]+\Z"
