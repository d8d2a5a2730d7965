"""The report's pictures of the metrics log (matplotlib, imported only when drawing):
``losses.png`` (per loss, training and evaluation on the same axes, weighted losses dashed),
``metrics.png`` (per metric, train and evaluations together), ``lr.png`` and ``grad_norm.png``
(per optimizer, when they change). :mod:`.panels` decides what goes where."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .canvas import (
    cut_early_transient,
    later_values,
    moving_average,
    new_figure,
    plottable,
    require_matplotlib,
    run_title,
    save_figures,
    use_log_scale,
)
from .panels import WEIGHTED, Panel, changing, is_weighted, loss_panels, metric_panels
from .quantities import EVAL_GROUPS, group_of, series
from .reading import Run
from .samples import draw_samples

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# An evaluation's colour, by the group of its row (a training curve takes C0, C3, C4, ...: one per phase).
_EVALUATION_COLOURS = {"eval": "C1", "val": "C2", "test": "C5", "train_split": "C6"}
_TRAIN_COLOURS = ("C0", "C3", "C4", "C7", "C8", "C9")
_MIN_WIDTH = 7.5  # inches


def figures(run: Run) -> list[tuple[str, Figure]]:
    """Every picture there is something to draw for, as (file name, figure), in the report's order:
    ``losses.png``, ``metrics.png``, ``lr.png``, ``grad_norm.png``, ``samples.png``."""
    require_matplotlib()
    drawn = [(filename, draw(run)) for filename, draw in _DRAWERS.items()]
    return [(filename, fig) for filename, fig in drawn if fig is not None]


def write_plots(run: Run, out_dir: str | Path) -> list[Path]:
    """Draw the pictures of :func:`figures` into ``out_dir``; return the paths written. A picture
    of these names that an earlier report left there and this one does not draw (an ``lr.png``
    from before a constant rate got none, one of a run since resumed) is removed, so the folder
    never mixes two reports. Raises :class:`PlotsUnavailable` when matplotlib is missing."""
    require_matplotlib()
    return save_figures(figures(run), out_dir, _DRAWERS)


def label_of(run: Run, name: str, weighted_siblings: bool = False) -> str:
    """The legend entry of a curve: its logged name and what it is."""
    group = group_of(name)
    if group in EVAL_GROUPS:
        split = run.info.get("eval_split") if group == "eval" else {"train_split": "train"}.get(str(group), group)
        chooses = "" if group == "eval" else ", chooses best.npz"
        if not isinstance(split, str):  # a gym source's episodes: no split
            return f"{name} (evaluation{chooses})"
        return f"{name} (evaluated on {split}{chooses})"
    if group == "loss":
        if is_weighted(name):
            return f"{name} (train, times the weight)"
        return f"{name} (train, raw)" if weighted_siblings else f"{name} (train)"
    return name  # train/NAME, rollout/NAME, lr/OPT: the prefix says what it is


def _panel_figure(panels: list[Panel], max_cols: int, width: float, height: float) -> tuple[Figure, list[Axes]]:
    """A figure with one axes per panel, at most ``max_cols`` a row, each ``width`` x ``height`` inches."""
    ncols = min(max_cols, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    # never narrower than the suptitle needs (one metric panel alone is narrow)
    fig = new_figure(max(width * ncols + 0.6, _MIN_WIDTH), height * nrows + 0.6)
    return fig, [fig.add_subplot(nrows, ncols, k + 1) for k in range(len(panels))]


Drawn = tuple[np.ndarray, np.ndarray]  # the steps and values of one curve


def _draw_train(ax: Axes, run: Run, name: str, colour: str, label: str) -> Drawn:
    steps, values = series(run, name)
    style = "--" if is_weighted(name) else "-"
    average = moving_average(values)
    if average is not None:
        ax.plot(steps, plottable(values), style, color=colour, alpha=0.25, linewidth=0.8, gid=f"{name} raw")
        ax.plot(steps, average, style, color=colour, linewidth=1.8, label=f"{label}, moving average", gid=name)
    else:
        marker = "." if values.size < 30 else None
        ax.plot(steps, plottable(values), style, color=colour, linewidth=1.6, marker=marker, label=label, gid=name)
    return steps, values


def _draw_evaluation(ax: Axes, run: Run, name: str, label: str) -> Drawn:
    steps, values = series(run, name)
    colour = _EVALUATION_COLOURS[str(group_of(name))]
    size = 5 if values.size < 60 else 3
    ax.plot(steps, plottable(values), "o-", color=colour, markersize=size, linewidth=1.0, label=label, gid=name)
    return steps, values


def _draw_panel(ax: Axes, run: Run, panel: Panel) -> list[Drawn]:
    """Training curves (one colour per phase; a weighted one dashed, in its raw one's colour) and
    evaluations (one colour per split) of one panel. Returns what was drawn (for the y axis)."""
    weighted = any(is_weighted(c) for c in panel.curves)
    colours: dict[str, str] = {}
    drawn = []
    for name in panel.curves:
        label = label_of(run, name, weighted)
        if group_of(name) in EVAL_GROUPS:
            drawn.append(_draw_evaluation(ax, run, name, label))
        else:
            phase = name.removesuffix(WEIGHTED)
            colour = colours.setdefault(phase, _TRAIN_COLOURS[len(colours) % len(_TRAIN_COLOURS)])
            drawn.append(_draw_train(ax, run, name, colour, label))
    return drawn


def _finish_axes(ax: Axes, title: str, ylabel: str, drawn: list[Drawn]) -> None:
    """Titles, labels, grid and legend; a log y axis for values spanning decades, else a y axis
    cut to the values after the first steps where those would squash the rest."""
    values = np.concatenate([v for _, v in drawn])
    ax.set_title(title, fontsize=11)
    if use_log_scale(values):
        ax.set_yscale("log")
        ylabel += " (log scale)"
    else:
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
        cut_early_transient(ax, values, np.concatenate([later_values(s, v) for s, v in drawn]))
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def _mark_the_end(ax: Axes, run: Run) -> None:
    status = run.info.get("status")
    if status in ("diverged", "early_stopped") and run.rows:
        what, colour = ("diverged", "red") if status == "diverged" else ("early stopped", "green")
        ax.axvline(run.rows[-1]["step"], color=colour, linestyle="--", linewidth=1, label=what)


def draw_losses(run: Run) -> Figure | None:
    """One panel per loss: each phase's training curve of it (raw solid, weighted dashed) and its
    evaluations on the same axes; None when no loss has a curve."""
    panels = loss_panels(run)
    if not panels:
        return None
    fig, axes = _panel_figure(panels, 2, 6.0, 3.8)
    what = "losses per phase"
    if any(group_of(c) in EVAL_GROUPS for p in panels for c in p.curves):
        what = "losses: training (lines) and evaluations (dots) on the same axes"
    if any(is_weighted(c) for p in panels for c in p.curves):
        what += "; dashed: times the backward's weight"
    fig.suptitle(run_title(run, what), fontsize=12)
    for ax, panel in zip(axes, panels):
        drawn = _draw_panel(ax, run, panel)
        _mark_the_end(ax, run)
        _finish_axes(ax, panel.title if "loss" in panel.title else f"loss {panel.title}", "loss", drawn)
    return fig


def draw_metrics(run: Run) -> Figure | None:
    """One panel per metric: ``train/NAME`` with its evaluations; None when no metric has a curve."""
    panels = metric_panels(run)
    if not panels:
        return None
    fig, axes = _panel_figure(panels, 3, 4.2, 3.2)
    what = "metrics"
    if any(group_of(c) in EVAL_GROUPS for p in panels for c in p.curves):
        what = "metrics: training (lines) and evaluations (dots) on the same axes"
    fig.suptitle(run_title(run, what), fontsize=12)
    for ax, panel in zip(axes, panels):
        _finish_axes(ax, panel.title, panel.title, _draw_panel(ax, run, panel))
    return fig


def _draw_per_optimizer(run: Run, group: str, title: str, ylabel: str) -> Figure | None:
    names = changing(run, group)
    if not names:
        return None
    fig = new_figure(8, 3.5)
    ax = fig.add_subplot()
    drawn = []
    for i, name in enumerate(names):
        label = name.partition("/")[2]
        drawn.append(_draw_train(ax, run, name, _TRAIN_COLOURS[i % len(_TRAIN_COLOURS)], label))
    _finish_axes(ax, run_title(run, title), ylabel, drawn)
    return fig


def draw_lr(run: Run) -> Figure | None:
    """The learning rate of each optimizer whose rate changes (a constant one is in the summary)."""
    return _draw_per_optimizer(run, "lr", "learning rate per optimizer", "learning rate")


def draw_grad_norms(run: Run) -> Figure | None:
    """The global 2-norm of each optimizer's gradients before its step (before any
    ``max_grad_norm`` clipping), for the optimizers whose norm changes."""
    return _draw_per_optimizer(run, "grad_norm", "gradient norm per optimizer (before clipping)", "gradient 2-norm")


# The pictures in the report's order, by file name.
_DRAWERS: dict[str, Callable[[Run], Figure | None]] = {
    "losses.png": draw_losses,
    "metrics.png": draw_metrics,
    "lr.png": draw_lr,
    "grad_norm.png": draw_grad_norms,
    "samples.png": draw_samples,
}
