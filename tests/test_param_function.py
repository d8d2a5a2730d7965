"""param("M.NAME") in expressions: a module's parameter by the name onlytorch graph lists, the very
parameter node (its gradient is the parameter's): weight penalties and weight tying across modules,
checked against PyTorch in float64; the optimizers' params and wrt mean what they meant; a
parameter of a subgraph module may be read before (or without) a call of it; every mistake
located, with a did-you-mean."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from onlytorch.compile import compile_text
from onlytorch.compiler.drawing import mermaid

BASE = """
version: 1
name: param
seed: 1
dtype: float64
data:
  train: {source: synthetic.regression, n: 64, features: 3}
  batch_size: 16
inputs:
  x: {shape: [3], from: train.x}
  y: {shape: [1], from: train.y}
modules:
  net: [{linear: 4}, tanh, {linear: 1}]
MODULES
nodes:
NODES
losses:
LOSSES
optimizers:
  opt: {type: sgd, lr: 0.1, params: [OPT]}
train:
  steps: 2
  schedule:
    - name: fit
      backward: [{loss: loss}]
      step: [opt]
"""


def build(losses: str, nodes: str = "  p: net(x)", modules: str = "", opt: str = "net"):
    text = BASE.replace("MODULES\n", modules).replace("NODES", nodes).replace("LOSSES", losses).replace("OPT", opt)
    return compile_text(text, "param.yaml")


def ok(*args, **kwargs):
    compiled, report = build(*args, **kwargs)
    assert compiled is not None, report.render()
    return compiled


def feed(g):
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 1))
    g.set_value("x", x)
    g.set_value("y", y)
    return torch.tensor(x), torch.tensor(y)


def test_a_weight_penalty_reaches_the_parameter() -> None:
    c = ok('  loss: mse(p, y) + 0.01 * sum(param("net.0.weight") ** 2)')
    g = c.graph
    x, y = feed(g)
    names = ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"]
    t = {n: torch.tensor(g.get_node_value(n), requires_grad=True) for n in names}
    p = torch.tanh(x @ t["net.0.weight"] + t["net.0.bias"]) @ t["net.2.weight"] + t["net.2.bias"]
    want = ((p - y) ** 2).mean() + 0.01 * (t["net.0.weight"] ** 2).sum()
    want.backward()
    loss = float(g.forward_node(c.losses["loss"]))
    assert loss == pytest.approx(want.item(), abs=1e-12)
    got = g.grad(c.losses["loss"], [g.node(n) for n in names])
    for n, a in zip(names, got):
        np.testing.assert_allclose(a, t[n].grad.numpy(), rtol=0, atol=1e-10, err_msg=n)
    # the optimizer's parameters and what the backward reaches are the module's, as before
    assert [p.name for p in c.optimizer_params["opt"]] == names
    assert {p.name for p in c.phases[0].backward[0].reached} == set(names)


def test_param_is_the_parameter_node_itself() -> None:
    c = ok("  loss: mse(p, y) + mean(w)", nodes='  p: net(x)\n  w: param("net.2.bias")')
    g = c.graph
    node = g.record(c.names["w"])
    assert node.op is not None and node.op.name == "identity"  # the name w is a view of the parameter
    assert node.inputs[0].index == g.node("net.2.bias").index


TIED = """  dec:
    args: [h]
    params:
      b: {shape: [3], init: zeros}
    output: h @ transpose(param("enc.0.weight")) + b
  enc: [{linear: {out: 2, bias: false}}]
