"""train.early_stopping and reduce_on_plateau in runs (the rule itself and the validation:
tests/test_early_stopping.py): a run that stops at the evaluation the rule says (from its own log),
status early_stopped with exit 0 and run.json's record, --resume of an early-stopped run (says so,
changes nothing), an interrupted and resumed run equal to the uninterrupted one bit for bit (the
counter and the plateau schedule's state cross the checkpoint), the plateau's lr in the log
against torch's ReduceLROnPlateau fed the logged values, and the example spec early_stop_cancer."""

from __future__ import annotations

import itertools
import math
import shutil

import pytest
import torch

from onlytorch import fit

from . import assert_same_state, checkpoint, fails, info, ok, rows, spec, without_time

# ---------------------------------------------------------------- runs

SPEC = """
version: 1
name: es
seed: 0
data:
  train: {source: sklearn.breast_cancer}
  val: {from_split: train, fraction: 0.2}
  test: {from_split: train, fraction: 0.2}
  batch_size: 32
inputs:
  x: {shape: [30], from: train.x}
  y: {shape: [], dtype: int64, from: train.y}
modules:
  mlp: [{linear: 64}, relu, {linear: 2}]
nodes:
  logits: mlp(x)
losses:
  loss: cross_entropy(logits, y)
metrics:
  accuracy: mean(argmax(logits, axis=1) == y)
optimizers:
  opt:
    type: adam
    lr: 0.003
    params: [mlp]
    schedule: {type: reduce_on_plateau, factor: 0.5, patience: 1, threshold: 0.01}
train:
  steps: 2000
  log_every: 5
  eval_every: 5
  early_stopping: {patience: 6, min_delta: 0.001}
  schedule:
    - name: fit
      backward: [{loss: loss}]
      step: [opt]
eval:
  split: test
  metrics: [accuracy, loss]
"""
PATIENCE, MIN_DELTA, EVERY = 6, 0.001, 5


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """One run of SPEC through the command line, shared (read-only) by the tests below: the spec
    file, the run directory and the command's output."""
    root = tmp_path_factory.mktemp("early_stopping")
    spec_file = root / "es.yaml"
    spec_file.write_text(SPEC, encoding="utf-8")
    result = ok("train", spec_file, "--out", root / "run")
    return spec_file, root / "run", result.output


def evals(run_dir):
    return [r for r in rows(run_dir) if r["kind"] == "eval"]


def expected_stop(values: list[tuple[int, float]]) -> tuple[int, int]:
    """The stop step and the last improving step, by the rule (written out again here)."""
    best, best_step, wait = math.inf, None, 0
    for step, v in values:
        if v + MIN_DELTA < best:
            best, best_step, wait = v, step, 0
        else:
            wait += 1
        if wait >= PATIENCE:
            return step, best_step
    raise AssertionError("the rule does not stop within the log")


def test_a_run_stops_where_the_rule_says(stopped):
    _, run, output = stopped
    summary = info(run)
    log = evals(run)
    stop, improving = expected_stop([(r["step"], r["val/loss"]) for r in log])
    assert stop < 2000, "the run should stop early"
    assert summary["status"] == "early_stopped" and summary["steps_done"] == stop
    assert summary["early_stopping"] == {
        "stopped_step": stop,
        "best_step": improving,
        "best_value": next(r["val/loss"] for r in log if r["step"] == improving),
        "patience": PATIENCE,
        "min_delta": MIN_DELTA,
    }
    assert stop - improving == PATIENCE * EVERY
    # best.npz: the lowest val loss (any improvement), at or after the last improving evaluation
    lowest = min(log, key=lambda r: r["val/loss"])
    assert summary["best"]["step"] == lowest["step"] and summary["best"]["value"] == lowest["val/loss"]
    assert improving <= summary["best"]["step"] <= stop
    assert int(checkpoint(run / "checkpoints/last.npz")["meta/step"]) == stop
    assert int(checkpoint(run / "checkpoints/best.npz")["meta/step"]) == lowest["step"]
    # the evaluation that stopped the run reports eval.split too (once: one row per step and kind)
    assert log[-1]["step"] == stop and "eval/accuracy" in log[-1] and "val/loss" in log[-1]
    assert all("eval/accuracy" not in r for r in log[:-1])
    assert summary["final"]["eval/accuracy"] == log[-1]["eval/accuracy"]
    assert f"early stopped at step {stop}" in output
    assert f"best.npz holds step {lowest['step']}" in output
    assert "evaluation on test" in output
    assert len({(r["step"], r["kind"]) for r in rows(run)}) == len(rows(run))


