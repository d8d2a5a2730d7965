"""The registered ``lstm`` cell (``{cell: lstm, hidden: H}``, scanned as ``scan(cell, xs, h0,
c0)``): torch.nn.LSTM's values, both final states and every gradient in float64 with its weights
mapped one to one (w_ih = weight_ih.T, w_hh = weight_hh.T, b_ih = bias_ih, b_hh = bias_hh); torch's
default init; both states carried across TBPTT windows; a state of the wrong size located."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from onlytorch import nn
from onlytorch.compile import compile_text
from onlytorch.graph import Graph
from onlytorch.train import Trainer

D, H, T = 3, 5, 6

SPEC = f"""
version: 1
name: lstm
dtype: float64
inputs:
  x: {{shape: [{T}, {D}], from: noise.normal}}
  h0: {{shape: [{H}], from: noise.normal}}
  c0: {{shape: [{H}], from: noise.normal}}
  wy: {{shape: [{T}, {H}], from: noise.normal}}
  wc: {{shape: [{H}], from: noise.normal}}
modules:
  cell: {{cell: lstm, hidden: {H}}}
nodes:
  r: scan(cell, x, h0, c0)
  one: cell(x[:, 0], h0, c0)
losses:
  loss: sum(r["h"] * wy) + sum(r["c_last"] * wc) + 0.5 * sum(r["h_last"] * r["c_last"])
"""


def _compiled(text: str = SPEC):
    compiled, report = compile_text(text, "lstm.yaml")
    assert compiled is not None, report.render()
    return compiled


def test_the_lstm_cell_matches_torch_lstm_values_states_and_gradients() -> None:
    c = _compiled()
    g = c.graph
    assert [g.record(p).name for p in c.modules["cell"].params] == ["cell.w_ih", "cell.w_hh", "cell.b_ih", "cell.b_hh"]
    torch.manual_seed(0)
    ref = torch.nn.LSTM(D, H, batch_first=True).double()
    mapping = {"w_ih": ref.weight_ih_l0, "w_hh": ref.weight_hh_l0, "b_ih": ref.bias_ih_l0, "b_hh": ref.bias_hh_l0}
    for k, p in mapping.items():
        g.set_value(f"cell.{k}", p.detach().numpy().T.copy())
    rng = np.random.default_rng(0)
    n = 4
    feed = {k: rng.normal(size=(n, *g.record(g.node(k)).shape[1:])) for k in ("x", "h0", "c0", "wy", "wc")}
    for k, v in feed.items():
        g.set_value(k, v)
    value = float(g.forward_node(c.losses["loss"]))

    t = {k: torch.tensor(v, requires_grad=True) for k, v in feed.items()}
    out, (hn, cn) = ref(t["x"], (t["h0"][None], t["c0"][None]))
    want = (out * t["wy"]).sum() + (cn[0] * t["wc"]).sum() + 0.5 * (hn[0] * cn[0]).sum()
    want.backward()
    assert value == pytest.approx(float(want.detach()), abs=1e-11)
    rec = c.records["r"]
    np.testing.assert_allclose(g.forward_node(rec["h"]), out.detach().numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(g.forward_node(rec["h_last"]), hn[0].detach().numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(g.forward_node(rec["c_last"]), cn[0].detach().numpy(), rtol=0, atol=1e-12)
    # a direct call NAME(x, h, c) gives the named next states, torch.nn.LSTMCell's
    cell = torch.nn.LSTMCell(D, H).double()
    with torch.no_grad():
        for a, b in zip((cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh), mapping.values()):
            a.copy_(b)
    h1, c1 = cell(t["x"][:, 0], (t["h0"], t["c0"]))
    one = c.records["one"]
    np.testing.assert_allclose(g.forward_node(one["h"]), h1.detach().numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(g.forward_node(one["c"]), c1.detach().numpy(), rtol=0, atol=1e-12)

    names = ["cell.w_ih", "cell.w_hh", "cell.b_ih", "cell.b_hh", "x", "h0", "c0"]
    got = g.grad(c.losses["loss"], [g.node(k) for k in names])
    wanted = [p.grad.numpy().T for p in mapping.values()] + [t[k].grad.numpy() for k in ("x", "h0", "c0")]
    for name, a, b in zip(names, got, wanted):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10, err_msg=name)


def test_second_derivatives_match_torch() -> None:
    """The gradient of a gradient (as a gradient penalty takes it) through one LSTM step."""
    g = Graph(seed=0, dtype="float64")
    cell = nn.LSTMCell(g, D, H, name="cell")
    rng = np.random.default_rng(3)
    x_v, h_v, c_v = rng.normal(size=(2, D)), rng.normal(size=(2, H)), rng.normal(size=(2, H))
    x, h, c = g.input("x", shape=(None, D)), g.input("h", shape=(None, H)), g.input("c", shape=(None, H))
    for name, v in (("x", x_v), ("h", h_v), ("c", c_v)):
        g.set_value(name, v)
    h1, c1 = cell(x, h, c)
    loss = g.sum(h1 * h1) + g.sum(c1 * h1)
    g.forward_node(loss)
    (gx,) = g.grad(loss, [x], create_graph=True)
    penalty = g.sum(gx * gx)
    g.forward_node(penalty)
    got = g.grad(penalty, [cell.w_ih, cell.w_hh])

    ref = torch.nn.LSTMCell(D, H).double()
    with torch.no_grad():
        for a, p in zip((ref.weight_ih, ref.weight_hh, ref.bias_ih, ref.bias_hh), cell.parameters()):
            a.copy_(torch.tensor(g.get_node_value(p).T))
    xt = torch.tensor(x_v, requires_grad=True)
    ht, ct = ref(xt, (torch.tensor(h_v), torch.tensor(c_v)))
    (gxt,) = torch.autograd.grad((ht * ht).sum() + (ct * ht).sum(), xt, create_graph=True)
    want = torch.autograd.grad((gxt * gxt).sum(), [ref.weight_ih, ref.weight_hh])
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b.numpy().T, rtol=1e-9, atol=1e-10)


def test_torch_default_init_and_the_declared_shapes() -> None:
    g = Graph(seed=0)
    defn = nn.CELLS["lstm"]
    assert defn.states == ("h", "c")
    cell = defn.build(g, 3, 50, "c")
    assert isinstance(cell, nn.LSTMCell)
    built = {g.record(p).name.removeprefix("c."): g.record(p).shape for p in cell.parameters()}
    assert built == defn.params(3, 50) == {"w_ih": (3, 200), "w_hh": (50, 200), "b_ih": (200,), "b_hh": (200,)}
    bound = 1 / np.sqrt(50)
    for p in cell.parameters():
        v = g.get_node_value(p)
        assert np.abs(v).max() <= bound and np.abs(v).max() > 0.9 * bound  # U(±1/sqrt(H)), as torch


WINDOWS = """
version: 1
name: windows
dtype: float64
seed: 4
data:
  train: {source: synthetic.sine, n: 8, length: 12, noise: 0.0}
  batch_size: 8
  shuffle: false
