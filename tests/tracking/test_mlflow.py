"""MLflow tracking (onlytorch/tracking/mlflow_tracker.py): a run read back with MlflowClient from
an SQLite tracking store holds every logged step of every metrics.jsonl column once, with its
value, the resolved spec as parameters, the status of each outcome and the artifacts; a resume
continues the same MLflow run without duplicating a step."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from typing import Any

import pytest

import onlytorch as ot
from onlytorch.tracking import mlflow_tracker
from onlytorch.tracking.mlflow_tracker import PARENT_ENV, metric_key, redacted, spec_params

pytest.importorskip("mlflow", reason="the mlflow extra")

from mlflow import MlflowClient
from mlflow.entities import Metric

from tests.cli import invoke, spec

XOR = spec("xor")
SHORT = ["train.steps=120", "train.log_every=10"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, pathlib.Path]:
    """One SQLite store for the module (creating one runs MLflow's migrations: seconds). Created
    from its own folder, so that the experiments' default artifact root (./mlruns) is there."""
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        MlflowClient(uri).search_experiments()
    return uri, folder


@pytest.fixture
def client(store: tuple[str, pathlib.Path], monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    monkeypatch.chdir(store[1])
    return MlflowClient(store[0])


def fit(run_dir: pathlib.Path, uri: str | None, sets: list[str] = SHORT, **kw: Any) -> ot.FitResult:
    return ot.fit(kw.pop("spec", XOR), run_dir, overrides=sets, mlflow=uri, tensorboard=False, **kw)


def run_id(run_dir: pathlib.Path) -> str:
    return str(json.loads((run_dir / "mlflow.json").read_text(encoding="utf-8"))["run_id"])


def log_rows(run_dir: pathlib.Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def assert_metrics_are_the_log(client: MlflowClient, rid: str, run_dir: pathlib.Path) -> None:
    """Every numeric column of metrics.jsonl is an MLflow metric holding exactly its (step, value)
    pairs: one point per logged step, nothing else."""
    expected: dict[str, list[tuple[int, float]]] = {}
    for row in log_rows(run_dir):
        for key, value in row.items():
            if key not in ("step", "kind"):
                expected.setdefault(key, []).append((row["step"], value))
    run = client.get_run(rid)
    assert set(run.data.metrics) == set(expected)
    for key, points in expected.items():
        history = sorted((m.step, m.value) for m in client.get_metric_history(rid, key))
        assert history == sorted(points), key


def flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        return {k: v for key, value in data.items() for k, v in flat(value, f"{prefix}{key}.").items()}
    if isinstance(data, list) and data:
        return {k: v for i, value in enumerate(data) for k, v in flat(value, f"{prefix}{i}.").items()}
    return {prefix[:-1]: data}


def expected_params(run_dir: pathlib.Path) -> dict[str, str]:
    resolved = json.loads((run_dir / "spec.json").read_text(encoding="utf-8"))
    resolved.pop("logging", None)
    info = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    params = {k: v if isinstance(v, str) else json.dumps(v) for k, v in flat(resolved).items()}
    return {**params, "overrides": json.dumps(info["overrides"]), "seed": str(info["seed"])}


def test_a_completed_run_holds_the_log_the_spec_the_status_and_the_artifacts(
    client: MlflowClient, store: tuple[str, pathlib.Path], tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    original = MlflowClient.log_batch

    def counting(self: MlflowClient, run_id: str, metrics: Any = (), **kw: Any) -> Any:
        if metrics:
            calls.append(len(metrics))
        return original(self, run_id, metrics=metrics, **kw)

    monkeypatch.setattr(MlflowClient, "log_batch", counting)
    monkeypatch.setattr(mlflow_tracker, "FLUSH_ROWS", 4)
    monkeypatch.setattr(mlflow_tracker, "FLUSH_SECONDS", 1e9)
    result = fit(tmp_path / "xor", store[0], ["train.steps=200", "train.log_every=5"])
    assert result.status == "completed"
    rows = log_rows(tmp_path / "xor")
    assert len(rows) == 41  # 40 training rows and the final evaluation
    # batched: one call per 4 rows (and the rest at the end), never one per value
    assert 10 <= len(calls) <= 12 and sum(calls) == sum(len(r) - 2 for r in rows), calls
    rid = run_id(tmp_path / "xor")
    run = client.get_run(rid)
    assert run.info.status == "FINISHED" and run.info.run_name == "xor"
    assert client.get_experiment(run.info.experiment_id).name == "xor"  # the spec's name
    assert run.data.tags["onlytorch.status"] == "completed"
    assert run.data.tags["onlytorch.run_dir"] == str((tmp_path / "xor").resolve())
    assert "mlflow.parentRunId" not in run.data.tags
    assert run.data.params == expected_params(tmp_path / "xor")
    assert run.data.params["optimizers.opt.lr"] == "0.05" and run.data.params["train.steps"] == "200"
    assert_metrics_are_the_log(client, rid, tmp_path / "xor")
    artifacts = {a.path for a in client.list_artifacts(rid)}
    assert {"run.json", "spec.yaml", "metrics.csv", "metrics.jsonl", "checkpoints", "report"} <= artifacts
    assert {a.path for a in client.list_artifacts(rid, "report")} == {"report/report.html", "report/summary.txt"}
    best = pathlib.Path(client.download_artifacts(rid, "checkpoints/best.npz", str(tmp_path)))
    assert best.read_bytes() == (tmp_path / "xor" / "checkpoints" / "best.npz").read_bytes()
    run_json = pathlib.Path(client.download_artifacts(rid, "run.json", str(tmp_path)))
    assert json.loads(run_json.read_text())["status"] == "completed"


def test_a_diverged_run_is_failed_with_its_message(client: MlflowClient, store: tuple[str, pathlib.Path], tmp_path):
    result = fit(tmp_path / "d", store[0], ["optimizers.opt.lr=1e37", "train.log_every=1"])
    assert result.status == "diverged"
    run = client.get_run(run_id(tmp_path / "d"))
    assert run.info.status == "FAILED"
    assert run.data.tags["onlytorch.status"] == "diverged"
    assert run.data.tags["onlytorch.message"] == result.message and "diverged at step" in result.message
    assert len(log_rows(tmp_path / "d")) >= 1
    assert_metrics_are_the_log(client, run.info.run_id, tmp_path / "d")


def test_an_interrupted_run_is_killed_and_its_resume_continues_the_same_mlflow_run(
    client: MlflowClient, store: tuple[str, pathlib.Path], tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mlflow_tracker, "FLUSH_ROWS", 2)  # rows reach MLflow before the interruption
    seen: list[int] = []
    first = fit(tmp_path / "r", store[0], on_progress=lambda s, v: seen.append(s), should_stop=lambda: len(seen) >= 75)
    assert first.status == "interrupted" and first.steps == 75
    rid = run_id(tmp_path / "r")
    run = client.get_run(rid)
    assert run.info.status == "KILLED" and run.data.tags["onlytorch.status"] == "interrupted"
    assert_metrics_are_the_log(client, rid, tmp_path / "r")
    assert [m.step for m in client.get_metric_history(rid, "fit/loss")] == [10, 20, 30, 40, 50, 60, 70]

    second = fit(tmp_path / "r", store[0], resume=True)
    assert second.status == "completed"
    assert run_id(tmp_path / "r") == rid
    run = client.get_run(rid)
    assert run.info.status == "FINISHED" and run.data.tags["onlytorch.status"] == "completed"
    assert "onlytorch.superseded_by" not in run.data.tags
    assert_metrics_are_the_log(client, rid, tmp_path / "r")  # every step once: 10 ... 120 and the evaluation
    assert [m.step for m in client.get_metric_history(rid, "fit/loss")] == list(range(10, 121, 10))


def test_points_past_the_checkpoint_or_a_changed_spec_start_a_new_linked_mlflow_run(
    client: MlflowClient, store: tuple[str, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    seen: list[int] = []
    fit(tmp_path / "k", store[0], on_progress=lambda s, v: seen.append(s), should_stop=lambda: len(seen) >= 50)
    old = run_id(tmp_path / "k")
    # what a process killed after sending rows past its last checkpoint leaves behind
    client.log_batch(old, metrics=[Metric("fit/loss", 0.123, 0, 60)])
    client.update_run(old, status="RUNNING")
    fit(tmp_path / "k", store[0], resume=True)
    new = run_id(tmp_path / "k")
    assert new != old
    assert client.get_run(new).data.tags["onlytorch.previous_run"] == old
    assert json.loads((tmp_path / "k" / "mlflow.json").read_text())["previous_run_id"] == old
    before = client.get_run(old)
    assert before.data.tags["onlytorch.superseded_by"] == new and before.info.status == "KILLED"
    assert before.info.experiment_id == client.get_run(new).info.experiment_id
    assert_metrics_are_the_log(client, new, tmp_path / "k")  # the whole log, rows before the resume too

    # MLflow parameters cannot change: training the completed run further is a new MLflow run as well
    fit(tmp_path / "k", store[0], ["train.steps=150", "train.log_every=10"], resume=True)
    newer = run_id(tmp_path / "k")
    assert newer != new and client.get_run(newer).data.params["train.steps"] == "150"
    assert_metrics_are_the_log(client, newer, tmp_path / "k")


def test_a_resume_adding_mlflow_sends_the_whole_log(client: MlflowClient, store, tmp_path: pathlib.Path) -> None:
    seen: list[int] = []
    fit(tmp_path / "late", None, on_progress=lambda s, v: seen.append(s), should_stop=lambda: len(seen) >= 40)
    assert not (tmp_path / "late" / "mlflow.json").exists()
    fit(tmp_path / "late", store[0], resume=True)
    assert_metrics_are_the_log(client, run_id(tmp_path / "late"), tmp_path / "late")


def test_the_spec_logging_key_and_the_cli_option(client: MlflowClient, store, tmp_path: pathlib.Path) -> None:
    import yaml

    data = yaml.safe_load(pathlib.Path(XOR).read_text(encoding="utf-8"))
    data["logging"] = {"tensorboard": False, "mlflow": {"tracking_uri": store[0], "experiment": "xor-exp"}}
    data["logging"]["mlflow"]["run_name"] = "first"
    (tmp_path / "xor.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    fit(tmp_path / "a", None, spec=str(tmp_path / "xor.yaml"))
    run = client.get_run(run_id(tmp_path / "a"))
    assert run.info.run_name == "first" and client.get_experiment(run.info.experiment_id).name == "xor-exp"
    assert run.data.params == expected_params(tmp_path / "a")  # the logging section is not a parameter
    assert not any(k.startswith("logging") for k in run.data.params)

    result = invoke("train", XOR, "--out", tmp_path / "b", "--mlflow", store[0], "--no-tensorboard", "-q",
                    "--set", "train.steps=60", "--seed", "3")  # fmt: skip
    assert result.exit_code == 0, result.output
    run = client.get_run(run_id(tmp_path / "b"))
    assert run.info.status == "FINISHED" and run.info.run_name == "b"
    assert run.data.params["seed"] == "3" and json.loads(run.data.params["overrides"]) == ["train.steps=60", "seed=3"]
    assert_metrics_are_the_log(client, run.info.run_id, tmp_path / "b")


def test_a_trial_is_a_child_of_the_parent_run_in_the_environment(
    client: MlflowClient, store, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = client.create_run(client.get_experiment_by_name("Default").experiment_id, run_name="sweep")
    monkeypatch.setenv(PARENT_ENV, parent.info.run_id)
    fit(tmp_path / "t", store[0], ["train.steps=20"])
    child = client.get_run(run_id(tmp_path / "t"))
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.info.experiment_id == parent.info.experiment_id  # the parent's, not the spec's name
    assert child.info.run_name == f"{tmp_path.name}-t"  # a trial's SWEEP_DIR/trials/0003/seed-0: 0003-seed-0


def test_the_tracker_alone_samples_pictures_and_a_run_dir_without_files(
    client: MlflowClient, store: tuple[str, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    from onlytorch.tracking.hub import TrackingContext

    tracker = mlflow_tracker.MlflowTracker(store[0], "alone", "solo")
    ctx = TrackingContext(tmp_path, False, 0, {"name": "n", "train": {"steps": 3}}, "", [], 0, "n", {})
    tracker.start(ctx)
    tracker.log({"step": 1, "kind": "train", "a/loss": 0.5, "time": 0.1})
    tracker.samples(1, b"\x89PNG not really", None)
    tracker.samples(2, None, None)  # no matplotlib: no picture
    tracker.end("interrupted", {"message": "interrupted at step 1", "steps_done": 1})
    run = client.get_run(tracker.run_id)
    assert run.info.status == "KILLED" and run.info.run_name == "solo"
    assert run.data.params == {"name": "n", "train.steps": "3", "overrides": "[]", "seed": "0"}
    assert run.data.tags["onlytorch.message"] == "interrupted at step 1"
    assert [(m.step, m.value) for m in client.get_metric_history(tracker.run_id, "a/loss")] == [(1, 0.5)]
    assert {a.path for a in client.list_artifacts(tracker.run_id)} == {"samples"}  # nothing else in tmp_path
    assert [a.path for a in client.list_artifacts(tracker.run_id, "samples")] == ["samples/step-00000001.png"]


def test_a_missing_mlflow_is_a_usage_error_naming_the_extra(tmp_path: pathlib.Path, monkeypatch) -> None:
    from onlytorch.tracking import wiring

    monkeypatch.setattr(wiring, "available", lambda module: module != "mlflow")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ot.FitError, match=r"onlytorch\[mlflow\]"):
        fit(tmp_path / "x", "sqlite:///nowhere.db")
    assert not (tmp_path / "x").exists()


def test_parameter_keys_and_values_are_ones_mlflow_accepts() -> None:
    from mlflow.utils.validation import _validate_param_name

    resolved = {"name": "n", "nodes": {"a b?c": "x" * 7000, "a//b": 1}, "flags": [True, None], "empty": []}
    params = spec_params(resolved, ["train.steps=5"], 7)
    for key in params:
        _validate_param_name(key)
        assert len(key) <= 250
    assert params["name"] == "n" and params["empty"] == "[]" and params["flags.0"] == "true"
    assert params["flags.1"] == "null" and params["seed"] == "7" and params["overrides"] == '["train.steps=5"]'
    long = params["nodes.a b_c"]
    assert len(long) == 6000 and long.endswith("...") and long.startswith("xxx")
    assert params["_nodes.a__b"] == "1"  # "nodes.a//b" is not a path MLflow accepts
    assert metric_key("fit/loss:weighted") == "fit/loss:weighted" and metric_key("a" * 300) != metric_key("a" * 301)
    assert len(metric_key("a" * 300)) == 250
    assert redacted("http://me:secret@host:5000/x") == "http://me:***@host:5000/x"
    assert redacted("sqlite:////tmp/a.db") == "sqlite:////tmp/a.db"


def test_mlflow_is_not_imported_by_onlytorch_or_its_help() -> None:
    code = (
        "import sys, onlytorch\n"
        "from click.testing import CliRunner\n"
        "from onlytorch_cli.main import cli\n"
        "assert CliRunner().invoke(cli, ['--help']).exit_code == 0\n"
        "assert CliRunner().invoke(cli, ['train', '--help']).exit_code == 0\n"
        "import onlytorch.tracking.wiring, onlytorch.tracking.mlflow_tracker, onlytorch.tracking.mlflow_sweep\n"
        "assert CliRunner().invoke(cli, ['sweep', '--help']).exit_code == 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
