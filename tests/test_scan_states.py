"""scan with several states: an LSTM cell written in the spec as a subgraph module with the
arguments [x, h, c] and the outputs {h, c} runs over a sequence and matches torch.nn.LSTM (float64,
values and gradients, both states); its results are selected by name (r["h"], r["c"], r["h_last"],
r["c_last"]); both final states carry across windows exactly as detached state would; the
one-state forms keep building the same graph; every mistake is located."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from onlytorch.compile import compile_text
from onlytorch.train import Trainer

D, H, T = 3, 5, 7

LSTM = f"""
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
  cell:
    args: [x, h, c]
    params:
      w_ih: {{shape: [{D}, {4 * H}]}}
      w_hh: {{shape: [{H}, {4 * H}]}}
      b: {{shape: [{4 * H}], init: normal}}
    nodes:
      z: x @ w_ih + h @ w_hh + b
      i: sigmoid(z[:, 0:{H}])
      f: sigmoid(z[:, {H}:{2 * H}])
      g: tanh(z[:, {2 * H}:{3 * H}])
      o: sigmoid(z[:, {3 * H}:])
      c_next: f * c + i * g
    output:
      h: o * tanh(c_next)
      c: c_next
nodes:
  r: scan(cell, x, h0, c0)
  hs: r["h"]
  cs: r["c"]
  h_last: r["h_last"]
  c_last: r["c_last"]
losses:
  loss: sum(hs * wy) + sum(c_last * wc) + 0.5 * sum(h_last * c_last)
"""


def _compiled(text: str = LSTM):
    compiled, report = compile_text(text, "lstm.yaml")
    assert compiled is not None, report.render()
    return compiled


def test_an_lstm_subgraph_cell_matches_torch_lstm_values_and_gradients() -> None:
    c = _compiled()
    g = c.graph
    rng = np.random.default_rng(0)
    n = 4
    torch.manual_seed(0)
    ref = torch.nn.LSTM(D, H, batch_first=True).double()
    w_ih, w_hh = ref.weight_ih_l0.detach().numpy(), ref.weight_hh_l0.detach().numpy()
    b = (ref.bias_ih_l0 + ref.bias_hh_l0).detach().numpy()
    g.set_value("cell.w_ih", w_ih.T.copy())
    g.set_value("cell.w_hh", w_hh.T.copy())
    g.set_value("cell.b", b.copy())
    feed = {
        "x": rng.normal(size=(n, T, D)),
        "h0": rng.normal(size=(n, H)),
        "c0": rng.normal(size=(n, H)),
        "wy": rng.normal(size=(n, T, H)),
        "wc": rng.normal(size=(n, H)),
    }
    for k, v in feed.items():
        g.set_value(k, v)
    loss = c.losses["loss"]
    value = float(g.forward_node(loss))

    xt = torch.tensor(feed["x"], requires_grad=True)
    h0 = torch.tensor(feed["h0"], requires_grad=True)
    c0 = torch.tensor(feed["c0"], requires_grad=True)
    out, (hn, cn) = ref(xt, (h0[None], c0[None]))
    # torch gives only the final c; the sequence of c is rebuilt from its cell for the check
    cells, hc = [], (h0, c0)
    cell = torch.nn.LSTMCell(D, H).double()
    with torch.no_grad():
        cell.weight_ih.copy_(ref.weight_ih_l0)
        cell.weight_hh.copy_(ref.weight_hh_l0)
        cell.bias_ih.copy_(ref.bias_ih_l0)
        cell.bias_hh.copy_(ref.bias_hh_l0)
    for t in range(T):
        hc = cell(xt[:, t], hc)
        cells.append(hc[1])
    want = (
        (out * torch.tensor(feed["wy"])).sum() + (cn[0] * torch.tensor(feed["wc"])).sum() + 0.5 * (hn[0] * cn[0]).sum()
    )
    want.backward()

    np.testing.assert_allclose(g.forward_node(c.names["hs"]), out.detach().numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(
        g.forward_node(c.names["cs"]), torch.stack(cells, 1).detach().numpy(), rtol=0, atol=1e-10
    )
    np.testing.assert_allclose(g.forward_node(c.names["h_last"]), hn[0].detach().numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(g.forward_node(c.names["c_last"]), cn[0].detach().numpy(), rtol=0, atol=1e-10)
    assert value == pytest.approx(float(want.detach()), abs=1e-10)

    targets = [g.node(k) for k in ("cell.w_ih", "cell.w_hh", "cell.b", "x", "h0", "c0")]
    got = g.grad(loss, targets)
    wanted = [
        ref.weight_ih_l0.grad.numpy().T,
        ref.weight_hh_l0.grad.numpy().T,
        ref.bias_ih_l0.grad.numpy(),  # b_ih and b_hh enter the gates alike: equal gradients
        xt.grad.numpy(),
        h0.grad.numpy(),
        c0.grad.numpy(),
    ]
    np.testing.assert_allclose(ref.bias_ih_l0.grad.numpy(), ref.bias_hh_l0.grad.numpy(), atol=1e-12)
    for name, a, b in zip(("w_ih", "w_hh", "b", "x", "h0", "c0"), got, wanted):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10, err_msg=name)


def test_the_scan_result_is_named_and_the_cell_built_once_per_step() -> None:
    c = _compiled()
    assert set(c.records["r"]) == {"h", "c", "h_last", "c_last"}
    assert c.records["r"]["h"].shape == (None, T, H) and c.records["r"]["c_last"].shape == (None, H)
    assert c.modules["cell"].calls == T  # four selections of r, one unrolled scan
    assert [p.name for p in c.modules["cell"].params] == ["cell.w_ih", "cell.w_hh", "cell.b"]
    # the final state is the last step's own node, not a copy sliced from the sequence
    g = c.graph
    assert g.record(c.records["r"]["h_last"]).name == "r.h_last"


def test_the_one_state_forms_build_the_same_graph_as_before() -> None:
    """A one-output subgraph cell and a registered cell: scan returns the stacked states, a tensor,
    built as before (same nodes, same order), so a spec that does not use named outputs trains bit
    for bit as it did."""
    text = f"""
