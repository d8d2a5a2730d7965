"""Scheduled loss weights (a backward's ``weight``: a number or a schedule of the iteration).

The schedules reuse the learning-rate schedules' closed forms (checked against torch's schedulers
for one of them); the gradient of a weighted backward is weight_at(step) times the unweighted one;
the metrics log holds the raw loss and, beside it, the weighted one; a run resumed half-way up a
ramp ends bit for bit as the uninterrupted one; and every mistake in a weight is a located
diagnostic."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from onlytorch_cli.main import cli

from onlytorch import optim
from onlytorch.compile import compile_text
from onlytorch.compiler.summary import summarize
from onlytorch.optim.weights import LinearRamp, WeightSchedule, weight_schedules
from onlytorch.train import Diverged, Trainer

SPEC = """
version: 1
name: weights
seed: 1
dtype: float64
data:
  train: {source: synthetic.regression, n: 64, features: 3}
  batch_size: 16
inputs:
  x: {shape: [3], from: train.x}
  y: {shape: [1], from: train.y}
modules:
  net: [{linear: 8}, tanh, {linear: 1}]
nodes:
  p: net(x)
losses:
  fit: mse(p, y)
  l2: mean(p ** 2)
optimizers:
  opt: {type: sgd, lr: 0.05, params: [net]}
train:
  steps: 12
  log_every: 1
  schedule:
    - name: main
      backward:
        - {loss: fit, retain_graph: true}
        - {loss: l2, weight: WEIGHT}
      step: [opt]
