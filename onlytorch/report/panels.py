"""What the report's pictures show, decided without matplotlib: which logged quantities share a
panel, and what is left out of the pictures (and said in the summary instead).

- A loss gets one panel holding every phase's training curve of it (``PHASE/NAME``, raw, solid;
  ``PHASE/NAME:weighted``, the raw value times the backward's weight, dashed) and its evaluations
  (``eval/NAME``, ``val/NAME``, ...): train and evaluation on the same axes, the over-fitting view.
- A metric gets one panel holding ``train/NAME`` with its evaluations.
- A panel is drawn only where one of its quantities is a curve (two finite values or more); a
  quantity with a single value stays in the table.
- A learning rate or gradient norm that never changes is not drawn: the summary gives its value."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.sources import LIVE_LOG_PREFIX, counter_log_keys
from .quantities import EVAL_GROUPS, TABLE_GROUPS, group_of, names_in, series
from .reading import Run

WEIGHTED = ":weighted"
# The order evaluations are drawn and listed in: eval.split's first, then the selection split's.
_EVALUATION_ORDER = ("eval", "val", "test", "train_split")


@dataclass(frozen=True)
class Panel:
    """One set of axes: ``title`` (a loss's or metric's name) and the logged keys drawn on it."""

    title: str
    curves: tuple[str, ...]


def is_weighted(name: str) -> bool:
    """``PHASE/NAME:weighted``: a loss times its backward's weight, the value whose gradient is taken."""
    return name.endswith(WEIGHTED) and group_of(name) == "loss"


def loss_name(name: str) -> str:
    """The spec's name of the loss a training key logs: ``NAME`` of ``PHASE/NAME[:weighted]``."""
    return name.partition("/")[2].removesuffix(WEIGHTED)


def is_curve(run: Run, name: str) -> bool:
    """Two finite values or more: something a line can show."""
    return int(np.isfinite(series(run, name)[1]).sum()) >= 2


def constant_value(run: Run, name: str) -> float | None:
    """The one value a quantity always had (its finite values all equal), else None."""
    values = series(run, name)[1]
    finite = values[np.isfinite(values)]
    return float(finite[0]) if finite.size and bool((finite == finite[0]).all()) else None


def _evaluations_of(run: Run, name: str) -> list[str]:
    logged = set(names_in(run, *EVAL_GROUPS))
    return [f"{g}/{name}" for g in _EVALUATION_ORDER if f"{g}/{name}" in logged]


def _with_a_curve(run: Run, panels: list[Panel]) -> list[Panel]:
    return [p for p in panels if any(is_curve(run, c) for c in p.curves)]


def _all_loss_panels(run: Run) -> list[Panel]:
    by_loss: dict[str, list[str]] = {}
    for key in names_in(run, "loss"):
        by_loss.setdefault(loss_name(key), []).append(key)
    panels = []
    for name, keys in by_loss.items():
        panels.append(Panel(name, (*_paired(keys), *_evaluations_of(run, name))))
    return panels


def _paired(keys: list[str]) -> list[str]:
    """Each phase's raw curve followed by its weighted one (they share a colour, told apart by the dash)."""
    order = {k.removesuffix(WEIGHTED): i for i, k in reversed(list(enumerate(keys)))}
    return sorted(keys, key=lambda k: (order[k.removesuffix(WEIGHTED)], is_weighted(k)))


def loss_panels(run: Run) -> list[Panel]:
    """One panel per loss with a curve: its training curves (raw and weighted) and its evaluations."""
    return _with_a_curve(run, _all_loss_panels(run))


def metric_panels(run: Run) -> list[Panel]:
    """One panel per metric (and gym rollout statistic) with a curve: ``train/NAME`` and its
    evaluations; the evaluated losses are on the loss panels, a live source's counters only in
    the table."""
    on_loss_panels = {c for p in _all_loss_panels(run) for c in p.curves}
    counters = counter_log_keys()
    panels: dict[str, list[str]] = {}
    for name in names_in(run, LIVE_LOG_PREFIX, "train", *EVAL_GROUPS):
        if name not in counters and name not in on_loss_panels:
            panels.setdefault(name.rpartition("/")[2], []).append(name)
    ordered = [
        Panel(title, tuple(sorted(keys, key=lambda k: _draw_order(str(group_of(k)))))) for title, keys in panels.items()
    ]
    return _with_a_curve(run, ordered)


def _draw_order(group: str) -> int:
    return (*(g for g in (LIVE_LOG_PREFIX, "train")), *_EVALUATION_ORDER).index(group)


def changing(run: Run, group: str) -> list[str]:
    """The ``lr/OPT`` or ``grad_norm/OPT`` curves worth a picture: those whose value changes."""
    return [n for n in names_in(run, group) if is_curve(run, n) and constant_value(run, n) is None]


def undrawn(run: Run) -> list[str]:
    """The table's quantities that no picture shows: a single value each (or none finite)."""
    drawn = {c for p in (*loss_panels(run), *metric_panels(run)) for c in p.curves}
    counters = counter_log_keys()
    return [n for n in names_in(run, *TABLE_GROUPS) if n not in drawn and n not in counters]