inputs:
  x: {shape: [4, 1], from: train.x, window: 4}
  y: {shape: [4, 1], from: train.y, window: 4}
  h0: {shape: [3], carry: h_last}
  c0: {shape: [3], carry: c_last}
modules:
  cell: {cell: lstm, hidden: 3}
  readout: [{linear: 1}]
nodes:
  r: scan(cell, x, h0, c0)
  h_last: r["h_last"]
  c_last: r["c_last"]
  pred: readout(r["h"])
losses:
  loss: mse(pred, y)
optimizers:
  opt: {type: sgd, lr: 0.0, params: [cell, readout]}
train:
  steps: 3
  schedule:
    - name: fit
      backward: [{loss: loss}]
      step: [opt]
"""


def test_both_states_carry_across_tbptt_windows() -> None:
    """Each window starts from the previous window's final h and c (zeros at first): after three
    windows of 4 steps the states are torch.nn.LSTM's over the whole sequence of 12."""
    c = _compiled(WINDOWS)
    assert set(c.carries) == {"h0", "c0"}
    g = c.graph
    tr = Trainer(c)
    ref = torch.nn.LSTM(1, 3, batch_first=True).double()
    with torch.no_grad():
        for a, k in zip(
            (ref.weight_ih_l0, ref.weight_hh_l0, ref.bias_ih_l0, ref.bias_hh_l0), ("w_ih", "w_hh", "b_ih", "b_hh")
        ):
            a.copy_(torch.tensor(g.get_node_value(f"cell.{k}").T))  # lr 0: they stay
    for k in range(3):
        tr.run_iteration()
        xs = tr.batch["x"]
        _, (hn, cn) = ref(torch.tensor(xs[:, : 4 * (k + 1)]))
        np.testing.assert_allclose(tr.carry["h0"], hn[0].detach().numpy(), rtol=0, atol=1e-12)
        np.testing.assert_allclose(tr.carry["c0"], cn[0].detach().numpy(), rtol=0, atol=1e-12)
    assert np.abs(tr.carry["c0"]).max() > 0  # the state did carry something


@pytest.mark.parametrize(("state", "shape"), [("h0", "[4]"), ("c0", "[7]")])
def test_a_state_of_the_wrong_size_is_located(state: str, shape: str) -> None:
    text = SPEC.replace(f"{state}: {{shape: [{H}]", f"{state}: {{shape: {shape}")
    compiled, report = compile_text(text, "lstm.yaml")
    assert compiled is None
    d = report.errors[0]
    line = text.splitlines().index("  r: scan(cell, x, h0, c0)") + 1
    assert (d.code, d.line, d.column) == ("E-SHAPE", line, 6), report.render()
    s = state[0]
    assert f"its state {s} has shape (N, {shape[1:-1]}), but the cell's hidden size is {H}" in d.message
    assert f"give the initial {s} the shape [{H}]" in d.message


def test_a_registered_lstm_is_called_with_both_states() -> None:
    text = SPEC.replace("one: cell(x[:, 0], h0, c0)", "one: cell(x[:, 0], h0)")
    _, report = compile_text(text, "lstm.yaml")
    assert any(d.code == "E-ARG" and "called as cell(x, h, c)" in d.message for d in report.errors), report.render()
