"""The transformer layers and the attention op in specs: ``{attention: {heads: H}}`` is
torch.nn.MultiheadAttention(batch_first=True) (float64 values and gradients, with and without a
causal mask, in train and eval mode) with its parameters mapped one to one; ``{positional: L}``
is x + torch.nn.Embedding(L, E)(arange(L)); heads that do not divide the width, a sequence longer
than max_len and mismatched q/k widths are located by validate; ``attention(q, k, v, mask)``,
``tril``/``triu`` and ``arange`` in a spec."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from onlytorch import nn
from onlytorch.compile import compile_text
from onlytorch.graph import Graph

N, L, E, HEADS = 3, 5, 8, 4


def _spec(layers: str, length: int = L, width: int = E) -> str:
    return f"""
version: 1
name: att
dtype: float64
inputs:
  x: {{shape: [{length}, {width}], from: noise.normal}}
  r: {{shape: [{length}, {width}], from: noise.normal}}
modules:
  block: {layers}
nodes:
  y: block(x)
losses:
  loss: sum(y * r)
"""


def _compiled(text: str):
    compiled, report = compile_text(text, "att.yaml")
    assert compiled is not None, report.render()
    return compiled


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("train", [True, False])
def test_the_attention_layer_is_torch_multihead_attention(causal: bool, train: bool) -> None:
    c = _compiled(_spec(f"[{{attention: {{heads: {HEADS}, causal: {str(causal).lower()}}}}}]"))
    g = c.graph
    if train:
        g.set_train_mode()
    else:
        g.set_eval_mode()
    torch.manual_seed(0)
    ref = torch.nn.MultiheadAttention(E, HEADS, batch_first=True).double()
    ref.train(train)
    pairs = {
        "in_proj_weight": ref.in_proj_weight,
        "in_proj_bias": ref.in_proj_bias,
        "out_proj_weight": ref.out_proj.weight,
        "out_proj_bias": ref.out_proj.bias,
    }
    params = {g.record(p).name.removeprefix("block.0."): p for p in c.modules["block"].params}
    assert {k: g.record(p).shape for k, p in params.items()} == {k: tuple(v.shape) for k, v in pairs.items()}
    with torch.no_grad():  # torch's biases start at zero: random ones test their place
        ref.in_proj_bias.normal_()
        ref.out_proj.bias.normal_()
    for k, v in pairs.items():
        g.set_value(f"block.0.{k}", v.detach().numpy().copy())
    rng = np.random.default_rng(1)
    x, r = rng.normal(size=(N, L, E)), rng.normal(size=(N, L, E))
    g.set_value("x", x)
    g.set_value("r", r)
    xt = torch.tensor(x, requires_grad=True)
    mask = torch.ones(L, L, dtype=torch.bool).triu(1) if causal else None  # torch: True = masked out
    want, _ = ref(xt, xt, xt, attn_mask=mask, need_weights=False)
    np.testing.assert_allclose(g.forward_node(c.names["y"]), want.detach().numpy(), rtol=0, atol=1e-12)
    (want * torch.tensor(r)).sum().backward()
    g.forward_node(c.losses["loss"])
    got = g.grad(c.losses["loss"], [g.node("x"), *(params[k] for k in pairs)])
    for name, a, b in zip(["x", *pairs], got, [xt.grad, *(p.grad for p in pairs.values())]):
        np.testing.assert_allclose(a, b.numpy(), rtol=0, atol=1e-10, err_msg=name)


def test_the_attention_layer_starts_as_torch_does() -> None:
    g = Graph(seed=0)
    m = nn.MultiheadAttention(g, 64, 4, name="a")
    w_in, w_out = g.get_node_value(m.in_proj_weight), g.get_node_value(m.out_proj_weight)
    assert np.abs(w_in).max() <= np.sqrt(6 / (64 + 192)) < 1.5 * np.abs(w_in).max()  # xavier
    assert np.abs(w_out).max() <= 1 / 8 < 1.2 * np.abs(w_out).max()  # U(±1/sqrt(E))
    assert not g.get_node_value(m.in_proj_bias).any() and not g.get_node_value(m.out_proj_bias).any()


def test_the_positional_layer_adds_a_learned_row_per_position() -> None:
    c = _compiled(_spec("[{positional: 7}]"))
    g = c.graph
    weight = g.get_node_value("block.0.weight")
    assert weight.shape == (7, E)
    x = np.random.default_rng(2).normal(size=(N, L, E))
    g.set_value("x", x)
    emb = torch.nn.Embedding(7, E).double()
    with torch.no_grad():
        emb.weight.copy_(torch.tensor(weight))
    want = torch.tensor(x) + emb(torch.arange(L))
    np.testing.assert_allclose(g.forward_node(c.names["y"]), want.detach().numpy(), rtol=0, atol=0)


def test_a_transformer_block_as_a_layer_list_trains() -> None:
    """positional, attention and layer norm one after another compile, and a gradient reaches every
    parameter."""
    c = _compiled(_spec("[{positional: 5}, {attention: {heads: 2, causal: true}}, layer_norm, {linear: 8}]"))
    g = c.graph
    rng = np.random.default_rng(3)
    g.set_value("x", rng.normal(size=(2, L, E)))
    g.set_value("r", rng.normal(size=(2, L, E)))
    g.forward_node(c.losses["loss"])
    grads = g.grad(c.losses["loss"], c.modules["block"].params)
    assert len(grads) == 9 and all(np.abs(v).sum() > 0 for v in grads)


def _error(text: str):
    compiled, report = compile_text(text, "att.yaml")
    assert compiled is None
    return report.errors[0]


@pytest.mark.parametrize(
    ("layers", "width", "length", "code", "needle"),
    [
        ("[{attention: 3}]", 8, L, "E-SHAPE", "3 heads do not divide the width 8"),
        ("[{positional: 4}]", 8, L, "E-SHAPE", "the sequence has 5 positions but max_len is 4"),
        ("[{attention: {heads: 0}}]", 8, L, "E-MODULE", "must be a positive integer"),
        ("[{attention: {head: 2}}]", 8, L, "E-MODULE", "unknown: head"),
    ],
)
def test_layer_mistakes_are_located(layers: str, width: int, length: int, code: str, needle: str) -> None:
    text = _spec(layers, length, width)
    d = _error(text)
    assert d.code == code and needle in d.message, d.message
    assert d.line == text.splitlines().index(f"  block: {layers}") + 1


OP = """
version: 1
name: op
dtype: float64
inputs:
  q: {shape: [4, 6], from: noise.normal}
  k: {shape: [5, 6], from: noise.normal}
  v: {shape: [5, 3], from: noise.normal}
  keep: {shape: [1, 5], from: noise.normal}
