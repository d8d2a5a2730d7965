"""The sweep directory's tables (onlytorch/sweep/outputs.py): trials.csv's columns, sweep.json's
record, best.yaml for a spec that reads data files, choices that are lists, and storage URLs
written without their password."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("optuna")

import onlytorch
from onlytorch.sweep import runner as sweeping
from onlytorch.sweep.study import redact, storage_record

from .engine_helpers import XOR, info, rows, write_sweep

NPZ_SPEC = """\
version: 1
name: npz_xor
seed: 0
data:
  train: {source: file.npz, path: data/train.npz}
  test: {source: file.npz, path: data/train.npz}
  batch_size: 16
inputs:
  x: {shape: [2], from: train.x}
  y: {shape: [1], from: train.y}
modules:
  net: [{linear: 4}, tanh, {linear: 1}]
nodes:
  logits: net(x)
losses:
  loss: bce_with_logits(logits, y)
optimizers:
  opt: {type: adam, lr: 0.05, betas: [0.9, 0.999], params: [net]}
train:
  steps: 20
  eval_every: 10
  schedule:
    - name: fit
      backward: [{loss: loss}]
      step: [opt]
eval:
  split: test
"""


def test_trials_csv_columns_and_list_choices(tmp_path):
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(64, 2)).astype(np.float32)
    np.savez(project / "data" / "train.npz", x=x, y=(x[:, :1] * x[:, 1:] > 0).astype(np.float32))
    (project / "spec.yaml").write_text(NPZ_SPEC)
    (project / "s.yaml").write_text(
        "version: 1\nspec: spec.yaml\ntrials: 2\nseeds: [0, 1]\nsampler: {type: random, seed: 0}\n"
        "space:\n  optimizers.opt.betas: {choice: [[0.5, 0.999], [0.0, 0.9]]}\n"
        "  optimizers.opt.lr: {uniform: [0.01, 0.1]}\n"
    )
    out = tmp_path / "sweeps" / "npz"
    result = sweeping.run(project / "s.yaml", out, executor="inline")
    assert result.status == "completed"
    with open(out / "trials.csv", encoding="utf-8") as fh:
        header = fh.readline().strip().split(",")
    assert header == [
        "number",
        "state",
        "value",
        "std",
        "optimizers.opt.betas",
        "optimizers.opt.lr",
        "seed_0",
        "seed_1",
        "duration_s",
        "retry_of",
        "error",
    ]
    table = rows(out)
    assert {r["optimizers.opt.betas"] for r in table} <= {"[0.5, 0.999]", "[0.0, 0.9]"}
    best = info(out)["best"]
    assert best["params"]["optimizers.opt.betas"] in ([0.5, 0.999], [0.0, 0.9])  # the list, not its text
    # every trial's run recorded the list as the optimizer's betas
    run_spec = json.loads((out / best["run_dirs"][0] / "spec.json").read_text())
    assert run_spec["optimizers"]["opt"]["betas"] == best["params"]["optimizers.opt.betas"]

    # best.yaml names the data by absolute path (it lives elsewhere than the spec) and says how to train it
    text = (out / "best.yaml").read_text()
    assert str(project / "data" / "train.npz") in text and "--allow-outside" in text
    with pytest.raises(onlytorch.InvalidSpec, match="outside the spec's folder"):
        onlytorch.fit(out / "best.yaml", tmp_path / "refused")
    again = onlytorch.fit(out / "best.yaml", tmp_path / "again", seed=0, allow_outside=True)
    assert again.status == "completed" and again.best["value"] == best["values"]["0"]


def test_sweep_json_records_the_sweep_and_its_identity(tmp_path):
    file = write_sweep(tmp_path, "trials: 1\nspace:\n  optimizers.opt.lr: {loguniform: [0.001, 0.1]}\n")
    sweeping.run(file, tmp_path / "sw", executor="inline")
    record = info(tmp_path / "sw")
    assert record["name"] == record["study_name"] == "s"
    assert record["storage"] == {"kind": "journal", "path": "study.log"}
    assert record["sweep_file"] == str(file) and record["spec"] == str(XOR)
    assert record["metric"] == "loss" and record["mode"] == "min" and record["direction"] == "minimize"
    assert record["objective"] == "best" and record["status"] == "completed"
    assert record["identity"]["params"][0]["path"] == "optimizers.opt.lr"
    assert "trials" not in record["identity"]
    assert (tmp_path / "sw" / "sweep.yaml").read_bytes() == file.read_bytes()
    import hashlib

    assert record["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
    assert (tmp_path / "sw" / "study.log").stat().st_size > 0


def test_storage_urls_are_recorded_without_their_password():
    url = "postgresql://sweeper:s3cret@db.example:5432/studies"
    assert redact(url) == "postgresql://sweeper:***@db.example:5432/studies"
    assert storage_record(url) == {"kind": "rdb", "url": "postgresql://sweeper:***@db.example:5432/studies"}
    assert redact("sqlite:///tmp/x.db") == "sqlite:///tmp/x.db"
    assert "s3cret" not in json.dumps(storage_record(url))


def test_an_rdb_storage_is_named_in_sweep_json_and_open_study_finds_it(tmp_path):
    from onlytorch.sweep.study import open_study

    url = f"sqlite:///{tmp_path / 'studies.db'}"
    file = write_sweep(tmp_path, "trials: 1\nspace:\n  optimizers.opt.lr: {loguniform: [0.001, 0.1]}\n")
    result = sweeping.run(file, tmp_path / "sw", executor="inline", storage=url)
    assert result.status == "completed"
    assert info(tmp_path / "sw")["storage"] == {"kind": "rdb", "url": url}
    assert not (tmp_path / "sw" / "study.log").exists()
    study = open_study(tmp_path / "sw")
    assert [t.state.name for t in study.trials] == ["COMPLETE"]
    # the same directory with another storage is refused: its study is elsewhere
    with pytest.raises(sweeping.SweepRefused, match="give the same --storage"):
        sweeping.run(file, tmp_path / "sw", executor="inline")
