"""Train metrics on the training forward (``train.log_train: mean``; onlytorch/train_metrics.py):
each metric computed in the forward a phase already runs for its losses (train mode, the batch of
each micro-batch, before the step), by the last active phase whose forward gives it for the cost of
its own nodes; the others after the iteration (no_grad, eval mode). Checked against values
recomputed at each backward call of a reference run that logs ``last`` (and so computes no metric
itself): the rows, which phase and which run, the micro-batch weights, the fallback, what it costs
in forwards, and the final table of ``onlytorch train``."""

from __future__ import annotations

import pathlib
import re
import warnings

import numpy as np
import pytest

from onlytorch.app import load_spec
from onlytorch.ops.registry import REGISTRY
from onlytorch.train import Trainer, train_loop
from onlytorch.train_metrics import loss_targets
from tests.cli import ok, rows, spec

SPECS = pathlib.Path(__file__).resolve().parents[1] / "specs"

# xor with dropout (so train mode shows), 3 micro-batches per step over 73 samples in batches of 16
# (remainder batches of 9), and a metric that calls the module again: no phase covers it.
DROPOUT_SPEC = """
version: 1
name: dropout-metrics
seed: 0
data:
  train: {source: synthetic.xor, n: 73, noise: 0.05}
  batch_size: 16
inputs:
  x: {shape: [2], from: train.x}
  y: {shape: [1], from: train.y}
modules:
  net: [{linear: 8}, tanh, {dropout: 0.5}, {linear: 1}]
nodes:
  logits: net(x)
losses:
  loss: bce_with_logits(logits, y)
metrics:
  accuracy: mean(equal(greater(logits, 0), y))
  again: mean(net(x))
optimizers:
  opt: {type: adam, lr: 0.05, params: [net]}
train:
  steps: 12
  log_every: 4
  schedule:
    - name: fit
      accumulate: 3
      backward: [{loss: loss}]
      step: [opt]
"""


def make(path: pathlib.Path | str, *overrides: str) -> Trainer:
    return Trainer(load_spec(path, overrides=list(overrides)).compiled)


def logged(t: Trainer, steps: int) -> list[dict[str, float]]:
    out: list[dict[str, float]] = []
    train_loop(t, steps, on_log=lambda record: out.append({"step": record.step, **record.values}))
    return out


def at_backward(t: Trainer, metrics: list[str]) -> list[dict[str, float]]:
    """At each backward call of ``t``: the metrics as its training forward sees them (train mode,
    before the step; recomputed from that forward's values) and the rows of the batch."""
    g, seen = t.g, []
    backward = g.backward_nodes_ex

    def recording(targets, loss, retain_graph=False):
        assert g.is_train_mode() and g.is_grad_enabled()
        seen.append({**{m: float(g.forward_node(t.c.metrics[m])) for m in metrics}, "rows": t._drawn})
        return backward(targets, loss, retain_graph)

    g.backward_nodes_ex = recording  # type: ignore[method-assign]
    return seen


