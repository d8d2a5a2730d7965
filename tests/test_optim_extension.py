"""A new optimizer (and schedule) is one class: declared in this file alone, registered, and then
usable from a spec, with its hyper-parameters' descriptions and ranges in the schema and the docs
and their checks located on the spec's keys, without any scratch optimizer built to check them."""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pytest

import onlytorch as ot
from onlytorch import optim
from onlytorch.compile import compile_text
from onlytorch.errors import GraphError
from onlytorch.optim import hyper as H
from onlytorch.optim.hyper import Hyper
from onlytorch.spec import docs
from onlytorch.spec import schema as S
from onlytorch.train import Trainer


class ScaledSGD(optim.Optimizer):
    """Plain SGD with its step scaled: p -= (lr * scale) * grad."""

    name = "scaled_sgd"
    hypers = (
        Hyper("lr", 0.1, "the learning rate", H.LearningRate()),
        Hyper("scale", 1.0, "a factor on every step", H.Real(0.0, 2.0, low_open=True)),
    )
    built = 0  # constructions, to show that validation builds none

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        type(self).built += 1
        super().__init__(*args, **kwargs)

    @classmethod
    def buffer_names(cls, h: Mapping[str, Any]) -> tuple[str, ...]:
        return ()

    def _update(self, live: list) -> None:
        step = self.lr * self._hyper["scale"]
        for p, g, _, _ in live:
            p -= step * g


class ConstantFactor(optim.Schedule):
    """lr = base_lr * factor at every step."""

    factor: float

    name = "constant_factor"
    hypers = (Hyper("factor", 0.5, "the factor on the learning rate", H.Real(0.0, 1.0, low_open=True)),)
    built = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        type(self).built += 1
        super().__init__(*args, **kwargs)

    def lr_at(self, t: int) -> float:
        return self.base_lr * self.factor


SPEC = """\
version: 1
name: scaled
seed: 0
data:
  train: {{source: synthetic.xor, n: 64, noise: 0.05}}
  batch_size: 16
inputs:
  x: {{shape: [2], from: train.x}}
  y: {{shape: [1], from: train.y}}
modules:
  net: [{{linear: 8}}, tanh, {{linear: 1}}]
nodes:
  logits: net(x)
losses:
  loss: bce_with_logits(logits, y)
optimizers:
  opt: {opt}
train:
  steps: 3
  schedule:
    - name: fit
      backward: [{{loss: loss}}]
      step: [opt]
"""


@pytest.fixture
def registered() -> Iterator[None]:
    optim.register(ScaledSGD)
    optim.register(ConstantFactor)
    ScaledSGD.built = ConstantFactor.built = 0
    try:
        yield
    finally:
        optim.unregister(ConstantFactor)
        optim.unregister(ScaledSGD)
    assert "scaled_sgd" not in S.OPTIMIZER_MODELS and "constant_factor" not in S.SCHEDULE_MODELS


def trained(opt: str, steps: int = 3) -> dict[str, np.ndarray]:
    compiled, report = compile_text(SPEC.format(opt=opt), "scaled.yaml")
    assert compiled is not None, report.errors
    trainer = Trainer(compiled)
    for _ in range(steps):
        trainer.run_iteration()
    return {k: v for k, v in trainer.state().items() if k.startswith("param/")}


def test_the_class_declares_its_constructor() -> None:
    assert str(inspect.signature(ScaledSGD)) == "(graph, params, lr=0.1, scale=1.0)"
    g = ot.Graph(dtype="float64")
    w = g.parameter("w", value=np.ones(3))
    opt = ScaledSGD(g, [w], 0.2, 0.5)  # positional, in table order
    assert opt.hyper == {"lr": 0.2, "scale": 0.5}
    assert ScaledSGD._kinds == {"lr": "float", "scale": "float"}
    with pytest.raises(TypeError, match="scale"):
        ScaledSGD(g, [w], scale=0.5, **{"scale2": 1})
    with pytest.raises(GraphError, match=r"ScaledSGD: scale must be a finite number in \(0.0, 2.0\], got 0"):
        ScaledSGD(g, [w], scale=0)
    with pytest.raises(GraphError, match=r"ScaledSGD: scale is fixed when the optimizer is built"):
        opt.scale = 1.0
    loss = g.sum(w * w)
    g.forward_node(loss)
    g.backward_nodes([w], loss)
    opt.step()
    np.testing.assert_array_equal(w.value, 1.0 - 0.1 * 2.0)
    # The state round trip is the base class's, from the table's kinds.
    state = opt.state_dict()
    assert float(state["hyper/scale"]) == 0.5
    ScaledSGD(g, [w], scale=1.5).load_state_dict(state)
    with pytest.raises(GraphError, match=r"'hyper/scale' is invalid: ScaledSGD: scale must be"):
        opt.load_state_dict({**state, "hyper/scale": np.array(3.0)})


def test_the_schema_and_the_docs_describe_it(registered: None) -> None:
    props = S.OPTIMIZER_MODELS["scaled_sgd"].model_json_schema()["properties"]
    assert props["scale"]["description"] == "a factor on every step; in (0, 2]"
    assert (props["scale"]["exclusiveMinimum"], props["scale"]["maximum"], props["scale"]["default"]) == (0, 2, 1.0)
    assert props["lr"]["minimum"] == 0 and props["lr"]["default"] == 0.1
    whole = S.Spec.model_json_schema()["$defs"]
    assert "Optimizer_scaled_sgd" in whole and "Schedule_constant_factor" in whole
    text = docs.render_reference()
    assert "#### `type: scaled_sgd`" in text
    assert "| `scale` | float | `1.0` | a factor on every step; in (0, 2] |" in text
    assert "| `factor` | float | `0.5` | the factor on the learning rate; in (0, 1] |" in text


