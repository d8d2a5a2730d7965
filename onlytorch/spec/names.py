"""The keys that define names: one name (``z: enc(x)``), or in ``nodes`` (the spec's and a subgraph
module's) several comma-separated names that unpack a value with several outputs, in the order the
value lists them (``mu, logvar: enc(x)``); ``_`` skips an output. One definition of what a key may
be, for the schema, the compiler and everything that lists the spec's nodes (the compile report,
``onlytorch graph``, the memory estimate's blame)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic_core import PydanticCustomError

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SKIP = "_"  # in an unpacking key: an output nobody names


def unpacking(key: Any) -> list[str] | None:
    """The names of an unpacking key, in order (``'mu, logvar'`` -> ``['mu', 'logvar']``, ``_``
    kept); None for a key without a comma."""
    if not isinstance(key, str) or "," not in key:
        return None
    return [part.strip() for part in key.split(",")]


def is_name(key: Any) -> bool:
    return isinstance(key, str) and NAME.match(key) is not None


def bad_parts(key: Any) -> list[str]:
    """The parts of an unpacking key that are not names (an empty one in ``'mu,'`` included)."""
    return [p for p in unpacking(key) or [] if not NAME.match(p)]


def defined(key: str) -> list[str]:
    """The names a key of ``nodes`` defines: the key itself, or the names it unpacks to but ``_``."""
    parts = unpacking(key)
    return [key] if parts is None else [p for p in parts if p != SKIP]


def node_names(table: Iterable[str]) -> list[str]:
    """Every name the keys of a ``nodes`` table define, in file order."""
    return [name for key in table for name in defined(key)]


def check_keys(table: dict[Any, Any], unpack: bool, only_unpacking: bool = False) -> dict[Any, Any]:
    """A table of names, validated: every key a name, or (``unpack``: a ``nodes`` table) several
    comma-separated names. ``only_unpacking`` checks only the keys with a comma (a subgraph's nodes,
    whose other keys were never checked). The bad keys ride along in the error, so that each
    diagnostic points at its own key (pydantic_errors._bad_names)."""

    def good(key: Any) -> bool:
        if unpack and unpacking(key) is not None:
            return not bad_parts(key)
        return only_unpacking or is_name(key)

    bad = [key for key in table if not good(key)]
    if bad:
        raise PydanticCustomError("bad_name", "{what} is not a valid name", {"what": repr(bad[0]), "keys": bad})
    return table
