"""What a sweep did: a terminal summary, PNG pictures and one self-contained HTML page.

A sweep directory (written by ``onlytorch sweep``) holds ``sweep.json`` (the sweep's facts, naming
the Optuna study and its storage) and the study itself; the trials' user attributes (seeds,
per-seed values, run directories, errors) are the record the report reads, through
:func:`onlytorch.sweep.study.open_study`. :func:`read_sweep` reads it all, :func:`summary_text`
renders the terminal summary, :func:`draw` builds the pictures (Optuna's own matplotlib plots for
the optimisation history, the parameter importances, parallel coordinates and slices; the
per-seed spread of the best trials drawn here), :func:`write_plots` saves them and
:func:`write_html` puts everything into one page with the pictures embedded. matplotlib (the
``plot`` extra) and optuna (the ``sweep`` extra) are imported only where they are needed."""

from __future__ import annotations

import json
import math
import statistics
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np

from ..report import DPI, PlotsUnavailable, ReportError, escape, require_matplotlib, save_figures
from ..report.page import html_facts, html_notes, html_pictures, write_page

if TYPE_CHECKING:  # annotations only: matplotlib and optuna are imported lazily
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

SWEEP_EXTRA_HINT = "pip install 'onlytorch[sweep]'"
BEST_SEED_TRIALS = 10  # how many of the best trials the seeds picture shows
MIN_IMPORTANCE_TRIALS = 4  # fewer complete trials than this give no meaningful importances
PICTURES = ("history.png", "importances.png", "parallel.png", "slice.png", "seeds.png")
STATES = ("complete", "pruned", "failed", "running", "waiting")
_STATE_NAMES = {
    "COMPLETE": "complete",
    "PRUNED": "pruned",
    "FAIL": "failed",
    "RUNNING": "running",
    "WAITING": "waiting",
}


class NotASweepDir(ReportError):
    """The path is not a sweep directory (no ``sweep.json``)."""


class SweepUnavailable(ReportError):
    """optuna (the ``sweep`` extra) is not installed, so the study cannot be read."""


@dataclass(frozen=True)
class TrialRow:
    """One trial as the report shows it. ``value`` (the mean over seeds) is set for complete
    trials only: a pruned or failed trial is shown by its state, not by a number; ``values`` are
    the per-seed values it recorded (a pruned trial may have some), in seed order."""

    number: int
    state: str  # one of STATES
    value: float | None
    std: float | None
    params: dict[str, Any]
    values: dict[str, float]
    run_dirs: list[str]
    error: str | None
    duration_s: float | None
    retry_of: int | None


@dataclass
class SweepRecord:
    """Everything read from a sweep directory: sweep.json (``info``), the open study, and its
    trials in number order. ``best`` is the best complete trial by the study's direction."""

    path: Path
    info: dict[str, Any]
    study: Any  # optuna.Study (typed loosely: optuna is imported lazily)
    trials: list[TrialRow]
    params: list[str]  # parameter names (the dotted paths), in order of first appearance
    best: TrialRow | None
    importances: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.info.get("name") or self.path.name)

    @property
    def metric(self) -> str:
        return str(self.info.get("metric") or "value")

    @property
    def maximize(self) -> bool:
        return str(self.info.get("direction")) == "maximize"

    def counts(self) -> dict[str, int]:
        return {s: sum(t.state == s for t in self.trials) for s in STATES}

    def complete(self) -> list[TrialRow]:
        return [t for t in self.trials if t.state == "complete" and t.value is not None and math.isfinite(t.value)]

    def ranked(self) -> list[TrialRow]:
        """The complete trials, best first (ties: the earlier trial first)."""
        sign = -1.0 if self.maximize else 1.0
        return sorted(self.complete(), key=lambda t: (sign * float(t.value or 0.0), t.number))


@dataclass
class Pictures:
    """The figures :func:`draw` built (file name -> figure) and, for each picture not drawn, why."""

    figures: dict[str, Figure]
    absent: dict[str, str]


# ---------------------------------------------------------------- reading


def is_sweep_dir(path: str | Path) -> bool:
    """A sweep directory is one that holds ``sweep.json``."""
    return (Path(path) / "sweep.json").is_file()


