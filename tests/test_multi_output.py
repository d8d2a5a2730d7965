"""Subgraph modules with several named outputs (``output: {mu: ..., logvar: ...}``): selected with
``["name"]`` on the call or on a named node holding the call; values and gradients against
PyTorch in float64; weights shared across calls; one call evaluated once; the outputs' shapes in
the compile report and the drawing; every mistake located with a did-you-mean or the way to pick."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from onlytorch.compile import compile_text
from onlytorch.compiler.drawing import mermaid
from onlytorch.compiler.summary import summarize
from onlytorch.train import Trainer

SPEC = """
version: 1
name: multi
seed: 2
dtype: float64
data:
  train: {source: synthetic.regression, n: 64, features: 3}
  batch_size: 16
inputs:
  x: {shape: [3], from: train.x}
  y: {shape: [1], from: train.y}
modules:
  enc:
    args: [a]
    params:
      w: {shape: [3, 2], init: normal}
      v: {shape: [3, 2], init: normal}
    nodes:
      h: tanh(a @ w)
    output:
      mu: h * 2.0
      logvar: a @ v - h
nodes:
NODES
losses:
  loss: LOSS
optimizers:
  opt: {type: sgd, lr: 0.05, params: [enc]}
train:
  steps: 3
  schedule:
    - name: fit
      backward: [{loss: loss}]
      step: [opt]
"""

NAMED = """  z: enc(x)
  s: z["mu"] + exp(0.5 * z["logvar"])"""


def compiled_of(nodes: str = NAMED, loss: str = "mse(sum(s, axis=1, keepdims=True), y)"):
    text = SPEC.replace("NODES", nodes).replace("LOSS", loss)
    compiled, report = compile_text(text, "multi.yaml")
    return compiled, report


def ok(nodes: str = NAMED, loss: str = "mse(sum(s, axis=1, keepdims=True), y)"):
    compiled, report = compiled_of(nodes, loss)
    assert compiled is not None, report.render()
    return compiled


def torch_enc(x, w, v):
    h = torch.tanh(x @ w)
    return h * 2.0, x @ v - h


def feed(compiled, seed: int = 0):
    g = compiled.graph
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(5, 1))
    g.set_value("x", x)
    g.set_value("y", y)
    return g, x, y


def test_outputs_values_and_gradients_match_torch() -> None:
    c = ok()
    g, x, y = feed(c)
    w, v = g.get_node_value("enc.w"), g.get_node_value("enc.v")
    loss = float(g.forward_node(c.losses["loss"]))
    gw, gv = g.grad(c.losses["loss"], [g.node("enc.w"), g.node("enc.v")])
    tw, tv = (torch.tensor(a, requires_grad=True) for a in (w, v))
    mu, logvar = torch_enc(torch.tensor(x), tw, tv)
    s = mu + torch.exp(0.5 * logvar)
    want = ((s.sum(1, keepdim=True) - torch.tensor(y)) ** 2).mean()
    want.backward()
    assert loss == pytest.approx(want.item(), abs=1e-12)
    np.testing.assert_allclose(gw, tw.grad.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(gv, tv.grad.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(g.forward_node(c.records["z"]["mu"]), mu.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(g.forward_node(c.records["z"]["logvar"]), logvar.detach().numpy(), atol=1e-12)


def test_a_named_call_is_evaluated_once_and_so_is_the_same_call_written_twice() -> None:
    once = ok()
    assert once.modules["enc"].calls == 1
    tanh_once = sum(1 for n in once.graph.records() if n.op is not None and n.op.name == "tanh")
    assert tanh_once == 1  # the subgraph's one tanh: built once for both outputs
    twice = ok('  s: enc(x)["mu"] + exp(0.5 * enc(x)["logvar"])')
    assert twice.modules["enc"].calls == 1
    assert sum(1 for n in twice.graph.records() if n.op is not None and n.op.name == "tanh") == 1
    g, _, _ = feed(twice)
    g1, _, _ = feed(once)
    g1.set_value("enc.w", g.get_node_value("enc.w"))
    g1.set_value("enc.v", g.get_node_value("enc.v"))
    np.testing.assert_array_equal(g.forward_node(twice.names["s"]), g1.forward_node(once.names["s"]))


def test_calls_on_different_inputs_share_the_weights() -> None:
    c = ok('  a: enc(x)\n  b: enc(2 * x)\n  s: a["mu"] * b["logvar"]')
    assert c.modules["enc"].calls == 2
    assert [p.name for p in c.modules["enc"].params] == ["enc.w", "enc.v"]
    g, x, y = feed(c, 3)
    w, v = g.get_node_value("enc.w"), g.get_node_value("enc.v")
    g.forward_node(c.losses["loss"])
    gw, gv = g.grad(c.losses["loss"], [g.node("enc.w"), g.node("enc.v")])
    tw, tv = (torch.tensor(a, requires_grad=True) for a in (w, v))
    xt = torch.tensor(x)
    s = torch_enc(xt, tw, tv)[0] * torch_enc(2 * xt, tw, tv)[1]
    ((s.sum(1, keepdim=True) - torch.tensor(y)) ** 2).mean().backward()
    np.testing.assert_allclose(gw, tw.grad.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(gv, tv.grad.numpy(), rtol=0, atol=1e-10)


def test_a_subgraph_node_may_hold_another_modules_outputs() -> None:
    swap = """  swap:
    args: [a]
    nodes:
      e: enc(a)
    output:
      first: e["logvar"]
      second: e["mu"]
