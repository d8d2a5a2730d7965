"""What every picture of a report shares: matplotlib (the optional ``plot`` extra, imported only
when a figure is made), the figure canvas, the log-scale rule and the treatment of gaps."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import PlotsUnavailable

if TYPE_CHECKING:  # annotations only: matplotlib is imported lazily, where pictures are drawn
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PLOT_EXTRA_HINT = "pip install 'onlytorch[plot]'"
DPI = 110
_LOG_SPAN = 100.0  # a log y axis when all values are positive and span more than 2 decades
_EARLY = 0.1  # the first tenth of the steps: where a loss may start far above the rest of its curve


def require_matplotlib() -> None:
    """Raise :class:`PlotsUnavailable`, naming the extra, when matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401  (the package itself, so that a missing one fails here)
    except ImportError:
        raise PlotsUnavailable(
            f"no pictures: matplotlib is not installed (it is the optional plot extra: {PLOT_EXTRA_HINT})"
        ) from None


def new_figure(width: float, height: float) -> Figure:
    """A figure on the Agg canvas, without pyplot (no global backend state is touched)."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figures(
    drawn: Iterable[tuple[str, Figure]], out_dir: str | Path, names: Iterable[str], **savefig: Any
) -> list[Path]:
    """Save each drawn figure as ``out_dir/FILENAME`` (the folder made if missing) and remove the
    pictures among ``names`` that were not drawn this time (left by an earlier report), so that a
    folder never mixes two reports; returns the paths written, in drawing order. ``savefig``:
    more options for matplotlib's savefig (the resolution is DPI)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, fig in drawn:
        fig.savefig(out / filename, dpi=DPI, **savefig)
        written.append(out / filename)
    for filename in set(names) - {p.name for p in written}:
        (out / filename).unlink(missing_ok=True)
    return written


def use_log_scale(values: np.ndarray) -> bool:
    """True when all finite values are positive and span more than 2 decades."""
    v = values[np.isfinite(values)]
    return v.size > 0 and bool((v > 0).all()) and v.max() / v.min() > _LOG_SPAN


def plottable(values: np.ndarray) -> np.ndarray:
    """The values with infinities as NaN: gaps in a curve rather than lines off the axes."""
    return np.where(np.isfinite(values), values, np.nan)


# points: a longer (noisy) curve is drawn as a moving average over its faint raw values
SMOOTH_ABOVE = 50


def moving_average(values: np.ndarray) -> np.ndarray | None:
    """What a curve of more than SMOOTH_ABOVE points is drawn as: a trailing moving average over a
    50th of its points (at least 2), its non-finite values left out; None for a shorter curve,
    drawn as it is (the rule of the run report and the comparison alike)."""
    if values.size <= SMOOTH_ABOVE:
        return None
    return smoothed(plottable(values), max(values.size // 50, 2))


def smoothed(values: np.ndarray, window: int) -> np.ndarray:
    """A trailing moving average that ignores NaN (for noisy loss curves)."""
    ok = np.isfinite(values)
    sums = np.cumsum(np.where(ok, values, 0.0))
    counts = np.cumsum(ok)
    lo = np.maximum(np.arange(values.size) - window, -1)
    s = sums - np.where(lo >= 0, sums[np.maximum(lo, 0)], 0.0)
    c = counts - np.where(lo >= 0, counts[np.maximum(lo, 0)], 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(c > 0, s / np.maximum(c, 1), np.nan)


def later_values(steps: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The values after the first tenth of a curve's steps (where a loss that starts high has come down)."""
    if steps.size == 0:
        return values
    return values[steps >= steps[0] + _EARLY * (steps[-1] - steps[0])]


def cut_early_transient(ax: Axes, values: np.ndarray, later: np.ndarray) -> None:
    """Where the first steps' values (a loss starting high) would squash the rest of the curves
    (``values``: all drawn; ``later``: those of :func:`later_values`), cut the y axis to the later
    values, and say in the axes' title how far the earlier ones reach."""
    values, later = values[np.isfinite(values)], later[np.isfinite(later)]
    if later.size < 2 or values.size == 0:
        return
    lo, hi = float(later.min()), float(later.max())
    spread = hi - lo
    above, below = values.max() > hi + 2 * spread, values.min() < lo - 2 * spread
    if spread <= 0 or not (above or below):
        return
    ax.set_ylim(
        lo - 0.08 * spread if below else values.min() - 0.05 * spread,
        hi + 0.08 * spread if above else values.max() + 0.05 * spread,
    )
    reach = " and ".join(
        f"{what} {float(v):.4g}"
        for what, v, cut in (("up to", values.max(), above), ("down to", values.min(), below))
        if cut
    )
    ax.set_title(f"{ax.get_title()}\ny axis cut: the first steps reach {reach}", fontsize=10)


def run_title(run: Any, what: str) -> str:
    """A picture's title: the run's name, then what the picture shows."""
    return f"{run.info.get('name', run.path.name)}: {what}"
