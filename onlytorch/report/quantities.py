"""The logged quantities of a run: their groups (losses, train metrics, evaluations, ...), their
series over the steps, their direction (by the rule of onlytorch.monitor) and their final and
best values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeGuard

import numpy as np

from .. import monitor
from ..data.sources import LIVE_LOG_PREFIX
from .reading import NOT_QUANTITIES, Run

# Groups of evaluation rows: eval.split's, and those of the other split that chooses best.npz.
EVAL_GROUPS = ("val", "test", "train_split", "eval")
# The groups of the quantity table, in its order.
TABLE_GROUPS = ("loss", LIVE_LOG_PREFIX, "train", *EVAL_GROUPS)


@dataclass(frozen=True)
class Quantity:
    """One logged quantity: its final value and, where its direction is declared (a loss; a score
    onlytorch defines; the monitored metric), its best. Nothing is called best by its name."""

    name: str
    group: str  # "loss", "rollout", "train", "eval" or a selection split's group ("val", ...)
    final: float
    final_step: int
    best: float | None  # None when no value is finite or the direction is not declared
    best_step: int | None
    mode: str | None = None  # "min", "max", or None: no declared direction


def group_of(name: str) -> str | None:
    """``"loss"`` for ``<phase>/<loss>``, ``"train"``/``"eval"`` for metrics, ``"val"``, ``"test"``
    or ``"train_split"`` for the evaluations that choose best.npz on a split other than eval.split,
    ``"rollout"`` for a gym source's episode statistics, ``"lr"``, ``"grad_norm"``, or None for
    bookkeeping (step, kind, time)."""
    if name in NOT_QUANTITIES:
        return None
    prefix, sep, _ = name.partition("/")
    if not sep:
        return "train"
    return prefix if prefix in ("train", "lr", "grad_norm", LIVE_LOG_PREFIX, *EVAL_GROUPS) else "loss"


def direction_of(run: Run, name: str) -> str | None:
    """Whether lower ("min") or higher ("max") is better for a logged quantity, by the rule of
    onlytorch.monitor: a phase's loss is minimised; other quantities have the direction run.json
    records for them (losses, onlytorch's own scores, the monitored metric) or none."""
    if group_of(name) == "loss":
        return "min"
    base = name.partition("/")[2] or name
    recorded = run.info.get("directions")
    declared: dict[str, monitor.Mode] = {}
    if isinstance(recorded, dict):
        declared.update({str(k): v for k, v in recorded.items() if v in ("min", "max")})
    else:  # a run written before directions were recorded: onlytorch's own scores, and the monitor's
        declared.update(monitor.BUILTIN_MODES)
    for key in ("monitor", "best"):
        entry = run.info.get(key)
        if isinstance(entry, dict) and entry.get("mode") in ("min", "max") and isinstance(entry.get("metric"), str):
            declared.setdefault(entry["metric"].rpartition("/")[2], entry["mode"])
    return monitor.direction(base, (), declared)


def series(run: Run, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Steps and values of one quantity (non-finite values kept as they were logged)."""
    pairs = [(r["step"], float(r[name])) for r in run.rows if is_number(r.get(name))]
    steps = np.array([p[0] for p in pairs], dtype=np.int64)
    values = np.array([p[1] for p in pairs], dtype=np.float64)
    return steps, values


def is_number(value: Any) -> TypeGuard[int | float]:
    """A logged number (a bool is not one)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def names_in(run: Run, *groups: str) -> list[str]:
    """The logged quantities of the given groups, in order of group then first appearance."""
    seen: dict[str, None] = {}
    for row in run.rows:
        for key, value in row.items():
            if is_number(value) and group_of(key) in groups:
                seen.setdefault(key, None)
    return sorted(seen, key=lambda n: groups.index(group_of(n)))  # type: ignore[arg-type]


def quantities(run: Run) -> list[Quantity]:
    """Final and best value of every loss, train metric and eval metric."""
    out = []
    for name in names_in(run, *TABLE_GROUPS):
        steps, values = series(run, name)
        finite = np.isfinite(values)
        mode = direction_of(run, name)
        best_i: int | None = None
        if finite.any() and mode is not None:
            lower = mode == "min"
            masked = np.where(finite, values, np.inf if lower else -np.inf)
            best_i = int(masked.argmin() if lower else masked.argmax())
        out.append(
            Quantity(
                name=name,
                group=str(group_of(name)),
                final=float(values[-1]),
                final_step=int(steps[-1]),
                best=None if best_i is None else float(values[best_i]),
                best_step=None if best_i is None else int(steps[best_i]),
                mode=mode,
            )
        )
    return out