"""


def test_weights_tied_across_modules_get_the_gradient_of_both_uses() -> None:
    """An autoencoder whose decoder uses the encoder's weight transposed: one parameter, the
    gradient the sum of its two uses (torch with one tensor used twice)."""
    c = ok(
        "  loss: mse(r, x)",
        nodes="  p: net(x)\n  r: dec(code)\n  code: enc(x)",
        modules=TIED,
        opt="enc, dec",
    )
    g = c.graph
    x, _ = feed(g)
    assert [p.name for p in c.modules["enc"].params] == ["enc.0.weight"]
    assert [p.name for p in c.modules["dec"].params] == ["dec.b"]  # the tied weight stays the encoder's
    assert [p.name for p in c.optimizer_params["opt"]] == ["enc.0.weight", "dec.b"]
    w = torch.tensor(g.get_node_value("enc.0.weight"), requires_grad=True)
    b = torch.tensor(g.get_node_value("dec.b"), requires_grad=True)
    want = (((x @ w) @ w.T + b - x) ** 2).mean()
    want.backward()
    g.forward_node(c.losses["loss"])
    gw, gb = g.grad(c.losses["loss"], [g.node("enc.0.weight"), g.node("dec.b")])
    np.testing.assert_allclose(gw, w.grad.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(gb, b.grad.numpy(), rtol=0, atol=1e-10)
    assert "m_enc --> m_dec" in mermaid(c)  # the drawing shows where the tied weight comes from


def test_a_subgraph_parameter_may_be_read_before_its_module_is_called() -> None:
    bank = """  bank:
    args: []
    params:
      w: {shape: [3, 1], init: normal}
    output: w
"""
    c = ok('  loss: mse(x @ param("bank.w"), y)', modules=bank, opt="bank", nodes="  p: x")
    assert [p.name for p in c.modules["bank"].params] == ["bank.w"]
    assert [p.name for p in c.optimizer_params["opt"]] == ["bank.w"]
    _, report = build('  loss: mse(x @ param("bank.w"), y)', modules=bank, opt="bank", nodes="  p: x")
    assert not [d for d in report.warnings if "bank is never called" in d.message]
    # read first through param, then called: still one parameter, the module's own
    c = ok('  loss: mse(x @ param("bank.w"), y) + mean(q)', modules=bank, opt="bank", nodes="  p: x\n  q: bank()")
    assert [p.name for p in c.modules["bank"].params] == ["bank.w"] and c.modules["bank"].calls == 1


def test_a_definition_reading_a_layer_lists_parameter_is_built_after_its_call() -> None:
    """The penalty comes first in the file, the call later: the order of building follows."""
    c = ok('  pen: sum(param("net.0.weight") ** 2)\n  loss: mse(p, y) + pen', nodes="  p: net(x)")
    assert c.modules["net"].calls == 1
    c = ok('  loss: mse(p, y) + sum(param("net.0.weight") ** 2)', nodes="  q: sum(param('net.0.bias'))\n  p: net(x)")
    assert c.modules["net"].calls == 1


@pytest.mark.parametrize(
    ("losses", "nodes", "code", "col", "message", "hint"),
    [
        (
            '  loss: mse(p, y) + sum(param("net.0.wieght"))',
            "  p: net(x)",
            "E-NAME",
            31,
            "unknown parameter 'net.0.wieght'",
            "did you mean 'net.0.weight'?",
        ),
        (
            '  loss: mse(p, y) + sum(param("0.weight"))',
            "  p: net(x)",
            "E-NAME",
            31,
            "unknown parameter '0.weight'",
            "did you mean 'net.0.weight'?",
        ),
        (
            "  loss: mse(p, y) + sum(param(p))",
            "  p: net(x)",
            "E-ARG",
            25,
            "param takes one parameter name, a string",
            None,
        ),
        (
            '  loss: mse(p, y) + sum(param("net.0.weight"))',
            "  p: x[:, 0:1]",
            "E-ARG",
            31,
            "makes its parameters at its first call",
            "nodes: {out: net(x)}",
        ),
    ],
)
def test_param_mistakes_are_located(losses, nodes, code, col, message, hint) -> None:
    compiled, report = build(losses, nodes=nodes)
    assert compiled is None
    d = next(d for d in report.errors if d.code == code)
    assert (d.line, d.column) == (17, col), report.render()
    assert message in d.message
    if hint:
        assert d.hint is not None and hint in d.hint
