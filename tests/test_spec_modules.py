"""Subgraph modules (arguments, own parameters, shared across calls) and target copies
(copy_of + sync) compiled from specs and run by the trainer."""

import numpy as np
import pytest

from onlytorch.compile import compile_text
from onlytorch.train import Trainer

SUBGRAPH = """
version: 1
name: subgraph
seed: 3
dtype: float64
data:
  train: {source: synthetic.regression, n: 64, features: 3}
  batch_size: 16
inputs:
  x: {shape: [3], from: train.x}
  y: {shape: [1], from: train.y}
modules:
  block:
    args: [a, shift]
    params:
      w: {shape: [3, 1], init: normal, init_args: {std: 0.1}}
    nodes:
      h: a @ w
    output: h + shift
nodes:
  p1: block(x, 0.5)
  p2: block(2 * x, y)
losses:
  loss: mse(p1, y) + mse(p2 - y, p1)
optimizers:
  opt: {type: sgd, lr: 0.05, params: [block]}
train:
  steps: 3
  schedule:
    - name: fit
      backward: [{loss: loss}]
      step: [opt]
"""


def test_a_subgraph_module_shares_its_parameters_across_calls():
    compiled, report = compile_text(SUBGRAPH)
    assert compiled is not None, report.render()
    block = compiled.modules["block"]
    assert [p.name for p in block.params] == ["block.w"] and block.calls == 2
    g = compiled.graph
    trainer = Trainer(compiled)
    trainer._next_batch()
    x, y = g.get_node_value("x"), g.get_node_value("y")
    w = g.get_node_value("block.w").copy()
    loss = float(g.forward_node(compiled.losses["loss"]))
    p1 = x @ w + 0.5
    p2 = (2 * x) @ w + y
    expected = np.mean((p1 - y) ** 2) + np.mean((p2 - y - p1) ** 2)
    assert loss == pytest.approx(expected, rel=1e-12)
    # The gradient reaches the one shared weight through both calls.
    (gw,) = g.grad(compiled.losses["loss"], [g.node("block.w")])
    n = len(x)
    d1 = 2 * (p1 - y) / n
    d2 = 2 * (p2 - y - p1) / n
    want = x.T @ d1 + (2 * x).T @ d2 - x.T @ d2
    np.testing.assert_allclose(gw, want, rtol=1e-10)


TARGET = """
version: 1
name: target
dtype: float64
data:
  train: {source: synthetic.regression, n: 64, features: 3}
  batch_size: 16
inputs:
  s: {shape: [3], from: train.x}
  r: {shape: [1], from: train.y}
modules:
  Q: [{linear: 4}, tanh, {linear: 2}]
  Q_target: {copy_of: Q, sync: SYNC}
nodes:
  q: max(Q(s), axis=1, keepdims=True)
  td: r + 0.9 * stop_gradient(max(Q_target(s), axis=1, keepdims=True))
losses:
  loss: mse(q, td)
optimizers:
  opt: {type: sgd, lr: 0.1, params: [Q]}
train:
  steps: 4
  schedule:
    - name: fit
      backward: [{loss: loss}]
      step: [opt]
"""


def _values(g, params):
    return [g.get_node_value(p).copy() for p in params]


def test_a_target_copy_starts_equal_gets_no_gradient_and_syncs_every_n_steps():
    compiled, report = compile_text(TARGET.replace("SYNC", "{every: 2}"))
    assert compiled is not None, report.render()
    g = compiled.graph
    src, dst = compiled.modules["Q"].params, compiled.modules["Q_target"].params
    assert [p.name for p in dst] == ["Q_target.0.weight", "Q_target.0.bias", "Q_target.2.weight", "Q_target.2.bias"]
    for a, b in zip(_values(g, src), _values(g, dst)):
        np.testing.assert_array_equal(a, b)
    phase = compiled.phases[0]
    assert {p.name for p in phase.backward[0].reached} == {p.name for p in src}
    trainer = Trainer(compiled)
    start = _values(g, dst)
    trainer.run_iteration()  # step 1: no sync
    assert all(g.get_node_grad(p) is None for p in dst)
    for a, b in zip(start, _values(g, dst)):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(_values(g, src), start))
    trainer.run_iteration()  # step 2: hard copy
    for a, b in zip(_values(g, src), _values(g, dst)):
        np.testing.assert_array_equal(a, b)


def test_polyak_sync_moves_the_target_by_tau():
    compiled, _ = compile_text(TARGET.replace("SYNC", "{tau: 0.25}"))
    g = compiled.graph
    src, dst = compiled.modules["Q"].params, compiled.modules["Q_target"].params
    trainer = Trainer(compiled)
    before = _values(g, dst)
    trainer.run_iteration()
    for s, b, now in zip(_values(g, src), before, _values(g, dst)):
        np.testing.assert_allclose(now, 0.75 * b + 0.25 * s, rtol=1e-12)


def test_an_optimizer_may_not_train_a_target_copy():
    compiled, report = compile_text(
        TARGET.replace("SYNC", "{every: 2}").replace("params: [Q]", "params: [Q, Q_target]")
    )
    assert compiled is None
    assert [d.code for d in report.errors] == ["E-PHASE"]
    assert "target-copy parameters" in report.errors[0].message


LAYERED = """version: 1
name: layered
data:
  train: {source: synthetic.xor, n: 64}
  batch_size: 16
inputs:
  x: {shape: [2], from: train.x}
  y: {shape: [1], from: train.y}
modules:
  net: [{linear: 4}, LAYER, {linear: 1}]
nodes:
  p: net(x)
losses:
  loss: mse(p, y)
optimizers:
  opt: {type: sgd, params: [net], lr: 0.1}
train:
  steps: 1
  schedule: [{name: fit, backward: [{loss: loss}], step: [opt]}]
"""


@pytest.mark.parametrize(
    ("layer", "hint"),
    [
        ("relu_", "did you mean 'relu'?"),
        ("argmax", "argmax has no derivative: call it in a node instead, e.g. nodes: {out: argmax(...)}"),
        (
            "{concat: {axis: 1}}",
            "concat takes several inputs: call it in a node instead, e.g. nodes: {out: concat(...)}",
        ),
    ],
)
def test_an_op_that_cannot_be_a_layer_is_named_so(layer: str, hint: str) -> None:
    text = LAYERED.replace("LAYER", layer)
    _, report = compile_text(text, "layers.yaml")
    d = next(d for d in report.errors if d.code == "E-MODULE")
    assert d.hint == hint
    assert d.message.startswith("unknown layer ")
    assert (d.line, d.column) == (10, 22)
