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
everything into one HTML file with the pictures embedded."""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np

from . import monitor
from .data.sources import LIVE_LOG_PREFIX, counter_log_keys
from .evaluation import FIELD_PREFIX

if TYPE_CHECKING:  # annotations only: matplotlib is imported lazily, where pictures are drawn
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PLOT_EXTRA_HINT = "pip install 'onlytorch[plot]'"
DPI = 110
_LOG_SPAN = 100.0  # a log y axis when all values are positive and span more than 2 decades
_NOT_QUANTITIES = {"step", "kind", "time"}
_GROUP_TITLES = {
    "loss": "losses",
    LIVE_LOG_PREFIX: f"{LIVE_LOG_PREFIX} (training episodes of a gym source)",
    "train": "train metrics",
    "eval": "eval metrics",
    "val": "val metrics (evaluations that choose best.npz)",
    "test": "test metrics (evaluations that choose best.npz)",
    "train_split": "train-split metrics (evaluations that choose best.npz)",
}
# Groups of evaluation rows: eval.split's, and those of the other split that chooses best.npz.
_EVAL_GROUPS = ("val", "test", "train_split", "eval")


class ReportError(Exception):
    """A run directory that cannot be reported on (a broken file); the message says why."""


class NotARunDir(ReportError):
    """The path is not a run directory (no ``run.json``)."""


class PlotsUnavailable(ReportError):
    """matplotlib (the ``plot`` extra) is not installed."""


@dataclass
class Run:
    """Everything read from a run directory. ``rows`` are the metrics rows in step order (rows
    logged again for the same step and kind, as after a resume, are merged, later values first);
    ``notes`` say what was skipped or is missing."""

    path: Path
    info: dict[str, Any]
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    spec_text: str | None = None
    checkpoints: list[tuple[str, int]] = field(default_factory=list)
    samples: dict[str, np.ndarray] | None = None


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


# ---------------------------------------------------------------- reading


def read_run(run_dir: str | Path) -> Run:
    """Read a run directory. Raises :class:`NotARunDir` when there is no ``run.json`` and
    :class:`ReportError` for a broken file (a broken metrics line other than the last)."""
    path = Path(run_dir)
    if not path.is_dir():
        raise NotARunDir(f"{path} is not a directory" if path.exists() else f"{path} does not exist")
    if not (path / "run.json").is_file():
        raise NotARunDir(_not_a_run_dir_message(path))
    run = Run(path=path, info=_read_info(path / "run.json"), rows=[])
    run.rows = _read_rows(path / "metrics.jsonl", run.notes)
    run.spec_text = _read_text(path / "spec.yaml")
    run.checkpoints = _list_checkpoints(path / "checkpoints")
    run.samples = _read_samples(path / "samples.npz", run.notes)
    return run


def _not_a_run_dir_message(path: Path) -> str:
    inner = sorted(p.parent.name for p in path.glob("*/run.json"))
    hint = f"; it holds run directories: {', '.join(inner[:3])}{', ...' if len(inner) > 3 else ''}" if inner else ""
    return f"{path} is not a run directory (no run.json, which onlytorch train writes){hint}"


def _read_info(path: Path) -> dict[str, Any]:
    text = _read_text(path) or ""
    try:
        info = json.loads(text)
    except json.JSONDecodeError as e:
        raise ReportError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    if not isinstance(info, dict):
        raise ReportError(f"{path} should hold a JSON object, not {type(info).__name__}")
    return info


def _read_text(path: Path) -> str | None:
    if not path.is_file():
        return None
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ReportError(f"cannot read {path}: {e}") from None


def _read_rows(path: Path, notes: list[str]) -> list[dict[str, Any]]:
    text = _read_text(path)
    if text is None:
        notes.append(f"no {path.name}: nothing logged yet")
        return []
    lines = [(i, line) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]
    rows = []
    for i, line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if i == lines[-1][0]:
                notes.append(
                    f"skipped the incomplete last line {i} of {path.name} (a run still writing, or one that crashed)"
                )
                break
            raise ReportError(
                f"{path} line {i} is not valid JSON ({e.msg}, column {e.colno}); only the last line may be incomplete"
            ) from None
        rows.append(_check_row(row, path, i))
    if not rows and not lines:
        notes.append(f"{path.name} is empty: nothing logged yet")
    return _merge_repeated_steps(rows, notes)


def _check_row(row: Any, path: Path, line: int) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise ReportError(f"{path} line {line} should be a JSON object, not {type(row).__name__}")
    step = row.get("step")
    if not isinstance(step, int) or isinstance(step, bool):
        raise ReportError(f"{path} line {line} has no integer 'step'")
    return row


def _merge_repeated_steps(rows: list[dict[str, Any]], notes: list[str]) -> list[dict[str, Any]]:
    merged: dict[tuple[int, str], dict[str, Any]] = {}
    repeated = 0
    for row in rows:
        key = (row["step"], str(row.get("kind", "train")))
        if key in merged:
            overlap = (set(merged[key]) & set(row)) - _NOT_QUANTITIES
            repeated += bool(overlap)
            merged[key] = {**merged[key], **row}
        else:
            merged[key] = dict(row)
    if repeated:
        notes.append(f"{repeated} step(s) were logged twice (a resumed run?): the later values are used")
    return sorted(merged.values(), key=lambda r: r["step"])


def _list_checkpoints(folder: Path) -> list[tuple[str, int]]:
    """Name and size of every ``.npz`` in the checkpoints folder (one being renamed right now is left out)."""
    found = []
    for p in sorted(folder.glob("*.npz")):
        try:
            found.append((f"{folder.name}/{p.name}", p.stat().st_size))
        except OSError:
            continue
    return found


def _read_samples(path: Path, notes: list[str]) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k], dtype=np.float64) for k in ("fake", "real", "centres") if k in data.files}
    except Exception as e:  # a broken samples file must not stop the report
        notes.append(f"cannot read {path.name} ({type(e).__name__}: {e}); no samples picture")
        return None
    images = _as_images(arrays.get("fake"))
    if images is not None:  # image samples (n, 1, h, w) or flat square ones (n, h*w): drawn as a grid
        return {"images": images}
    bad = [k for k, a in arrays.items() if a.ndim != 2 or a.shape[1] != 2]
    if "fake" not in arrays or bad:
        what = f"arrays {', '.join(bad)} are not (n, 2)" if bad else "there is no array 'fake'"
        notes.append(f"{path.name}: {what}; no samples picture")
        return None
    labels = _condition_labels(path, len(arrays["fake"]))
    for k, a in arrays.items():
        finite = np.isfinite(a).all(axis=1)
        if not finite.all():
            notes.append(f"{path.name}: {int((~finite).sum())} non-finite point(s) of '{k}' left out of the picture")
            arrays[k] = a[finite]
            if k == "fake" and labels is not None:
                labels = (labels[0], labels[1][finite])
    if labels is not None:
        arrays[labels[0]] = labels[1]
    return arrays


def _as_images(fake: np.ndarray | None) -> np.ndarray | None:
    """Generated samples as (n, h, w) grey images: one-channel (n, 1, h, w) arrays, or flat rows
    whose width is a square of at least 16 pixels (8x8 digits: 64); None for anything else."""
    if fake is None or len(fake) == 0 or not np.isfinite(fake).all():
        return None
    if fake.ndim == 4 and fake.shape[1] == 1:
        return fake[:, 0]
    side = round(fake.shape[1] ** 0.5) if fake.ndim == 2 else 0
    return fake.reshape(len(fake), side, side) if side >= 4 and side * side == fake.shape[1] else None


def _condition_labels(path: Path, n: int) -> tuple[str, np.ndarray] | None:
    """The class labels a conditional generator's samples were asked for (the first integer field
    saved with them, one per sample), to colour the samples by; None when there are none."""
    try:
        with np.load(path, allow_pickle=False) as data:
            for k in sorted(data.files):
                if k.startswith(FIELD_PREFIX):
                    a = np.asarray(data[k])
                    if a.ndim == 1 and a.dtype.kind in "iu" and len(a) == n:
                        return k, a.astype(np.int64)
    except Exception:  # the samples were read; a broken field only loses the colours
        return None
    return None


# ---------------------------------------------------------------- quantities


def group_of(name: str) -> str | None:
    """``"loss"`` for ``<phase>/<loss>``, ``"train"``/``"eval"`` for metrics, ``"val"``, ``"test"``
    or ``"train_split"`` for the evaluations that choose best.npz on a split other than eval.split,
    ``"rollout"`` for a gym source's episode statistics, ``"lr"``, ``"grad_norm"``, or None for
    bookkeeping (step, kind, time)."""
    if name in _NOT_QUANTITIES:
        return None
    prefix, sep, _ = name.partition("/")
    if not sep:
        return "train"
    return prefix if prefix in ("train", "lr", "grad_norm", LIVE_LOG_PREFIX, *_EVAL_GROUPS) else "loss"


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
    pairs = [(r["step"], float(r[name])) for r in run.rows if _is_number(r.get(name))]
    steps = np.array([p[0] for p in pairs], dtype=np.int64)
    values = np.array([p[1] for p in pairs], dtype=np.float64)
    return steps, values


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def names_in(run: Run, *groups: str) -> list[str]:
    """The logged quantities of the given groups, in order of group then first appearance."""
    seen: dict[str, None] = {}
    for row in run.rows:
        for key, value in row.items():
            if _is_number(value) and group_of(key) in groups:
                seen.setdefault(key, None)
    return sorted(seen, key=lambda n: groups.index(group_of(n)))  # type: ignore[arg-type]


def quantities(run: Run) -> list[Quantity]:
    """Final and best value of every loss, train metric and eval metric."""
    out = []
    for name in names_in(run, "loss", LIVE_LOG_PREFIX, "train", *_EVAL_GROUPS):
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


# ---------------------------------------------------------------- facts and the terminal summary


def facts(run: Run) -> list[tuple[str, str]]:
    """The run's headline facts as (label, text) pairs, for the terminal and the HTML page."""
    info = run.info
    out = [("run", f"{info.get('name', run.path.name)}"), ("status", _status_text(run))]
    out.append(("steps", _steps_text(run)))
    out.append(("wall time", _duration(info.get("wall_time"))))
    if info.get("spec_file") or info.get("spec_hash"):
        out.append(("spec", f"{info.get('spec_file', '?')} (hash {str(info.get('spec_hash', '?'))[:12]})"))
    if "seed" in info:
        out.append(("seed", str(info["seed"])))
    if info.get("overrides"):
        out.append(("overrides", " ".join(str(o) for o in info["overrides"])))
    out.append(("started", str(info.get("started") or "?")))
    unfinished = "not yet" if info.get("status") == "running" else "not recorded"
    out.append(("finished", str(info.get("finished") or unfinished)))
    out.append(("best checkpoint", _best_text(info.get("best"))))
    if run.checkpoints:
        out.append(("checkpoints", ", ".join(f"{name} ({_size(size)})" for name, size in run.checkpoints)))
    return out


