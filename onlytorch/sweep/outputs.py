"""The sweep directory's tables, derived from the study (the single record): ``trials.csv`` (one
row per trial), ``sweep.json`` (the sweep, its counts and its best trial) and ``best.yaml`` (the
base spec with the best trial's overrides applied, a spec that ``onlytorch train`` runs as is).
Each is replaced atomically, so that a reader never sees half a file."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import pathlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from .load import Sweep

TRIALS_CSV, BEST_YAML = "trials.csv", "best.yaml"
STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}


def state_of(trial: FrozenTrial) -> str:
    return STATES.get(trial.state.name, trial.state.name.lower())


def counts(trials: list[FrozenTrial]) -> dict[str, int]:
    out = dict.fromkeys(STATES.values(), 0)
    for t in trials:
        out[state_of(t)] = out.get(state_of(t), 0) + 1
    return out


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def params_of(sweep: Sweep, trial: FrozenTrial) -> dict[str, Any]:
    """The trial's parameter values by dotted path (choices decoded back to their values)."""
    from . import space

    stored = dict(trial.params) or dict(trial.system_attrs.get("fixed_params") or {})  # a queued retry's
    try:
        return space.decode(sweep.params, stored) if stored else {}
    except (KeyError, ValueError):  # a trial of the study that is not this sweep's (asked by hand)
        return {}


def best_trial(sweep: Sweep, trials: list[FrozenTrial]) -> FrozenTrial | None:
    """The complete trial with the best value (the earliest of equals)."""
    best: FrozenTrial | None = None
    for t in trials:
        if state_of(t) != "complete" or t.value is None or not math.isfinite(t.value):
            continue
        if best is None or (t.value > best.value if sweep.direction == "maximize" else t.value < best.value):  # type: ignore[operator]
            best = t
    return best


def best_record(sweep: Sweep, trial: FrozenTrial | None) -> dict[str, Any] | None:
    if trial is None:
        return None
    a = trial.user_attrs
    return {
        "number": trial.number,
        "params": params_of(sweep, trial),
        "value": trial.value,
        "std": a.get("std"),
        "values": a.get("values", {}),
        "seeds": a.get("seeds", list(sweep.seeds)),
        "run_dirs": a.get("run_dirs", []),
    }


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return value


