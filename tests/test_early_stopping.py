"""train.early_stopping: the counter's rule on hand-computed sequences (min_delta edges, NaN, both
directions), and the validation of the new keys (early_stopping, reduce_on_plateau). Runs that
stop, resume and are interrupted: tests/cli/test_early_stopping_runs.py."""

from __future__ import annotations

import math
import pathlib
import re

import numpy as np
import pytest

from onlytorch.checkpoint import CheckpointError
from onlytorch.compile import compile_text
from onlytorch.stopping import EarlyStopping

# ---------------------------------------------------------------- the counter's rule


def run_counter(values, patience, min_delta=0.0, mode="min"):
    """The evaluation (1-based) the counter stops at, or None, and the counter."""
    es = EarlyStopping(patience, min_delta, mode, "loss@val:" + mode)
    for i, v in enumerate(values, start=1):
        if es.observe(10 * i, v):
            return i, es
    return None, es


@pytest.mark.parametrize(
    ("values", "patience", "min_delta", "mode", "stops_at", "best_step"),
    [
        # improvements reset the count; P evaluations in a row without one stop the run
        ([1.0, 0.9, 0.95, 0.91, 0.8], 2, 0.0, "min", 4, 20),
        ([1.0, 0.9, 0.95, 0.8, 0.85, 0.86, 0.87], 3, 0.0, "min", 7, 40),
        ([1.0, 1.0, 1.0], 2, 0.0, "min", 3, 10),  # equal is no improvement
        ([1.0, 2.0], 1, 0.0, "min", 2, 10),  # patience 1: the first evaluation without improvement
        # min_delta: better by exactly min_delta is not enough (0.5 + 0.5 < 1.0 is false) ...
        ([1.0, 0.5, 0.5, 0.5], 2, 0.5, "min", 3, 10),
        # ... by more is (0.49 + 0.5 < 1.0), and the reference becomes 0.49
        ([1.0, 0.49, 0.2, 0.1], 2, 0.5, "min", 4, 20),
        # better than the best by less than min_delta does not reset the count
        ([1.0, 0.99, 0.98, 0.97], 3, 0.05, "min", 4, 10),
        # max: value - min_delta > best
        ([0.5, 1.25, 1.5], 1, 0.5, "max", 3, 20),  # 1.25 - 0.5 > 0.5, but 1.5 - 0.5 > 1.25 is false
        ([0.5, 1.0], 1, 0.5, "max", 2, 10),  # better by exactly min_delta: 1.0 - 0.5 > 0.5 is false
        ([0.5, 0.6, 0.7, 0.65, 0.66, 0.8], 3, 0.0, "max", None, 60),
        # a NaN never improves; the first finite value always does
        ([math.nan, 1.0, math.nan, math.nan], 2, 0.0, "min", 4, 20),
        ([math.nan, math.nan], 2, 0.0, "max", 2, None),
    ],
)
def test_the_counter_stops_at_the_evaluation_the_rule_says(values, patience, min_delta, mode, stops_at, best_step):
    at, es = run_counter(values, patience, min_delta, mode)
    assert at == stops_at
    assert (es.best_step if es.best_step != -1 else None) == best_step
    if stops_at is not None:
        assert es.stopped == 10 * stops_at and es.has_stopped
        assert es.wait == patience
        assert "early stopped at step" in es.describe()


def test_an_inactive_counter_never_stops_and_saves_nothing():
    es = EarlyStopping(None)
    assert not any(es.observe(i, math.nan) for i in range(100))
    assert es.state() == {} and es.check_state({"stop/wait": 1}) == set()


def test_the_counter_crosses_a_checkpoint_and_refuses_a_bad_one():
    es = EarlyStopping(3, 0.0, "max", "accuracy@val:max")
    for step, v in ((5, 0.5), (10, 0.7), (15, 0.6)):
        es.observe(step, v)
    state = es.state()
    again = EarlyStopping(3, 0.0, "max", "accuracy@val:max")
    assert again.check_state(state) == set(state)
    again.restore(state)
    assert (again.best, again.best_step, again.wait, again.stopped) == (0.7, 10, 1, -1)
    other = EarlyStopping(3, 0.0, "min", "loss@val:min")  # another monitor (a resume with --force): fresh
    other.restore(state)
    assert (other.best, other.wait) == (math.inf, 0)
    assert again.check_state({}) == set()  # a checkpoint from before the spec had early stopping
    bad = [
        ({**state, "stop/best": np.array(math.nan)}, "'stop/best' is nan"),
        ({**state, "stop/wait": np.array(-1)}, "'stop/wait' is -1"),
        ({**state, "stop/stopped": np.array(2.5)}, "'stop/stopped' is 2.5"),
        ({**state, "stop/monitored": np.array(3)}, "'stop/monitored' is 3"),
        ({k: v for k, v in state.items() if k != "stop/best_step"}, "'stop/best_step' is missing"),
    ]
    for broken, words in bad:
        with pytest.raises(CheckpointError, match=re.escape(words)):
            again.check_state(broken)