def test_a_spec_trains_with_it_and_builds_it_once(registered: None) -> None:
    got = trained("{type: scaled_sgd, lr: 0.1, scale: 0.5, params: [net]}")
    # One real optimizer per compile (the trainer's), none to check the values.
    assert ScaledSGD.built == 1
    # (0.1 * 0.5) * g is 0.05 * g exactly: the same run as sgd with lr 0.05, bit for bit.
    want = trained("{type: sgd, lr: 0.05, params: [net]}")
    assert sorted(got) == sorted(want)
    for key in got:
        np.testing.assert_array_equal(got[key], want[key])
    changed = trained("{type: scaled_sgd, lr: 0.1, scale: 1.5, params: [net]}")
    assert any(not np.array_equal(changed[k], want[k]) for k in want)


def test_a_schedule_declared_here_sets_the_lr(registered: None) -> None:
    compiled, report = compile_text(
        SPEC.format(opt="{type: scaled_sgd, lr: 0.1, params: [net], schedule: {type: constant_factor, factor: 0.25}}"),
        "scaled.yaml",
    )
    assert compiled is not None, report.errors
    assert (ScaledSGD.built, ConstantFactor.built) == (1, 1)
    assert compiled.optimizers["opt"].lr == 0.1 * 0.25


@pytest.mark.parametrize(
    ("opt", "path", "message"),
    [
        (
            "{type: scaled_sgd, scale: 3.0, params: [net]}",
            ("optimizers", "opt", "scale"),
            "optimizer opt: ScaledSGD: scale must be a finite number in (0.0, 2.0], got 3.0",
        ),
        (
            "{type: scaled_sgd, lr: -1.0, params: [nowhere]}",
            ("optimizers", "opt", "lr"),
            "optimizer opt: ScaledSGD: invalid learning rate lr=-1.0 (must be a finite number >= 0)",
        ),
        (
            "{type: scaled_sgd, params: [net], schedule: {type: constant_factor, factor: 0}}",
            ("optimizers", "opt", "schedule", "factor"),
            "schedule of optimizer opt: ConstantFactor: factor must be a finite number in (0.0, 1.0], got 0.0",
        ),
    ],
)
def test_an_out_of_range_value_is_located_on_its_key(
    registered: None, opt: str, path: tuple[str, ...], message: str
) -> None:
    text = SPEC.format(opt=opt)
    compiled, report = compile_text(text, "scaled.yaml")
    assert compiled is None
    found = [d for d in report.errors if d.code == "E-TYPE"]
    assert [(d.path, d.message) for d in found] == [(path, message)]
    d = found[0]
    line = text.splitlines()[d.line - 1]
    assert line.startswith("  opt: ") and line[: d.column - 1].endswith(f"{path[-1]}: ")
    # Checked from the class's table alone: no optimizer or schedule was built.
    assert (ScaledSGD.built, ConstantFactor.built) == (0, 0)


def test_unregistered_it_is_unknown_again(registered: None) -> None:
    optim.unregister(ScaledSGD)
    try:
        compiled, report = compile_text(SPEC.format(opt="{type: scaled_sgd, params: [net]}"), "scaled.yaml")
        assert compiled is None
        assert any("scaled_sgd" in d.message for d in report.errors)
        with pytest.raises(ValueError, match="is not registered"):
            optim.unregister(ScaledSGD)
    finally:
        optim.register(ScaledSGD)
    with pytest.raises(ValueError, match="named 'scaled_sgd' exists"):
        optim.register(ScaledSGD)


def test_the_footprint_counts_state_buffers_from_the_declarations() -> None:
    from onlytorch.footprint import state_buffers

    assert state_buffers("adam", {"amsgrad": True}) == 3
    assert state_buffers("adamw", {"betas": [0.5, 0.9]}) == 2
    assert state_buffers("sgd", {"momentum": 0.9}) == 1
    assert state_buffers("rmsprop", {"momentum": 0.9, "centered": True}) == 3
    assert state_buffers("sgd", {"momentum": -1.0}) == 0  # invalid: the compiler reports it
    assert state_buffers("nope", {}) == 0


def test_a_class_that_cannot_work_is_refused_when_registered() -> None:
    class Nameless(optim.Optimizer):
        hypers = (Hyper("lr", 0.1, "the learning rate", H.LearningRate()),)

    class NoLr(optim.Optimizer):
        name = "no_lr"
        hypers = (Hyper("scale", 1.0, "a factor", H.Real(0.0, 2.0)),)

    class TupleBuffers(optim.Optimizer):
        name = "tuple_buffers"
        hypers = (Hyper("lr", 0.1, "the learning rate", H.LearningRate()),)
        buffer_names = ()  # type: ignore[assignment]

    class NoLrAt(optim.Schedule):
        name = "no_lr_at"

    cases = [
        (Nameless, "declare the optimizer's registry name as a class attribute"),
        (NoLr, "an optimizer's first hyper-parameter is its learning rate"),
        (TupleBuffers, "buffer_names must be a classmethod"),
        (NoLrAt, "a schedule gives the learning rate of step t in lr_at"),
    ]
    for cls, message in cases:
        with pytest.raises((TypeError, ValueError)) as e:
            optim.register(cls)
        assert message in str(e.value), cls
    assert not {"no_lr", "tuple_buffers", "optimizer"} & set(optim.OPTIMIZERS)
    assert "no_lr_at" not in optim.SCHEDULES
