"""MLflow tracking: one MLflow run per training run (``onlytorch train --mlflow URI``,
``fit(mlflow=URI)`` or the spec's ``logging: {mlflow: {tracking_uri: ...}}``).

What the MLflow run holds:

- parameters: the resolved spec flattened to dotted keys (``optimizers.opt.lr``), values as text
  (JSON for numbers, booleans and lists), plus ``overrides`` (the ``--set`` texts, as JSON) and
  ``seed``. The ``logging`` section is left out: it says where the run is mirrored, not what it
  computes (and a tracking URI may hold a password). A key MLflow would refuse is made valid
  (characters outside ``[/\\w.\\- :]`` become ``_``; over 250 characters it is shortened with a
  hash) and a value over MLflow's 6000 characters is cut, ending in ``...``.
- metrics: every value of every row of metrics.jsonl under its own name, at its step, sent with
  ``log_batch`` every :data:`FLUSH_ROWS` rows or :data:`FLUSH_SECONDS` seconds (whichever comes
  first) and at the end, never one call per value.
- tags: ``onlytorch.status`` (run.json's final status), ``onlytorch.run_dir``,
  ``onlytorch.spec_hash``, ``onlytorch.message`` (why a run diverged, failed or was
  interrupted), and ``mlflow.parentRunId`` for a sweep's trial (:data:`PARENT_ENV`).
- artifacts: for a 2-D generator, the report's picture of the samples at each evaluation
  (``samples/step-NNNNNNNN.png``); at the end: run.json, spec.yaml, metrics.csv, metrics.jsonl,
  samples.npz (where present), ``checkpoints/best.npz`` and ``report/`` (the summary table as
  ``summary.txt`` and ``onlytorch report``'s HTML page without pictures: MLflow draws the curves
  itself, and drawing them takes seconds).
- status: completed and early_stopped -> FINISHED, failed and diverged -> FAILED,
  interrupted -> KILLED.

Resume. The MLflow run's id is kept in ``RUN_DIR/mlflow.json``; a resume continues that run,
which MLflow shows as running again. MLflow can neither delete a metric point nor change a
parameter, so a run is continued only when it holds exactly the run directory's log up to the
checkpoint the training continues from (metrics.jsonl, already cut back to it) and the same
parameters. It holds more when the previous process sent rows past its last checkpoint before it
ended without a checkpoint of them (killed, diverged, failed, interrupted twice: those rows will be
logged again, with other wall times), and other parameters when the resume changes the spec
(``train.steps``, ``--force``). Then a new MLflow run is started in the same experiment, holding
the whole log again, tagged ``onlytorch.previous_run`` (the old id), and the old run is tagged
``onlytorch.superseded_by``: no step is ever duplicated in one MLflow run, and its values are
always metrics.jsonl's. Rows of the log that MLflow lacks (sent by nobody: a process killed
between two batches) are sent when the run is continued; a run directory trained without MLflow
gets its whole log when a resume adds ``--mlflow``.

mlflow is imported when a tracker starts, never by ``import onlytorch``. Everything goes
through an ``MlflowClient`` of this tracker's own URI (never MLflow's global "active run"), so
several fits in one process (a sweep's trials) do not interfere."""

from __future__ import annotations

import hashlib
import json
import math
import os
import pathlib
import posixpath
import re
import tempfile
import time
import urllib.parse
from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import Any

from .. import metrics_log
from ..rundir import write_text_atomic
from .hub import Tracker, TrackingContext, flatten_spec

__all__ = [
    "FLUSH_ROWS",
    "FLUSH_SECONDS",
    "MLFLOW_JSON",
    "PARENT_ENV",
    "STATUSES",
    "MlflowTracker",
    "metric_key",
    "param_key",
    "spec_params",
]