nodes:
  a: attention(q, k, v, greater(keep, 0))
  c: attention(q, k, v, causal=True)
  t: tril(q @ transpose(k, axes=[0, 2, 1]), diagonal=1) + triu(q @ transpose(k, axes=[0, 2, 1]))
  p: arange(2, 10, 2)
losses:
  loss: sum(a) + sum(c) + sum(t)
"""


def test_the_attention_op_and_the_helpers_in_a_spec() -> None:
    c = _compiled(OP)
    g = c.graph
    rng = np.random.default_rng(4)
    vals = {"q": (2, 4, 6), "k": (2, 5, 6), "v": (2, 5, 3), "keep": (2, 1, 5)}
    feed = {k: rng.normal(size=s) for k, s in vals.items()}
    feed["keep"][:, :, 0] = 1.0  # every query has a key
    for k, v in feed.items():
        g.set_value(k, v)
    t = {k: torch.tensor(v) for k, v in feed.items()}
    F = torch.nn.functional
    want_a = F.scaled_dot_product_attention(t["q"], t["k"], t["v"], attn_mask=t["keep"] > 0)
    want_c = F.scaled_dot_product_attention(t["q"], t["k"], t["v"], is_causal=True)
    s = t["q"] @ t["k"].mT
    np.testing.assert_allclose(g.forward_node(c.names["a"]), want_a.numpy(), atol=1e-12)
    np.testing.assert_allclose(g.forward_node(c.names["c"]), want_c.numpy(), atol=1e-12)
    np.testing.assert_allclose(g.forward_node(c.names["t"]), (s.tril(1) + s.triu()).numpy(), atol=1e-12)
    p = g.forward_node(c.names["p"])
    assert p.dtype == np.int64 and p.tolist() == [2, 4, 6, 8]


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ("a: attention(q, v, v, greater(keep, 0))", "q and k must have the same width"),
        ("a: attention(q, k, q, greater(keep, 0))", "k and v must have the same length"),
        ("a: attention(q, k, v, q)", "does not broadcast to the scores' shape (N, 4, 5)"),
        ("a: attention(q, k, v, greater(keep, 0), causal=1)", "causal must be True or False"),
        ("p: arange(2, 10, 0)", "non-zero step"),
    ],
)
def test_op_mistakes_are_located(change: str, needle: str) -> None:
    key = change.split(":")[0]
    line = next(x for x in OP.splitlines() if x.startswith(f"  {key}:"))
    text = OP.replace(line, f"  {change}")
    d = _error(text)
    assert needle in d.message, d.message
    assert (d.line, d.column) == (text.splitlines().index(f"  {change}") + 1, 6)


def test_masked_attention_keeps_every_value_finite_under_anomaly_detection() -> None:
    """Masked scores are filled with a finite number, not -inf: anomaly detection (which raises on
    any infinity) runs a causal, padded attention forward and backward, and a query with no key
    gets zeros, as torch 2.13."""
    g = Graph(seed=0, dtype="float64")
    g.set_anomaly_detection(True)
    rng = np.random.default_rng(5)
    q, k, v = (g.input(n, shape=(None, 4, 3)) for n in "qkv")
    keep = g.input("keep", shape=(None, 1, 4))
    y = g.attention(q, k, v, keep, causal=True)
    loss = g.sum(y * y)
    vals = {n: rng.normal(size=(2, 4, 3)) for n in "qkv"}
    mask = np.ones((2, 1, 4))
    mask[1, 0, 0] = 0.0  # sequence 1: query 0 may see key 0 only, which is padding
    for n, val in {**vals, "keep": mask}.items():
        g.set_value(n, val)
    g.forward_node(loss)
    grads = g.grad(loss, [q, k, v])
    t = {n: torch.tensor(val, requires_grad=True) for n, val in vals.items()}
    allowed = torch.tensor(mask).bool() & torch.ones(4, 4, dtype=torch.bool).tril()
    want = torch.nn.functional.scaled_dot_product_attention(t["q"], t["k"], t["v"], attn_mask=allowed)
    assert not want[1, 0].any()
    np.testing.assert_allclose(g.forward_node(y), want.detach().numpy(), rtol=0, atol=1e-12)
    (want * want).sum().backward()
    for n, got in zip("qkv", grads):
        np.testing.assert_allclose(got, t[n].grad.numpy(), rtol=0, atol=1e-11, err_msg=n)
