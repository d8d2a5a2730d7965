"""The run's facts and the terminal summary: an aligned table of every quantity's final and best
value, grouped (losses, train metrics, evaluations), with what the pictures leave out."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..data.sources import LIVE_LOG_PREFIX
from .panels import constant_value, is_curve, is_weighted, undrawn
from .quantities import is_number, names_in, quantities, series
from .reading import Run

_GROUP_TITLES = {
    "loss": "losses",
    LIVE_LOG_PREFIX: f"{LIVE_LOG_PREFIX} (training episodes of a gym source)",
    "train": "train metrics",
    "eval": "eval metrics",
    "val": "val metrics (evaluations that choose best.npz)",
    "test": "test metrics (evaluations that choose best.npz)",
    "train_split": "train-split metrics (evaluations that choose best.npz)",
}
HEADER = ["quantity", "final", "step", "best", "step"]


def facts(run: Run) -> list[tuple[str, str]]:
    """The run's headline facts as (label, text) pairs, for the terminal and the HTML page."""
    info = run.info
    out = [("run", f"{info.get('name', run.path.name)}"), ("directory", str(run.path)), ("status", _status_text(run))]
    out.append(("steps", _steps_text(run)))
    out.append(("wall time", duration(info.get("wall_time"))))
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
    out.extend(_curve_facts(run))
    return out


def _curve_facts(run: Run) -> list[tuple[str, str]]:
    """What the pictures do not show: a constant learning rate or gradient norm (its value), the
    range of the others, and the quantities logged once."""
    out = []
    for group, label in (("lr", "learning rate"), ("grad_norm", "gradient norm")):
        texts = [_optimizer_text(run, name) for name in names_in(run, group)]
        if texts:
            out.append((label, "; ".join(texts)))
    single = undrawn(run)
    if single:
        out.append(("not in the pictures", f"{', '.join(single)} (a single value each: see the table)"))
    return out


def _optimizer_text(run: Run, name: str) -> str:
    optimizer = name.partition("/")[2]
    constant = constant_value(run, name)
    steps, values = series(run, name)
    if constant is not None:
        return f"{optimizer} constant at {num(constant)}"
    finite = np.isfinite(values)
    if not is_curve(run, name):
        return f"{optimizer} {num(values[-1])}"
    if name.startswith("lr/"):
        return f"{optimizer} from {num(values[finite][0])} to {num(values[finite][-1])}"
    top = int(np.where(finite, values, -np.inf).argmax())
    return f"{optimizer} last {num(values[-1])}, max {num(values[top])} at step {steps[top]}"


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
    if is_number(done) and is_number(total) and total > 0:
        text += f" ({100 * done / total:.0f}%)"
    if run.rows and run.rows[-1]["step"] != done:
        text += f", last logged step {run.rows[-1]['step']}"
    return text


def _best_text(best: Any) -> str:
    if not isinstance(best, dict):
        return "none"
    what = f"{best.get('metric', '?')} = {num(best.get('value'))}"
    if best.get("split") is not None or best.get("mode") is not None:
        mode = {"min": "lowest", "max": "highest"}.get(str(best.get("mode")), "?")
        what = f"{mode} {best.get('metric', '?')} on {best.get('split', '?')} = {num(best.get('value'))}"
    return f"{best.get('checkpoint', '?')} (step {best.get('step', '?')}, {what})"


def duration(seconds: Any) -> str:
    """A wall time for people: milliseconds under a second (a short run is not "0.0 s"), seconds
    with one decimal under a minute, then minutes and hours."""
    if not is_number(seconds) or not math.isfinite(seconds) or seconds < 0:
        return "?"
    if seconds < 0.9995:  # rounds to below 1000 ms
        return f"{seconds * 1000:.3g} ms"
    if seconds < 59.95:
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


def num(value: Any) -> str:
    """A table cell: a number to 5 significant digits, "-" for none."""
    return f"{value:.5g}" if is_number(value) else "-" if value is None else str(value)


def quantity_rows(run: Run) -> list[list[str]]:
    """The quantity table as text cells: quantity, final, step, best, step."""
    return [[q.name, num(q.final), str(q.final_step), num(q.best), num(q.best_step)] for q in quantities(run)]


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
    cells = [HEADER] + [[f"  {row[0]}", *row[1:]] for row in quantity_rows(run)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    lines.append("")
    lines.append(_align(HEADER, widths))
    group = None
    for q, row in zip(qs, cells[1:]):
        if q.group != group:
            group = q.group
            lines.append(group_title(run, group))
        lines.append(_align(row, widths))
    return "\n".join(lines)


def group_title(run: Run, group: str) -> str:
    """The heading of a group of the quantity table."""
    split = run.info.get("eval_split")
    if group == "eval" and isinstance(split, str):
        return f"eval metrics (on {split})"
    if group == "loss" and any(is_weighted(n) for n in names_in(run, "loss")):
        return "losses (PHASE/LOSS: raw, as the spec defines it; PHASE/LOSS:weighted: times the backward's weight)"
    return _GROUP_TITLES[group]


def _align(cells: list[str], widths: list[int]) -> str:
    first = f"{cells[0]:<{widths[0]}}"
    return "  ".join([first, *(f"{c:>{w}}" for c, w in zip(cells[1:], widths[1:]))]).rstrip()