MLFLOW_JSON = "mlflow.json"
# The MLflow run id a sweep's trials are children of (set by ``onlytorch sweep --mlflow``).
PARENT_ENV = "ONLYTORCH_MLFLOW_PARENT_RUN_ID"
FLUSH_ROWS = 50
FLUSH_SECONDS = 10.0
# run.json's final status -> MLflow's RunStatus
STATUSES = {
    "completed": "FINISHED",
    "early_stopped": "FINISHED",
    "failed": "FAILED",
    "diverged": "FAILED",
    "interrupted": "KILLED",
}
ARTIFACT_FILES = ("run.json", "spec.yaml", "metrics.csv", "metrics.jsonl", "samples.npz")

# MLflow 3's limits (mlflow.utils.validation), fixed here so that nothing imports mlflow early.
_MAX_KEY = 250
_MAX_PARAM_VALUE = 6000
_MAX_TAG_VALUE = 8000
_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000
_BAD_KEY_CHARS = re.compile(r"[^/\w.\- :]")
_SPEC_SECTIONS_LEFT_OUT = ("logging",)


# ------------------------------------------------------------------ names and values


def _valid_key(key: str) -> str:
    """``key`` as MLflow accepts it (its characters, no path tricks, at most 250 characters); a
    valid key is unchanged."""
    out = _BAD_KEY_CHARS.sub("_", key)
    if posixpath.normpath(out) != out or out in ("", ".") or out.startswith(("/", "..")):
        out = "_" + out.replace("/", "_")
    if len(out) > _MAX_KEY:
        digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:12]
        out = f"{out[: _MAX_KEY - 13]}~{digest}"
    return out


def metric_key(name: str) -> str:
    """The MLflow metric key of a metrics.jsonl column (the same name when MLflow accepts it)."""
    return _valid_key(name)


def param_key(key: str) -> str:
    """The MLflow parameter key of a dotted spec key."""
    return _valid_key(key)


def _text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def spec_params(resolved: dict[str, Any], overrides: Sequence[str] = (), seed: int | None = None) -> dict[str, str]:
    """The MLflow parameters of a run: the flattened resolved spec (without ``logging``), the
    overrides and the seed, as MLflow accepts them."""
    kept = {k: v for k, v in resolved.items() if k not in _SPEC_SECTIONS_LEFT_OUT}
    params = {param_key(k): _text(v, _MAX_PARAM_VALUE) for k, v in flatten_spec(kept).items()}
    params["overrides"] = _text(list(overrides), _MAX_PARAM_VALUE)
    if seed is not None:
        params["seed"] = str(seed)
    return params


def _metric_values(row: dict[str, Any]) -> Iterator[tuple[str, float]]:
    for name, value in row.items():
        if name in ("step", "kind") or isinstance(value, str) or not isinstance(value, (int, float)):
            continue
        yield metric_key(name), float(value)


