"""Unpacking several outputs into names (``mu, logvar: enc(x)``, in ``nodes`` and in a subgraph
module's ``nodes``): each name is bound to one output in the order the value lists them (a module's
``output:`` mapping; for scan over several states the stacked outputs in the cell's output order,
then each ``STATE_last``); values and gradients equal the subscript form's (float64) and torch's;
the call is built once; each name is an ordinary node (expressions, carry, detach, metrics,
eval.samples, the compile report, the drawing); ``_`` skips an output; every mistake is located at
the key with its code and the fix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from onlytorch.compile import compile_text
from onlytorch.compiler.drawing import mermaid
from onlytorch.compiler.summary import summarize
from onlytorch.train import Trainer

SPEC = """version: 1
name: unpack
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
NODES_LINE = 23  # the line of the first node: where each mistake below is located

SUBSCRIPT = '  z: enc(x)\n  s: z["mu"] + exp(0.5 * z["logvar"])'
UNPACKED = "  mu, logvar: enc(x)\n  s: mu + exp(0.5 * logvar)"
LOSS = "mse(sum(s, axis=1, keepdims=True), y)"


def compiled_of(nodes: str, loss: str = LOSS, text: str = SPEC):
    return compile_text(text.replace("NODES", nodes).replace("LOSS", loss), "unpack.yaml")


def ok(nodes: str, loss: str = LOSS, text: str = SPEC):
    compiled, report = compiled_of(nodes, loss, text)
    assert compiled is not None, report.render()
    return compiled


def feed(compiled, seed: int = 0):
    g = compiled.graph
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(5, 1))
    g.set_value("x", x)
    g.set_value("y", y)
    return g, x, y


def loss_and_grads(compiled, params: dict[str, np.ndarray] | None = None):
    g, x, y = feed(compiled)
    for name, value in (params or {}).items():
        g.set_value(name, value)
    loss = compiled.losses["loss"]
    value = float(g.forward_node(loss))
    grads = g.grad(loss, [g.node("enc.w"), g.node("enc.v"), g.node("x")])
    return value, grads, (x, y)


def test_unpacked_values_and_gradients_equal_the_subscript_forms_and_torchs() -> None:
    sub, unp = ok(SUBSCRIPT), ok(UNPACKED)
    params = {k: sub.graph.get_node_value(k) for k in ("enc.w", "enc.v")}
    want_value, want_grads, _ = loss_and_grads(sub)
    value, grads, (x, y) = loss_and_grads(unp, params)
    assert value == want_value
    for got, want in zip(grads, want_grads):
        np.testing.assert_array_equal(got, want)
    g = unp.graph
    np.testing.assert_array_equal(g.forward_node(unp.names["mu"]), sub.graph.forward_node(sub.records["z"]["mu"]))
    np.testing.assert_array_equal(
        g.forward_node(unp.names["logvar"]), sub.graph.forward_node(sub.records["z"]["logvar"])
    )
    # and both are torch's
    tw, tv, tx = (torch.tensor(a, requires_grad=True) for a in (params["enc.w"], params["enc.v"], x))
    h = torch.tanh(tx @ tw)
    mu, logvar = h * 2.0, tx @ tv - h
    s = mu + torch.exp(0.5 * logvar)
    ref = ((s.sum(1, keepdim=True) - torch.tensor(y)) ** 2).mean()
    ref.backward()
    assert value == pytest.approx(ref.item(), abs=1e-12)
    for got, want in zip(grads, (tw.grad, tv.grad, tx.grad)):
        np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-12)


def test_the_value_is_built_once_and_each_name_is_a_named_graph_node() -> None:
    c = ok(UNPACKED)
    assert c.modules["enc"].calls == 1
    assert sum(1 for n in c.graph.records() if n.op is not None and n.op.name == "tanh") == 1
    assert c.graph.record(c.names["mu"]).name == "mu"
    assert c.graph.record(c.names["logvar"]).name == "logvar"
    assert c.records == {}  # no node holds the pair: the names hold one output each


