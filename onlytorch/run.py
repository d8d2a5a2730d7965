"""A training run on disk: the run directory, its metrics log, checkpoints and summary.

```
RUN_DIR/
  spec.yaml        the resolved spec (after --set overrides)
  run.json         versions, seed, spec hash, status, steps, final metrics, best checkpoint
  metrics.jsonl    one JSON object per logged step ({"step", "kind": "train"|"eval", ...})
  metrics.csv      the same rows as a table
  checkpoints/     last.npz (written atomically), best.npz (chosen by train.monitor, see monitor.py)
  samples.npz      generated samples of a 2-D generator (eval.samples), for the report
```
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import pathlib
import platform
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import yaml

from . import checkpoint as ckpt
from . import metrics_log, monitor
from ._version import __version__
from .metrics_log import Record
from .rundir import NO_SPACE, overwrite_in_place, remove_stale_temporaries, write_text_atomic

if TYPE_CHECKING:
    from .compile import Compiled

# run.json's statuses (docs/runs.md) are "running" while the run goes, then how it ended:
# completed, early_stopped, failed, diverged or interrupted. These two ended as the spec says (exit 0).
SUCCEEDED = ("completed", "early_stopped")

# Keys that may change between a run and its resume without changing what it computes.
RESUMABLE_CHANGES = (
    "train.steps",
    "train.epochs",
    "train.log_every",
    "train.log_train",
    "train.eval_every",
    "train.checkpoint_every",
    # where the metrics are mirrored (spec/logging_spec.py)
    "logging.tensorboard",
    "logging.mlflow.tracking_uri",
    "logging.mlflow.experiment",
    "logging.mlflow.run_name",
)


def resolved_spec(compiled: Compiled) -> dict[str, Any]:
    return compiled.spec.model_dump(mode="json", by_alias=True, exclude_none=True)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(data, list):
        out = {}
        for i, v in enumerate(data):
            out.update(_flatten(v, f"{prefix}.{i}"))
        return out or {prefix: []}
    return {prefix: data}


def spec_hash(resolved: dict[str, Any]) -> str:
    flat = {k: v for k, v in _flatten(resolved).items() if k not in RESUMABLE_CHANGES}
    return hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()[:16]


def spec_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two resolved specs (dotted keys), ignoring RESUMABLE_CHANGES."""
    a, b = _flatten(old), _flatten(new)
    changes = []
    for key in sorted(set(a) | set(b)):
        if key in RESUMABLE_CHANGES or a.get(key) == b.get(key):
            continue
        changes.append(f"{key}: {a.get(key, '(absent)')!r} -> {b.get(key, '(absent)')!r}")
    return changes


class TrainingState(Protocol):
    """What a run directory needs of the training it records (onlytorch.train.Trainer is one): the
    step reached, the steps in all, and the state a checkpoint holds."""

    step: int

    def total_steps(self) -> int: ...

    def state(self) -> dict[str, np.ndarray]: ...


