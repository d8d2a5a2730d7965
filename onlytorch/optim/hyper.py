"""Hyper-parameter declarations of optimizers and schedules.

A class lists its hyper-parameters once, as a tuple of ``Hyper`` entries (name, default,
description, and a ``Rule``: the value's kind and range). Everything else is read from that
table: the constructor's signature and argument binding, the validation of a dict of values
(``check_values``, raising GraphError with the engine's messages), the kinds ``state_dict``
stores, the spec schema's fields with their JSON-Schema ranges and the docs' tables."""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from ..errors import GraphError

REQUIRED: Any = inspect.Parameter.empty


def is_number(v: Any) -> bool:
    """A real number that is not a bool."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def check_lr(owner: str, lr: Any) -> float:
    """A learning rate: a finite number >= 0 (as a float); GraphError otherwise."""
    if not is_number(lr) or not (0.0 <= lr < math.inf):
        raise GraphError(f"{owner}: invalid learning rate lr={lr!r} (must be a finite number >= 0)")
    return float(lr)


# ---------------------------------------------------------------------------- rules


class Rule:
    """What values a hyper-parameter takes: ``kind`` (how the value is stored: "float", "bool",
    "pair", "optional float" or "int"), ``check`` (validate and normalise one value), ``text``
    (the range in words, for the docs) and ``json`` (the range as JSON-Schema keywords)."""

    kind: ClassVar[str] = "float"

    def check(self, owner: str, key: str, v: Any) -> Any:
        raise NotImplementedError

    def text(self) -> str:
        return ""

    def json(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class LearningRate(Rule):
    """A finite number >= 0 (the learning rate's own message)."""

    def check(self, owner: str, key: str, v: Any) -> float:
        return check_lr(owner, v)

    def text(self) -> str:
        return ">= 0"

    def json(self) -> dict[str, Any]:
        return {"minimum": 0}


@dataclass(frozen=True)
class NonNegative(Rule):
    """A finite number >= 0; ``what`` names it in the message (default "<key> value")."""

    what: str | None = None

    def check(self, owner: str, key: str, v: Any) -> float:
        if not is_number(v) or not (0.0 <= v < math.inf):
            what = self.what or f"{key} value"
            raise GraphError(f"{owner}: invalid {what} {key}={v!r} (must be a finite number >= 0)")
        return float(v)

    def text(self) -> str:
        return ">= 0"

    def json(self) -> dict[str, Any]:
        return {"minimum": 0}


@dataclass(frozen=True)
class Finite(Rule):
    """Any finite number."""

    def check(self, owner: str, key: str, v: Any) -> float:
        if not is_number(v) or not math.isfinite(v):
            raise GraphError(f"{owner}: invalid {key}={v!r} (must be a finite number)")
        return float(v)

    def text(self) -> str:
        return "finite"


@dataclass(frozen=True)
class PositiveOrNone(Rule):
    """None (off) or a finite number > 0."""

    kind: ClassVar[str] = "optional float"

    def check(self, owner: str, key: str, v: Any) -> float | None:
        if v is None:
            return None
        if not is_number(v) or not math.isfinite(v) or v <= 0:
            raise GraphError(f"{owner}: invalid {key}={v!r} (must be None or a finite number > 0)")
        return float(v)

    def text(self) -> str:
        return "> 0, or null for none"

    def json(self) -> dict[str, Any]:
        return {"exclusiveMinimum": 0}


@dataclass(frozen=True)
class Flag(Rule):
    """True or False."""

    kind: ClassVar[str] = "bool"

    def check(self, owner: str, key: str, v: Any) -> bool:
        if not isinstance(v, (bool, np.bool_)):
            raise GraphError(f"{owner}: {key} must be True or False, got {v!r}")
        return bool(v)


@dataclass(frozen=True)
class UnitPair(Rule):
    """Two numbers, each in [0, 1) (Adam's betas)."""

    kind: ClassVar[str] = "pair"
    names: str = "(beta1, beta2)"
    what: str = "beta parameter"

    def check(self, owner: str, key: str, v: Any) -> tuple[float, float]:
        if isinstance(v, np.ndarray):
            v = tuple(v.tolist())
        if not isinstance(v, (tuple, list)) or len(v) != 2:
            raise GraphError(f"{owner}: {key} must be a pair {self.names}, got {v!r}")
        for i, b in enumerate(v):
            if not is_number(b) or not (0.0 <= b < 1.0):
                raise GraphError(f"{owner}: invalid {self.what} at index {i}: {key}[{i}]={b!r} (must be in [0, 1))")
        return (float(v[0]), float(v[1]))

    def text(self) -> str:
        return "two numbers, each in [0, 1)"

    def json(self) -> dict[str, Any]:
        return {"minItems": 2, "maxItems": 2, "items": {"type": "number", "minimum": 0, "exclusiveMaximum": 1}}


@dataclass(frozen=True)
class Count(Rule):
    """An integer >= low."""

    kind: ClassVar[str] = "int"
    low: int = 1

    def check(self, owner: str, key: str, v: Any) -> int:
        if not isinstance(v, (int, np.integer)) or isinstance(v, (bool, np.bool_)) or v < self.low:
            raise GraphError(f"{owner}: {key} must be an integer >= {self.low}, got {v!r}")
        return int(v)

    def text(self) -> str:
        return f">= {self.low}"

    def json(self) -> dict[str, Any]:
        return {"minimum": self.low}


@dataclass(frozen=True)
class Real(Rule):
    """A finite number in [low, high] (or (low, high] with ``low_open``)."""

    low: float = 0.0
    high: float = math.inf
    low_open: bool = False

    def check(self, owner: str, key: str, v: Any) -> float:
        low, high = self.low, self.high
        ok = is_number(v) and (low < v if self.low_open else low <= v) and v <= high and math.isfinite(v)
        if not ok:
            raise GraphError(f"{owner}: {key} must be a finite number {self._bound()}, got {v!r}")
        return float(v)

    def _bound(self) -> str:
        low, high = self.low, self.high
        if self.low_open:
            return f"in ({low}, {high}]"
        return f"in [{low}, {high}]" if high < math.inf else f">= {low}"

    def text(self) -> str:
        low, high = f"{self.low:g}", f"{self.high:g}"
        if self.low_open:
            return f"in ({low}, {high}]"
        return f"in [{low}, {high}]" if self.high < math.inf else f">= {low}"

    def json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"exclusiveMinimum" if self.low_open else "minimum": self.low}
        if self.high < math.inf:
            out["maximum"] = self.high
        return out


