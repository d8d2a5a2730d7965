"""A sweep in MLflow (``onlytorch sweep FILE --mlflow URI``): one parent run for the sweep, and
every trial's run (one per trial and seed, mlflow_tracker.MlflowTracker) a child of it.

The parent run is in the experiment named after the base spec (as a single run of it would be),
named after the sweep and tagged ``onlytorch.sweep`` (its name) and ``onlytorch.sweep_dir``. While
the sweep runs, the environment holds the tracking URI (:data:`URI_ENV`) and the parent's id
(mlflow_tracker.PARENT_ENV): the worker processes inherit it, and each trial's fit logs to that
URI, its MLflow run tagged ``mlflow.parentRunId`` and put in the parent's experiment. Rerunning the
same command (to continue an interrupted sweep, or to ask for more trials) finds the parent run by
its sweep directory and continues it. The parent ends FINISHED when the sweep did (exit 0),
KILLED when it was interrupted (130), FAILED otherwise."""

from __future__ import annotations

import os
import pathlib
import re
import sys
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .mlflow_tracker import PARENT_ENV, experiment_named, redacted

if TYPE_CHECKING:
    from ..sweep.load import Sweep

__all__ = ["URI_ENV", "SweepParent", "sweep_parent"]

# The tracking URI a sweep's trials log to (set while ``onlytorch sweep --mlflow URI`` runs).
URI_ENV = "ONLYTORCH_MLFLOW_TRACKING_URI"
_EXIT_STATUS = {0: "FINISHED", 130: "KILLED"}


class SweepParent:
    """The parent MLflow run of a sweep into ``sweep_dir``, as a context manager: entering starts
    (or continues) it and puts the URI and its id in the environment; :meth:`finish` records the
    sweep's exit code; leaving restores the environment and ends the run (KILLED on a
    KeyboardInterrupt, FAILED on another exception or without ``finish``)."""

    def __init__(self, tracking_uri: str, experiment: str, sweep_name: str, sweep_dir: pathlib.Path) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.sweep_name = sweep_name
        self.sweep_dir = str(sweep_dir.absolute())
        self.client: Any = None
        self.run_id: str | None = None
        self.status = "FAILED"
        self._saved: dict[str, str | None] = {}

    def __enter__(self) -> SweepParent:
        try:
            self._start()
        except Exception as e:  # as for a run: MLflow never stops the sweep
            self.run_id = None
            where = redacted(self.tracking_uri)
            _warn(f"warning: no MLflow parent run at {where} ({type(e).__name__}: {e}); the sweep runs without MLflow")
            return self
        self._saved = {k: os.environ.get(k) for k in (URI_ENV, PARENT_ENV)}
        os.environ[URI_ENV] = self.tracking_uri
        os.environ[PARENT_ENV] = str(self.run_id)
        return self

    def _start(self) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        experiment_id = experiment_named(self.client, self.experiment)
        # a sweep's name is letters, digits, '.', '_' and '-': safe inside the filter's quotes
        plain = re.fullmatch(r"[\w.\-]+", self.sweep_name) is not None
        query = f"tags.`onlytorch.sweep` = '{self.sweep_name}'" if plain else ""
        runs = self.client.search_runs([experiment_id], filter_string=query)
        found = [r for r in runs if r.data.tags.get("onlytorch.sweep_dir") == self.sweep_dir]
        if found:
            self.run_id = found[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            tags = {"onlytorch.sweep": self.sweep_name, "onlytorch.sweep_dir": self.sweep_dir}
            self.run_id = self.client.create_run(experiment_id, run_name=self.sweep_name, tags=tags).info.run_id

    def finish(self, exit_code: int) -> None:
        self.status = _EXIT_STATUS.get(exit_code, "FAILED")

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if isinstance(error, KeyboardInterrupt):
            self.status = "KILLED"
        elif isinstance(error, SystemExit) and isinstance(error.code, int):
            self.status = _EXIT_STATUS.get(error.code, "FAILED")
        if self.run_id is not None:
            try:
                self.client.set_terminated(self.run_id, status=self.status)
            except Exception as e:
                _warn(f"warning: the MLflow parent run {self.run_id} could not be ended ({type(e).__name__}: {e})")


def _warn(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def sweep_parent(tracking_uri: str, sweep: Sweep, sweep_dir: pathlib.Path) -> SweepParent:
    """The parent run of ``sweep`` (run into ``sweep_dir``), in the experiment its trials' runs
    would have: the base spec's ``logging.mlflow.experiment``, or its name."""
    from ..app import FitError, load_spec

    try:
        spec = load_spec(str(sweep.spec), overrides=sweep.fixed).compiled.spec
    except FitError:  # checked when the sweep file was loaded; the trials will say what is wrong
        return SweepParent(tracking_uri, sweep.name, sweep.name, sweep_dir)
    settings = spec.logging.mlflow if spec.logging is not None else None
    experiment = settings.experiment if settings is not None and settings.experiment else spec.name
    return SweepParent(tracking_uri, experiment, sweep.name, sweep_dir)