def _status_text(run: Run) -> str:
    status = str(run.info.get("status", "unknown"))
    message = run.info.get("message")
    if status == "running":
        return "running (still going, or stopped without recording its end): the numbers are a snapshot"
    if status in ("early_stopped", "diverged", "failed", "interrupted") and message:
        return f"{status}: {message}"
    return status


def _steps_text(run: Run) -> str:
    done, total = run.info.get("steps_done"), run.info.get("total_steps")
    text = f"{done if done is not None else '?'} / {total if total is not None else '?'}"
    if _is_number(done) and _is_number(total) and total > 0:
        text += f" ({100 * done / total:.0f}%)"
    if run.rows and run.rows[-1]["step"] != done:
        text += f", last logged step {run.rows[-1]['step']}"
    return text


def _best_text(best: Any) -> str:
    if not isinstance(best, dict):
        return "none"
    what = f"{best.get('metric', '?')} = {_num(best.get('value'))}"
    if best.get("split") is not None or best.get("mode") is not None:
        mode = {"min": "lowest", "max": "highest"}.get(str(best.get("mode")), "?")
        what = f"{mode} {best.get('metric', '?')} on {best.get('split', '?')} = {_num(best.get('value'))}"
    return f"{best.get('checkpoint', '?')} (step {best.get('step', '?')}, {what})"