"""
RAMP = "{type: linear, start: 0.0, end: 2.0, steps: 8, begin: 2}"


def spec_with(weight: str, **replace: str) -> str:
    text = SPEC.replace("WEIGHT", weight)
    for old, new in replace.items():
        text = text.replace(old, new)
    return text


def compiled_with(weight: str, **replace: str):  # type: ignore[no-untyped-def]
    compiled, report = compile_text(spec_with(weight, **replace))
    assert compiled is not None, report.render()
    return compiled


# ---------------------------------------------------------------- the schedules' values


def test_a_linear_ramp_holds_start_then_climbs_then_holds_end() -> None:
    ramp = WeightSchedule("linear", {"start": 0.0, "end": 2.0, "steps": 8, "begin": 2})
    got = [ramp.at(t) for t in range(13)]
    assert got == [0.0, 0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.0, 2.0]
    down = WeightSchedule("linear", {"start": 1.0, "end": 0.0, "steps": 4})  # begin defaults to 0
    assert [down.at(t) for t in (0, 1, 4, 100)] == [1.0, 0.75, 0.0, 0.0]
    assert WeightSchedule("linear", {"steps": 10}).at(5) == 0.5  # start 0, end 1 by default


def test_an_lr_style_schedule_scales_its_value_as_torch_scales_a_base_lr() -> None:
    value, t_max, eta_min = 0.8, 10, 0.1
    cosine = WeightSchedule("cosine_annealing_lr", {"value": value, "T_max": t_max, "eta_min": eta_min})
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=value)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t_max, eta_min=eta_min)
    for t in range(25):
        assert cosine.at(t) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12, abs=1e-12), t
        opt.step()
        ref.step()
    step = WeightSchedule("step_lr", {"value": 2.0, "step_size": 3, "gamma": 0.5})
    assert [step.at(t) for t in range(7)] == [2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 0.5]
    # value defaults to 1.0: the schedule's own factors
    assert WeightSchedule("exponential_lr", {"gamma": 0.5}).at(3) == 0.125


def test_the_vocabulary_is_linear_plus_the_closed_form_lr_schedules() -> None:
    names = weight_schedules()
    assert names["linear"] is LinearRamp
    for name, cls in optim.SCHEDULES.items():
        if name == "reduce_on_plateau":  # follows evaluations of the monitor, not the iteration
            assert name not in names
        else:
            assert names[name] is cls  # the same class: one definition of each schedule


def test_a_registered_schedule_becomes_a_weight_schedule_too() -> None:
    class Halving(optim.Schedule):
        name = "halving_test"
        hypers = (optim.Hyper("every", 2, "steps between halvings", optim.Count(1)),)

        def lr_at(self, t: int) -> float:
            return self.base_lr * 0.5 ** (t // self.every)

    optim.register(Halving)
    try:
        compiled = compiled_with("{type: halving_test, value: 4.0, every: 3}")
        b = compiled.phases[0].backward[1]
        assert [b.weight_at(t) for t in (0, 3, 6)] == [4.0, 2.0, 1.0]
    finally:
        optim.unregister(Halving)
    compiled, report = compile_text(spec_with("{type: halving_test, every: 3}"))
    assert compiled is None and "unknown type 'halving_test'" in report.render()


# ---------------------------------------------------------------- the lowering


def test_the_weight_is_a_scalar_input_that_no_spec_name_can_clash_with() -> None:
    compiled = compiled_with(RAMP)
    fit, l2 = compiled.phases[0].backward
    assert fit.weight_node is None and fit.loss_node.index == compiled.losses["fit"].index
    node = compiled.graph.record(l2.weight_node)
    assert node.kind == "input" and node.shape == () and node.dtype == np.float64
    assert node.name == "main/l2:weight" and node.name not in compiled.names
    report = summarize(compiled)
    assert "backward 2: l2 x linear 0->2 over 8 steps from step 2 reaches net (4 tensors)" in report
    assert ":weight" not in report  # not in the node list: it is no name of the spec


def test_a_constant_weight_is_reported_as_before() -> None:
    compiled = compiled_with("0.5")
    assert compiled.phases[0].backward[1].weight == 0.5
    assert "backward 2: l2 x 0.5 reaches" in summarize(compiled)
    unweighted = compiled_with("1")
    assert unweighted.phases[0].backward[1].weight_node is None
    cosine = compiled_with("{type: cosine_annealing_lr, value: 0.5, T_max: 100}")
    assert "backward 2: l2 x cosine_annealing_lr of 0.5 (T_max=100, eta_min=0) reaches" in summarize(cosine)


# one backward (l2, to the net's parameters) and no optimizer step: the gradients stay in the graph
ONLY_L2 = {
    "        - {loss: fit, retain_graph: true}\n": "",
    "{loss: l2, weight:": "{loss: l2, wrt: [net], weight:",
    "step: [opt]": "step: []",
}


def _gradients(compiled, step: int) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    """The gradients one iteration at trainer step ``step`` leaves (the phase clears them before
    its backward calls and steps nothing, so they stay)."""
    trainer = Trainer(compiled)
    trainer.step = step
    trainer.run_iteration()
    return {p.name: np.array(compiled.graph.get_node_grad(p)) for p in compiled.graph.parameters()}


@pytest.mark.parametrize("step", [0, 3, 7, 11])
def test_the_gradient_is_the_weight_at_the_step_times_the_unweighted_one(step: int) -> None:
    # the same parameters and batch (a fresh trainer of the same seed), weighted and not
    weighted = compiled_with(RAMP, **ONLY_L2)
    plain = compiled_with("1.0", **ONLY_L2)
    w = weighted.phases[0].backward[0].weight_at(step)
    assert w == LinearRamp.lr_at(_ramp_probe(), step)
    got, ref = _gradients(weighted, step), _gradients(plain, step)
    for name in ref:
        np.testing.assert_allclose(got[name], w * ref[name], rtol=1e-12, atol=1e-15, err_msg=name)
    if step >= 3:
        assert any(np.abs(ref[n]).max() > 1e-6 for n in ref)  # a gradient that could be wrong


def _ramp_probe() -> LinearRamp:
    probe = LinearRamp.__new__(LinearRamp)
    probe._set_hyper(LinearRamp.check_hyper({"start": 0.0, "end": 2.0, "steps": 8, "begin": 2}))
    return probe


def test_accumulation_alone_makes_a_weight_node_fed_with_one_over_k() -> None:
    compiled = compiled_with("1.0", **{"step: [opt]": "step: [opt]\n      accumulate: 4"})
    fit, l2 = compiled.phases[0].backward
    assert fit.weight_node is not None and l2.weight_node is not None and not fit.weighted
    trainer = Trainer(compiled)
    trainer._feed_weights(compiled.phases[0], 0.25)
    assert compiled.graph.get_node_value(fit.weight_node) == 0.25


# ---------------------------------------------------------------- logging, training, resuming


def _train(tmp: pathlib.Path, text: str, out: str, *extra: str) -> list[dict]:
    path = tmp / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(cli, ["train", str(path), "--out", str(tmp / out), "-q", *extra])
    assert result.exit_code == 0, result.output
    lines = (tmp / out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_the_log_holds_the_raw_loss_and_the_weighted_one(tmp_path: pathlib.Path) -> None:
    rows = [r for r in _train(tmp_path, spec_with(RAMP), "run") if r["kind"] == "train"]
    assert [r["step"] for r in rows] == list(range(1, 13))
    ramp = _ramp_probe()
    for r in rows:
        assert "main/fit:weighted" not in r  # weight 1: logged once
        # the row of step s is written after the iteration that ran at step s - 1
        assert r["main/l2:weighted"] == r["main/l2"] * ramp.lr_at(r["step"] - 1)
    ratios = [r["main/l2:weighted"] / r["main/l2"] for r in rows]
    assert ratios[:3] == [0.0, 0.0, 0.0] and ratios[-1] == 2.0 and ratios == sorted(ratios)
    # the raw value is the loss as defined: at step 1, with the same parameters and batch, the
    # unweighted spec logs the same number
    plain = _train(tmp_path, spec_with("1.0"), "plain")
    assert plain[0]["main/l2"] == rows[0]["main/l2"] and "main/l2:weighted" not in plain[0]
    csv = (tmp_path / "run" / "metrics.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    assert "main/l2" in csv and "main/l2:weighted" in csv


def test_a_run_resumed_half_way_up_the_ramp_ends_bit_for_bit_as_the_whole_one(tmp_path: pathlib.Path) -> None:
    text = spec_with(RAMP, **{"steps: 12": "steps: 12\n  checkpoint_every: 1"})
    whole = _train(tmp_path, text, "whole")
    half = _train(tmp_path, text, "half", "--set", "train.steps=5")
    assert half[-1]["step"] == 5 and 0 < half[-1]["main/l2:weighted"] / half[-1]["main/l2"] < 2
    resumed = _train(tmp_path, text, "half", "--resume", "--set", "train.steps=12")
    drop = {"time"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in resumed] == [
        {k: v for k, v in r.items() if k not in drop} for r in whole
    ]
    with (
        np.load(tmp_path / "whole/checkpoints/last.npz") as a,
        np.load(tmp_path / "half/checkpoints/last.npz") as b,
    ):
        assert sorted(a.files) == sorted(b.files)
        assert all(a[k].tobytes() == b[k].tobytes() for k in a.files)


# ---------------------------------------------------------------- mistakes


@pytest.mark.parametrize(
    ("weight", "message", "column_of"),
    [
        ("{type: cosine, T_max: 3}", "unknown type 'cosine'; use one of: linear, step_lr", "cosine"),
        ("{type: reduce_on_plateau}", "unknown type 'reduce_on_plateau'", "reduce_on_plateau"),
        ("{steps: 3}", "weight needs the key 'type'; type is one of: linear,", "{steps"),
        ("{type: linear, steps: 0}", "weight schedule: LinearRamp: steps must be an integer >= 1, got 0", "0}"),
        (
            "{type: linear, steps: 3, value: 2}",
            "unknown key 'value' (known here: type, steps, start, end, begin)",
            "value",
        ),
        ("{type: step_lr, step_size: 2, value: .nan}", "invalid value=nan (must be a finite number)", ".nan"),
        ("{type: step_lr, step_size: 2, gamma: -1}", "gamma must be a finite number >= 0.0, got -1.0", "-1"),
        ("true", "weight: must be a number, not true", "true"),
        ("abc", "must be a number or a schedule ({type: linear, steps: N}, ...), got 'abc'", "abc"),
    ],
)
def test_a_bad_weight_is_one_located_diagnostic(weight: str, message: str, column_of: str) -> None:
    text = spec_with(weight)
    compiled, report = compile_text(text, "w.yaml")
    assert compiled is None
    errors = report.errors
    assert len(errors) == 1, report.render()
    d = errors[0]
    assert message in d.message, d.message
    line = text.splitlines()[d.line - 1]
    assert "{loss: l2, weight:" in line and line.index(column_of, line.index("weight:")) + 1 == d.column
    if "cosine" in weight:
        assert d.hint == "did you mean 'warmup_cosine'?"


def test_a_weight_that_overflows_stops_the_run_as_diverged() -> None:
    compiled = compiled_with("{type: exponential_lr, gamma: 1.0e200}", **ONLY_L2)
    trainer = Trainer(compiled)
    trainer.step = 2  # a weight of 1e400: inf
    with pytest.raises(Diverged, match=r"loss 'l2' times its weight is inf"):
        trainer.run_iteration()