version: 1
name: one
dtype: float64
inputs:
  x: {{shape: [{T}, {D}], from: noise.normal}}
  h0: {{shape: [{H}], from: noise.normal}}
modules:
  cell:
    args: [x, h]
    params:
      w: {{shape: [{D}, {H}]}}
      u: {{shape: [{H}, {H}]}}
    output: tanh(x @ w + h @ u)
  gru: {{cell: gru, hidden: {H}}}
nodes:
  hs: scan(cell, x, h0)
  gs: scan(gru, x, h0)
losses:
  loss: sum(hs) + sum(gs)
"""
    c = _compiled(text)
    g = c.graph
    assert c.names["hs"].shape == (None, T, H) and c.names["gs"].shape == (None, T, H)
    ops = [n.op.name for n in g.records() if n.kind == "op" and n.op is not None]
    # one stack per scan, T cell steps each: exactly the unrolled loop
    assert ops.count("stack") == 2
    rng = np.random.default_rng(1)
    x, h0 = rng.normal(size=(2, T, D)), rng.normal(size=(2, H))
    g.set_value("x", x)
    g.set_value("h0", h0)
    w, u = g.get_node_value("cell.w"), g.get_node_value("cell.u")
    h, want = h0, []
    for t in range(T):
        h = np.tanh(x[:, t] @ w + h @ u)
        want.append(h)
    np.testing.assert_allclose(g.forward_node(c.names["hs"]), np.stack(want, 1), rtol=1e-12)


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
  cell:
    args: [x, h, c]
    params:
      w: {shape: [1, 12], init: normal, init_args: {std: 0.5}}
      u: {shape: [3, 12], init: normal, init_args: {std: 0.5}}
    nodes:
      z: x @ w + h @ u
      c_next: sigmoid(z[:, 3:6]) * c + sigmoid(z[:, 0:3]) * tanh(z[:, 6:9])
    output:
      h: sigmoid(z[:, 9:12]) * tanh(c_next)
      c: c_next
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


def _lstm_numpy(x, h, c, w, u):
    hs = []
    for t in range(x.shape[1]):
        z = x[:, t] @ w + h @ u
        sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
        c = sig(z[:, 3:6]) * c + sig(z[:, 0:3]) * np.tanh(z[:, 6:9])
        h = sig(z[:, 9:12]) * np.tanh(c)
        hs.append(h)
    return np.stack(hs, 1), h, c


def test_both_states_carry_across_windows_as_detached_state() -> None:
    """Three windows of 4 steps of one batch: each window starts from the previous window's final
    h and c (zeros at first), which is the whole sequence of 12 run at once, and no gradient
    crosses a window boundary (the gradient of window 2 equals that of a fresh run of window 2
    from those states as constants)."""
    c = _compiled(WINDOWS)
    assert set(c.carries) == {"h0", "c0"}
    g = c.graph
    tr = Trainer(c)
    w, u = g.get_node_value("cell.w").copy(), g.get_node_value("cell.u").copy()  # lr 0: they stay
    carried = []
    for _ in range(2):
        tr.run_iteration()
        carried.append((tr.carry["h0"].copy(), tr.carry["c0"].copy()))
    batch = {k: v.copy() for k, v in tr.batch.items()}
    xs = batch["x"]
    assert xs.shape == (8, 12, 1)
    zeros = np.zeros((8, 3))
    for k, (h_end, c_end) in enumerate(carried):
        _, h_want, c_want = _lstm_numpy(xs[:, : 4 * (k + 1)], zeros, zeros, w, u)
        np.testing.assert_allclose(h_end, h_want, rtol=0, atol=1e-12)
        np.testing.assert_allclose(c_end, c_want, rtol=0, atol=1e-12)
    # the third window starts from both carried states: its outputs are those of the whole
    # sequence run at once
    tr.run_iteration()
    full, _, _ = _lstm_numpy(xs, zeros, zeros, w, u)
    np.testing.assert_allclose(g.forward_node(c.records["r"]["h"]), full[:, 8:12], rtol=0, atol=1e-12)
    np.testing.assert_allclose(g.get_node_value("h0"), carried[1][0], rtol=0, atol=0)
    np.testing.assert_allclose(g.get_node_value("c0"), carried[1][1], rtol=0, atol=0)
    # the gradient of the window's loss is that of the window alone with its start states held
    # fixed (truncated BPTT): central differences through the numpy LSTM from those states
    g.forward_node(c.losses["loss"])
    (gw,) = g.grad(c.losses["loss"], [g.node("cell.w")])
    h0, c0 = carried[1]
    x, y = xs[:, 8:12], batch["y"][:, 8:12]
    readout_w, readout_b = g.get_node_value("readout.0.weight"), g.get_node_value("readout.0.bias")
    eps, numeric = 1e-6, np.zeros_like(w)
    for idx in np.ndindex(*w.shape):
        vals = []
        for sgn in (1, -1):
            w2 = w.copy()
            w2[idx] += sgn * eps
            hs, _, _ = _lstm_numpy(x, h0, c0, w2, u)
            vals.append(np.mean((hs @ readout_w + readout_b - y) ** 2))
        numeric[idx] = (vals[0] - vals[1]) / (2 * eps)
    np.testing.assert_allclose(gw, numeric, rtol=1e-6, atol=1e-9)


BROKEN_BASE = LSTM


@pytest.mark.parametrize(
    ("change", "code", "needle"),
    [
        ("r: scan(cell, x, h0)", "E-ARG", "has the states h, c: scan(cell, xs, h0, c0)"),
        ('hs: r["hh"]', "E-NAME", "has no output 'hh'"),
        ("hs: r", "E-OUTPUT", "several outputs"),
        ("hs: relu(r)", "E-OUTPUT", "several outputs"),
        ("      c: c_next\n", "E-OUTPUT", "returns no 'c'"),
        ("      c: c_next[:, 0:2]", "E-SHAPE", "keeps its shape"),
    ],
)
def test_scan_state_mistakes_are_located(change: str, code: str, needle: str) -> None:
    text = LSTM
    if change.startswith("r: "):
        text = text.replace("r: scan(cell, x, h0, c0)", change)
    elif change.startswith("hs: "):
        text = text.replace('hs: r["h"]', change)
    elif change.endswith("\n"):
        text = text.replace(change, "      y: c_next\n")
    else:
        text = text.replace("      c: c_next", change)
    compiled, report = compile_text(text, "lstm.yaml")
    assert compiled is None
    found = [d for d in report.errors if d.code == code]
    assert found, report.render()
    assert needle in found[0].message, found[0].message
    assert found[0].line is not None and found[0].column is not None


# ---------------------------------------------------------------- a registered cell with two states


def _toy_lstm(g, in_width: int, hidden: int, name: str):
    """torch's LSTM cell (gates i, f, g, o) as graph ops, for the registry's two-state form."""
    w_ih = g.parameter(f"{name}.w_ih", shape=(in_width, 4 * hidden), init="xavier_uniform")
    w_hh = g.parameter(f"{name}.w_hh", shape=(hidden, 4 * hidden), init="xavier_uniform")
    b = g.parameter(f"{name}.b", shape=(4 * hidden,), init="zeros")

    def step(x, h, c):
        z = g.matmul(x, w_ih) + g.matmul(h, w_hh) + b
        i, f = g.sigmoid(z[:, :hidden]), g.sigmoid(z[:, hidden : 2 * hidden])
        cand, o = g.tanh(z[:, 2 * hidden : 3 * hidden]), g.sigmoid(z[:, 3 * hidden :])
        c2 = f * c + i * cand
        return o * g.tanh(c2), c2

    return step


@pytest.fixture
def toy_lstm():
    from onlytorch import nn

    defn = nn.cell(
        "toy_lstm",
        doc="an LSTM cell with the states h and c",
        params=lambda d, h: {"w_ih": (d, 4 * h), "w_hh": (h, 4 * h), "b": (4 * h,)},
        states=("h", "c"),
    )(_toy_lstm)
    try:
        yield defn
    finally:
        nn.unregister_cell("toy_lstm")


def test_a_registered_cell_may_declare_two_states(toy_lstm) -> None:
    from onlytorch.spec.docs import render_reference

    text = LSTM.replace(
        LSTM[LSTM.index("  cell:\n") : LSTM.index("nodes:\n  r:")], f"  cell: {{cell: toy_lstm, hidden: {H}}}\n"
    )
    c = _compiled(text)
    g = c.graph
    assert set(c.records["r"]) == {"h", "c", "h_last", "c_last"} and c.modules["cell"].calls == T
    assert [p.name for p in c.modules["cell"].params] == ["cell.w_ih", "cell.w_hh", "cell.b"]
    torch.manual_seed(1)
    ref = torch.nn.LSTM(D, H, batch_first=True).double()
    g.set_value("cell.w_ih", ref.weight_ih_l0.detach().numpy().T.copy())
    g.set_value("cell.w_hh", ref.weight_hh_l0.detach().numpy().T.copy())
    g.set_value("cell.b", (ref.bias_ih_l0 + ref.bias_hh_l0).detach().numpy())
    rng = np.random.default_rng(2)
    x, h0, c0 = rng.normal(size=(3, T, D)), rng.normal(size=(3, H)), rng.normal(size=(3, H))
    for k, v in (("x", x), ("h0", h0), ("c0", c0)):
        g.set_value(k, v)
    out, (hn, cn) = ref(torch.tensor(x), (torch.tensor(h0)[None], torch.tensor(c0)[None]))
    np.testing.assert_allclose(g.forward_node(c.names["hs"]), out.detach().numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(g.forward_node(c.names["h_last"]), hn[0].detach().numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(g.forward_node(c.names["c_last"]), cn[0].detach().numpy(), rtol=0, atol=1e-10)
    assert "states h, c: `NAME(x, h, c)`, `scan(NAME, xs, h0, c0)`" in render_reference()
    # called directly, it is called with both states and returns both
    direct = text.replace("  r: scan(cell, x, h0, c0)", "  r: scan(cell, x, h0, c0)\n  one: cell(x[:, 0], h0)")
    compiled, report = compile_text(direct, "lstm.yaml")
    assert compiled is None
    d = next(d for d in report.errors if d.code == "E-ARG")
    assert d.message == "cell cell is called as cell(x, h, c)"


# ---------------------------------------------------------------- unpacking the scan result into names

RECORD_FORM = '  r: scan(cell, x, h0, c0)\n  hs: r["h"]\n  cs: r["c"]\n  h_last: r["h_last"]\n  c_last: r["c_last"]\n'


def test_unpacking_a_scan_binds_the_stacked_outputs_then_each_states_last_value() -> None:
    """hs, cs, h_last, c_last: scan(cell, x, h0, c0): the cell's outputs stacked over time in its
    output order (h, c), then STATE_last in the order of the states; the same values and gradients
    (float64, exactly) as the names picked from r, with the cell unrolled once."""
    assert RECORD_FORM in LSTM
    unpacked = _compiled(LSTM.replace(RECORD_FORM, "  hs, cs, h_last, c_last: scan(cell, x, h0, c0)\n"))
    picked = _compiled()
    assert unpacked.modules["cell"].calls == T
    rng = np.random.default_rng(5)
    feed = {k: rng.normal(size=(3, *v.shape[1:])) for k, v in picked.inputs.items()}
    params = {k: picked.graph.get_node_value(k) for k in ("cell.w_ih", "cell.w_hh", "cell.b")}
    results = []
    for c in (picked, unpacked):
        g = c.graph
        for k, v in {**feed, **params}.items():
            g.set_value(k, v)
        loss = float(g.forward_node(c.losses["loss"]))
        values = [g.forward_node(c.names[k]) for k in ("hs", "cs", "h_last", "c_last")]
        grads = g.grad(c.losses["loss"], [g.node(k) for k in (*params, "x", "h0", "c0")])
        results.append((loss, values, grads))
    (want_loss, want_values, want_grads), (loss, values, grads) = results
    assert loss == want_loss
    for got, want in zip([*values, *grads], [*want_values, *want_grads]):
        np.testing.assert_array_equal(got, want)
    assert [unpacked.names[k].shape for k in ("hs", "h_last")] == [(None, T, H), (None, H)]


def test_unpacking_a_scan_into_too_few_names_lists_its_outputs_in_order() -> None:
    text = LSTM.replace(RECORD_FORM, "  hs, cs: scan(cell, x, h0, c0)\n  h_last: hs[:, -1]\n  c_last: cs[:, -1]\n")
    compiled, report = compile_text(text, "lstm.yaml")
    assert compiled is None
    (d,) = report.errors
    assert (d.code, d.line, d.column) == ("E-OUTPUT", 29, 3), report.render()
    assert d.message == (
        "'hs, cs' gives 2 names, but scan(cell, x, h0, c0) has 4 outputs, in this order: h, c, h_last, c_last"
    )
    assert d.hint == "one name per output, in order (_ skips one): h, c, h_last, c_last: scan(cell, x, h0, c0)"
    # with _ for the outputs it does not need
    c = _compiled(LSTM.replace(RECORD_FORM, "  hs, _, h_last, c_last: scan(cell, x, h0, c0)\n  cs: hs\n"))
    assert "cs" in c.names and "_" not in c.names


def test_a_registered_two_state_cell_called_directly_unpacks_in_its_states_order(toy_lstm) -> None:
    text = LSTM.replace(
        LSTM[LSTM.index("  cell:\n") : LSTM.index("nodes:\n  r:")], f"  cell: {{cell: toy_lstm, hidden: {H}}}\n"
    )
    text = text.replace(RECORD_FORM, RECORD_FORM + "  h1, c1: cell(x[:, 0], h0, c0)\n")
    c = _compiled(text.replace("+ 0.5 * sum(h_last * c_last)", "+ 0.5 * sum(h_last * c_last) + sum(h1 * c1)"))
    g = c.graph
    rng = np.random.default_rng(3)
    for k, v in c.inputs.items():
        g.set_value(k, rng.normal(size=(2, *v.shape[1:])))
    g.forward_node(c.losses["loss"])
    # the first step of the scan is the same cell on the same inputs: its h and c, in that order
    np.testing.assert_allclose(g.forward_node(c.names["h1"]), g.forward_node(c.names["hs"])[:, 0], rtol=0, atol=1e-14)
    np.testing.assert_allclose(g.forward_node(c.names["c1"]), g.forward_node(c.names["cs"])[:, 0], rtol=0, atol=1e-14)
    assert not np.allclose(g.forward_node(c.names["h1"]), g.forward_node(c.names["c1"]))