def redacted(uri: str) -> str:
    """``uri`` without a password (what may be written to mlflow.json and shown)."""
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        return uri
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _chunks(items: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


# ------------------------------------------------------------------ the tracker


class MlflowTracker(Tracker):
    """Mirrors a training run into one MLflow run (the module docstring says what and how).
    ``parent_run_id`` (default: the environment's :data:`PARENT_ENV`) makes it a child run."""

    name = "mlflow"

    def __init__(
        self,
        tracking_uri: str,
        experiment: str | None = None,
        run_name: str | None = None,
        parent_run_id: str | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_name = run_name
        self.parent_run_id = parent_run_id if parent_run_id is not None else (os.environ.get(PARENT_ENV) or None)
        self.client: Any = None
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.previous_run_id: str | None = None  # the run this one superseded (see the module docstring)
        self.run_dir: pathlib.Path | None = None
        self._recorded: dict[str, Any] = {}  # RUN_DIR/mlflow.json as a previous process left it
        self._pending: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()

    # -------------------------------------------------------------- the hub's calls

    def start(self, ctx: TrackingContext) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        self.run_dir = ctx.run_dir
        params = spec_params(ctx.resolved_spec, ctx.overrides, ctx.seed)
        # on a resume, the log as of the checkpoint (the run has cut it back already)
        rows = metrics_log.read_until(ctx.run_dir / metrics_log.LOG, ctx.start_step)[0] if ctx.resumed else []
        old = self._recorded_run()
        known: set[tuple[str, int]] | None = None
        if old is not None:
            known = self._continuable(old, rows, params)
        if old is not None and known is not None:
            self.run_id, self.experiment_id = old.info.run_id, old.info.experiment_id
            self.previous_run_id = self._recorded.get("previous_run_id")
            self.client.update_run(self.run_id, status="RUNNING")
            new_params = {k: v for k, v in params.items() if k not in old.data.params}
        else:
            self.run_id = self._create_run(ctx, superseded=old)
            known, new_params = set(), params
        self._set_tags({"onlytorch.status": "running", "onlytorch.run_dir": str(ctx.run_dir.resolve())})
        self._log_params(new_params)
        self._send(rows, skip=known)
        write_text_atomic(
            ctx.run_dir / MLFLOW_JSON,
            json.dumps(
                {
                    "tracking_uri": redacted(self.tracking_uri),
                    "experiment_id": self.experiment_id,
                    "run_id": self.run_id,
                    "previous_run_id": self.previous_run_id,
                },
                indent=1,
            ),
        )
        self._last_flush = time.monotonic()

    def log(self, record: dict[str, Any]) -> None:
        self._pending.append(record)
        if len(self._pending) >= FLUSH_ROWS or time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def samples(self, step: int, picture_png: bytes | None, samples: Any) -> None:
        """The report's picture of an evaluation's generator samples, as ``samples/step-NNNNNNNN.png``."""
        if self.run_id is None or picture_png is None:
            return
        with tempfile.TemporaryDirectory(prefix="onlytorch-mlflow-") as tmp:
            path = pathlib.Path(tmp) / f"step-{step:08d}.png"
            path.write_bytes(picture_png)
            self.client.log_artifact(self.run_id, str(path), "samples")

    def end(self, status: str, run_json: dict[str, Any]) -> None:
        if self.run_id is None:
            return
        self.flush()
        tags = {"onlytorch.status": status, "onlytorch.steps_done": str(run_json.get("steps_done", ""))}
        if run_json.get("message"):
            tags["onlytorch.message"] = _text(str(run_json["message"]), _MAX_TAG_VALUE)
        self._set_tags(tags)
        upload_error: Exception | None = None
        try:
            self._upload_artifacts()
        except Exception as e:  # the status is recorded all the same; the hub reports the failure
            upload_error = e
        self.client.set_terminated(self.run_id, status=STATUSES.get(status, "FAILED"))
        if upload_error is not None:
            raise upload_error

    def flush(self) -> None:
        """Send the rows logged since the last batch."""
        rows, self._pending = self._pending, []
        self._last_flush = time.monotonic()
        self._send(rows)

    # -------------------------------------------------------------- the MLflow run

    def _recorded_run(self) -> Any:
        """The MLflow run RUN_DIR/mlflow.json names on this tracking server, if it still exists."""
        from mlflow.exceptions import MlflowException

        assert self.run_dir is not None
        try:
            recorded = json.loads((self.run_dir / MLFLOW_JSON).read_text(encoding="utf-8"))
            run_id = str(recorded["run_id"])
            self._recorded = recorded
            if recorded.get("tracking_uri") != redacted(self.tracking_uri):
                return None  # a run on another server: this one starts its own
        except (OSError, ValueError, KeyError, TypeError):
            return None
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return None
        return run if run.info.lifecycle_stage == "active" else None

    def _continuable(self, run: Any, rows: list[dict[str, Any]], params: dict[str, str]) -> set[tuple[str, int]] | None:
        """The (key, step) points ``run`` holds when it can be continued (all of them in ``rows``,
        the log up to the checkpoint, with their values; its parameters this run's); None when it
        cannot."""
        if any(params.get(k) != v for k, v in run.data.params.items()):
            return None
        logged: dict[tuple[str, int], float] = {}
        for row in rows:
            for key, value in _metric_values(row):
                logged[(key, int(row["step"]))] = value
        known: set[tuple[str, int]] = set()
        for key in run.data.metrics:
            for point in self.client.get_metric_history(run.info.run_id, key):
                at = (key, int(point.step))
                if at in known or at not in logged or not _same(logged[at], float(point.value)):
                    return None  # a duplicate, a step past the checkpoint, or another value
                known.add(at)
        return known

    def _create_run(self, ctx: TrackingContext, superseded: Any) -> str:
        if self.parent_run_id and not self.experiment:
            # a child run lives in its parent's experiment (where MLflow shows it under the parent)
            experiment_id = str(self.client.get_run(self.parent_run_id).info.experiment_id)
        else:
            experiment_id = experiment_named(self.client, self.experiment or ctx.name)
        self.experiment_id = experiment_id
        tags = {
            "onlytorch.spec_hash": str(ctx.run_json.get("spec_hash", "")),
            "onlytorch.version": str((ctx.run_json.get("versions") or {}).get("onlytorch", "")),
            "mlflow.source.name": str(ctx.run_json.get("spec_file", "")),
            "mlflow.source.type": "LOCAL",
        }
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        if superseded is not None:
            self.previous_run_id = superseded.info.run_id
            tags["onlytorch.previous_run"] = superseded.info.run_id
        # a sweep's trial (SWEEP_DIR/trials/0003/seed-0) is named 0003-seed-0
        default_name = f"{ctx.run_dir.parent.name}-{ctx.run_dir.name}" if self.parent_run_id else ctx.run_dir.name
        run = self.client.create_run(experiment_id, run_name=self.run_name or default_name, tags=tags)
        run_id: str = run.info.run_id
        if superseded is not None:
            old = superseded.info.run_id
            self.client.set_tag(old, "onlytorch.superseded_by", run_id)
            if superseded.info.status == "RUNNING":  # its process died without saying so
                self.client.set_terminated(old, status="KILLED")
        return run_id

    # -------------------------------------------------------------- batches

    def _send(self, rows: Iterable[dict[str, Any]], skip: Collection[tuple[str, int]] = ()) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(key, value, now, int(row["step"]))
            for row in rows
            for key, value in _metric_values(row)
            if (key, int(row["step"])) not in skip
        ]
        for chunk in _chunks(metrics, _METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=list(chunk), synchronous=True)

    def _log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for chunk in _chunks(items, _PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=list(chunk), synchronous=True)

    def _set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        tagged = [RunTag(k, _text(v, _MAX_TAG_VALUE)) for k, v in tags.items()]
        self.client.log_batch(self.run_id, tags=tagged, synchronous=True)

    def _upload_artifacts(self) -> None:
        assert self.run_dir is not None
        for name in ARTIFACT_FILES:
            if (self.run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(self.run_dir / name))
        best = self.run_dir / "checkpoints" / "best.npz"
        if best.is_file():
            self.client.log_artifact(self.run_id, str(best), "checkpoints")
        with tempfile.TemporaryDirectory(prefix="onlytorch-mlflow-") as tmp:
            if _write_report(self.run_dir, pathlib.Path(tmp)):
                self.client.log_artifacts(self.run_id, tmp, "report")


def experiment_named(client: Any, name: str) -> str:
    """The id of the experiment ``name`` (created, or restored from MLflow's trash, when needed)."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return str(client.create_experiment(name))
        except MlflowException:  # created meanwhile by another process (a sweep's trials)
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return str(experiment.experiment_id)


def _write_report(run_dir: pathlib.Path, out: pathlib.Path) -> bool:
    """``onlytorch report``'s summary table and HTML page (no pictures) into ``out``."""
    from .. import report

    try:
        run = report.read_run(run_dir)
    except report.ReportError:
        return False
    (out / "summary.txt").write_text(report.summary_table(run) + "\n", encoding="utf-8")
    report.write_html(run, [], out / "report.html")
    return True