# ---------------------------------------------------------------- validation

BASE = """
version: 1
name: es
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
    lr: 0.01
    params: [mlp]
train:
  steps: 2000
  eval_every: 5
  schedule:
    - name: fit
      backward: [{loss: loss}]
      step: [opt]
eval:
  split: test
"""


def diagnostics(text: str) -> list[tuple[str, str, str | None]]:
    _, report = compile_text(text, "t.yaml", base_dir=pathlib.Path.cwd())
    return [(d.code, d.message, d.hint) for d in report.sorted()]


def with_train(extra: str, text: str = BASE) -> str:
    return text.replace("  eval_every: 5\n", extra)


@pytest.mark.parametrize(
    ("extra", "code", "words"),
    [
        ("  eval_every: 5\n  early_stopping: {patience: 0}\n", "E-TYPE", "greater than 0"),
        ("  eval_every: 5\n  early_stopping: {patience: -3}\n", "E-TYPE", "greater than 0"),
        ("  eval_every: 5\n  early_stopping: {patience: 2.5}\n", "E-TYPE", "must be an integer"),
        ("  eval_every: 5\n  early_stopping: {min_delta: 0.1}\n", "E-MISSING", "patience"),
        ("  eval_every: 5\n  early_stopping: {patience: 2, min_delta: -0.1}\n", "E-TYPE", "greater than or equal to 0"),
        ("  eval_every: 5\n  early_stopping: {patience: 2, min_delta: .nan}\n", "E-TYPE", "finite"),
        ("  eval_every: 5\n  early_stopping: {patience: 2, min_delat: 0.1}\n", "E-KEY", "min_delat"),
        ("  eval_every: 5\n  early_stoping: {patience: 2}\n", "E-KEY", "early_stoping"),
        ("  early_stopping: {patience: 2}\n", "E-EVAL-EVERY", "train.eval_every is not set"),
    ],
)
def test_bad_early_stopping(extra, code, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    found = diagnostics(with_train(extra))
    assert [c for c, _, _ in found] == [code], found
    assert words in found[0][1], found
    if code == "E-KEY":
        assert found[0][2] == f"did you mean {'min_delta' if 'delat' in words else 'early_stopping'!r}?"


def test_plateau_validation(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sched = "    params: [mlp]\n"

    def with_schedule(line: str, text: str = BASE) -> str:
        return text.replace(sched, sched + f"    schedule: {line}\n")

    found = diagnostics(with_train("", with_schedule("{type: reduce_on_plateau}")))
    assert [c for c, _, _ in found] == ["E-EVAL-EVERY"] and "reduce_on_plateau schedule" in found[0][1]
    found = diagnostics(with_schedule("{type: reduce_on_plateua}"))
    assert found[0][0] == "E-TYPE" and "reduce_on_plateau" in (found[0][2] or found[0][1])
    found = diagnostics(with_schedule("{type: reduce_on_plateau, paitence: 2}"))
    assert [c for c, _, _ in found] == ["E-KEY"] and found[0][2] == "did you mean 'patience'?"
    found = diagnostics(with_schedule("{type: reduce_on_plateau, threshold_mode: relative}"))
    assert [c for c, _, _ in found] == ["E-TYPE"] and "threshold_mode must be one of rel, abs" in found[0][1]
    # the mode is the monitor's: an accuracy monitored with mode max gives a max plateau
    text = with_schedule("{type: reduce_on_plateau}", BASE).replace(
        "  eval_every: 5\n", "  eval_every: 5\n  monitor: {metric: accuracy, mode: max}\n"
    )
    compiled, report = compile_text(text, "t.yaml", base_dir=pathlib.Path.cwd())
    assert compiled is not None, report.render()
    assert compiled.schedules["opt"].mode == "max"
    # early stopping on a metric without a declared direction: E-MONITOR alone says what is wrong
    found = diagnostics(with_train("  eval_every: 5\n  monitor: {metric: accuracy}\n  early_stopping: {patience: 2}\n"))
    assert [c for c, _, _ in found] == ["E-MONITOR"]