def read_sweep(sweep_dir: str | Path, storage: str | None = None) -> SweepRecord:
    """Read a sweep directory and its study (``storage``: the full URL of an RDB storage, which
    sweep.json records without its password). Raises :class:`NotASweepDir` without ``sweep.json``,
    :class:`SweepUnavailable` without optuna and :class:`ReportError` for a broken sweep.json or a
    study that cannot be opened."""
    path = Path(sweep_dir)
    if not is_sweep_dir(path):
        raise NotASweepDir(f"{path} is not a sweep directory (no sweep.json, which onlytorch sweep writes)")
    info = _read_info(path / "sweep.json")
    study = _open(path, info, storage)
    trials = [_row(t) for t in study.get_trials(deepcopy=False)]
    params: dict[str, None] = {}
    for t in trials:
        params.update(dict.fromkeys(t.params))
    record = SweepRecord(path=path, info=info, study=study, trials=trials, params=list(params), best=None)
    ranked = record.ranked()
    record.best = ranked[0] if ranked else None
    record.importances = _importances(record)
    return record


def _read_info(path: Path) -> dict[str, Any]:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ReportError(f"cannot read {path}: {e}") from None
    except json.JSONDecodeError as e:
        raise ReportError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    if not isinstance(info, dict):
        raise ReportError(f"{path} should hold a JSON object, not {type(info).__name__}")
    return info


def _open(path: Path, info: dict[str, Any], storage: str | None) -> Any:
    try:
        import optuna  # noqa: F401  (the package itself, so that a missing extra fails here)
    except ImportError:
        raise SweepUnavailable(
            f"cannot read the sweep's study: optuna is not installed (it is the sweep extra: {SWEEP_EXTRA_HINT})"
        ) from None
    from .study import open_study

    given = info.get("storage")
    record: dict[str, Any] = given if isinstance(given, dict) else {"kind": "journal"}
    if storage is None and record.get("kind") == "rdb" and "***" in str(record.get("url", "")):
        raise ReportError(
            f"{path / 'sweep.json'} records the study's database without its password "
            f"({record.get('url')}): give the full URL with --storage URL"
        )
    if storage is None and record.get("kind") != "rdb":
        journal = path / str(record.get("path") or "study.log")
        if not journal.is_file():  # opening a missing journal would create an empty one
            raise ReportError(f"{path} has no study journal {journal.name}: the study was not started here")
    try:
        return open_study(path, storage)
    except Exception as e:  # a storage that cannot be opened: say which and why, no traceback
        raise ReportError(f"cannot open the study of {path}: {e}") from None


def _row(trial: Any) -> TrialRow:
    attrs = trial.user_attrs
    state = _STATE_NAMES.get(trial.state.name, trial.state.name.lower())
    seeds = [str(s) for s in attrs.get("seeds") or []]
    raw = attrs.get("values") if isinstance(attrs.get("values"), dict) else {}
    order = seeds + sorted(k for k in raw if k not in seeds)
    values = {k: float(raw[k]) for k in order if _is_number(raw.get(k))}
    value = float(trial.value) if state == "complete" and trial.value is not None else None
    std = attrs.get("std") if state == "complete" else None
    if state == "complete" and not _is_number(std) and values:
        std = statistics.stdev(values.values()) if len(values) > 1 else 0.0  # as the sweep records it
    duration = attrs.get("duration_s")
    if not _is_number(duration) and trial.duration is not None:
        duration = trial.duration.total_seconds()
    retry_of = attrs.get("retry_of")
    error = attrs.get("error")
    return TrialRow(
        number=int(trial.number),
        state=state,
        value=value,
        std=float(std) if _is_number(std) else None,
        params=dict(trial.params),
        values=values,
        run_dirs=[str(d) for d in attrs.get("run_dirs") or []],
        error=None if error is None else str(error),
        duration_s=float(duration) if _is_number(duration) else None,
        retry_of=retry_of if isinstance(retry_of, int) else None,
    )


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


# ---------------------------------------------------------------- importances


def importance_reason(record: SweepRecord) -> str | None:
    """Why there are no parameter importances, or None when there are."""
    if len(record.params) < 2:
        what = "no parameters (a seed study)" if not record.params else "a single parameter"
        return f"no parameter importances: the sweep has {what}; importances compare two or more"
    n = len(record.complete())
    if n < MIN_IMPORTANCE_TRIALS:
        return f"no parameter importances: {n} complete trial(s), they need at least {MIN_IMPORTANCE_TRIALS}"
    return None