def _duration(seconds: Any) -> str:
    if not _is_number(seconds) or not math.isfinite(seconds):
        return "?"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _size(n_bytes: int) -> str:
    if n_bytes < 1000:
        return f"{n_bytes} B"
    size = float(n_bytes)
    for unit in ("kB", "MB", "GB"):
        size /= 1000
        if size < 1000 or unit == "GB":
            break
    return f"{size:.1f} {unit}"


def _num(value: Any) -> str:
    return f"{value:.5g}" if _is_number(value) else "-" if value is None else str(value)


def quantity_rows(run: Run) -> list[list[str]]:
    """The quantity table as text cells: quantity, final, step, best, step."""
    return [[q.name, _num(q.final), str(q.final_step), _num(q.best), _num(q.best_step)] for q in quantities(run)]


_HEADER = ["quantity", "final", "step", "best", "step"]


def summary_table(run: Run) -> str:
    """The terminal summary: the run's facts, then an aligned table of every quantity's final
    and best value (grouped: losses, train metrics, evaluations); best is left empty ("-") where
    a quantity's direction is not declared."""
    pairs = facts(run)
    width = max(len(label) for label, _ in pairs)
    lines = [f"{label:<{width}}  {text}" for label, text in pairs]
    qs = quantities(run)
    if not qs:
        return "\n".join([*lines, "", "no quantities logged yet"])
    cells = [_HEADER] + [[f"  {row[0]}", *row[1:]] for row in quantity_rows(run)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(_HEADER))]
    lines.append("")
    lines.append(_align(_HEADER, widths))
    group = None
    for q, row in zip(qs, cells[1:]):
        if q.group != group:
            group = q.group
            lines.append(_group_title(run, group))
        lines.append(_align(row, widths))
    return "\n".join(lines)