def test_underscore_skips_an_output() -> None:
    c = ok("  _, logvar: enc(x)\n  s: exp(0.5 * logvar)")
    assert "logvar" in c.names and "_" not in c.names and "mu" not in c.names
    assert c.modules["enc"].calls == 1
    both = ok("  mu, logvar: enc(x)\n  s: exp(0.5 * logvar)")
    params = {k: both.graph.get_node_value(k) for k in ("enc.w", "enc.v")}
    value, _, _ = loss_and_grads(c, params)
    assert value == loss_and_grads(both)[0]


def test_a_node_holding_several_outputs_unpacks_too() -> None:
    c = ok('  z: enc(x)\n  mu, logvar: z\n  s: mu + exp(0.5 * logvar) + 0 * z["mu"]')
    assert c.modules["enc"].calls == 1
    g, _, _ = feed(c)
    np.testing.assert_array_equal(g.forward_node(c.names["mu"]), g.forward_node(c.records["z"]["mu"]))


def test_each_name_is_an_ordinary_node_for_carry_detach_metrics_samples_report_and_drawing() -> None:
    text = SPEC.replace(
        "  y: {shape: [1], from: train.y}\n", "  y: {shape: [1], from: train.y}\n  prev: {shape: [2], carry: mu}\n"
    )
    text = text.replace("\nnodes:\n", "\n  head: [{linear: 1}]\nnodes:\n", 1)
    text = text.replace("losses:\n", "losses:\n", 1).replace(
        "optimizers:\n", "metrics:\n  spread: mean(logvar)\noptimizers:\n", 1
    )
    text = text.replace("params: [enc]", "params: [enc, head]")
    text = text.replace("    - name: fit\n", "    - name: fit\n      detach: [mu]\n")
    text += "eval:\n  split: train\n  samples: {node: mu, n: 4}\n"
    c = ok(UNPACKED + "\n  p: head(s + 0 * prev)", "mse(p, y)", text)
    assert c.carries["prev"].index == c.names["mu"].index
    assert [n.name for n in c.phases[0].detach] == ["mu"]
    assert "spread" in c.metrics
    # mu is cut by the detach: only logvar's path reaches the encoder (enc.v, and enc.w through h)
    assert {p.name for p in c.phases[0].backward[0].reached} == {"enc.w", "enc.v", "head.0.weight", "head.0.bias"}
    report = summarize(c)
    assert "mu               node     (N, 2)" in report
    assert "logvar           node     (N, 2)" in report
    drawing = mermaid(c)
    assert 'n_mu["mu (N, 2) | detached in fit"]' in drawing
    assert 'n_logvar["logvar (N, 2)"]' in drawing
    assert "m_enc --> n_mu" in drawing and "m_enc --> n_logvar" in drawing
    tr = Trainer(c)
    losses = [tr.run_iteration()["fit/loss"] for _ in range(3)]
    assert all(np.isfinite(losses))


def test_a_subgraph_modules_nodes_may_unpack() -> None:
    swap = """  swap:
    args: [a]
    nodes:
      m, lv: enc(a)
    output:
      first: lv
      second: m
"""
    text = SPEC.replace("nodes:\nNODES", swap + 'nodes:\n  t: swap(x)\n  s: t["first"] - t["second"]')
    c = ok("", "mean(s ** 2)", text)
    g, _, _ = feed(c)
    ref = ok(SUBSCRIPT)  # the same encoder: the swapped difference is logvar - mu
    params = {k: c.graph.get_node_value(k) for k in ("enc.w", "enc.v")}
    rg, _, _ = feed(ref)
    for k, v in params.items():
        rg.set_value(k, v)
    want = rg.forward_node(ref.records["z"]["logvar"]) - rg.forward_node(ref.records["z"]["mu"])
    np.testing.assert_array_equal(g.forward_node(c.names["s"]), want)
    assert c.modules["enc"].calls == 1


