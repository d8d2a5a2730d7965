"""The search space of a sweep as Optuna sees it: one ``Param`` per entry of the sweep file's
``space``, named by its dotted path (the Optuna parameter name), and the round trip from an
Optuna trial to ``--set``-style overrides.

A ``choice`` whose items are all scalars (str, int, float, bool, None) is an Optuna categorical
over the items themselves; one with a list or mapping among its items (betas pairs) is a
categorical over the items' flow-YAML texts, decoded back to the items, because Optuna's storages
hold scalars only. Optuna is never imported here: ``suggest`` receives a trial."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import yaml

Kind = Literal["loguniform", "uniform", "int", "choice"]
_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class Param:
    """One searched path. ``low``/``high`` (inclusive) and ``step`` for loguniform, uniform and int
    (ints for int), ``log`` for loguniform (always) and int; ``choices`` for choice."""

    path: str
    kind: Kind
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: list[Any] | None = field(default=None)

    @property
    def encoded(self) -> bool:
        """Whether Optuna holds this choice's items as their flow-YAML texts (some item is not a scalar)."""
        return self.kind == "choice" and not all(type(c) in _SCALARS for c in self.choices or [])

    def options(self) -> list[Any]:
        """The categorical's options as Optuna stores them (the items, or their texts when encoded)."""
        items = list(self.choices or [])
        return [flow(c) for c in items] if self.encoded else items

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def flow(value: Any) -> str:
    """value as one line of flow YAML, which the spec's YAML loader (``--set``) reads back to the same
    value: floats keep their exact repr, strings that would read as another type are quoted."""
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf, sort_keys=False, allow_unicode=True)
    if text.endswith("\n...\n"):  # a plain scalar: PyYAML closes the document explicitly
        text = text[: -len("\n...\n")]
    return text.strip()


def suggest(trial: Any, params: list[Param]) -> dict[str, Any]:
    """The trial's value of every param (Optuna's ``suggest_*``, named by path), decoded: path -> value."""
    stored: dict[str, Any] = {}
    for p in params:
        if p.kind == "loguniform":
            stored[p.path] = trial.suggest_float(p.path, p.low, p.high, log=True)
        elif p.kind == "uniform":
            stored[p.path] = trial.suggest_float(p.path, p.low, p.high, step=p.step)
        elif p.kind == "int":
            step = int(p.step) if p.step is not None else 1
            stored[p.path] = trial.suggest_int(p.path, int(_num(p.low)), int(_num(p.high)), step=step, log=p.log)
        else:
            stored[p.path] = trial.suggest_categorical(p.path, p.options())
    return decode(params, stored)


def decode(params: list[Param], optuna_params: dict[str, Any]) -> dict[str, Any]:
    """The values of a trial's stored params (``trial.params``): path -> value, in the order of params.
    KeyError names a param the trial does not hold; ValueError a stored choice that is not an option."""
    out: dict[str, Any] = {}
    for p in params:
        if p.path not in optuna_params:
            raise KeyError(f"the trial has no value for {p.path!r}")
        raw = optuna_params[p.path]
        if p.kind == "int":
            out[p.path] = int(raw)
        elif p.kind in ("loguniform", "uniform"):
            out[p.path] = float(raw)
        elif p.encoded:
            texts = p.options()
            if raw not in texts:
                raise ValueError(f"{p.path}: {raw!r} is none of the choices {', '.join(texts)}")
            out[p.path] = (p.choices or [])[texts.index(raw)]
        else:
            out[p.path] = raw
    return out


def as_overrides(values: dict[str, Any]) -> list[str]:
    """``path=<flow yaml>`` strings for ``onlytorch.fit(overrides=...)`` (``--set`` items)."""
    return [f"{path}={flow(value)}" for path, value in values.items()]


def grid_space(params: list[Param]) -> dict[str, list[Any]]:
    """The search space of Optuna's GridSampler: every value of each param, as Optuna stores it (int
    ranges and uniform ranges with a step enumerated; choices as their options). ValueError for a
    continuous param (the sweep file's check, E-SWEEP-GRID, refuses those first)."""
    out: dict[str, list[Any]] = {}
    for p in params:
        if p.kind == "choice":
            out[p.path] = p.options()
        elif p.kind == "int":
            out[p.path] = list(range(int(_num(p.low)), int(_num(p.high)) + 1, int(p.step or 1)))
        elif p.kind == "uniform" and p.step is not None:
            low, high, step = _num(p.low), _num(p.high), p.step
            n = grid_points(low, high, step)
            out[p.path] = [min(high, low + i * step) for i in range(n)]
        else:
            raise ValueError(f"{p.path}: a {p.kind} range without a step has no grid")
    return out


def grid_points(low: float, high: float, step: float) -> int:
    """How many values low, low + step, ... <= high holds (high - low a multiple of step, to rounding)."""
    return math.floor((high - low) / step + 1e-9) + 1


def grid_size(params: list[Param]) -> int:
    """How many points the grid of params has (the product of each param's values)."""
    return math.prod(len(v) for v in grid_space(params).values())


def _num(x: float | None) -> float:
    if x is None:  # a bounded kind always has both bounds (load_sweep builds them)
        raise ValueError("a range needs low and high")
    return x