def _group_title(run: Run, group: str) -> str:
    split = run.info.get("eval_split")
    if group == "eval" and isinstance(split, str):
        return f"eval metrics (on {split})"
    return _GROUP_TITLES[group]


def _align(cells: list[str], widths: list[int]) -> str:
    first = f"{cells[0]:<{widths[0]}}"
    return "  ".join([first, *(f"{c:>{w}}" for c, w in zip(cells[1:], widths[1:]))]).rstrip()


# ---------------------------------------------------------------- pictures (matplotlib, lazily)


def require_matplotlib() -> None:
    """Raise :class:`PlotsUnavailable`, naming the extra, when matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401  (the package itself, so that a missing one fails here)
    except ImportError:
        raise PlotsUnavailable(
            f"no pictures: matplotlib is not installed (it is the optional plot extra: {PLOT_EXTRA_HINT})"
        ) from None


def _new_figure(width: float, height: float) -> Figure:
    """A figure on the Agg canvas, without pyplot (no global backend state is touched)."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def write_plots(run: Run, out_dir: str | Path) -> list[Path]:
    """Draw ``losses.png``, ``metrics.png``, ``lr.png`` and ``samples.png`` (each when there is
    something to draw) into ``out_dir``; return the paths written. Raises
    :class:`PlotsUnavailable` when matplotlib is missing."""
    require_matplotlib()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    drawers = [
        ("losses.png", _draw_losses),
        ("metrics.png", _draw_metrics),
        ("lr.png", _draw_lr),
        ("samples.png", _draw_samples),
    ]
    written = []
    for filename, draw in drawers:
        fig = draw(run)
        if fig is not None:
            fig.savefig(out / filename, dpi=DPI)
            written.append(out / filename)
    return written


def use_log_scale(values: np.ndarray) -> bool:
    """True when all finite values are positive and span more than 2 decades."""
    v = values[np.isfinite(values)]
    return v.size > 0 and bool((v > 0).all()) and v.max() / v.min() > _LOG_SPAN


def _plottable(values: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(values), values, np.nan)  # gaps instead of infinities


