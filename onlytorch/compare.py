"""Several runs side by side (``onlytorch report RUN_DIR RUN_DIR ...``): one panel per loss or
metric with one curve per run, a table of every quantity's final and best value per run (the best
run of each row marked), and the differences between the runs' resolved specs.

:func:`read_runs` checks the directories (every one a run directory, none given twice, no sweep
directory among them: each problem names its directory) and reads them with
:func:`onlytorch.report.read_run`; :func:`table_text` and :func:`spec_differences` are the
terminal's parts; :func:`figures` draws the pictures (matplotlib, imported only there),
:func:`write_plots` saves them and :func:`write_html` writes one self-contained page.

Only ``onlytorch.report``'s public names are used: a comparison reads runs exactly as a run's own
report does, and finds the same final and best values."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import report
from .data.sources import counter_log_keys
from .report import Quantity, Run

if TYPE_CHECKING:  # annotations only: matplotlib is imported lazily, where pictures are drawn
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# The pictures, in the order the page shows them; a comparison writes those it has curves for.
PICTURES = ("compare-losses.png", "compare-metrics.png", "compare-optimizers.png")
HTML_NAME = "compare.html"
DEFAULT_OUT = "compare"  # relative to the current directory
DIFF_LINES_SHOWN = 40  # the terminal lists this many spec differences; the page lists them all
_GROUP_TITLES = {
    "loss": "losses",
    "rollout": "rollout (training episodes of a gym source)",
    "train": "train metrics",
    "eval": "eval metrics",
    "val": "val metrics",
    "test": "test metrics",
    "train_split": "train-split metrics",
}
_LINESTYLES = ("-", "--", ":", "-.")  # after ten runs the colours repeat: the line style tells them apart


class CompareError(report.ReportError):
    """Directories that cannot be compared (not a run directory, given twice, a sweep directory
    among runs); the message names each one."""


@dataclass
class Comparison:
    """The runs compared, in the order given. ``labels`` name them in tables and legends: the
    run's name (run.json), or its directory where two runs share a name. ``notes`` say what was
    skipped (each prefixed by the run's label)."""

    runs: list[Run]
    labels: list[str]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Row:
    """One quantity across the runs: ``cells[i]`` is run i's :class:`onlytorch.report.Quantity`
    (None when run i did not log it); ``best_final`` and ``best_best`` hold the indices of the
    runs whose final (best) value is the best of the row, empty when there is nothing to choose
    (no declared direction, fewer than two runs with the quantity, or all of them tie)."""

    name: str
    group: str
    mode: str | None
    cells: list[Quantity | None]
    best_final: frozenset[int]
    best_best: frozenset[int]


# ---------------------------------------------------------------- reading


def check_dirs(paths: Sequence[str | Path]) -> None:
    """Raise :class:`CompareError` naming every directory that cannot be compared: one given
    twice (also as another spelling or link of the same folder), a sweep directory (holding
    sweep.json: it has its own report), one that is not a run directory (no run.json)."""
    problems: list[str] = []
    seen: dict[str, str] = {}
    for text in map(str, paths):
        path = Path(text)
        key = os.path.realpath(path)
        if key in seen:
            same = "" if seen[key] == text else f" (as {seen[key]})"
            problems.append(f"{text} is given twice{same}: name each run once")
            continue
        seen[key] = text
        if (path / "sweep.json").is_file():
            problems.append(
                f"{text} is a sweep directory (it holds sweep.json): report it on its own "
                f"(onlytorch report {text}), or compare its trials' run directories"
            )
        elif not (path / "run.json").is_file():
            try:
                report.read_run(path)
            except report.NotARunDir as e:
                problems.append(str(e))
    if problems:
        raise CompareError("\n".join(problems))


def read_runs(paths: Sequence[str | Path]) -> Comparison:
    """Check the directories (:func:`check_dirs`) and read each run. Raises :class:`CompareError`
    for directories that cannot be compared, :class:`onlytorch.report.ReportError` for a broken
    run directory."""
    if len(paths) < 2:
        raise CompareError("a comparison needs two or more run directories")
    check_dirs(paths)
    runs = [report.read_run(p) for p in paths]
    labels = run_labels(runs)
    notes = [f"{label}: {note}" for run, label in zip(runs, labels) for note in run.notes]
    notes += [
        f"{label}: no readable spec.yaml in {run.path}: its spec is not compared"
        for run, label in zip(runs, labels)
        if flat_spec(run) is None
    ]
    return Comparison(runs=runs, labels=labels, notes=notes)


def run_labels(runs: Sequence[Run]) -> list[str]:
    """A distinct name per run: its name from run.json when no other run has that name, else its
    directory, with as many parent folders as it takes to tell the directories apart."""
    names = [str(run.info.get("name") or run.path.name) for run in runs]
    parts = [Path(os.path.abspath(run.path)).parts for run in runs]

    def directory(i: int) -> str:
        depth = 1
        while depth < len(parts[i]) and any(
            j != i and parts[j][-depth:] == parts[i][-depth:] for j in range(len(runs))
        ):
            depth += 1
        return "/".join(parts[i][-depth:])

    labels = [name if names.count(name) == 1 else directory(i) for i, name in enumerate(names)]
    if len(set(labels)) < len(labels):  # a name that is another run's directory: directories for all
        labels = [directory(i) for i in range(len(runs))]
    return labels


def output_folder(out: Path | None, cwd: Path) -> Path:
    """Where the comparison's pictures and page go: ``out`` as given, else ``DEFAULT_OUT`` in the
    current directory, unless that lies inside a run or sweep directory (which the user did not
    name), which is a :class:`CompareError` asking for ``--out``."""
    if out is not None:
        return out
    folder = cwd / DEFAULT_OUT
    for parent in (cwd, *cwd.parents):
        if (parent / "run.json").is_file() or (parent / "sweep.json").is_file():
            raise CompareError(
                f"the default output folder {folder} would be inside {parent}, a run or sweep directory: "
                "choose where the comparison goes with --out DIR"
            )
    return folder


# ---------------------------------------------------------------- the table


def rows(c: Comparison) -> list[Row]:
    """Every loss and metric any run logged (the quantities of its own report), grouped as there
    (losses, rollout, train metrics, evaluations), each with its value per run."""
    per_run = [{q.name: q for q in report.quantities(run)} for run in c.runs]
    order: dict[str, None] = {}
    group_rank: dict[str, int] = {}
    for found in per_run:
        for q in found.values():
            order.setdefault(q.name, None)
            group_rank.setdefault(q.group, len(group_rank))
    names = sorted(order, key=lambda n: group_rank[str(report.group_of(n))])
    out = []
    for name in names:
        cells = [found.get(name) for found in per_run]
        modes = {q.mode for q in cells if q is not None}
        mode = modes.pop() if len(modes) == 1 else None  # runs that disagree on the direction are not ranked
        out.append(
            Row(
                name=name,
                group=str(report.group_of(name)),
                mode=mode,
                cells=cells,
                best_final=_winners([None if q is None else q.final for q in cells], mode),
                best_best=_winners([None if q is None else q.best for q in cells], mode),
            )
        )
    return out


def _winners(values: list[float | None], mode: str | None) -> frozenset[int]:
    present = [i for i, v in enumerate(values) if v is not None]
    finite = {i: v for i, v in enumerate(values) if v is not None and math.isfinite(v)}
    if mode is None or len(present) < 2 or not finite:
        return frozenset()
    best = min(finite.values()) if mode == "min" else max(finite.values())
    winners = frozenset(i for i, v in finite.items() if v == best)
    return frozenset() if len(winners) == len(present) else winners


def cell_texts(row: Row, i: int) -> tuple[str, str]:
    """Run i's final and best value of the row as text; the best is followed by ``@STEP``, and a
    value that is the best of the row by ``*``."""
    q = row.cells[i]
    if q is None:
        return "-", "-"
    final = report.num(q.final) + ("*" if i in row.best_final else "")
    best = "-" if q.best is None else f"{report.num(q.best)} @{q.best_step}" + ("*" if i in row.best_best else "")
    return final, best


def runs_text(c: Comparison) -> str:
    """One line per run: its label, directory, status, steps, seed and wall time."""
    cells = []
    for run, label in zip(c.runs, c.labels):
        facts = dict(report.facts(run))
        cells.append(
            [label, str(run.path), facts.get("status", "?"), f"steps {facts.get('steps', '?')}"]
            + [f"seed {run.info['seed']}" if "seed" in run.info else "seed ?", facts.get("wall time", "?")]
        )
    widths = [max(len(row[k]) for row in cells) for k in range(len(cells[0]))]
    return "\n".join("  " + "  ".join(f"{v:<{w}}" for v, w in zip(row, widths)).rstrip() for row in cells)


def table_text(c: Comparison) -> str:
    """The terminal table: a row per quantity, a final and a best column per run."""
    table = rows(c)
    if not table:
        return "no quantities logged yet in any of the runs"
    lines: list[list[str]] = [["quantity"] + [h for _ in c.labels for h in ("final", "best")]]
    kinds: list[str] = ["head"]
    group = None
    for row in table:
        if row.group != group:
            group = row.group
            lines.append([_GROUP_TITLES.get(group, group)])
            kinds.append("group")
        lines.append([f"  {row.name}"] + [t for i in range(len(c.runs)) for t in cell_texts(row, i)])
        kinds.append("row")
    cols = len(lines[0])
    widths = [max(len(line[k]) for line, kind in zip(lines, kinds) if kind != "group") for k in range(cols)]
    for k in range(1, cols, 2):  # a run's label spans its two columns
        span = widths[k] + 2 + widths[k + 1]
        if len(c.labels[k // 2]) + 2 > span:  # room for the label and a rule
            widths[k + 1] += len(c.labels[k // 2]) + 2 - span
    spans = [(label, widths[k] + 2 + widths[k + 1]) for label, k in zip(c.labels, range(1, cols, 2))]
    out = [" " * widths[0] + "".join(f"  {label} {'-' * (span - len(label) - 1)}" for label, span in spans)]
    for line, kind in zip(lines, kinds):
        if kind == "group":
            out.append(line[0])
            continue
        out.append(
            "  ".join([f"{line[0]:<{widths[0]}}", *(f"{v:>{w}}" for v, w in zip(line[1:], widths[1:]))]).rstrip()
        )
    out.append("(* the best of the runs in that column; best: the best value logged @ its step)")
    return "\n".join(out)


# ---------------------------------------------------------------- spec differences


def flat_spec(run: Run) -> dict[str, str] | None:
    """The run's resolved spec (spec.yaml) as dotted keys (``optimizers.opt.lr``) with the values
    as text, ``seed`` being run.json's; None when the run has no readable spec.yaml."""
    import yaml

    from .tracking.hub import flatten_spec

    if run.spec_text is None:
        return None
    try:
        spec = yaml.safe_load(run.spec_text)
    except yaml.YAMLError:
        return None
    if not isinstance(spec, dict):
        return None
    flat = {k: _value_text(v) for k, v in flatten_spec(spec).items()}
    if "seed" in run.info:  # the seed the run used (--seed wins over the spec's)
        flat["seed"] = _value_text(run.info["seed"])
    return flat


def _value_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def spec_differences(c: Comparison) -> list[tuple[str, list[str]]]:
    """The keys of the resolved specs (and the seed) whose values differ between the runs, in the
    order of the specs, with each run's value (``(absent)`` where its spec has no such key, ``?``
    for a run without a readable spec.yaml, which :func:`read_runs` notes)."""
    flats = [flat_spec(run) for run in c.runs]
    known = [f for f in flats if f is not None]
    keys: dict[str, None] = {}
    for flat in known:
        keys.update(dict.fromkeys(flat))
    out = []
    for key in keys:
        if len({flat.get(key) for flat in known}) > 1:
            out.append((key, ["?" if flat is None else flat.get(key, "(absent)") for flat in flats]))
    return out


def differences_text(differences: list[tuple[str, list[str]]], limit: int = DIFF_LINES_SHOWN) -> str:
    """``key: value | value | ...`` per difference, at most ``limit`` lines (then how many more)."""
    if not differences:
        return "  none: the resolved specs and seeds are the same"
    lines = [f"  {key}: {' | '.join(values)}" for key, values in differences[:limit]]
    if len(differences) > limit:
        lines.append(f"  ... and {len(differences) - limit} more (the HTML page lists them all)")
    return "\n".join(lines)


# ---------------------------------------------------------------- pictures (matplotlib, lazily)


def panels(c: Comparison) -> dict[str, list[str]]:
    """The quantities each picture has a panel for, by file name: losses; metrics (train metrics,
    evaluations, rollout statistics but not the episode counters); gradient norms and learning
    rates that change. A quantity gets a panel when some run logged it at two steps or more
    (one point per run stays in the table)."""
    losses: dict[str, None] = {}
    metrics: dict[str, None] = {}
    optim: dict[str, None] = {}
    counters = counter_log_keys()
    for run in c.runs:
        for q in report.quantities(run):
            if q.name not in counters and q.group not in ("lr", "grad_norm"):
                (losses if q.group == "loss" else metrics).setdefault(q.name, None)
        optim.update(dict.fromkeys(report.names_in(run, "grad_norm", "lr")))
    wanted = {PICTURES[0]: list(losses), PICTURES[1]: list(metrics), PICTURES[2]: list(optim)}
    return {
        name: [q for q in members if _drawable(c, q)]
        for name, members in wanted.items()
        if any(_drawable(c, q) for q in members)
    }


def _drawable(c: Comparison, name: str) -> bool:
    """Logged at two steps or more by some run; a learning rate only where some run changes it."""
    for run in c.runs:
        values = report.series(run, name)[1]
        if values.size >= 2 and (report.group_of(name) != "lr" or np.unique(values).size > 1):
            return True
    return False


def figures(c: Comparison) -> list[tuple[str, Figure]]:
    """The pictures as (file name, matplotlib Figure): one panel per quantity of :func:`panels`,
    one curve per run (x = step; colour per run, the same in every picture; legend = the run's
    label). Raises :class:`onlytorch.report.PlotsUnavailable` without matplotlib."""
    report.require_matplotlib()
    titles = {
        PICTURES[0]: "losses per phase",
        PICTURES[1]: "metrics",
        PICTURES[2]: "gradient norms and learning rates",
    }
    return [(name, _draw(c, titles[name], names)) for name, names in panels(c).items()]


def run_style(i: int) -> dict[str, Any]:
    """Run i's colour and line style, the same in every picture."""
    return {"color": f"C{i % 10}", "linestyle": _LINESTYLES[(i // 10) % len(_LINESTYLES)]}


def _draw(c: Comparison, title: str, names: list[str]) -> Figure:
    from matplotlib.lines import Line2D

    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    width = 7.5 if len(names) == 1 else 4.3 * ncols + 0.4
    fig = report.new_figure(width, 3.3 * nrows + 1.0)
    fig.suptitle(f"{title}: {', '.join(c.labels)}", fontsize=12)
    for k, name in enumerate(names):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        _draw_panel(ax, c, name)
    handles = [Line2D([], [], linewidth=2, label=label, **run_style(i)) for i, label in enumerate(c.labels)]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5), fontsize=9)
    return fig


def _draw_panel(ax: Axes, c: Comparison, name: str) -> None:
    """One curve per run that logged ``name``: the raw values (non-finite ones left as gaps), or
    over more than report.canvas.SMOOTH_ABOVE points a moving average over the faint raw line."""
    everything, later = [], []
    drawn: list[tuple[str, np.ndarray, np.ndarray]] = []
    same: dict[str, list[str]] = {}  # a run's label -> the later runs whose curve is exactly its own
    for i, (run, label) in enumerate(zip(c.runs, c.labels)):
        steps, values = report.series(run, name)
        if values.size == 0:
            continue
        twin = next(
            (a for a, s, v in drawn if np.array_equal(s, steps) and np.array_equal(v, values, equal_nan=True)), None
        )
        if twin is not None:
            same.setdefault(twin, [twin]).append(label)
        drawn.append((label, steps, values))
        later.append(report.canvas.later_values(steps, values))
        shown = report.canvas.plottable(values)
        style = run_style(i)
        average = report.canvas.moving_average(values)
        if average is not None:
            ax.plot(steps, shown, alpha=0.25, linewidth=0.8, label=f"_{label} (raw)", gid=f"raw:{label}", **style)
            ax.plot(
                steps,
                average,
                linewidth=1.8,
                label=label,
                gid=f"smoothed:{label}",
                **style,
            )
        else:
            marker = "o" if values.size == 1 else "." if values.size < 30 else None
            ax.plot(steps, shown, linewidth=1.6, marker=marker, label=label, gid=f"raw:{label}", **style)
        everything.append(values)
    values = np.concatenate(everything) if everything else np.zeros(0)
    hint = {"min": " (lower is better)", "max": " (higher is better)"}.get(str(_direction(c, name)), "")
    # a curve drawn exactly over another one would hide it: the title says whose they are
    identical = "".join(f"\nthe same values: {' = '.join(labels)}" for labels in same.values())
    ax.set_title(f"{name}{hint}{identical}", fontsize=10)
    ax.set_xlabel("step")
    if report.use_log_scale(values):
        ax.set_yscale("log")
        ax.set_ylabel("log scale")
    else:
        report.canvas.cut_early_transient(ax, values, np.concatenate(later) if later else values)
    ax.grid(True, alpha=0.3)


def _direction(c: Comparison, name: str) -> str | None:
    """The direction the runs that logged ``name`` declare for it, when they agree."""
    if report.group_of(name) in ("lr", "grad_norm"):
        return None
    modes = {report.direction_of(run, name) for run in c.runs if report.series(run, name)[0].size}
    return modes.pop() if len(modes) == 1 else None


def write_plots(c: Comparison, out_dir: str | Path) -> list[Path]:
    """Save the pictures of :func:`figures` into ``out_dir`` (made if missing) and return their
    paths. A picture of :data:`PICTURES` this comparison has no curves for is removed from
    ``out_dir``, so that the folder never mixes two comparisons."""
    return report.save_figures(figures(c), out_dir, PICTURES)


# ---------------------------------------------------------------- HTML

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { padding: 0.25em 0.7em; text-align: left; vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; } td.best { font-weight: bold; background: #e3f3e3; }
tr.group td { font-weight: bold; background: #f3f3f3; } th { border-bottom: 2px solid #ccc; }
.notes { background: #fff8e0; border-left: 4px solid #e0b000; padding: 0.5em 1em; }
figure { margin: 1em 0; } img { max-width: 100%; border: 1px solid #eee; } code { font-size: 0.95em; }
"""


def write_html(c: Comparison, pictures: list[Path], path: str | Path) -> Path:
    """Write one self-contained page (inline CSS, the pictures embedded as base64 PNG, every text
    from the run directories escaped): the runs, the table, the spec differences (all of them),
    the pictures. Returns its path."""
    differences = spec_differences(c)
    body = [
        f"<h1>Comparison of {len(c.runs)} runs</h1>",
        report.html_notes(c.notes),
        "<h2>Runs</h2>",
        _html_runs(c),
        "<h2>Final and best values</h2>",
        "<p>Best: the best value a run logged, at its step. The best of the runs is highlighted (only "
        "for quantities whose direction is declared).</p>",
        _html_table(c),
        "<h2>Spec differences</h2>",
        "<p>Keys of the resolved specs (spec.yaml) whose values differ, and the seed each run used (run.json).</p>",
        _html_differences(c, differences),
        report.html_pictures(pictures),
    ]
    return report.write_page(path, f"onlytorch comparison: {', '.join(c.labels)}", _CSS, body)


def _html_runs(c: Comparison) -> str:
    head = "<tr><th>run</th><th>directory</th><th>spec</th><th>status</th><th>steps</th><th>seed</th><th>wall time</th></tr>"
    body = []
    for run, label in zip(c.runs, c.labels):
        facts = dict(report.facts(run))
        cells = [label, run.path, facts.get("spec", "?"), facts.get("status", "?"), facts.get("steps", "?")]
        cells += [run.info.get("seed", "?"), facts.get("wall time", "?")]
        body.append("<tr>" + "".join(f"<td>{report.escape(v)}</td>" for v in cells) + "</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _html_table(c: Comparison) -> str:
    table = rows(c)
    if not table:
        return "<p>no quantities logged yet in any of the runs</p>"
    head1 = "<tr><th></th>" + "".join(f'<th colspan="2">{report.escape(label)}</th>' for label in c.labels) + "</tr>"
    head2 = "<tr><th>quantity</th>" + '<th class="n">final</th><th class="n">best</th>' * len(c.labels) + "</tr>"
    body, group = [], None
    for row in table:
        if row.group != group:
            group = row.group
            body.append(
                f'<tr class="group"><td colspan="{1 + 2 * len(c.labels)}">{report.escape(_GROUP_TITLES.get(group, group))}</td></tr>'
            )
        cells = [f"<td>{report.escape(row.name)}</td>"]
        for i in range(len(c.runs)):
            final, best = cell_texts(row, i)
            for text, marked in ((final, i in row.best_final), (best, i in row.best_best)):
                cells.append(f'<td class="n{" best" if marked else ""}">{report.escape(text)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="q">{head1}{head2}{"".join(body)}</table>'


def _html_differences(c: Comparison, differences: list[tuple[str, list[str]]]) -> str:
    if not differences:
        return "<p>none: the resolved specs and seeds are the same</p>"
    head = "<tr><th>key</th>" + "".join(f"<th>{report.escape(label)}</th>" for label in c.labels) + "</tr>"
    body = "".join(
        f"<tr><td><code>{report.escape(key)}</code></td>"
        + "".join(f"<td><code>{report.escape(v)}</code></td>" for v in values)
        + "</tr>"
        for key, values in differences
    )
    return f"<table>{head}{body}</table>"