def importance_evaluator(n_complete: int) -> Any:
    """PED-ANOVA (Optuna's default evaluator, which needs no scikit-learn, unlike fANOVA and
    mean decrease impurity). Its target quantile is widened on small studies so that at least
    3 trials stand for the good region (the default 10% of 16 trials would be 2)."""
    from optuna.importance import PedAnovaImportanceEvaluator

    quantile = min(0.5, max(0.1, 3.0 / max(n_complete, 1)))
    return PedAnovaImportanceEvaluator(target_quantile=quantile)


def _importances(record: SweepRecord) -> dict[str, float] | None:
    if importance_reason(record) is not None:
        return None
    from optuna.importance import get_param_importances

    with warnings.catch_warnings():
        # PED-ANOVA warns about small regions on small studies; the numbers are still its answer
        warnings.simplefilter("ignore")
        found = get_param_importances(record.study, evaluator=importance_evaluator(len(record.complete())))
    return {str(k): float(v) for k, v in found.items()}


# ---------------------------------------------------------------- the terminal summary


def _num(value: float | None, digits: int = 5) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _mean_std(t: TrialRow) -> str:
    text = _num(t.value)
    return f"{text} ± {_num(t.std, 3)}" if t.std is not None and len(t.values) > 1 else text


def _counts_text(record: SweepRecord) -> str:
    counts = record.counts()
    parts = [f"{n} {s}" for s, n in counts.items() if n]
    requested = record.info.get("trials_requested")
    head = f"{len(record.trials)} trial(s)" + (f" of {requested} requested" if requested is not None else "")
    return head + (": " + ", ".join(parts) if parts else "")


def facts(record: SweepRecord) -> list[tuple[str, str]]:
    """The sweep's headline facts as (label, text) pairs, for the terminal and the HTML page."""
    info = record.info
    split = f" on {info['split']}" if info.get("split") else ""
    mode = {"maximize": "higher is better", "minimize": "lower is better"}.get(str(info.get("direction")), "?")
    out = [
        ("sweep", f"{record.name} ({info.get('status', 'unknown')})"),
        ("objective", f"{info.get('objective', 'best')} {record.metric}{split}, mean over seeds ({mode})"),
        ("trials", _counts_text(record)),
    ]
    if info.get("spec"):
        out.append(("base spec", str(info["spec"])))
    storage = info.get("storage")
    if isinstance(storage, dict):
        where = storage.get("path") or storage.get("url") or "?"
        out.append(("study", f"{info.get('study_name', '?')} in {storage.get('kind', '?')} storage {where}"))
    best = record.best
    if best is None:
        out.append(("best", "none yet: no complete trial"))
        return out
    out.append(("best", f"trial {best.number}: {record.metric} = {_mean_std(best)} over {len(best.values)} seed(s)"))
    if best.values:
        out.append(("per seed", ", ".join(f"seed {s}: {_num(v)}" for s, v in best.values.items())))
    if best.params:
        out.append(("parameters", ", ".join(f"{k}={_param_text(v)}" for k, v in best.params.items())))
    if best.run_dirs:
        dirs = best.run_dirs
        out.append(("run dirs", ", ".join(dirs) if len(dirs) <= 3 else f"{dirs[0]} ... {dirs[-1]} ({len(dirs)})"))
    return out