def _smoothed(values: np.ndarray, window: int) -> np.ndarray:
    """A trailing moving average that ignores NaN (for noisy loss curves)."""
    ok = np.isfinite(values)
    sums = np.cumsum(np.where(ok, values, 0.0))
    counts = np.cumsum(ok)
    lo = np.maximum(np.arange(values.size) - window, -1)
    s = sums - np.where(lo >= 0, sums[np.maximum(lo, 0)], 0.0)
    c = counts - np.where(lo >= 0, counts[np.maximum(lo, 0)], 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(c > 0, s / np.maximum(c, 1), np.nan)


def _draw_lines(ax: Axes, run: Run, names: list[str], smooth: bool) -> np.ndarray:
    """One curve per name (x = step); noisy long curves get a moving average over a faint raw
    line. Returns all plotted values (for the scale decision)."""
    everything = []
    for i, name in enumerate(names):
        steps, values = series(run, name)
        colour = f"C{i % 10}"
        if smooth and values.size > 50:
            ax.plot(steps, _plottable(values), color=colour, alpha=0.25, linewidth=0.8)
            ax.plot(
                steps, _smoothed(_plottable(values), max(values.size // 50, 2)), color=colour, linewidth=1.8, label=name
            )
        else:
            ax.plot(
                steps,
                _plottable(values),
                color=colour,
                linewidth=1.6,
                label=name,
                marker="." if values.size < 30 else None,
            )
        everything.append(values)
    return np.concatenate(everything) if everything else np.zeros(0)


def _finish_axes(ax: Axes, title: str, ylabel: str, values: np.ndarray) -> None:
    if use_log_scale(values):
        ax.set_yscale("log")
        ylabel += " (log scale)"
    else:
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
    ax.set_title(title, fontsize=12)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9, loc="best")


def _run_title(run: Run, what: str) -> str:
    return f"{run.info.get('name', run.path.name)}: {what}"


def _draw_losses(run: Run) -> Figure | None:
    names = names_in(run, "loss")
    if not names:
        return None
    fig = _new_figure(8, 4.5)
    ax = fig.add_subplot()
    values = _draw_lines(ax, run, names, smooth=True)
    if run.info.get("status") == "diverged" and run.rows:
        ax.axvline(run.rows[-1]["step"], color="red", linestyle="--", linewidth=1, label="diverged")
    if run.info.get("status") == "early_stopped" and run.rows:
        ax.axvline(run.rows[-1]["step"], color="green", linestyle="--", linewidth=1, label="early stopped")
    _finish_axes(ax, _run_title(run, "loss per phase"), "loss", values)
    return fig


def _draw_metrics(run: Run) -> Figure | None:
    """One panel per metric name; train/<m> as a line, eval/<m> (and val/<m>, ... of the split that
    chooses best.npz) as markers share a panel."""
    # the counters a live source logs (see LiveSource.counter_stats): in the table, not worth a picture
    counters = counter_log_keys()
    names = [n for n in names_in(run, LIVE_LOG_PREFIX, "train", *_EVAL_GROUPS) if n not in counters]
    if not names:
        return None
    panels: dict[str, list[str]] = {}
    for name in names:
        panels.setdefault(name.rpartition("/")[2], []).append(name)
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = _new_figure(4.2 * ncols + 0.6, 3.2 * nrows + 0.4)
    fig.suptitle(_run_title(run, "metrics (train: lines, evaluations: markers)"), fontsize=12)
    for k, (metric, members) in enumerate(panels.items()):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        for name in members:
            steps, values = series(run, name)
            group = group_of(name)
            if group in _EVAL_GROUPS:
                colour, marker = ("C1", "o") if group == "eval" else ("C2", "s")
                size = 5 if values.size < 60 else 3
                ax.plot(steps, _plottable(values), marker, color=colour, markersize=size, label=name)
            else:
                ax.plot(steps, _plottable(values), color="C0", linewidth=1.5, label=name)
        ax.set_title(metric, fontsize=11)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    return fig


def _draw_lr(run: Run) -> Figure | None:
    names = names_in(run, "lr")
    if not names:
        return None
    fig = _new_figure(8, 3.5)
    ax = fig.add_subplot()
    values = _draw_lines(ax, run, names, smooth=False)
    _finish_axes(ax, _run_title(run, "learning rate per optimizer"), "learning rate", values)
    return fig


def _draw_samples(run: Run) -> Figure | None:
    if run.samples is None:
        return None
    fig = _new_figure(6, 6)
    ax = fig.add_subplot()
    s = run.samples
    if "images" in s:
        _draw_image_grid(ax, run, s["images"])
        return fig
    if "real" in s:
        ax.scatter(s["real"][:, 0], s["real"][:, 1], s=6, color="0.6", alpha=0.5, label=f"real data ({len(s['real'])})")
    cond = next((k for k in s if k.startswith(FIELD_PREFIX)), None)
    if cond is None:
        ax.scatter(s["fake"][:, 0], s["fake"][:, 1], s=8, color="C3", alpha=0.6, label=f"generated ({len(s['fake'])})")
    else:  # a conditional generator: each sample coloured by the class it was asked for
        labels = s[cond]
        ax.scatter(
            s["fake"][:, 0],
            s["fake"][:, 1],
            s=8,
            c=labels % 20,
            cmap="tab10" if labels.max(initial=0) < 10 else "tab20",
            vmin=0,
            vmax=9 if labels.max(initial=0) < 10 else 19,
            alpha=0.6,
            label=f"generated ({len(s['fake'])}), by {cond.removeprefix(FIELD_PREFIX)}",
        )
    if "centres" in s:
        c = s["centres"]
        ax.scatter(
            c[:, 0],
            c[:, 1],
            s=120,
            marker="X",
            color="black",
            edgecolors="white",
            linewidths=1,
            label=f"mode centres ({len(c)})",
        )
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(_run_title(run, "generated samples over the real data"), fontsize=12)
    ax.set_xlabel("x1")
    ax.set_ylabel("x2")
    ax.grid(True, alpha=0.3)
    fig.legend(loc="outside lower center", ncols=3, fontsize=9, markerscale=1.5)
    return fig


def _draw_image_grid(ax: Any, run: Run, images: np.ndarray) -> None:
    n, h, w = min(100, len(images)), images.shape[1], images.shape[2]
    rows = -(-n // 10)
    lo, hi = float(images.min()), float(images.max())
    tiles = np.full((rows * (h + 1) + 1, 10 * (w + 1) + 1), lo + 0.3 * (hi - lo))  # grey frames
    for i in range(n):
        r, c = divmod(i, 10)
        tiles[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] = images[i]
    ax.imshow(tiles, cmap="gray_r", vmin=lo, vmax=hi, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(_run_title(run, f"the first {n} of {len(images)} generated samples"), fontsize=12)


# ---------------------------------------------------------------- HTML

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { padding: 0.25em 0.8em; text-align: left; vertical-align: top; }
table.q td.n { text-align: right; font-variant-numeric: tabular-nums; } table.q th.n { text-align: right; }
tr.group td { font-weight: bold; background: #f3f3f3; }
th { border-bottom: 2px solid #ccc; } tr:nth-child(even) td { background: #fafafa; }
.status { padding: 0.1em 0.5em; border-radius: 4px; color: #fff; background: #777; }
.completed, .early_stopped { background: #2a7d2a; } .running { background: #2060b0; } .diverged, .failed { background: #b02020; }
.interrupted { background: #b07010; }
.notes { background: #fff8e0; border-left: 4px solid #e0b000; padding: 0.5em 1em; }
figure { margin: 1em 0; } img { max-width: 100%; border: 1px solid #eee; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 0.9em; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def write_html(run: Run, pictures: list[Path], path: str | Path) -> Path:
    """Write one self-contained HTML page (pictures embedded as base64 PNG, inline CSS, no
    external resources; every string from the run directory escaped). Returns its path."""
    name = run.info.get("name", run.path.name)
    status = str(run.info.get("status", "unknown"))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>onlytorch report: {_e(name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f'<h1>{_e(name)} <span class="status {_e(status)}">{_e(status)}</span></h1>',
        _html_notes(run.notes),
        "<h2>Summary</h2>",
        _html_facts(facts(run)),
        _html_quantities(run),
        html_pictures(pictures),
        "<h2>run.json</h2>",
        _html_facts([(k, _json_text(v)) for k, v in run.info.items()]),
        "<h2>Resolved spec</h2>",
        f"<pre>{_e(run.spec_text)}</pre>" if run.spec_text is not None else "<p>no spec.yaml</p>",
        "</body></html>",
    ]
    out = Path(path)
    out.write_text("\n".join(p for p in parts if p) + "\n", encoding="utf-8")
    return out


def _html_notes(notes: list[str]) -> str:
    if not notes:
        return ""
    return '<div class="notes"><ul>' + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul></div>"


def _html_facts(pairs: list[tuple[str, str]]) -> str:
    rows = "".join(f"<tr><th>{_e(label)}</th><td>{_e(text)}</td></tr>" for label, text in pairs)
    return f"<table>{rows}</table>"


def _html_quantities(run: Run) -> str:
    qs = quantities(run)
    if not qs:
        return "<p>no quantities logged yet</p>"
    head = "".join(f'<th class="{"n" if i else ""}">{_e(h)}</th>' for i, h in enumerate(_HEADER))
    body, group = [], None
    for q, row in zip(qs, quantity_rows(run)):
        if q.group != group:
            group = q.group
            body.append(f'<tr class="group"><td colspan="{len(_HEADER)}">{_e(_group_title(run, group))}</td></tr>')
        cells = "".join(f'<td class="{"n" if i else ""}">{_e(c)}</td>' for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f'<table class="q"><tr>{head}</tr>{"".join(body)}</table>'


def html_pictures(pictures: list[Path]) -> str:
    """The pictures embedded in an HTML page (base64 PNGs with captions), under one heading."""
    if not pictures:
        return ""
    figures = []
    for p in pictures:
        data = base64.b64encode(Path(p).read_bytes()).decode("ascii")
        figures.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{_e(p.stem)}"><figcaption>{_e(p.name)}</figcaption></figure>'
        )
    return "<h2>Pictures</h2>" + "".join(figures)


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