def trials_table(sweep: Sweep, trials: list[FrozenTrial]) -> str:
    """trials.csv: number, state, value, std, one column per parameter, one per seed, duration_s,
    retry_of, error."""
    paths = [p.path for p in sweep.params]
    seeds = [f"seed_{s}" for s in sweep.seeds]
    columns = ["number", "state", "value", "std", *paths, *seeds, "duration_s", "retry_of", "error"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for t in sorted(trials, key=lambda t: t.number):
        a = t.user_attrs
        values = a.get("values") or {}
        params = params_of(sweep, t)
        row = [t.number, state_of(t), t.value if state_of(t) == "complete" else None, a.get("std")]
        row += [params.get(p) for p in paths]
        row += [values.get(str(s)) for s in sweep.seeds]
        row += [a.get("duration_s"), a.get("retry_of"), a.get("error")]
        writer.writerow([_cell(v) for v in row])
    return buf.getvalue()


def sweep_record(
    sweep: Sweep, storage: str | None, trials_requested: int, spec_hash: str | None = None
) -> dict[str, Any]:
    """sweep.json's description of the sweep (what the counts, best and status are added to)."""
    from .record import identity_json
    from .study import storage_record

    return {
        "name": sweep.name,
        "study_name": sweep.name,
        "storage": storage_record(storage),
        "sweep_file": str(sweep.file),
        "spec": str(sweep.spec),
        "spec_hash": spec_hash,  # of the base spec as every trial starts from it (run.json's spec_hash)
        "sha256": sweep.sha256,
        "identity": identity_json(sweep.identity()),
        "metric": sweep.metric,
        "split": sweep.split,
        "mode": sweep.mode,
        "direction": sweep.direction,
        "objective": sweep.objective,
        "trials_requested": trials_requested,
        "max_failures": sweep.max_failures,
    }


def write_json(sweep_dir: pathlib.Path, info: dict[str, Any]) -> None:
    from ..rundir import write_text_atomic
    from .record import SWEEP_JSON

    info = {**info, "updated": _now()}
    write_text_atomic(sweep_dir / SWEEP_JSON, json.dumps(info, indent=2, default=str) + "\n")


def write_outputs(
    sweep_dir: pathlib.Path, study: optuna.Study, sweep: Sweep, status: str, with_best: bool = True
) -> dict[str, Any]:
    """Rewrite trials.csv, sweep.json (with ``status``) and, with ``with_best`` and when the best
    trial changed, best.yaml, from the study. Call under the directory's lock. Returns sweep.json's
    content."""
    from ..rundir import write_text_atomic
    from .record import read_info

    trials = study.get_trials(deepcopy=False)
    write_text_atomic(sweep_dir / TRIALS_CSV, trials_table(sweep, trials))
    info = read_info(sweep_dir)
    best = best_trial(sweep, trials)
    info.update(counts=counts(trials), best=best_record(sweep, best), status=status)
    if with_best and best is not None and not _holds(sweep_dir / BEST_YAML, best.number):
        write_text_atomic(sweep_dir / BEST_YAML, best_yaml(sweep, sweep_dir, best))
    write_json(sweep_dir, info)
    return info


def _holds(path: pathlib.Path, number: int) -> bool:
    """Whether best.yaml is that of trial ``number`` (its header names the trial)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return f": trial {number},\n" in fh.readline()
    except OSError:
        return False


def _anchored(resolved: dict[str, Any], folder: pathlib.Path) -> dict[str, Any]:
    """The resolved spec with the relative paths it reads (data files, init checkpoints), which
    resolve from the base spec's folder, made absolute: best.yaml lives in another folder."""

    def fix(entry: Any, key: str) -> None:
        if isinstance(entry, dict) and isinstance(entry.get(key), str):
            p = pathlib.Path(entry[key])
            if not p.is_absolute() and not entry[key].startswith("~"):
                entry[key] = str(folder / p)

    data = resolved.get("data")
    if isinstance(data, dict):
        for entry in data.values():
            fix(entry, "path")
    inits = resolved.get("init")
    for entry in inits if isinstance(inits, list) else [inits]:
        fix(entry, "checkpoint")
    return resolved


def _outside_paths(data: Any, folder: pathlib.Path) -> list[str]:
    """The file paths of a resolved spec (data files, init checkpoints) that lie outside ``folder``."""
    found: list[str] = []
    if isinstance(data, dict):
        for k, v in data.items():
            if k in ("path", "checkpoint") and isinstance(v, str) and pathlib.Path(v).is_absolute():
                if not pathlib.Path(v).resolve().is_relative_to(folder.resolve()):
                    found.append(v)
            else:
                found += _outside_paths(v, folder)
    elif isinstance(data, list):
        for v in data:
            found += _outside_paths(v, folder)
    return found


def best_yaml(sweep: Sweep, sweep_dir: pathlib.Path, trial: FrozenTrial) -> str:
    """The base spec with the sweep's fixed overrides and the best trial's parameters applied,
    resolved as a run directory's spec.yaml is (every data path absolute), under a header that
    says where it comes from."""
    import yaml

    from ..app import load_spec
    from ..run import resolved_spec
    from . import space

    params = params_of(sweep, trial)
    overrides = [*sweep.fixed, *space.as_overrides(params)]
    resolved = _anchored(resolved_spec(load_spec(sweep.spec, overrides=overrides).compiled), sweep.spec.parent)
    a = trial.user_attrs
    values = a.get("values") or {}
    per_seed = ", ".join(f"{s}: {v:.6g}" for s, v in values.items())
    lines = [
        f"# The best trial of the sweep {sweep.name} ({sweep.file}): trial {trial.number},",
        f"# {sweep.metric} ({sweep.objective}, {sweep.mode}) {trial.value:.6g} over seeds ({per_seed}),"
        f" std {float(a.get('std') or 0.0):.3g}.",
        f"# The base spec {sweep.spec} with these overrides applied:",
        *[f"#   {o}" for o in overrides],
    ]
    if outside := _outside_paths(resolved, sweep_dir):
        lines.append(f"# Its files lie outside this folder ({', '.join(outside[:3])}): train it with --allow-outside.")
    lines.append(f"# Train it with: onlytorch train {BEST_YAML}")
    return "\n".join(lines) + "\n" + yaml.safe_dump(resolved, sort_keys=False)