class Run:
    """Writes a run directory while a training (a ``TrainingState``) runs: its files, run.json, the
    metrics log and the checkpoints, best.npz included."""

    def __init__(
        self, path: pathlib.Path, compiled: Compiled, trainer: TrainingState, spec_file: str, overrides: list[str]
    ) -> None:
        self.path = path
        self.c = compiled
        self.trainer = trainer
        self.resolved = resolved_spec(compiled)
        self.hash = spec_hash(self.resolved)
        self.info: dict[str, Any] = {
            "name": compiled.spec.name,
            "spec_file": spec_file,
            "spec_hash": self.hash,
            "seed": compiled.spec.seed,
            "status": "running",
            "message": None,
            "steps_done": 0,
            "total_steps": trainer.total_steps(),
            "started": _now(),
            "finished": None,
            "wall_time": 0.0,
            "versions": {"python": platform.python_version(), "numpy": np.__version__, "onlytorch": __version__},
            "overrides": overrides,
            "final": {},
            "best": None,
            "eval_split": compiled.spec.eval.split if compiled.spec.eval else None,
            # what chooses best.npz, and every quantity's declared direction (for the report)
            "monitor": m.to_json() if (m := monitor.resolve(compiled.spec)) is not None else None,
            "directions": monitor.directions(compiled.spec),
        }
        self.rows: list[dict[str, Any]] = []
        # called with every row once it is in the log (the experiment trackers: onlytorch/tracking/)
        self.row_listeners: list[Callable[[dict[str, Any]], None]] = []
        # The columns metrics.csv was last written with (None: not written by this process yet).
        self._csv_columns: list[str] | None = None
        self._csv_known: dict[str, None] = {}
        self.t0 = time.perf_counter()
        self.elapsed_before = 0.0

    # -------------------------------------------------------------- files

    @property
    def last_checkpoint(self) -> pathlib.Path:
        return self.path / "checkpoints" / "last.npz"

    def start(self, resume: bool) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.path)
        if resume:
            try:
                old = json.loads((self.path / "run.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                old = {}  # lost or cut short: the checkpoint and the metrics log still hold the run
            self.info["started"] = old.get("started", self.info["started"])
            self.info["best"] = old.get("best")
            self.elapsed_before = float(old.get("wall_time", 0.0))
            # the log as of the checkpoint continued from (see metrics_log: a kill never tears it)
            self.rows = metrics_log.cut_to(self.path, self.trainer.step)
            self._write_csv()  # rebuilt from the log: a kill may have torn the table's last line
        else:
            # a fresh start in a directory whose run stopped before its first checkpoint (the only
            # kind the CLI starts afresh in): nothing of it may mix into this run
            for name in ("metrics.jsonl", "metrics.csv", "samples.npz", "checkpoints/best.npz"):
                (self.path / name).unlink(missing_ok=True)
        write_text_atomic(self.path / "spec.yaml", yaml.safe_dump(self.resolved, sort_keys=False))
        write_text_atomic(self.path / "spec.json", json.dumps(self.resolved, indent=1))
        self.write_info()

    def write_info(self, last_resort: bool = False) -> None:
        """Write run.json atomically. With ``last_resort`` (a final status) and a full disk, write
        it compactly over the old file's own blocks rather than leave a stale status behind."""
        self.info["steps_done"] = self.trainer.step
        self.info["wall_time"] = self.elapsed_before + (time.perf_counter() - self.t0)
        try:
            write_text_atomic(self.path / "run.json", json.dumps(self.info, indent=2))
        except OSError as e:
            compact = json.dumps(self.info, separators=(",", ":"))
            if not (last_resort and e.errno in NO_SPACE and overwrite_in_place(self.path / "run.json", compact)):
                raise

    def log(self, kind: str, record: Record) -> None:
        row = {"step": record.step, "kind": kind, **record.values}
        self.rows.append(row)
        metrics_log.append_line(self.path / metrics_log.LOG, metrics_log.row_line(row))
        if self._csv_columns is not None and all(k in self._csv_known for k in row):
            # The header already has every column: append (rewriting would make a run quadratic).
            line = metrics_log.table_text(self._csv_columns, [row], header=False)
            metrics_log.append_line(self.path / metrics_log.TABLE, line)
        else:
            self._write_csv()
        for listener in self.row_listeners:
            listener(row)

    def _write_csv(self) -> None:
        """The whole table (replaced atomically), with a column for every key any row has."""
        columns = metrics_log.write_table(self.path, self.rows)
        self._csv_columns, self._csv_known = columns, dict.fromkeys(columns)

    def checkpoint(self, name: str = "last") -> pathlib.Path:
        state = self.trainer.state()
        state["meta/spec_hash"] = np.array(self.hash)
        return ckpt.save(self.path / "checkpoints" / f"{name}.npz", state)

    # -------------------------------------------------------------- evaluations and best.npz

    def record_best(self, step: int, m: monitor.Monitor | None, selection: dict[str, float]) -> None:
        """When ``selection`` holds the best value of the monitored quantity so far, write best.npz
        and run.json's record of it."""
        if m is not None and self._track_best(step, m, selection):
            self.write_info()

    def record_evaluation(
        self,
        step: int,
        row: dict[str, float],
        m: monitor.Monitor | None = None,
        selection: dict[str, float] | None = None,
    ) -> None:
        """Log an evaluation's row; first, given the monitor and the values it chooses by, record
        best.npz (``record_best``)."""
        # best.npz and run.json's record of it are on disk before the row that chose them: a resume
        # that finds the row skips this evaluation, so what the row implies must already hold.
        if selection is not None:
            self.record_best(step, m, selection)
        if row:
            self.log("eval", Record(step, row))

    def _track_best(self, step: int, m: monitor.Monitor, values: dict[str, float]) -> bool:
        """Writes best.npz when this evaluation is the best so far; says whether it did."""
        value = values.get(m.metric)
        if value is None or not math.isfinite(value):
            return False  # a NaN is never the best
        best = self.info.get("best")
        # a record of another quantity, split or direction (a resume with --force after the monitor
        # changed) says nothing about this one
        same = isinstance(best, dict) and all(best.get(k) == v for k, v in m.to_json().items())
        so_far = best.get("value") if same and isinstance(best, dict) else None
        if not m.better(value, so_far):
            return False
        path = self.checkpoint("best")
        self.info["best"] = {
            "checkpoint": str(path.relative_to(self.path)),
            "step": step,
            **m.to_json(),
            "value": value,
        }
        return True

    def finish(self, status: str, message: str | None = None) -> None:
        self.info["status"] = status
        self.info["message"] = message
        self.info["finished"] = _now()
        final: dict[str, float] = {}
        for row in self.rows:
            final.update(
                {k: v for k, v in row.items() if k not in ("step", "kind", "time") and isinstance(v, (int, float))}
            )
        self.info["final"] = final
        self.write_info(last_resort=True)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