def _param_text(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def summary_text(record: SweepRecord, max_rows: int = 20) -> str:
    """The terminal summary: the sweep's facts (the best trial, its mean ± std over seeds, the
    counts by state), the parameter importances, then the trials (best first, then pruned,
    failed and running ones; at most ``max_rows``)."""
    pairs = facts(record)
    width = max(len(label) for label, _ in pairs)
    lines = [f"{label:<{width}}  {text}" for label, text in pairs]
    reason = importance_reason(record)
    if record.importances:
        lines += ["", "parameter importances (PED-ANOVA)"]
        lines += [f"  {k:<{max(map(len, record.importances))}}  {v:.3f}" for k, v in record.importances.items()]
    elif reason and record.params:
        lines += ["", reason]
    rows = record.ranked() + [t for t in record.trials if t.state != "complete"]
    if not rows:
        return "\n".join([*lines, "", "no trials yet"])
    cells = [["trial", "state", "value", "std", "error"]]
    cells += [[str(t.number), t.state, _num(t.value), _num(t.std, 3), _short(t.error)] for t in rows[:max_rows]]
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    lines.append("")
    for c in cells:
        lines.append(
            "  ".join(
                [
                    f"{c[0]:>{widths[0]}}",
                    f"{c[1]:<{widths[1]}}",
                    *(f"{x:>{w}}" for x, w in zip(c[2:4], widths[2:])),
                    c[4],
                ]
            ).rstrip()
        )
    if len(rows) > max_rows:
        lines.append(f"... {len(rows) - max_rows} more trial(s) in the HTML page")
    return "\n".join(lines)


def _short(text: str | None, limit: int = 70) -> str:
    if not text:
        return ""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


# ---------------------------------------------------------------- pictures


def absent_reasons(record: SweepRecord) -> dict[str, str]:
    """For each picture that has nothing to show, why (decided from the data alone, so that the
    page says it also when matplotlib is missing)."""
    absent: dict[str, str] = {}
    if not record.complete():
        for name in PICTURES:
            absent[name] = f"no {name.removesuffix('.png')} picture: no complete trial yet"
        return absent
    reason = importance_reason(record)
    if reason is not None:
        absent["importances.png"] = reason
    if not record.params:
        for name in ("parallel.png", "slice.png"):
            what = "parallel coordinates" if name == "parallel.png" else "slice plot"
            absent[name] = f"no {what}: the sweep has no parameters (a seed study); seeds.png shows its spread"
    return absent


@contextmanager
def _optuna_plotting() -> Iterator[Any]:
    """pyplot, as Optuna's plots need it, with their global style change (``plt.style.use``)
    undone afterwards and their ExperimentalWarning silenced. Yields pyplot."""
    import matplotlib
    import matplotlib.pyplot as plt
    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings(), matplotlib.rc_context():
        warnings.simplefilter("ignore", ExperimentalWarning)
        yield plt


def _figure_of(axes: Any, plt: Any) -> Figure:
    """The figure of what an Optuna plot returned (an Axes or an array of them), released from
    pyplot so that no figure stays open in the caller's process."""
    ax = np.asarray(axes, dtype=object).flat[0]
    fig = ax.get_figure()
    plt.close(fig)
    return fig


def draw(record: SweepRecord) -> Pictures:
    """Build the pictures (see :data:`PICTURES`); raises :class:`PlotsUnavailable` without
    matplotlib. The figures are returned, not shown; :func:`write_plots` saves them. A picture
    that Optuna fails to draw is left out with the reason rather than ending the report."""
    require_matplotlib()
    absent = absent_reasons(record)
    figures: dict[str, Figure] = {}
    with _optuna_plotting() as plt:
        from optuna.visualization import matplotlib as ovm

        drawers = {
            "history.png": lambda: _history(record, plt, ovm),
            "importances.png": lambda: _importance_plot(record, plt, ovm),
            "parallel.png": lambda: _parallel(record, plt, ovm),
            "slice.png": lambda: _slice(record, plt, ovm),
            "seeds.png": lambda: draw_seeds(record),
        }
        for name, drawer in drawers.items():
            if name in absent:
                continue
            before = set(plt.get_fignums())
            try:
                figures[name] = drawer()
            except Exception as e:  # an Optuna plot that fails on this study: said, not a traceback
                for number in set(plt.get_fignums()) - before:  # its half-drawn figure, not the caller's
                    plt.close(number)
                absent[name] = f"no {name}: it could not be drawn ({type(e).__name__}: {e})"
    return Pictures(figures=figures, absent=absent)


def _importance_plot(record: SweepRecord, plt: Any, ovm: Any) -> Figure:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PED-ANOVA's notes on small studies (see _importances)
        evaluator = importance_evaluator(len(record.complete()))
        ax = ovm.plot_param_importances(record.study, evaluator=evaluator, target_name=record.metric)
    ax.set_title(f"{record.name}: parameter importances for {record.metric} (PED-ANOVA)", loc="left")
    return _figure_of(ax, plt)


def _parallel(record: SweepRecord, plt: Any, ovm: Any) -> Figure:
    ax = ovm.plot_parallel_coordinate(record.study, target_name=record.metric)
    ax.set_title(f"{record.name}: parallel coordinates (complete trials)")
    _untruncate(ax, record.params)
    fig = _figure_of(ax, plt)
    fig.set_size_inches(10, 5.5)
    return fig


def _slice(record: SweepRecord, plt: Any, ovm: Any) -> Figure:
    from matplotlib.ticker import NullFormatter

    fig = _figure_of(ovm.plot_slice(record.study, target_name=record.metric), plt)
    fig.suptitle(f"{record.name}: {record.metric} against each parameter (complete trials)")
    panels = [ax for ax in fig.axes if ax.get_xlabel() in record.params]
    width, height = fig.get_size_inches()
    fig.set_size_inches(max(width, 1.5 + 3.8 * len(panels)), height)
    for ax in panels:  # the minor labels of a log axis (2x10^-4 3x10^-4 ...) run into each other
        if ax.get_xscale() == "log":
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(axis="x", labelrotation=20)
    return fig


def _untruncate(ax: Any, params: list[str]) -> None:
    """Optuna shortens axis names past 19 characters ("train.schedule.cr..."), which leaves
    dotted paths ambiguous; its axes are the objective, then the parameters sorted by name, so
    the full paths are put back where each shortened label agrees with that order."""
    shown = [t.get_text() for t in ax.get_xticklabels()]
    full = [shown[0] if shown else "", *sorted(params)]
    agree = len(shown) == len(full) and all(
        f == s or (s.endswith("...") and f.startswith(s[:-3])) for s, f in zip(shown[1:], full[1:])
    )
    if agree:
        ax.set_xticks(ax.get_xticks(), full, rotation=330, ha="left")


def _history(record: SweepRecord, plt: Any, ovm: Any) -> Figure:
    """Optuna's optimisation history (each complete trial's value and the best so far), with the
    pruned and failed trials marked along the bottom edge: they have no value to plot."""
    from matplotlib.ticker import MaxNLocator
    from matplotlib.transforms import blended_transform_factory

    label = f"{record.metric} (mean over seeds)"
    ax = ovm.plot_optimization_history(record.study, target_name=label)
    fig = _figure_of(ax, plt)
    fig.set_size_inches(8, 4.5)
    edge = blended_transform_factory(ax.transData, ax.transAxes)
    for state, marker, colour in (("pruned", "v", "tab:orange"), ("failed", "X", "tab:red")):
        numbers = [t.number for t in record.trials if t.state == state]
        if numbers:
            ax.scatter(
                numbers,
                [0.03] * len(numbers),
                transform=edge,
                marker=marker,
                color=colour,
                clip_on=False,
                zorder=5,
                gid=state,
                label=f"{state} ({len(numbers)}): no value",
            )
    ax.set_xlim(-0.5, max(t.number for t in record.trials) + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # trial numbers, never 0.4
    direction = "highest" if record.maximize else "lowest"
    ax.set_title(f"{record.name}: optimisation history ({direction} is best)")
    ax.legend(fontsize=8, loc="best")
    return fig


def draw_seeds(record: SweepRecord, n_best: int = BEST_SEED_TRIALS) -> Figure:
    """The per-seed values of the best ``n_best`` complete trials, best first: one strip per trial
    (its seeds' values as points, gid ``trial-N``), the mean as a bar and ± one std as a line
    (an errorbar labelled "mean ± std over seeds"). With a single complete trial (a seed study)
    each seed has its own place on the x axis, the mean is a line (gid ``mean``) and ± one std a
    band (gid ``std``). The std is the one the sweep recorded (the sample std; 0 for one seed)."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    best = record.ranked()[:n_best]
    seeds = max((len(t.values) for t in best), default=0)
    wide = len(best) if len(best) > 1 else seeds
    fig = Figure(figsize=(max(5.5, 1.5 + 0.7 * wide), 4.5), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if len(best) == 1:
        _one_trial(ax, best[0])
        what = f"trial {best[0].number}"
    else:
        _strips(ax, best)
        what = f"the best {len(best)} trials, best first"
    ax.set_ylabel(record.metric)
    ax.set_title(f"{record.name}: {record.metric} per seed ({seeds} seed(s)) of {what}", fontsize=11)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


def _seed_values(t: TrialRow) -> np.ndarray:
    return np.array(list(t.values.values()) or [float(t.value or 0.0)])


def _strips(ax: Axes, best: list[TrialRow]) -> None:
    means, stds = [], []
    for i, t in enumerate(best):
        values = _seed_values(t)
        offsets = np.linspace(-0.18, 0.18, len(values)) if len(values) > 1 else np.zeros(1)
        ax.scatter(
            i + offsets,
            values,
            s=26,
            color="tab:blue",
            edgecolors="white",
            linewidths=0.5,
            zorder=5,
            gid=f"trial-{t.number}",
            label="one seed's value" if i == 0 else None,
        )
        means.append(float(values.mean()))
        stds.append(float(t.std or 0.0))
    ax.errorbar(
        range(len(best)),
        means,
        yerr=stds,
        fmt="_",
        markersize=26,
        markeredgewidth=2.5,
        color="tab:red",
        ecolor="tab:red",
        alpha=0.8,
        elinewidth=1.5,
        capsize=6,
        zorder=4,
        label="mean ± std over seeds",
    )
    ax.set_xticks(range(len(best)), [f"trial {t.number}" for t in best], rotation=30 if len(best) > 5 else 0)
    ax.set_xlim(-0.6, len(best) - 0.4)


def _one_trial(ax: Axes, t: TrialRow) -> None:
    values = _seed_values(t)
    xs = np.arange(len(values))
    mean, std = float(values.mean()), float(t.std or 0.0)
    ax.axhspan(mean - std, mean + std, color="tab:red", alpha=0.12, gid="std", label=f"± std ({std:.3g})")
    ax.axhline(mean, color="tab:red", linewidth=1.8, gid="mean", label=f"mean ({mean:.4g})")
    ax.scatter(xs, values, s=36, color="tab:blue", zorder=5, gid=f"trial-{t.number}", label="one seed's value")
    labels = [f"seed {s}" for s in t.values] if t.values else [f"trial {t.number}"]
    ax.set_xticks(xs, labels, rotation=30 if len(values) > 6 else 0)
    ax.set_xlim(-0.6, len(values) - 0.4)


def write_plots(record: SweepRecord, out_dir: str | Path) -> tuple[list[Path], dict[str, str]]:
    """Draw and save the pictures into ``out_dir``; return the paths written and, for each picture
    not drawn, why. A picture left from an earlier report that has nothing to show now is
    removed, so that the directory never shows stale data. Raises :class:`PlotsUnavailable`."""
    pictures = draw(record)
    drawn = [(name, pictures.figures[name]) for name in PICTURES if pictures.figures.get(name) is not None]
    return save_figures(drawn, out_dir, PICTURES, bbox_inches="tight"), pictures.absent


# ---------------------------------------------------------------- HTML

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { padding: 0.25em 0.7em; text-align: left; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; } th { border-bottom: 2px solid #ccc; }
tr:nth-child(even) td { background: #fafafa; } tr.best td { background: #e8f5e8; }
.state { padding: 0.1em 0.5em; border-radius: 4px; color: #fff; background: #777; }
.complete, .completed { background: #2a7d2a; } .running { background: #2060b0; } .failed { background: #b02020; }
.pruned, .interrupted { background: #b07010; } .waiting { background: #888; }
.notes { background: #fff8e0; border-left: 4px solid #e0b000; padding: 0.5em 1em; }
figure { margin: 1em 0; } img { max-width: 100%; border: 1px solid #eee; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 0.9em; }
"""


def write_html(record: SweepRecord, pictures: list[Path], absent: dict[str, str], path: str | Path) -> Path:
    """Write one self-contained HTML page (pictures embedded as base64 PNG, inline CSS, every
    string from the sweep escaped): the facts, the best trial with its parameters and per-seed
    values, the pictures (and why any is missing), the importances and a table of all trials
    with their state and error. Returns its path."""
    status = str(record.info.get("status", "unknown"))
    notes = [*record.notes, *(absent[n] for n in PICTURES if n in absent)]
    body = [
        f'<h1>{escape(record.name)} <span class="state {escape(status)}">{escape(status)}</span></h1>',
        html_notes(notes),
        "<h2>Summary</h2>",
        html_facts(facts(record)),
        _html_best(record),
        _html_importances(record),
        html_pictures(pictures),
        "<h2>Trials</h2>",
        _html_trials(record),
        "<h2>sweep.json</h2>",
        f"<pre>{escape(json.dumps(record.info, indent=2, sort_keys=True))}</pre>",
    ]
    return write_page(path, f"onlytorch sweep report: {record.name}", _CSS, body)


def _html_best(record: SweepRecord) -> str:
    best = record.best
    if best is None:
        return "<h2>Best trial</h2><p>no complete trial yet</p>"
    parts = [f"<h2>Best trial: {best.number}</h2>"]
    mean = np.mean(list(best.values.values())) if best.values else best.value
    stats = [("value (mean over seeds)", _num(best.value)), ("std over seeds", _num(best.std, 4))]
    if (
        mean is not None
        and best.value is not None
        and not math.isclose(float(mean), best.value, rel_tol=1e-9, abs_tol=1e-12)
    ):
        stats.append(("note", f"the per-seed values average {_num(float(mean))}"))
    parts.append(html_facts(stats))
    if best.params:
        parts.append("<h3>Parameters</h3>" + html_facts([(k, _param_text(v)) for k, v in best.params.items()]))
    if best.values:
        dirs = best.run_dirs if len(best.run_dirs) == len(best.values) else [""] * len(best.values)
        rows = "".join(
            f'<tr><td>{escape(s)}</td><td class="n">{escape(_num(v))}</td><td>{escape(d)}</td></tr>'
            for (s, v), d in zip(best.values.items(), dirs)
        )
        parts.append(f"<h3>Per seed</h3><table><tr><th>seed</th><th>value</th><th>run dir</th></tr>{rows}</table>")
    return "".join(parts)


def _html_importances(record: SweepRecord) -> str:
    if not record.importances:
        return ""
    rows = "".join(f'<tr><td>{escape(k)}</td><td class="n">{v:.3f}</td></tr>' for k, v in record.importances.items())
    return (
        f"<h2>Parameter importances (PED-ANOVA)</h2><table><tr><th>parameter</th><th>importance</th></tr>{rows}</table>"
    )


def _html_trials(record: SweepRecord) -> str:
    if not record.trials:
        return "<p>no trials yet</p>"
    seeds: dict[str, None] = {}
    for t in record.trials:
        seeds.update(dict.fromkeys(t.values))
    head = [
        "trial",
        "state",
        "value",
        "std",
        *record.params,
        *(f"seed {s}" for s in seeds),
        "duration",
        "retry of",
        "error",
    ]
    best = record.best.number if record.best else None
    rows = []
    for t in record.trials:
        cells = [
            f'<td class="n">{t.number}</td>',
            f'<td><span class="state {escape(t.state)}">{escape(t.state)}</span></td>',
            f'<td class="n">{escape(_num(t.value))}</td>',
            f'<td class="n">{escape(_num(t.std, 3))}</td>',
            *(f"<td>{escape(_param_text(t.params[p]) if p in t.params else '-')}</td>" for p in record.params),
            *(f'<td class="n">{escape(_num(t.values.get(s)))}</td>' for s in seeds),
            f'<td class="n">{escape(_duration(t.duration_s))}</td>',
            f'<td class="n">{"-" if t.retry_of is None else t.retry_of}</td>',
            f"<td>{escape(t.error or '')}</td>",
        ]
        rows.append(f'<tr class="{"best" if t.number == best else ""}">{"".join(cells)}</tr>')
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    return f"<table><tr>{header}</tr>{''.join(rows)}</table>"


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


__all__ = [
    "NotASweepDir",
    "Pictures",
    "PlotsUnavailable",
    "SweepRecord",
    "SweepUnavailable",
    "TrialRow",
    "absent_reasons",
    "draw",
    "draw_seeds",
    "facts",
    "importance_reason",
    "is_sweep_dir",
    "read_sweep",
    "summary_text",
    "write_html",
    "write_plots",
]
