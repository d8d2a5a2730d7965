"""What a training run did: a terminal summary, PNG curves and one self-contained HTML page.

A run directory (written by ``onlytorch train``) holds ``run.json`` (the run's facts),
``metrics.jsonl`` (one JSON row per logged step: ``{"step", "kind": "train"|"eval", ...}``; an
evaluation on eval.split logs ``eval/<name>``, one on another split that chooses ``best.npz``
``val/<name>``, ``test/<name>`` or ``train_split/<name>``),
``spec.yaml`` (the resolved spec), ``checkpoints/*.npz`` and, for generators, ``samples.npz``
(2-D points drawn over the data; images drawn as a grid).
:func:`read_run` reads it all (tolerating a run still writing or one that crashed),
:func:`summary_table` renders the terminal summary, :func:`write_plots` draws the pictures
(matplotlib, the optional ``plot`` extra, imported only there) and :func:`write_html` puts
everything into one HTML file with the pictures embedded.

The modules: :mod:`.reading` (the run directory), :mod:`.quantities` (groups, series, final and
best values), :mod:`.panels` (what shares a picture's axes, what is left out), :mod:`.summary`
(facts and the terminal table), :mod:`.canvas` (matplotlib, lazily), :mod:`.curves` (the curves'
pictures), :mod:`.samples` (a generator's samples), :mod:`.page` (the HTML page)."""

from __future__ import annotations

from . import canvas
from .canvas import DPI, PLOT_EXTRA_HINT, new_figure, save_figures, use_log_scale
from .curves import draw_grad_norms, draw_losses, draw_lr, draw_metrics, figures, label_of, write_plots
from .errors import NotARunDir, PlotsUnavailable, ReportError
from .page import escape, html_facts, html_notes, html_pictures, write_html, write_page
from .panels import (
    WEIGHTED,
    Panel,
    constant_value,
    is_curve,
    is_weighted,
    loss_name,
    loss_panels,
    metric_panels,
    undrawn,
)
from .quantities import EVAL_GROUPS, Quantity, direction_of, group_of, names_in, quantities, series
from .reading import Run, read_run
from .samples import draw_samples, read_samples
from .summary import duration, facts, num, quantity_rows, summary_table

# Bound here rather than imported by name: no import line of this module mentions matplotlib, which
# it never imports (tests read its import lines); canvas imports it only when a figure is drawn.
require_matplotlib = canvas.require_matplotlib

# The names these had while they were private (tests of conditional samples still use them).
_read_samples = read_samples
_draw_samples = draw_samples

__all__ = [
    "DPI",
    "EVAL_GROUPS",
    "PLOT_EXTRA_HINT",
    "WEIGHTED",
    "NotARunDir",
    "Panel",
    "PlotsUnavailable",
    "Quantity",
    "ReportError",
    "Run",
    "constant_value",
    "direction_of",
    "draw_grad_norms",
    "draw_losses",
    "draw_lr",
    "draw_metrics",
    "draw_samples",
    "duration",
    "escape",
    "facts",
    "figures",
    "group_of",
    "html_facts",
    "html_notes",
    "html_pictures",
    "is_curve",
    "is_weighted",
    "label_of",
    "loss_name",
    "loss_panels",
    "metric_panels",
    "names_in",
    "new_figure",
    "num",
    "quantities",
    "quantity_rows",
    "read_run",
    "read_samples",
    "require_matplotlib",
    "save_figures",
    "series",
    "summary_table",
    "undrawn",
    "use_log_scale",
    "write_html",
    "write_page",
    "write_plots",
]