@pytest.fixture
def dropout_spec(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "dropout.yaml"
    path.write_text(DROPOUT_SPEC)
    return path


def test_rows_are_train_mode_values_weighted_by_rows_and_the_fallback_is_after_the_step(dropout_spec):
    steps, k = 12, 4
    t = make(dropout_spec)
    assert t.metric_plan is not None and t.metric_plan.covers == [("accuracy",)]
    got = logged(t, steps)
    ref = make(dropout_spec, "train.log_train=last")
    calls = at_backward(ref, ["accuracy"])
    per_step = []  # (accuracy and its rows over the step's micro-batches, `again` after it and its rows)
    for _ in range(steps):
        ref.run_iteration()
        micro = calls[-3:]
        n = np.array([c["rows"] for c in micro], dtype=float)
        acc = float((np.array([c["accuracy"] for c in micro]) * n).sum() / n.sum())
        per_step.append((acc, n.sum(), ref.train_metrics(["again"])["train/again"], float(ref._drawn)))
    assert len(calls) == 3 * steps and {c["rows"] for c in calls} == {16, 9}
    for row, start in zip(got, range(0, steps, k)):
        window = per_step[start : start + k]
        for key, (value, weight) in {"accuracy": (0, 1), "again": (2, 3)}.items():
            v = np.array([w[value] for w in window])
            n = np.array([w[weight] for w in window])
            assert row[f"train/{key}"] == pytest.approx(float((v * n).sum() / n.sum()), rel=1e-12, abs=0)
    # the same weights either way: metrics on the training forward draw nothing and change nothing
    for key, value in t.state().items():
        assert value.tobytes() == ref.state()[key].tobytes(), key


def test_which_phase_covers_which_metric():
    gan = make(SPECS / "gan_ring.yaml").metric_plan
    assert gan is not None
    # the generator phase runs D on fakes only: D(real) would be a second network's forward there
    assert gan.covers == [("d_real_mean", "d_fake_mean"), ("d_fake_mean",)]
    by_phase, rest = gan.assign((0, 1))
    assert {i: m.names for i, m in by_phase.items()} == {0: ("d_real_mean",), 1: ("d_fake_mean",)} and rest == ()
    by_phase, rest = gan.assign((0,))  # an iteration where only the discriminator runs
    assert {i: m.names for i, m in by_phase.items()} == {0: ("d_real_mean", "d_fake_mean")} and rest == ()
    assert make(SPECS / "wgan_gp.yaml").metric_plan.covers == [("wasserstein",), ()]  # type: ignore[union-attr]
    # multitask's accuracy calls cls_head again (a matrix product the losses do not compute)
    multitask = make(SPECS / "multitask.yaml").metric_plan
    assert multitask is not None and multitask.covers == [()] and multitask.assign((0,))[1] == ("accuracy",)
    assert make(SPECS / "xor.yaml", "train.log_train=last").metric_plan is None


@pytest.mark.parametrize(
    ("metric", "covered"),
    [
        ("mean(equal(greater(logits, 0), y))", True),
        ("mean(sigmoid(logits))", True),
        ("mean(dropout(logits, 0.5))", False),  # draws random numbers the training would not
        ("mean(w_extra)", False),  # reads a parameter (no module of the losses)
        ("mean(x)", True),  # an input the phase feeds
    ],
)
def test_only_cheap_harmless_nodes_are_added_to_a_training_forward(tmp_path, metric, covered):
    text = DROPOUT_SPEC.replace("  again: mean(net(x))\n", "").replace("mean(equal(greater(logits, 0), y))", metric)
    text = text.replace("  net: [", "  extra: [{linear: 1}]\n  net: [")
    text = text.replace("mean(w_extra)", "mean(extra(y))")
    path = tmp_path / "s.yaml"
    path.write_text(text)
    plan = make(path).metric_plan
    assert plan is not None and plan.covers == [("accuracy",) if covered else ()]


def test_the_last_phase_that_covers_a_metric_on_its_last_run_computes_it():
    overrides = ["data.train.n=96", "data.batch_size=32", "train.log_every=1"]
    got = logged(make(SPECS / "gan_ring.yaml", *overrides), 3)
    ref = make(SPECS / "gan_ring.yaml", *overrides, "train.log_train=last")
    calls = at_backward(ref, ["d_real_mean", "d_fake_mean"])
    for row in got:
        ref.run_iteration()
        d_call, g_call = calls[-2:]
        assert row["train/d_real_mean"] == d_call["d_real_mean"]  # the discriminator phase's
        assert row["train/d_fake_mean"] == g_call["d_fake_mean"]  # the generator phase's: fresh fakes
        assert g_call["d_fake_mean"] != d_call["d_fake_mean"]
    # wgan_gp: the critic runs 5 times an iteration; its last run gives the metric
    overrides = ["data.train.n=512", "data.batch_size=64", "train.log_every=1"]
    got = logged(make(SPECS / "wgan_gp.yaml", *overrides), 2)
    ref = make(SPECS / "wgan_gp.yaml", *overrides, "train.log_train=last")
    calls = at_backward(ref, ["wasserstein"])
    for row in got:
        ref.run_iteration()
        critic = calls[-6:-1]
        assert row["train/wasserstein"] == critic[-1]["wasserstein"]
        assert len({c["wasserstein"] for c in critic}) == 5  # each run saw another batch


def test_a_covered_metric_costs_no_forward_and_only_its_own_nodes():
    steps = 9
    counts = {}
    for mode in ("mean", "last"):
        t = make(SPECS / "xor.yaml", f"train.log_train={mode}", "train.log_every=100")
        forward = t.g.forward_node
        n = [0]

        def counting(node, forward=forward, n=n):
            n[0] += 1
            return forward(node)

        t.g.forward_node = counting  # type: ignore[method-assign]
        logged(t, steps)
        counts[mode] = n[0]
    # one forward per iteration (its losses and, with mean, the metric); last adds one at the row
    assert counts == {"mean": steps, "last": steps + 1}
    t = make(SPECS / "xor.yaml")
    assert t.metric_plan is not None
    measure = t.metric_plan.assign((0,))[0][0]
    phase = t.c.phases[0]
    ops = [n.op.name for n in t.g.forward_order(measure.forward) if n.op is not None]
    without = [n.op.name for n in t.g.forward_order(loss_targets(phase, t.c.losses)) if n.op is not None]
    assert sorted(set(ops) - set(without)) == ["equal", "greater", "mean"] and len(ops) == len(without) + 3


def test_the_window_start_travels_in_the_checkpoint():
    overrides = ["data.train.n=73", "data.batch_size=16", "train.log_every=5"]
    full = make(SPECS / "xor.yaml", *overrides)
    logged(full, 12)
    assert full.last_row is not None and full.last_row[:2] == (11, 12)
    first = make(SPECS / "xor.yaml", *overrides)
    with pytest.raises(KeyboardInterrupt):
        train_loop(first, 12, on_log=lambda r: None, should_stop=lambda: first.step == 7)
    state = first.state()
    assert int(state["logwin/since"]) == 6
    second = make(SPECS / "xor.yaml", *overrides)
    second.restore(state)
    logged(second, 12)
    assert second.last_row == full.last_row
    bad = make(SPECS / "xor.yaml", *overrides)
    with pytest.raises(Exception, match="logwin/since"):
        bad.restore({**state, "logwin/since": np.array([6])})


def test_the_final_table_is_the_last_train_row(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = ok("train", spec("xor"), "--out", "run", "--set", "train.steps=60", "-q").output
    assert "final training losses (step 60), mean of steps 51-60" in out
    last = [r for r in rows(tmp_path / "run") if r["kind"] == "train"][-1]
    table = out.split("final training losses", 1)[1].split("evaluation on", 1)[0]
    shown = dict(re.findall(r"^(\S+)\s+(\S+)$", table, re.M))
    assert set(shown) == {"fit/loss", "train/accuracy"}
    for key, text in shown.items():
        assert text == f"{last[key]:.6g}", key
    out = ok("train", spec("xor"), "--out", "run2", "--set", "train.steps=60", "--set", "train.log_train=last", "-q")
    assert "final training losses (step 60)\n" in out.output


def test_the_mean_op_is_numpys_mean_bit_for_bit():
    # the op a train metric usually ends in, made cheap (onlytorch/ops/reduce.py): the same bits
    mean = REGISTRY["mean"].forward
    rng = np.random.default_rng(5)
    for dtype in (np.float32, np.float64, np.int64, np.bool_):
        for shape in ((1,), (7,), (64, 1), (33, 10), (0,)):
            for _ in range(10):
                if np.dtype(dtype).kind == "f":
                    x = (rng.normal(size=shape) * 10.0 ** rng.uniform(-20, 20)).astype(dtype)
                else:
                    x = rng.integers(-1000, 1000, size=shape).astype(dtype)
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the mean of nothing: NaN, with a warning either way
                    want = np.asarray(np.mean(x))
                    got = np.asarray(mean(x))
                assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), (dtype, shape)
    x = rng.normal(size=(5, 4)).astype(np.float32)
    assert mean(x, axis=1).tobytes() == np.mean(x, axis=1).tobytes()
