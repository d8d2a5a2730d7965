"""A training run on disk: the run directory, its metrics log, checkpoints and summary.

```
RUN_DIR/
  spec.yaml        the resolved spec (after --set overrides)
  run.json         versions, seed, spec hash, status, steps, final metrics, best checkpoint
  metrics.jsonl    one JSON object per logged step ({"step", "kind": "train"|"eval", ...})
  metrics.csv      the same rows as a table
  checkpoints/     last.npz (written atomically), best.npz (by the first eval metric)
  samples.npz      generated samples of a 2-D generator (eval.samples), for the report
```
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import pathlib
import platform
import time
from typing import Any

import numpy as np
import yaml

from . import __version__
from . import checkpoint as ckpt
from .compile import Compiled
from .metrics import mode_coverage
from .train import Record, Trainer

# Keys that may change between a run and its resume without changing what it computes.
RESUMABLE_CHANGES = ("train.steps", "train.epochs", "train.log_every", "train.eval_every", "train.checkpoint_every")


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


def lower_is_better(name: str) -> bool:
    return any(w in name for w in ("loss", "error", "mse", "nll"))


class Run:
    """Writes a run directory while a Trainer runs."""

    def __init__(
        self, path: pathlib.Path, compiled: Compiled, trainer: Trainer, spec_file: str, overrides: list[str]
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
        }
        self.rows: list[dict[str, Any]] = []
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
        if resume:
            try:
                old = json.loads((self.path / "run.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                old = {}  # lost or cut short: the checkpoint and the metrics log still hold the run
            self.info["started"] = old.get("started", self.info["started"])
            self.info["best"] = old.get("best")
            self.elapsed_before = float(old.get("wall_time", 0.0))
            self.rows = [r for r in _read_jsonl(self.path / "metrics.jsonl") if r.get("step", 0) <= self.trainer.step]
            self._rewrite_jsonl()
        else:
            for name in ("metrics.jsonl", "metrics.csv"):
                (self.path / name).unlink(missing_ok=True)
        (self.path / "spec.yaml").write_text(yaml.safe_dump(self.resolved, sort_keys=False), encoding="utf-8")
        (self.path / "spec.json").write_text(json.dumps(self.resolved, indent=1), encoding="utf-8")
        self.write_info()

    def write_info(self) -> None:
        self.info["steps_done"] = self.trainer.step
        self.info["wall_time"] = self.elapsed_before + (time.perf_counter() - self.t0)
        tmp = self.path / ".run.json.tmp"
        tmp.write_text(json.dumps(self.info, indent=2), encoding="utf-8")
        tmp.replace(self.path / "run.json")

    def log(self, kind: str, record: Record) -> None:
        row = {"step": record.step, "kind": kind, **record.values}
        self.rows.append(row)
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        if self._csv_columns is not None and all(k in self._csv_known for k in row):
            # The header already has every column: append (rewriting would make a run quadratic).
            with open(self.path / "metrics.csv", "a", newline="", encoding="utf-8") as fh:
                csv.DictWriter(fh, fieldnames=self._csv_columns).writerow(row)
        else:
            self._write_csv()

    def _rewrite_jsonl(self) -> None:
        with open(self.path / "metrics.jsonl", "w", encoding="utf-8") as fh:
            for row in self.rows:
                fh.write(json.dumps(row) + "\n")
        self._write_csv()

    def _write_csv(self) -> None:
        """The whole table, with a column for every key any row has (in order of appearance)."""
        known: dict[str, None] = {}
        for row in self.rows:
            known.update(dict.fromkeys(row))
        columns = list(known)
        with open(self.path / "metrics.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=columns)
            w.writeheader()
            w.writerows(self.rows)
        self._csv_columns, self._csv_known = columns, known

    def checkpoint(self, name: str = "last") -> pathlib.Path:
        state = self.trainer.state()
        state["meta/spec_hash"] = np.array(self.hash)
        return ckpt.save(self.path / "checkpoints" / f"{name}.npz", state)

    # -------------------------------------------------------------- evaluation

    def evaluate(self, step: int) -> dict[str, float]:
        values = evaluate(self.c, self.trainer, self.path)
        if values:
            self.log("eval", Record(step, {f"eval/{k}": v for k, v in values.items()}))
            self._track_best(step, values)
        return values

    def _track_best(self, step: int, values: dict[str, float]) -> None:
        ev = self.c.spec.eval
        names = (ev.metrics if ev and ev.metrics else None) or list(values)
        metric = next((n for n in ("modes_covered", *names) if n in values), None)
        if metric is None:
            return
        value = values[metric]
        best = self.info.get("best")
        better = best is None or (value < best["value"] if lower_is_better(metric) else value > best["value"])
        if better:
            path = self.checkpoint("best")
            self.info["best"] = {
                "checkpoint": str(path.relative_to(self.path)),
                "step": step,
                "metric": metric,
                "value": value,
            }

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
        self.write_info()


def evaluate(
    compiled: Compiled, trainer: Trainer, run_dir: pathlib.Path | None = None, split: str | None = None
) -> dict[str, float]:
    """The spec's eval metrics on its eval split (under no_grad), plus sample metrics."""
    ev = compiled.spec.eval
    if trainer.live is not None:
        return trainer.episodes()
    if ev is None:
        return {}
    values = trainer.evaluate(split or ev.split, ev.metrics)
    if ev.samples is not None:
        fake = trainer.sample(ev.samples.node, ev.samples.n)
        scored = sample_scores(compiled, trainer, fake)
        values.update(scored)
        if run_dir is not None and fake.ndim == 2 and fake.shape[1] == 2:
            extra: dict[str, np.ndarray] = {}
            train = trainer.data.get("train", {})
            # The real data a generator imitates: the training field shaped like its samples.
            real = next(
                (train[f] for f in trainer.fields.values() if f in train and train[f].shape[1:] == fake.shape[1:]), None
            )
            if real is not None:
                extra["real"] = real[: ev.samples.n]
            centres, _ = mixture(compiled)
            if centres is not None:
                extra["centres"] = centres
            ckpt.save(run_dir / "samples.npz", {"fake": fake, **extra})
    return values


def mixture(compiled: Compiled) -> tuple[np.ndarray | None, float]:
    """The mode centres and std of a mixture-of-Gaussians training source, if it is one."""
    from .data.synthetic import grid_centres, ring_centres

    src = compiled.spec.data.train if compiled.spec.data else None
    if src is None:
        return None, 0.0
    if src.source == "synthetic.ring":
        return ring_centres(src.modes, src.radius), src.std
    if src.source == "synthetic.grid":
        return grid_centres(src.side, src.spacing), src.std
    return None, 0.0


def sample_scores(compiled: Compiled, trainer: Trainer, fake: np.ndarray) -> dict[str, float]:
    centres, std = mixture(compiled)
    if centres is None or fake.ndim != 2 or fake.shape[1] != centres.shape[1]:
        return {}
    scores = mode_coverage(fake, centres, std)
    return {"modes_covered": scores["modes_covered"], "high_quality": scores["high_quality"]}


def _read_jsonl(path: pathlib.Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if not path.exists():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut by an interruption: what came before is the log
    return rows


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