"""
    text = SPEC.replace("nodes:\nNODES", swap + 'nodes:\n  t: swap(x)\n  s: t["first"] - t["second"]')
    text = text.replace("LOSS", "mean(s ** 2)")
    compiled, report = compile_text(text, "multi.yaml")
    assert compiled is not None, report.render()
    g, x, _ = feed(compiled)
    w, v = g.get_node_value("enc.w"), g.get_node_value("enc.v")
    mu, logvar = (t.numpy() for t in torch_enc(torch.tensor(x), torch.tensor(w), torch.tensor(v)))
    np.testing.assert_allclose(g.forward_node(compiled.names["s"]), logvar - mu, atol=1e-12)


def test_the_report_and_the_drawing_show_each_outputs_shape() -> None:
    c = ok()
    report = summarize(c)
    assert 'z["mu"]          node     (N, 2)' in report
    assert 'z["logvar"]      node     (N, 2)' in report
    assert "outputs mu (N, 2), logvar (N, 2)" in report
    drawing = mermaid(c)
    assert "z mu (N, 2), logvar (N, 2)" in drawing
    assert c.graph.record(c.records["z"]["mu"]).name == "z.mu"


def test_a_multi_output_spec_trains() -> None:
    c = ok()
    tr = Trainer(c)
    before = c.graph.get_node_value("enc.w").copy()
    losses = [tr.run_iteration()["fit/loss"] for _ in range(3)]
    assert all(np.isfinite(losses))
    assert not np.array_equal(before, c.graph.get_node_value("enc.w"))


@pytest.mark.parametrize(
    ("nodes", "loss", "code", "where", "message", "hint"),
    [
        (
            NAMED.replace('z["logvar"]', 'z["logvra"]'),
            None,
            "E-NAME",
            (25, 28),
            "has no output 'logvra'",
            "did you mean 'logvar'?",
        ),
        ("  s: relu(enc(x))", None, "E-OUTPUT", (24, 11), "enc(x) has several outputs (mu, logvar)", 'enc(x)["mu"]'),
        ("  z: enc(x)\n  s: z + 1", None, "E-OUTPUT", (25, 6), "z has several outputs (mu, logvar)", 'z["mu"]'),
        ("  s: enc(x)[:, 0]", None, "E-OUTPUT", (24, 6), "where a tensor to index is needed", 'enc(x)["mu"]'),
        ('  s: tanh(x)["mu"]', None, "E-OUTPUT", (24, 14), "tanh(x) is one tensor", "x[:, 0]"),
        (NAMED, "z", "E-OUTPUT", (27, 9), "z has several outputs", 'z["mu"]'),
    ],
)
def test_mistakes_are_located(nodes, loss, code, where, message, hint) -> None:
    compiled, report = compiled_of(nodes, loss or "mse(sum(s, axis=1, keepdims=True), y)")
    assert compiled is None
    d = report.errors[0]
    assert (d.code, d.line, d.column) == (code, *where), report.render()
    assert message in d.message
    assert d.hint is not None and hint in d.hint


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("{}", "at least one named output"),
        ("{mu-x: h}", "an output name is a word"),
    ],
)
def test_a_bad_output_mapping_is_a_type_error(output: str, message: str) -> None:
    text = SPEC.replace("NODES", NAMED).replace("LOSS", "mse(sum(s, axis=1, keepdims=True), y)")
    text = text.replace("    output:\n      mu: h * 2.0\n      logvar: a @ v - h\n", f"    output: {output}\n")
    compiled, report = compile_text(text, "multi.yaml")
    assert compiled is None
    d = next(d for d in report.errors if d.code == "E-TYPE")
    assert message in d.message and d.line is not None


def test_detaching_a_node_that_holds_several_outputs_detaches_each() -> None:
    text = SPEC.replace("NODES", NAMED + "\n  p: head(s)").replace("LOSS", "mse(p, y)")
    text = text.replace("\nnodes:\n", "\n  head: [{linear: 1}]\nnodes:\n", 1)
    text = text.replace("params: [enc]", "params: [head]").replace(
        "    - name: fit\n", "    - name: fit\n      detach: [z]\n"
    )
    compiled, report = compile_text(text, "multi.yaml")
    assert compiled is not None, report.render()
    phase = compiled.phases[0]
    assert [n.name for n in phase.detach] == ["z.mu", "z.logvar"]
    assert {p.name for p in phase.backward[0].reached} == {"head.0.weight", "head.0.bias"}


def test_an_input_cannot_carry_several_outputs() -> None:
    text = SPEC.replace("NODES", NAMED).replace("LOSS", "mse(sum(s, axis=1, keepdims=True), y) + mean(h)")
    text = text.replace(
        "  y: {shape: [1], from: train.y}\n", "  y: {shape: [1], from: train.y}\n  h: {shape: [2], carry: z}\n"
    )
    compiled, report = compile_text(text, "multi.yaml")
    assert compiled is None
    d = next(d for d in report.errors if d.code == "E-OUTPUT")
    assert d.message == "carry: z holds several outputs (mu, logvar); carry names one tensor"
    assert (d.line, d.column) == (12, 26)
    assert d.hint == 'name a node that picks one, e.g. nodes: {z_mu: z["mu"]}'


def test_unpacking_shares_the_call_and_each_bad_key_is_located_at_the_key() -> None:
    # mu, logvar: enc(x) is the same evaluation as z: enc(x) (tests/test_unpacking.py has the rest);
    # a key that is no name, or unpacks into one that is not, is located at the key itself, every one
    good = '  z: enc(x)\n  mu, logvar: enc(x)\n  s: z["mu"] + exp(0.5 * logvar) - mu'
    c = ok(good)
    assert c.modules["enc"].calls == 1
    g, _, _ = feed(c)
    np.testing.assert_array_equal(g.forward_node(c.names["mu"]), g.forward_node(c.records["z"]["mu"]))
    np.testing.assert_array_equal(g.forward_node(c.names["logvar"]), g.forward_node(c.records["z"]["logvar"]))
    compiled, report = compiled_of(good + "\n  2s: x\n  a, 3b: enc(x)")
    assert compiled is None
    bad = [d for d in report.errors if d.code == "E-TYPE"]
    assert [(d.line, d.column) for d in bad] == [(27, 3), (28, 3)], report.render()
    assert "'2s' is not a valid name" in bad[0].message and bad[0].hint is None
    assert "'a, 3b' unpacks into names separated by commas, and '3b' is not a name" in bad[1].message
    assert bad[1].hint is not None and "mu, logvar: enc(x)" in bad[1].hint
    assert len(report.errors) == 2  # s still compiles; nothing cascades from the broken keys