# ---------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Hyper:
    """One hyper-parameter: its name, default (``REQUIRED`` for none), description and rule.

    ``keyword_only`` places it after the positional ones in the constructor. ``fixed`` (a reason)
    makes it no argument at all: it always holds its default, which is still stored in the state
    and checked when a state is loaded (AdamW's ``decoupled_weight_decay``)."""

    name: str
    default: Any
    doc: str
    rule: Rule
    keyword_only: bool = False
    fixed: str | None = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def description(self) -> str:
        """The description with the range, as the schema and the docs show it."""
        text = self.rule.text()
        return f"{self.doc}; {text}" if text else self.doc


def changed(table: Iterable[Hyper], name: str, **changes: Any) -> tuple[Hyper, ...]:
    """The table with the entry called name changed (a subclass's other default, say)."""
    out = tuple(replace(h, **changes) if h.name == name else h for h in table)
    if all(h.name != name for h in out):
        raise ValueError(f"no hyper-parameter {name!r} in the table")
    return out


def arguments(table: Iterable[Hyper]) -> list[Hyper]:
    """The entries that are constructor arguments (not fixed), positional ones first."""
    free = [h for h in table if h.fixed is None]
    return [h for h in free if not h.keyword_only] + [h for h in free if h.keyword_only]


def signature(table: Iterable[Hyper], leading: Iterable[str]) -> inspect.Signature:
    """The constructor's signature: the leading parameters (graph, params, ...), then the table."""
    params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in leading]
    for h in arguments(table):
        kind = inspect.Parameter.KEYWORD_ONLY if h.keyword_only else inspect.Parameter.POSITIONAL_OR_KEYWORD
        params.append(inspect.Parameter(h.name, kind, default=h.default))
    return inspect.Signature(params)


def declared_init(cls: type, leading: tuple[str, ...]) -> None:
    """Give cls (unless it writes its own) an ``__init__`` whose signature is its table's, and the
    class that signature too, so that help() and inspect show the real arguments."""
    table = cls.hypers  # type: ignore[attr-defined]
    if "__init__" not in cls.__dict__:
        base_init = cls.__mro__[1].__init__  # type: ignore[misc]

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            base_init(self, *args, **kwargs)

        __init__.__qualname__ = f"{cls.__qualname__}.__init__"
        __init__.__signature__ = signature(table, ("self", *leading))  # type: ignore[attr-defined]
        cls.__init__ = __init__  # type: ignore[misc]
    cls.__signature__ = signature(table, leading)  # type: ignore[attr-defined]


def bind(owner: str, table: Iterable[Hyper], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments as {name: value} (defaults filled in); TypeError as a call would give."""
    sig = signature(table, ())
    try:
        bound = sig.bind(*args, **kwargs)
    except TypeError as e:
        raise TypeError(f"{owner}() {e}") from None
    bound.apply_defaults()
    return dict(bound.arguments)


def check_values(owner: str, table: Iterable[Hyper], values: Mapping[str, Any]) -> dict[str, Any]:
    """Validate values against the table: the normalised values of every entry (a missing one takes
    its default), in table order; GraphError naming the first value at fault.

    Fixed entries are checked first, then the learning rate, clipping and flags (the rules every
    optimizer shares), then the others in table order."""
    entries = tuple(table)
    unknown = [k for k in values if all(h.name != k for h in entries)]
    if unknown:
        raise GraphError(f"{owner}: unknown hyper-parameter {unknown[0]!r}")
    out: dict[str, Any] = {}
    for h in entries:
        if h.name in values:
            out[h.name] = values[h.name]
        elif h.required:
            raise GraphError(f"{owner}: {h.name} is required")
        else:
            out[h.name] = h.default
    for h in entries:
        if h.fixed is not None and not _same(out[h.name], h.default):
            raise GraphError(f"{owner}: {h.name} is always {h.default!r} ({h.fixed})")
    for h in sorted(entries, key=_check_rank):
        out[h.name] = h.rule.check(owner, h.name, out[h.name])
    return out


def _check_rank(h: Hyper) -> int:
    shared = (LearningRate, PositiveOrNone, Flag)
    return next((i for i, rule in enumerate(shared) if isinstance(h.rule, rule)), len(shared))


def _same(v: Any, default: Any) -> bool:
    return v is default or (type(v) is type(default) and v == default)


def kinds(table: Iterable[Hyper]) -> dict[str, str]:
    """name -> stored kind, for state_dict and load_state_dict."""
    return {h.name: h.rule.kind for h in table}
