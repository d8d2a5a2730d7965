"""``onlytorch sweep FILE --mlflow URI`` (onlytorch/tracking/mlflow_sweep.py): one parent MLflow
run for the sweep, and one child run per trial and seed under it; a rerun continues the parent."""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import pytest
from click.testing import CliRunner
from onlytorch_cli.main import cli

from onlytorch.tracking.mlflow_sweep import URI_ENV
from onlytorch.tracking.mlflow_tracker import PARENT_ENV

pytest.importorskip("optuna", reason="the sweep extra")
pytest.importorskip("mlflow", reason="the mlflow extra")

from mlflow import MlflowClient

XOR = pathlib.Path(__file__).resolve().parents[2] / "specs" / "xor.yaml"
SWEEP = f"""\
version: 1
name: lr
spec: {XOR}
set:
  train.steps: 20
  train.log_every: 10
trials: 2
sampler: {{type: random, seed: 0}}
space:
  optimizers.opt.lr: {{loguniform: [0.001, 0.1]}}
"""


@pytest.fixture
def inline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep's one worker in this process (no worker process to start, each importing mlflow:
    seconds); the environment it reads is the one the local executor's processes inherit."""
    from onlytorch.sweep import runner

    run = runner.run

    def inline_run(*args: Any, **kw: Any) -> Any:
        assert os.environ[URI_ENV] and os.environ[PARENT_ENV]
        return run(*args, **{**kw, "executor": "inline"})

    monkeypatch.setattr(runner, "run", inline_run)


def test_a_sweep_is_a_parent_run_with_one_child_per_trial(tmp_path: pathlib.Path, monkeypatch, inline) -> None:
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root ./mlruns
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "lr.yaml").write_text(SWEEP, encoding="utf-8")
    result = CliRunner().invoke(cli, ["sweep", "lr.yaml", "--out", "sw", "--mlflow", uri, "--quiet"])
    assert result.exit_code == 0, result.output
    assert URI_ENV not in os.environ and PARENT_ENV not in os.environ  # restored after the sweep

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("xor")  # the base spec's name, as a single run's
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("onlytorch.sweep") == "lr"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.info.run_name == "lr"
    assert parent.data.tags["onlytorch.sweep_dir"] == str(tmp_path / "sw")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in children) == ["0000-seed-0", "0001-seed-0"]
    assert len(runs) == 3
    for child in children:
        number = child.info.run_name[:4]
        run_dir = tmp_path / "sw" / "trials" / number / "seed-0"
        assert json.loads((run_dir / "mlflow.json").read_text())["run_id"] == child.info.run_id
        assert child.info.status == "FINISHED"
        history = client.get_metric_history(child.info.run_id, "fit/loss")
        assert [m.step for m in history] == [10, 20]
    rates = {child.data.params["optimizers.opt.lr"] for child in children}
    assert len(rates) == 2  # each trial's own sampled learning rate

    # asking for more trials continues the sweep, and its parent run
    (tmp_path / "lr.yaml").write_text(SWEEP.replace("trials: 2", "trials: 3"), encoding="utf-8")
    again = CliRunner().invoke(cli, ["sweep", "lr.yaml", "--out", "sw", "--mlflow", uri, "--quiet"])
    assert again.exit_code == 0, again.output
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 4 and len([r for r in runs if r.data.tags.get("onlytorch.sweep") == "lr"]) == 1
    assert len([r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]) == 3
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"


def test_without_mlflow_the_option_is_a_usage_error_and_nothing_is_written(tmp_path: pathlib.Path, monkeypatch) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else find_spec(name, *a))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lr.yaml").write_text(SWEEP, encoding="utf-8")
    result = CliRunner().invoke(cli, ["sweep", "lr.yaml", "--out", "sw", "--mlflow", "sqlite:///m.db"])
    assert result.exit_code == 2 and "pip install 'onlytorch[mlflow]'" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lr.yaml"]
