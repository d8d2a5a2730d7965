"""The spec language's number rule: which values a number field accepts. pydantic would read true as
1, 3.0 and "3" as 3, and numpy wraps an integer past int64 to a negative one; all of them are slips.

The schema's models (``spec.schema.Strict``) and the data sources' parameter models
(``data.sources.Params``) both apply it; it imports nothing of the project but a leaf helper, so
either can import it."""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Union

from ..safe_files import short_repr

MAX_INT = 2**53  # integers a spec may hold (exact as floats, far from int64 wrap-around)


def exact_int_problem(v: Any) -> str | None:
    """Why v is not an integer a spec may hold, or None. pydantic would read true as 1, 3.0 as 3 and
    "3" as 3, and numpy wraps an integer past int64 to a negative one; all of them are slips."""
    if isinstance(v, bool):
        return f"must be an integer, not {str(v).lower()}"
    if isinstance(v, int):
        return None if -MAX_INT <= v <= MAX_INT else f"{v} is out of range: integers here are at most 2**53 in size"
    if isinstance(v, (float, str)):
        return f"must be an integer, not {type(v).__name__} {short_repr(v)}"
    return None  # other types: pydantic's own message


def float_problem(v: Any) -> str | None:
    """Why v is not a number a float field may hold, or None: pydantic would read true as 1.0 (``lr:
    true`` is a slip, not a learning rate of 1). A string that spells a number stays accepted: YAML 1.1
    reads ``1e-3`` (no dot) as a string, and that is how learning rates are written."""
    if isinstance(v, bool):
        return f"must be a number, not {str(v).lower()}"
    return None


def _int_slot(annotation: Any) -> str | None:
    """Which number checks a field gets: "int" (an int or optional int), "list" (a list of ints),
    "float" (a float or optional float), "floats" (a list of floats) or None."""
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if annotation is int:
        return "int"
    if annotation is float:
        return "float"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        members = {a for a in args if a is not type(None)}
        if members == {int}:
            return "int"
        if members == {float}:
            return "float"
    if origin is list and args and _int_slot(args[0]) in ("int", "float"):
        return "list" if _int_slot(args[0]) == "int" else "floats"
    return None


def number_problem(annotation: Any, v: Any) -> str | None:
    """Why v does not fit a field of this annotation as an exact number (see exact_int_problem and
    float_problem), or None; other annotations and types are left to pydantic."""
    slot = _int_slot(annotation)
    if v is None or slot is None:
        return None
    if slot in ("int", "float"):
        return (exact_int_problem if slot == "int" else float_problem)(v)
    if isinstance(v, list):
        check = exact_int_problem if slot == "list" else float_problem
        return next((f"item {i}: {p}" for i, x in enumerate(v) if (p := check(x))), None)
    return None