def test_the_plateau_lr_in_the_log_is_torchs(stopped):
    log = rows(stopped[1])
    p = torch.zeros(1, requires_grad=True)
    topt = torch.optim.SGD([p], lr=0.003)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, "min", factor=0.5, patience=1, threshold=0.01)
    expected = {}  # step of a training row -> the lr in effect during the steps before it
    lr = 0.003
    for r in log:
        if r["kind"] == "train":
            expected[r["step"]] = lr
        else:
            sched.step(r["val/loss"])
            lr = topt.param_groups[0]["lr"]
    logged = {r["step"]: r["lr/opt"] for r in log if r["kind"] == "train"}
    assert logged == expected
    assert len(set(logged.values())) >= 3, "the plateau schedule should have lowered the lr at least twice"


def test_the_report_says_where_it_stopped(stopped, tmp_path):
    shutil.copytree(stopped[1], tmp_path / "run")
    summary = info(tmp_path / "run")
    output = ok("report", tmp_path / "run").output
    assert f"early_stopped: early stopped at step {summary['steps_done']}" in output
    assert 'class="status early_stopped"' in (tmp_path / "run/report/report.html").read_text(encoding="utf-8")


def test_resume_of_an_early_stopped_run_says_so_and_does_nothing(stopped, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec_file = stopped[0]
    shutil.copytree(stopped[1], tmp_path / "run")
    files = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    stop, best = info(tmp_path / "run")["steps_done"], info(tmp_path / "run")["best"]["step"]
    result = ok("train", spec_file, "--out", "run", "--resume", "--set", "train.steps=5000")
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [
        f"run: the run is early_stopped at step {stop} (best.npz: step {best}); nothing to resume "
        "(to train further, start a new run with --out)"
    ]
    assert {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()} == files
    again = fit(spec_file, tmp_path / "run", resume=True)
    assert again.status == "early_stopped" and again.already_ended and again.ok and again.steps == stop
    # a fresh train into it is refused as for any run
    fails(2, "train", spec_file, "--out", "run")


@pytest.mark.parametrize("cut", [37, 40])  # between evaluations, and just after one
def test_an_interrupted_and_resumed_run_is_the_uninterrupted_one(stopped, tmp_path, cut):
    spec_file, whole, _ = stopped
    calls = itertools.count()
    first = fit(spec_file, tmp_path / "cut", should_stop=lambda: next(calls) >= cut)
    assert first.status == "interrupted" and first.steps == cut and not first.ok
    state = checkpoint(tmp_path / "cut/checkpoints/last.npz")
    assert int(state["meta/step"]) == cut and "stop/wait" in state and "sched/opt/num_bad_epochs" in state
    second = fit(spec_file, tmp_path / "cut", resume=True)
    assert second.status == "early_stopped" and second.ok and not second.already_ended
    assert second.steps == info(whole)["steps_done"] > cut + 2 * EVERY
    assert second.message is not None and second.message.startswith(f"early stopped at step {second.steps}")
    assert (
        second.best == info(whole)["best"]
        and second.metrics
        and second.checkpoint == tmp_path / "cut/checkpoints/last.npz"
    )
    for name in ("last", "best"):
        assert_same_state(whole / f"checkpoints/{name}.npz", tmp_path / f"cut/checkpoints/{name}.npz")
    assert [without_time(r) for r in rows(tmp_path / "cut")] == [without_time(r) for r in rows(whole)]
    for key in ("status", "steps_done", "best", "early_stopping", "message", "final"):
        assert info(tmp_path / "cut")[key] == info(whole)[key], key


def test_a_run_without_the_new_keys_writes_no_new_entries(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ok("train", spec("xor"), "--out", "run", "-q", "--set", "train.steps=20")
    state = checkpoint(tmp_path / "run/checkpoints/last.npz")
    assert not any(k.startswith("stop/") for k in state)
    assert info(tmp_path / "run")["status"] == "completed" and "early_stopping" not in info(tmp_path / "run")