@pytest.mark.parametrize(
    ("nodes", "loss", "code", "where", "message", "hint"),
    [
        (
            "  mu, logvar, z: enc(x)\n  s: mu + z",
            LOSS,
            "E-OUTPUT",
            (0, 3),
            "'mu, logvar, z' gives 3 names, but enc(x) has 2 outputs, in this order: mu, logvar",
            "one name per output, in order (_ skips one): mu, logvar: enc(x)",
        ),
        (
            "  a, b: tanh(x)\n  s: a + b",
            LOSS,
            "E-OUTPUT",
            (0, 3),
            "'a, b' unpacks several outputs, but tanh(x) is one tensor",
            "name it once (a: tanh(x))",
        ),
        (
            "  mu, 2s: enc(x)\n  s: mu",
            LOSS,
            "E-TYPE",
            (0, 3),
            "nodes: 'mu, 2s' unpacks into names separated by commas, and '2s' is not a name",
            "mu, logvar: enc(x)",
        ),
        (
            "  mu, mu: enc(x)\n  s: mu",
            LOSS,
            "E-DUP",
            (0, 3),
            "'mu' is named twice in 'mu, mu'",
            "_ skips an output",
        ),
        (
            "  mu: tanh(x)\n  mu, logvar: enc(x)\n  s: mu + logvar",
            LOSS,
            "E-DUP",
            (1, 3),
            "'mu' is defined twice in nodes: by 'mu' and by 'mu, logvar'",
            "rename one of them",
        ),
        (
            "  mu, logvar: enc(mu)\n  s: logvar",
            LOSS,
            "E-CYCLE",
            (0, 3),
            "these definitions depend on each other in a circle: (mu, logvar) -> mu -> (mu, logvar)",
            None,
        ),
    ],
)
def test_mistakes_are_located_at_the_key_with_the_fix(nodes, loss, code, where, message, hint) -> None:
    compiled, report = compiled_of(nodes, loss)
    assert compiled is None
    assert len(report.errors) == 1, report.render()  # the names of a broken key stay quiet
    d = report.errors[0]
    assert (d.code, d.line, d.column) == (code, NODES_LINE + where[0], where[1]), report.render()
    assert message in d.message
    assert d.hint == hint if hint is None else (d.hint is not None and hint in d.hint)


def test_a_name_defined_by_an_input_and_by_unpacking_is_a_duplicate_at_the_key() -> None:
    compiled, report = compiled_of("  x, logvar: enc(x)\n  s: logvar")
    assert compiled is None
    d = report.errors[0]
    assert d.code == "E-DUP" and (d.line, d.column) == (NODES_LINE, 3), report.render()
    assert d.message == "'x' is defined in both inputs and nodes (by 'x, logvar')"


@pytest.mark.parametrize(
    ("section", "line"),
    [("losses", NODES_LINE + 4), ("metrics", NODES_LINE + 5)],
)
def test_a_comma_key_outside_nodes_stays_a_type_error(section: str, line: int) -> None:
    text = SPEC
    if section == "metrics":
        text = text.replace("optimizers:\n", "metrics:\n  a, b: mean(s)\noptimizers:\n", 1)
    else:
        text = text.replace("  loss: LOSS\n", "  loss: LOSS\n  a, b: mean(s)\n")
    compiled, report = compiled_of(UNPACKED, LOSS, text)
    assert compiled is None
    (d,) = report.errors
    assert (d.code, d.line, d.column) == ("E-TYPE", line, 3), report.render()
    assert d.message == f"{section}: 'a, b' is not a valid name (letters, digits and _, not starting with a digit)"
    assert d.hint is not None and f"in nodes only; {section} takes one name" in d.hint


def test_unpacking_mistakes_in_a_subgraph_are_located_at_its_key() -> None:
    bad = """  swap:
    args: [a]
    nodes:
      m, lv, extra: enc(a)
      m, q: enc(a)
    output:
      first: lv
"""
    text = SPEC.replace("nodes:\nNODES", bad + "nodes:\n  s: swap(x)")
    compiled, report = compile_text(text.replace("LOSS", LOSS), "unpack.yaml")
    assert compiled is None
    got = [(d.code, d.line, d.column) for d in report.sorted() if d.severity == "error"]
    assert got == [("E-DUP", NODES_LINE + 3, 7)], report.render()
    assert report.errors[0].message == "'m' is defined twice in module swap's nodes: by 'm, lv, extra' and by 'm, q'"
    compiled, report = compile_text(text.replace("      m, q: enc(a)\n", "").replace("LOSS", LOSS), "unpack.yaml")
    assert compiled is None
    (d,) = report.errors
    assert (d.code, d.line, d.column) == ("E-OUTPUT", NODES_LINE + 2, 7), report.render()
    assert d.message == "'m, lv, extra' gives 3 names, but enc(a) has 2 outputs, in this order: mu, logvar"
