"""Did-you-mean: the one rule for suggesting a known name in place of a mistyped one, used by every
message that names an unknown thing (spec keys and names, ops, nodes, initialisers, data sources,
CLI arguments)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

CUTOFF = 0.6  # difflib's similarity ratio a suggestion needs
MAX_NAME = 200  # no name is that long; difflib would spend seconds indexing one that is


def closest(name: object, options: Iterable[object]) -> str | None:
    """The known option most like name, or None when none is close enough."""
    text = str(name)
    if len(text) > MAX_NAME:
        return None
    near = difflib.get_close_matches(text, [str(o) for o in options], n=1, cutoff=CUTOFF)
    return near[0] if near else None


def did_you_mean(name: object, options: Iterable[object]) -> str | None:
    """``did you mean 'x'?`` for the closest option (a diagnostic's hint), or None."""
    near = closest(name, options)
    return f"did you mean {near!r}?" if near else None


def did_you_mean_suffix(name: object, options: Iterable[object]) -> str:
    """``; did you mean 'x'?`` to append to a message, or ''."""
    near = closest(name, options)
    return f"; did you mean {near!r}?" if near else ""
